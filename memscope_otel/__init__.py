"""memscope-otel: who allocates how much memory, how fast, and what stays live, as OpenTelemetry
metrics.

Public API:

- :func:`start` / :func:`stop`: install and remove the tracker (``opentelemetry-instrument``
  does this through the ``memscope`` instrumentor).
- :func:`track_allocation` / :func:`track_deallocation`: memory the Python allocators do not
  see (a C library's buffers, a GPU pool), reported per type as ``memscope.type.allocated``.
- :func:`is_running`, :func:`snapshot`.
- The memscope names ``UltraFastTracker``, ``UltraFastSamplingConfig`` and
  ``PerformanceOptimizer`` are documented aliases for people coming from that design.
"""
import logging

from .interpreter import IN_MAIN_INTERPRETER, log_refused_start

if IN_MAIN_INTERPRETER:
    from . import tracker as _tracker
else:  # numpy and the cffi module cannot load here; every call below is a quiet no-op
    _tracker = None

__all__ = ["start", "stop", "is_running", "snapshot", "profile", "track_allocation", "track_deallocation", "UltraFastSamplingConfig"]
if IN_MAIN_INTERPRETER:
    __all__ += ["UltraFastTracker", "PerformanceOptimizer"]

log = logging.getLogger("memscope_otel")


def start(meter_provider=None, **config):
    """Starts tracking this process and publishes the metrics on ``meter_provider`` (default: the
    global MeterProvider). ``config`` takes the lower-case names of the
    ``OTEL_PYTHON_MEMSCOPE_*`` settings and wins over the environment; an invalid value is logged
    as a warning naming the setting and its accepted range, and its default is used.

    Returns the running tracker, or None when disabled (``enabled=False`` or
    ``OTEL_SDK_DISABLED=true``). Calling it while running logs a warning and returns the tracker.
    In a subinterpreter it does nothing and returns None (the tracker is process-wide: it runs in
    the main interpreter only).
    """
    if _tracker is None:
        log_refused_start()
        return None
    return _tracker.start(meter_provider, **config)


def stop():
    """Stops tracking; the metrics keep their last values. Safe to call when not running; an
    application that exits without calling it is stopped at exit."""
    if _tracker is not None:
        _tracker.stop()


def is_running():
    """True while a tracker started by :func:`start` is running."""
    return _tracker is not None and _tracker.current() is not None


def snapshot():
    """Drains pending records and returns a :class:`memscope_otel.tracker.Snapshot` (exact
    counters, rates, live estimate, per-site estimates), or None when not running."""
    t = None if _tracker is None else _tracker.current()
    return None if t is None else t.refresh()


def profile(kind="heap"):
    """The allocation and heap profile of the running process as gzipped pprof
    (``profile.proto``) bytes, or None when not running. ``kind``: ``alloc`` (sample types
    alloc_objects, alloc_space: estimates since start), ``inuse`` (inuse_objects, inuse_space:
    the sampled blocks live now) or ``heap`` (all four). See :mod:`memscope_otel.profiles`."""
    from . import profiles

    if kind not in profiles.KINDS:
        raise ValueError(f"profile kind {kind!r}: one of {', '.join(profiles.KINDS)}")
    t = None if _tracker is None else _tracker.current()
    return None if t is None else profiles.encode(profiles.from_tracker(t), kind)


def track_allocation(ptr, size, type_name):
    """Reports an allocation the Python allocators do not see: ``ptr`` (an int address, non-zero),
    ``size`` in bytes, ``type_name`` (a str). Sampled like any allocation; never raises."""
    t = None if _tracker is None else _tracker.current()
    if t is None:
        return
    try:
        ptr, size = int(ptr), int(size)
        if ptr <= 0 or ptr >= 1 << 64 or size < 0 or size >= 1 << 64:
            log.warning("track_allocation(ptr=%r, size=%r): ptr must be in [1, 2**64), size in [0, 2**64)",
                        ptr, size)
            return
        from . import sampler

        sampler.track_allocation(ptr, size, t.resolver.register_type(str(type_name)))
    except Exception as exc:
        log.warning("track_allocation ignored a bad call: %s", exc)


def track_deallocation(ptr):
    """Reports that the block at ``ptr`` given to :func:`track_allocation` was freed."""
    t = None if _tracker is None else _tracker.current()
    if t is None:
        return
    try:
        ptr = int(ptr)
        if ptr <= 0 or ptr >= 1 << 64:
            log.warning("track_deallocation(ptr=%r): ptr must be in [1, 2**64)", ptr)
            return
        from . import sampler

        sampler.track_deallocation(ptr)
    except Exception as exc:
        log.warning("track_deallocation ignored a bad call: %s", exc)


if IN_MAIN_INTERPRETER:
    UltraFastTracker = _tracker.Tracker
    """Alias of :class:`memscope_otel.tracker.Tracker` (the memscope design's name)."""

    from .optimizer import PerformanceOptimizer  # noqa: E402  (the memscope design's name)


def UltraFastSamplingConfig(**settings):  # noqa: N802 - the memscope design's name
    """The memscope design's config object: a validated :class:`memscope_otel.config.Config`."""
    from .config import load_config

    return load_config(**settings)
