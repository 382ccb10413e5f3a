"""WriterLock: one writer per store, across processes (an flock on ``LOCK``)."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from ..errors import StoreLockedError

LOCK_NAME = "LOCK"


class WriterLock:
    """Held for the life of a writable store. Released by close() or process exit."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            self._fd = -1
            who = f" (process {holder})" if holder else ""
            raise StoreLockedError(f"store {directory} is already open for writing{who}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
