"""Child processes of the soak test (test_soak.py).

``python soak_worker.py write CONFIG_JSON``
    A sessions-like writer: sessions are created (some under a name a dropped
    session had: a new generation), get commands (an input, a batch of steps,
    a result), checkpoints (the ``state`` blob, overwritten each time) and
    receipts (``receipt-0..2``, overwritten), and are dropped. It keeps the
    model of what the store must hold and, when its time is up (or at
    SIGTERM), closes the store and writes the model to ``model`` (JSON).
    Lines on stdout: ``R`` (open), ``L <time> <live bytes> <written bytes>
    <ops>`` every quarter second (estimates of the bytes of the live records
    and of every record written so far: msgpack size plus the record
    header), ``D <ops>`` at the end.
``python soak_worker.py read CONFIG_JSON``
    A follower: ``engine.open(readonly=True)`` and ``refresh()`` in a loop; every
    view must be consistent (:func:`check_view`). SIGTERM ends it: ``STATS
    <refreshes> <events read>`` on stdout, exit 0.

Every value says where it belongs (stream, generation, seq or key) and
carries a checksum of the rest, so a follower can check what it reads
without the writer's model. Problems go to stderr as ``WORKER-ERROR ...``
with a non-zero exit.
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
from typing import Any

RECORD_HEADER = 32
REUSED_NAMES = ("scratch-0", "scratch-1", "scratch-2")


def seal(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with ``h``, a checksum of everything else in it."""
    value["h"] = zlib.crc32(json.dumps(value, sort_keys=True).encode())
    return value


def sealed_ok(value: Any) -> bool:
    if not isinstance(value, dict) or "h" not in value:
        return False
    rest = {k: v for k, v in value.items() if k != "h"}
    return bool(value["h"] == zlib.crc32(json.dumps(rest, sort_keys=True).encode()))


def say(text: str) -> None:
    os.write(1, f"{text}\n".encode())


def fail(message: str, code: int = 4) -> None:
    sys.stderr.write(f"WORKER-ERROR {message}\n")
    sys.stderr.flush()
    os._exit(code)


# ------------------------------------------------------------------- writer
class Writer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import msgpack

        import engine

        self.packb = msgpack.packb
        self.rng = random.Random(cfg["seed"])
        self.store = engine.open(
            cfg["path"],
            durability="process",
            segment_bytes=cfg["segment_bytes"],
            flush_interval=cfg.get("flush_interval", 0.2),
        )
        #: name -> {"gen", "events", "records" (events per record), "blobs", "bytes" (estimate)}
        self.model: dict[str, dict[str, Any]] = {}
        self.gens: dict[str, int] = {}
        self.sessions = 0
        self.ops = 0
        self.versions = 0
        self.live_bytes = 0
        self.written = 0  # bytes of every record written (the same estimate)

    def size(self, payload: Any) -> int:
        return RECORD_HEADER + len(self.packb(payload))

    def event(self, m: dict[str, Any], name: str, kind: str, offset: int = 0) -> dict[str, Any]:
        """Event ``offset`` of the next record of session ``name``."""
        rng = self.rng
        q = len(m["events"]) + offset
        if kind == "input":
            text = (
                "("
                + " ".join(
                    rng.choice(["define", "let", "+", "car", "x", "lambda", "1", "2"])
                    for _ in range(rng.randint(2, 30))
                )
                + ")"
            )
        elif kind == "step":
            text = f"eval {rng.randrange(10**6)} " + "." * rng.randint(0, 200)
        else:
            text = str(rng.random()) * rng.randint(1, 8)
        return seal({"type": kind, "s": name, "g": m["gen"], "q": q, "text": text})

    def append(self, name: str, values: list[dict[str, Any]]) -> None:
        m = self.model[name]
        first = self.store.append_batch(name, values)
        if first != len(m["events"]):
            fail(f"append_batch on {name!r} returned seq {first}, the model expects {len(m['events'])}")
        m["events"].extend(values)
        m["records"].append(len(values))
        n = self.size(values)
        m["bytes"] += n
        self.live_bytes += n
        self.written += n

    def put(self, name: str, key: str, body: str) -> None:
        m = self.model[name]
        self.versions += 1
        value = seal({"s": name, "g": m["gen"], "k": key, "v": self.versions, "body": body})
        self.store.put_blob(name, key, value)
        old = m["blobs"].get(key)
        m["blobs"][key] = value
        n = self.size(value) + len(key) + 2
        self.written += n
        if old is not None:
            n -= self.size(old) + len(key) + 2
        m["bytes"] += n
        self.live_bytes += n

    def new_session(self) -> None:
        names = [n for n in REUSED_NAMES if n not in self.model]
        if names and self.rng.random() < 0.3:
            name = self.rng.choice(names)
        else:
            self.sessions += 1
            name = f"session-{self.sessions}"
        gen = self.gens[name] = self.gens.get(name, -1) + 1
        m = self.model[name] = {
            "gen": gen,
            "events": [],
            "records": [],
            "blobs": {},
            "bytes": RECORD_HEADER + len(name),
        }
        self.live_bytes += m["bytes"]
        self.written += m["bytes"]
        self.append(name, [self.event(m, name, "input")])

    def command(self, name: str) -> None:
        m = self.model[name]
        rng = self.rng
        self.append(name, [self.event(m, name, "input")])
        self.append(name, [self.event(m, name, "step", i) for i in range(rng.randint(1, 12))])
        self.append(name, [self.event(m, name, "result")])
        if rng.random() < 0.3:  # a checkpoint: the machine state, overwritten
            self.put(name, "state", "".join(rng.choice("abcdefgh ()") for _ in range(rng.randint(500, 4000))))
        if rng.random() < 0.15:  # an LLM receipt, one of three slots
            self.put(name, f"receipt-{rng.randrange(3)}", f"receipt {rng.random()} " * rng.randint(20, 120))

    def drop(self, name: str) -> None:
        self.store.drop_stream(name)
        self.live_bytes -= self.model.pop(name)["bytes"]

    def step(self) -> None:
        rng = self.rng
        live = sorted(self.model)
        r = rng.random()
        if len(live) < 3 or (r < 0.04 and len(live) < 8):
            self.new_session()
        elif r < 0.07 and len(live) > 3:
            self.drop(rng.choice(live))
        else:
            self.command(rng.choice(live))
        self.ops += 1


