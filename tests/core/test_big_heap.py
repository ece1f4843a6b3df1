"""A big heap: 150,000 live 9 KiB blocks beside a million small ones.

Large blocks are always sampled, so the live table must hold every live one: it grows to its
budget (LIVE_TABLE_MAX_ENTRIES), and past it samples itself, each block entering with probability
2^-k and a live weight 2^k times its own. Either way the live estimate is compared with
tracemalloc's count of the same window (started first, so memscope's hooks sit above it and its
own bookkeeping is not counted by memscope), within 4 standard deviations of the estimator:

    Var = sum over small blocks of s^2 (1/(p q) - 1) + sum over large blocks of s^2 (1/q - 1)

where p is the small rate and q = 2^-k the table's inclusion probability (both exact: every
block kept through the window is sampled independently with probability p q, k being the
table's final exponent). Blocks the frequency guarantee samples have weight 1 and less variance:
the formula is an upper bound. The program's other live blocks of the window (the lists holding
the blocks, a few interpreter objects) are large or few; the slack below covers them.
"""
import subprocess
import sys

import pytest

CHILD = r"""
import sys, tracemalloc
budget = int(sys.argv[1])
tracemalloc.start()
import memscope_otel
from memscope_otel import sampler
from memscope_otel.config import load_config
config = load_config(adaptive=False, drain_interval_ms=60000, live_table_max_entries=budget)
memscope_otel.start(**{k: getattr(config, k) for k in ("adaptive", "drain_interval_ms", "live_table_max_entries")})
def live():
    return float(memscope_otel.snapshot().live_bytes[:3].sum())
smalls = [None] * 1_000_000
larges = [None] * 150_000
est0, true0 = live(), tracemalloc.get_traced_memory()[0]
for i in range(1_000_000):
    smalls[i] = bytes(16 + i % 64)
for i in range(150_000):
    larges[i] = bytes(9216)
est1, true1 = live(), tracemalloc.get_traced_memory()[0]
c = sampler.read_counters()
q = 2.0 ** -c.live_inclusion_log2
p = config.small_sample_rate
small_var = sum(sys.getsizeof(s) ** 2 for s in smalls) * (1 / (p * q) - 1)
large_var = sum(sys.getsizeof(b) ** 2 for b in larges) * (1 / q - 1)
print("estimated:", est1 - est0)
print("true:", true1 - true0)
print("sigma:", (small_var + large_var) ** 0.5)
print("inclusion_log2:", c.live_inclusion_log2)
print("capacity:", c.live_capacity)
print("untracked:", c.live_untracked)
memscope_otel.stop()
"""

# 262,144 entries (the default): every large block fits. 16,384: the table samples itself.
@pytest.mark.parametrize("budget", [262_144, 16_384], ids=["within the budget", "past the budget"])
def test_live_estimate_of_a_big_heap(budget):
    result = subprocess.run([sys.executable, "-c", CHILD, str(budget)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    found = {k: float(v) for k, v in (line.split(": ") for line in result.stdout.splitlines())}
    true, estimated, sigma = found["true"], found["estimated"], found["sigma"]
    assert true > 150_000 * 9216
    slack = 1 << 20  # the window's own bookkeeping objects, the same in both counts up to this
    assert abs(estimated - true) <= 4 * sigma + slack, found
    assert found["capacity"] <= budget, "the table grew past its budget"
    if budget == 262_144:
        assert found["inclusion_log2"] == 0 and found["untracked"] == 0, found
    else:
        assert found["inclusion_log2"] >= 3, found  # 150,000 blocks in at most 12,288 entries
