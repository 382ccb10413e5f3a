"""Byte-exact ``JSON.stringify`` for the legacy session files.

The legacy writer was JavaScript, so ``.jsonl`` lines are ``JSON.stringify(event)`` and
``.index.json`` files are ``JSON.stringify(index, null, 2)``.  This module reproduces
those bytes from Python value trees (``dict`` with ``str`` keys, ``list``/``tuple``,
``str``, ``int``, ``float``, ``bool``, ``None`` and :data:`UNDEFINED`).

Public API
----------
``UNDEFINED``
    JavaScript ``undefined``.  As a ``dict`` value the property is left out; in a
    ``list``/``tuple`` it prints ``null``; ``stringify(UNDEFINED)`` returns
    ``UNDEFINED`` itself (JS returns ``undefined``); ``dumps_bytes(UNDEFINED)`` raises
    ``ValueError`` because there are no bytes to write.
``js_number(x)``
    ECMAScript ``Number::toString`` of the double ``x`` denotes.  Python ints of any
    size are first rounded to the nearest double (as ``JSON.parse`` would have done),
    ints beyond the double range become ``Infinity``.  ``-0.0`` gives ``"0"``; NaN and
    the infinities give ``"NaN"``/``"Infinity"``/``"-Infinity"`` (``stringify`` prints
    ``null`` for them, like JS).  ``bool`` is not a number: ``"true"``/``"false"``.
``js_string(s)``
    ``JSON.stringify(s)`` (quoted).
``stringify(value, indent=None)``
    ``JSON.stringify(value, null, indent)``: ``indent`` is clamped to 0..10 like JS; 0,
    negative or ``None`` give the compact form.
``dumps_bytes(value, indent=None)``
    ``stringify(...)`` encoded as UTF-8.

Strings are treated as JavaScript does, as UTF-16 code units: a Python ``str`` may hold
surrogate code points (``"\\ud83d\\ude00"``, e.g. from ``json.loads`` of an escaped pair,
or a preview cut in the middle of a pair).  A high surrogate immediately followed by a
low surrogate *is* the supplementary character in JS, so it is written as that
character (UTF-8 ``F0 9F 98 80``), exactly as ``"\\U0001f600"`` would be; every other
surrogate is lone and is written as ``\\udXXX`` (lowercase hex).  So
``stringify(s) == stringify(s.encode("utf-16", "surrogatepass").decode("utf-16"))``
whenever the latter decodes.

Key order: canonical array-index keys (``"0"``, ``"1"``, ... up to 2**32 - 2, no sign,
no leading zero) first in ascending numeric order, then the other keys in insertion
order.  Empty containers print ``{}``/``[]`` also when indenting.

Known differences from JavaScript (none of them can arise from values read with
``json.loads`` from legacy files):

* keys must be ``str``; other key types are not supported (the fast path lets Python's
  ``json`` turn int/float/bool/None keys into strings, the reference path raises
  ``TypeError``);
* two different Python keys that are the same UTF-16 string (``"\\ud83d\\ude00"`` and
  ``"\\U0001f600"``) in one dict are both written; a JS object would hold one property;
* a cyclic value raises ``RecursionError`` (JS: ``TypeError``), and so does nesting
  deeper than about Python's recursion limit (JS allows deeper nesting);
* values of other types raise ``TypeError`` (there is no ``toJSON``/replacer).

How it is fast
--------------
CPython's C encoder (``_json.make_encoder``) writes the compact form.  Its string
encoder is a ``dict`` (``__getitem__`` of a bounded cache keyed by the Python string)
whose values are the JS-exact encodings with the characters ``{}[],:.+-`` *masked* by
control characters (raw control characters never occur in JSON text), so in the
encoder's output those characters are exactly the structural ones and the number
signs.  That makes every fix-up a cheap, exact, C-speed test on the whole text:

* floats: Python's ``repr`` differs from ``Number::toString`` (``100.0``, ``1e-07``,
  ``1e+16``); a float is present iff ``.``, ``+`` or ``e-`` occurs, then only the float
  tokens are rewritten.  NaN/Infinity make the encoder raise (``allow_nan=False``).
* ints beyond 2**53: digits are mapped to ``0`` with ``bytes.translate`` and runs of 16
  are checked for structural neighbours.
* array-index keys: strings that are canonical indices are marked with a control
  character, so ``"\\x0e12":`` shows that a dict needs reordering.
* ``UNDEFINED``: the encoder's ``default`` hook sees it.
Any of NaN/Infinity, big ints, index keys or ``UNDEFINED`` makes one normalizing copy of
the tree (Python speed) that is then encoded again.

The caches are module-level and bounded; they are only used through single ``dict``
operations, so concurrent calls from several threads are safe.

Indentation (``indent > 0``) on Python < 3.13 is done on the masked compact text (where
``{}[],`` are exactly the structure): it is split after every ``}`` and each piece is
formatted once per starting depth, then found in a bounded cache; a long piece is
assembled from its parts split after every ``]``, cached the same way.  Pieces repeat a
lot (the store entries and frames of successive machine states), so the per-piece cost
is mostly one dict lookup.  On 3.13+ the C encoder indents by itself.

Measured with ``python tests/test_jsjson.py`` (Python 3.11, on a shared 2-core machine
with a load average of 2-5, so +-20%), MB/s of output:

* the 10 machine states of ``mock-effects.index.json`` (34 KB each, ``indent=2``):
  about 215 with warm caches, 105-140 when the caches are emptied before the 10 states
  (the first one formats every piece, the others mostly hit), 30-37 when they are
  emptied before every state (the worst case: every piece is formatted afresh);
* the whole ``mock-effects.index.json`` (445 KB, ``indent=2``): 140-215;
* the 40 compact event lines of ``mock-effects.jsonl`` (~100 bytes each): 40-50
  (2-2.5 us per line, mostly fixed per-call cost);
* for comparison, ``json.dumps(state, indent=2)`` (pure Python on 3.11): 33-39.
On Python 3.13 (C indentation): about 210 warm, 165 and 68 in the two cold cases.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Final, final, overload

try:  # CPython's C accelerator for json; absent on some other implementations.
    _cjson: Any = importlib.import_module("_json")
except ImportError:  # pragma: no cover
    _cjson = None
_c_make_encoder: Any = getattr(_cjson, "make_encoder", None)
_c_encode_basestring: Callable[[str], str] | None = getattr(_cjson, "encode_basestring", None)
_HAVE_C: Final = _c_make_encoder is not None and _c_encode_basestring is not None

__all__ = ["UNDEFINED", "JSONValue", "UndefinedType", "dumps_bytes", "js_number", "js_string", "stringify"]


@final
class UndefinedType:
    """Type of :data:`UNDEFINED` (JavaScript ``undefined``); a singleton."""

    __slots__ = ()
    _instance: UndefinedType | None = None

    def __new__(cls) -> UndefinedType:
        inst = cls._instance
        if inst is None:
            inst = object.__new__(cls)
            cls._instance = inst
        return inst

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final[UndefinedType] = UndefinedType()

#: What :func:`stringify` accepts (containers may hold these, and ``UNDEFINED``).
JSONValue = None | bool | int | float | str | list[Any] | tuple[Any, ...] | dict[str, Any]

# --------------------------------------------------------------------------- numbers

_TWO53: Final = 2**53


def _format_double(f: float) -> str:
    """ECMAScript Number::toString(f) for a finite, non-zero double ``f``."""
    if f.is_integer() and -_TWO53 <= f <= _TWO53:
        return str(int(f))
    r = float.__repr__(f)  # shortest round-trip digits, same choice as ECMAScript
    sign = ""
    if r[0] == "-":
        sign = "-"
        r = r[1:]
    mant, _, exp = r.partition("e")
    ipart, _, fpart = mant.partition(".")
    digits = ipart + fpart
    n = len(ipart) + (int(exp) if exp else 0)  # value = 0.digits * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    es = ("e+" if e >= 0 else "e-") + str(abs(e))
    if k == 1:
        return sign + digits + es
    return sign + digits[0] + "." + digits[1:] + es


def js_number(x: int | float) -> str:
    """ECMAScript ``Number::toString`` of the double value of ``x`` (see module doc)."""
    if x is True:
        return "true"
    if x is False:
        return "false"
    if isinstance(x, int):
        if -_TWO53 <= x <= _TWO53:
            return int.__repr__(x)
        try:
            f = float(x)  # correctly rounded, like JSON.parse of the digits
        except OverflowError:
            return "Infinity" if x > 0 else "-Infinity"
    else:
        f = float(x)
    if f != f:
        return "NaN"
    if f == math.inf:
        return "Infinity"
    if f == -math.inf:
        return "-Infinity"
    if f == 0.0:
        return "0"
    return _format_double(f)


# --------------------------------------------------------------------------- strings

_SURROGATES: Final = re.compile(r"[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _surrogate_repl(m: re.Match[str]) -> str:
    s = m.group()
    if len(s) == 2:
        return chr(0x10000 + ((ord(s[0]) - 0xD800) << 10) + (ord(s[1]) - 0xDC00))
    return f"\\u{ord(s):04x}"


_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PY_ESCAPE: Final = re.compile('[\\x00-\\x1f"\\\\]')


def _py_encode_basestring(s: str) -> str:
    """Pure-Python ``json.encoder.encode_basestring`` (ensure_ascii=False)."""
    return '"' + _PY_ESCAPE.sub(lambda m: _ESCAPES.get(m.group()) or f"\\u{ord(m.group()):04x}", s) + '"'


_encode_basestring: Final[Callable[[str], str]] = _c_encode_basestring or _py_encode_basestring


def js_string(s: str) -> str:
    """``JSON.stringify(s)``: the quoted, escaped string (see module doc on surrogates)."""
    e = _encode_basestring(s)
    if not e.isascii() and _SURROGATES.search(e) is not None:
        e = _SURROGATES.sub(_surrogate_repl, e)
    return e


# Masking of string contents: these characters, inside encoded strings, are replaced by
# control characters (which never occur raw in JSON text) so that in the encoder's
# output they only occur as JSON structure / number syntax.
_MASKED: Final = "{}[],:.+-"
_PLACEHOLDERS: Final = "\x01\x02\x03\x04\x05\x06\x07\x08\x0b"
_MASK_TABLE: Final = str.maketrans(_MASKED, _PLACEHOLDERS)
_MASK_NEEDED: Final = re.compile(r"[{}\[\],:.+\-]")
_INDEX_MARK: Final = "\x0e"  # prefixed to strings that are canonical array indices
_INDEX_RE: Final = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_INDEX: Final = 2**32 - 2


def _is_index(k: str) -> bool:
    return _INDEX_RE.fullmatch(k) is not None and int(k) <= _MAX_INDEX


_STR_CACHE_MAX: Final = 1 << 15
_STR_CACHE_MAX_LEN: Final = 256


class _StrCache(dict[str, str]):
    """str -> masked JS encoding; a C-speed lookup for the C encoder, bounded."""

    __slots__ = ()

    def __missing__(self, s: str) -> str:
        e = js_string(s)
        if _MASK_NEEDED.search(e) is not None:
            e = e.translate(_MASK_TABLE)
        if _is_index(s):
            e = '"' + _INDEX_MARK + e[1:]
        if len(s) <= _STR_CACHE_MAX_LEN:
            if len(self) >= _STR_CACHE_MAX:
                self.clear()
            self[s] = e
        return e


_STR_CACHE: Final = _StrCache()


_UNMASK_PAIRS: Final = tuple(zip(_PLACEHOLDERS, _MASKED, strict=True))


_UNMASK_NOT_STRUCTURE: Final = _UNMASK_PAIRS[5:]  # ":.+-": the indenter needs no mask on them
_UNMASK_STRUCTURE: Final = _UNMASK_PAIRS[:5]  # "{}[],"


def _unmask(m: str, pairs: tuple[tuple[str, str], ...] = _UNMASK_PAIRS) -> str:
    for ph, ch in pairs:
        if ph in m:
            m = m.replace(ph, ch)
    return m


# --------------------------------------------------------------------------- fix-ups


class _NeedsNormalize(Exception):
    """Raised inside the C encoder's ``default`` hook when it meets ``UNDEFINED``."""