def write(cfg: dict[str, Any]) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    w = Writer(cfg)
    say("R")
    end = time.monotonic() + cfg["duration"]
    pace = cfg.get("pace", 0.0)
    next_report = 0.0
    try:
        while not stop.is_set() and time.monotonic() < end:
            w.step()
            now = time.monotonic()
            if now >= next_report:
                say(f"L {now:.6f} {w.live_bytes} {w.written} {w.ops}")
                next_report = now + 0.25
            if pace:
                time.sleep(pace)
        w.store.close()
    except BaseException:
        fail("writer died:\n" + traceback.format_exc())
    model = {
        "ops": w.ops,
        "streams": {name: {k: m[k] for k in ("gen", "events", "records", "blobs")} for name, m in w.model.items()},
    }
    tmp = cfg["model"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(model, f)
    os.replace(tmp, cfg["model"])
    say(f"D {w.ops}")


# ------------------------------------------------------------------- reader
def check_view(store: Any, seen: dict[str, tuple[int, int, int]]) -> int:
    """Every stream shows events 0..n-1 of one generation, intact, and blobs of
    that generation; nothing goes back from the last view (``seen``: name ->
    (generation, events, newest blob version), updated). Returns the events read."""
    read = 0
    for info in store.streams():
        name = info.name
        values = store.read_range(name)
        read += len(values)
        if len(values) != store.next_seq(name):
            raise AssertionError(f"{name!r}: a scan gave {len(values)} events, next_seq is {store.next_seq(name)}")
        gen = values[0]["g"] if values else None
        for q, v in enumerate(values):
            if not sealed_ok(v) or v["s"] != name or v["q"] != q or v["g"] != gen:
                raise AssertionError(f"{name!r}: event {q} (generation {gen}) is {v!r}")
        if values:
            q = random.randrange(len(values))
            if store.get(name, q) != values[q]:
                raise AssertionError(f"{name!r}: get({q}) differs from the scan")
        newest = 0
        for key in store.blob_keys(name):
            v = store.get_blob(name, key)
            if gen is None and isinstance(v, dict):
                gen = v.get("g")
            if not sealed_ok(v) or v["s"] != name or v["k"] != key or v["g"] != gen:
                raise AssertionError(f"{name!r} (generation {gen}): blob {key!r} is {v!r}")
            newest = max(newest, v["v"])
        if gen is None:
            continue
        old = seen.get(name)
        if old is not None:
            if gen < old[0]:
                raise AssertionError(f"{name!r}: generation {gen} after {old[0]}")
            if gen == old[0] and (len(values) < old[1] or newest < old[2]):
                raise AssertionError(
                    f"{name!r} (generation {gen}) went back: {len(values)} events and blob "
                    f"version {newest} after {old[1]} and {old[2]}"
                )
        seen[name] = (gen, len(values), newest)
    return read


def read(cfg: dict[str, Any]) -> None:
    import engine

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say("S")
    store = engine.open(cfg["path"], readonly=True)
    seen: dict[str, tuple[int, int, int]] = {}
    refreshes = events = 0
    try:
        while not stop.is_set():
            store.refresh()
            refreshes += 1
            events += check_view(store, seen)
            stop.wait(cfg.get("interval", 0.0))
    except BaseException:
        fail(f"after {refreshes} refreshes:\n" + traceback.format_exc())
    store.close()
    say(f"STATS {refreshes} {events}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="engine-log %(message)s")
    {"write": write, "read": read}[sys.argv[1]](json.loads(sys.argv[2]))
