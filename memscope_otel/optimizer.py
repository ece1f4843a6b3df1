"""The adaptive optimizer: export pressure -> sampling rates; workload recognition; recommendations.

Four parts, each usable alone, wired together by :class:`PerformanceOptimizer`:

- :class:`PressureMonitor` turns what memscope can see through public means into one pressure value
  in [0, 1]: cadence drift of the metric collections, export failures the OpenTelemetry SDK logs,
  the cost and series count of memscope's own collection, ring-buffer drops, sampled records per
  second and the estimated time spent in the allocator hooks. Each signal is scaled to [0, 1]
  against a budget; the pressure is the largest of them, so the reason for a change is always one
  named signal.
- :class:`RateController` lowers the small and medium sampling rates multiplicatively when the
  pressure is above the high-water mark, and raises them slowly back toward the configured rates once
  it has stayed below the low-water mark. Large allocations are never touched (always sampled). A
  rate change is one atomic store in C; every record carries the weight in force when it was taken,
  so the estimates stay unbiased through every change.
- :class:`WorkloadRecognizer` classifies the running program as ``web_server``, ``data_processing``,
  ``game_loop``, ``ml_training`` or ``generic`` from measured features (see :func:`classify` for the
  rules and docs/optimizer.md for the measurements behind them).
- :class:`PerformanceOptimizer` (the memscope design's name) runs all of it on the tracker's
  snapshots and offers :meth:`~PerformanceOptimizer.get_optimization_recommendations` and
  :meth:`~PerformanceOptimizer.apply_optimizations`.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import sampler
from .records import EVENT_MASK, EVENT_SHIFT, concatenate_records

log = logging.getLogger("memscope_otel.optimizer")

WORKLOADS = ("web_server", "data_processing", "game_loop", "ml_training", "generic")

# Cost of one unsampled hook call (counter bumps + countdown), in ns. The C side times only the
# sampled path (slow_path_ns); the fast path is too short to time per call, so it is this constant,
# measured once with `python benchmarks/optimizer.py fastpath` (hooks on with every rate at 0 and
# no frequency guarantee, minus hooks off, per hook call): 7 to 15 ns in the least disturbed runs
# on a shared 2-core machine. Over-estimating it only errs on the safe side. See docs/optimizer.md.
FAST_PATH_NS = 10.0

# Budgets: each signal reaches pressure 1 at its budget. Chosen so that the demo workloads at the
# default settings stay well under the low-water mark (docs/optimizer.md lists their figures).
CADENCE_DRIFT_BUDGET = 1.0   # a collection gap of twice the export interval
COLLECTION_COST_BUDGET = 0.10  # memscope's collection taking 10% of the export interval
SERIES_BUDGET = 2000         # points per collection (the SDK's default per-metric cardinality limit)
DROP_BUDGET = 0.01           # 1% of the records lost to full rings
RING_FILL_BUDGET = 1.0       # records of one drain interval filling a whole ring
HOOK_SHARE_BUDGET = 0.10     # 10% of one core spent in the hooks
EXPORT_FAILURE_PRESSURE = 1.0  # any export failure logged since the previous collection

# Controller steps: fast down, slow up (one step per collection).
DOWN_FACTOR = 0.5
UP_FACTOR = 1.5
CALM_COLLECTIONS = 3         # collections below the low-water mark before the first step up
SMOOTHING = 0.5              # weight of the newest reading in the smoothed pressure


def export_interval_from_env(environ=None):
    """OTEL_METRIC_EXPORT_INTERVAL in seconds (default 60), as the SDK's periodic reader reads it."""
    environ = os.environ if environ is None else environ
    text = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "")
    if not text.strip():
        return 60.0
    try:
        value = float(text)
        if not (math.isfinite(value) and value > 0):
            raise ValueError
    except ValueError:
        log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is invalid (accepted: a positive number of ms); "
                    "the optimizer assumes 60000", text)
        return 60.0
    return value / 1000.0


# ---------------------------------------------------------------------------------------------
# Pressure signals
# ---------------------------------------------------------------------------------------------

class ExportFailureCounter(logging.Handler):
    """Counts the export failures the OpenTelemetry SDK and exporters report on their loggers.

    The SDK's periodic reader logs "Exception while exporting metrics" at ERROR when an exporter
    raises, and the OTLP exporters log failed and retried exports at WARNING or above; a logging
    handler is the public way to see them. An exporter that returns FAILURE silently is invisible
    here, but its retries still show up as cadence drift."""

    PREFIXES = ("opentelemetry.sdk.metrics", "opentelemetry.exporter")

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.failures = 0

    def emit(self, record):
        """Counts a WARNING-or-worse record of the SDK's or an exporter's loggers."""
        if record.name.startswith(self.PREFIXES):
            self.failures += 1

    def install(self):
        """Attaches to the SDK's and the exporters' loggers (propagation is left as it was)."""
        for name in self.PREFIXES:
            logging.getLogger(name).addHandler(self)

    def uninstall(self):
        """Detaches from those loggers."""
        for name in self.PREFIXES:
            logging.getLogger(name).removeHandler(self)


@dataclass(frozen=True)
class Pressure:
    """One pressure reading: ``value`` in [0, 1] (the largest component), the components, the
    raw figures they came from, and which one dominated."""

    value: float
    components: dict
    figures: dict
    dominant: str

    def reason(self):
        """The dominant signal with its figure, for logs and recommendations."""
        f = self.figures
        texts = {
            "cadence": f"collections {f.get('gap_s', 0):.2f} s apart for an export interval of "
                       f"{f.get('interval_s', 0):.2f} s (drift {f.get('drift', 0):.2f})",
            "export_failures": f"{f.get('export_failures', 0)} export failure(s) logged since the last collection",
            "collection_cost": f"memscope's collection took {f.get('collection_s', 0) * 1000:.1f} ms",
            "series": f"{f.get('series', 0)} points per collection",
            "drops": f"{f.get('drop_fraction', 0):.2%} of records dropped",
            "ring_fill": f"{f.get('records_per_s', 0):.0f} records/s fill {f.get('ring_fill', 0):.0%} "
                         f"of a ring per drain interval",
            "hooks": f"{f.get('hook_share', 0):.1%} of a core spent in the hooks",
        }
        return f"{self.dominant}: {texts.get(self.dominant, '')}"


