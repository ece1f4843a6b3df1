"""Pressure: what memscope can see through public means, scaled to one value in [0, 1].

Each signal (cadence drift of the metric collections, export failures the OpenTelemetry SDK logs,
the CPU spent draining and reducing records, ring drops, sampled records per second, the time
spent in the allocator hooks) is scaled against a budget; the pressure is the largest, so the
reason for a rate change is always one named signal. The rest of a collection's cost and its
point count are figures only: they follow the number of sites, not the rates."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass


log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# Cost of one unsampled hook call (counter bumps + countdown), in ns. The C side times only the
# sampled path (slow_path_ns); the fast path is too short to time per call, so it is this constant,
# measured once with `python benchmarks/optimizer.py fastpath` (hooks on with every rate at 0 and
# no frequency guarantee, minus hooks off, per hook call): 7 to 15 ns in the least disturbed runs
# on a shared 2-core machine. Over-estimating it only errs on the safe side. See docs/optimizer.md.
FAST_PATH_NS = 10.0

# Budgets: each signal reaches pressure 1 at its budget. Chosen so that the demo workloads at the
# default settings stay well under the low-water mark (docs/optimizer.md lists their figures).
CADENCE_DRIFT_BUDGET = 1.0   # a collection gap of twice the export interval
DRAIN_COST_BUDGET = 0.10     # draining and reducing records taking 10% of one core
SERIES_BUDGET = 2000         # points per collection (the SDK's default per-metric cardinality limit)
DROP_BUDGET = 0.01           # 1% of the records lost to full rings
RING_FILL_BUDGET = 1.0       # records of one drain interval filling a whole ring
HOOK_SHARE_BUDGET = 0.10     # 10% of one core spent in the hooks
EXPORT_FAILURE_PRESSURE = 1.0  # any export failure logged since the previous collection


def export_interval_from_env(environ=None):
    """OTEL_METRIC_EXPORT_INTERVAL in seconds (default 60), as the SDK's periodic reader reads it."""
    environ = os.environ if environ is None else environ
    text = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "")
    if not text.strip():
        return 60.0
    try:
        value = float(text)
        if not (math.isfinite(value) and value > 0):
            raise ValueError
    except ValueError:
        log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is invalid (accepted: a positive number of ms); "
                    "the optimizer assumes 60000", text)
        return 60.0
    return value / 1000.0


# ---------------------------------------------------------------------------------------------
# Pressure signals
# ---------------------------------------------------------------------------------------------

class ExportFailureCounter(logging.Handler):
    """Counts the export failures the OpenTelemetry SDK and exporters report on their loggers.

    The SDK's periodic reader logs "Exception while exporting metrics" at ERROR when an exporter
    raises, and the OTLP exporters log failed and retried exports at WARNING or above; a logging
    handler is the public way to see them. An exporter that returns FAILURE silently is invisible
    here, but its retries still show up as cadence drift."""

    PREFIXES = ("opentelemetry.sdk.metrics", "opentelemetry.exporter")

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.failures = 0

    def emit(self, record):
        """Counts a WARNING-or-worse record of the SDK's or an exporter's loggers."""
        if record.name.startswith(self.PREFIXES):
            self.failures += 1

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
    """One pressure reading: ``value`` in [0, 1] (the largest component), the components, the
    raw figures they came from, and which one dominated."""

    value: float
    components: dict
    figures: dict
    dominant: str

    def reason(self):
        """The dominant signal with its figure, for logs and recommendations."""
        f = self.figures
        texts = {
            "cadence": f"collections {f.get('gap_s', 0):.2f} s apart for an export interval of "
                       f"{f.get('interval_s', 0):.2f} s (drift {f.get('drift', 0):.2f})",
            "export_failures": f"{f.get('export_failures', 0)} export failure(s) logged since the last collection",
            "drain_cost": f"draining and reducing records took {f.get('drain_s', 0) * 1000:.1f} ms of CPU "
                          f"in {f.get('gap_s', 0):.2f} s",
            "drops": f"{f.get('drop_fraction', 0):.2%} of records dropped",
            "ring_fill": f"{f.get('records_per_s', 0):.0f} records/s fill {f.get('ring_fill', 0):.0%} "
                         f"of a ring per drain interval",
            "hooks": f"{f.get('hook_share', 0):.1%} of a core spent in the hooks",
        }
        return f"{self.dominant}: {texts.get(self.dominant, '')}"


