"""CPU time of one of the tracker's own components (the drainer, the workload recognizer), on
whatever thread it runs, with the part each thread spent kept apart.

The per-thread part lets a metric collection, which drains and classifies on its own thread,
report its own cost without the drain's and the recognizer's (``memscope.tracker.cpu`` has one
series per component, and a component's CPU must not be counted twice). Also the hooks' CPU
estimate (the hooks cannot time their own fast path)."""
import threading
import time

import numpy as np

from .records import DOMAINS


class CpuMeter:
    """Sums ``time.thread_time_ns`` over :meth:`measure` blocks: CPU time only, so waiting for
    the GIL or for a disk is not counted. Nested blocks on one thread count once."""

    def __init__(self):
        self.ns = 0  # every thread, cumulative
        self._lock = threading.Lock()  # (drains may run on two threads at once without the GIL)
        self._local = threading.local()

    def measure(self):
        """A context manager that adds the CPU time of its block to the meter."""
        return _Measured(self)

    def on_this_thread(self):
        """The CPU time the calling thread has spent in this meter's blocks, cumulative."""
        return getattr(self._local, "ns", 0)

    def _add(self, spent):
        local = self._local
        local.ns = getattr(local, "ns", 0) + spent
        with self._lock:
            self.ns += spent


class _Measured:
    __slots__ = ("_meter", "_started")

    def __init__(self, meter):
        self._meter = meter
        self._started = None

    def __enter__(self):
        local = self._meter._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        if depth == 0:
            self._started = time.thread_time_ns()
        return self

    def __exit__(self, *exc):
        local = self._meter._local
        local.depth -= 1
        if self._started is not None:
            self._meter._add(time.thread_time_ns() - self._started)
        return False


# Added CPU of one unsampled alloc+free pair, in ns, per domain (rows in records.DOMAINS order)
# and size class (small, medium): the hooks' fast path, which costs the same at any sampling rate
# and is too short to time per call. Large blocks are always sampled: their cost is the sampled
# path, which the C side times (slow_path_ns). Measured in C loops, as the memscope-unsampled
# column's median of interleaved rounds, on the shared 2-core development machine (AMD EPYC,
# CPython 3.11, load average 1.2 to 1.8): `python benchmarks/micro.py --quick` gave small OBJ
# +2.1, small RAW +2.4, medium MEM +9.4; `python benchmarks/native.py --quick` gave native 64 B
# +2.5, native 4 KiB +6.3. Small MEM calls take OBJ's inline path, so they get its figure; medium
# OBJ and RAW calls take MEM's general path, so they get its. `manual` is a Python call, the
# caller's own cost. (A first estimate of 10 ns per call, timed from a Python loop under load
# average 6 to 8, made a domain-off recommendation predict 17.9% of overhead where the demo
# measured 3.6%; see docs/optimizer.md.) Figures only, never a reason to lower the rates.
_PAIR_NS = {"obj": (2.1, 9.4), "mem": (2.1, 9.4), "raw": (2.4, 9.4), "manual": (0.0, 0.0), "native": (2.5, 6.3)}
FAST_PATH_PAIR_NS = np.array([_PAIR_NS[d] for d in DOMAINS], dtype=np.float64)


def fast_path_ns(allocations):
    """The fast path's CPU, in ns, per domain, for ``allocations`` (a counters.allocations array
    or a difference of two): each small and medium allocation with its free."""
    return (np.asarray(allocations, dtype=np.float64)[:, :2] * FAST_PATH_PAIR_NS).sum(axis=1)


def hook_calls(counters):
    """Allocation and free calls the hooks have seen, cumulative, per domain (a numpy array)."""
    return counters.allocations.sum(axis=1).astype("float64") + counters.deallocations


def hooks_estimate_ns(counters):
    """The hooks' CPU time, cumulative: the sampled path as the C side timed it, plus the
    unsampled fast path, estimated from the allocations (see FAST_PATH_PAIR_NS)."""
    return float(counters.slow_path_ns) + float(fast_path_ns(counters.allocations).sum())
