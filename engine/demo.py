"""A realistic demo: REPL sessions saved through seglog, in a temporary directory.

Run with ``python -m engine.demo``. Several sessions record commands the way
the REPL does (an input, twenty steps, a result and a checkpoint with the
machine state; every third command an LLM call with a 2 KB receipt) while the
PersistenceManager saves them in the background. It prints the foreground
cost per command, events/s, bytes on disk next to the size of the states
recorded, how fast the store reopens and reads back, and the command that
writes a session as legacy files (``compat``, which the engine does not
depend on).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
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
    entries: list[Any] = [[i, {"tag": "Native", "name": natives[i % len(natives)] + str(i), "arity": i % 4}]
                          for i in range(180)]
    return {
        "control": {"tag": "Val", "v": {"tag": "Unit"}},
        "envId": f"{rng.getrandbits(256):064x}",
        "storeEntries": entries,
        "storeNext": len(entries),
        "kont": [],
        "handlers": [],
        "ctxTable": {"frames": [[f"binding-{i}", i] for i in range(120)], "profile": "pragmatic",
                     "budgets": {"maxEvalSteps": 500000, "maxToolCalls": 100}},
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
        session.llm_resp(1, f"summary {n}", 120, key, request={"op": "infer.op", "args": f"step {n}"},
                         response={"content": "x" * 2000})
        session.resume(1, f"summary {n}")
    session.result(f"f{n}")
    state["storeEntries"].append([state["storeNext"], {"tag": "Closure", "name": f"f{n}", "arity": 1}])
    state["storeNext"] += 1
    session.checkpoint(0, "manual", state)


def run(path: str, sessions: int, commands: int) -> dict[str, float]:
    rng = random.Random(7)
    pool = SessionPool(max_size=sessions)
    pm = PersistenceManager(pool, path, save_interval=0.1, register_atexit=False)
    states = [initial_state(rng) for _ in range(sessions)]
    insts = [pm.create_session(f"session-{i:03d}") for i in range(sessions)]
    costs: list[int] = []
    t0 = time.perf_counter()
    for n in range(commands):
        for inst, state in zip(insts, states, strict=True):
            c0 = time.perf_counter_ns()
            run_command(inst, state, n, rng)
            costs.append(time.perf_counter_ns() - c0)
    record_s = time.perf_counter() - t0
    pm.shutdown()
    total_s = time.perf_counter() - t0
    events = sum(i.event_count for i in insts)
    state_bytes = sum(len(codec.pack_value(s)) for s in states) * commands  # roughly, per checkpoint
    disk = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    t1 = time.perf_counter()
    pm2 = PersistenceManager(SessionPool(), path, register_atexit=False)
    open_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    read = sum(len(pm2.events(m["name"])) for m in pm2.list_sessions())
    read_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    state = pm2.get_state("session-000", pm2.checkpoints("session-000")[-1]["stateId"])
    state_s = time.perf_counter() - t3
    assert state == states[0]
    pm2.shutdown()
    costs.sort()
    return {
        "commands": sessions * commands, "events": events, "record_s": record_s, "total_s": total_s,
        "p50_us": costs[len(costs) // 2] / 1000, "p99_us": costs[int(len(costs) * 0.99)] / 1000,
        "mean_us": statistics.fmean(costs) / 1000, "disk": disk, "state_bytes": state_bytes,
        "open_s": open_s, "read": read, "read_s": read_s, "state_s": state_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="seglog demo: REPL sessions saved in the background")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the store (to write its sessions as legacy files)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="seglog-demo-")
    path = os.path.join(tmp, "store")
    r = run(path, args.sessions, args.commands)
    legacy = os.path.join(tmp, "legacy")
    lines = [
        f"store:          {path}{'' if args.keep else ' (removed at exit)'}",
        f"recorded:       {r['commands']:,.0f} commands, {r['events']:,.0f} events in {args.sessions} sessions, "
        f"{r['record_s']:.2f} s ({r['events'] / r['record_s']:,.0f} events/s, saved in the background)",
        f"per command:    p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us (input, 20 steps, result, "
        f"checkpoint; LLM call every third)",
        f"shutdown:       all saved after {r['total_s']:.2f} s",
        f"on disk:        {r['disk'] / 1e6:,.2f} MB for ~{r['state_bytes'] / 1e6:,.0f} MB of checkpoint states "
        f"recorded ({r['disk'] / r['state_bytes']:.2%})",
        f"reopen:         {r['open_s'] * 1000:.1f} ms; read back {r['read']:,.0f} events in {r['read_s']:.2f} s; "
        f"latest state of a session in {r['state_s'] * 1000:.1f} ms",
        f"legacy files:   python -m compat materialize {path} {legacy} --session session-000"
        f"{'' if args.keep else ' (with --keep)'}",
    ]
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
