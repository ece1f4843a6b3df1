"""An allocation-heavy example service, to watch memscope-otel at work.

Run it under ``opentelemetry-instrument`` (``scripts/demo.sh`` does) and the ``memscope``
instrumentor tracks it with no code change here. A few worker threads handle fake requests:
parse a JSON payload (many small objects), render a response (medium buffers), keep results in
a bounded cache (memory that stays live), and now and then build a large report. Each kind of
work lives in its own function, so the per-site metrics name them.

    opentelemetry-instrument python examples/demo_app.py --seconds 30

With ``OTEL_METRICS_EXPORTER=prometheus`` it prints where its ``/metrics`` page is and, at the end,
the memscope lines of that page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import threading
import time
import urllib.request
from collections import OrderedDict

CACHE_LIMIT = 2000
_SCOPE_LABEL = re.compile(r'otel_scope_\w+="[^"]*",?')


def parse_request(rng: random.Random) -> dict:
    """Small allocations: a JSON document decoded into dicts, lists and strings."""
    items = [{"id": rng.randrange(10**6), "name": f"item-{rng.randrange(1000)}",
              "tags": [f"t{rng.randrange(50)}" for _ in range(4)]} for _ in range(20)]
    return json.loads(json.dumps({"user": rng.randrange(10**4), "items": items}))


def render_response(request: dict) -> bytes:
    """Medium allocations: response buffers of a few KiB."""
    body = bytearray()
    for item in request["items"]:
        body += json.dumps(item).encode() * 8
    return bytes(body)


def build_report(rng: random.Random) -> bytearray:
    """Large allocations (>= 8 KiB, always sampled): an occasional big export buffer."""
    return bytearray(rng.choice((16, 64, 256)) * 1024)


class Cache:
    """A bounded LRU cache: what stays live between requests."""

    def __init__(self, limit: int):
        self.limit = limit
        self.entries: OrderedDict[int, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, key: int, value: bytes):
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.limit:
                self.entries.popitem(last=False)


def worker(seed: int, stop: threading.Event, cache: Cache, counts: list, index: int):
    """Handle fake requests until ``stop`` is set."""
    rng = random.Random(seed)
    while not stop.is_set():
        request = parse_request(rng)
        cache.put(request["user"], render_response(request))
        if rng.random() < 0.05:
            build_report(rng)
        counts[index] += 1
        time.sleep(0.001)


def sdk_configured() -> bool:
    """Whether something (normally opentelemetry-distro) installed an SDK MeterProvider."""
    from opentelemetry import metrics

    return type(metrics.get_meter_provider()).__module__.startswith("opentelemetry.sdk")


def prometheus_page_url() -> str | None:
    """Where the OpenTelemetry Prometheus exporter serves this process' metrics, if it is used."""
    if "prometheus" not in os.environ.get("OTEL_METRICS_EXPORTER", ""):
        return None
    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    port = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")
    return f"http://{host}:{port}/metrics"


def memscope_lines(url: str, families=("memscope_allocated_bytes_total", "memscope_live_bytes")
                   ) -> list[str]:
    """The samples of a few memscope families from our own metrics page (scope labels left out)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return [f"(could not read {url}: {exc})"]
    return [_SCOPE_LABEL.sub("", line).replace(",}", "}") for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] in families]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("MEMSCOPE_DEMO_SECONDS", "30")),
                        help="how long to run (default 30, or MEMSCOPE_DEMO_SECONDS)")
    parser.add_argument("--threads", type=int, default=2, help="worker threads (default 2)")
    args = parser.parse_args(argv)

    try:
        import memscope_otel

        tracked = memscope_otel.is_running()
    except ImportError:
        tracked = False
    url = prometheus_page_url()
    if not sdk_configured():
        url = None
        print("memscope demo: no OpenTelemetry SDK MeterProvider is configured, so nothing is "
              "exported; install opentelemetry-distro (it configures the SDK for "
              "opentelemetry-instrument)", flush=True)
    print(f"memscope demo: {args.threads} workers for {args.seconds:g}s; "
          f"tracker {'running' if tracked else 'NOT running (start it with opentelemetry-instrument)'}",
          flush=True)
    if url:
        print(f"memscope demo: metrics at {url}  (try: curl -s {url} | grep '^memscope_')", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cache = Cache(CACHE_LIMIT)
    counts = [0] * args.threads
    threads = [threading.Thread(target=worker, args=(i, stop, cache, counts, i), daemon=True,
                                name=f"demo-worker-{i}") for i in range(args.threads)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.seconds
    next_report = time.monotonic() + 5
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= next_report:
            print(f"memscope demo: {sum(counts)} requests handled", flush=True)
            next_report += 5
    stop.set()
    for thread in threads:
        thread.join()
    print(f"memscope demo: done, {sum(counts)} requests handled", flush=True)
    if url and tracked:
        print("memscope demo: from the metrics page:", flush=True)
        for line in memscope_lines(url):
            print("  " + line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
