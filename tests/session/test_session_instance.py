"""SessionInstance: metadata, legacy event types and key order, seq numbering,
previews in UTF-16 code units, changes since the save point, the dirty flag,
and rejection of events that do not fit the schema.

Most tests use the instance alone (no store): what a save would write is
taken with ``take_changes()``. The end-to-end checks against the real legacy
files replay them through a PersistenceManager.
"""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import pytest
from samples import SAMPLES

import engine
from engine import (
    EncodeError,
    InvalidArgumentError,
    InvalidNameError,
    PersistenceManager,
    SeglogError,
    SessionInstance,
    SessionPool,
)

#: The legacy key order of each event type, copied from shared/LEGACY-FORMAT.md
#: (optional keys are added by the tests that pass them).
LEGACY_KEYS: dict[str, list[str]] = {
    "input": ["seq", "ts", "type", "code"],
    "step": ["seq", "ts", "type", "d", "ctrl"],
    "checkpoint": ["seq", "ts", "type", "d", "reason", "stateId"],
    "llm_req": ["seq", "ts", "type", "d", "model", "promptPreview", "receiptKey"],
    "llm_resp": ["seq", "ts", "type", "d", "valuePreview", "durationMs", "receiptKey"],
    "effect": ["seq", "ts", "type", "d", "op", "argsPreview"],
    "resume": ["seq", "ts", "type", "d", "valuePreview"],
    "result": ["seq", "ts", "type", "value"],
    "error": ["seq", "ts", "type", "d", "message"],
}


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def record_one_of_each(inst: SessionInstance) -> None:
    inst.input("(+ 1 2)", ts=100)
    inst.step(0, "(+ 1 2)", ts=101)
    inst.checkpoint(0, "manual", {"control": "x", "n": [1, 2]}, ts=102)
    inst.llm_req(1, "mock-llm", "prompt", "rk", ts=103)
    inst.llm_resp(1, "answer", 7, "rk", request={"op": "infer"}, response={"content": "a"}, ts=104)
    inst.effect(1, "infer.op", "[args]", ts=105)
    inst.resume(1, "value", ts=106)
    inst.result("3", ts=107)
    inst.error(0, "boom", ts=108)


# ----------------------------------------------------------------------------- metadata
def test_new_instance_metadata_and_clean_state() -> None:
    inst = SessionInstance("s1")
    meta = inst.metadata()
    assert meta["name"] == "s1"
    assert meta["id"] == "s1"  # the header id defaults to the name
    assert meta["event_count"] == 0 and meta["checkpoint_count"] == 0 and meta["size_on_disk"] == 0
    assert set(meta) == {"name", "id", "created", "last_accessed", "event_count", "checkpoint_count", "size_on_disk"}
    # created like JavaScript's toISOString(): 2026-11-24T06:40:15.157Z
    assert len(meta["created"]) == 24 and meta["created"][10] == "T" and meta["created"].endswith("Z")
    assert meta["created"][19] == "." and meta["created"][20:23].isdigit()
    assert not inst.dirty and inst.pending_changes == 0 and inst.first_change_at == 0
    assert not inst.take_changes()


def test_explicit_header_and_counts_are_kept() -> None:
    inst = SessionInstance(
        "saved-x", "current", "2026-11-24T06:40:15.157Z", event_count=12, checkpoint_count=3, size_on_disk=999
    )
    assert (inst.name, inst.id, inst.created) == ("saved-x", "current", "2026-11-24T06:40:15.157Z")
    assert inst.input("(x)", ts=1) == 12  # numbering continues from the stored count
    sid = inst.checkpoint(0, "manual", {}, ts=2)
    assert sid == "state-13"
    meta = inst.metadata()
    assert meta["event_count"] == 14 and meta["checkpoint_count"] == 4 and meta["size_on_disk"] == 999


def test_recording_updates_last_accessed() -> None:
    inst = SessionInstance("s")
    inst.last_accessed = 0.0
    inst.input("x", ts=1)
    assert inst.last_accessed > 0


