/*
 * testhook.c: the test suite's own exact allocation counter, written independently of csrc/.
 *
 * It installs itself ON TOP of whatever allocators are in place (memscope's hooks, in the tests)
 * and forwards every call to them, counting the requests it sees by DESIGN.md's counting
 * semantics with its own thread-local re-entry guard, so that a request one hooked domain forwards
 * to another (pymalloc handing large blocks to RAW) is counted once, at the outermost domain.
 * Counters are plain atomics (slow, but exact and simple: this is a test oracle, not a profiler).
 *
 * It also provides the workloads that drive every allocator entry point of every domain, a
 * pthread that allocates with no Python thread state, and a pointer pool for cross-thread frees.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testhook.h"

/* Our domain order matches memscope's (obj, mem, raw); CPython's enum differs. */
static const PyMemAllocatorDomain py_domain[3] = {PYMEM_DOMAIN_OBJ, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_RAW};

static _Atomic uint64_t c_allocations[3][3], c_bytes[3][3], c_deallocations[3], c_by_size[3][65];
static _Atomic int g_counting;
static _Atomic uint64_t g_critical = 8192;
static _Thread_local int t_guard;
static _Thread_local int t_fail_armed; /* inside th_alloc/th_calloc/th_realloc (failing layer) */

static PyMemAllocatorEx g_next[3];
static int g_installed[3];

/* Bucket k holds 2^(k-1) < size <= 2^k; sizes 0 and 1 are bucket 0. Written as a loop on purpose,
 * unlike memscope's count-leading-zeros, so the two do not share a mistake. */
static int bucket_of(uint64_t size)
{
    int k = 0;
    while (k < 64 && ((uint64_t)1 << k) < size)
        k++;
    return k;
}

static void count_alloc(int d, uint64_t size)
{
    uint64_t critical = atomic_load(&g_critical);
    int cls = size >= critical ? 2 : size >= 1024 ? 1 : 0;
    atomic_fetch_add_explicit(&c_allocations[d][cls], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c_bytes[d][cls], size, memory_order_relaxed);
    atomic_fetch_add_explicit(&c_by_size[d][bucket_of(size)], 1, memory_order_relaxed);
}

static void count_free(int d)
{
    atomic_fetch_add_explicit(&c_deallocations[d], 1, memory_order_relaxed);
}

static void *th_malloc_d(int d, size_t size)
{
    PyMemAllocatorEx *n = &g_next[d];
    if (t_guard)
        return n->malloc(n->ctx, size);
    t_guard = 1;
    void *p = n->malloc(n->ctx, size);
    t_guard = 0;
    if (p && atomic_load(&g_counting))
        count_alloc(d, size);
    return p;
}

static void *th_calloc_d(int d, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *n = &g_next[d];
    if (t_guard)
        return n->calloc(n->ctx, nelem, elsize);
    t_guard = 1;
    void *p = n->calloc(n->ctx, nelem, elsize);
    t_guard = 0;
    if (p && atomic_load(&g_counting))
        count_alloc(d, (uint64_t)nelem * (uint64_t)elsize);
    return p;
}

static void *th_realloc_d(int d, void *ptr, size_t size)
{
    PyMemAllocatorEx *n = &g_next[d];
    if (t_guard)
        return n->realloc(n->ctx, ptr, size);
    t_guard = 1;
    void *p = n->realloc(n->ctx, ptr, size);
    t_guard = 0;
    if (atomic_load(&g_counting)) {
        /* CPython's allocators turn realloc(p, 0) into a request of one byte: NULL is a
         * failure, p still allocated. */
        if (ptr && p)
            count_free(d);
        if (p)
            count_alloc(d, size);
    }
    return p;
}

static void th_free_d(int d, void *ptr)
{
    PyMemAllocatorEx *n = &g_next[d];
    if (t_guard) {
        n->free(n->ctx, ptr);
        return;
    }
    if (ptr && atomic_load(&g_counting))
        count_free(d);
    t_guard = 1;
    n->free(n->ctx, ptr);
    t_guard = 0;
}

