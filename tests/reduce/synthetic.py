"""Deterministic synthetic records and dump files for the dump and report tests."""
import numpy as np

from memscope_otel.dump import DumpWriter
from memscope_otel.records import CLASS_SHIFT, EVENT_SHIFT, RECORD_DTYPE
from memscope_otel.sites import MS_FIRST_DYNAMIC_ID as FIRST_DYNAMIC_ID

BASE_US = 1_700_000_000_000_000


def chunk_records(index, n):
    """The records of chunk number ``index``: same output for the same arguments, every field used."""
    rng = np.random.default_rng(index)
    r = np.zeros(n, dtype=RECORD_DTYPE)
    r["address"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    r["size"] = rng.integers(0, 2**64, n, dtype=np.uint64) >> rng.integers(0, 64, n, dtype=np.uint64)
    r["time_delta_us"] = np.sort(rng.integers(0, 2**32, n, dtype=np.uint32))
    r["site"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    r["weight"] = rng.standard_normal(n).astype(np.float32) * 1000
    r["flags"] = rng.integers(0, 2**16, n, dtype=np.uint16)
    r["thread"] = rng.integers(0, 2**16, n, dtype=np.uint16)
    return r


def workload_records(n, seed=0, t0_us=0, span_us=10_000_000, sites=40):
    """Plausible sampler output: allocations and frees from a few sites over a time span."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n, dtype=RECORD_DTYPE)
    cls = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1])
    lo, hi = np.array([1, 1024, 8192])[cls], np.array([1024, 8192, 1 << 22])[cls]
    r["size"] = rng.integers(lo, hi)
    r["weight"] = np.array([1000.0, 20.0, 1.0], dtype=np.float32)[cls]
    r["site"] = FIRST_DYNAMIC_ID + rng.zipf(1.5, n).clip(1, sites)
    event = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1])
    # a site belongs to one domain, as in the sampler: the upper half of the ids are manual-API
    # types, the rest obj/mem/raw sites
    domain = np.where(r["site"] - FIRST_DYNAMIC_ID > sites // 2, 3, (r["site"] - FIRST_DYNAMIC_ID) % 3)
    r["flags"] = domain | (event << EVENT_SHIFT) | (cls << CLASS_SHIFT)
    r["address"] = rng.integers(1, 2**47, n)
    r["time_delta_us"] = t0_us + np.sort(rng.integers(0, span_us, n))
    r["thread"] = rng.integers(0, 4, n)
    return r


def write_workload_dump(path, n_chunks=20, per_chunk=500, sites=40):
    """A dump of a plausible 10-second run with string tables; returns the records written."""
    written = []
    with DumpWriter(path, {"small_sample_rate": 0.001, "medium_sample_rate": 0.05},
                    start_time_us=BASE_US) as w:
        w.write_strings({FIRST_DYNAMIC_ID + i: f"/srv/app/module{i % 5}.py:function_{i}:{10 * i + 3}" for i in range(1, sites // 2 + 1)})
        w.write_strings({FIRST_DYNAMIC_ID + i: f"numpy.ndarray[{i}]" for i in range(sites // 2 + 1, sites + 1)})
        for k in range(n_chunks):
            recs = workload_records(per_chunk, seed=k, span_us=500_000, sites=sites)
            w.write_chunk(BASE_US + k * 500_000, recs)
            written.append(recs)
    return written
