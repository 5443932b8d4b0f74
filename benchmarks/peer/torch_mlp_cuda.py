#!/usr/bin/env python3
"""The training-step benchmark of `backprop bench --device cuda` in PyTorch, on the same GPU.

The configs, layer sizes, batches and optimizers of torch_mlp.py (S, M, L and XL: 8192-8192-8192-
8192-1000, batch 8192, AdamW), softmax cross-entropy, one random batch already on the device,
ReLU between layers, nn.Linear's default init, PyTorch's default optimizer implementation. Each
config runs in three modes:

  fp32   TF32 off for matrix products (torch.backends.cuda.matmul.allow_tf32 = False): the
         arithmetic backprop's fp32 mode does
  tf32   TF32 allowed for matrix products (fp32 storage, tensor cores)
  bf16   torch.autocast(dtype=torch.bfloat16) around forward and loss (mixed precision, fp32
         weights), TF32 off for the rest

Each mode runs eagerly (PyTorch's default) and, on CUDA, as a CUDA graph: the whole step captured
once and replayed (PyTorch's "whole network capture" recipe of torch.cuda.graphs: warm-up on a side
stream, zero_grad(set_to_none=True), then forward, loss, backward and optimizer step inside
torch.cuda.graph) with the optimizer made capturable=True (Adam, AdamW; SGD needs nothing), the
fastest way PyTorch has to run a small step. --graphs eager,graph chooses.

A step is zero_grad, forward, loss, backward, optimizer step. Times come from the host clock
around `inner` steps followed by torch.cuda.synchronize() (inner chosen so that a sample lasts at
least --min-sample seconds), after warm-up steps that take cuBLAS's first-call costs. Peak memory
is torch.cuda.max_memory_allocated() since a reset just before the model is made: the tensors,
not the caching allocator's reserve, like bp_device_get_stats' peak in `backprop bench`.

--device cpu runs the same code on the CPU (there tf32 changes nothing and says so): it exists
to check this script without a GPU, and its figures are no GPU result.

usage: torch_mlp_cuda.py [--config S,M,L,XL] [--modes fp32,tf32,bf16] [--graphs eager,graph]
                         [--repeats 5]
                         [--warmup 3] [--min-sample 0.1] [--device cuda] [--json FILE]
"""
import argparse
import contextlib
import itertools
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mlp import CONFIGS, make_model  # noqa: E402  (one definition of the configs)

MODES = ("fp32", "tf32", "bf16")
GRAPHS = ("eager", "graph")


def set_mode(mode):
    """TF32 on only in tf32 mode; returns the context the forward pass runs in."""
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if mode == "bf16":
        return lambda: torch.autocast(device_type=DEVICE.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def captured(step, opt, model, x, y, loss_fn, autocast):
    """The step as a CUDA graph (torch.cuda.graphs' whole-network recipe); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return graph.replay


def bench(name, mode, graphed, repeats, warmup, min_sample):
    widths, batch, opt_name = CONFIGS[name]
    torch.manual_seed(1)
    autocast = set_mode(mode)
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, opt = make_model(widths, opt_name, DEVICE, "capturable" if graphed else "plain")
    x = torch.rand(batch, widths[0], device=DEVICE) * 2 - 1
    y = torch.randint(0, widths[-1], (batch,), device=DEVICE)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    if graphed:
        step = captured(step, opt, model, x, y, loss_fn, autocast)
    inner = 1
    for _ in range(warmup + 1):
        t0 = time.perf_counter()
        step()
        sync()
        one = time.perf_counter() - t0
        inner = max(1, min(1000, int(min_sample / one + 0.999))) if one > 0 else 1000
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        sync()
        times.append((time.perf_counter() - t0) / inner)
    times.sort()
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    peak = torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else None
    row = {"config": name, "mode": mode, "graph": graphed, "batch": batch, "optimizer": opt_name,
           "step_median_s": med, "step_min_s": times[0], "step_max_s": times[-1],
           "samples_per_s": batch / med, "steps_per_sample": inner, "repeats": repeats,
           "peak_bytes": peak}
    if mode == "tf32" and DEVICE.type != "cuda":
        row["note"] = "tf32 has no effect on the CPU: this is fp32"
    del model, opt, x, y
    return row


def main():
    global DEVICE
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="S,M,L,XL")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--graphs", default=None,
                    help="eager,graph (default: both on CUDA, eager on the CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-sample", type=float, default=0.1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    a = ap.parse_args()
    modes = a.modes.split(",")
    for m in modes:
        if m not in MODES:
            ap.error("--modes: '%s' is not one of %s" % (m, ", ".join(MODES)))
    for c in a.config.split(","):
        if c not in CONFIGS:
            ap.error("--config: '%s' is not one of %s" % (c, ", ".join(CONFIGS)))
    DEVICE = torch.device(a.device)
    graphs = (a.graphs or (",".join(GRAPHS) if DEVICE.type == "cuda" else "eager")).split(",")
    for g in graphs:
        if g not in GRAPHS:
            ap.error("--graphs: '%s' is not one of %s" % (g, ", ".join(GRAPHS)))
        if g == "graph" and DEVICE.type != "cuda":
            ap.error("--graphs: 'graph' needs --device cuda (CUDA graphs)")
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("torch_mlp_cuda.py: torch %s sees no CUDA device" % torch.__version__,
              file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print("torch %s (CUDA %s) on %s; modes %s; warm-up %d, repeats %d, min sample %.3g s" % (
        torch.__version__, torch.version.cuda, name, ",".join(modes), a.warmup, a.repeats,
        a.min_sample))
    rows = []
    for c, m, g in itertools.product(a.config.split(","), modes, graphs):
        r = bench(c, m, g == "graph", a.repeats, a.warmup, a.min_sample)
        peak = "%.1f MiB" % (r["peak_bytes"] / 2**20) if r["peak_bytes"] is not None else "n/a"
        print("%-4s %-4s %-5s step %9.3f ms (min %.3f, max %.3f; %d samples of %d steps): "
              "%11.0f samples/s, peak %s" % (
                  c, m, g, r["step_median_s"] * 1e3, r["step_min_s"] * 1e3,
                  r["step_max_s"] * 1e3, r["repeats"], r["steps_per_sample"],
                  r["samples_per_s"], peak))
        sys.stdout.flush()
        rows.append(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "cuda": torch.version.cuda, "device": name,
                       "rows": rows}, f, indent=1)
    return 0


DEVICE = None
if __name__ == "__main__":
    sys.exit(main())
