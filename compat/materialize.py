"""materialize: write a stored session as ``sessions/<name>.jsonl`` + ``<name>.index.json``.

Files are brought up to date with as little writing as possible:

- a file that already holds the right bytes is left alone (same inode, same mtime);
- a ``.jsonl`` that is a prefix of its new content (the session recorded more
  events since) gets the new lines appended in place (``atomic.append_at``); its
  old bytes and its inode stay;
- any other file is replaced atomically with ``engine.log.fileio.atomic_write``
  (the ``.index.json`` always is, when it changed).

To decide without rendering the whole session again, the previous run's size,
xxh3 digest, event count and checkpoint offsets are kept in
``OUT_DIR/.seglog/<name>.json``; the existing ``.jsonl`` is taken as the first
part of the new content only when its first ``size`` bytes still have that
digest, and then only the events after it are rendered. Otherwise the whole
content is rendered and compared with the file byte for byte.

Writers of one OUT_DIR, threads or processes, take turns (``atomic.out_dir_lock``).
What is stored is read through the session layer (SessionPersister, SessionCatalog).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import xxhash

from engine.log.fileio import atomic_write
from engine.session.catalog import SessionCatalog
from engine.session.persister import SessionPersister

from .atomic import append_at, compare_file, match_file, out_dir_lock, remove_stale_temps, same_bytes
from .names import session_files, sidecar_file, snapshot_file
from .render import LineInfo, header_line, render_index, render_lines, render_session

log = logging.getLogger(__name__)

#: What happened to a session's files (``Materialized.status``).
WRITTEN, APPENDED, UNCHANGED = "written", "appended", "unchanged"


@dataclass
class Materialized:
    name: str
    jsonl_bytes: int  # size of the .jsonl
    index_bytes: int  # size of the .index.json
    appended_lines: int  # lines rendered this time
    incremental: bool  # only the events after the previous run were rendered
    #: "written": a file was created or replaced; "appended": new lines were added to the
    #: .jsonl in place (and the index replaced); "unchanged": both files were left alone.
    status: str = WRITTEN
    bytes_written: int = 0  # bytes written this time, both files


def file_digest(path: str) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def materialize_session(catalog: SessionCatalog, name: str, out_dir: str) -> Materialized:
    """Bring one session's legacy files under ``out_dir`` up to date."""
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


# ----------------------------------------------------------------------------- the .jsonl
@dataclass
class _Jsonl:
    """How the .jsonl was brought up to date."""

    status: str  # WRITTEN, APPENDED or UNCHANGED
    size: int  # the file's size now
    written: int  # bytes written
    digest: str  # xxh3 of the whole file
    info: LineInfo
    offsets: dict[int, int]
    start: int  # events rendered from here
    incremental: bool


def _hashed(chunks: Iterable[bytes], h: Any) -> Iterator[bytes]:
    for chunk in chunks:
        h.update(chunk)
        yield chunk


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


def _update(path: str, size: int, state: str, rest: Iterator[bytes]) -> int | None:
    """Append ``rest`` when ``state`` is "prefix"; bytes appended (0 when "same"),
    None when the file changed meanwhile."""
    if state == "same":
        return 0
    return append_at(path, size, rest)


