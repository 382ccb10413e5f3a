"""seglog benchmarks against its peers, all in one pytest-benchmark session.

Run (see bench/report.py for the table)::

    pytest bench/ --benchmark-json=bench-small.json
    pytest bench/ --bench-scale=full --benchmark-json=bench-full.json

Every test records ``extra_info``: ``bench`` (which comparison), ``impl`` (seglog
or a peer), ``scale``, ``events`` per round and ``events_per_s`` from the median
round, plus figures of its own (peak RSS, dataset sizes).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest
import workload
from conftest import (
    BENCH_DIR,
    CrashDataset,
    OpenDataset,
    ReadDataset,
    RoundDirs,
    Scale,
    copy_store,
    finish_rate,
    set_info,
)
from peers import (
    BULK_PEERS,
    DURABLE_PEERS,
    GET_PEERS,
    KEY,
    SCAN_PEERS,
    BulkWriter,
    DurableWriter,
    bulk_writer,
    durable_writer,
    lmdb_get_all,
    require,
    seglog_get_all,
)

import engine

N_STREAMS = workload.N_STREAMS


def test_workload_shape() -> None:
    """The generator keeps its promises (not a benchmark; fast)."""
    evs = [e for _, _, b in workload.batches(3_000) for e in b]
    sizes = [len(orjson.dumps(e)) for e in evs]
    assert min(sizes) >= workload.MIN_JSON and max(sizes) <= workload.MAX_JSON
    assert {e["type"] for e in evs} == set(workload.TYPES)
    assert all(len(workload.json_line(e)) == n + 1 for e, n in zip(evs, sizes, strict=True))
    assert workload.events(17, 300, 100) == workload.events(17, 300, 100)
    assert workload.stream_events(3, 250)[100:200] == workload.events(3, 100, 100)
    assert [b[:2] for b in workload.batches(250_000, start=200_000)][:2] == [(0, 200), (1, 200)]


# ------------------------------------------------------------------ 1. bulk append
@pytest.mark.parametrize("peer", BULK_PEERS)
def test_bulk_append(
    benchmark: Any, peer: str, scale: Scale, bulk_batches: list[workload.Batch], round_dirs: RoundDirs
) -> None:
    """Batches of 100 events of one stream, streams round-robin over 1,000, no fsync per batch."""
    require(peer)
    benchmark.group = "1 bulk append, batches of 100"
    batches = bulk_batches
    if peer == "jsonl":  # open/append/close per event is slow: a prefix of the same batches
        batches = _prefix(bulk_batches, scale.jsonl_events)
    n = sum(len(b[2]) for b in batches)
    set_info(benchmark, "bulk_append", peer, scale, n, batches=len(batches))
    live: dict[int, tuple[BulkWriter, str]] = {}

    def setup() -> tuple[tuple[BulkWriter], dict[str, Any]]:
        path = round_dirs.new()
        w = bulk_writer(peer, path, N_STREAMS)
        live[id(w)] = (w, path)
        return (w,), {}

    def teardown(w: BulkWriter) -> None:
        _, path = live.pop(id(w))
        w.close()
        RoundDirs.remove(path)

    try:
        benchmark.pedantic(lambda w: w.run(batches), setup=setup, teardown=teardown, rounds=scale.rounds)
    finally:
        for w, path in live.values():
            w.close()
            RoundDirs.remove(path)
    finish_rate(benchmark, n)


def _prefix(batches: list[workload.Batch], n_events: int) -> list[workload.Batch]:
    out, n = [], 0
    for b in batches:
        if n >= n_events:
            break
        out.append(b)
        n += len(b[2])
    return out


# -------------------------------------------------------------- 2. durable appends
@pytest.mark.parametrize("peer", DURABLE_PEERS)
def test_durable_appends(
    benchmark: Any, peer: str, scale: Scale, sample_events: list[workload.Event], round_dirs: RoundDirs
) -> None:
    """Single-event appends that each wait until durable; threads append to their own streams."""
    require(peer)
    benchmark.group = "2 durable appends"
    threads, per_thread = {
        "seglog_8threads": (scale.durable_threads, scale.durable_per_thread),
        "seglog_1thread_fsync": (1, scale.durable_single),
        "sqlite_full_8threads": (scale.durable_threads, scale.sqlite_per_thread),
    }[peer]
    streams_per_thread = N_STREAMS // scale.durable_threads
    n = threads * per_thread
    set_info(benchmark, "durable", peer, scale, n, threads=threads, per_thread=per_thread)
    live: dict[int, tuple[DurableWriter, str, int]] = {}
    fsyncs: list[int] = []

    def fsyncs_of(w: DurableWriter) -> int:
        store = getattr(w, "store", None)
        return store.stats().fsyncs if store is not None else 0

    probes: list[float] = []

    def setup() -> tuple[tuple[DurableWriter], dict[str, Any]]:
        path = round_dirs.new()
        w = durable_writer(peer, path, threads, per_thread, streams_per_thread, sample_events)
        probes.append(fsync_probe_us(path))  # the disk's state around this round, to judge noise
        live[id(w)] = (w, path, fsyncs_of(w))
        return (w,), {}

    def teardown(w: DurableWriter) -> None:
        _, path, before = live.pop(id(w))
        store = getattr(w, "store", None)
        if store is not None:
            assert store.stats().events == n
            fsyncs.append(fsyncs_of(w) - before)
        w.close()
        RoundDirs.remove(path)

    try:
        benchmark.pedantic(lambda w: w.run(), setup=setup, teardown=teardown, rounds=scale.rounds)
    finally:
        for w, path, _ in live.values():
            w.close()
            RoundDirs.remove(path)
    benchmark.extra_info["fsync_probe_us"] = [round(p) for p in probes]
    if fsyncs:  # group commit: how many appends shared each fsync
        benchmark.extra_info["events_per_fsync"] = round(n * len(fsyncs) / max(sum(fsyncs), 1), 2)
    finish_rate(benchmark, n)


def fsync_probe_us(directory: str, n: int = 20) -> float:
    """Median microseconds of a 200-byte appending write + fdatasync in ``directory``."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times) * 1e6


