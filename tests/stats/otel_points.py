"""Reading memscope's per-site and per-domain points back from an OpenTelemetry
InMemoryMetricReader: the estimates as a user of the metrics sees them."""
import contextlib

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from memscope_otel import sampler


@contextlib.contextmanager
def in_memory_provider():
    """A MeterProvider whose points are read back with ``reader.get_metrics_data()``."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        yield provider, reader
    finally:
        provider.shutdown()


def collect(reader):
    """{metric name: {frozenset of attribute items: value}} of one collection.

    The collection runs untracked (``sampler.ignored()``, as memscope's own callbacks do): the
    SDK keeps an aggregation per series, and with every site of the session exported that is
    thousands of objects, which sampled at a test's high rates would fill the live table that the
    test's own sampled blocks need."""
    out = {}
    with sampler.ignored():
        data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = out.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    points[frozenset(point.attributes.items())] = point.value
    return out


def site_value(points, metric, function, line, domain):
    """The value of ``metric`` for the site (function, line, domain), 0 if it has no series."""
    total, found = 0.0, 0
    for attributes, value in points.get(metric, {}).items():
        a = dict(attributes)
        if a.get("code.function.name") == function and a.get("code.line.number") == line \
                and a.get("memscope.domain") == domain:
            total += value
            found += 1
    return total, found


def domain_value(points, metric, domain):
    for attributes, value in points.get(metric, {}).items():
        if dict(attributes).get("memscope.domain") == domain:
            return value
    return 0.0
