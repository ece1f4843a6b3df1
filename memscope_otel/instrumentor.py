"""``opentelemetry-instrument`` support: the ``memscope`` entry point of ``opentelemetry_instrumentor``.

``opentelemetry-instrument python app.py`` runs, in this order (opentelemetry-instrumentation's
``auto_instrumentation._initialize``): the distro's ``configure()`` (exporter defaults), the
configurator (the SDK builds the MeterProvider from ``OTEL_*`` and sets it as the global one), then
every instrumentor's ``instrument()``. So when ``_instrument`` runs, the global MeterProvider is the
one the distro configured, and the tracker binds to it unless a ``meter_provider`` is passed.

Memory tracking is not tied to a library, so ``instrumentation_dependencies()`` is empty and the
distribution declares no ``instruments`` extra: the instrumentor is always eligible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.environment_variables import (
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS,
)
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

_logger = logging.getLogger(__name__)

ENTRY_POINT_NAME = "memscope"


def disabled_by_instrumentation_list(environ=None) -> bool:
    """True when ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``memscope`` (or is ``*``).

    ``opentelemetry-instrument`` already skips a listed entry point; checking here as well keeps
    ``MemscopeInstrumentor().instrument()`` called by hand consistent with it.
    """
    environ = os.environ if environ is None else environ
    names = {n.strip() for n in environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    return ENTRY_POINT_NAME in names or "*" in names


class MemscopeInstrumentor(BaseInstrumentor):
    """Starts the memscope tracker on the configured MeterProvider; stops it on uninstrument.

    Keyword arguments of ``instrument()``: ``meter_provider`` (default: the global one) and any
    ``memscope_otel.start()`` setting (``small_sample_rate=...``), which override the
    ``OTEL_PYTHON_MEMSCOPE_*`` environment variables. Failures are logged, never raised: a profiler
    must not take the application down.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """No library is required: memory tracking applies to every Python program."""
        return ()

    def _instrument(self, **kwargs: Any):
        try:
            from memscope_otel.config import sdk_disabled

            if sdk_disabled():
                _logger.debug("OTEL_SDK_DISABLED=true: memscope tracker not started")
                return
            if disabled_by_instrumentation_list():
                _logger.debug("%s lists memscope: tracker not started",
                              OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)
                return
            import memscope_otel

            settings = {k: v for k, v in kwargs.items() if k != "meter_provider"}
            memscope_otel.start(meter_provider=kwargs.get("meter_provider"), **settings)
        except Exception:  # the tracked application must never crash because of the tracker
            _logger.exception("memscope instrumentation failed; the application runs untracked")

    def _uninstrument(self, **kwargs: Any):
        try:
            import memscope_otel

            memscope_otel.stop()
        except Exception:
            _logger.exception("stopping the memscope tracker failed")
