#!/usr/bin/env bash
# The README's first command: run an allocation-heavy example app tracked by memscope-otel.
#
# Creates (or reuses) the virtual environment .venv-demo, installs memscope-otel with its
# [prometheus] extra there, then runs examples/demo_app.py under opentelemetry-instrument with the
# OpenTelemetry Prometheus exporter's own /metrics page, so no server is needed:
#     http://127.0.0.1:9464/metrics
# Settings (environment): MEMSCOPE_DEMO_SECONDS (default 30), MEMSCOPE_DEMO_PORT (9464),
# MEMSCOPE_DEMO_VENV (.venv-demo), MEMSCOPE_DEMO_INSTALL=0 to use that environment as it is,
# PYTHON (python3) to create it; every OTEL_PYTHON_MEMSCOPE_* setting is passed through.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${MEMSCOPE_DEMO_VENV:-.venv-demo}"
seconds="${MEMSCOPE_DEMO_SECONDS:-30}"
host=127.0.0.1
port="${MEMSCOPE_DEMO_PORT:-9464}"

if [ ! -x "$venv/bin/python" ]; then
    echo "demo: creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
if [ "${MEMSCOPE_DEMO_INSTALL:-1}" != "0" ]; then
    echo "demo: installing memscope-otel[prometheus] into $venv (compiles the C sampler)"
    # opentelemetry-distro provides the configurator that makes opentelemetry-instrument build
    # the MeterProvider from OTEL_METRICS_EXPORTER; without it no metrics are exported at all.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ".[prometheus]" \
        "opentelemetry-distro>=0.46b0"
fi
if [ ! -x "$venv/bin/opentelemetry-instrument" ]; then
    echo "demo: $venv has no opentelemetry-instrument; run without MEMSCOPE_DEMO_INSTALL=0" >&2
    exit 1
fi

# The exporter binds the port when the SDK starts; say clearly if something already holds it.
if ! "$venv/bin/python" - "$host" "$port" <<'PY'
import socket, sys
with socket.socket() as s:
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
PY
then
    echo "demo: $host:$port is in use; choose another port with MEMSCOPE_DEMO_PORT=<port>" >&2
    exit 1
fi

export OTEL_SERVICE_NAME="${OTEL_SERVICE_NAME:-memscope-demo}"
export OTEL_METRICS_EXPORTER=prometheus
export OTEL_EXPORTER_PROMETHEUS_HOST="$host"
export OTEL_EXPORTER_PROMETHEUS_PORT="$port"
export OTEL_TRACES_EXPORTER=none
export OTEL_LOGS_EXPORTER=none

echo "demo: metrics on http://$host:$port/metrics for ${seconds}s (Ctrl-C stops earlier)"
# opentelemetry-instrument puts the working directory on PYTHONPATH: run from examples/ so the
# source tree's memscope_otel (without the compiled sampler) cannot shadow the installed one.
venv_abs="$(cd "$venv" && pwd)"
cd examples
exec "$venv_abs/bin/opentelemetry-instrument" "$venv_abs/bin/python" demo_app.py --seconds "$seconds"
