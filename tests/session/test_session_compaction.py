"""Sessions and compaction: forks keep what they share, deleted sessions give
space back, and the legacy files materialize byte for byte before and after."""

from __future__ import annotations

from pathlib import Path

from forked_sessions import SEG, command, pm_at, seg_bytes, snapshot

import engine


def test_forks_keep_what_they_share_through_deletion_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "store"
    pm = pm_at(path)
    parent = pm.create_session("parent")
    for n in range(12):
        command(parent, n, receipt="shared" if n % 3 == 0 else None)
    pm.force_save()
    child = pm.fork("parent", "child", parent.event_count - 1)
    for n in range(12, 20):  # the parent goes on: receipts overwritten after the fork point
        command(parent, n, receipt="shared")
        command(child, 100 + n, receipt="own" if n % 2 else None)
    pm.force_save()
    grandchild = pm.fork("child", "grandchild", child.event_count - 5)  # a fork of a fork
    for n in range(3):
        command(grandchild, 200 + n, receipt="shared")
    pm.force_save()
    before = {
        name: snapshot(pm, name, ["shared", "own"] if name != "parent" else ["shared"])
        for name in ("child", "grandchild")
    }
    assert before["child"]["receipts"]["shared"] != pm.get_receipt("parent", "shared"), (
        "the fork sees the receipt version before its fork point"
    )
    pm.delete("parent")
    for n in range(30):  # other sessions come and go, so that segments seal and hold garbage
        other = pm.create_session(f"other-{n}")
        command(other, n, receipt="r")
        pm.force_save()
        pm.delete(f"other-{n}")
    pm.force_save()
    big = seg_bytes(path)
    report = pm.store.compact(everything=True)
    assert report.segments_in and report.bytes_out < report.bytes_in
    for name, snap in before.items():
        assert snapshot(pm, name, ["shared", "own"]) == snap, name
    pm.shutdown()
    assert seg_bytes(path) < big
    pm = pm_at(path)
    try:
        for name, snap in before.items():
            assert snapshot(pm, name, ["shared", "own"]) == snap, f"{name} after reopening"
        assert not pm.has_session("parent")
        assert pm.store.verify().ok
    finally:
        pm.shutdown()


def test_deleted_sessions_give_their_space_back(tmp_path: Path) -> None:
    path = tmp_path / "store"
    pm = pm_at(path)
    keep = [pm.create_session(f"keep-{i}") for i in range(3)]
    gone = [pm.create_session(f"gone-{i}") for i in range(3)]
    for n in range(40):
        for s in keep + gone:
            command(s, n, receipt="k" if n % 4 == 0 else None)
    pm.force_save()
    kept = {s.name: snapshot(pm, s.name, ["k"]) for s in keep}
    for s in gone:
        pm.delete(s.name)
    for n in range(40, 60):  # the deletions reach sealed segments
        for s in keep:
            command(s, n)
    pm.force_save()
    kept = {s.name: snapshot(pm, s.name, ["k"]) for s in keep}
    before = seg_bytes(path)
    assert pm.store.stats().reclaimable_bytes > before // 3
    pm.store.compact()
    pm.shutdown()
    after = seg_bytes(path)
    assert after < before * 0.7, (before, after)
    pm = pm_at(path)
    try:
        for name, snap in kept.items():
            assert snapshot(pm, name, ["k"]) == snap
        assert sorted(m["name"] for m in pm.list_sessions()) == sorted(kept)
    finally:
        pm.shutdown()


def test_a_compactor_process_beside_the_session_server(tmp_path: Path) -> None:
    """engine.compact from outside while the PersistenceManager holds the store."""
    path = tmp_path / "store"
    pm = pm_at(path)
    try:
        sessions = [pm.create_session(f"s{i}") for i in range(4)]
        for n in range(30):
            for s in sessions:
                command(s, n, receipt="k")
            if n % 10 == 9:
                pm.delete(sessions[0].name)
                sessions[0] = pm.create_session(f"s0-{n}")
        pm.force_save()
        names = [s.name for s in sessions]
        snaps = {name: snapshot(pm, name, ["k"]) for name in names}
        report = engine.compact(path, segment_bytes=SEG)
        assert report.segments_in
        pm.store._adopt_now()  # what its background flush does within flush_interval
        for name in names:
            assert snapshot(pm, name, ["k"]) == snaps[name]
        command(sessions[1], 999)
        pm.force_save()
        assert pm.events(sessions[1].name)[-1]["type"] == "checkpoint"
    finally:
        pm.shutdown()
