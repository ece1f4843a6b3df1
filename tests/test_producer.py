"""The OpenTelemetry side: every metric of DESIGN.md's table is published, exact counters match
the C counters, and bounded per-site series stay monotonic."""
import random

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
from memscope_otel.producer import RoutedCounters

EXPECTED = {
    "memscope.allocations", "memscope.allocated", "memscope.deallocations", "memscope.allocations.by_size",
    "memscope.site.allocated", "memscope.site.allocations", "memscope.live", "memscope.site.live",
    "memscope.type.allocated", "memscope.sampler.rate", "memscope.sampler.samples",
    "memscope.sampler.dropped", "memscope.sampler.memory",
}


def collect(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


@pytest.fixture
def tracked():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    # Sites are process-wide: earlier tests leave bigger ones; keep every site exported.
    memscope_otel.start(meter_provider=provider, seed=7, drain_interval_ms=60000, max_sites=1000)
    yield reader
    memscope_otel.stop()


def build(n):
    return [[i, str(i)] for i in range(n)]


def test_every_metric_is_published_with_units(tracked):
    keep = build(20000)
    blocks = [bytearray(50000) for _ in range(20)]
    buf = memscope_otel.track_allocation
    buf(0x1000, 123456, "GpuBuffer")
    metrics = collect(tracked)
    assert EXPECTED <= set(metrics), EXPECTED - set(metrics)
    assert metrics["memscope.allocated"].unit == "By"
    assert metrics["memscope.allocations"].unit == "{allocation}"
    types = {p.attributes["memscope.type"]: p.value for p in metrics["memscope.type.allocated"].data.data_points}
    # Large: always sampled, weight 1 (other tests' types may be there too: estimates are process-wide).
    assert types["GpuBuffer"] == 123456
    del keep, blocks


def test_exact_counters_are_the_c_counters(tracked):
    build(5000)
    metrics = collect(tracked)
    snap = memscope_otel.snapshot()
    points = {(p.attributes["memscope.domain"], p.attributes["memscope.size_class"]): p.value
              for p in metrics["memscope.allocated"].data.data_points}
    # The snapshot was taken after the collection: counters only grow in between.
    for (domain, cls), value in points.items():
        d = ("obj", "mem", "raw", "manual").index(domain)
        c = ("small", "medium", "large").index(cls)
        assert 0 <= value <= snap.counters.bytes[d][c]
    assert sum(points.values()) > 0


def test_site_attribution_names_the_function_and_line(tracked):
    keep = [bytearray(20000) for _ in range(100)]  # large: every one sampled
    line = test_site_attribution_names_the_function_and_line.__code__.co_firstlineno + 1
    metrics = collect(tracked)
    sites = [(p.attributes, p.value) for p in metrics["memscope.site.allocated"].data.data_points]
    mine = [v for a, v in sites if a["code.line.number"] == line and a["code.file.path"] == __file__]
    assert mine and sum(mine) >= 100 * 20000
    del keep


def test_metrics_survive_stop_and_restart():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    memscope_otel.start(meter_provider=provider, drain_interval_ms=60000)
    build(1000)
    first = sum(p.value for p in collect(reader)["memscope.allocations"].data.data_points)
    memscope_otel.stop()
    after_stop = sum(p.value for p in collect(reader)["memscope.allocations"].data.data_points)
    assert after_stop >= first
    memscope_otel.start(meter_provider=provider, drain_interval_ms=60000)
    build(1000)
    again = sum(p.value for p in collect(reader)["memscope.allocations"].data.data_points)
    memscope_otel.stop()
    assert again > after_stop  # cumulative across restarts, one set of instruments


def test_routed_counters_are_monotonic_and_add_up():
    rng = random.Random(3)
    routed = RoutedCounters(k=3)
    totals = {f"s{i}": [0.0, 0.0] for i in range(10)}
    previous = {}
    previous_other = 0.0
    for _ in range(200):
        for key in rng.sample(sorted(totals), 4):
            totals[key][0] += rng.expovariate(1.0) * 100
            totals[key][1] += 1
        out = routed.update({k: tuple(v) for k, v in totals.items()})
        assert len(out) <= 3
        for key, (b, _) in out.items():
            assert b >= previous.get(key, 0.0)
            previous[key] = b
        assert routed.other[0] >= previous_other
        previous_other = routed.other[0]
        # Every byte is in exactly one series (exported now, exported before, or other).
        exported = sum(v[0] for v in routed._series.values())
        assert exported + routed.other[0] == pytest.approx(sum(v[0] for v in totals.values()))


def test_start_never_raises_into_the_application(monkeypatch, caplog):
    from memscope_otel import sampler

    def broken(config):
        raise RuntimeError("simulated failure inside the sampler")

    monkeypatch.setattr(sampler, "start", broken)
    assert memscope_otel.start(meter_provider=MeterProvider()) is None
    assert not memscope_otel.is_running()
    assert "could not start" in caplog.text


def test_a_dropped_provider_is_not_kept_alive():
    """An application that makes a new MeterProvider on each reload and drops the old one: memscope
    must not keep the old providers (nor the stopped trackers their Producers serve) alive."""
    import gc
    import weakref

    from memscope_otel import tracker as tracker_module

    refs = []
    for _ in range(5):
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        memscope_otel.start(meter_provider=provider, drain_interval_ms=60000, adaptive=False)
        memscope_otel.stop()
        provider.shutdown()
        refs.append(weakref.ref(provider))
        del provider
    gc.collect()
    assert [r() for r in refs] == [None] * 5
    assert not any(key in tracker_module._process.producers for key in map(id, refs))


def test_a_kept_provider_gets_its_producer_back_after_a_restart():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    first = memscope_otel.start(meter_provider=provider, drain_interval_ms=60000, adaptive=False).producer
    memscope_otel.stop()
    import gc

    gc.collect()  # the Producer lives on through the provider's instruments, not through memscope
    second = memscope_otel.start(meter_provider=provider, drain_interval_ms=60000, adaptive=False).producer
    memscope_otel.stop()
    assert second is first
