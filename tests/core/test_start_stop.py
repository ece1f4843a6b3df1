"""start/stop/start... while other threads allocate; the allocator chain after stop()."""
import threading
import time

import numpy as np
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import memscope_otel
import testhook
from memscope_otel import sampler
from testhook import ExactWindow, allocator, installed_on_top

MONOTONIC = ("allocations", "bytes", "deallocations", "by_size")


def assert_monotonic(before, after, where):
    for field in MONOTONIC:
        old, new = getattr(before, field), getattr(after, field)
        assert (new >= old).all(), f"{field} went down {where}: {np.argwhere(new < old).tolist()}"
    assert after.samples >= before.samples and after.dropped >= before.dropped, where


def chain():
    return [allocator(d) for d in range(3)]


def test_fifty_cycles_under_concurrent_allocation(th):
    original = chain()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    done = threading.Event()
    errors = []

    def worker(k):
        try:
            i = 0
            while not done.is_set():
                th.lib.th_workload(k * 100_000 + i, 10)
                junk = [str(j) * 7 for j in range(300)] + [bytearray(9000)]
                del junk
                i += 1
        except BaseException as exc:  # reported below; a crash would kill the process anyway
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in workers:
        t.start()
    try:
        first = previous = sampler.read_counters()
        for cycle in range(50):
            assert memscope_otel.start(meter_provider=provider, drain_interval_ms=10) is not None
            assert sampler.is_active()
            time.sleep(0.005)
            memscope_otel.stop()
            assert not sampler.is_active()
            now = sampler.read_counters()
            assert_monotonic(previous, now, f"in cycle {cycle}")
            previous = now
        # Stopped: the workers keep allocating, nothing is counted (once any hook call that was
        # already past the "active" check when stop() ran has finished).
        time.sleep(0.05)
        settled = sampler.read_counters()
        time.sleep(0.05)
        assert (sampler.read_counters().allocations == settled.allocations).all()
    finally:
        memscope_otel.stop()
        done.set()
        for t in workers:
            t.join()
    assert errors == []
    assert previous.allocations.sum() > first.allocations.sum() + 1000
    assert chain() == original, "stop() did not restore the original allocators"


def test_stop_under_another_hook_leaves_a_pass_through(th):
    original = chain()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    memscope_otel.start(meter_provider=provider, drain_interval_ms=60000)
    hooked = chain()
    assert all(hooked[d] != original[d] for d in range(3))
    try:
        with installed_on_top():
            memscope_otel.stop()
            # memscope could not unlink itself from under our hook: it stays, passing calls through.
            assert all(th.lib.th_is_top(d) for d in range(3))
            window = ExactWindow()
            window.begin()
            th.lib.th_workload(5, 200)
            junk = [bytes(i % 10000) for i in range(2000)]
            del junk
            counted, mine, _ = window.end()
            assert mine.allocations.sum() > 2000 and mine.deallocations.sum() > 2000
            assert counted.allocations.sum() == 0 and counted.deallocations.sum() == 0
        # Our hook gone, memscope's inactive hooks are on top again and still work.
        assert chain() == hooked
        th.lib.th_workload(6, 100)
        # A restart re-activates them; its stop() can now unlink them.
        before = sampler.read_counters()
        memscope_otel.start(meter_provider=provider, drain_interval_ms=60000)
        th.lib.th_workload(7, 100)
        assert sampler.read_counters().allocations.sum() > before.allocations.sum() + 1000
    finally:
        memscope_otel.stop()
    assert chain() == original


def test_restart_with_fewer_domains_after_a_pass_through_counts_only_those(th):
    """A hook left in the chain as a pass-through (another allocator was installed over it at
    stop()) must not count its domain when a later start() does not select that domain."""
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    memscope_otel.start(meter_provider=provider, drain_interval_ms=60000)
    try:
        with installed_on_top():
            memscope_otel.stop()
        memscope_otel.start(meter_provider=provider, drain_interval_ms=60000, domains="obj")
        before = sampler.read_counters()
        th.lib.th_workload(11, 100)
        after = sampler.read_counters()
    finally:
        memscope_otel.stop()
    grown = after.allocations.sum(axis=1) - before.allocations.sum(axis=1)
    assert grown[testhook.OBJ] > 0
    assert grown[testhook.MEM] == 0 and grown[testhook.RAW] == 0, f"counted unselected domains: {grown}"



def test_a_hook_another_tool_unlinked_is_installed_again(start_tracker, caplog):
    """memscope started over tracemalloc; tracemalloc.stop() puts back the allocators it saved,
    unlinking memscope's hooks under stop()'s feet. The next start() must notice and install
    them again (it used to believe them still in the chain and count nothing), and say so."""
    import tracemalloc

    original = chain()
    tracemalloc.start()
    try:
        start_tracker()
    finally:
        tracemalloc.stop()
    assert chain() == original  # memscope's hooks are gone with tracemalloc's
    memscope_otel.stop()
    with caplog.at_level("WARNING", logger="memscope_otel"):
        start_tracker()
    assert "obj, mem, raw domain(s) had been unlinked" in caplog.text
    before = sampler.read_counters()
    keep = [str(i) * 3 for i in range(20_000)]
    after = sampler.read_counters()
    assert (after.allocations - before.allocations)[testhook.OBJ].sum() >= len(keep)
    memscope_otel.stop()
    assert chain() == original


def test_a_hook_still_under_another_is_not_installed_twice(start_tracker, th, caplog):
    """The other way round: while another hook still sits on top, stop() leaves memscope's in
    the chain and the next start() finds it there (installing it again would loop)."""
    original = chain()
    start_tracker()
    with installed_on_top():
        memscope_otel.stop()
        with caplog.at_level("WARNING", logger="memscope_otel"):
            start_tracker()
        assert "unlinked" not in caplog.text
        window = ExactWindow()
        window.begin()
        th.lib.th_workload(3, 50)
        memscope, mine, _ = window.end()
        assert (memscope.allocations == mine.allocations).all()
        memscope_otel.stop()
    memscope_otel.start(drain_interval_ms=60000, adaptive=False)  # on top again: stop() unlinks it
    memscope_otel.stop()
    assert chain() == original
