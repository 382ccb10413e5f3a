"""Offset indexes: where each record of a segment starts, without reading data.

* ``ActiveIndexFile`` (``<id>.idx``): the active segment's entries in append
  order, one fixed 32-byte entry per record, each with its own checksum. It only
  ever holds entries for data that was already synced, so after power loss it
  never points at bytes that did not reach the disk.
* ``SealedIndex`` (``<id>.sidx``): written once when a segment is sealed. Entries
  are sorted by (stream, seq) for events and (stream, key hash, offset) for
  blobs, stored as columns and memory-mapped, so a lookup is a ``bisect`` over a
  memoryview: no index entry becomes a Python object.

Both are derived data: when missing or damaged they are rebuilt from the segment.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import msgpack
import xxhash

from . import record
from .segment import fsync_dir

log = logging.getLogger(__name__)

INDEX_VERSION = 1
ACTIVE_MAGIC = b"SEGLOGix"
SEALED_MAGIC = b"SEGLOGsx"
# magic 8s | version u16 | kind u16 | reserved u32 | segment id u64 | checksum u64 (xxh3 of bytes 0..24)
ACTIVE_HEADER = struct.Struct("<8sHHIQQ")
# offset u64 | seq or key hash u64 | stream u32 | count u32 | type u8 | flags u8 | reserved u16 | xxh32 u32
ENTRY = struct.Struct("<QQIIBBHI")
ENTRY_SIZE = ENTRY.size  # 32
_ENTRY_BODY = struct.Struct("<QQIIBBH")

# magic | version u16 | flags u16 | reserved u32 | segment id u64 | data end u64 | streams u32 |
# event entries u32 | blob entries u32 | meta bytes u32 | reserved u64 | checksum u64
SEALED_HEADER = struct.Struct("<8sHHIQQIIIIQQ")
SEALED_HEADER_SIZE = SEALED_HEADER.size  # 64
# stream u32 | reserved u32 | event lo u32 | event n u32 | blob lo u32 | blob n u32 |
# first seq u64 | next seq u64 | bytes u64
DIR_ENTRY = struct.Struct("<IIIIIIQQQ")

_LITTLE = sys.byteorder == "little"


def index_name(segment_id: int) -> str:
    return f"{segment_id:020d}.idx"


def sealed_index_name(segment_id: int) -> str:
    return f"{segment_id:020d}.sidx"


class SegmentActivity(Protocol):
    """What one stream wrote to a segment: its events records (seq and offset, in
    file order), its blob records (offsets by key hash, in file order), the seq
    after its last event and the bytes of those records."""

    @property
    def id(self) -> int: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def act_seqs(self) -> array[int]: ...
    @property
    def act_offs(self) -> array[int]: ...
    @property
    def act_blobs(self) -> dict[int, list[int]]: ...
    @property
    def act_nbytes(self) -> int: ...


class Entry(NamedTuple):
    offset: int
    seq: int
    stream_id: int
    events: int
    rtype: int
    flags: int


def pack_entry(offset: int, seq: int, stream_id: int, count: int, rtype: int, flags: int) -> bytes:
    body = _ENTRY_BODY.pack(offset, seq, stream_id, count, rtype, flags, 0)
    return body + xxhash.xxh32_intdigest(body).to_bytes(4, "little")


def parse_entries(data: bytes | bytearray | memoryview) -> list[Entry]:
    return [Entry(*e[:6]) for e in ENTRY.iter_unpack(data)]


class ActiveIndexFile:
    """The append-only index of the active segment."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @staticmethod
    def header(segment_id: int) -> bytes:
        head = struct.pack("<8sHHIQ", ACTIVE_MAGIC, INDEX_VERSION, 0, 0, segment_id)
        return head + record.checksum_of(head).to_bytes(8, "little")

    @classmethod
    def create(cls, directory: str, segment_id: int, entries: bytes = b"") -> ActiveIndexFile:
        """(Re)write the file atomically with ``entries`` and return it open for appending."""
        path = os.path.join(directory, index_name(segment_id))
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, cls.header(segment_id) + entries)
            os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        os.lseek(fd, 0, os.SEEK_END)
        return cls(path, fd)

    @classmethod
    def open_append(cls, directory: str, segment_id: int) -> ActiveIndexFile:
        path = os.path.join(directory, index_name(segment_id))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        return cls(path, fd)

    @staticmethod
    def load(directory: str, segment_id: int) -> tuple[bytes, bool]:
        """Read the entries that pass their checksums.

        Returns ``(entries, clean)``: ``clean`` is False when the file is missing
        or damaged. A damaged tail (power loss mid-write) keeps the good prefix;
        damage before a good entry discards everything (the caller rebuilds).
        """
        path = os.path.join(directory, index_name(segment_id))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b"", False
        hsize = ACTIVE_HEADER.size
        if len(data) < hsize or data[:hsize] != ActiveIndexFile.header(segment_id):
            log.warning("%s: index header damaged; rebuilding from the segment", path)
            return b"", False
        body = memoryview(data)[hsize:]
        whole = len(body) - len(body) % ENTRY_SIZE
        good = 0
        for i in range(0, whole, ENTRY_SIZE):
            (crc,) = struct.unpack_from("<I", body, i + 28)
            if xxhash.xxh32_intdigest(body[i : i + 28]) != crc:
                break
            good = i + ENTRY_SIZE
        clean = good == len(body)
        if good < whole:
            # Good entries after a bad one mean damage, not a torn tail.
            for j in range(good + ENTRY_SIZE, whole, ENTRY_SIZE):
                (crc,) = struct.unpack_from("<I", body, j + 28)
                if xxhash.xxh32_intdigest(body[j : j + 28]) == crc:
                    log.warning("%s: damaged entry at offset %d; rebuilding", path, hsize + good)
                    return b"", False
        if not clean:
            log.warning("%s: discarding damaged index tail at offset %d", path, hsize + good)
        return bytes(body[:good]), clean

    def append(self, entries: bytes | bytearray | memoryview) -> None:
        view = memoryview(entries)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class StreamDir(NamedTuple):
    """One stream's share of a sealed segment."""

    stream_id: int
    ev_lo: int
    ev_n: int
    bl_lo: int
    bl_n: int
    first_seq: int
    next_seq: int
    nbytes: int


