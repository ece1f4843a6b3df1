"""Pressure readings from two collections, and export failures from the SDK loggers."""
import collections
import logging
import time

import numpy as np
import pytest

from memscope_otel.cpu_meter import FAST_PATH_PAIR_NS
from memscope_otel.optimizer import (DRAIN_COST_BUDGET, DROP_BUDGET, DUMP_BACKLOG_BUDGET, DUMP_BUSY_BUDGET,
                                     RECOGNIZER_BUDGET, SAMPLED_PATH_BUDGET, ExportFailureCounter,
                                     PressureMonitor)
from memscope_otel.records import DOMAINS


class FakeCounters:
    def __init__(self, allocs=0, samples=0, dropped=0, slow_ns=0, slow_calls=0):
        self.allocations = np.zeros((len(DOMAINS), 3), dtype=np.uint64)
        self.allocations[DOMAINS.index("obj"), 0] = allocs
        self.deallocations = np.zeros(len(DOMAINS), dtype=np.uint64)
        self.samples, self.dropped = samples, dropped
        self.slow_path_ns, self.slow_path_calls = slow_ns, slow_calls


def stats_of(collection_ns=0, points=0, drain_ns=0, recognizer_ns=0, metric_points_max=0, export_ns=0):
    return {"collection_ns": collection_ns, "points": points, "drain_ns": drain_ns,
            "recognizer_ns": recognizer_ns, "metric_points_max": metric_points_max, "export_ns": export_ns}


def test_pressure_components_from_two_collections():
    now = [0.0]
    stats = [stats_of()]
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0])
    assert monitor.observe(FakeCounters()) is None
    # 1.5 s gap: 20 ms of collection, 6 ms draining, 3 ms recognizing, 300 points
    now[0], stats[0] = 1.5, stats_of(20_000_000, 300, 6_000_000, 3_000_000, 120)
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2500, dropped=0, slow_ns=5_000_000, slow_calls=2500))
    assert p.components["drain_cost"] == pytest.approx(0.006 / 1.5 / DRAIN_COST_BUDGET)
    assert p.components["recognizer"] == pytest.approx(0.003 / 1.5 / RECOGNIZER_BUDGET)
    assert p.components["sampled_path"] == pytest.approx(0.005 / 1.5 / SAMPLED_PATH_BUDGET)
    assert p.figures["ring_fill"] == pytest.approx(2500 / 1.5 * 0.2 / 1000)  # no drains seen: per interval
    assert p.components["ring_fill"] == 0  # a third of a ring: under the wake-up, no pressure
    small_obj_pair_ns = FAST_PATH_PAIR_NS[DOMAINS.index("obj"), 0]
    assert p.figures["fast_path_share"] == pytest.approx(small_obj_pair_ns * 1_000_000 / 1e9 / 1.5)
    assert p.figures["fast_path_share_by_domain"][DOMAINS.index("obj")] == pytest.approx(p.figures["fast_path_share"])
    assert p.figures["drift"] == pytest.approx(0.5)
    assert p.figures["series"] == 300 and p.figures["metric_points_max"] == 120
    assert p.figures["collection_s"] == pytest.approx(0.02)
    assert p.value == max(p.components.values())
    assert set(p.components) == {"sampled_path", "drain_cost", "recognizer", "drops", "ring_fill"}
    now[0] = 2.5
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=2600, dropped=100, slow_ns=5_000_000, slow_calls=2500))
    assert p.components["drops"] == 1.0 and p.dominant == "drops" and "dropped" in p.reason()
    assert p.load("drops") == pytest.approx(0.5 / DROP_BUDGET)  # uncapped: 50% dropped is 50x the budget


def test_costs_that_rates_do_not_change_are_figures_not_pressure():
    """The hooks' fast path, a collection's own CPU and points, cadence drift and export failures
    are the same at any sampling rate: figures, never pressure."""
    now, stats = [0.0], [stats_of()]
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0])
    monitor.observe(FakeCounters())
    monitor.failures.failures += 3  # as if the SDK had logged three failed exports
    # 5 s apart for a 1 s interval, 0.9 s of collection CPU, 50,000 points, 100 M small allocations
    now[0], stats[0] = 5.0, stats_of(900_000_000, 50_000, 1_000_000, 0, 5000)
    p = monitor.observe(FakeCounters(allocs=100_000_000))
    assert p.figures["collection_s"] == pytest.approx(0.9) and p.figures["series"] == 50_000
    assert p.figures["drift"] == pytest.approx(4.0) and p.figures["export_failures"] == 3
    assert p.figures["fast_path_share"] == pytest.approx(FAST_PATH_PAIR_NS[DOMAINS.index("obj"), 0] * 1e8 / 1e9 / 5.0)
    assert p.value == pytest.approx(0.001 / 5.0 / DRAIN_COST_BUDGET) and p.dominant == "drain_cost"


