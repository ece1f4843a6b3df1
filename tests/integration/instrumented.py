"""Run a Python script under ``opentelemetry-instrument`` the way a user would, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APPS = Path(__file__).parent / "apps"
REPO = Path(__file__).resolve().parents[2]


def instrument_command() -> str:
    """The ``opentelemetry-instrument`` launcher of the interpreter running the tests."""
    path = Path(sys.executable).with_name("opentelemetry-instrument")
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install the test extra (pip install -e '.[test]')")
    return str(path)


def base_env(**overrides: str) -> dict[str, str]:
    """The current environment without any OTEL_* setting inherited from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env


def otlp_env(endpoint: str, protocol: str, service: str, instance: str,
             interval_ms: int = 500, **overrides: str) -> dict[str, str]:
    """Settings that export metrics over OTLP ``protocol`` ('grpc' or 'http/protobuf')."""
    return base_env(
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL=str(interval_ms),
        OTEL_SERVICE_NAME=service,
        OTEL_RESOURCE_ATTRIBUTES=f"service.instance.id={instance},deployment.environment=test",
        **overrides,
    )


def start(script: str | Path, env: dict[str, str], *args: str, cli: tuple[str, ...] = ()
          ) -> subprocess.Popen:
    """Start ``opentelemetry-instrument [cli flags] python script args`` with output captured."""
    command = [instrument_command(), *cli, sys.executable, str(script), *args]
    # opentelemetry-instrument puts the working directory on PYTHONPATH; from the repository root
    # the source tree's memscope_otel (maybe without its compiled module) would shadow the
    # installed package, so run from the apps directory.
    return subprocess.Popen(command, env=env, cwd=APPS, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 60) -> subprocess.CompletedProcess:
    """Wait for a started process; kill it if it overruns ``timeout`` seconds."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(script: str | Path, env: dict[str, str], *args: str, cli: tuple[str, ...] = (),
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run to completion and return the captured result."""
    return finish(start(script, env, *args, cli=cli), timeout)
