"""Child processes of the compactor crash tests (test_compactor_crash.py), and
the workload both sides agree on.

Jobs (each a JSON object with a ``role``):

``pass``
    One compaction pass (``engine.compact``) with, optionally, a crash point
    armed: the process SIGKILLs itself (or pauses) before or after the nth
    call of a function of ``engine.log.fileio``, counting only the calls that
    concern a path containing ``match`` when one is given. Before the kill it
    writes ``FIRE <call> <nth> <when> <path>`` to its out file, so the parent
    can tell where it landed. ``trace`` records every fileio call of the pass
    instead (name, path, the engine functions on the stack).
``power-pass``
    One pass under :class:`faultfs.FaultFS`, which cuts the power before the
    ``cut_at``-th fileio call (``CUT <n> <call> <path>``) and SIGKILLs the process.
``write``
    A writer: opens the store (durability "process") and runs the
    deterministic plan of :func:`plan` from op ``start`` on, appending
    ``A <op index> <time>`` to its ack file after each op returns.
``read``
    A follower: ``engine.open(readonly=True)`` and ``refresh()`` in a loop,
    checking that every view is prefix-consistent (:func:`check_view`) and
    never goes back; SIGTERM ends it with ``STATS`` on its out file, exit 0.
``compact-loop``
    Compaction passes back to back, ``P ...`` per pass on its out file.
    SIGTERM ends it after the pass under way, exit 0.

``read`` and ``compact-loop`` write ``S`` once SIGTERM is theirs to handle.

They run as ``python compactor_worker.py JOB.json``, or, much faster, forked
from a *zygote*: ``python compactor_worker.py serve`` imports the engine once
and forks a child per job it reads on stdin (see :func:`serve`). Problems a
worker detects itself go to its stderr as ``WORKER-ERROR ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

BLOB_KEYS = ("k0", "k1", "k2")
#: Names of the plan's streams: a dropped name comes back later as a new incarnation.
NAMES = 7


# ------------------------------------------------------------------ the plan
class Op(NamedTuple):
    i: int  # position in the plan
    kind: str  # "create", "one", "batch", "blob" or "drop"
    stream: str
    inc: int  # incarnation of the name (0 for its first life, then 1, ...)
    seq: int  # the stream's next_seq before the op
    n: int  # events the op appends
    key: str  # blob key ("" otherwise)


class StreamModel(NamedTuple):
    inc: int
    n: int  # events
    blobs: dict[str, int]  # key -> op index that wrote the value


def plan(seed: int, prefix: str, churn: bool = True) -> Iterator[Op]:
    """The endless, deterministic op sequence of one writer. Every op is exactly
    one record (a stream is created by its own op), so a SIGKILL leaves the
    store after the first k ops for some k. Without ``churn`` it only creates
    streams and appends: everything it writes stays live."""
    rng = random.Random(f"compactor-plan/{seed}/{prefix}/{churn}")
    live: dict[str, list[int]] = {}  # name -> [inc, next_seq]
    incs: dict[str, int] = {}
    names = [f"{prefix}{j}" for j in range(NAMES)]
    for i in range(1 << 62):
        r = rng.random()
        if len(live) < 2 or (r < 0.05 and len(live) < 5):
            name = rng.choice([n for n in names if n not in live])
            inc = incs[name] = incs.get(name, -1) + 1
            live[name] = [inc, 0]
            yield Op(i, "create", name, inc, 0, 0, "")
            continue
        name = rng.choice(sorted(live))
        inc, seq = live[name]
        if not churn and r < 0.40:
            r = 0.40 + r * 1.5  # no drops, no blobs
        if r < 0.09 and len(live) >= 3:
            del live[name]
            yield Op(i, "drop", name, inc, seq, 0, "")
        elif r < 0.40:
            yield Op(i, "blob", name, inc, seq, 0, rng.choice(BLOB_KEYS))
        elif r < 0.55:
            n = rng.randint(2, 6)
            live[name][1] += n
            yield Op(i, "batch", name, inc, seq, n, "")
        else:
            live[name][1] += 1
            yield Op(i, "one", name, inc, seq, 1, "")


def event_value(stream: str, inc: int, seq: int) -> Any:
    """Event ``seq`` of incarnation ``inc`` of ``stream``: sizes from a few bytes
    to about 1 KiB (those compress), some random bytes."""
    h = zlib.crc32(f"{stream}/{inc}/{seq}".encode())
    kind = h % 12
    if kind == 0:
        body: Any = f"{stream}#{inc}#{seq};" * (40 + h % 40)
    elif kind == 1:
        body = random.Random(h).randbytes(100 + h % 200)
    elif kind == 2:
        body = ["l", {"h": h, "f": h / 9.0}, [seq, None, True]]
    else:
        body = "e" * (20 + h % 160)
    return {"s": stream, "i": inc, "q": seq, "b": body}


def blob_value(stream: str, inc: int, key: str, version: int) -> Any:
    h = zlib.crc32(f"{stream}/{inc}/{key}/{version}".encode())
    pad = f"{key}={version}," * (20 + h % 60) if h % 3 else "z" * (h % 50)
    return {"s": stream, "i": inc, "k": key, "v": version, "b": pad}


def apply_op(store: Any, op: Op) -> None:
    """Run ``op``; raise AssertionError when the store hands out another seq."""
    if op.kind == "create":
        store.create_stream(op.stream)
        return
    if op.kind == "drop":
        store.drop_stream(op.stream)
        return
    if op.kind == "blob":
        store.put_blob(op.stream, op.key, blob_value(op.stream, op.inc, op.key, op.i))
        return
    if op.kind == "one":
        got = store.append(op.stream, event_value(op.stream, op.inc, op.seq))
    else:
        got = store.append_batch(op.stream, [event_value(op.stream, op.inc, q) for q in range(op.seq, op.seq + op.n)])
    if got != op.seq:
        raise AssertionError(f"{op.kind} on {op.stream!r} got seq {got}, the plan expects {op.seq}")


def states(seed: int, prefix: str, churn: bool = True) -> Iterator[tuple[int, dict[str, StreamModel]]]:
    """(k, the live streams after the first k ops), for k = 0, 1, 2, ...
    (the dict is the same object, changed in place)."""
    live: dict[str, StreamModel] = {}
    yield 0, live
    for op in plan(seed, prefix, churn):
        if op.kind == "create":
            live[op.stream] = StreamModel(op.inc, 0, {})
        elif op.kind == "drop":
            del live[op.stream]
        elif op.kind == "blob":
            live[op.stream].blobs[op.key] = op.i
        else:
            m = live[op.stream]
            live[op.stream] = StreamModel(m.inc, op.seq + op.n, m.blobs)
        yield op.i + 1, live


def state_after(seed: int, prefix: str, k: int, churn: bool = True) -> dict[str, StreamModel]:
    for i, live in states(seed, prefix, churn):
        if i == k:
            return {name: StreamModel(m.inc, m.n, dict(m.blobs)) for name, m in live.items()}
    raise AssertionError("not reached")


# ------------------------------------------------------------ a reader's check
class ViewError(AssertionError):
    pass


def check_view(
    store: Any, seen: dict[str, tuple[int, int, dict[str, int]]] | None = None, prefix: str = ""
) -> dict[str, tuple[int, int, dict[str, int]]]:
    """Check that what ``store`` shows of the plan's streams (those named
    ``prefix...``) is prefix-consistent: each stream's events are 0..n-1 of one
    incarnation with the right values, and each blob is a value that
    incarnation wrote under that key. With ``seen`` (the last view), also that
    nothing went back: an incarnation never loses events or blob versions, and
    a name's incarnation never decreases. Returns this view."""
    view: dict[str, tuple[int, int, dict[str, int]]] = {}
    for info in store.streams():
        name = info.name
        if not name.startswith(prefix):
            continue
        values = store.read_range(name)
        n = len(values)
        if n != info.events or n != store.next_seq(name):
            raise ViewError(
                f"{name!r}: a scan gave {n} events, streams() says {info.events}, next_seq {store.next_seq(name)}"
            )
        inc = values[0]["i"] if values else None
        for q, v in enumerate(values):
            if not isinstance(v, dict) or v.get("i") != inc or v != event_value(name, inc, q):
                raise ViewError(f"{name!r}: event {q} is {v!r}, expected {event_value(name, inc or 0, q)!r}")
        blobs: dict[str, int] = {}
        for key in store.blob_keys(name):
            v = store.get_blob(name, key)
            if not isinstance(v, dict) or v.get("s") != name or v.get("k") != key:
                raise ViewError(f"{name!r}: blob {key!r} is {v!r}")
            if inc is None:
                inc = v["i"]
            if v["i"] != inc or v != blob_value(name, inc, key, v["v"]):
                raise ViewError(f"{name!r} (incarnation {inc}): blob {key!r} is {v!r}")
            blobs[key] = v["v"]
        inc = -1 if inc is None else inc
        view[name] = (inc, n, blobs)
        if seen is not None and name in seen:
            old_inc, old_n, old_blobs = seen[name]
            if -1 not in (inc, old_inc) and inc < old_inc:
                raise ViewError(f"{name!r}: incarnation {inc} after {old_inc}")
            if inc == old_inc and inc != -1:
                if n < old_n:
                    raise ViewError(f"{name!r} (incarnation {inc}) went back from {old_n} events to {n}")
                for key, version in old_blobs.items():
                    if blobs.get(key, -1) < version:
                        raise ViewError(
                            f"{name!r} (incarnation {inc}): blob {key!r} went back from version "
                            f"{version} to {blobs.get(key)}"
                        )
    return view


