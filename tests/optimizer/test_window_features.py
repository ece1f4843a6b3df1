"""The window's features (csrc/window.c) against the same definitions written with numpy: idle
time, the frame clock (the Rayleigh statistic over candidate periods), the short-lived fraction and
the median lifetime (numpy.median's definition)."""
import platform
import zlib

import numpy as np
import pytest

from memscope_otel import sampler
from memscope_otel.optimizer import Window
from memscope_otel.records import EVENT_SHIFT, RECORD_DTYPE

LIB = sampler._lib()[1]
FREE = 1


def reference_features(times, lifetimes):
    """(span, idle, period µs, strength, short-lived fraction, median) as numpy computes them."""
    times = np.sort(np.asarray(times, np.int64))
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    gaps = np.diff(times)
    idle = float(gaps[gaps > LIB.MS_WINDOW_IDLE_GAP_US].sum())
    period = strength = 0.0
    starts = times[1:][gaps > LIB.MS_WINDOW_IDLE_GAP_US] if len(times) > 1 else times[:0]
    if len(starts):
        starts = starts[starts >= starts[-1] - LIB.MS_WINDOW_FRAME_SPAN_US][-LIB.MS_WINDOW_FRAME_STARTS:]
    if len(starts) >= LIB.MS_WINDOW_MIN_STARTS:
        t = (starts - starts[0]).astype(np.float64)
        periods = np.arange(LIB.MS_WINDOW_MIN_PERIOD_US, LIB.MS_WINDOW_MAX_PERIOD_US, LIB.MS_WINDOW_PERIOD_STEP_US,
                            dtype=np.float64)
        values = np.abs(np.exp(2j * np.pi * t[None, :] / periods[:, None]).mean(axis=1))
        strength = float(values.max())
        period = float(periods[np.nonzero(values >= 0.9 * strength)[0][-1]])
    lifetimes = np.asarray(lifetimes, np.int64)
    short = float((lifetimes < LIB.MS_WINDOW_SHORT_LIVED_US).mean()) if len(lifetimes) else 0.0
    median = float(np.median(lifetimes)) if len(lifetimes) else 0.0
    return span, idle, period, strength, short, median


def window_of(times, lifetimes, base_us=10**12):
    """A window that read records at ``times`` (µs from base_us) and freed blocks after
    ``lifetimes``: each lifetime is an allocation and its free, both among the records."""
    n_life = len(lifetimes)
    records = np.zeros(len(times) + 2 * n_life, RECORD_DTYPE)
    records["address"][:len(times)] = 0x7F00_0000_0000 + 16 * np.arange(len(times), dtype=np.uint64)
    records["time_delta_us"][:len(times)] = times
    blocks = 0x1000_0000 + 16 * np.arange(n_life, dtype=np.uint64)
    records["address"][len(times):] = np.concatenate((blocks, blocks))
    records["time_delta_us"][len(times):] = np.concatenate((np.zeros(n_life, np.int64), lifetimes))
    records["flags"][len(times) + n_life:] = FREE << EVENT_SHIFT
    window = Window(0.0)
    assert window.read(records, base_us)
    all_times = np.concatenate((np.asarray(times, np.int64), np.zeros(n_life, np.int64), lifetimes))
    return window, all_times


def frame_loop(rng, frames, period_us, jitter_us, per_frame=20):
    """Bursts of records at a fixed frame clock (wake-ups late by up to jitter_us), 100 µs apart."""
    starts = np.arange(frames) * period_us + rng.integers(0, jitter_us + 1, frames)
    return (starts[:, None] + np.arange(per_frame) * 100).ravel()


@pytest.mark.parametrize("case", ["60fps", "144fps_late", "uniform", "few_bursts", "one", "long", "slow"])
def test_features_equal_their_numpy_definitions(case):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    times = {"60fps": lambda: frame_loop(rng, 300, 16_667, 500),
             "144fps_late": lambda: frame_loop(rng, 700, 6_944, 3_000, per_frame=3),
             "uniform": lambda: np.sort(rng.integers(0, 5_000_000, 3000)),
             "few_bursts": lambda: frame_loop(rng, 7, 20_000, 0),
             "one": lambda: np.array([5]),
             # 30 s of frames: only the last 128 make the clock
             "long": lambda: frame_loop(rng, 1500, 20_000, 1_000, per_frame=2),
             # frames 1 s apart: only those of the last 10 s make it
             "slow": lambda: frame_loop(rng, 40, 1_000_000, 0, per_frame=2)}[case]()
    lifetimes = rng.integers(0, 3000, int(rng.integers(0, 400)))
    window, all_times = window_of(times, lifetimes)
    stats = window.stats(features=True)
    span, idle, period, strength, short, median = reference_features(all_times, lifetimes)
    assert (stats.span_us, stats.idle_us) == (span, idle)
    assert stats.frame_period_us == period
    # The two phases 2 pi t / P differ by a few roundings of the largest one (t within the last
    # FRAME_SPAN, P at least MIN_PERIOD): at most 6 ulp of it a term, and the sums of the at most
    # len(times) cosines and sines by one rounding a term.
    eps = np.finfo(np.float64).eps
    largest_phase = 2 * np.pi * LIB.MS_WINDOW_FRAME_SPAN_US / LIB.MS_WINDOW_MIN_PERIOD_US
    assert abs(stats.frame_clock - strength) <= 6 * eps * largest_phase + (2 + len(all_times)) * eps
    assert stats.short_lived == short
    assert stats.median_lifetime_us == median
    if case in ("60fps", "long"):  # found near the frame period (the grid is 50 µs)
        assert strength > 0.5 and abs(period - {"60fps": 16_667, "long": 20_000}[case]) <= 50
    # Computing features reorders the window's arrays, not their contents.
    assert sorted(window.times().tolist()) == sorted((all_times + 10**12).tolist())
    assert sorted(window.lifetimes().tolist()) == sorted(lifetimes.tolist())
    assert window.stats(features=True).frame_clock == stats.frame_clock


