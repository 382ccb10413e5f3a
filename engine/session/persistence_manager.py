"""PersistenceManager: the session server's persistence.

Owns the store, the catalog of sessions and a background thread that saves
dirty sessions: a session is saved once it has ``save_after`` unsaved changes
or its oldest unsaved change is ``save_interval`` seconds old, whichever comes
first. A clean session costs nothing. ``shutdown()`` (also run at interpreter
exit) stops the thread and saves everything synchronously.

What survives a crash (SIGKILL): every change a save has written. With the
default store durability ("process") a save's records reach the OS before
the save returns, so a SIGKILL loses at most the changes recorded since the
last save, that is at most ``save_interval`` seconds or ``save_after``
changes of each session. Call ``force_save()`` after a command to make it
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
import logging
import os
import threading
import time
import weakref
from bisect import bisect_right
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
from .instance import RecordingGate, SessionInstance
from .persister import SessionPersister
from .pool import SessionPool
from .schema import check_session_name, iso_now

log = logging.getLogger(__name__)


class PersistenceManager:
    def __init__(self, pool: SessionPool, directory: str | os.PathLike[str], save_interval: float = 1.0,
                 save_after: int = 256, *, max_pending: int | None = None,
                 durability: Durability | str = Durability.PROCESS,
                 store_options: dict[str, Any] | None = None, register_atexit: bool = True) -> None:
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
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.saves = 0
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
            self._wake.set()
            if pending >= self.max_pending and not self._closed:
                self.save_session(inst)  # the background saver is behind: save here
        if inst.name not in self.pool and not inst.deleted:  # recorded into after eviction: track it
            self.pool.put(inst)

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

        If it fails, the changes stay pending and the manager's sessions refuse new
        events until a save of this session succeeds (see SaveFailedError)."""
        if not isinstance(session, SessionInstance):
            check_session_name(session)
        inst = self.pool.get(session) if isinstance(session, str) else session
        if inst is None:
            if isinstance(session, str):
                self._named(session)  # unknown -> UnknownSessionError
            return 0
        with inst.save_lock:  # waits for a save of this session in progress
            changes = inst.take_changes()
            if not changes:
                return 0
            try:
                with self._lock:
                    self._check_open()
                    if inst.uid is not None and (inst.name not in self.catalog
                                                 or self.catalog.uid(inst.name) != inst.uid):
                        # Deleted (or replaced) while the caller still held this instance.
                        inst.mark_deleted()
                        if self.pool.get(inst.name) is inst:
                            self.pool.remove(inst.name)
                        log.warning("session %r was deleted; dropping %d unsaved changes", inst.name, len(changes))
                        self._save_succeeded(inst.name)
                        return 0
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
            if self._failed:
                self._save_succeeded(inst.name)
            inst.size_on_disk = p.size_on_disk
            self.saves += 1
        if adopted:
            self._pooled(inst)
        return len(changes)

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

    def _run(self) -> None:
        tick = min(self.save_interval / 4, 0.25)
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            for inst in self.pool.instances():
                if self._due(inst, now):
                    failing = inst.name in self._failed
                    try:
                        self.save_session(inst)
                    except StoreClosedError:
                        return
                    except StoreFailedError:
                        # The store refuses writes until it is reopened: retrying is futile.
                        log.exception("background save of session %r failed; the store refuses writes until "
                                      "it is opened again, background saving stops", inst.name)
                        return
                    except Exception:
                        if not failing:
                            log.exception("background save of session %r failed; new events are refused "
                                          "until a retry succeeds", inst.name)

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
            out.append({"name": name, "id": p.meta.id, "created": p.meta.created, "last_accessed": None,
                        "event_count": p.event_count, "checkpoint_count": p.checkpoint_count,
                        "size_on_disk": p.size_on_disk})
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
