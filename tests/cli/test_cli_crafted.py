#!/usr/bin/env python3
"""Data files crafted so that their sizes multiply past 2^64 and wrap to a count the body
matches (issue 18): train, eval and predict refuse each with exit 1 and a message naming the file
and the size, never a crash. An NPY of shape (2^32 + 65536, 2^32 - 65535) with a 256 KiB body;
an IDX of 65537 x 65536 x 4294901761, plain and gzip.

usage: test_cli_crafted.py [path/to/backprop]"""
import gzip
import os
import struct

from clitest import blobs, check, finish, run, tempdir, write_csv, write_npy

A, B = (1 << 32) + 65536, (1 << 32) - 65535  # A * B = 2^64 + 65536


def idx(dims, body):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(
        struct.pack(">I", d) for d in dims) + body


def refused(name, r, path, field):
    check(name, r.rc == 1 and path in r.err and field in r.err and "2^48" in r.err, r)


with tempdir() as d:
    x, y = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
    write_npy(x, [0.0] * 65536, (A, B), "<f4")
    write_npy(y, [0.0] * 65536, (A, B), "<f4")
    model, data = os.path.join(d, "m.st"), os.path.join(d, "d.csv")
    write_csv(data, blobs(40, 1))
    r = run("train", "--train", data, "--epochs", "1", "--save", model, "--quiet")
    check("a model to evaluate with", r.rc == 0, r)
    shape = "shape (%d, %d): size 1 (%d)" % (A, B, B)
    refused("train: NPY features and value targets whose shape wraps",
            run("train", "--train", x, "--targets", y, "--target-kind", "values", "--epochs",
                "1"), x, shape)
    refused("eval: NPY whose shape wraps", run("eval", model, "--input", x, "--targets", y), x,
            shape)
    refused("predict: NPY whose shape wraps",
            run("predict", model, "--input", x, "--output", os.path.join(d, "p.csv")), x, shape)

    images, labels = os.path.join(d, "images.idx"), os.path.join(d, "labels.idx")
    body = idx([65537, 65536, 4294901761], bytes(65536))
    with open(labels, "wb") as f:
        f.write(idx([65537], bytes(65537)))
    for gz in (False, True):
        with open(images, "wb") as f:
            f.write(gzip.compress(body) if gz else body)
        refused("train: IDX images whose sizes wrap%s" % (" (gzip)" if gz else ""),
                run("train", "--train-images", images, "--train-labels", labels, "--epochs",
                    "1"), images, "dimension 2 (size 4294901761)")
finish()
