/*
 * reduce.c: records -> cumulative Horvitz-Thompson summary (ms_summary_t).
 *
 * Paths: ms_reduce_scalar (the plain record loop, the reference), and a vector twin per
 * architecture behind ms_reduce_simd: AVX2 on x86-64 (compiled with a target attribute, so the
 * file builds without -mavx2, and used only when the CPU reports AVX2), NEON on AArch64.
 * ms_reduce picks one at run time; ms_reduce_use_simd(0) (ENABLE_SIMD=false) forces the scalar one.
 *
 * Reproducibility: integer fixed point per block, so that every path may add in any order.
 * A batch is cut into blocks of BLOCK_RECORDS records from its start. Within a block, each
 * record's contributions become exact integers:
 *     count  c = round(w * 2^24)          (units of 2^-24 allocations)
 *     bytes  b = round(w * size * 2^10)   (units of 2^-10 bytes)
 * where w is the float weight widened to double (exact), size is the uint64 size rounded once to
 * double, w * size is one IEEE multiplication, and round is to nearest, ties to even. A free
 * contributes -c and -b. Integer sums are associative, so every path adds them in whatever order
 * suits it and gets the same per-block sums. At the end of the block each nonzero integer sum is
 * converted to double (rounded once) and scaled by the exact power of two, then added into the
 * cumulative summary: one addition per accumulator per block, the same in every path. The public
 * Summary stays double and its layout is unchanged.
 *
 * Bounds (why nothing overflows): the integer route takes a record only when |w| <= 2^25 and
 * |w * size| <= 2^39 bytes, so |c|, |b| <= 2^49, and a block sum of at most 8192 of them stays
 * within 2^62 < 2^63 in any order of addition. Quantization: a record's count is exact for every
 * float weight >= 0.5 (real Horvitz-Thompson weights are >= 1) and off by at most 2^-25
 * otherwise; its bytes are off by at most 2^-11 byte (none when w * size is an integer). The
 * conversion of a block sum to double rounds once (relative 2^-53), like any double addition.
 *
 * Records outside those bounds (NaN or infinite weight; |w| > 2^25, i.e. a sampling rate below
 * 3e-8; or w * size beyond 512 GiB, which only corrupt records reach) are not quantized and
 * never converted to integers (that conversion would be undefined behaviour in C): they take the
 * double route, each contribution added straight into the summary as a double, in record order,
 * before the block's sums. So a NaN weight still shows as NaN. Per accumulator, the double
 * additions are thus: the block's out-of-bounds records in record order, then the block's
 * nonzero integer sum; the same in every path, and what report.numpy_summary reproduces.
 *
 * What is vectorized (AVX2), four records at a time: the decode (field extraction from the
 * 32-byte rows, event/class/domain masks, site clamping, the log2 bucket, uint64 -> double,
 * w * size, the bounds check) and the rounding to integers (x + 1.5 * 2^k rounds to a multiple
 * of the unit and leaves the integer in the mantissa bits: AVX2 has no double -> int64
 * conversion). Then two integer read-modify-writes per record, 128 and 256 bits wide: a
 * (count, bytes) pair into a "fine" table per domain x class x NOLIVE x bucket (frees in four
 * more cells, one per domain) whose cells sum, at the end of the block, to the 12 dense cells,
 * the 4 x 65 buckets and the live estimate per domain; and a (count, bytes, live bytes) row into
 * the per-id scratch. The scalar twin makes eight separate read-modify-writes per record, one
 * per accumulator. AVX2 has no scatter, so the table updates stay one store per record; since
 * integer sums need no order, the vector path needs no per-cell ordering work either. Records
 * outside the bounds are rare: a pass at the end of a block adds them, only when there are any.
 * NEON (AArch64): the same scheme; the decode and the rounding (FCVTNS, nearest even) are
 * vectorized two records at a time, the table updates are scalar (NEON has no scatter either,
 * and its 128-bit registers hold one pair, not a row).
 *
 * Per-id scratch: the per-block integer sums per site id need MS_MAX_IDS rows of 32 bytes
 * (1 MiB), too much for a thread stack; each thread that reduces gets one, allocated on first use
 * and freed when the thread exits (a pthread key destructor). It stays zero between calls: the
 * end-of-block pass adds every row the block touched into the summary and zeroes it, scanning
 * either the rows from 0 to the highest site seen (sites are handed out from 0 up), or the
 * block's records, whichever is shorter. If the scratch cannot be allocated, every path reduces
 * the batch in blocks of one record, which needs no scratch: still identical across paths
 * (though not to numpy_summary).
 *
 * Robustness: records may come from a corrupt dump. A site id >= MS_MAX_IDS is folded into the
 * "<overflow>" id of its domain; size class 3 (unused) counts as large; event kind 3 (unused)
 * contributes only to summary->records. Any bit pattern of weight and size is just arithmetic.
 * Null per-id arrays are skipped.
 */
#include "memscope.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define MS_REDUCE_HAVE_AVX2 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define MS_REDUCE_HAVE_NEON 1
#endif

_Static_assert(sizeof(ms_record_t) == 32, "ms_record_t must be 32 bytes");

/* ---------------------------------------------------------------- fixed point */

#define COUNT_SCALE 0x1p24           /* count units per allocation */
#define COUNT_UNIT 0x1p-24
#define BYTES_SCALE 0x1p10           /* bytes units per byte */
#define BYTES_UNIT 0x1p-10
#define WEIGHT_LIMIT 0x1p25          /* |w| * COUNT_SCALE <= 2^49 */
#define WEIGHTED_BYTES_LIMIT 0x1p39  /* |w * size| * BYTES_SCALE <= 2^49 */
#define BLOCK_RECORDS 8192           /* 8192 * 2^49 = 2^62: no block sum overflows int64 */
#define ROUNDING_MAGIC 0x1.8p52      /* 1.5 * 2^52: x + this has spacing 1 for |x| <= 2^51 */
#define MANTISSA_MASK 0xFFFFFFFFFFFFFULL
#define MAGIC_MANTISSA ((int64_t)1 << 51)

