"""Stateful property test: random operation sequences against an in-memory model."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as conjecture_engine
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from strategies import msgpack_values

import engine
from engine import BlobNotFoundError, EventNotFoundError, InvalidArgumentError, UnknownStreamError


def fast_tmp_base() -> str | None:
    """tmpfs when available: each example opens stores and rolls segments, which fsyncs a lot."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


STREAMS = ["a", "b", "sess/é🙂", "x" * 255]
KEYS = ["k", "k2", "ключ", "a" * 1024]

small_values = msgpack_values(text_size=12, binary_size=24, width=3, leaves=6)
# Big values: compressible (lz4 path) or not, large enough to fill 4 KiB segments quickly.
big_values = st.one_of(
    st.builds(lambda n, c: c * n, st.integers(500, 6000), st.sampled_from(["a", "(+ 1 2) "])),
    st.builds(os.urandom, st.integers(500, 6000)),
)
values = st.one_of(small_values, small_values, small_values, big_values)

stream_names = st.sampled_from(STREAMS)
keys = st.sampled_from(KEYS)
store_options = st.fixed_dictionaries(
    {
        "segment_bytes": st.sampled_from([4096, 6000, 16384, 1 << 20]),
        "durability": st.sampled_from(["process", "power", "relaxed"]),
        "compress_events": st.booleans(),
    }
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="seglog-prop-", dir=fast_tmp_base())
        self.store: engine.Store | None = None
        self.events: dict[str, list[Any]] = {}
        self.blobs: dict[str, dict[str, Any]] = {}

    @initialize(opts=store_options)
    def open_store(self, opts: dict[str, Any]) -> None:
        self.store = engine.open(self.dir, **opts)

    @property
    def s(self) -> engine.Store:
        assert self.store is not None
        return self.store

    def _ensure(self, name: str) -> None:
        self.events.setdefault(name, [])
        self.blobs.setdefault(name, {})

    # ------------------------------------------------------------ writes
    @rule(name=stream_names, value=values)
    def append(self, name: str, value: Any) -> None:
        seq = self.s.append(name, value)
        self._ensure(name)
        assert seq == len(self.events[name])
        self.events[name].append(value)

    @rule(name=stream_names, batch=st.lists(values, min_size=1, max_size=5))
    def append_batch(self, name: str, batch: list[Any]) -> None:
        first = self.s.append_batch(name, batch)
        self._ensure(name)
        assert first == len(self.events[name])
        self.events[name].extend(batch)

    @rule(name=stream_names, key=keys, value=values)
    def put_blob(self, name: str, key: str, value: Any) -> None:
        self.s.put_blob(name, key, value)
        self._ensure(name)
        self.blobs[name][key] = value

    @rule(name=stream_names)
    def create_stream(self, name: str) -> None:
        self.s.create_stream(name)
        self._ensure(name)

    @rule(name=stream_names)
    def drop_stream(self, name: str) -> None:
        if name in self.events:
            self.s.drop_stream(name)
            del self.events[name]
            del self.blobs[name]
        else:
            with pytest.raises(UnknownStreamError):
                self.s.drop_stream(name)
        assert name not in self.s

    # ------------------------------------------------------------ reads
    @rule(name=stream_names, data=st.data())
    def get(self, name: str, data: st.DataObject) -> None:
        if name not in self.events:
            with pytest.raises(UnknownStreamError):
                self.s.get(name, 0)
            return
        n = len(self.events[name])
        seq = data.draw(st.integers(-2, n + 2), label="seq")
        if 0 <= seq < n:
            assert self.s.get(name, seq) == self.events[name][seq]
        else:
            with pytest.raises(EventNotFoundError):
                self.s.get(name, seq)

    @rule(name=stream_names, data=st.data())
    def scan(self, name: str, data: st.DataObject) -> None:
        if name not in self.events:
            with pytest.raises(UnknownStreamError):
                self.s.scan(name)
            return
        model = self.events[name]
        n = len(model)
        start = data.draw(st.integers(-2, n + 2), label="start")
        stop = data.draw(st.none() | st.integers(-2, n + 2), label="stop")
        if start < 0 or (stop is not None and stop < 0):
            with pytest.raises(InvalidArgumentError):
                self.s.read_range(name, start, stop)
            return
        end = n if stop is None else min(stop, n)
        assert self.s.read_range(name, start, stop) == model[start:end]

    @rule(name=stream_names, key=keys)
    def get_blob(self, name: str, key: str) -> None:
        if name not in self.blobs:
            with pytest.raises(UnknownStreamError):
                self.s.get_blob(name, key)
        elif key in self.blobs[name]:
            assert self.s.get_blob(name, key) == self.blobs[name][key]
            assert self.s.has_blob(name, key)
        else:
            with pytest.raises(BlobNotFoundError):
                self.s.get_blob(name, key)
            assert not self.s.has_blob(name, key)

    @rule(name=stream_names)
    def blob_keys(self, name: str) -> None:
        if name in self.blobs:
            assert self.s.blob_keys(name) == sorted(self.blobs[name])

    @rule()
    def full_read(self) -> None:
        for name, model in self.events.items():
            assert self.s.read_range(name) == model

    @rule()
    def verify(self) -> None:
        report = self.s.verify()
        assert report.ok, report.problems

    # ------------------------------------------------------------ reopen
    @rule(opts=store_options)
    def reopen(self, opts: dict[str, Any]) -> None:
        before = self.s.streams()
        self.s.close()
        self.store = None
        self.store = engine.open(self.dir, **opts)
        # Names, counts and byte accounting survive the reopen unchanged.
        assert self.s.streams() == before

    # ------------------------------------------------------------ invariants
    @invariant()
    def listing_matches_model(self) -> None:
        if self.store is None:
            return
        infos = self.s.streams()
        assert [i.name for i in infos] == sorted(self.events)
        for info in infos:
            assert info.events == len(self.events[info.name]) == self.s.next_seq(info.name)
            assert info.blobs == len(self.blobs[info.name])
            assert (info.bytes == 0) == (info.events == 0 and info.blobs == 0)
        stats = self.s.stats()
        assert stats.streams == len(self.events)
        assert stats.events == sum(map(len, self.events.values()))

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


