"""The summary ``memscope-otel run`` prints on stderr when the program ends, from its last reading.

In the text report's style (``report.py``'s tables and histogram): exact totals by domain and size
class, the top sites by estimated bytes and by live bytes, the exact size histogram, and what the
tracker itself cost.
"""
from __future__ import annotations

import shlex
import signal

from .reading import top_live_sites, top_sites_by_bytes
from .records import DOMAINS, SIZE_CLASSES
from .report import SiteRow, fmt_bytes, fmt_count, site_table, size_distribution

HISTOGRAM_WIDTH = 40


def describe_status(status: int) -> str:
    """'exit status 3' or 'killed by SIGTERM' for a subprocess-style status."""
    if status >= 0:
        return f"exit status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"killed by {name}"


def _rows(pairs) -> list:
    return [SiteRow(id=0, label=key.label(), domain=key.domain, est_bytes=fig.bytes, est_count=fig.count,
                    live_bytes=fig.live, records=None) for key, fig in pairs]


def _totals(reading) -> list:
    out = ["Allocations (exact)",
           f"  {'domain':<8}{'size class':<12}{'count':>10}  {'bytes':>11}  {'frees':>10}"]
    for d in reading.domains_seen():
        for c, size_class in enumerate(SIZE_CLASSES):
            frees = fmt_count(reading.deallocations[d]) if c == 0 else ""
            out.append(f"  {DOMAINS[d] if c == 0 else '':<8}{size_class:<12}{fmt_count(reading.allocations[d][c]):>10}  "
                       f"{fmt_bytes(reading.allocated[d][c]):>11}  {frees:>10}")
    out.append(f"  {'total':<20}{fmt_count(reading.total_allocations):>10}  {fmt_bytes(reading.total_allocated):>11}  "
               f"{fmt_count(sum(reading.deallocations)):>10}")
    out.append("")
    return out


def _own_cost(reading) -> list:
    parts = []
    if reading.footprint is not None:
        parts.append(f"{fmt_bytes(reading.footprint)} of memory on the C side")
    if reading.sampled_path_s is not None:
        parts.append(f"{reading.sampled_path_s * 1e3:.1f} ms in the sampled path")
    if reading.reporter_cpu_s is not None:
        parts.append(f"{reading.reporter_cpu_s * 1e3:.1f} ms CPU making these readings")
    rates = reading.rates
    sampling = ", ".join(f"{c} {rates[c]:g}" for c in SIZE_CLASSES if c in rates)
    return ["The tracker's own cost",
            "  " + "; ".join(parts),
            f"  {fmt_count(reading.samples)} records sampled, {fmt_count(reading.dropped)} dropped (full rings); "
            f"sampling rates: {sampling}",
            ""]


def render_summary(reading, command, status: int, top: int = 10) -> str:
    """The summary of a finished run. ``reading`` is its last reading (None if none arrived);
    ``command`` the program's command line; ``status`` its subprocess-style exit status."""
    head = f"memscope-otel run: {shlex.join(command)}: {describe_status(status)}"
    if reading is None:
        return (head + "\n  no reading arrived from the program: it ended before the first one, or the tracker is "
                       "disabled there (OTEL_PYTHON_MEMSCOPE_ENABLED=false, OTEL_SDK_DISABLED=true)\n")
    out = [head]
    when = f"{reading.uptime_s:.2f} s tracked" if reading.uptime_s is not None else "tracked"
    out.append(f"  {when}; {fmt_count(reading.total_allocations)} allocations, "
               f"{fmt_bytes(reading.total_allocated)} requested; live {'at the end' if reading.final else 'then'} "
               f"(estimate): {fmt_bytes(reading.total_live)}")
    if not reading.final:
        out.append("  the program ended without a final reading: these figures are from its last periodic one")
    out.append("  (estimates: each sampled allocation counts as 1/sampling probability allocations)")
    out.append("")
    out += _totals(reading)
    total = reading.total_allocated
    out += site_table(_rows(top_sites_by_bytes(reading, top)), "Top sites by estimated bytes", total)
    out += site_table(_rows(top_live_sites(reading, top)), "Top sites by live bytes at the end (estimate)", total)
    if reading.types:
        ranked = sorted(reading.types.items(), key=lambda kv: kv[1], reverse=True)[:top]
        out.append("Top types (manual API) by estimated bytes")
        out += [f"  {fmt_bytes(b):>11}  {name}" for name, b in ranked]
        out.append("")
    buckets = [0.0] * (max(reading.by_size, default=0) + 1)
    for k, n in reading.by_size.items():
        buckets[k] = n
    out += size_distribution(buckets, "Size distribution (exact allocations per power-of-two size)", HISTOGRAM_WIDTH)
    out += _own_cost(reading)
    return "\n".join(line.rstrip() for line in out)
