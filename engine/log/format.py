"""Every byte layout of the store: structs, magics, flags, limits, file names.

The one-page description is ``engine/FORMAT.md``; this module is its code, and
the two change together. Nothing else in the engine defines a struct, a magic
or a file name.
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum

import xxhash

#: Version written in segment headers and index headers.
FORMAT_VERSION = 1

# -- checksums ------------------------------------------------------------------
#: Records, segment and index headers, sealed indexes, the MANIFEST.
checksum_of = xxhash.xxh3_64_intdigest
#: Entries of the active index.
entry_checksum_of = xxhash.xxh32_intdigest

# -- file names -------------------------------------------------------------
MANIFEST_NAME = "MANIFEST"
LOCK_NAME = "LOCK"
#: flock'd around every read-modify-write of the MANIFEST (writer rolls, compactor commits).
MANIFEST_LOCK_NAME = "MANIFEST.lock"
#: flock'd by the one compactor of a store for its whole run.
COMPACT_LOCK_NAME = "COMPACT.lock"
#: The compactor's record of its last pass (JSON, replaced atomically).
COMPACT_STATE_NAME = "COMPACTION"
SEGMENT_EXT = "seg"
ACTIVE_INDEX_EXT = "idx"
SEALED_INDEX_EXT = "sidx"
TMP_SUFFIX = ".tmp"
#: ``<20-digit id>.<seg|idx|sidx>``
FILE_RE = re.compile(r"^(\d{20})\.(seg|idx|sidx)$")


def file_name(segment_id: int, ext: str) -> str:
    """``00000000000000000042.seg`` and its siblings."""
    return f"{segment_id:020d}.{ext}"


def parse_file_name(name: str) -> tuple[int, str] | None:
    """``(segment id, extension)`` of a segment or index file name, else None."""
    m = FILE_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


# -- MANIFEST (JSON) -----------------------------------------------------------
MANIFEST_FORMAT = 1
#: A MANIFEST larger than this is refused before it is read.
MANIFEST_MAX_BYTES = 1 << 20
#: Deepest JSON nesting accepted in a MANIFEST (a valid one has depth 2).
MANIFEST_MAX_DEPTH = 8

# -- segment files ---------------------------------------------------------------
SEGMENT_MAGIC = b"SEGLOGsg"
# magic 8s | version u16 | flags u16 | reserved u32 | segment id u64 | checksum u64 (xxh3 of bytes 0..24)
SEGMENT_HEADER = struct.Struct("<8sHHIQQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32

# -- records ----------------------------------------------------------------------
# checksum u64 | length u32 | type u8 | flags u8 | reserved u16 | stream u32 | count u32 | seq u64
RECORD_HEADER = struct.Struct("<QIBBHIIQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 32
#: The header without its checksum: what the checksum covers before the payload.
RECORD_HEADER_BODY = struct.Struct("<IBBHIIQ")


class RecordType(IntEnum):
    EVENTS = 1
    BLOB = 2
    STREAM_CREATE = 3
    STREAM_DROP = 4


VALID_RECORD_TYPES = frozenset(int(t) for t in RecordType)
#: The BLOB value, or the whole EVENTS payload, is an lz4-compressed value.
FLAG_LZ4 = 0x01
#: The values need the reference msgpack decoder (lone surrogates, non-str keys).
FLAG_REFERENCE = 0x04
KNOWN_FLAGS = FLAG_LZ4 | FLAG_REFERENCE
#: Bytes 12..16 of a record header (type 1-4, flags, reserved == 0): how the tail
#: scan recognizes a candidate record after a bad one.
RECORD_SHAPE = re.compile(rb"[\x01-\x04][\x00-\x07]\x00\x00", re.DOTALL)
RECORD_SHAPE_OFFSET = 12

#: u16 key length before a BLOB's key.
BLOB_KEY_LEN = struct.Struct("<H")
MAX_KEY_BYTES = 1024
MAX_STREAM_NAME_BYTES = 255
#: u32 uncompressed length before an lz4 block.
U32 = struct.Struct("<I")

# -- active index (.idx) -------------------------------------------------------
ACTIVE_INDEX_MAGIC = b"SEGLOGix"
# magic 8s | version u16 | kind u16 | reserved u32 | segment id u64 | checksum u64 (xxh3 of bytes 0..24)
ACTIVE_INDEX_HEADER = struct.Struct("<8sHHIQQ")
# offset u64 | seq or key hash u64 | stream u32 | count u32 | type u8 | flags u8 | reserved u16 | xxh32 u32
INDEX_ENTRY = struct.Struct("<QQIIBBHI")
INDEX_ENTRY_SIZE = INDEX_ENTRY.size  # 32
INDEX_ENTRY_BODY = struct.Struct("<QQIIBBH")

# -- sealed index (.sidx) --------------------------------------------------------
SEALED_INDEX_MAGIC = b"SEGLOGsx"
# magic | version u16 | flags u16 | reserved u32 | segment id u64 | data end u64 | streams u32 |
# event entries u32 | blob entries u32 | meta bytes u32 | reserved u64 | checksum u64
SEALED_HEADER = struct.Struct("<8sHHIQQIIIIQQ")
SEALED_HEADER_SIZE = SEALED_HEADER.size  # 64
SEALED_HEADER_BODY = struct.Struct("<8sHHIQQIIIIQ")  # without the checksum
#: The checksum's position in the sealed header (it covers the rest of the file).
SEALED_CHECKSUM_AT = 56
# stream u32 | reserved u32 | event lo u32 | event n u32 | blob lo u32 | blob n u32 |
# first seq u64 | next seq u64 | bytes u64
SEALED_DIR_ENTRY = struct.Struct("<IIIIIIQQQ")


def header_with_checksum(magic: bytes, kind: int, segment_id: int) -> bytes:
    """The 32-byte header shared by segments and active indexes."""
    head = struct.pack("<8sHHIQ", magic, FORMAT_VERSION, kind, 0, segment_id)
    return head + checksum_of(head).to_bytes(8, "little")
