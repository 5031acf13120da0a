"""A plain progress bar on stderr: redrawn in place on a terminal, a few lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``update(fraction, text)`` as often as you like; it draws at most ten times a second."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._next_line = 0.25  # without a terminal: one line per quarter
        self._drawn = False

    def update(self, fraction: float, text: str) -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and fraction < 1.0:
                return
            self._last_draw = now
            filled = round(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {fraction:4.0%}  {text}\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif fraction >= self._next_line:
            self.stream.write(f"  {fraction:4.0%}  {text}\n")
            self.stream.flush()
            while self._next_line <= fraction:
                self._next_line += 0.25

    def close(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
