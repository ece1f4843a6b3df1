"""CPython 3.10 has no co_qualname: sites.py reads a nested code object's qualified name from the
bytecode of the code that makes it, scanning the wordcode itself (dis is ten times slower, and
the scan runs inside a metric collection). The scan must find what dis finds. (The dis loop it
replaced took EXTENDED_ARG for a step between the two loads and missed every function made from
a constant past the 256th.)"""
import dis
import gc
import sys
import types

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
