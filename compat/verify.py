"""verify: does materializing reproduce a legacy directory byte for byte?"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.errors import NotFoundError
from engine.session.catalog import SessionCatalog

from .importer import legacy_names, snapshot_names
from .materialize import session_bytes, snapshots


@dataclass
class Mismatch:
    path: str
    offset: int  # first differing byte; -1 when the session is missing from the store
    detail: str

    def __str__(self) -> str:
        if self.offset < 0:
            return f"{self.path}: {self.detail}"
        return f"{self.path}: first difference at byte {self.offset} ({self.detail})"


def first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first differing byte (the shorter length when one is a prefix)."""
    n = min(len(a), len(b))
    lo, hi = 0, n
    if a[:n] == b[:n]:
        return n
    while hi - lo > 1 << 12:  # narrow by halves with C comparisons, then scan
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return next(i for i in range(lo, hi) if a[i] != b[i])


def _compare(path: str, expected: bytes, actual: bytes) -> Mismatch | None:
    if expected == actual:
        return None
    off = first_difference(expected, actual)
    return Mismatch(path, off, f"legacy file has {len(expected)} bytes, materialized {len(actual)}")


def verify(
    catalog: SessionCatalog, legacy_dir: str, progress: Callable[[], object] | None = None
) -> Iterator[Mismatch]:
    """Every file of ``legacy_dir`` that materializing from the store does not reproduce.

    ``progress`` is called once per session and per snapshot checked."""
    for name in legacy_names(legacy_dir):
        yield from _check_session(catalog, legacy_dir, name)
        if progress is not None:
            progress()
    stored = snapshots(catalog)
    for name in snapshot_names(legacy_dir):
        yield from _check_snapshot(stored, legacy_dir, name)
        if progress is not None:
            progress()


def _check_session(catalog: SessionCatalog, legacy_dir: str, name: str) -> Iterator[Mismatch]:
    sessions = os.path.join(legacy_dir, "sessions")
    jsonl_path = os.path.join(sessions, name + ".jsonl")
    index_path = os.path.join(sessions, name + ".index.json")
    try:
        jsonl, index = session_bytes(catalog.persister(name))
    except NotFoundError:
        yield Mismatch(jsonl_path, -1, "session is not in the store")
        return
    for path, actual in ((jsonl_path, jsonl), (index_path, index)):
        try:
            with open(path, "rb") as f:
                expected = f.read()
        except FileNotFoundError:
            yield Mismatch(path, -1, "file is missing from the legacy directory")
            continue
        m = _compare(path, expected, actual)
        if m is not None:
            yield m


def _check_snapshot(stored: dict[str, bytes], legacy_dir: str, name: str) -> Iterator[Mismatch]:
    path = os.path.join(legacy_dir, f"repl-{name}.json")
    with open(path, "rb") as f:
        expected = f.read()
    if name not in stored:
        yield Mismatch(path, -1, "snapshot is not in the store")
        return
    m = _compare(path, expected, stored[name])
    if m is not None:
        yield m
