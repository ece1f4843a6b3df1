"""Analysis of recorded samples: the numpy form of the reducer, plus what a report shows.

``numpy_summary`` computes, from an array of records, exactly what ``ms_reduce`` accumulates (same
fields, same clamping of bad input, same record-order summation), so it doubles as the reference the
C reducers are tested and benchmarked against. ``analyze`` builds the report's figures from a dump;
``memscope_otel.report_render`` turns them into text or HTML.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .records import (CLASS_MASK, CLASS_SHIFT, DOMAIN_MASK, DOMAINS, EVENT_MASK, EVENT_SHIFT,
                      FLAG_NOLIVE, RECORD_DTYPE)

MAX_IDS = 32768
ID_OVERFLOW = 4
BUCKETS = 65
MANUAL_DOMAIN = DOMAINS.index("manual")


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Number of significant bits of each uint64 (0 for 0), exactly, without a float rounding trap."""
    values = values.astype(np.uint64, copy=False)
    hi = (values >> np.uint64(32)).astype(np.float64)  # < 2^32: exact in float64
    lo = (values & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi_bits = np.frexp(hi)[1]
    lo_bits = np.frexp(lo)[1]
    return np.where(hi_bits > 0, hi_bits + 32, lo_bits).astype(np.int64)


def size_buckets(sizes: np.ndarray) -> np.ndarray:
    """Power-of-two bucket of each size: 0 for sizes 0 and 1, else k with 2^(k-1) < size <= 2^k."""
    sizes = sizes.astype(np.uint64, copy=False)
    minus_one = sizes - np.uint64(1)  # wraps for size 0, which is masked below
    return np.where(sizes <= 1, 0, _bit_length(minus_one))


@dataclasses.dataclass
class DecodedRecords:
    """Per-record fields as ms_reduce reads them (bad values clamped the same way)."""

    domain: np.ndarray
    size_class: np.ndarray
    site: np.ndarray
    is_alloc: np.ndarray
    is_free: np.ndarray
    is_live_alloc: np.ndarray
    weight: np.ndarray
    weighted_bytes: np.ndarray
    bucket: np.ndarray


def decode(records: np.ndarray) -> DecodedRecords:
    """Decodes flags, clamps site ids and size classes, and weighs sizes, like reduce.c does."""
    flags = records["flags"].astype(np.int64)
    domain = flags & DOMAIN_MASK
    event = (flags & EVENT_MASK) >> EVENT_SHIFT
    size_class = np.minimum((flags & CLASS_MASK) >> CLASS_SHIFT, 2)
    site = records["site"].astype(np.int64)
    site = np.where(site < MAX_IDS, site, ID_OVERFLOW + domain)
    is_alloc = (event == 0) | (event == 2)
    weight = records["weight"].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # corrupt weights: NaN, inf
        weighted_bytes = weight * records["size"].astype(np.float64)
    return DecodedRecords(
        domain=domain,
        size_class=size_class,
        site=site,
        is_alloc=is_alloc,
        is_free=event == 1,
        is_live_alloc=is_alloc & ((flags & FLAG_NOLIVE) == 0),
        weight=weight,
        weighted_bytes=weighted_bytes,
        bucket=size_buckets(records["size"]),
    )


def _fold(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    # np.bincount adds the weights into a zeroed float64 table in array order: the same left fold
    # in record order that the C reducer performs.
    return np.bincount(index, weights=values, minlength=length).astype(np.float64, copy=False)


def numpy_summary(records: np.ndarray) -> dict:
    """The fields of ``ms_summary_t`` for one batch reduced into a zeroed summary, with numpy."""
    records = np.asarray(records)
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"records must have memscope_otel.records.RECORD_DTYPE, not {records.dtype}")
    r = decode(records)
    a, lv, fr = r.is_alloc, r.is_live_alloc, r.is_free
    cell = r.domain * 3 + r.size_class
    live = lv | fr
    signed_bytes = np.where(fr, -r.weighted_bytes, r.weighted_bytes)[live]
    signed_count = np.where(fr, -r.weight, r.weight)[live]
    return {
        "count": _fold(cell[a], r.weight[a], 12).reshape(4, 3),
        "bytes": _fold(cell[a], r.weighted_bytes[a], 12).reshape(4, 3),
        "bucket_count": _fold(r.domain[a] * BUCKETS + r.bucket[a], r.weight[a], 4 * BUCKETS).reshape(4, BUCKETS),
        "live_bytes": _fold(r.domain[live], signed_bytes, 4),
        "live_count": _fold(r.domain[live], signed_count, 4),
        "records": int(len(records)),
        "free_records": int(fr.sum()),
        "id_count": _fold(r.site[a], r.weight[a], MAX_IDS),
        "id_bytes": _fold(r.site[a], r.weighted_bytes[a], MAX_IDS),
        "id_live_bytes": _fold(r.site[live], signed_bytes, MAX_IDS),
    }
