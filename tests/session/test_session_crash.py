"""SIGKILL campaign against the session layer.

The child (tests/session_crash_worker.py) records REPL commands into the
session ``crash`` in a loop, calls ``force_save`` after each one and then
prints ``acked N``; a thread of it records into a second session that only
the background saver writes. The parent SIGKILLs it at random moments,
reopens the directory with a new PersistenceManager and checks that:

* every acked command is there, intact (every event, in order, exactly the
  expected values and legacy key order), exactly once;
* seqs are dense in both sessions and commands follow each other (an
  unacked command may be cut short, only at the end of a run);
* the checkpoint list names every checkpoint event, even before the
  session is loaded, and every state and receipt reads back exactly.

``--crash-seed`` replays the kill delays of a run; ``--long`` kills more often.
"""

from __future__ import annotations

import importlib.util
import pathlib
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from samples import SAMPLES

from engine import PersistenceManager, SessionPool

_WORKER_PATH = pathlib.Path(__file__).with_name("session_crash_worker.py")
_spec = importlib.util.spec_from_file_location("seglog_session_crash_worker", _WORKER_PATH)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

STATES = SAMPLES / "mock-effects" / "sessions" / "mock-effects.index.json"
KILLS = 10
_ACK = re.compile(r"^acked (\d+)$")


def run_child(store: pathlib.Path, delay: float) -> tuple[int, list[int]]:
    """Start the worker, SIGKILL it ``delay`` seconds after it is ready; return
    (first command of this run, acked command numbers)."""
    args = [sys.executable, str(_WORKER_PATH), str(store)]
    if STATES.exists():
        args.append(str(STATES))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if not ready.startswith("ready "):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"worker did not start: {ready!r}\n{err}")
        first = int(ready.split()[1])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Read through the file objects: readline() may have buffered acks already.
        out = proc.stdout.read()
        err = proc.stderr.read() if proc.stderr is not None else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"worker exited by itself ({proc.returncode}):\n{err}"
    # Every "acked" line was printed after force_save returned, so all count.
    acked = [int(m.group(1)) for line in out.splitlines() if (m := _ACK.match(line))]
    assert acked == list(range(first, first + len(acked))), "the worker acks its commands in order"
    return first, acked


def split_commands(events: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """Group the events of ``crash`` by command (each starts with its input event)."""
    groups: list[tuple[int, list[dict[str, Any]]]] = []
    for e in events:
        if e["type"] == "input":
            m = re.match(r"^cmd (\d+)$", e["code"])
            assert m, e
            groups.append((int(m.group(1)), [e]))
        else:
            assert groups, f"event before the first command: {e}"
            groups[-1][1].append(e)
    return groups


def verify(store: pathlib.Path, acked: set[int], states: list[dict[str, Any]], from_seq: int = 0) -> int:
    """Check the store after a kill; return its event count. States and receipts
    are read back from ``from_seq`` on (the rest was read after an earlier kill)."""
    pm = PersistenceManager(SessionPool(4), store, register_atexit=False, save_interval=60)
    try:
        # Checkpoint list first: before anything loads (and repairs) the session.
        cps_before_load = pm.checkpoints(worker.SESSION)
        events = pm.events(worker.SESSION)
        assert [e["seq"] for e in events] == list(range(len(events))), "seqs must be dense"
        groups = split_commands(events)
        numbers = [n for n, _ in groups]
        assert numbers == list(range(len(numbers))), "commands must follow each other, each once"
        for idx, (n, group) in enumerate(groups):
            expected = [dict(exp) for _, _, exp, _ in worker.command(n, states)]
            for e, exp in zip(group, expected, strict=False):
                if exp["type"] == "checkpoint":
                    exp["stateId"] = f"state-{e['seq']}"
                got = {k: v for k, v in e.items() if k != "seq"}
                assert got == exp, f"command {n}: {got} != {exp}"
                assert list(got) == list(exp), f"command {n}: legacy key order"
            if len(group) == len(expected):
                continue
            assert len(group) < len(expected)
            assert n not in acked, f"acked command {n} is cut short: {len(group)} of {len(expected)} events"
            # A cut-short command can only be the last one of a run: the next run starts the next command.
            assert idx == len(groups) - 1 or groups[idx + 1][0] == n + 1
        missing = acked - set(numbers)
        assert not missing, f"acked commands lost: {sorted(missing)[:10]}"
        cp_events = [e for e in events if e["type"] == "checkpoint"]
        expected_cps = [{"seq": e["seq"], "stateId": e["stateId"], "reason": e["reason"]} for e in cp_events]
        assert cps_before_load == expected_cps, "checkpoint list disagrees with the events (before load)"
        inst = pm.load_session(worker.SESSION)
        assert inst.event_count == len(events)
        assert pm.checkpoints(worker.SESSION) == expected_cps
        payloads = {}
        for n, group in groups:
            for e, (_, _, _, payload) in zip(group, worker.command(n, states), strict=False):
                payloads[e["seq"]] = payload
        for e in cp_events:
            if e["seq"] >= from_seq:
                assert pm.get_state(worker.SESSION, e["stateId"]) == payloads[e["seq"]], e
        for e in events:
            if e["type"] == "llm_resp" and e["seq"] >= from_seq:
                assert pm.get_receipt(worker.SESSION, e["receiptKey"]) == payloads[e["seq"]], e
        side = pm.events(worker.SIDE)
        assert [e["code"] for e in side] == [f"side {i}" for i in range(len(side))]
        assert [e["seq"] for e in side] == list(range(len(side)))
        meta = {m["name"]: m for m in pm.list_sessions()}
        assert meta[worker.SESSION]["event_count"] == len(events)
        return len(events)
    finally:
        pm.shutdown()


def test_sigkill_loses_no_acked_command(tmp_path: pathlib.Path, crash_seed: int, kill_factor: int) -> None:
    rng = random.Random(crash_seed)
    states = worker.load_states(str(STATES) if STATES.exists() else None)
    store = tmp_path / "store"
    acked: set[int] = set()
    checked = 0
    kills = KILLS * kill_factor
    for k in range(kills):
        delay = rng.choice([0.0, 0.002, 0.01]) if k % 4 == 0 else rng.uniform(0.0, 0.25)
        first, got = run_child(store, delay)
        assert first == (max(acked) + 1 if acked else 0) or first not in acked, (
            f"run {k} restarted at command {first}, which was acked already"
        )
        acked.update(got)
        try:
            # States of the last command before the kill are read again: it may have been cut short.
            checked = verify(store, acked, states, max(checked - 10, 0))
        except AssertionError as exc:
            raise AssertionError(f"after kill {k + 1} (crash seed {crash_seed}): {exc}") from exc
    assert len(acked) >= kills, f"only {len(acked)} commands were acked in {kills} runs"
    verify(store, acked, states)  # every state and receipt, once more, at the end
