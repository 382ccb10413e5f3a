"""Group commit and background flushing.

``GroupCommitter``: writers that must wait for durability call ``wait(lsn)``.
The first waiter becomes the leader and runs one fsync covering everything
written so far; writers that arrive meanwhile wait for the next round, and all
of them are released by one fsync. ``lsn`` counts bytes ever appended.

``BackgroundFlusher``: a daemon thread calling a function every ``interval``
seconds until stopped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class GroupCommitter:
    def __init__(self, sync_source: Callable[[], tuple[int, int]],
                 on_synced: Callable[[int], None]) -> None:
        """``sync_source()`` returns ``(duplicated fd, lsn written)``; the committer
        fsyncs and closes the fd. ``on_synced(lsn)`` runs after each fsync."""
        self._sync_source = sync_source
        self._on_synced = on_synced
        self._cv = threading.Condition()
        self._synced = 0
        self._leader = False
        self.fsyncs = 0

    @property
    def synced(self) -> int:
        return self._synced

    def mark_synced(self, lsn: int) -> None:
        with self._cv:
            if lsn > self._synced:
                self._synced = lsn
                self._cv.notify_all()

    def wait(self, lsn: int) -> None:
        with self._cv:
            while self._synced < lsn:
                if self._leader:
                    self._cv.wait()
                    continue
                self._leader = True
                self._cv.release()
                try:
                    fd, target = self._sync_source()
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
                    self._on_synced(target)
                finally:
                    self._cv.acquire()
                    self._leader = False
                    self._cv.notify_all()
                self.fsyncs += 1
                if target > self._synced:
                    self._synced = target


class BackgroundFlusher:
    def __init__(self, interval: float, fn: Callable[[], None], name: str) -> None:
        self._interval = interval
        self._fn = fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except Exception:  # keep flushing; the next foreground call reports the error
                log.exception("background flush failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
