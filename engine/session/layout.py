"""Where the session layer keeps things in a store: every stream name and blob key.

Nothing else in the session layer (or in compat, which goes through the
session layer) spells out one of these names.

A session has an internal id ``uid`` (sessions are addressed by uid inside
the store, so a name can be deleted and used again) and owns two streams:

``ev/<uid>``  its own events (engine seq ``k`` is REPL seq ``base + k``), and the blobs

    ``state/<stateId>``        a checkpoint state, delta-compressed (``state_codec``),
                               with the seq of its checkpoint
    ``receipt/<key>``          ``{seq, receipt, prev}``: the last version of receipt ``key``
    ``receipt/<key>@<seq>``    the earlier version recorded at ``seq`` (forks made
                               before the later one still see it)
    ``legacy/jsonl``,          an imported session's source bytes, kept when rendering
    ``legacy/index``           its parts does not reproduce them

``cp/<uid>``  one entry per checkpoint: ``{seq, stateId, reason}``

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
def ev_stream(uid: str) -> str:
    """The stream of the session's events, states and receipts."""
    return _EV + uid


def cp_stream(uid: str) -> str:
    """The stream of the session's checkpoint entries."""
    return _CP + uid


def session_streams(uid: str) -> tuple[str, str]:
    """Every stream the session owns."""
    return ev_stream(uid), cp_stream(uid)


def stream_owner(stream: str) -> str | None:
    """The uid of the session that owns ``stream``, or None (the catalog, a stream
    the session layer did not write)."""
    for prefix in (_EV, _CP):
        if stream.startswith(prefix) and len(stream) > len(prefix):
            return stream[len(prefix):]
    return None


# -- blobs of a session's event stream -----------------------------------------------
def state_key(state_id: str) -> str:
    return _STATE + state_id


def receipt_key(key: str) -> str:
    """The blob of the last version of receipt ``key``."""
    return _RECEIPT + key


def receipt_version_key(key: str, seq: int) -> str:
    """The blob of the version of receipt ``key`` recorded at ``seq``."""
    return f"{_RECEIPT}{key}@{seq}"


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
            yield key, key[len(prefix):]


def name_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, session name)`` of the ``name/`` blobs among ``keys``."""
    return _suffixes(keys, _NAME)


def meta_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, uid)`` of the ``meta/`` blobs among ``keys``."""
    return _suffixes(keys, _META)


def snapshot_keys(keys: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(key, snapshot name)`` of the ``snapshot/`` blobs among ``keys``."""
    return _suffixes(keys, _SNAPSHOT)
