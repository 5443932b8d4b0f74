#!/usr/bin/env python3
"""Continues a backprop training run in torch.optim and compares where both sides end.

    torch_optim.py CHECKPOINT X LABELS ROWS STEPS OURS_PARAMS OURS_STATE [--beta2-float32]
                   [--state-tolerance=T]

CHECKPOINT is a backprop checkpoint with its optimizer state (AdamW or SGD with momentum). The
nn.Sequential is built from its metadata and its weights loaded (torch_interop.load), and a
torch.optim optimizer made with the hyper-parameters the metadata records (optimizer.lr,
.beta1, ...) and given the saved state: the step count and "optimizer.<param>.<state>". Then
STEPS steps of cross-entropy (mean) on the one batch X [ROWS, in] (little-endian float32) with
LABELS [ROWS] (int32) follow, as backprop took them after saving. OURS_PARAMS and OURS_STATE
are backprop's parameters and optimizer state (float32, flat, in state_dict order; the state
as bp_optimizer_get_state gives it) after those same steps.

Each of parameters and every state buffer must match to ||torch - ours|| / ||ours|| <= 2e-6:
float rounding of two implementations of the same arithmetic over a few dozen steps. The error
the test guards against, a hyper-parameter rounded to float before 1 - beta2 is formed, is 1.3e-5
in exp_avg_sq. --beta2-float32 makes PyTorch commit that error itself (beta2 = float32(beta2)):
the comparison must then fail, which shows the tolerance can see it.

--state-tolerance=T holds the state buffers to T instead (the parameters stay at 2e-6): over
50 steps the first moment, which shrinks as the gradients do, carries more relative rounding.

--float64 also takes the same steps in float64 from the same checkpoint and prints how far
PyTorch's float32 run and ours each end from it: the rounding that float32 arithmetic itself
carries over those steps, the scale a tolerance must leave room for. It decides nothing.

Exit status: 0 when everything matches, 1 on a mismatch, 2 when the inputs cannot be used.
"""
import os
import sys

import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_interop import load  # noqa: E402

TOLERANCE = 2e-6


def make_optimizer(meta, params, beta2_float32):
    kind = meta["optimizer.kind"]
    lr = float(meta["optimizer.lr"])
    wd = float(meta["optimizer.weight_decay"])
    if kind == "adamw":
        beta1 = float(meta["optimizer.beta1"])
        beta2 = float(meta["optimizer.beta2"])
        if beta2_float32:
            beta2 = float(np.float32(beta2))
        eps = float(meta["optimizer.eps"])
        return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(meta["optimizer.momentum"]),
                               dampening=float(meta["optimizer.dampening"]),
                               nesterov=meta["optimizer.nesterov"] == "1", weight_decay=wd)
    raise ValueError(f"optimizer {kind!r}: this check covers adamw and sgd")


def load_state(opt, named, tensors, steps):
    """The saved state of every parameter, in torch.optim's own keys."""
    for name, p in named:
        state = opt.state[p]
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            saved = tensors.get(f"optimizer.{name}.{key}")
            if saved is not None:
                state[key] = saved.clone()
        if "exp_avg" in state:
            state["step"] = torch.tensor(float(steps))


def flat_state(opt, named, keys):
    return [torch.cat([opt.state[p][k].flatten() for _, p in named]).double().numpy()
            for k in keys]


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def train(model, named, opt, keys, x, y, steps):
    """steps of cross-entropy on the batch; the parameters and state buffers after them."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    params = torch.cat([p.detach().flatten() for _, p in named]).double().numpy()
    return params, flat_state(opt, named, keys)


def distances(keys, ref_params, ref_state, params, state):
    errors = {"parameters": rel(ref_params, params)}
    for k, r, o in zip(keys, ref_state, state):
        errors[k] = rel(r, o)
    return errors


def float64_run(path, meta, beta2_float32, keys, x, y, steps):
    """The same steps from the same checkpoint, in float64."""
    tensors, _, model, _, _ = load(path)
    model = model.double()
    named = list(model.named_parameters())
    opt = make_optimizer(meta, [p for _, p in named], beta2_float32)
    load_state(opt, named, {k: v.double() for k, v in tensors.items()},
               int(meta["optimizer.steps"]))
    return train(model, named, opt, keys, x.double(), y, steps)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    beta2_float32 = "--beta2-float32" in argv
    state_tol = TOLERANCE
    for a in argv[1:]:
        if a.startswith("--state-tolerance="):
            state_tol = float(a.split("=", 1)[1])
    if len(args) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    path, xs, ys, rows, steps, ours_p, ours_s = args
    rows, steps = int(rows), int(steps)
    try:
        tensors, meta, model, widths, _ = load(path)
        named = list(model.named_parameters())
        opt = make_optimizer(meta, [p for _, p in named], beta2_float32)
        load_state(opt, named, tensors, int(meta["optimizer.steps"]))
        x = torch.from_numpy(np.fromfile(xs, dtype="<f4").reshape(rows, widths[0]).copy())
        y = torch.from_numpy(np.fromfile(ys, dtype="<i4").astype(np.int64))
        ours_params = np.fromfile(ours_p, dtype="<f4").astype(np.float64)
        ours_state = np.fromfile(ours_s, dtype="<f4").astype(np.float64)
    except Exception as e:  # the inputs are not what this check needs
        print(f"torch_optim: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    keys = ["exp_avg", "exp_avg_sq"] if "exp_avg" in opt.state[named[0][1]] else [
        "momentum_buffer"]
    theirs_params, theirs_state = train(model, named, opt, keys, x, y, steps)
    ours_split = np.split(ours_state, len(keys))
    errors = distances(keys, theirs_params, theirs_state, ours_params, ours_split)
    if "--float64" in argv:
        exact = float64_run(path, meta, beta2_float32, keys, x, y, steps)
        print("torch_optim: from float64 PyTorch, PyTorch float32: " +
              ", ".join(f"{k} {e:.3g}" for k, e in
                        distances(keys, *exact, theirs_params, theirs_state).items()) +
              "; ours: " + ", ".join(f"{k} {e:.3g}" for k, e in
                                     distances(keys, *exact, ours_params, ours_split).items()))
    bad = {k: e for k, e in errors.items()
           if not e <= (TOLERANCE if k == "parameters" else state_tol)}
    print("torch_optim: " + meta["optimizer.kind"] + f" after {steps} more steps: " +
          ", ".join(f"{k} {e:.3g}" for k, e in errors.items()) +
          f" (tolerance {TOLERANCE:g}, state {state_tol:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
