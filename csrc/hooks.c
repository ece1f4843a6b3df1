/*
 * hooks.c: the allocator hooks, the exact counters they keep, and the sampling decision.
 *
 * Cost model: every Python allocation and free runs through here, so the common cases have fast
 * paths (hook_malloc, hook_free): a small allocation with no sample due is one thread-local load
 * and test, a size compare, a countdown decrement and two thread-local counter adds around the
 * call; an unsampled free is a counter add and one filter-byte load, then a jump to the next
 * allocator. Everything else (site capture, clock reads, record writes, live-table updates, the
 * other size classes) happens on the general paths.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

#include "internal.h"

/* ---- settings read by the hooks (written by ms_start / ms_set_rates) ---- */

/* Bit d set: domain d is counted now (bit MS_DOMAIN_MANUAL for the manual API). Per domain, so
 * that a hook left in a chain as a pass-through after stop() stays silent when a later start()
 * asks for fewer domains. */
static _Atomic int g_active;
/* Per hooked domain: MS_MEDIUM_MIN - 1 while the domain is counted, else 0. A request takes the
 * fast path when size - 1 < this, which in one compare says "counted, small class, not zero"
 * (size 0 wraps around). Written only through set_active, together with g_active. */
static _Atomic uint64_t g_small_span[MS_DOMAINS];
/* Per hooked domain: critical size - MS_MEDIUM_MIN while the domain is counted, else 0: the
 * medium fast path's one compare, size - MS_MEDIUM_MIN < this (smaller sizes wrap around). */
static _Atomic uint64_t g_medium_span[MS_DOMAINS];
/* Per hooked domain: non-zero while the domain is counted and its next allocator is one of
 * CPython's own (see g_plain), so that a fast-path free may jump straight to it (below). */
static _Atomic uint64_t g_fast_free[MS_DOMAINS];
static _Atomic uint64_t g_critical = 8192;
static _Atomic int64_t g_frequency = 1000;
static _Atomic double g_rate[2] = {0.001, 0.05}; /* [small, medium] */
static _Atomic uint64_t g_epoch = 1;

/* Saved allocators, one per domain, and whether our hook is in that domain's chain. The hooks
 * find the next allocator here rather than through ctx: a thread racing PyMem_SetAllocator on
 * the RAW domain (no GIL) reads the struct's fields one by one, and may call our function with
 * the previous allocator's ctx, or the previous allocator's function with our ctx. So ours is
 * installed with the ctx of the allocator it saved (and stop() puts that allocator back): every
 * mix of the two structs' fields is then a valid call. g_next[d] itself is rewritten only when
 * what lies under us changed (link_over), never with a value a reader could tear. */
static PyMemAllocatorEx g_next[3];
static _Atomic int g_installed[3]; /* read by the drainer without the GIL (ms_hooks_moved) */
/* Per domain: the malloc of the allocator on top of the chain when the chain was last seen to
 * reach our hook (NULL: ours was on top), so that the drainer's check costs one comparison while
 * nothing changed. */
static void *(*_Atomic g_known_top[3])(void *, size_t);
static _Atomic uint64_t g_relinks;
/* Whether g_next[d] is CPython's own allocator (pymalloc or malloc: their ctx is NULL; debug
 * hooks, tracemalloc and most other hooks carry a ctx). Under one of those, the only hooked call
 * a free can make is pymalloc handing a block it does not own to PyMem_RawFree, which the
 * forwarded-free marker recognises, so the fast-path free needs neither the re-entry guard nor
 * a call frame of its own. */
static bool g_plain[MS_DOMAINS] = {[MS_DOMAIN_NATIVE] = true}; /* the C library's free calls nothing hooked */

/* The domains with allocator hooks: CPython's three and the native wrappers. */
static const int g_hooked[] = {MS_DOMAIN_OBJ, MS_DOMAIN_MEM, MS_DOMAIN_RAW, MS_DOMAIN_NATIVE};
#define MS_HOOKED (sizeof g_hooked / sizeof g_hooked[0])

int64_t ms_frequency_interval(void)
{
    return atomic_load_explicit(&g_frequency, memory_order_relaxed);
}

uint64_t ms_rate_epoch(void)
{
    return atomic_load_explicit(&g_epoch, memory_order_acquire);
}

static void set_active(int mask)
{
    /* Spans first when switching off, last when switching on: a request that sees a span then
     * also sees its domain active (a thread racing the switch may count one request either way). */
    for (unsigned i = 0; i < MS_HOOKED; i++) {
        int d = g_hooked[i];
        if (!(mask >> d & 1)) {
            atomic_store(&g_small_span[d], 0);
            atomic_store(&g_medium_span[d], 0);
            atomic_store(&g_fast_free[d], 0);
        }
    }
    atomic_store(&g_active, mask);
    for (unsigned i = 0; i < MS_HOOKED; i++) {
        int d = g_hooked[i];
        if (mask >> d & 1) {
            atomic_store(&g_small_span[d], MS_MEDIUM_MIN - 1);
            atomic_store(&g_medium_span[d], atomic_load(&g_critical) - MS_MEDIUM_MIN);
            atomic_store(&g_fast_free[d], g_plain[d]);
        }
    }
}

/* ---- sampling ---- */

uint64_t ms_rng_next(uint64_t *state)
{
    /* splitmix64: tiny state, good enough for geometric draws, no locks, no libc. */
    return ms_mix64(*state += 0x9E3779B97F4A7C15ull);
}

/* A countdown with the geometric distribution of the number of trials up to the first success
 * at rate p. Memorylessness makes "sample when it reaches zero" the same as an independent coin
 * per allocation, and lets a countdown be redrawn at any moment when the rate changes. */
