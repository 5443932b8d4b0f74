#!/usr/bin/env python3
"""--json on train (the summary at the end), eval and info: standard output holds one JSON
object and nothing else (the table and notes go to standard error), numbers are exact (the
doubles the command computed, so they equal values computed here from the same data), strings
are escaped (quotes, backslashes, control characters, UTF-8; bytes that are not UTF-8 become
U+FFFD), NaN and infinity are null; a failing command prints nothing on standard output.

usage: test_cli_json.py [path/to/backprop]"""
import csv
import json
import math
import os
import struct
import subprocess

from clitest import BIN, blobs, check, checksums, finish, read_npy, run, tempdir, write_csv

TRAIN = ["--hidden", "16,16", "--lr", "0.01", "--batch", "32", "--epochs", "3", "--seed", "3",
         "--quiet"]


def f32(v):
    """v rounded to float32 (and back to a Python float, exactly)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def one_object(text):
    """The JSON object that is all of text (json.loads refuses anything more), else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cross_entropy(z, label, smoothing):
    """Label-smoothed cross-entropy of one row of logits, in double, as PyTorch defines it."""
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    logp = [v - lse for v in z]
    k = len(z)
    return -((1 - smoothing) * logp[label] + smoothing / k * sum(logp))


def test_train_eval_info(d):
    write_csv(os.path.join(d, "train.csv"), blobs(600, 1))
    write_csv(os.path.join(d, "test.csv"), blobs(300, 2))
    r = run("train", "--train", "train.csv", "--test", "test.csv", *TRAIN, "--save", "m.st",
            "--metrics", "m.csv", "--json", cwd=d)
    s = one_object(r.out)
    check("train --json: exit 0 and stdout is one JSON object", r.rc == 0 and s is not None, r)
    if s is None:
        return
    check("... the table and the end line went to stderr",
          "epoch  train loss" in r.err and "done: 3 epochs" in r.err and "done:" not in r.out, r)
    check("the summary: 3 epochs, the widths, the parameters they make, the checkpoint",
          s["epochs"] == 3 and s["model"]["widths"] == [3, 16, 16, 3]
          and s["model"]["parameters"] == 3 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
          and s["checkpoint"] == "m.st" and s["loss_kind"] == "ce" and s["classes"] == 3
          and s["class_names"] is None and s["samples"] == {"train": 540, "val": 60, "test": 300},
          s)
    with open(os.path.join(d, "m.csv")) as f:
        rows = list(csv.reader(f))[1:]
    hist = s["history"]
    close = all(abs(float(row[1]) - h["train_loss"]) <= 5e-6 * abs(h["train_loss"])
                and abs(float(row[3]) - h["val_accuracy"]) <= 5e-6 for row, h in zip(rows, hist))
    check("the history is the --metrics table (which rounds to 6 digits)",
          len(hist) == 3 and [h["epoch"] for h in hist] == [1, 2, 3] and close, (rows, hist))
    check("val accuracy is a count over the 60 validation rows, exactly",
          all(h["val_accuracy"] * 60 == round(h["val_accuracy"] * 60) for h in hist), hist)

    # eval with the training run's batch (the same GEMM shapes): the same doubles.
    e = run("eval", "m.st", "--batch", "32", "--json", cwd=d)
    ev = one_object(e.out)
    check("eval --json: one object, the human line on stderr",
          e.rc == 0 and ev is not None and "accuracy" in e.err, e)
    if ev is None:
        return
    check("eval's loss and accuracy are train's test figures, bit for bit",
          ev["loss"] == s["test"]["loss"] and ev["accuracy"] == s["test"]["accuracy"]
          and ev["samples"] == 300 == s["test"]["samples"], (ev, s["test"]))
    p = run("predict", "m.st", "--input", "test.csv", "--output", "z.npy", "--outputs", "logits",
            cwd=d)
    shape, _, z = read_npy(os.path.join(d, "z.npy"))
    truth = [row[-1] for row in blobs(300, 2)]
    rows_z = [z[3 * i:3 * i + 3] for i in range(300)]
    right = sum(max(range(3), key=lambda j: row[j]) == t for row, t in zip(rows_z, truth))
    smoothing = f32(0.1)  # the checkpoint keeps --label-smoothing as the float32 the loss used
    loss = sum(cross_entropy(row, t, smoothing) for row, t in zip(rows_z, truth)) / 300
    check("the accuracy is right/n computed here from the logits (%d/300), exactly" % right,
          p.rc == 0 and ev["accuracy"] == right / 300, ev)
    # bp_evaluate runs the training loss op (float32 per row, summed in double): within 1e-6.
    check("the loss is the smoothed cross-entropy computed here in double (%.17g vs %.17g)"
          % (loss, ev["loss"]), abs(loss - ev["loss"]) <= 1e-6 * loss, ev)

    i = run("info", "m.st", "--json", cwd=d)
    info = one_object(i.out)
    human = run("info", "m.st", cwd=d)
    check("info --json: one object", i.rc == 0 and info is not None, i)
    if info is None:
        return
    sums = checksums(human.out)
    check("info --json: the checksums, layers and run of the human form",
          [info["optimizer"]["checksum"], info["parameters"]["checksum"]] == sums
          and info["checksums_verified"] is True
          and [l["weight"] for l in info["layers"]] == ["0.weight", "2.weight", "4.weight"]
          and info["run"]["epoch"] == 3 and info["run"]["loss"] == "ce"
          and info["options"]["hidden"] == "16,16" and info["options"]["lr"] == "0.01",
          (info, sums))
    dump = run("info", "m.st", "--json", "--dump-weights", cwd=d)
    weights = one_object(dump.out)
    text = run("info", "m.st", "--dump-weights", cwd=d).out
    printed = [float(l) for l in text.splitlines() if l and (l[0].isdigit() or l[0] == "-")
               and "[" not in l and ":" not in l]
    flat = [v for name in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")
            for v in weights["weights"][name]]
    check("info --json --dump-weights: every parameter, exactly the float32 value (the %.9g "
          "dump rounds to the same floats)", weights is not None
          and len(flat) == len(printed) == 3 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
          and all(f32(v) == v for v in flat) and [f32(v) for v in printed] == flat,
          (len(flat), len(printed)))


