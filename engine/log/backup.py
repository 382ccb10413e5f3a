"""backup: a consistent copy of a live store.

The copy is made from a pinned version: sealed segments and their indexes are
hard-linked (they never change once sealed; copied when the destination is on
another file system), the active segment is copied up to the end of its last
whole record as of the pin, and a MANIFEST naming exactly those segments is
written last. Writers go on meanwhile: what they append after the pin is not
in the copy. Until the MANIFEST is in place the destination is no store (an
interrupted backup leaves a directory that ``engine.open`` refuses); remove
it and start again.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError, StoreIOError
from . import fileio
from .active_index import ActiveIndexFile
from .manifest import Manifest
from .sealed_index import sealed_index_path
from .segment import segment_path

if TYPE_CHECKING:
    from .store import Store

_CHUNK = 1 << 20


def _copy(src: str, dst: str, length: int | None = None) -> None:
    """Copy ``length`` bytes (all with None) of ``src`` into the new file ``dst``, fsync'd."""
    fd_in = fileio.open(src, os.O_RDONLY)
    try:
        fd_out = fileio.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            end = fileio.file_size(fd_in) if length is None else length
            pos = 0
            while pos < end:
                chunk = fileio.pread(fd_in, min(_CHUNK, end - pos), pos)
                if not chunk:
                    break
                fileio.write_all(fd_out, chunk)
                pos += len(chunk)
            fileio.fsync(fd_out)
        finally:
            fileio.close(fd_out)
    finally:
        fileio.close(fd_in)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        fileio.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        _copy(src, dst)


def backup(store: Store, dest: str) -> None:
    """Copy ``store`` into the directory ``dest`` (new, or empty)."""
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and (not os.path.isdir(dest) or fileio.listdir(dest)):
        raise InvalidArgumentError(f"backup destination {dest} exists and is not an empty directory")
    if os.path.commonpath([dest, store.path]) == store.path:
        raise InvalidArgumentError(f"backup destination {dest} is inside the store {store.path}")
    try:
        if not os.path.isdir(dest):
            fileio.mkdir(dest)
        with store.pin() as version:
            active = version.active
            active_end = active.size
            manifest = store.manifest_snapshot()
            for s in version.sealed:
                sid = s.segment_id
                _link_or_copy(segment_path(store.path, sid), segment_path(dest, sid))
                if os.path.exists(sealed_index_path(store.path, sid)):  # else rebuilt when the copy opens
                    _link_or_copy(sealed_index_path(store.path, sid), sealed_index_path(dest, sid))
            _copy(active.path, segment_path(dest, active.segment_id), active_end)
        ActiveIndexFile.create(dest, active.segment_id).close()  # empty: rebuilt from the segment at open
        fileio.fsync_dir(dest)
        Manifest(
            segments=version.segment_ids,
            next_segment_id=manifest.next_segment_id,
            max_record_bytes=manifest.max_record_bytes,
            next_stream_id=manifest.next_stream_id,
        ).save(dest)
        fileio.fsync_dir(os.path.dirname(dest))
    except OSError as exc:
        raise StoreIOError(f"backup of {store.path} to {dest} failed: {exc}", dest, exc.errno or 0) from exc
