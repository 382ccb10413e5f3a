"""SessionInstance: one REPL session in memory.

It holds the session's metadata and the changes recorded since the last save
point, never its history (that is read from the store when asked for). The
recording methods build events with the legacy types and key order and
number them with ``seq``; they are cheap enough to call on every REPL step.

A save takes the pending changes out under the instance's lock (the save
point) and writes them; events recorded meanwhile go to a fresh pending list
and are written by the next save. A failed save puts its changes back. A save
may take them in steps: ``take_changes(max_events, max_bytes)`` hands over the
oldest events only, with the states and receipts recorded with them, so that
each step's work is bounded and the steps, written in turn, keep the order.

An instance of a PersistenceManager shares its ``RecordingGate``: once the
manager is shut down, or while its saves fail, recording raises instead of
keeping events that would never be stored.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import Any

from ..errors import InvalidArgumentError, RecordTooLargeError, UnknownSessionError
from ..log import codec
from . import values
from .schema import (
    REASONS,
    check_int,
    check_receipt_key,
    check_session_name,
    check_str,
    iso_now,
    now_ms,
    preview,
)


@dataclass
class Changes:
    """What a save writes: everything recorded between two save points."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: (state id, msgpack bytes of the state), in checkpoint order
    states: list[tuple[str, bytes]] = field(default_factory=list)
    #: (receipt key, seq of the llm_resp, receipt dict), in order
    receipts: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.states or self.receipts)

    def __len__(self) -> int:
        return len(self.events) + len(self.states) + len(self.receipts)

    def prepend(self, earlier: Changes) -> None:
        self.events[:0] = earlier.events
        self.states[:0] = earlier.states
        self.receipts[:0] = earlier.receipts


def _state_seq(state_id: str) -> int:
    """The seq of the checkpoint that recorded state ``state_id`` (``state-<seq>``; -1: none)."""
    tail = state_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _payload_sizes(changes: Changes) -> list[int]:
    """Bytes of the state or receipt recorded with each event of ``changes`` (0: none)."""
    sizes = [0] * len(changes.events)
    index = {e["seq"]: i for i, e in enumerate(changes.events)}
    for state_id, raw in changes.states:
        i = index.get(_state_seq(state_id))
        if i is not None:
            sizes[i] += len(raw)
    for _key, seq, receipt in changes.receipts:
        i = index.get(seq)
        if i is not None:
            sizes[i] += len(codec.pack(receipt)[0])
    return sizes


class RecordingGate:
    """Shared by the instances of one PersistenceManager. While ``refuse`` is set,
    every recording method calls it (under the instance's lock, before the event
    is numbered) and it raises: nothing is recorded. ``recorded_at`` is the
    ``time.monotonic()`` of the last event recorded through the gate (or of the start of
    a state's or receipt's encoding): the manager's background saver takes no step
    of its own while recording goes on."""

    __slots__ = ("recorded_at", "refuse")

    def __init__(self) -> None:
        self.refuse: Callable[[SessionInstance], None] | None = None
        self.recorded_at = 0.0


