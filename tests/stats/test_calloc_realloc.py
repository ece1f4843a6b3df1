"""calloc and realloc go through the same sampling as malloc: per size class, the estimates of
calloc'ed and realloc'ed requests are within the variance-derived tolerance of the exact counts
(a realloc is one allocation request of its new size, DESIGN.md "Counting semantics"), and a
realloc of a sampled block moves its live weight from the old site to the new one.

Every check is sized to reveal a 5% bias (docs/statistics.md, "Power of the live-estimate
tests"): the count and bytes estimates one on the allocation side (weights 1.05 / p; frees do not
enter them), the live estimates of the realloc test one on either side."""
import numpy as np
import pytest

from memscope_otel.records import DOMAINS

from . import bounds, window
from .bounds import Stratum
from .otel_points import collect, in_memory_provider, site_value
from .tracked import tracking
from .window import MEDIUM, SMALL

# Rates and repeats chosen for the power: at least ~4.5e4 (1 - p) sampled requests per class.
SMALL_RATE, MEDIUM_RATE, CRITICAL = 0.1, 0.5, 8192
RATES = {SMALL: SMALL_RATE, MEDIUM: MEDIUM_RATE}
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}


def _checks(name, delta, d, known):
    """(check, strata) of count and bytes per class; known: cls -> list of (sizes array, repeats)."""
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
        checks.append((bounds.Check(f"{label} count", float(delta.est_count[d][cls]), exact_n, exact_n,
                                    bounds.tolerance(cs), bounds.stddev(cs)), cs))
        checks.append((bounds.Check(f"{label} bytes", float(delta.est_bytes[d][cls]), exact_b, exact_b,
                                    bounds.tolerance(bs), bounds.stddev(bs)), bs))
    return checks


@pytest.mark.parametrize("domain,seed", [("obj", 61), ("mem", 62), ("raw", 63), ("native", 64)])
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
            workload.churn_calloc(domain, medium, 20)
            tracker.drainer.drain()
        mid = window.read(tracker)
        for _ in range(5):
            workload.churn_realloc(domain, small, medium, 100)  # small request, then grown to medium
            tracker.drainer.drain()
        after = window.read(tracker)
    calloc_delta, realloc_delta = mid - before, after - mid
    window.assert_clean(calloc_delta)
    window.assert_clean(realloc_delta)
    checks = _checks(f"{domain} calloc", calloc_delta, d, {SMALL: [(small, 500)], MEDIUM: [(medium, 100)]})
    checks += _checks(f"{domain} malloc+realloc", realloc_delta, d, {SMALL: [(small, 500)], MEDIUM: [(medium, 500)]})
    bounds.assert_all(check for check, _ in checks)
    for check, strata in checks:
        bounds.assert_powered(check, bounds.allocation_bias_miss(check, strata))
    # Every realloc of a non-NULL block is a deallocation, and so is the final free.
    assert realloc_delta.deallocations[d] >= 2 * 500 * len(small)


def keep_at_a(lib, domain, sizes_ptr, n, blocks_ptr):
    return lib.keep(domain, sizes_ptr, n, blocks_ptr)  # site A


def regrow_at_b(lib, domain, blocks_ptr, sizes_ptr, mask_ptr, n):
    return lib.regrow_where(domain, blocks_ptr, sizes_ptr, mask_ptr, n, 1)  # site B


# The realloc live test (docs/statistics.md, "Power of the live-estimate tests"): site A's
# estimate must reveal a 5% bias on either side (half its blocks stay, half leave it by realloc or
# free), site B's a 5% bias on the allocation side. Each round holds at most ~7,000 sampled blocks
# live (the live table's room, see test_live.py); the rounds add up to the sampled blocks the
# power needs.
MOVE_SMALL_RATE, MOVE_MEDIUM_RATE = 0.2, 0.5
MOVE_RATES = {SMALL: MOVE_SMALL_RATE, MEDIUM: MOVE_MEDIUM_RATE}
MOVE_N, MOVE_ROUNDS = 35_000, 10
KEPT, REGROWN, FREED = 0, 1, 2


