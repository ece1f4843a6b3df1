"""The settings table, load_config(), sdk_disabled() and the opentelemetry-instrument variables module."""
import dataclasses
import logging
import os
import pathlib
import re
import subprocess
import sys

import pytest

from memscope_otel import config
from memscope_otel.config import SETTINGS, SETTINGS_BY_KEYWORD, Config, load_config, sdk_disabled

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Written out by hand (not derived from the code) so that a wrong range in the table is caught.
EXPECTED_RANGE = {
    "ENABLED": "true/false",
    "DOMAINS": "{obj, mem, raw, native}",
    "CRITICAL_SIZE_THRESHOLD": "[1024, 2**40]",
    "MEDIUM_SAMPLE_RATE": "[0, 1]",
    "SMALL_SAMPLE_RATE": "[0, 1]",
    "FREQUENCY_SAMPLE_INTERVAL": "[0, 2**31]",
    "MAX_RECORDS_PER_THREAD": "[256, 2**22]",
    "MAX_RING_MEMORY": "[2**20, 2**40]",
    "LIVE_TABLE_MAX_ENTRIES": "[8192, 2**26]",
    "ENABLE_SIMD": "true/false",
    "ADAPTIVE": "true/false",
    "OPTIMIZER_HIGH_WATER": "[0, 1]",
    "OPTIMIZER_LOW_WATER": "[0, 1]",
    "OPTIMIZER_RATE_FLOOR": "[0.0001, 1]",
    "MAX_SITES": "[1, 1000]",
    "DRAIN_INTERVAL_MS": "[10, 60000]",
    "MAX_STACK_DEPTH": "[1, 128]",
    "SITE_FRAME": "{innermost, application}",
    "DUMP_PATH": "file path",
    "PROFILES_EXPORTER": "{none, otlp}",
    "PROFILES_INTERVAL": "[1, 86400]",
    "SEED": "[0, 2**64-1]",
}

EXPECTED_DEFAULTS = Config(
    enabled=True,
    domains=("obj", "mem", "raw", "native"),
    critical_size_threshold=8192,
    medium_sample_rate=0.05,
    small_sample_rate=0.001,
    frequency_sample_interval=1000,
    max_records_per_thread=16384,
    max_ring_memory=128 * 2**20,
    live_table_max_entries=262144,
    enable_simd=True,
    adaptive=True,
    optimizer_high_water=0.6,
    optimizer_low_water=0.3,
    optimizer_rate_floor=0.01,
    max_sites=50,
    drain_interval_ms=200,
    max_stack_depth=64,
    site_frame="innermost",
    dump_path=None,
    profiles_exporter="none",
    profiles_interval=60,
    seed=0,
)

# Valid environment text -> parsed value, including both ends of every range.
GOOD_TEXT = {
    "ENABLED": [("false", False), ("TRUE", True), (" off ", False)],
    "DOMAINS": [("raw", ("raw",)), (" Raw , OBJ ", ("obj", "raw")), ("mem,mem,", ("mem",)),
                ("raw,mem,obj", ("obj", "mem", "raw")), ("native, obj", ("obj", "native"))],
    "CRITICAL_SIZE_THRESHOLD": [("1024", 1024), (str(2**40), 2**40), (" 65536 ", 65536)],
    "MEDIUM_SAMPLE_RATE": [("0", 0.0), ("1", 1.0), ("0.25", 0.25), ("1e-2", 0.01)],
    "SMALL_SAMPLE_RATE": [("0", 0.0), ("1", 1.0), ("0.0001", 0.0001)],
    "FREQUENCY_SAMPLE_INTERVAL": [("0", 0), (str(2**31), 2**31), ("1", 1)],
    "MAX_RECORDS_PER_THREAD": [("256", 256), ("4194304", 4194304), ("1000", 1000)],
    "MAX_RING_MEMORY": [("1048576", 2**20), (str(2**40), 2**40), ("3000000", 3000000)],
    "LIVE_TABLE_MAX_ENTRIES": [("8192", 8192), (str(2**26), 2**26), ("100000", 100000)],
    "ENABLE_SIMD": [("no", False), ("1", True)],
    "ADAPTIVE": [("0", False), ("On", True)],
    "OPTIMIZER_HIGH_WATER": [("0", 0.0), ("1", 1.0), ("0.75", 0.75)],
    "OPTIMIZER_LOW_WATER": [("0", 0.0), ("1", 1.0), ("0.1", 0.1)],
    "OPTIMIZER_RATE_FLOOR": [("0.0001", 0.0001), ("1", 1.0), ("0.05", 0.05)],
    "MAX_SITES": [("1", 1), ("1000", 1000), ("7", 7)],
    "DRAIN_INTERVAL_MS": [("10", 10), ("60000", 60000)],
    "MAX_STACK_DEPTH": [("1", 1), ("128", 128), (" 30 ", 30)],
    "SITE_FRAME": [("innermost", "innermost"), (" Application ", "application")],
    "DUMP_PATH": [("/tmp/memscope.dump", "/tmp/memscope.dump"), ("rel dir/x.msd", "rel dir/x.msd")],
    "PROFILES_EXPORTER": [("otlp", "otlp"), (" OTLP ", "otlp"), ("none", "none")],
    "PROFILES_INTERVAL": [("1", 1), ("86400", 86400), ("15", 15)],
    "SEED": [("0", 0), ("42", 42), (str(2**64 - 1), 2**64 - 1)],
}


def bad_texts(setting):
    """Every kind of invalid environment text for this setting."""
    kind = setting.kind
    if isinstance(kind, config.Flag):
        return ["maybe", "2", "truee", "-1"]
    if isinstance(kind, config.Integer):
        return ["abc", "1.5", "0x10", "1e3", str(kind.low - 1), str(kind.high + 1)]
    if isinstance(kind, config.Real):
        return ["abc", "nan", "inf", "-inf", repr(kind.low - 0.5), repr(kind.high + 0.5)]
    if isinstance(kind, config.NameSet):
        return ["heap", ",", " , ", "obj,heap", "obj;mem"]
    if isinstance(kind, config.Choice):
        return ["grpc", "otlp,none", "o tlp", "outermost", "innermost,application", "app", "inner most"]
    if isinstance(kind, config.FilePath):
        return ["a\0b"]
    raise AssertionError(f"no bad values written for {type(kind).__name__}")


def bad_values(setting):
    """Every kind of invalid keyword-argument value for this setting."""
    kind = setting.kind
    if isinstance(kind, config.Flag):
        return ["maybe", 2, 0.5, [True]]
    if isinstance(kind, config.Integer):
        return ["abc", 1.5, True, [1], kind.low - 1, kind.high + 1]
    if isinstance(kind, config.Real):
        return ["abc", True, float("nan"), float("inf"), kind.low - 0.5, kind.high + 0.5]
    if isinstance(kind, config.NameSet):
        return ["heap", "", [], ["obj", "heap"], 5, [1], b"obj"]
    if isinstance(kind, config.Choice):
        return ["grpc", "", 1, ["otlp"], b"otlp", "outermost", 5, ["innermost"], b"innermost", "app"]
    if isinstance(kind, config.FilePath):
        return [5, b"/tmp/x", "a\0b"]
    raise AssertionError(f"no bad values written for {type(kind).__name__}")


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "memscope_otel" and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="memscope_otel")


def test_every_setting_has_hand_written_expectations():
    names = [s.name for s in SETTINGS]
    assert set(EXPECTED_RANGE) == set(names)
    assert set(GOOD_TEXT) == set(names)
    assert len(set(names)) == len(names)


def test_config_fields_follow_the_table():
    assert [f.name for f in dataclasses.fields(Config)] == [s.keyword for s in SETTINGS]
    assert Config() == EXPECTED_DEFAULTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_sites = 3


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_table_row_is_self_consistent(setting):
    assert setting.name == setting.name.upper() and re.fullmatch(r"[A-Z][A-Z0-9_]*", setting.name)
    assert setting.env_var == "OTEL_PYTHON_MEMSCOPE_" + setting.name
    assert setting.keyword == setting.name.lower()
    assert EXPECTED_RANGE[setting.name] in setting.accepted
    assert setting.meaning and "\n" not in setting.meaning
    if setting.default is not None:
        assert setting.kind.from_value(setting.default) == setting.default
        assert setting.kind.from_text(setting.kind.to_text(setting.default)) == setting.default


def test_defaults_with_empty_environment(caplog):
    assert load_config({}) == EXPECTED_DEFAULTS
    assert warnings_of(caplog) == []


def test_defaults_come_from_os_environ(monkeypatch):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env_var, raising=False)
    assert load_config() == EXPECTED_DEFAULTS
    monkeypatch.setenv("OTEL_PYTHON_MEMSCOPE_MAX_SITES", "9")
    assert load_config().max_sites == 9


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_environment_variable_is_parsed(setting, caplog):
    for text, expected in GOOD_TEXT[setting.name]:
        loaded = load_config({setting.env_var: text})
        assert getattr(loaded, setting.keyword) == expected, text
        assert type(getattr(loaded, setting.keyword)) is type(expected)
        others = {s.keyword: getattr(loaded, s.keyword) for s in SETTINGS if s is not setting}
        assert others == {k: v for k, v in dataclasses.asdict(EXPECTED_DEFAULTS).items() if k != setting.keyword}
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_empty_environment_variable_counts_as_unset(setting, caplog):
    for text in ("", "   "):
        assert getattr(load_config({setting.env_var: text}), setting.keyword) == setting.default
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_bad_environment_value_warns_and_keeps_default(setting, caplog):
    for text in bad_texts(setting):
        caplog.clear()
        loaded = load_config({setting.env_var: text})
        assert getattr(loaded, setting.keyword) == setting.default, text
        records = warnings_of(caplog)
        assert len(records) == 1, text
        message = records[0].getMessage()
        assert setting.env_var in message
        assert EXPECTED_RANGE[setting.name] in message
        assert setting.accepted in message
        assert "default" in message


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_bad_keyword_value_warns_and_keeps_default(setting, caplog):
    # A valid environment value does not rescue an invalid keyword argument: the default is used.
    env_text, env_value = GOOD_TEXT[setting.name][0]
    for value in bad_values(setting):
        caplog.clear()
        loaded = load_config({setting.env_var: env_text}, **{setting.keyword: value})
        assert getattr(loaded, setting.keyword) == setting.default, value
        records = warnings_of(caplog)
        assert len(records) == 1, value
        message = records[0].getMessage()
        assert re.search(rf"\b{setting.keyword}=", message)
        assert setting.env_var not in message  # names what the caller wrote: the keyword
        assert EXPECTED_RANGE[setting.name] in message


def test_one_bad_value_leaves_the_others_alone(caplog):
    loaded = load_config({"OTEL_PYTHON_MEMSCOPE_MAX_SITES": "5000", "OTEL_PYTHON_MEMSCOPE_SEED": "7"},
                         small_sample_rate=2, adaptive=False)
    assert loaded == dataclasses.replace(EXPECTED_DEFAULTS, seed=7, adaptive=False)
    messages = [r.getMessage() for r in warnings_of(caplog)]
    assert len(messages) == 2
    assert any("OTEL_PYTHON_MEMSCOPE_MAX_SITES='5000'" in m and "[1, 1000]" in m for m in messages)
    assert any("small_sample_rate=2" in m and "[0, 1]" in m for m in messages)


def test_keyword_arguments_beat_the_environment(caplog):
    environ = {s.env_var: GOOD_TEXT[s.name][0][0] for s in SETTINGS}
    from_env = load_config(environ)
    overrides = {
        "enabled": True, "domains": ["mem"], "critical_size_threshold": 4096, "medium_sample_rate": 0.5,
        "small_sample_rate": 0.25, "frequency_sample_interval": 5, "max_records_per_thread": 512,
        "max_ring_memory": 2**30, "live_table_max_entries": 2**20,
        "enable_simd": True, "adaptive": True, "max_sites": 3, "drain_interval_ms": 50,
        "optimizer_high_water": 0.9, "optimizer_low_water": 0.2, "optimizer_rate_floor": 0.5,
        "dump_path": pathlib.Path("/tmp/other.dump"), "seed": 99, "profiles_exporter": "none", "profiles_interval": 30,
        "max_stack_depth": 8,
        "site_frame": "application",
    }
    assert set(overrides) == set(SETTINGS_BY_KEYWORD)
    loaded = load_config(environ, **overrides)
    for setting in SETTINGS:
        assert getattr(loaded, setting.keyword) != getattr(from_env, setting.keyword), setting.name
    assert loaded.domains == ("mem",)
    assert loaded.dump_path == "/tmp/other.dump"
    assert warnings_of(caplog) == []


def test_keyword_none_means_not_given():
    loaded = load_config({"OTEL_PYTHON_MEMSCOPE_MAX_SITES": "12", "OTEL_PYTHON_MEMSCOPE_DUMP_PATH": "/d"},
                         max_sites=None, dump_path=None)
    assert loaded.max_sites == 12
    assert loaded.dump_path == "/d"


def test_keyword_values_in_their_natural_types(caplog):
    loaded = load_config(
        {}, enabled="off", domains=("raw", "obj"), critical_size_threshold=16384.0,
        medium_sample_rate=1, small_sample_rate="0.5", max_sites="8", enable_simd=0, adaptive=1,
        seed=2**64 - 1,
    )
    assert loaded.enabled is False and loaded.enable_simd is False and loaded.adaptive is True
    assert loaded.domains == ("obj", "raw")
    assert loaded.critical_size_threshold == 16384 and type(loaded.critical_size_threshold) is int
    assert loaded.medium_sample_rate == 1.0 and type(loaded.medium_sample_rate) is float
    assert loaded.small_sample_rate == 0.5
    assert loaded.max_sites == 8
    assert loaded.seed == 2**64 - 1
    assert warnings_of(caplog) == []


def test_unknown_keyword_is_warned_and_ignored(caplog):
    loaded = load_config({}, max_site=3, sample_rate=0.5)
    assert loaded == EXPECTED_DEFAULTS
    messages = [r.getMessage() for r in warnings_of(caplog)]
    assert len(messages) == 2
    assert "max_site=3" in messages[0] and "max_sites" in messages[0]  # lists the known names
    assert "sample_rate=0.5" in messages[1]


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("TRUE", True), (" true ", True), ("1", True), ("yes", True),
    ("YES", True), ("on", True), ("On", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False), ("off", False),
    ("OFF", False),
])
def test_boolean_spellings(text, expected):
    for setting in SETTINGS:
        if isinstance(setting.kind, config.Flag):
            assert getattr(load_config({setting.env_var: text}), setting.keyword) is expected


def test_load_config_survives_a_broken_environment(caplog):
    class Exploding(dict):
        def get(self, key, default=None):
            raise RuntimeError("broken mapping")

    assert load_config(Exploding()) == EXPECTED_DEFAULTS
    # Values that are not even strings: warned, default kept, nothing raised.
    loaded = load_config({"OTEL_PYTHON_MEMSCOPE_MAX_SITES": 5, "OTEL_PYTHON_MEMSCOPE_ENABLED": object()})
    assert loaded == EXPECTED_DEFAULTS
    assert len(warnings_of(caplog)) == 2

    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert load_config({}, max_sites=Unprintable(), no_such_setting=Unprintable()) == EXPECTED_DEFAULTS
    assert len(warnings_of(caplog)) == 4


def test_long_bad_value_is_shortened_in_the_warning(caplog):
    load_config({"OTEL_PYTHON_MEMSCOPE_DOMAINS": "x" * 10_000})
    (record,) = warnings_of(caplog)
    assert len(record.getMessage()) < 400


# OTEL_SDK_DISABLED: the OpenTelemetry Python SDK disables itself only for "true" after
# .lower().strip(); anything else (1, yes, ...) leaves it enabled. Ours must agree.
SDK_DISABLED_CASES = [
    (None, False, False), ("", False, False), ("false", False, False), ("FALSE", False, False),
    ("true", True, False), ("True", True, False), (" TRUE ", True, False),
    ("1", False, True), ("yes", False, True), ("on", False, True), ("disabled", False, True),
]


@pytest.mark.parametrize("value, disabled, warned", SDK_DISABLED_CASES)
def test_sdk_disabled(value, disabled, warned, caplog):
    environ = {} if value is None else {"OTEL_SDK_DISABLED": value}
    assert sdk_disabled(environ) is disabled
    records = warnings_of(caplog)
    assert len(records) == (1 if warned else 0)
    if warned:
        assert "OTEL_SDK_DISABLED" in records[0].getMessage()


@pytest.mark.parametrize("value, disabled, warned", SDK_DISABLED_CASES)
def test_sdk_disabled_agrees_with_the_sdk(value, disabled, warned, monkeypatch):
    from opentelemetry.metrics import NoOpMeter
    from opentelemetry.sdk.metrics import MeterProvider

    if value is None:
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    else:
        monkeypatch.setenv("OTEL_SDK_DISABLED", value)
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        sdk_says_disabled = isinstance(provider.get_meter("memscope-test"), NoOpMeter)
    finally:
        provider.shutdown()
    assert sdk_disabled() is sdk_says_disabled is disabled


# --- the opentelemetry_environment_variables module ------------------------------------------------


def _instrument_argument(attribute):
    """How opentelemetry-instrument names the option of a variable (auto_instrumentation.run)."""
    return re.sub(r"OTEL_(PYTHON_)?", "", attribute).lower()


def test_environment_variables_module_has_one_attribute_per_setting():
    from memscope_otel import environment_variables as module

    otel_names = [name for name in dir(module) if name.startswith("OTEL_")]
    assert sorted(otel_names) == sorted(s.env_var for s in SETTINGS)
    for setting in SETTINGS:
        assert getattr(module, setting.env_var) == setting.env_var
        assert f".. envvar:: {setting.env_var}" in (module.__doc__ or f".. envvar:: {setting.env_var}")
    assert sorted(module.__all__) == sorted(otel_names)


def test_flags_derive_as_opentelemetry_instrument_derives_them():
    for setting in SETTINGS:
        assert "--" + _instrument_argument(setting.env_var) == setting.flag
        assert setting.flag == "--memscope_" + setting.name.lower()


def test_entry_point_is_declared_in_pyproject():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.opentelemetry_environment_variables]", 1)[1]
    assert re.search(r'^memscope\s*=\s*"memscope_otel\.environment_variables"', section, re.M)


# Runs the real opentelemetry-instrument option parser with our module among the installed ones:
# no option conflict, and every --memscope_<name> lands in its variable. The command it then
# execs is printenv, so no tracked Python program starts.
_INSTRUMENT_SCRIPT = r"""
import sys
from importlib.metadata import EntryPoint
import opentelemetry.instrumentation.auto_instrumentation as auto

GROUP = "opentelemetry_environment_variables"
OURS = "memscope_otel.environment_variables"
installed = auto.entry_points

def with_ours(**params):
    found = list(installed(**params))
    if params.get("group") == GROUP and not any(ep.value == OURS for ep in found):
        found.append(EntryPoint(name="memscope", value=OURS, group=GROUP))
    return found

auto.entry_points = with_ours
sys.argv = ["opentelemetry-instrument", *sys.argv[1:]]
auto.run()
"""


def test_opentelemetry_instrument_sets_every_variable():
    pytest.importorskip("opentelemetry.instrumentation.auto_instrumentation")
    values = {s: f"value-{i}" for i, s in enumerate(SETTINGS)}
    argv = [arg for s, v in values.items() for arg in (s.flag, v)]
    argv += ["printenv", *(s.env_var for s in SETTINGS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PYTHON_MEMSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", _INSTRUMENT_SCRIPT, *argv], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == list(values.values())


def test_opentelemetry_instrument_help_lists_the_flags():
    pytest.importorskip("opentelemetry.instrumentation.auto_instrumentation")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", _INSTRUMENT_SCRIPT, "--help"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for setting in SETTINGS:
        assert setting.flag.upper() in result.stdout.upper()
