"""Optimizer measurements: workload features, fast-path cost, optimizer on/off, quality vs rate.

    python benchmarks/optimizer.py features [--runs N] [--seconds S]
    python benchmarks/optimizer.py fastpath
    python benchmarks/optimizer.py slow-exporter [--seconds S]
    python benchmarks/optimizer.py quality [--seconds S]

Each subcommand prints a Markdown table (docs/optimizer.md quotes them). Keep runs short: the
figures are for the record, not a load test.
"""
import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests" / "optimizer"))

import _common  # noqa: E402


def _start(**config):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import memscope_otel

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracker = memscope_otel.start(provider, **config)
    return tracker, reader, provider


def measure_features(module, seconds, tracker):
    """Runs one workload under a fresh recognizer window; returns (features, workload, reasons)."""
    from memscope_otel.optimizer import WorkloadRecognizer, classify

    recognizer = WorkloadRecognizer(tracker.resolver.resolve)
    tracker.drainer.drain()
    tracker.drainer.add_sink(recognizer.sink)
    try:
        recognizer.reset()
        module.run(seconds)
        snap = tracker.refresh()
        recognizer.observe(snap.counters)
        features = recognizer.features()
    finally:
        tracker.drainer.remove_sink(recognizer.sink)
    kind, reasons = classify(features)
    return features, kind, reasons


def cmd_features(args):
    tracker, _, _ = _start(adaptive=False)
    modules = [("workloads." + m) for m in ("web_server", "data_pipeline", "game_loop", "ml_training")]
    modules += ["programs." + m for m in args.extra]
    keys = None
    for name in modules:
        module = importlib.import_module(name)
        for run in range(args.runs):
            features, kind, _ = measure_features(module, args.seconds, tracker)
            if keys is None:
                keys = [k for k in features if k != "elapsed_s"]
                print("| program | run | class | " + " | ".join(keys) + " |")
                print("|---" * (len(keys) + 3) + "|")
            print(f"| {name} | {run} | {kind} | " + " | ".join(f"{features[k]:.3g}" for k in keys) + " |",
                  flush=True)


def _pipeline(batches, seed=1):
    """A fixed amount of the demo data pipeline (the same allocations on every call)."""
    import random

    from workloads import data_pipeline

    rng = random.Random(seed)
    for _ in range(batches):
        data_pipeline.process(data_pipeline.make_batch(rng))


def _cpu(fn):
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cmd_fastpath(args):
    """Per-call cost of an unsampled hook call: every rate 0, no frequency slots."""
    import memscope_otel
    from memscope_otel import sampler

    def churn():
        for i in range(args.n):
            x = [i]  # one list object and its item array, allocated and freed
            del x

    # Alternate off and on so both see the same machine load; keep the best of each.
    off = on = float("inf")
    calls = 0
    for _ in range(args.repeat):
        off = min(off, _timed(churn, 1))
        tracker, _, provider = _start(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0,
                                      adaptive=False)
        c0 = sampler.read_counters()
        on = min(on, _timed(churn, 1))
        c1 = sampler.read_counters()
        memscope_otel.stop()
        provider.shutdown()
        calls = int((c1.allocations.sum() - c0.allocations.sum())
                    + (c1.deallocations.sum() - c0.deallocations.sum()))
    calls_per_run = calls
    print(f"| hooks | best of {args.repeat}, s | hook calls per run | ns per hook call |")
    print("|---|---|---|---|")
    print(f"| off | {off:.4f} | - | - |")
    print(f"| on, rates 0, no frequency slots | {on:.4f} | {calls_per_run:.0f} | "
          f"{(on - off) / calls_per_run * 1e9:.1f} |")


def slow_exporter(delay_s):
    """A MetricExporter whose backend takes ``delay_s`` per export; its ``points``: each export's."""
    points = []

    def slow(metrics_data):
        points.append(sum(len(m.data.data_points) for rm in metrics_data.resource_metrics
                          for sm in rm.scope_metrics for m in sm.metrics))
        time.sleep(delay_s)

    exporter = _common.null_exporter(slow)
    exporter.points = points
    return exporter


