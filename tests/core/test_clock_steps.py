"""The tracker's clocks: a wall-clock step, and a drain that stalls for longer than the 32-bit
record times can span (71.6 minutes of microseconds).

Both run in a child process with clockshim.c preloaded: it shifts what clock_gettime returns to
this process, while the kernel (whose clocks the drainer's semaphore waits on) sees the real time.
"""
from clockshim import run_child


WALL_CLOCK = r"""
import ctypes, sys, time
shim = ctypes.CDLL(sys.argv[1])
import memscope_otel
tracker = memscope_otel.start(adaptive=False, drain_interval_ms=20)
time.sleep(0.3)
# The wall clock as this process sees it jumps an hour ahead: for a deadline on the wall clock,
# the same as the clock stepping back an hour after the deadline was computed.
shim.clockshim_shift(3600, 0)
drains = tracker.drainer.drains
t0 = time.monotonic()
while time.monotonic() - t0 < 1.5:  # records keep coming: a drain at least every 5 intervals
    keep = [bytearray(100_000) for _ in range(50)]
    time.sleep(0.01)
print("periodic drains:", tracker.drainer.drains - drains)
memscope_otel.stop()
"""


def test_drainer_keeps_draining_across_a_wall_clock_step(shim):
    found = run_child(shim, WALL_CLOCK)
    # 1.5 s at one drain per 100 ms at least (fewer than 16,384 records wait: up to 5 intervals
    # of 20 ms apart): 15; a stalled drainer makes none (at most the one it was already waiting
    # for, whose deadline predates the step)
    assert int(found["periodic drains"]) >= 5, found


LONG_STALL = r"""
import ctypes, sys
shim = ctypes.CDLL(sys.argv[1])
import numpy as np
import memscope_otel
tracker = memscope_otel.start(adaptive=False, drain_interval_ms=60000)
captured = []
tracker.drainer.add_sink(lambda records, base_us: captured.append(
    base_us + records[records["size"] >= 300_000]["time_delta_us"].astype(np.int64)))
memscope_otel.snapshot()
first = bytearray(300_000)
# 72 minutes later, without a drain in between: the 32-bit times of the two records are
# 4,320 s apart, more than 2^32 us (4,294.97 s)
shim.clockshim_shift(0, 72 * 60)
# (A real stall moves the time-stamp counter as well. The shim moves clock_gettime alone: the
# records follow it once the counter's anchor is 2 s old, csrc/clock.c. A busy wait: the kernel
# would time a sleep from the shifted clock, 72 minutes of it.)
import time
t0 = time.monotonic()
while time.monotonic() - t0 < 2.2:
    pass
second = bytearray(300_001)
memscope_otel.snapshot()
times = np.sort(np.concatenate(captured))
print("records:", len(times))
print("seconds apart:", (times[-1] - times[0]) / 1e6)
memscope_otel.stop()
"""


def test_record_times_survive_a_drain_stalled_past_the_32_bit_range(shim):
    found = run_child(shim, LONG_STALL)
    assert int(found["records"]) == 2, found
    assert abs(float(found["seconds apart"]) - 72 * 60) < 5, found
