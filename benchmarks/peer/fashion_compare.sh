#!/bin/sh
# Fashion-MNIST end to end, ours against PyTorch, alternating for ROUNDS rounds (default 2):
# `backprop train --data fashion-mnist` (its defaults are the model and run below) and
# torch_fashion.py (784-256-128-10 ReLU, AdamW lr 1e-3 wd 1e-4, cosine, label smoothing 0.1,
# batch 128, 12 epochs, 10% validation, global scaling). Prints each run's "done:" line, which
# holds the training time, the time in all and the test accuracy.
# PyTorch runs in $PEER_PYTHON, by default .venv-peer's (scripts/peer-env.sh: 2.x from PyPI)
# when it exists, else /usr/bin/python3 (Debian's 1.13).
# PRECISION (fp32 or bf16; default fp32) runs ours with --precision and PyTorch under autocast;
# TORCH_FUSED=1 gives PyTorch its fused AdamW.
# usage: benchmarks/peer/fashion_compare.sh [path/to/backprop] [ROUNDS] [TORCH_THREADS] [PRECISION]
set -eu
BIN=${1:-build/backprop}
ROUNDS=${2:-2}
THREADS=${3:-1}
PRECISION=${4:-fp32}
FUSED=""
[ "${TORCH_FUSED:-0}" = 1 ] && FUSED=--fused
HERE=$(dirname "$0")
PY=${PEER_PYTHON:-$HERE/../../.venv-peer/bin/python}
[ -x "$PY" ] || PY=/usr/bin/python3
echo "PyTorch $("$PY" -c 'import torch; print(torch.__version__)') ($PY)"
echo "load before: $(cat /proc/loadavg)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    # Alternate who goes first so neither always gets the quieter minute.
    if [ $((r % 2)) -eq 1 ]; then order="ours torch"; else order="torch ours"; fi
    for who in $order; do
        if [ "$who" = ours ]; then
            printf 'round %d ours:  ' "$r"
            "$BIN" train --data fashion-mnist --precision "$PRECISION" 2>&1 | grep '^done:'
        else
            printf 'round %d torch: ' "$r"
            "$PY" "$HERE/torch_fashion.py" --threads "$THREADS" --precision "$PRECISION" $FUSED |
                grep '^done:'
        fi
        echo "  load: $(cat /proc/loadavg)"
    done
    r=$((r + 1))
done
