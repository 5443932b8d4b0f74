#!/usr/bin/env bash
# Creates (once) the venv .venv-torch at the repository root: Debian's python3 with its
# python3-torch visible (--system-site-packages) plus the `safetensors` package from PyPI,
# which Debian 12 does not ship. tests/torch_interop.py runs in it. Prints the python path.
#   PYTHON  the interpreter to base the venv on (default /usr/bin/python3, which has torch)
set -euo pipefail
cd "$(dirname "$0")/.."
# 0.4.5 reads torch's dtypes with getattr, so it works with Debian's torch 1.13.
safetensors_version=0.4.5
venv=.venv-torch
py=$venv/bin/python
base=${PYTHON:-/usr/bin/python3}

# A venv whose interpreter no longer runs (python upgraded, moved checkout) is made anew.
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    if ! "$base" -c 'import torch' >/dev/null 2>&1; then
        echo "python-env: $base cannot import torch (install python3-torch)" >&2
        exit 1
    fi
    "$base" -m venv --clear --system-site-packages "$venv"
fi
if ! "$py" -c "import safetensors, sys; sys.exit(safetensors.__version__ != '$safetensors_version')" \
        2>/dev/null; then
    "$py" -m pip install --quiet --disable-pip-version-check \
        "safetensors==$safetensors_version"
fi
"$py" -c 'import torch, safetensors.torch' >/dev/null
echo "$(pwd)/$py"
