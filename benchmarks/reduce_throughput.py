"""Reducer throughput, records per second: the SIMD path, the scalar path and numpy, side by side.

    python benchmarks/reduce_throughput.py [--records 1000000] [--repeat 7]

The records imitate a drained batch at default settings: mostly small obj/mem allocations from a
few hundred sites, about a third of them frees, weights 1000 / 20 / 1. Each path reduces the same
array into a fresh summary; the best of --repeat runs is reported. Times are the thread's CPU time
(time.thread_time), so that a shared, oversubscribed machine does not count the time this process
waited for a core; all three paths run on one thread.
"""
import argparse
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reduce"))

from memscope_otel.records import RECORD_DTYPE  # noqa: E402
from memscope_otel.report import numpy_summary  # noqa: E402

import c_reducer  # noqa: E402


def realistic_records(n, seed=0):
    """A batch shaped like the sampler's output at default settings."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, dtype=RECORD_DTYPE)
    size_class = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1])
    lo = np.array([1, 1024, 8192])[size_class]
    hi = np.array([1024, 8192, 1 << 22])[size_class]
    r["size"] = rng.integers(lo, hi)
    r["weight"] = np.array([1000.0, 20.0, 1.0], dtype=np.float32)[size_class]
    r["site"] = rng.zipf(1.3, n).clip(1, 400) + 7
    event = rng.choice([0, 1, 2], n, p=[0.6, 0.35, 0.05])
    domain = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.3, 0.15, 0.05])
    r["flags"] = domain | (event << 2) | (size_class << 4)
    r["address"] = rng.integers(0, 2**47, n)
    r["time_delta_us"] = np.sort(rng.integers(0, 100_000, n))
    r["thread"] = rng.integers(0, 8, n)
    return r


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    ffi, lib = c_reducer.load()
    records = realistic_records(args.records)
    ptr = ffi.cast("const ms_record_t *", records.ctypes.data)

    def c_path(fn):
        return lambda: fn(ptr, len(records), c_reducer.Summary(ffi).c)

    paths = {
        "simd": c_path(lib.ms_reduce_simd),
        "scalar": c_path(lib.ms_reduce_scalar),
        "numpy": lambda: numpy_summary(records),
    }
    # same answer from every path before timing anything
    simd = c_reducer.Summary(ffi).reduce(lib.ms_reduce_simd, records).arrays()
    scalar = c_reducer.Summary(ffi).reduce(lib.ms_reduce_scalar, records).arrays()
    ref = numpy_summary(records)
    for field in ("count", "bytes", "bucket_count", "live_bytes", "id_bytes", "id_live_bytes"):
        assert simd[field].tobytes() == scalar[field].tobytes(), field
        np.testing.assert_array_equal(simd[field], ref[field])

    # The summary allocation (3 x 256 KiB per-id arrays) is inside the C timings; it is small
    # against 1M records and keeps every run starting from a zeroed summary like numpy's.
    rates = {name: args.records / best_time(fn, args.repeat) for name, fn in paths.items()}
    simd_note = "vector path: " + (platform.machine() if lib.ms_reduce_simd_available() else "none, scalar fallback")
    print(f"reducer throughput, {args.records:,} records, best of {args.repeat} ({simd_note}; {cpu_model()})")
    for name, rate in rates.items():
        print(f"  {name:7s} {rate / 1e6:9.1f} M records per CPU second")
    print(f"  simd/numpy  {rates['simd'] / rates['numpy']:6.2f}x   (target >= 4x)")
    print(f"  simd/scalar {rates['simd'] / rates['scalar']:6.2f}x   (target >= 2x)")


if __name__ == "__main__":
    main()