# ------------------------------------------------------------------------- event shapes
def test_every_event_type_has_the_legacy_key_order_and_values() -> None:
    inst = SessionInstance("s")
    record_one_of_each(inst)
    events = inst.take_changes().events
    assert [e["type"] for e in events] == list(LEGACY_KEYS)
    for e in events:
        assert list(e) == LEGACY_KEYS[e["type"]], e
    assert [e["seq"] for e in events] == list(range(9))
    assert [e["ts"] for e in events] == list(range(100, 109))
    by_type = {e["type"]: e for e in events}
    assert by_type["input"]["code"] == "(+ 1 2)"
    assert by_type["step"] == {"seq": 1, "ts": 101, "type": "step", "d": 0, "ctrl": "(+ 1 2)"}
    assert by_type["checkpoint"] == {
        "seq": 2,
        "ts": 102,
        "type": "checkpoint",
        "d": 0,
        "reason": "manual",
        "stateId": "state-2",
    }
    assert by_type["llm_req"] == {
        "seq": 3,
        "ts": 103,
        "type": "llm_req",
        "d": 1,
        "model": "mock-llm",
        "promptPreview": "prompt",
        "receiptKey": "rk",
    }
    assert by_type["llm_resp"] == {
        "seq": 4,
        "ts": 104,
        "type": "llm_resp",
        "d": 1,
        "valuePreview": "answer",
        "durationMs": 7,
        "receiptKey": "rk",
    }
    assert by_type["effect"] == {
        "seq": 5,
        "ts": 105,
        "type": "effect",
        "d": 1,
        "op": "infer.op",
        "argsPreview": "[args]",
    }
    assert by_type["resume"] == {"seq": 6, "ts": 106, "type": "resume", "d": 1, "valuePreview": "value"}
    assert by_type["result"] == {"seq": 7, "ts": 107, "type": "result", "value": "3"}
    assert by_type["error"] == {"seq": 8, "ts": 108, "type": "error", "d": 0, "message": "boom"}
    for e in events:  # every event has the fields of its layout, with their types
        for k, v in e.items():
            assert isinstance(v, int if k in ("seq", "ts", "d", "durationMs") else str), (k, v)


def test_optional_keys_tokens_and_stack_take_their_legacy_place() -> None:
    inst = SessionInstance("s")
    inst.llm_resp(0, "v", 5, "k", request=1, response=2, tokens={"in": 3, "out": 4}, ts=1)
    inst.error(0, "msg", stack="Error: msg\n    at f", ts=2)
    resp, err = inst.take_changes().events
    assert list(resp) == ["seq", "ts", "type", "d", "valuePreview", "tokens", "durationMs", "receiptKey"]
    assert resp["tokens"] == {"in": 3, "out": 4}
    assert list(err) == ["seq", "ts", "type", "d", "message", "stack"]
    assert err["stack"] == "Error: msg\n    at f"


def test_llm_resp_receipt_content_and_key_order() -> None:
    inst = SessionInstance("s")
    inst.llm_resp(2, "v", 9, "key-1", request={"op": "x"}, response={"content": "y"}, ts=50)
    inst.llm_resp(2, "v", 9, "key-2", request=[1], response="r", timestamp=77, tokens=12, ts=60)
    changes = inst.take_changes()
    assert [(k, seq) for k, seq, _ in changes.receipts] == [("key-1", 0), ("key-2", 1)]
    r1, r2 = (r for _, _, r in changes.receipts)
    assert list(r1) == ["key", "request", "response", "timestamp", "durationMs"]
    assert r1 == {
        "key": "key-1",
        "request": {"op": "x"},
        "response": {"content": "y"},
        "timestamp": 50,
        "durationMs": 9,
    }  # timestamp defaults to the event's ts
    assert list(r2) == ["key", "request", "response", "timestamp", "durationMs", "tokens"]
    assert r2["timestamp"] == 77 and r2["tokens"] == 12


