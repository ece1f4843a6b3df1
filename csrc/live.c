/*
 * live.c: the sampled blocks that are still allocated, so that a free of one of them lowers the
 * live estimate by its live weight times its size.
 *
 * A hash table of 8-way buckets, two candidate buckets per key, each bucket behind its own
 * one-byte lock (only sampled allocations and likely-sampled frees take them), in front of it a
 * counting filter of 2^18 bytes indexed by address granule (ms_live_slot). An unsampled free
 * reads one filter byte and stops there; the filter never says "absent" for a present address,
 * and says "maybe" for an absent one with a probability of about (sampled live blocks / 2^18).
 *
 * A bucket's lock and its mask of used ways share one 2-byte slot: a sampled event's lines are
 * rarely in cache in a real program, and the lock instruction that brings the lock's line in
 * then brings the mask with it.
 *
 * Growth. Large blocks are always sampled, so the table must hold every live large block of the
 * program: it starts at 8,192 entries (256 KiB) and doubles when three quarters full, up to the
 * budget (LIVE_TABLE_MAX_ENTRIES). A doubling locks every bucket of the old table (in index order,
 * like every other taker of two locks), rehashes into the new one, publishes it, and unlocks; a
 * thread that then gets an old lock sees the table changed and starts again on the new one. So
 * nobody reads the old entries after the switch and they are unmapped at once; the old locks
 * and masks (1/128 of the entries' size) stay allocated, since a late thread may still take one.
 *
 * Past the budget the estimate stays unbiased by sampling the table itself, by threshold: an
 * entry's value is v = weight x size (its share of the live estimate); under a threshold tau, a
 * new block with v >= tau enters as it is, one with v < tau enters with probability v / tau and
 * a live weight raised so that its value is tau (its live part then goes through the spill and
 * its record is flagged NOLIVE). When the table is three quarters full again, tau rises to the
 * least value that leaves half the entries expected, and every entry below it tosses its coin
 * the same way: kept and raised, or evicted, the spill adding or taking off what changes. Each
 * block's expected contribution stays v, and blocks are kept with probability min(1, v / tau)
 * whatever the order of events: big blocks, which carry most of the bytes, are never dropped
 * for small ones and never weighted up (a uniform coin would count an 8 MB buffer 0 or 16
 * times).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define LIVE_WAYS 8
#define LIVE_MIN_BITS 10 /* 1,024 buckets: 8,192 entries */
#define LIVE_MAX_BITS 23 /* the largest budget accepted, 2^26 entries */
#define FILTER_SIZE (1u << MS_LIVE_FILTER_BITS)
#define FILTER_SATURATED 255

typedef ms_live_entry_t live_bucket_t[LIVE_WAYS];

/* A bucket's lock and its used mask (bit i: way i holds an entry, address != 0; read and written
 * under the lock), side by side. */
typedef struct {
    ms_spin_t lock;
    uint8_t used;
} live_meta_t;

typedef struct {
    uint32_t bits;
    live_bucket_t *buckets; /* mapped; unmapped once a larger table replaced it */
    live_meta_t *meta;      /* never freed: a thread may still take an old table's lock */
} live_table_t;

_Atomic uint8_t ms_live_filter[FILTER_SIZE];
/* One descriptor per size, so that a table's address never changes and stale pointers to it stay
 * comparable. Written only under g_resize_lock, before the table is published. */
static live_table_t g_tables[LIVE_MAX_BITS + 1];
static _Atomic(live_table_t *) g_table;
static ms_spin_t g_resize_lock;
static _Atomic uint64_t g_entries;
static _Atomic uint32_t g_max_bits = 15; /* from the budget: 2^15 buckets = 262,144 entries */
static _Atomic double g_threshold;      /* tau: 0 until the budget is reached */
static _Atomic uint64_t g_table_bytes;   /* entries mapped, and buckets' locks and masks allocated, now */

static void filter_add(uint64_t address)
{
    _Atomic uint8_t *slot = &ms_live_filter[ms_live_slot(address)];
    uint8_t v = atomic_load_explicit(slot, memory_order_relaxed);
    /* A saturated byte stays saturated: it can no longer be decremented soundly. */
    while (v != FILTER_SATURATED && !atomic_compare_exchange_weak(slot, &v, (uint8_t)(v + 1)))
        ;
}

