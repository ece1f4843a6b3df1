"""A workload whose every allocation is known: a small C helper, compiled with gcc and loaded
with cffi, that calls the CPython allocators of one domain in a loop over caller-given sizes.

The helper takes the GIL back (cffi releases it around calls), so the sampler sees the calling
Python frame as the allocation site: every block comes from the line that called the helper.
Sizes are the caller's numpy arrays, so the test knows the exact count, bytes and sum of squared
sizes of what it asked for without trusting anything the tracker reports.
"""
import pathlib
import subprocess
import sysconfig

import numpy as np

DOMAINS = {"obj": 0, "mem": 1, "raw": 2, "native": 4}  # MS_DOMAIN_*; native: the C library called from here

CDEF = """
size_t churn(int domain, const uint64_t *sizes, size_t n, size_t repeat);
size_t keep(int domain, const uint64_t *sizes, size_t n, uintptr_t *out);
void release(int domain, const uintptr_t *blocks, size_t n);
void release_where(int domain, const uintptr_t *blocks, const uint8_t *mask, size_t n, uint8_t which);
size_t churn_calloc(int domain, const uint64_t *sizes, size_t n, size_t repeat);
size_t churn_realloc(int domain, const uint64_t *first, const uint64_t *then, size_t n, size_t repeat);
size_t regrow_where(int domain, uintptr_t *blocks, const uint64_t *sizes, const uint8_t *mask, size_t n, uint8_t which);
"""

SOURCE = r"""
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

static void *allocate(int domain, size_t size)
{
    switch (domain) {
    case 0: return PyObject_Malloc(size);
    case 1: return PyMem_Malloc(size);
    case 4: return malloc(size);
    default: return PyMem_RawMalloc(size);
    }
}

static void *allocate_zeroed(int domain, size_t size)
{
    switch (domain) {
    case 0: return PyObject_Calloc(1, size);
    case 1: return PyMem_Calloc(1, size);
    case 4: return calloc(1, size);
    default: return PyMem_RawCalloc(1, size);
    }
}

static void *reallocate(int domain, void *p, size_t size)
{
    switch (domain) {
    case 0: return PyObject_Realloc(p, size);
    case 1: return PyMem_Realloc(p, size);
    case 4: return realloc(p, size);
    default: return PyMem_RawRealloc(p, size);
    }
}

static void deallocate(int domain, void *p)
{
    switch (domain) {
    case 0: PyObject_Free(p); break;
    case 1: PyMem_Free(p); break;
    case 4: free(p); break;
    default: PyMem_RawFree(p); break;
    }
}

/* Allocates (calloc(1, size) when zeroed) and at once frees one block of each size, repeat
 * times over the array. Returns the number of failed allocations (the caller asserts 0). */
static size_t churn_with(int domain, const uint64_t *sizes, size_t n, size_t repeat, int zeroed)
{
    size_t failed = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t r = 0; r < repeat; r++) {
        for (size_t i = 0; i < n; i++) {
            size_t size = (size_t)sizes[i];
            void *p = zeroed ? allocate_zeroed(domain, size) : allocate(domain, size);
            if (p == NULL)
                failed++;
            else
                deallocate(domain, p);
        }
    }
    PyGILState_Release(gil);
    return failed;
}

size_t churn(int domain, const uint64_t *sizes, size_t n, size_t repeat)
{
    return churn_with(domain, sizes, n, repeat, 0);
}

/* Allocates one block of each size and leaves it allocated; out[i] gets its address.
 * Returns the number of failed allocations. */
size_t keep(int domain, const uint64_t *sizes, size_t n, uintptr_t *out)
{
    size_t failed = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t i = 0; i < n; i++) {
        void *p = allocate(domain, (size_t)sizes[i]);
        failed += p == NULL;
        out[i] = (uintptr_t)p;
    }
    PyGILState_Release(gil);
    return failed;
}

/* Frees blocks returned by keep (zero addresses are skipped). */
void release(int domain, const uintptr_t *blocks, size_t n)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t i = 0; i < n; i++) {
        if (blocks[i])
            deallocate(domain, (void *)blocks[i]);
    }
    PyGILState_Release(gil);
}

size_t churn_calloc(int domain, const uint64_t *sizes, size_t n, size_t repeat)
{
    return churn_with(domain, sizes, n, repeat, 1);
}

/* Allocates first[i], reallocates the block to then[i], frees it; repeat times over the arrays:
 * two allocation requests (first[i], then[i]) and two deallocations per step. */
size_t churn_realloc(int domain, const uint64_t *first, const uint64_t *then, size_t n, size_t repeat)
{
    size_t failed = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t r = 0; r < repeat; r++) {
        for (size_t i = 0; i < n; i++) {
            void *p = allocate(domain, (size_t)first[i]);
            if (p == NULL) {
                failed++;
                continue;
            }
            void *q = reallocate(domain, p, (size_t)then[i]);
            if (q == NULL) {
                failed++;
                q = p;
            }
            deallocate(domain, q);
        }
    }
    PyGILState_Release(gil);
    return failed;
}

/* Reallocates the blocks i with mask[i] == which to sizes[i], in place in blocks[].
 * Returns the number of failed reallocations (the old block is kept then). */
size_t regrow_where(int domain, uintptr_t *blocks, const uint64_t *sizes, const uint8_t *mask, size_t n, uint8_t which)
{
    size_t failed = 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t i = 0; i < n; i++) {
        if (!blocks[i] || mask[i] != which)
            continue;
        void *q = reallocate(domain, (void *)blocks[i], (size_t)sizes[i]);
        if (q == NULL)
            failed++;
        else
            blocks[i] = (uintptr_t)q;
    }
    PyGILState_Release(gil);
    return failed;
}

/* Frees the blocks i with mask[i] == which: a chosen subset, with no allocation on the way. */
void release_where(int domain, const uintptr_t *blocks, const uint8_t *mask, size_t n, uint8_t which)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    for (size_t i = 0; i < n; i++) {
        if (blocks[i] && mask[i] == which)
            deallocate(domain, (void *)blocks[i]);
    }
    PyGILState_Release(gil);
}
"""


