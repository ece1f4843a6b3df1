/*
 * reduce.c: records -> cumulative Horvitz-Thompson summary (ms_summary_t).
 *
 * Paths: ms_reduce_scalar (the plain record loop, the reference), and a vector twin per
 * architecture behind ms_reduce_simd: AVX2 on x86-64 (compiled with a target attribute, so the
 * file builds without -mavx2, and used only when the CPU reports AVX2), NEON on AArch64.
 * ms_reduce picks one at run time; ms_reduce_use_simd(0) (ENABLE_SIMD=false) forces the scalar one.
 *
 * Reproducibility: every path gives a bit-identical summary for the same batch (NaN results aside:
 * when both operands of an addition are NaN, IEEE 754 does not fix which payload survives, and
 * compilers swap the operands of +). How: each accumulator is a left fold of its contributions in
 * record order, in every path, and each contribution is the same IEEE value:
 *   - float -> double is exact; uint64 -> double is rounded once, to nearest (AVX2 builds it from
 *     two exact 32-bit halves and one rounding addition; NEON's UCVTF rounds once, to nearest);
 *   - w * size is one IEEE multiplication; a free adds -w and -(w * size) (a sign flip, the same
 *     in C and in vectors) instead of subtracting;
 *   - no fused multiply-add: the build is -std=c11, under which GCC and clang do not contract.
 * Integer fixed-point weights would have allowed reordering, but w * size needs more than 64 bits
 * for large sizes and weights, and the summary is double anyway; a fixed order was simpler.
 *
 * What is vectorized, and why not more: the decode of each record (field extraction from the
 * 32-byte row, event/class/domain masks, clamping, the log2 bucket, uint64 -> double, w * size).
 * The AVX2 path also keeps the 32 dense accumulators (count and bytes per domain x class, live
 * bytes and count per domain) in registers, adding each record with a compare-mask-blend so every
 * cell still sees its additions in record order. The sparse tables (65 buckets per domain, three
 * per-id arrays of MS_MAX_IDS) take scalar adds: AVX2 has no scatter, and reordering to batch
 * the additions would break the reproducibility above. The NEON path decodes a block into
 * arrays plus two lists (allocations; records that move the live estimate) and accumulates them
 * in branch-free passes. The work is dominated by those ordered scatter-adds, which vectors cannot
 * speed up, so the vector paths do not beat the scalar loop by much, if at all: see
 * benchmarks/reduce_throughput.py for the figures on a given machine.
 *
 * Robustness: records may come from a corrupt dump. A site id >= MS_MAX_IDS is folded into the
 * "<overflow>" id of its domain; size class 3 (unused) counts as large; event kind 3 (unused)
 * contributes only to summary->records. Any bit pattern of weight and size is just arithmetic.
 * Null per-id arrays are skipped.
 */
#include "memscope.h"

#include <stdatomic.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define MS_REDUCE_HAVE_AVX2 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define MS_REDUCE_HAVE_NEON 1
#endif

_Static_assert(sizeof(ms_record_t) == 32, "ms_record_t must be 32 bytes");

/* ---------------------------------------------------------------- scalar path */

/* Event kind of a record: 0 ignore (kind 3), 1 allocation, 2 free. */
static unsigned scalar_kind(unsigned flags)
{
    unsigned event = (flags & MS_FLAG_EVENT_MASK) >> MS_FLAG_EVENT_SHIFT;
    if (event == MS_EVENT_ALLOC || event == MS_EVENT_REALLOC)
        return 1;
    return event == MS_EVENT_FREE ? 2 : 0;
}

static unsigned bucket_of(uint64_t size)
{
    return size <= 1 ? 0u : 64u - (unsigned)__builtin_clzll(size - 1);
}

/* The plain record loop: the reference twin of the vector paths. A free adds the negated values
 * (x + (-y) rather than x - y), as the vector paths do, so that both make the same operations. */
