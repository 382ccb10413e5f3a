"""compat import: idempotent, all-or-nothing per session, precise error reports, snapshots, names."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from samples import SAMPLES

import compat.importer
import engine
from compat.importer import ImportResult, import_legacy
from compat.materialize import materialize_session, materialize_snapshot, snapshots
from engine.session import layout
from engine.session.catalog import SessionCatalog

CH01 = SAMPLES / "ch01-getting-started" / "sessions"
MOCK = SAMPLES / "mock-effects" / "sessions"
pytestmark = pytest.mark.skipif(
    not (CH01 / "current.jsonl").exists() or not (MOCK / "mock-effects.jsonl").exists(),
    reason=f"legacy samples are not under {SAMPLES}",
)

# JSON.stringify({...}, null, 2) of a snapshot, as the legacy REPL wrote it.
SNAPSHOT = (
    b'{\n  "defs": [\n    "(define x 10)"\n  ],\n  "debugMode": false,\n  "stepCount": 3,\n'
    b'  "traceLength": 0,\n  "breakpoints": [],\n  "nextBreakpointId": 1,\n  "recordingEnabled": true\n}'
)


def legacy_copy(root: Path, *sessions: tuple[Path, str], snapshot: bool = False) -> Path:
    """A writable legacy dir holding sample sessions ``(sessions_dir, name)``."""
    (root / "sessions").mkdir(parents=True, exist_ok=True)
    (root / "receipts").mkdir(exist_ok=True)
    for src, name in sessions:
        for ext in (".jsonl", ".index.json"):
            shutil.copyfile(src / (name + ext), root / "sessions" / (name + ext))
    if snapshot:
        (root / "repl-main.json").write_bytes(SNAPSHOT)
    return root


def run_import(store: Path, legacy: Path) -> dict[str, ImportResult]:
    with engine.open(store) as st:
        return {r.name: r for r in import_legacy(SessionCatalog(st), str(legacy))}


def store_state(store: Path) -> tuple[Any, ...]:
    with engine.open(store, readonly=True) as st:
        stats = st.stats()
        return (
            tuple((s.name, s.events, s.bytes, s.blobs) for s in st.streams()),
            stats.segments,
            stats.bytes_on_disk,
            stats.events,
        )


def visible_names(store: Path) -> list[str]:
    with engine.open(store, readonly=True) as st:
        return SessionCatalog(st).names()


def orphan_streams(store: Path) -> list[str]:
    """Session streams that no visible session owns (what a failed import must not leave)."""
    with engine.open(store, readonly=True) as st:
        cat = SessionCatalog(st)
        owned = {stream for n in cat.names() for stream in layout.session_streams(cat.uid(n))}
        return [s.name for s in st.streams() if s.name != layout.CATALOG and s.name not in owned]


def materialized(store: Path, name: str, out: Path) -> tuple[bytes, bytes]:
    with engine.open(store, readonly=True) as st:
        materialize_session(SessionCatalog(st), name, str(out))
    return (out / "sessions" / f"{name}.jsonl").read_bytes(), (out / "sessions" / f"{name}.index.json").read_bytes()


# --------------------------------------------------------------------------------------------
# Idempotence and re-import


def test_second_import_changes_nothing(tmp_path: Path) -> None:
    legacy = legacy_copy(
        tmp_path / "legacy",
        (CH01, "current"),
        (CH01, "saved-ch01-getting-started"),
        (CH01, "forked-ch01-getting-started"),
        (MOCK, "mock-effects"),
        snapshot=True,
    )
    store = tmp_path / "store"
    first = run_import(store, legacy)
    assert {n: r.status for n, r in first.items()} == {
        "current": "imported",
        "saved-ch01-getting-started": "imported",
        "forked-ch01-getting-started": "imported",
        "mock-effects": "imported",
        "repl-main.json": "imported",
    }
    before = store_state(store)
    second = run_import(store, legacy)
    assert {r.status for r in second.values()} == {"unchanged"}
    assert second["mock-effects"].events == 39
    assert store_state(store) == before


def test_changed_legacy_file_is_reimported_as_replaced(tmp_path: Path) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), (MOCK, "mock-effects"))
    store = tmp_path / "store"
    run_import(store, legacy)
    jsonl = legacy / "sessions" / "current.jsonl"
    index = legacy / "sessions" / "current.index.json"
    new_jsonl = (
        jsonl.read_bytes() + b'{"seq":12,"ts":1795502436300,"type":"input","code":"(+ 1 1)"}\n'
        b'{"seq":13,"ts":1795502436301,"type":"result","value":"2"}\n'
    )
    new_index = index.read_bytes().replace(b'"eventCount": 12,', b'"eventCount": 14,')
    jsonl.write_bytes(new_jsonl)
    index.write_bytes(new_index)
    again = run_import(store, legacy)
    assert (again["current"].status, again["current"].events, again["current"].exact) == ("replaced", 14, True)
    assert again["mock-effects"].status == "unchanged"
    assert materialized(store, "current", tmp_path / "out") == (new_jsonl, new_index)
    assert orphan_streams(store) == []  # the replaced version's data is gone
    assert run_import(store, legacy)["current"].status == "unchanged"


def test_a_native_session_of_the_same_name_is_not_replaced(tmp_path: Path) -> None:
    store = tmp_path / "store"
    pm = engine.PersistenceManager(engine.SessionPool(), store, register_atexit=False)
    try:
        pm.create_session("current").input("(native)", ts=1)
    finally:
        pm.shutdown()
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), (MOCK, "mock-effects"))
    results = run_import(store, legacy)
    assert results["current"].status == "failed" and "already exists" in results["current"].error
    assert results["mock-effects"].status == "imported"
    with engine.open(store, readonly=True) as st:
        events = list(SessionCatalog(st).persister("current").events())
    assert [e["code"] for e in events] == ["(native)"]


# --------------------------------------------------------------------------------------------
# All-or-nothing


def test_a_session_with_a_malformed_index_is_not_visible_at_all(tmp_path: Path) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), (MOCK, "mock-effects"))
    shutil.copyfile(CH01 / "current.jsonl", legacy / "sessions" / "broken.jsonl")
    data = (CH01 / "current.index.json").read_bytes()
    (legacy / "sessions" / "broken.index.json").write_bytes(data[: len(data) // 2])
    store = tmp_path / "store"
    results = run_import(store, legacy)
    assert results["broken"].status == "failed"
    assert (results["current"].status, results["mock-effects"].status) == ("imported", "imported")
    assert visible_names(store) == ["current", "mock-effects"]
    assert orphan_streams(store) == []


def test_a_failure_while_writing_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), (MOCK, "mock-effects"))
    store = tmp_path / "store"
    real = compat.importer._write_session

    def failing(p: Any, events: Any, index: Any, texts: Any) -> None:
        real(p, events, index, texts)  # everything written, not yet published
        if p.meta.name == "mock-effects":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(compat.importer, "_write_session", failing)
    with engine.open(store) as st:
        it = import_legacy(SessionCatalog(st), str(legacy))
        assert next(it).status == "imported"  # current
        with pytest.raises(OSError):
            next(it)
    assert visible_names(store) == ["current"]
    assert orphan_streams(store) == []
    monkeypatch.setattr(compat.importer, "_write_session", real)
    results = run_import(store, legacy)
    assert (results["current"].status, results["mock-effects"].status) == ("unchanged", "imported")


# --------------------------------------------------------------------------------------------
# Malformed input: reported with file and line, the other sessions still import


def _lines(src: Path = CH01 / "current.jsonl") -> list[bytes]:
    return src.read_bytes().split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _edit_line(n: int, fn: Any) -> bytes:
    lines = _lines()
    lines[n - 1] = fn(lines[n - 1])
    return _join(lines)


def _drop_key(line: bytes, key: str) -> bytes:
    event = json.loads(line)
    del event[key]
    return json.dumps(event, separators=(",", ":")).encode()


def _index_without(section: str, key: str, src: Path = CH01 / "current.index.json") -> bytes:
    doc = json.loads(src.read_text())
    del doc[section][key]
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


CUR_INDEX = (CH01 / "current.index.json").read_bytes() if (CH01 / "current.index.json").exists() else b""
MOCK_JSONL = (MOCK / "mock-effects.jsonl").read_bytes() if (MOCK / "mock-effects.jsonl").exists() else b""
RECEIPT_KEY = "5e472d5e9776271e71da10c4c0c582fcbd21fe28b403ae4170a4a51e524557af"

# case: (jsonl bytes or None, index bytes or None, file the report names, line it names or None)
MALFORMED: dict[str, tuple[Any, Any, str, int | None]] = {
    "truncated-last-line": (lambda: _join(_lines())[:-20], lambda: CUR_INDEX, ".jsonl", 13),
    "invalid-json-line": (lambda: _edit_line(5, lambda b: b[:-1] + b","), lambda: CUR_INDEX, ".jsonl", 5),
    "blank-line": (lambda: _edit_line(7, lambda b: b""), lambda: CUR_INDEX, ".jsonl", 7),
    "not-utf8": (
        lambda: _edit_line(3, lambda b: b.replace(b"greeting", b"gr\xffeting")),
        lambda: CUR_INDEX,
        ".jsonl",
        3,
    ),
    "seq-gap": (lambda: _join([ln for i, ln in enumerate(_lines()) if i != 4]), lambda: CUR_INDEX, ".jsonl", 5),
    "bad-header": (lambda: _edit_line(1, lambda b: b'{"type":"input","seq":0}'), lambda: CUR_INDEX, ".jsonl", 1),
    "header-not-first": (lambda: _join(_lines()[1:]), lambda: CUR_INDEX, ".jsonl", 1),
    "empty-jsonl": (lambda: b"", lambda: CUR_INDEX, ".jsonl", 1),
    "event-not-an-object": (lambda: _edit_line(4, lambda b: b"[1,2]"), lambda: CUR_INDEX, ".jsonl", 4),
    "checkpoint-without-stateId": (
        lambda: _edit_line(5, lambda b: _drop_key(b, "stateId")),
        lambda: CUR_INDEX,
        ".jsonl",
        5,
    ),
    "checkpoint-without-reason": (
        lambda: _edit_line(9, lambda b: _drop_key(b, "reason")),
        lambda: CUR_INDEX,
        ".jsonl",
        9,
    ),
    "llm_resp-without-receiptKey": (
        lambda: _join(
            [_drop_key(ln, "receiptKey") if i == 18 else ln for i, ln in enumerate(_lines(MOCK / "mock-effects.jsonl"))]
        ),
        lambda: (MOCK / "mock-effects.index.json").read_bytes(),
        ".jsonl",
        19,
    ),
    "missing-index": (lambda: _join(_lines()), None, ".index.json", None),
    "index-without-jsonl": (None, lambda: CUR_INDEX, ".index.json", None),
    "index-invalid-json": (lambda: _join(_lines()), lambda: CUR_INDEX[:-40], ".index.json", None),
    "index-not-an-index": (lambda: _join(_lines()), lambda: b"[]", ".index.json", None),
    "index-lacks-a-state": (lambda: _join(_lines()), lambda: _index_without("states", "state-7"), ".index.json", None),
    "index-lacks-a-receipt": (
        lambda: MOCK_JSONL,
        lambda: _index_without("receipts", RECEIPT_KEY, MOCK / "mock-effects.index.json"),
        ".index.json",
        None,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_reported_with_file_and_line(case: str, tmp_path: Path) -> None:
    make_jsonl, make_index, culprit, line = MALFORMED[case]
    # "bad" sorts before "current" and "mock-effects": they must still be imported after it
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), (MOCK, "mock-effects"))
    sessions = legacy / "sessions"
    if make_jsonl is not None:
        (sessions / "bad.jsonl").write_bytes(make_jsonl())
    if make_index is not None:
        (sessions / "bad.index.json").write_bytes(make_index())
    store = tmp_path / "store"
    results = run_import(store, legacy)
    assert results["bad"].status == "failed", results["bad"]
    path = str(sessions / ("bad" + culprit))
    if line is not None:
        assert f"{path}:{line}:" in results["bad"].error
    else:
        assert path in results["bad"].error
    if case == "index-invalid-json":
        assert re.search(re.escape(path) + r":\d+:", results["bad"].error)
    assert (results["current"].status, results["mock-effects"].status) == ("imported", "imported")
    assert visible_names(store) == ["current", "mock-effects"]
    assert orphan_streams(store) == []


def test_files_the_legacy_writer_would_not_write_still_round_trip(tmp_path: Path) -> None:
    """Valid but non-canonical JSON (spaces, 1.0, escaped ASCII) is kept byte for byte."""
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"))
    lines = _lines()
    lines[1] = lines[1].replace(b'"seq":0,', b'"seq": 0, ').replace(b"(define", b"\\u0028define")
    lines[3] = lines[3].replace(b'"value":"greeting"', b'"value" : "greeting", "extra": 1.0')
    jsonl = _join(lines)
    index = CUR_INDEX.replace(b'"eventCount": 12', b'"eventCount":12')
    (legacy / "sessions" / "odd.jsonl").write_bytes(jsonl)
    (legacy / "sessions" / "odd.index.json").write_bytes(index)
    store = tmp_path / "store"
    results = run_import(store, legacy)
    assert (results["odd"].status, results["odd"].exact) == ("imported", False)
    assert materialized(store, "odd", tmp_path / "out") == (jsonl, index)
    assert materialized(store, "current", tmp_path / "out") == ((CH01 / "current.jsonl").read_bytes(), CUR_INDEX)

    # The kept source bytes too: left alone when unchanged, appended to when they grew.
    out_jsonl, out_index = tmp_path / "out" / "sessions" / "odd.jsonl", tmp_path / "out" / "sessions" / "odd.index.json"
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (out_jsonl, out_index)]
    with engine.open(store, readonly=True) as st:
        m = materialize_session(SessionCatalog(st), "odd", str(tmp_path / "out"))
    assert (m.status, m.bytes_written) == ("unchanged", 0)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (out_jsonl, out_index)] == stamps
    longer = jsonl + b'{"seq":12,"ts":1795502436300,"type":"input","code":"(+ 1 1)"}\n'
    (legacy / "sessions" / "odd.jsonl").write_bytes(longer)
    assert run_import(store, legacy)["odd"].status == "replaced"
    with engine.open(store, readonly=True) as st:
        m = materialize_session(SessionCatalog(st), "odd", str(tmp_path / "out"))
    assert (m.status, m.bytes_written, m.appended_lines) == ("appended", len(longer) - len(jsonl), 1)
    assert out_jsonl.read_bytes() == longer and out_jsonl.stat().st_ino == stamps[0][0]
    assert (out_index.stat().st_ino, out_index.stat().st_mtime_ns) == stamps[1]


# --------------------------------------------------------------------------------------------
# Snapshots


def test_snapshots_are_imported_and_materialized_byte_for_byte(tmp_path: Path) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"), snapshot=True)
    other = (
        b'{\n  "defs": [],\n  "debugMode": true,\n  "debugCode": "(f \\u0001 \xe2\x80\xa8)",\n  "stepCount": 1e+21\n}'
    )
    (legacy / "repl-other session.json").write_bytes(other)
    store, out = tmp_path / "store", tmp_path / "out"
    results = run_import(store, legacy)
    assert results["repl-main.json"].status == results["repl-other session.json"].status == "imported"
    with engine.open(store, readonly=True) as st:
        snaps = snapshots(SessionCatalog(st))
    assert snaps == {"main": SNAPSHOT, "other session": other}
    for name, data in snaps.items():
        materialize_snapshot(str(out), name, data)
    assert (out / "repl-main.json").read_bytes() == SNAPSHOT
    assert (out / "repl-other session.json").read_bytes() == other
    assert run_import(store, legacy)["repl-main.json"].status == "unchanged"

    changed = SNAPSHOT.replace(b'"stepCount": 3', b'"stepCount": 4')
    (legacy / "repl-main.json").write_bytes(changed)
    assert run_import(store, legacy)["repl-main.json"].status in ("imported", "replaced")
    with engine.open(store, readonly=True) as st:
        assert snapshots(SessionCatalog(st))["main"] == changed


def test_a_malformed_snapshot_is_reported_and_the_rest_imports(tmp_path: Path) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"))
    (legacy / "repl-bad.json").write_bytes(SNAPSHOT[:-10])
    results = run_import(tmp_path / "store", legacy)
    assert results["repl-bad.json"].status == "failed"
    assert str(legacy / "repl-bad.json") in results["repl-bad.json"].error
    assert results["current"].status == "imported"
    with engine.open(tmp_path / "store", readonly=True) as st:
        assert snapshots(SessionCatalog(st)) == {}


# --------------------------------------------------------------------------------------------
# Names that would leave the target directory


def test_file_names_that_give_unsafe_session_names_are_refused(tmp_path: Path) -> None:
    legacy = legacy_copy(tmp_path / "legacy", (CH01, "current"))
    sessions = legacy / "sessions"
    bad = {
        "...jsonl": "..",
        "..jsonl": ".",
        ".jsonl": "",
        "a\\b.jsonl": "a\\b",
        "x\x01y.jsonl": "x\x01y",
        "...index.json": "..",
        ".index.json": "",
    }
    for fname in bad:
        shutil.copyfile(
            CH01 / ("current.index.json" if fname.endswith(".index.json") else "current.jsonl"), sessions / fname
        )
    for fname in ("repl-...json", "repl-.json", "repl-a\\b.json"):
        (legacy / fname).write_bytes(SNAPSHOT)
    store, out = tmp_path / "work" / "store", tmp_path / "work" / "out"
    results = run_import(store, legacy)
    assert results.pop("current").status == "imported"
    assert {r.status for r in results.values()} == {"failed"}
    assert set(results) >= {"..", ".", "", "a\\b", "x\x01y"}
    assert visible_names(store) == ["current"]
    with engine.open(store, readonly=True) as st:
        cat = SessionCatalog(st)
        assert snapshots(cat) == {}
        for name in cat.names():
            materialize_session(cat, name, str(out))
    assert sorted(os.listdir(tmp_path / "work")) == ["out", "store"]
    assert sorted(os.listdir(out / "sessions")) == ["current.index.json", "current.jsonl"]