void ms_draw_countdown(ms_thread_t *t, int cls)
{
    double p = atomic_load_explicit(&g_rate[cls], memory_order_relaxed);
    if (p >= 1.0) {
        t->countdown[cls] = 1;
        t->weight[cls] = 1.0f;
    } else if (p <= 0.0) {
        /* Never sampled: come back now and then only to notice a rate change. */
        t->countdown[cls] = 1 << 20;
        t->weight[cls] = 0.0f;
    } else {
        double u = ((double)(ms_rng_next(&t->rng) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
        double n = floor(log(u) / log1p(-p)) + 1.0;
        t->countdown[cls] = n > 0x1.0p40 ? (int64_t)1 << 40 : (int64_t)n;
        /* The weight is 1/p as stored (f32): the record carries exactly the weight used. */
        t->weight[cls] = (float)(1.0 / p);
    }
}

__attribute__((noinline, cold)) static void redraw_if_rates_changed(ms_thread_t *t)
{
    uint64_t e = ms_rate_epoch();
    if (t->epoch != e) {
        t->epoch = e;
        ms_draw_countdown(t, MS_CLASS_SMALL);
        ms_draw_countdown(t, MS_CLASS_MEDIUM);
    }
}

static void emit_free(ms_thread_t *t, const ms_live_entry_t *e);

/* The sampled path times one event in SLOW_TIMED_EVERY and counts its time that many times: a
 * clock read is a seventh of what a large block's alloc+free pair adds (about 20 of 146 ns),
 * and the optimizer needs the path's total, not each event's. Which events are timed comes from
 * the thread's event count through a Weyl step (its top bits), not from the sampling RNG, whose
 * stream stays the sampling decisions' own; a program whose costs repeat with a short period
 * still has every phase timed in turn.
 * The clock is the wall's: a thread preempted (or its container throttled) inside a timed event
 * would add the milliseconds it waited, times SLOW_TIMED_EVERY, to a path of a few hundred ns,
 * and one such event in a short export interval can read as a sampled path over its budget (a
 * rate cut for nothing: the rates do not cause the wait). An event counts SLOW_TIMED_MAX_NS at
 * most: far above the path's own slowest work (a deep stack's walk, a ring's new segment, a few
 * us) and far below a scheduler's time slice. */
#define SLOW_TIMED_BITS 3
#define SLOW_TIMED_EVERY (UINT64_C(1) << SLOW_TIMED_BITS)
#define SLOW_TIMED_MAX_NS UINT64_C(100000)

static inline bool slow_timed(ms_thread_t *t)
{
    uint64_t n = ms_peek(&t->slow_calls);
    return (n * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - SLOW_TIMED_BITS) == 0;
}

/* Out of line and cold: the unsampled path must not pay for its register pressure. */
__attribute__((noinline, cold)) static void sample(ms_thread_t *t, int domain, uint64_t address, uint64_t size, int cls, float weight,
                   int event, unsigned flags, uint32_t site)
{
    uint64_t t0 = ms_stamp_ns();
    if (MS_UNLIKELY(atomic_load_explicit(&ms_child_start_armed, memory_order_relaxed)))
        ms_child_start_poll(t0);
    if (site == UINT32_MAX)
        site = ms_frame_site(domain, &t->stack_memo);
    ms_live_entry_t e = {address, size, site, weight, (uint32_t)domain, 0}, stale;
    int live = ms_live_insert(&e, &t->rng, &stale);
    if (MS_UNLIKELY(stale.address != 0))
        emit_free(t, &stale); /* a block at this address whose free was never seen */
    if (MS_UNLIKELY(live != MS_LIVE_IN)) {
        flags |= MS_FLAG_NOLIVE;
        if (live == MS_LIVE_SPILL)
            ms_spill_live((uint32_t)domain, site, size, 0.0f, e.weight);
        else if (live == MS_LIVE_OUT)
            ms_bump(&t->live_untracked, 1);
    }
    ms_record_t rec = {
        .address = address,
        .size = size,
        .site = site,
        .weight = weight,
        .flags = (uint16_t)(domain | (event << MS_FLAG_EVENT_SHIFT) | (cls << MS_FLAG_CLASS_SHIFT) | flags),
        .thread = t->index,
    };
    ms_ring_push(t, &rec, ms_clock_us(t0)); /* one clock read for both */
    if (slow_timed(t)) {
        uint64_t took = ms_stamp_ns() - t0;
        ms_bump(&t->slow_ns, (took < SLOW_TIMED_MAX_NS ? took : SLOW_TIMED_MAX_NS) * SLOW_TIMED_EVERY);
    }
    ms_bump(&t->slow_calls, 1);
}

/* A Bernoulli hit under the rate the countdown was drawn with: sampled with that rate's
 * weight; the next countdown uses the rates in force now. */
__attribute__((noinline, cold)) static void countdown_expired(ms_thread_t *t, int domain, uint64_t address,
                                                              uint64_t size, int cls, int event, uint32_t site)
{
    float w = t->weight[cls];
    redraw_if_rates_changed(t);
    ms_draw_countdown(t, cls);
    if (w > 0.0f)
        sample(t, domain, address, size, cls, w, event, 0, site);
}

/* At a frequency slot: rearm the interval, and pick up rates changed since the last one. */
__attribute__((noinline, cold)) static void start_frequency_interval(ms_thread_t *t)
{
    t->freq_left = ms_frequency_interval();
    if (t->freq_left <= 0)
        t->freq_left = INT64_MAX;
    redraw_if_rates_changed(t);
}

/* Counts one successful allocation request and decides whether it is sampled. */
__attribute__((always_inline)) static inline void on_alloc(ms_thread_t *t, int domain, uint64_t address, uint64_t size, int event,
                            uint32_t site)
{
    uint64_t critical = atomic_load_explicit(&g_critical, memory_order_relaxed);
    /* Branch-free: ms_start guarantees critical >= MS_MEDIUM_MIN. */
    int cls = (size >= MS_MEDIUM_MIN) + (size >= critical);
    ms_bump(&t->bytes[domain][cls], size);
    if (cls == MS_CLASS_SMALL) {
        ms_bump(&t->small_by_size[domain][ms_bucket_of(size)], 1);
    } else {
        ms_bump(&t->allocations[domain][cls], 1);
        ms_bump(&t->by_size[domain][ms_bucket_of(size)], 1);
    }

    ms_sync_fast(t, cls);
    bool frequency_slot = --t->freq_left <= 0;
    if (MS_UNLIKELY(frequency_slot))
        start_frequency_interval(t);
    if (cls == MS_CLASS_LARGE) {
        sample(t, domain, address, size, cls, 1.0f, event, 0, site);
    } else if (MS_UNLIKELY(frequency_slot)) {
        /* Inclusion probability 1 for this allocation: weight 1. The class countdown skips it,
         * so the Bernoulli stream covers exactly the allocations outside frequency slots. */
        sample(t, domain, address, size, cls, 1.0f, event, MS_FLAG_FREQUENCY, site);
    } else if (MS_UNLIKELY(--t->countdown[cls] <= 0)) {
        countdown_expired(t, domain, address, size, cls, event, site);
    }
    ms_arm_fast(t);
}

/* Emits the free record of a sampled block that has left the live table, with the block's live
 * weight (its own, or more past the table's budget). */
__attribute__((noinline, cold)) static void emit_free(ms_thread_t *t, const ms_live_entry_t *e)
{
    uint64_t critical = atomic_load_explicit(&g_critical, memory_order_relaxed);
    int cls = e->size >= critical ? MS_CLASS_LARGE : e->size >= MS_MEDIUM_MIN ? MS_CLASS_MEDIUM : MS_CLASS_SMALL;
    ms_record_t rec = {
        .address = e->address,
        .size = e->size,
        .site = e->site,
        .weight = e->weight,
        .flags = (uint16_t)(e->domain | (MS_EVENT_FREE << MS_FLAG_EVENT_SHIFT) | (cls << MS_FLAG_CLASS_SHIFT)),
        .thread = t->index,
    };
    ms_ring_push(t, &rec, ms_clock_us(ms_stamp_ns()));
}

/* The free of a likely-sampled block (the filter said maybe), recorded before the block is
 * handed back: once freed, another thread may receive the same address. */
__attribute__((noinline, cold)) static void on_maybe_sampled_free(ms_thread_t *t, int domain, uint64_t address)
{
    ms_live_entry_t e;
    if (ms_live_remove(address, domain == MS_DOMAIN_MANUAL, &e))
        emit_free(t, &e);
}

__attribute__((always_inline)) static inline void on_free(ms_thread_t *t, int domain, uint64_t address)
{
    ms_bump(&t->deallocations[domain], 1);
    /* Filter first: the table (and its lock) is only touched for likely-sampled addresses. */
    if (MS_UNLIKELY(ms_live_maybe(address)))
        on_maybe_sampled_free(t, domain, address);
}

/* The thread-less cases (first allocation of a thread, after its exit) stay out of line, so
 * that the hooks' fast path keeps no lock flag and no extra live register. */
__attribute__((noinline, cold)) static void count_alloc_slow(int domain, uint64_t address, uint64_t size, int event,
                                                             uint32_t site)
{
    bool locked;
    ms_thread_t *t = ms_thread_acquire(&locked);
    on_alloc(t, domain, address, size, event, site);
    ms_thread_release(locked);
}

__attribute__((noinline, cold)) static void count_free_slow(int domain, uint64_t address)
{
    bool locked;
    ms_thread_t *t = ms_thread_acquire(&locked);
    on_free(t, domain, address);
    ms_thread_release(locked);
}

__attribute__((always_inline)) static inline void count_alloc(int domain, uint64_t address, uint64_t size, int event,
                                                              uint32_t site)
{
    uintptr_t w = ms_tls.word;
    if (MS_LIKELY(!(w & MS_TLS_NOSTATE)))
        on_alloc((ms_thread_t *)(w & ~(uintptr_t)MS_TLS_FLAGS), domain, address, size, event, site);
    else
        count_alloc_slow(domain, address, size, event, site);
}

__attribute__((always_inline)) static inline void count_free(int domain, uint64_t address)
{
    uintptr_t w = ms_tls.word;
    if (MS_LIKELY(!(w & MS_TLS_NOSTATE)))
        on_free((ms_thread_t *)(w & ~(uintptr_t)MS_TLS_FLAGS), domain, address);
    else
        count_free_slow(domain, address);
}

/* ---- the hooks ---- */

static inline bool tracking(int domain)
{
    return ms_tls_guard() == 0 && (atomic_load_explicit(&g_active, memory_order_relaxed) >> domain & 1);
}

/* A free on a thread the tracker ignores (its own threads) is not counted, but the free of a
 * sampled block is still the application's block going away: a collection that runs on the
 * drainer, or inside a metric callback, frees application objects. Its record goes into that
 * thread's ring like any other (or the spill), or the block would stay "live" for good. */
__attribute__((noinline, cold)) static void ignored_free(int domain, uint64_t address)
{
    if (!(atomic_load_explicit(&g_active, memory_order_relaxed) >> domain & 1) || !ms_live_maybe(address))
        return;
    ms_live_entry_t e;
    if (ms_live_remove(address, false, &e)) {
        bool locked;
        ms_thread_t *t = ms_thread_acquire(&locked);
        emit_free(t, &e);
        ms_thread_release(locked);
    }
}

/* Nested calls (inside a hook) pass straight through: only the tracker's own threads look further. */
static inline void untracked_free(int domain, uint64_t address)
{
    if (MS_UNLIKELY(ms_tls_guard() == MS_GUARD_IGNORED))
        ignored_free(domain, address);
}

/* The allocator a hook passes a call on to: the saved PyMem allocator of a CPython domain, or
 * for the native domain the C library function that the patched GOT entry pointed to (variant v
 * of the wrapper: see ms_native_next). Inlined with a constant domain, the test disappears. */
static inline void *native_next(int fn, int v)
{
    return atomic_load_explicit(&ms_native_next[fn][v], memory_order_acquire);
}

static inline void *next_malloc(int domain, int v, size_t size)
{
    if (domain == MS_DOMAIN_NATIVE)
        return ((void *(*)(size_t))native_next(MS_FN_MALLOC, v))(size);
    return g_next[domain].malloc(g_next[domain].ctx, size);
}

static inline void *next_calloc(int domain, int v, size_t nelem, size_t elsize)
{
    if (domain == MS_DOMAIN_NATIVE)
        return ((void *(*)(size_t, size_t))native_next(MS_FN_CALLOC, v))(nelem, elsize);
    return g_next[domain].calloc(g_next[domain].ctx, nelem, elsize);
}

static inline void *next_realloc(int domain, int v, void *ptr, size_t size)
{
    if (domain == MS_DOMAIN_NATIVE)
        return ((void *(*)(void *, size_t))native_next(MS_FN_REALLOC, v))(ptr, size);
    return g_next[domain].realloc(g_next[domain].ctx, ptr, size);
}

static inline void next_free(int domain, int v, void *ptr)
{
    if (domain == MS_DOMAIN_NATIVE)
        ((void (*)(void *))native_next(MS_FN_FREE, v))(ptr);
    else
        g_next[domain].free(g_next[domain].ctx, ptr);
}

__attribute__((noinline)) static void *general_malloc(int domain, int v, size_t size)
{
    if (!tracking(domain))
        return next_malloc(domain, v, size);
    ms_tls_set_guard(MS_GUARD_HOOK);
    void *p = next_malloc(domain, v, size);
    if (MS_LIKELY(p != NULL))
        count_alloc(domain, (uint64_t)(uintptr_t)p, size, MS_EVENT_ALLOC, UINT32_MAX);
    ms_tls_set_guard(0);
    return p;
}

__attribute__((noinline)) static void *general_calloc(int domain, int v, size_t nelem, size_t elsize)
{
    if (!tracking(domain))
        return next_calloc(domain, v, nelem, elsize);
    ms_tls_set_guard(MS_GUARD_HOOK);
    void *p = next_calloc(domain, v, nelem, elsize);
    if (p) {
        size_t size;
        if (__builtin_mul_overflow(nelem, elsize, &size))
            size = SIZE_MAX; /* cannot succeed; counted saturated if an allocator claims it did */
        count_alloc(domain, (uint64_t)(uintptr_t)p, size, MS_EVENT_ALLOC, UINT32_MAX);
    }
    ms_tls_set_guard(0);
    return p;
}

__attribute__((noinline)) static void *general_realloc(int domain, int v, void *ptr, size_t size)
{
    if (!tracking(domain)) {
        if (ptr)
            untracked_free(domain, (uint64_t)(uintptr_t)ptr);
        return next_realloc(domain, v, ptr, size);
    }
    ms_tls_set_guard(MS_GUARD_HOOK);
    uint64_t old = (uint64_t)(uintptr_t)ptr;
    /* Claimed, not taken out, before the call: once realloc has moved the block another thread
     * may receive the old address and enter it, and a failed realloc must find its slot again. */
    bool old_sampled = ptr && ms_live_maybe(old) && ms_live_claim(old);
    void *p = next_realloc(domain, v, ptr, size);
    bool locked;
    ms_thread_t *t = ms_thread_acquire(&locked);
    ms_live_entry_t old_entry;
    /* A NULL result is a failure, realloc(p, 0) included (CPython's allocators make that a
     * request of 1 byte, so NULL is out of memory): the old block is still valid and sampled.
     * The C library's realloc(p, 0) frees p and returns NULL: a deallocation only. */
    bool freed = p != NULL || (domain == MS_DOMAIN_NATIVE && size == 0 && ptr != NULL);
    if (old_sampled && ms_live_settle(old, freed, &old_entry) && freed)
        emit_free(t, &old_entry);
    if (ptr && freed)
        ms_bump(&t->deallocations[domain], 1);
    if (p)
        on_alloc(t, domain, (uint64_t)(uintptr_t)p, size, MS_EVENT_REALLOC, UINT32_MAX);
    ms_thread_release(locked);
    ms_tls_set_guard(0);
    return p;
}

__attribute__((noinline)) static void general_free(int domain, int v, void *ptr)
{
    if (!ptr || !tracking(domain)) {
        if (ptr)
            untracked_free(domain, (uint64_t)(uintptr_t)ptr);
        next_free(domain, v, ptr);
        return;
    }
    ms_tls_set_guard(MS_GUARD_HOOK);
    count_free(domain, (uint64_t)(uintptr_t)ptr);
    next_free(domain, v, ptr);
    ms_tls_set_guard(0);
}

/* A small request that failed: the fast path counted it before the call. Returns NULL, so that
 * the fast path ends in a tail call here and keeps no stack space for it. */
__attribute__((noinline, cold)) static void *uncount_small(int domain)
{
    ms_thread_t *t = ms_tls_thread();
    uint64_t size = ms_tls.request;
    ms_bump(&t->bytes[domain][MS_CLASS_SMALL], -size);
    ms_bump(&t->small_by_size[domain][ms_bucket_of_nonzero(size)], (uint64_t)-1);
    t->small_left++;
    return NULL;
}

/* What a fast path passes on: malloc(size), calloc(nelem, elsize) or realloc(ptr, size). */
enum alloc_kind { KIND_MALLOC, KIND_CALLOC, KIND_REALLOC };

/* The general path of a request of that kind. */
__attribute__((always_inline)) static inline void *general_alloc(int domain, int v, size_t size, size_t nelem,
                                                                 size_t elsize, void *ptr, enum alloc_kind kind)
{
    if (kind == KIND_CALLOC)
        return general_calloc(domain, v, nelem, elsize);
    if (kind == KIND_REALLOC)
        return general_realloc(domain, v, ptr, size);
    return general_malloc(domain, v, size);
}

/* A small allocation the fast path found due for a sample: its decrement is undone here, out of
 * line, so that the fast path needs the decremented count only for its sign (one instruction
 * that decrements memory and sets the flags). The general path counts it. */
__attribute__((noinline, cold)) static void *small_due(int domain, int v, size_t size, size_t nelem, size_t elsize,
                                                      void *ptr, enum alloc_kind kind)
{
    ms_tls_thread()->small_left++;
    return general_alloc(domain, v, size, nelem, elsize, ptr, kind);
}

/* The medium fast path's counterparts of the two above. */
__attribute__((noinline, cold)) static void *uncount_medium(int domain)
{
    ms_thread_t *t = ms_tls_thread();
    uint64_t size = ms_tls.request;
    ms_bump(&t->bytes[domain][MS_CLASS_MEDIUM], -size);
    ms_bump(&t->allocations[domain][MS_CLASS_MEDIUM], (uint64_t)-1);
    ms_bump(&t->by_size[domain][ms_bucket_of_nonzero(size)], (uint64_t)-1);
    t->medium_left++;
    return NULL;
}

__attribute__((noinline)) static void *medium_due(int domain, int v, size_t size, size_t nelem, size_t elsize,
                                                void *ptr, enum alloc_kind kind)
{
    ms_tls_thread()->medium_left++;
    return general_alloc(domain, v, size, nelem, elsize, ptr, kind);
}

/* A realloc the fast path counted failed: the old block was not freed either (a NULL result is a
 * failure: see general_realloc). */
__attribute__((noinline, cold)) static void *realloc_failed(int domain, void *ptr, int cls)
{
    if (ptr)
        ms_bump(&ms_tls_thread()->deallocations[domain], (uint64_t)-1);
    return cls == MS_CLASS_SMALL ? uncount_small(domain) : uncount_medium(domain);
}

__attribute__((always_inline)) static inline void *next_alloc(int domain, int v, size_t size, size_t nelem,
                                                             size_t elsize, void *ptr, enum alloc_kind kind)
{
    if (kind == KIND_CALLOC)
        return next_calloc(domain, v, nelem, elsize);
    if (kind == KIND_REALLOC)
        return next_realloc(domain, v, ptr, size);
    return next_malloc(domain, v, size);
}

/* Counted before the call to the next allocator, with the guard set around it, as below. */
__attribute__((always_inline)) static inline void *counted_call(int domain, int v, size_t size, uintptr_t w,
                                                               size_t nelem, size_t elsize, void *ptr,
                                                               enum alloc_kind kind)
{
    ms_tls.word = w + MS_GUARD_HOOK; /* w's guard bits are 0 */
    ms_tls.request = size;
    void *p = next_alloc(domain, v, size, nelem, elsize, ptr, kind);
    ms_tls.word -= MS_GUARD_HOOK;
    return p;
}

/* The fast paths of every small and medium allocation (malloc, calloc, realloc: kind, a constant
 * where it is inlined, selects the call) that is not due for a sample: counted
 * before the call, so that nothing has to live across it (no register to save), and undone in
 * the rare case the allocator fails. The guard comes off by subtraction (nested calls leave the
 * word alone: they see the guard and pass through) and the size for the undo waits in a
 * thread-local slot (only these fast paths write it, and nested calls never take them). A
 * nested call (pymalloc handing a medium block on to the RAW allocator) passes straight through
 * without a call of its own. Everything else (large requests, an event due, a thread not set
 * up yet, an ignored thread, a domain switched off) takes the general path. */
__attribute__((always_inline)) static inline void *fast_alloc(int domain, int v, size_t size, size_t nelem,
                                                             size_t elsize, void *ptr, enum alloc_kind kind)
{
    uintptr_t w = ms_tls.word;
    ms_thread_t *t = (ms_thread_t *)w;
    if (MS_LIKELY(size - 1 < atomic_load_explicit(&g_small_span[domain], memory_order_relaxed) &&
                  !(w & MS_TLS_FLAGS))) {
        if (MS_LIKELY(--t->small_left >= 0)) {
            if (kind == KIND_REALLOC && ptr)
                ms_bump(&t->deallocations[domain], 1);
            ms_bump(&t->bytes[domain][MS_CLASS_SMALL], size);
            ms_bump(&t->small_by_size[domain][ms_bucket_of_nonzero(size)], 1);
            void *p = counted_call(domain, v, size, w, nelem, elsize, ptr, kind);
            if (MS_UNLIKELY(p == NULL))
                return kind == KIND_REALLOC ? realloc_failed(domain, ptr, MS_CLASS_SMALL) : uncount_small(domain);
            return p;
        }
        return small_due(domain, v, size, nelem, elsize, ptr, kind);
    }
    if (w & MS_GUARD_HOOK)
        return next_alloc(domain, v, size, nelem, elsize, ptr, kind);
    if (size - MS_MEDIUM_MIN < atomic_load_explicit(&g_medium_span[domain], memory_order_relaxed) &&
        !(w & MS_TLS_FLAGS)) {
        if (MS_LIKELY(--t->medium_left >= 0)) {
            if (kind == KIND_REALLOC && ptr)
                ms_bump(&t->deallocations[domain], 1);
            ms_bump(&t->bytes[domain][MS_CLASS_MEDIUM], size);
            ms_bump(&t->allocations[domain][MS_CLASS_MEDIUM], 1);
            ms_bump(&t->by_size[domain][ms_bucket_of_nonzero(size)], 1);
            void *p = counted_call(domain, v, size, w, nelem, elsize, ptr, kind);
            if (MS_UNLIKELY(p == NULL))
                return kind == KIND_REALLOC ? realloc_failed(domain, ptr, MS_CLASS_MEDIUM) : uncount_medium(domain);
            return p;
        }
        return medium_due(domain, v, size, nelem, elsize, ptr, kind);
    }
    return general_alloc(domain, v, size, nelem, elsize, ptr, kind);
}

__attribute__((always_inline)) static inline void *hook_malloc(int domain, int v, size_t size)
{
    if (domain == MS_DOMAIN_RAW)
        ms_tls.forwarded = 0; /* see hook_free */
    return fast_alloc(domain, v, size, 0, 0, NULL, KIND_MALLOC);
}

/* calloc takes malloc's fast paths by its total size; a total that overflows cannot succeed and
 * takes the general path, which passes it on and counts what an allocator claims. */
__attribute__((always_inline)) static inline void *hook_calloc(int domain, int v, size_t nelem, size_t elsize)
{
    if (domain == MS_DOMAIN_RAW)
        ms_tls.forwarded = 0; /* see hook_free */
    size_t size;
    if (MS_UNLIKELY(__builtin_mul_overflow(nelem, elsize, &size)))
        return general_calloc(domain, v, nelem, elsize);
    return fast_alloc(domain, v, size, nelem, elsize, NULL, KIND_CALLOC);
}

/* realloc takes them too when the old block is not sampled (the live filter rules it out, or
 * there is none): the old block's free and the new block are counted before the call, and both
 * undone if it fails. A sampled old block, whose entry must move or go, takes the general path. */
__attribute__((always_inline)) static inline void *hook_realloc(int domain, int v, void *ptr, size_t size)
{
    if (domain == MS_DOMAIN_RAW)
        ms_tls.forwarded = 0; /* see hook_free */
    if (ptr && ms_live_maybe((uint64_t)(uintptr_t)ptr))
        return general_realloc(domain, v, ptr, size);
    return fast_alloc(domain, v, size, 0, 0, ptr, KIND_REALLOC);
}

/* The fast path of a free: a counted thread, a pointer the live filter rules out (never NULL), the
 * next allocator CPython's own. It counts and then jumps to that allocator (no guard, no frame):
 * when pymalloc hands the block on to PyMem_RawFree (a block it did not allocate), the RAW hook
 * finds the block in ms_tls.forwarded and passes it through uncounted, as the guard would have
 * done. The marker can only be mistaken for a RAW free of the very same address that reaches this
 * thread before its next OBJ/MEM free or RAW allocation: the address of a block pymalloc just
 * freed, handed back to the system and out again by malloc, all in that gap. */
__attribute__((always_inline)) static inline void hook_free(int domain, int v, void *ptr)
{
    uintptr_t w = ms_tls.word;
    ms_thread_t *t = (ms_thread_t *)w;
    if (domain == MS_DOMAIN_RAW && MS_UNLIKELY((uintptr_t)ptr == ms_tls.forwarded)) {
        ms_tls.forwarded = 0; /* counted at the OBJ/MEM free that handed it on */
        next_free(domain, v, ptr);
        return;
    }
    /* No NULL test: ms_live_clear keeps NULL's filter slot at "maybe". */
    if (MS_LIKELY(atomic_load_explicit(&g_fast_free[domain], memory_order_relaxed) != 0 && !(w & MS_TLS_FLAGS) &&
                  !ms_live_maybe((uint64_t)(uintptr_t)ptr))) {
        ms_bump(&t->deallocations[domain], 1);
        if (domain == MS_DOMAIN_OBJ || domain == MS_DOMAIN_MEM)
            ms_tls.forwarded = (uintptr_t)ptr;
        next_free(domain, v, ptr);
        return;
    }
    general_free(domain, v, ptr);
}

/* One set of entry points per domain: ctx is not trusted (see g_next). */
#define MS_DOMAIN_HOOKS(name, domain)                                                           \
    static void *name##_malloc(void *ctx, size_t size)                                          \
    {                                                                                           \
        (void)ctx;                                                                              \
        return hook_malloc(domain, 0, size);                                                    \
    }                                                                                           \
    static void *name##_calloc(void *ctx, size_t nelem, size_t elsize)                          \
    {                                                                                           \
        (void)ctx;                                                                              \
        return hook_calloc(domain, 0, nelem, elsize);                                           \
    }                                                                                           \
    static void *name##_realloc(void *ctx, void *ptr, size_t size)                              \
    {                                                                                           \
        (void)ctx;                                                                              \
        return hook_realloc(domain, 0, ptr, size);                                              \
    }                                                                                           \
    static void name##_free(void *ctx, void *ptr)                                               \
    {                                                                                           \
        (void)ctx;                                                                              \
        hook_free(domain, 0, ptr);                                                              \
    }

MS_DOMAIN_HOOKS(raw, MS_DOMAIN_RAW)
MS_DOMAIN_HOOKS(mem, MS_DOMAIN_MEM)
MS_DOMAIN_HOOKS(obj, MS_DOMAIN_OBJ)

/* ---- the native domain: wrappers of the C library's allocator (csrc/native.c points other
 * shared objects' GOT entries at them) ---- */

_Atomic(void *) ms_native_next[MS_NATIVE_FNS][MS_NATIVE_VARIANTS];

static void *call_aligned(int fn, int v, size_t alignment, size_t size)
{
    void *f = native_next(fn, v);
    if (fn == MS_FN_VALLOC || fn == MS_FN_PVALLOC)
        return ((void *(*)(size_t))f)(size);
    return ((void *(*)(size_t, size_t))f)(alignment, size);
}

/* memalign, aligned_alloc, valloc, pvalloc: rare, so the general path only. The requested size
 * is counted (pvalloc's rounding to a page is the allocator's business, as malloc's is). */
__attribute__((noinline)) static void *native_aligned(int fn, int v, size_t alignment, size_t size)
{
    if (!tracking(MS_DOMAIN_NATIVE))
        return call_aligned(fn, v, alignment, size);
    ms_tls_set_guard(MS_GUARD_HOOK);
    void *p = call_aligned(fn, v, alignment, size);
    if (p)
        count_alloc(MS_DOMAIN_NATIVE, (uint64_t)(uintptr_t)p, size, MS_EVENT_ALLOC, UINT32_MAX);
    ms_tls_set_guard(0);
    return p;
}

/* Succeeds by its return value; the block comes back through *out. */
__attribute__((noinline)) static int native_posix_memalign(int v, void **out, size_t alignment, size_t size)
{
    int (*f)(void **, size_t, size_t) = (int (*)(void **, size_t, size_t))native_next(MS_FN_POSIX_MEMALIGN, v);
    if (!tracking(MS_DOMAIN_NATIVE))
        return f(out, alignment, size);
    ms_tls_set_guard(MS_GUARD_HOOK);
    int rc = f(out, alignment, size);
    if (rc == 0 && *out != NULL)
        count_alloc(MS_DOMAIN_NATIVE, (uint64_t)(uintptr_t)*out, size, MS_EVENT_ALLOC, UINT32_MAX);
    ms_tls_set_guard(0);
    return rc;
}

/* One set of wrappers per variant: variant v passes calls on to the functions in
 * ms_native_next[*][v], so objects bound to different allocators (an RTLD_DEEPBIND object on the
 * C library's malloc beside a preloaded one) each keep theirs. */
#define MS_NATIVE_WRAPPERS(v)                                                                   \
    static void *native_malloc_##v(size_t size)                                                 \
    {                                                                                           \
        return hook_malloc(MS_DOMAIN_NATIVE, v, size);                                          \
    }                                                                                           \
    static void *native_calloc_##v(size_t nelem, size_t elsize)                                 \
    {                                                                                           \
        return hook_calloc(MS_DOMAIN_NATIVE, v, nelem, elsize);                                 \
    }                                                                                           \
    static void *native_realloc_##v(void *ptr, size_t size)                                     \
    {                                                                                           \
        return hook_realloc(MS_DOMAIN_NATIVE, v, ptr, size);                                    \
    }                                                                                           \
    static void native_free_##v(void *ptr)                                                      \
    {                                                                                           \
        hook_free(MS_DOMAIN_NATIVE, v, ptr);                                                    \
    }                                                                                           \
    static int native_posix_memalign_##v(void **out, size_t alignment, size_t size)             \
    {                                                                                           \
        return native_posix_memalign(v, out, alignment, size);                                  \
    }                                                                                           \
    static void *native_aligned_alloc_##v(size_t alignment, size_t size)                        \
    {                                                                                           \
        return native_aligned(MS_FN_ALIGNED_ALLOC, v, alignment, size);                         \
    }                                                                                           \
    static void *native_memalign_##v(size_t alignment, size_t size)                             \
    {                                                                                           \
        return native_aligned(MS_FN_MEMALIGN, v, alignment, size);                              \
    }                                                                                           \
    static void *native_valloc_##v(size_t size)                                                 \
    {                                                                                           \
        return native_aligned(MS_FN_VALLOC, v, 0, size);                                        \
    }                                                                                           \
    static void *native_pvalloc_##v(size_t size)                                                \
    {                                                                                           \
        return native_aligned(MS_FN_PVALLOC, v, 0, size);                                       \
    }

MS_NATIVE_WRAPPERS(0)
MS_NATIVE_WRAPPERS(1)
MS_NATIVE_WRAPPERS(2)
MS_NATIVE_WRAPPERS(3)

#define MS_NATIVE_ROW(fn) {(void *)fn##_0, (void *)fn##_1, (void *)fn##_2, (void *)fn##_3}
void *const ms_native_wrapper[MS_NATIVE_FNS][MS_NATIVE_VARIANTS] = {
    [MS_FN_MALLOC] = MS_NATIVE_ROW(native_malloc),
    [MS_FN_CALLOC] = MS_NATIVE_ROW(native_calloc),
    [MS_FN_REALLOC] = MS_NATIVE_ROW(native_realloc),
    [MS_FN_FREE] = MS_NATIVE_ROW(native_free),
    [MS_FN_POSIX_MEMALIGN] = MS_NATIVE_ROW(native_posix_memalign),
    [MS_FN_ALIGNED_ALLOC] = MS_NATIVE_ROW(native_aligned_alloc),
    [MS_FN_MEMALIGN] = MS_NATIVE_ROW(native_memalign),
    [MS_FN_VALLOC] = MS_NATIVE_ROW(native_valloc),
    [MS_FN_PVALLOC] = MS_NATIVE_ROW(native_pvalloc),
};

/* ctx is set to the saved allocator's at each install (see g_next); our hooks never read it. */
static PyMemAllocatorEx g_ours[3] = {
    [MS_DOMAIN_OBJ] = {NULL, obj_malloc, obj_calloc, obj_realloc, obj_free},
    [MS_DOMAIN_MEM] = {NULL, mem_malloc, mem_calloc, mem_realloc, mem_free},
    [MS_DOMAIN_RAW] = {NULL, raw_malloc, raw_calloc, raw_realloc, raw_free},
};

static const PyMemAllocatorDomain g_py_domain[3] = {
    [MS_DOMAIN_OBJ] = PYMEM_DOMAIN_OBJ,
    [MS_DOMAIN_MEM] = PYMEM_DOMAIN_MEM,
    [MS_DOMAIN_RAW] = PYMEM_DOMAIN_RAW,
};

/* ---- control ---- */

static bool rate_ok(double r)
{
    return r >= 0.0 && r <= 1.0; /* also false for NaN */
}

/* cffi releases the GIL around every call; installing allocators needs it back. */
static int start_locked(const ms_config_t *cfg);

int ms_start(const ms_config_t *cfg)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = start_locked(cfg);
    PyGILState_Release(gil);
    return rc;
}

/* Bit d: a call went through domain d's probe (reachable()). */
static _Atomic int g_probe_seen;
static void *(*g_probe_next[3])(void *, size_t);

#define MS_PROBE(name, domain)                                                                   \
    static void *name(void *ctx, size_t size)                                                    \
    {                                                                                            \
        atomic_fetch_or(&g_probe_seen, 1 << (domain));                                           \
        return g_probe_next[domain](ctx, size);                                                  \
    }
MS_PROBE(probe_obj, MS_DOMAIN_OBJ)
MS_PROBE(probe_mem, MS_DOMAIN_MEM)
MS_PROBE(probe_raw, MS_DOMAIN_RAW)
static void *(*const g_probe[3])(void *, size_t) = {probe_obj, probe_mem, probe_raw};

/* Whether a call through domain d's allocator chain reaches our hook. stop() leaves the hook in
 * the chain when another one sits on top of it, and that other tool may unlink it later:
 * tracemalloc.stop() puts back the allocator it saved, the one under ours, whether memscope is
 * running or not. Called with the GIL held (start, or the drainer's check), on a thread whose own
 * calls are not counted; any call that reaches our hook meanwhile, from any thread, shows the
 * chain still holds it. (A hook on top that forwarded some calls but not this one would make
 * start() install ours a second time, both sharing g_next: a loop. No allocator hook we know of
 * forwards selectively.) */
static bool reachable(int d)
{
    static void *(*const api_malloc[3])(size_t) = {PyObject_Malloc, PyMem_Malloc, PyMem_RawMalloc};
    static void (*const api_free[3])(void *) = {PyObject_Free, PyMem_Free, PyMem_RawFree};
    /* Our (inactive) hook passes every call on through g_next[d].malloc: for the test call, that
     * link goes through a probe that notes it was used, so the hooks themselves carry nothing
     * for this. A thread still holding the probe's address after the link is put back only
     * reaches the same next allocator through it. */
    g_probe_next[d] = g_next[d].malloc;
    atomic_fetch_and(&g_probe_seen, ~(1 << d));
    __atomic_store_n(&g_next[d].malloc, g_probe[d], __ATOMIC_RELEASE);
    void *p = api_malloc[d](64);
    __atomic_store_n(&g_next[d].malloc, g_probe_next[d], __ATOMIC_RELEASE);
    api_free[d](p);
    return atomic_load(&g_probe_seen) >> d & 1;
}

/* Puts our hook on top of domain d's chain, over cur (the allocator on top now). */
static void link_over(int d, const PyMemAllocatorEx *cur)
{
    bool plain = cur->ctx == NULL;
    if (!plain) /* before g_next changes: a fast free must not jump to a non-plain allocator */
        atomic_store(&g_fast_free[d], 0);
    if (memcmp(&g_next[d], cur, sizeof *cur) != 0) {
        /* Field by field: a thread still inside the hook from a link that another tool since
         * removed may be reading it (a window of one call, against a drain interval). */
        __atomic_store_n(&g_next[d].ctx, cur->ctx, __ATOMIC_RELEASE);
        __atomic_store_n(&g_next[d].malloc, cur->malloc, __ATOMIC_RELEASE);
        __atomic_store_n(&g_next[d].calloc, cur->calloc, __ATOMIC_RELEASE);
        __atomic_store_n(&g_next[d].realloc, cur->realloc, __ATOMIC_RELEASE);
        __atomic_store_n(&g_next[d].free, cur->free, __ATOMIC_RELEASE);
    }
    g_plain[d] = plain;
    g_ours[d].ctx = cur->ctx;
    /* The saved allocator is published before the hook that reads it. */
    atomic_thread_fence(memory_order_release);
    PyMem_SetAllocator(g_py_domain[d], &g_ours[d]);
    atomic_store(&g_known_top[d], NULL);
    atomic_store(&g_installed[d], 1);
    if (plain && (atomic_load(&g_active) >> d & 1))
        atomic_store(&g_fast_free[d], 1);
}

static int start_locked(const ms_config_t *cfg)
{
    if (atomic_load(&g_active))
        return -1;
    if (!cfg || (cfg->domains_mask & ~(7 | 1 << MS_DOMAIN_NATIVE)) || cfg->critical_size < MS_MEDIUM_MIN || !rate_ok(cfg->medium_rate) ||
        !rate_ok(cfg->small_rate) || cfg->frequency_interval > ((uint64_t)1 << 31) || cfg->ring_capacity < 16 ||
        cfg->ring_capacity > (1u << 24) || cfg->live_max_entries < 8192 || cfg->rings_max_bytes == 0 ||
        cfg->max_stack_depth < 1 || cfg->max_stack_depth > MS_MAX_STACK_DEPTH)
        return -2;
    ms_frames_configure((int)cfg->max_stack_depth);
    atomic_store(&g_critical, cfg->critical_size);
    atomic_store(&g_frequency, (int64_t)cfg->frequency_interval);
    atomic_store(&g_rate[MS_CLASS_SMALL], cfg->small_rate);
    atomic_store(&g_rate[MS_CLASS_MEDIUM], cfg->medium_rate);
    atomic_fetch_add(&g_epoch, 1);
    ms_buffers_configure(cfg->ring_capacity, cfg->rings_max_bytes, cfg->seed);
    ms_clock_tick(); /* the counter's reference (the mover's passes then scale it) */
    ms_live_configure(cfg->live_max_entries);
    ms_live_clear();
    int reinstalled = 0;
    for (int d = MS_DOMAIN_RAW; d >= MS_DOMAIN_OBJ; d--) {
        if (!(cfg->domains_mask & (1 << d)) || !g_installed[d])
            continue;
        PyMemAllocatorEx current;
        PyMem_GetAllocator(g_py_domain[d], &current);
        if (current.malloc != g_ours[d].malloc && !reachable(d)) {
            g_installed[d] = 0; /* unlinked by another tool since stop(): installed again below */
            reinstalled |= 1 << d;
        }
    }
    /* Install innermost first (RAW) so that a forwarded request never meets a half-built chain.
     * The hooks pass calls through until set_active below, which also needs g_plain. */
    for (int d = MS_DOMAIN_RAW; d >= MS_DOMAIN_OBJ; d--) {
        if (!(cfg->domains_mask & (1 << d)) || g_installed[d])
            continue;
        PyMemAllocatorEx current;
        PyMem_GetAllocator(g_py_domain[d], &current);
        link_over(d, &current);
    }
    int mask = cfg->domains_mask | (1 << MS_DOMAIN_MANUAL);
    if (mask & (1 << MS_DOMAIN_NATIVE)) {
        if (ms_native_supported())
            ms_native_install(); /* the wrappers pass calls through until set_active */
        else
            mask &= ~(1 << MS_DOMAIN_NATIVE);
    }
    set_active(mask);
    return reinstalled;
}

int ms_stop(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    set_active(0);
    ms_native_uninstall();
    for (int d = MS_DOMAIN_OBJ; d <= MS_DOMAIN_RAW; d++) {
        if (!g_installed[d])
            continue;
        PyMemAllocatorEx current;
        PyMem_GetAllocator(g_py_domain[d], &current);
        /* Only unlink ourselves when nobody was installed on top; otherwise stay in the chain as
         * a pass-through (g_active is 0), so the other hook keeps a valid next allocator. */
        if (current.malloc == g_ours[d].malloc) {
            PyMem_SetAllocator(g_py_domain[d], &g_next[d]);
            g_installed[d] = 0;
        }
    }
    /* g_next stays valid forever: threads may still be inside a hook. */
    PyGILState_Release(gil);
    return 0;
}

/* ---- the chain, checked while running ---- */

bool ms_hooks_moved(void)
{
    int active = atomic_load_explicit(&g_active, memory_order_relaxed);
    for (int d = MS_DOMAIN_OBJ; d <= MS_DOMAIN_RAW; d++) {
        if (!(active >> d & 1) || !atomic_load(&g_installed[d]))
            continue;
        /* No GIL needed: 3.12+ takes the allocators' own lock, earlier versions copy a struct
         * that changes only under the GIL (a torn copy just reads as "moved"). */
        PyMemAllocatorEx current;
        PyMem_GetAllocator(g_py_domain[d], &current);
        if (current.malloc != g_ours[d].malloc && current.malloc != atomic_load(&g_known_top[d]))
            return true;
    }
    return false;
}

int ms_hooks_relink(void)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    unsigned guard = ms_tls_guard();
    ms_tls_set_guard(MS_GUARD_IGNORED); /* the probe's calls are ours */
    int relinked = 0, active = atomic_load(&g_active);
    for (int d = MS_DOMAIN_RAW; d >= MS_DOMAIN_OBJ; d--) {
        if (!(active >> d & 1) || !atomic_load(&g_installed[d]))
            continue;
        PyMemAllocatorEx current;
        PyMem_GetAllocator(g_py_domain[d], &current);
        if (current.malloc == g_ours[d].malloc) {
            atomic_store(&g_known_top[d], NULL);
        } else if (reachable(d)) {
            atomic_store(&g_known_top[d], current.malloc); /* another hook on top, forwarding */
        } else {
            link_over(d, &current);
            relinked |= 1 << d;
        }
    }
    if (relinked)
        atomic_fetch_add(&g_relinks, 1);
    ms_tls_set_guard(guard);
    PyGILState_Release(gil);
    return relinked;
}

