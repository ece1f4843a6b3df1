/*
 * reduce.c: records -> cumulative Horvitz-Thompson summary (ms_summary_t).
 *
 * Two halves per path:
 *   decode      per record: event kind, domain, size class, log2 bucket, clamped site id, the
 *               weight w as a double and the product w * size as a double;
 *   accumulate  add those values into the summary's accumulators.
 *
 * Reproducibility (the SIMD and scalar paths give bit-identical summaries): every accumulator is a
 * left fold of its contributions in record order, and both paths share one accumulate function
 * (ms_accumulate below), so they perform the same floating-point additions in the same order.
 * Only the decode is vectorized, and each decoded value is the exact same IEEE result as its scalar
 * twin: float -> double is exact; uint64 -> double is rounded once to nearest (the AVX2 path builds
 * it from two exact 32-bit halves and one rounding addition; NEON's UCVTF rounds once to nearest);
 * w * size is one IEEE multiplication in both; the bucket is integer arithmetic. No fused
 * multiply-add can appear: the build is -std=c11, under which GCC and clang do not contract
 * (-ffp-contract=off), and the only arithmetic on the accumulate side is a lone add or subtract.
 *
 * Why the accumulation stays scalar: it is a scatter-add into tables indexed by domain, class,
 * bucket and site; AVX2 has no scatter, and reordering the additions to vectorize them would break
 * the reproducibility promise above. Vectors carry the decode, which is the arithmetic-heavy part
 * of the scalar loop (branchy uint64 -> double conversions, clz, field extraction, clamping).
 *
 * Robustness: records may come from a corrupt dump. A site id >= MS_MAX_IDS is folded into the
 * "<overflow>" id of its domain; size class 3 (unused) counts as large; event kind 3 (unused)
 * contributes only to summary->records. Any bit pattern of weight and size is just arithmetic.
 * Null per-id arrays are skipped.
 */
#include "memscope.h"

#include <stdatomic.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MS_REDUCE_HAVE_AVX2 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define MS_REDUCE_HAVE_NEON 1
#endif

_Static_assert(sizeof(ms_record_t) == 32, "ms_record_t must be 32 bytes");

/* What a decoded record does to the summary. */
enum {
    KIND_IGNORE = 0,       /* event kind 3: counted in records only */
    KIND_ALLOC = 1,        /* allocation that enters the live estimate */
    KIND_ALLOC_NOLIVE = 2, /* allocation left out of the live estimate (MS_FLAG_NOLIVE) */
    KIND_FREE = 3,
};

/* Records decoded per block before accumulating: small enough for the stack, large enough that
 * the vector decode runs in a tight loop of its own. A multiple of every vector width used. */
#define DECODE_BLOCK 128

typedef struct {
    uint8_t kind[DECODE_BLOCK];
    uint8_t domain[DECODE_BLOCK];
    uint8_t size_class[DECODE_BLOCK];
    uint8_t bucket[DECODE_BLOCK];
    uint32_t site[DECODE_BLOCK];
    double weight[DECODE_BLOCK];
    double weighted_bytes[DECODE_BLOCK];
} decoded_block_t;

static unsigned kind_of(unsigned flags)
{
    unsigned event = (flags & MS_FLAG_EVENT_MASK) >> MS_FLAG_EVENT_SHIFT;
    if (event == MS_EVENT_FREE)
        return KIND_FREE;
    if (event == MS_EVENT_ALLOC || event == MS_EVENT_REALLOC)
        return (flags & MS_FLAG_NOLIVE) ? KIND_ALLOC_NOLIVE : KIND_ALLOC;
    return KIND_IGNORE;
}

static unsigned bucket_of(uint64_t size)
{
    return size <= 1 ? 0u : 64u - (unsigned)__builtin_clzll(size - 1);
}

