"""compat.jsjson: byte-exact JSON.stringify.

* the legacy sample files, byte for byte;
* the spec's examples;
* Hypothesis against node's own ``JSON.stringify`` / ``String(number)`` (one ``node``
  process for the module, fed one request per line by ``tests/js_oracle.js``; skipped
  when ``node`` is not installed);
* the C fast path against the plain recursive reference implementation.

``python tests/test_jsjson.py`` prints the throughput figures quoted in the module
docstring of ``compat/jsjson.py``.
"""

from __future__ import annotations

import glob
import json
import math
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import node_wire
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import SAMPLES

from compat import jsjson
from compat.jsjson import UNDEFINED, dumps_bytes, js_number, js_string, stringify

ORACLE = Path(__file__).with_name("js_oracle.js")
NODE = shutil.which("node")


def hyp(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --------------------------------------------------------------------------- samples

SAMPLE_FILES = sorted(glob.glob(str(SAMPLES / "*" / "sessions" / "*.json*")))


@pytest.mark.skipif(not SAMPLE_FILES, reason=f"no legacy samples under {SAMPLES}")
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: Path(p).name)
def test_legacy_sample_byte_for_byte(path: str) -> None:
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8")
    if path.endswith(".jsonl"):
        assert text.endswith("\n")
        for line in text[:-1].split("\n"):
            assert stringify(json.loads(line)) == line
        out = b"".join(dumps_bytes(json.loads(line)) + b"\n" for line in text[:-1].split("\n"))
        assert out == raw
    else:
        assert path.endswith(".index.json")
        assert stringify(json.loads(text), 2) == text
        assert dumps_bytes(json.loads(text), 2) == raw


# --------------------------------------------------------------------------- spec examples


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (123456789012345678901, "123456789012345680000"),
        (123456789012345680000, "123456789012345680000"),
        (2**70, "1.1805916207174113e+21"),
        (10**16, "10000000000000000"),
        (1e16, "10000000000000000"),
        (1e-7, "1e-7"),
        (3.5e-7, "3.5e-7"),
        (1e21, "1e+21"),
        (10**21, "1e+21"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.000001, "0.000001"),
        (0.30000000000000004, "0.30000000000000004"),
        (-0.0, "0"),
        (0, "0"),
        (100.0, "100"),
        (-1.5, "-1.5"),
        (5e-324, "5e-324"),
        (2**53 + 1, "9007199254740992"),
        (-(2**60), "-1152921504606847000"),
        (1e20, "100000000000000000000"),
        (123.456e-10, "1.23456e-8"),
    ],
)
def test_number_examples(x: int | float, expected: str) -> None:
    assert js_number(x) == expected
    assert stringify(x) == expected
    assert stringify([x, {"k": x}]) == f'[{expected},{{"k":{expected}}}]'
    assert stringify({"k": [x]}, 2) == '{\n  "k": [\n    ' + expected + "\n  ]\n}"


def test_non_finite() -> None:
    assert js_number(math.nan) == "NaN"
    assert js_number(math.inf) == "Infinity"
    assert js_number(-math.inf) == "-Infinity"
    assert js_number(10**400) == "Infinity"
    assert js_number(-(10**400)) == "-Infinity"
    for x in (math.nan, math.inf, -math.inf, 10**400, -(10**5000)):
        assert stringify(x) == "null"
        assert stringify([x]) == "[null]"
        assert stringify({"a": x, "b": 1}) == '{"a":null,"b":1}'


def test_bools_are_not_numbers() -> None:
    assert js_number(True) == "true"
    assert js_number(False) == "false"
    assert stringify([True, False, None, 1]) == "[true,false,null,1]"


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("", '""'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x7f\u2028\u2029é€", '"\x7f\u2028\u2029é€"'),
        ("\ud83d", '"\\ud83d"'),
        ("a\udc00", '"a\\udc00"'),
        ("\udc00\ud800", '"\\udc00\\ud800"'),
        ("\ud83d\ude00", '"\U0001f600"'),
        ("\U0001f600", '"\U0001f600"'),
        ("\ud83d\ud83d\ude00", '"\\ud83d\U0001f600"'),
        ("\ud83d\U0001f600", '"\\ud83d\U0001f600"'),
        ("{}[],:.+-e", '"{}[],:.+-e"'),
        ("\x01\x0e\x11\x1a\x1b", '"\\u0001\\u000e\\u0011\\u001a\\u001b"'),
    ],
)
def test_string_examples(s: str, expected: str) -> None:
    assert js_string(s) == expected
    assert stringify(s) == expected
    assert stringify({s: [s]}) == "{" + expected + ":[" + expected + "]}"
    assert stringify({s: [s]}, 1) == "{\n " + expected + ": [\n  " + expected + "\n ]\n}"


