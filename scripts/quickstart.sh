#!/usr/bin/env bash
# Installs what is missing (Debian's dataset-fashion-mnist among it), builds backprop, and trains
# the default MLP on Fashion-MNIST with a progress bar, on the GPU when one is present, else on
# the CPU; prints the test accuracy at the end. Arguments go to `backprop train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ -x /usr/local/cuda/bin/nvcc ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target backprop_cli
./build/backprop train --data fashion-mnist "$@"
