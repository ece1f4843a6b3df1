"""The C reducers: SIMD and scalar paths bit-identical; both equal to the numpy computation."""
import pathlib
import sys

import numpy as np
import pytest

from memscope_otel.records import FLAG_NOLIVE, RECORD_DTYPE
from memscope_otel.report import numpy_summary

import c_reducer

FFI, LIB = c_reducer.load()
FIELDS = ("count", "bytes", "bucket_count", "live_bytes", "live_count",
          "id_count", "id_bytes", "id_live_bytes")


def random_records(rng, n, extreme=False):
    """Records with every flag combination; extreme=True adds boundary sizes and weights."""
    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["address"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    sizes = rng.integers(0, 1 << 20, n, dtype=np.uint64)
    weights = rng.choice(np.array([1.0, 20.0, 1000.0, 1 / 0.0007, 3.3], dtype=np.float32), n)
    sites = rng.integers(0, 300, n, dtype=np.uint32)
    # domain bits 0-2 (5..7 name no domain: clamped to the last), event 3-4, class 5-6, NOLIVE 7,
    # FREQUENCY 8
    flags = (rng.integers(0, 8, n) | (rng.choice([0, 0, 0, 1, 2, 3], n) << 3)
             | (rng.integers(0, 4, n) << 5) | (rng.integers(0, 2, n) << 7) | (rng.integers(0, 2, n) << 8))
    if extreme:
        special_sizes = np.array([0, 1, 2, 3, 2**32 - 1, 2**32, 2**32 + 1, 2**53 + 1, 2**63,
                                  2**64 - 1, 2**64 - 2, (1 << 63) + 12345, 2**31, 1023, 1024, 1025],
                                 dtype=np.uint64)
        pick = rng.random(n) < 0.5
        sizes[pick] = rng.choice(special_sizes, pick.sum())
        special_w = np.array([0.0, -0.0, 1e-30, 3.4e38, np.inf, -np.inf, np.nan, -1.5, 1e-45],
                             dtype=np.float32)
        pick = rng.random(n) < 0.2
        weights[pick] = rng.choice(special_w, pick.sum())
        pick = rng.random(n) < 0.2
        sites[pick] = rng.choice(np.array([32767, 32768, 2**32 - 1, 40000, 0, 7], dtype=np.uint32),
                                 pick.sum())
        flags = flags | (rng.integers(0, 2, n) << 9) | (rng.integers(0, 128, n) << 9)
    r["size"] = sizes
    r["weight"] = weights
    r["site"] = sites
    r["flags"] = flags.astype(np.uint16)
    r["thread"] = rng.integers(0, 65536, n, dtype=np.uint16)
    r["time_delta_us"] = np.sort(rng.integers(0, 10**6, n, dtype=np.uint32))
    return r


def reduce_with(fn, *batches):
    s = c_reducer.Summary(FFI)
    for batch in batches:
        s.reduce(fn, batch)
    return s.arrays()


def canonical_bits(values):
    """The bit patterns of values, with every NaN replaced by one NaN.

    When both operands of an addition are NaN, IEEE 754 leaves open which one's payload and sign
    the result carries, and compilers swap operands of +; so NaN results are compared as NaN."""
    values = np.where(np.isnan(values), np.nan, values)
    return values.tobytes()


def assert_bit_identical(a, b):
    for field in FIELDS:
        assert canonical_bits(a[field]) == canonical_bits(b[field]), field
    assert a["records"] == b["records"] and a["free_records"] == b["free_records"]


LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 127, 128, 129, 255, 257, 1000, 4099, 8191, 8192, 8193, 16387]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("extreme", [False, True])
def test_simd_and_scalar_are_bit_identical(n, extreme):
    rng = np.random.default_rng(1000 * n + extreme)
    recs = random_records(rng, n, extreme)
    assert_bit_identical(reduce_with(LIB.ms_reduce_simd, recs), reduce_with(LIB.ms_reduce_scalar, recs))


def test_bit_identical_over_many_seeds_and_unaligned_batches():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        recs = random_records(rng, int(rng.integers(1, 3000)), extreme=bool(seed % 2))
        cut = sorted(rng.integers(0, len(recs), 3))
        batches = np.split(recs, cut)
        assert_bit_identical(reduce_with(LIB.ms_reduce_simd, *batches),
                             reduce_with(LIB.ms_reduce_scalar, *batches))


