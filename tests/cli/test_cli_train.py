#!/usr/bin/env python3
"""backprop train / eval / predict / info / lr-find on small generated data sets.

usage: test_cli_train.py [path/to/backprop]"""
import csv
import json
import math
import os
import pty
import random
import subprocess

from clitest import (BIN, accuracy_in, blobs, check, checksums, finish, read_npy, run, tempdir,
                     write_csv, write_npy)

TRAIN = ["--hidden", "16,16", "--lr", "0.01", "--batch", "32", "--epochs", "8", "--seed", "3"]


def test_train_csv(d):
    write_csv(os.path.join(d, "train.csv"), blobs(600, 1))
    write_csv(os.path.join(d, "test.csv"), blobs(300, 2))
    r = run("train", "--train", "train.csv", "--test", "test.csv", *TRAIN, "--save", "m.st",
            "--metrics", "m.csv", cwd=d)
    acc = accuracy_in(r.out)
    check("train on CSV exits 0 and reports test accuracy", r.rc == 0 and acc is not None, r)
    check("it learns: test accuracy %s%% > 80%% (chance 33%%)" % acc, acc is not None and acc > 80,
          r)
    check("the table has a row per epoch",
          sum(1 for l in r.out.splitlines() if l.split() and l.split()[0].isdigit()) == 8, r)
    check("the end line gives the training time", "s of training" in r.out, r)
    with open(os.path.join(d, "m.csv")) as f:
        rows = list(csv.reader(f))
    check("--metrics has a header and 8 rows",
          rows[0] == ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
          and len(rows) == 9 and [int(x[0]) for x in rows[1:]] == list(range(1, 9)), rows)
    losses = [float(x[1]) for x in rows[1:]]
    check("the training loss falls (%.3f -> %.3f)" % (losses[0], losses[-1]),
          losses[-1] < 0.7 * losses[0], rows)

    r2 = run("eval", "m.st", "--input", "test.csv", cwd=d)
    check("eval reproduces the test accuracy (%s%% vs %s%%)" % (accuracy_in(r2.out), acc),
          r2.rc == 0 and accuracy_in(r2.out) == acc, r2)
    r3 = run("eval", "m.st", cwd=d)
    check("eval without data uses the run's test set", r3.rc == 0 and accuracy_in(r3.out) == acc,
          r3)

    r = run("predict", "m.st", "--input", "test.csv", "--output", "p.csv", cwd=d)
    with open(os.path.join(d, "p.csv")) as f:
        rows = list(csv.reader(f))
    check("predict writes CSV: header class,p0,p1,p2 and 300 rows",
          r.rc == 0 and rows[0] == ["class", "p0", "p1", "p2"] and len(rows) == 301
          and all(len(x) == 4 for x in rows), r)
    sums_ok = all(abs(sum(float(v) for v in x[1:]) - 1) < 1e-5 for x in rows[1:])
    argmax_ok = all(int(x[0]) == max(range(3), key=lambda j: float(x[1 + j])) for x in rows[1:])
    check("probabilities sum to 1 and class is their argmax", sums_ok and argmax_ok)
    truth = [row[-1] for row in blobs(300, 2)]
    right = sum(int(x[0]) == t for x, t in zip(rows[1:], truth))
    check("predicted classes give the eval accuracy",
          acc is not None and abs(100.0 * right / 300 - acc) < 0.01, (right, acc))

    r = run("predict", "m.st", "--input", "test.csv", "--output", "p.npy", cwd=d)
    shape, descr, values = read_npy(os.path.join(d, "p.npy"))
    check("predict writes NPY float32 [300, 3]", r.rc == 0 and shape == (300, 3) and descr == "<f4",
          (r, shape, descr))
    csv_p = [float(v) for x in rows[1:] for v in x[1:]]
    check("the NPY holds the CSV's probabilities",
          len(values) == 900 and all(abs(a - b) <= 1e-6 for a, b in zip(values, csv_p)))
    csv_c = [int(x[0]) for x in rows[1:]]
    r = run("predict", "m.st", "--input", "test.csv", "--output", "c.npy", "--outputs", "class",
            cwd=d)
    shape, descr, values = read_npy(os.path.join(d, "c.npy"))
    check("predict --outputs class writes NPY int32 [300]",
          r.rc == 0 and shape == (300,) and descr == "<i4" and list(values) == csv_c, r)

    r = run("info", "m.st", cwd=d)
    check("info prints the layers",
          r.rc == 0 and "3-16-16-3" in r.out and "0: linear 3 -> 16" in r.out
          and "2: linear 16 -> 3" in r.out and "scaling = standard" in r.out, r)
    r = run("info", "m.st", "--dump-weights", cwd=d)
    n_values = sum(1 for l in r.out.splitlines() if l and (l[0].isdigit() or l[0] == "-")
                   and "[" not in l and ":" not in l)
    check("info --dump-weights prints every parameter (n = %d)" % n_values,
          r.rc == 0 and n_values == 3 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3, r.out[-400:])


