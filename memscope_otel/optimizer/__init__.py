"""The adaptive optimizer: export pressure -> sampling rates; workload recognition; recommendations.

Four parts, each usable alone and each in its own module (``pressure``, ``controller``,
``recognizer`` with its ``features``, ``recommendations``), wired together by
:class:`PerformanceOptimizer` (``performance_optimizer``):

- :class:`PressureMonitor` turns what memscope can see through public means into one pressure value
  in [0, 1]: cadence drift of the metric collections, export failures the OpenTelemetry SDK logs,
  the CPU spent draining and reducing records, ring-buffer drops, sampled records per
  second and the estimated time spent in the allocator hooks. Each signal is scaled to [0, 1]
  against a budget; the pressure is the largest of them, so the reason for a change is always one
  named signal.
- :class:`RateController` lowers the small and medium sampling rates multiplicatively when the
  pressure is above the high-water mark, and raises them slowly back toward the configured rates once
  it has stayed below the low-water mark. Large allocations are never touched (always sampled). A
  rate change is one atomic store in C; every record carries the weight in force when it was taken,
  so the estimates stay unbiased through every change.
- :class:`WorkloadRecognizer` classifies the running program as ``web_server``, ``data_processing``,
  ``game_loop``, ``ml_training`` or ``generic`` from measured features (see :func:`classify` for the
  rules and docs/optimizer.md for the measurements behind them).
- :class:`PerformanceOptimizer` (the memscope design's name) runs all of it on the tracker's
  snapshots and offers :meth:`~PerformanceOptimizer.get_optimization_recommendations` and
  :meth:`~PerformanceOptimizer.apply_optimizations`.
"""

from .controller import CALM_COLLECTIONS, DOWN_FACTOR, SMOOTHING, UP_FACTOR, RateChange, RateController
from .features import (ARRAY_MODULES, NETWORK_MODULES, PendingAllocations, follow_level,
                       followed, match_lifetimes)
from .performance_optimizer import PerformanceOptimizer
from .pressure import (CADENCE_DRIFT_BUDGET, DRAIN_COST_BUDGET, DROP_BUDGET, EXPORT_FAILURE_PRESSURE,
                       FAST_PATH_NS, HOOK_SHARE_BUDGET, RING_FILL_BUDGET, SERIES_BUDGET, ExportFailureCounter,
                       Pressure, PressureMonitor, export_interval_from_env)
from .recognizer import MIN_RECORDS, RULES, WORKLOADS, WorkloadRecognizer, classify
from .recommendations import Recommendation, relative_error

__all__ = [
    "ARRAY_MODULES", "CADENCE_DRIFT_BUDGET", "CALM_COLLECTIONS", "DRAIN_COST_BUDGET", "DOWN_FACTOR",
    "DROP_BUDGET", "EXPORT_FAILURE_PRESSURE", "FAST_PATH_NS", "HOOK_SHARE_BUDGET", "MIN_RECORDS",
    "NETWORK_MODULES", "RING_FILL_BUDGET", "RULES", "SERIES_BUDGET", "SMOOTHING", "UP_FACTOR", "WORKLOADS",
    "ExportFailureCounter", "PendingAllocations", "PerformanceOptimizer", "Pressure", "PressureMonitor",
    "RateChange", "RateController", "Recommendation", "WorkloadRecognizer", "classify",
    "export_interval_from_env", "follow_level", "followed", "match_lifetimes", "relative_error",
]
