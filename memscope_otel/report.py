"""``memscope-otel report``: what a dump file says, as terminal text or one self-contained HTML page.

``numpy_summary`` computes, from an array of records, exactly what ``ms_reduce`` accumulates (same
fields, same clamping of bad input, same fixed-point block sums and order of double additions), so it
doubles as the reference the C reducers are tested and benchmarked against. ``analyze`` reads a dump chunk by chunk (memory stays
bounded by one chunk) into a ``Report``: top sites and types by estimated bytes and count, the size
distribution, the allocation rate and the live estimate over time. ``render_text`` and
``render_html`` present it; the HTML page draws its plots as inline SVG, with no script and no
external resource, so it opens anywhere without network access.

Every figure is a Horvitz-Thompson estimate: each sampled record counts ``weight`` times.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .records import (CLASS_MASK, CLASS_SHIFT, DOMAINS, EVENT_MASK, EVENT_SHIFT, FLAG_NOLIVE, RECORD_DTYPE,
                      domain_of)

MAX_IDS = 32768
ID_OVERFLOW = 8  # MS_ID_OVERFLOW
BUCKETS = 65
MANUAL_DOMAIN = DOMAINS.index("manual")


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Number of significant bits of each uint64 (0 for 0), exactly, without a float rounding trap."""
    values = values.astype(np.uint64, copy=False)
    hi = (values >> np.uint64(32)).astype(np.float64)  # < 2^32: exact in float64
    lo = (values & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi_bits = np.frexp(hi)[1]
    lo_bits = np.frexp(lo)[1]
    return np.where(hi_bits > 0, hi_bits + 32, lo_bits).astype(np.int64)


def size_buckets(sizes: np.ndarray) -> np.ndarray:
    """Power-of-two bucket of each size: 0 for sizes 0 and 1, else k with 2^(k-1) < size <= 2^k."""
    sizes = sizes.astype(np.uint64, copy=False)
    minus_one = sizes - np.uint64(1)  # wraps for size 0, which is masked below
    return np.where(sizes <= 1, 0, _bit_length(minus_one))


@dataclasses.dataclass
class DecodedRecords:
    """Per-record fields as ms_reduce reads them (bad values clamped the same way)."""

    domain: np.ndarray
    size_class: np.ndarray
    site: np.ndarray
    is_alloc: np.ndarray
    is_free: np.ndarray
    is_live_alloc: np.ndarray
    weight: np.ndarray
    weighted_bytes: np.ndarray
    bucket: np.ndarray


def decode(records: np.ndarray) -> DecodedRecords:
    """Decodes flags, clamps site ids and size classes, and weighs sizes, like reduce.c does."""
    flags = records["flags"].astype(np.int64)
    domain = domain_of(flags)
    event = (flags & EVENT_MASK) >> EVENT_SHIFT
    size_class = np.minimum((flags & CLASS_MASK) >> CLASS_SHIFT, 2)
    site = records["site"].astype(np.int64)
    site = np.where(site < MAX_IDS, site, ID_OVERFLOW + domain)
    is_alloc = (event == 0) | (event == 2)
    weight = records["weight"].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # corrupt weights: NaN, inf
        weighted_bytes = weight * records["size"].astype(np.float64)
    return DecodedRecords(
        domain=domain,
        size_class=size_class,
        site=site,
        is_alloc=is_alloc,
        is_free=event == 1,
        is_live_alloc=is_alloc & ((flags & FLAG_NOLIVE) == 0),
        weight=weight,
        weighted_bytes=weighted_bytes,
        bucket=size_buckets(records["size"]),
    )


# The fixed-point scheme of csrc/reduce.c (its header comment says why): per block of
# BLOCK_RECORDS records, contributions within the bounds become exact integers, summed exactly,
# and each nonzero block sum is added once, as a double, after the block's out-of-bounds records.
COUNT_SCALE = 2.0 ** 24
BYTES_SCALE = 2.0 ** 10
WEIGHT_LIMIT = 2.0 ** 25
WEIGHTED_BYTES_LIMIT = 2.0 ** 39
BLOCK_RECORDS = 8192
_SPLIT = 25  # contributions (|x| <= 2^49) split in two halves whose block sums float64 holds exactly


class _KeySpace:
    """The (block, accumulator index) pairs of a batch for one accumulator array, numbered."""

    def __init__(self, n: int, index: np.ndarray, length: int):
        self.length = length
        keys = (np.arange(n, dtype=np.int64) // BLOCK_RECORDS) * length + index
        blocks = -(-n // BLOCK_RECORDS)
        if blocks * length <= 4 * n + 4096:  # small tables: every pair numbered, no sort
            self.keys, self.inverse = np.arange(blocks * length, dtype=np.int64), keys
        else:
            self.keys, self.inverse = np.unique(keys, return_inverse=True)
            self.inverse = self.inverse.reshape(-1)

    def exact_sums(self, values: np.ndarray) -> np.ndarray:
        """Exact int64 sum of values per pair, for int64 values of at most 2^49 in magnitude and
        at most BLOCK_RECORDS (2^13) values per pair."""
        size = len(self.keys)
        # bincount adds in float64: each half's sums stay below 2^38, so every partial sum is exact
        lo = np.bincount(self.inverse, weights=(values & ((1 << _SPLIT) - 1)).astype(np.float64), minlength=size)
        hi = np.bincount(self.inverse, weights=(values >> _SPLIT).astype(np.float64), minlength=size)
        return (hi.astype(np.int64) << _SPLIT) + lo.astype(np.int64)


def _accumulate(space: _KeySpace, index: np.ndarray, takes: np.ndarray, fixed: np.ndarray, unit: float,
                outside: np.ndarray, exact_values: np.ndarray) -> np.ndarray:
    """One accumulator array of the summary, as ms_reduce builds it from a zeroed summary.

    Records where takes is True add to index: their integer contribution fixed, or where outside
    is True their double contribution exact_values. The double additions happen in C's order:
    within each block, the out-of-bounds records in record order, then each nonzero block sum;
    np.bincount performs them as that left fold."""
    n, length = len(index), space.length
    sums = space.exact_sums(np.where(takes & ~outside, fixed, 0))
    nonzero = sums != 0
    keys, sums = space.keys[nonzero], sums[nonzero]
    flush_at = np.minimum((keys // length + 1) * BLOCK_RECORDS, n) - 1
    out = np.flatnonzero(takes & outside)
    order_key = np.concatenate([2 * out, 2 * flush_at + 1])
    targets = np.concatenate([index[out], keys % length])
    values = np.concatenate([exact_values[out], sums.astype(np.float64) * unit])
    order = np.argsort(order_key, kind="stable")
    return np.bincount(targets[order], weights=values[order], minlength=length).astype(np.float64, copy=False)


def numpy_summary(records: np.ndarray) -> dict:
    """The fields of ``ms_summary_t`` for one batch reduced into a zeroed summary, with numpy.

    Bit for bit what ``ms_reduce`` computes (every path): the same decoding and clamping, the
    same fixed-point contributions (count ``round(w * 2^24)``, bytes ``round(w * size * 2^10)``,
    nearest even), the same per-block exact sums and the same order of double additions."""
    records = np.asarray(records)
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"records must have memscope_otel.records.RECORD_DTYPE, not {records.dtype}")
    n = len(records)
    r = decode(records)
    a, fr = r.is_alloc, r.is_free
    live = r.is_live_alloc | fr
    with np.errstate(invalid="ignore"):  # NaN fails the bounds: it takes the double route
        bounded = (np.abs(r.weight) <= WEIGHT_LIMIT) & (np.abs(r.weighted_bytes) <= WEIGHTED_BYTES_LIMIT)
    outside = ~bounded & (a | fr)
    # rint rounds to nearest even, as the C code's addition of 1.5 * 2^52 does; values outside
    # the bounds are replaced before the conversion to integers
    count = np.rint(np.where(bounded, r.weight, 0.0) * COUNT_SCALE).astype(np.int64)
    nbytes = np.rint(np.where(bounded, r.weighted_bytes, 0.0) * BYTES_SCALE).astype(np.int64)
    sign = np.where(fr, -1, 1)
    with np.errstate(invalid="ignore"):
        signed_weight = np.where(fr, -r.weight, r.weight)
        signed_wbytes = np.where(fr, -r.weighted_bytes, r.weighted_bytes)
    cu, bu = 1 / COUNT_SCALE, 1 / BYTES_SCALE

    cell = r.domain * 3 + r.size_class
    bucket = r.domain * BUCKETS + r.bucket
    nd = len(DOMAINS)
    cells, buckets = _KeySpace(n, cell, nd * 3), _KeySpace(n, bucket, nd * BUCKETS)
    domains, sites = _KeySpace(n, r.domain, nd), _KeySpace(n, r.site, MAX_IDS)
    return {
        "count": _accumulate(cells, cell, a, count, cu, outside, r.weight).reshape(nd, 3),
        "bytes": _accumulate(cells, cell, a, nbytes, bu, outside, r.weighted_bytes).reshape(nd, 3),
        "bucket_count": _accumulate(buckets, bucket, a, count, cu, outside, r.weight).reshape(nd, BUCKETS),
        "live_bytes": _accumulate(domains, r.domain, live, sign * nbytes, bu, outside, signed_wbytes),
        "live_count": _accumulate(domains, r.domain, live, sign * count, cu, outside, signed_weight),
        "records": int(n),
        "free_records": int(fr.sum()),
        "id_count": _accumulate(sites, r.site, a, count, cu, outside, r.weight),
        "id_bytes": _accumulate(sites, r.site, a, nbytes, bu, outside, r.weighted_bytes),
        "id_live_bytes": _accumulate(sites, r.site, live, sign * nbytes, bu, outside, signed_wbytes),
    }


# ----------------------------------------------------------------------------------------- analysis

FIXED_LABELS = {**{d: f"<native {name}>" for d, name in enumerate(DOMAINS)},
                **{ID_OVERFLOW + d: f"<overflow {name}>" for d, name in enumerate(DOMAINS)}}


@dataclasses.dataclass
class SiteRow:
    """One site (or type) in a top list."""

    id: int
    label: str
    domain: str
    est_bytes: float
    est_count: float
    live_bytes: float
    records: int


@dataclasses.dataclass
class StackRow:
    """One stack: its frames innermost first (``file:function:line`` each) and its sums."""

    frames: tuple
    domain: str
    est_bytes: float
    est_count: float
    live_bytes: float
    live_count: float


@dataclasses.dataclass
class Report:
    """Everything a report shows, computed from one dump."""

    path: str
    start_time_us: int
    first_us: int
    last_us: int
    n_records: int
    n_allocs: int
    n_frees: int
    n_chunks: int
    n_threads: int
    config: dict
    truncated: str | None
    est_count: np.ndarray       # [domain] estimated allocations
    est_bytes: np.ndarray       # [domain] estimated requested bytes
    live_bytes: np.ndarray      # [domain] live estimate at the end
    top_sites_by_bytes: list
    top_sites_by_count: list
    top_types_by_bytes: list
    top_types_by_count: list
    size_buckets: np.ndarray    # [65] estimated allocations per power-of-two bucket
    bin_edges_s: np.ndarray     # [bins + 1] seconds since first_us
    rate_bytes: np.ndarray      # [bins] estimated bytes allocated per second
    rate_count: np.ndarray      # [bins] estimated allocations per second
    live_over_time: np.ndarray  # [bins] live estimate at the end of each bin
    # Set when the figures come from a live process rather than a dump: replaces the line that
    # counts the dump's records and chunks (memscope-otel run --html).
    origin: str | None = None
    size_buckets_exact: bool = False  # size_buckets counts every allocation, not an estimate
    # Every stack with its sums (allocator domains; types are one-frame stacks), the most bytes
    # first: the profiles (memscope_otel.profiles) and the top stacks are drawn from it.
    stacks: list = dataclasses.field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.last_us - self.first_us) / 1e6)


def _time_range(dump):
    first, last = None, None
    for chunk in dump.chunks:
        deltas = chunk.records["time_delta_us"]
        lo = chunk.base_us + int(deltas.min())
        hi = chunk.base_us + int(deltas.max())
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return first, last


def analyze(dump, top: int = 15, bins: int = 60, progress=None) -> Report:
    """Reads every chunk of an open dump (``memscope_otel.dump.open_dump``) into a ``Report``.
    ``progress``, if given, is called as ``progress(records_done, records_total)`` after each
    chunk (the command line draws a progress line from it)."""
    if top < 1 or bins < 1:
        raise ValueError(f"top={top} and bins={bins} must both be at least 1")
    first, last = _time_range(dump)
    if first is None:
        first = last = dump.start_time_us
    span_us = max(1, last - first + 1)
    bins = int(min(bins, span_us))
    est_count = np.zeros(len(DOMAINS))
    est_bytes = np.zeros(len(DOMAINS))
    live = np.zeros(len(DOMAINS))
    id_count, id_bytes, id_live = np.zeros(MAX_IDS), np.zeros(MAX_IDS), np.zeros(MAX_IDS)
    id_records = np.zeros(MAX_IDS, dtype=np.int64)
    id_domain = np.zeros(MAX_IDS, dtype=np.int64)
    buckets = np.zeros(BUCKETS)
    rate_bytes, rate_count, live_delta = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    threads = np.zeros(1 << 16, dtype=bool)
    n_allocs = n_frees = 0
    records_done = 0
    id_live_count = np.zeros(MAX_IDS)
    # Per-site sums, a site being a file:function:line (several stacks, and several bytecode
    # offsets of one line, are one row), and per-stack sums. Ids that change meaning (reused ids)
    # settle their sums so far under their old text before the first chunk of the new one.
    # (label, domain) -> [id, bytes, count, live, records]; (frames, domain) -> [bytes, count,
    # live bytes, live count].
    by_label, by_stack = {}, {}

    def settle(ids, chunk_index):
        for i in ids:
            if id_records[i] == 0:
                continue
            key = (dump.label(i, chunk_index), int(id_domain[i]))
            sums = by_label.setdefault(key, [i, 0.0, 0.0, 0.0, 0])
            sums[0] = i
            sums[1] += id_bytes[i]
            sums[2] += id_count[i]
            sums[3] += id_live[i]
            sums[4] += int(id_records[i])
            stack = by_stack.setdefault((tuple(dump.stack(i, chunk_index)), int(id_domain[i])), [0.0] * 4)
            stack[0] += id_bytes[i]
            stack[1] += id_count[i]
            stack[2] += id_live[i]
            stack[3] += id_live_count[i]
            id_bytes[i] = id_count[i] = id_live[i] = id_live_count[i] = 0.0
            id_records[i] = 0

    redefinitions = getattr(dump, "redefinitions", {})
    for index, chunk in enumerate(dump.chunks):
        changed = redefinitions.get(index)
        if changed:
            settle([i for i in changed if 0 <= i < MAX_IDS], index - 1)
        recs = chunk.records
        s = numpy_summary(recs)
        r = decode(recs)
        est_count += s["count"].sum(axis=1)
        est_bytes += s["bytes"].sum(axis=1)
        live += s["live_bytes"]
        id_count += s["id_count"]
        id_bytes += s["id_bytes"]
        id_live += s["id_live_bytes"]
        id_records += np.bincount(r.site, minlength=MAX_IDS)
        live_event = r.is_live_alloc | r.is_free
        id_live_count += np.bincount(r.site[live_event], np.where(r.is_free, -r.weight, r.weight)[live_event], MAX_IDS)
        id_domain[r.site] = r.domain
        buckets += s["bucket_count"].sum(axis=0)
        threads[recs["thread"]] = True
        n_allocs += int(r.is_alloc.sum())
        n_frees += s["free_records"]
        offset = chunk.base_us - first
        b = ((recs["time_delta_us"].astype(np.int64) + offset) * bins) // span_us
        b = np.clip(b, 0, bins - 1)
        a, lv = r.is_alloc, r.is_live_alloc | r.is_free
        rate_bytes += np.bincount(b[a], r.weighted_bytes[a], bins)
        rate_count += np.bincount(b[a], r.weight[a], bins)
        live_delta += np.bincount(b[lv], np.where(r.is_free, -r.weighted_bytes, r.weighted_bytes)[lv], bins)
        records_done += len(recs)
        if progress is not None:
            progress(records_done, dump.n_records)
    bin_s = span_us / bins / 1e6
    edges = np.arange(bins + 1) * bin_s

    settle(np.nonzero(id_records)[0].tolist(), len(dump.chunks) - 1)

    def named(label):  # an id without text: the fixed ones have names
        return FIXED_LABELS.get(int(label[3:]), label) if label.startswith("id ") and label[3:].isdigit() else label

    all_rows = [SiteRow(int(i), named(label), DOMAINS[domain], float(b), float(c), float(lv), n)
                for (label, domain), (i, b, c, lv, n) in by_label.items()]
    stacks = sorted((StackRow(tuple(named(f) for f in frames), DOMAINS[domain], float(b), float(c), float(lb), float(lc))
                     for (frames, domain), (b, c, lb, lc) in by_stack.items()), key=lambda r: -r.est_bytes)

    # A site is one id per (code object, bytecode offset): the calls on one line are one row.
    merged = {}
    for row in all_rows:
        same = merged.get((row.label, row.domain))
        if same is None:
            merged[row.label, row.domain] = row
        else:
            same.est_bytes += row.est_bytes
            same.est_count += row.est_count
            same.live_bytes += row.live_bytes
            same.records += row.records
    all_rows = list(merged.values())

    def rows(candidates, field):
        ranked = sorted((r for r in candidates if getattr(r, field) > 0), key=lambda r: -getattr(r, field))
        return ranked[:top]

    sites = [r for r in all_rows if r.domain != "manual"]
    types = [r for r in all_rows if r.domain == "manual"]
    return Report(
        path=str(dump.path), start_time_us=dump.start_time_us, first_us=first, last_us=last,
        n_records=dump.n_records, n_allocs=n_allocs, n_frees=n_frees, n_chunks=len(dump.chunks),
        n_threads=int(threads.sum()), config=dump.config,
        truncated=None if dump.truncated is None else str(dump.truncated),
        est_count=est_count, est_bytes=est_bytes, live_bytes=live,
        top_sites_by_bytes=rows(sites, "est_bytes"), top_sites_by_count=rows(sites, "est_count"),
        top_types_by_bytes=rows(types, "est_bytes"), top_types_by_count=rows(types, "est_count"),
        size_buckets=buckets, bin_edges_s=edges, rate_bytes=rate_bytes / bin_s,
        rate_count=rate_count / bin_s, live_over_time=np.cumsum(live_delta), stacks=stacks,
    )


# ----------------------------------------------------------------------------------------- formatting


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units; negative and non-finite values pass through)."""
    if not np.isfinite(n):
        return str(n)
    sign, n = ("-" if n < 0 else ""), abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} PiB"


def fmt_count(n: float) -> str:
    """12345 -> '12.3 k'."""
    if not np.isfinite(n):
        return str(n)
    sign, n = ("-" if n < 0 else ""), abs(float(n))
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{sign}{n / scale:.1f} {unit}"
    return f"{sign}{n:.0f}"


def bucket_label(k: int) -> str:
    """Upper bound of power-of-two bucket k: '<= 1 B' for bucket 0, else '<= 2^k' in bytes units."""
    return "<= 1 B" if k == 0 else f"<= {fmt_bytes(2.0 ** k).replace('.0 ', ' ')}"


def _utc(us: int) -> str:
    import datetime

    try:
        return datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{us} us since the epoch"


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray) -> str:
    """Values as a row of eighth-block characters, lowest to highest."""
    values = np.nan_to_num(np.asarray(values, dtype=float))
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if hi <= lo:
        return SPARK[0] * len(values)
    idx = ((values - lo) / (hi - lo) * (len(SPARK) - 1)).round().astype(int)
    return "".join(SPARK[i] for i in idx)


# ----------------------------------------------------------------------------------------- text


def _records_cell(records) -> str:
    return "-" if records is None else str(records)


TOP_STACKS = 5
STACK_FRAMES_SHOWN = 12


def stack_table(stacks, total_bytes) -> list:
    """Text lines of the top stacks by estimated bytes (allocator domains; the innermost frame
    first, the outermost frames past STACK_FRAMES_SHOWN counted, not shown)."""
    shown = [r for r in stacks if r.domain != "manual" and r.est_bytes > 0][:TOP_STACKS]
    if not shown:
        return []
    out = [f"Top stacks by estimated bytes (innermost frame first; {len(stacks)} stacks in all)"]
    for rank, row in enumerate(shown, 1):
        share = 100.0 * row.est_bytes / total_bytes if total_bytes else 0.0
        out.append(f"  #{rank} {fmt_bytes(row.est_bytes)} ({share:.1f} %), {fmt_count(row.est_count)} allocations, "
                   f"live {fmt_bytes(row.live_bytes)}, {row.domain}")
        out += [f"      {frame}" for frame in row.frames[:STACK_FRAMES_SHOWN]]
        if len(row.frames) > STACK_FRAMES_SHOWN:
            out.append(f"      ... {len(row.frames) - STACK_FRAMES_SHOWN} more frames")
    out.append("")
    return out


def site_table(rows, title, total_bytes) -> list:
    """Text lines of a top list of SiteRow (empty when there are none). A row's ``records`` is the
    number of sampled records behind it, or None where the source does not count them (the
    column is left out when no row has it)."""
    if not rows:
        return []
    with_records = any(r.records is not None for r in rows)
    records_head = f"{'records':>8}  " if with_records else ""
    out = [title, f"  {'#':>3}  {'est. bytes':>11}  {'est. count':>10}  {'live bytes':>11}  {'share':>6}  "
                  f"{records_head}site"]
    for i, r in enumerate(rows, 1):
        share = 100 * r.est_bytes / total_bytes if total_bytes > 0 else 0.0
        records = f"{_records_cell(r.records):>8}  " if with_records else ""
        out.append(f"  {i:>3}  {fmt_bytes(r.est_bytes):>11}  {fmt_count(r.est_count):>10}  "
                   f"{fmt_bytes(r.live_bytes):>11}  {share:5.1f}%  {records}{r.label} ({r.domain})")
    out.append("")
    return out


def size_distribution(buckets, title, width: int = 60) -> list:
    """Text lines of a power-of-two size histogram (``buckets[k]``: allocations of bucket k), one
    bar per bucket from the smallest to the largest non-empty one; empty when all are zero."""
    buckets = np.asarray(buckets, dtype=float)
    nz = np.nonzero(buckets)[0]
    if not len(nz):
        return []
    out = [title]
    peak = buckets.max()
    for k in range(nz[0], nz[-1] + 1):
        bar = "█" * int(round(buckets[k] / peak * width)) if peak > 0 else ""
        out.append(f"  {bucket_label(k):>11}  {fmt_count(buckets[k]):>9}  {bar}")
    out.append("")
    return out


def render_text(rep: Report, width: int = 60) -> str:
    """The report as plain text for a terminal."""
    total_bytes = float(rep.est_bytes.sum())
    out = [f"memscope-otel report: {rep.path}",
           f"  recorded {_utc(rep.first_us)}, {rep.duration_s:.2f} s; {rep.n_records:,} sampled records in "
           f"{rep.n_chunks} chunks ({rep.n_allocs:,} allocations, {rep.n_frees:,} frees) from {rep.n_threads} threads",
           f"  estimated {fmt_count(rep.est_count.sum())} allocations, {fmt_bytes(total_bytes)} requested; "
           f"live at the end: {fmt_bytes(rep.live_bytes.sum())}"]
    per_domain = [f"{name} {fmt_bytes(b)}" for name, b in zip(DOMAINS, rep.est_bytes) if b]
    if per_domain:
        out.append("  by domain: " + ", ".join(per_domain))
    if rep.truncated:
        out.append(f"  note: {rep.truncated}; the complete chunks before it were read")
    out.append("  (estimates: each sampled record counts as 1/sampling probability allocations)")
    out.append("")
    out += site_table(rep.top_sites_by_bytes, "Top sites by estimated bytes", total_bytes)
    out += site_table(rep.top_sites_by_count, "Top sites by estimated count", total_bytes)
    out += site_table(rep.top_types_by_bytes, "Top types (manual API) by estimated bytes", total_bytes)
    out += site_table(rep.top_types_by_count, "Top types (manual API) by estimated count", total_bytes)
    out += stack_table(rep.stacks, total_bytes)
    out += size_distribution(rep.size_buckets, "Size distribution (estimated allocations per power-of-two size)", width)
    bin_s = rep.bin_edges_s[1] - rep.bin_edges_s[0] if len(rep.bin_edges_s) > 1 else 0
    out.append(f"Allocation rate over time (estimated bytes/s; {len(rep.rate_bytes)} bins of {bin_s:.3g} s)")
    out.append(f"  {sparkline(rep.rate_bytes)}")
    rate = rep.rate_bytes if len(rep.rate_bytes) else np.zeros(1)
    out.append(f"  min {fmt_bytes(rate.min())}/s  mean {fmt_bytes(rate.mean())}/s  max {fmt_bytes(rate.max())}/s")
    out.append("")
    out.append("Live estimate over time (estimated bytes allocated and not yet freed, since the recording began)")
    out.append(f"  {sparkline(rep.live_over_time)}")
    live = rep.live_over_time if len(rep.live_over_time) else np.zeros(1)
    out.append(f"  min {fmt_bytes(live.min())}  end {fmt_bytes(live[-1])}  max {fmt_bytes(live.max())}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------- HTML

import html as _html  # noqa: E402

BAR = "#4c78a8"
LINE = "#e45756"
LIVE = "#54a24b"


def _esc(text) -> str:
    return _html.escape(str(text), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list:
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return [lo] if np.isfinite(lo) else [0.0]
    return list(np.linspace(lo, hi, n))


def svg_hbars(rows, fmt, width=900, label_width=420) -> str:
    """Horizontal bars: rows is [(label, value)], largest first."""
    if not rows:
        return "<p class='empty'>no data</p>"
    bar_h, gap, top = 18, 6, 6
    height = top + len(rows) * (bar_h + gap)
    peak = max(max(v for _, v in rows), 1e-300)
    span = width - label_width - 110
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for i, (label, value) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(1.0, span * max(value, 0) / peak)
        short = label if len(label) <= 60 else "…" + label[-59:]
        parts.append(f"<text x='{label_width - 8}' y='{y + 13}' text-anchor='end' class='lbl'>{_esc(short)}</text>")
        parts.append(f"<rect x='{label_width}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='{BAR}'>"
                     f"<title>{_esc(label)}: {_esc(fmt(value))}</title></rect>")
        parts.append(f"<text x='{label_width + w + 6:.1f}' y='{y + 13}' class='val'>{_esc(fmt(value))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_columns(labels, values, fmt, width=900, height=260) -> str:
    """Vertical bars with a label under every few columns."""
    if len(values) == 0:
        return "<p class='empty'>no data</p>"
    left, bottom, top = 70, 46, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(float(np.max(values)), 1e-300)
    col = plot_w / len(values)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for t in _ticks(0, peak, 5):
        y = top + plot_h - plot_h * t / peak
        parts.append(f"<line x1='{left}' x2='{width - 10}' y1='{y:.1f}' y2='{y:.1f}' class='grid'/>")
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' class='axis'>{_esc(fmt(t))}</text>")
    every = max(1, int(np.ceil(len(values) / 12)))
    for i, (label, v) in enumerate(zip(labels, values)):
        h = plot_h * max(float(v), 0) / peak
        x = left + i * col
        parts.append(f"<rect x='{x + 1:.1f}' y='{top + plot_h - h:.1f}' width='{max(col - 2, 1):.1f}' "
                     f"height='{h:.1f}' fill='{BAR}'><title>{_esc(label)}: {_esc(fmt(v))}</title></rect>")
        if i % every == 0:
            parts.append(f"<text x='{x + col / 2:.1f}' y='{height - bottom + 16}' text-anchor='middle' "
                         f"class='axis'>{_esc(label)}</text>")
    parts.append(f"<line x1='{left}' x2='{width - 10}' y1='{top + plot_h}' y2='{top + plot_h}' class='axisline'/>")
    parts.append("</svg>")
    return "".join(parts)


def svg_line(xs, ys, fmt, color, xlabel="seconds since the first record", width=900, height=260) -> str:
    """A line (with a light area under it) of ys against xs."""
    xs, ys = np.asarray(xs, dtype=float), np.nan_to_num(np.asarray(ys, dtype=float))
    if len(ys) == 0:
        return "<p class='empty'>no data</p>"
    left, bottom, top, right = 80, 44, 10, 14
    plot_w, plot_h = width - left - right, height - bottom - top
    lo, hi = min(0.0, float(ys.min())), max(0.0, float(ys.max()))
    if hi <= lo:
        hi = lo + 1.0
    x0, x1 = float(xs[0]), float(xs[-1]) if xs[-1] > xs[0] else float(xs[0]) + 1.0

    def px(x):
        return left + plot_w * (x - x0) / (x1 - x0)

    def py(y):
        return top + plot_h - plot_h * (y - lo) / (hi - lo)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"]
    for t in _ticks(lo, hi, 5):
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{py(t):.1f}' y2='{py(t):.1f}' class='grid'/>")
        parts.append(f"<text x='{left - 6}' y='{py(t) + 4:.1f}' text-anchor='end' class='axis'>{_esc(fmt(t))}</text>")
    for t in _ticks(x0, x1, 6):
        parts.append(f"<text x='{px(t):.1f}' y='{height - bottom + 16}' text-anchor='middle' class='axis'>{t:.3g}</text>")
    parts.append(f"<text x='{left + plot_w / 2:.1f}' y='{height - 6}' text-anchor='middle' class='axis'>{_esc(xlabel)}</text>")
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    area = f"{px(xs[0]):.1f},{py(0):.1f} {points} {px(xs[-1]):.1f},{py(0):.1f}"
    parts.append(f"<polygon points='{area}' fill='{color}' fill-opacity='0.15' stroke='none'/>")
    parts.append(f"<polyline points='{points}' fill='none' stroke='{color}' stroke-width='2'/>")
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{py(0):.1f}' y2='{py(0):.1f}' class='axisline'/>")
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; margin: 2px 0; } .note { color: #a33; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f6f6f6; } td.site { text-align: left; font-family: ui-monospace, monospace; white-space: normal; }
svg text.lbl { font: 12px ui-monospace, monospace; fill: #333; }
svg text.val, svg text.axis { font: 11px system-ui, sans-serif; fill: #555; }
svg line.grid { stroke: #eee; } svg line.axisline { stroke: #999; }
.empty { color: #888; font-style: italic; }
"""


def _html_table(rows, total_bytes) -> str:
    if not rows:
        return "<p class='empty'>none recorded</p>"
    out = ["<table><tr><th>#</th><th>est. bytes</th><th>est. count</th><th>live bytes</th><th>share</th>"
           "<th>records</th><th>domain</th><th style='text-align:left'>site</th></tr>"]
    for i, r in enumerate(rows, 1):
        share = 100 * r.est_bytes / total_bytes if total_bytes > 0 else 0.0
        out.append(f"<tr><td>{i}</td><td>{_esc(fmt_bytes(r.est_bytes))}</td><td>{_esc(fmt_count(r.est_count))}</td>"
                   f"<td>{_esc(fmt_bytes(r.live_bytes))}</td><td>{share:.1f}%</td><td>{_records_cell(r.records)}</td>"
                   f"<td>{_esc(r.domain)}</td><td class='site'>{_esc(r.label)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def flame_graphs(stacks) -> str:
    """Two inline-SVG flame graphs of the report's stacks (allocator domains): estimated bytes
    allocated over the recording, and the live estimate at its end."""
    from .flamegraph import render_svg
    from .profiles import parse_frame
    from .profiles_otlp import Frame

    def frames(row):
        return tuple(Frame(function, file, line) for file, function, line in map(parse_frame, row.frames))

    allocated, live = {}, {}
    for row in stacks:
        if row.domain == "manual":
            continue
        key = frames(row)
        allocated[key] = allocated.get(key, 0.0) + row.est_bytes
        if row.live_bytes > 0:
            live[key] = live.get(key, 0.0) + row.live_bytes
    return (render_svg(allocated, "estimated bytes allocated", format_value=fmt_bytes)
            + render_svg(live, "live bytes at the end (estimate)", format_value=fmt_bytes))


def render_html(rep: Report) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no script, no external link."""
    total_bytes = float(rep.est_bytes.sum())
    nz = np.nonzero(rep.size_buckets)[0]
    lo_b, hi_b = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
    mids = (rep.bin_edges_s[:-1] + rep.bin_edges_s[1:]) / 2
    config = ", ".join(f"{_esc(k)}={_esc(v)}" for k, v in sorted(rep.config.items())) or "none recorded"
    body = [
        "<h1>memscope-otel report</h1>",
        f"<p class='meta'>{_esc(rep.path)}</p>",
        f"<p class='meta'>{_esc(rep.origin)}</p>" if rep.origin else
        f"<p class='meta'>recorded {_esc(_utc(rep.first_us))}, {rep.duration_s:.2f} s; {rep.n_records:,} sampled records "
        f"in {rep.n_chunks} chunks ({rep.n_allocs:,} allocations, {rep.n_frees:,} frees) from {rep.n_threads} threads</p>",
        f"<p class='meta'>estimated <b>{_esc(fmt_count(rep.est_count.sum()))}</b> allocations, "
        f"<b>{_esc(fmt_bytes(total_bytes))}</b> requested; live at the end <b>{_esc(fmt_bytes(rep.live_bytes.sum()))}</b>. "
        f"Estimates weigh each sampled record by the inverse of its sampling probability.</p>",
        f"<p class='meta'>settings: {config}</p>",
    ]
    if rep.truncated:
        body.append(f"<p class='note'>{_esc(rep.truncated)}; the complete chunks before it were read.</p>")
    body += [
        "<h2>Top sites by estimated bytes</h2>",
        svg_hbars([(f"{r.label} ({r.domain})", r.est_bytes) for r in rep.top_sites_by_bytes], fmt_bytes),
        _html_table(rep.top_sites_by_bytes, total_bytes),
        "<h2>Top sites by estimated count</h2>",
        _html_table(rep.top_sites_by_count, total_bytes),
        "<h2>Top types (manual API) by estimated bytes</h2>",
        svg_hbars([(r.label, r.est_bytes) for r in rep.top_types_by_bytes], fmt_bytes),
        _html_table(rep.top_types_by_bytes, total_bytes),
        "<h2>Size distribution</h2><p class='meta'>"
        f"{'allocations' if rep.size_buckets_exact else 'estimated allocations'} per power-of-two request size</p>",
        svg_columns([bucket_label(k) for k in range(lo_b, hi_b)], rep.size_buckets[lo_b:hi_b], fmt_count),
        "<h2>Allocation rate over time</h2><p class='meta'>estimated bytes allocated per second</p>",
        svg_line(mids, rep.rate_bytes, lambda v: fmt_bytes(v) + "/s", LINE),
        "<h2>Live estimate over time</h2><p class='meta'>estimated bytes allocated and not yet freed since the recording began</p>",
        svg_line(rep.bin_edges_s[1:], rep.live_over_time, fmt_bytes, LIVE),
        "<h2>Flame graphs</h2><p class='meta'>callers at the bottom, the allocating frame on top; a "
        "box's width is its share; hover for its figures</p>",
        flame_graphs(rep.stacks),
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>memscope-otel report: {_esc(rep.path)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
