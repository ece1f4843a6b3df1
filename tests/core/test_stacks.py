"""Stacks of sampled allocations: the frames ``traceback`` sees (file, function, line, order) for
nested calls, comprehensions, generators, coroutines and recursion deeper than MAX_STACK_DEPTH;
unbiased per-stack estimates; per-site sums that are exactly the sums over their stacks; the
site frame of SITE_FRAME=application.

Large blocks are always sampled (weight 1): a stack of them is seen exactly once per call.
"""
import json
import math
import sys
import threading
import traceback

import pytest

import memscope_otel
from testhook import MEM

LARGE = 300_000
CAPTURED = []  # traceback's view at each allocation below, innermost first


def alloc_here():
    CAPTURED.append(list(reversed(traceback.extract_stack())))
    return bytearray(LARGE)  # the allocation: the line after the capture


ALLOC_LINE = alloc_here.__code__.co_firstlineno + 2


def nested_a():
    return nested_b()


def nested_b():
    return nested_c()


def nested_c():
    return alloc_here()


def comprehension():
    return [alloc_here() for _ in range(1)]


def generator():
    yield alloc_here()


def consume_generator():
    return list(generator())


async def coroutine_inner():
    return alloc_here()


async def coroutine_outer():
    return await coroutine_inner()


def run_coroutine():
    c = coroutine_outer()
    try:
        c.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine did not finish")


def recurse(n):
    if n == 0:
        return alloc_here()
    return recurse(n - 1)


def expected_stack(summary, depth):
    """traceback's frames, innermost first, with the innermost line moved to the allocation."""
    frames = [(f.filename, f.name, f.lineno) for f in summary[:depth]]
    frames[0] = (frames[0][0], frames[0][1], ALLOC_LINE)
    return frames


def recorded_stacks(tracker, since=None):
    """{stack as (file, co_name, line) frames: estimated allocations} of the stacks whose
    innermost frame is alloc_here's allocation (the sums are cumulative over the process: those
    of ``since``, an earlier result, are taken off and the stacks left at zero dropped)."""
    snap = memscope_otel.snapshot()
    tracker.resolver.refine_names(now=True)  # 3.10: qualified names from a walk of the heap
    found = {}
    for site_id, _nbytes, count, _ in snap.per_id:
        frames = tracker.resolver.stack(site_id)
        if (frames[0].file, frames[0].line) != (__file__, ALLOC_LINE):
            continue
        assert frames[0].function == "alloc_here"
        # traceback shows co_name; memscope the qualified name, whose last part is co_name
        key = tuple((f.file, f.function.rsplit(".", 1)[-1], f.line) for f in frames)
        found[key] = found.get(key, 0.0) + count
    if since is not None:
        found = {k: v - since.get(k, 0.0) for k, v in found.items() if v - since.get(k, 0.0) > 0}
    return found


def test_stacks_that_take_turns_keep_their_own_counts(start_tracker):
    """A thread remembers the outer frames of its last stack (sites.c, the stack memo): stacks
    that take turns, sharing some outer frames and not others, deeper and shallower than what it
    holds, each count exactly their own calls. Only large blocks are sampled (weight 1)."""
    tracker = start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0)
    CAPTURED.clear()
    before = recorded_stacks(tracker)

    def take_turns():
        for _ in range(30):  # one call a line: each call's own stack
            nested_a()
            recurse(2)
            recurse(12)
            comprehension()
            nested_c()
            recurse(2)

    # on a thread of its own, whose stacks are short enough for the memo to hold their outer
    # frames (pytest's own go deeper than it)
    thread = threading.Thread(target=take_turns)
    thread.start()
    thread.join()
    found = recorded_stacks(tracker, before)
    expected = {}
    for summary in CAPTURED:
        stack = tuple(expected_stack(summary, 64))
        expected[stack] = expected.get(stack, 0) + 1
    assert len(expected) == 6
    assert found == expected


@pytest.mark.parametrize("depth", [64, 5])
def test_stacks_are_tracebacks_view(start_tracker, depth):
    tracker = start_tracker(max_stack_depth=depth)
    CAPTURED.clear()
    before = recorded_stacks(tracker)
    keep = [nested_a(), comprehension(), consume_generator(), run_coroutine(), recurse(depth + 40)]
    assert len(CAPTURED) == 5 and keep
    found = recorded_stacks(tracker, before)
    # The bytearray's object and its buffer: one or two allocations of the block per call, at least one
    # of them large (always sampled), in the domain the version uses.
    for summary in CAPTURED:
        expected = tuple(expected_stack(summary, depth))
        assert expected in found, (f"traceback's stack {expected}\nnot among the recorded ones:\n"
                                   + "\n".join(map(str, found)))
        assert found[expected] >= 1.0
    # the recursion deeper than the limit kept its innermost `depth` frames, all of recurse but one
    deep = [k for k in found if len(k) == depth and k[1][1] == "recurse"]
    assert deep and all(f[1] == "recurse" for f in deep[0][1:])


