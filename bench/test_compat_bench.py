"""compat benchmarks: materialize and import throughput on a scaled-up legacy corpus.

    pytest bench/test_compat_bench.py -q                          # small (default)
    SEGLOG_BENCH_SCALE=full pytest bench/test_compat_bench.py -q  # full: 300 sessions, ~0.6 GB

The corpus (``compat_corpus.py``) is written once per pytest session under the bench
temp dir: hundreds of sessions (small: 20) in the exact legacy format, the index
holding one ~50 KB state per checkpoint, so ~98% of the bytes are in the indexes.
It is imported once into a store for the materialize rounds.

Benchmarks (pytest-benchmark, pedantic rounds with a fresh directory per round made
in the untimed setup; one warm-up round; figures from the median round):

* ``compat_materialize/seglog``: ``materialize_session`` of every session of the
  store into a fresh output directory (the store is open read-only before the
  round, the catalog is built in the setup); MB/s of bytes written (both files of
  every session, equal to the corpus). Target >= 100 MB/s.
* ``compat_import/seglog``: ``import_legacy`` of the corpus into a fresh store
  (``engine.open`` with the options of ``python -m compat import`` and ``close``
  inside the round); MB/s of legacy input.
* for scale, ``compat_parse/{json,orjson}``: read each file and parse each ``.jsonl``
  line and each index (what an importer cannot do less than), MB/s of input;
  ``compat_serialize/{json,orjson,jsjson}``: serialize, in memory, the parsed events
  (compact) and indexes (two-space indent) of the same files, MB/s of output;
  ``jsjson`` is ``compat.jsjson.stringify``, byte-exact (what re-rendering every
  state instead of copying its text would cost). At full scale the serialize rounds
  use the first sessions up to ``SERIALIZE_BUDGET`` bytes, to bound memory.
  orjson refuses lone surrogates (a few preview lines) and integers beyond 64 bits;
  those documents fall back to ``json`` and are counted in ``fallback_docs``.

Every result carries ``extra_info``: ``bench``, ``impl``, ``scale``, ``events``,
``events_per_s``, ``mb`` (per round), ``mb_per_s`` (median round, MB = 10**6 bytes),
``median_s``, the corpus figures and, for materialize and import, ``cpu_mb_per_s`` (from
the median process CPU time of a round: steadier than the wall time on a shared machine).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import compat_corpus as cc
import pytest
import session_workload as sw

import engine
from compat.importer import import_legacy
from compat.jsjson import stringify
from compat.materialize import materialize_session
from engine.session.catalog import SessionCatalog

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None

MB = 1_000_000
TARGET_MATERIALIZE_MB_S = 100
SERIALIZE_BUDGET = {"small": 1 << 40, "full": 160 * MB}
ROUNDS = {"small": 5, "full": 5}
#: The store options of ``python -m compat import``.
IMPORT_OPTIONS: dict[str, Any] = {"compress_events": True}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not sw.samples_available(), reason=f"no legacy samples under {sw.samples_dir()} (set SEGLOG_LEGACY_SAMPLES)"
)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def compat_scale(request: pytest.FixtureRequest) -> str:
    """``--bench-scale`` when conftest defines it (it defaults to SEGLOG_BENCH_SCALE), else the variable."""
    try:
        name = str(request.config.getoption("--bench-scale"))
    except ValueError:
        name = cc.scale_name()
    if name not in cc.SPECS:
        raise pytest.UsageError(f"unknown bench scale {name!r}")
    return name


@pytest.fixture(scope="session")
def compat_tmp(bench_tmp: str) -> str:
    path = os.path.join(bench_tmp, "compat")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def corpus(compat_scale: str, compat_tmp: str) -> cc.CorpusStats:
    """The legacy directory, written once per pytest session."""
    return cc.build_corpus(os.path.join(compat_tmp, "legacy"), cc.SPECS[compat_scale])


@dataclass
class ImportedStore:
    path: str
    results: list[Any]


@pytest.fixture(scope="session")
def imported_store(corpus: cc.CorpusStats, compat_tmp: str) -> ImportedStore:
    """The corpus imported once (for the materialize rounds and the round-trip check)."""
    path = os.path.join(compat_tmp, "store")
    shutil.rmtree(path, ignore_errors=True)
    with engine.open(path, **IMPORT_OPTIONS) as store:
        results = list(import_legacy(SessionCatalog(store), corpus.root))
    return ImportedStore(path, results)


def _session_paths(corpus: cc.CorpusStats) -> list[tuple[str, str]]:
    d = os.path.join(corpus.root, "sessions")
    return [(os.path.join(d, n + ".jsonl"), os.path.join(d, n + ".index.json")) for n in corpus.names]


def _new_dir(base: str, prefix: str, counter: list[int]) -> str:
    counter[0] += 1
    path = os.path.join(base, f"{prefix}-{counter[0]}")
    shutil.rmtree(path, ignore_errors=True)
    return path


def _info(
    benchmark: Any, bench: str, impl: str, scale: str, corpus: cc.CorpusStats, events: int, nbytes: int, **extra: Any
) -> None:
    benchmark.group = bench
    benchmark.extra_info.update(
        {
            "bench": bench,
            "impl": impl,
            "scale": scale,
            "events": events,
            "mb": round(nbytes / MB, 3),
            **corpus.summary(),
            **extra,
        }
    )


def _finish(benchmark: Any, events: int, nbytes: int, cpu_s: list[float] | None = None) -> float | None:
    """MB/s and events/s of the median round (None when benchmarking is disabled).

    ``cpu_s``: the process CPU time of each round (warm-up first); its median gives
    ``cpu_mb_per_s``, which other processes on a shared machine disturb less than the
    wall time (it leaves out waiting for the disk and for a core).
    """
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    median = stats.stats.median
    if median <= 0:
        return None
    rate = nbytes / MB / median
    benchmark.extra_info.update(
        {"median_s": round(median, 4), "mb_per_s": round(rate, 1), "events_per_s": round(events / median, 1)}
    )
    if cpu_s and len(cpu_s) > 1:
        cpu = statistics.median(cpu_s[1:])
        benchmark.extra_info.update({"cpu_median_s": round(cpu, 4), "cpu_mb_per_s": round(nbytes / MB / cpu, 1)})
    return rate


# --------------------------------------------------------------------------- correctness
def test_corpus_round_trips(corpus: cc.CorpusStats, imported_store: ImportedStore) -> None:
    """Every session imports exactly (rebuilt from its parts, no stored source bytes), and
    ``python -m compat verify`` reproduces the whole directory byte for byte."""
    assert corpus.sessions == len(imported_store.results)
    bad = [
        (r.name, r.status, r.exact, r.error) for r in imported_store.results if r.status != "imported" or not r.exact
    ]
    assert not bad
    proc = subprocess.run(
        [sys.executable, "-m", "compat", "verify", corpus.root, imported_store.path],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


_NODE_CHECK = r"""
const fs = require('fs'), path = require('path');
const dir = process.argv[1]; const bad = [];
for (const f of fs.readdirSync(dir)) {
  const text = fs.readFileSync(path.join(dir, f), 'utf8');
  if (f.endsWith('.jsonl')) {
    const lines = text.split('\n');
    if (lines.pop() !== '') bad.push(f + ': no final newline');
    let off = 0; const offs = {};
    for (const l of lines) {
      const e = JSON.parse(l);
      if (JSON.stringify(e) !== l) bad.push(f + ': ' + l.slice(0, 60));
      if (e.type === 'checkpoint') offs[e.seq] = off;
      off += Buffer.byteLength(l, 'utf8') + 1;
    }
    const idx = JSON.parse(fs.readFileSync(path.join(dir, f.replace(/\.jsonl$/, '.index.json')), 'utf8'));
    for (const c of idx.checkpoints) if (offs[c.seq] !== c.byteOffset) bad.push(f + ': byteOffset of ' + c.seq);
  } else if (JSON.stringify(JSON.parse(text), null, 2) !== text) bad.push(f);
}
console.log(JSON.stringify(bad.slice(0, 20)));
"""


def test_corpus_is_what_javascript_writes(corpus: cc.CorpusStats) -> None:
    """Independent of compat.jsjson: node's JSON.stringify gives back every line and index."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(
        [node, "-e", _NODE_CHECK, os.path.join(corpus.root, "sessions")], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == []


