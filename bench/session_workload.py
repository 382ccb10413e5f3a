"""REPL session workload for the session-layer benchmarks, built from the real states.

The machine states come from the legacy samples (``shared/legacy-samples/*/sessions/
*.index.json``: real checkpoint states of about 16 KB of JSON each). A session starts
from the latest real state and every command changes a few entries of the previous
state, as the REPL does:

* every command sets ``control`` to its value and rebinds one or two existing
  ``storeEntries`` (a ``set!``, a redefinition);
* a ``define`` (and every LLM call, which binds its answer) adds a store entry,
  bumps ``storeNext`` and adds the name's two ``frameEntries``;
* the user part of the store is bounded (the oldest unreachable entry is collected
  once there are ``MAX_USER_ENTRIES``), so states stay ~16-19 KB, as in the samples.

Successive states are therefore nearly identical. They share structure (each new
state copies only the containers it changes), so holding many of them is cheap and
a state is never mutated after it was handed out.

One REPL command records: 1 ``input``, 20 ``step``, 1 ``result`` and 1 ``checkpoint``
with its state; every third command also an ``effect``, an ``llm_req``, an
``llm_resp`` with a ~2 KB receipt (``{key, request: {op, args}, response:
{content}, timestamp, durationMs}``, the samples' shape) and a ``resume``.

:func:`record` replays a :class:`Command` on anything with the recording API of
:class:`engine.SessionInstance` (the legacy writer has the same one).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
#: ``shared/`` sits beside the repository (the CI clone too); override with SEGLOG_LEGACY_SAMPLES.
DEFAULT_SAMPLES = os.path.join(os.path.dirname(BENCH_DIR), "..", "shared", "legacy-samples")
BASE_SAMPLE = "mock-effects/sessions/mock-effects.index.json"
BASE_STATE = "state-38"

STEPS_PER_COMMAND = 20
LLM_EVERY = 3  # every third command calls the LLM
MAX_USER_ENTRIES = 12  # user-defined store entries kept before the oldest is collected
RECEIPT_BYTES = 2048  # compact JSON size aimed at for a receipt
PREVIEW = 200  # length of the REPL's LLM previews (UTF-16 code units, as JavaScript counts)

_MODELS = ("claude-sonnet-4", "claude-3-5-haiku", "gpt-4o-mini")
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
    "as",
    "with",
    "on",
    "be",
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
    "expression",
    "symbol",
    "number",
    "string",
    "predicate",
    "lambda",
    "macro",
    "define",
    "summary",
    "notes",
    "user",
    "question",
    "answer",
    "example",
    "because",
    "which",
    "when",
    "then",
    "first",
    "second",
    "next",
    "finally",
    "order",
    "invoice",
    "customer",
    "report",
    "table",
    "row",
    "total",
    "average",
    "count",
    "filter",
    "map",
    "reduce",
    "sort",
    "group",
    "key",
    "field",
    "date",
)
NAMES = (
    "x",
    "y",
    "n",
    "acc",
    "xs",
    "total",
    "rate",
    "items",
    "user",
    "cfg",
    "limit",
    "scores",
    "word",
    "text",
    "k",
    "step",
    "depth",
    "memo",
    "queue",
    "seen",
)
FNS = (
    "sq",
    "fact",
    "fib",
    "inc",
    "twice",
    "compose",
    "avg",
    "clamp",
    "summarize",
    "ask",
    "tokenize",
    "rank",
    "merge",
    "walk",
    "classify",
    "normalize",
)
OPS = ("+", "-", "*", "<", "=", ">=")


def samples_dir() -> str:
    return os.path.normpath(os.environ.get("SEGLOG_LEGACY_SAMPLES") or DEFAULT_SAMPLES)


def samples_available() -> bool:
    return os.path.isfile(os.path.join(samples_dir(), BASE_SAMPLE))


@lru_cache(maxsize=1)
def real_states() -> dict[str, dict[str, Any]]:
    """Every real state of the samples, by ``<sample file>#<state id>``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(samples_dir(), "*", "sessions", "*.index.json"))):
        with open(path, "rb") as f:
            index = json.load(f)
        rel = os.path.relpath(path, samples_dir())
        for sid, state in index["states"].items():
            out[f"{rel}#{sid}"] = state
    if not out:
        raise FileNotFoundError(f"no legacy samples under {samples_dir()} (set SEGLOG_LEGACY_SAMPLES)")
    return out


def base_state() -> dict[str, Any]:
    return real_states()[f"{BASE_SAMPLE}#{BASE_STATE}"]


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------ commands
@dataclass
class LlmCall:
    op: str
    args_preview: str
    model: str
    prompt_preview: str
    receipt_key: str
    value_preview: str
    duration_ms: int
    request: dict[str, Any]
    response: dict[str, Any]


@dataclass
class Command:
    code: str
    steps_before: list[tuple[int, str]]
    llm: LlmCall | None
    steps_after: list[tuple[int, str]]
    value: str
    reason: str
    state: dict[str, Any]

    @property
    def n_events(self) -> int:
        return 3 + len(self.steps_before) + len(self.steps_after) + (4 if self.llm else 0)