class PressureMonitor:
    """Reads the pressure at each metric collection from two consecutive tracker snapshots.

    ``export_interval_s`` is the configured export interval (OTEL_METRIC_EXPORT_INTERVAL); the
    gap between two collections beyond it is cadence drift. ``collection_stats`` returns the
    cumulative (nanoseconds, points) memscope's instrument callbacks have spent/produced, or None.
    A snapshot taken outside a collection (``memscope_otel.snapshot()``) shortens the gap it
    falls into, which can only hide drift, never invent it."""

    def __init__(self, export_interval_s, drain_interval_s, ring_capacity, collection_stats=None, clock=None):
        self.export_interval_s = export_interval_s
        self.drain_interval_s = drain_interval_s
        self.ring_capacity = ring_capacity
        self._collection_stats = collection_stats
        self._clock = clock or time.monotonic
        self.failures = ExportFailureCounter()
        self._last = None  # (time, counters, collection ns, points, failures)
        self.latest = None

    def start(self):
        """Starts counting export failures."""
        self.failures.install()

    def reset(self):
        """Forgets the previous collection (after a fork the counters restart from zero)."""
        self._last = None

    def stop(self):
        """Stops counting export failures."""
        self.failures.uninstall()

    def observe(self, counters):
        """The pressure since the previous observation (None for the first one)."""
        now = self._clock()
        ns, points = self._collection_stats() if self._collection_stats else (0, 0)
        current = (now, counters, ns, points, self.failures.failures)
        last, self._last = self._last, current
        if last is None:
            return None
        t0, c0, ns0, points0, failures0 = last
        gap = max(now - t0, 1e-9)
        drift = max(gap / self.export_interval_s - 1.0, 0.0)
        records = counters.samples - c0.samples
        dropped = counters.dropped - c0.dropped
        drop_fraction = dropped / max(records + dropped, 1)
        records_per_s = (records + dropped) / gap
        ring_fill = records_per_s * self.drain_interval_s / self.ring_capacity
        calls = int((counters.allocations.sum() + counters.deallocations.sum())
                    - (c0.allocations.sum() + c0.deallocations.sum()))
        hook_ns = (counters.slow_path_ns - c0.slow_path_ns) + FAST_PATH_NS * calls
        hook_share = hook_ns / 1e9 / gap
        collection_s = (ns - ns0) / 1e9
        series = points - points0
        export_failures = self.failures.failures - failures0
        figures = {
            "gap_s": gap, "interval_s": self.export_interval_s, "drift": drift,
            "export_failures": export_failures, "collection_s": collection_s, "series": series,
            "drop_fraction": drop_fraction, "records_per_s": records_per_s, "ring_fill": ring_fill,
            "hook_share": hook_share, "hook_calls_per_s": calls / gap,
            "slow_path_ns_per_record": (counters.slow_path_ns - c0.slow_path_ns)
            / max(counters.slow_path_calls - c0.slow_path_calls, 1),
        }
        components = {
            "cadence": min(drift / CADENCE_DRIFT_BUDGET, 1.0),
            "export_failures": EXPORT_FAILURE_PRESSURE if export_failures else 0.0,
            "collection_cost": min(collection_s / (COLLECTION_COST_BUDGET * self.export_interval_s), 1.0),
            "series": min(series / SERIES_BUDGET, 1.0),
            "drops": min(drop_fraction / DROP_BUDGET, 1.0),
            "ring_fill": min(ring_fill / RING_FILL_BUDGET, 1.0),
            "hooks": min(hook_share / HOOK_SHARE_BUDGET, 1.0),
        }
        dominant = max(components, key=components.get)
        self.latest = Pressure(components[dominant], components, figures, dominant)
        return self.latest


# ---------------------------------------------------------------------------------------------
# Controller
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RateChange:
    """One change of the sampling rates, with the exact allocation counters at that moment (so the
    variance of every estimate can be computed phase by phase)."""

    time: float
    medium: float
    small: float
    reason: str
    pressure: float
    allocations: np.ndarray  # (4, 3) exact counters when the change was made


class RateController:
    """Moves the small and medium rates between ``floor`` x configured and the configured rates.

    ``high_water`` / ``low_water``: the smoothed pressure above which rates halve at each
    collection, and below which (for ``CALM_COLLECTIONS`` collections) they grow by half a step at
    each collection until they are back at the configured rates. ``enabled=False`` (ADAPTIVE=false)
    never changes a rate."""

    def __init__(self, medium, small, high_water=0.6, low_water=0.3, floor=0.01, enabled=True,
                 set_rates=None, get_rates=None):
        if not 0.0 <= low_water < high_water <= 1.0:
            raise ValueError(f"need 0 <= low_water < high_water <= 1, got {low_water}, {high_water}")
        self.target = (medium, small)
        self.high_water, self.low_water, self.floor = high_water, low_water, floor
        self.enabled = enabled
        self._set_rates = set_rates or sampler.set_rates
        self._get_rates = get_rates or sampler.rates
        self.smoothed = 0.0
        self._calm = 0
        self.history = []  # RateChange, newest last

    def set_target(self, medium, small):
        """New configured rates (from apply_optimizations); moves there now."""
        self.target = (medium, small)
        self._apply(medium, small, "target rates changed by apply_optimizations", self.smoothed, None)

    def step(self, pressure, counters=None):
        """Feeds one pressure reading; returns the RateChange made, or None."""
        if pressure is None:
            return None
        self.smoothed = SMOOTHING * pressure.value + (1 - SMOOTHING) * self.smoothed
        if not self.enabled:
            return None
        medium, small = self._get_rates()
        t_medium, t_small = self.target
        if self.smoothed > self.high_water:
            self._calm = 0
            new = (max(medium * DOWN_FACTOR, t_medium * self.floor), max(small * DOWN_FACTOR, t_small * self.floor))
            why = f"pressure {self.smoothed:.2f} above high-water {self.high_water:.2f} ({pressure.reason()})"
        elif self.smoothed < self.low_water:
            self._calm += 1
            if self._calm < CALM_COLLECTIONS:
                return None
            new = (min(max(medium, t_medium * self.floor) * UP_FACTOR, t_medium),
                   min(max(small, t_small * self.floor) * UP_FACTOR, t_small))
            why = f"pressure {self.smoothed:.2f} below low-water {self.low_water:.2f} for {self._calm} collections"
        else:
            self._calm = 0
            return None
        if _close(new[0], medium) and _close(new[1], small):
            return None
        return self._apply(new[0], new[1], why, self.smoothed, counters)

    def _apply(self, medium, small, why, pressure, counters):
        old = self._get_rates()
        self._set_rates(medium, small)
        allocations = counters.allocations.copy() if counters is not None else sampler.read_counters().allocations
        change = RateChange(time.time(), medium, small, why, pressure, allocations)
        self.history.append(change)
        del self.history[:-1000]
        log.debug("memscope sampling rates: medium %.6g -> %.6g, small %.6g -> %.6g; %s",
                  old[0], medium, old[1], small, why)
        return change


