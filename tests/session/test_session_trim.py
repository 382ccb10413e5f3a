"""Trimming deleted sessions that forks share: a deleted parent whose forks only
need its first N events gives the rest back to the compactor, while every fork
reads what it read before (events, checkpoints, states, receipt versions,
legacy files), through reopening and through a crash at any step of the trim."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from forked_sessions import command, pm_at, seg_bytes, snapshot

import engine
from compat.importer import import_session
from compat.materialize import session_bytes
from engine import PersistenceManager
from engine.session import layout
from engine.session.catalog import SessionCatalog


def seal(pm: PersistenceManager, path: Path) -> None:
    """Fill the active segment until it is sealed, so that the stream drops before
    are in a sealed segment (what the compactor needs to reclaim their records)."""
    segments = sum(n.endswith(".seg") for n in os.listdir(path))
    while sum(n.endswith(".seg") for n in os.listdir(path)) == segments:
        pm.store.append("pad", os.urandom(512))
    pm.store.drop_stream("pad")


def own_events(pm: PersistenceManager, uid: str) -> int:
    """How many events a (deleted) session holds in its own streams."""
    p = pm.catalog.persister_by_uid(uid)
    return p.event_count - p.meta.base


def orphans(pm: PersistenceManager) -> list[str]:
    """Session streams that are not of the generation their session's meta names."""
    return _orphans(pm.catalog)


def disk_orphans(path: Path) -> list[str]:
    """``orphans`` as the store on disk has them (the writer shut down, say after a crash)."""
    with engine.open(path, readonly=True) as store:
        return _orphans(SessionCatalog(store))


def _orphans(catalog: SessionCatalog) -> list[str]:
    metas = catalog._metas
    out = []
    for info in catalog.store.streams():
        owner = layout.stream_generation(info.name)
        if owner is None:
            continue
        meta = metas.get(owner[0])
        if meta is None or info.name not in layout.session_streams(meta.uid, meta.generation):
            out.append(info.name)
    return out


# ---------------------------------------------------------------------------------------------
def test_a_deleted_parent_gives_back_what_its_fork_does_not_reach(tmp_path: Path) -> None:
    path = tmp_path / "store"
    pm = pm_at(path)
    parent = pm.create_session("parent")
    for n in range(4):
        command(parent, n, receipt="shared" if n % 2 == 0 else None)
    pm.force_save()
    child = pm.fork("parent", "child", parent.event_count - 1)
    fork_base = child.event_count
    for n in range(4, 100):  # the parent goes on far beyond the fork point
        command(parent, n, receipt="shared" if n % 3 == 0 else None)
    for n in range(6):
        command(child, 100 + n, receipt="own" if n % 2 else None)
    pm.force_save()
    keys = ["shared", "own"]
    before = snapshot(pm, "child", keys)
    uid = pm.catalog.uid("parent")
    assert own_events(pm, uid) > 800
    full = seg_bytes(path)

    pm.delete("parent")
    assert own_events(pm, uid) == fork_base, "the deleted parent keeps exactly the events its fork reaches"
    assert snapshot(pm, "child", keys) == before
    seal(pm, path)
    report = pm.store.compact(everything=True)
    assert report.segments_in
    assert snapshot(pm, "child", keys) == before
    assert not orphans(pm)
    pm.shutdown()
    after = seg_bytes(path)
    print(f"\nsegment bytes: {full} before the deletion, {after} after the trim and one pass ({after / full:.2f}x)")
    assert after < 0.5 * full, (full, after)

    pm = pm_at(path)
    try:
        assert snapshot(pm, "child", keys) == before, "after reopening"
        assert not pm.has_session("parent")
        assert own_events(pm, uid) == fork_base
        assert not orphans(pm)
        assert pm.store.verify().ok
    finally:
        pm.shutdown()


