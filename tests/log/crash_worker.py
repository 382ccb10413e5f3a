"""Child process of the crash tests, and the workload both sides agree on.

Run as ``python crash_worker.py CONFIG.json``. The worker opens a store and
runs a deterministic *plan* of operations on several streams until it is
killed (or until ``max_ops`` operations are done). After each call into the
store returns it appends one line to the ack file::

    R <monotonic time>                      the store is open
    A <stream index> <op index> <time>      op <op index> of that stream returned
    D <time>                                max_ops reached (see "after")

The plan of a stream is a pure function of (seed, stream name), and so is
every value written (:func:`event_value`, :func:`blob_value`), so the parent
can recompute exactly what a store that executed the first k ops of each
stream must contain.

Errors the worker detects itself (a seq it did not expect, an exception in a
writer thread) are written to stderr as ``WORKER-ERROR ...`` and the worker
exits with a non-zero status, which the parent reports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

BLOB_KEYS = ("k0", "k1", "k2")


class Op(NamedTuple):
    index: int  # position in the stream's plan
    kind: str  # "one" (append), "batch" (append_batch) or "blob" (put_blob)
    seq: int  # seq of the first event it appends (the stream's next_seq before the op)
    n: int  # events it appends
    key: str  # blob key ("" for events)


def plan(seed: int, stream: str) -> Iterator[Op]:
    """The endless, deterministic sequence of operations of one stream."""
    rng = random.Random(f"{seed}/{stream}")
    seq = 0
    i = 0
    while True:
        r = rng.random()
        if r < 0.12:
            yield Op(i, "blob", seq, 0, BLOB_KEYS[rng.randrange(len(BLOB_KEYS))])
        elif r < 0.40:
            n = rng.randint(2, 12)
            yield Op(i, "batch", seq, n, "")
            seq += n
        else:
            yield Op(i, "one", seq, 1, "")
            seq += 1
        i += 1


def event_value(stream: str, seq: int) -> Any:
    """The value of event ``seq`` of ``stream``: varied types and sizes, some
    large and compressible (stored as lz4), some incompressible bytes."""
    h = zlib.crc32(f"{stream}/{seq}".encode("utf-8", "surrogatepass"))
    kind = h % 16
    if kind == 0:
        body: Any = f"{stream}:{seq};" * (60 + h % 50)  # ~1 KiB, compresses well
    elif kind == 1:
        body = random.Random(h).randbytes(200 + h % 300)  # incompressible
    elif kind == 2:
        body = ["nested", {"n": h, "f": h / 7.0, "neg": -h}, [seq, None, True, False]]
    elif kind == 3:
        body = "half a pair \ud83d"  # lone surrogate, must round-trip
    else:
        body = "x" * (h % 64)
    return {"s": stream, "q": seq, "h": h, "b": body}


def blob_value(stream: str, key: str, version: int) -> Any:
    h = zlib.crc32(f"{stream}/{key}/{version}".encode("utf-8", "surrogatepass"))
    if h % 3 == 0:
        return {"k": key, "v": version, "big": f"{key}={version}," * (100 + h % 100)}
    return {"k": key, "v": version, "h": h}


def state_after(seed: int, stream: str, k: int) -> tuple[int, dict[str, int]]:
    """(next_seq, {blob key: version}) of a stream after the first ``k`` ops."""
    seq = 0
    blobs: dict[str, int] = {}
    for op in plan(seed, stream):
        if op.index >= k:
            break
        if op.kind == "blob":
            blobs[op.key] = op.index
        else:
            seq = op.seq + op.n
    return seq, blobs


def apply_op(store: Any, stream: str, op: Op) -> None:
    """Execute ``op`` on ``store``; raise AssertionError if the store disagrees."""
    if op.kind == "one":
        got = store.append(stream, event_value(stream, op.seq))
    elif op.kind == "batch":
        got = store.append_batch(stream, [event_value(stream, q) for q in range(op.seq, op.seq + op.n)])
    else:
        store.put_blob(stream, op.key, blob_value(stream, op.key, op.index))
        return
    if got != op.seq:
        raise AssertionError(f"{op.kind} on {stream!r} returned seq {got}, the plan expects {op.seq}")


# --------------------------------------------------------------- crash points
def _fire() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def install_crashpoint(target: str, nth: int, when: str) -> None:
    """Make the process SIGKILL itself ``when`` ("before"/"after") the ``nth``
    call of ``target`` ("fileio.rename", "LogSegment.create", ...)."""
    import engine.log.active_index
    import engine.log.fileio
    import engine.log.manifest
    import engine.log.sealed_index
    import engine.log.segment

    owners: dict[str, Any] = {
        "fileio": engine.log.fileio,
        "LogSegment": engine.log.segment.LogSegment,
        "ActiveIndexFile": engine.log.active_index.ActiveIndexFile,
        "SealedIndex": engine.log.sealed_index.SealedIndex,
        "Manifest": engine.log.manifest.Manifest,
    }
    owner_name, name = target.split(".")
    owner = owners[owner_name]
    raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    is_cm = isinstance(raw, classmethod)
    is_sm = isinstance(raw, staticmethod)
    func = raw.__func__ if (is_cm or is_sm) else raw
    lock = threading.Lock()
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls[0] += 1
            hit = calls[0] == nth
        if hit and when == "before":
            _fire()
        result = func(*args, **kwargs)
        if hit and when == "after":
            _fire()
        return result

    if is_cm:
        setattr(owner, name, classmethod(wrapper))
    elif is_sm:
        setattr(owner, name, staticmethod(wrapper))
    else:
        setattr(owner, name, wrapper)


# ------------------------------------------------------------------- worker
class Acker:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, f"{text} {time.monotonic():.6f}\n".encode())


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"WORKER-ERROR {message}\n")
    sys.stderr.flush()
    os._exit(code)


def main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="engine-log %(message)s")
    import engine

    role = cfg.get("role", "write")
    acker = Acker(cfg["ack"])
    path = cfg["path"]
    open_opts = {
        "durability": cfg["mode"],
        "segment_bytes": cfg.get("segment_bytes", 64 * 1024),
        "flush_interval": cfg.get("flush_interval", 0.2),
    }
    if "buffer_bytes" in cfg:
        open_opts["buffer_bytes"] = cfg["buffer_bytes"]

    if role == "try-open":
        t0 = time.monotonic()
        try:
            store = engine.open(path, **open_opts)
        except engine.StoreLockedError as exc:
            acker.line(f"LOCKED {time.monotonic() - t0:.6f} {json.dumps(str(exc))}")
        else:
            store.close()
            acker.line("OPENED")
        return

    crash = cfg.get("crash")
    if crash and crash.get("armed_before_open"):
        install_crashpoint(crash["target"], crash["nth"], crash["when"])
    store = engine.open(path, **open_opts)
    if crash and not crash.get("armed_before_open"):
        install_crashpoint(crash["target"], crash["nth"], crash["when"])

    seed = cfg["seed"]
    streams: list[str] = cfg["streams"]
    plans: list[Iterator[Op]] = []
    for si, name in enumerate(streams):
        it = plan(seed, name)
        k = cfg["start"][si]
        expected_seq = 0
        for _ in range(k):
            op = next(it)
            expected_seq = op.seq + op.n
        actual = store.next_seq(name) if store.has_stream(name) else 0
        if actual != expected_seq:
            fail(f"stream {name!r} has next_seq {actual} at start, plan position {k} expects {expected_seq}", 5)
        plans.append(it)
    acker.line("R")

    threads = max(1, int(cfg.get("threads", 1)))
    pace = float(cfg.get("pace", 0.0))
    max_ops = cfg.get("max_ops")
    budget = [max_ops if max_ops is not None else -1]
    budget_lock = threading.Lock()

    def take() -> bool:
        if max_ops is None:
            return True
        with budget_lock:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            return True

    def writer(t: int) -> None:
        mine = [si for si in range(len(streams)) if si % threads == t]
        rng = random.Random(f"{seed}/thread/{t}/{os.getpid()}")
        try:
            while mine and take():
                si = rng.choice(mine)
                op = next(plans[si])
                apply_op(store, streams[si], op)
                acker.line(f"A {si} {op.index}")
                if pace:
                    time.sleep(pace)
        except BaseException:
            fail("writer thread died:\n" + traceback.format_exc(), 4)

    workers = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    after = cfg.get("after", "close")
    if after == "hold":
        # Hand everything to the OS, then keep the store (and its lock) open
        # with a few more ops that stay in the process (relaxed) until killed.
        store.flush()
        acker.line("D")
        for _ in range(int(cfg.get("unflushed_ops", 0))):
            si = random.randrange(len(streams))
            op = next(plans[si])
            apply_op(store, streams[si], op)
            acker.line(f"U {si} {op.index}")
        acker.line("H")
        while True:
            time.sleep(3600)
    store.close()
    acker.line("D")


if __name__ == "__main__":
    main(sys.argv[1])
