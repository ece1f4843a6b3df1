"""Tolerances for Horvitz-Thompson estimates, derived from the sampling design (docs/statistics.md).

Every allocation i of size s_i outside a frequency slot is sampled independently with probability
p_i and then counts w_i = float32(1/p_i) times, so the estimate of a total T = sum s_i is
T_hat = sum s_i w_i I_i. Its deviation T_hat - E[T_hat] is a sum of independent (or, across a rate
change, martingale) terms X_i = s_i (w_i I_i - p_i w_i), each bounded by |X_i| <= s_i max(w_i, 1)
and with variance s_i^2 p_i (1 - p_i) w_i^2 ~ s_i^2 (1 - p_i) / p_i. Frequency-slot and large
allocations are sampled with probability 1 and add no variance; treating them as Bernoulli here
only widens the tolerance. Bernstein's inequality (Freedman's for the martingale case) gives

    P(|T_hat - E T_hat| >= t) <= 2 exp(-t^2 / (2 (V + M t / 3))),

so t = L M / 3 + sqrt((L M / 3)^2 + 2 L V) with L = ln(2 / alpha) bounds the false-failure
probability of one check by alpha, with no normal approximation. E[T_hat] differs from T only by
the float32 rounding of 1/p (|p w - 1| <= 2^-24), which is added to the tolerance as a bias bound.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

ALPHA = 1e-6  # false-failure probability bound of one check (per estimate compared)


def weight_of(rate):
    """The weight the sampler stores for ``rate``: float32(1/p), exactly as the C side rounds it."""
    return float(np.float32(1.0 / rate)) if rate > 0 else 0.0


@dataclass(frozen=True)
class Stratum:
    """Allocations sampled at one rate: ``total`` = sum of s_i, ``sum_sq`` = sum of s_i^2,
    ``largest`` = max s_i (use 1 for all three per allocation when estimating counts)."""

    rate: float
    total: float
    sum_sq: float
    largest: float

    def __post_init__(self):
        # At rate 0 nothing outside the frequency slots is seen: no unbiased estimate exists.
        assert 0.0 < self.rate <= 1.0, f"a stratum needs a rate in (0, 1], got {self.rate}"

    @property
    def variance(self):
        p = self.rate
        if p >= 1.0 or self.sum_sq == 0:
            return 0.0
        w = weight_of(p)
        return self.sum_sq * p * (1.0 - p) * w * w

    @property
    def bound(self):
        """Bound on one term |X_i| of the deviation."""
        if self.rate >= 1.0 or self.sum_sq == 0:
            return 0.0
        return self.largest * max(weight_of(self.rate), 1.0)

    @property
    def rounding(self):
        """Bound on |E T_hat - T| from storing 1/p as float32."""
        if self.rate >= 1.0:
            return 0.0
        return self.total * abs(self.rate * weight_of(self.rate) - 1.0)


def deviation(variance, bound, probability):
    """Bernstein: a sum of independent (or martingale) terms, each at most ``bound`` in absolute
    value, with total ``variance``, strays from its mean by ``deviation`` or more, in either
    direction, with probability <= probability."""
    ell = math.log(2.0 / probability)
    a = ell * bound / 3.0
    return a + math.sqrt(a * a + 2.0 * ell * variance)


def tolerance(strata, alpha=ALPHA):
    """The deviation t with P(|T_hat - T| > t) <= alpha for an estimate over ``strata``."""
    strata = list(strata)
    v = sum(s.variance for s in strata)
    m = max((s.bound for s in strata), default=0.0)
    return deviation(v, m, alpha) + sum(s.rounding for s in strata)


def stddev(strata):
    """The standard deviation of the estimate (for messages and the power check)."""
    return math.sqrt(sum(s.variance for s in strata))


def sizes_stratum(rate, sizes):
    """The stratum of a known array of requested sizes."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if len(sizes) == 0:
        return Stratum(rate, 0.0, 0.0, 0.0)
    return Stratum(rate, float(sizes.sum()), float((sizes * sizes).sum()), float(sizes.max()))


def count_stratum(rate, n):
    """The stratum of n allocations when estimating their number (every s_i = 1)."""
    return Stratum(rate, float(n), float(n), 1.0 if n else 0.0)


def unknown_sizes_stratum(rate, total_bytes, largest):
    """Allocations whose sizes are unknown but whose total and maximum are: sum s_i^2 <= largest *
    sum s_i bounds their variance (the tracker's exact counters give the total)."""
    assert total_bytes >= 0, f"more bytes attributed to the workload than counted: {total_bytes}"
    return Stratum(rate, float(total_bytes), float(total_bytes) * float(largest), float(min(largest, total_bytes)))


