"""A realistic demo: REPL-like sessions written into a store in a temporary directory.

Run with ``python -m engine.demo``. It records sessions the way the REPL does
(input, steps, result, checkpoints with states, LLM calls with receipts),
then prints write throughput, bytes on disk, and how fast the store reopens
and reads back.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from typing import Any

from .store import open as open_store

log = logging.getLogger(__name__)


def _events_of_command(rng: random.Random, seq: int, ts: int, n: int) -> list[dict[str, Any]]:
    code = f"(define (f{n} x) (+ x {rng.randrange(1000)}))"
    events: list[dict[str, Any]] = [{"seq": seq, "ts": ts, "type": "input", "code": code}]
    for i in range(20):
        events.append({"seq": seq + 1 + i, "ts": ts + i, "type": "step", "d": i % 3,
                       "ctrl": f"(apply f{n} (list {i} {rng.randrange(10**6)}))"})
    base = seq + 21
    events.append({"seq": base, "ts": ts + 21, "type": "result", "value": f"f{n}"})
    events.append({"seq": base + 1, "ts": ts + 22, "type": "checkpoint", "d": 0,
                   "reason": "manual", "stateId": f"state-{base + 1}"})
    return events


def run(sessions: int, commands: int, path: str) -> dict[str, float]:
    rng = random.Random(7)
    state: dict[str, Any] = {"storeEntries": [[i, {"tag": "Native", "name": f"n{i}", "arity": i % 4}]
                                              for i in range(300)], "storeNext": 300}
    events = 0
    t0 = time.perf_counter()
    with open_store(path) as store:
        seqs = dict.fromkeys(range(sessions), 0)
        for n in range(commands):
            for s in range(sessions):
                name = f"session-{s:04d}"
                batch = _events_of_command(rng, seqs[s], 1795502436190 + n * 100, n)
                store.append_batch(name, batch)
                seqs[s] += len(batch)
                state["storeNext"] = 300 + n
                store.put_blob(name, batch[-1]["stateId"], state)
                events += len(batch)
        store.sync()
        write_s = time.perf_counter() - t0
        disk = store.stats().bytes_on_disk
    t1 = time.perf_counter()
    with open_store(path, readonly=True) as store:
        open_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        read = sum(1 for info in store.streams() for _ in store.scan(info.name))
        scan_s = time.perf_counter() - t2
    return {"events": events, "write_s": write_s, "disk": disk, "open_s": open_s,
            "read": read, "scan_s": scan_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the store directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="seglog-demo-")
    path = os.path.join(tmp, "store")
    r = run(args.sessions, args.commands, path)
    out = [
        f"store:        {path}{'' if args.keep else ' (removed)'}",
        f"wrote:        {r['events']:,.0f} events + {args.sessions * args.commands:,} states "
        f"in {args.sessions} sessions, {r['write_s']:.2f} s ({r['events'] / r['write_s']:,.0f} events/s)",
        f"on disk:      {r['disk'] / 1e6:,.1f} MB",
        f"reopen:       {r['open_s'] * 1000:.1f} ms",
        f"read back:    {r['read']:,.0f} events in {r['scan_s']:.2f} s ({r['read'] / r['scan_s']:,.0f} events/s)",
    ]
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
