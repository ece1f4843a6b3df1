"""The controller under a real PeriodicExportingMetricReader whose exporter is slow or failing."""
import logging
import math
import threading
import time

import numpy as np

from memscope_otel import sampler
from memscope_otel.optimizer import RateController, Pressure

from .conftest import wait_until

CONFIGURED = (0.05, 0.001)  # the default medium and small rates
# Short enough for a fast test, long enough that the collection's own cost on a busy 2-core
# machine (a few ms, sometimes 20) stays well under the budgets that are relative to it.
INTERVAL_MS = 250
FLOOR = 0.25  # a high floor keeps the way down and back up short


def lowered(tracker):
    medium, small = sampler.rates()
    return medium < CONFIGURED[0] and small < CONFIGURED[1]


def recovered(tracker):
    return sampler.rates() == CONFIGURED


def test_slow_exporter_lowers_the_rates_and_they_recover_when_it_heals(exporting_tracker, caplog):
    caplog.set_level(logging.DEBUG, logger="memscope_otel.optimizer")
    tracker, exporter = exporting_tracker(INTERVAL_MS, optimizer_rate_floor=FLOOR)
    exporter.delay_s = 0.4  # each collection now comes 650 ms after the previous: drift 1.6
    start = exporter.exports
    assert wait_until(lambda: lowered(tracker), 10.0), f"rates {sampler.rates()} after {exporter.exports - start} exports"
    # "Within a few intervals": the smoothed pressure crosses the high-water mark on the 2nd slow
    # collection; allow a few more for the machine's own jitter.
    assert exporter.exports - start <= 6
    changes = [c for c in tracker.optimizer.controller.history if "high-water" in c.reason]
    assert changes and "cadence" in changes[0].reason
    assert any("memscope sampling rates" in r.getMessage() and "cadence" in r.getMessage() for r in caplog.records)
    # Never below the floor, large allocations untouched (the C side has no rate for them).
    assert wait_until(lambda: sampler.rates()[1] <= CONFIGURED[1] * FLOOR * 1.001, 5.0)
    time.sleep(0.7)  # one more slow collection: still at the floor, not below
    assert sampler.rates() == (CONFIGURED[0] * FLOOR, CONFIGURED[1] * FLOOR)

    exporter.heal()
    assert wait_until(lambda: recovered(tracker), 15.0), f"rates {sampler.rates()} did not recover"
    assert any("low-water" in c.reason for c in tracker.optimizer.controller.history)


def test_failing_exporter_lowers_the_rates_and_they_recover(exporting_tracker):
    tracker, exporter = exporting_tracker(INTERVAL_MS, optimizer_rate_floor=FLOOR)
    exporter.failing = True  # raises at once: no drift, only the SDK's error log
    try:
        assert wait_until(lambda: lowered(tracker), 10.0)
        reasons = [c.reason for c in tracker.optimizer.controller.history]
        assert any("export_failures" in r for r in reasons), reasons
        exporter.heal()
        assert wait_until(lambda: recovered(tracker), 15.0), f"rates {sampler.rates()} did not recover"
    finally:
        exporter.heal()


def test_adaptive_off_keeps_the_rates_fixed(exporting_tracker):
    tracker, exporter = exporting_tracker(INTERVAL_MS, adaptive=False)
    assert tracker.optimizer is None
    exporter.delay_s = 0.4
    start = exporter.exports
    wait_until(lambda: exporter.exports - start >= 4, 10.0)
    assert exporter.exports - start >= 4
    assert sampler.rates() == CONFIGURED


def test_estimates_stay_within_tolerance_across_rate_changes(exporting_tracker):
    """The Horvitz-Thompson estimates of small and medium allocation counts against the exact
    counters, through the rate changes a slow exporter causes. Each allocation outside a frequency
    slot is sampled with the probability p in force for it, so the variance of the count estimate
    is at most sum over phases of n_phase * (1 - p_phase) / p_phase (the frequency slots, sampled
    for certain, only lower it). Tolerance: 4.5 standard deviations (a false alarm in about 1 of
    150 000 runs)."""
    tracker, exporter = exporting_tracker(INTERVAL_MS, optimizer_rate_floor=0.05, small_sample_rate=0.01,
                                          medium_sample_rate=0.2)
    base = tracker.refresh()
    base_est = tracker.summary.count.copy()
    stop = threading.Event()

    def work():
        while not stop.is_set():
            [("x" * (i % 200), i, [i] * (i % 300)) for i in range(1000)]  # small and medium allocations
            time.sleep(0.005)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        time.sleep(0.4)
        exporter.delay_s = 0.4
        history = tracker.optimizer.controller.history
        assert wait_until(lambda: sum("high-water" in c.reason for c in history) >= 2, 10.0)
        exporter.heal()
        assert wait_until(lambda: sum("low-water" in c.reason for c in history) >= 2, 10.0), (
            tracker.optimizer.monitor.latest)
    finally:
        stop.set()
        worker.join()
    final = tracker.refresh()
    history = [c for c in tracker.optimizer.controller.history]
    assert len(history) >= 4, "the slow exporter should have moved the rates down and back up"
    assert final.counters.dropped == base.counters.dropped, "drops would bias the estimates"

    # Phases: [base, change 1), [change 1, change 2), ... [last change, final]
    marks = [base.counters.allocations.astype(np.float64)] + [c.allocations.astype(np.float64) for c in history]
    marks.append(final.counters.allocations.astype(np.float64))
    rates = [(0.2, 0.01)] + [(c.medium, c.small) for c in history]
    for cls, name in ((0, "small"), (1, "medium")):
        variance = 0.0
        for (medium, small), a, b in zip(rates, marks[:-1], marks[1:]):
            p = small if cls == 0 else medium
            n = float((b - a)[:, cls].sum())
            variance += n * (1 - p) / p
        exact = float((marks[-1] - marks[0])[:, cls].sum())
        estimate = float((tracker.summary.count - base_est)[:, cls].sum())
        sigma = math.sqrt(variance)
        assert abs(estimate - exact) <= 4.5 * sigma, (
            f"{name}: estimate {estimate:.0f} vs exact {exact:.0f}, sigma {sigma:.0f}, phases {len(rates)}")
        assert sigma < 0.2 * exact, f"{name}: too few allocations for a meaningful check"


def test_controller_steps_down_to_the_floor_and_back_up():
    state = {"rates": (0.05, 0.001)}
    controller = RateController(0.05, 0.001, high_water=0.6, low_water=0.3, floor=0.1,
                                set_rates=lambda m, s: state.update(rates=(m, s)), get_rates=lambda: state["rates"])

    class Counters:
        allocations = np.zeros((4, 3), np.uint64)

    def reading(value):
        return Pressure(value, {"cadence": value}, {"drift": value}, "cadence")

    for _ in range(10):
        controller.step(reading(1.0), Counters)
    assert state["rates"] == (0.05 * 0.1, 0.001 * 0.1)
    steps_up = 0
    for _ in range(40):
        if controller.step(reading(0.0), Counters):
            steps_up += 1
    assert state["rates"] == (0.05, 0.001)
    assert steps_up == math.ceil(math.log(10) / math.log(1.5))  # half steps: 0.1 -> 1 in 6


def test_controller_disabled_never_writes():
    writes = []
    controller = RateController(0.05, 0.001, enabled=False, set_rates=lambda m, s: writes.append((m, s)),
                                get_rates=lambda: (0.05, 0.001))
    for _ in range(5):
        controller.step(Pressure(1.0, {}, {}, "cadence"))
    assert writes == []
