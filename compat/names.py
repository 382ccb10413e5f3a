"""Session names reach the file system here: refuse anything that could leave the target.

A name must pass the session layer's check (``check_session_name``, built on the
engine's ``check_name``: a non-empty str, no control characters, NUL included, no
path separators, not "." or ".."). On top of it, every path made here is checked to
lie directly in its folder, in case a store holds a name written without that check.
"""

from __future__ import annotations

import os

from engine.errors import InvalidNameError
from engine.session.schema import check_session_name

#: Where materialize keeps what it knows about earlier runs, under OUT_DIR.
SIDECAR_DIR = ".seglog"


def _in(folder: str, name: str, file_name: str) -> str:
    """``folder/file_name``, refused unless it lies directly in ``folder``."""
    path = os.path.join(folder, file_name)
    if os.path.dirname(os.path.normpath(path)) != os.path.normpath(folder):
        raise InvalidNameError(f"session name {name!r} would leave {folder}")
    return path


def session_files(out_dir: str, name: str) -> tuple[str, str]:
    """``(sessions/<name>.jsonl, sessions/<name>.index.json)`` under ``out_dir``."""
    check_session_name(name)
    sessions = os.path.join(os.path.abspath(out_dir), "sessions")
    return _in(sessions, name, name + ".jsonl"), _in(sessions, name, name + ".index.json")


def snapshot_file(out_dir: str, name: str) -> str:
    """``repl-<name>.json`` under ``out_dir``."""
    check_session_name(name)
    return _in(os.path.abspath(out_dir), name, f"repl-{name}.json")


def sidecar_file(out_dir: str, name: str) -> str:
    """``.seglog/<name>.json`` under ``out_dir``: materialize's record of its last run."""
    check_session_name(name)
    return _in(os.path.join(os.path.abspath(out_dir), SIDECAR_DIR), name, name + ".json")
