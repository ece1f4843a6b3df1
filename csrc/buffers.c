/*
 * buffers.c: per-thread state, the single-producer/single-consumer rings of records, the
 * registry of threads, and the drainer's side of both.
 *
 * Each thread writes only its own state (counters, countdowns, ring head); the drainer reads
 * counters with relaxed loads and moves records out of rings under the registry lock. Threads
 * that exited are drained, folded into the retired totals and freed by the drainer, never by
 * themselves (their TLS destructor only marks them dead).
 */
#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "internal.h"

__thread struct ms_tls ms_tls __attribute__((tls_model("initial-exec"))) = {MS_TLS_NOSTATE, 0, 0};

static pthread_mutex_t g_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ms_thread_t *g_threads;      /* registered threads, under g_registry_lock */
static uint64_t g_threads_seen;     /* under g_registry_lock */
static uint64_t g_next_index;       /* under g_registry_lock */

/* Counters of exited threads, folded in by the drainer (under g_registry_lock). Only the
 * per-thread fields of ms_counters_t are used. */
static ms_counters_t g_retired;

/* The state used, under g_orphan_lock, by threads that have none: after their TLS destructor
 * ran (late frees at thread exit) or when calloc failed. Never freed. */
static ms_thread_t g_orphan;
static ms_spin_t g_orphan_lock;

static _Atomic uint64_t g_ring_capacity = 16384;
static _Atomic uint64_t g_seed;
static _Atomic uint64_t g_ring_bytes; /* memory held by rings and thread states */
static _Atomic uint64_t g_rings_max_bytes = (uint64_t)64 << 20; /* no new ring past this */

/* Record time: microseconds on the monotonic clock since g_mono0_us; a ring holds the low 32
 * bits, and the high bits in marker records (MS_EVENT_EPOCH). */
static _Atomic uint64_t g_mono0_us;
static _Atomic uint64_t g_real0_us;

/* Wakes the drainer early when a ring is half full, so that bursts are drained before they
 * overflow. A semaphore: sem_post takes no lock and allocates nothing, so a hook may call it. */
static sem_t g_work;
static pthread_once_t g_work_once = PTHREAD_ONCE_INIT;

static void init_work(void)
{
    sem_init(&g_work, 0, 0);
}

void ms_wake_drainer(void)
{
    pthread_once(&g_work_once, init_work);
    int pending = 0;
    if (sem_getvalue(&g_work, &pending) == 0 && pending > 0)
        return; /* a wake-up is already queued */
    sem_post(&g_work);
}

static uint64_t pending_records(void);

/* Whether the drainer was woken (1) or timeout_ms passed (0). The deadline is on the monotonic
 * clock: on the wall clock (sem_timedwait's), a step backwards would stall the drainer for as
 * long as the step, and the rings would overflow meanwhile. */
static int wait_once(uint32_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000u;
    deadline.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (sem_clockwait(&g_work, CLOCK_MONOTONIC, &deadline) != 0) {
        if (errno != EINTR)
            return 0;
    }
    return 1;
}

int ms_wait_for_work(uint32_t timeout_ms, uint32_t min_records)
{
    pthread_once(&g_work_once, init_work);
    /* A periodic drain with little to move is skipped, up to MS_DRAIN_SKIPS in a row: each time
     * the drainer comes back from here it must take the GIL back from the application. */
    for (int skipped = 0;; skipped++) {
        if (wait_once(timeout_ms))
            return 1;
        if (skipped >= MS_DRAIN_SKIPS || min_records == 0 || pending_records() >= min_records || ms_hooks_moved())
            return 0;
    }
}

static pthread_key_t g_exit_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

void ms_spin_lock(ms_spin_t *lock)
{
    for (unsigned spins = 0; atomic_exchange_explicit(lock, 1, memory_order_acquire); spins++) {
        if (spins > 64)
            sched_yield();
    }
}

static uint64_t mono_us(void)
{
    return ms_now_ns() / 1000u;
}

uint64_t ms_clock_us(uint64_t now_ns)
{
    return now_ns / 1000u - atomic_load_explicit(&g_mono0_us, memory_order_relaxed);
}

static void thread_exit(void *arg)
{
    ms_thread_t *t = arg;
    ms_tls_set_thread(MS_THREAD_DEAD);
    /* Release: every counter and ring write of this thread happens before the drainer frees it. */
    atomic_store_explicit(&t->dead, 1, memory_order_release);
}

static bool g_key_ok;

static void make_key(void)
{
    g_key_ok = pthread_key_create(&g_exit_key, thread_exit) == 0;
}

