"""Render a stored session as the legacy writer's bytes.

``<name>.jsonl``: the header line, then ``JSON.stringify(event)`` per event.
``<name>.index.json``: ``JSON.stringify(index, null, 2)`` as the legacy writer
last wrote it, that is after the last checkpoint, llm_resp, result or error
event (it rewrote the index on those, and only those).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.session.persister import SessionPersister
from engine.session.state_codec import raw_to_value

from .jsjson import js_string, stringify

#: Event types after which the legacy writer rewrote the index.
INDEX_TRIGGERS = frozenset({"checkpoint", "llm_resp", "result", "error"})
_ARRAY_INDEX_MAX = 2**32 - 2


def is_array_index(key: str) -> bool:
    """Is ``key`` a canonical array index ("0", "1", ... below 2**32 - 1)?"""
    return key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) <= _ARRAY_INDEX_MAX


def js_key_order(keys: Iterable[str]) -> list[str]:
    """The order JavaScript enumerates object keys: array indices ascending, then insertion order."""
    keys = list(keys)
    idx = [k for k in keys if is_array_index(k)]
    if not idx:
        return keys
    return sorted(idx, key=int) + [k for k in keys if not is_array_index(k)]


def header_line(session_id: str, created: str) -> str:
    return stringify({"type": "session", "version": 1, "id": session_id, "created": created}) + "\n"


@dataclass
class LineInfo:
    """What the index needs from the ``.jsonl``: where each checkpoint line starts."""

    size: int = 0  # bytes so far
    events: int = 0  # events so far
    index_events: int = 0  # eventCount of the index (last trigger seq + 1)
    receipt_keys: dict[str, None] | None = None  # first-seen order, up to the last trigger

    def __post_init__(self) -> None:
        if self.receipt_keys is None:
            self.receipt_keys = {}


def render_lines(events: Iterable[dict[str, Any]], info: LineInfo, offsets: dict[int, int]) -> Iterator[bytes]:
    """Yield each event's line, recording checkpoint byte offsets and index triggers."""
    keys = info.receipt_keys
    assert keys is not None
    pending: list[str] = []
    for event in events:
        line = (stringify(event) + "\n").encode("utf-8", "surrogatepass")
        etype = event.get("type")
        if etype == "checkpoint":
            offsets[event["seq"]] = info.size
        elif etype == "llm_resp":
            pending.append(event["receiptKey"])
        if etype in INDEX_TRIGGERS:
            info.index_events = event["seq"] + 1
            for k in pending:
                keys.setdefault(k, None)
            pending.clear()
        info.size += len(line)
        info.events += 1
        yield line


def render_index(p: SessionPersister, info: LineInfo, offsets: dict[int, int], index_id: str) -> list[bytes]:
    """The index as the legacy writer last wrote it, as UTF-8 chunks (states are
    copied or rendered one by one, never joined into one big string)."""
    limit = info.index_events
    head = ['{\n  "sessionId": ', js_string(index_id), ',\n  "eventCount": ', str(limit), ',\n  "checkpoints": ']
    cps = [c for c in p.checkpoints() if c["seq"] < limit]
    if cps:
        items = [
            f'    {{\n      "seq": {c["seq"]},\n      "byteOffset": {offsets[c["seq"]]},\n'
            f'      "stateId": {js_string(c["stateId"])},\n      "reason": {js_string(c["reason"])}\n    }}'
            for c in cps
        ]
        head += ["[\n", ",\n".join(items), "\n  ]"]
    else:
        head.append("[]")
    head.append(',\n  "states": ')
    chunks = [_utf8("".join(head))]
    state_ids = js_key_order(dict.fromkeys(c["stateId"] for c in cps))
    chunks += _object_chunks((sid, _state_text(fmt, raw)) for sid, fmt, raw in p.states_raw(state_ids))
    chunks.append(b',\n  "receipts": ')
    keys = js_key_order(info.receipt_keys or {})
    chunks += _object_chunks((k, _utf8(stringify(p.receipt(k), 2))) for k in keys)
    chunks.append(b"\n}")
    return chunks


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _object_chunks(items: Iterable[tuple[str, bytes]]) -> list[bytes]:
    """A two-level-deep object of already rendered (indent 0) UTF-8 values."""
    out: list[bytes] = []
    for k, text in items:
        out.append(b"{\n    " if not out else b",\n    ")
        out.append(_utf8(js_string(k)) + b": ")
        out.append(text.replace(b"\n", b"\n    "))
    out.append(b"\n  }" if out else b"{}")
    return out


def _state_text(fmt: str, raw: bytes) -> bytes:
    """A state's legacy text at indent level 0."""
    if fmt == "j":  # imported: the legacy text itself
        return raw
    return _utf8(stringify(raw_to_value(fmt, raw), 2))


def render_session(p: SessionPersister) -> tuple[bytes, bytes]:
    """Both files of a session, in memory: ``(jsonl, index)``."""
    meta = p.meta
    header = header_line(meta.id, meta.created).encode("utf-8", "surrogatepass")
    info = LineInfo(size=len(header))
    offsets: dict[int, int] = {}
    jsonl = b"".join([header, *render_lines(p.events(), info, offsets)])
    return jsonl, b"".join(render_index(p, info, offsets, meta.index_id or meta.id))
