"""A realistic demo: REPL sessions saved through seglog, in a temporary directory.

Run with ``python -m engine.demo``. Several sessions record commands the way
the REPL does (an input, twenty steps, a result and a checkpoint with the
machine state; every third command an LLM call with a 2 KB receipt) while the
PersistenceManager saves them in the background. Sessions come and go as on a
session server: now and then one is forked, and one is deleted and replaced
by a new one. A compactor runs beside it as its own process
(``python -m engine compact STORE --watch``) and gives back the space of the
deleted sessions while they record. It prints the foreground cost per command
(p50, p99, p99.9, max) next to the same recording with no background saver
(a control run in the same process, first), events/s, bytes on disk at their
peak and at the end next to the live data, how fast the store reopens and
reads back, and the command that writes a session as legacy files (``compat``,
which the engine does not depend on).

As a server would once it has started, the demo freezes what it built before
recording (``gc.freeze()``): the cyclic garbage collector then no longer walks
those objects, and its full passes, which otherwise stop every thread for
10-20 ms here, take a few ms (``--no-freeze`` to see the difference).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .log import codec
from .session.instance import SessionInstance
from .session.persistence_manager import PersistenceManager
from .session.pool import SessionPool

log = logging.getLogger(__name__)


def initial_state(rng: random.Random) -> dict[str, Any]:
    """A machine state shaped like the REPL's (store entries, environment, budgets)."""
    natives = ["+", "-", "*", "/", "car", "cdr", "cons", "list", "map", "filter", "signal", "error"]
    entries: list[Any] = [
        [i, {"tag": "Native", "name": natives[i % len(natives)] + str(i), "arity": i % 4}] for i in range(180)
    ]
    return {
        "control": {"tag": "Val", "v": {"tag": "Unit"}},
        "envId": f"{rng.getrandbits(256):064x}",
        "storeEntries": entries,
        "storeNext": len(entries),
        "kont": [],
        "handlers": [],
        "ctxTable": {
            "frames": [[f"binding-{i}", i] for i in range(120)],
            "profile": "pragmatic",
            "budgets": {"maxEvalSteps": 500000, "maxToolCalls": 100},
        },
    }


def run_command(session: SessionInstance, state: dict[str, Any], n: int, rng: random.Random) -> None:
    """One REPL command: input, 20 steps, result, checkpoint (+ an LLM call every third)."""
    code = f"(define (f{n} x) (+ x {rng.randrange(1000)}))"
    session.input(code)
    for i in range(20):
        session.step(i % 3, f"(apply f{n} (list {i} {rng.randrange(10**6)}))")
    if n % 3 == 0:
        key = f"{rng.getrandbits(256):064x}"
        session.effect(1, "infer.op", f'["\\"Summarize step {n}\\")"]')
        session.llm_req(1, "mock-llm", f'"Summarize step {n}")', key)
        session.llm_resp(
            1,
            f"summary {n}",
            120,
            key,
            request={"op": "infer.op", "args": f"step {n}"},
            response={"content": "x" * 2000},
        )
        session.resume(1, f"summary {n}")
    session.result(f"f{n}")
    state["storeEntries"].append([state["storeNext"], {"tag": "Closure", "name": f"f{n}", "arity": 1}])
    state["storeNext"] += 1
    session.checkpoint(0, "manual", state)


def disk_bytes(path: str) -> int:
    total = 0
    for name in os.listdir(path):
        with contextlib.suppress(FileNotFoundError):  # the compactor removed it meanwhile
            total += os.path.getsize(os.path.join(path, name))
    return total


def start_compactor(path: str, interval: float) -> subprocess.Popen[str]:
    """``python -m engine compact STORE --watch``: a process of its own, as in production,
    at a lower priority (``nice 10``): background work, which a recording thread waking up
    (from a hand-off to the saver) should not wait behind for a CPU."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "compact", path, "--watch", "--interval", str(interval)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.nice(10),
    )


class GcTimer:
    """Counts the cyclic garbage collector's passes by generation and their longest one."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.longest_ns = 0
        self._start = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.passes[info["generation"]] += 1
            self.longest_ns = max(self.longest_ns, time.perf_counter_ns() - self._start)