uint64_t ms_hooks_relinks(void)
{
    return atomic_load(&g_relinks);
}

int ms_is_active(void)
{
    return atomic_load(&g_active) != 0;
}

void ms_set_rates(double medium_rate, double small_rate)
{
    if (!rate_ok(medium_rate) || !rate_ok(small_rate))
        return;
    atomic_store(&g_rate[MS_CLASS_SMALL], small_rate);
    atomic_store(&g_rate[MS_CLASS_MEDIUM], medium_rate);
    atomic_fetch_add_explicit(&g_epoch, 1, memory_order_release);
}

void ms_get_rates(double *medium_rate, double *small_rate)
{
    *medium_rate = atomic_load(&g_rate[MS_CLASS_MEDIUM]);
    *small_rate = atomic_load(&g_rate[MS_CLASS_SMALL]);
}

int ms_set_thread_ignored(int ignored)
{
    int previous = ms_tls_guard() == MS_GUARD_IGNORED;
    ms_tls_set_guard(ignored ? MS_GUARD_IGNORED : 0);
    return previous;
}

/* ---- manual API ---- */

uint32_t ms_type_id(uint64_t key)
{
    return ms_site_intern(NULL, 0, MS_DOMAIN_MANUAL, key);
}

void ms_track_allocation(uint64_t address, uint64_t size, uint32_t type_id)
{
    if (!tracking(MS_DOMAIN_MANUAL) || address == 0)
        return;
    if (type_id >= MS_MAX_IDS)
        type_id = MS_ID_NATIVE + MS_DOMAIN_MANUAL;
    ms_tls_set_guard(MS_GUARD_HOOK);
    count_alloc(MS_DOMAIN_MANUAL, address, size, MS_EVENT_ALLOC, type_id);
    ms_tls_set_guard(0);
}

