"""compat round trip: legacy files -> import -> materialize -> the same bytes.

* every file of ``legacy-samples`` (import, materialize, byte compare, ``verify``);
* synthetic legacy directories written by a JavaScript model of the legacy writer
  (``LEGACY_WRITER`` below, run by ``node``: the real ``JSON.stringify``, ``slice``
  and ``Buffer.byteLength``) covering what the samples do not;
* sessions recorded natively through the session layer, materialized and compared
  with what the JavaScript writer writes for the same calls;
* an imported session continued natively, materialized in full and incrementally.

Without ``node`` the synthetic and native cases are skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import node_wire
import pytest
from samples import SAMPLES

import engine
from compat.__main__ import main as compat_main
from compat.importer import ImportResult, import_legacy
from compat.materialize import materialize_session, materialize_snapshot, snapshots
from compat.verify import verify
from engine.session.catalog import SessionCatalog

SAMPLE_DIRS = sorted(p for p in SAMPLES.glob("*") if (p / "sessions").is_dir())
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (the JSON.stringify oracle)")

# --------------------------------------------------------------------------------------------
# The legacy writer, in JavaScript. It reads {"jobs": [{"dir", "ops"}]} on stdin; values in
# ops are in a wire format that carries them exactly (see wire() below). Each session keeps
# an index object, appends JSON.stringify(event) + "\n" per event (byteOffset counted with
# Buffer.byteLength) and rewrites the whole index with JSON.stringify(index, null, 2) at
# creation and after every checkpoint, llm_resp, result and error.

LEGACY_WRITER = r"""
'use strict';
const fs = require('fs');
const path = require('path');
const TRIGGERS = new Set(['checkpoint', 'llm_resp', 'result', 'error']);
function units(a) {
  let s = '';
  for (let i = 0; i < a.length; i += 4096) s += String.fromCharCode.apply(null, a.slice(i, i + 4096));
  return s;
}
function W(w) {
  if (w === null || typeof w === 'boolean') return w;
  if ('n' in w) return Number(w.n);
  if ('s' in w) return units(w.s);
  if ('u' in w) return undefined;
  if ('a' in w) return w.a.map(W);
  if ('o' in w) {
    const o = {};
    for (const [k, v] of w.o) {
      Object.defineProperty(o, units(k), {value: W(v), enumerable: true, writable: true, configurable: true});
    }
    return o;
  }
  throw new Error('bad wire value ' + JSON.stringify(w));
}
class Writer {
  constructor(root, name, id, indexId, created) {
    this.root = root; this.name = name; this.id = id; this.created = created;
    const dir = path.join(root, 'sessions');
    fs.mkdirSync(dir, {recursive: true});
    fs.mkdirSync(path.join(root, 'receipts'), {recursive: true});
    this.jsonl = path.join(dir, name + '.jsonl');
    this.indexPath = path.join(dir, name + '.index.json');
    this.log = [];
    const sessionId = indexId === undefined ? id : indexId;
    this.index = {sessionId: sessionId, eventCount: 0, checkpoints: [], states: {}, receipts: {}};
    const header = JSON.stringify({type: 'session', version: 1, id: id, created: created}) + '\n';
    fs.writeFileSync(this.jsonl, header);
    this.offset = Buffer.byteLength(header);
    this.writeIndex();
  }
  get seq() { return this.log.length; }
  writeIndex() { fs.writeFileSync(this.indexPath, JSON.stringify(this.index, null, 2)); }
  record(ev, state, receipt) {
    const line = JSON.stringify(ev) + '\n';
    const at = this.offset;
    fs.appendFileSync(this.jsonl, line);
    this.offset += Buffer.byteLength(line);
    this.log.push([ev, state, receipt]);
    this.index.eventCount = ev.seq + 1;
    if (ev.type === 'checkpoint') {
      this.index.checkpoints.push({seq: ev.seq, byteOffset: at, stateId: ev.stateId, reason: ev.reason});
      this.index.states[ev.stateId] = state;
    }
    if (ev.type === 'llm_resp') this.index.receipts[ev.receiptKey] = receipt;
    if (TRIGGERS.has(ev.type)) this.writeIndex();
  }
  cloneAs(name) {  // ":session save NAME": both files copied verbatim
    const c = Object.create(Writer.prototype);
    Object.assign(c, this);
    c.name = name;
    c.jsonl = path.join(path.dirname(this.jsonl), name + '.jsonl');
    c.indexPath = path.join(path.dirname(this.jsonl), name + '.index.json');
    fs.copyFileSync(this.jsonl, c.jsonl);
    fs.copyFileSync(this.indexPath, c.indexPath);
    c.log = this.log.slice();
    c.index = Object.assign({}, this.index, {checkpoints: this.index.checkpoints.slice(),
      states: Object.assign({}, this.index.states), receipts: Object.assign({}, this.index.receipts)});
    return c;
  }
}
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
for (const job of input.jobs) {
  const ws = new Map();
  for (const op of job.ops) {
    const [kind, name] = op;
    const A = op.slice(2).map(W);
    const w = ws.get(name);
    const s = w === undefined ? 0 : w.seq;
    switch (kind) {
      case 'create': ws.set(name, new Writer(job.dir, name, A[0], A[1], A[2])); break;
      case 'fork': {  // new header; keeps the events 0..atSeq, then goes on appending
        const src = ws.get(A[0]);
        const f = new Writer(job.dir, name, name, undefined, A[2]);
        for (const [ev, st, rc] of src.log.slice(0, A[1] + 1)) f.record(ev, st, rc);
        ws.set(name, f);
        break;
      }
      case 'save': ws.set(name, ws.get(A[0]).cloneAs(name)); break;
      case 'snapshot': fs.mkdirSync(job.dir, {recursive: true});
        fs.writeFileSync(path.join(job.dir, 'repl-' + name + '.json'), JSON.stringify(A[0], null, 2)); break;
      case 'input': w.record({seq: s, ts: A[0], type: 'input', code: A[1]}); break;
      case 'step': w.record({seq: s, ts: A[0], type: 'step', d: A[1], ctrl: A[2]}); break;
      case 'checkpoint':
        w.record({seq: s, ts: A[0], type: 'checkpoint', d: A[1], reason: A[2], stateId: 'state-' + s}, A[3]);
        break;
      case 'llm_req':
        w.record({seq: s, ts: A[0], type: 'llm_req', d: A[1], model: A[2], promptPreview: A[3].slice(0, 200),
                  receiptKey: A[4]});
        break;
      case 'llm_resp': {
        const [ts, d, value, tokens, durationMs, key, request, response, timestamp] = A;
        const ev = {seq: s, ts: ts, type: 'llm_resp', d: d, valuePreview: value.slice(0, 200), tokens: tokens,
                    durationMs: durationMs, receiptKey: key};
        w.record(ev, undefined, {key: key, request: request, response: response,
                                 timestamp: timestamp === undefined ? ts : timestamp, durationMs: durationMs,
                                 tokens: tokens});
        break;
      }
      case 'effect':
        w.record({seq: s, ts: A[0], type: 'effect', d: A[1], op: A[2], argsPreview: A[3].slice(0, 200)});
        break;
      case 'resume': w.record({seq: s, ts: A[0], type: 'resume', d: A[1], valuePreview: A[2].slice(0, 200)}); break;
      case 'result': w.record({seq: s, ts: A[0], type: 'result', value: A[1]}); break;
      case 'error': w.record({seq: s, ts: A[0], type: 'error', d: A[1], message: A[2], stack: A[3]}); break;
      default: throw new Error('bad op ' + kind);
    }
  }
}
"""


class _Absent:
    """JavaScript ``undefined`` in an op (an optional argument left out)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def wire(v: Any) -> Any:
    """A Python value in the writer's wire format (exact: -0.0, lone surrogates, key order)."""
    return node_wire.wire(v, ABSENT)


