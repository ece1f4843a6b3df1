"""What ``memscope-otel top`` shows, as text: the screen of the terminal view and the one line per
interval written when stdout is not a terminal. Pure functions of two readings, so that they
are tested without a terminal; ``top.py`` puts them on the screen.
"""
from __future__ import annotations

import time

from .reading import rates_between, top_live_sites
from .records import DOMAINS, SIZE_CLASSES
from .report import fmt_bytes, fmt_count

HEADER, TITLE, NORMAL = "header", "title", "normal"  # how top.py styles a line


def _rate(n: float) -> str:
    return f"{fmt_count(n)}/s"


def _bytes_rate(n: float) -> str:
    return f"{fmt_bytes(n)}/s"


def _sampling(reading) -> str:
    rates = reading.rates
    return "  ".join(f"{c} {rates[c]:.3g}" for c in SIZE_CLASSES if c in rates)


def screen_lines(source: str, status: str, before, after, width: int, height: int) -> list:
    """The screen as ``[(style, text)]``, at most ``height`` lines of at most ``width`` columns.
    ``before``/``after`` are the two last readings (``before`` None until there are two)."""
    clock = time.strftime("%H:%M:%S")
    lines = [(HEADER, f"memscope-otel top — {source} — {status} — {clock} — q quits")]
    if after is None:
        lines.append((NORMAL, "waiting for the first reading…"))
        return _fit(lines, width, height)
    rates = rates_between(before, after) if before is not None else None
    lines.append((NORMAL, ""))
    lines.append((TITLE, f"  {'domain':<8}{'allocs/s':>12}{'bytes/s':>14}{'frees/s':>12}{'live (est.)':>14}"
                         f"{'allocations':>13}{'allocated':>12}"))
    for d in after.domains_seen():
        lines.append((NORMAL, _domain_row(DOMAINS[d], rates, d, after)))
    lines.append((NORMAL, _domain_row("total", rates, None, after)))
    lines.append((NORMAL, ""))
    samples = f"samples {_rate(rates.samples)}" if rates else f"samples {fmt_count(after.samples)}"
    dropped = f"dropped {_rate(rates.dropped)} ({fmt_count(after.dropped)} in all)" if rates \
        else f"dropped {fmt_count(after.dropped)}"
    lines.append((NORMAL, f"  sampling   {_sampling(after)}   {samples}   {dropped}"))
    cost = []
    if after.footprint is not None:
        cost.append(f"memory {fmt_bytes(after.footprint)}")
    if rates is not None and rates.sampled_path_share is not None:
        cost.append(f"sampled path {rates.sampled_path_share * 1e3:.2f} ms/s")
    if after.pressure is not None:
        cost.append(f"export pressure {after.pressure:.2f}" + (f" ({after.workload})" if after.workload else ""))
    lines.append((NORMAL, "  tracker    " + ("   ".join(cost) if cost else "(its cost is not on this page)")))
    lines.append((NORMAL, ""))
    room = max(0, height - len(lines) - 4)  # two titles, one blank line, one spare
    by_rate = rates.top_sites(max(1, room // 2)) if rates is not None else []
    site_width = max(20, min(width - 44, 100))
    lines.append((TITLE, f"  {'top sites by bytes/s (estimate)':<{site_width}}{'bytes/s':>14}{'allocs/s':>12}{'live':>12}"))
    if rates is None:
        lines.append((NORMAL, "  (rates from the next reading on)"))
    for key, b, c in by_rate:
        live = after.sites[key].live if key in after.sites else 0.0
        lines.append((NORMAL, f"  {_site(key, site_width - 2):<{site_width - 2}}{_bytes_rate(b):>16}{_rate(c):>12}"
                              f"{fmt_bytes(live):>12}"))
    lines.append((NORMAL, ""))
    lines.append((TITLE, f"  {'top sites by live bytes (estimate)':<{site_width}}{'live':>14}{'allocated':>12}"))
    for key, figures in top_live_sites(after, max(1, height - len(lines) - 1)):
        lines.append((NORMAL, f"  {_site(key, site_width - 2):<{site_width - 2}}{fmt_bytes(figures.live):>16}"
                              f"{fmt_bytes(figures.bytes):>12}"))
    return _fit(lines, width, height)


def _site(key, width: int) -> str:
    """The site's label and its domain, cut to ``width`` (the same line can allocate in two domains)."""
    suffix = f" ({key.domain})"
    return key.label(max(width - len(suffix), 10)) + suffix


def _domain_row(name, rates, d, reading) -> str:
    if d is None:
        allocs = sum(rates.allocations) if rates else None
        nbytes = sum(rates.allocated) if rates else None
        frees = sum(rates.deallocations) if rates else None
        live, total_n, total_b = reading.total_live, reading.total_allocations, reading.total_allocated
    else:
        allocs = rates.allocations[d] if rates else None
        nbytes = rates.allocated[d] if rates else None
        frees = rates.deallocations[d] if rates else None
        live, total_n, total_b = reading.live[d], sum(reading.allocations[d]), sum(reading.allocated[d])
    dash = "…"
    return (f"  {name:<8}{_rate(allocs) if allocs is not None else dash:>12}"
            f"{_bytes_rate(nbytes) if nbytes is not None else dash:>14}{_rate(frees) if frees is not None else dash:>12}"
            f"{fmt_bytes(live):>14}{fmt_count(total_n):>13}{fmt_bytes(total_b):>12}")


def _fit(lines, width, height) -> list:
    return [(style, text[:max(width - 1, 0)]) for style, text in lines[:max(height, 0)]]


def plain_line(before, after) -> str:
    """One line for a non-terminal stdout: rates over the last interval, the live estimate, and
    the site with the most bytes/s."""
    clock = time.strftime("%H:%M:%S")
    if before is None:
        return (f"{clock} allocations {fmt_count(after.total_allocations)} bytes {fmt_bytes(after.total_allocated)} "
                f"live {fmt_bytes(after.total_live)} (rates from the next line on)")
    rates = rates_between(before, after)
    top = rates.top_sites(1)
    site = f"{_site(top[0][0], 70)} {_bytes_rate(top[0][1])}" if top else "-"
    return (f"{clock} allocs/s {fmt_count(sum(rates.allocations))} bytes/s {fmt_bytes(sum(rates.allocated))} "
            f"live {fmt_bytes(after.total_live)} samples/s {fmt_count(rates.samples)} "
            f"dropped {fmt_count(after.dropped)} top {site}")
