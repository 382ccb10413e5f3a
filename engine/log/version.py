"""Versions: immutable, reference-counted sets of segments, and file lifetime.

A :class:`Version` is the list of sealed segments (each with its sealed index)
in log order plus the active segment, as one reader sees them. A reader pins
the current version for as long as it may touch any of its files (a point
read for its ``pread``, a ``scan`` iterator for its whole life, ``verify``,
a backup) and unpins it afterwards. Replacing segments (a roll, a compaction)
installs a new version; the old one is *retired* and lives until its last pin
is gone. Then every segment it holds that no live version holds any more is
closed, and, in a writer, its files are deleted.

That is the only way a segment file is deleted while the store is open (as
LevelDB's ``RemoveObsoleteFiles``): a file goes only when it is neither in the
manifest, nor in a pinned version, nor an output being written. The closing
and deleting happen in :meth:`VersionSet.reap`, never under a store lock (the
last close of a deleted 64 MiB file frees its blocks, tens of ms). Leftovers
of a crash are removed at open (see ``recovery``).

Thread safety: ``VersionSet`` has its own lock, ``_mu``, innermost in the
store's lock order; it guards ``_current``, ``_retired`` and every version's
``retired`` flag. Pins are a list per version (``holders``): ``append``/``pop`` are atomic,
so a point read pins and unpins without taking ``_mu``; whoever sees a retired
version with no pins left (the reader that unpinned last, or the installer)
releases it, once, under ``_mu``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .active_index import index_path
from .fileio import remove
from .sealed_index import SealedIndex, sealed_index_path
from .segment import LogSegment, segment_path

log = logging.getLogger(__name__)


class Sealed(NamedTuple):
    segment: LogSegment
    index: SealedIndex  # type: ignore[assignment]

    @property
    def segment_id(self) -> int:
        return self.segment.segment_id


class Version:
    __slots__ = ("_release", "active", "holders", "released", "retired", "sealed")

    def __init__(self, sealed: tuple[Sealed, ...], active: LogSegment, release: Callable[[Version], None]) -> None:
        self.sealed = sealed
        self.active = active
        #: One item per pin. Hot paths pin with ``holders.append(None)`` and unpin
        #: with ``holders.pop()`` then ``if version.retired: version.idle()``.
        self.holders: list[None] = []
        self._release = release
        self.retired = False
        self.released = False

    @property
    def segment_ids(self) -> list[int]:
        return [s.segment_id for s in self.sealed] + [self.active.segment_id]

    def segments(self) -> list[LogSegment]:
        return [s.segment for s in self.sealed] + [self.active]

    @property
    def pins(self) -> int:
        return len(self.holders)

    def pin(self) -> Version:
        self.holders.append(None)
        return self

    def unpin(self) -> None:
        self.holders.pop()
        if self.retired and not self.holders:
            self._release(self)

    def idle(self) -> None:
        """A retired version's last pin may be gone: release it then."""
        if not self.holders:
            self._release(self)

    def __enter__(self) -> Version:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unpin()


class VersionSet:
    """The current version, the retired ones still pinned, and what to do with
    the files of segments that no version holds any more."""

    def __init__(self, directory: str, delete_files: bool) -> None:
        self.directory = directory
        self.delete_files = delete_files
        self._mu = threading.Lock()
        self._current: Version | None = None  # guarded by _mu
        self._retired: list[Version] = []  # guarded by _mu: retired, still pinned
        #: Segment ids whose files are being written by this process (outputs in
        #: progress): never deleted. Guarded by _mu.
        self.pending_outputs: set[int] = set()
        #: Segment ids dropped from the manifest: their files go when no version holds them.
        self._dropped: set[int] = set()
        #: Released, for ``reap``: segments and indexes to close, ids whose files to delete.
        self._to_close: list[LogSegment | SealedIndex] = []
        self._to_delete: list[int] = []

    @property
    def current(self) -> Version:
        v = self._current
        assert v is not None
        return v

    def make(self, sealed: tuple[Sealed, ...], active: LogSegment) -> Version:
        return Version(sealed, active, self._on_unpinned)

    def install(self, version: Version, dropped: Iterable[int] = ()) -> None:
        """Make ``version`` current; segments in ``dropped`` left the manifest and
        their files go once no live version holds them. Called with the store's
        catalog lock held, so readers switch to ``version`` atomically."""
        with self._mu:
            old, self._current = self._current, version
            self._dropped.update(dropped)
            if old is not None:
                old.retired = True
                if old.pins:
                    self._retired.append(old)
                    old = None
        if old is not None:
            self._free(old)

    def _on_unpinned(self, version: Version) -> None:
        with self._mu:
            if version.released or version.pins:
                return
            if version in self._retired:
                self._retired.remove(version)
        self._free(version)

    def live_ids(self) -> set[int]:
        """Segment ids some live version holds, and outputs being written."""
        with self._mu:
            versions = [*self._retired, *([self._current] if self._current else [])]
            ids = set(self.pending_outputs)
        for v in versions:
            ids.update(v.segment_ids)
        return ids

    def _free(self, version: Version) -> None:
        """A version was released: queue the segments no live version holds for
        closing, and the files of those that left the manifest for deletion.
        Nothing is closed or deleted here (this runs under the store's locks, or
        in a reader's unpin): :meth:`reap` does it, off every hot path."""
        with self._mu:
            if version.released:
                return
            version.released = True
            live = [*self._retired, *([self._current] if self._current else [])]
            held = {id(seg) for v in live for seg in v.segments()}
            held_ids = {i for v in live for i in v.segment_ids}
            gone = [s for s in version.sealed if id(s.segment) not in held]
            if id(version.active) not in held:
                self._to_close.append(version.active)
            for s in gone:
                self._to_close.extend((s.index, s.segment))
            delete = sorted(
                s.segment_id for s in gone if s.segment_id in self._dropped and s.segment_id not in held_ids
            )
            self._dropped.difference_update(delete)
            self._to_delete.extend(delete)

    def reap(self) -> int:
        """Close and delete what released versions left (a deleted segment file's
        blocks are freed here: tens of ms for a big one). Called by the writer's
        background thread, after a switch to replaced segments, by ``refresh`` and
        at close, never with a store lock held. Returns the files deleted."""
        with self._mu:
            to_close, self._to_close = self._to_close, []
            to_delete, self._to_delete = self._to_delete, []
        deleted = 0
        if self.delete_files:
            for sid in to_delete:
                deleted += self.delete_segment_files(sid)
        for f in to_close:
            f.close()
        return deleted

    def delete_segment_files(self, segment_id: int) -> int:
        deleted = 0
        for path in (
            segment_path(self.directory, segment_id),
            sealed_index_path(self.directory, segment_id),
            index_path(self.directory, segment_id),
        ):
            if remove(path):
                deleted += 1
                log.info("%s: removed %s", self.directory, path)
        return deleted

    def close(self) -> None:
        """Close every segment of every version (the store is closing)."""
        self.reap()
        with self._mu:
            versions = [*self._retired, *([self._current] if self._current else [])]
            self._retired = []
            self._current = None
        seen: set[int] = set()
        for v in versions:
            v.released = True
            for s in v.sealed:
                if id(s.segment) not in seen:
                    seen.add(id(s.segment))
                    s.index.close()
                    s.segment.close()
            if id(v.active) not in seen:
                seen.add(id(v.active))
                v.active.close()
