"""Recommendations: one proposed setting change each, with its why and its expected effect on
overhead and on the estimates' relative error."""

from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass(frozen=True)
class Recommendation:
    """One proposed change: ``setting`` (the config keyword), ``current`` -> ``proposed``, what it
    does, why (the observed figures), its expected effect on overhead and on the estimates'
    relative error (as text, and as numbers in ``predicted_cpu`` / ``predicted_records_per_s``),
    and whether it can be applied to the running tracker (``live``) or needs a restart with the
    environment variable set; ``advice`` ones name a problem outside memscope (a collector that
    is down) and set nothing."""

    setting: str
    current: object
    proposed: object
    what: str
    why: str
    expected_overhead: str
    expected_error: str
    live: bool = True
    # The predicted effect in the units the demo measures: change of the tracker's CPU in cores
    # (CPU seconds per second) and of the records sampled per second; None where not predicted.
    predicted_cpu: float | None = None
    predicted_records_per_s: float | None = None
    env: str | None = None  # the variable of a setting that is not memscope's (OTEL_METRIC_EXPORT_INTERVAL)
    advice: bool = False    # nothing memscope can set (check the collector): apply_optimizations logs it

    @property
    def env_var(self):
        """The environment variable of the setting, for a restart."""
        return self.env or "OTEL_PYTHON_MEMSCOPE_" + self.setting.upper()

    def __str__(self):
        if self.advice:
            where = " (advice: nothing memscope can set)"
        else:
            where = "" if self.live else f" (restart with {self.env_var}={self.proposed})"
        return (f"{self.setting}: {self.current} -> {self.proposed}{where}\n  what: {self.what}\n  why: {self.why}\n"
                f"  overhead: {self.expected_overhead}\n  error: {self.expected_error}")


def relative_error(n, rate, frequency_interval):
    """Relative standard error of a Horvitz-Thompson count estimate of ``n`` allocations sampled
    at ``rate`` (the frequency slots, 1 in ``frequency_interval``, are sampled for certain)."""
    if n <= 0 or rate <= 0:
        return float("inf")
    random_part = 1.0 - (1.0 / frequency_interval if frequency_interval else 0.0)
    return math.sqrt(random_part * (1.0 - rate) / (n * rate))


def _fmt(rate):
    return float(f"{rate:.6g}")
