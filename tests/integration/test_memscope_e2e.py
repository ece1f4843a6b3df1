"""End to end: opentelemetry-instrument + memscope instrumentor -> OTLP -> receiver -> Prometheus.

Two processes per protocol (gRPC and HTTP) run at the same time with different
``service.instance.id``; Prometheus must hold, for each of them, exactly the values of the last
OTLP request that process sent (its final export at shutdown), and the memscope metric families of
DESIGN.md must be among them.
"""

from __future__ import annotations

import json

import pytest

from .conftest import MEMSCOPE_RUNS
from .promcheck import wait_until_last_request_visible

# Families every tracked process exports (DESIGN.md's and the README's tables, Prometheus names). The per-type
# family only appears with the manual tracking API, which this app does not use.
EXPECTED_FAMILIES = [
    "memscope_allocations_total",
    "memscope_allocated_bytes_total",
    "memscope_deallocations_total",
    "memscope_allocations_by_size_total",
    "memscope_site_allocated_bytes_total",
    "memscope_site_allocations_total",
    "memscope_live_bytes",
    "memscope_site_live_bytes",
    "memscope_sampler_rate_ratio",
    "memscope_sampler_samples_total",
    "memscope_sampler_dropped_total",
    "memscope_sampler_memory_bytes",
    "memscope_optimizer_pressure_ratio",
    "memscope_tracker_cpu_seconds_total",
]
LARGE_BLOCK = 64 * 1024
LARGE_PER_ROUND = 5  # alloc_app.py allocates 5 bytearrays of 64 KiB per round


def _app_report(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", list(MEMSCOPE_RUNS))
def test_each_process_arrives_with_its_last_values(otlp_receiver, prometheus, memscope_runs,
                                                   protocol):
    service, runs = memscope_runs[protocol]
    wire = "grpc" if protocol == "grpc" else "http"
    for instance, result in runs:
        report = _app_report(result)
        assert report["memscope_running"] is True, (report, result.stderr[-3000:])
        assert otlp_receiver.store.requests(wire).count((service, instance)) >= 2

        expected, problems = wait_until_last_request_visible(
            prometheus, otlp_receiver.store, service, instance)
        assert not problems, "\n".join(problems[:20])

        families = {name for name, _labels in expected}
        missing = [f for f in EXPECTED_FAMILIES if f not in families]
        assert not missing, f"{instance}: families missing from the last request: {missing}"

        # The exact counters must have seen at least the large blocks the app asked for.
        large_bytes = sum(v for (name, labels), v in expected.items()
                          if name == "memscope_allocated_bytes_total"
                          and ("memscope_size_class", "large") in labels)
        large_count = sum(v for (name, labels), v in expected.items()
                          if name == "memscope_allocations_total"
                          and ("memscope_size_class", "large") in labels)
        assert large_count >= report["rounds"] * LARGE_PER_ROUND
        assert large_bytes >= report["rounds"] * LARGE_PER_ROUND * LARGE_BLOCK


@pytest.mark.parametrize("protocol", list(MEMSCOPE_RUNS))
def test_instances_stay_apart(prometheus, memscope_runs, protocol):
    service, runs = memscope_runs[protocol]
    wanted = {instance for instance, _ in runs}
    rows = prometheus.wait_for(
        f'sum by (instance) (memscope_allocated_bytes_total{{job="{service}"}})',
        lambda result: {row["metric"]["instance"] for row in result} >= wanted)
    assert {row["metric"]["instance"] for row in rows} == wanted
