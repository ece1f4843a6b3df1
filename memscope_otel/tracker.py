"""The running tracker: wires config -> sampler -> drainer -> summary -> producer, once per process.

At most one tracker runs at a time (the allocator hooks are process-wide). ``start()`` and
``stop()`` never raise into the application for bad settings (the config layer warns and falls
back to defaults); they raise only for programming errors such as a second ``start()``.
"""
import atexit
import contextlib
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from . import sampler
from .drainer import DrainLock, Drainer
from .sites import SiteResolver
from .summary import Summary

log = logging.getLogger("memscope_otel")


@dataclass(frozen=True)
class Snapshot:
    """What one metric collection sees: exact counters plus a consistent copy of the estimates."""

    counters: sampler.Counters
    rates: tuple  # (medium, small)
    domains: tuple
    live_bytes: np.ndarray
    per_id: list  # [(id, estimated bytes, estimated count, estimated live bytes)], ids in use
    # {Site or TypeName: (estimated bytes, count, live bytes)}: the ids in use, resolved when the
    # snapshot was taken, plus the sums of reclaimed ids (Summary.retired), <reclaimed> included.
    per_site: dict
    # The producer (one per MeterProvider) whose metric collection took it; None for a snapshot
    # taken by other means (memscope_otel.snapshot(), the command line's readings).
    collected_for: object = None


class _Process:
    """What outlives one start/stop cycle: the C side's ids and counters are process-wide, so
    the estimates, the id resolver and the instruments registered on each MeterProvider are too
    (a restart continues the same cumulative series instead of registering duplicates)."""

    def __init__(self):
        self.summary = None
        self.resolver = None
        # id(meter provider) -> weak references to (the provider, its Producer). Weak: the
        # provider's instruments hold the Producer (their callbacks), and the Producer the
        # provider (through the tracker it serves), so both go together once the application
        # drops the provider; an application that makes a new one on each reload keeps no old one.
        self.producers = {}

    def producer_for(self, provider):
        """The Producer registered on ``provider`` by an earlier start(), or None."""
        known = self.producers.get(id(provider))
        if known is not None and known[0]() is provider:
            return known[1]()
        return None

    def remember(self, provider, producer):
        key = id(provider)

        def forget(ref):
            if self.producers.get(key, (None,))[0] is ref:
                del self.producers[key]

        try:
            ref = weakref.ref(provider, forget)
        except TypeError:  # a provider class without weak reference support: kept for good
            ref = lambda: provider  # noqa: E731
        self.producers[key] = (ref, weakref.ref(producer))

    def ensure(self):
        if self.summary is None:
            self.summary = Summary()
            self.resolver = SiteResolver()


_process = _Process()