void ms_track_deallocation(uint64_t address)
{
    if (!tracking(MS_DOMAIN_MANUAL) || address == 0)
        return;
    ms_tls_set_guard(MS_GUARD_HOOK);
    count_free(MS_DOMAIN_MANUAL, address);
    ms_tls_set_guard(0);
}

/* ---- fork ---- */

static _Atomic int g_active_before_fork;

/* Runs inside fork() in the child: no Python, no allocation, no work beyond resetting locks
 * (the live table's bucket locks the most: read, and written only where held). Tracking pauses
 * until the Python side calls ms_after_fork_child, so that a fork+exec child pays almost
 * nothing. */
static void fork_child_quick(void)
{
    atomic_store(&g_active_before_fork, atomic_load(&g_active));
    set_active(0);
    ms_buffers_fork_child_quick();
    ms_sites_fork_child();
    ms_live_fork_child_locks();
    ms_spill_fork_child_lock();
    ms_child_fork_reset();
    ms_native_fork_child();
}

void ms_after_fork_child(void)
{
    ms_buffers_fork_child();
    ms_live_fork_child();
    ms_spill_clear();
    atomic_fetch_add(&g_epoch, 1);
    set_active(atomic_load(&g_active_before_fork));
}

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, fork_child_quick);
}

__attribute__((constructor)) static void ms_hooks_init(void)
{
    pthread_once(&g_atfork_once, register_atfork);
}
