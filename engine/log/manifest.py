"""Manifest: which segments make up the store, in log order.

The manifest is a small JSON file replaced atomically (``fileio.atomic_write``:
write temp, fsync, rename, fsync directory). The log's order is the order of
``segments``, not the order of segment ids, so a compactor can replace a run of
sealed segments by a new segment with a fresh id at the same position. Every
change bumps ``generation``.

Fields (all integers are JSON integers, never strings, floats or booleans):

``format``
    1.
``generation``
    Bumped by every save.
``segments``
    The segment ids of the log, in log order, the last one active: at least
    one, no id twice, each ``1 <= id < next_segment_id``.
``next_segment_id``
    The next id to allocate (ids are never reused).
``max_record_bytes``
    The largest ``max_record_bytes`` any writer used: what reads check
    lengths against (0 in a manifest that predates it).
``next_stream_id``
    The next stream id to allocate, so that a process can allocate stream ids
    without replaying the log (1 in a manifest that predates it).
``reserved``
    ``[first, end)`` ranges of segment ids allocated to another process that
    may be writing their files right now (a compactor's outputs): nobody
    else creates or removes files of those ids. Ranges lie below
    ``next_segment_id`` and do not overlap (empty in a manifest that predates it).
``checksum``
    Hex ``xxh3_64`` of ``json.dumps(body, sort_keys=True)``, ``body`` being
    every other field.

A MANIFEST is refused before it is read when it is larger than
``MANIFEST_MAX_BYTES``, and before it is parsed when its JSON nests deeper
than ``MANIFEST_MAX_DEPTH``; anything wrong with it raises
:class:`CorruptionError` naming its path, and a failure to read it
:class:`StoreIOError`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import xxhash

from ..errors import CorruptionError, StoreIOError
from . import fileio
from .format import (
    MANIFEST_FORMAT,
    MANIFEST_MAX_BYTES,
    MANIFEST_MAX_DEPTH,
    MANIFEST_NAME,
    TMP_SUFFIX,
    parse_file_name,
)

__all__ = ["MANIFEST_FORMAT", "MANIFEST_MAX_BYTES", "MANIFEST_MAX_DEPTH", "MANIFEST_NAME", "Manifest", "manifest_path"]

#: Segment ids are u64 in file headers (and 20 decimal digits in file names).
MAX_SEGMENT_ID = (1 << 64) - 1
#: Stream ids are u32 in records.
MAX_STREAM_ID = (1 << 32) - 1
#: ``generation`` and ``max_record_bytes`` fit the integers every reader handles.
_MAX_COUNTER = (1 << 63) - 1

# JSON strings (whose brackets do not nest anything) and the structural brackets.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def manifest_path(directory: str) -> str:
    return os.path.join(directory, MANIFEST_NAME)


def _json_depth(raw: bytes) -> int:
    """How deep the JSON text nests arrays and objects (brackets inside strings
    do not count). Computed without parsing, so a document nested too deep for
    the parser's recursion is refused before it is parsed."""
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_DEPTH_STEP[b] for b in brackets), default=0)


def _checksum(body: dict[str, Any]) -> str:
    return xxhash.xxh3_64_hexdigest(json.dumps(body, sort_keys=True).encode())


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool, not float


