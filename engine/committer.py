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
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class GroupCommitter:
    #: How long a leader waits, at most, for the writers of its last group to append.
    GATHER_SECONDS = 0.0003

    def __init__(self, sync_source: Callable[[], tuple[int, int]],
                 on_synced: Callable[[int], None], written: Callable[[], int] | None = None) -> None:
        """``sync_source()`` returns ``(duplicated fd, lsn written)``; the committer
        fsyncs and closes the fd. ``on_synced(lsn)`` runs after each fsync.
        ``written()`` reads how many records were appended so far (without locking)."""
        self._sync_source = sync_source
        self._on_synced = on_synced
        self._written = written
        self._cv = threading.Condition(threading.Lock())
        self._synced = 0
        self._leader = False
        self._waiting = 0  # writers waiting for the current leader's fsync
        self._last_group = 1  # records the last fsync covered
        self._synced_records = 0
        self.fsyncs = 0

    @property
    def synced(self) -> int:
        return self._synced

    def _gather(self) -> None:
        """Let the writers that the last fsync released append again before this one
        starts, so that one fsync covers them all: yield the GIL until as many
        records have arrived as the last fsync covered, for GATHER_SECONDS at most."""
        assert self._written is not None
        want = self._synced_records + self._last_group
        deadline = time.perf_counter() + self.GATHER_SECONDS
        while self._written() < want and time.perf_counter() < deadline:
            time.sleep(0)

    def mark_synced(self, lsn: int) -> None:
        with self._cv:
            if lsn > self._synced:
                self._synced = lsn
                self._cv.notify_all()

    def wait(self, lsn: int) -> None:
        with self._cv:
            while self._synced < lsn:
                if self._leader:
                    self._waiting += 1
                    self._cv.wait()
                    self._waiting -= 1
                    continue
                self._leader = True
                others = self._waiting > 0
                self._cv.release()
                try:
                    if others and self._written is not None:
                        self._gather()
                    records = self._written() if self._written is not None else 0
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
                if records > self._synced_records:
                    self._last_group = records - self._synced_records
                    self._synced_records = records


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
