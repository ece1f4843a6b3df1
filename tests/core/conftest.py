"""Fixtures of the core correctness tests: the compiled test hook and a running tracker.

The tracker runs with a drain interval of a minute and a MeterProvider whose only reader is an
InMemoryMetricReader (no periodic export), so nothing of memscope's own runs during a test's
measurement window unless the test asks for it.
"""
import pytest

import clockshim
import testhook

# No drain inside a measurement window: a long interval, and rings too large to reach the
# half-full mark that wakes the drainer early (pages of an unused ring are never touched).
QUIET = {"drain_interval_ms": 60000, "adaptive": False, "max_records_per_thread": 4194304,
         "max_ring_memory": 2**36}


@pytest.fixture(scope="session")
def th():
    """The compiled test hook module (``.ffi``, ``.lib``)."""
    return testhook.load()


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    """clockshim.c compiled (see clockshim.py)."""
    return clockshim.build(tmp_path_factory.mktemp("clockshim"))


@pytest.fixture
def start_tracker():
    """Starts memscope (quiet settings unless overridden) and always stops it afterwards."""
    import memscope_otel
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    def start(wait_idle=True, **config):
        reader = InMemoryMetricReader()
        settings = dict(QUIET, **config)
        tracker = memscope_otel.start(meter_provider=MeterProvider(metric_readers=[reader]), **settings)
        assert tracker is not None
        tracker.metric_reader_for_tests = reader
        if wait_idle:
            testhook.wait_thread_idle(tracker.drainer._thread)
        return tracker

    yield start
    memscope_otel.stop()


@pytest.fixture
def tracker(start_tracker):
    return start_tracker()