def record(s: Any, cmd: Command) -> None:
    """Record one command on ``s`` (a SessionInstance or a LegacyWriter), as the REPL does."""
    step = s.step
    s.input(cmd.code)
    for d, ctrl in cmd.steps_before:
        step(d, ctrl)
    llm = cmd.llm
    if llm is not None:
        s.effect(1, llm.op, llm.args_preview)
        s.llm_req(1, llm.model, llm.prompt_preview, llm.receipt_key)
        s.llm_resp(1, llm.value_preview, llm.duration_ms, llm.receipt_key, request=llm.request, response=llm.response)
        s.resume(1, llm.value_preview)
    for d, ctrl in cmd.steps_after:
        step(d, ctrl)
    s.result(cmd.value)
    s.checkpoint(0, cmd.reason, cmd.state)


_ATOM = re.compile(r'"[^"]*"|[^\s()]+')


def parenthesized_subforms(code: str) -> list[str]:
    """The parenthesized subforms of ``code``, outermost first."""
    forms: list[tuple[int, str]] = []
    stack: list[int] = []
    in_str = False
    for i, c in enumerate(code):
        if c == '"':
            in_str = not in_str
        elif in_str:
            continue
        elif c == "(":
            stack.append(i)
        elif c == ")" and stack:
            start = stack.pop()
            forms.append((start, code[start : i + 1]))
    return [f for _, f in sorted(forms)]


def subforms(code: str) -> list[str]:
    """The parenthesized subforms of ``code`` (outermost first) then its atoms: what the
    machine's ``ctrl`` shows while it evaluates the command."""
    out = parenthesized_subforms(code)
    out += [a for a in _ATOM.findall(code) if a not in ("define", "lambda")]
    return out or [code]


