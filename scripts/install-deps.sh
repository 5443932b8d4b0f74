#!/usr/bin/env bash
# Installs the Debian packages backprop needs to build and test, only those missing.
set -euo pipefail

packages=(cmake make g++ gcc clang libomp-dev pkg-config libopenblas-dev
          libdnnl-dev  # oneDNN: the CPU backend's matrix engine (CBLAS is the fallback)
          libopenblas-openmp-dev  # OpenBLAS on OpenMP: one thread pool with the library's loops
          libgtest-dev libgmock-dev zlib1g-dev python3 python3-numpy python3-torch
          python3-venv gnuplot-nox dataset-fashion-mnist
          libopenmpi-dev openmpi-bin  # data-parallel training and its 2-rank tests
          libclang-rt-14-dev valgrind  # sanitizer + libFuzzer runtimes, memcheck (sanitize.sh)
          strace  # no library planted in the current folder is opened (test_cli_modules.py)
          libboost-context-dev)  # the emulated CUDA device's fibers (cudaemu/, BP_CUDA=EMU)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
