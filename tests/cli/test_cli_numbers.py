#!/usr/bin/env python3
"""Every numeric flag is range checked in the type it ends in, and the error names the flag:

- each numeric flag of src/cli/options.c has cases here (a new one without them fails this
  test), and each of `backprop bench`'s;
- values past the range (1e300 epochs of warm-up or of step size, which once became
  INT64_MIN steps or a decay at every step; a learning rate past FLT_MAX, where the update
  rounds it to float; a width past 2^24; counts past int) exit 2 before any work, naming the
  flag and the range;
- the largest value of each range is accepted (--warmup and --step-size in epochs become a
  positive step count).

usage: test_cli_numbers.py [path/to/backprop]"""
import os
import re

from clitest import blobs, check, finish, run, tempdir, write_csv

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS_C = os.path.join(HERE, "..", "..", "src", "cli", "options.c")

BIG_INT = "9223372036854775808"  # 2^63: past int64
# flag: (command, [bad values])
CASES = {
    "layers": ("train", ["2,16777217,3", "2,0,3", "2,-1,3", "2," + BIG_INT + ",3"]),
    "hidden": ("train", ["16777217", "8,0", "46341," + BIG_INT, "1e3"]),
    "dropout": ("train", ["1", "-0.1", "1e300"]),
    "norm-eps": ("train", ["0", "-1e-5", "1.5", "1e300"]),
    "label-smoothing": ("train", ["1.5", "-1"]),
    "lr": ("train", ["0", "-1", "1e39", "1e300"]),
    "wd": ("train", ["-1", "1e39"]),
    "momentum": ("train", ["1", "-0.5"]),
    "beta1": ("train", ["1", "-1"]),
    "beta2": ("train", ["1", "2"]),
    "eps": ("train", ["0", "1e39"]),
    "warmup": ("train", ["1e300", "1000001", "-1"]),
    "step-size": ("train", ["1e300", "1000001", "0"]),
    "gamma": ("train", ["0", "1.5"]),
    "min-lr": ("train", ["-1", "1e39"]),
    "clip": ("train", ["-1", "1e300"]),
    "clip-value": ("train", ["-1", "1e300"]),
    "accum": ("train", ["0", "4097", BIG_INT]),
    "batch": ("train", ["0", "1048577", "4294967297", BIG_INT]),
    "epochs": ("train", ["0", "1000001", "4294967297", BIG_INT, "1.5"]),
    "seed": ("train", ["-1", "9007199254740992", BIG_INT]),
    "classes": ("train", ["-1", "16777217", "4294967298"]),
    "val-split": ("train", ["1", "-0.1"]),
    "early-stop": ("train", ["-1", "1000001", "4294967297"]),
    "grad-check": ("train", ["-1", "1000000001", "4294967297"]),
    "stop-after": ("train", ["-1", "1000001", "4294967297"]),
    "threads": ("train", ["-1", "4097", "4294967297"]),
    "memory-limit": ("train", ["-1", "9007199254740992", BIG_INT]),
    "start-lr": ("lr-find", ["0", "1e39"]),
    "end-lr": ("lr-find", ["0", "1e39"]),
    "steps": ("lr-find", ["4", "10000001", "4294967301"]),
    "repeats": ("bench", ["0", "1000001", BIG_INT]),  # bench's --warmup: at the end
}
# The largest accepted value of some ranges: a run of one epoch that must start.
ACCEPTED = [("warmup", "1000000"), ("step-size", "1000000"), ("lr", "3.4e38"), ("clip", "3.4e38")]


def numeric_flags():
    with open(OPTIONS_C) as f:
        text = f.read()
    return re.findall(r'\{"([a-z0-9-]+)", OT_(?:FLOAT|INT|LIST)', text)


def main():
    flags = numeric_flags()
    check("options.c has numeric flags to check", len(flags) > 20, flags)
    missing = [f for f in flags if f not in CASES]
    check("every numeric flag has out-of-range cases here", not missing, missing)
    with tempdir() as d:
        write_csv(os.path.join(d, "data.csv"), blobs(60, 1))
        base = ["--train", "data.csv", "--epochs", "1", "--hidden", "4", "--quiet"]
        for flag, (cmd, values) in sorted(CASES.items()):
            for v in values:
                args = [cmd] + base + ["--" + flag, v]
                if cmd == "lr-find":
                    args = [cmd, "--train", "data.csv", "--hidden", "4", "--quiet", "--" + flag, v]
                if cmd == "bench":
                    args = [cmd, "--" + flag, v]
                r = run(*args, cwd=d)
                check("--%s %s: exit 2 naming --%s and its range" % (flag, v, flag),
                      r.rc == 2 and ("--%s:" % flag) in r.err and
                      ("out of range" in r.err or "not an integer" in r.err or
                       "not a list" in r.err) and "epoch" not in r.out, r)
        for flag, v in ACCEPTED:
            r = run("train", *base, "--schedule", "step", "--" + flag, v, cwd=d)
            check("--%s %s (the top of its range) is accepted" % (flag, v),
                  r.rc == 0 and "-9223372036854775808" not in r.err, r)
        r = run("bench", "--warmup", "1000001", cwd=d)
        check("bench --warmup 1000001: exit 2 naming it", r.rc == 2 and "--warmup" in r.err, r)
        r = run("bench", "--threads", "4097", cwd=d)
        check("bench --threads 4097: exit 2 with the range",
              r.rc == 2 and "--threads" in r.err and "[0, 4096]" in r.err, r)
        r = run("bench", "--repeats", "0", cwd=d)
        check("bench --repeats 0: exit 2 naming it", r.rc == 2 and "--repeats" in r.err, r)
    finish()


if __name__ == "__main__":
    main()
