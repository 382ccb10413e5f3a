"""A small progress bar for long command-line runs (stderr, terminals only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.clikit import isatty


class Progress:
    """``update()`` once per item, ``close()`` at the end.

    Draws on a terminal only, after ``delay`` seconds of work, at most 10 times a
    second; once it has been drawn, the final state (``total/total`` when every
    item was counted) is always drawn, by the update that reaches the total or by
    ``close()``, which then ends the line.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None, delay: float = 0.5) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = isatty(self.stream)
        self.done = 0
        self._start = time.monotonic()
        self._delay = delay
        self._last = 0.0
        self._started = False  # drawn at least once
        self._drawn = False  # on the screen now
        self._shown = -1  # the count last drawn

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self._delay:
            return
        if self.done >= self.total or now - self._last >= 0.1:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last = now
        width = 30
        filled = min(width, width * self.done // max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        self.stream.flush()
        self._started = self._drawn = True
        self._shown = self.done

    def interrupt(self) -> None:
        """Clear the bar's line, to print something else there; the next update draws it again."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
            self._last = 0.0

    def close(self) -> None:
        """Draw the final state (if the bar was ever drawn) and end its line."""
        if not self._started:
            return
        if not self._drawn or self._shown != self.done:
            self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()
        self._started = self._drawn = False
