"""The session layer for asyncio: :class:`PersistenceManager`.

::

    pool = engine.SessionPool(max_size=100)
    async with engine.aio.PersistenceManager(pool, "/var/lib/repl/store", durability="power") as pm:
        s = await pm.create_session("current")
        s.input("(define x 10)")                  # recording: plain calls, in memory
        s.step(0, "(define x 10)")
        await pm.force_save("current")            # durable now
        events = await pm.events("current", 0, 4)
        await pm.fork("current", "experiment", at_seq=1)
    # leaving the block saves everything and closes the store

It is the threaded :class:`engine.PersistenceManager` (same store, same
background saving every ``save_interval`` or ``save_after`` changes, same
failure rules; see its docstring) with every call that touches the disk made
awaitable: it runs in the loop's default executor. Recording on a
:class:`~engine.SessionInstance` (``input``, ``step``, ``checkpoint``...)
stays a plain call that never blocks the event loop: where the threaded
manager would save in the recording thread (a session with ``max_pending``
unsaved changes, or a dirty session pushed out of the pool when a recorded one
comes back in), a call from the loop's thread schedules that save in the
executor instead and returns. Until it is done the pool may hold a session
more than ``max_size``; the next ``put`` evicts it.

Like the store, a manager belongs to the event loop that started it; its
coroutines raise :class:`SeglogError` in another loop. Recording from other
threads is allowed and behaves as with the threaded manager.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from ..errors import SeglogError, StoreClosedError
from ..log.store import Store as SyncStore
from ..session.instance import SessionInstance
from ..session.persistence_manager import PersistenceManager as SyncManager
from ..session.persister import SessionPersister
from ..session.pool import SessionPool
from ..session.schema import check_session_name

__all__ = ["PersistenceManager"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _LoopManager(SyncManager):
    """The threaded manager, whose recording calls never wait for a save when they
    are made in the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int, *args: Any, **kwargs: Any) -> None:
        self._loop = loop
        self._loop_thread = loop_thread
        self._saving: set[SessionInstance] = set()  # saves scheduled from the loop, not finished
        self._saving_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.pool.saver = self._save_for_eviction

    def _note_change(self, inst: SessionInstance, pending: int) -> None:
        if threading.get_ident() != self._loop_thread:
            super()._note_change(inst, pending)
            return
        if pending >= self.save_after:
            self._wake.set()
            if pending >= self.max_pending and not self._closed:
                self._save_soon(inst)  # backpressure, off the loop
        if inst.name not in self.pool and not inst.deleted:
            self.pool.put(inst)  # an eviction this causes saves through _save_for_eviction

    def _save_for_eviction(self, inst: SessionInstance) -> None:
        if threading.get_ident() == self._loop_thread:
            self._save_soon(inst)  # the pool keeps it (dirty) until a later put
        else:
            self.save_session(inst)

    def _save_soon(self, inst: SessionInstance) -> None:
        with self._saving_lock:
            if inst in self._saving:
                return
            self._saving.add(inst)
        try:
            self._loop.run_in_executor(None, self._save_scheduled, inst)
        except RuntimeError:  # the loop is closing: the background saver takes it
            with self._saving_lock:
                self._saving.discard(inst)
            self._wake.set()

    def _save_scheduled(self, inst: SessionInstance) -> None:
        try:
            self.save_session(inst)
        except StoreClosedError:
            pass
        except Exception:  # the manager's gate now refuses new events; the next save retries
            log.exception("save of session %r scheduled from the event loop failed", inst.name)
        finally:
            with self._saving_lock:
                self._saving.discard(inst)


