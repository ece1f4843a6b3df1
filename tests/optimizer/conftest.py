"""Shared fixtures: a running tracker on a private MeterProvider, and exporters that misbehave."""
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader

import memscope_otel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "examples"))  # examples/workloads
sys.path.insert(0, str(HERE))                          # programs/


class TroubledExporter(MetricExporter):
    """A real MetricExporter whose backend can be slow (each export sleeps ``delay_s``) or down
    (each export raises, as a refused connection does). ``heal()`` makes it fast and healthy."""

    def __init__(self):
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.delay_s = 0.0
        self.failing = False
        self.exports = 0
        self.points = []  # points per export

    def heal(self):
        self.delay_s, self.failing = 0.0, False

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.exports += 1
        self.points.append(sum(len(m.data.data_points) for rm in metrics_data.resource_metrics
                               for sm in rm.scope_metrics for m in sm.metrics))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.failing:
            raise ConnectionRefusedError("backend down (test exporter)")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass


@pytest.fixture
def exporting_tracker(monkeypatch):
    """start(interval_ms, **config) -> (tracker, exporter): the tracker publishing on a periodic
    reader that exports every interval_ms to a TroubledExporter."""
    providers = []

    def start(interval_ms=100, **config):
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", str(interval_ms))
        exporter = TroubledExporter()
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)
        provider = MeterProvider(metric_readers=[reader])
        providers.append(provider)
        tracker = memscope_otel.start(provider, **config)
        assert tracker is not None
        return tracker, exporter

    yield start
    memscope_otel.stop()
    for provider in providers:
        provider.shutdown(timeout_millis=2000)


def wait_until(predicate, timeout_s, poll_s=0.05):
    """Polls ``predicate`` until it is true or ``timeout_s`` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(poll_s)