def test_a_long_frame_loop_keeps_a_strong_clock():
    """Read over all its frames, a 60 fps loop's peak would be narrower than the grid's steps (its
    strength fell to about 0.5 over 10 s): over its last FRAME_STARTS starts it is found, as
    strong as a grid period half a step off the loop's own and the late wake-ups allow."""
    period, jitter = 16_667, 500
    rng = np.random.default_rng(60)
    window, _ = window_of(frame_loop(rng, 1200, period, jitter), [])
    stats = window.stats(features=True)
    n = LIB.MS_WINDOW_FRAME_STARTS
    # Starts k P + u_k read at a grid period off by d: phases drift by phi = 2 pi d / P a frame,
    # which leaves |sum of e^(i k phi)| / n (the Dirichlet kernel; d at most half a step); wake-ups
    # late by u uniform in [0, jitter] multiply it by E e^(2 pi i u / P) = sinc(jitter / P); the
    # mean of n such terms strays from its expectation by sqrt((1 - sinc^2) / n), 6 of these.
    phi = 2 * np.pi * (LIB.MS_WINDOW_PERIOD_STEP_US / 2) / period
    dirichlet = abs(np.sin(n * phi / 2) / (n * np.sin(phi / 2)))
    late = np.sinc(jitter / period)
    lowest = dirichlet * late - 6 * np.sqrt((1 - late**2) / n)
    assert stats.frame_clock >= lowest > 0.9
    assert abs(stats.frame_period_us - period) <= LIB.MS_WINDOW_PERIOD_STEP_US


def test_the_frame_clock_search_has_a_scalar_twin_with_the_same_bits():
    """The AVX2 search (four candidate periods a register) against the scalar one, over frame
    loops of random period, lateness and length and over starts at random moments: the same
    strength and period, to the bit (so the numpy definition above holds for both)."""
    if platform.machine() not in ("x86_64", "AMD64") or not LIB.ms_reduce_simd_available():
        pytest.skip("the frame clock's vector twin is AVX2 on x86-64, which this machine lacks")
    rng = np.random.default_rng(16)
    cases = [frame_loop(rng, int(rng.integers(8, 400)), int(rng.integers(5_000, 100_000)),
                        int(rng.integers(0, 5_000)), per_frame=int(rng.integers(1, 6))) for _ in range(40)]
    cases += [np.sort(rng.integers(0, 10_000_000, int(rng.integers(100, 3000)))) for _ in range(5)]
    found = []
    try:
        for times in cases:
            window, _ = window_of(times, [])
            LIB.ms_reduce_use_simd(1)
            assert LIB.ms_window_simd_active() == 1
            vector = window.stats(features=True)
            LIB.ms_reduce_use_simd(0)
            assert LIB.ms_window_simd_active() == 0
            scalar = window.stats(features=True)
            assert (vector.frame_clock.hex(), vector.frame_period_us) == (scalar.frame_clock.hex(),
                                                                           scalar.frame_period_us)
            found.append(scalar.frame_clock)
    finally:
        LIB.ms_reduce_use_simd(1)
    assert min(found) > 0 and max(found) > 0.9  # (every case had a search, some a clear clock)


def test_median_of_an_even_and_an_odd_count():
    for lifetimes in ([7, 1], [5, 1, 9], [4, 4, 4, 4], list(range(1000, 0, -3)), [2**31, 3]):
        window, _ = window_of([], np.array(lifetimes))
        assert window.stats(features=True).median_lifetime_us == float(np.median(lifetimes))


def test_address_zero_is_never_followed():
    """0 marks an empty slot of the table of awaited allocations: records at address 0 (none in
    practice) give no lifetime and leave the table as it was."""
    records = np.zeros(4, RECORD_DTYPE)
    records["address"] = [0, 0, 32, 32]
    records["time_delta_us"] = [1, 2, 3, 9]
    records["flags"] = np.array([0, FREE, 0, FREE]) << EVENT_SHIFT
    window = Window(0.0)
    assert window.read(records, 0)
    assert window.lifetimes().tolist() == [6]
    assert window.pending() == {} and window.n_times == 4
    records["flags"] = np.array([FREE, FREE, 0, 0]) << EVENT_SHIFT
    assert window.read(records, 0)
    assert window.pending() == {32: 9} and int(window.stats().n_pending) == 1
