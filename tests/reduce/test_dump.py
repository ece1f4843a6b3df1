"""Dump files: round trip, zero-copy views, torn tails, SIGKILL, clear errors."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from memscope_otel.dump import FORMAT_VERSION, MAX_STRING_BYTES, DumpFormatError, DumpWriter, open_dump
from memscope_otel.records import RECORD_DTYPE

from synthetic import BASE_US, chunk_records


def write_file(path, sizes, strings=None):
    with DumpWriter(path, {"rate": 0.5, "domains": ("obj", "mem"), "path": None}, start_time_us=BASE_US) as w:
        if strings:
            w.write_strings(strings)
        for i, n in enumerate(sizes):
            w.write_chunk(BASE_US + i * 1000, chunk_records(i, n))
    return [chunk_records(i, n) for i, n in enumerate(sizes)]


def test_round_trip_bit_identical(tmp_path):
    path = tmp_path / "a.msdump"
    sizes = [1, 0, 7, 1000, 33]
    strings = {8: "/app/x.py:main:12", 9: "numpy.ndarray", 4: "<overflow>", 2**32 - 1: "é✓ unicode"}
    written = write_file(path, sizes, strings)
    d = open_dump(path)
    assert d.truncated is None
    assert d.format_version == FORMAT_VERSION == 3 and d.start_time_us == BASE_US
    assert d.config == {"rate": 0.5, "domains": ["obj", "mem"], "path": None}
    assert d.strings == strings
    non_empty = [(i, r) for i, r in enumerate(written) if len(r)]
    assert len(d.chunks) == len(non_empty)
    for chunk, (i, recs) in zip(d.chunks, non_empty):
        assert chunk.base_us == BASE_US + i * 1000
        assert chunk.records.tobytes() == recs.tobytes()  # bit-identical, NaN weights included
        np.testing.assert_array_equal(chunk.times_us(), BASE_US + i * 1000 + recs["time_delta_us"].astype(np.uint64))
    assert d.records.tobytes() == np.concatenate(written).tobytes()
    assert d.n_records == sum(sizes)


def test_views_are_zero_copy(tmp_path):
    path = tmp_path / "b.msdump"
    write_file(path, [10, 20])
    d = open_dump(path)
    for chunk in d.chunks:
        assert isinstance(chunk.records.base, np.memmap) or isinstance(chunk.records, np.memmap)
        assert not chunk.records.flags.owndata and not chunk.records.flags.writeable
    # the whole-file slot view is one mapping; the record mask picks exactly the records
    slots = d.slots
    assert not slots.flags.owndata
    assert slots[d.record_mask].tobytes() == d.records.tobytes()
    assert np.shares_memory(slots, d.chunks[0].records)


def test_string_tables_later_entries_win_and_long_labels_are_cut(tmp_path):
    path = tmp_path / "s.msdump"
    with DumpWriter(path, {}) as w:
        w.write_strings({1: "old", 2: "two"})
        w.write_strings({1: "new", 3: "x" * 100000, 4: "é" * 40000})
        stack = "\n".join(["a.py:f:1", *(f"b.py:g{i}:{i}" for i in range(10000))])
        w.write_strings({5: stack})
        w.write_strings({})
    d = open_dump(path)
    assert d.strings[1] == "new" and d.strings[2] == "two" and len(d.strings[3]) == MAX_STRING_BYTES
    assert d.strings[4] == "é" * (MAX_STRING_BYTES // 2)  # cut at a character's start
    assert d.label(1) == "new" and d.label(77) == "id 77"
    # a long stack loses whole outer frames, never the site or a torn line
    frames = d.stack(5)
    assert d.label(5) == "a.py:f:1" and frames[0] == "b.py:g0:0" and frames[-1] == f"b.py:g{len(frames) - 1}:{len(frames) - 1}"
    assert len(d.strings[5].encode()) <= MAX_STRING_BYTES < len(stack)
    assert d.stack(1) == ["new"] and d.stack(77) == ["id 77"]


def test_writer_rejects_bad_input(tmp_path):
    w = DumpWriter(tmp_path / "c.msdump", {})
    with pytest.raises(TypeError, match="RECORD_DTYPE"):
        w.write_chunk(0, np.zeros(3, dtype=np.uint64))
    with pytest.raises(ValueError, match="base_us"):
        w.write_chunk(-1, np.zeros(3, dtype=RECORD_DTYPE))
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_chunk(0, np.zeros(3, dtype=RECORD_DTYPE))


def test_every_truncation_reads_complete_chunks_or_fails_clearly(tmp_path):
    path = tmp_path / "full.msdump"
    write_file(path, [3, 5, 2], {8: "a.py:f:1"})
    full = path.read_bytes()
    d = open_dump(path)
    header_length = d.header_length
    ends = [c.offset + 32 + 32 * len(c.records) for c in d.chunks]
    cut = tmp_path / "cut.msdump"
    for size in range(len(full)):
        cut.write_bytes(full[:size])
        if size < header_length:
            with pytest.raises(DumpFormatError):
                open_dump(cut)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            d = open_dump(cut)
        complete = sum(1 for e in ends if e <= size)
        assert len(d.chunks) == complete
        assert (d.truncated is None) == _is_chunk_boundary(full, header_length, size)
        if d.truncated is not None:
            with pytest.raises(DumpFormatError, match="torn|chunk header"):
                open_dump(cut, strict=True)


def _is_chunk_boundary(full, header_length, size):
    off = header_length
    while off < len(full):
        if off == size:
            return True
        length = int.from_bytes(full[off + 20:off + 24], "little")
        off += 32 + length
    return off == size


def test_torn_tail_warns(tmp_path):
    path = tmp_path / "t.msdump"
    write_file(path, [4, 4])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 5)
    with pytest.warns(RuntimeWarning, match="torn last chunk"):
        d = open_dump(path)
    assert len(d.chunks) == 1 and d.truncated.offset == d.chunks[0].offset + 32 + 4 * 32


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"GIF89a" + b[6:], "not a memscope dump"),
    (lambda b: b[:8] + (4).to_bytes(2, "little") + b[10:], "format version 4; this reader reads versions 2, 3"),
    (lambda b: b[:8] + (1).to_bytes(2, "little") + b[10:], "format version 1; this reader reads versions 2, 3"),
    (lambda b: b[:10] + (64).to_bytes(2, "little") + b[12:], "record size 64"),
    (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "header checksum"),
    (lambda b: b"", "empty"),
])
def test_foreign_or_corrupt_header(tmp_path, damage, message):
    path = tmp_path / "h.msdump"
    write_file(path, [2])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DumpFormatError, match=message) as info:
        open_dump(path)
    assert str(path) in str(info.value) and "byte" in str(info.value)


def test_format_2_files_read_with_one_frame_stacks(tmp_path):
    """A file of format 2 (one frame per id) reads: each id's stack is its site alone."""
    import struct
    import zlib

    path = tmp_path / "v2.msdump"
    with DumpWriter(path, {"k": 1}) as w:
        w.write_strings({16: "app.py:f:3", 17: "numpy.ndarray"})
        w.write_chunk(BASE_US, chunk_records(0, 5))
    data = bytearray(path.read_bytes())
    data[8:10] = (2).to_bytes(2, "little")
    config_length = struct.unpack_from("<I", data, 24)[0]
    data[28:32] = struct.pack("<I", zlib.crc32(bytes(data[32:32 + config_length]), zlib.crc32(bytes(data[:28]))))
    path.write_bytes(bytes(data))
    d = open_dump(path)
    assert d.format_version == 2 and d.config == {"k": 1} and d.n_records == 5
    assert d.label(16) == "app.py:f:3" and d.stack(16) == ["app.py:f:3"] and d.stack(17) == ["numpy.ndarray"]


