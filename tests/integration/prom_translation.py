"""OTLP -> Prometheus naming rules, as the Collector's ``prometheus`` exporter applies them.

Written from the OpenTelemetry specification ("Prometheus and OpenMetrics Compatibility",
section "OTLP Metric points to Prometheus") and the unit tables of the Prometheus
``otlptranslator`` package that the Collector uses with its default settings
(``add_metric_suffixes: true``, legacy-compliant names):

* the metric name is split on every character outside ``[a-zA-Z0-9:]`` and re-joined with
  single underscores (``memscope.allocated`` -> ``memscope_allocated``);
* the unit becomes a suffix unless the name already contains it: ``By`` -> ``bytes``,
  ``s`` -> ``seconds``, ``1`` -> nothing, ``a/b`` -> ``<a>_per_<b>``; units written in braces
  (``{allocation}``) are annotations and add nothing;
* monotonic cumulative sums get ``_total``; gauges (not counters) of unit ``1`` get ``_ratio``;
* attribute keys have invalid characters replaced by ``_``, runs of ``_`` collapsed, and
  ``key_`` prepended when they would start with a digit; keys that collide are merged with their
  values joined by ``;`` in the order of the original keys.
"""

from __future__ import annotations

import json
import math
import re

_UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNIT_WORDS = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}

_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORE_RUN = re.compile(r"__+")

GAUGE = "gauge"
COUNTER = "counter"
HISTOGRAM = "histogram"
SUMMARY = "summary"


def _clean_unit_word(word: str) -> str:
    return _UNDERSCORE_RUN.sub("_", _NOT_NAME_CHAR.sub("_", word)).lstrip("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """Main and ``per_`` suffix words of an OTLP (UCUM) unit, before clean-up."""
    main_part, _, per_part = unit.partition("/")
    main_part, per_part = main_part.strip(), per_part.strip()
    main = ""
    if main_part and "{" not in main_part and "}" not in main_part:
        main = _UNIT_WORDS.get(main_part, main_part)
    per = ""
    if per_part and "{" not in per_part and "}" not in per_part:
        per = "per_" + _PER_UNIT_WORDS.get(per_part, per_part)
    return main, per


def metric_name(name: str, unit: str, prom_type: str) -> str:
    """The Prometheus metric family name for an OTLP metric of ``prom_type`` (COUNTER, GAUGE...)."""
    tokens = [t for t in _NOT_NAME_CHAR.split(name) if t]
    main, per = _unit_suffixes(unit)
    main, per = _clean_unit_word(main), _clean_unit_word(per)
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.rstrip("_")
        if per in tokens:
            per = ""
    if per:
        main = main.rstrip("_")
    if main:
        tokens.append(main)
    if per:
        tokens.append(per)
    if prom_type == COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and prom_type == GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    result = "_".join(tokens)
    if result and result[0].isdigit():
        result = "_" + result
    return result


def label_name(key: str) -> str:
    """The Prometheus label name for an OTLP attribute key."""
    result = _UNDERSCORE_RUN.sub("_", _NOT_LABEL_CHAR.sub("_", key))
    if result and result[0].isdigit():
        result = "key_" + result
    return result


def attribute_value_text(any_value) -> str:
    """An OTLP ``AnyValue`` as label text (strings as-is, other scalars printed, arrays as JSON)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return any_value.string_value
    if kind == "bool_value":
        return "true" if any_value.bool_value else "false"
    if kind == "int_value":
        return str(any_value.int_value)
    if kind == "double_value":
        return float_text(any_value.double_value)
    if kind == "array_value":
        return json.dumps([_plain(v) for v in any_value.array_value.values], separators=(",", ":"))
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return str(getattr(any_value, kind))


def _plain(any_value):
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def labels_from_attributes(attributes) -> dict[str, str]:
    """Translate a repeated ``KeyValue`` into labels, merging keys that collide after clean-up."""
    merged: dict[str, list[tuple[str, str]]] = {}
    for kv in attributes:
        merged.setdefault(label_name(kv.key), []).append((kv.key, attribute_value_text(kv.value)))
    return {name: ";".join(v for _, v in sorted(pairs)) for name, pairs in merged.items()}


def float_text(value: float) -> str:
    """A number as the Prometheus text format and Go's ``FormatFloat(v, 'f'/'g', -1)`` print it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))


def escape_label_value(text: str) -> str:
    """Escape a label value for the Prometheus text exposition format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