class SegmentMeta(NamedTuple):
    creates: dict[int, str]
    drops: list[int]


def _column(mv: memoryview, start: int, n: int) -> Sequence[int]:
    if _LITTLE:
        return mv[start : start + 8 * n].cast("Q")
    col = array("Q")
    col.frombytes(mv[start : start + 8 * n])
    col.byteswap()
    return col


class SealedIndex:
    """The mmap'd, sorted index of a sealed segment."""

    def __init__(self, path: str, segment_id: int, data_end: int, streams: list[StreamDir],
                 meta: SegmentMeta, map_: mmap.mmap | bytes | None, ev_seqs: Sequence[int],
                 ev_offs: Sequence[int], bl_hashes: Sequence[int], bl_offs: Sequence[int]) -> None:
        self.path = path
        self.segment_id = segment_id
        self.data_end = data_end
        self.streams = streams
        self.meta = meta
        self._map = map_
        self.ev_seqs = ev_seqs
        self.ev_offs = ev_offs
        self.bl_hashes = bl_hashes
        self.bl_offs = bl_offs

    @staticmethod
    def build(segment_id: int, streams: Iterable[SegmentActivity], drops: Sequence[int], data_end: int,
              creates: dict[int, str]) -> bytes:
        """Serialize a sealed index from what each stream wrote to the segment, and
        the ids its STREAM_DROP records name (in file order)."""
        dirs: list[bytes] = []
        ev_seqs: array[int] = array("q")
        ev_offs: array[int] = array("q")
        bl_hashes: array[int] = array("Q")
        bl_offs: array[int] = array("q")
        for st in sorted(streams, key=lambda s: s.id):
            seqs, blobs = st.act_seqs, st.act_blobs
            if not seqs and not blobs:
                continue
            first, nxt = (seqs[0], st.next_seq) if seqs else (0, 0)
            ev_lo, bl_lo = len(ev_seqs), len(bl_hashes)
            ev_seqs.extend(seqs)
            ev_offs.extend(st.act_offs)
            for h in sorted(blobs):
                offs = blobs[h]  # in file order
                bl_hashes.extend([h] * len(offs))
                bl_offs.extend(offs)
            dirs.append(DIR_ENTRY.pack(st.id, 0, ev_lo, len(seqs), bl_lo, len(bl_hashes) - bl_lo,
                                       first, nxt, st.act_nbytes))
        meta = msgpack.packb({"creates": creates, "drops": list(drops)}, use_bin_type=True)
        cols = [ev_seqs, ev_offs, bl_hashes, bl_offs]
        if not _LITTLE:
            for c in cols:
                c.byteswap()
        body = b"".join([*dirs, *(c.tobytes() for c in cols), meta])
        head = struct.pack("<8sHHIQQIIIIQ", SEALED_MAGIC, INDEX_VERSION, 0, 0, segment_id, data_end,
                           len(dirs), len(ev_seqs), len(bl_hashes), len(meta), 0)
        checksum = record.checksum_of(head + body)
        return head + checksum.to_bytes(8, "little") + body

    @classmethod
    def write(cls, directory: str, segment_id: int, data: bytes) -> None:
        """Write ``data`` (from :meth:`build`) as the sealed index, atomically."""
        path = os.path.join(directory, sealed_index_name(segment_id))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(directory)

    @classmethod
    def load(cls, directory: str, segment_id: int) -> SealedIndex | None:
        """Map a sealed index; None (and a warning) when it is missing or damaged."""
        path = os.path.join(directory, sealed_index_name(segment_id))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < SEALED_HEADER_SIZE:
                log.warning("%s: sealed index truncated; rebuilding", path)
                return None
            map_ = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        return cls.from_buffer(path, segment_id, map_)

    @classmethod
    def from_buffer(cls, path: str, segment_id: int, map_: Any) -> SealedIndex | None:
        mv = memoryview(map_)
        (magic, version, _f, _r, sid, data_end, n_dirs, n_ev, n_bl, meta_len, _r2, checksum) = \
            SEALED_HEADER.unpack_from(mv, 0)
        expected = SEALED_HEADER_SIZE + n_dirs * DIR_ENTRY.size + 16 * (n_ev + n_bl) + meta_len
        problem = ""
        if magic != SEALED_MAGIC or version != INDEX_VERSION:
            problem = "bad magic or version"
        elif sid != segment_id:
            problem = f"belongs to segment {sid}"
        elif expected != len(mv):
            problem = "size does not match its header"
        else:
            h = xxhash.xxh3_64()
            h.update(mv[:56])
            h.update(mv[64:])
            if h.intdigest() != checksum:
                problem = "checksum mismatch"
        if problem:
            mv.release()
            log.warning("%s: sealed index damaged (%s); rebuilding from the segment", path, problem)
            return None
        pos = SEALED_HEADER_SIZE
        dir_bytes = mv[pos : pos + n_dirs * DIR_ENTRY.size]
        streams = [StreamDir(s, elo, en, blo, bn, fs, ns, nb)
                   for (s, _z, elo, en, blo, bn, fs, ns, nb) in DIR_ENTRY.iter_unpack(dir_bytes)]
        dir_bytes.release()
        pos += n_dirs * DIR_ENTRY.size
        ev_seqs = _column(mv, pos, n_ev)
        ev_offs = _column(mv, pos + 8 * n_ev, n_ev)
        pos += 16 * n_ev
        bl_hashes = _column(mv, pos, n_bl)
        bl_offs = _column(mv, pos + 8 * n_bl, n_bl)
        pos += 16 * n_bl
        raw = msgpack.unpackb(mv[pos : pos + meta_len], raw=False, strict_map_key=False)
        meta = SegmentMeta({int(k): str(v) for k, v in raw["creates"].items()}, [int(d) for d in raw["drops"]])
        return cls(path, segment_id, data_end, streams, meta, map_, ev_seqs, ev_offs, bl_hashes, bl_offs)

    def close(self) -> None:
        for col in (self.ev_seqs, self.ev_offs, self.bl_hashes, self.bl_offs):
            if isinstance(col, memoryview):
                col.release()
        if isinstance(self._map, mmap.mmap):
            with contextlib.suppress(BufferError):
                self._map.close()
        self._map = None