def test_export_cost_and_the_applications_own_cpu():
    """The SDK's exporting thread is a figure of its own, and the application's CPU is the
    process's less every part of the tracker's (the hooks run on the application's threads)."""
    now, cpu, stats = [0.0], [10.0], [stats_of()]
    monitor = PressureMonitor(export_interval_s=0.5, drain_interval_s=0.2, ring_capacity=1000,
                              collection_stats=lambda: stats[0], clock=lambda: now[0], cpu_clock=lambda: cpu[0])
    monitor.observe(FakeCounters())
    # 0.5 s: the process used 30 ms of CPU, of which 2 ms collecting, 4 ms exporting, 1 ms
    # draining, 1 ms recognizing, 1 ms in the sampled path and 1,000,000 fast-path pairs
    now[0], cpu[0] = 0.5, 10.030
    stats[0] = stats_of(collection_ns=2_000_000, drain_ns=1_000_000, recognizer_ns=1_000_000, export_ns=4_000_000)
    p = monitor.observe(FakeCounters(allocs=1_000_000, samples=100, slow_ns=1_000_000, slow_calls=100))
    fast_s = FAST_PATH_PAIR_NS[DOMAINS.index("obj"), 0] * 1_000_000 / 1e9
    assert p.figures["export_s"] == pytest.approx(0.004)
    assert p.figures["app_cpu_s"] == pytest.approx(0.030 - 0.002 - 0.004 - 0.001 - 0.001 - 0.001 - fast_s)
    assert "export" not in p.components  # its cost follows the exports, not the rates


class FakeWriter:
    def __init__(self):
        self.write_ns, self.bytes_written = 0, 0
        self.recent_writes = collections.deque(maxlen=256)

    def write(self, wall_ns, nbytes):
        self.write_ns += wall_ns
        self.bytes_written += nbytes
        self.recent_writes.append((time.monotonic_ns(), wall_ns, nbytes))


def test_ring_fill_is_what_the_drains_found():
    now, stats = [0.0], [stats_of()]
    monitor = PressureMonitor(1.0, 0.2, 1000, collection_stats=lambda: stats[0], clock=lambda: now[0])
    monitor.observe(FakeCounters())
    # 400 a drain in the fullest ring: under the wake-up (8 threads' rings together held 3,200)
    now[0], stats[0] = 1.0, dict(stats_of(), ring_passes=10, records_drained=32000, fullest_ring_records=4000)
    p = monitor.observe(FakeCounters(samples=32000))
    assert p.figures["ring_fill"] == pytest.approx(0.4) and p.components["ring_fill"] == 0
    # 900 a drain: falling behind
    now[0], stats[0] = 2.0, dict(stats_of(), ring_passes=12, records_drained=33800, fullest_ring_records=5800)
    p = monitor.observe(FakeCounters(samples=33800))
    assert p.figures["ring_fill"] == pytest.approx(0.9) and p.components["ring_fill"] == pytest.approx(0.8)


def test_dump_writer_busy_time_and_backlog_are_pressure():
    now = [0.0]
    writer = FakeWriter()
    monitor = PressureMonitor(export_interval_s=1.0, drain_interval_s=0.2, ring_capacity=1000,
                              clock=lambda: now[0], dump_writer=lambda: writer)
    monitor.observe(FakeCounters())
    writer.write(300_000_000, 3_000_000)  # 0.3 s writing 3 MB, in one write
    writer.write(100_000_000, 1_000_000)
    now[0] = 1.0
    p = monitor.observe(FakeCounters(samples=1000))
    assert p.figures["dump_busy"] == pytest.approx(0.4)
    assert p.figures["dump_mb_per_s_writing"] == pytest.approx(10.0)
    assert p.figures["dump_longest_write_s"] == pytest.approx(0.3)
    assert p.load("dump_writer") == pytest.approx(0.4 / DUMP_BUSY_BUDGET)
    assert p.load("dump_backlog") == pytest.approx(0.3 / 0.2 / DUMP_BACKLOG_BUDGET)
    assert p.dominant == "dump_backlog" and p.value == 1.0 and "took 300 ms" in p.reason()
    now[0] = 2.0  # an interval without writes: no busy time, no backlog
    p = monitor.observe(FakeCounters(samples=1000))
    assert p.components["dump_writer"] == 0 and p.components["dump_backlog"] == 0


def test_added_sources_are_pressure_components():
    now = [0.0]
    monitor = PressureMonitor(1.0, 0.2, 1000, clock=lambda: now[0])
    monitor.add_source(lambda gap: {"profile_queue": (2.0 * gap, "profiles waiting")})
    monitor.observe(FakeCounters())
    now[0] = 1.0
    p = monitor.observe(FakeCounters())
    assert p.dominant == "profile_queue" and p.load("profile_queue") == 2.0 and p.value == 1.0


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
    assert counter.last_message == "Failed to export"


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


def test_fullest_ring_is_one_threads_share_of_a_drain():
    """Two threads writing records before one drain: the fullest ring holds at most what one of
    them wrote, not both together."""
    import threading

    from opentelemetry.sdk.metrics import MeterProvider

    import memscope_otel

    provider = MeterProvider()
    # Rings far larger than what the threads write: no half-full ring wakes the drainer, so one
    # drain sees both threads' records (drains that each saw one thread would sum to all of them).
    tracker = memscope_otel.start(provider, small_sample_rate=1.0, medium_sample_rate=1.0, adaptive=False,
                                  drain_interval_ms=60000, max_records_per_thread=262144)
    try:
        drainer = tracker.drainer
        drainer.drain()
        drained0, fullest0 = drainer.records_drained, drainer.ring_passes[1]
        started, written = threading.Barrier(2), threading.Barrier(2)

        def work():
            started.wait()
            kept = [str(i) for i in range(2000)]  # 2,000 sampled small allocations, at least
            written.wait()  # both threads' records are in their rings at once
            del kept

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        drainer.drain()
        drained = drainer.records_drained - drained0
        fullest = drainer.ring_passes[1] - fullest0
    finally:
        memscope_otel.stop()
        provider.shutdown()
    assert fullest >= 2000, (fullest, drained)
    assert fullest <= drained - 2000, (fullest, drained)
