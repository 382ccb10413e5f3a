"""Benchmark configuration: scale, a session temp dir, and datasets built once per session.

Scale: ``--bench-scale=small|full`` (or ``SEGLOG_BENCH_SCALE``), default small.
Temp dir: under ``SEGLOG_BENCH_TMP`` (default: the system temp dir), removed at
the end of the session unless ``SEGLOG_BENCH_KEEP=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import pytest
import workload

import engine

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    name: str
    rounds: int  # rounds of the pedantic benchmarks
    # 1. bulk append
    bulk_events: int
    jsonl_events: int  # the legacy JSONL peer appends this prefix of the same batches
    # 2. durable appends
    durable_threads: int
    durable_per_thread: int  # events per thread with 8 threads
    durable_single: int  # events of the one-thread fsync-per-append run
    sqlite_per_thread: int
    # 3./4. random get and scan
    read_events: int
    read_segment_bytes: int
    get_keys: int
    # 5./6. open, crash reopen, memory
    open_events: int
    open_segment_bytes: int
    crash_tail_bytes: int  # unindexed bytes at the end of the active segment at the kill


SCALES = {
    # A plain `pytest bench/` should take a minute or two on a busy 2-core box.
    # Segments are smaller than the 64 MiB default so that the small datasets
    # still span several sealed segments plus an active one, like the full ones.
    "small": Scale(
        name="small",
        rounds=5,
        bulk_events=100_000,
        jsonl_events=10_000,
        durable_threads=8,
        durable_per_thread=200,
        durable_single=400,
        sqlite_per_thread=40,
        read_events=200_000,
        read_segment_bytes=8 << 20,
        get_keys=50_000,
        open_events=250_000,
        open_segment_bytes=8 << 20,
        crash_tail_bytes=4 << 20,
    ),
    "full": Scale(
        name="full",
        rounds=5,
        bulk_events=1_000_000,
        jsonl_events=100_000,
        durable_threads=8,
        durable_per_thread=2_000,
        durable_single=3_000,
        sqlite_per_thread=400,
        read_events=1_000_000,
        read_segment_bytes=64 << 20,
        get_keys=200_000,
        open_events=6_000_000,
        open_segment_bytes=64 << 20,
        crash_tail_bytes=32 << 20,
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-scale",
        choices=sorted(SCALES),
        default=os.environ.get("SEGLOG_BENCH_SCALE", "small"),
        help="benchmark data sizes: small (default, ~1-2 min) or full (1M-event get, 6M-event / 1 GiB open)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"seglog bench scale: {config.getoption('--bench-scale')}"


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> Scale:
    return SCALES[request.config.getoption("--bench-scale")]


def pick_scale(request: pytest.FixtureRequest, scales: dict[str, T]) -> T:
    """The entry of ``scales`` that ``--bench-scale`` (or SEGLOG_BENCH_SCALE) names: for
    the benchmark files whose scales are their own."""
    name = request.config.getoption("--bench-scale", default=None) or os.environ.get("SEGLOG_BENCH_SCALE", "small")
    if name not in scales:
        raise pytest.UsageError(f"SEGLOG_BENCH_SCALE must be one of {sorted(scales)}, not {name!r}")
    return scales[name]


@pytest.fixture(scope="session")
def bench_tmp() -> Iterator[str]:
    base = os.environ.get("SEGLOG_BENCH_TMP") or None
    path = tempfile.mkdtemp(prefix="seglog-bench-", dir=base)
    try:
        yield path
    finally:
        if os.environ.get("SEGLOG_BENCH_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)


class RoundDirs:
    """Fresh directories for pedantic rounds; each is removed when its round ends."""

    def __init__(self, base: str, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.n = 0

    def new(self) -> str:
        self.n += 1
        path = os.path.join(self.base, f"{self.prefix}-{self.n}")
        shutil.rmtree(path, ignore_errors=True)
        return path

    @staticmethod
    def remove(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def round_dirs(bench_tmp: str, request: pytest.FixtureRequest) -> RoundDirs:
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    return RoundDirs(bench_tmp, name)


def set_info(benchmark: Any, bench: str, impl: str, scale: Scale, events: int | None = None, **extra: Any) -> None:
    info = benchmark.extra_info
    info.update({"bench": bench, "impl": impl, "scale": scale.name})
    if events is not None:
        info["events"] = events
    info.update(extra)


def finish_rate(benchmark: Any, events: int) -> None:
    """Record events/s from the median round (absent when benchmarking is disabled)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    median = stats.stats.median
    if median > 0:
        benchmark.extra_info["events_per_s"] = round(events / median, 1)


