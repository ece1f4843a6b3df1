"""Workload recognition: the four demo workloads on >= 9 of 10 runs, and four test-only programs.

The demo workloads (examples/workloads) are the programs the rules were designed from; the
programs/ modules were written afterwards, only for this test, to check that the rules carry over.
"""
import importlib

import pytest
from opentelemetry.sdk.metrics import MeterProvider

import memscope_otel
from memscope_otel.optimizer import WorkloadRecognizer, classify

# Short runs keep the suite fast; the frame loop needs more frames for its clock to stand out.
# The particle sandbox allocates little (about 15k/s), so it needs longer to yield MIN_RECORDS.
DEMO = [("workloads.web_server", "web_server", 0.3), ("workloads.data_pipeline", "data_processing", 0.3),
        ("workloads.game_loop", "game_loop", 0.6), ("workloads.ml_training", "ml_training", 0.3)]
FIFTH = [("programs.web_api", "web_server", 0.4), ("programs.log_analytics", "data_processing", 0.4),
         ("programs.particle_sim", "game_loop", 1.5), ("programs.logistic_regression", "ml_training", 0.4)]


@pytest.fixture(scope="module")
def tracker():
    provider = MeterProvider()
    tracker = memscope_otel.start(provider, adaptive=False)  # default rates, held fixed
    yield tracker
    memscope_otel.stop()
    provider.shutdown()


def recognize(tracker, module, seconds):
    recognizer = WorkloadRecognizer(tracker.resolver.resolve)
    tracker.drainer.drain()
    tracker.drainer.sinks.append(recognizer.sink)
    try:
        recognizer.reset()
        module.run(seconds)
        recognizer.observe(tracker.refresh().counters)
        features = recognizer.features()
    finally:
        tracker.drainer.sinks.remove(recognizer.sink)
    return classify(features), features


@pytest.mark.parametrize("name,expected,seconds", DEMO, ids=[d[1] for d in DEMO])
def test_demo_workload_recognized_on_9_of_10_runs(tracker, name, expected, seconds):
    module = importlib.import_module(name)
    results = [recognize(tracker, module, seconds) for _ in range(10)]
    hits = sum(kind == expected for (kind, _), _ in results)
    misses = [(kind, reasons, features) for (kind, reasons), features in results if kind != expected]
    assert hits >= 9, f"{name}: {hits}/10 recognized as {expected}; misses: {misses}"


@pytest.mark.parametrize("name,expected,seconds", FIFTH, ids=[f[1] for f in FIFTH])
def test_unseen_program_recognized(tracker, name, expected, seconds):
    module = importlib.import_module(name)
    results = [recognize(tracker, module, seconds) for _ in range(3)]
    hits = sum(kind == expected for (kind, _), _ in results)
    assert hits >= 2, f"{name}: {hits}/3 recognized as {expected}: {results}"


def test_too_few_records_is_generic():
    kind, reasons = classify({"records": 10, "network_site_fraction": 1.0, "threads_active": 9})
    assert kind == "generic" and "only 10 sampled records" in reasons[0]
