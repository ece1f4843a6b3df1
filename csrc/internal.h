/*
 * internal.h: what the C files of the sampler share with each other and nobody else.
 * The public interface is memscope.h; this header is never read by cffi.
 */
#ifndef MEMSCOPE_INTERNAL_H
#define MEMSCOPE_INTERNAL_H

#include "memscope.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#define MS_LIKELY(x) __builtin_expect(!!(x), 1)
#define MS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A counter with a single writer (its thread, or whoever holds the lock that owns it) and any
 * number of readers. Relaxed atomics keep concurrent reads defined behaviour while compiling to
 * plain loads and stores: no lock prefix on the fast path. */
typedef _Atomic uint64_t ms_counter_t;

static inline void ms_bump(ms_counter_t *c, uint64_t v)
{
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
    /* The same single-writer update as below in one instruction instead of three (no lock
     * prefix: not an atomic RMW, which one writer does not need); its store is one aligned
     * 8-byte write, so a concurrent relaxed load sees the old or the new value. The sanitizer
     * build keeps the C form, which it can check. */
    __asm__("addq %1, %0" : "+m"(*(uint64_t *)c) : "er"(v));
#else
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
#endif
}

static inline uint64_t ms_peek(ms_counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* A one-byte spin lock: only taken on rare paths (sampled events, thread-less hooks), and free
 * of any allocation, so it may be used inside the hooks. */
typedef atomic_uchar ms_spin_t;

void ms_spin_lock_wait(ms_spin_t *lock);

static inline void ms_spin_lock(ms_spin_t *lock)
{
    /* Inline: the sampled path takes two locks per event, almost always free. */
    if (MS_UNLIKELY(atomic_exchange_explicit(lock, 1, memory_order_acquire)))
        ms_spin_lock_wait(lock);
}

static inline void ms_spin_unlock(ms_spin_t *lock)
{
    atomic_store_explicit(lock, 0, memory_order_release);
}

static inline uint64_t ms_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int ms_bucket_of(uint64_t size)
{
    return size <= 1 ? 0 : 64 - __builtin_clzll(size - 1);
}

/* Sizes below this are the small class whatever the critical size is (start() refuses a
 * smaller one); the histogram buckets of 1..MS_MEDIUM_MIN-1 are 0..MS_SMALL_BUCKETS-1. */
#define MS_SMALL_BUCKETS 11

/* ms_bucket_of for 1 <= size <= 2^63, without its branch: the bit length of size-1, which is
 * also the bit index of the top bit of 2(size-1)+1 (two instructions on the fast path). */
static inline uint64_t ms_bucket_of_nonzero(uint64_t size)
{
    return 63 - (uint64_t)__builtin_clzll(2 * (size - 1) + 1);
}

/* ---- buffers.c: per-thread state, its ring, the registry of threads ---- */

/* Records hold the low 32 bits of their time (microseconds since the tracker's clock origin, 71.6
 * minutes of range). When the high bits of a thread's clock move on, the producer first pushes
 * a marker record (event MS_EVENT_EPOCH, the new high bits in its address field) that the drainer
 * reads and never passes on, so a ring read after any stall still gives every record its full
 * time. */
#define MS_EVENT_EPOCH 3

/* A segment of a thread's buffer of records (rings.c). */
typedef struct ms_ring ms_ring_t;

/* One frame of a stack as the hook reads it: a borrowed code object and its byte offset. */
typedef struct {
    void *code;
    int32_t offset;
} ms_frame_t;

/* The outer frames of the last stack a thread interned, with their node ids, and its leaf: a
 * thread that samples in a loop sees the same outer frames again and again, and compares them
 * here instead of looking each up in the shared table (sites.c). Valid while no node has been
 * forgotten since it was filled (epoch): until then every id keeps its key. In arrays, ids in 16
 * bits: 144 bytes, which leave nine records' room in the page of the thread's state
 * (ms_rings_embed). */
#define MS_STACK_MEMO 8
typedef struct {
    uint64_t epoch;                  /* the sites' epoch when filled; 0: empty */
    void *code[MS_STACK_MEMO];       /* the outer frames, outermost first */
    int32_t offset[MS_STACK_MEMO];
    uint16_t id[MS_STACK_MEMO];
    uint16_t n;                      /* outer frames held */
    uint16_t leaf_domain;
    uint32_t leaf_caller;            /* the leaf's caller node (its key) */
    void *leaf_code;                 /* the innermost frame */
    int32_t leaf_offset;
    uint32_t leaf_id;                /* 0: none */
} ms_stack_memo_t;

typedef struct ms_thread {
    /* Exact counters, written by the owning thread only. Small allocations are counted once,
     * in small_by_size: their per-class count is its sum, taken at read time (ms_thread_add),
     * which saves the fast path one counter update. allocations[d][MS_CLASS_SMALL] and
     * by_size[d][b] count the medium and large classes only. */
    ms_counter_t small_by_size[MS_DOMAINS][MS_SMALL_BUCKETS];
    ms_counter_t bytes[MS_DOMAINS][MS_CLASSES];
    ms_counter_t deallocations[MS_DOMAINS];
    ms_counter_t allocations[MS_DOMAINS][MS_CLASSES];
    ms_counter_t by_size[MS_DOMAINS][MS_BUCKETS];
    ms_counter_t samples, dropped, live_untracked, slow_calls, slow_ns;
    /* Sampling state, owning thread only. The fast paths (small or medium class, nothing due)
     * decrement small_left or medium_left alone: the allocations of that class they may still
     * take before one that must go to the general path. The countdowns they stand for are
     * brought up to date (ms_sync_fast) only on the general path. The frequency slot is shared:
     * the two fast paths together stop short of it (ms_arm_fast splits what is left of the
     * interval between them by the thread's recent mix of the two classes). */
    int64_t small_left;
    int64_t small_armed;           /* small_left when last armed */
    int64_t medium_left;
    int64_t medium_armed;          /* medium_left when last armed */
    uint32_t medium_share;         /* recent medium fraction of small+medium allocations, 2^-16 */
    int64_t freq_left;             /* allocations until the next frequency-guaranteed sample */
    int64_t countdown[2];          /* [small, medium]: allocations until the next Bernoulli hit */
    float weight[2];               /* 1/p of the rate each countdown was drawn with; 0 = none */
    uint64_t epoch;                /* rate epoch the countdowns were drawn in */
    uint64_t rng;
    uint16_t index;
    _Atomic(ms_ring_t *) ring;     /* the segment the thread writes; mapped on first sample */
    _Atomic(ms_ring_t *) oldest;   /* the segment the drainer reads (rings.c) */
    _Atomic uint64_t slots;        /* records all its segments can hold (rings.c) */
    _Atomic int dead;              /* set by the thread's TLS destructor; drainer then frees */
    struct ms_thread *next;        /* registry list, under the registry lock */
    ms_stack_memo_t stack_memo;    /* owning thread only, with the GIL (sites.c) */
} ms_thread_t;

/* The calling thread's tracker state in one thread-local word, so that the fast path decides
 * "count this call" with one load and one test: the thread's state (64-byte aligned) with guard
 * bits in its low bits, or MS_TLS_NOSTATE (not set up yet) or MS_TLS_NOSTATE | MS_TLS_DEAD
 * (its state was handed to the drainer at thread exit). Every thread starts at MS_TLS_NOSTATE:
 * a non-zero initial value, which the loader copies into threads that predate the module too. */
#define MS_GUARD_HOOK 1u    /* inside a hook: nested allocator calls are not counted */
#define MS_GUARD_IGNORED 2u /* one of the tracker's own threads: nothing it does is counted */
#define MS_TLS_NOSTATE 4u
#define MS_TLS_DEAD 8u
#define MS_TLS_FLAGS 15u    /* the word is a counted thread's state exactly when these are 0 */
#define MS_THREAD_DEAD ((ms_thread_t *)(uintptr_t)1)

struct ms_tls {
    uintptr_t word;      /* as above */
    uintptr_t forwarded; /* the block of this thread's last unguarded OBJ/MEM free (hooks.c) */
    uint64_t request;    /* the size of the fast-path allocation in progress (hooks.c) */
};

/* Initial-exec: one direct %fs-relative access instead of a __tls_get_addr call per hook. */
extern __thread struct ms_tls ms_tls __attribute__((tls_model("initial-exec")));

/* NULL until first use, MS_THREAD_DEAD after the thread's exit, else the thread's state. */
static inline ms_thread_t *ms_tls_thread(void)
{
    uintptr_t w = ms_tls.word;
    if (w & MS_TLS_NOSTATE)
        return w & MS_TLS_DEAD ? MS_THREAD_DEAD : NULL;
    return (ms_thread_t *)(w & ~(uintptr_t)MS_TLS_FLAGS);
}

static inline void ms_tls_set_thread(ms_thread_t *t)
{
    uintptr_t guard = ms_tls.word & (MS_GUARD_HOOK | MS_GUARD_IGNORED);
    if (t == NULL)
        ms_tls.word = MS_TLS_NOSTATE | guard;
    else if (t == MS_THREAD_DEAD)
        ms_tls.word = MS_TLS_NOSTATE | MS_TLS_DEAD | guard;
    else
        ms_tls.word = (uintptr_t)t | guard;
}

static inline unsigned ms_tls_guard(void)
{
    return (unsigned)(ms_tls.word & (MS_GUARD_HOOK | MS_GUARD_IGNORED));
}

static inline void ms_tls_set_guard(unsigned guard)
{
    ms_tls.word = (ms_tls.word & ~(uintptr_t)(MS_GUARD_HOOK | MS_GUARD_IGNORED)) | guard;
}

/* Slow paths of ms_thread_acquire / ms_thread_release, out of line. */
ms_thread_t *ms_thread_attach_or_orphan(bool *locked);
void ms_orphan_unlock(void);

/* The calling thread's state, created on first use; for a thread that has none (exited, or no
 * memory) returns the shared orphan state with *locked set: call ms_thread_release after.
 * Inline: on the fast path this is one thread-local load and a compare. */
static inline ms_thread_t *ms_thread_acquire(bool *locked)
{
    uintptr_t w = ms_tls.word;
    if (MS_LIKELY(!(w & MS_TLS_NOSTATE))) {
        *locked = false;
        return (ms_thread_t *)(w & ~(uintptr_t)MS_TLS_FLAGS);
    }
    return ms_thread_attach_or_orphan(locked);
}

static inline void ms_thread_release(bool locked)
{
    if (MS_UNLIKELY(locked))
        ms_orphan_unlock();
}
/* Brings freq_left and the two countdowns up to date with the allocations the fast paths
 * counted since ms_arm_fast, and folds their mix (with the general-path allocation of class
 * cls that called this) into medium_share: a quarter of the new window, three quarters of the
 * old estimate. */
static inline void ms_sync_fast(ms_thread_t *t, int cls)
{
    int64_t small = t->small_armed - t->small_left, medium = t->medium_armed - t->medium_left;
    t->freq_left -= small + medium;
    t->countdown[MS_CLASS_SMALL] -= small;
    t->countdown[MS_CLASS_MEDIUM] -= medium;
    t->small_armed = t->small_left;
    t->medium_armed = t->medium_left;
    small += cls == MS_CLASS_SMALL;
    medium += cls == MS_CLASS_MEDIUM;
    if (small + medium > 0) {
        uint64_t window = (uint64_t)medium * 65536u / (uint64_t)(small + medium);
        t->medium_share = (uint32_t)((3u * (uint64_t)t->medium_share + window) / 4u);
    }
}

static inline int64_t ms_min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* After any change of freq_left or a countdown: each fast path may take allocations of its class
 * up to, not including, its countdown's next hit, and both together fewer than freq_left (the
 * slot goes to the general path). The medium path gets the share of the interval its recent
 * part of the allocations asks for (at least one, if anything is left), the small path the rest;
 * a path that runs out of its share early takes the general path once, which re-splits. */
