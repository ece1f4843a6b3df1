"""One reading of what memscope reports about a process, and the rates between two readings.

A :class:`Reading` holds cumulative values, exactly like the exported metrics: it can come from a
tracked child process (``reading_stream``) or from a ``/metrics`` page (``prometheus_reading``),
and the command line's views (the ``run`` summary, ``top``) only ever look at readings, so they
do not care where the numbers came from. Exact counters and estimates are kept apart, as the
metrics keep them: ``allocations``/``allocated``/``deallocations``/``by_size`` are exact, the
per-site figures and ``live`` are Horvitz-Thompson estimates.
"""
from __future__ import annotations

import dataclasses
import os

from .records import DOMAINS, SIZE_CLASSES


@dataclasses.dataclass(frozen=True)
class SiteKey:
    """An allocation site as the metrics name it (file, qualified function, line, domain)."""

    file: str
    function: str
    line: int
    domain: str

    def label(self, width: int | None = None) -> str:
        """``file:function:line``; with ``width``, the file's directories are dropped first and
        the front of the label cut, so the function and line (the telling part) stay visible."""
        text = f"{self.file}:{self.function}:{self.line}"
        if width is None or len(text) <= width:
            return text
        text = f"{os.path.basename(self.file)}:{self.function}:{self.line}"
        return text if len(text) <= width else "…" + text[-(width - 1):]


@dataclasses.dataclass
class SiteFigures:
    """A site's estimates: bytes and allocations since the start (cumulative), bytes live now."""

    bytes: float = 0.0
    count: float = 0.0
    live: float = 0.0


def _zeros(*shape):
    if len(shape) == 1:
        return [0.0] * shape[0]
    return [_zeros(*shape[1:]) for _ in range(shape[0])]


@dataclasses.dataclass
class Reading:
    """Everything known about the tracked process at ``time_s`` (seconds on the reader's clock).

    Lists are indexed like the C side's arrays: ``[domain][size class]`` with domains in
    ``records.DOMAINS`` order and size classes in ``records.SIZE_CLASSES`` order."""

    time_s: float
    allocations: list = dataclasses.field(default_factory=lambda: _zeros(len(DOMAINS), len(SIZE_CLASSES)))
    allocated: list = dataclasses.field(default_factory=lambda: _zeros(len(DOMAINS), len(SIZE_CLASSES)))
    deallocations: list = dataclasses.field(default_factory=lambda: _zeros(len(DOMAINS)))
    by_size: dict = dataclasses.field(default_factory=dict)  # power-of-two bucket k -> exact allocations
    live: list = dataclasses.field(default_factory=lambda: _zeros(len(DOMAINS)))
    sites: dict = dataclasses.field(default_factory=dict)  # SiteKey -> SiteFigures
    types: dict = dataclasses.field(default_factory=dict)  # manual API type name -> estimated bytes
    rates: dict = dataclasses.field(default_factory=dict)  # size class -> sampling probability
    samples: float = 0.0           # records the sampler wrote (exact)
    dropped: float = 0.0           # records lost to full rings (exact)
    footprint: float | None = None  # bytes the tracker's C side holds
    sampled_path_s: float | None = None  # time spent in the sampled path, all threads
    reporter_cpu_s: float | None = None  # CPU time of the thread that produced the readings
    pressure: float | None = None   # the optimizer's export pressure (0 to 1)
    workload: str | None = None     # the optimizer's recognized workload
    domains: tuple = ()             # domains the tracker hooks
    uptime_s: float | None = None   # seconds since tracking started, when the source knows
    final: bool = False             # the process's last reading, taken as it exited

    @property
    def total_allocations(self) -> float:
        return float(sum(sum(row) for row in self.allocations))

    @property
    def total_allocated(self) -> float:
        return float(sum(sum(row) for row in self.allocated))

    @property
    def total_live(self) -> float:
        return float(sum(self.live))

    def domains_seen(self) -> list:
        """Indexes of the domains hooked or with any allocation (what the metrics export)."""
        return [d for d, name in enumerate(DOMAINS) if name in self.domains or any(self.allocations[d])]


@dataclasses.dataclass
class Rates:
    """What happened between two readings, per second."""

    seconds: float
    allocations: list   # [domain] allocations/s (exact)
    allocated: list     # [domain] bytes/s (exact)
    deallocations: list  # [domain] frees/s (exact)
    samples: float
    dropped: float
    sites: dict         # SiteKey -> (bytes/s, allocations/s), estimated; only sites that grew
    sampled_path_share: float | None  # seconds in the sampled path per second (all threads)

    def top_sites(self, n: int) -> list:
        """The n sites with the most bytes/s: [(SiteKey, bytes/s, allocations/s)]."""
        ranked = sorted(self.sites.items(), key=lambda kv: kv[1][0], reverse=True)[:n]
        return [(key, b, c) for key, (b, c) in ranked]


def rates_between(before: Reading, after: Reading) -> Rates:
    """Per-second rates from ``before`` to ``after``. A counter that went down (the process
    restarted, or forked and the reading is the child's) counts as starting again from zero."""
    seconds = max(after.time_s - before.time_s, 1e-9)

    def per_s(new, old):
        return (new - old if new >= old else new) / seconds

    sites = {}
    for key, now in after.sites.items():
        was = before.sites.get(key)
        if was is None:
            continue  # first seen in this reading: its growth since the start is not this interval's
        db, dc = per_s(now.bytes, was.bytes), per_s(now.count, was.count)
        if db > 0 or dc > 0:
            sites[key] = (db, dc)
    path_share = None
    if after.sampled_path_s is not None and before.sampled_path_s is not None:
        path_share = per_s(after.sampled_path_s, before.sampled_path_s)
    return Rates(
        seconds=seconds,
        allocations=[per_s(sum(a), sum(b)) for a, b in zip(after.allocations, before.allocations)],
        allocated=[per_s(sum(a), sum(b)) for a, b in zip(after.allocated, before.allocated)],
        deallocations=[per_s(a, b) for a, b in zip(after.deallocations, before.deallocations)],
        samples=per_s(after.samples, before.samples),
        dropped=per_s(after.dropped, before.dropped),
        sites=sites,
        sampled_path_share=path_share,
    )


def top_live_sites(reading: Reading, n: int) -> list:
    """The n sites with the most live bytes: [(SiteKey, SiteFigures)], live bytes > 0 only."""
    ranked = sorted(reading.sites.items(), key=lambda kv: kv[1].live, reverse=True)
    return [(key, fig) for key, fig in ranked[:n] if fig.live > 0]


def top_sites_by_bytes(reading: Reading, n: int) -> list:
    """The n sites with the most estimated bytes since the start: [(SiteKey, SiteFigures)]."""
    ranked = sorted(reading.sites.items(), key=lambda kv: kv[1].bytes, reverse=True)
    return [(key, fig) for key, fig in ranked[:n] if fig.bytes > 0]