def _close(a, b):
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300)


# ---------------------------------------------------------------------------------------------
# Workload recognition
# ---------------------------------------------------------------------------------------------

# Modules whose frames allocate on behalf of a network server (request parsing, sockets, headers).
NETWORK_MODULES = ("socket", "socketserver", "selectors", "ssl", "asyncio", "http", "wsgiref", "email",
                   "urllib", "uvicorn", "gunicorn", "werkzeug", "flask", "django", "starlette", "aiohttp",
                   "h11", "tornado")
# Modules of array and tensor libraries.
ARRAY_MODULES = ("numpy", "scipy", "torch", "tensorflow", "jax", "sklearn", "pandas")

_IDLE_GAP_US = 4000     # a gap between consecutive records longer than this counts as idle time
_MAX_PENDING = 200_000  # sampled blocks whose free we wait for (a table of at most 16 MB)
_MAX_TIMES = 500_000    # record times kept per window (4 MB); later records of the window are not timed
_MAX_LIFETIMES = 200_000  # lifetimes kept per window (1.6 MB); later frees of the window are not timed
_THREAD_SLOTS = 1 << 16  # a record's thread index is a u16
# Lifetimes are read from the blocks at a pseudo-random subset of addresses, about this many records
# of each batch at most (a larger batch halves the subset until it fits, for the rest of the
# window): every event of a followed address is seen, so each lifetime is exact. Lifetimes feed
# no rule of RULES, only the reported features, so the cap does not change the classification.
_MAX_FOLLOWED_PER_BATCH = 8192
# Records waiting for the recognizer's worker (4 MiB): beyond it, batches skip the recognizer
# (counted) rather than hold up the drainer or grow without bound.
_MAX_QUEUED_RECORDS = 131072
# The worker reads the queue when it holds this many records, or when its oldest batch has waited
# this long: every read costs the application a few dozen forced GIL switches whatever its size
# (see WorkloadRecognizer), and classification needs the window at most every few seconds.
_READ_AT_RECORDS = _MAX_QUEUED_RECORDS // 2
_READ_EVERY_S = 10.0
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


