"""One run per case of the size-class workload: known small, medium and large requests in one
domain, estimates per size class compared with the exact counters of the same run.

Shared by the unbiasedness tests (test_size_classes.py) and the power tests (test_power.py),
which judge the same runs, so the suite pays for each run once.
"""
from dataclasses import dataclass, field

import numpy as np

from memscope_otel.records import (CLASS_MASK, CLASS_SHIFT, DOMAINS, EVENT_MASK, EVENT_SHIFT, EVENTS,
                                   FLAG_FREQUENCY, domain_of)

from . import bounds, window
from .bounds import Check, Stratum
from .tracked import tracking
from .window import LARGE, MEDIUM, SMALL

CRITICAL = 8192
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}  # the largest request each class can hold
FREE = EVENTS.index("free")


@dataclass(frozen=True)
class Case:
    """A domain, the two rates, a seed and how many small/medium requests to make."""

    domain: str
    small_rate: float
    medium_rate: float
    seed: int
    n_small: int
    n_medium: int
    powered: tuple  # classes sized so that a 10% bias is detected (test_power.py)
    n_large: int = 256
    interval: int = 1000  # frequency_sample_interval

    def __str__(self):
        every = "" if self.interval == 1000 else f"-every{self.interval}"
        return f"{self.domain}-s{self.small_rate}-m{self.medium_rate}{every}-seed{self.seed}"

    def rate(self, cls):
        return {SMALL: self.small_rate, MEDIUM: self.medium_rate, LARGE: 1.0}[cls]


# Default rates (0.001 / 0.05) and others. A check detects a 10% bias when its tolerance is under
# 10% / 2.1 of the exact value (see bounds.Check.detects_bias); with the relative tolerance about
# 5.4 * sqrt((1 - p) / (p n)) that takes ~2e7 small requests at the default rate 0.001, paid once
# (obj); mem, raw and native at the default small rate are checked with 10x fewer requests, unpowered.
CASES = [
    Case("obj", 0.001, 0.05, seed=11, n_small=20_000_000, n_medium=400_000, powered=("small", "medium")),
    Case("mem", 0.001, 0.05, seed=12, n_small=2_000_000, n_medium=400_000, powered=("medium",)),
    Case("raw", 0.001, 0.05, seed=13, n_small=2_000_000, n_medium=400_000, powered=("medium",)),
    Case("native", 0.001, 0.05, seed=14, n_small=2_000_000, n_medium=400_000, powered=("medium",)),
    Case("obj", 0.01, 0.2, seed=21, n_small=2_000_000, n_medium=100_000, powered=("small", "medium")),
    Case("mem", 0.01, 0.2, seed=22, n_small=2_000_000, n_medium=100_000, powered=("small", "medium")),
    Case("raw", 0.01, 0.2, seed=23, n_small=2_000_000, n_medium=100_000, powered=("small", "medium")),
    Case("native", 0.01, 0.2, seed=24, n_small=2_000_000, n_medium=100_000, powered=("small", "medium")),
    Case("obj", 0.2, 0.01, seed=31, n_small=400_000, n_medium=400_000, powered=("small",)),
    Case("raw", 1.0, 1.0, seed=41, n_small=20_000, n_medium=20_000, powered=("small", "medium")),
    # The frequency guarantee off, and so frequent that it takes a third of all allocations (the
    # countdowns must skip exactly those, or the estimate is biased by about (1/p - 1) / N).
    Case("obj", 0.01, 0.2, seed=51, n_small=2_000_000, n_medium=100_000, powered=("small", "medium"), interval=0),
    Case("mem", 0.01, 0.2, seed=52, n_small=2_000_000, n_medium=100_000, powered=("small", "medium"), interval=3),
]