def test_regression_npy(d):
    rng = random.Random(5)
    n = 400
    x = [rng.uniform(-1, 1) for _ in range(2 * n)]
    y = [math.sin(2 * x[2 * i]) + 0.5 * x[2 * i + 1] for i in range(n)]
    write_npy(os.path.join(d, "x.npy"), x, (n, 2), "<f4")
    write_npy(os.path.join(d, "y.npy"), y, (n, 1), "<f4")
    r = run("train", "--train", "x.npy", "--targets", "y.npy", "--loss", "mse", "--hidden", "32",
            "--act", "tanh", "--lr", "0.01", "--batch", "32", "--epochs", "30", "--schedule",
            "constant", "--metrics", "r.csv", "--save", "r.st", "--quiet", cwd=d)
    check("train on NPY with --loss mse exits 0", r.rc == 0, r)
    if r.rc != 0:
        return
    with open(os.path.join(d, "r.csv")) as f:
        rows = list(csv.reader(f))
    mse = [float(x[3]) for x in rows[1:]]
    check("regression: the header says val_mse", rows[0][3] == "val_mse", rows[0])
    check("regression: validation MSE falls below 0.02 (%.4g)" % mse[-1], mse[-1] < 0.02, rows)
    r = run("predict", "r.st", "--input", "x.npy", "--targets", "y.npy", "--output", "y.csv",
            cwd=d)
    with open(os.path.join(d, "y.csv")) as f:
        rows = list(csv.reader(f))
    check("regression predict writes one value column y0",
          r.rc == 0 and rows[0] == ["y0"] and len(rows) == n + 1, r)


def test_lr_find(d):
    write_csv(os.path.join(d, "train.csv"), blobs(600, 1))
    r = run("lr-find", "--train", "train.csv", "--hidden", "16", "--steps", "60", "--batch", "32",
            "--metrics", "lr.csv", cwd=d)
    check("lr-find exits 0 and suggests a rate", r.rc == 0 and "suggested lr:" in r.out, r)
    with open(os.path.join(d, "lr.csv")) as f:
        rows = list(csv.reader(f))
    lrs = [float(x[1]) for x in rows[1:]]
    check("lr-find's curve starts at 1e-7 and grows exponentially",
          rows[0] == ["step", "lr", "loss", "smoothed"] and len(lrs) >= 10
          and abs(lrs[0] - 1e-7) < 1e-12
          and all(abs(lrs[i + 1] / lrs[i] - lrs[1] / lrs[0]) < 1e-3 for i in range(len(lrs) - 1)),
          rows[:5])


def test_early_stop(d):
    # 60 noisy samples and a wide model: the validation loss soon rises.
    write_csv(os.path.join(d, "few.csv"), blobs(60, 9, sigma=2.0))
    r = run("train", "--train", "few.csv", "--hidden", "256,256", "--lr", "0.01", "--batch", "8",
            "--epochs", "300", "--val-split", "0.3", "--early-stop", "3", "--monitor", "loss",
            "--schedule", "constant", "--save", "best.st", "--quiet", cwd=d)
    rows = [l.split() for l in r.out.splitlines() if l.split() and l.split()[0].isdigit()]
    check("--early-stop 3 stops long before 300 epochs",
          r.rc == 0 and "early stop:" in r.out and 3 < len(rows) < 300, r)
    if r.rc != 0 or not rows:
        return
    losses = [float(x[2]) for x in rows]
    best = losses.index(min(losses)) + 1
    check("it stops 3 epochs after the best (epoch %d of %d)" % (best, len(rows)),
          len(rows) == best + 3, r)
    info = run("info", "best.st", cwd=d)
    check("--save keeps the best epoch's checkpoint",
          "  epoch = %d\n" % best in info.out and "restored the best epoch (%d)" % best in r.out,
          info)


