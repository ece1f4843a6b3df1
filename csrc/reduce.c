/*
 * reduce.c: batches of records -> the cumulative Summary (Horvitz-Thompson sums).
 * Each record stands for weight allocations (or frees) of its size; summing weight-first keeps
 * the estimates unbiased across rate changes, since every record carries its own weight.
 */
#include "internal.h"

void ms_reduce(const ms_record_t *records, size_t n, ms_summary_t *s)
{
    for (size_t i = 0; i < n; i++) {
        const ms_record_t *r = &records[i];
        int domain = r->flags & MS_FLAG_DOMAIN_MASK;
        int event = (r->flags & MS_FLAG_EVENT_MASK) >> MS_FLAG_EVENT_SHIFT;
        int cls = (r->flags & MS_FLAG_CLASS_MASK) >> MS_FLAG_CLASS_SHIFT;
        uint32_t site = r->site < MS_MAX_IDS ? r->site : MS_ID_OVERFLOW + (uint32_t)domain;
        double w = (double)r->weight;
        double wb = w * (double)r->size;
        if (cls >= MS_CLASSES)
            cls = MS_CLASS_LARGE; /* only a corrupt record can say so */
        if (event == MS_EVENT_FREE) {
            s->live_bytes[domain] -= wb;
            s->live_count[domain] -= w;
            s->id_live_bytes[site] -= wb;
            s->free_records++;
            continue;
        }
        s->count[domain][cls] += w;
        s->bytes[domain][cls] += wb;
        s->bucket_count[domain][ms_bucket_of(r->size)] += w;
        s->id_count[site] += w;
        s->id_bytes[site] += wb;
        if (!(r->flags & MS_FLAG_NOLIVE)) {
            s->live_bytes[domain] += wb;
            s->live_count[domain] += w;
            s->id_live_bytes[site] += wb;
        }
    }
    s->records += n;
}
