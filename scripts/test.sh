#!/usr/bin/env bash
# The README's test command: a fresh venv (.venv-test, or $MEMSCOPE_VENV), the package built from
# source with its test extra, then the whole suite. Extra arguments go to pytest.
# PYTHON picks the interpreter (default python3); CI runs it once per Python version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MEMSCOPE_VENV:-.venv-test}
# Absolute: the suite runs from tests/ (an absolute $MEMSCOPE_VENV used to be read under tests/..).
case $VENV in /*) ;; *) VENV=$PWD/$VENV ;; esac
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# pip builds in the source tree: objects left in build/ by another variant (the sanitizer build,
# another Python) would be reused as if up to date.
rm -rf build
"$VENV/bin/python" -m pip install -q ".[test]"
# Tests import the installed package, not the source tree (so the compiled module is found).
cd tests
exec "$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. -p no:cacheprovider "$@"
