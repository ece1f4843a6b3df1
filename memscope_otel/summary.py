"""The cumulative Summary: Horvitz-Thompson sums of every record drained so far.

It is only ever added to (nothing is lost when an export fails); the C reducer writes straight
into these numpy arrays. The per-id sums of a site id that is reclaimed (its code object died,
see memscope_otel/sites.py) move into ``retired``, under the site the id stood for, before the id
is reused: per-site sums never change because of reuse.
"""
import numpy as np

from .records import DOMAINS
from .sites import RECLAIMED, reclaimed_site

MAX_IDS = 32768  # MS_MAX_IDS in csrc/memscope.h
# Reclaimed sites kept by name in ``retired``: half of them the ones with the most bytes, half
# the most recently reclaimed of the others. Past twice this the rest fold into one <reclaimed>
# site per domain (a fold sorts them all: with this slack its cost spreads over as many
# retirements as it keeps, instead of falling on almost every drain of such a program, whose
# drainer must keep up with its code making for the ids to last): a program that generates and drops
# code without end makes new sites without end, and each one kept costs about a kilobyte of
# memory (with the heap's fragmentation). Their sums stay in the totals; a folded site that
# comes back counts from zero again (and the exporter copes: producer.RoutedCounters).
RETIRED_SITES = 1024
RETIRED_SITES_MAX = 2 * RETIRED_SITES + 4  # past it, retire() folds (the <reclaimed> sites aside)


class Summary:
    def __init__(self):
        from ._memscope import ffi

        self._ffi = ffi
        self._c = ffi.new("ms_summary_t *")
        self.id_count = np.zeros(MAX_IDS)
        self.id_bytes = np.zeros(MAX_IDS)
        self.id_live_bytes = np.zeros(MAX_IDS)
        self._c.id_count = ffi.cast("double *", ffi.from_buffer(self.id_count))
        self._c.id_bytes = ffi.cast("double *", ffi.from_buffer(self.id_bytes))
        self._c.id_live_bytes = ffi.cast("double *", ffi.from_buffer(self.id_live_bytes))
        self.c_summary_address = int(ffi.cast("uintptr_t", self._c))  # (for calls through ctypes)
        # Site -> [estimated bytes, count, live bytes] of reclaimed ids; the most recently
        # retired last (folding takes the oldest first among equals).
        self.retired = {}

    def _view(self, field, shape):
        return np.frombuffer(self._ffi.buffer(field), dtype=np.float64).reshape(shape)

    @property
    def count(self):
        """Estimated allocations, [domain][size class]."""
        return self._view(self._c.count, (len(DOMAINS), 3))

    @property
    def bytes(self):
        """Estimated requested bytes, [domain][size class]."""
        return self._view(self._c.bytes, (len(DOMAINS), 3))

    @property
    def bucket_count(self):
        return self._view(self._c.bucket_count, (len(DOMAINS), 65))

    @property
    def live_bytes(self):
        return self._view(self._c.live_bytes, (len(DOMAINS),))

    @property
    def live_count(self):
        return self._view(self._c.live_count, (len(DOMAINS),))

    @property
    def c_summary(self):
        """The ``ms_summary_t *`` the drainer's C call reduces into (ms_drain_reduce)."""
        return self._c

    @property
    def records(self):
        return int(self._c.records)

    def reset_live(self):
        """Forgets the live estimate (after a restart the old blocks' frees are no longer seen)."""
        self.live_bytes[:] = 0
        self.live_count[:] = 0
        self.id_live_bytes[:] = 0
        for sums in self.retired.values():
            sums[2] = 0.0

    def retire(self, ids, sites, keep=frozenset):
        """Moves the per-id sums of ``ids`` (reclaimed: about to be reused) under ``sites`` (what
        each id stood for) and zeroes them. ``keep``: a callable giving the sites that ids in use
        resolve to, which must not fold (their sum is partly per-id, partly here)."""
        index = np.asarray(ids, dtype=np.intp)
        moved = zip(sites, self.id_bytes[index].tolist(), self.id_count[index].tolist(),
                    self.id_live_bytes[index].tolist())
        for site, nbytes, count, live in moved:
            if nbytes == 0.0 and count == 0.0 and live == 0.0:
                continue  # (e.g. in a forked child, whose sums start from zero: nothing to keep)
            sums = self.retired.pop(site, None) or [0.0, 0.0, 0.0]
            sums[0] += nbytes
            sums[1] += count
            sums[2] += live
            self.retired[site] = sums
        self.id_bytes[index] = 0.0
        self.id_count[index] = 0.0
        self.id_live_bytes[index] = 0.0
        if len(self.retired) > RETIRED_SITES_MAX:
            self._fold(keep())

    def _fold(self, keep):
        named = [(sums[0], position, site) for position, (site, sums) in enumerate(self.retired.items())
                 if site.file != RECLAIMED and site not in keep]
        if len(named) <= RETIRED_SITES:
            return
        named.sort(key=lambda entry: entry[:2])  # fewest bytes first; the oldest first among equals
        rest = named[: len(named) - RETIRED_SITES // 2]  # the largest half stay
        rest.sort(key=lambda entry: entry[1])  # the oldest first
        for _, _, site in rest[: len(rest) - RETIRED_SITES // 2]:  # the most recent half stay
            sums = self.retired.pop(site)
            folded = self.retired.setdefault(reclaimed_site(site.domain), [0.0, 0.0, 0.0])
            for k in range(3):
                folded[k] += sums[k]
