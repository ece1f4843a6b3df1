"""start() and stop() racing native threads that call the RAW allocator without the GIL.

``PyMem_SetAllocator`` copies the allocator struct with plain stores, and a thread calling
``PyMem_RawMalloc`` without the GIL (C libraries' own threads do) loads the function and its
``ctx`` separately: it may call one allocator's function with the other's ``ctx``. Under an
allocator below memscope whose ``ctx`` matters (CPython's debug hooks: ``PYTHONMALLOC=debug`` and
``malloc_debug``) a wrong pairing is a crash or a corrupted block. Each variant runs in a fresh
interpreter (the variable only takes effect at startup), with four native threads hammering
malloc/realloc/calloc/free while the main thread starts and stops the hooks hundreds of times.
"""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import testhook
from memscope_otel import sampler
from memscope_otel.config import load_config

th = testhook.load()
config = load_config(adaptive=False)  # all three domains: the RAW hook goes in and out each cycle
assert th.lib.th_hammer_start(4) == 0
cycles, deadline = 0, time.monotonic() + float(sys.argv[2])
while cycles < int(sys.argv[3]) or time.monotonic() < deadline:
    sampler.start(config)
    sampler.stop()
    cycles += 1
bad = th.ffi.new("uint64_t *")
calls = th.lib.th_hammer_stop(bad)
print(cycles, calls, bad[0])
"""


@pytest.mark.parametrize("pythonmalloc", ["debug", "malloc_debug"])
def test_start_stop_racing_native_raw_calls(pythonmalloc, th):
    # (th: the test hook is built here first, not inside the child under the debug allocator)
    env = dict(os.environ, PYTHONMALLOC=pythonmalloc)
    result = subprocess.run([sys.executable, "-c", CHILD, str(HERE), "3", "300"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"PYTHONMALLOC={pythonmalloc}: exit status {result.returncode}\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    cycles, calls, bad = map(int, result.stdout.splitlines()[-1].split())
    assert cycles >= 300
    assert calls > 10 * cycles, "the native threads barely ran during the cycles"
    assert bad == 0, f"{bad} blocks came back from realloc with other contents"
