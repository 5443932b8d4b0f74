#!/usr/bin/env python3
"""Class names, data without labels, standard input and output, and where eval finds a run's
data:

- CSV labels may be text: the classes are the distinct names in byte order (what Python's
  sorted() gives for UTF-8 text), kept in the checkpoint (run.class_names, checksummed), listed
  by info, written by predict, mapped by eval and --resume; a name the model does not know is an
  error naming the file, the row and the name; numbers mixed with names are refused with the
  fix; numeric labels read as before (no names anywhere);
- predict reads data without a target column (a CSV exactly as wide as the model's input, an
  NPY without --targets), from a file or from standard input (-), and writes CSV (or NPY when
  asked, never on a terminal) to standard output (-); labelled data gives the same predictions;
- eval and --resume find the run's relative data paths from the checkpoint's folder, from any
  working directory and after the whole tree is moved.

usage: test_cli_names.py [path/to/backprop]"""
import csv
import io
import json
import math
import os
import pty
import shutil
import struct
import subprocess

from clitest import BIN, blobs, check, checksums, finish, read_npy, run, tempdir, write_npy

NAMES = ["x \"q\", y", "Setosa", "café"]  # a quote and a comma, upper case, UTF-8
SMALL = ["--hidden", "16", "--lr", "0.01", "--batch", "32", "--epochs", "4", "--seed", "3",
         "--quiet"]


