"""Before/after readings of the exact counters and of the estimates, taken so that they agree.

A reading drains every ring and reads the exact counters inside ``sampler.ignored()``: the
reading's own allocations are neither counted nor sampled, so between two readings the exact
counters and the records cover exactly the same allocations (the drain comes first, and nothing
the test thread does between drain and counter read is tracked).
"""
from dataclasses import dataclass

import numpy as np

from memscope_otel import sampler
from memscope_otel.records import DOMAINS, SIZE_CLASSES

SMALL, MEDIUM, LARGE = range(3)


@dataclass(frozen=True)
class Reading:
    allocations: np.ndarray  # exact [domain][class]
    bytes: np.ndarray  # exact [domain][class]
    deallocations: np.ndarray  # exact [domain]
    dropped: int
    live_untracked: int
    est_count: np.ndarray  # estimated [domain][class]
    est_bytes: np.ndarray
    est_live: np.ndarray  # estimated [domain]
    id_count: np.ndarray
    id_bytes: np.ndarray
    id_live: np.ndarray

    def __sub__(self, before):
        return Reading(*(getattr(self, f) - getattr(before, f) for f in self.__dataclass_fields__))


def read(tracker):
    """Drains, then reads exact counters and a copy of the cumulative estimates."""
    with sampler.ignored():
        tracker.drainer.drain()
        c = sampler.read_counters()
        s = tracker.summary
        return Reading(
            c.allocations.astype(np.int64), c.bytes.astype(np.int64), c.deallocations.astype(np.int64),
            c.dropped, c.live_untracked,
            s.count.copy(), s.bytes.copy(), s.live_bytes.copy(),
            s.id_count.copy(), s.id_bytes.copy(), s.id_live_bytes.copy(),
        )


def domain_index(name):
    return DOMAINS.index(name)


def class_name(index):
    return SIZE_CLASSES[index]


def assert_clean(delta):
    """The conditions under which the estimates are unbiased by design: no record lost to a full
    ring and no sampled block left out of the live table."""
    assert delta.dropped == 0, f"{delta.dropped} records dropped: ring too small for the workload chunk"
    assert delta.live_untracked == 0, f"{delta.live_untracked} sampled blocks missed the live table"