static inline void ms_arm_fast(ms_thread_t *t)
{
    int64_t room = t->freq_left - 1; /* >= 0: freq_left is at least 1 here */
    /* room * share / 2^16 without overflow (room is near 2^63 with the frequency slot off) */
    uint64_t r = (uint64_t)room, share = t->medium_share;
    int64_t quota = (int64_t)((r >> 16) * share + (((r & 0xffffu) * share) >> 16));
    if (quota == 0 && room > 0 && t->medium_share != 0)
        quota = 1;
    int64_t medium = ms_min64(t->countdown[MS_CLASS_MEDIUM] - 1, quota);
    t->medium_left = t->medium_armed = medium;
    t->small_left = t->small_armed = ms_min64(t->countdown[MS_CLASS_SMALL] - 1, room - medium);
}

/* Adds t's counters to out (the per-class small counts from small_by_size). */
void ms_thread_add(ms_counters_t *out, ms_thread_t *t);

void ms_buffers_configure(uint64_t ring_capacity, uint64_t rings_max_bytes, uint64_t seed);
void ms_thread_reset_sampling(ms_thread_t *t);
void ms_buffers_fork_child_quick(void);
void ms_buffers_fork_child(void);
/* Whether sem was posted (1) or timeout_ms passed (0). The deadline is on the monotonic clock:
 * on the wall clock (sem_timedwait's), a step backwards would stall the waiter (the drainer, the
 * mover) for as long as the step, and the rings would overflow meanwhile. */