static void filter_remove(uint64_t address)
{
    _Atomic uint8_t *slot = &ms_live_filter[ms_live_slot(address)];
    uint8_t v = atomic_load_explicit(slot, memory_order_relaxed);
    while (v != FILTER_SATURATED && v != 0 && !atomic_compare_exchange_weak(slot, &v, (uint8_t)(v - 1)))
        ;
}

static uint64_t capacity_of(const live_table_t *t)
{
    return (uint64_t)LIVE_WAYS << t->bits;
}

/* A table of 2^bits buckets, or NULL without memory. mmap rather than calloc: the pages are
 * zero on first touch and go back to the system at once when the table is replaced. Called
 * inside allocator hooks: neither allocates through Python. */
static size_t table_size(uint32_t bits)
{
    return sizeof(live_bucket_t) << bits;
}

static live_table_t *table_make(uint32_t bits)
{
    live_table_t *t = &g_tables[bits];
    size_t size = table_size(bits);
    void *buckets = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buckets == MAP_FAILED)
        return NULL;
    if (t->meta == NULL) {
        t->meta = calloc((size_t)1 << bits, sizeof(live_meta_t));
        if (t->meta == NULL) {
            munmap(buckets, size);
            return NULL;
        }
        atomic_fetch_add(&g_table_bytes, ((uint64_t)1 << bits) * sizeof(live_meta_t));
    }
    t->bits = bits;
    t->buckets = buckets;
    atomic_fetch_add(&g_table_bytes, size);
    return t;
}

static void table_unmap(live_table_t *t)
{
    size_t size = table_size(t->bits);
    munmap(t->buckets, size);
    t->buckets = NULL;
    atomic_fetch_sub(&g_table_bytes, size);
}

/* The current table, made on first use (NULL only without memory). */
static live_table_t *current(void)
{
    live_table_t *t = atomic_load_explicit(&g_table, memory_order_acquire);
    if (MS_LIKELY(t != NULL))
        return t;
    ms_spin_lock(&g_resize_lock);
    t = atomic_load(&g_table);
    if (t == NULL && (t = table_make(LIVE_MIN_BITS)) != NULL)
        atomic_store_explicit(&g_table, t, memory_order_release);
    ms_spin_unlock(&g_resize_lock);
    return t;
}

/* Two candidate buckets per address (hashed, unlike the filter: only sampled events come here,
 * and they should spread), from the high and the low bits of one well-mixed hash: two plain
 * multiplications of the address are correlated for the regular strides of allocator pools and
 * overflowed buckets at 15 % load. An entry goes to the emptier of the two, so that a bucket
 * overflow needs both full: measured, none below 70 % load on heap addresses. */
static inline void buckets_of(const live_table_t *t, uint64_t address, uint32_t *first, uint32_t *second)
{
    uint64_t h = address;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    *first = (uint32_t)(h >> (64 - t->bits));
    *second = (uint32_t)(h & ((1u << t->bits) - 1));
}

/* Locks the two buckets of address in the current table, always in index order so that two
 * threads (or a resize, which takes them all in order) cannot deadlock. NULL without a table. */
__attribute__((always_inline)) static inline live_table_t *lock_pair(uint64_t address, uint32_t *a, uint32_t *b)
{
    for (;;) {
        live_table_t *t = current();
        if (t == NULL)
            return NULL;
        buckets_of(t, address, a, b);
        uint32_t lo = *a < *b ? *a : *b, hi = *a < *b ? *b : *a;
        ms_spin_lock(&t->meta[lo].lock);
        if (lo != hi)
            ms_spin_lock(&t->meta[hi].lock);
        if (MS_LIKELY(atomic_load_explicit(&g_table, memory_order_acquire) == t))
            return t;
        /* replaced while we waited: its entries are gone, start again on the new one */
        ms_spin_unlock(&t->meta[lo].lock);
        if (lo != hi)
            ms_spin_unlock(&t->meta[hi].lock);
    }
}

static void unlock_pair(live_table_t *t, uint32_t a, uint32_t b)
{
    ms_spin_unlock(&t->meta[a].lock);
    if (a != b)
        ms_spin_unlock(&t->meta[b].lock);
}

