"""Session-layer benchmarks: seglog's PersistenceManager against the legacy writer pattern.

Run (small is the default, ~1 min; full wants a quiet machine, ~6-8 min)::

    pytest bench/test_session_bench.py --benchmark-json=session-small.json
    SEGLOG_BENCH_SCALE=full pytest bench/test_session_bench.py --benchmark-json=session-full.json
    python bench/test_session_bench.py session-small.json      # the summary table

The workload (``session_workload``) starts from a real checkpoint state of the legacy
samples and changes a few store entries per command; one command is 1 input, 20
steps, 1 result and 1 checkpoint with its state, every third one also an effect, an
LLM request, an LLM response with a 2 KB receipt and a resume. The legacy baseline
(``legacy_writer``) appends each event with open/append/close and rewrites the whole
index, every state inline, at each checkpoint, LLM response, result and error; it is
measured with the standard ``json`` serializer (the pattern as written) and with
``orjson`` (a lower bound for the legacy cost). It reproduces the real sample files
byte for byte (``test_legacy_writer_reproduces_samples``).

1. ``test_foreground_*``: wall time of recording one command (perf_counter_ns around its
   recording calls) when the session already has 10, 100 or 1,000 commands, with the
   background saver running (save_interval 0.1 s, up to 100 sessions in the pool,
   commands round-robin). Paces: ``idle`` (1 ms sleep between commands), ``busy`` (1 ms
   of Python holding the GIL between commands), ``flat_out`` (back to back, nothing in
   between), each next to the same recording with no background saves in the same run
   (``idle_no_saver``, ``busy_no_saver``, ``flat_out_no_saver``; they run first). p50,
   p99, p99.9 and max in extra_info, the ratios to the no-saver control and to the legacy
   pattern at the same length, and where the slow commands come from: blocked (a
   voluntary context switch during the command: waiting for the GIL or a lock),
   preempted (an involuntary one: another process), during a GC pass, during a step of
   a save; ``clean_p99_us`` leaves those out. What the benchmark built before measuring
   is frozen (``gc.freeze()``, as a server does once it has started), so the
   collector's full passes do not walk it.
2. ``test_bytes_on_disk``: store size after 1,000 commands and shutdown vs the legacy
   files, saving after every command (``interactive``) or in the background.
3. ``test_load``: ``load_session`` (fresh PersistenceManager, cold pool) vs parsing the
   legacy JSONL + index.json with ``json``; ``seglog_read_all`` also reads every event,
   the checkpoints and the latest state.
4. ``test_pool_memory``: peak RSS of a fresh process whose pool holds 100 sessions
   (``paced``, and ``flat_out`` where the saver may fall behind).

Figures go to ``benchmark.extra_info`` (``p50_us``, ``p99_us``, ``ratio_vs_legacy``,
``bytes``, ``pct_of_legacy``, ``peak_rss_mb``, ...); targets are reported there
(``meets_*``), not asserted, since a shared machine makes latencies noisy.

Environment: ``SEGLOG_BENCH_SCALE=small|full`` (or ``--bench-scale``), ``SEGLOG_BENCH_TMP``,
``SEGLOG_BENCH_KEEP=1``, ``SEGLOG_LEGACY_SAMPLES`` (default ``../shared/legacy-samples``
beside the repository), ``SEGLOG_SWITCH_INTERVAL`` (GIL switch interval in seconds for
the foreground runs, to see how GIL hand-over shapes the p99).
"""

from __future__ import annotations

import bisect
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:  # when run as a script
    sys.path.insert(0, BENCH_DIR)

import session_workload as sw  # noqa: E402
from conftest import pick_scale  # noqa: E402
from legacy_writer import LegacyWriter, load_legacy  # noqa: E402
from percentiles import latency_info, pct  # noqa: E402

import engine  # noqa: E402

LENGTHS = (10, 100, 1000)
SAVE_INTERVAL = 0.1  # seconds; the background saver wakes every save_interval / 4
GAP_S = 0.001  # between two commands: the REPL evaluating / the next request arriving
MAX_SESSIONS = 100  # sessions live in the pool while measuring
LONG = 1000  # commands of the session of benchmarks 2 and 3

TARGET_P99_US = 200.0
TARGET_P99_VS_NO_SAVER = 1.5  # p99 with the saver / the same recording with no saver
TARGET_P999_US = 2000.0
TARGET_MAX_US = 10_000.0
TARGET_RATIO_AT_1000 = 100.0
TARGET_BYTES_PCT = 2.0
TARGET_RSS_MB = 500.0


