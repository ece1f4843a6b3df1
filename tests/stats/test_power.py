"""The tolerances are tight enough to catch wrong estimators on the same runs.

A check that any estimator passes proves nothing. Each powered check of test_size_classes.py must
reject (a) the estimate scaled by 1.1 and by 0.9 (a 10% bias), (b) the estimate with the weights
ignored (a plain sum over the records), and (c) where its bias is large enough to matter, the
classic mistake of weighting frequency-guaranteed samples 1/p as if they had been drawn at rate p.
(b) and (c) are computed from the very records the summary reduced (a sink on the drainer).
"""
import pytest

from memscope_otel.records import DOMAINS

from .window import MEDIUM, SMALL

CLASSES = {"small": SMALL, "medium": MEDIUM}


def _powered_checks(run):
    d = DOMAINS.index(run.case.domain)
    for name in run.case.powered:
        cls = CLASSES[name]
        for what in ("count", "bytes"):
            yield d, cls, what, run.checks[cls, what]


def test_powered_checks_detect_a_ten_percent_bias(class_run):
    checks = list(_powered_checks(class_run))
    assert checks
    for _, _, _, check in checks:
        assert check.ok, check.describe()
        assert check.detects_bias(0.10), f"tolerance too wide to see a 10% bias: {check.describe()}"
        for factor in (1.10, 0.90):
            biased = check.with_estimate(check.estimate * factor)
            assert not biased.ok, f"a {factor - 1:+.0%} biased estimator passed: {biased.describe()}"


def test_unweighted_sums_are_rejected(class_run):
    rates = {SMALL: class_run.case.small_rate, MEDIUM: class_run.case.medium_rate}
    tried = 0
    for d, cls, what, check in _powered_checks(class_run):
        if rates[cls] >= 1.0:
            continue  # at rate 1 every weight is 1: the plain sum is the right estimator
        plain = class_run.records.count[d][cls] if what == "count" else class_run.records.bytes[d][cls]
        assert not check.with_estimate(plain).ok, f"unweighted sum passed: {check.describe()}"
        tried += 1
    if all(rates[CLASSES[n]] < 1.0 for n in class_run.case.powered):
        assert tried > 0


def test_frequency_samples_weighted_as_bernoulli_are_rejected_where_it_matters(class_run):
    # Weighting the every-Nth samples 1/p adds (1/p - 1) * (their total) to the estimate: about
    # (1/p) / N of the truth, i.e. +100% at the default small rate, +2% at the default medium one.
    rates = {SMALL: class_run.case.small_rate, MEDIUM: class_run.case.medium_rate}
    rejected = 0
    for d, cls, what, check in _powered_checks(class_run):
        p = rates[cls]
        if p >= 1.0:
            continue
        freq = class_run.records.frequency_count[d][cls] if what == "count" else class_run.records.frequency_bytes[d][cls]
        bias = (1.0 / p - 1.0) * freq
        wrong = check.with_estimate(check.estimate + bias)
        if bias > 2.1 * check.tolerance:
            assert not wrong.ok, f"frequency-as-Bernoulli estimator passed: {wrong.describe()}"
            rejected += 1
    if class_run.case.small_rate <= 0.001 and "small" in class_run.case.powered:
        assert rejected >= 2  # count and bytes at the default small rate: a +100% bias


@pytest.mark.parametrize("rate,n,detects", [(0.001, 20_000_000, True), (0.001, 2_000_000, False),
                                            (0.05, 400_000, True), (0.2, 100_000, True)])
def test_power_claims_follow_from_the_bound(rate, n, detects):
    # The sizing rule of class_runs.CASES, recomputed from the bound alone (constant-size counts).
    from . import bounds

    strata = [bounds.count_stratum(rate, n)]
    check = bounds.Check("count", n, n, n, bounds.tolerance(strata), bounds.stddev(strata))
    assert check.detects_bias(0.10) is detects