@pytest.mark.parametrize("where", ["in the child's own events", "in what the child shares of the parent"])
def test_a_fork_of_a_fork_with_both_ancestors_deleted(tmp_path: Path, where: str) -> None:
    path = tmp_path / "store"
    pm = pm_at(path)
    parent = pm.create_session("parent")
    marks = []
    for n in range(20):
        command(parent, n, receipt="shared" if n % 4 == 0 else None)
        marks.append(parent.event_count)
    pm.force_save()
    child = pm.fork("parent", "child", marks[9] - 1)  # after command 9 (three receipts in)
    for n in range(60):
        command(child, 100 + n, receipt="shared" if n % 5 == 0 else None)
        marks.append(child.event_count)
    for n in range(20, 60):
        command(parent, n)
    pm.force_save()
    # after the child's command 9, or after the parent's command 4
    at = marks[20 + 9] if where == "in the child's own events" else marks[4]
    grandchild = pm.fork("child", "grandchild", at - 1)
    for n in range(4):
        command(grandchild, 200 + n, receipt="own")
    pm.force_save()
    keys = ["shared", "own"]
    before = snapshot(pm, "grandchild", keys)
    p_uid, c_uid = pm.catalog.uid("parent"), pm.catalog.uid("child")
    c_base = pm.catalog.persister_by_uid(c_uid).meta.base
    g_base = pm.catalog.persister_by_uid(pm.catalog.uid("grandchild")).meta.base
    full = seg_bytes(path)

    if where == "in the child's own events":
        pm.delete("parent")
        assert own_events(pm, p_uid) == c_base
        pm.delete("child")
        assert own_events(pm, c_uid) == g_base - c_base
        assert own_events(pm, p_uid) == c_base
    else:  # the grandchild reads nothing of the child's own events
        pm.delete("child")
        assert own_events(pm, c_uid) == 0
        pm.delete("parent")
        assert own_events(pm, p_uid) == g_base, "the grandparent keeps what the grandchild reaches through the child"
    assert snapshot(pm, "grandchild", keys) == before
    seal(pm, path)
    pm.store.compact(everything=True)
    assert snapshot(pm, "grandchild", keys) == before
    pm.shutdown()
    after = seg_bytes(path)
    assert after < 0.5 * full, (full, after)

    pm = pm_at(path)
    try:
        assert snapshot(pm, "grandchild", keys) == before, "after reopening"
        assert pm.list_sessions()[0]["name"] == "grandchild" and len(pm.list_sessions()) == 1
        assert not orphans(pm)
        pm.delete("grandchild")  # the last one: everything goes
        assert not [s.name for s in pm.store.streams() if layout.stream_owner(s.name)]
    finally:
        pm.shutdown()


def test_receipts_overwritten_after_the_fork_point(tmp_path: Path) -> None:
    path = tmp_path / "store"
    pm = pm_at(path)
    parent = pm.create_session("parent")
    marks = []
    for n in range(6):
        command(parent, n, receipt="shared" if n in (0, 2, 4) else None)
        marks.append(parent.event_count)
    pm.force_save()
    early = pm.fork("parent", "early", marks[2] - 1)  # after command 2: sees the version of command 2
    late = pm.fork("parent", "late", marks[5] - 1)  # sees the version of command 4
    for n in range(6, 120):  # overwritten again and again after both fork points; a new receipt too
        command(parent, n, receipt="shared" if n % 2 else ("late-only" if n == 50 else None))
    command(early, 500)
    command(late, 501, receipt="own")
    pm.force_save()
    keys = ["shared", "own", "late-only"]
    before = {name: snapshot(pm, name, keys) for name in ("early", "late")}
    assert before["early"]["receipts"]["shared"] != before["late"]["receipts"]["shared"]
    assert before["early"]["receipts"]["shared"] != pm.get_receipt("parent", "shared")
    assert before["late"]["receipts"]["late-only"] is None
    uid = pm.catalog.uid("parent")

    pm.delete("parent")
    meta = pm.catalog.persister_by_uid(uid).meta
    assert meta.generation == 1
    ev = layout.ev_stream(uid, meta.generation)
    kept = [rest for _key, rest in layout.receipt_keys(pm.store.blob_keys(ev))]
    assert len(kept) == 2 and "shared" in kept, "the two versions the forks see, and no other"
    for name, snap in before.items():
        assert snapshot(pm, name, keys) == snap, name
    seal(pm, path)
    pm.store.compact(everything=True)
    pm.shutdown()
    pm = pm_at(path)
    try:
        for name, snap in before.items():
            assert snapshot(pm, name, keys) == snap, f"{name} after reopening"
    finally:
        pm.shutdown()


# ------------------------------------------------------------------------------ crash safety
class Crash(Exception):
    """Stands for the process dying at that call."""


WRITES = ("put_blob", "append_batch", "drop_stream")


@contextmanager
def crash_at(pm: PersistenceManager, nth: int | None, calls: list[str]) -> Iterator[None]:
    """Raise Crash from the ``nth`` store write (put_blob, append_batch, drop_stream);
    record every write's name in ``calls``."""
    store = pm.store
    originals = {name: getattr(store, name) for name in WRITES}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if len(calls) == nth:
                raise Crash(f"{name} {args[0]!r}")
            calls.append(f"{name} {args[0]}")
            return fn(*args, **kwargs)

        return call

    for name, fn in originals.items():
        setattr(store, name, wrap(name, fn))
    try:
        yield
    finally:
        for name in WRITES:
            delattr(store, name)


