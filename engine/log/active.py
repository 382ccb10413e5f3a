"""ActiveSegment: the segment being appended to, and everything that goes with it.

A roll replaces the whole object (and the new one starts empty), so nothing is
reset by hand. Positions: an *lsn* counts bytes appended since the store opened
(the group committer speaks lsns); ``offset = lsn + lsn_offset`` in this
segment.

Not thread-safe. The Store calls it with its write lock held; readers only use
``segment`` (pread, ``size``) and ``has_pending``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from .active_index import ActiveIndexFile, pack_entry
from .catalog import StreamState
from .format import INDEX_ENTRY_SIZE, RecordType
from .sealed_index import SealedIndex
from .segment import LogSegment


class ActiveSegment:
    __slots__ = (
        "creates",
        "drops",
        "entries",
        "entry_offs",
        "idx_written",
        "index",
        "lsn_offset",
        "pending",
        "segment",
        "start_lsn",
        "streams",
        "synced_end",
    )

    def __init__(
        self, segment: LogSegment, index: ActiveIndexFile | None, start_lsn: int, entries: bytes = b""
    ) -> None:
        self.segment = segment
        #: None in a read-only store.
        self.index = index
        #: Appended records not yet handed to the OS.
        self.pending = bytearray()
        #: Index entries of its records (packed), and their record offsets.
        self.entries = bytearray(entries)
        self.entry_offs: array[int] = array("q")
        #: Bytes of ``entries`` already in the ``.idx`` file.
        self.idx_written = len(entries)
        self.creates: dict[int, str] = {}
        #: Streams with events or blobs in it (dropped ones too, until the seal).
        self.streams: dict[int, StreamState] = {}
        #: Stream ids its STREAM_DROP records name, in file order.
        self.drops: list[int] = []
        #: Offset up to which the segment is known to be on disk.
        self.synced_end = segment.size
        self.start_lsn = start_lsn
        self.lsn_offset = segment.size - start_lsn

    @property
    def end(self) -> int:
        """Where the next record goes."""
        return self.segment.size + len(self.pending)

    @property
    def path(self) -> str:
        return self.segment.path

    def account(
        self,
        offset: int,
        seq: int,
        stream: StreamState | None,
        stream_id: int,
        count: int,
        rtype: int,
        flags: int,
        size: int,
        entry: bool = True,
    ) -> None:
        """Count a record of this segment in the catalog and in its index."""
        if entry:
            self.entries += pack_entry(offset, seq, stream_id, count, rtype, flags)
        self.entry_offs.append(offset)
        if rtype == RecordType.STREAM_DROP:
            self.drops.append(stream_id)
        elif stream is not None and stream.account(rtype, seq, count, offset, size):
            self.streams[stream_id] = stream

    def flush(self) -> None:
        """Hand the pending records to the OS. The buffer is emptied even when the
        write fails (the caller then fails the store)."""
        if self.pending:
            try:
                self.segment.write(self.pending)
            finally:
                self.pending = bytearray()

    def synced(self, lsn: int) -> None:
        """Everything appended up to ``lsn`` is on disk."""
        end = self.lsn_offset + lsn
        if lsn >= self.start_lsn and end > self.synced_end:
            self.synced_end = min(end, self.segment.size)

    def write_index(self) -> None:
        """Append the index entries whose records are known to be on disk."""
        if self.index is None:
            return
        upto = bisect_left(self.entry_offs, self.synced_end) * INDEX_ENTRY_SIZE
        if upto > self.idx_written:
            self.index.append(memoryview(self.entries)[self.idx_written : upto])
            self.idx_written = upto

    def sealed_index(self) -> bytes:
        """The bytes of this segment's sealed index, from the catalog's columns."""
        seg = self.segment
        return SealedIndex.build(seg.segment_id, self.streams.values(), self.drops, seg.size, self.creates)