class SessionWorkload:
    """The commands of one session, generated on demand (deterministic per seed)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        base = base_state()
        self._template = base
        self.env_id: str = base["envId"]
        self._ctx: dict[str, Any] = base["ctxTable"][self.env_id]
        self._entries: list[list[Any]] = list(base["storeEntries"])
        self._frame: list[list[Any]] = list(self._ctx["frameEntries"])
        self._next: int = base["storeNext"]
        # Entries from the last native (the prelude) on are the user's.
        natives = [i for i, (_, v) in enumerate(self._entries) if v.get("tag") == "Native"]
        self._first_user = natives[-1] + 1 if natives else 0
        self._bid = 10
        self.count = 0
        self._closure_env = hashlib.sha256(f"closure-env-{seed}".encode()).hexdigest()

    # -- text ---------------------------------------------------------------------
    def _words(self, n_chars: int) -> str:
        rng, out, size = self.rng, [], 0
        while size < n_chars:
            w = rng.choice(_WORDS)
            out.append(w)
            size += len(w) + 1
        text = " ".join(out)[:n_chars]
        return text[0].upper() + text[1:] + "."

    def _num(self) -> int | float:
        r = self.rng
        return r.randrange(-50, 5000) if r.random() < 0.8 else round(r.uniform(-100, 100), r.randrange(1, 4))

    # -- state ----------------------------------------------------------------------
    def _user_slots(self) -> range:
        return range(self._first_user, len(self._entries))

    def _rebind(self, n: int) -> None:
        """Change the value of ``n`` existing user entries (copy-on-write)."""
        slots = self._user_slots()
        for _ in range(n):
            if not slots:
                return
            i = self.rng.choice(slots)
            idx, old = self._entries[i]
            if old.get("tag") == "Closure":
                new = dict(old)
                new["params"] = list(old["params"])
                new["params"][0] = f"{old['params'][0].split('$')[0]}$bid#{self._new_bid()}"
            elif old.get("tag") == "Str":
                new = {"tag": "Str", "s": self._words(self.rng.randrange(8, 60))}
            else:
                new = {"tag": "Num", "n": self._num()}
            self._entries[i] = [idx, new]

    def _new_bid(self) -> int:
        self._bid += 1
        return self._bid

    def _bind(self, name: str, value: dict[str, Any]) -> None:
        """A ``define``: new store entry, ``storeNext`` bumped, two frame entries."""
        idx = self._next
        self._next += 1
        self._entries.append([idx, value])
        self._frame.append([f"{name}$bid#{self._new_bid()}", idx])
        self._frame.append([name, idx])
        if len(self._entries) - self._first_user > MAX_USER_ENTRIES:
            old_idx = self._entries.pop(self._first_user)[0]
            self._frame = [fe for fe in self._frame if fe[1] != old_idx]

    def _state(self, control: dict[str, Any]) -> dict[str, Any]:
        ctx = dict(self._ctx)
        ctx["frameEntries"] = list(self._frame)
        self._ctx = ctx
        state = dict(self._template)  # same keys, same order as the real state
        state["control"] = control
        state["storeEntries"] = list(self._entries)
        state["storeNext"] = self._next
        state["ctxTable"] = {self.env_id: ctx}
        return state

    # -- commands ---------------------------------------------------------------------
    def _steps(self, code: str, n: int, d: int = 0) -> list[tuple[int, str]]:
        forms = subforms(code)
        return [(d, forms[i % len(forms)]) for i in range(n)]

    def _plain(self) -> tuple[str, str, dict[str, Any]]:
        """A non-LLM command: (code, result text, control)."""
        r = self.rng
        kind = r.random()
        if kind < 0.3:  # define a value
            name = f"{r.choice(NAMES)}{r.randrange(100)}"
            v = self._num()
            code = f"(define {name} {v})" if r.random() < 0.5 else f"(define {name} (+ {r.choice(NAMES)} {v}))"
            self._bind(name, {"tag": "Num", "n": v})
            return code, name, {"tag": "Val", "v": {"tag": "Unit"}}
        if kind < 0.55:  # define a function
            fn = f"{r.choice(FNS)}{r.randrange(100)}"
            p = r.choice(NAMES)
            op = r.choice(OPS)
            code = f"(define ({fn} {p}) ({op} {p} (if (< {p} {r.randrange(10)}) {p} ({op} {p} 1))))"
            body = {
                "tag": "App",
                "fn": {"tag": "Var", "name": op},
                "args": [
                    {"tag": "Var", "name": f"{p}$bid#{self._bid + 1}"},
                    {
                        "tag": "If",
                        "test": {
                            "tag": "App",
                            "fn": {"tag": "Var", "name": "<"},
                            "args": [{"tag": "Var", "name": p}, {"tag": "Num", "n": 3}],
                        },
                        "then": {"tag": "Var", "name": p},
                        "else": {
                            "tag": "App",
                            "fn": {"tag": "Var", "name": op},
                            "args": [{"tag": "Var", "name": p}, {"tag": "Num", "n": 1}],
                        },
                    },
                ],
            }
            self._bind(
                fn, {"tag": "Closure", "params": [f"{p}$bid#{self._bid + 1}"], "body": body, "envId": self._closure_env}
            )
            return code, fn, {"tag": "Val", "v": {"tag": "Unit"}}
        # an expression (may set! a variable)
        a, b = r.choice(NAMES), r.choice(NAMES)
        forms = (
            f"(map (lambda (v) (* v {r.randrange(2, 9)})) (list {a} {b} {r.randrange(100)}))",
            f"(reduce + 0 (filter even? (list {' '.join(str(r.randrange(50)) for _ in range(6))})))",
            f"(set! {a} (+ {a} {r.randrange(1, 20)}))",
            f'(string-append "{self._words(r.randrange(10, 40))}" (number->string {b}))',
            f"(let ((t (* {a} {b}))) (if (> t {r.randrange(1000)}) t (- t)))",
        )
        code = r.choice(forms)
        v = self._num()
        return code, str(v), {"tag": "Val", "v": {"tag": "Num", "n": v}}

    def _llm(self) -> tuple[str, LlmCall, str, dict[str, Any]]:
        r = self.rng
        question = self._words(r.randrange(20, 70))
        code = f'(effect infer.op "{question}")'
        content_len = RECEIPT_BYTES // 2 - 60
        args_len = RECEIPT_BYTES - content_len - 200
        args = f'"{question}") {self._words(args_len - len(question) - 3)}'
        content = self._words(content_len)
        key = hashlib.sha256(f"{self.seed}/{self.count}/{question}".encode()).hexdigest()
        llm = LlmCall(
            op="infer.op",
            args_preview=compact([args])[:PREVIEW],
            model=r.choice(_MODELS),
            prompt_preview=args[:PREVIEW],
            receipt_key=key,
            value_preview=content[:PREVIEW],
            duration_ms=r.randrange(300, 6000),
            request={"op": "infer.op", "args": args},
            response={"content": content},
        )
        self._bind(f"answer{self.count}", {"tag": "Str", "s": content[:PREVIEW]})
        return code, llm, compact(content[:80]), {"tag": "Val", "v": {"tag": "Str", "s": content[:80]}}

    def next(self) -> Command:
        """The next command, with the state after it."""
        self.count += 1
        self._rebind(self.rng.choice((1, 2)))
        if self.count % LLM_EVERY == 0:
            code, llm, value, control = self._llm()
            half = STEPS_PER_COMMAND // 2
            before = [*self._steps(code, half - 1), (1, f"effect:{llm.op}")]
            after = [(1, f"resume:{llm.op}"), *self._steps(code, half - 1)]
            reason = "llm_boundary"
        else:
            code, value, control = self._plain()
            llm = None
            before = self._steps(code, STEPS_PER_COMMAND)
            after = []
            reason = "manual"
        return Command(code, before, llm, after, value, reason, self._state(control))

    def commands(self, n: int) -> Iterator[Command]:
        for _ in range(n):
            yield self.next()


def session_name(i: int) -> str:
    return f"repl-{i:05d}"