def metadata(path):
    """The safetensors __metadata__ of a checkpoint, read with the standard library."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]


def csv_field(s):
    return '"%s"' % s.replace('"', '""') if ("," in s or '"' in s or s != s.strip()) else s


def write_named(path, rows, names=NAMES, header=True, label_of=None):
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write("x0,x1,x2,species\n")
        for r in rows:
            name = label_of(r) if label_of else names[r[3]]
            f.write("%.5f,%.5f,%.5f,%s\n" % (r[0], r[1], r[2], csv_field(name)))


def write_features(path, rows, header=True):
    with open(path, "w") as f:
        if header:
            f.write("x0,x1,x2\n")
        for r in rows:
            f.write("%.5f,%.5f,%.5f\n" % r[:3])


def read_csv_text(text):
    return list(csv.reader(io.StringIO(text)))


def test_names(d):
    write_named(os.path.join(d, "train.csv"), blobs(600, 1))
    write_named(os.path.join(d, "test.csv"), blobs(300, 2))
    r = run("train", "--train", "train.csv", "--test", "test.csv", *SMALL, "--save", "m.st",
            cwd=d)
    check("train on text labels exits 0 with 3 classes", r.rc == 0 and "3 classes" in r.out, r)
    if r.rc != 0:
        return
    order = sorted(set(NAMES))  # code points: the byte order of UTF-8
    check("the documented order is byte order: %s" % order,
          order == ["Setosa", "café", "x \"q\", y"], order)
    meta = metadata(os.path.join(d, "m.st"))
    check("the checkpoint keeps the names in that order (run.class_names, one a line)",
          meta.get("run.class_names") == "\n".join(order), meta.get("run.class_names"))
    check("... under a checksum like every entry", "checksum.meta.run.class_names" in meta,
          sorted(meta)[:5])
    info = run("info", "m.st", cwd=d)
    listed = [l.split(": ", 1)[1] for l in info.out.splitlines() if l.startswith("  ")
              and l.strip()[:2] in ("0:", "1:", "2:") and "linear" not in l]
    check("info lists the names with their indices", info.rc == 0 and listed == order,
          info.out[:600])
    js = run("info", "m.st", "--json", cwd=d)
    check("info --json has them too", js.rc == 0 and json.loads(js.out)["class_names"] == order,
          js)

    truth = [NAMES[row[3]] for row in blobs(300, 2)]
    r = run("predict", "m.st", "--input", "test.csv", "--output", "p.csv", cwd=d)
    with open(os.path.join(d, "p.csv"), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    check("predict writes names: header class,p_<name>... (quoted as CSV needs)",
          r.rc == 0 and rows[0] == ["class"] + ["p_" + n for n in order] and len(rows) == 301, r)
    by_prob = all(x[0] == order[max(range(3), key=lambda j: float(x[1 + j]))] for x in rows[1:])
    check("each row's name is its most probable class", by_prob, rows[:3])
    right = sum(x[0] == t for x, t in zip(rows[1:], truth))
    ev = run("eval", "m.st", "--input", "test.csv", "--json", cwd=d)
    got = json.loads(ev.out) if ev.rc == 0 else {}
    check("eval maps the names: its accuracy is the predicted names' (%d/300)" % right,
          ev.rc == 0 and got.get("accuracy") == right / 300 and right > 200, ev)
    r = run("predict", "m.st", "--input", "test.csv", "--output", "c.npy", "--outputs", "class",
            cwd=d)
    shape, descr, values = read_npy(os.path.join(d, "c.npy"))
    check("NPY classes are indices in the order info lists",
          r.rc == 0 and [order[v] for v in values] == [x[0] for x in rows[1:]], r)

    # A name the model does not know, in eval, predict, train --test and --resume.
    bad = blobs(40, 4)
    write_named(os.path.join(d, "emu.csv"), bad, label_of=lambda row: "emu" if row is bad[6]
                else NAMES[row[3]])
    for cmd in ("eval", "predict"):
        extra = ["--output", "q.csv"] if cmd == "predict" else []
        r = run(cmd, "m.st", "--input", "emu.csv", *extra, cwd=d)
        check("%s: an unknown name is exit 2 naming the file, the row and the name" % cmd,
              r.rc == 2 and "emu.csv': row 7 has class 'emu'" in r.err and "m.st" in r.err, r)
    r = run("train", "--train", "train.csv", "--test", "emu.csv", *SMALL, cwd=d)
    check("train --test: likewise", r.rc == 2 and "emu.csv': row 7 has class 'emu'" in r.err, r)
    r = run("train", "--resume", "m.st", "--train", "emu.csv", "--epochs", "5", "--quiet",
            "--save", "r.st", cwd=d)
    check("--resume: a training name the run does not know is exit 2 naming row and name",
          r.rc == 2 and "emu.csv': row 7 has class 'emu'" in r.err
          and "the run in m.st" in r.err, r)

    # --resume maps the names: 2 epochs + 2 more is bitwise 4 at once.
    r = run("train", "--train", "train.csv", *SMALL[:-3], "--epochs", "4", "--stop-after", "2",
            "--schedule", "constant", "--quiet", "--save", "half.st", cwd=d)
    r2 = run("train", "--resume", "half.st", "--save", "rest.st", "--quiet", cwd=d)
    r3 = run("train", "--train", "train.csv", *SMALL[:-3], "--epochs", "4", "--schedule",
             "constant", "--quiet", "--save", "whole.st", cwd=d)
    a = checksums(run("info", "rest.st", cwd=d).out)
    b = checksums(run("info", "whole.st", cwd=d).out)
    check("--resume of a named run continues bitwise (%s)" % a,
          r.rc == 0 and r2.rc == 0 and r3.rc == 0 and len(a) == 2 and a == b, (r2, a, b))


def test_label_forms(d):
    rows = blobs(300, 5)
    # Numbers mixed with names: refused, with the fix; with it every label is a name.
    write_named(os.path.join(d, "mixed.csv"), rows,
                label_of=lambda row: str(row[3]) if row[3] else "none")
    r = run("train", "--train", "mixed.csv", *SMALL, cwd=d)
    check("names mixed with numbers: exit 2 naming a line of each and --target-kind names",
          r.rc == 2 and "--target-kind names" in r.err and "is a" in r.err and "line" in r.err,
          r)
    r = run("train", "--train", "mixed.csv", *SMALL, "--target-kind", "names", "--save",
            "mixed.st", cwd=d)
    check("--target-kind names reads them all as names",
          r.rc == 0 and json.loads(run("info", "mixed.st", "--json", cwd=d).out)["class_names"]
          == ["1", "2", "none"], r)
    # Numeric labels: as before, no names anywhere.
    with open(os.path.join(d, "num.csv"), "w") as f:
        f.write("x0,x1,x2,label\n" + "".join("%.5f,%.5f,%.5f,%d\n" % r for r in rows))
    r = run("train", "--train", "num.csv", *SMALL, "--save", "num.st", cwd=d)
    p = run("predict", "num.st", "--input", "num.csv", "--output", "num_p.csv", cwd=d)
    with open(os.path.join(d, "num_p.csv")) as f:
        head = f.readline().strip()
        first = f.readline().split(",")[0]
    check("numeric labels: no run.class_names, predict writes indices under class,p0,p1,p2",
          r.rc == 0 and "run.class_names" not in metadata(os.path.join(d, "num.st"))
          and head == "class,p0,p1,p2" and first in ("0", "1", "2")
          and json.loads(run("info", "num.st", "--json", cwd=d).out)["class_names"] is None, p)
    write_named(os.path.join(d, "named.csv"), rows)
    r = run("eval", "num.st", "--input", "named.csv", cwd=d)
    check("a model of indices refuses data with names",
          r.rc == 2 and "class names" in r.err and "class indices" in r.err, r)
    r = run("train", "--train", "num.csv", "--test", "named.csv", *SMALL, cwd=d)
    check("train: test names against training indices is exit 2",
          r.rc == 2 and "class names" in r.err, r)
    r = run("train", "--train", "named.csv", *SMALL, "--classes", "4", cwd=d)
    check("--classes with names: exit 2", r.rc == 2 and "--classes" in r.err, r)
    r = run("train", "--train", "named.csv", *SMALL, "--layers", "3,8,5", cwd=d)
    check("--layers with more outputs than names: exit 2 naming both",
          r.rc == 2 and "5 units" in r.err and "3 class names" in r.err, r)
    # No header: a column of names alone does not make the first row a header.
    write_named(os.path.join(d, "bare.csv"), rows, header=False)
    r = run("train", "--train", "bare.csv", *SMALL, "--val-split", "0", cwd=d)
    check("without a header every row is data (300 train samples)",
          r.rc == 0 and "300 train / 0 val" in r.out, r)
    # Latin-1 bytes: not UTF-8, which checkpoints keep names in.
    with open(os.path.join(d, "latin.csv"), "wb") as f:
        f.write(b"x0,x1,x2,y\n")
        for i, row in enumerate(rows):
            name = b"caf\xe9" if row[3] == 2 else b"tea"
            f.write(b"%.5f,%.5f,%.5f," % row[:3] + name + b"\n")
    first2 = 1 + [row[3] for row in rows].index(2)
    r = run("train", "--train", "latin.csv", *SMALL, cwd=d)
    check("a name that is not UTF-8: exit 2 naming its row and iconv",
          r.rc == 2 and "row %d" % first2 in r.err and "UTF-8" in r.err and "iconv" in r.err, r)


def run_bytes(args, data, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([BIN] + args, input=data, capture_output=True, cwd=cwd, env=env,
                          timeout=120)


def test_unlabeled(d):
    rows = blobs(200, 6)
    write_named(os.path.join(d, "train.csv"), blobs(600, 1))
    r = run("train", "--train", "train.csv", *SMALL, "--save", "m.st", cwd=d)
    if not check("a model to predict with", r.rc == 0, r):
        return
    write_named(os.path.join(d, "lab.csv"), rows)
    write_features(os.path.join(d, "feat.csv"), rows)
    write_features(os.path.join(d, "bare.csv"), rows, header=False)
    flat = [float("%.5f" % v) for row in rows for v in row[:3]]
    write_npy(os.path.join(d, "feat.npy"), flat, (200, 3), "<f4")
    outs = {}
    for name in ("lab.csv", "feat.csv", "bare.csv", "feat.npy"):
        r = run("predict", "m.st", "--input", name, "--output", name + ".out.csv", cwd=d)
        with open(os.path.join(d, name + ".out.csv"), encoding="utf-8") as f:
            outs[name] = f.read()
        check("predict %s exits 0 with 200 predictions" % name,
              r.rc == 0 and len(outs[name].splitlines()) == 201, r)
    check("data without targets (CSV with or without a header, NPY without --targets) gives "
          "the labelled file's predictions, byte for byte",
          outs["feat.csv"] == outs["lab.csv"] == outs["bare.csv"] == outs["feat.npy"])
    r = run("predict", "m.st", "--input", "feat.csv", "--output", "x.csv", "--target-column",
            "x2", cwd=d)
    check("--target-column on data as wide as the model's input: exit 2 saying why",
          r.rc == 2 and "no column is left for a target" in r.err, r)
    r = run("eval", "m.st", "--input", "feat.csv", cwd=d)
    check("eval of data without labels: exit 2 saying eval needs them",
          r.rc == 2 and "needs labels" in r.err, r)
    with open(os.path.join(d, "wide.csv"), "w") as f:
        f.write("".join("%.5f,%.5f,%.5f,1,2,0\n" % row[:3] for row in rows))
    r = run("predict", "m.st", "--input", "wide.csv", "--output", "x.csv", cwd=d)
    check("a file of another width: exit 2 naming both widths",
          r.rc == 2 and "input width 3" in r.err and "5 features" in r.err, r)

    # Standard input and output.
    with open(os.path.join(d, "feat.csv"), "rb") as f:
        text = f.read()
    p = run_bytes(["predict", "m.st", "--input", "-", "--output", "-"], text, d)
    check("predict --input - --output -: stdout is the CSV alone, the note on stderr",
          p.returncode == 0 and p.stdout.decode() == outs["lab.csv"]
          and b"standard output" in p.stderr, p.stderr)
    with open(os.path.join(d, "feat.npy"), "rb") as f:
        npy = f.read()
    p = run_bytes(["predict", "m.st", "--input", "-", "--output", "-"], npy, d)
    check("NPY on standard input is known by its magic", p.returncode == 0
          and p.stdout.decode() == outs["lab.csv"], p.stderr)
    r = run("predict", "m.st", "--input", "feat.csv", "--output", "p.npy", cwd=d)
    p = run_bytes(["predict", "m.st", "--input", "-", "--output", "-", "--output-format", "npy"],
                  text, d)
    with open(os.path.join(d, "p.npy"), "rb") as f:
        check("--output - --output-format npy into a pipe: the NPY file's bytes",
              r.rc == 0 and p.returncode == 0 and p.stdout == f.read(), p.stderr)
    bad = text.replace(b"\n", b"\n1,abc,2\n", 3).split(b"\n1,abc,2\n", 1)
    p = run_bytes(["predict", "m.st", "--input", "-", "--output", "-"],
                  bad[0] + b"\n1,abc,2\n" + bad[1], d)
    check("a bad cell on standard input is named as there, not by a temporary file",
          p.returncode == 1 and b"standard input" in p.stderr and b"/proc" not in p.stderr
          and b"'abc' is not a number" in p.stderr, p.stderr)
    # NPY to a terminal: refused before anything is read.
    master, slave = pty.openpty()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([BIN, "predict", "m.st", "--input", "feat.csv", "--output", "-",
                           "--output-format", "npy"], cwd=d, stdout=slave,
                          stderr=subprocess.PIPE, env=env, timeout=60)
    os.close(slave)
    os.close(master)
    check("--output-format npy to a terminal: exit 2",
          proc.returncode == 2 and b"terminal" in proc.stderr, proc.stderr)
    r = run("predict", "m.st", "--input", "feat.csv", "--output", "p.csv", "--output-format",
            "npy", cwd=d)
    check("--output-format against the extension: exit 2", r.rc == 2 and ".csv" in r.err, r)


def test_paths_from_the_checkpoint(d):
    proj = os.path.join(d, "proj")
    os.makedirs(os.path.join(proj, "data"))
    os.makedirs(os.path.join(proj, "models"))
    write_named(os.path.join(proj, "data", "train.csv"), blobs(600, 1))
    write_named(os.path.join(proj, "data", "test.csv"), blobs(300, 2))
    r = run("train", "--train", "data/train.csv", "--test", "data/test.csv", *SMALL,
            "--stop-after", "2", "--save", "models/m.st", cwd=proj)
    if not check("train with relative paths", r.rc == 0, r):
        return
    meta = metadata(os.path.join(proj, "models", "m.st"))
    check("the checkpoint keeps them relative to its folder",
          meta.get("run.cfg.test") == "../data/test.csv"
          and meta.get("run.cfg.train") == "../data/train.csv", meta.get("run.cfg.test"))
    elsewhere = os.path.join(d, "elsewhere")
    os.makedirs(elsewhere)
    check("(from the other folder, the paths as given do not exist)",
          not os.path.exists(os.path.join(elsewhere, "data", "test.csv")))
    here = run("eval", "models/m.st", "--json", cwd=proj)
    there = run("eval", os.path.join(proj, "models", "m.st"), "--json", cwd=elsewhere)
    check("eval without data from another folder finds the run's test set",
          here.rc == 0 and there.rc == 0 and json.loads(there.out)["accuracy"]
          == json.loads(here.out)["accuracy"] and json.loads(there.out)["samples"] == 300,
          there)
    moved = os.path.join(d, "moved")
    shutil.move(proj, moved)
    there = run("eval", "../moved/models/m.st", "--json", cwd=elsewhere)
    check("... and after the whole tree is moved",
          there.rc == 0 and json.loads(there.out)["accuracy"] == json.loads(here.out)["accuracy"],
          there)
    info = run("info", "../moved/models/m.st", cwd=elsewhere)
    check("info prints the paths as seen from here",
          "  test = ../moved/models/../data/test.csv" in info.out, info.out[-600:])
    r = run("train", "--resume", "../moved/models/m.st", "--quiet", cwd=elsewhere)
    check("--resume from another folder reads the run's training data",
          r.rc == 0 and "done: 4 epochs" in r.out, r)
    meta = metadata(os.path.join(moved, "models", "m.st"))
    check("saved back, the paths stay relative to the checkpoint",
          meta.get("run.cfg.train") == "../data/train.csv", meta.get("run.cfg.train"))


def main():
    with tempdir() as d:
        test_names(d)
    with tempdir() as d:
        test_label_forms(d)
    with tempdir() as d:
        test_unlabeled(d)
    with tempdir() as d:
        test_paths_from_the_checkpoint(d)
    finish()


if __name__ == "__main__":
    main()
