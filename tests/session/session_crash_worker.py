"""Child process of the session crash test, and the workload both sides agree on.

Run as ``python session_crash_worker.py STORE_DIR [STATES_JSON]``. The worker
opens a PersistenceManager on STORE_DIR (background saves every few
milliseconds), finds where the session ``crash`` stopped (the number of the
last command whose input event is stored) and records the following commands
in a loop, each followed by ``force_save``; after force_save returns it
prints ``acked N``. It runs until it is killed.

Command ``N`` is a pure function of N (:func:`command`), so the parent can
recompute every event, state and receipt that an acked command must have
left in the store. Checkpoint states are the real REPL states of
``STATES_JSON`` (a legacy ``*.index.json``) with a field changed per command,
or small synthetic ones when no file is given.

A background thread also records into a second session, ``side``, without
ever forcing a save, so kills land in background saves too.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SESSION = "crash"
SIDE = "side"
_CMD = re.compile(r"^cmd (\d+)$")


def load_states(path: str | None) -> list[dict[str, Any]]:
    if path:
        with open(path, encoding="utf-8") as f:
            return list(json.load(f)["states"].values())
    return [{"control": "x" * 64, "storeNext": 0, "env": list(range(50))}]


def state_for(n: int, states: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(states[n % len(states)], storeNext=n)


def command(n: int, states: list[dict[str, Any]]) -> list[tuple[str, tuple[Any, ...], dict[str, Any], Any]]:
    """Command ``n``: ``(method, args, expected event without seq, state or receipt)``."""
    ts = 1_700_000_000_000 + n
    code = f"cmd {n}"
    ops: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = [
        ("input", (code,), {"ts": ts, "type": "input", "code": code}, None),
        ("step", (0, code), {"ts": ts, "type": "step", "d": 0, "ctrl": code}, None),
    ]
    if n % 3 == 0:
        key = f"rk-{n}"
        prompt = f"prompt {n} " + "\U0001f600" * (n % 120)  # long ones are cut in the middle of a pair
        cut = prompt.encode("utf-16-le", "surrogatepass")[:400].decode("utf-16-le", "surrogatepass")
        receipt = {
            "key": key,
            "request": {"n": n, "prompt": prompt},
            "response": {"content": f"r{n}"},
            "timestamp": ts,
            "durationMs": n % 50,
        }
        ops += [
            (
                "checkpoint",
                (1, "llm_boundary", state_for(n, states)),
                {"ts": ts, "type": "checkpoint", "d": 1, "reason": "llm_boundary"},
                state_for(n, states),
            ),
            (
                "llm_req",
                (1, "mock-llm", prompt, key),
                {"ts": ts, "type": "llm_req", "d": 1, "model": "mock-llm", "promptPreview": cut, "receiptKey": key},
                None,
            ),
            (
                "llm_resp",
                (1, f"r{n}", n % 50, key),
                {
                    "ts": ts,
                    "type": "llm_resp",
                    "d": 1,
                    "valuePreview": f"r{n}",
                    "durationMs": n % 50,
                    "receiptKey": key,
                },
                receipt,
            ),
        ]
    if n % 5 == 4:
        ops.append(
            (
                "error",
                (0, f"unbound var v{n}"),
                {"ts": ts, "type": "error", "d": 0, "message": f"unbound var v{n}"},
                None,
            )
        )
    else:
        ops.append(("result", (str(n),), {"ts": ts, "type": "result", "value": str(n)}, None))
    ops.append(
        (
            "checkpoint",
            (0, "manual", state_for(n + 1, states)),
            {"ts": ts, "type": "checkpoint", "d": 0, "reason": "manual"},
            state_for(n + 1, states),
        )
    )
    return ops


def record(inst: Any, n: int, states: list[dict[str, Any]]) -> None:
    ts = 1_700_000_000_000 + n
    for method, args, _, payload in command(n, states):
        fn: Callable[..., Any] = getattr(inst, method)
        if method == "llm_resp":
            fn(*args, request=payload["request"], response=payload["response"], ts=ts)
        else:
            fn(*args, ts=ts)


def last_command(events: list[dict[str, Any]]) -> int:
    """The number of the last command whose input event is in ``events`` (-1: none)."""
    for e in reversed(events):
        if e["type"] == "input":
            m = _CMD.match(e["code"])
            if m:
                return int(m.group(1))
    return -1


def main(directory: str, states_path: str | None) -> None:
    import engine

    states = load_states(states_path)
    pm = engine.PersistenceManager(
        engine.SessionPool(4), directory, save_interval=0.01, save_after=6, register_atexit=False
    )
    for name in (SESSION, SIDE):
        if not pm.has_session(name):
            pm.create_session(name)
    inst = pm.load_session(SESSION)
    side = pm.load_session(SIDE)
    n = last_command(pm.events(SESSION, max(inst.event_count - 20, 0))) + 1

    def side_loop() -> None:  # saved only by the background saver
        i = side.event_count
        while True:
            side.input(f"side {i}", ts=i)
            i += 1
            time.sleep(0.001)

    threading.Thread(target=side_loop, daemon=True).start()
    print(f"ready {n}", flush=True)
    while True:
        record(inst, n, states)
        pm.force_save(SESSION)
        print(f"acked {n}", flush=True)
        n += 1
        time.sleep(0.002)  # a REPL between commands


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
