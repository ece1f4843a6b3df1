"""The HTML report of ``memscope-otel run --html``: a ``report.Report`` made from a live run's
readings instead of a dump, so that ``report.render_html`` draws it.

The timelines come from the readings themselves: each interval between two readings (one a second)
is one bin, so their resolution is the reading interval.
"""
from __future__ import annotations

import shlex
import time

import numpy as np

from .reading import top_sites_by_bytes
from .records import DOMAINS
from .report import BUCKETS, Report, SiteRow


def _rows(pairs) -> list:
    return [SiteRow(id=0, label=key.label(), domain=key.domain, est_bytes=fig.bytes, est_count=fig.count,
                    live_bytes=fig.live, records=None) for key, fig in pairs]


def _per_domain(table) -> np.ndarray:
    """[domain][size class] -> [domain] totals."""
    return np.array([sum(row) for row in table], dtype=float)


def report_from_readings(reading, timeline, command, status_text: str, top: int = 15) -> Report:
    """``reading``: the run's last reading; ``timeline``: ``[(time_s, allocations, bytes, live)]``
    of every reading, oldest first (``TrackedProcess.timeline``)."""
    uptime = reading.uptime_s or 0.0
    start_s = reading.time_s - uptime
    points = [(start_s, 0.0, 0.0, 0.0)] + [p for p in timeline if p[0] > start_s]
    times = np.array([p[0] for p in points]) - start_s
    counts, nbytes, live = (np.array([p[i] for p in points]) for i in (1, 2, 3))
    spans = np.maximum(np.diff(times), 1e-9)
    now_us = int(time.time() * 1e6)
    first_us = now_us - int(uptime * 1e6)
    buckets = np.zeros(BUCKETS)
    for k, n in reading.by_size.items():
        if 0 <= k < BUCKETS:
            buckets[k] = n
    types = sorted(reading.types.items(), key=lambda kv: kv[1], reverse=True)[:top]
    type_rows = [SiteRow(0, name, "manual", b, 0.0, 0.0, None) for name, b in types]
    return Report(
        path=shlex.join(command), start_time_us=first_us, first_us=first_us, last_us=now_us,
        n_records=int(reading.samples), n_allocs=0, n_frees=0, n_chunks=0, n_threads=0,
        config={"small_sample_rate": reading.rates.get("small"), "medium_sample_rate": reading.rates.get("medium")},
        truncated=None,
        est_count=_per_domain(reading.allocations), est_bytes=_per_domain(reading.allocated),
        live_bytes=np.array(reading.live[:len(DOMAINS)], dtype=float),
        top_sites_by_bytes=_rows(top_sites_by_bytes(reading, top)),
        top_sites_by_count=_rows(sorted(reading.sites.items(), key=lambda kv: kv[1].count, reverse=True)[:top]),
        top_types_by_bytes=type_rows, top_types_by_count=[],
        size_buckets=buckets, bin_edges_s=times,
        rate_bytes=np.diff(nbytes) / spans, rate_count=np.diff(counts) / spans, live_over_time=live[1:],
        origin=(f"memscope-otel run: {status_text}; {uptime:.2f} s tracked, a reading every second; totals and the "
                f"size distribution are exact, sites and live bytes estimates ({int(reading.samples):,} sampled records)"),
        size_buckets_exact=True,
    )