# -------------------------------------------------------------------- workloads
@pytest.fixture(scope="session")
def bulk_batches(scale: Scale) -> list[workload.Batch]:
    """The bulk-append workload, generated once (outside every timed region)."""
    return list(workload.batches(scale.bulk_events))


@pytest.fixture(scope="session")
def sample_events() -> list[dict[str, Any]]:
    """A pool of events for the durable-append threads."""
    return [e for _, _, evs in workload.batches(10_000) for e in evs]


# -------------------------------------------------------------------- datasets
@dataclass
class ReadDataset:
    events: int
    per_stream: int
    seglog_path: str
    lmdb_path: str | None
    jsonl_dir: str
    scan_streams: list[int]
    build_s: float


def build_seglog(path: str, n_events: int, segment_bytes: int, start: int = 0, **options: Any) -> None:
    with engine.open(path, durability="process", segment_bytes=segment_bytes, **options) as store:
        names = [workload.stream_name(i) for i in range(workload.N_STREAMS)]
        append_batch = store.append_batch
        for s, _first, evs in workload.batches(n_events, start=start):
            append_batch(names[s], evs)


@pytest.fixture(scope="session")
def read_dataset(scale: Scale, bench_tmp: str) -> ReadDataset:
    """seglog + LMDB (when installed) holding the same ``read_events`` events, plus
    JSONL files of a few streams for the scan peer."""
    t0 = time.perf_counter()
    root = os.path.join(bench_tmp, "read")
    os.makedirs(root)
    seg_path = os.path.join(root, "seglog")
    jsonl_dir = os.path.join(root, "jsonl")
    os.makedirs(jsonl_dir)
    scan_streams = [7, 123, 999]
    try:
        import lmdb  # noqa: F401

        lmdb_path: str | None = os.path.join(root, "lmdb")
    except ImportError:
        lmdb_path = None
    from peers import lmdb_open_for_build, lmdb_write_batch

    env = lmdb_open_for_build(lmdb_path) if lmdb_path else None
    pack = msgpack.Packer(use_bin_type=True).pack
    try:
        with contextlib.ExitStack() as stack:
            files = {
                s: stack.enter_context(open(os.path.join(jsonl_dir, workload.stream_name(s) + ".jsonl"), "wb"))
                for s in scan_streams
            }
            store = stack.enter_context(
                engine.open(seg_path, durability="process", segment_bytes=scale.read_segment_bytes)
            )
            names = [workload.stream_name(i) for i in range(workload.N_STREAMS)]
            for batch in workload.batches(scale.read_events):
                s, _first, evs = batch
                store.append_batch(names[s], evs)
                if env is not None:
                    lmdb_write_batch(env, pack, batch)
                f = files.get(s)
                if f is not None:
                    f.writelines(workload.json_line(e) for e in evs)
    finally:
        if env is not None:
            env.sync(True)
            env.close()
    return ReadDataset(
        scale.read_events,
        scale.read_events // workload.N_STREAMS,
        seg_path,
        lmdb_path,
        jsonl_dir,
        scan_streams,
        time.perf_counter() - t0,
    )