void ms_reduce_scalar(const ms_record_t *records, size_t n, ms_summary_t *s)
{
    double *id_count = s->id_count, *id_bytes = s->id_bytes, *id_live = s->id_live_bytes;
    uint64_t free_records = 0;
    for (size_t i = 0; i < n; i++) {
        const ms_record_t *r = &records[i];
        unsigned flags = r->flags;
        unsigned kind = scalar_kind(flags);
        if (kind == 0)
            continue;
        unsigned d = flags & MS_FLAG_DOMAIN_MASK;
        uint32_t site = r->site < MS_MAX_IDS ? r->site : MS_ID_OVERFLOW + d;
        double w = (double)r->weight;
        double wb = w * (double)r->size;
        if (kind == 1) {
            unsigned c = (flags & MS_FLAG_CLASS_MASK) >> MS_FLAG_CLASS_SHIFT;
            if (c >= MS_CLASSES)
                c = MS_CLASSES - 1;
            s->count[d][c] += w;
            s->bytes[d][c] += wb;
            s->bucket_count[d][bucket_of(r->size)] += w;
            if (id_count)
                id_count[site] += w;
            if (id_bytes)
                id_bytes[site] += wb;
            if (flags & MS_FLAG_NOLIVE)
                continue;
        } else {
            w = -w;
            wb = -wb;
            free_records++;
        }
        s->live_bytes[d] += wb;
        s->live_count[d] += w;
        if (id_live)
            id_live[site] += wb;
    }
    s->free_records += free_records;
    s->records += n;
}

/* ---------------------------------------------------------------- vector paths */

#if defined(MS_REDUCE_HAVE_NEON)

/* Records decoded per block: the decoded block stays in L1, and the loops run long enough for
 * the vector decode to pay. A multiple of every vector width used. */
#define DECODE_BLOCK 256

/* A block decoded by a vector path (structure of arrays), plus two lists of record positions in
 * record order: the allocations, and the records that move the live estimate (allocations
 * without NOLIVE, and frees). Splitting by list makes the accumulate loops free of branches on
 * the event kind while keeping every accumulator's additions in record order. */
typedef struct {
    uint32_t cell[DECODE_BLOCK];      /* domain * MS_CLASSES + class */
    uint32_t bucket[DECODE_BLOCK];    /* domain * MS_BUCKETS + bucket */
    uint32_t site[DECODE_BLOCK];      /* clamped site id */
    uint32_t domain[DECODE_BLOCK];
    double weight[DECODE_BLOCK];
    double weighted_bytes[DECODE_BLOCK];
    double live_weight[DECODE_BLOCK]; /* +weight for a live allocation, -weight for a free */
    double live_bytes[DECODE_BLOCK];  /* same with weighted bytes */
    uint32_t allocs[DECODE_BLOCK + 4];
    uint32_t lives[DECODE_BLOCK + 4];
    size_t n_allocs, n_lives, n_frees;
} decoded_block_t;