@dataclass(frozen=True)
class Check:
    """One estimate against the exact interval [low, high] it must fall into, +- tolerance."""

    name: str
    estimate: float
    low: float
    high: float
    tolerance: float
    sd: float

    @property
    def ok(self):
        return self.low - self.tolerance <= self.estimate <= self.high + self.tolerance

    def with_estimate(self, estimate):
        return Check(self.name, estimate, self.low, self.high, self.tolerance, self.sd)

    def describe(self):
        exact = self.low if self.low == self.high else f"[{self.low:.6g}, {self.high:.6g}]"
        z = (self.estimate - min(max(self.estimate, self.low), self.high)) / self.sd if self.sd else 0.0
        return (f"{self.name}: estimate {self.estimate:.6g}, exact {exact}, tolerance {self.tolerance:.4g} "
                f"({self.tolerance / max(self.high, 1):.2%}), off by {z:+.2f} sd")

    def detects_bias(self, relative):
        """True when any estimate within tolerance of the truth, scaled by 1 +- relative, falls
        outside the tolerance: |(1+r)(X - T) + r T| >= r T - (1+r) t > t needs t < r T / (2 + r)."""
        return self.tolerance < relative * self.low / (2.0 + relative)


# Power against a biased sampler (docs/statistics.md, "Power of the live-estimate tests").
BIAS = 0.05  # the relative bias the live-estimate tests must detect
BETA = 1e-3  # allowed probability that a sampler with that bias passes a check: power >= 0.999


def variance_of(strata):
    return sum(s.variance for s in strata)


def bound_of(strata):
    return max((s.bound for s in strata), default=0.0)


def miss_probability(check, mean, variance, bound):
    """Upper bound on the probability that an estimator with expectation ``mean`` whose deviation
    is a sum of independent terms (total ``variance``, each at most ``bound``) lands inside the
    check's acceptance interval [low - t, high + t] (one-sided Bernstein; no normal approximation)."""
    low, high = check.low - check.tolerance, check.high + check.tolerance
    if low <= mean <= high:
        return 1.0
    gap = mean - high if mean > high else low - mean
    return math.exp(-gap * gap / (2.0 * (variance + bound * gap / 3.0)))


def allocation_bias_miss(check, strata, r=BIAS):
    """Every sampled allocation weighted (1 + r) / p: the live estimate is (1 + r) times an
    unbiased one (a free removes what its allocation added), so its mean is at least
    (1 + r) * low (the requests of unknown size add nothing in the worst case), its variance
    (1 + r)^2 V and its terms (1 + r) M."""
    return miss_probability(check, (1.0 + r) * check.low, (1.0 + r) ** 2 * variance_of(strata),
                            (1.0 + r) * bound_of(strata))


def free_bias_miss(check, strata, freed_strata, r=BIAS):
    """Every free of a sampled block removing (1 + r) times what its allocation added: the
    estimate loses r times the Horvitz-Thompson estimate of the freed bytes F, so its mean is at
    most high - r F (frees of blocks of unknown size only lower it), its variance
    V + r^2 V_freed, its terms at most max(M, r M_freed)."""
    freed = sum(s.total for s in freed_strata)
    return miss_probability(check, check.high - r * freed,
                            variance_of(strata) + r * r * variance_of(freed_strata),
                            max(bound_of(strata), r * bound_of(freed_strata)))


def describe_power(check, alloc_miss=None, free_miss=None, r=BIAS):
    parts = [f"{check.name}: tolerance {check.tolerance / check.sd:.2f} sd"]
    for side, miss in (("allocation", alloc_miss), ("free", free_miss)):
        if miss is not None:
            parts.append(f"{r:.0%} {side}-side bias passes with probability <= {miss:.1e}")
    return "; ".join(parts)


def assert_powered(check, alloc_miss=None, free_miss=None, beta=BETA):
    """The check rejects a sampler biased as described with probability >= 1 - beta (computed
    from the workload's own sizes, so a smaller workload cannot silently lose the power)."""
    text = describe_power(check, alloc_miss, free_miss)
    if os.environ.get("MEMSCOPE_STATS_VERBOSE"):
        print(text)
    for miss in (alloc_miss, free_miss):
        assert miss is None or miss <= beta, f"check not powered: {text}"


def assert_all(checks):
    """Fails with every check's numbers when any estimate is outside its tolerance
    (``MEMSCOPE_STATS_VERBOSE=1 pytest -s`` prints them all)."""
    checks = list(checks)
    if os.environ.get("MEMSCOPE_STATS_VERBOSE"):
        for c in checks:
            print(c.describe())
    bad = [c for c in checks if not c.ok]
    assert not bad, "estimates outside their tolerance:\n" + "\n".join(c.describe() for c in bad)