def test_nulls_regression_and_failures(d):
    write_csv(os.path.join(d, "train.csv"), blobs(300, 3))
    with open(os.path.join(d, "reg.csv"), "w") as f:
        f.write("a,b,y\n" + "".join("%.3f,%.3f,%.4f\n" % (i / 100, (i * 7 % 13) / 13, i / 37)
                                    for i in range(100)))
    r = run("train", "--train", "reg.csv", "--loss", "mse", "--hidden", "8", "--epochs", "2",
            "--val-split", "0", "--quiet", "--json", "--save", "r.st", cwd=d)
    s = one_object(r.out)
    check("regression: val_mse, no validation (null), no test (null)",
          r.rc == 0 and s is not None and s["loss_kind"] == "mse" and s["classes"] is None
          and s["test"] is None and all(h["val_mse"] is None and h["val_loss"] is None
                                        for h in s["history"]) and s["best_epoch"] is None, r)
    i = one_object(run("info", "r.st", "--json", cwd=d).out)
    check("info: a stored NaN (best_metric without validation) is null, numbers are numbers",
          i is not None and i["run"]["best_metric"] is None and i["run"]["epoch"] == 2
          and isinstance(i["run"]["train_seconds"], float), i and i["run"])
    e = one_object(run("eval", "r.st", "--input", "reg.csv", "--json", cwd=d).out)
    check("eval of an MSE model: mse instead of accuracy",
          e is not None and "mse" in e and "accuracy" not in e and e["loss_kind"] == "mse", e)
    for args in (["train", "--train", "missing.csv", "--json"],
                 ["eval", "nothere.st", "--json"], ["info", "nothere.st", "--json"],
                 ["train", "--train", "train.csv", "--lr", "abc", "--json"]):
        r = run(*args, cwd=d)
        check("a failing %s --json prints nothing on stdout (exit %d)" % (args[0], r.rc),
              r.rc != 0 and r.out == "" and r.err, r)


def test_escaping(d):
    names = ['say "hi"', "back\\slash", "tab\there", "snow ☃", "ctl\x01x"]
    rows = blobs(300, 4, classes=3)
    labels = [names[i % 5] for i in range(300)]
    with open(os.path.join(d, "t.csv"), "w", encoding="utf-8") as f:
        f.write("x0,x1,x2,y\n")
        for row, name in zip(rows, labels):
            f.write("%.5f,%.5f,%.5f,\"%s\"\n" % (row[0], row[1], row[2], name.replace('"', '""')))
    ckpt = 'm "q" \\ ☃.st'
    r = run("train", "--train", "t.csv", "--hidden", "8", "--epochs", "1", "--quiet", "--json",
            "--save", ckpt, cwd=d)
    s = one_object(r.out)
    check("train --json parses with quotes, backslashes, a tab, a control character and "
          "UTF-8 in the class names and the file name",
          r.rc == 0 and s is not None and s["class_names"] == sorted(names)
          and s["checkpoint"] == ckpt, r)
    i = one_object(run("info", ckpt, "--json", cwd=d).out)
    check("info --json: the same strings back", i is not None and i["checkpoint"] == ckpt
          and i["class_names"] == sorted(names), i)
    raw = run("info", ckpt, "--json", cwd=d).out
    check("control characters are escaped (\\t, \\u0001), not written raw",
          "\\t" in raw and "\\u0001" in raw and "\t" not in raw and "\x01" not in raw, raw[:300])
    # A file name that is not UTF-8: U+FFFD in its place, still valid JSON.
    bad = b"m\xff.st"
    os.rename(os.path.join(d, ckpt).encode(), os.path.join(d.encode(), bad))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    p = subprocess.run([BIN, "info", bad, "--json"], cwd=d, capture_output=True, env=env,
                       timeout=60)
    out = json.loads(p.stdout.decode("utf-8")) if p.returncode == 0 else None
    check("a file name that is not UTF-8 comes out as U+FFFD in valid JSON",
          out is not None and out["checkpoint"] == "m\ufffd.st", p.stdout[:200])


