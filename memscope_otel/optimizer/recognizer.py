"""The workload recognizer: features from the counters and the record stream (its own worker
thread reads the drained batches), classified by :data:`RULES` (see :func:`classify`)."""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time

import numpy as np

from .. import sampler
from ..cpu_meter import CpuMeter
from ..records import DOMAINS, EVENT_MASK, EVENT_SHIFT, RECORD_DTYPE, concatenate_records
from .features import ARRAY_MODULES, NETWORK_MODULES, Window, _module_parts, _rusage

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# Records waiting for the recognizer's worker (4 MiB, its largest part): beyond it, batches skip
# the recognizer (counted) rather than hold up the drainer or grow without bound.
_MAX_QUEUED_RECORDS = 131072
# The worker reads the queue when it holds this many records, or when its oldest batch has waited
# this long: every read costs the application a forced GIL switch or two whatever its size (the
# worker's wake-up, and taking the GIL back after the read, which runs in C without it; see
# WorkloadRecognizer), and a classification asks for a read itself (read_soon) right after it has
# used the window. Reading at 8,192 records instead (a read every 2 s at the budget) was tried
# with the reads in C: the tracker's RSS after benchmarks/memory.py's program came out higher
# (+9.5 MB against +5.5 and +6.8 in two runs at 65,536), as its allocations interleaved more with
# the program's.
_READ_AT_RECORDS = _MAX_QUEUED_RECORDS // 2
_READ_EVERY_S = 30.0
# Records a second the recognizer reads, at most: past it, the records of 1 in 2**level of all
# addresses, the level rising (within a window) until the stream fits (see csrc/follow.c). Its
# features are shares, gaps and lifetimes, which this many estimate well; the queue's copies and
# the reads grow with the records, which reach 470,000 a second in a busy text-processing loop.
_READ_BUDGET_PER_S = 4096
# ... but the first records of a window are all read, however fast they come: a short window (a
# test's, or the first seconds of a process) keeps enough of them to be classified (MIN_RECORDS).
_READ_ALL_FIRST = 16384

WORKLOADS = ("web_server", "data_processing", "game_loop", "ml_training", "generic")

# The domains of Python objects and the interpreter's own buffers. Their sizes describe the
# program's Python-level work whatever else is hooked: array data lands in `native` (numpy <= 2.4)
# or `raw` (numpy 2.5), or nowhere when `native` is off, and moves mean sizes by orders of magnitude.
_OBJECT_DOMAINS = [DOMAINS.index("obj"), DOMAINS.index("mem")]