static bool is_manual(const ms_live_entry_t *e)
{
    return e->domain == MS_DOMAIN_MANUAL;
}

/* e's bit in its bucket's used mask: set when e gets an address, cleared when it loses it.
 * Lookups visit only the ways in use (a sampled block's free usually finds one or two), and
 * the emptiness of a bucket is a popcount. */
__attribute__((always_inline)) static inline void set_used(live_table_t *t, const ms_live_entry_t *e, bool used)
{
    size_t k = (size_t)(e - &t->buckets[0][0]);
    uint8_t bit = (uint8_t)(1u << (k % LIVE_WAYS));
    if (used)
        t->meta[k / LIVE_WAYS].used |= bit;
    else
        t->meta[k / LIVE_WAYS].used &= (uint8_t)~bit;
}

/* The entry of (address, keyspace) whose moving mark is moving; address 0 finds an empty slot. */
static ms_live_entry_t *find_in(live_table_t *t, uint32_t b, uint64_t address, bool manual, uint32_t moving)
{
    if (address == 0) {
        unsigned empty = ~(unsigned)t->meta[b].used & 0xffu;
        return empty ? &t->buckets[b][__builtin_ctz(empty)] : NULL;
    }
    for (unsigned ways = t->meta[b].used; ways != 0; ways &= ways - 1) {
        ms_live_entry_t *e = &t->buckets[b][__builtin_ctz(ways)];
        if (e->address == address && is_manual(e) == manual && e->moving == moving)
            return e;
    }
    return NULL;
}

static ms_live_entry_t *find_marked(live_table_t *t, uint32_t b1, uint32_t b2, uint64_t address, bool manual,
                                    uint32_t moving)
{
    ms_live_entry_t *e = find_in(t, b1, address, manual, moving);
    return e ? e : find_in(t, b2, address, manual, moving);
}

static ms_live_entry_t *find(live_table_t *t, uint32_t b1, uint32_t b2, uint64_t address, bool manual)
{
    return find_marked(t, b1, b2, address, manual, 0);
}

__attribute__((always_inline)) static inline int free_ways(live_table_t *t, uint32_t b)
{
    unsigned n = t->meta[b].used; /* its popcount, without a libgcc call on a baseline x86-64 */
    n = n - ((n >> 1) & 0x55u);
    n = (n & 0x33u) + ((n >> 2) & 0x33u);
    return LIVE_WAYS - (int)((n + (n >> 4)) & 0x0fu);
}

/* An empty slot in the emptier of the two buckets, or NULL when both are full. */
__attribute__((always_inline)) static inline ms_live_entry_t *free_slot(live_table_t *t, uint32_t b1, uint32_t b2)
{
    uint32_t b = free_ways(t, b1) >= free_ways(t, b2) ? b1 : b2;
    return find_in(t, b, 0, false, 0);
}

/* Rehashes every entry of from into to (not published yet, so no locks). An entry that finds
 * both its buckets full (rare at three-eighths load) leaves the estimate through the spill. */
static void rehash(live_table_t *from, live_table_t *to)
{
    for (uint32_t b = 0; b < (1u << from->bits); b++) {
        for (int i = 0; i < LIVE_WAYS; i++) {
            ms_live_entry_t *e = &from->buckets[b][i];
            if (e->address == 0)
                continue;
            uint32_t b1, b2;
            buckets_of(to, e->address, &b1, &b2);
            ms_live_entry_t *slot = free_slot(to, b1, b2);
            if (slot) {
                *slot = *e;
                set_used(to, slot, true);
            } else {
                ms_spill_live(e->domain, e->site, e->size, e->weight, 0.0f);
                filter_remove(e->address);
                atomic_fetch_sub(&g_entries, 1);
            }
        }
    }
}

static double value_of(const ms_live_entry_t *e)
{
    return (double)e->weight * (double)e->size;
}

/* The number of entries of t expected to stay under threshold tau. */
static double expected_kept(live_table_t *t, double tau)
{
    double kept = 0.0;
    for (uint32_t b = 0; b < (1u << t->bits); b++) {
        for (int i = 0; i < LIVE_WAYS; i++) {
            const ms_live_entry_t *e = &t->buckets[b][i];
            if (e->address != 0) {
                double v = value_of(e);
                kept += v >= tau ? 1.0 : v / tau;
            }
        }
    }
    return kept;
}

