"""The native domain's tests again, with an allocator preloaded by LD_PRELOAD (Debian's jemalloc
and tcmalloc): the GOT entries memscope finds point at the preloaded allocator, and its wrappers
must call whatever the entry pointed to; counts stay exact. Each runs in a fresh interpreter,
as a preload only takes effect at startup."""
import glob
import os
import pathlib
import subprocess
import sys

import pytest

from test_allocator_variants import unavailable

HERE = pathlib.Path(__file__).resolve().parent
ALLOCATORS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}


def find(library):
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        hits = glob.glob(os.path.join(directory, library))
        if hits:
            return hits[0]
    return None


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="the sanitizer runtime is the allocator")
@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_native_domain_under_a_preloaded_allocator(allocator):
    library = find(ALLOCATORS[allocator])
    if library is None:
        unavailable(f"{ALLOCATORS[allocator]} is missing (Debian packages libjemalloc2, libtcmalloc-minimal4)")
    env = dict(os.environ, LD_PRELOAD=library)
    # The preload took: the process maps the allocator.
    maps = subprocess.run([sys.executable, "-c", "print(open('/proc/self/maps').read())"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert maps.returncode == 0 and os.path.basename(library) in maps.stdout, maps.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_native_domain.py"],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"LD_PRELOAD={library}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout[-2000:]
