"""Builds nativeprobe.c (and elf_check.c) with a C compiler, for the native domain's
tests: a shared object that calls each function of the C library's allocator with known sizes."""
import ctypes
import os
import pathlib
import shutil
import subprocess

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBE = HERE / "nativeprobe.c"
# Which function probe_alloc calls (nativeprobe.c's enum), in order.
ALL_FUNCTIONS = ("malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc")


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _defining_object(name):
    """The file of the shared object that defines the process's ``name`` (None if unknown)."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(process, name), ctypes.c_void_p).value
    except AttributeError:
        return None
    dladdr = process.dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    return info.dli_fname if dladdr(address, ctypes.byref(info)) else None


# The functions whose blocks the process's free can take: all of them with the C library's
# allocator; with one preloaded (LD_PRELOAD), those it defines itself (jemalloc has no pvalloc:
# the C library's would hand its block to jemalloc's free, which crashes without any tracker).
FUNCTIONS = tuple(f for f in ALL_FUNCTIONS if _defining_object(f) == _defining_object("free"))


def compiler():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build_probe(target, cc=None, flags=()):
    """nativeprobe.c as the shared object ``target`` (flags: linker options such as full RELRO)."""
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([cc or compiler(), "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared",
                    *flags, "-o", str(target), str(PROBE), "-pthread"], check=True, capture_output=True, text=True)
    return target


class Probe:
    """nativeprobe.c loaded with ctypes (after memscope started, if the caller likes)."""

    def __init__(self, path, mode=ctypes.DEFAULT_MODE):
        self.lib = ctypes.CDLL(str(path), mode=mode)
        lib = self.lib
        lib.probe_alloc.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.probe_free.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.probe_realloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_size_t]
        lib.probe_nothing.argtypes = [ctypes.c_int]
        lib.probe_loop.argtypes = [ctypes.c_size_t, ctypes.c_long]
        lib.probe_loop.restype = ctypes.c_size_t
        lib.probe_in_pthread.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
        lib.probe_free_address.restype = ctypes.c_void_p
        lib.probe_call_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

    def alloc(self, function, size, n):
        """n blocks from ``function`` (a name in FUNCTIONS); returns the array of pointers."""
        blocks = (ctypes.c_void_p * n)()
        got = self.lib.probe_alloc(ALL_FUNCTIONS.index(function), size, blocks, n)
        assert got == n, f"{function}({size}) failed {n - got} of {n} times"
        return blocks

    def free(self, blocks):
        self.lib.probe_free(blocks, len(blocks))

    def realloc(self, blocks, size):
        self.lib.probe_realloc(blocks, len(blocks), size)
