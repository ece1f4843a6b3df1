"""Site ids -> (file, qualified function, line), resolved lazily with the GIL, outside any hook.

The C side only records (code object, bytecode offset, domain); turning that into a line number
and a qualified name runs Python, so it happens here, once per id, when metrics are produced.
"""
import dis
import gc
import sys
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


def _qualname_from_parent(code):
    """3.10 has no co_qualname: find the code object that builds a function from ``code`` and
    read the qualified-name constant it passes to MAKE_FUNCTION (``f.<locals>.<listcomp>``)."""
    for holder in gc.get_referrers(code):
        if not isinstance(holder, tuple):
            continue
        for parent in gc.get_referrers(holder):
            if not hasattr(parent, "co_consts") or parent.co_consts is not holder:
                continue
            previous = None
            for ins in dis.get_instructions(parent):
                if ins.opname == "LOAD_CONST" and previous is not None and previous.argval is code:
                    if isinstance(ins.argval, str):
                        return ins.argval
                previous = ins if ins.opname == "LOAD_CONST" else None
    # A function object alive somewhere still knows it.
    for holder in gc.get_referrers(code):
        if getattr(holder, "__code__", None) is code:
            return holder.__qualname__
    return None


def qualname_of(code):
    qualname = getattr(code, "co_qualname", None)
    if qualname is None and sys.version_info < (3, 11):
        qualname = _qualname_from_parent(code) if code.co_name != "<module>" else "<module>"
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
