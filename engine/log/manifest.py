"""Manifest: which segments make up the store, in log order.

The manifest is a small JSON file replaced atomically (write temp, fsync,
rename, fsync directory). The log's order is the order of ``segments``, not
the order of segment ids, so a compactor can replace a run of sealed
segments by a new segment with a fresh id at the same position. Every change
bumps ``generation``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import xxhash

from ..errors import CorruptionError
from .segment import fsync_dir

MANIFEST_NAME = "MANIFEST"
MANIFEST_FORMAT = 1


@dataclass
class Manifest:
    segments: list[int] = field(default_factory=list)
    next_segment_id: int = 1
    generation: int = 0
    #: The largest max_record_bytes any writer used: the limit reads check lengths against.
    max_record_bytes: int = 0

    def _body(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "generation": self.generation,
            "segments": self.segments,
            "next_segment_id": self.next_segment_id,
            "max_record_bytes": self.max_record_bytes,
        }

    @staticmethod
    def _checksum(body: dict[str, object]) -> str:
        return xxhash.xxh3_64_hexdigest(json.dumps(body, sort_keys=True).encode())

    @classmethod
    def load(cls, directory: str) -> Manifest | None:
        path = os.path.join(directory, MANIFEST_NAME)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            checksum = doc.pop("checksum")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise CorruptionError(f"manifest is not valid JSON: {exc}", path) from exc
        if cls._checksum(doc) != checksum:
            raise CorruptionError("manifest checksum mismatch", path)
        if doc.get("format") != MANIFEST_FORMAT:
            raise CorruptionError(f"unsupported manifest format {doc.get('format')!r}", path)
        try:
            return cls([int(s) for s in doc["segments"]], int(doc["next_segment_id"]), int(doc["generation"]),
                       int(doc.get("max_record_bytes", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"manifest lacks a valid field: {exc}", path) from exc

    def save(self, directory: str) -> None:
        self.generation += 1
        body = self._body()
        doc = dict(body, checksum=self._checksum(body))
        path = os.path.join(directory, MANIFEST_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(directory)

    def allocate_segment_id(self) -> int:
        sid = self.next_segment_id
        self.next_segment_id += 1
        return sid
