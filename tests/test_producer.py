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
    "memscope.sampler.dropped", "memscope.sampler.memory", "memscope.sampler.live_table.fill",
    "memscope.sampler.live_table.threshold",
}


def collect(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


MAX_SITES = 1000  # the fixture's per-site series; the suite's process can have more sites than that


@pytest.fixture
def tracked():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    # Sites are process-wide: earlier tests leave bigger ones; keep every site exported.
    memscope_otel.start(meter_provider=provider, seed=7, drain_interval_ms=60000, max_sites=MAX_SITES)
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


DOMAIN_NAMES = ("obj", "mem", "raw", "manual", "native")  # MS_DOMAIN_* order
CLASS_NAMES = ("small", "medium", "large")
# One size per size class (default thresholds: medium from 1024 B, large from 8192 B) and the
# log2 bucket each falls in (memscope.size.le = the power of two at or above the size).
WORKLOAD_SIZES = {"small": (100, "128"), "medium": (2000, "2048"), "large": (10000, "16384")}
WORKLOAD_N = 300  # requests per domain and size class


def _allocator_calls():
    """The three CPython allocator domains called directly (a private PyDLL, so that the shared
    ctypes.pythonapi function objects keep their settings): {domain: (malloc, free)}."""
    import ctypes

    api = ctypes.PyDLL(None)
    calls = {}
    for domain, (malloc, free) in {"obj": ("PyObject_Malloc", "PyObject_Free"),
                                   "mem": ("PyMem_Malloc", "PyMem_Free"),
                                   "raw": ("PyMem_RawMalloc", "PyMem_RawFree")}.items():
        m, f = getattr(api, malloc), getattr(api, free)
        m.restype, m.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        f.restype, f.argtypes = None, [ctypes.c_void_p]
        calls[domain] = (m, f)
    return calls


def _exact_points(reader):
    """{metric: {attribute tuple: value}} of the four exact counters in one collection, through
    the SDK's own data model; a series reported twice would be a bug of its own."""
    keys = {"memscope.allocations": ("memscope.domain", "memscope.size_class"),
            "memscope.allocated": ("memscope.domain", "memscope.size_class"),
            "memscope.allocations.by_size": ("memscope.domain", "memscope.size.le"),
            "memscope.deallocations": ("memscope.domain",)}
    out = {name: {} for name in keys}
    for name, metric in collect(reader).items():
        if name not in keys:
            continue
        assert metric.data.is_monotonic, name  # exported as counters (cumulative sums)
        for point in metric.data.data_points:
            key = tuple(point.attributes[k] for k in keys[name])
            assert key not in out[name], (name, key)
            out[name][key] = point.value
    return out


def _assert_points_are(points, counters, domains):
    """Every exported exact point equals the C counter it reports, point by point, and every
    (domain, class) and every non-empty histogram bucket of ``domains`` has its point."""
    for metric, table in (("memscope.allocations", counters.allocations), ("memscope.allocated", counters.bytes)):
        for domain in domains:
            d = DOMAIN_NAMES.index(domain)
            for c, cls in enumerate(CLASS_NAMES):
                assert (domain, cls) in points[metric], \
                    f"{metric} has no {domain}/{cls} series: {sorted(points[metric])}"
                assert points[metric][domain, cls] == int(table[d][c]), (metric, domain, cls)
    for domain in domains:
        d = DOMAIN_NAMES.index(domain)
        assert domain in {k[0] for k in points["memscope.deallocations"]}, f"no deallocations series for {domain}"
        assert points["memscope.deallocations"][(domain,)] == int(counters.deallocations[d]), domain
        buckets = {str(1 << int(k)): int(counters.by_size[d][k]) for k in counters.by_size[d].nonzero()[0]}
        exported = {le: v for (dom, le), v in points["memscope.allocations.by_size"].items() if dom == domain}
        assert exported == buckets, (domain, exported, buckets)
        # The histogram is the same requests as the per-class counts.
        assert sum(buckets.values()) == int(counters.allocations[d].sum()), domain
    # No series names a domain the C side does not have.
    for metric in points:
        assert {k[0] for k in points[metric]} <= set(DOMAIN_NAMES), (metric, points[metric].keys())


def test_exported_exact_counters_equal_the_c_counters_point_by_point():
    """The exact metrics as an exporter receives them (a real MeterProvider and SDK reader) are
    the C counters themselves: per domain x size class for memscope.allocations and
    memscope.allocated, per bucket for memscope.allocations.by_size, per domain for
    memscope.deallocations. A domain, class or bucket missing from the export, or any value off
    by one, fails. Both while running (against the snapshot the collection was computed from:
    the counters keep moving with the interpreter's own allocations) and after stop(), when
    collections report the final snapshot and the C counters no longer move."""
    from memscope_otel import sampler

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    calls = _allocator_calls()
    # Every domain hooked and the default size-class thresholds, whatever the environment says.
    tracker = memscope_otel.start(meter_provider=provider, seed=11, drain_interval_ms=60000, adaptive=False,
                                  domains="obj,mem,raw,native", critical_size_threshold=8192)
    try:
        assert set(tracker.config.domains) == {"obj", "mem", "raw", "native"}
        seen = []
        tracker.listeners.append(seen.append)  # the snapshot each collection's points come from
        start = _exact_points(reader)
        # Known requests in every domain and size class (and the manual API), all freed again.
        for domain, (malloc, free) in calls.items():
            for cls, (size, _) in WORKLOAD_SIZES.items():
                blocks = [malloc(size) for _ in range(WORKLOAD_N)]
                assert all(blocks)
                for block in blocks:
                    free(block)
        for i in range(WORKLOAD_N):
            memscope_otel.track_allocation(0x10000 + 64 * i, 40, "Block")
            memscope_otel.track_deallocation(0x10000 + 64 * i)
        del seen[:]
        running = _exact_points(reader)
        assert len(seen) == 1, "one snapshot per collection"
        _assert_points_are(running, seen[0].counters, DOMAIN_NAMES)
        # The workload is in the export: each (domain, class) grew by at least its known requests
        # (the interpreter adds its own), each bucket of a workload size too.
        for domain in ("obj", "mem", "raw"):
            for cls, (size, le) in WORKLOAD_SIZES.items():
                for metric, per in (("memscope.allocations", 1), ("memscope.allocated", size)):
                    grew = running[metric][domain, cls] - start[metric].get((domain, cls), 0)
                    assert grew >= WORKLOAD_N * per, (metric, domain, cls, grew)
                bucket = running["memscope.allocations.by_size"][domain, le]
                assert bucket - start["memscope.allocations.by_size"].get((domain, le), 0) >= WORKLOAD_N
            grew = running["memscope.deallocations"][(domain,)] - start["memscope.deallocations"].get((domain,), 0)
            assert grew >= 3 * WORKLOAD_N, (domain, grew)
        assert running["memscope.allocated"]["manual", "small"] - start["memscope.allocated"].get(
            ("manual", "small"), 0) == 40 * WORKLOAD_N
    finally:
        memscope_otel.stop()
    final = _exact_points(reader)
    counters = sampler.read_counters()
    _assert_points_are(final, counters, DOMAIN_NAMES)


def test_site_attribution_names_the_function_and_line(tracked):
    keep = [bytearray(20000) for _ in range(100)]  # large: every one sampled
    line = test_site_attribution_names_the_function_and_line.__code__.co_firstlineno + 1
    metrics = collect(tracked)
    sites = [(p.attributes, p.value) for p in metrics["memscope.site.allocated"].data.data_points]
    mine = [v for a, v in sites if a["code.line.number"] == line and a["code.file.path"] == __file__]
    assert mine and sum(mine) >= 100 * 20000
    del keep


def _freed_at_once():
    for _ in range(50):
        block = bytearray(30000)  # its buffer large: sampled for certain
        del block


def _kept():
    kept = []
    for _ in range(5):  # (not a comprehension: its own frame up to 3.11, another site)
        kept.append(bytearray(30000))
    return kept


def _never_live_sites(n):
    """n sites (the lines of one generated function) that free at once what they allocate; the
    code is returned, for the caller to keep its sites alive."""
    source = "def many():\n" + "".join("    b = bytearray(30000); del b\n" for _ in range(n))
    namespace = {}
    exec(compile(source, "<never live>", "exec"), namespace)
    namespace["many"]()
    return namespace["many"]


def _site_points(metrics, name, function):
    """The points of the sites in ``function``: the line of its bytearray, and any other of its
    lines whose small blocks (the range iterator, the list) happened to be sampled."""
    return [p.value for p in metrics[name].data.data_points
            if p.attributes["code.file.path"] == __file__ and p.attributes["code.function.name"] == function.__name__]


def test_a_site_live_series_starts_with_live_bytes_and_stays(tracked):
    # More sites never live than the fixture's max_sites, made first: they must take no place in
    # the top from the kept site when its live is back at 0.
    many = _never_live_sites(MAX_SITES + 50)
    _freed_at_once()
    kept = _kept()
    metrics = collect(tracked)
    # (the objects' headers are small: estimated, so a site's figures are at least its buffers')
    assert sum(_site_points(metrics, "memscope.site.allocated", _freed_at_once)) >= 50 * 30000
    assert _site_points(metrics, "memscope.site.live", _freed_at_once) == []  # never live: no series
    assert sum(_site_points(metrics, "memscope.site.live", _kept)) >= 5 * 30000
    del kept
    _freed_at_once()
    metrics = collect(tracked)
    assert _site_points(metrics, "memscope.site.live", _freed_at_once) == []
    live = _site_points(metrics, "memscope.site.live", _kept)
    assert live and all(v == 0 for v in live), live  # back to 0: exported as 0, not gone
    assert not [p for p in metrics["memscope.site.live"].data.data_points
                if p.attributes["code.file.path"] == "<never live>"]
    del many


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
