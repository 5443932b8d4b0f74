#!/usr/bin/python3
"""Writes the PyTorch golden fixtures under tests/golden/ that tests/test_golden.cc replays.

Run:  /usr/bin/python3 tests/make_golden.py     (from anywhere; PyTorch + NumPy, CPU only)

Each case is a small nn.Sequential MLP in float32 with initial weights the script draws (from
torch.manual_seed(seed), nn.Linear's default init), a fixed batch of inputs and targets, one of
torch's losses (reduction "mean") and one of torch's optimizers (with clipping and a learning-rate
scheduler where the case says so), run for STEPS optimizer steps. After each step the fixture holds
the loss of that step (computed before the update) and the whole flat parameter vector after it.
Our library loads the initial weights with bp_model_set_params, so its own initialiser and RNG do
not matter here. Seeds are fixed and torch runs on one thread: running the script again rewrites
the files bit for bit (check with `git diff --exit-code tests/golden`).

Before writing a case the script checks two things and refuses to write it otherwise:
  * conditioning: the same run in float64 (from the same float32 initial weights) stays within
    FP64_BOUND (relative, parameters and loss, every step) of the float32 run. Two correct float32
    implementations can then differ by about twice that, far below the test's tolerance; it rules
    out cases where Adam's m/sqrt(v) turns roundoff in a near-zero gradient into a full step.
  * sensitivity: every feature the case exists to test (momentum, dampening, nesterov, weight
    decay, clipping, label smoothing, the schedule, ...) moves the trajectory by at least
    MIN_EFFECT (relative), i.e. 100x the test's tolerance, so the test fails when it is wrong.
Both numbers are written into each file's comments.

File format (text, one file per case, tests/golden/<case>.txt, UTF-8, '\n' line ends):
  * lines starting with '#' are comments; blank lines are ignored;
  * `key value...` lines: scalars and short lists, whitespace-separated, values as below;
  * `array NAME COUNT` is followed by COUNT numbers, whitespace-separated, over as many lines as
    they take (6 per line here); float32 values are printed with "%.9g", which reads back to the
    identical float32 (strtof); integers (class labels) as plain decimals;
  * the last line is `end`.
Keys (all present in every file):
  format 1 | torch <torch.__version__> | name <case>
  widths <w0> ... <wn>            layer widths, n linear layers
  activations <a1> ... <an>       identity relu leaky_relu sigmoid tanh gelu gelu_tanh silu
  leaky_slope <f>
  loss mse|cross_entropy|bce_logits  |  label_smoothing <f>
  optimizer sgd|adam|adamw
  lr momentum dampening nesterov weight_decay beta1 beta2 eps clip_norm clip_value accum_steps
                                  each `key value`, the fields of bp_optim_config
  schedule constant|step|cosine   and warmup_steps step_size gamma total_steps min_lr (bp_schedule)
  batch <rows> | steps <K>
Arrays:
  x [batch*widths[0]] (row-major)  target [batch] int labels (cross_entropy) or
  [batch*widths[n]] floats (mse, bce_logits)   params.0 [n_params] initial parameters, in
  state_dict order W0 ([out,in] row-major), b0, W1, b1, ...   lr [K] learning rate of each step
  loss [K] loss of step k (before its update)   params.k (k = 1..K) parameters after step k.
"""

import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

STEPS = 5
BATCH = 16
FP64_BOUND = 1e-6  # float32 vs float64 torch, relative, per step
MIN_EFFECT = 1e-3  # what every tested feature must move the trajectory by (test tol 1e-5)
# The erf and tanh forms of GELU differ by < 5e-4 anywhere, so swapping them moves a short run by
# only ~1e-4 (inputs scaled up to reach |x| ~ 2 where they differ most): 10x the tolerance, not
# 100x. tests/test_ops.cc holds each form to the float64 reference pointwise.
GELU_FORMS = 1e-4

ACTS = {
    "identity": lambda s: None,
    "relu": lambda s: nn.ReLU(),
    "leaky_relu": lambda s: nn.LeakyReLU(s),
    "sigmoid": lambda s: nn.Sigmoid(),
    "tanh": lambda s: nn.Tanh(),
    "gelu": lambda s: nn.GELU(),
    "gelu_tanh": lambda s: nn.GELU(approximate="tanh"),
    "silu": lambda s: nn.SiLU(),
}