# --------------------------------------------------------------- crash points
def _path_of(args: tuple[Any, ...], fds: dict[int, str]) -> str:
    if args and isinstance(args[0], (str, bytes, os.PathLike)):
        return os.fsdecode(args[0])
    if args and isinstance(args[0], int):
        return fds.get(args[0], f"fd:{args[0]}")
    return ""


def arm(spec: dict[str, Any], out_fd: int) -> None:
    """Wrap ``engine.log.fileio.<call>``: at its ``nth`` call (among those whose
    path contains ``match``, if given), ``when`` is "before"/"after" (SIGKILL)
    or "pause-before"/"pause-after" (write ``PAUSED``, then wait until the
    file ``go`` exists)."""
    from engine.log import fileio

    call, nth, when = spec["call"], int(spec["nth"]), spec["when"]
    match = spec.get("match")
    fds: dict[int, str] = {}
    real_open = fileio.open

    def opener(path: Any, flags: int, mode: int = 0o777, *a: Any, **kw: Any) -> int:
        fd = real_open(path, flags, mode, *a, **kw)
        fds[fd] = os.fsdecode(path)
        return fd

    fileio.install(open=opener)
    target = getattr(fileio, call)
    count = [0]
    mu = threading.Lock()

    def fire(path: str) -> None:
        os.write(out_fd, f"FIRE {call} {nth} {when} {path}\n".encode())
        if when.startswith("pause"):
            os.write(out_fd, b"PAUSED\n")
            while not os.path.exists(spec["go"]):
                time.sleep(0.002)
            return
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # not reached

    def wrapper(*args: Any, **kw: Any) -> Any:
        path = _path_of(args, fds)
        hit = False
        if match is None or match in path:
            with mu:
                count[0] += 1
                hit = count[0] == nth
        if hit and when in ("before", "pause-before"):
            fire(path)
        try:
            return target(*args, **kw)
        finally:  # a call that failed (unlink of a file already gone) is "after" all the same
            if hit and when in ("after", "pause-after"):
                fire(path)

    fileio.install(**{call: wrapper})


