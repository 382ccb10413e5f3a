"""Group commit and background flushing.

``GroupCommitter``: writers that must wait for durability call ``wait(lsn)``
(``lsn`` counts bytes ever appended). Writers that wait at about the same
time form a group, and one fsync releases the whole group:

- The first writer of a group gathers: it waits, ``GATHER_SECONDS`` at most,
  for as many writers as took part in the last fsync. A writer alone (the
  last fsync had no company) does not gather; it syncs at once.
- The writer that completes the group runs the fsync itself, so no thread
  has to be woken to start it. A gatherer that times out runs it instead.
- When the fsync returns, the writers it covered are released one after
  another: each released writer wakes the next. A Python thread that wakes
  needs the GIL, so waking them all at once only makes them queue for it.

An fsync that fails is not retried (the kernel may have dropped the dirty
pages already): ``on_failed`` turns the error into the exception that every
writer still waiting, and every later one, receives.

``BackgroundFlusher``: a daemon thread calling a function every ``interval``
seconds until stopped.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from . import fileio

log = logging.getLogger(__name__)


class _Waiter:
    """One writer's wait: its lock is released once, when the writer may go on."""

    __slots__ = ("gone", "lock", "lsn")

    def __init__(self, lsn: int) -> None:
        self.lsn = lsn
        self.lock = threading.Lock()
        self.lock.acquire()
        self.gone = False  # its thread stopped waiting (interrupted): skip it


class _Group:
    """Writers gathering for the next fsync; ``gatherer`` arrived first."""

    __slots__ = ("gatherer", "members", "size")

    def __init__(self, gatherer: _Waiter, size: int) -> None:
        self.gatherer = gatherer
        self.members = 1
        self.size = size


class GroupCommitter:
    #: How long the first writer of a group waits, at most, for the others.
    GATHER_SECONDS = 0.0003

    def __init__(
        self,
        sync_source: Callable[[], tuple[int, int]],
        on_synced: Callable[[int], None],
        on_failed: Callable[[OSError], BaseException],
    ) -> None:
        """``sync_source()`` returns ``(duplicated fd, lsn written)``; the committer
        fsyncs and closes the fd. ``on_synced(lsn)`` runs after each fsync;
        ``on_failed(error)`` after an fsync failed, returning what to raise."""
        self._sync_source = sync_source
        self._on_synced = on_synced
        self._on_failed = on_failed
        self._mu = threading.Lock()
        self._synced = 0
        self._error: BaseException | None = None
        self._waiters: list[_Waiter] = []  # waiting for an fsync to cover them
        self._forming: _Group | None = None
        self._syncing = 0  # fsyncs running
        self._group_size = 1  # writers that took part in the last fsync
        self._chain: deque[_Waiter] = deque()  # covered writers, woken one by one
        self.fsyncs = 0

    @property
    def synced(self) -> int:
        return self._synced

    def mark_synced(self, lsn: int) -> None:
        """Record that everything up to ``lsn`` is durable (synced by the caller)."""
        with self._mu:
            if lsn <= self._synced:
                return
            self._synced = lsn
            covered = self._take_covered()
        self._wake(covered)

    def wait(self, lsn: int) -> None:
        """Return once everything up to ``lsn`` is durable."""
        if self._synced >= lsn:
            return
        mu = self._mu
        while True:
            mu.acquire()
            if self._synced >= lsn:
                mu.release()
                return
            if self._error is not None:
                mu.release()
                raise self._error
            group = self._forming
            if group is not None and group.members + 1 < group.size:
                group.members += 1
                waiter = _Waiter(lsn)
                self._waiters.append(waiter)
                mu.release()
                self._sleep(waiter)
                if self._synced >= lsn:  # the usual case: released by the fsync that covered it
                    return
                continue
            if group is None and self._group_size > 1:  # company is expected: gather it
                group = self._forming = _Group(_Waiter(lsn), self._group_size)
                mu.release()
                if not self._gather(group):
                    continue
            else:
                if group is not None:  # this writer completes the group: it syncs it
                    self._forming = None
                    self._waiters.append(group.gatherer)
                self._syncing += 1
                mu.release()
            self._sync()

    def _gather(self, group: _Group) -> bool:
        """Wait for ``group`` to fill. True: the gatherer must sync it now (and is
        counted in ``_syncing``); False: it was released, look again."""
        mu = self._mu
        waiter = group.gatherer
        try:
            released = waiter.lock.acquire(timeout=self.GATHER_SECONDS)
        except BaseException:
            with mu:
                if self._forming is group:
                    self._forming = None
                else:  # already handed to the writer that syncs the group
                    waiter.gone = True
            if waiter.gone:
                self._pass_chain()
            raise
        with mu:
            mine = self._forming is group
            if mine:  # timed out: the gatherer syncs what it has
                self._forming = None
                self._syncing += 1
        if mine:
            return True
        if released:
            self._pass_chain()
        else:  # another writer completed the group and syncs it: wait for that
            self._sleep(waiter)
        return False

    def _sync(self) -> None:
        """Run one fsync covering everything written so far (the caller counted
        it in ``_syncing``), then release the writers it covered."""
        target = -1
        error: BaseException | None = None
        try:
            if self._error is not None:
                raise self._error
            fd, target = self._sync_source()
            try:
                fileio.fdatasync(fd)
            except OSError as exc:
                error = self._on_failed(exc)
            finally:
                fileio.close(fd)
            if error is None:
                self._on_synced(target)
        finally:
            with self._mu:
                self._syncing -= 1
                if target >= 0:
                    self.fsyncs += 1
                if error is not None:
                    self._error = error
                    covered, self._waiters = self._waiters, []
                else:
                    if target > self._synced:
                        self._synced = target
                    covered = self._take_covered()
                forming = self._forming.members if self._forming is not None else 0
                self._group_size = 1 + len(covered) + len(self._waiters) + self._syncing + forming
                if self._waiters and not self._syncing and self._forming is None:
                    # nobody syncs the rest (they came late, or this fsync could not
                    # start): wake the first of them to do it
                    covered.append(self._waiters.pop(0))
            self._wake(covered)
        if error is not None:
            raise error

    def _take_covered(self) -> list[_Waiter]:
        """Remove and return the waiters that the synced position covers. Holds ``_mu``."""
        synced = self._synced
        covered = [w for w in self._waiters if w.lsn <= synced]
        if covered:
            self._waiters = [w for w in self._waiters if w.lsn > synced]
        return covered

    def _wake(self, waiters: list[_Waiter]) -> None:
        """Release the first waiter; it releases the next, and so on (``_sleep``)."""
        if waiters:
            self._chain.extend(waiters)
            self._pass_chain()

    def _pass_chain(self) -> None:
        chain = self._chain
        while chain:
            try:
                waiter = chain.popleft()
            except IndexError:
                return
            if not waiter.gone:
                waiter.lock.release()
                return

    def _sleep(self, waiter: _Waiter) -> None:
        """Block until released, then release the next waiter of the chain."""
        try:
            waiter.lock.acquire()
        except BaseException:
            waiter.gone = True
            raise
        finally:
            self._pass_chain()


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
