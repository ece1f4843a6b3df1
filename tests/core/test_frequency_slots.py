"""The frequency guarantee: every Nth allocation of a thread is sampled, whatever its class.

With both sampling rates at 0 and nothing large, the frequency slots are the only samples, so
M allocations of one thread give M / N of them (up to the phase of the thread's countdown at the
start). The small and medium fast paths each move one countdown that stands for their class's
coin and their share of the frequency interval, and the general path moves the real ones: this
checks that allocations of both kinds, interleaved, each count toward the slot, whichever path
they take and however the interval was split between the two.
"""
import numpy as np
import pytest

from memscope_otel import sampler
from memscope_otel.records import EVENTS, FLAG_FREQUENCY, event_of
from testhook import DOMAINS

INTERVAL = 97


@pytest.mark.parametrize("domain", range(3), ids=DOMAINS)
def test_every_nth_allocation_is_sampled_whatever_its_class(start_tracker, th, domain):
    tracker = start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=INTERVAL,
                            critical_size_threshold=1 << 20)
    batches = []
    tracker.drainer.add_sink(lambda records, base_us: batches.append(records.copy()))
    tracker.drainer.drain()
    batches.clear()
    before = sampler.read_counters()
    th.lib.th_class_mix(domain, 5000, 100, 3000)  # 10,000 small and 10,000 medium allocations
    after = sampler.read_counters()
    tracker.drainer.drain()
    made = (after.allocations - before.allocations).sum()
    assert made >= 20_000
    records = np.concatenate(batches)
    allocs = records[event_of(records["flags"]) != EVENTS.index("free")]
    assert (allocs["flags"] & FLAG_FREQUENCY).all()  # nothing else is sampled at rate 0
    # Slots come exactly every INTERVAL allocations, so `made` consecutive ones hold
    # floor or ceil of made / INTERVAL of them (1); the records also cover the few (far fewer
    # than INTERVAL) allocations between the first drain and the first counter read, and between
    # the second read and the last drain: at most one slot each (2). Hence 3.
    assert abs(len(allocs) - made / INTERVAL) <= 3, f"{len(allocs)} slots in {made} allocations"
