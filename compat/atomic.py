"""What compat adds to ``engine.log.fileio.atomic_write`` (the one way files are
replaced: temp file, fsync, rename, fsync of the directory).

``atomic_write`` writes ``<path>.tmp``, one temp file per target, so two writers
of the same target must not run at once: writers of an output folder take turns
with :func:`out_dir_lock`. Under that lock no temp file in the folder belongs to
a live writer, and :func:`remove_stale_temps` removes those a killed one left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator

from engine.log import fileio

from .names import SIDECAR_DIR

__all__ = ["file_chunks", "out_dir_lock", "remove_stale_temps"]

LOCK_NAME = "LOCK"


@contextlib.contextmanager
def out_dir_lock(out_dir: str) -> Iterator[None]:
    """Hold the writer lock of ``out_dir`` (an flock on ``OUT_DIR/.seglog/LOCK``),
    waiting for any other writer, thread or process, to finish first."""
    folder = os.path.join(os.path.abspath(out_dir), SIDECAR_DIR)
    os.makedirs(folder, exist_ok=True)
    fd = fileio.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fileio.close(fd)  # releases the lock


def remove_stale_temps(directory: str, endings: Iterable[str]) -> None:
    """Remove the temp files of targets ending in ``endings`` that a killed writer left
    in ``directory``. Call it holding :func:`out_dir_lock`."""
    stale = tuple(end + fileio.TMP_SUFFIX for end in endings)
    with contextlib.suppress(FileNotFoundError):
        for name in fileio.listdir(directory):
            if name.endswith(stale):
                fileio.remove(os.path.join(directory, name))


def file_chunks(path: str, size: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of ``path``, in chunks (to copy a file into a new version of itself)."""
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
