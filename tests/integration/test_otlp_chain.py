"""The OTLP -> receiver -> Prometheus chain, proven with an app that reports its own metrics.

Independent of memscope: the probe app's values follow from its loop, so the values Prometheus
returns are checked against numbers computed here, not only against what the receiver saw.
"""

from __future__ import annotations

import pytest

from . import instrumented
from .promcheck import value_of, wait_until_last_request_visible

ITERATIONS = 30


def _expected_probe_values():
    """What probe_app.py reports after ITERATIONS rounds, by route."""
    routes = {"/a": {"requests": 0, "payload": 0, "latency_count": 0}, "/b": None}
    routes["/b"] = dict(routes["/a"])
    depth = 0
    for i in range(ITERATIONS):
        route = "/a" if i % 3 else "/b"
        routes[route]["requests"] += 1
        routes[route]["payload"] += 100 + i
        routes[route]["latency_count"] += 1
        depth += 1 if i % 4 else -1
    return routes, depth, (ITERATIONS - 1) / ITERATIONS


PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(scope="module")
def probe_runs(otlp_receiver, prometheus):
    """Two probe processes per protocol, all four at once; {protocol: (service, instances)}."""
    started = []
    runs = {}
    for protocol in PROTOCOLS:
        endpoint = otlp_receiver.grpc_endpoint if protocol == "grpc" else otlp_receiver.http_endpoint
        service = "probe-" + protocol.split("/")[0]
        instances = [f"{service}-a", f"{service}-b"]
        runs[protocol] = (service, instances)
        # The second process compresses its requests (gzip), as many deployments do. (The
        # first leaves the variable unset: opentelemetry-exporter-otlp-proto-grpc 1.45 rejects
        # the value "none" and then exports nothing.)
        compression = [{}, {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}]
        started += [instrumented.start(instrumented.APPS / "probe_app.py",
                                       instrumented.otlp_env(endpoint, protocol, service, instance,
                                                             **extra),
                                       str(ITERATIONS))
                    for instance, extra in zip(instances, compression)]
    for result in [instrumented.finish(p) for p in started]:
        assert result.returncode == 0, result.stderr
    return runs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_processes_reach_prometheus_with_their_last_values(otlp_receiver, prometheus,
                                                               probe_runs, protocol):
    service, instances = probe_runs[protocol]
    wire = "grpc" if protocol == "grpc" else "http"
    received = otlp_receiver.store.requests(wire)
    for instance in instances:
        # Several periodic exports plus the final one at shutdown.
        assert received.count((service, instance)) >= 2, received
        expected, problems = wait_until_last_request_visible(
            prometheus, otlp_receiver.store, service, instance)
        assert not problems, "\n".join(problems[:20])

        routes, depth, load = _expected_probe_values()
        sel = f'job="{service}",instance="{instance}"'
        for route, want in routes.items():
            rsel = f'{sel},probe_route="{route}"'
            assert value_of(prometheus, f"probe_requests_total{{{rsel}}}") == want["requests"]
            assert value_of(prometheus, f"probe_payload_bytes_total{{{rsel}}}") == want["payload"]
            assert value_of(prometheus,
                            f"probe_latency_seconds_count{{{rsel}}}") == want["latency_count"]
            assert value_of(prometheus, f'probe_latency_seconds_bucket{{{rsel},le="+Inf"}}'
                            ) == want["latency_count"]
        assert value_of(prometheus, f"probe_queue_depth{{{sel}}}") == depth
        assert value_of(prometheus, f'probe_load_ratio{{{sel},probe_cpu="0"}}') == load
        # resource_to_telemetry_conversion: resource attributes are labels too.
        assert value_of(prometheus, f'probe_queue_depth{{{sel},service_instance_id="{instance}",'
                                    f'deployment_environment="test"}}') == depth
        assert value_of(prometheus, f'target_info{{{sel},deployment_environment="test"}}') == 1
