"""The pressure gauge, recommendations and apply_optimizations."""
import logging

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
from memscope_otel import sampler
from memscope_otel.optimizer import relative_error


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