static void decode_scalar(const ms_record_t *records, size_t n, decoded_block_t *out)
{
    for (size_t i = 0; i < n; i++) {
        const ms_record_t *r = &records[i];
        unsigned flags = r->flags;
        unsigned domain = flags & MS_FLAG_DOMAIN_MASK;
        unsigned size_class = (flags & MS_FLAG_CLASS_MASK) >> MS_FLAG_CLASS_SHIFT;
        double weight = (double)r->weight;
        out->kind[i] = (uint8_t)kind_of(flags);
        out->domain[i] = (uint8_t)domain;
        out->size_class[i] = (uint8_t)(size_class < MS_CLASSES ? size_class : MS_CLASSES - 1);
        out->bucket[i] = (uint8_t)bucket_of(r->size);
        out->site[i] = r->site < MS_MAX_IDS ? r->site : MS_ID_OVERFLOW + domain;
        out->weight[i] = weight;
        out->weighted_bytes[i] = weight * (double)r->size;
    }
}

/* The one accumulate step both paths share (see the top comment). */
static void accumulate(const decoded_block_t *b, size_t n, ms_summary_t *s)
{
    double *id_count = s->id_count, *id_bytes = s->id_bytes, *id_live = s->id_live_bytes;
    uint64_t free_records = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = b->domain[i], site = b->site[i];
        double w = b->weight[i], wb = b->weighted_bytes[i];
        switch (b->kind[i]) {
        case KIND_ALLOC:
            s->live_bytes[d] += wb;
            s->live_count[d] += w;
            if (id_live)
                id_live[site] += wb;
            /* fall through */
        case KIND_ALLOC_NOLIVE:
            s->count[d][b->size_class[i]] += w;
            s->bytes[d][b->size_class[i]] += wb;
            s->bucket_count[d][b->bucket[i]] += w;
            if (id_count)
                id_count[site] += w;
            if (id_bytes)
                id_bytes[site] += wb;
            break;
        case KIND_FREE:
            s->live_bytes[d] -= wb;
            s->live_count[d] -= w;
            if (id_live)
                id_live[site] -= wb;
            free_records++;
            break;
        default:
            break;
        }
    }
    s->free_records += free_records;
}

void ms_reduce_scalar(const ms_record_t *records, size_t n, ms_summary_t *summary)
{
    decoded_block_t block;
    for (size_t done = 0; done < n; done += DECODE_BLOCK) {
        size_t m = n - done < DECODE_BLOCK ? n - done : DECODE_BLOCK;
        decode_scalar(records + done, m, &block);
        accumulate(&block, m, summary);
    }
    summary->records += n;
}

#if defined(MS_REDUCE_HAVE_AVX2)

