"""The mover reduces the records it moves (csrc/stage.c, ms_stage_keep) and stages only what a
reader wants: every record for a sink, or none. Every record still reaches the summary exactly
once, whoever reduced it; and every record that leaves the rings, whoever takes it out, is given
to the attached window (ms_window_attach) once."""
import time

import numpy as np
import pytest

from memscope_otel import sampler
from memscope_otel.optimizer import Window
from memscope_otel.records import EVENT_MASK, EVENT_SHIFT, SIZE_CLASSES

from test_mover import _bursts

LARGE = SIZE_CLASSES.index("large")
QUIET_LARGE = dict(drain_interval_ms=60000, max_records_per_thread=1024, small_sample_rate=0.0,
                   medium_sample_rate=0.0, frequency_sample_interval=0)


def _large_allocations(counters):
    return counters.allocations[:, LARGE].astype(np.int64)


def _allocations(records):
    return records[(records["flags"] & EVENT_MASK) >> EVENT_SHIFT != 1]


def _primed(tracker):
    """Drains what is waiting; returns (the counters before that drain, the counters after it, the
    summary's large allocations after it). A drain reduces every record made before it began;
    its own large blocks (a fresh process's first site tables) are made after, and reduced by the
    next one: the upper bound of _reduced_once counts from before the drain for them."""
    first = sampler.read_counters()
    tracker.drainer.drain()
    return first, sampler.read_counters(), tracker.summary.count[:, LARGE].copy()


def _reduced_once(tracker, primed):
    """The summary's large allocations since ``primed`` (see _primed), in the domain of
    bytearray's buffers (OBJ or MEM by version), against the exact counts: every one made after
    the priming drain, and no more than were made from its start to the end of the drain here (a
    record reduced twice, by the mover and the drainer, breaks the upper bound by thousands)."""
    first, before, large0 = primed
    after = sampler.read_counters()
    tracker.drainer.drain()
    final = sampler.read_counters()
    made = _large_allocations(after) - _large_allocations(before)
    d = int(np.argmax(made))
    reduced = int(tracker.summary.count[d, LARGE]) - int(large0[d])
    assert made[d] <= reduced <= int((_large_allocations(final) - _large_allocations(first))[d])
    return int(made[d]), reduced


def test_without_readers_the_mover_reduces_and_keeps_nothing(start_tracker):
    tracker = start_tracker(**QUIET_LARGE)
    assert not tracker.drainer.sinks
    primed = _primed(tracker)
    drains, drained0 = tracker.drainer.drains, tracker.drainer.records_drained
    _bursts(40, 150)  # 12,000 records through rings of 1,024
    # Reduced on the mover's side: the drainer's summary waits for a drain, the stage stays empty
    # (nothing woke the drainer).
    assert tracker.drainer.drains == drains
    assert (tracker.summary.count[:, LARGE] == primed[2]).all()
    made, reduced = _reduced_once(tracker, primed)
    assert made >= 6000
    # What the mover reduced counts as drained (the optimizer's record rate): each block made
    # before the drain has its allocation and its free record.
    assert tracker.drainer.records_drained - drained0 >= 2 * made


def test_a_sink_gets_every_record_and_keeps_them_unreduced(start_tracker):
    tracker = start_tracker(**QUIET_LARGE)
    seen = []

    def sink(records, base_us):
        seen.append(_allocations(records).copy())

    tracker.drainer.add_sink(sink)
    primed = _primed(tracker)
    seen.clear()
    _bursts(20, 150)
    made, reduced = _reduced_once(tracker, primed)
    given = sum(int((batch["size"] == 9001).sum()) for batch in seen)  # bytearray(n) asks n + 1
    assert 3000 <= made <= given <= reduced
    # Removed, the mover reduces again: the next drain gives no sink anything.
    tracker.drainer.remove_sink(sink)
    batches = len(seen)
    _bursts(20, 150)
    tracker.drainer.drain()
    assert len(seen) == batches


