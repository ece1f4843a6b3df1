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
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

static double g_id_count[MS_MAX_IDS], g_id_bytes[MS_MAX_IDS], g_id_live_bytes[MS_MAX_IDS];
static ms_sums_t g_spill = MS_SUMS_INIT(g_id_count, g_id_bytes, g_id_live_bytes);
static ms_spin_t g_lock;

void ms_spill_record(const ms_record_t *rec)
{
    ms_spin_lock(&g_lock);
    ms_sums_add_record(&g_spill, rec);
    ms_spin_unlock(&g_lock);
}

void ms_spill_live(uint32_t domain, uint32_t site, uint64_t size, float from, float to)
{
    /* As two free records, one of weight from (it takes from x size off) and one of weight -to
     * (it adds to x size), each rounded as the reducer rounds a record: the block's free record
     * later takes off to x size rounded the same way, to the bit. Neither is a record of the
     * program's: only their live parts count. */
    float weights[2] = {from, -to};
    ms_spin_lock(&g_lock);
    for (int i = 0; i < 2; i++) {
        if (weights[i] == 0.0f)
            continue;
        ms_record_t rec = {
            .size = size,
            .site = site,
            .weight = weights[i],
            .flags = (uint16_t)(domain | (MS_EVENT_FREE << MS_FLAG_EVENT_SHIFT)),
        };
        ms_sums_add_record(&g_spill, &rec);
        g_spill.s.records--;
        g_spill.s.free_records--;
    }
    ms_spin_unlock(&g_lock);
}

void ms_spill_fold(ms_summary_t *s)
{
    if (!atomic_load_explicit(&g_spill.dirty, memory_order_relaxed))
        return;
    ms_spin_lock(&g_lock);
    ms_sums_fold(&g_spill, s);
    ms_spin_unlock(&g_lock);
}

void ms_spill_clear(void)
{
    ms_spin_lock(&g_lock);
    ms_sums_clear(&g_spill);
    ms_spin_unlock(&g_lock);
}

void ms_spill_fork_child_lock(void)
{
    /* A thread of the parent may have held it; the totals are cleared later (ms_spill_clear in
     * ms_after_fork_child), outside fork() itself. */
    atomic_store(&g_lock, 0);
}