void ms_thread_reset_sampling(ms_thread_t *t)
{
    int64_t interval = ms_frequency_interval();
    /* A random phase for the frequency guarantee, so that periodic programs do not always have
     * the same allocation in the guaranteed slot. */
    t->freq_left = interval > 0 ? 1 + (int64_t)(ms_rng_next(&t->rng) % (uint64_t)interval) : INT64_MAX;
    t->epoch = ms_rate_epoch();
    ms_draw_countdown(t, MS_CLASS_SMALL);
    ms_draw_countdown(t, MS_CLASS_MEDIUM);
    ms_arm_small(t);
}

static ms_thread_t *attach(void)
{
    pthread_once(&g_key_once, make_key);
    /* Without a key of our own (the process used up its keys) a thread cannot have a state that
     * is handed over at its exit: it counts in the shared orphan state. pthread_setspecific on an
     * uncreated key would write some other library's slot (key 0 is CPython's own). */
    if (!g_key_ok)
        return NULL;
    /* Cache-line aligned: no two threads' hot counters share a line. */
    void *mem = NULL;
    if (posix_memalign(&mem, 64, sizeof(ms_thread_t)) != 0)
        return NULL;
    ms_thread_t *t = memset(mem, 0, sizeof(ms_thread_t));
    if (pthread_setspecific(g_exit_key, t) != 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&g_registry_lock);
    /* Indices recycle after 65,535 threads (records name a thread only to tell threads apart
     * within a short window); UINT16_MAX stays the orphan state's. */
    t->index = (uint16_t)(g_next_index++ % UINT16_MAX);
    g_threads_seen++;
    t->next = g_threads;
    g_threads = t;
    pthread_mutex_unlock(&g_registry_lock);
    t->rng = atomic_load(&g_seed) ^ (0xD1B54A32D192ED03ull * ((uint64_t)t->index + 1));
    ms_thread_reset_sampling(t);
    atomic_fetch_add(&g_ring_bytes, sizeof *t);
    ms_tls_set_thread(t);
    return t;
}

ms_thread_t *ms_thread_attach_or_orphan(bool *locked)
{
    ms_thread_t *t = ms_tls_thread();
    if (t == NULL && (t = attach()) != NULL) {
        *locked = false;
        return t;
    }
    ms_spin_lock(&g_orphan_lock);
    *locked = true;
    return &g_orphan;
}

void ms_orphan_unlock(void)
{
    ms_spin_unlock(&g_orphan_lock);
}

static uint64_t ring_bytes(const ms_ring_t *r)
{
    return sizeof *r + (r->mask + 1) * sizeof(ms_record_t);
}

/* Rings replaced by their producer (MAX_RECORDS_PER_THREAD changed across a restart), freed by
 * the drainer at its next call: the drainer may be reading one right now, and drains run one at
 * a time under the registry lock, so the next call is the first moment nobody can. */
static ms_ring_t *g_replaced_rings;
static ms_spin_t g_replaced_lock;

/* Gives t a ring of the configured capacity: on first use, or once its old ring is empty (so no
 * record is stranded) when the capacity setting changed. Returns NULL without memory. */
static ms_ring_t *ring_for(ms_thread_t *t, ms_ring_t *old)
{
    uint64_t capacity = atomic_load(&g_ring_capacity);
    if (old) {
        bool empty = atomic_load_explicit(&old->head, memory_order_relaxed) ==
                     atomic_load_explicit(&old->tail, memory_order_acquire);
        if (old->mask + 1 == capacity || !empty)
            return old;
    }
    /* The rings' budget (MAX_RING_MEMORY): past it a thread's records go to the spill. Checked
     * before the allocation, so a race may overshoot it by a ring per thread racing. */
    uint64_t size = sizeof(ms_ring_t) + capacity * sizeof(ms_record_t);
    if (atomic_load(&g_ring_bytes) + size > atomic_load(&g_rings_max_bytes))
        return old;
    ms_ring_t *r = calloc(1, size);
    if (!r)
        return old;
    r->mask = capacity - 1;
    atomic_fetch_add(&g_ring_bytes, ring_bytes(r));
    atomic_store_explicit(&t->ring, r, memory_order_release);
    if (old) {
        ms_spin_lock(&g_replaced_lock);
        old->replaced_next = g_replaced_rings;
        g_replaced_rings = old;
        ms_spin_unlock(&g_replaced_lock);
    }
    return r;
}

/* Never blocks the application: a record with no room is counted and spilled. */
__attribute__((noinline, cold)) static void drop(ms_thread_t *t, const ms_record_t *rec)
{
    ms_bump(&t->dropped, 1);
    ms_spill_record(rec);
}

