"""Damaged files: torn and truncated tails, flipped bytes in records of the
active and of sealed segments, damaged offset indexes, absurd length fields,
damaged MANIFEST and segment headers.

Offsets are computed here from the documented layout (engine/FORMAT.md), by
a parser of this file's own, not by the engine's scanner.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine

REC = struct.Struct("<QIBBHIIQ")  # checksum, length, type, flags, reserved, stream, count, seq
SEG_HEADER = 32
IDX_HEADER = 32
IDX_ENTRY = 32
EVENTS, BLOB, STREAM_CREATE, STREAM_DROP = 1, 2, 3, 4
FLAG_LZ4 = 0x01
SEALED_SEGMENT_BYTES = 8192
MiB = 1 << 20


# ------------------------------------------------------------- the template
def event_value(stream: str, seq: int) -> Any:
    h = zlib.crc32(f"{stream}:{seq}".encode())
    if h % 7 == 0:
        return {"s": stream, "q": seq, "big": f"{stream}-{seq}|" * 150}  # large: its record is compressed
    if h % 7 == 1:
        return [seq, stream, h.to_bytes(4, "little") * (h % 30)]
    return {"s": stream, "q": seq, "t": "x" * (h % 90)}


def blob_value(stream: str, key: str, version: int) -> Any:
    if version % 2 == 0:
        return {"k": key, "v": version, "big": f"{key}/{version};" * 100}  # lz4-compressed blob
    return {"k": key, "v": version}


@dataclass
class Op:
    stream: str
    kind: str  # "events" or "blob"
    seq: int  # first seq (events)
    n: int
    key: str = ""
    version: int = 0


@dataclass(frozen=True)
class Rec:
    segment: Path
    offset: int
    length: int
    rtype: int
    flags: int
    stream_id: int
    count: int
    seq: int

    @property
    def end(self) -> int:
        return self.offset + 32 + self.length


def manifest_segments(path: Path) -> list[Path]:
    ids = json.loads((path / "MANIFEST").read_text())["segments"]
    return [path / f"{sid:020d}.seg" for sid in ids]


def parse_segment(seg: Path) -> list[Rec]:
    """Records of a segment, each checked against its checksum."""
    data = seg.read_bytes()
    recs = []
    off = SEG_HEADER
    while off + 32 <= len(data):
        checksum, length, rtype, flags, _res, sid, count, seq = REC.unpack_from(data, off)
        end = off + 32 + length
        if end > len(data) or xxhash.xxh3_64_intdigest(data[off + 8 : end]) != checksum:
            break
        recs.append(Rec(seg, off, length, rtype, flags, sid, count, seq))
        off = end
    assert off == len(data), f"{seg} does not parse to its end ({off} of {len(data)})"
    return recs


def all_records(path: Path) -> list[Rec]:
    return [r for seg in manifest_segments(path) for r in parse_segment(seg)]


class Template:
    """A store with sealed segments and an active segment holding a stream
    creation, events, batches and blobs. Built once, copied for each test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[Op] = []
        self.seqs: dict[str, int] = {}
        with engine.open(path, segment_bytes=SEALED_SEGMENT_BYTES) as store:
            self.put(store, "a", "old", 1)  # a blob that stays in the first segment
            for i in range(400):
                name = "abc"[i % 3]
                if i % 11 == 5:
                    self.put(store, name, f"key{i % 4}", 10 + i)
                else:
                    self.append(store, name, 1 + (i % 4 == 0) * (i % 7))
        # A second session with big segments: what follows stays in the active one.
        with engine.open(path, segment_bytes=64 * MiB) as store:
            for i in range(12):
                self.append(store, "b" if i % 2 else "late", 1 + (i % 3 == 0) * 3)
                if i % 5 == 0:
                    self.put(store, "late", "lk", 1000 + i)
            self.append(store, "a", 5)  # the last record is a batch of 5
        self.records = all_records(path)
        self.segments = manifest_segments(path)
        self.names = {r.stream_id: self._name(r) for r in self.records if r.rtype == STREAM_CREATE}
        op_recs = [r for r in self.records if r.rtype in (EVENTS, BLOB)]
        assert len(op_recs) == len(self.ops)
        self.op_of = dict(zip(op_recs, self.ops, strict=True))
        assert len(self.segments) >= 5

    @staticmethod
    def _name(r: Rec) -> str:
        with open(r.segment, "rb") as f:
            f.seek(r.offset + 32)
            return f.read(r.length).decode()

    def append(self, store: engine.Store, stream: str, n: int) -> None:
        seq = self.seqs.get(stream, 0)
        values = [event_value(stream, q) for q in range(seq, seq + n)]
        if n == 1:
            assert store.append(stream, values[0]) == seq
        else:
            assert store.append_batch(stream, values) == seq
        self.ops.append(Op(stream, "events", seq, n))
        self.seqs[stream] = seq + n

    def put(self, store: engine.Store, stream: str, key: str, version: int) -> None:
        store.put_blob(stream, key, blob_value(stream, key, version))
        self.ops.append(Op(stream, "blob", 0, 0, key, version))

    @property
    def active(self) -> Path:
        return self.segments[-1]

    def active_records(self) -> list[Rec]:
        return [r for r in self.records if r.segment == self.active]

    def sealed_records(self, index: int) -> list[Rec]:
        return [r for r in self.records if r.segment == self.segments[index]]

    def stream_of(self, r: Rec) -> str:
        return self.names[r.stream_id]

    def expected(self, surviving: list[Rec] | None = None) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """(next_seq per stream, blob version per (stream, key)) of the records kept."""
        recs = self.records if surviving is None else surviving
        seqs = {self.names[r.stream_id]: 0 for r in recs if r.rtype == STREAM_CREATE}
        blobs: dict[tuple[str, str], int] = {}
        for r in recs:
            op = self.op_of.get(r)
            if op is None:
                continue
            if op.kind == "events":
                seqs[op.stream] = op.seq + op.n
            else:
                blobs[(op.stream, op.key)] = op.version
        return seqs, blobs


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return Template(tmp_path_factory.mktemp("template") / "store")


