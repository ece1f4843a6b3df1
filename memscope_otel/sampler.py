"""The C sampler, as Python sees it: a thin wrapper over ``csrc/memscope.h``.

Nothing here interprets data: it starts and stops the hooks, moves records out of the rings into
numpy arrays, and reads the exact counters. The cffi module is imported lazily so that
``memscope_otel.config`` and the instrumentor import even where the extension failed to build.
"""
import ctypes
import hashlib
import logging
import threading
from dataclasses import dataclass

import numpy as np

from .records import DOMAINS, RECORD_DTYPE

log = logging.getLogger("memscope_otel")

_DOMAIN_BITS = {"obj": 1, "mem": 2, "raw": 4, "native": 16}


_LOADED = None


def _lib():
    # Cached: after the first call this allocates nothing, so it can run on a tracked thread
    # before that thread is marked ignored (sampler.ignored) without being counted.
    global _LOADED
    if _LOADED is None:
        from ._memscope import ffi, lib

        _LOADED = ffi, lib
    return _LOADED


def keeping_the_gil(ffi, lib, name, restype, *argtypes):
    """The C function ``name`` called without giving the GIL up. cffi releases the GIL around
    every call; a background thread that releases it while the application runs gets it back
    only after the switch interval (5 ms), forcing a switch on the application's thread. The
    functions called so are short and never wait for the GIL themselves (they take only locks
    whose holders do not wait for it): ctypes' PYFUNCTYPE calls them with the GIL kept."""
    address = int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))
    return ctypes.PYFUNCTYPE(restype, *argtypes)(address)


@dataclass(frozen=True)
class Counters:
    """One snapshot of the exact counters (numpy arrays indexed [domain][size class] etc.)."""

    allocations: np.ndarray  # (domains, 3) uint64, domains in records.DOMAINS order
    bytes: np.ndarray  # (domains, 3) uint64
    deallocations: np.ndarray  # (domains,) uint64
    by_size: np.ndarray  # (domains, 65) uint64
    samples: int
    dropped: int
    live_untracked: int
    slow_path_calls: int
    slow_path_ns: int
    threads_seen: int
    threads_live: int
    ids_used: int
    footprint_bytes: int
    live_entries: int = 0
    live_capacity: int = 0
    live_threshold: float = 0.0
    relinks: int = 0
    native_objects: int = 0
    native_entries: int = 0
    native_skipped: int = 0
    stack_overflows: int = 0  # sampled stacks cut to their innermost frame: no id was free


def start(config):
    """Installs the hooks with ``config`` (a :class:`memscope_otel.config.Config`).

    Raises RuntimeError when the C side refuses (already active, or a value the config layer
    should have rejected)."""
    ffi, lib = _lib()
    c = ffi.new("ms_config_t *")
    c.domains_mask = sum(_DOMAIN_BITS[d] for d in config.domains)
    c.critical_size = config.critical_size_threshold
    c.medium_rate = config.medium_sample_rate
    c.small_rate = config.small_sample_rate
    c.frequency_interval = config.frequency_sample_interval
    c.ring_capacity = config.max_records_per_thread
    c.seed = config.seed
    c.live_max_entries = config.live_table_max_entries
    c.rings_max_bytes = config.max_ring_memory
    c.max_stack_depth = config.max_stack_depth
    lib.ms_reduce_use_simd(1 if config.enable_simd else 0)
    rc = lib.ms_start(c)
    if rc == -1:
        raise RuntimeError("memscope sampler is already active")
    if rc < 0:
        raise RuntimeError(f"memscope sampler rejected its configuration ({config!r})")
    if "native" in config.domains and not lib.ms_native_supported():
        log.warning("OTEL_PYTHON_MEMSCOPE_DOMAINS names native, which needs Linux with glibc on x86-64 or "
                    "AArch64: the native domain stays empty here")
    if rc > 0:
        names = [d for d, bit in _DOMAIN_BITS.items() if rc & bit]
        log.warning("memscope's allocator hook of the %s domain(s) had been unlinked by another tool after "
                    "the last stop() (tracemalloc.stop() does that when memscope started after "
                    "tracemalloc); installed again", ", ".join(names))


def stop():
    _, lib = _lib()
    lib.ms_stop()


def is_active():
    _, lib = _lib()
    return bool(lib.ms_is_active())


