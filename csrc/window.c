/*
 * window.c: the workload recognizer's window (see memscope.h for the interface).
 *
 * The recognizer used to read batches with a few dozen numpy calls each: every one a possible
 * GIL handoff on a busy application, its temporaries some ten arrays the batch's length, and
 * numpy's sorting and complex-exponential code (about 1.5 MB of pages) resident for it alone.
 * Here a read is one pass over the batch and one sort of its followed records; the window's
 * memory is its arrays, mapped pages that grow by doubling and go back when it is freed.
 *
 * Lifetimes: the followed records of a read are taken in (time, batch position) order, each
 * free ending the block that the previous event of its address allocated, if any (an awaited
 * allocation from an earlier read, or one of this read). The table of awaited allocations is
 * open addressing with linear probing, kept at most half full, and deletions shift the chain
 * back (no tombstones), so a lookup ends at the first empty slot.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define MS_WINDOW_HAVE_AVX2 1
#endif

typedef struct {
    uint64_t address; /* 0: empty (never a block's address) */
    int64_t time;     /* when it was allocated, us */
} pending_slot_t;

typedef struct {
    uint32_t id;
    uint32_t used;
    double weight;
} site_slot_t;

struct ms_window {
    pthread_mutex_t lock;
    uint64_t max_times, max_lifetimes, max_pending;
    int64_t *times;
    size_t n_times, times_cap;
    int64_t *lifetimes;
    size_t n_lifetimes, lifetimes_cap;
    pending_slot_t *pending;
    size_t n_pending, pending_slots; /* slots: a power of two */
    site_slot_t *sites;
    size_t n_sites, site_slots; /* a power of two */
    uint64_t allocs_followed, failures;
    uint32_t follow_level;
    /* The reading level (ms_window_take): records offered since the first one, made at first_us;
     * the budget they are read within. */
    uint32_t reading_level;
    uint64_t offered, read_all_first;
    int64_t first_us;
    double budget_per_s;
    uint64_t threads[MS_WINDOW_THREADS / 64];
    /* The sort keys of a read, kept for the next: the mover reads several times a second on a
     * busy program, and pages mapped and unmapped per read would cost a TLB shootdown each. As
     * large as the largest read's followed records (2,048 per mover step, 16,384 per drain while
     * the window reads every record; a pass while a dump is written, up to 65,536). */
    uint64_t *order;
    size_t order_cap;
};

/* Whether `address` is among the fixed pseudo-random 1 in 2^level of all addresses that the
 * window follows (level <= 63; those followed at a level are followed at every lower one): the
 * address's 16-byte granule times 2^64 / golden ratio, below 2^(64 - level) (its reference in
 * numpy: tests/optimizer/test_sink.py). A block's allocation and its free are kept or left
 * together, so lifetimes of the subsample are lifetimes. */
static inline bool followed(uint64_t address, uint32_t level)
{
    return level == 0 || (address >> 4) * 0x9E3779B97F4A7C15ull < 1ull << (64 - level);
}

/* ---- mapped arrays ---- */

#ifdef __SANITIZE_ADDRESS__
/* Under AddressSanitizer, heap blocks of the exact size: their redzones catch an overrun that the
 * slack of a whole page would hide. (Zeroed, as fresh pages are.) */
static void *map_bytes(size_t bytes)
{
    return calloc(1, bytes);
}

static void unmap_bytes(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}
#else
/* Whole pages, not counted in ms_pages_held (the window is not the sampler's footprint). */
static void *map_bytes(size_t bytes)
{
    return ms_pages_map(bytes);
}

static void unmap_bytes(void *p, size_t bytes)
{
    if (p != NULL)
        munmap(p, ms_pages_size(bytes));
}
#endif

/* Makes room for `needed` elements of `size` bytes in *array (capacity *cap, `used` of them in
 * use): doubled (not past `bound` unless needed), copied, the old pages unmapped. false without
 * memory (unchanged). */
static bool reserve(void **array, size_t *cap, size_t used, size_t needed, size_t bound, size_t size)
{
    if (needed <= *cap)
        return true;
    size_t grown = *cap ? *cap : 1024;
    while (grown < needed)
        grown *= 2;
    if (grown > bound)
        grown = needed > bound ? needed : bound;
    void *p = map_bytes(grown * size);
    if (p == NULL)
        return false;
    if (used)
        memcpy(p, *array, used * size);
    unmap_bytes(*array, *cap * size);
    *array = p;
    *cap = grown;
    return true;
}

