"""Imports aside: the memory benchmarks compare a tracked interpreter with an untracked one, and
the modules that a tracker loads on its way (at start(), at the first drain or collection) are
not its memory. Both interpreters load them all first."""
import importlib
import json
import os
import sys

import _common


def probe():
    """Prints the modules that importing memscope_otel, start(), a program, a collection and
    stop() load (in a fresh interpreter: ``python _imports.py``)."""
    before = set(sys.modules)
    import programs
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import memscope_otel

    reader = InMemoryMetricReader()
    tracker = memscope_otel.start(meter_provider=MeterProvider(metric_readers=[reader]))
    programs.run(next(iter(programs.PROGRAMS)), 1)
    tracker.drainer.drain()
    reader.collect()
    memscope_otel.stop()
    print(json.dumps(sorted(set(sys.modules) - before)))


def tracker_modules():
    """The names probe() lists, from a fresh interpreter."""
    return _common.run_json_child([sys.executable, os.path.abspath(__file__)], "imports probe")


def load(modules):
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # (a module that only imports as a side effect of another)
            pass


if __name__ == "__main__":
    probe()
