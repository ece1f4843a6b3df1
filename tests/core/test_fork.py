"""Fork safety: a forked child starts from fresh counters with its own running drainer, and the
parent carries on unaffected; the same through a real pre-fork server (gunicorn)."""
import concurrent.futures
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import memscope_otel
from memscope_otel import sampler
from memscope_otel import tracker as tracker_module
from testhook import LARGE, RAW

HERE = pathlib.Path(__file__).resolve().parent


def churn(n):
    keep = [str(i) * 5 for i in range(n)]
    return len(keep)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def child_report(th, problems):
    """Runs in the child: what it sees of its own counters and drainer, and what memscope logged."""
    first = sampler.read_counters()
    report = {"first_allocations": int(first.allocations.sum())}
    current = tracker_module.current()
    report["drainer_before_need"] = current.drainer._thread is not None and current.drainer._thread.is_alive()
    memscope_otel.snapshot()  # a need: the child's drainer starts (lazily, DESIGN trap 11)
    for _ in range(50):
        th.lib.th_free(RAW, th.lib.th_alloc(RAW, 100_000))
    # The child's background drainer (not this thread) must reduce every large record.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        exact = int(sampler.read_counters().allocations[:, LARGE].sum())
        if current.summary.count[:, LARGE].sum() == exact and current.drainer.drains > 0:
            break
        time.sleep(0.01)
    later = sampler.read_counters()
    report.update(
        large_exact=int(later.allocations[:, LARGE].sum()),
        large_raw=int(later.allocations[RAW, LARGE]),
        large_reduced=float(current.summary.count[:, LARGE].sum()),
        drains=current.drainer.drains,
        drainer_alive=current.drainer._thread.is_alive(),
        later_allocations=int(later.allocations.sum()),
        problems=problems.messages,
    )
    return report


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_fork_child_fresh_parent_unaffected(start_tracker, th):
    tracker = start_tracker(drain_interval_ms=10, wait_idle=False)
    churn(100_000)
    th.lib.th_workload(7, 200)
    parent_before = sampler.read_counters()
    parent_total = int(parent_before.allocations.sum())
    assert parent_total > 100_000

    problems = _Collect()
    logging.getLogger("memscope_otel").addHandler(problems)
    read_end, write_end = os.pipe()
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            logging.getLogger("memscope_otel").removeHandler(problems)
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            data = json.dumps(child_report(th, problems)).encode()
            os.write(write_end, data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed with status {status}"
    child = json.loads(data)
    assert child["problems"] == [], "memscope logged problems in the child"

    # Fresh counters: the child's first snapshot holds only what it did since fork().
    assert child["first_allocations"] < parent_total / 20, child
    # Its own work is counted, and its drainer ran and reduced every large record.
    assert child["large_raw"] >= 50
    assert child["later_allocations"] > child["first_allocations"]
    assert child["drainer_alive"] and child["drains"] > 0
    assert not child["drainer_before_need"]
    assert child["large_reduced"] == child["large_exact"]

    # The parent: unaffected, still counting, its drainer still running.
    churn(10_000)
    parent_after = sampler.read_counters()
    assert int(parent_after.allocations.sum()) > parent_total + 10_000
    assert (parent_after.allocations >= parent_before.allocations).all()
    assert tracker.drainer._thread.is_alive()
    snap = memscope_otel.snapshot()
    assert snap.counters.allocations.sum() >= parent_after.allocations.sum()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gunicorn_or_skip():
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        if os.environ.get("MEMSCOPE_REQUIRE_INTEGRATION") == "1":
            pytest.fail("gunicorn is not installed and MEMSCOPE_REQUIRE_INTEGRATION=1")
        pytest.skip("gunicorn is not installed (pip install gunicorn); set MEMSCOPE_REQUIRE_INTEGRATION=1 to fail")


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_gunicorn_workers_have_fresh_counters():
    _gunicorn_or_skip()
    port = _free_port()
    env = dict(os.environ, MEMSCOPE_TEST_BIND=f"127.0.0.1:{port}",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn_conf.py"),
                               "gunicorn_app:app"], env=env, cwd=HERE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not come up: {server.stdout.read().decode()[-2000:]}")
                time.sleep(0.05)
        reports = {}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(5):
                for report in pool.map(_get, [url] * 4):
                    reports[report["pid"]] = report
                if len(reports) >= 2:
                    break
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0].decode()
    assert len(reports) >= 2, f"requests reached only workers {list(reports)}"
    assert "Traceback" not in output, output[-3000:]
    for pid, report in reports.items():
        assert pid != report["master_pid"]
        # The master counted a lot before forking (its on_starting churn alone is 200,000 strings).
        assert report["master_at_fork"] > 200_000, report
        # A worker's counters start over: right after fork they hold only its own few allocations.
        assert report["own_at_post_fork"] < report["master_at_fork"] / 20, report
        assert report["own_now"] > report["own_at_post_fork"], report
        assert report["drainer_alive"], report


FOOTPRINT_CHILD = """
import os, warnings
import memscope_otel
from memscope_otel import sampler

warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
memscope_otel.start(max_records_per_thread=1 << 20, drain_interval_ms=60000, adaptive=False)
keep = [bytearray(20000) for _ in range(10)]  # large: sampled, into a ring of 2^20 records (32 MiB)
memscope_otel.snapshot()
memscope_otel.stop()
memscope_otel.start(drain_interval_ms=60000, adaptive=False)  # another capacity: the ring is replaced...
keep.append(bytearray(20000))  # ...at this thread's next sample, and freed by the next drain
pid = os.fork()
if pid == 0:
    # the child's drainer and its buffer start when first needed (here, to read the footprint
    # before its first drain with them counted)
    from memscope_otel import tracker
    tracker.current().start_in_child()
    before = sampler.read_counters().footprint_bytes
    memscope_otel.snapshot()  # the child's first drain
    after = sampler.read_counters().footprint_bytes
    print("child", before, after, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
memscope_otel.stop()
"""


def test_fork_child_footprint_stays_its_own_after_a_ring_was_replaced():
    """The parent's replaced ring is not counted in the child's fresh footprint: the child's
    first drain must not subtract it (the unsigned total wrapped to about 2^64)."""
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", FOOTPRINT_CHILD], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, before, after = proc.stdout.split()
    # (the stage counts its first step from the start, and no drain with adaptive=False touches more)
    assert 0 < int(after) <= int(before) < 1 << 30, proc.stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads running
def test_fork_while_a_collection_holds_the_producer_and_optimizer_locks(start_tracker):
    """A collection on another thread (the SDK's exporter) holds these locks for a moment; a fork
    in that moment gave a child that hung inside os.fork() (the producer's reset) or at its first
    collection (the optimizer's). Held here on purpose across the fork."""
    tracker = start_tracker(adaptive=True, wait_idle=False)
    with tracker.producer._lock, tracker.optimizer._lock:
        pid = os.fork()
        if pid == 0:  # the child: after_fork ran inside fork(); now one collection
            try:
                memscope_otel.snapshot()
                os._exit(0)
            finally:
                os._exit(3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock inherited from the parent")
    assert os.waitstatus_to_exitcode(status) == 0