def _crash_scenario(path: Path) -> tuple[PersistenceManager, dict[str, Any], int]:
    """A parent of 12 commands forked after 3, the fork with one of its own: the
    manager, the fork's snapshot, the number of events it reaches of the parent."""
    pm = pm_at(path)
    parent = pm.create_session("parent")
    for n in range(3):
        command(parent, n, receipt="shared")
    pm.force_save()
    child = pm.fork("parent", "child", parent.event_count - 1)
    for n in range(3, 12):
        command(parent, n, receipt="shared")
    command(child, 100, receipt="own")
    pm.force_save()
    return pm, snapshot(pm, "child", ["shared", "own"]), child.event_count - 10


@pytest.mark.parametrize("then", ["reopen", "go on, then reopen"])
def test_a_crash_at_any_step_of_the_trim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    """The deletion and its trim fail at each of their store writes in turn (the name
    entry, the meta, the copied states, receipts, events and checkpoint entries, the
    meta switch, the drops of the old streams). Reopened, the fork reads what it read
    before, the trim is done and no orphan is left; so too when the process goes on
    after the failure and collects again first."""
    monkeypatch.setattr(SessionCatalog, "trim_min_events", 16)
    pm, _, _ = _crash_scenario(tmp_path / "count")
    calls: list[str] = []
    with crash_at(pm, None, calls):
        pm.delete("parent")
    pm.shutdown()
    assert any(c.startswith("drop_stream") for c in calls), calls  # the trim ran
    keys = ["shared", "own"]
    for nth in range(len(calls)):
        step = f"failed at {calls[nth]} (write {nth})"
        path = tmp_path / f"crash-{nth}"
        pm, before, fork_base = _crash_scenario(path)
        uid = pm.catalog.uid("parent")
        parent_before = snapshot(pm, "parent", ["shared"])
        with crash_at(pm, nth, []), pytest.raises(Crash):
            pm.delete("parent")
        if then != "reopen":  # the process goes on: reads are whole, another collect() is safe
            assert snapshot(pm, "child", keys) == before, step
            pm.catalog.collect()
            assert snapshot(pm, "child", keys) == before, step
        pm.shutdown()  # writes nothing more: every session was saved
        pm = pm_at(path)  # its collect() drops the orphans and trims again
        try:
            assert snapshot(pm, "child", keys) == before, step
            if pm.has_session("parent"):  # the crash came before the deletion's commit
                assert snapshot(pm, "parent", ["shared"]) == parent_before, step
                pm.delete("parent")
            assert own_events(pm, uid) == fork_base, step
            assert not orphans(pm), step
            pm.catalog.collect()
            assert not orphans(pm), step
            assert snapshot(pm, "child", keys) == before, step
        finally:
            pm.shutdown()


@pytest.mark.parametrize("when", ["before the switch", "after the switch"])
def test_orphans_of_an_unfinished_trim_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """A crash just before the meta switch leaves the new streams as orphans, and reads
    go on from the old ones; just after it, the old streams are the orphans."""
    monkeypatch.setattr(SessionCatalog, "trim_min_events", 16)
    path = tmp_path / "store"
    pm, before, fork_base = _crash_scenario(path)
    uid = pm.catalog.uid("parent")
    real_put = pm.store.put_blob

    def put_blob(stream: str, key: str, value: Any) -> None:
        if key == layout.meta_key(uid) and value and value.get("generation"):
            if when == "before the switch":
                raise Crash("meta switch")
            real_put(stream, key, value)
            raise Crash("after the meta switch")
        real_put(stream, key, value)

    monkeypatch.setattr(pm.store, "put_blob", put_blob)
    with pytest.raises(Crash):
        pm.delete("parent")
    monkeypatch.undo()
    monkeypatch.setattr(SessionCatalog, "trim_min_events", 16)
    assert snapshot(pm, "child", ["shared", "own"]) == before
    pm.catalog.collect()  # the switch may or may not be in the store: nothing of it is touched
    assert snapshot(pm, "child", ["shared", "own"]) == before
    pm.shutdown()
    left = disk_orphans(path)
    assert sorted(left) == sorted(layout.session_streams(uid, 1 if when == "before the switch" else 0)), left
    pm = pm_at(path)
    try:
        assert not orphans(pm)
        assert own_events(pm, uid) == fork_base
        assert snapshot(pm, "child", ["shared", "own"]) == before
    finally:
        pm.shutdown()


