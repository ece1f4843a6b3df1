"""Where a tracked game loop's CPU goes, per second of the loop (issue 16's mostly idle program).

The demo's game loop (examples/workloads/game_loop.py: 60 frames a second, 96 % idle) runs for
``--seconds`` untracked and then tracked, each in a fresh interpreter, exporting every
``--interval-ms`` through a PeriodicExportingMetricReader to an exporter that drops the points
(the SDK's aggregation and batch are built, nothing is sent). Printed per second of the loop:
the process's CPU in both runs, and of the tracked one the parts the tracker measures itself:
the loop's own thread, the SDK's work on the exporting thread outside memscope's callbacks
(Producer.export_ns), memscope's collections (Producer.collection_ns), the workload
recognizer's features (WorkloadRecognizer.cpu), the drainer and the mover (Drainer.cpu_ns, of
which the mover), and the sampled path (slow_path_ns, wall clock). Last, one classification's
features computed after the run (the sort of the window's times and the frame-clock search).

The untracked and tracked runs alternate ``--rounds`` times (a fresh pair of interpreters each
round: one machine's CPU per frame drifts by several per cent from one run to the next); every
figure is the median of the rounds, and the overhead is the median of each round's tracked run
against its own untracked run.

With ``--in-process``, the parts apart and in one interpreter, each tracked run from the
tracker's start (as the demo measures): the game loop runs untracked; tracked with every sampling
path off (exact counting: the hooks' fast paths and the tracker's threads) and at default
settings, both through a MeterProvider without readers (nothing is collected or exported); and
at default settings exporting every ``--interval-ms`` as above. The four alternate ``--rounds``
times in rotated order; printed are the loop thread's CPU and the process's per second of the
loop, and the median and quartiles of each round's overhead against that round's untracked run.

    python benchmarks/game_loop_cost.py [--seconds 6] [--interval-ms 500] [--rounds 3] [--in-process]
"""
import argparse
import json
import os
import statistics
import sys
import time

import _common

sys.path.insert(0, os.path.join(_common.ROOT, "examples"))


