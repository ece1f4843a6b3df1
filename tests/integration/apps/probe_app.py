"""A tiny app that reports its own OpenTelemetry metrics through the global MeterProvider.

Run it under ``opentelemetry-instrument``: it proves the OTLP -> receiver -> Prometheus chain with
every instrument kind (counter, up-down counter, histogram, observable gauge) and unit style
(``By``, ``s``, ``1``, ``{annotation}``), independently of memscope itself.
"""

import sys
import time

from opentelemetry import metrics

meter = metrics.get_meter("memscope.tests.probe", "1.0")
requests = meter.create_counter("probe.requests", unit="{request}", description="Requests")
payload = meter.create_counter("probe.payload", unit="By", description="Payload bytes")
queue_depth = meter.create_up_down_counter("probe.queue.depth", unit="{item}",
                                           description="Queued items")
latency = meter.create_histogram("probe.latency", unit="s", description="Latency")
load = {"value": 0.0}
meter.create_observable_gauge("probe.load", callbacks=[
    lambda options: [metrics.Observation(load["value"], {"probe.cpu": "0"})]],
    unit="1", description="Load")

iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 30
for i in range(iterations):
    route = "/a" if i % 3 else "/b"
    requests.add(1, {"probe.route": route})
    payload.add(100 + i, {"probe.route": route})
    queue_depth.add(1 if i % 4 else -1)
    latency.record(0.001 * (i % 7), {"probe.route": route})
    load["value"] = i / iterations
    time.sleep(0.05)
