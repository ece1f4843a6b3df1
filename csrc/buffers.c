/*
 * buffers.c: per-thread state, the registry of threads, and the drainer's pass over both.
 *
 * Each thread writes only its own state (counters, countdowns, its buffer's head); the drainer
 * reads counters with relaxed loads and moves records out of the buffers (rings.c) under the
 * registry lock. Threads that exited are drained, folded into the retired totals and given back
 * by the drainer, never by themselves (their TLS destructor only marks them dead).
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
 * ran (late frees at thread exit) or without memory for one. Never freed. */
static ms_thread_t g_orphan;
static ms_spin_t g_orphan_lock;

static _Atomic uint64_t g_seed;

/* Record time: microseconds on the monotonic clock since g_mono0_us; a ring holds the low 32
 * bits, and the high bits in marker records (MS_EVENT_EPOCH). */
static _Atomic uint64_t g_mono0_us;
static _Atomic uint64_t g_real0_us;

/* Wakes the drainer early when a thread's buffer holds half its maximum (rings.c), so that
 * bursts are drained before they overflow it, and when threads that exited pile up. A
 * semaphore: sem_post takes no lock and allocates nothing, so a hook may call it. */
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

/* Exited threads not given back yet. Past MS_EXITED_WAKE of them the mover is woken: a
 * thread-per-request program would otherwise hold the pages of every thread that exited since
 * the last periodic drain, up to five intervals apart when few records wait. */
static _Atomic uint64_t g_exited;
#define MS_EXITED_WAKE 64

int ms_sem_wait_ms(sem_t *sem, uint32_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000u;
    deadline.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (sem_clockwait(sem, CLOCK_MONOTONIC, &deadline) != 0) {
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
        if (ms_sem_wait_ms(&g_work, timeout_ms))
            return 1;
        if (min_records == 0 || ms_hooks_moved() || atomic_load(&g_exited) >= MS_EXITED_WAKE)
            return 0;
        uint64_t pending = pending_records();
        if (pending >= min_records || (skipped >= MS_DRAIN_SKIPS && (pending > 0 || atomic_load(&g_exited) > 0)))
            return 0;
    }
}

static pthread_key_t g_exit_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

