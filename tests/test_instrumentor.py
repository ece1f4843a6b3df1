"""The ``memscope`` instrumentor, in-process and as ``opentelemetry-instrument`` loads it."""

from __future__ import annotations

import importlib.metadata as md
import json
import logging

import pytest

memscope_otel = pytest.importorskip("memscope_otel")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from integration import instrumented  # noqa: E402
from memscope_otel import tracker  # noqa: E402
from memscope_otel.config import load_config  # noqa: E402
from memscope_otel.instrumentor import MemscopeInstrumentor  # noqa: E402

VAR = "OTEL_PYTHON_MEMSCOPE_SMALL_SAMPLE_RATE"
DEFAULT_SMALL_RATE = load_config(environ={}).small_sample_rate


@pytest.fixture
def instrumentor(monkeypatch):
    for name in ("OTEL_SDK_DISABLED", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", VAR):
        monkeypatch.delenv(name, raising=False)
    inst = MemscopeInstrumentor()
    yield inst
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()
    memscope_otel.stop()


def _metric_names(reader) -> set[str]:
    data = reader.get_metrics_data()
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


# -- packaging -------------------------------------------------------------------------------

def test_entry_point_is_registered():
    points = [e for e in md.entry_points(group="opentelemetry_instrumentor") if e.name == "memscope"]
    assert len(points) == 1
    assert points[0].load() is MemscopeInstrumentor


def test_no_instruments_extra_and_no_dependencies():
    extras = md.distribution("memscope-otel").metadata.get_all("Provides-Extra") or []
    assert "instruments" not in extras
    assert tuple(MemscopeInstrumentor().instrumentation_dependencies()) == ()


# -- in-process ------------------------------------------------------------------------------

def test_binds_to_the_given_meter_provider_and_uninstrument_stops(instrumentor):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        instrumentor.instrument(meter_provider=provider)
        assert memscope_otel.is_running()
        blocks = [bytearray(1 << 16) for _ in range(8)]
        assert {"memscope.allocated", "memscope.allocations"} <= _metric_names(reader)
        del blocks
        instrumentor.uninstrument()
        assert not memscope_otel.is_running()
        memscope_otel.stop()  # a second stop is harmless
    finally:
        provider.shutdown()


def test_keyword_settings_override_the_environment(instrumentor, monkeypatch):
    monkeypatch.setenv(VAR, "0.5")
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        instrumentor.instrument(meter_provider=provider, small_sample_rate=0.25)
        assert tracker.current().config.small_sample_rate == 0.25
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.mark.parametrize("name,value", [
    ("OTEL_SDK_DISABLED", "true"),
    ("OTEL_SDK_DISABLED", "TRUE"),
    ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "memscope"),
    ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, memscope"),
    ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "*"),
])
def test_disabled_by_environment(instrumentor, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    instrumentor.instrument(meter_provider=MeterProvider())
    assert not memscope_otel.is_running()


def test_instrument_never_raises(instrumentor, monkeypatch, caplog):
    def broken_start(*args, **kwargs):
        raise RuntimeError("simulated failure inside start()")

    monkeypatch.setattr(memscope_otel, "start", broken_start)
    with caplog.at_level(logging.ERROR, logger="memscope_otel.instrumentor"):
        instrumentor.instrument(meter_provider=MeterProvider())
    assert not memscope_otel.is_running()
    assert "simulated failure inside start()" in caplog.text


# -- through opentelemetry-instrument ---------------------------------------------------------

SCENARIOS = {
    "default": ({}, ()),
    "sdk_disabled": ({"OTEL_SDK_DISABLED": "true"}, ()),
    "disabled_list": ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests, memscope"}, ()),
    "invalid_env": ({VAR: "banana"}, ()),
    "cli_flag": ({"OTEL_PYTHON_MEMSCOPE_ADAPTIVE": "false"}, ("--memscope_small_sample_rate", "0.25")),
    "cli_flag_invalid": ({}, ("--memscope_small_sample_rate", "7")),
}


@pytest.fixture(scope="module")
def runs():
    """Every scenario of report_app.py under opentelemetry-instrument, run concurrently."""
    started = {
        name: instrumented.start(instrumented.APPS / "report_app.py",
                                 instrumented.base_env(OTEL_METRICS_EXPORTER="none", **env),
                                 cli=cli)
        for name, (env, cli) in SCENARIOS.items()
    }
    results = {name: instrumented.finish(p) for name, p in started.items()}
    reports = {}
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
        reports[name] = (json.loads(result.stdout.strip().splitlines()[-1]), result.stderr)
    return reports


def test_discovered_by_opentelemetry_instrument(runs):
    report, _ = runs["default"]
    assert report["running"] is True
    assert report["config_small_sample_rate"] == DEFAULT_SMALL_RATE


def test_otel_sdk_disabled_leaves_it_inactive(runs):
    assert runs["sdk_disabled"][0]["running"] is False


def test_disabled_instrumentations_list(runs):
    assert runs["disabled_list"][0]["running"] is False


def test_invalid_setting_is_logged_with_its_name_and_ignored(runs):
    report, stderr = runs["invalid_env"]
    assert report["running"] is True
    assert VAR in stderr and "banana" in stderr
    assert report["config_small_sample_rate"] == DEFAULT_SMALL_RATE


def test_cli_flag_sets_the_setting(runs):
    report, _ = runs["cli_flag"]
    assert report["env_small_sample_rate"] == "0.25"
    assert report["config_small_sample_rate"] == 0.25
    assert report["sampler_small_rate"] == 0.25


def test_invalid_cli_flag_is_logged_and_ignored(runs):
    report, stderr = runs["cli_flag_invalid"]
    assert report["running"] is True
    assert VAR in stderr
    assert report["config_small_sample_rate"] == DEFAULT_SMALL_RATE
