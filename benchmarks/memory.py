"""The tracker's own memory, part by part, against RSS.

Each mode runs in a fresh interpreter that first imports every module a tracker loads (listed by a
probe interpreter beforehand, see _imports.py: imports aside), then runs
``untracked``, ``memscope`` with ADAPTIVE=false (no workload recognizer), and ``memscope`` at
default settings. Each runs the same single-threaded program (every program of
benchmarks/programs.py, then a metric collection), then starts THREADS threads that each allocate
a few blocks (one of 64 KiB: large, so every thread has records to buffer) and wait, then lets
them exit (and drains once). RSS (/proc/self/statm) is read after start(), after the program,
while the threads are alive, and after they exited; the tracker's part is the difference from the
untracked run at the same point. After the program RSS is read once more after malloc_trim(0) in
every mode alike: what the C library keeps of freed memory depends on where the program's last
blocks lie in its heap, which moves the untracked run by as much as the tracker's whole part (an
ADAPTIVE=false run measured up to 2 MB below the untracked one); after the trim the difference is
memory in use.

The parts, read inside the tracked process after the program:
  C pages          footprint_bytes: thread states with their buffers of records (mmap'd pages,
                   given back when a thread exits), the live table, the stage's touched pages
  static tables    the library's tables over 4 KiB (nm), resident pages only (mincore)
  Python arrays    summary arrays and drain buffer, resident pages only (mincore)
  recognizer       its arrays by part (WorkloadRecognizer.nbytes()); its whole cost is the
                   ADAPTIVE=true run minus the ADAPTIVE=false run
and the rest is what the trimmed RSS difference leaves (not broken down). Thread churn at scale:
benchmarks/thread_churn.py. Last, the stack table's memory (benchmarks/stack_table.py).

    python benchmarks/memory.py [--threads 500] [--rounds 3] [--scale 30] [--quick]

Targets (issue 16): <= 6 MB for a single-threaded program; <= 16 MB with 500 threads alive.
"""
import argparse
import ctypes
import json
import mmap
import os
import shutil
import subprocess
import sys

import _common
import _imports
from _wave import rss, rss_anon, wave

MB = 1e6
COUNTED_IN_FOOTPRINT = ("ms_live_filter",)
RECOGNIZER_BOUNDS = {"times": "2 MiB + a batch", "lifetimes": "1 MiB", "pending": "2 MiB",
                     "sites": "32 B a site read", "threads": "8 KiB", "order": "8 B a record of the largest read"}
MODES = {"untracked": None, "memscope, ADAPTIVE=false": {"adaptive": False}, "memscope": {}}


def resident(address, nbytes):
    """Bytes of [address, address + nbytes) in RAM (whole pages), by mincore(2)."""
    if nbytes <= 0:
        return 0
    page = mmap.PAGESIZE
    start = address // page * page
    pages = (address + nbytes - start + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * page), vec) != 0:
        return 0
    return sum(v & 1 for v in vec) * page


def static_tables():
    """{symbol: (address, size)} of the library's static objects over 4 KiB, from nm and the
    library's load address; {} without nm."""
    from memscope_otel import _memscope

    path = os.path.realpath(_memscope.__file__)
    nm = shutil.which("nm")
    if not nm:
        return {}
    base = None
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and os.path.realpath(fields[5]) == path and int(fields[2], 16) == 0:
                base = int(fields[0].split("-")[0], 16)
                break
    if base is None:
        return {}
    out = subprocess.run([nm, "-S", "--size-sort", path], capture_output=True, text=True).stdout
    tables = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() in ("b", "d") and int(parts[1], 16) > 4096:
            tables[parts[3]] = (base + int(parts[0], 16), int(parts[1], 16))
    return tables


def mapped_resident(part):
    """Resident bytes of the file mappings whose path contains ``part`` (/proc/self/smaps): the
    code and data pages of those shared objects that this process has touched."""
    total, counting = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                counting = len(fields) >= 6 and part in fields[5]
            elif counting and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


def array_resident(array):
    return resident(array.__array_interface__["data"][0], array.nbytes)


