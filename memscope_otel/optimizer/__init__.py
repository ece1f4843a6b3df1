"""The adaptive optimizer: export pressure -> sampling rates; workload recognition; recommendations.

Four parts, each usable alone and each in its own module (``pressure``, ``controller``,
``recognizer`` with its ``features``, ``recommendations``), wired together by
:class:`PerformanceOptimizer` (``performance_optimizer``):

- :class:`PressureMonitor` turns the costs that sampling rates cause into one pressure value in
  [0, 1]: time in the sampled path, the CPU spent draining, reducing and recognizing records,
  ring fill and drops, the dump writer's busy time and backlog. Each signal is scaled to [0, 1]
  against a budget; the pressure is the largest of them, so the reason for a change is always one
  named signal. Costs the rates do not change (the hooks' fast path, metric series, the
  collections' own CPU, failing or slow exports) are figures and recommendations, never pressure.
- :class:`RateController` lowers the small and medium sampling rates multiplicatively when the
  pressure is above the high-water mark, and raises them slowly back toward the configured rates once
  it has stayed below the low-water mark; a signal that two cuts in a row did not relieve is set
  aside. Large allocations are never touched (always sampled). A
  rate change is one atomic store in C; every record carries the weight in force when it was taken,
  so the estimates stay unbiased through every change.
- :class:`WorkloadRecognizer` classifies the running program as ``web_server``, ``data_processing``,
  ``game_loop``, ``ml_training`` or ``generic`` from measured features (see :func:`classify` for the
  rules and docs/optimizer.md for the measurements behind them).
- :class:`PerformanceOptimizer` (the memscope design's name) runs all of it on the tracker's
  snapshots and offers :meth:`~PerformanceOptimizer.get_optimization_recommendations` and
  :meth:`~PerformanceOptimizer.apply_optimizations`.
"""

from .controller import (CALM_COLLECTIONS, DOWN_FACTOR, FUTILE_CUTS, RELIEF, SMOOTHING, UP_FACTOR, RateChange,
                         RateController)
from .features import ARRAY_MODULES, NETWORK_MODULES, Window
from .performance_optimizer import PerformanceOptimizer
from .pressure import (CADENCE_DRIFT_BUDGET, DRAIN_COST_BUDGET, DROP_BUDGET, DUMP_BACKLOG_BUDGET, DUMP_BUSY_BUDGET,
                       FAST_PATH_NOTE, RECOGNIZER_BUDGET, RING_FILL_BUDGET, SAMPLED_PATH_BUDGET,
                       SERIES_BUDGET, ExportFailureCounter, Pressure, PressureMonitor, export_interval_from_env)
from .recognizer import MIN_RECORDS, RULES, WORKLOADS, WorkloadRecognizer, classify
from .recommendations import Recommendation, relative_error

__all__ = [
    "ARRAY_MODULES", "CADENCE_DRIFT_BUDGET", "CALM_COLLECTIONS", "DRAIN_COST_BUDGET", "DOWN_FACTOR",
    "DROP_BUDGET", "DUMP_BACKLOG_BUDGET", "DUMP_BUSY_BUDGET", "FAST_PATH_NOTE", "FUTILE_CUTS",
    "MIN_RECORDS", "NETWORK_MODULES", "RECOGNIZER_BUDGET", "RELIEF", "RING_FILL_BUDGET", "RULES",
    "SAMPLED_PATH_BUDGET", "SERIES_BUDGET", "SMOOTHING", "UP_FACTOR", "WORKLOADS",
    "ExportFailureCounter", "PerformanceOptimizer", "Pressure", "PressureMonitor",
    "RateChange", "RateController", "Recommendation", "Window", "WorkloadRecognizer", "classify",
    "export_interval_from_env", "relative_error",
]