@pytest.mark.parametrize("method", ["next_seq", "scan", "get_blob"])
def test_a_read_racing_with_the_trim_reads_the_new_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The trim switches and drops the parent's streams between a read of the fork
    choosing them and reading them: the read goes on from the new ones."""
    monkeypatch.setattr(SessionCatalog, "trim_min_events", 10**9)
    pm, before, fork_base = _crash_scenario(tmp_path / "store")
    try:
        uid = pm.catalog.uid("parent")
        pm.delete("parent")  # not trimmed yet
        assert own_events(pm, uid) > fork_base
        monkeypatch.setattr(SessionCatalog, "trim_min_events", 16)
        old = set(layout.session_streams(uid, 0))
        real = getattr(pm.store, method)
        raced: list[str] = []

        def racing(stream: str, *args: Any, **kwargs: Any) -> Any:
            if stream in old and not raced:
                raced.append(stream)
                pm.catalog.collect()  # trims: the stream about to be read is dropped
                assert not pm.store.has_stream(stream)
            return real(stream, *args, **kwargs)

        monkeypatch.setattr(pm.store, method, racing)
        assert snapshot(pm, "child", ["shared", "own"]) == before
        assert raced and own_events(pm, uid) == fork_base
    finally:
        monkeypatch.undo()
        pm.shutdown()


# ------------------------------------------------------------------------------ legacy files
def test_legacy_files_of_forks_are_the_same_after_trim_and_compaction(tmp_path: Path) -> None:
    """Also for a fork of an imported session (states kept as their legacy text)."""
    path = tmp_path / "store"
    pm = pm_at(path)
    source = pm.create_session("source")
    marks = []
    for n in range(45):
        command(source, n, receipt="k" if n % 3 == 0 else None)
        marks.append(source.event_count)
    pm.force_save()
    jsonl, index = session_bytes(pm.persister("source"))
    legacy = tmp_path / "legacy"
    (legacy / "sessions").mkdir(parents=True)
    (legacy / "sessions" / "imported.jsonl").write_bytes(jsonl)
    (legacy / "sessions" / "imported.index.json").write_bytes(index)
    assert import_session(pm.catalog, str(legacy), "imported").exact
    pm.fork("source", "fork", marks[4] - 1)
    pm.fork("imported", "ifork", marks[6] - 1)
    for name in ("fork", "ifork"):
        inst = pm.load_session(name)
        for n in range(3):
            command(inst, 300 + n, receipt="k")
    pm.force_save()
    before = {name: session_bytes(pm.persister(name)) for name in ("fork", "ifork")}
    uids = {name: pm.catalog.uid(name) for name in ("source", "imported")}
    full = seg_bytes(path)

    pm.delete("source")
    pm.delete("imported")
    assert own_events(pm, uids["source"]) == marks[4]
    assert own_events(pm, uids["imported"]) == marks[6]
    for name, files in before.items():
        assert session_bytes(pm.persister(name)) == files, name
    seal(pm, path)
    pm.store.compact(everything=True)
    for name, files in before.items():
        assert session_bytes(pm.persister(name)) == files, f"{name} after compaction"
    pm.shutdown()
    assert seg_bytes(path) < 0.5 * full
    pm = pm_at(path)
    try:
        for name, files in before.items():
            assert session_bytes(pm.persister(name)) == files, f"{name} after reopening"
    finally:
        pm.shutdown()


def test_a_small_deleted_parent_is_not_copied(tmp_path: Path) -> None:
    """Below the thresholds a shared deleted session stays as it is (no churn)."""
    path = tmp_path / "store"
    pm = pm_at(path)
    try:
        parent = pm.create_session("parent")
        for n in range(10):
            command(parent, n)
        pm.force_save()
        pm.fork("parent", "child", 8 * 8 - 1)
        uid = pm.catalog.uid("parent")
        pm.delete("parent")
        p = pm.catalog.persister_by_uid(uid)
        assert p.meta.generation == 0 and own_events(pm, uid) == 80
        assert pm.store.get_blob(layout.CATALOG, layout.meta_key(uid)).get("generation") is None
    finally:
        pm.shutdown()


def test_layout_names_of_generations() -> None:
    assert layout.ev_stream("ab12") == "ev/ab12" and layout.cp_stream("ab12", 0) == "cp/ab12"
    assert layout.session_streams("ab12", 3) == ("ev/ab12.3", "cp/ab12.3")
    for stream, owner in [
        ("ev/ab12", ("ab12", 0)),
        ("cp/ab12.3", ("ab12", 3)),
        ("ev/ab12.03", ("ab12.03", 0)),
        ("catalog", None),
        ("ev/", None),
        ("other", None),
    ]:
        assert layout.stream_generation(stream) == owner, stream
    assert layout.split_receipt_version("k@12") == ("k", 12)
    assert layout.split_receipt_version("k@-1") == ("k", -1)
    assert layout.split_receipt_version("k@x") is None and layout.split_receipt_version("k@012") is None
