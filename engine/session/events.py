"""Compact storage of REPL events in the session layer's streams.

An event whose keys are exactly one of the legacy layouts (see
``session_schema.EVENT_KEYS``; each optional key present or not) is stored as
a positional array ``[layout, ts, values after "type" ...]``: no key names,
no ``seq`` (it is the stream position plus the session's base), no ``type``
(the layout says it). Anything else is stored as the dict it is. Decoding
gives back a dict with the keys in their original order.
"""

from __future__ import annotations

from itertools import product
from typing import Any

from .schema import EVENT_KEYS


def _layouts() -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for etype, keys in EVENT_KEYS.items():
        optional = [k for k in keys if k.endswith("?")]
        for present in product((False, True), repeat=len(optional)):
            chosen = {k for k, p in zip(optional, present, strict=True) if p}
            out.append((etype, tuple(k.rstrip("?") for k in keys if not k.endswith("?") or k in chosen)))
    return out


LAYOUTS = _layouts()
_CODE = {keys: code for code, (_etype, keys) in enumerate(LAYOUTS)}
# For decoding: (type, keys after "type") per layout code.
_DECODE = [(etype, keys[3:]) for etype, keys in LAYOUTS]


def encode(event: dict[str, Any], seq: int) -> Any:
    """The stored form of ``event`` (whose seq must be ``seq`` to be stored compactly)."""
    code = _CODE.get(tuple(event))
    if code is None or event["seq"] != seq or event["type"] != LAYOUTS[code][0]:
        return event
    values = list(event.values())
    values[0] = code
    del values[2]  # type
    return values


def decode(stored: Any, seq: int) -> dict[str, Any]:
    """The event dict of a stored value at ``seq``."""
    if isinstance(stored, dict):
        return stored
    code = stored[0]
    etype, keys = _DECODE[code]
    event = {"seq": seq, "ts": stored[1], "type": etype}
    event.update(zip(keys, stored[2:], strict=True))
    return event
