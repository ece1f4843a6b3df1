#!/usr/bin/env bash
# Debian packages the integration tests need: a real Prometheus server and headless Chromium.
# Idempotent; nothing is left running (the package's service is not started in a container).
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A Debian postinst may start the daemon where an init system runs; the tests start their own.
pkill -x prometheus 2>/dev/null || true