class Tracker:
    def __init__(self, config, meter_provider=None):
        _process.ensure()
        self.config = config
        self.resolver = _process.resolver
        self.summary = _process.summary
        self._final = None
        self._dump = None
        self.drainer = Drainer(self.summary, config.drain_interval_ms / 1000.0, self._sinks())
        self.drainer.sites = self.resolver
        self.producer = None
        self._meter_provider = meter_provider
        self.listeners = []  # callables(snapshot), e.g. the optimizer, after each refresh
        self.optimizer = None  # the PerformanceOptimizer while OTEL_PYTHON_MEMSCOPE_ADAPTIVE is true
        self.profiles = None  # the ProfilePusher while OTEL_PYTHON_MEMSCOPE_PROFILES_EXPORTER=otlp
        self._child_pending = False  # a forked child's drainer etc. not started yet
        self._child_forked_at = 0.0

    def _sinks(self, exclusive=False):
        if not self.config.dump_path:
            return []
        try:
            from .dump import DumpPathRefused, DumpWriter
        except ImportError:
            log.warning("OTEL_PYTHON_MEMSCOPE_DUMP_PATH is set but this build has no dump writer")
            return []
        path = self.config.dump_path
        try:
            self._dump = DumpWriter(path, {k: v for k, v in vars(self.config).items()}, exclusive=exclusive)
        except DumpPathRefused as exc:
            log.warning("OTEL_PYTHON_MEMSCOPE_DUMP_PATH: refused to write the dump to %r: %s; no dump, "
                        "tracking and metrics go on", path, exc.reason)
            return []
        except OSError as exc:
            log.warning("OTEL_PYTHON_MEMSCOPE_DUMP_PATH=%r cannot be written (%s); no dump", path, exc)
            return []
        return [self._write_dump]

    @property
    def dump_writer(self):
        """The DumpWriter of OTEL_PYTHON_MEMSCOPE_DUMP_PATH while it writes, else None (the
        optimizer reads its measured write times)."""
        return self._dump

    def _write_dump(self, records, base_us):
        dump = self._dump
        if dump is None:
            return
        try:
            if dump.unlinked():
                raise OSError("the file was deleted; its disk space comes back only once it is closed")
            # Not np.unique: numpy 2 imports numpy.ma at its first call, on the drainer's thread;
            # a fork meanwhile left the child's import lock held, and its first dump write hung.
            ids = set(self._unlabelled).union(records["site"].tolist())
            self._write_labels(dump, ids, final=False)
            dump.write_chunk(base_us, records)
        except OSError as exc:
            # Once, not at every drain: a full disk must not also fill up with our log lines.
            # The file keeps every chunk written so far (DumpWriter cuts a torn one back).
            self._dump = None
            log.warning("memscope stopped writing its dump %s: %s (OTEL_PYTHON_MEMSCOPE_DUMP_PATH; "
                        "the chunks written so far stay readable)", dump.path, exc)
            dump.close()

    def _write_labels(self, dump, ids, final):
        """A label for each id new to the file, or reused (for another site) since its label was
        written: the file redefines it from the next chunk on. On 3.10 a site still named by its
        co_name waits (in _unlabelled) until its qualified name is found or the file closes: a
        first label applies to the records before it too. One that waited while its id was
        reclaimed gets the label it had, so that the records before the reuse keep it."""
        resolver, dumped = self.resolver, self._dumped_ids
        orphans = {i: label for i, (generation, label) in self._unlabelled.items()
                   if generation != resolver.generation(i)}
        if orphans:
            dump.write_strings(orphans)
            dumped.update((i, self._unlabelled[i][0]) for i in orphans)
        stale = [i for i in ids if dumped.get(i) != resolver.generation(i)]
        # Only a first label can wait: a redefinition applies from the next chunk on.
        waiting = [] if final else [i for i in stale if i not in dumped and resolver.provisional(i)]
        ready = [i for i in stale if i not in waiting]
        if ready:
            dump.write_strings(resolver.labels(ready))
            dumped.update((i, resolver.generation(i)) for i in ready)
        self._unlabelled = {i: (resolver.generation(i), label) for i, label in resolver.labels(waiting).items()}

    def _close_dump(self):
        dump = self._dump
        if dump is None:
            return
        try:
            if self._unlabelled:
                self._write_labels(dump, set(self._unlabelled), final=True)
        except OSError as exc:
            log.warning("memscope could not write the last labels of %r: %s", self.config.dump_path, exc)
        finally:
            dump.close()

    def start(self):
        self._dumped_ids = {}  # id -> its generation (SiteResolver.generation) when its label was written
        self._unlabelled = {}  # id -> (generation, label) of a label that waits for a qualified name (3.10)
        self.resolver.set_site_frame(self.config.site_frame)
        sampler.start(self.config)
        self.summary.reset_live()
        self.drainer.start()
        from opentelemetry import metrics

        from .producer import Producer

        provider = self._meter_provider or metrics.get_meter_provider()
        known = _process.producer_for(provider)
        if known is not None:
            self.producer = known
            self.producer.tracker = self
        else:
            meter = provider.get_meter("memscope_otel", _version())
            self.producer = Producer(meter, self, self.config.max_sites)
            _process.remember(provider, self.producer)
        if self.config.profiles_exporter == "otlp":
            self._start_profiles(_resource_attributes(provider))
        if self.config.adaptive:
            from .optimizer import PerformanceOptimizer

            try:
                self.optimizer = PerformanceOptimizer(self)
                if self.profiles is not None:
                    self.optimizer.monitor.add_source(self._profiles_pressure)
                self.optimizer.start()
            except Exception:  # the tracker keeps running with fixed rates
                log.exception("memscope optimizer failed to start; sampling rates stay fixed")
                self.optimizer = None

    def _start_profiles(self, resource_attributes):
        from . import profiles_otlp
        from .profile_intervals import IntervalProfiles
        from .profiles_push import ProfilePusher

        try:
            self.profiles = ProfilePusher(IntervalProfiles(self.profile_stacks).build,
                                          profiles_otlp.ProfilesExporter(profiles_otlp.from_env()),
                                          resource_attributes, self.config.profiles_interval, _version())
            self.profiles.start()
        except Exception:  # the metrics go on without profiles
            log.exception("memscope profiles exporter failed to start; no profiles are pushed")
            self.profiles = None

    def _profiles_pressure(self, gap_s):
        # (through the tracker: a forked child makes a pusher of its own)
        return self.profiles.pressure(gap_s) if self.profiles is not None else {}

    def stop(self):
        self.start_in_child()  # a forked child's last records still reach its summary and dump
        # The hooks first: this is the step that must happen even if a signal's exception
        # (KeyboardInterrupt) cuts the rest short; the module's stop() then tries again later.
        sampler.stop()
        # Each step runs even when one before it failed (e.g. after a start() cut short by a
        # signal); ExitStack runs them last pushed first and raises what failed afterwards.
        with contextlib.ExitStack() as steps:
            if self._dump is not None:
                steps.callback(self._close_dump)
            # After the final drain: sites still named by their co_name (3.10) get their
            # qualified names for the last snapshot, readings and the dump's labels.
            steps.callback(self.resolver.refine_names, True)
            steps.callback(self.drainer.stop)
            if self.optimizer is not None:
                steps.callback(self.optimizer.stop)
            if self.profiles is not None:  # first: its last push drains
                steps.callback(self.profiles.stop)
        # Collections after stop() keep reporting the final values (cumulative series must not
        # vanish or drop), without draining records that belong to a later tracker.
        self._final = self._snapshot()

    def refresh(self, collected_for=None):
        """Drains the rings and takes a snapshot (called by the first callback of a collection,
        which passes its producer as ``collected_for``)."""
        if self._final is not None:
            return self._final
        self.start_in_child()
        self.drainer.drain()
        return self._snapshot(collected_for)

    def _estimates(self, counters):
        """(per_id, per_site, live bytes per domain) of the summary now (see Snapshot)."""
        with self.drainer.lock:
            summary = self.summary
            used = min(counters.ids_used, len(summary.id_bytes))
            ids = np.nonzero(summary.id_count[:used] + np.abs(summary.id_live_bytes[:used]))[0]
            per_id = list(zip(ids.tolist(), summary.id_bytes[ids].tolist(), summary.id_count[ids].tolist(),
                              summary.id_live_bytes[ids].tolist()))
            # Resolved under the lock: an id may be reclaimed and reused after it is released.
            per_site = {}
            resolve = self.resolver.resolve
            for key, b, c, live in itertools.chain(((resolve(i), b, c, live) for i, b, c, live in per_id),
                                                   ((k, *v) for k, v in summary.retired.items())):
                sums = per_site.get(key)
                per_site[key] = (b, c, live) if sums is None else (sums[0] + b, sums[1] + c, sums[2] + live)
            return per_id, per_site, summary.live_bytes.copy()

    def _snapshot(self, collected_for=None):
        counters = sampler.read_counters()
        per_id, per_site, live = self._estimates(counters)
        snap = Snapshot(counters, sampler.rates(), tuple(self.config.domains), live, per_id, per_site, collected_for)
        for listener in self.listeners:
            try:
                listener(snap)
            except Exception:
                log.exception("memscope snapshot listener %r failed", listener)
        return snap

    def profile_stacks(self):
        """Every stack with its values for a profile (memscope_otel.profiles): the estimates
        since start of the ids in use (a reclaimed id's sums, kept by site, as a one-frame stack)
        and the live table now, after a drain."""
        from .profiles import ProfileStack
        from .sites import MAX_IDS, TypeName, reclaimed_site

        if self._final is None:
            self.start_in_child()
            self.drainer.drain()
        ffi, lib = sampler._lib()
        live_count, live_bytes = np.zeros(MAX_IDS), np.zeros(MAX_IDS)
        stacks = []
        with self.drainer.lock:
            lib.ms_live_by_id(ffi.cast("double *", ffi.from_buffer(live_count)),
                              ffi.cast("double *", ffi.from_buffer(live_bytes)))
            summary = self.summary
            ids = np.nonzero(summary.id_count + live_count)[0].tolist()
            for i in ids:  # resolved under the lock: an id may be reused once it is released
                what = self.resolver.resolve(i)
                if isinstance(what, TypeName):
                    frames, domain = (("<manual>", what.name, 0),), "manual"
                else:
                    frames, domain = tuple(f.key() for f in self.resolver.stack(i)), what.domain
                stacks.append(ProfileStack(frames, domain, float(summary.id_count[i]), float(summary.id_bytes[i]),
                                           float(live_count[i]), float(live_bytes[i]),
                                           ("id", i, self.resolver.generation(i)), ("site", what)))
            for site, (nbytes, count, _live) in summary.retired.items():
                stacks.append(ProfileStack(((site.file, site.function, site.line),), site.domain, count, nbytes,
                                           0.0, 0.0, ("site", site), ("site", reclaimed_site(site.domain))))
        return stacks

    def after_fork_child(self):
        """In a forked child: the C side has already reset counters, rings and tables (its at-fork
        handler); here only the inherited locks are made anew. The child's summary, dump file,
        drainer and the optimizer's worker start when first needed (:meth:`start_in_child`), so a
        child that only execs or exits gets no thread and no file of ours."""
        sampler.after_fork_child()
        self._child_pending = True
        self._child_forked_at = time.monotonic()
        self.drainer.lock = DrainLock()
        if self.producer is not None:
            self.producer.reset()
        if self.optimizer is not None:
            self.optimizer._lock = threading.Lock()
        # A child that samples and checks its threads at once (a test suite) must not find ours.
        sampler.arm_child_start(_start_pending_child, max(self.config.drain_interval_ms / 1000.0, 1.0))

    def start_in_child(self):
        """Starts what a forked child defers: fresh summary, drainer, its own dump, the optimizer's
        worker. Called from safe points only (collections, snapshot(), stop(), the exit path, or
        the main thread's next safe point once the child samples an allocation a second or a drain
        interval, whichever is longer, after its first: csrc/child.c), never from an allocator hook; the records taken
        meanwhile wait in the rings (or, a ring full, in the C side's spill, which still reaches
        the estimates)."""
        if not self._child_pending:
            return
        self._child_pending = False
        sampler.arm_child_start(None)
        _process.summary = self.summary = Summary()
        # The parent keeps writing its file; a child writes its own next to it, and only if the
        # parent still writes one: a refused path stays refused, and after a failed write the
        # parent's path holds the chunks it kept readable, which a reopen would truncate.
        parent_dumps, self._dump = self._dump is not None, None
        if parent_dumps:
            import dataclasses

            self.config = dataclasses.replace(self.config, dump_path=f"{self.config.dump_path}.{os.getpid()}")
        # <path>.<pid> is a name anyone can predict and prepare: only a new file will do.
        sinks = self._sinks(exclusive=True) if parent_dumps else []
        self.drainer = Drainer(self.summary, self.config.drain_interval_ms / 1000.0, sinks)
        self.drainer.sites = self.resolver
        if self.optimizer is not None:
            self.optimizer.after_fork_child()
        if self.profiles is not None:
            # The child's estimates start from zero, and the parent's threads and connection
            # are not the child's: a pusher of its own, under the same resource.
            self.profiles.exporter.forget_connection()
            self._start_profiles(self.profiles.resource_attributes)
        self._dumped_ids, self._unlabelled = {}, {}
        self.drainer.start()


