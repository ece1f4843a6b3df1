"""The ``memscope-otel`` command line.

``memscope-otel run [--html OUT] [--console | --otlp] [--dump FILE] -- PROGRAM [ARGS...]``
    Runs a Python program (a script path, or ``-m module``) tracked, in a child process
    (``tracked_process``), and prints a summary on stderr when it ends (``run_summary``); ``--html``
    also writes it as an HTML page. ``--console`` adds the raw OpenTelemetry console export (on
    the program's stdout, as before), ``--otlp`` exports over OTLP (``OTEL_EXPORTER_OTLP_*``
    apply). The program keeps its stdin, stdout and stderr; ``run`` exits with the program's exit
    status, or dies by the same signal (see ``tracked_process.exit_like``).

``memscope-otel top [--url URL | -- PROGRAM [ARGS...]]``
    A live view, refreshed every second: of a program started tracked, or of any process whose
    memscope metrics a Prometheus ``/metrics`` page serves (``top.py``).

``memscope-otel report FILE [--html OUT] [--pprof OUT [--pprof-kind KIND]]``
    Reads a dump file (``OTEL_PYTHON_MEMSCOPE_DUMP_PATH``) and prints the top sites and types by
    estimated bytes and count, the top stacks, the size distribution, and the allocation rate and
    live estimate over time; ``--html OUT`` also writes them as one self-contained HTML page;
    ``--pprof OUT`` writes the stacks as a gzipped pprof profile (``profiles.py``; KIND: heap, the
    default, alloc or inuse). On a terminal, a progress line shows while a big dump is read.

``OTEL_PYTHON_MEMSCOPE_*`` variables configure the tracker as usual. Bad input (a missing
program, an unreachable URL) is one line on stderr and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

READING_INTERVAL_S = 1.0  # how often a tracked child sends a reading (run's HTML timeline, top)


def _error(command: str, message: str) -> int:
    print(f"memscope-otel {command}: error: {message}", file=sys.stderr)
    return 2


def _report(args) -> int:
    from .dump import DumpFormatError, open_dump
    from .progress import TerminalProgress
    from .report import analyze, fmt_bytes, render_html, render_text

    progress = TerminalProgress(f"memscope-otel report: {args.file}")
    try:
        size = os.path.getsize(args.file)
    except OSError:
        size = 0
    if size >= 64 << 20:
        progress.note(f"checking {fmt_bytes(size)}" if not args.no_verify else f"opening {fmt_bytes(size)}")
    try:
        with warnings.catch_warnings():  # a torn last chunk is shown as a note in the report
            warnings.simplefilter("ignore", RuntimeWarning)
            dump = open_dump(args.file, verify=not args.no_verify)
    except (DumpFormatError, OSError) as exc:
        progress.finish()
        return _error("report", str(exc))
    try:
        rep = analyze(dump, top=args.top, bins=args.bins, progress=progress)
    finally:
        progress.finish()
    sys.stdout.write(render_text(rep))
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(render_html(rep))
        except OSError as exc:
            return _error("report", f"cannot write --html {args.html}: {exc}")
        print(f"HTML report written to {args.html}")
    if args.pprof:
        from .profiles import encode, from_report

        try:
            with open(args.pprof, "wb") as f:
                f.write(encode(from_report(rep), args.pprof_kind, time_nanos=rep.first_us * 1000,
                               duration_nanos=(rep.last_us - rep.first_us) * 1000))
        except OSError as exc:
            return _error("report", f"cannot write --pprof {args.pprof}: {exc}")
        print(f"pprof profile ({args.pprof_kind}) written to {args.pprof}")
    return 0


def _program(args) -> list:
    command = list(args.command)
    return command[1:] if command[:1] == ["--"] else command


def _run(args) -> int:
    from .tracked_process import ProgramError, TrackedProcess, exit_like

    command = _program(args)
    exporter = "console" if args.console else "otlp" if args.otlp else "none"
    try:
        process = TrackedProcess(command, interval_s=READING_INTERVAL_S, exporter=exporter,
                                 export_interval_ms=args.interval_ms, dump=args.dump)
    except ProgramError as exc:
        return _error("run", str(exc))
    except OSError as exc:  # the interpreter itself could not be started
        return _error("run", f"cannot start {sys.executable}: {exc}")
    status = process.wait()
    if process.error is not None:
        _error("run", process.error)
        return status if status > 0 else 2
    if not args.no_summary:
        from .run_summary import render_summary

        sys.stderr.write(render_summary(process.latest, command, status, top=args.top))
        sys.stderr.flush()
    if args.html:
        _write_run_html(args.html, process, command, status)
    if status < 0:
        exit_like(status)
    return status


def _write_run_html(path, process, command, status):
    from .live_report import report_from_readings
    from .report import render_html
    from .run_summary import describe_status

    if process.latest is None:
        _error("run", f"no reading arrived from the program: {path} not written")
        return
    page = render_html(report_from_readings(process.latest, process.timeline, command, describe_status(status)))
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        _error("run", f"cannot write --html {path}: {exc}")
        return
    print(f"memscope-otel run: HTML report written to {path}", file=sys.stderr)


def _top(args) -> int:
    from .prometheus_reading import PageError
    from .top import ProcessSource, UrlSource, run_plain, run_screen
    from .tracked_process import ProgramError, TrackedProcess, exit_like

    command = _program(args)
    if args.url and command:
        return _error("top", "give either --url or a program to run, not both")
    if not args.url and not command:
        return _error("top", "give a program to run (top -- PROGRAM [ARGS]) or a page (top --url URL)")
    on_terminal = (sys.stdout.isatty() and sys.stdin.isatty() and not args.plain
                   and os.environ.get("TERM", "dumb") not in ("", "dumb"))
    if args.url:
        source = UrlSource(args.url)
    else:
        import subprocess

        try:
            # On a terminal the keyboard is the view's (q); the program gets no stdin there.
            process = TrackedProcess(command, interval_s=args.interval,
                                     stdin=subprocess.DEVNULL if on_terminal else None)
        except ProgramError as exc:
            return _error("top", str(exc))
        source = ProcessSource(process)
    try:
        if on_terminal:
            run_screen(source, args.interval, args.iterations)
        else:
            run_plain(source, args.interval, args.iterations)
    except PageError as exc:
        status = source.close()
        _error("top", str(exc))
        return status if status > 0 else 2
    ended_by_itself = source.ended_status is not None
    status = source.close()
    if not ended_by_itself or args.url:
        return 0
    if status < 0:
        exit_like(status)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``memscope-otel`` (its subcommands: report, run, top)."""
    parser = argparse.ArgumentParser(prog="memscope-otel", description="memscope-otel: Python allocation tracking "
                                     "as OpenTelemetry metrics.")
    sub = parser.add_subparsers(dest="subcommand", required=True)

    rep = sub.add_parser("report", help="summarize a dump file (text, and HTML with --html)")
    rep.add_argument("file", help="dump file written with OTEL_PYTHON_MEMSCOPE_DUMP_PATH")
    rep.add_argument("--html", metavar="OUT", help="also write a self-contained HTML page with plots to OUT")
    rep.add_argument("--top", type=_positive("--top", 1, 1000), default=15, help="rows per top list (1-1000, default 15)")
    rep.add_argument("--bins", type=_positive("--bins", 1, 10000), default=60,
                     help="time bins of the timelines (1-10000, default 60)")
    rep.add_argument("--no-verify", action="store_true", help="skip the payload checksums (faster on huge files)")
    rep.add_argument("--pprof", metavar="OUT", help="also write the stacks as a gzipped pprof profile to OUT")
    rep.add_argument("--pprof-kind", choices=("heap", "alloc", "inuse"), default="heap",
                     help="sample types of --pprof: heap (all four, default), alloc (alloc_objects, alloc_space: "
                          "estimates over the recording) or inuse (inuse_objects, inuse_space: live at its end)")
    rep.set_defaults(handler=_report)

    run = sub.add_parser("run", help="run a Python program tracked and print a summary when it ends")
    out = run.add_mutually_exclusive_group()
    out.add_argument("--console", action="store_true",
                     help="also print the raw OpenTelemetry metrics to the program's stdout")
    out.add_argument("--otlp", action="store_true", help="also export the metrics over OTLP (OTEL_EXPORTER_OTLP_* apply)")
    run.add_argument("--html", metavar="OUT", help="also write the summary as a self-contained HTML page to OUT")
    run.add_argument("--no-summary", action="store_true", help="print no summary at the end")
    run.add_argument("--top", type=_positive("--top", 1, 1000), default=10, help="rows per top list (1-1000, default 10)")
    run.add_argument("--dump", metavar="FILE", help="also write every sampled record to FILE (see `report`)")
    run.add_argument("--interval-ms", type=_positive("--interval-ms", 100, 3_600_000), default=None,
                     help="export interval of --console/--otlp (default: OTEL_METRIC_EXPORT_INTERVAL or 10000)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...] or -- -m MODULE [ARGS...]")
    run.set_defaults(handler=_run)

    top = sub.add_parser("top", help="a live view of a program's allocations, or of a /metrics page")
    top.add_argument("--url", help="read a process's memscope metrics from this Prometheus /metrics page")
    top.add_argument("--interval", type=_seconds("--interval", 0.2, 60.0), default=1.0,
                     help="seconds between refreshes (0.2-60, default 1)")
    top.add_argument("-n", "--iterations", type=_positive("--iterations", 1, 10**9), default=None,
                     help="stop after this many refreshes")
    top.add_argument("--plain", action="store_true", help="one plain line per interval even on a terminal")
    top.add_argument("command", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...] or -- -m MODULE [ARGS...]")
    top.set_defaults(handler=_top)
    return parser


def _bounded(name, lo, hi, convert=int, what="an integer"):
    """An argparse type: ``convert(text)`` within [lo, hi], or an error naming the option and range."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what} in {lo}..{hi}, not {text!r}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in {lo}..{hi}, not {value:g}")
        return value

    return parse


def _positive(name, lo, hi):
    return _bounded(name, lo, hi)


def _seconds(name, lo, hi):
    return _bounded(name, lo, hi, float, "a number of seconds")


def main(argv=None) -> int:
    """Entry point of the ``memscope-otel`` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
