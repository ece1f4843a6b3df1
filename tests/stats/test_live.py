"""The live estimate: blocks of known sizes allocated at two sites, known subsets freed; the live
estimate of each site (memscope.site.live) and of the domain (memscope.live) must be within the
variance-derived tolerance of the bytes still allocated.

A free of a sampled block removes exactly the weight * size its allocation added, so freed blocks
contribute exactly nothing, and the estimate is a Horvitz-Thompson sum over the kept blocks only:
its variance is sum over kept blocks of s^2 (1 - p) / p.

Each check must also be able to fail. Two kinds of bias are looked for (docs/statistics.md,
"Power of the live-estimate tests"): on the allocation side (every sample weighted 1.05 / p: the
estimate is 1.05 times too large) and on the free side (every free of a sampled block removing
1.05 times what its allocation added: the estimate loses 5% of the freed bytes). The first shows
only where many sampled blocks are still live, the second only where the freed bytes are large
next to the estimate's noise, so the two sites get opposite workloads:

- ``long_lived_here`` keeps 90% of its blocks (the allocation-side check);
- ``short_lived_here`` frees 95% of its blocks, before the other site allocates (the free-side
  check);
- the domain's estimate covers both sites and is checked for both biases.

Each check asserts its own power (at most 1e-3 chance that a 5% bias passes), computed from the
sizes it requested. The power needs ~40,000 sampled blocks live at the moments of reading, more
than the live table holds (it started refusing some, MS_FLAG_NOLIVE, near 13,500 in this
process), so the test reads the estimates in ROUNDS independent windows of at most ~7,000
sampled live blocks each, frees everything after each reading, and sums the rounds: estimates,
exact values and variances add.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from memscope_otel.records import DOMAIN_MASK, DOMAINS, EVENT_MASK, EVENT_SHIFT, EVENTS

from . import bounds, window
from .otel_points import collect, in_memory_provider, site_value
from .tracked import tracking
from .window import MEDIUM, SMALL

SMALL_RATE, MEDIUM_RATE, CRITICAL = 0.2, 0.5, 8192
RATES = {SMALL: SMALL_RATE, MEDIUM: MEDIUM_RATE}
LARGEST = {SMALL: 1023, MEDIUM: CRITICAL - 1}
FREE = EVENTS.index("free")
# Per site: small blocks of 256..1023 B and medium ones of 1..4 KiB. Sizes of similar magnitude
# give the most power per sampled block (the variance grows with sum s^2, the bias with sum s).
N_SMALL, N_MEDIUM = 27_600, 2_400
ROUNDS = 7
FREED = {"long_lived_here": 0.10, "short_lived_here": 0.95}


def long_lived_here(lib, domain, sizes_ptr, n, out_ptr):
    return lib.keep(domain, sizes_ptr, n, out_ptr)  # site: line co_firstlineno + 1


def short_lived_here(lib, domain, sizes_ptr, n, out_ptr):
    return lib.keep(domain, sizes_ptr, n, out_ptr)  # site: line co_firstlineno + 1


class FreeRecords:
    """A record sink keeping the free records of one domain (address, weight * size)."""

    def __init__(self, domain):
        self.domain = domain
        self.chunks = []

    def __call__(self, records, base_us):
        flags = records["flags"].astype(np.int64)
        mine = ((flags & DOMAIN_MASK) == self.domain) & ((flags & EVENT_MASK) >> EVENT_SHIFT == FREE)
        r = records[mine]
        self.chunks.append((r["address"].copy(), r["weight"].astype(np.float64) * r["size"]))

    def weighted_bytes_not_in(self, addresses):
        total = 0.0
        for address, wb in self.chunks:
            total += float(wb[~np.isin(address, addresses)].sum())
        return total


def strata_of(sizes):
    """Strata of known requested sizes, by size class (the rate each was sampled at)."""
    out = []
    for cls, (lo, hi) in ((SMALL, (0, 1023)), (MEDIUM, (1024, CRITICAL - 1))):
        s = sizes[(sizes >= lo) & (sizes <= hi)]
        if len(s):
            out.append(bounds.sizes_stratum(RATES[cls], s))
    return out


class Site:
    """One site's blocks: sizes, which are freed in the window, their addresses, cffi pointers."""

    def __init__(self, fn, rng, ffi):
        self.fn = fn
        self.line = fn.__code__.co_firstlineno + 1
        self.sizes = np.concatenate([rng.integers(256, 1024, N_SMALL, dtype=np.uint64),
                                     rng.integers(1024, 4096, N_MEDIUM, dtype=np.uint64)])
        rng.shuffle(self.sizes)
        # A known subset, chosen independently of the sampling.
        self.freed = rng.random(len(self.sizes)) < FREED[fn.__name__]
        self.mask = self.freed.astype(np.uint8)
        self.blocks = np.zeros(len(self.sizes), dtype=np.uint64)
        self.ptr = {name: ffi.cast(t, ffi.from_buffer(a)) for name, t, a in (
            ("sizes", "uint64_t *", self.sizes), ("blocks", "uintptr_t *", self.blocks),
            ("mask", "uint8_t *", self.mask))}

    @property
    def kept(self):
        return self.sizes[~self.freed]

    @property
    def gone(self):
        return self.sizes[self.freed]


