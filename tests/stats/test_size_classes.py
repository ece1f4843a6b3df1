"""Per size class and per domain: the weighted estimates of allocation count and bytes are within
the variance-derived tolerance of the exact counts of the same run (several rates and seeds)."""
import numpy as np

from memscope_otel.records import DOMAINS

from . import bounds
from .window import LARGE, MEDIUM, SMALL


def test_small_and_medium_estimates_within_tolerance(class_run):
    checks = [class_run.checks[cls, what] for cls in (SMALL, MEDIUM) for what in ("count", "bytes")]
    bounds.assert_all(checks)
    if class_run.case.small_rate == 1.0 and class_run.case.medium_rate == 1.0:
        # Everything sampled with weight 1: no variance, the tolerance is zero, equality is required.
        assert all(c.tolerance == 0.0 and c.estimate == c.low for c in checks)


def test_large_requests_are_counted_exactly(class_run):
    # Large requests are always sampled with weight 1: the estimate is the exact count, no noise.
    for what in ("count", "bytes"):
        check = class_run.checks[LARGE, what]
        assert check.tolerance == 0.0
        assert check.estimate == check.low, check.describe()


def test_summary_is_the_weighted_sum_of_the_records(class_run):
    # The reducer's sums equal the same sums taken in numpy over the drained records.
    d = DOMAINS.index(class_run.case.domain)
    np.testing.assert_allclose(class_run.delta.est_bytes[d], class_run.records.weighted_bytes[d], rtol=1e-12)
    np.testing.assert_allclose(class_run.delta.est_count[d], class_run.records.weighted_count[d], rtol=1e-12)
