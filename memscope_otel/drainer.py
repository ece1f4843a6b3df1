"""The drainer: one background thread that moves records out of the rings into the Summary.

It runs every ``drain_interval_ms`` (up to five intervals apart while fewer than 4,096 records wait
and no dump is written: each wake-up makes it take the GIL back from the application), as soon as
any thread's ring is half full (the C side wakes it), and whenever metrics are collected (``drain()``), so that a
collection right after a workload sees all of it. Its own allocations are never tracked, and it
spends its time in C with the GIL released (cffi releases it around every call).
"""
import logging
import threading

import numpy as np

from . import sampler
from .cpu_meter import CpuMeter

log = logging.getLogger("memscope_otel")


class Drainer:
    def __init__(self, summary, interval_s, sinks=()):
        self.summary = summary
        self.interval_s = interval_s
        self.sinks = list(sinks)  # callables (records, base_us), e.g. the dump writer
        # Periodic drains with few records waiting are skipped (see ms_wait_for_work), unless a
        # sink given here (the dump writer) wants every interval's records.
        self.skip_below = 0 if self.sinks else sampler.drain_min_records()
        self.records_drained = 0
        self.drains = 0
        # Sum over drains of the most records one thread's ring gave that drain: how full the
        # fullest ring got (records_drained / drains would be every ring's together).
        self.fullest_ring_records = 0
        self.relinks_seen = 0
        self._buffer = sampler.DrainBuffer()
        # Held while records are reduced into the summary; readers take it for a consistent copy.
        # Re-entrant: a signal handler that calls stop() (or takes a snapshot) may run on a thread
        # that is inside drain(); with a plain lock that thread would wait for itself forever.
        self.lock = threading.RLock()
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

    @property
    def cpu_ns(self):
        """CPU time spent draining on any thread, cumulative, in ns."""
        return self.cpu.ns

    def start(self):
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="memscope-drainer", daemon=True)
        self._thread.start()

    def _run(self):
        sampler.ignore_this_thread()
        interval_ms = max(1, int(self.interval_s * 1000))
        while True:
            # Sleeps in C (GIL released) until the interval passes or a ring is half full.
            sampler.wait_for_work(interval_ms, self.skip_below)
            if self._stopping.is_set():
                break
            try:
                self.drain()
            except Exception:  # the tracked application must never see our failures
                log.exception("memscope drainer failed; records of this round are lost")
            if self.sites is not None:
                try:  # (3.10: qualified names, found by a walk of the heap that no collection waits for)
                    self.sites.refine_names()
                except Exception:
                    log.exception("memscope could not refine site names")

    def drain(self):
        """Drains every ring now; returns the number of records moved. Called again from a signal
        handler interrupting a drain on the same thread, it returns 0 at once: the drain it
        interrupted (which owns the buffer its records are in) goes on when the handler returns."""
        moved = 0
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
                        except Exception:  # the records are in the summary: only ids wait longer
                            log.exception("memscope could not resolve or reclaim site ids after a drain")
            finally:
                self._drain_owner = None
            self.records_drained += moved
            self.drains += 1
        return moved

    def _drain_locked(self):
        moved = 0
        per_thread = np.zeros(0, np.int64)
        while True:
            buffer = self._buffer
            records, base_us = buffer.drain(self.summary)  # drained and reduced
            if buffer.relinked:
                self._relinked(buffer.relinked)
            if len(records) and self.sinks:
                for sink in list(self.sinks):
                    try:
                        sink(records, base_us)
                    except Exception:
                        log.exception("memscope record sink %r failed", sink)
            moved += len(records)
            if len(records):
                counts = np.bincount(records["thread"])
                if len(counts) > len(per_thread):
                    counts[:len(per_thread)] += per_thread
                    per_thread = counts
                else:
                    per_thread[:len(counts)] += counts
            if not buffer.more:
                break
        self.fullest_ring_records += int(per_thread.max()) if len(per_thread) else 0
        return moved

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
