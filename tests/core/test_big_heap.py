"""A big heap: 150,000 live 9 KiB blocks beside a million small ones and one 8 MB buffer.

Large blocks are always sampled, so the live table must hold every live one: it grows to its
budget (LIVE_TABLE_MAX_ENTRIES), and past it samples itself by a threshold tau on an entry's
value v = weight x size: a block with v >= tau stays as it is, one below enters (or stays) with
probability v / tau and a live weight raised to tau / size. Either way the live estimate is
compared with tracemalloc's count of the same window (started first, so memscope's hooks sit
above it and its own bookkeeping is not counted by memscope), within 4 standard deviations of
the estimator:

    Var = sum over blocks of s^2 (1/pi - 1),   pi = min(p_s, s / tau)

where p_s is the block's sampling rate (1 for large blocks) and tau the table's final threshold:
thresholds only rise, and a block kept under one threshold is kept under a higher one with
probability min(1, v / tau_new) / min(1, v / tau_old), so its inclusion is min(1, v / tau) for
the last tau whatever the order of events, independently of the other blocks. Blocks the
frequency guarantee samples have weight 1 and less variance: the formula is an upper bound. The
program's other live blocks of the window (a few interpreter objects) are few; the slack covers
them.

The 8 MB buffer, allocated before the window and alive through it, is worth far more than tau:
the table's thinning never touches it, so its site's live estimate keeps its exact size (a
uniform coin per entry would count it 0 or 2^k times: 0 or 128 MB at k = 4).
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
config = load_config(adaptive=False, drain_interval_ms=60000, live_table_max_entries=budget, seed=int(sys.argv[2]))
tracker = memscope_otel.start(**{k: getattr(config, k) for k in ("adaptive", "drain_interval_ms", "live_table_max_entries", "seed")})
def live():
    return float(memscope_otel.snapshot().live_bytes[:3].sum())
def big_buffer():
    return bytearray(8_000_000)
buffer = big_buffer()
smalls = [None] * 1_000_000
larges = [None] * 150_000
est0, true0 = live(), tracemalloc.get_traced_memory()[0]
for i in range(1_000_000):
    smalls[i] = bytes(16 + i % 64)
for i in range(150_000):
    larges[i] = bytes(9216)
snap = memscope_otel.snapshot()
est1, true1 = float(snap.live_bytes[:3].sum()), tracemalloc.get_traced_memory()[0]
buffer_live = sum(live for site_id, _n, _c, live in snap.per_id
                  if getattr(tracker.resolver.resolve(site_id), "function", None) == "big_buffer")
c = sampler.read_counters()
tau = c.live_threshold
p = config.small_sample_rate
def variance(blocks, rate):
    total = 0.0
    for b in blocks:
        s = sys.getsizeof(b)
        pi = min(rate, s / tau) if tau > 0 else rate
        total += s * s * (1 / pi - 1)
    return total
print("estimated:", est1 - est0)
print("true:", true1 - true0)
print("sigma:", (variance(smalls, p) + variance(larges, 1.0)) ** 0.5)
print("threshold:", tau)
print("capacity:", c.live_capacity)
print("untracked:", c.live_untracked)
print("buffer_live:", buffer_live)
memscope_otel.stop()
"""

# 262,144 entries (the default): every large block fits. 16,384: the table samples itself.
@pytest.mark.parametrize("budget,seed", [(262_144, 11), (16_384, 12)], ids=["within the budget", "past the budget"])
def test_live_estimate_of_a_big_heap(budget, seed):
    result = subprocess.run([sys.executable, "-c", CHILD, str(budget), str(seed)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    found = {k: float(v) for k, v in (line.split(": ") for line in result.stdout.splitlines())}
    true, estimated, sigma = found["true"], found["estimated"], found["sigma"]
    assert true > 150_000 * 9216
    slack = 1 << 20  # the window's own bookkeeping objects, the same in both counts up to this
    assert abs(estimated - true) <= 4 * sigma + slack, found
    assert found["capacity"] <= budget, "the table grew past its budget"
    assert found["untracked"] == 0, found
    # its 8,000,001-byte data block exactly; its 57-byte header is a small block (sampled or not:
    # at weight 1/p, 57 / 0.001 bytes; past the budget a sampled header worth less than tau is
    # kept with probability 57 w / tau at a live weight of tau / 57, so it adds tau: seen once)
    header_most = max(57 / 0.001, found["threshold"]) * (1 + 1e-6)  # (weights are float32)
    assert 8_000_001 <= found["buffer_live"] <= 8_000_001 + header_most, found
    if budget == 262_144:
        assert found["threshold"] == 0, found
    else:
        # 150,000 blocks of 9,249 bytes in at most 12,288 entries: each kept with 9,249 / tau
        assert found["threshold"] > 150_000 / 12_288 * 9249, found
