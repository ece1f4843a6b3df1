"""The benchmarks' C loops, built on first use with cffi into ``benchmarks/.build``.

Python-level loops cost 20-50 ns per iteration and jitter by more than that, so they cannot
resolve the few nanoseconds the fast path adds. These loops call the CPython allocator API from C
and time themselves with the monotonic clock (wall) and the thread CPU clock, so that a Python
caller only pays once per loop. cffi releases the GIL around each call: the RAW-domain loops run
without it (PyMem_RawMalloc/RawFree may be called without the GIL), the OBJ and MEM loops take it
back with PyGILState_Ensure for the whole loop, as those domains require.
"""
import importlib
import pathlib
import sys
import sysconfig

HERE = pathlib.Path(__file__).resolve().parent
BUILD = HERE / ".build" / f"py{sys.version_info[0]}{sys.version_info[1]}"
MODULE = "_memscope_bench_native_v6"  # bump when SOURCE changes: builds are cached

CDEF = """
typedef struct { uint64_t wall_ns; uint64_t cpu_ns; } bench_time_t;
int bench_pairs(int domain, const size_t *sizes, size_t nsizes, size_t n, bench_time_t *out);
int bench_bursts(int domain, const size_t *sizes, size_t nsizes, size_t bursts, size_t burst,
                 bench_time_t *out);
int bench_latency(int domain, const size_t *sizes, size_t nsizes, size_t n,
                  uint32_t *alloc_ns, uint32_t *free_ns);
uint64_t bench_clock_cost(size_t n);
int bench_callgrind_toggle(void);
"""

# Not the limited API: PyMem_RawMalloc is outside it.
SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define BENCH_HAVE_CALLGRIND 1
#endif
#endif

typedef struct { uint64_t wall_ns; uint64_t cpu_ns; } bench_time_t;

static inline uint64_t now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef void *(*alloc_fn)(size_t);
typedef void (*free_fn)(void *);

/* 0 obj, 1 mem, 2 raw, 4 native: the same numbering as memscope's MS_DOMAIN_*. Native is the C
 * library's malloc/free called from this module (what memscope's native domain sees through the
 * module's GOT); like RAW it needs no GIL. */
static int pick(int domain, alloc_fn *a, free_fn *f)
{
    switch (domain) {
    case 0: *a = PyObject_Malloc; *f = PyObject_Free; return 0;
    case 1: *a = PyMem_Malloc; *f = PyMem_Free; return 0;
    case 2: *a = PyMem_RawMalloc; *f = PyMem_RawFree; return 0;
    case 4: *a = malloc; *f = free; return 0;
    default: return -1;
    }
}

/* Each loop reads every block once into a volatile, so that neither the compiler nor the
 * allocator can skip the pair. A local one: a shared static would be a cache line every thread
 * writes on every pair, which serialised the threads of benchmarks/threads.py (the untracked loop
 * stopped scaling); a _Thread_local one costs a __tls_get_addr call per pair in this dlopen'd
 * module. */
static inline void keep(unsigned char c)
{
    volatile unsigned char sink = c;
    (void)sink;
}

/* n alloc+free pairs, cycling through sizes. Holds the GIL for the OBJ and MEM domains. */
int bench_pairs(int domain, const size_t *sizes, size_t nsizes, size_t n, bench_time_t *out)
{
    alloc_fn a;
    free_fn f;
    if (pick(domain, &a, &f) != 0 || nsizes == 0)
        return -1;
    PyGILState_STATE gil = PyGILState_UNLOCKED;
    if (domain != 2 && domain != 4)
        gil = PyGILState_Ensure();
    int rc = 0;
    uint64_t w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID);
    for (size_t i = 0, k = 0; i < n; i++) {
        unsigned char *p = a(sizes[k]);
        if (++k == nsizes)
            k = 0;
        if (!p) {
            rc = -2;
            break;
        }
        p[0] = (unsigned char)i;
        keep(p[0]);
        f(p);
    }
    out->cpu_ns = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    out->wall_ns = now(CLOCK_MONOTONIC) - w0;
    if (domain != 2 && domain != 4)
        PyGILState_Release(gil);
    return rc;
}

/* bursts x (burst allocations, then their frees in allocation order): the addresses vary, as
 * they do in real programs, so a per-address structure (memscope's live filter) is not always
 * in the same cache line. Reports time per alloc+free pair like bench_pairs. */
#define MAX_BURST 4096
int bench_bursts(int domain, const size_t *sizes, size_t nsizes, size_t bursts, size_t burst,
                 bench_time_t *out)
{
    alloc_fn a;
    free_fn f;
    if (pick(domain, &a, &f) != 0 || nsizes == 0 || burst == 0 || burst > MAX_BURST)
        return -1;
    void *blocks[MAX_BURST];
    PyGILState_STATE gil = PyGILState_UNLOCKED;
    if (domain != 2 && domain != 4)
        gil = PyGILState_Ensure();
    int rc = 0;
    uint64_t w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID);
    size_t k = 0;
    for (size_t b = 0; b < bursts && rc == 0; b++) {
        size_t made = 0;
        for (; made < burst; made++) {
            unsigned char *p = a(sizes[k]);
            if (++k == nsizes)
                k = 0;
            if (!p) {
                rc = -2;
                break;
            }
            p[0] = (unsigned char)made;
            blocks[made] = p;
        }
        for (size_t j = 0; j < made; j++) {
            keep(*(unsigned char *)blocks[j]);
            f(blocks[j]);
        }
    }
    out->cpu_ns = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    out->wall_ns = now(CLOCK_MONOTONIC) - w0;
    if (domain != 2 && domain != 4)
        PyGILState_Release(gil);
    return rc;
}