def _incremental(p: SessionPersister, jsonl: str, side: dict[str, Any]) -> _Jsonl | None:
    """Render only the events after the previous run, when the file still begins with
    exactly what that run wrote (its ``size`` bytes have its ``digest``)."""
    if not os.path.isfile(jsonl):
        return None
    h = xxhash.xxh3_64()
    with open(jsonl, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = int(side["size"])
        if size < prefix:
            return None
        left = prefix
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                return None
            h.update(chunk)
            left -= len(chunk)
        if h.hexdigest() != side["digest"]:
            return None
        start = int(side["events"])
        info = LineInfo(prefix, start, int(side["index_events"]), dict.fromkeys(side["receipt_keys"]))
        offsets = {int(k): int(v) for k, v in side["offsets"].items()}
        state, rest = match_file(f, _hashed(_batched(render_lines(p.events(start), info, offsets)), h))
    if state == "differs":  # e.g. lines that are not ours after the previous run's end
        return None
    written = _update(jsonl, size, state, rest)
    if written is None:
        return None
    return _Jsonl(
        APPENDED if written else UNCHANGED, size + written, written, h.hexdigest(), info, offsets, start, True
    )


def _full(p: SessionPersister, jsonl: str, header: bytes) -> _Jsonl:
    """Render every event; leave, append to or replace the file, whichever makes it right."""

    def content() -> tuple[Iterator[bytes], Any, LineInfo, dict[int, int]]:
        h = xxhash.xxh3_64()
        info = LineInfo(len(header))
        offsets: dict[int, int] = {}
        chunks = itertools.chain([header], _batched(render_lines(p.events(), info, offsets)))
        return _hashed(chunks, h), h, info, offsets

    chunks, h, info, offsets = content()
    state, size, rest = compare_file(jsonl, chunks)
    if state in ("same", "prefix"):
        written = _update(jsonl, size, state, rest)
        if written is not None:
            return _Jsonl(
                APPENDED if written else UNCHANGED, size + written, written, h.hexdigest(), info, offsets, 0, False
            )
    if state != "missing":  # start again
        chunks, h, info, offsets = content()
    size = atomic_write(jsonl, chunks)
    return _Jsonl(WRITTEN, size, size, h.hexdigest(), info, offsets, 0, False)


# ----------------------------------------------------------------------------- a session
def _load_sidecar(out_dir: str, name: str, header: str, uid: str) -> dict[str, Any] | None:
    """The previous run's record, if it was made from this stored session (``uid``)."""
    try:
        with open(sidecar_file(out_dir, name), encoding="utf-8") as f:
            side = json.load(f)
        if not isinstance(side, dict) or side.get("uid") != uid or side.get("header") != header:
            return None
        for key, kind in (
            ("size", int),
            ("digest", str),
            ("events", int),
            ("index_events", int),
            ("receipt_keys", list),
            ("offsets", dict),
        ):
            if not isinstance(side.get(key), kind):
                return None
        return side
    except (OSError, ValueError):
        return None


def _write_rendered(p: SessionPersister, name: str, out_dir: str, jsonl: str, index: str) -> Materialized:
    meta = p.meta
    header = header_line(meta.id, meta.created)
    side = _load_sidecar(out_dir, name, header, meta.uid)
    done = None
    if side is not None and side["events"] <= p.event_count:
        try:
            done = _incremental(p, jsonl, side)
        except (ValueError, KeyError, TypeError):  # a sidecar that is not what it claims to be
            done = None
    if done is None:
        done = _full(p, jsonl, header.encode("utf-8", "surrogatepass"))

    index_chunks = render_index(p, done.info, done.offsets, meta.index_id or meta.id)
    index_size = sum(len(c) for c in index_chunks)
    index_written = 0 if same_bytes(index, index_chunks) else atomic_write(index, index_chunks)

    doc = {
        "uid": meta.uid,
        "header": header,
        "size": done.size,
        "digest": done.digest,
        "events": done.info.events,
        "index_events": done.info.index_events,
        "receipt_keys": list(done.info.receipt_keys or {}),
        "offsets": {str(k): v for k, v in done.offsets.items()},
    }
    if doc != side:
        _save_sidecar(out_dir, name, doc)
    status = done.status
    if status == UNCHANGED and index_written:
        status = WRITTEN
    return Materialized(
        name,
        done.size,
        index_size,
        done.info.events - done.start,
        done.incremental,
        status,
        done.written + index_written,
    )


def _save_sidecar(out_dir: str, name: str, doc: dict[str, object]) -> None:
    # A cache, checked against the file's size and digest before use: no fsync needed.
    atomic_write(sidecar_file(out_dir, name), [json.dumps(doc).encode()], durable=False)


def session_bytes(p: SessionPersister) -> tuple[bytes, bytes]:
    """What materialize writes for the session, in memory: ``(jsonl, index)``."""
    return p.legacy_source() or render_session(p)


def _write_source(p: SessionPersister, name: str, jsonl: str, index: str, source: tuple[bytes, bytes]) -> Materialized:
    """Write the source bytes an import kept (see ``SessionPersister.legacy_source``)."""
    data_jsonl, data_index = source
    status, written, lines = WRITTEN, 0, p.event_count
    state, size, rest = compare_file(jsonl, [data_jsonl])
    if state in ("same", "prefix"):
        appended = _update(jsonl, size, state, rest)
        if appended is not None:
            status = APPENDED if appended else UNCHANGED
            written = appended
            lines = data_jsonl[size:].count(b"\n")
    if status == WRITTEN:
        written = atomic_write(jsonl, [data_jsonl])
    if not same_bytes(index, [data_index]):
        written += atomic_write(index, [data_index])
        if status == UNCHANGED:
            status = WRITTEN
    return Materialized(name, len(data_jsonl), len(data_index), lines, False, status, written)


# ----------------------------------------------------------------------------- snapshots
def snapshots(catalog: SessionCatalog) -> dict[str, bytes]:
    """Imported ``repl-<name>.json`` snapshots, by name."""
    return catalog.snapshots()


def write_snapshot(out_dir: str, name: str, data: bytes) -> bool:
    """Write snapshot ``name`` as ``OUT_DIR/repl-<name>.json`` unless it already holds
    ``data``; return whether it was written."""
    path = snapshot_file(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with out_dir_lock(out_dir):
        if same_bytes(path, [data]):
            return False
        atomic_write(path, [data])
    return True


def materialize_snapshot(out_dir: str, name: str, data: bytes) -> str:
    """Write snapshot ``name`` as ``OUT_DIR/repl-<name>.json`` (if it changed); return its path."""
    write_snapshot(out_dir, name, data)
    return snapshot_file(out_dir, name)
