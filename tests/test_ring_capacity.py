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
    memscope_otel.start(meter_provider=provider, max_records_per_thread=256, drain_interval_ms=60000)
    try:
        memscope_otel.snapshot()  # drain whatever came before
        assert dropped_during(1000) > 0  # 256 slots, 1000 sampled allocations, no drain
    finally:
        memscope_otel.stop()
    memscope_otel.start(meter_provider=provider, max_records_per_thread=4096, drain_interval_ms=60000)
    try:
        memscope_otel.snapshot()  # empties the old ring; the next sample moves to a new one
        assert dropped_during(1000) == 0
        assert sampler.read_counters().footprint_bytes >= 4096 * 32
    finally:
        memscope_otel.stop()
