"""LogSegment: one segment file, its header, appends, reads and scans.

Records are read with ``pread``: scans in 1 MiB windows, and the first read of
a record (which verifies its checksum). Point reads of an event, once its
record is verified, slice a read-only map of the segment (madvised random, so
the kernel reads no more than the pages touched): a system call per read is
most of a point read's cost. A sealed segment is mapped whole. The writer's
active segment is mapped up to what was handed to the OS, and mapped again
each time it grew by ``_REMAP_STEP``; reads past the map's end ``pread``. (Only
the writer maps an active segment: it alone could truncate one, and only when
it opens the store, before any map. A map never covers bytes past the end of
the file, so no read of it faults.) The pages such reads touch
count in the process's resident memory until the kernel needs them back (they
are clean file pages); scans never map, so reading a whole store does not grow
it. The offset indexes are mapped.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
from array import array
from collections.abc import Iterator
from typing import Any

from ..errors import CorruptionError, TruncatedRecordError
from . import codec, fileio, record
from .format import (
    FORMAT_VERSION,
    RECORD_SHAPE,
    RECORD_SHAPE_OFFSET,
    SEGMENT_EXT,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    U32,
    checksum_of,
    file_name,
    header_with_checksum,
)
from .record import FLAG_LZ4, HEADER_SIZE, RecordView, TornRecord

log = logging.getLogger(__name__)

_SCAN_WINDOW = 1 << 20
# Verified EVENTS records whose header fields and offset table are kept, per segment.
_RECORD_CACHE_LIMIT = 1 << 16
# The writer's active segment is mapped again once it grew this much past its map.
_REMAP_STEP = 1 << 20
_U32 = U32
_fast_unpack = codec.fast_unpack


def segment_path(directory: str, segment_id: int) -> str:
    return os.path.join(directory, file_name(segment_id, SEGMENT_EXT))


class LogSegment:
    """A segment file. Writable while active; sealed segments are only read.

    ``size`` counts the bytes handed to the OS (for a read-only open of an
    active segment: the end of its whole records).
    """

    def __init__(self, path: str, segment_id: int, fd: int, size: int, writable: bool, max_record_bytes: int) -> None:
        self.path = path
        self.segment_id = segment_id
        self._fd = fd
        self.size = size
        self.writable = writable
        #: Sealed: never written again, so point reads may map it (see ``event``).
        self.sealed = False
        #: A read-only map of the file's first ``len(mapped)`` bytes, or None. A map
        #: replaced by a longer one is not closed: a reader may be slicing it, and it
        #: closes when the last reference goes.
        self.mapped: mmap.mmap | None = None
        self._unmappable = False
        self.max_record_bytes = max_record_bytes
        #: offset -> (stream id, first seq, count, flags, event bounds, payload's file offset)
        #: of verified EVENTS records: records never change once written, so each is
        #: verified once (like a block cache), not on every point read.
        self.verified: dict[int, tuple[int, int, int, int, array[int], int]] = {}
        # offset -> decompressed view of compressed EVENTS records, the last few.
        self._expanded: dict[int, RecordView] = {}

    # -- life cycle -----------------------------------------------------------
    @classmethod
    def create(cls, directory: str, segment_id: int, max_record_bytes: int) -> LogSegment:
        path = segment_path(directory, segment_id)
        fd = fileio.atomic_write(path, [header_with_checksum(SEGMENT_MAGIC, 0, segment_id)], keep_open=True)
        return cls(path, segment_id, fd, SEGMENT_HEADER_SIZE, True, max_record_bytes)

    @classmethod
    def open(cls, directory: str, segment_id: int, writable: bool, max_record_bytes: int) -> LogSegment:
        path = segment_path(directory, segment_id)
        try:
            fd = fileio.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CorruptionError("segment listed in the manifest is missing", path) from exc
        except IsADirectoryError as exc:
            raise CorruptionError("a directory stands where a segment should be", path) from exc
        try:
            st = fileio.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CorruptionError("not a regular file where a segment should be", path)
            size = st.st_size
            head = fileio.pread(fd, SEGMENT_HEADER_SIZE, 0)
            if len(head) < SEGMENT_HEADER_SIZE:
                raise CorruptionError("segment shorter than its header", path, 0)
            magic, version, _flags, _res, sid, checksum = SEGMENT_HEADER.unpack(head)
            if magic != SEGMENT_MAGIC:
                raise CorruptionError("not a seglog segment (bad magic)", path, 0)
            if checksum_of(head[:24]) != checksum:
                raise CorruptionError("segment header checksum mismatch", path, 0)
            if version != FORMAT_VERSION:
                raise CorruptionError(f"unsupported segment format version {version}", path, 0)
            if sid != segment_id:
                raise CorruptionError(f"segment header says id {sid}", path, 0)
        except BaseException:
            fileio.close(fd)
            raise
        return cls(path, segment_id, fd, size, writable, max_record_bytes)

    def close(self) -> None:
        self.verified.clear()
        if self.mapped is not None:
            with contextlib.suppress(BufferError):
                self.mapped.close()
            self.mapped = None
        if self._fd >= 0:
            fileio.close(self._fd)
            self._fd = -1

    # -- writing --------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hand ``data`` to the OS at the end of the file (survives a process crash)."""
        view = memoryview(data)
        while view:
            n = fileio.pwrite(self._fd, view, self.size)
            self.size += n
            view = view[n:]

    def sync(self) -> None:
        fileio.fdatasync(self._fd)

    def dup_fd(self) -> int:
        """A duplicate descriptor, so a sync may run while the segment is rolled."""
        return fileio.dup(self._fd)

    def truncate(self, size: int) -> None:
        fileio.ftruncate(self._fd, size)
        fileio.fsync(self._fd)
        self.size = size
        self.verified.clear()
        self._expanded.clear()

    # -- reading --------------------------------------------------------------
    def pread(self, length: int, offset: int) -> bytes:
        data = fileio.pread(self._fd, length, offset)
        if len(data) != length:
            raise CorruptionError(f"read of {length} bytes past the end of the segment", self.path, offset)
        return data

    def read(self, offset: int, limit: int | None = None) -> RecordView:
        """Read and verify the record at ``offset`` (which must end before ``limit``)."""
        end = self.size if limit is None else limit
        if offset + HEADER_SIZE > end:
            raise TruncatedRecordError("record header runs past the end of the segment", self.path, offset)
        head = self.pread(HEADER_SIZE, offset)
        (length,) = _U32.unpack_from(head, 8)
        if length > self.max_record_bytes:
            raise CorruptionError(
                f"record length {length} exceeds the limit {self.max_record_bytes}", self.path, offset
            )
        if offset + HEADER_SIZE + length > end:
            raise TruncatedRecordError("record runs past the end of the segment", self.path, offset)
        data = head + self.pread(length, offset + HEADER_SIZE)
        try:
            return record.read_record(data, 0, len(data), self.max_record_bytes, self.path, offset)
        except TornRecord:  # cannot happen: the length was checked above
            raise CorruptionError("record runs past the end of the segment", self.path, offset) from None

    def event(self, offset: int, stream_id: int, seq: int) -> Any:
        """Decode event ``seq`` of ``stream_id`` from the EVENTS record at ``offset``:
        the point-read path. The first read of a record reads and verifies it whole;
        later ones slice a map of the segment (or ``pread`` the event)."""
        info = self.verified.get(offset)
        rec = None
        if info is None:
            info, rec = self._event_info(offset)
        sid, first, count, flags, bounds, region = info
        i = seq - first
        if sid != stream_id or not 0 <= i < count:
            raise CorruptionError(
                f"index points at the wrong record for stream {stream_id} seq {seq}", self.path, offset
            )
        if rec is not None:
            # The first read of a record reads it whole to verify it: decode from those
            # bytes. Only later reads touch the map, so reads spread over a store once
            # (a process that looks at every stream) do not fill its resident memory
            # with mapped pages (a touch maps the pages around it too).
            if flags:
                return rec.event(i, self.max_record_bytes)
            try:
                return _fast_unpack(rec.payload()[bounds[i] : bounds[i + 1]])
            except Exception as exc:
                raise CorruptionError(f"event {i} does not decode: {exc}", self.path, offset) from exc
        if flags:  # compressed, or needs the reference decoder: the general path
            if flags & FLAG_LZ4:
                return self.expanded(offset).event(i, self.max_record_bytes)
            return self.read(offset).event(i, self.max_record_bytes)
        start = region + bounds[i]
        end = region + bounds[i + 1]
        m = self.mapped
        if m is None or end > len(m):
            m = self._map_now(end)
        try:
            if m is not None:
                return _fast_unpack(m[start:end])
            return _fast_unpack(fileio.pread(self._fd, end - start, start))
        except Exception as exc:
            raise CorruptionError(f"event {i} does not decode: {exc}", self.path, offset) from exc

    def _map_now(self, end: int) -> mmap.mmap | None:
        """A map that covers ``end``, made now if the segment may be mapped (see the
        module's docstring), or None: then the read is a ``pread``. Point reads slice
        it (no system call per read; the kernel is told reads are random, so it does
        not read ahead). Scans and first reads of a record (which verify its
        checksum) use pread."""
        size = self.size
        if self._unmappable or end > size:
            return None
        m = self.mapped  # another thread may have mapped it meanwhile
        mapped = 0 if m is None else len(m)
        if end <= mapped:
            return m
        if not (self.sealed or (self.writable and size - mapped >= _REMAP_STEP)):
            return None
        try:
            m = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            self._unmappable = True  # an empty or odd file: pread it is
            return None
        if hasattr(m, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            with contextlib.suppress(OSError):
                m.madvise(mmap.MADV_RANDOM)
        self.mapped = m
        return m

    def _event_info(self, offset: int) -> tuple[tuple[int, int, int, int, array[int], int], RecordView]:
        """Read and verify an EVENTS record once; keep what point reads need. Returns
        that and the record."""
        rec = self.read(offset)
        if rec.rtype != record.RecordType.EVENTS:
            raise CorruptionError(f"index points at a record of type {rec.rtype}, not events", self.path, offset)
        # Compressed records are decompressed per read (see expanded()); no bounds needed.
        bounds = array("I") if rec.flags & FLAG_LZ4 else rec.bounds(self.max_record_bytes)
        info = (rec.stream_id, rec.seq, rec.count, rec.flags, bounds, offset + HEADER_SIZE)
        if len(self.verified) >= _RECORD_CACHE_LIMIT:
            self.verified.clear()
        self.verified[offset] = info
        return info, rec

    def expanded(self, offset: int) -> RecordView:
        """The compressed EVENTS record at ``offset``, decompressed (the last few are kept)."""
        view = self._expanded.get(offset)
        if view is None:
            view = self.read(offset).expanded(self.max_record_bytes)
            if len(self._expanded) >= 8:
                self._expanded.pop(next(iter(self._expanded)))
            self._expanded[offset] = view
        return view

    def scan(self, start: int, end: int | None = None) -> Iterator[RecordView]:
        """Yield verified records from ``start``; stop quietly at a torn tail.

        A record that fails its checksum raises :class:`CorruptionError`.
        After the iterator is exhausted, :attr:`scan_end` is the end of the last
        whole record.
        """
        limit = self.size if end is None else end
        self.scan_end = start
        off = start
        buf, buf_start = b"", start
        while off < limit:
            rel = off - buf_start
            if rel + HEADER_SIZE > len(buf):
                buf, buf_start, rel = self._window(off, HEADER_SIZE, limit), off, 0
            if rel + HEADER_SIZE <= len(buf):
                (length,) = _U32.unpack_from(buf, rel + 8)
                need = HEADER_SIZE + min(length, self.max_record_bytes + 1)
                if rel + need > len(buf) and off + need <= limit:
                    buf, buf_start, rel = self._window(off, need, limit), off, 0
            try:
                rec = record.read_record(buf, rel, len(buf), self.max_record_bytes, self.path, off)
            except TornRecord:
                return
            off = rec.end
            self.scan_end = off
            yield rec

    scan_end: int = 0

    def _window(self, off: int, need: int, limit: int) -> bytes:
        return fileio.pread(self._fd, min(max(need, _SCAN_WINDOW), limit - off), off)

    def refresh_size(self) -> None:
        """Read-only follower: take the file's current size (a writer appends to it)."""
        self.size = fileio.file_size(self._fd)

    def recover_tail(self, start: int, quiet: bool = False) -> tuple[list[RecordView], int]:
        """Scan the unindexed tail from ``start``.

        Returns the whole records and the end of valid data. A bad record is
        treated as a torn write (the crash interrupted it) only when nothing
        valid follows it; a bad record followed by a valid one is corruption.
        """
        records: list[RecordView] = []
        off = start
        limit = self.size
        scanner = self.scan(start, limit)
        while True:
            try:
                rec = next(scanner)
            except StopIteration:
                off = self.scan_end
                break
            except CorruptionError:
                off = self.scan_end
                if self._valid_record_after(off, limit):
                    raise
                break
            records.append(rec)
        if off < limit and not quiet:
            log.warning("%s: discarding %d bytes of torn tail at offset %d", self.path, limit - off, off)
        return records, off

    def _valid_record_after(self, off: int, limit: int) -> bool:
        """Is there a whole, valid record anywhere after the bad one at ``off``?

        A torn write leaves nothing valid behind it; damage in the middle of the
        data (a flipped length field included) does. Candidates are found by
        their header's shape (type 1-4, reserved bytes zero) and confirmed by
        their checksum.
        """
        data = fileio.pread(self._fd, limit - off - 1, off + 1) if limit > off + 1 else b""
        for m in RECORD_SHAPE.finditer(data):
            start = m.start() - RECORD_SHAPE_OFFSET
            if start < 0:
                continue
            try:
                record.read_record(data, start, len(data), self.max_record_bytes, self.path)
            except (TornRecord, CorruptionError):
                continue
            return True
        return False
