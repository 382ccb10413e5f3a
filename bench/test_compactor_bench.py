"""Compaction benchmarks: throughput of a pass, the writer beside a compactor process,
and bytes on disk.

Run (small is the default, about 30 s; full about 10 min and 2.5 GiB of temp disk)::

    pytest bench/test_compactor_bench.py --benchmark-json=compactor-small.json
    pytest bench/test_compactor_bench.py --bench-scale=full --benchmark-json=compactor-full.json
    python bench/test_compactor_bench.py compactor-full.json     # the summary table

C1. ``test_compact_throughput``: one unthrottled pass (``engine.compact(path,
    everything=True)``, no writer) over a store of ~1 GiB (small: 64 MiB) of
    session-like streams, about half of whose bytes are dead: 9 streams in 20
    dropped, and receipt blobs each written twice. Every round compacts a fresh
    copy (sealed segments hard-linked). ``warm``: inputs in the page cache (they
    were just written); ``cold``: evicted first (``POSIX_FADV_DONTNEED`` on the
    copy's files). Target: >= 200 MiB/s of input (aim 400).
C2. ``test_writer_beside_compactor``: the writer in this process on a copy of the
    same store, alone and then with a compactor process rewriting every sealed
    segment back to back (``compactor_child.py --interval 0 --everything``). ``append``:
    single-event appends (durability ``process``), 1 ms apart; ``command``: one REPL
    command recorded through the PersistenceManager (``session_workload.record``,
    background saves), 1 ms apart. Target: p99 with the compactor <= 1.5x alone, and
    the longest wait the compactor causes <= 5 ms: the writer's time in
    ``_adopt_manifest`` (it holds the writer lock throughout, the catalog lock for
    part of it) is timed by a shim on ``Store``, next to the longest latencies.
C3. ``test_space_after_delete``: sessions recorded with the PersistenceManager (one save
    per round of commands), every other one deleted (half of the bytes), the active
    segment rolled (a pass never touches the active segment, where the deletes'
    STREAM_DROP records are), then one pass: bytes on disk vs a fresh store that
    recorded only the live sessions the same way. ``default``: ``engine.compact`` with
    default options; ``everything``: every sealed segment rewritten. Target <= 1.15x.
    ``test_space_under_churn``: sessions created, forked, recorded and deleted flat out
    (a fixed number live, each deleted after a random length) while a compactor process
    runs with ``--interval`` between passes; bytes on disk, live bytes (the streams'
    bytes) and bytes of deleted files the writer still holds are sampled over time
    (``series`` in extra_info, for a plot) next to the passes; ``none`` runs the same
    churn without a compactor, the baseline of the plot. Target: steady-state
    (second half of the run) bytes <= 1.5x live; the peak during a pass is reported
    against live bytes + that pass's inputs.

Figures go to ``extra_info`` with the targets as ``meets_*`` (not asserted: a shared
machine makes latencies noisy).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:  # when run as a script
    sys.path.insert(0, BENCH_DIR)

import session_workload as sw  # noqa: E402
import workload  # noqa: E402
from conftest import copy_store, pick_scale  # noqa: E402
from percentiles import latency_info, pct  # noqa: E402

import engine  # noqa: E402
from engine.log.catalog import Catalog  # noqa: E402
from engine.log.compactor import analyze  # noqa: E402
from engine.log.store import Store  # noqa: E402
from engine.log.version import VersionSet  # noqa: E402

MiB = 1 << 20
CHILD = os.path.join(BENCH_DIR, "compactor_child.py")

TARGET_MIB_S = 200.0
AIM_MIB_S = 400.0
TARGET_P99_RATIO = 1.5
TARGET_WAIT_MS = 5.0
TARGET_SPACE_RATIO = 1.15
TARGET_CHURN_RATIO = 1.5

GAP_S = 0.001  # between two measured appends / commands
N_STREAMS = 1000  # of the C1/C2 store
DROP_OF_20 = 9  # streams i with i % 20 < 9 are dropped
SEAL_STREAM = "bench/seal"


@dataclass(frozen=True)
class Scale:
    name: str
    # C1/C2: the half-dead store
    store_bytes: int
    segment_bytes: int
    rounds: int
    # C2
    append_samples: int
    command_samples: int
    command_sessions: int
    # C3 after delete
    space_sessions: int
    space_commands: int
    space_segment_bytes: int
    # C3 churn
    churn_sessions: int  # live at a time
    churn_length: int  # mean commands of a session before it is deleted
    churn_turnovers: int  # commands recorded = turnovers x sessions x length
    churn_segment_bytes: int
    churn_interval: float  # seconds between the compactor's passes
    sample_s: float


SCALES = {
    "small": Scale(
        "small",
        store_bytes=64 * MiB,
        segment_bytes=8 * MiB,
        rounds=3,
        append_samples=2000,
        command_samples=800,
        command_sessions=10,
        space_sessions=40,
        space_commands=100,
        space_segment_bytes=512 << 10,
        churn_sessions=30,
        churn_length=120,
        churn_turnovers=4,
        churn_segment_bytes=256 << 10,
        churn_interval=0.25,
        sample_s=0.05,
    ),
    "full": Scale(
        "full",
        store_bytes=1 << 30,
        segment_bytes=64 * MiB,
        rounds=3,
        append_samples=20000,
        command_samples=8000,
        command_sessions=20,
        space_sessions=200,
        space_commands=300,
        space_segment_bytes=8 * MiB,
        churn_sessions=150,
        churn_length=600,
        churn_turnovers=4,
        churn_segment_bytes=4 * MiB,
        churn_interval=1.0,
        sample_s=0.1,
    ),
}

# Figures shared between tests (the runs alone come first, the ratios use them).
_RESULTS: dict[tuple[str, ...], dict[str, Any]] = {}


@pytest.fixture(scope="module")
def cscale(request: pytest.FixtureRequest) -> Scale:
    return pick_scale(request, SCALES)


def _info(benchmark: Any, bench: str, impl: str, scale: Scale, **extra: Any) -> None:
    benchmark.extra_info.update({"bench": bench, "impl": impl, "scale": scale.name, **extra})


def dir_bytes(path: str) -> int:
    """Bytes of the files in ``path`` (a file removed while listing counts as gone)."""
    total = 0
    try:
        with os.scandir(path) as it:
            for e in it:
                with contextlib.suppress(FileNotFoundError):
                    total += e.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0
    return total


def held_deleted_bytes(path: str) -> int:
    """Bytes of files under ``path`` that are deleted but still open in this process
    (their space is not given back yet)."""
    total = 0
    prefix = os.path.abspath(path) + os.sep
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(prefix) and target.endswith(" (deleted)"):
                total += os.stat(f"/proc/self/fd/{fd}").st_size
        except OSError:
            pass
    return total


def seal_active(path: str) -> None:
    """Roll the store's active segment (no pass touches it): open it with the smallest
    segment size and append one event, which seals the segment that was active."""
    with engine.open(path, segment_bytes=4096) as store:
        store.append(SEAL_STREAM, {"sealed": True})


def evict(path: str) -> None:
    """Drop the page cache of the files in ``path`` (they are clean: sealed and synced)."""
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Compactor:
    """A compactor process (``compactor_child.py``), its pass reports collected as they come."""

    def __init__(self, store: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, store, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.passes: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.ready.wait(30):
            self.stop()
            raise RuntimeError(f"compactor child did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            doc = json.loads(line)
            if "ready" in doc:
                self.ready.set()
            elif "pass" in doc:
                self.passes.append(doc)
            elif "done" in doc:
                self.summary = doc

    def stop(self, timeout: float = 300) -> None:
        """SIGTERM: the child stops after the pass in progress."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        if self.proc.returncode:
            raise RuntimeError(f"compactor child exited with {self.proc.returncode}:\n{err[-4000:]}")


