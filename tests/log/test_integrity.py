"""Integrity: what open, reads and writes must refuse or report, beyond checksums.

Each test names a way the store can be wrong on disk (or a call can go wrong)
that passes every record checksum: data cut at a record boundary, records
with valid checksums that break the log's invariants, impossible MANIFESTs,
files that are directories, failing system calls. What is expected:
``engine.CorruptionError`` naming the file (``path``, also in the message) and,
where one applies, the ``offset``; for everything else that open or a write
can meet, a ``SeglogError`` subclass, never a bare ``OSError``,
``RecursionError`` or ``IndexError``.

Files are read, damaged and crafted here from the documented layout
(engine/FORMAT.md); records with valid checksums are framed with
``engine.log.record.frame``. Only the public API is used on the store.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xxhash

import engine
from engine.log import codec, fileio, record

REC = struct.Struct("<QIBBHIIQ")  # checksum, length, type, flags, reserved, stream, count, seq
SEG_HEADER = 32
IDX_HEADER = 32
IDX_ENTRY = 32
EVENTS, BLOB, STREAM_CREATE, STREAM_DROP = 1, 2, 3, 4
SMALL_SEGMENTS = 4096
MiB = 1 << 20


# ------------------------------------------------------------------ helpers
def value(seq: int) -> dict[str, Any]:
    """Event ``seq`` of stream "s": tells its seq, so a wrong event is seen."""
    return {"q": seq, "pad": "x" * 60}


@dataclass(frozen=True)
class Rec:
    offset: int
    length: int
    rtype: int
    stream_id: int
    count: int
    seq: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + 32 + self.length


def manifest_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((path / "MANIFEST").read_text())
    return doc


def write_manifest(path: Path, body: dict[str, Any]) -> Path:
    """Write a MANIFEST with a valid checksum over ``body`` (FORMAT.md)."""
    body = {k: v for k, v in body.items() if k != "checksum"}
    checksum = xxhash.xxh3_64_hexdigest(json.dumps(body, sort_keys=True).encode())
    manifest = path / "MANIFEST"
    manifest.write_text(json.dumps(dict(body, checksum=checksum), indent=1) + "\n")
    return manifest


def segment_paths(path: Path) -> list[Path]:
    return [path / f"{sid:020d}.seg" for sid in manifest_doc(path)["segments"]]


def parse(seg: Path) -> list[Rec]:
    """The records of a segment, each checked against its checksum, up to its end."""
    data = seg.read_bytes()
    recs = []
    off = SEG_HEADER
    while off + 32 <= len(data):
        checksum, length, rtype, _flags, _res, sid, count, seq = REC.unpack_from(data, off)
        end = off + 32 + length
        assert end <= len(data), f"{seg}: record at {off} runs past the end"
        assert xxhash.xxh3_64_intdigest(data[off + 8 : end]) == checksum, f"{seg}: bad record at {off}"
        recs.append(Rec(off, length, rtype, sid, count, seq, data[off + 32 : end]))
        off = end
    assert off == len(data), f"{seg} does not parse to its end ({off} of {len(data)})"
    return recs


def stream_ids(path: Path) -> dict[str, int]:
    """Name -> id of every STREAM_CREATE in the log."""
    return {
        r.payload.decode(): r.stream_id for seg in segment_paths(path) for r in parse(seg) if r.rtype == STREAM_CREATE
    }


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != "LOCK"}


def make_store(path: Path, events: int = 200, segment_bytes: int = SMALL_SEGMENTS) -> Path:
    """Stream "s" with ``events`` events, one record each, closed cleanly."""
    with engine.open(path, segment_bytes=segment_bytes) as store:
        for i in range(events):
            assert store.append("s", value(i)) == i
    return path


def open_fails(path: Path, exc_type: type[Exception] = engine.CorruptionError, **options: Any) -> Any:
    """Open must raise ``exc_type``; returns the exception. Anything else raised
    propagates (and fails the test); a store that opens is closed, then the test fails."""
    try:
        store = engine.open(path, **options)
    except exc_type as exc:
        return exc
    store.close()
    pytest.fail(f"engine.open({path.name}, {options}) opened the store instead of raising {exc_type.__name__}")


def assert_names(exc: Any, path: Path, offsets: tuple[int, ...] | None = None) -> None:
    assert exc.path == str(path), f"the error names {exc.path!r}, not {path}: {exc}"
    assert str(path) in str(exc), exc
    if offsets is not None:
        assert exc.offset in offsets, f"the error says offset {exc.offset}, expected one of {offsets}: {exc}"


def events_record(stream_id: int, seq: int, count: int) -> bytes:
    packed, _ = codec.pack_array([value(seq + i) for i in range(count)])
    return record.frame(EVENTS, 0, stream_id, count, seq, packed)


def create_record(stream_id: int, name: bytes) -> bytes:
    return record.frame(STREAM_CREATE, 0, stream_id, 0, 0, name)


def append_records(seg: Path, records: list[bytes]) -> int:
    """Append ``records`` to a segment file; return the offset of the last one."""
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        for rec in records:
            last = size
            f.write(rec)
            size += len(rec)
    return last


# ------------------------------------------ 1. a sealed segment that lost its tail
@pytest.mark.parametrize("sidx", ["kept", "deleted"])
def test_sealed_segment_cut_at_a_record_boundary(tmp_path: Path, sidx: str) -> None:
    """A sealed segment truncated to the end of one of its records.

    Today the sealed index is silently rebuilt from the short file: scan then
    yields event 43 where 42 belongs, next_seq and scan disagree, and verify()
    is clean. A sealed segment is never legitimately shorter than its index's
    data end: that is corruption (named at the cut, or at the data end the
    index records). With the ``.sidx`` deleted the short segment parses cleanly,
    so the gap must be caught by the continuity of seqs across segments: the
    stream's events in the next segment do not continue where this one stops.
    """
    path = make_store(tmp_path / "store")
    segs = segment_paths(path)
    assert len(segs) >= 4
    first, second = segs[0], segs[1]
    size = first.stat().st_size
    events = [r for r in parse(first) if r.rtype == EVENTS]
    cut = events[len(events) // 2].offset  # the end of the record before it
    os.truncate(first, cut)
    if sidx == "deleted":
        first.with_suffix(".sidx").unlink()
    resumes = next(r for r in parse(second) if r.rtype == EVENTS)
    before = snapshot(path)
    for readonly in (True, False):
        exc = open_fails(path, readonly=readonly)
        if sidx == "kept" or exc.path == str(first):
            assert_names(exc, first, (cut, size))
        else:  # the first record that does not continue the stream
            assert_names(exc, second, (resumes.offset,))
    if sidx == "kept":
        assert snapshot(path) == before, "a failed open must not rewrite the sealed index"


# ------------------------------ 2. the active segment cut below synced records
def test_active_segment_cut_below_synced_records(tmp_path: Path) -> None:
    """The active segment truncated (at a record boundary) below records that
    its ``.idx`` lists. The ``.idx`` only ever holds entries of records that were
    fsync'd, so those records cannot have been lost to a crash or power loss:
    the file was damaged. Today they vanish with a log warning (the index is
    "rebuilt" from the short file) and verify() is clean. Expected:
    CorruptionError at read-only and at writable open naming the segment and
    the cut (or the last indexed record), and the files left as they are.
    """
    path = tmp_path / "store"
    with engine.open(path) as store:
        for i in range(40):
            store.append("s", value(i))
    active = segment_paths(path)[-1]
    recs = parse(active)
    idx = active.with_suffix(".idx")
    assert (idx.stat().st_size - IDX_HEADER) // IDX_ENTRY == len(recs), "a clean close indexes every record"
    cut = recs[25].offset
    os.truncate(active, cut)
    before = snapshot(path)
    for readonly in (True, False):
        exc = open_fails(path, readonly=readonly)
        assert_names(exc, active, (cut, recs[-1].offset))
    assert snapshot(path) == before, "a failed open must not truncate or re-index anything"


# ------------------------------ 3. valid checksums, broken invariants
def _tail_cases() -> dict[str, Callable[[int, int, int], list[bytes]]]:
    """Records to append, given (stream id of "s", its next seq, a fresh stream id);
    the last one breaks an invariant."""
    return {
        "seq-gap": lambda sid, n, free: [events_record(sid, n + 1, 1)],
        "seq-overlap": lambda sid, n, free: [events_record(sid, n - 1, 1)],
        "batch-overlap": lambda sid, n, free: [events_record(sid, n - 2, 3)],
        "new-stream-starts-late": lambda sid, n, free: [create_record(free, b"t"), events_record(free, 3, 1)],
        "second-create-of-a-live-name": lambda sid, n, free: [create_record(free, b"s")],
        "create-reusing-a-live-id": lambda sid, n, free: [create_record(sid, b"u")],
        "create-with-empty-name": lambda sid, n, free: [create_record(free, b"")],
    }


@pytest.mark.parametrize("case", list(_tail_cases()))
def test_invalid_record_in_the_unindexed_tail(tmp_path: Path, case: str) -> None:
    """Records with valid checksums that break the log's invariants, appended
    to the active segment after a clean close (so they are in its unindexed
    tail): an EVENTS record whose seq skips ahead (gap) or repeats (overlap)
    for its stream, a stream whose first event is not seq 0, a STREAM_CREATE
    for a name that is live, for an id already bound, or with an empty name.
    Today they are accepted (the gap or the duplicate seqs are served, the
    name is rebound). Expected: CorruptionError at open naming the segment and
    the offset of the offending record.
    """
    path = make_store(tmp_path / "store", events=120)
    sid = stream_ids(path)["s"]
    active = segment_paths(path)[-1]
    bad = append_records(active, _tail_cases()[case](sid, 120, sid + 1))
    for readonly in (True, False):
        exc = open_fails(path, readonly=readonly)
        assert_names(exc, active, (bad,))


@pytest.mark.parametrize("case", ["seq-gap", "seq-overlap", "second-create-of-a-live-name"])
def test_invalid_record_in_a_sealed_segment_without_its_index(tmp_path: Path, case: str) -> None:
    """The same kind of record at the end of the first sealed segment, whose
    ``.sidx`` is deleted so that open rebuilds it from the records. Expected:
    CorruptionError naming that segment and the record's offset (the first
    record, in log order, that breaks an invariant)."""
    path = make_store(tmp_path / "store")
    sid = stream_ids(path)["s"]
    first = segment_paths(path)[0]
    last = [r for r in parse(first) if r.rtype == EVENTS][-1]
    bad = append_records(first, _tail_cases()[case](sid, last.seq + last.count, sid + 1))
    first.with_suffix(".sidx").unlink()
    for readonly in (True, False):
        exc = open_fails(path, readonly=readonly)
        assert_names(exc, first, (bad,))


@pytest.mark.parametrize(
    "case",
    [
        "sealed-listed-twice",
        "sealed-listed-again-later",
        "active-listed-twice",
        "last-id-not-below-next",
        "next-below-every-id",
    ],
)
def test_manifest_with_an_impossible_segment_list(tmp_path: Path, case: str) -> None:
    """A MANIFEST with a valid checksum whose segment list cannot be a log.

    FORMAT.md makes the log's order the MANIFEST's order, not the order of
    ids (a compactor puts a segment with a new, higher id in place of older
    ones), so ids out of numeric order are legitimate. "Out of order" is taken
    as what no writer produces: an id listed twice, or an id that is not below
    ``next_segment_id`` (every id is allocated below it). Expected:
    CorruptionError naming the MANIFEST.
    """
    path = make_store(tmp_path / "store")
    body = manifest_doc(path)
    segs = body["segments"]
    if case == "sealed-listed-twice":
        body["segments"] = [segs[0], segs[1], segs[1], *segs[2:]]
    elif case == "sealed-listed-again-later":
        body["segments"] = [*segs[:-1], segs[0], segs[-1]]
    elif case == "active-listed-twice":
        body["segments"] = [*segs, segs[-1]]
    elif case == "last-id-not-below-next":
        body["next_segment_id"] = segs[-1]
    else:
        body["next_segment_id"] = 1
    manifest = write_manifest(path, body)
    for readonly in (True, False):
        assert_names(open_fails(path, readonly=readonly), manifest)


ILL_TYPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "segment-id-as-string": ("segments", lambda v: [str(s) for s in v]),
    "segment-id-as-float": ("segments", lambda v: [float(s) for s in v]),
    "segment-id-as-bool": ("segments", lambda v: [True]),
    "segment-id-zero": ("segments", lambda v: [0, *v]),
    "segment-id-negative": ("segments", lambda v: [-1, *v]),
    "segments-not-a-list": ("segments", lambda v: {"0": v[0]}),
    "next-id-as-string": ("next_segment_id", str),
    "generation-null": ("generation", lambda v: None),
    "generation-negative": ("generation", lambda v: -1),
    "format-as-bool": ("format", lambda v: True),
    "next-stream-id-zero": ("next_stream_id", lambda v: 0),
    "reserved-not-ranges": ("reserved", lambda v: [5]),
    "reserved-empty-range": ("reserved", lambda v: [[3, 3]]),
}


@pytest.mark.parametrize("case", list(ILL_TYPED))
def test_manifest_with_ill_typed_fields(tmp_path: Path, case: str) -> None:
    """A MANIFEST with a valid checksum and a field of the wrong type or range.
    Today some are coerced with int() ("2" and 2.0 are taken for 2, true for
    1). Expected: CorruptionError naming the MANIFEST."""
    path = make_store(tmp_path / "store")
    body = manifest_doc(path)
    key, change = ILL_TYPED[case]
    body[key] = change(body.get(key))
    manifest = write_manifest(path, body)
    for readonly in (True, False):
        assert_names(open_fails(path, readonly=readonly), manifest)


def test_manifest_fields_of_a_second_process_are_kept(tmp_path: Path) -> None:
    """``next_stream_id`` and ``reserved`` (segment id ranges another process
    may be writing) are optional: a MANIFEST without them opens (as older ones
    do), and a writer keeps them when it saves the MANIFEST: new segments get
    ids past the reserved range, whose files a writer leaves alone."""
    path = make_store(tmp_path / "store", events=50)
    body = manifest_doc(path)
    for key in ("next_stream_id", "reserved", "max_record_bytes"):
        body.pop(key, None)
    write_manifest(path, body)
    with engine.open(path, readonly=True) as store:
        assert list(store.scan("s")) == [value(i) for i in range(50)]
    nxt = body["next_segment_id"]
    reserved = [nxt, nxt + 2]
    body.update(next_segment_id=nxt + 2, reserved=[reserved], next_stream_id=7)
    write_manifest(path, body)
    other = path / f"{nxt:020d}.seg"
    other.write_bytes(b"being written by another process")
    with engine.open(path, segment_bytes=SMALL_SEGMENTS) as store:
        for i in range(50, 150):
            store.append("s", value(i))
    doc = manifest_doc(path)
    assert doc["reserved"] == [reserved]
    assert doc["next_stream_id"] >= 7
    assert not set(doc["segments"]) & set(range(*reserved))
    assert other.exists(), "files of a reserved segment id must be left alone"
    with engine.open(path, readonly=True) as store:
        assert list(store.scan("s")) == [value(i) for i in range(150)]


# -------------------------------------- 4. open raises only SeglogError subclasses
def _nested_manifest(depth: int) -> str:
    """A MANIFEST whose "segments" nests ``depth`` arrays, with the checksum it
    would have (the canonical dump is spelled out: json.dumps cannot nest that deep)."""
    body = '{"format": 1, "generation": 1, "next_segment_id": 2, "segments": ' + "[" * depth + "]" * depth + "}"
    checksum = xxhash.xxh3_64_hexdigest(body.encode())
    return body[:-1] + f', "checksum": "{checksum}"}}'


def test_nested_manifest_checksum_is_the_documented_one() -> None:
    doc = json.loads(_nested_manifest(3))
    checksum = doc.pop("checksum")
    assert xxhash.xxh3_64_hexdigest(json.dumps(doc, sort_keys=True).encode()) == checksum


@pytest.mark.parametrize("checksummed", [False, True], ids=["bare-brackets", "checksummed"])
def test_deeply_nested_manifest(tmp_path: Path, checksummed: bool) -> None:
    """JSON nested 100,000 deep: today json.loads raises RecursionError, which
    escapes open. Expected: CorruptionError naming the MANIFEST."""
    path = make_store(tmp_path / "store", events=20)
    depth = 100_000
    text = _nested_manifest(depth) if checksummed else "[" * depth + "]" * depth
    manifest = path / "MANIFEST"
    manifest.write_text(text)
    for readonly in (True, False):
        assert_names(open_fails(path, readonly=readonly), manifest)


def test_manifest_with_no_segments(tmp_path: Path) -> None:
    """A checksummed MANIFEST listing no segment: today IndexError. Expected:
    CorruptionError naming the MANIFEST."""
    path = make_store(tmp_path / "store", events=20)
    body = manifest_doc(path)
    body["segments"] = []
    manifest = write_manifest(path, body)
    for readonly in (True, False):
        assert_names(open_fails(path, readonly=readonly), manifest)


def test_store_path_is_a_regular_file(tmp_path: Path) -> None:
    """Today a writable open of a path that is a file raises FileExistsError.
    Expected: a SeglogError naming the path, and the file left alone."""
    path = tmp_path / "store"
    path.write_bytes(b"not a store")
    for options in ({}, {"readonly": True}, {"create": False}):
        exc = open_fails(path, engine.SeglogError, **options)
        assert str(path) in str(exc), exc
    assert path.read_bytes() == b"not a store"


@pytest.mark.parametrize("where", ["active-segment", "sealed-segment", "LOCK", "MANIFEST"])
def test_directory_where_a_file_belongs(tmp_path: Path, where: str) -> None:
    """A directory in place of a store file. Today IsADirectoryError escapes
    (os.open of a directory for writing, or pread of one). Expected: a
    SeglogError naming the path (CorruptionError for the store's data files);
    a directory at LOCK only stops writers: read-only opens take no lock."""
    path = make_store(tmp_path / "store", events=100)
    segs = segment_paths(path)
    target = {
        "active-segment": segs[-1],
        "sealed-segment": segs[0],
        "LOCK": path / "LOCK",
        "MANIFEST": path / "MANIFEST",
    }[where]
    target.unlink()
    target.mkdir()
    if where == "LOCK":
        exc = open_fails(path, engine.SeglogError)
        assert exc.path == str(target), exc
        assert str(target) in str(exc)
        assert not isinstance(exc, engine.StoreLockedError), "nobody holds the lock"
        with engine.open(path, readonly=True) as store:
            assert store.next_seq("s") == 100
        return
    for readonly in (True, False):
        assert_names(open_fails(path, readonly=readonly), target)


def test_oversized_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A MANIFEST of 16 MiB (valid JSON: the real one padded with spaces, so its
    checksum still holds). Today it is read whole and accepted. Expected:
    CorruptionError naming it, from its size alone (the limit is 1 MiB): open
    allocates far less than the file's size."""
    path = make_store(tmp_path / "store", events=20)
    manifest = path / "MANIFEST"
    size = 16 * MiB
    with open(manifest, "ab") as f:
        f.write(b" " * (size - manifest.stat().st_size))
    assert_names(open_fails(path), manifest)
    tracemalloc.start()
    try:
        exc = open_fails(path, readonly=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_names(exc, manifest)
    assert peak < size // 16, f"open allocated {peak} bytes for a {size}-byte MANIFEST it must not read"


@contextlib.contextmanager
def full_disk(monkeypatch: pytest.MonkeyPatch, path: Path) -> Iterator[list[str]]:
    """Every write to a file of the store fails with ENOSPC (writes elsewhere
    go through). Both the ``fileio`` seam and ``os`` are patched: parts of the
    engine still call ``os`` directly. Yields the files whose writes failed."""
    root = os.path.realpath(path) + os.sep
    failed: list[str] = []
    real_write, real_pwrite = os.write, os.pwrite

    def in_store(fd: int) -> str | None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return target if target.startswith(root) else None

    def write(fd: int, data: Any) -> int:
        target = in_store(fd)
        if target is not None and len(data):
            failed.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return real_write(fd, data)

    def pwrite(fd: int, data: Any, offset: int) -> int:
        target = in_store(fd)
        if target is not None and len(data):
            failed.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
        return real_pwrite(fd, data, offset)

    with monkeypatch.context() as m:
        for module in (os, fileio):
            m.setattr(module, "write", write)
            m.setattr(module, "pwrite", pwrite)
        yield failed


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell files apart")
@pytest.mark.parametrize("state", ["closed-cleanly", "index-missing"])
def test_enospc_when_reopening_for_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    """Reopening for writing on a full disk (every write to the store's files
    fails with ENOSPC). Today the raw OSError escapes open: from writing the
    writer's pid into LOCK, and from rewriting the active index that recovery
    rebuilds. Expected: open raises a SeglogError (StoreFailedError or
    another), or opens and then refuses appends with StoreFailedError; never a
    bare OSError. With room again, everything is there."""
    path = make_store(tmp_path / "store", events=100)
    if state == "index-missing":  # recovery has an index to write
        segment_paths(path)[-1].with_suffix(".idx").unlink()
    with full_disk(monkeypatch, path):
        try:
            store = engine.open(path, segment_bytes=SMALL_SEGMENTS)
        except engine.SeglogError:
            pass
        else:
            try:
                assert store.next_seq("s") == 100
                with pytest.raises(engine.StoreFailedError):
                    store.append("s", value(100))
                with pytest.raises(engine.StoreFailedError):
                    store.append("s", value(100))
            finally:
                with contextlib.suppress(engine.SeglogError):
                    store.close()
    with engine.open(path, segment_bytes=SMALL_SEGMENTS) as store:
        assert list(store.scan("s")) == [value(i) for i in range(100)]
        assert store.append("s", value(100)) == 100
        assert store.verify().ok


# ------------------------------------------- 5. a failed step of a segment roll
class CreationFault:
    """Makes the ``nth`` creation (counted from install) of a store file whose
    name ends with ``suffix`` fail with EIO. A creation is an ``open`` with
    O_CREAT of the file or of its temp file, or, for files written through
    Python's ``open()`` (which does not go through ``os.open``), the rename
    that puts the temp file in place. Patched in ``os`` and in ``fileio``."""

    def __init__(self, path: Path, suffix: str, nth: int) -> None:
        self.root = os.path.realpath(path) + os.sep
        self.suffix = suffix
        self.nth = nth
        self.count = 0
        self.fired = ""
        self._opened: set[str] = set()
        self._open, self._rename = os.open, os.rename

    def _matches(self, p: Any) -> str | None:
        name = os.path.realpath(os.fspath(p))
        if not name.startswith(self.root):
            return None
        return name if name.removesuffix(".tmp").endswith(self.suffix) else None

    def _creation(self, name: str) -> None:
        self.count += 1
        if self.count == self.nth:
            self.fired = name
            raise OSError(errno.EIO, os.strerror(errno.EIO), name)

    def open(self, p: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        name = self._matches(p)
        if name is not None and flags & os.O_CREAT:
            self._opened.add(name)
            self._creation(name)
        return self._open(p, flags, mode, *args, **kwargs)

    def rename(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        name = self._matches(dst)
        source = os.path.realpath(os.fspath(src))
        if name is not None and source not in self._opened:
            self._creation(name)
        self._opened.discard(source)
        self._rename(src, dst, *args, **kwargs)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for module in (os, fileio):
            monkeypatch.setattr(module, "open", self.open)
            monkeypatch.setattr(module, "rename", self.rename)


@pytest.mark.parametrize(
    "suffix",
    [".seg", ".idx", "MANIFEST", ".sidx"],
    ids=["next-segment", "its-active-index", "manifest-save", "sealed-index"],
)
def test_failure_during_a_segment_roll_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """The second roll after open fails (EIO) creating the next segment, its
    index, the MANIFEST, or the sealed index. Today the raw OSError escapes
    append, and the store goes on accepting appends in whatever state the
    roll left. Expected, as for a failed write: the append raises
    StoreFailedError, so do later appends, and reopening gives a store with
    every acknowledged append readable and a MANIFEST naming only segments
    that exist."""
    path = tmp_path / "store"
    store = engine.open(path, segment_bytes=SMALL_SEGMENTS)
    fault = CreationFault(path, suffix, nth=2)
    fault.install(monkeypatch)
    acked: list[Any] = []
    try:
        with pytest.raises(engine.StoreFailedError):
            for i in range(2000):
                store.append("s", value(i))
                acked.append(value(i))
        assert fault.fired, "the fault never fired: no second roll?"
        with pytest.raises(engine.StoreFailedError):
            store.append("s", value(len(acked)))
        with pytest.raises(engine.StoreFailedError):
            store.append_batch("t", [1, 2])
    finally:
        with contextlib.suppress(engine.SeglogError):
            store.close()
        monkeypatch.undo()
    assert len(acked) > 30, "the first roll should have succeeded"
    for seg in segment_paths(path):
        assert seg.exists(), f"the MANIFEST names {seg.name}, which does not exist"
    with engine.open(path, segment_bytes=SMALL_SEGMENTS) as store:
        n = store.next_seq("s")
        assert n >= len(acked)
        assert list(store.scan("s", 0, len(acked))) == acked
        for i in (0, len(acked) // 2, len(acked) - 1):
            assert store.get("s", i) == acked[i]
        assert store.append("s", value(n)) == n
        assert store.verify().ok
    for seg in segment_paths(path):
        assert seg.exists(), f"the MANIFEST names {seg.name}, which does not exist"


# ------------------------------------------------------ 6. negative positions
def test_negative_positions_are_refused(tmp_path: Path) -> None:
    """Today ``scan(stream, -2)`` yields from seq 0 (and ``scan(stream, 0, -1)``
    yields nothing) while ``get(stream, -1)`` raises EventNotFoundError.
    Chosen: a negative start or stop of ``scan`` (and ``read_range``) is a bad
    argument, InvalidArgumentError; ``get`` of a negative seq stays
    EventNotFoundError, like any seq the stream does not have. Positions past
    the end stay valid for scan (they bound the range)."""
    path = tmp_path / "store"
    with engine.open(path) as store:
        for i in range(5):
            store.append("s", value(i))
        with pytest.raises(engine.EventNotFoundError):
            store.get("s", -1)
        for start, stop in [(-2, None), (-1, 3), (0, -1), (-5, -1), (2, -3), (-1, 100)]:
            with pytest.raises(engine.InvalidArgumentError):
                list(store.scan("s", start, stop))
            with pytest.raises(engine.InvalidArgumentError):
                store.read_range("s", start, stop)
        assert list(store.scan("s", 0, 100)) == [value(i) for i in range(5)]
        assert list(store.scan("s", 3)) == [value(3), value(4)]
        assert list(store.scan("s", 5)) == []
        assert list(store.scan("s", 4, 2)) == []
