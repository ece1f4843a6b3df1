"""Which interpreter this import runs in.

The allocator hooks, the rings and the tables are process-wide, and the cffi module and numpy load
once per process: only the main interpreter can run the tracker. In a subinterpreter (created by
``interpreters``, mod_wsgi, or ``opentelemetry-instrument``'s sitecustomize running again in it),
``memscope_otel`` imports without them and :func:`memscope_otel.start` does nothing.
"""
import logging

log = logging.getLogger("memscope_otel")


def _interpreter_id(value):
    # 3.13's get_current()/get_main() return (id, whence); 3.10-3.12 return the id alone.
    return value[0] if isinstance(value, tuple) else value


def in_main_interpreter():
    """True in the main interpreter (and where CPython offers no way to ask: nothing else runs
    Python code there)."""
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        try:
            return _interpreter_id(module.get_current()) == _interpreter_id(module.get_main())
        except Exception:
            return True
    return True


IN_MAIN_INTERPRETER = in_main_interpreter()

_refusal_logged = False


def log_refused_start():
    """Says once, at debug level, why start() did nothing in this subinterpreter."""
    global _refusal_logged
    if not _refusal_logged:
        _refusal_logged = True
        log.debug("memscope: not started in a subinterpreter (the tracker is process-wide and runs "
                  "in the main interpreter only)")
