"""engine.aio's store: the async API end to end, writes grouped per turn of the loop
(one fsync and one wake-up of the loop per group), cancellation, closing with tasks in
flight, a failed fsync, other event loops, and an event loop that never waits for the disk."""

from __future__ import annotations

import asyncio
import errno
import pathlib
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import engine
import engine.aio
from engine import (
    EncodeError,
    InvalidArgumentError,
    InvalidNameError,
    ReadOnlyError,
    SeglogError,
    StoreClosedError,
    StoreFailedError,
    UnknownStreamError,
)
from engine.log import fileio


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "store"


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(main())


class SlowFsync:
    """fileio.fdatasync that blocks while ``gate`` is clear (the disk is slow)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0
        real = fileio.fdatasync

        def fdatasync(fd: int) -> None:
            self.calls += 1
            self.entered.set()
            self.gate.wait(30)
            real(fd)

        monkeypatch.setattr(fileio, "fdatasync", fdatasync)

    def hold(self) -> None:
        """From now on fsyncs block (until ``gate`` is set)."""
        self.entered.clear()
        self.gate.clear()

    async def blocked(self) -> None:
        """Wait until an fsync is blocked on the gate."""
        while not self.entered.is_set():
            await asyncio.sleep(0.001)


# ------------------------------------------------------------------------- the API
@pytest.mark.parametrize("durability", ["power", "process", "relaxed"])
def test_the_api_end_to_end(path: pathlib.Path, durability: str) -> None:
    async def main() -> None:
        async with engine.aio.open(path, durability=durability, segment_bytes=4096) as s:
            assert isinstance(s, engine.aio.Store) and repr(s).endswith(f"{durability}>")
            assert await s.append("a", {"type": "input", "code": "(+ 1 2)"}) == 0
            assert await s.append_batch("a", [{"i": 1}, {"i": 2}]) == 1
            assert await s.append_batch("a", ({"i": i} for i in range(3, 500))) == 3  # any iterable
            await s.create_stream("empty")
            await s.put_blob("a", "state-1", {"env": [1, 2, 3]})
            await s.put_blob("a", "state-1", {"env": [4]})
            big = random.Random(1).randbytes(5000)  # rolls a segment (in the commit thread)
            await s.put_blob("a", "big", big)
            await s.sync()
            assert s.next_seq("a") == 500 and s.has_stream("empty") and "a" in s and "nope" not in s
            assert [i.name for i in s.streams()] == ["a", "empty"] and s.stream_info("a").events == 500
            assert await s.get("a", 0) == {"type": "input", "code": "(+ 1 2)"}
            assert await s.get("a", 499) == {"i": 499}
            assert await s.get_blob("a", "state-1") == {"env": [4]}
            assert await s.has_blob("a", "state-1") and not await s.has_blob("a", "state-2")
            assert await s.blob_keys("a") == ["big", "state-1"] and await s.get_blob("a", "big") == big
            events = [e async for e in s.scan("a")]
            assert events[:3] == [{"type": "input", "code": "(+ 1 2)"}, {"i": 1}, {"i": 2}]
            assert events[3:] == [{"i": i} for i in range(3, 500)]
            assert [e async for e in s.scan("a", 10, 13)] == [{"i": i} for i in range(10, 13)]
            assert [e async for e in s.scan("empty")] == []
            assert await s.read_range("a", 497) == [{"i": i} for i in range(497, 500)]
            async with s.scan("a", 5) as scan:  # left early: released at the end of the block
                assert await scan.__anext__() == {"i": 5}
            await s.drop_stream("empty")
            assert not s.has_stream("empty")
            stats = await s.stats()
            assert stats.events == 500 and stats.segments > 1
            assert (await s.verify()).ok
            with pytest.raises(UnknownStreamError):
                await s.get("nope", 0)
            with pytest.raises(UnknownStreamError):
                [e async for e in s.scan("nope")]
            with pytest.raises(InvalidArgumentError):
                await s.append_batch("a", [])
            with pytest.raises(InvalidNameError):
                await s.append("", 1)
            with pytest.raises(InvalidNameError):
                await s.put_blob("a", "", 1)
        assert s.closed
        with pytest.raises(StoreClosedError):
            await s.append("a", 1)
        await s.close()  # idempotent

        again = await engine.aio.open(path)  # the other way to open
        try:
            assert await again.read_range("a", 0, 2) == [{"type": "input", "code": "(+ 1 2)"}, {"i": 1}]
        finally:
            await again.close()

    run(main())
    with engine.open(path) as s:
        assert s.next_seq("a") == 500 and s.get_blob("a", "state-1") == {"env": [4]}
        assert not s.has_stream("empty") and s.verify().ok


def test_an_error_fails_its_own_operation_only(path: pathlib.Path) -> None:
    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            results = await asyncio.gather(
                s.append("a", 1),
                s.append("a", object()),
                s.append("a", 2),
                s.append("b" * 70_000, 3),
                s.drop_stream("nope"),
                s.append("a", 4),
                return_exceptions=True,
            )
            assert results[0] == 0 and results[2] == 1 and results[5] == 2
            assert isinstance(results[1], EncodeError)
            assert isinstance(results[3], InvalidNameError)
            assert isinstance(results[4], UnknownStreamError)
            assert await s.append("a", 5) == 3  # the store goes on

    run(main())
    with engine.open(path) as s:
        assert s.read_range("a") == [1, 2, 4, 5]


def test_readonly_store_refuses_writes(path: pathlib.Path) -> None:
    with engine.open(path) as s:
        s.append("a", 1)

    async def main() -> None:
        async with engine.aio.open(path, readonly=True) as s:
            assert await s.get("a", 0) == 1
            with pytest.raises(ReadOnlyError):
                await s.append("a", 2)

    run(main())


# ------------------------------------------------------------------ group commit
def test_concurrent_appends_share_fsyncs_and_wake_the_loop_once_per_group(path: pathlib.Path) -> None:
    tasks, per_task = 64, 20

    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            for t in range(tasks):
                await s.create_stream(f"s{t}")
            before = (await s.stats()).fsyncs
            wakeups = s.wakeups

            async def writer(t: int) -> list[int]:
                return [await s.append(f"s{t}", {"t": t, "i": i}) for i in range(per_task)]

            seqs = await asyncio.gather(*(writer(t) for t in range(tasks)))
            assert seqs == [list(range(per_task))] * tasks
            n = tasks * per_task
            groups = s.wakeups - wakeups
            fsyncs = (await s.stats()).fsyncs - before
            # Each task waits for its previous append: at most per_task (+ a few) groups.
            assert groups <= 2 * per_task, f"{groups} wake-ups of the loop for {n} appends"
            assert fsyncs <= groups + 2, f"{fsyncs} fsyncs for {groups} groups"

    run(main())
    with engine.open(path) as s:
        for t in range(tasks):
            assert s.read_range(f"s{t}") == [{"t": t, "i": i} for i in range(per_task)]


def test_an_acknowledged_append_was_fsynced(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No acknowledgement before the fsync that covers it has returned."""
    slow = SlowFsync(monkeypatch)

    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            await s.append("a", 0)
            slow.hold()  # the fsync of the next group blocks
            pending = [asyncio.ensure_future(s.append("a", i)) for i in range(1, 9)]
            await slow.blocked()
            await asyncio.sleep(0.1)
            assert not any(t.done() for t in pending)
            slow.gate.set()
            assert sorted(await asyncio.gather(*pending)) == list(range(1, 9))

    run(main())


