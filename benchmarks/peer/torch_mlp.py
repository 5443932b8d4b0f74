#!/usr/bin/python3
"""The training-step benchmark of `backprop bench` in PyTorch, for comparison.

Same configs (S, M, L; XL is for GPUs: torch_mlp_cuda.py), layer sizes, batch, optimizer, fp32, softmax cross-entropy, one random
batch already in memory; ReLU between layers, nn.Linear's default init. Tries each thread count
in --threads (default 1 and 2) and reports the best. Peak memory: /proc/self/status VmHWM minus
VmRSS after the peak was reset (writing 5 to /proc/self/clear_refs) just before the data, model
and optimizer are created: the same method `backprop bench` uses, so torch's import is not counted.
Only the first run in a process has a meaningful peak (later ones reuse the allocator's memory):
compare.py runs one config and one thread count per process.

PyTorch's faster configurations, each tried on request: --precision bf16 runs the forward and
the loss under torch.autocast("cpu", bfloat16) (fp32 master weights and optimizer, as ours);
--variant fused uses the optimizer's fused=True implementation, foreach its foreach=True one,
compile wraps the model in torch.compile (inductor; the first steps compile, and are warm-up),
fused+compile both.

usage: torch_mlp.py [--config S,M,L] [--threads 1,2] [--repeats 10] [--precision fp32|bf16]
                    [--variant plain|foreach|fused|compile|fused+compile] [--json FILE]
"""
import argparse
import json
import time

import torch

CONFIGS = {
    "S": ([784, 128, 10], 128, "sgd"),
    "M": ([784, 1024, 1024, 10], 256, "adam"),
    "L": ([2048, 2048, 2048, 2048, 10], 512, "adam"),
    "XL": ([8192, 8192, 8192, 8192, 1000], 8192, "adamw"),
    "tiny": ([32, 16, 4], 8, "adam"),
}


def proc_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_model(widths, opt_name, device="cpu", variant="plain"):
    """The MLP (ReLU between layers) and its optimizer, with backprop bench's settings."""
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    kw = {}
    if "fused" in variant:
        kw["fused"] = True
    elif "foreach" in variant:
        kw["foreach"] = True
    if "capturable" in variant and opt_name != "sgd":
        kw["capturable"] = True  # its step count on the device, so a CUDA graph can hold it
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **kw)
    elif opt_name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
    else:  # bp_optim_config_default(BP_OPTIM_ADAMW): lr 1e-3, weight decay 0.01
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **kw)
    return model, opt


def bench(name, threads, repeats, warmup, min_sample, precision="fp32", variant="plain"):
    widths, batch, opt_name = CONFIGS[name]
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    reset_peak()
    base = proc_kb("VmRSS")
    model, opt = make_model(widths, opt_name, variant=variant)
    run = torch.compile(model) if "compile" in variant else model
    x = torch.rand(batch, widths[0]) * 2 - 1
    y = torch.randint(0, widths[-1], (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    bf16 = precision == "bf16"
    if "compile" in variant:
        warmup = max(warmup, 3)  # the first calls compile

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(run(x), y)
        loss.backward()
        opt.step()

    inner = 1
    for _ in range(warmup + 1):
        t0 = time.perf_counter()
        step()
        one = time.perf_counter() - t0
        inner = max(1, min(1000, int(min_sample / one + 0.999))) if one > 0 else 1000
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t0) / inner)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (
        times[len(times) // 2 - 1] + times[len(times) // 2])
    hwm = proc_kb("VmHWM")
    return {"config": name, "threads": threads, "precision": precision, "variant": variant,
            "batch": batch, "step_median_s": med,
            "step_min_s": times[0], "step_max_s": times[-1], "samples_per_s": batch / med,
            "steps_per_sample": inner, "peak_kib": hwm - base}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="S,M,L")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-sample", type=float, default=0.2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--variant", default="plain",
                    choices=["plain", "foreach", "fused", "compile", "fused+compile"])
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    print("torch %s, CPU, %s (%s); threads tried: %s" % (torch.__version__, a.precision,
                                                         a.variant, a.threads))
    for name in a.config.split(","):
        best = None
        for t in [int(v) for v in a.threads.split(",")]:
            r = bench(name, t, a.repeats, a.warmup, a.min_sample, a.precision, a.variant)
            print("%-4s threads %d: step %.3f ms (min %.3f, max %.3f), %.0f samples/s, "
                  "peak %.2f MiB" % (name, t, r["step_median_s"] * 1e3, r["step_min_s"] * 1e3,
                                     r["step_max_s"] * 1e3, r["samples_per_s"],
                                     (r["peak_kib"] or 0) / 1024))
            if rows or best:
                r["peak_kib"] = None  # not the first run in this process: see the docstring
            if best is None or r["samples_per_s"] > best["samples_per_s"]:
                best = r
        print("%-4s best: threads %d, %.0f samples/s, peak %.2f MiB" % (
            name, best["threads"], best["samples_per_s"], (best["peak_kib"] or 0) / 1024))
        rows.append(best)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
