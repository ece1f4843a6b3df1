"""The native domain against independent exact counts: numpy's own record of its array data
(numpy reports every data block in its tracemalloc domain) and nativeprobe.c's known calls."""
import concurrent.futures
import ctypes
import gc
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import memscope_otel
from memscope_otel import sampler
from memscope_otel.records import DOMAINS
from memscope_otel.sites import MS_FIRST_DYNAMIC_ID, MS_ID_NATIVE, MS_ID_OVERFLOW
from nativeprobe import ALL_FUNCTIONS, FUNCTIONS, Probe, build_probe

NATIVE = DOMAINS.index("native")
# Where numpy's array data lands: up to numpy 2.4 its default handler calls the C library's
# malloc/calloc (the native domain); numpy 2.5 calls PyMem_RawMalloc/RawCalloc (the RAW domain,
# seen before the native domain existed). The numpy checks count both, which is what a user sees
# in the metrics, and check that the blocks are in the domain of the numpy at hand.
RAW = DOMAINS.index("raw")
NUMPY_DATA = RAW if tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 5) else NATIVE
DATA_DOMAINS = (NATIVE, RAW)
LARGE = 2
NUMPY_TRACE_DOMAIN = 389047  # numpy's tracemalloc domain (NPY_TRACE_DOMAIN)


@pytest.fixture(scope="module")
def probe_path(tmp_path_factory):
    return build_probe(tmp_path_factory.mktemp("probe") / "libnativeprobe.so")


class native:
    """The native domain's (allocations per class, bytes per class, deallocations) in one read
    of the counters. Kept as Python ints and made numpy arrays only when indexed: numpy takes its
    arrays' data from malloc, which would count in the window being measured."""

    def __init__(self, counters):
        self.raw = (counters.allocations.tolist()[NATIVE], counters.bytes.tolist()[NATIVE],
                    counters.deallocations.tolist()[NATIVE])

    def __getitem__(self, i):
        return np.array(self.raw[i], dtype=np.int64) if i < 2 else self.raw[i]


def array_data(counters, domains=DATA_DOMAINS):
    """(large allocations, large bytes, deallocations) summed over ``domains``, as Python ints."""
    allocations, nbytes, frees = counters.allocations.tolist(), counters.bytes.tolist(), counters.deallocations.tolist()
    return (sum(allocations[d][LARGE] for d in domains), sum(nbytes[d][LARGE] for d in domains),
            sum(frees[d] for d in domains))


def window(work):
    """The native domain's (large allocations, large bytes) over work(), and work's result."""
    c0 = native(sampler.read_counters())
    result = work()
    c1 = native(sampler.read_counters())
    return c1.raw[0][LARGE] - c0.raw[0][LARGE], c1.raw[1][LARGE] - c0.raw[1][LARGE], result


def numpy_window(work):
    """The array-data domains' (large allocations, large bytes) over work(), and work's
    result; asserts that numpy's domain alone has them."""
    c0 = sampler.read_counters()
    result = work()
    c1 = sampler.read_counters()
    before, before_numpy, after, after_numpy = (array_data(c0), array_data(c0, (NUMPY_DATA,)), array_data(c1),
                                                array_data(c1, (NUMPY_DATA,)))
    assert after[:2] != before[:2] and after_numpy[0] - before_numpy[0] == after[0] - before[0], \
        f"numpy {np.__version__}'s array data expected in the {DOMAINS[NUMPY_DATA]} domain"
    return after[0] - before[0], after[1] - before[1], result