@dataclass(frozen=True)
class Scale:
    name: str
    samples: int  # measured seglog commands per length
    legacy_samples: dict[str, dict[int, int]]  # encoder -> length -> measured commands
    load_rounds: int
    mem_sessions: int
    mem_commands: int


SCALES = {
    "small": Scale(
        "small",
        samples=300,
        legacy_samples={"json": {10: 20, 100: 6, 1000: 3}, "orjson": {10: 30, 100: 20, 1000: 8}},
        load_rounds=3,
        mem_sessions=100,
        mem_commands=100,
    ),
    "full": Scale(
        "full",
        samples=3000,
        legacy_samples={"json": {10: 100, 100: 30, 1000: 8}, "orjson": {10: 300, 100: 100, 1000: 30}},
        load_rounds=10,
        mem_sessions=100,
        mem_commands=1000,
    ),
}

pytestmark = pytest.mark.skipif(not sw.samples_available(), reason=f"legacy samples not found under {sw.samples_dir()}")

# Figures shared between tests (the legacy runs come first, seglog's ratios use them).
_RESULTS: dict[tuple[str, ...], dict[str, Any]] = {}


@pytest.fixture(scope="module")
def sscale(request: pytest.FixtureRequest) -> Scale:
    """SEGLOG_BENCH_SCALE=small|full (or bench/conftest.py's --bench-scale when it has one)."""
    return pick_scale(request, SCALES)


@pytest.fixture(scope="module")
def switch_interval() -> Iterator[float]:
    """The interpreter's GIL switch interval for the foreground benchmarks (default 5 ms);
    SEGLOG_SWITCH_INTERVAL=<seconds> changes it, to see how GIL hand-over shapes the p99."""
    before = sys.getswitchinterval()
    wanted = os.environ.get("SEGLOG_SWITCH_INTERVAL")
    if wanted:
        sys.setswitchinterval(float(wanted))
    try:
        yield sys.getswitchinterval()
    finally:
        sys.setswitchinterval(before)


@pytest.fixture(scope="module")
def stmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="seglog-session-bench-", dir=os.environ.get("SEGLOG_BENCH_TMP") or None)
    try:
        yield path
    finally:
        if os.environ.get("SEGLOG_BENCH_KEEP") != "1":
            shutil.rmtree(path, ignore_errors=True)


def _new_dir(base: str, name: str) -> str:
    path = os.path.join(base, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _latency_info(samples_ns: list[int]) -> dict[str, Any]:
    us = [x / 1000 for x in samples_ns]
    return {**latency_info(samples_ns), "mean_us": round(sum(us) / len(us), 1) if us else None}


def _info(benchmark: Any, bench: str, impl: str, scale: Scale, **extra: Any) -> None:
    benchmark.extra_info.update(
        {"bench": bench, "impl": impl, "scale": scale.name, "engine": os.path.dirname(engine.__file__), **extra}
    )


class Sampler:
    """Hands out the measured commands: ``per_session`` consecutive ones of each of
    ``len(targets)`` sessions that already have ``length`` commands, round-robin.

    Besides the wall time of each command it notes, outside the timed region, the
    thread's context switches during the command (``getrusage(RUSAGE_THREAD)``): a
    voluntary one means the thread blocked (waiting for the GIL or a lock held by the
    saver), an involuntary one that the OS preempted it (another process: noise).
    """

    def __init__(self, targets: list[Any], loads: list[sw.SessionWorkload], per_session: int, total: int) -> None:
        self.order = [(t, wl) for _ in range(per_session) for t, wl in zip(targets, loads, strict=True)][:total]
        self.i = 0
        self.samples: list[int] = []
        self.t0: list[int] = []  # start of each measured command (perf_counter_ns)
        self.blocked: list[bool] = []
        self.preempted: list[bool] = []

    def next(self) -> tuple[Any, sw.Command]:
        t, wl = self.order[self.i % len(self.order)]
        self.i += 1
        return t, wl.next()

    def measure(self, target: Any, cmd: sw.Command) -> None:
        record = sw.record
        r0 = _rusage()
        t0 = time.perf_counter_ns()
        record(target, cmd)
        t1 = time.perf_counter_ns()
        r1 = _rusage()
        self.t0.append(t0)
        self.samples.append(t1 - t0)
        self.blocked.append(r1.ru_nvcsw > r0.ru_nvcsw)
        self.preempted.append(r1.ru_nivcsw > r0.ru_nivcsw)


def _rusage() -> Any:
    return resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))