#define DENSE_CELLS (MS_DOMAINS * MS_CLASSES)

/* x (|x| <= 2^50) rounded to the nearest integer, ties to even: the sum with 1.5 * 2^52 lands
 * where doubles are spaced 1 apart, so the addition does the rounding and the integer is the
 * mantissa less that of 1.5 * 2^52. The vector paths compute exactly this. */
static inline int64_t to_fixed(double x)
{
    double t = x + ROUNDING_MAGIC;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    return (int64_t)(bits & MANTISSA_MASK) - MAGIC_MANTISSA;
}

/* A record's count and weighted bytes in fixed-point units: the one rounding of every route (the
 * block paths sum these; ms_reduce_record adds them one at a time). */
static inline int64_t count_units(double w)
{
    return to_fixed(w * COUNT_SCALE);
}

static inline int64_t bytes_units(double wb)
{
    return to_fixed(wb * BYTES_SCALE);
}

/* 1 when a record's contributions go the integer route (see "Bounds"); 0 for NaN too. */
static inline int in_fixed_range(double w, double wb)
{
    return fabs(w) <= WEIGHT_LIMIT && fabs(wb) <= WEIGHTED_BYTES_LIMIT;
}

/* Integer sums of one block for the dense tables. */
typedef struct {
    int64_t count[DENSE_CELLS];
    int64_t bytes[DENSE_CELLS];
    int64_t bucket[MS_DOMAINS * MS_BUCKETS];
    int64_t live_count[MS_DOMAINS];
    int64_t live_bytes[MS_DOMAINS];
} dense_sums_t;

/* Integer sums of one block for one site id: one 32-byte row, one AVX2 register. */
typedef struct {
    int64_t count, bytes, live_bytes, unused;
} id_sums_t;

_Static_assert(sizeof(id_sums_t) == 32, "an id row is one 256-bit vector");

static inline void add_block_sum(double *dst, int64_t sum, double unit)
{
    if (sum != 0)
        *dst += (double)sum * unit; /* rounded once; the scaling by a power of two is exact */
}

static void flush_dense(const dense_sums_t *p, ms_summary_t *s)
{
    for (unsigned i = 0; i < DENSE_CELLS; i++) {
        add_block_sum(&s->count[i / MS_CLASSES][i % MS_CLASSES], p->count[i], COUNT_UNIT);
        add_block_sum(&s->bytes[i / MS_CLASSES][i % MS_CLASSES], p->bytes[i], BYTES_UNIT);
    }
    for (unsigned i = 0; i < MS_DOMAINS * MS_BUCKETS; i++)
        add_block_sum(&s->bucket_count[i / MS_BUCKETS][i % MS_BUCKETS], p->bucket[i], COUNT_UNIT);
    for (unsigned d = 0; d < MS_DOMAINS; d++) {
        add_block_sum(&s->live_count[d], p->live_count[d], COUNT_UNIT);
        add_block_sum(&s->live_bytes[d], p->live_bytes[d], BYTES_UNIT);
    }
}

/* Adds one row of per-id sums into the summary and zeroes it. */
static inline void flush_row(id_sums_t *row, uint32_t site, ms_summary_t *s)
{
    if ((row->count | row->bytes | row->live_bytes) == 0)
        return;
    if (s->id_count)
        add_block_sum(&s->id_count[site], row->count, COUNT_UNIT);
    if (s->id_bytes)
        add_block_sum(&s->id_bytes[site], row->bytes, BYTES_UNIT);
    if (s->id_live_bytes)
        add_block_sum(&s->id_live_bytes[site], row->live_bytes, BYTES_UNIT);
    row->count = row->bytes = row->live_bytes = 0;
}

/* Adds the per-id sums of a block of n records into the summary and zeroes them. The rows the
 * block touched lie in 0..hi and belong to its records: scan whichever is shorter, the rows or
 * the records. The order of the rows does not matter (each row feeds only its own accumulators,
 * once). id_mask is MS_MAX_IDS - 1, or 0 for a one-row table with a block of one record: then the
 * row scan (hi < 1) covers exactly that record's site 0. */
static void flush_ids(const ms_record_t *records, size_t n, ms_summary_t *s, id_sums_t *ids,
                      uint32_t id_mask, uint32_t hi)
{
    if ((size_t)hi < n) {
        for (uint32_t site = 0; site <= hi; site++)
            flush_row(&ids[site & id_mask], site, s);
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t site = ms_record_id(&records[i]);
            flush_row(&ids[site & id_mask], site, s);
        }
    }
}

/* ---------------------------------------------------------------- per-thread id scratch */

#define SCRATCH_BYTES ((size_t)MS_MAX_IDS * sizeof(id_sums_t))

static void scratch_unmap(void *rows)
{
    munmap(rows, SCRATCH_BYTES);
}

/* A build-time seam: the tests build with an allocator that fails, to run the fallback. */
#ifndef SCRATCH_ALLOC
#define SCRATCH_ALLOC(size) scratch_map(size)

/* Fresh anonymous pages rather than malloc and memset: they read as zero already, and only the
 * pages of the rows in use become resident (ids are handed out from 0 up), where a memset would
 * make the whole 1 MiB resident on every thread that reduces (the drainer, the mover). Page
 * alignment keeps a row inside one cache line. (mmap here rather than rings.c's ms_pages_map:
 * reduce.c builds alone for the reducer's tests and benchmark.) */
static void *scratch_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
#endif

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ready;

static void make_scratch_key(void)
{
    scratch_key_ready = pthread_key_create(&scratch_key, scratch_unmap) == 0;
}

/* This thread's all-zero table of MS_MAX_IDS rows (flush_row leaves each row it used at zero),
 * or NULL if it cannot have one. */
