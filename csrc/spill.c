/*
 * spill.c: what could not be queued, kept as weighted totals.
 *
 * A record that finds no room in a ring (full during a burst of frees, no memory, the rings'
 * budget spent) would otherwise be lost, and a lost free record leaves its block "live" in the
 * estimate for good. Instead it is added here, straight into a summary of its own, under one
 * spin lock (a rare path: it never touches the fast paths). The live table's own corrections go
 * here too: the live part of blocks taken in past its budget, the coins of its thinning, stale
 * entries. The drainer adds the spill into the cumulative summary at every drain
 * (ms_drain_reduce), so the estimates see everything; only the dump file and the workload
 * recognizer, which read records, miss what was spilled (counted as dropped).
 *
 * The per-id arrays are static (3 x MS_MAX_IDS doubles, 768 KiB of address space whose pages
 * are touched only by sites that spill); a fold scans only the ids spilled to since the last.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

static double g_id_count[MS_MAX_IDS], g_id_bytes[MS_MAX_IDS], g_id_live_bytes[MS_MAX_IDS];
static ms_summary_t g_spill = {.id_count = g_id_count, .id_bytes = g_id_bytes, .id_live_bytes = g_id_live_bytes};
static uint32_t g_lowest = MS_MAX_IDS, g_highest; /* ids touched since the last fold */
static _Atomic bool g_dirty;
static ms_spin_t g_lock;

static void add_locked(const ms_record_t *rec)
{
    ms_reduce_record(rec, &g_spill);
    uint32_t site = rec->site < MS_MAX_IDS ? rec->site : (uint32_t)(MS_ID_OVERFLOW + ms_flags_domain(rec->flags));
    g_lowest = site < g_lowest ? site : g_lowest;
    g_highest = site > g_highest ? site : g_highest;
    atomic_store_explicit(&g_dirty, true, memory_order_relaxed);
}

void ms_spill_record(const ms_record_t *rec)
{
    ms_spin_lock(&g_lock);
    add_locked(rec);
    ms_spin_unlock(&g_lock);
}

void ms_spill_live(uint32_t domain, uint32_t site, uint64_t size, double weight)
{
    /* A free record of weight -w adds w to the live estimate and nothing else. */
    ms_record_t rec = {
        .size = size,
        .site = site,
        .weight = (float)-weight,
        .flags = (uint16_t)(domain | (MS_EVENT_FREE << MS_FLAG_EVENT_SHIFT)),
    };
    ms_spin_lock(&g_lock);
    add_locked(&rec);
    /* not a record of the program's: only its live part counts */
    g_spill.records--;
    g_spill.free_records--;
    ms_spin_unlock(&g_lock);
}

static void add_array(double *dst, double *src, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i <= hi; i++) {
        if (src[i] != 0.0) {
            if (dst)
                dst[i] += src[i];
            src[i] = 0.0;
        }
    }
}

static void add_dense(double *dst, const double *src, size_t size)
{
    for (size_t i = 0; i < size / sizeof(double); i++)
        dst[i] += src[i];
}

static void reset_locked(void)
{
    if (g_lowest <= g_highest) {
        memset(&g_id_count[g_lowest], 0, (g_highest - g_lowest + 1) * sizeof(double));
        memset(&g_id_bytes[g_lowest], 0, (g_highest - g_lowest + 1) * sizeof(double));
        memset(&g_id_live_bytes[g_lowest], 0, (g_highest - g_lowest + 1) * sizeof(double));
    }
    memset(&g_spill, 0, offsetof(ms_summary_t, id_count));
    g_lowest = MS_MAX_IDS;
    g_highest = 0;
    atomic_store(&g_dirty, false);
}

void ms_spill_fold(ms_summary_t *s)
{
    if (!atomic_load_explicit(&g_dirty, memory_order_relaxed))
        return;
    ms_spin_lock(&g_lock);
    add_dense(&s->count[0][0], &g_spill.count[0][0], sizeof s->count);
    add_dense(&s->bytes[0][0], &g_spill.bytes[0][0], sizeof s->bytes);
    add_dense(&s->bucket_count[0][0], &g_spill.bucket_count[0][0], sizeof s->bucket_count);
    add_dense(s->live_bytes, g_spill.live_bytes, sizeof s->live_bytes);
    add_dense(s->live_count, g_spill.live_count, sizeof s->live_count);
    s->records += g_spill.records;
    s->free_records += g_spill.free_records;
    if (g_lowest <= g_highest) {
        add_array(s->id_count, g_id_count, g_lowest, g_highest);
        add_array(s->id_bytes, g_id_bytes, g_lowest, g_highest);
        add_array(s->id_live_bytes, g_id_live_bytes, g_lowest, g_highest);
    }
    reset_locked();
    ms_spin_unlock(&g_lock);
}

void ms_spill_clear(void)
{
    ms_spin_lock(&g_lock);
    reset_locked();
    ms_spin_unlock(&g_lock);
}

void ms_spill_fork_child_lock(void)
{
    /* A thread of the parent may have held it; the totals are cleared later (ms_spill_clear in
     * ms_after_fork_child), outside fork() itself. */
    atomic_store(&g_lock, 0);
}
