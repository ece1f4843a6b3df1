"""The dump file: every sampled record, chunk by chunk, readable back without copying.

Layout (all integers little-endian; every part is a multiple of 32 bytes, the record size, so the
whole file after its header is a sequence of 32-byte slots)::

    file header, 32 bytes
        0  magic           8 bytes  b"\\x89MEMSCP\\n"
        8  format version  u16      FORMAT_VERSION
       10  record size     u16      32
       12  header length   u32      this header + config JSON + zero padding, a multiple of 32
       16  start time      u64      microseconds since the Unix epoch
       24  config length   u32      bytes of the UTF-8 JSON object that follows
       28  header CRC32    u32      of bytes 0..27 and the config JSON
    config JSON, zero padding
    chunks, each a 32-byte chunk header then its payload:
        0  magic           4 bytes  b"MSCK"
        4  kind            u16      1 = records, 2 = string table, 3 = string table that
                                    redefines ids
        6  reserved        u16      0
        8  base time       u64      records: microseconds since the epoch; a record's time is
                                    base time + its time_delta_us. String tables: 0
       16  count           u32      records, or string entries
       20  payload length  u32      bytes; records: count * 32; string tables: padded to 32
       24  payload CRC32   u32
       28  header CRC32    u32      of bytes 0..27
    string-table payload (kinds 2 and 3): entries of (id u32, byte length u32, UTF-8 text), then
    zero padding.

Since format 3 a record's id names a stack: its text is the site ``file:function:line`` (the
frame it is counted under in the metrics), then, when the stack is more than that one frame, one
line per frame of the stack, innermost first (``Dump.label`` gives the site, ``Dump.stack`` the
frames); a type's text is its name. Format 2 (one frame per id) still reads: its stacks are their
site alone. Format 1 (two domain bits in the record flags) is refused with a clear error.

Ids and string tables: an entry says what an id stands for in the records chunks after it, up
to the next entry for the same id. Site ids are reused (an id whose code object died is handed
out again once nothing carries it), so one id may stand for different sites over a file: the
writer puts an id's first entry in a table of kind 2 and every later one in a table of kind 3,
before the first records chunk that needs it. The reader attributes each records chunk with the
entries in force at it (``Dump.label(id, chunk_index)``); ``Dump.strings`` holds the latest.
Readers that predate kind 3 stop at such a table with "unknown chunk kind" instead of
attributing earlier records to the new sites. Files without one read as they always did.

Crash safety: a chunk goes to the kernel in one ``writev`` call from an unbuffered descriptor, so
once ``write_chunk`` returns, the chunk survives the process being killed (even by SIGKILL); a kill
during the call leaves a torn last chunk, which the reader reports and skips (``Dump.truncated``),
keeping every complete chunk. ``flush()`` additionally asks the kernel to put the data on disk.

The reader maps the file with ``numpy.memmap``: each chunk's records are a view of the mapping, not
a copy, and bad input (foreign, truncated, corrupt) raises ``DumpFormatError`` naming the byte
offset and what was wrong; it never reads outside the file, and allocates nothing whose size is
not bounded by the file's own length.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import os
import stat
import struct
import threading
import time
import warnings
import zlib

import numpy as np

from .records import RECORD_DTYPE

MAGIC = b"\x89MEMSCP\n"
CHUNK_MAGIC = b"MSCK"
FORMAT_VERSION = 3  # 2: three domain bits in the record flags (the native domain); 3: stacks
READABLE_VERSIONS = (2, 3)
RECORD_SIZE = RECORD_DTYPE.itemsize
KIND_RECORDS = 1
KIND_STRINGS = 2
KIND_REDEFINE = 3

_FILE_HEADER = struct.Struct("<8sHHIQI")  # without its trailing CRC
_CHUNK_HEADER = struct.Struct("<4sHHQII I")  # without its trailing CRC
_STRING_ENTRY = struct.Struct("<II")
assert _FILE_HEADER.size == 28 and _CHUNK_HEADER.size == 28

MAX_CONFIG_BYTES = 1 << 16  # also bounds the cost of parsing it (huge JSON numbers are slow)
MAX_CHUNK_RECORDS = 1 << 20  # larger batches are split, keeping payload lengths well inside u32
MAX_STRING_BYTES = 1 << 16  # longer texts are cut, at a line's end (a stack's outermost frames go)
MAX_STRINGS_PAYLOAD = 1 << 22


class DumpFormatError(ValueError):
    """A dump file that cannot be read: ``offset`` is the byte where the problem is."""

    def __init__(self, offset: int, reason: str, path: str | None = None):
        self.offset = offset
        self.reason = reason
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}invalid memscope dump at byte {offset}: {reason}")


def _pad32(n: int) -> int:
    return (n + 31) & ~31


class DumpPathRefused(PermissionError):
    """A dump path refused because writing there could harm a file that is not the dump's own
    (``reason`` says why); nothing at the path was changed."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EPERM, reason, path)
        self.reason = reason

    def __str__(self):
        return f"{self.filename}: {self.reason}"


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _refusal(st) -> str | None:
    """Why the file described by ``st`` must not become a dump, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link (a dump is never written through one)"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "an unknown kind of file")
        return f"it is not a regular file ({kind})"
    # Root included: root can truncate anything, which is exactly what a planted file asks for.
    if st.st_uid != os.geteuid():
        return f"it belongs to another user (uid {st.st_uid}) and is never truncated"
    if st.st_nlink > 1:
        return f"it has {st.st_nlink} hard links (truncating it would empty the other names too)"
    return None


def _open_dump_file(path: str, exclusive: bool) -> int:
    """Opens ``path`` for a new dump: empty, mode 0600, and never a file that is not ours.

    The checks look at the opened descriptor, not at the name, so nothing can be swapped in at the
    name between a check and the truncation. Hence no O_TRUNC in the open (it would empty another
    user's file before the check could refuse it), and O_NOFOLLOW (a symbolic link at the name
    fails the open: the descriptor can never be a link's target). O_NONBLOCK keeps the open of a
    FIFO from waiting for a reader and O_NOCTTY keeps a terminal from becoming the process's
    controlling one; the check then refuses both.
    """
    flags = (os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
             | (os.O_EXCL if exclusive else 0))
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        # Only to name the reason: the open already refused (ELOOP for a link, EEXIST when
        # exclusive, ENXIO for a FIFO without a reader, EISDIR, EACCES where fs.protected_regular
        # stops even root from opening another user's file in a sticky directory).
        try:
            reason = _refusal(os.lstat(path))
        except OSError:
            reason = None
        if reason is None and exclusive and exc.errno == errno.EEXIST:
            reason = "a file is already there (a forked child's dump is only ever a new file)"
        if reason is None:
            raise
        raise DumpPathRefused(path, reason) from None
    try:
        reason = _refusal(os.fstat(fd))
        if reason is not None:
            raise DumpPathRefused(path, reason)
        os.set_blocking(fd, True)
        # Exactly 0600 whatever the umask, and also for an old dump of ours left 0644 before.
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


# ------------------------------------------------------------------------------------------ writer


def _cut(data: bytes) -> bytes:
    """At most MAX_STRING_BYTES of an entry's text: whole lines (a stack loses its outermost
    frames) where a line ends in the limit, else a cut inside the one line, at a character's
    start (so the reader's UTF-8 check holds)."""
    if len(data) <= MAX_STRING_BYTES:
        return data
    cut = data[:MAX_STRING_BYTES]
    end = cut.rfind(b"\n")
    if end > 0:
        return cut[:end]
    return cut.decode("utf-8", "ignore").encode("utf-8")


class DumpWriter:
    """Writes a dump file: ``DumpWriter(path, config)`` creates (or truncates) it and writes the
    header; ``write_chunk`` and ``write_strings`` append chunks; ``close`` ends it.

    The file holds heap addresses, so it is created with mode 0600 (whatever the umask; an old
    file of ours is set to 0600 too). The path is refused with ``DumpPathRefused`` when it is a
    symbolic link, not a regular file, another user's file (also for root) or a file with more
    than one hard link; ``exclusive=True`` also refuses anything already there.

    Thread-safe. A failed write (disk full, ...) raises ``OSError`` after cutting the file back
    to its last complete chunk, so the file stays readable.
    """

    def __init__(self, path, config: dict | None = None, start_time_us: int | None = None,
                 exclusive: bool = False):
        self.path = os.fspath(path)
        if start_time_us is None:
            start_time_us = time.time_ns() // 1000
        config_json = json.dumps(config or {}, default=str, sort_keys=True).encode("utf-8")
        if len(config_json) > MAX_CONFIG_BYTES:  # never fail the tracker over a description
            note = f"config left out: {len(config_json)} bytes of JSON, over the {MAX_CONFIG_BYTES}-byte limit"
            config_json = json.dumps({"memscope_note": note}).encode("utf-8")
        header_length = _pad32(32 + len(config_json))
        fixed = _FILE_HEADER.pack(MAGIC, FORMAT_VERSION, RECORD_SIZE, header_length,
                                  int(start_time_us), len(config_json))
        crc = zlib.crc32(config_json, zlib.crc32(fixed))
        header = fixed + struct.pack("<I", crc) + config_json
        header += bytes(header_length - len(header))
        self._lock = threading.Lock()
        self._fd = _open_dump_file(self.path, exclusive)
        self._offset = 0
        self.records_written = 0
        # The writer's measured speed, read by the optimizer (a slow disk makes the drainer, which
        # writes, fall behind the rings): wall time inside writev, cumulative, and the last
        # writes as (monotonic end in ns, wall ns, bytes), for the longest write of an interval.
        self.write_ns = 0
        self.recent_writes = collections.deque(maxlen=256)
        self._defined = set()  # ids with an entry in the file: a later entry redefines (kind 3)
        try:
            self._append([header])
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far."""
        return self._offset

    def _append(self, buffers):
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"dump {self.path} is closed")
            start = self._offset
            views = [memoryview(b).cast("B") for b in buffers]
            total = sum(len(v) for v in views)
            began = time.monotonic_ns()
            try:
                while views:
                    done = os.writev(self._fd, views)
                    while views and done >= len(views[0]):
                        done -= len(views[0])
                        views.pop(0)
                    if views and done:
                        views[0] = views[0][done:]
            except OSError:
                try:  # leave no torn chunk behind a later good one
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                except OSError:
                    pass
                raise
            finally:
                ended = time.monotonic_ns()
                self.write_ns += ended - began
                self.recent_writes.append((ended, ended - began, total))
            self._offset = start + total

    @staticmethod
    def _chunk(kind: int, base_us: int, count: int, payload) -> bytes:
        fixed = _CHUNK_HEADER.pack(CHUNK_MAGIC, kind, 0, base_us, count, len(payload), zlib.crc32(payload))
        return fixed + struct.pack("<I", zlib.crc32(fixed))

    def write_chunk(self, base_us: int, records: np.ndarray) -> None:
        """Appends a batch of records (an array of ``RECORD_DTYPE``) whose time deltas count from
        ``base_us`` (microseconds since the Unix epoch). An empty batch writes nothing."""
        records = np.asarray(records)
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"records must have memscope_otel.records.RECORD_DTYPE, not {records.dtype}")
        base_us = int(base_us)
        if not 0 <= base_us < 2**64:
            raise ValueError(f"base_us={base_us} is outside 0 .. 2**64-1")
        records = np.ascontiguousarray(records).reshape(-1)
        for start in range(0, len(records), MAX_CHUNK_RECORDS):
            part = records[start:start + MAX_CHUNK_RECORDS]
            payload = part.view(np.uint8)
            self._append([self._chunk(KIND_RECORDS, base_us, len(part), payload), payload])
            self.records_written += len(part)

    def write_strings(self, entries: dict) -> None:
        """Appends string tables: ``{id: "file:function:line" or type name}``, in force for the
        records chunks written after them. Ids with an entry in the file already are redefined
        (a table of kind 3)."""
        entries = sorted((int(k), str(v)) for k, v in dict(entries).items())
        for key, _ in entries:
            if not 0 <= key < 2**32:
                raise ValueError(f"string id {key} is outside 0 .. 2**32-1")
        with self._lock:
            defined = self._defined
            new = [(k, t) for k, t in entries if k not in defined]
            again = [(k, t) for k, t in entries if k in defined]
        self._write_table(KIND_STRINGS, new)
        self._write_table(KIND_REDEFINE, again)

    def _write_table(self, kind, entries):
        parts, keys, size = [], [], 0
        for key, text in entries:
            data = _cut(text.encode("utf-8", "replace"))
            entry = _STRING_ENTRY.pack(key, len(data)) + data
            if size + len(entry) > MAX_STRINGS_PAYLOAD and parts:
                self._write_string_chunk(kind, parts, keys, size)
                parts, keys, size = [], [], 0
            parts.append(entry)
            keys.append(key)
            size += len(entry)
        if parts:
            self._write_string_chunk(kind, parts, keys, size)

    def _write_string_chunk(self, kind, parts, keys, size):
        payload = b"".join(parts) + bytes(_pad32(size) - size)
        self._append([self._chunk(kind, 0, len(parts), payload), payload])
        with self._lock:
            self._defined.update(keys)

    def unlinked(self) -> bool:
        """True once the file has no name left (deleted while written): its space would only
        come back when it is closed."""
        with self._lock:
            return self._fd >= 0 and os.fstat(self._fd).st_nlink == 0

    def flush(self) -> None:
        """Asks the kernel to write the file to disk. Chunks already survive the process being
        killed once written; this also makes them survive a machine crash."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        """Flushes and closes the file; closing twice is harmless."""
        with self._lock:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------ reader


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One records chunk: where it is, its base time, and its records (a view of the mapping)."""

    offset: int
    base_us: int
    records: np.ndarray

    def times_us(self) -> np.ndarray:
        """Absolute time of each record, microseconds since the Unix epoch."""
        return np.uint64(self.base_us) + self.records["time_delta_us"].astype(np.uint64)


class Dump:
    """An open dump file (see ``open_dump``)."""

    def __init__(self, path, data: np.ndarray, header: dict, chunks: list, strings: dict, truncated,
                 history: dict | None = None, redefinitions: dict | None = None):
        self.path = path
        self._data = data
        self.format_version = header["format_version"]
        self.start_time_us = header["start_time_us"]
        self.config = header["config"]
        self.header_length = header["header_length"]
        self.chunks: list[Chunk] = chunks
        self.strings: dict[int, str] = strings  # the latest entry of each id
        self.truncated: DumpFormatError | None = truncated
        # id -> [(index of the first records chunk it applies to, text), ...], for the ids with
        # more than one meaning over the file only
        self._history: dict[int, list] = history or {}
        # records chunk index -> {id: its text from that chunk on}: where ids change meaning
        self.redefinitions: dict[int, dict[int, str]] = redefinitions or {}

    @property
    def n_records(self) -> int:
        return sum(len(c.records) for c in self.chunks)

    @property
    def slots(self) -> np.ndarray:
        """The whole file after its header as one zero-copy array of 32-byte slots
        (``RECORD_DTYPE``): records, chunk headers and string payloads alike; ``record_mask``
        says which slots are records."""
        end = self.header_length + (len(self._data) - self.header_length) // RECORD_SIZE * RECORD_SIZE
        return self._data[self.header_length:end].view(RECORD_DTYPE)

    @property
    def record_mask(self) -> np.ndarray:
        """Boolean mask over ``slots``: True where the slot is a record."""
        mask = np.zeros(len(self.slots), dtype=bool)
        for c in self.chunks:
            first = (c.offset + 32 - self.header_length) // RECORD_SIZE
            mask[first:first + len(c.records)] = True
        return mask

    @property
    def records(self) -> np.ndarray:
        """Every record in file order: a zero-copy view when the file has one records chunk,
        else one concatenated copy (iterate ``chunks`` to stay zero-copy on big files)."""
        if len(self.chunks) == 1:
            return self.chunks[0].records
        if not self.chunks:
            return np.zeros(0, dtype=RECORD_DTYPE)
        return np.concatenate([c.records for c in self.chunks])

    def times_us(self) -> np.ndarray:
        """Absolute time of every record of ``records``, microseconds since the Unix epoch."""
        if not self.chunks:
            return np.zeros(0, dtype=np.uint64)
        return np.concatenate([c.times_us() for c in self.chunks])

    def label(self, site: int, chunk: int | None = None) -> str:
        """The site of an id (its text's first line: ``file:function:line``, or a type's name) in
        the records chunk ``chunks[chunk]`` (default: its latest text), or ``id <n>`` when the
        table lacks it."""
        return self.text(site, chunk).split("\n", 1)[0]

    def stack(self, site: int, chunk: int | None = None) -> list[str]:
        """The frames of the stack an id names, innermost first (``file:function:line`` each), in
        the records chunk ``chunks[chunk]``: the site alone for a one-frame stack, a type and any
        id of a format 2 file."""
        lines = self.text(site, chunk).split("\n")
        return lines[1:] or lines[:1]

    def text(self, site: int, chunk: int | None = None) -> str:
        """The string table's whole text for an id in the records chunk ``chunks[chunk]``
        (default: its latest text), or ``id <n>`` when the table lacks it."""
        site = int(site)
        history = self._history.get(site)
        if history is None or chunk is None:
            return self.strings.get(site, f"id {site}")
        text = history[0][1]
        for first, later in history[1:]:
            if first > chunk:
                break
            text = later
        return text

    def close(self) -> None:
        """Drops this object's references to the mapping (views handed out keep it alive)."""
        self.chunks = []
        self._data = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parse_header(data: np.ndarray, path):
    size = len(data)
    if size < 32:
        raise DumpFormatError(size, f"file is {size} bytes, shorter than the 32-byte dump header", path)
    fixed = data[:28].tobytes()
    magic, version, record_size, header_length, start_us, config_length = _FILE_HEADER.unpack(fixed)
    if magic != MAGIC:
        raise DumpFormatError(0, f"not a memscope dump (magic {magic!r}, expected {MAGIC!r})", path)
    if version not in READABLE_VERSIONS:
        raise DumpFormatError(8, f"format version {version}; this reader reads versions "
                                 f"{', '.join(map(str, READABLE_VERSIONS))} (memscope-otel of the version "
                                 f"that wrote the file reads it)", path)
    if record_size != RECORD_SIZE:
        raise DumpFormatError(10, f"record size {record_size}; expected {RECORD_SIZE}", path)
    if header_length % 32 or header_length < 32 or header_length > 32 + MAX_CONFIG_BYTES + 32:
        raise DumpFormatError(12, f"header length {header_length} is not a multiple of 32 in 32 .. {MAX_CONFIG_BYTES + 64}", path)
    if config_length > header_length - 32:
        raise DumpFormatError(24, f"config length {config_length} does not fit the {header_length}-byte header", path)
    if header_length > size:
        raise DumpFormatError(size, f"file ends inside its {header_length}-byte header (truncated)", path)
    config_bytes = data[32:32 + config_length].tobytes()
    (crc,) = struct.unpack("<I", data[28:32].tobytes())
    if zlib.crc32(config_bytes, zlib.crc32(fixed)) != crc:
        raise DumpFormatError(28, "header checksum mismatch (corrupt header)", path)
    try:
        config = json.loads(config_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DumpFormatError(32, f"config is not valid UTF-8 JSON ({exc.__class__.__name__})", path) from None
    if not isinstance(config, dict):
        raise DumpFormatError(32, "config JSON is not an object", path)
    return {"format_version": version, "start_time_us": start_us, "config": config,
            "header_length": header_length}


class _Tables:
    """The string tables read so far, positionally: what each id stands for from which records
    chunk on."""

    def __init__(self):
        self.strings = {}
        self.history = {}
        self.redefinitions = {}

    def define(self, key, text, chunk):
        """``key`` stands for ``text`` from records chunk index ``chunk`` on."""
        previous = self.strings.get(key)
        self.strings[key] = text
        if previous is None or previous == text:
            return
        history = self.history.setdefault(key, [(0, previous)])
        if history[-1][0] == chunk:  # redefined before any chunk used the previous text
            history[-1] = (chunk, text)
            if chunk in self.redefinitions and key in self.redefinitions[chunk]:
                self.redefinitions[chunk][key] = text
        else:
            history.append((chunk, text))
            self.redefinitions.setdefault(chunk, {})[key] = text


def _parse_strings(payload: bytes, count: int, offset: int, tables: _Tables, chunk: int, path):
    pos = 0
    for _ in range(count):
        if pos + 8 > len(payload):
            raise DumpFormatError(offset + pos, "string table entry runs past its chunk", path)
        key, length = _STRING_ENTRY.unpack_from(payload, pos)
        pos += 8
        if length > len(payload) - pos:
            raise DumpFormatError(offset + pos - 4, f"string of {length} bytes runs past its chunk", path)
        try:
            tables.define(key, payload[pos:pos + length].decode("utf-8"), chunk)
        except UnicodeDecodeError:
            raise DumpFormatError(offset + pos, "string is not valid UTF-8", path) from None
        pos += length


def open_dump(path, verify: bool = True, strict: bool = False) -> Dump:
    """Opens a dump file for reading, mapping it with ``numpy.memmap`` (no copy of the records).

    A torn last chunk (what a killed writer leaves) is skipped with a ``RuntimeWarning`` and
    described by ``Dump.truncated``; with ``strict=True`` it raises instead. Anything else wrong
    raises ``DumpFormatError``. ``verify=False`` skips the payload checksums (faster on huge
    files; headers are still checked).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise FileNotFoundError(exc.errno, f"cannot open memscope dump: {exc.strerror}", path) from None
    if size == 0:
        raise DumpFormatError(0, "file is empty", path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    header = _parse_header(data, path)
    chunks, tables, truncated = [], _Tables(), None
    offset = header["header_length"]
    while offset < size:
        if size - offset < 32:
            truncated = DumpFormatError(offset, f"file ends {size - offset} bytes into a chunk header", path)
            break
        fixed = data[offset:offset + 28].tobytes()
        magic, kind, _reserved, base_us, count, length, payload_crc = _CHUNK_HEADER.unpack(fixed)
        (header_crc,) = struct.unpack("<I", data[offset + 28:offset + 32].tobytes())
        if magic != CHUNK_MAGIC:
            raise DumpFormatError(offset, f"chunk magic {magic!r}, expected {CHUNK_MAGIC!r}", path)
        if zlib.crc32(fixed) != header_crc:
            raise DumpFormatError(offset, "chunk header checksum mismatch (corrupt chunk header)", path)
        start = offset + 32
        if length % 32:
            raise DumpFormatError(offset + 20, f"chunk payload length {length} is not a multiple of 32", path)
        if length > size - start:
            truncated = DumpFormatError(offset, f"chunk of {length} bytes is cut off by the end of the file "
                                                f"({size - start} bytes left): a torn last chunk", path)
            break
        payload = data[start:start + length]
        if verify and zlib.crc32(payload) != payload_crc:
            raise DumpFormatError(start, "chunk payload checksum mismatch (corrupt records or strings)", path)
        if kind == KIND_RECORDS:
            if length != count * RECORD_SIZE:
                raise DumpFormatError(offset + 16, f"records chunk says {count} records but holds {length} bytes", path)
            chunks.append(Chunk(offset, base_us, payload.view(RECORD_DTYPE)))
        elif kind in (KIND_STRINGS, KIND_REDEFINE):
            _parse_strings(payload.tobytes(), count, start, tables, len(chunks), path)
        else:
            raise DumpFormatError(offset + 4, f"unknown chunk kind {kind} (1 records, 2 and 3 strings)", path)
        offset = start + length
    if truncated is not None:
        if strict:
            raise truncated
        warnings.warn(f"{truncated}; reading the {len(chunks)} complete chunks before it", RuntimeWarning,
                      stacklevel=2)
    return Dump(path, data, header, chunks, tables.strings, truncated, tables.history, tables.redefinitions)
