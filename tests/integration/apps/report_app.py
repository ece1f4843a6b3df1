"""Prints, as one JSON line, whether the memscope instrumentor started the tracker and with which
settings. Run under ``opentelemetry-instrument`` by tests/test_instrumentor.py."""

import json
import os

import memscope_otel
from memscope_otel import tracker

current = tracker.current()
report = {
    "running": memscope_otel.is_running(),
    "env_small_sample_rate": os.environ.get("OTEL_PYTHON_MEMSCOPE_SMALL_SAMPLE_RATE"),
    "config_small_sample_rate": None if current is None else current.config.small_sample_rate,
    "sampler_small_rate": None,
}
if current is not None:
    from memscope_otel import sampler

    report["sampler_small_rate"] = sampler.rates()[1]
print(json.dumps(report), flush=True)