@pytest.mark.parametrize("domain,seed", [("raw", 5), ("obj", 6), ("mem", 7), ("native", 8)])
def test_live_estimate_after_freeing_known_subsets(workload, domain, seed):
    rng = np.random.default_rng(seed)
    # Summed over the rounds (each round's deviation is independent of the others'):
    estimate = {"long_lived_here": 0.0, "short_lived_here": 0.0, "domain": 0.0}
    extra_bytes = extra_d = foreign_freed = 0.0
    extra, extra_strata_d = [], []
    kept = {"long_lived_here": [], "short_lived_here": []}
    gone = {"long_lived_here": [], "short_lived_here": []}
    allocated_short = 0.0

    with in_memory_provider() as (provider, reader):
        with tracking(seed, provider, small_sample_rate=SMALL_RATE, medium_sample_rate=MEDIUM_RATE,
                      critical_size_threshold=CRITICAL, max_sites=1000) as tracker:
            for _ in range(ROUNDS):
                r = run_round(workload, tracker, reader, rng, domain)
                for name in ("long_lived_here", "short_lived_here"):
                    estimate[name] += r.site_estimate[name]
                    kept[name].append(r.sites[name].kept)
                    gone[name].append(r.sites[name].gone)
                estimate["domain"] += r.domain_estimate
                extra_bytes += r.extra_bytes
                extra_d += r.extra_d
                foreign_freed += r.foreign_freed
                extra += r.extra_strata
                extra_strata_d += r.extra_strata_d
                allocated_short += float(r.sites["short_lived_here"].sizes.sum())

    checks, powered = [], []
    for name in ("long_lived_here", "short_lived_here"):
        k, g = np.concatenate(kept[name]), np.concatenate(gone[name])
        strata = strata_of(k) + extra
        exact = float(k.sum())
        line = globals()[name].__code__.co_firstlineno + 1
        check = bounds.Check(f"memscope.site.live {name}:{line} ({domain}), {ROUNDS} rounds", estimate[name],
                             exact, exact + extra_bytes, bounds.tolerance(strata), bounds.stddev(strata))
        checks.append(check)
        if name == "long_lived_here":
            powered.append((check, bounds.allocation_bias_miss(check, strata), None))
        else:
            powered.append((check, None, bounds.free_bias_miss(check, strata, strata_of(g))))
            # Freeing must matter: the allocated total is outside the tolerance.
            assert not check.with_estimate(allocated_short).ok

    # The domain's live estimate (what memscope.live publishes), both sites together.
    k = np.concatenate(kept["long_lived_here"] + kept["short_lived_here"])
    g = np.concatenate(gone["long_lived_here"] + gone["short_lived_here"])
    strata_d = strata_of(k) + extra_strata_d
    exact = float(k.sum())
    check = bounds.Check(f"live estimate ({domain}), {ROUNDS} rounds, {foreign_freed:.0f} B of older blocks freed",
                         estimate["domain"] + foreign_freed, exact, exact + extra_d,
                         bounds.tolerance(strata_d), bounds.stddev(strata_d))
    checks.append(check)
    powered.append((check, bounds.allocation_bias_miss(check, strata_d),
                    bounds.free_bias_miss(check, strata_d, strata_of(g))))

    bounds.assert_all(checks)
    for check, alloc_miss, free_miss in powered:
        bounds.assert_powered(check, alloc_miss, free_miss)


