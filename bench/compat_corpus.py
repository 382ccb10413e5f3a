"""A legacy session directory for the compat benchmarks, scaled up from the real samples.

``build_corpus(root, spec)`` writes ``root/sessions/<name>.jsonl`` + ``<name>.index.json``
(and an empty ``root/receipts/``) exactly as the legacy JavaScript writer would have
(``shared/LEGACY-FORMAT.md``): one ``JSON.stringify(event)`` line per event, the index
as ``JSON.stringify(index, null, 2)`` with no final newline, as last written at the
last ``checkpoint``/``llm_resp``/``result``/``error`` event. Everything is serialized
with :func:`compat.jsjson.stringify`.

Sessions (deterministic per seed):

* the machine state starts from a real checkpoint state of ``mock-effects.index.json``
  (~16 KB compact, ~45-55 KB at the index's indentation) and every command changes a few
  entries of it: ``control``, one or two rebound store entries, a new binding
  (store entry + ``storeNext`` + two frame entries) for defines and LLM answers, with
  the user part of the store bounded (states stay ~16-20 KB compact);
* a command is ``input``, 1-8 ``step`` s, ``result``, ``checkpoint`` (``manual``; long
  commands also get a ``periodic`` one); about one in four calls the LLM the way the
  sample does (``llm_boundary`` checkpoint, ``effect``, ``llm_req``, ``llm_resp`` with a
  receipt, ``llm_boundary`` checkpoint, ``resume``), some perform a non-LLM ``effect``
  (``effect`` checkpoint) and a few fail (``error`` with a stack, no checkpoint);
* the format's corners appear now and then: previews cut at 200 UTF-16 units (a few
  leave a lone surrogate), non-ASCII/control/U+2028 text, doubles printed by JS rules
  (``0.30000000000000004``, ``3.5e-7``, ``1e+21``, ``-0``), optional ``tokens``, a receipt
  key written twice (same prompt), a session cut mid-command (index behind the log);
* one session in ten is a ``:session save`` copy (``saved-<name>``, files copied
  verbatim, header id unchanged) and one in ten a ``:session fork`` (same events up to
  the fork point, new header, then its own commands).

Run as a script to write a corpus (``python bench/compat_corpus.py OUT_DIR --scale full``).
Sizes: ``SEGLOG_BENCH_SCALE=small`` (default, 20 sessions, ~23 MB) or ``full`` (300
sessions, ~0.6 GB); either way ~98% of the bytes are states in the indexes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from session_workload import BASE_SAMPLE, FNS, NAMES, OPS, PREVIEW, parenthesized_subforms, samples_dir

from compat.jsjson import js_number, stringify

INDEX_TRIGGERS = frozenset({"checkpoint", "llm_resp", "result", "error"})
MAX_USER_ENTRIES = 24  # user store entries kept before the oldest is collected


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    sessions: int  # all sessions, saved copies and forks included
    min_commands: int
    max_commands: int
    seed: int = 20261124


SPECS = {
    "small": CorpusSpec("small", sessions=20, min_commands=8, max_commands=20),
    "full": CorpusSpec("full", sessions=300, min_commands=12, max_commands=36),
}


def scale_name() -> str:
    name = os.environ.get("SEGLOG_BENCH_SCALE", "small")
    if name not in SPECS:
        raise ValueError(f"SEGLOG_BENCH_SCALE must be one of {', '.join(SPECS)}, not {name!r}")
    return name


@dataclass
class CorpusStats:
    root: str
    spec: CorpusSpec
    sessions: int = 0
    events: int = 0
    checkpoints: int = 0  # in the indexes (= states)
    receipts: int = 0
    lone_surrogate_lines: int = 0
    jsonl_bytes: int = 0
    index_bytes: int = 0
    build_s: float = 0.0
    names: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.jsonl_bytes + self.index_bytes

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "events": self.events,
            "states": self.checkpoints,
            "receipts": self.receipts,
            "jsonl_mb": round(self.jsonl_bytes / 1e6, 2),
            "index_mb": round(self.index_bytes / 1e6, 2),
            "corpus_build_s": round(self.build_s, 2),
        }


# ------------------------------------------------------------------------ samples
@lru_cache(maxsize=1)
def _base_states_text() -> str:
    with open(os.path.join(samples_dir(), BASE_SAMPLE), "rb") as f:
        return json.dumps(json.load(f)["states"])


def base_states() -> dict[str, dict[str, Any]]:
    """The real states of mock-effects (a fresh copy: generation never mutates them,
    but callers may)."""
    states: dict[str, dict[str, Any]] = json.loads(_base_states_text())
    return states


# ------------------------------------------------------------------------ text
_WORDS = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "on",
    "this",
    "function",
    "list",
    "value",
    "returns",
    "each",
    "element",
    "recursive",
    "call",
    "argument",
    "environment",
    "closure",
    "binding",
    "store",
    "continuation",
    "effect",
    "handler",
    "result",
    "evaluate",
    "symbol",
    "number",
    "string",
    "lambda",
    "macro",
    "summary",
    "notes",
    "question",
    "answer",
    "example",
    "because",
    "which",
    "then",
    "order",
    "invoice",
    "customer",
    "report",
    "table",
    "total",
    "average",
    "filter",
    "map",
    "reduce",
    "sort",
    "group",
    "key",
    "field",
    "date",
)
_ODD_WORDS = (
    "café",
    "naïve",
    "Zürich",
    "日本語",
    "¿qué?",
    "Ελληνικά",
    "🙂",
    "a\u2028b",
    'say "hi"',
    "back\\slash",
    "tab\there",
    "two\nlines",
    "bell\x07",
    "del\x7f",
)
_MODELS = ("mock-llm", "claude-sonnet-4", "claude-3-5-haiku", "gpt-4o-mini")
_ODD_NUMBERS = (
    0.1 + 0.2,
    3.5e-7,
    1e-7,
    0.000001,
    1e21,
    123456789012345680000.0,
    1.7976931348623157e308,
    -0.0,
    2.5e-324 * 2,
    10000000000000000.0,
    -1.5e-9,
    1 / 3,
)
_STACK = (
    "Error: {msg}\n    at stepOnce (/home/user/Omega/src/core/eval/machineStep.ts:841:39)\n"
    "    at runToCompletionWithState (/home/user/Omega/src/core/eval/run.ts:77:17)\n"
    "    at evalInRepl (/home/user/Omega/bin/omega-repl.ts:1395:46)\n"
    "    at processReplCommand (/home/user/Omega/bin/omega-repl.ts:2878:59)\n"
    "    at main (/home/user/Omega/bin/omega-repl.ts:3086:57)\n"
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
)


def js_slice(s: str, n: int = PREVIEW) -> str:
    """``s.slice(0, n)`` in UTF-16 code units (may leave a lone surrogate)."""
    if len(s) <= n // 2:
        return s
    units = s.encode("utf-16-le", "surrogatepass")
    return s if len(units) <= 2 * n else units[: 2 * n].decode("utf-16-le", "surrogatepass")


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _subforms(code: str) -> list[str]:
    """Parenthesized subforms of ``code``, outermost first (what ``ctrl`` shows)."""
    return parenthesized_subforms(code) or [code]


# ------------------------------------------------------------------------ one session
class SessionGen:
    """The events, states and receipts of one session, command by command."""

    def __init__(self, seed: str, ts0: int) -> None:
        self.rng = random.Random(seed)
        states = base_states()
        template = states[self.rng.choice(sorted(states))]
        self.template = template
        self.env_id: str = template["envId"]
        self.ctx: dict[str, Any] = template["ctxTable"][self.env_id]
        self.entries: list[list[Any]] = list(template["storeEntries"])
        self.frame: list[list[Any]] = list(self.ctx["frameEntries"])
        self.next_idx: int = template["storeNext"]
        natives = [i for i, (_, v) in enumerate(self.entries) if v.get("tag") == "Native"]
        self.first_user = natives[-1] + 1 if natives else 0
        self.bid = 10
        self.closure_env = hashlib.sha256(f"closure/{seed}".encode()).hexdigest()
        self.ts = ts0
        self.events: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.questions: list[str] = []
        self.commands = 0
        self.fork_ts = 0  # when the session was forked (forks only)

    # -- text and numbers ---------------------------------------------------------
    def words(self, n_chars: int, odd: float = 0.0) -> str:
        r, out, size = self.rng, [], 0
        while size < n_chars:
            w = r.choice(_ODD_WORDS) if odd and r.random() < odd else r.choice(_WORDS)
            out.append(w)
            size += len(w) + 1
        return " ".join(out)

    def number(self) -> int | float:
        r = self.rng.random()
        if r < 0.7:
            return self.rng.randrange(-50, 5000)
        if r < 0.9:
            return round(self.rng.uniform(-100, 100), self.rng.randrange(1, 4))
        return self.rng.choice(_ODD_NUMBERS)

    # -- events ---------------------------------------------------------------------
    def emit(self, etype: str, **fields: Any) -> dict[str, Any]:
        self.ts += self.rng.choice((0, 0, 1, 1, 2, 3))
        event = {"seq": len(self.events), "ts": self.ts, "type": etype}
        event.update((k, v) for k, v in fields.items() if v is not None)
        self.events.append(event)
        return event

    def checkpoint(
        self,
        d: int,
        reason: str,
        control: dict[str, Any],
        kont: list[Any] | None = None,
        handlers: list[Any] | None = None,
    ) -> None:
        seq = len(self.events)
        state_id = f"state-{seq}"
        self.states[state_id] = self.state(control, kont, handlers)
        self.emit("checkpoint", d=d, reason=reason, stateId=state_id)

    def steps(self, code: str, n: int, d0: int = 0) -> None:
        forms = _subforms(code)
        for i in range(n):
            self.emit("step", d=min(d0 + i % 3, 2) if n > 1 else d0, ctrl=forms[i % len(forms)])

    # -- state ----------------------------------------------------------------------
    def new_bid(self) -> int:
        self.bid += 1
        return self.bid

    def rebind(self, n: int) -> None:
        slots = range(self.first_user, len(self.entries))
        for _ in range(n):
            if not slots:
                return
            i = self.rng.choice(slots)
            idx, old = self.entries[i]
            if old.get("tag") == "Closure":
                new = dict(old)
                new["params"] = [f"{old['params'][0].split('$')[0]}$bid#{self.new_bid()}"]
            elif old.get("tag") == "Str":
                new = {"tag": "Str", "s": self.words(self.rng.randrange(8, 60), odd=0.1)}
            else:
                new = {"tag": "Num", "n": self.number()}
            self.entries[i] = [idx, new]

    def bind(self, name: str, value: dict[str, Any]) -> None:
        idx = self.next_idx
        self.next_idx += 1
        self.entries.append([idx, value])
        self.frame.append([f"{name}$bid#{self.new_bid()}", idx])
        self.frame.append([name, idx])
        if len(self.entries) - self.first_user > MAX_USER_ENTRIES:
            old_idx = self.entries.pop(self.first_user)[0]
            self.frame = [fe for fe in self.frame if fe[1] != old_idx]

    def state(self, control: dict[str, Any], kont: list[Any] | None, handlers: list[Any] | None) -> dict[str, Any]:
        ctx = dict(self.ctx)
        ctx["frameEntries"] = list(self.frame)
        state = dict(self.template)  # the real state's keys, in its order
        state["control"] = control
        state["envId"] = self.env_id
        state["storeEntries"] = list(self.entries)
        state["storeNext"] = self.next_idx
        state["kont"] = kont if kont is not None else []
        state["handlers"] = handlers if handlers is not None else []
        state["ctxTable"] = {self.env_id: ctx}
        return state

    # -- commands ---------------------------------------------------------------------
    def command(self) -> None:
        self.commands += 1
        self.rebind(self.rng.choice((1, 1, 2)))
        kind = self.rng.random()
        if kind < 0.25:
            self.llm_command()
        elif kind < 0.32:
            self.effect_command()
        elif kind < 0.37:
            self.error_command()
        else:
            self.plain_command()

    def plain_command(self) -> None:
        r = self.rng
        kind = r.random()
        if kind < 0.3:
            name = f"{r.choice(NAMES)}{r.randrange(100)}"
            v = self.number()
            code = f"(define {name} {js_number(v)})"
            self.bind(name, {"tag": "Num", "n": v})
            value, control = name, {"tag": "Val", "v": {"tag": "Unit"}}
        elif kind < 0.5:
            fn, p, op = f"{r.choice(FNS)}{r.randrange(100)}", r.choice(NAMES), r.choice(OPS)
            code = f"(define ({fn} {p}) ({op} {p} (if (< {p} {r.randrange(10)}) {p} ({op} {p} 1))))"
            param = f"{p}$bid#{self.bid + 1}"
            body = {
                "tag": "App",
                "fn": {"tag": "Var", "name": op},
                "args": [
                    {"tag": "Var", "name": param},
                    {
                        "tag": "If",
                        "test": {
                            "tag": "App",
                            "fn": {"tag": "Var", "name": "<"},
                            "args": [{"tag": "Var", "name": param}, {"tag": "Num", "n": 3}],
                        },
                        "then": {"tag": "Var", "name": param},
                        "else": {
                            "tag": "App",
                            "fn": {"tag": "Var", "name": op},
                            "args": [{"tag": "Var", "name": param}, {"tag": "Num", "n": 1}],
                        },
                    },
                ],
            }
            self.bind(fn, {"tag": "Closure", "params": [param], "body": body, "envId": self.closure_env})
            value, control = fn, {"tag": "Val", "v": {"tag": "Unit"}}
        elif kind < 0.6:
            name = f"{r.choice(NAMES)}{r.randrange(100)}"
            text = self.words(r.randrange(10, 80), odd=0.15)
            code = f"(define {name} {stringify(text)})"
            self.bind(name, {"tag": "Str", "s": text})
            value, control = name, {"tag": "Val", "v": {"tag": "Unit"}}
        else:
            a, b = r.choice(NAMES), r.choice(NAMES)
            code = r.choice(
                (
                    f"(map (lambda (v) (* v {r.randrange(2, 9)})) (list {a} {b} {r.randrange(100)}))",
                    f"(reduce + 0 (filter even? (list {' '.join(str(r.randrange(50)) for _ in range(6))})))",
                    f"(set! {a} (+ {a} {r.randrange(1, 20)}))",
                    f"(let ((t (* {a} {b}))) (if (> t {r.randrange(1000)}) t (- t)))",
                    f"(/ {a} {r.choice(('3', '0.1', '7e-8', '1e21'))})",
                )
            )
            v = self.number()
            value, control = js_number(v), {"tag": "Val", "v": {"tag": "Num", "n": v}}
        n_steps = r.randrange(1, 9)
        self.emit("input", code=code)
        if n_steps >= 6:  # a long command: the machine also checkpoints periodically
            half = n_steps // 2
            self.steps(code, half)
            self.checkpoint(
                self.events[-1]["d"],
                "periodic",
                {"tag": "Expr", "src": _subforms(code)[-1]},
                kont=[{"tag": "KApp", "pending": n_steps - half, "envId": self.env_id}],
            )
            self.steps(code, n_steps - half)
        else:
            self.steps(code, n_steps)
        self.emit("result", value=value)
        self.checkpoint(0, "manual", control)

    def llm_command(self) -> None:
        r = self.rng
        if self.questions and r.random() < 0.08:  # the same prompt again: same receipt key
            question = r.choice(self.questions)
        else:
            question = self.words(r.randrange(12, 90), odd=0.08)
            if r.random() < 0.06:  # a long prompt whose preview cuts an emoji in half
                question = "x" * (PREVIEW - 3) + " \U0001f600 " + question
            self.questions.append(question)
        code = f"(effect infer.op {stringify(question)})"
        args = f"{stringify(question)})"
        model = r.choice(_MODELS)
        request = {"op": "infer.op", "args": args}
        key = hashlib.sha256(stringify([model, request]).encode("utf-8", "surrogatepass")).hexdigest()
        content = self.words(r.randrange(40, 1800), odd=0.03)
        duration = r.randrange(0, 4000) if model != "mock-llm" else 0
        tokens = r.randrange(20, 900) if model != "mock-llm" else None
        value = {"tag": "Str", "s": content[:120]}

        self.emit("input", code=code)
        self.checkpoint(0, "llm_boundary", {"tag": "Expr", "src": code})
        self.emit("step", d=1, ctrl="effect:infer.op")
        self.emit("effect", d=1, op="infer.op", argsPreview=js_slice(stringify([args])))
        req = self.emit("llm_req", d=1, model=model, promptPreview=js_slice(args), receiptKey=key)
        self.ts += duration
        self.emit("llm_resp", d=1, valuePreview=js_slice(content), tokens=tokens, durationMs=duration, receiptKey=key)
        receipt: dict[str, Any] = {
            "key": key,
            "request": request,
            "response": {"content": content},
            "timestamp": req["ts"],
            "durationMs": duration,
        }
        if tokens is not None:
            receipt["tokens"] = tokens
        self.receipts[key] = receipt  # a key seen before keeps its place, takes the new value
        self.bind(f"answer{self.commands}", value)
        kont = [{"tag": "KEffect", "op": "infer.op", "resumeId": f"r{self.commands}"}]
        handlers = [{"tag": "Handler", "op": "infer.op", "depth": 1}]
        self.checkpoint(1, "llm_boundary", {"tag": "Val", "v": value}, kont=kont, handlers=handlers)
        self.emit("resume", d=1, valuePreview=js_slice(content))
        self.emit("result", value=stringify(content[:120]))
        self.checkpoint(0, "manual", {"tag": "Val", "v": value})

    def effect_command(self) -> None:
        r = self.rng
        path = f"/home/user/notes/{r.choice(_WORDS)}-{r.randrange(100)}.txt"
        code = f'(effect file.read "{path}")'
        text = self.words(r.randrange(20, 400), odd=0.05)
        self.emit("input", code=code)
        self.steps(code, r.randrange(1, 3))
        self.emit("effect", d=1, op="file.read", argsPreview=js_slice(stringify([path])))
        value = {"tag": "Str", "s": text[:100]}
        self.checkpoint(
            1,
            "effect",
            {"tag": "Val", "v": value},
            kont=[{"tag": "KEffect", "op": "file.read", "resumeId": f"e{self.commands}"}],
        )
        self.emit("resume", d=1, valuePreview=js_slice(text))
        self.emit("result", value=stringify(text[:100]))
        self.checkpoint(0, "manual", {"tag": "Val", "v": value})

    def error_command(self) -> None:
        name = f"{self.rng.choice(NAMES)}-{self.rng.randrange(1000)}"
        code = f"({name} {self.rng.randrange(10)})"
        self.emit("input", code=code)
        self.steps(code, 1)
        msg = f"unbound var {name}"
        self.emit("error", d=0, message=msg, stack=_STACK.format(msg=msg) if self.rng.random() < 0.9 else None)

    def interrupted(self) -> None:
        """A command cut short (the REPL was killed): the index does not see it."""
        code = f"(fib{self.rng.randrange(100)} 35)"
        self.emit("input", code=code)
        self.steps(code, 2)


# ------------------------------------------------------------------------ files
@dataclass
class SessionFiles:
    jsonl: bytes
    index: bytes
    events: int
    checkpoints: int
    receipts: int
    lone_surrogate_lines: int


def render(header_id: str, created: str, gen: SessionGen, index_id: str | None = None) -> SessionFiles:
    """The two files of ``gen``'s session as the legacy writer left them."""
    lines = [(stringify({"type": "session", "version": 1, "id": header_id, "created": created}) + "\n").encode()]
    size = len(lines[0])
    offsets: dict[int, int] = {}
    limit = 0
    receipt_keys: dict[str, None] = {}
    lone = 0
    for e in gen.events:
        text = stringify(e) + "\n"
        line = text.encode("utf-8")  # strict: stringify escapes lone surrogates
        if "\\ud" in text:
            lone += 1
        if e["type"] == "checkpoint":
            offsets[e["seq"]] = size
        elif e["type"] == "llm_resp":
            receipt_keys.setdefault(e["receiptKey"], None)
        if e["type"] in INDEX_TRIGGERS:
            limit = e["seq"] + 1
        size += len(line)
        lines.append(line)
    cps = [e for e in gen.events[:limit] if e["type"] == "checkpoint"]
    index = {
        "sessionId": index_id or header_id,
        "eventCount": limit,
        "checkpoints": [
            {"seq": e["seq"], "byteOffset": offsets[e["seq"]], "stateId": e["stateId"], "reason": e["reason"]}
            for e in cps
        ],
        "states": {e["stateId"]: gen.states[e["stateId"]] for e in cps},
        "receipts": {k: gen.receipts[k] for k in gen.receipts if k in receipt_keys},
    }
    return SessionFiles(
        b"".join(lines), stringify(index, 2).encode("utf-8"), len(gen.events), len(cps), len(index["receipts"]), lone
    )


