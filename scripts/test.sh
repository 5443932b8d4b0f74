#!/usr/bin/env bash
# Installs what is missing, builds backprop and runs the whole test suite.
#   BP_CUDA=AUTO|ON|OFF  CUDA backend (default AUTO: built when a toolkit is found; its tests
#                        run when a GPU is present and are skipped with the reason otherwise)
#   BP_MPI=AUTO|ON|OFF   data-parallel training over MPI (default AUTO: built when OpenMPI is
#                        found; install-deps.sh installs it); its tests run 2 ranks with mpirun
#   BUILD_DIR            default build
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# PyTorch + safetensors for the checkpoint interop test (skipped, with the reason, without them).
bash scripts/python-env.sh || echo "test.sh: no safetensors venv; the PyTorch interop test will say why it skips"
build=${BUILD_DIR:-build}
if [ -z "${CMAKE_CUDA_COMPILER:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDACXX=/usr/local/cuda/bin/nvcc
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBP_CUDA="${BP_CUDA:-AUTO}" \
    -DBP_MPI="${BP_MPI:-AUTO}"
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j1 --timeout 900
