/*
 * sums.c: a summary kept on the C side until the drainer folds it into the Python one.
 *
 * Two parts of the sampler reduce records without the drainer: the spill (records that found no
 * room in a ring, spill.c) and the mover (records it reduces as it stages them, stage.c). Each
 * keeps an ms_sums_t under its own lock; ms_drain_reduce folds both into the cumulative summary
 * at every call. The per-id arrays are the caller's (static: 3 x MS_MAX_IDS doubles, whose pages
 * are touched only by the ids that occur), and a fold visits only the ids added to since the
 * last one.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

static void widen(ms_sums_t *sums, uint32_t lo, uint32_t hi)
{
    sums->lowest = lo < sums->lowest ? lo : sums->lowest;
    sums->highest = hi > sums->highest ? hi : sums->highest;
    atomic_store_explicit(&sums->dirty, true, memory_order_relaxed);
}

void ms_sums_add_record(ms_sums_t *sums, const ms_record_t *rec)
{
    ms_reduce_record(rec, &sums->s);
    uint32_t id = ms_record_id(rec);
    widen(sums, id, id);
}

void ms_sums_add(ms_sums_t *sums, const ms_record_t *records, size_t n)
{
    if (n == 0)
        return;
    uint32_t lo = MS_MAX_IDS, hi = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ms_record_id(&records[i]);
        lo = id < lo ? id : lo;
        hi = id > hi ? id : hi;
    }
    ms_reduce(records, n, &sums->s);
    widen(sums, lo, hi);
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

void ms_sums_clear(ms_sums_t *sums)
{
    ms_sums_fold(sums, NULL);
}

void ms_sums_fold(ms_sums_t *sums, ms_summary_t *into)
{
    ms_summary_t *s = &sums->s;
    if (into) {
        add_dense(&into->count[0][0], &s->count[0][0], sizeof s->count);
        add_dense(&into->bytes[0][0], &s->bytes[0][0], sizeof s->bytes);
        add_dense(&into->bucket_count[0][0], &s->bucket_count[0][0], sizeof s->bucket_count);
        add_dense(into->live_bytes, s->live_bytes, sizeof s->live_bytes);
        add_dense(into->live_count, s->live_count, sizeof s->live_count);
        into->records += s->records;
        into->free_records += s->free_records;
    }
    if (sums->lowest <= sums->highest) {
        add_array(into ? into->id_count : NULL, s->id_count, sums->lowest, sums->highest);
        add_array(into ? into->id_bytes : NULL, s->id_bytes, sums->lowest, sums->highest);
        add_array(into ? into->id_live_bytes : NULL, s->id_live_bytes, sums->lowest, sums->highest);
    }
    memset(s, 0, offsetof(ms_summary_t, id_count));
    sums->lowest = MS_MAX_IDS;
    sums->highest = 0;
    atomic_store_explicit(&sums->dirty, false, memory_order_relaxed);
}