def _resource_attributes(provider):
    """The resource the metrics carry: the SDK MeterProvider's, else one made from the
    environment as the SDK would (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES)."""
    resource = getattr(getattr(provider, "_sdk_config", None), "resource", None)
    if resource is None:
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create()
    return dict(resource.attributes)


def _version():
    try:
        from importlib.metadata import version

        return version("memscope-otel")
    except Exception:
        return "0"


_lock = threading.RLock()
_current = None


def current():
    return _current


def start(meter_provider=None, **overrides):
    """See :func:`memscope_otel.start`."""
    global _current
    from .config import load_config, sdk_disabled

    with _lock:
        if _current is not None:
            log.warning("memscope_otel.start() called while already running; ignored")
            return _current
        config = load_config(**overrides)
        if not config.enabled or sdk_disabled():
            log.info("memscope tracker disabled (OTEL_PYTHON_MEMSCOPE_ENABLED or OTEL_SDK_DISABLED)")
            return None
        # Setting up (imports, instrument registration) is the tracker's own work: not counted.
        tracker = None
        try:
            with sampler.ignored():
                tracker = Tracker(config, meter_provider)
                tracker.start()
                # Registered anew at every start, so that it runs before the exit handlers
                # registered before it (atexit runs the last registered first): e.g. the
                # MeterProvider's shutdown, whose final export then sees the final drain. (Inside
                # ignored(): the array of exit handlers grows by realloc now and then, and a
                # fixed seed must give the same sample of the application's own work.)
                atexit.unregister(_stop_at_exit)
                atexit.register(_stop_at_exit)
        except BaseException as exc:  # a profiler must never take the application down
            try:  # undo what did start (hooks, drainer thread)
                if tracker is not None:
                    tracker.stop()
                else:
                    sampler.stop()
            except BaseException:  # (a second interrupt) the hooks at least
                sampler.stop()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: the application's own, after the undo
            log.exception("memscope could not start; the application runs untracked")
            return None
        _current = tracker
        return tracker


