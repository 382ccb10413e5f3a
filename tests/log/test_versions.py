"""Pinned versions and file lifetime, Store.refresh() and Store.backup()."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

import engine
from engine import InvalidArgumentError
from engine.log import recovery
from engine.log.active_index import ActiveIndexFile
from engine.log.manifest import Manifest
from engine.log.sealed_index import SealedIndex, sealed_index_path
from engine.log.segment import LogSegment, segment_path
from engine.log.version import Sealed, VersionSet


def _segment(path: Path, sid: int) -> Sealed:
    seg = LogSegment.create(str(path), sid, 1 << 20)
    SealedIndex.write(str(path), sid, SealedIndex.build(sid, [], [], seg.size, {}))
    idx = SealedIndex.load(str(path), sid)
    assert idx is not None
    return Sealed(seg, idx)


def _files(path: Path, sid: int) -> set[str]:
    return {n for n in os.listdir(path) if n.startswith(f"{sid:020d}.")}


def test_a_replaced_segment_lives_while_a_version_that_holds_it_is_pinned(tmp_path: Path) -> None:
    one, two, three = _segment(tmp_path, 1), _segment(tmp_path, 2), _segment(tmp_path, 3)
    active = LogSegment.create(str(tmp_path), 4, 1 << 20)
    versions = VersionSet(str(tmp_path), delete_files=True)
    v1 = versions.make((one, two), active)
    versions.install(v1)
    reader = versions.current.pin()
    # segment 2 is replaced by segment 3 (as a compaction would)
    versions.install(versions.make((one, three), active), dropped=[2])
    assert v1.retired and not v1.released
    assert _files(tmp_path, 2) == {f"{2:020d}.seg", f"{2:020d}.sidx"}, "a pinned segment's files must stay"
    assert two.segment.read  # still open: the pinned reader can read it
    assert two.segment._fd >= 0
    reader.unpin()
    assert v1.released
    assert two.segment._fd >= 0 and _files(tmp_path, 2), "closed and deleted by reap(), off the reader's path"
    assert versions.reap() == 2
    assert _files(tmp_path, 2) == set(), "once unpinned, a dropped segment's files go"
    assert two.segment._fd == -1
    # segments the current version holds are neither closed nor deleted
    assert one.segment._fd >= 0 and three.segment._fd >= 0 and active._fd >= 0
    assert _files(tmp_path, 1) and _files(tmp_path, 3)
    versions.close()


def test_an_unpinned_version_releases_at_install_and_keeps_shared_segments(tmp_path: Path) -> None:
    one = _segment(tmp_path, 1)
    active = LogSegment.create(str(tmp_path), 2, 1 << 20)
    versions = VersionSet(str(tmp_path), delete_files=True)
    versions.install(versions.make((), active))
    old = versions.current
    versions.install(versions.make((one,), active))  # a roll: nothing dropped
    versions.reap()
    assert old.released and active._fd >= 0 and one.segment._fd >= 0
    assert _files(tmp_path, 1) and _files(tmp_path, 2)
    versions.close()


def test_read_only_version_sets_never_delete(tmp_path: Path) -> None:
    one, two = _segment(tmp_path, 1), _segment(tmp_path, 2)
    active = LogSegment.create(str(tmp_path), 3, 1 << 20)
    versions = VersionSet(str(tmp_path), delete_files=False)
    versions.install(versions.make((one,), active))
    versions.install(versions.make((two,), active), dropped=[1])
    versions.reap()
    assert _files(tmp_path, 1), "a reader process never deletes the writer's files"
    versions.close()


def test_leftover_removal_spares_reserved_and_live_ids(tmp_path: Path) -> None:
    with engine.open(tmp_path / "s", segment_bytes=4096) as s:
        for i in range(200):
            s.append("a", "x" * 40 + str(i))
    store = tmp_path / "s"
    manifest = Manifest.load(str(store))
    assert manifest is not None
    top = manifest.next_segment_id
    for sid in (top, top + 1, top + 2):
        LogSegment.create(str(store), sid, 1 << 20).close()
    reserved = manifest.reserve_segment_ids(1)  # another process writes `top + ...`
    manifest.save(str(store))
    recovery.remove_leftovers(str(store), manifest, live=[top + 2])
    left = set(os.listdir(store))
    assert os.path.basename(segment_path(str(store), reserved.start)) in left, "reserved ids are spared"
    assert os.path.basename(segment_path(str(store), top + 2)) in left, "outputs being written are spared"
    unreserved = [sid for sid in (top, top + 1) if sid not in reserved]
    for sid in unreserved:
        assert os.path.basename(segment_path(str(store), sid)) not in left


def test_a_scan_pins_its_version_for_its_whole_life(tmp_path: Path) -> None:
    with engine.open(tmp_path / "s", segment_bytes=4096) as s:
        for i in range(300):
            s.append("a", i)
        version = s._versions.current
        it = s.scan("a")
        assert version.pins == 1
        assert next(it) == 0
        for i in range(300, 600):  # rolls: new versions are installed meanwhile
            s.append("a", i)
        assert s._versions.current is not version and version.retired and not version.released
        assert list(it) == list(range(1, 300)), "the iterator reads what it saw when made"
        assert version.pins == 0 and version.released
        unused = s.scan("a", 10, 20)  # never started, then dropped
        current = s._versions.current
        assert current.pins == 1
        del unused
        gc.collect()
        assert current.pins == 0
        s.get("a", 5)
        assert current.pins == 0, "a point read unpins when it returns"


def test_refresh_follows_a_writer_through_rolls(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=4096) as w:
        w.append("a", 0)
        w.flush()
        r = engine.open(path, readonly=True)
        try:
            for round_ in range(5):
                base = w.next_seq("a")
                for i in range(base, base + 37 * (round_ + 1)):
                    w.append("a", i)
                w.put_blob("a", "k", round_)
                w.append(f"new{round_}", "hello")
                w.flush()
                assert r.next_seq("a") == base, "a read-only store is a snapshot until refresh"
                r.refresh()
                assert r.next_seq("a") == w.next_seq("a")
                assert r.read_range("a") == list(range(w.next_seq("a")))
                assert r.get_blob("a", "k") == round_
                assert r.has_stream(f"new{round_}")
            w.drop_stream("new0")
            w.flush()
            r.refresh()
            assert not r.has_stream("new0")
            assert r.verify().ok
        finally:
            r.close()


def test_refresh_on_a_writer_does_nothing(tmp_path: Path) -> None:
    with engine.open(tmp_path / "s") as w:
        w.append("a", 1)
        w.refresh()
        assert w.read_range("a") == [1]


def test_backup_while_writers_run_is_consistent_and_opens(tmp_path: Path) -> None:
    path = tmp_path / "s"
    stop = threading.Event()
    with engine.open(path, segment_bytes=8192) as w:
        w.put_blob("b", "k", {"v": 1})

        def write(name: str) -> None:
            i = 0
            while not stop.is_set():
                w.append(name, i)
                i += 1

        threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(2)]
        for t in threads:
            t.start()
        try:
            while len(w._versions.current.sealed) < 3:
                time.sleep(0.001)
            w.backup(tmp_path / "copy")
        finally:
            stop.set()
            for t in threads:
                t.join()
        with pytest.raises(InvalidArgumentError):
            w.backup(tmp_path / "copy")  # not empty
        with pytest.raises(InvalidArgumentError):
            w.backup(path / "inside")
    copy = tmp_path / "copy"
    with engine.open(copy, readonly=True) as b:
        assert b.verify().ok
        for name in ("t0", "t1"):
            n = b.next_seq(name)
            assert n > 0 and b.read_range(name) == list(range(n)), "a prefix of what was written"
        assert b.get_blob("b", "k") == {"v": 1}
    with engine.open(copy) as b:  # a normal store: writable, recovers the copied tail
        b.append("t0", "after")
        assert b.verify().ok
    with engine.open(path, readonly=True) as orig:
        assert orig.verify().ok


def test_manifest_persists_the_next_stream_id(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with engine.open(path, segment_bytes=4096) as s:
        for i in range(100):
            s.append(f"s{i % 7}", "x" * 50)
    m = Manifest.load(str(path))
    assert m is not None and m.next_stream_id == 8
    assert ActiveIndexFile  # the index module is importable on its own
    assert os.path.exists(sealed_index_path(str(path), m.segments[0]))
