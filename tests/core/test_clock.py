"""The records' time stamps (csrc/clock.c): the time-stamp counter where the kernel keeps time
with it, scaled against CLOCK_MONOTONIC by the mover, else clock_gettime.

Whichever source a stamp comes from, it must be a CLOCK_MONOTONIC reading: between a clock read
just before it and one just after, within the error the scaling allows, and never behind an
earlier stamp of the same thread (a re-anchoring slews, it does not step back).
"""
import pathlib
import platform
import time

import numpy as np
import pytest

import memscope_otel
from memscope_otel import sampler
from clockshim import run_child

# A stamp is a scaled counter reading: scale error, the error slewed away within a second of each
# re-anchoring, and the spread of (counter, clock) pairs are microseconds on a machine whose
# clock the kernel keeps with the counter. A scale wrong by 0.1 % would be 200 us off within one
# mover period (200 ms); the bracketing reads themselves are what cffi calls cost.
TOLERANCE_NS = 20_000

CLOCKSOURCE = pathlib.Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")


def _kernel_uses_tsc():
    try:
        return platform.machine() == "x86_64" and CLOCKSOURCE.read_text().strip() == "tsc"
    except OSError:
        return False


def _lib():
    return sampler._lib()[1]


def _wait_for_counter(lib, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while not lib.ms_clock_source():
        assert time.monotonic() < deadline, "the mover did not calibrate the time-stamp counter"
        time.sleep(0.02)


def _bracket_errors(lib, seconds):
    """Worst (before - stamp) and (stamp - after) over `seconds` of bracketed stamps, in ns."""
    early = late = -(10**18)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        a = time.monotonic_ns()
        s = lib.ms_stamp_ns()
        b = time.monotonic_ns()
        early, late = max(early, a - s), max(late, s - b)
        n += 1
    return early, late, n


def test_counter_stamps_stay_on_the_monotonic_clock(start_tracker):
    if not _kernel_uses_tsc():
        pytest.skip(f"the kernel keeps time with {CLOCKSOURCE.read_text().strip() if CLOCKSOURCE.exists() else '?'} "
                    f"on {platform.machine()}: stamps are clock_gettime itself (the other tests cover it)")
    lib = _lib()
    start_tracker()
    _wait_for_counter(lib)
    # 1.5 s: seven or more re-anchorings by the mover, each slewing what error it found.
    early, late, n = _bracket_errors(lib, 1.5)
    assert lib.ms_clock_source() == 1
    assert n > 10_000
    assert early < TOLERANCE_NS and late < TOLERANCE_NS, (early, late)


def test_stamps_never_step_back(start_tracker, th):
    from memscope_otel._memscope import ffi, lib as mlib

    lib = _lib()
    start_tracker()
    if _kernel_uses_tsc():
        _wait_for_counter(lib)
    calls = th.ffi.new("uint64_t *")
    # Back to back from C (a few ns apart, closer than the error a re-anchoring finds) for 1.2 s:
    # six or more re-anchorings by the mover, each slewed rather than stepped.
    worst = th.lib.th_stamps_step_back(int(ffi.cast("uintptr_t", ffi.addressof(mlib, "ms_stamp_ns"))),
                                       1_200_000_000, calls)
    assert calls[0] > 2_000_000  # back to back (20-60 ns each on an idle core; a loaded one gives less)
    assert worst == 0, f"a stamp {worst} ns behind the one before it"


def test_system_clock_when_asked(start_tracker):
    lib = _lib()
    start_tracker()
    lib.ms_clock_use_system(1)
    try:
        assert lib.ms_clock_source() == 0
        early, late, _ = _bracket_errors(lib, 0.2)
        # clock_gettime itself: never outside the bracket
        assert early <= 0 and late <= 0, (early, late)
    finally:
        lib.ms_clock_use_system(0)


def test_a_stopped_mover_leaves_the_counter_for_the_system_clock(start_tracker):
    if not _kernel_uses_tsc():
        pytest.skip("the counter is not used on this machine: stamps are always clock_gettime")
    lib = _lib()
    start_tracker()
    _wait_for_counter(lib)
    memscope_otel.stop()  # the mover stops with the drainer: nobody re-anchors
    time.sleep(2.3)       # past the 2 s an anchor is trusted for
    assert lib.ms_clock_source() == 0
    early, late, _ = _bracket_errors(lib, 0.1)
    assert early <= 0 and late <= 0, (early, late)


class _Times:
    """A record sink keeping the times of the records of the test's own blocks (bytearray(100_000):
    100,001 bytes), in microseconds since the Unix epoch. Only those: the sink's own arrays, made
    by the test's thread in its last drain, are large too, and whether their records make that
    drain or the next depends on timing (a 3.12 run once saw one, 30 ms after the last span)."""

    def __init__(self):
        self.times = []

    def __call__(self, records, base_us):
        ours = records[records["size"] == 100_001]
        self.times.append(base_us + ours["time_delta_us"].astype(np.int64))


@pytest.mark.parametrize("system", [False, True], ids=["counter", "clock_gettime"])
def test_records_carry_the_time_they_were_made(start_tracker, system):
    lib = _lib()
    tracker = start_tracker(frequency_sample_interval=0)
    if not system and _kernel_uses_tsc():
        _wait_for_counter(lib)
    lib.ms_clock_use_system(1 if system else 0)
    try:
        sink = _Times()
        tracker.drainer.drain()
        tracker.drainer.add_sink(sink)
        spans = []
        for _ in range(20):
            before = time.monotonic_ns() // 1000
            for _ in range(50):
                bytearray(100_000)  # large: always sampled, an allocation and a free record
            spans.append((before, time.monotonic_ns() // 1000))
            time.sleep(0.03)
        tracker.drainer.drain()
    finally:
        lib.ms_clock_use_system(0)
    times = np.sort(np.concatenate(sink.times))
    assert len(times) >= 20 * 50 * 2
    # Record times are CLOCK_MONOTONIC microseconds mapped to the Unix epoch once, at the first
    # start: the offset between the two lines is taken from the first record (which lies in the
    # first span), and every record must then lie in one of the spans, 3 ms of slack either side
    # (a span lasts a few ms; they are 30 ms apart).
    lo = np.array([a for a, _ in spans], dtype=np.int64)
    hi = np.array([b for _, b in spans], dtype=np.int64)
    mono = times - (times[0] - lo[0])
    k = np.searchsorted(lo - 3000, mono, side="right") - 1
    assert (k >= 0).all()
    outside = mono > hi[k] + 3000
    assert not outside.any(), (mono[outside][:5], lo, hi)
    assert len(np.unique(k)) == 20  # and every span has records


CLOCK_STEPS = r"""
import ctypes, sys, time
import numpy as np
shim = ctypes.CDLL(sys.argv[1])
import memscope_otel
from memscope_otel import sampler
lib = sampler._lib()[1]
memscope_otel.start(adaptive=False)
deadline = time.monotonic() + 3
while not lib.ms_clock_source() and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.3)

def watch(seconds):
    # stamps back to back (about 100 ns apart), bracketed now and then by the clock
    stamps, errors = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stamps.append(np.fromiter((lib.ms_stamp_ns() for _ in range(2000)), dtype=np.int64, count=2000))
        a = time.monotonic_ns(); s = lib.ms_stamp_ns(); b = time.monotonic_ns()
        errors.append((time.monotonic(), max(a - s, s - b)))
    stamps = np.concatenate(stamps)
    back = int(max(0, -np.diff(stamps).min()))
    settled = max(e for t, e in errors if t > end - 0.2)
    return back, settled

# CLOCK_MONOTONIC steps back 300 us against the counter: slewed away within a second
shim.clockshim_shift_monotonic_ns(-300_000)
back, settled = watch(1.6)
print("source:", lib.ms_clock_source())
print("back after a small step:", back)
print("error after a small step:", settled)
# and 5 s ahead: too far to slew, the line steps when the mover re-anchors. (The mover's own
# timed wait now ends 5 s late, the kernel's clock being where it was: records that fill the ring
# wake it.)
shim.clockshim_shift(0, 5)
for _ in range(20_000):
    bytearray(100_000)
back, settled = watch(1.0)
print("error after a large step:", settled)
memscope_otel.stop()
"""


def test_a_clock_step_is_slewed_or_stepped(shim):
    if not _kernel_uses_tsc():
        pytest.skip("the counter is not used on this machine: stamps are always clock_gettime")
    found = run_child(shim, CLOCK_STEPS)
    assert found["source"] == "1", found
    # 300 us back, slewed at 1 ms a second: no stamp behind its predecessor, and caught up
    assert int(found["back after a small step"]) == 0, found
    assert int(found["error after a small step"]) < TOLERANCE_NS, found
    assert int(found["error after a large step"]) < TOLERANCE_NS, found