@pytest.mark.parametrize("with_sink", [False, True])
def test_the_attached_window_is_given_every_record_that_leaves_the_rings(start_tracker, with_sink):
    """Moved by the mover (reduced there, or staged for a sink) or taken by a drain, each record
    that leaves the rings is read into the attached window once: its times are as many as the
    records drained; once detached, it is given none."""
    tracker = start_tracker(**QUIET_LARGE)
    if tracker.optimizer is not None:
        tracker.optimizer.stop()  # (the window here is the test's)
    sink = (lambda records, base_us: None) if with_sink else None
    if sink:
        tracker.drainer.add_sink(sink)
    window = Window(0.0)  # (no budget: every record read)
    try:
        with tracker.drainer.lock:  # (the mover moves nothing until the window is attached)
            tracker.drainer.drain()
            sampler.attach_window(window.c)
            drained0 = tracker.drainer.records_drained
        _bursts(20, 150)  # 6,000 records through rings of 1,024: most moved by the mover
        # Given to the window as the mover moved them, before any drain:
        deadline = time.monotonic() + 10
        while window.n_times == 0:
            assert time.monotonic() < deadline, "the mover gave the window nothing"
            time.sleep(0.01)
        tracker.drainer.drain()
        drained = tracker.drainer.records_drained - drained0
        assert drained >= 6000
        assert window.n_times == drained
        allocations = window.allocs_followed
        assert allocations >= 3000
        sites, weights = window.sites()
        assert weights.sum() >= 3000  # (large blocks: sampled always, weight 1)
    finally:
        sampler.detach_window(window.c)
        if sink:
            tracker.drainer.remove_sink(sink)
    _bursts(5, 150)
    tracker.drainer.drain()
    assert window.n_times == drained


def test_a_setting_computed_before_a_sink_was_added_does_not_outlive_it(tracker):
    """Another thread recomputing the mover's setting (start(), a sink removed) while add_sink
    runs must not overwrite it with the setting computed without the new sink (the mover would
    then reduce, and the sink miss, every record). Here the other thread's call is held between
    computing its setting and applying it while the sink is added: the setting applied last must
    be the one with the sink."""
    import threading

    drainer = tracker.drainer
    applied, inside = [], threading.Event()
    real = drainer._stage_keep

    def held(level):
        if threading.current_thread() is not threading.main_thread() and not inside.is_set():
            inside.set()
            time.sleep(0.3)  # the sink is being added meanwhile
        applied.append(level)
        real(level)

    drainer._stage_keep = held
    try:
        other = threading.Thread(target=drainer._keep_changed)
        other.start()
        assert inside.wait(5)
        sink = lambda records, base_us: None  # noqa: E731
        drainer.add_sink(sink)
        other.join()
        assert applied[-1] is True, applied
        drainer.remove_sink(sink)
    finally:
        drainer._stage_keep = real


def test_a_reset_hands_the_records_to_the_new_window_and_close_to_none(start_tracker):
    """WorkloadRecognizer.follow_records attaches its window; reset() attaches the new one (the
    old is given nothing more once it returns); close() detaches it."""
    from memscope_otel.optimizer import WorkloadRecognizer

    tracker = start_tracker(**QUIET_LARGE)
    if tracker.optimizer is not None:
        tracker.optimizer.stop()  # (its recognizer would be attached)
    recognizer = WorkloadRecognizer()
    recognizer.read_budget_per_s = float("inf")  # every record read
    recognizer.reset()
    with tracker.drainer.lock:
        tracker.drainer.drain()
        recognizer.follow_records()
    try:
        _bursts(10, 150)
        tracker.drainer.drain()
        first = recognizer.window
        read = first.n_times
        assert read >= 3000
        recognizer.reset()
        _bursts(10, 150)
        tracker.drainer.drain()
        assert first.n_times == read
        assert recognizer.window.n_times >= 3000
    finally:
        recognizer.close()
    second = recognizer.window.n_times
    _bursts(5, 150)
    tracker.drainer.drain()
    assert recognizer.window.n_times == second


def test_a_window_freed_while_attached_is_detached_first(start_tracker):
    """Its owner gone, a window is freed by the collector (ms_window_free): it detaches itself
    first, so the mover and the drains give records to no window. Reading into a freed one would
    fault here (its pages are unmapped) or be caught by the sanitizer (scripts/sanitize.sh runs
    these tests; there a window is a heap block)."""
    import gc

    tracker = start_tracker(**QUIET_LARGE)
    if tracker.optimizer is not None:
        tracker.optimizer.stop()
    window = Window(0.0)
    sampler.attach_window(window.c)
    _bursts(5, 150)
    tracker.drainer.drain()
    assert window.n_times > 0
    del window
    gc.collect()
    drained = tracker.drainer.records_drained
    _bursts(20, 150)  # moved by the mover and drained: no window to give them to
    tracker.drainer.drain()
    assert tracker.drainer.records_drained - drained >= 6000  # (they did leave the rings)
