"""Profile seglog's hot paths on a small store (public API only).

    python bench/profile_paths.py [append|get|scan|durable|rss ...] [--events N] [--top K]

append   cProfile of append_batch (batches of 100, durability="process") and the
         msgpack packing every binary peer also pays
get      cProfile of random get() and the msgpack decode floor per event
scan     cProfile of list(scan()) of one stream vs orjson over its JSONL lines
durable  appends per fsync and time inside fdatasync, 1 vs 8 threads (power mode)
rss      resident file pages after random reads of an mmap'd file vs pread:
         on kernels with large page-cache folios one touch maps up to 2 MiB
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import msgpack
import workload

import engine


def _per(fn: Callable[[], Any], n: int, reps: int = 3) -> float:
    """Best-of-``reps`` microseconds per item for ``fn`` handling ``n`` items."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def _profile(fn: Callable[[], Any], top: int) -> None:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def _build(path: str, n: int) -> None:
    with engine.open(path, durability="process", segment_bytes=8 << 20) as store:
        for s, _f, evs in workload.batches(n):
            store.append_batch(workload.stream_name(s), evs)


def prof_append(tmp: str, n: int, top: int) -> None:
    batches = list(workload.batches(n))
    names = [workload.stream_name(i) for i in range(workload.N_STREAMS)]

    def fresh() -> engine.Store:
        path = os.path.join(tmp, "append")
        shutil.rmtree(path, ignore_errors=True)
        store = engine.open(path, durability="process")
        for nm in names:
            store.create_stream(nm)
        return store

    def run(store: engine.Store) -> Callable[[], None]:
        def go() -> None:
            for s, _f, evs in batches:
                store.append_batch(names[s], evs)

        return go

    times = []
    for _ in range(3):
        store = fresh()
        times.append(_per(run(store), n, reps=1))
        store.close()
    pack = msgpack.Packer(use_bin_type=True).pack
    floor = _per(lambda: [[pack(v) for v in evs] for _s, _f, evs in batches], n)
    print(f"append_batch: {min(times):.3f} us/event; msgpack pack alone: {floor:.3f} us/event")
    store = fresh()
    _profile(run(store), top)
    store.close()


def prof_get(tmp: str, n: int, top: int) -> None:
    path = os.path.join(tmp, "read")
    _build(path, n)
    per_stream = n // workload.N_STREAMS
    rng = random.Random(1)
    keys = [(workload.stream_name(rng.randrange(workload.N_STREAMS)), rng.randrange(per_stream)) for _ in range(50_000)]
    with engine.open(path) as store:
        get = store.get

        def run() -> None:
            for k, q in keys:
                get(k, q)

        one = msgpack.packb(workload.events(1, 0, 1)[0])
        unpack = msgpack.unpackb
        floor = _per(lambda: [unpack(one) for _ in range(50_000)], 50_000)
        print(f"get: {_per(run, len(keys)):.3f} us/get; msgpack.unpackb of one event: {floor:.3f} us")
        _profile(run, top)


def prof_scan(tmp: str, n: int, top: int) -> None:
    import orjson

    path = os.path.join(tmp, "read")
    if not os.path.isdir(path):
        _build(path, n)
    per_stream = n // workload.N_STREAMS
    evs = workload.stream_events(7, per_stream)
    jsonl = os.path.join(tmp, "s7.jsonl")
    with open(jsonl, "wb") as f:
        f.writelines(workload.json_line(e) for e in evs)
    name = workload.stream_name(7)
    loads = orjson.loads

    def parse() -> list[Any]:
        with open(jsonl, "rb") as f:
            return [loads(line) for line in f]

    with engine.open(path) as store:
        reps = 500
        t_seg = _per(lambda: [list(store.scan(name)) for _ in range(reps)], reps * per_stream)
        t_js = _per(lambda: [parse() for _ in range(reps)], reps * per_stream)
        packed = msgpack.packb(evs)
        t_mp = _per(lambda: [msgpack.unpackb(packed) for _ in range(reps)], reps * per_stream)
        print(
            f"scan: seglog {t_seg:.3f} us/event, JSONL+orjson {t_js:.3f} us/event, "
            f"msgpack.unpackb of the same events as one array {t_mp:.3f} us/event"
        )
        _profile(lambda: [list(store.scan(name)) for _ in range(reps)], top)


def prof_durable(tmp: str, n: int, top: int) -> None:
    from engine import committer

    real = os.fdatasync
    acc = {"t": 0.0, "n": 0}

    def timed(fd: int) -> None:
        t = time.perf_counter()
        real(fd)
        acc["t"] += time.perf_counter() - t
        acc["n"] += 1

    committer.os.fdatasync = timed
    evs = [e for _s, _f, b in workload.batches(2_000) for e in b]
    try:
        for threads, per in ((1, 400), (8, 200), (1, 400), (8, 200)):
            path = os.path.join(tmp, "durable")
            shutil.rmtree(path, ignore_errors=True)
            store = engine.open(path, durability="power")
            acc.update(t=0.0, n=0)

            def work(t: int, store: engine.Store = store, per: int = per) -> None:
                for i in range(per):
                    store.append(workload.stream_name(t), evs[(t * 97 + i) % len(evs)])

            ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            t0 = time.perf_counter()
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            dt = time.perf_counter() - t0
            store.close()
            k = threads * per
            print(
                f"{threads} thread(s): {k / dt:,.0f} events/s, {k / max(acc['n'], 1):.2f} events/fsync, "
                f"{acc['t'] / dt:.0%} of wall time in fdatasync ({acc['t'] / max(acc['n'], 1) * 1e6:.0f} us each)"
            )
    finally:
        committer.os.fdatasync = real


def prof_rss(tmp: str, n: int, top: int) -> None:
    import mmap

    path = os.path.join(tmp, "rss.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(64 << 20))

    def rss_file_kb() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssFile:"):
                    return int(line.split()[1])
        return 0

    fd = os.open(path, os.O_RDONLY)
    try:
        rng = random.Random(3)
        m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        before = rss_file_kb()
        for _ in range(10):
            m[rng.randrange(len(m))]
        print(f"mmap: 10 one-byte reads at random offsets of a 64 MiB file add {rss_file_kb() - before} KiB of RssFile")
        m.close()
        before = rss_file_kb()
        for _ in range(10):
            os.pread(fd, 200, rng.randrange(64 << 20))
        print(f"pread: 10 reads of 200 bytes add {rss_file_kb() - before} KiB of RssFile")
    finally:
        os.close(fd)


PATHS = {"append": prof_append, "get": prof_get, "scan": prof_scan, "durable": prof_durable, "rss": prof_rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", metavar="path", help=f"one of {', '.join(PATHS)} (default: all)")
    ap.add_argument("--events", type=int, default=200_000, help="events in the store (default 200,000)")
    ap.add_argument("--top", type=int, default=12, help="cProfile rows to print")
    args = ap.parse_args()
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        ap.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    tmp = tempfile.mkdtemp(prefix="seglog-prof-")
    try:
        for p in args.paths or PATHS:
            print(f"==== {p}")
            PATHS[p](tmp, args.events, args.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