# ------------------------------------------------------------------ 3. random get
def _get_keys(scale: Scale, ds: ReadDataset) -> list[tuple[int, int]]:
    rng = random.Random(4242)
    return [(rng.randrange(N_STREAMS), rng.randrange(ds.per_stream)) for _ in range(scale.get_keys)]


@pytest.mark.parametrize("peer", GET_PEERS)
def test_random_get(
    benchmark: Any, peer: str, scale: Scale, read_dataset: ReadDataset, request: pytest.FixtureRequest
) -> None:
    """Point reads of random (stream, seq) over the whole read dataset (full: 1M events)."""
    require(peer)
    benchmark.group = "3 random get"
    keys = _get_keys(scale, read_dataset)
    n = len(keys)
    set_info(benchmark, "get", peer, scale, n, dataset_events=read_dataset.events)
    if peer == "seglog":
        store: engine.Store = request.getfixturevalue("read_store")
        skeys = [(workload.stream_name(s), q) for s, q in keys]
        for s, q in keys[:200]:  # the right events come back (untimed)
            assert store.get(workload.stream_name(s), q) == workload.events(s, q // 100 * 100, 100)[q % 100]
        benchmark.pedantic(seglog_get_all, args=(store, skeys), rounds=scale.rounds, warmup_rounds=1)
    else:
        import lmdb

        assert read_dataset.lmdb_path
        env = lmdb.open(read_dataset.lmdb_path, readonly=True, lock=False, subdir=True)
        try:
            lkeys = [KEY.pack(s, q) for s, q in keys]
            benchmark.pedantic(lmdb_get_all, args=(env, lkeys), rounds=scale.rounds, warmup_rounds=1)
        finally:
            env.close()
    finish_rate(benchmark, n)


# -------------------------------------------------------------------- 4. scan
@pytest.mark.parametrize("peer", SCAN_PEERS)
def test_scan_stream(
    benchmark: Any, peer: str, scale: Scale, read_dataset: ReadDataset, request: pytest.FixtureRequest
) -> None:
    """All events of one stream, in order, decoded to dicts."""
    require(peer)
    benchmark.group = "4 scan one stream"
    s = read_dataset.scan_streams[0]
    name = workload.stream_name(s)
    n = read_dataset.per_stream
    set_info(benchmark, "scan", peer, scale, n, stream=name)
    if peer == "seglog":
        store: engine.Store = request.getfixturevalue("read_store")

        def run() -> list[Any]:
            return list(store.scan(name))
    else:
        loads = orjson.loads
        path = os.path.join(read_dataset.jsonl_dir, name + ".jsonl")

        def run() -> list[Any]:
            with open(path, "rb") as f:
                return [loads(line) for line in f]

    assert run() == workload.stream_events(s, n)
    benchmark(run)
    finish_rate(benchmark, n)


# -------------------------------------------------------------------- 5. open
@pytest.mark.parametrize("peer", ["seglog"])
def test_open(benchmark: Any, peer: str, scale: Scale, open_dataset: OpenDataset) -> None:
    """``engine.open`` of the big store (full: 6M events, ~1 GiB; page cache warm). Close is untimed."""
    benchmark.group = "5 open"
    set_info(
        benchmark,
        "open",
        "seglog",
        scale,
        open_dataset.events,
        bytes_on_disk=open_dataset.bytes_on_disk,
        segments=open_dataset.segments,
        build_s=round(open_dataset.build_s, 2),
    )
    stores: list[engine.Store] = []

    def target() -> None:
        stores.append(engine.open(open_dataset.path, readonly=False))

    def teardown() -> None:
        stores.pop().close()

    try:
        benchmark.pedantic(target, teardown=teardown, rounds=max(scale.rounds, 5), warmup_rounds=1)
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("peer", ["seglog"])
def test_open_after_crash(
    benchmark: Any, peer: str, scale: Scale, crash_dataset: CrashDataset, round_dirs: RoundDirs
) -> None:
    """First open after SIGKILL: scans, checks and indexes the unindexed tail. Each round
    opens a fresh copy of the crashed directory (the first open repairs it)."""
    benchmark.group = "5 open"
    set_info(
        benchmark,
        "open_after_crash",
        "seglog",
        scale,
        crash_dataset.events,
        tail_events=crash_dataset.tail_events,
        tail_bytes=crash_dataset.tail_bytes,
        active_segment_bytes=crash_dataset.active_segment_bytes,
    )
    stores: list[engine.Store] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        path = round_dirs.new()
        copy_store(crash_dataset.path, path)
        return (path,), {}

    def target(path: str) -> None:
        stores.append(engine.open(path, readonly=False))

    def teardown(path: str) -> None:
        store = stores.pop()
        assert store.stats().events == crash_dataset.events
        store.close()
        RoundDirs.remove(path)

    try:
        benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=scale.rounds)
    finally:
        for s in stores:
            s.close()


