"""The :class:`PerformanceOptimizer` (the memscope design's name): runs the pressure monitor, the
rate controller and the workload recognizer on the tracker's snapshots, and turns what they see
into recommendations."""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np

from .. import sampler
from .controller import RateController
from .pressure import SERIES_BUDGET, PressureMonitor, export_interval_from_env
from .recognizer import MIN_RECORDS, WorkloadRecognizer, classify
from .recommendations import Recommendation, _fmt, relative_error

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

class PerformanceOptimizer:
    """Runs the pressure monitor, the rate controller and the workload recognizer on a tracker.

    Started with the tracker when ``OTEL_PYTHON_MEMSCOPE_ADAPTIVE`` is true (``tracker.optimizer``);
    with adaptive false it may still be created to recognize the workload and recommend, but the
    rates stay fixed. ``export_interval_s`` defaults to OTEL_METRIC_EXPORT_INTERVAL (60 s when
    unset, as in the SDK): a reader whose interval is set in code rather than in that variable
    should get the same value here (or in the variable), or the cadence drift is misread."""

    RECOGNITION_WINDOW_S = 60.0   # features are read over windows this long
    RECOGNITION_MIN_S = 1.0       # ... and a window this young is not classified yet
    RECOGNITION_EVERY_S = 5.0     # classify at most this often

    def __init__(self, tracker, export_interval_s=None, adaptive=None):
        config = tracker.config
        self.tracker = tracker
        self.adaptive = config.adaptive if adaptive is None else adaptive
        self.monitor = PressureMonitor(
            export_interval_s if export_interval_s is not None else export_interval_from_env(),
            config.drain_interval_ms / 1000.0, config.max_records_per_thread, self._collection_stats)
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
        self._running = False
        self._lock = threading.Lock()  # a snapshot() call can race a collection

    # -- wiring --

    def _resolve(self, site_id):
        return self.tracker.resolver.resolve(site_id)

    def _collection_stats(self):
        producer = getattr(self.tracker, "producer", None)
        drain_ns = getattr(self.tracker.drainer, "cpu_ns", 0)
        if producer is None:
            return 0, 0, drain_ns
        return getattr(producer, "collection_ns", 0), getattr(producer, "collection_points", 0), drain_ns

    def start(self):
        """Starts observing the tracker's snapshots and records."""
        if self._running:
            return
        self._running = True
        self.monitor.start()
        self.recognizer.reset()
        self.attach_drainer(self.tracker.drainer)
        self.tracker.listeners.append(self.on_snapshot)

    def attach_drainer(self, drainer):
        """Adds the recognizer's sink to ``drainer``."""
        self.recognizer.start_worker()
        if self.recognizer.sink not in drainer.sinks:
            drainer.sinks.append(self.recognizer.sink)

    def after_fork_child(self, drainer):
        """In a forked child: the counters start again from zero and the drainer is new. The lock
        is made anew: a snapshot in another thread of the parent may have held it at fork()."""
        self._lock = threading.Lock()
        self.monitor.reset()
        self._last = None
        self.recognizer.after_fork_child()
        self.recognizer.reset()
        self.attach_drainer(drainer)

    def stop(self):
        """Stops observing (a later start of the sampler begins again at the configured rates)."""
        if not self._running:
            return
        # Every step may run again: a stop() cut short by a signal is finished by the next one.
        self.monitor.stop()
        if self.on_snapshot in self.tracker.listeners:
            self.tracker.listeners.remove(self.on_snapshot)
        if self.recognizer.sink in self.tracker.drainer.sinks:
            self.tracker.drainer.sinks.remove(self.recognizer.sink)
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
        self.recognizer.observe(snap.counters)
        self._update_workload(snap.counters)

    def _update_workload(self, counters):
        now = time.monotonic()
        age = now - self.recognizer.window_started
        # Classifying costs a few ms (the frame-clock search): not at every collection.
        if age < self.RECOGNITION_MIN_S or now - self._classified_at < self.RECOGNITION_EVERY_S:
            return
        self._classified_at = now
        # From the batches the worker has read: a read here would run inside the collection (its
        # numpy calls each a possible GIL take-back, in the collection's time). The worker
        # then reads what is queued, for the next classification.
        features = self.recognizer.features(counters, read_queue=False)
        self.recognizer.read_soon()
        if features is not None and features["records"] >= MIN_RECORDS:
            workload, reasons = classify(features)
            if workload != self.workload:
                log.debug("memscope workload: %s -> %s (%s)", self.workload, workload, "; ".join(reasons))
            self.workload, self.features, self.reasons = workload, features, reasons
        if age >= self.RECOGNITION_WINDOW_S:
            self.recognizer.reset(counters)

    def recognize(self):
        """Classifies the current window now: (workload, features, reasons)."""
        self.tracker.refresh()  # drains, so the sink has seen every record
        features = self.recognizer.features()
        workload, reasons = classify(features)
        self.workload, self.features, self.reasons = workload, features, reasons
        return workload, features, reasons

    # -- recommendations --

    def get_optimization_recommendations(self):
        """What to change, why, and the expected effect, from the figures observed so far."""
        config = self.tracker.config
        medium, small = sampler.rates()
        t_medium, t_small = self.controller.target
        pressure = self.monitor.latest
        figures = pressure.figures if pressure is not None else {}
        per_s = self._rates_per_s if self._rates_per_s is not None else np.zeros(3)
        slow_ns = figures.get("slow_path_ns_per_record", 0.0) or 0.0
        freq = config.frequency_sample_interval
        n10 = self._tenth_site_count()
        recs = []

        def small_rate_change(new, why):
            delta_records = per_s[0] * (1 - (1 / freq if freq else 0)) * (new - small)
            share = delta_records * slow_ns / 1e9
            before, after = relative_error(n10, small, freq), relative_error(n10, new, freq)
            recs.append(Recommendation(
                "small_sample_rate", _fmt(t_small), _fmt(new),
                f"{'lower' if new < small else 'raise'} the small-allocation sampling rate",
                why,
                f"{delta_records:+.0f} records/s, {share:+.2%} of a core in the sampled path "
                f"({slow_ns:.0f} ns per record)",
                f"relative error of the 10th-largest site (about {n10:.0f} allocations): "
                f"{before:.1%} -> {after:.1%}"))

        # 1. Pressure: lower what dominates the records.
        if pressure is not None and self.controller.smoothed > self.controller.low_water:
            new = max(small / 4, t_small * self.controller.floor)
            if new < small:
                small_rate_change(new, f"pressure {self.controller.smoothed:.2f} ({pressure.reason()})")
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
        # 3. Series: fewer per-site series when the collection is large or slow.
        series = figures.get("series", 0)
        collection_share = figures.get("collection_s", 0) / max(figures.get("interval_s", 1), 1e-9)
        if series > SERIES_BUDGET / 2 or collection_share > 0.05:
            new_sites = max(5, config.max_sites // 2)
            if new_sites < config.max_sites:
                recs.append(Recommendation(
                    "max_sites", config.max_sites, new_sites, "export fewer per-site series",
                    f"{series} points per collection; collection took {figures.get('collection_s', 0) * 1000:.1f} ms",
                    f"about {4 * (config.max_sites - new_sites)} fewer points per export",
                    "site totals are unchanged; the sites past the top fold into the 'other' series"))
        # 4. Headroom: buy accuracy when it is cheap.
        if (pressure is not None and self.controller.smoothed < self.controller.low_water
                and figures.get("hooks", 0) < 0.25 and small >= t_small and small < 1.0
                and relative_error(n10, small, freq) > 0.10 and per_s[0] * small * 2 * slow_ns / 1e9 < 0.01):
            small_rate_change(min(small * 2, 1.0), f"pressure {self.controller.smoothed:.2f} is low and the "
                              f"10th-largest site's estimate has a relative error of "
                              f"{relative_error(n10, small, freq):.0%}")
        # 5. The workload's own shape (one recommendation per setting: the general one wins).
        seen = {r.setting for r in recs}
        recs.extend(r for r in self._workload_recommendations(config, small, t_small, per_s, figures, slow_ns, freq,
                                                              n10) if r.setting not in seen)
        return recs

    def _workload_recommendations(self, config, small, t_small, per_s, figures, slow_ns, freq, n10):
        f = self.features or {}
        recs = []
        if self.workload == "ml_training" and f.get("large_byte_fraction", 0) >= 0.5 and small > t_small / 4 * 1.001:
            new = small / 4
            recs.append(Recommendation(
                "small_sample_rate", _fmt(t_small), _fmt(new), "sample small allocations less",
                f"ml_training: {f['large_byte_fraction']:.0%} of the bytes are in large blocks, which are always "
                f"sampled; small allocations are {1 - f.get('large_fraction', 0) - f.get('medium_fraction', 0):.0%} "
                f"of the requests but little of the memory",
                f"{per_s[0] * (new - small):+.0f} records/s, {per_s[0] * (new - small) * slow_ns / 1e9:+.2%} of a core",
                f"byte estimates barely move (large blocks are exact); small-site counts: "
                f"{relative_error(n10, small, freq):.1%} -> {relative_error(n10, new, freq):.1%}"))
        if self.workload == "data_processing" and freq and 0 < freq < 10000 and per_s[0] / freq > per_s[0] * small:
            recs.append(Recommendation(
                "frequency_sample_interval", freq, freq * 10, "take fewer frequency-guarantee samples",
                f"data_processing at {f.get('alloc_rate', 0):.0f} allocations/s: one in {freq} is sampled for "
                f"certain, more records than the small rate {small:g} takes",
                f"{-per_s[0] / freq * 0.9:+.0f} records/s, {-per_s[0] / freq * 0.9 * slow_ns / 1e9:+.2%} of a core",
                "unbiased either way; rare sizes are seen a little less often",
                live=False))
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
                    live=False))
        if self.workload == "game_loop" and f.get("frame_period_ms", 0) > 0:
            frame_ms = f["frame_period_ms"]
            hook_ms = figures.get("hook_share", 0) * frame_ms
            if hook_ms > 0.01 * frame_ms and small > t_small * self.controller.floor * 1.001:
                new = max(small / 2, t_small * self.controller.floor)
                recs.append(Recommendation(
                    "small_sample_rate", _fmt(t_small), _fmt(new), "sample small allocations less",
                    f"game_loop: the hooks take about {hook_ms:.3f} ms of each {frame_ms:.1f} ms frame",
                    f"{per_s[0] * (new - small) * slow_ns / 1e6 * frame_ms / 1000:+.3f} ms per frame",
                    f"{relative_error(n10, small, freq):.1%} -> {relative_error(n10, new, freq):.1%} for the "
                    f"10th-largest site"))
        return recs

    def _tenth_site_count(self):
        counts = np.sort(self.tracker.summary.id_count)[::-1]
        counts = counts[counts > 0]
        return float(counts[min(9, len(counts) - 1)]) if len(counts) else 0.0

    def apply_optimizations(self, recommendations):
        """Applies the live recommendations to the running tracker; returns those applied. The
        others are logged with the environment variable and value that a restart would need."""
        applied = []
        for rec in recommendations:
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
