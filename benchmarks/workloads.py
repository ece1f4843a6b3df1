"""Workload benchmark: slowdown of allocation-heavy programs with memscope on (default settings).

Every run is a fresh interpreter (``--child``): it imports everything, warms the program up
untracked, then, when tracked, starts memscope with a MeterProvider whose InMemoryMetricReader
collects once at the end (outside the timed part, timed separately), and times the program.
Tracked and untracked runs alternate (ABAB..., the first mode alternating by round); the ratio is
median(tracked) / median(untracked) per program, and the geometric mean over programs is the
headline figure. Times are process CPU time (every thread, the drainer included) because wall
time on a shared machine mostly measures the neighbours; wall-clock ratios are printed too.

Per program it also prints what dump-size and footprint planning needs: sampled records per
second (32 bytes each in a dump) and the tracker's memory (C footprint counter + the Python
summary arrays + the drain buffer).

    python benchmarks/workloads.py             # 11 rounds (a few minutes)
    python benchmarks/workloads.py --quick     # 3 rounds, shorter programs (< 60 s)
    python benchmarks/workloads.py --instructions   # instruction counts under callgrind
    python benchmarks/workloads.py --in-process     # each program's rounds in one interpreter
    python benchmarks/workloads.py --instructions --counting-only   # exact counters alone

With ``--in-process`` one interpreter per program runs all its rounds, untracked and tracked
alternating (start() before and stop() after each tracked run, which unlinks the hooks): the two
runs of a pair are milliseconds apart instead of seconds, so the drift of a shared machine's speed
(1.5x between minutes here) cancels out of each pair. Both modes then share one heap and the
tracker's imported modules; the fresh-interpreter default keeps them apart.

On a shared machine CPU time itself is noisy (neighbours share caches and cores), so
``--instructions`` runs each program once per mode under ``valgrind --tool=callgrind`` and
compares the instructions executed in the timed part (all threads): a noise-free measure of the
work the tracker adds, blind to cache effects, that needs no quiet machine.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import _common
from _common import geomean, median, quantile
import programs


def _timed(name, scale, tracked, provider, reader, native):
    """One timed run of a program (the interpreter already warmed up); returns its figures. The
    timed part is the program plus, when tracked, one final drain and the recognizer's read of
    it: the tracker's whole work on the records."""
    import gc

    out = {"name": name, "tracked": tracked}
    warm = max(1, scale // 10)
    if tracked:
        import memscope_otel
        import memscope_otel.sampler as sampler
        from memscope_otel.summary import MAX_IDS

        # One-time costs of the tracker (start, rings, first sites, lazy imports on the first
        # drain) are timed apart: the ratio is about the steady state of a long-lived process.
        s0 = time.process_time()
        tracker = memscope_otel.start(meter_provider=provider)
        programs.run(name, warm)
        tracker.drainer.drain()
        out["startup_cpu_s"] = time.process_time() - s0
        before = sampler.read_counters()
    else:
        programs.run(name, warm)  # the same second warm-up, untracked
    gc.collect()
    native.bench_callgrind_toggle()  # no-op outside callgrind
    w0, c0 = time.perf_counter(), time.process_time()
    programs.run(name, scale)
    if tracked:
        tracker.drainer.drain()  # (the recognizer's window is given what it takes, in C)
    out["wall_s"] = time.perf_counter() - w0
    out["cpu_s"] = time.process_time() - c0
    native.bench_callgrind_toggle()
    if tracked:
        after = sampler.read_counters()
        t0 = time.perf_counter()
        data = reader.get_metrics_data()
        out["collect_s"] = time.perf_counter() - t0
        out["points"] = sum(len(m.data.data_points) for rm in data.resource_metrics
                            for sm in rm.scope_metrics for m in sm.metrics)
        out["allocations"] = int(after.allocations.sum() - before.allocations.sum())
        out["samples"] = after.samples - before.samples
        out["dropped"] = after.dropped - before.dropped
        out["slow_ns"] = after.slow_path_ns - before.slow_path_ns
        out["slow_calls"] = after.slow_path_calls - before.slow_path_calls
        out["c_footprint"] = after.footprint_bytes
        out["threads_live"] = after.threads_live
        out["ids_used"] = after.ids_used
        out["py_summary"] = MAX_IDS * 3 * 8
        out["drain_buffer"] = tracker.drainer._buffer.array.nbytes
        memscope_otel.stop()
    return out


def child(name, scale, tracked, rounds=0):
    """In this (fresh) interpreter: imports everything, warms the program up untracked, then
    prints the JSON figures of one timed run (``rounds`` = 0), or of ``rounds`` pairs of runs,
    untracked and tracked alternating, in one process (``--in-process``)."""
    import _native

    _, native = _native.load()

    import numpy  # noqa: F401 - imported by every run alike, tracked or not
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    programs.run(name, max(1, scale // 10))  # warm-up: imports, caches, regex compilation
    if not rounds:
        print(json.dumps(_timed(name, scale, tracked, provider, reader, native)))
        return
    runs = []
    for r in range(rounds):
        for mode in ((False, True) if r % 2 == 0 else (True, False)):
            runs.append(_timed(name, scale, mode, provider, reader, native))
    print(json.dumps(runs))


def run_child(name, scale, tracked, callgrind_out=None, rounds=0):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--scale", str(scale)]
    if tracked:
        cmd.append("--tracked")
    if rounds:
        cmd += ["--child-rounds", str(rounds)]
    env = dict(os.environ)
    if callgrind_out:
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               f"--callgrind-out-file={callgrind_out}"] + cmd
        # Under valgrind the program runs ~50x slower: a 200 ms drain period would drain 50x
        # more often per unit of work than in reality. Drain once, at the end, instead.
        env["OTEL_PYTHON_MEMSCOPE_DRAIN_INTERVAL_MS"] = "60000"
        # The same string hashes in both runs: dict probe lengths otherwise differ between two
        # interpreters by a few tenths of a percent of all instructions, either way.
        env["PYTHONHASHSEED"] = "0"
    return _common.run_json_child(cmd, f"{name} (tracked={tracked})", env)


def instructions(path):
    """Total instructions (Ir) in a callgrind output file."""
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no instruction total in {path}")


def main_instructions(names, factor):
    if not shutil.which("valgrind"):
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    print("memscope-otel workload benchmark, instructions under callgrind:", _common.machine())
    print(f"\n{'program':16} {'untracked Ir':>14} {'tracked Ir':>14} {'ratio':>7} {'allocations':>12} "
          f"{'added Ir/alloc':>14} {'records':>8}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            scale = max(1, int(programs.SCALE[n] * factor))
            ir = {}
            for tracked in (False, True):
                out = os.path.join(tmp, f"{n}.{int(tracked)}.cg")
                res = run_child(n, scale, tracked, out)
                ir[tracked] = instructions(out)
            ratio = ir[True] / ir[False]
            ratios.append(ratio)
            print(f"{n:16} {ir[False]:14d} {ir[True]:14d} {ratio:7.3f} {res['allocations']:12d} "
                  f"{(ir[True] - ir[False]) / max(1, res['allocations']):14.1f} {res['samples']:8d}", flush=True)
    g = geomean(ratios)
    print(f"\ngeometric mean instruction ratio: {g:.3f}x "
          "(instructions only: cache misses and stalls are not in it; time ratios are the target)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, help="tracked/untracked pairs per program (default 11, quick 3)")
    ap.add_argument("--counting-only", action="store_true",
                    help="track with every sampling path off (no rate, no frequency slot, no block "
                         "large enough to be always sampled): what the exact counters cost alone")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions under callgrind instead of timing (one run per mode)")
    ap.add_argument("--in-process", action="store_true",
                    help="run each program's rounds in one interpreter (minutes apart become "
                         "milliseconds apart: the machine's drift cancels out of each pair)")
    ap.add_argument("--only", nargs="+", choices=sorted(programs.PROGRAMS), help="run only these programs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tracked", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-rounds", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.scale, args.tracked, args.child_rounds)
        return
    if args.counting_only:  # the children read their settings from the environment
        os.environ.update({
            "OTEL_PYTHON_MEMSCOPE_SMALL_SAMPLE_RATE": "0", "OTEL_PYTHON_MEMSCOPE_MEDIUM_SAMPLE_RATE": "0",
            "OTEL_PYTHON_MEMSCOPE_FREQUENCY_SAMPLE_INTERVAL": "0",
            "OTEL_PYTHON_MEMSCOPE_CRITICAL_SIZE_THRESHOLD": str(2**40)})
        print("counting only: every sampling path off (OTEL_PYTHON_MEMSCOPE_* set for the runs)")
    rounds = args.rounds or (3 if args.quick else 11)
    names = args.only or list(programs.PROGRAMS)
    factor = 0.5 if args.quick else 1.0
    if args.instructions:
        main_instructions(names, 0.1 if args.quick else 0.25)
        return
    print("memscope-otel workload benchmark:", _common.machine())
    runs = {(n, m): [] for n in names for m in (False, True)}
    if args.in_process:
        for n in names:
            scale = max(1, int(programs.SCALE[n] * factor))
            for run in run_child(n, scale, False, rounds=rounds):
                runs[(n, run["tracked"])].append(run)
        how = ("rounds in one interpreter per program (start() and stop() around each tracked run); "
               "ratio = median of the round-by-round ratios")
    else:
        for r in range(rounds):
            for n in names:
                scale = max(1, int(programs.SCALE[n] * factor))
                for tracked in ((False, True) if r % 2 == 0 else (True, False)):
                    runs[(n, tracked)].append(run_child(n, scale, tracked))
        how = "interleaved rounds, a fresh interpreter per run; ratio = median(tracked) / median(untracked)"
    print(f"\n{rounds} {how}; [p25, p75] of the round-by-round ratios")
    head = (f"{'program':16} {'untracked s':>11} {'tracked s':>9} {'ratio cpu':>9} {'[p25, p75]':>15} "
            f"{'ratio wall':>10} {'allocs/s':>10} {'records/s':>10} {'dropped':>7} {'sampled ns':>10} "
            f"{'footprint KiB':>13} {'collect ms':>10} {'start ms':>8}")
    print(head)
    print("-" * len(head))
    cpu_ratios, wall_ratios = [], []
    for n in names:
        base, tr = runs[(n, False)], runs[(n, True)]
        paired = [t["cpu_s"] / b["cpu_s"] for t, b in zip(tr, base)]
        if args.in_process:  # the two runs of a round are milliseconds apart: compare within rounds
            ratio = median(paired)
            wall = median([t["wall_s"] / b["wall_s"] for t, b in zip(tr, base)])
        else:
            ratio = median([x["cpu_s"] for x in tr]) / median([x["cpu_s"] for x in base])
            wall = median([x["wall_s"] for x in tr]) / median([x["wall_s"] for x in base])
        cpu_ratios.append(ratio)
        wall_ratios.append(wall)
        allocs = median([x["allocations"] / x["cpu_s"] for x in tr])
        rec = median([x["samples"] / x["cpu_s"] for x in tr])
        dropped = sum(x["dropped"] for x in tr)
        slow = sum(x["slow_ns"] for x in tr) / max(1, sum(x["slow_calls"] for x in tr))
        foot = max(x["c_footprint"] + x["py_summary"] + x["drain_buffer"] for x in tr) / 1024
        collect = median([x["collect_s"] for x in tr]) * 1000
        startup = median([x["startup_cpu_s"] for x in tr]) * 1000
        print(f"{n:16} {median([x['cpu_s'] for x in base]):11.3f} {median([x['cpu_s'] for x in tr]):9.3f} "
              f"{ratio:9.3f} [{quantile(paired, .25):6.3f},{quantile(paired, .75):6.3f}] {wall:10.3f} "
              f"{allocs:10.3g} {rec:10.3g} {dropped:7d} {slow:10.0f} {foot:13.0f} {collect:10.1f} {startup:8.1f}")
    g = geomean(cpu_ratios)
    print(f"\ngeometric mean slowdown: {g:.3f}x (CPU time), {geomean(wall_ratios):.3f}x (wall) -> "
          f"{'meets' if g <= 1.03 else 'MISSES'} the 1.03x target")
    print("records/s x 32 B = dump bytes per second of CPU; footprint = C rings, thread states and live "
          "table (counter footprint_bytes) + summary arrays (MAX_IDS x 3 x 8 B) + drain buffer; "
          "start ms = CPU time of start() plus a tracked warm-up and its drain, outside the ratio; "
          "sampled ns = mean time inside the sampled path (slow_path_ns / slow_path_calls; wall clock, a timed "
          "event counted 100 us at most, so a busy machine's preemptions still lift it a little)")


if __name__ == "__main__":
    main()