def cmd_slow_exporter(args):
    """Overhead and exported series with a slow exporter, optimizer on vs off."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    import memscope_otel
    from memscope_otel import sampler
    from workloads import data_pipeline

    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = str(args.interval_ms)

    def cpu_seconds():
        t0 = time.process_time()
        _pipeline(args.batches)
        return time.process_time() - t0

    # Rounds of untracked / optimizer off / optimizer on, so all three see the same machine load.
    # Overhead is read in process CPU time (all threads: the drainer, the exporting reader and the
    # optimizer included), which a busy machine disturbs far less than wall time; best of rounds.
    best = {"untracked": float("inf")}
    stats = {}
    for _ in range(args.rounds):
        best["untracked"] = min(best["untracked"], cpu_seconds())
        for adaptive in (False, True):
            exporter = slow_exporter(args.delay_s)
            provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
                exporter, export_interval_millis=args.interval_ms)])
            memscope_otel.start(provider, adaptive=adaptive)
            data_pipeline.run(args.settle_s)  # let the optimizer settle
            c0 = sampler.read_counters()
            t0 = time.monotonic()
            cpu = cpu_seconds()
            elapsed = time.monotonic() - t0
            c1 = sampler.read_counters()
            medium, small = sampler.rates()
            memscope_otel.stop()
            provider.shutdown()
            key = "on" if adaptive else "off"
            best[key] = min(best.get(key, float("inf")), cpu)
            stats.setdefault(key, []).append(((c1.samples - c0.samples) / elapsed,
                                              (c1.slow_path_ns - c0.slow_path_ns) / 1e9 / elapsed, small, medium,
                                              exporter.points[-1] if exporter.points else 0))
    base = best["untracked"]
    print(f"Data pipeline, {args.batches} batches measured after {args.settle_s} s of settling, best of "
          f"{args.rounds} interleaved rounds; export every {args.interval_ms} ms to an exporter that sleeps "
          f"{args.delay_s} s; untracked: {base:.3f} CPU s; other columns: mean over the rounds\n")
    print("| optimizer | CPU s | CPU overhead | records/s | sampled-path CPU share | small rate | medium rate "
          "| points per export |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ("off", "on"):
        rec, share, small, medium, pts = (sum(v) / len(v) for v in zip(*stats[key]))
        rate = best[key]
        print(f"| {key} | {rate:.3f} | {rate / base - 1:+.0%} | {rec:.0f} | {share:.2%} "
              f"| {small:.3g} | {medium:.3g} | {pts:.0f} |")


def cmd_quality(args):
    """Relative error of the top-10 site estimates vs sampling rate, against rate-1 exact counts."""
    import numpy as np

    import memscope_otel
    from memscope_otel import sampler

    def run_at(rate):
        tracker, _, provider = _start(small_sample_rate=rate, medium_sample_rate=rate, frequency_sample_interval=0,
                                      adaptive=False, drain_interval_ms=10, max_records_per_thread=2**20,
                                      seed=12345)
        tracker.refresh()
        before = tracker.summary.id_count.copy()
        c0 = sampler.read_counters()
        t0 = time.process_time()
        _pipeline(args.batches)
        elapsed = time.process_time() - t0
        tracker.refresh()
        c1 = sampler.read_counters()
        counts = tracker.summary.id_count - before
        memscope_otel.stop()
        provider.shutdown()
        return counts, elapsed, c1.dropped - c0.dropped, c1.samples - c0.samples

    untracked = min(_cpu(lambda: _pipeline(args.batches)) for _ in range(2))
    exact, full_time, dropped, _ = run_at(1.0)
    assert dropped == 0, f"{dropped} records dropped at rate 1: the reference is not exact"
    top = np.argsort(exact)[::-1][:10]
    print(f"Data pipeline, {args.batches} batches; reference: rate 1 (every allocation, 0 dropped); "
          f"top-10 sites hold {exact[top].sum():.0f} of {exact.sum():.0f} allocations; untracked {untracked:.2f} CPU s "
          f"(CPU time of the whole process, drainer included; frequency slots off so the rate alone acts)\n")
    print("| rate | CPU s | CPU overhead vs untracked | records | mean relative error, top 10 "
          "| max relative error, top 10 | predicted (mean sqrt((1-p)/(n p))) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 1 | {full_time:.2f} | {full_time / untracked - 1:+.0%} | - | 0 (reference) | 0 | 0 |")
    for rate in args.rates:
        counts, elapsed, dropped, records = run_at(rate)
        err = np.abs(counts[top] - exact[top]) / exact[top]
        predicted = np.sqrt((1 - rate) / (exact[top] * rate))
        print(f"| {rate:g} | {elapsed:.2f} | {elapsed / untracked - 1:+.0%} | {records} | {err.mean():.2%} "
              f"| {err.max():.2%} | {predicted.mean():.2%} |" + (f" ({dropped} dropped)" if dropped else ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features", help="features and class of each workload, per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.6)
    p.add_argument("--extra", nargs="*", default=[], help="test-only programs (tests/optimizer/programs)")
    p.set_defaults(fn=cmd_features)
    p = sub.add_parser("fastpath", help="cost of one unsampled hook call from a Python loop (a rough check; "
                       "FAST_PATH_PAIR_NS comes from the C loops of micro.py and native.py)")
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--repeat", type=int, default=7)
    p.set_defaults(fn=cmd_fastpath)
    p = sub.add_parser("slow-exporter", help="optimizer on vs off with a slow exporter")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--settle-s", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--interval-ms", type=int, default=500)
    p.add_argument("--delay-s", type=float, default=0.5)
    p.set_defaults(fn=cmd_slow_exporter)
    p = sub.add_parser("quality", help="top-10 site error vs sampling rate")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--rates", type=float, nargs="*", default=[0.1, 0.01, 0.001])
    p.set_defaults(fn=cmd_quality)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