/* ---- the awaited allocations ---- */

/* A key's home slot among `slots` (a power of two): the top bits of its mix. */
static size_t home(uint64_t key, size_t slots)
{
    return (size_t)(ms_mix64(key) >> (64 - __builtin_ctzll(slots)));
}

static pending_slot_t *pending_find(ms_window_t *w, uint64_t address)
{
    size_t mask = w->pending_slots - 1;
    for (size_t i = home(address, w->pending_slots);; i = (i + 1) & mask) {
        if (w->pending[i].address == address)
            return &w->pending[i];
        if (w->pending[i].address == 0)
            return NULL;
    }
}

static void pending_put(pending_slot_t *table, size_t slots, uint64_t address, int64_t time)
{
    size_t mask = slots - 1, i = home(address, slots);
    while (table[i].address != 0)
        i = (i + 1) & mask;
    table[i] = (pending_slot_t){address, time};
}

/* A table of `slots` with the entries of the current one at followed addresses. */
static bool pending_rebuild(ms_window_t *w, size_t slots, uint32_t level)
{
    pending_slot_t *table = map_bytes(slots * sizeof *table);
    if (table == NULL)
        return false;
    size_t kept = 0;
    for (size_t i = 0; i < w->pending_slots; i++) {
        pending_slot_t e = w->pending[i];
        if (e.address != 0 && followed(e.address, level)) {
            pending_put(table, slots, e.address, e.time);
            kept++;
        }
    }
    unmap_bytes(w->pending, w->pending_slots * sizeof *w->pending);
    w->pending = table;
    w->pending_slots = slots;
    w->n_pending = kept;
    return true;
}

/* Removes *e, shifting back the entries of its chain that would no longer be found. */
static void pending_remove(ms_window_t *w, pending_slot_t *e)
{
    size_t mask = w->pending_slots - 1, hole = (size_t)(e - w->pending);
    for (size_t i = (hole + 1) & mask; w->pending[i].address != 0; i = (i + 1) & mask) {
        size_t h = home(w->pending[i].address, w->pending_slots);
        /* it may fill the hole when its home is not in (hole, i] (cyclically) */
        if (((i - h) & mask) >= ((i - hole) & mask)) {
            w->pending[hole] = w->pending[i];
            hole = i;
        }
    }
    w->pending[hole].address = 0;
    w->n_pending--;
}

/* An allocation at `address` (awaited or not) at `time`: awaited from now on, if there is room.
 * false when the table could not grow (not awaited). */
static bool pending_allocated(ms_window_t *w, uint64_t address, int64_t time)
{
    pending_slot_t *e = pending_find(w, address);
    if (e != NULL) {
        e->time = time; /* its free was not read: the block allocated now is the one awaited */
        return true;
    }
    if (w->n_pending >= w->max_pending)
        return true; /* the bound: by design, not a failure */
    if (2 * (w->n_pending + 1) > w->pending_slots && !pending_rebuild(w, 2 * w->pending_slots, 0))
        return false;
    pending_put(w->pending, w->pending_slots, address, time);
    w->n_pending++;
    return true;
}

/* ---- sampled weight by site ---- */

static bool sites_grow(ms_window_t *w)
{
    size_t slots = w->site_slots * 2;
    site_slot_t *table = map_bytes(slots * sizeof *table);
    if (table == NULL)
        return false;
    for (size_t i = 0; i < w->site_slots; i++) {
        if (!w->sites[i].used)
            continue;
        size_t j = home(w->sites[i].id, slots);
        while (table[j].used)
            j = (j + 1) & (slots - 1);
        table[j] = w->sites[i];
    }
    unmap_bytes(w->sites, w->site_slots * sizeof *w->sites);
    w->sites = table;
    w->site_slots = slots;
    return true;
}

/* Adds weight to site id's sum; false when the table could not grow (the weight is lost). */
static bool site_add(ms_window_t *w, uint32_t id, double weight)
{
    size_t mask = w->site_slots - 1, i = home(id, w->site_slots);
    while (w->sites[i].used && w->sites[i].id != id)
        i = (i + 1) & mask;
    if (!w->sites[i].used) {
        if (2 * (w->n_sites + 1) > w->site_slots)
            return sites_grow(w) && site_add(w, id, weight);
        w->sites[i] = (site_slot_t){id, 1, 0.0};
        w->n_sites++;
    }
    w->sites[i].weight += weight;
    return true;
}

