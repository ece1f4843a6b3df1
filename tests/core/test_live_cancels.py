"""A freed block takes off its site's live estimate exactly what it added, whichever way each
part went.

A sampled block's live part can reach the summary by three routes: its record through a ring and
the reducer (which sums in fixed point: a record adds w x size rounded to 2^-10 byte), its record
through the spill when the ring had no room, and the live table's corrections when it samples
itself past its budget (a kept block's weight raised to tau / size, an evicted block's taken
off). The block's free record comes later, by a route of its own, and carries the weight the
table holds. Every route rounds each record's w x size to the same 2^-10 grid, so once every block
is freed the sites' live estimate is a sum of multiples of 2^-10 byte that cancel: exactly zero,
no tolerance. (Rounding the two parts on different grids left a few bytes per 10,000 raised
weights: test_live_bursts found 4.96 bytes after 30,000 reference cycles.)

Each case runs in a child: the live table's threshold only rises within a process.
"""
import subprocess
import sys

import pytest

CHILD = r"""
import ast, gc, sys
import memscope_otel
from memscope_otel import sampler

settings = ast.literal_eval(sys.argv[1])
n, keep_all = settings.pop("blocks"), settings.pop("keep_all")
tracker = memscope_otel.start(adaptive=False, drain_interval_ms=60000, max_ring_memory=2**30, **settings)
if keep_all:
    # a reader of every record (as the dump writer is): the mover stages them rather than
    # reducing them, so past the stage and the ring they are spilled
    tracker.drainer.add_sink(lambda records, base_us: None)

def allocate(n):
    blocks = []
    for i in range(n):
        blocks.append(bytes(200 + i % 37))
    return blocks

def site_live(snap):
    return sum(live for site_id, _n, _c, live in snap.per_id
               if getattr(tracker.resolver.resolve(site_id), "function", None) == "allocate")

gc.disable()
before = sampler.read_counters()
blocks = allocate(n)
made = site_live(memscope_otel.snapshot())  # a drain between: the frees find empty rings
del blocks
after = site_live(memscope_otel.snapshot())
c = sampler.read_counters()
print("made:", made)
print("after:", repr(after))
print("threshold:", c.live_threshold)
print("dropped:", c.dropped - before.dropped)
memscope_otel.stop()
"""

RATE_1 = {"small_sample_rate": 1.0, "medium_sample_rate": 1.0}
CASES = {
    # a table of 8,192 for 60,000 blocks: it samples itself, raising weights to tau / size (not
    # integers), the raises going through the spill and the frees through the rings
    "past the live budget": (dict(RATE_1, blocks=60_000, keep_all=False,
                                  live_table_max_entries=8192), "threshold"),
    # weights 1 / 0.3 (not integers), every record kept, rings of 256: 90,000 allocation records
    # overflow the stage (65,536) and the ring, so the last are spilled; after the drain, the
    # first frees find room and the last are spilled
    "spilled and ringed records": (dict(blocks=300_000, keep_all=True, small_sample_rate=0.3,
                                        medium_sample_rate=0.3, max_records_per_thread=256),
                                   "dropped"),
    "both": (dict(RATE_1, blocks=100_000, keep_all=True, live_table_max_entries=8192,
                  max_records_per_thread=256), "dropped"),
}


@pytest.mark.parametrize("settings, route", CASES.values(), ids=CASES.keys())
def test_freed_blocks_leave_no_live_bytes(settings, route):
    result = subprocess.run([sys.executable, "-c", CHILD, repr(settings)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    found = {k: float(v) for k, v in (line.split(": ") for line in result.stdout.splitlines())}
    assert found["made"] > 0.5 * settings["blocks"] * 200, found  # the blocks were in the estimate
    assert found[route] > 0, found  # the route under test was taken
    assert found["after"] == 0.0, found
