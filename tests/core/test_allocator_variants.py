"""The exact-counter tests again, under the other allocators CPython can run with.

Under ``PYTHONMALLOC=debug`` memscope's next allocator is CPython's debug hooks (not one of its
plain allocators), so every free takes the guarded general path; under ``PYTHONMALLOC=malloc``
(and 3.13's ``mimalloc``) nothing is handed from one domain to another. Each runs in a fresh interpreter, as the variable
only takes effect at startup.
"""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent


VARIANTS = ["debug", "malloc"] + (["mimalloc"] if sys.version_info >= (3, 13) else [])


def unavailable(reason):
    """Skips, or fails under MEMSCOPE_REQUIRE_INTEGRATION=1: the suite's one rule for a missing
    prerequisite, in tests/integration/conftest.py (imported only here, on the skip path: that
    package pulls in grpc, which the exact-counter tests have no use for)."""
    tests = str(HERE.parent)
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from integration.conftest import unavailable as integration_unavailable

    integration_unavailable(reason)


@pytest.mark.parametrize("pythonmalloc", VARIANTS)
def test_exact_counts_under_other_allocators(pythonmalloc):
    env = dict(os.environ, PYTHONMALLOC=pythonmalloc)
    probe = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        unavailable(f"this interpreter was built without PYTHONMALLOC={pythonmalloc}: {probe.stderr.strip()[-200:]}")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_exact_counters.py"],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"PYTHONMALLOC={pythonmalloc}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