def _default(o: object) -> object:
    if o is UNDEFINED:
        raise _NeedsNormalize
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _normalize(v: Any) -> Any:
    """Copy of ``v`` that the C encoder prints the JS way, except float formatting:
    UNDEFINED dropped from dicts and ``None`` in lists, array-index keys first,
    NaN/Infinity -> None, ints beyond 2**53 -> the double JS would hold."""
    if isinstance(v, str) or v is None or v is True or v is False:
        return v
    if isinstance(v, int):
        if -_TWO53 <= v <= _TWO53:
            return v
        try:
            return float(v)
        except OverflowError:
            return None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        items = [(k, _normalize(x)) for k, x in v.items() if x is not UNDEFINED]
        index_keys = [k for k, _ in items if isinstance(k, str) and _is_index(k)]
        if not index_keys:
            return dict(items)
        index_keys.sort(key=int)
        out = dict.fromkeys(index_keys)
        out.update(items)  # existing keys keep their (sorted) position
        return out
    if isinstance(v, (list, tuple)):
        return [None if x is UNDEFINED else _normalize(x) for x in v]
    return v  # not JSON: the encoder's default hook raises TypeError


_DIGITS_TO_ZERO: Final = bytes.maketrans(b"0123456789", b"0000000000")
_ZEROS16: Final = b"0" * 16
_BEFORE_NUMBER: Final = frozenset(b":,[ \n")
_AFTER_NUMBER: Final = frozenset(b",]}\n")


