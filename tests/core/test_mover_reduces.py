"""The mover reduces the records it moves (csrc/stage.c, ms_stage_keep) and stages only what a
reader wants: every record for a sink, the follower's subsample at its level, or none. Every
record still reaches the summary exactly once, whoever reduced it."""
import time

import numpy as np

from memscope_otel import sampler
from memscope_otel.optimizer import followed
from memscope_otel.records import EVENT_MASK, EVENT_SHIFT, SIZE_CLASSES

from test_mover import _bursts

LARGE = SIZE_CLASSES.index("large")
QUIET_LARGE = dict(drain_interval_ms=60000, max_records_per_thread=1024, small_sample_rate=0.0,
                   medium_sample_rate=0.0, frequency_sample_interval=0)


class Follower:
    """A follower asking for ``level``; keeps what it is given."""

    def __init__(self, level):
        self.level = level
        self.batches = []

    def keep_level(self):
        return self.level

    def sink(self, records, base_us, level=0):
        self.batches.append((records.copy(), level))


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
    assert tracker.drainer.follower is None and not tracker.drainer.sinks
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


def test_the_follower_gets_the_mover_subsample_reduced_once(start_tracker):
    """At level 0 the follower is given every record (reduced by the mover: the summary counts
    each once); at level 3 only records followed at 3, weights times 8."""
    tracker = start_tracker(**QUIET_LARGE)
    follower = Follower(0)
    tracker.drainer.follower = follower
    primed = _primed(tracker)
    follower.batches.clear()
    _bursts(20, 150)
    made, reduced = _reduced_once(tracker, primed)
    given = sum(int((_allocations(r)["size"] == 9001).sum()) for r, _ in follower.batches)
    assert 3000 <= made <= given <= reduced
    assert {level for _, level in follower.batches} == {0}

    follower.level = 3
    primed = _primed(tracker)  # (the level is pushed to the mover after a drain or a change)
    follower.batches.clear()
    # Many addresses at once (a freed block's address comes back at once: one address a burst).
    for _ in range(30):
        blocks = [bytearray(9000) for _ in range(200)]
        del blocks
    made, reduced = _reduced_once(tracker, primed)
    assert made >= 6000
    mover_batches = [r for r, level in follower.batches if level == 3]
    assert mover_batches, [level for _, level in follower.batches]
    kept = np.concatenate(mover_batches)
    assert followed(kept["address"], 3).all()
    allocs = _allocations(kept)
    assert (allocs[allocs["size"] == 9001]["weight"] == 8.0).all()
    # About 1 in 8 of the allocations: of the 200 addresses a round reuses, each followed or not
    # (a binomial share over 200 addresses, 6 sigma).
    share = len(allocs[allocs["size"] == 9001]) / reduced
    assert abs(share - 1 / 8) < 6 * (1 / 8 * 7 / 8 / 200) ** 0.5

    tracker.drainer.follower = None  # none: nothing kept
    _bursts(10, 150)
    follower.batches.clear()
    tracker.drainer.drain()
    assert follower.batches == []


def test_a_setting_computed_before_a_sink_was_added_does_not_outlive_it(tracker):
    """The drainer thread recomputes the mover's setting after every drain; add_sink on another
    thread at that moment must not be overwritten by the setting computed without its sink (the
    mover would then reduce, and the sink miss, every record until the next drain). Here the
    drainer-side call is held between computing its setting and applying it while the sink is
    added: the setting applied last must be the one with the sink."""
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
        assert applied[-1] == sampler.STAGE_KEEP_ALL, applied
        drainer.remove_sink(sink)
    finally:
        drainer._stage_keep = real