def test_checkpoint_state_is_a_snapshot_and_numbered(tmp_path: pathlib.Path) -> None:
    pm = PersistenceManager(SessionPool(4), tmp_path / "store", register_atexit=False, save_interval=60)
    try:
        inst = pm.create_session("s")
        state: dict[str, Any] = {"env": {"x": 1}, "stack": [1, 2, 3]}
        inst.input("a", ts=1)
        sid = inst.checkpoint(0, "llm_boundary", state, ts=2)
        state["env"]["x"] = 2  # the caller reuses its object before any save
        state["stack"].append(4)
        sid2 = inst.checkpoint(0, "effect", state, ts=3)
        assert (sid, sid2) == ("state-1", "state-2")
        assert inst.checkpoint_count == 2
        changes = inst.take_changes()
        assert [s for s, _ in changes.states] == ["state-1", "state-2"]
        inst.restore_changes(changes)
        assert pm.get_state("s", "state-1") == {"env": {"x": 1}, "stack": [1, 2, 3]}
        assert pm.get_state("s", "state-2") == {"env": {"x": 2}, "stack": [1, 2, 3, 4]}
    finally:
        pm.shutdown()


@pytest.mark.parametrize("reason", ["llm_boundary", "periodic", "manual", "effect"])
def test_every_legacy_checkpoint_reason_is_accepted(reason: str) -> None:
    inst = SessionInstance("s")
    inst.checkpoint(3, reason, None, ts=1)
    (event,) = inst.take_changes().events
    assert event["reason"] == reason and event["d"] == 3


def test_ts_defaults_to_now_in_milliseconds() -> None:
    import time

    inst = SessionInstance("s")
    before = int(time.time() * 1000)
    inst.input("x")
    after = int(time.time() * 1000)
    (event,) = inst.take_changes().events
    assert before <= event["ts"] <= after


# ----------------------------------------------------------------------------- previews
PREVIEW_FIELDS = {
    "promptPreview": lambda inst, text: inst.llm_req(0, "m", text, "k", ts=1),
    "valuePreview": lambda inst, text: inst.llm_resp(0, text, 1, "k", request=1, response=2, ts=1),
    "argsPreview": lambda inst, text: inst.effect(0, "op", text, ts=1),
    "resume.valuePreview": lambda inst, text: inst.resume(0, text, ts=1),
}


def _preview_of(field: str, text: str) -> str:
    inst = SessionInstance("s")
    PREVIEW_FIELDS[field](inst, text)
    (event,) = inst.take_changes().events
    return str(event[field.split(".")[-1]])


@pytest.mark.parametrize("field", sorted(PREVIEW_FIELDS))
def test_preview_emoji_at_unit_199_leaves_a_lone_surrogate(field: str) -> None:
    text = "a" * 199 + "\U0001f600" + "tail"
    got = _preview_of(field, text)
    assert got == "a" * 199 + "\ud83d"  # JavaScript's slice(0, 200)
    assert utf16_units(got) == 200


@pytest.mark.parametrize("field", sorted(PREVIEW_FIELDS))
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x" * 200, "x" * 200),
        ("x" * 201, "x" * 200),
        ("é" * 300, "é" * 200),  # BMP: one unit each
        ("\U0001f600" * 100, "\U0001f600" * 100),  # exactly 200 units
        ("\U0001f600" * 150, "\U0001f600" * 100),
        ("b" + "\U0001f600" * 120, "b" + "\U0001f600" * 99 + "\ud83d"),
        ("", ""),
    ],
)
def test_preview_is_cut_to_200_utf16_units(field: str, text: str, expected: str) -> None:
    assert _preview_of(field, text) == expected


def test_non_preview_fields_are_not_cut() -> None:
    inst = SessionInstance("s")
    long = "y" * 5000
    inst.input(long, ts=1)
    inst.step(0, long, ts=1)
    inst.result(long, ts=1)
    inst.error(0, long, stack=long, ts=1)
    key = "k" * 1000  # receipt keys are limited to 1000 bytes, but not cut
    inst.llm_req(0, long, "p", key, ts=1)
    for e in inst.take_changes().events:
        for field in ("code", "ctrl", "value", "message", "stack", "model"):
            if field in e:
                assert e[field] == long, field
        if "receiptKey" in e:
            assert e["receiptKey"] == key