#define TH_HOOKS(name, d)                                                                     \
    static void *name##_malloc(void *ctx, size_t size)                                        \
    {                                                                                         \
        (void)ctx;                                                                            \
        return th_malloc_d(d, size);                                                          \
    }                                                                                         \
    static void *name##_calloc(void *ctx, size_t nelem, size_t elsize)                        \
    {                                                                                         \
        (void)ctx;                                                                            \
        return th_calloc_d(d, nelem, elsize);                                                 \
    }                                                                                         \
    static void *name##_realloc(void *ctx, void *ptr, size_t size)                            \
    {                                                                                         \
        (void)ctx;                                                                            \
        return th_realloc_d(d, ptr, size);                                                    \
    }                                                                                         \
    static void name##_free(void *ctx, void *ptr)                                             \
    {                                                                                         \
        (void)ctx;                                                                            \
        th_free_d(d, ptr);                                                                    \
    }

TH_HOOKS(obj, 0)
TH_HOOKS(mem, 1)
TH_HOOKS(raw, 2)

static const PyMemAllocatorEx g_ours[3] = {
    {NULL, obj_malloc, obj_calloc, obj_realloc, obj_free},
    {NULL, mem_malloc, mem_calloc, mem_realloc, mem_free},
    {NULL, raw_malloc, raw_calloc, raw_realloc, raw_free},
};

/* Installs a layer of this file (ours[d]) over each domain's current allocator, saved in next[d],
 * innermost (RAW) first so that a forwarded request never meets a half-built chain. Returns -1
 * if it was already installed in some domain (left as it is there). cffi releases the GIL
 * around calls; PyMem_SetAllocator needs it. */
static int layer_install(PyMemAllocatorEx next[3], const PyMemAllocatorEx ours[3], int installed[3])
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = 0;
    for (int d = 2; d >= 0; d--) {
        if (installed[d]) {
            rc = -1;
            continue;
        }
        PyMem_GetAllocator(py_domain[d], &next[d]);
        atomic_thread_fence(memory_order_release);
        PyMem_SetAllocator(py_domain[d], (PyMemAllocatorEx *)&ours[d]);
        installed[d] = 1;
    }
    PyGILState_Release(gil);
    return rc;
}

/* Unlinks the layer from every domain where it is on top; returns the number of domains where
 * something else was installed over it (left in place: next stays valid forever). */
static int layer_uninstall(PyMemAllocatorEx next[3], const PyMemAllocatorEx ours[3], int installed[3])
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int blocked = 0;
    for (int d = 0; d < 3; d++) {
        if (!installed[d])
            continue;
        PyMemAllocatorEx current;
        PyMem_GetAllocator(py_domain[d], &current);
        if (current.malloc == ours[d].malloc) {
            PyMem_SetAllocator(py_domain[d], &next[d]);
            installed[d] = 0;
        } else {
            blocked++;
        }
    }
    PyGILState_Release(gil);
    return blocked;
}

int th_install(uint64_t critical_size)
{
    atomic_store(&g_critical, critical_size);
    return layer_install(g_next, g_ours, g_installed);
}

int th_uninstall(void)
{
    atomic_store(&g_counting, 0);
    return layer_uninstall(g_next, g_ours, g_installed);
}

int th_is_top(int domain)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyMemAllocatorEx current;
    PyMem_GetAllocator(py_domain[domain], &current);
    PyGILState_Release(gil);
    return current.malloc == g_ours[domain].malloc;
}

void th_get_allocator(int domain, th_allocator_t *out)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyMemAllocatorEx current;
    PyMem_GetAllocator(py_domain[domain], &current);
    PyGILState_Release(gil);
    out->ctx = (uintptr_t)current.ctx;
    out->malloc = (uintptr_t)current.malloc;
    out->calloc = (uintptr_t)current.calloc;
    out->realloc = (uintptr_t)current.realloc;
    out->free = (uintptr_t)current.free;
}

static void copy_counts(th_counts_t *out)
{
    for (int d = 0; d < 3; d++) {
        for (int c = 0; c < 3; c++) {
            out->allocations[d][c] = atomic_load(&c_allocations[d][c]);
            out->bytes[d][c] = atomic_load(&c_bytes[d][c]);
        }
        out->deallocations[d] = atomic_load(&c_deallocations[d]);
        for (int b = 0; b < 65; b++)
            out->by_size[d][b] = atomic_load(&c_by_size[d][b]);
    }
}

