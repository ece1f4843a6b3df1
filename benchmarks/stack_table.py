"""The stack table's memory: stacks are nodes of the site id table (one per distinct frame and
caller), so their C memory is that static table's, touched as ids are used; the Python side keeps
a frame and a chain cell per node resolved. Makes stacks of DEPTH frames through CALLERS distinct
functions (each a stack of its own, sharing the deep part), always sampled (64 KiB blocks), and
prints the ids used, the C table's share of them and the Python side's.

    python benchmarks/stack_table.py [--callers 300] [--depth 30]
"""
import argparse
import shutil
import subprocess
import sys

import _common  # noqa: F401 - puts the checkout first on sys.path

import memscope_otel
import memscope_otel.sampler as sampler
from memscope_otel.summary import MAX_IDS

ID_TABLE_SYMBOLS = ("g_ids", "g_slots", "g_state", "g_free", "g_callees", "g_forgotten")


def kib(n):
    return f"{n / 1024:.1f} KiB"


def id_table_bytes():
    """Bytes of the library's static id-table arrays (nm), or None without nm."""
    from memscope_otel import _memscope

    nm = shutil.which("nm")
    if not nm:
        return None
    out = subprocess.run([nm, "-S", _memscope.__file__], capture_output=True, text=True).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] in ID_TABLE_SYMBOLS:
            total += int(parts[1], 16)
    return total


def deep_call(depth, fn):
    return fn() if depth <= 1 else deep_call(depth - 1, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callers", type=int, default=300)
    ap.add_argument("--depth", type=int, default=30)
    args = ap.parse_args(argv)
    print("memscope-otel stack table:", _common.machine())
    table = id_table_bytes()
    memscope_otel.start(meter_provider=_common.meter_provider(), adaptive=False)
    try:
        tracker = memscope_otel.tracker.current()
        before = sampler.read_counters().ids_used
        namespace = {"deep_call": deep_call}
        for i in range(args.callers):
            exec(f"def caller_{i}():\n    return deep_call({args.depth}, lambda: bytearray(65536))\n", namespace)
        keep = [namespace[f"caller_{i}"]() for i in range(args.callers)]
        memscope_otel.snapshot()
        used = sampler.read_counters().ids_used - before
        resolver = tracker.resolver
        frames = {id(chain[0]): chain[0] for chain in resolver._chains.values()}
        python = (sum(sys.getsizeof(c) for c in resolver._chains.values())
                  + sum(sys.getsizeof(f) for f in frames.values())
                  + sys.getsizeof(resolver._chains) + sys.getsizeof(resolver._leaves) + sys.getsizeof(resolver._ref_of))
        nodes = len(resolver._chains)
        print(f"{args.callers} callers x {args.depth}-frame stacks, MAX_STACK_DEPTH default, {len(keep)} blocks:")
        print(f"  ids used by these stacks: {used} of {MAX_IDS}; stack overflows: "
              f"{sampler.read_counters().stack_overflows}")
        if table:
            print(f"  C id table: {table / MAX_IDS:.0f} B per id -> {kib(used * table / MAX_IDS)} for these ids "
                  f"(at most {kib(table)}, static, touched as used)")
        else:
            print("  C id table: (needs nm)")
        print(f"  Python frames and chain cells: {nodes} nodes resolved, {kib(python)} "
              f"({python / max(1, nodes):.0f} B per node)")
    finally:
        memscope_otel.stop()


if __name__ == "__main__":
    main()
