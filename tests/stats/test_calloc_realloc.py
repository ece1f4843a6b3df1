"""calloc and realloc go through the same sampling as malloc: per size class, the estimates of
calloc'ed and realloc'ed requests are within the variance-derived tolerance of the exact counts
(a realloc is one allocation request of its new size, DESIGN.md "Counting semantics"), and a
realloc of a sampled block moves its live weight from the old site to the new one."""
import numpy as np
import pytest

from memscope_otel.records import DOMAINS

from . import bounds, window
from .bounds import Stratum
from .otel_points import collect, in_memory_provider, site_value
from .tracked import tracking
from .window import MEDIUM, SMALL

SMALL_RATE, MEDIUM_RATE, CRITICAL = 0.01, 0.2, 8192
RATES = {SMALL: SMALL_RATE, MEDIUM: MEDIUM_RATE}
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}


def _checks(name, delta, d, known):
    """Count and bytes checks per class; known: cls -> list of (sizes array, repeats)."""
    checks = []
    for cls, parts in known.items():
        n = sum(len(s) * r for s, r in parts)
        total = sum(float(s.astype(np.float64).sum()) * r for s, r in parts)
        sum_sq = sum(float((s.astype(np.float64) ** 2).sum()) * r for s, r in parts)
        largest = max(float(s.max()) for s, _ in parts)
        exact_n, exact_b = int(delta.allocations[d][cls]), int(delta.bytes[d][cls])
        extra_n, extra_b = exact_n - n, exact_b - total
        assert extra_n >= 0 and extra_b >= 0, (cls, extra_n, extra_b)
        p = RATES[cls]
        cs = [bounds.count_stratum(p, n), bounds.count_stratum(p, extra_n)]
        bs = [Stratum(p, total, sum_sq, largest), bounds.unknown_sizes_stratum(p, extra_b, LARGEST[cls])]
        label = f"{name} {window.class_name(cls)}"
        checks.append(bounds.Check(f"{label} count", float(delta.est_count[d][cls]), exact_n, exact_n,
                                   bounds.tolerance(cs), bounds.stddev(cs)))
        checks.append(bounds.Check(f"{label} bytes", float(delta.est_bytes[d][cls]), exact_b, exact_b,
                                   bounds.tolerance(bs), bounds.stddev(bs)))
    return checks


@pytest.mark.parametrize("domain,seed", [("obj", 61), ("mem", 62), ("raw", 63)])
def test_calloc_and_realloc_estimates(workload, domain, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(16, 1024, 1000, dtype=np.uint64)
    medium = rng.integers(1024, CRITICAL, 1000, dtype=np.uint64)
    d = DOMAINS.index(domain)
    with tracking(seed, small_sample_rate=SMALL_RATE, medium_sample_rate=MEDIUM_RATE,
                  critical_size_threshold=CRITICAL) as tracker:
        before = window.read(tracker)
        for _ in range(5):
            workload.churn_calloc(domain, small, 100)
            workload.churn_calloc(domain, medium, 10)
            tracker.drainer.drain()
        mid = window.read(tracker)
        for _ in range(5):
            workload.churn_realloc(domain, small, medium, 40)  # small request, then grown to medium
            tracker.drainer.drain()
        after = window.read(tracker)
    calloc_delta, realloc_delta = mid - before, after - mid
    window.assert_clean(calloc_delta)
    window.assert_clean(realloc_delta)
    checks = _checks(f"{domain} calloc", calloc_delta, d, {SMALL: [(small, 500)], MEDIUM: [(medium, 50)]})
    checks += _checks(f"{domain} malloc+realloc", realloc_delta, d, {SMALL: [(small, 200)], MEDIUM: [(medium, 200)]})
    bounds.assert_all(checks)
    # Every realloc of a non-NULL block is a deallocation, and so is the final free.
    assert realloc_delta.deallocations[d] >= 2 * 200 * len(small)


def keep_at_a(lib, domain, sizes_ptr, n, blocks_ptr):
    return lib.keep(domain, sizes_ptr, n, blocks_ptr)  # site A


def regrow_at_b(lib, domain, blocks_ptr, sizes_ptr, mask_ptr, n):
    return lib.regrow_where(domain, blocks_ptr, sizes_ptr, mask_ptr, n, 1)  # site B


@pytest.mark.parametrize("domain,seed", [("raw", 71), ("obj", 72)])
def test_realloc_moves_live_bytes_between_sites(workload, domain, seed):
    rng = np.random.default_rng(seed)
    n = 60_000
    sizes = rng.integers(16, 1024, n, dtype=np.uint64)
    new_sizes = rng.integers(1024, 4096, n, dtype=np.uint64)
    fate = rng.choice(np.array([0, 1, 2], dtype=np.uint8), size=n, p=[0.5, 0.25, 0.25])  # kept, regrown, freed
    regrown = (fate == 1).astype(np.uint8)
    blocks = np.zeros(n, dtype=np.uint64)
    ffi, lib = workload.ffi, workload.lib
    d = DOMAINS.index(domain)
    ptr = {name: ffi.cast(t, ffi.from_buffer(a)) for name, t, a in (
        ("sizes", "uint64_t *", sizes), ("new", "uint64_t *", new_sizes), ("blocks", "uintptr_t *", blocks),
        ("regrown", "uint8_t *", regrown), ("fate", "uint8_t *", fate))}
    line_a = keep_at_a.__code__.co_firstlineno + 1
    line_b = regrow_at_b.__code__.co_firstlineno + 1
    with in_memory_provider() as (provider, reader):
        with tracking(seed, provider, small_sample_rate=0.05, medium_sample_rate=0.2,
                      critical_size_threshold=CRITICAL, max_sites=1000) as tracker:
            first = collect(reader)
            before = window.read(tracker)
            failed = keep_at_a(lib, d, ptr["sizes"], n, ptr["blocks"])
            failed += regrow_at_b(lib, d, ptr["blocks"], ptr["new"], ptr["regrown"], n)
            lib.release_where(d, ptr["blocks"], ptr["fate"], n, 2)
            after = window.read(tracker)
            last = collect(reader)
            lib.release_where(d, ptr["blocks"], ptr["fate"], n, 0)
            lib.release_where(d, ptr["blocks"], ptr["fate"], n, 1)
    assert failed == 0
    delta = after - before
    window.assert_clean(delta)
    extra = float(delta.bytes[:3].sum()) - float(sizes.sum()) - float(new_sizes[fate == 1].sum())
    assert extra >= 0
    extra_strata = [bounds.unknown_sizes_stratum(r, extra, CRITICAL - 1) for r in (0.05,)]
    checks = []
    for fn, line, kept, rate in ((keep_at_a, line_a, sizes[fate == 0], 0.05),
                                 (regrow_at_b, line_b, new_sizes[fate == 1], 0.2)):
        s = kept.astype(np.float64)
        strata = [Stratum(rate, float(s.sum()), float((s * s).sum()), float(s.max()))] + extra_strata
        v0, _ = site_value(first, "memscope.site.live", fn.__name__, line, domain)
        v1, found = site_value(last, "memscope.site.live", fn.__name__, line, domain)
        assert found == 1, (fn.__name__, line)
        checks.append(bounds.Check(f"memscope.site.live {fn.__name__}:{line} ({domain})", v1 - v0,
                                   float(s.sum()), float(s.sum()) + extra,
                                   bounds.tolerance(strata), bounds.stddev(strata)))
    bounds.assert_all(checks)
