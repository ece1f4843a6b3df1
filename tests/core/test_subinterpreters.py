"""A thread of a subinterpreter: its allocations are ``<native>``, none of its code objects is
kept by memscope's site table.

With a per-interpreter GIL (3.12+, "isolated" interpreters) such a thread runs truly beside the
main interpreter, so interning its code objects would touch their reference counts under the
wrong lock, and their addresses would dangle once the interpreter is destroyed. Only the main
interpreter's frames are read.
"""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12),
                                reason="interpreters with their own GIL exist from CPython 3.12")

CHILD = r"""
import sys
try:
    import _interpreters as interpreters          # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters     # 3.12
import memscope_otel
from memscope_otel import sampler
from memscope_otel.records import EVENTS, event_of

SIZE = 50_013
tracker = memscope_otel.start(adaptive=False, drain_interval_ms=60000)
captured = []
tracker.drainer.add_sink(lambda records, base: captured.append(records[records["size"] == SIZE + 1].copy()))  # bytearray(n) asks n + 1
code = '''
import threading
def subfn():
    keep = [bytearray(%d) for _ in range(20)]
thread = threading.Thread(target=subfn)
thread.start()
thread.join()
''' % SIZE
interp = interpreters.create()  # isolated: its own GIL and object allocator state
interpreters.run_string(interp, code)
memscope_otel.snapshot()  # drains
interpreters.destroy(interp)
memscope_otel.snapshot()

import numpy as np
records = np.concatenate(captured)
allocs = records[event_of(records["flags"]) != EVENTS.index("free")]  # (bytearray reallocs from NULL)
print("allocs:", len(allocs))
print("sites:", sorted({int(s) for s in allocs["site"]}))
# No site of it was ever interned (the table would have held its code object until resolved).
names = {getattr(tracker.resolver.resolve(i), "function", None) for i in range(sampler.read_counters().ids_used)}
print("subfn kept:", "subfn" in names)
memscope_otel.stop()
"""


def test_subinterpreter_thread_is_native_and_leaves_no_code_object():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert int(lines["allocs"]) == 20, result.stdout
    # MS_ID_NATIVE + domain: 0..3 (the buffers of bytearray(50013) are OBJ requests)
    assert all(site < 4 for site in eval(lines["sites"])), result.stdout
    assert lines["subfn kept"] == "False", result.stdout


# A subinterpreter that imports memscope_otel and calls start(), as mod_wsgi applications and
# opentelemetry-instrument's sitecustomize (which runs again in every new interpreter) do.
IMPORTING_CHILD = r"""
import sys
try:
    import _interpreters as interpreters          # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters     # 3.12
import os
import memscope_otel
from memscope_otel import sampler

# under opentelemetry-instrument the instrumentor has started it already, at these default rates
tracker = memscope_otel._tracker.current() or memscope_otel.start(adaptive=False, small_sample_rate=0.001,
                                                                   medium_sample_rate=0.05)
before = sampler.read_counters().allocations.sum()
code = '''
import sys
import memscope_otel
assert memscope_otel.start(small_sample_rate=1.0, medium_sample_rate=1.0) is None
assert memscope_otel.snapshot() is None and not memscope_otel.is_running()
memscope_otel.stop()
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("numpy", "memscope_otel._memscope"))
assert not loaded, loaded
'''
for isolated in [kind == 'isolated' for kind in os.environ['KINDS'].split(',')]:
    interp = interpreters.create(isolated=isolated) if sys.version_info < (3, 13) else \
        interpreters.create("isolated" if isolated else "legacy")
    interpreters.run_string(interp, code)
    interpreters.destroy(interp)
keep = [bytearray(100_000) for _ in range(1000)]
after = sampler.read_counters().allocations.sum()
print("same tracker:", memscope_otel._tracker.current() is tracker)
print("rates:", sampler.rates())
print("counted:", after - before >= 1000)
memscope_otel.stop()
"""


def _run_importing_child(command, extra_env=None):
    env = dict(os.environ, OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="600000", **(extra_env or {}))
    result = subprocess.run(command + ["-c", IMPORTING_CHILD], capture_output=True, text=True, timeout=180,
                            env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr == ""
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["same tracker"] == "True", result.stdout[-2000:]
    assert eval(lines["rates"]) == (0.05, 0.001), result.stdout[-2000:]
    assert lines["counted"] == "True", result.stdout[-2000:]


def test_subinterpreters_import_and_start_quietly():
    _run_importing_child([sys.executable], {"KINDS": "isolated,legacy"})


def test_subinterpreters_under_opentelemetry_instrument_are_quiet():
    # Legacy interpreters only (mod_wsgi's kind): in an isolated one the OpenTelemetry SDK itself
    # cannot import (ctypes is single-phase), and its sitecustomize prints that failure.
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    _run_importing_child([instrument, sys.executable], {"KINDS": "legacy"})