static id_sums_t *id_scratch(void)
{
    pthread_once(&scratch_once, make_scratch_key);
    if (!scratch_key_ready)
        return NULL;
    id_sums_t *rows = pthread_getspecific(scratch_key);
    if (rows == NULL) {
        rows = SCRATCH_ALLOC(SCRATCH_BYTES);
        if (rows != NULL && pthread_setspecific(scratch_key, rows) != 0) {
            scratch_unmap(rows);
            rows = NULL;
        }
    }
    return rows;
}

/* ---------------------------------------------------------------- scalar path */

/* Event kind of a record: 0 ignore (kind 3), 1 allocation, 2 free. */
static unsigned scalar_kind(unsigned flags)
{
    unsigned event = ms_flags_event(flags);
    if (event == MS_EVENT_ALLOC || event == MS_EVENT_REALLOC)
        return 1;
    return event == MS_EVENT_FREE ? 2 : 0;
}

static unsigned bucket_of(uint64_t size)
{
    return size <= 1 ? 0u : 64u - (unsigned)__builtin_clzll(size - 1);
}

static unsigned class_of(unsigned flags)
{
    unsigned c = (flags & MS_FLAG_CLASS_MASK) >> MS_FLAG_CLASS_SHIFT;
    return c < MS_CLASSES ? c : MS_CLASSES - 1;
}

/* A record's contributions, w and w x size (kind 1 or 2), straight into the summary. A free
 * adds the negated values. */
static void add_values(const ms_record_t *r, unsigned kind, double w, double wb, ms_summary_t *s)
{
    unsigned flags = r->flags, d = ms_flags_domain(flags);
    uint32_t site = ms_record_id(r);
    if (kind == 1) {
        unsigned c = class_of(flags);
        s->count[d][c] += w;
        s->bytes[d][c] += wb;
        s->bucket_count[d][bucket_of(r->size)] += w;
        if (s->id_count)
            s->id_count[site] += w;
        if (s->id_bytes)
            s->id_bytes[site] += wb;
        if (flags & MS_FLAG_NOLIVE)
            return;
    } else {
        w = -w;
        wb = -wb;
    }
    s->live_bytes[d] += wb;
    s->live_count[d] += w;
    if (s->id_live_bytes)
        s->id_live_bytes[site] += wb;
}

/* The double route for a record outside the fixed-point bounds. */
static void add_in_double(const ms_record_t *r, unsigned kind, ms_summary_t *s)
{
    double w = (double)r->weight;
    add_values(r, kind, w, w * (double)r->size, s);
}

/* One record straight into a summary, one at a time: the spill's way in (spill.c adds records
 * inside hooks, with no scratch). Within the bounds it adds what the block paths add, w and
 * w x size rounded to their fixed-point units, so that a block's allocation and its free cancel
 * exactly whichever way each came (a ring, the spill, the live table's corrections). */
void ms_reduce_record(const ms_record_t *r, ms_summary_t *s)
{
    unsigned kind = scalar_kind(r->flags);
    if (kind != 0) {
        double w = (double)r->weight;
        double wb = w * (double)r->size;
        if (in_fixed_range(w, wb)) {
            w = (double)count_units(w) * COUNT_UNIT;
            wb = (double)bytes_units(wb) * BYTES_UNIT;
        }
        add_values(r, kind, w, wb, s);
    }
    s->free_records += kind == 2;
    s->records++;
}

/* One block (n <= BLOCK_RECORDS), the plain record loop: the reference twin of the vector
 * paths. ids: the per-id scratch (NULL when the summary has no per-id arrays). */
static void reduce_block_scalar(const ms_record_t *records, size_t n, ms_summary_t *s,
                                id_sums_t *ids, uint32_t id_mask)
{
    dense_sums_t p;
    memset(&p, 0, sizeof p);
    uint64_t frees = 0;
    uint32_t hi = 0; /* highest per-id row touched (rows from 0: sites are handed out from 0 up) */
    for (size_t i = 0; i < n; i++) {
        const ms_record_t *r = &records[i];
        unsigned flags = r->flags;
        unsigned kind = scalar_kind(flags);
        if (kind == 0)
            continue;
        frees += kind == 2;
        double w = (double)r->weight;
        double wb = w * (double)r->size;
        if (!in_fixed_range(w, wb)) {
            add_in_double(r, kind, s);
            continue;
        }
        int64_t count = count_units(w), bytes = bytes_units(wb);
        unsigned d = ms_flags_domain(flags);
        id_sums_t *row = NULL;
        if (ids) {
            uint32_t site = ms_record_id(r);
            hi = site > hi ? site : hi;
            row = &ids[site & id_mask];
        }
        if (kind == 1) {
            unsigned cell = d * MS_CLASSES + class_of(flags);
            p.count[cell] += count;
            p.bytes[cell] += bytes;
            p.bucket[d * MS_BUCKETS + bucket_of(r->size)] += count;
            if (row) {
                row->count += count;
                row->bytes += bytes;
            }
            if (flags & MS_FLAG_NOLIVE)
                continue;
        } else {
            count = -count;
            bytes = -bytes;
        }
        p.live_count[d] += count;
        p.live_bytes[d] += bytes;
        if (row)
            row->live_bytes += bytes;
    }
    flush_dense(&p, s);
    if (ids)
        flush_ids(records, n, s, ids, id_mask, hi);
    s->free_records += frees;
}

/* Without a per-id scratch: blocks of one record, whose per-id sums fit one local row. */
static void reduce_one_by_one(const ms_record_t *records, size_t n, ms_summary_t *s)
{
    id_sums_t row = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++)
        reduce_block_scalar(records + i, 1, s, &row, 0);
}

static int wants_ids(const ms_summary_t *s)
{
    return s->id_count || s->id_bytes || s->id_live_bytes;
}

