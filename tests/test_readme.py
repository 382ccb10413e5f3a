"""The README's Python examples run as written (paths moved to a temp dir)."""

from __future__ import annotations

import re
from pathlib import Path

from samples import REPO


def _blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick = text[text.index("## Quickstart") : text.index("## asyncio")]  # the blocks run in order
    return re.findall(r"```python\n(.*?)```", quick, re.S)


def test_quickstart_examples_run(tmp_path: Path) -> None:
    blocks = _blocks()
    assert len(blocks) == 3
    namespace: dict[str, object] = {"machine_state": {"env": [["x", 10]]}}  # the blocks run in order
    for i, code in enumerate(blocks):
        code = code.replace("/var/lib/repl/store", str(tmp_path / "store"))
        code = code.replace("/var/backups/repl-store", str(tmp_path / "backup"))
        exec(compile(code, f"README block {i}", "exec"), namespace)
    assert (tmp_path / "backup" / "MANIFEST").is_file()
    import engine

    with engine.open(tmp_path / "store", readonly=True) as store:
        assert len(store.streams()) >= 3, "the sessions were saved when the block was left"


def test_asyncio_example_runs(tmp_path: Path) -> None:
    import asyncio

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## asyncio") : text.index("## Durability")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict[str, object] = {}
    exec(compile(code.replace("/var/lib/repl/store", str(tmp_path / "store")), "README asyncio", "exec"), namespace)
    asyncio.run(namespace["serve"]())  # type: ignore[operator]
    import engine

    with engine.open(tmp_path / "store", readonly=True) as store:
        assert store.read_range("session-1")[0]["code"] == "(+ 1 2)"
