"""Sampled allocations are attributed to the innermost Python frame (file, qualified name, line),
and allocations with no Python frame to ``<native>``.

Large allocations are always sampled, so the per-site sums of the large blocks below are exact and
can be compared with equality-or-more (other large allocations can only add to a site).
"""
import inspect
import sys

import memscope_otel
from memscope_otel.records import EVENTS, event_of
from testhook import MEM, RAW

SIZE = 200_000
INLINED = sys.version_info >= (3, 12)  # PEP 709: list comprehensions run in their function's frame


def build(n):
    rows = [
        [bytes(SIZE) for _ in range(n)]  # site: nested comprehension
        for _ in range(n)
    ]
    return rows


def build_flat(n):
    return [bytes(SIZE) for _ in range(n)]  # site: flat comprehension


def build_generator(n):
    return list(bytes(SIZE) for _ in range(n))  # site: generator expression


def line_of(function, marker):
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def sites_of_this_file(tracker):
    snap = memscope_otel.snapshot()
    tracker.resolver.refine_names(now=True)  # 3.10: qualified names come from a walk of the heap
    found = {}
    for site_id, nbytes, count, _ in snap.per_id:
        site = tracker.resolver.resolve(site_id)
        if getattr(site, "file", None) == __file__:
            key = (site.function, site.line, site.domain)
            previous = found.get(key, (0.0, 0.0))
            found[key] = (previous[0] + nbytes, previous[1] + count)
    return found


def assert_site(found, function, line, at_least_count):
    matches = {k: v for k, v in found.items() if k[0] == function and k[1] == line}
    assert matches, f"no site {function}:{line}; this file's sites: {sorted(found)}"
    count = sum(v[1] for v in matches.values())
    assert count >= at_least_count, (function, line, count)


def test_comprehension_sites_have_qualified_names_and_lines(start_tracker):
    # Only the 200 KB blocks (large: always sampled) may make sites: a small allocation of the
    # enclosing frame (its range object, the comprehension's function object) hit by a sample
    # would otherwise show as a site of build_flat itself, now and then.
    tracker = start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0)
    build(3)
    build_flat(4)
    build_generator(5)
    found = sites_of_this_file(tracker)

    nested_line = line_of(build, "site: nested")
    if INLINED:
        assert_site(found, "build", nested_line, 9)
        assert_site(found, "build_flat", line_of(build_flat, "site: flat"), 4)
    else:
        assert_site(found, "build.<locals>.<listcomp>.<listcomp>", nested_line, 9)
        assert_site(found, "build_flat.<locals>.<listcomp>", line_of(build_flat, "site: flat"), 4)
        assert not any(k[0] in ("build", "build_flat") for k in found), sorted(found)
    # Generator expressions keep their own frame on every version.
    assert_site(found, "build_generator.<locals>.<genexpr>", line_of(build_generator, "site: generator"), 5)
    assert not any(k[0] == "<listcomp>" or k[0] == "<genexpr>" for k in found), "unqualified name"


def test_c_call_holding_the_gil_is_attributed_to_its_python_caller(tracker, th):
    marker = 300_007
    p = th.lib.th_alloc(MEM, marker)  # site: C with the GIL
    th.lib.th_free(MEM, p)
    found = sites_of_this_file(tracker)
    here = sys._getframe().f_code.co_qualname if sys.version_info >= (3, 11) else \
        "test_c_call_holding_the_gil_is_attributed_to_its_python_caller"
    line = line_of(test_c_call_holding_the_gil_is_attributed_to_its_python_caller, "site: C with the GIL")
    assert_site(found, here, line, 1)


def test_allocations_without_a_python_frame_are_native(tracker, th):
    """Threads that never ran Python (pthreads made in C), and a RAW call made while the GIL is
    released (the frame stack cannot be read safely then), both go to ``<native>``."""
    pthread_size, released_size = 150_011, 150_013
    captured = []

    def sink(records, base_us):
        alloc = event_of(records["flags"]) == EVENTS.index("alloc")
        captured.append(records[alloc & ((records["size"] == pthread_size) | (records["size"] == released_size))].copy())

    tracker.drainer.add_sink(sink)
    assert th.lib.th_native_threads(2, 10, pthread_size) == 0
    th.lib.th_free(RAW, th.lib.th_alloc(RAW, released_size))  # th_alloc(RAW) does not take the GIL
    memscope_otel.snapshot()  # drains
    import numpy as np

    records = np.concatenate(captured)
    assert (records["size"] == pthread_size).sum() == 20
    assert (records["size"] == released_size).sum() == 1
    sites = {int(s) for s in records["site"]}
    assert sites == {0 + RAW}, sites  # MS_ID_NATIVE + domain
    site = tracker.resolver.resolve(0 + RAW)
    assert (site.file, site.function, site.line, site.domain) == ("<native>", "<native>", 0, "raw")
