"""CPU time of one of the tracker's own components (the drainer, the workload recognizer), on
whatever thread it runs, with the part each thread spent kept apart.

The per-thread part lets a metric collection, which drains and classifies on its own thread,
report its own cost without the drain's and the recognizer's (``memscope.tracker.cpu`` has one
series per component, and a component's CPU must not be counted twice). Also the hooks' CPU
estimate (the hooks cannot time their own fast path)."""
import threading
import time


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


# Cost of one unsampled hook call (counter bumps + countdown), in ns. The C side times only the
# sampled path (slow_path_ns); the fast path is too short to time per call, so it is this constant,
# measured once with `python benchmarks/optimizer.py fastpath` (hooks on with every rate at 0 and
# no frequency guarantee, minus hooks off, per hook call): 7 to 15 ns in the least disturbed runs
# on a shared 2-core machine. See docs/optimizer.md. It costs the same at any sampling rate, so it
# is a figure and a recommendation, never a reason to lower the rates.
FAST_PATH_NS = 10.0


def hook_calls(counters):
    """Allocation and free calls the hooks have seen, cumulative, per domain (a numpy array)."""
    return counters.allocations.sum(axis=1).astype("float64") + counters.deallocations


def hooks_estimate_ns(counters):
    """The hooks' CPU time, cumulative: the sampled path as the C side timed it, plus
    FAST_PATH_NS per hook call (the unsampled fast path, estimated)."""
    return float(counters.slow_path_ns) + FAST_PATH_NS * float(hook_calls(counters).sum())
