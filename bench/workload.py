"""Deterministic REPL-like event workload for the benchmarks.

Events have the legacy shapes (keys in this order)::

    input       {seq, ts, type, code}
    step        {seq, ts, type, d, ctrl}
    checkpoint  {seq, ts, type, d, reason, stateId}
    llm_req     {seq, ts, type, d, model, promptPreview, receiptKey}
    llm_resp    {seq, ts, type, d, valuePreview, durationMs, receiptKey}
    effect      {seq, ts, type, d, op, argsPreview}
    resume      {seq, ts, type, d, valuePreview}
    result      {seq, ts, type, value}
    error       {seq, ts, type, d, message}

Every event's compact JSON (``orjson.dumps``, no spaces) is 150..250 bytes: one
free-text field per type is cut from a corpus of Lisp-ish code to hit a target
length drawn uniformly from that range. Texts never contain ``"`` or ``\\`` (nor
non-ASCII), so their JSON length is their length.

Everything is a pure function of ``(seed, stream, first_seq)``: a batch of
stream 17 starting at seq 300 is the same whatever else was generated before.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

DEFAULT_SEED = 20240611
N_STREAMS = 1000
BATCH = 100
MIN_JSON = 150
MAX_JSON = 250
TS_BASE = 1_700_000_000_000  # ms since the epoch

Event = dict[str, Any]
Batch = tuple[int, int, list[Event]]  # (stream index, first seq, events)

TYPES = ("input", "step", "checkpoint", "llm_req", "llm_resp", "effect", "resume", "result", "error")
# Rough mix of a REPL session: many eval steps, an LLM round trip now and then.
_WEIGHTS = (12, 30, 5, 7, 7, 10, 6, 15, 4)
_CUM = list(accumulate(_WEIGHTS))
# The field of each type whose length is adjusted to hit the JSON size target.
_TEXT_FIELD = {
    "input": "code",
    "step": "ctrl",
    "checkpoint": "reason",
    "llm_req": "promptPreview",
    "llm_resp": "valuePreview",
    "effect": "argsPreview",
    "resume": "valuePreview",
    "result": "value",
    "error": "message",
}
_MODELS = ("claude-3-5-haiku", "claude-sonnet-4", "gpt-4o-mini", "llama-3.1-8b")
_OPS = ("fs.read", "fs.write", "http.get", "clock.now", "env.get", "proc.run", "kv.put", "kv.get")
_CTRL = ("eval", "apply", "return", "bind", "lookup", "macroexpand", "call/cc", "tail-call")
_REASONS = ("periodic", "before-effect", "before-llm", "user-request", "yield")

_FORMS = (
    "(define (fact n) (if (<= n 1) 1 (* n (fact (- n 1)))))",
    "(let ((xs (range 0 10))) (map (lambda (x) (* x x)) xs))",
    "(defmacro when (c . body) `(if ,c (begin ,@body) nil))",
    "(reduce + 0 (filter even? (map inc (list 1 2 3 4 5 6))))",
    "(llm/ask 'summarize (slurp 'notes) :max-tokens 256)",
    "(assoc 'user (hash-map :id 42 :name 'ada :roles '(admin dev)))",
    "(call/cc (lambda (k) (for-each (lambda (x) (when (neg? x) (k x))) xs)))",
    "(define-record point x y) (point-x (make-point 3 4))",
    "(with-effect (fs/read 'config.edn) (lambda (cfg) (get cfg :port 8080)))",
    "(match expr ((+ a b) (+ (ev a) (ev b))) ((* a b) (* (ev a) (ev b))) (n n))",
    "(loop ((i 0) (acc '())) (if (= i 10) (reverse acc) (recur (+ i 1) (cons i acc))))",
    "(string-join (map symbol->string '(alpha beta gamma delta)) '-)",
    "(checkpoint! :reason 'before-effect :state (snapshot env))",
    "(error 'type-error (list 'expected 'number 'got (type-of x)))",
    "(resume k (vector 1 2 3 (quote sym) #t #f nil 3.14159))",
)


def _build_corpus(seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < 1 << 16:
        f = rng.choice(_FORMS)
        parts.append(f)
        n += len(f) + 1
    return " ".join(parts)


_CORPUS_CACHE: dict[int, tuple[str, list[int]]] = {}


def corpus(seed: int = DEFAULT_SEED) -> tuple[str, list[int]]:
    """The text corpus and the offsets where its top-level forms start."""
    c = _CORPUS_CACHE.get(seed)
    if c is None:
        text = _build_corpus(seed)
        starts = [i for i, ch in enumerate(text) if ch == "(" and (i == 0 or text[i - 1] == " ")]
        # Keep room for the longest text cut from a start.
        starts = [i for i in starts if i + MAX_JSON < len(text)]
        c = _CORPUS_CACHE[seed] = (text, starts)
    return c


def stream_name(i: int) -> str:
    """The seglog stream name (and legacy session file stem) of stream index ``i``."""
    return f"session-{i:04d}"


def _text(rng: random.Random, text: str, starts: list[int], n: int) -> str:
    start = starts[rng.randrange(len(starts))]
    return text[start : start + n]


def events(stream: int, first_seq: int, n: int, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """``n`` consecutive events of stream ``stream`` starting at ``first_seq``."""
    rng = random.Random(f"{seed}:{stream}:{first_seq}")
    text, starts = corpus(seed)
    rand = rng.random
    randrange = rng.randrange
    ts = TS_BASE + stream * 86_400_000 + first_seq * 700
    out: list[dict[str, Any]] = []
    for seq in range(first_seq, first_seq + n):
        ts += 50 + randrange(1300)
        r = rand() * _CUM[-1]
        k = 0
        while _CUM[k] <= r:
            k += 1
        t = TYPES[k]
        d = randrange(8)
        # Placeholder text; its final length is fixed below.
        if t == "input":
            ev: dict[str, Any] = {"seq": seq, "ts": ts, "type": t, "code": ""}
        elif t == "step":
            ev = {"seq": seq, "ts": ts, "type": t, "d": d, "ctrl": ""}
        elif t == "checkpoint":
            ev = {"seq": seq, "ts": ts, "type": t, "d": d, "reason": "", "stateId": f"st-{stream:04x}-{seq:08x}"}
        elif t == "llm_req":
            ev = {
                "seq": seq,
                "ts": ts,
                "type": t,
                "d": d,
                "model": _MODELS[seq % 4],
                "promptPreview": "",
                "receiptKey": f"rcpt-{stream:04x}{seq:08x}",
            }
        elif t == "llm_resp":
            ev = {
                "seq": seq,
                "ts": ts,
                "type": t,
                "d": d,
                "valuePreview": "",
                "durationMs": 80 + randrange(9000),
                "receiptKey": f"rcpt-{stream:04x}{seq - 1:08x}",
            }
        elif t == "effect":
            ev = {"seq": seq, "ts": ts, "type": t, "d": d, "op": _OPS[randrange(8)], "argsPreview": ""}
        elif t == "resume":
            ev = {"seq": seq, "ts": ts, "type": t, "d": d, "valuePreview": ""}
        elif t == "result":
            ev = {"seq": seq, "ts": ts, "type": t, "value": ""}
        else:
            ev = {"seq": seq, "ts": ts, "type": t, "d": d, "message": ""}
        field = _TEXT_FIELD[t]
        if t == "step":
            prefix = _CTRL[randrange(8)] + " "
        elif t == "checkpoint":
            prefix = _REASONS[randrange(5)] + ": "
        else:
            prefix = ""
        # JSON length with an empty text field; the text fills the rest up to the target.
        base = _json_len_empty(ev)
        target = MIN_JSON + randrange(MAX_JSON - MIN_JSON + 1)
        ev[field] = (prefix + _text(rng, text, starts, max(target - base - len(prefix), 0)))[: max(target - base, 0)]
        out.append(ev)
    return out


def _json_len_empty(ev: dict[str, Any]) -> int:
    """Compact JSON length of ``ev`` (its text field is empty; no value needs escaping)."""
    n = 2 + len(ev) - 1  # braces and commas
    for k, v in ev.items():
        n += len(k) + 3  # "k":
        n += len(v) + 2 if isinstance(v, str) else len(str(v))
    return n


def batch_plan(
    n_events: int, n_streams: int = N_STREAMS, batch: int = BATCH, start: int = 0
) -> Iterator[tuple[int, int, int]]:
    """``(stream, first_seq, count)`` of each batch: ``batch`` consecutive events of
    one stream, streams round-robin. The last batch may be short. Batches before
    event number ``start`` are skipped (to continue a store built with ``start``
    events; ``start`` must fall on a batch boundary)."""
    i = 0
    done = 0
    while done < n_events:
        count = min(batch, n_events - done)
        if done >= start:
            yield i % n_streams, (i // n_streams) * batch, count
        elif done + count > start:
            raise ValueError(f"start={start} is not on a batch boundary")
        done += count
        i += 1


def batches(
    n_events: int, n_streams: int = N_STREAMS, batch: int = BATCH, seed: int = DEFAULT_SEED, start: int = 0
) -> Iterator[Batch]:
    """``(stream, first_seq, events)`` for each batch of :func:`batch_plan`."""
    for stream, first, count in batch_plan(n_events, n_streams, batch, start):
        yield stream, first, events(stream, first, count, seed)


def stream_events(stream: int, n: int, batch: int = BATCH, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """The first ``n`` events of one stream, exactly as :func:`batches` makes them."""
    out: list[dict[str, Any]] = []
    for first in range(0, n, batch):
        out.extend(events(stream, first, min(batch, n - first), seed))
    return out


def json_line(ev: dict[str, Any]) -> bytes:
    """The legacy JSONL line of an event (compact JSON + newline)."""
    return json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