class WorkloadRecognizer:
    """Collects workload features from the exact counters and the record stream, and classifies.

    Attach :meth:`sink` to the drainer (it sees every drained batch) and call :meth:`observe` with
    each snapshot's counters; :meth:`features` and :meth:`classify` read the current window, which
    :meth:`reset` restarts. ``resolve`` maps a site id to a :class:`memscope_otel.sites.Site`.

    While :meth:`start_worker` has a worker thread running (the optimizer starts it with itself),
    the sink only queues a copy of each batch and the worker reads them; otherwise sink() reads the
    batch itself. Reading a batch is a few
    dozen numpy calls, and each may release the GIL; while the application keeps the GIL busy,
    getting it back costs up to the interpreter's switch interval (5 ms) every time, so a batch read
    on the drainer's thread took the drainer away from the rings for 100-200 ms, long enough for a
    busy thread to fill its ring and drop records. The worker itself pays that price at every
    wake-up and every numpy call, and the application pays a forced switch each time, so it reads
    the queue only every :attr:`read_every_s` seconds (10), or as soon as the queue holds
    :attr:`read_at_records` records (65,536), not after every drain (5 per second). :attr:`window`
    and :meth:`features` first read whatever is queued, so they see every batch drained before
    the call (``features(read_queue=False)``, the optimizer's classification inside a collection,
    does not)."""

    def __init__(self, resolve=None, clock=None):
        self._resolve = resolve
        self._clock = clock or time.monotonic
        self._pending = PendingAllocations()
        self._follow_level = 0  # lifetimes are read at 1 in 2**level addresses (see followed())
        self._last_counters = None
        self._window = _Window(self._clock(), rusage=_rusage())
        self.batches_skipped = 0  # batches the queue had no room for
        self.read_every_s = _READ_EVERY_S  # the worker's cadence (see _READ_AT_RECORDS)
        self.read_at_records = _READ_AT_RECORDS
        self._new_locks()
        _warm_numpy()

    def _new_locks(self):
        self._lock = threading.Lock()          # the window and the pending allocations
        self._read_lock = threading.Lock()     # one reader of the queue at a time: batches in order
        self._queued = threading.Condition()   # the queue of drained batches
        self._queue = []
        self._queue_records = 0
        self._queued_since = 0.0  # time.monotonic() when the oldest queued batch came
        self._read_now = False  # read_soon() was called
        self._worker = None

    @property
    def window(self):
        """The current window, with every batch queued so far read into it."""
        self.read_queued()
        return self._window

    @property
    def window_started(self):
        """When the current window started (clock seconds), without reading the queue."""
        return self._window.started

    def reset(self, counters=None):
        """Starts a new window (from ``counters``, or the counters read now); batches still queued
        belonged to the previous one."""
        counters = counters if counters is not None else sampler.read_counters()
        with self._read_lock:
            with self._queued:
                self._queue, self._queue_records = [], 0
            with self._lock:
                self._window = _Window(self._clock(), counters, rusage=_rusage())
                self._pending.clear()
                self._follow_level = 0
                self._last_counters = counters

    def after_fork_child(self):
        """In a forked child: no worker thread, and the locks may have been held by a thread the
        child does not have."""
        self._new_locks()

    def sink(self, records, base_us):
        """Drainer sink: queues a copy of the batch for the worker thread, or reads it when none
        runs."""
        if len(records) == 0:
            return
        with self._queued:
            if self._worker is not None:
                if self._queue_records + len(records) > _MAX_QUEUED_RECORDS:
                    self.batches_skipped += 1
                    return
                first = not self._queue
                if first:
                    self._queued_since = time.monotonic()
                self._queue.append((concatenate_records([records]), base_us))
                before, self._queue_records = self._queue_records, self._queue_records + len(records)
                # Wake the worker only when that changes what it waits for: the first batch sets
                # its deadline, crossing the size threshold ends the wait. (Each wake-up of a
                # thread that needs the GIL is a forced switch of the application's thread.)
                if first or before < self.read_at_records <= self._queue_records:
                    self._queued.notify()
                return
        self.read_queued()
        with self._read_lock:
            self._read_batch(records, base_us)

    def start_worker(self):
        """Starts the worker thread, once: thread start-up allocates before the thread can tell the
        sampler to ignore it, so it happens here, with the optimizer, not whenever a batch comes."""
        with self._queued:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="memscope-recognizer", daemon=True)
                self._worker.start()

    def close(self):
        """Ends the worker thread after it has read the queue; later batches are read by sink()."""
        with self._queued:
            worker, self._worker = self._worker, None
            self._queued.notify_all()
        if worker is not None and worker is not threading.current_thread():
            try:
                worker.join(10.0)
            except RuntimeError:  # start_worker() was interrupted before the thread said it runs:
                pass              # it finds itself closed when it looks and ends

    def _work(self):
        sampler.ignore_this_thread()
        me = threading.current_thread()
        while True:
            with self._queued:
                while self._worker is me:
                    wait_s = self._read_due_in()
                    if wait_s == 0.0:
                        break
                    self._queued.wait(wait_s)
                if not self._queue:  # closed
                    return
            try:
                self.read_queued()
            except Exception:  # the tracked application must never see our failures
                log.exception("memscope workload recognizer failed on a batch of records")

    def read_soon(self):
        """Makes the worker read what is queued now, on its own thread (no wait here)."""
        with self._queued:
            self._read_now = True
            self._queued.notify()

    def _read_due_in(self):
        """Seconds until the queue is due for the worker's read: 0.0 now, None while it is empty.
        Call with ``_queued`` held."""
        if not self._queue:
            self._read_now = False
            return None
        if self._queue_records >= self.read_at_records or self._read_now:
            self._read_now = False
            return 0.0
        return max(0.0, self._queued_since + self.read_every_s - time.monotonic())

    def read_queued(self):
        """Reads every queued batch into the window, as one batch: in the order they were drained,
        with their times on the earliest batch's base. Batches that queued up while the previous
        read ran are thus read together, and a read's fixed cost (a few dozen numpy calls, each a
        possible GIL handoff) is paid once for them, without making any batch wait longer."""
        with self._read_lock:
            with self._queued:
                batches, self._queue, self._queue_records = self._queue, [], 0
            if not batches:
                return
            bases = [base for _, base in batches]
            base_us = min(bases)
            if len(batches) == 1 or max(bases) - base_us >= 1 << 31:  # (u32 deltas: 35 minutes)
                for records, base in batches:
                    self._read_batch(records, base)
                return
            records = concatenate_records([r for r, _ in batches])
            shift = np.repeat(np.array(bases, np.int64) - base_us, [len(r) for r, _ in batches])
            records["time_delta_us"] = (records["time_delta_us"].astype(np.int64) + shift).astype(np.uint32)
            self._read_batch(records, base_us)

    def _read_batch(self, records, base_us):
        """Reads one batch. Vectorized: its cost is a few numpy passes and sorts of the batch and a
        few probe rounds of the pending allocations, a bounded number of Python operations whatever
        the batch size."""
        times = base_us + records["time_delta_us"].astype(np.int64)
        frees = (records["flags"] & EVENT_MASK) == (1 << EVENT_SHIFT)  # every other event allocates
        allocs = np.flatnonzero(~frees)  # (indices: .take() is several times faster than a mask)
        with self._lock:
            w = self._window
            if w.n_times < _MAX_TIMES:
                w.times.append(times)
                w.n_times += len(times)
            seen = np.bincount(records["thread"]) > 0
            w.threads[:len(seen)] |= seen
            w.site_ids, w.site_weights = _add_site_weights(
                w.site_ids, w.site_weights, records["site"].take(allocs), records["weight"].take(allocs))
            addresses = records["address"]
            level = max(self._follow_level, follow_level(len(records)))
            if level > self._follow_level:
                self._follow_level = level
                self._pending.keep_followed(level)
            if level:
                kept = np.flatnonzero(followed(addresses, level))
                addresses, times, frees = addresses.take(kept), times.take(kept), frees.take(kept)
            w.allocs_followed += len(frees) - int(np.count_nonzero(frees))
            lifetimes, freed_at = match_lifetimes(addresses, times, frees, self._pending)
            room = _MAX_LIFETIMES - w.n_lifetimes
            if len(lifetimes) > room:  # keep the earliest frees, as a record-by-record pass would
                lifetimes = lifetimes[np.argsort(freed_at, kind="stable")[:max(room, 0)]]
            if len(lifetimes):
                w.lifetimes.append(lifetimes)
                w.n_lifetimes += len(lifetimes)

    def observe(self, counters):
        """Feeds one snapshot's exact counters."""
        with self._lock:
            if self._window.counters is None:
                self._window.counters = counters
            self._last_counters = counters
            self._window.max_threads_live = max(self._window.max_threads_live, counters.threads_live)

    def features(self, counters=None, read_queue=True):
        """The window's features (a dict of floats), from ``counters`` (default: the last observed).
        With ``read_queue`` false, from the batches read so far (the worker's are at most
        :attr:`read_every_s` behind): no read on the caller's thread."""
        if read_queue:
            self.read_queued()
        with self._lock:
            w = self._window
            c1 = counters if counters is not None else self._last_counters
            c0 = w.counters
            if c0 is None or c1 is None:
                return None
            elapsed = max(self._clock() - w.started, 1e-9)
            allocations = c1.allocations.astype(np.float64) - c0.allocations
            nbytes = c1.bytes.astype(np.float64) - c0.bytes
            by_size = (c1.by_size.astype(np.float64) - c0.by_size).sum(axis=0)
            frees = float((c1.deallocations.astype(np.float64) - c0.deallocations).sum())
            times = np.sort(np.concatenate(w.times)) if w.times else np.zeros(0, np.int64)
            lifetimes = np.concatenate(w.lifetimes).astype(np.float64) if w.lifetimes else np.zeros(0)
            site_weight = dict(zip(w.site_ids.tolist(), w.site_weights.tolist()))
            threads = int(np.count_nonzero(w.threads))
            allocs_followed = w.allocs_followed
            max_threads_live = max(w.max_threads_live, c1.threads_live)
            rusage0 = w.rusage
        rusage1 = _rusage()
        total = max(allocations.sum(), 1.0)
        total_bytes = max(nbytes.sum(), 1.0)
        buckets = np.arange(len(by_size))
        span_us = float(times[-1] - times[0]) if len(times) > 1 else 0.0
        gaps = np.diff(times) if len(times) > 1 else np.zeros(0)
        idle = float(gaps[gaps > _IDLE_GAP_US].sum()) / span_us if span_us > 0 else 0.0
        period_ms, frame_clock = _frame_clock(times)
        network = array = 0.0
        weight_total = sum(site_weight.values()) or 1.0
        if self._resolve is not None:
            for site_id, weight in site_weight.items():
                try:
                    site = self._resolve(int(site_id))
                except Exception:
                    continue
                parts = _module_parts(getattr(site, "file", ""))
                if parts.intersection(NETWORK_MODULES):
                    network += weight
                if parts.intersection(ARRAY_MODULES):
                    array += weight
        return {
            "elapsed_s": elapsed,
            "alloc_rate": float(allocations.sum()) / elapsed,
            "bytes_rate": float(nbytes.sum()) / elapsed,
            "mean_size": float(nbytes.sum()) / total,
            "tiny_fraction": float(by_size[buckets <= 6].sum()) / total,  # <= 64 B
            "medium_fraction": float(allocations[:, 1].sum()) / total,
            "large_fraction": float(allocations[:, 2].sum()) / total,
            "large_byte_fraction": float(nbytes[:, 2].sum()) / total_bytes,
            "raw_fraction": float(allocations[2].sum()) / total,
            "free_ratio": frees / total,
            "threads_active": float(threads),
            "threads_live": float(max_threads_live),
            "idle_fraction": idle,
            "frame_period_ms": period_ms,
            "frame_clock": frame_clock,
            "short_lived_fraction": float((lifetimes < 1000).mean()) if len(lifetimes) else 0.0,
            "median_lifetime_us": float(np.median(lifetimes)) if len(lifetimes) else 0.0,
            "freed_fraction": len(lifetimes) / max(allocs_followed, 1),
            "network_site_fraction": network / weight_total,
            "array_site_fraction": array / weight_total,
            "sites": float(len(site_weight)),
            "voluntary_switch_rate": (rusage1[0] - rusage0[0]) / elapsed,
            "involuntary_switch_rate": (rusage1[1] - rusage0[1]) / elapsed,
            "cpu_share": (rusage1[2] - rusage0[2]) / elapsed,
            # Allocations per second of CPU the process got: unlike alloc_rate, the same on an idle
            # and on a saturated machine.
            "alloc_per_cpu_s": float(allocations.sum()) / max(rusage1[2] - rusage0[2], 1e-3),
            # Of the times the process stopped running, how often it chose to (sleep, wait for
            # I/O) rather than being preempted: near 1 for a loop that sleeps to its next frame,
            # near 0 for a busy loop, even on a machine so loaded that it runs only half the time.
            "voluntary_fraction": (rusage1[0] - rusage0[0])
            / max((rusage1[0] - rusage0[0]) + (rusage1[1] - rusage0[1]), 1),
            "records": float(len(times)),
        }


