"""SessionPersister and IncrementalWriter: one session's persistence in a store.

Where a session's events, checkpoint entries, states and receipts live is
``layout``'s business; events are stored compactly (see ``events``), states
delta-compressed (see ``state_codec``).

A fork has a ``parent`` uid and a ``base``: events, checkpoints, states and
receipts of the parent before ``base`` are shared, not copied. A read through
a fork passes a limit to its parent (``min(limit, base)``), and the parent
answers as of that seq: its events and checkpoints before it, the states whose
checkpoint is before it, the last version of a receipt written before it.

A session reads and writes the streams of the generation its meta names
(``layout``). A deleted session that forks still share is trimmed by the
catalog: :meth:`SessionPersister.write_trimmed` copies what reads through its
descendants can reach into the streams of the next generation, the catalog
switches the meta and drops the old streams. A read that runs while that
happens finds the old streams gone and reads again from the new ones, which
answer it the same.

A save writes states and receipts first, then the events (one record: the
commit point), then the checkpoint entries. A crash between the last two
steps is repaired on load from the events, so a save is never visible in
half; blobs written before a crash that lost their events are never listed
and are overwritten when those seqs are recorded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import (
    BlobNotFoundError,
    CorruptionError,
    InvalidArgumentError,
    NotFoundError,
    RecordTooLargeError,
    UnknownReceiptError,
    UnknownStateError,
    UnknownStreamError,
)
from ..log.store import Store
from . import events as session_events
from . import layout
from .instance import Changes, SessionInstance
from .state_codec import StateEncoder, decode_raw, raw_to_value, state_base

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Events per record when a trim copies a session's events.
COPY_EVENTS_PER_RECORD = 1024


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
    generation: int = 0  # which streams hold its data (``layout``); raised by each trim

    def to_doc(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        if not doc["generation"]:  # as metas were written before trims existed
            del doc["generation"]
        return doc

    def streams(self) -> tuple[str, str]:
        """``(events, checkpoints)``: the streams of its current generation."""
        return layout.session_streams(self.uid, self.generation)

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
        store = self.store
        ev, cp = self.meta.streams()
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
            elif old is not None:  # the same seq written again (a retried save): same history
                prev = old.get("prev")
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
            stored_events = [session_events.encode(e, first + i) for i, e in enumerate(events)]
            records += append_stored_events(store, ev, stored_events)
        if self._last_cp is None:
            self._last_cp = store.get(cp, store.next_seq(cp) - 1)["seq"] if store.has_stream(cp) else -1
        cps = [
            {"seq": e["seq"], "stateId": e["stateId"], "reason": e["reason"]}
            for e in changes.events
            if e["type"] == "checkpoint" and e["seq"] > self._last_cp
        ]
        if cps:
            store.append_batch(cp, cps)
            self._last_cp = cps[-1]["seq"]
            records += 1
        return records


def append_stored_events(store: Store, stream: str, stored: list[Any]) -> int:
    """Append stored events in as few records as the record limit allows; return how many."""
    try:
        store.append_batch(stream, stored)
        return 1
    except RecordTooLargeError:
        if len(stored) == 1:
            raise
    half = len(stored) // 2
    return append_stored_events(store, stream, stored[:half]) + append_stored_events(store, stream, stored[half:])


class SessionPersister:
    """Reads and writes one session (and, through its parents, what it shares)."""

    def __init__(self, store: Store, meta: SessionMeta, parent: SessionPersister | None, max_state_bytes: int) -> None:
        self.store = store
        self.meta = meta
        self.parent = parent
        self.max_state_bytes = max_state_bytes
        self._writer: IncrementalWriter | None = None
        self._unlisted: tuple[tuple[str, int, int], list[dict[str, Any]]] | None = None

    # -- the session's own streams ---------------------------------------------------------
    def _own_read(self, read: Callable[[str, str], T]) -> T:
        """``read(events stream, checkpoints stream)`` of the session's generation. When a
        trim switches the session to new streams and drops the old ones while it runs,
        it runs again on the new ones (they answer every read the same)."""
        while True:
            gen = self.meta.generation
            try:
                return read(*layout.session_streams(self.meta.uid, gen))
            except UnknownStreamError:
                if self.meta.generation == gen:
                    raise

    def _count(self, stream: str) -> int:
        return self.store.next_seq(stream) if self.store.has_stream(stream) else 0

    def _scan(self, stream: str, start: int, stop: int) -> Iterator[Any]:
        """Values ``start..stop`` of a stream (none when it does not exist). The segments
        are pinned when this returns: the iterator outlives a drop of the stream."""
        if start >= stop or not self.store.has_stream(stream):
            return iter(())
        return self.store.scan(stream, start, stop)

    def _blob(self, stream: str, key: str) -> Any:
        """The blob, or None when the stream or the key does not exist."""
        if not self.store.has_stream(stream):
            return None
        try:
            return self.store.get_blob(stream, key)
        except BlobNotFoundError:
            return None

    # -- sizes ---------------------------------------------------------------------
    @property
    def event_count(self) -> int:
        return self.meta.base + self._own_read(lambda ev, _cp: self._count(ev))

    @property
    def checkpoint_count(self) -> int:
        listed = self._own_read(lambda _ev, cp: self._count(cp))
        return self.meta.cp_base + listed + len(self._unlisted_checkpoints())

    def _unlisted_checkpoints(self) -> list[dict[str, Any]]:
        """Checkpoint events after the last checkpoint entry: what a crash between a
        save's events and its checkpoint entries left out (repair() writes them)."""
        return self._own_read(self._unlisted_in)

    def _unlisted_in(self, ev: str, cp: str) -> list[dict[str, Any]]:
        n_cp = self._count(cp)
        end = self.meta.base + self._count(ev)
        key = (cp, n_cp, end)
        if self._unlisted is None or self._unlisted[0] != key:
            last = self.store.get(cp, n_cp - 1)["seq"] if n_cp else self.meta.base - 1
            start = max(last + 1, self.meta.base)
            found = []
            if start < end:
                decode = session_events.decode
                for i, stored in enumerate(self._scan(ev, start - self.meta.base, end - self.meta.base)):
                    e = decode(stored, start + i)
                    if e["type"] == "checkpoint":
                        found.append({"seq": e["seq"], "stateId": e["stateId"], "reason": e["reason"]})
            self._unlisted = (key, found)
        return self._unlisted[1]

    @property
    def size_on_disk(self) -> int:
        def size(ev: str, cp: str) -> int:
            return sum(self.store.stream_bytes(s) for s in (ev, cp) if self.store.has_stream(s))

        return self._own_read(size)

    # -- writing ---------------------------------------------------------------------
    def writer(self) -> IncrementalWriter:
        if self._writer is None:
            # The first state this writer stores is a keyframe: the length of the stored
            # chain is not tracked across opens (nor inherited by a fork), so nothing of
            # the stored states is read back to continue it.
            self._writer = IncrementalWriter(self.store, self.meta, StateEncoder())
        return self._writer

    def save(self, changes: Changes) -> int:
        return self.writer().write(changes)

    def repair(self) -> None:
        """Add checkpoint entries that a crash after the events' commit left out."""
        if self.store.options.readonly:
            return
        cps = self._unlisted_checkpoints()
        if cps:
            log.warning("session %r: restoring %d checkpoint entries after a crash", self.meta.name, len(cps))
            self.store.append_batch(self.meta.streams()[1], cps)

    # -- writing a session from its parts (imports) ------------------------------------
    def put_states(self, states: Iterable[tuple[str, str, bytes, int]]) -> int:
        """Store ``(state id, format, raw bytes, seq of its checkpoint or -1)`` in order,
        each delta-encoded against the one before. Returns how many."""
        ev = self.meta.streams()[0]
        encoder = StateEncoder()
        n = 0
        for state_id, fmt, raw, seq in states:
            self.store.put_blob(ev, layout.state_key(state_id), _encode_state(encoder, state_id, raw, fmt, seq))
            n += 1
        return n

    def put_receipt(self, key: str, seq: int, receipt: Any) -> None:
        """Store receipt ``key`` as recorded by the llm_resp at ``seq`` (-1: none), replacing
        any earlier version."""
        self.store.put_blob(self.meta.streams()[0], layout.receipt_key(key), _encode_receipt(seq, receipt))

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
        self.store.append_batch(self.meta.streams()[0], stored)

    def append_checkpoint_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append checkpoint entries ``{seq, stateId, reason}`` in one record."""
        if entries:
            self.store.append_batch(self.meta.streams()[1], list(entries))

    def put_legacy_source(self, jsonl: bytes, index: bytes) -> None:
        """Keep an imported session's source files, to be returned by :meth:`legacy_source`
        as long as the session does not grow. The caller writes the meta afterwards."""
        ev = self.meta.streams()[0]
        self.store.put_blob(ev, layout.LEGACY_JSONL, jsonl)
        self.store.put_blob(ev, layout.LEGACY_INDEX, index)
        self.meta.raw_events = self.event_count

    def legacy_source(self) -> tuple[bytes, bytes] | None:
        """``(jsonl, index)`` kept by :meth:`put_legacy_source`, while the session has not
        grown since; else None."""
        if self.meta.raw_events < 0 or self.event_count != self.meta.raw_events:
            return None
        ev = self.meta.streams()[0]
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
            first = max(start, base)
            stored = self._own_read(lambda ev, _cp: self._scan(ev, first - base, end - base))
            decode = session_events.decode
            for i, value in enumerate(stored):
                yield decode(value, first + i)

    def checkpoints(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Checkpoint entries (``{seq, stateId, reason}``) by position ``start..stop``."""
        total = self.checkpoint_count
        end = total if stop is None else min(stop, total)
        out: list[dict[str, Any]] = []
        cb = self.meta.cp_base
        if start < cb and self.parent is not None:
            out.extend(self.parent.checkpoints(start, min(end, cb)))
        if end > cb:

            def listed_entries(_ev: str, cp: str) -> tuple[int, list[Any]]:
                listed = self._count(cp)
                return listed, list(self._scan(cp, max(start, cb) - cb, min(end - cb, listed)))

            listed, entries = self._own_read(listed_entries)
            out.extend(entries)
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
        key = layout.state_key(state_id)
        doc = self._own_read(lambda ev, _cp: self._blob(ev, key))
        if doc is not None and doc.get("s", -1) < limit:
            return doc
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
        doc = self._own_read(lambda ev, _cp: self._receipt_in(ev, key, before))
        if doc is not None:
            return doc
        if self.parent is not None:
            return self.parent._receipt_doc(key, min(before, self.meta.base))
        return None

    def _receipt_in(self, ev: str, key: str, before: int) -> dict[str, Any] | None:
        """The first version of receipt ``key`` in ``ev`` written before seq ``before``,
        walking from the last version back through ``prev``."""
        doc: dict[str, Any] | None = self._blob(ev, layout.receipt_key(key))
        while doc is not None and doc["seq"] >= before:
            prev = doc.get("prev")
            doc = self.store.get_blob(ev, layout.receipt_version_key(key, prev)) if prev is not None else None
        return doc

    def instance(self) -> SessionInstance:
        """A complete SessionInstance with this session's metadata."""
        return SessionInstance(
            self.meta.name,
            self.meta.id,
            self.meta.created,
            event_count=self.event_count,
            checkpoint_count=self.checkpoint_count,
            size_on_disk=self.size_on_disk,
        )

    # -- trimming a deleted session that forks still share --------------------------------
    def write_trimmed(self, generation: int, limits: Iterable[int], cp_stop: int) -> dict[str, int]:
        """Write into the streams of ``generation`` what reads through this session's
        descendants can reach, and nothing else; return how much of each kind.

        ``limits``: every seq that a read of a descendant can pass to this session as
        its limit (see the module docstring); ``cp_stop``: the checkpoint position
        below which descendants read this session's checkpoints. Written: the events
        before the largest limit (at the same engine seqs), the checkpoint entries
        before ``cp_stop`` (and those of the copied events, if any more), every state
        whose checkpoint is before the largest limit with the states its delta chain
        is based on (their stored values, unchanged), and of each receipt the versions
        that a read with one of the limits finds, linked into a chain of just those.
        Legacy source bytes are not copied.

        Nothing of it is visible until the caller switches the meta to ``generation``;
        until then the new streams are orphans (see ``layout``). Streams of
        ``generation`` left by an earlier attempt are dropped first."""
        limit_list = sorted(set(limits))
        if not limit_list or generation <= self.meta.generation:
            raise InvalidArgumentError(f"session {self.meta.name!r}: nothing to trim to generation {generation}")
        reach = limit_list[-1]
        store = self.store
        old_ev = self.meta.streams()[0]
        new_ev, new_cp = layout.session_streams(self.meta.uid, generation)
        for stream in (new_ev, new_cp):
            if store.has_stream(stream):
                store.drop_stream(stream)
        counts = {"events": 0, "checkpoints": 0, "states": 0, "receipts": 0}
        keys = store.blob_keys(old_ev) if store.has_stream(old_ev) else []

        # States visible before the reach, and what their delta chains are based on.
        state_blobs = dict((sid, key) for key, sid in layout.state_keys(keys))
        copied: set[str] = set()
        bases: list[str] = []

        def copy_state(sid: str, doc: Any) -> None:
            store.put_blob(new_ev, state_blobs[sid], doc)
            copied.add(sid)
            base = state_base(doc)
            if base is not None:
                bases.append(base)

        for sid, key in state_blobs.items():
            doc = store.get_blob(old_ev, key)
            if isinstance(doc, dict) and doc.get("s", -1) < reach:
                copy_state(sid, doc)
        while bases:
            sid = bases.pop()
            if sid not in copied and sid in state_blobs:  # else a parent's state (or copied)
                copy_state(sid, store.get_blob(old_ev, state_blobs[sid]))
        counts["states"] = len(copied)

        # Of each receipt, the version each limit finds.
        for rkey, chain in self._receipt_chains(old_ev, keys).items():
            found: set[int] = set()
            for lim in limit_list:
                hit = next((i for i, d in enumerate(chain) if d["seq"] < lim), None)
                if hit is not None:
                    found.add(hit)
            kept = [chain[i] for i in sorted(found)]  # in the order a read walks them
            for i in reversed(range(len(kept))):
                doc = {**kept[i], "prev": kept[i + 1]["seq"] if i + 1 < len(kept) else None}
                name = layout.receipt_key(rkey) if i == 0 else layout.receipt_version_key(rkey, doc["seq"])
                store.put_blob(new_ev, name, doc)
            counts["receipts"] += len(kept)

        # Events before the reach: the same engine seqs.
        keep = min(max(reach - self.meta.base, 0), self._count(old_ev))
        for start in range(0, keep, COPY_EVENTS_PER_RECORD):
            stop = min(start + COPY_EVENTS_PER_RECORD, keep)
            append_stored_events(store, new_ev, list(self._scan(old_ev, start, stop)))
        counts["events"] = keep

        # Checkpoint entries (listed or not) before cp_stop, or of the copied events.
        cb = self.meta.cp_base
        entries = []
        for i, entry in enumerate(self.checkpoints(cb, None)):
            if cb + i >= cp_stop and entry["seq"] >= reach:
                break
            entries.append(entry)
        for start in range(0, len(entries), COPY_EVENTS_PER_RECORD):
            store.append_batch(new_cp, entries[start : start + COPY_EVENTS_PER_RECORD])
        counts["checkpoints"] = len(entries)
        return counts

    def _receipt_chains(self, ev: str, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every receipt of ``ev`` (among the blob ``keys``) with its versions in the
        order a read walks them: from the last one back through ``prev``."""
        names = {rest for _key, rest in layout.receipt_keys(keys)}
        chains: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            version = layout.split_receipt_version(name)
            if version is not None and version[0] in names:
                continue  # an earlier version of that receipt
            doc = self.store.get_blob(ev, layout.receipt_key(name))
            chain, seen = [], set()
            while isinstance(doc, dict) and doc.get("seq") not in seen:
                chain.append(doc)
                seen.add(doc["seq"])
                prev = doc.get("prev")
                if prev is None:
                    break
                try:
                    doc = self.store.get_blob(ev, layout.receipt_version_key(name, prev))
                except BlobNotFoundError:
                    break
            chains[name] = chain
        return chains
