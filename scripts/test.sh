#!/usr/bin/env bash
# The README's test command: a fresh venv (.venv-test, or $MEMSCOPE_VENV), the package built from
# source with its test extra, then the whole suite. Extra arguments go to pytest.
# PYTHON picks the interpreter (default python3); CI runs it once per Python version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=$(realpath -m "${MEMSCOPE_VENV:-.venv-test}")  # absolute: pytest runs from tests/
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
