/*
 * live.c: the sampled blocks that are still allocated, so that a free of one of them lowers the
 * live estimate by its weight times its size.
 *
 * A bounded table of 8-way buckets, two candidate buckets per address, each behind its own
 * one-byte lock (only sampled allocations and likely-sampled frees take them), in front of it a counting filter of 2^18 bytes indexed by
 * address granule (ms_live_slot). An unsampled free reads one filter byte and stops there; the
 * filter never says "absent" for a present address, and says "maybe" for an absent one with a
 * probability of about (sampled live blocks / 2^18). When both buckets are full the insert is
 * refused; the record is then flagged MS_FLAG_NOLIVE and stays out of the live estimate.
 */
#include <string.h>

#include "internal.h"

#define LIVE_BUCKET_BITS 13
#define LIVE_BUCKETS (1u << LIVE_BUCKET_BITS)
#define LIVE_WAYS 8
#define FILTER_SIZE (1u << MS_LIVE_FILTER_BITS)
#define FILTER_SATURATED 255

_Atomic uint8_t ms_live_filter[FILTER_SIZE];
static ms_live_entry_t g_table[LIVE_BUCKETS][LIVE_WAYS];
static ms_spin_t g_locks[LIVE_BUCKETS];

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

/* Two candidate buckets per address (hashed, unlike the filter: only sampled events come here,
 * and they should spread). An entry lives in either; a bucket overflow then needs both full,
 * which keeps MS_FLAG_NOLIVE rare even with tens of thousands of live sampled blocks. */
static inline void buckets_of(uint64_t address, uint32_t *first, uint32_t *second)
{
    *first = (uint32_t)((address * 0x9E3779B97F4A7C15ull) >> (64 - LIVE_BUCKET_BITS));
    *second = (uint32_t)((address * 0xC2B2AE3D27D4EB4Full) >> (64 - LIVE_BUCKET_BITS));
}

/* Both buckets' locks, always in index order so that two threads cannot deadlock. */
static void lock_pair(uint32_t a, uint32_t b)
{
    ms_spin_lock(&g_locks[a < b ? a : b]);
    if (a != b)
        ms_spin_lock(&g_locks[a < b ? b : a]);
}

static void unlock_pair(uint32_t a, uint32_t b)
{
    ms_spin_unlock(&g_locks[a]);
    if (a != b)
        ms_spin_unlock(&g_locks[b]);
}

static ms_live_entry_t *find_in(uint32_t b, uint64_t address)
{
    for (int i = 0; i < LIVE_WAYS; i++) {
        if (g_table[b][i].address == address)
            return &g_table[b][i];
    }
    return NULL;
}

bool ms_live_insert(const ms_live_entry_t *e)
{
    if (e->address == 0)
        return false;
    uint32_t b1, b2;
    buckets_of(e->address, &b1, &b2);
    lock_pair(b1, b2);
    ms_live_entry_t *slot = find_in(b1, e->address);
    if (!slot)
        slot = find_in(b2, e->address);
    if (slot) {
        /* A stale entry for a reused address (its free was not seen, e.g. while stopped). */
        filter_remove(e->address);
    } else {
        slot = find_in(b1, 0);
        if (!slot)
            slot = find_in(b2, 0);
    }
    if (slot) {
        *slot = *e;
        filter_add(e->address);
    }
    unlock_pair(b1, b2);
    return slot != NULL;
}

bool ms_live_remove(uint64_t address, ms_live_entry_t *out)
{
    uint32_t b1, b2;
    buckets_of(address, &b1, &b2);
    lock_pair(b1, b2);
    ms_live_entry_t *slot = find_in(b1, address);
    if (!slot)
        slot = find_in(b2, address);
    if (slot) {
        *out = *slot;
        slot->address = 0;
        filter_remove(address);
    }
    unlock_pair(b1, b2);
    return slot != NULL;
}

void ms_live_clear(void)
{
    /* Bucket by bucket under each lock: a thread still inside a hook may be using one. */
    for (uint32_t b = 0; b < LIVE_BUCKETS; b++) {
        ms_spin_lock(&g_locks[b]);
        for (int i = 0; i < LIVE_WAYS; i++) {
            if (g_table[b][i].address != 0) {
                filter_remove(g_table[b][i].address);
                g_table[b][i].address = 0;
            }
        }
        ms_spin_unlock(&g_locks[b]);
    }
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
    /* The parent's other threads may have held bucket locks at fork(); they are gone. Done in
     * every child, tracked or not: a later start() clears the table under these locks. */
    for (uint32_t b = 0; b < LIVE_BUCKETS; b++)
        atomic_store_explicit(&g_locks[b], 0, memory_order_relaxed);
}

void ms_live_fork_child(void)
{
    ms_live_clear();
}

uint64_t ms_live_footprint(void)
{
    return sizeof g_table + sizeof g_locks + sizeof ms_live_filter;
}

void ms_live_sites_in_use(uint8_t *mark)
{
    /* Sets mark[site] for the site of every live entry: an id may only be reused once no live
     * block carries it (a block's free record carries the id of its allocation). Bucket by
     * bucket under each lock, like ms_live_clear; mark has MS_MAX_IDS bytes. */
    for (uint32_t b = 0; b < LIVE_BUCKETS; b++) {
        ms_spin_lock(&g_locks[b]);
        for (int i = 0; i < LIVE_WAYS; i++) {
            if (g_table[b][i].address != 0 && g_table[b][i].site < MS_MAX_IDS)
                mark[g_table[b][i].site] = 1;
        }
        ms_spin_unlock(&g_locks[b]);
    }
}
