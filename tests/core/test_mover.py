"""The mover (csrc/stage.c): rings that fill are emptied by a native thread into the stage, without
waking the drainer (a Python thread, which would take the GIL back from the application)."""
import time

import numpy as np

import memscope_otel
from memscope_otel import sampler
from memscope_otel.records import SIZE_CLASSES

LARGE = SIZE_CLASSES.index("large")
RECORD_BYTES = 32
STEP_BYTES = 2048 * RECORD_BYTES  # MOVE_STEP_RECORDS (csrc/stage.c)


def _large_pairs(n):
    for _ in range(n):
        bytearray(9000)  # large at the default critical size: always sampled, two records


def _bursts(bursts, pairs):
    """Bursts of ``pairs`` large allocation and free pairs, 20 ms apart: a burst under the room a
    thread's newest segment has never finds its ring full, whenever the woken mover gets a CPU (on
    a loaded machine, maybe only after the burst). (With 1,024 records at most, a thread that
    keeps sampling writes a segment of about 500 records once the older ones are emptied.)"""
    for _ in range(bursts):
        _large_pairs(pairs)
        time.sleep(0.02)


def test_filling_rings_are_emptied_without_the_drainer(start_tracker):
    tracker = start_tracker(drain_interval_ms=60000, max_records_per_thread=1024, small_sample_rate=0.0,
                            medium_sample_rate=0.0, frequency_sample_interval=0)
    first = sampler.read_counters()  # (the drain below reduces every record made before it began)
    tracker.drainer.drain()
    before, drains = sampler.read_counters(), tracker.drainer.drains
    passes0, _ = tracker.drainer.ring_passes
    large0 = tracker.summary.count[:, LARGE].sum()
    _bursts(40, 150)  # 12,000 records through a ring of 1,024 (300 a burst: past half a segment)
    after = sampler.read_counters()
    # No record found its ring full, though the drainer did not run: the mover made room (the
    # stage wakes the drainer only once half full: 32,768 records). A loaded machine may leave the
    # woken mover without a CPU for a burst or so (300 records); without the mover, 10,000 drop.
    assert after.dropped - before.dropped <= 300, after.dropped - before.dropped
    assert tracker.drainer.drains == drains
    passes, _ = tracker.drainer.ring_passes
    assert passes - passes0 >= 12000 // 1024
    tracker.drainer.drain()
    final = sampler.read_counters()
    large = int((after.allocations[:, LARGE] - before.allocations[:, LARGE]).sum())
    assert large >= 6000
    # Every one reduced (weight 1): all of those made before the drain began, and no more than
    # were made by its end since the first drain began (that drain's own large blocks, a fresh
    # process's first site tables, are made after it began and reduced here).
    reduced = tracker.summary.count[:, LARGE].sum() - large0
    assert large <= reduced <= int((final.allocations[:, LARGE] - first.allocations[:, LARGE]).sum())
    # The mover's CPU time counts as the drainer's (memscope.tracker.cpu, the optimizer's cost).
    assert tracker.drainer.cpu_ns > tracker.drainer.cpu.ns


def test_the_drain_lock_holds_the_mover_too(start_tracker):
    """While a reader (or a test) holds the drainer's lock, nothing moves: full rings drop records,
    which still reach the estimates through the spill."""
    tracker = start_tracker(drain_interval_ms=60000, max_records_per_thread=1024, small_sample_rate=0.0,
                            medium_sample_rate=0.0, frequency_sample_interval=0)
    tracker.drainer.drain()
    before = sampler.read_counters()
    large0 = tracker.summary.count[:, LARGE].sum()
    with tracker.drainer.lock:
        with tracker.drainer.lock:  # (re-entrant: the mover resumes at the outer release)
            _large_pairs(2000)
        held = sampler.read_counters()
        passes_held, _ = tracker.drainer.ring_passes
    deadline = time.monotonic() + 10.0  # (the mover, woken at the release, empties the full ring)
    while tracker.drainer.ring_passes[0] == passes_held and time.monotonic() < deadline:
        time.sleep(0.005)
    after_release = sampler.read_counters()
    assert held.dropped - before.dropped >= 4000 - 1024
    _bursts(10, 150)
    assert sampler.read_counters().dropped - after_release.dropped <= 300  # moving again (see above)
    tracker.drainer.drain()
    large = int((sampler.read_counters().allocations[:, LARGE] - before.allocations[:, LARGE]).sum())
    assert tracker.summary.count[:, LARGE].sum() - large0 == large


def test_stop_gives_the_stage_back_and_start_maps_it_again(start_tracker):
    """The stage counts in footprint_bytes by its touched pages (a mover step's at least): a sink
    that wants every record makes it hold a burst's records, and stop() gives them back."""
    def staging_tracker():
        tracker = start_tracker(drain_interval_ms=60000, max_records_per_thread=1024, small_sample_rate=0.0,
                                medium_sample_rate=0.0, frequency_sample_interval=0)
        tracker.drainer.add_sink(lambda records, base_us: None)  # (the stage keeps every record)
        return tracker

    staged = 3000 * RECORD_BYTES
    slack = 1024 * RECORD_BYTES  # the thread's own segments change by less than its 1,024 records
    staging_tracker()
    before = sampler.read_counters()
    _bursts(10, 150)  # 3,000 records staged: under half the stage, so the drainer sleeps on
    running = sampler.read_counters()
    assert running.dropped == before.dropped
    memscope_otel.stop()
    stopped = sampler.read_counters().footprint_bytes
    assert running.footprint_bytes - stopped >= staged - slack
    staging_tracker()
    before = sampler.read_counters()
    assert before.footprint_bytes - stopped >= STEP_BYTES - slack  # mapped again
    _bursts(10, 150)
    running = sampler.read_counters()
    assert running.dropped == before.dropped  # a mover runs again
    assert running.footprint_bytes - stopped >= staged - slack
    snap = memscope_otel.snapshot()
    assert np.asarray(snap.counters.allocations)[:, LARGE].sum() >= 10 * 150
