"""The write path of a Store: appends, durability, rolls.

``WritePath`` is the half of :class:`~engine.log.store.Store` that changes the
log; the Store is the facade that also reads. Everything here runs with the
Store's ``_write_mu`` held unless its docstring says otherwise (the lock
contract is in ``store.py``); the catalog is changed only with ``_mu`` held
as well, so readers never wait for a write, an fsync or a roll.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import (
    CorruptionError,
    InvalidArgumentError,
    ReadOnlyError,
    RecordTooLargeError,
    SeglogError,
    StoreClosedError,
    StoreFailedError,
)
from . import codec, fileio, record, recovery
from .active import ActiveSegment
from .active_index import ActiveIndexFile
from .catalog import Catalog, SealedRuns, StreamState, check_key, check_stream_name
from .committer import GroupCommitter
from .format import MANIFEST_LOCK_NAME, MANIFEST_NAME, SEGMENT_HEADER_SIZE, RecordType
from .lockfile import FileLock
from .manifest import Manifest
from .options import Durability, StoreOptions
from .sealed_index import SealedIndex
from .segment import LogSegment
from .version import Sealed, Version, VersionSet

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("engine.log.store")


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


def _manifest_stamp(path: str) -> tuple[int, int, int]:
    """What changes when the MANIFEST is replaced (it always is, by a rename)."""
    try:
        st = fileio.stat(os.path.join(path, MANIFEST_NAME))
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class WritePath:
    # Set up by Store.__init__ (see the lock contract there).
    path: str
    options: StoreOptions
    _write_mu: threading.Lock
    _mu: threading.Lock
    _closed: bool
    _failed: BaseException | None
    _lsn_written: int
    _batching: threading.local
    _active: ActiveSegment
    _manifest: Manifest
    _catalog: Catalog
    _streams: dict[str, StreamState]
    _versions: VersionSet
    _committer: GroupCommitter
    _read_limit: int
    _version: Version
    _manifest_seen: tuple[int, int, int]

    def _stream(self, name: str) -> StreamState:
        raise NotImplementedError

    def _install(
        self, catalog: Catalog, sealed: tuple[Sealed, ...], active: ActiveSegment, dropped: Sequence[int] = ()
    ) -> None:
        raise NotImplementedError

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

    def _append_record(
        self, rec: bytes, rtype: int, flags: int, st: StreamState | None, stream_id: int, count: int, seq: int
    ) -> None:
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
    def batch(self) -> Iterator[Store]:  # yields the Store itself
        """Group this thread's appends: they are handed to the OS in one write (and,
        in "power" mode, made durable by one fsync) when the outermost block ends,
        and each of them is acknowledged only then. Records stay individually
        atomic; a crash inside the block may keep some of them and not others."""
        depth = getattr(self._batching, "depth", 0)
        self._batching.depth = depth + 1
        try:
            yield self  # type: ignore[misc]
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
        raw_key = check_key(key)
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
            if self._failed is not None:
                # The records a failed write dropped count in _lsn_written: an fsync
                # now must not acknowledge the writers still waiting for them.
                raise StoreFailedError(
                    f"an earlier write to {self.path} failed ({self._failed}); "
                    f"appends since the last successful sync may be lost; reopen the store"
                )
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
        return StoreFailedError(
            f"fsync of {path} failed: {exc}; appends since the last successful sync may be lost; reopen the store"
        )

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
            behind = self._lsn_written > self._committer.synced and self.options.durability is not Durability.POWER
            lsn = self._lsn_written
        if behind:
            self._committer.wait(lsn)
        self._maybe_adopt()
        self._versions.reap()
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
            self._sync_active()  # 1. old segment durable
            sid = old.segment.segment_id
            SealedIndex.write(self.path, sid, old.sealed_index())  # 2. its .sidx
            sidx = SealedIndex.load(self.path, sid)
            if sidx is None:
                raise CorruptionError("sealed index unreadable right after writing it", self.path)
            with FileLock(self.path, MANIFEST_LOCK_NAME):  # another process may change it
                self._adopt_manifest()
                manifest = self._manifest
                new_id = manifest.next_segment_id
                new_seg = LogSegment.create(self.path, new_id, self._read_limit)  # 3. the next segment
                new_idx = ActiveIndexFile.create(self.path, new_id)
                _commit_manifest(
                    manifest,
                    self.path,
                    segments=[*manifest.segments, new_id],  # 4. MANIFEST
                    next_segment_id=new_id + 1,
                    next_stream_id=max(manifest.next_stream_id, self._catalog.next_stream_id),
                )
                self._manifest_seen = _manifest_stamp(self.path)
        except OSError as exc:
            for f in (new_seg, new_idx):
                if f is not None:
                    f.close()
            raise self._fail(exc, f"sealing {old.path}") from exc
        new = ActiveSegment(new_seg, new_idx, self._lsn_written)
        with self._mu:  # 5. readers switch
            old.segment.writable = False
            old.segment.sealed = True
            live = [s for s in old.streams.values() if s.id in self._catalog.by_id]  # not dropped
            by_id = {d.stream_id: d for d in sidx.streams}
            for st in live:
                d = by_id[st.id]
                st.clear_active()
                st.nbytes -= d.nbytes  # add_sealed counts them again
                st.add_sealed(
                    old.segment,
                    sidx.ev_seqs,
                    sidx.ev_offs,
                    d.ev_lo,
                    d.ev_n,
                    sidx.bl_hashes,
                    sidx.bl_offs,
                    d.bl_lo,
                    d.bl_n,
                    st.next_seq,
                    d.nbytes,
                )
            self._install(self._catalog, (*self._version.sealed, Sealed(old.segment, sidx)), new)
        if old.index is not None:
            old.index.remove()  # 6. the stale .idx
        log.info("%s: sealed segment %d, active is now %d", self.path, sid, new_id)

    # ------------------------------------------------- segments replaced elsewhere
    def _maybe_adopt(self) -> None:
        """Background: switch to segments another process (a compactor) put in the
        MANIFEST, if it changed since this process last read or wrote it. The new
        segments are opened and the touched streams' runs built before the writer
        lock is taken (with pauses that let recording threads run); under it only
        the prepared runs are swapped in. A roll in between makes them stale: they
        are prepared again, and built under the lock only after three tries. What
        the switch released is closed and deleted after the lock is let go."""
        for attempt in range(3):
            stamp = _manifest_stamp(self.path)
            if stamp == self._manifest_seen:
                return
            disk = Manifest.load(self.path)
            if disk is None:
                return
            version = self._version
            current = {s.segment_id: s for s in version.sealed}
            try:
                ready = recovery.open_sealed(
                    self.path, [i for i in disk.segments[:-1] if i not in current], self._read_limit, readonly=False
                )
            except (OSError, SeglogError):
                ready = []  # replaced again meanwhile: the switch below opens what it needs
            prepared = None
            by_id = {**current, **{s.segment_id: s for s in ready}}
            if all(i in by_id for i in disk.segments[:-1]):
                sealed = [by_id[i] for i in disk.segments[:-1]]
                prepared = (version, stamp, disk, sealed, self._plan(sealed, current, pause=_let_others_run))
            _let_others_run()  # start the locked part with a fresh turn of the GIL
            with self._write_mu:
                if self._closed or self._failed is not None:
                    for s in ready:
                        s.index.close()
                        s.segment.close()
                    return
                fresh = self._version is version and _manifest_stamp(self.path) == stamp
                if fresh or attempt == 2:
                    try:
                        self._adopt_manifest({s.segment_id: s for s in ready}, prepared)
                    except OSError as exc:
                        raise self._fail(exc, "reading segments another process wrote") from exc
                    break
            for s in ready:  # stale: a roll or another commit came in between
                if s.segment_id not in current:
                    s.index.close()
                    s.segment.close()
        self._versions.reap()

    def _plan(
        self, sealed: list[Sealed], current: dict[int, Sealed], pause: Callable[[], None] | None = None
    ) -> dict[int, SealedRuns]:
        dropped = [sid for sid in current if sid not in {s.segment_id for s in sealed}]
        return self._catalog.sealed_runs(
            [(s.segment, s.index) for s in sealed],
            [(current[sid].segment, current[sid].index) for sid in dropped],
            [(s.segment, s.index) for s in sealed if s.segment_id not in current],
            pause,
        )

    def _adopt_manifest(
        self,
        ready: dict[int, Sealed] | None = None,
        prepared: tuple[Version, tuple[int, int, int], Manifest, list[Sealed], dict[int, SealedRuns]] | None = None,
    ) -> None:
        """Read the MANIFEST; when another process replaced sealed segments, switch
        readers to the new ones (``ready``: opened already; ``prepared``: the runs
        built for them, used when nothing changed since). The replaced ones are
        deleted once no reader pins them. Caller holds ``_write_mu``; the catalog
        lock is held only to swap the runs in."""
        ready = dict(ready or {})
        stamp = _manifest_stamp(self.path)
        fresh = prepared is not None and prepared[0] is self._version and prepared[1] == stamp
        disk = prepared[2] if prepared is not None and fresh else Manifest.load(self.path)
        if disk is None:
            raise CorruptionError("the MANIFEST disappeared", self.path)
        mine = self._manifest
        self._manifest_seen = stamp
        try:
            if disk.generation == mine.generation and disk.segments == mine.segments:
                return
            if disk.segments[-1] != mine.segments[-1] or disk.next_segment_id < mine.next_segment_id:
                raise CorruptionError("another process changed the active segment of the MANIFEST", self.path)
            disk.next_stream_id = max(disk.next_stream_id, self._catalog.next_stream_id)
            disk.max_record_bytes = max(disk.max_record_bytes, mine.max_record_bytes)
            current = {s.segment_id: s for s in self._version.sealed}
            if prepared is not None and fresh:
                sealed, plan = prepared[3], prepared[4]
            else:  # a roll or another switch came in between: build the runs here
                reuse = {**ready, **current}
                sealed = recovery.open_sealed(self.path, disk.segments[:-1], self._read_limit, False, reuse)
                plan = self._plan(sealed, current)
            for sid in [i for i in ready if i in disk.segments]:
                del ready[sid]  # in use now
            dropped = [sid for sid in current if sid not in disk.segments]
            with self._mu:
                self._catalog.set_sealed_runs(plan)
                self._manifest = disk
                self._install(self._catalog, tuple(sealed), self._active, dropped)
        finally:
            for s in ready.values():  # opened for a MANIFEST that changed again
                s.index.close()
                s.segment.close()
        if dropped:
            log.info(
                "%s: segments %s were replaced by %s",
                self.path,
                dropped,
                [s.segment_id for s in sealed if s.segment_id not in current],
            )


def _let_others_run() -> None:
    """Give the GIL to a waiting thread (a recording thread must not wait for a
    background computation)."""
    time.sleep(0)
