"""Readings sent from a tracked child process to the command line that started it, over a pipe.

One JSON object per line. ``{"reading": {...}}`` carries the exact counters in full (they are a few
hundred numbers) and, to keep lines short with thousands of sites, only the sites whose figures
changed since the previous line, each under a small integer key whose label is sent once, the
first time the key appears. ``{"error": "..."}`` says the child could not start the program.
:class:`ReadingEncoder` (in the child) writes them; :class:`ReadingDecoder` (in the parent) turns
them back into complete :class:`~memscope_otel.reading.Reading` objects.
"""
from __future__ import annotations

import json
import time

from .reading import Reading, SiteFigures, SiteKey


def _plain(array) -> list:
    return [[float(x) for x in row] for row in array] if getattr(array, "ndim", 1) == 2 else [float(x) for x in array]


class ReadingEncoder:
    """Turns tracker snapshots (``memscope_otel.snapshot()``) into lines of the stream."""

    def __init__(self, started_s: float):
        self._started_s = started_s  # time.monotonic() when tracking started
        self._keys = {}   # SiteKey or ("type", name) -> integer key
        self._sent = {}   # integer key -> (bytes, count, live) last sent

    def encode(self, snapshot, *, final=False, reporter_cpu_s=None, optimizer=None) -> bytes:
        """One line for ``snapshot``: its sites as resolved when it was taken (``per_site``: the
        sites of reclaimed ids included, so that a program that generates code loses nothing)."""
        grouped, labels = {}, {}
        for resolved, (nbytes, count, live) in snapshot.per_site.items():
            if hasattr(resolved, "name"):  # a type of the manual API
                identity = ("type", resolved.name)
            else:
                identity = SiteKey(resolved.file, resolved.function, resolved.line, resolved.domain)
            key = self._keys.get(identity)
            if key is None:
                key = self._keys[identity] = len(self._keys)
                labels[key] = (list(identity) if isinstance(identity, tuple)
                               else [identity.file, identity.function, identity.line, identity.domain])
            acc = grouped.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += nbytes
            acc[1] += count
            acc[2] += live
        changed = []
        for key, figures in grouped.items():
            figures = tuple(figures)
            if self._sent.get(key) != figures:
                self._sent[key] = figures
                changed.append([key, *figures])
        # Sites no longer in the snapshot: renamed (3.10 qualified names), or folded into
        # <reclaimed> past the sites a summary keeps by name.
        gone = [key for key in self._sent if key not in grouped]
        for key in gone:
            del self._sent[key]
        c = snapshot.counters
        medium, small = snapshot.rates
        by_size = c.by_size.sum(axis=0)
        now = time.monotonic()
        body = {
            "time_s": now,
            "uptime_s": now - self._started_s,
            "final": final,
            "domains": list(snapshot.domains),
            "allocations": _plain(c.allocations),
            "allocated": _plain(c.bytes),
            "deallocations": _plain(c.deallocations),
            "by_size": {str(k): float(by_size[k]) for k in by_size.nonzero()[0]},
            "live": _plain(snapshot.live_bytes),
            "rates": {"small": small, "medium": medium, "large": 1.0},
            "samples": int(c.samples),
            "dropped": int(c.dropped),
            "footprint": int(c.footprint_bytes),
            "sampled_path_s": c.slow_path_ns / 1e9,
            "reporter_cpu_s": reporter_cpu_s,
            "labels": {str(k): v for k, v in labels.items()},
            "sites": changed,
            "gone": gone,
        }
        if optimizer is not None:
            body["pressure"] = float(optimizer.pressure)
            body["workload"] = str(optimizer.workload)
        return (json.dumps({"reading": body}, separators=(",", ":")) + "\n").encode()


def encode_error(message: str) -> bytes:
    """The line that tells the parent the program could not be started, and why."""
    return (json.dumps({"error": message}) + "\n").encode()


class StreamError(Exception):
    """The child reported that it could not start the program (the message says why)."""


class ReadingDecoder:
    """Rebuilds complete readings from the lines of one stream, in order."""

    def __init__(self):
        self._labels = {}   # integer key -> SiteKey or type name
        self._figures = {}  # integer key -> SiteFigures

    def decode(self, line: bytes) -> Reading:
        """The reading a line carries; raises StreamError for an error line and ValueError for
        a line that is not part of the stream."""
        message = json.loads(line)
        if "error" in message:
            raise StreamError(str(message["error"]))
        body = message["reading"]
        for key, label in body["labels"].items():
            if label[0] == "type" and len(label) == 2:
                self._labels[int(key)] = label[1]
            else:
                file, function, line_no, domain = label
                self._labels[int(key)] = SiteKey(file, function, int(line_no), domain)
        for key, nbytes, count, live in body["sites"]:
            self._figures[int(key)] = SiteFigures(nbytes, count, live)
        for key in body.get("gone", ()):
            self._figures.pop(int(key), None)
        sites, types = {}, {}
        for key, figures in self._figures.items():
            label = self._labels.get(key)
            if isinstance(label, SiteKey):
                sites[label] = figures
            elif label is not None:
                types[label] = figures.bytes
        return Reading(
            time_s=body["time_s"],
            allocations=body["allocations"],
            allocated=body["allocated"],
            deallocations=body["deallocations"],
            by_size={int(k): v for k, v in body["by_size"].items()},
            live=body["live"],
            sites=sites,
            types=types,
            rates=body["rates"],
            samples=body["samples"],
            dropped=body["dropped"],
            footprint=body["footprint"],
            sampled_path_s=body["sampled_path_s"],
            reporter_cpu_s=body.get("reporter_cpu_s"),
            pressure=body.get("pressure"),
            workload=body.get("workload"),
            domains=tuple(body["domains"]),
            uptime_s=body["uptime_s"],
            final=bool(body["final"]),
        )

