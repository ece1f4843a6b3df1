"""Pressure readings, the pressure gauge, recommendations and apply_optimizations."""
import logging

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
from memscope_otel import sampler
from memscope_otel.optimizer import (FAST_PATH_NS, ExportFailureCounter, PressureMonitor, classify,
                                     relative_error)


class FakeCounters:
    def __init__(self, allocs=0, samples=0, dropped=0, slow_ns=0, slow_calls=0):
        self.allocations = np.array([[allocs, 0, 0]] + [[0, 0, 0]] * 3, dtype=np.uint64)
        self.deallocations = np.zeros(4, dtype=np.uint64)
        self.samples, self.dropped = samples, dropped
        self.slow_path_ns, self.slow_path_calls = slow_ns, slow_calls


def test_pressure_components_from_two_collections():
    now = [0.0]
    stats = [(0, 0)]
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0])
    assert monitor.observe(FakeCounters()) is None
    now[0], stats[0] = 1.5, (20_000_000, 300)  # 1.5 s gap, 20 ms of collection, 300 points
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2500, dropped=0, slow_ns=5_000_000, slow_calls=2500))
    assert p.figures["drift"] == pytest.approx(0.5)
    assert p.components["cadence"] == pytest.approx(0.5)
    assert p.components["collection_cost"] == pytest.approx(0.02 / 0.1)
    assert p.figures["series"] == 300
    hook_share = (5_000_000 + FAST_PATH_NS * 1_000_000) / 1e9 / 1.5
    assert p.figures["hook_share"] == pytest.approx(hook_share)
    assert p.figures["ring_fill"] == pytest.approx(2500 / 1.5 * 0.2 / 1000)
    assert p.value == max(p.components.values()) and p.dominant == "cadence"
    now[0] = 2.5
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2600, dropped=100, slow_ns=5_000_000, slow_calls=2500))
    assert p.components["drops"] == 1.0 and p.dominant == "drops" and "dropped" in p.reason()


def test_export_failures_are_counted_from_the_sdk_loggers():
    counter = ExportFailureCounter()
    counter.install()
    try:
        logging.getLogger("opentelemetry.sdk.metrics._internal.export").error("Exception while exporting metrics")
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").warning("Failed to export")
        logging.getLogger("opentelemetry.sdk.metrics").info("not a failure")
        logging.getLogger("someone.else").error("not ours")
    finally:
        counter.uninstall()
    assert counter.failures == 2


def test_relative_error_matches_the_binomial_formula():
    assert relative_error(10_000, 0.01, 0) == pytest.approx(np.sqrt(0.99 / 100))
    assert relative_error(10_000, 1.0, 1000) == 0.0
    assert relative_error(0, 0.5, 1000) == float("inf")


@pytest.fixture
def collected():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracker = memscope_otel.start(provider, max_records_per_thread=256, small_sample_rate=1.0,
                                  medium_sample_rate=1.0, drain_interval_ms=60000)
    yield tracker, reader
    memscope_otel.stop()
    provider.shutdown()


def points(reader, name):
    data = reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def test_drops_lead_to_recommendations_that_apply_live(collected):
    tracker, reader = collected
    points(reader, "memscope.optimizer.pressure")  # first collection: the baseline
    junk = [str(i) * 3 for i in range(50_000)]  # rate 1 into 256-record rings: drops
    del junk
    gauge = points(reader, "memscope.optimizer.pressure")
    assert len(gauge) == 1 and gauge[0].value == 1.0
    assert gauge[0].attributes["memscope.workload"] in ("web_server", "data_processing", "game_loop",
                                                        "ml_training", "generic")
    recs = tracker.optimizer.get_optimization_recommendations()
    by_setting = {r.setting: r for r in recs}
    assert "drain_interval_ms" in by_setting and "small_sample_rate" in by_setting, recs
    for rec in recs:
        assert rec.what and rec.why and rec.expected_overhead and rec.expected_error
    drain = by_setting["drain_interval_ms"]
    assert "dropped" in drain.why and drain.proposed < 60000
    rate = by_setting["small_sample_rate"]
    assert rate.proposed < rate.current and "->" in rate.expected_error
    applied = tracker.optimizer.apply_optimizations([drain, rate])
    assert applied == [drain, rate]
    assert tracker.drainer.interval_s == drain.proposed / 1000
    assert sampler.rates()[1] == pytest.approx(rate.proposed)
    assert tracker.optimizer.controller.target[1] == pytest.approx(rate.proposed)


def test_max_sites_applies_to_the_producer(collected):
    tracker, reader = collected
    from memscope_otel.optimizer import Recommendation

    rec = Recommendation("max_sites", 50, 2, "fewer sites", "test", "-", "-")
    assert tracker.optimizer.apply_optimizations([rec]) == [rec]
    site_points = points(reader, "memscope.site.allocated")
    assert len([p for p in site_points if p.attributes["code.file.path"] != "<other>"]) <= 2


def test_restart_only_recommendations_are_not_applied(collected, caplog):
    tracker, _ = collected
    from memscope_otel.optimizer import Recommendation

    rec = Recommendation("frequency_sample_interval", 1000, 10000, "w", "y", "o", "e", live=False)
    caplog.set_level(logging.INFO, logger="memscope_otel.optimizer")
    assert tracker.optimizer.apply_optimizations([rec]) == []
    assert any("OTEL_PYTHON_MEMSCOPE_FREQUENCY_SAMPLE_INTERVAL=10000" in r.getMessage() for r in caplog.records)


def test_classify_names_the_conditions_that_held():
    features = {"records": 1000, "network_site_fraction": 0.5, "threads_active": 4}
    kind, reasons = classify(features)
    assert kind == "web_server" and reasons == ["network_site_fraction 0.5 >= 0.25"]
    kind, reasons = classify({"records": 1000, "alloc_rate": 10})
    assert kind == "generic"