@pytest.fixture
def store_dir(template: Template, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(template.path, dst)
    return dst


def moved(template: Template, store_dir: Path, p: Path) -> Path:
    return store_dir / p.name


def cut_active(template: Template, store_dir: Path, size: int) -> Path:
    """Cut the active segment to ``size`` bytes as a crash can: the records it
    tears were never synced, so the active index holds no entry for them (the
    index only describes synced records)."""
    seg = moved(template, store_dir, template.active)
    os.truncate(seg, size)
    whole = {r.offset for r in template.active_records() if r.end <= size}
    idx = store_dir / template.active.name.replace(".seg", ".idx")
    data = idx.read_bytes()
    kept = [data[i : i + 32] for i in range(32, len(data), 32) if int.from_bytes(data[i : i + 8], "little") in whole]
    idx.write_bytes(data[:32] + b"".join(kept))
    return seg


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, f"{path} has no byte at {offset}"
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def snapshot(path: Path) -> dict[str, bytes]:
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path)) if n != "LOCK"}


def check_contents(
    store: engine.Store,
    seqs: dict[str, int],
    blobs: dict[tuple[str, str], int],
    skip: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
) -> None:
    """The store holds exactly these streams, every event equal, these blob versions."""
    assert {i.name for i in store.streams()} == set(seqs)
    for name, n in seqs.items():
        assert store.next_seq(name) == n, name
        if not any(s == name for s, _ in skip):
            assert store.read_range(name) == [event_value(name, q) for q in range(n)], name
        for q in range(n):
            if (name, q) not in skip:
                assert store.get(name, q) == event_value(name, q), (name, q)
    for (name, key), version in blobs.items():
        assert store.get_blob(name, key) == blob_value(name, key, version), (name, key)


def check_all(path: Path, template: Template, **open_opts: Any) -> None:
    seqs, blobs = template.expected()
    with engine.open(path, **open_opts) as store:
        check_contents(store, seqs, blobs)
        report = store.verify()
        assert report.ok, [str(p) for p in report.problems]
        assert report.records == len(template.records)


def appends_after_reopen_work(path: Path, seqs: dict[str, int]) -> None:
    with engine.open(path) as store:
        for name, n in seqs.items():
            assert store.append(name, event_value(name, n)) == n
    with engine.open(path) as store:
        for name, n in seqs.items():
            assert store.next_seq(name) == n + 1
            assert store.get(name, n) == event_value(name, n)
        assert store.verify().ok


