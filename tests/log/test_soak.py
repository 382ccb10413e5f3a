"""Soak: a sessions-like writer, two followers and ``python -m engine compact
--watch`` run side by side (tests/log/soak_worker.py has the first three).

The writer creates sessions (some under the name of a dropped one), records
commands into them, overwrites checkpoint and receipt blobs and drops
sessions, keeping a model of what the store must hold. The followers refresh
in a loop and check every view (each value carries its stream, generation,
seq and a checksum). The compactor passes every half second. At the end the
writer closes the store and writes its model; after one more pass the
compactor is stopped with SIGTERM (exit 0), the followers too, and the store
must hold exactly the model, verify clean, and take no more than 1.5 times
the bytes of a store holding only the live records, plus one segment. While
they run, the bytes on disk are sampled: they must stay within twice what is
live plus what the writer wrote in the last ``LAG`` seconds (the store does
not grow without bound: the compactor keeps up).

30 seconds in the default run; five minutes with ``--long``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import engine

WORKER = Path(__file__).with_name("soak_worker.py")
SEGMENT_BYTES = 32 * 1024
INTERVAL = 0.5
#: Seconds the compactor may lag behind the writer while the test samples the bytes on disk.
LAG = 5.0


class Proc:
    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self._files: list[IO[bytes]] = [open(self.out_path, "wb"), open(self.err_path, "wb")]  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._files[0], stderr=self._files[1])

    def lines(self) -> list[str]:
        text = self.out_path.read_bytes().decode(errors="replace")
        return text.split("\n")[:-1]

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode(errors="replace")

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [ln for ln in self.lines() if ln.startswith(prefix)]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"{self.name} did not report {prefix!r} (exit {self.proc.poll()}):\n{self.stderr()}")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited early with {self.proc.returncode}:\n{self.stderr()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not stop within {timeout}s of SIGTERM:\n{self.stderr()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in self._files:
            f.close()


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.close()


def disk_bytes(path: Path) -> int:
    total = 0
    for name in os.listdir(path):
        if name.endswith(".seg"):
            with contextlib.suppress(FileNotFoundError):  # replaced meanwhile
                total += os.path.getsize(path / name)
    return total


def live_store_bytes(model: dict[str, Any], where: Path) -> int:
    """Bytes of the segments of a new store holding only the model's records
    (the same events per record, the latest blob of each key)."""
    with engine.open(where, segment_bytes=SEGMENT_BYTES) as store:
        for name, m in model["streams"].items():
            events, pos = m["events"], 0
            for n in m["records"]:
                store.append_batch(name, events[pos : pos + n])
                pos += n
            for key, value in m["blobs"].items():
                store.put_blob(name, key, value)
    return disk_bytes(where)


def check_against_model(store: engine.Store, model: dict[str, Any]) -> None:
    report = store.verify()
    assert report.ok, f"verify() found {[str(p) for p in report.problems]}"
    streams = model["streams"]
    assert sorted(s.name for s in store.streams()) == sorted(streams), "dropped sessions must be gone, live ones there"
    for name, m in streams.items():
        got = store.read_range(name)
        assert len(got) == len(m["events"]), f"{name!r}: {len(got)} events, the model has {len(m['events'])}"
        assert got == m["events"], f"{name!r}: events differ from the model"
        assert store.blob_keys(name) == sorted(m["blobs"]), f"{name!r}: blob keys"
        for key, value in m["blobs"].items():
            assert store.get_blob(name, key) == value, f"{name!r}: blob {key!r}"


def run_soak(tmp_path: Path, duration: float, seed: int) -> None:
    path = tmp_path / "store"
    model_path = tmp_path / "model.json"
    py = sys.executable
    samples: list[tuple[float, int]] = []  # (time, bytes of segments)
    lives: list[tuple[float, int, int]] = []  # (time, live bytes, bytes written so far): the writer's estimates
    with processes() as procs:
        writer = Proc(
            "writer",
            [
                py,
                str(WORKER),
                "write",
                json.dumps(
                    {
                        "path": str(path),
                        "seed": seed,
                        "segment_bytes": SEGMENT_BYTES,
                        "duration": duration,
                        "model": str(model_path),
                        "pace": 0.001,
                    }
                ),
            ],
            tmp_path,
        )
        procs.append(writer)
        writer.wait_for("R")
        readers = [
            Proc(f"reader{i}", [py, str(WORKER), "read", json.dumps({"path": str(path), "interval": 0.02})], tmp_path)
            for i in range(2)
        ]
        procs.extend(readers)
        comp = Proc(
            "compactor", [py, "-m", "engine", "compact", str(path), "--watch", "--interval", str(INTERVAL)], tmp_path
        )
        procs.append(comp)
        for r in readers:
            r.wait_for("S")
        t0 = time.monotonic()
        while writer.proc.poll() is None:
            if time.monotonic() - t0 > duration + 60:
                pytest.fail(f"the writer did not finish in {duration + 60:.0f}s")
            for p in (*readers, comp):
                p.alive()
            samples.append((time.monotonic(), disk_bytes(path)))
            time.sleep(0.25)
        assert writer.proc.returncode == 0, f"writer exited with {writer.proc.returncode}:\n{writer.stderr()}"
        lives = [
            (float(t), int(b), int(w)) for _, t, b, w, _ in (ln.split() for ln in writer.lines() if ln.startswith("L "))
        ]
        ops = int(writer.wait_for("D ").split()[1])
        # One more whole pass, begun after the writer closed the store.
        done = len([ln for ln in comp.lines() if ln.startswith("pass ")])
        deadline = time.monotonic() + 30
        while len([ln for ln in comp.lines() if ln.startswith("pass ")]) < done + 2:
            comp.alive()
            assert time.monotonic() < deadline, f"the compactor made no pass in 30s:\n{comp.lines()[-3:]}"
            time.sleep(0.05)
        reader_stats = []
        for r in readers:
            assert r.stop() == 0, f"{r.name} exited with {r.proc.returncode}:\n{r.stderr()}"
            assert "WORKER-ERROR" not in r.stderr() and "Traceback" not in r.stderr(), r.stderr()
            stats = r.wait_for("STATS").split()
            reader_stats.append((int(stats[1]), int(stats[2])))
        status = comp.stop()
        assert status == 0, f"compact --watch exited with {status} after SIGTERM:\n{comp.stderr()}"
        assert comp.lines()[-1].startswith("stopped by SIGTERM"), comp.lines()[-3:]
        assert "failed" not in comp.lines()[-1] and "failed" not in comp.stderr(), (
            f"compaction passes failed:\n{comp.stderr()}"
        )
        passes = len([ln for ln in comp.lines() if ln.startswith("pass ")])
    model = json.loads(model_path.read_text())
    with engine.open(path, segment_bytes=SEGMENT_BYTES) as store:
        check_against_model(store, model)
    final = disk_bytes(path)
    live = live_store_bytes(model, tmp_path / "live")
    peak = max(b for _, b in samples)
    # While they ran, the store never held much more than what was live plus
    # what the writer wrote in the last LAG seconds: the compactor kept up (a
    # pass holds its inputs and outputs at once, hence twice the live bytes).
    worst = 0.0
    for t, b in samples:
        window = [(lb, w) for lt, lb, w in lives if t - LAG <= lt <= t]
        before = [w for lt, _, w in lives if lt < t - LAG]
        if not window or not before:
            continue
        bound = 2 * max(lb for lb, _ in window) + (window[-1][1] - before[-1]) + 8 * SEGMENT_BYTES
        worst = max(worst, b / bound)
    print(
        f"\nsoak {duration:.0f}s (seed {seed}): {ops} writer ops, {len(model['streams'])} live sessions, "
        f"{passes} compaction passes, followers {reader_stats} (refreshes, events read); bytes: final {final}, "
        f"live {live}, peak {peak} ({peak / live:.1f}x live), written about {lives[-1][2]}; "
        f"worst bytes / bound while running {worst:.2f}"
    )
    assert final <= 1.5 * live + SEGMENT_BYTES, f"{final} bytes on disk for {live} live bytes"
    assert worst <= 1.0, "the store grew while the compactor ran: see the bytes above"
    assert passes >= duration / INTERVAL / 4, f"only {passes} passes"
    assert all(refreshes >= 10 for refreshes, _ in reader_stats), reader_stats


def test_soak_30s(tmp_path: Path, crash_seed: int) -> None:
    run_soak(tmp_path, 30.0, crash_seed)


@pytest.mark.slow
def test_soak_five_minutes(tmp_path: Path, crash_seed: int) -> None:
    run_soak(tmp_path, 300.0, crash_seed)
