/*
 * reduce_paths_check.c: the vector and scalar reducer paths agree bit for bit, checked from C so
 * that it also runs where Python does not (an AArch64 build under qemu-user tests the NEON path);
 * and records of the sizes and weights a program makes add the same, to the bit, when reduced one
 * at a time (the spill's way) as in blocks, so that a block's allocation and free cancel exactly
 * whichever way each went.
 *
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Icsrc tests/reduce/reduce_paths_check.c csrc/reduce.c -lm -pthread -o check
 *   ./check        prints "ok <batches> <records> simd=<0|1>" and exits 0, or names the mismatch
 */
#include "memscope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Batches up to this many records: several of the reducers' 8192-record blocks. */
#define MAX_BATCH 26000

static uint64_t state = 42;

static uint64_t next_random(void)
{
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static float random_weight(void)
{
    static const float special[] = {0.0f, -0.0f, 1.0f, 20.0f, 1000.0f, 1e-30f, 3.4e38f, -1.5f,
                                    1e-45f, INFINITY, -INFINITY, NAN};
    uint64_t r = next_random();
    if (r % 4 == 0)
        return special[(r >> 8) % (sizeof special / sizeof special[0])];
    uint32_t bits = (uint32_t)(r >> 16);
    float f;
    memcpy(&f, &bits, sizeof f); /* any bit pattern at all */
    return f;
}

static uint64_t random_size(void)
{
    static const uint64_t special[] = {0, 1, 2, 3, 1023, 1024, 1025, 4294967295ULL, 4294967296ULL,
                                       4294967297ULL, 9007199254740993ULL, 9223372036854775808ULL,
                                       18446744073709551615ULL, 18446744073709551614ULL};
    uint64_t r = next_random();
    if (r % 3 == 0)
        return special[(r >> 8) % (sizeof special / sizeof special[0])];
    return next_random() >> (next_random() % 64);
}

static void fill(ms_record_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = next_random();
        r[i].address = next_random();
        r[i].size = random_size();
        r[i].time_delta_us = (uint32_t)x;
        r[i].site = (x >> 32) % 5 == 0 ? (uint32_t)(x >> 20) : (uint32_t)((x >> 40) % 500);
        r[i].weight = random_weight();
        r[i].flags = (uint16_t)next_random();
        r[i].thread = (uint16_t)(x >> 48);
    }
}

/* Bits of a double, every NaN mapped to one pattern: which NaN an addition of two NaNs returns
 * is not fixed by IEEE 754 and compilers swap the operands of +. */
static uint64_t canonical(double v)
{
    uint64_t bits;
    if (isnan(v))
        return 0x7FF8000000000000ULL;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

static int same(const double *a, const double *b, size_t n, const char *what, size_t batch)
{
    for (size_t i = 0; i < n; i++)
        if (canonical(a[i]) != canonical(b[i])) {
            printf("batch %zu: %s[%zu] differs: %.17g vs %.17g\n", batch, what, i, a[i], b[i]);
            return 0;
        }
    return 1;
}

/* reduce.c's one-record route (declared in internal.h, which this check does not build with) */
void ms_reduce_record(const ms_record_t *r, ms_summary_t *s);

/* Records as programs make them: weights 1, 1 / p as the sampler stores them, and raised by the
 * live table (any float from 1 to 5,000); sizes below 2^16. Their sums stay below 2^53 units, so
 * the block paths' once-per-block conversion is exact and the two routes must agree. */
static void fill_realistic(ms_record_t *r, size_t n)
{
    static const float weights[] = {1.0f, (float)(1.0 / 0.3), 20.0f, 1000.0f, (float)(1.0 / 0.001)};
    for (size_t i = 0; i < n; i++) {
        uint64_t x = next_random();
        r[i].address = next_random();
        r[i].size = (x >> 8) % 65536;
        r[i].time_delta_us = 0;
        r[i].site = (uint32_t)((x >> 40) % 500);
        uint64_t pick = (x >> 24) % 8;
        r[i].weight = pick < 5 ? weights[pick] : 1.0f + (float)((x >> 32) % 4999) + (float)(x & 0xFF) / 256.0f;
        r[i].flags = (uint16_t)next_random();
        r[i].thread = 0;
    }
}

static void clear(ms_summary_t *s)
{
    double *id_count = s->id_count, *id_bytes = s->id_bytes, *id_live_bytes = s->id_live_bytes;
    memset(s, 0, sizeof *s);
    memset(id_count, 0, MS_MAX_IDS * sizeof(double));
    memset(id_bytes, 0, MS_MAX_IDS * sizeof(double));
    memset(id_live_bytes, 0, MS_MAX_IDS * sizeof(double));
    s->id_count = id_count;
    s->id_bytes = id_bytes;
    s->id_live_bytes = id_live_bytes;
}

static int same_summaries(const ms_summary_t *a, const ms_summary_t *b, const double *ids, size_t batch)
{
    if (!same(&a->count[0][0], &b->count[0][0], 12, "count", batch) ||
        !same(&a->bytes[0][0], &b->bytes[0][0], 12, "bytes", batch) ||
        !same(&a->bucket_count[0][0], &b->bucket_count[0][0], 4 * 65, "bucket_count", batch) ||
        !same(a->live_bytes, b->live_bytes, 4, "live_bytes", batch) ||
        !same(a->live_count, b->live_count, 4, "live_count", batch) ||
        !same(ids, ids + 3 * MS_MAX_IDS, 3 * MS_MAX_IDS, "per-id sums", batch))
        return 0;
    if (a->records != b->records || a->free_records != b->free_records) {
        printf("batch %zu: record counts differ\n", batch);
        return 0;
    }
    return 1;
}

int main(void)
{
    size_t total = 0, batches = 0;
    double *ids = calloc(6 * MS_MAX_IDS, sizeof(double));
    ms_record_t *recs = malloc(MAX_BATCH * sizeof *recs);
    if (!ids || !recs)
        return 2;
    ms_summary_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.id_count = ids;
    a.id_bytes = ids + MS_MAX_IDS;
    a.id_live_bytes = ids + 2 * MS_MAX_IDS;
    b.id_count = ids + 3 * MS_MAX_IDS;
    b.id_bytes = ids + 4 * MS_MAX_IDS;
    b.id_live_bytes = ids + 5 * MS_MAX_IDS;
    for (size_t len = 0; len <= MAX_BATCH; len = len < 20 ? len + 1 : len * 5 / 4 + 1) {
        for (int rep = 0; rep < 3; rep++) {
            fill(recs, len);
            ms_reduce_simd(recs, len, &a);
            ms_reduce_scalar(recs, len, &b);
            total += len;
            batches++;
            if (!same_summaries(&a, &b, ids, batches))
                return 1;
        }
    }
    /* one record at a time against the block paths, on fresh summaries */
    for (size_t len = 1; len <= MAX_BATCH; len = len * 3 + 1) {
        fill_realistic(recs, len);
        clear(&a);
        clear(&b);
        ms_reduce_scalar(recs, len, &a);
        for (size_t i = 0; i < len; i++)
            ms_reduce_record(&recs[i], &b);
        total += len;
        batches++;
        if (!same_summaries(&a, &b, ids, batches))
            return 1;
    }
    printf("ok %zu %zu simd=%d\n", batches, total, ms_reduce_simd_available());
    free(ids);
    free(recs);
    return 0;
}
