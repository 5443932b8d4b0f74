#!/usr/bin/env python3
"""backprop --precision: training in fp32, tf32 and bf16 on the CPU (which runs the GPU's
roundings), the precision kept in checkpoints and shown by info, fixed on --resume, and a bad
value refused.

usage: test_cli_precision.py [path/to/backprop]"""
import os

from clitest import accuracy_in, blobs, check, checksums, finish, run, tempdir, write_csv

BASE = ["--train", "train.csv", "--test", "test.csv", "--hidden", "24,16", "--lr", "0.01",
        "--batch", "32", "--epochs", "6", "--seed", "5", "--device", "cpu", "--quiet"]


def test_modes(d):
    acc = {}
    for mode in ("fp32", "tf32", "bf16"):
        r = run("train", *BASE, "--precision", mode, "--save", mode + ".st", cwd=d)
        acc[mode] = accuracy_in(r.out)
        check("train --precision %s exits 0 and reports test accuracy" % mode,
              r.rc == 0 and acc[mode] is not None, r)
        info = run("info", mode + ".st", cwd=d)
        check("info shows precision %s" % mode,
              info.rc == 0 and ("precision %s" % mode) in info.out, info.out[:300])
        check("the options of a %s run name it (usable as a --config file)" % mode,
              ("precision = %s" % mode) in info.out, info.out)
        e = run("eval", mode + ".st", cwd=d)
        check("eval of the %s checkpoint reproduces its test accuracy" % mode,
              e.rc == 0 and accuracy_in(e.out) == acc[mode], e)
    # 600 points of three blobs, 90% separable: every mode learns them as fp32 does.
    for mode in ("tf32", "bf16"):
        check("%s learns as fp32 does: %s%% vs %s%% (within 3 points)" % (mode, acc[mode],
                                                                      acc["fp32"]),
              None not in acc.values() and abs(acc[mode] - acc["fp32"]) <= 3.0, acc)
    fp, bf = (run("info", m + ".st", cwd=d) for m in ("fp32", "bf16"))
    check("bf16 trains other weights than fp32 (the roundings are real)",
          checksums(fp.out)[1:] != checksums(bf.out)[1:], (checksums(fp.out), checksums(bf.out)))


def test_resume_keeps_the_precision(d):
    r = run("train", *BASE, "--precision", "bf16", "--save", "full.st", cwd=d)
    check("uninterrupted bf16 run", r.rc == 0, r)
    r = run("train", *BASE, "--precision", "bf16", "--stop-after", "2", "--save", "part.st", cwd=d)
    check("bf16 run stopped after epoch 2", r.rc == 0, r)
    r = run("train", "--resume", "part.st", "--precision", "fp32", "--save", "resumed.st",
            "--quiet", cwd=d)
    check("--resume keeps the checkpoint's precision and says so",
          r.rc == 0 and "--precision fp32 is ignored" in r.err, r)
    a, b = (run("info", p, "--dump-weights", cwd=d) for p in ("full.st", "resumed.st"))
    check("resumed bf16 run ends bitwise equal to the uninterrupted one",
          a.rc == 0 and b.rc == 0 and checksums(a.out) == checksums(b.out)
          and "precision bf16" in b.out, (checksums(a.out), checksums(b.out)))


def test_bad_value(d):
    r = run("train", *BASE, "--precision", "fp16", cwd=d)
    check("--precision fp16 is a usage error naming the flag and the choices",
          r.rc == 2 and "--precision: 'fp16' is not one of fp32|tf32|bf16" in r.err, r)
    with open(os.path.join(d, "bad.cfg"), "w") as f:
        f.write("precision = half\n")
    r = run("train", *BASE, "--config", "bad.cfg", cwd=d)
    check("a config file's bad precision names the file, the line and the value",
          r.rc == 2 and "bad.cfg:1: precision: 'half'" in r.err, r)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "train.csv"), blobs(600, 11))
        write_csv(os.path.join(d, "test.csv"), blobs(300, 12))
        test_modes(d)
        test_resume_keeps_the_precision(d)
        test_bad_value(d)
    finish()


if __name__ == "__main__":
    main()
