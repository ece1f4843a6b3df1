"""Per site: the estimates that reach OpenTelemetry (memscope.site.allocated / .allocations,
attributes code.function.name and code.line.number) are within the variance-derived tolerance of
what three functions are known to have requested at known lines.

Each site function calls the C helper directly, so every block it requests is attributed to that
one line (the innermost Python frame). The exact reference is the workload itself; whatever else
the interpreter requested in the window (bounded by the exact counters) could only add to a site,
so the estimate must lie within tolerance of [workload, workload + everything else].
"""
import numpy as np
import pytest

from memscope_otel.records import DOMAINS

from . import bounds, window
from .bounds import Stratum
from .otel_points import collect, in_memory_provider, site_value
from .tracked import tracking
from .window import LARGE, MEDIUM, SMALL

SMALL_RATE, MEDIUM_RATE, CRITICAL = 0.01, 0.05, 8192
RATES = {SMALL: SMALL_RATE, MEDIUM: MEDIUM_RATE, LARGE: 1.0}
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1, LARGE: 1 << 40}


def site_small(lib, ptr, n, repeat):
    return lib.churn(0, ptr, n, repeat)  # the obj site: line co_firstlineno + 1


def site_medium(lib, ptr, n, repeat):
    return lib.churn(1, ptr, n, repeat)  # the mem site


def site_mixed(lib, ptr, n, repeat):
    return lib.churn(2, ptr, n, repeat)  # the raw site: small and medium sizes


SITES = [  # function, domain, sizes drawn from, requests in all, chunks
    (site_small, "obj", [(16, 1023)], 1_200_000, 4),
    (site_medium, "mem", [(1024, CRITICAL - 1)], 200_000, 4),
    (site_mixed, "raw", [(16, 1023), (1024, CRITICAL - 1)], 400_000, 4),
]


def _class_of(size):
    return SMALL if size < 1024 else MEDIUM if size < CRITICAL else LARGE


@pytest.mark.parametrize("seed", [101, 202])
def test_site_estimates_within_tolerance(workload, seed):
    rng = np.random.default_rng(seed)
    ffi, lib = workload.ffi, workload.lib
    plans = []
    for fn, domain, ranges, n, chunks in SITES:
        per_range = 1000
        sizes = np.concatenate([rng.integers(lo, hi + 1, per_range, dtype=np.uint64) for lo, hi in ranges])
        repeat = n // len(sizes) // chunks
        plans.append((fn, domain, sizes, repeat, chunks))

    with in_memory_provider() as (provider, reader):
        with tracking(seed, provider, small_sample_rate=SMALL_RATE, medium_sample_rate=MEDIUM_RATE,
                      critical_size_threshold=CRITICAL, max_sites=1000) as tracker:
            first = collect(reader)
            before = window.read(tracker)
            for fn, domain, sizes, repeat, chunks in plans:
                ptr = ffi.cast("uint64_t *", ffi.from_buffer(sizes))
                for _ in range(chunks):
                    assert fn(lib, ptr, len(sizes), repeat) == 0
                    tracker.drainer.drain()
            after = window.read(tracker)
            last = collect(reader)
    delta = after - before
    window.assert_clean(delta)

    # What the workload requested, by (domain, class): (n, bytes, sum of squares, largest).
    known = {}
    for fn, domain, sizes, repeat, chunks in plans:
        d = DOMAINS.index(domain)
        for s in sizes.tolist():
            k = known.setdefault((d, _class_of(s)), [0, 0.0, 0.0, 0.0])
            reps = repeat * chunks
            k[0] += reps
            k[1] += reps * s
            k[2] += reps * float(s) * s
            k[3] = max(k[3], s)
    # Everything else in the window: the exact counters minus the workload.
    extra_count, extra_bytes, extra_strata_n, extra_strata_b = 0, 0, [], []
    for d in range(len(DOMAINS)):
        for c in (SMALL, MEDIUM, LARGE):
            n_w, b_w = known.get((d, c), [0, 0.0])[:2]
            en, eb = int(delta.allocations[d][c]) - n_w, int(delta.bytes[d][c]) - b_w
            assert en >= 0 and eb >= 0, (d, c, en, eb)
            extra_count += en
            extra_bytes += eb
            extra_strata_n.append(bounds.count_stratum(RATES[c], en))
            extra_strata_b.append(bounds.unknown_sizes_stratum(RATES[c], eb, LARGEST[c]))

    checks = []
    for fn, domain, sizes, repeat, chunks in plans:
        d = DOMAINS.index(domain)
        line = fn.__code__.co_firstlineno + 1
        strata_n, strata_b = list(extra_strata_n), list(extra_strata_b)
        n_w = b_w = 0.0
        for c in (SMALL, MEDIUM):
            if (d, c) in known:
                n, b, sq, largest = known[d, c]
                n_w += n
                b_w += b
                strata_n.append(bounds.count_stratum(RATES[c], n))
                strata_b.append(Stratum(RATES[c], b, sq, largest))
        for metric, w, strata, extra in (("memscope.site.allocations", n_w, strata_n, extra_count),
                                         ("memscope.site.allocated", b_w, strata_b, extra_bytes)):
            v0, _ = site_value(first, metric, fn.__qualname__, line, domain)
            v1, found = site_value(last, metric, fn.__qualname__, line, domain)
            assert found == 1, f"{metric}: no single series for {fn.__qualname__}:{line} ({domain})"
            checks.append(bounds.Check(f"{metric} {fn.__qualname__}:{line}", v1 - v0, w, w + extra,
                                       bounds.tolerance(strata), bounds.stddev(strata)))
    bounds.assert_all(checks)
    # The window held (almost) nothing but the workload, so the interval is essentially a point.
    assert extra_count <= 1e-3 * sum(k[0] for k in known.values())


def test_site_check_rejects_a_misattributed_site(workload):
    # The same machinery with the sites swapped must fail: the per-site check can tell sites apart.
    sizes = np.full(1000, 512, dtype=np.uint64)
    ptr = workload.ffi.cast("uint64_t *", workload.ffi.from_buffer(sizes))
    with in_memory_provider() as (provider, reader):
        with tracking(7, provider, small_sample_rate=0.05, max_sites=1000):
            first = collect(reader)
            site_small(workload.lib, ptr, len(sizes), 200)
            site_mixed(workload.lib, ptr, len(sizes), 20)
            last = collect(reader)
    line_small = site_small.__code__.co_firstlineno + 1
    line_mixed = site_mixed.__code__.co_firstlineno + 1
    got_small = site_value(last, "memscope.site.allocations", "site_small", line_small, "obj")[0] \
        - site_value(first, "memscope.site.allocations", "site_small", line_small, "obj")[0]
    got_mixed = site_value(last, "memscope.site.allocations", "site_mixed", line_mixed, "raw")[0] \
        - site_value(first, "memscope.site.allocations", "site_mixed", line_mixed, "raw")[0]
    n_small, n_mixed = 200_000, 20_000
    tol_small = bounds.tolerance([bounds.count_stratum(0.05, n_small)])
    tol_mixed = bounds.tolerance([bounds.count_stratum(0.05, n_mixed)])
    assert abs(got_small - n_small) <= tol_small and abs(got_mixed - n_mixed) <= tol_mixed
    assert abs(got_mixed - n_small) > tol_small and abs(got_small - n_mixed) > tol_mixed