STORE_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# A second, smaller machine that only grows one stream through many tiny segments
# and reopens often, to stress the sealed-index paths.
class RollingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="seglog-roll-", dir=fast_tmp_base())
        self.store = engine.open(self.dir, segment_bytes=4096)
        self.model: list[Any] = []
        self.blob: dict[str, Any] = {}

    @rule(batch=st.lists(st.one_of(small_values, big_values), min_size=1, max_size=4))
    def append_batch(self, batch: list[Any]) -> None:
        assert self.store.append_batch("s", batch) == len(self.model)
        self.model.extend(batch)

    @rule(key=keys, value=st.one_of(small_values, big_values))
    def put_blob(self, key: str, value: Any) -> None:
        self.store.put_blob("s", key, value)
        self.blob[key] = value

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def point_and_range_reads(self, data: st.DataObject) -> None:
        n = len(self.model)
        seq = data.draw(st.integers(0, n - 1), label="seq")
        assert self.store.get("s", seq) == self.model[seq]
        lo = data.draw(st.integers(0, n), label="lo")
        hi = data.draw(st.integers(lo, n), label="hi")
        assert self.store.read_range("s", lo, hi) == self.model[lo:hi]

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = engine.open(self.dir, segment_bytes=4096)
        if self.model or self.blob:
            assert self.store.read_range("s") == self.model
            assert self.store.blob_keys("s") == sorted(self.blob)
        else:
            assert "s" not in self.store
        for key, value in self.blob.items():
            assert self.store.get_blob("s", key) == value

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


ROLLING_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def bounded_shrinking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis may shrink a failing run for 5 minutes; a failing run here should stay short.

    (Internal knob; if it disappears the tests still run, only shrinking is longer.)
    """
    monkeypatch.setattr(conjecture_engine, "MAX_SHRINKING_SECONDS", 15, raising=False)


def test_store_matches_model(bounded_shrinking: None) -> None:
    run_state_machine_as_test(StoreMachine, settings=STORE_SETTINGS)


def test_many_rolls_and_reopens(bounded_shrinking: None) -> None:
    run_state_machine_as_test(RollingMachine, settings=ROLLING_SETTINGS)
