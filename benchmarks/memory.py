"""The tracker's own memory: what it is made of, the formula, and the real counters.

    total = live table + site table + Python summary + drain buffer        (fixed, at start)
          + threads_registered x thread state                              (each thread that allocated)
          + threads_that_sampled x (ring header + ring_capacity x 32 B)    (ring made on first sample)

The C side reports rings, thread states and the live table in its footprint counter
(``sampler.read_counters().footprint_bytes``). The site table is static in the library (it is
not in that counter) and so are the summary arrays and the drain buffer on the Python side.
This script measures the per-thread parts by starting threads that allocate (first with nothing
sampled, then with default sampling, which always samples 64 KiB blocks), checks them against the
formula, lists the library's static tables from its symbol table (``nm``, where installed), and
shows that rings of exited threads are given back after the next drain.

The stack table: stacks are nodes of the site id table (one per distinct frame and caller), so
its C memory is that table's (static, touched as ids are used); the Python side keeps a frame and
a chain cell per node. The last part makes stacks of 30 frames through many distinct callers and
prints both.

    python benchmarks/memory.py [--threads 8]
"""
import argparse
import shutil
import subprocess
import threading

import _common
import _native

import memscope_otel
import memscope_otel.sampler as sampler
from memscope_otel.summary import MAX_IDS

RECORD = 32


def solve_rings(rest, capacity, at_least, at_most):
    """(rings, header bytes) such that rest = rings x (header + capacity x 32), with a whole,
    plausible header (ms_ring_t before its slots: two cache-line-padded indices and a few
    words), or None: the check that the footprint counter is made of whole rings."""
    for rings in range(max(1, at_least), at_most + 1):
        if rest % rings == 0:
            header = rest // rings - capacity * RECORD
            if 64 <= header <= 1024 and header % 8 == 0:
                return rings, header
    return None


def kib(n):
    return f"{n / 1024:10.1f} KiB"


def static_tables():
    """{symbol: size} of the library's static objects over 4 KiB, from nm; {} without nm."""
    from memscope_otel import _memscope

    nm = shutil.which("nm")
    if not nm:
        return {}
    out = subprocess.run([nm, "-S", "--size-sort", _memscope.__file__], capture_output=True, text=True).stdout
    tables = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() in ("b", "d"):
            size = int(parts[1], 16)
            if size > 4096:
                tables[parts[3]] = size
    return tables


def threads_allocating(loops, k, sizes):
    """Starts k threads that each allocate (C loop, RAW domain) and then wait; returns a callable
    that lets them exit and joins them."""
    ready = threading.Barrier(k + 1)
    leave = threading.Event()

    def work():
        loops.pairs("raw", sizes, 2000)
        ready.wait()
        leave.wait()

    threads = [threading.Thread(target=work) for _ in range(k)]
    for t in threads:
        t.start()
    ready.wait()

    def finish():
        leave.set()
        for t in threads:
            t.join()

    return finish


