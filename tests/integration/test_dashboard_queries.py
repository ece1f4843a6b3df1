"""Every PromQL expression of the Grafana dashboard runs on a real Prometheus.

Variables are substituted as Grafana would: ``$service``/``$instance`` with the regex of the
selected values, ``$__rate_interval`` with a window that covers the whole test run (Grafana's own
value depends on the panel width and time range; any value >= 4 scrape intervals is valid PromQL).
"""

from __future__ import annotations

import pytest

from .conftest import MEMSCOPE_RUNS
from .dashboard import load_dashboard, panel_queries, split_label_values, substitute, variable_queries

RATE_INTERVAL = "30s"
DASHBOARD = load_dashboard()
QUERIES = panel_queries(DASHBOARD)


@pytest.mark.parametrize("title,expr", QUERIES, ids=[f"{i}:{t}" for i, (t, _) in enumerate(QUERIES)])
def test_query_parses(prometheus, title, expr):
    """Prometheus accepts the query (a syntax error would raise PrometheusError)."""
    prometheus.query(substitute(expr, {"service": ".*", "instance": ".*", "domain": ".*",
                                       "__rate_interval": RATE_INTERVAL}))


def test_variables_list_the_services_and_instances(prometheus, memscope_runs):
    variables = variable_queries(DASHBOARD)
    selector, label = split_label_values(variables["service"])
    rows = prometheus.wait_for(f"count by ({label}) ({selector})",
                               lambda r: len(r) >= len(MEMSCOPE_RUNS))
    services = {row["metric"][label] for row in rows}
    for service, instances in MEMSCOPE_RUNS.values():
        assert service in services
        selector, label = split_label_values(variables["instance"])
        rows = prometheus.query(f"count by ({label}) ({substitute(selector, {'service': service})})")
        assert {row["metric"][label] for row in rows} == set(instances)
        selector, label = split_label_values(variables["domain"])
        rows = prometheus.query(f"count by ({label}) "
                                f"({substitute(selector, {'service': service, 'instance': '|'.join(instances)})})")
        assert {"obj", "mem", "raw", "native"} <= {row["metric"][label] for row in rows}


@pytest.mark.parametrize("title,expr", QUERIES, ids=[f"{i}:{t}" for i, (t, _) in enumerate(QUERIES)])
@pytest.mark.parametrize("protocol", list(MEMSCOPE_RUNS))
def test_query_returns_data_after_the_app_ran(prometheus, memscope_runs, protocol, title, expr):
    service, instances = MEMSCOPE_RUNS[protocol]
    query = substitute(expr, {"service": service, "instance": "|".join(instances), "domain": ".*",
                              "__rate_interval": RATE_INTERVAL})
    result = prometheus.wait_for(query, bool, timeout=15)
    assert result, f"{title}: no data for {query}"
