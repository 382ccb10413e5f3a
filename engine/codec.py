"""Value encoding: msgpack for structure, lz4 blocks when compression pays.

Strings round-trip exactly, lone surrogates included (the REPL's preview
fields are cut in UTF-16 code units and can end in half a surrogate pair), so
both directions use the ``surrogatepass`` error handler. Stored bytes are only
ever decoded by msgpack; nothing is unpickled or evaluated.
"""

from __future__ import annotations

import struct
from typing import Any

import lz4.block
import msgpack

from .errors import CorruptionError, EncodeError

_U32 = struct.Struct("<I")

# Compress a value only when it is at least this long and lz4 saves 1/8 or more.
COMPRESS_MIN_BYTES = 512


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass", datetime=False)


_packer = _new_packer()


def pack(value: Any) -> bytes:
    """Encode one value; raise :class:`EncodeError` for anything msgpack rejects."""
    try:
        return _packer.pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        # A failed pack can leave the shared packer's buffer dirty: start afresh.
        _packer.reset()
        raise EncodeError(f"value cannot be stored: {exc}") from exc


def pack_many(values: list[Any]) -> list[bytes]:
    """Encode each value of a list (one C call each), with the same errors as :func:`pack`."""
    try:
        p = _packer.pack
        return [p(v) for v in values]
    except (TypeError, ValueError, OverflowError) as exc:
        _packer.reset()
        raise EncodeError(f"value cannot be stored: {exc}") from exc


def unpack(data: bytes | memoryview) -> Any:
    """Decode one msgpack value (no ext types, no code execution)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, unicode_errors="surrogatepass")


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
        raise CorruptionError(
            f"compressed value claims {size} bytes, more than the limit {max_bytes}", where, offset
        )
    try:
        out: bytes = lz4.block.decompress(memoryview(data)[4:], uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        raise CorruptionError(f"lz4 block does not decompress: {exc}", where, offset) from exc
    if len(out) != size:
        raise CorruptionError("lz4 block decompressed to the wrong length", where, offset)
    return out
