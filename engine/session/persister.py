"""SessionPersister and IncrementalWriter: one session's persistence in a store.

Where a session's events, checkpoint entries, states and receipts live is
``layout``'s business; events are stored compactly (see ``events``), states
delta-compressed (see ``state_codec``).

A fork has a ``parent`` uid and a ``base``: events, checkpoints, states and
receipts of the parent before ``base`` are shared, not copied.

A save writes states and receipts first, then the events (one record: the
commit point), then the checkpoint entries. A crash between the last two
steps is repaired on load from the events, so a save is never visible in
half; blobs written before a crash that lost their events are never listed
and are overwritten when those seqs are recorded again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    CorruptionError,
    InvalidArgumentError,
    NotFoundError,
    RecordTooLargeError,
    UnknownReceiptError,
    UnknownStateError,
)
from ..log.store import Store
from . import events as session_events
from . import layout
from .instance import Changes, SessionInstance
from .state_codec import StateEncoder, decode_raw, raw_to_value

log = logging.getLogger(__name__)


@dataclass
class SessionMeta:
    """What the catalog keeps per session (see ``layout.meta_key``)."""

    uid: str
    name: str
    id: str
    created: str
    parent: str | None = None  # uid of the session this one forked from
    base: int = 0  # first REPL seq stored in this session's own stream
    cp_base: int = 0  # checkpoints inherited from the parent
    deleted: bool = False  # hidden, kept only while forks share its data
    index_id: str | None = None  # the legacy index's sessionId when it differs from ``id``
    raw_events: int = -1  # event count up to which stored legacy bytes override rendering
    source: dict[str, str] | None = None  # digests of the legacy files an import came from

    def to_doc(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SessionMeta:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


def _encode_state(encoder: StateEncoder, state_id: str, raw: bytes, fmt: str, seq: int) -> dict[str, Any]:
    """The stored form of a state whose checkpoint is at ``seq`` (-1: none)."""
    doc = encoder.encode(state_id, raw, fmt)
    doc["s"] = seq
    return doc


def _encode_receipt(seq: int, receipt: Any, prev: int | None = None) -> dict[str, Any]:
    """The stored form of a receipt recorded at ``seq``; ``prev``: the seq of the version before."""
    return {"seq": seq, "receipt": receipt, "prev": prev}


class IncrementalWriter:
    """Writes a session's changes since its last save point, in few engine records."""

    def __init__(self, store: Store, meta: SessionMeta, encoder: StateEncoder) -> None:
        self.store = store
        self.meta = meta
        self.encoder = encoder
        self._last_cp: int | None = None  # seq of the last checkpoint entry written

    def write(self, changes: Changes) -> int:
        """Write ``changes`` (in one write to the OS); return the number of engine records.

        If it fails, the delta encoder is left as it was, so a retry encodes the
        same states against the same bases."""
        enc = self.encoder
        before = (enc.prev_id, enc.prev_raw, enc.prev_fmt, enc.since_keyframe)
        try:
            with self.store.batch():
                return self._write(changes)
        except BaseException:
            enc.prev_id, enc.prev_raw, enc.prev_fmt, enc.since_keyframe = before
            raise

    def _write(self, changes: Changes) -> int:
        store, uid = self.store, self.meta.uid
        ev = layout.ev_stream(uid)
        records = 0
        for state_id, raw in changes.states:
            tail = state_id.rsplit("-", 1)[-1]
            seq = int(tail) if tail.isdigit() else -1
            store.put_blob(ev, layout.state_key(state_id), _encode_state(self.encoder, state_id, raw, "m", seq))
            records += 1
        for key, seq, receipt in changes.receipts:
            try:
                old = store.get_blob(ev, layout.receipt_key(key))
            except NotFoundError:
                old = None
            prev = None
            if old is not None and old["seq"] != seq:
                # Keep the earlier version for forks made before this write.
                store.put_blob(ev, layout.receipt_version_key(key, old["seq"]), old)
                prev = old["seq"]
                records += 1
            store.put_blob(ev, layout.receipt_key(key), _encode_receipt(seq, receipt, prev))
            records += 1
        events = changes.events
        if events:
            stored = self.meta.base + (store.next_seq(ev) if store.has_stream(ev) else 0)
            first = events[0]["seq"]
            if not first <= stored <= first + len(events):
                raise CorruptionError(
                    f"session {self.meta.name!r}: next event is seq {first}, the store expects {stored}"
                )
            # A retried save may find its first events already committed.
            events = events[stored - first :]
        if events:
            first = events[0]["seq"]
            records += self._append_events(ev, [session_events.encode(e, first + i) for i, e in enumerate(events)])
        cp = layout.cp_stream(uid)
        if self._last_cp is None:
            self._last_cp = store.get(cp, store.next_seq(cp) - 1)["seq"] if store.has_stream(cp) else -1
        cps = [{"seq": e["seq"], "stateId": e["stateId"], "reason": e["reason"]}
               for e in changes.events if e["type"] == "checkpoint" and e["seq"] > self._last_cp]
        if cps:
            store.append_batch(cp, cps)
            self._last_cp = cps[-1]["seq"]
            records += 1
        return records


    def _append_events(self, stream: str, stored: list[Any]) -> int:
        """Append events (the commit point) in as few records as the record limit allows."""
        try:
            self.store.append_batch(stream, stored)
            return 1
        except RecordTooLargeError:
            if len(stored) == 1:
                raise
        half = len(stored) // 2
        return self._append_events(stream, stored[:half]) + self._append_events(stream, stored[half:])


