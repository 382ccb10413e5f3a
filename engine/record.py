"""Record framing: a fixed 32-byte header, a checksum, and typed payloads.

See FORMAT.md for the byte layout. Every function here works on bytes or a
buffer (an mmap) and an offset; nothing here touches files.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from itertools import accumulate
from typing import Any

import msgpack
import xxhash

from . import codec
from .errors import CorruptionError

# checksum u64 | length u32 | type u8 | flags u8 | reserved u16 | stream u32 | count u32 | seq u64
HEADER = struct.Struct("<QIBBHIIQ")
HEADER_SIZE = HEADER.size  # 32

# An EVENTS payload: u32 end offsets (one per event), then a msgpack array of the events.
ARRAY_HEADER = struct.Struct(">BI")  # msgpack array32: 0xdd + big-endian count
EVENT_COMPRESSED = 0x8000_0000  # high bit of an end offset: that event is an lz4 bin
END_MASK = 0x7FFF_FFFF
_U16 = struct.Struct("<H")

FLAG_LZ4 = 0x01  # BLOB: the value is lz4-compressed
FLAG_EVENT_LZ4 = 0x02  # EVENTS: at least one event is lz4-compressed

MAX_KEY_BYTES = 1024


class RecordType(IntEnum):
    EVENTS = 1
    BLOB = 2
    STREAM_CREATE = 3
    STREAM_DROP = 4


_VALID_TYPES = frozenset(int(t) for t in RecordType)

checksum_of = xxhash.xxh3_64_intdigest


def frame(rtype: int, flags: int, stream_id: int, count: int, seq: int, payload: bytes) -> bytes:
    """Return header + payload with the checksum filled in."""
    body = HEADER.pack(0, len(payload), rtype, flags, 0, stream_id, count, seq)[8:] + payload
    return checksum_of(body).to_bytes(8, "little") + body


def encode_events(stream_id: int, first_seq: int, packed: list[bytes]) -> bytes:
    """Frame already-packed events as one EVENTS record.

    Large events that compress well are stored as an lz4 ``bin`` and flagged in
    the offset table, so a point read never decompresses more than its event.
    """
    flags = 0
    marks: list[int] = []
    items = packed
    if any(len(p) >= codec.COMPRESS_MIN_BYTES for p in packed):
        items = []
        for p in packed:
            small = codec.maybe_compress(p) if len(p) >= codec.COMPRESS_MIN_BYTES else None
            if small is None:
                items.append(p)
                marks.append(0)
            else:
                items.append(codec.pack(small))
                marks.append(EVENT_COMPRESSED)
                flags |= FLAG_EVENT_LZ4
    n = len(items)
    ends = list(accumulate(map(len, items), initial=ARRAY_HEADER.size))[1:]
    if flags:
        ends = [e | m for e, m in zip(ends, marks, strict=False)]
    table = struct.pack(f"<{n}I", *ends)
    payload = b"".join((table, ARRAY_HEADER.pack(0xDD, n), *items))
    return frame(RecordType.EVENTS, flags, stream_id, n, first_seq, payload)


def encode_blob(stream_id: int, key_hash: int, key: bytes, value: bytes) -> bytes:
    small = codec.maybe_compress(value)
    flags = 0
    if small is not None:
        value, flags = small, FLAG_LZ4
    payload = b"".join((_U16.pack(len(key)), key, value))
    return frame(RecordType.BLOB, flags, stream_id, 0, key_hash, payload)


def key_hash(key: bytes) -> int:
    return checksum_of(key)


class RecordView:
    """A verified record inside a buffer: header fields plus the payload bounds."""

    __slots__ = ("buf", "count", "flags", "length", "offset", "path", "rtype", "seq", "stream_id")

    def __init__(
        self, buf: Any, offset: int, length: int, rtype: int, flags: int,
        stream_id: int, count: int, seq: int, path: str,
    ) -> None:
        self.buf = buf
        self.offset = offset
        self.length = length
        self.rtype = rtype
        self.flags = flags
        self.stream_id = stream_id
        self.count = count
        self.seq = seq
        self.path = path

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + self.length

    def payload(self) -> memoryview:
        start = self.offset + HEADER_SIZE
        return memoryview(self.buf)[start : start + self.length]

    # -- EVENTS -------------------------------------------------------------
    def event(self, index: int, max_bytes: int) -> Any:
        """Decode the event at position ``index`` of this EVENTS record."""
        p = self.offset + HEADER_SIZE
        n = self.count
        region = p + 4 * n
        raw_end = struct.unpack_from("<I", self.buf, p + 4 * index)[0]
        start = ARRAY_HEADER.size if index == 0 else struct.unpack_from("<I", self.buf, p + 4 * index - 4)[0] & END_MASK
        end = raw_end & END_MASK
        if not (ARRAY_HEADER.size <= start <= end <= self.length - 4 * n):
            raise CorruptionError(f"event {index} has an offset outside its record", self.path, self.offset)
        data = memoryview(self.buf)[region + start : region + end]
        try:
            value = codec.unpack(data)
            if raw_end & EVENT_COMPRESSED:
                value = codec.unpack(codec.decompress(value, max_bytes, self.path, self.offset))
        except CorruptionError:
            raise
        except Exception as exc:
            raise CorruptionError(f"event {index} does not decode: {exc}", self.path, self.offset) from exc
        return value

    def events(self, max_bytes: int) -> list[Any]:
        """Decode all events of this EVENTS record in one msgpack call."""
        n = self.count
        region = self.offset + HEADER_SIZE + 4 * n
        data = memoryview(self.buf)[region : self.offset + HEADER_SIZE + self.length]
        try:
            values = codec.unpack(data)
            if not isinstance(values, list) or len(values) != n:
                raise ValueError("event array has the wrong length")
            if self.flags & FLAG_EVENT_LZ4:
                ends = struct.unpack_from(f"<{n}I", self.buf, self.offset + HEADER_SIZE)
                for i, e in enumerate(ends):
                    if e & EVENT_COMPRESSED:
                        values[i] = codec.unpack(codec.decompress(values[i], max_bytes, self.path, self.offset))
        except CorruptionError:
            raise
        except Exception as exc:
            raise CorruptionError(f"events do not decode: {exc}", self.path, self.offset) from exc
        return values

    # -- BLOB ---------------------------------------------------------------
    def blob_key(self) -> bytes:
        p = self.offset + HEADER_SIZE
        (klen,) = _U16.unpack_from(self.buf, p)
        if klen + 2 > self.length:
            raise CorruptionError("blob key longer than its record", self.path, self.offset)
        return bytes(self.buf[p + 2 : p + 2 + klen])

    def blob_value(self, max_bytes: int) -> Any:
        p = self.offset + HEADER_SIZE
        (klen,) = _U16.unpack_from(self.buf, p)
        data: bytes | memoryview = memoryview(self.buf)[p + 2 + klen : p + self.length]
        try:
            if self.flags & FLAG_LZ4:
                data = codec.decompress(data, max_bytes, self.path, self.offset)
            return codec.unpack(data)
        except CorruptionError:
            raise
        except Exception as exc:
            raise CorruptionError(f"blob value does not decode: {exc}", self.path, self.offset) from exc

    # -- STREAM_CREATE --------------------------------------------------------
    def name(self) -> str:
        try:
            return bytes(self.payload()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError("stream name is not UTF-8", self.path, self.offset) from exc


_AFTER_CHECKSUM = struct.Struct("<IBBHIIQ")
_U32 = struct.Struct("<I")
_TWO_U32 = struct.Struct("<II")
_unpackb = msgpack.unpackb


def event_at(buf: Any, offset: int, stream_id: int, seq: int, path: str, max_bytes: int) -> Any:
    """Decode event ``seq`` of ``stream_id`` from the (already verified) EVENTS record at ``offset``.

    The point-read fast path: no objects besides the value itself.
    """
    length, rtype, flags, _r, sid, count, first = _AFTER_CHECKSUM.unpack_from(buf, offset + 8)
    i = seq - first
    if rtype != RecordType.EVENTS or sid != stream_id or not 0 <= i < count:
        raise CorruptionError(f"index points at the wrong record for stream {stream_id} seq {seq}", path, offset)
    p = offset + HEADER_SIZE
    if i:
        start, end = _TWO_U32.unpack_from(buf, p + 4 * i - 4)
        start &= END_MASK
    else:
        start, end = ARRAY_HEADER.size, _U32.unpack_from(buf, p)[0]
    region = p + 4 * count
    if end & EVENT_COMPRESSED or not start <= end <= length - 4 * count:
        return RecordView(buf, offset, length, rtype, flags, sid, count, first, path).event(i, max_bytes)
    try:
        return _unpackb(buf[region + start : region + end], strict_map_key=False, unicode_errors="surrogatepass")
    except Exception as exc:
        raise CorruptionError(f"event {i} does not decode: {exc}", path, offset) from exc


class TornRecord(Exception):
    """Internal: the bytes at an offset are not a whole record (end of valid data)."""


def read_record(buf: Any, offset: int, limit: int, max_record_bytes: int, path: str) -> RecordView:
    """Parse and verify the record at ``offset``; ``limit`` is the end of valid bytes.

    Raises :class:`TornRecord` when the record does not fit before ``limit`` (it
    may be a torn write at the tail) and :class:`CorruptionError` when it fits but
    fails its checksum or carries an impossible header.
    """
    if offset + HEADER_SIZE > limit:
        raise TornRecord(offset)
    checksum, length, rtype, flags, _res, stream_id, count, seq = HEADER.unpack_from(buf, offset)
    if length > max_record_bytes:
        raise CorruptionError(
            f"record length {length} exceeds the limit {max_record_bytes}", path, offset
        )
    end = offset + HEADER_SIZE + length
    if end > limit:
        raise TornRecord(offset)
    if checksum_of(memoryview(buf)[offset + 8 : end]) != checksum:
        raise CorruptionError("record checksum mismatch", path, offset)
    if rtype not in _VALID_TYPES:
        raise CorruptionError(f"unknown record type {rtype}", path, offset)
    if rtype == RecordType.EVENTS and (count == 0 or 4 * count + ARRAY_HEADER.size > length):
        raise CorruptionError(f"event record with impossible count {count}", path, offset)
    return RecordView(buf, offset, length, rtype, flags, stream_id, count, seq, path)
