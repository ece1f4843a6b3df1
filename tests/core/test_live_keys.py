"""The live table's keys: what a block is, and when it stops being live.

- A realloc that fails leaves its block allocated and sampled, realloc(p, 0) included (CPython's
  allocators turn it into a request of one byte, so NULL means out of memory).
- A block whose free was never seen (freed past memscope) and whose address comes back: the old
  entry is stale, and leaves the estimate when the new block takes its key.
- Addresses of the manual API (track_allocation) are keys apart from heap addresses: a heap free
  never ends a manual block of the same address, nor the other way round.
All blocks here are large (always sampled, weight 1), so the live estimates are exact.
"""
import memscope_otel
import testhook
from testhook import RAW


def live_of(tracker, domain):
    memscope_otel.snapshot()
    return float(tracker.summary.live_bytes[domain])


def native_raw_live():
    """The live estimate of the RAW blocks allocated outside Python code (cffi calls the test
    hook with the GIL released: site <native>): exact for these large blocks, and unlike the
    domain's total, moved by no sampled small block of the interpreter's."""
    return sum(live for site, (_, _, live) in memscope_otel.snapshot().per_site.items()
               if getattr(site, "file", None) == "<native>" and site.domain == "raw")


def test_failed_realloc_keeps_the_block_live(start_tracker, th):
    """(Its exact counts: test_exact_counters.py's failed requests of size zero.)"""
    size = 100_003
    with testhook.failing_below(0):  # fails requests of 0 bytes, made through the test hook
        try:
            start_tracker()
            base = native_raw_live()
            p = th.lib.th_alloc(RAW, size)
            assert native_raw_live() - base == size
            assert th.lib.th_realloc(RAW, p, 0) == 0  # realloc(p, 0) failed: p is still allocated
            assert native_raw_live() - base == size, "the failed realloc took the block out of the estimate"
            th.lib.th_free(RAW, p)
            assert native_raw_live() - base == 0, "the free of the block after a failed realloc was not seen"
        finally:
            memscope_otel.stop()  # before the layer under it goes


def test_stale_entry_leaves_the_estimate_when_its_key_comes_back(tracker):
    from memscope_otel.records import DOMAINS

    manual = DOMAINS.index("manual")
    base = live_of(tracker, manual)
    address = 0x7E57_0000_1000
    # the first block's end is never reported (as a block freed past memscope would be)
    memscope_otel.track_allocation(address, 10_000, "Buffer")
    memscope_otel.track_allocation(address, 20_000, "Buffer")
    assert live_of(tracker, manual) - base == 20_000
    memscope_otel.track_deallocation(address)
    assert live_of(tracker, manual) - base == 0


def test_manual_and_heap_addresses_are_different_keys(tracker, th):
    from memscope_otel.records import DOMAINS

    manual = DOMAINS.index("manual")
    raw_base, manual_base = native_raw_live(), live_of(tracker, manual)
    p = th.lib.th_alloc(RAW, 100_003)
    memscope_otel.track_allocation(p, 50_000, "DeviceBuffer")  # e.g. a device mapping at that address
    assert native_raw_live() - raw_base == 100_003
    assert live_of(tracker, manual) - manual_base == 50_000
    th.lib.th_free(RAW, p)
    assert native_raw_live() - raw_base == 0
    assert live_of(tracker, manual) - manual_base == 50_000, "a heap free ended a manual block"
    memscope_otel.track_deallocation(p)
    assert live_of(tracker, manual) - manual_base == 0
