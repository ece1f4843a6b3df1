"""A KeyboardInterrupt (a signal's exception) inside start() or stop(), and a signal handler that
stops memscope while the same thread is inside a drain: the hooks never stay on without an owner,
nothing deadlocks, and the next stop() finishes the job."""
import os
import subprocess
import sys
import threading

import pytest

import memscope_otel
from memscope_otel import sampler
from memscope_otel.drainer import Drainer
from memscope_otel.producer import Producer


def memscope_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("memscope") and t.is_alive()]


def test_interrupted_stop_turns_the_hooks_off_and_the_next_stop_finishes(start_tracker, monkeypatch):
    tracker = start_tracker(adaptive=True)
    real_stop = Drainer.stop

    def interrupted(self):
        monkeypatch.setattr(Drainer, "stop", real_stop)  # once
        raise KeyboardInterrupt

    monkeypatch.setattr(Drainer, "stop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        memscope_otel.stop()
    assert not sampler.is_active()  # the hooks went first
    assert memscope_otel.is_running()  # ... and the tracker stays current until a stop() completes
    memscope_otel.stop()
    assert not memscope_otel.is_running()
    assert not tracker.drainer._thread
    assert memscope_threads() == []
    assert memscope_otel.start(drain_interval_ms=60000, adaptive=False) is not None  # nothing left over
    memscope_otel.stop()


def test_interrupted_start_undoes_itself_and_lets_the_interrupt_through(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from opentelemetry.sdk.metrics import MeterProvider

    # A new provider gets a new Producer, made after the hooks and the drainer started.
    monkeypatch.setattr(Producer, "__init__", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            memscope_otel.start(meter_provider=MeterProvider(), drain_interval_ms=60000)
    finally:
        if memscope_otel.is_running():
            memscope_otel.stop()
    assert not sampler.is_active()
    assert not memscope_otel.is_running()
    assert memscope_threads() == []
    monkeypatch.undo()
    assert memscope_otel.start(drain_interval_ms=60000, adaptive=False) is not None
    memscope_otel.stop()


HANDLER_CHILD = """
import signal, sys, faulthandler
import memscope_otel
faulthandler.dump_traceback_later(20, exit=True)  # a deadlock shows as a traceback and status 1

tracker = memscope_otel.start(drain_interval_ms=60000, adaptive=False)
def in_the_middle_of_a_drain(records, base_us):  # what a signal handler running here would do
    memscope_otel.stop()
    print("stopped inside a drain", flush=True)
tracker.drainer.add_sink(in_the_middle_of_a_drain)
keep = [bytearray(20000) for _ in range(10)]  # large: sampled, so the drain has records
memscope_otel.snapshot()
print("snapshot returned; running:", memscope_otel.is_running(), flush=True)
"""


def test_stop_from_inside_a_drain_on_the_same_thread_does_not_deadlock():
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", HANDLER_CHILD], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "stopped inside a drain" in proc.stdout
    assert "snapshot returned; running: False" in proc.stdout


def test_a_failing_step_of_stop_does_not_skip_the_next_ones(start_tracker, monkeypatch, caplog):
    tracker = start_tracker(adaptive=True)
    optimizer_stop = tracker.optimizer.stop

    def failing():
        raise RuntimeError("optimizer failed to stop")

    monkeypatch.setattr(tracker.optimizer, "stop", failing)
    memscope_otel.stop()  # logged, not raised
    assert "did not stop cleanly" in caplog.text
    assert not sampler.is_active() and not memscope_otel.is_running()
    assert tracker.drainer._thread is None  # the drainer still stopped after the failed step
    optimizer_stop()  # (the test's own cleanup of the recognizer's thread)
    assert memscope_threads() == []
