#!/usr/bin/env python3
"""backprop's failures: data that does not fit the model is caught before training with both
numbers named; a missing file is named; a failing run leaves files on disk untouched; the
gradient monitor and the non-finite stop name where; --grad-check prints every layer's norm at
its first check.

usage: test_cli_errors.py [path/to/backprop]"""
import os

from clitest import blobs, check, finish, run, tempdir, write_csv

SMALL = ["--epochs", "1", "--batch", "32", "--quiet"]


def test_fit_checks(d):
    r = run("train", "--train", "train.csv", "--layers", "5,8,3", *SMALL, cwd=d)
    check("--layers input width vs features: exit 2 naming 5 and 3",
          r.rc == 2 and "--layers" in r.err and "input width 5" in r.err and "3 features" in r.err,
          r)
    r = run("train", "--train", "train.csv", "--layers", "3,8,2", *SMALL, cwd=d)
    check("3 classes but 2 outputs: exit 2 naming both",
          r.rc == 2 and "3 classes" in r.err and "2 units" in r.err, r)
    write_csv(os.path.join(d, "wide.csv"), [row[:3] + (0.5, row[3]) for row in blobs(50, 4)],
              header=("a", "b", "c", "d", "label"))
    r = run("train", "--train", "train.csv", "--hidden", "4", "--save", "m.st", *SMALL, cwd=d)
    check("a small model trains", r.rc == 0, r)
    r = run("eval", "m.st", "--input", "wide.csv", cwd=d)
    check("eval on data with 4 features for a 3-input model: exit 2 naming both",
          r.rc == 2 and "input width 3" in r.err and "4 features" in r.err, r)
    rows = [r_[:3] + (7,) for r_ in blobs(20, 5)]
    write_csv(os.path.join(d, "label7.csv"), rows)
    r = run("eval", "m.st", "--input", "label7.csv", cwd=d)
    check("eval on labels up to 7 for 3 outputs: exit 2 naming the row, the label and 3 classes",
          r.rc == 2 and "label7.csv': row 1 has label 7" in r.err and "3 classes" in r.err, r)
    r = run("train", "--train", "train.csv", "--target-kind", "class", "--loss", "mse", *SMALL,
            cwd=d)
    check("--loss mse on class labels: exit 2 with a hint", r.rc == 2 and "--loss mse" in r.err, r)
    r = run("train", "--train", "train.csv", "--target-kind", "values", "--loss", "ce", *SMALL,
            cwd=d)
    check("--loss ce on target values: exit 2 with a hint", r.rc == 2 and "--loss ce" in r.err, r)


def test_missing_files(d):
    r = run("train", "--train", "nope.csv", *SMALL, cwd=d)
    check("a missing --train file: exit 1 naming it",
          r.rc == 1 and "nope.csv" in r.err and "--train" in r.err, r)
    r = run("train", "--train-images", "imgs.idx", "--train-labels", "train.csv", *SMALL, cwd=d)
    check("a missing IDX file is named", r.rc == 1 and "imgs.idx" in r.err, r)
    r = run("train", "--train", "data.parquet", *SMALL, cwd=d)
    check("an unknown extension: exit 2 naming the file",
          r.rc == 2 and "data.parquet" in r.err, r)
    r = run("train", "--data", "cifar-1000", *SMALL, cwd=d)
    check("an unknown named dataset: exit 2", r.rc == 2 and "cifar-1000" in r.err, r)
    r = run("eval", "missing.st", "--input", "train.csv", cwd=d)
    check("a missing checkpoint is named", r.rc == 1 and "missing.st" in r.err, r)
    r = run("train", *SMALL, cwd=d)
    check("no training data: says what to give", r.rc == 2 and "--train FILE" in r.err, r)


def precious(path):
    with open(path, "w") as f:
        f.write("precious\n")


def intact(path):
    with open(path) as f:
        return f.read() == "precious\n"


def test_nothing_overwritten(d):
    for name in ["keep.st", "keep.csv", "keep.png", "pred.csv"]:
        precious(os.path.join(d, name))
    out = ["--save", "keep.st", "--metrics", "keep.csv", "--plot", "keep.png"]
    r = run("train", "--train", "train.csv", "--layers", "5,8,3", *SMALL, *out, cwd=d)
    check("a run failing before training exits 2", r.rc == 2, r)
    r = run("train", "--train", "train.csv", "--scale", "none", "--opt", "sgd", "--lr", "1e30",
            "--hidden", "8", "--grad-check", "0", *SMALL, *out, cwd=d)
    check("a diverging run stops: exit 1 with the library's message and epoch/step",
          r.rc == 1 and "epoch 1, step" in r.err and "bp_train_step" in r.err, r)
    check("... and leaves --save, --metrics and --plot files untouched",
          all(intact(os.path.join(d, n)) for n in ["keep.st", "keep.csv", "keep.png"]))
    r = run("predict", "m.st", "--input", "missing.csv", "--output", "pred.csv", cwd=d)
    check("a failing predict leaves --output untouched",
          r.rc == 1 and intact(os.path.join(d, "pred.csv")), r)
    leftovers = [n for n in os.listdir(d) if n.startswith(".") or ".tmp." in n]
    check("no temporary files left behind", not leftovers, leftovers)


def test_grad_monitor(d):
    write_csv(os.path.join(d, "huge.csv"), blobs(100, 6), scale=1e5)
    r = run("train", "--train", "huge.csv", "--scale", "none", "--hidden", "8", "--grad-check",
            "1", "--opt", "sgd", "--lr", "1e-12", *SMALL, cwd=d)
    check("the gradient monitor warns of exploding gradients naming the layer",
          r.rc == 0 and "layer 0 (3 -> 8) gradient norm" in r.err and "exploding" in r.err, r)
    check("it stops repeating after 3 warnings per layer",
          r.err.count("layer 0 (3 -> 8)") == 3 and "suppressed" in r.err, r)
    head = "gradient norms at step 1, layer 0 to 1:"
    line = [x for x in r.out.splitlines() if x.startswith(head)]
    check("--grad-check given: the first check prints both layers' norms, once",
          len(line) == 1 and len(line[0].split(":")[1].split()) == 2, r)
    r = run("train", "--train", "train.csv", "--hidden", "8", *SMALL, cwd=d)
    check("without --grad-check no norms are printed", r.rc == 0 and "gradient norms" not in r.out,
          r)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "train.csv"), blobs(300, 1))
        test_fit_checks(d)
        test_missing_files(d)
        test_nothing_overwritten(d)
        test_grad_monitor(d)
    finish()


if __name__ == "__main__":
    main()