void ms_reduce_scalar(const ms_record_t *records, size_t n, ms_summary_t *s)
{
    id_sums_t *ids = wants_ids(s) ? id_scratch() : NULL;
    if (wants_ids(s) && ids == NULL) {
        reduce_one_by_one(records, n, s);
    } else {
        for (size_t done = 0; done < n; done += BLOCK_RECORDS) {
            size_t m = n - done < BLOCK_RECORDS ? n - done : BLOCK_RECORDS;
            reduce_block_scalar(records + done, m, s, ids, MS_MAX_IDS - 1);
        }
    }
    s->records += n;
}

/* ---------------------------------------------------------------- vector paths */

#if defined(MS_REDUCE_HAVE_AVX2) || defined(MS_REDUCE_HAVE_NEON)

/* The vector paths add one (count, bytes) pair per record into a "fine" table: for an
 * allocation at ((domain * 3 + class) * 2 + nolive) * 65 + bucket, for a free (negated) at
 * FINE_FREE + domain. The dense sums (per domain x class, per bucket, live per domain) are all
 * sums of its cells, taken at the end of the block: one table update per record instead of five. */
#define FINE_FREE (MS_DOMAINS * MS_CLASSES * 2 * MS_BUCKETS)
#define FINE_CELLS (FINE_FREE + MS_DOMAINS)

static void dense_from_fine(const int64_t (*fine)[2], dense_sums_t *p)
{
    memset(p, 0, sizeof *p);
    for (unsigned cell = 0; cell < DENSE_CELLS; cell++) {
        unsigned d = cell / MS_CLASSES;
        for (unsigned nolive = 0; nolive < 2; nolive++)
            for (unsigned b = 0; b < MS_BUCKETS; b++) {
                const int64_t *pair = fine[(cell * 2 + nolive) * MS_BUCKETS + b];
                p->count[cell] += pair[0];
                p->bytes[cell] += pair[1];
                p->bucket[d * MS_BUCKETS + b] += pair[0];
                if (!nolive) {
                    p->live_count[d] += pair[0];
                    p->live_bytes[d] += pair[1];
                }
            }
    }
    for (unsigned d = 0; d < MS_DOMAINS; d++) {
        p->live_count[d] += fine[FINE_FREE + d][0];
        p->live_bytes[d] += fine[FINE_FREE + d][1];
    }
}

/* Records a vector path reads four (AVX2) or two (NEON) at a time; the tail of a batch is
 * copied into a padded group whose extra records have event kind 3, which contributes nothing. */
static void pad_tail(const ms_record_t *tail, size_t n, ms_record_t *group, size_t width)
{
    memset(group, 0, width * sizeof *group);
    for (size_t j = 0; j < width; j++)
        group[j].flags = 3u << MS_FLAG_EVENT_SHIFT;
    if (n)
        memcpy(group, tail, n * sizeof *group);
}

#endif

#if defined(MS_REDUCE_HAVE_AVX2)

/* size -> double rounded once, and the bucket, for any uint64 size (the slow, general case). */
typedef struct {
    __m256d size_d;
    __m256i bucket;
} avx2_sizes_t;

/* Rare: not inlined, and returning by value, so that the common path keeps its registers. */
__attribute__((target("avx2"), noinline)) static avx2_sizes_t size_general_avx2(__m256i size)
{
    avx2_sizes_t out;
    const __m256i low32 = _mm256_set1_epi64x(0xFFFFFFFFLL);
    const __m256i exp52 = _mm256_set1_epi64x(0x4330000000000000LL); /* bits of 2^52 */
    const __m256i exp84 = _mm256_set1_epi64x(0x4530000000000000LL); /* bits of 2^84 */
    const __m256d two52 = _mm256_castsi256_pd(exp52);
    const __m256i zero = _mm256_setzero_si256();
    /* (2^84 + hi*2^32) - (2^84 + 2^52) is exact, then adding (2^52 + lo) rounds the exact
     * hi*2^32 + lo once to nearest, as the C conversion does. */
    __m256d lo_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(size, low32), exp52));
    __m256d hi_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(size, 32), exp84));
    out.size_d = _mm256_add_pd(
        _mm256_sub_pd(hi_d, _mm256_set1_pd(19342813118337666422669312.0 /* 2^84 + 2^52 */)), lo_d);
    /* bucket = 0 for size <= 1, else floor(log2(size - 1)) + 1, from the exponent of each 32-bit
     * half of size - 1 converted exactly to double. */
    __m256i x = _mm256_sub_epi64(size, _mm256_set1_epi64x(1));
    __m256i hi = _mm256_srli_epi64(x, 32);
    __m256i lo = _mm256_and_si256(x, low32);
    __m256i hi_exp = _mm256_srli_epi64(
        _mm256_castpd_si256(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(hi, exp52)), two52)),
        52);
    __m256i lo_exp = _mm256_srli_epi64(
        _mm256_castpd_si256(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(lo, exp52)), two52)),
        52);
    /* hi != 0: 33 + (hi_exp - 1023); hi == 0: 1 + (lo_exp - 1023) (lo >= 1 here). */
    __m256i b = _mm256_blendv_epi8(_mm256_sub_epi64(hi_exp, _mm256_set1_epi64x(990)),
                                   _mm256_sub_epi64(lo_exp, _mm256_set1_epi64x(1022)),
                                   _mm256_cmpeq_epi64(hi, zero));
    __m256i tiny = _mm256_cmpeq_epi64(_mm256_srli_epi64(size, 1), zero); /* size <= 1 */
    out.bucket = _mm256_andnot_si256(tiny, b);
    return out;
}

/* Four records (one per 64-bit lane) reduced into the block's tables. Inlined into the block
 * loop, so that its constants and the site range stay in registers. */
