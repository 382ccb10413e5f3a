"""Session names reach the file system here: refuse anything that could leave the target."""

from __future__ import annotations

import os

from engine.errors import InvalidNameError
from engine.session.schema import check_session_name


def session_files(out_dir: str, name: str) -> tuple[str, str]:
    """``(sessions/<name>.jsonl, sessions/<name>.index.json)`` under ``out_dir``.

    Refuses names with path separators, ``..``, NUL, control characters or
    nothing at all, and checks that the result really lies inside ``out_dir``.
    """
    check_session_name(name)
    sessions = os.path.join(os.path.abspath(out_dir), "sessions")
    jsonl = os.path.join(sessions, name + ".jsonl")
    index = os.path.join(sessions, name + ".index.json")
    for path in (jsonl, index):
        if os.path.dirname(os.path.normpath(path)) != os.path.normpath(sessions):
            raise InvalidNameError(f"session name {name!r} would leave {sessions}")
    return jsonl, index
