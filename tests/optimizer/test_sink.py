"""The recognizer's record sink and window (csrc/window.c) against straightforward
record-by-record references.

The window matches frees to allocations in C, through a hash table of the allocations whose free
it awaits; a plain dict walk over the records in time order is the reference it must equal, on
random batches that repeat addresses, tie on microseconds, free blocks allocated in earlier
batches and free blocks never allocated.
"""
import subprocess
import sys
import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from memscope_otel import sampler
from memscope_otel.optimizer import Window, WorkloadRecognizer, followed
from memscope_otel.optimizer import recognizer as recognizer_module
from memscope_otel.records import EVENT_SHIFT, RECORD_DTYPE

LIB = sampler._lib()[1]


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


def random_batches(rng, n_batches, size, pool, span_us=2000):
    """Batches over a small pool of addresses (so they repeat within and across batches), with
    times drawn from a short span (many ties) and shuffled (rings are concatenated, not merged)."""
    batches = []
    for b in range(n_batches):
        addresses = (rng.integers(0, pool, size).astype(np.uint64) * np.uint64(16)) + np.uint64(0x7F00_0000_0000)
        times = np.int64(b * span_us) + rng.integers(0, span_us, size).astype(np.int64)
        frees = rng.random(size) < 0.5
        batches.append((addresses, times, frees))
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_window_lifetimes_equal_a_record_by_record_walk(seed):
    rng = np.random.default_rng(seed)
    batches = random_batches(rng, n_batches=8, size=int(rng.integers(1, 400)), pool=int(rng.integers(2, 300)),
                             span_us=int(rng.integers(1, 3000)))
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


def test_the_c_subsample_is_features_followed(rng=np.random.default_rng(11)):
    """csrc/follow.c keeps the records of the addresses features.followed names, in order, their
    weights times 2**level; level 0 keeps all."""
    from memscope_otel import sampler

    ffi, lib = sampler._lib()
    addresses = rng.integers(0, 2**48, 20000, dtype=np.uint64) & ~np.uint64(15)
    records = records_from(addresses, np.arange(20000), rng.random(20000) < 0.5, 0, rng)
    for level in (0, 1, 3, 7):
        out = np.zeros(len(records), RECORD_DTYPE)
        n = lib.ms_records_follow(ffi.cast("ms_record_t *", ffi.from_buffer(records)), len(records), level,
                                  ffi.cast("ms_record_t *", ffi.from_buffer(out)))
        expected = records[followed(addresses, level)]
        assert n == len(expected) and 0 < n <= len(records)
        assert out[:n]["address"].tolist() == expected["address"].tolist()
        assert out[:n]["weight"].tolist() == (expected["weight"] * np.float32(2**level)).tolist()
        # In place, as the sink subsamples its copy of a batch: the same records.
        inplace = records.copy()
        pointer = ffi.cast("ms_record_t *", ffi.from_buffer(inplace))
        assert lib.ms_records_follow(pointer, len(inplace), level, pointer) == n
        assert inplace[:n].tobytes() == out[:n].tobytes()


def test_the_sink_keeps_no_buffer_between_batches():
    """The subsample is made in the queued copy itself: what the recognizer holds after a batch is
    that copy (in its queue), not a scratch array the size of the largest batch."""
    recognizer = WorkloadRecognizer()
    recognizer.start_worker()
    try:
        recognizer.read_every_s, recognizer.read_at_records = 1e9, 1 << 40  # the worker never reads
        # Past the window's first records, twice over the budget or more: read at a level > 0.
        recognizer._sink_offered, recognizer.read_budget_per_s = recognizer_module._READ_ALL_FIRST, 8192
        rng = np.random.default_rng(3)
        addresses = rng.integers(1, 2**40, 16384, dtype=np.uint64) << np.uint64(4)
        recognizer.sink(records_from(addresses, np.arange(16384), np.zeros(16384, bool), 0, rng), 0)
        level = recognizer._sink_level
        assert level > 0
        parts = recognizer.nbytes()
        kept = int(np.count_nonzero(followed(addresses, level)))
        assert parts["queue"] == kept * RECORD_DTYPE.itemsize < 16384 * RECORD_DTYPE.itemsize
        held = [a for a in vars(recognizer).values() if isinstance(a, np.ndarray)]
        assert all(a.nbytes < kept * RECORD_DTYPE.itemsize for a in held)
    finally:
        recognizer.close()