def test_corrupt_record_payload_names_its_offset(tmp_path):
    path = tmp_path / "p.msdump"
    write_file(path, [2, 3])
    d = open_dump(path)
    target = d.chunks[1].offset + 32 + 40
    data = bytearray(path.read_bytes())
    data[target] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DumpFormatError, match="payload checksum") as info:
        open_dump(path)
    assert info.value.offset == d.chunks[1].offset + 32
    assert len(open_dump(path, verify=False).chunks) == 2  # headers still fine


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from memscope_otel.dump import DumpWriter
    from synthetic import BASE_US, chunk_records
    w = DumpWriter(sys.argv[1], {{"pid": "child"}})
    i = 0
    while True:
        w.write_chunk(BASE_US + i, chunk_records(i, 200 + i % 50))
        w.write_strings({{i: "site %d" % i}})
        print(i, flush=True)
        i += 1
""")


def test_sigkill_leaves_readable_file(tmp_path):
    path = tmp_path / "killed.msdump"
    script = WRITER_SCRIPT.format(tests=os.path.dirname(__file__))
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        written = -1
        deadline = time.monotonic() + 30
        while written < 30 and time.monotonic() < deadline:
            written = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert written >= 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = open_dump(path)
    # every chunk reported written before the kill is there, bit-identical, in order
    assert len(d.chunks) >= written + 1
    for i, chunk in enumerate(d.chunks):
        assert chunk.base_us == BASE_US + i
        assert chunk.records.tobytes() == chunk_records(i, 200 + i % 50).tobytes()
    assert all(d.strings[i] == f"site {i}" for i in range(written + 1))


TRACKED_SCRIPT = textwrap.dedent("""
    import sys, time
    import memscope_otel
    memscope_otel.start(dump_path=sys.argv[1], drain_interval_ms=20, small_sample_rate=0.05)
    keep = []
    def make_objects():
        out = []  # a plain loop: comprehensions are functions of their own before 3.12
        for _ in range(50):
            out.append(bytearray(2000))
            out.append(list(range(100)))
        return out
    while True:
        keep.append(make_objects())
        if len(keep) > 200:
            keep = keep[100:]
        time.sleep(0.001)
        print("tick", flush=True)
""")


def test_tracker_dump_end_to_end_sigkill(tmp_path):
    memscope_otel = pytest.importorskip("memscope_otel")
    if not hasattr(memscope_otel, "start"):
        pytest.skip("memscope_otel.start does not exist in this build")
    pytest.importorskip("memscope_otel._memscope")
    path = tmp_path / "tracked.msdump"
    proc = subprocess.Popen([sys.executable, "-c", TRACKED_SCRIPT, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        size = ticks = 0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            ticks += 1
            size = os.path.getsize(path) if path.exists() else 0
            if size > 64 * 1024 and ticks > 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert size > 64 * 1024, err[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d = open_dump(path)
    assert d.n_records > 100
    assert json.loads(json.dumps(d.config))["small_sample_rate"] == 0.05
    recs = d.records
    sites = set(np.unique(recs["site"]).tolist())
    named = [s for s in sites if s in d.strings]
    assert named, "the string tables name the sites of the records"
    assert any("make_objects" in d.strings[s] for s in named), sorted(d.strings.values())[:20]
    # records are real allocations: obj/mem/raw domains, positive weights, sizes like the workload
    assert (recs["weight"] >= 1).all()
    assert ((recs["size"] >= 2000) & (recs["size"] <= 2064)).any()  # bytearray(2000) buffers


def test_config_too_large_is_left_out(tmp_path):
    DumpWriter(tmp_path / "big.msdump", {"x": "y" * 70000}).close()
    assert "config left out" in open_dump(tmp_path / "big.msdump").config["memscope_note"]
