"""Concurrency benchmark: the per-allocation cost with 1, 2, 4, 8 threads allocating at once.

Each thread runs a C loop of RAW-domain alloc+free pairs (PyMem_RawMalloc/RawFree, 32-512 B)
with the GIL released (cffi releases it; the RAW domain may be called without it), so the
threads really run in parallel up to the number of cores. The cost per pair is each thread's own
CPU time divided by its pairs, which stays meaningful when threads outnumber cores (time spent
descheduled does not count). If the fast path wrote a cache line shared between threads, the
added cost would grow with the number of threads running in parallel; flat means it does not.
Untracked and memscope (default settings) runs are interleaved round by round.

    python benchmarks/threads.py                    # 1 2 4 8 threads
    python benchmarks/threads.py --threads 1 2 4 8 16 --quick
"""
import argparse
import os
import threading
import time

import _common
from _common import Tracker, median, quantile, rotated
import _native

SMALL = [32, 48, 64, 96, 128, 192, 256, 384, 512]


def run_threads(loops, sizes, k, n):
    """k threads, each n pairs; returns ([cpu ns per pair of each thread], aggregate pairs/s)."""
    results = [None] * k
    barrier = threading.Barrier(k + 1)

    def work(i):
        barrier.wait()
        results[i] = loops.pairs("raw", sizes, n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return [cpu for _, cpu in results], k * n / elapsed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter loops (< 60 s)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 9, quick 5)")
    ap.add_argument("--pairs", type=int, help="pairs per thread per run (default 2e6, quick 5e5)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also run tracemalloc(1) (slow: its RAW hook takes the GIL)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 9)
    n = args.pairs or (500_000 if args.quick else 2_000_000)
    loops = _native.Loops()
    sizes = loops.sizes(SMALL)
    trackers = [Tracker("none", "none"), Tracker("memscope", "memscope")]
    if args.tracemalloc:
        trackers.append(Tracker("tracemalloc(1)", "tracemalloc", {"frames": 1}))
    print("memscope-otel thread scaling:", _common.machine())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores usable: up to {cores} threads run in parallel, more are time-sliced")
    run_threads(loops, sizes, 1, n // 4)  # warm-up
    cpu = {}
    rate = {}
    for r in range(rounds):
        for k in args.threads:
            for tracker in rotated(trackers, r):
                n_t = n if tracker.kind != "tracemalloc" else max(1, n // 20)
                tracker.start()
                try:
                    per_thread, throughput = run_threads(loops, sizes, k, n_t)
                finally:
                    tracker.stop()
                cpu.setdefault((tracker.name, k), []).append(median(per_thread))
                rate.setdefault((tracker.name, k), []).append(throughput)
    print(f"\nRAW 32-512 B alloc+free pairs, {n} per thread per run, {rounds} interleaved rounds")
    others = [t for t in trackers if t.name != "none"]
    head = (f"{'threads':>7} {'parallel':>8} {'untracked ns':>12} "
            + " ".join(f"{t.name + ' added ns [p25,p75]':>34}" for t in others)
            + f" {'untracked Mpairs/s':>18} " + " ".join(f"{t.name + ' Mpairs/s':>22}" for t in others))
    print(head)
    print("-" * len(head))
    added_by_k = {}
    for k in args.threads:
        base = cpu[("none", k)]
        cells = []
        for t in others:
            diffs = [a - b for a, b in zip(cpu[(t.name, k)], base)]
            if t.name == "memscope":
                added_by_k[k] = median(diffs)
            cells.append(f"{median(diffs):+8.1f} [{quantile(diffs, .25):+7.1f},{quantile(diffs, .75):+7.1f}]")
        print(f"{k:7d} {min(k, cores):8d} {median(base):12.1f} " + " ".join(f"{c:>34}" for c in cells)
              + f" {median(rate[('none', k)]) / 1e6:18.1f} "
              + " ".join(f"{median(rate[(t.name, k)]) / 1e6:22.1f}" for t in others))
    k0 = args.threads[0]
    print("\nmemscope added ns relative to", k0, "thread(s): "
          + ", ".join(f"{k}: {added_by_k[k] - added_by_k[k0]:+.1f} ns" for k in args.threads))


if __name__ == "__main__":
    main()
