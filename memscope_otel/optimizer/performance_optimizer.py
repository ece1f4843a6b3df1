"""The :class:`PerformanceOptimizer` (the memscope design's name): runs the pressure monitor, the
rate controller and the workload recognizer on the tracker's snapshots, and turns what they see
into recommendations."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

import numpy as np

from .. import sampler
from ..records import DOMAINS
from .controller import RateController
from .pressure import (CADENCE_DRIFT_BUDGET, DEFAULT_EXPORT_INTERVAL_S, EXPORT_NOTE, EXPORT_OF_APP_NOTE,
                       FAST_PATH_NOTE, SERIES_BUDGET, PressureMonitor, export_interval_from_env)
from .recognizer import MIN_RECORDS, WorkloadRecognizer, classify
from .recommendations import Recommendation, _fmt, relative_error

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# A metric export that keeps failing is logged once per episode (an episode ends at the first
# collection interval without a failure), and at most this often: the SDK logs each failure itself.
EXPORT_WARNING_EVERY_S = 600.0


def longer_export_interval_ms(interval_s, export_share, of_app):
    """The export interval (ms) to recommend over ``interval_s`` when collecting and exporting take
    ``export_share`` of a core and ``of_app`` of the application's CPU: an export costs the same
    whatever the interval, so both shares fall in proportion to it. The result is the first step of
    the 1-2-5 series at or past the interval that brings both under their notes (EXPORT_NOTE,
    EXPORT_OF_APP_NOTE), at least twice the interval (so one recommendation does it, rather than
    halving it again every window), and never past the SDK's default of 60 s."""
    factor = max(2.0, export_share / EXPORT_NOTE, of_app / EXPORT_OF_APP_NOTE)
    wanted = interval_s * 1000.0 * factor * (1 - 1e-9)  # (a share exactly 5x a note wants 5x, not 10x)
    decade = 10 ** max(0, math.floor(math.log10(max(wanted, 1.0))))
    step = next(s * decade for s in (1, 2, 5, 10) if s * decade >= wanted)
    return min(step, int(DEFAULT_EXPORT_INTERVAL_S * 1000))


