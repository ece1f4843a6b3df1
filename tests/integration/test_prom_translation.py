"""The receiver's OTLP -> Prometheus naming follows the Collector's documented translation.

The expected names are the examples of the OpenTelemetry/Prometheus compatibility spec and the
Collector translator's documentation, plus the memscope names that DESIGN.md fixes.
"""

import pytest

from .prom_translation import COUNTER, GAUGE, HISTOGRAM, float_text, label_name, metric_name


@pytest.mark.parametrize("name,unit,kind,expected", [
    ("memscope.allocated", "By", COUNTER, "memscope_allocated_bytes_total"),
    ("memscope.allocations", "{allocation}", COUNTER, "memscope_allocations_total"),
    ("memscope.allocations.by_size", "{allocation}", COUNTER,
     "memscope_allocations_by_size_total"),
    ("memscope.live", "By", GAUGE, "memscope_live_bytes"),
    ("memscope.sampler.rate", "1", GAUGE, "memscope_sampler_rate_ratio"),
    ("memscope.sampler.samples", "{record}", COUNTER, "memscope_sampler_samples_total"),
    ("memscope.optimizer.pressure", "1", GAUGE, "memscope_optimizer_pressure_ratio"),
    ("memscope.tracker.cpu", "s", COUNTER, "memscope_tracker_cpu_seconds_total"),
    ("http.server.request.duration", "s", HISTOGRAM, "http_server_request_duration_seconds"),
    ("system.filesystem.usage", "By", GAUGE, "system_filesystem_usage_bytes"),
    ("system.io", "By", COUNTER, "system_io_bytes_total"),
    ("requests.total", "1", COUNTER, "requests_total"),
    ("already_bytes", "By", GAUGE, "already_bytes"),
    ("net.throughput", "By/s", GAUGE, "net_throughput_bytes_per_second"),
    ("queue.items", "{item}/s", GAUGE, "queue_items_per_second"),
    ("cpu.utilization", "1", COUNTER, "cpu_utilization_total"),
    ("odd..name__x", "", GAUGE, "odd_name_x"),
    ("2xx.responses", "", COUNTER, "_2xx_responses_total"),
])
def test_metric_names(name, unit, kind, expected):
    assert metric_name(name, unit, kind) == expected


@pytest.mark.parametrize("key,expected", [
    ("memscope.domain", "memscope_domain"),
    ("code.file.path", "code_file_path"),
    ("service.instance.id", "service_instance_id"),
    ("a..b", "a_b"),
    ("9lives", "key_9lives"),
])
def test_label_names(key, expected):
    assert label_name(key) == expected


@pytest.mark.parametrize("value,text", [
    (1024.0, "1024"), (0.5, "0.5"), (float("inf"), "+Inf"), (-3.0, "-3"),
])
def test_number_text(value, text):
    assert float_text(value) == text
