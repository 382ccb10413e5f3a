"""Child process of the power-loss campaign (test_power_loss.py), and the
workload both sides agree on.

Run as ``python power_worker.py CONFIG_JSON``. The worker installs a
:class:`faultfs.FaultFS` on the store's parent directory, opens the store
(creating it, or recovering what the previous power cut left), and appends from
a few threads to several streams, each stream written by one thread following a
deterministic plan. At the ``cut_at``-th fileio call (and not before
``min_elapsed`` seconds after the store opened) it cuts the power: the calling
thread rewrites the files to what the cut leaves, every other fileio call
blocks, and the process SIGKILLs itself.

Lines on stdout, each written once the call it reports has returned::

    R <time>                            the store is open
    A <stream index> <op index> <time>  op <op index> of that stream returned
    C <time> <where> <call number>      the power is cut now, in engine.open
                                        creating the store ("create") or
                                        opening it ("open"), or after: in a
                                        roll, the background flush, a group
                                        commit fsync ("sync") or an append

``<time>`` is ``time.monotonic()``. Problems the worker detects itself go to
stderr as ``WORKER-ERROR ...`` with a non-zero exit.
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
STREAMS = ("a", "session/1", "λ-2", "s 3", "s4")


class Op(NamedTuple):
    i: int  # position in the stream's plan
    kind: str  # "one" (append), "batch" (append_batch) or "blob" (put_blob)
    seq: int  # the stream's next_seq before the op
    n: int  # events the op appends
    key: str  # the blob key ("" for events)


def plan(seed: int, stream: str) -> Iterator[Op]:
    """The endless, deterministic sequence of operations on one stream."""
    rng = random.Random(f"power/{seed}/{stream}")
    seq = 0
    for i in range(1 << 62):
        r = rng.random()
        if r < 0.15:
            yield Op(i, "blob", seq, 0, rng.choice(BLOB_KEYS))
        elif r < 0.40:
            n = rng.randint(2, 9)
            yield Op(i, "batch", seq, n, "")
            seq += n
        else:
            yield Op(i, "one", seq, 1, "")
            seq += 1


def event_value(stream: str, seq: int) -> Any:
    """Event ``seq`` of ``stream``: mostly small, some over a sector (512 bytes)
    long, some large and compressible (stored lz4-compressed), some random bytes."""
    h = zlib.crc32(f"{stream}/{seq}".encode())
    kind = h % 10
    if kind == 0:
        body: Any = f"{stream}#{seq} " * (80 + h % 60)  # 1-2 KiB, compresses well
    elif kind == 1:
        body = random.Random(h).randbytes(300 + h % 700)
    elif kind == 2:
        body = ["list", {"h": h, "f": h / 3.0}, [seq, None, True]]
    else:
        body = "y" * (h % 120)
    return {"s": stream, "q": seq, "b": body}


def blob_value(stream: str, key: str, version: int) -> Any:
    h = zlib.crc32(f"{stream}/{key}/{version}".encode())
    if h % 4 == 0:
        return {"k": key, "v": version, "big": f"{key}:{version};" * (150 + h % 150)}
    return {"k": key, "v": version, "h": h}


def state_after(seed: int, stream: str, k: int) -> tuple[int, dict[str, int]]:
    """(next_seq, {blob key: version}) of a stream after the first ``k`` ops."""
    seq, blobs = 0, {}
    for op in plan(seed, stream):
        if op.i >= k:
            break
        if op.kind == "blob":
            blobs[op.key] = op.i
        else:
            seq = op.seq + op.n
    return seq, blobs


def apply_op(store: Any, stream: str, op: Op) -> None:
    """Run ``op``; raise AssertionError when the store hands out another seq."""
    if op.kind == "blob":
        store.put_blob(stream, op.key, blob_value(stream, op.key, op.i))
        return
    if op.kind == "one":
        got = store.append(stream, event_value(stream, op.seq))
    else:
        got = store.append_batch(stream, [event_value(stream, q) for q in range(op.seq, op.seq + op.n)])
    if got != op.seq:
        raise AssertionError(f"{op.kind} on {stream!r} got seq {got}, the plan expects {op.seq}")


# ------------------------------------------------------------------ worker
def say(text: str) -> None:
    os.write(1, f"{text}\n".encode())


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"WORKER-ERROR {message}\n")
    sys.stderr.flush()
    os._exit(code)


#: Functions of the engine on the cutting thread's stack, and what they tell of the cut.
_PLACES = (("_roll", "roll"), ("_background_flush", "flush"), ("_sync", "sync"))


def where(frame: Any) -> str:
    """What the engine was doing (after open) in the thread whose stack ``frame`` is on."""
    names = set()
    while frame is not None:
        if os.path.basename(frame.f_code.co_filename) != "faultfs.py":
            names.add(frame.f_code.co_name)
        frame = frame.f_back
    return next((label for name, label in _PLACES if name in names), "write")


def main(cfg: dict[str, Any]) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="engine-log %(message)s")
    from faultfs import FaultFS

    import engine

    seed: int = cfg["seed"]
    streams: list[str] = cfg["streams"]
    cut_at: int = cfg["cut_at"]
    min_elapsed: float = cfg.get("min_elapsed", 0.0)
    cut_rng = random.Random(cfg["cut_seed"])
    ready = [float("inf") if min_elapsed else 0.0]
    opening = [True]
    manifest = os.path.join(cfg["path"], "MANIFEST")

    def hook(name: str, n: int) -> None:
        if n < cut_at or time.monotonic() < ready[0] + min_elapsed or fs.is_cut:
            return
        with cut_lock:
            if fs.is_cut:
                return
            t = time.monotonic()
            in_open = "open" if os.path.exists(manifest) else "create"
            place = in_open if opening[0] else where(sys._getframe(1))
            fs.power_cut(tear=cfg["tear"], rng=cut_rng, garbage=cfg["garbage"])
            say(f"C {t:.6f} {place} {n}")
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # not reached

    cut_lock = threading.Lock()
    fs = FaultFS(cfg["root"], hook=hook, after_cut="block", real_sync=cfg.get("real_sync", True))
    fs.install()
    store = engine.open(
        cfg["path"], durability=cfg["mode"], segment_bytes=cfg["segment_bytes"], flush_interval=cfg["flush_interval"]
    )
    opening[0] = False
    plans = []
    for name, k in zip(streams, cfg["start"], strict=True):
        it = plan(seed, name)
        for _ in range(k):
            next(it)
        want = state_after(seed, name, k)[0]
        have = store.next_seq(name) if store.has_stream(name) else 0
        if have != want:
            fail(f"stream {name!r} has next_seq {have} when the worker starts, plan position {k} expects {want}", 5)
        plans.append(it)
    ready[0] = time.monotonic()
    say(f"R {ready[0]:.6f}")

    threads = cfg["threads"]
    pace = cfg.get("pace", 0.0)

    def writer(t: int) -> None:
        mine = [si for si in range(len(streams)) if si % threads == t]
        rng = random.Random(f"{seed}/{t}/{os.getpid()}")
        try:
            while True:
                si = rng.choice(mine)
                op = next(plans[si])
                apply_op(store, streams[si], op)
                say(f"A {si} {op.i} {time.monotonic():.6f}")
                if pace:
                    time.sleep(pace)
        except BaseException:
            fail("writer thread died:\n" + traceback.format_exc(), 4)

    for t in range(threads):
        threading.Thread(target=writer, args=(t,), daemon=True).start()
    time.sleep(cfg.get("timeout", 30.0))
    fail(f"no power cut within {cfg.get('timeout', 30.0)}s ({fs.count} fileio calls, cut_at {cut_at})", 6)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
