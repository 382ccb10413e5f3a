"""``python -m compat import|materialize|verify``: exit codes, outputs, one-line errors.

Most cases call ``compat.__main__.main`` in-process; a few run ``python -m compat`` for real.
Exit statuses (as in ``engine.cli``): 0 ok, 1 runtime failure, 2 usage error, 3 no store.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samples import REPO as ROOT
from samples import SAMPLES

import compat.__main__ as cli
import engine
from compat.__main__ import EXIT_FAILURE, EXIT_NO_STORE, EXIT_OK, EXIT_USAGE, main
from compat.progress import Progress
from engine.session.catalog import SessionCatalog

CH01 = SAMPLES / "ch01-getting-started"
MOCK = SAMPLES / "mock-effects"

pytestmark = pytest.mark.skipif(
    not (CH01 / "sessions").is_dir() or not (MOCK / "sessions").is_dir(),
    reason=f"legacy samples are not under {SAMPLES}",
)
SNAPSHOT = (
    b'{\n  "defs": [],\n  "debugMode": false,\n  "stepCount": 0,\n  "traceLength": 0,\n  "breakpoints": [],'
    b'\n  "nextBreakpointId": 1,\n  "recordingEnabled": true\n}'
)
EXPECTED = "LEGACY_DIR is the folder that holds sessions/"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The single ``compat: error: ...`` line of a failed run."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("compat: error: ") and "Traceback" not in err, err
    return err[len("compat: error: ") : -1]


def fails(capsys: pytest.CaptureFixture[str], code: int, *argv: object) -> str:
    """Run; expect exit ``code``, nothing on stdout and one error line; return its message."""
    got, out, err = run(capsys, *argv)
    assert (got, out) == (code, ""), (got, out, err)
    return one_line_error(err)


def legacy_dir(root: Path, snapshot: bool = True) -> Path:
    """ch01 and mock-effects in one writable legacy directory, with a snapshot."""
    (root / "sessions").mkdir(parents=True)
    for src in (CH01, MOCK):
        for f in (src / "sessions").iterdir():
            shutil.copyfile(f, root / "sessions" / f.name)
    if snapshot:
        (root / "repl-main.json").write_bytes(SNAPSHOT)
    return root


def tree(root: Path) -> list[tuple[str, int, int, int]]:
    """Every path under ``root`` with its inode, size and mtime: to check that nothing changed."""
    out = []
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out.append((str(p.relative_to(root)), st.st_ino, st.st_size, st.st_mtime_ns))
    return out


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


def test_import_into_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy, store = legacy_dir(tmp_path / "legacy"), tmp_path / "store"
    store.mkdir()
    assert run(capsys, "import", legacy, store) == (0, "5 imported\n", "")
    assert run(capsys, "import", legacy, tmp_path / "new" / "nested" / "store") == (0, "5 imported\n", "")


def test_import_with_a_bad_session_exits_1_and_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, store = legacy_dir(tmp_path / "legacy", snapshot=False), tmp_path / "store"
    lines = (CH01 / "sessions" / "current.jsonl").read_bytes().split(b"\n")
    lines[3] = b'{"seq":2,"ts":1795502436193,"type":"result","value":'
    (legacy / "sessions" / "bad.jsonl").write_bytes(b"\n".join(lines))
    shutil.copyfile(CH01 / "sessions" / "current.index.json", legacy / "sessions" / "bad.index.json")
    code, out, err = run(capsys, "import", legacy, store)
    assert code == EXIT_FAILURE
    assert out == "1 failed, 4 imported\n"
    message = one_line_error(err)
    assert message.startswith(f"session 'bad' not imported: {legacy / 'sessions' / 'bad.jsonl'}:4: invalid JSON")
    with engine.open(store, readonly=True) as st:
        assert SessionCatalog(st).names() == NAMES


def test_import_legacy_dir_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = legacy_dir(tmp_path / "legacy")
    store = tmp_path / "store"

    missing = tmp_path / "nope"
    assert fails(capsys, EXIT_USAGE, "import", missing, store) == f"no such folder: {missing} ({EXPECTED})"

    snap = legacy / "repl-main.json"
    assert fails(capsys, EXIT_USAGE, "import", snap, store) == f"{snap} is a file, not a folder ({EXPECTED})"

    (tmp_path / "no-sessions").mkdir()
    assert (
        fails(capsys, EXIT_USAGE, "import", tmp_path / "no-sessions", store)
        == f"{tmp_path / 'no-sessions'} has no sessions/ folder ({EXPECTED})"
    )

    # The sessions/ folder itself: say which folder was meant.
    assert fails(capsys, EXIT_USAGE, "import", legacy / "sessions", store) == (
        f"{legacy / 'sessions'} has no sessions/ folder: it looks like the sessions/ folder itself; "
        f"give the folder that holds it ({legacy})"
    )

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "sessions").write_bytes(b"")
    assert (
        fails(capsys, EXIT_USAGE, "import", tmp_path / "odd", store)
        == f"{tmp_path / 'odd' / 'sessions'} is a file, not a folder ({EXPECTED})"
    )
    assert not store.exists()


def test_import_store_dir_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = legacy_dir(tmp_path / "legacy")
    before = tree(legacy)
    wanted = "give a new or empty folder, or an existing store"

    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"x")
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, a_file) == f"STORE_DIR {a_file} is a file, not a folder; {wanted}"
    )
    assert a_file.read_bytes() == b"x"
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, a_file / "store")
        == f"STORE_DIR {a_file / 'store'} cannot be created: {a_file} is a file, not a folder"
    )

    # `import X X`: MANIFEST and segments would land beside sessions/.
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, legacy)
        == f"STORE_DIR {legacy} is the legacy folder itself; give the store a folder of its own ({wanted[5:]})"
    )
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, legacy / "sessions")
        == f"STORE_DIR {legacy / 'sessions'} is inside the legacy folder {legacy}; give the store a folder outside "
        f"it ({wanted[5:]})"
    )
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, legacy / "store")
        == f"STORE_DIR {legacy / 'store'} is inside the legacy folder {legacy}; give the store a folder outside "
        f"it ({wanted[5:]})"
    )
    os.symlink(legacy, tmp_path / "link")
    assert "is the legacy folder itself" in fails(capsys, EXIT_USAGE, "import", legacy, tmp_path / "link")

    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "cat.jpg").write_bytes(b"meow")
    assert (
        fails(capsys, EXIT_USAGE, "import", legacy, unrelated)
        == f"STORE_DIR {unrelated} is not empty and holds no store (no MANIFEST); {wanted}"
    )
    assert os.listdir(unrelated) == ["cat.jpg"]
    assert tree(legacy) == before


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
    total = sum(f.stat().st_size for src in (CH01, MOCK) for f in (src / "sessions").iterdir()) + len(SNAPSHOT)
    assert stdout == f"4 sessions (4 written), 1 snapshot (1 written); {total:,} bytes written to {out}\n"
    for src in (CH01, MOCK):
        for f in (src / "sessions").iterdir():
            assert (out / "sessions" / f.name).read_bytes() == f.read_bytes(), f.name
    assert sorted(os.listdir(out / "sessions")) == sorted(os.listdir(tmp_path / "legacy" / "sessions"))
    assert (out / "repl-main.json").read_bytes() == SNAPSHOT
    assert (out / "receipts").is_dir() and os.listdir(out / "receipts") == []


def test_materialize_twice_leaves_every_file_alone(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run(capsys, "materialize", store, out)[0] == 0
    files = [p for p in out.rglob("*") if p.is_file() and ".seglog" not in p.parts]
    assert len(files) == 9
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    code, stdout, err = run(capsys, "materialize", store, out)
    assert (code, err) == (0, "")
    assert stdout == f"4 sessions (4 unchanged), 1 snapshot (1 unchanged); 0 bytes written to {out}\n"
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before


def test_materialize_selected_sessions(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "materialize", store, out, "--session", "mock-effects", "--session", "current")
    assert code == 0 and stdout.startswith("2 sessions (2 written), 0 snapshots; ")
    assert sorted(os.listdir(out / "sessions")) == [
        "current.index.json",
        "current.jsonl",
        "mock-effects.index.json",
        "mock-effects.jsonl",
    ]
    assert not (out / "repl-main.json").exists()
    assert (out / "sessions" / "current.jsonl").read_bytes() == (CH01 / "sessions" / "current.jsonl").read_bytes()
    code, stdout, _ = run(capsys, "materialize", store, out, "--session", "current")
    assert code == 0 and stdout == f"1 session (1 unchanged), 0 snapshots; 0 bytes written to {out}\n"


@pytest.mark.parametrize(
    "argv",
    [["--session", "-dash"], ["--session=-dash"], ["--session", "--x"]],
    ids=["separate", "joined", "double-dash"],
)
def test_a_session_name_starting_with_a_dash(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, store, out = tmp_path / "legacy", tmp_path / "store", tmp_path / "out"
    (legacy / "sessions").mkdir(parents=True)
    name = argv[-1].removeprefix("--session=")
    for ext in (".jsonl", ".index.json"):
        shutil.copyfile(CH01 / "sessions" / f"current{ext}", legacy / "sessions" / f"{name}{ext}")
    assert run(capsys, "import", legacy, store) == (0, "1 imported\n", "")
    code, stdout, err = run(capsys, "materialize", store, out, *argv)
    assert (code, err) == (0, ""), err
    assert stdout.startswith("1 session (1 written), 0 snapshots; ")
    assert (out / "sessions" / f"{name}.jsonl").read_bytes() == (CH01 / "sessions" / "current.jsonl").read_bytes()


def test_materialize_store_dir_refused_with_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        fails(capsys, EXIT_NO_STORE, "materialize", tmp_path / "no-store", out)
        == f"no store at {tmp_path / 'no-store'} (no such directory)"
    )
    (tmp_path / "empty").mkdir()
    assert (
        fails(capsys, EXIT_NO_STORE, "materialize", tmp_path / "empty", out)
        == f"no store at {tmp_path / 'empty'} (no MANIFEST)"
    )
    (tmp_path / "a-file").write_bytes(b"x")
    assert (
        fails(capsys, EXIT_NO_STORE, "materialize", tmp_path / "a-file", out)
        == f"{tmp_path / 'a-file'} is not a directory"
    )
    assert not out.exists()


def test_materialize_out_dir_refused(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(store)
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"x")
    assert fails(capsys, EXIT_USAGE, "materialize", store, a_file) == f"OUT_DIR {a_file} is a file, not a folder"
    assert a_file.read_bytes() == b"x"
    assert (
        fails(capsys, EXIT_USAGE, "materialize", store, a_file / "out")
        == f"OUT_DIR {a_file / 'out'} cannot be created: {a_file} is a file, not a folder"
    )

    out = tmp_path / "out"
    out.mkdir()
    (out / "sessions").write_bytes(b"not a folder")
    assert (
        fails(capsys, EXIT_USAGE, "materialize", store, out)
        == f"{out / 'sessions'} is a file; materialize needs sessions/ there to be a folder"
    )
    assert os.listdir(out) == ["sessions"]

    # Never into a store: not STORE_DIR, not inside it, not another store.
    assert (
        fails(capsys, EXIT_USAGE, "materialize", store, store)
        == f"OUT_DIR {store} is the store's folder; write the legacy files to another folder"
    )
    assert (
        fails(capsys, EXIT_USAGE, "materialize", store, store / "legacy")
        == f"OUT_DIR {store / 'legacy'} is inside the store's folder {store}; write the legacy files to a folder "
        "outside it"
    )
    other = tmp_path / "other-store"
    with engine.open(other):
        pass
    assert (
        fails(capsys, EXIT_USAGE, "materialize", store, other)
        == f"OUT_DIR {other} holds a store (a MANIFEST); write the legacy files to another folder"
    )
    assert not (other / "sessions").exists()
    assert tree(store) == before


def test_materialize_bad_session_arguments(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        fails(capsys, EXIT_FAILURE, "materialize", store, out, "--session", "current", "--session", "nope")
        == f"no session named 'nope' in {store}"
    )
    assert not out.exists()  # checked before anything is written

    message = fails(capsys, EXIT_USAGE, "materialize", store, out, "--session", "../current")
    assert message.startswith("--session '../current': session name '../current' is not allowed")
    assert not out.exists()


def test_an_unmaterializable_session_is_reported_and_the_rest_written(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.open(store) as st:  # a name written without the session layer's check
        SessionCatalog(st).register("../evil", "evil", "2026-11-24T06:40:15.157Z")
    out = tmp_path / "work" / "out"
    code, stdout, err = run(capsys, "materialize", store, out)
    assert code == EXIT_FAILURE
    assert one_line_error(err).startswith("session '../evil' not materialized: session name '../evil'")
    assert stdout.startswith("5 sessions (4 written, 1 failed), 1 snapshot (1 written); ")
    for src in (CH01, MOCK):
        for f in (src / "sessions").iterdir():
            assert (out / "sessions" / f.name).read_bytes() == f.read_bytes(), f.name
    assert os.listdir(tmp_path / "work") == ["out"]


# --------------------------------------------------------------------------------------------
# verify


def test_verify_lists_each_mismatching_file_with_its_first_differing_byte(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = tmp_path / "legacy"
    code, out, err = run(capsys, "verify", legacy, store)
    assert (code, out, err) == (0, "all files reproduced byte for byte\n", "")

    jsonl = legacy / "sessions" / "current.jsonl"
    data = bytearray(jsonl.read_bytes())
    data[500] ^= 0x01
    jsonl.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", legacy, store)
    assert (code, err) == (1, "")
    assert out == (
        f"{jsonl}: first difference at byte 500 (legacy file has {len(data)} bytes, materialized "
        f"{len(data)})\n1 file differs\n"
    )

    index = legacy / "sessions" / "mock-effects.index.json"
    full = index.read_bytes()
    index.write_bytes(full[:1000])
    code, out, err = run(capsys, "verify", legacy, store)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[-1] == "2 files differ"
    assert sorted(lines[:-1]) == sorted(
        [
            f"{jsonl}: first difference at byte 500 (legacy file has {len(data)} bytes, materialized {len(data)})",
            f"{index}: first difference at byte 1000 (legacy file has 1000 bytes, materialized {len(full)})",
        ]
    )


def test_verify_reports_sessions_and_snapshots_missing_from_the_store(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = tmp_path / "legacy"
    shutil.copyfile(legacy / "sessions" / "current.jsonl", legacy / "sessions" / "extra.jsonl")
    shutil.copyfile(legacy / "sessions" / "current.index.json", legacy / "sessions" / "extra.index.json")
    (legacy / "repl-other.json").write_bytes(SNAPSHOT)
    code, out, _ = run(capsys, "verify", legacy, store)
    assert code == 1
    assert f"{legacy / 'sessions' / 'extra.jsonl'}: session is not in the store\n" in out
    assert f"{legacy / 'repl-other.json'}: snapshot is not in the store\n" in out
    assert out.endswith("2 files differ\n")


def test_verify_bad_input(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        fails(capsys, EXIT_USAGE, "verify", tmp_path / "nope", store)
        == f"no such folder: {tmp_path / 'nope'} ({EXPECTED})"
    )
    assert (
        fails(capsys, EXIT_NO_STORE, "verify", tmp_path / "legacy", tmp_path / "no-store")
        == f"no store at {tmp_path / 'no-store'} (no such directory)"
    )
    (tmp_path / "no-sessions").mkdir()
    assert (
        fails(capsys, EXIT_USAGE, "verify", tmp_path / "no-sessions", store)
        == f"{tmp_path / 'no-sessions'} has no sessions/ folder ({EXPECTED})"
    )
    assert "looks like the sessions/ folder itself" in fails(
        capsys, EXIT_USAGE, "verify", tmp_path / "legacy" / "sessions", store
    )


# --------------------------------------------------------------------------------------------
# Progress bars


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def last_state(text: str) -> str:
    """What a terminal shows last: the text after the last carriage return."""
    return text.rsplit("\r", 1)[-1]


def test_the_bar_ends_on_its_final_state() -> None:
    tty = Tty()
    bar = Progress(180, "materialize", stream=tty, delay=0)
    for _ in range(180):
        bar.update()
    bar.close()
    assert last_state(tty.getvalue()) == f"materialize [{'#' * 30}] 180/180\n"

    tty = Tty()
    bar = Progress(180, "import", stream=tty, delay=0)
    bar.update()
    bar._last = 1e18  # the next updates are all throttled
    for _ in range(178):
        bar.update()
    bar.close()  # stopped short (a failure): the bar shows where it stopped
    assert last_state(tty.getvalue()).endswith("] 179/180\n")


def test_no_bar_off_a_terminal_or_for_a_quick_run() -> None:
    quiet = io.StringIO()
    bar = Progress(3, "verify", stream=quiet, delay=0)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""
    tty = Tty()
    bar = Progress(3, "verify", stream=tty, delay=60)
    bar.update(3)
    bar.close()
    assert tty.getvalue() == ""


def test_every_command_draws_its_bar_to_the_end(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    screens: dict[str, Tty] = {}

    def bar(total: int, label: str) -> Progress:
        screens[label] = Tty()
        return Progress(total, label, stream=screens[label], delay=0)

    monkeypatch.setattr(cli, "Progress", bar)
    legacy = tmp_path / "legacy"
    assert run(capsys, "import", legacy, store)[0] == 0
    assert run(capsys, "materialize", store, tmp_path / "out")[0] == 0
    assert run(capsys, "verify", legacy, store)[0] == 0
    for label in ("import", "materialize", "verify"):
        assert last_state(screens[label].getvalue()) == f"{label} [{'#' * 30}] 5/5\n", label


# --------------------------------------------------------------------------------------------
# Usage and --help


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["import", "only-one"],
        ["materialize"],
        ["verify", "a", "b", "c"],
        ["materialize", "s", "o", "--session"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line_error(err).endswith("--help')")


@pytest.mark.parametrize(
    "command, positionals",
    [
        ("import", ["LEGACY_DIR", "STORE_DIR"]),
        ("materialize", ["STORE_DIR", "OUT_DIR"]),
        ("verify", ["LEGACY_DIR", "STORE_DIR"]),
    ],
)
def test_help_describes_each_argument_and_the_exit_statuses(
    command: str, positionals: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for name in positionals:
        assert f"\n  {name} " in text, name  # listed with a description
    text = " ".join(text.split())
    if "LEGACY_DIR" in positionals:
        assert "the one that holds sessions/" in text and "not sessions/ itself" in text
    if command == "import":
        assert "a new or empty folder" in text and "MANIFEST" in text and "not LEGACY_DIR" in text
    if command == "materialize":
        assert "--session -dash" in text and "not a store" in text
    for line in ("0 success", "1 runtime failure", "2 usage error", "3 no store"):
        assert line in text
    assert 'Errors are one line on stderr: "compat: error: <what was wrong>".' in text


# --------------------------------------------------------------------------------------------
# The real entry point


def test_python_dash_m_compat_end_to_end(tmp_path: Path) -> None:
    legacy, store, out = legacy_dir(tmp_path / "legacy"), tmp_path / "store", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def compat(*argv: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "compat", *map(str, argv)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

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
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == f"compat: error: no session named 'ghost' in {store}\n"
    p = compat("import", legacy, legacy)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr.startswith("compat: error: STORE_DIR ") and p.stderr.count("\n") == 1


def test_a_failed_session_is_one_line_in_a_real_run(tmp_path: Path) -> None:
    """The library's own log lines do not double the CLI's report."""
    legacy, store = legacy_dir(tmp_path / "legacy", snapshot=False), tmp_path / "store"
    (legacy / "sessions" / "bad.jsonl").write_bytes(b"x")
    shutil.copyfile(CH01 / "sessions" / "current.index.json", legacy / "sessions" / "bad.index.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(
        [sys.executable, "-m", "compat", "import", str(legacy), str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (p.returncode, p.stdout) == (1, "1 failed, 4 imported\n")
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("compat: error: session 'bad' not imported: ")