# ------------------------------------------------------------------ the half-dead store
@dataclass
class DeadStore:
    path: str
    bytes_on_disk: int
    sealed_bytes: int
    segments: int
    reclaimable_bytes: int
    streams: int
    dropped: int
    records: int
    build_s: float


def build_dead_store(path: str, target_bytes: int, segment_bytes: int) -> tuple[int, int]:
    """Session-like streams, written round-robin, one "command" per stream per round: a
    batch of 5-25 REPL events, a state blob of 150-400 bytes under a new key, and every
    third command a ~1.3 KB receipt blob whose key is written twice. Then 9 streams in
    20 are dropped and the active segment is rolled. Returns (streams dropped, records)."""
    rng = random.Random(2026)
    ev_pool = [workload.events(i, 0, rng.randrange(5, 26)) for i in range(97)]
    states = [rng.randbytes(rng.randrange(150, 401)) for _ in range(61)]
    receipts = [rng.randbytes(rng.randrange(1200, 1401)) for _ in range(31)]
    names = [f"sess/{i:04d}" for i in range(N_STREAMS)]
    records = 0
    with engine.open(path, durability="process", segment_bytes=segment_bytes) as store:
        append_batch, put_blob = store.append_batch, store.put_blob
        c = 0
        while store.stats().bytes_on_disk < target_bytes:
            for i, name in enumerate(names):
                k = c * N_STREAMS + i
                append_batch(name, ev_pool[k % 97])
                put_blob(name, f"state/{c}", states[k % 61])
                records += 2
                if c % 3 == 0:
                    put_blob(name, f"receipt/{c // 6}", receipts[k % 31])
                    records += 1
            c += 1
        dropped = [n for i, n in enumerate(names) if i % 20 < DROP_OF_20]
        for name in dropped:
            store.drop_stream(name)
    seal_active(path)
    return len(dropped), records


