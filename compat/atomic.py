"""What compat adds to ``engine.log.fileio.atomic_write`` (the one way files are
replaced: temp file, fsync, rename, fsync of the directory).

``atomic_write`` writes ``<path>.tmp``, one temp file per target, so two writers
of the same target must not run at once: writers of an output folder take turns
with :func:`out_dir_lock`. Under that lock no temp file in the folder belongs to
a live writer, and :func:`remove_stale_temps` removes those a killed one left.

A file that only grows (a session's ``.jsonl``) may instead be appended to in
place (:func:`append_at`), after :func:`match_file` found that it is a prefix of
its new content: the file keeps its inode, and a reader sees the old bytes
followed by some of the new ones, as with the legacy writer, which appended.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from engine.log import fileio

from .names import SIDECAR_DIR

__all__ = ["append_at", "compare_file", "match_file", "out_dir_lock", "remove_stale_temps", "same_bytes"]

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


def match_file(f: BinaryIO, chunks: Iterable[bytes]) -> tuple[str, Iterator[bytes]]:
    """Compare what is left of the open file ``f`` with the bytes of ``chunks``.

    Returns ``("same", ...)`` when they are equal, ``("prefix", rest)`` when the file
    ends before ``chunks`` do (``rest``: the bytes that follow the file's end), and
    ``("differs", ...)`` otherwise. ``chunks`` is consumed in order, wholly unless
    the answer is ``"differs"`` or the caller leaves ``rest`` unread.
    """
    it = iter(chunks)
    for chunk in it:
        got = f.read(len(chunk))
        if got == chunk:
            continue
        if len(got) < len(chunk) and chunk.startswith(got):  # a short read: the file ends here
            return "prefix", itertools.chain([chunk[len(got) :]], it)
        return "differs", iter(())
    return ("same" if not f.read(1) else "differs"), iter(())


def compare_file(path: str, chunks: Iterable[bytes]) -> tuple[str, int, Iterator[bytes]]:
    """:func:`match_file` on the file at ``path``: ``(state, the file's size, rest)``,
    with state ``"missing"`` when there is no such file."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; only the open may find nothing)
    except FileNotFoundError:
        return "missing", 0, iter(())
    with f:
        size = os.fstat(f.fileno()).st_size
        state, rest = match_file(f, chunks)
    return state, size, rest


def same_bytes(path: str, chunks: Iterable[bytes]) -> bool:
    """Does ``path`` hold exactly the bytes of ``chunks``? (False when it does not exist.)"""
    try:
        with open(path, "rb") as f:
            return match_file(f, chunks)[0] == "same"
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def append_at(path: str, offset: int, chunks: Iterable[bytes]) -> int | None:
    """Append ``chunks`` to ``path`` in place, whose size must be ``offset``; return the
    number of bytes appended, or None when the file is no longer ``offset`` bytes long
    (nothing is written then).

    The file keeps its inode; its old bytes are not touched. The new bytes are fsync'd;
    when writing or syncing them fails, the file is cut back to ``offset`` bytes (its
    previous content) and the error is raised.
    """
    fd = fileio.open(path, os.O_WRONLY)
    try:
        if fileio.file_size(fd) != offset:
            return None
        written = 0
        try:
            for chunk in chunks:
                written += fileio.write_all(fd, chunk, offset + written)
            if written:
                fileio.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                fileio.ftruncate(fd, offset)
            raise
        return written
    finally:
        fileio.close(fd)