/* ---- the window ---- */

ms_window_t *ms_window_new(uint64_t max_times, uint64_t max_lifetimes, uint64_t max_pending)
{
    ms_window_t *w = map_bytes(sizeof *w);
    if (w == NULL)
        return NULL;
    /* (mapped pages are zero: every count, array pointer and thread bit starts at 0) */
    w->max_times = max_times;
    w->max_lifetimes = max_lifetimes;
    w->max_pending = max_pending;
    w->budget_per_s = INFINITY; /* (ms_window_budget) */
    w->pending_slots = MS_WINDOW_PENDING_MIN_SLOTS;
    w->pending = map_bytes(w->pending_slots * sizeof *w->pending);
    w->site_slots = 256;
    w->sites = map_bytes(w->site_slots * sizeof *w->sites);
    if (w->pending == NULL || w->sites == NULL || pthread_mutex_init(&w->lock, NULL) != 0) {
        unmap_bytes(w->pending, w->pending_slots * sizeof *w->pending);
        unmap_bytes(w->sites, w->site_slots * sizeof *w->sites);
        unmap_bytes(w, sizeof *w);
        return NULL;
    }
    return w;
}

/* Detached first, if attached: whoever frees it (Python's collector, when its owner is gone)
 * never leaves the mover a window to read into. Its own lock is neither taken nor destroyed: in
 * a forked child it may be held by a thread that the child does not have, and the window is
 * dropped whole. */
