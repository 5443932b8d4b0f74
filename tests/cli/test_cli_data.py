#!/usr/bin/env python3
"""Suspicious data is named, not absorbed, and errors point at the fix:

- a label typo (1000000 among labels 0..2) would make a huge model: refused, naming the row and
  the label, unless --classes N; --classes N refuses labels of N and more, naming the row;
- test and evaluation labels never change the model's shape: a label outside the model's classes
  is an error naming the file, the row and the label;
- a single class in the training set is a warning; a target named by a header name that several
  columns share is an error;
- a regression target read as class labels suggests --loss mse; a file whose delimiter is not the
  one given names the delimiters seen; CR-only line ends say how to convert; --accum larger than
  --batch (no talk of ranks); --resume with data of another width names both widths; --batch far
  larger than the training set; predict --outputs a model cannot give;
- numbers in messages as people write them ([1, 1048576], not 1.04858e+06); plurals that agree.

usage: test_cli_data.py [path/to/backprop]"""
import os
import re

from clitest import blobs, check, finish, run, tempdir, write_csv

SMALL = ["--epochs", "1", "--batch", "32", "--hidden", "4", "--quiet"]


def rows_with_label(rows, at, label):
    rows = list(rows)
    rows[at] = rows[at][:3] + (label,)
    return rows


def test_suspicious_labels(d):
    write_csv(os.path.join(d, "typo.csv"), rows_with_label(blobs(300, 1), 56, 1000000))
    r = run("train", "--train", "typo.csv", *SMALL, cwd=d, timeout=300)
    check("a label typo of 1000000 is refused, naming the row and the label, suggesting --classes",
          r.rc == 2 and "typo.csv': row 57 has label 1000000" in r.err and "1000001 classes" in r.err
          and "4 distinct labels" in r.err and "--classes" in r.err and "model:" not in r.out, r)
    write_csv(os.path.join(d, "wide.csv"), rows_with_label(blobs(300, 2), 9, 1500))
    r = run("train", "--train", "wide.csv", *SMALL, cwd=d)
    check("1501 classes from 4 distinct labels: refused", r.rc == 2 and "row 10" in r.err, r)
    r = run("train", "--train", "wide.csv", *SMALL, "--classes", "1501", "--save", "w.st", cwd=d)
    check("... with --classes 1501 it trains 1501 classes",
          r.rc == 0 and re.search(r"model: 3-4-1501 ", r.out) is not None, r)
    r = run("train", "--train", "wide.csv", *SMALL, "--classes", "1000", cwd=d)
    check("--classes 1000 with a label 1500: exit 2 naming the row and the label",
          r.rc == 2 and "wide.csv': row 10 has label 1500, outside the 1000 classes" in r.err
          and "--classes 1000" in r.err, r)
    r = run("train", "--train", "train.csv", *SMALL, "--classes", "5", cwd=d)
    check("--classes 5 for labels 0..2 trains 5 outputs",
          r.rc == 0 and "model: 3-4-5 " in r.out and "5 classes" in r.out, r)
    write_csv(os.path.join(d, "vals.csv"), blobs(50, 3))
    r = run("train", "--train", "vals.csv", "--loss", "mse", "--classes", "3", *SMALL, cwd=d)
    check("--classes with value targets: exit 2", r.rc == 2 and "--classes" in r.err, r)


def test_test_labels(d):
    write_csv(os.path.join(d, "test5.csv"), rows_with_label(blobs(40, 4), 6, 5))
    r = run("train", "--train", "train.csv", "--test", "test5.csv", *SMALL, cwd=d)
    check("a test label beyond the training classes: exit 2 naming the file, row and label",
          r.rc == 2 and "test5.csv': row 7 has label 5" in r.err and "3 classes" in r.err
          and "model:" not in r.out, r)
    r = run("train", "--train", "train.csv", "--test", "test5.csv", "--layers", "3,4,6", *SMALL,
            cwd=d)
    check("... it is fine when the model has outputs for it (--layers 3,4,6)", r.rc == 0, r)
    r = run("train", "--train", "train.csv", *SMALL, "--save", "m.st", cwd=d)
    r = run("eval", "m.st", "--input", "test5.csv", cwd=d)
    check("eval: a label outside the model's classes names the file, row and label",
          r.rc == 2 and "test5.csv': row 7 has label 5" in r.err
          and "3 classes" in r.err and "the model in m.st" in r.err, r)
    r = run("predict", "m.st", "--input", "test5.csv", "--output", "p.csv", cwd=d)
    check("predict: likewise", r.rc == 2 and "row 7 has label 5" in r.err, r)


def test_single_class_and_headers(d):
    write_csv(os.path.join(d, "one.csv"), [row[:3] + (2,) for row in blobs(100, 5)])
    r = run("train", "--train", "one.csv", "--layers", "3,4,3", *SMALL, cwd=d)
    check("a single class is a warning, naming the label",
          r.rc == 0 and "one.csv: every training label is 2" in r.err and "warning" in r.err, r)
    with open(os.path.join(d, "dup.csv"), "w") as f:
        f.write("a,b,a,label\n")
        for row in blobs(50, 6):
            f.write("%.3f,%.3f,%.3f,%d\n" % row)
    r = run("train", "--train", "dup.csv", "--target-column", "a", *SMALL, cwd=d)
    check("--target-column naming a repeated header name: an error naming both columns",
          r.rc != 0 and "'a'" in r.err and "columns 0 and 2" in r.err, r)
    r = run("train", "--train", "dup.csv", "--target-column", "label", *SMALL, cwd=d)
    check("... repeated names nobody asks for are fine", r.rc == 0, r)


