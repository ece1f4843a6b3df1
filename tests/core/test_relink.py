"""A tool below that unlinks memscope's hook while it runs: counting resumes by itself.

``tracemalloc.start()``, then memscope, then ``tracemalloc.stop()``: tracemalloc puts back the
allocators it saved, the ones under memscope, and memscope's hooks are out of the chain while
``is_active()`` still says True. The drainer checks the chain at each wake-up (one comparison per
domain while nothing changed), and installs the hooks again with one warning.
"""
import logging
import time
import tracemalloc

from memscope_otel import sampler

INTERVAL_MS = 100


def work():
    return [str(i) * 3 for i in range(100_000)]  # 100,000 strings: 100,000 OBJ allocations


def test_tracemalloc_stop_under_a_running_tracker(start_tracker, caplog):
    caplog.set_level(logging.WARNING, logger="memscope_otel")
    tracemalloc.start()
    try:
        start_tracker(drain_interval_ms=INTERVAL_MS, wait_idle=False)
        a0 = sampler.read_counters().allocations.sum()
        work()
        a1 = sampler.read_counters().allocations.sum()
        assert a1 - a0 >= 100_000  # memscope counts, under tracemalloc's hook
    finally:
        tracemalloc.stop()
    # Unlinked now: nothing is counted until the drainer's next wake-up puts the hooks back
    # (within one interval on an idle machine).
    deadline = time.monotonic() + 10.0
    while sampler.read_counters().relinks == 0 and time.monotonic() < deadline:
        time.sleep(INTERVAL_MS / 1000 / 4)
    a2 = sampler.read_counters().allocations.sum()
    work()
    a3 = sampler.read_counters().allocations.sum()
    assert a3 - a2 >= 100_000, "counting did not resume after tracemalloc.stop()"
    assert sampler.read_counters().relinks == 1
    time.sleep(3 * INTERVAL_MS / 1000)  # more drains: no more warnings
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unlinked by another tool while running" in warnings[0], warnings