__attribute__((target("avx2"), always_inline)) static inline void quad_avx2(
    const ms_record_t *r, int64_t (*fine)[2], id_sums_t *ids, __m256i *site_hi,
    __m256i *all_inside, __m256i *free_lanes)
{
    /* Each record is one 256-bit row of four qwords: address, size, delta|site<<32,
     * weight|flags<<32|thread<<48. Transpose to get one field per vector. */
    __m256i r0 = _mm256_loadu_si256((const __m256i *)(const void *)&r[0]);
    __m256i r1 = _mm256_loadu_si256((const __m256i *)(const void *)&r[1]);
    __m256i r2 = _mm256_loadu_si256((const __m256i *)(const void *)&r[2]);
    __m256i r3 = _mm256_loadu_si256((const __m256i *)(const void *)&r[3]);
    __m256i t0 = _mm256_unpacklo_epi64(r0, r1); /* a0 a1 q2_0 q2_1 */
    __m256i t1 = _mm256_unpackhi_epi64(r0, r1); /* s0 s1 q3_0 q3_1 */
    __m256i t2 = _mm256_unpacklo_epi64(r2, r3);
    __m256i t3 = _mm256_unpackhi_epi64(r2, r3);
    __m256i size = _mm256_permute2x128_si256(t1, t3, 0x20);
    __m256i q3 = _mm256_permute2x128_si256(t1, t3, 0x31);
    __m256i q2 = _mm256_permute2x128_si256(t0, t2, 0x31);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i exp52 = _mm256_set1_epi64x(0x4330000000000000LL); /* bits of 2^52 */
    const __m256d two52 = _mm256_castsi256_pd(exp52);

    /* weight: low dword of each q3 lane, float -> double (exact). */
    __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m256d weight = _mm256_cvtps_pd(_mm256_castps256_ps128(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(q3, pick_low))));

    /* size -> double and bucket. Usual case, 1 <= size <= 2^51: x = size - 1 and size convert
     * exactly through the 2^52 mantissa trick, and bucket (0 for size 1, else
     * floor(log2(x)) + 1) is the exponent of x less 1022, clamped at 0 (x = 0 has exponent 0).
     * Otherwise (size 0 included) the general code, which rounds size once, as C does. */
    __m256i x = _mm256_sub_epi64(size, _mm256_set1_epi64x(1));
    __m256d size_d;
    __m256i bucket;
    __m256i x_high = _mm256_srli_epi64(x, 51);
    if (__builtin_expect(_mm256_testz_si256(x_high, x_high), 1)) {
        size_d = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(size, exp52)), two52);
        __m256i x_exp = _mm256_srli_epi64(
            _mm256_castpd_si256(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(x, exp52)), two52)),
            52);
        bucket = _mm256_max_epi32(_mm256_sub_epi64(x_exp, _mm256_set1_epi64x(1022)), zero);
    } else {
        avx2_sizes_t general = size_general_avx2(size);
        size_d = general.size_d;
        bucket = general.bucket;
    }
    __m256d weighted_bytes = _mm256_mul_pd(weight, size_d);

    /* flags and event masks: event bits 00 alloc, 01 free, 10 realloc, 11 ignored */
    __m256i flags = _mm256_srli_epi64(q3, 32); /* flags | thread << 16 */
    __m256i domain = _mm256_min_epu32(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_DOMAIN_MASK)),
                                      _mm256_set1_epi64x(MS_DOMAINS - 1)); /* ms_flags_domain */
    __m256i event = _mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_EVENT_MASK));
    __m256i is_free = _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(MS_EVENT_FREE << MS_FLAG_EVENT_SHIFT));
    __m256i ignored = _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(MS_FLAG_EVENT_MASK));
    __m256i is_alloc = _mm256_cmpeq_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(1 << MS_FLAG_EVENT_SHIFT)),
                                          zero); /* 00 or 10 */
    __m256i nolive = _mm256_cmpeq_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_NOLIVE)),
                                        _mm256_set1_epi64x(MS_FLAG_NOLIVE));

    /* fine cell: ((domain * 3 + class) * 2 + nolive) * 65 + bucket, or FINE_FREE + domain */
    __m256i size_class = _mm256_min_epu32(
        _mm256_srli_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_CLASS_MASK)),
                          MS_FLAG_CLASS_SHIFT),
        _mm256_set1_epi64x(MS_CLASSES - 1));
    __m256i cell2 = _mm256_sub_epi64(
        _mm256_add_epi64(_mm256_mul_epu32(domain, _mm256_set1_epi64x(2 * MS_CLASSES)),
                         _mm256_add_epi64(size_class, size_class)),
        nolive); /* nolive is 0 or -1 */
    __m256i alloc_cell = _mm256_add_epi64(_mm256_mul_epu32(cell2, _mm256_set1_epi64x(MS_BUCKETS)), bucket);
    __m256i fine_cell = _mm256_blendv_epi8(
        alloc_cell, _mm256_add_epi64(domain, _mm256_set1_epi64x(FINE_FREE)), is_free);
    __m256i site = _mm256_srli_epi64(q2, 32);
    __m256i site_bad = _mm256_cmpgt_epi64(site, _mm256_set1_epi64x(MS_MAX_IDS - 1));
    site = _mm256_blendv_epi8(site, _mm256_add_epi64(domain, _mm256_set1_epi64x(MS_ID_OVERFLOW)),
                              site_bad);

    /* bounds (NaN fails them) */
    const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
    __m256i fixed_ok = _mm256_castpd_si256(_mm256_and_pd(
        _mm256_cmp_pd(_mm256_and_pd(weight, abs_mask), _mm256_set1_pd(WEIGHT_LIMIT), _CMP_LE_OQ),
        _mm256_cmp_pd(_mm256_and_pd(weighted_bytes, abs_mask), _mm256_set1_pd(WEIGHTED_BYTES_LIMIT),
                      _CMP_LE_OQ)));
    __m256i used = _mm256_andnot_si256(ignored, fixed_ok);
    /* lanes outside the bounds are left to a pass at the end of the block (they are rare); the
     * frees are counted lane-wise (x - -1 = x + 1) */
    *all_inside = _mm256_and_si256(*all_inside, _mm256_or_si256(used, ignored));
    *free_lanes = _mm256_sub_epi64(*free_lanes, is_free);

    /* The integers, as count_units(w) and bytes_units(w * size) compute them: adding
     * 1.5 * 2^28 (resp. 1.5 * 2^42) rounds to a multiple of 2^-24 (2^-10), the same rounding
     * scaled by a power of two, and the sum stays within [2^28, 2^29) (resp. [2^42, 2^43)),
     * so the difference of the bit patterns is the integer. Lanes outside the bounds give
     * garbage that the masks drop. */
    const __m256d count_magic = _mm256_set1_pd(0x1.8p28), bytes_magic = _mm256_set1_pd(0x1.8p42);
    __m256i count = _mm256_and_si256(
        _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(weight, count_magic)),
                         _mm256_castpd_si256(count_magic)),
        used);
    __m256i bytes = _mm256_and_si256(
        _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(weighted_bytes, bytes_magic)),
                         _mm256_castpd_si256(bytes_magic)),
        used);
    /* signed for the fine table and the live row: -x for frees ((x ^ -1) - -1 = -x) */
    __m256i signed_count = _mm256_sub_epi64(_mm256_xor_si256(count, is_free), is_free);
    __m256i signed_bytes = _mm256_sub_epi64(_mm256_xor_si256(bytes, is_free), is_free);
    __m256i alloc_count = _mm256_and_si256(is_alloc, count);
    __m256i alloc_bytes = _mm256_and_si256(is_alloc, bytes);
    /* live row: frees, and allocations without NOLIVE */
    __m256i live_bytes = _mm256_andnot_si256(_mm256_and_si256(is_alloc, nolive), signed_bytes);

    /* byte offsets of each lane's fine cell (low dword) and id row (high dword): four 64-bit
     * extracts, split with scalar shifts, cost fewer shuffle uops than eight 32-bit ones */
    __m256i offsets = _mm256_or_si256(_mm256_slli_epi64(fine_cell, 4), _mm256_slli_epi64(site, 32 + 5));
    __m128i offsets_hi = _mm256_extracti128_si256(offsets, 1);
    uint64_t key[4] = {(uint64_t)_mm_cvtsi128_si64(_mm256_castsi256_si128(offsets)),
                       (uint64_t)_mm_extract_epi64(_mm256_castsi256_si128(offsets), 1),
                       (uint64_t)_mm_cvtsi128_si64(offsets_hi), (uint64_t)_mm_extract_epi64(offsets_hi, 1)};
    char *fine_base = (char *)fine;
    __m256i fine02 = _mm256_unpacklo_epi64(signed_count, signed_bytes); /* c0 b0 c2 b2 */
    __m256i fine13 = _mm256_unpackhi_epi64(signed_count, signed_bytes); /* c1 b1 c3 b3 */
