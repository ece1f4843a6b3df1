"""The pressure gauge, recommendations and apply_optimizations."""
import logging

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
from memscope_otel import sampler
from memscope_otel.optimizer import relative_error
from memscope_otel.optimizer.performance_optimizer import longer_export_interval_ms
from memscope_otel.optimizer.pressure import EXPORT_NOTE, EXPORT_OF_APP_NOTE


def test_relative_error_matches_the_binomial_formula():
    assert relative_error(10_000, 0.01, 0) == pytest.approx(np.sqrt(0.99 / 100))
    assert relative_error(10_000, 1.0, 1000) == 0.0
    assert relative_error(0, 0.5, 1000) == float("inf")


@pytest.mark.parametrize("interval_s, export_share, of_app, expected_ms", [
    (0.1, 0.021, 0.0, 200),     # just over a note: the least step, twice the interval
    (0.5, 0.02, 0.50, 20000),   # half the application's CPU: 25x, 12.5 s wanted, the step 20 s
    (0.5, 0.09, 0.21, 10000),   # 4.5x of a core, 10.5x of the application: 5.25 s wanted, 10 s given
    (0.5, 0.09, 0.08, 5000),    # 4.5x of a core, 4x of the application: 2.25 s wanted, 5 s given
    (1.0, 0.10, 0.0, 5000),     # exactly 5x: the step itself
    (1.0, 0.0, 0.10, 5000),     # exactly 5x of the application: likewise
    (2.0, 0.001, 0.024, 5000),  # 1.2x would do: twice, 4 s, is the 5 s step
    (10.0, 0.5, 0.0, 60000),    # 25x would be 250 s: never past the SDK's default
    (45.0, 0.03, 0.0, 60000),
])
def test_a_longer_export_interval_brings_both_shares_under_their_notes(interval_s, export_share, of_app, expected_ms):
    """Both shares fall in proportion to the interval: one step of the 1-2-5 series, at least
    twice the interval, under both notes unless capped at 60 s."""
    new_ms = longer_export_interval_ms(interval_s, export_share, of_app)
    assert new_ms == expected_ms
    factor = new_ms / (interval_s * 1000)
    assert factor >= 2 or new_ms == 60000
    if new_ms < 60000:
        assert export_share / factor <= EXPORT_NOTE and of_app / factor <= EXPORT_OF_APP_NOTE
    digits = str(new_ms).rstrip("0")
    assert digits in ("1", "2", "5") or new_ms == 60000


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


def fast_path_reading(allocations_per_s):
    """A pressure reading of one second with ``allocations_per_s`` ({domain: (small, medium, large)})
    and nothing else: the fast path as the monitor figures it, no rate-dependent pressure."""
    from memscope_otel.cpu_meter import fast_path_ns
    from memscope_otel.optimizer import Pressure
    from memscope_otel.records import DOMAINS

    per_s = np.zeros((len(DOMAINS), 3))
    for domain, row in allocations_per_s.items():
        per_s[DOMAINS.index(domain)] = row
    fast = fast_path_ns(per_s) / 1e9
    figures = {"gap_s": 1.0, "records_per_s": 0.0, "fast_path_share": float(fast.sum()),
               "fast_path_share_by_domain": fast.tolist(), "allocations_per_s_by_domain": per_s.tolist(),
               "hook_calls_per_s": float(per_s.sum() * 2), "slow_path_ns_per_record": 500.0}
    return Pressure(0.0, {}, figures, "sampled_path")


@pytest.mark.parametrize("allocations_per_s,costliest", [
    # Most calls and most cost in obj: obj off.
    ({"obj": (5e6, 1e4, 0), "mem": (1e6, 0, 0), "raw": (1e5, 0, 10), "native": (1e4, 1e3, 100)}, "obj"),
    # A numpy loop: fewer native calls than obj calls, but its large blocks, all sampled, cost more.
    ({"obj": (3e6, 0, 0), "mem": (1e5, 0, 0), "raw": (1e5, 0, 0), "native": (1e4, 5e3, 5e4)}, "native"),
])
def test_domain_off_names_the_domain_whose_hooks_cost_most(allocations_per_s, costliest):
    provider = MeterProvider()
    tracker = memscope_otel.start(provider, drain_interval_ms=60000)  # default rates
    try:
        check_domain_off(tracker, allocations_per_s, costliest)
    finally:
        memscope_otel.stop()
        provider.shutdown()


def check_domain_off(tracker, allocations_per_s, costliest):
    tracker.optimizer.monitor.latest = fast_path_reading(allocations_per_s)
    rec = {r.setting: r for r in tracker.optimizer.get_optimization_recommendations()}["domains"]
    assert rec.proposed.split(",") == [d for d in tracker.config.domains if d != costliest]
    costs = tracker.optimizer._domain_costs(tracker.optimizer.monitor.latest.figures, tracker.config.domains)
    assert costs[costliest][0] + costs[costliest][1] == max(f + s for f, s, _ in costs.values())
    assert rec.predicted_cpu == pytest.approx(-(costs[costliest][0] + costs[costliest][1]))
    assert rec.predicted_records_per_s == pytest.approx(-costs[costliest][2])
