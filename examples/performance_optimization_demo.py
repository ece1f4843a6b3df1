"""The adaptive optimizer on four real workloads: recognition, recommendations, before and after.

    python examples/performance_optimization_demo.py [--seconds 2] [--rounds 3] [--only web_server ...]

For each workload (a WSGI app under load from client threads, a data pipeline, a game frame loop,
a numpy training loop; see examples/workloads) it:

1. runs it untracked, to get its CPU cost per unit of work (requests, batches, frames, steps),
   for as long as each tracked run it is compared with;
2. runs it tracked (metrics exported every 500 ms; a tracked run lasts two export intervals at
   least), then shows the recognized workload with the features behind it, the tracker's CPU
   overhead, and the error of the estimated allocation count against the exact counters;
3. asks the optimizer for recommendations, applies those that cost no CPU (the live ones to
   the running tracker, the restart-only ones as settings of the next start; advice is only
   shown), runs again ("after") and shows the same figures, with the change the recommendations
   predicted next to the change measured;
4. when a recommendation spends CPU on accuracy (a higher rate while the pressure is low), runs
   once more with every recommendation applied ("after + accuracy"), so that its price is
   measured apart from the savings.

Overheads are in process CPU time (all threads), which a busy machine disturbs less than wall
time. The untracked, before and after runs are repeated ``--rounds`` times, interleaved, and
each CPU cost per unit of work is the lowest of its rounds (the least disturbed run), a tracked
run's overhead against the untracked runs of its own length (the lowest of a few short runs
strays further below their typical cost than that of as many long ones); a change
is the difference of the rounds' means, given with its noise (twice its standard error, from the
rounds' spread); records/s is the median; the count error and its predicted standard error are root
mean squares over the rounds, and z the RMS of their ratios (about 1 for unbiased estimates; above
2 with 5 rounds happens by chance about once in 800 rows).
"""
import argparse
import math
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult  # noqa: E402

import memscope_otel  # noqa: E402
from memscope_otel import sampler  # noqa: E402
from workloads import data_pipeline, game_loop, ml_training, web_server  # noqa: E402

# The tracked runs' export interval before any recommendation.
EXPORT_INTERVAL_MS = 500

WORKLOADS = {
    "web_server": (web_server, "requests"),
    "data_processing": (data_pipeline, "batches"),
    "game_loop": (game_loop, "frames"),
    "ml_training": (ml_training, "steps"),
}


class CountingExporter(MetricExporter):
    """Stands in for a backend: counts exports and points."""

    def __init__(self):
        super().__init__()
        self.exports = self.points = 0

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.exports += 1
        self.points += sum(len(m.data.data_points) for rm in metrics_data.resource_metrics
                           for sm in rm.scope_metrics for m in sm.metrics)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass


def run_with_progress(label, module, unit, seconds, tracker=None):
    """Runs the workload on a thread while the main thread draws a progress line.
    Returns (units done, process CPU seconds)."""
    result = {}

    def work():
        result.update(module.run(seconds))

    cpu0 = time.process_time()
    t0 = time.monotonic()
    worker = threading.Thread(target=work, name=f"demo-{label}")
    worker.start()
    tty = sys.stdout.isatty()
    shown = -1
    while worker.is_alive():
        done = min((time.monotonic() - t0) / seconds, 1.0)
        if tty:
            sys.stdout.write(f"\r  {label:<28} [{'#' * int(done * 24):<24}] {done:4.0%}{_state(tracker)}   ")
            sys.stdout.flush()
        elif int(done * 4) > shown:  # a log-friendly line at each quarter
            shown = int(done * 4)
            print(f"  {label:<28} {done:4.0%}{_state(tracker)}", flush=True)
        worker.join(0.1)
    cpu = time.process_time() - cpu0
    if tty:
        sys.stdout.write("\r" + " " * 110 + "\r")
    return result.get(unit, 0), cpu


def _state(tracker):
    """The optimizer's pressure and the rates, for a progress line: read only when a line is
    shown. Each read counts in the tracked run's CPU: read at every 0.1 s wake-up, a cold call
    from the waiting thread took about 30 us, and the main thread's CPU grew by 3.8 ms in 6 s of
    the game loop (three pairs of runs), about 2 % of the loop's own."""
    if tracker is None or tracker.optimizer is None:
        return ""
    medium, small = sampler.rates()
    return f"  pressure {tracker.optimizer.pressure:.2f}  rates small {small:.2g} medium {medium:.2g}"


