"""Store: the segment engine's public object.

A store is a directory::

    LOCK                      writer lock (flock), holds the writer's pid
    MANIFEST                  segment ids in log order, generation
    00000000000000000001.seg  sealed segment
    00000000000000000001.sidx its sorted, mmap'd offset index
    00000000000000000002.seg  the active segment (last in the manifest)
    00000000000000000002.idx  its append-order offset index

Every public method is thread-safe. See FORMAT.md for the bytes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    StoreClosedError,
    StoreFailedError,
    TruncatedRecordError,
    UnknownStreamError,
)
from . import codec, record
from .catalog import StreamState, check_stream_name
from .committer import BackgroundFlusher, GroupCommitter
from .lockfile import WriterLock
from .manifest import MANIFEST_NAME, Manifest
from .offset_index import (
    ActiveIndexFile,
    Entry,
    SealedIndex,
    pack_entry,
    parse_entries,
)
from .options import Durability, StoreOptions
from .record import RecordType, RecordView
from .segment import SEGMENT_HEADER_SIZE, LogSegment

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{20})\.(seg|idx|sidx)$")


@dataclass(frozen=True)
class StreamInfo:
    name: str
    events: int
    bytes: int
    blobs: int


@dataclass(frozen=True)
class StoreStats:
    path: str
    durability: str
    segments: int
    bytes_on_disk: int
    streams: int
    events: int
    generation: int
    bytes_written: int
    bytes_synced: int
    fsyncs: int


@dataclass(frozen=True)
class Problem:
    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path} at offset {self.offset}: {self.message}"


@dataclass
class VerifyReport:
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_key(key: object) -> bytes:
    if not isinstance(key, str) or not key:
        raise InvalidNameError(f"blob key must be a non-empty str, not {key!r}")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"blob key {key!r} is not valid Unicode text") from None
    if len(raw) > record.MAX_KEY_BYTES:
        raise InvalidNameError(f"blob key is {len(raw)} bytes; the limit is {record.MAX_KEY_BYTES}")
    return raw


class Store:
    """An open store. Create with :func:`engine.open`."""

    def __init__(self, path: str, options: StoreOptions) -> None:
        self.path = os.path.abspath(path)
        self.options = options
        self._lock = threading.RLock()
        self._closed = False
        self._writer_lock: WriterLock | None = None
        self._streams: dict[str, StreamState] = {}
        self._by_id: dict[int, StreamState] = {}
        self._next_stream_id = 1
        self._sealed: list[tuple[LogSegment, SealedIndex]] = []
        self._pending = bytearray()  # appended records not yet handed to the OS
        self._act_entries = bytearray()  # index entries of the active segment
        self._act_entry_offs: array[int] = array("q")  # record offsets of those entries
        self._act_creates: dict[int, str] = {}
        self._act_streams: dict[int, StreamState] = {}  # streams with records in it, dropped ones too
        self._act_drops: list[int] = []  # streams its STREAM_DROP records name
        self._idx_written = 0  # bytes of _act_entries already in the .idx file
        self._synced_end = 0  # offset in the active segment known to be on disk
        self._lsn_written = 0  # bytes appended since open
        self._act_start_lsn = 0  # lsn at which the active segment became active
        self._act_lsn_offset = 0  # offset in the active segment = lsn + this
        self._read_limit = options.max_record_bytes
        self._flusher: BackgroundFlusher | None = None
        self._batching = threading.local()  # depth of batch() blocks in this thread
        self._failed: OSError | None = None  # a write failed: no more writes
        self._act_idx: ActiveIndexFile | None = None
        self._open()
        self._committer = GroupCommitter(self._sync_source, self._on_synced, self._on_sync_failed)
        if not options.readonly:
            self._flusher = BackgroundFlusher(options.flush_interval, self._background_flush,
                                              f"seglog-flush:{os.path.basename(self.path)}")

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
        opts = self.options
        if not os.path.isdir(self.path):
            if opts.readonly or not opts.create:
                raise NotFoundError(f"no store at {self.path}")
            os.makedirs(self.path, exist_ok=True)
        if not opts.create and not os.path.exists(os.path.join(self.path, MANIFEST_NAME)):
            raise NotFoundError(f"no store at {self.path}")
        if not opts.readonly:
            self._writer_lock = WriterLock(self.path)
        try:
            self._open_locked()
        except BaseException:
            self._release_files()
            raise

    def _open_locked(self) -> None:
        opts = self.options
        manifest = Manifest.load(self.path)
        if manifest is None:
            leftovers = [n for n in os.listdir(self.path) if _FILE_RE.match(n)]
            if leftovers and not self._interrupted_creation(leftovers):
                raise CorruptionError("segment files present but MANIFEST is missing", self.path)
            if opts.readonly or not opts.create:
                raise NotFoundError(f"no store at {self.path}")
            for name in leftovers:  # an empty first segment from a creation that was killed
                os.unlink(os.path.join(self.path, name))
            manifest = Manifest(max_record_bytes=opts.max_record_bytes)
            sid = manifest.allocate_segment_id()
            LogSegment.create(self.path, sid, opts.max_record_bytes).close()
            ActiveIndexFile.create(self.path, sid).close()
            manifest.segments = [sid]
            manifest.save(self.path)
        self._manifest = manifest
        if not opts.readonly and manifest.max_record_bytes < opts.max_record_bytes:
            manifest.max_record_bytes = opts.max_record_bytes
            manifest.save(self.path)
        # Records are read against the largest limit they were ever written with.
        limit = self._read_limit = max(manifest.max_record_bytes, opts.max_record_bytes)
        if not opts.readonly:
            self._remove_orphans()
        for sid in manifest.segments[:-1]:
            seg = LogSegment.open(self.path, sid, False, limit)
            self._sealed.append((seg, self._load_sealed(seg)))
        self._active = LogSegment.open(self.path, manifest.segments[-1], not opts.readonly, limit)
        entries = self._recover_active()
        for seg, idx in self._sealed:
            self._apply_sealed(seg, idx)
        self._apply_active(entries)

    def _interrupted_creation(self, leftovers: list[str]) -> bool:
        """Are these the files of a store whose creation was killed before its MANIFEST?"""
        first = f"{1:020d}"
        for name in leftovers:
            if not name.startswith(first):
                return False
            if name.endswith(".seg") and os.path.getsize(os.path.join(self.path, name)) > SEGMENT_HEADER_SIZE:
                return False
        return True

    def _remove_orphans(self) -> None:
        """Remove temp files and files of segments a crash left out of the manifest."""
        live = set(self._manifest.segments)
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if name.endswith(".tmp"):
                os.unlink(full)
                continue
            m = _FILE_RE.match(name)
            if not m:
                continue
            sid = int(m.group(1))
            stale_index = m.group(2) == "idx" and sid in live and sid != self._manifest.segments[-1]
            if stale_index or (sid not in live and sid >= self._manifest.next_segment_id):
                log.warning("%s: removing %s, left by an interrupted segment roll", self.path, name)
                os.unlink(full)

    def _load_sealed(self, seg: LogSegment) -> SealedIndex:
        idx = SealedIndex.load(self.path, seg.segment_id)
        if idx is not None and idx.data_end == seg.size:
            return idx
        if idx is not None:
            log.warning("%s: sealed index covers %d bytes, segment has %d; rebuilding",
                        idx.path, idx.data_end, seg.size)
            idx.close()
        streams: dict[int, StreamState] = {}
        creates: dict[int, str] = {}
        drops: list[int] = []
        for rec in seg.scan(SEGMENT_HEADER_SIZE):
            if rec.rtype == RecordType.STREAM_CREATE:
                creates[rec.stream_id] = rec.name()
            elif rec.rtype == RecordType.STREAM_DROP:
                drops.append(rec.stream_id)
            else:
                st = streams.get(rec.stream_id)
                if st is None:
                    st = streams[rec.stream_id] = StreamState(rec.stream_id, "")
                st.account(rec.rtype, rec.seq, rec.count, rec.offset, rec.end - rec.offset)
        if seg.scan_end != seg.size:
            raise CorruptionError("sealed segment has a torn record", seg.path, seg.scan_end)
        data = SealedIndex.build(seg.segment_id, streams.values(), drops, seg.size, creates)
        if not self.options.readonly:
            SealedIndex.write(self.path, seg.segment_id, data)
            loaded = SealedIndex.load(self.path, seg.segment_id)
        else:
            loaded = SealedIndex.from_buffer(seg.path, seg.segment_id, data)
        assert loaded is not None
        return loaded

    def _recover_active(self) -> list[Entry]:
        """Load the active index, scan the unindexed tail, truncate a torn tail."""
        seg = self._active
        raw, clean = ActiveIndexFile.load(self.path, seg.segment_id)
        entries = parse_entries(raw)
        # Entries must point inside the data, in increasing order; else rebuild.
        prev = SEGMENT_HEADER_SIZE - 1
        for e in entries:
            if e.offset <= prev or e.offset >= seg.size:
                log.warning("%s: index entry at %d does not fit the segment; rebuilding", seg.path, e.offset)
                entries, clean = [], False
                break
            prev = e.offset
        start = SEGMENT_HEADER_SIZE
        if entries:
            last = entries[-1]
            # Entries are only written for synced records: one that fails its checksum is
            # damage (raised); one the file no longer holds was cut off (rebuilt, tail cut).
            try:
                rec = seg.read(last.offset)
                ok = (rec.stream_id, rec.rtype, rec.seq, rec.count) == \
                    (last.stream_id, last.rtype, last.seq, last.events)
            except TruncatedRecordError:
                log.warning("%s: the segment ends inside indexed record at %d; rebuilding the index",
                            seg.path, last.offset)
                ok = False
            if ok:
                start = rec.end
            else:
                log.warning("%s: last index entry does not match the data; rebuilding", seg.path)
                entries, clean = [], False
        tail, valid_end = seg.recover_tail(start)
        entries.extend(Entry(r.offset, r.seq, r.stream_id, r.count, r.rtype, r.flags) for r in tail)
        if valid_end < seg.size:
            if self.options.readonly:
                seg.size = valid_end  # ignore the torn bytes, leave the file alone
            else:
                seg.truncate(valid_end)
        if not self.options.readonly:
            if tail:
                seg.sync()  # index only what is known to be on disk
            body = b"".join(pack_entry(*e) for e in entries)
            if clean and not tail:
                self._act_idx = ActiveIndexFile.open_append(self.path, seg.segment_id)
            else:
                self._act_idx = ActiveIndexFile.create(self.path, seg.segment_id, body)
            self._act_entries = bytearray(body)
            self._idx_written = len(body)
        self._synced_end = seg.size
        self._act_lsn_offset = seg.size  # offset in the active segment of lsn 0
        return entries

    def _apply_sealed(self, seg: LogSegment, idx: SealedIndex) -> None:
        for sid, name in idx.meta.creates.items():
            self._add_stream(sid, name)
        for d in idx.streams:
            st = self._by_id.get(d.stream_id)
            if st is not None:
                st.add_sealed(seg, idx.ev_seqs, idx.ev_offs, d.ev_lo, d.ev_n,
                              idx.bl_hashes, idx.bl_offs, d.bl_lo, d.bl_n, d.next_seq, d.nbytes)
        for sid in idx.meta.drops:
            self._remove_stream(sid)

    def _apply_active(self, entries: list[Entry]) -> None:
        seg = self._active
        for i, e in enumerate(entries):
            size = (entries[i + 1].offset if i + 1 < len(entries) else seg.size) - e.offset
            self._index_record(e.offset, e.seq, e.stream_id, e.events, e.rtype, e.flags, size, entry=False)
            if e.rtype == RecordType.STREAM_CREATE:
                name = seg.read(e.offset).name()
                self._add_stream(e.stream_id, name)
                self._act_creates[e.stream_id] = name
            elif e.rtype == RecordType.STREAM_DROP:
                self._remove_stream(e.stream_id)

    def _add_stream(self, sid: int, name: str) -> StreamState:
        st = StreamState(sid, name)
        self._streams[name] = st
        self._by_id[sid] = st
        self._next_stream_id = max(self._next_stream_id, sid + 1)
        return st

    def _remove_stream(self, sid: int) -> None:
        st = self._by_id.pop(sid, None)
        if st is not None and self._streams.get(st.name) is st:
            del self._streams[st.name]

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

    def _index_record(self, offset: int, seq: int, stream_id: int, count: int, rtype: int,
                      flags: int, size: int, entry: bool = True) -> None:
        """Account a record of the active segment in the catalog (and index buffer)."""
        if entry:
            self._act_entries += pack_entry(offset, seq, stream_id, count, rtype, flags)
        self._act_entry_offs.append(offset)
        if rtype == RecordType.STREAM_DROP:
            self._act_drops.append(stream_id)
            return
        st = self._by_id.get(stream_id)
        if st is not None and st.account(rtype, seq, count, offset, size):
            self._act_streams[stream_id] = st

    def _append_record(self, rec: bytes, rtype: int, flags: int, stream_id: int, count: int, seq: int) -> int:
        """Append one framed record to the active segment. Caller holds the lock."""
        end = self._active.size + len(self._pending)
        if end + len(rec) > self.options.segment_bytes and end > SEGMENT_HEADER_SIZE:
            self._roll()
            end = self._active.size
        self._pending += rec
        self._lsn_written += len(rec)
        if rtype == RecordType.STREAM_CREATE:
            self._act_creates[stream_id] = bytes(rec[record.HEADER_SIZE:]).decode("utf-8")
        self._index_record(end, seq, stream_id, count, rtype, flags, len(rec))
        # "process": in the OS before the call returns. "power": the group commit
        # leader writes everything pending right before its fsync (one write per
        # group, and no write races the fsync). "relaxed": the background thread.
        if len(self._pending) >= self.options.buffer_bytes or (
            self.options.durability is Durability.PROCESS and not getattr(self._batching, "depth", 0)
        ):
            self._flush_pending()
        return end

    def _flush_pending(self) -> None:
        if self._pending:
            try:
                self._active.write(self._pending)
            except OSError as exc:
                # The catalog already counts these records: refuse further writes
                # rather than serve or extend a log that does not hold them.
                self._failed = exc
                log.error("%s: write failed, the store refuses writes until reopened: %s", self.path, exc)
                raise StoreFailedError(f"write to {self._active.path} failed: {exc}; reopen the store") from exc
            finally:
                self._pending = bytearray()

    def _check_size(self, payload: int) -> None:
        """Refuse a record whose uncompressed payload is over the limit (so that whatever
        was written decompresses within the limit that reads check)."""
        if payload > self.options.max_record_bytes:
            raise RecordTooLargeError(
                f"record payload of {payload} bytes exceeds max_record_bytes={self.options.max_record_bytes}"
            )

    def _stream_for_write(self, name: str) -> StreamState:
        st = self._streams.get(name)
        if st is None:
            raw = check_stream_name(name)
            st = self._add_stream(self._next_stream_id, name)
            rec = record.frame(RecordType.STREAM_CREATE, 0, st.id, 0, 0, raw)
            self._append_record(rec, RecordType.STREAM_CREATE, 0, st.id, 0, 0)
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
                with self._lock:
                    if not self._closed and self.options.durability is Durability.PROCESS:
                        self._flush_pending()
                    lsn = self._lsn_written
                if not self._closed:
                    self._wait_durable(lsn)

    def create_stream(self, name: str) -> None:
        """Create an empty stream (appending to a new name creates it too). Idempotent."""
        check_stream_name(name)
        with self._lock:
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
        with self._lock:
            self._check_writable()
            st = self._streams.get(stream)
            first = st.next_seq if st is not None else 0
            compress = self.options.compress_events
            rec = record.encode_events(st.id if st is not None else 0, first, n, packed, reference, compress)
            if st is None:
                st = self._stream_for_write(stream)
                rec = record.encode_events(st.id, first, n, packed, reference, compress)
            flags = rec[13]
            self._append_record(rec, RecordType.EVENTS, flags, st.id, n, first)
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
        with self._lock:
            self._check_writable()
            st = self._stream_for_write(stream)
            rec = record.encode_blob(st.id, h, raw_key, packed, reference)
            self._append_record(rec, RecordType.BLOB, rec[13], st.id, 0, h)
            lsn = self._lsn_written
        self._wait_durable(lsn)

    def drop_stream(self, name: str) -> None:
        """Delete a stream with its events and blobs. Space returns at compaction."""
        with self._lock:
            self._check_writable()
            st = self._stream(name)
            rec = record.frame(RecordType.STREAM_DROP, 0, st.id, 0, 0, b"")
            self._append_record(rec, RecordType.STREAM_DROP, 0, st.id, 0, 0)
            self._remove_stream(st.id)
            lsn = self._lsn_written
        self._wait_durable(lsn)

    # ------------------------------------------------------- durability
    def _sync_source(self) -> tuple[int, int]:
        with self._lock:
            self._check_open()
            self._flush_pending()
            return self._active.dup_fd(), self._lsn_written

    def _on_sync_failed(self, exc: OSError) -> StoreFailedError:
        """An fsync failed: what it should have made durable may be lost, and a
        retry could succeed without writing it (the kernel may have dropped the
        dirty pages). Refuse writes until the store is reopened and recovered."""
        with self._lock:
            if self._failed is None:
                self._failed = exc
            path = self._active.path
        log.error("%s: fsync failed, the store refuses writes until reopened: %s", self.path, exc)
        return StoreFailedError(f"fsync of {path} failed: {exc}; appends since the last successful "
                                f"sync may be lost; reopen the store")

    def _on_synced(self, lsn: int) -> None:
        with self._lock:
            end = self._act_lsn_offset + lsn
            if lsn >= self._act_start_lsn and end > self._synced_end:
                self._synced_end = min(end, self._active.size)

    def _write_index(self) -> None:
        """Append the index entries whose records are known to be on disk."""
        if self._act_idx is None:
            return
        n = bisect_left(self._act_entry_offs, self._synced_end)
        upto = n * 32
        if upto > self._idx_written:
            self._act_idx.append(memoryview(self._act_entries)[self._idx_written : upto])
            self._idx_written = upto

    def _background_flush(self) -> None:
        with self._lock:
            if self._closed or self._failed is not None:
                return
            # In "power" mode every writer waits for its own appends: an fsync from
            # here would only join (and resize) their groups.
            behind = (self._lsn_written > self._committer.synced
                      and self.options.durability is not Durability.POWER)
        if behind:
            self._committer.wait(self._lsn_written)
        with self._lock:
            if not self._closed:
                self._write_index()

    def flush(self) -> None:
        """Hand everything appended so far to the OS (survives a process crash)."""
        with self._lock:
            self._check_writable()
            self._flush_pending()

    def sync(self) -> None:
        """Make everything appended so far durable on disk (survives power loss)."""
        with self._lock:
            self._check_writable()
            lsn = self._lsn_written
        self._committer.wait(lsn)
        with self._lock:
            self._write_index()

    def _roll(self) -> None:
        """Seal the active segment and start a new one. Caller holds the lock."""
        old = self._active
        self._flush_pending()
        try:
            old.sync()
        except OSError as exc:
            raise self._on_sync_failed(exc) from exc
        self._committer.mark_synced(self._lsn_written)
        self._synced_end = old.size
        self._write_index()
        new_id = self._manifest.allocate_segment_id()
        new = LogSegment.create(self.path, new_id, self._read_limit)
        new_idx = ActiveIndexFile.create(self.path, new_id)
        self._manifest.segments.append(new_id)
        self._manifest.save(self.path)
        data = SealedIndex.build(old.segment_id, self._act_streams.values(), self._act_drops, old.size,
                                 self._act_creates)
        SealedIndex.write(self.path, old.segment_id, data)
        sidx = SealedIndex.load(self.path, old.segment_id)
        if sidx is None:
            raise CorruptionError("sealed index unreadable right after writing it", self.path)
        assert self._act_idx is not None
        self._act_idx.remove()
        old.writable = False
        self._sealed.append((old, sidx))
        live = [sid for sid in self._act_streams if sid in self._by_id]  # not dropped
        for sid in live:
            self._by_id[sid].clear_active()
        by_id = {d.stream_id: d for d in sidx.streams}
        for sid in live:
            st = self._by_id[sid]
            d = by_id[sid]
            st.nbytes -= d.nbytes  # add_sealed counts them again
            st.add_sealed(old, sidx.ev_seqs, sidx.ev_offs, d.ev_lo, d.ev_n,
                          sidx.bl_hashes, sidx.bl_offs, d.bl_lo, d.bl_n, st.next_seq, d.nbytes)
        self._active = new
        self._act_idx = new_idx
        self._act_entries = bytearray()
        self._act_entry_offs = array("q")
        self._act_creates = {}
        self._act_streams = {}
        self._act_drops = []
        self._idx_written = 0
        self._synced_end = new.size
        self._act_start_lsn = self._lsn_written
        self._act_lsn_offset = new.size - self._lsn_written
        log.info("%s: sealed segment %d, active is now %d", self.path, old.segment_id, new_id)

    # ------------------------------------------------------------ read path
    def _stream(self, name: str) -> StreamState:
        self._check_open()
        if not isinstance(name, str):
            raise InvalidNameError(f"stream name must be a str, not {type(name).__name__}")
        st = self._streams.get(name)
        if st is None:
            raise UnknownStreamError(f"no stream named {name!r} in {self.path}")
        return st

    def _read(self, seg: LogSegment, offset: int) -> RecordView:
        if seg is self._active and offset >= seg.size:
            self._flush_pending()
        return seg.read(offset)

    def get(self, stream: str, seq: int) -> Any:
        """The event ``seq`` of ``stream``."""
        with self._lock:
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
                seg = self._active
                off = st.act_offs[bisect_right(acts, seq) - 1]
                if off >= seg.size:
                    self._flush_pending()
            else:
                seg, keys, offs, lo, hi = st.runs[bisect_right(st.run_starts, seq) - 1]
                off = offs[bisect_right(keys, seq, lo, hi) - 1]
            return seg.event(off, st.id, seq)

    def scan(self, stream: str, start: int = 0, stop: int | None = None) -> Iterator[Any]:
        """Events ``start <= seq < stop`` in order (``stop`` defaults to the end as of the call).

        The i-th value yielded has seq ``start + i``.
        """
        with self._lock:
            self._check_open()
            st = self._stream(stream)
            end = st.next_seq if stop is None else min(stop, st.next_seq)
            start = max(start, 0)
            if start >= end:
                return iter(())
            locs = list(takewhile(lambda loc: loc[2] < end, st.locations_from(start, self._active)))
            if locs and locs[-1][0] is self._active:
                self._flush_pending()
        return self._scan(st, locs, start, end)

    def _scan(self, st: StreamState, locs: list[tuple[LogSegment, int, int]], start: int,
              end: int) -> Iterator[Any]:
        max_bytes = self._read_limit
        for seg, off, first in locs:
            rec = seg.read(off)
            if rec.rtype != RecordType.EVENTS or rec.stream_id != st.id or rec.seq != first:
                raise CorruptionError(f"index points at the wrong record for {st.name!r}", seg.path, off)
            values = rec.events(max_bytes)
            if first < start or first + rec.count > end:
                values = values[max(start - first, 0) : end - first]
            yield from values

    def read_range(self, stream: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """``list(scan(stream, start, stop))``."""
        return list(self.scan(stream, start, stop))

    def get_blob(self, stream: str, key: str) -> Any:
        """The latest value stored under ``key`` in ``stream``."""
        raw_key = _check_key(key)
        h = record.key_hash(raw_key)
        with self._lock:
            self._check_open()
            st = self._stream(stream)
            for seg, off in st.blob_candidates(h, self._active):
                rec = self._read(seg, off)
                if rec.rtype != RecordType.BLOB or rec.stream_id != st.id:
                    raise CorruptionError(f"index points at the wrong record for blob {key!r}", seg.path, off)
                if rec.blob_key() == raw_key:
                    break
            else:
                raise BlobNotFoundError(f"stream {stream!r} has no blob {key!r}")
        return rec.blob_value(self._read_limit)

    def has_blob(self, stream: str, key: str) -> bool:
        try:
            self.get_blob(stream, key)
        except BlobNotFoundError:
            return False
        return True

    def blob_keys(self, stream: str) -> list[str]:
        """Every blob key of the stream (reads one record per stored version)."""
        with self._lock:
            self._check_open()
            st = self._stream(stream)
            keys: dict[str, None] = {}
            locs = [(seg, off) for h in st.blob_hashes() for seg, off in st.blob_candidates(h, self._active)]
            for seg, off in locs:
                keys[self._read(seg, off).blob_key().decode("utf-8")] = None
        return sorted(keys)

    def has_stream(self, name: str) -> bool:
        with self._lock:
            self._check_open()
            return isinstance(name, str) and name in self._streams

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has_stream(name)

    def next_seq(self, stream: str) -> int:
        """The number of events in the stream (the seq the next append gets)."""
        with self._lock:
            self._check_open()
            return self._stream(stream).next_seq

    def stream_bytes(self, name: str) -> int:
        """Bytes of the stream's event and blob records (what ``stream_info`` reports,
        without counting blob keys)."""
        with self._lock:
            return self._stream(name).nbytes

    def stream_info(self, name: str) -> StreamInfo:
        with self._lock:
            self._check_open()
            st = self._stream(name)
            return StreamInfo(st.name, st.next_seq, st.nbytes, len(st.blob_hashes()))

    def streams(self) -> list[StreamInfo]:
        """Every stream with its event count, bytes and blob count, by name."""
        with self._lock:
            self._check_open()
            return [StreamInfo(st.name, st.next_seq, st.nbytes, len(st.blob_hashes()))
                    for st in sorted(self._streams.values(), key=lambda s: s.name)]

    def stats(self) -> StoreStats:
        with self._lock:
            self._check_open()
            segs = [seg for seg, _ in self._sealed] + [self._active]
            disk = sum(s.size for s in segs) + len(self._pending)
            for name in os.listdir(self.path):
                if name.endswith((".idx", ".sidx")) or name == "MANIFEST":
                    disk += os.path.getsize(os.path.join(self.path, name))
            return StoreStats(
                self.path, self.options.durability.value, len(segs), disk, len(self._streams),
                sum(st.next_seq for st in self._streams.values()), self._manifest.generation,
                self._lsn_written, self._committer.synced, self._committer.fsyncs,
            )

    def verify(self) -> VerifyReport:
        """Check every record's checksum and payload; report each bad one.

        After a bad record the walk resumes at the next record the index knows
        of, so one flipped byte is reported once and the rest is still checked.
        """
        report = VerifyReport()
        max_bytes = self._read_limit
        with self._lock:
            self._check_open()
            self._flush_pending() if not self.options.readonly else None
            segs: list[tuple[LogSegment, list[int]]] = [
                (seg, sorted({*idx.ev_offs, *idx.bl_offs})) for seg, idx in self._sealed
            ]
            segs.append((self._active, list(self._act_entry_offs)))
        for seg, known in segs:
            off = SEGMENT_HEADER_SIZE
            end = seg.size
            while off < end:
                try:
                    rec = seg.read(off, end)
                    if rec.rtype == RecordType.EVENTS:
                        rec.events(max_bytes)
                    elif rec.rtype == RecordType.BLOB:
                        rec.blob_key()
                        rec.blob_value(max_bytes)
                    elif rec.rtype == RecordType.STREAM_CREATE:
                        rec.name()
                    report.records += 1
                    off = rec.end
                except CorruptionError as exc:
                    report.problems.append(Problem(seg.path, off, str(exc).split(" (")[0]))
                    i = bisect_left(known, off + 1)
                    if i >= len(known):
                        break
                    off = known[i]
        return report

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Flush, sync, write the index, stop the background thread, release the lock."""
        with self._lock:
            if self._closed:
                return
        if self._flusher is not None:
            self._flusher.stop()
        try:
            if not self.options.readonly and self._failed is None:
                with self._lock:
                    self._flush_pending()
                    try:
                        self._active.sync()
                    except OSError as exc:
                        raise self._on_sync_failed(exc) from exc
                    self._committer.mark_synced(self._lsn_written)
                    self._synced_end = self._active.size
                    self._write_index()
                    if self._act_idx is not None:
                        self._act_idx.sync()
        finally:
            with self._lock:
                self._closed = True
                self._release_files()

    def _release_files(self) -> None:
        self._streams.clear()
        self._by_id.clear()
        for seg, idx in self._sealed:
            idx.close()
            seg.close()
        self._sealed = []
        active = getattr(self, "_active", None)
        if active is not None:
            active.close()
        if self._act_idx is not None:
            self._act_idx.close()
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
    return Store(os.fspath(path), opts)
