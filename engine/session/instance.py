"""SessionInstance: one REPL session in memory.

It holds the session's metadata and the changes recorded since the last save
point, never its history (that is read from the store when asked for). The
recording methods build events with the legacy types and key order and
number them with ``seq``; they are cheap enough to call on every REPL step.

A save takes the pending changes out under the instance's lock (the save
point) and writes them; events recorded meanwhile go to a fresh pending list
and are written by the next save. A failed save puts its changes back.

An instance of a PersistenceManager shares its ``RecordingGate``: once the
manager is shut down, or while its saves fail, recording raises instead of
keeping events that would never be stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


class RecordingGate:
    """Shared by the instances of one PersistenceManager. While ``refuse`` is set,
    every recording method calls it (under the instance's lock, before the event
    is numbered) and it raises: nothing is recorded."""

    __slots__ = ("refuse",)

    def __init__(self) -> None:
        self.refuse: Callable[[SessionInstance], None] | None = None


class SessionInstance:
    """One session: metadata plus the changes since the last save point."""

    def __init__(self, name: str, session_id: str | None = None, created: str | None = None, *,
                 event_count: int = 0, checkpoint_count: int = 0, size_on_disk: int = 0) -> None:
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

    # -- state ------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """True while changes are pending or a save of them is in progress."""
        return bool(self._pending) or self.save_lock.locked()

    @property
    def pending_changes(self) -> int:
        return len(self._pending)

    @property
    def first_change_at(self) -> float:
        """``time.monotonic()`` of the oldest unsaved change (0 when clean)."""
        return self._first_change_at

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name, "id": self.id, "created": self.created,
            "last_accessed": self.last_accessed, "event_count": self.event_count,
            "checkpoint_count": self.checkpoint_count, "size_on_disk": self.size_on_disk,
        }

    def take_changes(self) -> Changes:
        """The save point: hand over everything pending and start afresh."""
        with self._lock:
            taken, self._pending = self._pending, Changes()
            self._first_change_at = 0.0
        return taken

    def mark_deleted(self) -> None:
        """The session was deleted: drop what is pending and refuse new events."""
        with self._lock:
            self.deleted = True
            self._pending = Changes()
            self._first_change_at = 0.0

    def restore_changes(self, changes: Changes) -> None:
        """Put back the changes of a save that failed, before anything newer."""
        if not changes:
            return
        with self._lock:
            self._pending.prepend(changes)
            self._first_change_at = self._first_change_at or time.monotonic()

    def __repr__(self) -> str:
        return f"<SessionInstance {self.name!r} events={self.event_count} dirty={self.dirty}>"

    # -- recording ----------------------------------------------------------------
    def _record(self, event: dict[str, Any], state: bytes | None = None,
                receipt: dict[str, Any] | None = None) -> int:
        """Number ``event`` (its first key is ``seq``) and add it to the pending changes."""
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
            if receipt is not None:
                pending.receipts.append((receipt["key"], seq, receipt))
            self.event_count = seq + 1
            self.last_accessed = time.time()
            if not self._first_change_at:
                self._first_change_at = time.monotonic()
            n = len(pending.events)
        if self.on_change is not None:
            self.on_change(self, n)
        return seq

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
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "step", "d": check_int("d", d),
                             "ctrl": self._text("ctrl", ctrl)})

    def checkpoint(self, d: int, reason: str, state: Any, ts: int | None = None) -> str:
        """Record a checkpoint with its serialized machine state; return its state id.

        The state is encoded (a snapshot) before this returns, so the caller may
        reuse or change its object afterwards.
        """
        if reason not in REASONS:
            raise InvalidArgumentError(f"checkpoint reason must be one of {sorted(REASONS)}, not {reason!r}")
        event = {"seq": 0, "ts": self._ts(ts), "type": "checkpoint", "d": check_int("d", d),
                 "reason": reason, "stateId": ""}
        raw = values.pack_value(state)
        self._sized("state", len(raw))
        self._record(event, state=raw)
        return str(event["stateId"])

    def llm_req(self, d: int, model: str, prompt_preview: str, receipt_key: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "llm_req", "d": check_int("d", d),
                             "model": check_str("model", model),
                             "promptPreview": preview(check_str("promptPreview", prompt_preview)),
                             "receiptKey": check_receipt_key(receipt_key)})

    def llm_resp(self, d: int, value_preview: str, duration_ms: int, receipt_key: str, *,
                 request: Any, response: Any, timestamp: int | None = None, tokens: Any = None,
                 ts: int | None = None) -> int:
        """Record an LLM response with its receipt ``{key, request, response, timestamp, durationMs, tokens?}``."""
        ts = self._ts(ts)
        check_receipt_key(receipt_key)
        event: dict[str, Any] = {"seq": 0, "ts": ts, "type": "llm_resp", "d": check_int("d", d),
                                 "valuePreview": preview(check_str("valuePreview", value_preview))}
        if tokens is not None:
            tokens = event["tokens"] = values.storable(tokens)
        event["durationMs"] = check_int("durationMs", duration_ms)
        event["receiptKey"] = receipt_key
        receipt: dict[str, Any] = {"key": receipt_key, "request": values.storable(request),
                                   "response": values.storable(response),
                                   "timestamp": ts if timestamp is None else check_int("timestamp", timestamp),
                                   "durationMs": duration_ms}
        if tokens is not None:
            receipt["tokens"] = tokens
        self._sized("receipt", len(codec.pack(receipt)[0]))  # reject what cannot be stored now
        return self._record(event, receipt=receipt)

    def effect(self, d: int, op: str, args_preview: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "effect", "d": check_int("d", d),
                             "op": check_str("op", op),
                             "argsPreview": preview(check_str("argsPreview", args_preview))})

    def resume(self, d: int, value_preview: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "resume", "d": check_int("d", d),
                             "valuePreview": preview(check_str("valuePreview", value_preview))})

    def result(self, value: str, ts: int | None = None) -> int:
        return self._record({"seq": 0, "ts": self._ts(ts), "type": "result", "value": self._text("value", value)})

    def error(self, d: int, message: str, stack: str | None = None, ts: int | None = None) -> int:
        event: dict[str, Any] = {"seq": 0, "ts": self._ts(ts), "type": "error", "d": check_int("d", d),
                                 "message": self._text("message", message)}
        if stack is not None:
            event["stack"] = self._text("stack", stack)
        return self._record(event)
