"""compat materialize: incremental (files already right are left alone, a grown .jsonl gets
its new lines appended in place), atomic where it replaces a file, selective, and safe with names.

Sessions are recorded through the session layer; the reference for an incremental
materialization is a full materialization of the same store into a fresh directory
(that the full one is what the legacy writer writes is tests/test_compat_roundtrip.py's
business).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from samples import REPO, SAMPLES

import engine
from compat.__main__ import main as compat_main
from compat.importer import import_legacy
from compat.materialize import Materialized, materialize_session, materialize_snapshot
from compat.names import session_files
from engine.session.catalog import SessionCatalog

WORKER = Path(__file__).with_name("materialize_crash_worker.py")
T0 = 1795502415160


def record(store: Path, name: str, rounds: range, *, pad: int = 0, create: bool = True) -> int:
    """Record ``rounds`` of REPL activity into session ``name``; return its event count."""
    pm = engine.PersistenceManager(engine.SessionPool(), store, register_atexit=False)
    try:
        s = pm.create_session(name) if create else pm.load_session(name)
        state: dict[str, object] = {"control": {"tag": "Val"}, "entries": []}
        for i in rounds:
            t = T0 + 10 * i
            code = f"(define v{i} (ask {i}))" + " " * pad
            s.input(code, ts=t)
            s.step(0, code, ts=t)
            s.checkpoint(0, "llm_boundary", {**state, "i": i, "10": [i, 1e21]}, ts=t + 1)
            s.llm_req(1, "mock", f"prompt {i} \U0001f600", f"key-{i % 3}", ts=t + 2)
            s.llm_resp(
                1,
                f"answer {i}",
                i,
                f"key-{i % 3}",
                request={"i": i},
                response={"c": -0.0},
                tokens={"n": i} if i % 2 else None,
                ts=t + 3,
            )
            s.result(f"v{i}", ts=t + 4)
            state["entries"] = [*state["entries"], [i, {"tag": "Num", "v": i * 0.1}]]  # type: ignore[list-item]
            s.checkpoint(0, "manual", state, ts=t + 5)
        s.input("(after the last result)", ts=T0 + 10 * rounds.stop)
        return s.event_count
    finally:
        pm.shutdown()


def mat(store: Path, name: str, out: Path) -> Materialized:
    with engine.open(store, readonly=True) as st:
        return materialize_session(SessionCatalog(st), name, str(out))


def files(out: Path, name: str) -> tuple[bytes, bytes]:
    return ((out / "sessions" / f"{name}.jsonl").read_bytes(), (out / "sessions" / f"{name}.index.json").read_bytes())


def visible(sessions: Path) -> list[str]:
    """What a reader looking for legacy files would pick up."""
    return sorted(n for n in os.listdir(sessions) if n.endswith((".jsonl", ".index.json")))


# --------------------------------------------------------------------------------------------
# Layout


def test_writes_the_two_files_and_an_empty_receipts_folder(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    record(store, "a", range(2))
    record(store, "b", range(1), create=True)
    m = mat(store, "a", out)
    assert (out / "receipts").is_dir() and list((out / "receipts").iterdir()) == []
    assert sorted(os.listdir(out / "sessions")) == ["a.index.json", "a.jsonl"]
    jsonl, index = files(out, "a")
    assert (m.jsonl_bytes, m.index_bytes) == (len(jsonl), len(index))
    assert not m.incremental and m.appended_lines == jsonl.count(b"\n") - 1 == 15
    assert jsonl.startswith(b'{"type":"session","version":1,"id":"a","created":"')
    assert index.startswith(b'{\n  "sessionId": "a",\n  "eventCount": 14,\n') and not index.endswith(b"\n")


def test_materialize_selection_writes_only_the_named_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    for name in ("a", "b", "c"):
        record(store, name, range(1))
    assert compat_main(["materialize", str(store), str(out), "--session", "c", "--session", "a"]) == 0
    assert capsys.readouterr().out.startswith("2 sessions (2 written), 0 snapshots; ")
    assert visible(out / "sessions") == ["a.index.json", "a.jsonl", "c.index.json", "c.jsonl"]


# --------------------------------------------------------------------------------------------
# Incremental


def test_appended_events_are_materialized_incrementally(tmp_path: Path) -> None:
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    n1 = record(store, "s", range(4))
    first = mat(store, "s", out)
    assert (first.incremental, first.appended_lines) == (False, n1)
    old_jsonl, old_index = files(out, "s")

    n2 = record(store, "s", range(4, 7), create=False)
    second = mat(store, "s", out)
    assert (second.incremental, second.appended_lines) == (True, n2 - n1)
    mat(store, "s", fresh)
    assert files(out, "s") == files(fresh, "s")
    new_jsonl, new_index = files(out, "s")
    assert new_jsonl.startswith(old_jsonl) and len(new_jsonl) > len(old_jsonl)
    assert new_index != old_index

    third = mat(store, "s", out)
    assert (third.incremental, third.appended_lines) == (True, 0)
    assert files(out, "s") == files(fresh, "s")


def _ino(p: Path) -> int | None:
    return p.stat().st_ino if p.exists() else None


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def test_materialize_twice_leaves_unchanged_sessions_alone_and_appends_to_grown_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    for name in ("a", "b", "c"):
        record(store, name, range(3))
    assert compat_main(["materialize", str(store), str(out)]) == 0
    first = capsys.readouterr().out
    assert first.startswith("3 sessions (3 written), 0 snapshots; ")
    sessions = out / "sessions"
    before = {p.name: _stamp(p) for p in sessions.iterdir()}
    old_b = (sessions / "b.jsonl").read_bytes()

    time.sleep(0.05)  # a rewrite would show in st_mtime_ns even on a coarse clock
    assert compat_main(["materialize", str(store), str(out)]) == 0
    assert capsys.readouterr().out == f"3 sessions (3 unchanged), 0 snapshots; 0 bytes written to {out}\n"
    assert {p.name: _stamp(p) for p in sessions.iterdir()} == before

    record(store, "b", range(3, 5), create=False)  # b records more events
    time.sleep(0.05)
    assert compat_main(["materialize", str(store), str(out)]) == 0
    mat(store, "b", fresh)
    new_b, new_index = files(fresh, "b")
    grew = len(new_b) - len(old_b) + len(new_index)
    assert (
        capsys.readouterr().out
        == f"3 sessions (1 appended, 2 unchanged), 0 snapshots; {grew:,} bytes written to {out}\n"
    )
    for name in ("a.jsonl", "a.index.json", "c.jsonl", "c.index.json"):
        assert _stamp(sessions / name) == before[name], name
    assert (sessions / "b.jsonl").stat().st_ino == before["b.jsonl"][0]  # appended in place
    assert files(out, "b") == (new_b, new_index)
    assert new_b.startswith(old_b) and len(new_b) > len(old_b)

    # And once more: nothing to do.
    after = {p.name: _stamp(p) for p in sessions.iterdir()}
    m = mat(store, "b", out)
    assert (m.status, m.bytes_written, m.incremental, m.appended_lines) == ("unchanged", 0, True, 0)
    assert {p.name: _stamp(p) for p in sessions.iterdir()} == after


def test_an_interrupted_append_is_completed_in_place(tmp_path: Path) -> None:
    """A writer killed while appending leaves the old lines and part of the new ones; the next
    run appends the rest to the same file."""
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    record(store, "s", range(3))
    mat(store, "s", out)
    jsonl = out / "sessions" / "s.jsonl"
    old, ino = jsonl.read_bytes(), jsonl.stat().st_ino
    record(store, "s", range(3, 6), create=False)
    mat(store, "s", fresh)
    new = files(fresh, "s")[0]
    with jsonl.open("ab") as f:
        f.write(new[len(old) : (len(old) + len(new)) // 2])  # cut inside a line
    m = mat(store, "s", out)
    assert (m.status, m.incremental) == ("appended", True)
    assert jsonl.stat().st_ino == ino and files(out, "s") == files(fresh, "s")


def test_a_grown_session_whose_file_shrank_is_rewritten(tmp_path: Path) -> None:
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    record(store, "s", range(3))
    mat(store, "s", out)
    record(store, "s", range(3, 4), create=False)
    _flip_middle(out / "sessions" / "s.jsonl")
    m = mat(store, "s", out)
    mat(store, "s", fresh)
    assert (m.status, m.incremental) == ("written", False) and files(out, "s") == files(fresh, "s")


def _flip_middle(p: Path) -> None:
    data = bytearray(p.read_bytes())
    i = len(data) // 2
    data[i] = ord("x") if data[i] != ord("x") else ord("y")
    p.write_bytes(bytes(data))


def _truncate_half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _drop_last_line(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])


def _append_junk(p: Path) -> None:
    with p.open("ab") as f:
        f.write(b'{"seq":999}\n')


def _same_size_other_content(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data.replace(b'"type":"input"', b'"type":"INPUT"', 1))


TAMPER = {
    "flip-middle-byte": _flip_middle,
    "truncate-half": _truncate_half,
    "drop-last-line": _drop_last_line,
    "append-junk": _append_junk,
    "same-size-edit": _same_size_other_content,
    "delete": Path.unlink,
}


@pytest.mark.parametrize("grow", [False, True], ids=["same-events", "more-events"])
@pytest.mark.parametrize("tamper", list(TAMPER))
def test_tampered_target_is_rewritten_in_full(tamper: str, grow: bool, tmp_path: Path) -> None:
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    record(store, "s", range(3))
    mat(store, "s", out)
    TAMPER[tamper](out / "sessions" / "s.jsonl")
    if grow:
        record(store, "s", range(3, 5), create=False)
    before = _ino(out / "sessions" / "s.jsonl")
    m = mat(store, "s", out)
    assert not m.incremental
    mat(store, "s", fresh)
    assert files(out, "s") == files(fresh, "s")
    if tamper in ("truncate-half", "drop-last-line"):  # still a prefix: completed in place
        assert m.status == "appended" and _ino(out / "sessions" / "s.jsonl") == before
    else:
        assert m.status == "written"


def test_tampered_index_is_rewritten(tmp_path: Path) -> None:
    store, out, fresh = tmp_path / "store", tmp_path / "out", tmp_path / "fresh"
    record(store, "s", range(2))
    mat(store, "s", out)
    (out / "sessions" / "s.index.json").write_bytes(b"{}")
    mat(store, "s", out)
    mat(store, "s", fresh)
    assert files(out, "s") == files(fresh, "s")


def test_reimported_session_with_the_same_header_is_not_appended_to_stale_bytes(tmp_path: Path) -> None:
    """After a re-import replaced the session's history (same header, same or more events),
    the file an earlier materialization left must not be taken as a valid prefix."""
    src = SAMPLES / "ch01-getting-started" / "sessions"
    if not (src / "current.jsonl").exists():
        pytest.skip("sample ch01-getting-started is not there")
    legacy, store, out = tmp_path / "legacy", tmp_path / "store", tmp_path / "out"
    (legacy / "sessions").mkdir(parents=True)
    v1_jsonl, v1_index = (src / "current.jsonl").read_bytes(), (src / "current.index.json").read_bytes()
    # v2: what the legacy writer writes for the same header with result "ECHO" instead of
    # "echo" at seq 6 (same length: the checkpoint offsets stay) and two more events.
    assert v1_jsonl.count(b'"value":"echo"') == 1
    v2_jsonl = v1_jsonl.replace(b'"value":"echo"', b'"value":"ECHO"') + (
        b'{"seq":12,"ts":1795502436300,"type":"input","code":"(+ 1 1)"}\n'
        b'{"seq":13,"ts":1795502436301,"type":"result","value":"2"}\n'
    )
    assert v1_index.count(b'"eventCount": 12,') == 1
    v2_index = v1_index.replace(b'"eventCount": 12,', b'"eventCount": 14,')

    def put(jsonl: bytes, index: bytes) -> None:
        (legacy / "sessions" / "current.jsonl").write_bytes(jsonl)
        (legacy / "sessions" / "current.index.json").write_bytes(index)
        with engine.open(store) as st:
            results = list(import_legacy(SessionCatalog(st), str(legacy)))
        assert [r.status for r in results] in (["imported"], ["replaced"]) and results[0].exact, results

    put(v1_jsonl, v1_index)
    mat(store, "current", out)
    assert files(out, "current") == (v1_jsonl, v1_index)
    put(v2_jsonl, v2_index)
    mat(store, "current", out)
    jsonl, index = files(out, "current")
    assert index == v2_index
    assert jsonl == v2_jsonl, "stale event lines of the replaced session were kept"


def test_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """A killed writer leaves ``<file>.tmp`` behind (engine.log.fileio.atomic_write); the next
    materialization into the folder removes it, whichever session it writes."""
    store, out = tmp_path / "store", tmp_path / "out"
    record(store, "s", range(1))
    sessions = out / "sessions"
    sessions.mkdir(parents=True)
    for stale in ("other.jsonl.tmp", "other.index.json.tmp"):
        (sessions / stale).write_bytes(b'{"type":"session"')
    (sessions / "notes.txt.tmp").write_bytes(b"not ours")
    mat(store, "s", out)
    assert sorted(os.listdir(sessions)) == ["notes.txt.tmp", "s.index.json", "s.jsonl"]


def _whole_or_growing(jsonl: bytes, old: bytes, new: bytes) -> bool:
    """A .jsonl as a reader may see it while ``old`` grows into ``new`` (``old`` a prefix of
    ``new``): either version whole, or ``old`` followed by part of the new lines."""
    assert new.startswith(old) and len(new) > len(old)
    return jsonl in (old, new) or (jsonl.startswith(old) and new.startswith(jsonl))


def test_concurrent_writers_of_one_out_dir_take_turns(tmp_path: Path) -> None:
    """Two materializations into the same OUT_DIR (threads here; processes alike) replace the
    same files through the same temporary names, so they take turns: a reader always sees one
    complete version of the index and of a replaced .jsonl (or the old .jsonl with some of the
    new lines appended), and neither writer fails."""
    store_a, store_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    record(store_a, "s", range(40), pad=2000)
    shutil.copytree(store_a, store_b)
    record(store_b, "s", range(40, 60), pad=2000, create=False)
    versions = {}
    for tag, st in (("A", store_a), ("B", store_b)):
        mat(st, "s", tmp_path / f"ref-{tag}")
        versions[tag] = files(tmp_path / f"ref-{tag}", "s")
    indexes = {v[1] for v in versions.values()}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(order: list[Path]) -> None:
        try:
            with engine.open(order[0], readonly=True) as s0, engine.open(order[1], readonly=True) as s1:
                cats = [SessionCatalog(s0), SessionCatalog(s1)]
                for i in range(12):
                    materialize_session(cats[i % 2], "s", str(out))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        sessions = out / "sessions"
        while not stop.is_set():
            j, i = _read_if_there(sessions / "s.jsonl"), _read_if_there(sessions / "s.index.json")
            if (j is not None and not _whole_or_growing(j, versions["A"][0], versions["B"][0])) or (
                i is not None and i not in indexes
            ):
                errors.append(AssertionError("a reader saw a partial file"))
                return

    writers = [threading.Thread(target=writer, args=(order,)) for order in ([store_a, store_b], [store_b, store_a])]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(120)
    stop.set()
    watcher.join(10)
    assert errors == []
    assert files(out, "s") in versions.values()
    assert sorted(os.listdir(out / "sessions")) == ["s.index.json", "s.jsonl"]


# --------------------------------------------------------------------------------------------
# Names that would leave the target directory

BAD_NAMES = [
    "a/b",
    "a\\b",
    "..",
    ".",
    "/abs",
    "/tmp/abs",
    "a\x00b",
    "",
    "../escape",
    "x/../../y",
    "sub/..",
    "line\nbreak",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_by_session_files_and_materialize(name: str, tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "work" / "out"
    record(store, "good", range(1))
    (tmp_path / "work").mkdir()
    with pytest.raises(engine.InvalidNameError):
        session_files(str(out), name)
    with engine.open(store, readonly=True) as st, pytest.raises(engine.InvalidNameError):
        materialize_session(SessionCatalog(st), name, str(out))
    with pytest.raises(engine.InvalidNameError):
        materialize_snapshot(str(out), name, b"{}")
    assert os.listdir(tmp_path / "work") == []


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil-abs", "a\\b", "..", "x\x00y"], ids=repr)
def test_a_stored_session_with_a_bad_name_is_not_written_anywhere(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, work = tmp_path / "store", tmp_path / "work"
    out = work / "out"
    work.mkdir()
    with engine.open(store) as st:  # bypass the session layer's name check
        SessionCatalog(st).register(name, "evil", "2026-11-24T06:40:15.157Z")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with engine.open(store, readonly=True) as st, pytest.raises(engine.InvalidNameError):
        materialize_session(SessionCatalog(st), name, str(out))
    assert compat_main(["materialize", str(store), str(out)]) == 1  # reported, the others written
    err = capsys.readouterr().err
    assert err.startswith(f"compat: error: session {name!r} not materialized: ") and err.count("\n") == 1
    after = sorted(str(p) for p in tmp_path.rglob("*") if not str(p).startswith(str(out)))
    assert after == before
    assert not (work.parent / "evil.jsonl").exists() and not Path("/tmp/evil-abs.jsonl").exists()
    assert not out.exists() or not (out / "sessions").exists() or visible(out / "sessions") == []


# --------------------------------------------------------------------------------------------
# Atomicity: SIGKILL a writer that materializes in a loop (A, then B: an append in place, then
# A again: a replacement). The index is always one version whole; the .jsonl is one version
# whole, or A followed by part of B's new lines (as with the legacy writer, which appended).


def record_bulk(store: Path, name: str, rounds: range, create: bool = True) -> None:
    """Many long lines (about 6 MB), few checkpoints: most of a materialization is writing the .jsonl."""
    pm = engine.PersistenceManager(engine.SessionPool(), store, register_atexit=False)
    try:
        s = pm.create_session(name) if create else pm.load_session(name)
        for i in rounds:
            code = f'(define v{i} "{"x" * 250}")'
            s.input(code, ts=T0 + i)
            s.step(0, code, ts=T0 + i)
            if i % 500 == 499:
                s.result(f"v{i}", ts=T0 + i)
                s.checkpoint(0, "periodic", {"i": i, "entries": [[k, {"v": k * 0.5}] for k in range(200)]}, ts=T0 + i)
    finally:
        pm.shutdown()


def _read_if_there(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        return None


def test_killed_materialize_leaves_whole_files_or_an_append_in_progress(
    tmp_path: Path, crash_rng: random.Random, crash_seed: int, kill_factor: int
) -> None:
    store_a, store_b = tmp_path / "a", tmp_path / "b"
    record_bulk(store_a, "big", range(10000))
    shutil.copytree(store_a, store_b)
    record_bulk(store_b, "big", range(10000, 13000), create=False)
    versions = {}
    for tag, st in (("A", store_a), ("B", store_b)):
        mat(st, "big", tmp_path / f"ref-{tag}")
        versions[tag] = files(tmp_path / f"ref-{tag}", "big")
    old, new = versions["A"][0], versions["B"][0]
    indexes = {versions["A"][1]: "A", versions["B"][1]: "B"}
    assert len(indexes) == 2

    out = tmp_path / "out"
    sessions = out / "sessions"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for kill in range(5 * kill_factor):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "big", str(store_a), str(store_b)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"ready\n", (line, proc.stderr.read() if proc.stderr else b"")
            deadline = time.monotonic() + crash_rng.uniform(0.0, 0.4)
            while time.monotonic() < deadline:  # a reader meanwhile sees complete files only
                j, i = _read_if_there(sessions / "big.jsonl"), _read_if_there(sessions / "big.index.json")
                assert j is not None and _whole_or_growing(j, old, new), (
                    f"seed {crash_seed}, kill {kill}: reader saw a partial .jsonl"
                )
                assert i in indexes, f"seed {crash_seed}, kill {kill}: reader saw a partial index"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        assert proc.returncode == -signal.SIGKILL
        j, i = (sessions / "big.jsonl").read_bytes(), (sessions / "big.index.json").read_bytes()
        assert _whole_or_growing(j, old, new), (
            f"seed {crash_seed}, kill {kill}: .jsonl is neither version nor on its way ({len(j)} bytes)"
        )
        assert i in indexes, f"seed {crash_seed}, kill {kill}: index is neither version ({len(i)} bytes)"
        assert visible(sessions) == ["big.index.json", "big.jsonl"], os.listdir(sessions)

    # After the crashes a normal run writes the right files and leaves no temporary behind.
    for tag, st in (("B", store_b), ("A", store_a), ("B", store_b)):
        mat(st, "big", out)
        assert files(out, "big") == versions[tag]
        assert sorted(os.listdir(sessions)) == ["big.index.json", "big.jsonl"]
