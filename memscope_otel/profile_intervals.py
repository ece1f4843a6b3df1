"""What a profile push contains: from the tracker's estimates, the allocation profile of the
interval since the last push (``alloc_objects``, ``alloc_space``: weighted estimates, so
unbiased) and the heap profile now (``inuse_space``: the live estimate).

A sample's stack is its site: one frame (file, qualified function, line), ``<native>`` for
allocations without a Python frame, a type name for the manual API. Values are rounded to integers,
as profile formats require, with the rounding carried to the next interval so that the sum of the
pushed values over time stays within one unit of the cumulative estimate.
"""
from __future__ import annotations

import time

from .profiles_otlp import Frame, Profile


def frame_of(site):
    """The frame of a site as profiles name it."""
    file = getattr(site, "file", None)
    if file is not None:
        return Frame(site.function, file, int(site.line))
    name = getattr(site, "name", None)
    if name is not None:  # a type of the manual API
        return Frame(name, "<type>", 0)
    return Frame(str(site), "", 0)


class IntervalProfiles:
    """``build()`` gives each push's profiles; ``estimates()`` returns the tracker's per-site sums
    now ({site: (estimated bytes, count, live bytes)}, cumulative)."""

    def __init__(self, estimates, clock_ns=time.time_ns):
        self.estimates = estimates
        self.clock_ns = clock_ns
        self._start_ns = clock_ns()
        self._base = {}  # site -> (bytes, count) pushed so far, rounded

    def build(self):
        per_site = self.estimates()
        now = self.clock_ns()
        space, objects, inuse = {}, {}, {}
        base = {}
        for site, (b, c, live) in per_site.items():
            frames = (frame_of(site),)
            pushed_b, pushed_c = self._base.get(site, (0, 0))
            # (cumulative estimates only grow; max() keeps a float's last-digit wobble from
            # turning into a negative sample)
            rb, rc = max(round(b), pushed_b), max(round(c), pushed_c)
            if rb > pushed_b:
                space[frames] = space.get(frames, 0) + rb - pushed_b
            if rc > pushed_c:
                objects[frames] = objects.get(frames, 0) + rc - pushed_c
            base[site] = (rb, rc)
            if round(live) > 0:
                inuse[frames] = inuse.get(frames, 0) + round(live)
        self._base = base
        start, self._start_ns = self._start_ns, now
        duration = max(0, now - start)
        return [Profile("alloc_objects", "count", objects, start, duration),
                Profile("alloc_space", "bytes", space, start, duration),
                Profile("inuse_space", "bytes", inuse, now, 0)]
