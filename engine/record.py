"""Record framing: a fixed 32-byte header, a checksum, and typed payloads.

See FORMAT.md for the byte layout. Functions here work on bytes: the caller
reads a record (``pread``) and hands its bytes over; nothing here touches files.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from itertools import accumulate
from typing import Any

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
U32 = struct.Struct("<I")
TWO_U32 = struct.Struct("<II")

FLAG_LZ4 = 0x01  # BLOB: the value is lz4-compressed; EVENTS: the whole payload is
FLAG_EVENT_LZ4 = 0x02  # EVENTS: at least one event is lz4-compressed
FLAG_REFERENCE = 0x04  # values need the reference msgpack decoder (lone surrogates, non-str keys...)

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


def events_payload(packed: list[bytes], reference: bool) -> tuple[bytes, int]:
    """The payload of an EVENTS record and its flags.

    Large events that compress well are stored as an lz4 ``bin`` and flagged in
    the offset table, so a point read never decompresses more than its event.
    """
    flags = FLAG_REFERENCE if reference else 0
    n = len(packed)
    items = packed
    ends = list(accumulate(map(len, items), initial=ARRAY_HEADER.size))[1:]
    if max(map(len, packed)) >= codec.COMPRESS_MIN_BYTES:
        items, marks = [], []
        for p in packed:
            small = codec.maybe_compress(p) if len(p) >= codec.COMPRESS_MIN_BYTES else None
            if small is None:
                items.append(p)
                marks.append(0)
            else:
                items.append(codec.pack(small)[0])
                marks.append(EVENT_COMPRESSED)
                flags |= FLAG_EVENT_LZ4
        if flags & FLAG_EVENT_LZ4:
            bounds = list(accumulate(map(len, items), initial=ARRAY_HEADER.size))[1:]
            ends = [e | m for e, m in zip(bounds, marks, strict=True)]
    table = struct.pack(f"<{n}I", *ends)
    return b"".join((table, ARRAY_HEADER.pack(0xDD, n), *items)), flags


def encode_events(stream_id: int, first_seq: int, packed: list[bytes], reference: bool = False,
                  compress: bool = False) -> bytes:
    """Frame already-packed events as one EVENTS record (compressed as a whole when
    ``compress`` and that pays)."""
    payload, flags = events_payload(packed, reference)
    if compress and not flags & FLAG_EVENT_LZ4:
        small = codec.maybe_compress(payload)
        if small is not None:
            payload, flags = small, flags | FLAG_LZ4
    return frame(RecordType.EVENTS, flags, stream_id, len(packed), first_seq, payload)


def encode_blob(stream_id: int, key_hash: int, key: bytes, value: bytes, reference: bool = False) -> bytes:
    small = codec.maybe_compress(value)
    flags = FLAG_REFERENCE if reference else 0
    if small is not None:
        value, flags = small, flags | FLAG_LZ4
    payload = b"".join((_U16.pack(len(key)), key, value))
    return frame(RecordType.BLOB, flags, stream_id, 0, key_hash, payload)


def key_hash(key: bytes) -> int:
    return checksum_of(key)


class RecordView:
    """A verified record: its bytes (``buf``, starting at ``base``) and header fields.

    ``offset`` is where the record starts in its segment file (for messages).
    """

    __slots__ = ("base", "buf", "count", "flags", "length", "offset", "path", "rtype", "seq", "stream_id")

    def __init__(
        self, buf: Any, base: int, offset: int, length: int, rtype: int, flags: int,
        stream_id: int, count: int, seq: int, path: str,
    ) -> None:
        self.buf = buf
        self.base = base
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
        """End of the record in its segment file."""
        return self.offset + HEADER_SIZE + self.length

    def payload(self) -> memoryview:
        start = self.base + HEADER_SIZE
        return memoryview(self.buf)[start : start + self.length]

    def _corrupt(self, message: str, exc: BaseException | None = None) -> CorruptionError:
        return CorruptionError(message, self.path, self.offset)

    def _value(self, data: bytes | memoryview, compressed: bool, max_bytes: int) -> Any:
        reference = bool(self.flags & FLAG_REFERENCE)
        if compressed:
            data = codec.decompress(data, max_bytes, self.path, self.offset)
        return codec.unpack(data, reference)

    # -- EVENTS -------------------------------------------------------------
    def expanded(self, max_bytes: int) -> RecordView:
        """This EVENTS record with its payload decompressed (itself when not compressed)."""
        if self.rtype != RecordType.EVENTS or not self.flags & FLAG_LZ4:
            return self
        payload = codec.decompress(self.payload(), max_bytes, self.path, self.offset)
        buf = bytes(self.buf[self.base : self.base + HEADER_SIZE]) + payload
        view = RecordView(buf, 0, self.offset, len(payload), self.rtype, self.flags & ~FLAG_LZ4,
                          self.stream_id, self.count, self.seq, self.path)
        if 4 * view.count + ARRAY_HEADER.size > view.length:
            raise self._corrupt(f"event record with impossible count {view.count}")
        return view

    def table(self) -> bytes:
        """The offset table of an EVENTS record."""
        start = self.base + HEADER_SIZE
        return bytes(self.buf[start : start + 4 * self.count])

    def event(self, index: int, max_bytes: int) -> Any:
        """Decode the event at position ``index`` of this EVENTS record."""
        if self.flags & FLAG_LZ4:
            return self.expanded(max_bytes).event(index, max_bytes)
        p = self.base + HEADER_SIZE
        n = self.count
        raw_end = U32.unpack_from(self.buf, p + 4 * index)[0]
        start = ARRAY_HEADER.size if index == 0 else U32.unpack_from(self.buf, p + 4 * index - 4)[0] & END_MASK
        end = raw_end & END_MASK
        if not (ARRAY_HEADER.size <= start <= end <= self.length - 4 * n):
            raise self._corrupt(f"event {index} has an offset outside its record")
        region = p + 4 * n
        data = memoryview(self.buf)[region + start : region + end]
        try:
            if raw_end & EVENT_COMPRESSED:
                return self._value(codec.fast_unpack(data), True, max_bytes)
            return self._value(data, False, max_bytes)
        except CorruptionError:
            raise
        except Exception as exc:
            raise self._corrupt(f"event {index} does not decode: {exc}") from exc

    def events(self, max_bytes: int) -> list[Any]:
        """Decode all events of this EVENTS record in one msgpack call."""
        if self.flags & FLAG_LZ4:
            return self.expanded(max_bytes).events(max_bytes)
        n = self.count
        p = self.base + HEADER_SIZE
        data = memoryview(self.buf)[p + 4 * n : p + self.length]
        try:
            values = codec.unpack(data, bool(self.flags & FLAG_REFERENCE))
            if not isinstance(values, list) or len(values) != n:
                raise ValueError("event array has the wrong length")
            if self.flags & FLAG_EVENT_LZ4:
                ends = struct.unpack_from(f"<{n}I", self.buf, p)
                for i, e in enumerate(ends):
                    if e & EVENT_COMPRESSED:
                        values[i] = self._value(values[i], True, max_bytes)
        except CorruptionError:
            raise
        except Exception as exc:
            raise self._corrupt(f"events do not decode: {exc}") from exc
        return values

    # -- BLOB ---------------------------------------------------------------
    def blob_key(self) -> bytes:
        p = self.base + HEADER_SIZE
        (klen,) = _U16.unpack_from(self.buf, p)
        if klen + 2 > self.length:
            raise self._corrupt("blob key longer than its record")
        return bytes(self.buf[p + 2 : p + 2 + klen])

    def blob_value(self, max_bytes: int) -> Any:
        p = self.base + HEADER_SIZE
        (klen,) = _U16.unpack_from(self.buf, p)
        data = memoryview(self.buf)[p + 2 + klen : p + self.length]
        try:
            return self._value(data, bool(self.flags & FLAG_LZ4), max_bytes)
        except CorruptionError:
            raise
        except Exception as exc:
            raise self._corrupt(f"blob value does not decode: {exc}") from exc

    # -- STREAM_CREATE --------------------------------------------------------
    def name(self) -> str:
        try:
            return bytes(self.payload()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._corrupt("stream name is not UTF-8") from exc


class TornRecord(Exception):
    """Internal: the bytes at an offset are not a whole record (end of valid data)."""


def read_record(buf: Any, base: int, limit: int, max_record_bytes: int, path: str,
                offset: int | None = None) -> RecordView:
    """Parse and verify the record at ``buf[base:]``; ``limit`` is the end of valid bytes in ``buf``.

    ``offset`` is the record's position in its file (defaults to ``base``).
    Raises :class:`TornRecord` when the record does not fit before ``limit``
    (it may be a torn write at the tail) and :class:`CorruptionError` when it
    fits but fails its checksum or carries an impossible header.
    """
    where = base if offset is None else offset
    if base + HEADER_SIZE > limit:
        raise TornRecord(where)
    checksum, length, rtype, flags, _res, stream_id, count, seq = HEADER.unpack_from(buf, base)
    if length > max_record_bytes:
        raise CorruptionError(f"record length {length} exceeds the limit {max_record_bytes}", path, where)
    end = base + HEADER_SIZE + length
    if end > limit:
        raise TornRecord(where)
    if checksum_of(memoryview(buf)[base + 8 : end]) != checksum:
        raise CorruptionError("record checksum mismatch", path, where)
    if rtype not in _VALID_TYPES:
        raise CorruptionError(f"unknown record type {rtype}", path, where)
    if rtype == RecordType.EVENTS and (count == 0 or (4 * count + ARRAY_HEADER.size > length
                                                      and not flags & FLAG_LZ4)):
        raise CorruptionError(f"event record with impossible count {count}", path, where)
    return RecordView(buf, base, where, length, rtype, flags, stream_id, count, seq, path)
