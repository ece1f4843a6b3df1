"""scripts/demo.sh (the README's first command) serves memscope metrics on its own /metrics page.

The script runs against the test interpreter's environment (MEMSCOPE_DEMO_INSTALL=0), on a free
port, for a few seconds; the page is scraped while the demo runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from .conftest import require_memscope_core
from .instrumented import REPO, base_env
from .prometheus_server import free_port


def test_demo_serves_memscope_metrics_and_exits_cleanly():
    require_memscope_core()
    port = free_port()
    env = base_env(MEMSCOPE_DEMO_VENV=sys.prefix, MEMSCOPE_DEMO_INSTALL="0",
                   MEMSCOPE_DEMO_SECONDS="3", MEMSCOPE_DEMO_PORT=str(port))
    process = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh")], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = ""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    page = resp.read().decode()
                if "memscope_allocated_bytes_total{" in page:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert "tracker running" in output, output
    assert 'memscope_allocated_bytes_total{memscope_domain="obj"' in page, page[:2000]
    # The demo prints its own page's memscope lines at the end.
    assert "memscope_allocated_bytes_total{" in output.split("from the metrics page:")[-1], output
