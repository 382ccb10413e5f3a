"""SessionPool: an in-memory LRU of SessionInstances with a size limit.

A dirty session is saved (by the ``saver`` the PersistenceManager attaches)
before it leaves the pool; it is never dropped with unsaved changes. If no
saver is attached, or saving fails, the session stays in the pool past the
limit and the failure is logged.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice

from ..errors import InvalidArgumentError
from .instance import SessionInstance

log = logging.getLogger(__name__)


class SessionPool:
    def __init__(self, max_size: int = 100) -> None:
        if max_size < 1:
            raise InvalidArgumentError(f"max_size must be at least 1, not {max_size}")
        self.max_size = max_size
        self._items: OrderedDict[str, SessionInstance] = OrderedDict()
        self._lock = threading.Lock()
        #: Saves a dirty instance synchronously; set by the PersistenceManager.
        self.saver: Callable[[SessionInstance], object] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def get(self, name: str) -> SessionInstance | None:
        """The pooled instance (now most recently used), or None."""
        with self._lock:
            inst = self._items.get(name)
            if inst is not None:
                self._items.move_to_end(name)
            return inst

    def put(self, instance: SessionInstance) -> None:
        """Add (or refresh) an instance, evicting the least recently used beyond ``max_size``."""
        with self._lock:
            self._items[instance.name] = instance
            self._items.move_to_end(instance.name)
            # The least recently used come first; the new instance is last.
            victims = list(islice(self._items.values(), max(len(self._items) - self.max_size, 0)))
        for victim in victims:
            self._evict(victim)

    def _evict(self, victim: SessionInstance) -> None:
        if victim.dirty:
            if self.saver is None:
                log.warning("session %r is dirty and no saver is attached; keeping it in the pool", victim.name)
                return
            try:
                self.saver(victim)
            except Exception:
                log.exception("saving session %r before eviction failed; keeping it in the pool", victim.name)
                return
        with self._lock:
            if self._items.get(victim.name) is victim and not victim.dirty:
                del self._items[victim.name]

    def remove(self, name: str) -> SessionInstance | None:
        """Take an instance out without saving it (for deleted sessions)."""
        with self._lock:
            return self._items.pop(name, None)

    def instances(self) -> list[SessionInstance]:
        with self._lock:
            return list(self._items.values())

    def dirty_sessions(self) -> list[SessionInstance]:
        """The pooled instances with unsaved changes."""
        return [inst for inst in self.instances() if inst.dirty]