class WorkloadRecognizer:
    """Collects workload features from the exact counters and the record stream, and classifies.

    Make it the drainer's ``follower`` (or attach :meth:`sink` as a sink: it then sees every
    drained record) and call :meth:`observe` with
    each snapshot's counters; :meth:`features` and :meth:`classify` read the current window, which
    :meth:`reset` restarts. ``resolve`` maps a site id to a :class:`memscope_otel.sites.Site`.

    While :meth:`start_worker` has a worker thread running (the optimizer starts it with itself),
    the sink only queues a copy of each batch and the worker reads them; otherwise sink() reads the
    batch itself. Reading is one call into C (the window, csrc/window.c) that gives the GIL up
    while it runs; while the application keeps the GIL busy, getting it back costs up to the
    interpreter's switch interval (5 ms), and the application a forced switch. On the drainer's
    thread that would be at every drain (5 a second), and the drainer would be away from the rings
    meanwhile; the worker pays it at each wake-up and read instead, and reads the queue only
    every :attr:`read_every_s` seconds (30), or as soon as the queue holds
    :attr:`read_at_records` records (65,536). :attr:`window`
    and :meth:`features` first read whatever is queued, so they see every batch drained before
    the call (``features(read_queue=False)``, the optimizer's classification inside a collection,
    does not)."""

    def __init__(self, resolve=None, clock=None):
        self._resolve = resolve
        self._clock = clock or time.monotonic
        # The sink's level (it queues the records of 1 in 2**level addresses; the window's follow
        # level rises to it as its batches are read), and the records offered to it since the
        # window started.
        # Under _queued.
        self._sink_level = 0
        self._sink_offered = 0
        ffi, lib = sampler._lib()
        self._follow_c = sampler.keeping_the_gil(ffi, lib, "ms_records_follow", ctypes.c_size_t, ctypes.c_void_p,
                                                 ctypes.c_size_t, ctypes.c_uint32, ctypes.c_void_p)
        self._last_counters = None
        self._window = Window(self._clock(), rusage=_rusage())
        self.batches_skipped = 0  # batches the queue had no room for
        self._read_failed = False  # a read could not keep everything (reported once)
        self.read_every_s = _READ_EVERY_S  # the worker's cadence (see _READ_AT_RECORDS)
        self.read_at_records = _READ_AT_RECORDS
        self.read_budget_per_s = _READ_BUDGET_PER_S  # (see _reading_level)
        # CPU time reading batches and computing features, on any thread (a pressure signal:
        # it grows with the records, so with the rates; and memscope.tracker.cpu's "recognizer").
        self.cpu = CpuMeter()
        self._new_locks()

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
                self._sink_level, self._sink_offered = 0, 0
            with self._lock:
                self._window = Window(self._clock(), counters, rusage=_rusage())
                self._last_counters = counters

    def after_fork_child(self):
        """In a forked child: no worker thread, and the locks may have been held by a thread the
        child does not have."""
        self._new_locks()

    def sink(self, records, base_us, level=0):
        """Drainer sink: queues a copy of the batch (at most _READ_BUDGET_PER_S records a second
        of it, see _reading_level) for the worker thread, or reads it when none runs. ``level``:
        the batch is the records followed at that level already, weights scaled (the mover's
        subsample, see keep_level)."""
        if len(records) == 0:
            return
        given = level
        with self._queued:
            level = max(self._reading_level(len(records) << given), given)
        records = self._followed_copy(records, level, given)
        with self._queued:
            if self._worker is not None:
                if self._queue_records + len(records) > _MAX_QUEUED_RECORDS:
                    self.batches_skipped += 1
                    return
                first = not self._queue
                if first:
                    self._queued_since = time.monotonic()
                self._queue.append((records, base_us, level))
                before, self._queue_records = self._queue_records, self._queue_records + len(records)
                # Wake the worker only when that changes what it waits for: the first batch sets
                # its deadline, crossing the size threshold ends the wait. (Each wake-up of a
                # thread that needs the GIL is a forced switch of the application's thread.)
                if first or before < self.read_at_records <= self._queue_records:
                    self._queued.notify()
                return
        self.read_queued()
        with self._read_lock:
            self._read_batch(records, base_us, level)

    def _reading_level(self, n):
        """The level to read a batch of ``n`` records at: 0 for the first _READ_ALL_FIRST records of
        the window, then the lowest that keeps the records offered since the window started (over
        a second at least) within ``read_budget_per_s``, and never
        lower than an earlier batch's of the window (a block allocated in one batch and freed in
        a later one is kept or left whole). Call with ``_queued`` held."""
        self._sink_offered += n
        if self._sink_offered <= _READ_ALL_FIRST:
            return self._sink_level
        elapsed = max(self._clock() - self._window.started, 1.0)
        over = self._sink_offered / elapsed / self.read_budget_per_s
        needed = math.ceil(math.log2(over)) if over > 1.0 else 0
        self._sink_level = max(self._sink_level, min(needed, 32))
        return self._sink_level

    def keep_level(self):
        """The level of the subsample the drainer's mover should keep for this recognizer's sink
        (see Drainer.follower): its reading level now, 0 at the start of a window."""
        with self._queued:
            return self._sink_level

    def _followed_copy(self, records, level, given=0):
        """A new array of the records followed at ``level``, weights scaled (csrc/follow.c), from
        records followed at ``given`` <= ``level`` already."""
        records = concatenate_records([records])
        if level == given:
            return records
        if given:  # (the hash is nested: followed at `level` is a subset of followed at `given`)
            records["weight"] *= np.float32(2.0 ** -given)  # (a power of two: exact)
        # Subsampled in place, in the copy (out may be in: see ms_records_follow), rather than
        # through a scratch array that would stay allocated between drains.
        kept = self._follow_c(records.ctypes.data, len(records), level, records.ctypes.data)
        return records if kept == len(records) else concatenate_records([records[:kept]])

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
        read ran are thus read together, and a read's GIL handoff is paid once for them, without
        making any batch wait longer."""
        with self.cpu.measure():
            self._read_queued()

    def _read_queued(self):
        with self._read_lock:
            with self._queued:
                batches, self._queue, self._queue_records = self._queue, [], 0
            if not batches:
                return
            bases = [base for _, base, _ in batches]
            base_us = min(bases)
            if len(batches) == 1 or max(bases) - base_us >= 1 << 31:  # (u32 deltas: 35 minutes)
                for records, base, level in batches:
                    self._read_batch(records, base, level)
                return
            records = concatenate_records([r for r, _, _ in batches])
            shift = np.repeat(np.array(bases, np.int64) - base_us, [len(r) for r, _, _ in batches])
            records["time_delta_us"] = (records["time_delta_us"].astype(np.int64) + shift).astype(np.uint32)
            self._read_batch(records, base_us, max(level for _, _, level in batches))

    def _read_batch(self, records, base_us, level=0):
        """Reads one batch, of the records followed at ``level`` (weights scaled already; see
        sink), into the window: one call into C (csrc/window.c), which gives the GIL up while it
        runs (one handoff per read, whatever its size)."""
        with self._lock:
            window = self._window
        if not window.read(records, base_us, level) and not self._read_failed:
            self._read_failed = True
            log.warning("memscope workload recognizer: no memory to keep all of a batch of records; "
                        "its features may miss some (reported once)")

    def nbytes(self):
        """Bytes of the recognizer's memory now, by part: ``queue`` (batches waiting for the worker,
        at most 4 MiB), and the window's arrays (csrc/window.c, mapped pages): ``times`` and
        ``lifetimes`` (at most 2 MiB plus a batch and 1 MiB), ``pending`` (allocations whose free
        is awaited: a table of at most 2 MiB), ``sites`` (a table of the sites read) and
        ``threads`` (8 KiB). For benchmarks/memory.py."""
        with self._queued:
            queue = sum(r.nbytes for r, _, _ in self._queue)
        with self._lock:
            window = self._window
        return {"queue": queue, **window.nbytes()}

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
        with self.cpu.measure():
            return self._features(counters, read_queue)

    def _features(self, counters, read_queue):
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
            max_threads_live = max(w.max_threads_live, c1.threads_live)
            rusage0 = w.rusage
        rusage1 = _rusage()
        stats = w.stats(features=True)  # (in C, the GIL given up: a sort and the frame-clock search)
        site_ids, site_weights = w.sites()
        site_weight = dict(zip(site_ids.tolist(), site_weights.tolist()))
        total = max(allocations.sum(), 1.0)
        total_bytes = max(nbytes.sum(), 1.0)
        object_allocations = max(allocations[_OBJECT_DOMAINS].sum(), 1.0)
        buckets = np.arange(len(by_size))
        n_lifetimes = int(stats.n_lifetimes)
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
            "object_mean_size": float(nbytes[_OBJECT_DOMAINS].sum()) / object_allocations,
            "tiny_fraction": float(by_size[buckets <= 6].sum()) / total,  # <= 64 B
            "medium_fraction": float(allocations[:, 1].sum()) / total,
            "large_fraction": float(allocations[:, 2].sum()) / total,
            "large_byte_fraction": float(nbytes[:, 2].sum()) / total_bytes,
            "raw_fraction": float(allocations[DOMAINS.index("raw")].sum()) / total,
            "native_byte_fraction": float(nbytes[DOMAINS.index("native")].sum()) / total_bytes,
            "free_ratio": frees / total,
            "threads_active": float(stats.threads_active),
            "threads_live": float(max_threads_live),
            "idle_fraction": stats.idle_us / stats.span_us if stats.span_us > 0 else 0.0,
            "frame_period_ms": stats.frame_period_us / 1000.0,
            "frame_clock": stats.frame_clock,
            "short_lived_fraction": stats.short_lived,
            "median_lifetime_us": stats.median_lifetime_us,
            "freed_fraction": n_lifetimes / max(int(stats.allocs_followed), 1),
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
            "records": float(stats.n_times),
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
    # Array data that becomes visible (the native domain on numpy <= 2.4) only raises both sizes:
    # the demo's training loop went from 822 to 2,700 B mean, a mini-batch loop from 206 to 5,000.
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
    # On a loaded machine a frame loop is preempted each time it wakes (the particle sandbox: 70 to
    # 100 involuntary switches/s for 35 sleeps/s, a voluntary fraction of 0.26), so a loop that
    # idles nearly all the time on a small CPU share is a frame loop without asking why it stopped.
    # A busy batch job is further from both than preemption takes it (idle 0.5 to 0.8, CPU share
    # 0.25 and up at load average 8 on 2 cores).
    ("game_loop", (("alloc_rate", ">=", 5000), ("idle_fraction", ">=", 0.9), ("frame_clock", ">=", 0.5),
                   ("cpu_share", "<=", 0.15))),
    # Batch transformation: a busy thread allocating many small, short-lived objects (sized in the
    # object domains: a C library's buffers in `native` say nothing about the Python work). Busy shows as
    # a CPU share well above a frame loop's, or, on a machine so loaded that the process runs a
    # third of the time or less, as being stopped mostly by preemption rather than by choice.
    ("data_processing", (("alloc_per_cpu_s", ">=", 500_000), ("object_mean_size", "<=", 256),
                         ("large_byte_fraction", "<=", 0.5), ("cpu_share", ">=", 0.25))),
    ("data_processing", (("alloc_per_cpu_s", ">=", 500_000), ("object_mean_size", "<=", 256),
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
