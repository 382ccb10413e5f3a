"""seglog and its peers behind one small interface per benchmark.

Every peer's package is optional: :func:`require` skips the calling test
cleanly when it is missing. Values are msgpack for every binary peer (the
same bytes seglog stores per event) and compact JSON lines for the legacy
JSONL pattern. Keys of the key-value peers are ``stream u32 BE + seq u64 BE``.

Batches are ``(stream_index, first_seq, events)`` tuples from
:mod:`workload`; all encoding happens inside the timed region, for every peer.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import pytest
from workload import Batch, stream_name

import engine

KEY = struct.Struct(">IQ")  # stream id u32 BE, seq u64 BE
LMDB_MAP_SIZE = 64 << 30  # virtual only; the file grows with the data

BULK_PEERS = ("seglog", "lmdb", "sqlite", "rocksdb", "jsonl")
DURABLE_PEERS = ("seglog_8threads", "seglog_1thread_fsync", "sqlite_full_8threads")
GET_PEERS = ("seglog", "lmdb")
SCAN_PEERS = ("seglog", "jsonl_orjson")

_PACKAGES = {"lmdb": "lmdb", "rocksdb": "rocksdict", "jsonl": "orjson", "jsonl_orjson": "orjson"}


def require(peer: str) -> Any:
    """Import the package a peer needs, or skip the test when it is missing."""
    pkg = _PACKAGES.get(peer)
    return pytest.importorskip(pkg) if pkg else None


def _packer() -> Callable[[Any], bytes]:
    # Same settings as seglog's codec (use_bin_type, a reused Packer).
    return msgpack.Packer(use_bin_type=True).pack  # type: ignore[no-any-return]


# --------------------------------------------------------------------- bulk append
class BulkWriter:
    """A fresh store of one peer; ``run(batches)`` is the timed part."""

    name = "?"

    def run(self, batches: Sequence[Batch]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SeglogBulk(BulkWriter):
    name = "seglog"

    def __init__(self, path: str, n_streams: int, **options: Any) -> None:
        self.store = engine.open(path, durability="process", **options)
        self.names = [stream_name(i) for i in range(n_streams)]
        for n in self.names:  # streams exist before the timed region, as for every peer
            self.store.create_stream(n)

    def run(self, batches: Sequence[Batch]) -> None:
        append_batch = self.store.append_batch
        names = self.names
        for s, _first, evs in batches:
            append_batch(names[s], evs)

    def close(self) -> None:
        self.store.close()


class LmdbBulk(BulkWriter):
    """One write transaction per batch; sync=False/metasync=False: no fsync per commit."""

    name = "lmdb"

    def __init__(self, path: str, n_streams: int) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=LMDB_MAP_SIZE, sync=False, metasync=False)

    def run(self, batches: Sequence[Batch]) -> None:
        env = self.env
        pack = _packer()
        key = KEY.pack
        for s, first, evs in batches:
            items = [(key(s, first + i), pack(v)) for i, v in enumerate(evs)]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items)

    def close(self) -> None:
        self.env.close()


SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (stream INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY (stream, seq)) WITHOUT ROWID"
)


def sqlite_connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=120, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class SqliteBulk(BulkWriter):
    """WAL, synchronous=NORMAL, one ``executemany`` transaction per batch."""

    name = "sqlite"

    def __init__(self, path: str, n_streams: int) -> None:
        os.makedirs(path, exist_ok=True)
        self.conn = sqlite_connect(os.path.join(path, "events.db"), "NORMAL")
        self.conn.execute(SQLITE_SCHEMA)

    def run(self, batches: Sequence[Batch]) -> None:
        conn = self.conn
        pack = _packer()
        sql = "INSERT INTO events (stream, seq, data) VALUES (?, ?, ?)"
        for s, first, evs in batches:
            rows = [(s, first + i, pack(v)) for i, v in enumerate(evs)]
            conn.execute("BEGIN")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class RocksBulk(BulkWriter):
    """rocksdict in raw mode: one WriteBatch per batch, WAL on, no sync."""

    name = "rocksdb"

    def __init__(self, path: str, n_streams: int) -> None:
        import rocksdict

        self._rd = rocksdict
        self.db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
        self.wopt = rocksdict.WriteOptions()
        self.wopt.sync = False
        self.wopt.disable_wal = False

    def run(self, batches: Sequence[Batch]) -> None:
        db, wopt = self.db, self.wopt
        new_batch = self._rd.WriteBatch
        pack = _packer()
        key = KEY.pack
        for s, first, evs in batches:
            wb = new_batch(raw_mode=True)
            put = wb.put
            for i, v in enumerate(evs):
                put(key(s, first + i), pack(v))
            db.write(wb, wopt)

    def close(self) -> None:
        self.db.close()


class JsonlBulk(BulkWriter):
    """The legacy pattern: per event, open the session's file, append a JSON line, close."""

    name = "jsonl"

    def __init__(self, path: str, n_streams: int) -> None:
        import orjson

        self._dumps = orjson.dumps
        os.makedirs(path, exist_ok=True)
        self.paths = [os.path.join(path, stream_name(i) + ".jsonl") for i in range(n_streams)]
        for p in self.paths:  # files exist before the timed region
            open(p, "ab").close()

    def run(self, batches: Sequence[Batch]) -> None:
        dumps = self._dumps
        paths = self.paths
        for s, _first, evs in batches:
            p = paths[s]
            for v in evs:
                with open(p, "ab") as f:
                    f.write(dumps(v) + b"\n")

    def close(self) -> None:
        pass


