"""Workload features read from the record stream: lifetimes of followed blocks, per-site weights,
the frame clock, and the bounds that keep the recognizer's memory and time small."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Modules whose frames allocate on behalf of a network server (request parsing, sockets, headers).
NETWORK_MODULES = ("socket", "socketserver", "selectors", "ssl", "asyncio", "http", "wsgiref", "email",
                   "urllib", "uvicorn", "gunicorn", "werkzeug", "flask", "django", "starlette", "aiohttp",
                   "h11", "tornado")
# Modules of array and tensor libraries.
ARRAY_MODULES = ("numpy", "scipy", "torch", "tensorflow", "jax", "sklearn", "pandas")

_IDLE_GAP_US = 4000     # a gap between consecutive records longer than this counts as idle time
# The window's bounds, sized to what the reading budget (4,096 records a second, recognizer.py)
# brings in a 60 s window (about 250,000 records): the tracker's whole memory is to stay within
# 6 MB on a small program, and these are its largest Python-side parts.
_MAX_PENDING = 65_536    # sampled blocks whose free we wait for (a table of at most 4 MiB)
_MAX_TIMES = 262_144     # record times kept per window (2 MiB); later records of the window are not timed
_MAX_LIFETIMES = 131_072  # lifetimes kept per window (1 MiB); later frees of the window are not timed
_THREAD_SLOTS = 1 << 16  # a record's thread index is a u16
# Lifetimes are read from the blocks at a pseudo-random subset of addresses, about this many records
# of each batch at most (a larger batch halves the subset until it fits, for the rest of the
# window): every event of a followed address is seen, so each lifetime is exact. Lifetimes feed
# no rule of RULES, only the reported features, so the cap does not change the classification.
_MAX_FOLLOWED_PER_BATCH = 8192
_ADDRESS_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: spreads addresses over the high bits
_MIN_PERIOD_US, _MAX_PERIOD_US = 5000.0, 100000.0  # frame periods looked for: 10 to 200 fps
# The frame clock is read from the last 10 s of records: a longer span would need a finer grid of
# candidate periods to stay phase-coherent.
_FRAME_CLOCK_SPAN_US = 10_000_000


def _module_parts(path):
    parts = path.replace("\\", "/").split("/")
    return {p[:-3] if p.endswith(".py") else p for p in parts}


@dataclass
class _Window:
    started: float
    counters: object = None
    times: list = field(default_factory=list)          # arrays of absolute record times (µs)
    # threads[i]: thread index i wrote a record in the window
    threads: np.ndarray = field(default_factory=lambda: np.zeros(_THREAD_SLOTS, dtype=bool))
    # Sampled weight (allocations) by site id: site ids ascending, unique, and their weights.
    site_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    site_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    lifetimes: list = field(default_factory=list)      # arrays of µs, of followed blocks freed in the window
    n_lifetimes: int = 0
    allocs_followed: int = 0  # sampled allocations at followed addresses (see follow_level)
    n_times: int = 0
    rusage: tuple = (0, 0, 0.0)
    max_threads_live: int = 0


class PendingAllocations:
    """Sampled allocations whose free has not been seen yet (address -> time allocated, µs), at
    most ``capacity`` of them: an open-addressing hash table in two numpy arrays, probed for a
    whole batch of addresses at once.

    A sorted array would need a pass over every pending block at each batch to delete and insert
    (milliseconds with 200,000 pending); here a batch costs a few vectorized probe rounds over the
    batch's own addresses, however many blocks are pending."""

    _EMPTY, _DELETED = np.uint64(0), np.uint64(1)  # never a block's address (non-NULL, aligned)
    _MIN_SLOTS = 1 << 12
    _PROBE_WINDOW = 8
    _WINDOW_STEPS = np.arange(_PROBE_WINDOW)

    def __init__(self, capacity=_MAX_PENDING):
        self.capacity = capacity
        self.clear()

    def __len__(self):
        return self._live

    def clear(self):
        """Forgets every pending allocation."""
        self._reset_table(self._MIN_SLOTS)

    def _reset_table(self, slots):
        self._keys = np.zeros(slots, dtype=np.uint64)
        self._times = np.zeros(slots, dtype=np.int64)
        self._live = 0  # slots holding an address
        self._used = 0  # ... or a deletion mark (both lengthen probe chains)

    @property
    def nbytes(self):
        """Bytes of the table's two arrays."""
        return self._keys.nbytes + self._times.nbytes

    def items(self):
        """(addresses, allocation times) of the pending allocations, in no particular order."""
        held = self._keys > self._DELETED
        return self._keys[held], self._times[held]

    def _home(self, addresses):
        # splitmix64's finalizer: every address bit reaches the top bits that pick the slot.
        x = addresses ^ (addresses >> np.uint64(30))
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
        return (x >> np.uint64(64 - (len(self._keys).bit_length() - 1))).astype(np.intp)

    def find(self, addresses):
        """The slot of each of ``addresses``, -1 where it is not pending.

        After the home slots, each round reads a window of _PROBE_WINDOW slots per address still
        looking; the table is kept at most 3/8 full, so nearly every chain ends within one window."""
        mask = len(self._keys) - 1
        at = self._home(addresses)
        # First the home slot alone: it ends most chains (more than 5 in 8 at a load of 3/8).
        keys = self._keys[at]
        hit = keys == addresses
        slots = np.where(hit, at, -1)
        active = np.flatnonzero(~hit & (keys != self._EMPTY))
        at = (at[active] + 1) & mask
        while len(active):
            window = self._keys[(at[:, None] + self._WINDOW_STEPS) & mask]
            match = window == addresses[active][:, None]
            stop = match | (window == self._EMPTY)  # the address, or the end of its chain
            ended = stop.any(axis=1)
            first = stop.argmax(axis=1)
            hit = ended & match[np.arange(len(first)), first]
            slots[active[hit]] = (at[hit] + first[hit]) & mask
            active, at = active[~ended], (at[~ended] + self._PROBE_WINDOW) & mask
        return slots

    def times_at(self, slots):
        """Allocation times at ``slots`` (from :meth:`find`)."""
        return self._times[slots]

    def set_times(self, slots, times):
        """Sets the allocation times at ``slots`` (from :meth:`find`): the block was freed and
        allocated again at the same address."""
        self._times[slots] = times

    def remove(self, slots):
        """Forgets the allocations at ``slots`` (distinct, from :meth:`find`)."""
        self._keys[slots] = self._DELETED
        self._live -= len(slots)

    def insert(self, addresses, times):
        """Adds allocations at ``addresses`` (distinct, none pending)."""
        if len(addresses) == 0:
            return
        if 8 * (self._used + len(addresses)) > 3 * len(self._keys):  # linear probing: keep it sparse
            self._rebuild(self._live + len(addresses))
        mask = len(self._keys) - 1
        active = np.arange(len(addresses))
        at = self._home(addresses)
        while len(active):
            slots = (at[:, None] + self._WINDOW_STEPS) & mask
            window = self._keys[slots]
            free = window <= self._DELETED
            has_free = free.any(axis=1)
            claimants = np.flatnonzero(has_free)
            first = free.argmax(axis=1)[claimants]
            where = slots[claimants, first]
            was_empty = window[claimants, first] == self._EMPTY
            claim = active[claimants]
            self._keys[where] = addresses[claim]  # two claims of one slot: one of them wins
            won = self._keys[where] == addresses[claim]
            self._times[where[won]] = times[claim[won]]
            self._used += int(np.count_nonzero(was_empty[won]))
            # A window with no free slot: look further. A lost claim: this window again.
            at = np.where(has_free, at, at + self._PROBE_WINDOW) & mask
            going = np.ones(len(active), dtype=bool)
            going[claimants[won]] = False
            active, at = active[going], at[going]
        self._live += len(addresses)

    def _rebuild(self, live):
        """A fresh table for ``live`` allocations, without deletion marks, at a load of at most 1/4."""
        addresses, times = self.items()
        self._reset_table(max(self._MIN_SLOTS, 1 << (4 * live - 1).bit_length()))
        self.insert(addresses, times)

    def keep_followed(self, level):
        """Forgets the allocations at addresses no longer followed at ``level``."""
        addresses, times = self.items()
        kept = followed(addresses, level)
        self._reset_table(self._MIN_SLOTS)
        self.insert(addresses[kept], times[kept])


