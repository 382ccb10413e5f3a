"""import: ingest a legacy directory into a store.

For each ``sessions/<name>.jsonl`` with its ``<name>.index.json``: the header,
the events, the checkpoints, every state (as its exact legacy text, so that
materializing copies it instead of re-rendering it) and every receipt. Then
the session is rendered back and compared with the source bytes; in the rare
case they differ (a file not written by the legacy writer), the source bytes
are stored too and materialize returns them. ``repl-<name>.json`` snapshots
are kept as they are.

All-or-nothing per session: a session becomes visible only when everything
was written (see SessionCatalog.publish); a failure leaves no trace. A
second import of unchanged files changes nothing (the files' digests are kept).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import xxhash

from engine.errors import EncodeError, InvalidNameError, LegacyFormatError, NotFoundError, SessionExistsError
from engine.log import codec
from engine.session.catalog import SessionCatalog
from engine.session.persister import SessionPersister
from engine.session.schema import check_session_name
from engine.session.values import js_numbers

from .materialize import session_bytes

__all__ = [
    "ImportResult",
    "LegacyFormatError",
    "import_legacy",
    "import_session",
    "import_snapshot",
    "legacy_names",
    "snapshot_names",
]

log = logging.getLogger(__name__)

EVENTS_PER_RECORD = 1000
_DECODER = json.JSONDecoder()


@dataclass
class ImportResult:
    name: str
    status: str  # "imported", "replaced", "unchanged", "failed"
    events: int = 0
    exact: bool = True  # rebuilt from parts byte for byte (else stored bytes are used)
    error: str = ""


def legacy_names(legacy_dir: str) -> list[str]:
    """The session names of ``legacy_dir``, the folder that holds ``sessions/``."""
    sessions = os.path.join(legacy_dir, "sessions")
    if not os.path.isdir(sessions):
        raise LegacyFormatError(
            "no sessions/ folder (a legacy directory is the folder that holds sessions/)", legacy_dir
        )
    names = set()
    for entry in os.listdir(sessions):
        if entry.endswith(".index.json"):
            names.add(entry[: -len(".index.json")])
        elif entry.endswith(".jsonl"):
            names.add(entry[: -len(".jsonl")])
    return sorted(names)


def snapshot_names(legacy_dir: str) -> list[str]:
    return sorted(e[5:-5] for e in os.listdir(legacy_dir) if e.startswith("repl-") and e.endswith(".json"))


def import_legacy(catalog: SessionCatalog, legacy_dir: str) -> Iterator[ImportResult]:
    """Import every session and snapshot of ``legacy_dir``; one result per item, failures included."""
    for name in legacy_names(legacy_dir):
        try:
            yield import_session(catalog, legacy_dir, name)
        except (LegacyFormatError, InvalidNameError, SessionExistsError) as exc:
            log.info("not imported: %s", exc)
            yield ImportResult(name, "failed", error=str(exc))
    for name in snapshot_names(legacy_dir):
        try:
            yield import_snapshot(catalog, legacy_dir, name)
        except (LegacyFormatError, InvalidNameError) as exc:
            yield ImportResult(f"repl-{name}.json", "failed", error=str(exc))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise LegacyFormatError(f"{what} is missing", path) from None


def import_session(catalog: SessionCatalog, legacy_dir: str, name: str) -> ImportResult:
    check_session_name(name)
    sessions = os.path.join(legacy_dir, "sessions")
    jsonl_path = os.path.join(sessions, name + ".jsonl")
    index_path = os.path.join(sessions, name + ".index.json")
    if not os.path.exists(jsonl_path):
        raise LegacyFormatError("index without its .jsonl", index_path)
    data_jsonl = _read(jsonl_path, "event log")
    data_index = _read(index_path, "index (.index.json)")
    source = {"jsonl": xxhash.xxh3_64_hexdigest(data_jsonl), "index": xxhash.xxh3_64_hexdigest(data_index)}
    replace = False
    if name in catalog:
        existing = catalog.persister(name).meta
        if existing.source == source:
            return ImportResult(name, "unchanged", catalog.persister(name).event_count)
        if existing.source is None:
            raise SessionExistsError(
                f"session {name!r} already exists in the store and was not imported; not replacing it"
            )
        replace = True
    header, events = parse_jsonl(data_jsonl, jsonl_path)
    index = parse_index(data_index, index_path)
    check_references(events, index, index_path)
    texts = state_texts(data_index.decode("utf-8", "surrogatepass"))

    p = catalog.prepare(name, header["id"], header["created"])
    try:
        if index["sessionId"] != header["id"]:
            p.meta.index_id = index["sessionId"]
        p.meta.source = source
        try:
            _write_session(p, events, index, texts)
            jsonl2, index2 = session_bytes(p)
        except (KeyError, TypeError, ValueError, NotFoundError) as exc:
            # What the checks above let through but cannot be stored or rebuilt.
            raise LegacyFormatError(f"session cannot be imported: {exc!r}", jsonl_path) from exc
        exact = jsonl2 == data_jsonl and index2 == data_index
        if not exact:
            p.put_legacy_source(data_jsonl, data_index)
            log.info("%s: rebuilt bytes differ from the source; keeping the source bytes", name)
        catalog.write_meta(p.meta)
        catalog.publish(p, replace=replace)
    except BaseException:
        catalog.abandon(p)
        raise
    return ImportResult(name, "replaced" if replace else "imported", len(events), exact)


def parse_jsonl(data: bytes, path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not data:
        raise LegacyFormatError("empty file (no header line)", path, 1)
    if not data.endswith(b"\n"):
        raise LegacyFormatError("last line is truncated (no newline at the end)", path, data.count(b"\n") + 1)
    lines = data[:-1].split(b"\n")
    values = []
    for i, line in enumerate(lines, 1):
        try:
            values.append(json.loads(line.decode("utf-8", "surrogatepass")))
        except (ValueError, UnicodeDecodeError) as exc:
            raise LegacyFormatError(f"invalid JSON: {exc}", path, i) from None
    header = values[0]
    if not (
        isinstance(header, dict)
        and header.get("type") == "session"
        and isinstance(header.get("id"), str)
        and isinstance(header.get("created"), str)
        and list(header) == ["type", "version", "id", "created"]
    ):
        raise LegacyFormatError("first line is not a session header {type, version, id, created}", path, 1)
    events = values[1:]
    for i, event in enumerate(events):
        if not isinstance(event, dict) or event.get("seq") != i or not isinstance(event.get("type"), str):
            raise LegacyFormatError(f"expected an event object with seq {i}", path, i + 2)
        needs = _NEEDED.get(event["type"], ())
        missing = [k for k in needs if not isinstance(event.get(k), str)]
        if missing:
            raise LegacyFormatError(f"{event['type']} event without a string {missing[0]!r}", path, i + 2)
    return header, events


#: Fields the index is built from, per event type.
_NEEDED = {"checkpoint": ("stateId", "reason"), "llm_resp": ("receiptKey",)}


def check_references(events: list[dict[str, Any]], index: dict[str, Any], path: str) -> None:
    """Every state and receipt the events name (up to the index's eventCount) is in the index."""
    for event in events[: index["eventCount"]]:
        if event["type"] == "checkpoint" and event["stateId"] not in index["states"]:
            raise LegacyFormatError(
                f"state {event['stateId']!r} of the checkpoint at seq {event['seq']} is missing from the index", path
            )
        if event["type"] == "llm_resp" and event["receiptKey"] not in index["receipts"]:
            raise LegacyFormatError(
                f"receipt {event['receiptKey']!r} of the llm_resp at seq {event['seq']} is missing from the index", path
            )


def parse_index(data: bytes, path: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8", "surrogatepass"))
    except json.JSONDecodeError as exc:
        raise LegacyFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise LegacyFormatError(f"not UTF-8: {exc}", path) from None
    shape = {"sessionId": str, "eventCount": int, "checkpoints": list, "states": dict, "receipts": dict}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) for k, t in shape.items()):
        raise LegacyFormatError("not an index {sessionId, eventCount, checkpoints, states, receipts}", path)
    return doc