void ms_window_free(ms_window_t *w)
{
    if (w == NULL)
        return;
    ms_window_detach(w);
    unmap_bytes(w->times, w->times_cap * sizeof *w->times);
    unmap_bytes(w->lifetimes, w->lifetimes_cap * sizeof *w->lifetimes);
    unmap_bytes(w->pending, w->pending_slots * sizeof *w->pending);
    unmap_bytes(w->sites, w->site_slots * sizeof *w->sites);
    unmap_bytes(w->order, w->order_cap * sizeof *w->order);
    unmap_bytes(w, sizeof *w);
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The lowest level at which about FOLLOWED_PER_BATCH of n records are followed. */
static uint32_t level_for(size_t n)
{
    size_t over = n > 0 ? (n - 1) / MS_WINDOW_FOLLOWED_PER_BATCH : 0;
    return over ? 64 - (uint32_t)__builtin_clzll(over) : 0;
}

/* false when something of the batch could not be kept (a table or array could not grow). The
 * records read are those of r[0..n) followed at `level`, weights times 2^level. */
static bool read_locked(ms_window_t *w, const ms_record_t *r, size_t n, int64_t base_us, uint32_t level)
{
    bool kept_all = true;
    level = level > 63 ? 63 : level;
    double scale = (double)(1ull << level);
    size_t read = 0;
    for (size_t i = 0; i < n; i++)
        read += followed(r[i].address, level);
    bool timed = false;
    if (w->n_times < w->max_times) {
        timed = reserve((void **)&w->times, &w->times_cap, w->n_times, w->n_times + read, w->max_times,
                        sizeof *w->times);
        kept_all = timed;
    }
    for (size_t i = 0; i < n; i++) {
        if (!followed(r[i].address, level))
            continue;
        if (timed)
            w->times[w->n_times++] = base_us + r[i].time_delta_us;
        w->threads[r[i].thread >> 6] |= 1ull << (r[i].thread & 63);
        if (ms_flags_event(r[i].flags) != MS_EVENT_FREE)
            kept_all &= site_add(w, r[i].site, (double)r[i].weight * scale);
    }

    uint32_t followed_at = level_for(read);
    if (level > followed_at)
        followed_at = level;
    if (followed_at > w->follow_level) {
        w->follow_level = followed_at;
        if (!pending_rebuild(w, w->pending_slots, followed_at)) {
            /* cannot forget selectively: forget them all (what was awaited gives no lifetime) */
            memset(w->pending, 0, w->pending_slots * sizeof *w->pending);
            w->n_pending = 0;
            kept_all = false;
        }
    }
    followed_at = w->follow_level;

    /* The followed records by (time, position): time in the high half, position in the low. */
    if (!reserve((void **)&w->order, &w->order_cap, 0, read, SIZE_MAX, sizeof *w->order))
        return false;
    uint64_t *order = w->order;
    size_t m = 0;
    bool in_order = true; /* one ring's records mostly are: the sort is then skipped */
    for (size_t i = 0; i < n && i <= UINT32_MAX && m < read; i++) {
        if (r[i].address == 0 || !followed(r[i].address, followed_at))
            continue; /* (0 marks an empty slot: never a sampled block's address, not followed) */
        uint64_t key = (uint64_t)r[i].time_delta_us << 32 | i;
        in_order &= m == 0 || order[m - 1] < key;
        order[m++] = key;
        if (ms_flags_event(r[i].flags) != MS_EVENT_FREE)
            w->allocs_followed++;
    }
    if (m > 1 && !in_order)
        qsort(order, m, sizeof *order, compare_u64);
    for (size_t k = 0; k < m; k++) {
        const ms_record_t *e = &r[order[k] & UINT32_MAX];
        int64_t t = base_us + e->time_delta_us;
        if (ms_flags_event(e->flags) == MS_EVENT_FREE) {
            pending_slot_t *p = pending_find(w, e->address);
            if (p == NULL)
                continue; /* allocated before the window, not followed, or freed twice */
            int64_t lifetime = t - p->time;
            pending_remove(w, p);
            if (w->n_lifetimes < w->max_lifetimes) {
                if (reserve((void **)&w->lifetimes, &w->lifetimes_cap, w->n_lifetimes, w->n_lifetimes + 1,
                            w->max_lifetimes, sizeof *w->lifetimes))
                    w->lifetimes[w->n_lifetimes++] = lifetime;
                else
                    kept_all = false;
            }
        } else {
            kept_all &= pending_allocated(w, e->address, t); /* a realloc's record allocates too */
        }
    }
    return kept_all;
}

int ms_window_read(ms_window_t *w, const ms_record_t *records, size_t n, int64_t base_us, uint32_t level)
{
    pthread_mutex_lock(&w->lock);
    bool kept_all = read_locked(w, records, n, base_us, level);
    w->failures += !kept_all; /* one read, one failure, however many tables it missed */
    pthread_mutex_unlock(&w->lock);
    return kept_all ? 0 : -1;
}

/* Under the lock: the reading level for n more records offered, the latest made at last_us. */
static uint32_t offer(ms_window_t *w, size_t n, int64_t first_us, int64_t last_us)
{
    if (w->offered == 0)
        w->first_us = first_us;
    w->offered += n;
    if (w->offered <= w->read_all_first)
        return w->reading_level;
    double elapsed_s = (double)(last_us - w->first_us) / 1e6;
    double over = (double)w->offered / (elapsed_s > 1.0 ? elapsed_s : 1.0) / w->budget_per_s;
    double needed_d = over > 1.0 ? ceil(log2(over)) : 0.0; /* (+inf with a tiny budget: clamped) */
    uint32_t needed = needed_d > 32.0 ? 32 : (uint32_t)needed_d;
    if (needed > w->reading_level)
        w->reading_level = needed;
    return w->reading_level;
}

int ms_window_take(ms_window_t *w, const ms_record_t *records, size_t n, int64_t base_us)
{
    if (n == 0)
        return 0;
    uint32_t earliest = UINT32_MAX, latest = 0;
    for (size_t i = 0; i < n; i++) {
        earliest = records[i].time_delta_us < earliest ? records[i].time_delta_us : earliest;
        latest = records[i].time_delta_us > latest ? records[i].time_delta_us : latest;
    }
    pthread_mutex_lock(&w->lock);
    uint32_t level = offer(w, n, base_us + earliest, base_us + latest);
    bool kept_all = read_locked(w, records, n, base_us, level);
    w->failures += !kept_all;
    pthread_mutex_unlock(&w->lock);
    return kept_all ? 0 : -1;
}

void ms_window_budget(ms_window_t *w, double per_s, uint64_t read_all_first)
{
    pthread_mutex_lock(&w->lock);
    w->budget_per_s = per_s > 0.0 ? per_s : 1.0;
    w->read_all_first = read_all_first;
    pthread_mutex_unlock(&w->lock);
}

static void stats_locked(ms_window_t *w, ms_window_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->n_times = w->n_times;
    out->n_lifetimes = w->n_lifetimes;
    out->allocs_followed = w->allocs_followed;
    out->n_pending = w->n_pending;
    out->n_sites = w->n_sites;
    for (size_t i = 0; i < MS_WINDOW_THREADS / 64; i++)
        out->threads_active += (uint64_t)__builtin_popcountll(w->threads[i]);
    out->failures = w->failures;
    out->follow_level = w->follow_level;
    out->reading_level = w->reading_level;
    out->times_bytes = w->times ? ms_pages_size(w->times_cap * sizeof *w->times) : 0;
    out->lifetimes_bytes = w->lifetimes ? ms_pages_size(w->lifetimes_cap * sizeof *w->lifetimes) : 0;
    out->pending_bytes = ms_pages_size(w->pending_slots * sizeof *w->pending);
    out->sites_bytes = ms_pages_size(w->site_slots * sizeof *w->sites);
    out->threads_bytes = sizeof w->threads;
    out->order_bytes = w->order ? ms_pages_size(w->order_cap * sizeof *w->order) : 0;
}

void ms_window_stats(ms_window_t *w, ms_window_stats_t *out)
{
    pthread_mutex_lock(&w->lock);
    stats_locked(w, out);
    pthread_mutex_unlock(&w->lock);
}

/* Sorts a[0..n) (offsets from the smallest, below 2^bits) by LSD radix, 8 bits a pass, through
 * tmp (n elements). */
static void radix_sort(uint64_t *a, uint64_t *tmp, size_t n, unsigned bits)
{
    for (unsigned shift = 0; shift < bits; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((a[i] >> shift) & 255) + 1]++;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++)
            tmp[count[(a[i] >> shift) & 255]++] = a[i];
        uint64_t *swap = a;
        a = tmp;
        tmp = swap;
    }
    if ((bits + 7) / 8 % 2) /* an odd number of passes left the result in tmp */
        memcpy(tmp, a, n * sizeof *a);
}