class RecordTotals:
    """A record sink on the drainer: per (domain, class) sums of the allocation records, so that
    other (wrong) estimators can be computed from the very records the summary reduced."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.weighted_bytes = np.zeros((len(DOMAINS), 3))
        self.weighted_count = np.zeros((len(DOMAINS), 3))
        self.bytes = np.zeros((len(DOMAINS), 3))
        self.count = np.zeros((len(DOMAINS), 3))
        self.frequency_bytes = np.zeros((len(DOMAINS), 3))
        self.frequency_count = np.zeros((len(DOMAINS), 3))

    def __call__(self, records, base_us):
        flags = records["flags"].astype(np.int64)
        alloc = (flags & EVENT_MASK) >> EVENT_SHIFT != FREE
        dom = domain_of(flags)[alloc]
        cls = ((flags & CLASS_MASK) >> CLASS_SHIFT)[alloc]
        size = records["size"][alloc].astype(np.float64)
        weight = records["weight"][alloc].astype(np.float64)
        freq = (flags[alloc] & FLAG_FREQUENCY) != 0
        np.add.at(self.weighted_bytes, (dom, cls), weight * size)
        np.add.at(self.weighted_count, (dom, cls), weight)
        np.add.at(self.bytes, (dom, cls), size)
        np.add.at(self.count, (dom, cls), 1.0)
        np.add.at(self.frequency_bytes, (dom[freq], cls[freq]), size[freq])
        np.add.at(self.frequency_count, (dom[freq], cls[freq]), 1.0)


@dataclass
class ClassRun:
    case: Case
    delta: window.Reading
    records: RecordTotals
    workload: dict  # cls -> (n, total bytes, sum of squares, largest)
    checks: dict = field(default_factory=dict)  # (cls, "count" | "bytes") -> Check


def _sizes(rng, cls, n):
    low, high = {SMALL: (256, 1023), MEDIUM: (1024, CRITICAL - 1), LARGE: (CRITICAL, 1 << 16)}[cls]
    return rng.integers(low, high + 1, size=n, dtype=np.uint64)


def _churn_chunked(workload, tracker, domain, sizes, n, rate, interval):
    """Requests n blocks cycling through ``sizes``, draining between chunks so that no ring fills:
    a chunk holds at most ~2^15 expected records (one allocation and one free record per sample)."""
    per_chunk_records = 2.0 * (rate + (1.0 / interval if interval else 0.0))
    repeat_cap = max(1, int((1 << 15) / per_chunk_records / len(sizes)))
    repeats, rest = divmod(n, len(sizes))
    assert rest == 0
    while repeats:
        r = min(repeats, repeat_cap)
        workload.churn(domain, sizes, r)
        tracker.drainer.drain()
        repeats -= r


def run_case(workload, case):
    rng = np.random.default_rng(case.seed)
    plan = {SMALL: (_sizes(rng, SMALL, 4000), case.n_small),
            MEDIUM: (_sizes(rng, MEDIUM, 1000), case.n_medium),
            LARGE: (_sizes(rng, LARGE, 256), case.n_large)}
    interval = case.interval
    with tracking(case.seed, small_sample_rate=case.small_rate, medium_sample_rate=case.medium_rate,
                  critical_size_threshold=CRITICAL, frequency_sample_interval=interval) as tracker:
        sink = RecordTotals()
        # Attached before the window opens, so that the mover keeps (and the drains hand the sink)
        # every record from the window's first drain on; what that drain hands it is not the
        # window's, and is forgotten.
        tracker.drainer.add_sink(sink)
        before = window.read(tracker)
        sink.clear()
        for cls, (sizes, n) in plan.items():
            _churn_chunked(workload, tracker, case.domain, sizes, n, case.rate(cls), interval)
        after = window.read(tracker)
        tracker.drainer.remove_sink(sink)
    delta = after - before
    window.assert_clean(delta)
    known = {}
    for cls, (sizes, n) in plan.items():
        s = sizes.astype(np.float64)
        reps = n // len(sizes)
        known[cls] = (n, reps * s.sum(), reps * (s * s).sum(), s.max())
    run = ClassRun(case, delta, sink, known)
    d = window.domain_index(case.domain)
    for cls in (SMALL, MEDIUM, LARGE):
        n, total, sum_sq, largest = known[cls]
        exact_n = int(delta.allocations[d][cls])
        exact_b = int(delta.bytes[d][cls])
        extra_n, extra_b = exact_n - n, exact_b - total
        # The exact counters saw at least the workload; what else ran in the window (the
        # interpreter's own requests around the helper calls) is small and of unknown sizes.
        assert extra_n >= 0 and extra_b >= 0, (cls, exact_n, n, exact_b, total)
        if cls != LARGE:
            assert extra_n <= 0.001 * n, f"window not dominated by the workload: {extra_n} other requests"
        p = case.rate(cls)
        largest_extra = LARGEST.get(cls, 1 << 62)
        count_strata = [bounds.count_stratum(p, n), bounds.count_stratum(p, extra_n)]
        byte_strata = [Stratum(p, total, sum_sq, largest),
                       bounds.unknown_sizes_stratum(p, extra_b, largest_extra)]
        name = f"{case} {window.class_name(cls)}"
        run.checks[cls, "count"] = Check(f"{name} count", float(delta.est_count[d][cls]), exact_n, exact_n,
                                         bounds.tolerance(count_strata), bounds.stddev(count_strata))
        run.checks[cls, "bytes"] = Check(f"{name} bytes", float(delta.est_bytes[d][cls]), exact_b, exact_b,
                                         bounds.tolerance(byte_strata), bounds.stddev(byte_strata))
    return run
