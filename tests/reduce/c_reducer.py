"""Access to the C reducers for the tests and the benchmark.

Prefers the installed extension (``memscope_otel._memscope``). Before the full C core is built there,
it compiles ``csrc/reduce.c`` alone with cffi into a cache folder, from the same header block, so the
tests always exercise the real C code.
"""
import os
import pathlib
import re
import sys
import tempfile

import numpy as np

from memscope_otel.records import DOMAINS, RECORD_DTYPE

ND = len(DOMAINS)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_IDS = 32768


def _standalone():
    from cffi import FFI

    header = (ROOT / "csrc" / "memscope.h").read_text()
    cdef = re.search(r"/\* MEMSCOPE_CDEF_BEGIN \*/(.*)/\* MEMSCOPE_CDEF_END \*/", header, re.S).group(1)
    # Only what reduce.c defines; the rest of the interface lives in other sources.
    keep = []
    for line in cdef.splitlines():
        if re.match(r"\s*(int|void|size_t|uint32_t)\s+ms_", line) and "ms_reduce" not in line:
            continue
        keep.append(line)
    ffi = FFI()
    ffi.cdef("\n".join(keep))
    build = pathlib.Path(tempfile.gettempdir()) / f"memscope_reduce_{os.getuid()}_{sys.version_info[0]}{sys.version_info[1]}"
    build.mkdir(exist_ok=True)
    ffi.set_source("_memscope_reduce_only", '#include "memscope.h"',
                   sources=[str(ROOT / "csrc" / "reduce.c")], include_dirs=[str(ROOT / "csrc")],
                   extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2",
                                       "-fvisibility=hidden", "-D_GNU_SOURCE"])
    ffi.compile(tmpdir=str(build), verbose=False)
    sys.path.insert(0, str(build))
    import _memscope_reduce_only as mod  # noqa: E402

    return mod.ffi, mod.lib


def load():
    """(ffi, lib) with ms_reduce, ms_reduce_scalar, ms_reduce_simd and friends."""
    try:
        from memscope_otel._memscope import ffi, lib

        if hasattr(lib, "ms_reduce_scalar"):
            return ffi, lib
    except ImportError:
        pass
    return _standalone()


class Summary:
    """An ms_summary_t with its per-id arrays, owned by numpy."""

    def __init__(self, ffi):
        self.ffi = ffi
        self.c = ffi.new("ms_summary_t *")
        self.id_count = np.zeros(MAX_IDS)
        self.id_bytes = np.zeros(MAX_IDS)
        self.id_live_bytes = np.zeros(MAX_IDS)
        self.c.id_count = ffi.cast("double *", self.id_count.ctypes.data)
        self.c.id_bytes = ffi.cast("double *", self.id_bytes.ctypes.data)
        self.c.id_live_bytes = ffi.cast("double *", self.id_live_bytes.ctypes.data)

    def reduce(self, fn, records):
        records = np.ascontiguousarray(records, dtype=RECORD_DTYPE)
        ptr = self.ffi.cast("const ms_record_t *", records.ctypes.data) if len(records) else self.ffi.NULL
        fn(ptr, len(records), self.c)
        return self

    def arrays(self):
        """Every field as numpy arrays (copies), for comparisons."""
        buf = lambda field, shape: np.frombuffer(self.ffi.buffer(field), dtype=np.float64).reshape(shape).copy()
        return {
            "count": buf(self.c.count, (ND, 3)),
            "bytes": buf(self.c.bytes, (ND, 3)),
            "bucket_count": buf(self.c.bucket_count, (ND, 65)),
            "live_bytes": buf(self.c.live_bytes, (ND,)),
            "live_count": buf(self.c.live_count, (ND,)),
            "records": int(self.c.records),
            "free_records": int(self.c.free_records),
            "id_count": self.id_count.copy(),
            "id_bytes": self.id_bytes.copy(),
            "id_live_bytes": self.id_live_bytes.copy(),
        }
