"""Background benchmark: what the tracker's own threads cost a busy application.

The mover (a native thread that never takes the GIL; the workload recognizer's window is given
the records in it) and the drainer run beside the application. Their CPU time is the direct
cost; the indirect one is the GIL: every time the drainer comes back from C (which gives the
GIL up) it must take the GIL back from the application's thread, which the interpreter forces
to switch (the voluntary context switches of the application's thread count these handoffs).

Each program of ``benchmarks/programs.py`` runs in a loop for ``--seconds`` in one interpreter,
untracked and then with memscope at its default settings (drains every 200 ms, recognizer on);
printed per program: the application thread's CPU, each tracker thread's CPU as a percentage of
it, and the application thread's context switches per second in both modes. Linux only (reads
/proc/thread-self/status).

    python benchmarks/background.py                 # 5 s per program and mode
    python benchmarks/background.py --seconds 2 --only text_tokenize
"""
import argparse
import json
import os
import sys
import time

import _common
import programs


def _switches():
    """Voluntary context switches of the calling thread so far."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise RuntimeError("no voluntary_ctxt_switches in /proc/thread-self/status")


def _thread_cpu(thread):
    """CPU seconds of another thread of this process (0 for None)."""
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def child(name, seconds, tracked):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import numpy  # noqa: F401 - imported in both modes alike

    programs.run(name, max(1, programs.SCALE[name] // 10))  # warm-up: imports, caches
    threads = {}
    if tracked:
        import memscope_otel

        tracker = memscope_otel.start(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
        threads["drainer"] = tracker.drainer._thread
    step = max(1, programs.SCALE[name] // 4)
    before = {k: _thread_cpu(t) for k, t in threads.items()}
    if tracked:
        from memscope_otel import sampler

        mover0 = sampler.mover_cpu_ns()
    s0, c0, w0 = _switches(), time.thread_time(), time.perf_counter()
    while time.perf_counter() - w0 < seconds:
        programs.run(name, step)
    out = {"app_cpu_s": time.thread_time() - c0, "switches": _switches() - s0,
           "wall_s": time.perf_counter() - w0}
    out.update({f"{k}_cpu_s": _thread_cpu(t) - before[k] for k, t in threads.items()})
    if tracked:
        out["mover_cpu_s"] = (sampler.mover_cpu_ns() - mover0) / 1e9
        memscope_otel.stop()
    print(json.dumps(out))


def run_child(name, seconds, tracked):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--seconds", str(seconds)]
    if tracked:
        cmd.append("--tracked")
    return _common.run_json_child(cmd, f"{name} (tracked={tracked})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="loop length per program and mode")
    ap.add_argument("--only", nargs="+", choices=sorted(programs.PROGRAMS), help="run only these programs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tracked", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.seconds, args.tracked)
        return
    print("memscope-otel background benchmark:", _common.machine())
    print(f"\n{args.seconds:g} s of each program per mode; tracker threads' CPU as % of the application "
          "thread's CPU; switches = voluntary context switches of the application thread per second")
    head = (f"{'program':16} {'app cpu s':>9} {'mover %':>7} {'drainer %':>9} {'total %':>8} "
            f"{'switches/s untracked':>20} {'switches/s tracked':>18}")
    print(head)
    print("-" * len(head))
    totals = []
    for n in args.only or list(programs.PROGRAMS):
        base, tr = run_child(n, args.seconds, False), run_child(n, args.seconds, True)
        mover = 100 * tr["mover_cpu_s"] / tr["app_cpu_s"]
        drainer = 100 * tr["drainer_cpu_s"] / tr["app_cpu_s"]
        totals.append(mover + drainer)
        print(f"{n:16} {tr['app_cpu_s']:9.2f} {mover:7.2f} {drainer:9.2f} {totals[-1]:8.2f} "
              f"{base['switches'] / base['wall_s']:20.1f} {tr['switches'] / tr['wall_s']:18.1f}", flush=True)
    print(f"\nmedian tracker-thread CPU: {_common.median(totals):.2f}% of the application's; "
          f"max {max(totals):.2f}%")


if __name__ == "__main__":
    main()
