"""Stateful property test of the session layer against a simple model.

Random sequences of REPL recordings (every event type, states, receipts
whose keys repeat), explicit and background saves (tiny save_interval),
evictions (a pool of two), forks, save-as, deletes and reopens (shutdown
and a new PersistenceManager on the same directory) are run on the real
session layer and on a model that keeps, per session, the plain list of its
events with their states and receipts. After every step the listing must
agree; the check rule compares whole sessions (events, checkpoints, every
state and receipt).

A watchdog (SIGALRM) turns a hang (a deadlock of the session layer) into a
test failure instead of a stuck test run.
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import (
    InvalidArgumentError,
    PersistenceManager,
    SessionExistsError,
    SessionPool,
    UnknownReceiptError,
    UnknownSessionError,
    UnknownStateError,
)

NAMES = ["s0", "s1", "s2", "s3"]
KEYS = ["k0", "k1"]  # receipt keys repeat, as digests of identical requests do
KINDS = ["input", "step", "checkpoint", "llm_req", "llm_resp", "effect", "resume", "result", "error"]
REASONS = ["llm_boundary", "periodic", "manual", "effect"]
STEP_TIMEOUT = 5  # seconds; far more than any step needs

texts = st.text(st.characters(exclude_categories=()), max_size=6)  # lone surrogates included
states = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.dictionaries(
        st.sampled_from(["env", "kont", "n", "xs"]),
        st.one_of(st.integers(0, 9), texts, st.lists(st.integers(0, 3), max_size=3)),
        max_size=4,
    ),
)


ops = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 3),
    texts,
    st.sampled_from(KEYS),
    st.sampled_from(REASONS),
    states,
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), texts),
)


class Hang(BaseException):
    """Not an Exception: the session layer's ``except Exception`` must not swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"a step of the session layer did not finish within {STEP_TIMEOUT} s (deadlock?)")


class Entry:
    """One event of the model, with the state or receipt it carries."""

    __slots__ = ("event", "payload")

    def __init__(self, event: dict[str, Any], payload: Any = None) -> None:
        self.event = event
        self.payload = payload


