"""Multi-threaded stress: every domain (the native one through tests/core/nativeprobe.c, every
allocating function), mixed sizes, frees on other threads than the allocating
one, rate changes, drains and metric collections, all concurrently, with the tracker stopped and
restarted (with other settings) in the middle. CI also runs this on the ASan/UBSan build
(scripts/sanitize.sh), where any memory error in the C side aborts the process.

Invariants checked: no crash and no exception in any thread; exact counters never go down and
stay self-consistent (every allocation lands in exactly one histogram bucket; bytes within the
bounds of their size class); every record written is reduced; all estimates finite.
"""
import ctypes
import queue
import random
import sys
import threading
import time

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
from memscope_otel import sampler, tracker as tracker_module
from memscope_otel.records import DOMAINS

from conftest import CORE

sys.path.insert(0, str(CORE))
from nativeprobe import ALL_FUNCTIONS, FUNCTIONS, Probe, build_probe  # noqa: E402

pytestmark = pytest.mark.stress

PHASE_SECONDS = 1.2
OBJ, MEM, RAW = 0, 1, 2
NATIVE = DOMAINS.index("native")
SIZES = (0, 1, 16, 500, 513, 1000, 1024, 3000, 8191, 8192, 20000, 300000)
NATIVE_SIZES = (1, 16, 500, 1024, 3000, 8192, 20000, 300000)


def assert_counters_monotonic(before, after, where):
    for field in ("allocations", "bytes", "deallocations", "by_size"):
        old, new = getattr(before, field), getattr(after, field)
        assert (new >= old).all(), f"{field} went down {where}"
    assert after.samples >= before.samples and after.dropped >= before.dropped, where


def assert_counters_consistent(c, critical=8192):
    for d in range(len(DOMAINS)):
        assert c.by_size[d].sum() == c.allocations[d].sum(), f"domain {d}: histogram total != allocations"
        small, medium, large = (int(x) for x in c.allocations[d])
        small_b, medium_b, large_b = (int(x) for x in c.bytes[d])
        assert small_b <= 1023 * small
        assert 1024 * medium <= medium_b <= (critical - 1) * medium
        assert large_b >= critical * large


def assert_summary_finite(summary):
    for name in ("count", "bytes", "bucket_count", "live_bytes", "live_count"):
        values = getattr(summary, name)
        assert np.isfinite(values).all(), f"summary.{name} has non-finite values"
    assert (summary.count >= 0).all() and (summary.bucket_count >= 0).all()
    for values in (summary.id_count, summary.id_bytes, summary.id_live_bytes):
        assert np.isfinite(values).all()


