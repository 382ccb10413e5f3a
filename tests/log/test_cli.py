"""``seglog`` / ``python -m engine``: each command's output on a small store, exit
statuses (0 ok, 1 failure, 2 usage, 3 no store) and one-line errors.

Most cases call ``engine.cli.main`` in-process; a few run ``python -m engine`` for real.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine
from engine import cli
from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEGMENT_BYTES = 4096


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The single ``seglog: error: ...`` line of a failed run, without its prefix."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("seglog: error: ") and "Traceback" not in err, err
    return err[len("seglog: error: ") : -1]


def make_store(path: Path) -> Path:
    """Three streams over a few 4 KiB segments; ``gone`` is dropped; ``s0`` has a
    blob written twice; the last records are in the active segment."""
    with engine.open(path, segment_bytes=SEGMENT_BYTES) as store:
        for i in range(60):
            store.append(f"s{i % 2}", {"type": "input", "code": f"(+ {i} 2)", "n": i})
            if i % 10 == 0:
                store.append("gone", {"type": "step", "n": i})
        store.put_blob("s0", "state-1", {"env": list(range(50)) * 12})
        store.put_blob("s0", "state-1", {"env": [1, 2, 3]})
        store.put_blob("gone", "receipt", b"\x00\x01" * 20)
        store.append_batch("s1", [{"a": 1}, {"b": "x" * 300}])
        store.drop_stream("gone")
        for i in range(40):
            store.append("s0", {"type": "step", "n": i, "pad": "y" * 40})
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "store")


def segment_ids(path: Path) -> list[int]:
    return sorted(int(p.name.split(".")[0]) for p in path.glob("*.seg"))


def dump_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("offset: ")]


# --------------------------------------------------------------------------------------------
# stat, streams


@pytest.mark.parametrize("with_compactor", [True, False])
def test_stat(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, with_compactor: bool
) -> None:
    if not with_compactor:
        monkeypatch.setattr(cli, "_compactor", lambda: None)
    elif cli._compactor() is None:
        pytest.skip("this seglog has no compactor")
    code, out, err = run(capsys, "stat", store)
    assert (code, err) == (0, "")
    ids = segment_ids(store)
    assert len(ids) >= 3
    assert f"segments     {len(ids)} ({len(ids) - 1} sealed, 1 active)" in out
    assert re.search(r"^streams      2$", out, re.M)
    assert re.search(r"^events       102$", out, re.M)
    sizes = {i: (store / f"{i:020d}.seg").stat().st_size for i in ids}
    for sid, size in sizes.items():
        state = "active" if sid == ids[-1] else "sealed"
        assert re.search(rf"^\s*{sid}\s+{size:,}\s+{state}\b", out, re.M), (sid, out)
    assert re.search(rf"^\s*total\s+{sum(sizes.values()):,}\b", out, re.M), out
    if not with_compactor:
        assert "garbage" not in out and "compaction" not in out
        return
    module = cli._compactor()
    assert module is not None
    garbage = module.analyze(store)
    assert garbage.reclaimable_bytes > 0  # the dropped stream, the overwritten blob
    for g in garbage.segments:
        if g.sealed:
            assert re.search(
                rf"^\s*{g.segment_id}\s+{g.size:,}\s+sealed\s+{g.live_bytes:,}\s+{g.garbage_bytes:,}"
                rf"\s+{100 * g.ratio:.1f}%$",
                out,
                re.M,
            ), out
    assert f"\nreclaimable      {garbage.reclaimable_bytes:,} bytes" in out
    assert "last compaction  never\n" in out


def test_streams(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "streams", store)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "events", "bytes", "blobs"]
    with engine.open(store, readonly=True) as st:
        infos = st.streams()
    assert [line.split()[0] for line in lines[1:-1]] == [i.name for i in infos] == ["s0", "s1"]
    for line, info in zip(lines[1:-1], infos, strict=True):
        assert line.split() == [info.name, f"{info.events:,}", f"{info.bytes:,}", f"{info.blobs:,}"]
    assert lines[-1].startswith("2 streams, 102 events, ")
    assert lines[-1].endswith(", 1 blob")


def test_streams_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine.open(tmp_path / "empty").close()
    assert run(capsys, "streams", tmp_path / "empty") == (0, "no streams\n", "")


# --------------------------------------------------------------------------------------------
# dump


def test_dump_segment_every_record_in_file_order(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = segment_ids(store)[0]
    code, out, err = run(capsys, "dump", store, "--segment", first)
    assert (code, err) == (0, "")
    assert out.startswith(f"segment {first} (")
    lines = dump_lines(out)
    offsets = [int(line.split()[1]) for line in lines]
    assert offsets[0] == 32 and offsets == sorted(offsets)
    assert lines[0] == "offset: 32 type: create stream: 1 ('s0') length: 2 flags: - name: 's0'"
    assert lines[1].startswith("offset: 66 type: events stream: 1 ('s0') seq: 0 count: 1 length: ")
    assert "value: [{'code': '(+ 0 2)', 'n': 0, 'type': 'input'}]" in lines[1]
    assert out.rstrip().endswith(f"{len(lines)} records, up to offset {(store / f'{first:020d}.seg').stat().st_size:,}")


def test_dump_segment_shows_blobs_drops_and_flags(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    for sid in segment_ids(store):
        code, out, _err = run(capsys, "dump", store, "--segment", sid)
        assert code == 0
        lines += dump_lines(out)
    blobs = [line for line in lines if " type: blob " in line]
    assert len(blobs) == 3
    assert all(re.search(r" key_hash: 0x[0-9a-f]{16} length: \d+ flags: ", b) for b in blobs)
    assert "key: 'state-1' value: {'env': [0, 1, 2, 3, ...]}" in blobs[0]
    assert "flags: lz4" in blobs[0]  # a repetitive value is stored compressed
    assert "key: 'receipt' value: b'\\x00\\x01" in blobs[2]
    drops = [line for line in lines if " type: drop " in line]
    assert len(drops) == 1 and "('gone')" in drops[0]
    batch = [line for line in lines if " count: 2 " in line]
    assert len(batch) == 1 and "value: [{'a': 1}, {'b': 'xxx" in batch[0] and "..." in batch[0]


def test_dump_segment_limit(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "dump", store, "--segment", segment_ids(store)[0], "--limit", 3)
    assert code == 0
    assert len(dump_lines(out)) == 3
    assert out.endswith("... stopped after 3 records (--limit)\n")


def test_dump_stream(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dump", store, "--stream", "s0")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("stream 's0': 70 events, 1 blob, ")
    events = [line for line in lines if line.startswith("seq: ")]
    assert [int(line.split()[1]) for line in events] == list(range(70))
    assert events[0] == "seq: 0 value: {'code': '(+ 0 2)', 'n': 0, 'type': 'input'}"
    assert lines[-1] == "blob: 'state-1' value: {'env': [1, 2, 3]}"  # the latest version


def test_dump_stream_limit(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "dump", store, "--stream", "s0", "--limit", 2)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines() if line.startswith("seq: ")] == ["0", "1"]
    assert "... stopped after 2 events (--limit)\n" in out


def test_dump_unknown_segment_and_stream(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dump", store, "--segment", 999)
    assert (code, out) == (1, "")
    ids = ", ".join(str(i) for i in segment_ids(store))
    assert one_line_error(err) == f"no segment 999 in {store} (its segments: {ids})"
    code, out, err = run(capsys, "dump", store, "--stream", "gone")
    assert (code, out) == (1, "")
    assert one_line_error(err) == f"no stream named 'gone' in {store}"


def test_dump_needs_exactly_one_of_segment_and_stream(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "dump", store)
    assert (code, out) == (2, "")
    assert "one of the arguments --segment --stream is required" in one_line_error(err)
    code, out, err = run(capsys, "dump", store, "--segment", 1, "--stream", "s0")
    assert (code, out) == (2, "")
    assert "not allowed with argument" in one_line_error(err)
    code, _out, err = run(capsys, "dump", store, "--segment", "x")
    assert code == 2 and "not an integer: 'x'" in one_line_error(err)


def test_dump_never_modifies_the_store(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.iterdir()}
    for sid in segment_ids(store):
        assert run(capsys, "dump", store, "--segment", sid)[0] == 0
    assert run(capsys, "dump", store, "--stream", "s1")[0] == 0
    assert run(capsys, "verify", store)[0] == 0
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.iterdir()} == before


# --------------------------------------------------------------------------------------------
# verify


def flip_byte_in_first_sealed_segment(store: Path) -> tuple[Path, int]:
    """Flip a payload byte of the second record (an EVENTS record at offset 66)."""
    seg = store / f"{segment_ids(store)[0]:020d}.seg"
    data = bytearray(seg.read_bytes())
    data[66 + 32 + 3] ^= 0x40
    seg.write_bytes(bytes(data))
    return seg, 66


def test_verify_clean(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with engine.open(store, readonly=True) as st:
        records = st.verify().records
    assert run(capsys, "verify", store) == (0, f"{records} records checked, 0 problems\n", "")


def test_verify_flipped_byte_in_a_sealed_segment(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seg, offset = flip_byte_in_first_sealed_segment(store)
    code, out, err = run(capsys, "verify", store)
    assert code == 1
    assert out.splitlines()[0] == f"problem: {seg} at offset {offset}: record checksum mismatch"
    assert out.splitlines()[-1].endswith(" records checked, 1 problem")
    assert one_line_error(err) == f"{store} has 1 damaged record"
    # the dump of that segment stops at the damage, with one line naming it
    code, out, err = run(capsys, "dump", store, "--segment", segment_ids(store)[0])
    assert code == 1
    assert len(dump_lines(out)) == 1
    assert one_line_error(err) == f"record checksum mismatch ({seg} at offset {offset})"


# --------------------------------------------------------------------------------------------
# backup


def test_backup(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "backup"
    code, out, err = run(capsys, "backup", store, dest)
    assert (code, err) == (0, "")
    assert out == f"backed up {store} to {dest}: {len(segment_ids(store))} segments, 2 streams, 102 events\n"
    with engine.open(dest, readonly=True) as copy, engine.open(store, readonly=True) as orig:
        assert copy.streams() == orig.streams()
        assert copy.read_range("s0") == orig.read_range("s0")
        assert copy.verify().ok


def test_backup_into_a_non_empty_directory(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "something").write_text("x")
    code, out, err = run(capsys, "backup", store, dest)
    assert (code, out) == (2, "")
    assert one_line_error(err) == f"backup destination {dest} exists and is not an empty directory"
    assert os.listdir(dest) == ["something"]


# --------------------------------------------------------------------------------------------
# compact


def test_compact_one_pass_then_stat_shows_it(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if cli._compact_function() is None:
        pytest.skip("this seglog has no compactor")
    code, out, err = run(capsys, "compact", store, "--garbage-ratio", "0.01", "--max-rate", "100")
    assert (code, err) == (0, "")
    m = re.fullmatch(
        r"segments ([\d, ]+) -> ([\d, ]+): ([\d,]+) -> ([\d,]+) bytes \(([\d,]+) reclaimed, -\d+%\), "
        r"[\d,]+ -> [\d,]+ records, [\d.]+ s\n",
        out,
    )
    assert m, out
    assert int(m[5].replace(",", "")) > 0
    with engine.open(store, readonly=True) as st:
        assert [i.name for i in st.streams()] == ["s0", "s1"] and st.verify().ok
    code, out, err = run(capsys, "stat", store)
    assert code == 0
    assert re.search(r"^last compaction  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\d+ s ago\): segments ", out, re.M), out
    assert re.search(r"; set aside: none$", out, re.M)
    code, out, err = run(capsys, "compact", store)
    assert (code, err) == (0, "")
    assert re.fullmatch(r"nothing to compact, [\d.]+ s\n", out), out


def test_compact_options_are_checked(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--garbage-ratio", "1.5"], "must be more than 0 and at most 1, not 1.5"),
        (["--garbage-ratio", "0"], "must be a positive number, not 0"),
        (["--interval", "-1"], "must be a positive number, not -1"),
        (["--segment-bytes", "0"], "must be a positive integer, not 0"),
        (["--max-rate", "fast"], "not a number: 'fast'"),
    ):
        code, out, err = run(capsys, "compact", store, *argv)
        assert (code, out) == (2, "")
        assert message in one_line_error(err)


def test_compact_when_no_compactor(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_compact_function", lambda: None)
    code, out, err = run(capsys, "compact", store)
    assert (code, out) == (1, "")
    assert one_line_error(err) == "compaction is not available in this version of seglog"


# --------------------------------------------------------------------------------------------
# no store, usage


@pytest.mark.parametrize(
    "command", [["stat"], ["streams"], ["dump", "--stream", "s0"], ["verify"], ["backup", "{tmp}/dest"], ["compact"]]
)
def test_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    name, *rest = command
    rest = [a.format(tmp=tmp_path) for a in rest]
    missing = tmp_path / "missing"
    code, out, err = run(capsys, name, missing, *rest)
    assert (code, out) == (3, "")
    assert one_line_error(err) == f"no store at {missing} (no such directory)"
    (tmp_path / "file").write_text("not a store")
    code, out, err = run(capsys, name, tmp_path / "file", *rest)
    assert (code, out) == (3, "")
    assert one_line_error(err) == f"{tmp_path / 'file'} is not a directory"
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, name, tmp_path / "empty", *rest)
    assert (code, out) == (3, "")
    assert one_line_error(err) == f"no store at {tmp_path / 'empty'} (no MANIFEST)"
    assert os.listdir(tmp_path / "empty") == []
    assert not missing.exists() and not (tmp_path / "dest").exists()


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert one_line_error(err) == "the following arguments are required: COMMAND (see 'seglog --help')"
    code, out, err = run(capsys, "frobnicate")
    assert (code, out) == (2, "")
    assert "invalid choice: 'frobnicate'" in one_line_error(err)
    code, out, err = run(capsys, "stat")
    assert (code, out) == (2, "")
    assert one_line_error(err) == "the following arguments are required: STORE_DIR (see 'seglog stat --help')"


def test_help_documents_exit_statuses_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--help")
    assert (code, err) == (0, "")
    for command in ("stat", "streams", "dump", "verify", "backup", "compact"):
        assert command in out
    assert "exit status:" in out
    for status in ("0  success", "1  runtime failure", "2  usage error", "3  no store"):
        assert status in out
    for command, positional in (("dump", "STORE_DIR"), ("backup", "DEST")):
        code, out, _err = run(capsys, command, "--help")
        assert code == 0
        assert re.search(rf"^  {positional}\s+\S", out, re.M), out  # every positional has a help text
        assert "exit status:" in out


def test_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nseglog = "engine\.cli:main"$', text, re.M)


# --------------------------------------------------------------------------------------------
# python -m engine, for real


def engine_cmd(*argv: object) -> list[str]:
    return [sys.executable, "-m", "engine", *map(str, argv)]


def test_python_m_engine(store: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(engine_cmd("streams", store), capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines()[1].split()[0] == "s0"
    proc = subprocess.run(engine_cmd("stat", store / "nope"), capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "")
    assert one_line_error(proc.stderr) == f"no store at {store / 'nope'} (no such directory)"


def test_compact_watch_ends_cleanly_on_sigterm(store: Path) -> None:
    if cli._compact_function() is None:
        pytest.skip("this seglog has no compactor")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        engine_cmd("compact", store, "--watch", "--interval", "0.2", "--garbage-ratio", "0.01"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("pass 1: segments "), first
        second = proc.stdout.readline()
        assert second.startswith("pass 2: nothing to compact, "), second
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (0, "")
    last = out.splitlines()[-1]
    assert re.fullmatch(r"stopped by SIGTERM: \d+ passes, [\d,]+ bytes( \(.*\))? reclaimed", last), out
    with engine.open(store, readonly=True) as st:
        assert st.verify().ok


def test_compact_everything_and_segment_bytes(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "compact", store, "--everything", "--segment-bytes", "65536")
    assert (code, err) == (0, "")
    assert out.startswith("segments "), out
    assert len(segment_ids(store)) == 2, "every sealed segment merged into one of 64 KiB at most, plus the active"


def test_compact_watch_goes_on_after_a_failed_pass(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def flaky(path: object, **options: object) -> object:
        calls.append(options)
        if len(calls) == 1:
            raise engine.CorruptionError("injected", str(path), 7)
        if len(calls) == 3:
            cli_stop.event.set()
        return engine.compact(path, **options)  # type: ignore[arg-type]

    class Stop(cli._StopFlag):
        def __init__(self) -> None:
            super().__init__()
            global cli_stop
            cli_stop = self

    monkeypatch.setattr(cli, "_compact_function", lambda: flaky)
    monkeypatch.setattr(cli, "_StopFlag", Stop)
    code, out, err = run(capsys, "compact", store, "--watch", "--interval", "0")
    assert code == 0
    assert "pass failed: injected" in err
    assert out.splitlines()[-1].startswith("stopped: 2 passes"), out
    assert "1 failed pass" in out.splitlines()[-1]


cli_stop: cli._StopFlag