def test_unaligned_record_pointer():
    # records at an address that is not 32-byte aligned (a dump mapped at an odd offset)
    rng = np.random.default_rng(7)
    recs = random_records(rng, 333, extreme=True)
    raw = np.zeros(recs.nbytes + 8, dtype=np.uint8)
    shifted = raw[4:4 + recs.nbytes].view(RECORD_DTYPE)
    shifted[:] = recs
    a = c_reducer.Summary(FFI)
    LIB.ms_reduce_simd(FFI.cast("const ms_record_t *", shifted.ctypes.data), len(shifted), a.c)
    assert_bit_identical(a.arrays(), reduce_with(LIB.ms_reduce_scalar, recs))


@pytest.mark.parametrize("n", [5000, 2 * 8192 + 5])
@pytest.mark.parametrize("extreme", [False, True])
def test_reducer_equals_numpy(n, extreme):
    rng = np.random.default_rng(99 + extreme + n)
    recs = random_records(rng, n, extreme)
    expected = numpy_summary(recs)
    for fn in (LIB.ms_reduce_simd, LIB.ms_reduce_scalar, LIB.ms_reduce):
        got = reduce_with(fn, recs)
        # Same integer block sums, same double additions in the same order: exact agreement
        # (NaN, from out-of-bounds weights, compares equal to NaN).
        for field in FIELDS:
            np.testing.assert_array_equal(got[field], expected[field], err_msg=field)
        assert got["records"] == expected["records"] == len(recs)
        assert got["free_records"] == expected["free_records"]


def one_allocation(weight, size, site=9):
    recs = np.zeros(1, dtype=RECORD_DTYPE)
    recs[0] = (1, size, 0, site, weight, 0, 0)
    return recs


@pytest.mark.parametrize("fn", ["ms_reduce_simd", "ms_reduce_scalar"])
def test_fixed_point_rounds_to_nearest_even(fn):
    # w * size * 2^10 = 0.5 rounds to 0, 1.5 to 2, 2.5 to 2 (units of 2^-10 byte);
    # w * 2^24 = 2^13 is exact
    for size, units in [(1, 0), (3, 2), (5, 2), (7, 4)]:
        s = reduce_with(getattr(LIB, fn), one_allocation(2.0 ** -11, size))
        assert s["bytes"][0, 0] == units / 1024 == s["id_bytes"][9]
        assert s["count"][0, 0] == 2.0 ** -11


@pytest.mark.parametrize("fn", ["ms_reduce_simd", "ms_reduce_scalar"])
def test_quantization_error_is_bounded(fn):
    # Every float weight in [0.5, 2^25] is a multiple of 2^-24: counts are exact. Bytes are
    # rounded to 2^-10 byte per record, so the error of a single record is at most 2^-11 byte.
    rng = np.random.default_rng(5)
    recs = np.zeros(2000, dtype=RECORD_DTYPE)
    recs["weight"] = np.exp2(rng.uniform(-1, 25, len(recs))).astype(np.float32)
    recs["size"] = rng.integers(0, 2 ** 14, len(recs))
    recs["site"] = np.arange(len(recs)) + 8  # one record per id: per-id sums are single records
    s = reduce_with(getattr(LIB, fn), recs)
    w = recs["weight"].astype(np.float64)
    exact_bytes = w * recs["size"].astype(np.float64)
    ids = recs["site"]
    np.testing.assert_array_equal(s["id_count"][ids], w)
    assert np.max(np.abs(s["id_bytes"][ids] - exact_bytes)) <= 2.0 ** -11
    assert np.all(np.abs(s["id_live_bytes"][ids] - exact_bytes) <= 2.0 ** -11)


@pytest.mark.parametrize("fn", ["ms_reduce_simd", "ms_reduce_scalar"])
def test_out_of_bounds_weights_take_the_double_route(fn):
    # NaN and infinite weights are not quantized: they show in the sums as before; a weight above
    # 2^25 and a weighted size above 2^39 bytes are added as exact doubles
    for weight, size in [(np.nan, 10), (np.inf, 10), (2.0 ** 26, 3), (1.0, 2 ** 40 + 1)]:
        s = reduce_with(getattr(LIB, fn), one_allocation(weight, size))
        w = float(np.float32(weight))
        np.testing.assert_array_equal(s["count"][0, 0], w)
        np.testing.assert_array_equal(s["bytes"][0, 0], w * float(size))
        np.testing.assert_array_equal(s["id_count"][9], w)
        np.testing.assert_array_equal(s["live_bytes"][0], w * float(size))