#define FINE_ADD(J, PAIR)                                                                       \
    do {                                                                                        \
        __m128i *cell_ = (__m128i *)(void *)(fine_base + (uint32_t)key[J]);                     \
        _mm_store_si128(cell_, _mm_add_epi64(_mm_load_si128(cell_), (PAIR)));                   \
    } while (0)
    FINE_ADD(0, _mm256_castsi256_si128(fine02));
    FINE_ADD(1, _mm256_castsi256_si128(fine13));
    FINE_ADD(2, _mm256_extracti128_si256(fine02, 1));
    FINE_ADD(3, _mm256_extracti128_si256(fine13, 1));
#undef FINE_ADD
    if (ids) {
        *site_hi = _mm256_max_epu32(*site_hi, site);
        char *id_base = (char *)ids;
        __m256i ab02 = _mm256_unpacklo_epi64(alloc_count, alloc_bytes);
        __m256i ab13 = _mm256_unpackhi_epi64(alloc_count, alloc_bytes);
        __m256i live02 = _mm256_unpacklo_epi64(live_bytes, zero); /* l0 0 l2 0 */
        __m256i live13 = _mm256_unpackhi_epi64(live_bytes, zero);
#define ID_ADD(J, ROW)                                                                          \
    do {                                                                                        \
        __m256i *row_ = (__m256i *)(void *)(id_base + (key[J] >> 32));                    \
        _mm256_storeu_si256(row_, _mm256_add_epi64(_mm256_loadu_si256(row_), (ROW)));           \
    } while (0)
        ID_ADD(0, _mm256_permute2x128_si256(ab02, live02, 0x20));
        ID_ADD(1, _mm256_permute2x128_si256(ab13, live13, 0x20));
        ID_ADD(2, _mm256_permute2x128_si256(ab02, live02, 0x31));
        ID_ADD(3, _mm256_permute2x128_si256(ab13, live13, 0x31));
#undef ID_ADD
    }
}

#ifndef PREFETCH_RECORDS
#define PREFETCH_RECORDS 64
#endif

