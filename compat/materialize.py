"""materialize: write a stored session as ``sessions/<name>.jsonl`` + ``<name>.index.json``.

Each file is replaced atomically. When the ``.jsonl`` already holds an earlier
materialization of the same session, only the new lines are rendered: the
previous run's size, digest and checkpoint offsets are kept in
``OUT_DIR/.seglog/<name>.json``, and the existing file is reused only when its
size and xxh3 digest still match (one fast pass over the bytes; any change to
the file means a full rewrite).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

from engine.session.catalog import CATALOG, SessionCatalog
from engine.session.persister import SessionPersister, ev_stream
from engine.session.schema import check_session_name

from .atomic import fsync_dir, remove_stale_temps, replace_file
from .names import session_files
from .render import LineInfo, header_line, render_index, render_lines, render_session

log = logging.getLogger(__name__)

SIDECAR_DIR = ".seglog"


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


def _sidecar_path(out_dir: str, name: str) -> str:
    return os.path.join(os.path.abspath(out_dir), SIDECAR_DIR, name + ".json")


def _load_sidecar(out_dir: str, name: str, jsonl: str, header: str, uid: str) -> dict[str, object] | None:
    """The previous materialization's record, if it was made from this stored session
    (``uid``) and the ``.jsonl`` on disk is still exactly what it wrote."""
    try:
        with open(_sidecar_path(out_dir, name), encoding="utf-8") as f:
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
    remove_stale_temps(sessions)
    meta = p.meta
    if _raw_bytes(p) is not None:
        return _write_raw(p, name, jsonl, index)
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
        yield from _batched(render_lines(p.events(start), info, offsets))

    size = replace_file(jsonl, chunks(), base=jsonl if side is not None else None, sync_dir=False)
    index_size = replace_file(index, render_index(p, info, offsets, meta.index_id or meta.id), sync_dir=False)
    fsync_dir(sessions)
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
    path = _sidecar_path(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # A cache, checked against the file's size and digest before use: no fsync needed.
    replace_file(path, [json.dumps(doc).encode()], durable=False, sync_dir=False)


def _raw_bytes(p: SessionPersister) -> tuple[bytes, bytes] | None:
    """The stored source bytes of an imported session that could not be rebuilt from its
    parts, while the session has not grown since."""
    if p.meta.raw_events < 0 or p.event_count != p.meta.raw_events:
        return None
    ev = ev_stream(p.meta.uid)
    return p.store.get_blob(ev, "legacy/jsonl"), p.store.get_blob(ev, "legacy/index")


def session_bytes(p: SessionPersister) -> tuple[bytes, bytes]:
    """What materialize writes for the session, in memory: ``(jsonl, index)``."""
    return _raw_bytes(p) or render_session(p)


def _write_raw(p: SessionPersister, name: str, jsonl: str, index: str) -> Materialized:
    raw = _raw_bytes(p)
    assert raw is not None
    data_jsonl, data_index = raw
    replace_file(jsonl, [data_jsonl], sync_dir=False)
    replace_file(index, [data_index], sync_dir=False)
    fsync_dir(os.path.dirname(jsonl))
    return Materialized(name, len(data_jsonl), len(data_index), p.event_count, False)


def materialize(catalog: SessionCatalog, out_dir: str, names: list[str] | None = None) -> Iterator[Materialized]:
    """Materialize ``names`` (default: every session), yielding each result as it is written."""
    for name in names if names is not None else catalog.names():
        yield materialize_session(catalog, name, out_dir)


def snapshots(catalog: SessionCatalog) -> dict[str, bytes]:
    """Imported ``repl-<name>.json`` snapshots, by name."""
    store = catalog.store
    if CATALOG not in store:
        return {}
    return {key[9:]: store.get_blob(CATALOG, key)["raw"]
            for key in store.blob_keys(CATALOG) if key.startswith("snapshot/")}


def materialize_snapshot(out_dir: str, name: str, data: bytes) -> str:
    check_session_name(name)
    path = os.path.join(os.path.abspath(out_dir), f"repl-{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_file(path, [data])
    return path