def follow_level(n):
    """The smallest level at which about _MAX_FOLLOWED_PER_BATCH of ``n`` records are followed."""
    return ((n - 1) // _MAX_FOLLOWED_PER_BATCH).bit_length() if n > 0 else 0


def followed(addresses, level):
    """Which of ``addresses`` are followed at ``level``: a fixed pseudo-random 1 in 2**level of all
    addresses (those followed at a level are followed at every lower one)."""
    if level == 0:
        return np.ones(len(addresses), dtype=bool)
    mixed = addresses >> np.uint64(4)
    np.multiply(mixed, _ADDRESS_MIX, out=mixed)  # wraps mod 2^64, as meant
    return mixed < np.uint64(1 << (64 - level))


def match_lifetimes(addresses, times, frees, pending):
    """Lifetimes (µs) of the blocks freed in one batch of records, updating ``pending``.

    ``addresses``, ``times`` (µs, int64) and ``frees`` (bool: the record is a free; every other
    record allocates at its address) describe the batch. Events of one address are taken in time
    order, records of the same microsecond in batch order, after the allocations still pending from
    earlier batches. A free ends the block allocated by its address's previous event, if that
    event was an allocation (a free with no allocation before it, e.g. of a block allocated before
    the window or not sampled, gives no lifetime). Afterwards ``pending`` holds every address whose
    last event is an allocation; when that exceeds its capacity, the allocations already pending
    stay and the earliest new ones fill the room left (new ones beyond it are not followed).

    Vectorized: a sort of the batch, a few passes over it and a few probe rounds of ``pending``,
    whatever the batch size; no Python operation per record. Returns (lifetimes, free times), both
    int64, in no particular order."""
    n = len(addresses)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((times, addresses))  # by address, then time; stable, so ties keep batch order
    a, t, f = addresses[order], times[order], frees[order]
    same_as_prev = np.zeros(n, dtype=bool)
    same_as_prev[1:] = a[1:] == a[:-1]
    prev_is_alloc = np.zeros(n, dtype=bool)
    prev_is_alloc[1:] = ~f[:-1]
    # A free right after an allocation of its address in this batch.
    inner = np.flatnonzero(f & same_as_prev & prev_is_alloc)
    lifetimes, freed_at = [t[inner] - t[inner - 1]], [t[inner]]
    heads = np.flatnonzero(~same_as_prev)  # each address's first event in the batch...
    tails = np.empty_like(heads)   # ... and its last
    tails[:-1] = heads[1:] - 1
    tails[-1] = n - 1
    ends_allocated = ~f[tails]
    if len(pending):
        # The first event of an address in this batch follows its pending allocation, if any.
        slots = pending.find(a[heads])
        found = slots >= 0
        head_free = np.flatnonzero(f[heads] & found)
        lifetimes.append(t[heads[head_free]] - pending.times_at(slots[head_free]))
        freed_at.append(t[heads[head_free]])
        # The batch's last event of an address is its state now: allocated since then, or gone.
        still = found & ends_allocated
        pending.set_times(slots[still], t[tails[still]])
        pending.remove(slots[found & ~ends_allocated])
        newly = tails[~found & ends_allocated]
    else:
        newly = tails[ends_allocated]
    room = pending.capacity - len(pending)
    if len(newly) > room:
        earliest = np.argsort(t[newly], kind="stable")[:max(room, 0)]
        newly = np.sort(newly[earliest])
    pending.insert(a[newly], t[newly])
    return np.concatenate(lifetimes), np.concatenate(freed_at)


def _site_totals(sites, weights):
    """(site ids ascending and unique, their summed weights as float64) of one batch's allocations.

    Each (site, weight) pair is packed into one u64, site in the high half, and the pairs sorted
    in place: numpy's SIMD sort of plain integers is several times faster than an argsort followed
    by gathers, and needs no index array."""
    key = sites.astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.ascontiguousarray(weights, dtype=np.float32).view(np.uint32)
    key.sort()
    ids = (key >> np.uint64(32)).astype(np.uint32)
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    values = key.astype(np.uint32).view(np.float32).astype(np.float64)  # the low halves
    return ids[starts], np.add.reduceat(values, starts)


def _add_site_weights(site_ids, site_weights, sites, weights):
    """(site ids, weights) of the window after adding a batch's sampled allocations at ``sites``."""
    if len(sites) == 0:
        return site_ids, site_weights
    batch_ids, batch_weights = _site_totals(sites, weights)
    ids = np.concatenate((site_ids, batch_ids))
    values = np.concatenate((site_weights, batch_weights))
    order = np.argsort(ids, kind="stable")  # distinct sites only: a short sort
    ids, values = ids[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    return ids[starts], np.add.reduceat(values, starts)


def _frame_clock(times):
    """(period in ms, strength in [0, 1]) of the clock that bursts of records start on, if any.

    A burst starts after more than _IDLE_GAP_US without a record. For each candidate period from
    5 to 100 ms (10 to 200 fps) the strength is the phase concentration of the burst starts
    (the Rayleigh statistic |mean(exp(2 pi i t / period))|): a loop that sleeps to fixed frame
    deadlines scores near 1 at its frame period even when the scheduler delays some wake-ups;
    starts at random moments score about sqrt(ln(candidates) / starts), i.e. 0.5 for 25 starts
    and 0.1 for a minute of frames."""
    if len(times) < 3:
        return 0.0, 0.0
    starts = times[1:][np.diff(times) > _IDLE_GAP_US]
    starts = starts[starts >= starts[-1] - _FRAME_CLOCK_SPAN_US] if len(starts) else starts
    if len(starts) < 8:
        return 0.0, 0.0
    t = (starts - starts[0]).astype(np.float64)
    periods = np.arange(_MIN_PERIOD_US, _MAX_PERIOD_US, 50.0)
    strength = np.empty(len(periods))
    for i in range(0, len(periods), 256):  # bounded temporaries
        block = periods[i:i + 256]
        strength[i:i + 256] = np.abs(np.exp(2j * np.pi * t[None, :] / block[:, None]).mean(axis=1))
    best = float(strength.max())
    # Starts locked to period P are equally locked to P/2, P/3...: the largest period almost as
    # strong as the best is the frame itself.
    period = float(periods[np.nonzero(strength >= 0.9 * best)[0][-1]])
    return period / 1000.0, best


_numpy_warm = False


def _warm_numpy():
    """Runs the recognizer's numpy calls once on tiny inputs, so that what numpy imports or sets up
    lazily on first use (numpy.ma, which np.median pulls in: 15 to 40 ms) happens now, at
    optimizer start, and not inside a drain or a collection. Once per process."""
    global _numpy_warm
    if _numpy_warm:
        return
    _numpy_warm = True
    addresses = np.array([16, 32, 16, 48], dtype=np.uint64)
    times = np.array([1, 2, 3, 4], dtype=np.int64)
    frees = np.array([False, False, True, True])
    pending = PendingAllocations()
    match_lifetimes(addresses, times, frees, pending)
    match_lifetimes(addresses, times + 10, frees, pending)
    _add_site_weights(np.zeros(0, np.uint32), np.zeros(0), np.array([7, 3, 7], np.uint32),
                      np.ones(3, np.float32))
    np.median(times.astype(np.float64))
    _frame_clock(np.arange(0, 200_000, 10_000, dtype=np.int64))


def _rusage():
    """(voluntary context switches, involuntary ones, CPU seconds) of this process so far."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_nvcsw, r.ru_nivcsw, r.ru_utime + r.ru_stime
    except Exception:  # no resource module (Windows): the features read 0
        return 0, 0, 0.0
