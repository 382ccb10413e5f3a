"""WriterLock: one writer per store, across processes (an flock on ``LOCK``).

The lock is the flock, not the file: the file stays behind when the writer
is gone, and it holds the writer's pid for the message another writer gets.
Opening or locking it can fail for reasons other than another writer (a
directory at ``LOCK``, permissions, a read-only file system, an I/O error):
those raise :class:`StoreIOError` naming the file, and only a lock held by
another process raises :class:`StoreLockedError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from types import TracebackType

from ..errors import StoreIOError, StoreLockedError
from . import fileio
from .format import LOCK_NAME

__all__ = ["LOCK_NAME", "FileLock", "WriterLock", "writer_present"]

log = logging.getLogger(__name__)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class FileLock:
    """An flock on a small file of the store, for a short critical section
    between processes (``MANIFEST.lock``) or a long one (``COMPACT.lock``).
    Threads of one process exclude each other too (each opens its own fd).
    ``acquire(blocking=False)`` returns False when another holder has it."""

    def __init__(self, directory: str, name: str) -> None:
        self.path = os.path.join(directory, name)
        self.fd = -1

    def acquire(self, blocking: bool = True) -> bool:
        try:
            fd = fileio.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreIOError(f"cannot open the lock file: {_reason(exc)}", self.path, exc.errno or 0) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fileio.close(fd)
            return False
        except OSError as exc:
            fileio.close(fd)
            raise StoreIOError(f"cannot take a lock: {_reason(exc)}", self.path, exc.errno or 0) from exc
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            # Closing the last descriptor releases the flock anyway; neither call
            # failing leaves anything to undo.
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                fileio.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class WriterLock:
    """Held for the life of a writable store. Released by release() or process exit."""

    def __init__(self, directory: str) -> None:
        self._lock = FileLock(directory, LOCK_NAME)
        self.path = self._lock.path
        try:
            taken = self._lock.acquire(blocking=False)
        except StoreIOError as exc:
            if exc.errno == errno.EISDIR:
                raise StoreIOError(
                    "cannot take the writer lock: a directory stands where the lock file belongs", self.path, exc.errno
                ) from exc
            raise
        if not taken:
            holder = self._holder()
            who = f" (process {holder})" if holder else ""
            raise StoreLockedError(f"store {directory} is already open for writing{who}")
        # The pid only tells a second writer who holds the lock; the flock is the
        # lock. On a full disk it may not fit: the lock is held all the same.
        try:
            fileio.ftruncate(self._lock.fd, 0)
            fileio.pwrite(self._lock.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            log.warning("%s: cannot record the writer's pid: %s", self.path, exc)

    def _holder(self) -> str:
        """The pid the holder wrote, or "" (best effort: it only goes in a message)."""
        try:
            fd = fileio.open(self.path, os.O_RDONLY)
        except OSError:
            return ""
        try:
            return fileio.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        finally:
            fileio.close(fd)

    @property
    def held(self) -> bool:
        return self._lock.fd >= 0

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def writer_present(directory: str) -> bool:
    """Does a process (this one included) hold the store's writer lock?"""
    probe = FileLock(directory, LOCK_NAME)
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True