def test_the_first_records_of_a_window_are_all_read():
    """However fast they come: a short window keeps enough records to be classified."""
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.reset(counters=object())
    recognizer.read_budget_per_s = 100.0
    rng = np.random.default_rng(3)
    first = recognizer_module._READ_ALL_FIRST
    records = records_from(np.arange(first, dtype=np.uint64) * 16, np.arange(first), np.zeros(first, bool), 0, rng)
    recognizer.sink(records, 0)
    assert recognizer._sink_level == 0 and recognizer.window.n_times == first
    recognizer.sink(records[:100], 0)  # one more batch: now past the budget
    assert recognizer._sink_level > 0


def test_past_its_budget_the_sink_reads_a_subsample_of_addresses_unbiased(monkeypatch):
    """Offered more than read_budget_per_s, the sink reads the records of 1 in 2**level addresses
    (the level rising until the stream fits, never falling within a window): the window is then
    exactly the window of those records with their weights scaled, so site sums stay unbiased
    (checked against the full sums), and lifetimes are exactly those of the followed addresses."""
    monkeypatch.setattr(recognizer_module, "_READ_ALL_FIRST", 0)  # (the budget from the first record on)
    rng = np.random.default_rng(5)
    now = [0.0]
    recognizer = WorkloadRecognizer(clock=lambda: now[0])
    recognizer.reset(counters=object())
    recognizer.read_budget_per_s = 4000.0
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
        now[0] = 1.0 * (b + 1)  # 16,000 records a second offered: 4x the budget from the first batch on
        chunk = events[b * size:(b + 1) * size]
        frees = chunk[:, 1].astype(bool)
        records = records_from(chunk[:, 0], b * 100000 + np.arange(size), frees, b * 100000, rng)
        for site, weight, free in zip(records["site"].tolist(), records["weight"].tolist(), frees):
            if not free:
                full_weight[site] += weight
        recognizer.sink(records, b * 100000)
        levels.append(recognizer._sink_level)
        read.append((records, chunk[:, 0], frees, b * 100000 + np.arange(size)))
    assert levels == [2] * n_batches  # 4x over the budget: 1 in 4 addresses, from the first batch on
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
    assert np.allclose(site_weights, [site_weight[s] for s in sorted(site_weight)], rtol=1e-6)
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
    assert recognizer._sink_level == 0


def test_batches_followed_already_read_as_the_full_batches_would_be(monkeypatch):
    """The mover's subsample (Drainer.follower): batches followed at level 1 already, weights
    doubled, read at the recognizer's level 2 give the window the full batches give."""
    from memscope_otel import sampler

    ffi, lib = sampler._lib()
    monkeypatch.setattr(recognizer_module, "_READ_ALL_FIRST", 0)
    rng = np.random.default_rng(11)
    now = [0.0]
    full, given = WorkloadRecognizer(clock=lambda: now[0]), WorkloadRecognizer(clock=lambda: now[0])
    for recognizer in (full, given):
        recognizer.reset(counters=object())
        recognizer.read_budget_per_s = 5000.0  # 16,000 records a second: 3.2x, level 2
    batches = random_batches(rng, n_batches=4, size=16000, pool=40000, span_us=1_000_000)
    for b, (addresses, times, frees) in enumerate(batches):
        now[0] = 1.0 * (b + 1)
        records = records_from(addresses, times, frees, 0, rng)
        full.sink(records, 0)
        out = np.zeros(len(records), RECORD_DTYPE)
        n = lib.ms_records_follow(ffi.cast("ms_record_t *", ffi.from_buffer(records)), len(records), 1,
                                  ffi.cast("ms_record_t *", ffi.from_buffer(out)))
        given.sink(out[:n], 0, level=1)
        assert full._sink_level == given._sink_level == 2
        assert full.keep_level() == 2
    a, b = full.window, given.window
    assert a.n_times == b.n_times > 0
    assert a.sites()[0].tolist() == b.sites()[0].tolist()
    assert a.sites()[1].tolist() == b.sites()[1].tolist()  # (powers of two: exact)
    assert a.n_lifetimes == b.n_lifetimes > 0
    assert a.lifetimes().tolist() == b.lifetimes().tolist()


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


