"""Summary -> OpenTelemetry points, through the public metrics API (observable instruments).

Every callback reads one shared snapshot per collection: the first callback of a collection
drains the rings and reads the counters; the others reuse that snapshot, so the points of one
export agree with each other. Per-site series are bounded: the top ``max_sites`` sites by
estimated bytes get a series each, the rest one ``<other>`` series. Each cumulative series only
ever receives increases (a site's growth goes to its own series while it is in the top, to
``<other>`` while it is not), so every exported counter is monotonic, as Prometheus expects.
A site's live series starts with its first estimate other than zero, like a labelled counter
that appears at its first increment: most sites of a busy program free all they allocate
between two collections, and their zeros were points the SDK aggregates and exports at each
collection for nothing (the demo's game loop after 8 s: 21 of a collection's 141 points).
"""
import threading
import time
import weakref

from opentelemetry.metrics import CallbackOptions, Observation

from . import sampler
from .cpu_meter import hooks_estimate_ns
from .records import DOMAINS, SIZE_CLASSES
from .sites import RECLAIMED, TypeName

# The thread of the SDK's PeriodicExportingMetricReader: it only collects and exports, so its CPU
# outside memscope's callbacks is the SDK's aggregation and export (opentelemetry-sdk names it so).
EXPORT_THREAD = "OtelPeriodicExportingMetricReader"

OTHER_SITE = {
    "code.file.path": "<other>",
    "code.function.name": "<other>",
    "code.line.number": 0,
    "memscope.domain": "all",
}


class RoutedCounters:
    """Monotonic cumulative series for the top-k keys by bytes, the rest folded into one.

    A key's growth since the last update goes to its own series while it is in the top; the
    ``other`` series gets the rest of the total's growth. Only the keys of the last update are
    remembered (their values then), not every key ever seen: a key missing from an update counts
    from zero when it comes back. That is how summaries forget sites (the sums of reclaimed sites
    beyond the ones kept by name fold into <reclaimed>, which is never a key of its own: it is
    in ``total`` only, and its sums were routed while they were under their sites)."""

    def __init__(self, k):
        self.k = k
        self._last = {}  # key -> (bytes, count) at the last update, for that update's keys
        self._last_total = (0.0, 0.0)
        self._series = {}  # key -> [bytes, count] exported
        self.other = [0.0, 0.0]

    def update(self, current, total=None):
        """current: {key: (bytes, count)} cumulative; total: cumulative (bytes, count) of
        everything, current's keys and sums no longer under any key (default: current's sum).
        Returns {key: (bytes, count)} for the top."""
        if total is None:
            total = (sum(v[0] for v in current.values()), sum(v[1] for v in current.values()))
        top = sorted(current, key=lambda key: current[key][0], reverse=True)[: self.k]
        last, routed = self._last, [0.0, 0.0]
        for key in top:
            b, c = current[key]
            lb, lc = last.get(key, (0.0, 0.0))
            db, dc = max(b - lb, 0.0), max(c - lc, 0.0)
            if db == 0.0 and dc == 0.0:
                continue
            series = self._series.setdefault(key, [0.0, 0.0])
            series[0] += db
            series[1] += dc
            routed[0] += db
            routed[1] += dc
        lt = self._last_total
        self.other[0] += max(total[0] - lt[0] - routed[0], 0.0)
        self.other[1] += max(total[1] - lt[1] - routed[1], 0.0)
        self._last_total = (max(total[0], lt[0]), max(total[1], lt[1]))
        self._last = {}
        for key, (b, c) in current.items():
            lb, lc = last.get(key, (0.0, 0.0))
            self._last[key] = (max(b, lb), max(c, lc))
        return {key: tuple(self._series[key]) for key in top if key in self._series}


class _Cumulative:
    """Monotonic totals from sources that may start again from zero: a restarted tracker has a
    new drainer and recognizer, whose CPU meters count from 0, but the exported counter goes on."""

    def __init__(self):
        self._last = {}  # key -> (source, raw value at the last update)
        self._total = {}

    def update(self, key, source, raw):
        """Adds the growth of ``raw`` since the last update of ``key`` (all of it when the
        source is new or went backwards) and returns the total."""
        last = self._last.get(key)
        grown = raw if last is None or last[0] is not source or raw < last[1] else raw - last[1]
        self._last[key] = (source, raw)
        self._total[key] = self._total.get(key, 0) + grown
        return self._total[key]


