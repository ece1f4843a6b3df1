"""The recognizer's record sink and window (csrc/window.c) against straightforward
record-by-record references.

The window matches frees to allocations in C, through a hash table of the allocations whose free
it awaits; a plain dict walk over the records in time order is the reference it must equal, on
random batches that repeat addresses, tie on microseconds, free blocks allocated in earlier
batches and free blocks never allocated.
"""
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from memscope_otel import sampler
from memscope_otel.optimizer import Window, WorkloadRecognizer
from memscope_otel.optimizer import recognizer as recognizer_module
from memscope_otel.records import EVENT_SHIFT, RECORD_DTYPE

LIB = sampler._lib()[1]


def followed(addresses, level):
    """Which of ``addresses`` (a uint64 array) are followed at ``level``: a fixed pseudo-random 1
    in 2**level of all addresses (those followed at a level are followed at every lower one). The
    reference of csrc/window.c's followed: the address's 16-byte granule times 2^64 / golden
    ratio, below 2^(64 - level)."""
    if level == 0:
        return np.ones(len(addresses), dtype=bool)
    mixed = addresses >> np.uint64(4)
    np.multiply(mixed, np.uint64(0x9E3779B97F4A7C15), out=mixed)  # wraps mod 2^64, as meant
    return mixed < np.uint64(1 << (64 - level))