def test_template_parses(template: Template) -> None:
    """The parser here and the engine agree on the template."""
    check_all(template.path, template, readonly=True)
    assert template.active_records()[-1].rtype == EVENTS
    assert template.active_records()[-1].count == 5
    assert any(r.rtype == STREAM_CREATE for r in template.active_records())
    assert any(r.rtype == EVENTS and r.flags & FLAG_LZ4 for r in template.records)
    assert any(r.rtype == BLOB and r.flags & FLAG_LZ4 for r in template.records)


# ------------------------------------------------------------- torn tails
def _cuts_inside_last() -> list[int]:
    return [1, 7, 8, 11, 12, 31, 32, 33, 40, -1]


@pytest.mark.parametrize("cut", _cuts_inside_last(), ids=lambda c: f"last+{c}" if c > 0 else "last_end-1")
def test_truncated_inside_last_record_is_cut_on_open(template: Template, store_dir: Path, cut: int) -> None:
    last = template.active_records()[-1]
    seg = cut_active(template, store_dir, last.offset + cut if cut > 0 else last.end + cut)
    seqs, blobs = template.expected([r for r in template.records if r != last])
    with engine.open(store_dir) as store:
        assert os.path.getsize(seg) == last.offset, "the torn record must be truncated away"
        check_contents(store, seqs, blobs)
        assert store.next_seq("a") == template.seqs["a"] - 5, "a torn batch loses all its events"
        assert store.verify().ok
    appends_after_reopen_work(store_dir, seqs)


def test_torn_tail_is_left_alone_by_a_readonly_open(template: Template, store_dir: Path) -> None:
    last = template.active_records()[-1]
    cut_active(template, store_dir, last.offset + 20)
    before = snapshot(store_dir)
    seqs, blobs = template.expected([r for r in template.records if r != last])
    with engine.open(store_dir, readonly=True) as store:
        check_contents(store, seqs, blobs)
    assert snapshot(store_dir) == before, "a read-only open must not modify files"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_active_segment_cut_anywhere_keeps_the_whole_records_before_the_cut(
    template: Template, data: st.DataObject
) -> None:
    recs = template.active_records()
    cut = data.draw(st.integers(SEG_HEADER, recs[-1].end - 1), label="cut")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        shutil.copytree(template.path, path)
        seg = cut_active(template, path, cut)
        kept = [r for r in template.records if r.segment != template.active or r.end <= cut]
        seqs, blobs = template.expected(kept)
        with engine.open(path) as store:
            assert os.path.getsize(seg) == max([SEG_HEADER] + [r.end for r in kept if r.segment == template.active])
            check_contents(store, seqs, blobs)
            report = store.verify()
            assert report.ok and report.records == len(kept)


# ------------------------------------------------- flipped bytes, active segment
# Byte positions inside a record, by header field; "payload" is the middle of the payload.
FIELDS = {
    "checksum": 3,
    "length-low": 8,
    "length-high": 11,
    "type": 12,
    "flags": 13,
    "stream": 16,
    "count": 20,
    "seq": 24,
    "payload-first": 32,
    "payload": -1,
}


