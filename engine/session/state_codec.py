"""Checkpoint states stored compactly against the previous state.

Successive states of a session are nearly identical, so each one is
lz4-compressed with the previous state's bytes as the dictionary (a 16 KB
state typically shrinks to under 100 bytes). Every ``KEYFRAME_EVERY``-th state
is compressed on its own, which bounds the chain a read has to decode.

A stored state is a dict::

    {"f": format, "b": base state id or None, "n": raw length, "z": lz4 block}

``format`` is ``"m"`` (``codec.pack_value`` of the state, states recorded through the
session layer) or ``"j"`` (the state's exact legacy JSON text, for imported
sessions, so materializing reproduces it byte for byte).

The persister adds ``"s"``, the seq of the state's checkpoint (-1: none). A base
is an earlier state, looked up by id through the session that reads (so it
may be a parent's). Stored states are never re-encoded: when the catalog
trims a deleted session that forks share, it copies the stored dicts as they
are, together with every state their chains go through (``state_base``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import lz4.block

from ..errors import CorruptionError
from ..log import codec

KEYFRAME_EVERY = 128
#: LZ4 HC level of a keyframe: the lowest. On REPL states it compresses within 0.5%
#: of the default level 9 at a third of the time (a keyframe is encoded inside a save
#: step, which a command may wait for; level 9 took 1 ms on the demo's states).
KEYFRAME_LEVEL = 3
MAX_CHAIN = 4 * KEYFRAME_EVERY


class StateEncoder:
    """Encodes the states of one session in order, remembering the previous one."""

    def __init__(
        self, prev_id: str | None = None, prev_raw: bytes | None = None, prev_fmt: str = "m", since_keyframe: int = 0
    ) -> None:
        self.prev_id = prev_id
        self.prev_raw = prev_raw
        self.prev_fmt = prev_fmt
        self.since_keyframe = since_keyframe

    def encode(self, state_id: str, raw: bytes, fmt: str = "m") -> dict[str, Any]:
        use_base = self.prev_raw is not None and self.prev_fmt == fmt and self.since_keyframe < KEYFRAME_EVERY - 1
        if use_base:
            assert self.prev_raw is not None
            z = lz4.block.compress(raw, dict=self.prev_raw, store_size=False)
            doc = {"f": fmt, "b": self.prev_id, "n": len(raw), "z": z}
            self.since_keyframe += 1
        else:
            z = lz4.block.compress(raw, store_size=False, mode="high_compression", compression=KEYFRAME_LEVEL)
            doc = {"f": fmt, "b": None, "n": len(raw), "z": z}
            self.since_keyframe = 0
        self.prev_id, self.prev_raw, self.prev_fmt = state_id, raw, fmt
        return doc


def state_base(doc: Any) -> str | None:
    """The id of the state a stored state is delta-encoded against (None: a keyframe,
    or not a stored state)."""
    base = doc.get("b") if isinstance(doc, dict) else None
    return base if isinstance(base, str) else None


def decode_raw(
    state_id: str, fetch: Callable[[str], Any], max_bytes: int, known: dict[str, tuple[str, bytes]] | None = None
) -> tuple[str, bytes]:
    """Return ``(format, raw bytes)`` of a stored state, following its base chain.

    ``fetch(state_id)`` returns the stored dict (or raises the caller's not-found
    error). ``known`` holds states already decoded (say, the previous one, when
    reading a session's states in order): the walk stops at the first of them.
    """
    known = known or {}
    chain: list[dict[str, Any]] = []
    sid: str | None = state_id
    start: tuple[str, bytes] | None = None
    while sid is not None:
        if sid in known:
            start = known[sid]
            break
        doc = fetch(sid)
        if not isinstance(doc, dict) or not {"f", "b", "n", "z"} <= doc.keys():
            raise CorruptionError(f"state {sid!r} is not a stored state")
        chain.append(doc)
        if len(chain) > MAX_CHAIN:
            raise CorruptionError(f"state {state_id!r} has a base chain longer than {MAX_CHAIN}")
        sid = doc["b"]
    if not chain:
        assert start is not None
        return start
    raw = start[1] if start is not None else b""
    for doc in reversed(chain):
        n = doc["n"]
        if not isinstance(n, int) or n < 0 or n > max_bytes:
            raise CorruptionError(f"state claims {n} bytes, more than the limit {max_bytes}")
        try:
            if doc["b"] is None:
                raw = lz4.block.decompress(doc["z"], uncompressed_size=n)
            else:
                raw = lz4.block.decompress(doc["z"], uncompressed_size=n, dict=raw)
        except lz4.block.LZ4BlockError as exc:
            raise CorruptionError(f"state {state_id!r} does not decompress: {exc}") from exc
    return chain[0]["f"], raw


def raw_to_value(fmt: str, raw: bytes) -> Any:
    if fmt == "m":
        return codec.unpack_value(raw)
    if fmt == "j":
        return json.loads(raw.decode("utf-8", "surrogatepass"))
    raise CorruptionError(f"unknown state format {fmt!r}")