def test_key_order() -> None:
    d = {"b": 1, "2": 2, "a": 3, "1": 4, "4294967295": 5, "4294967294": 6, "01": 7, "-1": 8, "0": 9, "1.0": 10}
    assert stringify(d) == ('{"0":9,"1":4,"2":2,"4294967294":6,"b":1,"a":3,"4294967295":5,"01":7,"-1":8,"1.0":10}')
    assert stringify({"10": {"9": 1, "x": 2}}, 2) == '{\n  "10": {\n    "9": 1,\n    "x": 2\n  }\n}'
    # an index-like string as a value does not reorder anything
    assert stringify({"b": "1", "a": ["2"]}) == '{"b":"1","a":["2"]}'


def test_undefined() -> None:
    assert repr(UNDEFINED) == "UNDEFINED"
    assert stringify(UNDEFINED) is UNDEFINED
    assert stringify(UNDEFINED, 2) is UNDEFINED
    assert stringify({"a": UNDEFINED, "b": [UNDEFINED, 1], "c": (UNDEFINED,)}) == '{"b":[null,1],"c":[null]}'
    assert stringify({"a": UNDEFINED}, 2) == "{}"
    assert stringify([{"a": UNDEFINED}], 2) == "[\n  {}\n]"
    with pytest.raises(ValueError):
        dumps_bytes(UNDEFINED)


def test_layout() -> None:
    v = {"a": [], "b": {}, "c": [[], {}], "d": [1, {"e": None}], "f": ()}
    assert stringify(v) == '{"a":[],"b":{},"c":[[],{}],"d":[1,{"e":null}],"f":[]}'
    assert stringify(v, 2) == json.dumps(v, indent=2)
    assert stringify(v, 20) == json.dumps(v, indent=10)  # JS clamps to 10
    assert stringify(v, 0) == stringify(v, -3) == stringify(v, None) == stringify(v)
    assert stringify([], 2) == "[]"
    assert stringify({}, 4) == "{}"
    assert stringify("x", 2) == '"x"'
    assert stringify(1.5, 2) == "1.5"


