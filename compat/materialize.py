"""materialize: write a stored session as ``sessions/<name>.jsonl`` + ``<name>.index.json``.

Each file is replaced atomically. When the ``.jsonl`` already holds an earlier
materialization of the same session, only the new lines are rendered: the
previous run's size, digest and checkpoint offsets are kept in
``OUT_DIR/.seglog/<name>.json``, and the existing file is reused only when its
size and xxh3 digest still match (one fast pass over the bytes; any change to
the file means a full rewrite).

Files are replaced with ``engine.log.fileio.atomic_write``; writers of one
OUT_DIR, threads or processes, take turns (``atomic.out_dir_lock``). What is
stored is read through the session layer (SessionPersister, SessionCatalog).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

from engine.log.fileio import atomic_write
from engine.session.catalog import SessionCatalog
from engine.session.persister import SessionPersister

from .atomic import file_chunks, out_dir_lock, remove_stale_temps
from .names import session_files, sidecar_file, snapshot_file
from .render import LineInfo, header_line, render_index, render_lines, render_session

log = logging.getLogger(__name__)


@dataclass
class Materialized:
    name: str
    jsonl_bytes: int
    index_bytes: int
    appended_lines: int  # lines rendered this time
    incremental: bool


def file_digest(path: str) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_sidecar(out_dir: str, name: str, jsonl: str, header: str, uid: str) -> dict[str, object] | None:
    """The previous materialization's record, if it was made from this stored session
    (``uid``) and the ``.jsonl`` on disk is still exactly what it wrote."""
    try:
        with open(sidecar_file(out_dir, name), encoding="utf-8") as f:
            side = json.load(f)
        if side.get("uid") != uid or side.get("header") != header or os.path.getsize(jsonl) != side["size"]:
            return None
        if file_digest(jsonl) != side["digest"]:
            return None
        return dict(side)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def materialize_session(catalog: SessionCatalog, name: str, out_dir: str) -> Materialized:
    """Write one session's legacy files under ``out_dir``."""
    jsonl, index = session_files(out_dir, name)
    p = catalog.persister(name)
    sessions = os.path.dirname(jsonl)
    os.makedirs(sessions, exist_ok=True)
    os.makedirs(os.path.join(os.path.abspath(out_dir), "receipts"), exist_ok=True)
    with out_dir_lock(out_dir):
        remove_stale_temps(sessions, (".jsonl", ".index.json"))
        source = p.legacy_source()
        if source is not None:
            return _write_source(p, name, jsonl, index, source)
        return _write_rendered(p, name, out_dir, jsonl, index)


def _write_rendered(p: SessionPersister, name: str, out_dir: str, jsonl: str, index: str) -> Materialized:
    meta = p.meta
    header = header_line(meta.id, meta.created)
    side = _load_sidecar(out_dir, name, jsonl, header, meta.uid)
    start = 0
    if side is not None and int(side["events"]) <= p.event_count:  # type: ignore[call-overload]
        start = int(side["events"])  # type: ignore[call-overload]
        info = LineInfo(int(side["size"]), start, int(side["index_events"]),  # type: ignore[call-overload]
                        dict.fromkeys(side["receipt_keys"]))  # type: ignore[call-overload]
        offsets = {int(k): int(v) for k, v in side["offsets"].items()}  # type: ignore[attr-defined]
    else:
        side = None
        header_bytes = header.encode("utf-8", "surrogatepass")
        info = LineInfo(len(header_bytes))
        offsets = {}
    before = info.events

    def chunks() -> Iterator[bytes]:
        if side is None:
            yield header.encode("utf-8", "surrogatepass")
        else:  # the new file starts as a copy of the old one
            yield from file_chunks(jsonl)
        yield from _batched(render_lines(p.events(start), info, offsets))

    size = atomic_write(jsonl, chunks())
    index_size = atomic_write(index, render_index(p, info, offsets, meta.index_id or meta.id))
    _save_sidecar(out_dir, name, {
        "uid": meta.uid, "header": header, "size": size, "digest": file_digest(jsonl), "events": info.events,
        "index_events": info.index_events, "receipt_keys": list(info.receipt_keys or {}),
        "offsets": {str(k): v for k, v in offsets.items()},
    })
    return Materialized(name, size, index_size, info.events - before, side is not None)


def _batched(lines: Iterator[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    buf: list[bytes] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def _save_sidecar(out_dir: str, name: str, doc: dict[str, object]) -> None:
    # A cache, checked against the file's size and digest before use: no fsync needed.
    atomic_write(sidecar_file(out_dir, name), [json.dumps(doc).encode()], durable=False)


def session_bytes(p: SessionPersister) -> tuple[bytes, bytes]:
    """What materialize writes for the session, in memory: ``(jsonl, index)``."""
    return p.legacy_source() or render_session(p)


def _write_source(p: SessionPersister, name: str, jsonl: str, index: str,
                  source: tuple[bytes, bytes]) -> Materialized:
    """Write the source bytes an import kept (see ``SessionPersister.legacy_source``)."""
    data_jsonl, data_index = source
    atomic_write(jsonl, [data_jsonl])
    atomic_write(index, [data_index])
    return Materialized(name, len(data_jsonl), len(data_index), p.event_count, False)


def snapshots(catalog: SessionCatalog) -> dict[str, bytes]:
    """Imported ``repl-<name>.json`` snapshots, by name."""
    return catalog.snapshots()


def materialize_snapshot(out_dir: str, name: str, data: bytes) -> str:
    """Write snapshot ``name`` as ``OUT_DIR/repl-<name>.json``; return its path."""
    path = snapshot_file(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with out_dir_lock(out_dir):
        atomic_write(path, [data])
    return path
