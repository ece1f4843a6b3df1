"""Fuzzing the dump reader: 10,000+ mutated and truncated files, each either read or rejected with
DumpFormatError; never another exception, a crash, a hang or an outsized allocation."""
import struct
import warnings

import numpy as np

from memscope_otel.dump import DumpFormatError, DumpWriter, open_dump

from synthetic import BASE_US, chunk_records

FILES = 10_000


def base_file(path):
    with DumpWriter(path, {"seed": 1, "domains": ["obj"]}, start_time_us=BASE_US) as w:
        w.write_strings({8: "a.py:f:1", 9: "numpy.ndarray"})
        w.write_chunk(BASE_US, chunk_records(0, 3))
        w.write_chunk(BASE_US + 5, chunk_records(1, 2))
        w.write_strings({10: "b.py:g:2"})
    return path.read_bytes()


INTERESTING = [0, 1, 31, 32, 33, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 20, 1 << 21]


def mutate(rng, data):
    data = bytearray(data)
    choice = rng.integers(0, 7) if len(data) > 4 else 4
    if choice == 0:  # flip a few bits
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(0, len(data))
            data[i] ^= 1 << int(rng.integers(0, 8))
    elif choice == 1:  # truncate
        del data[rng.integers(0, len(data)):]
    elif choice == 2:  # an interesting u32 at a 4-aligned offset (lengths, counts, checksums)
        i = int(rng.integers(0, len(data) // 4)) * 4
        data[i:i + 4] = struct.pack("<I", INTERESTING[rng.integers(0, len(INTERESTING))])
    elif choice == 3:  # insert or delete a run of bytes
        i = rng.integers(0, len(data))
        if rng.random() < 0.5:
            data[i:i] = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
        else:
            del data[i:i + rng.integers(1, 64)]
    elif choice == 4:  # random garbage of random length
        data = bytearray(rng.integers(0, 256, rng.integers(0, 400), dtype=np.uint8).tobytes())
    elif choice == 5:  # duplicate a slice (repeated chunks, misaligned copies)
        i = rng.integers(0, len(data))
        j = rng.integers(i, len(data) + 1)
        data[j:j] = data[i:j]
    else:  # random bytes written over a region
        i = rng.integers(0, len(data))
        n = rng.integers(1, 40)
        data[i:i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(data)


def check_valid(d, size):
    for chunk in d.chunks:
        assert chunk.offset + 32 + chunk.records.nbytes <= size
        assert chunk.records.dtype.itemsize == 32
    assert isinstance(d.config, dict)
    assert all(isinstance(k, int) and isinstance(v, str) for k, v in d.strings.items())
    d.records  # the whole-file view works on whatever was read
    d.times_us()


def test_fuzz_reader(tmp_path):
    rng = np.random.default_rng(20240601)
    original = base_file(tmp_path / "base.msdump")
    outcomes = {"read": 0, "rejected": 0, "torn": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(FILES):
            # a fresh file each time: truncating a file that is still mapped is slow on some
            # file systems
            target = tmp_path / f"fuzz{k}.msdump"
            data = original
            for _ in range(rng.integers(1, 4)):  # stack up to three mutations
                data = mutate(rng, data)
            target.write_bytes(data)
            try:
                d = open_dump(target)
            except DumpFormatError as exc:
                assert 0 <= exc.offset <= len(data) and exc.reason
                outcomes["rejected"] += 1
                target.unlink()
                continue
            check_valid(d, len(data))
            outcomes["torn" if d.truncated is not None else "read"] += 1
            d.close()
            del d
            target.unlink()
    assert sum(outcomes.values()) == FILES
    # the mutations exercise every outcome, not only the first check
    assert min(outcomes.values()) > 10, outcomes
