"""Site ids -> (file, qualified function, line), resolved lazily with the GIL, outside any hook.

The C side only records (code object, bytecode offset, domain); turning that into a line number
and a qualified name runs Python, so it happens here, once per id, when metrics are produced.
"""
import dis
import gc
import sys
import weakref
from dataclasses import dataclass

from . import sampler
from .records import DOMAINS

MS_ID_NATIVE, MS_ID_OVERFLOW, MS_FIRST_DYNAMIC_ID = 0, 4, 8


@dataclass(frozen=True)
class Site:
    file: str
    function: str
    line: int
    domain: str

    def label(self):
        return f"{self.file}:{self.function}:{self.line}"


@dataclass(frozen=True)
class TypeName:
    name: str


def line_of(code, offset):
    """The source line of the instruction at byte offset ``offset`` of ``code``."""
    line = None
    for start, end, lineno in code.co_lines():
        if start <= offset < end:
            line = lineno
            break
    if line is None:
        line = code.co_firstlineno
    return line


class _QualnameIndex:
    """3.10 has no co_qualname. Functions know their ``__qualname__``; a nested code object
    (comprehension, lambda, inner function) gets its own from the constant that its parent's
    bytecode passes to MAKE_FUNCTION. Code objects are not tracked by the garbage collector, so
    the index starts from the function objects alive and from the frames running now, and walks
    down through ``co_consts``. Rebuilt at most every ``min_interval`` seconds, on a miss, and
    only code objects not walked before are read (a rebuild runs inside a metric collection:
    reading the bytecode of every function again took 250 ms there, with numpy and the
    OpenTelemetry SDK imported)."""

    def __init__(self, min_interval=10.0):
        self._names = {}
        self._missing = set()  # not found by a rebuild: never worth another (it costs a heap walk)
        self._walked = weakref.WeakSet()  # code objects whose nested code is in _names already
        self._built_at = None
        self._min_interval = min_interval

    def lookup(self, code):
        name = self._names.get(code)
        if name is None and code not in self._missing and self._may_rebuild():
            self._rebuild()
            name = self._names.get(code)
            if name is None:
                self._missing.add(code)
        return name

    def _may_rebuild(self):
        import time

        now = time.monotonic()
        if self._built_at is not None and now - self._built_at < self._min_interval:
            return False
        self._built_at = now
        return True

    def _rebuild(self):
        import types

        roots = [(obj.__code__, obj.__qualname__) for obj in gc.get_objects() if isinstance(obj, types.FunctionType)]
        for frame in sys._current_frames().values():
            while frame is not None:
                if frame.f_code.co_name == "<module>":
                    roots.append((frame.f_code, None))
                frame = frame.f_back
        while roots:
            code, qualname = roots.pop()
            if qualname is not None:
                self._names.setdefault(code, qualname)
            if code in self._walked:
                continue
            self._walked.add(code)
            if any(isinstance(c, types.CodeType) for c in code.co_consts):
                roots.extend(_nested_code(code))


def _nested_code(code):
    """(nested code object, its qualified name) pairs of 3.10 bytecode: a LOAD_CONST of a code
    object followed by a LOAD_CONST of a string (then MAKE_FUNCTION). Read from the wordcode
    directly (two bytes an instruction, EXTENDED_ARG prefixes): dis.get_instructions builds an
    object per instruction and is about ten times slower."""
    import types

    raw, consts, pairs = code.co_code, code.co_consts, []
    previous, extended = None, 0
    for i in range(0, len(raw), 2):
        op, arg = raw[i], raw[i + 1] | extended
        if op == _EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        if op == _LOAD_CONST:
            value = consts[arg]
            if isinstance(previous, types.CodeType) and isinstance(value, str):
                pairs.append((previous, value))
            previous = value
        else:
            previous = None
    return pairs


_LOAD_CONST, _EXTENDED_ARG = dis.opmap["LOAD_CONST"], dis.EXTENDED_ARG


_qualnames_310 = _QualnameIndex()


def qualname_of(code):
    qualname = getattr(code, "co_qualname", None)
    if qualname is None and code.co_name != "<module>":
        qualname = _qualnames_310.lookup(code)
    return qualname or code.co_name


class SiteResolver:
    """Caches what each id stands for: a :class:`Site` or, for the manual domain, a
    :class:`TypeName`."""

    def __init__(self):
        self._cache = {}
        self._type_names = {}  # key -> name, filled by the manual API

    def register_type(self, name):
        type_id = sampler.type_id(name)
        self._type_names[sampler.type_key(name)] = name
        return type_id

    def resolve(self, site_id):
        found = self._cache.get(site_id)
        if found is not None:
            return found
        found = self._resolve(site_id)
        self._cache[site_id] = found
        return found

    def _resolve(self, site_id):
        info = sampler.site_info(site_id)
        if info is None:
            return Site("<unknown>", "<unknown>", 0, "obj")
        code, offset, domain_index, key = info
        domain = DOMAINS[domain_index]
        if domain == "manual" and site_id >= MS_FIRST_DYNAMIC_ID:
            return TypeName(self._type_names.get(key, f"<type {key:016x}>"))
        if site_id < MS_ID_OVERFLOW:
            return TypeName("<unknown>") if domain == "manual" else Site("<native>", "<native>", 0, domain)
        if site_id < MS_FIRST_DYNAMIC_ID:
            return TypeName("<overflow>") if domain == "manual" else Site("<overflow>", "<overflow>", 0, domain)
        return Site(code.co_filename, qualname_of(code), line_of(code, offset), domain)

    def labels(self, ids):
        """{id: 'file:function:line' or type name} for the dump's string tables."""
        out = {}
        for i in ids:
            r = self.resolve(int(i))
            out[int(i)] = r.label() if isinstance(r, Site) else r.name
        return out
