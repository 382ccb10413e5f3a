"""SealedIndex (``<id>.sidx``): the sorted, memory-mapped index of a sealed segment.

Written once, atomically, when a segment is sealed. Entries are sorted by
(stream, seq) for events and (stream, key hash, offset) for blobs, stored as
columns and mapped, so a lookup is a ``bisect`` over a memoryview and no
index entry becomes a Python object. Derived data: when missing or damaged it
is rebuilt from the segment. Immutable once loaded, so it may be read from any
thread.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import msgpack
import xxhash

from . import fileio
from .format import (
    FORMAT_VERSION,
    SEALED_CHECKSUM_AT,
    SEALED_DIR_ENTRY,
    SEALED_HEADER,
    SEALED_HEADER_BODY,
    SEALED_HEADER_SIZE,
    SEALED_INDEX_EXT,
    SEALED_INDEX_MAGIC,
    checksum_of,
    file_name,
)

log = logging.getLogger(__name__)

DIR_ENTRY = SEALED_DIR_ENTRY
_LITTLE = sys.byteorder == "little"


def sealed_index_path(directory: str, segment_id: int) -> str:
    return os.path.join(directory, file_name(segment_id, SEALED_INDEX_EXT))


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

    def __init__(
        self,
        path: str,
        segment_id: int,
        data_end: int,
        streams: list[StreamDir],
        meta: SegmentMeta,
        map_: mmap.mmap | bytes | None,
        ev_seqs: Sequence[int],
        ev_offs: Sequence[int],
        bl_hashes: Sequence[int],
        bl_offs: Sequence[int],
    ) -> None:
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
    def build(
        segment_id: int,
        streams: Iterable[SegmentActivity],
        drops: Sequence[int],
        data_end: int,
        creates: dict[int, str],
    ) -> bytes:
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
            dirs.append(
                DIR_ENTRY.pack(st.id, 0, ev_lo, len(seqs), bl_lo, len(bl_hashes) - bl_lo, first, nxt, st.act_nbytes)
            )
        meta = msgpack.packb({"creates": creates, "drops": list(drops)}, use_bin_type=True)
        cols = [ev_seqs, ev_offs, bl_hashes, bl_offs]
        if not _LITTLE:
            for c in cols:
                c.byteswap()
        body = b"".join([*dirs, *(c.tobytes() for c in cols), meta])
        head = SEALED_HEADER_BODY.pack(
            SEALED_INDEX_MAGIC,
            FORMAT_VERSION,
            0,
            0,
            segment_id,
            data_end,
            len(dirs),
            len(ev_seqs),
            len(bl_hashes),
            len(meta),
            0,
        )
        checksum = checksum_of(head + body)
        return head + checksum.to_bytes(8, "little") + body

    @classmethod
    def write(cls, directory: str, segment_id: int, data: bytes) -> None:
        """Write ``data`` (from :meth:`build`) as the sealed index, atomically."""
        fileio.atomic_write(sealed_index_path(directory, segment_id), [data])

    @classmethod
    def load(cls, directory: str, segment_id: int) -> SealedIndex | None:
        """Map a sealed index; None (and a warning) when it is missing or damaged."""
        path = sealed_index_path(directory, segment_id)
        try:
            map_ = fileio.map_readonly(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: sealed index unreadable (%s); rebuilding", path, exc)
            return None
        if map_ is None:
            return None
        if len(map_) < SEALED_HEADER_SIZE:
            log.warning("%s: sealed index truncated; rebuilding", path)
            map_.close()
            return None
        return cls.from_buffer(path, segment_id, map_)

    @classmethod
    def from_buffer(cls, path: str, segment_id: int, map_: Any) -> SealedIndex | None:
        mv = memoryview(map_)
        (magic, version, _f, _r, sid, data_end, n_dirs, n_ev, n_bl, meta_len, _r2, checksum) = (
            SEALED_HEADER.unpack_from(mv, 0)
        )
        expected = SEALED_HEADER_SIZE + n_dirs * DIR_ENTRY.size + 16 * (n_ev + n_bl) + meta_len
        problem = ""
        if magic != SEALED_INDEX_MAGIC or version != FORMAT_VERSION:
            problem = "bad magic or version"
        elif sid != segment_id:
            problem = f"belongs to segment {sid}"
        elif expected != len(mv):
            problem = "size does not match its header"
        else:
            h = xxhash.xxh3_64()
            h.update(mv[:SEALED_CHECKSUM_AT])
            h.update(mv[SEALED_HEADER_SIZE:])
            if h.intdigest() != checksum:
                problem = "checksum mismatch"
        if problem:
            mv.release()
            log.warning("%s: sealed index damaged (%s); rebuilding from the segment", path, problem)
            return None
        pos = SEALED_HEADER_SIZE
        dir_bytes = mv[pos : pos + n_dirs * DIR_ENTRY.size]
        streams = [
            StreamDir(s, elo, en, blo, bn, fs, ns, nb)
            for (s, _z, elo, en, blo, bn, fs, ns, nb) in DIR_ENTRY.iter_unpack(dir_bytes)
        ]
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