def follow_level(n):
    """The level at which a window follows a read of ``n`` records: the lowest that keeps about
    MS_WINDOW_FOLLOWED_PER_BATCH of them (the reference for window.c's level_for)."""
    return ((n - 1) // LIB.MS_WINDOW_FOLLOWED_PER_BATCH).bit_length() if n > 0 else 0

FREE, ALLOC, REALLOC = 1, 0, 2


def reference_match(batches, capacity=None):
    """Per batch, the sorted lifetimes; and the final {address: alloc time}. Records are walked
    one by one in (time, batch position) order, the way the sink defines the order of events."""
    pending, per_batch = {}, []
    for addresses, times, frees in batches:
        lifetimes = []
        for i in sorted(range(len(addresses)), key=lambda i: (int(times[i]), i)):
            address, t = int(addresses[i]), int(times[i])
            if frees[i]:
                born = pending.pop(address, None)
                if born is not None:
                    lifetimes.append(t - born)
            else:
                pending[address] = t
        per_batch.append(sorted(lifetimes))
    return per_batch, pending


def read_lifetimes(window, addresses, times, frees):
    """Reads one batch (times absolute, base 0) into ``window``; returns the lifetimes it added."""
    before = window.n_lifetimes
    assert window.read(records_from(addresses, times, frees, 0, np.random.default_rng(0)), 0)
    return window.lifetimes()[before:]


def random_batches(rng, n_batches, size, pool, span_us=2000, in_time_order=False):
    """Batches over a small pool of addresses (so they repeat within and across batches), with
    times drawn from a short span (many ties) and shuffled (rings are concatenated, not merged),
    or in time order (one ring's batch: the window then skips its sort)."""
    batches = []
    for b in range(n_batches):
        addresses = (rng.integers(0, pool, size).astype(np.uint64) * np.uint64(16)) + np.uint64(0x7F00_0000_0000)
        times = np.int64(b * span_us) + rng.integers(0, span_us, size).astype(np.int64)
        if in_time_order:
            times.sort()
        frees = rng.random(size) < 0.5
        batches.append((addresses, times, frees))
    return batches


@pytest.mark.parametrize("in_time_order", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_window_lifetimes_equal_a_record_by_record_walk(seed, in_time_order):
    rng = np.random.default_rng(seed)
    batches = random_batches(rng, n_batches=8, size=int(rng.integers(1, 400)), pool=int(rng.integers(2, 300)),
                             span_us=int(rng.integers(1, 3000)), in_time_order=in_time_order)
    # Frees of addresses never allocated anywhere: they must give no lifetime.
    strays = np.uint64(0x10_0000) + np.arange(5, dtype=np.uint64) * np.uint64(16)
    a, t, f = batches[3]
    batches[3] = (np.concatenate((a, strays)), np.concatenate((t, t[:5] if len(t) >= 5 else np.full(5, t[0]))),
                  np.concatenate((f, np.ones(5, bool))))
    expected, expected_pending = reference_match(batches)
    window = Window(0.0)
    carried_over = 0
    for (addresses, times, frees), want in zip(batches, expected):
        before = window.pending()
        carried_over += sum(1 for x, fr in zip(addresses.tolist(), frees) if fr and x in before)
        assert sorted(read_lifetimes(window, addresses, times, frees).tolist()) == want
        assert int(window.stats().n_pending) == len(window.pending())
    assert window.pending() == expected_pending
    assert carried_over > 0  # the batches did free blocks allocated in earlier batches


def test_many_batches_over_a_large_pool_grow_and_rebuild_the_table():
    rng = np.random.default_rng(11)
    batches = random_batches(rng, n_batches=12, size=6000, pool=40_000, span_us=50)
    expected, expected_pending = reference_match(batches)
    window = Window(0.0)
    for (addresses, times, frees), want in zip(batches, expected):
        assert sorted(read_lifetimes(window, addresses, times, frees).tolist()) == want
    assert window.pending() == expected_pending
    assert window.nbytes()["pending"] > LIB.MS_WINDOW_PENDING_MIN_SLOTS * 16  # it grew


def test_the_awaited_table_stays_exact_through_long_probe_chains():
    """Allocations and frees over a pool that keeps the table near half full, with addresses that
    share their home slots' neighbourhoods: every removal shifts its chain back, and every lookup
    after it must still find what a dict holds."""
    rng = np.random.default_rng(5)
    pool = LIB.MS_WINDOW_PENDING_MIN_SLOTS // 2 - 1  # never grows: the table stays at its fullest
    batches = random_batches(rng, n_batches=30, size=3000, pool=pool, span_us=400)
    expected, expected_pending = reference_match(batches)
    window = Window(0.0)
    for (addresses, times, frees), want in zip(batches, expected):
        assert sorted(read_lifetimes(window, addresses, times, frees).tolist()) == want
    assert window.pending() == expected_pending
    assert window.nbytes()["pending"] == LIB.MS_WINDOW_PENDING_MIN_SLOTS * 16
    assert len(expected_pending) > pool // 3


def test_same_microsecond_events_keep_batch_order():
    # free(p); p = malloc() in one microsecond (pymalloc hands the block straight back): the
    # block allocated first lives 3 µs; the new one is still pending.
    window = Window(0.0)
    lifetimes = read_lifetimes(window, np.array([16, 16, 16], np.uint64), np.array([7, 10, 10]),
                               np.array([False, True, False]))
    assert lifetimes.tolist() == [3]
    assert window.pending() == {16: 10}
    # Realloc records allocate too (records_from makes some of them reallocs); a second free of
    # a block gives nothing.
    lifetimes = read_lifetimes(window, np.array([16, 16, 16], np.uint64), np.array([12, 15, 16]),
                               np.array([True, True, False]))
    assert lifetimes.tolist() == [2] and window.pending() == {16: 16}


def test_pending_allocations_stay_within_capacity():
    rng = np.random.default_rng(7)
    window = Window(0.0, max_pending=50)
    unbounded = Window(0.0, max_pending=10**9)
    for addresses, times, frees in random_batches(rng, n_batches=6, size=300, pool=400):
        old = window.pending()
        touched = set(addresses.tolist())
        read_lifetimes(window, addresses, times, frees)
        read_lifetimes(unbounded, addresses, times, frees)
        assert len(window.pending()) <= 50
        now = window.pending()
        # Allocations already pending and untouched by the batch are never pushed out by new ones.
        assert {a: t for a, t in old.items() if a not in touched}.items() <= now.items()
        # Whatever is pending is a block whose last event was an allocation at that time.
        last_event = {}
        for i in sorted(range(len(addresses)), key=lambda i: (int(times[i]), i)):
            last_event[int(addresses[i])] = (bool(frees[i]), int(times[i]))
        for address, t in now.items():
            if address in last_event:
                assert last_event[address] == (False, t)
    assert len(unbounded.pending()) > 50  # the cap did bind


def test_times_and_lifetimes_stop_at_their_bounds():
    """A window times records until it holds max_times (the batch that crosses it whole) and keeps
    the lifetimes of the earliest frees up to max_lifetimes."""
    window = Window(0.0, max_times=250, max_lifetimes=40)
    addresses = np.arange(1, 101, dtype=np.uint64) * np.uint64(16)
    for b in range(4):  # each batch: 100 allocations at 10 µs steps, then their frees in reverse
        times = b * 10_000 + np.arange(200)
        batch = np.concatenate((addresses, addresses[::-1]))
        frees = np.arange(200) >= 100
        read_lifetimes(window, batch, times, frees)
    assert window.n_times == 400  # 200 records a batch: the second crossed 250 and was kept whole
    lifetimes = window.lifetimes()
    assert len(lifetimes) == 40
    # The first batch's 40 earliest frees: addresses 100, 99, ... freed at 100, 101, ...
    assert lifetimes.tolist() == [(100 + k) - (99 - k) for k in range(40)]


@pytest.mark.parametrize("level", [0, 1, 3, 7])
def test_a_read_at_a_level_is_the_read_of_the_followed_records_weights_scaled(level):
    """ms_window_read at ``level`` reads the records of the addresses features.followed names, as
    if given only those with their weights times 2**level."""
    rng = np.random.default_rng(11)
    batches = random_batches(rng, n_batches=3, size=8000, pool=20000, span_us=3000)
    at_level, given = Window(0.0), Window(0.0)
    for b, (addresses, times, frees) in enumerate(batches):
        records = records_from(addresses, times, frees, b * 3000, rng)
        assert at_level.read(records, b * 3000, level)
        kept = records[followed(addresses, level)].copy()
        kept["weight"] *= np.float32(2**level)
        assert given.read(kept, b * 3000)
    assert 0 < at_level.n_times == given.n_times
    assert sorted(at_level.times().tolist()) == sorted(given.times().tolist())
    assert at_level.sites()[0].tolist() == given.sites()[0].tolist()
    assert at_level.sites()[1].tolist() == given.sites()[1].tolist()  # (powers of two: exact)
    assert sorted(at_level.lifetimes().tolist()) == sorted(given.lifetimes().tolist())
    assert at_level.n_lifetimes > 0 and at_level.allocs_followed == given.allocs_followed
    assert at_level.pending() == given.pending()
    assert (at_level.threads() == given.threads()).all()
    if level:
        assert at_level.n_times < sum(len(a) for a, _, _ in batches)


def test_the_first_records_of_a_window_are_all_read():
    """However fast they come: a short window keeps enough records to be classified."""
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.reset(counters=object())
    recognizer.read_budget_per_s = 100.0
    rng = np.random.default_rng(3)
    first = recognizer_module._READ_ALL_FIRST
    records = records_from(np.arange(first, dtype=np.uint64) * 16, np.arange(first), np.zeros(first, bool), 0, rng)
    recognizer.sink(records, 0)
    assert recognizer.window.stats().reading_level == 0 and recognizer.window.n_times == first
    recognizer.sink(records[:100], 0)  # one more batch: now past the budget
    assert recognizer.window.stats().reading_level > 0


def test_past_its_budget_the_sink_reads_a_subsample_of_addresses_unbiased(monkeypatch):
    """Offered more than read_budget_per_s (over the records' own span of time), the window reads
    the records of 1 in 2**level addresses (the level rising until the stream fits, never
    falling within a window): it is then exactly the window of those records with their weights
    scaled, so site sums stay unbiased (checked against the full sums), and lifetimes are
    exactly those of the followed addresses."""
    monkeypatch.setattr(recognizer_module, "_READ_ALL_FIRST", 0)  # (the budget from the first record on)
    rng = np.random.default_rng(5)
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.reset(counters=object())
    recognizer.read_budget_per_s = 4500.0
    n_batches, size = 8, 16000
    # Each address is allocated once and freed once, in the same or a later batch.
    addresses = (np.arange(n_batches * size // 2, dtype=np.uint64) * np.uint64(64)) + np.uint64(0x7F00_0000_0000)
    events = np.concatenate([np.stack([addresses, np.zeros_like(addresses)], 1),
                             np.stack([addresses, np.ones_like(addresses)], 1)])
    order = np.argsort(np.concatenate([np.arange(len(addresses)) * 2.0,
                                       np.arange(len(addresses)) * 2.0 + rng.integers(1, 4000, len(addresses))]),
                       kind="stable")
    events = events[order]
    full_weight = defaultdict(float)
    levels, read = [], []
    for b in range(n_batches):
        # A batch a second, its records 62 us apart: 16,000 records a second offered, 3.6x the
        # budget from the first batch on.
        times = b * 1_000_000 + np.arange(size) * 62
        chunk = events[b * size:(b + 1) * size]
        frees = chunk[:, 1].astype(bool)
        records = records_from(chunk[:, 0], times, frees, b * 1_000_000, rng)
        for site, weight, free in zip(records["site"].tolist(), records["weight"].tolist(), frees):
            if not free:
                full_weight[site] += weight
        recognizer.sink(records, b * 1_000_000)
        levels.append(int(recognizer.window.stats().reading_level))
        read.append((records, chunk[:, 0], frees, times))
    assert levels == [2] * n_batches  # 1 in 4 addresses, from the first batch on
    level = levels[-1]
    w = recognizer.window
    kept = [(r[followed(a, level)], a[followed(a, level)], f[followed(a, level)], t[followed(a, level)])
            for r, a, f, t in read]
    assert w.n_times == sum(len(k[0]) for k in kept)
    site_weight = defaultdict(float)
    for r, _, f, _ in kept:
        for site, weight, free in zip(r["site"].tolist(), r["weight"].tolist(), f):
            if not free:
                site_weight[site] += weight * 2**level
    site_ids, site_weights = w.sites()
    assert site_ids.tolist() == sorted(site_weight)
    # The same doubles (float32 weights times a power of two), summed in the same record order:
    # equal, not close.
    assert site_weights.tolist() == [site_weight[s] for s in sorted(site_weight)]
    # Unbiased: each address is kept with probability p = 2**-level (a fixed hash of it, which
    # spreads these addresses like independent draws); a site's estimate sum(w/p over the kept)
    # has variance sum(w**2) (1 - p) / p. Within 4 standard deviations of the full sums:
    p = 2.0**-level
    for site in full_weight:
        weights = [r["weight"][~f][r["site"][~f] == site] for r, _, f, _ in read]
        sd = np.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in weights) * (1 - p) / p)
        assert abs(site_weight[site] - full_weight[site]) <= 4 * sd, (site, site_weight[site], full_weight[site], sd)
    expected, _ = reference_match([(a, t, f) for _, a, f, t in kept])
    assert sorted(w.lifetimes().tolist()) == sorted(x for batch in expected for x in batch)
    recognizer.reset(counters=object())
    assert recognizer.window.stats().reading_level == 0


def test_the_reading_level_counts_from_the_records_times():
    """The rate against the budget is the records offered over their own span of time (at least
    a second), not the wall clock's: the same records give the same level whenever read."""
    rng = np.random.default_rng(8)
    levels = []
    for span_s in (1, 4, 16):
        window = Window(0.0, budget_per_s=1100.0, read_all_first=0)
        times = np.linspace(0, span_s * 1_000_000 - 1, 16000).astype(np.int64)
        records = records_from(np.arange(16000, dtype=np.uint64) * 16 + 16, times, np.zeros(16000, bool), 0, rng)
        assert window.take(records, 0)
        levels.append(int(window.stats().reading_level))
    assert levels == [4, 2, 0]  # 16,000, 4,000 and 1,000 records a second against 1,100


def records_from(addresses, times_us, frees, base_us, rng):
    records = np.zeros(len(addresses), RECORD_DTYPE)
    records["address"] = addresses
    records["time_delta_us"] = (times_us - base_us).astype(np.uint32)
    kinds = np.where(frees, FREE, np.where(rng.random(len(addresses)) < 0.1, REALLOC, ALLOC))
    records["flags"] = (kinds << EVENT_SHIFT).astype(np.uint16)
    records["site"] = rng.choice(np.array([3, 99, 2**32 - 5, 123456789], np.uint32), len(addresses))
    records["weight"] = rng.choice(np.array([1.0, 37.5, 1000.0], np.float32), len(addresses))
    records["thread"] = rng.choice(np.array([0, 4, 65535], np.uint16), len(addresses))
    return records


@pytest.mark.parametrize("in_time_order", [False, True])
@pytest.mark.parametrize("size", [500, 3 * LIB.MS_WINDOW_FOLLOWED_PER_BATCH])
def test_sink_equals_record_by_record_reference(size, in_time_order):
    """Small batches follow every address; large ones a fixed subset of addresses, whose lifetimes
    are then exactly the reference's lifetimes of those addresses."""
    rng = np.random.default_rng(size)
    batches = random_batches(rng, n_batches=4, size=size, pool=size // 3, span_us=5000, in_time_order=in_time_order)
    level = follow_level(size)
    assert (level > 0) == (size > LIB.MS_WINDOW_FOLLOWED_PER_BATCH)
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.read_budget_per_s = float("inf")  # every record read (the reading level: below)
    recognizer.reset(counters=object())
    threads, site_weight, allocs = set(), defaultdict(float), 0
    for b, (addresses, times, frees) in enumerate(batches):
        base = b * 5000
        records = records_from(addresses, times, frees, base, rng)
        recognizer.sink(records, base)
        threads.update(records["thread"].tolist())
        for site, weight, free in zip(records["site"].tolist(), records["weight"].tolist(), frees):
            if not free:
                site_weight[site] += weight
        allocs += int((~frees[followed(addresses, level)]).sum())
    w = recognizer.window
    followed_batches = [(a[k], t[k], f[k]) for a, t, f in batches for k in [followed(a, level)]]
    expected, _ = reference_match(followed_batches)
    assert sorted(w.lifetimes().tolist()) == sorted(x for batch in expected for x in batch)
    assert w.allocs_followed == allocs
    assert set(np.flatnonzero(w.threads()).tolist()) == threads
    site_ids, site_weights = w.sites()
    assert site_ids.tolist() == sorted(site_weight)
    assert site_weights.tolist() == [site_weight[s] for s in sorted(site_weight)]  # (same order: equal)
    assert w.n_times == 4 * size


def test_followed_subsets_nest_and_have_the_expected_share():
    addresses = np.arange(200_000, dtype=np.uint64) * np.uint64(16) + np.uint64(0x7F00_0000_0000)
    previous = followed(addresses, 0)
    assert previous.all()
    for level in range(1, 6):
        now = followed(addresses, level)
        assert not (now & ~previous).any()
        # Binomial(200000, 2**-level): 6 standard deviations.
        p = 2.0 ** -level
        assert abs(now.mean() - p) <= 6 * np.sqrt(p * (1 - p) / len(addresses))
        previous = now
    assert follow_level(LIB.MS_WINDOW_FOLLOWED_PER_BATCH) == 0
    assert follow_level(LIB.MS_WINDOW_FOLLOWED_PER_BATCH + 1) == 1
    assert follow_level(65536) == 3


def test_first_drain_imports_nothing():
    """Nothing is imported by the first sink call (a drain's): the recognizer reads in C."""
    code = (
        "import sys, numpy as np\n"
        "from memscope_otel.optimizer import WorkloadRecognizer\n"
        "from memscope_otel.records import RECORD_DTYPE\n"
        "r = WorkloadRecognizer(clock=lambda: 0.0)\n"
        "before = set(sys.modules)\n"
        "rec = np.zeros(64, RECORD_DTYPE); rec['address'] = np.arange(64) % 5 * 16\n"
        "rec['flags'] = (np.arange(64) % 2) << 2; rec['time_delta_us'] = np.arange(64) * 5000\n"
        "r.sink(rec, 1); r.observe(type('C', (), {'threads_live': 1})())\n"
        "print(sorted(set(sys.modules) - before))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_nbytes_counts_the_window():
    """memory.py's parts of the recognizer: the window's arrays."""
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    before = recognizer.nbytes()
    assert before["times"] == 0 and before["lifetimes"] == 0
    rng = np.random.default_rng(0)
    recognizer.sink(records_from(np.arange(1, 201, dtype=np.uint64) * 16, np.arange(200) * 10,
                                 np.zeros(200, bool), 0, rng), 0)
    read = recognizer.nbytes()
    # The window's arrays are mapped pages: the times' first 1,024 slots (8 bytes each) hold the
    # 200 times; the 200 awaited blocks stay under half of the smallest table's slots (16 bytes
    # each: an address and a time); a thread is a bit.
    assert read["times"] == 1024 * 8
    assert read["pending"] == LIB.MS_WINDOW_PENDING_MIN_SLOTS * 16
    assert read["threads"] == LIB.MS_WINDOW_THREADS // 8
    assert read["sites"] > 0 and read["lifetimes"] == 0
