"""The parent's side of a tracked program: start it under ``child_bootstrap``, collect its readings,
and end the way it ended.

The program runs in a child process so that its exit status, its signals and its standard
streams stay its own: the child inherits stdin, stdout and stderr untouched, and the readings
travel on a private pipe. The parent ignores SIGINT while the child runs (a Ctrl-C at the terminal
reaches the whole foreground process group, so the child gets it anyway, and the parent must live
on to print what it learnt), and passes SIGTERM and SIGHUP on to the child.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from .child_bootstrap import BOOTSTRAP_CODE
from .reading_stream import ReadingDecoder, StreamError

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interpreter_flags() -> list:
    """This interpreter's -X, -W, -O... options, for the child (as multiprocessing passes them on)."""
    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


class ProgramError(Exception):
    """The program cannot be started (missing script or module, missing exporter)."""


class TrackedProcess:
    """A program running tracked in a child process, with the readings it has sent so far."""

    def __init__(self, command, *, interval_s: float = 1.0, exporter: str = "none", export_interval_ms=None,
                 dump=None, stdin=None):
        if not command:
            raise ProgramError("give a program to run: -- PROGRAM [ARGS] or -- -m MODULE [ARGS]")
        if command[0] == "-m" and len(command) < 2:
            raise ProgramError("-m needs a module name")
        if command[0] != "-m" and not os.path.exists(command[0]):  # (a directory or zip with a
            raise ProgramError(f"no such file: {command[0]}")     # __main__.py runs, as with python)
        self.command = list(command)
        self.latest = None       # the last Reading received
        self.timeline = []       # [(time_s, allocations, bytes allocated, live bytes)] of every reading
        self.error = None        # what the child reported when it could not start the program
        self._changed = threading.Condition()
        self._ended = False  # the stream of readings has ended
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, *_interpreter_flags(), "-c", BOOTSTRAP_CODE,
                "--readings-fd", str(write_fd), "--interval-s", str(interval_s), "--exporter", exporter]
        if export_interval_ms:
            argv += ["--export-interval-ms", str(export_interval_ms)]
        if dump:
            argv += ["--dump", str(dump)]
        argv += ["--", *command]
        try:
            self.process = subprocess.Popen(argv, pass_fds=(write_fd,), stdin=stdin)
        finally:
            os.close(write_fd)
        self._reader = threading.Thread(target=self._read, args=(read_fd,), name="memscope-reading-reader",
                                        daemon=True)
        self._reader.start()

    def _read(self, fd):
        try:
            self._read_stream(fd)
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _read_stream(self, fd):
        decoder = ReadingDecoder()
        with os.fdopen(fd, "rb") as stream:
            for line in stream:
                try:
                    reading = decoder.decode(line)
                except StreamError as exc:
                    self.error = str(exc)
                    continue
                except (ValueError, KeyError, TypeError):  # not ours: a program that wrote on our descriptor
                    continue
                with self._changed:
                    self.latest = reading
                    self.timeline.append((reading.time_s, reading.total_allocations, reading.total_allocated,
                                          reading.total_live))
                    self._changed.notify_all()

    def wait_for_reading(self, after=None, timeout: float | None = None):
        """The latest reading once it is not ``after`` (or None when ``timeout`` passed first, or the
        program ended without sending a new one)."""
        with self._changed:
            self._changed.wait_for(lambda: self.latest is not after or self._ended, timeout)
            return self.latest if self.latest is not after else None

    def streaming(self) -> bool:
        """False once the stream of readings has ended (the program is ending or has ended)."""
        with self._changed:
            return not self._ended

    def poll(self):
        return self.process.poll()

    def wait(self) -> int:
        """Waits for the program (SIGINT ignored, SIGTERM/SIGHUP passed on to it) and for the rest of
        its readings; returns its status as subprocess does (-N: killed by signal N)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
            for sig in FORWARDED_SIGNALS:
                previous[sig] = signal.signal(sig, self._forward)
        try:
            status = self.process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # The pipe ends with the child; a grandchild that kept it open is not waited for long.
        self._reader.join(timeout=5)
        return status

    def _forward(self, signum, _frame):
        try:
            self.process.send_signal(signum)
        except OSError:
            pass

    def stop(self, grace_s: float = 5.0) -> int:
        """Ends the program if it still runs (SIGTERM, then SIGKILL after ``grace_s``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()


def exit_like(status: int):
    """Ends this process the way the child ended: the same exit code, or death by the same signal.

    A signal that would dump core is re-raised with core dumps turned off (the shell still reports
    the signal; a core of memscope-otel itself would only mislead). Should the signal not end this
    process (it is blocked), the exit code is 128 + N, as shells report a death by signal N."""
    if status >= 0:
        sys.exit(status)
    signum = -status
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):
        pass
    try:
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)