/* Decodes 4 records with AVX2 into out[at .. at+3]. */
__attribute__((target("avx2"))) static void decode4_avx2(const ms_record_t *r, decoded_block_t *out,
                                                          size_t at)
{
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

    /* weight: low dword of each q3 lane, float -> double (exact). */
    __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m128 weight_f = _mm256_castps256_ps128(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(q3, pick_low)));
    __m256d weight = _mm256_cvtps_pd(weight_f);

    /* size -> double, rounded once: (2^84 + hi*2^32) - (2^84 + 2^52) is exact, then adding
     * (2^52 + lo) rounds the exact hi*2^32 + lo once to nearest, as the C conversion does. */
    __m256d lo_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(size, low32), exp52));
    __m256d hi_d = _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(size, 32), exp84));
    __m256d size_d = _mm256_add_pd(
        _mm256_sub_pd(hi_d, _mm256_set1_pd(19342813118337666422669312.0 /* 2^84 + 2^52 */)),
        lo_d);
    __m256d weighted_bytes = _mm256_mul_pd(weight, size_d);

    /* bucket = 0 for size <= 1, else floor(log2(size - 1)) + 1, from the exponent of each 32-bit
     * half converted exactly to double. */
    __m256i x = _mm256_sub_epi64(size, _mm256_set1_epi64x(1));
    __m256i hi = _mm256_srli_epi64(x, 32);
    __m256i lo = _mm256_and_si256(x, low32);
    __m256i hi_exp = _mm256_srli_epi64(
        _mm256_castpd_si256(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(hi, exp52)), two52)),
        52);
    __m256i lo_exp = _mm256_srli_epi64(
        _mm256_castpd_si256(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(lo, exp52)), two52)),
        52);
    __m256i zero = _mm256_setzero_si256();
    __m256i hi_is_zero = _mm256_cmpeq_epi64(hi, zero);
    /* hi != 0: 33 + (hi_exp - 1023); hi == 0: 1 + (lo_exp - 1023) (lo >= 1 here). */
    __m256i bucket = _mm256_blendv_epi8(_mm256_sub_epi64(hi_exp, _mm256_set1_epi64x(990)),
                                        _mm256_sub_epi64(lo_exp, _mm256_set1_epi64x(1022)),
                                        hi_is_zero);
    __m256i tiny = _mm256_cmpeq_epi64(_mm256_srli_epi64(size, 1), zero); /* size <= 1 */
    bucket = _mm256_andnot_si256(tiny, bucket);

    /* flags and site */
    __m256i flags = _mm256_and_si256(_mm256_srli_epi64(q3, 32), _mm256_set1_epi64x(0xFFFF));
    __m256i domain = _mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_DOMAIN_MASK));
    __m256i event = _mm256_srli_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_EVENT_MASK)),
                                      MS_FLAG_EVENT_SHIFT);
    __m256i size_class = _mm256_min_epu32(
        _mm256_srli_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_CLASS_MASK)),
                          MS_FLAG_CLASS_SHIFT),
        _mm256_set1_epi64x(MS_CLASSES - 1));
    __m256i site = _mm256_srli_epi64(q2, 32);
    __m256i site_bad = _mm256_cmpgt_epi64(site, _mm256_set1_epi64x(MS_MAX_IDS - 1));
    site = _mm256_blendv_epi8(site, _mm256_add_epi64(domain, _mm256_set1_epi64x(MS_ID_OVERFLOW)),
                              site_bad);

    /* kind: free -> 3, alloc/realloc -> 1 or 2 (NOLIVE), event 3 -> 0 */
    __m256i is_free = _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(MS_EVENT_FREE));
    __m256i is_ignored = _mm256_cmpeq_epi64(event, _mm256_set1_epi64x(3));
    __m256i nolive = _mm256_srli_epi64(_mm256_and_si256(flags, _mm256_set1_epi64x(MS_FLAG_NOLIVE)), 6);
    __m256i kind = _mm256_add_epi64(_mm256_set1_epi64x(KIND_ALLOC), nolive);
    kind = _mm256_blendv_epi8(kind, _mm256_set1_epi64x(KIND_FREE), is_free);
    kind = _mm256_andnot_si256(is_ignored, kind);

    /* Narrow the four small fields (each < 256) into one byte per lane: pack kind, domain,
     * class and bucket into the low bytes of 32-bit words, then store. */
    uint64_t k[4], d[4], c[4], bk[4], st[4];
    _mm256_storeu_si256((__m256i *)(void *)k, kind);
    _mm256_storeu_si256((__m256i *)(void *)d, domain);
    _mm256_storeu_si256((__m256i *)(void *)c, size_class);
    _mm256_storeu_si256((__m256i *)(void *)bk, bucket);
    _mm256_storeu_si256((__m256i *)(void *)st, site);
    for (int j = 0; j < 4; j++) {
        out->kind[at + j] = (uint8_t)k[j];
        out->domain[at + j] = (uint8_t)d[j];
        out->size_class[at + j] = (uint8_t)c[j];
        out->bucket[at + j] = (uint8_t)bk[j];
        out->site[at + j] = (uint32_t)st[j];
    }
    _mm256_storeu_pd(&out->weight[at], weight);
    _mm256_storeu_pd(&out->weighted_bytes[at], weighted_bytes);
}

__attribute__((target("avx2"))) static void reduce_avx2(const ms_record_t *records, size_t n,
                                                         ms_summary_t *summary)
{
    decoded_block_t block;
    for (size_t done = 0; done < n; done += DECODE_BLOCK) {
        size_t m = n - done < DECODE_BLOCK ? n - done : DECODE_BLOCK;
        size_t vec = m & ~(size_t)3;
        for (size_t i = 0; i < vec; i += 4)
            decode4_avx2(records + done + i, &block, i);
        if (vec < m) {
            /* tail of fewer than 4 records: decode into a scratch block, copy in */
            decoded_block_t tail;
            decode_scalar(records + done + vec, m - vec, &tail);
            for (size_t j = 0; j < m - vec; j++) {
                block.kind[vec + j] = tail.kind[j];
                block.domain[vec + j] = tail.domain[j];
                block.size_class[vec + j] = tail.size_class[j];
                block.bucket[vec + j] = tail.bucket[j];
                block.site[vec + j] = tail.site[j];
                block.weight[vec + j] = tail.weight[j];
                block.weighted_bytes[vec + j] = tail.weighted_bytes[j];
            }
        }
        accumulate(&block, m, summary);
    }
    summary->records += n;
}

