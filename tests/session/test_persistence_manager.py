"""PersistenceManager: saving (explicit, throttled background, forced, at
shutdown, async), loading, the queries that do not load whole sessions,
forks, save-as and delete, incremental and compact storage, bad input,
failed saves and use after shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import random
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Managers
from samples import SAMPLES

from engine import (
    BlobNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    PersistenceManager,
    SeglogError,
    SessionExistsError,
    SessionInstance,
    SessionPool,
    StoreClosedError,
    StoreFailedError,
    StoreLockedError,
    UnknownReceiptError,
    UnknownSessionError,
    UnknownStateError,
)
from engine.errors import SaveFailedError
from engine.session import layout
from engine.session import persister as persister_mod


@pytest.fixture(scope="module")
def real_states() -> list[dict[str, Any]]:
    """The ten real, ~16 KB checkpoint states of the mock-effects sample."""
    path = SAMPLES / "mock-effects" / "sessions" / "mock-effects.index.json"
    if not path.exists():
        pytest.skip(f"legacy samples not found at {SAMPLES}")
    return list(json.loads(path.read_text(encoding="utf-8"))["states"].values())


def command(inst: SessionInstance, i: int, state: Any) -> None:
    """One REPL command: input, step, result and a checkpoint with its state."""
    inst.input(f"(cmd {i})", ts=1000 + i)
    inst.step(0, f"(cmd {i})", ts=1000 + i)
    inst.result(str(i), ts=1000 + i)
    inst.checkpoint(0, "manual", state, ts=1000 + i)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def written(pm: PersistenceManager) -> int:
    return pm.store.stats().bytes_written


# ------------------------------------------------------------------------ construction
@pytest.mark.parametrize("kw", [{"save_interval": 0}, {"save_interval": -1.0}, {"save_after": 0}])
def test_bad_settings_are_rejected(managers: Managers, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        managers(**kw)


def test_a_second_manager_on_the_same_directory_is_locked_out(managers: Managers) -> None:
    managers()
    with pytest.raises(StoreLockedError):
        managers()


# -------------------------------------------------------------------- create and load
def test_create_session_and_its_errors(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    assert isinstance(a, SessionInstance) and pm.pool.get("a") is a
    assert pm.has_session("a") and not pm.has_session("b")
    assert pm.load_session("a") is a  # the pooled instance
    with pytest.raises(SessionExistsError):
        pm.create_session("a")
    b = pm.create_session("saved-x", session_id="current")
    assert b.id == "current" and b.name == "saved-x"


def test_load_unknown_session_is_a_clear_error(managers: Managers) -> None:
    pm = managers()
    with pytest.raises(UnknownSessionError) as info:
        pm.load_session("nope")
    assert isinstance(info.value, LookupError) and isinstance(info.value, SeglogError)
    assert "nope" in str(info.value)


def test_load_after_reopen_gives_the_complete_instance(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a", session_id="hdr-id")
    for i in range(3):
        command(a, i, {"i": i})
    created = a.created
    pm = managers.reopen(pm)
    assert len(pm.pool) == 0
    inst = pm.load_session("a")
    assert (inst.name, inst.id, inst.created) == ("a", "hdr-id", created)
    assert inst.event_count == 12 and inst.checkpoint_count == 3 and inst.size_on_disk > 0
    assert not inst.dirty and pm.pool.get("a") is inst
    assert inst.input("next", ts=1) == 12
    assert inst.checkpoint(0, "manual", {"i": 99}, ts=2) == "state-13"
    pm = managers.reopen(pm)
    assert [e["seq"] for e in pm.events("a")] == list(range(14))
    assert pm.get_state("a", "state-13") == {"i": 99} and pm.get_state("a", "state-3") == {"i": 0}


# ------------------------------------------------------------------------------- saving
def test_save_session_returns_changes_and_a_clean_save_writes_nothing(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=1)
    a.checkpoint(0, "manual", {"s": 1}, ts=2)
    a.llm_resp(0, "v", 3, "k", request=1, response=2, ts=3)
    assert pm.save_session(a) == 5  # 3 events, 1 state, 1 receipt
    assert not a.dirty and a.size_on_disk > 0
    before = written(pm)
    assert pm.save_session(a) == 0
    assert pm.save_session("a") == 0
    assert pm.force_save("a") == 0 and pm.force_save() == 0 and pm.save_dirty_sessions() == 0
    assert written(pm) == before


def test_save_session_by_name(managers: Managers) -> None:
    pm = managers(size=1)
    a = pm.create_session("a")
    a.input("x", ts=1)
    assert pm.save_session("a") == 1
    with pytest.raises(UnknownSessionError):
        pm.save_session("nope")
    with pytest.raises(UnknownSessionError):
        pm.force_save("nope")
    pm.create_session("b")  # evicts a
    assert pm.save_session("a") == 0  # known but not in memory: nothing to save


def test_save_dirty_sessions_saves_each_dirty_one(managers: Managers) -> None:
    pm = managers()
    a, b, c = (pm.create_session(n) for n in "abc")
    a.input("1", ts=1)
    c.input("1", ts=1)
    c.input("2", ts=2)
    assert pm.save_dirty_sessions() == 3
    assert not any(i.dirty for i in (a, b, c))
    assert [e["code"] for e in pm.events("c")] == ["1", "2"]


def test_a_clean_session_costs_nothing(managers: Managers) -> None:
    pm = managers(save_interval=0.02, save_after=1)
    for name in ("a", "b", "c"):
        pm.create_session(name).input("x", ts=1)
    assert wait_for(lambda: not pm.pool.dirty_sessions())
    saves, before = pm.saves, written(pm)
    time.sleep(0.3)  # many background ticks over clean sessions
    assert pm.saves == saves and written(pm) == before


def test_background_save_after_save_after_changes(managers: Managers) -> None:
    pm = managers(save_interval=60.0, save_after=5)
    a = pm.create_session("a")
    for i in range(4):
        a.input(str(i), ts=i)
    time.sleep(0.4)  # more than one background tick: not due yet
    assert pm.saves == 0 and a.pending_changes == 4
    a.input("4", ts=4)
    assert wait_for(lambda: not a.dirty, 3.0), "5 changes must trigger a save"
    assert pm.saves == 1


def test_background_save_after_save_interval(managers: Managers) -> None:
    pm = managers(save_interval=0.4, save_after=1000)
    a = pm.create_session("a")
    t0 = time.monotonic()
    a.input("x", ts=1)
    assert a.dirty
    assert wait_for(lambda: not a.dirty, 5.0), "the save_interval must trigger a save"
    assert time.monotonic() - t0 >= 0.35
    assert pm.saves == 1
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == ["x"]


def _is_events_stream(stream: str) -> bool:
    uid = layout.stream_owner(stream)
    return uid is not None and stream == layout.ev_stream(uid)


class Gate:
    """Blocks store.append_batch of the events stream until opened."""

    def __init__(self, pm: PersistenceManager, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        orig = pm.store.append_batch

        def gated(stream: str, values: Any) -> int:
            if _is_events_stream(stream) and not self.release.is_set():
                self.entered.set()
                self.release.wait(10)
            return orig(stream, values)

        monkeypatch.setattr(pm.store, "append_batch", gated)


def test_force_save_waits_for_a_save_in_progress_then_saves_the_rest(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("first", ts=1)
    gate = Gate(pm, monkeypatch)
    first = threading.Thread(target=pm.save_session, args=(a,), daemon=True)
    first.start()
    assert gate.entered.wait(5)
    a.input("during", ts=2)  # recorded while the first save runs
    assert a.dirty
    result: list[int] = []
    forced = threading.Thread(target=lambda: result.append(pm.force_save("a")), daemon=True)
    forced.start()
    forced.join(0.2)
    assert forced.is_alive(), "force_save must wait for the save in progress"
    gate.release.set()
    first.join(5)
    forced.join(5)
    assert result == [1]  # the event recorded during the first save
    assert not a.dirty
    pm = managers.reopen(pm)
    assert [(e["seq"], e["code"]) for e in pm.events("a")] == [(0, "first"), (1, "during")]


def test_event_recorded_during_a_background_save_is_written_by_the_next(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = managers(save_interval=0.02, save_after=1)
    a = pm.create_session("a")
    gate = Gate(pm, monkeypatch)
    a.input("first", ts=1)
    assert gate.entered.wait(5), "the background save did not start"
    a.checkpoint(0, "manual", {"n": 1}, ts=2)
    a.llm_resp(0, "v", 1, "k", request=1, response=2, ts=3)
    gate.release.set()
    assert wait_for(lambda: not a.dirty, 5.0)
    pm = managers.reopen(pm)
    assert [e["type"] for e in pm.events("a")] == ["input", "checkpoint", "llm_resp"]
    assert pm.get_state("a", "state-1") == {"n": 1}
    assert pm.get_receipt("a", "k")["response"] == 2


def test_thread_recording_while_background_saves_run_loses_nothing(managers: Managers) -> None:
    pm = managers(save_interval=0.005, save_after=7)
    a = pm.create_session("a")
    n = 1500
    errors: list[BaseException] = []

    def repl() -> None:
        try:
            for i in range(n):
                if i % 10 == 9:
                    a.checkpoint(i % 3, "periodic", {"i": i, "pad": "s" * (i % 50)}, ts=i)
                elif i % 25 == 0:
                    a.llm_resp(1, f"v{i}", i, f"key-{i}", request={"i": i}, response=[i], ts=i)
                else:
                    a.input(f"code {i}", ts=i)
                if i % 10 == 0:
                    time.sleep(0.002)  # a REPL between commands
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=repl)
    t.start()
    while t.is_alive():  # explicit saves and reads race the background saves
        pm.force_save()
        pm.events("a", max(a.event_count - 5, 0))
        time.sleep(0.002)
    t.join()
    assert not errors
    assert pm.saves > 10, "the background saver should have run many times meanwhile"
    pm = managers.reopen(pm)
    events = pm.events("a")
    assert [e["seq"] for e in events] == list(range(n))
    assert [e["ts"] for e in events] == list(range(n))
    for e in events:
        i = e["seq"]
        if i % 10 == 9:
            assert e["type"] == "checkpoint" and e["stateId"] == f"state-{i}"
        elif i % 25 == 0:
            assert e["type"] == "llm_resp" and e["receiptKey"] == f"key-{i}"
        else:
            assert e == {"seq": i, "ts": i, "type": "input", "code": f"code {i}"}
    cps = pm.checkpoints("a")
    assert [c["seq"] for c in cps] == [i for i in range(n) if i % 10 == 9]
    for i in (9, 499, 1099, n - 1):
        assert pm.get_state("a", f"state-{i}") == {"i": i, "pad": "s" * (i % 50)}
    assert pm.get_receipt("a", "key-1000")["request"] == {"i": 1000}


# -------------------------------------------------------------------------- incremental
def test_save_cost_does_not_grow_with_session_length(
    managers: Managers, real_states: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = managers()
    a = pm.create_session("a")
    calls = {"write": 0, "read": 0}
    for meth, kind in (
        ("append_batch", "write"),
        ("put_blob", "write"),
        ("get", "read"),
        ("scan", "read"),
        ("get_blob", "read"),
        ("blob_keys", "read"),
        ("read_range", "read"),
    ):
        orig = getattr(pm.store, meth)

        def counted(*args: Any, _orig: Any = orig, _kind: str = kind, **kw: Any) -> Any:
            calls[_kind] += 1
            return _orig(*args, **kw)

        monkeypatch.setattr(pm.store, meth, counted)
    deltas, writes, reads = [], [], []
    for i in range(64):
        state = dict(real_states[i % len(real_states)], storeNext=1000 + i)
        command(a, i, state)
        before = written(pm)
        calls.update(write=0, read=0)
        assert pm.save_session(a) == 5
        deltas.append(written(pm) - before)
        writes.append(calls["write"])
        reads.append(calls["read"])
    state_json = len(json.dumps(real_states[0]))
    assert writes[2:] == [writes[2]] * 62, "engine records per save must not depend on session length"
    assert max(reads[40:]) <= max(reads[2:22]), "a save must not read more as the session grows"
    early, late = statistics.median(deltas[2:22]), statistics.median(deltas[40:60])
    assert late <= 1.25 * early + 64, (early, late)
    assert late < state_json / 8, "a save of a nearly identical state must write a small delta"


def test_successive_real_states_are_stored_compactly(managers: Managers, real_states: list[dict[str, Any]]) -> None:
    pm = managers()
    a = pm.create_session("a")
    expected: dict[str, Any] = {}
    json_bytes = 0
    for i in range(80):
        base = real_states[min(i // 8, len(real_states) - 1)]
        state = dict(base, storeNext=base["storeNext"] + i)
        json_bytes += len(json.dumps(state))
        expected[a.checkpoint(0, "periodic", state, ts=i)] = state
    pm.save_session(a)
    assert a.size_on_disk < json_bytes / 20, (a.size_on_disk, json_bytes)
    pm = managers.reopen(pm)
    for sid in ("state-0", "state-31", "state-32", "state-33", "state-79"):
        assert pm.get_state("a", sid) == expected[sid]
    # After a reopen the delta chain goes on; new states read back too.
    inst = pm.load_session("a")
    more = dict(real_states[-1], storeNext=7)
    sid = inst.checkpoint(0, "manual", more, ts=1)
    pm = managers.reopen(pm)
    assert pm.get_state("a", sid) == more
    assert pm.get_state("a", "state-78") == expected["state-78"]


# ------------------------------------------------------------------------------ queries
def _populate(pm: PersistenceManager) -> SessionInstance:
    a = pm.create_session("a")
    a.input("(infer)", ts=1)
    a.checkpoint(0, "llm_boundary", {"at": 1}, ts=2)
    a.llm_req(1, "mock", "prompt", "rk1", ts=3)
    a.llm_resp(1, "resp", 4, "rk1", request={"q": 1}, response={"a": 1}, tokens=5, ts=4)
    a.resume(0, "resp", ts=5)
    a.result("done", ts=6)
    a.checkpoint(0, "manual", {"at": 6}, ts=7)
    return a


def test_queries_list_events_checkpoints_states_receipts(managers: Managers) -> None:
    pm = managers()
    _populate(pm)
    pm.create_session("b")
    for reopened in (False, True):
        if reopened:
            pm = managers.reopen(pm)
        metas = pm.list_sessions()
        assert [m["name"] for m in metas] == ["a", "b"]
        ma = metas[0]
        assert (ma["id"], ma["event_count"], ma["checkpoint_count"]) == ("a", 7, 2)
        assert metas[1]["event_count"] == 0
        if reopened:
            assert ma["size_on_disk"] > 0 and ma["last_accessed"] is None
        assert [e["seq"] for e in pm.events("a")] == list(range(7))
        assert [e["seq"] for e in pm.events("a", 2, 5)] == [2, 3, 4]
        assert [e["seq"] for e in pm.events("a", 5)] == [5, 6]
        assert pm.events("a", 7) == [] and pm.events("a", 4, 2) == [] and pm.events("b") == []
        assert [e["seq"] for e in pm.events("a", -3, 1)] == [0]
        assert pm.checkpoints("a") == [
            {"seq": 1, "stateId": "state-1", "reason": "llm_boundary"},
            {"seq": 6, "stateId": "state-6", "reason": "manual"},
        ]
        assert pm.get_state("a", "state-1") == {"at": 1} and pm.get_state("a", "state-6") == {"at": 6}
        assert pm.get_receipt("a", "rk1") == {
            "key": "rk1",
            "request": {"q": 1},
            "response": {"a": 1},
            "timestamp": 4,
            "durationMs": 4,
            "tokens": 5,
        }
    assert len(pm.pool) == 0, "queries must not load whole sessions into the pool"


def test_queries_see_unsaved_changes_of_a_pooled_session(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=1)
    a.checkpoint(0, "manual", [1, 2], ts=2)
    meta = pm.list_sessions()[0]
    assert meta["event_count"] == 2 and meta["checkpoint_count"] == 1
    assert [e["type"] for e in pm.events("a")] == ["input", "checkpoint"]
    assert pm.get_state("a", "state-1") == [1, 2]


def test_unknown_state_and_receipt_are_clear_errors(managers: Managers) -> None:
    pm = managers()
    _populate(pm)
    for bad in ("state-0", "state-999", "nope", "state-6x"):
        with pytest.raises(UnknownStateError) as info:
            pm.get_state("a", bad)
        assert isinstance(info.value, BlobNotFoundError) and isinstance(info.value, LookupError)
    with pytest.raises(UnknownReceiptError) as rinfo:
        pm.get_receipt("a", "nope")
    assert isinstance(rinfo.value, NotFoundError) and isinstance(rinfo.value, SeglogError)
    pm.create_session("empty")
    with pytest.raises(UnknownStateError):
        pm.get_state("empty", "state-1")
    with pytest.raises(UnknownReceiptError):
        pm.get_receipt("empty", "rk1")


@pytest.mark.parametrize(
    "call",
    [
        lambda pm: pm.load_session("zz"),
        lambda pm: pm.events("zz"),
        lambda pm: pm.checkpoints("zz"),
        lambda pm: pm.get_state("zz", "state-0"),
        lambda pm: pm.get_receipt("zz", "k"),
        lambda pm: pm.fork("zz", "new", 0),
        lambda pm: pm.save_as("zz", "new"),
        lambda pm: pm.delete("zz"),
        lambda pm: pm.persister("zz"),
        lambda pm: asyncio.run(pm.aload_session("zz")),
    ],
    ids=[
        "load",
        "events",
        "checkpoints",
        "get_state",
        "get_receipt",
        "fork",
        "save_as",
        "delete",
        "persister",
        "aload",
    ],
)
def test_unknown_session_is_a_clear_error_everywhere(managers: Managers, call: Any) -> None:
    pm = managers()
    _populate(pm)
    before = written(pm)
    with pytest.raises(UnknownSessionError):
        call(pm)
    assert written(pm) == before and not pm.has_session("new")


# -------------------------------------------------------------------------------- forks
def test_fork_shares_the_source_up_to_at_seq(managers: Managers) -> None:
    pm = managers()
    a = _populate(pm)  # seqs 0..6, checkpoints at 1 and 6, receipt rk1 at 3
    time.sleep(0.003)
    f = pm.fork("a", "f", 4)
    assert (f.name, f.id, f.event_count, f.checkpoint_count) == ("f", "f", 5, 1)
    assert f.created > a.created  # a new header
    assert f.input("(in fork)", ts=10) == 5
    assert f.checkpoint(0, "manual", {"fork": True}, ts=11) == "state-6"
    a.llm_resp(0, "later", 1, "rk-late", request=0, response=0, ts=12)  # source goes on
    for reopened in (False, True):
        if reopened:
            pm = managers.reopen(pm)
        fe = pm.events("f")
        assert fe[:5] == pm.events("a", 0, 5)
        assert [e["seq"] for e in fe] == list(range(7))
        assert fe[5]["code"] == "(in fork)"
        assert pm.checkpoints("f") == [
            {"seq": 1, "stateId": "state-1", "reason": "llm_boundary"},
            {"seq": 6, "stateId": "state-6", "reason": "manual"},
        ]
        assert pm.get_state("f", "state-1") == {"at": 1}
        assert pm.get_state("f", "state-6") == {"fork": True}  # its own, not the source's state-6
        assert pm.get_state("a", "state-6") == {"at": 6}
        assert pm.get_receipt("f", "rk1")["response"] == {"a": 1}
        with pytest.raises(UnknownReceiptError):
            pm.get_receipt("f", "rk-late")  # recorded in the source after the fork point
        assert len(pm.events("a")) == 8


def test_fork_stream_holds_only_its_new_events(managers: Managers, real_states: list[dict[str, Any]]) -> None:
    pm = managers()
    a = pm.create_session("a")
    for i in range(40):
        command(a, i, dict(real_states[i % len(real_states)], storeNext=i))
    pm.save_session(a)
    before = written(pm)
    f = pm.fork("a", "f", a.event_count - 1)
    assert written(pm) - before < 1000, "forking must not copy the source's data"
    for i in range(3):
        f.input(f"fork {i}", ts=i)
    pm.save_session(f)
    src_size = a.size_on_disk
    assert src_size > 10_000
    assert f.size_on_disk < 1000 and f.size_on_disk < src_size / 20
    meta = {m["name"]: m for m in managers.reopen(pm).list_sessions()}
    assert meta["f"]["size_on_disk"] == f.size_on_disk and meta["f"]["event_count"] == 163


def test_the_first_save_after_a_fork_or_a_reopen_reads_no_stored_state(
    managers: Managers, real_states: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first state is stored as a keyframe, so decoding the session's last stored
    state (a walk of its delta chain: milliseconds, inside a command when the recording
    thread saves) would be wasted: it is not done. Every state still reads back."""
    pm = managers()
    a = pm.create_session("a")
    for i in range(12):
        command(a, i, dict(real_states[i % len(real_states)], storeNext=i))
    pm.save_session(a)
    decoded: list[str] = []
    real = persister_mod.decode_raw

    def counting(state_id: str, *args: Any, **kw: Any) -> Any:
        decoded.append(state_id)
        return real(state_id, *args, **kw)

    monkeypatch.setattr(persister_mod, "decode_raw", counting)
    f = pm.fork("a", "f", a.event_count - 1)
    command(f, 100, dict(real_states[0], storeNext=100))
    pm.save_session(f)
    pm = managers.reopen(pm)
    b = pm.load_session("a")
    command(b, 101, dict(real_states[1], storeNext=101))
    pm.save_session(b)
    assert decoded == []
    monkeypatch.undo()
    for name in ("a", "f"):
        for cp in pm.checkpoints(name):
            assert pm.get_state(name, cp["stateId"])["storeNext"] in range(102)