# --------------------------------------------------------------------------- seglog
def test_materialize(
    benchmark: Any, compat_scale: str, corpus: cc.CorpusStats, imported_store: ImportedStore, compat_tmp: str
) -> None:
    counter = [0]
    written: list[int] = []
    cpu: list[float] = []
    store = engine.open(imported_store.path, readonly=True)
    try:

        def setup() -> tuple[tuple[SessionCatalog, str], dict[str, Any]]:
            return (SessionCatalog(store), _new_dir(compat_tmp, "materialize", counter)), {}

        def run(catalog: SessionCatalog, out: str) -> None:
            c0 = time.process_time()
            n = 0
            for name in catalog.names():
                m = materialize_session(catalog, name, out)
                n += m.jsonl_bytes + m.index_bytes
            cpu.append(time.process_time() - c0)
            written.append(n)

        def teardown(catalog: SessionCatalog, out: str) -> None:
            shutil.rmtree(out, ignore_errors=True)

        benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=ROUNDS[compat_scale], warmup_rounds=1)
    finally:
        store.close()
    assert written and all(n == corpus.total_bytes for n in written)
    _info(
        benchmark,
        "compat_materialize",
        "seglog",
        compat_scale,
        corpus,
        corpus.events,
        corpus.total_bytes,
        target_mb_per_s=TARGET_MATERIALIZE_MB_S,
    )
    rate = _finish(benchmark, corpus.events, corpus.total_bytes, cpu)
    if rate is not None:
        benchmark.extra_info["meets_target"] = rate >= TARGET_MATERIALIZE_MB_S