class PerformanceOptimizer:
    """Runs the pressure monitor, the rate controller and the workload recognizer on a tracker.

    Started with the tracker when ``OTEL_PYTHON_MEMSCOPE_ADAPTIVE`` is true (``tracker.optimizer``);
    with adaptive false it may still be created to recognize the workload and recommend, but the
    rates stay fixed. ``export_interval_s`` defaults to OTEL_METRIC_EXPORT_INTERVAL (60 s when
    unset, as in the SDK): a reader whose interval is set in code rather than in that variable
    should get the same value here (or in the variable), or the cadence drift is misread."""

    RECOGNITION_WINDOW_S = 60.0   # features are read over windows this long
    RECOGNITION_MIN_S = 1.0       # ... and a window this young is not classified yet
    RECOGNITION_EVERY_S = 5.0     # classify at most this often, at first and after a change of workload,
    RECOGNITION_STEADY_S = 30.0   # ... and while it stays the same, twice as long each time, up to this

    def __init__(self, tracker, export_interval_s=None, adaptive=None):
        config = tracker.config
        self.tracker = tracker
        self.adaptive = config.adaptive if adaptive is None else adaptive
        self.monitor = PressureMonitor(
            export_interval_s if export_interval_s is not None else export_interval_from_env(),
            config.drain_interval_ms / 1000.0, config.max_records_per_thread, self._collection_stats,
            dump_writer=lambda: getattr(self.tracker, "dump_writer", None))
        high, low = config.optimizer_high_water, config.optimizer_low_water
        if not low < high:
            log.warning("OTEL_PYTHON_MEMSCOPE_OPTIMIZER_LOW_WATER=%s must be below "
                        "OTEL_PYTHON_MEMSCOPE_OPTIMIZER_HIGH_WATER=%s; using the defaults 0.3 and 0.6", low, high)
            high, low = 0.6, 0.3
        self.controller = RateController(
            config.medium_sample_rate, config.small_sample_rate, high_water=high, low_water=low,
            floor=config.optimizer_rate_floor, enabled=self.adaptive)
        self.recognizer = WorkloadRecognizer(self._resolve)
        self.workload = "generic"
        self.features = None
        self.reasons = ["not classified yet"]
        self._rates_per_s = None  # exact allocation rates by class over the last collection
        self._last = None
        self._classified_at = -math.inf
        self._classify_every = self.RECOGNITION_EVERY_S
        self._running = False
        self._lock = threading.Lock()  # a snapshot() call can race a collection
        self._export_trouble = False  # in an episode of failing exports
        self._export_warned_at = -math.inf

    # -- wiring --

    def _resolve(self, site_id):
        return self.tracker.resolver.resolve(site_id)

    def _collection_stats(self):
        producer = getattr(self.tracker, "producer", None)
        points = getattr(producer, "metric_points", None) or {}
        passes, fullest = getattr(self.tracker.drainer, "ring_passes", (0, 0))
        return {"collection_ns": getattr(producer, "collection_ns", 0),
                "export_ns": getattr(producer, "export_ns", 0),
                "points": getattr(producer, "collection_points", 0),
                "metric_points_max": max(points.values(), default=0),
                "drain_ns": getattr(self.tracker.drainer, "cpu_ns", 0),
                "ring_passes": passes,
                "records_drained": getattr(self.tracker.drainer, "records_drained", 0),
                "fullest_ring_records": fullest,
                "recognizer_ns": self.recognizer.cpu.ns}

    def start(self):
        """Starts observing the tracker's snapshots and records."""
        if self._running:
            return
        self._running = True
        self.monitor.start()
        self.recognizer.reset()
        self.recognizer.follow_records()
        self.tracker.listeners.append(self.on_snapshot)

    def after_fork_child(self):
        """In a forked child: the counters start again from zero and the drainer is new. The lock
        is made anew: a snapshot in another thread of the parent may have held it at fork()."""
        self._lock = threading.Lock()
        self.monitor.reset()
        self._last = None
        self.recognizer.after_fork_child()
        self.recognizer.reset()
        self.recognizer.follow_records()

    def stop(self):
        """Stops observing (a later start of the sampler begins again at the configured rates)."""
        if not self._running:
            return
        # Every step may run again: a stop() cut short by a signal is finished by the next one.
        self.monitor.stop()
        if self.on_snapshot in self.tracker.listeners:
            self.tracker.listeners.remove(self.on_snapshot)
        self.recognizer.close()
        self._running = False

    @property
    def pressure(self):
        """The latest pressure reading's value in [0, 1] (0 before the second collection)."""
        latest = self.monitor.latest
        return latest.value if latest is not None else 0.0

    def on_snapshot(self, snap):
        """Tracker listener: one snapshot was taken. Only the collections of the metric reader(s)
        memscope serves are observed (those of the tracker's own MeterProvider): a snapshot the
        application takes, or a collection of another provider, would shorten the gap it falls
        into and hide cadence drift."""
        if snap.collected_for is None or snap.collected_for is not self.tracker.producer:
            return
        with self._lock:
            self._on_snapshot(snap)

    def _on_snapshot(self, snap):
        now = time.monotonic()
        if self._last is not None:
            t0, c0 = self._last
            gap = max(now - t0, 1e-9)
            self._rates_per_s = (snap.counters.allocations.astype(np.float64) - c0.allocations).sum(axis=0) / gap
        self._last = (now, snap.counters)
        pressure = self.monitor.observe(snap.counters)
        self.controller.step(pressure, snap.counters)
        if pressure is not None:
            self._report_export_trouble(pressure.figures)
        self.recognizer.observe(snap.counters)
        self._update_workload(snap.counters)

    def _report_export_trouble(self, figures):
        """One clear line when metric exports start failing, not one per collection: the rates
        stay as they are (a collector that is down fails whatever they are), and the counters are
        cumulative, so the next export that succeeds carries everything."""
        failures = figures.get("export_failures", 0)
        if not failures:
            if self._export_trouble:
                log.debug("memscope: metric exports succeed again")
            self._export_trouble = False
            return
        if self._export_trouble:
            return
        self._export_trouble = True
        now = time.monotonic()
        level = logging.WARNING if now - self._export_warned_at >= EXPORT_WARNING_EVERY_S else logging.DEBUG
        self._export_warned_at = now if level == logging.WARNING else self._export_warned_at
        log.log(level, "memscope: metric exports are failing (%d since the last collection; last: %s). "
                "Check the collector and OTEL_EXPORTER_OTLP_ENDPOINT; memscope keeps its sampling rates "
                "(sampling less would not help) and its counters are cumulative, so nothing is lost once "
                "exports succeed again", failures, figures.get("export_failure_message") or "no message")

    def _update_workload(self, counters):
        now = time.monotonic()
        age = now - self.recognizer.window_started
        # Classifying costs a few ms (the frame-clock search): not at every collection, and less
        # often while the answer stays the same (a long-running service pays for it all day). A
        # full window is always classified before the next one starts.
        full = age >= self.RECOGNITION_WINDOW_S
        if age < self.RECOGNITION_MIN_S or (now - self._classified_at < self._classify_every and not full):
            return
        self._classified_at = now
        features = self.recognizer.features(counters)
        if features is not None and features["records"] >= MIN_RECORDS:
            workload, reasons = classify(features)
            if workload != self.workload:
                log.debug("memscope workload: %s -> %s (%s)", self.workload, workload, "; ".join(reasons))
                self._classify_every = self.RECOGNITION_EVERY_S
            else:
                self._classify_every = min(2 * self._classify_every, self.RECOGNITION_STEADY_S)
            self.workload, self.features, self.reasons = workload, features, reasons
        if full:
            self.recognizer.reset(counters)

    def recognize(self):
        """Classifies the current window now: (workload, features, reasons)."""
        self.tracker.refresh()  # drains: the window has seen every record made before
        features = self.recognizer.features()
        workload, reasons = classify(features)
        self.workload, self.features, self.reasons = workload, features, reasons
        return workload, features, reasons

    # -- recommendations --

    def get_optimization_recommendations(self):
        """What to change, why, and the expected effect, from the figures observed so far.

        Rate changes answer only the costs that rates cause (the pressure); the costs that do not
        move with the rates (the hooks' fast path, metric series, a collection's own CPU, failing
        or slow exports) get the recommendations that can help them: fewer hooked domains, a lower
        MAX_SITES, a longer export interval, a look at the collector."""
        config = self.tracker.config
        medium, small = sampler.rates()
        t_medium, t_small = self.controller.target
        pressure = self.monitor.latest
        figures = pressure.figures if pressure is not None else {}
        per_s = self._rates_per_s if self._rates_per_s is not None else np.zeros(3)
        freq = config.frequency_sample_interval
        n10 = self._tenth_site_count()
        cost_ns = self._ns_per_record(figures)
        ctx = _Context(config, small, t_small, per_s, figures, freq, n10, cost_ns, self._records_per_sample(figures))
        recs = []

        # 1. Rate-dependent pressure: lower what dominates the records (not for a signal set aside:
        #    cuts did not relieve it).
        signal = pressure.dominant if pressure is not None else None
        if (pressure is not None and self.controller.smoothed > self.controller.low_water
                and signal not in self.controller.set_aside):
            new = max(small / 4, t_small * self.controller.floor)
            if new < small:
                recs.append(ctx.small_rate(new, f"pressure {self.controller.smoothed:.2f} ({pressure.reason()})"))
        # 2. Drops: drain before a ring fills.
        if figures.get("drop_fraction", 0) > 0:
            per_drain = figures["records_per_s"] * config.drain_interval_ms / 1000.0
            new_ms = max(10, int(config.drain_interval_ms * 0.5 * config.max_records_per_thread / max(per_drain, 1)))
            if new_ms < config.drain_interval_ms:
                recs.append(Recommendation(
                    "drain_interval_ms", config.drain_interval_ms, new_ms,
                    "drain the ring buffers more often",
                    f"{figures['drop_fraction']:.2%} of records were dropped: {figures['records_per_s']:.0f} "
                    f"records/s against rings of {config.max_records_per_thread} records",
                    f"{1000 / new_ms - 1000 / config.drain_interval_ms:+.1f} drains/s (each a C call per thread)",
                    "no more drops: dropped records are lost weight, a downward bias of the estimates"))
        recs.extend(self._rate_independent_recommendations(config, figures))
        # 4. Headroom: buy accuracy when it is cheap.
        if (pressure is not None and self.controller.smoothed < self.controller.low_water
                and small >= t_small and small < 1.0 and relative_error(n10, small, freq) > 0.10
                and ctx.delta_records(small * 2) * cost_ns / 1e9 < 0.01):
            recs.append(ctx.small_rate(min(small * 2, 1.0), f"pressure {self.controller.smoothed:.2f} is low and "
                                       f"the 10th-largest site's estimate has a relative error of "
                                       f"{relative_error(n10, small, freq):.0%}"))
        # 5. The workload's own shape (one recommendation per setting: the general one wins).
        seen = {r.setting for r in recs}
        recs.extend(r for r in self._workload_recommendations(ctx) if r.setting not in seen)
        return recs

    def _ns_per_record(self, figures):
        """Measured CPU per sampled record: the sampled path plus draining and recognizing it."""
        records = figures.get("records_per_s", 0.0) * figures.get("gap_s", 0.0)
        per_record = (figures.get("drain_s", 0.0) + figures.get("recognizer_s", 0.0)) * 1e9 / max(records, 1.0)
        return (figures.get("slow_path_ns_per_record", 0.0) or 0.0) + (per_record if records >= 100 else 0.0)

    def _records_per_sample(self, figures):
        """Records per sampled allocation: a sampled block whose free is seen writes a second
        record. Measured as records/s over the sampled allocations/s the rates predict."""
        per_s = self._rates_per_s
        if per_s is None:
            return 1.0
        medium, small = sampler.rates()
        freq = self.tracker.config.frequency_sample_interval
        slot = 1.0 / freq if freq else 0.0
        expected = per_s[0] * (small + slot) + per_s[1] * (medium + slot) + per_s[2]
        return float(min(max(figures.get("records_per_s", 0.0) / max(expected, 1e-9), 1.0), 2.0))

    def _rate_independent_recommendations(self, config, figures):
        """Recommendations for the costs that do not follow the rates."""
        recs = []
        gap = figures.get("gap_s", 0.0)
        # The unsampled fast path: the hooks' cost per call, whatever the rates. Fewer calls
        # (a domain off) is what reduces it; the domain to turn off is the one whose hooks cost
        # most, its fast path and its share of the sampled path together.
        fast = figures.get("fast_path_share", 0.0)
        hooked = list(config.domains)
        costs = self._domain_costs(figures, hooked)
        if fast > FAST_PATH_NOTE and len(hooked) > 1 and costs:
            costliest = max(costs, key=lambda d: costs[d][0] + costs[d][1])
            fast_d, sampled_d, records_d = costs[costliest]
            keep = [d for d in hooked if d != costliest]
            shares = ", ".join(f"{d} {f + s:.2%} ({f:.2%} fast path)"
                               for d, (f, s, _) in sorted(costs.items(), key=lambda kv: -sum(kv[1][:2])))
            recs.append(Recommendation(
                "domains", ",".join(hooked), ",".join(keep),
                f"hook fewer allocator domains (the {costliest} domain off)",
                f"the hooks' fast path (every small and medium allocation, sampled or not) takes about "
                f"{fast:.2%} of a core at {figures.get('hook_calls_per_s', 0):,.0f} calls/s; sampling rates do not "
                f"change it; the hooks' cost by domain, of a core: {shares}",
                f"about {-(fast_d + sampled_d):+.2%} of a core: the {costliest} domain's fast path and sampled "
                f"path, {-records_d:+.0f} records/s",
                f"the {costliest} domain's allocations are no longer counted or sampled; the other domains' "
                f"estimates are unchanged",
                live=False, predicted_cpu=-(fast_d + sampled_d), predicted_records_per_s=-records_d))
        # Series: bounded by MAX_SITES whatever the rates.
        series_max = figures.get("metric_points_max", 0)
        collection_share = figures.get("collection_s", 0.0) / max(gap, 1e-9)
        if series_max > SERIES_BUDGET / 2 or collection_share > 0.02:
            new_sites = max(5, config.max_sites // 2)
            if new_sites < config.max_sites:
                recs.append(Recommendation(
                    "max_sites", config.max_sites, new_sites, "export fewer per-site series",
                    f"up to {series_max} points per metric per collection (the SDK keeps {SERIES_BUDGET}); "
                    f"memscope's collections took {collection_share:.1%} of a core "
                    f"({figures.get('collection_s', 0) * 1000:.1f} ms in {gap:.2f} s)",
                    f"about {4 * (config.max_sites - new_sites)} fewer points per export",
                    "site totals are unchanged; the sites past the top fold into the 'other' series"))
        # Collecting and exporting, once per export: a longer interval divides it. Measured against
        # a core and against the application's own CPU: a mostly idle program (a frame loop that
        # sleeps 96% of the time) pays for every export as much as a busy one.
        interval = figures.get("interval_s", 0.0)
        export_s = figures.get("collection_s", 0.0) + figures.get("export_s", 0.0)
        export_share, app_s = export_s / max(gap, 1e-9), figures.get("app_cpu_s", 0.0)
        of_app = export_s / app_s if app_s > 0 else 0.0
        if 0 < interval < DEFAULT_EXPORT_INTERVAL_S and (export_share > EXPORT_NOTE or of_app > EXPORT_OF_APP_NOTE):
            new_ms = longer_export_interval_ms(interval, export_share, of_app)
            saved = export_share * (1 - interval * 1000 / new_ms)
            recs.append(Recommendation(
                "export_interval", int(interval * 1000), new_ms,
                f"export metrics every {new_ms / 1000:g} s instead of every {interval:g} s",
                f"each export costs CPU whatever the sampling rates: memscope's collections took "
                f"{figures.get('collection_s', 0.0) * 1000:.1f} ms and the SDK's aggregation and export on its "
                f"exporting thread {figures.get('export_s', 0.0) * 1000:.1f} ms in {gap:.2f} s, {export_share:.2%} "
                f"of a core and {of_app:.1%} of the application's own CPU",
                f"about {-saved:+.2%} of a core",
                f"none: the counters are cumulative; the series get {new_ms / (interval * 1000):.3g} times fewer points",
                live=False, predicted_cpu=-saved, env="OTEL_METRIC_EXPORT_INTERVAL"))
        # Exports failing, or slow enough to stretch the collections: outside memscope.
        failures, drift = figures.get("export_failures", 0), figures.get("drift", 0.0)
        if failures or drift >= CADENCE_DRIFT_BUDGET:
            trouble = (f"{failures} export failure(s) since the last collection"
                       f" (last: {figures.get('export_failure_message') or 'no message'})" if failures else
                       f"collections {gap:.2f} s apart for an export interval of {interval:.2f} s: "
                       f"exports are slow")
            recs.append(Recommendation(
                "metric_exporter", "failing" if failures else "slow", "check the collector",
                "check the metric collector (OTEL_EXPORTER_OTLP_ENDPOINT) or lengthen the export interval",
                trouble + "; sampling rates are left as they are: exports fail or stall whatever they are",
                "none", "none: the counters are cumulative, so the next export that succeeds carries everything",
                live=False, advice=True, predicted_cpu=0.0, predicted_records_per_s=0.0))
        return recs

    def _workload_recommendations(self, ctx):
        f = self.features or {}
        config, small, t_small, per_s, figures, freq, n10 = (ctx.config, ctx.small, ctx.t_small, ctx.per_s,
                                                             ctx.figures, ctx.freq, ctx.n10)
        recs = []
        if self.workload == "ml_training" and f.get("large_byte_fraction", 0) >= 0.5 and small > t_small / 4 * 1.001:
            new = small / 4
            rec = ctx.small_rate(
                new, f"ml_training: {f['large_byte_fraction']:.0%} of the bytes are in large blocks, which are "
                f"always sampled; small allocations are "
                f"{1 - f.get('large_fraction', 0) - f.get('medium_fraction', 0):.0%} of the requests but little "
                f"of the memory")
            recs.append(dataclasses.replace(
                rec, what="sample small allocations less",
                expected_error=f"byte estimates barely move (large blocks are exact); small-site counts: "
                               f"{relative_error(n10, small, freq):.1%} -> {relative_error(n10, new, freq):.1%}"))
        if self.workload == "data_processing" and freq and 0 < freq < 10000 and per_s[0] / freq > per_s[0] * small:
            saved = per_s[0] / freq * 0.9 * ctx.records_per_sample
            recs.append(Recommendation(
                "frequency_sample_interval", freq, freq * 10, "take fewer frequency-guarantee samples",
                f"data_processing at {f.get('alloc_rate', 0):.0f} allocations/s: one in {freq} is sampled for "
                f"certain, more records than the small rate {small:g} takes",
                f"{-saved:+.0f} records/s, {-saved * ctx.cost_ns / 1e9:+.2%} of a core",
                "unbiased either way; rare sizes are seen a little less often",
                live=False, predicted_cpu=-saved * ctx.cost_ns / 1e9, predicted_records_per_s=-saved))
        if self.workload == "web_server" and f.get("threads_live", 0) >= 4:
            per_thread = figures.get("records_per_s", 0) * config.drain_interval_ms / 1000.0 / max(f["threads_live"], 1)
            new_cap = max(1024, 1 << int(math.ceil(math.log2(max(per_thread * 8, 1)))))
            if new_cap < config.max_records_per_thread:
                recs.append(Recommendation(
                    "max_records_per_thread", config.max_records_per_thread, new_cap,
                    "smaller ring buffers per thread",
                    f"web_server with {f['threads_live']:.0f} threads, each writing about {per_thread:.0f} records "
                    f"per drain interval into a ring of {config.max_records_per_thread}",
                    f"{(config.max_records_per_thread - new_cap) * 32 * f['threads_live'] / 1e6:.1f} MB less memory",
                    "unchanged while no records are dropped (watch memscope.sampler.dropped)",
                    live=False, predicted_cpu=0.0, predicted_records_per_s=0.0))
        if self.workload == "game_loop" and f.get("frame_period_ms", 0) > 0:
            frame_ms = f["frame_period_ms"]
            # The sampled path only: the fast path's share of a frame does not move with the rates.
            sampled_ms = figures.get("sampled_path_share", 0) * frame_ms
            if sampled_ms > 0.01 * frame_ms and small > t_small * self.controller.floor * 1.001:
                new = max(small / 2, t_small * self.controller.floor)
                rec = ctx.small_rate(new, f"game_loop: the sampled path takes about {sampled_ms:.3f} ms of each "
                                          f"{frame_ms:.1f} ms frame")
                recs.append(dataclasses.replace(rec, what="sample small allocations less"))
        return recs

    def _domain_costs(self, figures, hooked):
        """{domain: (fast-path share, sampled-path share, records/s)} of the hooked domains, in
        cores, from the last collection: the fast path from FAST_PATH_PAIR_NS, the sampled path
        as the records each domain's allocations yield at the rates in force (large blocks always,
        frequency slots and the small and medium rates otherwise) times the measured CPU per
        record (sampled path, draining, recognizing)."""
        fast = figures.get("fast_path_share_by_domain") or []
        per_s = figures.get("allocations_per_s_by_domain") or []
        if not fast or not per_s:
            return {}
        medium, small = sampler.rates()
        freq = self.tracker.config.frequency_sample_interval
        slot = 1.0 / freq if freq else 0.0
        cost_ns, per_sample = self._ns_per_record(figures), self._records_per_sample(figures)
        costs = {}
        for i, d in enumerate(DOMAINS):
            if d in hooked and i < len(per_s):
                n_small, n_medium, n_large = per_s[i]
                records = (n_small * min(small + slot, 1.0) + n_medium * min(medium + slot, 1.0) + n_large) * per_sample
                costs[d] = (fast[i], records * cost_ns / 1e9, records)
        return costs

    def _tenth_site_count(self):
        counts = np.sort(self.tracker.summary.id_count)[::-1]
        counts = counts[counts > 0]
        return float(counts[min(9, len(counts) - 1)]) if len(counts) else 0.0

    def apply_optimizations(self, recommendations):
        """Applies the live recommendations to the running tracker; returns those applied. The
        others are logged with the environment variable and value that a restart would need
        (advice, such as checking the collector, with what it says)."""
        applied = []
        for rec in recommendations:
            if rec.advice:
                log.info("memscope: %s: %s (%s)", rec.setting, rec.what, rec.why)
                continue
            if not rec.live:
                log.info("memscope: %s needs a restart: set %s=%s", rec.setting, rec.env_var, rec.proposed)
                continue
            value = float(rec.proposed) if "rate" in rec.setting else int(rec.proposed)
            if rec.setting == "small_sample_rate":
                self.controller.set_target(self.controller.target[0], value)
            elif rec.setting == "medium_sample_rate":
                self.controller.set_target(value, self.controller.target[1])
            elif rec.setting == "drain_interval_ms":
                self.tracker.drainer.interval_s = value / 1000.0
                self.monitor.drain_interval_s = value / 1000.0
            elif rec.setting == "max_sites":
                self.tracker.producer.set_max_sites(value)
            else:
                log.warning("memscope: cannot apply %s live", rec.setting)
                continue
            log.info("memscope: applied %s %s -> %s (%s)", rec.setting, rec.current, rec.proposed, rec.why)
            applied.append(rec)
        return applied


class _Context:
    """The figures every rate recommendation predicts from, and the prediction itself."""

    def __init__(self, config, small, t_small, per_s, figures, freq, n10, cost_ns, records_per_sample):
        self.config, self.small, self.t_small, self.per_s, self.figures = config, small, t_small, per_s, figures
        self.freq, self.n10, self.cost_ns, self.records_per_sample = freq, n10, cost_ns, records_per_sample

    def delta_records(self, new):
        """Records/s gained (or lost) at small rate ``new``: the small allocations outside the
        frequency slots, times the records each sample writes (its free too, when seen)."""
        random_part = 1 - (1 / self.freq if self.freq else 0)
        return self.per_s[0] * random_part * (new - self.small) * self.records_per_sample

    def small_rate(self, new, why):
        """A small-rate recommendation with its predicted records/s, CPU and error."""
        delta = self.delta_records(new)
        cpu = delta * self.cost_ns / 1e9
        before, after = relative_error(self.n10, self.small, self.freq), relative_error(self.n10, new, self.freq)
        return Recommendation(
            "small_sample_rate", _fmt(self.t_small), _fmt(new),
            f"{'lower' if new < self.small else 'raise'} the small-allocation sampling rate", why,
            f"{delta:+.0f} records/s, {cpu:+.2%} of a core ({self.cost_ns:.0f} ns per record: sampled path, "
            f"draining, recognizing)",
            f"relative error of the 10th-largest site (about {self.n10:.0f} allocations): {before:.1%} -> {after:.1%}",
            predicted_cpu=cpu, predicted_records_per_s=delta)
