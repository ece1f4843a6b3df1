"""Bad settings and bad API arguments never raise into the application: the tracker warns, naming
the setting and what it accepts, and carries on with the default.

Also every accepted extreme of every numeric setting really starts the C sampler (the config
layer and the C side must agree on the ranges)."""
import logging

import pytest
from opentelemetry.sdk.metrics import MeterProvider

import memscope_otel
from memscope_otel import sampler
from memscope_otel.config import SETTINGS, Integer, Real

LOGGER = "memscope_otel"


@pytest.fixture
def provider():
    return MeterProvider()


@pytest.fixture(autouse=True)
def always_stop():
    yield
    memscope_otel.stop()


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def start_quiet(provider, **config):
    return memscope_otel.start(meter_provider=provider, **dict({"drain_interval_ms": 60000}, **config))


@pytest.mark.parametrize("keyword, value, accepted", [
    ("small_sample_rate", 5, "[0, 1]"),
    ("medium_sample_rate", -0.5, "[0, 1]"),
    ("medium_sample_rate", float("nan"), "[0, 1]"),
    ("critical_size_threshold", 10, "[1024, 2**40]"),
    ("frequency_sample_interval", -1, "[0, 2**31]"),
    ("max_records_per_thread", 10, "[256, 2**22]"),
    ("max_sites", 0, "[1, 1000]"),
    ("drain_interval_ms", "soon", "[10, 60000]"),
    ("domains", "obj,heap", "obj, mem, raw"),
    ("enabled", "maybe", "true/false"),
    ("seed", -3, "[0, 2**64-1]"),
])
def test_bad_keyword_warns_and_uses_default(caplog, provider, keyword, value, accepted):
    caplog.set_level(logging.WARNING, LOGGER)
    tracker = start_quiet(provider, **{keyword: value})
    assert tracker is not None and sampler.is_active()
    messages = warnings_of(caplog)
    assert any(keyword in m and accepted in m for m in messages), messages
    default = next(s.default for s in SETTINGS if s.keyword == keyword)
    assert getattr(tracker.config, keyword) == default


def test_bad_environment_value_names_the_variable(caplog, provider, monkeypatch):
    caplog.set_level(logging.WARNING, LOGGER)
    monkeypatch.setenv("OTEL_PYTHON_MEMSCOPE_SMALL_SAMPLE_RATE", "lots")
    monkeypatch.setenv("OTEL_PYTHON_MEMSCOPE_DOMAINS", "")  # empty counts as unset
    tracker = start_quiet(provider)
    assert tracker is not None
    assert any("OTEL_PYTHON_MEMSCOPE_SMALL_SAMPLE_RATE" in m and "[0, 1]" in m for m in warnings_of(caplog))
    medium, small = sampler.rates()
    assert small == 0.001 and medium == 0.05


def test_unknown_keyword_and_double_start_warn(caplog, provider):
    caplog.set_level(logging.WARNING, LOGGER)
    first = start_quiet(provider, samplig_rate=0.5)
    assert first is not None
    assert any("samplig_rate" in m for m in warnings_of(caplog))
    assert start_quiet(provider) is first
    assert any("already running" in m for m in warnings_of(caplog))
    memscope_otel.stop()
    memscope_otel.stop()  # stopping twice is harmless
    assert not memscope_otel.is_running()


NUMERIC = [s for s in SETTINGS if isinstance(s.kind, (Integer, Real))]


@pytest.mark.parametrize("end", ["low", "high"])
@pytest.mark.parametrize("setting", NUMERIC, ids=[s.keyword for s in NUMERIC])
def test_every_accepted_extreme_starts(caplog, provider, setting, end):
    """A value the config layer accepts must not make start() raise (the C side rejecting what
    the config layer accepted would crash the application at start)."""
    caplog.set_level(logging.WARNING, LOGGER)
    value = getattr(setting.kind, end)
    tracker = start_quiet(provider, **{setting.keyword: value})
    assert tracker is not None and sampler.is_active()
    assert getattr(tracker.config, setting.keyword) == value
    assert warnings_of(caplog) == []
    junk = [bytearray(20000) for _ in range(3)] + [str(i) for i in range(2000)]
    assert memscope_otel.snapshot().counters.allocations.sum() > 0
    del junk


class Unprintable:
    def __str__(self):
        raise RuntimeError("no name")


@pytest.mark.parametrize("args", [
    dict(ptr=-1, size=10, type_name="T"),
    dict(ptr=0, size=10, type_name="T"),
    dict(ptr=2**64, size=10, type_name="T"),
    dict(ptr=4096, size=-1, type_name="T"),
    dict(ptr=4096, size=2**70, type_name="T"),
    dict(ptr="0x1000", size=10, type_name="T"),
    dict(ptr=None, size=10, type_name="T"),
    dict(ptr=4096, size="big", type_name="T"),
    dict(ptr=4096, size=10, type_name=Unprintable()),
])
def test_bad_track_allocation_warns(caplog, provider, args):
    caplog.set_level(logging.WARNING, LOGGER)
    start_quiet(provider)
    before = sampler.read_counters().allocations[3].sum()
    assert memscope_otel.track_allocation(**args) is None
    assert warnings_of(caplog), f"no warning for {args}"
    assert sampler.read_counters().allocations[3].sum() == before


@pytest.mark.parametrize("ptr", [-5, 0, 2**64, None, "here", 1.5j])
def test_bad_track_deallocation_warns(caplog, provider, ptr):
    caplog.set_level(logging.WARNING, LOGGER)
    start_quiet(provider)
    assert memscope_otel.track_deallocation(ptr) is None
    assert warnings_of(caplog), f"no warning for {ptr!r}"


def test_manual_api_when_not_running_is_silent(caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    assert not memscope_otel.is_running()
    memscope_otel.track_allocation(-1, -1, None)
    memscope_otel.track_deallocation(-1)
    assert memscope_otel.snapshot() is None


def test_good_track_allocation_is_counted(provider):
    """The manual domain counts what it is given (so the checks above are not vacuous). Small and
    never sampled: the process-wide per-type estimates other tests read stay untouched."""
    # Nothing sampled at all, so that an allocation of the interpreter between the two reads
    # cannot add a record either.
    start_quiet(provider, small_sample_rate=0.0, medium_sample_rate=0.0, critical_size_threshold=2**40,
                frequency_sample_interval=0)
    before = sampler.read_counters()
    memscope_otel.track_allocation(0x10000, 123, "core.tests.Buffer")
    memscope_otel.track_deallocation(0x10000)
    after = sampler.read_counters()
    assert after.allocations[3].sum() - before.allocations[3].sum() == 1
    assert after.bytes[3][0] - before.bytes[3][0] == 123
    assert after.deallocations[3] - before.deallocations[3] == 1
    assert after.samples == before.samples
