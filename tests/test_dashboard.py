"""The Grafana dashboard is provisioning-ready and only queries metrics memscope exports.

(That every query parses and returns data from a real Prometheus is checked in
tests/integration/test_dashboard_queries.py.)
"""

import json
import re
from pathlib import Path

import pytest

from integration.dashboard import DASHBOARD_PATH, load_dashboard, panel_queries, variable_queries
from integration.prom_translation import COUNTER, GAUGE, metric_name

# DESIGN.md's metric table: (OpenTelemetry name, unit, Prometheus type).
DESIGN_METRICS = [
    ("memscope.allocations", "{allocation}", COUNTER),
    ("memscope.allocated", "By", COUNTER),
    ("memscope.deallocations", "{deallocation}", COUNTER),
    ("memscope.allocations.by_size", "{allocation}", COUNTER),
    ("memscope.site.allocated", "By", COUNTER),
    ("memscope.site.allocations", "{allocation}", COUNTER),
    ("memscope.live", "By", GAUGE),
    ("memscope.site.live", "By", GAUGE),
    ("memscope.type.allocated", "By", COUNTER),
    ("memscope.sampler.rate", "1", GAUGE),
    ("memscope.sampler.samples", "{record}", COUNTER),
    ("memscope.sampler.dropped", "{record}", COUNTER),
    ("memscope.sampler.memory", "By", GAUGE),
    ("memscope.sampler.live_table.fill", "1", GAUGE),
    ("memscope.sampler.live_table.threshold", "By", GAUGE),
    ("memscope.optimizer.pressure", "1", GAUGE),
    ("memscope.tracker.cpu", "s", COUNTER),
]
PROMETHEUS_NAMES = {metric_name(*m) for m in DESIGN_METRICS}


@pytest.fixture(scope="module")
def dashboard():
    return load_dashboard()


def test_is_plain_json_ready_for_file_provisioning(dashboard):
    assert json.loads(Path(DASHBOARD_PATH).read_text()) == dashboard
    assert dashboard["id"] is None  # provisioning assigns the id
    assert dashboard["uid"] == "memscope-otel"
    assert "__inputs" not in dashboard  # no import-time placeholders: provisioning cannot fill them
    datasource = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource and datasource[0]["query"] == "prometheus"


def test_every_panel_uses_the_datasource_variable(dashboard):
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_service_instance_and_domain_variables(dashboard):
    variables = variable_queries(dashboard)
    assert set(variables) == {"service", "instance", "domain"}
    assert variables["service"] == "label_values(memscope_allocated_bytes_total, job)"
    assert '{job=~"$service"}' in variables["instance"]
    assert variables["instance"].endswith(", instance)")
    assert '{job=~"$service",instance=~"$instance"}' in variables["domain"]
    assert variables["domain"].endswith(", memscope_domain)")


def test_every_per_domain_query_follows_the_domain_variable(dashboard):
    """Five domains (obj, mem, raw, native, manual) times three size classes are fifteen lines:
    the domain variable lets a reader pick the ones that matter; site tables name the domain, as
    ``<native>`` is a site of more than one."""
    for title, expr in panel_queries(dashboard):
        if re.search(r"memscope_(allocations|allocated_bytes|deallocations|allocations_by_size|live_bytes|site_[a-z_]+)"
                     r"(_total)?\{", expr):
            assert 'memscope_domain=~"$domain"' in expr, title
        if "code_file_path" in expr:
            assert "memscope_domain)" in expr, title


def test_every_query_filters_by_service_and_instance(dashboard):
    for title, expr in panel_queries(dashboard):
        assert 'job=~"$service"' in expr and 'instance=~"$instance"' in expr, title


def _collector_and_sdk_names():
    """Each metric's name through the Collector, and through the SDK's own Prometheus exporter
    (opentelemetry-exporter-prometheus adds no ``_ratio`` to unit-``1`` gauges)."""
    names = {}
    for name, unit, kind in DESIGN_METRICS:
        collector = metric_name(name, unit, kind)
        sdk = collector[: -len("_ratio")] if unit == "1" and kind == GAUGE else collector
        names[collector] = sdk
    return names


def test_queries_use_only_memscope_metrics(dashboard):
    names = _collector_and_sdk_names()
    for title, expr in panel_queries(dashboard):
        plain = set(re.findall(r"\b(memscope_[a-z_]+)\{", expr))
        assert plain <= PROMETHEUS_NAMES, (title, plain - PROMETHEUS_NAMES)
        # {__name__=~"..."} selectors must match a metric under both exporters' naming.
        patterns = re.findall(r'__name__=~"([^"]+)"', expr)
        for pattern in patterns:
            matched = [c for c, sdk in names.items()
                       if re.fullmatch(pattern, c) and re.fullmatch(pattern, sdk)]
            assert len(matched) == 1, (title, pattern, matched)
        assert plain or patterns, title
        # A plain name must not be one that the SDK exporter spells differently.
        assert all(names[n] == n for n in plain), (title, plain)


def test_required_panels_present(dashboard):
    exprs = {title: expr for title, expr in panel_queries(dashboard)}
    by_type = {p["title"]: p["type"] for p in dashboard["panels"]}
    wanted = {
        "memscope_allocations_total": "allocation rate",
        "memscope_allocated_bytes_total": "bytes/s",
        "memscope_allocations_by_size_total": "size distribution",
        "memscope_site_allocated_bytes_total": "top sites",
        "memscope_live_bytes": "live estimate",
        "memscope_sampler_rate(_ratio)?": "sampler rate",
        "memscope_sampler_dropped_total": "dropped records",
        "memscope_optimizer_pressure(_ratio)?": "optimizer pressure",
        "memscope_tracker_cpu_seconds_total": "tracker CPU by component",
    }
    for metric, what in wanted.items():
        assert any(metric in e for e in exprs.values()), f"no panel for {what} ({metric})"
    heatmaps = [t for t, e in exprs.items() if "memscope_allocations_by_size_total" in e]
    assert by_type[heatmaps[0]] == "heatmap"
    assert any("topk(" in e and "memscope_site_allocated_bytes_total" in e for e in exprs.values())
    by_domain_class = [e for e in exprs.values()
                       if "by (memscope_domain, memscope_size_class)" in e]
    assert len(by_domain_class) == 2  # allocations/s and bytes/s
    assert any("by (memscope_component)" in e and "memscope_tracker_cpu_seconds_total" in e for e in exprs.values())