typedef void (*snapshot_fn)(void *);

/* Zeroes our counters, takes the other counter's snapshot, then starts counting: with no other
 * thread allocating, nothing can happen between the two. */
void th_begin(uintptr_t snapshot, uintptr_t out)
{
    for (int d = 0; d < 3; d++) {
        for (int c = 0; c < 3; c++) {
            atomic_store(&c_allocations[d][c], 0);
            atomic_store(&c_bytes[d][c], 0);
        }
        atomic_store(&c_deallocations[d], 0);
        for (int b = 0; b < 65; b++)
            atomic_store(&c_by_size[d][b], 0);
    }
    ((snapshot_fn)snapshot)((void *)out);
    atomic_store(&g_counting, 1);
}

void th_end(uintptr_t snapshot, uintptr_t out, th_counts_t *mine)
{
    atomic_store(&g_counting, 0);
    ((snapshot_fn)snapshot)((void *)out);
    copy_counts(mine);
}

void th_counts(th_counts_t *mine)
{
    copy_counts(mine);
}

/* ---- workloads ---- */

static uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

typedef struct {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
} api_t;

static const api_t apis[3] = {
    {PyObject_Malloc, PyObject_Calloc, PyObject_Realloc, PyObject_Free},
    {PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free},
    {PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree},
};

static const size_t fixed_sizes[] = {0, 1, 2, 7, 8, 255, 256, 511, 512, 513, 1023, 1024, 1025,
                                     4096, 8191, 8192, 8193, 65536, 100000, 1 << 20};
#define N_FIXED (sizeof fixed_sizes / sizeof fixed_sizes[0])

static size_t random_size(uint64_t *rng)
{
    uint64_t r = next_random(rng);
    switch (r & 3) {
    case 0:
        return fixed_sizes[(r >> 8) % N_FIXED];
    case 1:
        return (size_t)((r >> 8) % 1024);
    case 2:
        return (size_t)((r >> 8) % 16384);
    default:
        return (size_t)((r >> 8) % (1u << ((r >> 40) % 21)));
    }
}

/* One pass of every entry point on one domain: malloc, calloc (including zero and products),
 * realloc(NULL, n), growth, shrink, realloc(p, 0), and free. */
static void domain_pass(const api_t *a, uint64_t *rng, int rounds)
{
    enum { SLOTS = 16 };
    void *held[SLOTS] = {0};
    for (int i = 0; i < rounds; i++) {
        for (size_t k = 0; k < N_FIXED; k++) {
            void *p = a->malloc(fixed_sizes[k]);
            a->free(p);
        }
        size_t n = random_size(rng);
        int slot = (int)(next_random(rng) % SLOTS);
        switch (next_random(rng) % 8) {
        case 0:
            a->free(held[slot]);
            held[slot] = a->malloc(n);
            break;
        case 1: {
            size_t nelem = 1 + (size_t)(next_random(rng) % 8);
            a->free(held[slot]);
            held[slot] = a->calloc(nelem, n / nelem);
            break;
        }
        case 2:
            a->free(held[slot]);
            held[slot] = a->calloc(0, n); /* zero bytes requested, still an allocation */
            break;
        case 3:
            a->free(held[slot]);
            held[slot] = a->realloc(NULL, n);
            break;
        case 4: { /* growth */
            void *q = a->realloc(held[slot], n + 4096);
            if (q)
                held[slot] = q;
            break;
        }
        case 5: { /* shrink */
            void *q = a->realloc(held[slot], n / 3);
            if (q)
                held[slot] = q;
            break;
        }
        case 6: { /* realloc(p, 0): frees p and may return a new minimal block */
            held[slot] = a->realloc(held[slot], 0);
            break;
        }
        default:
            a->free(held[slot]);
            held[slot] = NULL;
            break;
        }
    }
    for (int s = 0; s < SLOTS; s++)
        a->free(held[s]);
}

