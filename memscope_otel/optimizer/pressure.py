"""Pressure: the costs that sampling rates cause, measured, scaled to one value in [0, 1].

Only costs that move with the rates are pressure: time in the sampled path, the CPU of draining,
reducing and recognizing records, ring fill and drops, the dump writer's busy time and backlog
(and any source added with :meth:`PressureMonitor.add_source`, e.g. a profile exporter's queue).
Each is scaled against a budget; the pressure is the largest, so the reason for a rate change is
always one named signal. Costs that do not move with the rates are figures only, never pressure:
the unsampled fast path of the hooks, the points per collection (bounded by MAX_SITES), the rest
of a collection's CPU, and the health of the metric export (cadence drift, export failures).
Lowering rates for them would throw accuracy away and buy nothing; they become recommendations
instead (performance_optimizer)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..cpu_meter import fast_path_ns, hook_calls

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# Budgets of the rate-dependent signals: each reaches pressure 1 at its budget (docs/optimizer.md).
SAMPLED_PATH_BUDGET = 0.05   # the sampled path (C-timed) taking 5% of one core
DRAIN_COST_BUDGET = 0.10     # draining and reducing records taking 10% of one core
RECOGNIZER_BUDGET = 0.05     # the workload recognizer reading records taking 5% of one core
DROP_BUDGET = 0.01           # 1% of the records lost to full rings
# Rings at a drain: 0 up to half full (where the C side wakes the drainer: normal operation),
# 1 when a drain finds a whole ring's worth of records (the drainer falling behind).
RING_FILL_WAKE = 0.5
RING_FILL_BUDGET = 1.0
DUMP_BUSY_BUDGET = 0.5       # the dump writer busy half of the wall time (the drainer writes it)
DUMP_BACKLOG_BUDGET = 1.0    # one write lasting a whole drain interval (the rings wait meanwhile)

# Thresholds of the rate-independent figures, for the recommendations and the export log line.
SERIES_BUDGET = 2000         # points of one metric per collection (the SDK's default cardinality limit)
CADENCE_DRIFT_BUDGET = 1.0   # a collection gap of twice the export interval
FAST_PATH_NOTE = 0.005       # the unsampled fast path over 0.5% of one core: recommend fewer hooks
EXPORT_NOTE = 0.02           # collecting and exporting over 2% of one core: recommend exporting less often,
EXPORT_OF_APP_NOTE = 0.02    # or over 2% of the application's own CPU: a mostly idle program pays for each export,
                             # and exact counting alone costs a frame loop +6% of the 10% it may be slowed by
                             # (benchmarks/game_loop_cost.py --in-process, docs/performance.md)
DEFAULT_EXPORT_INTERVAL_S = 60.0  # the SDK's periodic reader's default; never recommended past it


def export_interval_from_env(environ=None):
    """OTEL_METRIC_EXPORT_INTERVAL in seconds (default 60), as the SDK's periodic reader reads it."""
    environ = os.environ if environ is None else environ
    text = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "")
    if not text.strip():
        return DEFAULT_EXPORT_INTERVAL_S
    try:
        value = float(text)
        if not (math.isfinite(value) and value > 0):
            raise ValueError
    except ValueError:
        log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is invalid (accepted: a positive number of ms); "
                    "the optimizer assumes 60000", text)
        return DEFAULT_EXPORT_INTERVAL_S
    return value / 1000.0


# ---------------------------------------------------------------------------------------------
# Pressure signals
# ---------------------------------------------------------------------------------------------

class ExportFailureCounter(logging.Handler):
    """Counts the export failures the OpenTelemetry SDK and exporters report on their loggers.

    The SDK's periodic reader logs "Exception while exporting metrics" at ERROR when an exporter
    raises, and the OTLP exporters log failed and retried exports at WARNING or above; a logging
    handler is the public way to see them. An exporter that returns FAILURE silently is invisible
    here, but its retries still show up as cadence drift. Both are figures, never pressure: a
    collector that is down fails whatever the sampling rates."""

    PREFIXES = ("opentelemetry.sdk.metrics", "opentelemetry.exporter")

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.failures = 0
        self.last_message = ""  # the latest one, cut short, for memscope's own log line

    def emit(self, record):
        """Counts a WARNING-or-worse record of the SDK's or an exporter's loggers."""
        if record.name.startswith(self.PREFIXES):
            self.failures += 1
            try:
                text = record.getMessage()
                if record.exc_info and record.exc_info[1] is not None:
                    text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
                self.last_message = text[:300]
            except Exception:  # a record whose message cannot be formatted still counts
                pass

    def install(self):
        """Attaches to the SDK's and the exporters' loggers (propagation is left as it was)."""
        for name in self.PREFIXES:
            logging.getLogger(name).addHandler(self)

    def uninstall(self):
        """Detaches from those loggers."""
        for name in self.PREFIXES:
            logging.getLogger(name).removeHandler(self)


