"""What one metric collection costs, and who pays it: memscope's callbacks or the OpenTelemetry SDK.

A mostly idle program pays for every export whatever the sampling rates (the demo's game loop,
issue 16). This runs that loop tracked for a few seconds (so that its sites exist), then collects
through an InMemoryMetricReader ``--collections`` times on this thread and prints, per
collection: the thread's CPU time, the part spent in memscope's own callbacks (the producer's
``collection_ns``, which leaves out draining and the recognizer's reads), the part those two took
on this thread, and the rest, which is the SDK's (making a Measurement of each observation,
cleaning and hashing its attributes, aggregating, building the points), with the points per
collection and the SDK's time per point.

    python benchmarks/collection_cost.py [--seconds 3] [--collections 50]
"""
import argparse
import os
import sys
import time

import _common

sys.path.insert(0, os.path.join(_common.ROOT, "examples"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="the game loop's run before collecting")
    ap.add_argument("--collections", type=int, default=50)
    args = ap.parse_args(argv)

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from workloads import game_loop

    import memscope_otel

    print("memscope-otel collection cost:", _common.machine())
    reader = InMemoryMetricReader()
    tracker = memscope_otel.start(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        game_loop.run(duration_s=args.seconds)
        reader.collect()  # the first collection resolves the sites: not a steady one
        producer = tracker.producer
        recognizer = getattr(tracker.optimizer, "recognizer", None)
        meters = [tracker.drainer.cpu] + ([recognizer.cpu] if recognizer is not None else [])
        others0 = sum(m.on_this_thread() for m in meters)
        own0, points0 = producer.collection_ns, producer.collection_points
        cpu0 = time.thread_time_ns()
        for _ in range(args.collections):
            reader.collect()
        cpu = (time.thread_time_ns() - cpu0) / args.collections / 1e6
        own = (producer.collection_ns - own0) / args.collections / 1e6
        others = (sum(m.on_this_thread() for m in meters) - others0) / args.collections / 1e6
        points = (producer.collection_points - points0) / args.collections
    finally:
        memscope_otel.stop()
    sdk = cpu - own - others
    print(f"per collection ({args.collections} collections after a {args.seconds:g} s game loop):")
    print(f"  thread CPU                      {cpu:7.2f} ms")
    print(f"  memscope's callbacks            {own:7.2f} ms")
    print(f"  draining and recognizing here   {others:7.2f} ms")
    print(f"  the SDK (the rest)              {sdk:7.2f} ms   {sdk * 1e3 / max(points, 1):.1f} us per point")
    print(f"  points                          {points:7.0f}")


if __name__ == "__main__":
    main()