def percentiles(costs_ns: list[int]) -> dict[str, float]:
    """p50, p99, p99.9, max and mean (us) of per-command costs in ns."""
    costs = sorted(costs_ns)
    q = len(costs)
    return {
        "p50_us": costs[q // 2] / 1000,
        "p99_us": costs[int(q * 0.99)] / 1000,
        "p999_us": costs[int(q * 0.999)] / 1000,
        "max_us": costs[-1] / 1000,
        "mean_us": statistics.fmean(costs) / 1000,
    }


def run(
    path: str,
    sessions: int,
    commands: int,
    churn_every: int = 4,
    compact: bool = True,
    saver: bool = True,
    freeze: bool = True,
    read_back: bool = True,
) -> dict[str, Any]:
    """Record ``commands`` commands into each of ``sessions`` sessions (round-robin), forking
    and replacing sessions as it goes, and report. ``saver`` False is the control: the
    same recording with no background saver (the manager then saves only the sources of
    forks, as it does with the saver, and everything at shutdown)."""
    rng = random.Random(7)
    pool = SessionPool(max_size=sessions * 2)
    saving: dict[str, Any] = {"save_interval": 0.1} if saver else {"save_interval": 3600, "save_after": 1 << 40}
    pm = PersistenceManager(
        pool,
        path,
        register_atexit=False,
        store_options={"segment_bytes": 1 << 20},  # small: a short demo seals many
        **saving,
    )
    compactor = start_compactor(path, 0.5) if compact else None
    states = [initial_state(rng) for _ in range(sessions)]
    insts = [pm.create_session(f"session-{i:03d}") for i in range(sessions)]
    costs: list[int] = []
    peak = forks = deleted = 0
    serial = sessions
    gc_timer = GcTimer()
    if freeze:  # what the server built before it records: not walked by the collector again
        gc.collect()
        gc.freeze()
    gc.callbacks.append(gc_timer)
    try:
        t0 = time.perf_counter()
        for n in range(commands):
            for inst, state in zip(insts, states, strict=True):
                c0 = time.perf_counter_ns()
                run_command(inst, state, n, rng)
                costs.append(time.perf_counter_ns() - c0)
            if n % churn_every == churn_every - 1:
                slot = (n // churn_every) % sessions
                if (n // churn_every) % 2:  # fork a session and go on in the fork; the source stays
                    fork = pm.fork(insts[slot].name, f"fork-{serial:04d}", insts[slot].event_count - 1)
                    forks += 1
                else:  # a session ends: delete it, a new one takes its place
                    pm.delete(insts[slot].name)
                    fork = pm.create_session(f"session-{serial:04d}")
                    states[slot] = initial_state(rng)
                    deleted += 1
                insts[slot] = fork
                serial += 1
                peak = max(peak, disk_bytes(path))
        record_s = time.perf_counter() - t0
        steps = pm.save_steps
    finally:
        gc.callbacks.remove(gc_timer)
        if freeze:
            gc.unfreeze()
        pm.shutdown()
    total_s = time.perf_counter() - t0
    passes = ""
    if compactor is not None:
        time.sleep(1.5 if read_back else 0)  # one more pass over what the last commands sealed
        compactor.send_signal(signal.SIGTERM)
        out, err = compactor.communicate(timeout=60)
        # Without the wait it may be stopped before it installed its handler (a control run).
        if compactor.returncode != 0 and (read_back or compactor.returncode != -signal.SIGTERM):
            raise RuntimeError(f"the compactor failed: {err.strip()}")
        passes = (out.strip().splitlines() or [""])[-1]
    events = sum(i.event_count for i in insts)
    result: dict[str, Any] = {
        "commands": sessions * commands,
        "events": events,
        "record_s": record_s,
        "total_s": total_s,
        **percentiles(costs),
        "peak": peak,
        "forks": forks,
        "deleted": deleted,
        "passes": passes,
        "save_steps": steps,
        "gc_passes": gc_timer.passes,
        "gc_longest_us": gc_timer.longest_ns / 1000,
    }
    if not read_back:
        return result
    end_bytes = disk_bytes(path)
    state_bytes = sum(len(codec.pack_value(s)) for s in states) * commands  # roughly, per checkpoint
    t1 = time.perf_counter()
    pm2 = PersistenceManager(SessionPool(), path, register_atexit=False)
    open_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    live = pm2.list_sessions()
    read = sum(len(pm2.events(m["name"])) for m in live)
    read_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    last = insts[-1].name
    state = pm2.get_state(last, pm2.checkpoints(last)[-1]["stateId"])
    state_s = time.perf_counter() - t3
    assert state == states[-1]
    stats = pm2.store.stats()
    pm2.shutdown()
    result.update(
        {
            "disk": end_bytes,
            "reclaimable": stats.reclaimable_bytes,
            "state_bytes": state_bytes,
            "open_s": open_s,
            "read": read,
            "read_s": read_s,
            "state_s": state_s,
            "live_sessions": len(live),
            "last": last,
        }
    )
    return result


def _cost_line(r: dict[str, Any]) -> str:
    return (
        f"p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, p99.9 {r['p999_us']:.0f} us, "
        f"max {r['max_us'] / 1000:.1f} ms"
    )


def _spread(runs: list[dict[str, Any]], key: str, scale: float = 1.0, unit: str = "us") -> str:
    values = sorted(r[key] / scale for r in runs)
    med = statistics.median(values)
    fmt = ".1f" if unit == "ms" else ".0f"
    if len(values) == 1:
        return f"{med:{fmt}} {unit}"
    return f"{med:{fmt}} {unit} ({values[0]:{fmt}}-{values[-1]:{fmt}})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="seglog demo: REPL sessions saved in the background, a compactor process beside them"
    )
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--commands", type=int, default=400)
    parser.add_argument("--no-compactor", action="store_true", help="record without the compactor process")
    parser.add_argument(
        "--no-saver", action="store_true", help="only the control: the same recording with no background saver"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="control and saving runs, alternately; the medians (and ranges) are printed",
    )
    parser.add_argument("--no-freeze", action="store_true", help="do not gc.freeze() what was built before recording")
    parser.add_argument("--keep", action="store_true", help="keep the store (to write its sessions as legacy files)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="seglog-demo-")
    path = os.path.join(tmp, "store")
    common = {"compact": not args.no_compactor, "freeze": not args.no_freeze}
    controls: list[dict[str, Any]] = []
    saving: list[dict[str, Any]] = []
    try:
        for i in range(max(args.rounds, 1)):
            last_round = i == max(args.rounds, 1) - 1
            cpath = os.path.join(tmp, f"control-{i}")
            controls.append(
                run(cpath, args.sessions, args.commands, saver=False, read_back=args.no_saver and last_round, **common)
            )
            if args.no_saver:
                if not last_round:
                    shutil.rmtree(cpath)
                path = cpath
                continue
            shutil.rmtree(cpath)
            if os.path.exists(path):
                shutil.rmtree(path)
            saving.append(run(path, args.sessions, args.commands, read_back=last_round, **common))
        r = (saving or controls)[-1]
        legacy = os.path.join(tmp, "legacy")
        mb = 1e6
        rounds = f" (median and range of {len(controls)} runs)" if len(controls) > 1 else ""
        saver_note = "saved in the background" if saving else "no background saver"
        lines = [
            f"store:          {path}{'' if args.keep else ' (removed at exit)'}",
            f"recorded:       {r['commands']:,.0f} commands, {r['events']:,.0f} events in {args.sessions} sessions "
            f"at a time, {r['record_s']:.2f} s ({r['events'] / r['record_s']:,.0f} events/s, {saver_note})",
            f"sessions:       {r['forks']} forked, {r['deleted']} deleted and replaced; {r['live_sessions']} live",
            f"per command:    (input, 20 steps, result, checkpoint; LLM call every third){rounds}",
        ]
        for label, runs in (("saving", saving), ("no saver", controls)):
            if not runs:
                continue
            if len(runs) == 1:
                figures = _cost_line(runs[0])
            else:
                figures = (
                    f"p50 {_spread(runs, 'p50_us')}, p99 {_spread(runs, 'p99_us')}, "
                    f"p99.9 {_spread(runs, 'p999_us')}, max {_spread(runs, 'max_us', 1000, 'ms')}"
                )
            gcs = runs[-1]
            lines.append(
                f"  {label + ':':16s}{figures}; GC passes {'/'.join(map(str, gcs['gc_passes']))} "
                f"(longest {gcs['gc_longest_us'] / 1000:.1f} ms)"
            )
        if saving:
            ratios = sorted(s["p99_us"] / c["p99_us"] for s, c in zip(saving, controls, strict=True))
            lines.append(
                f"  p99 saving / no saver: {statistics.median(ratios):.2f}x"
                + (f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else "")
                + f"; {r['save_steps']:,} save steps in the background"
            )
        lines += [
            f"shutdown:       all saved after {r['total_s']:.2f} s",
            f"on disk:        peak {r['peak'] / mb:,.1f} MB while recording, {r['disk'] / mb:,.1f} MB at the end, "
            f"{r['reclaimable'] / mb:,.1f} MB of it still reclaimable; ~{r['state_bytes'] / mb:,.0f} MB of "
            f"checkpoint states recorded",
            f"compactor:      {r['passes'] or 'not run (--no-compactor)'}",
            f"reopen:         {r['open_s'] * 1000:.1f} ms; read back {r['read']:,.0f} events in {r['read_s']:.2f} s; "
            f"latest state of a session in {r['state_s'] * 1000:.1f} ms",
            f"legacy files:   python -m compat materialize {path} {legacy} --session {r['last']}"
            f"{'' if args.keep else ' (with --keep)'}",
        ]
        print("\n".join(lines))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