@dataclass(frozen=True)
class Pressure:
    """One pressure reading: ``value`` in [0, 1] (the largest component), the components (each
    rate-dependent signal over its budget, capped at 1), the uncapped ``loads`` (so that the
    controller can see a signal at 5x its budget fall to 2.5x), the raw figures (rate-dependent
    and rate-independent), which component dominated, and a text per component."""

    value: float
    components: dict
    figures: dict
    dominant: str
    loads: dict = field(default=None)
    texts: dict = field(default=None)

    def load(self, name):
        """The uncapped load of one component (its figure over its budget)."""
        loads = self.loads if self.loads is not None else self.components
        return loads.get(name, 0.0)

    def reason(self, name=None):
        """A component (default: the dominant one) with its figure, for logs and recommendations."""
        name = name or self.dominant
        return f"{name}: {(self.texts or {}).get(name, '')}"


class PressureMonitor:
    """Reads the pressure at each metric collection from two consecutive tracker snapshots.

    ``collection_stats`` returns a dict of cumulative figures: ``collection_ns`` (memscope's
    callbacks' own CPU, past draining and recognizing), ``export_ns`` (the SDK's exporting
    thread outside the callbacks), ``points``, ``drain_ns`` (draining on any
    thread), ``recognizer_ns``, ``metric_points_max`` (the most points one metric had in the
    last collection), ``ring_passes`` (the mover's and the drainer's passes over the rings),
    ``records_drained`` and ``fullest_ring_records`` (the drainer's); or None. ``dump_writer`` returns the running DumpWriter or None.
    ``export_interval_s`` is the configured export interval (OTEL_METRIC_EXPORT_INTERVAL): the gap
    between collections beyond it is drift, a figure. Its caller (PerformanceOptimizer.on_snapshot)
    observes only the collections of the reader(s) memscope serves: any other snapshot would shorten
    the gap it falls into and hide drift."""

    def __init__(self, export_interval_s, drain_interval_s, ring_capacity, collection_stats=None, clock=None,
                 dump_writer=None, cpu_clock=None):
        self.export_interval_s = export_interval_s
        self.drain_interval_s = drain_interval_s
        self.ring_capacity = ring_capacity
        self._collection_stats = collection_stats
        self._dump_writer = dump_writer
        self._clock = clock or time.monotonic
        self._cpu_clock = cpu_clock or time.process_time  # the process's CPU: the application's and ours
        self._sources = []
        self.failures = ExportFailureCounter()
        self._last = None
        self._last_dump = None  # (writer, write_ns, bytes, monotonic ns)
        self.latest = None

    def add_source(self, source):
        """Adds a rate-dependent pressure source: ``source(gap_s)`` returns
        ``{name: (load, text)}`` (load: the figure over its budget, uncapped) for the interval that
        just ended. For costs that grow with the samples taken, e.g. a profile exporter's queue,
        export time and payload per interval; nothing else belongs here."""
        self._sources.append(source)

    def start(self):
        """Starts counting export failures."""
        self.failures.install()

    def reset(self):
        """Forgets the previous collection (after a fork the counters restart from zero)."""
        self._last = None
        self._last_dump = None

    def stop(self):
        """Stops counting export failures."""
        self.failures.uninstall()

    def _stats(self):
        stats = self._collection_stats() if self._collection_stats else None
        return dict(stats or {})

    def _dump_figures(self, gap):
        """The dump writer's busy share, throughput and longest write since the last reading."""
        writer = self._dump_writer() if self._dump_writer else None
        now_ns = time.monotonic_ns()
        if writer is None:
            self._last_dump = None
            return {}
        current = (writer, writer.write_ns, writer.bytes_written, now_ns)
        last, self._last_dump = self._last_dump, current
        if last is None or last[0] is not writer:
            return {}
        write_s = (writer.write_ns - last[1]) / 1e9
        written = writer.bytes_written - last[2]
        longest = max((d for end, d, _ in list(writer.recent_writes) if end > last[3]), default=0) / 1e9
        return {"dump_busy": write_s / gap, "dump_bytes_per_s": written / gap,
                "dump_mb_per_s_writing": written / 1e6 / write_s if write_s > 0 else 0.0,
                "dump_longest_write_s": longest}

    def observe(self, counters):
        """The pressure since the previous observation (None for the first one)."""
        now, cpu_now = self._clock(), self._cpu_clock()
        stats = self._stats()
        current = (now, counters, stats, self.failures.failures, cpu_now)
        last, self._last = self._last, current
        if last is None:
            self._dump_figures(1.0)
            return None
        t0, c0, stats0, failures0, cpu0 = last
        gap = max(now - t0, 1e-9)

        def delta(key):  # (a forked child's new drainer counts from 0)
            return max(stats.get(key, 0) - stats0.get(key, 0), 0) / 1e9

        records = counters.samples - c0.samples
        dropped = counters.dropped - c0.dropped
        drop_fraction = dropped / max(records + dropped, 1)
        records_per_s = (records + dropped) / gap
        passes = stats.get("ring_passes", 0) - stats0.get("ring_passes", 0)
        fullest = stats.get("fullest_ring_records", 0) - stats0.get("fullest_ring_records", 0)
        if passes > 0 and fullest >= 0:  # measured: the records a pass found in the fullest ring
            ring_fill = fullest / passes / self.ring_capacity
        else:  # no drain seen (a monitor without the drainer's figures): as if at every interval
            ring_fill = records_per_s * self.drain_interval_s / self.ring_capacity
        calls = hook_calls(counters) - hook_calls(c0)
        slow_ns = counters.slow_path_ns - c0.slow_path_ns
        sampled_share = slow_ns / 1e9 / gap
        allocations = counters.allocations.astype(np.float64) - c0.allocations
        fast_ns = fast_path_ns(allocations)
        fast_share = float(fast_ns.sum()) / 1e9 / gap
        drain_s, recognizer_s, collection_s = delta("drain_ns"), delta("recognizer_ns"), delta("collection_ns")
        export_s = delta("export_ns")
        # The application's own CPU: the process's, less every part of ours (the hooks run on its threads).
        ours = drain_s + recognizer_s + collection_s + export_s + (sampled_share + fast_share) * gap
        app_cpu_s = max(cpu_now - cpu0 - ours, 0.0)
        export_failures = self.failures.failures - failures0
        drift = max(gap / self.export_interval_s - 1.0, 0.0)
        figures = {
            # rate-dependent
            "records_per_s": records_per_s, "drop_fraction": drop_fraction, "ring_fill": ring_fill,
            "sampled_path_share": sampled_share,
            "slow_path_ns_per_record": slow_ns / max(counters.slow_path_calls - c0.slow_path_calls, 1),
            "drain_s": drain_s, "drain_share": drain_s / gap,
            "drain_ns_per_record": drain_s * 1e9 / max(records, 1),
            "recognizer_s": recognizer_s, "recognizer_share": recognizer_s / gap,
            # rate-independent: figures only
            "gap_s": gap, "interval_s": self.export_interval_s, "drift": drift,
            "export_failures": export_failures, "export_failure_message": self.failures.last_message,
            "fast_path_share": fast_share, "hook_share": sampled_share + fast_share,
            "hook_calls_per_s": float(calls.sum()) / gap,
            "fast_path_share_by_domain": (fast_ns / 1e9 / gap).tolist(),
            "allocations_per_s_by_domain": (allocations / gap).tolist(),  # [domain][class]
            "collection_s": collection_s, "export_s": export_s, "app_cpu_s": app_cpu_s,
            "series": max(stats.get("points", 0) - stats0.get("points", 0), 0),
            "metric_points_max": stats.get("metric_points_max", 0),
        }
        figures.update(self._dump_figures(gap))
        loads = {
            "sampled_path": sampled_share / SAMPLED_PATH_BUDGET,
            "drain_cost": drain_s / gap / DRAIN_COST_BUDGET,
            "recognizer": recognizer_s / gap / RECOGNIZER_BUDGET,
            "drops": drop_fraction / DROP_BUDGET,
            "ring_fill": max(ring_fill - RING_FILL_WAKE, 0.0) / (RING_FILL_BUDGET - RING_FILL_WAKE),
        }
        texts = {
            "sampled_path": f"{sampled_share:.2%} of a core in the sampled path "
                            f"({figures['slow_path_ns_per_record']:.0f} ns per sampled event)",
            "drain_cost": f"draining and reducing records took {drain_s * 1000:.1f} ms of CPU in {gap:.2f} s "
                          f"({figures['drain_ns_per_record']:.0f} ns per record)",
            "recognizer": f"the workload recognizer took {recognizer_s * 1000:.1f} ms of CPU in {gap:.2f} s",
            "drops": f"{drop_fraction:.2%} of records dropped",
            "ring_fill": f"a drain found {ring_fill:.0%} of a ring's capacity in the fullest ring ({records_per_s:.0f} records/s)",
        }
        if "dump_busy" in figures:
            loads["dump_writer"] = figures["dump_busy"] / DUMP_BUSY_BUDGET
            loads["dump_backlog"] = figures["dump_longest_write_s"] / self.drain_interval_s / DUMP_BACKLOG_BUDGET
            texts["dump_writer"] = (f"the dump writer was busy {figures['dump_busy']:.0%} of the time, "
                                    f"{figures['dump_bytes_per_s'] / 1e3:.0f} kB/s at "
                                    f"{figures['dump_mb_per_s_writing']:.2f} MB/s while writing")
            texts["dump_backlog"] = (f"one dump write took {figures['dump_longest_write_s'] * 1000:.0f} ms "
                                     f"for a drain interval of {self.drain_interval_s * 1000:.0f} ms")
        for source in self._sources:
            try:
                for name, (load, text) in source(gap).items():
                    loads[name], texts[name] = float(load), text
            except Exception:  # a broken source must not stop the optimizer
                log.exception("memscope pressure source %r failed", source)
        components = {name: min(max(load, 0.0), 1.0) for name, load in loads.items()}
        dominant = max(components, key=components.get)
        self.latest = Pressure(components[dominant], components, figures, dominant, loads, texts)
        return self.latest
