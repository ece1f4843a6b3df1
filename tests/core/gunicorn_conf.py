"""gunicorn configuration of the pre-fork server test: memscope starts in the master, which
then works a while so that its totals at fork time are large; workers are forked from it."""
import os

import gunicorn_app

bind = os.environ["MEMSCOPE_TEST_BIND"]
workers = 2
worker_class = "sync"
timeout = 30
loglevel = "warning"


def on_starting(server):
    import memscope_otel
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    memscope_otel.start(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    churn = [str(i) * 3 for i in range(200_000)]  # the master's own work, before any fork
    del churn


def pre_fork(server, worker):
    gunicorn_app.STATE["master_pid"] = os.getpid()
    gunicorn_app.STATE["master_at_fork"] = gunicorn_app.total_allocations()


def post_fork(server, worker):
    gunicorn_app.STATE["own_at_post_fork"] = gunicorn_app.total_allocations()