def test_the_loop_goes_on_while_the_disk_is_slow(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fileio.fdatasync

    def slow(fd: int) -> None:
        time.sleep(0.2)
        real(fd)

    async def main() -> None:
        async with engine.aio.open(path, durability="power", segment_bytes=16 << 10) as s:
            await s.append("a", 0)
            monkeypatch.setattr(fileio, "fdatasync", slow)  # also a segment roll's fsyncs
            ticks = 0
            done = False

            async def ticker() -> None:
                nonlocal ticks
                while not done:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticking = asyncio.ensure_future(ticker())
            t0 = time.monotonic()
            await asyncio.gather(*(s.append("a", "x" * 2000) for _ in range(20)))  # rolls a segment
            elapsed = time.monotonic() - t0
            done = True
            await ticking
            assert elapsed >= 0.2
            assert ticks >= elapsed / 0.01 / 2, f"{ticks} ticks in {elapsed:.2f} s"
            monkeypatch.undo()

    run(main())


# ------------------------------------------------------------------- cancellation
def test_a_cancelled_append_not_yet_handed_over_is_never_written(path: pathlib.Path) -> None:
    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            await s.append("a", "first")
            task = asyncio.ensure_future(s.append("a", "cancelled"))
            await asyncio.sleep(0)  # the task queued its append; the group is handed over at the turn's end
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await s.append("a", "last") == 1

    run(main())
    with engine.open(path) as s:
        assert s.read_range("a") == ["first", "last"]


def test_a_cancelled_append_already_handed_over_is_written_whole(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowFsync(monkeypatch)

    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            await s.append("a", 0)
            slow.hold()
            tasks = [asyncio.ensure_future(s.append("a", i)) for i in range(1, 11)]
            await slow.blocked()  # handed over; the commit thread waits in the fsync
            for t in tasks[::2]:
                t.cancel()
            slow.gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
            assert all(isinstance(r, int) for r in results[1::2])
            assert s.next_seq("a") == 11

    run(main())
    with engine.open(path) as s:
        assert sorted(s.read_range("a")) == list(range(11))


def test_random_cancellations_lose_nothing_acknowledged(path: pathlib.Path) -> None:
    rng = random.Random(7)
    acknowledged: set[tuple[int, int]] = set()
    attempted: set[tuple[int, int]] = set()

    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:

            async def writer(t: int) -> None:
                for i in range(1_000_000):
                    attempted.add((t, i))
                    if i % 3 == 0:  # a batch: stored whole or not at all
                        await s.append_batch(
                            f"s{t % 4}",
                            [{"t": t, "i": i, "k": "head", "pad": "x" * (i % 200)}, {"t": t, "i": i, "k": "tail"}],
                        )
                    else:
                        await s.append(f"s{t % 4}", {"t": t, "i": i, "k": "one"})
                    acknowledged.add((t, i))

            tasks = [asyncio.ensure_future(writer(t)) for t in range(24)]
            for _ in range(60):
                await asyncio.sleep(rng.random() * 0.003)
                rng.choice(tasks).cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    run(main())
    with engine.open(path) as s:
        assert s.verify().ok
        stored: list[tuple[int, int]] = []
        for k in range(4):
            events = s.read_range(f"s{k}") if s.has_stream(f"s{k}") else []
            for n, e in enumerate(events):
                if e["k"] == "head":
                    assert events[n + 1] == {"t": e["t"], "i": e["i"], "k": "tail"}
                elif e["k"] == "tail":
                    assert n > 0 and events[n - 1]["k"] == "head"
                    continue
                stored.append((e["t"], e["i"]))
        assert len(stored) == len(set(stored)), "an append was stored twice"
        assert acknowledged <= set(stored), f"lost: {sorted(acknowledged - set(stored))[:5]}"
        assert set(stored) <= attempted
        assert len(acknowledged) > 100


# ----------------------------------------------------------------------- closing
@pytest.mark.parametrize("durability", ["power", "process"])
def test_closing_with_tasks_in_flight(path: pathlib.Path, durability: str) -> None:
    acknowledged: list[tuple[int, int]] = []
    outcomes: dict[str, int] = {"closed": 0, "done": 0}

    async def main() -> None:
        s = await engine.aio.open(path, durability=durability)

        async def writer(t: int) -> None:
            try:
                for i in range(100_000):
                    await s.append(f"s{t}", i)
                    acknowledged.append((t, i))
                outcomes["done"] += 1
            except StoreClosedError:
                outcomes["closed"] += 1

        tasks = [asyncio.ensure_future(writer(t)) for t in range(32)]
        await asyncio.sleep(0.3)
        closing = asyncio.ensure_future(s.close())
        late = asyncio.ensure_future(s.append("late", 1))  # after close() began: refused
        await closing
        with pytest.raises(StoreClosedError):
            await late
        await asyncio.gather(*tasks)
        assert outcomes["closed"] == 32
        with pytest.raises(StoreClosedError):
            await s.sync()

    run(main())
    assert len(acknowledged) > 32
    with engine.open(path) as s:
        assert s.verify().ok and not s.has_stream("late")
        last: dict[int, int] = {}
        for t, i in acknowledged:
            last[t] = max(last.get(t, -1), i)
        for t, i in last.items():
            events = s.read_range(f"s{t}")
            # everything acknowledged, and at most what close() let complete after it
            assert events[: i + 1] == list(range(i + 1)) and events == list(range(len(events)))


def test_close_completes_what_was_queued(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowFsync(monkeypatch)

    async def main() -> None:
        s = await engine.aio.open(path, durability="power")
        await s.append("a", 0)
        slow.hold()
        queued = [asyncio.ensure_future(s.append("a", i)) for i in range(1, 6)]
        await slow.blocked()  # handed over: in the blocked fsync
        more = [asyncio.ensure_future(s.append("a", i)) for i in range(6, 9)]
        closing = asyncio.ensure_future(s.close())  # in the same turn as the appends of `more`
        await asyncio.sleep(0.05)
        assert not closing.done()
        closing.cancel()  # cancelling the caller does not stop the closing
        slow.gate.set()
        assert sorted(await asyncio.gather(*queued, *more)) == list(range(1, 9))
        await s.close()

    run(main())
    with engine.open(path) as s:
        assert sorted(s.read_range("a")) == list(range(9))


def test_an_open_cancelled_midway_releases_the_store(path: pathlib.Path) -> None:
    async def main() -> None:
        opening = asyncio.ensure_future(engine.aio.open(path))
        await asyncio.sleep(0)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        for _ in range(500):  # the abandoned open is closed in a thread
            try:
                async with engine.aio.open(path) as s:
                    await s.append("a", 1)
                return
            except engine.StoreLockedError:
                await asyncio.sleep(0.01)
        raise AssertionError("the abandoned open kept the writer lock")

    run(main())


# ----------------------------------------------------------------- a failed fsync
def test_a_failed_fsync_fails_its_whole_group_and_every_later_write(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowFsync(monkeypatch)
    real = fileio.fdatasync
    failing = threading.Event()

    def fdatasync(fd: int) -> None:
        if failing.is_set():
            raise OSError(errno.EIO, "injected I/O error")
        real(fd)

    async def main() -> None:
        async with engine.aio.open(path, durability="power") as s:
            acknowledged = await asyncio.gather(*(s.append(f"s{t}", 0) for t in range(16)))
            assert acknowledged == [0] * 16
            slow.hold()  # the next group gathers behind a blocked fsync
            blocked = [asyncio.ensure_future(s.append(f"s{t}", 1)) for t in range(16)]
            await slow.blocked()
            behind = [asyncio.ensure_future(s.append(f"s{t}", 2)) for t in range(16)]
            await asyncio.sleep(0.02)
            monkeypatch.setattr(fileio, "fdatasync", fdatasync)  # the next fsync fails
            failing.set()
            slow.gate.set()  # the blocked one runs the real fsync: its group is acknowledged
            assert await asyncio.gather(*blocked) == [1] * 16
            results = await asyncio.gather(*behind, return_exceptions=True)
            assert all(isinstance(r, StoreFailedError) for r in results), results
            assert len({id(r) for r in results}) == 16  # one exception per waiter
            assert "fsync" in str(results[0]) and isinstance(results[0].__cause__, StoreFailedError)
            for attempt in (s.append("s0", 3), s.append_batch("s0", [3]), s.put_blob("s0", "k", 3), s.sync()):
                with pytest.raises(StoreFailedError):
                    await attempt
            assert await s.get("s0", 1) == 1  # reads still work
        monkeypatch.undo()

    run(main())
    with engine.open(path) as s:
        assert s.verify().ok
        for t in range(16):
            events = s.read_range(f"s{t}")
            assert events[:2] == [0, 1] and events[2:] in ([], [2])  # 2 was never acknowledged


# ------------------------------------------------------------- other event loops
def test_another_event_loop_is_refused(path: pathlib.Path) -> None:
    home = asyncio.new_event_loop()
    try:
        s = home.run_until_complete(engine.aio.open(path, durability="power"))
        home.run_until_complete(s.append("a", 1))

        async def elsewhere(call: Callable[[], Awaitable[Any]]) -> None:
            with pytest.raises(SeglogError, match="event loop"):
                await call()

        for call in (
            lambda: s.append("a", 2),
            lambda: s.get("a", 0),
            lambda: s.sync(),
            lambda: s.close(),
            lambda: s.scan("a").__anext__(),
        ):
            asyncio.run(elsewhere(call))

        def in_a_thread() -> None:  # a loop in another thread: refused as well
            asyncio.run(elsewhere(lambda: s.append("a", 3)))

        th = threading.Thread(target=in_a_thread)
        th.start()
        th.join()
        assert home.run_until_complete(s.append("a", 4)) == 1  # unharmed
        home.run_until_complete(s.close())
    finally:
        home.close()
    with engine.open(path) as again:
        assert again.read_range("a") == [1, 4]
