"""The 32-byte record as numpy sees it: one structured dtype mirroring ``ms_record_t``.

Records drained from the C rings, and records read back from a dump file, are arrays of this dtype,
so that both are viewed in place (``numpy.frombuffer`` / ``numpy.memmap``) rather than copied.
"""
import numpy as np

RECORD_DTYPE = np.dtype(
    [
        ("address", "<u8"),
        ("size", "<u8"),
        ("time_delta_us", "<u4"),
        ("site", "<u4"),
        ("weight", "<f4"),
        ("flags", "<u2"),
        ("thread", "<u2"),
    ]
)
assert RECORD_DTYPE.itemsize == 32


def concatenate_records(batches):
    """One new (writable) array of the records of ``batches``, in order.

    Copied as bytes by ``bytearray.join``: numpy copies a structured dtype field by field (about
    20 times slower), and numpy's own copies give the GIL up, which a background thread then has
    to take back from the application (see ms_drain_reduce in csrc/memscope.h); a join of buffers
    that are not bytes objects keeps the GIL whatever their size."""
    joined = bytearray().join([np.ascontiguousarray(b, dtype=RECORD_DTYPE) for b in batches])
    return np.frombuffer(joined, dtype=RECORD_DTYPE)


DOMAINS = ("obj", "mem", "raw", "manual", "native")
SIZE_CLASSES = ("small", "medium", "large")
EVENTS = ("alloc", "free", "realloc")

# The flag layout of csrc/memscope.h (dump format 2).
DOMAIN_MASK = 0x7
EVENT_SHIFT, EVENT_MASK = 3, 0x18
CLASS_SHIFT, CLASS_MASK = 5, 0x60
FLAG_NOLIVE = 0x80
FLAG_FREQUENCY = 0x100


def domain_of(flags):
    """The domain index that record flags name (an int or a numpy array); a value past the last
    domain (a corrupt record) reads as the last, as in the C reducers."""
    return np.minimum(flags & DOMAIN_MASK, len(DOMAINS) - 1)


def event_of(flags):
    return (flags & EVENT_MASK) >> EVENT_SHIFT


def size_class_of(flags):
    return (flags & CLASS_MASK) >> CLASS_SHIFT
