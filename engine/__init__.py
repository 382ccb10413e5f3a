"""seglog's storage engine: checksummed, size-rotated segments with an mmap'd
offset index, group commit and crash recovery, and the session layer on top.

>>> import engine
>>> with engine.open("/tmp/store") as store:          # doctest: +SKIP
...     seq = store.append("session-1", {"type": "input", "code": "(+ 1 2)"})
...     store.get("session-1", seq)
"""

import logging

from .errors import (
    BlobNotFoundError,
    CompactorBusyError,
    CorruptionError,
    EncodeError,
    EventNotFoundError,
    InsufficientSpaceError,
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
from .log.compactor import CompactionReport, compact
from .log.options import Durability, StoreOptions
from .log.store import Problem, Store, StoreStats, StreamInfo, VerifyReport, open
from .session.instance import SessionInstance
from .session.persistence_manager import PersistenceManager
from .session.persister import IncrementalWriter, SessionPersister
from .session.pool import SessionPool

__all__ = [
    "BlobNotFoundError",
    "CompactionReport",
    "CompactorBusyError",
    "CorruptionError",
    "Durability",
    "EncodeError",
    "EventNotFoundError",
    "IncrementalWriter",
    "InsufficientSpaceError",
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
    "compact",
    "open",
]

# A library logs, the application decides where that goes: without a handler of
# its own, seglog's warnings do not reach stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())
