"""PersistenceManager: the session server's persistence.

Owns the store, the catalog of sessions and a background thread that saves
dirty sessions: a session is saved once it has ``save_after`` unsaved changes
or its oldest unsaved change is ``save_interval`` seconds old, whichever comes
first. A clean session costs nothing. ``shutdown()`` (also run at interpreter
exit) stops the thread and saves everything synchronously.

Saving shares the GIL with the threads that record, so it never holds it for
long. A save is written in steps of the oldest pending changes: at most
``step_events`` events (64) and about ``step_bytes`` (256 KiB) of states and
receipts each, a few hundred us of work at most (the steps of one save, or of
one slice of the background saver, reach the OS in one write). The background
saver takes steps only when no command can be running: the GIL came free
before the switch interval forced anybody off it (the recording threads sleep
or wait for I/O), or no event was recorded for ``quiet_s`` (0.1 ms; they run
Python between commands). A step at another time would run inside a command,
which would wait for it. It runs steps for ``slice_s`` (2 ms), then sleeps
``pause_s`` (0.2 ms), long enough for a thread that waits for the GIL to wake
up and take it. When threads record flat out and leave it no such moment, a
session with ``yield_after`` (2 x ``save_after``) unsaved events makes the
thread recording it hand the GIL to the saver for one step of it, at an
event's boundary, and wait for that step: its changes are then written as they
come, in bounded pieces, instead of the saver taking the GIL by force (after
the switch interval, 5 ms) for as long as it likes. At ``max_pending`` (16 x
``save_after``) unsaved changes, which only a saver that cannot write reaches,
the recording thread saves the session itself: memory stays bounded.

What survives a crash (SIGKILL): every change a save has written. With the
default store durability ("process") a save's records reach the OS before
the save returns, so a SIGKILL loses at most the changes recorded since the
last save, that is at most ``save_interval`` seconds or ``save_after``
changes of each session (``yield_after`` while threads record flat out and
leave the saver no time, more only while writes fail or stall). Call ``force_save()`` after a command to make it
survive a SIGKILL; open with ``durability="power"`` to make saves survive
power loss too.

When a save fails (say, the disk is full) the manager's sessions refuse new
events (SaveFailedError, chained to the failure) until a save succeeds; after
a failed write the store refuses writes for good, and so do the sessions
until the store is opened again. After ``shutdown()`` they raise
StoreClosedError. Either way nothing is accepted that would be lost.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import (
    InvalidArgumentError,
    SaveFailedError,
    StoreClosedError,
    StoreFailedError,
    UnknownSessionError,
)
from ..log.options import Durability
from ..log.store import Store
from ..log.store import open as open_store
from .catalog import SessionCatalog
from .instance import Changes, RecordingGate, SessionInstance
from .persister import SessionPersister
from .pool import SessionPool
from .schema import check_session_name, iso_now

log = logging.getLogger(__name__)

#: A save writes at most this many events per step (one engine write: about 100 us
#: of the GIL for REPL events with their states) ...
STEP_EVENTS = 64
#: ... and about this many bytes of states and receipts (at least one event).
STEP_BYTES = 256 << 10
#: The background saver runs steps for about this long at a time (while no
#: recording goes on), then sleeps PAUSE_S: a thread that waits for the GIL gets it.
SLICE_S = 0.002
PAUSE_S = 0.0002
#: Recording is taken to go on while the last event is younger than this: the
#: background saver then takes no step (it would land inside a command), and wants
#: the GIL again PAUSE_S later.
QUIET_S = 0.0001
#: How long a recording thread that handed the GIL to the saver waits for its steps,
#: and how many steps of its session it waits for at most.
HANDOFF_TIMEOUT_S = 0.002
CATCH_UP = 2


class PersistenceManager:
    """Sessions saved in the background (see the module docstring). ``step_events`` and
    ``step_bytes`` bound a step of a save; ``yield_after`` (default 2 x ``save_after``)
    is when a recording thread hands the GIL to the saver for a step of its session."""

    def __init__(
        self,
        pool: SessionPool,
        directory: str | os.PathLike[str],
        save_interval: float = 1.0,
        save_after: int = 256,
        *,
        max_pending: int | None = None,
        durability: Durability | str = Durability.PROCESS,
        store_options: dict[str, Any] | None = None,
        register_atexit: bool = True,
        step_events: int = STEP_EVENTS,
        step_bytes: int = STEP_BYTES,
        yield_after: int | None = None,
    ) -> None:
        if not save_interval > 0:
            raise InvalidArgumentError(f"save_interval must be positive, not {save_interval}")
        if save_after < 1:
            raise InvalidArgumentError(f"save_after must be at least 1, not {save_after}")
        self.pool = pool
        self.save_interval = save_interval
        self.save_after = save_after
        #: A session with this many unsaved changes is saved by the thread recording
        #: them (backpressure: memory stays bounded when saving cannot keep up).
        self.max_pending = max_pending if max_pending is not None else 16 * save_after
        if self.max_pending < save_after:
            raise InvalidArgumentError(f"max_pending must be at least save_after ({save_after})")
        if step_events < 1 or step_bytes < 1:
            raise InvalidArgumentError(
                f"step_events and step_bytes must be at least 1, not {step_events} and {step_bytes}"
            )
        if yield_after is not None and yield_after < 1:
            raise InvalidArgumentError(f"yield_after must be at least 1, not {yield_after}")
        options = {"compress_events": True, **(store_options or {})}
        self.store: Store = open_store(directory, durability=durability, **options)
        self.catalog = SessionCatalog(self.store)
        self._lock = self.catalog.lock
        if self.catalog.collect():
            log.info("%s: dropped data of deleted or unfinished sessions", self.store.path)
        self._closed = False
        self._closing = False  # shutdown() has begun: sessions refuse new events
        #: Sessions whose last save failed, with the failure (the gate is shut while any).
        self._failed: dict[str, BaseException] = {}
        self._gate = RecordingGate()
        self._gate_lock = threading.Lock()
        # Instances handed out, while the caller holds them (one instance per session).
        self._live: weakref.WeakValueDictionary[str, SessionInstance] = weakref.WeakValueDictionary()
        #: Largest step of a save: events, and bytes of states and receipts.
        self.step_events = step_events
        self.step_bytes = step_bytes
        #: A session with this many unsaved events makes the thread recording them hand
        #: the GIL to the background saver for a step of it (before max_pending).
        self.yield_after = min(yield_after if yield_after is not None else 2 * save_after, self.max_pending)
        self.slice_s = SLICE_S
        self.pause_s = PAUSE_S
        self.quiet_s = QUIET_S
        self.handoff_timeout_s = HANDOFF_TIMEOUT_S
        self.catch_up = CATCH_UP
        #: Beyond yield_after, a session hands the GIL over every this many events (each
        #: hand-off catches up catch_up steps at most: the backlog shrinks fast).
        self._handoff_every = max(step_events // 2, 1)
        self._writes = threading.local()  # the steps of the thread's open _one_write
        self._wake = threading.Event()  # work for the saver: a session may be due
        #: Released when a recording thread asks for a step (the saver waits to acquire it):
        #: a bare lock, cheaper to hand over than an Event.
        self._kick = threading.Lock()
        self._kick.acquire()
        self._stop = threading.Event()
        self._served = 0  # steps served to recording threads
        self._stalled_at = -1  # _served when a recording thread last waited for one in vain
        #: Sessions whose recording thread waits for steps of them (with the lock it
        #: waits on), and sessions a step was only asked for: served before anything else.
        self._waiting: deque[tuple[SessionInstance, threading.Lock]] = deque()
        self._asked: deque[SessionInstance] = deque()
        self.saves = 0  # saves that wrote something
        self.save_steps = 0  # steps of those saves
        pool.saver = self.save_session
        self._thread = threading.Thread(target=self._run, name="seglog-session-saver", daemon=True)
        self._thread.start()
        self._atexit = register_atexit
        if register_atexit:
            atexit.register(self.shutdown)

    def _named(self, name: str) -> SessionPersister:
        check_session_name(name)
        with self._lock:
            self._check_open()
            return self.catalog.persister(name)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the PersistenceManager was shut down")

    # -- refusing new events --------------------------------------------------------------
    def _update_gate(self) -> None:
        with self._gate_lock:
            self._gate.refuse = self._refuse if (self._closing or self._failed) else None

    def _refuse(self, inst: SessionInstance) -> None:
        """Raise the reason why ``inst`` may not record (see RecordingGate)."""
        if self._closing:
            raise StoreClosedError(
                f"session {inst.name!r} cannot record: its PersistenceManager ({self.store.path}) was shut down"
            )
        failures = list(self._failed.items())
        if not failures:
            return
        name, exc = failures[0]
        whose = "its last save" if name == inst.name else f"the last save of session {name!r}"
        if isinstance(exc, StoreFailedError):
            then = "the store refuses writes until it is opened again (shut the PersistenceManager down)"
        else:
            then = "new events are refused until a save succeeds"
        raise SaveFailedError(f"session {inst.name!r} cannot record: {whose} failed ({exc}); {then}") from exc

    def _save_failed(self, name: str, exc: BaseException) -> None:
        first = name not in self._failed
        self._failed[name] = exc
        if first:
            self._update_gate()

    def _save_succeeded(self, name: str) -> None:
        if self._failed.pop(name, None) is not None:
            self._update_gate()

    # -- instances ----------------------------------------------------------------------
    def _attach(self, inst: SessionInstance, uid: str) -> SessionInstance:
        """Bind an instance to its stored session (caller holds the catalog lock)."""
        inst.on_change = self._note_change
        inst.gate = self._gate
        inst.uid = uid
        inst.max_value_bytes = self.store.options.max_record_bytes
        self._live[inst.name] = inst
        return inst

    def _pooled(self, inst: SessionInstance) -> SessionInstance:
        """Put an instance in the pool. Never under the catalog lock: an eviction may
        save another session, which takes the catalog lock after that session's save lock."""
        self.pool.put(inst)
        return inst

    def _note_change(self, inst: SessionInstance, pending: int) -> None:
        if pending >= self.save_after:
            if not self._wake.is_set():
                self._wake.set()
            if pending >= self.yield_after and not self._closed:
                if pending >= self.max_pending:
                    self.save_session(inst)  # saving cannot keep up: save here (bounds memory)
                elif (pending - self.yield_after) % self._handoff_every == 0:
                    self._give_way(inst)
        if inst.name not in self.pool and not inst.deleted:  # recorded into after eviction: track it
            self.pool.put(inst)

    def _kick_saver(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: the saver has not taken it yet
            self._kick.release()

    def _give_way(self, inst: SessionInstance, wait: bool = True) -> None:
        """The session has yield_after unsaved events: its changes pile up faster than
        the background saver, which takes no step while recording goes on, writes them.
        Hand the GIL to the saver for steps of it now, at an event's boundary, until it
        is below yield_after again (catch_up steps at most; usually one), and wait for
        them (handoff_timeout_s at most), instead of leaving the saver to take the GIL
        by force some time in a command.

        A wait that times out finds the saver in a slow write (a segment being sealed)
        or off the CPU: until it has served a step again, threads only ask for a step
        and do not wait. So does a thread that must not block (``wait`` False)."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return
        served = self._served
        if wait and served != self._stalled_at:
            done = threading.Lock()
            done.acquire()
            self._waiting.append((inst, done))
            self._kick_saver()
            if not self._wake.is_set():
                self._wake.set()
            if not done.acquire(timeout=self.handoff_timeout_s):
                self._stalled_at = served
        elif not inst.step_requested:
            inst.step_requested = True
            self._asked.append(inst)
            self._kick_saver()
            if not self._wake.is_set():
                self._wake.set()

    def create_session(self, name: str, session_id: str | None = None) -> SessionInstance:
        """A new, empty session (in the pool and in the catalog)."""
        check_session_name(name)
        with self._lock:
            self._check_open()
            p = self.catalog.register(name, session_id if session_id is not None else name, iso_now())
            inst = self._attach(p.instance(), p.meta.uid)
        return self._pooled(inst)

    def load_session(self, name: str) -> SessionInstance:
        """The complete session: from the pool, else from the store (raises UnknownSessionError)."""
        check_session_name(name)
        self._check_open()
        inst = self.pool.get(name)
        if inst is not None and not inst.deleted:
            inst.last_accessed = time.time()
            return inst
        with self._lock:
            p = self._named(name)
            live = self._live.get(name)
            if live is not None and live.uid == p.meta.uid and not live.deleted:
                inst = live  # evicted but still held by the caller: the same instance
            else:
                p.repair()
                inst = self._attach(p.instance(), p.meta.uid)
        inst.last_accessed = time.time()
        return self._pooled(inst)

    def has_session(self, name: str) -> bool:
        check_session_name(name)
        return name in self.catalog

    # -- saving ---------------------------------------------------------------------------
    def save_session(self, session: SessionInstance | str) -> int:
        """Write the session's changes since its last save point; return how many.

        Everything recorded before the call is written, in steps of at most
        ``step_events`` events (see the module docstring), oldest first.
        If it fails, the changes stay pending and the manager's sessions refuse new
        events until a save of this session succeeds (see SaveFailedError)."""
        if not isinstance(session, SessionInstance):
            check_session_name(session)
        inst = self.pool.get(session) if isinstance(session, str) else session
        if inst is None:
            if isinstance(session, str):
                self._named(session)  # unknown -> UnknownSessionError
            return 0
        return self._save_all(inst)

    def _save_all(self, inst: SessionInstance) -> int:
        """Write, step by step, every change of ``inst`` recorded so far (not those
        recorded meanwhile: a session recording flat out still ends)."""
        until = inst.event_count
        total = 0
        with self._one_write():
            while True:
                n = self._save_step(inst, until)
                if not n:
                    break
                total += n
                if inst.first_pending_seq >= until:
                    break
        if total:
            self.saves += 1
        return total

    def _save_step(
        self, inst: SessionInstance, until: int | None = None, blocking: bool = True, measure: bool = True
    ) -> int | None:
        """Write the oldest pending changes of ``inst`` (events before seq ``until``):
        at most ``step_events`` events and about ``step_bytes`` of states and receipts
        (one write to the OS, unless in a _one_write). Returns how many changes it wrote; None when the session was
        deleted meanwhile, or, not ``blocking``, when another save of it is in progress.
        ``measure``: update the instance's size_on_disk (a step a recording thread waits
        for leaves that to the next one)."""
        if not inst.save_lock.acquire(blocking):
            return None
        adopted = False
        try:
            changes = inst.take_changes(self.step_events, self.step_bytes, until)
            if not changes:
                return 0
            try:
                with self._lock:
                    self._check_open()
                    if inst.uid is not None and (
                        inst.name not in self.catalog or self.catalog.uid(inst.name) != inst.uid
                    ):
                        # Deleted (or replaced) while the caller still held this instance.
                        inst.mark_deleted()
                        if self.pool.get(inst.name) is inst:
                            self.pool.remove(inst.name)
                        log.warning("session %r was deleted; dropping %d unsaved changes", inst.name, len(changes))
                        self._save_succeeded(inst.name)
                        return None
                    if inst.name in self.catalog:
                        p = self.catalog.persister(inst.name)
                    else:
                        p = self.catalog.register(inst.name, inst.id, inst.created)
                    adopted = inst.uid is None
                    if adopted:
                        self._attach(inst, p.meta.uid)
                p.save(changes)
            except StoreClosedError:
                inst.restore_changes(changes)
                raise
            except Exception as exc:
                inst.restore_changes(changes)
                self._save_failed(inst.name, exc)
                raise
            except BaseException:
                inst.restore_changes(changes)
                raise
            written = getattr(self._writes, "steps", None)
            if written is not None:
                written.append((inst, changes))
            if self._failed:
                self._save_succeeded(inst.name)
            if measure:
                inst.size_on_disk = p.size_on_disk
            self.save_steps += 1
        finally:
            inst.save_lock.release()
        if adopted:
            self._pooled(inst)
        return len(changes)

    @contextlib.contextmanager
    def _one_write(self) -> Iterator[None]:
        """Steps this thread runs inside reach the OS in one write when it ends (one
        system call, and no GIL release between them). If that write fails, what they
        wrote is not stored: their changes are put back (the newest first, so that each
        session keeps its order) and their sessions refuse new events."""
        if getattr(self._writes, "steps", None) is not None:  # nested: the outer one writes
            yield
            return
        written: list[tuple[SessionInstance, Changes]] = []
        self._writes.steps = written
        inner: BaseException | None = None
        try:
            with self.store.batch():
                try:
                    yield
                except BaseException as exc:
                    inner = exc
                    raise
        except BaseException as exc:
            if exc is not inner:  # the write failed: nothing of the steps is stored
                for inst, changes in reversed(written):
                    inst.restore_changes(changes)
                    if isinstance(exc, Exception) and not isinstance(exc, StoreClosedError):
                        self._save_failed(inst.name, exc)
            raise
        finally:
            self._writes.steps = None

    def save_dirty_sessions(self) -> int:
        """Save every dirty pooled session; return the number of changes written."""
        return sum(self.save_session(inst) for inst in self.pool.dirty_sessions())

    def force_save(self, name: str | None = None) -> int:
        """Save now (one session, or all), after waiting for any save in progress."""
        if name is not None:
            return self.save_session(name)
        return self.save_dirty_sessions()

    def _due(self, inst: SessionInstance, now: float) -> bool:
        n = inst.pending_changes
        return n >= self.save_after or (n > 0 and now - inst.first_change_at >= self.save_interval)

    # -- the background saver ----------------------------------------------------------
    # It takes steps of its own only when no command can be running: the GIL was free
    # when it woke up (the recording threads sleep or wait for I/O), or no event was
    # recorded for quiet_s (they run Python between commands). Otherwise a step would
    # run inside a command, which would wait for it; a thread whose sessions pile up
    # changes hands it the GIL for a step at an event's boundary instead (_give_way).
    # It runs steps for slice_s, then sleeps pause_s, long enough for a thread that
    # waits for the GIL to wake up and take it (a shorter release is usually taken back
    # by the saver first, and restarts the waiter's switch interval).
    def _run(self) -> None:
        tick = min(self.save_interval / 4, 0.25)
        next_round = 0.0  # set while recording goes on: when to look at the due sessions again
        last_round = 0.0
        while not self._stop.is_set():
            self._serve_urgent()
            if next_round:
                wait = next_round - time.monotonic()
                if wait > 0 and self._idle(wait):
                    continue  # a recording thread asked for a step: serve it
                if not self._may_run() and time.monotonic() - last_round < tick:
                    # Recording goes on: serve hand-offs only, and want the GIL again
                    # soon, so as to have it when the recording threads next let go
                    # of it (a round now and then still finds sessions that record
                    # nothing and wait too long, see _turn).
                    next_round = time.monotonic() + self.pause_s
                    continue
            elif not (self._waiting or self._asked):
                self._wake.wait(tick)
                self._wake.clear()
            if self._stop.is_set():
                return
            self._serve_urgent()
            last_round = now = time.monotonic()
            deferred = False
            for inst in self.pool.instances():
                if self._stop.is_set():
                    return
                if self._due(inst, now):
                    deferred = self._guarded(inst, self._background_save) or deferred
            next_round = time.monotonic() + self.pause_s if deferred else 0.0

    def _idle(self, timeout: float) -> bool:
        """Wait ``timeout`` (without the GIL) for a recording thread's request; True if
        one came (to be served)."""
        return self._kick.acquire(timeout=timeout)

    def _may_run(self) -> bool:
        """The saver may take steps of its own now: no event was recorded for quiet_s, so
        no command is being recorded (the recording threads sleep, wait for I/O, or run
        Python between commands)."""
        return time.monotonic() - self._gate.recorded_at >= self.quiet_s

    def _guarded(self, inst: SessionInstance, save: Callable[[SessionInstance], bool | None]) -> bool | None:
        """Run a save of the background saver and return what it returns, logging a
        failure. When saving cannot go on (the store is closed or refuses writes) the
        saver stops: ``_stop`` is set."""
        failing = inst.name in self._failed
        try:
            return save(inst)
        except StoreClosedError:
            self._stop.set()
        except StoreFailedError:
            # The store refuses writes until it is reopened: retrying is futile.
            log.exception(
                "background save of session %r failed; the store refuses writes until "
                "it is opened again, background saving stops",
                inst.name,
            )
            self._stop.set()
        except Exception:
            if not failing:
                log.exception(
                    "background save of session %r failed; new events are refused until a retry succeeds", inst.name
                )
        return None

    def _serve_urgent(self) -> bool:
        """Run the steps recording threads asked for: those of the threads that wait,
        then (if none did) one of those only asked for. True if there were any."""
        served = False
        while self._waiting:
            inst, done = self._waiting.popleft()
            try:
                for _ in range(self.catch_up):
                    if (
                        inst.deleted
                        or self._stop.is_set()
                        or not self._guarded(inst, self._urgent_step)
                        or inst.pending_events < self.yield_after
                    ):
                        break
            finally:
                self._served += 1
                done.release()
            served = True
        if not served and self._asked:
            inst = self._asked.popleft()
            try:
                if not inst.deleted and not self._stop.is_set():
                    self._guarded(inst, self._urgent_step)
            finally:
                inst.step_requested = False
                self._served += 1
            served = True
        if served:  # the threads that waited go on recording now
            self._gate.recorded_at = time.monotonic()
        return served

    def _urgent_step(self, inst: SessionInstance) -> bool:
        """One step of a session a recording thread asked for; True if it wrote some."""
        if self._save_step(inst, blocking=False, measure=False):
            self.saves += 1
            return True
        return False

    def _background_save(self, inst: SessionInstance) -> bool:
        """Write what ``inst`` recorded so far, step by step, in slices between which
        other threads run. Returns True when it left some for later because recording
        goes on (see _turn)."""
        until = inst.event_count
        total = 0
        try:
            while not self._stop.is_set():
                slice_s = self._turn(inst)
                if slice_s is None:
                    return True
                end = time.perf_counter() + slice_s
                with self._one_write():  # no GIL release (a system call) between the steps
                    while True:
                        n = self._save_step(inst, until)
                        if not n or inst.first_pending_seq >= until:
                            total += n or 0
                            return False
                        total += n
                        if self._serve_urgent() or time.perf_counter() >= end or self._stop.is_set():
                            break
                self._idle(self.pause_s)
            return False
        finally:
            if total:
                self.saves += 1

    def _turn(self, inst: SessionInstance) -> float | None:
        """How long the saver may now take steps of ``inst`` of its own (serving the
        steps recording threads asked for first): None while recording goes on (see
        _may_run), except for a session that records nothing itself and has been due
        for a save_interval (other sessions record flat out), which gets a single step
        now and then."""
        self._serve_urgent()
        if self._may_run():
            return self.slice_s
        if (
            time.time() - inst.last_accessed >= self.save_interval
            and inst.first_change_at
            and time.monotonic() - inst.first_change_at >= 2 * self.save_interval
        ):
            return 0.0
        return None

    def shutdown(self) -> None:
        """Stop background saving, save everything, close the store. Idempotent.

        From now on the sessions refuse new events (StoreClosedError)."""
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
        self._update_gate()
        for inst in self.pool.instances():  # also those the manager did not make
            inst.gate = self._gate
        self._stop.set()
        self._wake.set()
        self._kick_saver()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.save_dirty_sessions()
            # Instances evicted from the pool but still held by the caller.
            for inst in list(self._live.values()):
                if inst.dirty and not inst.deleted:
                    self.save_session(inst)
        finally:
            with self._lock:
                self._closed = True
                self.store.close()
            if self._atexit:
                atexit.unregister(self.shutdown)

    close = shutdown

    def __enter__(self) -> PersistenceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- asyncio ---------------------------------------------------------------------------
    async def asave_session(self, session: SessionInstance | str) -> int:
        return await asyncio.to_thread(self.save_session, session)

    async def asave_dirty_sessions(self) -> int:
        return await asyncio.to_thread(self.save_dirty_sessions)

    async def aforce_save(self, name: str | None = None) -> int:
        return await asyncio.to_thread(self.force_save, name)

    async def aload_session(self, name: str) -> SessionInstance:
        return await asyncio.to_thread(self.load_session, name)

    async def ashutdown(self) -> None:
        await asyncio.to_thread(self.shutdown)

    # -- what the REPL reads ------------------------------------------------------------------
    def _current(self, name: str) -> SessionPersister:
        """The session's persister, after saving its pending changes (reads see everything)."""
        check_session_name(name)
        inst = self.pool.get(name)
        if inst is not None and inst.dirty:
            self.save_session(inst)
        return self._named(name)

    def list_sessions(self) -> list[dict[str, Any]]:
        """Metadata of every session, by name; history is not loaded."""
        with self._lock:
            self._check_open()
            names = self.catalog.names()
        out = []
        for name in names:
            inst = self.pool.get(name)
            if inst is not None:
                out.append(inst.metadata())
                continue
            try:
                with self._lock:
                    self._check_open()
                    p = self.catalog.persister(name)
            except UnknownSessionError:
                continue
            out.append(
                {
                    "name": name,
                    "id": p.meta.id,
                    "created": p.meta.created,
                    "last_accessed": None,
                    "event_count": p.event_count,
                    "checkpoint_count": p.checkpoint_count,
                    "size_on_disk": p.size_on_disk,
                }
            )
        return out

    def events(self, name: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Events with ``start <= seq < stop``."""
        return list(self._current(name).events(start, stop))

    def checkpoints(self, name: str) -> list[dict[str, Any]]:
        """``[{seq, stateId, reason}, ...]`` of the session, in order."""
        return self._current(name).checkpoints()

    def get_state(self, name: str, state_id: str) -> Any:
        return self._current(name).state(state_id)

    def get_receipt(self, name: str, key: str) -> dict[str, Any]:
        return self._current(name).receipt(key)

    def persister(self, name: str) -> SessionPersister:
        """The session's SessionPersister (after saving its pending changes)."""
        return self._current(name)

    def fork(self, source: str, new_name: str, at_seq: int, *, keep_header: bool = False) -> SessionInstance:
        """A new session sharing ``source``'s events ``0..at_seq`` (not copied).

        The fork gets a new header (id = its name, created = now) unless
        ``keep_header`` (save-as keeps the source's).
        """
        check_session_name(new_name)
        src = self._current(source)
        if not -1 <= at_seq < src.event_count:
            raise InvalidArgumentError(
                f"at_seq must be between -1 and {src.event_count - 1} for session {source!r}, not {at_seq}"
            )
        cp_seqs = [c["seq"] for c in src.checkpoints()]
        cp_base = bisect_right(cp_seqs, at_seq)
        with self._lock:
            self._check_open()
            sid, created = (src.meta.id, src.meta.created) if keep_header else (new_name, iso_now())
            p = self.catalog.register(new_name, sid, created, src.meta.uid, at_seq + 1, cp_base)
            inst = self._attach(p.instance(), p.meta.uid)
        return self._pooled(inst)

    def save_as(self, source: str, new_name: str) -> SessionInstance:
        """A copy of the session at its head, like ``:session save NAME`` (same header)."""
        head = self._current(source).event_count - 1
        return self.fork(source, new_name, head, keep_header=True)

    def delete(self, name: str) -> None:
        """Delete a session. What its forks share of it stays (and only that, once
        it is trimmed: FORMAT.md, "Session streams and trims"); the rest is garbage
        for the compactor, and all of it goes with the last fork.

        A save of it in progress finishes first; the instance refuses new events."""
        check_session_name(name)
        inst = self.pool.get(name)
        if inst is None:
            with self._lock:
                self._check_open()
                self.catalog.delete(name)
            self._save_succeeded(name)
            return
        with inst.save_lock, self._lock:  # the order of save_session: instance, then catalog
            self._check_open()
            self.catalog.delete(name)
            inst.mark_deleted()
            if self.pool.get(name) is inst:
                self.pool.remove(name)
        self._save_succeeded(name)  # nothing of it is left to save