# ------------------------------------------------------------------ changes and dirty
def test_dirty_flag_and_changes_since_the_save_point() -> None:
    inst = SessionInstance("s")
    calls: list[tuple[SessionInstance, int]] = []
    inst.on_change = lambda i, n: calls.append((i, n))
    inst.input("a", ts=1)
    inst.checkpoint(0, "manual", {"s": 1}, ts=2)
    inst.llm_resp(0, "v", 1, "k", request=1, response=2, ts=3)
    assert inst.dirty
    assert inst.pending_changes == 5  # 3 events + 1 state + 1 receipt
    assert inst.first_change_at > 0
    assert calls == [(inst, 1), (inst, 2), (inst, 3)]
    taken = inst.take_changes()  # the save point
    assert len(taken) == 5 and bool(taken)
    assert not inst.dirty and inst.pending_changes == 0 and inst.first_change_at == 0
    inst.result("later", ts=4)  # recorded after the save point
    assert inst.dirty
    assert [e["seq"] for e in inst.take_changes().events] == [3]


def test_restore_changes_puts_a_failed_save_back_before_newer_changes() -> None:
    inst = SessionInstance("s")
    inst.input("a", ts=1)
    inst.checkpoint(0, "manual", 1, ts=2)
    taken = inst.take_changes()
    inst.input("b", ts=3)  # recorded while the save was running
    inst.restore_changes(taken)
    assert inst.dirty and inst.first_change_at > 0
    again = inst.take_changes()
    assert [e["seq"] for e in again.events] == [0, 1, 2]
    assert [s for s, _ in again.states] == ["state-1"]
    inst.restore_changes(engine.session.instance.Changes())  # nothing to put back
    assert not inst.dirty


def test_instance_is_dirty_while_a_save_holds_its_save_lock() -> None:
    inst = SessionInstance("s")
    with inst.save_lock:
        assert inst.dirty  # a save is in progress
    assert not inst.dirty