/* The k-th smallest of a[0..n) (k < n), partially reordering a (Hoare's selection). */
static int64_t select_kth(int64_t *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t pivot = a[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                int64_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

/* x rounded to an integer, halves away from zero (|x| < 2^62), without a call into libm: a
 * truncating conversion, which no floating-point optimization setting (MEMSCOPE_CFLAGS) folds. */
static inline double round_near(double x)
{
    return (double)(int64_t)(x + (x < 0.0 ? -0.5 : 0.5));
}

/* The two polynomials, as macros: turn_sincos and its vector twin (strengths_avx2) make the same
 * operations in the same order with them, whatever the type of a. */
#define SIN_TAYLOR(a, a2) ((a) * (1.0 + (a2) * (-1.0 / 6 + (a2) * (1.0 / 120 + (a2) * (-1.0 / 5040 \
    + (a2) * (1.0 / 362880 + (a2) * (-1.0 / 39916800 + (a2) * (1.0 / 6227020800 \
    + (a2) * (-1.0 / 1307674368000)))))))))
#define COS_TAYLOR(a2) (1.0 + (a2) * (-1.0 / 2 + (a2) * (1.0 / 24 + (a2) * (-1.0 / 720 + (a2) * (1.0 / 40320 \
    + (a2) * (-1.0 / 3628800 + (a2) * (1.0 / 479001600 + (a2) * (-1.0 / 87178291200 \
    + (a2) * (1.0 / 20922789888000)))))))))

/* The sine and cosine of 2 pi turns, to about 1e-16 past the rounding of turns itself: the
 * fraction of a turn is reduced to within an eighth of the nearest quarter, whose sine and cosine
 * are Taylor polynomials to degree 15 and 16 (the next terms are below 5e-17 at pi/4), then
 * rotated by that quarter. The frame-clock search makes a million or more of these: libm's sin
 * and cos of phases up to a few thousand turns took 20 ns a pair, this about a quarter. */
static inline void turn_sincos(double turns, double *sin_out, double *cos_out)
{
    double r = turns - round_near(turns);  /* [-1/2, 1/2] */
    double quarter = round_near(4.0 * r);  /* -2 .. 2 */
    double a = (r - 0.25 * quarter) * (2.0 * M_PI), a2 = a * a;
    double s = SIN_TAYLOR(a, a2), c = COS_TAYLOR(a2);
    switch ((int)quarter & 3) { /* sin and cos of a + quarter * pi / 2 */
    case 0: *sin_out = s; *cos_out = c; break;
    case 1: *sin_out = c; *cos_out = -s; break;
    case 2: *sin_out = -s; *cos_out = -c; break;
    default: *sin_out = -c; *cos_out = s; break;
    }
}

/* The period of candidate p, in us. */
static inline double candidate_period_us(size_t p)
{
    return (double)(MS_WINDOW_MIN_PERIOD_US + p * MS_WINDOW_PERIOD_STEP_US);
}