int ms_sem_wait_ms(sem_t *sem, uint32_t timeout_ms);
/* The rings alone (ms_drain is the stage first, then this). */
size_t ms_rings_drain_all(ms_record_t *out, size_t capacity, ms_drain_info_t *info);

/* ---- clock.c: ms_stamp_ns, ms_clock_tick (memscope.h) are the hooks' clock ---- */

/* ---- stage.c: the mover and its staging buffer ---- */

/* A ring filled: wakes the mover, or the drainer while no mover runs. May be called from a hook. */
void ms_wake_mover(void);
uint64_t ms_stage_pending(void);
/* Adds what the mover reduced into summary and clears it; returns its records. */
uint64_t ms_stage_fold(ms_summary_t *summary);
void ms_stage_fork_child(void);
uint64_t ms_stage_footprint(void); /* the stage's touched pages, bytes */
uint64_t ms_buffers_footprint(void);
/* Microseconds since the tracker's clock origin, for a CLOCK_MONOTONIC reading in ns. */
uint64_t ms_clock_us(uint64_t now_ns);

/* ---- rings.c: a thread's growing buffer of records, and the pages it is made of ---- */
/* Appends rec to t's buffer (mapping or growing it as needed) with its time, time_us
 * (ms_clock_us); a record that finds no room is counted as dropped and added to the spill. */
