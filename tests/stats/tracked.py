"""A tracker with fixed settings and a fixed seed, for the length of a ``with`` block."""
import contextlib
import sys
import threading
import traceback

import memscope_otel

# Big enough for any chunk the tests run between two drains (they assert that nothing dropped).
RING = 1 << 18

# The tracker's own thread: its allocations are ignored by the sampler, so it may be live.
DRAINER_THREAD = "memscope-drainer"


def other_threads(allowed=()):
    """Every live Python thread except the calling one and those named in ``allowed``, each
    described with the innermost frames of where it is now."""
    me = threading.get_ident()
    frames = sys._current_frames()
    found = []
    for thread in threading.enumerate():
        if thread.ident == me or thread.name in allowed:
            continue
        frame = frames.get(thread.ident)
        where = "".join(traceback.format_stack(frame)[-4:]) if frame is not None else "  (no Python frame)\n"
        found.append(f"{thread!r}\n{where}")
    return found


def assert_alone(when, hint, allowed=()):
    """Fails naming every other live thread: the exact counters count every thread of the process,
    so anything another thread allocates lands in the window as requests of unknown sizes, and the
    tolerances (derived for the workload plus the interpreter's few requests around it) no longer
    hold. ``hint`` says who should have stopped it."""
    others = other_threads(allowed)
    assert not others, (f"{when}: {len(others)} other thread(s) live in the test process; their "
                        f"allocations are counted in the measurement window. {hint}\n" + "\n".join(others))


@contextlib.contextmanager
def tracking(seed, meter_provider=None, **settings):
    """Runs a tracker with ``settings`` and ``seed``; the optimizer is off so that the rates are
    the ones the test set. Sampling on the calling thread is reproducible for a given seed.

    The test thread must be alone when the tracker starts, and alone again (but for the drainer)
    when the block ends, so that every thread that allocated in between is one the test ran."""
    assert not memscope_otel.is_running(), "another test left a tracker running"
    assert_alone("before the tracker started",
                 "Left running by an earlier test: stop it in that test's teardown.")
    settings.setdefault("max_records_per_thread", RING)
    tracker = memscope_otel.start(meter_provider, seed=seed, adaptive=False, **settings)
    assert tracker is not None
    try:
        yield tracker
        assert_alone("when the measured block ended", "Started in the block: join it before the block ends.",
                     allowed=(DRAINER_THREAD,))
    finally:
        memscope_otel.stop()
