#!/usr/bin/env python3
"""backprop: --help everywhere, usage errors (exit 2, the flag named), --config files.

usage: test_cli_usage.py [path/to/backprop]"""
import os

from clitest import blobs, check, finish, run, tempdir, write_csv

COMMANDS = ["train", "eval", "predict", "info", "lr-find", "bench"]


def test_help():
    r = run("--help")
    check("top-level --help exits 0 and lists the commands",
          r.rc == 0 and all(c in r.out for c in COMMANDS), r)
    r = run()
    check("no command: usage on stderr, exit 2", r.rc == 2 and "usage:" in r.err, r)
    for c in COMMANDS:
        r = run(c, "--help")
        check("%s --help exits 0 with its usage" % c,
              r.rc == 0 and r.out.startswith("usage: backprop %s" % c) and "--help" in r.out, r)
        long_lines = [l for l in r.out.splitlines() if len(l) > 100]
        check("%s --help fits in 100 columns" % c, not long_lines, "\n".join(long_lines))
    r = run("help", "train")
    check("'help train' prints train's options", r.rc == 0 and "--layers" in r.out, r)
    r = run("frobnicate")
    check("an unknown command exits 2 naming it", r.rc == 2 and "'frobnicate'" in r.err, r)


def test_usage_errors():
    cases = [
        (["train", "--bogus", "1"], "--bogus", "unknown option"),
        (["train", "--lr", "abc"], "--lr: 'abc' is not a number", None),
        (["train", "--epochs", "1.5"], "--epochs: '1.5' is not an integer", None),
        (["train", "--dropout", "1"], "--dropout: '1' is out of range (must be in [0, 1))", None),
        (["train", "--lr", "-1"], "--lr: '-1' is out of range (must be in (0, ", None),
        (["train", "--act", "relux"], "--act: 'relux' is not one of", None),
        (["train", "--layers", "784,x,10"], "--layers: '784,x,10'", None),
        (["train", "--batch"], "--batch needs a value", None),
        (["eval", "--lr", "0.1"], "--lr: not an option of eval", None),
        (["train", "-x"], "-x", "unknown option"),
        (["train", "stray"], "unexpected argument 'stray'", None),
        (["train", "--nesterov=maybe"], "--nesterov: 'maybe' is not yes or no", None),
        # bench's flags go through the same table
        (["bench", "--quick=maybe"], "--quick: 'maybe' is not yes or no", None),
        (["bench", "--lr", "0.1"], "--lr: not an option of bench", None),
        (["bench", "--only", "all-ops"], "--only: 'all-ops' is not one of all|ops|train", None),
    ]
    for args, needle, extra in cases:
        r = run(*args)
        ok = r.rc == 2 and needle in r.err and (extra is None or extra in r.err)
        check("%s exits 2 naming the flag" % " ".join(args), ok, r)
        check("%s prints one line, no usage dump" % " ".join(args),
              len(r.err.strip().splitlines()) == 1 and r.out == "", r)
    r = run("train", "--lr", "abc")
    check("the message is exactly 'backprop train: --lr: 'abc' is not a number'",
          r.err.strip() == "backprop train: --lr: 'abc' is not a number", r)


def test_config(d):
    write_csv(os.path.join(d, "train.csv"), blobs(300, 1))
    cfg = os.path.join(d, "run.cfg")
    with open(cfg, "w") as f:
        f.write("# a comment\ntrain = train.csv\nhidden = 8\nepochs = 2\n"
                "lr = 0.02   # trailing comment\nbatch = 32\nquiet\noutput = ignored.csv\n")
    r = run("train", "--config", cfg, "--lr", "0.03", cwd=d)
    check("--config is read; a flag overrides it; other commands' keys are skipped",
          r.rc == 0 and "3-8-3 " in r.out and "lr 0.03," in r.out
          and "2 epochs" in r.out, r)
    with open(cfg, "w") as f:
        f.write("train = train.csv\nlr = fast\n")
    r = run("train", "--config", cfg, cwd=d)
    check("a bad value in --config names the file, line and key",
          r.rc == 2 and "run.cfg:2: lr: 'fast' is not a number" in r.err, r)
    with open(cfg, "w") as f:
        f.write("speed = 3\n")
    r = run("train", "--config", cfg, cwd=d)
    check("an unknown key in --config exits 2 naming it",
          r.rc == 2 and "run.cfg:1: unknown option 'speed'" in r.err, r)
    r = run("train", "--config", os.path.join(d, "missing.cfg"), cwd=d)
    check("a missing --config file exits 2 naming it", r.rc == 2 and "missing.cfg" in r.err, r)


def main():
    test_help()
    test_usage_errors()
    with tempdir() as d:
        test_config(d)
    finish()


if __name__ == "__main__":
    main()
