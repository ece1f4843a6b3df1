"""Several threads at once: each has its own countdowns, frequency phase and seed stream, and the
estimates over all of them stay within the variance-derived tolerance of the exact counts."""
import threading

import numpy as np

from . import bounds, window
from .bounds import Stratum
from .tracked import tracking
from .window import MEDIUM, SMALL

SMALL_RATE, MEDIUM_RATE, CRITICAL, THREADS = 0.01, 0.05, 8192, 4
RATES = {SMALL: SMALL_RATE, MEDIUM: MEDIUM_RATE}
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}


def test_estimates_over_four_threads(workload):
    rng = np.random.default_rng(404)
    sizes = {SMALL: rng.integers(16, 1024, 1000, dtype=np.uint64),
             MEDIUM: rng.integers(1024, CRITICAL, 1000, dtype=np.uint64)}
    repeats = {SMALL: 400, MEDIUM: 60}  # per thread
    domains = ["obj", "mem", "raw", "obj"]  # thread k allocates in domains[k]
    errors = []

    def work(domain):
        try:
            for _ in range(4):
                for cls in (SMALL, MEDIUM):
                    workload.churn(domain, sizes[cls], repeats[cls] // 4)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    with tracking(404, small_sample_rate=SMALL_RATE, medium_sample_rate=MEDIUM_RATE,
                  critical_size_threshold=CRITICAL) as tracker:
        before = window.read(tracker)
        threads = [threading.Thread(target=work, args=(d,)) for d in domains]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = window.read(tracker)
    assert not errors, errors
    delta = after - before
    window.assert_clean(delta)

    checks = []
    for d_name in ("obj", "mem", "raw"):
        d = window.domain_index(d_name)
        k = domains.count(d_name)
        for cls in (SMALL, MEDIUM):
            s = sizes[cls].astype(np.float64)
            reps = k * repeats[cls]
            n, total, sum_sq = reps * len(s), reps * s.sum(), reps * (s * s).sum()
            exact_n, exact_b = int(delta.allocations[d][cls]), int(delta.bytes[d][cls])
            extra_n, extra_b = exact_n - n, exact_b - total
            assert extra_n >= 0 and extra_b >= 0
            p = RATES[cls]
            count_strata = [bounds.count_stratum(p, n), bounds.count_stratum(p, extra_n)]
            byte_strata = [Stratum(p, total, sum_sq, s.max()),
                           bounds.unknown_sizes_stratum(p, extra_b, LARGEST[cls])]
            name = f"{THREADS} threads, {d_name} {window.class_name(cls)}"
            checks.append(bounds.Check(f"{name} count", float(delta.est_count[d][cls]), exact_n, exact_n,
                                       bounds.tolerance(count_strata), bounds.stddev(count_strata)))
            checks.append(bounds.Check(f"{name} bytes", float(delta.est_bytes[d][cls]), exact_b, exact_b,
                                       bounds.tolerance(byte_strata), bounds.stddev(byte_strata)))
    bounds.assert_all(checks)