def trace_calls() -> list[list[Any]]:
    """Record every fileio call from now on: [name, path, engine functions on the stack]."""
    from engine.log import fileio

    calls: list[list[Any]] = []
    fds: dict[int, str] = {}

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            path = _path_of(args, fds)
            frame, stack = sys._getframe(1), []
            while frame is not None and len(stack) < 8:
                stack.append(frame.f_code.co_name)
                frame = frame.f_back
            calls.append([name, path, stack])
            result = real(*args, **kw)
            if name == "open":
                fds[result] = os.fsdecode(args[0])
            return result

        return wrapper

    fileio.install(**{name: wrap(name, getattr(fileio, name)) for name in fileio.NAMES})
    return calls


# ------------------------------------------------------------------- jobs
def _out(job: dict[str, Any]) -> int:
    return os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _line(fd: int, text: str) -> None:
    os.write(fd, f"{text}\n".encode())


def fail(message: str, code: int = 4) -> None:
    sys.stderr.write(f"WORKER-ERROR {message}\n")
    sys.stderr.flush()
    os._exit(code)


def _report(report: Any) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(report))


def job_pass(job: dict[str, Any]) -> int:
    import engine

    out = _out(job)
    calls = trace_calls() if job.get("trace") else None
    if job.get("crash"):
        arm(job["crash"], out)
    report = engine.compact(job["path"], **job.get("options", {}))
    if calls is not None:
        from engine.log import fileio

        fileio.uninstall()
        _line(out, "TRACE " + json.dumps(calls))
    _line(out, "DONE " + _report(report))
    return 0