def _has_big_int(m: str) -> bool:
    """Is there an integer token beyond +-2**53 in masked text?  Such a token has 16 or
    more digits: runs of 16 digits are found at C speed, then checked one by one."""
    if len(m) < 16:
        return False
    try:
        b = m.encode("latin-1")  # a plain copy when it works; ASCII bytes are the same
    except UnicodeEncodeError:
        b = m.encode("utf-8", "surrogatepass")
    t = b.translate(_DIGITS_TO_ZERO)
    i = t.find(_ZEROS16)  # the leftmost such run: t[i - 1] is not a digit
    n = len(t)
    while i >= 0:
        e = i + 16
        while e < n and t[e] == 48:
            e += 1
        s = i - 1 if i > 0 and b[i - 1] == 45 else i  # '-' is masked inside strings
        if (
            (s == 0 or b[s - 1] in _BEFORE_NUMBER)  # a whole token, not inside a string
            and (e == n or t[e] in _AFTER_NUMBER)
            and (e - i > 16 or int(b[i:e]) > _TWO53)
        ):
            return True
        i = t.find(_ZEROS16, e)
    return False


_NUMBER_TAIL: Final = re.compile(r"[0-9.e+\-]*")
_DIGITS_DOT: Final = frozenset("0123456789.")


def _fix_floats(m: str) -> str:
    """Rewrite Python float reprs in masked text (where ``.``, ``+`` and ``-`` only occur
    in numbers) as ECMAScript Number::toString."""
    anchors: list[int] = []  # a "." or the "e" of an exponent, in every float token
    find = m.find
    for ch in ".+-":
        i = find(ch)
        while i >= 0:
            if ch == ".":
                anchors.append(i)
            elif i > 0 and m[i - 1] == "e":  # an exponent sign, not a minus sign
                anchors.append(i - 1)
            i = find(ch, i + 1)
    anchors.sort()
    out: list[str] = []
    pos = 0
    for i in anchors:
        if i < pos:
            continue  # second anchor of an already rewritten token (1.5e+16)
        s = i
        while s > 0 and m[s - 1] in _DIGITS_DOT:
            s -= 1
        if s > 0 and m[s - 1] == "-":
            s -= 1
        tail = _NUMBER_TAIL.match(m, i)
        e = tail.end() if tail is not None else i + 1
        out.append(m[pos:s])
        out.append(_format_double(float(m[s:e])))
        pos = e
    out.append(m[pos:])
    return "".join(out)


