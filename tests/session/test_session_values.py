"""What a recorded value becomes: integers beyond 64 bits as JavaScript holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from compat.materialize import session_bytes
from engine import EncodeError, PersistenceManager, SessionPool
from engine.session.values import js_integer_text, js_numbers

JS_BIG = 123456789012345680000  # what JavaScript prints for 1.2345678901234568e20


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (1e20, "100000000000000000000"),
        (1.2345678901234568e20, str(JS_BIG)),
        (18446744073709552000.0, "18446744073709552000"),
        (-5e20, "-500000000000000000000"),
        (0.0, "0"),
        (9007199254740993.0, "9007199254740992"),
    ],
)
def test_js_integer_text(x: float, text: str) -> None:
    assert js_integer_text(x) == text


def test_big_integers_are_stored_as_javascript_held_them(tmp_path: Path) -> None:
    pm = PersistenceManager(SessionPool(4), tmp_path / "s", save_interval=60.0, register_atexit=False)
    try:
        s = pm.create_session("big")
        s.input("(* 123456789 1000000000000)")
        state = {"value": JS_BIG, "list": [JS_BIG, -JS_BIG, 7], "small": 2**63 - 1}
        state_id = s.checkpoint(0, "manual", state)
        s.llm_req(0, "m", "q", "k1")
        s.llm_resp(0, "v", 5, "k1", request={"n": JS_BIG}, response={"content": "x"}, tokens={"in": JS_BIG})
        s.result("ok")
        pm.force_save()
        got = pm.get_state("big", state_id)
        assert got == {"value": float(JS_BIG), "list": [float(JS_BIG), -float(JS_BIG), 7], "small": 2**63 - 1}
        assert isinstance(got["small"], int)
        assert pm.get_receipt("big", "k1")["request"] == {"n": float(JS_BIG)}
        jsonl, index = session_bytes(pm.persister("big"))
        assert b'"tokens":{"in":123456789012345680000}' in jsonl, "materialized as JavaScript prints it"
        assert b"123456789012345680000" in index
    finally:
        pm.shutdown()


@pytest.mark.parametrize("value", [2**64, 2**70, -(2**63) - 1, 10**22])
def test_integers_javascript_would_print_otherwise_are_refused_when_recorded(tmp_path: Path, value: int) -> None:
    pm = PersistenceManager(SessionPool(4), tmp_path / "s", save_interval=60.0, register_atexit=False)
    try:
        s = pm.create_session("big")
        with pytest.raises(EncodeError, match="beyond 64 bits"):
            s.checkpoint(0, "manual", {"v": value})
        with pytest.raises(EncodeError, match="beyond 64 bits"):
            s.llm_resp(0, "v", 5, "k", request={"n": value}, response=None)
        assert s.event_count == 0, "nothing was recorded"
    finally:
        pm.shutdown()


def test_js_numbers_leaves_everything_else_alone() -> None:
    value = {"a": [1, 2.5, True, None, "s", b"b", (3, 4)], "n": -(2**63), "u": 2**64 - 1}
    assert js_numbers(value) == {"a": [1, 2.5, True, None, "s", b"b", [3, 4]], "n": -(2**63), "u": 2**64 - 1}