def _exporting_provider(interval_ms):
    """A MeterProvider whose periodic reader exports every ``interval_ms`` to an exporter that
    drops the points (the SDK's aggregation and batch are built, nothing is sent)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(_common.null_exporter(), export_interval_millis=interval_ms)
    return MeterProvider(metric_readers=[reader])


def child(seconds, interval_ms, tracked):
    from workloads import game_loop

    if not tracked:
        game_loop.run(duration_s=1.0)  # the same warm-up as the tracked run
        c0 = time.process_time()
        game_loop.run(duration_s=seconds)
        return {"process_ms": (time.process_time() - c0) / seconds * 1e3}

    import memscope_otel
    from memscope_otel import sampler

    tracker = memscope_otel.start(meter_provider=_exporting_provider(interval_ms))
    try:
        game_loop.run(duration_s=1.0)  # warm-up: sites resolved, the first collections made
        producer, drainer, recognizer = tracker.producer, tracker.drainer, tracker.optimizer.recognizer

        def figures():
            c = sampler.read_counters()
            return (time.process_time(), time.thread_time(), producer.export_ns, producer.collection_ns,
                    recognizer.cpu.ns, drainer.cpu_ns, sampler.mover_cpu_ns(), c.slow_path_ns)

        before = figures()
        game_loop.run(duration_s=seconds)
        after = figures()
        tracker.refresh()
        t0 = time.thread_time()
        recognizer.features()
        features_ms = (time.thread_time() - t0) * 1e3
    finally:
        memscope_otel.stop()
    d = [(a - b) / seconds for a, b in zip(after, before)]
    return {"process_ms": d[0] * 1e3, "loop_thread_ms": d[1] * 1e3, "sdk_export_ms": d[2] / 1e6,
            "collections_ms": d[3] / 1e6, "recognizer_ms": d[4] / 1e6, "drainer_and_mover_ms": d[5] / 1e6,
            "mover_ms": d[6] / 1e6, "sampled_path_ms": d[7] / 1e6, "features_ms": features_ms}


def in_process(seconds, interval_ms, rounds):
    """The loop untracked and tracked three ways (see the module's docstring), alternating in this
    interpreter."""
    from workloads import game_loop

    trackers = [_common.Tracker("untracked", "none"),
                _common.Tracker("exact counting only", "memscope", _common.FAST_PATH_ONLY),
                _common.Tracker("default settings", "memscope"),
                _common.Tracker(f"exporting every {interval_ms} ms", "memscope",
                                new_provider=lambda: _exporting_provider(interval_ms))]
    loop_ms = {t.name: [] for t in trackers}
    process_ms = {t.name: [] for t in trackers}
    game_loop.run(duration_s=1.0)  # warm-up
    for round_ in range(rounds):
        for tracker in _common.rotated(trackers, round_):
            tracker.start()
            try:
                c0, t0 = time.process_time(), time.thread_time()
                game_loop.run(duration_s=seconds)
                loop_ms[tracker.name].append((time.thread_time() - t0) / seconds * 1e3)
                process_ms[tracker.name].append((time.process_time() - c0) / seconds * 1e3)
            finally:
                tracker.stop()
    print(f"{seconds:g} s of the game loop from the tracker's start, {rounds} rounds in one interpreter; ms of CPU "
          f"per second (medians), and each round's overhead against its untracked run (median [quartiles]):")
    for name in loop_ms:
        parts = []
        for what, series in (("loop's thread", loop_ms), ("process", process_ms)):
            over = [100 * (x / u - 1) for x, u in zip(series[name], series["untracked"])]
            figure = f"{what} {statistics.median(series[name]):6.2f}"
            if name != "untracked":
                figure += (f" ({statistics.median(over):+.1f} % [{_common.quantile(over, 0.25):+.1f}, "
                           f"{_common.quantile(over, 0.75):+.1f}])")
            parts.append(figure)
        print(f"  {name:<26} " + ";  ".join(parts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--interval-ms", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3, help="untracked and tracked runs, alternating")
    ap.add_argument("--in-process", action="store_true",
                    help="untracked, exact counting only and default settings without exporting, and default "
                         "settings exporting every --interval-ms, alternating in one interpreter")
    ap.add_argument("--child", choices=["untracked", "tracked"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.seconds, args.interval_ms, args.child == "tracked")))
        return
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    print("memscope-otel game loop cost:", _common.machine())
    if args.in_process:
        in_process(args.seconds, args.interval_ms, args.rounds)
        return
    runs = {"untracked": [], "tracked": []}
    for round_ in range(args.rounds):
        for mode in runs:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--seconds", str(args.seconds),
                   "--interval-ms", str(args.interval_ms)]
            runs[mode].append(_common.run_json_child(cmd, f"game loop ({mode}, round {round_ + 1})"))
    base = statistics.median(r["process_ms"] for r in runs["untracked"])
    t = {key: statistics.median(r[key] for r in runs["tracked"]) for key in runs["tracked"][0]}
    overheads = [100 * (tr["process_ms"] / un["process_ms"] - 1) for un, tr in zip(runs["untracked"], runs["tracked"])]
    print(f"{args.seconds:g} s of the game loop, exporting every {args.interval_ms} ms; ms of CPU per second "
          f"(medians of {args.rounds} rounds):")
    print(f"  process, untracked                 {base:7.2f}")
    print(f"  process, tracked                   {t['process_ms']:7.2f}   ({statistics.median(overheads):+.0f} %; "
          f"rounds: {', '.join(f'{o:+.0f} %' for o in overheads)})")
    print(f"    the loop's own thread            {t['loop_thread_ms']:7.2f}")
    print(f"      of which the sampled path      {t['sampled_path_ms']:7.2f}   (wall clock)")
    print(f"    the SDK's aggregation and export {t['sdk_export_ms']:7.2f}")
    print(f"    memscope's collections           {t['collections_ms']:7.2f}")
    print(f"    the recognizer's features        {t['recognizer_ms']:7.2f}")
    print(f"    the drainer and the mover        {t['drainer_and_mover_ms']:7.2f}   (the mover {t['mover_ms']:.2f})")
    print(f"one classification's features after the run: {t['features_ms']:.1f} ms")


if __name__ == "__main__":
    main()