_KEY_MARK: Final = re.compile(_INDEX_MARK + r'[0-9]*":')

_Encoder = Callable[[object, int], Iterable[str]]


def _encode_masked(value: object, enc: _Encoder) -> str:
    """C-encode ``value`` with JS semantics; result still masked (see :func:`_unmask`)."""
    normalized = False
    while True:
        try:
            m = "".join(enc(value, 0))
        except (_NeedsNormalize, ValueError):
            # UNDEFINED, NaN/Infinity (allow_nan=False) or an int too long for repr
            if normalized:
                raise
            value, normalized = _normalize(value), True
            continue
        if _INDEX_MARK in m:
            if not normalized and _KEY_MARK.search(m) is not None:
                value, normalized = _normalize(value), True
                continue
            m = m.replace(_INDEX_MARK, "")
        if not normalized and _has_big_int(m):
            value, normalized = _normalize(value), True
            continue
        if "." in m or "+" in m or ("-" in m and "e-" in m):
            m = _fix_floats(m)
        return m


# --------------------------------------------------------------------------- indenting

_BRACKETS: Final = re.compile(r"([\[\]{}])")
_PIECE_CACHE_BUDGET: Final = 1 << 23  # characters held by one indenter's caches
_PIECE_MAX_LEN: Final = 1 << 16
_SUBSPLIT_LEN: Final = 512


