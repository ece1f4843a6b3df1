"""MAX_RECORDS_PER_THREAD applies on restart to threads whose ring already exists: the ring is
replaced once empty, so no record is stranded and the new capacity holds."""
from opentelemetry.sdk.metrics import MeterProvider

import memscope_otel
from memscope_otel import sampler


def large_allocations(n):
    return [bytearray(16384) for _ in range(n)]  # large: every one is sampled


def dropped_during(n):
    before = sampler.read_counters()
    keep = large_allocations(n)
    after = sampler.read_counters()
    del keep
    return after.dropped - before.dropped


def test_a_restart_with_a_bigger_ring_stops_the_drops():
    provider = MeterProvider()
    tracker = memscope_otel.start(meter_provider=provider, max_records_per_thread=256, drain_interval_ms=60000)
    try:
        memscope_otel.snapshot()  # drain whatever came before
        with tracker.drainer.lock:  # nothing moves the records meanwhile (the mover waits too)
            assert dropped_during(1000) > 0  # 256 slots, 1000 sampled allocations, no drain
    finally:
        memscope_otel.stop()
    tracker = memscope_otel.start(meter_provider=provider, max_records_per_thread=4096, drain_interval_ms=60000)
    try:
        memscope_otel.snapshot()  # empties the old ring; the next sample moves to a new one
        with tracker.drainer.lock:
            assert dropped_during(1000) == 0
        assert sampler.read_counters().footprint_bytes >= 4096 * 32
    finally:
        memscope_otel.stop()


def test_a_half_full_ring_wakes_the_mover():
    """Bursts larger than a ring are moved out of it as they come, not at the next interval, and
    without the drainer (csrc/stage.c: it would take the GIL back from the application)."""
    import time

    memscope_otel.start(meter_provider=MeterProvider(), max_records_per_thread=1024, drain_interval_ms=60000)
    try:
        tracker = memscope_otel.snapshot() and memscope_otel.tracker.current()
        before = sampler.read_counters()
        drains_before, (passes_before, _) = tracker.drainer.drains, tracker.drainer.ring_passes
        # 8 bursts of 150 sampled allocations and their 150 frees (300 records: past the half of
        # the segment of about 500 records that a thread sampling on writes once the older ones
        # are emptied, under it) through one 1024-record ring.
        for _ in range(8):
            keep = large_allocations(150)
            del keep
            time.sleep(0.05)
        after = sampler.read_counters()
        # Woken (the interval is a minute): 2,400 records through a 1,024-record ring, none dropped.
        assert tracker.drainer.ring_passes[0] - passes_before >= 8 * 300 // 1024
        assert tracker.drainer.drains == drains_before  # the stage (32,768 records to half) did not wake it
        assert after.samples - before.samples >= 8 * 300  # allocations and frees
        assert after.dropped == before.dropped
    finally:
        memscope_otel.stop()