@pytest.fixture(scope="session")
def read_store(read_dataset: ReadDataset) -> Iterator[engine.Store]:
    """The read dataset's seglog store, reopened (sealed segments are served by their .sidx)."""
    store = engine.open(read_dataset.seglog_path)
    try:
        yield store
    finally:
        store.close()


@dataclass
class OpenDataset:
    path: str
    events: int
    bytes_on_disk: int
    segments: int
    build_s: float


@pytest.fixture(scope="session")
def open_dataset(scale: Scale, bench_tmp: str) -> OpenDataset:
    """The big store (full: 6M events, ~1 GiB) for the open and memory benchmarks."""
    t0 = time.perf_counter()
    path = os.path.join(bench_tmp, "open", "seglog")
    build_seglog(path, scale.open_events, scale.open_segment_bytes)
    with engine.open(path, readonly=True) as store:
        st = store.stats()
    return OpenDataset(path, st.events, st.bytes_on_disk, st.segments, time.perf_counter() - t0)


def copy_store(src: str, dst: str) -> None:
    """Copy a closed store. Sealed segments and their indexes are hard-linked (nothing
    writes them once sealed); the active segment and every other file are copied."""
    os.makedirs(dst)
    with open(os.path.join(src, "MANIFEST"), "rb") as f:
        segments = json.load(f)["segments"]
    sealed = {f"{sid:020d}.{ext}" for sid in segments[:-1] for ext in ("seg", "sidx")}
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name in sealed:
            try:
                os.link(s, d)
                continue
            except OSError:
                pass
        shutil.copy2(s, d)


_CRASH_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import engine, workload
path, start, tail_bytes, segment_bytes = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# A background flush would index (and fsync) the tail: make its period longer than
# the child's life, so everything appended here since the last segment roll is
# unindexed when the child is killed.
store = engine.open(path, durability="process", segment_bytes=segment_bytes, flush_interval=1e6)
names = [workload.stream_name(i) for i in range(workload.N_STREAMS)]
st = store.stats()
segments, mark, events = st.segments, st.bytes_written, 0
for s, _first, evs in workload.batches(1 << 40, start=start):
    before = store.stats().bytes_written
    store.append_batch(names[s], evs)
    events += len(evs)
    st = store.stats()
    if st.segments != segments:  # rolled: the sealed segment got its index; the tail restarts
        segments, mark = st.segments, before
    if st.bytes_written - mark >= tail_bytes:
        break
sys.stdout.write(json.dumps({"events": events, "tail_bytes": st.bytes_written - mark}) + "\n")
sys.stdout.flush()
time.sleep(600)
"""


@dataclass
class CrashDataset:
    path: str
    events: int
    tail_events: int  # appended by the killed child
    tail_bytes: int  # of them, unindexed in the active segment at the kill
    active_segment_bytes: int


@pytest.fixture(scope="session")
def crash_dataset(scale: Scale, bench_tmp: str, open_dataset: OpenDataset) -> CrashDataset:
    """The open dataset plus events appended by a child that is then SIGKILLed once
    the active segment ends in ``crash_tail_bytes`` of unindexed records. Never
    opened here (the first open repairs it); rounds open fresh copies."""
    path = os.path.join(bench_tmp, "crash", "seglog")
    os.makedirs(os.path.dirname(path))
    copy_store(open_dataset.path, path)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CRASH_CHILD,
            BENCH_DIR,
            path,
            str(open_dataset.events),
            str(scale.crash_tail_bytes),
            str(scale.open_segment_bytes),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
    try:
        said = json.loads(line)
    except ValueError:
        raise RuntimeError(f"crash child failed before writing (said {line!r})") from None
    with open(os.path.join(path, "MANIFEST"), "rb") as f:
        active = json.load(f)["segments"][-1]
    return CrashDataset(
        path,
        open_dataset.events + said["events"],
        said["events"],
        said["tail_bytes"],
        os.path.getsize(os.path.join(path, f"{active:020d}.seg")),
    )
