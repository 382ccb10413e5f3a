"""engine.aio.PersistenceManager: the session layer awaited end to end, recording that
never blocks the event loop (also when the threaded manager would save in the
recording thread), shutdown, and other event loops."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time
from collections.abc import Awaitable
from typing import Any

import pytest

import engine
import engine.aio
from engine import SeglogError, SessionPool, StoreClosedError, UnknownSessionError


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "store"


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(main())


def manager(path: pathlib.Path, size: int = 8, **kw: Any) -> engine.aio.PersistenceManager:
    kw.setdefault("save_interval", 60.0)
    kw.setdefault("register_atexit", False)
    return engine.aio.PersistenceManager(SessionPool(size), path, **kw)


class SlowSaves:
    """Every append of the manager's store sleeps ``delay`` first (a slow disk)."""

    def __init__(self, pm: engine.aio.PersistenceManager, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
        store = pm.store
        orig = store.append_batch
        self.calls = 0
        self.threads: set[int] = set()

        def slow(stream: str, values: Any) -> int:
            self.calls += 1
            self.threads.add(threading.get_ident())
            time.sleep(delay)
            return orig(stream, values)

        monkeypatch.setattr(store, "append_batch", slow)


def test_the_session_layer_awaited_end_to_end(path: pathlib.Path) -> None:
    async def main() -> None:
        async with manager(path, durability="power") as pm:
            assert repr(pm).endswith("open>")
            a = await pm.create_session("a")
            a.input("(define x 10)", ts=1)
            a.step(0, "(define x 10)", ts=2)
            a.result("x", ts=3)
            state_id = a.checkpoint(0, "manual", {"env": [1, 2]}, ts=4)
            a.llm_req(1, "mock", "prompt", "rk1", ts=5)
            a.llm_resp(1, "resp", 4, "rk1", request={"q": 1}, response={"a": 1}, tokens=5, ts=6)
            assert await pm.force_save("a") == 8  # 6 events, a state and a receipt
            assert pm.has_session("a") and not pm.has_session("b")
            assert [e["type"] for e in await pm.events("a")] == [
                "input",
                "step",
                "result",
                "checkpoint",
                "llm_req",
                "llm_resp",
            ]
            assert await pm.events("a", 1, 2) == [(await pm.events("a"))[1]]
            assert (await pm.checkpoints("a"))[0]["stateId"] == state_id
            assert await pm.get_state("a", state_id) == {"env": [1, 2]}
            assert (await pm.get_receipt("a", "rk1"))["response"] == {"a": 1}
            assert (await pm.persister("a")).event_count == 6
            assert await pm.load_session("a") is a  # pooled: no thread
            f = await pm.fork("a", "fork", at_seq=2)
            f.error(0, "boom", ts=7)
            c = await pm.save_as("a", "copy")
            assert c.id == "a" and c.event_count == 6
            b = await pm.create_session("b")
            b.input("(+ 1 2)", ts=8)
            assert await pm.save_session(b) == 1
            assert await pm.save_dirty_sessions() == 1  # the fork
            assert await pm.save_session("b") == 0
            await pm.delete("b")
            assert [m["name"] for m in await pm.list_sessions()] == ["a", "copy", "fork"]
            with pytest.raises(UnknownSessionError):
                await pm.events("b")
            assert pm.saves >= 3
        assert repr(pm).endswith("closed>")
        with pytest.raises(StoreClosedError):
            a.input("after shutdown")
        with pytest.raises(StoreClosedError):
            await pm.events("a")
        await pm.shutdown()  # idempotent

        pm2 = await manager(path)  # `await pm` starts it too
        try:
            loaded = await pm2.load_session("fork")  # from the store, in a worker thread
            assert loaded.event_count == 4
            assert [e["type"] for e in await pm2.events("fork")] == ["input", "step", "result", "error"]
        finally:
            await pm2.shutdown()

    run(main())
    with engine.PersistenceManager(SessionPool(4), path, register_atexit=False) as pm:
        assert [m["name"] for m in pm.list_sessions()] == ["a", "copy", "fork"]
        assert pm.events("a")[0]["code"] == "(define x 10)"


def test_shutdown_saves_what_was_recorded(path: pathlib.Path) -> None:
    async def main() -> None:
        async with manager(path) as pm:
            s = await pm.create_session("s")
            for i in range(300):
                s.input(f"(cmd {i})", ts=i)

    run(main())
    with engine.PersistenceManager(SessionPool(4), path, register_atexit=False) as pm:
        assert [e["code"] for e in pm.events("s")] == [f"(cmd {i})" for i in range(300)]


def test_recording_never_waits_for_a_save(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_pending reached, the threaded manager saves in the recording thread; from the
    event loop the save is scheduled on a worker thread instead and the call returns at once."""

    async def main() -> None:
        async with manager(path, save_after=4, max_pending=8) as pm:
            s = await pm.create_session("s")
            slow = SlowSaves(pm, monkeypatch, 0.3)
            worst = 0.0
            for i in range(40):
                t0 = time.perf_counter()
                s.input(f"(cmd {i})", ts=i)
                worst = max(worst, time.perf_counter() - t0)
            assert worst < 0.1, f"a recording call took {worst * 1e3:.0f} ms"
            deadline = time.monotonic() + 10
            while s.dirty and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert slow.calls >= 1 and threading.get_ident() not in slow.threads
            assert [e["code"] for e in await pm.events("s")] == [f"(cmd {i})" for i in range(40)]

    run(main())


def test_recording_into_an_evicted_session_does_not_wait_for_evictions(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with manager(path, size=1) as pm:
            a = await pm.create_session("a")
            a.input("a0", ts=1)
            b = await pm.create_session("b")  # evicts a (saved in the worker thread)
            assert "a" not in pm.pool
            b.input("b0", ts=2)
            slow = SlowSaves(pm, monkeypatch, 0.3)
            t0 = time.perf_counter()
            a.input("a1", ts=3)  # a comes back into the pool; b, dirty, must go: saved off the loop
            assert time.perf_counter() - t0 < 0.1
            assert "a" in pm.pool
            deadline = time.monotonic() + 10
            while b.dirty and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert not b.dirty and threading.get_ident() not in slow.threads
            assert [e["code"] for e in await pm.events("b")] == ["b0"]
            assert [e["code"] for e in await pm.events("a")] == ["a0", "a1"]

    run(main())


def test_slow_saves_leave_the_loop_running(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with manager(path) as pm:
            s = await pm.create_session("s")
            s.input("x", ts=1)
            SlowSaves(pm, monkeypatch, 0.3)
            ticks = 0
            done = False

            async def ticker() -> None:
                nonlocal ticks
                while not done:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticking = asyncio.ensure_future(ticker())
            assert await pm.force_save() == 1
            done = True
            await ticking
            assert ticks >= 8

    run(main())


def test_another_event_loop_is_refused(path: pathlib.Path) -> None:
    home = asyncio.new_event_loop()
    try:
        pm = manager(path)
        home.run_until_complete(pm.start())
        s = home.run_until_complete(pm.create_session("s"))

        async def elsewhere() -> None:
            with pytest.raises(SeglogError, match="event loop"):
                await pm.events("s")
            with pytest.raises(SeglogError, match="event loop"):
                await pm.shutdown()
            s.input("recorded from another loop's thread: a plain call", ts=1)

        asyncio.run(elsewhere())
        home.run_until_complete(pm.shutdown())
    finally:
        home.close()
    with engine.PersistenceManager(SessionPool(4), path, register_atexit=False) as again:
        assert [e["type"] for e in again.events("s")] == ["input"]


def test_methods_before_start_raise(path: pathlib.Path) -> None:
    pm = manager(path)

    async def main() -> None:
        with pytest.raises(SeglogError, match="not started"):
            await pm.events("s")
        with pytest.raises(SeglogError, match="not started"):
            pm.has_session("s")

    run(main())