def run_legacy_writer(tmp: Path, jobs: dict[str, list[tuple[Any, ...]]]) -> dict[str, Path]:
    """Write one legacy directory per job with the JavaScript writer; return their paths."""
    assert NODE is not None
    script = tmp / "legacy_writer.js"
    script.write_text(LEGACY_WRITER)
    dirs = {job: tmp / "legacy" / job for job in jobs}
    doc = {
        "jobs": [
            {"dir": str(dirs[job]), "ops": [[op[0], op[1], *(wire(a) for a in op[2:])] for op in ops]}
            for job, ops in jobs.items()
        ]
    }
    proc = subprocess.run([NODE, str(script)], input=json.dumps(doc).encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return dirs


# --------------------------------------------------------------------------------------------
# Native recording of the same ops through the session layer.


def record_natively(store_dir: Path, ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Apply ``ops`` with a PersistenceManager; return them with the ``created`` values filled in."""
    pm = engine.PersistenceManager(engine.SessionPool(), store_dir, register_atexit=False)
    out: list[tuple[Any, ...]] = []
    insts: dict[str, engine.SessionInstance] = {}

    def opt(v: Any) -> Any:
        return None if v is ABSENT else v

    try:
        for op in ops:
            kind, name, *a = op
            s = insts.get(name)
            if kind == "create":
                assert a[1] is ABSENT, "a native session's index sessionId is its id"
                s = insts[name] = pm.create_session(name, session_id=a[0])
                op = ("create", name, a[0], ABSENT, s.created)
            elif kind == "fork":
                s = insts[name] = pm.fork(a[0], name, a[1])
                op = ("fork", name, a[0], a[1], s.created)
            elif kind == "save":
                insts[name] = pm.save_as(a[0], name)
            elif kind == "input":
                s.input(a[1], ts=a[0])
            elif kind == "step":
                s.step(a[1], a[2], ts=a[0])
            elif kind == "checkpoint":
                s.checkpoint(a[1], a[2], a[3], ts=a[0])
            elif kind == "llm_req":
                s.llm_req(a[1], a[2], a[3], a[4], ts=a[0])
            elif kind == "llm_resp":
                ts, d, value, tokens, duration, key, request, response, timestamp = a
                s.llm_resp(
                    d,
                    value,
                    duration,
                    key,
                    request=request,
                    response=response,
                    timestamp=opt(timestamp),
                    tokens=opt(tokens),
                    ts=ts,
                )
            elif kind == "effect":
                s.effect(a[1], a[2], a[3], ts=a[0])
            elif kind == "resume":
                s.resume(a[1], a[2], ts=a[0])
            elif kind == "result":
                s.result(a[1], ts=a[0])
            elif kind == "error":
                s.error(a[1], a[2], stack=opt(a[3]), ts=a[0])
            else:
                raise AssertionError(kind)
            out.append(op)
    finally:
        pm.shutdown()
    return out


# --------------------------------------------------------------------------------------------
# Scenarios: op lists. ``native=True`` keeps to what the session layer accepts (int ts, d and
# durationMs; no integer beyond 64 bits; the index sessionId is the header id).

CREATED = "2026-11-24T06:40:15.157Z"
T0 = 1795502415160
STACK = "Error: boom\n    at stepOnce (/home/user/Omega/src/core/eval/machineStep.ts:841:39)\n    at main (x.ts:1:2)"
EMOJI_CUT = "a" * 199 + "\U0001f600" + "tail"  # slice(0, 200) leaves a lone high surrogate
ODD = "".join(map(chr, range(0x20))) + '"\\/\x7f\u2028\u2029 café \ud800 x\udfff \udbff\udc00 \U0001f600 \ufeff'


def weird_numbers(native: bool) -> dict[str, Any]:
    big = 1.2345678901234568e20 if native else 123456789012345678901
    return {
        "z": 1,
        "10": 1e21,
        "2": 1e-7,
        "01": big,
        "4294967294": -0.0,
        "4294967295": 3.5e-7,
        "-1": 1.7976931348623157e308,
        "1.5": 0.30000000000000004,
        "0": "zero",
        " 3": 1e-6,
        "arr": [0.000001, 1e16, 10**16, 2**53 + 1, 5e-324, float("nan"), float("inf"), -float("inf"), -0.0, 1e300 * 10],
        "nested": {"9": {"b": 2, "1": 1}, "a": [], "o": {}, "t": True, "f": False, "n": None},
    }


class Ops(list[tuple[Any, ...]]):
    """An op list; ``ops.on(name)`` makes the following event ops go to session ``name``."""

    cur = ""

    def on(self, name: str) -> Ops:
        self.cur = name
        return self

    def create(self, name: str, sid: str, index_id: Any = ABSENT, created: str = CREATED) -> Ops:
        self.append(("create", name, sid, index_id, created))
        return self.on(name)

    def __getattr__(self, kind: str) -> Any:
        if kind.startswith("_"):
            raise AttributeError(kind)

        def add(*args: Any) -> Ops:
            self.append((kind, self.cur, *args))
            return self

        return add


def ops_numbers(native: bool) -> Ops:
    tokens = {"prompt": 12, "completion": -0.0, "cost": 1e-7, "big": 1e21, "7": "seven", "3": None}
    o = Ops().create("numbers", "numbers")
    o.input(T0 if native else 1e21, "(+ 1 2)")
    o.step(T0 + 1, 0 if native else -0.0, "(+ 1 2)")
    o.checkpoint(T0 + 2, 0, "manual", weird_numbers(native))
    o.llm_req(T0 + 3, 1, "mock", "p", "k1")
    o.llm_resp(
        T0 + 4,
        1,
        "v",
        tokens,
        0 if native else 1e-7,
        "k1",
        {"10": 1, "2": 2, "op": "infer"},
        {"content": 1e21, "1": [1e-7]},
        2**53 if native else 123456789012345678901,
    )
    o.result(T0 + 5, "3")
    o.checkpoint(T0 + 6, 0, "periodic", {"x": [3.5e-7, 123.456, -1e-7, 1e21, 1e22]})
    return o


def ops_strings(native: bool) -> Ops:
    o = Ops().create("strings", "strings")
    o.input(T0, ODD).step(T0 + 1, 0, ODD)
    o.checkpoint(T0 + 2, 0, "llm_boundary", {"s": ODD, ODD: "key", "\u2028": ["\ud83d", "\ude00"]})
    o.effect(T0 + 3, 1, "infer.op", EMOJI_CUT)
    o.llm_req(T0 + 4, 1, "mock-llm", EMOJI_CUT, "key \u2028 é")
    o.llm_resp(
        T0 + 5, 1, "b" * 150 + ODD * 3, ABSENT, 3, "key \u2028 é", {"prompt": ODD}, {"content": EMOJI_CUT}, ABSENT
    )
    o.checkpoint(T0 + 6, 1, "effect", {"s": "\ud83d"})
    o.resume(T0 + 7, 1, EMOJI_CUT)
    o.error(T0 + 8, 0, "bad \ud800 " + ODD, STACK + ODD)
    o.input(T0 + 9, "x" * 300 + "\U0001f600")  # not a preview: not cut
    o.result(T0 + 10, "y" * 300 + "\udc00")
    return o


def ops_receipts(native: bool) -> Ops:
    """Receipts written twice under one key; integer-like receipt keys; tokens present and absent."""
    o = Ops().create("receipts", "receipts")
    o.input(T0, "(effect infer.op 1)")
    t = T0
    for i, (key, tokens) in enumerate(
        [("k", {"in": 3, "out": 4}), ("42", ABSENT), ("7", 12), ("k", ABSENT), ("42", {"in": 1e-7})]
    ):
        t += 10
        o.checkpoint(t, 0, "llm_boundary", {"i": i, "prev": list(range(i))})
        o.llm_req(t + 1, 1, "mock", f"prompt {i}", key)
        o.llm_resp(
            t + 2,
            1,
            f"answer {i}",
            tokens,
            i,
            key,
            {"n": i, "10": "x", "1": "y"},
            {"content": f"answer {i}"},
            t + 3 if i % 2 else ABSENT,
        )
        o.resume(t + 4, 1, f"answer {i}")
    o.result(t + 20, '"done"').error(t + 21, 0, "no stack", ABSENT).error(t + 22, 0, "with stack", STACK)
    return o


def ops_tail(native: bool) -> Ops:
    """Events after the last index trigger: the index's eventCount stops at that trigger."""
    o = Ops().create("tail", "tail")
    o.input(T0, "(define x 1)").step(T0, 0, "(define x 1)").result(T0 + 1, "x")
    o.checkpoint(T0 + 2, 0, "manual", {"x": 1})
    o.input(T0 + 3, "(f x)").step(T0 + 3, 0, "(f x)").effect(T0 + 4, 1, "op", "[]")
    o.llm_req(T0 + 5, 1, "m", "p", "pending")  # its llm_resp never came
    o.create("no-trigger", "no-trigger").input(T0, "(+ 1").step(T0, 0, "(+ 1")
    return o


def ops_names(native: bool) -> Ops:
    """Names that differ from the header id (and, imported, from the index's sessionId); empty sessions."""
    o = Ops().create("gamma", "alpha", ABSENT if native else "beta")
    o.input(T0, "(define y 2)").result(T0 + 1, "y").checkpoint(T0 + 2, 0, "manual", {"y": 2})
    o.append(("save", "saved-gamma", "gamma"))  # keeps the header id (and the index's sessionId)
    o.create("empty", "empty")
    o.create("sesión ü 1", "current", created="2026-01-01T00:00:00.000Z")
    o.create("..hidden", "..hidden").input(T0, "(x)").result(T0 + 1, "1")
    if not native:
        o.create("empty-renamed", "some-id", "other-id")
    return o


def ops_fork(native: bool) -> Ops:
    """A fork at a checkpoint (new header, shared history) and a save copy continued on its own."""
    o = Ops().create("main", "current")
    t = T0
    for i in range(6):
        t += 5
        o.input(t, f"(step {i})").step(t, 0, f"(step {i})").result(t + 1, str(i))
        o.checkpoint(t + 2, 0, "manual", {"i": i, "pad": "p" * (i * 40)})
    o.append(("fork", "forked", "main", 11, "2026-11-24T06:41:00.001Z"))
    o.on("forked").input(t + 10, "(zz)").error(t + 11, 0, "unbound var zz", STACK)
    o.on("main").input(t + 12, "(main goes on)").result(t + 13, "main")
    o.checkpoint(t + 14, 0, "manual", {"main": True})
    o.append(("save", "saved", "forked"))
    o.on("saved").input(t + 20, "(saved goes on)").checkpoint(t + 21, 0, "periodic", {"saved": 1})
    return o


SCENARIOS = {
    "numbers": ops_numbers,
    "strings": ops_strings,
    "receipts": ops_receipts,
    "tail": ops_tail,
    "names": ops_names,
    "fork": ops_fork,
}


SNAPSHOTS = [
    (
        "snapshot",
        "main",
        {
            "defs": ["(define x 1)", ODD],
            "debugMode": False,
            "debugCode": "(x)",
            "stepCount": 3,
            "traceLength": 0,
            "breakpoints": [{"id": 1, "line": 2.5}],
            "nextBreakpointId": 2,
            "recordingEnabled": True,
        },
    ),
    (
        "snapshot",
        "other",
        {
            "defs": [],
            "debugMode": True,
            "debugCode": ABSENT,
            "stepCount": 1e21,
            "traceLength": -0.0,
            "breakpoints": [],
            "nextBreakpointId": 1,
            "recordingEnabled": False,
        },
    ),
]


# --------------------------------------------------------------------------------------------
# Helpers


def import_dir(store_dir: Path, legacy: Path) -> list[ImportResult]:
    with engine.open(store_dir) as store:
        return list(import_legacy(SessionCatalog(store), str(legacy)))


def materialize_all(store_dir: Path, out: Path) -> list[Any]:
    with engine.open(store_dir, readonly=True) as store:
        cat = SessionCatalog(store)
        done = [materialize_session(cat, name, str(out)) for name in cat.names()]
        for name, data in snapshots(cat).items():
            materialize_snapshot(str(out), name, data)
        return done


def legacy_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (the sidecar folder ``.seglog`` aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".seglog" not in p.relative_to(root).parts
    }


def assert_same_tree(expected: Path, actual: Path) -> None:
    want, got = legacy_files(expected), legacy_files(actual)
    assert sorted(got) == sorted(want)
    for rel, data in want.items():
        assert got[rel] == data, f"{rel}: first difference at byte {_first_diff(data, got[rel])}"
    assert (actual / "receipts").is_dir()
    assert list((actual / "receipts").iterdir()) == []


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def verify_problems(store_dir: Path, legacy: Path) -> list[str]:
    with engine.open(store_dir, readonly=True) as store:
        return [str(m) for m in verify(SessionCatalog(store), str(legacy))]


# --------------------------------------------------------------------------------------------
# The samples


@pytest.mark.skipif(not SAMPLE_DIRS, reason=f"no legacy samples under {SAMPLES}")
@pytest.mark.parametrize("sample", SAMPLE_DIRS, ids=lambda p: p.name)
def test_every_sample_file_round_trips_byte_for_byte(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    results = import_dir(store, sample)
    names = sorted(p.name[: -len(".jsonl")] for p in (sample / "sessions").glob("*.jsonl"))
    assert sorted(r.name for r in results) == names
    for r in results:
        assert r.status == "imported", r
        assert r.exact, f"{r.name}: rebuilt bytes differ from the legacy file (stored verbatim instead)"
    materialize_all(store, out)
    want = legacy_files(sample)
    got = legacy_files(out)
    for rel, data in want.items():
        assert got[rel] == data, f"{rel}: first difference at byte {_first_diff(data, got[rel])}"
    assert set(got) == set(want)
    assert (out / "receipts").is_dir() and not any((out / "receipts").iterdir())
    assert verify_problems(store, sample) == []
    capsys.readouterr()
    assert compat_main(["verify", str(sample), str(store)]) == 0
    assert "all files reproduced byte for byte" in capsys.readouterr().out


@pytest.mark.skipif(not SAMPLE_DIRS, reason=f"no legacy samples under {SAMPLES}")
def test_save_copy_keeps_header_id_and_fork_has_its_own(tmp_path: Path) -> None:
    sample = SAMPLES / "ch01-getting-started"
    if not (sample / "sessions" / "saved-ch01-getting-started.jsonl").exists():
        pytest.skip("sample ch01-getting-started is not there")
    import_dir(tmp_path / "store", sample)
    with engine.open(tmp_path / "store", readonly=True) as store:
        cat = SessionCatalog(store)
        assert cat.persister("saved-ch01-getting-started").meta.id == "current"
        assert cat.persister("forked-ch01-getting-started").meta.id == "forked-ch01-getting-started"
        materialize_session(cat, "saved-ch01-getting-started", str(tmp_path / "out"))
    text = (tmp_path / "out" / "sessions" / "saved-ch01-getting-started.jsonl").read_text()
    assert text.startswith('{"type":"session","version":1,"id":"current",')
    index = json.loads((tmp_path / "out" / "sessions" / "saved-ch01-getting-started.index.json").read_text())
    assert index["sessionId"] == "current"


# --------------------------------------------------------------------------------------------
# Synthetic legacy directories (JavaScript writer as the oracle)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if NODE is None:
        pytest.skip("node is not installed (the JSON.stringify oracle)")
    jobs = {name: build(False) for name, build in SCENARIOS.items()}
    jobs["snapshots"] = [("create", "s", "s", ABSENT, CREATED), *SNAPSHOTS]
    return run_legacy_writer(tmp_path_factory.mktemp("synthetic"), jobs)


@needs_node
def test_legacy_writer_model_matches_a_sample(tmp_path: Path) -> None:
    """The JavaScript model writes the sample's bytes from the sample's events (checks the oracle)."""
    sample = SAMPLES / "mock-effects" / "sessions"
    if not (sample / "mock-effects.jsonl").exists():
        pytest.skip("sample mock-effects is not there")
    lines = (sample / "mock-effects.jsonl").read_text().splitlines()
    index = json.loads((sample / "mock-effects.index.json").read_text())
    header = json.loads(lines[0])
    ops: list[tuple[Any, ...]] = [("create", "mock-effects", header["id"], ABSENT, header["created"])]
    for line in lines[1:]:
        e = json.loads(line)
        t, n = e["type"], "mock-effects"
        if t == "input":
            ops.append((t, n, e["ts"], e["code"]))
        elif t == "step":
            ops.append((t, n, e["ts"], e["d"], e["ctrl"]))
        elif t == "checkpoint":
            ops.append((t, n, e["ts"], e["d"], e["reason"], index["states"][e["stateId"]]))
        elif t == "llm_req":
            ops.append((t, n, e["ts"], e["d"], e["model"], e["promptPreview"], e["receiptKey"]))
        elif t == "llm_resp":
            r = index["receipts"][e["receiptKey"]]
            ops.append(
                (
                    t,
                    n,
                    e["ts"],
                    e["d"],
                    e["valuePreview"],
                    e.get("tokens", ABSENT),
                    e["durationMs"],
                    e["receiptKey"],
                    r["request"],
                    r["response"],
                    r["timestamp"],
                )
            )
        elif t == "effect":
            ops.append((t, n, e["ts"], e["d"], e["op"], e["argsPreview"]))
        elif t == "resume":
            ops.append((t, n, e["ts"], e["d"], e["valuePreview"]))
        elif t == "result":
            ops.append((t, n, e["ts"], e["value"]))
        else:
            ops.append((t, n, e["ts"], e["d"], e["message"], e.get("stack", ABSENT)))
    out = run_legacy_writer(tmp_path, {"m": ops})["m"] / "sessions"
    assert (out / "mock-effects.jsonl").read_bytes() == (sample / "mock-effects.jsonl").read_bytes()
    assert (out / "mock-effects.index.json").read_bytes() == (sample / "mock-effects.index.json").read_bytes()


def test_scenarios_cover_the_edge_cases() -> None:
    """The synthetic scenarios contain what they claim (so the round trips below can fail)."""
    ops = [op for build in SCENARIOS.values() for op in build(False)]
    flat = repr(ops)
    for needle in (
        "1e+21",
        "1e-07",
        "123456789012345678901",
        "-0.0",
        "'4294967294'",
        "\\u2028",
        "\\ud800",
        "\\x00",
        "\\x1f",
        "ABSENT",
    ):
        assert needle in flat, needle
    kinds = {op[0] for op in ops}
    assert kinds >= {
        "create",
        "fork",
        "save",
        "input",
        "step",
        "checkpoint",
        "llm_req",
        "llm_resp",
        "effect",
        "resume",
        "result",
        "error",
    }


@pytest.mark.parametrize("scenario", [*SCENARIOS, "snapshots"])
def test_synthetic_legacy_dir_round_trips(scenario: str, synthetic: dict[str, Path], tmp_path: Path) -> None:
    legacy = synthetic[scenario]
    store, out = tmp_path / "store", tmp_path / "out"
    results = import_dir(store, legacy)
    assert results, "nothing was imported"
    for r in results:
        assert r.status == "imported", r
        assert r.exact, f"{r.name}: rebuilt bytes differ from the legacy file (stored verbatim instead)"
    materialize_all(store, out)
    assert_same_tree(legacy, out)
    assert verify_problems(store, legacy) == []


@needs_node
def test_synthetic_files_have_the_shapes_the_spec_describes(synthetic: dict[str, Path]) -> None:
    """Spot checks of the oracle's output against the spec's wording (empty session, tail, numbers)."""
    s = synthetic["names"] / "sessions"
    assert (s / "empty.index.json").read_bytes() == (
        b'{\n  "sessionId": "empty",\n  "eventCount": 0,\n  "checkpoints": [],\n  "states": {},\n  "receipts": {}\n}'
    )
    assert (s / "empty.jsonl").read_bytes().count(b"\n") == 1
    idx = json.loads((s / "empty-renamed.index.json").read_text())
    assert idx["sessionId"] == "other-id"
    assert json.loads((s / "gamma.index.json").read_text())["sessionId"] == "beta"
    assert (s / "saved-gamma.jsonl").read_bytes() == (s / "gamma.jsonl").read_bytes()
    tail = synthetic["tail"] / "sessions"
    assert json.loads((tail / "tail.index.json").read_text())["eventCount"] == 4
    assert json.loads((tail / "no-trigger.index.json").read_text())["eventCount"] == 0
    num = (synthetic["numbers"] / "sessions" / "numbers.jsonl").read_text()
    assert '"ts":1e+21' in num and '"d":0,' in num and '"cost":1e-7' in num and '"completion":0' in num
    idx_text = (synthetic["numbers"] / "sessions" / "numbers.index.json").read_text()
    assert '"01": 123456789012345680000' in idx_text
    assert idx_text.index('"0": "zero"') < idx_text.index('"2": 1e-7') < idx_text.index('"10": 1e+21')
    text = (synthetic["strings"] / "sessions" / "strings.jsonl").read_text()
    assert "\\ud800" in text and "\\u001f" in text and "\u2028" in text and '\\ud83d"' in text


# --------------------------------------------------------------------------------------------
# Sessions recorded natively


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """For each scenario: (store recorded through the session layer, legacy dir the JS writer wrote)."""
    if NODE is None:
        pytest.skip("node is not installed (the JSON.stringify oracle)")
    base = tmp_path_factory.mktemp("native")
    stores, jobs = {}, {}
    for name, build in SCENARIOS.items():
        stores[name] = base / "stores" / name
        jobs[name] = record_natively(stores[name], build(True))
    dirs = run_legacy_writer(base, jobs)
    return {name: (stores[name], dirs[name]) for name in SCENARIOS}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_native_session_materializes_as_the_legacy_writer_writes(
    scenario: str, native: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    store, expected = native[scenario]
    out = tmp_path / "out"
    done = materialize_all(store, out)
    assert all(not m.incremental for m in done)
    assert_same_tree(expected, out)


@needs_node
def test_native_fork_after_a_receipt_is_rewritten(tmp_path: Path) -> None:
    """A fork taken before the source wrote a receipt key again keeps the receipt as of the fork.

    The legacy fork kept the events up to the fork point, so its index holds the first
    receipt under the key; materializing the fork must not depend on what the source
    did after the fork point.
    """
    ops = Ops().create("a", "a").input(T0, "(ask)")
    ops.llm_req(T0 + 1, 0, "m", "p", "K").llm_resp(T0 + 2, 0, "v1", ABSENT, 5, "K", {"q": 1}, {"r": 1}, ABSENT)
    ops.checkpoint(T0 + 3, 0, "manual", {"st": 1})
    ops.llm_req(T0 + 4, 0, "m", "p", "K").llm_resp(T0 + 5, 0, "v2", ABSENT, 5, "K", {"q": 2}, {"r": 2}, ABSENT)
    ops.result(T0 + 6, "done")
    ops.append(("fork", "b", "a", 3, CREATED))
    ops.on("b").result(T0 + 7, "forked")
    recorded = record_natively(tmp_path / "store", ops)
    expected = run_legacy_writer(tmp_path, {"fork": recorded})["fork"]
    out = tmp_path / "out"
    materialize_all(tmp_path / "store", out)
    assert_same_tree(expected, out)


# --------------------------------------------------------------------------------------------
# An imported session continued through the session layer


@needs_node
def test_imported_session_continued_natively_materializes_incrementally(tmp_path: Path) -> None:
    part1 = ops_strings(True)
    name = "strings"
    part2: list[tuple[Any, ...]] = [
        ("input", name, T0 + 100, "(more)"),
        ("checkpoint", name, T0 + 101, 0, "manual", {"after": "import", "10": 1, "2": [1e21, -0.0]}),
        ("llm_req", name, T0 + 102, 1, "m", EMOJI_CUT, "key \u2028 é"),
        ("llm_resp", name, T0 + 103, 1, "again", {"t": 1}, 7, "key \u2028 é", {"q": 2}, {"r": 2}, ABSENT),
        ("result", name, T0 + 104, "ok"),
        ("input", name, T0 + 105, "(dangling)"),
    ]
    dirs = run_legacy_writer(tmp_path, {"part1": part1, "full": part1 + part2})
    store, out = tmp_path / "store", tmp_path / "out"
    assert all(r.exact for r in import_dir(store, dirs["part1"]))
    first = materialize_all(store, out)
    assert [m.incremental for m in first] == [False]
    assert_same_tree(dirs["part1"], out)

    pm = engine.PersistenceManager(engine.SessionPool(), store, register_atexit=False)
    try:
        s = pm.load_session(name)
        s.input(part2[0][3], ts=part2[0][2])
        s.checkpoint(0, "manual", part2[1][5], ts=part2[1][2])
        s.llm_req(1, "m", EMOJI_CUT, "key \u2028 é", ts=part2[2][2])
        s.llm_resp(1, "again", 7, "key \u2028 é", request={"q": 2}, response={"r": 2}, tokens={"t": 1}, ts=part2[3][2])
        s.result("ok", ts=part2[4][2])
        s.input("(dangling)", ts=part2[5][2])
    finally:
        pm.shutdown()

    second = materialize_all(store, out)
    assert [(m.incremental, m.appended_lines) for m in second] == [(True, len(part2))]
    assert_same_tree(dirs["full"], out)
    fresh = tmp_path / "fresh"
    materialize_all(store, fresh)
    assert_same_tree(dirs["full"], fresh)
