"""Shared pytest configuration for the seglog tests.

``--long`` turns the crash campaigns into soak runs: every campaign kills its
writer ``LONG_FACTOR`` times as often, and tests marked ``slow`` run (they are
skipped otherwise). ``--crash-seed`` replays a campaign's plan (the kill
timing itself is never reproducible).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import PersistenceManager, SeglogError, SessionPool

#: How much longer the crash campaigns run with --long.
LONG_FACTOR = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seglog")
    group.addoption(
        "--long",
        action="store_true",
        default=False,
        help=f"run long crash campaigns ({LONG_FACTOR}x the kills) and the tests marked slow",
    )
    group.addoption(
        "--crash-seed",
        action="store",
        type=int,
        default=None,
        help="seed of the crash campaigns' plans and kill delays (default: random, printed on failure)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long campaign: run with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def long_run(pytestconfig: pytest.Config) -> bool:
    """True when the run was started with --long."""
    return bool(pytestconfig.getoption("--long"))


@pytest.fixture(scope="session")
def kill_factor(long_run: bool) -> int:
    """Multiplier for the number of SIGKILLs of every crash campaign."""
    return LONG_FACTOR if long_run else 1


@pytest.fixture
def crash_seed(pytestconfig: pytest.Config) -> int:
    seed = pytestconfig.getoption("--crash-seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    return int(seed)


@pytest.fixture
def crash_rng(crash_seed: int) -> random.Random:
    return random.Random(crash_seed)


class Managers:
    """Makes PersistenceManagers on one store directory and shuts them down at
    teardown (except those a deadlocked test abandons: their locks are held forever)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.made: list[PersistenceManager] = []
        self.abandoned: list[PersistenceManager] = []

    def __call__(self, size: int = 8, **kw: Any) -> PersistenceManager:
        kw.setdefault("save_interval", 60.0)
        kw.setdefault("register_atexit", False)
        pm = PersistenceManager(SessionPool(size), self.path, **kw)
        self.made.append(pm)
        return pm

    def reopen(self, pm: PersistenceManager, size: int = 8, **kw: Any) -> PersistenceManager:
        pm.shutdown()
        return self(size, **kw)

    def close(self) -> None:
        for pm in self.made:
            if pm not in self.abandoned:
                with contextlib.suppress(SeglogError):  # a test about a failing save may leave one
                    pm.shutdown()


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[Managers]:
    """PersistenceManagers on ``tmp_path / "store"``, shut down at teardown."""
    m = Managers(tmp_path / "store")
    yield m
    m.close()


@pytest.fixture(scope="session")
def legacy_samples() -> Path:
    """The legacy sample folder (``samples.SAMPLES``); skips the test when it is absent."""
    from samples import SAMPLES

    if not SAMPLES.is_dir():
        pytest.skip(f"legacy samples not found at {SAMPLES} (set SEGLOG_LEGACY_SAMPLES)")
    return SAMPLES
