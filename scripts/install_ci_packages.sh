#!/usr/bin/env bash
# Debian packages the integration tests need: a real Prometheus server, headless Chromium, an
# AArch64 cross compiler with qemu-user to run the NEON reducer against its scalar twin, and tmux
# (a real terminal for `memscope-otel top`, tests/cli/test_top_tmux.py), jemalloc and tcmalloc to
# preload under the native domain (tests/core/test_native_preload.py), and Go (`go tool pprof`
# reads the pprof profiles, tests/integration/test_pprof_go.py).
# Idempotent; nothing is left running (the package's service is not started in a container).
set -euo pipefail
# Prometheus has its own script: it keeps the package's service from starting.
"$(dirname "$0")/install_prometheus.sh"
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v tmux >/dev/null || need+=(tmux)
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
[ -e "/usr/lib/$arch/libjemalloc.so.2" ] || need+=(libjemalloc2)
[ -e "/usr/lib/$arch/libtcmalloc_minimal.so.4" ] || need+=(libtcmalloc-minimal4)
command -v go >/dev/null || need+=(golang-go)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
