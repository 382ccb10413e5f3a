"""LogSegment: one segment file, its header, appends, mmap'd reads and scans."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any

from . import record
from .errors import CorruptionError
from .record import RecordView, TornRecord

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"SEGLOGsg"
# magic 8s | version u16 | flags u16 | reserved u32 | segment id u64 | checksum u64 (xxh3 of bytes 0..24)
SEGMENT_HEADER = struct.Struct("<8sHHIQQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32


_VERIFIED_LIMIT = 1 << 20


def segment_name(segment_id: int) -> str:
    return f"{segment_id:020d}.seg"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogSegment:
    """A segment file. Writable while active; sealed segments are only read.

    ``size`` counts the bytes handed to the OS. Reads go through an mmap that
    is widened on demand as the active segment grows.
    """

    def __init__(self, path: str, segment_id: int, fd: int, size: int, writable: bool,
                 max_record_bytes: int) -> None:
        self.path = path
        self.segment_id = segment_id
        self._fd = fd
        self.size = size
        self.writable = writable
        self.max_record_bytes = max_record_bytes
        self._map: mmap.mmap | None = None
        self._mapped = 0
        # Offsets of records whose checksum was verified since open. Records
        # never change once written, so each is verified once (like a block
        # cache), not on every point read.
        self._verified: set[int] = set()

    # -- life cycle -----------------------------------------------------------
    @classmethod
    def create(cls, directory: str, segment_id: int, max_record_bytes: int) -> LogSegment:
        path = os.path.join(directory, segment_name(segment_id))
        head = struct.pack("<8sHHIQ", SEGMENT_MAGIC, FORMAT_VERSION, 0, 0, segment_id)
        header = head + record.checksum_of(head).to_bytes(8, "little")
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, header)
            os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        fsync_dir(directory)
        return cls(path, segment_id, fd, SEGMENT_HEADER_SIZE, True, max_record_bytes)

    @classmethod
    def open(cls, directory: str, segment_id: int, writable: bool, max_record_bytes: int) -> LogSegment:
        path = os.path.join(directory, segment_name(segment_id))
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError as exc:
            raise CorruptionError("segment listed in the manifest is missing", path) from exc
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
            if len(head) < SEGMENT_HEADER_SIZE:
                raise CorruptionError("segment shorter than its header", path, 0)
            magic, version, _flags, _res, sid, checksum = SEGMENT_HEADER.unpack(head)
            if magic != SEGMENT_MAGIC:
                raise CorruptionError("not a seglog segment (bad magic)", path, 0)
            if record.checksum_of(head[:24]) != checksum:
                raise CorruptionError("segment header checksum mismatch", path, 0)
            if version != FORMAT_VERSION:
                raise CorruptionError(f"unsupported segment format version {version}", path, 0)
            if sid != segment_id:
                raise CorruptionError(f"segment header says id {sid}", path, 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, segment_id, fd, size, writable, max_record_bytes)

    def close(self) -> None:
        if self._map is not None:
            # A reader may still hold a view; the GC unmaps it then.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
            self._mapped = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing --------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hand ``data`` to the OS at the end of the file (survives a process crash)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self.size)
            self.size += n
            view = view[n:]

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def dup_fd(self) -> int:
        """A duplicate descriptor, so a sync may run while the segment is rolled."""
        return os.dup(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size
        self._verified.clear()
        if self._mapped > size:
            self._drop_map()

    # -- reading --------------------------------------------------------------
    def _drop_map(self) -> None:
        # Not closed: RecordViews handed out earlier may still point into it.
        self._map = None
        self._mapped = 0

    def buffer(self, end: int) -> Any:
        """An mmap of the file covering at least ``end`` bytes."""
        if end > self._mapped:
            if end > self.size:
                raise CorruptionError(f"read past the end of the segment ({self.size} bytes)", self.path, end)
            self._map = mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ)
            self._mapped = self.size
        return self._map

    def read(self, offset: int, limit: int | None = None) -> RecordView:
        """Read and verify the record at ``offset``."""
        end = self.size if limit is None else limit
        buf = self.buffer(end)
        try:
            return record.read_record(buf, offset, end, self.max_record_bytes, self.path)
        except TornRecord:
            raise CorruptionError("record runs past the end of the segment", self.path, offset) from None

    def verified_buffer(self, offset: int) -> Any:
        """The mapped buffer, after verifying the record at ``offset`` once."""
        if offset not in self._verified:
            self.read(offset)
            if len(self._verified) >= _VERIFIED_LIMIT:
                self._verified.clear()
            self._verified.add(offset)
        return self._map

    def scan(self, start: int, end: int | None = None) -> Iterator[RecordView]:
        """Yield verified records from ``start``; stop quietly at a torn tail.

        A record that fails its checksum raises :class:`CorruptionError`.
        After the iterator is exhausted, :attr:`scan_end` is the end of the last
        whole record.
        """
        limit = self.size if end is None else end
        self.scan_end = start
        if limit <= start:
            return
        buf = self.buffer(limit)
        off = start
        while off < limit:
            try:
                rec = record.read_record(buf, off, limit, self.max_record_bytes, self.path)
            except TornRecord:
                return
            off = rec.end
            self.scan_end = off
            yield rec

    scan_end: int = 0

    def recover_tail(self, start: int) -> tuple[list[RecordView], int]:
        """Scan the unindexed tail from ``start``.

        Returns the whole records and the end of valid data. A bad record is
        treated as a torn write (the crash interrupted it) only when nothing
        valid follows it; a bad record followed by a valid one is corruption.
        """
        records: list[RecordView] = []
        off = start
        limit = self.size
        buf = self.buffer(limit) if limit > start else None
        while off < limit:
            try:
                rec = record.read_record(buf, off, limit, self.max_record_bytes, self.path)
            except TornRecord:
                break
            except CorruptionError:
                if self._valid_record_after(buf, off, limit):
                    raise
                break
            records.append(rec)
            off = rec.end
        if off < limit:
            log.warning("%s: discarding %d bytes of torn tail at offset %d", self.path, limit - off, off)
        return records, off

    def _valid_record_after(self, buf: Any, off: int, limit: int) -> bool:
        """Is there a whole, valid record right after the (bad) one at ``off``?"""
        try:
            length = struct.unpack_from("<I", buf, off + 8)[0]
        except struct.error:
            return False
        nxt = off + record.HEADER_SIZE + length
        if length > self.max_record_bytes or nxt >= limit:
            return False
        try:
            record.read_record(buf, nxt, limit, self.max_record_bytes, self.path)
        except (TornRecord, CorruptionError):
            return False
        return True
