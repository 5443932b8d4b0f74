#!/usr/bin/env bash
# The default thread count under load: S (784-128-10, batch 128, SGD) with one core kept busy by
# another process (a shell loop), at the default thread count, on 1 thread and on every core,
# alternating for ROUNDS rounds; then the same without the busy process. The default should
# stay within 1.5x of 1 thread under load (a team larger than the free cores waits at every
# barrier for its thread that shares a core).
#   usage: benchmarks/threads_under_load.sh [BUILD_DIR (build)] [ROUNDS (3)] [CONFIG (S)]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/backprop
rounds=${2:-3}
config=${3:-S}
cores=$(nproc)
echo "command: $0 $*"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $cores CPUs"
echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
sps() { # threads-flag...
    "$bin" bench --only train --config "$config" --no-limits --repeats 5 --device cpu "$@" |
        sed -n 's/.* \([0-9]*\) samples\/s.*/\1/p' | head -1
}
for load in busy quiet; do
    busy=""
    if [ "$load" = busy ]; then
        (while :; do :; done) &
        busy=$!
        sleep 1
    fi
    echo "== $load (load average $(cut -d' ' -f1 /proc/loadavg))"
    for r in $(seq "$rounds"); do
        d=$(sps) one=$(sps --threads 1) all=$(sps --threads "$cores")
        echo "round $r: default $d samples/s, 1 thread $one, $cores threads $all;" \
             "1 thread / default $(awk -v a="$one" -v b="$d" 'BEGIN{printf "%.2f", a/b}')"
    done
    [ -n "$busy" ] && kill "$busy"
done
