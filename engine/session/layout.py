"""Where the session layer keeps things in a store: every stream name and blob key.

Nothing else in the session layer (or in compat, which goes through the
session layer) spells out one of these names.

A session has an internal id ``uid`` (a hex string: sessions are addressed by
uid inside the store, so a name can be deleted and used again) and owns two
streams of its current *generation* ``g`` (``SessionMeta.generation``; 0 for
every session that was never trimmed):

``ev/<uid>`` (``ev/<uid>.<g>`` for g >= 1)  its own events (engine seq ``k`` is
REPL seq ``base + k``), and the blobs

    ``state/<stateId>``        a checkpoint state, delta-compressed (``state_codec``),
                               with the seq of its checkpoint
    ``receipt/<key>``          ``{seq, receipt, prev}``: the last version of receipt ``key``
    ``receipt/<key>@<seq>``    the earlier version recorded at ``seq`` (forks made
                               before the later one still see it)
    ``legacy/jsonl``,          an imported session's source bytes, kept when rendering
    ``legacy/index``           its parts does not reproduce them

``cp/<uid>`` (``cp/<uid>.<g>`` for g >= 1)  one entry per checkpoint: ``{seq, stateId, reason}``

A session's generation changes only when the catalog trims a deleted session
that forks still share (see ``catalog.py``): it copies what the forks can reach
into the streams of the next generation, switches the meta to them (one
record) and drops the old ones. A stream owned by a uid whose meta names the
streams of another generation (or is None) is an orphan, left by a crash in
that sequence or in a drop, and ``collect()`` drops it (it looks for orphans
once after opening, and again after a collect that failed part way).

The stream ``catalog`` lists the sessions:

    ``name/<name>``            the uid of the session called ``name`` (None once deleted)
    ``meta/<uid>``             its SessionMeta (None once its data is gone)
    ``snapshot/<name>``        an imported ``repl-<name>.json`` snapshot: ``{digest, raw}``
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

#: The stream of the catalog (see ``catalog.py``).
CATALOG = "catalog"

_EV = "ev/"
_CP = "cp/"
_STATE = "state/"
_RECEIPT = "receipt/"
_NAME = "name/"
_META = "meta/"
_SNAPSHOT = "snapshot/"

#: Blob keys of an imported session's source files.
LEGACY_JSONL = "legacy/jsonl"
LEGACY_INDEX = "legacy/index"


# -- a session's streams ---------------------------------------------------------------
_GEN = "."  # separates a uid from its generation (uids are hex: never part of a uid)


def _named(prefix: str, uid: str, generation: int) -> str:
    if generation < 0:
        raise ValueError(f"a generation is never negative, not {generation}")
    return prefix + uid if generation == 0 else f"{prefix}{uid}{_GEN}{generation}"


def ev_stream(uid: str, generation: int = 0) -> str:
    """The stream of the session's events, states and receipts (of that generation)."""
    return _named(_EV, uid, generation)


def cp_stream(uid: str, generation: int = 0) -> str:
    """The stream of the session's checkpoint entries (of that generation)."""
    return _named(_CP, uid, generation)


def session_streams(uid: str, generation: int = 0) -> tuple[str, str]:
    """Every stream the session owns in that generation: ``(events, checkpoints)``."""
    return ev_stream(uid, generation), cp_stream(uid, generation)


def stream_generation(stream: str) -> tuple[str, int] | None:
    """``(uid, generation)`` of a session's stream, or None (the catalog, a stream
    the session layer did not write)."""
    for prefix in (_EV, _CP):
        if stream.startswith(prefix) and len(stream) > len(prefix):
            rest = stream[len(prefix) :]
            uid, sep, tail = rest.rpartition(_GEN)
            if sep and uid and tail.isdigit() and tail.isascii() and tail[0] != "0":
                return uid, int(tail)
            return rest, 0
    return None


def stream_owner(stream: str) -> str | None:
    """The uid of the session that owns ``stream`` (in any generation), or None (the
    catalog, a stream the session layer did not write)."""
    found = stream_generation(stream)
    return found[0] if found is not None else None


# -- blobs of a session's event stream -----------------------------------------------
def state_key(state_id: str) -> str:
    return _STATE + state_id


def receipt_key(key: str) -> str:
    """The blob of the last version of receipt ``key``."""
    return _RECEIPT + key


def receipt_version_key(key: str, seq: int) -> str:
    """The blob of the version of receipt ``key`` recorded at ``seq``."""
    return f"{_RECEIPT}{key}@{seq}"


def split_receipt_version(name: str) -> tuple[str, int] | None:
    """``(key, seq)`` when ``name`` (a ``receipt/`` blob key without its prefix) has the
    form of an earlier version's blob, ``<key>@<seq>``; else None."""
    key, sep, tail = name.rpartition("@")
    digits = tail[1:] if tail.startswith("-") else tail
    if not (sep and key and digits.isdigit() and digits.isascii()) or str(int(tail)) != tail:
        return None
    return key, int(tail)


def state_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, state id)`` of the ``state/`` blobs among ``keys``."""
    return _suffixes(keys, _STATE)


def receipt_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, what follows the prefix)`` of the ``receipt/`` blobs among ``keys``: the
    receipt key of a last version, ``<key>@<seq>`` of an earlier one (one of the
    form of ``split_receipt_version`` whose ``<key>`` has a last version too)."""
    return _suffixes(keys, _RECEIPT)


# -- blobs of the catalog stream ------------------------------------------------------
def name_key(name: str) -> str:
    return _NAME + name


def meta_key(uid: str) -> str:
    return _META + uid


def snapshot_key(name: str) -> str:
    return _SNAPSHOT + name


def _suffixes(keys: Iterable[str], prefix: str) -> Iterator[tuple[str, str]]:
    for key in keys:
        if key.startswith(prefix):
            yield key, key[len(prefix) :]


def name_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, session name)`` of the ``name/`` blobs among ``keys``."""
    return _suffixes(keys, _NAME)


def meta_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, uid)`` of the ``meta/`` blobs among ``keys``."""
    return _suffixes(keys, _META)


def snapshot_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, snapshot name)`` of the ``snapshot/`` blobs among ``keys``."""
    return _suffixes(keys, _SNAPSHOT)
