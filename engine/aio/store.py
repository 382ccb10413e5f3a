"""The asyncio store: :class:`engine.Store` with writes grouped per turn of the loop.

``async with engine.aio.open(path, **options) as store:`` opens (in a worker
thread) the same :class:`engine.Store` a threaded program gets, and wraps it.

Writes (``append``, ``append_batch``, ``put_blob``, ``create_stream``,
``drop_stream``, ``sync``) cost the event loop little: each queues an
operation with its own future, in the loop's thread. The operations queued
during one turn of the loop form a *group*, handed at the end of that turn to
the store's commit thread (one per store). That thread performs a group's
operations with the store's write path in one :meth:`engine.Store.batch`
block, so that with durability "power" one fdatasync covers all of them
("process": one write to the OS), and then acknowledges the whole group with
ONE ``loop.call_soon_threadsafe``: acknowledging a group wakes the loop once,
however many tasks wait in it. Groups handed over while the thread is busy
are merged into its next pass (and share its fsync). The loop never takes the
store's write lock, so neither a segment roll nor a slow fsync can stall it;
only the GIL is shared.

What an await means:

- ``await store.append(...)`` returns once the event is as durable as the
  store's durability says (for "power": fsync'd), with its seq. The values are
  encoded by the commit thread before that: do not change them while the
  append is awaited.
- An error of one operation (a bad name, a value that cannot be encoded)
  fails that operation only. A failed write or fsync fails every operation of
  its group that was not acknowledged yet, with :class:`StoreFailedError`
  chained to the cause, and so does every later write: the store must be
  reopened (then recovery keeps exactly what reached the disk whole). Nothing
  acknowledged is lost.
- Cancelling a task that awaits a write: if its group was not handed over
  yet, the operation is dropped (never written); otherwise it is written (or
  fails) with its group, only nobody is told. Records are atomic: an append is
  stored whole or not at all.
- ``close()`` refuses new operations (StoreClosedError), lets every
  operation already queued complete, then closes the store. Leaving an
  ``async with`` block closes it.

Reads (``get``, ``get_blob``, ``scan``...) run in the loop's default executor,
since they may wait for the disk; ``scan`` yields events fetched in chunks.
``next_seq``, ``has_stream``, ``streams`` and ``stream_info`` only look at
the catalog in memory and are plain calls.

A store belongs to the event loop that opened it; from another loop its
methods raise :class:`SeglogError` (see :mod:`engine.aio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import islice
from types import TracebackType
from typing import Any, TypeVar

from ..errors import (
    InvalidArgumentError,
    ReadOnlyError,
    SeglogError,
    StoreClosedError,
    StoreFailedError,
)
from ..log.catalog import check_key, check_stream_name
from ..log.options import Durability, StoreOptions
from ..log.reports import StoreStats, StreamInfo, VerifyReport
from ..log.store import Store as SyncStore
from ..log.store import open as open_sync

__all__ = ["Scan", "Store", "open"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _noop() -> None:
    return None


class _Op:
    """One queued write: ``fn(*args)`` runs in the commit thread; ``fut`` gets
    its result once the group is durable (``ok``: ``value`` is the result, else
    the exception)."""

    __slots__ = ("args", "fn", "fut", "ok", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], fut: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.args = args
        self.fut = fut
        self.ok = False
        self.value: Any = None


def _not_acknowledged(failure: BaseException) -> SeglogError:
    """The error an operation of a failed group gets (one instance per waiter)."""
    err: SeglogError
    if isinstance(failure, StoreClosedError):
        err = StoreClosedError(str(failure))
    else:
        err = StoreFailedError(
            str(failure)
            if isinstance(failure, StoreFailedError)
            else f"the write of its group failed: {failure!r}; reopen the store"
        )
    err.__cause__ = failure
    return err


class _CommitThread:
    """Performs handed-over groups with the store's write path and acknowledges
    each pass on the loop with one ``call_soon_threadsafe``."""

    def __init__(
        self, store: SyncStore, loop: asyncio.AbstractEventLoop, done: Callable[[list[_Op], BaseException | None], None]
    ) -> None:
        self._store = store
        self._loop = loop
        self._done = done
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[list[_Op]] = []
        self._stopping = False
        #: Passes run (each one fsync in "power" mode, and one wake-up of the loop).
        self.passes = 0
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"seglog-aio-commit:{os.path.basename(store.path)}"
        )
        self._thread.start()

    def submit(self, group: list[_Op]) -> None:
        """Hand a group over (loop thread)."""
        with self._cond:
            self._queue.append(group)
            self._cond.notify()

    def stop(self) -> None:
        """Finish what was handed over, then end (does not wait: see ``join``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._stopping:
                    cond.wait()
                if not self._queue:
                    return
                groups, self._queue = self._queue, []
            ops = groups[0] if len(groups) == 1 else [op for g in groups for op in g]
            failure = self._write(ops)
            self.passes += 1
            try:
                self._loop.call_soon_threadsafe(self._done, ops, failure)
            except RuntimeError:  # the loop is closed: nobody waits any more
                log.warning("%s: %d writes completed after their event loop closed", self._store.path, len(ops))

    def _write(self, ops: list[_Op]) -> BaseException | None:
        """Perform the operations in one batch (one fsync in "power" mode). Returns
        the failure that makes every operation of the pass unacknowledged, if any."""
        store = self._store
        failure: BaseException | None = None
        try:
            with store.batch():
                for op in ops:
                    try:
                        op.value = op.fn(*op.args)
                        op.ok = True
                    except Exception as exc:
                        op.value = exc
        except Exception as exc:  # leaving the batch: the fsync (or the write before it) failed
            failure = exc
        # A write that failed, here or in another thread, may have taken this pass's
        # records with it (they shared the store's buffer) even if a later fsync worked.
        failed = store._failed
        if failure is None and failed is not None:
            failure = StoreFailedError(f"a write to {store.path} failed ({failed}); reopen the store")
            failure.__cause__ = failed
        if failure is not None:
            for op in ops:
                if op.ok:
                    op.ok = False
                    op.value = _not_acknowledged(failure)
        return failure


class Store:
    """An open store for asyncio. Create with :func:`open`; see the module docstring."""

    #: Events fetched per executor call by :meth:`scan` (the first chunks are smaller).
    SCAN_CHUNK = 1024

    def __init__(self, store: SyncStore, loop: asyncio.AbstractEventLoop) -> None:
        #: The thread-safe store underneath (for threads; its writes do not go through the groups).
        self.store = store
        self.path = store.path
        self.options: StoreOptions = store.options
        self._loop = loop
        self._open: list[_Op] = []  # the group of this turn of the loop
        self._seal_scheduled = False
        self._committer: _CommitThread | None = None  # started by the first write
        self._failed: BaseException | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._sync_fn: Callable[[], None] = _noop if self.options.durability is Durability.POWER else store.sync
        #: Wake-ups of the loop by the commit thread (one per pass, however many ops it acknowledged).
        self.wakeups = 0
        #: Write operations acknowledged or failed.
        self.completed = 0

    # ----------------------------------------------------------------- the loop
    def _check_loop(self) -> asyncio.AbstractEventLoop:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            raise SeglogError(
                f"the asyncio store {self.path} belongs to the event loop that opened it; "
                "await its methods there (close it and open it again to move it)"
            )
        return running

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the loop's default executor."""
        loop = self._check_loop()
        if self._close_task is not None and self._close_task.done():
            raise StoreClosedError(f"store {self.path} is closed")
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    # ------------------------------------------------------------------- writes
    def _enqueue(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = self._check_loop()
        if self._closing:
            raise StoreClosedError(f"store {self.path} is closed")
        if self._failed is not None:
            raise StoreFailedError(
                f"an earlier write to {self.path} failed ({self._failed}); reopen the store"
            ) from self._failed
        if self.options.readonly:
            raise ReadOnlyError(f"store {self.path} was opened read-only")
        fut = loop.create_future()
        self._open.append(_Op(fn, args, fut))
        if not self._seal_scheduled:
            self._seal_scheduled = True
            loop.call_soon(self._seal)  # after everything else this turn of the loop runs
        return fut

    def _seal(self) -> None:
        """Hand this turn's group to the commit thread (loop thread)."""
        self._seal_scheduled = False
        group = self._open
        if not group:
            return
        self._open = []
        # Cancelled while the group was still ours: never written.
        group = [op for op in group if not op.fut.cancelled()]
        if not group:
            return
        committer = self._committer
        if committer is None:
            committer = self._committer = _CommitThread(self.store, self._loop, self._acknowledge)
        committer.submit(group)

    def _acknowledge(self, ops: list[_Op], failure: BaseException | None) -> None:
        """A pass of the commit thread ended: resolve its futures (loop thread, one callback)."""
        self.wakeups += 1
        self.completed += len(ops)
        if failure is not None and self._failed is None and not isinstance(failure, StoreClosedError):
            self._failed = failure
        for op in ops:
            fut = op.fut
            if fut.cancelled():
                continue
            if op.ok:
                fut.set_result(op.value)
            else:
                fut.set_exception(op.value)
        if not self._seal_scheduled:
            # Behind the tasks just woken: what they append next is handed over in the
            # same turn of the loop as they run, not one turn later.
            self._seal_scheduled = True
            self._loop.call_soon(self._seal)

    async def append(self, stream: str, value: Any) -> int:
        """Append one event; return its seq once it is durable."""
        return await self._enqueue(self.store.append_batch, stream, (value,))  # type: ignore[no-any-return]

    async def append_batch(self, stream: str, values: Sequence[Any]) -> int:
        """Append events as one record (all or none survive a crash); return the seq of the first."""
        if not isinstance(values, (list, tuple)):
            values = list(values)
        if not values:
            raise InvalidArgumentError("append_batch needs at least one value")
        if not isinstance(stream, str):
            check_stream_name(stream)
        return await self._enqueue(self.store.append_batch, stream, values)  # type: ignore[no-any-return]

    async def put_blob(self, stream: str, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in the stream (the last write wins)."""
        check_key(key)
        await self._enqueue(self.store.put_blob, stream, key, value)

    async def create_stream(self, name: str) -> None:
        """Create an empty stream (appending to a new name creates it too). Idempotent."""
        check_stream_name(name)
        await self._enqueue(self.store.create_stream, name)

    async def drop_stream(self, name: str) -> None:
        """Delete a stream with its events and blobs."""
        await self._enqueue(self.store.drop_stream, name)

    async def sync(self) -> None:
        """Return once every write queued before this call is durable on disk."""
        await self._enqueue(self._sync_fn)

    # -------------------------------------------------------------------- reads
    async def get(self, stream: str, seq: int) -> Any:
        """The event ``seq`` of ``stream``."""
        return await self._run(self.store.get, stream, seq)

    def scan(self, stream: str, start: int = 0, stop: int | None = None) -> Scan:
        """Events ``start <= seq < stop`` in order, as an async iterator (``stop``
        defaults to the end as of the first step). Fetched in chunks in the
        executor; ``async with store.scan(...) as events:`` releases the segments
        it reads as soon as the block ends (otherwise: when exhausted or collected)."""
        return Scan(self, stream, start, stop)

    async def read_range(self, stream: str, start: int = 0, stop: int | None = None) -> list[Any]:
        """The events of ``scan(stream, start, stop)`` as a list (one executor call)."""
        return await self._run(self.store.read_range, stream, start, stop)

    async def get_blob(self, stream: str, key: str) -> Any:
        """The latest value stored under ``key`` in ``stream``."""
        return await self._run(self.store.get_blob, stream, key)

    async def has_blob(self, stream: str, key: str) -> bool:
        return await self._run(self.store.has_blob, stream, key)

    async def blob_keys(self, stream: str) -> list[str]:
        return await self._run(self.store.blob_keys, stream)

    async def stats(self) -> StoreStats:
        return await self._run(self.store.stats)

    async def verify(self) -> VerifyReport:
        return await self._run(self.store.verify)

    async def refresh(self) -> None:
        """Read-only store: see what the writer flushed or sealed since (see engine.Store.refresh)."""
        await self._run(self.store.refresh)

    # In memory (the catalog lock only): plain calls.
    def next_seq(self, stream: str) -> int:
        """The number of events in the stream, counting appends performed but not yet acknowledged."""
        return self.store.next_seq(stream)

    def has_stream(self, name: str) -> bool:
        return self.store.has_stream(name)

    def __contains__(self, name: object) -> bool:
        return name in self.store

    def stream_info(self, name: str) -> StreamInfo:
        return self.store.stream_info(name)

    def streams(self) -> list[StreamInfo]:
        return self.store.streams()

    # ------------------------------------------------------------------ closing
    @property
    def closed(self) -> bool:
        return self._closing

    async def close(self) -> None:
        """Refuse new operations, complete the queued ones, close the store. Idempotent;
        cancelling the caller does not stop the closing."""
        self._check_loop()
        if self._close_task is None:
            self._closing = True
            self._seal()  # what this turn queued goes too
            self._close_task = self._loop.create_task(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        committer = self._committer
        loop = self._loop
        try:
            if committer is not None:
                committer.stop()
                await loop.run_in_executor(None, committer.join)
        finally:
            await loop.run_in_executor(None, self.store.close)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else self.options.durability.value
        return f"<seglog.aio.Store {self.path} {state}>"


class Scan:
    """An async iterator over a stream's events (see :meth:`Store.scan`)."""

    def __init__(self, store: Store, stream: str, start: int, stop: int | None) -> None:
        self._store = store
        self._args = (stream, start, stop)
        self._it: Iterator[Any] | None = None
        self._buf: list[Any] = []
        self._pos = 0
        self._chunk = 64
        self._done = False

    def __aiter__(self) -> Scan:
        return self

    async def __anext__(self) -> Any:
        if self._pos < len(self._buf):
            value = self._buf[self._pos]
            self._pos += 1
            return value
        if self._done:
            raise StopAsyncIteration
        self._buf = await self._store._run(self._fill, self._chunk)
        self._pos = 0
        self._chunk = min(self._chunk * 4, self._store.SCAN_CHUNK)
        if not self._buf:
            raise StopAsyncIteration
        self._pos = 1
        return self._buf[0]

    def _fill(self, n: int) -> list[Any]:
        """The next ``n`` events (executor thread)."""
        if self._it is None:
            self._it = self._store.store.scan(*self._args)
        chunk = list(islice(self._it, n))
        if len(chunk) < n:
            self._finish()
        return chunk

    def _finish(self) -> None:
        self._done = True
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()  # unpins the segments it read

    async def aclose(self) -> None:
        """Stop early: release what the scan holds."""
        self._finish()
        self._buf = []

    async def __aenter__(self) -> Scan:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._finish()


class _Opening:
    """What :func:`open` returns: await it, or use it with ``async with``."""

    def __init__(self, path: str | os.PathLike[str], options: dict[str, Any]) -> None:
        self._path = path
        self._options = options
        self._store: Store | None = None

    def __await__(self) -> Generator[Any, None, Store]:
        return self._open().__await__()

    async def _open(self) -> Store:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, functools.partial(open_sync, self._path, **self._options))
        try:
            sync = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The open goes on in its thread: close what it opens, or the writer lock stays held.
            fut.add_done_callback(_close_abandoned)
            raise
        return Store(sync, loop)

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._store is not None:
            await self._store.close()


def _close_abandoned(fut: asyncio.Future[SyncStore]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        threading.Thread(target=fut.result().close, name="seglog-aio-close", daemon=True).start()


def open(path: str | os.PathLike[str], **options: Any) -> _Opening:
    """Open (creating when needed) the store in directory ``path`` for asyncio:
    ``async with engine.aio.open(path) as store:`` or ``store = await engine.aio.open(path)``
    (then ``await store.close()``). Options are those of :func:`engine.open`."""
    return _Opening(path, options)