# Values of bp_optim_config_default / bp_mlp_config_default for the fields a case leaves alone.
BASE = dict(
    widths=[5, 8, 6, 3], activations=["tanh", "relu", "identity"], leaky_slope=0.01,
    loss="cross_entropy", label_smoothing=0.0,
    optimizer="sgd", lr=0.1, momentum=0.0, dampening=0.0, nesterov=0, weight_decay=0.0,
    beta1=0.9, beta2=0.999, eps=1e-8, clip_norm=0.0, clip_value=0.0, accum_steps=1,
    schedule="constant", warmup_steps=0, step_size=0, gamma=0.0, total_steps=0, min_lr=0.0,
    seed=1,
    x_scale=1.0,  # inputs are x_scale * N(0, 1)
    # Not written; only for the sensitivity checks: average micro-batch means with equal weights
    # (what a wrong gradient accumulation would do with uneven micro-batches).
    accum_equal_weights=False,
    # Likewise: clip_norm applied to each parameter tensor separately instead of globally.
    clip_per_tensor=False,
)


def case(name, doc, ablations, **kw):
    c = dict(BASE)
    for k in kw:
        assert k in c, k
    c.update(kw)
    c["name"], c["doc"], c["ablations"] = name, doc, ablations
    return c


CASES = [
    case("sgd_momentum_ce", "SGD lr 0.1 momentum 0.9 (no nesterov), cross-entropy, tanh/relu",
         [("momentum 0", dict(momentum=0.0))], momentum=0.9, seed=11),
    case("sgd_nesterov_wd_mse", "SGD lr 0.1 momentum 0.9 nesterov, weight decay 1e-3, MSE",
         [("no nesterov", dict(nesterov=0)), ("weight decay 0", dict(weight_decay=0.0))],
         widths=[5, 8, 6, 2], activations=["relu", "tanh", "identity"], loss="mse",
         lr=0.1, momentum=0.9, nesterov=1, weight_decay=1e-3, seed=12),
    case("sgd_dampening_ce", "SGD lr 0.1 momentum 0.9 dampening 0.1, cross-entropy",
         [("dampening 0", dict(dampening=0.0))], momentum=0.9, dampening=0.1, seed=13),
    case("sgd_plain_sigmoid_leaky_mse",
         "plain SGD (no momentum, no optimizer state) lr 0.5, leaky ReLU slope 0.1 and sigmoid, "
         "MSE",
         [("leaky slope 0.01", dict(leaky_slope=0.01)), ("lr 0.45", dict(lr=0.45))],
         widths=[5, 8, 6, 2], activations=["leaky_relu", "sigmoid", "identity"],
         leaky_slope=0.1, loss="mse", lr=0.5, seed=14),
    case("adam_wd_ce", "Adam lr 1e-2 weight decay 1e-2 (coupled: g += wd*p), cross-entropy",
         [("weight decay 0", dict(weight_decay=0.0)),
          ("decoupled (AdamW) decay", dict(optimizer="adamw"))],
         optimizer="adam", lr=1e-2, weight_decay=1e-2, seed=15),
    case("adamw_clipnorm_ce",
         "AdamW lr 1e-2 weight decay 0.1, clip_grad_norm_ max_norm 0.1 (clips at every step: "
         "gradient norms 0.35..0.38), cross-entropy. Adam is nearly invariant to the scale of "
         "the gradient, so clipping moves this trajectory by only ~1e-3; sgd_clipnorm_mse tests "
         "clipping where it matters more",
         [("no clipping", dict(clip_norm=0.0)), ("weight decay 0", dict(weight_decay=0.0)),
          ("coupled (Adam) decay", dict(optimizer="adam"))],
         optimizer="adamw", lr=1e-2, weight_decay=0.1, clip_norm=0.1, seed=26),
    case("sgd_clipnorm_mse",
         "SGD lr 0.1 momentum 0.9, clip_grad_norm_ max_norm 0.2 (clips at every step), MSE",
         [("no clipping", dict(clip_norm=0.0)),
          ("clipping each tensor by its own norm", dict(clip_per_tensor=True))],
         widths=[5, 8, 6, 2], activations=["tanh", "relu", "identity"], loss="mse",
         lr=0.1, momentum=0.9, clip_norm=0.2, seed=27),
    case("adam_clipvalue_mse", "Adam lr 1e-2, clip_grad_value_ 0.02, MSE",
         [("no clipping", dict(clip_value=0.0))],
         widths=[5, 8, 6, 2], activations=["tanh", "relu", "identity"], loss="mse",
         optimizer="adam", lr=1e-2, clip_value=0.02, seed=17),
    case("sgd_label_smoothing_ce", "SGD lr 0.1 momentum 0.9, cross-entropy label smoothing 0.1",
         [("label smoothing 0", dict(label_smoothing=0.0))],
         label_smoothing=0.1, momentum=0.9, seed=18),
    case("adam_bce", "Adam lr 1e-2, BCEWithLogitsLoss with soft targets in [0, 1]",
         [("beta1 0.8", dict(beta1=0.8))],
         widths=[5, 8, 6, 4], activations=["relu", "tanh", "identity"], loss="bce_logits",
         optimizer="adam", lr=1e-2, seed=19),
    case("adam_gelu_silu_ce", "Adam lr 1e-2, GELU (erf form) and SiLU, cross-entropy",
         [("GELU tanh form", dict(activations=["gelu_tanh", "silu", "identity"]), GELU_FORMS),
          ("SiLU -> GELU", dict(activations=["gelu", "gelu", "identity"]))],
         activations=["gelu", "silu", "identity"], optimizer="adam", lr=1e-2, x_scale=3.0,
         seed=21),
    case("sgd_gelu_tanh_mse", "SGD lr 0.1 momentum 0.9, GELU tanh approximation, MSE",
         [("GELU erf form", dict(activations=["gelu", "gelu", "identity"]), GELU_FORMS)],
         widths=[5, 8, 6, 2], activations=["gelu_tanh", "gelu_tanh", "identity"], loss="mse",
         momentum=0.9, lr=0.1, x_scale=4.0, seed=30),
    case("sgd_cosine_ce",
         "SGD lr 0.2 momentum 0.9, CosineAnnealingLR(T_max=5, eta_min=0.02) stepped per step = "
         "our cosine, warm-up 0, total_steps 5, min_lr 0.02",
         [("constant lr", dict(schedule="constant")), ("min_lr 0", dict(min_lr=0.0))],
         lr=0.2, momentum=0.9, schedule="cosine", total_steps=5, min_lr=0.02, seed=22),
    case("adam_steplr_mse", "Adam lr 2e-2, StepLR(step_size 2, gamma 0.5) = our step schedule",
         [("constant lr", dict(schedule="constant"))],
         widths=[5, 8, 6, 2], activations=["tanh", "tanh", "identity"], loss="mse",
         optimizer="adam", lr=2e-2, schedule="step", step_size=2, gamma=0.5, seed=23),
    case("sgd_warmup_cosine_ce",
         "SGD lr 0.2 momentum 0.9, 2 warm-up steps then cosine to min_lr 0.01 over total_steps 5: "
         "SequentialLR([LinearLR(1/2, 1, total_iters 1), CosineAnnealingLR(T_max 3, eta_min "
         "0.01)], milestones [2])",
         [("no warm-up", dict(warmup_steps=0))],
         lr=0.2, momentum=0.9, schedule="cosine", warmup_steps=2, total_steps=5, min_lr=0.01,
         seed=24),
    case("sgd_accum3_ce",
         "SGD lr 0.1 momentum 0.9, accum_steps 3 over 16 rows (micro-batches 6, 5, 5): the "
         "reference is torch on the whole batch; our gradient must be that of the mean over all "
         "rows",
         [("micro-batch means weighted equally", dict(accum_equal_weights=True))],
         momentum=0.9, accum_steps=3, seed=25),
]