void ms_ring_push(ms_thread_t *t, ms_record_t *rec, uint64_t time_us);
/* The largest segment (in records) and the budget of all segments and thread states (bytes). */
void ms_rings_configure(uint64_t max_records, uint64_t max_bytes);
/* Zeroed whole pages from the system, counted in ms_pages_held; NULL without memory. */
void *ms_pages_alloc(uint64_t bytes);
/* The same, not counted: for a caller that counts what it touches (the stage); munmap frees it. */
void *ms_pages_map(uint64_t bytes);
void ms_pages_free(void *p, uint64_t bytes);
uint64_t ms_pages_size(uint64_t bytes); /* bytes rounded up to whole pages */
uint64_t ms_pages_held(void);
void ms_pages_set_held(uint64_t bytes); /* in a forked child, for what it kept */
/* Drainer side, serialized by the caller (the registry lock; the orphan lock for the orphan
 * state). The full time of t's first record waiting (UINT64_MAX if none), from its oldest
 * segment r = t->oldest. */
uint64_t ms_rings_first_time(ms_ring_t *r);
/* Moves up to room of t's records into out (see ms_drain), oldest first; segments read to
 * their end that the producer left go onto *retired, for ms_rings_unmap once no lock is held. */
size_t ms_rings_drain(ms_thread_t *t, ms_record_t *out, size_t room, uint64_t base, uint32_t *more,
                      ms_ring_t **retired);
