"""Microbenchmark: nanoseconds that a tracker adds to one alloc+free pair.

Side by side in one run: no tracker, tracemalloc (1 frame), memscope at default settings, and
memscope with sampling off (the unsampled fast path alone). The pairs are made by C loops
(benchmarks/_native.py) so that the loop itself costs a few ns, timed with the thread CPU clock
(time spent descheduled on a busy machine does not count; wall time is printed too).
Trackers run interleaved, round by round in rotated order (ABCD, BCDA, ...); each round gives a
difference to the untracked run of the same round, and the table shows the median difference and
its interquartile range.

Then the sampled path: memscope samples every allocation (rates 1) and each allocation and free
call is timed on its own; the 99th percentile of those calls (site capture, live table, record,
plus the allocator itself and a clock read) is what the 1 µs target bounds. It is measured twice:
from this script's shallow stack, and from a call 30 Python frames deep (MAX_STACK_DEPTH at its
default, 64: the whole stack is read and interned on every sampled call).

    python benchmarks/micro.py            # full run (a few minutes on 2 busy cores)
    python benchmarks/micro.py --quick    # < 60 s
"""
import argparse
import time

import _common
from _common import SAMPLE_ALL, Tracker, median, quantile, rotated, standard_trackers
import _native

SMALL = [32, 48, 64, 96, 128, 192, 256, 384, 512]
MEDIUM = [2048, 3072, 4096, 6144, 8000]  # below the 8192 B critical size: medium class
LARGE = [65536, 131072, 262144, 524288, 1048576]  # always sampled (large class)


def python_object_loop(n):
    """A Python-level loop making and dropping one object() per iteration (OBJ domain, no
    freelist): what a pure-Python caller sees, loop overhead included."""
    r = range(n)
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    for _ in r:
        object()
    return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n


def python_bytearray_loop(n, sizes=tuple(range(1024, 8193, 509))):
    """A Python-level loop making and dropping one bytearray of 1-8 KiB per iteration: a small
    object and a medium buffer (which pymalloc hands on to the RAW allocator), as a caller sees
    it, loop overhead included."""
    k = len(sizes)
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    for i in range(n):
        bytearray(sizes[i % k])
    return (time.perf_counter_ns() - t0) / n, (time.thread_time_ns() - c0) / n