def fnv1a64(data):
    """FNV-1a, 64 bits, as its authors define it (offset basis 14695981039346656037)."""
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    return h


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_checksum(d):
    """info's parameter checksum is the standard FNV-1a 64 of the float32 parameters in the
    order --dump-weights prints them, as text and as JSON."""
    write_csv(os.path.join(d, "train.csv"), blobs(60, 4))
    r = run("train", "--train", "train.csv", "--hidden", "2", "--epochs", "1", "--seed", "5",
            "--quiet", "--save", "m.st", cwd=d)
    check("a 3-2-3 model trains", r.rc == 0, r)
    r = run("info", "m.st", "--dump-weights", cwd=d)
    values = [float(line) for line in r.out.splitlines() if is_number(line)]
    data = b"".join(struct.pack("<f", v) for v in values)
    want = "fnv1a64:%016x" % fnv1a64(data)
    check("%d parameters, checksum %s (FNV-1a 64 computed here)" % (len(values), want),
          len(values) == 3 * 2 + 2 + 2 * 3 + 3 and "parameters: 17, checksum %s\n" % want in r.out,
          r)
    j = one_object(run("info", "m.st", "--json", cwd=d).out)
    check("the JSON checksum is the same",
          j is not None and j["parameters"]["checksum"] == want, j)
    check("FNV-1a 64 of b'a' is af63dc4c8601ec8c (its authors' test vector)",
          fnv1a64(b"a") == 0xaf63dc4c8601ec8c)


def test_norm_names(d):
    """A model with norms and a residual layer: info names each layer's Linear as the
    checkpoint does (bp_checkpoint_tensor), and --dump-weights prints every tensor of the file,
    the norms' too, so the checksum is again the FNV-1a of what it prints."""
    write_csv(os.path.join(d, "train.csv"), blobs(60, 4))
    r = run("train", "--train", "train.csv", "--hidden", "8,8", "--norm", "layernorm",
            "--residual", "--epochs", "1", "--quiet", "--save", "n.st", cwd=d)
    check("a 3-8-8-3 model with norms and a residual layer trains", r.rc == 0, r)
    with open(os.path.join(d, "n.st"), "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    names = [k for k in header if k != "__metadata__" and not k.startswith("optimizer.")]
    text = run("info", "n.st", "--dump-weights", cwd=d).out
    dumped = [l.split(" [")[0] for l in text.splitlines() if l.endswith("]") and " [" in l
              and not l.startswith(" ")]
    check("--dump-weights prints every tensor of the file, by its name",
          sorted(dumped) == sorted(names) and "2.body.1.weight" in dumped, (dumped, names))
    j = one_object(run("info", "n.st", "--json", cwd=d).out)
    check("the layers name their Linear as the file does (layer 1: 2.body.1.weight)",
          j is not None and [l["weight"] for l in j["layers"]] ==
          ["0.weight", "2.body.1.weight", "4.weight"], j and j["layers"])
    values = [float(l) for l in text.splitlines() if l and (l[0].isdigit() or l[0] == "-")
              and "[" not in l and ":" not in l]
    data = b"".join(struct.pack("<f", v) for v in values)
    check("the parameter checksum is the FNV-1a 64 of the dumped values",
          j is not None and j["parameters"]["checksum"] == "fnv1a64:%016x" % fnv1a64(data)
          and j["parameters"]["count"] == len(values), (len(values), j and j["parameters"]))


def main():
    with tempdir() as d:
        test_train_eval_info(d)
    with tempdir() as d:
        test_norm_names(d)
    with tempdir() as d:
        test_nulls_regression_and_failures(d)
    with tempdir() as d:
        test_escaping(d)
    with tempdir() as d:
        test_checksum(d)
    finish()


if __name__ == "__main__":
    main()