/* The strength of candidates [from, to) for the n starts (see frame_clock): the reference. */
static void strengths_scalar(const uint64_t *starts, size_t n, size_t from, size_t to, double *strengths)
{
    for (size_t p = from; p < to; p++) {
        double per_us = 1.0 / candidate_period_us(p);
        double c = 0.0, s = 0.0;
        for (size_t j = 0; j < n; j++) {
            double sj, cj;
            turn_sincos((double)(starts[j] - starts[0]) * per_us, &sj, &cj);
            c += cj;
            s += sj;
        }
        strengths[p] = hypot(c, s) / (double)n;
    }
}

#if defined(MS_WINDOW_HAVE_AVX2)
/* The AVX2 twin of strengths_scalar, four candidate periods a register: each lane makes the
 * scalar path's operations in its order (the same products, the same polynomials, the same sums
 * over the starts, no fused multiply-add: the build is ISO C, whose floating-point contraction is off),
 * so that the strengths are the same bits (tests/optimizer/test_window_features.py). Why: the
 * search is most of a classification (3.5 of 5 ms for the game loop's window, 243,000 sine and
 * cosine pairs), and this takes about a third of the scalar time. */
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));

/* round_near, lane by lane: a truncation (ROUNDPD toward zero equals the int64_t conversion for
 * these magnitudes, but gives -0.0 for (-1, 0), where the conversion gives +0.0: only a quarter
 * of a negative r is rounded there, and r - 0.25 * -0.0 is r, as r - 0.25 * 0.0 is). */