class PersistenceManager:
    """The session layer for asyncio (see the module docstring). Arguments are those
    of :class:`engine.PersistenceManager`; the store is opened by ``await pm.start()``,
    ``await pm`` or ``async with pm``, in a worker thread."""

    def __init__(
        self,
        pool: SessionPool,
        directory: str | os.PathLike[str],
        save_interval: float = 1.0,
        save_after: int = 256,
        **options: Any,
    ) -> None:
        self.pool = pool
        self.directory = directory
        self._args = (pool, directory, save_interval, save_after)
        #: Keyword options of engine.PersistenceManager (durability, max_pending, store_options...).
        self._kwargs = options
        self._manager: _LoopManager | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # -- starting and stopping ------------------------------------------------------------
    async def start(self) -> PersistenceManager:
        """Open the store and start background saving (once; later calls return at once)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        self._check_loop()
        if self._starting is None:
            self._starting = loop.create_task(self._start(loop, threading.get_ident()))
        await asyncio.shield(self._starting)
        return self

    async def _start(self, loop: asyncio.AbstractEventLoop, thread: int) -> None:
        make = functools.partial(_LoopManager, loop, thread, *self._args, **self._kwargs)
        self._manager = await loop.run_in_executor(None, make)

    def __await__(self) -> Generator[Any, None, PersistenceManager]:
        return self.start().__await__()

    async def __aenter__(self) -> PersistenceManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop background saving, save everything, close the store. Idempotent; the
        sessions refuse new events from now on (StoreClosedError). Nothing to do
        when it was never started."""
        if self._loop is None:
            return
        self._check_loop()
        if self._closing is None:
            self._closing = self._loop_().create_task(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        if self._starting is not None:
            await asyncio.wait([self._starting])
        if self._manager is not None:
            await self._loop_().run_in_executor(None, self._manager.shutdown)

    close = shutdown

    # -- plumbing ---------------------------------------------------------------------
    def _loop_(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise SeglogError("the PersistenceManager was not started (await pm.start(), or async with pm)")
        return self._loop

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            raise SeglogError(
                "this asyncio PersistenceManager belongs to the event loop that started it; await its methods there"
            )
        return loop

    @property
    def manager(self) -> SyncManager:
        """The threaded manager underneath (its methods block: for worker threads)."""
        if self._manager is None:
            raise SeglogError("the PersistenceManager was not started (await pm.start(), or async with pm)")
        return self._manager

    @property
    def store(self) -> SyncStore:
        return self.manager.store

    @property
    def saves(self) -> int:
        return self.manager.saves

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = self._check_loop()
        if self._manager is None:
            raise SeglogError("the PersistenceManager was not started (await pm.start(), or async with pm)")
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    # -- sessions ---------------------------------------------------------------------
    async def create_session(self, name: str, session_id: str | None = None) -> SessionInstance:
        """A new, empty session (in the pool and in the catalog)."""
        return await self._run(self.manager.create_session, name, session_id)

    async def load_session(self, name: str) -> SessionInstance:
        """The session: from the pool at once, else loaded from the store in a worker thread."""
        self._check_loop()
        manager = self.manager
        check_session_name(name)
        manager._check_open()
        inst = manager.pool.get(name)
        if inst is not None and not inst.deleted:  # pooled: no I/O (what the threaded load does then)
            inst.last_accessed = time.time()
            return inst
        return await self._run(manager.load_session, name)

    def has_session(self, name: str) -> bool:
        """In memory: a plain call."""
        return self.manager.has_session(name)

    async def save_session(self, session: SessionInstance | str) -> int:
        """Write the session's changes since its last save point; return how many."""
        return await self._run(self.manager.save_session, session)

    async def save_dirty_sessions(self) -> int:
        return await self._run(self.manager.save_dirty_sessions)

    async def force_save(self, name: str | None = None) -> int:
        """Save now (one session, or all), after any save in progress."""
        return await self._run(self.manager.force_save, name)

    async def fork(self, source: str, new_name: str, at_seq: int, *, keep_header: bool = False) -> SessionInstance:
        """A new session sharing ``source``'s events ``0..at_seq`` (see engine.PersistenceManager.fork)."""
        return await self._run(self.manager.fork, source, new_name, at_seq, keep_header=keep_header)

    async def save_as(self, source: str, new_name: str) -> SessionInstance:
        return await self._run(self.manager.save_as, source, new_name)

    async def delete(self, name: str) -> None:
        await self._run(self.manager.delete, name)

    # -- what the REPL reads ------------------------------------------------------------
    async def list_sessions(self) -> list[dict[str, Any]]:
        return await self._run(self.manager.list_sessions)

    async def events(self, name: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        return await self._run(self.manager.events, name, start, stop)

    async def checkpoints(self, name: str) -> list[dict[str, Any]]:
        return await self._run(self.manager.checkpoints, name)

    async def get_state(self, name: str, state_id: str) -> Any:
        return await self._run(self.manager.get_state, name, state_id)

    async def get_receipt(self, name: str, key: str) -> dict[str, Any]:
        return await self._run(self.manager.get_receipt, name, key)

    async def persister(self, name: str) -> SessionPersister:
        return await self._run(self.manager.persister, name)

    def __repr__(self) -> str:
        state = "not started" if self._manager is None else ("closed" if self._closing else "open")
        return f"<seglog.aio.PersistenceManager {os.fspath(self.directory)} {state}>"