void ms_spin_lock_wait(ms_spin_t *lock)
{
    for (unsigned spins = 1; atomic_exchange_explicit(lock, 1, memory_order_acquire); spins++) {
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
    if (atomic_fetch_add(&g_exited, 1) + 1 >= MS_EXITED_WAKE)
        ms_wake_mover();
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
    ms_arm_fast(t);
}

static ms_thread_t *attach(void)
{
    pthread_once(&g_key_once, make_key);
    /* Without a key of our own (the process used up its keys) a thread cannot have a state that
     * is handed over at its exit: it counts in the shared orphan state. pthread_setspecific on an
     * uncreated key would write some other library's slot (key 0 is CPython's own). */
    if (!g_key_ok)
        return NULL;
    /* Pages of its own (zeroed, page-aligned: no two threads' hot counters share a line), given
     * back to the system when the thread is retired (see rings.c on malloc'd memory). */
    ms_thread_t *t = ms_pages_alloc(sizeof(ms_thread_t));
    if (!t)
        return NULL;
    if (pthread_setspecific(g_exit_key, t) != 0) {
        ms_pages_free(t, sizeof *t);
        return NULL;
    }
    /* The rest of the last page holds the thread's first records. */
    uint64_t used = (sizeof *t + 63) / 64 * 64;
    ms_rings_embed(t, (char *)t + used, ms_pages_size(sizeof *t) - used);
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

void ms_buffers_configure(uint64_t ring_capacity, uint64_t rings_max_bytes, uint64_t seed)
{
    ms_rings_configure(ring_capacity, rings_max_bytes);
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

/* Records waiting in every buffer. Under the registry lock (thread states and segments are
 * given back under it) and the orphan lock, as ms_drain reads them. */
static uint64_t pending_records(void)
{
    uint64_t n = 0;
    pthread_mutex_lock(&g_registry_lock);
    for (ms_thread_t *t = g_threads; t; t = t->next)
        n += ms_rings_pending(t);
    pthread_mutex_unlock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    n += ms_rings_pending(&g_orphan);
    ms_spin_unlock(&g_orphan_lock);
    return n + ms_stage_pending();
}

/* Passes over the rings (the mover's and the drainer's), and the sum over them of the most
 * records one thread's ring gave: how full rings get before they are emptied. */
static _Atomic uint64_t g_passes, g_fullest_sum;

uint64_t ms_ring_passes(uint64_t *fullest_sum)
{
    *fullest_sum = atomic_load(&g_fullest_sum);
    return atomic_load(&g_passes);
}

size_t ms_rings_drain_all(ms_record_t *out, size_t capacity, ms_drain_info_t *info)
{
    size_t n = 0;
    info->more = 0;
    ms_ring_t *retired = NULL;
    ms_thread_t *gone = NULL;
    pthread_mutex_lock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    /* Every buffer is in time order: the earliest record waiting is the first of some buffer. */
    uint64_t base = ms_rings_first_time(atomic_load(&g_orphan.oldest));
    ms_spin_unlock(&g_orphan_lock);
    for (ms_thread_t *t = g_threads; t; t = t->next) {
        uint64_t first = ms_rings_first_time(atomic_load_explicit(&t->oldest, memory_order_acquire));
        base = first < base ? first : base;
    }
    size_t fullest = 0;
    for (ms_thread_t **link = &g_threads; *link;) {
        ms_thread_t *t = *link;
        bool dead = atomic_load_explicit(&t->dead, memory_order_acquire);
        size_t got = ms_rings_drain(t, out + n, capacity - n, base, &info->more, &retired);
        fullest = got > fullest ? got : fullest;
        n += got;
        if (dead && ms_rings_empty(t)) {
            ms_thread_add(&g_retired, t);
            *link = t->next;
            ms_rings_retire_all(t, &retired);
            t->next = gone;
            gone = t;
            atomic_fetch_sub(&g_exited, 1);
        } else {
            link = &t->next;
        }
    }
    pthread_mutex_unlock(&g_registry_lock);
    ms_spin_lock(&g_orphan_lock);
    size_t got = ms_rings_drain(&g_orphan, out + n, capacity - n, base, &info->more, &retired);
    ms_spin_unlock(&g_orphan_lock);
    n += got;
    atomic_fetch_add(&g_passes, 1);
    atomic_fetch_add(&g_fullest_sum, got > fullest ? got : fullest);
    /* Unmapped with no lock held: an unmap may take a while (other CPUs' TLBs are flushed), and
     * a thread's first allocation waits for the registry lock, a thread-less hook for the
     * orphan lock. Segments first: an exited thread's first one lies in its state's page. */
    ms_rings_unmap(retired);
    while (gone) {
        ms_thread_t *next = gone->next;
        ms_pages_free(gone, sizeof *gone);
        gone = next;
    }
    info->base_us = atomic_load(&g_real0_us) + (n > 0 ? base : 0);
    return n;
}

size_t ms_drain_reduce(ms_record_t *out, size_t capacity, ms_drain_info_t *info, ms_summary_t *summary)
{
    info->relinked = ms_hooks_moved() ? (uint32_t)ms_hooks_relink() : 0;
    size_t n = ms_drain(out, capacity, info);
    if (n > 0)
        ms_reduce(out, n, summary);
    /* After ms_drain: the mover may have reduced more meanwhile. */
    info->folded = ms_stage_fold(summary);
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
    return ms_pages_held() + ms_stage_footprint();
}

/* ---- fork ---- */

/* In the child, inside fork(): the other threads are gone, possibly holding locks. */
void ms_buffers_fork_child_quick(void)
{
    pthread_mutex_init(&g_registry_lock, NULL);
    atomic_store(&g_orphan_lock, 0);
    /* The drainer thread is gone; the child's own drainer starts on a fresh semaphore. */
    pthread_once(&g_work_once, init_work);
    sem_init(&g_work, 0, 0);
    ms_stage_fork_child();
}

/* The child starts from zero: the parent's threads, counters and records are not inherited.
 * The parent's thread states are abandoned rather than given back: they are copy-on-write pages
 * the child never touches, and their list may have been mid-update when fork() ran. */
void ms_buffers_fork_child(void)
{
    pthread_mutex_lock(&g_registry_lock);
    ms_thread_t *self = ms_tls_thread();
    g_threads = NULL;
    g_threads_seen = 0;
    atomic_store(&g_exited, 0);
    memset(&g_retired, 0, sizeof g_retired);
    /* The orphan state keeps its buffer's newest segment (its lock was reset inside fork()). */
    ms_ring_t *oldest = atomic_load(&g_orphan.oldest);
    memset(&g_orphan, 0, sizeof g_orphan);
    g_orphan.index = UINT16_MAX;
    uint64_t bytes = ms_rings_fork_reset(&g_orphan, oldest);
    if (self && self != MS_THREAD_DEAD) {
        oldest = atomic_load(&self->oldest);
        uint16_t index = self->index;
        memset(self, 0, sizeof *self);
        self->index = index;
        self->rng = atomic_load(&g_seed) ^ ms_now_ns();
        bytes += ms_rings_fork_reset(self, oldest);
        bytes += ms_pages_size(sizeof *self);
        ms_thread_reset_sampling(self);
        g_threads = self;
        g_threads_seen = 1;
    }
    ms_pages_set_held(bytes);
    pthread_mutex_unlock(&g_registry_lock);
}