def _generate(
    seed: str, ts0: int, n_commands: int, fork_at: int | None = None, fork_seed: str = "", interrupted: bool = False
) -> SessionGen:
    gen = SessionGen(seed, ts0)
    for i in range(n_commands):
        if fork_at is not None and i == fork_at:  # the fork goes its own way from here
            gen.rng = random.Random(fork_seed)
            gen.ts += gen.rng.randrange(60_000, 3_600_000)
            gen.fork_ts = gen.ts - gen.rng.randrange(1, 20)
        gen.command()
    if interrupted:
        gen.interrupted()
    return gen


def build_corpus(root: str, spec: CorpusSpec) -> CorpusStats:
    """Write the corpus under ``root`` (replacing what is there)."""
    t0 = time.perf_counter()
    sessions = os.path.join(root, "sessions")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(sessions)
    os.makedirs(os.path.join(root, "receipts"))
    stats = CorpusStats(root, spec)
    rng = random.Random(spec.seed)
    bases: list[tuple[str, str, int, int]] = []  # name, seed, ts0, commands
    last_files: SessionFiles | None = None  # of bases[-1]

    def write(name: str, files: SessionFiles) -> None:
        for ext, data in ((".jsonl", files.jsonl), (".index.json", files.index)):
            with open(os.path.join(sessions, name + ext), "wb") as f:
                f.write(data)
        stats.sessions += 1
        stats.events += files.events
        stats.checkpoints += files.checkpoints
        stats.receipts += files.receipts
        stats.lone_surrogate_lines += files.lone_surrogate_lines
        stats.jsonl_bytes += len(files.jsonl)
        stats.index_bytes += len(files.index)
        stats.names.append(name)

    for i in range(spec.sessions):
        n = rng.randrange(spec.min_commands, spec.max_commands + 1)
        if i % 10 == 7 and last_files is not None:
            write(f"saved-{bases[-1][0]}", last_files)  # `:session save`: both files copied verbatim
            last_files = None
        elif i % 10 == 4 and bases:
            pname, pseed, pts0, pn = rng.choice(bases)
            fork_at = rng.randrange(1, pn + 1)
            name = f"forked-{pname}-{i:04d}"
            gen = _generate(pseed, pts0, fork_at + n // 2, fork_at=fork_at, fork_seed=f"{spec.seed}/fork/{i}")
            write(name, render(name, iso_ms(gen.fork_ts), gen))
        else:
            name = f"repl-{i:04d}"
            seed, ts0 = f"{spec.seed}/{i}", 1795502415160 + i * 7_200_000
            gen = _generate(seed, ts0, n, interrupted=rng.random() < 0.05)
            last_files = render(name, iso_ms(ts0 - 3), gen)
            write(name, last_files)
            bases.append((name, seed, ts0, n))
    stats.build_s = time.perf_counter() - t0
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--scale", choices=sorted(SPECS), default=scale_name())
    parser.add_argument("--sessions", type=int, help="override the number of sessions")
    args = parser.parse_args()
    spec = SPECS[args.scale]
    if args.sessions:
        spec = CorpusSpec(spec.name, args.sessions, spec.min_commands, spec.max_commands, spec.seed)
    stats = build_corpus(args.out_dir, spec)
    print(json.dumps(stats.summary()))


if __name__ == "__main__":
    main()