def cases(loops, quick):
    """(label, callable returning (wall ns, cpu ns) per pair)."""
    scale = 0.25 if quick else 1.0
    n_small, n_medium, n_large, n_py = (int(x * scale) for x in (1_000_000, 300_000, 4_000, 1_000_000))
    small, medium, large = loops.sizes(SMALL), loops.sizes(MEDIUM), loops.sizes(LARGE)
    return [
        ("small 32-512 B, OBJ, pair", lambda: loops.pairs("obj", small, n_small)),
        ("small 32-512 B, OBJ, bursts of 64", lambda: loops.bursts("obj", small, n_small, 64)),
        ("small 32-512 B, RAW, pair", lambda: loops.pairs("raw", small, n_small)),
        ("medium 2-8 KiB, MEM, pair", lambda: loops.pairs("mem", medium, n_medium)),
        ("large 64 KiB-1 MiB, RAW, pair", lambda: loops.pairs("raw", large, n_large)),
        ("python: object() per iteration", lambda: python_object_loop(n_py)),
        ("python: bytearray(1-8 KiB) per iter", lambda: python_bytearray_loop(n_py // 2)),
    ]


def run_pairs(loops, rounds, quick):
    trackers = standard_trackers()
    table = cases(loops, quick)
    cpu = {(t.name, c): [] for t in trackers for c, _ in table}
    wall = {(t.name, c): [] for t in trackers for c, _ in table}
    for c, fn in table:  # warm-up: allocator arenas, caches, the helper's first call
        fn()
    for r in range(rounds):
        for tracker in rotated(trackers, r):
            tracker.start()
            try:
                for c, fn in table:
                    w, u = fn()
                    wall[(tracker.name, c)].append(w)
                    cpu[(tracker.name, c)].append(u)
            finally:
                tracker.stop()
    return trackers, table, cpu, wall


def print_pairs(trackers, table, cpu, wall, rounds):
    others = [t for t in trackers if t.name != "none"]
    print(f"\nAdded ns per alloc+free pair (thread CPU time; median of {rounds} interleaved rounds, "
          "[p25, p75] of the per-round differences)")
    head = f"{'case':36} {'untracked':>10} " + " ".join(f"{t.name:>26}" for t in others)
    print(head)
    print("-" * len(head))
    for c, _ in table:
        base = cpu[("none", c)]
        cells = []
        for t in others:
            diffs = [a - b for a, b in zip(cpu[(t.name, c)], base)]
            cells.append(f"{median(diffs):+9.1f} [{quantile(diffs, .25):+6.1f},{quantile(diffs, .75):+6.1f}]")
        print(f"{c:36} {median(base):10.1f} " + " ".join(f"{x:>26}" for x in cells))
    print("\nSame, wall-clock ns per pair (medians; inflated by descheduling on a busy machine)")
    for c, _ in table:
        print(f"{c:36} " + " ".join(f"{t.name}={median(wall[(t.name, c)]):.1f}" for t in trackers))


DEEP_FRAMES = 30


def at_depth(frames, fn, *args):
    """fn(*args) called from ``frames`` nested Python frames (this function's own included)."""
    if frames <= 1:
        return fn(*args)
    return at_depth(frames - 1, fn, *args)


def run_latency(loops, rounds, quick):
    """Per-call latency of OBJ small allocations and frees: untracked, memscope sampling every
    allocation, and memscope at default settings."""
    import numpy as np

    import memscope_otel.sampler as sampler

    small = loops.sizes(SMALL)
    # Each sampled pair writes two records (alloc + free): 4000 pairs stay below the default
    # 16384-record ring, and the rings are drained between batches, so nothing is dropped.
    batch = 4000
    batches = 2 if quick else 5
    deep = f"all sampled, {DEEP_FRAMES} deep"
    modes = [Tracker("none", "none"), Tracker("memscope all sampled", "memscope", SAMPLE_ALL),
             Tracker(deep, "memscope", SAMPLE_ALL), Tracker("memscope", "memscope")]
    alloc = {m.name: [] for m in modes}
    free = {m.name: [] for m in modes}
    slow = {name: {"calls": 0, "ns": 0, "dropped": 0} for name in ("memscope all sampled", deep)}
    loops.latency("obj", small, batch)  # warm-up
    for r in range(rounds):
        for mode in rotated(modes, r):
            mode.start()
            try:
                before = sampler.read_counters() if mode.kind == "memscope" else None
                for _ in range(batches):
                    if mode.name == deep:
                        a, f = at_depth(DEEP_FRAMES, loops.latency, "obj", small, batch)
                    else:
                        a, f = loops.latency("obj", small, batch)
                    alloc[mode.name].append(a)
                    free[mode.name].append(f)
                    if mode.handle is not None:
                        mode.handle.drainer.drain()
                if mode.name in slow:
                    after = sampler.read_counters()
                    slow[mode.name]["calls"] += after.slow_path_calls - before.slow_path_calls
                    slow[mode.name]["ns"] += after.slow_path_ns - before.slow_path_ns
                    slow[mode.name]["dropped"] += after.dropped - before.dropped
            finally:
                mode.stop()
    clock = loops.clock_cost()
    print(f"\nPer-call latency, OBJ 32-512 B, ns (each call timed alone; includes one clock read, "
          f"about {clock} ns here); {rounds} rounds x {batches} x {batch} calls per mode")
    qs = [0.5, 0.9, 0.99, 0.999]
    print(f"{'mode':26} {'call':6} " + " ".join(f"{'p%g' % (q * 100):>8}" for q in qs) + f" {'max':>9}")
    result = {}
    for m in modes:
        for label, data in (("malloc", alloc[m.name]), ("free", free[m.name])):
            x = np.concatenate(data)
            values = np.quantile(x, qs)
            result[(m.name, label)] = values
            print(f"{m.name:26} {label:6} " + " ".join(f"{v:8.0f}" for v in values) + f" {x.max():9d}")
    for name, counts in slow.items():
        if counts["calls"]:
            print(f"{name}: {counts['calls']} sampled events, mean {counts['ns'] / counts['calls']:.0f} ns "
                  f"inside the sampled path (C counters slow_path_ns / slow_path_calls), {counts['dropped']} dropped")
    for name in slow:
        p99 = result[(name, "malloc")][2]
        p99f = result[(name, "free")][2]
        verdict = "meets" if max(p99, p99f) <= 1000 else "MISSES"
        print(f"sampled path p99 ({name}): malloc call {p99:.0f} ns, free call {p99f:.0f} ns -> {verdict} the "
              "1 µs target (conservative: the allocator and a clock read are included)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter loops (< 60 s)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 5)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    loops = _native.Loops()
    print("memscope-otel microbenchmark:", _common.machine())
    trackers, table, cpu, wall = run_pairs(loops, rounds, args.quick)
    print_pairs(trackers, table, cpu, wall, rounds)
    small_pair = [a - b for a, b in zip(cpu[("memscope-unsampled", table[0][0])], cpu[("none", table[0][0])])]
    added = median(small_pair)
    print(f"\nunsampled small OBJ pair adds {added:.1f} ns -> "
          f"{'meets' if added <= 5 else 'MISSES'} the 5 ns target")
    run_latency(loops, max(3, rounds // 3), args.quick)


if __name__ == "__main__":
    main()
