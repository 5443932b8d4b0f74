#!/usr/bin/env python3
"""Loads a backprop checkpoint in PyTorch and checks that it predicts what backprop predicted.

    torch_interop.py CHECKPOINT INPUTS OUTPUTS ROWS [TOLERANCE]

CHECKPOINT is read with safetensors.torch.load_file; the nn.Sequential is built from its
metadata alone (model.widths, model.activations, model.dropout, model.leaky_slope, and where
present model.norms, model.norm_eps, model.residual: docs/deep-mlp.md), and
load_state_dict(strict=True) takes the tensors once the "optimizer." and "run." keys are
dropped. Each optimizer state tensor must be named after a parameter and have its shape.
INPUTS and OUTPUTS are raw little-endian float32 files, [ROWS, in] and [ROWS, out]: backprop's
inference-mode outputs for those inputs. PyTorch's outputs (fp32, eval mode) must match them to
||torch - ours|| / ||ours|| <= TOLERANCE: by default 1e-5, the fp32 tolerance of the test suite;
a tf32 or bf16 model's outputs carry its roundings, and the caller gives that mode's tolerance.

Exit status: 0 when they match, 1 on a mismatch, 2 when the checkpoint cannot be used at all.
Run it with the python of scripts/python-env.sh (torch + safetensors).
"""
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

TOLERANCE = 1e-5


def activation(name, slope):
    table = {
        "relu": lambda: torch.nn.ReLU(),
        "leaky_relu": lambda: torch.nn.LeakyReLU(slope),
        "sigmoid": lambda: torch.nn.Sigmoid(),
        "tanh": lambda: torch.nn.Tanh(),
        "gelu": lambda: torch.nn.GELU(),
        "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
        "silu": lambda: torch.nn.SiLU(),
    }
    if name == "identity":
        return None
    if name not in table:
        raise ValueError(f"unknown activation {name!r}")
    return table[name]()


class RMSNorm(torch.nn.Module):
    """nn.RMSNorm(n, eps) (PyTorch 2.4 and later) for the PyTorch releases without it: the same
    parameter name and math, y = x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Residual(torch.nn.Module):
    """x + body(x): a residual layer of backprop (docs/deep-mlp.md)."""

    def __init__(self, *layers):
        super().__init__()
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x):
        return x + self.body(x)


def norm_module(name, n, eps):
    if name == "layernorm":
        return torch.nn.LayerNorm(n, eps=eps)
    if name == "rmsnorm":
        return torch.nn.RMSNorm(n, eps=eps) if hasattr(torch.nn, "RMSNorm") else RMSNorm(n, eps)
    if name != "none":
        raise ValueError(f"unknown norm {name!r}")
    return None


def build(meta):
    """The module the metadata describes (docs/deep-mlp.md): per layer its norm (model.norms),
    Linear, activation (none for identity) and Dropout when p > 0, in one nn.Sequential, or
    wrapped in one Residual for a residual layer (model.residual)."""
    widths = [int(w) for w in meta["model.widths"].split(",")]
    acts = meta["model.activations"].split(",")
    drops = [float(p) for p in meta["model.dropout"].split(",")]
    slope = float(meta["model.leaky_slope"])
    n = int(meta["model.n_layers"])
    norms = meta.get("model.norms", ",".join(["none"] * n)).split(",")
    residual = [int(r) for r in meta.get("model.residual", ",".join(["0"] * n)).split(",")]
    eps = float(meta.get("model.norm_eps", "1e-5"))
    if not (len(widths) == n + 1 and len(acts) == n and len(drops) == n and len(norms) == n and
            len(residual) == n):
        raise ValueError("model metadata lists disagree with model.n_layers")
    modules = []
    for i in range(n):
        layer = [norm_module(norms[i], widths[i], eps),
                 torch.nn.Linear(widths[i], widths[i + 1]), activation(acts[i], slope),
                 torch.nn.Dropout(drops[i]) if drops[i] > 0 else None]
        layer = [m for m in layer if m is not None]
        modules += [Residual(*layer)] if residual[i] else layer
    return torch.nn.Sequential(*modules), widths


def check_optimizer_names(tensors, params):
    """Each "optimizer.<param>.<state>" tensor names a parameter and has its shape."""
    states = {"momentum_buffer", "exp_avg", "exp_avg_sq"}
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        param, _, state = key[len("optimizer."):].rpartition(".")
        if state not in states or param not in params:
            raise ValueError(f"optimizer tensor {key!r} does not name a parameter's state")
        if tuple(value.shape) != tuple(params[param].shape):
            raise ValueError(f"optimizer tensor {key!r} has shape {tuple(value.shape)}, "
                             f"its parameter {tuple(params[param].shape)}")


def load(path):
    """The checkpoint as PyTorch sees it: its tensors, its metadata, the nn.Sequential with the
    weights loaded, the layer widths, and the parameter tensors by name."""
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    model, widths = build(meta)
    params = {k: v for k, v in tensors.items()
              if not k.startswith("optimizer.") and not k.startswith("run.")}
    model.load_state_dict(params, strict=True)
    return tensors, meta, model, widths, params


def main(argv):
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    path, inputs, outputs, rows = argv[1], argv[2], argv[3], int(argv[4])
    tolerance = float(argv[5]) if len(argv) == 6 else TOLERANCE
    try:
        tensors, meta, model, widths, params = load(path)
        check_optimizer_names(tensors, params)
        x = np.fromfile(inputs, dtype="<f4").reshape(rows, widths[0])
        ours = np.fromfile(outputs, dtype="<f4").reshape(rows, widths[-1])
    except Exception as e:  # anything here means the checkpoint is not usable from PyTorch
        print(f"torch_interop: {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    model.eval()
    with torch.no_grad():
        theirs = model(torch.from_numpy(x.copy())).numpy().astype(np.float64)
    ours = ours.astype(np.float64)
    if not np.all(np.isfinite(theirs)) or not np.all(np.isfinite(ours)):
        print("torch_interop: non-finite outputs", file=sys.stderr)
        return 1
    err = np.linalg.norm(theirs - ours) / max(np.linalg.norm(ours), 1e-30)
    ok = err <= tolerance
    print(f"torch_interop: {len(model)} modules, {rows} rows, relative error {err:.3g} "
          f"({'<=' if ok else '>'} {tolerance:g}), precision "
          f"{meta.get('model.precision', 'fp32')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