def test_depth_one_is_the_innermost_frame(start_tracker):
    tracker = start_tracker(max_stack_depth=1)
    before = recorded_stacks(tracker)
    nested_a()
    recurse(3)
    found = recorded_stacks(tracker, before)
    assert list(found) == [((__file__, "alloc_here", ALLOC_LINE),)]


def leaf(rounds):
    from testhook import load

    load().lib.th_class_mix(MEM, rounds, 100, 2000)  # the shared site of two stacks


def stack_a(rounds):
    leaf(rounds)


def stack_b(rounds):
    leaf(rounds)


LEAF_LINE = leaf.__code__.co_firstlineno + 3


@pytest.mark.parametrize("seed", [20240611, 77])
def test_per_stack_estimates_are_unbiased_and_sum_to_the_site(start_tracker, th, seed):
    """th_class_mix makes, per round, two small (100 B) and two medium (2000 B) allocations in
    the MEM domain at LEAF_LINE, under Bernoulli sampling only (no frequency slots): each stack's
    estimated count is within five standard deviations of the exact 4 x rounds (the variance of
    a Horvitz-Thompson sum of N Bernoulli(p) draws of weight 1/p is N (1 - p) / p), its bytes
    likewise, and the site's sums are exactly the sums of its two stacks'."""
    small_rate, medium_rate = 0.01, 0.05
    tracker = start_tracker(small_sample_rate=small_rate, medium_sample_rate=medium_rate,
                            frequency_sample_interval=0, seed=seed)
    rounds = {"stack_a": 60_000, "stack_b": 20_000}
    before = {site_id: (nbytes, count) for site_id, nbytes, count, _ in memscope_otel.snapshot().per_id}
    stack_a(rounds["stack_a"])
    stack_b(rounds["stack_b"])
    snap = memscope_otel.snapshot()
    per_stack, site_ids = {}, []
    for site_id, nbytes, count, _ in snap.per_id:
        site = tracker.resolver.resolve(site_id)
        if (getattr(site, "file", None), getattr(site, "line", None), getattr(site, "domain", None)) != (
                __file__, LEAF_LINE, "mem"):
            continue
        site_ids.append(site_id)
        caller = tracker.resolver.stack(site_id)[1].function
        earlier = before.get(site_id, (0.0, 0.0))  # (the sums are cumulative over the process)
        per_stack[caller] = (nbytes - earlier[0], count - earlier[1])
    assert set(per_stack) == set(rounds), per_stack
    for caller, (nbytes, count) in per_stack.items():
        n = 2 * rounds[caller]  # per class
        var_count = n * (1 - small_rate) / small_rate + n * (1 - medium_rate) / medium_rate
        var_bytes = n * 100**2 * (1 - small_rate) / small_rate + n * 2000**2 * (1 - medium_rate) / medium_rate
        assert abs(count - 2 * n) <= 5 * math.sqrt(var_count), (caller, count, 2 * n, math.sqrt(var_count))
        assert abs(nbytes - n * 2100) <= 5 * math.sqrt(var_bytes), (caller, nbytes, n * 2100)
    # The site is the two stacks together, exactly (the same additions, in the same order).
    site = tracker.resolver.resolve(site_ids[0])
    assert all(tracker.resolver.resolve(i) == site for i in site_ids)
    expected = (0.0, 0.0, 0.0)
    for site_id, nbytes, count, live in snap.per_id:
        if site_id in site_ids:
            expected = (expected[0] + nbytes, expected[1] + count, expected[2] + live)
    assert snap.per_site[site] == expected


def dumps_big():
    return json.dumps(["x" * LARGE])  # the application's line: json's frames are the innermost


DUMPS_LINE = dumps_big.__code__.co_firstlineno + 1


@pytest.mark.parametrize("mode", ["innermost", "application"])
def test_site_frame_application_skips_the_standard_library(start_tracker, mode):
    tracker = start_tracker(site_frame=mode)
    text = dumps_big()
    assert len(text) > LARGE
    snap = memscope_otel.snapshot()
    sites = set()
    for site_id, _nbytes, _count, _ in snap.per_id:
        frames = tracker.resolver.stack(site_id)
        if any(f.file == __file__ and f.line == DUMPS_LINE for f in frames) and frames[0].file != __file__:
            site = tracker.resolver.resolve(site_id)
            sites.add((site.file, site.line))
            assert frames[0].file.endswith(("json/encoder.py", "json/__init__.py")), frames[0]
    assert sites, "no allocation inside json.dumps was sampled"
    if mode == "application":
        assert sites == {(__file__, DUMPS_LINE)}
    else:
        assert all(f.endswith(("json/encoder.py", "json/__init__.py")) for f, _ in sites)


def test_profile_kinds_hold_the_stacks(start_tracker):
    """memscope_otel.profile(kind): gzipped profile.proto with the stack's function names; a bad
    kind is refused."""
    import gzip

    start_tracker()
    keep = [nested_a() for _ in range(3)]
    for kind in ("alloc", "inuse", "heap"):
        raw = gzip.decompress(memscope_otel.profile(kind))
        for name in (b"nested_a", b"nested_b", b"nested_c", b"alloc_here"):
            assert name in raw, (kind, name)
        for sample_type in {"alloc": [b"alloc_space"], "inuse": [b"inuse_space"],
                            "heap": [b"alloc_space", b"inuse_space", b"inuse_objects"]}[kind]:
            assert sample_type in raw
    with pytest.raises(ValueError, match="profile kind"):
        memscope_otel.profile("cpu")
    assert keep