/* Positions of the set bits of a 4-bit lane mask, packed to the front. */
static const uint8_t compact_lut[16][4] = {
    {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
    {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
    {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3},
};

/* Appends the positions at + j of the set bits j of mask (< 16) to list; no branches. */
static size_t append_positions(uint32_t *list, size_t len, unsigned mask, uint32_t at)
{
    const uint8_t *lut = compact_lut[mask];
    list[len + 0] = at + lut[0];
    list[len + 1] = at + lut[1];
    list[len + 2] = at + lut[2];
    list[len + 3] = at + lut[3];
    return len + (size_t)__builtin_popcount(mask);
}

/* The accumulate step of the vector paths: plain scalar adds, in record order per accumulator. */
static void accumulate_block(const decoded_block_t *b, ms_summary_t *s)
{
    double *count = &s->count[0][0], *bytes = &s->bytes[0][0], *buckets = &s->bucket_count[0][0];
    double *id_count = s->id_count, *id_bytes = s->id_bytes, *id_live = s->id_live_bytes;
    for (size_t k = 0; k < b->n_allocs; k++) {
        uint32_t i = b->allocs[k];
        count[b->cell[i]] += b->weight[i];
        bytes[b->cell[i]] += b->weighted_bytes[i];
        buckets[b->bucket[i]] += b->weight[i];
    }
    if (id_count && id_bytes) {
        for (size_t k = 0; k < b->n_allocs; k++) {
            uint32_t i = b->allocs[k];
            id_count[b->site[i]] += b->weight[i];
            id_bytes[b->site[i]] += b->weighted_bytes[i];
        }
    } else {
        for (size_t k = 0; k < b->n_allocs; k++) {
            uint32_t i = b->allocs[k];
            if (id_count)
                id_count[b->site[i]] += b->weight[i];
            if (id_bytes)
                id_bytes[b->site[i]] += b->weighted_bytes[i];
        }
    }
    for (size_t k = 0; k < b->n_lives; k++) {
        uint32_t i = b->lives[k];
        s->live_bytes[b->domain[i]] += b->live_bytes[i];
        s->live_count[b->domain[i]] += b->live_weight[i];
        if (id_live)
            id_live[b->site[i]] += b->live_bytes[i];
    }
    s->free_records += b->n_frees;
}

#endif

#if defined(MS_REDUCE_HAVE_AVX2)

/* Four records decoded into vectors (one record per 64-bit lane). */
typedef struct {
    __m256i cell;        /* domain * 3 + class for allocations; NO_CELL otherwise */
    __m256i live_domain; /* domain for records that move the live estimate; NO_CELL otherwise */
    __m256i bucket;      /* domain * 65 + bucket */
    __m256i site;        /* clamped site id */
    __m256d weight, weighted_bytes;
    __m256d live_weight, live_bytes; /* signed: negated for frees */
    unsigned alloc_mask, live_mask, free_mask;
} avx2_decoded_t;

#define NO_CELL 64

__attribute__((target("avx2"))) static inline avx2_decoded_t decode4_avx2(const ms_record_t *r)
{
    avx2_decoded_t out;
    /* Each record is one 256-bit row of four qwords: address, size, delta|site<<32,
     * weight|flags<<32|thread<<48. Transpose the 4x4 qword matrix to get one field per vector. */
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

    const __m256i low32 = _mm256_set1_epi64x(0xFFFFFFFFLL);
    const __m256i exp52 = _mm256_set1_epi64x(0x4330000000000000LL); /* bits of 2^52 */
    const __m256i exp84 = _mm256_set1_epi64x(0x4530000000000000LL); /* bits of 2^84 */
    const __m256d two52 = _mm256_castsi256_pd(exp52);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i no_cell = _mm256_set1_epi64x(NO_CELL);

    /* weight: low dword of each q3 lane, float -> double (exact). */
    __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m128 weight_f = _mm256_castps256_ps128(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(q3, pick_low)));
    out.weight = _mm256_cvtps_pd(weight_f);

    /* size -> double, rounded once: (2^84 + hi*2^32) - (2^84 + 2^52) is exact, then adding
     * (2^52 + lo) rounds the exact hi*2^32 + lo once to nearest, as the C conversion does. */
    __m256d lo_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(size, low32), exp52));
    __m256d hi_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(size, 32), exp84));
    __m256d size_d = _mm256_add_pd(
        _mm256_sub_pd(hi_d, _mm256_set1_pd(19342813118337666422669312.0 /* 2^84 + 2^52 */)),
        lo_d);
    out.weighted_bytes = _mm256_mul_pd(out.weight, size_d);

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
    __m256i bucket = _mm256_blendv_epi8(_mm256_sub_epi64(hi_exp, _mm256_set1_epi64x(990)),
                                        _mm256_sub_epi64(lo_exp, _mm256_set1_epi64x(1022)),
                                        _mm256_cmpeq_epi64(hi, zero));
    __m256i tiny = _mm256_cmpeq_epi64(_mm256_srli_epi64(size, 1), zero); /* size <= 1 */
    bucket = _mm256_andnot_si256(tiny, bucket);

    /* flags, cell, site */
    __m256i flags = _mm256_and_si256(_mm256_srli_epi64(q3, 32), _mm256_set1_epi64x(0xFFFF));
    __m256i domain = _mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_DOMAIN_MASK));
    __m256i event = _mm256_srli_epi64(
        _mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_EVENT_MASK)), MS_FLAG_EVENT_SHIFT);
    __m256i size_class = _mm256_min_epu32(
        _mm256_srli_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_CLASS_MASK)),
                          MS_FLAG_CLASS_SHIFT),
        _mm256_set1_epi64x(MS_CLASSES - 1));
    __m256i domain3 = _mm256_add_epi64(_mm256_add_epi64(domain, domain), domain);
    __m256i domain65 = _mm256_add_epi64(_mm256_slli_epi64(domain, 6), domain);
    out.bucket = _mm256_add_epi64(domain65, bucket);
    __m256i site = _mm256_srli_epi64(q2, 32);
    __m256i site_bad = _mm256_cmpgt_epi64(site, _mm256_set1_epi64x(MS_MAX_IDS - 1));
    out.site = _mm256_blendv_epi8(site, _mm256_add_epi64(domain, _mm256_set1_epi64x(MS_ID_OVERFLOW)),
                                  site_bad);

    /* event masks and the signed live contributions (-x is a sign flip, as in C) */
    __m256i is_free = _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(MS_EVENT_FREE));
    __m256i is_alloc = _mm256_or_si256(_mm256_cmpeq_epi64(event, zero),
                                       _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(MS_EVENT_REALLOC)));
    __m256i has_nolive = _mm256_cmpeq_epi64(
        _mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_NOLIVE)), _mm256_set1_epi64x(MS_FLAG_NOLIVE));
    __m256i is_live = _mm256_or_si256(_mm256_andnot_si256(has_nolive, is_alloc), is_free);
    out.cell = _mm256_blendv_epi8(no_cell, _mm256_add_epi64(domain3, size_class), is_alloc);
    out.live_domain = _mm256_blendv_epi8(no_cell, domain, is_live);
    __m256d sign = _mm256_and_pd(_mm256_castsi256_pd(is_free), _mm256_set1_pd(-0.0));
    out.live_weight = _mm256_xor_pd(out.weight, sign);
    out.live_bytes = _mm256_xor_pd(out.weighted_bytes, sign);
    out.alloc_mask = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(is_alloc));
    out.live_mask = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(is_live));
    out.free_mask = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(is_free));
    return out;
}

