"""SessionCatalog: which sessions a store holds, by name.

Kept as blobs of the catalog stream (see ``layout``): per name the session's
uid, per uid its SessionMeta; also the snapshots an import kept.

Sessions are addressed by uid inside the store, so a name can be deleted and
used again, and a fork can keep sharing the data of a deleted source. A
session is visible only once its name entry is written: that single record
is the commit point of imports and forks. Works on read-only stores too
(everything but the writing methods).

:meth:`SessionCatalog.collect` (run by every deletion and when a
PersistenceManager opens the store) gives back what no visible or in-flight
session can read:

- a deleted session that nothing shares: its streams are dropped, then its
  meta is set to None;
- a deleted session that forks still share, once it holds much more than its
  descendants reach (:attr:`SessionCatalog.trim_min_events`,
  :attr:`SessionCatalog.trim_margin`): it is *trimmed*. What its descendants
  reach is its events before the largest ``base`` of its children (a deleted
  child counts only as far as its own descendants read it), the checkpoints
  before the largest ``cp_base`` of its children (likewise), the states whose
  checkpoint comes before that seq with their whole delta chains, and of each
  receipt the versions that a read from each fork point finds. That is copied
  into the streams of the session's next generation (``layout``), then one
  record switches the meta to them, then the old streams are dropped. A crash
  before the switch leaves the new streams as orphans, one after it the old
  ones; either way the data is whole in the generation the meta names. Each
  deleted ancestor of a chain of forks keeps what its live descendants reach
  through it;
- orphans: a session stream whose uid's meta names the streams of another
  generation, or is None. They are looked for once after opening (a crash
  left them) and after a collect that failed part way.

Trims copy under the catalog lock: saves of other sessions wait for them.

The log's compactor then reclaims the records of the dropped streams.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from typing import Any

from ..errors import SessionExistsError, UnknownSessionError
from ..log.store import Store
from . import layout
from .layout import CATALOG
from .persister import SessionMeta, SessionPersister

__all__ = ["CATALOG", "SessionCatalog"]

log = logging.getLogger(__name__)


class SessionCatalog:
    #: A deleted session that forks share is trimmed once the events it holds beyond
    #: what its descendants reach are at least this many ...
    trim_min_events = 256
    #: ... and at least this fraction of the events they reach (so that a session
    #: is copied again only when what is needed of it shrinks by as much).
    trim_margin = 0.5

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self._metas: dict[str, SessionMeta] = {}  # by uid
        self._gone: set[str] = set()  # uids whose meta is None: their data was dropped
        # Orphans come from a crash (so look once after opening) or from a collect()
        # that failed part way (then look again): listing every stream is not free.
        self._look_for_orphans = True
        # Sessions whose meta switch failed: the store may name either generation, so
        # neither is touched again before the catalog is loaded anew.
        self._unsure: set[str] = set()
        self._names: dict[str, str] = {}  # name -> uid
        self._persisters: dict[str, SessionPersister] = {}  # by uid
        self._preparing: set[str] = set()  # prepared, not yet published
        self._load()

    def _load(self) -> None:
        if not self.store.has_stream(CATALOG):
            return
        keys = self.store.blob_keys(CATALOG)
        for key, uid in layout.meta_keys(keys):
            doc = self.store.get_blob(CATALOG, key)
            if doc is not None:  # None: a deleted session whose data is gone
                meta = SessionMeta.from_doc(doc)
                self._metas[meta.uid] = meta
            else:
                self._gone.add(uid)
        for key, name in layout.name_keys(keys):
            uid = self.store.get_blob(CATALOG, key)
            if uid is not None and uid in self._metas:
                self._names[name] = uid

    # -- reading -----------------------------------------------------------------------
    def names(self) -> list[str]:
        with self.lock:
            return sorted(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names

    def uid(self, name: str) -> str:
        with self.lock:
            uid = self._names.get(name)
            if uid is None:
                raise UnknownSessionError(f"no session named {name!r} in {self.store.path}")
            return uid

    def persister(self, name: str) -> SessionPersister:
        with self.lock:
            return self.persister_by_uid(self.uid(name))

    def persister_by_uid(self, uid: str) -> SessionPersister:
        with self.lock:
            p = self._persisters.get(uid)
            if p is None:
                meta = self._metas[uid]
                parent = self.persister_by_uid(meta.parent) if meta.parent is not None else None
                p = SessionPersister(self.store, meta, parent, self.store.options.max_record_bytes)
                self._persisters[uid] = p
            return p

    # -- writing -----------------------------------------------------------------------
    def write_meta(self, meta: SessionMeta) -> None:
        with self.lock:
            self.store.put_blob(CATALOG, layout.meta_key(meta.uid), meta.to_doc())
            self._metas[meta.uid] = meta

    def prepare(
        self, name: str, session_id: str, created: str, parent: str | None = None, base: int = 0, cp_base: int = 0
    ) -> SessionPersister:
        """A new session's persister, not yet visible under ``name`` (see :meth:`publish`)."""
        meta = SessionMeta(secrets.token_hex(8), name, session_id, created, parent, base, cp_base)
        with self.lock:
            self._preparing.add(meta.uid)
            self.write_meta(meta)
            return self.persister_by_uid(meta.uid)

    def abandon(self, persister: SessionPersister) -> None:
        """Give up a prepared session (an import that failed): its data is dropped."""
        with self.lock:
            self._preparing.discard(persister.meta.uid)
            self.collect()

    def publish(self, persister: SessionPersister, replace: bool = False) -> None:
        """Make a prepared session visible under its name (one record: the commit point)."""
        name = persister.meta.name
        with self.lock:
            old = self._names.get(name)
            if old is not None and not replace:
                raise SessionExistsError(f"session {name!r} already exists")
            self.store.put_blob(CATALOG, layout.name_key(name), persister.meta.uid)
            self._names[name] = persister.meta.uid
            self._preparing.discard(persister.meta.uid)
            if old is not None and old != persister.meta.uid:
                self._retire(old)
                self.collect()

    def register(
        self, name: str, session_id: str, created: str, parent: str | None = None, base: int = 0, cp_base: int = 0
    ) -> SessionPersister:
        """Create a session and make it visible at once."""
        with self.lock:
            if name in self._names:
                raise SessionExistsError(f"session {name!r} already exists")
            p = self.prepare(name, session_id, created, parent, base, cp_base)
            self.publish(p)
            return p

    def delete(self, name: str) -> None:
        """Delete a session. What its forks reach of its data stays while they live (the
        rest is given back, see :meth:`collect`), and goes with the last one."""
        with self.lock:
            uid = self.uid(name)
            # The store first: a session is trimmed once it is not named in memory.
            self.store.put_blob(CATALOG, layout.name_key(name), None)
            del self._names[name]
            self._retire(uid)
            self.collect()

    def _retire(self, uid: str) -> None:
        meta = self._metas[uid]
        meta.deleted = True
        self.write_meta(meta)

    def collect(self) -> int:
        """Drop the data of sessions that are deleted (or were left unpublished by a
        crash) and that no visible or in-flight session shares, drop orphan streams,
        and trim deleted sessions that are shared (see the module docstring).
        Returns how many sessions' data was dropped."""
        with self.lock:
            needed = set(self._preparing)
            for uid in [*self._names.values(), *self._preparing]:
                cur: str | None = uid
                while cur is not None and cur not in needed:
                    needed.add(cur)
                    cur = self._metas[cur].parent
            dropped = 0
            try:
                if self._look_for_orphans:
                    self._drop_orphans()
                    self._look_for_orphans = False
                for uid in list(self._metas):
                    if uid in needed:
                        continue
                    for stream in self._metas[uid].streams():
                        if self.store.has_stream(stream):
                            self.store.drop_stream(stream)
                    self.store.put_blob(CATALOG, layout.meta_key(uid), None)
                    del self._metas[uid]
                    self._gone.add(uid)
                    self._persisters.pop(uid, None)
                    dropped += 1
                self._trim_shared(needed)
            except BaseException:
                self._look_for_orphans = True
                raise
            return dropped

    def _drop_orphans(self) -> int:
        """Drop the streams of a session's other generations, and of sessions whose
        data is gone (what a crash during a trim or a drop left). Streams of uids the
        catalog has no meta entry for are left alone. Returns how many."""
        n = 0
        for info in self.store.streams():
            owner = layout.stream_generation(info.name)
            if owner is None:
                continue
            uid, generation = owner
            if uid in self._unsure:
                continue
            meta = self._metas.get(uid)
            if (meta is not None and generation != meta.generation) or (meta is None and uid in self._gone):
                self.store.drop_stream(info.name)
                n += 1
        return n

    def _trim_shared(self, needed: set[str]) -> None:
        """Trim each deleted session in ``needed`` that holds much more than its
        descendants reach (see the module docstring)."""
        live = set(self._names.values()) | self._preparing
        children: dict[str, list[str]] = {}
        for uid in needed:
            parent = self._metas[uid].parent
            if parent is not None:
                children.setdefault(parent, []).append(uid)
        depth: dict[str, int] = {}
        for uid in needed:
            chain: list[str] = []
            cur: str | None = uid
            while cur is not None and cur not in depth:
                chain.append(cur)
                cur = self._metas[cur].parent
            d = depth[cur] if cur is not None else -1
            for u in reversed(chain):
                d += 1
                depth[u] = d
        # Children before parents: what a session's descendants read through it.
        # ``limits[uid]``: every seq a read can pass to it as its limit (math.inf: a
        # live session's own reads); ``cp_stops[uid]``: the checkpoint position below
        # which it is read.
        limits: dict[str, set[float]] = {}
        cp_stops: dict[str, float] = {}
        for uid in sorted(needed, key=depth.__getitem__, reverse=True):
            ls: set[float] = {math.inf} if uid in live else set()
            cs: float = math.inf if uid in live else 0
            for child in children.get(uid, ()):
                cm = self._metas[child]
                ls.update(min(lim, cm.base) for lim in limits[child])
                cs = max(cs, min(cp_stops[child], cm.cp_base))
            limits[uid] = ls
            cp_stops[uid] = cs
            if uid not in live and uid not in self._unsure and ls:  # deleted (its name entry gone)
                self._trim(self._metas[uid], {int(lim) for lim in ls}, int(cs))

    def _trim(self, meta: SessionMeta, limits: set[int], cp_stop: int) -> bool:
        """Trim a deleted session to what reads with these ``limits`` reach, if it holds
        enough more (see :attr:`trim_min_events`). Returns whether it did."""
        p = self.persister_by_uid(meta.uid)
        own = p.event_count - meta.base
        keep = min(max(max(limits) - meta.base, 0), own)
        if own - keep < max(self.trim_min_events, keep * self.trim_margin):
            return False
        generation = meta.generation + 1
        counts = p.write_trimmed(generation, limits, cp_stop)
        doc = meta.to_doc()
        doc.update(generation=generation, raw_events=-1)
        try:
            self.store.put_blob(CATALOG, layout.meta_key(meta.uid), doc)  # the switch
        except BaseException:
            self._unsure.add(meta.uid)
            raise
        old = meta.streams()
        meta.generation, meta.raw_events = generation, -1
        for stream in old:
            if self.store.has_stream(stream):
                self.store.drop_stream(stream)
        log.info(
            "%s: deleted session %s trimmed from %d to %d events (generation %d: %s)",
            self.store.path,
            meta.uid,
            own,
            keep,
            generation,
            counts,
        )
        return True

    # -- snapshots (``repl-<name>.json`` files an import kept) ------------------------------
    def snapshot_digest(self, name: str) -> str | None:
        """The digest stored with snapshot ``name``, or None when there is none."""
        key = layout.snapshot_key(name)
        if not self.store.has_stream(CATALOG) or not self.store.has_blob(CATALOG, key):
            return None
        doc: dict[str, Any] = self.store.get_blob(CATALOG, key)
        return str(doc["digest"])

    def put_snapshot(self, name: str, digest: str, raw: bytes) -> None:
        """Keep snapshot ``name`` (its bytes, as they are) with the digest of its file."""
        self.store.put_blob(CATALOG, layout.snapshot_key(name), {"digest": digest, "raw": raw})

    def snapshots(self) -> dict[str, bytes]:
        """Every kept snapshot's bytes, by name."""
        if not self.store.has_stream(CATALOG):
            return {}
        return {
            name: self.store.get_blob(CATALOG, key)["raw"]
            for key, name in layout.snapshot_keys(self.store.blob_keys(CATALOG))
        }
