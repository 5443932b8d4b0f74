#!/usr/bin/env bash
# Creates (once) .venv-peer at the repository root: the PyTorch users run, from PyPI (2.x with
# its CUDA wheels, about 5 GB), for benchmarks/peer/ to measure ours against. Debian's
# python3-torch (1.13, the one the tests use through .venv-torch) is not that peer.
# Prints the python path.
#   PEER_TORCH  the torch version (default 2.15.0)
#   PYTHON      the interpreter to base the venv on (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${PEER_TORCH:-2.15.0}
venv=.venv-peer
py=$venv/bin/python
base=${PYTHON:-/usr/bin/python3}
have=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$version" ]; then
    "$base" -m venv --clear "$venv"
    "$py" -m pip install --quiet --disable-pip-version-check "torch==$version" numpy
fi
"$py" -c 'import torch, numpy' >/dev/null
echo "$(pwd)/$py"
