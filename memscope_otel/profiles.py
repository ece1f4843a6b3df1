"""Allocation and heap profiles as pprof (``profile.proto``, gzipped): what ``go tool pprof``,
Pyroscope and speedscope read.

A profile is a list of stacks, each with four values: ``alloc_objects`` / ``alloc_space``
(Horvitz-Thompson estimates of the allocations and bytes since the tracker started) and
``inuse_objects`` / ``inuse_space`` (the sampled blocks still allocated, each counted by its
weight). The kinds: ``alloc`` (the first two sample types), ``inuse`` (the last two) and
``heap`` (all four, ``inuse_space`` the default, like Go's heap profile). Values are rounded to
integers, as the format wants. Each stack's frames become locations (one per
``file:function:line``, innermost first, as pprof wants) and functions (one per function and
file); the allocation's domain is a sample label.

The protobuf encoding is written here (a few dozen lines, no dependency): ``profile.proto`` uses
only varints, packed varints, strings and nested messages.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import time

KINDS = {
    "alloc": (("alloc_objects", "count"), ("alloc_space", "bytes")),
    "inuse": (("inuse_objects", "count"), ("inuse_space", "bytes")),
    "heap": (("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"),
             ("inuse_space", "bytes")),
}
_DEFAULT_TYPE = {"alloc": "alloc_space", "inuse": "inuse_space", "heap": "inuse_space"}


@dataclasses.dataclass(frozen=True)
class ProfileStack:
    """One stack of a profile: frames innermost first, (file, function, line) each.

    ``key`` names where its cumulative sums live in the tracker, which its frames may not (a
    CPython 3.10 name is refined after the stack was first shown; sums of the same frames may
    sit under several ids): ``("id", id, generation)`` for an id in use, ``("site", site)`` for
    a reclaimed site's. ``retires_to`` is the key its sums move to when that key goes away (an
    id's site; a site kept by name folds into the domain's ``<reclaimed>``). None outside a
    live tracker (a dump file's stacks)."""

    frames: tuple
    domain: str
    alloc_objects: float
    alloc_space: float
    inuse_objects: float
    inuse_space: float
    key: tuple = None
    retires_to: tuple = None


def parse_frame(label: str) -> tuple:
    """``file:function:line`` -> (file, function, line); a label without that shape (a fixed
    name such as ``<native obj>``, a type name) is a function of its own at line 0. File names
    may hold colons, qualified function names do not."""
    parts = label.rsplit(":", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[0], parts[1], int(parts[2])
    return "", label, 0


def display_name(function: str, file: str) -> str:
    """The function name a profile shows. pprof's readers shorten names by dropping what they
    take for C++ template arguments, so a Python name that starts with ``<`` (``<module>``,
    ``<listcomp>``, ``<lambda>``) would read as ``<unknown>``: it is prefixed with its module's
    name (``app.<module>``), and a fixed name (``<native>``, ``<overflow>``: no file of its own)
    is written in square brackets. The original name stays the function's system name."""
    if not function.startswith("<"):
        return function
    if not file or file == function:
        return f"[{function.strip('<>')}]"
    stem = os.path.basename(file)
    return f"{stem[:-3] if stem.endswith('.py') else stem}.{function}"


# ------------------------------------------------------------------------ protobuf encoding


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: two's complement, ten bytes for a negative value
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""  # zero: the default, left out


def _field_bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _field_packed(field: int, values) -> bytes:
    return _field_bytes(field, b"".join(_varint(v) for v in values))


class _Strings:
    def __init__(self):
        self.table = [""]  # index 0 is the empty string, as the format requires
        self.index = {"": 0}

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(text)
        return found


def encode(stacks, kind: str = "heap", time_nanos: int | None = None, duration_nanos: int = 0) -> bytes:
    """The gzipped ``profile.proto`` of ``stacks`` (:class:`ProfileStack`), with the sample
    types of ``kind`` (see KINDS). Stacks whose values are all zero are left out."""
    if kind not in KINDS:
        raise ValueError(f"profile kind {kind!r}: one of {', '.join(KINDS)}")
    types = KINDS[kind]
    strings = _Strings()
    functions, locations = {}, {}  # (name, file) -> id; (file, name, line) -> id
    samples = []
    domain_key = strings("domain")
    for stack in stacks:
        values = [int(round(getattr(stack, name))) for name, _ in types]
        if not any(values):
            continue
        ids = []
        for file, function, line in stack.frames:
            location = locations.get((file, function, line))
            if location is None:
                fid = functions.get((function, file))
                if fid is None:
                    fid = functions[(function, file)] = len(functions) + 1
                location = locations[(file, function, line)] = len(locations) + 1
            ids.append(location)
        label = _field_varint(1, domain_key) + _field_varint(2, strings(stack.domain))
        samples.append(_field_packed(1, ids) + _field_packed(2, values) + _field_bytes(3, label))
    out = [_field_bytes(1, _field_varint(1, strings(name)) + _field_varint(2, strings(unit))) for name, unit in types]
    out += [_field_bytes(2, sample) for sample in samples]
    for (file, function, line), location in locations.items():
        line_message = _field_varint(1, functions[(function, file)]) + _field_varint(2, line)
        out.append(_field_bytes(4, _field_varint(1, location) + _field_bytes(4, line_message)))
    for (function, file), fid in functions.items():
        out.append(_field_bytes(5, _field_varint(1, fid) + _field_varint(2, strings(display_name(function, file)))
                                + _field_varint(3, strings(function)) + _field_varint(4, strings(file))))
    default_type = strings(_DEFAULT_TYPE[kind])
    period_type = _field_varint(1, strings("space")) + _field_varint(2, strings("bytes"))
    out += [_field_bytes(6, text.encode("utf-8", "replace")) for text in strings.table]
    out.append(_field_varint(9, time.time_ns() if time_nanos is None else int(time_nanos)))
    out.append(_field_varint(10, int(duration_nanos)))
    out.append(_field_bytes(11, period_type))
    out.append(_field_varint(14, default_type))
    return gzip.compress(b"".join(out), mtime=0)


# ------------------------------------------------------------------------ sources


def from_report(report) -> list:
    """The stacks of a dump's :class:`memscope_otel.report.Report` (the live values: the blocks
    still allocated when the recording ended)."""
    return [ProfileStack(tuple(parse_frame(f) for f in row.frames), row.domain, row.est_count, row.est_bytes,
                         row.live_count, row.live_bytes) for row in report.stacks]


def from_tracker(tracker) -> list:
    """The stacks of a running tracker: estimates since it started and the live table now."""
    return tracker.profile_stacks()
