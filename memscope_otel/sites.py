"""Stack ids -> stacks of (file, qualified function, line) and the site each one is counted under,
resolved with the GIL, outside any hook; and the reuse of the ids whose code object has died.

A record's id names a stack: the C side interns it as a chain of nodes, one per frame, each
(code object, bytecode offset, domain, the id of its caller's node), from the outermost frame in
(csrc/memscope.h). Each node resolves to a :class:`Frame`; a stack is the chain from a leaf (the
innermost frame, which carries the allocation's domain) out through its callers. Metrics keep one
frame per series, the :class:`Site` of the stack: its innermost frame, or with
``SITE_FRAME=application`` its innermost frame outside the standard library and site-packages
(the innermost when there is none); summing per-stack sums by site gives exactly the per-site
sums. Each node costs about 200 bytes here (a Frame and the chain cell that shares the callers'
cells with every stack through them).

The C side only records (code object, bytecode offset, domain), holding a strong reference to
the code object from the hook that interned the site until Python has resolved it: turning an
offset into a line number and a qualified name runs Python, so it happens here, after each drain
(``SiteResolver.after_drain``, on the drainer's thread) or on demand. The code object is then
watched through a weak reference instead, and the C table holds no reference any more: code
that a program generates and drops (``exec`` in template engines, ORMs, dataclasses) is freed.
When a node's code dies, the nodes under it (stacks through that frame) leave the lookup table
with it; they are reclaimed like the others (``ms_sites_take_forgotten``). A stack's frames are
kept with its leaf from resolution on, so reusing a caller's id changes no stack in flight.

When a watched code object dies, the weak reference's callback (run with the GIL, before the
object's memory is freed) removes its keys from the C lookup table at once, so that a new code
object at the same address never gets the dead one's id. The id is reused only once nothing can
carry it any more:

1. records in the rings or in a drain buffer: a complete drain that started after the death
   has reduced (and handed to the dump writer) every record made while the code was alive;
2. blocks in the live table: a live sampled block allocated by the dead code carries the id, and
   so will the record of its free. After that drain the live table is scanned; an id that a
   live block still carries waits (and is scanned again after each drain);
3. the record of a free whose thread had taken the block out of the live table but not yet
   written the record when the table was scanned (a RAW free runs without the GIL): one more
   complete drain after the scan.

Then the id's cumulative sums move into the summary's per-site accumulator under the site it
was resolved to (``Summary.retire``), its per-id sums are zeroed, and the C side may hand it out
again. So an id is reused two complete drains after its code died at the earliest, and per-site
sums, snapshots and exported series are the same as if it had never been reused. (An id read
from records long after their drain, as the workload recognizer does, may by then name a later
site: a few records' features, not a sum.)
"""
import collections
import ctypes
import dis
import gc
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import sampler
from .records import DOMAINS

MS_ID_NATIVE, MS_ID_OVERFLOW, MS_ID_STACK_OVERFLOW, MS_FIRST_DYNAMIC_ID = 0, 8, 15, 16  # csrc/memscope.h
MS_FRAME_DOMAIN = 7  # the domain of a node that is a caller's frame (csrc/memscope.h)
MAX_IDS = 32768  # MS_MAX_IDS in csrc/memscope.h


class Site(NamedTuple):
    """An allocation site, the key of per-site sums: (file, qualified function, line, domain).
    A tuple (hashed and compared in C): the drainer makes and hashes one for every new site and
    every reclaimed id, and a program that makes code as fast as it can keeps its ids only while
    the drainer keeps up with it."""

    file: str
    function: str
    line: int
    domain: str

    def label(self):
        return f"{self.file}:{self.function}:{self.line}"


@dataclass(frozen=True, slots=True)
class TypeName:
    name: str


class Frame:
    """One frame of a stack. Shared by every stack through it; on 3.10 its function is renamed in
    place once the qualified name is found (``provisional`` until then)."""

    __slots__ = ("file", "function", "line", "provisional")

    def __init__(self, file, function, line, provisional=False):
        self.file, self.function, self.line, self.provisional = file, function, line, provisional

    def label(self):
        return f"{self.file}:{self.function}:{self.line}"

    def key(self):
        return self.file, self.function, self.line

    def __repr__(self):
        return f"Frame({self.label()!r})"


OVERFLOW = "<overflow>"
_OVERFLOW_CHAIN = (Frame(OVERFLOW, OVERFLOW, 0), None)  # the caller of a stack cut for want of ids
_UNKNOWN_CHAIN = (Frame("<unknown>", "<unknown>", 0), None)