def test_batch_split_at_block_boundaries_gives_the_same_summary():
    # blocks restart with each call, so cutting a batch at multiples of 8192 records changes nothing
    recs = random_records(np.random.default_rng(11), 3 * 8192, extreme=True)
    for fn in (LIB.ms_reduce_simd, LIB.ms_reduce_scalar):
        whole = reduce_with(fn, recs)
        split = reduce_with(fn, recs[:8192], recs[8192:16384], recs[16384:])
        assert_bit_identical(whole, split)


def test_semantics_by_hand():
    recs = np.zeros(5, dtype=RECORD_DTYPE)
    # alloc obj small 100 B weight 10 at site 17
    recs[0] = (1, 100, 0, 17, 10.0, 0 | (0 << 3) | (0 << 5), 0)
    # realloc mem medium 2000 B weight 2 at site 18, NOLIVE
    recs[1] = (2, 2000, 0, 18, 2.0, 1 | (2 << 3) | (1 << 5) | FLAG_NOLIVE, 0)
    # free of record 0
    recs[2] = (1, 100, 0, 17, 10.0, 0 | (1 << 3), 0)
    # alloc raw large with a site out of range: folded into <overflow> of raw (id 8 + 2)
    recs[3] = (3, 1 << 20, 0, 99999, 1.0, 2 | (2 << 5), 0)
    # event kind 3: only counted in records
    recs[4] = (4, 5, 0, 19, 1.0, 3 << 3, 0)
    s = reduce_with(LIB.ms_reduce, recs)
    assert s["count"][0, 0] == 10 and s["bytes"][0, 0] == 1000
    assert s["count"][1, 1] == 2 and s["bytes"][1, 1] == 4000
    assert s["count"][2, 2] == 1 and s["bytes"][2, 2] == 1 << 20
    assert s["bucket_count"][0, 7] == 10  # 64 < 100 <= 128
    assert s["bucket_count"][1, 11] == 2  # 1024 < 2000 <= 2048
    assert s["bucket_count"][2, 20] == 1  # exactly 2^20
    assert s["live_bytes"].tolist() == [0.0, 0.0, float(1 << 20), 0.0, 0.0]  # NOLIVE realloc not live
    assert s["live_count"].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert s["id_count"][17] == 10 and s["id_bytes"][18] == 4000 and s["id_live_bytes"][17] == 0
    assert s["id_count"][10] == 1 and s["id_count"][19] == 0
    assert s["records"] == 5 and s["free_records"] == 1


def test_buckets_at_powers_of_two():
    sizes = [0, 1, 2, 3, 4, 5, 2**32, 2**32 + 1, 2**63, 2**63 + 1, 2**64 - 1]
    expected = [0, 0, 1, 2, 2, 3, 32, 33, 63, 64, 64]
    recs = np.zeros(len(sizes), dtype=RECORD_DTYPE)
    recs["size"] = sizes
    recs["weight"] = 1.0
    for fn in (LIB.ms_reduce_simd, LIB.ms_reduce_scalar):
        for size, bucket in zip(sizes, expected):
            one = recs[recs["size"] == size]
            s = reduce_with(fn, one)
            assert s["bucket_count"][0, bucket] == 1.0, (size, bucket)


def unavailable(reason):
    """Skips, or fails under MEMSCOPE_REQUIRE_INTEGRATION=1: the suite's one rule for a missing
    prerequisite, in tests/integration/conftest.py (imported only on the skip path)."""
    tests = str(pathlib.Path(__file__).resolve().parent.parent)
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from integration.conftest import unavailable as integration_unavailable

    integration_unavailable(reason)


def test_use_simd_switch():
    if not LIB.ms_reduce_simd_available():
        unavailable("this CPU has no vector path")
    try:
        LIB.ms_reduce_use_simd(0)
        assert LIB.ms_reduce_simd_active() == 0
        LIB.ms_reduce_use_simd(1)
        assert LIB.ms_reduce_simd_active() == 1
    finally:
        LIB.ms_reduce_use_simd(1)


def test_null_id_arrays_are_skipped():
    recs = random_records(np.random.default_rng(3), 100)
    s = FFI.new("ms_summary_t *")
    LIB.ms_reduce(FFI.cast("const ms_record_t *", recs.ctypes.data), len(recs), s)
    assert s.records == 100
