"""The start of the child process of ``memscope-otel run`` and ``memscope-otel top -- PROGRAM``.

The command line runs ``python -c BOOTSTRAP_CODE [options] -- PROGRAM [ARGS]``; this module then
starts the tracker, starts a thread that sends a reading (``reading_stream``) down a private pipe
every ``--interval-s`` seconds, and runs the program with ``runpy`` as ``python PROGRAM`` or
``python -m MODULE`` would: the same ``sys.argv``, ``sys.path[0]`` and ``__main__``, the process's
own stdin, stdout and stderr. Nothing of the program's ending is caught here (``SystemExit``, an
uncaught exception, ``KeyboardInterrupt``, a signal), so the process ends exactly as the program
would have alone; an exit handler sends one last reading first, marked final. A process that dies
by a signal sends no final reading: the parent then has the last periodic one.

The pipe's descriptor is not inherited by the program's own subprocesses, and a forked child
closes it, so the parent sees the end of the stream when this process ends.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import time

# Run with ``python -c``: sys.path[0] is then "" (the working directory), where a source checkout
# of memscope_otel (without its compiled sampler) would shadow the installed package. The code
# drops that entry before importing this module; main() puts the program's own entry back.
BOOTSTRAP_CODE = ("import sys\n"
                  "if sys.path and sys.path[0] == '':\n"
                  "    del sys.path[0]\n"
                  "from memscope_otel.child_bootstrap import main\n"
                  "main(sys.argv[1:])\n")


class ReadingPublisher:
    """Writes readings of the running tracker to a pipe: periodically from its own thread, and
    once more, marked final, when the process exits."""

    def __init__(self, fd: int, tracker, interval_s: float):
        from .reading_stream import ReadingEncoder

        self._fd = fd
        self._tracker = tracker
        self._interval_s = interval_s
        self._encoder = ReadingEncoder(time.monotonic())
        self._lock = threading.Lock()  # one writer at a time: the thread, or the exit handler
        self._stopping = threading.Event()
        self._pid = os.getpid()
        self._cpu_s = 0.0  # CPU time spent making readings, reported as part of the tracker's cost
        self._thread = threading.Thread(target=self._run, name="memscope-readings", daemon=True)

    def start(self):
        self._thread.start()
        # After the tracker's own exit handler was registered: atexit runs the last registered
        # first, so the final reading is taken while the tracker still runs.
        atexit.register(self.finish)
        os.register_at_fork(after_in_child=self._forget_in_fork)

    def _run(self):
        from . import sampler

        sampler.ignore_this_thread()  # making readings is the tracker's work, not the program's
        while not self._stopping.wait(self._interval_s):
            self._send(final=False)

    def _send(self, final: bool):
        import memscope_otel

        from . import sampler

        with sampler.ignored(), self._lock:
            if self._fd is None:
                return
            started = time.thread_time()
            snapshot = memscope_otel.snapshot()
            if snapshot is None:  # stopped by the program itself
                return
            if final and self._tracker.resolver.refine_names(now=True):
                snapshot = memscope_otel.snapshot()  # 3.10: sites renamed to their qualified names
            line = self._encoder.encode(snapshot, final=final, reporter_cpu_s=self._cpu_s,
                                        optimizer=self._tracker.optimizer)
            self._cpu_s += time.thread_time() - started  # (shows in the next reading)
            try:
                _write_all(self._fd, line)
            except OSError:  # the parent went away: the program runs on, unobserved
                self._close()

    def finish(self):
        """The exit handler: stops the thread, sends the final reading and closes the pipe."""
        if os.getpid() != self._pid or self._fd is None:
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self._send(final=True)
        except Exception as exc:  # the program's exit must never fail because of us
            sys.stderr.write(f"memscope-otel: the final reading failed: {exc}\n")
        self._close()

    def _forget_in_fork(self):
        # A forked child is another process: its readings would be mixed with this one's.
        self._stopping.set()
        self._close()

    def _close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _parser():
    parser = argparse.ArgumentParser(prog="memscope-otel (child)")
    parser.add_argument("--readings-fd", type=int, required=True)
    parser.add_argument("--interval-s", type=float, required=True)
    parser.add_argument("--exporter", choices=("none", "console", "otlp"), default="none")
    parser.add_argument("--export-interval-ms", type=int, default=None)
    parser.add_argument("--dump", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def _meter_provider(exporter: str, interval_ms):
    """None for the global provider (which the program may set up itself), else an SDK provider
    exporting the metrics to the console or over OTLP, as ``run --console/--otlp`` asked."""
    if exporter == "none":
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    if exporter == "otlp":
        metric_exporter = _otlp_metric_exporter()
    else:
        metric_exporter = ConsoleMetricExporter()
    interval = interval_ms or int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000") or 10000)
    return MeterProvider(metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval)])


def _otlp_metric_exporter():
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                              os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    try:
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    except ImportError:
        raise RuntimeError("--otlp needs the OTLP exporter: pip install 'memscope-otel[otlp]'") from None
    return OTLPMetricExporter()


def _module_error(module: str):
    """Why ``python -m module`` would fail to find ``module``, or None if it can be run."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"cannot import {module!r}: {exc}"
    if spec is None:
        return f"no module named {module!r}"
    return None


