"""Atomic file replacement: write a temporary file, fsync, rename, fsync the directory.

A reader sees the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable

from engine.log.segment import fsync_dir

__all__ = ["fsync_dir", "remove_stale_temps", "replace_file"]


def _tmp_path(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(directory: str) -> None:
    """Remove temporary files that writers which are no longer running left behind
    (a live writer's temporary file is its work in progress)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if not name.startswith(".") or ".tmp-" not in name:
                continue
            pid = name.rsplit(".tmp-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def replace_file(path: str, chunks: Iterable[bytes], base: str | None = None, *, durable: bool = True,
                 sync_dir: bool = True) -> int:
    """Atomically replace ``path`` by (a copy of ``base``, then) ``chunks``; return its size.

    ``durable``: fsync the file before the rename (readers never see a half-written
    file either way; without it a power loss may leave an empty one). ``sync_dir``:
    fsync the directory after the rename (callers replacing several files in one
    directory do it once, with :func:`fsync_dir`).
    """
    tmp = _tmp_path(path)
    try:
        if base is not None:
            shutil.copyfile(base, tmp)
        with open(tmp, "ab" if base is not None else "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if durable:
                os.fsync(f.fileno())
            size = f.tell()
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")
    return size
