"""The drainer: one background thread that moves records out of the rings into the Summary.

A ring that fills wakes the mover (csrc/stage.c), a native thread that moves its records into a
staging buffer without the GIL; the drainer itself runs every ``drain_interval_ms`` (up to five
intervals apart while fewer than 16,384 records wait and no dump is written, and not at all while
none waits: each wake-up makes it take the GIL back from the application), as soon as the stage
is half full (the mover wakes it), and whenever metrics are collected (``drain()``), so that a
collection right after a workload sees all of it. A drain takes the staged records first, then
what is left in the rings, in calls into C that keep the GIL (short: giving it up and taking it
back would force a switch on the application each time). Its own allocations are never tracked.

Who reads records decides what the mover keeps of them: with a sink (the dump writer, a test's
collector) every record, reduced here; otherwise the mover reduces them itself and stages none,
so a busy program's records no longer fill the stage and wake the drainer. The workload
recognizer is not a reader here: its window is given the records in C as they leave the rings
(sampler.attach_window).
"""
import ctypes
import logging
import threading

from . import sampler
from .cpu_meter import CpuMeter

log = logging.getLogger("memscope_otel")


class DrainLock:
    """The drainer's lock, re-entrant: a signal handler that calls stop() (or takes a snapshot)
    may run on a thread that is inside drain(); with a plain lock that thread would wait for
    itself forever. While it is held the mover moves nothing either, so every record stays where
    it is: a reader sees a summary no drain changes, a test sees full rings fill."""

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0
        ffi, lib = sampler._lib()
        self._pause = sampler.keeping_the_gil(ffi, lib, "ms_mover_pause", None, ctypes.c_int)

    def acquire(self, blocking=True, timeout=-1):
        if not self._lock.acquire(blocking, timeout):
            return False
        self._depth += 1
        if self._depth == 1:
            self._pause(1)
        return True

    def release(self):
        self._depth -= 1
        if self._depth == 0:
            self._pause(0)
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc_info):
        self.release()


