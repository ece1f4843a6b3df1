"""Thread churn: the RSS a thread-per-request program pays for the tracker.

10,000 short-lived Python threads, 500 alive at a time, each allocating a few blocks (one of 64
KiB: large, so always sampled, and every thread has records to buffer). Each mode runs in a
fresh interpreter, untracked and memscope (default settings) interleaved round by round; RSS
(/proc/self/statm) is read before the threads, while the 500 of a wave are all alive (the
highest wave reported), after the last wave exited and the tracker drained once, and once more
after malloc_trim(0) (the C library's free pages given back, in both modes alike: what it keeps
for reuse of 500 threads' freed memory varies by several MB from run to run, tracked or not).
Every process first imports the modules a tracker loads (_imports.py: imports aside).

    python benchmarks/thread_churn.py [--threads 10000] [--alive 500] [--rounds 5]

Targets (issue 16): with 500 threads alive the tracker adds <= 16 MB; once they exited, RSS is
within 2 MB of the untracked run.
"""
import argparse
import ctypes
import json
import os
import sys

import _common
import _imports
from _wave import rss, wave


def child(mode, total, alive, settings, modules):
    import gc

    _imports.load(modules)
    from memscope_otel import sampler

    import memscope_otel

    provider = _common.meter_provider()
    tracker = memscope_otel.start(meter_provider=provider, **settings) if mode == "memscope" else None

    def footprint():
        """What the C side holds in pages (thread states, buffers, live table)."""
        return sampler.read_counters().footprint_bytes if tracker is not None else 0
    gc.collect()
    before = rss()
    peak = peak_footprint = 0
    for _ in range(total // alive):
        now, fp = wave(alive, lambda: (rss(), footprint()))
        if now > peak:
            peak, peak_footprint = now, fp
    if tracker is not None:
        tracker.drainer.drain()  # hands back what exited threads held
    gc.collect()
    after = rss()
    ctypes.CDLL(None).malloc_trim(0)
    result = {"before": before, "peak": peak, "after": after, "trimmed": rss(), "peak_footprint": peak_footprint,
              "footprint": footprint()}
    if tracker is not None:
        memscope_otel.stop()
    print(json.dumps(result))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=10_000)
    ap.add_argument("--alive", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--settings", default="{}", help="memscope settings as JSON (default: none, the defaults)")
    ap.add_argument("--child", choices=["none", "memscope"], help=argparse.SUPPRESS)
    ap.add_argument("--modules", default="[]", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.threads, args.alive, json.loads(args.settings), json.loads(args.modules))
        return
    rounds = 1 if args.quick else args.rounds
    print("memscope-otel thread churn:", _common.machine())
    print(f"{args.threads} threads, {args.alive} alive at a time, {rounds} round(s), each mode in a fresh process; "
          f"memscope settings {args.settings}")
    modules = _imports.tracker_modules()  # loaded by both modes first: imports aside
    results = {"none": [], "memscope": []}
    for r in range(rounds):
        for mode in _common.rotated(list(results), r):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode,
                   "--threads", str(args.threads), "--alive", str(args.alive), "--settings", args.settings,
                   "--modules", json.dumps(modules)]
            results[mode].append(_common.run_json_child(cmd, f"thread churn ({mode})"))
    mb = 1e6
    print(f"\n{'round':>5} {'mode':>9} {'RSS before':>11} {'peak (+)':>10} {'after (+)':>10} "
          f"{'trimmed (+)':>12} {'C footprint at peak':>20} {'after':>9}")
    for r in range(rounds):
        for mode in results:
            x = results[mode][r]
            print(f"{r:>5} {mode:>9} {x['before'] / mb:8.1f} MB {(x['peak'] - x['before']) / mb:+7.1f} MB "
                  f"{(x['after'] - x['before']) / mb:+7.1f} MB {(x['trimmed'] - x['before']) / mb:+9.1f} MB "
                  f"{x['peak_footprint'] / mb:17.2f} MB "
                  f"{x['footprint'] / mb:6.2f} MB")
    start = _common.median([x["before"] for x in results["memscope"]]) - _common.median(
        [x["before"] for x in results["none"]])
    med = {m: {k: _common.median([x[k] - x["before"] for x in xs]) for k in ("peak", "after", "trimmed")}
           for m, xs in results.items()}
    during = (med["memscope"]["peak"] - med["none"]["peak"]) / mb
    after = (med["memscope"]["after"] - med["none"]["after"]) / mb
    trimmed = (med["memscope"]["trimmed"] - med["none"]["trimmed"]) / mb
    print(f"\nmedians, memscope minus untracked: after start() {start / mb:+.1f} MB; growth with {args.alive} "
          f"threads alive {during:+.1f} MB, after they exited {after:+.1f} MB ({trimmed:+.1f} MB after malloc_trim)")
    print(f"RSS of the tracked run minus the untracked one (start() included): with {args.alive} threads alive "
          f"{(start / mb + during):+.1f} MB (target <= 16), after they exited {(start / mb + after):+.1f} MB, "
          f"{(start / mb + trimmed):+.1f} MB after malloc_trim (target: within 2 MB)")


if __name__ == "__main__":
    main()