def run_round(workload, tracker, reader, rng, domain):
    """One measurement window: the short-lived site allocates and frees 95% of its blocks, then
    the long-lived site allocates and frees 10%; the estimates are read while the rest is live,
    then everything is freed (outside the window), so the next round starts from nothing.
    Returns the per-site and domain estimate deltas and the bytes and strata of the requests of
    unknown size (the interpreter's own) made in the window."""
    ffi, lib = workload.ffi, workload.lib
    d = DOMAINS.index(domain)
    short, long_ = Site(short_lived_here, rng, ffi), Site(long_lived_here, rng, ffi)
    n = len(short.sizes)  # both sites have as many blocks
    frees = FreeRecords(d)
    # Everything the window needs is made before it: inside, only the helper calls run.
    first = collect(reader)
    before = window.read(tracker)
    tracker.drainer.add_sink(frees)
    failed = short_lived_here(lib, d, short.ptr["sizes"], n, short.ptr["blocks"])
    lib.release_where(d, short.ptr["blocks"], short.ptr["mask"], n, 1)
    failed += long_lived_here(lib, d, long_.ptr["sizes"], n, long_.ptr["blocks"])
    lib.release_where(d, long_.ptr["blocks"], long_.ptr["mask"], n, 1)
    after = window.read(tracker)
    tracker.drainer.remove_sink(frees)
    last = collect(reader)
    for site in (short, long_):
        lib.release_where(d, site.ptr["blocks"], site.ptr["mask"], n, 0)
    assert failed == 0
    delta = after - before
    window.assert_clean(delta)

    workload_sizes = np.concatenate([short.sizes, long_.sizes])

    def workload_bytes(cls):
        s = workload_sizes
        return float(s[(s < 1024) if cls == SMALL else (s >= 1024)].sum())

    site_estimate = {}
    for site in (short, long_):
        v0, _ = site_value(first, "memscope.site.live", site.fn.__name__, site.line, domain)
        v1, found = site_value(last, "memscope.site.live", site.fn.__name__, site.line, domain)
        assert found == 1, site.fn.__name__
        site_estimate[site.fn.__name__] = v1 - v0
    # Other requests in the window (the interpreter's own, a few kB), of the same domain or not,
    # could only add live bytes at a site (their frees cannot remove anything allocated at it);
    # at most all of their bytes, of unknown sizes bounded by their class.
    extra_bytes = float(delta.bytes.sum()) - float(workload_sizes.sum())
    assert extra_bytes >= 0
    extra_strata = [bounds.unknown_sizes_stratum(
        RATES[c], float(delta.bytes[dd][c]) - (workload_bytes(c) if dd == d else 0.0), LARGEST[c])
        for dd in range(len(DOMAINS)) for c in (SMALL, MEDIUM)]
    # The domain's estimate also moves when a block sampled before the window is freed in it (the
    # interpreter frees old blocks at any time): those free records, told apart by address, are
    # added back; other requests of the domain in the window could only add live bytes.
    extra_d = float(delta.bytes[d].sum()) - float(workload_sizes.sum())
    assert extra_d >= 0
    extra_strata_d = [bounds.unknown_sizes_stratum(RATES[c], float(delta.bytes[d][c]) - workload_bytes(c), LARGEST[c])
                      for c in (SMALL, MEDIUM)]
    return SimpleNamespace(
        sites={s.fn.__name__: s for s in (short, long_)}, site_estimate=site_estimate,
        domain_estimate=float(delta.est_live[d]),
        foreign_freed=frees.weighted_bytes_not_in(np.concatenate([short.blocks, long_.blocks])),
        extra_bytes=extra_bytes, extra_d=extra_d, extra_strata=extra_strata, extra_strata_d=extra_strata_d)