#endif /* MS_REDUCE_HAVE_AVX2 */

#if defined(MS_REDUCE_HAVE_NEON)

/* Decodes 2 records with NEON into out[at], out[at+1]. */
static void decode2_neon(const ms_record_t *r, decoded_block_t *out, size_t at)
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
    uint32x2_t hi_zero = vceq_u32(hi, vdup_n_u32(0));
    uint32x2_t bucket = vbsl_u32(hi_zero, from_lo, from_hi);
    uint32x2_t tiny = vmovn_u64(vceqq_u64(vshrq_n_u64(size, 1), vdupq_n_u64(0)));
    bucket = vbic_u32(bucket, tiny);

    uint32x2_t flags = vand_u32(vshrn_n_u64(q.val[3], 32), vdup_n_u32(0xFFFF));
    uint32x2_t domain = vand_u32(flags, vdup_n_u32(MS_FLAG_DOMAIN_MASK));
    uint32x2_t event = vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_EVENT_MASK)), MS_FLAG_EVENT_SHIFT);
    uint32x2_t size_class = vmin_u32(
        vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_CLASS_MASK)), MS_FLAG_CLASS_SHIFT),
        vdup_n_u32(MS_CLASSES - 1));
    uint32x2_t site = vshrn_n_u64(q.val[2], 32);
    uint32x2_t site_bad = vcgt_u32(site, vdup_n_u32(MS_MAX_IDS - 1));
    site = vbsl_u32(site_bad, vadd_u32(domain, vdup_n_u32(MS_ID_OVERFLOW)), site);

    uint32x2_t nolive = vshr_n_u32(vand_u32(flags, vdup_n_u32(MS_FLAG_NOLIVE)), 6);
    uint32x2_t kind = vadd_u32(vdup_n_u32(KIND_ALLOC), nolive);
    kind = vbsl_u32(vceq_u32(event, vdup_n_u32(MS_EVENT_FREE)), vdup_n_u32(KIND_FREE), kind);
    kind = vbic_u32(kind, vceq_u32(event, vdup_n_u32(3)));

    uint32_t k[2], d[2], c[2], bk[2], st[2];
    vst1_u32(k, kind);
    vst1_u32(d, domain);
    vst1_u32(c, size_class);
    vst1_u32(bk, bucket);
    vst1_u32(st, site);
    for (int j = 0; j < 2; j++) {
        out->kind[at + j] = (uint8_t)k[j];
        out->domain[at + j] = (uint8_t)d[j];
        out->size_class[at + j] = (uint8_t)c[j];
        out->bucket[at + j] = (uint8_t)bk[j];
        out->site[at + j] = st[j];
    }
    vst1q_f64(&out->weight[at], weight);
    vst1q_f64(&out->weighted_bytes[at], weighted_bytes);
}

static void reduce_neon(const ms_record_t *records, size_t n, ms_summary_t *summary)
{
    decoded_block_t block;
    for (size_t done = 0; done < n; done += DECODE_BLOCK) {
        size_t m = n - done < DECODE_BLOCK ? n - done : DECODE_BLOCK;
        size_t vec = m & ~(size_t)1;
        for (size_t i = 0; i < vec; i += 2)
            decode2_neon(records + done + i, &block, i);
        if (vec < m) {
            decoded_block_t tail;
            decode_scalar(records + done + vec, 1, &tail);
            block.kind[vec] = tail.kind[0];
            block.domain[vec] = tail.domain[0];
            block.size_class[vec] = tail.size_class[0];
            block.bucket[vec] = tail.bucket[0];
            block.site[vec] = tail.site[0];
            block.weight[vec] = tail.weight[0];
            block.weighted_bytes[vec] = tail.weighted_bytes[0];
        }
        accumulate(&block, m, summary);
    }
    summary->records += n;
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
