"""Durable appends from asyncio tasks (engine.aio) next to threads and SQLite, in one run.

    pytest bench/test_aio_bench.py --benchmark-json=aio.json                      # small, ~30 s
    pytest bench/test_aio_bench.py --bench-scale=full --benchmark-json=aio-full.json   # ~2 min
    python bench/test_aio_bench.py aio-full.json                                  # the table

Every row appends single REPL events (150-250 bytes of JSON) with durability "power"
(each append returns once fsync'd; SQLite: synchronous=FULL) to streams of its own:

- ``seglog_async_64tasks`` / ``seglog_async_8tasks``: tasks of one event loop awaiting
  ``engine.aio.Store.append``. A ticker task sleeps 1 ms at a time and records how late
  it wakes up: the event loop's stalls (``loop_stall_*``), next to the same ticker in
  the same loop with nothing else to do, before the round (``idle_stall_*``: the
  machine's own noise).
- ``seglog_1thread_fsync``: one thread, ``engine.Store.append`` (an fsync per append): the base.
- ``seglog_8threads``: 8 threads, ``engine.Store.append`` (the threaded group commit).
- ``sqlite_full_64threads`` / ``sqlite_full_8threads``: SQLite WAL, synchronous=FULL,
  a connection per thread, BEGIN IMMEDIATE + INSERT + COMMIT per event (bench/peers.py).

Interleaved: on a shared machine the latency of an fsync drifts by 10x within a
minute, so rows measured one after the other are not comparable. A round opens a
fresh store for every row, then runs the rows in *slices* (``SLICES`` times
``PER_SLICE`` events each), alternating between rows (the order rotates), so every
row sees the disk in the same states; a row's rate in a round is its events over
the time of its slices, and ratios are taken round by round (medians reported).
The pytest-benchmark timing is that of a whole round; the figures are in
``extra_info["peers"]``.

Targets (checked by the summary, not asserted): 64 tasks >= 8x the one thread
(aim 15x), 8 tasks >= 5x. The threaded 8-writer row is there for comparison (its
old 4x target is retired).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import workload
from conftest import RoundDirs, Scale, set_info
from peers import SeglogDurable, SqliteDurable
from test_engine_bench import fsync_probe_us

import engine
import engine.aio

#: impl -> (kind, writers)
PEERS = {
    "seglog_async_64tasks": ("async", 64),
    "seglog_async_8tasks": ("async", 8),
    "seglog_1thread_fsync": ("threads", 1),
    "seglog_8threads": ("threads", 8),
    "sqlite_full_64threads": ("sqlite", 64),
    "sqlite_full_8threads": ("sqlite", 8),
}
BASE = "seglog_1thread_fsync"

#: Events per writer in one slice (a slice takes roughly 30-300 ms).
PER_SLICE = {
    "seglog_async_64tasks": 20,
    "seglog_async_8tasks": 60,
    "seglog_1thread_fsync": 150,
    "seglog_8threads": 60,
    "sqlite_full_64threads": 1,
    "sqlite_full_8threads": 6,
}
#: Slices of every row in a round.
SLICES = {"small": 5, "full": 20}

#: impl -> (target, aim): at least this many times the one thread's events/s.
TARGETS = {"seglog_async_64tasks": (8.0, 15.0), "seglog_async_8tasks": (5.0, None)}

TICK_S = 0.001
STREAMS_PER_WRITER = 15  # 1,000 streams / 64 writers; the same for every row


class Ticker:
    """A task that sleeps TICK_S at a time and records how late each wake-up is."""

    def __init__(self, late: list[float]) -> None:
        self.late = late
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock = time.perf_counter
        late = self.late
        while not self._stop:
            t = clock()
            await asyncio.sleep(TICK_S)
            late.append(clock() - t - TICK_S)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task


def stall_figures(late: list[float], prefix: str) -> dict[str, float]:
    late = sorted(late) or [0.0]
    return {
        f"{prefix}_p50_ms": round(late[len(late) // 2] * 1e3, 3),
        f"{prefix}_p99_ms": round(late[min(len(late) - 1, int(len(late) * 0.99))] * 1e3, 3),
        f"{prefix}_max_ms": round(late[-1] * 1e3, 3),
    }


class Row:
    """One row of a round: a fresh store, run slice by slice."""

    def __init__(self, peer: str, path: str, events: Sequence[workload.Event]) -> None:
        self.peer = peer
        self.kind, self.writers = PEERS[peer]
        self.per = PER_SLICE[peer]
        self.path = path
        self.events = events
        self.elapsed = 0.0
        self.done = 0
        self.fsync_probe = 0.0

    def slice(self) -> None:
        t0 = time.perf_counter()
        self._slice()
        self.elapsed += time.perf_counter() - t0
        self.done += self.writers * self.per

    def _slice(self) -> None:
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        return {"events": self.done, "events_per_s": self.done / self.elapsed, "fsync_probe_us": self.fsync_probe}

    def close(self) -> None:
        raise NotImplementedError


class ThreadsRow(Row):
    """engine.Store.append from threads (bench/peers.py's SeglogDurable)."""

    def __init__(self, peer: str, path: str, events: Sequence[workload.Event]) -> None:
        super().__init__(peer, path, events)
        self.w = SeglogDurable(path, self.writers, self.per, STREAMS_PER_WRITER, events)
        self.fsync_probe = fsync_probe_us(path)
        self.fsyncs0 = self.w.store.stats().fsyncs

    def _slice(self) -> None:
        self.w.run()

    def figures(self) -> dict[str, Any]:
        st = self.w.store.stats()
        assert st.events == self.done
        return {**super().figures(), "events_per_fsync": self.done / max(st.fsyncs - self.fsyncs0, 1)}

    def close(self) -> None:
        self.w.close()


class _SqliteSlices(SqliteDurable):
    """SqliteDurable whose rows continue where the last slice stopped."""

    def __init__(
        self, path: str, threads: int, per_thread: int, streams_per_thread: int, events: Sequence[workload.Event]
    ) -> None:
        super().__init__(path, threads, per_thread, streams_per_thread, events)
        self.offset = 0
        self.pack = msgpack.Packer(use_bin_type=True).pack  # as peers.py's packer

    def _worker(self, t: int) -> None:
        conn = self.conns[t]
        pack = self.pack
        evs = self.events
        m = len(evs)
        k = self.streams_per_thread
        sql = "INSERT INTO events (stream, seq, data) VALUES (?, ?, ?)"
        for j in range(self.per_thread):
            i = self.offset + j
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, (t * k + i % k, i // k, pack(evs[(t * 7919 + i) % m])))
            conn.execute("COMMIT")


class SqliteRow(Row):
    def __init__(self, peer: str, path: str, events: Sequence[workload.Event]) -> None:
        super().__init__(peer, path, events)
        self.w = _SqliteSlices(path, self.writers, self.per, STREAMS_PER_WRITER, events)
        self.fsync_probe = fsync_probe_us(path)

    def _slice(self) -> None:
        self.w.run()
        self.w.offset += self.per

    def close(self) -> None:
        self.w.close()


class AsyncRow(Row):
    """``writers`` tasks of one event loop, each awaiting ``engine.aio.Store.append``."""

    def __init__(self, peer: str, path: str, events: Sequence[workload.Event]) -> None:
        super().__init__(peer, path, events)
        self.names = [
            [workload.stream_name(t * STREAMS_PER_WRITER + j) for j in range(STREAMS_PER_WRITER)]
            for t in range(self.writers)
        ]
        with engine.open(path, durability="process") as store:  # streams exist before the round
            for group in self.names:
                for n in group:
                    store.create_stream(n)
        self.loop = asyncio.new_event_loop()
        self.store: engine.aio.Store = self.loop.run_until_complete(engine.aio.open(path, durability="power"))
        self.fsync_probe = fsync_probe_us(path)
        self.fsyncs0 = self.store.store.stats().fsyncs
        self.wakeups0 = self.store.wakeups
        self.late: list[float] = []
        self.idle_late: list[float] = []
        self.i = 0
        self.loop.run_until_complete(self._idle(0.3))

    async def _idle(self, seconds: float) -> None:
        ticker = Ticker(self.idle_late)
        ticker.start()
        await asyncio.sleep(seconds)
        await ticker.stop()

    async def _writer(self, t: int) -> None:
        append = self.store.append
        names = self.names[t]
        k = len(names)
        evs = self.events
        m = len(evs)
        for i in range(self.i, self.i + self.per):
            await append(names[i % k], evs[(t * 7919 + i) % m])

    async def _main(self) -> None:
        ticker = Ticker(self.late)
        ticker.start()
        await asyncio.gather(*(self._writer(t) for t in range(self.writers)))
        await ticker.stop()

    def _slice(self) -> None:
        self.loop.run_until_complete(self._main())
        self.i += self.per

    def figures(self) -> dict[str, Any]:
        st = self.store.store.stats()
        assert st.events == self.done
        return {
            **super().figures(),
            "events_per_fsync": self.done / max(st.fsyncs - self.fsyncs0, 1),
            "appends_per_wakeup": self.done / max(self.store.wakeups - self.wakeups0, 1),
            **stall_figures(self.late, "loop_stall"),
            **stall_figures(self.idle_late, "idle_stall"),
            "ticks": len(self.late),
        }

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.store.close())
        finally:
            self.loop.close()


ROWS = {"async": AsyncRow, "threads": ThreadsRow, "sqlite": SqliteRow}


def run_round(r: int, slices: int, round_dirs: RoundDirs, events: Sequence[workload.Event]) -> dict[str, Any]:
    """One round: every row in a fresh store, run in alternating slices (the order rotates)."""
    order = list(PEERS)
    order = order[r % len(order) :] + order[: r % len(order)]
    rows: list[Row] = []
    try:
        for peer in order:
            rows.append(ROWS[PEERS[peer][0]](peer, round_dirs.new(), events))
        for _ in range(slices):
            for row in rows:
                row.slice()
        return {row.peer: row.figures() for row in rows}
    finally:
        for row in rows:
            row.close()
            RoundDirs.remove(row.path)


def test_aio_durable_appends(
    benchmark: Any, scale: Scale, sample_events: list[workload.Event], round_dirs: RoundDirs
) -> None:
    """Single-event durable appends from tasks, threads and SQLite, interleaved (see the module)."""
    benchmark.group = "aio durable appends"
    slices = SLICES[scale.name]
    set_info(
        benchmark, "aio_durable", "all", scale, slices=slices, per_slice={p: PEERS[p][1] * PER_SLICE[p] for p in PEERS}
    )
    rounds: list[dict[str, Any]] = []
    counter = iter(range(1 << 30))

    def one_round() -> None:
        rounds.append(run_round(next(counter), slices, round_dirs, sample_events))

    benchmark.pedantic(one_round, rounds=scale.rounds)
    benchmark.extra_info["peers"] = peer_figures(rounds)


def peer_figures(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row: medians over the rounds, each round's rate, and ratios taken round by round."""
    out: dict[str, dict[str, Any]] = {}
    for peer, (kind, writers) in PEERS.items():
        rs = [r[peer] for r in rounds if peer in r]
        if not rs:
            continue
        rates = [x["events_per_s"] for x in rs]
        fig: dict[str, Any] = {
            "kind": kind,
            "writers": writers,
            "events_per_round": rs[0]["events"],
            "events_per_s": round(statistics.median(rates), 1),
            "events_per_s_rounds": [round(x) for x in rates],
            "fsync_probe_us": [round(x["fsync_probe_us"]) for x in rs],
        }
        ratios = [r[peer]["events_per_s"] / r[BASE]["events_per_s"] for r in rounds]
        fig["vs_1thread"] = round(statistics.median(ratios), 2)
        fig["vs_1thread_rounds"] = [round(x, 2) for x in ratios]
        sq = f"sqlite_full_{writers}threads"
        if kind != "sqlite" and sq in PEERS:
            fig["vs_sqlite"] = round(
                statistics.median(r[peer]["events_per_s"] / r[sq]["events_per_s"] for r in rounds), 2
            )
        if "events_per_fsync" in rs[0]:
            fig["events_per_fsync"] = round(statistics.median(x["events_per_fsync"] for x in rs), 2)
        if kind == "async":
            for key in ("loop_stall", "idle_stall"):
                fig[f"{key}_p50_ms"] = round(statistics.median(x[f"{key}_p50_ms"] for x in rs), 3)
                fig[f"{key}_p99_ms"] = round(statistics.median(x[f"{key}_p99_ms"] for x in rs), 3)
                fig[f"{key}_max_ms"] = max(x[f"{key}_max_ms"] for x in rs)
                fig[f"{key}_max_ms_rounds"] = [x[f"{key}_max_ms"] for x in rs]
            fig["appends_per_wakeup"] = round(statistics.median(x["appends_per_wakeup"] for x in rs), 2)
        if peer in TARGETS:
            fig["meets_target"] = fig["vs_1thread"] >= TARGETS[peer][0]
        out[peer] = fig
    return out


# ---------------------------------------------------------------------------- summary
def summary(path: str) -> str:
    with open(path) as f:
        doc = json.load(f)
    bench = next(b for b in doc["benchmarks"] if (b.get("extra_info") or {}).get("bench") == "aio_durable")
    info = bench["extra_info"]
    rows = info["peers"]
    out = [
        f"aio durable appends ({info['scale']}: {bench['stats']['rounds']} rounds of {info['slices']} interleaved "
        "slices per row; durability power; medians over the rounds, ratios taken round by round)",
        "",
        "| impl | events/round | events/s | vs 1 thread | vs SQLite, same writers | events/fsync "
        "| loop stall p50 / p99 / max ms | idle loop p50 / p99 / max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for impl in PEERS:
        r = rows.get(impl)
        if r is None:
            continue
        stall = idle = ""
        if r["kind"] == "async":
            stall = f"{r['loop_stall_p50_ms']:.2f} / {r['loop_stall_p99_ms']:.2f} / {r['loop_stall_max_ms']:.2f}"
            idle = f"{r['idle_stall_p50_ms']:.2f} / {r['idle_stall_p99_ms']:.2f} / {r['idle_stall_max_ms']:.2f}"
        vs_sq = f"{r['vs_sqlite']:.1f}x" if "vs_sqlite" in r else ""
        per_fsync = f"{r['events_per_fsync']:.1f}" if "events_per_fsync" in r else ""
        out.append(
            f"| {impl} | {r['events_per_round']:,} | {r['events_per_s']:,.0f} | {r['vs_1thread']:.2f}x "
            f"| {vs_sq} | {per_fsync} | {stall} | {idle} |"
        )
    out.append("")
    for impl, (need, aim) in TARGETS.items():
        r = rows.get(impl)
        if r:
            ratio = r["vs_1thread"]
            aimed = f" (aim {aim:g}x: {'met' if ratio >= aim else 'not met'})" if aim else ""
            out.append(
                f"- {impl} >= {need:g}x {BASE}: {ratio:.2f}x {'PASS' if ratio >= need else 'FAIL'}{aimed}; "
                f"by round {r['vs_1thread_rounds']}; {r['appends_per_wakeup']:g} appends acknowledged "
                "per wake-up of the loop"
            )
    probes = [p for r in rows.values() for p in r["fsync_probe_us"]]
    out.append(
        f"- fsync probe (200-byte write + fdatasync) when each store was opened: median "
        f"{statistics.median(probes):.0f} us, range {min(probes)}-{max(probes)} us"
    )
    return "\n".join(out)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
