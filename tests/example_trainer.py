#!/usr/bin/env python3
"""Runs examples/train_mlp.c end to end: three Gaussian blobs in 5 dimensions with class names,
the training CSV on standard input and the test CSV from a file. It must stop early or run out
its epochs, keep the best epoch in the checkpoint and reach >= 90% test accuracy on classes whose
centres are 3 standard deviations apart (a Bayes accuracy above 99%, so 90% fails only on a
broken trainer, not on an unlucky draw).

usage: example_trainer.py path/to/train_mlp"""
import os
import random
import re
import subprocess
import sys
import tempfile

NAMES = ["blue", "green", "red"]
CENTRES = [[0, 0, 0, 0, 0], [3, 0, 3, 0, 0], [0, 3, 0, 3, 3]]


def blobs(n, seed):
    rng = random.Random(seed)
    lines = ["a,b,c,d,e,colour"]
    for i in range(n):
        k = i % 3
        x = [c + rng.gauss(0, 1) for c in CENTRES[k]]
        lines.append(",".join("%.5f" % v for v in x) + "," + NAMES[k])
    return "\n".join(lines) + "\n"


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        test = os.path.join(d, "test.csv")
        with open(test, "w") as f:
            f.write(blobs(300, 2))
        ckpt = os.path.join(d, "best.safetensors")
        r = subprocess.run([exe, "-", test, ckpt, "cpu"], input=blobs(600, 1), text=True,
                           capture_output=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        failures = []
        if r.returncode != 0:
            failures.append("exit status %d" % r.returncode)
        epochs = re.findall(r"^epoch +(\d+) .*val loss ([0-9.]+)", r.stdout, re.M)
        final = re.search(r"best epoch (\d+): test loss ([0-9.]+), test accuracy ([0-9.]+)",
                          r.stdout)
        if not epochs or not final:
            failures.append("no epoch lines or no final line")
        else:
            best = int(final.group(1))
            losses = [float(v) for _, v in epochs]
            if best != min(range(len(losses)), key=lambda i: (losses[i], i)):
                failures.append("best epoch %d is not the one of the lowest validation loss" % best)
            if float(final.group(3)) < 0.9:
                failures.append("test accuracy %s < 0.9" % final.group(3))
        if not os.path.exists(ckpt):
            failures.append("no checkpoint at " + ckpt)
        for f in failures:
            print("FAIL:", f)
        print("%d passed, %d failed" % (1 if not failures else 0, 1 if failures else 0))
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