/* Drives all three domains. RAW runs without the GIL (as the cffi call left it), MEM and OBJ
 * with it. Returns 0. */
int th_workload(uint64_t seed, int rounds)
{
    uint64_t rng = seed * 2654435761u + 88172645463325252ull;
    domain_pass(&apis[2], &rng, rounds);
    PyGILState_STATE gil = PyGILState_Ensure();
    domain_pass(&apis[1], &rng, rounds);
    domain_pass(&apis[0], &rng, rounds);
    PyGILState_Release(gil);
    return 0;
}

/* ---- single allocations, for tests that need to control exactly what happens ---- */

enum { OP_MALLOC, OP_CALLOC, OP_REALLOC };

/* One request through a domain's public API, armed for the failing layer (below): RAW without
 * the GIL, as its callers may, OBJ and MEM with it. */
static uintptr_t api_call(int domain, int op, void *ptr, size_t a, size_t b)
{
    PyGILState_STATE gil = PyGILState_UNLOCKED;
    if (domain != 2)
        gil = PyGILState_Ensure();
    const api_t *api = &apis[domain];
    t_fail_armed = 1;
    void *p = op == OP_MALLOC ? api->malloc(a) : op == OP_CALLOC ? api->calloc(a, b) : api->realloc(ptr, a);
    t_fail_armed = 0;
    if (domain != 2)
        PyGILState_Release(gil);
    return (uintptr_t)p;
}

uintptr_t th_alloc(int domain, size_t size)
{
    return api_call(domain, OP_MALLOC, NULL, size, 0);
}

uintptr_t th_calloc(int domain, size_t nelem, size_t elsize)
{
    return api_call(domain, OP_CALLOC, NULL, nelem, elsize);
}

uintptr_t th_realloc(int domain, uintptr_t ptr, size_t size)
{
    return api_call(domain, OP_REALLOC, (void *)ptr, size, 0);
}

void th_free(int domain, uintptr_t p)
{
    if (domain == 2) {
        PyMem_RawFree((void *)p);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    apis[domain].free((void *)p);
    PyGILState_Release(gil);
}

/* rounds x (malloc+free of small, of medium, then realloc(NULL, small) grown by realloc to
 * medium, freed): four allocations a round, two of each class, through one domain's API (RAW
 * without the GIL, OBJ and MEM with it). */
void th_class_mix(int domain, int rounds, size_t small, size_t medium)
{
    PyGILState_STATE gil = PyGILState_UNLOCKED;
    if (domain != 2)
        gil = PyGILState_Ensure();
    const api_t *a = &apis[domain];
    for (int i = 0; i < rounds; i++) {
        a->free(a->malloc(small));
        a->free(a->malloc(medium));
        void *p = a->realloc(NULL, small);
        void *q = a->realloc(p, medium);
        a->free(q ? q : p);
    }
    if (domain != 2)
        PyGILState_Release(gil);
}

/* RAW allocations of size bytes, count of them, kept in out (freed later by th_free_many). */
void th_raw_alloc_many(uintptr_t *out, int count, size_t size)
{
    for (int i = 0; i < count; i++)
        out[i] = (uintptr_t)PyMem_RawMalloc(size);
}

void th_raw_free_many(const uintptr_t *ptrs, int count)
{
    for (int i = 0; i < count; i++)
        PyMem_RawFree((void *)ptrs[i]);
}

/* ---- a thread with no Python thread state ---- */

typedef struct {
    int count;
    size_t size;
    int free_them;
    uintptr_t *keep; /* count pointers per thread, when not freed */
} native_job_t;

static void *native_main(void *arg)
{
    native_job_t *job = arg;
    for (int i = 0; i < job->count; i++) {
        void *p = PyMem_RawMalloc(job->size);
        if (job->free_them)
            PyMem_RawFree(p);
        else
            job->keep[i] = (uintptr_t)p;
    }
    return NULL;
}

/* Runs `threads` concurrent pthreads, each making count RAW allocations of size bytes and
 * freeing each at once, with no Python thread state. 0 on success. */
int th_native_threads(int threads, int count, size_t size)
{
    return th_native_threads_keep(threads, count, size, NULL);
}

/* As th_native_threads; with keep non-NULL the blocks are not freed but stored there
 * (threads * count pointers), for the caller to free with th_raw_free_many. */
int th_native_threads_keep(int threads, int count, size_t size, uintptr_t *keep)
{
    enum { MAX_THREADS = 256 };
    pthread_t ids[MAX_THREADS];
    native_job_t jobs[MAX_THREADS];
    if (threads > MAX_THREADS)
        return -1;
    int started = 0;
    for (; started < threads; started++) {
        jobs[started] = (native_job_t){count, size, keep == NULL, keep ? keep + (size_t)started * count : NULL};
        if (pthread_create(&ids[started], NULL, native_main, &jobs[started]) != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ids[i], NULL);
    return started == threads ? 0 : -1;
}

/* ---- an allocator layer BELOW memscope that fails the requests of one size ----
 * memscope's fast paths count a request before passing it on and undo the count when it fails;
 * real allocators almost never fail, so the tests make this one fail on purpose: only inside
 * th_alloc/th_calloc/th_realloc (the interpreter's own requests of that size go through). It
 * has a non-NULL ctx, like any third-party hook, and passes everything else on unchanged. */

static PyMemAllocatorEx f_next[3];
static int f_installed[3];
static _Atomic uint64_t f_fail_size;
static _Atomic int f_failing; /* 0 once uninstalled: the layer then fails nothing */
static char f_ctx[3];

static int f_domain(void *ctx)
{
    return (int)((char *)ctx - f_ctx);
}

static int f_fails(uint64_t size)
{
    return t_fail_armed && atomic_load(&f_failing) && size == atomic_load(&f_fail_size);
}

static void *f_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *n = &f_next[f_domain(ctx)];
    return f_fails(size) ? NULL : n->malloc(n->ctx, size);
}

static void *f_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *n = &f_next[f_domain(ctx)];
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size) && f_fails(size))
        return NULL;
    return n->calloc(n->ctx, nelem, elsize);
}