# The rules, in the order they are tried; the first whose every condition holds names the workload.
# Each condition is (feature, ">=" or "<=", threshold). Thresholds sit between the figures measured
# on the demo workloads (docs/optimizer.md, `python benchmarks/optimizer.py features`), with room
# for a machine several times slower or busier.
RULES = (
    # Request handling shows up as allocations made inside the socket/HTTP/WSGI machinery.
    ("web_server", (("network_site_fraction", ">=", 0.25),)),
    ("web_server", (("network_site_fraction", ">=", 0.08), ("threads_active", ">=", 3))),
    # Array math: most bytes in large blocks, most sampled weight at few sites, arrays' own frames.
    ("ml_training", (("large_byte_fraction", ">=", 0.5), ("mean_size", ">=", 300),
                     ("array_site_fraction", ">=", 0.03))),
    ("ml_training", (("large_byte_fraction", ">=", 0.5), ("mean_size", ">=", 600))),
    # A frame loop: bursts of work locked to a frame clock (10 to 200 fps), sleeping in between.
    # Idle time read from record gaps alone is unreliable on a busy machine (preemption makes
    # gaps too), so the process's own CPU share and context switches confirm the sleeping.
    # At least a few thousand allocations/s: an idle process's own periodic exports (the metric
    # reader's thread allocates at each collection) also make regular bursts.
    ("game_loop", (("alloc_rate", ">=", 5000), ("idle_fraction", ">=", 0.7), ("frame_clock", ">=", 0.5),
                   ("voluntary_fraction", ">=", 0.4), ("cpu_share", "<=", 0.5))),
    # Batch transformation: a busy thread allocating many small, short-lived objects. Busy shows as
    # a CPU share well above a frame loop's, or, on a machine so loaded that the process runs a
    # third of the time or less, as being stopped mostly by preemption rather than by choice.
    ("data_processing", (("alloc_per_cpu_s", ">=", 500_000), ("mean_size", "<=", 256),
                         ("large_byte_fraction", "<=", 0.5), ("cpu_share", ">=", 0.25))),
    ("data_processing", (("alloc_per_cpu_s", ">=", 500_000), ("mean_size", "<=", 256),
                         ("large_byte_fraction", "<=", 0.5), ("voluntary_fraction", "<=", 0.5))),
)

