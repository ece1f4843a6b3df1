"""All rings together stay within MAX_RING_MEMORY, and what does not fit still counts.

Sixteen native threads each sample a few hundred large blocks, with a budget that has room for two
of their rings: the others get none, their records are dropped (for the dump file and the
workload recognizer) and added straight into the estimates, which stay whole.
"""
import memscope_otel
from memscope_otel import sampler
from testhook import LARGE, RAW

BUCKET = 17  # 100,000 bytes: 2^16 < size <= 2^17


def test_rings_past_the_budget_spill_into_the_estimates(start_tracker, th):
    ring = 4096  # 128 KiB each
    tracker = start_tracker(max_records_per_thread=ring, max_ring_memory=2**20, small_sample_rate=0.0,
                            medium_sample_rate=0.0, frequency_sample_interval=0)
    memscope_otel.snapshot()
    before = sampler.read_counters()
    estimated_before = tracker.summary.bucket_count[RAW, BUCKET]
    peak = 0
    for _ in range(4):
        assert th.lib.th_native_threads(16, 300, 100_000) == 0
        peak = max(peak, sampler.read_counters().footprint_bytes)
    memscope_otel.snapshot()
    after = sampler.read_counters()
    allocated = int(after.by_size[RAW, BUCKET] - before.by_size[RAW, BUCKET])
    assert allocated == 4 * 16 * 300 and after.allocations[RAW, LARGE] - before.allocations[RAW, LARGE] >= allocated
    assert after.dropped > before.dropped, "every thread got a ring: the budget was not reached"
    # every allocation (and free) is in the estimate, whether its record went through a ring or not
    assert tracker.summary.bucket_count[RAW, BUCKET] - estimated_before == allocated
    # the rings' part of the footprint stayed within the budget (the live table and filter aside)
    live_part = after.footprint_bytes - before.footprint_bytes
    assert peak - before.footprint_bytes <= 2**20 + max(live_part, 0), (peak, before.footprint_bytes)