def job_power_pass(job: dict[str, Any]) -> int:
    from faultfs import FaultFS

    import engine

    out = _out(job)
    cut_at = int(job["cut_at"])
    rng = random.Random(job["cut_seed"])
    paths: list[str] = []

    def hook(name: str, n: int) -> None:
        if job.get("trace"):
            frame, stack = sys._getframe(2), []
            while frame is not None and len(stack) < 8:
                stack.append(frame.f_code.co_name)
                frame = frame.f_back
            paths.append(json.dumps([name, n, stack]))
        if n == cut_at and not fs.is_cut:
            fs.power_cut(tear=job["tear"], rng=rng, garbage=job["garbage"])
            _line(out, f"CUT {n} {name}")
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # not reached

    fs = FaultFS(job["root"], hook=hook, after_cut="block", real_sync=False)
    fs.install()
    report = engine.compact(job["path"], **job.get("options", {}))
    fs.uninstall()
    if job.get("trace"):
        _line(out, "TRACE [" + ",".join(paths) + "]")
    _line(out, f"DONE {fs.count} " + _report(report))
    return 0


def job_write(job: dict[str, Any]) -> int:
    import engine

    acks = _out(job)
    seed, prefix, start = job["seed"], job["prefix"], int(job["start"])
    churn = bool(job.get("churn", True))
    if job.get("crash"):  # armed before the open: a pause inside open() itself
        arm(job["crash"], acks)
    store = engine.open(
        job["path"],
        durability="process",
        segment_bytes=job.get("segment_bytes", 4096),
        flush_interval=job.get("flush_interval", 0.05),
    )
    want = {name: m.n for name, m in state_after(seed, prefix, start, churn).items()}
    have = {s.name: s.events for s in store.streams() if s.name.startswith(prefix)}
    if have != want:
        fail(f"the store holds {have} when the writer starts, plan position {start} expects {want}", 5)
    ops = plan(seed, prefix, churn)
    for _ in range(start):
        next(ops)
    _line(acks, f"R {time.monotonic():.6f} {start}")
    pace = float(job.get("pace", 0.0))
    max_ops = job.get("max_ops")
    try:
        for op in ops:
            if max_ops is not None and op.i >= start + max_ops:
                break
            apply_op(store, op)
            _line(acks, f"A {op.i} {time.monotonic():.6f}")
            if pace:
                time.sleep(pace)
    except BaseException:
        fail("writer died:\n" + traceback.format_exc())
    if job.get("hold"):
        _line(acks, "H")
        while True:
            time.sleep(3600)
    store.close()
    _line(acks, "D")
    return 0