@pytest.mark.skipif(sys.version_info < (3, 11), reason="co_qualname")
def test_stack_frames_carry_qualified_names(start_tracker):
    tracker = start_tracker()

    class Holder:
        def make(self):
            return alloc_here()

    Holder().make()
    snap = memscope_otel.snapshot()
    names = {f.function for i, *_ in snap.per_id for f in tracker.resolver.stack(i)}
    assert "test_stack_frames_carry_qualified_names.<locals>.Holder.make" in names


# Run in a fresh interpreter: it fills the process-wide id table. 1,200 distinct callers, each
# kept alive, call the same 30-frame-deep chain: 37,000 nodes, more than the 32,768 ids.
OVERFLOW_PROGRAM = """
import json, sys
import memscope_otel

def deep(n, leaf):
    return leaf() if n <= 1 else deep(n - 1, leaf)

def alloc():
    return bytearray(100_000)  # always sampled

memscope_otel.start(adaptive=False)
tracker = memscope_otel.tracker.current()
namespace = {"deep": deep, "alloc": alloc}
for i in range(1200):
    exec(f"def caller_{i}():\\n    return deep(30, alloc)\\n", namespace)
keep = [namespace[f"caller_{i}"]() for i in range(1200)]
snap = memscope_otel.snapshot()
out = {"overflows": snap.counters.stack_overflows, "ids_used": snap.counters.ids_used, "cut": 0, "whole": 0,
       "alloc_count": 0.0, "other_overflow": 0.0}
for site_id, nbytes, count, _ in snap.per_id:
    site = tracker.resolver.resolve(site_id)
    frames = tracker.resolver.stack(site_id)
    if getattr(site, "function", None) == "alloc" and count > 0:
        out["alloc_count"] += count
        if [f.function for f in frames[1:]] == ["<overflow>"]:
            out["cut"] += 1
        elif any(f.function.startswith("caller_") for f in frames):
            out["whole"] += 1
    if getattr(site, "file", None) == "<overflow>":
        out["other_overflow"] += count
print(json.dumps(out))
"""


def test_a_full_stack_table_cuts_stacks_to_their_site_and_counts_them():
    import os
    import subprocess

    result = subprocess.run([sys.executable, "-c", OVERFLOW_PROGRAM], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OTEL_PYTHON_MEMSCOPE_DUMP_PATH=""))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["whole"] > 0 and out["cut"] > 0, out  # whole stacks first, then cut ones
    assert out["overflows"] >= 1200 - out["whole"], out  # every cut stack was counted
    # The site survives: every large block at alloc's line is counted under it, none under <overflow>.
    assert out["alloc_count"] >= 1200 and out["other_overflow"] == 0, out


BLOCK = 20_000  # large (over the 8192-byte critical size): always sampled, weight 1


def persistent_leaf():
    return bytearray(BLOCK)  # one site under every generated caller below


PERSISTENT_LINE = persistent_leaf.__code__.co_firstlineno + 1


def test_callers_whose_code_dies_take_their_stacks_along(start_tracker):
    """40,000 generated callers, each called once and dropped, call one long-lived function: each
    makes two nodes (its own frame, and the leaf under it), 80,000 in all, more than the table's
    32,768 ids. When a caller's code dies, the leaf under it (whose own code lives on) must leave
    with it and be reclaimed: no stack is ever cut, and the site's sums, kept across the reuse of
    its ids, count every block."""
    import gc

    tracker = start_tracker()
    reclaimed = tracker.resolver.reclaimed
    overflows = memscope_otel.snapshot().counters.stack_overflows
    site = None
    before = 0.0
    for site_key, (nbytes, _count, _live) in memscope_otel.snapshot().per_site.items():
        if getattr(site_key, "file", None) == __file__ and site_key.line == PERSISTENT_LINE:
            before += nbytes
    n = 0
    for _ in range(40):
        for _ in range(1000):
            namespace = {"leaf": persistent_leaf}
            exec(compile(f"def caller_{n}():\n    return leaf()\n", f"<generated-{n % 7}>", "exec"), namespace)
            namespace[f"caller_{n}"]()
            del namespace
            n += 1
        gc.collect()
        memscope_otel.snapshot()  # a drain: resolution and reclamation run after it
    for _ in range(3):
        snap = memscope_otel.snapshot()
    assert snap.counters.stack_overflows == overflows
    assert tracker.resolver.reclaimed - reclaimed >= 2 * n - 32768
    total = 0.0
    for site_key, (nbytes, _count, _live) in snap.per_site.items():
        if getattr(site_key, "file", None) == __file__ and site_key.line == PERSISTENT_LINE:
            site = site_key
            total += nbytes
    assert site is not None
    # every block (BLOCK + 1 bytes requested: weight 1), plus the small bytearray objects' estimate
    assert n * BLOCK <= total - before <= n * (BLOCK + 400), (total - before, n * BLOCK)