def test_errors_with_fixes(d):
    with open(os.path.join(d, "reg.csv"), "w") as f:
        f.write("a,b,y\n")
        for i in range(100):
            f.write("%.3f,%.3f,%.4f\n" % (i / 100, (i * 7 % 13) / 13, i / 37))
    r = run("train", "--train", "reg.csv", *SMALL, cwd=d)
    check("regression targets read as classes: exit 2 suggesting --loss mse",
          r.rc == 2 and "--loss mse" in r.err and "line 3" in r.err, r)
    with open(os.path.join(d, "semi.csv"), "w") as f:
        f.write("a;b;label\n" + "".join("%d;%d;%d\n" % (i, i * 2, i % 2) for i in range(40)))
    r = run("train", "--train", "semi.csv", *SMALL, cwd=d)
    check("a ';' file read with ',': exit 2 naming both delimiters and the flag",
          r.rc == 2 and "no ','" in r.err and "2 of ';'" in r.err and "--delimiter ';'" in r.err, r)
    with open(os.path.join(d, "tabs.csv"), "w") as f:
        f.write("a\tb\tlabel\n" + "".join("%d\t%d\t%d\n" % (i, i * 2, i % 2) for i in range(40)))
    r = run("train", "--train", "tabs.csv", *SMALL, cwd=d)
    check("a tab-separated file: --delimiter tab", r.rc == 2 and "--delimiter tab" in r.err, r)
    with open(os.path.join(d, "mac.csv"), "w", newline="") as f:
        f.write("a,b,label\r" + "".join("%d,%d,%d\r" % (i, i * 2, i % 2) for i in range(40)))
    r = run("train", "--train", "mac.csv", *SMALL, cwd=d)
    check("CR-only line ends: says how to convert them",
          r.rc == 1 and "CR alone" in r.err and "tr '\\r' '\\n'" in r.err, r)
    r = run("train", "--train", "train.csv", *SMALL, "--accum", "8", "--batch", "4", cwd=d)
    check("--accum 8 --batch 4 alone: exit 2 naming both, no talk of ranks",
          r.rc == 2 and "--accum 8 is larger than --batch 4" in r.err and "rank" not in r.err, r)
    r = run("train", "--train", "train.csv", *SMALL, "--save", "w3.st", cwd=d)
    write_csv(os.path.join(d, "four.csv"), [row[:3] + (0.5, row[3]) for row in blobs(50, 7)],
              header=("a", "b", "c", "d", "label"))
    r = run("train", "--resume", "w3.st", "--train", "four.csv", "--epochs", "2", "--quiet", cwd=d)
    check("--resume with data of another width: exit 2 naming both widths",
          r.rc == 2 and "trained on 3 features" in r.err and "four.csv has 4" in r.err, r)
    r = run("train", "--train", "train.csv", "--epochs", "1", "--quiet", "--batch", "100000",
            cwd=d)
    check("--batch 100000 for 270 training samples: exit 2 with the fix",
          r.rc == 2 and "--batch 100000 is larger than the 270 training samples" in r.err
          and "--batch 270" in r.err, r)
    r = run("train", "--train", "reg.csv", "--loss", "mse", *SMALL, "--save", "mse.st", cwd=d)
    for what in ("probs", "class"):
        r = run("predict", "mse.st", "--input", "reg.csv", "--output", "p.csv", "--outputs", what,
                cwd=d)
        check("predict --outputs %s of an MSE model: exit 2 saying why" % what,
              r.rc == 2 and "--loss mse" in r.err and "values" in r.err, r)
    r = run("predict", "mse.st", "--input", "reg.csv", "--output", "p.csv", "--outputs", "logits",
            cwd=d)
    check("... --outputs logits works", r.rc == 0, r)


def test_numbers_and_plurals(d):
    for args, needle in [(["--batch", "0"], "[1, 1048576]"),
                         (["--seed", "-1"], "[0, 9007199254740991]"),
                         (["--accum", "5000"], "[1, 4096]"),
                         (["--classes", "-2"], "[0, 16777216]")]:
        r = run("train", *args, cwd=d)
        check("%s: the range as people write it (%s)" % (" ".join(args), needle),
              r.rc == 2 and needle in r.err and not re.search(r"\de[+-]\d", r.err), r)
    write_csv(os.path.join(d, "ten.csv"), [(i / 10, i % 3) for i in range(10)], header=("x", "y"))
    write_csv(os.path.join(d, "single.csv"), [(0.5, 1)], header=("x", "y"))
    r = run("train", "--train", "ten.csv", "--test", "single.csv", "--batch", "10",
            "--val-split", "0", "--epochs", "1", "--hidden", "2", "--quiet", cwd=d)
    text = r.out + r.err
    check("one epoch of one step, one feature, one test sample: singular words",
          r.rc == 0 and "1 epoch of 1 step" in text and "1 feature," in text
          and "done: 1 epoch," in text and "(1 sample)" in text and "1 test sample," in text, r)
    bad = re.findall(r"\b1 (epochs|steps|samples|features|classes|units|values|labels)\b", text)
    check("no '1 <plural>' anywhere", not bad, bad)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "train.csv"), blobs(300, 1))
        test_suspicious_labels(d)
        test_test_labels(d)
        test_single_class_and_headers(d)
        test_errors_with_fixes(d)
        test_numbers_and_plurals(d)
    finish()


if __name__ == "__main__":
    main()
