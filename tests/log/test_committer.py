"""Group commit: every wait returns only once an fsync covered it, concurrent writers
share fsyncs, failures reach every writer that was not yet covered, and the store turns
a failed write or fsync into StoreFailedError without losing acknowledged data."""

from __future__ import annotations

import errno
import os
import pathlib
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import engine
from engine import StoreFailedError
from engine.log import fileio
from engine.log.committer import GroupCommitter


class FakeLog:
    """A log whose appends advance an lsn and whose syncs record what they covered."""

    def __init__(self, directory: str) -> None:
        self.fd = os.open(os.path.join(directory, "log"), os.O_RDWR | os.O_CREAT)
        self.lock = threading.Lock()
        self.written = 0
        self.durable = 0  # the highest lsn an fsync covered
        self.failures: list[OSError] = []
        self.committer = GroupCommitter(self.sync_source, self.on_synced, self.on_failed)

    def append(self) -> int:
        with self.lock:
            os.write(self.fd, b"x")
            self.written += 1
            return self.written

    def sync_source(self) -> tuple[int, int]:
        with self.lock:
            return os.dup(self.fd), self.written

    def on_synced(self, lsn: int) -> None:
        with self.lock:
            self.durable = max(self.durable, lsn)

    def on_failed(self, exc: OSError) -> BaseException:
        self.failures.append(exc)
        return StoreFailedError(f"fsync failed: {exc}")

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def fake_log() -> Iterator[FakeLog]:
    with tempfile.TemporaryDirectory(prefix="seglog-commit-") as d:
        log = FakeLog(d)
        yield log
        log.close()