def job_read(job: dict[str, Any]) -> int:
    import engine

    out = _out(job)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _line(out, "S")
    deadline = time.monotonic() + 30
    while True:
        try:
            store = engine.open(job["path"], readonly=True)
            break
        except engine.NotFoundError:
            if time.monotonic() > deadline:
                fail("no store to follow after 30 s")
            time.sleep(0.01)
    prefix = job.get("prefix", "")
    interval = float(job.get("interval", 0.0))
    refreshes = streams = events = 0
    seen: dict[str, tuple[int, int, dict[str, int]]] = {}
    try:
        while not stop.is_set():
            store.refresh()
            refreshes += 1
            view = check_view(store, seen, prefix)
            seen.update(view)  # a dropped name keeps its last incarnation: it must not come back lower
            streams += len(view)
            events += sum(v[1] for v in view.values())
            if interval:
                stop.wait(interval)
    except BaseException:
        fail(f"after {refreshes} refreshes:\n" + traceback.format_exc())
    store.close()
    _line(out, f"STATS {refreshes} {streams} {events}")
    return 0


def job_compact_loop(job: dict[str, Any]) -> int:
    import engine

    out = _out(job)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _line(out, "S")
    interval = float(job.get("interval", 0.05))
    n = 0
    while not stop.is_set():
        try:
            r = engine.compact(job["path"], **job.get("options", {}))
        except engine.CompactorBusyError:
            stop.wait(0.01)
            continue
        except Exception:
            sys.stderr.write(f"COMPACTOR-ERROR pass {n + 1}: {traceback.format_exc()}\n")
            sys.stderr.flush()
            _line(out, "E")
        else:
            n += 1
            _line(out, f"P {n} {len(r.segments_in)} {len(r.segments_out)} {r.bytes_in} {r.bytes_out}")
        stop.wait(interval)
    _line(out, f"STOP {n}")
    return 0


JOBS: dict[str, Callable[[dict[str, Any]], int]] = {
    "pass": job_pass,
    "power-pass": job_power_pass,
    "write": job_write,
    "read": job_read,
    "compact-loop": job_compact_loop,
}


def run_job(job: dict[str, Any]) -> int:
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="engine-log %(message)s")
    return JOBS[job["role"]](job)


# ------------------------------------------------------------------ zygote
def _child(job: dict[str, Any]) -> None:
    """In a forked child: stdio to the job's files, run it, exit."""
    code = 3
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        err = os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        random.seed()
        code = run_job(job)
    except BaseException:
        with contextlib.suppress(BaseException):
            sys.stderr.write("WORKER-ERROR job failed:\n" + traceback.format_exc())
            sys.stderr.flush()
        code = 3
    finally:
        os._exit(code)


