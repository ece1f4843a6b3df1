"""memscope-otel's environment variables, for ``opentelemetry-instrument``.

This module is registered under the ``opentelemetry_environment_variables`` entry point.
``opentelemetry-instrument`` loads every such module, and for each name in ``dir(module)`` that starts
with ``OTEL_`` it adds the option ``--<name without OTEL_ or OTEL_PYTHON_, lower-cased>``; a value given
on the command line is put into the environment variable of that name before the program starts. So
``opentelemetry-instrument --memscope_max_sites 20 python app.py`` sets
``OTEL_PYTHON_MEMSCOPE_MAX_SITES=20``, which ``memscope_otel.config.load_config`` then reads.

The attributes are generated from ``memscope_otel.config.SETTINGS`` so the two cannot drift; each one's
value is its own name, as in OpenTelemetry's modules. Only settings live here: any other ``OTEL_`` name
would become a second ``opentelemetry-instrument`` option, and a name another package already
registers (``OTEL_SDK_DISABLED``) would make its option parser fail on the conflict.

Variables (see the README table for the accepted values):

"""
from memscope_otel.config import SETTINGS as _SETTINGS

for _setting in _SETTINGS:
    globals()[_setting.env_var] = _setting.env_var
    if __doc__ is not None:  # python -OO strips docstrings
        __doc__ += (
            f".. envvar:: {_setting.env_var}\n\n"
            f"    {_setting.meaning} Default: {_setting.default_text()}; accepted: {_setting.accepted}.\n\n"
        )
del _setting

__all__ = [setting.env_var for setting in _SETTINGS]