class Drainer:
    def __init__(self, summary, interval_s, sinks=()):
        self.summary = summary
        self.interval_s = interval_s
        self._stage_keep = sampler.stage_keep
        # The mover's setting is computed from the sinks and set in one step under this lock: a
        # thread adding a sink must not have its setting overwritten by one computed before the
        # sink was there on another (start(), or one removing a sink: the mover would reduce
        # what the sink should get). Re-entrant: a signal handler may add or remove a sink on a
        # thread that holds it.
        self._keep_lock = threading.RLock()
        self._sinks = tuple(sinks)
        self._keep_changed()
        # Periodic drains with few records waiting are skipped (see ms_wait_for_work), unless a
        # sink given here (the dump writer) wants every interval's records.
        self.skip_below = 0 if self.sinks else sampler.drain_min_records()
        self.records_drained = 0
        self.drains = 0
        self.relinks_seen = 0
        self._buffer = sampler.DrainBuffer()
        # Held while records are reduced into the summary; readers take it for a consistent copy.
        self.lock = DrainLock()
        self._drain_owner = None  # the thread in drain() (it holds the lock), or None
        # CPU time spent in drain() on any thread: records drained and reduced, sites resolved,
        # sinks fed (read by the optimizer: a cost that sampling rates change; and reported as
        # memscope.tracker.cpu{memscope.component="drainer"}).
        self.cpu = CpuMeter()
        # The site resolver: told before and after every complete drain (the reuse of site ids
        # counts drains, and new sites are resolved after each one). See memscope_otel/sites.py.
        self.sites = None
        self._stopping = threading.Event()
        self._thread = None
        self._mover_cpu0 = None  # the mover's CPU time when this drainer started it
        self._mover = False  # whether it runs (it polls the native domain, see drain())
        self._sites_failed = False  # the last drain's after_drain raised
        self._ring_passes0 = sampler.ring_passes()

    @property
    def sinks(self):
        """Callables (records, base_us) given every record, e.g. the dump writer (a tuple:
        :meth:`add_sink` and :meth:`remove_sink` change it)."""
        return self._sinks

    def add_sink(self, sink):
        """Gives ``sink`` every record made from now on (and those drained from now on): the
        mover keeps every record, unreduced, once a pass under way has ended (this waits for it).
        The drains' cadence stays as the drainer was made: only sinks given to the constructor
        (the dump writer, whose chunks are intervals) stop periodic drains from being skipped."""
        with self._keep_lock:
            self._sinks += (sink,)
            self._set_keep()

    def remove_sink(self, sink):
        """Stops giving ``sink`` records (ValueError if it is not one)."""
        with self._keep_lock:
            sinks = list(self._sinks)
            sinks.remove(sink)
            self._sinks = tuple(sinks)
            self._set_keep()

    def _set_keep(self):  # (with _keep_lock)
        self._stage_keep(bool(self._sinks))

    def _keep_changed(self):
        with self._keep_lock:
            self._set_keep()

    @property
    def ring_passes(self):
        """(passes over the threads' rings, by the mover and the drainer, since this drainer
        started; the sum over them of the most records one thread's ring gave): how full the
        fullest ring gets before it is emptied (records_drained / passes would be every ring's
        together)."""
        passes, fullest = sampler.ring_passes()
        passes0, fullest0 = self._ring_passes0
        return passes - passes0, fullest - fullest0

    @property
    def cpu_ns(self):
        """CPU time spent draining on any thread, and by the mover since this drainer started,
        cumulative, in ns."""
        return self.cpu.ns + (sampler.mover_cpu_ns() - self._mover_cpu0 if self._mover_cpu0 is not None else 0)

    def start(self):
        self._keep_changed()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="memscope-drainer", daemon=True)
        self._thread.start()
        # Started after the thread: the rings wake the drainer until the mover runs (and for
        # good if it cannot start).
        self._mover_cpu0 = sampler.mover_cpu_ns()
        self._mover = sampler.mover_start()
        if not self._mover:
            log.warning("memscope could not start its record mover thread; the drainer empties the buffers itself")

    def _run(self):
        sampler.ignore_this_thread()
        interval_ms = max(1, int(self.interval_s * 1000))
        while True:
            # Sleeps in C (GIL released) until the interval passes or the stage is half full;
            # not at all while the site ids run short (see SiteResolver.short_of_ids), unless
            # resolving them failed (the next try waits, rather than spin logging the failure).
            if self.sites is None or self._sites_failed or not self.sites.short_of_ids():
                sampler.wait_for_work(interval_ms, self.skip_below)
            if self._stopping.is_set():
                break
            try:
                self.drain(native_poll=not self._mover)
            except Exception:  # the tracked application must never see our failures
                log.exception("memscope drainer failed; records of this round are lost")
            if self.sites is not None:
                try:  # (3.10: qualified names, found by a walk of the heap that no collection waits for)
                    self.sites.refine_names()
                except Exception:
                    log.exception("memscope could not refine site names")

    def drain(self, native_poll=True):
        """Drains every ring now; returns the number of records it added to the summary (moved
        here, or reduced by the mover since the last drain). Called again from a signal
        handler interrupting a drain on the same thread, it returns 0 at once: the drain it
        interrupted (which owns the buffer its records are in) goes on when the handler returns.
        ``native_poll``: first patch the objects loaded since the mover's last poll (a collection
        counts what was just loaded), giving the GIL up for it."""
        moved = 0
        if native_poll:
            sampler.native_poll()
        with sampler.ignored(), self.lock:
            if self._drain_owner is not None:  # (only this thread can be it: it holds the lock)
                return 0
            self._drain_owner = threading.get_ident()
            try:
                with self.cpu.measure():
                    if self.sites is not None:
                        self.sites.before_drain()
                    moved = self._drain_locked()
                    if self.sites is not None:
                        try:
                            self.sites.after_drain(self.summary)
                            self._sites_failed = False
                        except Exception:  # the records are in the summary: only ids wait longer
                            self._sites_failed = True
                            log.exception("memscope could not resolve or reclaim site ids after a drain")
            finally:
                self._drain_owner = None
            self.records_drained += moved
            self.drains += 1
        return moved

    def _drain_locked(self):
        moved = 0
        while True:
            buffer = self._buffer
            records, base_us = buffer.drain(self.summary)  # drained and reduced
            if buffer.relinked:
                self._relinked(buffer.relinked)
            if len(records):
                for sink in self._sinks:
                    self._feed(sink, records, base_us)
            moved += buffer.folded + len(records)
            if not buffer.more:
                break
        return moved

    @staticmethod
    def _feed(sink, *args):
        try:
            sink(*args)
        except Exception:
            log.exception("memscope record sink %r failed", sink)

    def _relinked(self, mask):
        names = ", ".join(name for bit, name in enumerate(("obj", "mem", "raw")) if mask >> bit & 1)
        # Once per tracker at WARNING: a tool that keeps unlinking us must not flood the log.
        level = logging.DEBUG if self.relinks_seen else logging.WARNING
        self.relinks_seen += 1
        log.log(level, "memscope's allocator hook of the %s domain(s) was unlinked by another tool while "
                "running (tracemalloc.stop() does that when memscope started after tracemalloc); "
                "installed again, counting goes on (allocations in between were not counted)", names)

    def stop(self):
        """Ends the thread after a last drain. From a signal handler that interrupted a drain on
        this thread, neither waits: the thread may be waiting for the lock this one holds, and
        the interrupted drain takes what is left when the handler returns."""
        self._stopping.set()
        sampler.mover_stop()  # (its staged records are taken by the last drain below)
        sampler.wake_drainer()
        if self._drain_owner == threading.get_ident():
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            try:
                self._thread.join(timeout=5)
            except RuntimeError:  # start() was interrupted before the thread said it runs: it
                pass              # sees _stopping at its first wake-up and ends
        self._thread = None
        self.drain()