static void *f_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *n = &f_next[f_domain(ctx)];
    return f_fails(size) ? NULL : n->realloc(n->ctx, ptr, size);
}

static void f_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *n = &f_next[f_domain(ctx)];
    n->free(n->ctx, ptr);
}

static const PyMemAllocatorEx f_ours[3] = {
    {&f_ctx[0], f_malloc, f_calloc, f_realloc, f_free},
    {&f_ctx[1], f_malloc, f_calloc, f_realloc, f_free},
    {&f_ctx[2], f_malloc, f_calloc, f_realloc, f_free},
};

int th_install_failing(uint64_t fail_size)
{
    atomic_store(&f_fail_size, fail_size);
    atomic_store(&f_failing, 1);
    return layer_install(f_next, f_ours, f_installed);
}

/* Unlinks the layer where it is on top (see layer_uninstall); where something else still sits
 * over it, it stays, passing everything on, as it fails nothing any more. */
int th_uninstall_failing(void)
{
    atomic_store(&f_failing, 0);
    return layer_uninstall(f_next, f_ours, f_installed);
}

/* ---- native threads hammering the RAW domain until told to stop ----
 * They never take the GIL nor have a thread state, as C libraries' own threads: their calls race
 * whatever the main thread does to the allocator chain (start/stop installing and removing
 * hooks). Each allocation's first and last bytes are written and checked, so that a call routed
 * to the wrong allocator shows as a wrong block, not only as a crash. */

static pthread_t h_threads[16];
static int h_count;
static _Atomic int h_stop;
static _Atomic uint64_t h_calls, h_bad;

static void *hammer_main(void *arg)
{
    uint64_t n = 0, bad = 0, size = 24 + 8 * (uint64_t)(uintptr_t)arg;
    while (!atomic_load_explicit(&h_stop, memory_order_relaxed)) {
        unsigned char *p = PyMem_RawMalloc(size);
        if (p) {
            p[0] = 0xA5;
            p[size - 1] = 0x5A;
            unsigned char *q = PyMem_RawRealloc(p, size * 2);
            if (q) {
                bad += q[0] != 0xA5 || q[size - 1] != 0x5A;
                p = q;
            }
            PyMem_RawFree(p);
        }
        PyMem_RawFree(PyMem_RawCalloc(4, size));
        n += 3;
    }
    atomic_fetch_add(&h_calls, n);
    atomic_fetch_add(&h_bad, bad);
    return NULL;
}