def bulk_writer(peer: str, path: str, n_streams: int) -> BulkWriter:
    require(peer)
    cls = {"seglog": SeglogBulk, "lmdb": LmdbBulk, "sqlite": SqliteBulk, "rocksdb": RocksBulk, "jsonl": JsonlBulk}[peer]
    return cls(path, n_streams)


# ------------------------------------------------------------------ durable appends
class DurableWriter:
    """``run()`` appends every thread's events and waits for all of them to be durable."""

    def __init__(
        self, path: str, threads: int, per_thread: int, streams_per_thread: int, events: Sequence[dict[str, Any]]
    ) -> None:
        self.threads = threads
        self.per_thread = per_thread
        self.streams_per_thread = streams_per_thread
        self.events = events  # reused by every thread (encoding still happens per append)

    def _worker(self, t: int) -> None:
        raise NotImplementedError

    def run(self) -> None:
        errors: list[BaseException] = []

        def target(t: int) -> None:
            try:
                self._worker(t)
            except BaseException as exc:
                errors.append(exc)

        if self.threads == 1:
            self._worker(0)
            return
        ts = [threading.Thread(target=target, args=(t,)) for t in range(self.threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        raise NotImplementedError


class SeglogDurable(DurableWriter):
    """durability="power": each append returns once fsync'd (group commit across threads)."""

    def __init__(
        self, path: str, threads: int, per_thread: int, streams_per_thread: int, events: Sequence[dict[str, Any]]
    ) -> None:
        super().__init__(path, threads, per_thread, streams_per_thread, events)
        self.names = [
            [stream_name(t * streams_per_thread + j) for j in range(streams_per_thread)] for t in range(threads)
        ]
        # Create the streams without an fsync each, then reopen in power mode.
        with engine.open(path, durability="process") as store:
            for group in self.names:
                for n in group:
                    store.create_stream(n)
        self.store = engine.open(path, durability="power")

    def _worker(self, t: int) -> None:
        append = self.store.append
        names = self.names[t]
        k = len(names)
        evs = self.events
        m = len(evs)
        for i in range(self.per_thread):
            append(names[i % k], evs[(t * 7919 + i) % m])

    def close(self) -> None:
        self.store.close()


class SqliteDurable(DurableWriter):
    """WAL, synchronous=FULL, a connection per thread, one INSERT + COMMIT per event."""

    def __init__(
        self, path: str, threads: int, per_thread: int, streams_per_thread: int, events: Sequence[dict[str, Any]]
    ) -> None:
        super().__init__(path, threads, per_thread, streams_per_thread, events)
        os.makedirs(path, exist_ok=True)
        self.db = os.path.join(path, "events.db")
        self.conns = [sqlite_connect(self.db, "FULL") for _ in range(threads)]
        self.conns[0].execute(SQLITE_SCHEMA)

    def _worker(self, t: int) -> None:
        conn = self.conns[t]
        pack = _packer()
        evs = self.events
        m = len(evs)
        k = self.streams_per_thread
        sql = "INSERT INTO events (stream, seq, data) VALUES (?, ?, ?)"
        for i in range(self.per_thread):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, (t * k + i % k, i // k, pack(evs[(t * 7919 + i) % m])))
            conn.execute("COMMIT")

    def close(self) -> None:
        for c in self.conns:
            c.close()


def durable_writer(
    peer: str, path: str, threads: int, per_thread: int, streams_per_thread: int, events: Sequence[dict[str, Any]]
) -> DurableWriter:
    require(peer)
    if peer.startswith("seglog"):
        return SeglogDurable(path, threads, per_thread, streams_per_thread, events)
    return SqliteDurable(path, threads, per_thread, streams_per_thread, events)


# --------------------------------------------------------------- read-side peers
def lmdb_open_for_build(path: str) -> Any:
    import lmdb

    return lmdb.open(path, map_size=LMDB_MAP_SIZE, sync=False, metasync=False)


def lmdb_write_batch(env: Any, pack: Callable[[Any], bytes], batch: Batch) -> None:
    s, first, evs = batch
    with env.begin(write=True) as txn:
        txn.cursor().putmulti([(KEY.pack(s, first + i), pack(v)) for i, v in enumerate(evs)])


def lmdb_get_all(env: Any, keys: Sequence[bytes]) -> int:
    """``txn.get`` + ``msgpack.unpackb`` for every key, in one read transaction."""
    unpackb = msgpack.unpackb
    n = 0
    with env.begin(buffers=True) as txn:
        get = txn.get
        for k in keys:
            unpackb(get(k))
            n += 1
    return n


def seglog_get_all(store: engine.Store, keys: Sequence[tuple[str, int]]) -> int:
    get = store.get
    n = 0
    for name, seq in keys:
        get(name, seq)
        n += 1
    return n
