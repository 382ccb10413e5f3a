"""What a value recorded through the session layer becomes when it is stored.

The REPL is JavaScript: its numbers are doubles, and the legacy files hold
integers JavaScript prints in full, such as ``123456789012345680000`` (every
integer-valued double below 1e21 is printed without an exponent). Python's
``json`` reads those as ints beyond 64 bits, which msgpack cannot hold. They
are stored as the double JavaScript had, so that they materialize as
JavaScript printed them. An int that JavaScript would print differently (it
needs more than a double's precision, or is 1e21 or more) cannot have come
from the REPL and is refused with :class:`EncodeError`.

Everything else is stored as msgpack holds it: lists and tuples read back as
lists, str/int/dict subclasses as the plain types, bytes as bytes, floats as
floats (NaN and infinities included); anything else (sets, datetimes, custom
objects) is refused with :class:`EncodeError` when recorded.
"""

from __future__ import annotations

from typing import Any

from ..errors import EncodeError
from ..log import codec

INT64_MIN = -(1 << 63)
UINT64_MAX = (1 << 64) - 1


def js_integer_text(x: float) -> str:
    """How JavaScript prints the integer-valued double ``x`` below 1e21 (shortest
    round-trip digits, then zeros)."""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    frac = frac.rstrip("0")
    digits = (whole + frac).lstrip("0") or "0"
    point = len(whole.lstrip("0") or "0") + (int(exp) if exp else 0)
    text = digits + "0" * max(point - len(digits), 0)
    return ("-" if x < 0 else "") + text


def js_numbers(value: Any) -> Any:
    """``value`` with every int beyond 64 bits replaced by the double JavaScript
    held (see the module docstring); raises :class:`EncodeError` for one that
    JavaScript would print differently."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= UINT64_MAX:
            return value
        try:
            as_double = float(value)
        except OverflowError:
            as_double = float("inf")
        if abs(as_double) >= 1e21:
            raise EncodeError(
                f"integer {value} is beyond 64 bits, and JavaScript prints it with an exponent: it cannot be stored"
            )
        if js_integer_text(as_double) != str(value):
            raise EncodeError(
                f"integer {value} is beyond 64 bits and needs more precision than a double "
                f"(JavaScript would print {js_integer_text(as_double)}): it cannot be stored"
            )
        return as_double
    if isinstance(value, dict):
        return {k: js_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [js_numbers(v) for v in value]
    return value


def storable(value: Any) -> Any:
    """``value`` itself when msgpack holds it as it is, else with its big ints
    made doubles (:func:`js_numbers`). Only values that fail to encode are walked."""
    try:
        codec.pack(value)
    except EncodeError:
        converted = js_numbers(value)
        codec.pack(converted)  # still not storable: say why
        return converted
    return value


def pack_value(value: Any) -> bytes:
    """``codec.pack_value`` of :func:`storable` ``(value)``, walking the value only on failure."""
    try:
        return codec.pack_value(value)
    except EncodeError:
        return codec.pack_value(js_numbers(value))