def numpy_record():
    """(blocks, bytes) of array data that numpy reports live in its tracemalloc domain."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, NUMPY_TRACE_DOMAIN)])
    stats = snapshot.statistics("filename")
    return sum(s.count for s in stats), sum(s.size for s in stats)


def make_arrays():
    # Data blocks of 8 KiB and more: the large class, which no other allocation in the window
    # (numpy's small dimension buffers, its cache) reaches.
    # (No temporaries: numpy elides `np.empty(n) * 2`'s temporary only when it can see the call
    # came straight from the interpreter, which a preloaded sanitizer runtime changes.)
    return [np.zeros(1_000_000) for _ in range(5)] + [np.arange(100_000, dtype=np.float64) for _ in range(10)] \
        + [np.ones((64, 64)) for _ in range(7)]


def test_python_constants_match_the_c_side():
    _, lib = sampler._lib()
    assert (MS_ID_NATIVE, MS_ID_OVERFLOW, MS_FIRST_DYNAMIC_ID) == (lib.MS_ID_NATIVE, lib.MS_ID_OVERFLOW,
                                                                   lib.MS_FIRST_DYNAMIC_ID)
    assert DOMAINS.index("native") == lib.MS_DOMAIN_NATIVE and len(DOMAINS) == lib.MS_DOMAINS


def test_numpy_arrays_equal_numpy_own_record_in_every_kind_of_thread(start_tracker):
    """Main thread, a thread started before start(), one started after, a thread pool: the large
    native allocations and bytes over each window equal the blocks numpy tracks, and the frees
    of those arrays are native deallocations."""
    go, done = threading.Event(), threading.Event()
    results = {}

    def in_thread(name):
        go.wait()
        results[name] = measure()

    def measure():
        kept = []
        allocs, nbytes, _ = numpy_window(lambda: kept.extend(make_arrays()))
        blocks, traced = numpy_record()
        d0 = array_data(sampler.read_counters(), (NUMPY_DATA,))[2]
        kept.clear()
        d1 = array_data(sampler.read_counters(), (NUMPY_DATA,))[2]
        return allocs, nbytes, blocks, traced, d1 - d0

    early = threading.Thread(target=in_thread, args=("before start",))
    early.start()
    start_tracker()
    tracemalloc.start()
    try:
        results["main"] = measure()
        go.set()
        early.join()
        late = threading.Thread(target=lambda: results.__setitem__("after start", measure()))
        late.start()
        late.join()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results["pool"] = pool.submit(measure).result()
    finally:
        tracemalloc.stop()
        done.set()
    for name, (allocs, nbytes, blocks, traced, frees) in results.items():
        assert blocks == 22 and traced == 5 * 8_000_000 + 10 * 800_000 + 7 * 32768, name
        assert (allocs, nbytes) == (blocks, traced), name
        assert frees >= blocks, name  # every array's data block, at least
    # In one window, nothing but the arrays' blocks is freed natively (the RAW domain has the
    # interpreter's own frees besides).
    if NUMPY_DATA == NATIVE:
        assert results["main"][4] == 22


def test_creating_lines_are_the_sites_and_live_follows_the_arrays(start_tracker):
    # Only large blocks are sampled (weight 1): the line's sums are exact counts. (At the default
    # rates numpy's per-array bookkeeping, small blocks at the same line in the RAW domain with
    # numpy >= 2.5, may be sampled at weight 1000: seen +16,000 B.)
    start_tracker(small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0)

    def make():
        return [np.empty(250_000) for _ in range(8)]  # this line: 8 x 2 MB

    line = make.__code__.co_firstlineno + 1
    kept = make()
    snap = memscope_otel.snapshot()
    here = [(site, sums) for site, sums in snap.per_site.items()
            if getattr(site, "domain", None) == DOMAINS[NUMPY_DATA] and site.file == __file__ and site.line == line]
    assert len(here) == 1, snap.per_site
    (site, (est_bytes, est_count, live)), = here
    assert ".make" in site.function  # (3.10, 3.11: inside its <listcomp>)
    assert (est_bytes, est_count, live) == (16_000_000.0, 8.0, 16_000_000.0)
    # The site's live estimate follows them exactly (large blocks: weight 1).
    live_before = snap.live_bytes[NUMPY_DATA]
    assert live_before >= 16_000_000
    del kept
    gc.collect()
    after = memscope_otel.snapshot()
    assert after.per_site.get(site, (0, 0, 0.0))[2] == 0.0
    if NUMPY_DATA == NATIVE:
        # The domain's live estimate drops by them exactly: only large blocks are sampled, and
        # nothing else in the window takes one from the C library. (The RAW domain has the whole
        # interpreter's besides.)
        assert live_before - after.live_bytes[NATIVE] == 16_000_000


def test_each_function_counted_exactly(tracker, probe_path):
    """Every allocating function with known sizes of each class, loaded after start(), from
    Python (ctypes releases the GIL: the site is <native>) and from a native pthread."""
    if not os.environ.get("LD_PRELOAD"):
        assert FUNCTIONS == ALL_FUNCTIONS  # the C library has them all
    assert FUNCTIONS[:7] == ALL_FUNCTIONS[:7]  # (jemalloc and tcmalloc: all but pvalloc at least)
    probe = Probe(probe_path)
    probe.lib.probe_nothing(1)  # (ctypes' first call sets itself up)
    for function in FUNCTIONS:
        for size in (320, 3008, 40000):
            c0 = native(sampler.read_counters())
            blocks = probe.alloc(function, size, 50)
            c1 = native(sampler.read_counters())
            probe.free(blocks)
            c2 = native(sampler.read_counters())
            assert (c1[0] - c0[0]).sum() == 50 and (c1[1] - c0[1]).sum() == 50 * size, (function, size)
            assert c1[2] == c0[2] and c2[2] - c1[2] == 50, (function, size)
            assert (c2[0] == c1[0]).all(), (function, size)
    for function in FUNCTIONS:
        c0 = native(sampler.read_counters())
        assert probe.lib.probe_in_pthread(ALL_FUNCTIONS.index(function), 40000, 30) == 30
        c1 = native(sampler.read_counters())
        # plus the thread's own calloc(30, 8) and its free
        assert (c1[0] - c0[0]).sum() == 31 and (c1[1] - c0[1]).sum() == 30 * 40000 + 240, function
        assert c1[2] - c0[2] == 31, function
    sites = {site.file for site in memscope_otel.snapshot().per_site if getattr(site, "domain", None) == "native"}
    assert "<native>" in sites


def test_realloc_and_calls_that_allocate_nothing(tracker, probe_path):
    probe = Probe(probe_path)
    probe.lib.probe_nothing(1)
    blocks = probe.alloc("malloc", 100, 40)
    c0 = native(sampler.read_counters())
    probe.realloc(blocks, 50000)  # moves or grows: a deallocation and an allocation each
    c1 = native(sampler.read_counters())
    assert (c1[0] - c0[0]).sum() == 40 and c1[0][LARGE] - c0[0][LARGE] == 40
    assert (c1[1] - c0[1]).sum() == 40 * 50000 and c1[2] - c0[2] == 40
    probe.realloc(blocks, 0)  # the C library frees and returns NULL: a deallocation only
    c2 = native(sampler.read_counters())
    got = probe.lib.probe_nothing(100)  # free(NULL) and an overflowing calloc
    c3 = native(sampler.read_counters())
    # (compared only now: numpy's own temporaries are native allocations too)
    assert (c2[0] == c1[0]).all() and (c2[1] == c1[1]).all() and c2[2] - c1[2] == 40
    assert all(b is None for b in blocks)
    assert got == 0 and (c3[0] == c2[0]).all() and c3[2] == c2[2]
    # and the live estimate lost the 40 large blocks again
    assert memscope_otel.snapshot().live_bytes[NATIVE] < 1_000_000


def test_late_library_dlclose_stop_and_restart(start_tracker, probe_path, tmp_path):
    """A library loaded after start() is counted from its first call; after its dlclose nothing
    crashes and other objects are still counted; after stop() nothing is counted; after a
    second start() everything is again. A free reaching the wrapper after stop() passes."""
    import _ctypes

    start_tracker()
    other = Probe(build_probe(tmp_path / "libother.so"))
    late = Probe(probe_path)
    a, b, _ = window(lambda: late.free(late.alloc("malloc", 20000, 10)))
    assert (a, b) == (10, 200000)
    _ctypes.dlclose(late.lib._handle)
    memscope_otel.snapshot()  # a drain: the drainer's poll sees the object gone
    a, b, _ = window(lambda: other.free(other.alloc("calloc", 20000, 10)))
    assert (a, b) == (10, 200000)
    a, b, _ = numpy_window(lambda: np.zeros(10_000))  # (numpy: imported before start())
    assert (a, b) == (1, 80_000)

    saved_free = other.lib.probe_free_address()  # the wrapper, as other's GOT holds it now
    blocks = other.alloc("malloc", 20000, 5)
    counters = sampler.read_counters()
    assert counters.native_objects >= 2 and counters.native_entries >= 9
    memscope_otel.stop()
    assert sampler.read_counters().native_entries == 0
    a, b, _ = window(lambda: other.free(other.alloc("malloc", 20000, 10)))
    assert (a, b) == (0, 0)
    before = native(sampler.read_counters())
    for block in blocks:
        other.lib.probe_call_free(saved_free, block)  # through memscope's wrapper, stopped
    assert native(sampler.read_counters())[2] == before[2]

    start_tracker()
    a, b, _ = window(lambda: other.free(other.alloc("malloc", 20000, 10)))
    assert (a, b) == (10, 200000)


@pytest.mark.skipif(not hasattr(os, "RTLD_DEEPBIND") or "libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="RTLD_DEEPBIND (refused by the sanitizer runtime)")
def test_deepbind_and_local_objects(tracker, tmp_path):
    for mode, name in ((os.RTLD_LOCAL | os.RTLD_DEEPBIND, "deep"), (os.RTLD_LOCAL, "local")):
        probe = Probe(build_probe(tmp_path / f"lib{name}.so"), mode=mode)
        a, b, _ = window(lambda: probe.free(probe.alloc("malloc", 20000, 10)))
        assert (a, b) == (10, 200000), name


def test_forked_child_counts_native_calls(tracker, probe_path):
    probe = Probe(probe_path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(read)
            a, b, _ = window(lambda: probe.free(probe.alloc("calloc", 800_000, 4)))
            os.write(write, f"{a} {b}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    assert text == "4 3200000"


def test_native_off_counts_nothing_and_patches_nothing(start_tracker, probe_path):
    start_tracker(domains="obj,mem,raw")
    probe = Probe(probe_path)
    counters = sampler.read_counters()
    assert counters.native_entries == 0
    a, b, _ = window(lambda: probe.free(probe.alloc("malloc", 20000, 10)))
    assert (a, b) == (0, 0)


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="the sanitizer runtime's dlopen interceptor becomes the caller whose RUNPATH is searched")
def test_bare_library_name_still_found_through_its_callers_runpath(tracker, tmp_path):
    """dlopen of a bare name searches the caller's RUNPATH: memscope's dlopen must not become the
    caller. The object it loads is counted from the next drain (the drainer's poll)."""
    hidden = tmp_path / "hidden"
    build_probe(hidden / "libbare.so")
    loader = Probe(build_probe(tmp_path / "libloader.so", flags=[f"-Wl,-rpath,{hidden}", "-Wl,--enable-new-dtags"]))
    loader.lib.probe_dlopen.restype = ctypes.c_void_p
    loader.lib.probe_dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    handle = loader.lib.probe_dlopen(b"libbare.so", os.RTLD_NOW)
    assert handle, "the loader's RUNPATH was not searched"
    memscope_otel.snapshot()
    bare = Probe(hidden / "libbare.so")  # the same object, by path
    a, b, _ = window(lambda: bare.free(bare.alloc("malloc", 20000, 3)))
    assert (a, b) == (3, 60000)


DEADLOCK_PROGRAM = r"""
import ctypes, os, sys, threading, time
import memscope_otel
from opentelemetry.sdk.metrics import MeterProvider
here = sys.argv[1]
os.environ["INNER_LIB"] = os.path.join(here, "libinner.so")
loader = ctypes.CDLL(os.path.join(here, "libloader.so"), mode=ctypes.RTLD_GLOBAL)
loader.load.restype = ctypes.c_void_p
loader.load.argtypes = [ctypes.c_char_p]
memscope_otel.start(meter_provider=MeterProvider(), drain_interval_ms=60000, adaptive=False)
# A Python thread loads a library with the GIL released (ctypes releases it around the call);
# its constructor, slowly, loads a plugin by path through an object memscope patched, while the
# main thread, holding the GIL, loads another library, as an import does.
loaded = []
thread = threading.Thread(target=lambda: loaded.append(loader.load(os.path.join(here, "libctor.so").encode())))
thread.start()
time.sleep(0.1)  # into the constructor
ctypes.CDLL(os.path.join(here, "libother.so"))
thread.join()
memscope_otel.stop()
print("done", bool(loaded[0]))
"""


def test_dlopen_inside_a_constructor_racing_an_import_does_not_deadlock(tmp_path):
    """The loader's lock is held through a constructor; a pass must never wait for the GIL there
    (the GIL's holder may be waiting for the loader's lock to import)."""
    cc = os.environ.get("CC") or "cc"

    def shared(name, source, *flags):
        c = tmp_path / f"{name}.c"
        c.write_text(source)
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / f"lib{name}.so"), str(c), *flags],
                       check=True, capture_output=True, text=True)

    shared("loader", "#include <dlfcn.h>\nvoid *load(const char *p) { void *volatile h = dlopen(p, RTLD_NOW | RTLD_LOCAL); return h; }\n")
    shared("inner", "int inner(void) { return 1; }\n")
    shared("other", "int other(void) { return 2; }\n")
    shared("ctor", "#include <stdlib.h>\n#include <unistd.h>\nextern void *load(const char *);\n"
                   "__attribute__((constructor)) static void init(void) { usleep(300000); load(getenv(\"INNER_LIB\")); }\n",
           f"-L{tmp_path}", "-lloader", f"-Wl,-rpath,{tmp_path}")
    proc = subprocess.run([sys.executable, "-c", DEADLOCK_PROGRAM, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "done True", proc.stdout + proc.stderr
