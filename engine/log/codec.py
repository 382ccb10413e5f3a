"""Value encoding: msgpack for structure, lz4 blocks when compression pays.

Two msgpack implementations write the same format: ``ormsgpack`` (fast, the
common case) and the reference ``msgpack`` package, used for what ormsgpack
does not take: strings with lone surrogates (the REPL's preview fields are cut
in UTF-16 code units and can end in half a pair; they round-trip through the
``surrogatepass`` handler), non-string map keys, str/int/dict subclasses. A
record encoded by the reference package carries a flag, and is decoded by it.
What neither accepts raises :class:`EncodeError`. Stored bytes are only ever
decoded by msgpack; nothing is unpickled or evaluated.
"""

from __future__ import annotations

from array import array
from typing import Any

import lz4.block
import msgpack
import ormsgpack

from ..errors import CorruptionError, EncodeError
from .format import U32

_U32 = U32

# Compress a value only when it is at least this long and lz4 saves 1/8 or more.
COMPRESS_MIN_BYTES = 512

# Anything ormsgpack would encode in its own way (datetimes, dataclasses, enums,
# UUIDs, subclasses, big ints) is passed to the reference encoder instead.
_FAST_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_UUID
)
_fast_pack = ormsgpack.packb
fast_unpack = ormsgpack.unpackb


def _reference_pack(values: list[Any]) -> list[bytes]:
    """Encode with the reference package (a packer per call: packers are not thread-safe),
    and make sure each value decodes again (a tuple map key, say, encodes but does not)."""
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass", datetime=False)
    try:
        out = [packer.pack(v) for v in values]
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"value cannot be stored: {exc}") from exc
    for data in out:
        try:
            unpack(data, True)
        except Exception as exc:
            raise EncodeError(f"value cannot be stored: it would not read back ({exc})") from exc
    return out


def pack_array(values: list[Any]) -> tuple[bytes, bool]:
    """Encode a list as one msgpack array. Returns ``(encoded, reference)``: ``reference``
    tells that the reference msgpack package was needed (and must decode it)."""
    try:
        return _fast_pack(values, option=_FAST_OPTIONS), False
    except TypeError:
        return b"".join([_array_header(len(values)), *_reference_pack(values)]), True


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def array_bounds(data: bytes | memoryview, count: int) -> array[int]:
    """Where each element of an encoded msgpack array of ``count`` elements starts
    and ends: ``count + 1`` offsets (the first is the end of the array header).
    Elements are skipped, not decoded. Raises ValueError when ``data`` is not
    exactly such an array."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data)
    if unpacker.read_array_header() != count:
        raise ValueError(f"not an array of {count} elements")
    bounds = array("I", [unpacker.tell()])
    skip, tell, append = unpacker.skip, unpacker.tell, bounds.append
    for _ in range(count):
        skip()
        append(tell())
    if bounds[-1] != len(data):
        raise ValueError("bytes after the array")
    return bounds


def pack(value: Any) -> tuple[bytes, bool]:
    """Encode one value; ``(encoded, reference)`` as for :func:`pack_array`."""
    try:
        return _fast_pack(value, option=_FAST_OPTIONS), False
    except TypeError:
        return _reference_pack([value])[0], True


def pack_value(value: Any) -> bytes:
    """Encode one value into bytes that :func:`unpack_any` decodes."""
    data, reference = pack(value)
    if reference:
        return b"\x01" + data
    return b"\x00" + data


def unpack_value(data: bytes) -> Any:
    """Inverse of :func:`pack_value`."""
    if not data or data[0] > 1:
        raise CorruptionError("value has no encoder prefix")
    return unpack(memoryview(data)[1:], data[0] == 1)


def unpack(data: bytes | memoryview, reference: bool = False) -> Any:
    """Decode one msgpack value (no ext types, no code execution)."""
    if reference:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, unicode_errors="surrogatepass")
    return fast_unpack(data)


def maybe_compress(raw: bytes) -> bytes | None:
    """Return ``u32 raw length + lz4 block`` when that is at least 1/8 smaller, else None."""
    if len(raw) < COMPRESS_MIN_BYTES:
        return None
    packed: bytes = lz4.block.compress(raw, store_size=False)
    if len(packed) + 4 > len(raw) - (len(raw) >> 3):
        return None
    return _U32.pack(len(raw)) + packed


def decompress(data: bytes | memoryview, max_bytes: int, where: str = "", offset: int = -1) -> bytes:
    """Inverse of :func:`maybe_compress`; the stored length is checked against ``max_bytes``
    before anything is allocated."""
    if len(data) < 4:
        raise CorruptionError("compressed value shorter than its length prefix", where, offset)
    (size,) = _U32.unpack_from(data, 0)
    if size > max_bytes:
        raise CorruptionError(f"compressed value claims {size} bytes, more than the limit {max_bytes}", where, offset)
    try:
        out: bytes = lz4.block.decompress(memoryview(data)[4:], uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        raise CorruptionError(f"lz4 block does not decompress: {exc}", where, offset) from exc
    if len(out) != size:
        raise CorruptionError("lz4 block decompressed to the wrong length", where, offset)
    return out