@dataclass
class Manifest:
    segments: list[int] = field(default_factory=list)
    next_segment_id: int = 1
    generation: int = 0
    #: The largest max_record_bytes any writer used: the limit reads check lengths against.
    max_record_bytes: int = 0
    #: The next stream id to allocate.
    next_stream_id: int = 1
    #: ``(first, end)`` ranges of segment ids another process may be writing.
    reserved: list[tuple[int, int]] = field(default_factory=list)

    # ------------------------------------------------------------ encoding
    def _body(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "generation": self.generation,
            "segments": list(self.segments),
            "next_segment_id": self.next_segment_id,
            "max_record_bytes": self.max_record_bytes,
            "next_stream_id": self.next_stream_id,
            "reserved": [[first, end] for first, end in self.reserved],
        }

    def encode(self) -> bytes:
        """The file's bytes for the current fields."""
        body = self._body()
        doc = dict(body, checksum=_checksum(body))
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, path: str) -> Manifest:
        """Check and decode a MANIFEST's bytes; :class:`CorruptionError` naming
        ``path`` for anything that is not a valid manifest."""
        if len(raw) > MANIFEST_MAX_BYTES:
            raise CorruptionError(f"manifest is {len(raw)} bytes; the limit is {MANIFEST_MAX_BYTES}", path)
        depth = _json_depth(raw)
        if depth > MANIFEST_MAX_DEPTH:
            raise CorruptionError(f"manifest JSON nests {depth} deep; the limit is {MANIFEST_MAX_DEPTH}", path)
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptionError(f"manifest is not valid JSON: {exc}", path) from exc
        if not isinstance(doc, dict):
            raise CorruptionError(f"manifest is a JSON {type(doc).__name__}, not an object", path)
        checksum = doc.pop("checksum", None)
        if not isinstance(checksum, str):
            raise CorruptionError("manifest has no checksum", path)
        try:
            expected = _checksum(doc)
        except (ValueError, TypeError, RecursionError) as exc:
            raise CorruptionError(f"manifest cannot be checksummed: {exc}", path) from exc
        if expected != checksum:
            raise CorruptionError("manifest checksum mismatch", path)
        fmt = doc.get("format")
        if not _is_int(fmt) or fmt != MANIFEST_FORMAT:
            raise CorruptionError(f"unsupported manifest format {fmt!r}", path)
        m = cls(
            segments=_int_list(doc, "segments", path),
            next_segment_id=_int_field(doc, "next_segment_id", path, 1, MAX_SEGMENT_ID + 1),
            generation=_int_field(doc, "generation", path, 0, _MAX_COUNTER),
            max_record_bytes=_int_field(doc, "max_record_bytes", path, 0, _MAX_COUNTER, default=0),
            next_stream_id=_int_field(doc, "next_stream_id", path, 1, MAX_STREAM_ID + 1, default=1),
            reserved=_ranges(doc, path),
        )
        problem = m.problem()
        if problem:
            raise CorruptionError(f"manifest {problem}", path)
        return m

    def problem(self) -> str:
        """What makes these fields an invalid manifest ("" when they are valid)."""
        if not self.segments:
            return "lists no segment"
        if len(set(self.segments)) != len(self.segments):
            dup = sorted({s for s in self.segments if self.segments.count(s) > 1})
            return f"lists segment {dup[0]} twice"
        for sid in self.segments:
            if not 1 <= sid < self.next_segment_id:
                return f"lists segment {sid}, not below next_segment_id {self.next_segment_id}"
        prev_end = 0
        for first, end in sorted(self.reserved):
            if not 1 <= first < end <= self.next_segment_id:
                return f"reserves segment ids [{first}, {end}) outside 1..{self.next_segment_id - 1}"
            if first < prev_end:
                return f"reserves overlapping ranges of segment ids (at {first})"
            prev_end = end
        return ""

    # ---------------------------------------------------------------- files
    @classmethod
    def load(cls, directory: str) -> Manifest | None:
        """The store's MANIFEST, or None when there is none."""
        path = manifest_path(directory)
        try:
            raw = fileio.read_file(path, MANIFEST_MAX_BYTES)
        except OverflowError as exc:
            raise CorruptionError(f"manifest is larger than the limit of {MANIFEST_MAX_BYTES} bytes", path) from exc
        except IsADirectoryError as exc:
            raise CorruptionError("manifest is a directory", path) from exc
        except OSError as exc:
            raise StoreIOError(f"cannot read the manifest: {exc.strerror or exc}", path, exc.errno or 0) from exc
        if raw is None:
            return None
        return cls.parse(raw, path)

    def save(self, directory: str) -> None:
        """Replace the MANIFEST atomically with these fields (generation + 1).

        Raises the OSError of a failed write: the caller decides what a failed
        save means for the store. Fields that would not load raise ValueError
        before anything is written.
        """
        problem = self.problem()
        if problem:
            raise ValueError(f"refusing to save a manifest that {problem}")
        self.generation += 1
        fileio.atomic_write(manifest_path(directory), [self.encode()])

    def copy(self, next_stream_id: int = 0) -> Manifest:
        """A copy (for a backup), ``next_stream_id`` raised to at least the one given."""
        return Manifest(
            segments=list(self.segments),
            next_segment_id=self.next_segment_id,
            max_record_bytes=self.max_record_bytes,
            next_stream_id=max(self.next_stream_id, next_stream_id),
            reserved=list(self.reserved),
        )

    # ------------------------------------------------------------ segment ids
    def allocate_segment_id(self) -> int:
        sid = self.next_segment_id
        self.next_segment_id += 1
        return sid

    def reserve_segment_ids(self, count: int) -> range:
        """Allocate ``count`` segment ids for another process and record them as
        reserved (saved with the next :meth:`save`)."""
        if count < 1:
            raise ValueError(f"cannot reserve {count} segment ids")
        first = self.next_segment_id
        self.next_segment_id += count
        self.reserved.append((first, first + count))
        return range(first, first + count)

    def release_reserved(self, ids: range) -> None:
        """Forget a reservation made by :meth:`reserve_segment_ids` (its ids stay used)."""
        self.reserved = [r for r in self.reserved if r != (ids.start, ids.stop)]

    def is_reserved(self, segment_id: int) -> bool:
        """Is ``segment_id`` in a range reserved for another process?"""
        return any(first <= segment_id < end for first, end in self.reserved)

    def is_reserved_name(self, name: str) -> bool:
        """Is ``name`` (a segment or index file, or its temp file) one of a reserved id?"""
        parsed = parse_file_name(name.removesuffix(TMP_SUFFIX))
        return parsed is not None and self.is_reserved(parsed[0])


# ------------------------------------------------------------------ field checks
def _int_field(doc: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None = None) -> int:
    if key not in doc:
        if default is None:
            raise CorruptionError(f"manifest lacks {key!r}", path)
        return default
    value = doc[key]
    if not _is_int(value) or not lo <= value <= hi:
        raise CorruptionError(f"manifest field {key!r} is {value!r}, not an integer in {lo}..{hi}", path)
    return int(value)


def _int_list(doc: dict[str, Any], key: str, path: str) -> list[int]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise CorruptionError(f"manifest field {key!r} is {value!r}, not a list", path)
    for item in value:
        if not _is_int(item) or not 1 <= item <= MAX_SEGMENT_ID:
            raise CorruptionError(f"manifest field {key!r} holds {item!r}, not a segment id", path)
    return list(value)


def _ranges(doc: dict[str, Any], path: str) -> list[tuple[int, int]]:
    value = doc.get("reserved", [])
    if not isinstance(value, list):
        raise CorruptionError(f"manifest field 'reserved' is {value!r}, not a list", path)
    out = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(_is_int(v) for v in item)
            or not 1 <= item[0] < item[1] <= MAX_SEGMENT_ID + 1
        ):
            raise CorruptionError(f"manifest field 'reserved' holds {item!r}, not a [first, end) range", path)
        out.append((item[0], item[1]))
    return out