def set_rates(medium, small):
    """Atomically changes the medium and small sampling rates (each in [0, 1])."""
    _, lib = _lib()
    if not (0.0 <= medium <= 1.0 and 0.0 <= small <= 1.0):
        raise ValueError(f"sampling rates must be in [0, 1], got medium={medium}, small={small}")
    lib.ms_set_rates(float(medium), float(small))


def rates():
    """The (medium, small) sampling rates in force."""
    ffi, lib = _lib()
    m, s = ffi.new("double *"), ffi.new("double *")
    lib.ms_get_rates(m, s)
    return m[0], s[0]


_per_thread = threading.local()


def read_counters():
    """The exact counters now (:class:`Counters`).

    Reading them takes nothing from the C library's allocator (a struct kept per thread, arrays
    copied into CPython's memory rather than numpy's), so the native domain's counts around a
    read are the program's own."""
    ffi, lib = _lib()
    c = getattr(_per_thread, "counters", None)
    if c is None:
        c = _per_thread.counters = ffi.new("ms_counters_t *")
    lib.ms_read_counters(c)

    def arr(field, shape):
        return np.frombuffer(bytearray(ffi.buffer(field)), dtype=np.uint64).reshape(shape)

    return Counters(
        allocations=arr(c.allocations, (len(DOMAINS), 3)),
        bytes=arr(c.bytes, (len(DOMAINS), 3)),
        deallocations=arr(c.deallocations, (len(DOMAINS),)),
        by_size=arr(c.by_size, (len(DOMAINS), 65)),
        samples=c.samples,
        dropped=c.dropped,
        live_untracked=c.live_untracked,
        slow_path_calls=c.slow_path_calls,
        slow_path_ns=c.slow_path_ns,
        threads_seen=c.threads_seen,
        threads_live=c.threads_live,
        ids_used=c.ids_used,
        footprint_bytes=c.footprint_bytes,
        live_entries=c.live_entries,
        live_capacity=c.live_capacity,
        live_threshold=float(c.live_threshold),
        relinks=c.relinks,
        native_objects=c.native_objects,
        native_entries=c.native_entries,
        native_skipped=c.native_skipped,
        stack_overflows=c.stack_overflows,
    )


DRAIN_BATCH = 16384  # records a drain's call into C moves at most (DrainBuffer's default)


class DrainBuffer:
    """A reusable array that records are drained into (no allocation per drain). 16,384 records
    (512 KiB, touched as drains fill it): a larger backlog takes more calls of one drain (see
    ``more``), each of which costs a pass over the threads, not more memory."""

    def __init__(self, capacity=DRAIN_BATCH):
        ffi, lib = _lib()
        self.array = np.zeros(capacity, dtype=RECORD_DTYPE)
        self._info = ffi.new("ms_drain_info_t *")
        self._args = (self.array.ctypes.data, capacity, int(ffi.cast("uintptr_t", self._info)))
        # With the GIL kept: a call moves at most ``capacity`` records (see ms_drain_reduce).
        self._drain_reduce = keeping_the_gil(ffi, lib, "ms_drain_reduce", ctypes.c_size_t, ctypes.c_void_p,
                                             ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)

    def drain(self, summary):
        """Moves pending records out of the stage and the rings and reduces them into
        ``summary``, with what the mover reduced, in one call into C: (view of the records, base
        time in µs). Then ``more`` says whether records were left behind (drain again),
        ``relinked`` which domains' hooks had been unlinked by another tool and were installed
        again (a mask of 1 << domain index), ``folded`` how many records the mover had reduced
        (added to ``summary`` by this call)."""
        info = self._info
        n = self._drain_reduce(*self._args, summary.c_summary_address)
        self.more, self.relinked = bool(info.more), int(info.relinked)
        self.folded = int(info.folded)
        return self.array[:n], int(info.base_us)


def stage_keep(all_records):
    """Sets whether the mover keeps every record it moves, unreduced, for the drainer's sinks, or
    reduces them itself and keeps none (ms_stage_keep). Keeps the GIL (a store, after a pass
    under way). Called when the sinks change, not per drain."""
    ffi, lib = _lib()
    keeping_the_gil(ffi, lib, "ms_stage_keep", None, ctypes.c_int)(int(all_records))


def attach_window(window):
    """Gives the records that leave the threads' rings from now on to ``window`` (a cffi
    ``ms_window_t *``), in C: the workload recognizer's (ms_window_attach). Once it returns, no
    record goes to the window attached before. Freeing a window detaches it first
    (ms_window_free), so a window whose owner is collected is never read into."""
    _lib()[1].ms_window_attach(window)


