#!/usr/bin/env bash
# Builds the C sampler with -fsanitize=address,undefined into .venv-asan and runs the stress and
# core tests and the recognizer window's tests on it (--capture=sys: a sanitizer report must reach the log even when it aborts). Python itself is not instrumented, so the ASan runtime is preloaded; leak checking is
# off because the interpreter keeps objects alive until exit by design. A calloc whose size
# overflows must return NULL as the C library's does (the native domain's tests make one), not
# abort.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-asan
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# pip builds in the source tree: objects left in build/ by another variant (the sanitizer build,
# another Python) would be reused as if up to date.
rm -rf build
# The isolated build environment inherits MEMSCOPE_SANITIZE; --no-cache-dir keeps a normal
# wheel from being reused.
MEMSCOPE_SANITIZE=1 "$VENV/bin/python" -m pip install -q --no-cache-dir ".[test]"
# Refuse to report a clean run of an unsanitized build.
so=$(ls "$VENV"/lib/python*/site-packages/memscope_otel/_memscope*.so)
# (ldd's output is read whole first: with pipefail, `ldd | grep -q` fails whenever grep exits on
# its match before ldd has written its last line, and ldd dies of SIGPIPE.)
libs=$(ldd "$so")
grep -q libasan <<<"$libs" || { echo "sanitize: $so is not an ASan build" >&2; exit 1; }
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd tests
"../$VENV/bin/python" -m pytest -c ../pyproject.toml --rootdir .. -p no:cacheprovider -q --capture=sys core stress \
    optimizer/test_sink.py optimizer/test_window_features.py
