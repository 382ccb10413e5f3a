"""Memory of a session pool, measured in a fresh process (run by test_session_bench).

    python bench/session_memory_child.py DIR --sessions 100 --commands 1000

Records ``--commands`` commands into each of ``--sessions`` sessions, round-robin
(a server with that many live sessions), with the PersistenceManager saving in the
background; then, with every session still in the pool, reports RSS figures as one
JSON line on stdout. ``--duty`` is the share of the time spent recording (after each
round the process idles, so the saver gets the GIL); at 1 the sessions record flat
out and the saver may fall behind, which shows as ``max_pending_changes``.

``ru_maxrss`` survives ``exec`` (a child exec'd from a big pytest process would start
at the parent's peak), so the work runs in a fork made before anything big is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from typing import Any


def status_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import session_workload as w

    import engine

    at_start = maxrss_mb()
    pool = engine.SessionPool(max_size=args.sessions)
    pm = engine.PersistenceManager(pool, args.dir, save_interval=args.save_interval, register_atexit=False)
    sessions = [pm.create_session(w.session_name(i)) for i in range(args.sessions)]
    loads = [w.SessionWorkload(seed=i) for i in range(args.sessions)]
    # The workload's own memory (a current state per session) is counted from here.
    first = [wl.next() for wl in loads]
    baseline = status_mb()
    t0 = time.perf_counter()
    events = 0
    max_pending = 0
    peak_before_save = 0.0
    for k in range(args.commands):
        r0 = time.perf_counter()
        for i, (s, wl) in enumerate(zip(sessions, loads, strict=True)):
            cmd = first[i] if k == 0 else wl.next()
            w.record(s, cmd)
            events += cmd.n_events
        if k == 0:
            first = []
        max_pending = max(max_pending, sum(s.pending_changes for s in sessions))
        if args.duty < 1:  # idle so that recording takes ``duty`` of the wall time
            time.sleep((time.perf_counter() - r0) * (1 - args.duty) / args.duty)
    peak_before_save = maxrss_mb()
    pending_at_end = sum(s.pending_changes for s in sessions)
    record_s = time.perf_counter() - t0
    pm.force_save()
    in_pool = status_mb()
    pooled = len(pool)
    assert pooled == args.sessions, pooled
    assert all(s.event_count == events // args.sessions for s in sessions)
    disk = pm.store.stats().bytes_on_disk
    saves = pm.saves
    t1 = time.perf_counter()
    pm.shutdown()
    return {
        "peak_rss_mb": maxrss_mb(),
        "rss_at_start_mb": at_start,
        "baseline": baseline,
        "in_pool": in_pool,
        "sessions": args.sessions,
        "commands": args.commands,
        "events": events,
        "pooled": pooled,
        "duty": args.duty,
        "max_pending_changes": max_pending,
        "pending_at_end": pending_at_end,
        "peak_rss_before_force_save_mb": peak_before_save,
        "record_s": round(record_s, 3),
        "shutdown_s": round(time.perf_counter() - t1, 3),
        "saves": saves,
        "bytes_on_disk": disk,
        "engine": os.path.dirname(engine.__file__),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--save-interval", type=float, default=0.1)
    ap.add_argument(
        "--duty",
        type=float,
        default=0.5,
        help="fraction of the time spent recording (the rest idle, one sleep per round); 1 = flat out",
    )
    args = ap.parse_args()
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    try:
        out = run(args)
    except BaseException as exc:  # report, then leave the fork without running the parent's exit path
        traceback.print_exc()
        sys.stderr.write(f"memory child failed: {exc!r}\n")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