/* Times every allocation and every free separately (clock read included: see
 * bench_clock_cost). Values saturate at 2^32-1 ns. */
int bench_latency(int domain, const size_t *sizes, size_t nsizes, size_t n,
                  uint32_t *alloc_ns, uint32_t *free_ns)
{
    alloc_fn a;
    free_fn f;
    if (pick(domain, &a, &f) != 0 || nsizes == 0)
        return -1;
    PyGILState_STATE gil = PyGILState_UNLOCKED;
    if (domain != 2 && domain != 4)
        gil = PyGILState_Ensure();
    int rc = 0;
    for (size_t i = 0, k = 0; i < n; i++) {
        uint64_t t0 = now(CLOCK_MONOTONIC);
        unsigned char *p = a(sizes[k]);
        uint64_t t1 = now(CLOCK_MONOTONIC);
        if (++k == nsizes)
            k = 0;
        if (!p) {
            rc = -2;
            break;
        }
        p[0] = (unsigned char)i;
        keep(p[0]);
        uint64_t t2 = now(CLOCK_MONOTONIC);
        f(p);
        uint64_t t3 = now(CLOCK_MONOTONIC);
        alloc_ns[i] = t1 - t0 > UINT32_MAX ? UINT32_MAX : (uint32_t)(t1 - t0);
        free_ns[i] = t3 - t2 > UINT32_MAX ? UINT32_MAX : (uint32_t)(t3 - t2);
    }
    if (domain != 2 && domain != 4)
        PyGILState_Release(gil);
    return rc;
}

/* Switches callgrind's instruction counting on or off (run under
 * valgrind --tool=callgrind --collect-atstart=no). Returns 0 when built without callgrind.h. */
int bench_callgrind_toggle(void)
{
#ifdef BENCH_HAVE_CALLGRIND
    CALLGRIND_TOGGLE_COLLECT;
    return 1;
#else
    return 0;
#endif
}

/* Median-ish cost of one back-to-back clock read pair, to read latencies against. */
uint64_t bench_clock_cost(size_t n)
{
    uint64_t best = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now(CLOCK_MONOTONIC);
        uint64_t t1 = now(CLOCK_MONOTONIC);
        if (t1 - t0 < best)
            best = t1 - t0;
    }
    return best;
}
"""

DOMAINS = {"obj": 0, "mem": 1, "raw": 2, "native": 4}


def load():
    """(ffi, lib) of the helper, compiling it the first time (a few seconds)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    if str(BUILD) not in sys.path:
        sys.path.insert(0, str(BUILD))
    try:
        mod = importlib.import_module(MODULE)
    except ImportError:
        try:
            import setuptools  # noqa: F401 - cffi compiles through it
        except ImportError:
            sys.exit("benchmarks/_native.py compiles a C helper with cffi, which needs setuptools "
                     "(not in a Python >= 3.12 venv by default): pip install setuptools")
        from cffi import FFI

        ffibuilder = FFI()
        ffibuilder.cdef(CDEF)
        ffibuilder.set_source(MODULE, SOURCE, py_limited_api=False, define_macros=[("_CFFI_NO_LIMITED_API", None)], include_dirs=[sysconfig.get_paths()["include"]],
                              extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        ffibuilder.compile(tmpdir=str(BUILD), verbose=False)
        importlib.invalidate_caches()
        mod = importlib.import_module(MODULE)
    return mod.ffi, mod.lib


class Loops:
    """Convenience wrapper: sizes as a C array, results as ns per pair."""

    def __init__(self):
        self.ffi, self.lib = load()

    def sizes(self, values):
        return self.ffi.new("size_t[]", list(values)), len(values)

    def pairs(self, domain, sizes, n):
        """(wall ns, thread-CPU ns) per alloc+free pair over n pairs."""
        arr, k = sizes
        out = self.ffi.new("bench_time_t *")
        rc = self.lib.bench_pairs(DOMAINS[domain], arr, k, n, out)
        if rc != 0:
            raise RuntimeError(f"bench_pairs failed ({rc})")
        return out.wall_ns / n, out.cpu_ns / n

    def bursts(self, domain, sizes, n, burst=64):
        arr, k = sizes
        out = self.ffi.new("bench_time_t *")
        bursts = max(1, n // burst)
        rc = self.lib.bench_bursts(DOMAINS[domain], arr, k, bursts, burst, out)
        if rc != 0:
            raise RuntimeError(f"bench_bursts failed ({rc})")
        return out.wall_ns / (bursts * burst), out.cpu_ns / (bursts * burst)

    def latency(self, domain, sizes, n):
        """Two numpy uint32 arrays: ns of each allocation call and of each free call."""
        import numpy as np

        arr, k = sizes
        alloc = np.zeros(n, dtype=np.uint32)
        free = np.zeros(n, dtype=np.uint32)
        rc = self.lib.bench_latency(DOMAINS[domain], arr, k, n,
                                    self.ffi.cast("uint32_t *", self.ffi.from_buffer(alloc)),
                                    self.ffi.cast("uint32_t *", self.ffi.from_buffer(free)))
        if rc != 0:
            raise RuntimeError(f"bench_latency failed ({rc})")
        return alloc, free

    def clock_cost(self):
        return int(self.lib.bench_clock_cost(10000))
