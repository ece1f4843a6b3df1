"""cffi build of the C sampler (``memscope_otel._memscope``).

The cdef is read from the marked block of ``csrc/memscope.h`` so that the C interface is written
down once. ``MEMSCOPE_SANITIZE=1`` builds the debug variant with AddressSanitizer and UBSan (CI
runs the stress test on it); ``MEMSCOPE_CFLAGS`` adds flags.
"""
import os
import pathlib
import re
import shlex
import sysconfig

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = ["hooks.c", "buffers.c", "rings.c", "live.c", "spill.c", "sites.c", "frames.c", "reduce.c", "child.c", "native.c", "stage.c", "clock.c", "sums.c", "window.c"]


def cdef_text():
    header = (CSRC / "memscope.h").read_text()
    match = re.search(r"/\* MEMSCOPE_CDEF_BEGIN \*/(.*)/\* MEMSCOPE_CDEF_END \*/", header, re.S)
    if match is None:
        raise RuntimeError("csrc/memscope.h lost its MEMSCOPE_CDEF markers")
    return match.group(1)


def compile_args():
    args = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-D_GNU_SOURCE"]
    if os.environ.get("MEMSCOPE_SANITIZE") == "1":
        args += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"]
    else:
        args += ["-O2"]
    args += shlex.split(os.environ.get("MEMSCOPE_CFLAGS", ""))
    return args


def link_args():
    args = ["-lm", "-pthread"]
    if os.environ.get("MEMSCOPE_SANITIZE") == "1":
        args += ["-fsanitize=address,undefined"]
    return args


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "memscope_otel._memscope",
    '#include "memscope.h"',
    sources=[str((CSRC / name).relative_to(ROOT)) for name in SOURCES],
    include_dirs=[str(CSRC), sysconfig.get_paths()["include"]],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
    py_limited_api=False,  # reads version-specific CPython internals (frames.c): not abi3
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
