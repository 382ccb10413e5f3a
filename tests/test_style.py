"""The source is formatted and linted as pyproject.toml says.

ruff comes with the ``test`` extra, so ``bash .ci/run`` enforces this; where
ruff is not installed the check is skipped, not passed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e '.[test]'")


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_ruff_format_check_is_clean() -> None:
    done = _ruff("format", "--check", ".")
    assert done.returncode == 0, f"run `ruff format .`:\n{done.stdout}{done.stderr}"


def test_ruff_check_is_clean() -> None:
    done = _ruff("check", ".")
    assert done.returncode == 0, f"run `ruff check .`:\n{done.stdout}{done.stderr}"