def build(directory):
    """Compiles the helper into ``directory`` and returns its cffi ``(ffi, lib)``.

    It is a plain shared object loaded with ``ffi.dlopen`` (cffi's ABI mode): gcc and the Python
    headers are all it needs, as for the package itself (cffi's own compile step would also need
    setuptools, absent from Python >= 3.12 venvs). Its CPython symbols resolve against the running
    interpreter, as an extension module's do."""
    from cffi import FFI

    directory = pathlib.Path(directory)
    source = directory / "stats_workload.c"
    library = directory / "stats_workload.so"
    source.write_text(SOURCE)
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    f"-I{include}", str(source), "-o", str(library)], check=True)
    ffi = FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(library))


class Workload:
    """Python face of the helper: sizes in, exact totals out."""

    def __init__(self, ffi, lib):
        self.ffi = ffi
        self.lib = lib

    def _sizes(self, sizes):
        sizes = np.ascontiguousarray(sizes, dtype=np.uint64)
        return sizes, self.ffi.cast("uint64_t *", self.ffi.from_buffer(sizes))

    def churn(self, domain, sizes, repeat=1):
        """Allocates and frees each size ``repeat`` times in ``domain``."""
        sizes, ptr = self._sizes(sizes)
        failed = self.lib.churn(DOMAINS[domain], ptr, len(sizes), repeat)
        assert failed == 0, f"{failed} allocations failed"

    def churn_calloc(self, domain, sizes, repeat=1):
        """As :meth:`churn`, with ``calloc(1, size)``."""
        sizes, ptr = self._sizes(sizes)
        failed = self.lib.churn_calloc(DOMAINS[domain], ptr, len(sizes), repeat)
        assert failed == 0, f"{failed} allocations failed"

    def churn_realloc(self, domain, first, then, repeat=1):
        """malloc(first[i]), realloc to then[i], free; ``repeat`` times over the arrays."""
        first, p1 = self._sizes(first)
        then, p2 = self._sizes(then)
        assert len(first) == len(then)
        failed = self.lib.churn_realloc(DOMAINS[domain], p1, p2, len(first), repeat)
        assert failed == 0, f"{failed} allocations failed"

    def keep(self, domain, sizes):
        """Allocates one block per size and returns their addresses (uint64 array)."""
        sizes, ptr = self._sizes(sizes)
        blocks = np.zeros(len(sizes), dtype=np.uint64)
        failed = self.lib.keep(DOMAINS[domain], ptr, len(sizes),
                               self.ffi.cast("uintptr_t *", self.ffi.from_buffer(blocks)))
        assert failed == 0, f"{failed} allocations failed"
        return blocks

    def release(self, domain, blocks):
        """Frees blocks returned by :meth:`keep`."""
        blocks = np.ascontiguousarray(blocks, dtype=np.uint64)
        self.lib.release(DOMAINS[domain], self.ffi.cast("uintptr_t *", self.ffi.from_buffer(blocks)), len(blocks))
