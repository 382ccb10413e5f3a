"""What the store reports about itself: streams, stats, verification results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StreamInfo:
    name: str
    events: int
    bytes: int
    blobs: int


@dataclass(frozen=True)
class StoreStats:
    path: str
    durability: str
    segments: int
    bytes_on_disk: int
    streams: int
    events: int
    generation: int
    bytes_written: int
    bytes_synced: int
    fsyncs: int
    #: Dead bytes in sealed segments: what a compaction pass would give back.
    reclaimable_bytes: int = 0
    #: Per sealed segment: (segment id, bytes, garbage ratio).
    garbage: tuple[tuple[int, int, float], ...] = ()
    #: The last compaction pass (a ``CompactionReport``), None before the first.
    last_compaction: Any = None
    #: Segments the compactor set aside after failing on them repeatedly.
    set_aside: tuple[int, ...] = ()


@dataclass(frozen=True)
class Problem:
    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path} at offset {self.offset}: {self.message}"


@dataclass
class VerifyReport:
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
