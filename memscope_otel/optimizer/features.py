"""Workload features read from the record stream: the recognition window (its records' times,
threads, per-site weights and the lifetimes of followed blocks, kept and computed in C by
csrc/window.c), and the bounds that keep the recognizer's memory and time small."""

from __future__ import annotations

import numpy as np

from .. import sampler

# Modules whose frames allocate on behalf of a network server (request parsing, sockets, headers).
NETWORK_MODULES = ("socket", "socketserver", "selectors", "ssl", "asyncio", "http", "wsgiref", "email",
                   "urllib", "uvicorn", "gunicorn", "werkzeug", "flask", "django", "starlette", "aiohttp",
                   "h11", "tornado")
# Modules of array and tensor libraries.
ARRAY_MODULES = ("numpy", "scipy", "torch", "tensorflow", "jax", "sklearn", "pandas")

# The window's bounds (csrc/window.c), sized to what the reading budget (4,096 records a second,
# recognizer.py) brings in a 60 s window (about 250,000 records): the tracker's whole memory is to
# stay within 6 MB on a small program, and these are its largest parts.
_MAX_PENDING = 65_536    # sampled blocks whose free we wait for (a table of at most 2 MiB)
_MAX_TIMES = 262_144     # record times kept per window (2 MiB); later records of the window are not timed
_MAX_LIFETIMES = 131_072  # lifetimes kept per window (1 MiB); later frees of the window are not timed


def _module_parts(path):
    parts = path.replace("\\", "/").split("/")
    return {p[:-3] if p.endswith(".py") else p for p in parts}


_C_TYPES = {np.int64: "int64_t *", np.uint64: "uint64_t *", np.uint32: "uint32_t *", np.float64: "double *"}


class Window:
    """One recognition window: when it started, the counters and resource usage at its start and
    the most threads seen live (kept here), and what the records read into it left (kept in C:
    csrc/window.c, bounded by _MAX_TIMES, _MAX_LIFETIMES and _MAX_PENDING). Reads and feature
    computations give the GIL up while they run; the window's own lock orders them, and those of
    the mover or a drain giving it records in C once it is attached (sampler.attach_window).
    ``budget_per_s`` and ``read_all_first``: what :meth:`take` reads (ms_window_take)."""

    def __init__(self, started, counters=None, rusage=(0, 0, 0.0), max_times=_MAX_TIMES,
                 max_lifetimes=_MAX_LIFETIMES, max_pending=_MAX_PENDING, budget_per_s=float("inf"),
                 read_all_first=0):
        self.started = started
        self.counters = counters
        self.rusage = rusage
        self.max_threads_live = 0
        self._ffi, self._lib = sampler._lib()
        window = self._lib.ms_window_new(max_times, max_lifetimes, max_pending)
        if window == self._ffi.NULL:
            raise MemoryError("memscope: no memory for the workload recognizer's window")
        self.c = self._ffi.gc(window, self._lib.ms_window_free)  # (the ms_window_t *)
        self.budget(budget_per_s, read_all_first)

    def budget(self, per_s, read_all_first):
        """Sets what :meth:`take` reads: every one of the first ``read_all_first`` records, then
        within ``per_s`` records a second (see ms_window_take)."""
        self._lib.ms_window_budget(self.c, float(per_s), int(read_all_first))

    def read(self, records, base_us, level=0):
        """Reads, of ``records`` (a contiguous RECORD_DTYPE array drained at ``base_us``), those
        at the fixed pseudo-random 1 in 2**level of all addresses (csrc/window.c's followed),
        weights times 2**level. False when a table could not grow (what did not fit was not
        kept)."""
        return self._lib.ms_window_read(self.c, self._records(records), len(records), int(base_us), int(level)) == 0

    def take(self, records, base_us):
        """:meth:`read` at the window's reading level, raised first as these records require
        (ms_window_take): what the mover and the drains give an attached window."""
        return self._lib.ms_window_take(self.c, self._records(records), len(records), int(base_us)) == 0

    def _records(self, records):
        return self._ffi.cast("ms_record_t *", self._ffi.from_buffer(records))

    def stats(self, features=False):
        """The window's counts and its arrays' bytes (an ``ms_window_stats_t``); with ``features``,
        its time and lifetime features too (a sort of the times and the frame-clock search)."""
        out = self._ffi.new("ms_window_stats_t *")
        (self._lib.ms_window_features if features else self._lib.ms_window_stats)(self.c, out)
        return out

    @property
    def n_times(self):
        return int(self.stats().n_times)

    @property
    def n_lifetimes(self):
        return int(self.stats().n_lifetimes)

    @property
    def allocs_followed(self):
        """Allocation records read at followed addresses."""
        return int(self.stats().allocs_followed)

    def _copy(self, copy, n, *dtypes):
        """Arrays of ``dtypes`` filled by the C function ``copy`` (window, one pointer a dtype,
        capacity ``n``), cut to how many it wrote."""
        arrays = [np.empty(n, dtype) for dtype in dtypes]
        pointers = [self._ffi.cast(_C_TYPES[dtype], self._ffi.from_buffer(a)) for dtype, a in zip(dtypes, arrays)]
        written = copy(self.c, *pointers, n)
        return [a[:written] for a in arrays]

    def times(self):
        """The kept record times (µs, int64), in no particular order."""
        return self._copy(self._lib.ms_window_times, self.n_times, np.int64)[0]

    def lifetimes(self):
        """The kept lifetimes (µs, int64), in no particular order."""
        return self._copy(self._lib.ms_window_lifetimes, self.n_lifetimes, np.int64)[0]

    def sites(self):
        """(site ids ascending, their summed sampled allocation weights) as two arrays."""
        ids, weights = self._copy(self._lib.ms_window_sites, int(self.stats().n_sites), np.uint32, np.float64)
        return ids, weights

    def pending(self):
        """{address: time allocated} of the allocations whose free the window awaits."""
        addresses, times = self._copy(self._lib.ms_window_pending, int(self.stats().n_pending), np.uint64, np.int64)
        return dict(zip(addresses.tolist(), times.tolist()))

    def threads(self):
        """threads[i]: thread index i wrote a record read (a bool array, one per u16 index)."""
        out = np.zeros(self._lib.MS_WINDOW_THREADS, np.uint8)
        self._lib.ms_window_threads(self.c, self._ffi.cast("uint8_t *", self._ffi.from_buffer(out)))
        return out.astype(bool)

    def nbytes(self):
        """Bytes of its arrays now (mapped pages), by part."""
        s = self.stats()
        return {"times": int(s.times_bytes), "lifetimes": int(s.lifetimes_bytes), "pending": int(s.pending_bytes),
                "sites": int(s.sites_bytes), "threads": int(s.threads_bytes), "order": int(s.order_bytes)}


def _rusage():
    """(voluntary context switches, involuntary ones, CPU seconds) of this process so far."""
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_nvcsw, r.ru_nivcsw, r.ru_utime + r.ru_stime
    except Exception:  # no resource module (Windows): the features read 0
        return 0, 0, 0.0