@pytest.mark.parametrize("size", [500, 3 * LIB.MS_WINDOW_FOLLOWED_PER_BATCH])
def test_sink_equals_record_by_record_reference(size):
    """Small batches follow every address; large ones a fixed subset of addresses, whose lifetimes
    are then exactly the reference's lifetimes of those addresses."""
    rng = np.random.default_rng(size)
    batches = random_batches(rng, n_batches=4, size=size, pool=size // 3, span_us=5000)
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
    assert np.allclose(site_weights, [site_weight[s] for s in sorted(site_weight)], rtol=1e-12)
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


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture
def gated_worker(monkeypatch):
    """A recognizer with its worker on (as the optimizer sets it), whose batch reads wait for
    ``gate``; ``readers`` names the thread of each read. Closed after the test."""
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.reset(counters=object())
    recognizer.read_every_s = 0.0  # these tests are about the queue: every batch is due at once
    recognizer.start_worker()
    gate, readers, original = threading.Event(), [], recognizer._read_batch

    def read(records, base_us, level=0):
        gate.wait(30)
        readers.append(threading.current_thread().name)
        original(records, base_us, level)

    monkeypatch.setattr(recognizer, "_read_batch", read)
    yield recognizer, gate, readers
    gate.set()
    worker = recognizer._worker
    recognizer.close()
    assert not worker.is_alive()


def _hundred_allocations(seed):
    rng = np.random.default_rng(seed)
    return records_from(np.arange(1, 101, dtype=np.uint64) * 16, np.arange(100) * 10, np.zeros(100, bool), 0, rng)


def test_sink_queues_and_the_worker_thread_reads(gated_worker):
    """The drainer's thread only queues a batch: a batch read can take the drainer away from the
    rings for as long as the application keeps the GIL (see WorkloadRecognizer)."""
    recognizer, gate, readers = gated_worker
    records = _hundred_allocations(7)
    recognizer.sink(records, 0)
    records["address"] = 0  # the sink kept a copy: the drainer reuses its buffer
    _wait_until(lambda: recognizer._queue_records == 0)  # the worker took the batch...
    assert readers == []  # ...and is still reading it, while sink() has long returned
    gate.set()
    assert recognizer.window.allocs_followed == 100  # the window waits for the batch in flight
    assert readers == ["memscope-recognizer"]
    assert len(recognizer.window.pending()) == 100  # allocations waiting for their frees


def test_a_full_queue_skips_batches_and_counts_them(gated_worker, monkeypatch):
    monkeypatch.setattr(recognizer_module, "_MAX_QUEUED_RECORDS", 250)
    recognizer, gate, readers = gated_worker
    batch = _hundred_allocations(8)
    recognizer.sink(batch, 0)
    _wait_until(lambda: recognizer._queue_records == 0)  # in flight: no longer counts against the bound
    for _ in range(4):
        recognizer.sink(batch, 0)  # two fit (200 <= 250), two do not
    assert recognizer.batches_skipped == 2
    gate.set()
    assert recognizer.window.n_times == 300
    assert len(readers) == 2  # the batch in flight, then the two queued ones read as one


@pytest.fixture
def paced_worker(monkeypatch):
    """A recognizer with its worker on at its own cadence; ``reads`` lists (thread name, records)
    of each batch read. Closed after the test."""
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.reset(counters=object())
    reads, original = [], recognizer._read_batch

    def read(records, base_us, level=0):
        reads.append((threading.current_thread().name, len(records)))
        original(records, base_us, level)

    monkeypatch.setattr(recognizer, "_read_batch", read)
    yield recognizer, reads
    worker = recognizer._worker
    recognizer.close()
    assert not worker.is_alive()


def test_the_worker_waits_for_a_full_enough_queue(paced_worker):
    """Each read costs the application forced GIL switches whatever its size: the worker leaves
    a small queue alone until it holds read_at_records, then reads it whole."""
    recognizer, reads = paced_worker
    recognizer.read_every_s, recognizer.read_at_records = 3600.0, 250
    recognizer.start_worker()
    for seed in range(2):
        recognizer.sink(_hundred_allocations(seed), 0)
    time.sleep(0.2)
    assert reads == [] and recognizer._queue_records == 200  # below the threshold: not due
    recognizer.sink(_hundred_allocations(2), 0)  # 300 >= 250
    _wait_until(lambda: reads)
    assert reads == [("memscope-recognizer", 300)] and recognizer._queue_records == 0


def test_the_worker_reads_a_small_queue_after_read_every_s(paced_worker):
    recognizer, reads = paced_worker
    recognizer.read_every_s = 0.3
    recognizer.start_worker()
    queued_at = time.monotonic()
    recognizer.sink(_hundred_allocations(3), 0)
    _wait_until(lambda: reads)
    assert time.monotonic() - queued_at >= 0.3
    assert reads == [("memscope-recognizer", 100)]


def test_the_window_reads_what_the_worker_has_not_read_yet(paced_worker):
    """features() and window do not wait for the worker's cadence: they read the queue."""
    recognizer, reads = paced_worker
    recognizer.read_every_s = 3600.0
    recognizer.start_worker()
    recognizer.sink(_hundred_allocations(4), 0)
    recognizer.sink(_hundred_allocations(5), 0)
    assert recognizer.window.allocs_followed == 200
    assert reads == [(threading.current_thread().name, 200)]  # read here, as one batch


def test_a_classification_leaves_the_read_to_the_worker(paced_worker):
    """The optimizer classifies inside a collection: features(read_queue=False) reads nothing on
    the calling thread, and read_soon() has the worker read the queue at once."""
    recognizer, reads = paced_worker
    recognizer.read_every_s = 3600.0
    recognizer.start_worker()
    from memscope_otel import sampler

    recognizer.reset(counters=sampler.read_counters())
    recognizer.sink(_hundred_allocations(6), 0)
    assert recognizer.features(sampler.read_counters(), read_queue=False)["records"] == 0
    assert reads == [] and recognizer._queue_records == 100
    recognizer.read_soon()
    _wait_until(lambda: reads)
    assert reads == [("memscope-recognizer", 100)]


def test_batches_read_together_give_the_window_of_batches_read_one_by_one(gated_worker):
    """Batches queued while a read runs are read as one, times rebased on the earliest base."""
    together, gate, readers = gated_worker
    one_by_one = WorkloadRecognizer(clock=lambda: 0.0)
    one_by_one.reset(counters=object())
    for r in (together, one_by_one):
        r.read_budget_per_s = float("inf")  # every record read (6,000 in under the 1 s the budget counts from)
    rng = np.random.default_rng(9)
    batches = random_batches(rng, n_batches=4, size=1500, pool=500, span_us=5000)
    for b, (addresses, times, frees) in enumerate(batches):
        records = records_from(addresses, times, frees, b * 5000, rng)
        one_by_one.sink(records, b * 5000)
        together.sink(records, b * 5000)
        if b == 0:
            _wait_until(lambda: together._queue_records == 0)  # the worker holds the first batch
    gate.set()
    a, w = one_by_one.window, together.window
    assert len(readers) == 2  # the first batch, then the three that queued up meanwhile
    assert a.n_times == w.n_times == 6000
    assert sorted(a.times().tolist()) == sorted(w.times().tolist())
    assert sorted(a.lifetimes().tolist()) == sorted(w.lifetimes().tolist())
    assert a.allocs_followed == w.allocs_followed
    assert a.sites()[0].tolist() == w.sites()[0].tolist()
    assert np.allclose(a.sites()[1], w.sites()[1], rtol=1e-12)
    assert (a.threads() == w.threads()).all()


def test_nbytes_counts_the_queue_and_then_the_window(paced_worker):
    """memory.py's parts of the recognizer: queued batches, then the window's arrays once read."""
    recognizer, reads = paced_worker
    recognizer.read_every_s, recognizer.read_at_records = 3600.0, 1000
    recognizer.start_worker()
    before = recognizer.nbytes()
    assert before["queue"] == 0 and before["times"] == 0 and before["lifetimes"] == 0
    for seed in range(2):
        recognizer.sink(_hundred_allocations(seed), 0)
    queued = recognizer.nbytes()
    assert queued["queue"] == 200 * RECORD_DTYPE.itemsize and queued["times"] == 0
    recognizer.read_queued()
    read = recognizer.nbytes()
    assert read["queue"] == 0
    # The window's arrays are mapped pages: the times' first 1,024 slots (8 bytes each) hold the
    # 200 times; the 200 awaited blocks stay under half of the smallest table's slots (16 bytes
    # each: an address and a time); a thread is a bit.
    assert read["times"] == 1024 * 8
    assert read["pending"] == LIB.MS_WINDOW_PENDING_MIN_SLOTS * 16
    assert read["threads"] == LIB.MS_WINDOW_THREADS // 8
    assert read["sites"] > 0 and read["lifetimes"] == 0