class _Indenter:
    """Turns masked compact text (``": "`` key separator) into ``JSON.stringify``'s
    indented layout for one gap string.

    The text is split at every ``}``; a piece is formatted once per starting depth and
    then found in a cache (``brace``).  A long piece (a big list of lists) rarely repeats
    as a whole, but its parts split at every ``]`` do (``bracket``)."""

    __slots__ = ("brace", "bracket", "budget", "gap", "newlines", "separators")

    def __init__(self, gap: str) -> None:
        self.gap = gap
        self.brace = _DepthCaches(self, "}")
        self.bracket = _DepthCaches(self, "]")
        self.budget = _PIECE_CACHE_BUDGET
        self.newlines: list[str] = []  # "\n" + gap * depth
        self.separators: list[str] = []  # ",\n" + gap * depth
        self._grow(32)

    def _grow(self, size: int) -> tuple[list[str], list[str]]:
        # new lists, swapped in whole: a concurrent reader keeps a consistent pair
        gap = self.gap
        nl = ["\n" + gap * d for d in range(size)]
        sep = [",\n" + gap * d for d in range(size)]
        self.newlines, self.separators = nl, sep
        return nl, sep

    def format_text(self, text: str, d: int) -> tuple[str, int]:
        """Format masked compact text starting at depth ``d``; also the depth after it."""
        parts = _BRACKETS.split(text)  # text, bracket, text, ..., text
        n = len(parts)
        nl = self.newlines
        sep = self.separators
        if d + n >= len(nl) or d + n >= len(sep):
            nl, sep = self._grow(max(d + n + 1, 2 * len(nl)))
        out = [parts[0].replace(",", sep[d])]
        i = 1
        while i < n:
            c = parts[i]
            if c == "{" or c == "[":
                if not parts[i + 1] and i + 2 < n and parts[i + 2] in "]}":
                    out.append(c + parts[i + 2])  # empty: "{}" / "[]"
                    i += 2
                else:
                    d += 1
                    out.append(c + nl[d])
            else:
                d -= 1
                out.append(nl[d] + c)
            out.append(parts[i + 1].replace(",", sep[d]))
            i += 2
        return "".join(out), d

    def reset(self) -> None:
        self.brace.clear()
        self.bracket.clear()
        self.budget = _PIECE_CACHE_BUDGET

    def indent(self, m: str) -> str:
        pieces = m.split("}")  # each but the last was followed by "}"
        last = pieces.pop()
        caches = self.brace
        d = 0
        out: list[str] = []
        app = out.append
        for p in pieces:
            t, d = caches[d][p]
            app(t)
        if last:
            app(self.format_text(last, d)[0])
        return "".join(out)


class _PieceCache(dict[str, tuple[str, int]]):
    """piece -> (piece + closer formatted, depth after it), for one starting depth."""

    __slots__ = ("closer", "depth", "owner")

    def __init__(self, owner: _Indenter, depth: int, closer: str) -> None:
        super().__init__()
        self.owner = owner
        self.depth = depth
        self.closer = closer

    def __missing__(self, p: str) -> tuple[str, int]:
        owner = self.owner
        if len(p) > _SUBSPLIT_LEN and self.closer == "}" and "]" in p:
            subs = p.split("]")
            last = subs.pop()
            d = self.depth
            out: list[str] = []
            bracket = owner.bracket
            for sub in subs:
                t, d = bracket[d][sub]
                out.append(t)
            t, d = owner.brace[d][last]  # shorter than p: no recursion into p
            out.append(t)
            r = ("".join(out), d)
        else:
            r = owner.format_text(p + self.closer, self.depth)
        if len(p) <= _PIECE_MAX_LEN:
            cost = 2 * len(p) + len(r[0]) + 200  # + objects' overhead, roughly
            if owner.budget < cost:
                owner.reset()
            owner.budget -= cost
            self[p] = r
        return r


class _DepthCaches(dict[int, _PieceCache]):
    __slots__ = ("closer", "owner")

    def __init__(self, owner: _Indenter, closer: str) -> None:
        super().__init__()
        self.owner = owner
        self.closer = closer

    def __missing__(self, d: int) -> _PieceCache:
        c = self[d] = _PieceCache(self.owner, d, self.closer)
        return c


# --------------------------------------------------------------------------- encoders