uint64_t ms_rings_pending(ms_thread_t *t);
bool ms_rings_empty(ms_thread_t *t);
/* Every segment of an exited thread onto *retired. */
void ms_rings_retire_all(ms_thread_t *t, ms_ring_t **retired);
void ms_rings_unmap(ms_ring_t *retired);
/* Makes the zeroed, 64-byte aligned space (bytes long, after t in t's pages) t's first segment. */
void ms_rings_embed(ms_thread_t *t, void *space, uint64_t bytes);
/* In a forked child, for t (its other fields reset) and its chain from oldest: t keeps the newest
 * segment, emptied; returns its bytes (0 if embedded). */
uint64_t ms_rings_fork_reset(ms_thread_t *t, ms_ring_t *oldest);

/* ---- hooks.c: sampling parameters shared with buffers.c ---- */
uint64_t ms_rng_next(uint64_t *state);
/* splitmix64's finalizer: every bit of z reaches every bit of the result (ms_rng_next's output
 * step; the recognizer window's hash tables pick slots by its top bits). */
static inline uint64_t ms_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
void ms_draw_countdown(ms_thread_t *t, int cls);
int64_t ms_frequency_interval(void);
uint64_t ms_rate_epoch(void);

/* ---- live.c: sampled blocks still allocated ---- */
typedef struct {
    uint64_t address;
    uint64_t size;
    uint32_t site;
    float weight;
    uint32_t domain;
    uint32_t moving; /* 1 while a realloc of the block is in flight (ms_live_claim) */
} ms_live_entry_t;

/* What ms_live_insert did with a sampled block. */
#define MS_LIVE_IN 0    /* in the table; its record carries its live weight (its own weight) */
#define MS_LIVE_SPILL 1 /* in the table with a live weight of its own (e->weight, set by the
                           insert); the caller adds that live part to the spill and flags the
                           record MS_FLAG_NOLIVE */
#define MS_LIVE_OUT 2   /* not in the table for want of room or memory: untracked */
#define MS_LIVE_SKIP 3  /* left out by the table's own sampling past its budget (the blocks taken
                           in carry its live part) */

/* Enters e (an address of the manual domain is a key apart from heap addresses). rng: the
 * caller's RNG for the table's own sampling past the budget, or NULL to put back an entry that
 * ms_live_remove took out (no coin, weight unchanged). A stale entry for the same key (its free
 * was never seen) is replaced and handed back in *stale (stale->address != 0): the caller
 * emits its free. */
int ms_live_insert(ms_live_entry_t *e, uint64_t *rng, ms_live_entry_t *stale);
bool ms_live_remove(uint64_t address, bool manual, ms_live_entry_t *out);
/* A realloc of address is about to run: its entry (if any) is marked as moving, so that it keeps
 * its slot (no re-insert that could fail) while lookups of the address skip it (once realloc has
 * moved the block, another thread may receive the old address and enter it anew). */