def _move_round(workload, tracker, reader, rng, domain):
    """One window: n small blocks at A; 30% regrown (realloc) to medium sizes at B, 20% freed,
    50% kept. Returns the per-site estimate deltas, the blocks' fates and sizes, and the bytes of
    the other requests in the window. Everything is freed after the window."""
    n = MOVE_N
    sizes = rng.integers(256, 1024, n, dtype=np.uint64)
    new_sizes = rng.integers(1024, 2048, n, dtype=np.uint64)
    fate = rng.choice(np.array([KEPT, REGROWN, FREED], dtype=np.uint8), size=n, p=[0.5, 0.3, 0.2])
    regrown = (fate == REGROWN).astype(np.uint8)
    blocks = np.zeros(n, dtype=np.uint64)
    ffi, lib = workload.ffi, workload.lib
    d = DOMAINS.index(domain)
    ptr = {name: ffi.cast(t, ffi.from_buffer(a)) for name, t, a in (
        ("sizes", "uint64_t *", sizes), ("new", "uint64_t *", new_sizes), ("blocks", "uintptr_t *", blocks),
        ("regrown", "uint8_t *", regrown), ("fate", "uint8_t *", fate))}
    first = collect(reader)
    before = window.read(tracker)
    failed = keep_at_a(lib, d, ptr["sizes"], n, ptr["blocks"])
    failed += regrow_at_b(lib, d, ptr["blocks"], ptr["new"], ptr["regrown"], n)
    lib.release_where(d, ptr["blocks"], ptr["fate"], n, FREED)
    after = window.read(tracker)
    last = collect(reader)
    lib.release_where(d, ptr["blocks"], ptr["fate"], n, KEPT)
    lib.release_where(d, ptr["blocks"], ptr["fate"], n, REGROWN)
    assert failed == 0
    delta = after - before
    window.assert_clean(delta)
    extra = float(delta.bytes.sum()) - float(sizes.sum()) - float(new_sizes[fate == REGROWN].sum())
    assert extra >= 0
    # Requests of unknown size (the interpreter's own, a few kB), per domain and class: their
    # bytes from the exact counters, each at most the largest size of its class.
    mine = {SMALL: float(sizes.sum()), MEDIUM: float(new_sizes[fate == REGROWN].sum())}
    extra_strata = [bounds.unknown_sizes_stratum(
        MOVE_RATES[c], float(delta.bytes[dd][c]) - (mine[c] if dd == d else 0.0), LARGEST[c])
        for dd in range(len(DOMAINS)) for c in (SMALL, MEDIUM)]
    estimates = {}
    for fn in (keep_at_a, regrow_at_b):
        line = fn.__code__.co_firstlineno + 1
        v0, _ = site_value(first, "memscope.site.live", fn.__name__, line, domain)
        v1, found = site_value(last, "memscope.site.live", fn.__name__, line, domain)
        assert found == 1, (fn.__name__, line)
        estimates[fn.__name__] = v1 - v0
    return estimates, sizes, new_sizes, fate, extra, extra_strata


@pytest.mark.parametrize("domain,seed", [("raw", 71), ("obj", 72), ("native", 73)])
def test_realloc_moves_live_bytes_between_sites(workload, domain, seed):
    rng = np.random.default_rng(seed)
    estimate = {"keep_at_a": 0.0, "regrow_at_b": 0.0}
    a_kept, a_gone, b_kept = [], [], []
    extra = 0.0
    extra_strata = []
    with in_memory_provider() as (provider, reader):
        with tracking(seed, provider, small_sample_rate=MOVE_SMALL_RATE, medium_sample_rate=MOVE_MEDIUM_RATE,
                      critical_size_threshold=CRITICAL, max_sites=1000) as tracker:
            for _ in range(MOVE_ROUNDS):
                est, sizes, new_sizes, fate, round_extra, round_strata = _move_round(
                    workload, tracker, reader, rng, domain)
                for name, value in est.items():
                    estimate[name] += value
                a_kept.append(sizes[fate == KEPT])
                a_gone.append(sizes[fate != KEPT])  # left site A: by realloc (a free there) or free
                b_kept.append(new_sizes[fate == REGROWN])
                extra += round_extra
                extra_strata += round_strata

    def strata_of(sizes, rate):
        return [bounds.sizes_stratum(rate, np.concatenate(sizes))]

    checks, powered = [], []
    for fn, kept, gone, rate in ((keep_at_a, a_kept, a_gone, MOVE_SMALL_RATE),
                                 (regrow_at_b, b_kept, None, MOVE_MEDIUM_RATE)):
        exact = float(np.concatenate(kept).sum())
        strata = strata_of(kept, rate) + extra_strata
        line = fn.__code__.co_firstlineno + 1
        check = bounds.Check(f"memscope.site.live {fn.__name__}:{line} ({domain}), {MOVE_ROUNDS} rounds",
                             estimate[fn.__name__], exact, exact + extra,
                             bounds.tolerance(strata), bounds.stddev(strata))
        checks.append(check)
        free_miss = bounds.free_bias_miss(check, strata, strata_of(gone, rate)) if gone else None
        powered.append((check, bounds.allocation_bias_miss(check, strata), free_miss))
    bounds.assert_all(checks)
    for check, alloc_miss, free_miss in powered:
        bounds.assert_powered(check, alloc_miss, free_miss)
