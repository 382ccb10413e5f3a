"""The legacy session writer's pattern, in Python (the baseline of the session benchmarks).

What the old REPL did (see ``shared/LEGACY-FORMAT.md``), call for call:

* every event: ``JSON.stringify(event) + "\\n"`` appended to ``sessions/<name>.jsonl``
  with an open/append/close of the file (``fs.appendFileSync``), the header line first;
* at every ``checkpoint``, ``llm_resp``, ``result`` and ``error``: the whole index
  ``{sessionId, eventCount, checkpoints: [{seq, byteOffset, stateId, reason}], states:
  {stateId: state}, receipts: {key: receipt}}`` serialized with two-space indent and
  written over ``sessions/<name>.index.json`` (``fs.writeFileSync``), every state inline.

The index lives in memory, as it did in the REPL; only the serialization and the
file writes are repeated. The recording methods have the signatures of
:class:`engine.SessionInstance`, so the same driver records on both.

Serializers (both reproduce the real sample files byte for byte, see
``test_session_bench.test_legacy_writer_reproduces_samples``):

``"json"``    the standard library (``json.dumps(index, indent=2)``), the pattern as
              written in Python; its indenting encoder is pure Python, ~60x slower than
``"orjson"``  ``orjson.dumps(index, option=OPT_INDENT_2)``, a C serializer at least as
              fast as V8's ``JSON.stringify``: a lower bound for the legacy cost.

Lone surrogates (which the REPL's 200-unit previews can produce) are not handled
the JavaScript way here; the benchmark workload has none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

ENCODERS = ("json", "orjson")


def _json_line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _json_index(index: dict[str, Any]) -> bytes:
    return json.dumps(index, indent=2, ensure_ascii=False).encode("utf-8")


def _orjson_line(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


def _orjson_index(index: dict[str, Any]) -> bytes:
    return orjson.dumps(index, option=orjson.OPT_INDENT_2)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _preview(text: str) -> str:
    """``text.slice(0, 200)``: 200 UTF-16 code units."""
    if len(text) <= 100:
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    return text if len(units) <= 400 else units[:400].decode("utf-16-le", "surrogatepass")


class LegacyWriter:
    """One session written the legacy way into ``<directory>/sessions/``."""

    def __init__(
        self,
        directory: str,
        name: str,
        session_id: str | None = None,
        created: str | None = None,
        *,
        encoder: str = "json",
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.name = name
        self.use_encoder(encoder)
        self._clock = clock
        sessions = os.path.join(directory, "sessions")
        os.makedirs(sessions, exist_ok=True)
        os.makedirs(os.path.join(directory, "receipts"), exist_ok=True)
        self.jsonl_path = os.path.join(sessions, f"{name}.jsonl")
        self.index_path = os.path.join(sessions, f"{name}.index.json")
        sid = session_id if session_id is not None else name
        self.index: dict[str, Any] = {
            "sessionId": sid,
            "eventCount": 0,
            "checkpoints": [],
            "states": {},
            "receipts": {},
        }
        self.size = 0  # bytes of the .jsonl so far (byteOffset of the next line)
        self._bulk: bytearray | None = None
        self.index_writes = 0
        open(self.jsonl_path, "wb").close()
        self._append(
            {"type": "session", "version": 1, "id": sid, "created": created if created is not None else _iso_now()}
        )

    def use_encoder(self, encoder: str) -> None:
        """Serialize with ``encoder`` from now on (both write the same bytes)."""
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {encoder!r}")
        self.encoder = encoder
        self._line, self._dump = (_json_line, _json_index) if encoder == "json" else (_orjson_line, _orjson_index)

    # -- files ------------------------------------------------------------------------
    def _append(self, event: dict[str, Any]) -> int:
        """Append one line (open/append/close, like ``fs.appendFileSync``); return its offset."""
        line = self._line(event)
        offset = self.size
        if self._bulk is not None:
            self._bulk += line
        else:
            with open(self.jsonl_path, "ab") as f:
                f.write(line)
        self.size += len(line)
        return offset

    def _write_index(self) -> None:
        """Serialize the whole index and write it over the file (``fs.writeFileSync``)."""
        if self._bulk is not None:
            return
        data = self._dump(self.index)
        with open(self.index_path, "wb") as f:
            f.write(data)
        self.index_writes += 1

    @contextmanager
    def bulk(self) -> Iterator[LegacyWriter]:
        """Record without the per-event file writes, then write both files once.

        The files end up byte for byte as the per-event pattern leaves them (the
        ``.jsonl`` is append-only and the index is always rewritten whole); used to
        build long sessions quickly before the measured commands.
        """
        self._bulk = bytearray()
        try:
            yield self
        finally:
            buf, self._bulk = self._bulk, None
            with open(self.jsonl_path, "ab") as f:
                f.write(buf)
            self._write_index()

    def _event(self, event: dict[str, Any], ts: int | None) -> tuple[int, int]:
        seq = self.index["eventCount"]
        event["seq"] = seq
        event["ts"] = self._clock() if ts is None else ts
        offset = self._append(event)
        self.index["eventCount"] = seq + 1
        return seq, offset

    # -- recording (the SessionInstance signatures) --------------------------------------
    def input(self, code: str, ts: int | None = None) -> int:
        return self._event({"seq": 0, "ts": 0, "type": "input", "code": code}, ts)[0]

    def step(self, d: int, ctrl: str, ts: int | None = None) -> int:
        return self._event({"seq": 0, "ts": 0, "type": "step", "d": d, "ctrl": ctrl}, ts)[0]

    def checkpoint(self, d: int, reason: str, state: Any, ts: int | None = None) -> str:
        seq = self.index["eventCount"]
        state_id = f"state-{seq}"
        _, offset = self._event(
            {"seq": 0, "ts": 0, "type": "checkpoint", "d": d, "reason": reason, "stateId": state_id}, ts
        )
        self.index["checkpoints"].append({"seq": seq, "byteOffset": offset, "stateId": state_id, "reason": reason})
        self.index["states"][state_id] = state
        self._write_index()
        return state_id

    def llm_req(self, d: int, model: str, prompt_preview: str, receipt_key: str, ts: int | None = None) -> int:
        return self._event(
            {
                "seq": 0,
                "ts": 0,
                "type": "llm_req",
                "d": d,
                "model": model,
                "promptPreview": _preview(prompt_preview),
                "receiptKey": receipt_key,
            },
            ts,
        )[0]

    def llm_resp(
        self,
        d: int,
        value_preview: str,
        duration_ms: int,
        receipt_key: str,
        *,
        request: Any,
        response: Any,
        timestamp: int | None = None,
        tokens: Any = None,
        ts: int | None = None,
    ) -> int:
        event: dict[str, Any] = {"seq": 0, "ts": 0, "type": "llm_resp", "d": d, "valuePreview": _preview(value_preview)}
        if tokens is not None:
            event["tokens"] = tokens
        event["durationMs"] = duration_ms
        event["receiptKey"] = receipt_key
        seq, _ = self._event(event, ts)
        receipt: dict[str, Any] = {
            "key": receipt_key,
            "request": request,
            "response": response,
            "timestamp": event["ts"] if timestamp is None else timestamp,
            "durationMs": duration_ms,
        }
        if tokens is not None:
            receipt["tokens"] = tokens
        self.index["receipts"][receipt_key] = receipt
        self._write_index()
        return seq

    def effect(self, d: int, op: str, args_preview: str, ts: int | None = None) -> int:
        return self._event(
            {"seq": 0, "ts": 0, "type": "effect", "d": d, "op": op, "argsPreview": _preview(args_preview)}, ts
        )[0]

    def resume(self, d: int, value_preview: str, ts: int | None = None) -> int:
        return self._event({"seq": 0, "ts": 0, "type": "resume", "d": d, "valuePreview": _preview(value_preview)}, ts)[
            0
        ]

    def result(self, value: str, ts: int | None = None) -> int:
        seq, _ = self._event({"seq": 0, "ts": 0, "type": "result", "value": value}, ts)
        self._write_index()
        return seq

    def error(self, d: int, message: str, stack: str | None = None, ts: int | None = None) -> int:
        event: dict[str, Any] = {"seq": 0, "ts": 0, "type": "error", "d": d, "message": message}
        if stack is not None:
            event["stack"] = stack
        seq, _ = self._event(event, ts)
        self._write_index()
        return seq

    # -- sizes ------------------------------------------------------------------------------
    def bytes_on_disk(self) -> dict[str, int]:
        j, i = os.path.getsize(self.jsonl_path), os.path.getsize(self.index_path)
        return {"jsonl": j, "index": i, "total": j + i}


def load_legacy(directory: str, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What loading a legacy session costs: parse every line of the ``.jsonl`` and the
    whole ``.index.json`` with the standard ``json`` module."""
    sessions = os.path.join(directory, "sessions")
    loads = json.loads
    with open(os.path.join(sessions, f"{name}.jsonl"), "rb") as f:
        events = [loads(line) for line in f]
    with open(os.path.join(sessions, f"{name}.index.json"), "rb") as f:
        index = json.load(f)
    return events, index
