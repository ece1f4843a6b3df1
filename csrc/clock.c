/*
 * clock.c: the time stamp of a sampled event. On x86-64, where the kernel itself keeps time with
 * the processor's time-stamp counter, it is read directly; elsewhere clock_gettime.
 *
 * Why: a large block is always sampled, and its allocation and free each take a time stamp.
 * Through the vDSO a CLOCK_MONOTONIC read costs about 23 ns on the machines this was measured on
 * (AMD EPYC under KVM), RDTSC about 10 ns: the difference is a fifth of what a large pair adds.
 *
 * When: the counter runs at a constant rate in every power state (CPUID's invariant-TSC bit) and
 * the kernel's current clocksource is "tsc": the kernel picks it only after checking that the
 * counters of all CPUs agree, and falls back to another source (hpet, kvm-clock, ...) when they
 * do not, in which case so does this file. Read once, at the first ms_clock_tick.
 *
 * Scale: a stamp is anchor_ns + (tsc - anchor_tsc) * mult / 2^32, on the CLOCK_MONOTONIC time
 * line. The mover re-anchors at each of its passes (ms_clock_tick, at least every 200 ms while it
 * runs): mult is measured against CLOCK_MONOTONIC over the time since a reference pair (at least
 * MIN_BASELINE_NS; the reference moves up every REFERENCE_NS so NTP's frequency corrections are
 * followed), and the error of the old anchor's prediction is slewed away over the next SLEW_NS
 * rather than stepped: the new anchor continues the old line, so stamps never step back. An error
 * of DISTURBED_NS or more (the clock moved against the counter) is slewed with the rate kept and
 * the reference taken again; one of MAX_SLEW_NS or more (a resumed machine, a stepped clock) is
 * stepped. Until two pairs far enough apart were taken, and once the anchor is older than
 * STALE_NS (the mover stopped), a stamp is a plain clock_gettime.
 *
 * Readers never wait: the anchor's four words are behind a sequence count, and a reader that
 * sees the writer at work (or a counter behind the anchor, read on a CPU before the anchor was
 * taken on another) takes clock_gettime instead.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#define MIN_BASELINE_NS UINT64_C(50000000)   /* 50 ms: a rate good to about 1 ppm */
#define REFERENCE_NS UINT64_C(60000000000)   /* 60 s */
#define REANCHOR_NS UINT64_C(100000000)      /* a mover woken more often re-anchors at most every 100 ms */
#define SLEW_NS INT64_C(250000000)           /* 250 ms: about one mover period */
#define MAX_SLEW_NS INT64_C(1000000)         /* 1 ms: 0.4 % fast or slow at most */
#define DISTURBED_NS INT64_C(10000)          /* 10 us: far over a scale's error (sub-us) */
#define STALE_NS UINT64_C(2000000000)        /* 2 s: ten missed mover passes */
/* Plausible rates (ns per cycle, times 2^32): counters between 50 MHz and 20 GHz. */
#define MIN_RATE ((UINT64_C(1) << 32) / 20)
#define MAX_RATE ((UINT64_C(1) << 32) * 20)

static _Atomic int g_forced_system; /* ms_clock_use_system */

#if HAVE_TSC
static _Atomic uint32_t g_seq; /* odd while the writer changes the anchor */
static _Atomic uint64_t g_anchor_tsc, g_anchor_ns, g_mult, g_limit; /* g_mult 0: not calibrated */

/* Writer's state: only ms_clock_tick touches it, under g_tick_lock (the mover and ms_start). */
static ms_spin_t g_tick_lock;
static int g_usable = -1; /* -1 not checked yet */
static uint64_t g_ref_tsc, g_ref_ns, g_last_tick_ns;
static uint64_t g_rate; /* the last rate measured, before any slewing */

static bool kernel_uses_tsc(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0x80000000u, NULL) < 0x80000007u)
        return false;
    __cpuid(0x80000007u, a, b, c, d);
    if (!(d & (1u << 8))) /* invariant TSC */
        return false;
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
    if (!f)
        return false;
    char name[32] = {0};
    bool tsc = fgets(name, sizeof name, f) != NULL && strcmp(name, "tsc\n") == 0;
    fclose(f);
    return tsc;
}

/* A (counter, CLOCK_MONOTONIC) pair read as close together as this thread manages: the counter
 * before and after the clock, the midpoint kept from the tightest of three tries. */
static void read_pair(uint64_t *tsc, uint64_t *ns)
{
    uint64_t best = UINT64_MAX, best_tsc = 0, best_ns = 0;
    for (int i = 0; i < 3; i++) {
        uint64_t before = __rdtsc();
        uint64_t now = ms_now_ns();
        uint64_t after = __rdtsc();
        if (after - before < best)
            best = after - before, best_tsc = before + (after - before) / 2, best_ns = now;
    }
    *tsc = best_tsc, *ns = best_ns;
}

static uint64_t scale(uint64_t cycles, uint64_t mult)
{
    return (uint64_t)(((unsigned __int128)cycles * mult) >> 32);
}

/* rate, running fast or slow enough to make up error within SLEW_NS. */
static uint64_t slewed(uint64_t rate, int64_t error)
{
    return (uint64_t)((int64_t)rate + (int64_t)(((__int128)rate * error) / SLEW_NS));
}

