"""Store: the segment engine's public object (the facade of engine.log).

A store is a directory (FORMAT.md has the bytes)::

    LOCK                      writer lock (flock), holds the writer's pid
    MANIFEST                  segment ids in log order, generation, next ids
    00000000000000000001.seg  sealed segment
    00000000000000000001.sidx its sorted, mmap'd offset index
    00000000000000000002.seg  the active segment (last in the manifest)
    00000000000000000002.idx  its append-order offset index

Every public method is thread-safe. The lock contract, in the order locks are
taken (a thread holding one never waits for one above it):

1. ``_write_mu``, the writer's lock. Guards the active segment (its pending
   buffer, index file and entries: ``_active``), the manifest, ``_lsn_written``,
   ``_failed`` and every roll. Held for appends, flushes and rolls; every
   fsync of the engine happens under it or under no lock, never under ``_mu``.
   In a read-only store it serializes ``refresh``.
2. ``_mu``, the catalog lock. Guards the catalog (streams by name and id, their
   locations) and the current version, which change together. Point reads,
   scans and every other read resolve locations under it alone, then read the
   files with the version pinned and no lock held. A change of the catalog
   holds both locks, so a writer may read the catalog under ``_write_mu``.
3. ``VersionSet._mu`` (version bookkeeping) and ``GroupCommitter._mu`` (its
   own state): innermost, no other lock is taken under them. The committer
   calls back into the store (``_sync_source``, ``_on_synced``) without its
   own lock held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import takewhile
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    BlobNotFoundError,
    CorruptionError,
    EventNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    SeglogError,
    StoreFailedError,
    StoreIOError,
    UnknownStreamError,
)
from . import codec, fileio, record, recovery
from .active import ActiveSegment
from .catalog import Catalog, StreamState, check_key
from .committer import BackgroundFlusher, GroupCommitter
from .format import MANIFEST_LOCK_NAME, MANIFEST_NAME, SEGMENT_EXT, RecordType, parse_file_name
from .lockfile import FileLock, WriterLock
from .manifest import Manifest
from .options import StoreOptions
from .reports import Problem, StoreStats, StreamInfo, VerifyReport
from .segment import LogSegment
from .verify import known_offsets, verify
from .version import Sealed, Version, VersionSet
from .writer import WritePath, _manifest_stamp

if TYPE_CHECKING:
    from .compactor import CompactionReport

__all__ = ["Problem", "Store", "StoreStats", "StreamInfo", "VerifyReport", "open"]

log = logging.getLogger(__name__)
_fast_unpack = codec.fast_unpack
_T = TypeVar("_T")


def _before(end: int, loc: tuple[LogSegment, int, int]) -> bool:
    return loc[2] < end


def _check_position(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative int, not {value!r}")
    return value


class Store(WritePath):
    """An open store. Create with :func:`engine.open`."""

    def __init__(self, path: str, options: StoreOptions) -> None:
        self.path = os.path.abspath(path)
        self.options = options
        self._write_mu = threading.Lock()
        self._mu = threading.Lock()
        self._closed = False
        self._writer_lock: WriterLock | None = None
        self._failed: BaseException | None = None  # guarded by _write_mu: a write failed, no more writes
        self._lsn_written = 0  # guarded by _write_mu: bytes appended since open
        self._batching = threading.local()  # depth of batch() blocks in this thread
        self._flusher: BackgroundFlusher | None = None
        self._versions = VersionSet(self.path, delete_files=not options.readonly)
        self._open()
        self._committer = GroupCommitter(self._sync_source, self._on_synced, self._on_sync_failed)
        if not options.readonly:
            self._flusher = BackgroundFlusher(
                options.flush_interval, self._background_flush, f"seglog-flush:{os.path.basename(self.path)}"
            )

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
        opts = self.options
        try:
            if not os.path.isdir(self.path):
                if os.path.exists(self.path):
                    raise InvalidArgumentError(f"{self.path} is not a directory")
                if opts.readonly or not opts.create:
                    raise NotFoundError(f"no store at {self.path}")
                fileio.makedirs(self.path)
            if not opts.create and not os.path.exists(os.path.join(self.path, MANIFEST_NAME)):
                raise NotFoundError(f"no store at {self.path}")
            if not opts.readonly:
                self._writer_lock = WriterLock(self.path)
            self._load()
        except BaseException as exc:
            self._versions.close()
            if self._writer_lock is not None:
                self._writer_lock.release()
            if isinstance(exc, OSError):
                raise StoreIOError(
                    f"cannot open the store: {exc.strerror or exc}", exc.filename or self.path, exc.errno or 0
                ) from exc
            raise

    def _load(self) -> None:
        opts = self.options
        if opts.readonly:
            manifest = recovery.open_manifest(self.path, opts)
            self._manifest_seen = _manifest_stamp(self.path)
        else:
            # Under MANIFEST.lock: a compactor reserving ids or committing meanwhile
            # would otherwise see its outputs (or its MANIFEST.tmp) removed as leftovers.
            with FileLock(self.path, MANIFEST_LOCK_NAME):
                manifest = recovery.open_manifest(self.path, opts)
                if manifest.max_record_bytes < opts.max_record_bytes:
                    manifest.max_record_bytes = opts.max_record_bytes
                    manifest.save(self.path)
                recovery.remove_leftovers(self.path, manifest)
                self._manifest_seen = _manifest_stamp(self.path)
        # Records are read against the largest limit they were ever written with.
        self._read_limit = max(manifest.max_record_bytes, opts.max_record_bytes)
        loaded = recovery.load(self.path, opts, manifest, self._read_limit)
        self._manifest = manifest
        self._install(loaded.catalog, loaded.sealed, loaded.active)
        self._entries = loaded.entries if opts.readonly else []

    def _install(
        self, catalog: Catalog, sealed: tuple[Sealed, ...], active: ActiveSegment, dropped: Sequence[int] = ()
    ) -> None:
        """Make a new catalog and version current (caller holds both locks, or is opening)."""
        self._catalog = catalog
        self._streams = catalog.by_name
        self._active = active
        self._version = self._versions.make(sealed, active.segment)
        self._versions.install(self._version, dropped)

    def refresh(self) -> None:
        """Read-only store: see what the writer flushed, sealed or replaced since
        the open or the last refresh."""
        if not self.options.readonly:
            return
        with self._write_mu:
            self._check_open()
            recovery.retry_missing(self._refresh)
        self._versions.reap()

    def _refresh(self) -> None:
        manifest = Manifest.load(self.path)
        if manifest is None:
            raise CorruptionError("MANIFEST disappeared", self.path)
        version = self._versions.current
        act = self._active
        if manifest.segments == version.segment_ids:
            known = len(self._entries)
            self._entries.extend(recovery.follow_active(act.segment, self._entries))
            with self._mu:
                recovery.replay_active(self._catalog, act, self._entries, known)
            return
        reuse = {s.segment_id: s for s in version.sealed}
        loaded = recovery.load(
            self.path, self.options, manifest, self._read_limit, 0, reuse, (act.segment, self._entries)
        )
        with self._mu:
            self._manifest = manifest
            self._install(loaded.catalog, loaded.sealed, loaded.active)
            self._entries = loaded.entries

    # ------------------------------------------------------------ read path
    def _stream(self, name: str) -> StreamState:
        self._check_open()
        if not isinstance(name, str):
            raise InvalidNameError(f"stream name must be a str, not {type(name).__name__}")
        st = self._streams.get(name)
        if st is None:
            raise UnknownStreamError(f"no stream named {name!r} in {self.path}")
        return st

    def _flush_for_read(self, tries: int) -> None:
        """A read needs records still in the writer's buffer: hand them to the OS."""
        if tries:
            raise StoreFailedError(f"records of {self.path} were lost by a failed write; reopen the store")
        self._flush()

    def get(self, stream: str, seq: int) -> Any:
        """The event ``seq`` of ``stream``."""
        with self._mu:
            try:
                st = self._streams.get(stream)
            except TypeError:  # unhashable: not a name
                st = None
            if st is None:  # (close() empties _streams, so a closed store lands here too)
                self._stream(stream)  # raises the right error
                raise AssertionError
            if not 0 <= seq < st.next_seq:
                raise EventNotFoundError(f"stream {stream!r} has events 0..{st.next_seq - 1}, not {seq}")
            acts = st.act_seqs
            if acts and seq >= acts[0]:
                seg = self._active.segment
                off = st.act_offs[bisect_right(acts, seq) - 1]
                pending = off >= seg.size  # still in the writer's buffer
            else:
                seg, keys, offs, lo, hi = st.runs[bisect_right(st.run_starts, seq) - 1]
                off = offs[bisect_right(keys, seq, lo, hi) - 1]
                pending = False
            version = self._version  # pinned inline: this is the hottest read
            holders = version.holders
            holders.append(None)
        try:
            # LogSegment.event's common case inlined (a call is a tenth of a read):
            # an uncompressed record verified before, the event inside the map.
            info = seg.verified.get(off)
            if info is not None:
                sid, first, count, flags, bounds, region = info
                i = seq - first
                if not flags and sid == st.id and 0 <= i < count:
                    end = region + bounds[i + 1]
                    m = seg.mapped
                    if m is not None and end <= len(m):
                        try:
                            return _fast_unpack(m[region + bounds[i] : end])
                        except Exception:  # event() below says what is wrong
                            pass
            if pending:
                self._flush_for_read(0)
                if off >= seg.size:
                    self._flush_for_read(1)
            return seg.event(off, st.id, seq)
        finally:
            holders.pop()
            if version.retired:
                version.idle()

    def scan(self, stream: str, start: int = 0, stop: int | None = None) -> Iterator[Any]:
        """Events ``start <= seq < stop`` in order (``stop`` defaults to the end as of the call).

        The i-th value yielded has seq ``start + i``. The iterator reads the
        segments as they were when it was made, however long it lives.
        """
        _check_position("scan start", start)
        if stop is not None:
            _check_position("scan stop", stop)

        def locate(active: LogSegment) -> tuple[tuple[StreamState, int, list[tuple[LogSegment, int, int]]], bool]:
            st = self._stream(stream)
            end = st.next_seq if stop is None else min(stop, st.next_seq)
            locs = list(takewhile(partial(_before, end), st.locations_from(start, active))) if start < end else []
            return (st, end, locs), bool(locs) and locs[-1][0] is active and locs[-1][1] >= active.size

        (st, end, locs), version = self._pinned(locate)
        it = self._scan(version, st, locs, start, end)
        next(it)  # enter the generator, so that closing it unpins the version
        return it

    def _pinned(self, locate: Callable[[LogSegment], tuple[_T, bool]]) -> tuple[_T, Version]:
        """``locate(active segment)`` under the catalog lock, again after handing the
        writer's buffer to the OS when what it found is still in it; returns what
        it found with the current version pinned."""
        for tries in range(3):
            with self._mu:
                found, pending = locate(self._active.segment)
                if not pending:
                    return found, self._versions.current.pin()
            self._flush_for_read(tries)
        raise AssertionError("unreachable")

    def _scan(
        self, version: Version, st: StreamState, locs: list[tuple[LogSegment, int, int]], start: int, end: int
    ) -> Iterator[Any]:
        max_bytes = self._read_limit
        try:
            yield None
            for seg, off, first in locs:
                rec = seg.read(off)
                if rec.rtype != RecordType.EVENTS or rec.stream_id != st.id or rec.seq != first:
                    raise CorruptionError(f"index points at the wrong record for {st.name!r}", seg.path, off)
                values = rec.events(max_bytes)
                if first < start or first + rec.count > end:
                    values = values[max(start - first, 0) : end - first]
                yield from values
        finally:
            version.unpin()

    def read_range(self, stream: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """``list(scan(stream, start, stop))``."""
        return list(self.scan(stream, start, stop))

    def _blob_locations(
        self, stream: str, hashes: list[int] | set[int] | None
    ) -> tuple[tuple[StreamState, list[tuple[LogSegment, int]]], Version]:
        """The stream and its blob records with these key hashes (all, with None),
        newest first per hash, with the version pinned for reading them."""

        def locate(active: LogSegment) -> tuple[tuple[StreamState, list[tuple[LogSegment, int]]], bool]:
            st = self._stream(stream)
            keys = st.blob_hashes() if hashes is None else hashes
            locs = [(seg, off) for h in keys for seg, off in st.blob_candidates(h, active)]
            return (st, locs), any(seg is active and off >= active.size for seg, off in locs)

        return self._pinned(locate)

    def get_blob(self, stream: str, key: str) -> Any:
        """The latest value stored under ``key`` in ``stream``."""
        raw_key = check_key(key)
        (st, locs), version = self._blob_locations(stream, [record.key_hash(raw_key)])
        with version:
            for seg, off in locs:
                rec = seg.read(off)
                if rec.rtype != RecordType.BLOB or rec.stream_id != st.id:
                    raise CorruptionError(f"index points at the wrong record for blob {key!r}", seg.path, off)
                if rec.blob_key() == raw_key:
                    return rec.blob_value(self._read_limit)
        raise BlobNotFoundError(f"stream {stream!r} has no blob {key!r}")

    def has_blob(self, stream: str, key: str) -> bool:
        try:
            self.get_blob(stream, key)
        except BlobNotFoundError:
            return False
        return True

    def blob_keys(self, stream: str) -> list[str]:
        """Every blob key of the stream (reads one record per stored version)."""
        (_st, locs), version = self._blob_locations(stream, None)
        with version:
            return sorted({seg.read(off).blob_key().decode("utf-8") for seg, off in locs})

    def has_stream(self, name: str) -> bool:
        with self._mu:
            self._check_open()
            return isinstance(name, str) and name in self._streams

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has_stream(name)

    def next_seq(self, stream: str) -> int:
        """The number of events in the stream (the seq the next append gets)."""
        with self._mu:
            return self._stream(stream).next_seq

    def stream_bytes(self, name: str) -> int:
        """Bytes of the stream's event and blob records (what ``stream_info`` reports,
        without counting blob keys)."""
        with self._mu:
            return self._stream(name).nbytes

    def stream_info(self, name: str) -> StreamInfo:
        with self._mu:
            st = self._stream(name)
            return StreamInfo(st.name, st.next_seq, st.nbytes, len(st.blob_hashes()))

    def streams(self) -> list[StreamInfo]:
        """Every stream with its event count, bytes and blob count, by name."""
        with self._mu:
            self._check_open()
            return [
                StreamInfo(st.name, st.next_seq, st.nbytes, len(st.blob_hashes()))
                for st in sorted(self._streams.values(), key=lambda s: s.name)
            ]

    def stats(self) -> StoreStats:
        """Sizes and counters, and what compaction would reclaim (this reads the
        sealed indexes, and the header of every superseded blob record)."""
        from .compactor import store_garbage

        with self.pin() as version:
            garbage = store_garbage(self.path, self._manifest, self._read_limit, list(version.sealed))
        with self._mu:
            self._check_open()
            segs = self._versions.current.segments()
            disk = sum(s.size for s in segs) + len(self._active.pending)
            streams, events = len(self._streams), sum(st.next_seq for st in self._streams.values())
        for name in fileio.listdir(self.path):
            parsed = parse_file_name(name)
            if (parsed is not None and parsed[1] != SEGMENT_EXT) or name == MANIFEST_NAME:
                with contextlib.suppress(FileNotFoundError):  # a roll removed it meanwhile
                    disk += fileio.stat(os.path.join(self.path, name)).st_size
        return StoreStats(
            self.path,
            self.options.durability.value,
            len(segs),
            disk,
            streams,
            events,
            self._manifest.generation,
            self._lsn_written,
            self._committer.synced,
            self._committer.fsyncs,
            garbage.reclaimable_bytes,
            tuple((g.segment_id, g.size, g.ratio) for g in garbage.segments if g.sealed),
            garbage.last_pass,
            tuple(garbage.set_aside),
        )

    def manifest_snapshot(self) -> Manifest:
        """A copy of the manifest as this process knows it (next ids up to date)."""
        with self._write_mu, self._mu:
            return self._manifest.copy(next_stream_id=self._catalog.next_stream_id)

    def pin(self) -> Version:
        """Pin the current version (``with store.pin() as v:``): its files stay
        while it is pinned. For backups and tools; reads pin by themselves."""
        if not self.options.readonly:
            self._flush()
        with self._mu:
            self._check_open()
            return self._versions.current.pin()

    def verify(self) -> VerifyReport:
        """Check every record's checksum and payload; report each bad one."""
        with self.pin() as version:
            with self._mu:
                segments = known_offsets(version, list(self._active.entry_offs))
                active_end = version.active.size
            return verify(segments, self._read_limit, active_end)

    def compact(self, **options: Any) -> CompactionReport:
        """One compaction pass in this (the writer's) process; see
        :func:`engine.compact`. Readers switch to the new segments when it commits."""
        from .compactor import Compactor, options_for

        with self._write_mu:
            self._check_writable()
        options.setdefault("segment_bytes", self.options.segment_bytes)
        with Compactor(self.path, options_for(options), on_commit=self._adopt_now) as c:
            return c.run()

    def _adopt_now(self) -> None:
        """Switch to what a compaction just committed (as the background flush would)."""
        self._maybe_adopt()

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """A consistent copy of the store as it is now, in the new directory ``dest``,
        while writers go on. See :func:`engine.log.backup.backup`."""
        from .backup import backup

        backup(self, os.fspath(dest))

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Flush, sync, write the index, stop the background thread, release the lock."""
        with self._mu:
            if self._closed:
                return
        if self._flusher is not None:
            self._flusher.stop()
        try:
            if not self.options.readonly and self._failed is None:
                with self._write_mu:
                    self._sync_active()
                    if self._active.index is not None:
                        try:
                            self._active.index.sync()
                        except OSError as exc:
                            raise self._fail(exc, "index fsync") from exc
        finally:
            with self._write_mu, self._mu:
                self._closed = True
                if self._active.index is not None:
                    self._active.index.close()
                self._versions.close()
                self._streams.clear()
                if self._writer_lock is not None:
                    self._writer_lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.options.durability.value
        return f"<seglog.Store {self.path} {state}>"


def open(path: str | os.PathLike[str], **options: Any) -> Store:
    """Open (creating when needed) the store in directory ``path``.

    Options are the fields of :class:`StoreOptions`: ``durability`` ("process",
    "power" or "relaxed"), ``segment_bytes``, ``max_record_bytes``,
    ``flush_interval``, ``buffer_bytes``, ``compress_events``, ``readonly``, ``create``.
    """
    try:
        opts = StoreOptions(**options)
    except TypeError as exc:
        raise InvalidArgumentError(str(exc)) from None
    try:
        return Store(os.fspath(path), opts)
    except SeglogError:
        raise
    except (OSError, RecursionError, ValueError, IndexError, TypeError) as exc:
        raise CorruptionError(f"cannot open the store: {exc!r}", os.fspath(path)) from exc
