"""ActiveIndexFile (``<id>.idx``): the active segment's offset index.

One fixed 32-byte entry per record, in append order, each with its own
checksum. It only ever holds entries of records that were already synced, so
after power loss it never points at bytes that did not reach the disk, and
every entry it holds proves its record was durable. Derived data: missing or
damaged, it is rebuilt from the segment. Not thread-safe: its owner (the
ActiveSegment) serializes calls.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from . import fileio
from .format import (
    ACTIVE_INDEX_EXT,
    ACTIVE_INDEX_HEADER,
    ACTIVE_INDEX_MAGIC,
    INDEX_ENTRY,
    INDEX_ENTRY_BODY,
    INDEX_ENTRY_SIZE,
    entry_checksum_of,
    file_name,
    header_with_checksum,
)

log = logging.getLogger(__name__)


class Entry(NamedTuple):
    offset: int
    seq: int
    stream_id: int
    events: int
    rtype: int
    flags: int


def index_path(directory: str, segment_id: int) -> str:
    return os.path.join(directory, file_name(segment_id, ACTIVE_INDEX_EXT))


def pack_entry(offset: int, seq: int, stream_id: int, count: int, rtype: int, flags: int) -> bytes:
    body = INDEX_ENTRY_BODY.pack(offset, seq, stream_id, count, rtype, flags, 0)
    return body + entry_checksum_of(body).to_bytes(4, "little")


def parse_entries(data: bytes | bytearray | memoryview) -> list[Entry]:
    return [Entry(*e[:6]) for e in INDEX_ENTRY.iter_unpack(data)]


def _entry_ok(body: memoryview, i: int) -> bool:
    return entry_checksum_of(body[i : i + 28]) == int.from_bytes(body[i + 28 : i + 32], "little")


class ActiveIndexFile:
    """The append-only index of the active segment."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, directory: str, segment_id: int, entries: bytes = b"") -> ActiveIndexFile:
        """(Re)write the file atomically with ``entries`` and return it open for appending."""
        path = index_path(directory, segment_id)
        header = header_with_checksum(ACTIVE_INDEX_MAGIC, 0, segment_id)
        fd = fileio.atomic_write(path, [header, entries], keep_open=True)
        return cls(path, fd)

    @classmethod
    def open_append(cls, directory: str, segment_id: int) -> ActiveIndexFile:
        path = index_path(directory, segment_id)
        return cls(path, fileio.open(path, os.O_WRONLY | os.O_APPEND))

    @staticmethod
    def load(directory: str, segment_id: int, limit: int) -> tuple[bytes, bool]:
        """Read the entries that pass their checksums (a file over ``limit`` bytes
        counts as damaged).

        Returns ``(entries, clean)``: ``clean`` is False when the file is missing
        or damaged. A damaged tail (power loss mid-write) keeps the good prefix;
        damage before a good entry discards everything (the caller rebuilds).
        """
        path = index_path(directory, segment_id)
        try:
            data = fileio.read_file(path, limit)
        except (OverflowError, IsADirectoryError):
            data = b""
        if data is None:
            return b"", False
        hsize = ACTIVE_INDEX_HEADER.size
        if len(data) < hsize or data[:hsize] != header_with_checksum(ACTIVE_INDEX_MAGIC, 0, segment_id):
            log.warning("%s: index header damaged; rebuilding from the segment", path)
            return b"", False
        body = memoryview(data)[hsize:]
        whole = len(body) - len(body) % INDEX_ENTRY_SIZE
        good = 0
        for i in range(0, whole, INDEX_ENTRY_SIZE):
            if not _entry_ok(body, i):
                break
            good = i + INDEX_ENTRY_SIZE
        clean = good == len(body)
        if good < whole and any(_entry_ok(body, j) for j in range(good + INDEX_ENTRY_SIZE, whole, INDEX_ENTRY_SIZE)):
            # Good entries after a bad one mean damage, not a torn tail.
            log.warning("%s: damaged entry at offset %d; rebuilding", path, hsize + good)
            return b"", False
        if not clean:
            log.warning("%s: discarding damaged index tail at offset %d", path, hsize + good)
        return bytes(body[:good]), clean

    def append(self, entries: bytes | bytearray | memoryview) -> None:
        fileio.write_all(self._fd, entries)

    def sync(self) -> None:
        fileio.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fileio.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        fileio.remove(self.path)
