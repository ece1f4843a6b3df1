#!/usr/bin/env bash
# Runs every benchmark once, one after the other, and keeps each one's output in $1 (default
# bench-out/): the figures of docs/performance.md come from a run of this script.
#   benchmarks/run_all.sh [OUTDIR] [--quick]
# PYTHON picks the interpreter (it must have memscope-otel and opentelemetry-sdk installed).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-out}
quick=${2:-}
PYTHON=${PYTHON:-python3}
mkdir -p "$out"
threads="1 2 4 8"
[ "$(nproc)" -ge 16 ] && threads="1 2 4 8 16"
{
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$PYTHON" -c 'import sys; print("python", sys.version.split()[0])'
} | tee "$out/machine.txt"
run() {
    local name=$1
    shift
    echo "=== $name: $*"
    local t0=$SECONDS
    PYTHONUNBUFFERED=1 "$PYTHON" "$@" 2>&1 | tee "$out/$name.txt"
    echo "=== $name took $((SECONDS - t0)) s"
}
run threads benchmarks/threads.py --threads $threads $quick
run micro benchmarks/micro.py $quick
run native benchmarks/native.py $quick
run workloads benchmarks/workloads.py $quick
run background benchmarks/background.py $([ -n "$quick" ] && echo --seconds 2)
run reduce benchmarks/reduce_throughput.py
run memory benchmarks/memory.py $quick
run thread_churn benchmarks/thread_churn.py $quick
run collection_cost benchmarks/collection_cost.py
