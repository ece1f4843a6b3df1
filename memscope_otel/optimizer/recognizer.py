"""The workload recognizer: features from the counters and the record stream (a window in C that
is given the records as they leave the rings), classified by :data:`RULES` (see :func:`classify`)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .. import sampler
from ..cpu_meter import CpuMeter
from ..records import DOMAINS
from .features import ARRAY_MODULES, NETWORK_MODULES, Window, _module_parts, _rusage

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# Records a second the recognizer reads, at most: past it, the records of 1 in 2**level of all
# addresses, the level rising (within a window) until the stream fits (ms_window_take in
# csrc/window.c). Its features are shares, gaps and lifetimes, which this many estimate well; the
# reads grow with the records, which reach 470,000 a second in a busy text-processing loop.
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

    :meth:`follow_records` has the tracker's records given to its window in C as they leave the
    threads' rings (csrc/stage.c: on the mover's native thread, or in a drain), or attach
    :meth:`sink` to a drainer as a sink; call :meth:`observe` with each snapshot's counters.
    :meth:`features` and :meth:`classify` read the current window, which :meth:`reset`
    restarts. ``resolve`` maps a site id to a :class:`memscope_otel.sites.Site`.

    No Python code runs per batch of records: there is no queue to hold copies of them, no
    thread to read it, and the GIL is not taken for them (the mover runs without it). The window
    reads every one of a window's first 16,384 records, then the records of a fixed
    pseudo-random 1 in 2**level of all addresses, the level rising until they fit in
    :attr:`read_budget_per_s` records a second (see ms_window_take)."""

    def __init__(self, resolve=None, clock=None):
        self._resolve = resolve
        self._clock = clock or time.monotonic
        self._last_counters = None
        self._read_budget_per_s = _READ_BUDGET_PER_S
        # The window, and whether it is attached. Re-entrant: a signal handler that stops the
        # tracker (close()) may run on a thread inside observe() or features().
        self._lock = threading.RLock()
        self._attached = False
        self._window = self._new_window()
        self._read_failed = False  # a read could not keep everything (reported once)
        # CPU time computing features and reading sink()'s batches, on any thread (a pressure
        # signal, and memscope.tracker.cpu's "recognizer"). The reads of what leaves the rings
        # are the mover's CPU or the drain's.
        self.cpu = CpuMeter()

    def _new_window(self, counters=None):
        return Window(self._clock(), counters, rusage=_rusage(), budget_per_s=self._read_budget_per_s,
                      read_all_first=_READ_ALL_FIRST)

    @property
    def read_budget_per_s(self):
        """Records a second the window reads at most, past its first 16,384 (4,096)."""
        return self._read_budget_per_s

    @read_budget_per_s.setter
    def read_budget_per_s(self, per_s):
        with self._lock:
            self._read_budget_per_s = per_s
            self._window.budget(per_s, _READ_ALL_FIRST)

    @property
    def window(self):
        """The current window."""
        return self._window

    @property
    def window_started(self):
        """When the current window started (clock seconds)."""
        return self._window.started

    def reset(self, counters=None):
        """Starts a new window (from ``counters``, or the counters read now); an attached one is
        replaced where the records go (the old one is read no more once this returns)."""
        counters = counters if counters is not None else sampler.read_counters()
        with self._lock:
            self._window = self._new_window(counters)
            self._last_counters = counters
            if self._attached:
                sampler.attach_window(self._window.c)

    def follow_records(self):
        """Has the records that leave the threads' rings from now on given to the window, in C
        (sampler.attach_window), until :meth:`close`."""
        with self._lock:
            self._attached = True
            sampler.attach_window(self._window.c)

    def close(self):
        """Stops the records going to the window (if it is still the one attached)."""
        with self._lock:
            if self._attached:
                self._attached = False
                sampler.detach_window(self._window.c)

    def after_fork_child(self):
        """In a forked child: the C side has let the window go (the mover may have held its
        lock), and this lock may have been held by a thread the child does not have."""
        self._lock = threading.RLock()
        self._attached = False

    def sink(self, records, base_us):
        """Drainer sink (``Drainer.add_sink``: every drained record): reads the batch into the
        window at its reading level, in one call into C that gives the GIL up."""
        if len(records) == 0:
            return
        with self.cpu.measure():
            with self._lock:
                window = self._window
            if not window.take(records, base_us):
                self._report_read_failure()

    def _report_read_failure(self):
        if not self._read_failed:
            self._read_failed = True
            log.warning("memscope workload recognizer: no memory to keep all of a batch of records; "
                        "its features may miss some (reported once)")

    def nbytes(self):
        """Bytes of the recognizer's memory now, by part: the window's arrays (csrc/window.c,
        mapped pages): ``times`` and ``lifetimes`` (at most 2 MiB plus a batch and 1 MiB),
        ``pending`` (allocations whose free is awaited: a table of at most 2 MiB), ``sites`` (a
        table of the sites read), ``threads`` (8 KiB) and ``order`` (the largest read's sort keys,
        8 B a followed record). For benchmarks/memory.py."""
        with self._lock:
            window = self._window
        return window.nbytes()

    def observe(self, counters):
        """Feeds one snapshot's exact counters."""
        with self._lock:
            if self._window.counters is None:
                self._window.counters = counters
            self._last_counters = counters
            self._window.max_threads_live = max(self._window.max_threads_live, counters.threads_live)

    def features(self, counters=None):
        """The window's features (a dict of floats), from ``counters`` (default: the last
        observed), and the records that have left the rings (a drain first takes what waits
        in them)."""
        with self.cpu.measure():
            return self._features(counters)

    def _features(self, counters):
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
        if stats.failures:  # (reads by the mover or a drain, or these features, lacked memory)
            self._report_read_failure()
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
