#!/usr/bin/python3
"""`backprop train --data fashion-mnist` in PyTorch: the same model and run, for time and accuracy.

784-256-128-10 ReLU (nn.Linear default init), AdamW lr 1e-3 weight decay 1e-4, cosine schedule
stepped per batch over all 12 epochs down to 0, cross-entropy with label smoothing 0.1, batch 128
reshuffled each epoch (last partial batch kept), 10% of the training set held out for validation
and evaluated after each epoch, pixels scaled by one mean and standard deviation of the training
split ("global" scaling). Data read from the IDX files with numpy + gzip, all in memory.

Prints the per-epoch table, the training time (the epochs, validation included, as `backprop
train` reports it), the time in all (from the start of main: loading too) and the test accuracy.

usage: torch_fashion.py [--threads N] [--epochs 12] [--dir /usr/share/datasets/fashion-mnist]
"""
import argparse
import gzip
import math
import os
import time

import numpy as np
import torch


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0: default")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: the forward and loss under torch.autocast (bfloat16)")
    ap.add_argument("--fused", action="store_true", help="AdamW(fused=True)")
    a = ap.parse_args()
    bf16 = a.precision == "bf16"
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d = a.dir
    xtr = idx(os.path.join(d, "train-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32)
    ytr = idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xte = idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32)
    yte = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(len(xtr))
    nval = int(round(0.1 * len(xtr)))
    val_i, tr_i = perm[:nval], perm[nval:]
    xval, yval, xtr, ytr = xtr[val_i], ytr[val_i], xtr[tr_i], ytr[tr_i]
    mean, std = float(xtr.mean(dtype=np.float64)), float(xtr.std(dtype=np.float64))
    xtr, xval, xte = [torch.from_numpy((x - mean) / std) for x in (xtr, xval, xte)]
    ytr, yval, yte = [torch.from_numpy(y) for y in (ytr, yval, yte)]

    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4,
                            **({"fused": True} if a.fused else {}))
    batch = 128
    steps = math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * a.epochs, eta_min=0.0)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def evaluate(x, y):
        model.eval()
        with torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = torch.cat([model(x[i:i + 1024]).float() for i in range(0, len(x), 1024)])
        model.train()
        return loss_fn(out, y).item(), (out.argmax(1) == y).double().mean().item() * 100

    print("torch %s, %d threads, %s%s; %d train / %d val / %d test" % (
        torch.__version__, torch.get_num_threads(), a.precision, ", fused AdamW" if a.fused else "",
        len(xtr), len(xval), len(xte)))
    print("epoch  train loss    val loss    val acc      time")
    t0 = time.perf_counter()
    for ep in range(a.epochs):
        te = time.perf_counter()
        order = torch.randperm(len(xtr))
        total, n = 0.0, 0
        for s in range(steps):
            idx_b = order[s * batch:(s + 1) * batch]
            xb, yb = xtr[idx_b], ytr[idx_b]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx_b)
            n += len(idx_b)
        vl, va = evaluate(xval, yval)
        print("%5d  %10.4f  %10.4f  %8.2f%%  %7.1fs" % (ep + 1, total / n, vl, va,
                                                       time.perf_counter() - te))
    train_s = time.perf_counter() - t0
    tl, ta = evaluate(xte, yte)
    print("done: %d epochs, %.1f s of training (%.1f s in all); test loss %.4f, accuracy %.2f%%"
          % (a.epochs, train_s, time.perf_counter() - t_start, tl, ta))


if __name__ == "__main__":
    main()
