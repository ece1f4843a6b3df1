"""A real ``prometheus`` server process for the integration tests, and its HTTP query API.

The server listens on 127.0.0.1 only, keeps its TSDB in a temporary directory, scrapes the given
targets every ``scrape_interval`` with ``honor_labels: true`` (the exposed ``job``/``instance``
labels, built from ``service.name``/``service.instance.id``, win over the scrape target's own, as
recommended when scraping a Collector's ``prometheus`` exporter) and is killed on ``stop()``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server is retried if it lost the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


FILE_SD_JOB = "file-targets"


class PrometheusError(RuntimeError):
    """The server did not start, or a query was rejected."""


class PrometheusServer:
    """One ``prometheus`` process scraping ``targets``; ``query()`` uses its ``/api/v1`` API."""

    def __init__(self, binary: str, targets: list[str], scrape_interval: str = "1s",
                 job_name: str = "otlp-receiver"):
        self.binary = binary
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.job_name = job_name
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self, directory: Path) -> Path:
        # JSON is valid YAML, which spares a YAML writer here.
        config = {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job_name,
                "honor_labels": True,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "static_configs": [{"targets": self.targets}],
            }, {
                # Targets added while running (set_file_targets), e.g. an app's own exporter page.
                "job_name": FILE_SD_JOB,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "file_sd_configs": [{"files": [str(self._file_sd_path(directory))],
                                     "refresh_interval": "1s"}],
            }],
        }
        self._file_sd_path(directory).write_text("[]")
        path = directory / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    @staticmethod
    def _file_sd_path(directory: Path) -> Path:
        return directory / "file_sd_targets.json"

    def set_file_targets(self, targets: list[str]):
        """Scrape ``targets`` (``host:port``) under job ``FILE_SD_JOB`` from now on."""
        path = self._file_sd_path(Path(self._tmp.name))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets}]))
        tmp.replace(path)  # atomic, so Prometheus never reads half a file

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        """Start the server and wait until ``/-/ready`` answers 200."""
        self._tmp = tempfile.TemporaryDirectory(prefix="memscope-prometheus-")
        directory = Path(self._tmp.name)
        config_path = self._write_config(directory)
        self._log_path = directory / "prometheus.log"
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            with open(self._log_path, "wb") as log:
                self._process = subprocess.Popen(
                    [self.binary, f"--config.file={config_path}",
                     f"--storage.tsdb.path={directory / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=directory)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    last_error = f"exited with {self._process.returncode}: {self.log_tail()}"
                    break
                try:
                    with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.2)
            else:
                last_error = f"not ready after {timeout}s: {self.log_tail()}"
            self._kill()
        self.stop()
        raise PrometheusError(f"prometheus did not start: {last_error}")

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the server's log, for failure messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")[-limit:]

    def _kill(self):
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def stop(self):
        """Stop the server and delete its data (idempotent)."""
        self._kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400/422 carry a JSON error body
            payload = json.loads(err.read() or b"{}")
        if payload.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {payload.get('errorType')}: "
                                  f"{payload.get('error')}")
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query; returns the ``result`` list (raises PrometheusError if rejected)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] not in ("vector", "matrix"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets_health(self) -> list[str]:
        """Health of every active scrape target ('up', 'down', 'unknown')."""
        return [t["health"] for t in self._get("/api/v1/targets", {})["activeTargets"]]

    def wait_for(self, expr: str, predicate, timeout: float = 20.0, poll: float = 0.5):
        """Query ``expr`` until ``predicate(result)`` holds; return the last result either way."""
        deadline = time.monotonic() + timeout
        result = self.query(expr)
        while not predicate(result) and time.monotonic() < deadline:
            time.sleep(poll)
            result = self.query(expr)
        return result


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` binary (``MEMSCOPE_PROMETHEUS_BIN`` overrides the PATH lookup)."""
    override = os.environ.get("MEMSCOPE_PROMETHEUS_BIN")
    if override:
        return override if os.access(override, os.X_OK) else None
    import shutil

    return shutil.which("prometheus")