def state_texts(text: str) -> dict[str, str]:
    """Each state's exact text in the legacy index, un-nested to indent level 0.

    Relies on the legacy layout (two-space indent); returns what it could
    read, and the caller falls back to the parsed value for the rest.
    """
    marker = '\n  "states": {'
    start = text.find(marker)
    out: dict[str, str] = {}
    if start < 0:
        return out
    pos = start + len(marker)
    try:
        while text.startswith("\n    ", pos):
            key, pos = _DECODER.raw_decode(text, pos + 5)
            if not text.startswith(": ", pos):
                break
            _value, end = _DECODER.raw_decode(text, pos + 2)
            value_text = text[pos + 2 : end]
            if value_text.count("\n") == value_text.count("\n    "):
                out[key] = value_text.replace("\n    ", "\n")
            pos = end + 1 if text.startswith(",", end) else end
    except ValueError:
        pass
    return out


def _state_parts(index: dict[str, Any], texts: dict[str, str]) -> Iterator[tuple[str, str, bytes, int]]:
    """``(state id, format, raw bytes, seq of its checkpoint)`` of every state of the index:
    its exact legacy text when known, else its parsed value."""
    cp_seq = {c.get("stateId"): c.get("seq") for c in index["checkpoints"] if isinstance(c, dict)}
    for state_id, value in index["states"].items():
        seq = cp_seq.get(state_id)
        seq = seq if isinstance(seq, int) else -1
        text = texts.get(state_id)
        if text is not None:
            yield state_id, "j", text.encode("utf-8", "surrogatepass"), seq
        else:
            yield state_id, "m", codec.pack_value(js_numbers(value)), seq


def _write_session(
    p: SessionPersister, events: list[dict[str, Any]], index: dict[str, Any], texts: dict[str, str]
) -> None:
    p.put_states(_state_parts(index, texts))
    resp_seq = {e.get("receiptKey"): e["seq"] for e in events if e["type"] == "llm_resp"}
    for key, receipt in index["receipts"].items():
        p.put_receipt(key, resp_seq.get(key, -1), js_numbers(receipt))
    for i in range(0, len(events), EVENTS_PER_RECORD):
        chunk = events[i : i + EVENTS_PER_RECORD]
        try:
            p.append_events(chunk)
        except EncodeError:
            p.append_events(js_numbers(chunk))
    cps = [
        {"seq": e["seq"], "stateId": e.get("stateId"), "reason": e.get("reason")}
        for e in events
        if e["type"] == "checkpoint"
    ]
    for i in range(0, len(cps), EVENTS_PER_RECORD):
        p.append_checkpoint_entries(cps[i : i + EVENTS_PER_RECORD])


def import_snapshot(catalog: SessionCatalog, legacy_dir: str, name: str) -> ImportResult:
    """A ``repl-<name>.json`` snapshot, kept byte for byte."""
    check_session_name(name)
    path = os.path.join(legacy_dir, f"repl-{name}.json")
    data = _read(path, "snapshot")
    try:
        json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LegacyFormatError(f"invalid JSON: {exc}", path) from None
    digest = xxhash.xxh3_64_hexdigest(data)
    if catalog.snapshot_digest(name) == digest:
        return ImportResult(f"repl-{name}.json", "unchanged")
    catalog.put_snapshot(name, digest, data)
    return ImportResult(f"repl-{name}.json", "imported")
