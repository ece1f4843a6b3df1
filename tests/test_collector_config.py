"""collector-config.yaml: the components issue 4 asks for, wired into one metrics pipeline.

No ``otelcol`` binary can be installed here, so this checks the structure against the
Collector's documented configuration layout rather than running it.
"""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

CONFIG_PATH = Path(__file__).resolve().parents[1] / "collector-config.yaml"


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CONFIG_PATH.read_text())


def test_otlp_receiver_has_grpc_and_http(config):
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_processors_are_memory_limiter_and_batch(config):
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 100
    assert "batch" in config["processors"]


def test_prometheus_exporter_keeps_resource_attributes_as_labels(config):
    exporter = config["exporters"]["prometheus"]
    assert exporter["endpoint"].rsplit(":", 1)[1].isdigit()
    assert exporter["resource_to_telemetry_conversion"] == {"enabled": True}


def test_metrics_pipeline_wiring(config):
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"metrics"}
    metrics = pipelines["metrics"]
    assert metrics["receivers"] == ["otlp"]
    # memory_limiter must run first to protect the Collector, batch after it.
    assert metrics["processors"] == ["memory_limiter", "batch"]
    assert metrics["exporters"] == ["prometheus"]
    for section in ("receivers", "processors", "exporters"):
        for name in metrics[section]:
            assert name in config[section], f"{section}: {name} used but not defined"


def test_commented_remote_write_alternative_is_valid_when_uncommented():
    lines = CONFIG_PATH.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# prometheusremotewrite:")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#"):
            break
        block.append(line.replace("# ", "", 1))
    exporter = yaml.safe_load("\n".join(block))["prometheusremotewrite"]
    assert exporter["endpoint"].endswith("/api/v1/write")
    assert exporter["resource_to_telemetry_conversion"] == {"enabled": True}


def test_commented_profiles_pipeline_is_valid_when_uncommented():
    """Uncommenting the profiles exporter and pipeline (as the file says) gives a pipeline whose
    components are all defined, with the feature gate the Collector needs named next to it."""
    text = CONFIG_PATH.read_text()
    assert "--feature-gates=service.profilesSupport" in text
    lines = text.splitlines()
    out = []
    uncommenting = False
    for line in lines:
        if line.strip() in ("# otlp/profiles:", "# profiles:"):
            uncommenting = True
        elif not line.strip().startswith("#"):
            uncommenting = False
        out.append(line.replace("# ", "", 1) if uncommenting else line)
    config = yaml.safe_load("\n".join(out))
    assert config["exporters"]["otlp/profiles"]["endpoint"]
    profiles = config["service"]["pipelines"]["profiles"]
    assert profiles["receivers"] == ["otlp"] and profiles["exporters"] == ["otlp/profiles"]
    for section in ("receivers", "processors", "exporters"):
        for name in profiles[section]:
            assert name in config[section], f"{section}: {name} used but not defined"
