"""The power-loss simulator itself (tests/log/faultfs.py), on plain fileio calls."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultfs import SECTOR, FaultFS

from engine.log import fileio

RW_NEW = os.O_RDWR | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultFS]:
    with FaultFS(tmp_path) as sim:
        yield sim
    assert fileio.open is os.open, "uninstall must put the os calls back"


def create(path: Path, data: bytes = b"", *, sync: bool = True, sync_dir: bool = True) -> int:
    """Create ``path`` through fileio with ``data``; return the open fd."""
    fd = fileio.open(str(path), RW_NEW, 0o644)
    fileio.write_all(fd, data)
    if sync:
        fileio.fsync(fd)
    if sync_dir:
        fileio.fsync_dir(str(path.parent))
    return fd


def test_synced_data_kept_unsynced_append_lost(fs: FaultFS, tmp_path: Path) -> None:
    f = tmp_path / "log"
    fd = create(f, b"durable")
    fileio.pwrite(fd, b" and lost", 7)
    assert f.read_bytes() == b"durable and lost"
    fs.power_cut()
    assert f.read_bytes() == b"durable"


def test_fdatasync_and_a_dup_fd_count_as_sync(fs: FaultFS, tmp_path: Path) -> None:
    f = tmp_path / "log"
    fd = create(f, b"head")
    fileio.pwrite(fd, b"+tail", 4)
    dup = fileio.dup(fd)
    fileio.fdatasync(dup)
    fileio.close(dup)
    fileio.pwrite(fd, b"+lost", 9)
    fs.power_cut()
    assert f.read_bytes() == b"head+tail"


def test_write_only_append_fd_is_synced_too(fs: FaultFS, tmp_path: Path) -> None:
    f = tmp_path / "idx"
    fileio.close(create(f, b"H"))
    fd = fileio.open(str(f), os.O_WRONLY | os.O_APPEND)
    fileio.write(fd, b"12")
    fileio.fsync(fd)
    fileio.write(fd, b"34")
    fs.power_cut()
    assert f.read_bytes() == b"H12"


def test_truncate_and_overwrite_in_place_are_undone(fs: FaultFS, tmp_path: Path) -> None:
    f = tmp_path / "seg"
    fd = create(f, b"0123456789")
    fileio.ftruncate(fd, 4)
    fileio.pwrite(fd, b"XY", 1)
    assert f.read_bytes() == b"0XY3"
    fs.power_cut(tear=True, rng=random.Random(1))  # a shorter file tears nothing
    assert f.read_bytes() == b"0123456789"


def test_tear_keeps_a_sector_aligned_prefix_of_the_unsynced_tail(tmp_path: Path) -> None:
    synced = b"s" * 700
    tail = bytes(range(256)) * 12  # 3072 bytes, ends at 3772
    seen = set()
    for seed in range(60):
        d = tmp_path / f"t{seed}"
        d.mkdir()
        with FaultFS(d) as fs:
            fd = create(d / "seg", synced)
            fileio.pwrite(fd, tail, len(synced))
            fs.power_cut(tear=True, rng=random.Random(seed))
        data = (d / "seg").read_bytes()
        assert data == (synced + tail)[: len(data)]
        assert len(data) == 700 or len(data) == 3772 or len(data) % SECTOR == 0, len(data)
        seen.add(len(data))
    assert {700, 1024, 3584, 3772} <= seen, sorted(seen)


def test_tear_with_garbage_fills_only_the_sector_being_written(tmp_path: Path) -> None:
    synced = b"s" * 700
    full = synced + b"t" * 3000
    keeps = [700, *range(1024, 3700, SECTOR)]
    garbled = 0
    for seed in range(40):
        d = tmp_path / f"g{seed}"
        d.mkdir()
        with FaultFS(d) as fs:
            fd = create(d / "seg", synced)
            fileio.pwrite(fd, full[700:], 700)
            fs.power_cut(tear=True, rng=random.Random(seed), garbage=True)
        data = (d / "seg").read_bytes()
        assert data[:700] == synced, "synced data must never be damaged"
        if data == full:
            continue
        # a kept prefix, then random bytes up to the end of the sector the cut fell in
        fits = [
            k
            for k in keeps
            if data[:k] == full[:k]
            and len(data) == min((k // SECTOR + 1) * SECTOR, 3700)
            and data[k:] != full[k : len(data)]
        ]
        assert fits, f"seed {seed}: {len(data)} bytes are no kept prefix plus one sector of garbage"
        garbled += 1
    assert garbled > 10


def test_file_created_without_directory_sync_disappears(fs: FaultFS, tmp_path: Path) -> None:
    create(tmp_path / "kept", b"k")
    create(tmp_path / "new", b"data", sync=True, sync_dir=False)
    fs.power_cut()
    assert sorted(os.listdir(tmp_path)) == ["kept"]


def test_file_created_with_directory_sync_but_no_data_sync_is_empty(fs: FaultFS, tmp_path: Path) -> None:
    fd = fileio.open(str(tmp_path / "new"), RW_NEW, 0o644)
    fileio.fsync_dir(str(tmp_path))
    fileio.write(fd, b"unsynced")
    fs.power_cut()
    assert (tmp_path / "new").read_bytes() == b""


def test_rename_without_directory_sync_reverts(fs: FaultFS, tmp_path: Path) -> None:
    target = tmp_path / "MANIFEST"
    create(target, b"old")
    tmp = tmp_path / "MANIFEST.tmp"
    fileio.close(create(tmp, b"new", sync_dir=True))  # the temp file's name is durable
    fileio.rename(str(tmp), str(target))
    assert target.read_bytes() == b"new"
    fs.power_cut()
    assert target.read_bytes() == b"old"
    assert tmp.read_bytes() == b"new"


def test_rename_over_nothing_without_directory_sync_loses_both_names(fs: FaultFS, tmp_path: Path) -> None:
    fileio.close(create(tmp_path / "a.tmp", b"x", sync_dir=False))
    fileio.rename(str(tmp_path / "a.tmp"), str(tmp_path / "a"))
    fs.power_cut()
    assert os.listdir(tmp_path) == []


def test_a_renamed_file_is_followed_through_its_fd(fs: FaultFS, tmp_path: Path) -> None:
    fd = create(tmp_path / "x.tmp", b"1")
    fileio.rename(str(tmp_path / "x.tmp"), str(tmp_path / "x"))
    fileio.fsync_dir(str(tmp_path))
    fileio.write(fd, b"2")
    fileio.fsync(fd)
    fileio.write(fd, b"3")
    fs.power_cut()
    assert os.listdir(tmp_path) == ["x"]
    assert (tmp_path / "x").read_bytes() == b"12"


def test_unlink_without_directory_sync_comes_back(fs: FaultFS, tmp_path: Path) -> None:
    create(tmp_path / "gone", b"still here")
    fileio.unlink(str(tmp_path / "gone"))
    fs.power_cut()
    assert (tmp_path / "gone").read_bytes() == b"still here"


def test_unlink_with_directory_sync_is_durable(fs: FaultFS, tmp_path: Path) -> None:
    create(tmp_path / "gone", b"x")
    assert fileio.remove(str(tmp_path / "gone"))
    fileio.fsync_dir(str(tmp_path))
    fs.power_cut()
    assert os.listdir(tmp_path) == []


def test_atomic_write_is_durable(fs: FaultFS, tmp_path: Path) -> None:
    target = tmp_path / "MANIFEST"
    fileio.atomic_write(str(target), [b"v1"])
    fileio.atomic_write(str(target), [b"v", b"2"])
    fs.power_cut(tear=True, rng=random.Random(3), garbage=True)
    assert os.listdir(tmp_path) == ["MANIFEST"]
    assert target.read_bytes() == b"v2"


def test_atomic_write_not_durable_leaves_the_old_file(fs: FaultFS, tmp_path: Path) -> None:
    target = tmp_path / "MANIFEST"
    fileio.atomic_write(str(target), [b"v1"])
    fileio.atomic_write(str(target), [b"v2"], durable=False)
    fs.power_cut()
    assert os.listdir(tmp_path) == ["MANIFEST"]
    assert target.read_bytes() == b"v1"


def test_files_present_before_install_are_durable(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "old").write_bytes(b"before")
    with FaultFS(tmp_path) as fs:
        fd = fileio.open(str(tmp_path / "sub" / "old"), os.O_RDWR)
        fileio.pwrite(fd, b"AFTER!", 0)
        fileio.unlink(str(tmp_path / "sub" / "old"))
        fs.power_cut()
    assert (tmp_path / "sub" / "old").read_bytes() == b"before"


def test_mkdir_without_parent_sync_disappears(fs: FaultFS, tmp_path: Path) -> None:
    fileio.mkdir(str(tmp_path / "kept"))
    fileio.fsync_dir(str(tmp_path))
    create(tmp_path / "kept" / "f", b"1")
    fileio.mkdir(str(tmp_path / "store"))
    create(tmp_path / "store" / "f", b"2")  # synced, and so is its directory; not the parent
    fs.power_cut()
    assert os.listdir(tmp_path) == ["kept"]
    assert (tmp_path / "kept" / "f").read_bytes() == b"1"


def test_paths_outside_root_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    outside = tmp_path / "outside"
    with FaultFS(tmp_path / "root") as fs:
        fd = fileio.open(str(outside), RW_NEW, 0o644)
        fileio.write(fd, b"not modeled")
        fileio.close(fd)
        fs.power_cut()
    assert outside.read_bytes() == b"not modeled"


def test_fail_the_nth_call(fs: FaultFS, tmp_path: Path) -> None:
    fd = create(tmp_path / "f", b"a")  # fsync #1 before the rule
    fs.fail("fsync", 2, errno.ENOSPC)
    fileio.write(fd, b"b")
    fileio.fsync(fd)  # 1st from now: fine
    fileio.write(fd, b"c")
    with pytest.raises(OSError) as info:
        fileio.fsync(fd)  # 2nd: fails, nothing more becomes durable
    assert info.value.errno == errno.ENOSPC
    fs.power_cut()
    assert (tmp_path / "f").read_bytes() == b"ab"


def test_fail_only_calls_on_a_matching_path(fs: FaultFS, tmp_path: Path) -> None:
    fs.fail("pwrite", 1, errno.EIO, path="MANIFEST")
    fd = create(tmp_path / "seg")
    fileio.pwrite(fd, b"ok", 0)
    m = create(tmp_path / "MANIFEST")
    with pytest.raises(OSError) as info:
        fileio.pwrite(m, b"x", 0)
    assert info.value.errno == errno.EIO
    assert info.value.filename == str(tmp_path / "MANIFEST")
    fileio.pwrite(m, b"y", 0)  # one-shot
    assert fs.calls["pwrite"] == 3


def test_calls_after_the_cut_fail(fs: FaultFS, tmp_path: Path) -> None:
    fd = create(tmp_path / "f", b"a")
    fs.power_cut()
    with pytest.raises(OSError) as info:
        fileio.write(fd, b"b")
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError):
        fs.power_cut()


def test_hook_sees_every_call_and_can_cut(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    fs = FaultFS(tmp_path, hook=lambda name, n: seen.append((name, n)))
    with fs:
        create(tmp_path / "f", b"x")
    assert [n for _, n in seen] == list(range(1, len(seen) + 1))
    assert [name for name, _ in seen][:3] == ["open", "write", "fsync"]
    assert fs.count == len(seen)


def test_concurrent_appends_and_syncs_keep_a_synced_prefix(tmp_path: Path) -> None:
    """Writers append under a lock while another thread syncs: after a cut the
    file holds at least what the last completed sync covered, and is a prefix."""
    with FaultFS(tmp_path) as fs:
        fd = create(tmp_path / "log")
        lock = threading.Lock()
        size = [0]
        synced = [0]
        stop = threading.Event()

        def writer(tag: bytes) -> None:
            while not stop.is_set():
                with lock:
                    fileio.pwrite(fd, tag * 10, size[0])
                    size[0] += 10

        def syncer() -> None:
            while not stop.is_set():
                with lock:
                    upto = size[0]
                fileio.fdatasync(fd)
                synced[0] = upto

        threads = [threading.Thread(target=writer, args=(t,)) for t in (b"a", b"b")]
        threads.append(threading.Thread(target=syncer))
        for t in threads:
            t.start()
        while synced[0] < 2000:
            pass
        stop.set()
        for t in threads:
            t.join()
        must = synced[0]
        fileio.pwrite(fd, b"z" * 10, size[0])
        with open(tmp_path / "log", "rb") as f:
            before = f.read()
        fs.power_cut()
    after = (tmp_path / "log").read_bytes()
    assert must <= len(after) < len(before)
    assert before.startswith(after)
