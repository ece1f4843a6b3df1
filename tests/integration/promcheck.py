"""Compare what Prometheus stored with the last OTLP request a process sent to the receiver."""

from __future__ import annotations

from .otlp_receiver import PrometheusStore, SampleKey
from .prometheus_server import PrometheusServer


def selector(job: str, instance: str) -> str:
    """A PromQL selector of every series of one (job, instance)."""
    return f'{{job="{job}",instance="{instance}"}}'


def series_values(prometheus: PrometheusServer, job: str, instance: str) -> dict[SampleKey, float]:
    """Current value of every series Prometheus has for (job, instance), keyed like the store."""
    values = {}
    for row in prometheus.query(selector(job, instance)):
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        values[(name, tuple(sorted(labels.items())))] = float(row["value"][1])
    return values


def mismatches(expected: dict[SampleKey, float], actual: dict[SampleKey, float]) -> list[str]:
    """Human-readable differences: expected series missing from Prometheus or with another value."""
    problems = []
    for key, value in sorted(expected.items()):
        if key not in actual:
            problems.append(f"missing {key}")
        elif actual[key] != value:
            problems.append(f"{key}: prometheus {actual[key]!r} != last OTLP request {value!r}")
    return problems


def wait_until_last_request_visible(prometheus: PrometheusServer, store: PrometheusStore,
                                    job: str, instance: str, timeout: float = 20.0):
    """Poll until every series of the target's last request is in Prometheus with its value.

    Returns ``(expected, problems)``; ``problems`` is empty on success.
    """
    expected = store.last_request_samples(job, instance)
    if not expected:
        return expected, [f"the receiver got no request from job={job!r} instance={instance!r}"]
    state = {}

    def settled(_result) -> bool:
        state["problems"] = mismatches(expected, series_values(prometheus, job, instance))
        return not state["problems"]

    prometheus.wait_for(selector(job, instance), settled, timeout=timeout)
    return expected, state["problems"]


def value_of(prometheus: PrometheusServer, expr: str) -> float:
    """The single value of an instant query (fails loudly if there is not exactly one)."""
    result = prometheus.query(expr)
    assert len(result) == 1, f"{expr}: expected one series, got {result}"
    return float(result[0]["value"][1])