def test_import(benchmark: Any, compat_scale: str, corpus: cc.CorpusStats, compat_tmp: str) -> None:
    counter = [0]
    outcomes: list[list[Any]] = []
    cpu: list[float] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (_new_dir(compat_tmp, "import", counter),), {}

    def run(path: str) -> None:
        c0 = time.process_time()
        with engine.open(path, **IMPORT_OPTIONS) as store:
            outcomes.append(list(import_legacy(SessionCatalog(store), corpus.root)))
        cpu.append(time.process_time() - c0)

    def teardown(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=ROUNDS[compat_scale], warmup_rounds=1)
    for results in outcomes:
        assert [r.status for r in results] == ["imported"] * corpus.sessions
        assert all(r.exact for r in results)
    _info(benchmark, "compat_import", "seglog", compat_scale, corpus, corpus.events, corpus.total_bytes)
    _finish(benchmark, corpus.events, corpus.total_bytes, cpu)


# --------------------------------------------------------------------------- json / orjson
def _loader(impl: str, fallbacks: list[int]) -> Callable[[bytes], Any]:
    if impl == "json":
        return json.loads
    if orjson is None:
        pytest.skip("orjson is not installed")
    oloads, jloads, error = orjson.loads, json.loads, orjson.JSONDecodeError

    def loads(data: bytes) -> Any:
        try:
            return oloads(data)
        except error:  # a lone surrogate (\udXXX): JSON.parse and json take it, orjson does not
            fallbacks[0] += 1
            return jloads(data)

    return loads


@pytest.mark.parametrize("impl", ["json", "orjson"])
def test_parse(benchmark: Any, impl: str, compat_scale: str, corpus: cc.CorpusStats) -> None:
    fallbacks = [0]
    calls = [0]
    loads = _loader(impl, fallbacks)
    paths = _session_paths(corpus)

    def run() -> None:
        calls[0] += 1
        for jsonl, index in paths:
            with open(jsonl, "rb") as f:
                for line in f.read().splitlines():
                    loads(line)
            with open(index, "rb") as f:
                loads(f.read())

    benchmark.pedantic(run, rounds=ROUNDS[compat_scale], warmup_rounds=1)
    _info(
        benchmark,
        "compat_parse",
        impl,
        compat_scale,
        corpus,
        corpus.events,
        corpus.total_bytes,
        fallback_docs=fallbacks[0] // calls[0],
    )
    _finish(benchmark, corpus.events, corpus.total_bytes)


