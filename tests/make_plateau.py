#!/usr/bin/python3
"""Writes tests/golden/plateau/reduce_lr_on_plateau.txt: PyTorch's ReduceLROnPlateau stepped through sequences of
metrics, which tests/test_plateau.cc replays through bp_optimizer_report_metric.

Run:  /usr/bin/python3 tests/make_plateau.py     (PyTorch, CPU; from anywhere)

Each case is an SGD optimizer (one parameter group, the initial lr a Python float) with a
ReduceLROnPlateau of the case's arguments, stepped once per metric. The file holds, after each
step, the group's lr as torch leaves it: the test compares ours with it exactly, since both form
max(lr * factor, min_lr) and the comparisons in IEEE double. The metrics come from a seeded
generator and include ties, improvements smaller than the threshold, NaN and infinities.

Each case is sensitive: the lr sequence changes when the threshold, the cooldown, the patience
or the factor is changed (each as written in the comments) or the mode is flipped, and it holds
at least two reductions, so a test that ignored any of them fails. The script takes the first
seed of the series generator, counting from the case's, that makes this so.

File format (text, UTF-8, '\\n' line ends): '#' comments; per case the lines
  case NAME
  lr L | mode min|max | threshold T | threshold_mode rel|abs | patience P | cooldown C
  factor F | min_lr M | eps E
  steps N, then N lines `METRIC LR_AFTER` (Python's repr: exact doubles, nan, inf, -inf)
  end
and a first line `torch VERSION`.
"""

import math
import os
import random

import torch

CASES = [
    dict(name="min_rel_patience2", lr=0.1, mode="min", threshold=1e-4, threshold_mode="rel",
         patience=2, cooldown=0, factor=0.5, min_lr=0.0, eps=1e-8, seed=1, kind="loss"),
    dict(name="max_abs_cooldown2", lr=0.05, mode="max", threshold=0.01, threshold_mode="abs",
         patience=1, cooldown=2, factor=0.3, min_lr=0.001, eps=1e-8, seed=2, kind="accuracy"),
    dict(name="min_abs_floor_eps", lr=1e-3, mode="min", threshold=0.02, threshold_mode="abs",
         patience=0, cooldown=1, factor=0.1, min_lr=2e-6, eps=1e-6, seed=3, kind="loss"),
    dict(name="max_rel_negative", lr=0.3, mode="max", threshold=0.05, threshold_mode="rel",
         patience=3, cooldown=0, factor=0.7, min_lr=0.0, eps=1e-8, seed=4, kind="signed"),
]
STEPS = 48


def metrics(case, seed):
    """A noisy series that improves, stalls (with changes below the threshold) and jumps."""
    rng = random.Random(seed)
    out, level = [], 1.0
    for i in range(STEPS):
        phase = (i // 8) % 3
        if phase == 0:
            level *= 0.9 if case["mode"] == "min" else 1.1
        step = level * (case["threshold"] if case["threshold_mode"] == "rel" else 1.0)
        noise = rng.choice([0.0, 0.0, 0.3, -0.3, 2.0]) * (
            step if case["threshold_mode"] == "rel" else case["threshold"])
        value = level + noise
        if case["kind"] == "signed":
            value -= 2.0
        out.append(value)
    # The odd values a run can hand over: a repeat of the last, NaN, inf, -inf.
    out[10] = out[9]
    out[17] = float("nan")
    out[29] = float("inf") if case["mode"] == "min" else float("-inf")
    out[37] = float("-inf") if case["mode"] == "min" else float("inf")
    return out


def run(case, series, **change):
    c = dict(case, **change)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=c["lr"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=c["mode"], factor=c["factor"], patience=c["patience"],
        threshold=c["threshold"], threshold_mode=c["threshold_mode"], cooldown=c["cooldown"],
        min_lr=c["min_lr"], eps=c["eps"])
    lrs = []
    for m in series:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def sensitivity(case, series, lrs):
    """Each argument changes the sequence; the changes tried, for the comments."""
    flips = {
        "threshold": dict(threshold=0.0 if case["threshold"] else 0.1),
        "cooldown": dict(cooldown=case["cooldown"] + 2 if case["cooldown"] == 0 else 0),
        "patience": dict(patience=case["patience"] + 1),
        "mode": dict(mode="max" if case["mode"] == "min" else "min"),
        "factor": dict(factor=case["factor"] / 2),
    }
    lines = []
    for what, change in flips.items():
        other = run(case, series, **change)
        if other == lrs:
            return None
        lines.append(f"{what} {change}: changes the lr at {sum(a != b for a, b in zip(lrs, other))}"
                     f" of {len(lrs)} steps")
    reductions = sum(1 for a, b in zip([case["lr"]] + lrs, lrs) if b != a)
    if reductions < 2:
        return None
    lines.append(f"reductions: {reductions}")
    return lines


def main():
    torch.set_num_threads(1)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "plateau",
                        "reduce_lr_on_plateau.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = ["# backprop golden fixture, written by tests/make_plateau.py (format in its docstring);",
           "# do not edit by hand: change the script and run it again.",
           f"torch {torch.__version__}"]
    for case in CASES:
        # The first seed from the case's whose series every argument matters for.
        for seed in range(case["seed"], case["seed"] + 1000):
            series = metrics(case, seed)
            lrs = run(case, series)
            lines = sensitivity(case, series, lrs)
            if lines:
                break
        else:
            raise SystemExit(f"{case['name']}: no seed makes every argument matter")
        out.append(f"# case {case['name']} (metrics from seed {seed}):")
        out += [f"#   {line}" for line in lines]
        out.append(f"case {case['name']}")
        for key in ("lr", "mode", "threshold", "threshold_mode", "patience", "cooldown",
                    "factor", "min_lr", "eps"):
            v = case[key]
            out.append(f"{key} {v!r}" if isinstance(v, float) else f"{key} {v}")
        out.append(f"steps {len(series)}")
        out += [f"{m!r} {lr!r}" for m, lr in zip(series, lrs)]
        out.append("end")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