class SessionInstance:
    """One session: metadata plus the changes since the last save point."""

    def __init__(
        self,
        name: str,
        session_id: str | None = None,
        created: str | None = None,
        *,
        event_count: int = 0,
        checkpoint_count: int = 0,
        size_on_disk: int = 0,
    ) -> None:
        self.name = check_session_name(name)
        #: The header ``id`` (``sessionId`` of the index); may differ from the name.
        self.id = session_id if session_id is not None else name
        self.created = created if created is not None else iso_now()
        self.last_accessed = time.time()
        self.event_count = event_count
        self.checkpoint_count = checkpoint_count
        self.size_on_disk = size_on_disk
        self._lock = threading.Lock()
        self._pending = Changes()
        #: Per pending event: the bytes of the state or receipt recorded with it (0:
        #: none), and when it was recorded (``time.monotonic()``).
        self._sizes: list[int] = []
        self._stamps: list[float] = []
        self._first_change_at = 0.0
        self.save_lock = threading.Lock()  # held by a save in progress
        #: Called after each recorded change with (instance, pending change count).
        self.on_change: Callable[[SessionInstance, int], None] | None = None
        #: The stored session this instance belongs to (set by the PersistenceManager).
        self.uid: str | None = None
        self.deleted = False
        #: Set by the PersistenceManager (see RecordingGate).
        self.gate: RecordingGate | None = None
        #: Largest encoded state, receipt or event text accepted (the store's record limit).
        self.max_value_bytes = 16 << 20
        #: A recording thread asked the background saver for a step of this session
        #: and it has not run yet (see PersistenceManager).
        self.step_requested = False

    # -- state ------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """True while changes are pending or a save of them is in progress."""
        return bool(self._pending) or self.save_lock.locked()

    @property
    def pending_changes(self) -> int:
        return len(self._pending)

    @property
    def pending_events(self) -> int:
        """Unsaved events (pending_changes also counts their states and receipts)."""
        return len(self._pending.events)

    @property
    def first_change_at(self) -> float:
        """``time.monotonic()`` of the oldest unsaved change (0 when clean)."""
        return self._first_change_at

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "created": self.created,
            "last_accessed": self.last_accessed,
            "event_count": self.event_count,
            "checkpoint_count": self.checkpoint_count,
            "size_on_disk": self.size_on_disk,
        }

    @property
    def first_pending_seq(self) -> int:
        """The seq of the oldest unsaved event (``event_count`` when there is none)."""
        events = self._pending.events
        try:
            return int(events[0]["seq"])
        except IndexError:
            return self.event_count

    def take_changes(
        self, max_events: int | None = None, max_bytes: int | None = None, before: int | None = None
    ) -> Changes:
        """The save point: hand over what is pending and start afresh.

        With limits, only the oldest pending events are handed over, with the
        states and receipts recorded with them: at most ``max_events`` events,
        as many as fit in ``max_bytes`` of states and receipts (at least one),
        and only events with ``seq < before``. The rest stays pending, after
        anything a failed save puts back."""
        with self._lock:
            pending = self._pending
            events = pending.events
            n = len(events)
            k = n if max_events is None else min(n, max(max_events, 1))
            if before is not None and n:
                k = min(k, max(before - events[0]["seq"], 0))
            if max_bytes is not None and k > 1:
                k = max(bisect_right(list(accumulate(islice(self._sizes, k))), max_bytes), 1)
            if k == n:
                taken, self._pending, self._sizes, self._stamps = pending, Changes(), [], []
                self._first_change_at = 0.0
                return taken
            if not k:
                return Changes()
            self._first_change_at = self._stamps[k]  # when the oldest event left was recorded
            last = events[k - 1]["seq"]
            states, receipts = pending.states, pending.receipts
            ns = 0
            while ns < len(states) and _state_seq(states[ns][0]) <= last:
                ns += 1
            nr = 0
            while nr < len(receipts) and receipts[nr][1] <= last:
                nr += 1
            taken = Changes(events[:k], states[:ns], receipts[:nr])
            del events[:k], states[:ns], receipts[:nr], self._sizes[:k], self._stamps[:k]
        return taken

    def mark_deleted(self) -> None:
        """The session was deleted: drop what is pending and refuse new events."""
        with self._lock:
            self.deleted = True
            self._pending = Changes()
            self._sizes, self._stamps = [], []
            self._first_change_at = 0.0

    def restore_changes(self, changes: Changes) -> None:
        """Put back the changes of a save that failed, before anything newer."""
        if not changes:
            return
        sizes = _payload_sizes(changes)
        with self._lock:
            self._pending.prepend(changes)
            self._sizes[:0] = sizes
            self._first_change_at = self._first_change_at or time.monotonic()
            self._stamps[:0] = [self._first_change_at] * len(changes.events)

    def __repr__(self) -> str:
        return f"<SessionInstance {self.name!r} events={self.event_count} dirty={self.dirty}>"

    # -- recording ----------------------------------------------------------------
    def _record(
        self, event: dict[str, Any], state: bytes | None = None, receipt: dict[str, Any] | None = None, size: int = 0
    ) -> int:
        """Number ``event`` (its first key is ``seq``) and add it to the pending changes;
        ``size``: the bytes of its receipt."""
        with self._lock:
            if self.deleted:
                raise UnknownSessionError(f"session {self.name!r} was deleted")
            gate = self.gate
            if gate is not None and gate.refuse is not None:
                gate.refuse(self)
            seq = self.event_count
            event["seq"] = seq
            pending = self._pending
            pending.events.append(event)
            if state is not None:
                event["stateId"] = state_id = f"state-{seq}"
                pending.states.append((state_id, state))
                self.checkpoint_count += 1
                size = len(state)
            if receipt is not None:
                pending.receipts.append((receipt["key"], seq, receipt))
            self.event_count = seq + 1
            self.last_accessed = time.time()
            mono = time.monotonic()
            self._sizes.append(size)
            self._stamps.append(mono)
            if gate is not None:
                gate.recorded_at = mono
            if not self._first_change_at:
                self._first_change_at = mono
            n = len(pending.events)
        if self.on_change is not None:
            self.on_change(self, n)
        return seq

    def _busy(self) -> None:
        """Tell the gate that recording goes on (see RecordingGate.recorded_at)."""
        gate = self.gate
        if gate is not None:
            gate.recorded_at = time.monotonic()

    @staticmethod
    def _ts(ts: int | None) -> int:
        return now_ms() if ts is None else check_int("ts", ts)

    def _sized(self, what: str, size: int) -> None:
        if size > self.max_value_bytes:
            raise RecordTooLargeError(f"{what} of {size} bytes is over the store's limit of {self.max_value_bytes}")

    def _text(self, field: str, value: object) -> str:
        text = check_str(field, value)
        if 3 * len(text) > self.max_value_bytes // 2:  # may be too large: measure exactly
            self._sized(field, 2 * len(text.encode("utf-8", "surrogatepass")))
        return text

    def input(self, code: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "input", "code": self._text("code", code)})

    def step(self, d: int, ctrl: str, ts: int | None = None) -> int:
        return self._record(
            {"seq": 0, "ts": self._ts(ts), "type": "step", "d": check_int("d", d), "ctrl": self._text("ctrl", ctrl)}
        )

    def checkpoint(self, d: int, reason: str, state: Any, ts: int | None = None) -> str:
        """Record a checkpoint with its serialized machine state; return its state id.

        The state is encoded (a snapshot) before this returns, so the caller may
        reuse or change its object afterwards.
        """
        if reason not in REASONS:
            raise InvalidArgumentError(f"checkpoint reason must be one of {sorted(REASONS)}, not {reason!r}")
        event = {
            "seq": 0,
            "ts": self._ts(ts),
            "type": "checkpoint",
            "d": check_int("d", d),
            "reason": reason,
            "stateId": "",
        }
        self._busy()  # encoding a large state takes a while: recording goes on meanwhile
        raw = values.pack_value(state)
        self._sized("state", len(raw))
        self._record(event, state=raw)
        return str(event["stateId"])

    def llm_req(self, d: int, model: str, prompt_preview: str, receipt_key: str, ts: int | None = None) -> int:
        return self._record(
            {
                "seq": 0,
                "ts": self._ts(ts),
                "type": "llm_req",
                "d": check_int("d", d),
                "model": check_str("model", model),
                "promptPreview": preview(check_str("promptPreview", prompt_preview)),
                "receiptKey": check_receipt_key(receipt_key),
            }
        )

    def llm_resp(
        self,
        d: int,
        value_preview: str,
        duration_ms: int,
        receipt_key: str,
        *,
        request: Any,
        response: Any,
        timestamp: int | None = None,
        tokens: Any = None,
        ts: int | None = None,
    ) -> int:
        """Record an LLM response with its receipt ``{key, request, response, timestamp, durationMs, tokens?}``."""
        ts = self._ts(ts)
        check_receipt_key(receipt_key)
        event: dict[str, Any] = {
            "seq": 0,
            "ts": ts,
            "type": "llm_resp",
            "d": check_int("d", d),
            "valuePreview": preview(check_str("valuePreview", value_preview)),
        }
        if tokens is not None:
            tokens = event["tokens"] = values.storable(tokens)
        event["durationMs"] = check_int("durationMs", duration_ms)
        event["receiptKey"] = receipt_key
        receipt: dict[str, Any] = {
            "key": receipt_key,
            "request": values.storable(request),
            "response": values.storable(response),
            "timestamp": ts if timestamp is None else check_int("timestamp", timestamp),
            "durationMs": duration_ms,
        }
        if tokens is not None:
            receipt["tokens"] = tokens
        self._busy()
        size = len(codec.pack(receipt)[0])
        self._sized("receipt", size)  # reject what cannot be stored now
        return self._record(event, receipt=receipt, size=size)

    def effect(self, d: int, op: str, args_preview: str, ts: int | None = None) -> int:
        return self._record(
            {
                "seq": 0,
                "ts": self._ts(ts),
                "type": "effect",
                "d": check_int("d", d),
                "op": check_str("op", op),
                "argsPreview": preview(check_str("argsPreview", args_preview)),
            }
        )

    def resume(self, d: int, value_preview: str, ts: int | None = None) -> int:
        return self._record(
            {
                "seq": 0,
                "ts": self._ts(ts),
                "type": "resume",
                "d": check_int("d", d),
                "valuePreview": preview(check_str("valuePreview", value_preview)),
            }
        )

    def result(self, value: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "result", "value": self._text("value", value)})

    def error(self, d: int, message: str, stack: str | None = None, ts: int | None = None) -> int:
        event: dict[str, Any] = {
            "seq": 0,
            "ts": self._ts(ts),
            "type": "error",
            "d": check_int("d", d),
            "message": self._text("message", message),
        }
        if stack is not None:
            event["stack"] = self._text("stack", stack)
        return self._record(event)
