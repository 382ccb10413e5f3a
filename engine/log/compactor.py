"""The compactor: rewrites sealed segments without what is dead.

A *pass* picks runs of adjacent sealed segments (by garbage ratio, or small
segments worth merging, or all of them when asked), copies every live record
of a run, as its verified bytes, into new segments with ids reserved for it,
and replaces the run by them in the MANIFEST. The active segment is never
touched. It works on the files alone, so it runs the same beside a writer in
another process, in the writer's process (``Store.compact``), or with nobody
holding the store.

What is dead, as of the sealed segments when the pass starts (sealed data is
durable, so nothing a power loss could take decides what goes):
- every record (its STREAM_CREATE and STREAM_DROP included) of a stream
  dropped by a STREAM_DROP in a sealed segment, once no segment before the
  run holds a record of that stream: while one does, replay must still see
  the stream's seqs continue and its drop hide what is left, so the run keeps
  them (a later pass over the earlier segment frees them);
- a BLOB record with a newer record of the same key in the same stream.
Everything else is copied, STREAM_CREATE records of live streams included.

Processes: one compactor per store at a time (``COMPACT.lock``). Every change
of the MANIFEST, by a writer or a compactor, is a read-modify-write under
``MANIFEST.lock``. A writer notices the new MANIFEST (at its next roll, or its
background flush within ``flush_interval``), switches its readers to the
outputs and deletes the inputs once none of its readers pins them; with no
writer the compactor deletes them itself. The steps and the crash rule after
each are in FORMAT.md, "Crash rules: a compaction pass".
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import (
    CompactorBusyError,
    CorruptionError,
    InsufficientSpaceError,
    InvalidArgumentError,
    StoreIOError,
)
from . import fileio, recovery
from .active_index import index_path
from .catalog import StreamState
from .format import (
    COMPACT_LOCK_NAME,
    COMPACT_STATE_NAME,
    MANIFEST_LOCK_NAME,
    MANIFEST_NAME,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    TMP_SUFFIX,
    RecordType,
    header_with_checksum,
)
from .lockfile import FileLock, writer_present
from .manifest import Manifest
from .sealed_index import SealedIndex, sealed_index_path
from .segment import segment_path
from .version import Sealed

log = logging.getLogger(__name__)

MiB = 1 << 20
#: A segment that failed to compact this many passes in a row is set aside.
SET_ASIDE_AFTER = 3


@dataclass
class CompactionReport:
    started: float = 0.0  # unix time
    duration_s: float = 0.0
    segments_in: list[int] = field(default_factory=list)
    segments_out: list[int] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    records_in: int = 0
    records_out: int = 0
    set_aside: list[int] = field(default_factory=list)
    reason: str = ""

    @property
    def reclaimed(self) -> int:
        return self.bytes_in - self.bytes_out


@dataclass
class SegmentGarbage:
    segment_id: int
    size: int
    live_bytes: int
    garbage_bytes: int
    ratio: float
    sealed: bool
    set_aside: bool


@dataclass
class StoreGarbage:
    segments: list[SegmentGarbage]
    last_pass: CompactionReport | None
    set_aside: list[int]

    @property
    def reclaimable_bytes(self) -> int:
        return sum(s.garbage_bytes for s in self.segments if s.sealed)


@dataclass(frozen=True)
class CompactionOptions:
    #: A sealed segment with at least this share of dead bytes is rewritten.
    garbage_ratio: float = 0.5
    #: Adjacent sealed segments smaller than this are merged (default: a quarter
    #: of ``segment_bytes``).
    small_segment_bytes: int | None = None
    #: Target size of the segments written.
    segment_bytes: int = 64 * MiB
    #: Input read rate limit in MiB/s (token bucket); None: unthrottled.
    max_rate_mib: float | None = None
    #: Also rewrite segments, most garbage first, while the sealed segments would
    #: still hold more than this many bytes per live byte after the pass (None:
    #: only the per-segment ratio).
    max_space_amplification: float | None = 1.1
    #: Stop adding runs to a pass once it holds this many input bytes.
    max_pass_bytes: int = 1 << 30
    #: Rewrite every sealed segment (an explicit call), whatever its garbage.
    everything: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.garbage_ratio <= 1.0:
            raise InvalidArgumentError(f"garbage_ratio must be in (0, 1], not {self.garbage_ratio}")
        if self.max_space_amplification is not None and not self.max_space_amplification > 1:
            raise InvalidArgumentError(f"max_space_amplification must be above 1, not {self.max_space_amplification}")
        if self.max_rate_mib is not None and not self.max_rate_mib > 0:
            raise InvalidArgumentError(f"max_rate_mib must be positive, not {self.max_rate_mib}")
        if self.segment_bytes < 4096:
            raise InvalidArgumentError(f"segment_bytes must be at least 4096, not {self.segment_bytes}")


class TokenBucket:
    """``take(n)`` sleeps so that at most ``rate`` bytes/s pass on average, with a
    burst of one second's worth."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate or 0.0
        self._last = clock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            self._sleep(-self._tokens / self.rate)
            self._last = self._clock()
            self._tokens = 0.0


