"""The REPL's event schema: legacy event types, key order, field checks, names.

Events are plain dicts whose keys are in exactly the legacy order (see
``shared/LEGACY-FORMAT.md``); optional keys are left out when absent, as
JavaScript's ``JSON.stringify`` leaves out ``undefined`` properties.
"""

from __future__ import annotations

import time

from ..errors import InvalidArgumentError, InvalidNameError
from ..log import catalog as log_catalog

REASONS = frozenset({"llm_boundary", "periodic", "manual", "effect"})
PREVIEW_UNITS = 200
MAX_SESSION_NAME_BYTES = 200

#: Keys of each event type, in order; "?" marks a key left out when absent.
EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("seq", "ts", "type", "code"),
    "step": ("seq", "ts", "type", "d", "ctrl"),
    "checkpoint": ("seq", "ts", "type", "d", "reason", "stateId"),
    "llm_req": ("seq", "ts", "type", "d", "model", "promptPreview", "receiptKey"),
    "llm_resp": ("seq", "ts", "type", "d", "valuePreview", "tokens?", "durationMs", "receiptKey"),
    "effect": ("seq", "ts", "type", "d", "op", "argsPreview"),
    "resume": ("seq", "ts", "type", "d", "valuePreview"),
    "result": ("seq", "ts", "type", "value"),
    "error": ("seq", "ts", "type", "d", "message", "stack?"),
}


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_now() -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, like JavaScript's ``toISOString()``."""
    t = time.time()
    ms = int(t * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"


def preview(text: str) -> str:
    """``text.slice(0, 200)`` in JavaScript: 200 UTF-16 code units (may split a pair)."""
    if len(text) <= PREVIEW_UNITS // 2:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) <= 2 * PREVIEW_UNITS:
        return text
    return units[: 2 * PREVIEW_UNITS].decode("utf-16-le", "surrogatepass")


def check_session_name(name: object) -> str:
    """A session name becomes a file stem in ``sessions/``: the rules of any name
    (``engine.log.catalog.check_name``: a non-empty str, no control characters, NUL
    included), at most 200 bytes, and no path separators, no "." or ".."."""
    log_catalog.check_name(name, "session name", MAX_SESSION_NAME_BYTES)
    assert isinstance(name, str)
    if name in (".", "..") or "/" in name or "\\" in name:
        raise InvalidNameError(f"session name {name!r} is not allowed (path separators, '.' and '..' are not)")
    return name


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise InvalidArgumentError(what)


def check_int(field: str, value: object) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), f"{field} must be an int, not {value!r}")
    assert isinstance(value, int)
    _require(-(2**63) <= value < 2**64, f"{field} {value} does not fit in 64 bits")
    return value


MAX_RECEIPT_KEY_BYTES = 1000


def check_receipt_key(key: object) -> str:
    """A receipt key becomes part of a blob key: non-empty, valid text, at most 1000 bytes."""
    key = check_str("receiptKey", key)
    _require(bool(key), "receiptKey must not be empty")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"receiptKey {key!r} is not valid Unicode text") from None
    _require(len(raw) <= MAX_RECEIPT_KEY_BYTES, f"receiptKey is {len(raw)} bytes; the limit is {MAX_RECEIPT_KEY_BYTES}")
    return key


def check_str(field: str, value: object) -> str:
    _require(isinstance(value, str), f"{field} must be a str, not {type(value).__name__}")
    assert isinstance(value, str)
    return value