__attribute__((target("avx2"), always_inline)) static inline v4d round_near4(v4d x)
{
    v4l negative = x < 0.0;
    v4d half = (v4d)((negative & (v4l)((v4d){0} - 0.5)) | (~negative & (v4l)((v4d){0} + 0.5)));
    return (v4d)_mm256_round_pd((__m256d)(x + half), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
}

__attribute__((target("avx2"))) static size_t strengths_avx2(const uint64_t *starts, size_t n, size_t n_periods,
                                                            double *strengths)
{
    const v4l sign = (v4l){0} + INT64_MIN;
    size_t p = 0;
    for (; p + 4 <= n_periods; p += 4) {
        v4d per_us = {1.0 / candidate_period_us(p), 1.0 / candidate_period_us(p + 1),
                      1.0 / candidate_period_us(p + 2), 1.0 / candidate_period_us(p + 3)};
        v4d c = {0}, s = {0};
        for (size_t j = 0; j < n; j++) {
            v4d turns = (double)(starts[j] - starts[0]) * per_us;
            v4d r = turns - round_near4(turns);
            v4d quarter = round_near4(4.0 * r);
            v4d a = (r - 0.25 * quarter) * (2.0 * M_PI), a2 = a * a;
            v4d sa = SIN_TAYLOR(a, a2), ca = COS_TAYLOR(a2);
            /* turn_sincos's switch on quarter & 3 (quarter is -2 .. 2): odd quarters swap sine and
             * cosine; the sine is negated at 2 and 3 (-2, -1), the cosine at 1 and 2 (-2). */
            v4l odd = (quarter == 1.0) | (quarter == -1.0);
            v4l far = (quarter == 2.0) | (quarter == -2.0);
            v4l neg_sin = far | (quarter == -1.0), neg_cos = far | (quarter == 1.0);
            v4l sin_bits = (odd & (v4l)ca) | (~odd & (v4l)sa);
            v4l cos_bits = (odd & (v4l)sa) | (~odd & (v4l)ca);
            s += (v4d)(sin_bits ^ (neg_sin & sign));
            c += (v4d)(cos_bits ^ (neg_cos & sign));
        }
        for (int k = 0; k < 4; k++)
            strengths[p + k] = hypot(c[k], s[k]) / (double)n;
    }
    return p;
}
#endif

int ms_window_simd_active(void)
{
#if defined(MS_WINDOW_HAVE_AVX2)
    return ms_reduce_simd_active() && __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* The frame clock: for each candidate period P the strength is the phase concentration of the
 * burst starts t (|mean(exp(2 pi i t / P))|, the Rayleigh statistic): a loop that sleeps to fixed
 * frame deadlines scores near 1 at its period even when some wake-ups are late; starts at random
 * moments score about sqrt(ln(candidates) / starts). Starts locked to P are as locked to P/2,
 * P/3...: the largest period nearly as strong as the best (0.9) is the frame itself. The starts
 * span at most MS_WINDOW_FRAME_SPAN_US, so no phase exceeds 2,000 turns. */
static bool frame_clock(const uint64_t *starts, size_t n, ms_window_stats_t *out)
{
    double best = 0.0, period = 0.0;
    size_t n_periods = (MS_WINDOW_MAX_PERIOD_US - MS_WINDOW_MIN_PERIOD_US) / MS_WINDOW_PERIOD_STEP_US;
    double *strengths = map_bytes(n_periods * sizeof *strengths); /* (15 KB: not on a thread's stack) */
    if (strengths == NULL)
        return false;
    size_t done = 0;
#if defined(MS_WINDOW_HAVE_AVX2)
    if (ms_window_simd_active())
        done = strengths_avx2(starts, n, n_periods, strengths);
#endif
    strengths_scalar(starts, n, done, n_periods, strengths);
    for (size_t p = 0; p < n_periods; p++)
        if (strengths[p] > best)
            best = strengths[p];
    for (size_t p = 0; p < n_periods; p++)
        if (strengths[p] >= 0.9 * best)
            period = candidate_period_us(p);
    unmap_bytes(strengths, n_periods * sizeof *strengths);
    out->frame_period_us = period;
    out->frame_clock = best;
    return true;
}

/* Span, idle time and frame clock of n >= 2 times (a copy: sorted and overwritten here); false
 * without memory for the temporaries (then no idle time nor frame clock). */
static bool time_features(int64_t *times, size_t n, ms_window_stats_t *out)
{
    int64_t lowest = times[0], highest = times[0];
    for (size_t i = 1; i < n; i++) {
        lowest = times[i] < lowest ? times[i] : lowest;
        highest = times[i] > highest ? times[i] : highest;
    }
    out->span_us = (double)(highest - lowest);
    /* Sorted as offsets from the earliest: their span needs fewer radix passes than 64 bits. */
    uint64_t *tmp = map_bytes(n * sizeof *tmp), range = (uint64_t)(highest - lowest);
    if (tmp == NULL)
        return false;
    uint64_t *offsets = (uint64_t *)times; /* (int64_t and uint64_t may alias) */
    for (size_t i = 0; i < n; i++)
        offsets[i] = (uint64_t)(times[i] - lowest);
    radix_sort(offsets, tmp, n, range ? 64 - (unsigned)__builtin_clzll(range) : 0);
    /* Burst starts: a record after an idle gap. */
    size_t n_starts = 0;
    double idle = 0.0;
    for (size_t i = 1; i < n; i++) {
        uint64_t gap = offsets[i] - offsets[i - 1];
        if (gap > MS_WINDOW_IDLE_GAP_US) {
            idle += (double)gap;
            tmp[n_starts++] = offsets[i];
        }
    }
    out->idle_us = idle;
    bool ok = true;
    if (n_starts > 0) {
        /* The last FRAME_STARTS starts of the last FRAME_SPAN: over n starts of a loop of period
         * P, the strength's peak is about P / n wide, and past 128 starts it falls between the
         * grid's 50 us steps (a 60 fps loop read over 10 s scored 0.5 instead of 0.97). */
        size_t first = n_starts > MS_WINDOW_FRAME_STARTS ? n_starts - MS_WINDOW_FRAME_STARTS : 0;
        while (tmp[first] + MS_WINDOW_FRAME_SPAN_US < tmp[n_starts - 1])
            first++;
        if (n_starts - first >= MS_WINDOW_MIN_STARTS)
            ok = frame_clock(tmp + first, n_starts - first, out);
    }
    unmap_bytes(tmp, n * sizeof *tmp);
    return ok;
}

/* Short-lived fraction and median of n >= 1 lifetimes (a copy: reordered here). */
static void lifetime_features(int64_t *lifetimes, size_t n, ms_window_stats_t *out)
{
    size_t short_lived = 0;
    for (size_t i = 0; i < n; i++)
        short_lived += lifetimes[i] < MS_WINDOW_SHORT_LIVED_US;
    out->short_lived = (double)short_lived / (double)n;
    double upper = (double)select_kth(lifetimes, n, n / 2);
    if (n % 2) {
        out->median_lifetime_us = upper;
    } else { /* the mean of the two middle ones: the lower is the largest below position n/2 */
        int64_t lower = lifetimes[0];
        for (size_t i = 1; i < n / 2; i++)
            lower = lifetimes[i] > lower ? lifetimes[i] : lower;
        out->median_lifetime_us = ((double)lower + upper) / 2.0;
    }
}

/* A copy of n elements of array, or NULL (also for n == 0). */
static int64_t *copy_of(const int64_t *array, size_t n)
{
    int64_t *copy = n ? map_bytes(n * sizeof *copy) : NULL;
    if (copy != NULL)
        memcpy(copy, array, n * sizeof *copy);
    return copy;
}

void ms_window_features(ms_window_t *w, ms_window_stats_t *out)
{
    /* Computed on copies, the lock given back first: the mover's read, or a drain's that keeps
     * the GIL, waits for two copies at most, not for the sort and the frame-clock search. */
    pthread_mutex_lock(&w->lock);
    stats_locked(w, out);
    size_t n = w->n_times, n_lifetimes = w->n_lifetimes;
    int64_t *times = n >= 2 ? copy_of(w->times, n) : NULL;
    int64_t *lifetimes = copy_of(w->lifetimes, n_lifetimes);
    pthread_mutex_unlock(&w->lock);
    bool ok = n < 2 || (times != NULL && time_features(times, n, out));
    if (n_lifetimes > 0 && lifetimes != NULL)
        lifetime_features(lifetimes, n_lifetimes, out);
    ok &= n_lifetimes == 0 || lifetimes != NULL;
    unmap_bytes(times, n * sizeof *times);
    unmap_bytes(lifetimes, n_lifetimes * sizeof *lifetimes);
    if (!ok) { /* no memory for a copy or a temporary: those features read 0 this time */
        pthread_mutex_lock(&w->lock);
        out->failures = ++w->failures;
        pthread_mutex_unlock(&w->lock);
    }
}

static int compare_site(const void *a, const void *b)
{
    uint32_t x = ((const site_slot_t *)a)->id, y = ((const site_slot_t *)b)->id;
    return (x > y) - (x < y);
}

size_t ms_window_sites(ms_window_t *w, uint32_t *ids, double *weights, size_t capacity)
{
    pthread_mutex_lock(&w->lock);
    size_t n = 0;
    site_slot_t *sorted = map_bytes((w->n_sites ? w->n_sites : 1) * sizeof *sorted);
    if (sorted != NULL) {
        for (size_t i = 0; i < w->site_slots; i++)
            if (w->sites[i].used)
                sorted[n++] = w->sites[i];
        qsort(sorted, n, sizeof *sorted, compare_site);
        n = n < capacity ? n : capacity;
        for (size_t i = 0; i < n; i++) {
            ids[i] = sorted[i].id;
            weights[i] = sorted[i].weight;
        }
        unmap_bytes(sorted, (w->n_sites ? w->n_sites : 1) * sizeof *sorted);
    }
    pthread_mutex_unlock(&w->lock);
    return n;
}

/* The first (at most capacity) of the *n elements of *array, read under the lock: a read may
 * move the array as it grows. */
static size_t copy_out(ms_window_t *w, int64_t *const *array, const size_t *n, int64_t *out, size_t capacity)
{
    pthread_mutex_lock(&w->lock);
    size_t k = *n < capacity ? *n : capacity;
    if (k)
        memcpy(out, *array, k * sizeof *out);
    pthread_mutex_unlock(&w->lock);
    return k;
}

size_t ms_window_times(ms_window_t *w, int64_t *times, size_t capacity)
{
    return copy_out(w, &w->times, &w->n_times, times, capacity);
}

size_t ms_window_lifetimes(ms_window_t *w, int64_t *lifetimes, size_t capacity)
{
    return copy_out(w, &w->lifetimes, &w->n_lifetimes, lifetimes, capacity);
}

size_t ms_window_pending(ms_window_t *w, uint64_t *addresses, int64_t *times, size_t capacity)
{
    pthread_mutex_lock(&w->lock);
    size_t n = 0;
    for (size_t i = 0; i < w->pending_slots && n < capacity; i++) {
        if (w->pending[i].address != 0) {
            addresses[n] = w->pending[i].address;
            times[n++] = w->pending[i].time;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return n;
}

void ms_window_threads(ms_window_t *w, uint8_t *threads)
{
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < MS_WINDOW_THREADS; i++)
        threads[i] = (uint8_t)(w->threads[i >> 6] >> (i & 63) & 1);
    pthread_mutex_unlock(&w->lock);
}