def _site_attributes(site):
    return {
        "code.file.path": site.file,
        "code.function.name": site.function,
        "code.line.number": site.line,
        "memscope.domain": site.domain,
    }


class Producer:
    """Registers memscope's instruments on ``meter``; ``tracker.refresh()`` supplies snapshots."""

    def __init__(self, meter, tracker, max_sites):
        self.tracker = tracker  # the running one; replaced when the tracker restarts
        self._lock = threading.Lock()
        self._generation = 0
        self._served = {}
        self._snapshot = None
        self._sites = RoutedCounters(max_sites)
        self._types = RoutedCounters(max_sites)
        self._max_sites = max_sites
        self._site_view = None  # (generation, {site: (bytes, count, live)}, {type: (bytes, count)})
        self._live_sites = set()  # sites whose live series exists (their live was not 0 once)
        self.instruments = []
        # What memscope's own collections cost, cumulative: CPU past the drains and the workload
        # recognition they run (those count as their own components), and points. Figures for
        # the optimizer (they follow the sites, not the rates) and memscope.tracker.cpu.
        self.collection_ns = 0
        self.collection_points = 0
        # What the exporting thread spent outside the callbacks, cumulative: the SDK aggregating
        # the points, building and exporting them (every meter's of the provider, memscope's
        # included). Not memscope's own CPU, but what exporting its metrics costs the process and a
        # longer export interval divides: as much as the callbacks' own or more (docs/optimizer.md).
        self.export_ns = 0
        self._export_threads = weakref.WeakKeyDictionary()  # thread -> (CPU ns, others) at our last callback's end
        self.metric_points = {}  # instrument name -> points in its latest callback
        self._cpu = _Cumulative()

        def counter(name, unit, description, fn):
            self.instruments.append(
                meter.create_observable_counter(name, callbacks=[self._callback(name, fn)], unit=unit,
                                                description=description))

        def updown(name, unit, description, fn):
            self.instruments.append(
                meter.create_observable_up_down_counter(name, callbacks=[self._callback(name, fn)], unit=unit,
                                                        description=description))

        def gauge(name, unit, description, fn):
            self.instruments.append(
                meter.create_observable_gauge(name, callbacks=[self._callback(name, fn)], unit=unit,
                                              description=description))

        counter("memscope.allocations", "{allocation}", "Allocation requests (exact)", self._allocations)
        counter("memscope.allocated", "By", "Requested bytes (exact)", self._allocated)
        counter("memscope.deallocations", "{deallocation}", "Frees (exact)", self._deallocations)
        counter("memscope.allocations.by_size", "{allocation}",
                "Allocation requests by power-of-two size bucket (exact)", self._by_size)
        counter("memscope.site.allocated", "By", "Requested bytes by allocation site (estimate)",
                self._site_allocated)
        counter("memscope.site.allocations", "{allocation}", "Allocations by site (estimate)",
                self._site_allocations)
        updown("memscope.live", "By", "Bytes allocated and not yet freed (estimate)", self._live)
        updown("memscope.site.live", "By", "Live bytes by allocation site (estimate)", self._site_live)
        counter("memscope.type.allocated", "By", "Bytes by tracked type, manual API (estimate)",
                self._type_allocated)
        gauge("memscope.sampler.rate", "1", "Sampling probability by size class", self._rates)
        counter("memscope.sampler.samples", "{record}", "Records written by the sampler (exact)", self._samples)
        counter("memscope.sampler.dropped", "{record}", "Records lost to full buffers (exact)", self._dropped)
        updown("memscope.sampler.memory", "By", "Memory held by the tracker's C side", self._footprint)
        gauge("memscope.sampler.live_table.fill", "1",
              "Sampled live blocks in the live table, as a fraction of its budget (LIVE_TABLE_MAX_ENTRIES)",
              self._live_table_fill)
        gauge("memscope.sampler.live_table.threshold", "By",
              "Past its budget the live table takes a sampled block worth fewer weighted bytes than "
              "this only by chance, in proportion (0 until the budget is reached)",
              self._live_table_threshold)
        counter("memscope.tracker.cpu", "s",
                "CPU time of the tracker's own work by component: hooks (estimated: the sampled path as "
                "timed plus a fixed cost per unsampled call), drainer, collection, recognizer; and export, the "
                "SDK's aggregating and exporting on its exporting thread", self._tracker_cpu)
        # Last, so that the pressure it reports includes this collection's other callbacks.
        gauge("memscope.optimizer.pressure", "1", "Export pressure seen by the adaptive optimizer (0 to 1)",
              self._pressure)

    def reset(self):
        """Forgets routing state (in a forked child, whose counters start again from zero). The
        lock is made anew: a collection running in another thread of the parent when it forked
        holds the inherited one forever, and the child would hang here, inside os.fork()."""
        self._lock = threading.Lock()
        with self._lock:
            self._sites = RoutedCounters(self._max_sites)
            self._types = RoutedCounters(self._max_sites)
            self._snapshot = None
            self._site_view = None
            self._live_sites = set()
            self._served = {}
            self._export_threads = weakref.WeakKeyDictionary()
            self._cpu = _Cumulative()

    def set_max_sites(self, max_sites):
        """Changes how many sites get their own series from the next collection on (the others
        fold into ``<other>``; every series stays monotonic)."""
        with self._lock:
            self._max_sites = self._sites.k = self._types.k = int(max_sites)

    # -- snapshot handling --

    def _callback(self, name, fn):
        def callback(options: CallbackOptions):
            started = time.thread_time_ns()  # CPU time: waiting for the GIL is not our cost
            others = self._others_on_this_thread()
            thread = threading.current_thread()
            with sampler.ignored(), self._lock:
                last = self._export_threads.get(thread)
                if last is not None:  # the SDK's work on this thread since our last callback on it
                    self.export_ns += max(started - last[0] - (others - last[1]), 0)
                snap = self._current(name)
                points = list(fn(snap))
                ended, others_now = time.thread_time_ns(), self._others_on_this_thread()
                # Draining and recognizing on this thread are their components' CPU, not ours.
                self.collection_ns += max(ended - started - (others_now - others), 0)
                self.collection_points += len(points)
                self.metric_points[name] = len(points)
                if thread.name.startswith(EXPORT_THREAD):
                    self._export_threads[thread] = (ended, others_now)
                return points

        return callback

    def _meters(self):
        tracker = self.tracker
        drainer = getattr(tracker, "drainer", None)
        optimizer = getattr(tracker, "optimizer", None)
        recognizer = getattr(optimizer, "recognizer", None)
        return getattr(drainer, "cpu", None), getattr(recognizer, "cpu", None)

    def _others_on_this_thread(self):
        return sum(m.on_this_thread() for m in self._meters() if m is not None)

    def _current(self, name):
        # An instrument asking twice means a new collection began: take a new snapshot.
        if self._snapshot is None or self._served.get(name) == self._generation:
            self._snapshot = self.tracker.refresh(collected_for=self)
            self._generation += 1
        self._served[name] = self._generation
        return self._snapshot

    # -- exact counters --

    def _domains(self, snap):
        return [d for d in range(len(DOMAINS)) if DOMAINS[d] in snap.domains or snap.counters.allocations[d].any()]

    def _allocations(self, snap):
        for d in self._domains(snap):
            for c in range(3):
                yield Observation(int(snap.counters.allocations[d][c]),
                                  {"memscope.domain": DOMAINS[d], "memscope.size_class": SIZE_CLASSES[c]})

    def _allocated(self, snap):
        for d in self._domains(snap):
            for c in range(3):
                yield Observation(int(snap.counters.bytes[d][c]),
                                  {"memscope.domain": DOMAINS[d], "memscope.size_class": SIZE_CLASSES[c]})

    def _deallocations(self, snap):
        for d in self._domains(snap):
            yield Observation(int(snap.counters.deallocations[d]), {"memscope.domain": DOMAINS[d]})

    def _by_size(self, snap):
        for d in self._domains(snap):
            for k in snap.counters.by_size[d].nonzero()[0]:
                yield Observation(int(snap.counters.by_size[d][k]),
                                  {"memscope.domain": DOMAINS[d], "memscope.size.le": str(1 << int(k))})

    def _samples(self, snap):
        yield Observation(snap.counters.samples)

    def _dropped(self, snap):
        yield Observation(snap.counters.dropped)

    def _footprint(self, snap):
        yield Observation(snap.counters.footprint_bytes)

    def _live_table_fill(self, snap):
        budget = getattr(getattr(self.tracker, "config", None), "live_table_max_entries", 0)
        if budget:
            yield Observation(snap.counters.live_entries / budget)

    def _live_table_threshold(self, snap):
        yield Observation(snap.counters.live_threshold)

    def _rates(self, snap):
        medium, small = snap.rates
        yield Observation(small, {"memscope.size_class": "small"})
        yield Observation(medium, {"memscope.size_class": "medium"})
        yield Observation(1.0, {"memscope.size_class": "large"})

    def _tracker_cpu(self, snap):
        drain, recognizer = self._meters()
        raw = {"hooks": (None, hooks_estimate_ns(snap.counters)),
               "drainer": (drain, self.tracker.drainer.cpu_ns if drain is not None else 0),
               "collection": (None, self.collection_ns),
               "export": (None, self.export_ns),
               "recognizer": (recognizer, recognizer.ns if recognizer is not None else 0)}
        for component, (source, ns) in raw.items():
            yield Observation(self._cpu.update(component, source, ns) / 1e9, {"memscope.component": component})

    def _pressure(self, snap):
        optimizer = getattr(self.tracker, "optimizer", None)
        if optimizer is not None:
            yield Observation(optimizer.pressure, {"memscope.workload": optimizer.workload})

    # -- estimates --

    def _live(self, snap):
        for d in self._domains(snap):
            yield Observation(float(snap.live_bytes[d]), {"memscope.domain": DOMAINS[d]})

    def _grouped(self, snap):
        if self._site_view is None or self._site_view[0] != self._generation:
            # The snapshot's per-site sums: ids in use (resolved when it was taken) and reclaimed
            # ids' sums, under the site each id stood for, so reuse changes no series.
            sites, types, folded = {}, {}, [0.0, 0.0, 0.0]
            for key, sums in snap.per_site.items():
                if isinstance(key, TypeName):
                    types[key] = sums
                elif key.file == RECLAIMED:
                    for k in range(3):
                        folded[k] += sums[k]
                else:
                    sites[key] = sums
            total = (sum(v[0] for v in sites.values()) + folded[0],
                     sum(v[1] for v in sites.values()) + folded[1])
            routed_sites = self._sites.update({k: (v[0], v[1]) for k, v in sites.items()}, total)
            routed_types = self._types.update({k: (v[0], v[1]) for k, v in types.items()})
            self._site_view = (self._generation, sites, routed_sites, routed_types, folded[2])
        return self._site_view

    def _site_allocated(self, snap):
        _, _, routed, _, _ = self._grouped(snap)
        for site, (b, _) in routed.items():
            yield Observation(b, _site_attributes(site))
        yield Observation(self._sites.other[0], OTHER_SITE)

    def _site_allocations(self, snap):
        _, _, routed, _, _ = self._grouped(snap)
        for site, (_, c) in routed.items():
            yield Observation(c, _site_attributes(site))
        yield Observation(self._sites.other[1], OTHER_SITE)

    def _site_live(self, snap):
        _, sites, _, _, folded_live = self._grouped(snap)
        # Ranked among the sites with a series or one due now: a site never live takes no place
        # in the top from one whose live went back to 0 (its 0 is news; theirs never was).
        ranked = sorted(((site, sums) for site, sums in sites.items() if sums[2] != 0.0 or site in self._live_sites),
                        key=lambda kv: kv[1][2], reverse=True)
        top, rest = ranked[: self._max_sites], ranked[self._max_sites:]
        for site, (_, _, live) in top:
            self._live_sites.add(site)
            yield Observation(live, _site_attributes(site))
        yield Observation(sum(v[2] for _, v in rest) + folded_live, OTHER_SITE)

    def _type_allocated(self, snap):
        _, _, _, routed, _ = self._grouped(snap)
        for type_name, (b, _) in routed.items():
            yield Observation(b, {"memscope.type": type_name.name})
        if self._types.other[0]:
            yield Observation(self._types.other[0], {"memscope.type": "<other>"})
