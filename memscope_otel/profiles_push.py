"""The periodic push of profiles (``OTEL_PYTHON_MEMSCOPE_PROFILES_EXPORTER=otlp``): every
``PROFILES_INTERVAL`` seconds the interval's allocation profile and the current heap profile go
to the Collector as one OTLP profiles request (``profiles_otlp``).

Two threads of the tracker's own (their allocations are not counted): one builds and encodes a
request each interval and puts it in a queue of ``QUEUE_REQUESTS``; the other sends. A Collector
that is down or slow only fills that queue: a request that finds it full is dropped and counted
(``stats``), so the application pays for at most that many encoded requests in memory and for the
building, never for a wait on the network.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref

from . import profiles_otlp, sampler
from .profiles_otlp import ExportError, encode_request

logger = logging.getLogger(__name__)

QUEUE_REQUESTS = 2
# Budgets of the pusher's pressure on the optimizer (docs/optimizer.md): the sender busy this share
# of the wall time, a request this many bytes, and no request dropped.
EXPORT_BUSY_BUDGET = 0.5
PAYLOAD_BUDGET = 4 * 2**20
# gRPC's own fork handlers do nothing when another thread is inside a gRPC call at the fork, and a
# child that then opens a channel can crash in gRPC's core. A fork therefore waits this long at
# most for a gRPC export in flight to end (1.6 to 13.5 ms each to a receiver on the same machine,
# README); past that the fork goes on and the child sends nothing over gRPC (profiles_otlp).
FORK_WAIT_S = 1.0


class ProfilePusher:
    """``build()`` returns the profiles of one push (a list of ``profiles_otlp.Profile``); the
    pusher encodes them under ``resource_attributes`` and sends them with ``exporter`` (a
    ``profiles_otlp.ProfilesExporter``: ``export``, ``close`` and its ``settings``)."""

    def __init__(self, build, exporter, resource_attributes, interval_s, scope_version=""):
        self.build = build
        self.exporter = exporter
        self.resource_attributes = dict(resource_attributes)
        self.interval_s = interval_s
        self.scope_version = scope_version
        self.stats = {"built": 0, "sent": 0, "dropped": 0, "failed": 0, "last_export_s": 0.0,
                      "last_request_bytes": 0, "build_s": 0.0, "export_s": 0.0}
        self._pressure_base = (0.0, 0)  # (export_s, dropped) at the optimizer's last reading
        self._failing = False
        self._queue = queue.Queue(QUEUE_REQUESTS)
        self._stop = threading.Event()
        self._threads = []
        self._exporting = threading.Lock()  # held by an export, and by a fork for its duration

    def start(self):
        self._threads = [threading.Thread(target=self._build_loop, name="memscope-profiles", daemon=True),
                         threading.Thread(target=self._send_loop, name="memscope-profiles-send", daemon=True)]
        for t in self._threads:
            t.start()
        _pushers.add(self)

    def stop(self, timeout=5.0):
        """Pushes the last interval (if the queue has room) and ends both threads; a request still
        waiting after ``timeout`` seconds is given up."""
        if not self._threads:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        _pushers.discard(self)
        self.exporter.close()

    def push_now(self):
        """Builds and queues one request now (the build thread's step); False when dropped."""
        t0 = time.monotonic()
        try:
            profiles = self.build()
            request = encode_request(profiles, self.resource_attributes, scope_version=self.scope_version)
        except Exception:  # noqa: BLE001 - a failed build is the tracker's problem, not the application's
            logger.exception("memscope could not build its profiles; this interval is skipped")
            return False
        self.stats["build_s"] = time.monotonic() - t0
        self.stats["built"] += 1
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self.stats["dropped"] += 1
            return False
        return True

    def _build_loop(self):
        sampler.ignore_this_thread()
        while not self._stop.wait(self.interval_s):
            self.push_now()
        self.push_now()  # the last interval, at stop()
        self._queue.put(None)  # (blocks only while the sender works through the queue)

    def _send_loop(self):
        sampler.ignore_this_thread()
        while True:
            request = self._queue.get()
            if request is None:
                return
            t0 = time.monotonic()
            try:
                with self._exporting:
                    self.exporter.export(request)
            except ExportError as exc:
                self.stats["failed"] += 1
                # One line when exports start failing and one when they work again, not one per
                # interval: a Collector that is down must not also fill the application's log.
                if not self._failing:
                    logger.warning("memscope profiles export failed: %s (retrying every interval; counted "
                                   "as failed, the application is not affected)", exc)
                    self._failing = True
                continue
            finally:
                self.stats["last_export_s"] = time.monotonic() - t0
                self.stats["export_s"] += self.stats["last_export_s"]
            self.stats["sent"] += 1
            self.stats["last_request_bytes"] = request.ByteSize()
            if self._failing:
                logger.warning("memscope profiles export works again")
                self._failing = False

    def pressure(self, gap_s):
        """The optimizer's source (``PressureMonitor.add_source``): what the pushes cost over the
        interval that just ended, each over its budget. Profiles carry more stacks the more
        allocations are sampled; whether a rate cut relieves them is the controller's check."""
        export_s, dropped = self.stats["export_s"], self.stats["dropped"]
        last_s, last_dropped = self._pressure_base
        self._pressure_base = (export_s, dropped)
        busy = (export_s - last_s) / gap_s if gap_s > 0 else 0.0
        size = self.stats["last_request_bytes"]
        lost = dropped - last_dropped
        return {
            "profiles_export": (busy / EXPORT_BUSY_BUDGET, f"profiles: sender busy {busy:.0%} of the time"),
            "profiles_payload": (size / PAYLOAD_BUDGET, f"profiles: {size / 2**20:.1f} MiB per request"),
            "profiles_dropped": (float(lost), f"profiles: {lost} requests dropped (queue full)"),
        }


_pushers = weakref.WeakSet()  # the started pushers, for the fork handlers
_held = []  # the pushers whose gRPC export a fork is keeping out, for its duration
_grpc_in_flight = False  # the fork being made found one still in flight after FORK_WAIT_S


def _before_fork():
    global _held, _grpc_in_flight
    over_grpc = [p for p in list(_pushers) if p.exporter.settings.protocol == "grpc"]
    _held = [p for p in over_grpc if p._exporting.acquire(timeout=FORK_WAIT_S)]
    _grpc_in_flight = len(_held) < len(over_grpc)


def _after_fork_in_parent():
    for pusher in _held:
        pusher._exporting.release()
    _held.clear()


def _after_fork_in_child():
    # The parent's pushers have no threads here (the child starts a pusher of its own), and a
    # lock their sender held at the fork stays held: forgotten, or the child's forks would wait.
    _pushers.clear()
    _held.clear()
    if _grpc_in_flight:
        profiles_otlp.forked_during_a_grpc_call()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