def test_fork_of_a_dirty_pooled_source_includes_its_unsaved_events(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("unsaved", ts=1)
    a.checkpoint(0, "manual", {"u": 1}, ts=2)
    pm.fork("a", "f", 1)
    assert [e["type"] for e in pm.events("f")] == ["input", "checkpoint"]
    assert pm.get_state("f", "state-1") == {"u": 1}


def test_fork_bounds_and_empty_fork(managers: Managers) -> None:
    pm = managers()
    pm.save_session(_populate(pm))
    before = written(pm)
    for bad in (-2, 7, 100):
        with pytest.raises(InvalidArgumentError):
            pm.fork("a", "f", bad)
    with pytest.raises(SessionExistsError):
        pm.fork("a", "a", 3)
    assert written(pm) == before and not pm.has_session("f")
    empty = pm.fork("a", "f", -1)
    assert empty.event_count == 0 and empty.checkpoint_count == 0
    assert pm.events("f") == [] and pm.checkpoints("f") == []
    with pytest.raises(UnknownStateError):
        pm.get_state("f", "state-1")
    assert empty.input("fresh", ts=1) == 0
    assert [e["code"] for e in managers.reopen(pm).events("f")] == ["fresh"]


def test_fork_of_a_fork(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    for i in range(10):
        a.checkpoint(0, "periodic", {"a": i}, ts=i)  # state-i
    f1 = pm.fork("a", "f1", 6)  # a's 0..6
    for i in range(3):
        f1.checkpoint(0, "periodic", {"f1": i}, ts=i)  # state-7..9 of f1
    f2 = pm.fork("f1", "f2", 8)  # a's 0..6, f1's 7..8
    f2.checkpoint(0, "manual", {"f2": 0}, ts=0)  # state-9 of f2
    f3 = pm.fork("f1", "f3", 3)  # a's 0..3 only
    assert f3.checkpoint_count == 4
    for reopened in (False, True):
        if reopened:
            pm = managers.reopen(pm)
        assert [pm.get_state("f2", f"state-{i}") for i in range(10)] == (
            [{"a": i} for i in range(7)] + [{"f1": 0}, {"f1": 1}, {"f2": 0}]
        )
        assert [c["seq"] for c in pm.checkpoints("f2")] == list(range(10))
        assert [c["seq"] for c in pm.checkpoints("f3")] == [0, 1, 2, 3]
        with pytest.raises(UnknownStateError):
            pm.get_state("f3", "state-5")
        assert pm.get_state("f1", "state-9") == {"f1": 2}


def test_fork_receipt_survives_the_source_reusing_its_key(managers: Managers) -> None:
    """A receipt key recorded again in the source after the fork point must not
    hide the shared receipt from the fork (receipt keys repeat: they are
    digests of the request)."""
    pm = managers()
    a = pm.create_session("a")
    a.llm_req(0, "m", "p", "K", ts=1)
    a.llm_resp(0, "v1", 1, "K", request={"q": 1}, response="first", ts=1)
    pm.fork("a", "f", a.event_count - 1)
    a.llm_req(0, "m", "p", "K", ts=2)
    a.llm_resp(0, "v2", 1, "K", request={"q": 1}, response="second", ts=2)
    assert pm.get_receipt("a", "K")["response"] == "second"
    assert pm.get_receipt("f", "K")["response"] == "first"


def test_save_as_copies_at_head_keeping_the_header(managers: Managers) -> None:
    pm = managers()
    a = _populate(pm)
    s = pm.save_as("a", "saved-a")
    assert (s.id, s.created, s.event_count, s.checkpoint_count) == ("a", a.created, 7, 2)
    a.input("only in a", ts=20)
    s.input("only in saved", ts=21)
    pm = managers.reopen(pm)
    ea, es = pm.events("a"), pm.events("saved-a")
    assert ea[:7] == es[:7] and ea[7]["code"] == "only in a" and es[7]["code"] == "only in saved"
    meta = {m["name"]: m for m in pm.list_sessions()}
    assert meta["saved-a"]["id"] == "a" and meta["saved-a"]["created"] == a.created
    assert pm.get_receipt("saved-a", "rk1")["request"] == {"q": 1}
    with pytest.raises(SessionExistsError):
        pm.save_as("a", "saved-a")
    empty = pm.create_session("e")
    assert pm.save_as("e", "e2").event_count == 0 and empty.event_count == 0


# ------------------------------------------------------------------------------- delete
def test_delete_and_reuse_a_name(managers: Managers) -> None:
    pm = managers()
    _populate(pm)
    pm.delete("a")
    assert not pm.has_session("a") and "a" not in pm.pool
    assert [m["name"] for m in pm.list_sessions()] == []
    with pytest.raises(UnknownSessionError):
        pm.load_session("a")
    with pytest.raises(UnknownSessionError):
        pm.delete("a")
    assert pm.store.stats().events == 0, "unshared data of a deleted session is dropped"
    again = pm.create_session("a")
    assert again.event_count == 0
    again.input("new life", ts=1)
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == ["new life"]
    with pytest.raises(UnknownStateError):
        pm.get_state("a", "state-1")


def test_deleted_source_data_stays_while_forks_use_it(managers: Managers) -> None:
    pm = managers()
    _populate(pm)
    pm.fork("a", "f", 3)
    pm.save_as("a", "g")
    src_events = pm.events("a")
    pm.delete("a")
    for reopened in (False, True):
        if reopened:
            pm = managers.reopen(pm)
        assert [m["name"] for m in pm.list_sessions()] == ["f", "g"]
        assert pm.events("f") == src_events[:4] and pm.events("g") == src_events
        assert pm.get_state("f", "state-1") == {"at": 1} and pm.get_state("g", "state-6") == {"at": 6}
        assert pm.get_receipt("f", "rk1")["response"] == {"a": 1}
    pm.delete("g")
    assert pm.events("f") == src_events[:4]  # still shared with f
    assert pm.store.stats().events > 0
    pm.delete("f")
    assert pm.store.stats().events == 0, "the last fork takes the shared data with it"
    pm = managers.reopen(pm)
    assert pm.list_sessions() == [] and pm.store.stats().events == 0


def test_deleting_a_pooled_dirty_session_drops_its_changes(managers: Managers) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=1)
    pm.delete("a")
    assert pm.save_dirty_sessions() == 0
    pm = managers.reopen(pm)
    assert pm.list_sessions() == []


def test_recording_into_a_deleted_sessions_instance_does_not_resurrect_it(managers: Managers) -> None:
    """An instance the REPL still holds after delete() must not bring the
    session back (it used to re-register the name as an empty session, then
    fail every save with CorruptionError, so shutdown() raised)."""
    pm = managers()
    a = pm.create_session("a")
    a.input("1", ts=0)
    pm.save_session(a)
    pm.delete("a")
    with contextlib.suppress(SeglogError):  # refusing the event is fine
        a.input("2", ts=1)
    pm.shutdown()  # must not raise
    pm = managers()
    assert [m["name"] for m in pm.list_sessions()] == []


def test_delete_during_a_save_in_progress_leaves_no_data_behind(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save of the session in flight when delete() is called must not write
    its events after the deleted session's streams were dropped (which would
    re-create a stream nothing refers to, kept for ever)."""
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=1)
    gate = Gate(pm, monkeypatch)
    saver = threading.Thread(target=pm.save_session, args=(a,), daemon=True)
    saver.start()
    assert gate.entered.wait(5)
    deleter = threading.Thread(target=pm.delete, args=("a",), daemon=True)  # may wait for the save
    deleter.start()
    deleter.join(0.2)
    gate.release.set()
    saver.join(5)
    deleter.join(5)
    assert not saver.is_alive() and not deleter.is_alive()
    assert not pm.has_session("a")
    pm = managers.reopen(pm)
    assert pm.list_sessions() == []
    assert pm.store.stats().events == 0, [s.name for s in pm.store.streams()]


# ---------------------------------------------------------------------------- bad input
BAD_NAMES = ["", ".", "..", "a/b", "../x", "a\\b", "nul\x00", "\n", "x" * 201, "\udc00", 3, None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_names_are_rejected_and_nothing_is_written(managers: Managers, name: Any) -> None:
    pm = managers()
    _populate(pm)
    pm.save_dirty_sessions()
    before = written(pm)
    for call in (lambda: pm.create_session(name), lambda: pm.fork("a", name, 2), lambda: pm.save_as("a", name)):
        with pytest.raises(InvalidNameError):
            call()
    assert written(pm) == before
    assert [m["name"] for m in pm.list_sessions()] == ["a"]


BAD_RECORDINGS = {
    "ts-beyond-64-bits": lambda i: i.input("x", ts=1 << 70),
    "d-beyond-64-bits": lambda i: i.step(1 << 64, "c", ts=1),
    "receipt-key-too-long": lambda i: i.llm_resp(0, "v", 1, "k" * 2000, request=1, response=2, ts=1),
    "receipt-key-lone-surrogate": lambda i: i.llm_resp(0, "v", 1, "k\ud800", request=1, response=2, ts=1),
    "state-too-large": lambda i: i.checkpoint(0, "manual", random.Random(0).randbytes(10_000), ts=1),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDINGS))
def test_a_bad_event_is_refused_when_recorded_and_does_not_block_later_saves(managers: Managers, case: str) -> None:
    """Events that could not be stored are refused by the recording method
    (InvalidArgumentError), so they never make every later save of the session
    fail; what is recorded afterwards is saved."""
    pm = managers(store_options={"max_record_bytes": 8192})
    a = pm.create_session("a")
    a.input("before", ts=0)
    pm.save_session(a)
    with pytest.raises(InvalidArgumentError):
        BAD_RECORDINGS[case](a)
    a.input("after", ts=2)
    pm.save_session(a)
    pm = managers.reopen(pm)
    assert [e.get("code") for e in pm.events("a")] == ["before", "after"]


def test_save_of_many_events_larger_than_one_record(managers: Managers) -> None:
    """Pending events that each fit in a record but together exceed
    max_record_bytes are saved in several records."""
    pm = managers(store_options={"max_record_bytes": 4096})
    a = pm.create_session("a")
    rng = random.Random(7)
    codes = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1000)) for _ in range(10)]
    for i, code in enumerate(codes):
        a.input(code, ts=i)
    pm.save_session(a)
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == codes


def test_a_retried_save_stores_its_states_readably(managers: Managers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails after the delta encoder took a state (a transient write
    error) leaves the encoder as it was: the retry stores the state against the
    same base, readable now and after a reopen (not a chain that loops back to
    itself)."""
    pm = managers()
    a = pm.create_session("a")
    a.checkpoint(0, "manual", {"v": 0}, ts=0)
    pm.save_session(a)
    a.checkpoint(0, "manual", {"v": 1}, ts=1)
    orig = pm.store.put_blob
    failures = [1]

    def flaky(*args: Any, **kw: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise OSError(28, "No space left on device")
        orig(*args, **kw)

    monkeypatch.setattr(pm.store, "put_blob", flaky)
    with pytest.raises(OSError):
        pm.save_session(a)
    assert a.dirty  # the changes were put back
    assert pm.save_session(a) == 2  # the retry
    assert pm.get_state("a", "state-1") == {"v": 1}
    pm = managers.reopen(pm)
    assert pm.get_state("a", "state-1") == {"v": 1}


class Crash(BaseException):
    """Stands for a SIGKILL at one point of a save."""


def _crash_in_save(pm: PersistenceManager, inst: SessionInstance, monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """Leave the store exactly as a SIGKILL would leave it just before the save
    appends its first record to stream ``at``: what was written before stays,
    the instance's unsaved changes vanish."""
    orig = pm.store.append_batch

    def crashing(stream: str, values: Any) -> int:
        if stream == at:
            raise Crash
        return orig(stream, values)

    monkeypatch.setattr(pm.store, "append_batch", crashing)
    with pytest.raises(Crash):
        pm.save_session(inst)
    inst.take_changes()  # the process is gone: its memory too
    monkeypatch.setattr(pm.store, "append_batch", orig)


def test_crash_before_the_events_commit_leaves_nothing_visible(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """States and receipts written by a save whose events never committed are
    not visible: get_receipt returns the receipt recorded earlier under the
    same key, and get_state knows no state of the lost checkpoint."""
    pm = managers()
    a = pm.create_session("a")
    a.llm_resp(0, "v", 1, "K", request=1, response="saved", ts=1)
    pm.save_session(a)
    a.checkpoint(0, "manual", {"lost": True}, ts=2)
    a.llm_resp(0, "v", 1, "K", request=1, response="lost", ts=3)
    _crash_in_save(pm, a, monkeypatch, layout.ev_stream(a.uid or ""))
    pm = managers.reopen(pm)
    assert len(pm.events("a")) == 1 and pm.checkpoints("a") == []
    assert pm.get_receipt("a", "K")["response"] == "saved"
    with pytest.raises(UnknownStateError):
        pm.get_state("a", "state-1")


def test_crash_between_events_and_checkpoint_entries_is_repaired_for_every_query(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoint entries a crash left out after the events committed are seen
    by every query, not only after load_session: checkpoints(), list_sessions()
    and the checkpoint count of a fork."""
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=0)
    a.checkpoint(0, "manual", {"v": 1}, ts=1)
    _crash_in_save(pm, a, monkeypatch, layout.cp_stream(a.uid or ""))
    pm = managers.reopen(pm)
    assert [e["type"] for e in pm.events("a")] == ["input", "checkpoint"]
    assert pm.list_sessions()[0]["checkpoint_count"] == 1
    assert pm.checkpoints("a") == [{"seq": 1, "stateId": "state-1", "reason": "manual"}]
    assert pm.fork("a", "f", 1).checkpoint_count == 1


# ----------------------------------------------------------------------- lock ordering
def test_evicting_a_session_while_the_background_saves_it_does_not_deadlock(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_session puts the new instance in the pool (which evicts, and so
    saves, a victim) without holding the catalog lock, so a background save of
    the victim, which holds its save_lock and then takes the catalog lock, does
    not deadlock with it."""
    pm = managers(size=1)
    a = pm.create_session("a")
    a.input("x", ts=1)
    took = threading.Event()
    go_on = threading.Event()
    orig_take = a.take_changes

    def slow_take(*args: Any, **kw: Any) -> Any:  # the save point of a save that holds a.save_lock
        took.set()
        go_on.wait(5)
        return orig_take(*args, **kw)

    monkeypatch.setattr(a, "take_changes", slow_take)
    saver = threading.Thread(target=pm.save_session, args=(a,), daemon=True)  # stands for the background save
    saver.start()
    assert took.wait(5)
    creator = threading.Thread(target=pm.create_session, args=("b",), daemon=True)  # evicts a
    creator.start()
    time.sleep(0.2)  # creator now holds the catalog lock and waits for a.save_lock
    go_on.set()
    saver.join(3)
    creator.join(0.5)
    if saver.is_alive() or creator.is_alive():
        managers.abandoned.append(pm)
        pytest.fail("deadlock between a save of the session and its eviction by create_session")
    assert "b" in pm.pool and [e["code"] for e in pm.events("a")] == ["x"]


# ----------------------------------------------------------------------------- asyncio
def _slow_appends(pm: PersistenceManager, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    orig = pm.store.append_batch

    def slow(stream: str, values: Any) -> int:
        time.sleep(delay)
        return orig(stream, values)

    monkeypatch.setattr(pm.store, "append_batch", slow)


async def _ticks_while(coro: Any) -> tuple[Any, int]:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await coro, ticks
    finally:
        task.cancel()


@pytest.mark.parametrize("variant", ["asave_session", "asave_dirty_sessions", "aforce_save", "aforce_save_all"])
def test_async_saves_do_not_block_the_event_loop(
    managers: Managers, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    pm = managers()
    a = pm.create_session("a")
    a.input("x", ts=1)
    a.input("y", ts=2)
    _slow_appends(pm, monkeypatch, 0.3)
    coro = {
        "asave_session": lambda: pm.asave_session("a"),
        "asave_dirty_sessions": lambda: pm.asave_dirty_sessions(),
        "aforce_save": lambda: pm.aforce_save("a"),
        "aforce_save_all": lambda: pm.aforce_save(),
    }[variant]()
    n, ticks = asyncio.run(_ticks_while(coro))
    assert n == 2 and not a.dirty
    assert ticks >= 8, f"the event loop ran only {ticks} ticks during a 0.3 s save"


def test_aload_and_ashutdown(managers: Managers, monkeypatch: pytest.MonkeyPatch) -> None:
    pm = managers()
    _populate(pm)
    pm = managers.reopen(pm)
    inst, _ = asyncio.run(_ticks_while(pm.aload_session("a")))
    assert inst is pm.pool.get("a") and inst.event_count == 7
    inst.input("before shutdown", ts=9)
    _slow_appends(pm, monkeypatch, 0.3)
    _, ticks = asyncio.run(_ticks_while(pm.ashutdown()))
    assert ticks >= 8
    pm = managers()
    assert pm.events("a")[-1]["code"] == "before shutdown"


# ------------------------------------------------------------------------------ shutdown
def test_shutdown_saves_everything_stops_the_thread_and_is_idempotent(managers: Managers) -> None:
    def saver_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "seglog-session-saver" and t.is_alive()}

    existing = saver_threads()
    pm = managers(save_interval=60.0)
    mine = saver_threads() - existing
    assert len(mine) == 1
    names = ["a", "b", "c"]
    for k, name in enumerate(names):
        inst = pm.create_session(name)
        for i in range(k + 1):
            inst.input(f"{name}{i}", ts=i)
    pm.shutdown()
    assert not any(t.is_alive() for t in mine)
    pm.shutdown()  # idempotent
    pm.close()
    pm = managers()
    assert [m["event_count"] for m in pm.list_sessions()] == [1, 2, 3]


def test_use_after_shutdown_is_a_clear_error(managers: Managers) -> None:
    pm = managers()
    a = _populate(pm)
    pm.save_session(a)
    pm.shutdown()
    for call in (
        lambda: pm.create_session("new"),
        lambda: pm.list_sessions(),
        lambda: pm.events("a"),
        lambda: pm.checkpoints("a"),
        lambda: pm.get_state("a", "state-1"),
        lambda: pm.delete("a"),
        lambda: pm.fork("a", "g", 1),
    ):
        with pytest.raises(StoreClosedError):
            call()
    with pytest.raises(StoreClosedError, match="'a'"):
        a.input("after shutdown", ts=99)
    assert not a.dirty and a.event_count == 7


def test_load_session_after_shutdown_is_refused(managers: Managers) -> None:
    """load_session after shutdown raises StoreClosedError instead of handing
    out the pooled instance."""
    pm = managers()
    pm.create_session("a")
    pm.shutdown()
    with pytest.raises(StoreClosedError):
        pm.load_session("a")


def test_context_manager_shuts_down(managers: Managers) -> None:
    with managers() as pm:
        pm.create_session("a").input("x", ts=1)
    with pytest.raises(StoreClosedError):
        pm.list_sessions()
    assert [e["code"] for e in managers().events("a")] == ["x"]


def test_shutdown_is_registered_at_interpreter_exit(tmp_path: pathlib.Path) -> None:
    store = tmp_path / "store"
    script = textwrap.dedent(f"""
        import engine
        pm = engine.PersistenceManager(engine.SessionPool(4), {str(store)!r}, save_interval=60)
        s = pm.create_session("a")
        for i in range(3):
            s.input("cmd %d" % i, ts=i)
        # no shutdown(): the atexit hook saves
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    pm = PersistenceManager(SessionPool(4), store, register_atexit=False)
    try:
        assert [e["code"] for e in pm.events("a")] == ["cmd 0", "cmd 1", "cmd 2"]
    finally:
        pm.shutdown()


# ------------------------------------------------------------- recording after shutdown
RECORDINGS = {
    "input": lambda i: i.input("x", ts=1),
    "step": lambda i: i.step(0, "x", ts=1),
    "checkpoint": lambda i: i.checkpoint(0, "manual", {"v": 1}, ts=1),
    "llm_req": lambda i: i.llm_req(0, "m", "p", "k", ts=1),
    "llm_resp": lambda i: i.llm_resp(0, "v", 1, "k", request=1, response=2, ts=1),
    "effect": lambda i: i.effect(0, "op", "[]", ts=1),
    "resume": lambda i: i.resume(0, "v", ts=1),
    "result": lambda i: i.result("v", ts=1),
    "error": lambda i: i.error(0, "boom", ts=1),
}


@pytest.mark.parametrize("how", ["shutdown", "with-block"])
def test_recording_after_shutdown_raises_and_names_the_session(managers: Managers, how: str) -> None:
    """Every recording method of an instance whose manager was shut down (also by
    leaving the ``with`` block) raises StoreClosedError naming the session, and
    records nothing: nothing is accepted that would be lost."""
    if how == "shutdown":
        pm = managers()
        a = pm.create_session("a")
        a.input("before", ts=0)
        pm.shutdown()
    else:
        with managers() as pm:
            a = pm.create_session("a")
            a.input("before", ts=0)
    for name, call in RECORDINGS.items():
        with pytest.raises(StoreClosedError, match="session 'a'"):
            call(a)
        assert a.event_count == 1 and a.checkpoint_count == 0 and not a.dirty, name
    assert [e["code"] for e in managers().events("a")] == ["before"]


def test_recording_after_shutdown_raises_for_an_evicted_instance_too(managers: Managers) -> None:
    """An instance the pool evicted but the REPL still holds is refused as well."""
    pm = managers(size=1)
    a = pm.create_session("a")
    a.input("1", ts=0)
    pm.create_session("b")  # evicts (saves) a
    assert "a" not in pm.pool
    pm.shutdown()
    with pytest.raises(StoreClosedError, match="session 'a'"):
        a.input("2", ts=1)


def test_every_event_accepted_while_shutting_down_is_saved(managers: Managers) -> None:
    """A thread records without pause while another shuts the manager down: each
    event the recording method accepted (returned a seq for) is in the store, and
    the thread learns at once that recording stopped."""
    pm = managers(save_interval=0.05, save_after=16)
    a = pm.create_session("a")
    accepted: list[int] = []
    refused: list[BaseException] = []
    started = threading.Event()

    def repl() -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                accepted.append(a.input(f"cmd {len(accepted)}", ts=len(accepted)))
            except SeglogError as exc:
                refused.append(exc)
                return
            if len(accepted) == 200:
                started.set()

    t = threading.Thread(target=repl, daemon=True)
    t.start()
    assert started.wait(5)
    pm.shutdown()
    t.join(10)
    assert not t.is_alive() and len(refused) == 1 and isinstance(refused[0], StoreClosedError)
    assert len(managers().events("a")) == len(accepted)


# ------------------------------------------------------------------------ failed saves
def _break_store(pm: PersistenceManager, monkeypatch: pytest.MonkeyPatch, *, permanent: bool = True) -> dict[str, Any]:
    """Once ``state["broken"]`` is set, the store's writes fail: as a store that hit a
    full disk (StoreFailedError chained to ENOSPC, for good) or, with ``permanent``
    False, with one OSError ENOSPC. Counts the writes tried and remembers the
    number of commands recorded when the first one failed."""
    state: dict[str, Any] = {"broken": False, "tries": 0, "failures": 0, "commands": 0, "failed_at": None}
    store = pm.store

    def wrap(orig: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any, **kw: Any) -> Any:
            if state["broken"]:
                state["tries"] += 1
                if permanent or state["failures"] == 0:
                    if state["failed_at"] is None:
                        state["failed_at"] = state["commands"]
                    state["failures"] += 1
                    enospc = OSError(28, "No space left on device")
                    if not permanent:
                        raise enospc
                    raise StoreFailedError(f"write to {store.path} failed: {enospc}; reopen the store") from enospc
            return orig(*args, **kw)

        return write

    for method in ("append_batch", "put_blob"):
        monkeypatch.setattr(store, method, wrap(getattr(store, method)))
    return state


def _causes(exc: BaseException) -> list[BaseException]:
    out = []
    cur: BaseException | None = exc
    while cur is not None:
        out.append(cur)
        cur = cur.__cause__
    return out


def test_recording_stops_right_after_a_background_save_fails(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a background save fails because the store refuses writes (a full disk),
    the next recording call of the manager's sessions raises, naming the session
    and chained to the cause, instead of accepting max_pending more changes that
    can never be stored."""
    pm = managers(save_after=32, save_interval=60.0)
    a = pm.create_session("a")
    b = pm.create_session("b")
    state = _break_store(pm, monkeypatch)
    raised: BaseException | None = None
    for i in range(400):
        try:
            a.input(f"(cmd {i})", ts=i)
            a.step(0, f"(cmd {i})", ts=i)
            a.result(str(i), ts=i)
            a.checkpoint(0, "manual", {"i": i}, ts=i)
        except SeglogError as exc:
            raised = exc
            break
        state["commands"] += 1
        if i == 20:
            state["broken"] = True
        time.sleep(0.002)  # the REPL evaluates between commands
    assert raised is not None, "recording went on after the store refused a save"
    assert state["failed_at"] is not None
    assert state["commands"] - state["failed_at"] <= 5, (state, raised)
    assert "'a'" in str(raised) and "No space left on device" in str(raised)
    causes = _causes(raised)
    assert any(isinstance(c, StoreFailedError) for c in causes), causes
    assert any(isinstance(c, OSError) and c.errno == 28 for c in causes), causes
    count = a.event_count
    with pytest.raises(SeglogError):  # still refused, in every session of the manager
        a.input("again", ts=0)
    with pytest.raises(SeglogError, match="'b'"):
        b.input("other", ts=0)
    assert a.event_count == count and b.event_count == 0


def test_background_saving_stops_retrying_a_store_that_refuses_writes(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that refused a write refuses every later one until reopened: the
    background saver does not retry against it for ever."""
    pm = managers(save_after=1, save_interval=0.05)
    a = pm.create_session("a")
    state = _break_store(pm, monkeypatch)
    state["broken"] = True
    a.input("x", ts=0)
    assert wait_for(lambda: state["tries"] > 0)
    time.sleep(0.5)  # ten background ticks at least
    assert state["tries"] <= 2, state
    assert a.dirty  # the change is kept, not dropped


def test_recording_resumes_once_a_retried_save_succeeds(managers: Managers, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a transient failure the background saver retries; while the session
    is unsaved recording raises, and once the retry succeeds recording goes on,
    with nothing lost."""
    pm = managers(save_after=4, save_interval=0.05)
    a = pm.create_session("a")
    state = _break_store(pm, monkeypatch, permanent=False)
    state["broken"] = True
    codes = []
    for i in range(4):
        codes.append(f"cmd {i}")
        a.input(codes[-1], ts=i)
    assert wait_for(lambda: state["failures"] == 1)
    assert wait_for(lambda: not a.dirty), "the background saver must retry"
    codes.append("after")
    a.input("after", ts=9)
    pm.save_session(a)
    assert [e["code"] for e in managers.reopen(pm).events("a")] == codes


def test_a_failed_save_refuses_recording_until_a_save_succeeds(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an explicit save: after it failed, recording raises
    SaveFailedError (chained to the failure); a save that succeeds ends that."""
    pm = managers()
    a = pm.create_session("a")
    a.input("1", ts=0)
    state = _break_store(pm, monkeypatch, permanent=False)
    state["broken"] = True
    with pytest.raises(OSError):
        pm.save_session(a)
    with pytest.raises(SaveFailedError, match="session 'a'") as info:
        a.input("refused", ts=1)
    assert isinstance(info.value.__cause__, OSError)
    assert pm.save_session(a) == 1
    a.input("2", ts=2)
    assert [e["code"] for e in pm.events("a")] == ["1", "2"]


# ---------------------------------------------------------------- names of every kind
NOT_NAMES = [["a"], None, 3, b"a", ("a",), {"a": 1}]
NAME_CALLS: dict[str, Callable[[PersistenceManager, Any], Any]] = {
    "create_session": lambda pm, n: pm.create_session(n),
    "load_session": lambda pm, n: pm.load_session(n),
    "aload_session": lambda pm, n: asyncio.run(pm.aload_session(n)),
    "has_session": lambda pm, n: pm.has_session(n),
    "save_session": lambda pm, n: pm.save_session(n),
    "asave_session": lambda pm, n: asyncio.run(pm.asave_session(n)),
    "force_save": lambda pm, n: pm.force_save(n),
    "events": lambda pm, n: pm.events(n),
    "checkpoints": lambda pm, n: pm.checkpoints(n),
    "get_state": lambda pm, n: pm.get_state(n, "state-1"),
    "get_receipt": lambda pm, n: pm.get_receipt(n, "rk1"),
    "persister": lambda pm, n: pm.persister(n),
    "fork-source": lambda pm, n: pm.fork(n, "f", 0),
    "fork-new-name": lambda pm, n: pm.fork("a", n, 0),
    "save_as-source": lambda pm, n: pm.save_as(n, "f"),
    "save_as-new-name": lambda pm, n: pm.save_as("a", n),
    "delete": lambda pm, n: pm.delete(n),
}


@pytest.mark.parametrize("method", sorted(NAME_CALLS))
def test_a_name_that_is_not_a_str_is_an_invalid_name_for_every_method(managers: Managers, method: str) -> None:
    """Every PersistenceManager method that takes a session name raises
    InvalidNameError (not TypeError, not UnknownSessionError) for a name that is
    not a str, and writes nothing."""
    pm = managers()
    _populate(pm)
    pm.save_dirty_sessions()
    before = written(pm)
    for name in NOT_NAMES:
        if name is None and method == "force_save":
            continue  # force_save(None) saves every session
        with pytest.raises(InvalidNameError):
            NAME_CALLS[method](pm, name)
    assert written(pm) == before
    assert [m["name"] for m in pm.list_sessions()] == ["a"]


# ------------------------------------------------------------ saves in bounded steps
def _writes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every IncrementalWriter.write from now on: its events' seqs, the seqs of its
    states and receipts, the bytes of its states and the thread that ran it."""
    from engine.session import persister

    seen: list[dict[str, Any]] = []
    orig = persister.IncrementalWriter.write

    def write(self: Any, changes: Any) -> int:
        seen.append(
            {
                "events": [e["seq"] for e in changes.events],
                "states": [int(sid.rsplit("-", 1)[1]) for sid, _ in changes.states],
                "state_bytes": sum(len(raw) for _, raw in changes.states),
                "receipts": [seq for _key, seq, _r in changes.receipts],
                "thread": threading.current_thread(),
            }
        )
        return orig(self, changes)

    monkeypatch.setattr(persister.IncrementalWriter, "write", write)
    return seen


def _record_mixed(inst: SessionInstance, n: int, pad: int = 1000) -> None:
    """``n`` events: a checkpoint with a ~``pad``-byte state every 5th, an LLM response
    with its receipt every 7th, inputs otherwise (ts = the event's number)."""
    for i in range(n):
        if i % 5 == 4:
            inst.checkpoint(0, "manual", {"i": i, "pad": "s" * pad}, ts=i)
        elif i % 7 == 6:
            inst.llm_resp(1, f"v{i}", i, f"key-{i % 3}", request={"i": i}, response=[i], ts=i)
        else:
            inst.input(f"code {i}", ts=i)


def _check_mixed(pm: PersistenceManager, name: str, n: int, pad: int = 1000) -> None:
    events = pm.events(name)
    assert [e["seq"] for e in events] == list(range(n))
    assert [e["ts"] for e in events] == list(range(n))
    for e in events:
        i = e["seq"]
        if i % 5 == 4:
            assert e["type"] == "checkpoint" and e["stateId"] == f"state-{i}"
        elif i % 7 == 6:
            assert e["type"] == "llm_resp" and e["receiptKey"] == f"key-{i % 3}"
        else:
            assert e == {"seq": i, "ts": i, "type": "input", "code": f"code {i}"}
    assert [c["seq"] for c in pm.checkpoints(name)] == [i for i in range(n) if i % 5 == 4]
    for i in [i for i in range(n) if i % 5 == 4][:: max(1, n // 50)]:
        assert pm.get_state(name, f"state-{i}") == {"i": i, "pad": "s" * pad}
    last = {i % 3: i for i in range(n) if i % 7 == 6 and i % 5 != 4}
    for k, i in last.items():
        assert pm.get_receipt(name, f"key-{k}")["request"] == {"i": i}


def _check_steps(writes: list[dict[str, Any]], step_events: int, step_bytes: int) -> None:
    """Each write is one bounded step; together they hold every seq once, in order, each
    state and receipt with its event."""
    seqs = [s for w in writes for s in w["events"]]
    assert seqs == list(range(len(seqs)))
    for w in writes:
        assert 1 <= len(w["events"]) <= step_events
        assert w["state_bytes"] <= step_bytes or len(w["events"]) == 1
        first, last = w["events"][0], w["events"][-1]
        assert all(first <= s <= last for s in w["states"] + w["receipts"])


def test_a_save_is_written_in_bounded_steps_in_order(managers: Managers, monkeypatch: pytest.MonkeyPatch) -> None:
    """save_session writes a session's changes in steps (one engine write each) of at
    most step_events events and, unless a single event is over it, step_bytes of
    states and receipts, oldest first, each state and receipt with its event."""
    pm = managers(step_events=8, step_bytes=1500)
    a = pm.create_session("a")
    _record_mixed(a, 61)
    writes = _writes(monkeypatch)
    steps = pm.save_steps
    receipts = [i for i in range(61) if i % 7 == 6 and i % 5 != 4]
    assert a.pending_changes == 61 + 12 + len(receipts)  # events, states, receipts
    assert pm.save_session(a) == 61 + 12 + len(receipts)
    assert pm.save_steps - steps == len(writes) and len(writes) >= 61 // 8 + 1
    assert len(writes) > 61 // 8 + 1, "the byte bound must split some steps further"
    _check_steps(writes, 8, 1500)
    assert not a.dirty and pm.saves == 1
    _check_mixed(managers.reopen(pm), "a", 61)


def test_a_state_larger_than_a_step_is_a_step_of_its_own(managers: Managers, monkeypatch: pytest.MonkeyPatch) -> None:
    pm = managers(step_bytes=1000)
    a = pm.create_session("a")
    a.input("x", ts=0)
    a.checkpoint(0, "manual", {"big": "b" * 5000}, ts=1)
    a.input("y", ts=2)
    writes = _writes(monkeypatch)
    assert pm.save_session(a) == 4
    assert [w["events"] for w in writes] == [[0], [1], [2]]
    assert pm.get_state("a", "state-1") == {"big": "b" * 5000}


def test_take_changes_hands_over_the_oldest_events_with_their_states_and_receipts() -> None:
    inst = SessionInstance("a")
    _record_mixed(inst, 20, pad=100)  # checkpoints at 4, 9, 14, 19; receipts at 6, 13
    head = inst.take_changes(7)
    assert [e["seq"] for e in head.events] == list(range(7))
    assert [sid for sid, _ in head.states] == ["state-4"] and [r[1] for r in head.receipts] == [6]
    assert inst.first_pending_seq == 7 and inst.pending_changes == 13 + 3 + 1
    assert not inst.take_changes(before=7) and inst.first_pending_seq == 7
    nxt = inst.take_changes(max_bytes=150)  # the state of seq 9 (~110 bytes), no room for the receipt of 13
    assert [e["seq"] for e in nxt.events] == [7, 8, 9, 10, 11, 12]
    assert [sid for sid, _ in nxt.states] == ["state-9"] and not nxt.receipts
    upto = inst.take_changes(before=15)
    assert [e["seq"] for e in upto.events] == [13, 14]
    assert [sid for sid, _ in upto.states] == ["state-14"] and [r[1] for r in upto.receipts] == [13]
    inst.restore_changes(upto)  # a failed step goes back before anything newer
    inst.restore_changes(nxt)
    rest = inst.take_changes()
    assert [e["seq"] for e in rest.events] == list(range(7, 20))
    assert [sid for sid, _ in rest.states] == ["state-9", "state-14", "state-19"]
    assert [r[1] for r in rest.receipts] == [13]
    assert inst.first_pending_seq == 20 and not inst.dirty


def test_a_background_save_runs_in_bounded_steps_in_the_saver_thread(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = managers(save_after=1000, step_events=6, step_bytes=2500, save_interval=0.2)
    writes = _writes(monkeypatch)
    a = pm.create_session("a")
    _record_mixed(a, 100)
    assert wait_for(lambda: not a.dirty, 5.0)
    assert writes and all(w["thread"] is pm._thread for w in writes)
    _check_steps(writes, 6, 2500)
    assert [s for w in writes for s in w["events"]] == list(range(100))
    assert pm.saves == 1


def _spin(seconds: float) -> None:
    """Run Python (holding the GIL) for ``seconds``: a REPL evaluating between events."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_background_saver_takes_no_step_of_its_own_while_recording_goes_on(managers: Managers) -> None:
    """A step of the saver would run inside a command, which would wait for it: while a
    thread runs Python and records (an event younger than quiet_s) the saver takes no
    step of its own, and saves once recording pauses."""
    pm = managers(save_after=1, save_interval=60.0, yield_after=10_000, max_pending=10_000)
    pm.quiet_s = 0.3
    a = pm.create_session("a")
    end = time.monotonic() + 0.6
    i = 0
    while time.monotonic() < end:
        a.input(f"code {i}", ts=i)
        i += 1
        _spin(0.002)
    assert pm.saves == 0 and a.pending_changes == i
    assert wait_for(lambda: not a.dirty, 5.0), "the saver must save once recording pauses"
    assert [e["seq"] for e in pm.events("a")] == list(range(i))


def test_the_background_saver_saves_between_commands(managers: Managers) -> None:
    """Once no event was recorded for quiet_s (the REPL evaluates, or waits for input)
    the saver saves, in the gaps, without waiting for the session to stop recording."""
    pm = managers(save_after=1, save_interval=60.0, yield_after=10_000, max_pending=10_000)
    pm.quiet_s = 0.002
    a = pm.create_session("a")
    for i in range(40):
        a.input(f"code {i}", ts=i)
        time.sleep(0.01)
    assert pm.saves > 0 and a.pending_changes < 40
    assert wait_for(lambda: not a.dirty, 5.0)
    assert [e["seq"] for e in pm.events("a")] == list(range(40))


def test_a_recording_thread_hands_the_saver_a_step_instead_of_saving_itself(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a session has yield_after unsaved events while recording goes on, the
    recording thread hands the GIL to the saver for one step of it and waits for it:
    the session's changes stay bounded, and the recording thread writes nothing."""
    pm = managers(save_after=4, yield_after=8, step_events=4, save_interval=60.0)
    pm.quiet_s = 3600.0  # recording never pauses for the saver: only the hand-offs save
    pm.handoff_timeout_s = 10.0
    writes = _writes(monkeypatch)
    a = pm.create_session("a")
    for i in range(41):
        a.input(f"code {i}", ts=i)
        assert a.pending_changes < 8, i
    assert len(writes) == 9 and all(w["thread"] is pm._thread for w in writes)
    assert [w["events"] for w in writes] == [list(range(4 * k, 4 * k + 4)) for k in range(9)]
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == [f"code {i}" for i in range(41)]


def test_backpressure_bounds_pending_changes_when_the_saver_is_stuck(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the background saver cannot save (stuck, say, behind a slow disk), a
    recording thread waits for it at most handoff_timeout_s once, goes on, and at
    max_pending unsaved changes saves the session itself: memory stays bounded and
    nothing is lost."""
    pm = managers(save_after=4, yield_after=8, max_pending=40, save_interval=0.01)
    stuck = threading.Event()
    release = threading.Event()
    orig = pm._save_step
    by_recorder = []

    def save_step(inst: SessionInstance, *args: Any, **kw: Any) -> int | None:
        if threading.current_thread() is pm._thread:
            stuck.set()
            release.wait(10)
        else:
            by_recorder.append(inst.name)
        return orig(inst, *args, **kw)

    monkeypatch.setattr(pm, "_save_step", save_step)
    a = pm.create_session("a")
    longest = 0.0
    try:
        for i in range(300):
            t0 = time.perf_counter()
            a.input(f"code {i}", ts=i)
            longest = max(longest, time.perf_counter() - t0)
            assert a.pending_changes <= 40
            if i == 20:
                assert stuck.wait(5), "the saver should have been asked for a step"
    finally:
        release.set()
    assert by_recorder and set(by_recorder) == {"a"}
    assert longest < 1.0
    pm.force_save()
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == [f"code {i}" for i in range(300)]


def test_nothing_is_lost_or_reordered_while_steps_hand_offs_and_explicit_saves_interleave(managers: Managers) -> None:
    """Threads recording flat out into their sessions, with the background saver,
    hand-offs and backpressure all writing steps, while another thread forces saves
    and reads: every event, state and receipt is stored, in order, once."""
    pm = managers(
        size=16, save_after=8, yield_after=16, max_pending=64, step_events=5, step_bytes=3000, save_interval=0.005
    )
    names = [f"s{i}" for i in range(4)]
    sessions = {name: pm.create_session(name) for name in names}
    n = 700
    errors: list[BaseException] = []
    over: list[int] = []

    def recorder(mine: list[str]) -> None:
        try:
            for i in range(n):
                for name in mine:
                    inst = sessions[name]
                    _record_mixed_one(inst, i)
                    if len(inst._pending.events) > 64:
                        over.append(len(inst._pending.events))
                if i % 100 == 99:
                    time.sleep(0.002)  # now and then a pause: the saver's own steps run
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=recorder, args=(names[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        pm.force_save(random.choice(names))
        pm.events(random.choice(names), 0, 3)
        time.sleep(0.003)
    for t in threads:
        t.join()
    assert not errors and not over
    pm = managers.reopen(pm)
    for name in names:
        _check_mixed(pm, name, n)


def _record_mixed_one(inst: SessionInstance, i: int, pad: int = 1000) -> None:
    if i % 5 == 4:
        inst.checkpoint(0, "manual", {"i": i, "pad": "s" * pad}, ts=i)
    elif i % 7 == 6:
        inst.llm_resp(1, f"v{i}", i, f"key-{i % 3}", request={"i": i}, response=[i], ts=i)
    else:
        inst.input(f"code {i}", ts=i)


def test_an_explicit_save_ends_while_the_session_records_flat_out(managers: Managers) -> None:
    """save_session writes what was recorded before it was called, in steps, and returns,
    however fast the session keeps recording meanwhile."""
    pm = managers(step_events=4)
    a = pm.create_session("a")
    stop = threading.Event()
    count = [0]

    def record() -> None:
        while not stop.is_set():
            a.input(f"code {count[0]}", ts=count[0])
            count[0] += 1

    t = threading.Thread(target=record)
    t.start()
    try:
        for _ in range(20):
            before = a.event_count
            t0 = time.monotonic()
            pm.save_session(a)
            assert time.monotonic() - t0 < 5.0
            assert pm.persister("a").event_count >= before
    finally:
        stop.set()
        t.join()
    pm = managers.reopen(pm)
    assert [e["code"] for e in pm.events("a")] == [f"code {i}" for i in range(count[0])]


@pytest.mark.parametrize("kw", [{"step_events": 0}, {"step_bytes": 0}, {"yield_after": 0}])
def test_bad_step_settings_are_rejected(managers: Managers, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        managers(**kw)


def test_an_idle_session_is_saved_while_another_records_flat_out(managers: Managers) -> None:
    """A session that records nothing itself and has been due for a save_interval gets
    steps of the saver even while another session keeps recording (one step at a time)."""
    pm = managers(save_after=1 << 20, save_interval=0.1, yield_after=1 << 20, max_pending=1 << 20)
    pm.quiet_s = 3600.0  # recording goes on for ever, as far as the saver can tell
    idle, hot = pm.create_session("idle"), pm.create_session("hot")
    for i in range(10):
        idle.input(f"idle {i}", ts=i)
    end = time.monotonic() + 5.0
    i = 0
    while idle.dirty and time.monotonic() < end:  # never lets go of the GIL
        hot.input(f"hot {i}", ts=i)
        i += 1
        _spin(0.0002)
    assert not idle.dirty, "the idle session must be saved"
    assert hot.pending_changes == i
    assert [e["code"] for e in pm.events("idle")] == [f"idle {i}" for i in range(10)]


def test_after_a_step_the_age_of_the_oldest_change_left_is_kept() -> None:
    """A step takes the oldest events; first_change_at (which makes a session due after
    save_interval) then tells when the oldest event left was recorded, not the first."""
    inst = SessionInstance("a")
    inst.input("old", ts=0)
    time.sleep(0.2)
    t0 = time.monotonic()
    inst.input("new", ts=1)
    assert time.monotonic() - inst.first_change_at >= 0.2
    assert [e["code"] for e in inst.take_changes(1).events] == ["old"]
    assert abs(inst.first_change_at - t0) < 0.05
    assert [e["code"] for e in inst.take_changes().events] == ["new"] and inst.first_change_at == 0.0


def test_steps_written_in_one_write_are_put_back_when_that_write_fails(
    managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps of a save reach the OS in one write at its end; when that write fails
    none of them is stored, so all their changes are pending again, in order, and the
    manager's sessions refuse new events."""
    from engine.log import fileio

    pm = managers(step_events=4)
    a = pm.create_session("a")
    _record_mixed(a, 22, pad=50)
    before = a.pending_changes
    real = fileio.pwrite

    def full(fd: int, data: Any, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "pwrite", full)
    with pytest.raises(StoreFailedError):
        pm.save_session(a)
    monkeypatch.setattr(fileio, "pwrite", real)
    assert pm.save_steps >= 5  # the steps ran; their one write failed
    assert a.pending_changes == before
    with pytest.raises(SaveFailedError, match="session 'a'"):
        a.input("refused", ts=99)
    changes = a.take_changes()
    assert [e["seq"] for e in changes.events] == list(range(22))
    assert [sid for sid, _ in changes.states] == ["state-4", "state-9", "state-14", "state-19"]
    assert [seq for _k, seq, _r in changes.receipts] == [6, 13, 20]