class GcSpans:
    """Records when the cyclic garbage collector ran (gc.callbacks), by generation."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int, int]] = []
        self._start = 0

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.spans.append((self._start, time.perf_counter_ns(), info.get("generation", -1)))

    def __enter__(self) -> GcSpans:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._cb)


def _overlapping(spans: list[tuple[int, int]], starts: list[int], durations: list[int]) -> list[int]:
    """Indexes of the intervals ``[start, start + duration)`` that overlap one of ``spans``."""
    merged: list[tuple[int, int]] = []  # disjoint, ascending: their ends are sorted too
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    spans = merged
    ends = [e for _, e in spans]
    out = []
    for i, (a, d) in enumerate(zip(starts, durations, strict=True)):
        b = a + d
        j = bisect.bisect_left(ends, a)  # first span ending after a starts
        while j < len(spans) and spans[j][0] < b:
            if spans[j][1] > a:
                out.append(i)
                break
            j += 1
    return out


def _plan(length: int, total: int, max_sessions: int) -> tuple[int, int]:
    """(sessions, measured commands per session): at most 10% more commands than
    ``length`` per session, unless that would need more than ``max_sessions``."""
    per = max(1, length // 10, math.ceil(total / max_sessions))
    return math.ceil(total / per), per


# ----------------------------------------------------- 0. the legacy writer is the real one
def test_legacy_writer_reproduces_samples(tmp_path: Any) -> None:
    """Replaying each real legacy session through LegacyWriter gives its two files byte for byte."""
    import glob

    for jsonl in sorted(glob.glob(os.path.join(sw.samples_dir(), "*", "sessions", "*.jsonl"))):
        index_path = jsonl[: -len(".jsonl")] + ".index.json"
        with open(jsonl, "rb") as f:
            lines = f.read().splitlines()
        with open(index_path, "rb") as f:
            index = json.load(f)
        head = json.loads(lines[0])
        name = os.path.basename(jsonl)[: -len(".jsonl")]
        for encoder in ("json", "orjson"):
            out = str(tmp_path / f"{name}-{encoder}")
            lw = LegacyWriter(out, name, head["id"], head["created"], encoder=encoder)
            for line in lines[1:]:
                _replay(lw, json.loads(line), index)
            for mine, real in ((lw.jsonl_path, jsonl), (lw.index_path, index_path)):
                with open(mine, "rb") as a, open(real, "rb") as b:
                    assert a.read() == b.read(), f"{mine} differs from {real}"


def _replay(lw: LegacyWriter, e: dict[str, Any], index: dict[str, Any]) -> None:
    t, ts = e["type"], e["ts"]
    if t == "input":
        lw.input(e["code"], ts=ts)
    elif t == "step":
        lw.step(e["d"], e["ctrl"], ts=ts)
    elif t == "checkpoint":
        lw.checkpoint(e["d"], e["reason"], index["states"][e["stateId"]], ts=ts)
    elif t == "llm_req":
        lw.llm_req(e["d"], e["model"], e["promptPreview"], e["receiptKey"], ts=ts)
    elif t == "llm_resp":
        r = index["receipts"][e["receiptKey"]]
        lw.llm_resp(
            e["d"],
            e["valuePreview"],
            e["durationMs"],
            e["receiptKey"],
            request=r["request"],
            response=r["response"],
            timestamp=r["timestamp"],
            tokens=e.get("tokens"),
            ts=ts,
        )
    elif t == "effect":
        lw.effect(e["d"], e["op"], e["argsPreview"], ts=ts)
    elif t == "resume":
        lw.resume(e["d"], e["valuePreview"], ts=ts)
    elif t == "result":
        lw.result(e["value"], ts=ts)
    elif t == "error":
        lw.error(e["d"], e["message"], e.get("stack"), ts=ts)
    else:
        raise AssertionError(f"unknown event type {t!r}")


def test_legacy_bulk_equals_per_event(tmp_path: Any) -> None:
    """The bulk prefill leaves the same files as the per-event pattern (same clock)."""

    def clock() -> Callable[[], int]:
        it = iter(range(1_795_502_415_000, 1 << 62))
        return lambda: next(it)

    a = LegacyWriter(str(tmp_path / "a"), "s", created="2026-01-01T00:00:00.000Z", encoder="orjson", clock=clock())
    b = LegacyWriter(str(tmp_path / "b"), "s", created="2026-01-01T00:00:00.000Z", encoder="json", clock=clock())
    for cmd in sw.SessionWorkload(7).commands(6):
        sw.record(a, cmd)
    with b.bulk():
        for cmd in sw.SessionWorkload(7).commands(6):
            sw.record(b, cmd)
    for pa, pb in ((a.jsonl_path, b.jsonl_path), (a.index_path, b.index_path)):
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            assert fa.read() == fb.read()
    assert a.index_writes == 6 * 2 + 2  # result + checkpoint per command, llm_resp on the third and sixth


def test_workload_shape() -> None:
    cmds = list(sw.SessionWorkload(1).commands(300))
    assert [c.n_events for c in cmds[:3]] == [23, 23, 27]
    sizes = [len(sw.compact(c.state)) for c in cmds]
    assert min(sizes) > 12_000 and max(sizes) < 24_000  # ~16 KB, like the real states
    assert all(len(c.steps_before) + len(c.steps_after) == sw.STEPS_PER_COMMAND for c in cmds)
    llm = [c.llm for c in cmds if c.llm]
    assert len(llm) == 100
    receipt = {
        "key": llm[0].receipt_key,
        "request": llm[0].request,
        "response": llm[0].response,
        "timestamp": 1795502415169,
        "durationMs": llm[0].duration_ms,
    }
    assert 1900 < len(sw.compact(receipt)) < 2300
    # successive states share most of their entries
    a, b = cmds[100].state["storeEntries"], cmds[101].state["storeEntries"]
    shared = {id(x) for x in a}
    assert sum(id(y) in shared for y in b) >= len(b) - 3


# ----------------------------------------------------------- 1. foreground cost per command
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("encoder", ["json", "orjson"])
def test_foreground_legacy(benchmark: Any, encoder: str, length: int, sscale: Scale, stmp: str) -> None:
    """One command recorded the legacy way (per-event open/append/close, whole-index
    rewrites) on a session that already has ``length`` commands."""
    benchmark.group = f"S1 record one command, session of {length}"
    total = sscale.legacy_samples[encoder][length]
    n_sessions, per = _plan(length, total, MAX_SESSIONS)
    root = _new_dir(stmp, f"fg-legacy-{encoder}-{length}")
    writers, loads = [], []
    for i in range(n_sessions):
        wl = sw.SessionWorkload(seed=1000 + i)
        lw = LegacyWriter(root, sw.session_name(i), encoder="orjson")  # same bytes, faster prefill
        with lw.bulk():
            for cmd in wl.commands(length):
                sw.record(lw, cmd)
        lw.use_encoder(encoder)
        writers.append(lw)
        loads.append(wl)
    sampler = Sampler(writers, loads, per, total)

    def setup() -> tuple[tuple[Any, sw.Command], dict[str, Any]]:
        return sampler.next(), {}

    benchmark.pedantic(sampler.measure, setup=setup, rounds=total)
    lat = _latency_info(sampler.samples)
    index_bytes = max(os.path.getsize(w.index_path) for w in writers)
    _info(
        benchmark,
        "session_foreground",
        f"legacy_{encoder}",
        sscale,
        length=length,
        sessions=n_sessions,
        per_session=per,
        index_bytes=index_bytes,
        **lat,
    )
    _RESULTS[("foreground", f"legacy_{encoder}", str(length))] = lat
    shutil.rmtree(root, ignore_errors=True)


class SaveSpans:
    """Wraps the manager's _save_step (an instance attribute, the engine is untouched):
    when each step of a save ran (one engine write, in whichever thread), so that a
    measured command can be told to have overlapped one."""

    def __init__(self, pm: engine.PersistenceManager) -> None:
        self.spans: list[tuple[int, int]] = []
        self._orig = pm._save_step
        pm._save_step = self._step  # type: ignore[method-assign]

    def _step(self, *args: Any, **kw: Any) -> int | None:
        t0 = time.perf_counter_ns()
        try:
            return self._orig(*args, **kw)
        finally:
            self.spans.append((t0, time.perf_counter_ns()))


PACES = ["idle_no_saver", "idle", "busy_no_saver", "busy", "flat_out_no_saver", "flat_out"]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("pace", PACES)
def test_foreground_seglog(
    benchmark: Any, pace: str, length: int, sscale: Scale, stmp: str, switch_interval: float
) -> None:
    """One command recorded into a SessionInstance while the PersistenceManager saves in
    the background, on sessions that already have ``length`` commands.

    Between two measured commands the next command is generated and then, with pace
    ``idle``, the thread sleeps 1 ms (a server waiting for the REPL); with ``busy`` it
    spins 1 ms in Python holding the GIL (the REPL's evaluation in the same process),
    so that the saver can only get the GIL by a forced switch, which may land inside a
    measured command; with ``flat_out`` the next command follows at once (a server
    recording for many sessions as fast as it can: every moment the saver holds the GIL
    is taken from some command). ``<pace>_no_saver`` is the same with background saving
    off: the cost of the recording calls alone.
    """
    benchmark.group = f"S1 record one command, session of {length}"
    total = sscale.samples
    n_sessions, per = _plan(length, total, MAX_SESSIONS)
    path = _new_dir(stmp, f"fg-seglog-{pace}-{length}")
    pool = engine.SessionPool(max_size=n_sessions + 1)
    saver = not pace.endswith("_no_saver")
    gap = pace.removesuffix("_no_saver")
    if not saver:
        pm = engine.PersistenceManager(pool, path, save_interval=3600, save_after=1 << 40, register_atexit=False)
    else:
        pm = engine.PersistenceManager(pool, path, save_interval=SAVE_INTERVAL, register_atexit=False)
    try:
        sessions, loads = [], []
        for i in range(n_sessions):
            wl = sw.SessionWorkload(seed=1000 + i)
            s = pm.create_session(sw.session_name(i))
            for cmd in wl.commands(length):
                sw.record(s, cmd)
            sessions.append(s)
            loads.append(wl)
        pm.force_save()  # steady state: the saver has caught up
        sampler = Sampler(sessions, loads, per, total)
        spans = SaveSpans(pm)
        saves_before, steps_before = pm.saves, pm.save_steps
        late: list[int] = []

        def setup() -> tuple[tuple[Any, sw.Command], dict[str, Any]]:
            nxt = sampler.next()
            if gap == "busy":
                end = time.perf_counter_ns() + int(GAP_S * 1e9)
                while time.perf_counter_ns() < end:
                    pass
            elif gap == "idle":
                t = time.perf_counter_ns()
                time.sleep(GAP_S)
                late.append(time.perf_counter_ns() - t - int(GAP_S * 1e9))
            return nxt, {}

        gc.collect()
        gc.freeze()
        try:
            t_start = time.perf_counter()
            with GcSpans() as gcs:
                benchmark.pedantic(sampler.measure, setup=setup, rounds=total)
            elapsed = time.perf_counter() - t_start
        finally:
            gc.unfreeze()
        save_spans = list(spans.spans)  # not the shutdown's
        saves, steps = pm.saves - saves_before, pm.save_steps - steps_before
        lengths = sorted(s.event_count for s in sessions)
    finally:
        pm.shutdown()
    durs = sampler.samples
    lat = _latency_info(durs)
    n = max(1, len(durs))
    ov = set(_overlapping(save_spans, sampler.t0, durs))
    in_gc = set(_overlapping([(a, b) for a, b, _ in gcs.spans], sampler.t0, durs))
    blocked = {i for i, x in enumerate(sampler.blocked) if x}
    preempted = {i for i, x in enumerate(sampler.preempted) if x}
    clean = [d for i, d in enumerate(durs) if i not in blocked | preempted | in_gc]
    step_us = sorted((e - b) / 1000 for b, e in save_spans)
    gc_us = sorted((b - a) / 1000 for a, b, _ in gcs.spans)

    def sub(idx: set[int]) -> float | None:
        return _latency_info([durs[i] for i in idx])["p99_us"] if idx else None

    extra: dict[str, Any] = {
        "length": length,
        "pace": pace,
        "saver": saver,
        "sessions": n_sessions,
        "per_session": per,
        "switch_interval_s": switch_interval,
        "gap_us": GAP_S * 1e6 if gap != "flat_out" else 0,
        "save_interval_s": SAVE_INTERVAL if saver else None,
        "events_per_session": [lengths[0], lengths[-1]],
        "measure_s": round(elapsed, 2),
        "saves_during": saves,
        "save_steps_during": steps,
        "step_p50_us": round(pct(step_us, 50), 1) if step_us else None,
        "step_max_us": round(step_us[-1], 1) if step_us else None,
        "gc_passes": [sum(1 for *_, g in gcs.spans if g == gen) for gen in range(3)],
        "gc_max_us": round(gc_us[-1], 1) if gc_us else None,
        # where the slow commands come from
        "overlapped_step_frac": round(len(ov) / n, 3),
        "overlapped_step_p99_us": sub(ov),
        "blocked_frac": round(len(blocked) / n, 3),
        "blocked_p99_us": sub(blocked),
        "preempted_frac": round(len(preempted) / n, 3),
        "preempted_p99_us": sub(preempted),
        "gc_frac": round(len(in_gc) / n, 3),
        "gc_p99_us": sub(in_gc),
        "clean_p50_us": _latency_info(clean)["p50_us"] if clean else None,
        "clean_p99_us": _latency_info(clean)["p99_us"] if clean else None,
        "meets_p99_target": lat["p99_us"] <= TARGET_P99_US,
    }
    if late:
        lu = sorted(x / 1000 for x in late)
        extra["wake_late_p50_us"] = round(pct(lu, 50), 1)
        extra["wake_late_p99_us"] = round(pct(lu, 99), 1)
    control = _RESULTS.get(("foreground", f"seglog_{gap}_no_saver", str(length))) if saver else None
    if control:  # the same recording with no saver, earlier in this run
        for key in ("p50_us", "p99_us", "p999_us", "max_us"):
            extra[f"no_saver_{key}"] = control[key]
        extra["p99_vs_no_saver"] = round(lat["p99_us"] / control["p99_us"], 2)
        extra["meets_p99_vs_no_saver"] = extra["p99_vs_no_saver"] <= TARGET_P99_VS_NO_SAVER
    if saver:
        extra["meets_p999_target"] = lat["p999_us"] <= TARGET_P999_US
        extra["meets_max_target"] = lat["max_us"] <= TARGET_MAX_US
    for enc in ("json", "orjson"):
        leg = _RESULTS.get(("foreground", f"legacy_{enc}", str(length)))
        if leg:
            key = "ratio_vs_legacy" if enc == "json" else "ratio_vs_legacy_orjson"
            extra[key] = round(leg["p50_us"] / lat["p50_us"], 1)
            extra[key + "_p99"] = round(leg["p99_us"] / lat["p99_us"], 1)
    if length == 1000 and "ratio_vs_legacy" in extra:
        extra["meets_ratio_target"] = extra["ratio_vs_legacy"] >= TARGET_RATIO_AT_1000
    _info(benchmark, "session_foreground", "seglog", sscale, **lat, **extra)
    _RESULTS[("foreground", f"seglog_{pace}", str(length))] = {**lat, **extra}
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------- 2./3. a 1,000-command session
@dataclass
class LongSession:
    name: str
    seglog_path: str
    legacy_dir: str
    events: int
    checkpoints: int
    last_state: dict[str, Any]
    legacy_bytes: dict[str, int]


LONG_SEED = 4242


def _record_seglog(path: str, name: str, commands: list[sw.Command], interactive: bool) -> tuple[int, int]:
    """Record ``commands`` into a new store; interactive: save after every command (a REPL
    user is slower than the save interval), else back to back with background saves.
    Returns (events, checkpoints)."""
    pool = engine.SessionPool(max_size=4)
    pm = engine.PersistenceManager(pool, path, save_interval=SAVE_INTERVAL, register_atexit=False)
    try:
        s = pm.create_session(name)
        for cmd in commands:
            sw.record(s, cmd)
            if interactive:
                pm.save_session(s)
        return s.event_count, s.checkpoint_count
    finally:
        pm.shutdown()


@pytest.fixture(scope="module")
def long_commands() -> list[sw.Command]:
    """The 1,000 commands of benchmarks 2 and 3 (states share structure: cheap to keep)."""
    return list(sw.SessionWorkload(LONG_SEED).commands(LONG))


@pytest.fixture(scope="module")
def long_session(stmp: str, long_commands: list[sw.Command]) -> LongSession:
    name = "repl-long"
    seg = os.path.join(stmp, "long", "seglog")
    events, cps = _record_seglog(seg, name, long_commands, interactive=False)
    legacy_dir = os.path.join(stmp, "long", "legacy")
    lw = LegacyWriter(legacy_dir, name, encoder="orjson")  # the bytes of either encoder
    with lw.bulk():
        for cmd in long_commands:
            sw.record(lw, cmd)
    assert lw.index["eventCount"] == events
    return LongSession(name, seg, legacy_dir, events, cps, long_commands[-1].state, lw.bytes_on_disk())


@pytest.mark.parametrize("mode", ["interactive", "background"])
def test_bytes_on_disk(
    benchmark: Any, mode: str, sscale: Scale, stmp: str, long_session: LongSession, long_commands: list[sw.Command]
) -> None:
    """Store size after 1,000 commands and shutdown, vs the legacy .jsonl + .index.json of the
    same commands. The timing is the whole recording of the 1,000 commands, saves included."""
    benchmark.group = "S2 bytes on disk, 1,000 commands"
    built: list[tuple[str, tuple[int, int]]] = []
    n = 0

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        nonlocal n
        n += 1
        return (_new_dir(stmp, f"bytes-{mode}-{n}"),), {}

    def run(path: str) -> None:
        built.append((path, _record_seglog(path, long_session.name, long_commands, interactive=mode == "interactive")))

    benchmark.pedantic(run, setup=setup, rounds=1)
    path, (events, cps) = built[-1]
    assert events == long_session.events and cps == LONG
    with engine.open(path, readonly=True) as store:
        stats = store.stats()
        streams = {st.name.split("/")[0]: st.bytes for st in store.streams()}
    dir_bytes = _dir_bytes(path)
    legacy = long_session.legacy_bytes
    pct = 100 * dir_bytes / legacy["total"]
    _info(
        benchmark,
        "session_bytes",
        "seglog",
        sscale,
        mode=mode,
        commands=LONG,
        events=events,
        bytes=dir_bytes,
        bytes_on_disk_stats=stats.bytes_on_disk,
        stream_bytes=streams,
        legacy_bytes=legacy["total"],
        legacy_jsonl_bytes=legacy["jsonl"],
        legacy_index_bytes=legacy["index"],
        pct_of_legacy=round(pct, 2),
        meets_target=pct <= TARGET_BYTES_PCT,
    )
    for p, _ in built:
        shutil.rmtree(p, ignore_errors=True)


@pytest.mark.parametrize("impl", ["legacy_json", "seglog", "seglog_read_all"])
def test_load(benchmark: Any, impl: str, sscale: Scale, long_session: LongSession) -> None:
    """Loading the 1,000-command session. seglog: a fresh PersistenceManager (store open
    included) and ``load_session`` with a cold pool, which yields the session's metadata;
    ``seglog_read_all`` then also reads every event, the checkpoint list and the latest
    state (what the legacy parse gives). legacy_json: ``json`` parses the .jsonl line by
    line and the whole .index.json. Page cache warm; shutdown is untimed."""
    benchmark.group = "S3 load a 1,000-command session"
    ls = long_session
    if impl == "legacy_json":

        def target() -> None:
            events, index = load_legacy(ls.legacy_dir, ls.name)
            assert len(events) == ls.events + 1 and len(index["states"]) == ls.checkpoints

        benchmark.pedantic(target, rounds=sscale.load_rounds, warmup_rounds=1)
    else:
        managers: list[engine.PersistenceManager] = []

        def target() -> None:
            pm = engine.PersistenceManager(engine.SessionPool(max_size=100), ls.seglog_path, register_atexit=False)
            managers.append(pm)
            s = pm.load_session(ls.name)
            if impl == "seglog_read_all":
                events = pm.events(ls.name)
                cps = pm.checkpoints(ls.name)
                state = pm.get_state(ls.name, cps[-1]["stateId"])
                assert len(events) == ls.events and state == ls.last_state
            assert s.event_count == ls.events and s.checkpoint_count == ls.checkpoints

        def teardown() -> None:
            managers.pop().shutdown()

        try:
            benchmark.pedantic(target, teardown=teardown, rounds=max(sscale.load_rounds, 5), warmup_rounds=1)
        finally:
            for pm in managers:
                pm.shutdown()
    _info(
        benchmark, "session_load", impl, sscale, commands=LONG, events=ls.events, legacy_bytes=ls.legacy_bytes["total"]
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        median = stats.stats.median
        benchmark.extra_info["median_ms"] = round(median * 1000, 3)
        _RESULTS[("load", impl)] = {"median_s": median}
        leg = _RESULTS.get(("load", "legacy_json"))
        if impl != "legacy_json" and leg:
            benchmark.extra_info["ratio_vs_legacy"] = round(leg["median_s"] / median, 1)
            benchmark.extra_info["meets_target"] = median < leg["median_s"]


# ---------------------------------------------------------------- 4. pool memory
@pytest.mark.parametrize("duty", [0.5, 1.0], ids=["paced", "flat_out"])
def test_pool_memory(benchmark: Any, duty: float, sscale: Scale, stmp: str) -> None:
    """A fresh process records ``mem_commands`` commands into each of 100 sessions
    (round-robin, background saves) and reports its peak RSS with all of them pooled.
    Full: 1,000 commands each; small: 100 (same structure). ``paced``: recording takes
    half of the time (the saver keeps up); ``flat_out``: back to back, a stress in
    which the saver may fall behind (``max_pending_changes``). Timing: the whole child."""
    benchmark.group = "S4 memory, pool of 100 sessions"
    results: list[dict[str, Any]] = []
    n = 0

    def run() -> None:
        nonlocal n
        n += 1
        path = _new_dir(stmp, f"mem-{duty}-{n}")
        out = subprocess.run(
            [
                sys.executable,
                os.path.join(BENCH_DIR, "session_memory_child.py"),
                path,
                "--sessions",
                str(sscale.mem_sessions),
                "--commands",
                str(sscale.mem_commands),
                "--save-interval",
                str(SAVE_INTERVAL),
                "--duty",
                str(duty),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"memory child failed ({out.returncode}):\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        shutil.rmtree(path, ignore_errors=True)

    benchmark.pedantic(run, rounds=1)
    r = results[-1]
    _info(
        benchmark,
        "session_memory",
        "seglog" if duty < 1 else "seglog_flat_out",
        sscale,
        **r,
        meets_target=r["peak_rss_mb"] < TARGET_RSS_MB,
    )


# ---------------------------------------------------------------- summary
def summary(path: str) -> str:
    """A Markdown table of the session benchmarks in a pytest-benchmark JSON."""
    with open(path, "rb") as f:
        data = json.load(f)
    rows = ["| benchmark | impl | figures |", "|---|---|---|"]
    for b in data["benchmarks"]:
        x = b.get("extra_info", {})
        bench = x.get("bench", "")
        if not bench.startswith("session_"):
            continue
        if bench == "session_foreground":
            what = f"length {x['length']}" + (f", {x['pace']}" if "pace" in x else "")
            fig = f"p50 {x['p50_us']} µs, p99 {x['p99_us']} µs"
            if "p999_us" in x:
                fig += f", p99.9 {x['p999_us']} µs, max {x['max_us']} µs"
            fig += f" (n={x['samples']})"
            if "no_saver_p99_us" in x:
                fig += (
                    f"; no saver: p50 {x['no_saver_p50_us']}, p99 {x['no_saver_p99_us']}, p99.9 "
                    f"{x['no_saver_p999_us']}, max {x['no_saver_max_us']} µs; p99 {x['p99_vs_no_saver']}x"
                )
            if "ratio_vs_legacy" in x:
                fig += f", {x['ratio_vs_legacy']}x legacy_json, {x.get('ratio_vs_legacy_orjson')}x legacy_orjson"
            if "clean_p99_us" in x:
                fig += (
                    f"; p99 w/o blocked/preempted/gc {x['clean_p99_us']} µs; blocked {x['blocked_frac']:.1%}"
                    f" (p99 {x['blocked_p99_us']}), preempted {x['preempted_frac']:.1%},"
                    f" during a step of a save {x.get('overlapped_step_frac', 0):.1%}"
                )
        elif bench == "session_bytes":
            what = x["mode"]
            fig = f"{x['bytes']:,} B vs legacy {x['legacy_bytes']:,} B = {x['pct_of_legacy']}%"
        elif bench == "session_load":
            what = "load"
            fig = f"median {x.get('median_ms')} ms" + (
                f", {x['ratio_vs_legacy']}x faster than legacy" if "ratio_vs_legacy" in x else ""
            )
        else:
            what = f"{x['sessions']} sessions x {x['commands']} commands, duty {x['duty']}"
            fig = f"peak RSS {x['peak_rss_mb']} MB, max pending changes {x['max_pending_changes']:,}"
        rows.append(f"| {bench[8:]} {what} | {x.get('impl')} | {fig} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