int th_hammer_start(int threads)
{
    if (h_count != 0 || threads < 1 || threads > 16)
        return -1;
    atomic_store(&h_stop, 0);
    atomic_store(&h_calls, 0);
    atomic_store(&h_bad, 0);
    for (; h_count < threads; h_count++) {
        if (pthread_create(&h_threads[h_count], NULL, hammer_main, (void *)(uintptr_t)h_count) != 0)
            break;
    }
    return h_count == threads ? 0 : -1;
}

uint64_t th_hammer_stop(uint64_t *bad)
{
    atomic_store(&h_stop, 1);
    for (int i = 0; i < h_count; i++)
        pthread_join(h_threads[i], NULL);
    h_count = 0;
    *bad = atomic_load(&h_bad);
    return atomic_load(&h_calls);
}

uint64_t th_stamps_step_back(uintptr_t stamp, uint64_t duration_ns, uint64_t *calls)
{
    uint64_t (*fn)(void) = (uint64_t (*)(void))stamp;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t end = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + duration_ns;
    uint64_t prev = fn(), worst = 0, n = 1;
    for (;;) {
        for (int i = 0; i < 1000; i++, n++) {
            uint64_t now = fn();
            if (now < prev && prev - now > worst)
                worst = prev - now;
            prev = now;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec >= end)
            break;
    }
    *calls = n;
    return worst;
}

/* ---- an allocating thread stopped now and then, as a preempted one is ---- */

static uint64_t p_pause_ns;
static _Atomic uint64_t p_handled;
static _Atomic int p_stop;
static _Atomic pid_t p_tid;

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pause_handler(int signo)
{
    (void)signo;
    int saved = errno;
    sleep_ns(p_pause_ns); /* nanosleep is async-signal-safe */
    atomic_fetch_add(&p_handled, 1);
    errno = saved;
}

typedef struct {
    size_t size;
    uint64_t pairs, cpu_ns;
} paused_job_t;

static void *paused_main(void *arg)
{
    paused_job_t *job = arg;
    atomic_store(&p_tid, (pid_t)syscall(SYS_gettid));
    uint64_t c0 = thread_cpu_ns(), n = 0;
    while (!atomic_load(&p_stop)) {
        PyMem_RawFree(PyMem_RawMalloc(job->size));
        n++;
    }
    job->cpu_ns = thread_cpu_ns() - c0;
    job->pairs = n;
    return NULL;
}

int64_t th_paused_pairs(size_t size, int pauses, uint64_t pause_ns, uint64_t run_ns, uint64_t *pairs)
{
    int signo = SIGRTMIN + 4;
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = pause_handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(signo, &act, &old) != 0)
        return -1;
    p_pause_ns = pause_ns;
    atomic_store(&p_handled, 0);
    atomic_store(&p_stop, 0);
    atomic_store(&p_tid, 0);
    paused_job_t job = {size, 0, 0};
    pthread_t worker;
    if (pthread_create(&worker, NULL, paused_main, &job) != 0) {
        sigaction(signo, &old, NULL);
        return -1;
    }
    while (atomic_load(&p_tid) == 0)
        sleep_ns(100000);
    pid_t pid = getpid(), tid = atomic_load(&p_tid);
    int64_t result = 0;
    for (int i = 0; i < pauses; i++) {
        sleep_ns(run_ns);
        if (syscall(SYS_tgkill, pid, tid, signo) != 0) {
            result = -1;
            break;
        }
        while (atomic_load(&p_handled) < (uint64_t)i + 1) /* one pause at a time */
            sleep_ns(100000);
    }
    atomic_store(&p_stop, 1);
    pthread_join(worker, NULL);
    sigaction(signo, &old, NULL);
    *pairs = job.pairs;
    return result < 0 ? -1 : (int64_t)job.cpu_ns;
}