MIN_RECORDS = 100  # fewer sampled records than this: not enough evidence, "generic"


def classify(features):
    """(workload, reasons) for a feature dict from :meth:`WorkloadRecognizer.features`.

    ``reasons`` lists the conditions that held for the chosen rule (or why none did)."""
    if not features or features.get("records", 0) < MIN_RECORDS:
        return "generic", [f"only {int((features or {}).get('records', 0))} sampled records "
                           f"(need {MIN_RECORDS})"]
    for workload, conditions in RULES:
        reasons = []
        for name, op, threshold in conditions:
            value = features.get(name, 0.0)
            if not (value >= threshold if op == ">=" else value <= threshold):
                break
            reasons.append(f"{name} {value:.3g} {op} {threshold:g}")
        else:
            return workload, reasons
    return "generic", ["no rule matched"]


# ---------------------------------------------------------------------------------------------
# Recommendations and the optimizer
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recommendation:
    """One proposed change: ``setting`` (the config keyword), ``current`` -> ``proposed``, what it
    does, why (the observed figures), its expected effect on overhead and on the estimates'
    relative error, and whether it can be applied to the running tracker (``live``) or needs a
    restart with the environment variable set."""

    setting: str
    current: object
    proposed: object
    what: str
    why: str
    expected_overhead: str
    expected_error: str
    live: bool = True

    @property
    def env_var(self):
        """The environment variable of the setting, for a restart."""
        return "OTEL_PYTHON_MEMSCOPE_" + self.setting.upper()

    def __str__(self):
        where = "" if self.live else f" (restart with {self.env_var}={self.proposed})"
        return (f"{self.setting}: {self.current} -> {self.proposed}{where}\n  what: {self.what}\n  why: {self.why}\n"
                f"  overhead: {self.expected_overhead}\n  error: {self.expected_error}")


def relative_error(n, rate, frequency_interval):
    """Relative standard error of a Horvitz-Thompson count estimate of ``n`` allocations sampled
    at ``rate`` (the frequency slots, 1 in ``frequency_interval``, are sampled for certain)."""
    if n <= 0 or rate <= 0:
        return float("inf")
    random_part = 1.0 - (1.0 / frequency_interval if frequency_interval else 0.0)
    return math.sqrt(random_part * (1.0 - rate) / (n * rate))