def test_progress(d):
    """A terminal gets a bar redrawn with \\r; a pipe gets plain lines only."""
    master, slave = pty.openpty()
    args = [BIN, "train", "--train", "train.csv", "--hidden", "8", "--epochs", "2", "--batch",
            "32"]
    proc = subprocess.Popen(args, cwd=d, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    tty = b"".join(chunks).decode(errors="replace")
    # The bar's widths, fields and resizing are test_cli_progress.py's.
    check("on a terminal: a progress bar with the step, elapsed<ETA and loss, redrawn with \\r",
          proc.returncode == 0 and "\repoch 1/2: " in tty and "17/17 [" in tty
          and "<00:00" in tty and "loss=" in tty, repr(tty[:300]))
    r = run("train", "--train", "train.csv", "--hidden", "8", "--epochs", "2", "--batch", "32",
            cwd=d)
    check("not a terminal: no carriage returns or escapes", r.rc == 0 and "\r" not in r.err
          and "\033" not in r.err, repr(r.err[:300]))


FM = "/usr/share/datasets/fashion-mnist"


def test_idx_and_plot(d):
    """IDX files (Fashion-MNIST's 10k test set as a small training set) and gnuplot."""
    images = os.path.join(FM, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(FM, "t10k-labels-idx1-ubyte.gz")
    if not os.path.exists(images):
        print("SKIP: %s is not installed (Debian: dataset-fashion-mnist)" % images)
        return
    r = run("train", "--train-images", images, "--train-labels", labels, "--hidden", "32",
            "--epochs", "1", "--quiet", "--plot", "fm.png", "--save", "fm.st", cwd=d)
    val = [l.split() for l in r.out.splitlines() if l.split() and l.split()[0] == "1"]
    check("IDX training: 784 features, 10 classes, global scaling",
          r.rc == 0 and "784 features, 10 classes, scaling global" in r.out, r)
    check("IDX training learns in one epoch (val accuracy %s)" % (val[0][3] if val else "?"),
          bool(val) and float(val[0][3].rstrip("%")) > 60, r)
    if any(os.access(os.path.join(p, "gnuplot"), os.X_OK)
           for p in os.environ.get("PATH", "").split(":")):
        with open(os.path.join(d, "fm.png"), "rb") as f:
            check("--plot writes a PNG", f.read(8) == b"\x89PNG\r\n\x1a\n")
    env_path = os.environ["PATH"]
    os.environ["PATH"] = "/nonexistent"
    try:
        r = run("train", "--train-images", images, "--train-labels", labels, "--hidden", "8",
                "--epochs", "1", "--quiet", "--plot", "none.png", cwd=d)
    finally:
        os.environ["PATH"] = env_path
    check("without gnuplot: a warning, no plot, exit 0",
          r.rc == 0 and "gnuplot is not installed" in r.err
          and not os.path.exists(os.path.join(d, "none.png")), r)


def test_norm_residual(d):
    """--norm and --residual build the pre-norm residual blocks (docs/deep-mlp.md): the model line
    and `info` say so, a resumed run ends bitwise where an uninterrupted one does, eval reloads it,
    and --norm-eps out of its range is refused naming the flag."""
    write_csv(os.path.join(d, "nr.csv"), blobs(300, 21))
    opts = ["--train", "nr.csv", "--hidden", "16,16,16", "--norm", "layernorm", "--residual",
            "--epochs", "4", "--batch", "32", "--seed", "5", "--device", "cpu"]
    r = run("train", *opts, "--save", "full.st", cwd=d)
    check("--norm layernorm --residual: trains, and the model line names both",
          r.rc == 0 and "layernorm on 3 layers' inputs, 2 residual layers" in r.out, r)
    i = run("info", "full.st", cwd=d)
    check("info: the checkpoint holds the norms and the residual flags",
          i.rc == 0 and "layernorm on 3 layers' inputs, 2 residual layers" in i.out, i)
    r = run("train", *opts, "--save", "cut.st", "--stop-after", "2", cwd=d)
    r2 = run("train", "--resume", "cut.st", "--quiet", cwd=d)
    a, b = run("info", "full.st", cwd=d), run("info", "cut.st", cwd=d)
    check("resumed after epoch 2: bitwise the uninterrupted run (parameters and optimizer)",
          r.rc in (0, 130) and r2.rc == 0 and checksums(a.out) and
          checksums(a.out) == checksums(b.out), "%s\n%s" % (a.out, b.out))
    e = run("eval", "--checkpoint", "full.st", "--input", "nr.csv", cwd=d)
    check("eval reloads the model", e.rc == 0 and accuracy_in(e.out) is not None, e)
    r = run("train", *opts, "--norm", "rmsnorm", "--norm-eps", "0", cwd=d)
    check("--norm-eps 0 is refused naming the flag", r.rc == 2 and "--norm-eps" in r.err, r)


def metadata(path):
    """The checkpoint's string metadata (its safetensors header's __metadata__)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]


def test_choices(d):
    """Each choice of the flags that name a library enum reaches the model, the optimizer and
    the data: what the checkpoint holds and info prints is the flag's value, and a resumed run
    keeps the scaling."""
    write_csv(os.path.join(d, "ch.csv"), blobs(120, 23))
    base = ["--train", "ch.csv", "--hidden", "4", "--epochs", "2", "--batch", "32", "--quiet",
            "--device", "cpu"]
    for act in ("identity", "relu", "leaky-relu", "sigmoid", "tanh", "gelu", "gelu-tanh", "silu"):
        r = run("train", *base, "--act", act, "--save", "a.st", cwd=d)
        i = run("info", "a.st", cwd=d)
        first = [l for l in i.out.splitlines() if l.startswith("  0: linear")]
        check("--act %s: the hidden layer's activation" % act,
              r.rc == 0 and len(first) == 1 and first[0].endswith(", " + act), i)
    for opt, sched, prec in (("sgd", "constant", "fp32"), ("adam", "step", "tf32"),
                             ("adamw", "cosine", "bf16")):
        r = run("train", *base, "--opt", opt, "--schedule", sched, "--precision", prec, "--save",
                "o.st", cwd=d)
        m = metadata(os.path.join(d, "o.st")) if r.rc == 0 else {}
        check("--opt %s --schedule %s --precision %s: the checkpoint's" % (opt, sched, prec),
              (m.get("optimizer.kind"), m.get("optimizer.schedule.kind"),
               m.get("model.precision")) == (opt, sched, prec), (r, m))
    with open(os.path.join(d, "bin.csv"), "w") as f:  # 0/1 targets: values for mse and bce
        f.write("a,b,y\n" + "".join("%d,%d,%d\n" % (i % 5, i % 3, i % 2) for i in range(64)))
    for loss, data in (("mse", "bin.csv"), ("ce", "ch.csv"), ("bce", "bin.csv")):
        args = ["--train", data] + base[2:] + ["--loss", loss, "--save", "l.st"]
        r = run("train", *args + (["--target-kind", "values"] if data == "bin.csv" else []),
                cwd=d)
        m = metadata(os.path.join(d, "l.st")) if r.rc == 0 else {}
        check("--loss %s: the checkpoint's" % loss, m.get("run.loss") == loss, (r, m))
    for scale in ("none", "minmax", "standard", "global"):
        r = run("train", *base, "--scale", scale, "--save", "s.st", "--stop-after", "1", cwd=d)
        r2 = run("train", "--resume", "s.st", "--quiet", cwd=d)
        i = run("info", "s.st", cwd=d)
        check("--scale %s: kept by the checkpoint and by --resume" % scale,
              r.rc == 0 and r2.rc == 0 and "  scaling = %s\n" % scale in i.out, (r, r2, i))


def main():
    with tempdir() as d:
        test_train_csv(d)
        test_early_stop(d)
        test_progress(d)
    with tempdir() as d:
        test_regression_npy(d)
    with tempdir() as d:
        test_lr_find(d)
    with tempdir() as d:
        test_idx_and_plot(d)
    with tempdir() as d:
        test_norm_residual(d)
    with tempdir() as d:
        test_choices(d)
    finish()


if __name__ == "__main__":
    main()