def test_concurrent_recording_gives_dense_unique_seqs() -> None:
    inst = SessionInstance("s")
    n_threads, per = 4, 300
    seqs: list[list[int]] = [[] for _ in range(n_threads)]

    def work(k: int) -> None:
        for i in range(per):
            seqs[k].append(inst.input(f"{k}:{i}", ts=i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = inst.take_changes().events
    assert [e["seq"] for e in events] == list(range(n_threads * per))
    assert sorted(s for ss in seqs for s in ss) == list(range(n_threads * per))
    for k in range(n_threads):  # each thread's events are in its order
        mine = [int(e["code"].split(":")[1]) for e in events if e["code"].startswith(f"{k}:")]
        assert mine == list(range(per))
        assert seqs[k] == sorted(seqs[k])


# --------------------------------------------------------------------------- bad input
class Unencodable:
    pass


BAD_CALLS: dict[str, Any] = {
    "input code int": lambda i: i.input(123, ts=1),
    "input ts float": lambda i: i.input("x", ts=1.5),
    "input ts bool": lambda i: i.input("x", ts=True),
    "input ts str": lambda i: i.input("x", ts="1"),
    "step d str": lambda i: i.step("0", "c", ts=1),
    "step d bool": lambda i: i.step(False, "c", ts=1),
    "step ctrl None": lambda i: i.step(0, None, ts=1),
    "checkpoint bad reason": lambda i: i.checkpoint(0, "whenever", {}, ts=1),
    "checkpoint reason None": lambda i: i.checkpoint(0, None, {}, ts=1),
    "checkpoint d float": lambda i: i.checkpoint(0.0, "manual", {}, ts=1),
    "checkpoint object state": lambda i: i.checkpoint(0, "manual", Unencodable(), ts=1),
    "checkpoint set state": lambda i: i.checkpoint(0, "manual", {1, 2}, ts=1),
    "checkpoint nested object": lambda i: i.checkpoint(0, "manual", {"a": [Unencodable()]}, ts=1),
    "llm_req model int": lambda i: i.llm_req(0, 5, "p", "k", ts=1),
    "llm_req prompt bytes": lambda i: i.llm_req(0, "m", b"p", "k", ts=1),
    "llm_req key None": lambda i: i.llm_req(0, "m", "p", None, ts=1),
    "llm_resp empty key": lambda i: i.llm_resp(0, "v", 1, "", request=1, response=2, ts=1),
    "llm_resp key int": lambda i: i.llm_resp(0, "v", 1, 7, request=1, response=2, ts=1),
    "llm_resp duration str": lambda i: i.llm_resp(0, "v", "1", "k", request=1, response=2, ts=1),
    "llm_resp timestamp str": lambda i: i.llm_resp(0, "v", 1, "k", request=1, response=2, timestamp="t", ts=1),
    "llm_resp request object": lambda i: i.llm_resp(0, "v", 1, "k", request=Unencodable(), response=2, ts=1),
    "llm_resp response object": lambda i: i.llm_resp(0, "v", 1, "k", request=1, response=Unencodable(), ts=1),
    "llm_resp tokens object": lambda i: i.llm_resp(0, "v", 1, "k", request=1, response=2, tokens=Unencodable(), ts=1),
    "effect op None": lambda i: i.effect(0, None, "a", ts=1),
    "effect args list": lambda i: i.effect(0, "op", ["a"], ts=1),
    "resume value int": lambda i: i.resume(0, 3, ts=1),
    "result value None": lambda i: i.result(None, ts=1),
    "error message int": lambda i: i.error(0, 1, ts=1),
    "error stack int": lambda i: i.error(0, "m", stack=1, ts=1),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_events_that_do_not_fit_the_schema_are_rejected_and_record_nothing(case: str) -> None:
    inst = SessionInstance("s")
    inst.input("before", ts=0)
    before = inst.metadata()
    with pytest.raises(InvalidArgumentError) as info:
        BAD_CALLS[case](inst)
    assert isinstance(info.value, SeglogError) and isinstance(info.value, ValueError)
    after = inst.metadata()
    assert after["event_count"] == before["event_count"] == 1
    assert after["checkpoint_count"] == before["checkpoint_count"] == 0
    changes = inst.take_changes()
    assert len(changes.events) == 1 and not changes.states and not changes.receipts
    assert inst.input("after", ts=2) == 1  # no seq was used up


def test_unencodable_state_raises_encode_error() -> None:
    inst = SessionInstance("s")
    with pytest.raises(EncodeError):
        inst.checkpoint(0, "manual", {"f": lambda: None}, ts=1)
    assert inst.checkpoint_count == 0 and not inst.dirty


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda i: i.input("x", ts=1 << 70), id="ts-too-big"),
        pytest.param(lambda i: i.input("x", ts=-(1 << 70)), id="ts-too-negative"),
        pytest.param(lambda i: i.step(1 << 64, "c", ts=1), id="d-too-big"),
        pytest.param(lambda i: i.llm_resp(0, "v", 1 << 65, "k", request=1, response=2, ts=1), id="durationMs-too-big"),
    ],
)
def test_integers_msgpack_cannot_store_are_rejected_when_recorded(call: Any) -> None:
    """An int the store cannot encode is refused by the recording method (and
    the instance stays clean), not accepted to fail every later save of the
    session."""
    inst = SessionInstance("s")
    with pytest.raises(InvalidArgumentError):
        call(inst)
    assert not inst.dirty and inst.event_count == 0


