"""A small OTLP metrics receiver (gRPC and HTTP) that re-exposes what it got as a Prometheus page.

It plays the part of an OpenTelemetry Collector running ``collector-config.yaml`` (OTLP receiver ->
``prometheus`` exporter with ``resource_to_telemetry_conversion`` enabled) so that the integration
tests can put a real Prometheus server behind a real OTLP exporter without an ``otelcol`` binary.

* gRPC: the official ``opentelemetry-proto`` ``MetricsServiceServicer`` on a ``grpc.server``.
* HTTP: ``POST /v1/metrics`` with a binary protobuf ``ExportMetricsServiceRequest`` body
  (optionally gzip-encoded), answered with an ``ExportMetricsServiceResponse``.
* ``GET /metrics`` on the HTTP port: the Prometheus text exposition (format 0.0.4) of the latest
  value of every series, translated as ``prom_translation`` describes. Resource attributes become
  ``job`` (``service.namespace/service.name``), ``instance`` (``service.instance.id``), a
  ``target_info`` series, and, as with ``resource_to_telemetry_conversion``, labels on every series.

Cumulative points replace the stored value of their series; monotonic delta sums are accumulated
into a cumulative value (as the Collector does); other delta points and exponential histograms are
dropped (the text format cannot carry native histograms). Every request is also kept, translated,
per ``(job, instance)`` so a test can compare Prometheus with the last request a process sent.
"""

from __future__ import annotations

import gzip
import http.server
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2

from . import prom_translation as pt

_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

# A sample key: (sample name, sorted label pairs).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Family:
    prom_type: str
    help: str
    samples: dict[SampleKey, float] = field(default_factory=dict)


def _key(sample_name: str, labels: dict[str, str]) -> SampleKey:
    return sample_name, tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def _number(point) -> float:
    return float(point.as_int) if point.WhichOneof("value") == "as_int" else point.as_double


def _resource_identity(resource) -> tuple[str, str]:
    attrs = {kv.key: pt.attribute_value_text(kv.value) for kv in resource.attributes}
    name = attrs.get("service.name", "")
    namespace = attrs.get("service.namespace", "")
    job = f"{namespace}/{name}" if namespace else name
    return job, attrs.get("service.instance.id", "")