class SessionPersister:
    """Reads and writes one session (and, through its parents, what it shares)."""

    def __init__(self, store: Store, meta: SessionMeta, parent: SessionPersister | None,
                 max_state_bytes: int) -> None:
        self.store = store
        self.meta = meta
        self.parent = parent
        self.max_state_bytes = max_state_bytes
        self._writer: IncrementalWriter | None = None
        self._unlisted: tuple[tuple[int, int], list[dict[str, Any]]] | None = None

    # -- sizes ---------------------------------------------------------------------
    def _own(self, stream: str) -> int:
        return self.store.next_seq(stream) if self.store.has_stream(stream) else 0

    @property
    def event_count(self) -> int:
        return self.meta.base + self._own(layout.ev_stream(self.meta.uid))

    @property
    def checkpoint_count(self) -> int:
        return self.meta.cp_base + self._own(layout.cp_stream(self.meta.uid)) + len(self._unlisted_checkpoints())

    def _unlisted_checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint events after the last checkpoint entry: what a crash between a
        save's events and its checkpoint entries left out (repair() writes them)."""
        uid = self.meta.uid
        n_cp = self._own(layout.cp_stream(uid))
        end = self.event_count
        key = (n_cp, end)
        if self._unlisted is None or self._unlisted[0] != key:
            last = self.store.get(layout.cp_stream(uid), n_cp - 1)["seq"] if n_cp else self.meta.base - 1
            start = max(last + 1, self.meta.base)
            found = [{"seq": e["seq"], "stateId": e["stateId"], "reason": e["reason"]}
                     for e in self.events(start, end) if e["type"] == "checkpoint"] if start < end else []
            self._unlisted = (key, found)
        return self._unlisted[1]

    @property
    def size_on_disk(self) -> int:
        total = 0
        for stream in layout.session_streams(self.meta.uid):
            if self.store.has_stream(stream):
                total += self.store.stream_bytes(stream)
        return total

    # -- writing ---------------------------------------------------------------------
    def writer(self) -> IncrementalWriter:
        if self._writer is None:
            self._writer = IncrementalWriter(self.store, self.meta, self._resume_encoder())
        return self._writer

    def _resume_encoder(self) -> StateEncoder:
        """Continue the delta chain from the session's last stored state."""
        cps = self.checkpoints(self.checkpoint_count - 1, None) if self.checkpoint_count else []
        if not cps:
            return StateEncoder()
        last = cps[-1]["stateId"]
        try:
            fmt, raw = self.state_raw(last)
        except NotFoundError:
            return StateEncoder()
        # Start a new keyframe after a reopen: the chain length is not tracked across opens.
        return StateEncoder(last, raw, fmt, since_keyframe=10**9)

    def save(self, changes: Changes) -> int:
        return self.writer().write(changes)

    def repair(self) -> None:
        """Add checkpoint entries that a crash after the events' commit left out."""
        uid = self.meta.uid
        if self.store.options.readonly:
            return
        cps = self._unlisted_checkpoints()
        if cps:
            log.warning("session %r: restoring %d checkpoint entries after a crash", self.meta.name, len(cps))
            self.store.append_batch(layout.cp_stream(uid), cps)

    # -- writing a session from its parts (imports) ------------------------------------
    def put_states(self, states: Iterable[tuple[str, str, bytes, int]]) -> int:
        """Store ``(state id, format, raw bytes, seq of its checkpoint or -1)`` in order,
        each delta-encoded against the one before. Returns how many."""
        ev = layout.ev_stream(self.meta.uid)
        encoder = StateEncoder()
        n = 0
        for state_id, fmt, raw, seq in states:
            self.store.put_blob(ev, layout.state_key(state_id), _encode_state(encoder, state_id, raw, fmt, seq))
            n += 1
        return n

    def put_receipt(self, key: str, seq: int, receipt: Any) -> None:
        """Store receipt ``key`` as recorded by the llm_resp at ``seq`` (-1: none), replacing
        any earlier version."""
        self.store.put_blob(layout.ev_stream(self.meta.uid), layout.receipt_key(key), _encode_receipt(seq, receipt))

    def append_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events, the first of which must be the session's next seq, in one record."""
        if not events:
            return
        first = self.event_count
        if events[0].get("seq") != first:
            raise InvalidArgumentError(
                f"session {self.meta.name!r}: next event is seq {first}, not {events[0].get('seq')!r}"
            )
        stored = [session_events.encode(e, first + i) for i, e in enumerate(events)]
        self.store.append_batch(layout.ev_stream(self.meta.uid), stored)

    def append_checkpoint_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append checkpoint entries ``{seq, stateId, reason}`` in one record."""
        if entries:
            self.store.append_batch(layout.cp_stream(self.meta.uid), list(entries))

    def put_legacy_source(self, jsonl: bytes, index: bytes) -> None:
        """Keep an imported session's source files, to be returned by :meth:`legacy_source`
        as long as the session does not grow. The caller writes the meta afterwards."""
        ev = layout.ev_stream(self.meta.uid)
        self.store.put_blob(ev, layout.LEGACY_JSONL, jsonl)
        self.store.put_blob(ev, layout.LEGACY_INDEX, index)
        self.meta.raw_events = self.event_count

    def legacy_source(self) -> tuple[bytes, bytes] | None:
        """``(jsonl, index)`` kept by :meth:`put_legacy_source`, while the session has not
        grown since; else None."""
        if self.meta.raw_events < 0 or self.event_count != self.meta.raw_events:
            return None
        ev = layout.ev_stream(self.meta.uid)
        return self.store.get_blob(ev, layout.LEGACY_JSONL), self.store.get_blob(ev, layout.LEGACY_INDEX)

    # -- reading ---------------------------------------------------------------------
    def events(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Events ``start <= seq < stop`` (REPL seqs), shared ones from the parents."""
        end = self.event_count if stop is None else min(stop, self.event_count)
        start = max(start, 0)
        base = self.meta.base
        if start < base and self.parent is not None:
            yield from self.parent.events(start, min(end, base))
        if end > base:
            ev = layout.ev_stream(self.meta.uid)
            if self.store.has_stream(ev):
                first = max(start, base)
                decode = session_events.decode
                for i, stored in enumerate(self.store.scan(ev, first - base, end - base)):
                    yield decode(stored, first + i)

    def checkpoints(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Checkpoint entries (``{seq, stateId, reason}``) by position ``start..stop``."""
        total = self.checkpoint_count
        end = total if stop is None else min(stop, total)
        out: list[dict[str, Any]] = []
        cb = self.meta.cp_base
        if start < cb and self.parent is not None:
            out.extend(self.parent.checkpoints(start, min(end, cb)))
        if end > cb:
            cp = layout.cp_stream(self.meta.uid)
            listed = self._own(cp)
            if listed:
                out.extend(self.store.scan(cp, max(start, cb) - cb, min(end - cb, listed)))
            first_unlisted = cb + listed
            if end > first_unlisted:
                unlisted = self._unlisted_checkpoints()
                out.extend(unlisted[max(start, first_unlisted) - first_unlisted : end - first_unlisted])
        return out

    def _state_doc(self, state_id: str, before: int | None = None) -> Any:
        """The stored state, if its checkpoint was committed before seq ``before``
        (default: this session's end). A state written by a save whose events never
        made it (a crash in between) is not there."""
        limit = self.event_count if before is None else before
        ev = layout.ev_stream(self.meta.uid)
        try:
            doc = self.store.get_blob(ev, layout.state_key(state_id))
            if doc.get("s", -1) < limit:
                return doc
        except NotFoundError:
            pass
        if self.parent is not None:
            return self.parent._state_doc(state_id, min(limit, self.meta.base))
        raise UnknownStateError(f"session {self.meta.name!r} has no state {state_id!r}")

    def state_raw(self, state_id: str, known: dict[str, tuple[str, bytes]] | None = None) -> tuple[str, bytes]:
        """``(format, raw bytes)`` of a state; ``known`` as for ``state_codec.decode_raw``."""
        return decode_raw(state_id, self._state_doc, self.max_state_bytes, known)

    def states_raw(self, state_ids: list[str]) -> Iterator[tuple[str, str, bytes]]:
        """``(state id, format, raw bytes)`` of states in checkpoint order, each decoded
        from the one before instead of from its keyframe."""
        known: dict[str, tuple[str, bytes]] = {}
        for state_id in state_ids:
            fmt, raw = decode_raw(state_id, self._state_doc, self.max_state_bytes, known)
            known = {state_id: (fmt, raw)}
            yield state_id, fmt, raw

    def state(self, state_id: str) -> Any:
        return raw_to_value(*self.state_raw(state_id))

    def receipt(self, key: str) -> dict[str, Any]:
        """The receipt stored under ``key`` (the last one written)."""
        doc = self._receipt_doc(key, self.event_count)
        if doc is None:
            raise UnknownReceiptError(f"session {self.meta.name!r} has no receipt {key!r}")
        receipt: dict[str, Any] = doc["receipt"]
        return receipt

    def _receipt_doc(self, key: str, before: int) -> dict[str, Any] | None:
        """The last version of receipt ``key`` written before seq ``before``: this
        session's own versions, then what it shares of its parent's."""
        ev = layout.ev_stream(self.meta.uid)
        try:
            doc: dict[str, Any] | None = self.store.get_blob(ev, layout.receipt_key(key))
        except NotFoundError:
            doc = None
        while doc is not None and doc["seq"] >= before:
            prev = doc.get("prev")
            doc = self.store.get_blob(ev, layout.receipt_version_key(key, prev)) if prev is not None else None
        if doc is not None:
            return doc
        if self.parent is not None:
            return self.parent._receipt_doc(key, min(before, self.meta.base))
        return None

    def instance(self) -> SessionInstance:
        """A complete SessionInstance with this session's metadata."""
        return SessionInstance(self.meta.name, self.meta.id, self.meta.created,
                               event_count=self.event_count, checkpoint_count=self.checkpoint_count,
                               size_on_disk=self.size_on_disk)
