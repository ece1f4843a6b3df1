"""An application that exits without calling stop(): memscope stops itself first (atexit, and
multiprocessing's exit finalizers in a child it forked, which ends with os._exit).

Without that, records still in the rings never reached the dump, and the tracker's daemon threads
were still running numpy when the interpreter finalized: CPython ends such a thread with
pthread_exit when it asks for the GIL back, and unwinding numpy's C++ frames that way aborted the
whole process now and then (exit status 134). Each case runs in a fresh interpreter.
"""
import os
import subprocess
import sys
import textwrap

from memscope_otel.dump import open_dump
from memscope_otel.records import EVENTS, event_of

BLOCK = 123_457  # a size nothing else allocates: large, so every one is sampled
BLOCKS = 40

CHILD = textwrap.dedent(f"""
    import atexit, sys, threading

    def report():  # registered before start(): runs after memscope's own exit handler
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("memscope"))
        print("memscope threads at exit:", names, flush=True)

    atexit.register(report)

    import memscope_otel

    # A drain interval longer than the run: nothing is drained unless the exit handler does it.
    assert memscope_otel.start(dump_path=sys.argv[1], drain_interval_ms=60000) is not None
    blocks = [bytearray({BLOCK} - 1) for _ in range({BLOCKS})]  # + 1 byte for the bytearray's NUL
    del blocks
    print("workload done", flush=True)
""")


def run_child(tmp_path, extra_env=None):
    path = tmp_path / "exit.dump"
    env = dict(os.environ, **(extra_env or {}))
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, path


def test_exit_without_stop_drains_closes_the_dump_and_ends_the_threads(tmp_path):
    proc, path = run_child(tmp_path)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "workload done" in proc.stdout
    assert "memscope threads at exit: []" in proc.stdout, proc.stdout
    with open_dump(str(path), strict=True) as dump:
        assert dump.truncated is None
        records = dump.records
        mine = records[records["size"] == BLOCK]
        events = [EVENTS[e] for e in event_of(mine["flags"])]
        # (bytearray() gets its block by realloc)
        assert len(events) - events.count("free") == BLOCKS, events
        assert events.count("free") == BLOCKS, events


def test_exit_without_stop_with_the_optimizer_off(tmp_path):
    # The optimizer's threads are not there to slow the exit down: the drainer alone is stopped.
    proc, path = run_child(tmp_path, {"OTEL_PYTHON_MEMSCOPE_ADAPTIVE": "false"})
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "memscope threads at exit: []" in proc.stdout, proc.stdout
    with open_dump(str(path), strict=True) as dump:
        assert int((dump.records["size"] == BLOCK).sum()) == 2 * BLOCKS


MULTIPROCESSING_CHILD = textwrap.dedent(f"""
    import multiprocessing, sys, warnings

    import memscope_otel

    def work():  # in the child, which ends with os._exit(): no atexit handler runs there
        blocks = [bytearray({BLOCK} - 1) for _ in range({BLOCKS})]
        del blocks

    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
    assert memscope_otel.start(dump_path=sys.argv[1], drain_interval_ms=60000) is not None
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join()
    print("child", child.pid, child.exitcode, flush=True)
    memscope_otel.stop()
""")


def test_multiprocessing_child_drains_and_closes_its_dump(tmp_path):
    path = tmp_path / "mp.dump"
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", MULTIPROCESSING_CHILD, str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    _, pid, exitcode = proc.stdout.split()
    assert exitcode == "0", proc.stdout
    with open_dump(f"{path}.{pid}", strict=True) as dump:  # the child's own dump
        assert dump.truncated is None
        assert int((dump.records["size"] == BLOCK).sum()) == 2 * BLOCKS