def field_offset(r: Rec, field: str) -> int:
    pos = FIELDS[field]
    return r.offset + (32 + r.length // 2 if pos < 0 else pos)


def _mid_active_record(template: Template) -> Rec:
    recs = template.active_records()
    r = next(r for r in recs[len(recs) // 2 :] if r.rtype == EVENTS)
    assert r is not recs[-1]
    return r


def _truncate_idx_to(path: Path, segment: Path, entries: int) -> None:
    idx = path / segment.name.replace(".seg", ".idx")
    os.truncate(idx, IDX_HEADER + IDX_ENTRY * entries)


@pytest.mark.parametrize("field", list(FIELDS))
def test_flipped_byte_in_unindexed_tail_fails_open(template: Template, store_dir: Path, field: str) -> None:
    """A damaged record in the active segment's unindexed tail with valid
    records after it is corruption, not a torn write: open raises
    CorruptionError naming the segment and the record's offset, and changes
    nothing on disk."""
    r = _mid_active_record(template)
    seg = moved(template, store_dir, template.active)
    # The index lags behind the data (as after a crash): it covers only the
    # records before r, so r is in the tail that open() scans.
    _truncate_idx_to(store_dir, seg, template.active_records().index(r))
    mask = 0x80 if field == "length-high" else 0x01
    flip(seg, field_offset(r, field), mask)
    before = snapshot(store_dir)
    with pytest.raises(engine.CorruptionError) as info:
        engine.open(store_dir)
    assert info.value.path == str(seg)
    assert info.value.offset == r.offset
    assert str(seg) in str(info.value) and str(r.offset) in str(info.value)
    assert snapshot(store_dir) == before, "a failed open must not modify the store"
    # Same answer again (the failed open released the writer lock), then
    # repairing the byte brings everything back.
    with pytest.raises(engine.CorruptionError):
        engine.open(store_dir)
    flip(seg, field_offset(r, field), mask)
    check_all(store_dir, template)


@pytest.mark.parametrize("field", ["checksum", "stream", "seq", "payload-first", "payload"])
def test_flipped_byte_in_indexed_active_record_fails_its_reads(template: Template, store_dir: Path, field: str) -> None:
    """With the index covering the damaged record, open does not read it; the
    reads that touch it raise CorruptionError(path, offset), the rest reads
    fine and verify() reports exactly that record."""
    r = _mid_active_record(template)
    seg = moved(template, store_dir, template.active)
    flip(seg, field_offset(r, field))
    _check_one_bad_events_record(template, store_dir, r, seg)


@pytest.mark.parametrize("field", ["checksum", "payload"])
def test_flipped_byte_in_last_active_record(template: Template, store_dir: Path, field: str) -> None:
    """The last record fails its checksum and nothing follows: either an error
    naming it, or it is taken for a torn write and dropped. Nothing else may
    be lost either way."""
    last = template.active_records()[-1]
    seg = moved(template, store_dir, template.active)
    flip(seg, field_offset(last, field))
    try:
        store = engine.open(store_dir)
    except engine.CorruptionError as exc:
        assert exc.path == str(seg) and exc.offset == last.offset
        return
    with store:
        seqs, blobs = template.expected([r for r in template.records if r != last])
        check_contents(store, seqs, blobs)
        assert store.verify().ok


# ------------------------------------------------- flipped bytes, sealed segment
def _mid_sealed_record(template: Template) -> tuple[int, Rec]:
    """An EVENTS record in the middle of a middle sealed segment whose next
    record is also an indexed (EVENTS or BLOB) record."""
    si = len(template.segments) // 2
    recs = template.sealed_records(si)
    for i in range(len(recs) // 2, len(recs) - 1):
        if recs[i].rtype == EVENTS and recs[i + 1].rtype in (EVENTS, BLOB) and recs[i].seq > 0:
            return si, recs[i]
    raise AssertionError("template has no suitable sealed record")


def _check_one_bad_events_record(template: Template, path: Path, r: Rec, seg: Path) -> None:
    name = template.stream_of(r)
    bad = {(name, q) for q in range(r.seq, r.seq + r.count)}
    seqs, blobs = template.expected()
    with engine.open(path) as store:
        for _, q in sorted(bad):
            t0 = time.monotonic()
            with pytest.raises(engine.CorruptionError) as info:
                store.get(name, q)
            assert time.monotonic() - t0 < 1.0
            assert info.value.path == str(seg), info.value
            assert info.value.offset == r.offset, info.value
        with pytest.raises(engine.CorruptionError):
            store.read_range(name)
        # Everything else is still readable, before and after the damage.
        check_contents(store, seqs, blobs, skip=bad)
        assert store.read_range(name, r.seq + r.count) == [
            event_value(name, q) for q in range(r.seq + r.count, seqs[name])
        ]
        report = store.verify()
        assert [(p.path, p.offset) for p in report.problems] == [(str(seg), r.offset)]
        assert report.records == len(template.records) - 1


@pytest.mark.parametrize("field", list(FIELDS))
def test_flipped_byte_in_sealed_record(template: Template, store_dir: Path, field: str) -> None:
    si, r = _mid_sealed_record(template)
    seg = moved(template, store_dir, template.segments[si])
    flip(seg, field_offset(r, field), 0x80 if field == "length-high" else 0x01)
    _check_one_bad_events_record(template, store_dir, r, seg)


@pytest.mark.parametrize("where", ["sealed", "active"])
def test_scan_that_stops_before_a_damaged_record_does_not_touch_it(
    template: Template, store_dir: Path, where: str
) -> None:
    """scan(stream, start, stop) with stop at the first seq of a damaged
    record needs none of its bytes and must not fail because of it."""
    r = _mid_sealed_record(template)[1] if where == "sealed" else _mid_active_record(template)
    flip(store_dir / r.segment.name, r.offset + 32 + r.length // 2)
    name = template.stream_of(r)
    with engine.open(store_dir) as store:
        with pytest.raises(engine.CorruptionError):
            store.read_range(name, r.seq, r.seq + 1)
        assert store.read_range(name, 0, r.seq) == [event_value(name, q) for q in range(r.seq)]


def test_flipped_byte_in_sealed_blob_record(template: Template, store_dir: Path) -> None:
    old = next(r for r in template.sealed_records(0) if r.rtype == BLOB)
    assert template.op_of[old].key == "old"
    seg = moved(template, store_dir, template.segments[0])
    flip(seg, old.end - 1)
    with engine.open(store_dir) as store:
        with pytest.raises(engine.CorruptionError) as info:
            store.get_blob("a", "old")
        assert (info.value.path, info.value.offset) == (str(seg), old.offset)
        seqs, blobs = template.expected()
        del blobs[("a", "old")]
        check_contents(store, seqs, blobs)
        report = store.verify()
        assert [(p.path, p.offset) for p in report.problems] == [(str(seg), old.offset)]


def test_verify_reports_every_damaged_record(template: Template, store_dir: Path) -> None:
    """Damage in three segments (two sealed, the active one): three problems,
    each at its record, and every other record still checked."""
    picks = [template.sealed_records(1)[3], _mid_sealed_record(template)[1], _mid_active_record(template)]
    for r in picks:
        flip(store_dir / r.segment.name, r.offset + 32 + r.length // 3)
    with engine.open(store_dir) as store:
        report = store.verify()
    assert sorted((p.path, p.offset) for p in report.problems) == sorted(
        (str(store_dir / r.segment.name), r.offset) for r in picks
    )
    assert report.records == len(template.records) - 3
    assert not report.ok


# ------------------------------------------------------ absurd length fields
HUGE = 0xFFFFFFF0


def _peak_during(fn: Any) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    err: BaseException | None = None
    try:
        fn()
    except Exception as exc:  # the caller checks it
        err = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, err


def test_huge_length_in_sealed_record_raises_without_allocating(template: Template, store_dir: Path) -> None:
    si, r = _mid_sealed_record(template)
    seg = moved(template, store_dir, template.segments[si])
    poke(seg, r.offset + 8, struct.pack("<I", HUGE))
    name = template.stream_of(r)
    with engine.open(store_dir) as store:
        t0 = time.monotonic()
        peak, err = _peak_during(lambda: store.get(name, r.seq))
        assert isinstance(err, engine.CorruptionError), err
        assert (err.path, err.offset) == (str(seg), r.offset)
        assert peak < 4 * MiB, f"reading a record with length {HUGE:#x} allocated {peak} bytes"
        assert time.monotonic() - t0 < 1.0
        peak, err = _peak_during(store.verify)
        assert err is None and peak < 16 * MiB
        assert [p.offset for p in store.verify().problems] == [r.offset]


def test_huge_length_in_indexed_active_record_raises_on_read(template: Template, store_dir: Path) -> None:
    r = _mid_active_record(template)
    seg = moved(template, store_dir, template.active)
    poke(seg, r.offset + 8, struct.pack("<I", HUGE))
    with engine.open(store_dir) as store:
        peak, err = _peak_during(lambda: store.get(template.stream_of(r), r.seq))
        assert isinstance(err, engine.CorruptionError), err
        assert (err.path, err.offset) == (str(seg), r.offset)
        assert peak < 4 * MiB


def test_huge_length_in_unindexed_tail_fails_open(template: Template, store_dir: Path) -> None:
    """Valid records follow the damaged one: open must report it, not take it
    for a torn tail and truncate every record after it."""
    r = _mid_active_record(template)
    seg = moved(template, store_dir, template.active)
    _truncate_idx_to(store_dir, seg, template.active_records().index(r))
    poke(seg, r.offset + 8, struct.pack("<I", HUGE))
    size = os.path.getsize(seg)
    peak, err = _peak_during(lambda: engine.open(store_dir).close())
    assert peak < 16 * MiB
    assert os.path.getsize(seg) == size, (
        f"open truncated the active segment from {size} to {os.path.getsize(seg)} bytes, "
        f"dropping the valid records after offset {r.offset}"
    )
    assert isinstance(err, engine.CorruptionError), err
    assert (err.path, err.offset) == (str(seg), r.offset)


def _reframe(seg: Path, r: Rec, payload: bytes) -> None:
    """Rewrite the payload of ``r`` (same length) with a valid checksum."""
    with open(seg, "r+b") as f:
        f.seek(r.offset)
        head = bytearray(f.read(32))
        body = bytes(head[8:]) + payload
        head[:8] = xxhash.xxh3_64_intdigest(body).to_bytes(8, "little")
        f.seek(r.offset)
        f.write(bytes(head) + payload)


def _read_payload(r: Rec) -> bytes:
    with open(r.segment, "rb") as f:
        f.seek(r.offset + 32)
        return f.read(r.length)


def test_huge_uncompressed_size_of_an_lz4_event_is_refused(template: Template, store_dir: Path) -> None:
    """A compressed events record whose u32 size prefix claims ~4 GiB (checksum
    recomputed, so only the size check stands in the way)."""
    r = next(
        r
        for r in template.records
        if r.segment != template.active and r.rtype == EVENTS and r.flags & FLAG_LZ4 and r.count == 1
    )
    payload = bytearray(_read_payload(r))
    payload[0:4] = struct.pack("<I", HUGE)
    seg = moved(template, store_dir, r.segment)
    _reframe(seg, r, bytes(payload))
    name = template.stream_of(r)
    with engine.open(store_dir) as store:
        peak, err = _peak_during(lambda: store.get(name, r.seq))
        assert isinstance(err, engine.CorruptionError), err
        assert (err.path, err.offset) == (str(seg), r.offset)
        assert peak < 4 * MiB
        peak, err = _peak_during(lambda: store.read_range(name, r.seq, r.seq + 1))
        assert isinstance(err, engine.CorruptionError), err
        assert peak < 4 * MiB
        assert [p.offset for p in store.verify().problems] == [r.offset]


def test_huge_uncompressed_size_of_an_lz4_blob_is_refused(template: Template, store_dir: Path) -> None:
    seqs, blobs = template.expected()
    # The current version of its key, compressed, in a sealed segment.
    r = next(
        r
        for r in template.records
        if r.rtype == BLOB
        and r.flags & FLAG_LZ4
        and r.segment != template.active
        and blobs[(template.op_of[r].stream, template.op_of[r].key)] == template.op_of[r].version
    )
    op = template.op_of[r]
    payload = bytearray(_read_payload(r))
    (klen,) = struct.unpack_from("<H", payload, 0)
    payload[2 + klen : 2 + klen + 4] = struct.pack("<I", HUGE)
    seg = moved(template, store_dir, r.segment)
    _reframe(seg, r, bytes(payload))
    with engine.open(store_dir) as store:
        report = store.verify()
        assert [(p.path, p.offset) for p in report.problems] == [(str(seg), r.offset)]
        peak, err = _peak_during(lambda: store.get_blob(op.stream, op.key))
        assert isinstance(err, engine.CorruptionError), err
        assert (err.path, err.offset) == (str(seg), r.offset)
        assert peak < 4 * MiB
        del blobs[(op.stream, op.key)]
        check_contents(store, seqs, blobs)


# ------------------------------------------------------------ active index
def _idx_path(template: Template, store_dir: Path) -> Path:
    return store_dir / template.active.name.replace(".seg", ".idx")


def _damage_idx(idx: Path, how: str) -> None:
    data = idx.read_bytes()
    n = (len(data) - IDX_HEADER) // IDX_ENTRY
    mid = IDX_HEADER + IDX_ENTRY * (n // 2)
    last = IDX_HEADER + IDX_ENTRY * (n - 1)
    if how == "delete":
        idx.unlink()
    elif how == "empty":
        os.truncate(idx, 0)
    elif how == "short-header":
        os.truncate(idx, 10)
    elif how == "header-only":
        os.truncate(idx, IDX_HEADER)
    elif how == "mid-entry-cut":
        os.truncate(idx, mid + 13)
    elif how == "last-entry-dropped":
        os.truncate(idx, last)
    elif how == "flip-header":
        flip(idx, 17)
    elif how == "flip-mid-entry-offset":
        flip(idx, mid + 1)
    elif how == "flip-mid-entry-checksum":
        flip(idx, mid + 29)
    elif how == "flip-last-entry":
        flip(idx, last + 8)
    elif how == "garbage-appended":
        with open(idx, "ab") as f:
            f.write(os.urandom(32) + b"junk")
    elif how == "other-segment-id":
        head = bytearray(data[:24])
        head[16:24] = (999).to_bytes(8, "little")
        poke(idx, 0, bytes(head) + xxhash.xxh3_64_intdigest(bytes(head)).to_bytes(8, "little"))
    elif how == "entries-swapped":
        a, b = data[mid : mid + 32], data[mid + 32 : mid + 64]
        poke(idx, mid, b + a)
    else:
        raise AssertionError(how)


IDX_DAMAGE = [
    "delete",
    "empty",
    "short-header",
    "header-only",
    "mid-entry-cut",
    "last-entry-dropped",
    "flip-header",
    "flip-mid-entry-offset",
    "flip-mid-entry-checksum",
    "flip-last-entry",
    "garbage-appended",
    "other-segment-id",
    "entries-swapped",
]


@pytest.mark.parametrize("how", IDX_DAMAGE)
def test_damaged_active_index_is_rebuilt(template: Template, store_dir: Path, how: str) -> None:
    idx = _idx_path(template, store_dir)
    pristine = idx.read_bytes()
    _damage_idx(idx, how)
    check_all(store_dir, template)
    assert idx.read_bytes() == pristine, "the index must be rebuilt to what the data says"
    appends_after_reopen_work(store_dir, template.expected()[0])


@pytest.mark.parametrize("how", ["delete", "flip-mid-entry-offset", "garbage-appended"])
def test_damaged_active_index_readonly(template: Template, store_dir: Path, how: str) -> None:
    _damage_idx(_idx_path(template, store_dir), how)
    before = snapshot(store_dir)
    check_all(store_dir, template, readonly=True)
    assert snapshot(store_dir) == before, "a read-only open must not modify files"


# ------------------------------------------------------------ sealed index
def _sidx_path(store_dir: Path, seg: Path) -> Path:
    return store_dir / seg.name.replace(".seg", ".sidx")


def _damage_sidx(sidx: Path, how: str, other: Path) -> None:
    size = sidx.stat().st_size
    if how == "delete":
        sidx.unlink()
    elif how == "empty":
        os.truncate(sidx, 0)
    elif how.startswith("cut-"):
        os.truncate(sidx, {"cut-10": 10, "cut-63": 63, "cut-64": 64, "cut-half": size // 2, "cut-1": size - 1}[how])
    elif how.startswith("flip-"):
        pos = {
            "flip-magic": 0,
            "flip-data-end": 24,
            "flip-counts": 36,
            "flip-checksum": 60,
            "flip-directory": 70,
            "flip-column": size // 2,
            "flip-last": size - 1,
        }[how]
        flip(sidx, pos)
    elif how == "garbage-appended":
        with open(sidx, "ab") as f:
            f.write(b"\0" * 16)
    elif how == "other-segments-index":
        shutil.copyfile(other, sidx)
    else:
        raise AssertionError(how)


SIDX_DAMAGE = [
    "delete",
    "empty",
    "cut-10",
    "cut-63",
    "cut-64",
    "cut-half",
    "cut-1",
    "flip-magic",
    "flip-data-end",
    "flip-counts",
    "flip-checksum",
    "flip-directory",
    "flip-column",
    "flip-last",
    "garbage-appended",
    "other-segments-index",
]


@pytest.mark.parametrize("how", SIDX_DAMAGE)
def test_damaged_sealed_index_is_rebuilt(template: Template, store_dir: Path, how: str) -> None:
    targets = [_sidx_path(store_dir, template.segments[i]) for i in (0, len(template.segments) // 2)]
    pristine = [t.read_bytes() for t in targets]
    for t in targets:
        _damage_sidx(t, how, _sidx_path(store_dir, template.segments[1]))
    check_all(store_dir, template)
    for t, p in zip(targets, pristine, strict=True):
        assert t.read_bytes() == p, f"{t.name} was not rebuilt to what the data says"
    appends_after_reopen_work(store_dir, template.expected()[0])


@pytest.mark.parametrize("how", ["delete", "flip-column", "cut-half"])
def test_damaged_sealed_index_readonly(template: Template, store_dir: Path, how: str) -> None:
    """Read-only: rebuilt in memory, the file left as it is, and close() works."""
    sidx = _sidx_path(store_dir, template.segments[1])
    _damage_sidx(sidx, how, _sidx_path(store_dir, template.segments[2]))
    before = snapshot(store_dir)
    check_all(store_dir, template, readonly=True)
    assert snapshot(store_dir) == before, "a read-only open must not modify files"


# ------------------------------------------------- MANIFEST and segment files
def _manifest_bytes(store_dir: Path) -> bytes:
    return (store_dir / "MANIFEST").read_bytes()


def _open_fails(store_dir: Path, path: Path | None = None, offset: int | None = None) -> engine.CorruptionError:
    before = snapshot(store_dir)
    for _ in range(2):  # twice: a failed open must release the writer lock
        with pytest.raises(engine.CorruptionError) as info:
            engine.open(store_dir)
        if path is not None:
            assert info.value.path == str(path), info.value
            assert str(path) in str(info.value)
        if offset is not None:
            assert info.value.offset == offset, info.value
    assert snapshot(store_dir) == before, "a failed open must not modify the store"
    with pytest.raises(engine.CorruptionError):
        engine.open(store_dir, readonly=True)
    return info.value


def test_every_flipped_byte_of_the_manifest_is_detected(template: Template, store_dir: Path) -> None:
    manifest = store_dir / "MANIFEST"
    good = _manifest_bytes(store_dir)
    for pos in range(len(good)):
        for mask in (1 << (pos % 8), 0x20):
            bad = bytearray(good)
            bad[pos] ^= mask
            manifest.write_bytes(bytes(bad))
            with pytest.raises(engine.CorruptionError) as info:
                engine.open(store_dir, readonly=True)
            assert info.value.path == str(manifest), (pos, mask)
    manifest.write_bytes(good)
    check_all(store_dir, template)


@pytest.mark.parametrize("keep", [0, 1, 10, -30, -2])
def test_truncated_manifest(template: Template, store_dir: Path, keep: int) -> None:
    manifest = store_dir / "MANIFEST"
    good = manifest.read_bytes()
    manifest.write_bytes(good[:keep])
    _open_fails(store_dir, manifest)


@pytest.mark.parametrize("text", ["[]", "[1, 2]", "null", '"MANIFEST"', "42", "{}", '{"checksum": "0"}', "\x00" * 64])
def test_manifest_replaced_by_other_content(template: Template, store_dir: Path, text: str) -> None:
    manifest = store_dir / "MANIFEST"
    manifest.write_text(text)
    _open_fails(store_dir, manifest)


def test_deleted_manifest_next_to_segments(template: Template, store_dir: Path) -> None:
    (store_dir / "MANIFEST").unlink()
    _open_fails(store_dir)


def test_manifest_naming_a_missing_segment(template: Template, store_dir: Path) -> None:
    seg = moved(template, store_dir, template.segments[2])
    seg.unlink()
    _open_fails(store_dir, seg)


@pytest.mark.parametrize("pos", [0, 7, 8, 16, 24, 31])
@pytest.mark.parametrize("which", ["sealed", "active"])
def test_damaged_segment_header(template: Template, store_dir: Path, pos: int, which: str) -> None:
    seg = moved(template, store_dir, template.segments[1] if which == "sealed" else template.active)
    flip(seg, pos)
    _open_fails(store_dir, seg, 0)


def test_segment_cut_inside_its_header(template: Template, store_dir: Path) -> None:
    seg = moved(template, store_dir, template.active)
    os.truncate(seg, 20)
    _open_fails(store_dir, seg, 0)


@pytest.mark.parametrize("cut", [1, 31, 32, -1])
def test_truncated_sealed_segment(template: Template, store_dir: Path, cut: int) -> None:
    """A sealed segment is never legitimately short: its sealed index covers
    more data than the file holds, and open reports where the data stops."""
    recs = template.sealed_records(2)
    last = recs[-1]
    seg = moved(template, store_dir, template.segments[2])
    size = last.offset + cut if cut > 0 else last.end + cut
    os.truncate(seg, size)
    _open_fails(store_dir, seg, size)


def test_stream_names_survive_a_damaged_sealed_index(template: Template, store_dir: Path) -> None:
    """Streams are bound to their names by STREAM_CREATE records in the first
    segment; with every sealed index gone they are all rebuilt from the data."""
    for seg in template.segments[:-1]:
        _sidx_path(store_dir, seg).unlink()
    check_all(store_dir, template)
    meta_names = set()
    for seg in template.segments[:-1]:
        data = _sidx_path(store_dir, seg).read_bytes()
        meta_len = struct.unpack_from("<I", data, 44)[0]
        meta = msgpack.unpackb(data[len(data) - meta_len :], strict_map_key=False)
        meta_names |= set(meta["creates"].values())
    assert meta_names == {"a", "b", "c"}