def chain_frames(chain):
    """The frames of a chain (nested ``(frame, callers)`` pairs), innermost first."""
    frames = []
    while chain is not None:
        frames.append(chain[0])
        chain = chain[1]
    return tuple(frames)


_library_dirs = None


def _library_roots():
    import sysconfig

    global _library_dirs
    if _library_dirs is None:
        roots = set()
        for name in ("stdlib", "platstdlib", "purelib", "platlib"):
            try:
                roots.add(os.path.realpath(sysconfig.get_paths()[name]))
            except (KeyError, OSError):
                pass
        _library_dirs = tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))
    return _library_dirs


_is_library_cache = {}


def is_library_file(path):
    """Whether ``path`` is the standard library's or an installed package's (site-packages,
    dist-packages), or frozen or built-in code: what ``SITE_FRAME=application`` looks past."""
    known = _is_library_cache.get(path)
    if known is not None:
        return known
    if path.startswith("<"):  # <frozen importlib._bootstrap>, <string>: not a file of the application
        found = path.startswith("<frozen ")
    else:
        parts = path.replace("\\", "/").split("/")
        found = "site-packages" in parts or "dist-packages" in parts
        if not found:
            try:
                real = os.path.realpath(path)
            except (OSError, ValueError):
                real = path
            found = any(real.startswith(root) for root in _library_roots())
    if len(_is_library_cache) < 100000:
        _is_library_cache[path] = found
    return found


def site_frame_of(frames, mode):
    """The frame that names a stack's site: the innermost, or for ``application`` the innermost
    outside the libraries (the innermost when every frame is a library's)."""
    if mode == "application":
        for frame in frames:
            if not is_library_file(frame.file):
                return frame
    return frames[0]


# The sums of reclaimed sites beyond the ones a summary keeps by name (summary.RETIRED_SITES),
# one per domain.
RECLAIMED = "<reclaimed>"


