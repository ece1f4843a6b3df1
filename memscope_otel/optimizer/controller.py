"""The rate controller: pressure above the high-water mark halves the small and medium rates,
pressure below the low-water mark for a while raises them slowly back toward the configured rates.
A cut that does not relieve the signal it answered is not repeated: after two such cuts in a row
the signal is set aside (its cost does not follow the rates here) and the rates recover."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .. import sampler

log = logging.getLogger("memscope_otel.optimizer")  # one logger for the whole optimizer

# Controller steps: fast down, slow up (one step per collection).
DOWN_FACTOR = 0.5
UP_FACTOR = 1.5
CALM_COLLECTIONS = 3         # collections below the low-water mark before the first step up
SMOOTHING = 0.5              # weight of the newest reading in the smoothed pressure
# A cut has relieved its signal when the next reading of that signal (uncapped) is at most this
# fraction of the reading it answered. Halving the rates halves a signal that follows them
# exactly; frequency slots and per-drain fixed costs keep some of it, hence not 0.5.
RELIEF = 0.9
FUTILE_CUTS = 2              # cuts in a row without relief before a signal is set aside


@dataclass(frozen=True)
class RateChange:
    """One change of the sampling rates, with the exact allocation counters at that moment (so the
    variance of every estimate can be computed phase by phase)."""

    time: float
    medium: float
    small: float
    reason: str
    pressure: float
    allocations: np.ndarray  # (4, 3) exact counters when the change was made


class RateController:
    """Moves the small and medium rates between ``floor`` x configured and the configured rates.

    ``high_water`` / ``low_water``: the smoothed pressure above which rates halve at each
    collection, and below which (for ``CALM_COLLECTIONS`` collections) they grow by half a step at
    each collection until they are back at the configured rates. ``enabled=False`` (ADAPTIVE=false)
    never changes a rate.

    No cut without effect: the reading after each cut must show the signal it answered at most
    ``RELIEF`` x its level before. After ``FUTILE_CUTS`` cuts in a row without that, the signal is
    set aside (``set_aside``, logged at DEBUG with the figures): it no longer counts toward the
    pressure, so the rates recover, until its own reading falls below the low-water mark."""

    def __init__(self, medium, small, high_water=0.6, low_water=0.3, floor=0.01, enabled=True,
                 set_rates=None, get_rates=None):
        if not 0.0 <= low_water < high_water <= 1.0:
            raise ValueError(f"need 0 <= low_water < high_water <= 1, got {low_water}, {high_water}")
        self.target = (medium, small)
        self.high_water, self.low_water, self.floor = high_water, low_water, floor
        self.enabled = enabled
        self._set_rates = set_rates or sampler.set_rates
        self._get_rates = get_rates or sampler.rates
        self.smoothed = 0.0
        self._calm = 0
        self.history = []  # RateChange, newest last
        self._cut = None  # (signal, its uncapped load) of the last cut, until the next reading
        self._misses = {}  # signal -> cuts in a row that did not relieve it
        self.set_aside = {}  # signal -> why: cuts did not relieve it; ignored until it calms down

    def set_target(self, medium, small):
        """New configured rates (from apply_optimizations); moves there now."""
        self.target = (medium, small)
        self._apply(medium, small, "target rates changed by apply_optimizations", self.smoothed, None)

    def _check_relief(self, pressure):
        """Compares the signal the last cut answered with its reading now; sets it aside after
        FUTILE_CUTS cuts in a row that did not lower it."""
        if self._cut is None:
            return
        signal, before = self._cut
        self._cut = None
        now = pressure.load(signal)
        if now <= RELIEF * before:
            self._misses[signal] = 0
            return
        misses = self._misses[signal] = self._misses.get(signal, 0) + 1
        if misses >= FUTILE_CUTS:
            why = (f"{misses} rate cuts in a row brought {signal} no relief (its load {before:.2f} -> {now:.2f} "
                   f"after the last one): its cost does not follow the sampling rates here")
            self.set_aside[signal] = why
            self._misses[signal] = 0
            self.smoothed = 0.0  # the smoothed value was mostly this signal: start afresh
            log.debug("memscope optimizer: no more rate cuts for %s; the rates recover. %s", signal, why)

    def _effective(self, pressure):
        """The largest component not set aside, and its name. A set-aside signal comes back once
        its own reading is below the low-water mark."""
        for signal in list(self.set_aside):
            if pressure.components.get(signal, 0.0) < self.low_water:
                del self.set_aside[signal]
                log.debug("memscope optimizer: %s is below the low-water mark again; rate cuts may answer it", signal)
        rest = {k: v for k, v in pressure.components.items() if k not in self.set_aside}
        if not rest:
            return 0.0, None
        name = max(rest, key=rest.get)
        return rest[name], name

    def step(self, pressure, counters=None):
        """Feeds one pressure reading; returns the RateChange made, or None."""
        if pressure is None:
            return None
        self._check_relief(pressure)
        value, signal = self._effective(pressure)
        self.smoothed = SMOOTHING * value + (1 - SMOOTHING) * self.smoothed
        if not self.enabled:
            return None
        medium, small = self._get_rates()
        t_medium, t_small = self.target
        if self.smoothed > self.high_water:
            self._calm = 0
            new = (max(medium * DOWN_FACTOR, t_medium * self.floor), max(small * DOWN_FACTOR, t_small * self.floor))
            why = f"pressure {self.smoothed:.2f} above high-water {self.high_water:.2f} ({pressure.reason(signal)})"
        elif self.smoothed < self.low_water:
            self._calm += 1
            if self._calm < CALM_COLLECTIONS:
                return None
            new = (min(max(medium, t_medium * self.floor) * UP_FACTOR, t_medium),
                   min(max(small, t_small * self.floor) * UP_FACTOR, t_small))
            why = f"pressure {self.smoothed:.2f} below low-water {self.low_water:.2f} for {self._calm} collections"
            if self.set_aside:
                why += f" (set aside: {'; '.join(self.set_aside.values())})"
        else:
            self._calm = 0
            return None
        if _close(new[0], medium) and _close(new[1], small):
            return None
        if new[1] < small or new[0] < medium:
            self._cut = (signal, pressure.load(signal))
        return self._apply(new[0], new[1], why, self.smoothed, counters)

    def _apply(self, medium, small, why, pressure, counters):
        old = self._get_rates()
        self._set_rates(medium, small)
        allocations = counters.allocations.copy() if counters is not None else sampler.read_counters().allocations
        change = RateChange(time.time(), medium, small, why, pressure, allocations)
        self.history.append(change)
        del self.history[:-1000]
        log.debug("memscope sampling rates: medium %.6g -> %.6g, small %.6g -> %.6g; %s",
                  old[0], medium, old[1], small, why)
        return change


def _close(a, b):
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300)
