"""Pressure readings from two collections, and export failures from the SDK loggers."""
import logging

import numpy as np
import pytest

from memscope_otel.optimizer import FAST_PATH_NS, ExportFailureCounter, PressureMonitor


class FakeCounters:
    def __init__(self, allocs=0, samples=0, dropped=0, slow_ns=0, slow_calls=0):
        self.allocations = np.array([[allocs, 0, 0]] + [[0, 0, 0]] * 3, dtype=np.uint64)
        self.deallocations = np.zeros(4, dtype=np.uint64)
        self.samples, self.dropped = samples, dropped
        self.slow_path_ns, self.slow_path_calls = slow_ns, slow_calls


def test_pressure_components_from_two_collections():
    now = [0.0]
    stats = [(0, 0, 0)]
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0])
    assert monitor.observe(FakeCounters()) is None
    # 1.5 s gap, 20 ms of collection of which 6 ms draining, 300 points
    now[0], stats[0] = 1.5, (20_000_000, 300, 6_000_000)
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2500, dropped=0, slow_ns=5_000_000, slow_calls=2500))
    assert p.figures["drift"] == pytest.approx(0.5)
    assert p.components["cadence"] == pytest.approx(0.5)
    assert p.components["drain_cost"] == pytest.approx(0.006 / 1.5 / 0.1)
    assert p.figures["series"] == 300 and p.figures["collection_s"] == pytest.approx(0.02)
    hook_share = (5_000_000 + FAST_PATH_NS * 1_000_000) / 1e9 / 1.5
    assert p.figures["hook_share"] == pytest.approx(hook_share)
    assert p.figures["ring_fill"] == pytest.approx(2500 / 1.5 * 0.2 / 1000)
    assert p.value == max(p.components.values()) and p.dominant == "cadence"
    now[0] = 2.5
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2600, dropped=100, slow_ns=5_000_000, slow_calls=2500))
    assert p.components["drops"] == 1.0 and p.dominant == "drops" and "dropped" in p.reason()


def test_costs_that_rates_do_not_change_are_figures_not_pressure():
    """Building the points of a collection and their number depend on the sites, not the rates."""
    now, stats = [0.0], [(0, 0, 0)]
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0])
    monitor.observe(FakeCounters())
    now[0], stats[0] = 1.0, (900_000_000, 50_000, 1_000_000)  # 0.9 s of collection, 50,000 points
    p = monitor.observe(FakeCounters())
    assert p.figures["collection_s"] == pytest.approx(0.9) and p.figures["series"] == 50_000
    assert p.value == pytest.approx(0.001 / 1.0 / 0.1) and p.dominant == "drain_cost"


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


def test_only_the_collections_of_the_served_reader_are_observed(monkeypatch):
    """memscope_otel.snapshot() taken by the application, and a collection of another
    MeterProvider that memscope was started on earlier, are not collections of the reader memscope
    serves: the pressure monitor must not see them (each would shorten the gap it falls into)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import memscope_otel

    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1000")
    old_reader, reader = InMemoryMetricReader(), InMemoryMetricReader()
    old_provider, provider = MeterProvider(metric_readers=[old_reader]), MeterProvider(metric_readers=[reader])
    try:
        assert memscope_otel.start(old_provider, adaptive=False) is not None
        memscope_otel.stop()
        tracker = memscope_otel.start(provider, adaptive=True)
        monitor = tracker.optimizer.monitor
        observed = []
        real_observe = monitor.observe
        monkeypatch.setattr(monitor, "observe", lambda counters: observed.append(counters) or real_observe(counters))
        reader.get_metrics_data()
        assert len(observed) == 1
        memscope_otel.snapshot()
        old_reader.get_metrics_data()
        assert len(observed) == 1, "a snapshot outside the served reader's collections was observed"
        reader.get_metrics_data()
        assert len(observed) == 2
    finally:
        memscope_otel.stop()
        old_provider.shutdown()
        provider.shutdown()
