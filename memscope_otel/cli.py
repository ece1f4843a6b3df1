"""The ``memscope-otel`` command line.

``memscope-otel report FILE [--html OUT]``
    Reads a dump file (``OTEL_PYTHON_MEMSCOPE_DUMP_PATH``) and prints the top sites and types by
    estimated bytes and count, the size distribution, and the allocation rate and live estimate
    over time; ``--html OUT`` also writes them as one self-contained HTML page.

``memscope-otel run [--console | --otlp] [--dump FILE] -- PROGRAM [ARGS...]``
    Runs a Python program (a script path, or ``-m module``) in this interpreter with the tracker
    started, exporting the metrics to the console (default) or over OTLP (the standard
    ``OTEL_EXPORTER_OTLP_*`` variables apply). ``OTEL_PYTHON_MEMSCOPE_*`` variables configure the
    tracker as usual.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings


def _report(args) -> int:
    from .dump import DumpFormatError, open_dump
    from .report import analyze, render_html, render_text

    try:
        with warnings.catch_warnings():  # a torn last chunk is shown as a note in the report
            warnings.simplefilter("ignore", RuntimeWarning)
            dump = open_dump(args.file, verify=not args.no_verify)
    except (DumpFormatError, OSError) as exc:
        print(f"memscope-otel report: error: {exc}", file=sys.stderr)
        return 2
    rep = analyze(dump, top=args.top, bins=args.bins)
    sys.stdout.write(render_text(rep))
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(render_html(rep))
        except OSError as exc:
            print(f"memscope-otel report: error: cannot write --html {args.html}: {exc}", file=sys.stderr)
            return 2
        print(f"HTML report written to {args.html}")
    return 0


def _otlp_exporter():
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                              os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
    try:
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    except ImportError:
        raise SystemExit("memscope-otel run: --otlp needs the OTLP exporter: pip install 'memscope-otel[otlp]'")
    return OTLPMetricExporter()


def _run(args) -> int:
    import runpy

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    import memscope_otel

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("memscope-otel run: error: give a program to run: memscope-otel run -- app.py [args]", file=sys.stderr)
        return 2
    if command[0] == "-m" and len(command) < 2:
        print("memscope-otel run: error: -m needs a module name", file=sys.stderr)
        return 2
    exporter = _otlp_exporter() if args.otlp else ConsoleMetricExporter()
    interval = args.interval_ms or int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000") or 10000)
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=interval)])
    config = {"dump_path": args.dump} if args.dump else {}
    memscope_otel.start(meter_provider=provider, **config)
    code = 0
    saved_argv = sys.argv
    try:
        if command[0] == "-m":
            sys.argv = command[1:]
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = command
            sys.path.insert(0, os.path.dirname(os.path.abspath(command[0])))
            runpy.run_path(command[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    finally:
        sys.argv = saved_argv
        memscope_otel.stop()
        provider.shutdown()  # one last export with the final values
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``memscope-otel`` (its subcommands: report, run)."""
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
    rep.set_defaults(handler=_report)

    run = sub.add_parser("run", help="run a Python program with the tracker started")
    out = run.add_mutually_exclusive_group()
    out.add_argument("--console", action="store_true", help="print the metrics to stdout (default)")
    out.add_argument("--otlp", action="store_true", help="export the metrics over OTLP (OTEL_EXPORTER_OTLP_* apply)")
    run.add_argument("--dump", metavar="FILE", help="also write every sampled record to FILE (see `report`)")
    run.add_argument("--interval-ms", type=_positive("--interval-ms", 100, 3_600_000), default=None,
                     help="export interval (default: OTEL_METRIC_EXPORT_INTERVAL or 10000)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...] or -- -m MODULE [ARGS...]")
    run.set_defaults(handler=_run)
    return parser


def _positive(name, lo, hi):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in {lo}..{hi}, not {text!r}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in {lo}..{hi}, not {value}")
        return value

    return parse


def main(argv=None) -> int:
    """Entry point of the ``memscope-otel`` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
