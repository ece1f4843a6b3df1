"""Fixtures for the integration tests: a real OTLP receiver and a real Prometheus server.

The one place that decides what happens when a real server is unavailable: locally the tests are
skipped with the reason; with ``MEMSCOPE_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``) they fail,
so CI can never go green by skipping them.

The servers are package-scoped, not session-scoped: they live in the test process, and Prometheus
scrapes the receiver's ``/metrics`` every second, each scrape rendering every stored series on a
handler thread. Kept for the whole session, that work ran inside the later statistical tests'
measurement windows (tests/stats), where it is counted as allocations of the process.
"""

from __future__ import annotations

import os

import pytest

from .otlp_receiver import OtlpReceiver
from .prometheus_server import PrometheusError, PrometheusServer, prometheus_binary

SCRAPE_INTERVAL = "1s"


def integration_required() -> bool:
    """True when missing servers must fail the run instead of skipping (CI)."""
    return os.environ.get("MEMSCOPE_REQUIRE_INTEGRATION", "").strip() == "1"


def unavailable(reason: str):
    """Skip (locally) or fail (``MEMSCOPE_REQUIRE_INTEGRATION=1``) because of ``reason``."""
    if integration_required():
        pytest.fail(f"{reason} (MEMSCOPE_REQUIRE_INTEGRATION=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def require_memscope_core():
    """Skip/fail unless the memscope tracker (C core + start/stop API) is importable."""
    try:
        import memscope_otel

        missing = [n for n in ("start", "stop", "is_running") if not hasattr(memscope_otel, n)]
    except Exception as exc:  # an unbuilt extension raises ImportError or OSError
        unavailable(f"memscope_otel cannot be imported ({exc!r}); run pip install -e .")
        return
    if missing:
        unavailable(f"memscope_otel lacks {missing}: the core tracker is not built/merged")


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="package")
def otlp_receiver():
    """An OTLP gRPC + HTTP receiver exposing what it got on a Prometheus ``/metrics`` page."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="package")
def prometheus(otlp_receiver):
    """A real Prometheus server scraping the receiver every second."""
    binary = prometheus_binary()
    if binary is None:
        unavailable("the prometheus binary is not installed (run scripts/install_prometheus.sh, "
                    "or set MEMSCOPE_PROMETHEUS_BIN)")
    server = PrometheusServer(binary, [otlp_receiver.scrape_target],
                              scrape_interval=SCRAPE_INTERVAL)
    try:
        server.start()
    except PrometheusError as exc:
        unavailable(str(exc))
    yield server
    server.stop()


# Two processes per OTLP protocol, all four running at once, each with its own service.instance.id.
MEMSCOPE_RUNS = {
    "grpc": ("memscope-e2e-grpc", ["grpc-worker-1", "grpc-worker-2"]),
    "http/protobuf": ("memscope-e2e-http", ["http-worker-1", "http-worker-2"]),
}
WORKLOAD_SECONDS = "1.5"


@pytest.fixture(scope="package")
def memscope_runs(otlp_receiver, prometheus):
    """Run alloc_app.py under opentelemetry-instrument (memscope instrumentor, OTLP export).

    Returns ``{protocol: (service, [(instance, CompletedProcess), ...])}``.
    """
    require_memscope_core()
    from . import instrumented

    started = {}
    for protocol, (service, instances) in MEMSCOPE_RUNS.items():
        endpoint = (otlp_receiver.grpc_endpoint if protocol == "grpc"
                    else otlp_receiver.http_endpoint)
        started[protocol] = (service, [
            (instance, instrumented.start(
                instrumented.APPS / "alloc_app.py",
                instrumented.otlp_env(endpoint, protocol, service, instance),
                WORKLOAD_SECONDS))
            for instance in instances])
    return {protocol: (service, [(instance, instrumented.finish(p)) for instance, p in procs])
            for protocol, (service, procs) in started.items()}