def count_error(tracker, base_counters, base_estimate):
    """Relative error of the estimated small+medium allocation count against the exact count, and
    its standard error predicted phase by phase from the rates in force (the optimizer's change
    log): variance = sum over phases and classes of n * (1 - p) / p (an upper bound: the
    frequency slots, sampled for certain, only lower it)."""
    snap = tracker.refresh()
    exact = (snap.counters.allocations.astype(float) - base_counters.allocations)[:, :2].sum()
    est = (tracker.summary.count - base_estimate)[:, :2].sum()
    history = tracker.optimizer.controller.history if tracker.optimizer else []
    marks = [base_counters.allocations.astype(float)]
    rates = [tracker.optimizer.controller.target if tracker.optimizer else snap.rates]
    # Phases that began before this run started contribute nothing (their n is clipped to 0).
    rates[0] = _rates_at(history, base_counters) or rates[0]
    for change in history:
        if (change.allocations.astype(float) >= marks[0]).all() and change.allocations.sum() > marks[0].sum():
            marks.append(change.allocations.astype(float))
            rates.append((change.medium, change.small))
    marks.append(snap.counters.allocations.astype(float))
    var = 0.0
    for (medium, small), a, b in zip(rates, marks[:-1], marks[1:]):
        n = (b - a)[:, :2].sum(axis=0)
        var += sum(k * (1 - p) / p for k, p in zip(n, (small, medium)) if p > 0)
    return abs(est - exact) / max(exact, 1), math.sqrt(var) / max(exact, 1)


def _rates_at(history, counters):
    """The rates in force when ``counters`` were read: the last change made before them."""
    before = [c for c in history if c.allocations.sum() <= counters.allocations.sum()]
    return (before[-1].medium, before[-1].small) if before else None


def restart_settings(recs):
    """The restart-only recommendations as settings of the next start (keywords of start(), and
    the export interval in ms), leaving out advice."""
    settings, interval_ms = {}, EXPORT_INTERVAL_MS
    for rec in recs or ():
        if rec.live or rec.advice:
            continue
        if rec.setting == "export_interval":
            interval_ms = int(rec.proposed)
        elif rec.setting == "domains":
            settings["domains"] = rec.proposed
        else:
            settings[rec.setting] = type(rec.current)(rec.proposed) if rec.current is not None else rec.proposed
    return settings, interval_ms


def spends_cpu(rec):
    """A recommendation that buys accuracy with CPU (predicted to cost more, not less)."""
    return not rec.advice and (rec.predicted_cpu or 0.0) > 0.0


def run_seconds(seconds, recs=None):
    """The length of a tracked run with ``recs`` applied: at least two export intervals (and a
    little), so that a longer interval's exports are measured inside the run rather than left to
    the shutdown after it. Untracked runs compared with it last as long."""
    return max(seconds, 2 * restart_settings(recs)[1] / 1000.0 + 0.25)


def tracked_run(name, module, unit, seconds, apply_from=None, label="before"):
    exporter = CountingExporter()
    settings, interval_ms = restart_settings(apply_from)
    seconds = run_seconds(seconds, apply_from)
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms),
                                             InMemoryMetricReader()])
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = str(interval_ms)
    tracker = memscope_otel.start(provider, **settings)
    try:
        if apply_from:
            tracker.optimizer.apply_optimizations([r for r in apply_from if r.live])
        base = tracker.refresh()
        base_estimate = tracker.summary.count.copy()
        units, cpu = run_with_progress(f"{name} ({label})", module, unit, seconds, tracker)
        error, predicted = count_error(tracker, base.counters, base_estimate)
        workload, features, reasons = tracker.optimizer.recognize()
        recs = tracker.optimizer.get_optimization_recommendations()
        snap_rates = sampler.rates()
        c = sampler.read_counters()
        records = c.samples - base.counters.samples
    finally:
        memscope_otel.stop()
        provider.shutdown()
    return {"units": units, "cpu": cpu, "error": error, "predicted": predicted, "workload": workload,
            "domains": tuple(tracker.config.domains),
            "features": features, "reasons": reasons, "recs": recs, "rates": snap_rates, "records": records,
            "seconds": seconds, "points": exporter.points / max(exporter.exports, 1)}


def predicted(recs, field):
    """The sum of the recommendations' predictions of one kind (None when none predicts it)."""
    values = [getattr(r, field) for r in recs or () if not r.advice and getattr(r, field) is not None]
    return sum(values) if values else None


