"""Time of WorkloadRecognizer.sink per drained record, on synthetic batches (not a test).

    python tests/optimizer/sink_cost.py [--records 65536] [--pending]

Default batches: addresses drawn from a pool of 20,000 (so frees find their allocations within
and across batches), half allocations and half frees, 300 sites, 8 threads. With ``--pending``
half of each batch allocates fresh addresses that are never freed, so the pending allocations
grow toward their cap. It prints the best of 5 timeit repeats, after 16 batches of warm-up (the
table growth of the first batches is not the steady state). Run from outside the repository with
PYTHONPATH pointing at another checkout to time that version.
"""
import argparse
import sys
import timeit

import numpy as np

from memscope_otel.optimizer import WorkloadRecognizer
from memscope_otel.records import EVENT_SHIFT, RECORD_DTYPE


def churn_batch(rng, n):
    records = np.zeros(n, RECORD_DTYPE)
    records["address"] = rng.integers(0, 20_000, n).astype(np.uint64) * np.uint64(16) + np.uint64(0x7F00_0000_0000)
    records["time_delta_us"] = np.sort(rng.integers(0, 400_000, n)).astype(np.uint32)
    records["site"] = (rng.integers(0, 300, n).astype(np.uint64) * np.uint64(2654435761) % np.uint64(1 << 32)).astype(np.uint32)
    records["weight"] = 64.0
    records["flags"] = (rng.integers(0, 2, n) << EVENT_SHIFT).astype(np.uint16)
    records["thread"] = rng.integers(0, 8, n).astype(np.uint16)
    return records


def pending_batch(rng, n, k):
    records = churn_batch(rng, n)
    half = n // 2
    records["address"][:half] = ((np.arange(half, dtype=np.uint64) + np.uint64(k * n)) * np.uint64(16)
                                 + np.uint64(0x5500_0000_0000))
    records["flags"][:half] = 0
    return records


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=65536, help="records per batch")
    parser.add_argument("--pending", action="store_true", help="half of each batch is never freed")
    args = parser.parse_args(argv)
    n = args.records
    rng = np.random.default_rng(1)
    batches = [pending_batch(rng, n, k) if args.pending else churn_batch(rng, n) for k in range(64 if args.pending else 8)]
    recognizer = WorkloadRecognizer(clock=lambda: 0.0)
    recognizer.read_budget_per_s = float("inf")  # every record read: the cost of reading, not of skipping
    calls = [0]

    def one():
        recognizer.sink(batches[calls[0] % len(batches)], calls[0] * 400_000)
        calls[0] += 1

    for _ in range(64 if args.pending else 16):
        one()
    number = max(20, 2_000_000 // n)
    best = min(timeit.repeat(one, number=number, repeat=5)) / number
    print(f"{'pending' if args.pending else 'churn'}: sink {best * 1e3:.3f} ms per {n}-record batch = "
          f"{best / n * 1e9:.0f} ns per record; {int(recognizer.window.stats().n_pending)} allocations pending")


if __name__ == "__main__":
    main(sys.argv[1:])
