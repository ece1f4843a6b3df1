"""``memscope-otel top``: a live view of a process's allocations, refreshed every interval.

Readings come from a program started tracked (``top -- PROGRAM``: ``TrackedProcess``, whose child
sends one per interval) or from a ``/metrics`` page (``top --url``). On a terminal the view is
drawn with the standard library's ``curses``; ``q`` or Ctrl-C leaves. When stdout is not a
terminal, one plain line per interval is printed instead (``-n`` ends after that many).

Leaving while the program still runs ends it (SIGTERM, SIGKILL 5 s later; a Ctrl-C at the
terminal reaches it directly). When the program ends by itself, the plain mode ends with it and
``top`` exits the way the program did; the terminal view shows its last reading until ``q``,
then does the same.
"""
from __future__ import annotations

import sys
import time

from .prometheus_reading import PageError, read_url
from .top_view import HEADER, TITLE, plain_line, screen_lines


class UrlSource:
    """Readings of a ``/metrics`` page, one fetch per interval."""

    def __init__(self, url: str):
        self.url = url
        self.title = url
        self.ended_status = None  # a page never "ends"
        self.problem = None       # why the last fetch failed, while it fails
        self._fetched_at = time.monotonic()  # when the last fetch, good or failed, began

    def first(self):
        self._fetched_at = time.monotonic()
        return read_url(self.url)  # PageError ends the command with its message

    def next(self, previous, interval_s: float):
        # Paced from the last attempt, not the last success: a page that stopped answering is
        # asked again once per interval, not as fast as its refusals come back.
        time.sleep(max(0.0, self._fetched_at + interval_s - time.monotonic()))
        self._fetched_at = time.monotonic()
        try:
            reading = read_url(self.url)
        except PageError as exc:
            self.problem = str(exc)
            return None
        self.problem = None
        return reading

    def status(self) -> str:
        return f"last read failed: {self.problem}" if self.problem else "reading every interval"

    def close(self):
        return 0


class ProcessSource:
    """Readings sent by a program that ``top`` started tracked."""

    def __init__(self, process):
        from shlex import join

        self.process = process
        self.title = f"pid {process.process.pid}: {join(process.command)}"
        self.ended_status = None
        self.problem = None

    def first(self):
        reading = self.process.wait_for_reading(None, timeout=None)
        if reading is None:
            if self.process.error is None and self.process.poll() is None:
                raise PageError("the tracker did not start in the program (OTEL_PYTHON_MEMSCOPE_ENABLED=false "
                                "or OTEL_SDK_DISABLED=true?)")
            raise PageError(self.process.error or "the program ended before it sent a reading")
        self._check_end(reading)
        return reading

    def next(self, previous, interval_s: float):
        reading = self.process.wait_for_reading(previous, timeout=interval_s * 1.5)
        self._check_end(reading)
        return reading

    def _check_end(self, reading=None):
        # A final reading is sent from the program's exit handlers, and a stream that ended says
        # the process is going: wait for its status rather than ask again and again.
        ending = (reading is not None and reading.final) or not self.process.streaming()
        if self.ended_status is None and (ending or self.process.poll() is not None):
            self.ended_status = self.process.wait()

    def status(self) -> str:
        if self.ended_status is None:
            return "running"
        from .run_summary import describe_status

        return f"the program ended ({describe_status(self.ended_status)})"

    def close(self):
        """Ends the program if it still runs; returns its status."""
        return self.process.stop()


def run_plain(source, interval_s: float, iterations, out=sys.stdout) -> None:
    """One line per interval until the source ends, ``iterations`` lines were printed, or Ctrl-C."""
    before, after = None, source.first()
    printed = 0
    try:
        while True:
            out.write(plain_line(before, after) + "\n")
            out.flush()
            printed += 1
            if (iterations is not None and printed >= iterations) or source.ended_status is not None:
                return
            reading = source.next(after, interval_s)
            while reading is None:
                if source.ended_status is not None:  # ended without another reading (a signal)
                    return
                if source.problem:  # a failed refresh is a refresh: it is printed and counted
                    out.write(f"{time.strftime('%H:%M:%S')} {source.problem}\n")
                    out.flush()
                    printed += 1
                    if iterations is not None and printed >= iterations:
                        return
                reading = source.next(after, interval_s)
            before, after = after, reading
    except KeyboardInterrupt:
        return


def run_screen(source, interval_s: float, iterations) -> None:
    """The terminal view until ``q``, Ctrl-C, or ``iterations`` refreshes."""
    import curses

    first = source.first()

    def loop(screen):
        for optional in (lambda: curses.curs_set(0), curses.use_default_colors):
            try:  # not every terminal can hide the cursor or keep its own colours
                optional()
            except curses.error:
                pass
        styles = {HEADER: curses.A_REVERSE, TITLE: curses.A_BOLD}
        screen.timeout(100)  # getch() waits at most this long: keys are seen within 0.1 s
        before, after = None, first
        refreshes = 0
        next_at = time.monotonic()
        while True:
            if time.monotonic() >= next_at:
                if refreshes:
                    reading = source.next(after, 0.0) if source.ended_status is None else None
                    if reading is not None:
                        before, after = after, reading
                height, width = screen.getmaxyx()
                screen.erase()
                for row, (style, text) in enumerate(screen_lines(source.title, source.status(), before, after,
                                                                 width, height)):
                    screen.addstr(row, 0, text, styles.get(style, curses.A_NORMAL))
                screen.redrawwin()  # repaint all: the program may have written over the view
                screen.refresh()
                refreshes += 1
                if iterations is not None and refreshes >= iterations:
                    return
                next_at = time.monotonic() + interval_s
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == curses.KEY_RESIZE:
                next_at = time.monotonic()

    try:
        curses.wrapper(loop)
    except KeyboardInterrupt:
        pass