def reclaimed_site(domain):
    return Site(RECLAIMED, RECLAIMED, 0, domain)


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
    down through ``co_consts``. A lookup never walks: a miss is remembered and answered None (the
    site shows its ``co_name`` meanwhile), and :meth:`rebuild_wanted`, called off the collection
    path (the drainer's thread, SiteResolver.refine_names), walks at most every ``min_interval``
    seconds, reading only code objects not walked before (a walk of the heap takes 19-39 ms with
    numpy and the OpenTelemetry SDK imported: inside a collection the optimizer read it as
    collection cost)."""

    def __init__(self, min_interval=10.0):
        # Weak: the index must not keep code objects alive (the ids of dead code are reused).
        self._names = weakref.WeakKeyDictionary()
        self._missing = weakref.WeakSet()  # not found by a rebuild: never worth another (a heap walk)
        self._walked = weakref.WeakSet()  # code objects whose nested code is in _names already
        self._wanted = weakref.WeakSet()  # missed by a lookup since the last walk
        self._built_at = None
        self._min_interval = min_interval

    def lookup(self, code):
        """The qualified name of ``code`` if known, else None (a walk is then wanted)."""
        return self.find(code)[0]

    def find(self, code, want=True):
        """(the qualified name of ``code`` or None, whether a walk is now wanted for it; never
        unless ``want``)."""
        name = self._names.get(code)
        if name is None and want and code not in self._missing:
            self._wanted.add(code)
            return None, True
        return name, False

    def rebuild_wanted(self, now=False):
        """Walks the heap if a lookup missed since the last walk, at most every ``min_interval``
        seconds unless ``now``; the code objects still unnamed after it are never looked for
        again. Returns whether it walked."""
        if not self._wanted or not (now or self._may_rebuild()):
            return False
        self._built_at = time.monotonic()
        self._rebuild()
        for code in list(self._wanted):
            if code not in self._names:
                self._missing.add(code)
        self._wanted = weakref.WeakSet()
        return True

    def _may_rebuild(self):
        return self._built_at is None or time.monotonic() - self._built_at >= self._min_interval

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


class _CodeRef(weakref.ref):
    """A weak reference to a code object, with the ids of its sites and its address."""

    __slots__ = ("ids", "address")


def _refcounts(objects):
    return [sys.getrefcount(o) for o in objects]


# What _refcounts gives for an object that nothing but its list holds (the loop and the call
# hold a few more references, a number that depends on the interpreter).
_ONLY_IN_A_LIST = _refcounts([object()])[0]

_py_decref = ctypes.pythonapi.Py_DecRef
_py_decref.argtypes = [ctypes.py_object]
_py_decref.restype = None

_TAKE_BATCH = 1024


class SiteResolver:
    """What each id stands for now (a :class:`Site` or, for the manual domain, a
    :class:`TypeName`), and the reuse of site ids whose code object died (see the module's
    docstring). Process-wide, like the C table."""

    def __init__(self):
        ffi, lib = sampler._lib()
        self._ffi = ffi
        # Bound now: the weakref callbacks may run at interpreter exit.
        self._forget = sampler.keeping_the_gil(ffi, lib, "ms_site_forget", ctypes.c_int, ctypes.c_uint32)
        self._take = sampler.keeping_the_gil(ffi, lib, "ms_sites_take_held", ctypes.c_uint32, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_uint32)
        self._reclaim = sampler.keeping_the_gil(ffi, lib, "ms_sites_reclaim", ctypes.c_uint32, ctypes.c_void_p,
                                         ctypes.c_uint32, ctypes.c_void_p)
        self._take_forgotten = sampler.keeping_the_gil(ffi, lib, "ms_sites_take_forgotten", ctypes.c_uint32,
                                                ctypes.c_void_p, ctypes.c_uint32)
        self._cache = {}  # id -> Site / TypeName, for the ids in use (stack leaves: their site)
        self._chains = {}  # node id -> (Frame, its caller's chain), for the stack nodes in use
        self._leaves = {}  # leaf id -> its domain's name, for the stacks in use
        self._ref_of = {}  # node id -> the _CodeRef whose ids hold it
        self.site_frame = "innermost"  # SITE_FRAME (set_site_frame)
        self._type_names = {}  # key -> name, filled by the manual API
        # Serializes resolution and reclamation (re-entrant: a signal handler may take a snapshot
        # on a thread that is inside after_drain). The weakref callbacks never take it.
        self._lock = threading.RLock()
        self._watched = {}  # address of a watched code object -> its _CodeRef
        self._pinned = []  # code objects that could not be watched: kept alive, never reclaimed
        self._generation = {}  # id -> times it was reclaimed (a dump file redefines it each time)
        self._provisional = {}  # id -> _CodeRef of a 3.10 site named by co_name until the index knows it
        self._dead = collections.deque()  # (id, drains started before its code died)
        # How many of _dead are not yet known to be carried by a live block (a hint, counted
        # without the lock by the threads that record deaths).
        self._new_deaths = 0
        self._quiet = []  # (id, drain after which no live block carried it)
        self._drains = 0  # drains started
        self._held = np.frombuffer(ffi.buffer(lib.ms_sites_held_count(), 4), dtype=np.uint32)
        self._code_list = sampler.keeping_the_gil(ffi, lib, "ms_sites_code_list", ctypes.py_object, ctypes.c_void_p,
                                           ctypes.c_uint32)
        self._take_ids = np.zeros(_TAKE_BATCH, dtype=np.uint32)
        self._forgotten_ids = np.zeros(_TAKE_BATCH, dtype=np.uint32)
        self._take_sites = ffi.new("ms_site_t[]", _TAKE_BATCH)
        # The taken sites as numpy columns: a batch is read with one tolist() a field, not five
        # cffi attribute reads a site.
        fields = ("code", "offset", "domain", "key", "dead")
        self._taken = np.frombuffer(ffi.buffer(self._take_sites), dtype=np.dtype({
            "names": fields, "formats": [np.uintp, np.int32, np.int32, np.uint64, np.uint32],
            "offsets": [ffi.offsetof("ms_site_t", f) for f in fields], "itemsize": ffi.sizeof("ms_site_t")}))
        self._take_args = (self._take_ids.ctypes.data, self._address(self._take_sites))
        self._in_use = np.zeros(MAX_IDS, dtype=np.uint8)
        self.reclaimed = 0  # ids reclaimed so far
        _resolvers.add(self)

    def _address(self, cdata):
        return int(self._ffi.cast("uintptr_t", cdata))

    def after_fork_child(self):
        """A thread of the parent may have held the lock when it forked (see _after_fork_in_child)."""
        self._lock = threading.RLock()

    def register_type(self, name):
        type_id = sampler.type_id(name)
        self._type_names[sampler.type_key(name)] = name
        return type_id

    def set_site_frame(self, mode):
        """SITE_FRAME: which frame of a stack names its site (``innermost`` or ``application``)."""
        with self._lock:
            if mode == self.site_frame:
                return
            self.site_frame = mode
            for leaf in self._leaves:
                self._cache[leaf] = self._site_of(leaf)

    def _site_of(self, leaf):
        chain = self._chains[leaf]
        frame = chain[0] if self.site_frame == "innermost" else site_frame_of(chain_frames(chain), self.site_frame)
        return Site(frame.file, frame.function, frame.line, self._leaves[leaf])

    def stack(self, site_id):
        """The frames of the stack an id names, innermost first (a :class:`Frame` tuple); a type
        or a fixed id gives one frame named like its site."""
        chain = self._chains.get(site_id)
        if chain is None or site_id not in self._leaves:
            found = self.resolve(site_id)
            chain = self._chains.get(site_id)
            if chain is None or site_id not in self._leaves:
                name = found.label() if isinstance(found, Site) else found.name
                if isinstance(found, Site):
                    return (Frame(found.file, found.function, found.line),)
                return (Frame(name, name, 0),)
        return chain_frames(chain)

    def generation(self, site_id):
        """How many times ``site_id`` was reclaimed: its meaning changes with this number."""
        return self._generation.get(site_id, 0)

    def resolve(self, site_id):
        found = self._cache.get(site_id)
        if found is not None:
            return found
        with self._lock:
            found = self._cache.get(site_id)
            if found is None and self._held[0]:
                self._take_held()
                found = self._cache.get(site_id)
            if found is None:
                found, cacheable = self._resolve_other(site_id)
                if cacheable:
                    self._cache[site_id] = found
            return found

    def _resolve_other(self, site_id):
        """Fixed ids, types, and ids not in use (no site: a stale id). (what, cacheable)."""
        info = sampler.site_info(site_id) if site_id < MAX_IDS else None
        if info is None:
            return Site("<unknown>", "<unknown>", 0, "obj"), False
        held, _offset, domain_index, key = info
        if domain_index == MS_FRAME_DOMAIN:  # a caller's frame node (its id was asked for as a site's)
            return Site("<unknown>", "<unknown>", 0, "obj"), False
        domain = DOMAINS[domain_index]
        if site_id >= MS_FIRST_DYNAMIC_ID:
            if domain == "manual":
                return TypeName(self._type_names.get(key, f"<type {key:016x}>")), True
            if held:  # interned since the hint was read: sites are resolved from taken references
                self._take_held()
                found = self._cache.get(site_id)
                if found is not None:
                    return found, False  # (cached by the take)
            return Site("<unknown>", "<unknown>", 0, domain), False
        name = "<native>" if site_id < MS_ID_OVERFLOW else "<overflow>"
        if domain == "manual":
            return TypeName("<unknown>" if site_id < MS_ID_OVERFLOW else name), True
        return Site(name, name, 0, domain), True

    def labels(self, ids):
        """{id: text} for the dump's string tables: a type's name, or a stack's site
        'file:function:line', then, when the stack is more than that one frame, a line per frame,
        innermost first (format 3)."""
        out = {}
        for i in ids:
            i = int(i)
            r = self.resolve(i)
            if not isinstance(r, Site):
                out[i] = r.name
                continue
            frames = [f.label() for f in self.stack(i)]
            out[i] = r.label() if frames == [r.label()] else "\n".join([r.label(), *frames])
        return out

    # -- resolution of new sites, under self._lock --

    def _take_held(self):
        """Resolves every node whose code object the C table holds, and takes the references over.
        A node's caller may come later in a batch (ids are reused out of order), so the chains are
        linked once the whole batch is read."""
        callers = {}
        while True:
            n = self._take(*self._take_args, _TAKE_BATCH)
            if n:
                taken, codes = self._taken[:n], self._codes_taken(n)
                dying = [count <= _ONLY_IN_A_LIST for count in _refcounts(codes)]
                rows = zip(self._take_ids[:n].tolist(), codes, taken["code"].tolist(), taken["offset"].tolist(),
                           taken["domain"].tolist(), taken["key"].tolist(), taken["dead"].tolist(), dying)
                for site_id, code, address, offset, domain, caller, dead, dies in rows:
                    callers[site_id] = self._adopt(site_id, code, address, offset, domain, caller, dead, dies)
            if n < _TAKE_BATCH:
                break
        for site_id in callers:
            self._link(site_id, callers)

    def _link(self, site_id, callers):
        """Sets the chain of a node just adopted (and of its callers adopted with it first)."""
        pending = []
        while site_id in callers and site_id not in self._chains:
            pending.append(site_id)
            site_id = callers[site_id][1]
        for node in reversed(pending):
            frame, caller = callers[node]
            if caller == 0:
                above = None
            elif caller == MS_ID_STACK_OVERFLOW:
                above = _OVERFLOW_CHAIN
            else:
                above = self._chains.get(caller, _UNKNOWN_CHAIN)  # (a caller always outlives its callees)
            self._chains[node] = (frame, above)
            if node in self._leaves:
                self._cache[node] = self._site_of(node)

    def _codes_taken(self, n):
        """The code objects of the first ``n`` sites taken, their references now ours."""
        try:
            return self._code_list(self._take_args[1], n)
        except MemoryError:  # (no list: the references are still ours to take one by one)
            codes = []
            for address in self._taken["code"][:n].tolist():
                codes.append(ctypes.cast(address, ctypes.py_object).value)  # a reference of our own ...
                _py_decref(codes[-1])  # ... so the one the table handed over can go
            return codes

    def _adopt(self, site_id, code, address, offset, domain, caller, dead, dies):
        """Resolves a node's frame, whose code object the table handed over (at ``address``),
        and watches the code: (frame, caller id). ``dies``: nothing but the batch holds the code
        any more (its function is gone already, as generated code's often is by the drain), so
        it is forgotten now rather than watched for a death that comes as the batch ends. Called
        once for each new node, on the drainer's thread, with the GIL: a program that makes code
        as fast as it can keeps its ids only while the drainer keeps up with it, so this stays
        lean (a frame and its site are made once, by _link)."""
        wanted = False
        try:
            qualname = getattr(code, "co_qualname", None)
            if qualname is None and code.co_name != "<module>":  # 3.10
                qualname, wanted = _qualnames_310.find(code, want=not dies)
            frame = Frame(sys.intern(code.co_filename), qualname or code.co_name, line_of(code, offset))
        except Exception:  # a code object we cannot read: still a frame of its own
            frame = Frame("<unknown>", getattr(code, "co_name", "<unknown>"), 0)
        if domain != MS_FRAME_DOMAIN:
            self._leaves[site_id] = DOMAINS[min(domain, len(DOMAINS) - 1)]
        if dead:  # forgotten with a caller before we took it: queued, reclaimed, not watched
            return frame, caller
        if dies:  # (as _code_died would, before the code's memory can be reused)
            if self._forget(site_id) == 0:
                self._dead.append((site_id, self._drains))
                self._new_deaths += 1
            return frame, caller
        ref = self._watched.get(address)
        if ref is None or ref() is not code:
            try:
                ref = _CodeRef(code, self._code_died)
            except TypeError:  # (code objects support weak references; never seen)
                self._pinned.append(code)
                return frame, caller
            ref.ids, ref.address = [], address
            self._watched[address] = ref
        ref.ids.append(site_id)
        self._ref_of[site_id] = ref
        if wanted:
            self._provisional[site_id] = ref
            frame.provisional = True
        return frame, caller

    def refine_names(self, now=False):
        """On 3.10: walks the heap for the qualified names of the sites first named by their
        ``co_name`` and renames them. Called by the drainer's thread after its periodic drains
        (outside the drainer's lock, so no collection waits for the walk); ``now``: walk even
        within the index's minimum interval. Returns the number of sites renamed."""
        if not self._provisional or not _qualnames_310.rebuild_wanted(now):
            return 0
        renamed = []
        with self._lock:
            for site_id, ref in list(self._provisional.items()):
                del self._provisional[site_id]
                code, chain = ref(), self._chains.get(site_id)
                if chain is None:
                    continue
                frame = chain[0]  # (each node has a frame of its own, shared by the stacks through it)
                frame.provisional = False
                if code is None or site_id not in ref.ids:
                    continue  # died (and maybe reclaimed) meanwhile
                name = _qualnames_310.lookup(code)
                if name is not None and name != frame.function:
                    frame.function = name
                    renamed.append(site_id)
            # A site is its stack's innermost frame, or for "application" any of its frames.
            for leaf in (self._leaves if self.site_frame == "application" and renamed else renamed):
                if leaf in self._leaves:
                    self._cache[leaf] = self._site_of(leaf)
        return len(renamed)

    def provisional(self, site_id):
        """Whether a frame of the stack ``site_id`` names is named by its ``co_name`` until a walk
        finds its qualified name (3.10): a dump file waits for the final label (see
        Tracker._write_dump)."""
        chain = self._chains.get(site_id)
        while chain is not None:
            if chain[0].provisional:
                return True
            chain = chain[1]
        return False

    def _code_died(self, ref):
        """The weakref callback: the code object is being freed, its memory not yet. Takes no lock
        and allocates next to nothing, on whatever thread dropped the code (the callback's own
        allocations are therefore counted as that thread's, by design: marking the thread as the
        tracker's own would cost two more calls into C per code object)."""
        try:
            if self._watched.get(ref.address) is ref:
                del self._watched[ref.address]
            for site_id in ref.ids:
                if self._forget(site_id) == 0:
                    self._dead.append((site_id, self._drains))
                    self._new_deaths += 1
        except Exception:  # at interpreter exit, say: the ids just stay taken
            pass

    # -- reclamation, around every complete drain (Drainer.sites) --

    def before_drain(self):
        self._drains += 1

    def short_of_ids(self):
        """Whether a quarter of the ids are taken and a batch of them waits for a drain to be
        adopted or reclaimed. An id of dead code is reused two complete drains after its code
        died, and a program that makes code as fast as it can (templates, generated handlers)
        makes ids faster than drains the full interval apart reclaim them: the table runs out,
        and new sites share <overflow>. Back-to-back drains then keep the ids flowing; they cost
        what the new sites cost, and end once the program stops making code (code that dies now
        and then, or dead code whose blocks live on, never calls for them)."""
        return (len(self._chains) + int(self._held[0]) > MAX_IDS // 4 and
                int(self._held[0]) + len(self._quiet) + self._new_deaths >= _TAKE_BATCH // 2)

    def after_drain(self, summary):
        """After a complete drain (under the drainer's lock): resolves the new sites, reclaims
        the ids that nothing can carry any more, and scans the live table for the ids whose code
        died before this drain began."""
        with self._lock:
            # Nodes forgotten with a caller's node: dead since before this drain ended at the
            # latest, so counted as of it (a drain later than need be, never earlier). Taken before
            # the held ones, so that each of them is DEAD (not HELD_DEAD) by the time it is reclaimed.
            while True:
                n = self._take_forgotten(self._forgotten_ids.ctypes.data, _TAKE_BATCH)
                self._dead.extend((int(i), self._drains) for i in self._forgotten_ids[:n])
                if n < _TAKE_BATCH:
                    break
            if self._held[0]:
                self._take_held()
            drain = self._drains
            # Scanned after an earlier drain, and this one (started after that scan) is complete.
            ready = [i for i, scanned in self._quiet if scanned < drain]
            self._quiet = [(i, scanned) for i, scanned in self._quiet if scanned >= drain]
            candidates = []
            self._new_deaths = 0
            for _ in range(len(self._dead)):
                site_id, died = self._dead.popleft()
                if died < drain:  # died before this drain began: its records are all reduced
                    candidates.append((site_id, died))
                else:
                    self._dead.append((site_id, died))
                    self._new_deaths += 1
            if not ready and not candidates:
                return
            if ready:
                summary.retire(ready, [self._cache.pop(i, None) or Site("<unknown>", "<unknown>", 0, "obj")
                                       for i in ready], keep=lambda: set(self._cache.values()))
                for i in ready:
                    self._generation[i] = self._generation.get(i, 0) + 1
                    self._chains.pop(i, None)
                    self._leaves.pop(i, None)
                    ref = self._ref_of.pop(i, None)
                    if ref is not None and i in ref.ids:  # (its own code may live on: a caller died)
                        ref.ids.remove(i)
            ids = np.array(ready, dtype=np.uint32)
            in_use = self._in_use.ctypes.data if candidates else None
            self.reclaimed += self._reclaim(ids.ctypes.data, len(ready), in_use)
            for site_id, died in candidates:
                if self._in_use[site_id]:
                    self._dead.append((site_id, died))  # a live block still carries it
                else:
                    self._quiet.append((site_id, drain))


_resolvers = weakref.WeakSet()


def _after_fork_in_child():
    for resolver in list(_resolvers):
        resolver.after_fork_child()


# Registered when this module is imported, so before the tracker's own handler (handlers run in
# the order registered), which starts a drainer that takes the resolver's lock.
os.register_at_fork(after_in_child=_after_fork_in_child)
