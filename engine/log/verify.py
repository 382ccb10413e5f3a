"""verify: read every record of a pinned version and report each bad one."""

from __future__ import annotations

from bisect import bisect_left

from ..errors import CorruptionError
from .format import SEGMENT_HEADER_SIZE, RecordType
from .reports import Problem, VerifyReport
from .segment import LogSegment
from .version import Version


def known_offsets(version: Version, active_offsets: list[int]) -> list[tuple[LogSegment, list[int]]]:
    """Each segment with the record offsets its index knows (where a walk resumes after damage)."""
    segs = [(s.segment, sorted({*s.index.ev_offs, *s.index.bl_offs})) for s in version.sealed]
    segs.append((version.active, active_offsets))
    return segs


def verify(segments: list[tuple[LogSegment, list[int]]], max_bytes: int, active_end: int) -> VerifyReport:
    """Check every record's checksum and payload; report each bad one.

    After a bad record the walk resumes at the next record the index knows of,
    so one flipped byte is reported once and the rest is still checked. The
    last segment (the active one) is read up to ``active_end``.
    """
    report = VerifyReport()
    for i, (seg, known) in enumerate(segments):
        off = SEGMENT_HEADER_SIZE
        end = active_end if i == len(segments) - 1 else seg.size
        while off < end:
            try:
                rec = seg.read(off, end)
                if rec.rtype == RecordType.EVENTS:
                    rec.events(max_bytes)
                elif rec.rtype == RecordType.BLOB:
                    rec.blob_key()
                    rec.blob_value(max_bytes)
                elif rec.rtype == RecordType.STREAM_CREATE:
                    rec.name()
                report.records += 1
                off = rec.end
            except CorruptionError as exc:
                report.problems.append(Problem(seg.path, off, str(exc).split(" (")[0]))
                j = bisect_left(known, off + 1)
                if j >= len(known):
                    break
                off = known[j]
    return report