def test_stress(testhook, tmp_path):
    th = testhook.load()
    probe = Probe(build_probe(tmp_path / "libstressprobe.so"))

    def free_native(p):
        probe.free((ctypes.c_void_p * 1)(p))
    provider_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[provider_reader])
    done = threading.Event()
    errors = []
    handoff = queue.Queue(maxsize=4096)  # (domain, pointer) allocated on one thread, freed on another
    readings = []
    readings_lock = threading.Lock()
    reader_drains = threading.Event()  # cleared while the tiny rings must overflow
    reader_drains.set()

    def guarded(body):
        def run(*args):
            try:
                body(*args)
            except BaseException as exc:
                errors.append(exc)
                done.set()
        return run

    @guarded
    def allocator(k):
        rng = random.Random(k)
        i = 0
        while not done.is_set():
            th.lib.th_workload(k * 1_000_003 + i, 4)
            for _ in range(20):
                domain = rng.choice((OBJ, MEM, RAW))
                p = th.lib.th_alloc(domain, rng.choice(SIZES))
                if p:
                    try:
                        handoff.put((domain, p), timeout=0.05)
                    except queue.Full:
                        th.lib.th_free(domain, p)
            junk = [str(j) * (j % 9) for j in range(200)] + [bytearray(rng.choice(SIZES)) for _ in range(5)]
            del junk
            # The native domain: every function, one block of each batch handed to a freer (freed
            # on another thread), the others freed here; sometimes from a pthread of the probe's.
            blocks = probe.alloc(rng.choice(FUNCTIONS), rng.choice(NATIVE_SIZES), 8)
            try:
                handoff.put((NATIVE, blocks[0]), timeout=0.05)
                blocks[0] = None
            except queue.Full:
                pass
            probe.free(blocks)
            if i % 10 == k % 10:
                assert probe.lib.probe_in_pthread(ALL_FUNCTIONS.index(rng.choice(FUNCTIONS)), rng.choice(NATIVE_SIZES), 20) == 20
            if i % 25 == k % 25:
                assert th.lib.th_native_threads(2, 20, rng.choice(SIZES)) == 0
            i += 1

    @guarded
    def freer(k):
        rng = random.Random(100 + k)
        while not done.is_set() or not handoff.empty():
            try:
                domain, p = handoff.get(timeout=0.01)
            except queue.Empty:
                continue
            if domain == NATIVE:
                free_native(p)
            else:
                th.lib.th_free(domain, p)
            if rng.random() < 0.05:
                junk = {j: bytes(j % 3000) for j in range(100)}
                del junk

    @guarded
    def rate_changer():
        rng = random.Random(7)
        while not done.is_set():
            sampler.set_rates(rng.choice((0.0, 0.01, 0.3, 1.0)), rng.choice((0.0, 0.0001, 0.01, 1.0)))
            time.sleep(0.001)

    @guarded
    def reader():
        n = 0
        while not done.is_set():
            drain = reader_drains.is_set()
            snap = memscope_otel.snapshot() if drain and n % 4 else None
            if drain and n % 4 == 0:
                provider_reader.get_metrics_data()  # the OpenTelemetry path: callbacks drain too
            counters = snap.counters if snap is not None else sampler.read_counters()
            with readings_lock:
                readings.append(counters)
            n += 1
            time.sleep(0.002)

    memscope_otel.start(meter_provider=provider, drain_interval_ms=10, adaptive=False)
    baseline_threads = testhook.os_thread_count()  # with the drainer
    start_counters = sampler.read_counters()
    workers = ([threading.Thread(target=allocator, args=(k,)) for k in range(4)]
               + [threading.Thread(target=freer, args=(k,)) for k in range(2)]
               + [threading.Thread(target=rate_changer), threading.Thread(target=reader)])
    for t in workers:
        t.start()
    try:
        time.sleep(PHASE_SECONDS)
        memscope_otel.stop()
        time.sleep(0.1)
        # Restart with tiny rings, a dense frequency guarantee, fewer domains and no draining until
        # stop(): the rings overflow for sure.
        reader_drains.clear()
        memscope_otel.start(meter_provider=provider, drain_interval_ms=60000, adaptive=False,
                            max_records_per_thread=256, frequency_sample_interval=50, domains="obj,raw")
        time.sleep(PHASE_SECONDS)
        memscope_otel.stop()
        reader_drains.set()
        memscope_otel.start(meter_provider=provider, drain_interval_ms=10, adaptive=False)
        time.sleep(PHASE_SECONDS)
    finally:
        done.set()
        for t in workers:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in workers), "a stress thread hung"
    assert errors == [], errors
    testhook.wait_os_threads(baseline_threads)
    tracker = tracker_module.current()
    memscope_otel.stop()  # drains the rest
    end_counters = sampler.read_counters()

    assert len(readings) > 10
    for i in range(1, len(readings)):
        assert_counters_monotonic(readings[i - 1], readings[i], f"between readings {i - 1} and {i}")
    assert_counters_monotonic(start_counters, end_counters, "over the test")
    assert_counters_consistent(end_counters)
    grown = end_counters.allocations - start_counters.allocations
    for d in (OBJ, MEM, RAW):
        assert grown[d].sum() > 10_000, f"domain {d} was barely exercised"
    # (native calls go through ctypes, a few thousand a second under the sanitizers)
    assert grown[NATIVE].sum() > 2_000 and end_counters.deallocations[NATIVE] - start_counters.deallocations[NATIVE] > 2_000
    assert end_counters.deallocations[RAW] > start_counters.deallocations[RAW]
    assert end_counters.dropped > start_counters.dropped, "the tiny rings never overflowed"
    # Every record ever written into a ring (counters and the summary are both process-wide) was
    # drained and reduced, and every one that found no room was added through the spill, across
    # both restarts and the exits of hundreds of threads.
    assert tracker.summary.records == end_counters.samples + end_counters.dropped
    assert_summary_finite(tracker.summary)
    # Collections after stop() still work and report the final values.
    data = provider_reader.get_metrics_data()
    assert data is not None