@pytest.fixture(scope="module")
def dead_store(cscale: Scale, bench_tmp: str) -> DeadStore:
    t0 = time.perf_counter()
    path = os.path.join(bench_tmp, "compactor", "dead-half")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dropped, records = build_dead_store(path, cscale.store_bytes, cscale.segment_bytes)
    g = analyze(path)
    sealed = sum(s.size for s in g.segments if s.sealed)
    with engine.open(path, readonly=True) as store:
        st = store.stats()
    return DeadStore(
        path,
        st.bytes_on_disk,
        sealed,
        st.segments,
        g.reclaimable_bytes,
        N_STREAMS,
        dropped,
        records,
        time.perf_counter() - t0,
    )


# ------------------------------------------------------------------ C1. throughput
@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_compact_throughput(benchmark: Any, cache: str, cscale: Scale, dead_store: DeadStore, bench_tmp: str) -> None:
    """One unthrottled pass over every sealed segment of a fresh copy of the half-dead
    store, nobody else holding it; MiB/s of input from the median round."""
    benchmark.group = "C1 compaction pass, half of the bytes dead"
    ds = dead_store
    reports: list[Any] = []
    n = 0

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        nonlocal n
        n += 1
        path = os.path.join(bench_tmp, "compactor", f"c1-{cache}-{n}")
        shutil.rmtree(path, ignore_errors=True)
        copy_store(ds.path, path)
        if cache == "cold":
            evict(path)
        return (path,), {}

    def target(path: str) -> None:
        reports.append(engine.compact(path, everything=True, segment_bytes=cscale.segment_bytes))

    def teardown(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=cscale.rounds)
    r = reports[-1]
    assert r.bytes_in >= ds.sealed_bytes * 0.99 and r.bytes_out < r.bytes_in
    rates = [round(x.bytes_in / MiB / x.duration_s, 1) for x in reports]
    extra: dict[str, Any] = {
        "cache": cache,
        "store_bytes": ds.bytes_on_disk,
        "segments": ds.segments,
        "segment_bytes": cscale.segment_bytes,
        "streams": ds.streams,
        "streams_dropped": ds.dropped,
        "records_written": ds.records,
        "dead_fraction": round(ds.reclaimable_bytes / ds.sealed_bytes, 3),
        "build_s": round(ds.build_s, 1),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "records_in": r.records_in,
        "records_out": r.records_out,
        "segments_in": len(r.segments_in),
        "segments_out": len(r.segments_out),
        "out_fraction": round(r.bytes_out / r.bytes_in, 3),
        "mib_s_rounds": rates,
    }
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        mib_s = r.bytes_in / MiB / stats.stats.median
        extra.update(
            {
                "mib_s": round(mib_s, 1),
                "out_mib_s": round(r.bytes_out / MiB / stats.stats.median, 1),
                "us_per_record_in": round(stats.stats.median / r.records_in * 1e6, 2),
                "meets_min_target": mib_s >= TARGET_MIB_S,
                "meets_aim": mib_s >= AIM_MIB_S,
            }
        )
    _info(benchmark, "compact_throughput", "seglog", cscale, **extra)


