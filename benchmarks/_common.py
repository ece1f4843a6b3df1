"""Shared pieces of the benchmarks: trackers to switch on and off in-process, statistics, and a
one-line description of the machine (numbers mean little without it)."""
import math
import os
import platform
import statistics
import sys
import tracemalloc

# Import memscope_otel from this checkout even when it is not installed into the interpreter.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# memscope with every sampling path off: what an unsampled allocation and free cost.
FAST_PATH_ONLY = dict(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0)
# memscope sampling every allocation: what the sampled path (site capture + record) costs.
SAMPLE_ALL = dict(small_sample_rate=1.0, medium_sample_rate=1.0)


def run_json_child(cmd, what, env=None):
    """Runs a benchmark's child interpreter and returns the JSON object its last line prints.

    The child runs with the SDK enabled and one BLAS thread: numpy's BLAS threads spin after
    import and would add noise to both modes alike."""
    import json
    import subprocess

    env = dict(os.environ if env is None else env)
    env.pop("OTEL_SDK_DISABLED", None)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Tracker:
    """One way of running: no tracker, tracemalloc, or memscope with given settings. memscope
    reports to the run's one provider without readers (meter_provider()), or, with
    ``new_provider``, to a MeterProvider that callable makes for each start and that stop() shuts
    down (one that exports, say)."""

    def __init__(self, name, kind, settings=None, new_provider=None):
        self.name, self.kind, self.settings = name, kind, settings or {}
        self.new_provider = new_provider
        self.handle = self._own_provider = None

    def start(self):
        if self.kind == "tracemalloc":
            tracemalloc.start(self.settings.get("frames", 1))
        elif self.kind == "memscope":
            import memscope_otel

            self._own_provider = self.new_provider() if self.new_provider is not None else None
            self.handle = memscope_otel.start(meter_provider=self._own_provider or meter_provider(), **self.settings)
            if self.handle is None:
                raise RuntimeError("memscope did not start (OTEL_PYTHON_MEMSCOPE_ENABLED / OTEL_SDK_DISABLED?)")

    def stop(self):
        if self.kind == "tracemalloc":
            tracemalloc.stop()
        elif self.kind == "memscope":
            import memscope_otel

            memscope_otel.stop()
            self.handle = None
            if self._own_provider is not None:
                self._own_provider.shutdown()
                self._own_provider = None


_PROVIDER = None


def meter_provider():
    """One private MeterProvider without readers for the whole run: the instruments exist and
    are registered once (memscope keeps its producer per provider across restarts), nothing
    exports."""
    global _PROVIDER
    if _PROVIDER is None:
        from opentelemetry.sdk.metrics import MeterProvider

        _PROVIDER = MeterProvider()
    return _PROVIDER


def null_exporter(on_export=None):
    """A MetricExporter that sends nothing: the SDK aggregates and builds every batch of points,
    then ``on_export(metrics_data)``, when given, sees it."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class NullExporter(MetricExporter):
        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            if on_export is not None:
                on_export(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis=10_000):
            return True

        def shutdown(self, timeout_millis=30_000, **kwargs):
            pass

    return NullExporter()


def standard_trackers():
    return [
        Tracker("none", "none"),
        Tracker("tracemalloc(1)", "tracemalloc", {"frames": 1}),
        Tracker("memscope", "memscope"),
        Tracker("memscope-unsampled", "memscope", FAST_PATH_ONLY),
    ]


def rotated(items, round_index):
    """items rotated by round_index: every tracker runs first, second, ... equally often (ABAB...)."""
    k = round_index % len(items)
    return items[k:] + items[:k]


def median(xs):
    return statistics.median(xs)


def quantile(xs, q):
    """Linear-interpolated quantile of a list, q in [0, 1]."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def machine():
    """A one-line description: Python, CPU model, cores, load average."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    return (f"Python {platform.python_version()} ({sys.executable}); {cpu}; "
            f"{os.cpu_count()} CPUs; load average {load}")