bool ms_live_claim(uint64_t address);
/* The realloc is over: freed (it moved or succeeded) takes the claimed entry out and hands it
 * back (the caller emits its free); otherwise the entry stays, as before. False if the entry is
 * gone (the table's thinning evicted it meanwhile, already taking it off the estimate). */
bool ms_live_settle(uint64_t address, bool freed, ms_live_entry_t *out);
void ms_live_configure(uint64_t max_entries);
void ms_live_clear(void);
void ms_live_fork_child_locks(void); /* in the pthread_atfork child handler */
void ms_live_fork_child(void);
uint64_t ms_live_footprint(void);
void ms_live_stats(uint64_t *entries, uint64_t *capacity, double *threshold);
/* Sets mark[id] (MS_MAX_IDS bytes) for every site id that a live entry carries (sites.c reuses
 * an id only once none does). */
void ms_live_sites_in_use(uint8_t *mark);

/* ---- child.c: the deferred start of a forked child ---- */
extern _Atomic int ms_child_start_armed;
/* A sampled allocation at now_ns in an armed child: schedules the starter once it is due. */
void ms_child_start_poll(uint64_t now_ns);
void ms_child_fork_reset(void); /* in the pthread_atfork child handler */

/* ---- sums.c: a summary kept in C until a drain folds it (the spill's, the mover's) ---- */
typedef struct {
    ms_summary_t s;         /* its id arrays: MS_MAX_IDS doubles each, the owner's */
    uint32_t lowest, highest; /* the ids added to since the last fold (lowest > highest: none) */
    _Atomic bool dirty;     /* anything added since the last fold: read without the owner's lock */
} ms_sums_t;
#define MS_SUMS_INIT(count, bytes, live_bytes) \
    {.s = {.id_count = (count), .id_bytes = (bytes), .id_live_bytes = (live_bytes)}, .lowest = MS_MAX_IDS}
/* Under the owner's lock. */
void ms_sums_add(ms_sums_t *sums, const ms_record_t *records, size_t n);
void ms_sums_add_record(ms_sums_t *sums, const ms_record_t *rec);
/* Adds sums into `into` (NULL: nowhere) and zeroes it. */
void ms_sums_fold(ms_sums_t *sums, ms_summary_t *into);
void ms_sums_clear(ms_sums_t *sums);

/* ---- spill.c: what could not be queued, kept as weighted totals ---- */
/* Adds a record that found no room in any ring (ms_ring_push). */
void ms_spill_record(const ms_record_t *rec);
/* The live weight of a block of a domain and site changes from `from` to `to` (0: not counted
 * live): its live estimate changes by (to - from) x size, rounded as the reducer rounds records. */
void ms_spill_live(uint32_t domain, uint32_t site, uint64_t size, float from, float to);
/* Adds everything spilled so far into s and starts the spill again from zero. */
void ms_spill_fold(ms_summary_t *s);
void ms_spill_clear(void);
void ms_spill_fork_child_lock(void); /* in the pthread_atfork child handler */
/* reduce.c: one record added into a summary in double arithmetic (its out-of-bounds route). */
void ms_reduce_record(const ms_record_t *r, ms_summary_t *s);

/* ---- hooks.c and native.c: the native domain ---- */
/* The C library functions the native domain wraps, by index. */
#define MS_FN_MALLOC 0
#define MS_FN_CALLOC 1
#define MS_FN_REALLOC 2
#define MS_FN_FREE 3
#define MS_FN_POSIX_MEMALIGN 4
#define MS_FN_ALIGNED_ALLOC 5
#define MS_FN_MEMALIGN 6
#define MS_FN_VALLOC 7
#define MS_FN_PVALLOC 8
#define MS_NATIVE_FNS 9
/* Distinct implementations of one function that objects may be bound to at once (the C
 * library's, a preloaded allocator's, an object's own choice under RTLD_DEEPBIND). */