# -------------------------------------------------------------------- 6. memory
_MEMORY_CHILD = r"""
import json, os, random, resource, sys, time

# ru_maxrss survives exec: a child exec'd from the (big) pytest process starts with
# the parent's peak. A fork gets a fresh count, so the measuring is done in a fork.
pid = os.fork()
if pid:
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))

sys.path.insert(0, sys.argv[1])
import engine, workload

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = round(int(v.split()[0]) / 1024, 1)  # MiB
    return out

def maxrss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

base = maxrss_mb()
t0 = time.perf_counter()
store = engine.open(sys.argv[2], readonly=False)
t1 = time.perf_counter()
after_open = status()
rng = random.Random(99)
gets = 0
for i in range(workload.N_STREAMS):
    name = workload.stream_name(i)
    n = store.next_seq(name)
    for _ in range(int(sys.argv[3])):
        store.get(name, rng.randrange(n))
        gets += 1
scanned = 0
for i in (0, 333, 666, 999):
    for _ in store.scan(workload.stream_name(i)):
        scanned += 1
t2 = time.perf_counter()
end = status()
store.close()
sys.stdout.write(json.dumps({
    "peak_rss_mb": maxrss_mb(), "baseline_rss_mb": base,
    "open_s": round(t1 - t0, 4), "read_s": round(t2 - t1, 4), "gets": gets, "scanned": scanned,
    "after_open": after_open, "at_end": end,
}))
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.parametrize("peer", ["seglog"])
def test_memory_open_and_read(benchmark: Any, peer: str, scale: Scale, open_dataset: OpenDataset) -> None:
    """Fresh process: open the big store, get 5 events of each of the 1,000 streams, scan 4
    streams. Peak RSS (ru_maxrss, which counts mmap'd file pages touched) goes to
    extra_info with /proc/self/status figures; the timing is the whole child."""
    benchmark.group = "6 memory"
    gets_per_stream = 5
    set_info(benchmark, "memory", "seglog", scale, open_dataset.events, bytes_on_disk=open_dataset.bytes_on_disk)
    results: list[dict[str, Any]] = []

    def run() -> None:
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, BENCH_DIR, open_dataset.path, str(gets_per_stream)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout))

    benchmark.pedantic(run, rounds=2 if scale.name == "small" else 3)
    worst = max(results, key=lambda r: r["peak_rss_mb"])
    assert worst["gets"] == N_STREAMS * gets_per_stream
    benchmark.extra_info.update(worst)
    benchmark.extra_info["peak_rss_mb_rounds"] = [r["peak_rss_mb"] for r in results]