def our_lr(c, t):
    """The rate of optimizer step t (0-based) by the comment in include/backprop/optim.h."""
    lr, w = c["lr"], c["warmup_steps"]
    if t < w:
        return lr * (t + 1) / w
    u = t - w
    if c["schedule"] == "constant":
        return lr
    if c["schedule"] == "step":
        return lr * c["gamma"] ** (u // c["step_size"])
    big_t = c["total_steps"] - w
    return c["min_lr"] + (lr - c["min_lr"]) * (1 + math.cos(math.pi * min(u, big_t) / big_t)) / 2


def make_scheduler(c, opt):
    s, w = c["schedule"], c["warmup_steps"]
    if s == "constant":
        assert w == 0, "warm-up with a constant schedule is not mapped"
        return None
    if s == "step":
        assert w == 0
        return torch.optim.lr_scheduler.StepLR(opt, step_size=c["step_size"], gamma=c["gamma"])
    if w == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c["total_steps"],
                                                          eta_min=c["min_lr"])
    assert w >= 2, "LinearLR needs total_iters = warmup - 1 >= 1"
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0,
                                             total_iters=w - 1)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c["total_steps"] - w,
                                                     eta_min=c["min_lr"])
    return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[w])


def build(c):
    torch.manual_seed(c["seed"])
    layers = []
    widths = c["widths"]
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        a = ACTS[c["activations"][i]](c["leaky_slope"])
        if a is not None:
            layers.append(a)
    model = nn.Sequential(*layers)
    x = c["x_scale"] * torch.randn(BATCH, widths[0])
    n_out = widths[-1]
    if c["loss"] == "cross_entropy":
        y = torch.randint(0, n_out, (BATCH,))
    elif c["loss"] == "mse":
        y = torch.randn(BATCH, n_out)
    else:
        y = torch.rand(BATCH, n_out)
    return model, x, y


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_fn(c):
    if c["loss"] == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=c["label_smoothing"])
    if c["loss"] == "mse":
        return nn.MSELoss()
    return nn.BCEWithLogitsLoss()


