"""The one exception hierarchy of seglog.

Every error the library raises on purpose derives from :class:`SeglogError`.
Errors about bad arguments also derive from :class:`ValueError`, lookups that
find nothing also derive from :class:`LookupError`, so callers may catch either
the seglog class or the builtin one.
"""

from __future__ import annotations


class SeglogError(Exception):
    """Base class of every error raised by seglog."""


class StoreClosedError(SeglogError):
    """The store (or session layer object) was used after close()."""


class StoreFailedError(SeglogError):
    """An earlier write failed (disk full, I/O error): the store refuses writes until reopened."""


class StoreLockedError(SeglogError):
    """Another process already holds the writer lock of the store."""


class ReadOnlyError(SeglogError):
    """A write was attempted on a store opened read-only."""


class InvalidArgumentError(SeglogError, ValueError):
    """An argument was rejected before anything was written."""


class InvalidNameError(InvalidArgumentError):
    """A stream name, session name or blob key is not acceptable."""


class EncodeError(InvalidArgumentError):
    """A value cannot be encoded with msgpack (unsupported type, int too large...)."""


class RecordTooLargeError(InvalidArgumentError):
    """An encoded record is larger than the store's ``max_record_bytes``."""


class NotFoundError(SeglogError, LookupError):
    """A lookup found nothing."""


class UnknownStreamError(NotFoundError):
    """No stream (session) of that name exists."""


class EventNotFoundError(NotFoundError):
    """The stream has no event with that sequence number."""


class BlobNotFoundError(NotFoundError):
    """The stream has no blob under that key."""


class CorruptionError(SeglogError):
    """Stored bytes failed a check. ``path`` and ``offset`` locate the damage."""

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        where = f"{path}" if path else ""
        if offset >= 0:
            where += f" at offset {offset}"
        super().__init__(f"{message} ({where})" if where else message)
        self.path = path
        self.offset = offset


class TruncatedRecordError(CorruptionError):
    """A record runs past the end of its file (the file was cut short)."""


class UnknownSessionError(NotFoundError):
    """No session of that name exists."""


class SessionExistsError(InvalidArgumentError):
    """A session of that name already exists."""


class StoreIOError(SeglogError):
    """A file of the store could not be opened, read or locked: permissions, a
    directory where a file belongs, an I/O error. ``path`` names the file and
    ``errno`` is the operating system's error number (0 when there is none)."""

    def __init__(self, message: str, path: str = "", errno: int = 0) -> None:
        super().__init__(f"{message} ({path})" if path else message)
        self.path = path
        self.errno = errno


class UnknownStateError(BlobNotFoundError):
    """The session has no state with that id."""


class UnknownReceiptError(BlobNotFoundError):
    """The session has no receipt with that key."""


class LegacyFormatError(SeglogError, ValueError):
    """A legacy file is malformed; ``path`` and ``line`` say where."""

    def __init__(self, message: str, path: str, line: int = 0) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class SaveFailedError(SeglogError):
    """A save of the session layer failed, so its sessions refuse new events: what
    they record could not be stored. ``__cause__`` is the failure. After a failed
    write the store refuses writes for good (``StoreFailedError``): shut the
    PersistenceManager down and open the store again. After any other failure a
    save that succeeds lets recording go on."""


class CompactorBusyError(SeglogError):
    """Another compactor is running on this store (one at a time: ``COMPACT.lock``)."""


class InsufficientSpaceError(SeglogError):
    """Free disk space is below what a compaction pass needs; nothing was written."""
