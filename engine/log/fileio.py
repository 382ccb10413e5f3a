"""Every file system call of the engine, in one place: the fault-injection seam.

The engine never calls ``os`` for file I/O directly; it calls the functions of
this module, looked up at call time (``fileio.pwrite(...)``, never ``from
fileio import pwrite``). By default they *are* the ``os`` functions, so the
seam costs one module attribute lookup. Tests replace them with
:func:`install` (and put them back with :func:`uninstall`) to simulate power
loss or make a chosen call fail with EIO or ENOSPC; see
``tests/log/faultfs.py``.

Also here: :func:`atomic_write`, the one way the engine (and compat) replaces
a whole file: write a temp file, fsync it, rename it over the target, fsync
the directory. A crash at any point leaves either the old file or the new
one, and at worst a ``*.tmp`` file that the next writer removes.
"""

from __future__ import annotations

import contextlib
import mmap as _mmap
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

TMP_SUFFIX = ".tmp"

# -- the calls (rebound by install()) ----------------------------------------
open = os.open
close = os.close
pread = os.pread
pwrite = os.pwrite
write = os.write
fsync = os.fsync
fdatasync = os.fdatasync if sys.platform != "darwin" else os.fsync
ftruncate = os.ftruncate
fstat = os.fstat
dup = os.dup
rename = os.rename
unlink = os.unlink
link = os.link
mkdir = os.mkdir
listdir = os.listdir
stat = os.stat

NAMES = (
    "open",
    "close",
    "pread",
    "pwrite",
    "write",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fstat",
    "dup",
    "rename",
    "unlink",
    "link",
    "mkdir",
    "listdir",
    "stat",
)
_ORIGINAL = {name: globals()[name] for name in NAMES}


def install(**calls: Callable[..., Any]) -> None:
    """Replace some of the calls above (tests only)."""
    unknown = set(calls) - set(NAMES)
    if unknown:
        raise ValueError(f"not a fileio call: {sorted(unknown)}")
    globals().update(calls)


def uninstall() -> None:
    """Put the ``os`` functions back."""
    globals().update(_ORIGINAL)


# -- helpers built on the calls --------------------------------------------
def fsync_dir(directory: str) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable."""
    fd = open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        close(fd)


def makedirs(path: str) -> None:
    """Create ``path`` and its missing parents, each made durable in its parent."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        makedirs(parent)
    try:
        mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    fsync_dir(parent or ".")


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int | None = None) -> int:
    """Write all of ``data`` (at ``offset``, or at the file position); return its length."""
    view = memoryview(data)
    total = len(view)
    while view:
        n = write(fd, view) if offset is None else pwrite(fd, view, offset + total - len(view))
        view = view[n:]
    return total


def file_size(fd: int) -> int:
    return fstat(fd).st_size


def read_file(path: str, limit: int) -> bytes | None:
    """The whole file, or None when it does not exist. A file over ``limit``
    bytes raises :class:`OverflowError` before anything is read."""
    try:
        fd = open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = file_size(fd)
        if size > limit:
            raise OverflowError(f"{path} is {size} bytes; the limit is {limit}")
        chunks = []
        pos = 0
        while pos < size:
            chunk = pread(fd, size - pos, pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)
    finally:
        close(fd)


def atomic_write(
    path: str, chunks: Iterable[bytes | bytearray | memoryview], *, durable: bool = True, keep_open: bool = False
) -> int:
    """Replace ``path`` with the concatenated ``chunks``, atomically.

    With ``durable`` (the default) the temp file is fsync'd before the rename
    and the directory after it. Returns the number of bytes written, or with
    ``keep_open`` an fd of the new file open for reading and writing (the
    caller closes it). A failure removes the temp file and leaves ``path`` as
    it was.
    """
    tmp = path + TMP_SUFFIX
    fd = open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = 0
        for chunk in chunks:
            size += write_all(fd, chunk)
        if durable:
            fsync(fd)
        rename(tmp, path)
    except BaseException:
        close(fd)
        with contextlib.suppress(OSError):
            unlink(tmp)
        raise
    if not keep_open:
        close(fd)
    try:
        if durable:
            fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        if keep_open:
            close(fd)
        raise
    return fd if keep_open else size


def map_readonly(path: str) -> _mmap.mmap | None:
    """Map a whole file read-only; None when it does not exist or is empty."""
    try:
        fd = open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = file_size(fd)
        if size == 0:
            return None
        return _mmap.mmap(fd, size, access=_mmap.ACCESS_READ)
    finally:
        close(fd)


def remove(path: str) -> bool:
    """Unlink ``path``; False when it was already gone."""
    try:
        unlink(path)
    except FileNotFoundError:
        return False
    return True
