"""The drainer's periodic wake-up: every interval while enough records wait, less often when few do.

Each wake-up of the drainer makes it take the GIL back from the application (a forced switch,
and in programs that give the GIL up often, milliseconds of wake-ups), so a periodic drain with
fewer than MS_DRAIN_MIN_RECORDS records waiting is skipped, up to MS_DRAIN_SKIPS in a row.
"""
import time

import memscope_otel
from memscope_otel._memscope import lib

INTERVAL_MS = 100


def _drains_during(tracker, work, seconds):
    before = tracker.drainer.drains
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        work()
    return tracker.drainer.drains - before


def test_a_few_records_are_drained_at_most_every_skips_plus_one_intervals(start_tracker):
    tracker = start_tracker(drain_interval_ms=INTERVAL_MS)
    kept = []

    def trickle():  # a record now and then (large blocks are always sampled)
        kept.append(bytearray(20000))
        time.sleep(0.02)

    seconds = 1.5
    drains = _drains_during(tracker, trickle, seconds)
    # Never more often than every MS_DRAIN_SKIPS + 1 intervals (a slow machine only drains less).
    most = seconds * 1000 / (INTERVAL_MS * (lib.MS_DRAIN_SKIPS + 1)) + 1
    assert 1 <= drains <= most, (drains, most)
    assert len(kept) > 0


def test_enough_waiting_records_are_drained_every_interval(start_tracker):
    tracker = start_tracker(drain_interval_ms=INTERVAL_MS)
    pairs = 3 * lib.MS_DRAIN_MIN_RECORDS // 4  # records waiting: 1.5x the minimum, under half the stage
    bursts = 12

    def burst():
        for _ in range(pairs):
            bytearray(9000)  # large: sampled, an allocation and a free record
        time.sleep(INTERVAL_MS / 1000 * 2)  # a periodic wake-up finds them (an interval of room)

    drains = 0
    for _ in range(bursts):
        before = tracker.drainer.drains
        burst()
        drains += tracker.drainer.drains > before
    # Skipping would leave most bursts undrained after 2 intervals: about 2 in 5 drained (5 of 12).
    assert drains >= bursts - 3, drains


def _settle(tracker, quiet_s=0.5, timeout_s=20.0):
    """Waits until the drainer has not drained for ``quiet_s``: what was left waiting (records of
    the snapshot itself, threads of earlier tests that exited) is drained within MS_DRAIN_SKIPS + 1
    intervals on an idle machine, later on a loaded one."""
    deadline = time.monotonic() + timeout_s
    last, since = tracker.drainer.drains, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if tracker.drainer.drains != last:
            last, since = tracker.drainer.drains, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError(f"the drainer kept draining for {timeout_s} s")


def test_a_quiet_program_is_not_woken_for(start_tracker):
    """No record waiting, no drain: the drainer would take the GIL back for nothing."""
    # Large blocks only: a small allocation of the loop's (or a frequency slot's) would be a record.
    tracker = start_tracker(drain_interval_ms=20, small_sample_rate=0.0, medium_sample_rate=0.0,
                            frequency_sample_interval=0)
    memscope_otel.snapshot()
    _settle(tracker)
    drains = _drains_during(tracker, lambda: time.sleep(0.25), 1.5)
    # 75 intervals, 15 times the longest skip: none while no record was made.
    assert drains == 0, drains
    kept = [bytearray(20000)]  # one record waits: drained within MS_DRAIN_SKIPS + 1 intervals
    assert _drains_during(tracker, lambda: time.sleep(0.01), 0.5) >= 1
    assert kept


def test_failing_site_resolution_does_not_spin_the_drainer(start_tracker, monkeypatch):
    """While ids run short the drainer drains back to back; if resolving them fails, it waits its
    intervals instead of retrying (and logging) as fast as it can."""
    tracker = start_tracker(drain_interval_ms=INTERVAL_MS)
    resolver = tracker.resolver

    def fail(summary):
        raise RuntimeError("resolution fails")

    monkeypatch.setattr(resolver, "short_of_ids", lambda: True)
    monkeypatch.setattr(resolver, "after_drain", fail)
    kept = []

    def trickle():  # records keep coming: a drain at most every MS_DRAIN_SKIPS + 1 intervals
        kept.append(bytearray(20000))
        time.sleep(0.02)

    seconds = 1.0
    drains = _drains_during(tracker, trickle, seconds)
    # Back to back, a drain takes a millisecond or less: hundreds a second. Waiting: at most one
    # an interval, and the one under way.
    assert drains <= seconds * 1000 / INTERVAL_MS + 1, drains


def test_the_setting_documents_the_c_constants():
    from memscope_otel.config import SETTINGS_BY_KEYWORD

    meaning = SETTINGS_BY_KEYWORD["drain_interval_ms"].meaning
    assert f"up to {lib.MS_DRAIN_SKIPS + 1} times" in meaning, meaning
    assert f"fewer than {lib.MS_DRAIN_MIN_RECORDS} records" in meaning, meaning


def test_with_a_dump_every_interval_drains(start_tracker, tmp_path):
    """A dump file gets each interval's records: no periodic drain is skipped."""
    tracker = start_tracker(drain_interval_ms=INTERVAL_MS, dump_path=str(tmp_path / "cadence.dump"))
    assert tracker.drainer.skip_below == 0
    kept = []

    def trickle():
        kept.append(bytearray(20000))
        time.sleep(0.02)

    seconds = 3.0
    drains = _drains_during(tracker, trickle, seconds)
    skipping_at_most = seconds * 1000 / (INTERVAL_MS * (lib.MS_DRAIN_SKIPS + 1)) + 1
    # 30 expected; a busy machine drains fewer (each wake-up late by its latency and the drain)
    assert drains > 2 * skipping_at_most, drains
