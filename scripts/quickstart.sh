#!/usr/bin/env bash
# Installs what is missing, builds backprop, and trains an MLP on two interleaved spirals,
# on the GPU when one is present, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ -x /usr/local/cuda/bin/nvcc ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBP_BUILD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target spirals
./build/spirals "${1:-auto}"