#define MS_NATIVE_VARIANTS 4
/* ms_native_wrapper[fn][v] (hooks.c) counts a call and passes it on to ms_native_next[fn][v],
 * the function the GOT entry pointed to before native.c pointed it at the wrapper. A slot is
 * written once, before any entry points at its wrapper, and never changes afterwards, so a
 * thread holding a stale entry still reaches a valid function. */
extern _Atomic(void *) ms_native_next[MS_NATIVE_FNS][MS_NATIVE_VARIANTS];
extern void *const ms_native_wrapper[MS_NATIVE_FNS][MS_NATIVE_VARIANTS];
/* Points the allocator entries of every loaded object (but the interpreter, the C library and
 * memscope) at the wrappers, and every object's dlopen at memscope's. Any thread, no GIL needed
 * (start() calls it with the GIL; it never waits for it). */
void ms_native_install(void);
/* Points every entry back at what it pointed to. Safe at any time, on any thread. */
void ms_native_uninstall(void);
/* (ms_native_poll is in memscope.h) */
void ms_native_stats(uint64_t *objects, uint64_t *entries, uint64_t *skipped);
void ms_native_fork_child(void); /* in the pthread_atfork child handler */

/* ---- hooks.c: the allocator chain ---- */
/* Whether some installed domain's allocator chain changed on top of our hook since it was last
 * checked (no GIL needed; see ms_drain_reduce). */
bool ms_hooks_moved(void);
/* Checks the chain of every domain that moved, with the GIL, and installs again a hook that is
 * no longer reached. Returns the mask of the domains installed again. */
int ms_hooks_relink(void);
/* How many times ms_hooks_relink installed a hook again. */
uint64_t ms_hooks_relinks(void);

extern _Atomic uint8_t ms_live_filter[];
#define MS_LIVE_FILTER_BITS 18

/* The filter slot of an address: one byte per 16-byte granule of a 4 MiB window, folded with the
 * address bits above the window. Not a hash on purpose: neighbouring blocks share filter lines,
 * so a free touches a filter line only about as often as the program touches its own memory
 * (16x less), instead of a random line of the filter per free (a cache miss on every free). */
static inline uint32_t ms_live_slot(uint64_t address)
{
    return (uint32_t)(((address >> 4) ^ (address >> (4 + MS_LIVE_FILTER_BITS))) & ((1u << MS_LIVE_FILTER_BITS) - 1));
}

/* True when address may be a sampled live block: the only thing an unsampled free pays for. */
static inline bool ms_live_maybe(uint64_t address)
{
    return atomic_load_explicit(&ms_live_filter[ms_live_slot(address)], memory_order_relaxed) != 0;
}

/* ---- sites.c / frames.c (ms_frame_t and ms_stack_memo_t are above) ---- */
/* The id of one key (a type: code NULL; a frame: code, offset, and the caller's node id as key),
 * or MS_ID_OVERFLOW + domain when every id is taken. */
uint32_t ms_site_intern(void *code, int32_t offset, int domain, uint64_t key);
/* The id of a sampled stack (frames[0] innermost, n >= 1), interned node by node from the
 * outermost frame in (sites.c); a stack whose outer frames find no room is cut to its
 * innermost frame under MS_ID_STACK_OVERFLOW (counted). */
uint32_t ms_stack_intern(const ms_frame_t *frames, int n, int domain, ms_stack_memo_t *memo);
/* Stacks cut by ms_stack_intern so far. */
uint64_t ms_sites_stack_overflows(void);
uint32_t ms_sites_used(void);
void ms_sites_fork_child(void);
/* MAX_STACK_DEPTH (1 .. MS_MAX_STACK_DEPTH), from ms_start. */
void ms_frames_configure(int max_depth);
/* The id of the calling thread's Python stack (up to MAX_STACK_DEPTH frames, innermost first),
 * or MS_ID_NATIVE + domain when it runs no Python code. memo: the thread's own. */
uint32_t ms_frame_site(int domain, ms_stack_memo_t *memo);

#endif