class PressureMonitor:
    """Reads the pressure at each metric collection from two consecutive tracker snapshots.

    ``export_interval_s`` is the configured export interval (OTEL_METRIC_EXPORT_INTERVAL); the
    gap between two collections beyond it is cadence drift. ``collection_stats`` returns the
    cumulative (collection CPU ns, points, drain CPU ns): what memscope's instrument callbacks have
    spent and produced, and what draining and reducing records cost on any thread; or None. The
    collection's cost past its drain and the points it returns depend on the number of sites, not
    on the rates: they are figures, never pressure (cutting rates would buy nothing).
    Its caller (PerformanceOptimizer.on_snapshot) observes only the collections of the reader(s)
    memscope serves: any other snapshot would shorten the gap it falls into and hide drift."""

    def __init__(self, export_interval_s, drain_interval_s, ring_capacity, collection_stats=None, clock=None):
        self.export_interval_s = export_interval_s
        self.drain_interval_s = drain_interval_s
        self.ring_capacity = ring_capacity
        self._collection_stats = collection_stats
        self._clock = clock or time.monotonic
        self.failures = ExportFailureCounter()
        self._last = None  # (time, counters, collection ns, points, failures)
        self.latest = None

    def start(self):
        """Starts counting export failures."""
        self.failures.install()

    def reset(self):
        """Forgets the previous collection (after a fork the counters restart from zero)."""
        self._last = None

    def stop(self):
        """Stops counting export failures."""
        self.failures.uninstall()

    def observe(self, counters):
        """The pressure since the previous observation (None for the first one)."""
        now = self._clock()
        ns, points, drain_ns = self._collection_stats() if self._collection_stats else (0, 0, 0)
        current = (now, counters, ns, points, drain_ns, self.failures.failures)
        last, self._last = self._last, current
        if last is None:
            return None
        t0, c0, ns0, points0, drain_ns0, failures0 = last
        gap = max(now - t0, 1e-9)
        drift = max(gap / self.export_interval_s - 1.0, 0.0)
        records = counters.samples - c0.samples
        dropped = counters.dropped - c0.dropped
        drop_fraction = dropped / max(records + dropped, 1)
        records_per_s = (records + dropped) / gap
        ring_fill = records_per_s * self.drain_interval_s / self.ring_capacity
        calls = int((counters.allocations.sum() + counters.deallocations.sum())
                    - (c0.allocations.sum() + c0.deallocations.sum()))
        hook_ns = (counters.slow_path_ns - c0.slow_path_ns) + FAST_PATH_NS * calls
        hook_share = hook_ns / 1e9 / gap
        collection_s = (ns - ns0) / 1e9
        drain_s = max(drain_ns - drain_ns0, 0) / 1e9  # (a forked child's new drainer counts from 0)
        series = points - points0
        export_failures = self.failures.failures - failures0
        figures = {
            "gap_s": gap, "interval_s": self.export_interval_s, "drift": drift,
            "export_failures": export_failures, "collection_s": collection_s, "series": series,
            "drain_s": drain_s, "drain_share": drain_s / gap,
            "drop_fraction": drop_fraction, "records_per_s": records_per_s, "ring_fill": ring_fill,
            "hook_share": hook_share, "hook_calls_per_s": calls / gap,
            "slow_path_ns_per_record": (counters.slow_path_ns - c0.slow_path_ns)
            / max(counters.slow_path_calls - c0.slow_path_calls, 1),
        }
        components = {
            "cadence": min(drift / CADENCE_DRIFT_BUDGET, 1.0),
            "export_failures": EXPORT_FAILURE_PRESSURE if export_failures else 0.0,
            "drain_cost": min(drain_s / gap / DRAIN_COST_BUDGET, 1.0),
            "drops": min(drop_fraction / DROP_BUDGET, 1.0),
            "ring_fill": min(ring_fill / RING_FILL_BUDGET, 1.0),
            "hooks": min(hook_share / HOOK_SHARE_BUDGET, 1.0),
        }
        dominant = max(components, key=components.get)
        self.latest = Pressure(components[dominant], components, figures, dominant)
        return self.latest


# ---------------------------------------------------------------------------------------------
# Controller
# ---------------------------------------------------------------------------------------------