def micro_batches(n, k):
    """Rows split as evenly as possible, the first ones one longer (e.g. 16 over 3: 6, 5, 5)."""
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def run(c, dtype, init=None):
    """Runs the case; returns (initial flat params, [lr], [loss], [flat params after step k])."""
    torch.manual_seed(c["seed"])
    model, x, y = build(c)
    if init is not None:  # the float32 initial weights, exactly
        with torch.no_grad():
            off = 0
            for p in model.parameters():
                p.copy_(init[off:off + p.numel()].reshape(p.shape))
                off += p.numel()
    model = model.to(dtype)
    x = x.to(dtype)
    if c["loss"] != "cross_entropy":
        y = y.to(dtype)
    p0 = flat(model).clone()
    kind = c["optimizer"]
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                              dampening=c["dampening"], nesterov=bool(c["nesterov"]),
                              weight_decay=c["weight_decay"])
    else:
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls(model.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                  weight_decay=c["weight_decay"])
    sched = make_scheduler(c, opt)
    crit = loss_fn(c)
    lrs, losses, params = [], [], []
    for t in range(STEPS):
        lr = opt.param_groups[0]["lr"]
        assert abs(lr - our_lr(c, t)) <= 1e-12 * c["lr"], (c["name"], t, lr, our_lr(c, t))
        lrs.append(lr)
        opt.zero_grad()
        loss = crit(model(x), y)
        if c["accum_equal_weights"]:
            parts = [crit(model(x[a:b]), y[a:b]) for a, b in micro_batches(BATCH,
                                                                            c["accum_steps"])]
            (sum(parts) / len(parts)).backward()
        else:
            loss.backward()
        if c["clip_norm"] > 0 and c["clip_per_tensor"]:
            for p in model.parameters():
                torch.nn.utils.clip_grad_norm_([p], c["clip_norm"])
        elif c["clip_norm"] > 0:
            assert c["clip_value"] == 0
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip_norm"]))
            if not c.get("_ablation"):
                assert norm > c["clip_norm"], (c["name"], "clip_norm does not clip", norm)
        if c["clip_value"] > 0:
            g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            if not c.get("_ablation"):
                frac = float((g.abs() > c["clip_value"]).double().mean())
                assert 0.05 < frac < 0.95, (c["name"], "clip_value clips a fraction", frac)
            torch.nn.utils.clip_grad_value_(model.parameters(), c["clip_value"])
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
        params.append(flat(model).clone())
    return p0, lrs, losses, params


def rel(a, b):
    a = a.double()
    b = b.double()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def fmt32(v):
    return "%.9g" % float(np.float32(v))


