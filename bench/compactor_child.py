"""A compactor process for the compaction benchmarks (run by test_compactor_bench).

    python bench/compactor_child.py STORE [--interval S] [--everything] [--segment-bytes N]
                                          [--garbage-ratio R] [--max-rate MIB] [--passes N]
                                          [--profile OUT]

Runs ``engine.compact(STORE, **options)`` in a loop, as ``seglog compact STORE --watch``
does, sleeping ``--interval`` seconds between passes (0 is allowed here: back to back,
unthrottled). Prints one JSON line when it starts (``{"ready": ...}``) and one per pass
with the pass's report and its start and end on ``time.monotonic()`` (CLOCK_MONOTONIC,
the same clock in every process of the machine), so that the parent can line passes up
with its own samples. SIGTERM or SIGINT stop it after the pass in progress; the last
line is ``{"done": passes, ...}``. ``--profile OUT`` writes cProfile statistics of the
whole loop to OUT (``python -m pstats OUT``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import engine
from engine.errors import CompactorBusyError


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def loop(store: str, options: dict[str, Any], interval: float, passes: int, stop: threading.Event) -> dict[str, Any]:
    done = busy = 0
    totals = {"bytes_in": 0, "bytes_out": 0, "records_in": 0, "records_out": 0, "busy_s": 0.0}
    while not stop.is_set() and (passes <= 0 or done < passes):
        t0 = time.monotonic()
        try:
            report = engine.compact(store, **options)
        except CompactorBusyError:  # another compactor holds COMPACT.lock: try again soon
            busy += 1
            stop.wait(0.05)
            continue
        t1 = time.monotonic()
        done += 1
        totals["bytes_in"] += report.bytes_in
        totals["bytes_out"] += report.bytes_out
        totals["records_in"] += report.records_in
        totals["records_out"] += report.records_out
        totals["busy_s"] += t1 - t0
        _emit(
            {
                "pass": done,
                "t0": t0,
                "t1": t1,
                "duration_s": report.duration_s,
                "bytes_in": report.bytes_in,
                "bytes_out": report.bytes_out,
                "records_in": report.records_in,
                "records_out": report.records_out,
                "segments_in": len(report.segments_in),
                "segments_out": len(report.segments_out),
            }
        )
        if interval > 0:
            stop.wait(interval)
    return {"done": done, "busy_retries": busy, **totals}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between passes (default 0)")
    p.add_argument("--passes", type=int, default=0, help="stop after this many passes (default: until SIGTERM)")
    p.add_argument("--everything", action="store_true", help="rewrite every sealed segment at each pass")
    p.add_argument("--segment-bytes", type=int, help="size of the segments written (default: the compactor's)")
    p.add_argument("--garbage-ratio", type=float)
    p.add_argument("--max-rate", type=float, help="MiB/s of input (default: unthrottled)")
    p.add_argument("--profile", metavar="OUT", help="write cProfile statistics of the loop to OUT")
    args = p.parse_args(argv)
    options: dict[str, Any] = {}
    if args.everything:
        options["everything"] = True
    if args.segment_bytes:
        options["segment_bytes"] = args.segment_bytes
    if args.garbage_ratio is not None:
        options["garbage_ratio"] = args.garbage_ratio
    if args.max_rate is not None:
        options["max_rate_mib"] = args.max_rate
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _emit({"ready": time.monotonic(), "pid": os.getpid(), "options": options, "interval": args.interval})
    if args.profile:
        prof = cProfile.Profile()
        result = prof.runcall(loop, args.store, options, args.interval, args.passes, stop)
        prof.dump_stats(args.profile)
    else:
        result = loop(args.store, options, args.interval, args.passes, stop)
    _emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
