"""A thread's buffer of records grows with what it samples, and goes back to the system when the
thread exits: a thread that samples a few records holds one page (its state, with the first
records behind it), one that samples thousands holds about what they take (segments doubling,
nothing reserved up front), and once both exited and were drained the footprint is what it was.
"""
import json
import mmap
import os
import threading

import numpy as np

import memscope_otel
import testhook
from memscope_otel import sampler
from memscope_otel import tracker as tracker_module
from testhook import LARGE

SIZE = 50_023  # large: every allocation is sampled


def run_thread(th, n, probe):
    """Runs a thread that allocates and frees n blocks (RAW, each sampled: 2n records), 100 at a
    time (the live table stays small: its size is in the footprint too), and waits; calls probe()
    while it is alive, then lets it exit; returns what probe returned."""
    keep = np.zeros(100, dtype=np.uint64)  # made here: the thread itself allocates nothing large
    ptrs = th.ffi.cast("uintptr_t *", th.ffi.from_buffer(keep))
    ready, leave = threading.Event(), threading.Event()

    def work():
        for done in range(0, n, 100):
            k = min(100, n - done)
            th.lib.th_raw_alloc_many(ptrs, k, SIZE)
            th.lib.th_raw_free_many(ptrs, k)
        ready.set()
        leave.wait()

    baseline = testhook.os_thread_count()
    thread = threading.Thread(target=work)
    thread.start()
    ready.wait()
    try:
        return probe()
    finally:
        leave.set()
        thread.join()
        testhook.wait_os_threads(baseline)  # its TLS destructor ran: it is marked exited


def test_buffers_grow_with_the_samples_and_go_back_at_exit(start_tracker, th):
    tracker = start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0,
                            max_records_per_thread=16384)
    page = mmap.PAGESIZE
    tracker.drainer.drain()
    before = sampler.read_counters()

    few = run_thread(th, 4, sampler.read_counters)
    assert few.samples - before.samples >= 8 and few.dropped == before.dropped
    # state and first records in one page
    assert few.footprint_bytes - before.footprint_bytes == page

    n = 3000
    many = run_thread(th, n, sampler.read_counters)
    records = 2 * n
    assert many.samples - few.samples >= records and many.dropped == before.dropped  # grew, never full
    grown = many.footprint_bytes - before.footprint_bytes
    # The exited thread above (not drained yet) keeps its page; this one holds its records in
    # segments that doubled: at least what they take, less than twice that and a few pages.
    assert records * 32 < grown <= 2 * records * 32 + 8 * page, grown

    tracker.drainer.drain()
    after = sampler.read_counters()
    assert after.threads_live == before.threads_live
    assert after.footprint_bytes == before.footprint_bytes


def test_a_child_forked_with_a_grown_buffer_keeps_its_newest_segment(start_tracker, th):
    """fork() while the thread's buffer is a chain of segments the drainer has not read: the child
    keeps the newest one, emptied, and records into it (and beyond) like any thread."""
    start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0,
                  max_records_per_thread=16384)
    n = 3000
    keep = np.zeros(n, dtype=np.uint64)
    ptrs = th.ffi.cast("uintptr_t *", th.ffi.from_buffer(keep))
    th.lib.th_raw_alloc_many(ptrs, n, SIZE)  # several segments, none read yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        report = {}
        try:
            first = sampler.read_counters()
            mine = np.zeros(n, dtype=np.uint64)
            mine_ptrs = th.ffi.cast("uintptr_t *", th.ffi.from_buffer(mine))
            th.lib.th_raw_alloc_many(mine_ptrs, n, SIZE)
            th.lib.th_raw_free_many(mine_ptrs, n)
            later = sampler.read_counters()
            # stop(): the last drain, and nothing counted after it (a snapshot's drain could be
            # followed by a large allocation of the child's own, counted but not yet reduced)
            current = tracker_module.current()
            memscope_otel.stop()
            report = dict(samples=int(later.samples - first.samples),
                          dropped=int(later.dropped), exact=int(sampler.read_counters().allocations[:, LARGE].sum()),
                          reduced=float(current.summary.count[:, LARGE].sum()))
        finally:
            os.write(write, json.dumps(report).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    th.lib.th_raw_free_many(ptrs, n)
    assert report, "the child failed"
    assert report["samples"] >= 2 * n and report["dropped"] == 0
    assert report["reduced"] == report["exact"] >= n
