#!/usr/bin/env python3
"""backprop bench: a quick run on a tiny config exits 0 and writes valid JSON; usage errors exit 2.
Speed is never checked here (DESIGN.md: a timing never decides a test).

usage: test_cli_bench.py [path/to/backprop]"""
import json
import os

from clitest import check, finish, run, tempdir


def test_quick_json():
    with tempdir() as d:
        out = os.path.join(d, "bench.json")
        r = run("bench", "--quick", "--config", "tiny,XL", "--repeats", "2", "--json", out,
                timeout=240)
        check("bench --quick --config tiny exits 0", r.rc == 0, r)
        try:
            with open(out) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            check("bench --json writes valid JSON", False, e)
            return
        rows = doc.get("rows", [])
        check("bench --json writes valid JSON", isinstance(rows, list) and rows, doc)
        sections = {row.get("section") for row in rows}
        check("the JSON has limit, op and train rows",
              {"limit", "op", "train"} <= sections, sections)
        tiny = [row for row in rows if row.get("config") == "tiny"]
        check("the tiny config has a positive samples/s and its step split",
              len(tiny) == 1 and tiny[0]["samples_per_s"] > 0 and
              all(k in tiny[0] for k in ("forward_seconds", "backward_seconds",
                                        "update_seconds", "device_peak_bytes")), tiny)
        cpu = doc.get("device") == "cpu"
        check("the tiny row has the device's launches and host waits per step and its graph "
              "switch (none and off on the CPU)",
              len(tiny) == 1 and tiny[0]["launches_per_step"] >= 0 and
              tiny[0]["host_syncs_per_step"] >= 0 and isinstance(tiny[0]["graph"], bool) and
              (not cpu or (tiny[0]["launches_per_step"] == 0 and not tiny[0]["graph"])) and
              "launches and" in r.out and "host waits per step" in r.out, tiny)
        shape = [row for row in rows if row.get("what") == "gemm_step_shapes" and
                 row.get("before_config") == "tiny" and row.get("precision") == "fp32"]
        check("tiny has the SGEMM rate at its own 5 GEMM shapes (2 layers: 2 NT, 2 TN, 1 NN) "
              "and the step's share of it",
              len(shape) == 1 and shape[0]["gemms"] == 5 and shape[0]["gflops"] > 0 and
              len(tiny) == 1 and tiny[0].get("fraction_of_step_shape_gemm", 0) > 0, shape)
        gemm = [row for row in rows if row.get("op") == "gemm"]
        check("the GEMM sweep covers NN, NT and TN",
              {row["case"] for row in gemm} == {"NN", "NT", "TN"}, gemm)
        xl = [row for row in rows if row.get("config") == "XL"]
        if doc.get("device") == "cpu":
            check("XL is skipped on the CPU with the reason",
                  len(xl) == 1 and "skipped" in xl[0] and "GPU only" in r.out, r)


def test_precisions():
    """--precision: a GEMM row and a training row per mode (the CPU runs them as the reference),
    each training row beside the rate of its own GEMM shapes in that mode."""
    with tempdir() as d:
        out = os.path.join(d, "bench.json")
        r = run("bench", "--quick", "--config", "tiny", "--repeats", "2", "--device", "cpu",
                "--precision", "fp32,tf32,bf16", "--json", out, timeout=240)
        check("bench --precision fp32,tf32,bf16 exits 0", r.rc == 0, r)
        try:
            with open(out) as f:
                rows = json.load(f)["rows"]
        except (OSError, ValueError, KeyError) as e:
            check("bench --precision writes valid JSON", False, e)
            return
        modes = ("fp32", "tf32", "bf16")
        train = {row.get("precision") for row in rows if row.get("section") == "train"}
        shape = {row.get("precision") for row in rows if row.get("what") == "gemm_step_shapes"}
        gemm = {row.get("precision") for row in rows if row.get("op") == "gemm"}
        check("a training row per mode", train == set(modes), train)
        check("the step's GEMM rate in each mode", shape == set(modes), shape)
        check("a GEMM sweep column per mode", gemm == set(modes), gemm)
        for m in modes:
            check("the %s training row names its mode" % m, (" adam %s softmax-CE" % m) in r.out,
                  r)
    r = run("bench", "--precision", "fp64", "--device", "cpu")
    check("an unknown precision exits 2 naming it", r.rc == 2 and "'fp64'" in r.err, r)


def test_no_limits():
    """--no-limits: no limit is measured, so no row claims a share of one."""
    r = run("bench", "--only", "train", "--config", "tiny", "--repeats", "2", "--device", "cpu",
            "--no-limits", timeout=120)
    check("bench --no-limits exits 0 with a training row", r.rc == 0 and "samples/s" in r.out, r)
    check("bench --no-limits prints no share of an unmeasured limit",
          "of sgemm limit" not in r.out and "limit time" not in r.out
          and "(no limits measured)" in r.out, r)


def test_usage():
    r = run("bench", "--help")
    check("bench --help exits 0 with its usage",
          r.rc == 0 and r.out.startswith("usage: backprop bench"), r)
    r = run("help", "bench")
    check("'help bench' prints bench's options", r.rc == 0 and "--quick" in r.out, r)
    r = run("bench", "--config", "XXL")
    check("an unknown config exits 2 naming it", r.rc == 2 and "'XXL'" in r.err, r)
    r = run("bench", "--repeats", "0")
    check("--repeats 0 exits 2", r.rc == 2 and "--repeats" in r.err, r)
    r = run("bench", "--bogus")
    check("an unknown flag exits 2 naming it", r.rc == 2 and "--bogus" in r.err, r)
    r = run("--help")
    check("top-level --help lists bench", r.rc == 0 and "bench" in r.out, r)
    for flag, bad in (("--config", "tiny,,S"), ("--config", ",tiny"), ("--precision", "fp32,")):
        r = run("bench", flag, bad, "--device", "cpu")
        check("%s %s: an empty item exits 2 naming it" % (flag, bad),
              r.rc == 2 and ("'%s' has an empty item" % bad) in r.err, r)
    for flag, twice in (("--config", "tiny,S,tiny"), ("--precision", "bf16,bf16")):
        r = run("bench", flag, twice, "--device", "cpu")
        check("%s %s: a name given twice exits 2 naming it" % (flag, twice),
              r.rc == 2 and "is named twice" in r.err, r)
    r = run("bench", "--config", ",".join(["tiny"] * 40), "--device", "cpu")
    check("a --config list past its buffer exits 2, not cut short",
          r.rc == 2 and "the list is longer than" in r.err, r)


if __name__ == "__main__":
    test_usage()
    test_no_limits()
    test_quick_json()
    test_precisions()
    finish()