# ------------------------------------------------------------ C2. the writer beside it
class AdoptTimes:
    """Times the writer's switch to segments a compactor wrote. ``_maybe_adopt`` opens
    the new segments (``recovery.open_sealed``) and builds the touched streams' runs
    (``Catalog.sealed_runs``) without the writer lock, then calls ``_adopt_manifest``
    with ``_write_mu`` held: the time that call runs is the writer-lock hold. Inside it
    are timed any opening or run building it has to redo itself (a roll or another
    switch came in between), the swap under the catalog lock (``Catalog.set_sealed_runs``
    + ``Store._install``) and any removal of files; after it, ``VersionSet.reap``
    deletes the replaced files with no lock held."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        from engine.log import recovery, writer

        self.adopt: list[tuple[int, int, bool]] = []  # (start ns, duration ns, segments changed)
        # per adoption that changed something, ns under the writer lock spent:
        self.mu: list[int] = []  # under the catalog lock
        self.unlink: list[int] = []  # removing files
        self.open: list[int] = []  # opening segments not opened beforehand
        self.prepare: list[int] = []  # building runs not built beforehand
        # per _maybe_adopt call: (start ns, whole ns, ns opening, ns building runs) before the lock
        self.maybe: list[tuple[int, int, int, int]] = []
        self.reaps: list[int] = []  # ns of reap calls that deleted something
        self._inside = threading.local()  # .t: counters inside _adopt_manifest; .pre: inside _maybe_adopt
        orig_adopt = Store._adopt_manifest
        orig_maybe = Store._maybe_adopt
        orig_reap = VersionSet.reap
        times = self

        def adopt(store: Store, *a: Any, **kw: Any) -> None:
            times._inside.t = {"mu": 0, "unlink": 0, "open": 0, "prepare": 0}
            before = store._manifest.generation
            t0 = time.perf_counter_ns()
            try:
                orig_adopt(store, *a, **kw)
            finally:
                t1 = time.perf_counter_ns()
                changed = store._manifest.generation != before
                times.adopt.append((t0, t1 - t0, changed))
                if changed:
                    t = times._inside.t
                    times.mu.append(t["mu"])
                    times.unlink.append(t["unlink"])
                    times.open.append(t["open"])
                    times.prepare.append(t["prepare"])
                times._inside.t = None

        def maybe(store: Store, *a: Any, **kw: Any) -> None:
            pre = times._inside.pre = {"mu": 0, "unlink": 0, "open": 0, "prepare": 0}
            t0 = time.perf_counter_ns()
            try:
                orig_maybe(store, *a, **kw)
            finally:
                times.maybe.append((t0, time.perf_counter_ns() - t0, pre["open"], pre["prepare"]))
                times._inside.pre = None

        def reap(vs: VersionSet, *a: Any, **kw: Any) -> int:
            t0 = time.perf_counter_ns()
            n = orig_reap(vs, *a, **kw)
            if n:
                times.reaps.append(time.perf_counter_ns() - t0)
            return n

        def timed(orig: Callable[..., Any], key: str) -> Callable[..., Any]:
            def run(*args: Any, **kw: Any) -> Any:
                # inside _adopt_manifest (writer lock held) first, else before the lock
                t = getattr(times._inside, "t", None) or getattr(times._inside, "pre", None)
                if t is None:
                    return orig(*args, **kw)
                t0 = time.perf_counter_ns()
                try:
                    return orig(*args, **kw)
                finally:
                    t[key] += time.perf_counter_ns() - t0

            return run

        mp.setattr(Store, "_adopt_manifest", adopt)
        mp.setattr(Store, "_maybe_adopt", maybe)
        mp.setattr(VersionSet, "reap", reap)
        mp.setattr(Catalog, "set_sealed_runs", timed(Catalog.set_sealed_runs, "mu"))
        mp.setattr(Catalog, "sealed_runs", timed(Catalog.sealed_runs, "prepare"))
        mp.setattr(Store, "_install", timed(Store._install, "mu"))
        mp.setattr(writer.recovery, "open_sealed", timed(recovery.open_sealed, "open"))
        mp.setattr(VersionSet, "delete_segment_files", timed(VersionSet.delete_segment_files, "unlink"))

    def spans(self) -> list[tuple[int, int]]:
        return [(t, t + d) for t, d, changed in self.adopt if changed]

    def info(self) -> dict[str, Any]:
        changed = sorted(d for _, d, c in self.adopt if c)
        quiet = sorted(d for _, d, c in self.adopt if not c)
        ms = lambda v: round(max(v) / 1e6, 3) if v else 0.0  # noqa: E731
        return {
            "adoptions": len(changed),
            "adopt_hold_max_ms": round(changed[-1] / 1e6, 3) if changed else 0.0,
            "adopt_hold_p50_ms": round(pct(changed, 50) / 1e6, 3) if changed else 0.0,
            "adopt_hold_all_ms": [round(d / 1e6, 2) for d in changed][:50],
            "adopt_catalog_lock_max_ms": ms(self.mu),
            "adopt_unlink_max_ms": ms(self.unlink),
            "adopt_open_under_lock_max_ms": ms(self.open),
            "adopt_prepare_runs_under_lock_max_ms": ms(self.prepare),
            "adopt_unchanged_max_ms": round(quiet[-1] / 1e6, 3) if quiet else 0.0,
            "maybe_adopt_max_ms": ms([d for _, d, _, _ in self.maybe]),
            "prepare_open_before_lock_max_ms": ms([o for _, _, o, _ in self.maybe]),
            "prepare_runs_before_lock_max_ms": ms([p for _, _, _, p in self.maybe]),
            "reap_calls_deleting": len(self.reaps),
            "reap_max_ms": ms(self.reaps),
        }


def _overlapping(spans: list[tuple[int, int]], starts: list[int], durs: list[int]) -> list[int]:
    out = []
    for i, (a, d) in enumerate(zip(starts, durs, strict=True)):
        b = a + d
        if any(s < b and e > a for s, e in spans):
            out.append(i)
    return out


C2_CASES = [("append", "alone"), ("append", "with_compactor"), ("command", "alone"), ("command", "with_compactor")]


@pytest.mark.skipif(not sw.samples_available(), reason="the command case needs the legacy samples")
@pytest.mark.parametrize(("kind", "mode"), C2_CASES, ids=[f"{k}-{m}" for k, m in C2_CASES])
def test_writer_beside_compactor(
    benchmark: Any,
    kind: str,
    mode: str,
    cscale: Scale,
    dead_store: DeadStore,
    bench_tmp: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Latency of single-event appends (``append``) or of recording one REPL command with
    background saves (``command``), 1 ms apart, on a copy of the half-dead store; alone,
    or with a compactor process rewriting every sealed segment back to back."""
    benchmark.group = f"C2 writer beside a compactor process: {kind}"
    path = os.path.join(bench_tmp, "compactor", f"c2-{kind}-{mode}")
    shutil.rmtree(path, ignore_errors=True)
    copy_store(dead_store.path, path)
    times = AdoptTimes(monkeypatch)
    starts: list[int] = []
    durs: list[int] = []
    rng = random.Random(5)
    closers: list[Callable[[], None]] = []
    try:
        if kind == "append":
            store = engine.open(path, durability="process", segment_bytes=cscale.segment_bytes)
            closers.append(store.close)
            names = [f"w/{i:03d}" for i in range(100)]
            for nm in names:
                store.create_stream(nm)
            pool = workload.events(3, 0, 1000)
            append = store.append
            total = cscale.append_samples

            def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
                time.sleep(GAP_S)
                return (names[rng.randrange(100)], pool[rng.randrange(1000)]), {}

            def measure(name: str, ev: Any) -> None:
                t0 = time.perf_counter_ns()
                append(name, ev)
                t1 = time.perf_counter_ns()
                starts.append(t0)
                durs.append(t1 - t0)
        else:
            pm = engine.PersistenceManager(
                engine.SessionPool(max_size=cscale.command_sessions + 1),
                path,
                save_interval=0.1,
                register_atexit=False,
                store_options={"segment_bytes": cscale.segment_bytes},
            )
            closers.append(pm.shutdown)
            sessions = []
            for i in range(cscale.command_sessions):
                wl = sw.SessionWorkload(seed=300 + i)
                s = pm.create_session(sw.session_name(i))
                for cmd in wl.commands(10):
                    sw.record(s, cmd)
                sessions.append((s, wl))
            pm.force_save()
            total = cscale.command_samples
            record = sw.record
            k = 0

            def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
                nonlocal k
                s, wl = sessions[k % len(sessions)]
                k += 1
                cmd = wl.next()
                time.sleep(GAP_S)
                return (s, cmd), {}

            def measure(s: Any, cmd: Any) -> None:
                t0 = time.perf_counter_ns()
                record(s, cmd)
                t1 = time.perf_counter_ns()
                starts.append(t0)
                durs.append(t1 - t0)

        comp = None
        if mode == "with_compactor":
            comp = Compactor(path, "--interval", "0", "--everything", "--segment-bytes", str(cscale.segment_bytes))
        t_start = time.perf_counter()
        try:
            benchmark.pedantic(measure, setup=setup, rounds=total)
        finally:
            elapsed = time.perf_counter() - t_start
            if comp is not None:
                comp.stop()
    finally:
        for close in reversed(closers):
            close()
    lat = latency_info(durs)
    extra: dict[str, Any] = {
        "kind": kind,
        "mode": mode,
        "gap_us": GAP_S * 1e6,
        "measure_s": round(elapsed, 2),
        "store_bytes": dead_store.bytes_on_disk,
        **times.info(),
    }
    ov = _overlapping(times.spans(), starts, durs)
    extra["overlapping_adopt"] = len(ov)
    extra["overlapping_adopt_max_us"] = round(max(durs[i] for i in ov) / 1000, 1) if ov else None
    if comp is not None:
        p = comp.passes
        extra.update(
            {
                "passes": len(p),
                "pass_bytes_in": sum(x["bytes_in"] for x in p),
                "pass_bytes_out": sum(x["bytes_out"] for x in p),
                "pass_s": [round(x["duration_s"], 2) for x in p],
                "compactor_mib_s": round(
                    sum(x["bytes_in"] for x in p) / MiB / max(sum(x["duration_s"] for x in p), 1e-9), 1
                ),
            }
        )
        alone = _RESULTS.get(("c2", kind, "alone"))
        if alone:
            ratio = lat["p99_us"] / alone["p99_us"]
            excess_ms = (lat["max_us"] - alone["max_us"]) / 1000
            extra.update(
                {
                    "alone_p50_us": alone["p50_us"],
                    "alone_p99_us": alone["p99_us"],
                    "alone_max_us": alone["max_us"],
                    "p99_ratio": round(ratio, 2),
                    "max_excess_ms": round(excess_ms, 2),
                    "meets_p99_target": ratio <= TARGET_P99_RATIO,
                    "meets_wait_target": extra["adopt_hold_max_ms"] <= TARGET_WAIT_MS and excess_ms <= TARGET_WAIT_MS,
                }
            )
    _RESULTS[("c2", kind, mode)] = lat
    _info(benchmark, "writer_beside_compactor", f"{kind}_{mode}", cscale, **lat, **extra)
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ C3. space
def _record_rounds(pm: engine.PersistenceManager, names: list[str], seeds: list[int], commands: int) -> None:
    """``commands`` rounds; each records one command into every session, then saves them."""
    sessions = [pm.create_session(n) for n in names]
    loads = [sw.SessionWorkload(seed=s) for s in seeds]
    for _ in range(commands):
        for s, wl in zip(sessions, loads, strict=True):
            sw.record(s, wl.next())
        pm.force_save()