_C_INDENT: bool = sys.version_info >= (3, 13)  # the C encoder indents by itself there
_COMPACT: _Encoder | None = None
_INDENT_BASE: _Encoder | None = None
_C_INDENTED: dict[str, _Encoder] = {}
_INDENTERS: dict[str, _Indenter] = {}
if _HAVE_C:
    _COMPACT = _c_make_encoder(None, _default, _STR_CACHE.__getitem__, None, ":", ",", False, False, False)
    _INDENT_BASE = _c_make_encoder(None, _default, _STR_CACHE.__getitem__, None, ": ", ",", False, False, False)


def _gap(indent: int | None) -> str:
    if indent is None or indent < 1:
        return ""
    return " " * min(10, indent)


def _stringify_fast(value: object, gap: str) -> str:
    assert _COMPACT is not None and _INDENT_BASE is not None
    if not gap:
        m = _encode_masked(value, _COMPACT)
        # placeholders are control characters: a printable text has none
        return m if len(m) <= 4096 and m.isprintable() else _unmask(m)
    if _C_INDENT:
        enc = _C_INDENTED.get(gap)
        if enc is None:
            enc = _C_INDENTED[gap] = _c_make_encoder(
                None, _default, _STR_CACHE.__getitem__, gap, ": ", ",", False, False, False
            )
        return _unmask(_encode_masked(value, enc))
    ind = _INDENTERS.get(gap)
    if ind is None:
        ind = _INDENTERS[gap] = _Indenter(gap)
    m = _unmask(_encode_masked(value, _INDENT_BASE), _UNMASK_NOT_STRUCTURE)  # on the shorter text
    return _unmask(ind.indent(m), _UNMASK_STRUCTURE)


# --------------------------------------------------------------------------- reference


def _ordered_items(d: dict[str, Any]) -> list[tuple[str, Any]]:
    index_keys = sorted((k for k in d if isinstance(k, str) and _is_index(k)), key=int)
    if not index_keys:
        return list(d.items())
    idx = set(index_keys)
    return [(k, d[k]) for k in index_keys] + [(k, v) for k, v in d.items() if k not in idx]


def _reference(value: Any, gap: str, cur: str) -> str | UndefinedType:
    """Straightforward recursive JSON.stringify (SerializeJSONProperty); slow."""
    if isinstance(value, UndefinedType):
        return value
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return js_string(value)
    if isinstance(value, (int, float)):
        r = js_number(value)
        return "null" if r in ("NaN", "Infinity", "-Infinity") else r
    inner = cur + gap
    if isinstance(value, dict):
        parts = []
        for k, v in _ordered_items(value):
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            s = _reference(v, gap, inner)
            if s is not UNDEFINED:
                assert isinstance(s, str)
                parts.append(js_string(k) + (": " if gap else ":") + s)
        if not parts:
            return "{}"
        if not gap:
            return "{" + ",".join(parts) + "}"
        return "{\n" + inner + (",\n" + inner).join(parts) + "\n" + cur + "}"
    if isinstance(value, (list, tuple)):
        items = []
        for v in value:
            s = _reference(v, gap, inner)
            items.append("null" if isinstance(s, UndefinedType) else s)
        if not items:
            return "[]"
        if not gap:
            return "[" + ",".join(items) + "]"
        return "[\n" + inner + (",\n" + inner).join(items) + "\n" + cur + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- public


@overload
def stringify(value: UndefinedType, indent: int | None = None) -> UndefinedType: ...
@overload
def stringify(value: JSONValue, indent: int | None = None) -> str: ...
def stringify(value: JSONValue | UndefinedType, indent: int | None = None) -> str | UndefinedType:
    """``JSON.stringify(value, null, indent)``, byte for byte (see module doc)."""
    if value is UNDEFINED:
        return UNDEFINED
    gap = _gap(indent)
    if not _HAVE_C:  # pragma: no cover
        return _reference(value, gap, "")
    return _stringify_fast(value, gap)


def dumps_bytes(value: JSONValue | UndefinedType, indent: int | None = None) -> bytes:
    """``stringify(value, indent)`` as UTF-8 bytes; ``ValueError`` for ``UNDEFINED``."""
    if value is UNDEFINED:
        raise ValueError("JSON.stringify(undefined) is undefined: there are no bytes to write")
    s = _reference(value, _gap(indent), "") if not _HAVE_C else _stringify_fast(value, _gap(indent))
    assert isinstance(s, str)
    return s.encode("utf-8", "surrogatepass")
