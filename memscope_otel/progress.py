"""A one-line progress indicator for long command-line work (``report`` over a big dump).

It draws only on a terminal, rewriting one line in place with a carriage return, at most ten
times a second, and erases it when done, so that a report piped to a file or read by a program
contains nothing of it.
"""
from __future__ import annotations

import sys
import time


class TerminalProgress:
    """Call it with ``(done, total)``; ``finish()`` erases the line. Silent when ``stream`` is not
    a terminal."""

    def __init__(self, label: str, stream=None, min_interval_s: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._min_interval_s = min_interval_s
        self._last_draw = 0.0
        self._width = 0

    def note(self, text: str):
        """Shows ``text`` on the progress line (a phase without a measurable fraction)."""
        self._draw(f"{self.label}: {text}")

    def __call__(self, done: int, total: int):
        now = time.monotonic()
        if not self.enabled or (now - self._last_draw < self._min_interval_s and done < total):
            return
        self._last_draw = now
        share = 100.0 * done / total if total > 0 else 100.0
        self._draw(f"{self.label}: {share:5.1f}% ({done:,} of {total:,} records)")

    def _draw(self, text: str):
        if not self.enabled:
            return
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def finish(self):
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
