"""What the tests of forks, trims and compaction share: a manager on a store with small
segments, a REPL command to record, and a snapshot of all a reader gets of a session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import engine
from compat.materialize import session_bytes
from engine import PersistenceManager, SessionPool
from engine.session.instance import SessionInstance

SEG = 8192


def pm_at(path: Path) -> PersistenceManager:
    return PersistenceManager(
        SessionPool(16), path, save_interval=60.0, register_atexit=False, store_options={"segment_bytes": SEG}
    )


def command(s: SessionInstance, n: int, receipt: str | None = None) -> None:
    """One REPL command: 8 events (10 with an LLM call), a checkpoint with its state."""
    s.input(f"(f {n})")
    for i in range(5):
        s.step(i % 2, f"(g {n} {i})")
    if receipt is not None:
        s.llm_req(1, "mock", f'"q{n}"', receipt)
        s.llm_resp(1, f"a{n}", 10, receipt, request={"q": n}, response={"content": f"answer {n} " * 40})
    s.result(f"r{n}")
    s.checkpoint(0, "manual", {"n": n, "env": [[f"x{i}", i * n] for i in range(40)]})


def snapshot(pm: PersistenceManager, name: str, receipts: list[str]) -> dict[str, Any]:
    """Everything a reader can get of a session, and its legacy files."""
    cps = pm.checkpoints(name)
    return {
        "events": pm.events(name),
        "checkpoints": cps,
        "states": [pm.get_state(name, cp["stateId"]) for cp in cps],
        "receipts": {k: _receipt(pm, name, k) for k in receipts},
        "legacy": session_bytes(pm.persister(name)),
    }


def _receipt(pm: PersistenceManager, name: str, key: str) -> Any:
    try:
        return pm.get_receipt(name, key)
    except engine.UnknownReceiptError:
        return None


def seg_bytes(path: Path) -> int:
    return sum(os.path.getsize(path / n) for n in os.listdir(path) if n.endswith(".seg"))
