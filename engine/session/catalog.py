"""SessionCatalog: which sessions a store holds, by name.

Kept as blobs of the catalog stream (see ``layout``): per name the session's
uid, per uid its SessionMeta; also the snapshots an import kept.

Sessions are addressed by uid inside the store, so a name can be deleted and
used again, and a fork can keep sharing the data of a deleted source. A
session is visible only once its name entry is written: that single record
is the commit point of imports and forks. Works on read-only stores too
(everything but the writing methods).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from ..errors import SessionExistsError, UnknownSessionError
from ..log.store import Store
from . import layout
from .layout import CATALOG
from .persister import SessionMeta, SessionPersister

__all__ = ["CATALOG", "SessionCatalog"]


class SessionCatalog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        self._metas: dict[str, SessionMeta] = {}  # by uid
        self._names: dict[str, str] = {}  # name -> uid
        self._persisters: dict[str, SessionPersister] = {}  # by uid
        self._preparing: set[str] = set()  # prepared, not yet published
        self._load()

    def _load(self) -> None:
        if not self.store.has_stream(CATALOG):
            return
        keys = self.store.blob_keys(CATALOG)
        for key, _uid in layout.meta_keys(keys):
            doc = self.store.get_blob(CATALOG, key)
            if doc is not None:  # None: a deleted session whose data is gone
                meta = SessionMeta.from_doc(doc)
                self._metas[meta.uid] = meta
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

    def prepare(self, name: str, session_id: str, created: str, parent: str | None = None,
                base: int = 0, cp_base: int = 0) -> SessionPersister:
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

    def register(self, name: str, session_id: str, created: str, parent: str | None = None,
                 base: int = 0, cp_base: int = 0) -> SessionPersister:
        """Create a session and make it visible at once."""
        with self.lock:
            if name in self._names:
                raise SessionExistsError(f"session {name!r} already exists")
            p = self.prepare(name, session_id, created, parent, base, cp_base)
            self.publish(p)
            return p

    def delete(self, name: str) -> None:
        """Delete a session. Its data stays while forks share it, and goes with the last one."""
        with self.lock:
            uid = self.uid(name)
            del self._names[name]
            self.store.put_blob(CATALOG, layout.name_key(name), None)
            self._retire(uid)
            self.collect()

    def _retire(self, uid: str) -> None:
        meta = self._metas[uid]
        meta.deleted = True
        self.write_meta(meta)

    def collect(self) -> int:
        """Drop the data of sessions that are deleted (or were left unpublished by a
        crash) and that no visible or in-flight session shares. Returns how many."""
        with self.lock:
            needed = set(self._preparing)
            for uid in [*self._names.values(), *self._preparing]:
                cur: str | None = uid
                while cur is not None and cur not in needed:
                    needed.add(cur)
                    cur = self._metas[cur].parent
            dropped = 0
            for uid in list(self._metas):
                if uid in needed:
                    continue
                for stream in layout.session_streams(uid):
                    if self.store.has_stream(stream):
                        self.store.drop_stream(stream)
                self.store.put_blob(CATALOG, layout.meta_key(uid), None)
                del self._metas[uid]
                self._persisters.pop(uid, None)
                dropped += 1
            return dropped

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
        return {name: self.store.get_blob(CATALOG, key)["raw"]
                for key, name in layout.snapshot_keys(self.store.blob_keys(CATALOG))}