/* One block of value v under threshold tau: 0 if it is left out, else the live weight it keeps
 * (its own, or raised to tau / size). The probability is computed from the weight as stored (a
 * float), v / (weight x size), so that the expectation is v exactly. */
static float threshold_coin(double v, uint64_t size, float weight, double tau, uint64_t *rng)
{
    if (v >= tau || size == 0)
        return weight;
    float raised = (float)(tau / (double)size);
    double raised_value = (double)raised * (double)size;
    if (raised_value <= v)
        return weight;
    double u = (double)(ms_rng_next(rng) >> 11) * 0x1.0p-53; /* [0, 1) */
    return u * raised_value < v ? raised : 0.0f;
}

/* At the budget: tau rises to within 10 % of the least value under which half of the n entries
 * are expected to stay, and every entry below it tosses its coin. That value lies between the old
 * tau (under which all n stay) and twice their mean value (under which at most n / 2 can); the
 * search is a bisection on the logarithm from a thousandth of the upper bound, so that it takes at
 * most eight passes over the table whatever the spread of values (this runs inside a hook, with
 * every lock held). Called with every lock of t held; false if t is empty. */
static bool thin(live_table_t *t, uint64_t *rng)
{
    double n = 0.0, total = 0.0;
    for (uint32_t b = 0; b < (1u << t->bits); b++) {
        for (int i = 0; i < LIVE_WAYS; i++) {
            if (t->buckets[b][i].address != 0) {
                n += 1.0;
                total += value_of(&t->buckets[b][i]);
            }
        }
    }
    if (n == 0.0 || !(total > 0.0))
        return false;
    double old = atomic_load(&g_threshold), hi = 2.0 * total / n, lo = hi / 1024.0;
    if (lo <= old)
        lo = old; /* all n stay under it */
    else if (expected_kept(t, lo) <= n / 2)
        hi = lo; /* values spread over more than a thousandfold: lower is not worth the passes */
    while (hi > lo * 1.1) {
        double mid = sqrt(lo * hi);
        if (expected_kept(t, mid) <= n / 2)
            hi = mid;
        else
            lo = mid;
    }
    double tau = hi;
    for (uint32_t b = 0; b < (1u << t->bits); b++) {
        for (int i = 0; i < LIVE_WAYS; i++) {
            ms_live_entry_t *e = &t->buckets[b][i];
            if (e->address == 0)
                continue;
            float kept = threshold_coin(value_of(e), e->size, e->weight, tau, rng);
            if (kept == e->weight)
                continue;
            if (kept > 0.0f) {
                ms_spill_live(e->domain, e->site, e->size, e->weight, kept);
                e->weight = kept;
            } else {
                ms_spill_live(e->domain, e->site, e->size, e->weight, 0.0f);
                filter_remove(e->address);
                e->address = 0;
                set_used(t, e, false);
                atomic_fetch_sub(&g_entries, 1);
            }
        }
    }
    atomic_store(&g_threshold, tau);
    return true;
}

/* Makes room in t, which was full enough (or had both buckets of a key full): doubles it while
 * the budget allows, else thins it. Returns false when t could be neither grown nor thinned
 * (no memory, or nothing in it). Runs in whichever thread found t full, inside a hook: a
 * pause of a few milliseconds at most once per doubling. */
static bool make_room(live_table_t *t, uint64_t *rng)
{
    bool done = true;
    ms_spin_lock(&g_resize_lock);
    if (atomic_load(&g_table) != t) { /* someone else did it */
        ms_spin_unlock(&g_resize_lock);
        return true;
    }
    uint32_t n = 1u << t->bits;
    for (uint32_t b = 0; b < n; b++)
        ms_spin_lock(&t->meta[b].lock);
    live_table_t *bigger = NULL;
    if (t->bits < atomic_load(&g_max_bits) && (bigger = table_make(t->bits + 1)) != NULL) {
        rehash(t, bigger);
        atomic_store_explicit(&g_table, bigger, memory_order_release);
    } else {
        done = rng != NULL && thin(t, rng);
    }
    for (uint32_t b = 0; b < n; b++)
        ms_spin_unlock(&t->meta[b].lock);
    if (bigger)
        table_unmap(t); /* nobody reads it any more: see lock_pair */
    ms_spin_unlock(&g_resize_lock);
    return done;
}

