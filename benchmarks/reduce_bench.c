/*
 * reduce_bench.c: the reducer paths timed from C alone (no Python, no numpy), for machines where
 * the Python benchmark cannot run, and to time the paths alternately in one process.
 *
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Icsrc benchmarks/reduce_bench.c csrc/reduce.c -o reduce_bench
 *   ./reduce_bench [records] [rounds]
 *
 * Records mimic a drained batch at default settings (see reduce_throughput.py): 60% small /
 * 30% medium / 10% large with weights 1000 / 20 / 1, about a third frees, skewed sites.
 */
#include "memscope.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t next_random(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform(void) { return (double)(next_random() >> 11) / 9007199254740992.0; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine may be shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(ms_record_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double u = uniform();
        unsigned cls = u < 0.6 ? 0 : (u < 0.9 ? 1 : 2);
        static const uint64_t lo[3] = {1, 1024, 8192}, hi[3] = {1024, 8192, 1 << 22};
        static const float w[3] = {1000.0f, 20.0f, 1.0f};
        double e = uniform();
        unsigned event = e < 0.6 ? 0 : (e < 0.95 ? 1 : 2);
        double dd = uniform();
        unsigned domain = dd < 0.5 ? 0 : (dd < 0.8 ? 1 : (dd < 0.95 ? 2 : 3));
        r[i].address = next_random() >> 17;
        r[i].size = lo[cls] + next_random() % (hi[cls] - lo[cls]);
        r[i].time_delta_us = (uint32_t)(i / 10);
        /* skewed sites: 8 + floor(400^u^3) */
        double s = uniform();
        r[i].site = 8 + (uint32_t)pow(400.0, s * s * s);
        r[i].weight = w[cls];
        r[i].flags = (uint16_t)(domain | (event << 2) | (cls << 4));
        r[i].thread = (uint16_t)(next_random() & 7);
    }
}

typedef void (*reduce_fn)(const ms_record_t *, size_t, ms_summary_t *);

static double run_once(reduce_fn fn, const ms_record_t *r, size_t n, double *ids)
{
    ms_summary_t s;
    memset(&s, 0, sizeof s);
    memset(ids, 0, 3 * MS_MAX_IDS * sizeof(double));
    s.id_count = ids;
    s.id_bytes = ids + MS_MAX_IDS;
    s.id_live_bytes = ids + 2 * MS_MAX_IDS;
    double t0 = now_s();
    fn(r, n, &s);
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 15;
    ms_record_t *r = malloc(n * sizeof *r);
    double *ids = malloc(3 * MS_MAX_IDS * sizeof(double));
    if (!r || !ids)
        return 1;
    fill(r, n);
    double best_scalar = 1e9, best_simd = 1e9;
    for (int k = 0; k < rounds; k++) {
        double a = run_once(ms_reduce_scalar, r, n, ids);
        double b = run_once(ms_reduce_simd, r, n, ids);
        best_scalar = a < best_scalar ? a : best_scalar;
        best_simd = b < best_simd ? b : best_simd;
    }
    printf("records %zu, best of %d, vector path available: %d\n", n, rounds, ms_reduce_simd_available());
    printf("  scalar %8.1f M records/s\n", (double)n / best_scalar / 1e6);
    printf("  simd   %8.1f M records/s\n", (double)n / best_simd / 1e6);
    printf("  simd/scalar %.2fx\n", best_scalar / best_simd);
    free(r);
    free(ids);
    return 0;
}
