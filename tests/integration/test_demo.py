"""scripts/demo.sh (the README's first command) serves memscope metrics on its own /metrics page,
and the Grafana dashboard works on that page too when Prometheus scrapes it directly.

The script runs against the test interpreter's environment (MEMSCOPE_DEMO_INSTALL=0), on a free
port; Prometheus scrapes the page while the demo runs (a target that stops answering has its
series marked stale at once, so the queries must run before the demo ends). The demo is then
stopped with SIGTERM and must exit cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from .conftest import require_memscope_core
from .dashboard import load_dashboard, panel_queries, substitute
from .instrumented import REPO, base_env
from .prometheus_server import FILE_SD_JOB, free_port


def test_demo_page_feeds_prometheus_and_the_dashboard(prometheus):
    require_memscope_core()
    port = free_port()
    env = base_env(MEMSCOPE_DEMO_VENV=sys.prefix, MEMSCOPE_DEMO_INSTALL="0",
                   MEMSCOPE_DEMO_SECONDS="60", MEMSCOPE_DEMO_PORT=str(port))
    prometheus.set_file_targets([f"127.0.0.1:{port}"])
    process = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh")], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    empty = {}
    try:
        selector = f'memscope_allocated_bytes_total{{job="{FILE_SD_JOB}"}}'
        # Three scrapes at least, so that rate() has points to work with.
        ready = prometheus.wait_for(
            f"count_over_time({selector}[1m])",
            lambda r: bool(r) and min(float(row["value"][1]) for row in r) >= 3, timeout=45)
        assert ready, f"Prometheus never scraped the demo page: {prometheus.targets_health()}"
        variables = {"service": FILE_SD_JOB, "instance": f"127.0.0.1:{port}", "domain": ".*",
                     "__rate_interval": "30s"}
        for title, expr in panel_queries(load_dashboard()):
            if not prometheus.query(substitute(expr, variables)):
                empty[title] = expr
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        prometheus.set_file_targets([])
    assert not empty, f"dashboard panels without data on the SDK exporter's page: {empty}"
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert "tracker running" in output, output
    # The demo prints its own page's memscope lines at the end.
    tail = output.split("from the metrics page:")[-1]
    assert 'memscope_allocated_bytes_total{memscope_domain="obj"' in tail, output
