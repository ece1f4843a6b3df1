"""Runs programs several times each under one tracker in this (child) process and prints one JSON
line per run: [module, workload, reasons, features].

The recognition tests run it in a subprocess because several features are process-wide (CPU share,
context switches, threads, the cumulative per-site summary): other tests' leftover threads would
disturb them, and these programs' allocations would crowd other tests' sites out of the top.

    python recognize_child.py MODULE:SECONDS:RUNS [MODULE:SECONDS:RUNS ...]
"""
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))
sys.path.insert(0, str(HERE))


def main(specs):
    from opentelemetry.sdk.metrics import MeterProvider

    import memscope_otel

    provider = MeterProvider()
    tracker = memscope_otel.start(provider, adaptive=False)  # default rates, held fixed
    try:
        for spec in specs:
            name, seconds, runs = spec.split(":")
            run_program(tracker, name, float(seconds), int(runs))
    finally:
        memscope_otel.stop()
        provider.shutdown()


def run_program(tracker, name, seconds, runs):
    from memscope_otel.optimizer import WorkloadRecognizer, classify

    module = importlib.import_module(name)
    for _ in range(runs):
        recognizer = WorkloadRecognizer(tracker.resolver.resolve)
        tracker.drainer.drain()
        tracker.drainer.add_sink(recognizer.sink)
        try:
            recognizer.reset()
            module.run(seconds)
            recognizer.observe(tracker.refresh().counters)
            features = recognizer.features()
        finally:
            tracker.drainer.remove_sink(recognizer.sink)
        kind, reasons = classify(features)
        print(json.dumps([name, kind, reasons, features]), flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
