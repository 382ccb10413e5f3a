"""The compactor: what it keeps and drops (against an in-memory model), the
swap under readers and writers, set-aside segments, throttling, space checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import CompactorBusyError, InsufficientSpaceError
from engine.log import compactor
from engine.log.compactor import CompactionOptions, Compactor, TokenBucket
from engine.log.format import COMPACT_LOCK_NAME
from engine.log.lockfile import FileLock
from engine.log.manifest import Manifest

SEG = 4096


def seg_files(path: Path) -> set[str]:
    return {n for n in os.listdir(path) if n.endswith((".seg", ".sidx", ".idx"))}


def listed_files(path: Path) -> set[str]:
    m = Manifest.load(str(path))
    assert m is not None
    names = {f"{sid:020d}.seg" for sid in m.segments} | {f"{sid:020d}.sidx" for sid in m.segments[:-1]}
    return names | {f"{m.segments[-1]:020d}.idx"}


def check(store: engine.Store, events: dict[str, list[Any]], blobs: dict[str, dict[str, Any]]) -> None:
    assert sorted(s.name for s in store.streams()) == sorted(set(events) | set(blobs))
    for name, evs in events.items():
        assert store.read_range(name) == evs, name
        for q in range(0, len(evs), 7):
            assert store.get(name, q) == evs[q]
    for name, kv in blobs.items():
        assert store.blob_keys(name) == sorted(kv)
        for k, v in kv.items():
            assert store.get_blob(name, k) == v
    assert store.verify().ok


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 5), st.integers(1, 4)),
        st.tuples(st.just("blob"), st.integers(0, 5), st.integers(0, 3)),
        st.tuples(st.just("drop"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("compact"), st.integers(0, 1), st.just(0)),
    ),
    min_size=10,
    max_size=120,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=ops)
def test_compaction_keeps_exactly_what_the_model_has(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("c") / "s"
    events: dict[str, list[Any]] = {}
    blobs: dict[str, dict[str, Any]] = {}
    with engine.open(path, segment_bytes=SEG) as store:
        for i, (op, n, k) in enumerate(plan):
            name = f"s{n}"
            if op == "append":
                vals = [{"i": i, "j": j, "pad": "p" * 80} for j in range(k)]
                store.append_batch(name, vals)
                events.setdefault(name, []).extend(vals)
                blobs.setdefault(name, {})
            elif op == "blob":
                store.put_blob(name, f"k{k}", {"i": i, "pad": "b" * 150})
                blobs.setdefault(name, {})[f"k{k}"] = {"i": i, "pad": "b" * 150}
                events.setdefault(name, [])
            elif op == "drop" and name in events:
                store.drop_stream(name)
                events.pop(name)
                blobs.pop(name)
            elif op == "compact":  # everything, or only the segments over a garbage ratio
                store.compact(**({"everything": True} if n else {"garbage_ratio": 0.3}))
                check(store, events, blobs)
                with engine.open(path, readonly=True) as reader:  # replay of what is on disk
                    check(reader, events, blobs)
        store.compact(everything=True)
        check(store, events, blobs)
    with engine.open(path) as store:
        check(store, events, blobs)
        store.append("after", 1)
    assert seg_files(path) == listed_files(path), "inputs are deleted, nothing unlisted is left"


def _churn(path: Path, rounds: int = 30) -> dict[str, list[int]]:
    kept: dict[str, list[int]] = {}
    with engine.open(path, segment_bytes=SEG) as store:
        for r in range(rounds):
            for k in range(4):
                name = f"r{r}-{k}"
                store.append_batch(name, [r * 100 + j for j in range(10)])
                store.put_blob("blobs", "state", {"r": r, "pad": "x" * 300})
                if k != 3:
                    store.drop_stream(name)
                else:
                    kept[name] = [r * 100 + j for j in range(10)]
    return kept


def test_a_pass_reclaims_dead_bytes_and_reports_them(tmp_path: Path) -> None:
    path = tmp_path / "s"
    kept = _churn(path)
    before = sum(os.path.getsize(path / n) for n in seg_files(path))
    garbage = compactor.analyze(path)
    assert garbage.reclaimable_bytes > before // 2
    assert all(0.0 <= g.ratio <= 1.0 for g in garbage.segments)
    report = engine.compact(path, segment_bytes=SEG)
    assert report.segments_in and report.segments_out
    assert report.bytes_out < report.bytes_in and report.records_out < report.records_in
    after = sum(os.path.getsize(path / n) for n in seg_files(path))
    assert after < before / 2
    assert compactor.analyze(path).last_pass == report
    with engine.open(path, readonly=True) as store:
        for name, vals in kept.items():
            assert store.read_range(name) == vals
        assert store.get_blob("blobs", "state")["r"] == 29
        assert store.verify().ok
    assert seg_files(path) == listed_files(path)


def test_a_second_pass_finds_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _churn(path, 10)
    engine.compact(path, segment_bytes=SEG)
    report = engine.compact(path, segment_bytes=SEG)
    assert report.segments_in == []


def test_a_scan_started_before_the_swap_reads_the_old_segments(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=SEG) as store:
        for i in range(400):
            store.append("a", {"i": i, "pad": "q" * 40})
            store.append("dead", i)
        store.drop_stream("dead")
        for i in range(400, 500):  # seal the drop: only sealed drops count
            store.append("a", {"i": i, "pad": "q" * 40})
        it = store.scan("a")
        assert next(it)["i"] == 0
        inputs = set(seg_files(path))
        report = store.compact(garbage_ratio=0.1)
        assert report.segments_in
        assert inputs <= seg_files(path), "files a pinned reader uses stay"
        assert [v["i"] for v in it] == list(range(1, 500))
        store._versions.reap()  # what the writer's background thread does within flush_interval
        assert seg_files(path) == listed_files(path), "and go when it lets go"
        assert [v["i"] for v in store.scan("a")] == list(range(500))


def test_a_writer_in_another_process_picks_up_the_new_segments(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=SEG, flush_interval=0.05) as store:
        for i in range(300):
            store.append("a", i)
            store.append("dead", i)
        store.drop_stream("dead")
        for i in range(300, 400):  # seal the drop: only sealed drops count
            store.append("a", i)
        store.flush()
        code = f"import engine; r = engine.compact({str(path)!r}, segment_bytes={SEG}); print(len(r.segments_in))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) > 0
        deadline = time.monotonic() + 10
        while seg_files(path) != listed_files(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seg_files(path) == listed_files(path), "the writer switched over and deleted the inputs"
        for i in range(400, 600):
            store.append("a", i)
        assert store.read_range("a") == list(range(600))
        assert store.verify().ok
        reader = engine.open(path, readonly=True)
        try:
            assert reader.read_range("a") == list(range(600))
        finally:
            reader.close()


def test_one_compactor_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _churn(path, 3)
    lock = FileLock(str(path), COMPACT_LOCK_NAME)
    assert lock.acquire(blocking=False)
    try:
        with pytest.raises(CompactorBusyError):
            engine.compact(path)
    finally:
        lock.release()


def test_refuses_a_pass_without_the_free_space_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s"
    _churn(path, 10)
    before = seg_files(path)

    class Usage:
        free = 1000

    monkeypatch.setattr(compactor.shutil, "disk_usage", lambda p: Usage())
    with pytest.raises(InsufficientSpaceError, match="MiB free"):
        engine.compact(path, segment_bytes=SEG)
    assert seg_files(path) == before


def test_a_segment_that_keeps_failing_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _churn(path, 10)
    m = Manifest.load(str(path))
    assert m is not None
    victim = path / f"{m.segments[0]:020d}.seg"
    data = bytearray(victim.read_bytes())
    data[200] ^= 0xFF  # a record's payload: its checksum fails when copied
    victim.write_bytes(bytes(data))
    for _ in range(compactor.SET_ASIDE_AFTER):
        with pytest.raises(engine.CorruptionError):
            engine.compact(path, segment_bytes=SEG)
    garbage = compactor.analyze(path)
    assert m.segments[0] in garbage.set_aside
    report = engine.compact(path, segment_bytes=SEG)  # goes on with the others
    assert m.segments[0] not in report.segments_in
    assert m.segments[0] in report.set_aside


def test_token_bucket_holds_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        bucket.take(100)  # 5,000 bytes at 1,000 B/s, one second of burst
    assert 3.9 <= now[0] <= 4.1
    assert TokenBucket(None).rate is None


def test_options_are_checked() -> None:
    with pytest.raises(engine.InvalidArgumentError):
        CompactionOptions(garbage_ratio=0)
    with pytest.raises(engine.InvalidArgumentError):
        engine.compact("/nonexistent", bogus=1)


def test_compactor_releases_a_reservation_left_by_a_dead_pass(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _churn(path, 3)
    m = Manifest.load(str(path))
    assert m is not None
    ids = m.reserve_segment_ids(2)
    m.save(str(path))
    for sid in ids:
        (path / f"{sid:020d}.seg.tmp").write_bytes(b"partial")
    with Compactor(str(path)):
        pass
    m2 = Manifest.load(str(path))
    assert m2 is not None and m2.reserved == []
    assert not any(n.endswith(".tmp") for n in os.listdir(path))


def test_a_dropped_stream_around_a_partial_run_still_replays(tmp_path: Path) -> None:
    """A dropped stream with records before, inside and after the rewritten run:
    the run keeps its records (and its drop), or replay would see its seqs skip."""
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=SEG) as store:
        store.append_batch("d", list(range(5)))  # segment 1: d's create and first events
        for i in range(60):
            store.append("live", {"i": i, "pad": "l" * 200})  # segment 1 is mostly live
        for i in range(400):  # then segments of mostly dead blobs, with d's events among them
            store.put_blob("blobs", "k", {"i": i, "pad": "b" * 100})
            if i % 40 == 0:
                store.append("d", 5 + i // 40)
        for i in range(40):
            store.append("d", 100 + i)  # after the run
            store.append("live", {"i": 60 + i, "pad": "l" * 200})
        store.drop_stream("d")
        for i in range(60):
            store.append("live", {"i": 100 + i, "pad": "l" * 200})
        report = store.compact(garbage_ratio=0.6)
        m = Manifest.load(str(path))
        assert m is not None
        assert report.segments_in and m.segments[0] not in report.segments_in, "a partial run"
    with engine.open(path, readonly=True) as reader:
        assert not reader.has_stream("d")
        assert [v["i"] for v in reader.scan("live")] == list(range(160))
        assert reader.get_blob("blobs", "k")["i"] == 399
        assert reader.verify().ok


def test_stats_show_garbage_and_the_last_pass(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _churn(path, 10)
    with engine.open(path, segment_bytes=SEG) as store:
        before = store.stats()
        assert before.reclaimable_bytes > 0 and before.last_compaction is None
        assert any(ratio > 0.5 for _sid, _size, ratio in before.garbage)
        report = store.compact()
        after = store.stats()
        assert after.last_compaction == report
        assert after.reclaimable_bytes < before.reclaimable_bytes / 4
        assert after.bytes_on_disk < before.bytes_on_disk


def _interleaved(path: Path, names: list[str], rounds: int) -> None:
    with engine.open(path, segment_bytes=SEG) as store:
        for r in range(rounds):
            for name in names:
                store.append_batch(name, [{"r": r, "pad": name * 30}])


def test_half_deleted_then_one_default_pass_is_close_to_a_fresh_store(tmp_path: Path) -> None:
    """Streams interleaved over every segment, half of them dropped: one pass with
    the default options leaves at most 1.15x the bytes of a store that only ever
    held the live half (so runs must reach back to where the dropped streams start)."""
    names = [f"s{i:02d}" for i in range(20)]
    path = tmp_path / "s"
    _interleaved(path, names, 60)
    with engine.open(path, segment_bytes=SEG) as store:
        for name in names[::2]:
            store.drop_stream(name)
        store.append("filler", os.urandom(2500).hex())  # incompressible: seals the drops
        store.append("filler", os.urandom(2500).hex())
    report = engine.compact(path, segment_bytes=SEG)
    assert report.segments_in and report.bytes_out < report.bytes_in
    fresh = tmp_path / "fresh"
    _interleaved(fresh, names[1::2], 60)
    with engine.open(fresh, segment_bytes=SEG) as store:
        store.append("filler", os.urandom(2500).hex())
        store.append("filler", os.urandom(2500).hex())
    assert seg_bytes(path) <= 1.15 * seg_bytes(fresh), (seg_bytes(path), seg_bytes(fresh))
    with engine.open(path, readonly=True) as store:
        for name in names[1::2]:
            assert [v["r"] for v in store.scan(name)] == list(range(60))


def test_no_pass_rewrites_bytes_for_nothing(tmp_path: Path) -> None:
    """A dropped stream whose first records sit in an early, mostly live segment:
    passes never rewrite a run that gives nothing back, so they converge."""
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=SEG) as store:
        store.append("dead", "first")
        for i in range(80):
            store.append("live", {"i": i, "pad": "l" * 120})
        for i in range(200):
            store.append("dead", {"i": i, "pad": "d" * 120})
        store.drop_stream("dead")
        for i in range(40):
            store.append("live", {"i": 80 + i, "pad": "l" * 120})
    for _ in range(4):
        report = engine.compact(path, segment_bytes=SEG)
        assert not report.segments_in or report.bytes_out < report.bytes_in, report
    assert engine.compact(path, segment_bytes=SEG).segments_in == []
    with engine.open(path, readonly=True) as store:
        assert not store.has_stream("dead")
        assert [v["i"] for v in store.scan("live")] == list(range(120))


def seg_bytes(path: Path) -> int:
    return sum(os.path.getsize(path / n) for n in os.listdir(path) if n.endswith(".seg"))
