"""Shared pytest configuration for the seglog tests.

``--long`` turns the crash campaigns into soak runs: every campaign kills its
writer ``LONG_FACTOR`` times as often, and tests marked ``slow`` run (they are
skipped otherwise). ``--crash-seed`` replays a campaign's plan (the kill
timing itself is never reproducible).
"""

from __future__ import annotations

import os
import random

import pytest

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