BAD_NAMES = [
    "",
    ".",
    "..",
    "a/b",
    "/abs",
    "a\\b",
    "..\\x",
    "../etc",
    "a\x00b",
    "tab\there",
    "nl\n",
    "del\x7f",
    "x" * 201,
    "\ud800",
    5,
    None,
    b"bytes",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_session_names_are_rejected(name: Any) -> None:
    with pytest.raises(InvalidNameError):
        SessionInstance(name)


@pytest.mark.parametrize("name", ["a", "a.b", "...", "saved-ch01", "sessão ☃", "x" * 200, "with space"])
def test_valid_session_names_are_accepted(name: str) -> None:
    assert SessionInstance(name).name == name


# ----------------------------------------------------------------- against real files
def _replay(inst: SessionInstance, lines: list[dict[str, Any]], index: dict[str, Any]) -> None:
    """Record the events of a legacy .jsonl through the instance's methods."""
    for e in lines:
        t = e["type"]
        if t == "input":
            inst.input(e["code"], ts=e["ts"])
        elif t == "step":
            inst.step(e["d"], e["ctrl"], ts=e["ts"])
        elif t == "checkpoint":
            assert inst.checkpoint(e["d"], e["reason"], index["states"][e["stateId"]], ts=e["ts"]) == e["stateId"]
        elif t == "llm_req":
            inst.llm_req(e["d"], e["model"], e["promptPreview"], e["receiptKey"], ts=e["ts"])
        elif t == "llm_resp":
            r = index["receipts"][e["receiptKey"]]
            inst.llm_resp(
                e["d"],
                e["valuePreview"],
                e["durationMs"],
                e["receiptKey"],
                request=r["request"],
                response=r["response"],
                timestamp=r["timestamp"],
                tokens=e.get("tokens"),
                ts=e["ts"],
            )
        elif t == "effect":
            inst.effect(e["d"], e["op"], e["argsPreview"], ts=e["ts"])
        elif t == "resume":
            inst.resume(e["d"], e["valuePreview"], ts=e["ts"])
        elif t == "result":
            inst.result(e["value"], ts=e["ts"])
        elif t == "error":
            inst.error(e["d"], e["message"], stack=e.get("stack"), ts=e["ts"])
        else:
            raise AssertionError(t)


SAMPLE_SESSIONS = [
    ("mock-effects", "mock-effects"),
    ("ch01-getting-started", "forked-ch01-getting-started"),
]


@pytest.mark.parametrize(("folder", "stem"), SAMPLE_SESSIONS)
def test_replaying_a_real_legacy_session_reproduces_its_lines_and_index(
    tmp_path: pathlib.Path, folder: str, stem: str
) -> None:
    base = SAMPLES / folder / "sessions"
    if not base.is_dir():
        pytest.skip(f"legacy samples not found at {SAMPLES}")
    raw_lines = (base / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()
    header, *lines = [json.loads(line) for line in raw_lines]
    index = json.loads((base / f"{stem}.index.json").read_text(encoding="utf-8"))

    inst = SessionInstance(stem, header["id"], header["created"])
    _replay(inst, lines, index)
    # Before any save: every event serializes to exactly the legacy line.
    pending = inst.take_changes()
    for event, line in zip(pending.events, raw_lines[1:], strict=True):
        assert json.dumps(event, separators=(",", ":"), ensure_ascii=False) == line
    inst.restore_changes(pending)

    pm = PersistenceManager(SessionPool(4), tmp_path / "store", register_atexit=False, save_interval=60)
    try:
        pool_inst = pm.create_session(stem, header["id"])
        _replay(pool_inst, lines, index)
        pm.shutdown()
        pm = PersistenceManager(SessionPool(4), tmp_path / "store", register_atexit=False, save_interval=60)
        events = pm.events(stem)
        assert events == lines
        for e, line in zip(events, raw_lines[1:], strict=True):
            assert json.dumps(e, separators=(",", ":"), ensure_ascii=False) == line  # key order kept
        assert pm.checkpoints(stem) == [{k: c[k] for k in ("seq", "stateId", "reason")} for c in index["checkpoints"]]
        for sid, state in index["states"].items():
            assert pm.get_state(stem, sid) == state
        for key, receipt in index["receipts"].items():
            got = pm.get_receipt(stem, key)
            assert got == receipt and list(got) == list(receipt)
        meta = {m["name"]: m for m in pm.list_sessions()}[stem]
        assert meta["id"] == header["id"] and meta["event_count"] == index["eventCount"]
        assert meta["checkpoint_count"] == len(index["checkpoints"])
    finally:
        pm.shutdown()


def test_lone_surrogate_preview_survives_save_and_reopen(tmp_path: pathlib.Path) -> None:
    pm = PersistenceManager(SessionPool(4), tmp_path / "store", register_atexit=False, save_interval=60)
    try:
        inst = pm.create_session("s")
        inst.llm_req(0, "m", "p" * 199 + "\U0001f600" + "rest", "k", ts=1)
        inst.result("half \udc00 pair", ts=2)
        pm.shutdown()
        pm = PersistenceManager(SessionPool(4), tmp_path / "store", register_atexit=False, save_interval=60)
        req, res = pm.events("s")
        assert req["promptPreview"] == "p" * 199 + "\ud83d"
        assert res["value"] == "half \udc00 pair"
    finally:
        pm.shutdown()