class PerformanceOptimizer:
    """Runs the pressure monitor, the rate controller and the workload recognizer on a tracker.

    Started with the tracker when ``OTEL_PYTHON_MEMSCOPE_ADAPTIVE`` is true (``tracker.optimizer``);
    with adaptive false it may still be created to recognize the workload and recommend, but the
    rates stay fixed. ``export_interval_s`` defaults to OTEL_METRIC_EXPORT_INTERVAL (60 s when
    unset, as in the SDK): a reader whose interval is set in code rather than in that variable
    should get the same value here (or in the variable), or the cadence drift is misread."""

    RECOGNITION_WINDOW_S = 60.0   # features are read over windows this long
    RECOGNITION_MIN_S = 1.0       # ... and a window this young is not classified yet
    RECOGNITION_EVERY_S = 5.0     # classify at most this often

    def __init__(self, tracker, export_interval_s=None, adaptive=None):
        config = tracker.config
        self.tracker = tracker
        self.adaptive = config.adaptive if adaptive is None else adaptive
        self.monitor = PressureMonitor(
            export_interval_s if export_interval_s is not None else export_interval_from_env(),
            config.drain_interval_ms / 1000.0, config.max_records_per_thread, self._collection_stats)
        high, low = config.optimizer_high_water, config.optimizer_low_water
        if not low < high:
            log.warning("OTEL_PYTHON_MEMSCOPE_OPTIMIZER_LOW_WATER=%s must be below "
                        "OTEL_PYTHON_MEMSCOPE_OPTIMIZER_HIGH_WATER=%s; using the defaults 0.3 and 0.6", low, high)
            high, low = 0.6, 0.3
        self.controller = RateController(
            config.medium_sample_rate, config.small_sample_rate, high_water=high, low_water=low,
            floor=config.optimizer_rate_floor, enabled=self.adaptive)
        self.recognizer = WorkloadRecognizer(self._resolve)
        self.workload = "generic"
        self.features = None
        self.reasons = ["not classified yet"]
        self._rates_per_s = None  # exact allocation rates by class over the last collection
        self._last = None
        self._classified_at = -math.inf
        self._running = False
        self._lock = threading.Lock()  # a snapshot() call can race a collection

    # -- wiring --

    def _resolve(self, site_id):
        return self.tracker.resolver.resolve(site_id)

    def _collection_stats(self):
        producer = getattr(self.tracker, "producer", None)
        if producer is None:
            return 0, 0
        return getattr(producer, "collection_ns", 0), getattr(producer, "collection_points", 0)

    def start(self):
        """Starts observing the tracker's snapshots and records."""
        if self._running:
            return
        self._running = True
        self.monitor.start()
        self.recognizer.reset()
        self.attach_drainer(self.tracker.drainer)
        self.tracker.listeners.append(self.on_snapshot)

    def attach_drainer(self, drainer):
        """Adds the recognizer's sink to ``drainer``."""
        self.recognizer.start_worker()
        if self.recognizer.sink not in drainer.sinks:
            drainer.sinks.append(self.recognizer.sink)

    def after_fork_child(self, drainer):
        """In a forked child: the counters start again from zero and the drainer is new. The lock
        is made anew: a snapshot in another thread of the parent may have held it at fork()."""
        self._lock = threading.Lock()
        self.monitor.reset()
        self._last = None
        self.recognizer.after_fork_child()
        self.recognizer.reset()
        self.attach_drainer(drainer)

    def stop(self):
        """Stops observing (a later start of the sampler begins again at the configured rates)."""
        if not self._running:
            return
        # Every step may run again: a stop() cut short by a signal is finished by the next one.
        self.monitor.stop()
        if self.on_snapshot in self.tracker.listeners:
            self.tracker.listeners.remove(self.on_snapshot)
        if self.recognizer.sink in self.tracker.drainer.sinks:
            self.tracker.drainer.sinks.remove(self.recognizer.sink)
        self.recognizer.close()
        self._running = False

    @property
    def pressure(self):
        """The latest pressure reading's value in [0, 1] (0 before the second collection)."""
        latest = self.monitor.latest
        return latest.value if latest is not None else 0.0

    def on_snapshot(self, snap):
        """Tracker listener: one metric collection happened."""
        with self._lock:
            self._on_snapshot(snap)

    def _on_snapshot(self, snap):
        now = time.monotonic()
        if self._last is not None:
            t0, c0 = self._last
            gap = max(now - t0, 1e-9)
            self._rates_per_s = (snap.counters.allocations.astype(np.float64) - c0.allocations).sum(axis=0) / gap
        self._last = (now, snap.counters)
        pressure = self.monitor.observe(snap.counters)
        self.controller.step(pressure, snap.counters)
        self.recognizer.observe(snap.counters)
        self._update_workload(snap.counters)

    def _update_workload(self, counters):
        now = time.monotonic()
        age = now - self.recognizer.window_started
        # Classifying costs a few ms (the frame-clock search): not at every collection.
        if age < self.RECOGNITION_MIN_S or now - self._classified_at < self.RECOGNITION_EVERY_S:
            return
        self._classified_at = now
        # From the batches the worker has read: a read here would run inside the collection (its
        # numpy calls each a possible GIL take-back, counted in collection_cost). The worker
        # then reads what is queued, for the next classification.
        features = self.recognizer.features(counters, read_queue=False)
        self.recognizer.read_soon()
        if features is not None and features["records"] >= MIN_RECORDS:
            workload, reasons = classify(features)
            if workload != self.workload:
                log.debug("memscope workload: %s -> %s (%s)", self.workload, workload, "; ".join(reasons))
            self.workload, self.features, self.reasons = workload, features, reasons
        if age >= self.RECOGNITION_WINDOW_S:
            self.recognizer.reset(counters)

    def recognize(self):
        """Classifies the current window now: (workload, features, reasons)."""
        self.tracker.refresh()  # drains, so the sink has seen every record
        features = self.recognizer.features()
        workload, reasons = classify(features)
        self.workload, self.features, self.reasons = workload, features, reasons
        return workload, features, reasons

    # -- recommendations --

    def get_optimization_recommendations(self):
        """What to change, why, and the expected effect, from the figures observed so far."""
        config = self.tracker.config
        medium, small = sampler.rates()
        t_medium, t_small = self.controller.target
        pressure = self.monitor.latest
        figures = pressure.figures if pressure is not None else {}
        per_s = self._rates_per_s if self._rates_per_s is not None else np.zeros(3)
        slow_ns = figures.get("slow_path_ns_per_record", 0.0) or 0.0
        freq = config.frequency_sample_interval
        n10 = self._tenth_site_count()
        recs = []

        def small_rate_change(new, why):
            delta_records = per_s[0] * (1 - (1 / freq if freq else 0)) * (new - small)
            share = delta_records * slow_ns / 1e9
            before, after = relative_error(n10, small, freq), relative_error(n10, new, freq)
            recs.append(Recommendation(
                "small_sample_rate", _fmt(t_small), _fmt(new),
                f"{'lower' if new < small else 'raise'} the small-allocation sampling rate",
                why,
                f"{delta_records:+.0f} records/s, {share:+.2%} of a core in the sampled path "
                f"({slow_ns:.0f} ns per record)",
                f"relative error of the 10th-largest site (about {n10:.0f} allocations): "
                f"{before:.1%} -> {after:.1%}"))

        # 1. Pressure: lower what dominates the records.
        if pressure is not None and self.controller.smoothed > self.controller.low_water:
            new = max(small / 4, t_small * self.controller.floor)
            if new < small:
                small_rate_change(new, f"pressure {self.controller.smoothed:.2f} ({pressure.reason()})")
        # 2. Drops: drain before a ring fills.
        if figures.get("drop_fraction", 0) > 0:
            per_drain = figures["records_per_s"] * config.drain_interval_ms / 1000.0
            new_ms = max(10, int(config.drain_interval_ms * 0.5 * config.max_records_per_thread / max(per_drain, 1)))
            if new_ms < config.drain_interval_ms:
                recs.append(Recommendation(
                    "drain_interval_ms", config.drain_interval_ms, new_ms,
                    "drain the ring buffers more often",
                    f"{figures['drop_fraction']:.2%} of records were dropped: {figures['records_per_s']:.0f} "
                    f"records/s against rings of {config.max_records_per_thread} records",
                    f"{1000 / new_ms - 1000 / config.drain_interval_ms:+.1f} drains/s (each a C call per thread)",
                    "no more drops: dropped records are lost weight, a downward bias of the estimates"))
        # 3. Series: fewer per-site series when the collection is large or slow.
        series = figures.get("series", 0)
        if series > SERIES_BUDGET / 2 or pressure is not None and pressure.components.get("collection_cost", 0) > 0.5:
            new_sites = max(5, config.max_sites // 2)
            if new_sites < config.max_sites:
                recs.append(Recommendation(
                    "max_sites", config.max_sites, new_sites, "export fewer per-site series",
                    f"{series} points per collection; collection took {figures.get('collection_s', 0) * 1000:.1f} ms",
                    f"about {4 * (config.max_sites - new_sites)} fewer points per export",
                    "site totals are unchanged; the sites past the top fold into the 'other' series"))
        # 4. Headroom: buy accuracy when it is cheap.
        if (pressure is not None and self.controller.smoothed < self.controller.low_water
                and figures.get("hooks", 0) < 0.25 and small >= t_small and small < 1.0
                and relative_error(n10, small, freq) > 0.10 and per_s[0] * small * 2 * slow_ns / 1e9 < 0.01):
            small_rate_change(min(small * 2, 1.0), f"pressure {self.controller.smoothed:.2f} is low and the "
                              f"10th-largest site's estimate has a relative error of "
                              f"{relative_error(n10, small, freq):.0%}")
        # 5. The workload's own shape (one recommendation per setting: the general one wins).
        seen = {r.setting for r in recs}
        recs.extend(r for r in self._workload_recommendations(config, small, t_small, per_s, figures, slow_ns, freq,
                                                              n10) if r.setting not in seen)
        return recs

    def _workload_recommendations(self, config, small, t_small, per_s, figures, slow_ns, freq, n10):
        f = self.features or {}
        recs = []
        if self.workload == "ml_training" and f.get("large_byte_fraction", 0) >= 0.5 and small > t_small / 4 * 1.001:
            new = small / 4
            recs.append(Recommendation(
                "small_sample_rate", _fmt(t_small), _fmt(new), "sample small allocations less",
                f"ml_training: {f['large_byte_fraction']:.0%} of the bytes are in large blocks, which are always "
                f"sampled; small allocations are {1 - f.get('large_fraction', 0) - f.get('medium_fraction', 0):.0%} "
                f"of the requests but little of the memory",
                f"{per_s[0] * (new - small):+.0f} records/s, {per_s[0] * (new - small) * slow_ns / 1e9:+.2%} of a core",
                f"byte estimates barely move (large blocks are exact); small-site counts: "
                f"{relative_error(n10, small, freq):.1%} -> {relative_error(n10, new, freq):.1%}"))
        if self.workload == "data_processing" and freq and 0 < freq < 10000 and per_s[0] / freq > per_s[0] * small:
            recs.append(Recommendation(
                "frequency_sample_interval", freq, freq * 10, "take fewer frequency-guarantee samples",
                f"data_processing at {f.get('alloc_rate', 0):.0f} allocations/s: one in {freq} is sampled for "
                f"certain, more records than the small rate {small:g} takes",
                f"{-per_s[0] / freq * 0.9:+.0f} records/s, {-per_s[0] / freq * 0.9 * slow_ns / 1e9:+.2%} of a core",
                "unbiased either way; rare sizes are seen a little less often",
                live=False))
        if self.workload == "web_server" and f.get("threads_live", 0) >= 4:
            per_thread = figures.get("records_per_s", 0) * config.drain_interval_ms / 1000.0 / max(f["threads_live"], 1)
            new_cap = max(1024, 1 << int(math.ceil(math.log2(max(per_thread * 8, 1)))))
            if new_cap < config.max_records_per_thread:
                recs.append(Recommendation(
                    "max_records_per_thread", config.max_records_per_thread, new_cap,
                    "smaller ring buffers per thread",
                    f"web_server with {f['threads_live']:.0f} threads, each writing about {per_thread:.0f} records "
                    f"per drain interval into a ring of {config.max_records_per_thread}",
                    f"{(config.max_records_per_thread - new_cap) * 32 * f['threads_live'] / 1e6:.1f} MB less memory",
                    "unchanged while no records are dropped (watch memscope.sampler.dropped)",
                    live=False))
        if self.workload == "game_loop" and f.get("frame_period_ms", 0) > 0:
            frame_ms = f["frame_period_ms"]
            hook_ms = figures.get("hook_share", 0) * frame_ms
            if hook_ms > 0.01 * frame_ms and small > t_small * self.controller.floor * 1.001:
                new = max(small / 2, t_small * self.controller.floor)
                recs.append(Recommendation(
                    "small_sample_rate", _fmt(t_small), _fmt(new), "sample small allocations less",
                    f"game_loop: the hooks take about {hook_ms:.3f} ms of each {frame_ms:.1f} ms frame",
                    f"{per_s[0] * (new - small) * slow_ns / 1e6 * frame_ms / 1000:+.3f} ms per frame",
                    f"{relative_error(n10, small, freq):.1%} -> {relative_error(n10, new, freq):.1%} for the "
                    f"10th-largest site"))
        return recs

    def _tenth_site_count(self):
        counts = np.sort(self.tracker.summary.id_count)[::-1]
        counts = counts[counts > 0]
        return float(counts[min(9, len(counts) - 1)]) if len(counts) else 0.0

    def apply_optimizations(self, recommendations):
        """Applies the live recommendations to the running tracker; returns those applied. The
        others are logged with the environment variable and value that a restart would need."""
        applied = []
        for rec in recommendations:
            if not rec.live:
                log.info("memscope: %s needs a restart: set %s=%s", rec.setting, rec.env_var, rec.proposed)
                continue
            value = float(rec.proposed) if "rate" in rec.setting else int(rec.proposed)
            if rec.setting == "small_sample_rate":
                self.controller.set_target(self.controller.target[0], value)
            elif rec.setting == "medium_sample_rate":
                self.controller.set_target(value, self.controller.target[1])
            elif rec.setting == "drain_interval_ms":
                self.tracker.drainer.interval_s = value / 1000.0
                self.monitor.drain_interval_s = value / 1000.0
            elif rec.setting == "max_sites":
                self.tracker.producer.set_max_sites(value)
            else:
                log.warning("memscope: cannot apply %s live", rec.setting)
                continue
            log.info("memscope: applied %s %s -> %s (%s)", rec.setting, rec.current, rec.proposed, rec.why)
            applied.append(rec)
        return applied


def _fmt(rate):
    return float(f"{rate:.6g}")