class SessionMachine(RuleBasedStateMachine):
    root: str | None = None  # the test's tmp_path; each example gets a directory in it

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="example-", dir=self.root)
        self.model: dict[str, list[Entry]] = {}
        self.headers: dict[str, tuple[str, str]] = {}  # name -> (id, created)
        self.hung = False
        self.recorded = 0  # events recorded since the last reopen
        self.ts = 0
        self.old_handler = signal.signal(signal.SIGALRM, _on_alarm)
        self.background = True
        self.pm: PersistenceManager | Any = None

    def _open(self) -> PersistenceManager:
        # With background saves every few ms, or none (then evictions, explicit
        # saves and reopen are what writes, and evicted sessions are dirty).
        interval, after = (0.003, 3) if self.background else (3600.0, 10**6)
        return PersistenceManager(
            SessionPool(2), self.dir, save_interval=interval, save_after=after, register_atexit=False
        )

    def _arm(self) -> None:
        signal.alarm(STEP_TIMEOUT)

    def teardown(self) -> None:
        try:
            if not self.hung and self.pm is not None:  # after a hang the session layer's locks may be held for ever
                self._guard(self.pm.shutdown)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old_handler)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _guard(self, fn: Any, *args: Any) -> Any:
        self._arm()
        try:
            return fn(*args)
        except Hang:
            self.hung = True
            raise
        finally:
            signal.alarm(0)

    # ----------------------------------------------------------------------- rules
    @initialize(background=st.booleans())
    def start(self, background: bool) -> None:
        self.background = background
        self.pm = self._guard(self._open)
        self._guard(self._create, "s0")

    def _create(self, name: str) -> None:
        inst = self.pm.create_session(name)
        self.model[name] = []
        self.headers[name] = (inst.id, inst.created)

    @rule(name=st.sampled_from(NAMES))
    def create(self, name: str) -> None:
        if name in self.model:
            with pytest.raises(SessionExistsError):
                self._guard(self.pm.create_session, name)
        else:
            self._guard(self._create, name)

    @rule(name=st.sampled_from(NAMES))
    def unknown(self, name: str) -> None:
        """Every operation on a session that does not exist is a clear error."""
        if name in self.model:
            return
        for call in (
            lambda: self.pm.load_session(name),
            lambda: self.pm.save_session(name),
            lambda: self.pm.events(name),
            lambda: self.pm.fork(name, "never", -1),
            lambda: self.pm.save_as(name, "never"),
            lambda: self.pm.delete(name),
        ):
            with pytest.raises(UnknownSessionError):
                self._guard(call)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), ops=st.lists(ops, min_size=1, max_size=6))
    def record(self, data: st.DataObject, ops: list[tuple[Any, ...]]) -> None:
        """A REPL command: a few events recorded into one session."""
        name = data.draw(st.sampled_from(sorted(self.model)), label="session")
        for op in ops:
            self._guard(self._record, name, *op)
        self.recorded += len(ops)

    # Recording is what a REPL mostly does: make it the most frequent step.
    record_more = record
    record_even_more = record

    def _record(
        self,
        name: str,
        kind: str,
        d: int,
        text: str,
        key: str,
        reason: str,
        state: Any,
        tokens: int | None,
        stack: str | None,
    ) -> None:
        inst = self.pm.load_session(name)
        entries = self.model[name]
        seq = len(entries)
        assert inst.event_count == seq
        self.ts += 1
        ts = self.ts
        head: dict[str, Any] = {"seq": seq, "ts": ts, "type": kind}
        payload: Any = None
        if kind == "input":
            got = inst.input(text, ts=ts)
            event = {**head, "code": text}
        elif kind == "step":
            got = inst.step(d, text, ts=ts)
            event = {**head, "d": d, "ctrl": text}
        elif kind == "checkpoint":
            got = inst.checkpoint(d, reason, state, ts=ts)
            assert got == f"state-{seq}"
            got = seq
            event = {**head, "d": d, "reason": reason, "stateId": f"state-{seq}"}
            payload = state
        elif kind == "llm_req":
            got = inst.llm_req(d, "model", text, key, ts=ts)
            event = {**head, "d": d, "model": "model", "promptPreview": text, "receiptKey": key}
        elif kind == "llm_resp":
            got = inst.llm_resp(d, text, seq, key, request={"p": text}, response=[seq, text], tokens=tokens, ts=ts)
            event = {**head, "d": d, "valuePreview": text}
            if tokens is not None:
                event["tokens"] = tokens
            event.update(durationMs=seq, receiptKey=key)
            payload = {"key": key, "request": {"p": text}, "response": [seq, text], "timestamp": ts, "durationMs": seq}
            if tokens is not None:
                payload["tokens"] = tokens
        elif kind == "effect":
            got = inst.effect(d, "op", text, ts=ts)
            event = {**head, "d": d, "op": "op", "argsPreview": text}
        elif kind == "resume":
            got = inst.resume(d, text, ts=ts)
            event = {**head, "d": d, "valuePreview": text}
        elif kind == "result":
            got = inst.result(text, ts=ts)
            event = {**head, "value": text}
        else:
            got = inst.error(d, text, stack=stack, ts=ts)
            event = {**head, "d": d, "message": text}
            if stack is not None:
                event["stack"] = stack
        assert got == seq
        entries.append(Entry(event, payload))

    @rule(name=st.sampled_from(NAMES))
    def save(self, name: str) -> None:
        if name not in self.model:
            with pytest.raises(UnknownSessionError):
                self._guard(self.pm.save_session, name)
            return
        self._guard(self.pm.save_session, name)
        inst = self.pm.pool.get(name)
        assert inst is None or inst.pending_changes == 0

    @rule()
    def save_all(self) -> None:
        self._guard(self.pm.force_save)
        assert all(i.pending_changes == 0 for i in self.pm.pool.instances())

    @rule(name=st.sampled_from(NAMES))
    def touch(self, name: str) -> None:
        """Load a session: with a pool of two this evicts (saves) another."""
        if name in self.model:
            inst = self._guard(self.pm.load_session, name)
            assert inst.event_count == len(self.model[name])
            assert len(self.pm.pool) <= 2 or any(i.dirty for i in self.pm.pool.instances())

    @precondition(lambda self: self.model)
    @rule(data=st.data(), new=st.sampled_from(NAMES), frac=st.floats(0, 1))
    def fork(self, data: st.DataObject, new: str, frac: float) -> None:
        src = data.draw(st.sampled_from(sorted(self.model)), label="source")
        n = len(self.model[src])
        with pytest.raises(InvalidArgumentError):
            self._guard(self.pm.fork, src, "never", n)
        at_seq = min(int(frac * (n + 1)), n) - 1
        if new in self.model:
            with pytest.raises(SessionExistsError):
                self._guard(self.pm.fork, src, new, at_seq)
            return
        inst = self._guard(self.pm.fork, src, new, at_seq)
        assert inst.event_count == at_seq + 1 and inst.id == new
        self.model[new] = list(self.model[src][: at_seq + 1])
        self.headers[new] = (inst.id, inst.created)

    @rule(src=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def save_as(self, src: str, new: str) -> None:
        if src not in self.model or new in self.model:
            with pytest.raises((UnknownSessionError, SessionExistsError)):
                self._guard(self.pm.save_as, src, new)
            return
        inst = self._guard(self.pm.save_as, src, new)
        assert (inst.id, inst.created) == self.headers[src]
        self.model[new] = list(self.model[src])
        self.headers[new] = self.headers[src]

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        if name not in self.model:
            with pytest.raises(UnknownSessionError):
                self._guard(self.pm.delete, name)
            return
        self._guard(self.pm.delete, name)
        del self.model[name]
        del self.headers[name]

    @precondition(lambda self: self.recorded >= 4)
    @rule()
    def reopen(self) -> None:
        self.recorded = 0
        self._guard(self.pm.shutdown)
        self.pm = self._guard(self._open)
        assert len(self.pm.pool) == 0

    @rule(which=st.integers(0, 10**6))
    def check(self, which: int) -> None:
        """Compare every session with the model (this saves the dirty ones)."""
        for name in sorted(self.model):
            self._guard(self._check, name, which)

    def _check(self, name: str, which: int) -> None:
        pm, entries = self.pm, self.model[name]
        events = [e.event for e in entries]
        got = pm.events(name)
        assert got == events
        for g, e in zip(got, events, strict=True):
            assert list(g) == list(e), "legacy key order"
        if events:
            lo = which % len(events)
            assert pm.events(name, lo, lo + 2) == events[lo : lo + 2]
        cps = [e.event for e in entries if e.event["type"] == "checkpoint"]
        assert pm.checkpoints(name) == [{"seq": c["seq"], "stateId": c["stateId"], "reason": c["reason"]} for c in cps]
        for e in entries:
            if e.event["type"] == "checkpoint":
                assert pm.get_state(name, e.event["stateId"]) == e.payload
        with pytest.raises(UnknownStateError):
            pm.get_state(name, f"state-{len(entries)}")
        receipts: dict[str, Any] = {}
        for e in entries:
            if e.event["type"] == "llm_resp":
                receipts[e.event["receiptKey"]] = e.payload
        for key in KEYS:
            if key in receipts:
                assert pm.get_receipt(name, key) == receipts[key], key
            else:
                with pytest.raises(UnknownReceiptError):
                    pm.get_receipt(name, key)

    @invariant()
    def listing_agrees(self) -> None:
        metas = self._guard(self.pm.list_sessions)
        assert [m["name"] for m in metas] == sorted(self.model)
        for m in metas:
            entries = self.model[m["name"]]
            assert m["event_count"] == len(entries)
            assert m["checkpoint_count"] == sum(e.event["type"] == "checkpoint" for e in entries)
            assert (m["id"], m["created"]) == self.headers[m["name"]]


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def test_session_layer_matches_the_model(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SessionMachine, "root", str(tmp_path))
    run_state_machine_as_test(SessionMachine, settings=SETTINGS)