void ms_ring_push(ms_thread_t *t, ms_record_t *rec, uint64_t time_us)
{
    ms_ring_t *r = atomic_load_explicit(&t->ring, memory_order_relaxed);
    if (MS_UNLIKELY(r == NULL || r->mask + 1 != atomic_load_explicit(&g_ring_capacity, memory_order_relaxed)))
        r = ring_for(t, r);
    if (MS_UNLIKELY(r == NULL)) {
        drop(t, rec);
        return;
    }
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint64_t start = head, high = time_us >> 32;
    bool marker = MS_UNLIKELY(high != r->producer_high);
    if (head + marker - tail > r->mask) {
        drop(t, rec);
        return;
    }
    if (marker) {
        r->slots[head & r->mask] = (ms_record_t){.address = high, .flags = MS_EVENT_EPOCH << MS_FLAG_EVENT_SHIFT};
        r->producer_high = high;
        head++;
    }
    rec->time_delta_us = (uint32_t)time_us;
    r->slots[head & r->mask] = *rec;
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
    ms_bump(&t->samples, 1);
    uint64_t half = (r->mask + 1) / 2;
    if (MS_UNLIKELY(start - tail < half && head + 1 - tail >= half))
        ms_wake_drainer();
}

void ms_buffers_configure(uint64_t ring_capacity, uint64_t rings_max_bytes, uint64_t seed)
{
    uint64_t capacity = 16;
    while (capacity < ring_capacity)
        capacity <<= 1;
    atomic_store(&g_ring_capacity, capacity);
    atomic_store(&g_rings_max_bytes, rings_max_bytes);
    if (seed == 0)
        seed = ms_now_ns() ^ ((uint64_t)(uintptr_t)&seed << 16);
    atomic_store(&g_seed, seed);
    if (atomic_load(&g_mono0_us) == 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        atomic_store(&g_real0_us, (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec);
        atomic_store(&g_mono0_us, mono_us());
    }
    /* Reseed the calling thread (the others own their state), so that a fixed seed gives a
     * fixed sample for work that starts on this thread after ms_start. */
    ms_thread_t *self = ms_tls_thread();
    if (self && self != MS_THREAD_DEAD) {
        self->rng = seed ^ (0xD1B54A32D192ED03ull * ((uint64_t)self->index + 1));
        ms_thread_reset_sampling(self);
    }
    ms_spin_lock(&g_orphan_lock);
    g_orphan.index = UINT16_MAX;
    ms_spin_unlock(&g_orphan_lock);
}

/* ---- drainer side ---- */

static bool is_epoch(const ms_record_t *rec)
{
    return (rec->flags & MS_FLAG_EVENT_MASK) >> MS_FLAG_EVENT_SHIFT == MS_EVENT_EPOCH;
}

/* The full time of the first record waiting in r, or UINT64_MAX if none (markers only read). */
static uint64_t first_time(ms_ring_t *r)
{
    if (!r)
        return UINT64_MAX;
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t high = r->consumer_high;
    for (; tail != head; tail++) {
        const ms_record_t *rec = &r->slots[tail & r->mask];
        if (!is_epoch(rec))
            return high << 32 | rec->time_delta_us;
        high = rec->address;
    }
    return UINT64_MAX;
}

/* Moves up to room records out of r, each with its full time less base (markers consumed, not
 * copied); stops before a record more than 2^32-1 us after base and sets *more. */
static size_t drain_ring(ms_ring_t *r, ms_record_t *out, size_t room, uint64_t base, uint32_t *more)
{
    if (!r)
        return 0;
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t n = 0;
    for (; tail != head; tail++) {
        const ms_record_t *rec = &r->slots[tail & r->mask];
        if (is_epoch(rec)) {
            r->consumer_high = rec->address;
            continue;
        }
        uint64_t time = r->consumer_high << 32 | rec->time_delta_us;
        /* (A record older than base was pushed after base was taken: it leads the next drain.) */
        if (n == room || time < base || time - base > UINT32_MAX) {
            *more = 1;
            break;
        }
        out[n] = *rec;
        out[n].time_delta_us = (uint32_t)(time - base);
        n++;
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    return n;
}

/* Records waiting in every ring. Under the registry lock (thread states and replaced rings are
 * freed under it) and the orphan lock, as ms_drain reads them. */
static uint64_t pending_records(void)
{
    uint64_t n = 0;
    pthread_mutex_lock(&g_registry_lock);
    for (ms_thread_t *t = g_threads; t; t = t->next) {
        ms_ring_t *r = atomic_load_explicit(&t->ring, memory_order_acquire);
        if (r)
            n += atomic_load_explicit(&r->head, memory_order_acquire) - atomic_load_explicit(&r->tail, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    ms_ring_t *r = atomic_load(&g_orphan.ring);
    if (r)
        n += atomic_load_explicit(&r->head, memory_order_acquire) - atomic_load_explicit(&r->tail, memory_order_relaxed);
    ms_spin_unlock(&g_orphan_lock);
    return n;
}

static bool ring_empty(ms_ring_t *r)
{
    return !r || atomic_load_explicit(&r->head, memory_order_acquire) ==
                     atomic_load_explicit(&r->tail, memory_order_relaxed);
}

static void free_thread(ms_thread_t *t)
{
    ms_ring_t *r = atomic_load(&t->ring);
    if (r) {
        atomic_fetch_sub(&g_ring_bytes, ring_bytes(r));
        free(r);
    }
    atomic_fetch_sub(&g_ring_bytes, sizeof *t);
    free(t);
}

size_t ms_drain(ms_record_t *out, size_t capacity, ms_drain_info_t *info)
{
    size_t n = 0;
    info->more = 0;
    pthread_mutex_lock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    /* Every ring is in time order: the earliest record waiting is the first of some ring. */
    uint64_t base = first_time(atomic_load(&g_orphan.ring));
    ms_spin_unlock(&g_orphan_lock);
    for (ms_thread_t *t = g_threads; t; t = t->next) {
        uint64_t first = first_time(atomic_load_explicit(&t->ring, memory_order_acquire));
        base = first < base ? first : base;
    }
    ms_spin_lock(&g_replaced_lock);
    ms_ring_t *replaced = g_replaced_rings;
    g_replaced_rings = NULL;
    ms_spin_unlock(&g_replaced_lock);
    while (replaced) {
        ms_ring_t *next = replaced->replaced_next;
        atomic_fetch_sub(&g_ring_bytes, ring_bytes(replaced));
        free(replaced);
        replaced = next;
    }
    for (ms_thread_t **link = &g_threads; *link;) {
        ms_thread_t *t = *link;
        bool dead = atomic_load_explicit(&t->dead, memory_order_acquire);
        ms_ring_t *r = atomic_load_explicit(&t->ring, memory_order_acquire);
        n += drain_ring(r, out + n, capacity - n, base, &info->more);
        if (dead && ring_empty(r)) {
            ms_thread_add(&g_retired, t);
            *link = t->next;
            free_thread(t);
        } else {
            link = &t->next;
        }
    }
    pthread_mutex_unlock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    n += drain_ring(atomic_load(&g_orphan.ring), out + n, capacity - n, base, &info->more);
    ms_spin_unlock(&g_orphan_lock);
    info->base_us = atomic_load(&g_real0_us) + (n > 0 ? base : 0);
    return n;
}

size_t ms_drain_reduce(ms_record_t *out, size_t capacity, ms_drain_info_t *info, ms_summary_t *summary)
{
    info->relinked = ms_hooks_moved() ? (uint32_t)ms_hooks_relink() : 0;
    ms_native_poll();
    size_t n = ms_drain(out, capacity, info);
    if (n > 0)
        ms_reduce(out, n, summary);
    ms_spill_fold(summary);
    return n;
}

void ms_thread_add(ms_counters_t *out, ms_thread_t *t)
{
    for (int d = 0; d < MS_DOMAINS; d++) {
        for (int c = 0; c < MS_CLASSES; c++) {
            out->allocations[d][c] += ms_peek(&t->allocations[d][c]);
            out->bytes[d][c] += ms_peek(&t->bytes[d][c]);
        }
        out->deallocations[d] += ms_peek(&t->deallocations[d]);
        for (int b = 0; b < MS_BUCKETS; b++)
            out->by_size[d][b] += ms_peek(&t->by_size[d][b]);
        for (int b = 0; b < MS_SMALL_BUCKETS; b++) {
            uint64_t n = ms_peek(&t->small_by_size[d][b]);
            out->allocations[d][MS_CLASS_SMALL] += n;
            out->by_size[d][b] += n;
        }
    }
    out->samples += ms_peek(&t->samples);
    out->dropped += ms_peek(&t->dropped);
    out->live_untracked += ms_peek(&t->live_untracked);
    out->slow_path_calls += ms_peek(&t->slow_calls);
    out->slow_path_ns += ms_peek(&t->slow_ns);
}

void ms_read_counters(ms_counters_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_registry_lock);
    for (ms_thread_t *t = g_threads; t; t = t->next) {
        ms_thread_add(out, t);
        out->threads_live++;
    }
    for (int d = 0; d < MS_DOMAINS; d++) {
        for (int c = 0; c < MS_CLASSES; c++) {
            out->allocations[d][c] += g_retired.allocations[d][c];
            out->bytes[d][c] += g_retired.bytes[d][c];
        }
        out->deallocations[d] += g_retired.deallocations[d];
        for (int b = 0; b < MS_BUCKETS; b++)
            out->by_size[d][b] += g_retired.by_size[d][b];
    }
    out->samples += g_retired.samples;
    out->dropped += g_retired.dropped;
    out->live_untracked += g_retired.live_untracked;
    out->slow_path_calls += g_retired.slow_path_calls;
    out->slow_path_ns += g_retired.slow_path_ns;
    out->threads_seen = g_threads_seen;
    pthread_mutex_unlock(&g_registry_lock);
    /* The orphan state's counters are written under its lock, but relaxed reads are enough for
     * a monotonic snapshot. */
    ms_thread_add(out, &g_orphan);
    out->ids_used = ms_sites_used();
    out->footprint_bytes = ms_buffers_footprint() + ms_live_footprint();
    ms_live_stats(&out->live_entries, &out->live_capacity, &out->live_threshold);
    out->relinks = ms_hooks_relinks();
    ms_native_stats(&out->native_objects, &out->native_entries, &out->native_skipped);
    out->stack_overflows = ms_sites_stack_overflows();
}

uint64_t ms_buffers_footprint(void)
{
    return atomic_load(&g_ring_bytes);
}

/* ---- fork ---- */

/* In the child, inside fork(): the other threads are gone, possibly holding locks. */
void ms_buffers_fork_child_quick(void)
{
    pthread_mutex_init(&g_registry_lock, NULL);
    atomic_store(&g_orphan_lock, 0);
    atomic_store(&g_replaced_lock, 0);
    /* The drainer thread is gone; the child's own drainer starts on a fresh semaphore. */
    pthread_once(&g_work_once, init_work);
    sem_init(&g_work, 0, 0);
}

/* An empty ring whose time markers start again from the clock origin's epoch. */
static void ring_reset(ms_ring_t *r)
{
    atomic_store(&r->head, 0);
    atomic_store(&r->tail, 0);
    r->producer_high = r->consumer_high = 0;
}

/* The child starts from zero: the parent's threads, counters and records are not inherited.
 * The parent's thread states are abandoned rather than freed: they are copy-on-write pages the
 * child never touches, and their list may have been mid-update when fork() ran. */
void ms_buffers_fork_child(void)
{
    pthread_mutex_lock(&g_registry_lock);
    ms_thread_t *self = ms_tls_thread();
    g_threads = NULL;
    g_threads_seen = 0;
    memset(&g_retired, 0, sizeof g_retired);
    ms_ring_t *orphan_ring = atomic_load(&g_orphan.ring);
    memset(&g_orphan, 0, sizeof g_orphan);
    g_orphan.index = UINT16_MAX;
    if (orphan_ring) {
        ring_reset(orphan_ring);
        atomic_store(&g_orphan.ring, orphan_ring);
    }
    uint64_t bytes = orphan_ring ? sizeof *orphan_ring + (orphan_ring->mask + 1) * sizeof(ms_record_t) : 0;
    /* Rings the parent's threads replaced: not counted in the child's total below, so they are
     * freed here rather than by the next drain, which would subtract them from it (a total that
     * wrapped around). Freed, not abandoned: a replaced ring can be large, and once the parent
     * frees its own copy the child's would be the only one left holding the pages. */
    for (ms_ring_t *r = g_replaced_rings, *next; r; r = next) {
        next = r->replaced_next;
        free(r);
    }
    g_replaced_rings = NULL;
    if (self && self != MS_THREAD_DEAD) {
        ms_ring_t *ring = atomic_load(&self->ring);
        uint16_t index = self->index;
        memset(self, 0, sizeof *self);
        self->index = index;
        self->rng = atomic_load(&g_seed) ^ ms_now_ns();
        if (ring) {
            ring_reset(ring);
            atomic_store(&self->ring, ring);
            bytes += sizeof *ring + (ring->mask + 1) * sizeof(ms_record_t);
        }
        bytes += sizeof *self;
        ms_thread_reset_sampling(self);
        g_threads = self;
        g_threads_seen = 1;
    }
    atomic_store(&g_ring_bytes, bytes);
    pthread_mutex_unlock(&g_registry_lock);
}