__attribute__((target("avx2"))) static void reduce_block_avx2(const ms_record_t *records, size_t n,
                                                               ms_summary_t *s, id_sums_t *ids)
{
    _Alignas(32) int64_t fine[FINE_CELLS][2];
    memset(fine, 0, sizeof fine);
    __m256i site_hi = _mm256_setzero_si256(); /* lane-wise highest site (the low dword) */
    __m256i all_inside = _mm256_set1_epi64x(-1), free_lanes = _mm256_setzero_si256();
    size_t vec = n & ~(size_t)3;
    for (size_t i = 0; i < vec; i += 4) {
        /* the batch streams from memory: ask for it PREFETCH_RECORDS ahead */
        uintptr_t ahead = (uintptr_t)(const void *)(records + i) + PREFETCH_RECORDS * sizeof *records;
        _mm_prefetch((const char *)ahead, _MM_HINT_T0);
        _mm_prefetch((const char *)ahead + 64, _MM_HINT_T0);
        quad_avx2(records + i, fine, ids, &site_hi, &all_inside, &free_lanes);
    }
    if (vec < n) {
        ms_record_t group[4];
        pad_tail(records + vec, n - vec, group, 4);
        quad_avx2(group, fine, ids, &site_hi, &all_inside, &free_lanes);
    }
    /* records outside the bounds take the double route, in record order, before the block
     * sums are added: the same additions in the same order as the scalar loop makes */
    if (_mm256_movemask_pd(_mm256_castsi256_pd(all_inside)) != 15)
        for (size_t i = 0; i < n; i++) {
            unsigned kind = scalar_kind(records[i].flags);
            double w = (double)records[i].weight;
            if (kind != 0 && !in_fixed_range(w, w * (double)records[i].size))
                add_in_double(&records[i], kind, s);
        }
    uint64_t frees_by_lane[4];
    _mm256_storeu_si256((__m256i *)(void *)frees_by_lane, free_lanes);
    uint64_t frees = frees_by_lane[0] + frees_by_lane[1] + frees_by_lane[2] + frees_by_lane[3];
    dense_sums_t p;
    dense_from_fine((const int64_t(*)[2])fine, &p);
    flush_dense(&p, s);
    if (ids) {
        /* rows 0..hi: sites are handed out from 0 up, so the lowest is not worth tracking */
        uint32_t hi_lanes[8], hi = 0;
        _mm256_storeu_si256((__m256i *)(void *)hi_lanes, site_hi);
        for (int j = 0; j < 8; j += 2)
            hi = hi_lanes[j] > hi ? hi_lanes[j] : hi;
        flush_ids(records, n, s, ids, MS_MAX_IDS - 1, hi);
    }
    s->free_records += frees;
}

#endif /* MS_REDUCE_HAVE_AVX2 */

#if defined(MS_REDUCE_HAVE_NEON)

/* Two records decoded with NEON, then added into the block's tables with scalar adds. */
static void pair_neon(const ms_record_t *r, int64_t (*fine)[2], id_sums_t *ids, uint32_t *site_hi,
                      ms_summary_t *s, uint64_t *frees)
{
    /* vld4q_u64 de-interleaves the four qwords of two records: val[1] sizes, val[2] delta|site,
     * val[3] weight|flags|thread. */
    uint64x2x4_t q = vld4q_u64((const uint64_t *)(const void *)r);
    uint64x2_t size = q.val[1];
    float64x2_t weight = vcvt_f64_f32(vreinterpret_f32_u32(vmovn_u64(q.val[3])));
    float64x2_t size_d = vcvtq_f64_u64(size); /* UCVTF: rounded once, to nearest */
    float64x2_t weighted_bytes = vmulq_f64(weight, size_d);

    /* bucket from the clz of the 32-bit halves of size - 1 (NEON has no 64-bit clz) */
    uint64x2_t x = vsubq_u64(size, vdupq_n_u64(1));
    uint32x2_t hi = vshrn_n_u64(x, 32);
    uint32x2_t lo = vmovn_u64(x);
    uint32x2_t from_hi = vsub_u32(vdup_n_u32(64), vclz_u32(hi));
    uint32x2_t from_lo = vsub_u32(vdup_n_u32(32), vclz_u32(lo));
    uint32x2_t bucket = vbsl_u32(vceq_u32(hi, vdup_n_u32(0)), from_lo, from_hi);
    uint32x2_t tiny = vmovn_u64(vceqq_u64(vshrq_n_u64(size, 1), vdupq_n_u64(0)));
    bucket = vbic_u32(bucket, tiny);

    uint32x2_t flags = vand_u32(vshrn_n_u64(q.val[3], 32), vdup_n_u32(0xFFFF));
    uint32x2_t domain = vmin_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_DOMAIN_MASK)), vdup_n_u32(MS_DOMAINS - 1));
    uint32x2_t event = vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_EVENT_MASK)), MS_FLAG_EVENT_SHIFT);
    uint32x2_t size_class = vmin_u32(
        vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_CLASS_MASK)), MS_FLAG_CLASS_SHIFT),
        vdup_n_u32(MS_CLASSES - 1));
    uint32x2_t nolive = vand_u32(vshr_n_u32(flags, MS_FLAG_NOLIVE_SHIFT), vdup_n_u32(1));
    uint32x2_t cell2 = vmla_u32(nolive, vmla_u32(size_class, domain, vdup_n_u32(MS_CLASSES)),
                                vdup_n_u32(2));
    uint32x2_t is_free = vceq_u32(event, vdup_n_u32(MS_EVENT_FREE));
    uint32x2_t fine_cell = vbsl_u32(is_free, vadd_u32(domain, vdup_n_u32(FINE_FREE)),
                                    vmla_u32(bucket, cell2, vdup_n_u32(MS_BUCKETS)));
    uint32x2_t site = vshrn_n_u64(q.val[2], 32);
    uint32x2_t site_bad = vcgt_u32(site, vdup_n_u32(MS_MAX_IDS - 1));
    site = vbsl_u32(site_bad, vadd_u32(domain, vdup_n_u32(MS_ID_OVERFLOW)), site);
    uint32x2_t is_alloc = vorr_u32(vceq_u32(event, vdup_n_u32(MS_EVENT_ALLOC)),
                                   vceq_u32(event, vdup_n_u32(MS_EVENT_REALLOC)));
    uint32x2_t is_live = vorr_u32(vbic_u32(is_alloc, vtst_u32(flags, vdup_n_u32(MS_FLAG_NOLIVE))), is_free);

    /* bounds (NaN fails them) and the integers: FCVTNS rounds to nearest, ties to even, which
     * for |x| <= 2^50 is to_fixed exactly; lanes outside the bounds are dropped below */
    uint64x2_t fixed_ok = vandq_u64(vcaleq_f64(weight, vdupq_n_f64(WEIGHT_LIMIT)),
                                    vcaleq_f64(weighted_bytes, vdupq_n_f64(WEIGHTED_BYTES_LIMIT)));
    int64x2_t count = vcvtnq_s64_f64(vmulq_f64(weight, vdupq_n_f64(COUNT_SCALE)));
    int64x2_t bytes = vcvtnq_s64_f64(vmulq_f64(weighted_bytes, vdupq_n_f64(BYTES_SCALE)));
    uint64x2_t free64 = vreinterpretq_u64_s64(vmovl_s32(vreinterpret_s32_u32(is_free)));
    uint64x2_t alloc64 = vreinterpretq_u64_s64(vmovl_s32(vreinterpret_s32_u32(is_alloc)));
    uint64x2_t live64 = vreinterpretq_u64_s64(vmovl_s32(vreinterpret_s32_u32(is_live)));
    uint64x2_t counts64 = vorrq_u64(alloc64, free64);
    uint64x2_t used = vandq_u64(counts64, fixed_ok);
    count = vreinterpretq_s64_u64(vandq_u64(vreinterpretq_u64_s64(count), used));
    bytes = vreinterpretq_s64_u64(vandq_u64(vreinterpretq_u64_s64(bytes), used));
    int64x2_t signed_count = vbslq_s64(free64, vnegq_s64(count), count);
    int64x2_t signed_bytes = vbslq_s64(free64, vnegq_s64(bytes), bytes);
    int64x2_t alloc_count = vreinterpretq_s64_u64(vbicq_u64(vreinterpretq_u64_s64(count), free64));
    int64x2_t alloc_bytes = vreinterpretq_s64_u64(vbicq_u64(vreinterpretq_u64_s64(bytes), free64));
    int64x2_t live_bytes = vreinterpretq_s64_u64(vandq_u64(vreinterpretq_u64_s64(signed_bytes), live64));

    uint64x2_t outside64 = vbicq_u64(counts64, fixed_ok);
    unsigned outside = (unsigned)(vgetq_lane_u64(outside64, 0) & 1u) |
                       (unsigned)(vgetq_lane_u64(outside64, 1) & 2u);
    for (unsigned m = outside; m; m &= m - 1) {
        unsigned j = (unsigned)__builtin_ctz(m);
        add_in_double(&r[j], scalar_kind(r[j].flags), s);
    }
    *frees += (vget_lane_u32(is_free, 0) & 1u) + (vget_lane_u32(is_free, 1) & 1u);

    int64_t sc[2], sb[2], ac[2], ab[2], lb[2];
    uint32_t fc[2], st[2];
    vst1q_s64(sc, signed_count);
    vst1q_s64(sb, signed_bytes);
    vst1q_s64(ac, alloc_count);
    vst1q_s64(ab, alloc_bytes);
    vst1q_s64(lb, live_bytes);
    vst1_u32(fc, fine_cell);
    vst1_u32(st, site);
    for (int j = 0; j < 2; j++) {
        fine[fc[j]][0] += sc[j];
        fine[fc[j]][1] += sb[j];
        if (ids) {
            *site_hi = st[j] > *site_hi ? st[j] : *site_hi;
            ids[st[j]].count += ac[j];
            ids[st[j]].bytes += ab[j];
            ids[st[j]].live_bytes += lb[j];
        }
    }
}