static void publish(uint64_t tsc, uint64_t ns, uint64_t mult)
{
    uint64_t limit = (uint64_t)(((unsigned __int128)STALE_NS << 32) / mult);
    atomic_fetch_add_explicit(&g_seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&g_anchor_tsc, tsc, memory_order_relaxed);
    atomic_store_explicit(&g_anchor_ns, ns, memory_order_relaxed);
    atomic_store_explicit(&g_mult, mult, memory_order_relaxed);
    atomic_store_explicit(&g_limit, limit, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_seq, 1, memory_order_release);
}

static void tick_locked(void)
{
    if (g_usable < 0)
        g_usable = kernel_uses_tsc();
    if (!g_usable)
        return;
    uint64_t tsc, ns;
    read_pair(&tsc, &ns);
    if (g_ref_ns == 0 || tsc <= g_ref_tsc || ns <= g_ref_ns) {
        g_ref_tsc = tsc, g_ref_ns = ns;
        return;
    }
    uint64_t old_mult = atomic_load_explicit(&g_mult, memory_order_relaxed);
    if (old_mult != 0 && ns - g_last_tick_ns < REANCHOR_NS)
        return;
    uint64_t old_tsc = atomic_load_explicit(&g_anchor_tsc, memory_order_relaxed);
    bool continues = old_mult != 0 && tsc > old_tsc &&
                     tsc - old_tsc <= atomic_load_explicit(&g_limit, memory_order_relaxed);
    int64_t error = 0;
    uint64_t predicted = 0;
    if (continues) {
        predicted = atomic_load_explicit(&g_anchor_ns, memory_order_relaxed) + scale(tsc - old_tsc, old_mult);
        error = (int64_t)(ns - predicted);
        if (error <= -MAX_SLEW_NS || error >= MAX_SLEW_NS) {
            /* The clock jumped against the counter (a resumed machine, a stepped clock): the
             * rate stands, the line starts again here, and so does the rate's reference. */
            g_ref_tsc = tsc, g_ref_ns = ns;
            publish(tsc, ns, g_rate);
            g_last_tick_ns = ns;
            return;
        }
        if (error <= -DISTURBED_NS || error >= DISTURBED_NS) {
            /* More than the scale's own error: the clock moved against the counter since the
             * reference, which would skew a rate measured from it. The rate stands, the error
             * is slewed, the reference starts again here. */
            g_ref_tsc = tsc, g_ref_ns = ns;
            publish(tsc, predicted, slewed(g_rate, error));
            g_last_tick_ns = ns;
            return;
        }
    }
    uint64_t elapsed = ns - g_ref_ns;
    if (elapsed < MIN_BASELINE_NS)
        return;
    uint64_t rate = (uint64_t)(((unsigned __int128)elapsed << 32) / (tsc - g_ref_tsc));
    if (rate < MIN_RATE || rate > MAX_RATE) { /* a jump between the reference and now */
        g_ref_tsc = tsc, g_ref_ns = ns;
        return;
    }
    g_rate = rate;
    if (continues) /* the old line goes on, running fast or slow until caught up */
        publish(tsc, predicted, slewed(rate, error));
    else
        publish(tsc, ns, rate);
    g_last_tick_ns = ns;
    if (elapsed >= REFERENCE_NS)
        g_ref_tsc = tsc, g_ref_ns = ns;
}
#endif

void ms_clock_tick(void)
{
#if HAVE_TSC
    /* A second caller meanwhile has nothing to add: the anchor is new. */
    if (atomic_exchange_explicit(&g_tick_lock, 1, memory_order_acquire))
        return;
    tick_locked();
    ms_spin_unlock(&g_tick_lock);
#endif
}

uint64_t ms_stamp_ns(void)
{
#if HAVE_TSC
    /* A few tries while the mover writes the anchor (four stores), then the system clock: a
     * writer descheduled half-way must not hold the hooks up. */
    for (int attempt = 0; attempt < 16 && !atomic_load_explicit(&g_forced_system, memory_order_relaxed); attempt++) {
        uint32_t seq = atomic_load_explicit(&g_seq, memory_order_acquire);
        uint64_t mult = atomic_load_explicit(&g_mult, memory_order_relaxed);
        uint64_t anchor_tsc = atomic_load_explicit(&g_anchor_tsc, memory_order_relaxed);
        uint64_t anchor_ns = atomic_load_explicit(&g_anchor_ns, memory_order_relaxed);
        uint64_t limit = atomic_load_explicit(&g_limit, memory_order_relaxed);
        uint64_t now = __rdtsc();
        atomic_thread_fence(memory_order_acquire);
        if ((seq & 1) || atomic_load_explicit(&g_seq, memory_order_relaxed) != seq)
            continue;
        if (mult == 0)
            break;
        /* The counter may read a little behind an anchor just taken (RDTSC is not ordered after
         * the loads above): the line extends backwards, continuous with the one before. */
        if (MS_LIKELY(now >= anchor_tsc && now - anchor_tsc <= limit))
            return anchor_ns + scale(now - anchor_tsc, mult);
        if (now < anchor_tsc && anchor_tsc - now <= limit)
            return anchor_ns - scale(anchor_tsc - now, mult);
        break;
    }
#endif
    return ms_now_ns();
}

int ms_clock_source(void)
{
#if HAVE_TSC
    if (atomic_load(&g_forced_system))
        return 0;
    uint64_t limit = atomic_load(&g_limit), tsc = atomic_load(&g_anchor_tsc);
    return atomic_load(&g_mult) != 0 && __rdtsc() - tsc <= limit;
#else
    return 0;
#endif
}

void ms_clock_use_system(int system)
{
    atomic_store(&g_forced_system, system != 0);
}
