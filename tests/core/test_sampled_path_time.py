"""The sampled path's time (``slow_path_ns``, the optimizer's ``sampled_path`` signal) is its own
work, not the waits of a thread stopped inside it.

The path is timed by the wall clock, one event in 8 counted 8 times. A thread preempted inside a
timed event (or a CPU-throttled container's) would add its whole wait, times 8, to a path of a few
hundred ns, and a single such event in a short export interval could read as the sampled path
over its budget. An event counts 100 µs at most (hooks.c, SLOW_TIMED_MAX_NS).
"""
from memscope_otel import sampler

PAUSES = 300
PAUSE_NS = 10_000_000  # each stop: a few scheduler time slices
RUN_NS = 1_000_000


def test_a_stopped_thread_s_waits_do_not_count_as_the_sampled_path(start_tracker, th):
    start_tracker()
    pairs = th.ffi.new("uint64_t *")
    before = sampler.read_counters()
    # Large blocks: every allocation sampled. The thread spends about 40% of its time inside
    # sample(), an eighth of that timed: about 1 in 17 of the stops lands in a timed event (600
    # stops gave 35 to 38). Uncapped, each adds 80 ms of "sampled path" to a thread that runs 1 ms
    # between stops, 0.4 s in all: 3 of them put the path past its CPU time. Capped, the path
    # reads about 40% of it.
    cpu_ns = th.lib.th_paused_pairs(20000, PAUSES, PAUSE_NS, RUN_NS, pairs)
    after = sampler.read_counters()
    assert cpu_ns > 0, "could not set up the paused thread"
    calls = after.slow_path_calls - before.slow_path_calls
    slow_ns = after.slow_path_ns - before.slow_path_ns
    assert calls >= pairs[0] > 10_000, (calls, pairs[0])
    print(f"sampled path {slow_ns / 1e6:.1f} ms in {calls} events; the thread's CPU {cpu_ns / 1e6:.1f} ms")
    # The path ran on the thread's CPU: its time is within it (the timing's own error is 1/8 of
    # an event per event, next to nothing over 10,000 of them).
    assert slow_ns < cpu_ns, (slow_ns, cpu_ns)