def _pct(x, signed=True):
    return "-" if x is None else (f"{x:+.1%}" if signed else f"{x:.2%}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of each run")
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), help="run only these workloads")
    args = parser.parse_args(argv)
    rows = []
    for name in args.only or WORKLOADS:
        module, unit = WORKLOADS[name]
        print(f"\n== {name} ({module.__name__})")
        untracked, runs, recs = {}, {}, None  # untracked: {run length: [cost per unit of work]}

        def untracked_run(seconds):
            units, cpu = run_with_progress(f"{name} (untracked)", module, unit, seconds)
            untracked.setdefault(seconds, []).append(cpu / max(units, 1))

        for round_ in range(max(args.rounds, 1)):
            untracked_run(run_seconds(args.seconds))  # as long as the before run
            before = tracked_run(name, module, unit, args.seconds)
            runs.setdefault("before", []).append(before)
            if round_ == 0:
                recs = before["recs"]
                print(f"  recognized: {before['workload']}  ({'; '.join(before['reasons'])})")
                print(f"  recommendations ({len(recs)}):")
                for rec in recs:
                    print("    " + str(rec).replace("\n", "\n    "))
                if not any(not r.advice for r in recs):
                    print("  nothing to change: the after runs repeat the before runs' settings")
                plans = {"after": [r for r in recs if not spends_cpu(r)]}
                if any(spends_cpu(r) for r in recs):
                    plans["after + accuracy"] = list(recs)
            lengths = {run_seconds(args.seconds, applied) for applied in plans.values()}
            for seconds in sorted(lengths - {before["seconds"]}):
                untracked_run(seconds)
            for label, applied in plans.items():
                after = tracked_run(name, module, unit, args.seconds, apply_from=applied, label=label)
                runs.setdefault(label, []).append(after)
                if round_ == 0:
                    print(f"  recognized {label}: {after['workload']}  ({'; '.join(after['reasons'])})")
        print(f"  untracked CPU per {unit[:-1]}, lowest and median of the rounds: " + "; ".join(
            f"{seconds:g} s runs {min(costs) * 1e6:.0f} and {statistics.median(costs) * 1e6:.0f} us"
            for seconds, costs in sorted(untracked.items())))
        summary = {}
        for label, done in runs.items():
            base_cost = min(untracked[done[0]["seconds"]])
            overheads = [r["cpu"] / max(r["units"], 1) / base_cost - 1 for r in done]
            records = sorted(r["records"] / r["seconds"] for r in done)[len(done) // 2]
            z = [r["error"] / r["predicted"] for r in done if r["predicted"] > 0]
            summary[label] = {"overhead": min(overheads), "overheads": overheads, "records": records, "run": done[0],
                              "base_cost": base_cost,
                              "error": _rms([r["error"] for r in done]), "predicted": _rms([r["predicted"] for r in done]),
                              "z": _rms(z) if z else float("nan")}
        first = runs["before"][0]
        work_cpu_per_s = summary["before"]["base_cost"] * first["units"] / first["seconds"]  # its own CPU, cores
        for label in runs:
            change = None
            if label != "before":
                applied = plans[label]
                pred_cpu = predicted(applied, "predicted_cpu")
                pred_records = predicted(applied, "predicted_records_per_s")
                # Predicted CPU change in the table's unit: overhead per unit of work, as a share of
                # the untracked cost (cores changed / the workload's own cores).
                pred_overhead = pred_cpu / work_cpu_per_s if pred_cpu is not None and work_cpu_per_s > 0 else None
                # the change of the rounds' means, the quantity whose standard error noise() gives
                measured = statistics.fmean(summary[label]["overheads"]) - statistics.fmean(summary["before"]["overheads"])
                change = ((pred_overhead, measured, noise(summary["before"]["overheads"], summary[label]["overheads"])),
                          (pred_records, summary[label]["records"] - summary["before"]["records"]))
            rows.append((name, label, summary[label], change))
    print("\n| workload | run | recognized | CPU overhead per unit of work | records/s | count error (RMS of rounds) "
          "| predicted std. error (RMS) | z (RMS) | small rate | medium rate | domains | points/export "
          "| predicted change: overhead, records/s | measured change: overhead (mean of rounds ± noise), records/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for name, label, row, change in rows:
        run = row["run"]
        medium, small = run["rates"]
        if change is None:
            predicted_text = measured_text = ""
        else:
            (p_o, m_o, band), (p_r, m_r) = change
            predicted_text = f"{_pct(p_o)}, {'-' if p_r is None else f'{p_r:+.0f}'}"
            measured_text = f"{m_o:+.1%}{'' if band is None else f' (±{band:.1%})'}, {m_r:+.0f}"
            if label == "after":
                verdicts.append((name, m_o <= (band or 0.0), m_o, band))
        print(f"| {name} | {label} | {run['workload']} | {row['overhead']:+.0%} | {row['records']:.0f} "
              f"| {row['error']:.2%} | {row['predicted']:.2%} | {row['z']:.2f} | {small:.3g} | {medium:.3g} "
              f"| {','.join(run['domains'])} | {run['points']:.0f} | {predicted_text} | {measured_text} |")
    print()
    for name, ok, change, band in verdicts:
        print(f"{name}: CPU overhead after {'<= before within' if ok else '> before beyond'} its noise "
              f"(mean of rounds {change:+.1%}, noise ±{(band or 0.0):.1%})")
    z_max = max(row["z"] for _, _, row, _ in rows)
    print(f"count errors: largest RMS over rounds {z_max:.2f} predicted standard errors "
          f"({'within' if z_max <= 2 else 'NOT within'} 2)")


def _rms(values):
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else 0.0


def noise(before, after):
    """Twice the standard error of the difference of two runs' mean overheads, from the spread of
    their rounds (None with a single round)."""
    if len(before) < 2 or len(after) < 2:
        return None
    return 2 * math.sqrt(statistics.variance(before) / len(before) + statistics.variance(after) / len(after))

if __name__ == "__main__":
    main()
