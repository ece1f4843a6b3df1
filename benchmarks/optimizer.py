"""Optimizer measurements: workload features, fast-path cost, optimizer on/off, quality vs rate.

    python benchmarks/optimizer.py features [--runs N] [--seconds S]
    python benchmarks/optimizer.py fastpath
    python benchmarks/optimizer.py slow-exporter [--seconds S]
    python benchmarks/optimizer.py quality [--seconds S]

Each subcommand prints a Markdown table (docs/optimizer.md quotes them). Keep runs short: the
figures are for the record, not a load test.
"""
import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests" / "optimizer"))


def _start(**config):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import memscope_otel

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracker = memscope_otel.start(provider, **config)
    return tracker, reader, provider


def measure_features(module, seconds, tracker):
    """Runs one workload under a fresh recognizer window; returns (features, workload, reasons)."""
    from memscope_otel.optimizer import WorkloadRecognizer, classify

    recognizer = WorkloadRecognizer(tracker.resolver.resolve)
    tracker.drainer.drain()
    tracker.drainer.sinks.append(recognizer.sink)
    try:
        recognizer.reset()
        module.run(seconds)
        snap = tracker.refresh()
        recognizer.observe(snap.counters)
        features = recognizer.features()
    finally:
        tracker.drainer.sinks.remove(recognizer.sink)
    kind, reasons = classify(features)
    return features, kind, reasons


def cmd_features(args):
    tracker, _, _ = _start(adaptive=False)
    modules = [("workloads." + m) for m in ("web_server", "data_pipeline", "game_loop", "ml_training")]
    modules += ["programs." + m for m in args.extra]
    keys = None
    for name in modules:
        module = importlib.import_module(name)
        for run in range(args.runs):
            features, kind, _ = measure_features(module, args.seconds, tracker)
            if keys is None:
                keys = [k for k in features if k != "elapsed_s"]
                print("| program | run | class | " + " | ".join(keys) + " |")
                print("|---" * (len(keys) + 3) + "|")
            print(f"| {name} | {run} | {kind} | " + " | ".join(f"{features[k]:.3g}" for k in keys) + " |",
                  flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features", help="features and class of each workload, per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.6)
    p.add_argument("--extra", nargs="*", default=[], help="test-only programs (tests/optimizer/programs)")
    p.set_defaults(fn=cmd_features)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
