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
    SaveFailedError,
    SeglogError,
    SessionExistsError,
    StoreClosedError,
    StoreFailedError,
    StoreIOError,
    StoreLockedError,
    TruncatedRecordError,
    UnknownReceiptError,
    UnknownSessionError,
    UnknownStateError,
    UnknownStreamError,
)
from .log.options import Durability, StoreOptions
from .log.store import Problem, Store, StoreStats, StreamInfo, VerifyReport, open
from .session.instance import SessionInstance
from .session.persistence_manager import PersistenceManager
from .session.persister import IncrementalWriter, SessionPersister
from .session.pool import SessionPool

__all__ = [
    "BlobNotFoundError",
    "CorruptionError",
    "Durability",
    "EncodeError",
    "EventNotFoundError",
    "IncrementalWriter",
    "InvalidArgumentError",
    "InvalidNameError",
    "NotFoundError",
    "PersistenceManager",
    "Problem",
    "ReadOnlyError",
    "RecordTooLargeError",
    "SaveFailedError",
    "SeglogError",
    "SessionExistsError",
    "SessionInstance",
    "SessionPersister",
    "SessionPool",
    "Store",
    "StoreClosedError",
    "StoreFailedError",
    "StoreIOError",
    "StoreLockedError",
    "StoreOptions",
    "StoreStats",
    "StreamInfo",
    "TruncatedRecordError",
    "UnknownReceiptError",
    "UnknownSessionError",
    "UnknownStateError",
    "UnknownStreamError",
    "VerifyReport",
    "open",
]