class PrometheusStore:
    """Latest value of every translated series, plus the last request per (job, instance)."""

    def __init__(self, resource_to_telemetry: bool = True):
        self._resource_to_telemetry = resource_to_telemetry
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._delta_totals: dict[SampleKey, float] = {}
        self._last_by_target: dict[tuple[str, str], dict[SampleKey, float]] = {}
        self._requests: list[tuple[str, tuple[str, str]]] = []
        self.dropped_points = 0

    # -- ingestion -------------------------------------------------------------------------
    def ingest(self, request: metrics_service_pb2.ExportMetricsServiceRequest, protocol: str):
        """Translate one OTLP export request and make its values the current ones."""
        with self._lock:
            for resource_metrics in request.resource_metrics:
                target = _resource_identity(resource_metrics.resource)
                request_samples: dict[SampleKey, float] = {}
                base = self._base_labels(resource_metrics.resource, target)
                for scope_metrics in resource_metrics.scope_metrics:
                    scope_labels = dict(base)
                    scope_labels["otel_scope_name"] = scope_metrics.scope.name
                    scope_labels["otel_scope_version"] = scope_metrics.scope.version
                    for metric in scope_metrics.metrics:
                        self._ingest_metric(metric, scope_labels, request_samples)
                self._add_target_info(resource_metrics.resource, target, request_samples)
                self._last_by_target[target] = request_samples
                self._requests.append((protocol, target))

    def _base_labels(self, resource, target) -> dict[str, str]:
        labels = pt.labels_from_attributes(resource.attributes) if self._resource_to_telemetry else {}
        labels["job"], labels["instance"] = target
        return labels

    def _add_target_info(self, resource, target, request_samples):
        skip = {"service.name", "service.namespace", "service.instance.id"}
        labels = pt.labels_from_attributes([kv for kv in resource.attributes if kv.key not in skip])
        labels["job"], labels["instance"] = target
        self._store("target_info", pt.GAUGE, "Target metadata", _key("target_info", labels), 1.0,
                    request_samples)

    def _store(self, family_name, prom_type, help_text, key, value, request_samples):
        family = self._families.get(family_name)
        if family is None:
            family = self._families[family_name] = _Family(prom_type, help_text)
        family.samples[key] = value
        request_samples[key] = value

    def _ingest_metric(self, metric, scope_labels, request_samples):
        kind = metric.WhichOneof("data")
        if kind == "gauge":
            name = pt.metric_name(metric.name, metric.unit, pt.GAUGE)
            for point in metric.gauge.data_points:
                self._number_point(name, pt.GAUGE, metric, point, scope_labels, request_samples)
        elif kind == "sum":
            data = metric.sum
            if data.is_monotonic and data.aggregation_temporality in (_CUMULATIVE, _DELTA):
                name = pt.metric_name(metric.name, metric.unit, pt.COUNTER)
                for point in data.data_points:
                    self._number_point(name, pt.COUNTER, metric, point, scope_labels,
                                       request_samples, delta=data.aggregation_temporality == _DELTA)
            elif not data.is_monotonic and data.aggregation_temporality == _CUMULATIVE:
                name = pt.metric_name(metric.name, metric.unit, pt.GAUGE)
                for point in data.data_points:
                    self._number_point(name, pt.GAUGE, metric, point, scope_labels, request_samples)
            else:
                self.dropped_points += len(data.data_points)
        elif kind == "histogram":
            if metric.histogram.aggregation_temporality != _CUMULATIVE:
                self.dropped_points += len(metric.histogram.data_points)
                return
            name = pt.metric_name(metric.name, metric.unit, pt.HISTOGRAM)
            for point in metric.histogram.data_points:
                self._histogram_point(name, metric, point, scope_labels, request_samples)
        elif kind == "summary":
            name = pt.metric_name(metric.name, metric.unit, pt.SUMMARY)
            for point in metric.summary.data_points:
                self._summary_point(name, metric, point, scope_labels, request_samples)
        else:  # exponential_histogram (native histograms only) or nothing
            self.dropped_points += 1

    def _point_labels(self, point, scope_labels) -> dict[str, str]:
        labels = dict(scope_labels)
        labels.update(pt.labels_from_attributes(point.attributes))
        return labels

    def _number_point(self, name, prom_type, metric, point, scope_labels, request_samples,
                      delta=False):
        if point.flags & _NO_RECORDED_VALUE:
            return
        key = _key(name, self._point_labels(point, scope_labels))
        value = _number(point)
        if delta:
            value = self._delta_totals.get(key, 0.0) + value
            self._delta_totals[key] = value
        self._store(name, prom_type, metric.description, key, value, request_samples)

    def _histogram_point(self, name, metric, point, scope_labels, request_samples):
        if point.flags & _NO_RECORDED_VALUE:
            return
        labels = self._point_labels(point, scope_labels)
        running = 0
        bounds = [pt.float_text(b) for b in point.explicit_bounds] + ["+Inf"]
        for le, count in zip(bounds, point.bucket_counts):
            running += count
            key = _key(name + "_bucket", {**labels, "le": le})
            self._store(name, pt.HISTOGRAM, metric.description, key, float(running), request_samples)
        if len(point.bucket_counts) < len(bounds):  # no buckets at all: still expose +Inf
            key = _key(name + "_bucket", {**labels, "le": "+Inf"})
            self._store(name, pt.HISTOGRAM, metric.description, key, float(point.count),
                        request_samples)
        if point.HasField("sum"):
            self._store(name, pt.HISTOGRAM, metric.description, _key(name + "_sum", labels),
                        point.sum, request_samples)
        self._store(name, pt.HISTOGRAM, metric.description, _key(name + "_count", labels),
                    float(point.count), request_samples)

    def _summary_point(self, name, metric, point, scope_labels, request_samples):
        labels = self._point_labels(point, scope_labels)
        for q in point.quantile_values:
            key = _key(name, {**labels, "quantile": pt.float_text(q.quantile)})
            self._store(name, pt.SUMMARY, metric.description, key, q.value, request_samples)
        self._store(name, pt.SUMMARY, metric.description, _key(name + "_sum", labels), point.sum,
                    request_samples)
        self._store(name, pt.SUMMARY, metric.description, _key(name + "_count", labels),
                    float(point.count), request_samples)

    # -- queries ---------------------------------------------------------------------------
    def render(self) -> str:
        """The Prometheus text exposition of every series' latest value."""
        lines = []
        with self._lock:
            for family_name in sorted(self._families):
                family = self._families[family_name]
                help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
                lines.append(f"# HELP {family_name} {help_text}")
                lines.append(f"# TYPE {family_name} {family.prom_type}")
                for (sample_name, labels), value in sorted(family.samples.items()):
                    rendered = ",".join(f'{k}="{pt.escape_label_value(v)}"' for k, v in labels)
                    lines.append(f"{sample_name}{{{rendered}}} {pt.float_text(value)}")
        return "\n".join(lines) + "\n"

    def last_request_samples(self, job: str, instance: str) -> dict[SampleKey, float]:
        """The translated samples of the last request received from ``(job, instance)``."""
        with self._lock:
            return dict(self._last_by_target.get((job, instance), {}))

    def requests(self, protocol: str | None = None) -> list[tuple[str, str]]:
        """The ``(job, instance)`` of every request received (optionally only over ``protocol``)."""
        with self._lock:
            return [target for proto, target in self._requests if protocol in (None, proto)]


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: PrometheusStore):
        self._store = store

    def Export(self, request, context):  # noqa: N802 - name fixed by the proto service
        self._store.ingest(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _http_handler(store: PrometheusStore):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the test output quiet
            pass

        def _reply(self, status: int, body: bytes, content_type: str):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path.split("?")[0] != "/metrics":
                self._reply(404, b"not found\n", "text/plain")
                return
            self._reply(200, store.render().encode(), "text/plain; version=0.0.4; charset=utf-8")

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/metrics":
                self._reply(404, b"not found\n", "text/plain")
                return
            if "protobuf" not in self.headers.get("Content-Type", ""):
                self._reply(415, b"only application/x-protobuf is accepted\n", "text/plain")
                return
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # a malformed body is the client's error, not ours
                self._reply(400, b"malformed ExportMetricsServiceRequest\n", "text/plain")
                return
            store.ingest(request, "http")
            response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self._reply(200, response, "application/x-protobuf")

    return Handler


class OtlpReceiver:
    """OTLP gRPC + HTTP receiver on 127.0.0.1 (ephemeral ports) with a Prometheus ``/metrics``."""

    def __init__(self, host: str = "127.0.0.1", resource_to_telemetry: bool = True):
        self.host = host
        self.store = PrometheusStore(resource_to_telemetry)
        self._grpc_server = None
        self._grpc_executor = None
        self._http_server = None
        self._http_thread = None
        self.grpc_port = 0
        self.http_port = 0

    def start(self) -> "OtlpReceiver":
        """Bind both servers and start serving in background threads."""
        # Kept to be shut down in stop(): grpc.Server.stop() leaves its executor's threads alive.
        self._grpc_executor = futures.ThreadPoolExecutor(max_workers=4,
                                                         thread_name_prefix="otlp-grpc-receiver")
        self._grpc_server = grpc.server(self._grpc_executor)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self.store), self._grpc_server)
        self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:0")
        self._grpc_server.start()
        self._http_server = http.server.ThreadingHTTPServer((self.host, 0), _http_handler(self.store))
        self._http_server.daemon_threads = True
        self.http_port = self._http_server.server_address[1]
        self._http_thread = threading.Thread(target=self._http_server.serve_forever,
                                             name="otlp-http-receiver", daemon=True)
        self._http_thread.start()
        return self

    def stop(self):
        """Stop both servers and join their threads (idempotent)."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(timeout=5)
            self._grpc_server = None
        if self._grpc_executor is not None:
            self._grpc_executor.shutdown(wait=True)
            self._grpc_executor = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_thread.join(timeout=5)
            self._http_server = None

    @property
    def grpc_endpoint(self) -> str:
        """Value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``http/protobuf`` (``/v1/metrics`` added)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def scrape_target(self) -> str:
        """``host:port`` of the ``/metrics`` page, for a Prometheus ``static_configs`` target."""
        return f"{self.host}:{self.http_port}"
