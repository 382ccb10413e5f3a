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

import logging
import os
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import takewhile
from types import TracebackType
from typing import Any

from ..errors import (
    BlobNotFoundError,
    CorruptionError,
    EventNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    ReadOnlyError,
    RecordTooLargeError,
    SeglogError,
    StoreClosedError,
    StoreFailedError,
    UnknownStreamError,
)
from . import codec, fileio, record, recovery
from .active import ActiveSegment
from .active_index import ActiveIndexFile, Entry
from .catalog import Catalog, StreamState, check_name, check_stream_name
from .committer import BackgroundFlusher, GroupCommitter
from .format import MAX_KEY_BYTES, SEGMENT_HEADER_SIZE, RecordType
from .lockfile import WriterLock
from .manifest import Manifest
from .options import Durability, StoreOptions
from .reports import Problem, StoreStats, StreamInfo, VerifyReport
from .sealed_index import SealedIndex
from .segment import LogSegment
from .verify import known_offsets, verify
from .version import Sealed, Version, VersionSet

__all__ = ["Problem", "Store", "StoreStats", "StreamInfo", "VerifyReport", "open"]

log = logging.getLogger(__name__)


def _check_key(key: object) -> bytes:
    return check_name(key, "blob key", MAX_KEY_BYTES, allow_controls=True)


def _commit_manifest(manifest: Manifest, path: str, **changes: Any) -> None:
    """Apply ``changes`` to the manifest and save it; on failure the in-memory
    manifest is left as it was, so it never names a segment the disk lacks."""
    before = {name: getattr(manifest, name) for name in [*changes, "generation"]}
    for name, value in changes.items():
        setattr(manifest, name, value)
    try:
        manifest.save(path)
    except BaseException:
        for name, value in before.items():
            setattr(manifest, name, value)
        raise


