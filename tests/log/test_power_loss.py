"""Power loss: the files are rewritten to what a power cut could leave, then the
store is reopened and checked against what its writer acknowledged.

The simulator is tests/log/faultfs.py (its model is in its docstring). The
campaign runs tests/log/power_worker.py in child processes, two at a time:
each installs the simulator, opens a store (creating it, or recovering what
the previous cut left), appends from a few threads following deterministic
per-stream plans, cuts the power at a chosen fileio call (with or without a
torn tail, with or without a garbage sector) and SIGKILLs itself. The parent
then opens a copy of the store without the simulator and checks:

- the store opens (a torn tail is cut away, not an error), ``verify()`` is
  clean, and a further append works and is there after another reopen;
- every stream holds exactly the first k ops of its plan for some k: no holes,
  no reordering, batches whole, every value as written;
- ``durability="power"``: k covers every acknowledged op;
- ``"process"`` and ``"relaxed"``: k covers every op acknowledged more than
  ``flush_interval + MARGIN`` before the cut (the background fsync bounds what
  power loss takes); some workers run long enough for such acks to exist;
- always: k covers the state the worker started from.

The next worker continues on the original (recovered by nobody yet), so cuts
also land in the recovery of the previous cut, and each store takes
``CYCLES_PER_STORE`` cuts with small segments, so they land in rolls. The
first worker on a store creates it, directory and all, so cuts land in the
creation too.

Deterministic sweeps (in this process) cut at every fileio call of a store's
creation and of a segment roll.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import power_worker as pw
import pytest
from faultfs import FaultFS

import engine

WORKER = Path(__file__).with_name("power_worker.py")
SEGMENT_BYTES = 8192
FLUSH_INTERVAL = 0.05
#: Slack on top of flush_interval for what "process" and "relaxed" may lose.
MARGIN = 1.0
CYCLES_PER_STORE = 4
PARALLEL = 2
STREAMS = list(pw.STREAMS)


@dataclass
class Spec:
    mode: str
    cuts: int  # per kill_factor
    late_every: int = 0  # every n-th worker runs past the loss bound before its cut


SPECS = {
    "power": Spec("power", 90),
    "process": Spec("process", 80, late_every=8),
    "relaxed": Spec("relaxed", 40, late_every=8),
}


# ------------------------------------------------------------------ checking
def find_k(seed: int, name: str, n_events: int, blobs: dict[str, Any], lo: int, hi: int, ctx: str) -> int:
    """The k in [lo, hi] such that the stream holds exactly the first k ops of its plan."""
    seq, versions = 0, {}
    for op in pw.plan(seed, name):
        k = op.i  # the state now is that after ops 0..k-1
        if k > hi or seq > n_events:
            break
        if (
            k >= lo
            and seq == n_events
            and blobs
            == {key: pw.blob_value(name, key, versions[key]) if key in versions else None for key in pw.BLOB_KEYS}
        ):
            return k
        if op.kind == "blob":
            versions[op.key] = op.i
        else:
            if op.seq < n_events < op.seq + op.n:
                raise AssertionError(f"{ctx}: stream {name!r} has {n_events} events: half of batch op {op.i}")
            seq = op.seq + op.n
    lo_seq, hi_seq = pw.state_after(seed, name, lo)[0], pw.state_after(seed, name, hi)[0]
    raise AssertionError(
        f"{ctx}: stream {name!r} has {n_events} events and blobs {blobs!r}: no prefix of its plan "
        f"with k in [{lo}, {hi}] (next_seq {lo_seq}..{hi_seq}) matches"
    )


def read_state(store: engine.Store, name: str, ctx: str) -> tuple[int, dict[str, Any]]:
    """Every event of ``name`` checked against its value; (events, {key: blob or None})."""
    if not store.has_stream(name):
        return 0, dict.fromkeys(pw.BLOB_KEYS)
    n = store.next_seq(name)
    values = store.read_range(name)
    assert len(values) == n, f"{ctx}: scan of {name!r} gave {len(values)} events, next_seq is {n}"
    for q, v in enumerate(values):
        if v != pw.event_value(name, q):
            raise AssertionError(f"{ctx}: event {q} of {name!r} is {v!r}, expected {pw.event_value(name, q)!r}")
    if n:
        assert store.get(name, n - 1) == pw.event_value(name, n - 1), f"{ctx}: get({name!r}, {n - 1})"
    blobs = {}
    for key in pw.BLOB_KEYS:
        try:
            blobs[key] = store.get_blob(name, key)
        except engine.BlobNotFoundError:
            blobs[key] = None
    return n, blobs


def check_store(path: Path, mode: str, seed: int, lo: list[int], hi: list[int], ctx: str) -> list[int]:
    """Open after a cut and check; append one more op to every stream, reopen and
    check that too. Returns the plan position of each stream after the cut."""
    opts = {"durability": mode, "segment_bytes": SEGMENT_BYTES, "flush_interval": FLUSH_INTERVAL}
    with engine.open(path, **opts) as store:
        report = store.verify()
        assert report.ok, f"{ctx}: verify() after the cut: {[str(p) for p in report.problems]}"
        names = {i.name for i in store.streams()}
        assert names <= set(STREAMS), f"{ctx}: unknown streams {names - set(STREAMS)}"
        ks = []
        for si, name in enumerate(STREAMS):
            n, blobs = read_state(store, name, ctx)
            ks.append(find_k(seed, name, n, blobs, lo[si], hi[si], ctx))
        for name, k in zip(STREAMS, ks, strict=True):
            pw.apply_op(store, name, next(op for op in pw.plan(seed, name) if op.i == k))
    with engine.open(path, **opts) as store:
        report = store.verify()
        assert report.ok, f"{ctx}: verify() after appending to the recovered store: {report.problems}"
        for name, k in zip(STREAMS, ks, strict=True):
            seq, versions = pw.state_after(seed, name, k + 1)
            assert (store.next_seq(name) if store.has_stream(name) else 0) == seq, f"{ctx}: {name!r} after append"
            if seq:
                assert store.get(name, seq - 1) == pw.event_value(name, seq - 1), ctx
            for key, version in versions.items():
                assert store.get_blob(name, key) == pw.blob_value(name, key, version), f"{ctx}: blob {key}"
    return ks


# ------------------------------------------------------------------ campaign
@dataclass
class Outcome:
    ready: float | None = None
    cut: float | None = None
    where: str = "?"
    acks: list[tuple[int, int, float]] = field(default_factory=list)  # (stream, op index, time)


def parse(out: bytes) -> Outcome:
    res = Outcome()
    for line in out.decode().split("\n")[:-1]:  # a kill can cut the last line short
        f = line.split()
        if f[0] == "R":
            res.ready = float(f[1])
        elif f[0] == "A":
            res.acks.append((int(f[1]), int(f[2]), float(f[3])))
        elif f[0] == "C":
            res.cut, res.where = float(f[1]), f[2]
    return res


def bounds(spec: Spec, out: Outcome, start: list[int]) -> tuple[list[int], list[int], int]:
    """(lowest, highest k allowed per stream, number of acks the loss bound covers)."""
    assert out.cut is not None
    cutoff = out.cut - FLUSH_INTERVAL - MARGIN if spec.mode != "power" else float("inf")
    lo, hi, old = list(start), list(start), 0
    for si, idx, t in out.acks:
        hi[si] = max(hi[si], idx + 1)
        if t < cutoff:
            lo[si] = max(lo[si], idx + 1)
            old += 1
    if out.ready is not None:  # each stream may have one more op in flight
        hi = [k + 1 for k in hi]
    return lo, hi, old


def run_chain(
    tmp: Path,
    spec: Spec,
    seed: int,
    chain: int,
    cuts: int,
    stats: Counter[str],
    stats_mu: threading.Lock,
    failed: threading.Event,
) -> None:
    """One store after another, ``CYCLES_PER_STORE`` cuts each; stops when another chain failed."""
    try:
        _run_chain(tmp, spec, seed, chain, cuts, stats, stats_mu, failed)
    except BaseException:
        failed.set()
        raise


def _run_chain(
    tmp: Path,
    spec: Spec,
    seed: int,
    chain: int,
    cuts: int,
    stats: Counter[str],
    stats_mu: threading.Lock,
    failed: threading.Event,
) -> None:
    rng = random.Random(f"{seed}/{spec.mode}/{chain}")
    root = tmp
    start = [0] * len(STREAMS)
    for i in range(cuts):
        if failed.is_set():
            return
        cycle = i % CYCLES_PER_STORE
        if cycle == 0:
            root = tmp / f"chain{chain}-store{i // CYCLES_PER_STORE}"
            root.mkdir()  # the store directory in it is made by the engine
            start = [0] * len(STREAMS)
        late = bool(spec.late_every) and i % spec.late_every == spec.late_every - 1
        if late:
            cut_at = 1
        elif i == 0:
            cut_at = rng.randint(1, 33)  # calls 1-33 of engine.open make the store's directory and files
        elif rng.random() < (0.4 if cycle == 0 else 0.15):
            cut_at = rng.randint(1, 45)  # in open: creation, or recovery of the last cut
        else:
            cut_at = rng.randint(40, 2000 if spec.mode == "power" else 1500)
        tear = rng.random() < 0.5
        cfg = {
            "root": str(root),
            "path": str(root / "store"),
            "mode": spec.mode,
            "seed": seed,
            "streams": STREAMS,
            "start": start,
            "threads": rng.choice([1, 2, 3]),
            # a late worker must not roll: a roll syncs, and would hide a background fsync that never came
            "segment_bytes": 1 << 20 if late else SEGMENT_BYTES,
            "flush_interval": FLUSH_INTERVAL,
            "cut_at": cut_at,
            "cut_seed": rng.getrandbits(32),
            "tear": tear,
            "garbage": tear and rng.random() < 0.5,
            "min_elapsed": FLUSH_INTERVAL + MARGIN + rng.uniform(0.1, 0.3) if late else 0.0,
            "pace": 0.002 if late else 0.0,
            "real_sync": False,
        }
        ctx = (
            f"{spec.mode} cut #{i} of chain {chain} (seed {seed}: rerun with --crash-seed {seed}; "
            f"{root.name} cycle {cycle}, cut_at {cut_at}, tear {tear}, garbage {cfg['garbage']}, "
            f"threads {cfg['threads']}{', late' if late else ''})"
        )
        try:
            proc = subprocess.run(
                [sys.executable, str(WORKER), json.dumps(cfg)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{ctx}: worker neither cut the power nor failed within 60 s")
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode == -signal.SIGKILL and "WORKER-ERROR" not in err and "Traceback" not in err, (
            f"{ctx}: worker exited with {proc.returncode}:\n{err}"
        )
        out = parse(proc.stdout)
        assert out.cut is not None, f"{ctx}: killed without reporting the cut"
        lo, hi, old = bounds(spec, out, start)
        ctx += f", cut in {out.where} after {len(out.acks)} acks"
        check = root / f"check-{cycle}"
        if (root / "store").exists():  # not when the cut came before its mkdir was durable
            shutil.copytree(root / "store", check)
        try:
            start = check_store(check, spec.mode, seed, lo, hi, ctx)
        finally:
            shutil.rmtree(check, ignore_errors=True)
        with stats_mu:
            stats["cuts"] += 1
            stats[f"in:{out.where}"] += 1
            stats["acked_ops"] += len(out.acks)
            stats["acked_ops_lost"] += sum(1 for si, idx, _ in out.acks if idx >= start[si])
            stats["torn"] += tear
            stats["garbage"] += cfg["garbage"]
            if late:
                stats["late"] += 1
                stats["late_with_old_acks"] += old > 0
            segs = sum(1 for n in os.listdir(root / "store") if n.endswith(".seg")) if (root / "store").exists() else 0
            stats["max_segments"] = max(stats["max_segments"], segs)
        if cycle == CYCLES_PER_STORE - 1:
            shutil.rmtree(root)


@pytest.mark.parametrize("mode", ["power", "process", "relaxed"])
def test_power_loss_campaign(tmp_path: Path, mode: str, kill_factor: int, crash_seed: int) -> None:
    spec = SPECS[mode]
    cuts = spec.cuts * kill_factor
    stats: Counter[str] = Counter()
    mu = threading.Lock()
    failed = threading.Event()
    t0 = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(run_chain, tmp_path, spec, crash_seed, c, len(range(c, cuts, PARALLEL)), stats, mu, failed)
            for c in range(PARALLEL)
        ]
        for f in futures:
            f.result()
    print(f"\n{mode} (seed {crash_seed}): {dict(sorted(stats.items()))} in {time.monotonic() - t0:.1f}s")
    assert stats["cuts"] == cuts
    assert stats["acked_ops"] > 0
    assert stats["in:roll"] >= 1 and stats["in:create"] >= 1, stats
    assert stats["max_segments"] >= 3, stats
    if mode == "power":
        assert stats["acked_ops_lost"] == 0
    elif kill_factor > 1 or cuts >= 40:
        assert stats["late_with_old_acks"] >= 1, f"the loss bound was never put to the test: {stats}"


# ----------------------------------------------------- deterministic sweeps
@contextlib.contextmanager
def simulated(root: Path, cut: Callable[[str, int], bool] | None = None, **cut_args: Any) -> Iterator[FaultFS]:
    """FaultFS on ``root``; the first call for which ``cut(name, n)`` is true cuts the power."""

    def hook(name: str, n: int) -> None:
        if cut is not None and not fs.is_cut and cut(name, n):
            fs.power_cut(**cut_args)

    fs = FaultFS(root, hook=hook, real_sync=False)
    with fs:
        yield fs


def abandon(store: engine.Store | None) -> None:
    """Let go of a store whose power was cut (its calls fail with EIO now)."""
    if store is not None:
        with contextlib.suppress(Exception):
            store.close()


def test_power_mode_acks_survive_a_cut_in_process(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    with simulated(tmp_path) as fs:
        store = engine.open(tmp_path / "store", durability="power", segment_bytes=SEGMENT_BYTES)
        for q in range(60):
            store.append("s", pw.event_value("s", q))
        fs.power_cut(tear=True, rng=random.Random(1), garbage=True)
        abandon(store)
    with engine.open(tmp_path / "store") as store:
        assert store.verify().ok
        assert store.read_range("s") == [pw.event_value("s", q) for q in range(60)]


def test_a_new_store_directory_survives_a_power_cut(tmp_path: Path) -> None:
    """engine.open creates the store's directory; a power-mode append acknowledged
    after that must survive power loss, so the new directory's entry in its parent
    must be durable (the parent fsync'd) before anything is acknowledged."""
    with simulated(tmp_path) as fs:
        store = engine.open(tmp_path / "store", durability="power")
        store.append("s", "acknowledged")
        fs.power_cut()
        abandon(store)
    assert (tmp_path / "store").is_dir(), "the store directory vanished with the power cut"
    with engine.open(tmp_path / "store") as store:
        assert store.read_range("s") == ["acknowledged"]


@pytest.mark.parametrize("tear", [False, True], ids=["clean", "torn"])
def test_cut_at_every_call_of_store_creation(tmp_path: Path, tear: bool) -> None:
    """A cut at each fileio call of engine.open creating a store (its directory
    too), of the append after it and of the close: the next open creates or
    recovers the store, which holds the append if it was acknowledged, and works."""
    n = 0
    while True:
        n += 1
        root = tmp_path / f"c{n}"
        root.mkdir()
        acked = False
        with simulated(root, lambda _name, i, n=n: i == n, tear=tear, rng=random.Random(n), garbage=tear) as fs:
            store = None
            try:
                store = engine.open(root / "store", durability="power")
                store.append("s", "first")
                acked = True
                store.close()
            except (OSError, engine.SeglogError):
                abandon(store)
            cut = fs.is_cut
        ctx = f"cut at call {n} of creating a store (tear {tear}, append acknowledged: {acked})"
        with engine.open(root / "store", durability="power") as store:
            assert store.verify().ok, ctx
            got = store.read_range("s") if store.has_stream("s") else []
            assert got == ["first"] if acked else got in ([], ["first"]), f"{ctx}: {got}"
            store.append("s", "after")
        with engine.open(root / "store") as store:
            assert store.read_range("s")[-1] == "after", ctx
        shutil.rmtree(root)
        if not cut:
            break
    assert n > 20, f"creating a store, appending and closing took only {n - 1} fileio calls"


@pytest.mark.parametrize("mode", ["power", "process"])
def test_cut_at_every_call_of_a_segment_roll(tmp_path: Path, mode: str) -> None:
    """Appends fill a small segment; the power is cut at the n-th fileio call of
    the first roll, for every n (clean, torn, torn with garbage). Everything
    acknowledged ("power") or synced ("process") before is there after reopening."""
    n = 0
    while True:
        n += 1
        root = tmp_path / f"r{n}"
        (root / "store").mkdir(parents=True)
        roll = {"calls": 0, "over": False}

        def cut(_name: str, _i: int, n: int = n, roll: dict[str, Any] = roll) -> bool:
            if pw.where(sys._getframe(2)) == "roll":
                roll["calls"] += not roll["over"]
            elif roll["calls"]:
                roll["over"] = True
            return roll["calls"] == n and not roll["over"]

        acked = synced = 0
        with simulated(root, cut, tear=n % 3 > 0, rng=random.Random(n), garbage=n % 3 == 2) as fs:
            store = None
            try:
                store = engine.open(root / "store", durability=mode, segment_bytes=4096)
                for q in range(80):
                    store.append("s", pw.event_value("s", q))
                    acked = q + 1
                    if mode == "process" and q % 5 == 4:
                        store.sync()
                        synced = acked
                    if roll["over"]:
                        break
            except (OSError, engine.SeglogError):
                pass
            abandon(store)
            cut_done = fs.is_cut
        must = acked if mode == "power" else synced
        ctx = f"{mode}: cut at call {n} of a roll, {acked} acked, {synced} synced"
        with engine.open(root / "store", durability=mode, segment_bytes=4096) as store:
            assert store.verify().ok, ctx
            got = store.read_range("s") if store.has_stream("s") else []
            assert must <= len(got) <= acked + 1, f"{ctx}: {len(got)} events after the cut"
            assert got == [pw.event_value("s", q) for q in range(len(got))], ctx
            store.append("s", "after")
        shutil.rmtree(root)
        assert roll["calls"], f"{ctx}: no roll happened"
        if not cut_done:
            break
    assert n > 20, f"a roll took only {n - 1} fileio calls"
