"""A forked child that only execs or exits finds no thread or file of memscope's (DESIGN trap 11):
the drainer, the recognizer's window and the child's dump file start when first needed."""
import json
import os
import subprocess
import sys
import threading

import pytest

import memscope_otel
from memscope_otel import sampler


def _child_right_after_fork(write_end, tracker):
    frames = len(sys._current_frames())
    threads = [t.name for t in threading.enumerate()]
    report = {"frames": frames, "threads": threads, "forking": threading.current_thread().name}
    # Later the child works as today: its allocations are counted and reach a collection.
    keep = [bytearray(100_000) for _ in range(40)]
    snap = memscope_otel.snapshot()
    report["large"] = int(snap.counters.allocations[:, 2].sum())
    report["sampled_large"] = sum(c for _, _, c, _ in snap.per_id)
    report["threads_after_need"] = sorted(t.name for t in threading.enumerate())
    # With the optimizer, the child's own window is attached when it starts: the records the
    # snapshot drained were given to it (the parent's was let go inside fork()).
    optimizer = tracker.optimizer
    report["window_times"] = optimizer.recognizer.window.n_times if optimizer is not None else None
    memscope_otel.stop()
    del keep
    os.write(write_end, json.dumps(report).encode())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
@pytest.mark.parametrize("adaptive", [False, True])
def test_forked_child_has_only_the_forking_thread_until_needed(start_tracker, tmp_path, adaptive):
    dump = tmp_path / "memscope.dump"
    tracker = start_tracker(adaptive=adaptive, dump_path=str(dump), drain_interval_ms=10, wait_idle=False)
    stop = threading.Event()
    busy = threading.Thread(target=lambda: stop.wait(30), name="app-worker")
    busy.start()
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                _child_right_after_fork(write_end, tracker)
            finally:
                os._exit(0)
        os.close(write_end)
        data = b""
        while chunk := os.read(read_end, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        stop.set()
        busy.join()
    assert os.waitstatus_to_exitcode(status) == 0
    child = json.loads(data)
    assert child["frames"] == 1, child
    assert child["threads"] == [child["forking"]], child
    assert child["large"] >= 40, child
    assert child["sampled_large"] >= 40, child  # large blocks are always sampled
    assert "memscope-drainer" in child["threads_after_need"], child
    if adaptive:
        assert child["window_times"] >= 40, child
    assert os.path.exists(f"{dump}.{pid}")  # its own dump, made when needed


PREEXEC_CHILD = r"""
import os, subprocess, sys
import memscope_otel
from memscope_otel import sampler
dump = sys.argv[1]
memscope_otel.start(dump_path=dump, adaptive=True, drain_interval_ms=10)
seen = {}
def before_exec():
    # what the at-fork work left in the child just before exec
    seen["threads"] = len(sys._current_frames())
    seen["large"] = int(sampler.read_counters().allocations[:, 2].sum())
    if seen["threads"] != 1 or seen["large"] != 0:
        os._exit(17)
result = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=before_exec)
print("status:", result.returncode)
print("child dumps:", sorted(n for n in os.listdir(os.path.dirname(dump)) if n.startswith(os.path.basename(dump) + ".")))
memscope_otel.stop()
"""


def test_preexec_fn_child_creates_no_dump_and_allocates_nothing_large(tmp_path):
    dump = tmp_path / "memscope.dump"
    result = subprocess.run([sys.executable, "-c", PREEXEC_CHILD, str(dump)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["status"] == "0", result.stdout
    assert lines["child dumps"] == "[]", result.stdout


GC_STARTED_CHILD = r"""
import os, sys, threading, time, warnings
import memscope_otel
warnings.simplefilter("ignore", DeprecationWarning)
memscope_otel.start(drain_interval_ms=50, adaptive=False)
pid = os.fork()
if pid == 0:
    # runs on without any collection: a sampled allocation a second after its first has the
    # main thread start the drainer at its next safe point
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(t.name == "memscope-drainer" for t in threading.enumerate()):
        junk = [bytearray(300_000) for i in range(3)]  # (large: always sampled)
    print("drainer:", any(t.name == "memscope-drainer" for t in threading.enumerate()), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
memscope_otel.stop()
"""


def test_a_child_that_runs_on_gets_its_drainer_without_a_collection():
    result = subprocess.run([sys.executable, "-c", GC_STARTED_CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "drainer: True" in result.stdout, result.stdout


LAZY_IMPORT_CHILD = r"""
import os, sys, tempfile
import memscope_otel
memscope_otel.start(dump_path=os.path.join(tempfile.mkdtemp(), "m.dump"), adaptive=False)
keep = [bytearray(100_000) for _ in range(50)]
memscope_otel.snapshot()  # a drain that writes a dump chunk
print(sorted(m for m in sys.modules if m == "numpy.ma" or m.startswith("numpy.ma.")))
memscope_otel.stop()
"""


def test_a_dump_write_imports_nothing_a_fork_could_leave_locked():
    """A drain imports no module on its thread: a fork while it held the import lock of one (numpy
    imports numpy.ma at np.unique's first call) left the child's lock held, and the child hung at
    its first dump write."""
    result = subprocess.run([sys.executable, "-c", LAZY_IMPORT_CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