int ms_live_insert(ms_live_entry_t *e, uint64_t *rng, ms_live_entry_t *stale)
{
    stale->address = 0;
    e->moving = 0;
    if (e->address == 0)
        return MS_LIVE_OUT;
    int result = MS_LIVE_IN;
    if (rng != NULL) {
        double tau = atomic_load_explicit(&g_threshold, memory_order_relaxed);
        float kept = threshold_coin(value_of(e), e->size, e->weight, tau, rng);
        if (kept == 0.0f)
            return MS_LIVE_SKIP;
        if (kept != e->weight) {
            e->weight = kept;
            result = MS_LIVE_SPILL;
        }
    }
    bool manual = is_manual(e);
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t b1, b2;
        live_table_t *t = lock_pair(e->address, &b1, &b2);
        if (t == NULL)
            return MS_LIVE_OUT;
        /* The filter has never said "absent" for an address in the table: a fresh address
         * (the usual case) skips the search for a stale entry. */
        ms_live_entry_t *slot = ms_live_maybe(e->address) ? find(t, b1, b2, e->address, manual) : NULL;
        bool fresh = slot == NULL;
        if (slot) /* a stale entry for a reused address: its free was never seen */
            *stale = *slot;
        else
            slot = free_slot(t, b1, b2);
        if (slot) {
            *slot = *e;
            set_used(t, slot, true);
            unlock_pair(t, b1, b2);
            if (fresh) {
                filter_add(e->address);
                uint64_t n = atomic_fetch_add(&g_entries, 1) + 1;
                if (n > capacity_of(t) / 4 * 3)
                    make_room(t, rng);
            }
            return result;
        }
        unlock_pair(t, b1, b2);
        if (!make_room(t, rng))
            break;
    }
    return MS_LIVE_OUT;
}

bool ms_live_remove(uint64_t address, bool manual, ms_live_entry_t *out)
{
    uint32_t b1, b2;
    live_table_t *t = lock_pair(address, &b1, &b2);
    if (t == NULL)
        return false;
    ms_live_entry_t *slot = address ? find(t, b1, b2, address, manual) : NULL;
    if (slot) {
        *out = *slot;
        slot->address = 0;
        set_used(t, slot, false);
    }
    unlock_pair(t, b1, b2);
    if (slot) {
        filter_remove(address);
        atomic_fetch_sub(&g_entries, 1);
    }
    return slot != NULL;
}

bool ms_live_claim(uint64_t address)
{
    uint32_t b1, b2;
    live_table_t *t = lock_pair(address, &b1, &b2);
    if (t == NULL)
        return false;
    ms_live_entry_t *slot = find(t, b1, b2, address, false);
    if (slot)
        slot->moving = 1;
    unlock_pair(t, b1, b2);
    return slot != NULL;
}

bool ms_live_settle(uint64_t address, bool freed, ms_live_entry_t *out)
{
    uint32_t b1, b2;
    live_table_t *t = lock_pair(address, &b1, &b2);
    if (t == NULL)
        return false;
    ms_live_entry_t *slot = find_marked(t, b1, b2, address, false, 1);
    if (slot) {
        slot->moving = 0;
        *out = *slot;
        if (freed) {
            slot->address = 0;
            set_used(t, slot, false);
        }
    }
    unlock_pair(t, b1, b2);
    if (slot && freed) {
        filter_remove(address);
        atomic_fetch_sub(&g_entries, 1);
    }
    return slot != NULL;
}

void ms_live_configure(uint64_t max_entries)
{
    uint32_t bits = LIVE_MIN_BITS;
    while (bits < LIVE_MAX_BITS && ((uint64_t)LIVE_WAYS << (bits + 1)) <= max_entries)
        bits++;
    atomic_store(&g_max_bits, bits);
}

