"""The Store API: reads, writes, errors, durability modes, segment rolls, reopen, threads."""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import engine
from engine import (
    BlobNotFoundError,
    CorruptionError,
    EncodeError,
    EventNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    ReadOnlyError,
    RecordTooLargeError,
    SeglogError,
    StoreClosedError,
    StoreLockedError,
    UnknownStreamError,
)

MODES = ["process", "power", "relaxed"]


def fast_tmp_base() -> str | None:
    """tmpfs when available: the engine fsyncs a lot and the disk is shared, so tests on a
    real disk are slow and noisy. The logic under test is the same."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@pytest.fixture
def base() -> Iterator[pathlib.Path]:
    d = tempfile.mkdtemp(prefix="seglog-test-", dir=fast_tmp_base())
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def path(base: pathlib.Path) -> pathlib.Path:
    return base / "store"


@pytest.fixture
def store(path: pathlib.Path) -> Iterator[engine.Store]:
    s = engine.open(path)
    yield s
    s.close()


def listing(s: engine.Store) -> list[tuple[str, int, int, int]]:
    return [(i.name, i.events, i.bytes, i.blobs) for i in s.streams()]


def snapshot(s: engine.Store) -> tuple[Any, ...]:
    st = s.stats()
    return (listing(s), st.segments, st.streams, st.events, st.bytes_written, st.generation)


def all_events(s: engine.Store) -> dict[str, list[Any]]:
    return {info.name: s.read_range(info.name) for info in s.streams()}


# ================================================================ append / get


def test_append_returns_dense_sequence_numbers(store: engine.Store) -> None:
    assert [store.append("s", i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert store.append("other", "x") == 0
    assert store.append("s", 5) == 5
    assert store.next_seq("s") == 6
    assert store.next_seq("other") == 1


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    -0.0,
    float("inf"),
    "",
    "text",
    "é🙂",
    "\ud83d",
    "x\udc00y",
    b"",
    b"\x00\xff",
    [],
    {},
    [1, [2, [3]]],
    {"k": {"n": [None, b"b"]}},
    {1: "int key"},
    "z" * 5000,
    os.urandom(3000),
]


def test_values_round_trip_through_get_scan_and_reopen(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        for v in VALUES:
            s.append("v", v)
        assert [s.get("v", i) for i in range(len(VALUES))] == VALUES
        assert s.read_range("v") == VALUES
    with engine.open(path) as s:
        assert s.read_range("v") == VALUES
        assert [s.get("v", i) for i in range(len(VALUES))] == VALUES


def test_tuples_come_back_as_lists(store: engine.Store) -> None:
    store.append("s", (1, (2, "three")))
    assert store.get("s", 0) == [1, [2, "three"]]


def test_append_batch_assigns_consecutive_seqs(store: engine.Store) -> None:
    assert store.append_batch("s", ["a", "b", "c"]) == 0
    assert store.append("s", "d") == 3
    assert store.append_batch("s", ("e", "f")) == 4
    assert store.append_batch("s", (x for x in ["g"])) == 6
    assert store.read_range("s") == list("abcdefg")
    assert store.get("s", 5) == "f"


def test_append_batch_mixed_sizes_with_compression(store: engine.Store) -> None:
    batch = ["small", "big " * 2000, os.urandom(2000), {"k": "v" * 1000}]
    first = store.append_batch("s", batch)
    assert [store.get("s", first + i) for i in range(4)] == batch
    assert store.read_range("s", 1, 3) == batch[1:3]


def test_get_out_of_range(store: engine.Store) -> None:
    store.append_batch("s", [1, 2, 3])
    for seq in (-1, 3, 4, 10**12):
        with pytest.raises(EventNotFoundError):
            store.get("s", seq)
    store.create_stream("empty")
    with pytest.raises(EventNotFoundError) as info:
        store.get("empty", 0)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, NotFoundError)


def test_unknown_stream_reads(store: engine.Store) -> None:
    store.append("s", 1)
    for call in (
        lambda: store.get("nope", 0),
        lambda: store.scan("nope"),
        lambda: store.read_range("nope"),
        lambda: store.next_seq("nope"),
        lambda: store.stream_info("nope"),
        lambda: store.get_blob("nope", "k"),
        lambda: store.blob_keys("nope"),
        lambda: store.drop_stream("nope"),
    ):
        with pytest.raises(UnknownStreamError) as info:
            call()
        assert isinstance(info.value, LookupError)
    assert not store.has_stream("nope")
    assert "nope" not in store


# ================================================================ scan


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        (0, None),
        (0, 10),
        (3, 7),
        (9, 10),
        (9, None),
        (0, 0),
        (5, 5),
        (7, 3),
        (10, None),
        (10, 20),
        (50, None),
        (0, 1000),
        (4, 5),
    ],
)
def test_scan_bounds(store: engine.Store, start: int, stop: int | None) -> None:
    vals = [f"v{i}" for i in range(10)]
    store.append_batch("s", vals[:4])
    for v in vals[4:]:
        store.append("s", v)
    clamped_stop = 10 if stop is None else min(stop, 10)
    expected = vals[start:clamped_stop]
    assert list(store.scan("s", start, stop)) == expected
    assert store.read_range("s", start, stop) == expected


@pytest.mark.parametrize(("start", "stop"), [(-5, 3), (-2, None), (0, -1), (-1, -1)])
def test_negative_positions_are_refused_like_get(store: engine.Store, start: int, stop: int | None) -> None:
    store.append_batch("s", ["a", "b", "c"])
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        store.scan("s", start, stop)
    with pytest.raises(InvalidArgumentError):
        store.read_range("s", start, stop)
    with pytest.raises(EventNotFoundError):
        store.get("s", -1)


def test_scan_empty_stream(store: engine.Store) -> None:
    store.create_stream("e")
    assert list(store.scan("e")) == []
    assert store.read_range("e", 0, 100) == []


def test_scan_of_unknown_stream_fails_before_iteration(store: engine.Store) -> None:
    with pytest.raises(UnknownStreamError):
        store.scan("missing")  # not deferred to the first next()


def test_scan_stop_defaults_to_end_at_call_time(store: engine.Store) -> None:
    store.append_batch("s", [0, 1, 2])
    it = store.scan("s")
    store.append_batch("s", [3, 4])
    assert list(it) == [0, 1, 2]
    assert store.read_range("s") == [0, 1, 2, 3, 4]


def test_scan_start_inside_a_batch(store: engine.Store) -> None:
    store.append_batch("s", list(range(10)))
    store.append_batch("s", list(range(10, 20)))
    assert store.read_range("s", 7, 13) == list(range(7, 13))
    assert store.read_range("s", 13) == list(range(13, 20))


# ================================================================ blobs


def test_blob_put_get_last_write_wins(store: engine.Store) -> None:
    store.put_blob("s", "k", {"v": 1})
    assert store.get_blob("s", "k") == {"v": 1}
    store.put_blob("s", "k", [2])
    store.put_blob("s", "other", "x")
    assert store.get_blob("s", "k") == [2]
    assert store.get_blob("s", "other") == "x"
    assert store.has_blob("s", "k")
    assert not store.has_blob("s", "absent")
    assert store.blob_keys("s") == ["k", "other"]
    assert store.stream_info("s").blobs == 2


def test_blobs_are_per_stream(store: engine.Store) -> None:
    store.put_blob("a", "k", "in a")
    store.put_blob("b", "k", "in b")
    assert store.get_blob("a", "k") == "in a"
    assert store.get_blob("b", "k") == "in b"
    store.create_stream("c")
    with pytest.raises(BlobNotFoundError) as info:
        store.get_blob("c", "k")
    assert isinstance(info.value, LookupError)
    assert store.blob_keys("c") == []


def test_put_blob_creates_the_stream_without_events(store: engine.Store) -> None:
    store.put_blob("fresh", "k", 1)
    assert "fresh" in store
    assert store.next_seq("fresh") == 0
    info = store.stream_info("fresh")
    assert (info.events, info.blobs) == (0, 1)
    assert info.bytes > 0
    assert store.append("fresh", "e") == 0


def test_blob_keys_sorted_and_unique(store: engine.Store) -> None:
    keys = ["zeta", "alpha", "ключ", "🙂", "with space", "a" * 1024]
    for k in keys:
        store.put_blob("s", k, k)
        store.put_blob("s", k, k + "!")
    assert store.blob_keys("s") == sorted(keys)
    assert all(store.get_blob("s", k) == k + "!" for k in keys)


def test_large_blob_values(store: engine.Store) -> None:
    text = "(lambda (x) x) " * 3000
    noise = os.urandom(50_000)
    store.put_blob("s", "text", text)
    store.put_blob("s", "noise", noise)
    assert store.get_blob("s", "text") == text
    assert store.get_blob("s", "noise") == noise


@pytest.mark.parametrize("key", ["", None, 1, b"k", "\ud800", "a" * 1025, "é" * 513], ids=repr)
def test_bad_blob_keys(store: engine.Store, key: Any) -> None:
    store.put_blob("s", "ok", 1)
    with pytest.raises(InvalidNameError):
        store.put_blob("s", key, 1)
    with pytest.raises(InvalidNameError):
        store.get_blob("s", key)
    with pytest.raises(InvalidNameError):
        store.has_blob("s", key)
    assert store.blob_keys("s") == ["ok"]


# ================================================================ streams


def test_create_stream_is_idempotent(store: engine.Store) -> None:
    store.create_stream("s")
    store.append("s", 1)
    store.create_stream("s")
    assert store.next_seq("s") == 1
    assert [i.name for i in store.streams()] == ["s"]


GOOD_NAMES = ["a", "session-1", "with space", "a/b\\c", "é🙂", "x" * 255, "é" * 127, "\u200b", "🙂" * 63]
BAD_NAMES = [
    "",
    None,
    1,
    b"bytes",
    ("t",),
    "x" * 256,
    "é" * 128,
    "🙂" * 64,
    "a\x00b",
    "line\n",
    "tab\t",
    "del\x7f",
    "\x1f",
    "\ud800",
    "ok\udfff",
]


@pytest.mark.parametrize("name", GOOD_NAMES, ids=repr)
def test_good_stream_names(path: pathlib.Path, name: str) -> None:
    with engine.open(path) as s:
        s.create_stream(name)
        s.append(name, "v")
        s.put_blob(name, "k", "b")
        assert name in s
    with engine.open(path) as s:
        assert [i.name for i in s.streams()] == [name]
        assert s.get(name, 0) == "v"
        assert s.get_blob(name, "k") == "b"


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_stream_names_rejected(store: engine.Store, name: Any) -> None:
    for call in (
        lambda: store.create_stream(name),
        lambda: store.append(name, 1),
        lambda: store.append_batch(name, [1]),
        lambda: store.put_blob(name, "k", 1),
    ):
        with pytest.raises(InvalidNameError) as info:
            call()
        assert isinstance(info.value, ValueError)
    assert store.streams() == []
    assert store.stats().bytes_written == 0


def test_drop_stream(store: engine.Store) -> None:
    store.append_batch("s", [1, 2, 3])
    store.put_blob("s", "k", "v")
    store.append("keep", "k")
    store.drop_stream("s")
    assert "s" not in store
    assert not store.has_stream("s")
    with pytest.raises(UnknownStreamError):
        store.get("s", 0)
    with pytest.raises(UnknownStreamError):
        store.drop_stream("s")
    assert [i.name for i in store.streams()] == ["keep"]
    # Re-created: starts again at 0, old events and blobs are gone.
    assert store.append("s", "new") == 0
    assert store.read_range("s") == ["new"]
    assert not store.has_blob("s", "k")
    assert store.stream_info("s").blobs == 0
    assert store.read_range("keep") == ["k"]


def test_has_stream_and_contains(store: engine.Store) -> None:
    store.append("s", 1)
    assert store.has_stream("s")
    assert "s" in store
    assert "t" not in store
    assert 1 not in store
    assert None not in store


def test_streams_listing(store: engine.Store) -> None:
    assert store.streams() == []
    store.append_batch("b", [1, 2, 3])
    store.append("a", "x")
    store.put_blob("a", "k1", 1)
    store.put_blob("a", "k1", 2)
    store.put_blob("a", "k2", 3)
    store.create_stream("c")
    infos = store.streams()
    assert [(i.name, i.events, i.blobs) for i in infos] == [("a", 1, 2), ("b", 3, 0), ("c", 0, 0)]
    assert infos[2].bytes == 0
    assert all(i.bytes > 0 for i in infos[:2])
    for info in infos:
        assert store.stream_info(info.name) == info
    before = store.stream_info("b").bytes
    store.append("b", "y" * 100)
    assert store.stream_info("b").bytes > before + 100


def test_stats(store: engine.Store, path: pathlib.Path) -> None:
    st = store.stats()
    assert st.path == os.path.abspath(path)
    assert st.durability == "process"
    assert (st.segments, st.streams, st.events, st.bytes_written) == (1, 0, 0, 0)
    store.append_batch("a", [1, 2])
    store.append("b", 3)
    st2 = store.stats()
    assert (st2.streams, st2.events) == (2, 3)
    assert st2.bytes_written > 0
    assert st2.bytes_on_disk >= st2.bytes_written


def test_sealed_index_from_the_catalog_matches_one_rebuilt_from_the_segment(path: pathlib.Path) -> None:
    """A roll builds the sealed index from the in-memory catalog; a missing index is
    rebuilt by scanning the segment. Both must give the same bytes, also for streams
    dropped inside the segment, overwritten blobs, and a segment reopened half-way."""
    rng = random.Random(7)
    names = [f"s{i}" for i in range(6)]
    for run in range(2):  # the second open accounts the first one's active segment by recovery
        with engine.open(path, segment_bytes=4096) as s:
            for step in range(200 * run, 200 * run + 200):
                name = rng.choice(names)
                r = rng.random()
                if r < 0.6:
                    s.append_batch(name, [{"i": step, "pad": "x" * rng.randint(0, 90)}] * rng.randint(1, 3))
                elif r < 0.9:
                    s.put_blob(name, rng.choice(["a", "b", "c", f"k{step}"]), "v" * rng.randint(0, 300))
                else:
                    with contextlib.suppress(UnknownStreamError):  # dropped before
                        s.drop_stream(name)
            sealed = s.stats().segments - 1
    built = {p.name: p.read_bytes() for p in path.glob("*.sidx")}
    assert len(built) == sealed >= 10
    for name in built:
        (path / name).unlink()
    with engine.open(path) as s:
        pass
    rebuilt = {p.name: p.read_bytes() for p in path.glob("*.sidx")}
    assert rebuilt == built


def test_verify_healthy_store(path: pathlib.Path) -> None:
    with engine.open(path, segment_bytes=4096) as s:
        report = s.verify()
        assert report.ok and report.records == 0
        for i in range(60):
            s.append(f"s{i % 3}", {"i": i, "pad": "p" * 100})
        s.put_blob("s0", "k", "v" * 2000)
        s.drop_stream("s1")
        report = s.verify()
        assert report.ok, report.problems
        assert report.records >= 60 + 1 + 3 + 1
        n = report.records
    with engine.open(path) as s:
        report = s.verify()
        assert report.ok and report.records == n
    with engine.open(path, readonly=True) as s:
        assert s.verify().ok


def test_damaged_record_is_reported_not_returned(path: pathlib.Path) -> None:
    with engine.open(path, segment_bytes=4096) as s:
        s.append("s", "A" * 300)  # first EVENTS record of segment 1, after the STREAM_CREATE
        for i in range(40):
            s.append("s", f"{i:03d}" + "B" * 150)
        assert s.stats().segments > 1  # segment 1 is sealed
    seg1 = path / "00000000000000000001.seg"
    data = bytearray(seg1.read_bytes())
    first = data.index(b"A" * 300)
    data[first + 100] ^= 0x01
    seg1.write_bytes(bytes(data))
    with engine.open(path) as s:
        with pytest.raises(CorruptionError) as info:
            s.get("s", 0)
        assert info.value.path == str(seg1)
        with pytest.raises(CorruptionError):
            s.read_range("s")
        assert s.get("s", 1) == "000" + "B" * 150  # the rest stays readable
        assert s.read_range("s", 1) == [f"{i:03d}" + "B" * 150 for i in range(40)]
        report = s.verify()
        assert not report.ok
        assert len(report.problems) == 1
        problem = report.problems[0]
        assert problem.path == str(seg1)
        assert problem.offset < first < problem.offset + 400
        assert report.records > 40


def test_repr_and_pathlike(path: pathlib.Path) -> None:
    s = engine.open(path)
    assert isinstance(s, engine.Store)
    assert os.path.isabs(s.path)
    assert "process" in repr(s)
    s.close()
    assert "closed" in repr(s)


# ================================================================ rejected input writes nothing


def _bad_ops() -> list[tuple[str, type[Exception], Callable[[engine.Store], Any]]]:
    return [
        ("encode-new-stream", EncodeError, lambda s: s.append("new", object())),
        ("encode-existing", EncodeError, lambda s: s.append("s", {1, 2})),
        ("int-too-big", EncodeError, lambda s: s.append("s", 2**64)),
        ("int-too-small", EncodeError, lambda s: s.append("new", -(2**63) - 1)),
        ("batch-one-bad", EncodeError, lambda s: s.append_batch("s", [1, 2, object()])),
        ("batch-one-bad-new", EncodeError, lambda s: s.append_batch("new", ["ok", [object()]])),
        ("batch-empty", InvalidArgumentError, lambda s: s.append_batch("s", [])),
        ("batch-empty-new", InvalidArgumentError, lambda s: s.append_batch("new", [])),
        ("too-large", RecordTooLargeError, lambda s: s.append("s", os.urandom(5000))),
        ("too-large-new", RecordTooLargeError, lambda s: s.append("new", os.urandom(5000))),
        ("batch-too-large", RecordTooLargeError, lambda s: s.append_batch("new", [os.urandom(600)] * 8)),
        ("blob-too-large", RecordTooLargeError, lambda s: s.put_blob("new", "k", os.urandom(5000))),
        ("blob-bad-value", EncodeError, lambda s: s.put_blob("new", "k", object())),
        ("blob-bad-value-existing", EncodeError, lambda s: s.put_blob("s", "k", {1})),
        ("blob-bad-key", InvalidNameError, lambda s: s.put_blob("new", "", 1)),
        ("blob-key-type", InvalidNameError, lambda s: s.put_blob("new", 5, 1)),
        ("bad-name", InvalidNameError, lambda s: s.append("bad\n", 1)),
        ("bad-name-create", InvalidNameError, lambda s: s.create_stream("x" * 300)),
        ("drop-missing", UnknownStreamError, lambda s: s.drop_stream("new")),
        ("open-option", InvalidArgumentError, lambda s: engine.open(s.path, segment_bytes=10)),
    ]


@pytest.mark.parametrize("op", _bad_ops(), ids=lambda op: op[0])
def test_rejected_input_writes_nothing(path: pathlib.Path, op: tuple[str, type[Exception], Callable]) -> None:
    _name, exc, call = op
    with engine.open(path, max_record_bytes=4096) as s:
        s.append_batch("s", [1, 2, 3])
        s.put_blob("s", "k", "v")
        before = snapshot(s)
        with pytest.raises(exc):
            call(s)
        assert snapshot(s) == before
        assert "new" not in s
        assert s.append("s", 4) == 3  # the store still works, seqs not skipped
        after_ok = snapshot(s)
    with engine.open(path, max_record_bytes=4096) as s:
        assert snapshot(s)[0] == after_ok[0]
        assert s.read_range("s") == [1, 2, 3, 4]
        assert s.get_blob("s", "k") == "v"
        assert s.verify().ok


def test_record_size_limit_boundary(path: pathlib.Path) -> None:
    with engine.open(path, max_record_bytes=1024) as s:
        # EVENTS payload: 1-byte array header + 3-byte bin16 header + data.
        s.append("s", os.urandom(1024 - 4))
        with pytest.raises(RecordTooLargeError) as info:
            s.append("s", os.urandom(1024 - 3))
        assert isinstance(info.value, InvalidArgumentError)
        assert s.next_seq("s") == 1


# ================================================================ close / readonly / lock


def test_use_after_close(path: pathlib.Path) -> None:
    s = engine.open(path)
    s.append("s", 1)
    s.put_blob("s", "k", 1)
    s.close()
    s.close()  # idempotent
    calls: list[Callable[[], Any]] = [
        lambda: s.append("s", 2),
        lambda: s.append("new", 2),
        lambda: s.append_batch("s", [2]),
        lambda: s.put_blob("s", "k", 2),
        lambda: s.get("s", 0),
        lambda: s.scan("s"),
        lambda: s.read_range("s"),
        lambda: s.get_blob("s", "k"),
        lambda: s.has_blob("s", "k"),
        lambda: s.blob_keys("s"),
        lambda: s.create_stream("t"),
        lambda: s.drop_stream("s"),
        lambda: s.has_stream("s"),
        lambda: "s" in s,
        lambda: s.next_seq("s"),
        lambda: s.stream_info("s"),
        s.streams,
        s.flush,
        s.sync,
        s.stats,
        s.verify,
    ]
    for call in calls:
        with pytest.raises(StoreClosedError):
            call()
    with engine.open(path) as s2:
        assert s2.read_range("s") == [1]
        assert s2.get_blob("s", "k") == 1


def test_context_manager_closes(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        s.append("s", 1)
    with pytest.raises(StoreClosedError):
        s.append("s", 2)
    with engine.open(path) as s:  # lock was released
        assert s.read_range("s") == [1]


def test_readonly_store(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        s.append_batch("s", [1, 2])
        s.put_blob("s", "k", "v")
    with engine.open(path, readonly=True) as r:
        assert r.read_range("s") == [1, 2]
        assert r.get("s", 1) == 2
        assert r.get_blob("s", "k") == "v"
        assert r.blob_keys("s") == ["k"]
        assert r.verify().ok
        before = snapshot(r)
        for call in (
            lambda: r.append("s", 3),
            lambda: r.append("t", 3),
            lambda: r.append_batch("s", [3]),
            lambda: r.put_blob("s", "k", "w"),
            lambda: r.create_stream("t"),
            lambda: r.drop_stream("s"),
            r.flush,
            r.sync,
        ):
            with pytest.raises(ReadOnlyError):
                call()
        assert snapshot(r) == before
    with engine.open(path) as s:
        assert listing(s) == before[0]
        assert s.get_blob("s", "k") == "v"


def test_readonly_does_not_take_the_writer_lock(path: pathlib.Path) -> None:
    with engine.open(path) as w:
        w.append("s", 1)
        with engine.open(path, readonly=True) as r1, engine.open(path, readonly=True) as r2:
            assert r1.read_range("s") == r2.read_range("s") == [1]
        w.append("s", 2)
        assert w.read_range("s") == [1, 2]


def test_readonly_or_no_create_on_missing_store(base: pathlib.Path) -> None:
    missing = base / "missing"
    with pytest.raises(NotFoundError):
        engine.open(missing, readonly=True)
    with pytest.raises(NotFoundError):
        engine.open(missing, create=False)
    assert not missing.exists()
    empty = base / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError):
        engine.open(empty, readonly=True)
    with pytest.raises(NotFoundError):
        engine.open(empty, create=False)
    assert not any(n.endswith(".seg") or n == "MANIFEST" for n in os.listdir(empty))


def test_create_false_opens_existing(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        s.append("s", 1)
    with engine.open(path, create=False) as s:
        assert s.read_range("s") == [1]


def test_second_writer_in_same_process_is_locked_out(path: pathlib.Path) -> None:
    first = engine.open(path)
    try:
        first.append("s", 1)
        with pytest.raises(StoreLockedError) as info:
            engine.open(path)
        assert isinstance(info.value, SeglogError)
        assert str(os.getpid()) in str(info.value)
        with pytest.raises(StoreLockedError):  # still locked after a failed attempt
            engine.open(path, durability="relaxed")
        assert first.append("s", 2) == 1  # first writer unaffected
        assert first.read_range("s") == [1, 2]
    finally:
        first.close()
    with engine.open(path) as again:
        assert again.read_range("s") == [1, 2]


def test_open_rejects_unknown_and_invalid_options(path: pathlib.Path) -> None:
    with pytest.raises(InvalidArgumentError):
        engine.open(path, no_such_option=1)
    with pytest.raises(InvalidArgumentError):
        engine.open(path, durability="sometimes")
    with pytest.raises(InvalidArgumentError):
        engine.open(path, segment_bytes=100)
    assert not path.exists()


# ================================================================ durability modes


@pytest.mark.parametrize("mode", MODES)
def test_durability_modes_produce_readable_data(path: pathlib.Path, mode: str) -> None:
    with engine.open(path, durability=mode, segment_bytes=4096) as s:
        assert s.stats().durability == mode
        for i in range(100):
            s.append(f"s{i % 2}", {"i": i, "pad": "x" * (i % 50)})
        s.append_batch("s0", ["b1", "b2"])
        s.put_blob("s1", "k", "blob")
        assert s.read_range("s1") == [{"i": i, "pad": "x" * (i % 50)} for i in range(1, 100, 2)]
        assert s.get("s0", 50) == "b1"
        assert s.stats().segments > 1
        expected = all_events(s)
        infos = listing(s)
    with engine.open(path, durability=mode) as s:
        assert all_events(s) == expected
        assert listing(s) == infos
        assert s.get_blob("s1", "k") == "blob"
        assert s.verify().ok


def test_power_mode_syncs_before_returning(path: pathlib.Path) -> None:
    with engine.open(path, durability="power", flush_interval=60) as s:
        s.append("s", 1)
        st = s.stats()
        assert st.bytes_synced == st.bytes_written > 0
        assert st.fsyncs >= 1
        s.put_blob("s", "k", 2)
        st = s.stats()
        assert st.bytes_synced == st.bytes_written


def test_process_mode_hands_data_to_os_on_append(path: pathlib.Path) -> None:
    with engine.open(path, durability="process", flush_interval=60) as s:
        s.append_batch("s", [1, 2])
        with engine.open(path, readonly=True) as r:
            assert r.read_range("s") == [1, 2]
        s.sync()
        st = s.stats()
        assert st.bytes_synced == st.bytes_written


def test_relaxed_mode_buffers_until_flush(path: pathlib.Path) -> None:
    with engine.open(path, durability="relaxed", flush_interval=60) as s:
        s.append_batch("s", [1, 2])
        with engine.open(path, readonly=True) as r:
            assert "s" not in r  # still in the process's buffer
        s.flush()
        with engine.open(path, readonly=True) as r:
            assert r.read_range("s") == [1, 2]


def test_relaxed_mode_writes_early_when_buffer_fills(path: pathlib.Path) -> None:
    with engine.open(path, durability="relaxed", flush_interval=60, buffer_bytes=1) as s:
        s.append("s", "v")
        with engine.open(path, readonly=True) as r:
            assert r.read_range("s") == ["v"]


def test_relaxed_mode_read_your_writes(path: pathlib.Path) -> None:
    with engine.open(path, durability="relaxed", flush_interval=60) as s:
        for i in range(20):
            assert s.get("s", s.append("s", {"i": i})) == {"i": i}
        assert s.read_range("s", 15) == [{"i": i} for i in range(15, 20)]
        s.put_blob("s", "k", "v1")
        assert s.get_blob("s", "k") == "v1"
        s.put_blob("s", "k", "v2")
        assert s.get_blob("s", "k") == "v2"
        s.put_blob("s", "k2", "w")
        assert s.blob_keys("s") == ["k", "k2"]
        assert s.has_blob("s", "k2")
        assert s.verify().ok
        assert s.stats().events == 20
    with engine.open(path) as s:  # close flushed the buffer
        assert s.next_seq("s") == 20
        assert s.get_blob("s", "k") == "v2"


def _grown_event(stream: int, seq: int) -> dict[str, Any]:
    pad = random.Random(stream * 1_000_003 + seq).randbytes(300 + (stream * 7 + seq) % 200).hex()
    return {"s": stream, "q": seq, "pad": pad}  # hex of random bytes: LZ4 leaves it as it is


@pytest.mark.parametrize("durability", ["process", "relaxed"])
def test_point_reads_of_the_active_segment_while_it_grows(path: pathlib.Path, durability: str) -> None:
    """The writer's active segment is read through maps made again as it grows
    (several MiB here): every event, new or old, read while appends go on in
    another thread, is the one appended, through a roll as well."""
    n_streams, per_stream = 4, 2500  # ~10 MiB of events: maps remade about every MiB
    with engine.open(path, durability=durability, segment_bytes=8 << 20, flush_interval=60) as s:
        names = [f"s{k}" for k in range(n_streams)]
        for k, name in enumerate(names):
            s.append(name, _grown_event(k, 0))
        done = threading.Event()
        errors: list[BaseException] = []

        def read() -> None:
            rng = random.Random(5)
            try:
                while not done.is_set():
                    k = rng.randrange(n_streams)
                    top = s.next_seq(names[k])
                    for q in (top - 1, rng.randrange(top)):
                        assert s.get(names[k], q) == _grown_event(k, q)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for q in range(1, per_stream):
                for k, name in enumerate(names):
                    assert s.append(name, _grown_event(k, q)) == q
                    if q % 97 == 0:
                        assert s.get(name, q // 2) == _grown_event(k, q // 2)
        finally:
            done.set()
            reader.join()
        assert not errors, errors
        assert s.stats().segments >= 2
        rng = random.Random(6)
        for _ in range(3000):
            k, q = rng.randrange(n_streams), rng.randrange(per_stream)
            assert s.get(names[k], q) == _grown_event(k, q)
    with engine.open(path) as s:
        assert [s.get("s3", q) for q in range(0, per_stream, 250)] == [
            _grown_event(3, q) for q in range(0, per_stream, 250)
        ]


def _rss_mapped_files_kb() -> int:
    """Resident pages of mapped files: RssFile, plus RssShmem for files on a tmpfs."""
    kb = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssFile", "RssShmem"):
                kb[key] = int(value.split()[0])
    assert len(kb) == 2, f"no RssFile/RssShmem lines: {kb}"
    return sum(kb.values())


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssFile and RssShmem from /proc/self/status")
def test_reading_every_record_once_leaves_resident_memory_alone(path: pathlib.Path) -> None:
    """A process that reads a little of every stream (a first read of each record) does
    not map the segments' pages into its resident memory: a first read verifies the
    record with a pread and decodes from those bytes (each touch of a map also maps
    the pages around it: 16 of them by default on Linux)."""
    n = 2000
    rng = random.Random(3)
    with engine.open(path, segment_bytes=4 << 20) as s:
        for k in range(n):  # one record per ~5 KB event: every record on pages of its own
            s.append(f"s{k % 50}", {"k": k, "pad": rng.randbytes(2500).hex()})
    with engine.open(path) as s:
        assert s.stats().segments >= 3
        s.get("s0", 0)  # the code path is warm before measuring
        before = _rss_mapped_files_kb()
        for k in range(1, n):
            assert s.get(f"s{k % 50}", k // 50)["k"] == k
        grown_kb = _rss_mapped_files_kb() - before
        assert grown_kb < 2048, f"{grown_kb} KiB of mapped file pages after one read of each of {n} records"
        for k in range(1, n, 7):  # later reads of a record slice the map
            assert s.get(f"s{k % 50}", k // 50)["k"] == k


# ================================================================ segment rolls


def test_segment_rolls_keep_everything_readable(path: pathlib.Path) -> None:
    expected: dict[str, list[Any]] = {"a": [], "b": [], "c": []}
    with engine.open(path, segment_bytes=4096) as s:
        for i in range(300):
            name = "abc"[i % 3]
            value = {"i": i, "pad": "p" * (i % 97)}
            assert s.append(name, value) == len(expected[name])
            expected[name].append(value)
            if i % 50 == 0:
                batch = [i, str(i), [i]]
                assert s.append_batch(name, batch) == len(expected[name])
                expected[name].extend(batch)
        segments = s.stats().segments
        assert segments > 5
        for name, vals in expected.items():
            assert s.read_range(name) == vals
            assert [s.get(name, i) for i in range(len(vals))] == vals
            assert s.read_range(name, 17, 123) == vals[17:123]
        infos = listing(s)
        assert s.verify().ok
    with engine.open(path, segment_bytes=4096) as s:
        assert s.stats().segments == segments
        assert listing(s) == infos
        for name, vals in expected.items():
            assert s.read_range(name) == vals
            assert [s.get(name, i) for i in range(len(vals))] == vals
        # Appends after reopen continue the sequence and keep rolling.
        for i in range(100):
            assert s.append("a", i) == len(expected["a"])
            expected["a"].append(i)
        assert s.stats().segments > segments
        assert s.read_range("a") == expected["a"]
    with engine.open(path) as s:
        assert s.read_range("a") == expected["a"]
        assert s.verify().ok


def test_record_larger_than_a_segment(path: pathlib.Path) -> None:
    big = os.urandom(10_000)
    with engine.open(path, segment_bytes=4096) as s:
        s.append("s", "before")
        s.append("s", big)
        s.append("s", "after")
        s.put_blob("s", "big", big)
        assert s.read_range("s") == ["before", big, "after"]
        assert s.get_blob("s", "big") == big
    with engine.open(path, segment_bytes=4096) as s:
        assert s.read_range("s") == ["before", big, "after"]
        assert s.get_blob("s", "big") == big
        assert s.verify().ok


def test_compress_events_option(path: pathlib.Path) -> None:
    batch = [{"type": "output", "text": f"line {i} of a long REPL transcript"} for i in range(50)]
    with engine.open(path.parent / "plain") as plain:
        plain.append_batch("s", batch)
        plain_bytes = plain.stream_info("s").bytes
    with engine.open(path, compress_events=True, segment_bytes=4096) as s:
        assert s.append_batch("s", batch) == 0
        assert s.stream_info("s").bytes < plain_bytes - plain_bytes // 8
        assert [s.get("s", i) for i in range(50)] == batch
        assert s.read_range("s", 10, 20) == batch[10:20]
        for _ in range(30):
            s.append_batch("s", batch[:10])
        assert s.stats().segments > 1
        expected = s.read_range("s")
        assert len(expected) == 50 + 300
    # Readable whatever the option says at the next open, and new records mix in.
    with engine.open(path, compress_events=False, segment_bytes=4096) as s:
        assert s.read_range("s") == expected
        s.append_batch("s", batch)
        assert s.get("s", 375) == batch[25]
        assert s.verify().ok
    with engine.open(path, compress_events=True) as s:
        assert s.read_range("s") == expected + batch
        assert s.get("s", 13) == batch[13]


def test_compress_events_limit_is_checked_on_the_uncompressed_size(path: pathlib.Path) -> None:
    batch = ["same text over and over " * 4] * 40  # ~4 KiB raw, compresses far below 1 KiB
    with engine.open(path, compress_events=True, max_record_bytes=1024) as s:
        before = snapshot(s)
        with pytest.raises(RecordTooLargeError):
            s.append_batch("s", batch)
        assert snapshot(s) == before
        assert s.append_batch("s", batch[:5]) == 0
        assert s.read_range("s") == batch[:5]


def test_blob_last_write_wins_across_segments_and_reopen(path: pathlib.Path) -> None:
    with engine.open(path, segment_bytes=4096) as s:
        s.put_blob("s", "k", "v1")
        s.put_blob("s", "j", "j1")
        for i in range(60):
            s.append("fill", "f" * 100 + str(i))
        s.put_blob("s", "k", "v2")
        for i in range(60):
            s.append("fill", "g" * 100 + str(i))
        seg = s.stats().segments
        assert seg > 2
        s.put_blob("s", "k", "v3")
        assert s.get_blob("s", "k") == "v3"
        assert s.get_blob("s", "j") == "j1"
        assert s.blob_keys("s") == ["j", "k"]
        assert s.stream_info("s").blobs == 2
    with engine.open(path, segment_bytes=4096) as s:
        assert s.get_blob("s", "k") == "v3"
        assert s.get_blob("s", "j") == "j1"
        assert s.blob_keys("s") == ["j", "k"]
        assert s.stream_info("s").blobs == 2
        for i in range(60):
            s.append("fill", "h" * 100 + str(i))
        s.put_blob("s", "j", "j2")  # newest version now in a later segment than k's
    with engine.open(path) as s:
        assert s.get_blob("s", "k") == "v3"
        assert s.get_blob("s", "j") == "j2"


def test_drop_stream_across_segments_and_reopen(path: pathlib.Path) -> None:
    with engine.open(path, segment_bytes=4096) as s:
        for i in range(80):
            s.append("victim", "v" * 80 + str(i))
            s.append("keep", i)
        s.put_blob("victim", "k", "old")
        for i in range(40):
            s.append("keep", i + 80)
        s.drop_stream("victim")
        assert s.append("victim", "reborn") == 0
        for i in range(40):
            s.append("keep", i + 120)
        assert s.read_range("victim") == ["reborn"]
        assert not s.has_blob("victim", "k")
        assert s.stats().segments > 3
    with engine.open(path, segment_bytes=4096) as s:
        assert s.read_range("victim") == ["reborn"]
        assert s.next_seq("victim") == 1
        assert not s.has_blob("victim", "k")
        assert s.read_range("keep") == list(range(160))
        s.drop_stream("victim")
    with engine.open(path) as s:
        assert "victim" not in s
        assert [i.name for i in s.streams()] == ["keep"]
        assert s.stats().events == 160


def test_drop_and_recreate_in_the_same_segment_then_reopen(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        s.append_batch("s", [1, 2, 3])
        s.drop_stream("s")
        s.append_batch("s", ["a"])
        s.drop_stream("s")
        s.append_batch("s", ["b", "c"])
    with engine.open(path) as s:
        assert s.read_range("s") == ["b", "c"]
        assert s.stats().streams == 1


def test_stream_bytes_stable_across_reopen(path: pathlib.Path) -> None:
    with engine.open(path, segment_bytes=4096) as s:
        for i in range(100):
            s.append(f"s{i % 4}", "x" * (i * 3))
            if i % 10 == 0:
                s.put_blob(f"s{i % 4}", f"k{i}", i)
        infos = listing(s)
    with engine.open(path, segment_bytes=4096) as s:
        assert listing(s) == infos


# ================================================================ threads


def test_concurrent_appends_to_separate_and_shared_streams(path: pathlib.Path) -> None:
    n_threads, per_thread = 4, 150
    results: dict[int, list[tuple[int, Any]]] = {t: [] for t in range(n_threads)}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                s.append(f"own{t}", i)
                value = {"t": t, "i": i}
                if i % 10 == 0:
                    batch = [value, {"t": t, "i": i, "second": True}]
                    first = s.append_batch("shared", batch)
                    results[t].extend([(first, batch[0]), (first + 1, batch[1])])
                else:
                    results[t].append((s.append("shared", value), value))
                if i % 25 == 0:
                    assert s.get("shared", results[t][-1][0]) == results[t][-1][1]
        except BaseException as exc:
            errors.append(exc)

    with engine.open(path, segment_bytes=16384) as s:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        seqs = sorted(seq for r in results.values() for seq, _ in r)
        assert seqs == list(range(len(seqs)))
        by_seq = {seq: v for r in results.values() for seq, v in r}
        shared = s.read_range("shared")
        assert shared == [by_seq[i] for i in range(len(seqs))]
        for t in range(n_threads):
            assert s.read_range(f"own{t}") == list(range(per_thread))
            # Each thread's own events appear in the shared stream in its order.
            mine = [v["i"] for v in shared if v["t"] == t and "second" not in v]
            assert mine == list(range(per_thread))
        assert s.stats().segments > 1
        assert s.verify().ok
    with engine.open(path) as s:
        assert s.read_range("shared") == shared


@pytest.mark.parametrize("mode", ["power", "relaxed"])
def test_concurrent_appends_other_modes(path: pathlib.Path, mode: str) -> None:
    n_threads, per_thread = 4, 40
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        try:
            for i in range(per_thread):
                seq = s.append("shared", [t, i])
                assert s.get("shared", seq) == [t, i]
                with lock:
                    seqs.append(seq)
        except BaseException as exc:
            errors.append(exc)

    with engine.open(path, durability=mode) as s:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert sorted(seqs) == list(range(n_threads * per_thread))
        if mode == "power":
            st = s.stats()
            assert st.bytes_synced == st.bytes_written
    with engine.open(path) as s:
        assert sorted(map(tuple, s.read_range("shared"))) == sorted(
            (t, i) for t in range(n_threads) for i in range(per_thread)
        )


def test_readers_concurrent_with_writer(path: pathlib.Path) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                n = s.next_seq("s")
                if n:
                    assert s.get("s", n - 1) == n - 1
                    got = s.read_range("s", max(0, n - 20), n)
                    assert got == list(range(max(0, n - 20), n))
        except BaseException as exc:
            errors.append(exc)

    with engine.open(path, segment_bytes=4096) as s:
        s.append("s", 0)
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for th in readers:
            th.start()
        for i in range(1, 400):
            s.append("s", i)
        stop.set()
        for th in readers:
            th.join()
        assert not errors, errors
        assert s.read_range("s") == list(range(400))


# ================================================================ regressions: engine bugs these tests found


def test_regression_unhashable_stream_name_raises_invalid_name(store: engine.Store) -> None:
    """A list as stream name must be rejected as InvalidNameError, not crash with TypeError."""
    for call in (
        lambda: store.append(["s"], 1),
        lambda: store.append_batch(["s"], [1]),
        lambda: store.put_blob({"s": 1}, "k", 1),
    ):
        with pytest.raises(InvalidNameError):
            call()


def test_regression_compressible_value_larger_than_max_record_bytes_is_readable(path: pathlib.Path) -> None:
    """Was: an event whose compressed record fit max_record_bytes was accepted but failed every
    read (its decompressed size is checked against the limit)."""
    with engine.open(path, max_record_bytes=1024) as s:
        value = "x" * 5000
        try:
            seq = s.append("s", value)
        except RecordTooLargeError:
            seq = None  # rejecting it up front is also acceptable
        if seq is not None:
            assert s.get("s", seq) == value
            assert s.read_range("s") == [value]
        try:
            s.put_blob("s", "k", value)
        except RecordTooLargeError:
            pass
        else:
            assert s.get_blob("s", "k") == value
        assert s.verify().ok


def test_regression_reopen_with_smaller_max_record_bytes_keeps_data(path: pathlib.Path) -> None:
    """Reopening with a lower limit must never truncate acknowledged records as a 'torn tail'
    (was: the over-limit last record was treated as torn and cut off)."""
    big = os.urandom(3000)
    with engine.open(path) as s:
        s.append("s", "small")
        s.append("s", big)
    try:
        with engine.open(path, max_record_bytes=1024) as s:
            s.next_seq("s")
    except SeglogError:
        pass  # refusing to open is fine
    with engine.open(path) as s:
        assert s.next_seq("s") == 2
        assert s.get("s", 1) == big


class _YieldingDict(dict):  # type: ignore[type-arg]
    """A dict subclass (msgpack encodes it as a map) whose items() lets other threads run."""

    def items(self):  # type: ignore[no-untyped-def,override]
        time.sleep(0.0005)
        return super().items()


def test_regression_concurrent_encoding_does_not_corrupt_records(path: pathlib.Path) -> None:
    """Was: codec shared one module-level msgpack Packer between threads, so values packed
    concurrently (a Python-level callback lets another thread run) interleaved into corrupt records."""
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for j in range(30):
                seq = s.append(f"s{t}", _YieldingDict(t=t, j=j))
                assert s.get(f"s{t}", seq) == {"t": t, "j": j}
        except BaseException as exc:
            errors.append(exc)

    with engine.open(path) as s:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[:3]
        assert s.verify().ok


def test_regression_sync_indexes_records_appended_after_reopen(path: pathlib.Path) -> None:
    """After reopen, sync() must append the synced records' entries to the active .idx file.

    Was: the lsn-to-offset mapping assumed the active segment was empty at open, so
    ``_on_synced`` computed a synced end that was too small and the index lagged (recovery
    after a crash then rescanned the whole tail).
    """
    from engine.log.active_index import ActiveIndexFile, parse_entries

    with engine.open(path) as s:
        for i in range(20):
            s.append("s", "v" * 50 + str(i))
    with engine.open(path, flush_interval=60) as s:
        for i in range(5):
            s.append("s", i)
        s.sync()
        raw, _clean = ActiveIndexFile.load(str(path), 1, 1 << 20)
        assert len(parse_entries(raw)) == 1 + 20 + 5  # create record + events


def test_regression_stream_created_before_reopen_survives_a_later_roll(path: pathlib.Path) -> None:
    """A stream whose STREAM_CREATE is in the active segment at open must survive that
    segment being sealed later. Was: ``_apply_active`` did not refill ``_act_creates``, so the
    sealed index omitted the create and the stream vanished at the next open."""
    with engine.open(path, segment_bytes=4096) as s:
        s.append("early", "created before the reopen")
    with engine.open(path, segment_bytes=4096) as s:
        for i in range(40):
            s.append("filler", "x" * 200 + str(i))  # seals segment 1
        assert s.stats().segments > 1
        assert s.read_range("early") == ["created before the reopen"]
    with engine.open(path, segment_bytes=4096) as s:
        assert [i.name for i in s.streams()] == ["early", "filler"]
        assert s.read_range("early") == ["created before the reopen"]


def test_regression_stream_dropped_before_reopen_does_not_break_the_next_roll(path: pathlib.Path) -> None:
    """Was: after reopen, ``_apply_active`` left a stream dropped in the active segment in
    ``_act_streams``; the next roll failed with KeyError in ``_roll`` (and close() then failed)."""
    with engine.open(path, segment_bytes=4096) as s:
        s.put_blob("gone", "k", None)
        s.drop_stream("gone")
    with engine.open(path, segment_bytes=4096) as s:
        value = os.urandom(3900)
        assert s.append("gone", value) == 0  # forces a roll
        assert s.read_range("gone") == [value]
    with engine.open(path) as s:
        assert s.read_range("gone") == [value]
        assert not s.has_blob("gone", "k")


def test_regression_value_that_cannot_be_decoded_is_rejected(store: engine.Store) -> None:
    """A dict with a tuple key encodes (as a map with an array key) but cannot be decoded:
    it must be refused up front, not stored as a record that reads back as corruption."""
    store.append("s", "before")
    for call in (lambda: store.append("s", {(1, 2): "x"}), lambda: store.put_blob("s", "k", {(1,): 1})):
        with pytest.raises(EncodeError):
            call()
    assert store.read_range("s") == ["before"]
    assert store.verify().ok
