"""How the session layer sits between the log and compat: one module (``layout``) names
every stream and blob the session layer writes, every error class lives in
``engine.errors``, names are checked by the engine's ``check_name``, the engine
never imports compat, and removed entry points stay removed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Managers
from samples import REPO

import engine
import engine.log.catalog
from engine import errors
from engine.session import layout, schema
from engine.session.catalog import SessionCatalog
from engine.session.persistence_manager import PersistenceManager
from engine.session.pool import SessionPool

ENGINE = REPO / "engine"
SESSION = ENGINE / "session"


# ------------------------------------------------------------------------------- layout
def _record(managers: Managers) -> PersistenceManager:
    """Sessions with everything the session layer stores: states, a receipt written
    twice (so an earlier version is kept), a fork, a deleted session shared by it."""
    pm = managers()
    a = pm.create_session("a")
    a.input("(x)", ts=1)
    a.checkpoint(0, "manual", {"v": 1}, ts=2)
    a.llm_resp(0, "v", 1, "K", request=1, response="first", ts=3)
    pm.save_session(a)
    a.llm_resp(0, "v", 1, "K", request=1, response="second", ts=4)
    a.checkpoint(0, "manual", {"v": 2}, ts=5)
    pm.save_session(a)
    pm.fork("a", "f", 2).input("(y)", ts=6)
    pm.create_session("gone").input("(z)", ts=7)
    pm.save_dirty_sessions()
    pm.delete("gone")
    return pm


def test_layout_names_every_stream_and_blob_the_session_layer_writes(managers: Managers) -> None:
    pm = _record(managers)
    store, catalog = pm.store, pm.catalog
    uids = {catalog.uid(n) for n in catalog.names()}
    assert len(uids) == 2
    seen_streams = set()
    for info in store.streams():
        if info.name == layout.CATALOG:
            continue
        uid = layout.stream_owner(info.name)
        assert uid in uids, info.name
        assert info.name in layout.session_streams(uid)
        seen_streams.add(info.name)
    assert seen_streams <= {s for uid in uids for s in layout.session_streams(uid)}
    a_uid = catalog.uid("a")
    keys = set(store.blob_keys(layout.ev_stream(a_uid)))
    assert keys == {
        layout.state_key("state-1"),
        layout.state_key("state-4"),
        layout.receipt_key("K"),
        layout.receipt_version_key("K", 2),
    }
    assert not store.has_stream(layout.cp_stream(a_uid)) or store.blob_keys(layout.cp_stream(a_uid)) == []
    cat_keys = store.blob_keys(layout.CATALOG)
    named = dict((name, key) for key, name in layout.name_keys(cat_keys))
    metas = dict((uid, key) for key, uid in layout.meta_keys(cat_keys))
    assert set(named) == {"a", "f", "gone"}  # "gone" maps to None now
    assert store.get_blob(layout.CATALOG, layout.name_key("gone")) is None
    assert uids <= set(metas)
    assert len(named) + len(metas) == len(cat_keys)


def test_layout_is_the_only_place_that_spells_a_stream_name_or_blob_key() -> None:
    """No other module of the session layer builds a name or key from a literal."""
    prefixes = ("ev/", "cp/", "state/", "receipt/", "legacy/", "name/", "meta/", "snapshot/")
    for path in sorted(SESSION.glob("*.py")):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if node.value.startswith(prefixes) or node.value == "catalog":
                pytest.fail(f"{path.name}:{node.lineno} spells {node.value!r}; use engine.session.layout")


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, bases",
    [
        ("UnknownStateError", (errors.BlobNotFoundError,)),
        ("UnknownReceiptError", (errors.BlobNotFoundError,)),
        ("LegacyFormatError", (errors.SeglogError, ValueError)),
    ],
)
def test_every_error_class_lives_in_engine_errors(name: str, bases: tuple[type, ...]) -> None:
    cls = getattr(errors, name)
    assert cls.__module__ == "engine.errors"
    assert cls.__bases__ == bases
    if name != "LegacyFormatError":
        assert getattr(engine, name) is cls and name in engine.__all__


def test_no_module_of_the_session_layer_defines_an_exception() -> None:
    for path in sorted(SESSION.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (
                node.name.endswith("Error")
                or any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases)
            ):
                pytest.fail(f"{path.name}:{node.lineno} defines {node.name}; error classes belong in engine.errors")


def test_save_failed_error_is_a_seglog_error() -> None:
    assert issubclass(errors.SaveFailedError, errors.SeglogError)


# -------------------------------------------------------------------------------- names
def test_session_names_are_checked_by_the_engines_check_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_session_name is check_name (with its own limit) plus the rules of a file stem."""
    calls: list[tuple[Any, str, int]] = []
    real = engine.log.catalog.check_name

    def spy(name: object, what: str, max_bytes: int) -> bytes:
        calls.append((name, what, max_bytes))
        return real(name, what, max_bytes)

    monkeypatch.setattr(engine.log.catalog, "check_name", spy)
    assert schema.check_session_name("ok") == "ok"
    assert calls == [("ok", "session name", schema.MAX_SESSION_NAME_BYTES)]
    for bad in (["a"], "", "a\x00b", "x" * 201, "\ud800"):
        with pytest.raises(errors.InvalidNameError) as info:
            schema.check_session_name(bad)
        with pytest.raises(errors.InvalidNameError) as same:
            real(bad, "session name", schema.MAX_SESSION_NAME_BYTES)
        assert str(info.value) == str(same.value)
    for bad in (".", "..", "a/b", "a\\b"):
        with pytest.raises(errors.InvalidNameError, match="path separators"):
            schema.check_session_name(bad)


# -------------------------------------------------------------------- removed entry points
@pytest.mark.parametrize(
    "owner, attr",
    [
        (schema, "validate_event"),
        (SessionPool, "names"),
        (PersistenceManager, "get_session"),
    ],
)
def test_removed_entry_points_stay_removed(owner: Any, attr: str) -> None:
    assert not hasattr(owner, attr)


def test_the_catalog_lists_snapshots_through_its_own_methods(managers: Managers) -> None:
    pm = managers()
    cat: SessionCatalog = pm.catalog
    assert cat.snapshots() == {} and cat.snapshot_digest("s") is None
    cat.put_snapshot("s", "d1", b"{}")
    assert cat.snapshots() == {"s": b"{}"} and cat.snapshot_digest("s") == "d1"
    assert cat.names() == []  # a snapshot is not a session


# --------------------------------------------------------------------- engine and compat
def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_nothing_in_engine_imports_compat() -> None:
    for path in sorted(ENGINE.rglob("*.py")):
        bad = [m for m in _imports(path) if m == "compat" or m.startswith("compat.")]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_demo_runs_without_compat(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['compat'] = None\n"
        "from engine import demo\n"
        "raise SystemExit(demo.main(['--sessions', '2', '--commands', '4']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "legacy files:" in proc.stdout and "python -m compat materialize" in proc.stdout
