"""The live table holds many sampled blocks at once, and frees take exactly their share back out."""
from opentelemetry.sdk.metrics import MeterProvider

import memscope_otel
from memscope_otel import sampler

MANUAL = 3


def test_thirty_thousand_live_blocks_fit_and_leave_cleanly():
    memscope_otel.start(meter_provider=MeterProvider(), drain_interval_ms=60000, max_records_per_thread=65536)
    try:
        before = sampler.read_counters()
        n, size = 30000, 100_000  # large: each one is sampled (weight 1) and enters the table
        addresses = [0x7F0000000000 + i * 4096 for i in range(n)]  # page-aligned, like mmap blocks
        for a in addresses:
            memscope_otel.track_allocation(a, size, "Block")
        snap = memscope_otel.snapshot()
        assert snap.counters.live_untracked == before.live_untracked  # both buckets never full
        assert snap.live_bytes[MANUAL] == n * size
        for a in addresses:
            memscope_otel.track_deallocation(a)
        snap = memscope_otel.snapshot()
        assert snap.live_bytes[MANUAL] == 0
        assert snap.counters.deallocations[MANUAL] - before.deallocations[MANUAL] == n
    finally:
        memscope_otel.stop()