def serve() -> None:
    """Read requests (one JSON object a line) on stdin, answer on stdout:

    ``{"id": i, "op": "start", "job": {...}}``  fork a child for the job; answers ``{"id": i, "pid": p}``
    ``{"id": i, "op": "wait", "pid": p}``        answers ``{"id": i, "status": s}`` once it ended
                                              (an exit code, or minus the signal that killed it)

    A child is reaped only when waited for, so its pid is never reused while
    the parent may still signal it. At EOF every child still running is
    SIGKILLed and reaped.
    """
    import faultfs  # noqa: F401  (imported once, before any fork)

    import engine.log.compactor  # noqa: F401

    started: set[int] = set()
    waits: dict[int, int] = {}

    def answer(obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data) :]

    answer({"ready": os.getpid()})
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.002 if waits else None)
        if ready:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if req["op"] == "start":
                    pid = os.fork()
                    if pid == 0:
                        _child(req["job"])
                    started.add(pid)
                    answer({"id": req["id"], "pid": pid})
                elif req["op"] == "wait":
                    waits[req["pid"]] = req["id"]
        for pid, rid in list(waits.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del waits[pid]
                started.discard(pid)
                answer({"id": rid, "status": os.waitstatus_to_exitcode(status)})
    for pid in started:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


class Zygote:
    """The parent's side of :func:`serve`: a zygote process and its children."""

    def __init__(self, workdir: str) -> None:
        import subprocess

        self.workdir = workdir
        self._err = open(os.path.join(workdir, "zygote.err"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self._mu = threading.Lock()
        self._ids = 0
        self._answers: dict[int, Any] = {}
        self._cv = threading.Condition(self._mu)
        self.children: dict[int, bool] = {}  # pid -> still to be waited for
        self._jobs = 0
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or b"{}")
        if "ready" not in first:
            raise RuntimeError(f"the zygote did not start: {self.stderr()}")
        threading.Thread(target=self._read, daemon=True).start()

    def stderr(self) -> str:
        with open(os.path.join(self.workdir, "zygote.err"), "rb") as f:
            return f.read().decode(errors="replace")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._cv:
                self._answers[msg["id"]] = msg
                self._cv.notify_all()
        with self._cv:
            self._answers[-1] = None
            self._cv.notify_all()

    def _send(self, req: dict[str, Any]) -> int:
        with self._cv:
            self._ids += 1
            rid = req["id"] = self._ids
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            return rid

    def _recv(self, rid: int, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while rid not in self._answers:
                if -1 in self._answers:
                    raise RuntimeError(f"the zygote died: {self.stderr()}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no answer to request {rid} within {timeout}s")
                self._cv.wait(left)
            answer: dict[str, Any] = self._answers.pop(rid)
            return answer

    def job_files(self, tag: str) -> tuple[str, str]:
        with self._mu:
            self._jobs += 1
            n = self._jobs
        base = os.path.join(self.workdir, f"job-{n}-{tag}")
        return base + ".out", base + ".err"

    def start(self, job: dict[str, Any]) -> Child:
        if "out" not in job:
            job["out"], job["err"] = self.job_files(job["role"])
        pid = self._recv(self._send({"op": "start", "job": job}), 30)["pid"]
        with self._mu:
            self.children[pid] = True
        return Child(self, pid, job)

    def wait(self, pid: int, timeout: float | None = None) -> int:
        """Its exit status (minus the signal that ended it); on timeout it is
        SIGKILLed (it is not reaped yet, so the pid is still its own) and
        TimeoutError raised."""
        with self._mu:
            if not self.children.get(pid):
                raise RuntimeError(f"process {pid} was already waited for")
        rid = self._send({"op": "wait", "pid": pid})
        try:
            status: int = self._recv(rid, timeout)["status"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._recv(rid, 30)
            raise
        finally:
            with self._mu:
                self.children[pid] = False
        return status

    def run(self, job: dict[str, Any], timeout: float = 60.0) -> tuple[int, Child]:
        child = self.start(job)
        return self.wait(child.pid, timeout), child

    def close(self) -> None:
        with self._mu:
            alive = [pid for pid, pending in self.children.items() if pending]
        for pid in alive:  # not reaped: still ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc.wait(30)
        self._err.close()


class Child:
    """A job running in a child of the zygote."""

    def __init__(self, zygote: Zygote, pid: int, job: dict[str, Any]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.job = job
        self.status: int | None = None
        self.started = time.monotonic()

    def signal(self, sig: int) -> None:
        if self.status is None:
            os.kill(self.pid, sig)

    def kill(self) -> int:
        """SIGKILL (unless it already ended) and reap; returns the status."""
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.status = self.zygote.wait(self.pid, 30)
        return self.status

    def wait(self, timeout: float | None = None) -> int:
        if self.status is None:
            self.status = self.zygote.wait(self.pid, timeout)
        return self.status

    def lines(self) -> list[list[str]]:
        """Complete lines of the out file (a kill can cut the last one)."""
        try:
            with open(self.job["out"], "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return [ln.split(" ") for ln in data.decode(errors="replace").split("\n")[:-1] if ln]

    def stderr(self) -> str:
        try:
            with open(self.job["err"], "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def errors(self) -> list[str]:
        return [ln for ln in self.stderr().splitlines() if "ERROR" in ln or "Traceback" in ln]

    def wait_for(self, tag: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        """The ``count``-th line starting with ``tag`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.lines() if ln[0] == tag]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {tag!r} line from {self.job['role']} within {timeout}s: {self.stderr()}")
            time.sleep(0.005)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] == "serve":
        serve()
    else:
        with open(sys.argv[1], encoding="utf-8") as f:
            sys.exit(run_job(json.load(f)))