def main(argv):
    """Runs the program named after ``--`` tracked; returns only if the program returns."""
    args = _parser().parse_args(argv)
    fd = args.readings_fd
    os.set_inheritable(fd, False)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:1] == ["-m"]:
        sys.path.insert(0, os.getcwd())  # what python -m puts first
        problem = _module_error(command[1])
    elif os.path.isfile(command[0]):
        sys.path.insert(0, os.path.dirname(os.path.realpath(command[0])))  # what python SCRIPT does
        problem = None
    else:  # a directory or zip file with a __main__.py: runpy.run_path puts it on sys.path itself
        problem = None if os.path.exists(command[0]) else f"no such file: {command[0]}"
    if problem is not None:
        from .reading_stream import encode_error

        _write_all(fd, encode_error(problem))
        raise SystemExit(2)

    # Everything of memscope's own is imported and made before the tracker starts, or inside
    # sampler.ignored(): none of it is the program's allocation.
    import runpy

    import memscope_otel

    from . import reading_stream, sampler  # noqa: F401  (imported now, used by the publisher)

    try:
        provider = _meter_provider(args.exporter, args.export_interval_ms)
    except RuntimeError as exc:  # the OTLP exporter is not installed
        from .reading_stream import encode_error

        _write_all(fd, encode_error(str(exc)))
        raise SystemExit(2)
    config = {"dump_path": args.dump} if args.dump else {}
    tracker = memscope_otel.start(meter_provider=provider, **config)
    if tracker is not None:
        with sampler.ignored():
            ReadingPublisher(fd, tracker, args.interval_s).start()
    else:  # disabled by its settings: the program runs untracked and the stream stays empty
        os.close(fd)

    try:
        if command[0] == "-m":
            sys.argv = command[1:]
            program_globals = runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(command)
            program_globals = runpy.run_path(command[0], run_name="__main__")
    except BaseException as exc:  # sys.exit() included: the program's globals are in its frames
        _KEPT.extend(_globals_of(exc.__traceback__))
        raise
    _KEPT.append(program_globals)


# The program's module globals, kept to the end. Run as `python program.py`, its __main__ module
# lives until the interpreter tears modules down, after every exit handler; run by runpy, its
# namespace is garbage once runpy has returned or the exit's traceback is cleared (a cycle
# through its functions), and a collection before the final reading would free what the program
# keeps in globals: "live at the end" would miss it, and on 3.10 its functions' qualified names,
# found through the function objects, would be lost with them.
_KEPT = []


def _globals_of(tb):
    """The distinct module namespaces of a traceback's frames (not the frames: their locals go,
    as they would in a plain run)."""
    seen = {}
    while tb is not None:
        namespace = tb.tb_frame.f_globals
        seen.setdefault(id(namespace), namespace)
        tb = tb.tb_next
    return list(seen.values())
