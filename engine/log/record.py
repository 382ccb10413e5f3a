"""Record framing: a fixed 32-byte header, a checksum, and typed payloads.

See FORMAT.md for the byte layout. Functions here work on bytes: the caller
reads a record (``pread``) and hands its bytes over; nothing here touches files.
"""

from __future__ import annotations

from array import array
from typing import Any

from ..errors import CorruptionError
from . import codec
from .format import (
    BLOB_KEY_LEN,
    FLAG_LZ4,
    FLAG_REFERENCE,
    MAX_KEY_BYTES,
    RECORD_HEADER,
    RECORD_HEADER_BODY,
    RECORD_HEADER_SIZE,
    VALID_RECORD_TYPES,
    RecordType,
    checksum_of,
)

__all__ = ["FLAG_LZ4", "FLAG_REFERENCE", "HEADER_SIZE", "MAX_KEY_BYTES", "RecordType", "RecordView", "checksum_of"]

HEADER = RECORD_HEADER
HEADER_SIZE = RECORD_HEADER_SIZE
_U16 = BLOB_KEY_LEN


def frame(rtype: int, flags: int, stream_id: int, count: int, seq: int, payload: bytes) -> bytes:
    """Return header + payload with the checksum filled in."""
    body = RECORD_HEADER_BODY.pack(len(payload), rtype, flags, 0, stream_id, count, seq) + payload
    return checksum_of(body).to_bytes(8, "little") + body


def encode_events(
    stream_id: int, first_seq: int, count: int, array_bytes: bytes, reference: bool = False, compress: bool = False
) -> bytes:
    """Frame ``count`` events, already encoded as one msgpack array, as an EVENTS record.

    The record is lz4-compressed when that saves 1/8 or more and either
    ``compress`` asks for it or the events are large (512 bytes or more on
    average, where decompressing costs little next to decoding).
    """
    flags = FLAG_REFERENCE if reference else 0
    payload = array_bytes
    if compress or len(payload) >= count * codec.COMPRESS_MIN_BYTES:
        small = codec.maybe_compress(payload)
        if small is not None:
            payload, flags = small, flags | FLAG_LZ4
    return frame(RecordType.EVENTS, flags, stream_id, count, first_seq, payload)


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
        self,
        buf: Any,
        base: int,
        offset: int,
        length: int,
        rtype: int,
        flags: int,
        stream_id: int,
        count: int,
        seq: int,
        path: str,
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
        return RecordView(
            buf,
            0,
            self.offset,
            len(payload),
            self.rtype,
            self.flags & ~FLAG_LZ4,
            self.stream_id,
            self.count,
            self.seq,
            self.path,
        )

    def bounds(self, max_bytes: int) -> array[int]:
        """Offsets (in the decompressed payload) where each event starts, and the end."""
        try:
            return codec.array_bounds(self.expanded(max_bytes).payload(), self.count)
        except CorruptionError:
            raise
        except Exception as exc:
            raise self._corrupt(f"events are not an array of {self.count}: {exc}") from exc

    def event(self, index: int, max_bytes: int) -> Any:
        """Decode the event at position ``index`` of this EVENTS record."""
        view = self.expanded(max_bytes)
        bounds = view.bounds(max_bytes)
        data = view.payload()[bounds[index] : bounds[index + 1]]
        try:
            return codec.unpack(data, bool(self.flags & FLAG_REFERENCE))
        except Exception as exc:
            raise self._corrupt(f"event {index} does not decode: {exc}") from exc

    def events(self, max_bytes: int) -> list[Any]:
        """Decode all events of this EVENTS record in one msgpack call."""
        view = self.expanded(max_bytes)
        try:
            values = codec.unpack(view.payload(), bool(self.flags & FLAG_REFERENCE))
            if not isinstance(values, list) or len(values) != self.count:
                raise ValueError(f"not an array of {self.count} events")
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


def read_record(
    buf: Any, base: int, limit: int, max_record_bytes: int, path: str, offset: int | None = None
) -> RecordView:
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
    if rtype not in VALID_RECORD_TYPES:
        raise CorruptionError(f"unknown record type {rtype}", path, where)
    if rtype == RecordType.EVENTS and (count == 0 or (count >= length and not flags & FLAG_LZ4)):
        raise CorruptionError(f"event record with impossible count {count}", path, where)
    return RecordView(buf, base, where, length, rtype, flags, stream_id, count, seq, path)