def _check_position(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative int, not {value!r}")
    return value


class Store:
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
            self._flusher = BackgroundFlusher(options.flush_interval, self._background_flush,
                                              f"seglog-flush:{os.path.basename(self.path)}")

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
        opts = self.options
        try:
            if not os.path.isdir(self.path):
                if os.path.exists(self.path):
                    raise InvalidArgumentError(f"{self.path} is not a directory")
                if opts.readonly or not opts.create:
                    raise NotFoundError(f"no store at {self.path}")
                fileio.mkdir(self.path)
                fileio.fsync_dir(os.path.dirname(self.path))
            if not opts.create and not os.path.exists(os.path.join(self.path, "MANIFEST")):
                raise NotFoundError(f"no store at {self.path}")
            if not opts.readonly:
                self._writer_lock = WriterLock(self.path)
            self._load()
        except BaseException as exc:
            self._versions.close()
            if self._writer_lock is not None:
                self._writer_lock.release()
            if isinstance(exc, OSError):
                raise StoreFailedError(f"cannot open the store at {self.path}: {exc}") from exc
            raise

    def _load(self) -> None:
        opts = self.options
        manifest = recovery.open_manifest(self.path, opts)
        if not opts.readonly and manifest.max_record_bytes < opts.max_record_bytes:
            manifest.max_record_bytes = opts.max_record_bytes
            manifest.save(self.path)
        # Records are read against the largest limit they were ever written with.
        self._read_limit = max(manifest.max_record_bytes, opts.max_record_bytes)
        if not opts.readonly:
            recovery.remove_leftovers(self.path, manifest)
        loaded = recovery.load(self.path, opts, manifest, self._read_limit)
        self._manifest = manifest
        self._install(loaded.catalog, loaded.sealed, loaded.active)
        self._entries = loaded.entries if opts.readonly else []

    def _install(self, catalog: Catalog, sealed: tuple[Sealed, ...], active: ActiveSegment,
                 dropped: Sequence[int] = ()) -> None:
        """Make a new catalog and version current (caller holds both locks, or is opening)."""
        self._catalog = catalog
        self._streams = catalog.by_name
        self._active = active
        self._versions.install(self._versions.make(sealed, active.segment), dropped)

    def refresh(self) -> None:
        """Read-only store: see what the writer flushed, sealed or replaced since
        the open or the last refresh."""
        if not self.options.readonly:
            return
        with self._write_mu:
            self._check_open()
            manifest = Manifest.load(self.path)
            if manifest is None:
                raise CorruptionError("MANIFEST disappeared", self.path)
            version = self._versions.current
            act = self._active
            if manifest.segments == version.segment_ids:
                seg = act.segment
                known = len(self._entries)
                start = self._entries[-1].offset if self._entries else SEGMENT_HEADER_SIZE
                seg.refresh_size()
                tail_from = seg.read(start).end if self._entries else start
                tail, end = seg.recover_tail(tail_from, quiet=True)
                seg.size = end
                self._entries.extend(Entry(r.offset, r.seq, r.stream_id, r.count, r.rtype, r.flags)
                                     for r in tail)
                with self._mu:
                    recovery.replay_active(self._catalog, act, self._entries, known)
                return
            reuse = {s.segment_id: s for s in version.sealed}
            loaded = recovery.load(self.path, self.options, manifest, self._read_limit, 0, reuse,
                                   (act.segment, self._entries))
            with self._mu:
                self._manifest = manifest
                self._install(loaded.catalog, loaded.sealed, loaded.active)
                self._entries = loaded.entries

    # ---------------------------------------------------------- write path
    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self.options.readonly:
            raise ReadOnlyError(f"store {self.path} was opened read-only")
        if self._failed is not None:
            raise StoreFailedError(f"an earlier write to {self.path} failed ({self._failed}); reopen the store")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")

    def _fail(self, exc: BaseException, what: str) -> StoreFailedError:
        """A write, fsync or file change failed: refuse writes until the store is reopened."""
        if self._failed is None:
            self._failed = exc
        log.error("%s: %s failed, the store refuses writes until reopened: %s", self.path, what, exc)
        return StoreFailedError(f"{what} in {self.path} failed: {exc}; reopen the store")

    def _append_record(self, rec: bytes, rtype: int, flags: int, st: StreamState | None, stream_id: int,
                       count: int, seq: int) -> None:
        """Append one framed record to the active segment. Caller holds ``_write_mu``."""
        act = self._active
        end = act.end
        if end + len(rec) > self.options.segment_bytes and end > SEGMENT_HEADER_SIZE:
            self._roll()
            act = self._active
            end = act.end
        act.pending += rec
        self._lsn_written += len(rec)
        with self._mu:
            if rtype == RecordType.STREAM_CREATE:
                act.creates[stream_id] = bytes(rec[record.HEADER_SIZE :]).decode("utf-8")
            act.account(end, seq, st, stream_id, count, rtype, flags, len(rec))
        # "process": in the OS before the call returns. "power": the group commit
        # leader writes everything pending right before its fsync (one write per
        # group, and no write races the fsync). "relaxed": the background thread.
        if len(act.pending) >= self.options.buffer_bytes or (
            self.options.durability is Durability.PROCESS and not getattr(self._batching, "depth", 0)
        ):
            self._flush_pending()

    def _flush_pending(self) -> None:
        """Caller holds ``_write_mu``."""
        try:
            self._active.flush()
        except OSError as exc:
            # The catalog already counts these records: refuse further writes
            # rather than serve or extend a log that does not hold them.
            raise self._fail(exc, f"write to {self._active.path}") from exc

    def _flush(self) -> None:
        with self._write_mu:
            if not self._closed and self._failed is None:
                self._flush_pending()

    def _check_size(self, payload: int) -> None:
        """Refuse a record whose uncompressed payload is over the limit (so that whatever
        was written decompresses within the limit that reads check)."""
        if payload > self.options.max_record_bytes:
            raise RecordTooLargeError(
                f"record payload of {payload} bytes exceeds max_record_bytes={self.options.max_record_bytes}"
            )

    def _stream_for_write(self, name: str) -> StreamState:
        """The stream, created when new. Caller holds ``_write_mu``."""
        st = self._streams.get(name)
        if st is None:
            raw = check_stream_name(name)
            sid = self._catalog.next_stream_id
            rec = record.frame(RecordType.STREAM_CREATE, 0, sid, 0, 0, raw)
            self._append_record(rec, RecordType.STREAM_CREATE, 0, None, sid, 0, 0)
            with self._mu:
                st = self._catalog.add(sid, name)
        return st

    def _wait_durable(self, lsn: int) -> None:
        if self.options.durability is Durability.POWER and not getattr(self._batching, "depth", 0):
            self._committer.wait(lsn)

    @contextmanager
    def batch(self) -> Iterator[Store]:
        """Group this thread's appends: they are handed to the OS in one write (and,
        in "power" mode, made durable by one fsync) when the outermost block ends,
        and each of them is acknowledged only then. Records stay individually
        atomic; a crash inside the block may keep some of them and not others."""
        depth = getattr(self._batching, "depth", 0)
        self._batching.depth = depth + 1
        try:
            yield self
        finally:
            self._batching.depth = depth
            if depth == 0:
                with self._write_mu:
                    if not self._closed and self._failed is None and self.options.durability is Durability.PROCESS:
                        self._flush_pending()
                    lsn = self._lsn_written
                if not self._closed:
                    self._wait_durable(lsn)

    def create_stream(self, name: str) -> None:
        """Create an empty stream (appending to a new name creates it too). Idempotent."""
        check_stream_name(name)
        with self._write_mu:
            self._check_writable()
            self._stream_for_write(name)
            lsn = self._lsn_written
        self._wait_durable(lsn)

    def append(self, stream: str, value: Any) -> int:
        """Append one event; return its sequence number."""
        return self.append_batch(stream, (value,))

    def append_batch(self, stream: str, values: Sequence[Any]) -> int:
        """Append events atomically (one record: all or none survive a crash).

        Returns the sequence number of the first; the others follow it.
        """
        if not isinstance(stream, str) or stream not in self._streams:
            check_stream_name(stream)
        if not isinstance(values, (list, tuple)):
            values = list(values)
        if not values:
            raise InvalidArgumentError("append_batch needs at least one value")
        self._check_writable()
        values = list(values)
        packed, reference = codec.pack_array(values)
        self._check_size(len(packed))
        n = len(values)
        compress = self.options.compress_events
        with self._write_mu:
            self._check_writable()
            st = self._stream_for_write(stream)
            first = st.next_seq
            rec = record.encode_events(st.id, first, n, packed, reference, compress)
            self._append_record(rec, RecordType.EVENTS, rec[13], st, st.id, n, first)
            lsn = self._lsn_written
        self._wait_durable(lsn)
        return first

    def put_blob(self, stream: str, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in the stream; the last write wins."""
        if not isinstance(stream, str) or stream not in self._streams:
            check_stream_name(stream)
        raw_key = _check_key(key)
        packed, reference = codec.pack(value)
        h = record.key_hash(raw_key)
        self._check_size(2 + len(raw_key) + len(packed))
        with self._write_mu:
            self._check_writable()
            st = self._stream_for_write(stream)
            rec = record.encode_blob(st.id, h, raw_key, packed, reference)
            self._append_record(rec, RecordType.BLOB, rec[13], st, st.id, 0, h)
            lsn = self._lsn_written
        self._wait_durable(lsn)

    def drop_stream(self, name: str) -> None:
        """Delete a stream with its events and blobs. Space returns at compaction."""
        with self._write_mu:
            self._check_writable()
            st = self._stream(name)
            rec = record.frame(RecordType.STREAM_DROP, 0, st.id, 0, 0, b"")
            self._append_record(rec, RecordType.STREAM_DROP, 0, st, st.id, 0, 0)
            with self._mu:
                self._catalog.remove(st.id)
            lsn = self._lsn_written
        self._wait_durable(lsn)

    # ------------------------------------------------------- durability
    def _sync_source(self) -> tuple[int, int]:
        with self._write_mu:
            self._check_open()
            self._flush_pending()
            return self._active.segment.dup_fd(), self._lsn_written

    def _on_sync_failed(self, exc: OSError) -> StoreFailedError:
        """An fsync failed: what it should have made durable may be lost, and a
        retry could succeed without writing it (the kernel may have dropped the
        dirty pages). Refuse writes until the store is reopened and recovered."""
        with self._write_mu:
            if self._failed is None:
                self._failed = exc
            path = self._active.path
        log.error("%s: fsync failed, the store refuses writes until reopened: %s", self.path, exc)
        return StoreFailedError(f"fsync of {path} failed: {exc}; appends since the last successful "
                                f"sync may be lost; reopen the store")

    def _on_synced(self, lsn: int) -> None:
        with self._write_mu:
            self._active.synced(lsn)

    def _sync_active(self) -> None:
        """fsync the active segment and index what that made durable. Caller holds ``_write_mu``."""
        act = self._active
        self._flush_pending()
        try:
            act.segment.sync()
        except OSError as exc:
            raise self._on_sync_failed_locked(exc) from exc
        self._committer.mark_synced(self._lsn_written)
        act.synced_end = act.segment.size
        act.write_index()

    def _on_sync_failed_locked(self, exc: OSError) -> StoreFailedError:
        return self._fail(exc, f"fsync of {self._active.path}")

    def _background_flush(self) -> None:
        with self._write_mu:
            if self._closed or self._failed is not None:
                return
            # In "power" mode every writer waits for its own appends: an fsync from
            # here would only join (and resize) their groups.
            behind = (self._lsn_written > self._committer.synced
                      and self.options.durability is not Durability.POWER)
            lsn = self._lsn_written
        if behind:
            self._committer.wait(lsn)
        with self._write_mu:
            if not self._closed and self._failed is None:
                try:
                    self._active.write_index()
                except OSError as exc:
                    raise self._fail(exc, "index write") from exc

    def flush(self) -> None:
        """Hand everything appended so far to the OS (survives a process crash)."""
        with self._write_mu:
            self._check_writable()
            self._flush_pending()

    def sync(self) -> None:
        """Make everything appended so far durable on disk (survives power loss)."""
        with self._write_mu:
            self._check_writable()
            lsn = self._lsn_written
        self._committer.wait(lsn)
        with self._write_mu:
            try:
                self._active.write_index()
            except OSError as exc:
                raise self._fail(exc, "index write") from exc

    def _roll(self) -> None:
        """Seal the active segment and start a new one. Caller holds ``_write_mu``
        (not ``_mu``: readers go on during the fsyncs). The steps and what a crash
        after each one leaves are in FORMAT.md, "Crash rules: sealing"."""
        old = self._active
        new_seg = new_idx = None
        try:
            self._sync_active()                                       # 1. old segment durable
            sid = old.segment.segment_id
            SealedIndex.write(self.path, sid, old.sealed_index())     # 2. its .sidx
            sidx = SealedIndex.load(self.path, sid)
            if sidx is None:
                raise CorruptionError("sealed index unreadable right after writing it", self.path)
            manifest = self._manifest
            new_id = manifest.next_segment_id
            new_seg = LogSegment.create(self.path, new_id, self._read_limit)      # 3. the next segment
            new_idx = ActiveIndexFile.create(self.path, new_id)
            _commit_manifest(manifest, self.path, segments=[*manifest.segments, new_id],   # 4. MANIFEST
                             next_segment_id=new_id + 1, next_stream_id=self._catalog.next_stream_id)
        except OSError as exc:
            for f in (new_seg, new_idx):
                if f is not None:
                    f.close()
            raise self._fail(exc, f"sealing {old.path}") from exc
        new = ActiveSegment(new_seg, new_idx, self._lsn_written)
        with self._mu:                                                # 5. readers switch
            old.segment.writable = False
            live = [s for s in old.streams.values() if s.id in self._catalog.by_id]  # not dropped
            by_id = {d.stream_id: d for d in sidx.streams}
            for st in live:
                d = by_id[st.id]
                st.clear_active()
                st.nbytes -= d.nbytes  # add_sealed counts them again
                st.add_sealed(old.segment, sidx.ev_seqs, sidx.ev_offs, d.ev_lo, d.ev_n,
                              sidx.bl_hashes, sidx.bl_offs, d.bl_lo, d.bl_n, st.next_seq, d.nbytes)
            self._install(self._catalog, (*self._versions.current.sealed, Sealed(old.segment, sidx)), new)
        if old.index is not None:
            old.index.remove()                                        # 6. the stale .idx
        log.info("%s: sealed segment %d, active is now %d", self.path, sid, new_id)

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
        for tries in range(2):
            with self._mu:
                try:
                    st = self._streams.get(stream)
                except TypeError:  # unhashable: not a name
                    st = None
                if st is None or self._closed:
                    self._stream(stream)  # raises the right error
                    raise AssertionError
                if not 0 <= seq < st.next_seq:
                    raise EventNotFoundError(f"stream {stream!r} has events 0..{st.next_seq - 1}, not {seq}")
                acts = st.act_seqs
                if acts and seq >= acts[0]:
                    seg = self._active.segment
                    off = st.act_offs[bisect_right(acts, seq) - 1]
                    pending = off >= seg.size
                else:
                    seg, keys, offs, lo, hi = st.runs[bisect_right(st.run_starts, seq) - 1]
                    off = offs[bisect_right(keys, seq, lo, hi) - 1]
                    pending = False
                if not pending:
                    version = self._versions.current.pin()
            if pending:
                self._flush_for_read(tries)
                continue
            try:
                return seg.event(off, st.id, seq)
            finally:
                version.unpin()
        raise AssertionError("unreachable")

    def scan(self, stream: str, start: int = 0, stop: int | None = None) -> Iterator[Any]:
        """Events ``start <= seq < stop`` in order (``stop`` defaults to the end as of the call).

        The i-th value yielded has seq ``start + i``. The iterator reads the
        segments as they were when it was made, however long it lives.
        """
        _check_position("scan start", start)
        if stop is not None:
            _check_position("scan stop", stop)
        for tries in range(3):
            with self._mu:
                st = self._stream(stream)
                end = st.next_seq if stop is None else min(stop, st.next_seq)
                if start >= end:
                    return iter(())
                active = self._active.segment
                locs = [loc for loc in takewhile(lambda loc, end=end: loc[2] < end, st.locations_from(start, active))]
                if not (locs and locs[-1][0] is active and locs[-1][1] >= active.size):
                    version = self._versions.current.pin()
                    break
            self._flush_for_read(tries)
        it = self._scan(version, st, locs, start, end)
        next(it)  # enter the generator, so that closing it unpins the version
        return it

    def _scan(self, version: Version, st: StreamState, locs: list[tuple[LogSegment, int, int]], start: int,
              end: int) -> Iterator[Any]:
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

    def _blob_locations(self, stream: str, hashes: list[int] | None) -> tuple[StreamState, list, Version]:
        """The stream, its blob records with these key hashes (all, with None), newest
        first per hash, and the version pinned for reading them."""
        for tries in range(3):
            with self._mu:
                st = self._stream(stream)
                active = self._active.segment
                keys = st.blob_hashes() if hashes is None else hashes
                locs = [(seg, off) for h in keys for seg, off in st.blob_candidates(h, active)]
                if not any(seg is active and off >= active.size for seg, off in locs):
                    return st, locs, self._versions.current.pin()
            self._flush_for_read(tries)
        raise AssertionError("unreachable")

    def get_blob(self, stream: str, key: str) -> Any:
        """The latest value stored under ``key`` in ``stream``."""
        raw_key = _check_key(key)
        st, locs, version = self._blob_locations(stream, [record.key_hash(raw_key)])
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
        _st, locs, version = self._blob_locations(stream, None)
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
            return [StreamInfo(st.name, st.next_seq, st.nbytes, len(st.blob_hashes()))
                    for st in sorted(self._streams.values(), key=lambda s: s.name)]

    def stats(self) -> StoreStats:
        with self._mu:
            self._check_open()
            segs = self._versions.current.segments()
            disk = sum(s.size for s in segs) + len(self._active.pending)
            streams, events = len(self._streams), sum(st.next_seq for st in self._streams.values())
        for name in fileio.listdir(self.path):
            if name.endswith((".idx", ".sidx")) or name == "MANIFEST":
                disk += fileio.stat(os.path.join(self.path, name)).st_size
        return StoreStats(self.path, self.options.durability.value, len(segs), disk, streams, events,
                          self._manifest.generation, self._lsn_written, self._committer.synced,
                          self._committer.fsyncs)

    def manifest_snapshot(self) -> Manifest:
        """A copy of the manifest as this process knows it (next ids up to date)."""
        with self._write_mu, self._mu:
            m = self._manifest
            return Manifest(segments=list(m.segments), next_segment_id=m.next_segment_id,
                            max_record_bytes=m.max_record_bytes,
                            next_stream_id=max(m.next_stream_id, self._catalog.next_stream_id),
                            reserved=list(m.reserved))

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
