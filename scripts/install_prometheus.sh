#!/usr/bin/env bash
# Installs the Prometheus server binary (Debian/Ubuntu package `prometheus`) for the integration
# tests, which start their own instance on 127.0.0.1. Idempotent: does nothing when `prometheus`
# is already on PATH. Leaves no system service running: service start-up is refused during the
# installation (policy-rc.d, the Debian mechanism for this), and the unit is stopped and disabled
# afterwards where systemd runs.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    echo "install_prometheus: $(command -v prometheus) already installed"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_prometheus: needs root or sudo" >&2; exit 1; }
    sudo="sudo"
fi

policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
fi
cleanup() { if [ "$added_policy" = 1 ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "install_prometheus: installed $(prometheus --version 2>&1 | head -n 1)"
