"""Hypothesis strategies shared by the engine's tests: values msgpack stores."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: Text, including lone surrogates (they must round-trip) and non-BMP characters.
ODD_TEXTS = ["\ud83d", "a\udc00b", "\udfff\ud800", "é🙂"]


def msgpack_values(text_size: int, binary_size: int, width: int, leaves: int) -> st.SearchStrategy[Any]:
    """Nested lists and dicts of None, bools, 64-bit ints, floats, text and bytes."""
    texts = st.text(max_size=text_size) | st.sampled_from(ODD_TEXTS)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False)
        | texts
        | st.binary(max_size=binary_size)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=width) | st.dictionaries(texts, children, max_size=width),
        max_leaves=leaves,
    )
