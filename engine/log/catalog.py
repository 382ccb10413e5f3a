"""The in-memory catalog: per stream, where its records are.

A stream's events live in *runs*: for each sealed segment, a slice of that
segment's mapped index columns; for the active segment, two growing arrays.
Nothing here is one Python object per event or per record of a sealed
segment.

Replay (at open and refresh) checks the log's invariants as it goes: a
STREAM_CREATE binds a fresh id to a non-empty name that is not live, and a
stream's events continue seq by seq from record to record and from segment to
segment. A record that breaks them raises :class:`CorruptionError` naming its
file and offset, whatever its checksum says.

Not thread-safe: the Store guards it (see ``Store`` for the lock contract).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..errors import CorruptionError, InvalidNameError
from .format import MAX_KEY_BYTES, MAX_STREAM_NAME_BYTES
from .record import RecordType

if TYPE_CHECKING:
    from .sealed_index import SealedIndex
    from .segment import LogSegment

MAX_NAME_BYTES = MAX_STREAM_NAME_BYTES


def check_name(name: object, what: str, max_bytes: int, allow_controls: bool = False) -> bytes:
    """Validate a name (a non-empty str of valid Unicode text, at most ``max_bytes``
    in UTF-8, no control characters unless ``allow_controls``) and return its UTF-8 bytes."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError(f"{what} must not be empty")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"{what} {name!r} is not valid Unicode text") from None
    if len(raw) > max_bytes:
        raise InvalidNameError(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    if not allow_controls and any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidNameError(f"{what} {name!r} contains a control character")
    return raw


def check_stream_name(name: object) -> bytes:
    """Validate a stream name and return its UTF-8 bytes."""
    return check_name(name, "stream name", MAX_NAME_BYTES)


def check_key(key: object) -> bytes:
    """Validate a blob key (control characters allowed) and return its UTF-8 bytes."""
    return check_name(key, "blob key", MAX_KEY_BYTES, allow_controls=True)


class Run(NamedTuple):
    """A stream's records in one sealed segment: ``seqs[lo:hi]`` and ``offs[lo:hi]``."""

    segment: LogSegment
    keys: Sequence[int]
    offs: Sequence[int]
    lo: int
    hi: int


class SealedRuns(NamedTuple):
    """A stream's share of the sealed segments (see ``Catalog.sealed_runs``)."""

    runs: list[Run]
    run_starts: array[int]
    blob_runs: list[Run]
    #: Change of the stream's bytes: its records in the new segments less those in the removed.
    nbytes_delta: int


class StreamState:
    __slots__ = (
        "act_blobs",
        "act_nbytes",
        "act_offs",
        "act_seqs",
        "blob_runs",
        "id",
        "name",
        "nbytes",
        "next_seq",
        "run_starts",
        "runs",
    )

    def __init__(self, stream_id: int, name: str) -> None:
        self.id = stream_id
        self.name = name
        self.next_seq = 0
        self.nbytes = 0
        self.runs: list[Run] = []
        self.run_starts: array[int] = array("q")
        self.blob_runs: list[Run] = []
        self.act_seqs: array[int] = array("q")
        self.act_offs: array[int] = array("q")
        self.act_blobs: dict[int, list[int]] = {}
        self.act_nbytes = 0  # bytes of its event and blob records in the active segment

    def account(self, rtype: int, seq: int, count: int, offset: int, size: int) -> bool:
        """Count a record of the active segment (``seq`` is the key hash for a blob).
        True if it is one of this stream's events or blobs records."""
        if rtype == RecordType.EVENTS:
            self.act_seqs.append(seq)
            self.act_offs.append(offset)
            self.next_seq = seq + count
        elif rtype == RecordType.BLOB:
            self.act_blobs.setdefault(seq, []).append(offset)
        else:
            return False
        self.nbytes += size
        self.act_nbytes += size
        return True

    def add_sealed(
        self,
        segment: LogSegment,
        ev_seqs: Sequence[int],
        ev_offs: Sequence[int],
        ev_lo: int,
        ev_n: int,
        bl_keys: Sequence[int],
        bl_offs: Sequence[int],
        bl_lo: int,
        bl_n: int,
        next_seq: int,
        nbytes: int,
    ) -> None:
        if ev_n:
            self.runs.append(Run(segment, ev_seqs, ev_offs, ev_lo, ev_lo + ev_n))
            self.run_starts.append(ev_seqs[ev_lo])
            self.next_seq = next_seq
        if bl_n:
            self.blob_runs.append(Run(segment, bl_keys, bl_offs, bl_lo, bl_lo + bl_n))
        self.nbytes += nbytes

    def clear_active(self) -> None:
        self.act_seqs = array("q")
        self.act_offs = array("q")
        self.act_blobs = {}
        self.act_nbytes = 0

    def locations_from(self, seq: int, active: LogSegment) -> Iterator[tuple[LogSegment, int, int]]:
        """``(segment, record offset, first seq)`` in seq order, from the record holding ``seq``."""
        acts = self.act_seqs
        if not acts or seq < acts[0]:
            r = bisect_right(self.run_starts, seq) - 1
            runs = list(self.runs)
            for i in range(max(r, 0), len(runs)):
                run = runs[i]
                j = bisect_right(run.keys, seq, run.lo, run.hi) - 1 if i == r else run.lo
                for k in range(max(j, run.lo), run.hi):
                    yield run.segment, run.offs[k], run.keys[k]
            start = 0
        else:
            start = bisect_right(acts, seq) - 1
        offs = self.act_offs
        for k in range(start, len(offs)):
            yield active, offs[k], acts[k]

    def blob_candidates(self, key_hash: int, active: LogSegment) -> Iterator[tuple[LogSegment, int]]:
        """Locations of blob records with this key hash, newest first."""
        for off in reversed(self.act_blobs.get(key_hash, ())):
            yield active, off
        for run in reversed(self.blob_runs):
            j = bisect_right(run.keys, key_hash, run.lo, run.hi) - 1
            while j >= run.lo and run.keys[j] == key_hash:
                yield run.segment, run.offs[j]
                j -= 1

    def blob_hashes(self) -> set[int]:
        hashes = set(self.act_blobs)
        for run in self.blob_runs:
            hashes.update(run.keys[run.lo : run.hi])
        return hashes


class Catalog:
    """Every live stream, by name and by id, and the next stream id to give out."""

    __slots__ = ("by_id", "by_name", "next_stream_id")

    def __init__(self, next_stream_id: int = 1) -> None:
        self.by_name: dict[str, StreamState] = {}
        self.by_id: dict[int, StreamState] = {}
        self.next_stream_id = next_stream_id

    def add(
        self, sid: int, name: str, path: str = "", offset: int = -1, replaced: frozenset[int] = frozenset()
    ) -> StreamState:
        """Bind ``sid`` to ``name``. On replay (``path`` given) a reused id, an empty
        name or a name that is live (unless its holder is in ``replaced``, dropped
        in the same sealed segment) is corruption."""
        if path:
            if not name:
                raise CorruptionError("stream created with an empty name", path, offset)
            if sid in self.by_id:
                raise CorruptionError(f"stream id {sid} created twice", path, offset)
            live = self.by_name.get(name)
            if live is not None and live.id not in replaced:
                raise CorruptionError(f"second STREAM_CREATE for the live stream {name!r}", path, offset)
        st = StreamState(sid, name)
        self.by_name[name] = st
        self.by_id[sid] = st
        self.next_stream_id = max(self.next_stream_id, sid + 1)
        return st

    def remove(self, sid: int) -> None:
        st = self.by_id.pop(sid, None)
        if st is not None and self.by_name.get(st.name) is st:
            del self.by_name[st.name]

    def check_next(self, st: StreamState, seq: int, path: str, offset: int) -> None:
        """Replay: the stream's next events record must start at its next seq."""
        if seq != st.next_seq:
            what = "skips" if seq > st.next_seq else "repeats"
            raise CorruptionError(
                f"events of stream {st.name!r} start at seq {seq}, expected {st.next_seq} (the log {what} events)",
                path,
                offset,
            )

    def sealed_runs(
        self,
        sealed: Sequence[tuple[LogSegment, SealedIndex]],
        removed: Sequence[tuple[LogSegment, SealedIndex]],
        new: Sequence[tuple[LogSegment, SealedIndex]],
        pause: Callable[[], None] | None = None,
    ) -> dict[int, SealedRuns]:
        """The sealed runs of the streams a compaction touched, once the ``removed``
        segments are replaced by the ``new`` ones and ``sealed`` is the whole new
        list: built without
        changing anything (the caller swaps them in with :meth:`set_sealed_runs`
        under the catalog lock). Streams with nothing in the removed or the new
        segments keep their runs as they are. Which streams live and their seqs
        do not change (only dead records went). It reads sealed runs, which only
        a roll or a switch changes: a caller without the writer lock checks that
        neither came in between before using the result. ``pause`` is called now
        and then (to let other threads run)."""
        gone = {id(seg) for seg, _ in removed}
        position = {id(seg): i for i, (seg, _) in enumerate(sealed)}
        nbytes: dict[int, int] = {}
        for _seg, idx in removed:
            for d in idx.streams:
                nbytes[d.stream_id] = nbytes.get(d.stream_id, 0) - d.nbytes
        added: dict[int, list[tuple[Run | None, Run | None]]] = {}
        for seg, idx in new:
            for d in idx.streams:
                nbytes[d.stream_id] = nbytes.get(d.stream_id, 0) + d.nbytes
                ev = Run(seg, idx.ev_seqs, idx.ev_offs, d.ev_lo, d.ev_lo + d.ev_n) if d.ev_n else None
                bl = Run(seg, idx.bl_hashes, idx.bl_offs, d.bl_lo, d.bl_lo + d.bl_n) if d.bl_n else None
                added.setdefault(d.stream_id, []).append((ev, bl))
        out: dict[int, SealedRuns] = {}
        for n, (sid, delta) in enumerate(nbytes.items()):
            if pause is not None and n % 64 == 63:
                pause()
            st = self.by_id.get(sid)
            if st is None:
                continue
            runs = [r for r in st.runs if id(r.segment) not in gone]
            blob_runs = [r for r in st.blob_runs if id(r.segment) not in gone]
            for ev, bl in added.get(sid, ()):
                if ev is not None:
                    runs.append(ev)
                if bl is not None:
                    blob_runs.append(bl)
            runs.sort(key=lambda r: position[id(r.segment)])
            blob_runs.sort(key=lambda r: position[id(r.segment)])
            starts = array("q", [r.keys[r.lo] for r in runs])
            out[sid] = SealedRuns(runs, starts, blob_runs, delta)
        return out

    def set_sealed_runs(self, plan: dict[int, SealedRuns]) -> None:
        for sid, r in plan.items():
            st = self.by_id.get(sid)
            if st is not None:
                st.runs, st.run_starts, st.blob_runs = r.runs, r.run_starts, r.blob_runs
                st.nbytes += r.nbytes_delta

    def apply_sealed(self, seg: LogSegment, idx: SealedIndex) -> None:
        """Replay a sealed segment from its index: creates, runs, then drops."""
        drops = frozenset(idx.meta.drops)
        for sid in sorted(idx.meta.creates):
            try:
                self.add(sid, idx.meta.creates[sid], seg.path, 0, drops)
            except CorruptionError as exc:  # say where the record is (the index does not)
                raise CorruptionError(str(exc).split(" (")[0], seg.path, _create_offset(seg, sid)) from None
        for d in idx.streams:
            st = self.by_id.get(d.stream_id)
            if st is None:
                continue
            if d.ev_n:
                self.check_next(st, d.first_seq, seg.path, idx.ev_offs[d.ev_lo])
            st.add_sealed(
                seg,
                idx.ev_seqs,
                idx.ev_offs,
                d.ev_lo,
                d.ev_n,
                idx.bl_hashes,
                idx.bl_offs,
                d.bl_lo,
                d.bl_n,
                d.next_seq,
                d.nbytes,
            )
        for sid in idx.meta.drops:
            self.remove(sid)


def _create_offset(seg: LogSegment, stream_id: int) -> int:
    """Offset of the STREAM_CREATE record of ``stream_id`` in a sealed segment (error path)."""
    from .format import SEGMENT_HEADER_SIZE

    for rec in seg.scan(SEGMENT_HEADER_SIZE):
        if rec.rtype == RecordType.STREAM_CREATE and rec.stream_id == stream_id:
            return rec.offset
    return -1