/* Adds record J of a decoded quad into the register-resident dense accumulators: each cell
 * register takes acc + value where the record's cell matches and keeps acc elsewhere, so every
 * cell sees exactly the additions the scalar loop makes, in the same order. */
#define DENSE_STEP(J)                                                                            \
    do {                                                                                         \
        const int imm = (J) * 0x55;                                                              \
        __m256i cell_j = _mm256_permute4x64_epi64(q.cell, imm);                                  \
        __m256i dom_j = _mm256_permute4x64_epi64(q.live_domain, imm);                            \
        __m256d w_j = _mm256_permute4x64_pd(q.weight, imm);                                      \
        __m256d wb_j = _mm256_permute4x64_pd(q.weighted_bytes, imm);                             \
        __m256d lw_j = _mm256_permute4x64_pd(q.live_weight, imm);                                \
        __m256d lb_j = _mm256_permute4x64_pd(q.live_bytes, imm);                                 \
        __m256d m0 = _mm256_castsi256_pd(_mm256_cmpeq_epi64(cell_j, lanes0));                    \
        __m256d m1 = _mm256_castsi256_pd(_mm256_cmpeq_epi64(cell_j, lanes4));                    \
        __m256d m2 = _mm256_castsi256_pd(_mm256_cmpeq_epi64(cell_j, lanes8));                    \
        __m256d ml = _mm256_castsi256_pd(_mm256_cmpeq_epi64(dom_j, lanes0));                     \
        count0 = _mm256_blendv_pd(count0, _mm256_add_pd(count0, w_j), m0);                      \
        count1 = _mm256_blendv_pd(count1, _mm256_add_pd(count1, w_j), m1);                      \
        count2 = _mm256_blendv_pd(count2, _mm256_add_pd(count2, w_j), m2);                      \
        bytes0 = _mm256_blendv_pd(bytes0, _mm256_add_pd(bytes0, wb_j), m0);                     \
        bytes1 = _mm256_blendv_pd(bytes1, _mm256_add_pd(bytes1, wb_j), m1);                     \
        bytes2 = _mm256_blendv_pd(bytes2, _mm256_add_pd(bytes2, wb_j), m2);                     \
        live_count = _mm256_blendv_pd(live_count, _mm256_add_pd(live_count, lw_j), ml);         \
        live_bytes = _mm256_blendv_pd(live_bytes, _mm256_add_pd(live_bytes, lb_j), ml);         \
    } while (0)

