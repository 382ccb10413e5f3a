"""compat on top of the session layer: it reads and writes a store only through
SessionPersister and SessionCatalog, replaces files only with the engine's
``fileio.atomic_write``, checks names with the engine's ``check_name``, and
takes its error classes from ``engine.errors``.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path
from typing import Any

import pytest
from samples import REPO

import compat.importer
import compat.materialize
import engine
import engine.log.catalog
from compat.importer import import_legacy
from compat.materialize import materialize_session, materialize_snapshot
from compat.names import session_files, sidecar_file, snapshot_file
from engine.log import fileio
from engine.session.catalog import SessionCatalog

COMPAT = REPO / "compat"
T0 = 1795502415160

#: Store methods only the session layer calls.
STORE_METHODS = {
    "put_blob",
    "get_blob",
    "has_blob",
    "blob_keys",
    "append",
    "append_batch",
    "drop_stream",
    "create_stream",
    "next_seq",
    "has_stream",
    "scan",
    "read_range",
    "stream_info",
    "streams",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _calls(tree: ast.Module) -> list[tuple[int, str, str]]:
    """``(line, object, attribute)`` of every ``object.attribute(...)`` call."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            out.append((node.lineno, owner, node.func.attr))
    return out


# ------------------------------------------------------------------ through the session layer
def test_compat_never_calls_the_store_directly() -> None:
    """Streams and blobs are the session layer's business (engine.session.layout):
    compat asks a SessionPersister or the SessionCatalog."""
    for path in sorted(COMPAT.glob("*.py")):
        for line, owner, attr in _calls(_tree(path)):
            if attr in STORE_METHODS and "store" in owner.lower():
                pytest.fail(f"compat/{path.name}:{line} calls {owner}.{attr}(); go through the session layer")


def test_compat_spells_no_stream_name_or_blob_key() -> None:
    prefixes = ("ev/", "cp/", "state/", "receipt/", "legacy/", "name/", "meta/", "snapshot/")
    for path in sorted(COMPAT.glob("*.py")):
        tree = _tree(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(prefixes):
                pytest.fail(f"compat/{path.name}:{node.lineno} spells {node.value!r}; use engine.session.layout")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine.session"):
                names = {a.name for a in node.names}
                assert not names & {"CATALOG", "ev_stream", "cp_stream"}, f"compat/{path.name}:{node.lineno}"


def test_the_legacy_format_error_is_the_engines() -> None:
    assert compat.importer.LegacyFormatError is engine.errors.LegacyFormatError
    assert issubclass(compat.importer.LegacyFormatError, (engine.SeglogError, ValueError))


def test_materialize_of_a_whole_store_is_the_cli_not_a_library_function() -> None:
    assert not hasattr(compat.materialize, "materialize")


# --------------------------------------------------------------------------- file replacement
def test_compat_replaces_files_only_with_fileio_atomic_write() -> None:
    for path in sorted(COMPAT.glob("*.py")):
        tree = _tree(path)
        for line, owner, attr in _calls(tree):
            assert (owner, attr) not in {
                ("os", "rename"),
                ("os", "replace"),
                ("os", "fsync"),
                ("shutil", "copyfile"),
                ("shutil", "move"),
            }, f"compat/{path.name}:{line} calls {owner}.{attr}()"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module != "engine.log.segment", f"compat/{path.name}:{node.lineno} imports from segment"


def _record(store: Path, name: str, n: int, *, create: bool = True) -> None:
    pm = engine.PersistenceManager(engine.SessionPool(), store, register_atexit=False)
    try:
        s = pm.create_session(name) if create else pm.load_session(name)
        for i in range(n):
            s.input(f"(cmd {i})", ts=T0 + i)
            s.result(str(i), ts=T0 + i)
            s.checkpoint(0, "manual", {"i": i}, ts=T0 + i)
    finally:
        pm.shutdown()


def _files(out: Path, name: str) -> tuple[bytes, bytes]:
    sessions = out / "sessions"
    return (sessions / f"{name}.jsonl").read_bytes(), (sessions / f"{name}.index.json").read_bytes()


@pytest.fixture
def failing_fsync() -> Any:
    """Make every fsync of engine.log.fileio fail with EIO while ``state["on"]``."""
    state = {"on": False, "calls": 0}
    real = fileio.fsync

    def fsync(fd: int) -> None:
        if state["on"]:
            state["calls"] += 1
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    fileio.install(fsync=fsync)
    try:
        yield state
    finally:
        fileio.uninstall()


def test_a_failing_write_leaves_the_materialized_files_as_they_were(tmp_path: Path, failing_fsync: Any) -> None:
    """Materialized files go through fileio.atomic_write (and so through the engine's
    fault-injection seam): when the write fails, each file is the previous version,
    whole, and no temporary is left behind."""
    store, out = tmp_path / "store", tmp_path / "out"
    _record(store, "s", 3)
    with engine.open(store, readonly=True) as st:
        materialize_session(SessionCatalog(st), "s", str(out))
    before = _files(out, "s")
    _record(store, "s", 2, create=False)
    failing_fsync["on"] = True
    with engine.open(store, readonly=True) as st, pytest.raises(OSError) as info:
        materialize_session(SessionCatalog(st), "s", str(out))
    assert info.value.errno == errno.EIO and failing_fsync["calls"] >= 1
    assert _files(out, "s") == before
    assert sorted(os.listdir(out / "sessions")) == ["s.index.json", "s.jsonl"]
    with pytest.raises(OSError):
        materialize_snapshot(str(out), "snap", b"{}")
    assert not (out / "repl-snap.json").exists() and not (out / "repl-snap.json.tmp").exists()
    failing_fsync["on"] = False
    with engine.open(store, readonly=True) as st:
        m = materialize_session(SessionCatalog(st), "s", str(out))
    assert m.appended_lines == 6
    with engine.open(store, readonly=True) as st:
        materialize_session(SessionCatalog(st), "s", str(tmp_path / "fresh"))
    assert _files(out, "s") == _files(tmp_path / "fresh", "s") != before


# -------------------------------------------------------------------------------------- names
def test_every_name_compat_puts_in_a_path_is_checked_by_check_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    real = engine.log.catalog.check_name

    def spy(name: object, what: str, max_bytes: int) -> bytes:
        calls.append(name)
        return real(name, what, max_bytes)

    monkeypatch.setattr(engine.log.catalog, "check_name", spy)
    out = str(tmp_path / "out")
    for make in (session_files, snapshot_file, sidecar_file):
        calls.clear()
        make(out, "ok")
        assert calls == ["ok"], make.__name__
        for bad in ("../x", "a/b", "..", "a\x00b", ["x"]):
            with pytest.raises(engine.InvalidNameError):
                make(out, bad)  # type: ignore[arg-type]
    calls.clear()
    legacy = tmp_path / "legacy" / "sessions"
    legacy.mkdir(parents=True)
    (legacy / "bad\x01name.jsonl").write_bytes(b"")
    with engine.open(tmp_path / "store") as st:
        results = list(import_legacy(SessionCatalog(st), str(tmp_path / "legacy")))
    assert [r.status for r in results] == ["failed"] and "control character" in results[0].error
    assert calls == ["bad\x01name"]


@pytest.mark.parametrize(
    "make, expected",
    [
        (snapshot_file, "repl-s.json"),
        (sidecar_file, os.path.join(".seglog", "s.json")),
    ],
)
def test_paths_lie_in_their_folder(tmp_path: Path, make: Any, expected: str) -> None:
    assert make(str(tmp_path), "s") == os.path.join(str(tmp_path), expected)