def _pm(path: str, n: int, segment_bytes: int, **kw: Any) -> engine.PersistenceManager:
    kw.setdefault("save_interval", 3600)  # saves only when asked (force_save)
    kw.setdefault("save_after", 1 << 30)
    return engine.PersistenceManager(
        engine.SessionPool(max_size=n + 20),
        path,
        register_atexit=False,
        store_options={"segment_bytes": segment_bytes},
        **kw,
    )


@pytest.mark.skipif(not sw.samples_available(), reason="needs the legacy samples")
@pytest.mark.parametrize("options", ["default", "everything"])
def test_space_after_delete(benchmark: Any, options: str, cscale: Scale, bench_tmp: str) -> None:
    """Half of the sessions deleted, one pass: bytes on disk vs a fresh store of the live ones."""
    benchmark.group = "C3 space after deleting half of the sessions"
    n, cmds, seg = cscale.space_sessions, cscale.space_commands, cscale.space_segment_bytes
    base = os.path.join(bench_tmp, "compactor", f"c3-{options}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    names = [sw.session_name(i) for i in range(n)]
    seeds = [5000 + i for i in range(n)]
    live = [i for i in range(n) if i % 2 == 0]
    full, fresh = os.path.join(base, "all"), os.path.join(base, "fresh")
    pm = _pm(full, n, seg)
    try:
        _record_rounds(pm, names, seeds, cmds)
        recorded = dir_bytes(full)
        for i in range(n):
            if i % 2:
                pm.delete(names[i])
    finally:
        pm.shutdown()
    seal_active(full)
    before = dir_bytes(full)
    pm = _pm(fresh, len(live), seg)
    try:
        _record_rounds(pm, [names[i] for i in live], [seeds[i] for i in live], cmds)
    finally:
        pm.shutdown()
    fresh_bytes = dir_bytes(fresh)
    reports: list[Any] = []
    opts: dict[str, Any] = {"segment_bytes": seg}
    if options == "everything":
        opts["everything"] = True
    benchmark.pedantic(lambda: reports.append(engine.compact(full, **opts)), rounds=1)
    after = dir_bytes(full)
    r = reports[-1]
    pm = _pm(full, n, seg)  # the live sessions are all there
    try:
        listed = pm.list_sessions()
        assert [m["name"] for m in listed] == sorted(names[i] for i in live)
        assert len({m["event_count"] for m in listed}) == 1 and listed[0]["event_count"] > 0
    finally:
        pm.shutdown()
    ratio = after / fresh_bytes
    _info(
        benchmark,
        "space_after_delete",
        options,
        cscale,
        sessions=n,
        commands=cmds,
        segment_bytes=seg,
        recorded_bytes=recorded,
        before_pass_bytes=before,
        after_pass_bytes=after,
        fresh_live_bytes=fresh_bytes,
        bytes_in=r.bytes_in,
        bytes_out=r.bytes_out,
        segments_in=len(r.segments_in),
        segments_out=len(r.segments_out),
        pass_s=round(r.duration_s, 3),
        ratio_vs_fresh=round(ratio, 3),
        meets_target=ratio <= TARGET_SPACE_RATIO,
    )
    shutil.rmtree(base, ignore_errors=True)


class DiskSampler:
    """Samples, every ``period`` s: (monotonic s, bytes on disk, live bytes, bytes of
    deleted files this process still holds open)."""

    def __init__(self, path: str, live: Callable[[], int], period: float) -> None:
        self.path, self.live, self.period = path, live, period
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                live = self.live()
            except Exception:  # the store is closing
                break
            self.samples.append((time.monotonic(), dir_bytes(self.path), live, held_deleted_bytes(self.path)))
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(not sw.samples_available(), reason="needs the legacy samples")
@pytest.mark.parametrize("compactor", ["watch", "none"])
def test_space_under_churn(benchmark: Any, compactor: str, cscale: Scale, bench_tmp: str) -> None:
    """Sessions created (a quarter of them forks), recorded and deleted flat out, a fixed
    number live, with a compactor process passing every ``churn_interval`` s (``watch``),
    or with no compactor (``none``: the same workload, what the store grows to without one)."""
    benchmark.group = "C3 space under churn"
    n, length, seg = cscale.churn_sessions, cscale.churn_length, cscale.churn_segment_bytes
    total = cscale.churn_turnovers * n * length
    path = os.path.join(bench_tmp, "compactor", "churn")
    shutil.rmtree(path, ignore_errors=True)
    pm = _pm(path, n, seg, save_interval=0.1, save_after=256)
    rng = random.Random(99)
    live: list[list[Any]] = []  # [name, instance, workload, recorded, life]
    counts = {"created": 0, "forked": 0, "deleted": 0, "commands": 0}
    samples: list[tuple[float, int, int, int]] = []
    comp: Compactor | None = None

    def live_bytes() -> int:
        return sum(si.bytes for si in pm.store.streams())

    def run() -> None:
        nonlocal comp, samples
        if compactor == "watch":
            comp = Compactor(path, "--interval", str(cscale.churn_interval), "--segment-bytes", str(seg))
        sampler = DiskSampler(path, live_bytes, cscale.sample_s)
        try:
            while counts["commands"] < total:
                while len(live) < n:
                    name = f"churn-{counts['created'] + counts['forked']:06d}"
                    life = rng.randrange(length // 2, length * 3 // 2 + 1)
                    srcs = [x for x in live if x[1].event_count > 0]
                    if srcs and rng.random() < 0.25:
                        src = rng.choice(srcs)
                        inst = pm.fork(src[0], name, rng.randrange(src[1].event_count))
                        counts["forked"] += 1
                    else:
                        inst = pm.create_session(name)
                        counts["created"] += 1
                    live.append([name, inst, sw.SessionWorkload(seed=counts["created"] + counts["forked"]), 0, life])
                j = rng.randrange(len(live))
                x = live[j]
                sw.record(x[1], x[2].next())
                x[3] += 1
                counts["commands"] += 1
                if x[3] >= x[4]:
                    pm.delete(x[0])
                    counts["deleted"] += 1
                    live[j] = live[-1]
                    live.pop()
        finally:
            sampler.stop()
            samples = sampler.samples
            if comp is not None:
                comp.stop()

    try:
        benchmark.pedantic(run, rounds=1)
    finally:
        pm.shutdown()
    assert samples and (comp is not None) == (compactor == "watch")
    t0 = samples[0][0]
    t_end = samples[-1][0]
    passes = [p for p in comp.passes if p["bytes_in"]] if comp is not None else []
    steady = [s for s in samples if s[0] >= t0 + (t_end - t0) / 2]
    ratios = sorted(s[1] / s[2] for s in steady if s[2])
    mean_ratio = sum(ratios) / len(ratios)
    # the peak of each pass (to the writer's adoption shortly after) vs live + its inputs
    per_pass = []
    for p in passes:
        window = [s for s in samples if p["t0"] <= s[0] <= p["t1"] + 0.5]
        at_start = min(samples, key=lambda s: abs(s[0] - p["t0"]))
        if window:
            peak = max(window, key=lambda s: s[1])
            per_pass.append((peak[1], at_start[2], p["bytes_in"], peak[1] / (at_start[2] + p["bytes_in"])))
    peak_all = max(samples, key=lambda s: s[1])
    worst = max(per_pass, key=lambda x: x[3]) if per_pass else None
    _info(
        benchmark,
        "space_under_churn",
        compactor,
        cscale,
        sessions_live=n,
        mean_length=length,
        segment_bytes=seg,
        interval_s=cscale.churn_interval if comp is not None else None,
        **counts,
        duration_s=round(t_end - t0, 1),
        passes=len(passes),
        passes_total=len(comp.passes) if comp is not None else 0,
        pass_bytes_in=sum(p["bytes_in"] for p in passes),
        pass_bytes_out=sum(p["bytes_out"] for p in passes),
        max_pass_bytes_in=max((p["bytes_in"] for p in passes), default=0),
        steady_mean_ratio=round(mean_ratio, 3),
        steady_p50_ratio=round(pct(ratios, 50), 3),
        steady_max_ratio=round(ratios[-1], 3),
        steady_mean_disk_bytes=round(sum(s[1] for s in steady) / len(steady)),
        steady_mean_live_bytes=round(sum(s[2] for s in steady) / len(steady)),
        peak_disk_bytes=peak_all[1],
        live_at_peak=peak_all[2],
        held_deleted_max_bytes=max(s[3] for s in samples),
        worst_pass_peak_ratio=round(worst[3], 3) if worst else None,
        worst_pass=({"peak": worst[0], "live": worst[1], "bytes_in": worst[2]} if worst else None),
        meets_target=mean_ratio <= TARGET_CHURN_RATIO if comp is not None else None,
        series={
            "t_s": [round(s[0] - t0, 3) for s in samples],
            "disk_bytes": [s[1] for s in samples],
            "live_bytes": [s[2] for s in samples],
            "held_deleted_bytes": [s[3] for s in samples],
        },
        pass_series=[[round(p["t0"] - t0, 3), round(p["t1"] - t0, 3), p["bytes_in"], p["bytes_out"]] for p in passes],
    )
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ summary
def summary(path: str) -> str:
    """A Markdown table of the compaction benchmarks in a pytest-benchmark JSON."""
    with open(path, "rb") as f:
        data = json.load(f)
    rows = ["| benchmark | figure | peer in the same run | ratio | target |", "|---|---|---|---|---|"]

    def met(x: dict[str, Any], key: str) -> str:
        return "met" if x.get(key) else "**not met**"

    for b in data["benchmarks"]:
        x = b.get("extra_info", {})
        bench = x.get("bench")
        if bench == "compact_throughput":
            rows.append(
                f"| C1 pass, {x['cache']} cache, {x['bytes_in'] / MiB:,.0f} MiB in -> "
                f"{x['bytes_out'] / MiB:,.0f} MiB out | {x.get('mib_s')} MiB/s in "
                f"(rounds {x['mib_s_rounds']}) | | | >= {TARGET_MIB_S:.0f}: {met(x, 'meets_min_target')}"
                f" (aim {AIM_MIB_S:.0f}: {met(x, 'meets_aim')}) |"
            )
        elif bench == "writer_beside_compactor" and x["mode"] == "with_compactor":
            rows.append(
                f"| C2 {x['kind']} p50 / p99 / max, compactor running ({x['passes']} passes, "
                f"{x['pass_bytes_in'] / MiB:,.0f} MiB in) | {x['p50_us']} / {x['p99_us']} / {x['max_us']} µs"
                f" | alone {x.get('alone_p50_us')} / {x.get('alone_p99_us')} / {x.get('alone_max_us')} µs"
                f" | p99 {x.get('p99_ratio')}x | <= {TARGET_P99_RATIO}x: {met(x, 'meets_p99_target')} |"
            )
            rows.append(
                f"| C2 {x['kind']} longest wait for the compactor | adopt holds the writer lock "
                f"{x['adopt_hold_max_ms']} ms max ({x['adoptions']} adoptions, catalog lock "
                f"{x['adopt_catalog_lock_max_ms']} ms, removing files {x.get('adopt_unlink_max_ms')} ms) | "
                f"max latency alone {x.get('alone_max_us')} µs | "
                f"max +{x.get('max_excess_ms')} ms | <= {TARGET_WAIT_MS} ms: {met(x, 'meets_wait_target')} |"
            )
        elif bench == "space_after_delete":
            rows.append(
                f"| C3 half deleted, one pass ({x['impl']}) | {x['after_pass_bytes']:,} B "
                f"(before {x['before_pass_bytes']:,}) | fresh store of the live sessions "
                f"{x['fresh_live_bytes']:,} B | {x['ratio_vs_fresh']}x | <= {TARGET_SPACE_RATIO}x: "
                f"{met(x, 'meets_target')} |"
            )
        elif bench == "space_under_churn" and x.get("impl") == "none":
            rows.append(
                f"| C3 churn without a compactor, steady state (mean of the 2nd half) | "
                f"{x['steady_mean_disk_bytes']:,} B (peak {x['peak_disk_bytes']:,} B) | "
                f"live {x['steady_mean_live_bytes']:,} B | {x['steady_mean_ratio']}x | (the baseline) |"
            )
        elif bench == "space_under_churn":
            rows.append(
                f"| C3 churn, steady state (mean of the 2nd half) | {x['steady_mean_disk_bytes']:,} B "
                f"(max ratio {x['steady_max_ratio']}x) | live {x['steady_mean_live_bytes']:,} B | "
                f"{x['steady_mean_ratio']}x | <= {TARGET_CHURN_RATIO}x: {met(x, 'meets_target')} |"
            )
            wp = x.get("worst_pass") or {}
            rows.append(
                f"| C3 churn, peak during a pass (worst of {x['passes']}) | {wp.get('peak', 0):,} B | "
                f"live {wp.get('live', 0):,} B + inputs {wp.get('bytes_in', 0):,} B | "
                f"{x['worst_pass_peak_ratio']}x | (reported) |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