static void reduce_block_neon(const ms_record_t *records, size_t n, ms_summary_t *s, id_sums_t *ids)
{
    int64_t fine[FINE_CELLS][2];
    memset(fine, 0, sizeof fine);
    uint32_t hi = 0;
    uint64_t frees = 0;
    size_t vec = n & ~(size_t)1;
    for (size_t i = 0; i < vec; i += 2)
        pair_neon(records + i, fine, ids, &hi, s, &frees);
    if (vec < n) {
        ms_record_t group[2];
        pad_tail(records + vec, n - vec, group, 2);
        pair_neon(group, fine, ids, &hi, s, &frees);
    }
    dense_sums_t p;
    dense_from_fine((const int64_t(*)[2])fine, &p);
    flush_dense(&p, s);
    if (ids)
        flush_ids(records, n, s, ids, MS_MAX_IDS - 1, hi);
    s->free_records += frees;
}

#endif /* MS_REDUCE_HAVE_NEON */

int ms_reduce_simd_available(void)
{
#if defined(MS_REDUCE_HAVE_AVX2)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#elif defined(MS_REDUCE_HAVE_NEON)
    return 1; /* Advanced SIMD is mandatory on AArch64 */
#else
    return 0;
#endif
}

void ms_reduce_simd(const ms_record_t *records, size_t n, ms_summary_t *s)
{
#if defined(MS_REDUCE_HAVE_AVX2) || defined(MS_REDUCE_HAVE_NEON)
    if (!ms_reduce_simd_available()) {
        ms_reduce_scalar(records, n, s);
        return;
    }
    id_sums_t *ids = wants_ids(s) ? id_scratch() : NULL;
    if (wants_ids(s) && ids == NULL) {
        reduce_one_by_one(records, n, s); /* the same fallback as the scalar path */
    } else {
        for (size_t done = 0; done < n; done += BLOCK_RECORDS) {
            size_t m = n - done < BLOCK_RECORDS ? n - done : BLOCK_RECORDS;
#if defined(MS_REDUCE_HAVE_AVX2)
            reduce_block_avx2(records + done, m, s, ids);
#else
            reduce_block_neon(records + done, m, s, ids);
#endif
        }
    }
    s->records += n;
#else
    ms_reduce_scalar(records, n, s);
#endif
}

/* ENABLE_SIMD: 1 (default) lets ms_reduce use the vector path when the CPU has one. */
static atomic_int simd_allowed = 1;

void ms_reduce_use_simd(int enabled)
{
    atomic_store_explicit(&simd_allowed, enabled ? 1 : 0, memory_order_relaxed);
}

int ms_reduce_simd_active(void)
{
    return atomic_load_explicit(&simd_allowed, memory_order_relaxed) && ms_reduce_simd_available();
}

void ms_reduce(const ms_record_t *records, size_t n, ms_summary_t *summary)
{
    if (ms_reduce_simd_active())
        ms_reduce_simd(records, n, summary);
    else
        ms_reduce_scalar(records, n, summary);
}