def test_deep_nesting_and_threads() -> None:
    deep: Any = [1, {"a": [2, {}], "b": []}]
    for i in range(60):
        deep = [deep, {"k": i}] if i % 2 else {"x": deep, "y": [i]}
    for indent in (1, 2, 7):
        assert stringify(deep, indent) == json.dumps(deep, indent=indent)
    index = _sample_index()
    values = [deep, index, *index["states"].values()]
    expected = [(v, i, stringify(v, i)) for v in values for i in (None, 2, 3)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                jsjson._STR_CACHE.clear()
                for ind in list(jsjson._INDENTERS.values()):
                    ind.reset()
                for v, i, text in expected:
                    assert stringify(v, i) == text
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_unsupported_values() -> None:
    for bad in ({1, 2}, object(), b"x", {"a": [{"b": 1j}]}):
        with pytest.raises(TypeError):
            stringify(bad)  # type: ignore[call-overload]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(RecursionError):
        stringify(cyclic)


def test_dumps_bytes() -> None:
    v = {"s": "é\U0001f600\ud83d", "n": [1e-7]}
    assert dumps_bytes(v) == '{"s":"é\U0001f600\\ud83d","n":[1e-7]}'.encode()
    assert dumps_bytes(v, 2) == stringify(v, 2).encode("utf-8")


def test_small_caches_stay_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache resets in the middle of a value change nothing."""
    monkeypatch.setattr(jsjson, "_STR_CACHE_MAX", 3)
    index = _sample_index()
    ind = jsjson._Indenter("  ")
    expected = json.dumps(index, indent=2, ensure_ascii=False)
    for budget in (1, 2, 7):
        ind.reset()
        ind.budget = budget
        m = jsjson._encode_masked(index, jsjson._INDENT_BASE)  # type: ignore[arg-type]
        assert jsjson._unmask(ind.indent(m)) == expected
    assert stringify(index, 2) == expected


def test_fix_ups_in_one_value() -> None:
    """Every fix-up at once, inside strings as decoys too."""
    v = {
        "s": "1.5e+16 -2 12345678901234567 NaN : , [ ] { } \x0e1",
        "7": [1e16, -1e-7, 2**64, -(2**64), 12345678901234567, 1234567890123456, 0.1, 1e300, 5e-324],
        "3": {"2": UNDEFINED, "1": math.nan, "0": [UNDEFINED]},
        "x\ud800": "\ud83d\ude00",
    }
    assert stringify(v) == (
        '{"3":{"0":[null],"1":null},"7":[10000000000000000,-1e-7,18446744073709552000,-18446744073709552000,'
        "12345678901234568,1234567890123456,0.1,1e+300,5e-324],"
        '"s":"1.5e+16 -2 12345678901234567 NaN : , [ ] { } \\u000e1","x\\ud800":"\U0001f600"}'
    )
    assert stringify(v, 3) == jsjson._reference(v, "   ", "")


def test_big_int_detection() -> None:
    """16-digit ints within 2**53 need no normalizing pass; digits inside strings never."""
    assert not jsjson._has_big_int('[1234567890123456,-9007199254740992,"12345678901234567"]')
    assert not jsjson._has_big_int('{"a": "x 12345678901234567"}')
    assert jsjson._has_big_int("[9007199254740993]")
    assert jsjson._has_big_int('{"a": -12345678901234567}')
    assert jsjson._has_big_int("12345678901234567")


# --------------------------------------------------------------------------- strategies


def _bits_to_float(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", b))[0])


_EDGE_FLOATS = [
    0.0,
    -0.0,
    1e21,
    1e-6,
    1e-7,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    2.0**53,
    2.0**53 + 2,
    1e16,
    1e15,
    0.1,
    123456789.123456789,
    9.999999999999999e20,
]
_EDGE_FLOATS += [math.nextafter(x, d) for x in _EDGE_FLOATS for d in (math.inf, -math.inf)]
_EDGE_FLOATS += [-x for x in _EDGE_FLOATS]

doubles = st.one_of(
    st.floats(),
    st.integers(0, 2**64 - 1).map(_bits_to_float),
    st.sampled_from(_EDGE_FLOATS),
    st.integers(-(10**25), 10**25).map(lambda i: i / 10 ** (abs(i) % 30)),
)
_BIG = 2**1024
integers = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.integers(-(2**1030), 2**1030),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, 2**64, 10**21 - 1, 10**21, _BIG - 2**970, _BIG - 2**970 - 1]),
)
numbers = st.one_of(doubles, integers)

_SPECIAL_CHARS = (
    [chr(c) for c in range(0x20)]
    + list('"\\/\x7f\u2028\u2029\ufeff{}[],:.+-e0123456789 ')
    + ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00", "\U0001f600", "é", "€", "\U0010ffff"]
)
chars = st.one_of(
    st.sampled_from(_SPECIAL_CHARS),
    st.characters(codec=None, exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
)
# surrogate pairs written as two code points, in either order, next to other surrogates
_PAIRS = ["\ud83d\ude00", "\ud800\udc00", "\udbff\udfff", "\ude00\ud83d", "\ud83d\ud83d\ude00\ude00"]
strings = st.lists(st.one_of(chars, st.sampled_from(_PAIRS)), max_size=10).map("".join)
keys = st.one_of(
    strings,
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "10",
            "01",
            "00",
            "-0",
            "-1",
            "1.0",
            "1e3",
            " 1",
            "4294967294",
            "4294967295",
            "4294967296",
            "99999999999",
            "__proto__",
            "length",
            "toJSON",
        ]
    ),
    st.integers(0, 2**32 + 5).map(str),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)


def _utf16_unique(d: dict[str, Any]) -> bool:
    # "\ud83d\ude00" and "\U0001f600" are different Python keys but the same JS key
    return len({k.encode("utf-16-le", "surrogatepass") for k in d}) == len(d)


values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(st.one_of(children, st.just(UNDEFINED)), max_size=5),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, st.one_of(children, st.just(UNDEFINED)), max_size=6).filter(_utf16_unique),
    ),
    max_leaves=25,
)
indents = st.one_of(st.none(), st.integers(-1, 12), st.just(2))


# --------------------------------------------------------------------------- node oracle


def _wire(v: Any) -> Any:
    return node_wire.wire(v, UNDEFINED)


class Oracle:
    def __init__(self) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(ORACLE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def ask(self, op: str, indent: int | None, value: Any) -> str | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([op, indent, _wire(value)]).encode("ascii") + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "node oracle died"
        out = json.loads(line.decode("utf-8"))
        assert out is None or isinstance(out, str)
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    if NODE is None:
        pytest.skip("node is not installed: no JSON.stringify oracle")
    o = Oracle()
    yield o
    o.close()


def test_oracle_sanity(oracle: Oracle) -> None:
    assert oracle.ask("S", None, {"a": [1.5, "\ud83d", UNDEFINED], "b": UNDEFINED}) == '{"a":[1.5,"\\ud83d",null]}'
    assert oracle.ask("S", 2, UNDEFINED) is None
    assert oracle.ask("N", None, 2**70) == "1.1805916207174113e+21"


@hyp(1500)
@given(numbers)
def test_js_number_vs_node(oracle: Oracle, x: int | float) -> None:
    assert js_number(x) == oracle.ask("N", None, x)


@hyp(600)
@given(strings)
def test_js_string_vs_node(oracle: Oracle, s: str) -> None:
    assert js_string(s) == oracle.ask("S", None, s)


@hyp(700)
@given(values, indents)
def test_stringify_vs_node(oracle: Oracle, v: Any, indent: int | None) -> None:
    expected = oracle.ask("S", indent, v)
    got = stringify(v, indent)
    if expected is None:
        assert got is UNDEFINED
    else:
        assert got == expected


# --------------------------------------------------------------------------- fast vs reference


@hyp(700)
@given(values, indents)
def test_fast_path_matches_reference(v: Any, indent: int | None) -> None:
    got = stringify(v, indent)
    expected = jsjson._reference(v, jsjson._gap(indent), "")
    if expected is UNDEFINED:
        assert got is UNDEFINED
    else:
        assert got == expected
        assert dumps_bytes(v, indent) == got.encode("utf-8")


@pytest.mark.skipif(not jsjson._C_INDENT, reason="the C encoder indents only on Python >= 3.13")
def test_python_indenter_on_313(monkeypatch: pytest.MonkeyPatch) -> None:
    index = _sample_index()
    expected = stringify(index, 2)
    monkeypatch.setattr(jsjson, "_C_INDENT", False)
    assert stringify(index, 2) == expected


def _sample_index() -> Any:
    path = SAMPLES / "mock-effects" / "sessions" / "mock-effects.index.json"
    if not path.exists():
        pytest.skip(f"no legacy samples under {SAMPLES}")
    return json.loads(path.read_text("utf-8"))


# --------------------------------------------------------------------------- benchmark


def _bench() -> None:  # pragma: no cover - manual: python tests/test_jsjson.py
    import timeit

    def rate(label: str, fn: Any, out_bytes: int, n: int) -> None:
        t = min(timeit.repeat(fn, number=n, repeat=7)) / n
        sys.stdout.write(f"{label:48s} {out_bytes / t / 1e6:7.1f} MB/s  ({t * 1e6:9.1f} us/call)\n")

    base = SAMPLES / "mock-effects" / "sessions" / "mock-effects"
    index_text = (base.parent / "mock-effects.index.json").read_text("utf-8")
    index = json.loads(index_text)
    states = list(index["states"].values())
    states_bytes = sum(len(dumps_bytes(s, 2)) for s in states)
    events = [json.loads(line) for line in (base.parent / "mock-effects.jsonl").read_text("utf-8").splitlines()]
    events_bytes = sum(len(dumps_bytes(e)) + 1 for e in events)

    def cold_states() -> None:
        jsjson._STR_CACHE.clear()
        for ind in jsjson._INDENTERS.values():
            ind.reset()
        for s in states:
            dumps_bytes(s, 2)

    def each_cold() -> None:
        for s in states:
            jsjson._STR_CACHE.clear()
            for ind in jsjson._INDENTERS.values():
                ind.reset()
            dumps_bytes(s, 2)

    rate("states, indent=2, caches cleared before each", each_cold, states_bytes, 5)
    rate("states, indent=2, caches cleared before all", cold_states, states_bytes, 5)
    rate("states, indent=2 (dumps_bytes)", lambda: [dumps_bytes(s, 2) for s in states], states_bytes, 20)
    rate("states, indent=2 (stringify)", lambda: [stringify(s, 2) for s in states], states_bytes, 20)
    rate("whole index, indent=2", lambda: dumps_bytes(index, 2), len(index_text.encode()), 20)
    rate("json.dumps(indent=2) for comparison", lambda: [json.dumps(s, indent=2) for s in states], states_bytes, 5)
    rate("events, compact lines", lambda: [dumps_bytes(e) + b"\n" for e in events], events_bytes, 200)
    rate("states, compact", lambda: [dumps_bytes(s) for s in states], sum(len(dumps_bytes(s)) for s in states), 20)


if __name__ == "__main__":  # pragma: no cover
    _bench()