def child(settings, threads, modules, scale):
    _imports.load(modules)

    import programs
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import memscope_otel
    from memscope_otel import sampler

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    base, base_anon = rss(), rss_anon()

    def mark(point):
        out[point] = rss() - base
        out[point + "_anon"] = rss_anon() - base_anon

    out = {}
    tracker = memscope_otel.start(meter_provider=provider, **settings) if settings is not None else None
    mark("start")
    for name in programs.PROGRAMS:
        programs.run(name, scale)
    reader.collect()  # the metric callbacks: a drain, the optimizer's round
    mark("program")
    ctypes.CDLL(None).malloc_trim(0)
    mark("trimmed")
    out["numpy_pages"] = mapped_resident("numpy")
    if tracker is not None:
        counters = sampler.read_counters()
        out["c_pages"] = counters.footprint_bytes
        out["static"] = {name: resident(a, n) for name, (a, n) in static_tables().items()}
        summary = tracker.summary
        out["summary"] = sum(array_resident(a) for a in (summary.id_count, summary.id_bytes, summary.id_live_bytes))
        out["drain_buffer"] = array_resident(tracker.drainer._buffer.array)
        optimizer = getattr(tracker, "optimizer", None)
        out["recognizer"] = optimizer.recognizer.nbytes() if optimizer is not None and optimizer.adaptive else {}
    def alive():
        mark("threads")
        if tracker is not None:
            out["c_pages_threads"] = sampler.read_counters().footprint_bytes

    wave(threads, alive)
    if tracker is not None:
        tracker.drainer.drain()  # gives back what the exited threads held
        out["c_pages_exited"] = sampler.read_counters().footprint_bytes
    mark("exited")
    if tracker is not None:
        memscope_otel.stop()
    print(json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    ap.add_argument("--scale", type=int, default=30, help="the programs' scale (30: about 10 s in all)")
    ap.add_argument("--quick", action="store_true", help="one round at scale 5")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--modules", default="[]", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child), args.threads, json.loads(args.modules), args.scale)
        return
    if args.quick:
        args.rounds, args.scale = 1, 5
    print("memscope-otel memory:", _common.machine())
    modules = _imports.tracker_modules()
    runs = {mode: [] for mode in MODES}
    for r in range(args.rounds):
        for mode in _common.rotated(list(MODES), r):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(MODES[mode]),
                   "--threads", str(args.threads), "--modules", json.dumps(modules), "--scale", str(args.scale)]
            runs[mode].append(_common.run_json_child(cmd, f"memory ({mode})"))
    keys = [k + suffix for k in ("start", "program", "trimmed", "threads", "exited") for suffix in ("", "_anon")]
    med = {mode: {k: _common.median([x[k] for x in xs]) for k in keys} for mode, xs in runs.items()}
    points = [("start", "after start()"), ("program", "after the program"), ("trimmed", "then malloc_trim"),
              ("threads", f"{args.threads} threads alive"), ("exited", "after they exited")]
    for suffix, what in (("", "RSS"), ("_anon", "anonymous RSS (RssAnon: RSS less the pages of mapped files)")):
        print(f"\n{what}: growth from before start() (median of {args.rounds}), and the tracker's part "
              "(memscope minus untracked):")
        print(f"  {'':26}" + "".join(f"{label:>22}" for _, label in points))
        for mode in MODES:
            cells = "".join(f"{med[mode][k + suffix] / MB:+19.2f} MB" for k, _ in points)
            print(f"  {mode:26}{cells}")
        for mode in list(MODES)[1:]:
            cells = "".join(f"{(med[mode][k + suffix] - med['untracked'][k + suffix]) / MB:+19.2f} MB"
                            for k, _ in points)
            print(f"  {'tracker, ' + (mode.split(', ')[-1] if ',' in mode else 'default'):26}{cells}")

    x = runs["memscope"][-1]
    # (the live filter is a static table that footprint_bytes counts as the live table's)
    static = {name: n for name, n in x["static"].items() if name not in COUNTED_IN_FOOTPRINT}
    tracker_mb = (med["memscope"]["program"] - med["untracked"]["program"]) / MB
    in_use_mb = (med["memscope"]["trimmed"] - med["untracked"]["trimmed"]) / MB
    recognizer = (med["memscope"]["trimmed"] - med["memscope, ADAPTIVE=false"]["trimmed"]) / MB
    parts = [
        ("C pages (states, buffers, live table, stage touched; footprint_bytes)", x["c_pages"] / MB),
        ("static tables of the library, resident", sum(static.values()) / MB),
        ("Python summary arrays, resident", x["summary"] / MB),
        ("drain buffer, resident", x["drain_buffer"] / MB),
        ("workload recognizer's arrays (nbytes)", sum(x["recognizer"].values()) / MB),
    ]
    print("\nParts after the single-threaded program (last round):")
    for label, v in parts:
        print(f"  {label:66} {v:7.2f} MB")
        if label.startswith("static"):
            for name, n in sorted(static.items(), key=lambda kv: -kv[1]):
                if n >= 5000:
                    print(f"      {name:24} {n / MB:7.2f} MB resident")
        if label.startswith("workload"):
            for name, n in sorted(x["recognizer"].items(), key=lambda kv: -kv[1]):
                print(f"      {name:24} {n / MB:7.2f} MB   (bound: {RECOGNIZER_BOUNDS[name]})")
    # numpy's pages (file-backed: shared with every process that runs the same code) that the
    # recognizer's reads touch and the program's own use of numpy does not
    numpy_pages = {mode: _common.median([r["numpy_pages"] for r in xs]) / MB for mode, xs in runs.items()}
    recognizer_code = numpy_pages["memscope"] - numpy_pages["memscope, ADAPTIVE=false"]
    label = "numpy code pages the recognizer runs (default - ADAPTIVE=false)"
    parts.append((label, recognizer_code))
    print(f"  {label:66} {recognizer_code:7.2f} MB")
    print("      numpy's pages resident: " + ", ".join(f"{mode} {v:.2f} MB" for mode, v in numpy_pages.items()))
    rest = in_use_mb - sum(v for _, v in parts)
    print(f"  {'the rest: the difference after malloc_trim less the parts above':66} {rest:7.2f} MB")
    print("      (Python objects of the tracker and of its metric series, pymalloc arenas and heap")
    print("      pages that they keep, thread stacks; not broken down)")
    print(f"  {'tracker total, RSS difference after malloc_trim (median)':66} {in_use_mb:7.2f} MB")
    print(f"  {'  of which the recognizer (ADAPTIVE=true minus false)':66} {recognizer:7.2f} MB")
    print(f"  {'tracker total, RSS difference (median)':66} {tracker_mb:7.2f} MB   (target <= 6)")
    anon_mb = (med["memscope"]["program_anon"] - med["untracked"]["program_anon"]) / MB
    print(f"  {'  of which anonymous (the rest: code pages of numpy, the library)':66} {anon_mb:7.2f} MB")
    with_threads = (med["memscope"]["threads"] - med["untracked"]["threads"]) / MB
    per_thread = (x["c_pages_threads"] - x["c_pages"]) / max(1, args.threads)
    print(f"\nWith {args.threads} threads alive: tracker {with_threads:.2f} MB (target <= 16); C pages "
          f"{x['c_pages_threads'] / MB:.2f} MB, {per_thread / 1024:.1f} KiB per thread (its state and first "
          f"records share a page; a buffer grows only with what its thread samples, up to "
          f"MAX_RECORDS_PER_THREAD x 32 B)")
    after = (med["memscope"]["exited"] - med["untracked"]["exited"]) / MB
    print(f"After they exited and one drain: C pages {x['c_pages_exited'] / MB:.2f} MB (were {x['c_pages'] / MB:.2f}"
          f" before them); RSS {after - tracker_mb:+.2f} MB against the untracked run, beyond the "
          f"tracker's {tracker_mb:.2f} MB before the threads")
    # The stack table, in a process of its own (it starts a tracker of its own).
    here = os.path.dirname(os.path.abspath(__file__))
    table = subprocess.run([sys.executable, os.path.join(here, "stack_table.py")], capture_output=True, text=True)
    print("\nStack table (benchmarks/stack_table.py):")
    print("\n".join("  " + line for line in (table.stdout or table.stderr).splitlines()[1:]))


if __name__ == "__main__":
    main()
