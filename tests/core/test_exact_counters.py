"""memscope's exact counters equal an independent exact count of the same requests.

The independent count is testhook.c's allocator hook, installed on top of memscope's hooks, with
its own re-entry guard and its own bucket arithmetic. Both counters are read at the same
instants (inside one C call each) and must agree exactly: per domain x size class counts and
bytes, deallocations per domain, and the power-of-two histogram.
"""
import threading

import numpy as np
import pytest

import testhook
from testhook import DOMAINS, LARGE, MEDIUM, SMALL, ExactWindow, installed_on_top

CLASSES = ("small", "medium", "large")


def python_churn(n):
    """Ordinary Python object churn: small objects, containers growing by realloc, large buffers."""
    keep = []
    for i in range(n):
        text = str(i) * (i % 50)
        table = {j: text for j in range(i % 20)}
        buffer = bytearray()
        for _ in range(i % 30):
            buffer += b"x" * 97  # grows by realloc
        numbers = list(range(i % 300))
        numbers.append(len(bytes(9000 + i)))  # a large, short-lived block
        keep.append((text, table, buffer, numbers, [k * 1.5 for k in range(i % 40)]))
        if len(keep) > 50:
            keep.pop(0)
    return len(keep)


def assert_same_counts(memscope, mine, manual):
    for d, name in enumerate(DOMAINS):
        for c, cls in enumerate(CLASSES):
            assert memscope.allocations[d, c] == mine.allocations[d, c], (
                f"{name}/{cls} allocations: memscope {memscope.allocations[d, c]}, exact {mine.allocations[d, c]}")
            assert memscope.bytes[d, c] == mine.bytes[d, c], (
                f"{name}/{cls} bytes: memscope {memscope.bytes[d, c]}, exact {mine.bytes[d, c]}")
        assert memscope.deallocations[d] == mine.deallocations[d], (
            f"{name} deallocations: memscope {memscope.deallocations[d]}, exact {mine.deallocations[d]}")
        differ = np.nonzero(memscope.by_size[d] != mine.by_size[d])[0]
        assert differ.size == 0, (
            f"{name} histogram differs in buckets {differ.tolist()}: memscope "
            f"{memscope.by_size[d][differ].tolist()}, exact {mine.by_size[d][differ].tolist()}")
    assert manual == 0


def assert_workload_covered(mine):
    """The window really exercised every domain and size class (else equality proves little)."""
    for d, name in enumerate(DOMAINS):
        for c in (SMALL, MEDIUM, LARGE):
            assert mine.allocations[d, c] > 0, f"workload made no {name}/{CLASSES[c]} allocation"
        assert mine.deallocations[d] > 0
        assert mine.by_size[d][0] > 0  # sizes 0 and 1


@pytest.mark.parametrize("critical", [8192, 2048])
def test_single_thread_equals_exact_count(start_tracker, th, critical):
    start_tracker(critical_size_threshold=critical)
    with installed_on_top(critical):
        window = ExactWindow()
        window.begin()
        th.lib.th_workload(1, 400)
        python_churn(1500)
        memscope, mine, manual = window.end()
    assert_workload_covered(mine)
    assert_same_counts(memscope, mine, manual)


def test_four_threads_equal_exact_count(tracker, th):
    def work(k):
        th.lib.th_workload(100 + k, 300)
        python_churn(800)
        th.lib.th_workload(200 + k, 100)

    baseline = testhook.os_thread_count()
    with installed_on_top():
        window = ExactWindow()
        window.begin()
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        testhook.wait_os_threads(baseline)
        memscope, mine, manual = window.end()
    assert_workload_covered(mine)
    assert_same_counts(memscope, mine, manual)


def test_native_threads_equal_exact_count(tracker, th):
    """RAW allocations from threads with no Python thread state (and without the GIL)."""
    with installed_on_top():
        window = ExactWindow()
        window.begin()
        assert th.lib.th_native_threads(4, 500, 1000) == 0
        assert th.lib.th_native_threads(3, 50, 20000) == 0
        memscope, mine, manual = window.end()
    assert mine.allocations[testhook.RAW, SMALL] >= 2000
    assert mine.allocations[testhook.RAW, LARGE] >= 150
    assert_same_counts(memscope, mine, manual)


