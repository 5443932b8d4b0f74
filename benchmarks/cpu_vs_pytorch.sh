#!/usr/bin/env bash
# The CPU comparison, one command: ours against PyTorch 2.15 from PyPI at its best, side by side
# and alternating, on S, M, L and Fashion-MNIST in fp32 and bf16. PyTorch tries each thread
# count up to the core count, its plain, foreach and fused optimizers and (TORCH_COMPILE=1)
# torch.compile, with autocast for bf16; ours runs the library's default thread count. Prints
# the command, the CPU model and ISA, the commit and the engine, then the table rows.
#   usage: benchmarks/cpu_vs_pytorch.sh [BUILD_DIR (build)] [ROUNDS (3)]
#   env:   TORCH_COMPILE=1 adds torch.compile and fused+compile (minutes to compile per run)
#          CONFIGS (S,M,L), PRECISIONS (fp32,bf16), FASHION=0 skips Fashion-MNIST
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-3}
py=$(bash scripts/peer-env.sh | tail -1)
threads=$(seq -s, 1 "$(nproc)")
variants=plain,foreach,fused
[ "${TORCH_COMPILE:-0}" = 1 ] && variants=$variants,compile,fused+compile
echo "command: $0 $*  (TORCH_COMPILE=${TORCH_COMPILE:-0})"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
/usr/bin/python3 benchmarks/peer/compare.py --backprop "$build/backprop" --rounds "$rounds" \
    --config "${CONFIGS:-S,M,L}" --precision "${PRECISIONS:-fp32,bf16}" --threads "$threads" \
    --torch-variants "$variants" --repeats 5 --python "$py" \
    --json "$build/cpu_vs_pytorch.json"
if [ "${FASHION:-1}" = 1 ]; then
    for p in $(echo "${PRECISIONS:-fp32,bf16}" | tr , ' '); do
        for t in $(echo "$threads" | tr , ' '); do
            echo "== Fashion-MNIST, $p, PyTorch on $t threads with its fused AdamW"
            TORCH_FUSED=1 PEER_PYTHON=$py sh benchmarks/peer/fashion_compare.sh \
                "$build/backprop" 2 "$t" "$p"
        done
    done
fi
