"""Library warnings do not reach stderr unless the application configures logging."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_warnings_stay_quiet_without_logging_configured(tmp_path: Path) -> None:
    # A torn tail makes open log a warning; with no handler configured it must not print.
    code = f"""
import os, engine, compat
p = {str(tmp_path / "s")!r}
with engine.open(p) as s:
    s.append("a", 1)
seg = sorted(n for n in os.listdir(p) if n.endswith(".seg"))[-1]
with open(os.path.join(p, seg), "ab") as f:
    f.write(b"\\x01" * 40)
with engine.open(p) as s:
    assert s.read_range("a") == [1]
import logging
assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("engine").handlers)
assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("compat").handlers)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr
