"""Every memscope-otel setting, in one table, and how it is read.

Each row of ``SETTINGS`` is one setting. It is read from the environment variable
``OTEL_PYTHON_MEMSCOPE_<NAME>``, can be given as ``opentelemetry-instrument --memscope_<name> VALUE``
(see ``memscope_otel.environment_variables``), and as the keyword argument ``<name>`` of
``memscope_otel.start()``; keyword arguments win over the environment. Adding a setting means adding a
row: ``Config``, the environment-variable module, the command-line flags and the README table are all
generated from this table.

Reading never raises: an unparsable or out-of-range value, an unknown domain or an unknown keyword
argument logs a WARNING on the ``memscope_otel`` logger naming the variable and the accepted values,
and the setting keeps its default, because a profiler must never take the profiled service down.
As the OpenTelemetry specification requires, an environment variable set to the empty string counts
as unset.

``python -m memscope_otel.config`` prints the README table of all settings.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

_logger = logging.getLogger("memscope_otel")

ENV_PREFIX = "OTEL_PYTHON_MEMSCOPE_"
# opentelemetry-instrument strips OTEL_ / OTEL_PYTHON_ and lower-cases the rest to name its flags.
FLAG_PREFIX = "--memscope_"

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"


def _format_number(value: float) -> str:
    """A bound as people read it: large powers of two as ``2**k`` / ``2**k-1``, others literally."""
    if isinstance(value, int) and value >= 2**20:
        if value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        if (value + 1) & value == 0:
            return f"2**{value.bit_length()}-1"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


class Flag:
    """A boolean: true/false, 1/0, yes/no, on/off, in any case."""

    _WORDS = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}
    accepted = "true/false (also 1/0, yes/no, on/off)"

    def from_text(self, text: str) -> bool:
        """Parse an environment-variable value."""
        try:
            return self._WORDS[text.strip().lower()]
        except KeyError:
            raise ValueError("not a boolean") from None

    def from_value(self, value: Any) -> bool:
        """Check a keyword-argument value: a bool, 0/1, or text as in the environment."""
        if isinstance(value, str):
            return self.from_text(value)
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        raise ValueError("not a boolean")

    def to_text(self, value: bool) -> str:
        """The value as it would be written in the environment."""
        return "true" if value else "false"


class Integer:
    """An integer in the closed range [low, high]."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self.accepted = f"integer in [{_format_number(low)}, {_format_number(high)}]"

    def from_text(self, text: str) -> int:
        """Parse an environment-variable value (decimal)."""
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise ValueError("not an integer") from None
        return self._check(value)

    def from_value(self, value: Any) -> int:
        """Check a keyword-argument value: an int (or a whole float), or decimal text."""
        if isinstance(value, str):
            return self.from_text(value)
        # bool is an Integral, but enabled=True passed to a size is a mistake, not 1.
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return self._check(int(value))
        if isinstance(value, float) and value.is_integer():
            return self._check(int(value))
        raise ValueError("not an integer")

    def _check(self, value: int) -> int:
        if not self.low <= value <= self.high:
            raise ValueError("out of range")
        return value

    def to_text(self, value: int) -> str:
        """The value as it would be written in the environment."""
        return str(value)


class Real:
    """A finite number in the closed range [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high
        self.accepted = f"number in [{_format_number(low)}, {_format_number(high)}]"

    def from_text(self, text: str) -> float:
        """Parse an environment-variable value."""
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("not a number") from None
        return self._check(value)

    def from_value(self, value: Any) -> float:
        """Check a keyword-argument value: an int or float, or text as in the environment."""
        if isinstance(value, str):
            return self.from_text(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return self._check(float(value))
        raise ValueError("not a number")

    def _check(self, value: float) -> float:
        # NaN fails every comparison, so it is rejected here too.
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError("out of range")
        return value

    def to_text(self, value: float) -> str:
        """The value as it would be written in the environment."""
        return repr(value)


class NameSet:
    """A non-empty subset of fixed names, written comma-separated; kept in the order of ``choices``."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices
        self.accepted = f"non-empty comma-separated subset of {{{', '.join(choices)}}}"

    def from_text(self, text: str) -> tuple[str, ...]:
        """Parse an environment-variable value such as ``obj,raw`` (spaces and case ignored)."""
        return self._check(text.split(","))

    def from_value(self, value: Any) -> tuple[str, ...]:
        """Check a keyword-argument value: comma-separated text or an iterable of names."""
        if isinstance(value, str):
            return self.from_text(value)
        if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
            names = list(value)
            if all(isinstance(name, str) for name in names):
                return self._check(names)
        raise ValueError("not a list of names")

    def _check(self, names: list[str]) -> tuple[str, ...]:
        wanted = {name.strip().lower() for name in names} - {""}
        unknown = wanted - set(self.choices)
        if unknown:
            raise ValueError(f"unknown name(s): {', '.join(sorted(unknown))}")
        if not wanted:
            raise ValueError("empty")
        return tuple(name for name in self.choices if name in wanted)

    def to_text(self, value: tuple[str, ...]) -> str:
        """The value as it would be written in the environment."""
        return ",".join(value)


class Choice:
    """One of fixed names (case ignored)."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices
        self.accepted = f"one of {{{', '.join(choices)}}}"

    def from_text(self, text: str) -> str:
        """Parse an environment-variable value."""
        name = text.strip().lower()
        if name not in self.choices:
            raise ValueError(f"unknown name {_clip(name)!r}")
        return name

    def from_value(self, value: Any) -> str:
        """Check a keyword-argument value: one of the names."""
        if isinstance(value, str):
            return self.from_text(value)
        raise ValueError("not a name")

    def to_text(self, value: str) -> str:
        """The value as it would be written in the environment."""
        return value


class FilePath:
    """A file path; None (unset) means the feature is off."""

    accepted = "file path (unset: none)"

    def from_text(self, text: str) -> str | None:
        """Parse an environment-variable value."""
        return self._check(text)

    def from_value(self, value: Any) -> str | None:
        """Check a keyword-argument value: a str or ``os.PathLike``."""
        if isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            if isinstance(path, str):
                return self._check(path)
        raise ValueError("not a path")

    def _check(self, path: str) -> str | None:
        if "\0" in path:
            raise ValueError("contains a NUL character")
        return path or None

    def to_text(self, value: str | None) -> str:
        """The value as it would be written in the environment."""
        return "" if value is None else value


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the settings table: its name, its kind (type and accepted values), default, meaning."""

    name: str
    kind: Flag | Integer | Real | NameSet | Choice | FilePath
    default: Any
    meaning: str

    @property
    def env_var(self) -> str:
        """The environment variable, e.g. ``OTEL_PYTHON_MEMSCOPE_MAX_SITES``."""
        return ENV_PREFIX + self.name

    @property
    def keyword(self) -> str:
        """The keyword argument of ``memscope_otel.start()`` and the ``Config`` field, e.g. ``max_sites``."""
        return self.name.lower()

    @property
    def flag(self) -> str:
        """The ``opentelemetry-instrument`` option, e.g. ``--memscope_max_sites``."""
        return FLAG_PREFIX + self.keyword

    @property
    def accepted(self) -> str:
        """The accepted values, as shown in warnings and in the README."""
        return self.kind.accepted

    def default_text(self) -> str:
        """The default as shown in the README."""
        return "unset" if self.default is None else self.kind.to_text(self.default)


ALL_DOMAINS = ("obj", "mem", "raw", "native")

SETTINGS: tuple[Setting, ...] = (
    Setting("ENABLED", Flag(), True,
            "Turn the tracker on or off; false hooks nothing and reports nothing."),
    Setting("DOMAINS", NameSet(ALL_DOMAINS), ALL_DOMAINS,
            "Allocator domains to hook: CPython's (PYMEM_DOMAIN_OBJ, _MEM, _RAW) and `native`, the C "
            "library's malloc family as extension modules and other shared objects call it (numpy's "
            "array data; Linux with glibc on x86-64 and AArch64)."),
    Setting("CRITICAL_SIZE_THRESHOLD", Integer(1024, 2**40), 8192,
            "Allocations of at least this many bytes are large and always sampled (weight 1)."),
    Setting("MEDIUM_SAMPLE_RATE", Real(0.0, 1.0), 0.05,
            "Sampling probability of medium allocations (1024 bytes up to the critical size)."),
    Setting("SMALL_SAMPLE_RATE", Real(0.0, 1.0), 0.001,
            "Sampling probability of small allocations (under 1024 bytes)."),
    Setting("FREQUENCY_SAMPLE_INTERVAL", Integer(0, 2**31), 1000,
            "Every Nth allocation of a thread is sampled whatever its size; 0 turns this off."),
    Setting("MAX_RECORDS_PER_THREAD", Integer(256, 4194304), 16384,
            "Most 32-byte records a thread's buffer holds until they are drained. A buffer starts in "
            "the page of the thread's state and grows, segment by segment, with what the thread "
            "samples; it goes back to the system once drained after the thread exits."),
    Setting("MAX_RING_MEMORY", Integer(2**20, 2**40), 128 * 2**20,
            "Bytes all threads' buffers and states may hold together (256 full buffers of the default "
            "size); a thread whose buffer cannot grow has its records added straight into the estimates (the dump file and the workload recognizer miss them; counted in "
            "`memscope.sampler.dropped`)."),
    Setting("LIVE_TABLE_MAX_ENTRIES", Integer(8192, 2**26), 262144,
            "Most sampled live blocks the live table holds (32 bytes each; it starts at 8192 and "
            "doubles as needed). Past it, the table samples itself by a threshold on weighted size "
            "(big blocks stay, small ones are kept in proportion with weights to match), so the live "
            "estimate stays unbiased with a larger variance."),
    Setting("ENABLE_SIMD", Flag(), True,
            "Use the SIMD paths (the reducers, the recognizer's frame-clock search) where the CPU has them; "
            "false forces the scalar ones."),
    Setting("ADAPTIVE", Flag(), True,
            "Let the optimizer lower sampling rates under export pressure."),
    Setting("OPTIMIZER_HIGH_WATER", Real(0.0, 1.0), 0.6,
            "Export pressure above which the optimizer halves the small and medium rates at each collection."),
    Setting("OPTIMIZER_LOW_WATER", Real(0.0, 1.0), 0.3,
            "Export pressure below which (for 3 collections) the optimizer raises the rates back by half steps."),
    Setting("OPTIMIZER_RATE_FLOOR", Real(0.0001, 1.0), 0.01,
            "Lowest fraction of the configured small and medium rates the optimizer may lower them to."),
    Setting("MAX_SITES", Integer(1, 1000), 50,
            "Allocation sites exported, top by bytes; the rest fold into one `other` series."),
    Setting("DRAIN_INTERVAL_MS", Integer(10, 60000), 200,
            "Milliseconds between two drains of the threads' buffers by the background thread; up to 5 times "
            "as long while fewer than 16384 records wait and no dump is written, and as long as none waits "
            "(a buffer half full is emptied at once by a native thread into a stage, whose 32768 records wake "
            "the drainer)."),
    Setting("MAX_STACK_DEPTH", Integer(1, 128), 64,
            "Python frames kept per sampled allocation, innermost first (deeper frames are cut off); "
            "1 keeps the innermost frame only. Stacks are interned as a tree of frames in the id "
            "table (32768 ids, about 1.7 MiB of C memory at most, touched as used, and about 200 "
            "bytes of Python memory per frame resolved); when it is full, a stack is kept as its "
            "innermost frame under an `<overflow>` caller (counted in `stack_overflows`)."),
    Setting("SITE_FRAME", Choice(("innermost", "application")), "innermost",
            "The frame of a stack that names its site in the metrics: the innermost, or `application`, "
            "the innermost frame outside the standard library and site-packages (the innermost "
            "when there is none). Profiles and dumps keep whole stacks either way."),
    Setting("DUMP_PATH", FilePath(), None,
            "Also write every sampled record to this binary dump file; unset writes no dump."),
    Setting("PROFILES_EXPORTER", Choice(("none", "otlp")), "none",
            "`otlp` pushes the allocation profile of each interval and the current heap profile as OTLP "
            "profiles (`profiles/v1development`) to the endpoint of the standard `OTEL_EXPORTER_OTLP_*` "
            "variables (`OTEL_EXPORTER_OTLP_PROFILES_*` first)."),
    Setting("PROFILES_INTERVAL", Integer(1, 86400), 60,
            "Seconds between two profile pushes."),
    Setting("SEED", Integer(0, 2**64 - 1), 0,
            "Seed of the sampling countdowns; 0 seeds from the clock, a fixed seed makes sampling reproducible."),
)

SETTINGS_BY_KEYWORD: dict[str, Setting] = {setting.keyword: setting for setting in SETTINGS}

Config = dataclasses.make_dataclass(
    "Config",
    [(s.keyword, Any, dataclasses.field(default=s.default)) for s in SETTINGS],
    frozen=True,
)
Config.__module__ = __name__  # make_dataclass(module=) needs Python 3.12; pickling needs the real module
Config.__doc__ = (
    "The effective settings, one lower-case field per row of ``SETTINGS`` (``Config()`` is all defaults).\n\n"
    "Build it with ``load_config()``, which validates; the constructor does not.\n\n"
    + "\n".join(f"``{s.keyword}``: {s.meaning}" for s in SETTINGS)
)


def _clip(text: str) -> str:
    # A value can be arbitrarily long (a mangled variable, a whole file pasted in): keep logs readable.
    return text if len(text) <= 80 else text[:77] + "..."


def _shorten(value: Any) -> str:
    try:
        return _clip(repr(value))
    except Exception:  # a broken __repr__ must not turn a warning into a crash
        return f"<{type(value).__name__} object>"


def _warn_invalid(source: str, value: Any, setting: Setting, reason: str) -> None:
    _logger.warning(
        "%s=%s is invalid (%s); accepted: %s; using the default %s",
        source, _shorten(value), _clip(reason), setting.accepted, setting.default_text(),
    )


def load_config(environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Read every setting from ``environ`` (default ``os.environ``), then apply keyword ``overrides``.

    A keyword argument whose value is None counts as not given. Invalid values and unknown keyword
    arguments are logged as warnings (see the module docstring) and never raise.
    """
    if environ is None:
        environ = os.environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.default
        try:
            text = environ.get(setting.env_var)
        except Exception:  # a broken mapping must not break the host application
            text = None
        if text is not None and (not isinstance(text, str) or text.strip()):
            try:
                value = setting.kind.from_text(text)
            except Exception as error:
                _warn_invalid(setting.env_var, text, setting, str(error) or type(error).__name__)
        values[setting.keyword] = value

    for keyword, raw in overrides.items():
        setting = SETTINGS_BY_KEYWORD.get(keyword)
        if setting is None:
            _logger.warning(
                "unknown memscope_otel setting %s=%s ignored; known settings: %s",
                keyword, _shorten(raw), ", ".join(SETTINGS_BY_KEYWORD),
            )
            continue
        if raw is None:
            continue
        try:
            values[keyword] = setting.kind.from_value(raw)
        except Exception as error:
            _warn_invalid(f"keyword argument {keyword}", raw, setting, str(error) or type(error).__name__)
            values[keyword] = setting.default
    return Config(**values)


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SDK_DISABLED`` turns OpenTelemetry (and so this tracker) off.

    Parsed as the OpenTelemetry Python SDK parses it (``value.lower().strip() == "true"``): only
    ``true``, in any case, disables; anything else, unset included, does not. Other values than
    true/false/empty are warned about, as the specification recommends.
    """
    if environ is None:
        environ = os.environ
    try:
        value = environ.get(OTEL_SDK_DISABLED, "")
        word = value.lower().strip()
    except Exception:
        return False
    if word not in ("true", "false", ""):
        _logger.warning("%s=%s is invalid; accepted: true or false; treating it as false",
                        OTEL_SDK_DISABLED, _shorten(value))
    return word == "true"


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README table of every setting (what ``python -m memscope_otel.config`` prints)."""
    lines = [
        "| variable | keyword / CLI flag | default | accepted values | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{s.default_text()}`"
        cells = (f"`{s.env_var}`", f"`{s.keyword}` / `{s.flag}`", default, s.accepted, s.meaning)
        lines.append("| " + " | ".join(_escape_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- settings-table:begin -->"
README_END = "<!-- settings-table:end -->"


def replace_readme_block(readme_text: str) -> str:
    """``readme_text`` with the text between the settings-table markers replaced by ``markdown_table()``."""
    head, found_begin, rest = readme_text.partition(README_BEGIN)
    _, found_end, tail = rest.partition(README_END)
    if not (found_begin and found_end):
        raise ValueError(f"README lacks the {README_BEGIN} ... {README_END} markers")
    # Blank lines keep the table a separate Markdown block from the HTML comments.
    return f"{head}{README_BEGIN}\n\n{markdown_table()}\n{README_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print the settings table, or with ``--readme PATH`` rewrite that file's settings block."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(markdown_table())
        return 0
    if len(args) == 2 and args[0] == "--readme":
        with open(args[1], encoding="utf-8") as readme:
            text = readme.read()
        with open(args[1], "w", encoding="utf-8") as readme:
            readme.write(replace_readme_block(text))
        return 0
    sys.stderr.write("usage: python -m memscope_otel.config [--readme README.md]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