__attribute__((target("avx2"))) static void reduce_avx2(const ms_record_t *records, size_t n,
                                                         ms_summary_t *s)
{
    size_t vec = n & ~(size_t)3;
    const __m256i lanes0 = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i lanes4 = _mm256_setr_epi64x(4, 5, 6, 7);
    const __m256i lanes8 = _mm256_setr_epi64x(8, 9, 10, 11);
    double *count = &s->count[0][0], *bytes = &s->bytes[0][0], *buckets = &s->bucket_count[0][0];
    double *id_count = s->id_count, *id_bytes = s->id_bytes, *id_live = s->id_live_bytes;
    __m256d count0 = _mm256_loadu_pd(count), count1 = _mm256_loadu_pd(count + 4);
    __m256d count2 = _mm256_loadu_pd(count + 8);
    __m256d bytes0 = _mm256_loadu_pd(bytes), bytes1 = _mm256_loadu_pd(bytes + 4);
    __m256d bytes2 = _mm256_loadu_pd(bytes + 8);
    __m256d live_count = _mm256_loadu_pd(s->live_count), live_bytes = _mm256_loadu_pd(s->live_bytes);
    uint64_t frees = 0;
    for (size_t i = 0; i < vec; i += 4) {
        avx2_decoded_t q = decode4_avx2(records + i);
        DENSE_STEP(0);
        DENSE_STEP(1);
        DENSE_STEP(2);
        DENSE_STEP(3);
        /* the sparse tables (buckets, per id) take scalar adds, allocations then live movers */
        uint64_t bucket[4], site[4];
        double w[4], wb[4], lb[4];
        _mm256_storeu_si256((__m256i *)(void *)bucket, q.bucket);
        _mm256_storeu_si256((__m256i *)(void *)site, q.site);
        _mm256_storeu_pd(w, q.weight);
        _mm256_storeu_pd(wb, q.weighted_bytes);
        _mm256_storeu_pd(lb, q.live_bytes);
        for (unsigned m = q.alloc_mask; m; m &= m - 1) {
            unsigned j = (unsigned)__builtin_ctz(m);
            buckets[bucket[j]] += w[j];
            if (id_count)
                id_count[site[j]] += w[j];
            if (id_bytes)
                id_bytes[site[j]] += wb[j];
        }
        if (id_live)
            for (unsigned m = q.live_mask; m; m &= m - 1) {
                unsigned j = (unsigned)__builtin_ctz(m);
                id_live[site[j]] += lb[j];
            }
        frees += (uint64_t)__builtin_popcount(q.free_mask);
    }
    _mm256_storeu_pd(count, count0);
    _mm256_storeu_pd(count + 4, count1);
    _mm256_storeu_pd(count + 8, count2);
    _mm256_storeu_pd(bytes, bytes0);
    _mm256_storeu_pd(bytes + 4, bytes1);
    _mm256_storeu_pd(bytes + 8, bytes2);
    _mm256_storeu_pd(s->live_count, live_count);
    _mm256_storeu_pd(s->live_bytes, live_bytes);
    s->free_records += frees;
    /* fewer than 4 records left: the scalar twin does exactly the same per-record work */
    uint64_t before = s->records;
    ms_reduce_scalar(records + vec, n - vec, s);
    s->records = before + n;
}

#endif /* MS_REDUCE_HAVE_AVX2 */

#if defined(MS_REDUCE_HAVE_NEON)

