"""Values sent to node, exactly: numbers as text (-0.0, NaN, big ints), strings as
UTF-16 code units (lone surrogates survive), objects as key/value lists (key order
survives). The node side rebuilds them before calling JSON.stringify."""

from __future__ import annotations

import math
from array import array
from typing import Any


def units(s: str) -> list[int]:
    """A str as UTF-16 code units, as JavaScript sees it."""
    return list(array("H", s.encode("utf-16-le", "surrogatepass")))


def wire(v: Any, undefined: object) -> Any:
    """``v`` in the wire format; ``undefined`` is the sentinel standing for JS undefined."""
    if v is undefined:
        return {"u": 1}
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return {"n": str(v)}
    if isinstance(v, float):
        if math.isnan(v):
            return {"n": "NaN"}
        if math.isinf(v):
            return {"n": "Infinity" if v > 0 else "-Infinity"}
        return {"n": repr(v)}
    if isinstance(v, str):
        return {"s": units(v)}
    if isinstance(v, (list, tuple)):
        return {"a": [wire(x, undefined) for x in v]}
    if isinstance(v, dict):
        return {"o": [[units(k), wire(x, undefined)] for k, x in v.items()]}
    raise TypeError(f"no wire form for {v!r}")
