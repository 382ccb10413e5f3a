"""``python -m compat import|materialize|verify``: exit codes, outputs, one-line errors.

Most cases call ``compat.__main__.main`` in-process; a few run ``python -m compat`` for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samples import REPO as ROOT
from samples import SAMPLES

import engine
from compat.__main__ import main
from engine.session.catalog import SessionCatalog

CH01 = SAMPLES / "ch01-getting-started"
MOCK = SAMPLES / "mock-effects"

pytestmark = pytest.mark.skipif(not (CH01 / "sessions").is_dir() or not (MOCK / "sessions").is_dir(),
                                reason=f"legacy samples are not under {SAMPLES}")
SNAPSHOT = b'{\n  "defs": [],\n  "debugMode": false,\n  "stepCount": 0,\n  "traceLength": 0,\n  "breakpoints": [],' \
           b'\n  "nextBreakpointId": 1,\n  "recordingEnabled": true\n}'


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The single ``compat: error: ...`` line of a bad-input run."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("compat: error: ") and "Traceback" not in err, err
    return err[len("compat: error: "):-1]


def legacy_dir(root: Path, snapshot: bool = True) -> Path:
    """ch01 and mock-effects in one writable legacy directory, with a snapshot."""
    (root / "sessions").mkdir(parents=True)
    for src in (CH01, MOCK):
        for f in (src / "sessions").iterdir():
            shutil.copyfile(f, root / "sessions" / f.name)
    if snapshot:
        (root / "repl-main.json").write_bytes(SNAPSHOT)
    return root


NAMES = ["current", "forked-ch01-getting-started", "mock-effects", "saved-ch01-getting-started"]


# --------------------------------------------------------------------------------------------
# import


def test_import_then_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy, store = legacy_dir(tmp_path / "legacy"), tmp_path / "store"
    code, out, err = run(capsys, "import", legacy, store)
    assert (code, out, err) == (0, "5 imported\n", "")
    code, out, err = run(capsys, "import", legacy, store)
    assert (code, out, err) == (0, "5 unchanged\n", "")
    with engine.open(store, readonly=True) as st:
        assert SessionCatalog(st).names() == NAMES


def test_import_with_a_bad_session_exits_1_and_names_file_and_line(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    legacy, store = legacy_dir(tmp_path / "legacy", snapshot=False), tmp_path / "store"
    lines = (CH01 / "sessions" / "current.jsonl").read_bytes().split(b"\n")
    lines[3] = b'{"seq":2,"ts":1795502436193,"type":"result","value":'
    (legacy / "sessions" / "bad.jsonl").write_bytes(b"\n".join(lines))
    shutil.copyfile(CH01 / "sessions" / "current.index.json", legacy / "sessions" / "bad.index.json")
    code, out, err = run(capsys, "import", legacy, store)
    assert code == 1
    assert out == "1 failed, 4 imported\n"
    assert err.count("\n") == 1 and err.startswith("compat: bad: ")
    assert f"{legacy / 'sessions' / 'bad.jsonl'}:4: invalid JSON" in err
    with engine.open(store, readonly=True) as st:
        assert SessionCatalog(st).names() == NAMES


def test_import_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    code, out, err = run(capsys, "import", missing, tmp_path / "store")
    assert code == 2 and out == ""
    assert one_line_error(err) == f"no such directory: {missing}"
    assert not (tmp_path / "store").exists()

    (tmp_path / "no-sessions").mkdir()
    code, _, err = run(capsys, "import", tmp_path / "no-sessions", tmp_path / "store")
    assert code == 2 and "no sessions/ folder" in one_line_error(err)

    legacy = legacy_dir(tmp_path / "legacy")
    (tmp_path / "a-file").write_bytes(b"x")
    code, _, err = run(capsys, "import", legacy, tmp_path / "a-file")
    assert code == 2 and str(tmp_path / "a-file") in one_line_error(err)

    code, _, err = run(capsys, "import", legacy / "repl-main.json", tmp_path / "store")
    assert code == 2 and one_line_error(err) == f"no such directory: {legacy / 'repl-main.json'}"


# --------------------------------------------------------------------------------------------
# materialize


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    legacy, store = legacy_dir(tmp_path / "legacy"), tmp_path / "store"
    assert run(capsys, "import", legacy, store)[0] == 0
    return store


def test_materialize_everything(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "materialize", store, out)
    assert code == 0 and err == ""
    assert stdout.startswith("4 sessions, 1 snapshots, ") and stdout.endswith(f" bytes written to {out}\n")
    for src in (CH01, MOCK):
        for f in (src / "sessions").iterdir():
            assert (out / "sessions" / f.name).read_bytes() == f.read_bytes(), f.name
    assert sorted(os.listdir(out / "sessions")) == sorted(os.listdir(tmp_path / "legacy" / "sessions"))
    assert (out / "repl-main.json").read_bytes() == SNAPSHOT
    assert (out / "receipts").is_dir() and os.listdir(out / "receipts") == []


def test_materialize_selected_sessions(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "materialize", store, out, "--session", "mock-effects", "--session", "current")
    assert code == 0 and stdout.startswith("2 sessions, 0 snapshots, ")
    assert sorted(os.listdir(out / "sessions")) == ["current.index.json", "current.jsonl",
                                                    "mock-effects.index.json", "mock-effects.jsonl"]
    assert not (out / "repl-main.json").exists()
    assert (out / "sessions" / "current.jsonl").read_bytes() == (CH01 / "sessions" / "current.jsonl").read_bytes()


def test_materialize_bad_input(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "materialize", store, out, "--session", "current", "--session", "nope")
    assert code == 2 and stdout == ""
    assert one_line_error(err) == f"no session named 'nope' in {store}"
    assert not out.exists()  # checked before anything is written

    code, _, err = run(capsys, "materialize", store, out, "--session", "../current")
    assert code == 2 and "'../current'" in one_line_error(err)

    code, _, err = run(capsys, "materialize", tmp_path / "no-store", out)
    assert code == 2 and one_line_error(err) == f"no store at {tmp_path / 'no-store'}"

    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "materialize", tmp_path / "empty", out)
    assert code == 2 and "no store at" in one_line_error(err)

    (tmp_path / "a-file").write_bytes(b"x")
    code, _, err = run(capsys, "materialize", store, tmp_path / "a-file")
    assert code == 2 and str(tmp_path / "a-file") in one_line_error(err)
    assert (tmp_path / "a-file").read_bytes() == b"x"


# --------------------------------------------------------------------------------------------
# verify


def test_verify_lists_each_mismatching_file_with_its_first_differing_byte(
        store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = tmp_path / "legacy"
    code, out, err = run(capsys, "verify", legacy, store)
    assert (code, out, err) == (0, "all files reproduced byte for byte\n", "")

    jsonl = legacy / "sessions" / "current.jsonl"
    data = bytearray(jsonl.read_bytes())
    data[500] ^= 0x01
    jsonl.write_bytes(bytes(data))
    index = legacy / "sessions" / "mock-effects.index.json"
    full = index.read_bytes()
    index.write_bytes(full[:1000])
    code, out, err = run(capsys, "verify", legacy, store)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[-1] == "2 file(s) differ"
    assert sorted(lines[:-1]) == sorted([
        f"{jsonl}: first difference at byte 500 (legacy file has {len(data)} bytes, materialized {len(data)})",
        f"{index}: first difference at byte 1000 (legacy file has 1000 bytes, materialized {len(full)})",
    ])


def test_verify_reports_sessions_and_snapshots_missing_from_the_store(
        store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = tmp_path / "legacy"
    shutil.copyfile(legacy / "sessions" / "current.jsonl", legacy / "sessions" / "extra.jsonl")
    shutil.copyfile(legacy / "sessions" / "current.index.json", legacy / "sessions" / "extra.index.json")
    (legacy / "repl-other.json").write_bytes(SNAPSHOT)
    code, out, _ = run(capsys, "verify", legacy, store)
    assert code == 1
    assert f"{legacy / 'sessions' / 'extra.jsonl'}: session is not in the store\n" in out
    assert f"{legacy / 'repl-other.json'}: snapshot is not in the store\n" in out
    assert out.endswith("2 file(s) differ\n")


def test_verify_bad_input(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify", tmp_path / "nope", store)
    assert code == 2 and out == "" and one_line_error(err) == f"no such directory: {tmp_path / 'nope'}"
    code, out, err = run(capsys, "verify", tmp_path / "legacy", tmp_path / "no-store")
    assert code == 2 and out == "" and one_line_error(err) == f"no store at {tmp_path / 'no-store'}"
    (tmp_path / "no-sessions").mkdir()
    code, out, err = run(capsys, "verify", tmp_path / "no-sessions", store)
    assert code == 2 and "no sessions/ folder" in one_line_error(err)


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["import", "only-one"], ["materialize"],
                                  ["verify", "a", "b", "c"], ["materialize", "s", "o", "--session"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: python -m compat" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The real entry point


def test_python_dash_m_compat_end_to_end(tmp_path: Path) -> None:
    legacy, store, out = legacy_dir(tmp_path / "legacy"), tmp_path / "store", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def compat(*argv: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "compat", *map(str, argv)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    p = compat("import", legacy, store)
    assert (p.returncode, p.stdout, p.stderr) == (0, "5 imported\n", "")
    p = compat("materialize", store, out, "--session", "mock-effects")
    assert p.returncode == 0 and p.stderr == ""
    want = (MOCK / "sessions" / "mock-effects.jsonl").read_bytes()
    assert (out / "sessions" / "mock-effects.jsonl").read_bytes() == want
    p = compat("verify", legacy, store)
    assert (p.returncode, p.stdout) == (0, "all files reproduced byte for byte\n")
    (legacy / "sessions" / "current.index.json").write_bytes(b"{}")
    p = compat("verify", legacy, store)
    assert p.returncode == 1
    assert f"{legacy / 'sessions' / 'current.index.json'}: first difference at byte 1 " in p.stdout
    p = compat("materialize", store, out, "--session", "ghost")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"compat: error: no session named 'ghost' in {store}\n"
