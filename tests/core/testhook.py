"""Builds and loads testhook.c (the suite's own exact allocation counter and C workloads).

The extension is compiled with cffi the first time a session needs it, into a cache directory
keyed by the source text and the interpreter, so later sessions (and the sanitizer run) reuse it.
Everything here runs with ordinary Python; the counter itself is in C so that it can sit in the
allocator chain.
"""
import contextlib
import hashlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "testhook.c"
HEADER = HERE / "testhook.h"
MODULE = "_memscope_testhook"
DOMAINS = ("obj", "mem", "raw")
OBJ, MEM, RAW = 0, 1, 2
SMALL, MEDIUM, LARGE = 0, 1, 2


def _cdef():
    text = HEADER.read_text()
    return re.search(r"/\* TESTHOOK_CDEF_BEGIN \*/(.*)/\* TESTHOOK_CDEF_END \*/", text, re.S).group(1)


def _cache_dir():
    key = hashlib.sha256(SOURCE.read_bytes() + HEADER.read_bytes() + sys.version.encode()
                         + sys.executable.encode()).hexdigest()[:16]
    return HERE / "_build" / key


def _build(target):
    """Generates the cffi C source and compiles it with the C compiler directly (no setuptools,
    which Python 3.12+ no longer ships in a venv)."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(_cdef())
    ffi.set_source(MODULE, '#include "testhook.h"')
    target.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    glue = work / (MODULE + ".c")
    ffi.emit_c_code(str(glue))
    output = work / (MODULE + sysconfig.get_config_var("EXT_SUFFIX"))
    compiler = os.environ.get("CC") or "cc"
    common = [compiler, "-fPIC", "-std=c11", "-O1", "-D_GNU_SOURCE", "-I", str(HERE),
              "-I", sysconfig.get_paths()["include"]]
    commands = [
        # Our own C is held to the project's standard; cffi's generated glue is not ours.
        common + ["-Wall", "-Wextra", "-Werror", "-c", str(SOURCE), "-o", str(work / "testhook.o")],
        common + ["-c", str(glue), "-o", str(work / "glue.o")],
        [compiler, "-shared", str(work / "glue.o"), str(work / "testhook.o"), "-o", str(output), "-pthread"],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the test hook failed:\n{' '.join(command)}\n{result.stderr}")
    try:
        os.rename(work, target)  # atomic: a concurrent build that won keeps its copy
    except OSError:
        return output
    return target / output.name


def load():
    """The compiled module (``.ffi``, ``.lib``), built on first use."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    target = _cache_dir()
    found = sorted(target.glob(MODULE + "*.so")) if target.exists() else []
    if not found:
        found = [_build(target)]
    spec = importlib.util.spec_from_file_location(MODULE, found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module


@dataclass
class Counts:
    """Exact counters for the three allocator domains (indexed obj, mem, raw)."""

    allocations: np.ndarray  # (3, 3)
    bytes: np.ndarray  # (3, 3)
    deallocations: np.ndarray  # (3,)
    by_size: np.ndarray  # (3, 65)

    def __sub__(self, other):
        return Counts(self.allocations - other.allocations, self.bytes - other.bytes,
                      self.deallocations - other.deallocations, self.by_size - other.by_size)


def _arr(ffi, field, shape):
    return np.frombuffer(ffi.buffer(field), dtype=np.uint64).reshape(shape).astype(np.int64)


def counts_from_memscope(c):
    """Counts of the allocator domains from a memscope ``ms_counters_t *``, plus the manual
    domain's allocations (which the workloads never make) for a separate check."""
    from memscope_otel._memscope import ffi

    from memscope_otel.records import DOMAINS

    nd = len(DOMAINS)
    allocations = _arr(ffi, c.allocations, (nd, 3))
    by_size = _arr(ffi, c.by_size, (nd, 65))
    return Counts(allocations[:3], _arr(ffi, c.bytes, (nd, 3))[:3], _arr(ffi, c.deallocations, (nd,))[:3],
                  by_size[:3]), int(allocations[DOMAINS.index("manual")].sum())


def counts_from_hook(c):
    ffi = load().ffi
    return Counts(_arr(ffi, c.allocations, (3, 3)), _arr(ffi, c.bytes, (3, 3)), _arr(ffi, c.deallocations, (3,)),
                  _arr(ffi, c.by_size, (3, 65)))


class ExactWindow:
    """Counts one window of work with both memscope and the test hook.

    ``begin()`` and ``end()`` each take memscope's snapshot and switch the hook's counting inside
    a single C call, so no allocation falls between the two counters' edges. The hook must be
    installed on top of memscope's hooks (``installed_on_top``).
    """

    def __init__(self):
        from memscope_otel._memscope import ffi, lib

        self._mffi = ffi
        self._snapshot_fn = int(ffi.cast("uintptr_t", ffi.addressof(lib, "ms_read_counters")))
        self._before = ffi.new("ms_counters_t *")
        self._after = ffi.new("ms_counters_t *")
        self._mine = load().ffi.new("th_counts_t *")

    def _addr(self, p):
        return int(self._mffi.cast("uintptr_t", p))

    def begin(self):
        load().lib.th_begin(self._snapshot_fn, self._addr(self._before))

    def end(self):
        """Returns (memscope's counts in the window, the hook's counts, memscope's manual-domain
        allocations in the window)."""
        load().lib.th_end(self._snapshot_fn, self._addr(self._after), self._mine)
        after, manual_after = counts_from_memscope(self._after)
        before, manual_before = counts_from_memscope(self._before)
        return after - before, counts_from_hook(self._mine), manual_after - manual_before


@contextlib.contextmanager
def _layer(install, uninstall, what):
    """Installs one of testhook.c's allocator layers for the block's duration."""
    if install() != 0:
        raise RuntimeError(f"{what} was already installed")
    try:
        yield load().lib
    finally:
        assert uninstall() == 0, f"something was installed over {what} and left there"


def installed_on_top(critical_size=8192):
    """Installs the counting hook over the current allocators for the block's duration."""
    lib = load().lib
    return _layer(lambda: lib.th_install(critical_size), lib.th_uninstall, "the test hook")


def failing_below(fail_size):
    """Installs, under whatever is started inside the block (memscope), an allocator layer that
    fails every malloc, calloc and realloc of ``fail_size`` bytes. Stop memscope inside the block:
    the layer can only be unlinked from the top of the chain."""
    lib = load().lib
    return _layer(lambda: lib.th_install_failing(fail_size), lib.th_uninstall_failing, "the failing layer")


def allocator(domain):
    """The (ctx, malloc, calloc, realloc, free) addresses installed now for a domain."""
    th = load()
    out = th.ffi.new("th_allocator_t *")
    th.lib.th_get_allocator(domain, out)
    return (out.ctx, out.malloc, out.calloc, out.realloc, out.free)


def os_thread_count():
    return len(os.listdir("/proc/self/task"))


def wait_os_threads(expected, timeout=10.0):
    """Waits until the process has ``expected`` OS threads: ``Thread.join()`` can return while the
    thread is still freeing its thread state, which would otherwise land outside a window."""
    deadline = time.monotonic() + timeout
    while os_thread_count() > expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"threads did not exit: {os_thread_count()} > {expected}")
        time.sleep(0.001)


def _thread_state(native_id):
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_thread_idle(thread, timeout=10.0):
    """Waits until ``thread`` (memscope's drainer) is blocked in its sleep (``sampler.wait_for_work``,
    in C with the GIL released).

    memscope ignores its drainer's allocations only from the first line of the drainer's loop;
    the thread's start-up would otherwise race with a measurement window. Sleeping in the kernel
    with its innermost Python frame in ``wait_for_work``, several polls in a row, means it is
    parked in the semaphore wait.
    """
    import sys

    deadline = time.monotonic() + timeout
    stable = 0
    while stable < 5:
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {thread.name} never went idle")
        frame = sys._current_frames().get(thread.ident)
        parked = (frame is not None and frame.f_code.co_name == "wait_for_work"
                  and frame.f_code.co_filename.endswith("sampler.py")
                  and _thread_state(thread.native_id) == "S")
        stable = stable + 1 if parked else 0
        del frame
        time.sleep(0.002)