def write_array(out, name, values, as_int=False):
    out.append("array %s %d" % (name, len(values)))
    vals = [str(int(v)) if as_int else fmt32(v) for v in values]
    for i in range(0, len(vals), 6):
        out.append(" ".join(vals[i:i + 6]))


def make(c, outdir):
    p0, lrs, losses, params = run(c, torch.float32)
    p0_64, _, losses64, params64 = run(c, torch.float64, init=p0)
    assert torch.equal(p0_64, p0.double())
    fp64_dev = 0.0
    for k in range(STEPS):
        fp64_dev = max(fp64_dev, rel(params[k], params64[k]),
                       abs(losses[k] - losses64[k]) / abs(losses64[k]))
    assert fp64_dev <= FP64_BOUND, (c["name"], "ill-conditioned: float32 vs float64", fp64_dev)

    effects = []
    for ablation in c["ablations"]:
        label, over = ablation[:2]
        need = ablation[2] if len(ablation) > 2 else MIN_EFFECT
        a = dict(c)
        a.update(over)
        a["_ablation"] = True
        _, _, la, pa = run(a, torch.float64, init=p0)
        eff = max(max(rel(pa[k], params64[k]) for k in range(STEPS)),
                  max(abs(la[k] - losses64[k]) / abs(losses64[k]) for k in range(STEPS)))
        assert eff >= need, (c["name"], "feature has too little effect", label, eff)
        effects.append((label, eff))

    out = ["# backprop golden fixture, written by tests/make_golden.py (format in its docstring);",
           "# do not edit by hand: change the script and run it again.",
           "# case: " + c["doc"],
           "# conditioning: the float64 run from the same initial weights stays within "
           "%.1e (relative) of this float32 one" % fp64_dev,
           "# sensitivity (largest relative change of parameters or loss over the steps):"]
    for label, eff in effects:
        out.append("#   %s: %.2e" % (label, eff))
    out += ["format 1", "torch " + torch.__version__, "name " + c["name"],
            "widths " + " ".join(str(w) for w in c["widths"]),
            "activations " + " ".join(c["activations"]),
            "leaky_slope " + fmt32(c["leaky_slope"]),
            "loss " + c["loss"], "label_smoothing " + fmt32(c["label_smoothing"]),
            "optimizer " + c["optimizer"]]
    for k in ("lr", "momentum", "dampening"):
        out.append("%s %s" % (k, fmt32(c[k])))
    out.append("nesterov %d" % c["nesterov"])
    for k in ("weight_decay", "beta1", "beta2", "eps", "clip_norm", "clip_value"):
        out.append("%s %s" % (k, fmt32(c[k])))
    out.append("accum_steps %d" % c["accum_steps"])
    out.append("schedule " + c["schedule"])
    out.append("warmup_steps %d" % c["warmup_steps"])
    out.append("step_size %d" % c["step_size"])
    out.append("gamma " + fmt32(c["gamma"]))
    out.append("total_steps %d" % c["total_steps"])
    out.append("min_lr " + fmt32(c["min_lr"]))
    out.append("batch %d" % BATCH)
    out.append("steps %d" % STEPS)

    torch.manual_seed(c["seed"])
    _, x, y = build(c)
    write_array(out, "x", x.reshape(-1).tolist())
    if c["loss"] == "cross_entropy":
        write_array(out, "target", y.tolist(), as_int=True)
    else:
        write_array(out, "target", y.reshape(-1).tolist())
    write_array(out, "params.0", p0.tolist())
    write_array(out, "lr", lrs)
    write_array(out, "loss", losses)
    for k in range(STEPS):
        write_array(out, "params.%d" % (k + 1), params[k].tolist())
    out.append("end")
    path = os.path.join(outdir, c["name"] + ".txt")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print("%-28s fp64 dev %.1e  %s" % (c["name"], fp64_dev,
                                         ", ".join("%s %.1e" % e for e in effects)))


def main():
    # SequentialLR steps its second scheduler with an explicit epoch at the milestone.
    warnings.filterwarnings("ignore", message="The epoch parameter in ")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
    os.makedirs(outdir, exist_ok=True)
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    for c in CASES:
        make(c, outdir)
    stale = sorted(set(f for f in os.listdir(outdir) if f.endswith(".txt")) -
                   set(n + ".txt" for n in names))
    if stale:
        print("stale fixtures (not written by this script): " + " ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