def run_writers(log: FakeLog, threads: int, per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []
    early: list[tuple[int, int]] = []

    def writer() -> None:
        try:
            for _ in range(per_thread):
                lsn = log.append()
                log.committer.wait(lsn)
                if log.durable < lsn or log.committer.synced < lsn:
                    early.append((lsn, log.durable))
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    ts = [threading.Thread(target=writer) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer never returned from wait()"
    assert early == [], "wait() returned before an fsync covered the append"
    return errors


@pytest.mark.parametrize("threads", [1, 2, 8, 24])
def test_every_wait_returns_after_an_fsync_covered_it(fake_log: FakeLog, threads: int) -> None:
    assert run_writers(fake_log, threads, 300) == []
    assert fake_log.committer.synced == fake_log.written == threads * 300
    if threads == 1:
        assert fake_log.committer.fsyncs == 300
    else:  # concurrent writers share fsyncs
        assert fake_log.committer.fsyncs < threads * 300 * 0.9


def test_writers_that_come_and_go_are_never_stranded(fake_log: FakeLog) -> None:
    """Threads that wait once and leave, mixed with steady writers: groups sized for
    writers that have gone must time out and sync, never hang."""

    def burst() -> None:
        log_errors = run_writers(fake_log, 6, 1)
        assert log_errors == []

    steady = threading.Thread(target=lambda: run_writers(fake_log, 2, 400))
    steady.start()
    for _ in range(30):
        burst()
    steady.join(timeout=60)
    assert not steady.is_alive()
    assert fake_log.committer.synced == fake_log.written


def test_mark_synced_releases_covered_writers(fake_log: FakeLog) -> None:
    lsn = fake_log.append()
    fake_log.committer.mark_synced(lsn)
    fake_log.committer.wait(lsn)  # returns without an fsync
    assert fake_log.committer.fsyncs == 0
    fake_log.committer.mark_synced(lsn - 1)  # never goes back
    assert fake_log.committer.synced == lsn


def test_a_failed_fsync_is_not_retried_and_reaches_every_later_writer(
    fake_log: FakeLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def flaky(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.EIO, "injected I/O error")
        real(fd)

    monkeypatch.setattr(fileio, "fdatasync", flaky)
    errors = run_writers(fake_log, 4, 50)
    assert errors and all(isinstance(e, StoreFailedError) for e in errors)
    assert len(fake_log.failures) == 1
    assert fake_log.committer.synced < fake_log.written
    n = len(calls)
    with pytest.raises(StoreFailedError):
        fake_log.committer.wait(fake_log.append())
    assert len(calls) == n  # no fsync after the failure: it might report success falsely
    fake_log.committer.wait(fake_log.committer.synced)  # what was covered before stays covered


def test_a_sync_source_error_reaches_each_waiter(fake_log: FakeLog) -> None:
    def closed() -> tuple[int, int]:
        raise engine.StoreClosedError("closed")

    fake_log.committer._sync_source = closed
    errors = run_writers(fake_log, 4, 3)
    assert len(errors) == 4 and all(isinstance(e, engine.StoreClosedError) for e in errors)


# ---------------------------------------------------------------- the store


@pytest.fixture
def path() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="seglog-test-") as d:
        yield pathlib.Path(d) / "store"


def test_store_refuses_writes_after_a_failed_fsync(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with engine.open(path, durability="power") as s:
        for i in range(10):
            s.append("s", i)

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "injected I/O error")

        monkeypatch.setattr(fileio, "fdatasync", broken)
        with pytest.raises(StoreFailedError, match=r"fsync of .* failed"):
            s.append("s", "lost?")
        with pytest.raises(StoreFailedError):
            s.append("s", "refused")
        with pytest.raises(StoreFailedError):
            s.put_blob("s", "k", 1)
        assert s.read_range("s", 0, 10) == list(range(10))  # reads still work
        monkeypatch.undo()
    with engine.open(path) as s:
        events = s.read_range("s")
        assert events[:10] == list(range(10))
        assert events[10:] in ([], ["lost?"])  # never acknowledged
        assert s.verify().ok


def test_store_refuses_writes_after_a_failed_write(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with engine.open(path, durability="process") as s:
        s.append_batch("s", [1, 2, 3])
        real = os.pwrite

        def full(fd: int, data: Any, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fileio, "pwrite", full)
        with pytest.raises(StoreFailedError, match=r"write to .* failed"):
            s.append("s", 4)
        monkeypatch.setattr(fileio, "pwrite", real)
        with pytest.raises(StoreFailedError):
            s.append("s", 5)
        assert s.read_range("s", 0, 3) == [1, 2, 3]
    with engine.open(path) as s:
        assert s.read_range("s") == [1, 2, 3]
        s.append("s", 6)
        assert s.read_range("s") == [1, 2, 3, 6]


def test_a_failed_fsync_when_sealing_a_segment_fails_the_store(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [os.urandom(1000).hex() for _ in range(11)]  # incompressible
    with engine.open(path, durability="process", segment_bytes=4096) as s:
        s.append("s", values[0])

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "injected I/O error")

        monkeypatch.setattr(fileio, "fdatasync", broken)
        with pytest.raises(StoreFailedError, match=r"fsync of .* failed"):
            for v in values[1:]:  # the second or third rolls the segment
                s.append("s", v)
        with pytest.raises(StoreFailedError):
            s.append("s", "refused")
        monkeypatch.undo()
    with engine.open(path) as s:
        events = s.read_range("s")
        assert events == values[: len(events)] and len(events) >= 1
        assert s.verify().ok


def test_close_reports_a_failed_fsync(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = engine.open(path, durability="process")
    s.append("s", 1)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(fileio, "fdatasync", broken)
    with pytest.raises(StoreFailedError):
        s.close()
    monkeypatch.undo()
    with pytest.raises(engine.StoreClosedError):
        s.append("s", 2)
    with engine.open(path) as again:  # the lock was released
        assert again.read_range("s") == [1]


def test_a_writer_waiting_when_a_write_fails_is_not_acknowledged(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose record was in the buffer a failed write dropped, still waiting
    for its fsync: a later fsync (that succeeds) must not acknowledge it."""
    with engine.open(path, durability="power") as s:
        s.append("s", 0)
        with pytest.raises(StoreFailedError), s.batch():  # the batch's end waits for the fsync: refused
            s.append("s", 1)  # buffered, not yet written nor synced
            lsn = s._lsn_written

            def full(fd: int, data: Any, offset: int) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(fileio, "pwrite", full)
            with pytest.raises(StoreFailedError):
                s.flush()  # the buffer (holding seq 1) is dropped
            monkeypatch.undo()
            with pytest.raises(StoreFailedError):
                s._committer.wait(lsn)  # what the writer of seq 1 does in "power" mode
    with engine.open(path) as s:
        assert s.read_range("s") == [0]