def detach_window(window):
    """Gives the records to no window, if ``window`` is the one attached (ms_window_detach)."""
    _lib()[1].ms_window_detach(window)


def site_info(site_id):
    """(held, byte offset, domain index, key) of an id in use, or None. held: whether the id
    table still holds the site's code object (until the site is resolved: sites.SiteResolver
    takes it over; the code object itself is not handed out here, it may die any time after)."""
    ffi, lib = _lib()
    out = ffi.new("ms_site_t *")
    if lib.ms_site_info(site_id, out) != 0:
        return None
    return out.code != ffi.NULL, out.offset, out.domain, out.key


def type_key(type_name):
    """The stable 64-bit key of a type name (same across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(type_name.encode("utf-8", "replace"), digest_size=8).digest(), "little")


def type_id(type_name):
    _, lib = _lib()
    return lib.ms_type_id(type_key(type_name))


def track_allocation(address, size, type_id_):
    _, lib = _lib()
    lib.ms_track_allocation(address, size, type_id_)


def track_deallocation(address):
    _, lib = _lib()
    lib.ms_track_deallocation(address)


def wait_for_work(timeout_ms, min_records=0):
    """Blocks (GIL released) until a ring is half full or ``timeout_ms`` passed, or up to
    MS_DRAIN_SKIPS more periods of it while fewer than ``min_records`` records wait."""
    _, lib = _lib()
    return bool(lib.ms_wait_for_work(timeout_ms, min_records))


def drain_min_records():
    """MS_DRAIN_MIN_RECORDS: fewer records waiting than this let a periodic drain be skipped."""
    _, lib = _lib()
    return lib.MS_DRAIN_MIN_RECORDS


def mover_start():
    """Starts the mover (csrc/stage.c), which empties rings that fill without the GIL; False
    when it cannot start (the rings then wake the drainer)."""
    _, lib = _lib()
    return lib.ms_mover_start() == 0


def mover_stop():
    _, lib = _lib()
    lib.ms_mover_stop()


def native_poll():
    """Patches the objects loaded (or forgets those closed) since the last pass; gives the GIL up
    (it takes the loader's lock: see ms_native_poll)."""
    _, lib = _lib()
    lib.ms_native_poll()


def ring_passes():
    """(passes over the threads' rings so far, the sum over them of the most records one
    thread's ring gave): how full rings get before they are emptied."""
    ffi, lib = _lib()
    fullest = ffi.new("uint64_t *")
    passes = lib.ms_ring_passes(fullest)
    return passes, fullest[0]


def mover_cpu_ns():
    """CPU time of every mover so far, in ns."""
    _, lib = _lib()
    return lib.ms_mover_cpu_ns()


def wake_drainer():
    _, lib = _lib()
    lib.ms_wake_drainer()


def after_fork_child():
    _, lib = _lib()
    lib.ms_after_fork_child()


_child_starter = None  # kept alive for good: the C side holds its address


def arm_child_start(starter, delay_s=0.0):
    """In a forked child: a sampled allocation ``delay_s`` or more after the child's first one
    has CPython call ``starter()`` in the main thread at its next safe point, once. None disarms."""
    global _child_starter
    _, lib = _lib()
    if starter is not None:
        _child_starter = starter
    lib.ms_child_start_arm(0 if starter is None else id(starter), int(max(delay_s, 0.0) * 1e9))


# Threads that ignore_this_thread() marked for good (the tracker's own): ignored() costs them no
# call into C, and so no trip of the GIL (see ms_drain_reduce in csrc/memscope.h).
_own_thread = threading.local()


class ignored:  # noqa: N801 - used as ``with sampler.ignored():``, like the function it replaces
    """Allocations of the calling thread are the tracker's own inside this block.

    A class, not a generator: the thread is marked first thing in ``__enter__`` and unmarked last
    thing in ``__exit__``, so no frame of the tracker's own runs tracked around the block."""

    __slots__ = ("_previous",)

    def __enter__(self):
        if getattr(_own_thread, "ignored", False):
            self._previous = None
        else:
            self._previous = _lib()[1].ms_set_thread_ignored(1)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            _lib()[1].ms_set_thread_ignored(self._previous)
        return False


def ignore_this_thread():
    """Marks the calling thread as the tracker's own for the rest of its life."""
    _, lib = _lib()
    lib.ms_set_thread_ignored(1)
    _own_thread.ignored = True