def stop():
    """See :func:`memscope_otel.stop`."""
    global _current
    with _lock:
        tracker = _current
        if tracker is None:
            return
        try:
            with sampler.ignored():
                tracker.stop()
        except Exception:
            log.exception("memscope did not stop cleanly")
        except BaseException:
            # Interrupted (KeyboardInterrupt from a signal): the hooks are off (Tracker.stop()
            # does that first); the tracker stays current, so that the next stop(), or the one at
            # exit, finishes stopping its threads and closing its dump.
            sampler.stop()
            raise
        _current = None


def _stop_at_exit():
    """Stops the tracker when the interpreter exits without stop(): the last records are drained
    and the dump is closed, and the tracker's threads end while the interpreter is whole. A daemon
    thread still inside numpy when the interpreter finalizes is ended by CPython with pthread_exit
    as soon as it asks for the GIL back; unwinding numpy's C++ frames that way aborts the process
    ("terminate called without an active exception", exit status 134)."""
    stop()


class _MultiprocessingChild:
    """A multiprocessing child made by fork ends with os._exit(), which runs no atexit handler:
    the stop at exit then has to be one of multiprocessing's own exit finalizers. They are
    cleared when the child starts, after the fork handlers ran, so the finalizer is registered
    from multiprocessing's after-fork hook, which runs after the clearing."""

    def arm(self):
        util = sys.modules.get("multiprocessing.util")
        if util is not None:  # else this fork is not multiprocessing's: atexit serves
            util.register_after_fork(self, _MultiprocessingChild._register_finalizer)

    @staticmethod
    def _register_finalizer(_self):
        import multiprocessing.util

        multiprocessing.util.Finalize(None, _stop_at_exit, exitpriority=0)


_multiprocessing_child = _MultiprocessingChild()


def _start_pending_child():
    """Called by CPython in a forked child's main thread at a safe point (csrc/child.c), once
    the child sampled an allocation a second (or a drain interval) or more after its first."""
    tracker = _current
    if tracker is None or not tracker._child_pending:
        return
    try:
        with _lock:
            if _current is tracker:
                tracker.start_in_child()
    except Exception:
        log.exception("memscope could not start its drainer in the forked child")


def _after_fork_in_child():
    global _lock
    _lock = threading.RLock()
    tracker = _current
    if tracker is not None:
        try:
            tracker.after_fork_child()
            _multiprocessing_child.arm()
        except Exception:
            log.exception("memscope could not restart in the forked child; tracking is off there")


os.register_at_fork(after_in_child=_after_fork_in_child)
