"""Records of threads that exit before the drainer sees them are not lost, and ring overflow is
counted exactly (samples + dropped = sampled events attempted)."""
import threading

import numpy as np

import testhook
from memscope_otel import sampler
from memscope_otel.records import EVENTS, event_of
from testhook import LARGE, ExactWindow, installed_on_top

MARK = 50_021  # a large size no one else requests: tells the workers' own records apart


def capture_marked(tracker):
    """Collects every drained ALLOC record of size MARK."""
    captured = []

    def sink(records, base_us):
        mine = records[(records["size"] == MARK) & (event_of(records["flags"]) == EVENTS.index("alloc"))]
        captured.append(mine.copy())

    tracker.drainer.add_sink(sink)
    return captured


def test_exited_python_threads_lose_no_records(tracker, th):
    threads_n, per_thread = 48, 20
    captured = capture_marked(tracker)
    keep = np.zeros(threads_n * per_thread, dtype=np.uint64)
    base = int(th.ffi.cast("uintptr_t", th.ffi.from_buffer(keep)))
    baseline = testhook.os_thread_count()

    def work(k):
        out = th.ffi.cast("uintptr_t *", base + 8 * k * per_thread)
        th.lib.th_raw_alloc_many(out, per_thread, MARK)
        junk = [bytes(20000 + k) for _ in range(3)]  # large OBJ allocations from Python too
        return junk

    with installed_on_top():
        window = ExactWindow()
        tracker.drainer.drain()
        before = sampler.read_counters()
        window.begin()
        large_before = tracker.summary.count[:, LARGE].sum()
        for first in range(0, threads_n, 8):  # short-lived threads, in waves
            wave = [threading.Thread(target=work, args=(k,)) for k in range(first, first + 8)]
            for t in wave:
                t.start()
            for t in wave:
                t.join()
        testhook.wait_os_threads(baseline)
        memscope, mine, _ = window.end()
    counters = sampler.read_counters()
    tracker.drainer.drain()
    large_after = tracker.summary.count[:, LARGE].sum()
    after_drain = sampler.read_counters()
    th.lib.th_raw_free_many(th.ffi.cast("uintptr_t *", base), len(keep))

    assert counters.dropped == before.dropped
    exact_large = int(mine.allocations[:, LARGE].sum())
    assert exact_large >= threads_n * (per_thread + 3)
    assert int(memscope.allocations[:, LARGE].sum()) == exact_large
    # Every large allocation of the window was sampled with weight 1 and reduced, including the
    # ones of threads that had exited before any drain.
    assert large_after - large_before == exact_large
    marked = np.concatenate(captured)
    assert len(marked) == threads_n * per_thread
    assert np.all(marked["weight"] == 1.0)
    assert len(np.unique(marked["thread"])) == threads_n
    # The exited threads' states were freed once drained.
    assert after_drain.threads_live == before.threads_live


def test_full_rings_count_drops_exactly(start_tracker, th):
    """Native threads overflow their 256-record rings, then exit: what was written is reduced,
    what was not is counted as dropped and still reaches the estimates (the spill)."""
    ring, threads_n, per_thread = 256, 8, 600
    tracker = start_tracker(max_records_per_thread=ring, small_sample_rate=0.0, medium_sample_rate=0.0,
                            frequency_sample_interval=0)
    captured = capture_marked(tracker)
    keep = np.zeros(threads_n * per_thread, dtype=np.uint64)
    ptrs = th.ffi.cast("uintptr_t *", th.ffi.from_buffer(keep))
    tracker.drainer.drain()
    before = sampler.read_counters()
    records_before = tracker.summary.records
    large_before = tracker.summary.count[:, LARGE].sum()

    # Holding the drainer's lock keeps it from draining when a ring passes half full.
    with tracker.drainer.lock:
        assert th.lib.th_native_threads_keep(threads_n, per_thread, MARK, ptrs) == 0
        after = sampler.read_counters()
    tracker.drainer.drain()
    drained = sampler.read_counters()
    # Read before the frees below: their free records may be drained (ring half full) at once.
    records_reduced = tracker.summary.records - records_before
    large_reduced = tracker.summary.count[:, LARGE].sum() - large_before
    th.lib.th_raw_free_many(ptrs, len(keep))

    large = int((after.allocations[:, LARGE] - before.allocations[:, LARGE]).sum())
    samples = after.samples - before.samples
    dropped = after.dropped - before.dropped
    assert large == threads_n * per_thread
    # Nobody drained while they ran: each ring took exactly its capacity, the rest was dropped.
    assert samples == threads_n * ring
    assert dropped == threads_n * (per_thread - ring)
    assert samples + dropped == large
    # Everything written was reduced (after the threads had exited), and everything dropped was
    # added through the spill: the estimate has every large allocation, the records sink (the
    # dump's view) only those written.
    assert drained.samples == after.samples
    assert records_reduced == samples + dropped
    assert large_reduced == large
    marked = np.concatenate(captured)
    assert len(marked) == samples
    assert np.all(np.bincount(marked["thread"])[np.unique(marked["thread"])] == ring)


KEYS_CHILD = """
import ctypes, sys, threading
import memscope_otel
from memscope_otel import sampler

libc = ctypes.CDLL(None)
libc.pthread_getspecific.restype = ctypes.c_void_p
sampler.read_counters()  # the extension loaded, no thread state made yet
key0 = libc.pthread_getspecific(0)
k = ctypes.c_uint()
while libc.pthread_key_create(ctypes.byref(k), None) == 0:  # the process's keys, all used up
    pass
assert memscope_otel.start(drain_interval_ms=60000, adaptive=False) is not None
before = sampler.read_counters()
worker = threading.Thread(target=lambda: [bytes(100) for _ in range(5000)])
worker.start()
worker.join()
keep = [bytes(100) for _ in range(5000)]
after = sampler.read_counters()
print("key 0 kept:", libc.pthread_getspecific(0) == key0, flush=True)
print("counted:", int((after.allocations - before.allocations).sum()), flush=True)
memscope_otel.stop()
print("stopped", flush=True)
"""


def test_threads_count_in_the_shared_state_when_no_thread_key_is_left():
    """A thread's state is handed over at its exit through a pthread key; in a process that has
    used up its keys, the tracker must not write someone else's slot (key 0 is CPython's own
    thread-state slot: the interpreter crashed at stop()), and threads count in the shared state."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", KEYS_CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "key 0 kept: True" in proc.stdout
    counted = int(proc.stdout.split("counted:")[1].split()[0])
    assert counted >= 10_000  # both threads' bytes(100), in the shared (orphan) state
    assert "stopped" in proc.stdout
