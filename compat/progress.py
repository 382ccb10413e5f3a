"""A small progress bar for long command-line runs (stderr, terminals only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update()`` once per item; draws after ``delay`` seconds, at most 10 times a second."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, delay: float = 0.5) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0
        self._start = time.monotonic()
        self._delay = delay
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._start >= self._delay and now - self._last >= 0.1:
            self._last = now
            width = 30
            filled = width * self.done // self.total
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
