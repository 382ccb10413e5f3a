"""seglog for asyncio programs: the store and the session layer, awaitable.

>>> import engine.aio
>>> async def main() -> None:                               # doctest: +SKIP
...     async with engine.aio.open("/var/lib/repl/store", durability="power") as store:
...         seq = await store.append("session-1", {"type": "input", "code": "(+ 1 2)"})
...         await store.get("session-1", seq)
...         async for event in store.scan("session-1"):
...             ...

- :func:`open` / :class:`Store`: the log. Writes from any number of tasks are
  grouped per turn of the event loop and made durable by one flusher thread;
  the loop is woken once per group to acknowledge it (see :mod:`engine.aio.store`).
- :class:`PersistenceManager`: the session layer. Recording (``session.input``,
  ``step``, ...) stays a plain call that never blocks the loop; saves, loads,
  forks, deletes, queries and shutdown are awaited and run in worker threads.

**One event loop.** A store (or manager) belongs to the event loop that opened
it: the flusher acknowledges groups on that loop only. Awaiting one of its
methods from another event loop raises :class:`~engine.errors.SeglogError` (and
changes nothing). Close it in its own loop, then open it again in the other;
threads and other loops may share the thread-safe :class:`engine.Store` instead.
"""

from .session import PersistenceManager
from .store import Scan, Store, open

__all__ = ["PersistenceManager", "Scan", "Store", "open"]
