"""seglog's storage engine: checksummed, size-rotated segments with an mmap'd
offset index, group commit and crash recovery, and the session layer on top.

>>> import engine
>>> with engine.open("/tmp/store") as store:          # doctest: +SKIP
...     seq = store.append("session-1", {"type": "input", "code": "(+ 1 2)"})
...     store.get("session-1", seq)
"""

from .errors import (
    BlobNotFoundError,
    CorruptionError,
    EncodeError,
    EventNotFoundError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    ReadOnlyError,
    RecordTooLargeError,
    SeglogError,
    StoreClosedError,
    StoreLockedError,
    UnknownStreamError,
)
from .options import Durability, StoreOptions
from .store import Problem, Store, StoreStats, StreamInfo, VerifyReport, open

__all__ = [
    "BlobNotFoundError",
    "CorruptionError",
    "Durability",
    "EncodeError",
    "EventNotFoundError",
    "InvalidArgumentError",
    "InvalidNameError",
    "NotFoundError",
    "Problem",
    "ReadOnlyError",
    "RecordTooLargeError",
    "SeglogError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "StoreOptions",
    "StoreStats",
    "StreamInfo",
    "UnknownStreamError",
    "VerifyReport",
    "open",
]