# --------------------------------------------------------------------- state file
def _load_state(path: str) -> dict[str, Any]:
    try:
        raw = fileio.read_file(os.path.join(path, COMPACT_STATE_NAME), 1 << 20)
        doc = json.loads(raw) if raw else {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(path: str, doc: dict[str, Any]) -> None:
    fileio.atomic_write(os.path.join(path, COMPACT_STATE_NAME), [json.dumps(doc, indent=1).encode()])


# ------------------------------------------------------------------- the view
class SealedView:
    """The sealed segments a MANIFEST names, opened read-only, and what is dead in them."""

    def __init__(self, path: str, manifest: Manifest, limit: int, sealed: list[Sealed] | None = None) -> None:
        """Opens the sealed segments, or uses ``sealed`` (already open and pinned
        by the caller, who keeps them: then ``close`` leaves them open)."""
        self.path = path
        self.manifest = manifest
        self._owned = sealed is None
        self.sealed: list[Sealed] = (
            list(sealed)
            if sealed is not None
            else recovery.open_sealed(path, manifest.segments[:-1], limit, readonly=True)
        )
        self.dropped: set[int] = set()
        #: The largest stream id any sealed segment mentions.
        self.max_stream_id = 0
        #: (stream id, key hash) -> (position in ``sealed``, offset) of its newest record
        self.newest_blob: dict[tuple[int, int], tuple[int, int]] = {}
        for pos, s in enumerate(self.sealed):
            idx = s.index
            self.dropped.update(idx.meta.drops)
            self.max_stream_id = max([self.max_stream_id, *idx.meta.creates, *(d.stream_id for d in idx.streams)])
            for d in idx.streams:
                for j in range(d.bl_lo, d.bl_lo + d.bl_n):
                    self.newest_blob[(d.stream_id, idx.bl_hashes[j])] = (pos, idx.bl_offs[j])
        self._keys: dict[tuple[int, int], bytes] = {}
        self._blob_dead: dict[int, int] = {}  # position -> bytes of superseded blobs
        self._ids: dict[int, set[int]] = {}  # position -> stream ids it holds
        self._first: dict[int, int] | None = None  # stream id -> first position holding it

    def close(self) -> None:
        if self._owned:
            for s in self.sealed:
                s.index.close()
                s.segment.close()
        self.sealed = []

    def stream_ids(self, pos: int) -> set[int]:
        """Stream ids with a record or a create in the segment at ``pos``."""
        ids = self._ids.get(pos)
        if ids is None:
            idx = self.sealed[pos].index
            ids = self._ids[pos] = {d.stream_id for d in idx.streams} | set(idx.meta.creates)
        return ids

    def _newest_key(self, sid: int, h: int) -> bytes:
        where = self.newest_blob[(sid, h)]
        key = self._keys.get((sid, h))
        if key is None:
            pos, off = where
            key = self._keys[(sid, h)] = self.sealed[pos].segment.read(off).blob_key()
        return key

    def blob_is_live(self, pos: int, offset: int, sid: int, h: int, key: bytes) -> bool:
        if (pos, offset) == self.newest_blob.get((sid, h)):
            return True
        # Superseded, unless the newer record of this hash has another key (a
        # collision of xxh3 hashes): then keep it, to be safe.
        return self._newest_key(sid, h) != key

    def garbage(self, set_aside: set[int]) -> list[SegmentGarbage]:
        """Dead bytes of every sealed segment (blob sizes read from their headers)."""
        out = []
        for pos, s in enumerate(self.sealed):
            seg = s.segment
            data = max(seg.size - SEGMENT_HEADER_SIZE, 1)
            try:
                dead = self._dead_bytes(pos)
                ratio = dead / data
            except CorruptionError as exc:  # the pass will fail on it too, and count it
                log.warning("%s: cannot tell the garbage of segment %d: %s", self.path, s.segment_id, exc)
                dead, ratio = 0, 1.0
            out.append(
                SegmentGarbage(s.segment_id, seg.size, seg.size - dead, dead, ratio, True, s.segment_id in set_aside)
            )
        return out

    def _dead_bytes(self, pos: int) -> int:
        """Dead bytes of the segment at ``pos`` if a pass could drop every record of
        every dropped stream (it can once no earlier segment holds the stream)."""
        idx, seg = self.sealed[pos].index, self.sealed[pos].segment
        dead = blobs = 0
        for d in idx.streams:
            if d.stream_id in self.dropped:
                dead += d.nbytes
                continue
            for j in range(d.bl_lo, d.bl_lo + d.bl_n):
                if self.newest_blob.get((d.stream_id, idx.bl_hashes[j])) != (pos, idx.bl_offs[j]):
                    rec = seg.read(idx.bl_offs[j])
                    if not self.blob_is_live(pos, rec.offset, d.stream_id, rec.seq, rec.blob_key()):
                        blobs += rec.end - rec.offset
        self._blob_dead[pos] = blobs
        return dead + blobs

    def dropped_in(self, pos: int) -> set[int]:
        """Dropped streams with records (or a create) in the segment at ``pos``."""
        return self.stream_ids(pos) & self.dropped

    def reclaim(self, run: list[int]) -> int:
        """What rewriting ``run`` gives back exactly: superseded blobs, and the
        records of dropped streams that no segment before the run holds."""
        before: set[int] = set()
        for p in range(run[0]):
            before |= self.dropped_in(p)
        total = 0
        for pos in run:
            if pos not in self._blob_dead:
                try:
                    self._dead_bytes(pos)
                except CorruptionError:  # let the pass try it: a failure there is counted
                    self._blob_dead[pos] = self.sealed[pos].segment.size
            total += self._blob_dead[pos]
            total += sum(
                d.nbytes
                for d in self.sealed[pos].index.streams
                if d.stream_id in self.dropped and d.stream_id not in before
            )
        return total

    def first_holder(self, sid: int) -> int:
        """Position of the first segment holding stream ``sid``."""
        if self._first is None:
            self._first = {}
            for pos in range(len(self.sealed)):
                for held in self.stream_ids(pos):
                    self._first.setdefault(held, pos)
        return self._first.get(sid, len(self.sealed))


# -------------------------------------------------------------------- planning
def plan(view: SealedView, opts: CompactionOptions, set_aside: set[int]) -> list[list[int]]:
    """Runs of positions (in the sealed list) to rewrite, in log order.

    A segment is chosen when its garbage ratio reaches ``garbage_ratio``, when it
    is small next to another small one, or, while the sealed segments hold more
    garbage than ``max_space_amplification`` allows, by most garbage first. A
    dropped stream's records go only in a run that starts at or before the first
    segment holding the stream, so runs reach back that far; a run that would
    give back nothing (and merges nothing) is left out.
    """
    small = opts.small_segment_bytes if opts.small_segment_bytes is not None else opts.segment_bytes // 4
    garbage = view.garbage(set_aside)
    n = len(garbage)
    usable = [not g.set_aside for g in garbage]
    want = [False] * n
    for pos, g in enumerate(garbage):
        if not usable[pos]:
            continue
        if opts.everything or g.ratio >= opts.garbage_ratio:
            want[pos] = True
        else:
            neighbours = [p for p in (pos - 1, pos + 1) if 0 <= p < n and usable[p]]
            want[pos] = g.size < small and any(garbage[p].size < small for p in neighbours)
    if opts.max_space_amplification:
        total = sum(g.size for g in garbage)
        live = total - sum(g.garbage_bytes for g in garbage)
        dead = sum(g.garbage_bytes for p, g in enumerate(garbage) if not want[p])
        allowed = live * (opts.max_space_amplification - 1)
        for pos in sorted(range(n), key=lambda p: -garbage[p].ratio):
            if dead <= allowed:
                break
            if usable[pos] and not want[pos] and garbage[pos].garbage_bytes:
                want[pos] = True
                dead -= garbage[pos].garbage_bytes
    for pos in [p for p in range(n) if want[p]]:
        for sid in view.dropped_in(pos):
            first = view.first_holder(sid)
            if first < pos and all(usable[first:pos]):
                for p in range(first, pos):
                    want[p] = True
    runs: list[list[int]] = []
    for pos in range(n):
        if not want[pos]:
            continue
        if runs and runs[-1][-1] == pos - 1:
            runs[-1].append(pos)
        else:
            runs.append([pos])
    merges = [len(r) > 1 and sum(garbage[p].size < small for p in r) > 1 for r in runs]
    runs = [r for r, m in zip(runs, merges, strict=True) if opts.everything or m or view.reclaim(r) > 0]
    chosen: list[list[int]] = []
    budget = 0
    for r in runs:
        size = sum(garbage[p].size for p in r)
        if chosen and budget + size > opts.max_pass_bytes:
            break
        chosen.append(r)
        budget += size
    return chosen


# ---------------------------------------------------------------------- output
class OutputSegment:
    """A segment being written by a pass: ``<id>.seg.tmp`` until finished."""

    def __init__(self, path: str, segment_id: int) -> None:
        self.path = path
        self.segment_id = segment_id
        self.final = segment_path(path, segment_id)
        self.tmp = self.final + TMP_SUFFIX
        self.fd = fileio.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self._buf = bytearray()  # written in 1 MiB pieces, not a call per record
        self._flushed = 0
        self._write(header_with_checksum(SEGMENT_MAGIC, 0, segment_id))
        self.streams: dict[int, StreamState] = {}
        self.creates: dict[int, str] = {}
        self.drops: list[int] = []
        self.records = 0

    def _write(self, data: bytes | memoryview) -> None:
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= MiB:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            fileio.write_all(self.fd, self._buf, self._flushed)
            self._flushed += len(self._buf)
            self._buf = bytearray()

    def add(self, rtype: int, sid: int, seq: int, count: int, data: memoryview, name: str = "") -> None:
        offset = self.size
        self._write(data)
        self.records += 1
        if rtype == RecordType.STREAM_CREATE:
            self.creates[sid] = name
        elif rtype == RecordType.STREAM_DROP:
            self.drops.append(sid)
        else:
            st = self.streams.get(sid)
            if st is None:
                st = self.streams[sid] = StreamState(sid, "")
            st.account(rtype, seq, count, offset, len(data))

    def finish(self) -> None:
        """fsync, rename into place, write its sealed index (the directory is
        fsync'd by the caller, once for all outputs)."""
        self._flush()
        fileio.fsync(self.fd)
        fileio.close(self.fd)
        self.fd = -1
        fileio.rename(self.tmp, self.final)
        data = SealedIndex.build(self.segment_id, self.streams.values(), self.drops, self.size, self.creates)
        fileio.atomic_write(sealed_index_path(self.path, self.segment_id), [data], durable=False)

    def abandon(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                fileio.close(self.fd)
            self.fd = -1
        for p in (self.tmp, self.final, sealed_index_path(self.path, self.segment_id)):
            with contextlib.suppress(OSError):
                fileio.remove(p)


# ------------------------------------------------------------------ the pass
class Compactor:
    """One compactor of the store in ``path``; holds ``COMPACT.lock`` while open."""

    def __init__(
        self, path: str, options: CompactionOptions | None = None, on_commit: Callable[[], None] | None = None
    ) -> None:
        self.path = os.path.abspath(path)
        self.options = options or CompactionOptions()
        self.on_commit = on_commit
        if not os.path.isfile(os.path.join(self.path, MANIFEST_NAME)):
            raise StoreIOError("no store here (no MANIFEST)", self.path)
        self._lock = FileLock(self.path, COMPACT_LOCK_NAME)
        if not self._lock.acquire(blocking=False):
            raise CompactorBusyError(f"another compactor is running on {self.path}")
        self._bucket = TokenBucket(self.options.max_rate_mib * MiB if self.options.max_rate_mib else None)
        try:
            self._release_stale_reservations()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> Compactor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifest changes -------------------------------------------------------
    @contextlib.contextmanager
    def _manifest(self) -> Iterator[Manifest]:
        """The MANIFEST as on disk, under ``MANIFEST.lock``: change it and save it inside."""
        with FileLock(self.path, MANIFEST_LOCK_NAME):
            manifest = Manifest.load(self.path)
            if manifest is None:
                raise StoreIOError("the MANIFEST disappeared", self.path)
            yield manifest

    def _release_stale_reservations(self) -> None:
        """Reservations are this compactor's (it holds COMPACT.lock): any left are
        from a pass that died. Remove their files, then forget them. With no
        writer, also remove what a pass killed after its commit left: inputs no
        MANIFEST names (a writer removes those itself, once none of its readers
        pins them)."""
        with self._manifest() as manifest:
            if not writer_present(self.path):
                recovery.remove_leftovers(self.path, manifest)
            if not manifest.reserved:
                return
            for first, end in manifest.reserved:
                for sid in range(first, end):
                    for p in (segment_path(self.path, sid), sealed_index_path(self.path, sid)):
                        for name in (p, p + TMP_SUFFIX):
                            if fileio.remove(name):
                                log.warning("%s: removed %s, left by an interrupted compaction", self.path, name)
            fileio.fsync_dir(self.path)
            manifest.reserved = []
            manifest.save(self.path)

    # -- analysis ---------------------------------------------------------------
    def _view(self) -> SealedView:
        manifest = Manifest.load(self.path)
        if manifest is None:
            raise StoreIOError("the MANIFEST disappeared", self.path)
        limit = max(manifest.max_record_bytes, 1 << 20)
        return SealedView(self.path, manifest, limit)

    # -- a pass -----------------------------------------------------------------
    def run(self, reason: str = "explicit") -> CompactionReport:
        """One pass: plan, check space, reserve ids, copy, commit, delete."""
        report = CompactionReport(started=time.time(), reason=reason)
        t0 = time.monotonic()
        state = _load_state(self.path)
        set_aside = set(state.get("set_aside", []))
        failures: dict[str, int] = state.get("failures", {})
        view = self._view()
        try:
            runs = plan(view, self.options, set_aside)
            if runs:
                self._check_space(view, runs)
                for run in runs:
                    ids = [view.sealed[p].segment_id for p in run]
                    try:
                        self._rewrite(view, run, report)
                        for sid in ids:
                            failures.pop(str(sid), None)
                    except (CorruptionError, OSError) as exc:
                        for sid in ids:
                            n = failures[str(sid)] = failures.get(str(sid), 0) + 1
                            if n >= SET_ASIDE_AFTER:
                                set_aside.add(sid)
                                log.error(
                                    "%s: segment %d failed to compact %d times, set aside: %s", self.path, sid, n, exc
                                )
                        log.error("%s: compacting segments %s failed: %s", self.path, ids, exc)
                        if isinstance(exc, OSError):
                            raise StoreIOError(f"compaction failed: {exc}", self.path, exc.errno or 0) from exc
                        raise
        finally:
            view.close()
            report.duration_s = time.monotonic() - t0
            report.set_aside = sorted(set_aside)
            doc = {
                "last_pass": asdict(report) if report.segments_in else state.get("last_pass"),
                "set_aside": sorted(set_aside),
                "failures": failures,
            }
            with contextlib.suppress(OSError):
                _save_state(self.path, doc)
        return report

    def _check_space(self, view: SealedView, runs: list[list[int]]) -> None:
        need = sum(view.sealed[p].segment.size for r in runs for p in r) + MiB
        free = shutil.disk_usage(self.path).free
        if free < need:
            raise InsufficientSpaceError(
                f"compaction of {self.path} needs up to {need // MiB} MiB free, {free // MiB} MiB are free"
            )

    def _rewrite(self, view: SealedView, run: list[int], report: CompactionReport) -> None:
        """Rewrite one run of sealed segments and commit it."""
        inputs = [view.sealed[p] for p in run]
        in_bytes = sum(s.segment.size for s in inputs)
        need_ids = max(1, math.ceil(in_bytes / self.options.segment_bytes) + 1)
        with self._manifest() as manifest:  # 1. reserve ids
            reserved = manifest.reserve_segment_ids(need_ids)
            manifest.save(self.path)
        before: set[int] = set()
        for p in range(run[0]):
            before |= view.stream_ids(p)
        outputs: list[OutputSegment] = []
        out: OutputSegment | None = None
        records_in = 0
        try:
            for pos in run:  # 2. copy live records
                seg = view.sealed[pos].segment
                for rec in seg.scan(SEGMENT_HEADER_SIZE):
                    records_in += 1
                    size = rec.end - rec.offset
                    self._bucket.take(size)
                    sid, rtype = rec.stream_id, rec.rtype
                    if rtype == RecordType.STREAM_DROP or sid in view.dropped:
                        # A dropped stream's records (its drop included) stay while a
                        # segment before the run holds some of it: replay must see its
                        # seqs continue, and its drop must hide what is left.
                        live = sid in before
                    elif rtype == RecordType.BLOB:
                        live = view.blob_is_live(pos, rec.offset, sid, rec.seq, rec.blob_key())
                    else:
                        live = True
                    if not live:
                        continue
                    if out is None or (out.size + size > self.options.segment_bytes and out.records):
                        if len(outputs) >= len(reserved):
                            raise CorruptionError("compaction output outgrew its reserved ids", seg.path)
                        out = OutputSegment(self.path, reserved[len(outputs)])
                        outputs.append(out)
                    name = rec.name() if rtype == RecordType.STREAM_CREATE else ""
                    out.add(rtype, sid, rec.seq, rec.count, memoryview(rec.buf)[rec.base : rec.base + size], name)
                if seg.scan_end != seg.size:
                    raise CorruptionError("sealed segment has a torn record", seg.path, seg.scan_end)
            for o in outputs:  # 3. outputs durable
                o.finish()
            fileio.fsync_dir(self.path)
            with self._manifest() as manifest:  # 4. one commit
                ids = [s.segment_id for s in inputs]
                segs = manifest.segments
                at = segs.index(ids[0]) if ids[0] in segs else -1
                if at < 0 or segs[at : at + len(ids)] != ids or at + len(ids) >= len(segs):
                    raise CorruptionError(
                        f"segments {ids} are no longer a sealed run of the log", os.path.join(self.path, MANIFEST_NAME)
                    )
                manifest.segments = segs[:at] + [o.segment_id for o in outputs] + segs[at + len(ids) :]
                manifest.release_reserved(reserved)
                # STREAM_CREATEs of dead streams are gone: their ids must never come back.
                top = max([view.max_stream_id, *(max([*o.streams, *o.creates, 0]) for o in outputs)])
                manifest.next_stream_id = max(manifest.next_stream_id, top + 1)
                manifest.save(self.path)
        except BaseException:
            for o in outputs:
                o.abandon()
            with contextlib.suppress(Exception), self._manifest() as manifest:
                manifest.release_reserved(reserved)
                manifest.save(self.path)
            raise
        report.segments_in += ids
        report.segments_out += [o.segment_id for o in outputs]
        report.bytes_in += in_bytes
        report.bytes_out += sum(o.size for o in outputs)
        report.records_in += records_in
        report.records_out += sum(o.records for o in outputs)
        log.info(
            "%s: compacted segments %s (%d bytes) into %s (%d bytes)",
            self.path,
            ids,
            in_bytes,
            [o.segment_id for o in outputs],
            sum(o.size for o in outputs),
        )
        if self.on_commit is not None:  # 5. readers switch
            self.on_commit()
        elif not writer_present(self.path):  # 6. inputs go
            self._delete(ids)

    def _delete(self, ids: list[int]) -> None:
        """Delete input files no MANIFEST names (only when no writer may still read them)."""
        for sid in ids:
            for p in (segment_path(self.path, sid), sealed_index_path(self.path, sid), index_path(self.path, sid)):
                fileio.remove(p)
        fileio.fsync_dir(self.path)


def compact(path: str | os.PathLike[str], **options: Any) -> CompactionReport:
    """Run one compaction pass on the store in ``path``, whether or not another
    process has it open for writing. Options: the fields of
    :class:`CompactionOptions`."""
    opts = options_for(options)
    with Compactor(os.fspath(path), opts) as c:
        return c.run()


def analyze(path: str | os.PathLike[str]) -> StoreGarbage:
    """Garbage per segment (the active one last, never garbage), reclaimable
    bytes, set-aside segments and the last pass: what ``seglog stat`` shows."""
    path = os.path.abspath(os.fspath(path))
    manifest = Manifest.load(path)
    if manifest is None:
        raise StoreIOError("no store here (no MANIFEST)", path)
    view = SealedView(path, manifest, max(manifest.max_record_bytes, 1 << 20))
    try:
        garbage = _garbage(view)
    finally:
        view.close()
    active = manifest.segments[-1]
    size = fileio.stat(segment_path(path, active)).st_size
    garbage.segments.append(SegmentGarbage(active, size, size, 0, 0.0, False, False))
    return garbage


def store_garbage(path: str, manifest: Manifest, limit: int, sealed: list[Sealed]) -> StoreGarbage:
    """The same, of sealed segments already open (a store's pinned version)."""
    view = SealedView(path, manifest, limit, sealed)
    try:
        return _garbage(view)
    finally:
        view.close()


def _garbage(view: SealedView) -> StoreGarbage:
    state = _load_state(view.path)
    set_aside = set(state.get("set_aside", []))
    last = state.get("last_pass")
    return StoreGarbage(
        view.garbage(set_aside), CompactionReport(**last) if isinstance(last, dict) else None, sorted(set_aside)
    )


def options_for(options: dict[str, Any]) -> CompactionOptions:
    try:
        return CompactionOptions(**options)
    except TypeError as exc:
        raise InvalidArgumentError(str(exc)) from None