def measure_threads(loops, k, settings, sizes):
    """Footprint increase per thread while k allocating threads are alive, and after they exit."""
    tracker = memscope_otel.start(meter_provider=_common.meter_provider(), **settings)
    try:
        tracker.drainer.drain()
        before = sampler.read_counters()
        finish = threads_allocating(loops, k, sizes)
        during = sampler.read_counters()
        finish()
        tracker.drainer.drain()  # frees the state and ring of every exited thread
        after = sampler.read_counters()
        return before, during, after, tracker
    finally:
        memscope_otel.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="accepted for symmetry; this script is always quick")
    args = ap.parse_args(argv)
    k = args.threads
    loops = _native.Loops()
    print("memscope-otel memory footprint:", _common.machine())
    from memscope_otel.config import load_config

    capacity = 16
    while capacity < load_config().max_records_per_thread:
        capacity <<= 1

    # Nothing sampled: no class is large, rates 0, no frequency guarantee.
    quiet = dict(_common.FAST_PATH_ONLY, critical_size_threshold=2 ** 40)
    b0, d0, a0, _ = measure_threads(loops, k, quiet, loops.sizes([64, 256]))
    state = (d0.footprint_bytes - b0.footprint_bytes) / max(1, d0.threads_live - b0.threads_live)
    # Default settings; 64 KiB blocks are large, so every thread samples and gets its ring.
    b1, d1, a1, tracker = measure_threads(loops, k, {}, loops.sizes([65536]))
    tables = static_tables()
    live = sum(tables.get(s, 0) for s in ("g_table", "g_locks", "ms_live_filter"))
    site_symbols = ("g_ids", "g_slots", "g_state", "g_free", "g_callees", "g_forgotten")
    sites = sum(tables.get(s, 0) for s in site_symbols)
    if not tables:  # without nm: what footprint_bytes held before any thread sampled
        live = b0.footprint_bytes - b0.threads_live * state
    summary = MAX_IDS * 3 * 8
    drain = tracker.drainer._buffer.array.nbytes

    print(f"\nPer thread (measured with {k} extra threads alive, from footprint_bytes):")
    print(f"  thread state (registered, nothing sampled)  {kib(state)}   ({state:.0f} B; sizeof(ms_thread_t))")
    # footprint_bytes = live table + threads x state + rings x ring: what is left after the
    # first two must be a whole number of rings, at least one per sampling thread (the main
    # thread and the orphan state may have one too).
    rest = int(d1.footprint_bytes - live - d1.threads_live * state)
    solved = solve_rings(rest, capacity, k, int(d1.threads_live) + 1)
    if solved is None:
        ring = 136 + capacity * RECORD
        print(f"  with {d1.threads_live} threads registered: footprint_bytes {d1.footprint_bytes} B - live table "
              f"{live} - {d1.threads_live} x {state:.0f} = {rest} B is not a whole number of rings "
              "-> formula DOES NOT MATCH")
    else:
        rings, header = solved
        ring = header + capacity * RECORD
        print(f"  ring (made on a thread's first sample)      {kib(ring)}   ({header} B header + {capacity} x {RECORD} B)")
        print(f"  with {d1.threads_live} threads registered: footprint_bytes {d1.footprint_bytes} B = live table "
              f"{live} + {d1.threads_live} x {state:.0f} + {rings} rings x {ring} -> formula matches "
              f"(at least one ring per sampling thread: {rings} >= {k})")
    print(f"  before the threads: {kib(b1.footprint_bytes)} ({b1.threads_live} threads registered); "
          f"with them: {kib(d1.footprint_bytes)} ({d1.threads_live}); after they exited and one drain: "
          f"{kib(a1.footprint_bytes)} ({a1.threads_live})")
    # Given back: what remains is whole rings of the threads still registered (and the orphan
    # state), no more.
    rest_after = int(a1.footprint_bytes - live - a1.threads_live * state)
    left = rest_after // ring if rest_after % ring == 0 else None
    given_back = left is not None and left <= a1.threads_live + 1
    print(f"  -> exited threads' states and rings {'given back' if given_back else 'NOT given back'} "
          f"({left if left is not None else 'not whole'} rings left for {a1.threads_live} registered threads "
          "and the orphan state; other threads, e.g. the optimizer's, register too)")
    print("\nFixed parts:")
    if tables:
        print("  static tables of the library (nm):")
        for name, size in sorted(tables.items(), key=lambda kv: -kv[1]):
            print(f"    {name:24} {kib(size)}")
    else:
        print("  (nm not installed: static tables not listed)")
    print(f"  live table (g_table + g_locks + filter)     {kib(live) if tables else '    (needs nm)'}   "
          "in footprint_bytes")
    print(f"  site and stack id table ({', '.join(site_symbols)}) {kib(sites) if tables else '    (needs nm)'}   "
          f"static; {MAX_IDS} ids (stack nodes), a code-object reference each only until resolved")
    print(f"  Python summary arrays (MAX_IDS x 3 x 8 B)   {kib(summary)}")
    print(f"  drain buffer (records moved per drain)      {kib(drain)}")
    print(f"  footprint_bytes with {b0.threads_live} thread(s) registered, before any sampled: "
          f"{kib(b0.footprint_bytes)} = live table + {b0.threads_live} x state"
          + (f" + {(b0.footprint_bytes - live - b0.threads_live * state) / ring:.0f} ring(s)" if tables else ""))
    fixed = live + sites + summary + drain
    print(f"\nBound: {fixed / 2**20:.2f} MiB fixed + {state / 1024:.1f} KiB per thread that allocates "
          f"+ {ring / 1024:.1f} KiB per thread that sampled (ring of {capacity} records)")
    for t in (1, 8, 64):
        print(f"  {t:3d} sampling threads: {(fixed + t * (ring + state)) / 2**20:7.2f} MiB")
    stack_table(sites, tables)


def deep_call(depth, fn):
    return fn() if depth <= 1 else deep_call(depth - 1, fn)


def stack_table(sites, tables, callers=300, depth=30):
    """Stacks of ``depth`` frames through ``callers`` distinct functions (each a stack of its
    own, sharing the deep part), always sampled (64 KiB blocks): ids used, the C table's share
    of them, and the Python side's frames and chain cells."""
    import sys

    memscope_otel.start(adaptive=False)
    try:
        tracker = memscope_otel.tracker.current()
        before = sampler.read_counters().ids_used
        namespace = {"deep_call": deep_call}
        for i in range(callers):
            exec(f"def caller_{i}():\n    return deep_call({depth}, lambda: bytearray(65536))\n", namespace)
        keep = [namespace[f"caller_{i}"]() for i in range(callers)]
        memscope_otel.snapshot()
        used = sampler.read_counters().ids_used - before
        resolver = tracker.resolver
        frames = {id(chain[0]): chain[0] for chain in resolver._chains.values()}
        python = (sum(sys.getsizeof(c) for c in resolver._chains.values())
                  + sum(sys.getsizeof(f) for f in frames.values())
                  + sys.getsizeof(resolver._chains) + sys.getsizeof(resolver._leaves) + sys.getsizeof(resolver._ref_of))
        nodes = len(resolver._chains)
        per_id = sites / MAX_IDS if tables else 0
        print(f"\nStack table ({callers} callers x {depth}-frame stacks, MAX_STACK_DEPTH default; {len(keep)} blocks):")
        print(f"  ids used by these stacks: {used} (of {MAX_IDS}); stack overflows: "
              f"{sampler.read_counters().stack_overflows}")
        if tables:
            print(f"  C id table: {per_id:.0f} B per id -> {kib(used * per_id)} for these ids "
                  f"(at most {kib(sites)}, static)")
        print(f"  Python frames and chain cells: {nodes} nodes resolved, {kib(python)} "
              f"({python / max(1, nodes):.0f} B per node)")
    finally:
        memscope_otel.stop()


if __name__ == "__main__":
    main()
