"""What a profile push contains: from the tracker's stacks (``Tracker.profile_stacks``), the
allocation profile of the interval since the last push (``alloc_objects``, ``alloc_space``:
weighted estimates, so unbiased) and the heap profile now (``inuse_objects``, ``inuse_space``: the
live table).

A sample's stack is the allocation's Python stack, innermost frame first (``<native>`` for
allocations without a Python frame, a type name for the manual API). Values are rounded to
integers, as profile formats require; each stack's pushed values are its rounded cumulative
estimate minus what was pushed before, so that over time they add up to within one unit of it.

What was pushed is kept by the stack's key (``ProfileStack.key``: where its sums live), not by
its frames: a CPython 3.10 name refined between two pushes, or an id reclaimed (its sums move to
its site's), would otherwise be pushed a second time in full. When a key goes away, what was
pushed for it moves with its sums (``retires_to``).
"""
from __future__ import annotations

import time

from .profiles_otlp import Frame, Profile


def key_of(stack):
    """Where a stack's cumulative sums live (ProfileStack.key), or its frames and domain."""
    return stack.key if stack.key is not None else (frames_of(stack), stack.domain)


def frames_of(stack):
    """A ``profiles.ProfileStack``'s frames as OTLP frames, innermost first."""
    return tuple(Frame(function, file, int(line)) for file, function, line in stack.frames)


class IntervalProfiles:
    """``build()`` gives each push's profiles; ``stacks()`` returns the tracker's stacks now
    (cumulative allocation estimates, live values)."""

    def __init__(self, stacks, clock_ns=time.time_ns):
        self.stacks = stacks
        self.clock_ns = clock_ns
        self._start_ns = clock_ns()
        # key -> (bytes, count) pushed so far, rounded, and where they go when the key goes; the
        # estimates are cumulative for the process (across stop/start), so the first interval
        # starts from where they are
        self._base = {key_of(s): (round(s.alloc_space), round(s.alloc_objects), s.retires_to) for s in stacks()}

    def build(self):
        stacks = self.stacks()
        now = self.clock_ns()
        space, objects, inuse_space, inuse_objects = {}, {}, {}, {}
        base = {}

        def add(table, key, value):
            if value > 0:
                table[key] = table.get(key, 0) + value

        pushed = self._moved_with_their_sums({key_of(stack) for stack in stacks})
        for stack in stacks:
            frames = frames_of(stack)
            key = key_of(stack)
            pushed_b, pushed_c = pushed.get(key, (0, 0))
            # (cumulative estimates only grow; max() keeps a float's last-digit wobble from
            # turning into a negative sample)
            rb, rc = max(round(stack.alloc_space), pushed_b), max(round(stack.alloc_objects), pushed_c)
            add(space, frames, rb - pushed_b)
            add(objects, frames, rc - pushed_c)
            base[key] = (rb, rc, stack.retires_to)
            add(inuse_space, frames, round(stack.inuse_space))
            add(inuse_objects, frames, round(stack.inuse_objects))
        self._base = base
        start, self._start_ns = self._start_ns, now
        duration = max(0, now - start)
        return [Profile("alloc_objects", "count", objects, start, duration),
                Profile("alloc_space", "bytes", space, start, duration),
                Profile("inuse_objects", "count", inuse_objects, now, 0),
                Profile("inuse_space", "bytes", inuse_space, now, 0)]

    def _moved_with_their_sums(self, present):
        """What was pushed per key present now, with what was pushed for the keys gone since
        added to the key their sums moved to (an id to its site, a site to ``<reclaimed>``)."""
        pushed = {}
        for key, (b, c, successor) in self._base.items():
            for _ in range(3):  # an id -> its site -> <reclaimed>, within one interval at most
                if key in present or successor is None:
                    break
                key = successor
                successor = self._base[key][2] if key in self._base else None
            if key in present:
                pb, pc = pushed.get(key, (0, 0))
                pushed[key] = (pb + b, pc + c)
        return pushed