/* Decodes records r[0..1] with NEON into block position at. */
static void decode2_neon(const ms_record_t *r, decoded_block_t *out, uint32_t at)
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
    uint32x2_t domain = vand_u32(flags, vdup_n_u32(MS_FLAG_DOMAIN_MASK));
    uint32x2_t event = vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_EVENT_MASK)), MS_FLAG_EVENT_SHIFT);
    uint32x2_t size_class = vmin_u32(
        vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_CLASS_MASK)), MS_FLAG_CLASS_SHIFT),
        vdup_n_u32(MS_CLASSES - 1));
    uint32x2_t cell = vmla_u32(size_class, domain, vdup_n_u32(MS_CLASSES));
    bucket = vmla_u32(bucket, domain, vdup_n_u32(MS_BUCKETS));
    uint32x2_t site = vshrn_n_u64(q.val[2], 32);
    uint32x2_t site_bad = vcgt_u32(site, vdup_n_u32(MS_MAX_IDS - 1));
    site = vbsl_u32(site_bad, vadd_u32(domain, vdup_n_u32(MS_ID_OVERFLOW)), site);

    uint32x2_t is_free = vceq_u32(event, vdup_n_u32(MS_EVENT_FREE));
    uint32x2_t is_alloc = vorr_u32(vceq_u32(event, vdup_n_u32(MS_EVENT_ALLOC)),
                                   vceq_u32(event, vdup_n_u32(MS_EVENT_REALLOC)));
    uint32x2_t has_nolive = vtst_u32(flags, vdup_n_u32(MS_FLAG_NOLIVE));
    uint32x2_t is_live = vorr_u32(vbic_u32(is_alloc, has_nolive), is_free);
    /* widen the free mask to 64-bit lanes (sign-extending, so all ones stays all ones), keep
     * only the sign bit, flip signs by xor */
    uint64x2_t free64 = vreinterpretq_u64_s64(vmovl_s32(vreinterpret_s32_u32(is_free)));
    uint64x2_t sign = vandq_u64(free64, vdupq_n_u64(0x8000000000000000ULL));
    float64x2_t live_weight = vreinterpretq_f64_u64(veorq_u64(vreinterpretq_u64_f64(weight), sign));
    float64x2_t live_bytes =
        vreinterpretq_f64_u64(veorq_u64(vreinterpretq_u64_f64(weighted_bytes), sign));

    vst1_u32(&out->cell[at], cell);
    vst1_u32(&out->bucket[at], bucket);
    vst1_u32(&out->site[at], site);
    vst1_u32(&out->domain[at], domain);
    vst1q_f64(&out->weight[at], weight);
    vst1q_f64(&out->weighted_bytes[at], weighted_bytes);
    vst1q_f64(&out->live_weight[at], live_weight);
    vst1q_f64(&out->live_bytes[at], live_bytes);

    unsigned alloc_mask = (vget_lane_u32(is_alloc, 0) & 1u) | (vget_lane_u32(is_alloc, 1) & 2u);
    unsigned live_mask = (vget_lane_u32(is_live, 0) & 1u) | (vget_lane_u32(is_live, 1) & 2u);
    unsigned free_mask = (vget_lane_u32(is_free, 0) & 1u) | (vget_lane_u32(is_free, 1) & 2u);
    out->n_allocs = append_positions(out->allocs, out->n_allocs, alloc_mask, at);
    out->n_lives = append_positions(out->lives, out->n_lives, live_mask, at);
    out->n_frees += (size_t)__builtin_popcount(free_mask);
}

static void reduce_neon(const ms_record_t *records, size_t n, ms_summary_t *summary)
{
    decoded_block_t block;
    size_t vec = n & ~(size_t)1;
    for (size_t done = 0; done < vec; done += DECODE_BLOCK) {
        size_t m = vec - done < DECODE_BLOCK ? vec - done : DECODE_BLOCK;
        block.n_allocs = block.n_lives = block.n_frees = 0;
        for (size_t i = 0; i < m; i += 2)
            decode2_neon(records + done + i, &block, (uint32_t)i);
        accumulate_block(&block, summary);
    }
    uint64_t before = summary->records;
    ms_reduce_scalar(records + vec, n - vec, summary);
    summary->records = before + n;
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

void ms_reduce_simd(const ms_record_t *records, size_t n, ms_summary_t *summary)
{
#if defined(MS_REDUCE_HAVE_AVX2)
    if (ms_reduce_simd_available()) {
        reduce_avx2(records, n, summary);
        return;
    }
#elif defined(MS_REDUCE_HAVE_NEON)
    reduce_neon(records, n, summary);
    return;
#endif
    ms_reduce_scalar(records, n, summary);
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
