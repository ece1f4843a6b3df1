"""A :class:`~memscope_otel.reading.Reading` from a Prometheus ``/metrics`` page that carries
memscope's metrics (the OpenTelemetry Prometheus exporter's page, or a Collector's).

The page is parsed with ``prometheus_client``'s parser. Names are matched after the unit and
``_total`` suffixes are taken off, so pages written with or without the exporter's unit suffixes
(``memscope_sampler_rate_ratio`` or ``memscope_sampler_rate``) both read. Series of several
processes on one page (a Collector's) are added together. Per-site figures are what the page
has: the top ``MAX_SITES`` sites and one ``<other>`` series.
"""
from __future__ import annotations

import math
import time
import urllib.error
import urllib.request

from .reading import Reading, SiteFigures, SiteKey
from .records import DOMAINS, SIZE_CLASSES

SUFFIXES = ("_total", "_bytes", "_ratio")


class PageError(Exception):
    """The page cannot be read, or it has no memscope metrics (the message says which)."""


def base_name(sample_name: str) -> str:
    """``memscope_allocated_bytes_total`` -> ``memscope_allocated``."""
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            sample_name = sample_name[: -len(suffix)]
    return sample_name


def fetch_page(url: str, timeout_s: float = 3.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise PageError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise PageError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        raise PageError(f"cannot read {url}: {exc}") from None


def _samples(text: str):
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                yield sample.name, sample.labels, sample.value
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise PageError(f"not a Prometheus metrics page ({exc})") from None


def _domain(labels) -> int | None:
    name = labels.get("memscope_domain")
    return DOMAINS.index(name) if name in DOMAINS else None


def _size_class(labels) -> int | None:
    name = labels.get("memscope_size_class")
    return SIZE_CLASSES.index(name) if name in SIZE_CLASSES else None


def _site(labels) -> SiteKey:
    try:
        line = int(float(labels.get("code_line_number", "0")))
    except ValueError:
        line = 0
    return SiteKey(labels.get("code_file_path", "?"), labels.get("code_function_name", "?"), line,
                   labels.get("memscope_domain", "?"))


def parse_page(text: str, time_s: float) -> Reading:
    """The reading a page's text holds; PageError if it has no memscope allocation counters."""
    reading = Reading(time_s=time_s, rates={}, footprint=None)
    found = set()
    domains = set()
    for name, labels, value in _samples(text):
        if not name.startswith("memscope_") or not math.isfinite(value):
            continue
        base = base_name(name)
        found.add(base)
        d, c = _domain(labels), _size_class(labels)
        if base == "memscope_allocations" and d is not None and c is not None:
            reading.allocations[d][c] += value
            domains.add(DOMAINS[d])
        elif base == "memscope_allocated" and d is not None and c is not None:
            reading.allocated[d][c] += value
        elif base == "memscope_deallocations" and d is not None:
            reading.deallocations[d] += value
        elif base == "memscope_allocations_by_size":
            le = labels.get("memscope_size_le", "")
            if le.isdigit() and int(le) > 0:
                k = int(le).bit_length() - 1
                reading.by_size[k] = reading.by_size.get(k, 0.0) + value
        elif base == "memscope_live" and d is not None:
            reading.live[d] += value
        elif base in ("memscope_site_allocated", "memscope_site_allocations", "memscope_site_live"):
            figures = reading.sites.setdefault(_site(labels), SiteFigures())
            if base == "memscope_site_allocated":
                figures.bytes += value
            elif base == "memscope_site_allocations":
                figures.count += value
            else:
                figures.live += value
        elif base == "memscope_type_allocated":
            type_name = labels.get("memscope_type", "?")
            reading.types[type_name] = reading.types.get(type_name, 0.0) + value
        elif base == "memscope_sampler_rate":
            reading.rates[labels.get("memscope_size_class", "?")] = value
        elif base == "memscope_sampler_samples":
            reading.samples += value
        elif base == "memscope_sampler_dropped":
            reading.dropped += value
        elif base == "memscope_sampler_memory":
            reading.footprint = (reading.footprint or 0.0) + value
        elif base == "memscope_optimizer_pressure":
            reading.pressure = value
            reading.workload = labels.get("memscope_workload")
    if "memscope_allocations" not in found:
        raise PageError("the page has no memscope metrics (no memscope_allocations_total series)")
    reading.domains = tuple(d for d in DOMAINS if d in domains)
    return reading


def read_url(url: str, timeout_s: float = 3.0) -> Reading:
    """Fetches ``url`` and parses it; PageError says what went wrong."""
    text = fetch_page(url, timeout_s)
    return parse_page(text, time.monotonic())
