/*
 * follow.c: the workload recognizer's subsample of the record stream.
 *
 * The recognizer (memscope_otel/optimizer) needs the shape of the stream (gaps in time, the
 * sites' shares, how long blocks live), not every record: a program that samples hundreds of
 * thousands of records a second would have it spend more than the drainer. It reads the records
 * of a fixed pseudo-random 1 in 2^level of all addresses, so that a block's allocation and its
 * free are kept or left together, with weights scaled by 2^level so that sums stay unbiased.
 * The hash is ms_followed (internal.h); done here, the copy keeps the GIL (see ms_records_follow).
 */
#include "internal.h"

size_t ms_records_follow(const ms_record_t *in, size_t n, uint32_t level, ms_record_t *out)
{
    if (level > 63)
        level = 63;
    float scale = (float)(1ull << level);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ms_followed(in[i].address, level))
            continue;
        out[kept] = in[i];
        out[kept].weight *= scale;
        kept++;
    }
    return kept;
}
