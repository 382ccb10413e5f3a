"""Opening a store: creation, leftovers, sealed indexes, the active tail, replay.

``load`` turns the files named by a MANIFEST into a catalog, the sealed
segments and the active segment. It is used by open and by ``refresh`` (which
hands over the segments it already has open, so that nothing is read twice).
The crash rules it applies are written in FORMAT.md ("Opening", "Crash rules").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import CorruptionError, NotFoundError, TruncatedRecordError
from . import fileio
from .active import ActiveSegment
from .active_index import ActiveIndexFile, Entry, pack_entry, parse_entries
from .catalog import Catalog, StreamState
from .format import (
    ACTIVE_INDEX_EXT,
    INDEX_ENTRY_SIZE,
    MANIFEST_NAME,
    SEALED_INDEX_EXT,
    SEGMENT_HEADER_SIZE,
    TMP_SUFFIX,
    RecordType,
    parse_file_name,
)
from .manifest import Manifest
from .options import StoreOptions
from .sealed_index import SealedIndex
from .segment import LogSegment
from .version import Sealed

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    catalog: Catalog
    sealed: tuple[Sealed, ...]
    active: ActiveSegment
    #: Active index entries (read-only stores keep them to follow the writer).
    entries: list[Entry]


def create(path: str, opts: StoreOptions) -> Manifest:
    """A new store in ``path``: its first (empty) segment and index, then the
    MANIFEST that makes it a store. A crash before the MANIFEST leaves files
    that the next open recognizes as an interrupted creation and removes."""
    manifest = Manifest(max_record_bytes=opts.max_record_bytes)
    sid = manifest.allocate_segment_id()
    LogSegment.create(path, sid, opts.max_record_bytes).close()
    ActiveIndexFile.create(path, sid).close()
    manifest.segments = [sid]
    manifest.save(path)
    return manifest


def segment_files(path: str) -> list[tuple[str, int, str]]:
    """``(name, segment id, extension)`` of every segment and index file."""
    out = []
    for name in fileio.listdir(path):
        parsed = parse_file_name(name)
        if parsed is not None:
            out.append((name, *parsed))
    return out


def interrupted_creation(path: str, files: list[tuple[str, int, str]]) -> bool:
    """Are these the files of a store whose creation was killed before its MANIFEST?"""
    for name, sid, ext in files:
        if sid != 1:
            return False
        if ext == "seg" and fileio.stat(os.path.join(path, name)).st_size > SEGMENT_HEADER_SIZE:
            return False
    return True


def open_manifest(path: str, opts: StoreOptions) -> Manifest:
    """Read the MANIFEST, or create the store when there is none and may be one."""
    manifest = Manifest.load(path)
    if manifest is not None:
        return manifest
    files = segment_files(path)
    if files and not interrupted_creation(path, files):
        raise CorruptionError("segment files present but MANIFEST is missing", os.path.join(path, MANIFEST_NAME))
    if opts.readonly or not opts.create:
        raise NotFoundError(f"no store at {path}")
    for name, _sid, _ext in files:  # an empty first segment from a creation that was killed
        fileio.remove(os.path.join(path, name))
    return create(path, opts)


def remove_leftovers(path: str, manifest: Manifest, live: Iterable[int] = ()) -> None:
    """Writer only: remove what a crash left behind. Temp files; files of segments
    that are neither in the manifest, nor in ``live`` (pinned or being written),
    nor in a range the manifest reserves for another process; the ``.idx`` of a
    sealed segment (its ``.sidx`` replaced it); the ``.sidx`` of the active
    segment (written by a roll that did not commit)."""
    listed = set(manifest.segments)
    keep = listed | set(live)
    active = manifest.segments[-1]
    for name in fileio.listdir(path):
        full = os.path.join(path, name)
        if manifest.is_reserved_name(name):
            continue  # another process may be writing it
        parsed = parse_file_name(name)
        if name.endswith(TMP_SUFFIX):
            fileio.remove(full)
            continue
        if parsed is None:
            continue
        sid, ext = parsed
        stale = (ext == ACTIVE_INDEX_EXT and sid in listed and sid != active) or (
            ext == SEALED_INDEX_EXT and sid == active
        )
        if stale or sid not in keep:
            log.warning("%s: removing %s, left by an interrupted change", path, name)
            fileio.remove(full)


def load_sealed(path: str, seg: LogSegment, readonly: bool) -> SealedIndex:
    """The segment's sealed index; rebuilt from the segment when missing or damaged.

    A segment shorter than the data its index covers lost records: corruption.
    """
    idx = SealedIndex.load(path, seg.segment_id)
    if idx is not None and idx.data_end == seg.size:
        return idx
    if idx is not None:
        data_end = idx.data_end
        idx.close()
        if data_end > seg.size:
            raise CorruptionError(
                f"sealed segment is {seg.size} bytes but its index covers {data_end}: records were lost",
                seg.path,
                seg.size,
            )
        log.warning("%s: sealed index covers %d bytes, segment has %d; rebuilding", seg.path, data_end, seg.size)
    streams: dict[int, StreamState] = {}
    creates: dict[int, str] = {}
    drops: list[int] = []
    for rec in seg.scan(SEGMENT_HEADER_SIZE):
        if rec.rtype == RecordType.STREAM_CREATE:
            creates[rec.stream_id] = rec.name()
        elif rec.rtype == RecordType.STREAM_DROP:
            drops.append(rec.stream_id)
        else:
            st = streams.get(rec.stream_id)
            if st is None:
                st = streams[rec.stream_id] = StreamState(rec.stream_id, "")
            elif rec.rtype == RecordType.EVENTS and st.act_seqs and rec.seq != st.next_seq:
                raise CorruptionError(
                    f"events of stream id {rec.stream_id} start at seq {rec.seq}, expected {st.next_seq}",
                    seg.path,
                    rec.offset,
                )
            st.account(rec.rtype, rec.seq, rec.count, rec.offset, rec.end - rec.offset)
    if seg.scan_end != seg.size:
        raise CorruptionError("sealed segment has a torn record", seg.path, seg.scan_end)
    data = SealedIndex.build(seg.segment_id, streams.values(), drops, seg.size, creates)
    if not readonly:
        SealedIndex.write(path, seg.segment_id, data)
        loaded = SealedIndex.load(path, seg.segment_id)
    else:
        loaded = SealedIndex.from_buffer(seg.path, seg.segment_id, data)
    if loaded is None:
        raise CorruptionError("sealed index unreadable right after writing it", seg.path)
    return loaded


def recover_active(
    path: str, seg: LogSegment, readonly: bool, start_lsn: int, known: list[Entry] | None = None
) -> tuple[ActiveSegment, list[Entry]]:
    """Load the active index, scan the unindexed tail, truncate a torn tail.

    With ``known`` (a refresh of a read-only store), those entries are trusted
    and only what follows them is scanned.
    """
    if known is not None:
        entries, clean = list(known), False
    else:
        raw, clean = ActiveIndexFile.load(path, seg.segment_id, INDEX_ENTRY_SIZE * (seg.size // 32 + 2) + 64)
        entries = parse_entries(raw)
        if not check_entries(seg, entries):
            entries, clean = [], False
    start = SEGMENT_HEADER_SIZE
    if entries:
        last = entries[-1]
        try:
            rec = seg.read(last.offset)
        except TruncatedRecordError:
            raise CorruptionError(
                "the segment ends inside a record its index proves was synced", seg.path, seg.size
            ) from None
        if (rec.stream_id, rec.rtype, rec.seq, rec.count) != (last.stream_id, last.rtype, last.seq, last.events):
            raise CorruptionError("the record differs from the index entry that describes it", seg.path, last.offset)
        start = rec.end
    tail, valid_end = seg.recover_tail(start, quiet=readonly)
    entries.extend(Entry(r.offset, r.seq, r.stream_id, r.count, r.rtype, r.flags) for r in tail)
    if valid_end < seg.size:
        if readonly:
            seg.size = valid_end  # ignore the torn bytes, leave the file alone
        else:
            seg.truncate(valid_end)
    index = None
    body = b""
    if not readonly:
        if tail:
            seg.sync()  # index only what is known to be on disk
        body = b"".join(pack_entry(*e) for e in entries)
        if clean and not tail:
            index = ActiveIndexFile.open_append(path, seg.segment_id)
        else:
            index = ActiveIndexFile.create(path, seg.segment_id, body)
    return ActiveSegment(seg, index, start_lsn, body), entries


def check_entries(seg: LogSegment, entries: list[Entry]) -> bool:
    """Entries only exist for synced records: one that points past the end of
    the file proves that synced data was lost (corruption). Entries out of
    order are a damaged index: False, the caller rebuilds it."""
    prev = SEGMENT_HEADER_SIZE - 1
    for e in entries:
        if e.offset >= seg.size:
            raise CorruptionError(
                f"the segment ends at {seg.size}, before a record its index proves was synced", seg.path, seg.size
            )
        if e.offset <= prev:
            log.warning("%s: index entry for offset %d is out of order; rebuilding", seg.path, e.offset)
            return False
        prev = e.offset
    return True


def retry_missing(fn: Callable[[], None], attempts: int = 3) -> None:
    """Run ``fn`` (which reads the MANIFEST and opens what it lists) again when a
    listed segment is missing: a compactor replaced and deleted it between the
    two (the MANIFEST read again names its outputs)."""
    for attempt in range(attempts):
        try:
            return fn()
        except CorruptionError as exc:
            if attempt == attempts - 1 or "is missing" not in str(exc):
                raise


def follow_active(seg: LogSegment, entries: list[Entry]) -> list[Entry]:
    """Read-only: the whole records a writer flushed to the active segment after
    ``entries`` (a record still being written ends the scan, as a torn tail does)."""
    start = entries[-1].offset if entries else SEGMENT_HEADER_SIZE
    seg.refresh_size()
    tail_from = seg.read(start).end if entries else start
    tail, end = seg.recover_tail(tail_from, quiet=True)
    seg.size = end
    return [Entry(r.offset, r.seq, r.stream_id, r.count, r.rtype, r.flags) for r in tail]


def replay_active(catalog: Catalog, active: ActiveSegment, entries: list[Entry], first: int = 0) -> None:
    """Account the records of the active segment (``entries[first:]``) in the catalog."""
    seg = active.segment
    path = seg.path
    for i in range(first, len(entries)):
        e = entries[i]
        size = (entries[i + 1].offset if i + 1 < len(entries) else seg.size) - e.offset
        st = catalog.by_id.get(e.stream_id)
        if e.rtype == RecordType.EVENTS and st is not None:
            catalog.check_next(st, e.seq, path, e.offset)
        active.account(e.offset, e.seq, st, e.stream_id, e.events, e.rtype, e.flags, size, entry=False)
        if e.rtype == RecordType.STREAM_CREATE:
            name = seg.read(e.offset).name()
            catalog.add(e.stream_id, name, path, e.offset)
            active.creates[e.stream_id] = name
        elif e.rtype == RecordType.STREAM_DROP:
            catalog.remove(e.stream_id)


def open_sealed(
    path: str, ids: list[int], limit: int, readonly: bool, reuse: dict[int, Sealed] | None = None
) -> list[Sealed]:
    """The sealed segments ``ids`` with their indexes: those in ``reuse`` as they
    are, the others opened (and closed again if one of them fails)."""
    reuse = reuse or {}
    sealed: list[Sealed] = []
    opened: list[LogSegment] = []
    try:
        for sid in ids:
            if sid in reuse:
                sealed.append(reuse[sid])
                continue
            seg = LogSegment.open(path, sid, False, limit)
            opened.append(seg)
            sealed.append(Sealed(seg, load_sealed(path, seg, readonly)))
            seg.sealed = True
    except BaseException:
        for seg in opened:
            seg.close()
        raise
    return sealed


def load(
    path: str,
    opts: StoreOptions,
    manifest: Manifest,
    limit: int,
    start_lsn: int = 0,
    reuse: dict[int, Sealed] | None = None,
    active: tuple[LogSegment, list[Entry]] | None = None,
) -> Loaded:
    """Open (or reuse) every segment the manifest names and replay them.

    ``reuse`` maps segment ids to sealed segments already open; ``active`` is
    the active segment already open with the entries known so far (refresh).
    """
    readonly = opts.readonly
    reuse = reuse or {}
    sealed = open_sealed(path, manifest.segments[:-1], limit, readonly, reuse)
    opened = [s.segment for s in sealed if s.segment_id not in reuse]
    try:
        active_id = manifest.segments[-1]
        if active is not None and active[0].segment_id == active_id:
            seg, known = active
            seg.refresh_size()
        else:
            seg, known = LogSegment.open(path, active_id, not readonly, limit), None
            opened.append(seg)
        act, entries = recover_active(path, seg, readonly, start_lsn, known)
        catalog = Catalog(manifest.next_stream_id)
        for s in sealed:
            catalog.apply_sealed(s.segment, s.index)
        replay_active(catalog, act, entries)
    except BaseException:
        for seg in opened:
            seg.close()
        raise
    return Loaded(catalog, tuple(sealed), act, entries)
