"""A tracker with fixed settings and a fixed seed, for the length of a ``with`` block."""
import contextlib

import memscope_otel

# Big enough for any chunk the tests run between two drains (they assert that nothing dropped).
RING = 1 << 18


@contextlib.contextmanager
def tracking(seed, meter_provider=None, **settings):
    """Runs a tracker with ``settings`` and ``seed``; the optimizer is off so that the rates are
    the ones the test set. Sampling on the calling thread is reproducible for a given seed."""
    assert not memscope_otel.is_running(), "another test left a tracker running"
    settings.setdefault("max_records_per_thread", RING)
    tracker = memscope_otel.start(meter_provider, seed=seed, adaptive=False, **settings)
    assert tracker is not None
    try:
        yield tracker
    finally:
        memscope_otel.stop()
