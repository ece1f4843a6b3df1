"""The cumulative Summary: Horvitz-Thompson sums of every record drained so far.

It is only ever added to (nothing is lost when an export fails); the C reducer writes straight
into these numpy arrays.
"""
import numpy as np


MAX_IDS = 32768  # MS_MAX_IDS in csrc/memscope.h


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

    def _view(self, field, shape):
        return np.frombuffer(self._ffi.buffer(field), dtype=np.float64).reshape(shape)

    @property
    def count(self):
        """Estimated allocations, [domain][size class]."""
        return self._view(self._c.count, (4, 3))

    @property
    def bytes(self):
        """Estimated requested bytes, [domain][size class]."""
        return self._view(self._c.bytes, (4, 3))

    @property
    def bucket_count(self):
        return self._view(self._c.bucket_count, (4, 65))

    @property
    def live_bytes(self):
        return self._view(self._c.live_bytes, (4,))

    @property
    def live_count(self):
        return self._view(self._c.live_count, (4,))

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
