"""Rates changed mid-run (memscope_otel.sampler.set_rates, what the optimizer does): every record
carries the weight of the rate it was drawn at, so the estimates stay unbiased, with the
piecewise variance; and a thread picks the new rates up within one frequency interval.

After set_rates a thread keeps its current countdowns until its next frequency slot (at most N
allocations later, N = the frequency interval) or its next sample; allocations in between are
drawn at the old or the new rate, whichever the thread had. Which one is decided by the past
only (a predictable rate), so the estimate is still a martingale and Freedman's inequality gives
the same tolerance as Bernstein's, with those allocations counted at the worse of the two rates
(the smaller one: more variance, larger weight).
"""
import numpy as np
import pytest

from memscope_otel import sampler

from . import bounds, window
from .bounds import Stratum
from .tracked import tracking
from .window import MEDIUM, SMALL

CRITICAL, INTERVAL = 8192, 1000
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}


def _stratum(rate, sizes, repeat):
    s = sizes.astype(np.float64)
    return Stratum(rate, repeat * s.sum(), repeat * (s * s).sum(), s.max())


@pytest.mark.parametrize("first,second,seed", [
    ((0.001, 0.05), (0.01, 0.2), 301),   # (small, medium) rates: raised, as when pressure ends
    ((0.01, 0.2), (0.001, 0.02), 302),   # lowered, as under export pressure
])
def test_estimates_stay_unbiased_across_a_rate_change(workload, first, second, seed):
    rng = np.random.default_rng(seed)
    sizes = {SMALL: rng.integers(16, 1024, 1000, dtype=np.uint64),
             MEDIUM: rng.integers(1024, CRITICAL, 1000, dtype=np.uint64)}
    # Per phase and class: repeats of the 1000 sizes. Phase two starts with small requests, so
    # the first N allocations after the change (the pickup window) are small ones.
    repeats = {SMALL: 1000, MEDIUM: 100}
    domain = "obj"
    d = window.domain_index(domain)
    with tracking(seed, small_sample_rate=first[0], medium_sample_rate=first[1],
                  critical_size_threshold=CRITICAL, frequency_sample_interval=INTERVAL) as tracker:
        before = window.read(tracker)
        for cls in (SMALL, MEDIUM):
            for _ in range(10):
                workload.churn(domain, sizes[cls], repeats[cls] // 10)
                tracker.drainer.drain()
        sampler.set_rates(medium=second[1], small=second[0])
        assert sampler.rates() == (second[1], second[0])
        # The first chunk holds exactly the N allocations that may still see the old rates.
        workload.churn(domain, sizes[SMALL], 1)
        for cls in (SMALL, MEDIUM):
            r = repeats[cls] - (1 if cls == SMALL else 0)
            for _ in range(10):
                workload.churn(domain, sizes[cls], r // 10)
                tracker.drainer.drain()
            workload.churn(domain, sizes[cls], r % 10)
        after = window.read(tracker)
    delta = after - before
    window.assert_clean(delta)

    rate = {SMALL: (first[0], second[0]), MEDIUM: (first[1], second[1])}
    checks = []
    for cls in (SMALL, MEDIUM):
        p1, p2 = rate[cls]
        worst = min(p1, p2)
        n1 = repeats[cls] * 1000
        ambiguous = 1 if cls == SMALL else 0  # repeats of the sizes within the pickup window
        n2 = (repeats[cls] - ambiguous) * 1000
        exact_n, exact_b = int(delta.allocations[d][cls]), int(delta.bytes[d][cls])
        total = sum(int(sizes[cls].sum()) * k for k in (repeats[cls], repeats[cls]))
        extra_n, extra_b = exact_n - 2 * n1, exact_b - total
        assert extra_n >= 0 and extra_b >= 0
        # Other requests of the window may fall anywhere: count them at the worse rate.
        count_strata = [bounds.count_stratum(p1, n1), bounds.count_stratum(worst, ambiguous * 1000),
                        bounds.count_stratum(p2, n2), bounds.count_stratum(worst, extra_n)]
        byte_strata = [_stratum(p1, sizes[cls], repeats[cls]), _stratum(worst, sizes[cls], ambiguous),
                       _stratum(p2, sizes[cls], repeats[cls] - ambiguous),
                       bounds.unknown_sizes_stratum(worst, extra_b, LARGEST[cls])]
        name = f"{window.class_name(cls)} {p1}->{p2}"
        checks.append(bounds.Check(f"{name} count", float(delta.est_count[d][cls]), exact_n, exact_n,
                                   bounds.tolerance(count_strata), bounds.stddev(count_strata)))
        checks.append(bounds.Check(f"{name} bytes", float(delta.est_bytes[d][cls]), exact_b, exact_b,
                                   bounds.tolerance(byte_strata), bounds.stddev(byte_strata)))
    bounds.assert_all(checks)
    # Power: estimating with the phase-one weights throughout (a sampler that ignored the new
    # rates, or a reducer applying the current rate to old records) is off by far more.
    for check, cls in zip(checks[::2], (SMALL, MEDIUM)):
        p1, p2 = rate[cls]
        assert not check.with_estimate(check.low * (0.5 + 0.5 * p2 / p1)).ok


@pytest.mark.parametrize("old,new", [(0.001, 1.0), (1.0, 0.0)])
def test_new_rates_are_picked_up_within_one_frequency_interval(workload, old, new):
    sizes = np.full(1000, 200, dtype=np.uint64)  # small requests
    with tracking(9, small_sample_rate=old, medium_sample_rate=0.05,
                  frequency_sample_interval=INTERVAL) as tracker:
        workload.churn("raw", sizes, 5)  # some history at the old rate
        tracker.drainer.drain()
        sampler.set_rates(medium=0.05, small=new)
        workload.churn("raw", sizes[:INTERVAL], 1)  # one frequency interval: the pickup happens here
        before = window.read(tracker)
        workload.churn("raw", sizes, 10)  # entirely under the new rate
        after = window.read(tracker)
    delta = after - before
    window.assert_clean(delta)
    exact = int(delta.allocations[2][SMALL])
    estimate = float(delta.est_count[2][SMALL])
    assert exact == 10_000
    if new == 1.0:
        # Every request sampled with weight 1: the estimate is the exact count, to the unit.
        assert estimate == exact
    else:
        # Rate 0: only the frequency guarantee samples, once per N allocations (weight 1).
        assert estimate in (exact // INTERVAL, exact // INTERVAL + 1), estimate
