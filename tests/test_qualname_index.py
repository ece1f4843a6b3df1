"""CPython 3.10 has no co_qualname: sites.py reads a nested code object's qualified name from the
bytecode of the code that makes it, scanning the wordcode itself (dis is ten times slower, and
the scan runs inside a metric collection). The scan must find what dis finds. (The dis loop it
replaced took EXTENDED_ARG for a step between the two loads and missed every function made from
a constant past the 256th.)"""
import dis
import gc
import sys
import types

import pytest

from memscope_otel import sites


def _reference(code):
    pairs, previous = [], None
    for ins in dis.get_instructions(code):
        if ins.opname == "EXTENDED_ARG":  # a prefix of the next instruction's argument, not a step
            continue
        if ins.opname == "LOAD_CONST":
            if isinstance(previous, types.CodeType) and isinstance(ins.argval, str):
                pairs.append((previous, ins.argval))
            previous = ins.argval
        else:
            previous = None
    return pairs


# A module whose function is its 301st constant or later: loading it needs an EXTENDED_ARG prefix.
_MANY = compile("\n".join(f"v{i} = {i}.25" for i in range(300)) + "\ndef late():\n    return [y for y in ()]\n",
                "<many>", "exec")


def test_the_wordcode_scan_finds_what_dis_finds():
    codes = [obj.__code__ for obj in gc.get_objects() if isinstance(obj, types.FunctionType)]
    nested = [c for c in codes if any(isinstance(k, types.CodeType) for k in c.co_consts)] + [_MANY]
    assert len(nested) > 100
    assert dis.EXTENDED_ARG in _MANY.co_code[::2]
    if sys.version_info < (3, 11):  # (3.11 stopped loading the qualified name for MAKE_FUNCTION)
        assert [name for _, name in sites._nested_code(_MANY)] == ["late"]
    for code in nested:
        assert sites._nested_code(code) == _reference(code), code


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="code objects know their qualified name from CPython 3.11")
def test_on_310_the_heap_walk_runs_on_the_drainer_never_in_a_collection(monkeypatch):
    """A new site of nested code is named by its co_name at first; the drainer's thread walks the
    heap for its qualified name and the site is renamed. No snapshot (the collection path) walks."""
    import threading
    import time

    import memscope_otel

    walks = []
    real_rebuild = sites._QualnameIndex._rebuild
    monkeypatch.setattr(sites._QualnameIndex, "_rebuild",
                        lambda self: walks.append(threading.current_thread().name) or real_rebuild(self))
    monkeypatch.setattr(sites._qualnames_310, "_min_interval", 0.0)
    monkeypatch.setattr(sites._qualnames_310, "_built_at", None)
    from opentelemetry.sdk.metrics import MeterProvider

    memscope_otel.start(MeterProvider(), adaptive=False, drain_interval_ms=50, small_sample_rate=0.0,
                        medium_sample_rate=0.0, frequency_sample_interval=0)
    try:
        # New code, which no walk has seen (the index is process-wide).
        ns = {}
        exec(compile("def outer():\n    return [bytearray(300_000) for _ in range(2)]\n", "<walk-test>", "exec"), ns)
        ns["outer"]()

        def names():
            snap = memscope_otel.snapshot()
            return {k.function for k in snap.per_site if getattr(k, "file", None) == "<walk-test>"}

        # (the drainer may have renamed it already, but never by a walk on this thread)
        assert names() & {"<listcomp>", "outer.<locals>.<listcomp>"}, names()
        deadline = time.monotonic() + 10
        while names() != {"outer.<locals>.<listcomp>"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert names() == {"outer.<locals>.<listcomp>"}
        assert walks and set(walks) == {"memscope-drainer"}, walks
    finally:
        memscope_otel.stop()
