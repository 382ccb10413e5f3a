"""Store options and the durability modes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidArgumentError


class Durability(str, Enum):
    """What an acknowledged append survives. See README, "Durability"."""

    #: Written to the OS before the call returns: survives SIGKILL of the
    #: process; a background fsync every ``flush_interval`` bounds what power
    #: loss can take.
    PROCESS = "process"
    #: fsync'd before the call returns (group commit shares one fsync among
    #: concurrent writers): survives power loss.
    POWER = "power"
    #: Buffered in the process and written + fsync'd by a background thread every
    #: ``flush_interval``: a crash loses at most that interval.
    RELAXED = "relaxed"


MiB = 1 << 20


@dataclass(frozen=True)
class StoreOptions:
    durability: Durability = Durability.PROCESS
    #: A segment is sealed once it reaches this size.
    segment_bytes: int = 64 * MiB
    #: Largest record payload accepted on write and believed on read.
    max_record_bytes: int = 16 * MiB
    #: Period of the background flush/fsync thread, in seconds.
    flush_interval: float = 0.2
    #: lz4-compress EVENTS records when that saves 1/8 or more. Saves disk (REPL
    #: events shrink 3-4x) at the cost of point reads, which then decompress the
    #: whole record; scans are unaffected. Large events are compressed one by one
    #: either way, and blobs whenever it pays.
    compress_events: bool = False
    #: Relaxed mode writes its buffer to the OS early once it holds this much.
    buffer_bytes: int = 1 * MiB
    readonly: bool = False
    #: Create the store when the directory holds none.
    create: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "durability", Durability(self.durability))
        except ValueError:
            modes = ", ".join(d.value for d in Durability)
            raise InvalidArgumentError(f"durability must be one of {modes}, not {self.durability!r}") from None
        if self.segment_bytes < 4096:
            raise InvalidArgumentError(f"segment_bytes must be at least 4096, not {self.segment_bytes}")
        if not 1024 <= self.max_record_bytes <= 0x7FFF_0000:
            raise InvalidArgumentError(f"max_record_bytes must be between 1 KiB and 2 GiB, not {self.max_record_bytes}")
        if not self.flush_interval > 0:
            raise InvalidArgumentError(f"flush_interval must be positive, not {self.flush_interval}")