def test_oracle_counts_what_it_is_told(tracker, th):
    """The test hook itself: known requests give known counts (a broken oracle agreeing with a
    broken tracker would otherwise go unnoticed)."""
    with installed_on_top():
        window = ExactWindow()
        window.begin()
        p = th.lib.th_alloc(testhook.RAW, 8192)
        q = th.lib.th_alloc(testhook.RAW, 1023)
        th.lib.th_free(testhook.RAW, p)
        th.lib.th_free(testhook.RAW, q)
        memscope, mine, manual = window.end()
    raw = testhook.RAW
    assert mine.allocations[raw].tolist() == [1, 0, 1]
    assert mine.bytes[raw].tolist() == [1023, 0, 8192]
    assert mine.deallocations[raw] == 2
    assert mine.by_size[raw][13] == 1 and mine.by_size[raw][10] == 1 and mine.by_size[raw].sum() == 2
    assert_same_counts(memscope, mine, manual)


def test_blocks_pymalloc_hands_to_raw_are_counted_once(tracker, th):
    """OBJ/MEM blocks over 512 B live in the RAW allocator, so their frees reach the RAW hook from
    inside pymalloc; the fast-path free marks them so that the RAW hook does not count them again
    (hooks.c). A RAW free of another block right after an OBJ free must still count."""
    with installed_on_top():
        window = ExactWindow()
        window.begin()
        raw = [th.lib.th_alloc(testhook.RAW, 64 + i) for i in range(400)]
        for i in range(3000):
            domain = (testhook.OBJ, testhook.MEM)[i % 2]
            th.lib.th_free(domain, th.lib.th_alloc(domain, 513 + (i * 37) % 3000))  # handed to RAW
            if i % 10 == 0:
                th.lib.th_free(domain, th.lib.th_alloc(domain, 64))  # pymalloc's own block
                th.lib.th_free(testhook.RAW, raw.pop())
        for p in raw:
            th.lib.th_free(testhook.RAW, p)
        memscope, mine, manual = window.end()
    assert mine.deallocations[testhook.OBJ] >= 1800 and mine.deallocations[testhook.MEM] >= 1500
    assert mine.deallocations[testhook.RAW] >= 400
    assert_same_counts(memscope, mine, manual)


@pytest.mark.parametrize("size", [0, 700, 3000, 20000], ids=["zero", "small", "medium", "large"])
def test_failed_requests_are_not_counted(start_tracker, th, size):
    """A malloc, calloc or realloc that returns NULL is no allocation, and a failed realloc frees
    nothing (its block stays valid; with size 0 too: CPython's allocators make realloc(p, 0) a
    request of one byte, so NULL is out of memory). The small-allocation fast path counts before
    passing the request on and must undo it: an allocator layer under memscope fails every
    request of ``size`` made by the test hook's calls."""
    import memscope_otel

    with testhook.failing_below(size):
        start_tracker()
        with installed_on_top():
            window = ExactWindow()
            window.begin()
            for d in range(3):
                for i in range(300):  # past the frequency slot: the general paths fail too
                    keep = th.lib.th_alloc(d, 64 + i % 100)
                    assert th.lib.th_alloc(d, size) == 0
                    assert th.lib.th_calloc(d, 1, size) == 0
                    assert th.lib.th_realloc(d, 0, size) == 0
                    assert th.lib.th_realloc(d, keep, size) == 0
                    keep = th.lib.th_realloc(d, keep, size + 1)  # succeeds: frees the old block
                    th.lib.th_free(d, keep)
            memscope, mine, manual = window.end()
        memscope_otel.stop()  # before the layer under it goes
    cls = SMALL if size < 1024 else MEDIUM if size < 8192 else LARGE
    for d in range(3):  # (the interpreter's own requests come on top in OBJ and MEM)
        assert mine.allocations[d, cls] >= 300 and mine.deallocations[d] >= 600
    assert_same_counts(memscope, mine, manual)