void ms_live_clear(void)
{
    live_table_t *t = current();
    /* Bucket by bucket under each lock: a thread still inside a hook may be using one. */
    for (uint32_t b = 0; t && b < (1u << t->bits); b++) {
        ms_spin_lock(&t->meta[b].lock);
        for (int i = 0; i < LIVE_WAYS; i++) {
            if (t->buckets[b][i].address != 0) {
                filter_remove(t->buckets[b][i].address);
                t->buckets[b][i].address = 0;
                atomic_fetch_sub(&g_entries, 1);
            }
        }
        t->meta[b].used = 0;
        ms_spin_unlock(&t->meta[b].lock);
    }
    atomic_store(&g_threshold, 0.0);
    /* Saturated bytes are the only ones the loop above cannot bring back to zero. */
    for (uint32_t i = 0; i < FILTER_SIZE; i++) {
        uint8_t v = FILTER_SATURATED;
        /* Load first: a compare-exchange writes the page even when it fails. */
        if (atomic_load_explicit(&ms_live_filter[i], memory_order_relaxed) == FILTER_SATURATED)
            atomic_compare_exchange_strong(&ms_live_filter[i], &v, 0);
    }
    /* NULL's slot says "maybe" for good: the free fast path then needs no NULL test of its own
     * (a free of NULL, or of a block in that slot, takes the general path, which checks). */
    atomic_store(&ms_live_filter[ms_live_slot(0)], FILTER_SATURATED);
}

void ms_live_fork_child_locks(void)
{
    /* The parent's other threads may have held bucket locks (or the resize lock) at fork(); they
     * are gone. Done in every child, tracked or not: a later start() clears the table under
     * these locks. */
    atomic_store_explicit(&g_resize_lock, 0, memory_order_relaxed);
    live_table_t *t = atomic_load(&g_table);
    /* Load first: a store would copy every page of the parent's locks and masks into the child
     * (fork+exec children included), where a held lock is rare. */
    for (uint32_t b = 0; t && b < (1u << t->bits); b++)
        if (atomic_load_explicit(&t->meta[b].lock, memory_order_relaxed) != 0)
            atomic_store_explicit(&t->meta[b].lock, 0, memory_order_relaxed);
}

void ms_live_fork_child(void)
{
    ms_live_clear();
}

uint64_t ms_live_footprint(void)
{
    return sizeof ms_live_filter + atomic_load(&g_table_bytes);
}

void ms_live_stats(uint64_t *entries, uint64_t *capacity, double *threshold)
{
    live_table_t *t = atomic_load(&g_table);
    *entries = atomic_load(&g_entries);
    *capacity = t ? capacity_of(t) : 0;
    *threshold = atomic_load(&g_threshold);
}

/* Calls visit(entry, arg) for every live entry, under the resize lock, so that the table is
 * neither replaced (and unmapped) nor thinned during the scan, and bucket by bucket under each
 * lock, like ms_live_clear. visit must not touch the table. */
static void for_each_entry(void (*visit)(const ms_live_entry_t *, void *), void *arg)
{
    ms_spin_lock(&g_resize_lock);
    live_table_t *t = atomic_load(&g_table);
    for (uint32_t b = 0; t && b < (1u << t->bits); b++) {
        ms_spin_lock(&t->meta[b].lock);
        for (int i = 0; i < LIVE_WAYS; i++) {
            const ms_live_entry_t *e = &t->buckets[b][i];
            if (e->address != 0 && e->site < MS_MAX_IDS)
                visit(e, arg);
        }
        ms_spin_unlock(&t->meta[b].lock);
    }
    ms_spin_unlock(&g_resize_lock);
}

static void mark_site(const ms_live_entry_t *e, void *mark)
{
    ((uint8_t *)mark)[e->site] = 1;
}

void ms_live_sites_in_use(uint8_t *mark)
{
    /* Sets mark[site] for the site of every live entry: an id may only be reused once no live
     * block carries it (a block's free record carries the id of its allocation). mark has
     * MS_MAX_IDS bytes. */
    for_each_entry(mark_site, mark);
}

typedef struct {
    double *count, *bytes;
} by_id_t;

static void add_by_id(const ms_live_entry_t *e, void *arg)
{
    by_id_t *sums = arg;
    sums->count[e->site] += e->weight;
    sums->bytes[e->site] += (double)e->weight * (double)e->size;
}

void ms_live_by_id(double *count, double *bytes)
{
    memset(count, 0, MS_MAX_IDS * sizeof *count);
    memset(bytes, 0, MS_MAX_IDS * sizeof *bytes);
    by_id_t sums = {count, bytes};
    for_each_entry(add_by_id, &sums);
}