@dataclass
class Parsed:
    impl: str
    sessions: int
    events: int
    input_bytes: int
    docs: list[tuple[list[Any], Any]]  # (lines, index) per session


_PARSED: dict[str, Parsed] = {}


def _parsed(impl: str, compat_scale: str, corpus: cc.CorpusStats) -> Parsed:
    """The parsed files of the first sessions up to the budget (one parser's result kept at a time)."""
    if impl not in _PARSED:
        _PARSED.clear()
        loads = _loader(impl, [0])
        docs, size, events = [], 0, 0
        for jsonl, index in _session_paths(corpus):
            with open(jsonl, "rb") as f:
                data = f.read()
            lines = [loads(line) for line in data.splitlines()]
            with open(index, "rb") as f:
                raw = f.read()
            docs.append((lines, loads(raw)))
            size += len(data) + len(raw)
            events += len(lines) - 1
            if size >= SERIALIZE_BUDGET[compat_scale]:
                break
        _PARSED[impl] = Parsed(impl, len(docs), events, size, docs)
    return _PARSED[impl]


def _dumpers(impl: str, fallbacks: list[int]) -> tuple[Callable[[Any], bytes], Callable[[Any], bytes]]:
    """(compact line, two-space indented document) serializers returning UTF-8 bytes."""

    def json_line(v: Any) -> bytes:
        return (json.dumps(v, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")

    def json_doc(v: Any) -> bytes:
        return json.dumps(v, indent=2, ensure_ascii=False).encode("utf-8", "surrogatepass")

    if impl == "json":
        return json_line, json_doc
    if impl == "jsjson":
        return (lambda v: (stringify(v) + "\n").encode("utf-8")), (lambda v: stringify(v, 2).encode("utf-8"))
    assert orjson is not None
    odumps, nl, ind = orjson.dumps, orjson.OPT_APPEND_NEWLINE, orjson.OPT_INDENT_2

    def line(v: Any) -> bytes:
        try:
            return odumps(v, option=nl)
        except TypeError:  # a lone surrogate or an integer beyond 64 bits
            fallbacks[0] += 1
            return json_line(v)

    def doc(v: Any) -> bytes:
        try:
            return odumps(v, option=ind)
        except TypeError:
            fallbacks[0] += 1
            return json_doc(v)

    return line, doc


@pytest.mark.parametrize("impl", ["json", "orjson", "jsjson"])
def test_serialize(benchmark: Any, impl: str, compat_scale: str, corpus: cc.CorpusStats) -> None:
    parsed = _parsed("orjson" if impl == "orjson" else "json", compat_scale, corpus)
    if impl == "orjson" and orjson is None:
        pytest.skip("orjson is not installed")
    fallbacks = [0]
    line, doc = _dumpers(impl, fallbacks)
    sizes: list[int] = []

    def run() -> None:
        n = 0
        for lines, index in parsed.docs:
            for v in lines:
                n += len(line(v))
            n += len(doc(index))
        sizes.append(n)

    benchmark.pedantic(run, rounds=ROUNDS[compat_scale], warmup_rounds=1)
    out = sizes[-1]
    _info(
        benchmark,
        "compat_serialize",
        impl,
        compat_scale,
        corpus,
        parsed.events,
        out,
        serialized_sessions=parsed.sessions,
        input_mb=round(parsed.input_bytes / MB, 3),
        fallback_docs=fallbacks[0] // len(sizes),
    )
    _finish(benchmark, parsed.events, out)


@pytest.fixture(scope="module", autouse=True)
def _free_parsed() -> Iterator[None]:
    yield
    _PARSED.clear()
