#!/usr/bin/env python3
"""Helpers of scripts/gpu-check.sh: the parts that read logs and write the report.

    gpucheck.py unpack ARCHIVE DEST            extract a tar archive (xz need not be installed)
    gpucheck.py cases LIST_OUTPUT              gtest --gtest_list_tests output -> full case names
    gpucheck.py select CASES REGEX             case-insensitive regex over full names -> the
                                               names, one a line (gtest filters are case-sensitive
                                               globs; this picks by name, then lists them exactly)
    gpucheck.py tally LOG CASES MODE JSON      accounts a gtest run: MODE gpu (every CUDA case
                                               must run) or dry (no GPU: every CUDA case that
                                               skips must skip for "no CUDA device"); prints
                                               STATUS<TAB>note, writes the details to JSON
    gpucheck.py sanitizer LOG                  the compute-sanitizer summary line of a log
    gpucheck.py note-bench JSON [EAGER_JSON]   one line on `backprop bench --json` output (and the
                                               same rows run with --no-graphs)
    gpucheck.py note-torch JSON                one line on torch_mlp_cuda.py --json output
    gpucheck.py fashion-data DIR               a generated set of Fashion-MNIST's shape (IDX, gz)
    gpucheck.py report STATE REPORT TAILS      the markdown report and the log tails

A CUDA case is one whose full name matches CUDA_CASE (case-insensitive: .../cuda, cuda_*,
CudaDevice.*, CrossDevice.*), or one that skipped because the CUDA backend could not open.
"""
import gzip
import json
import os
import re
import struct
import sys
import tarfile

CUDA_CASE = re.compile(r"cuda|crossdevice", re.I)
# What a skip says when the CUDA backend cannot open (tests/support.h: open_or_reason).
NO_GPU = re.compile(r"backend 'cuda' is not available here|no CUDA device", re.I)
RESULT = re.compile(r"^\[ +(OK|FAILED|SKIPPED) +\] (\S+?)(?:, where GetParam\(\) = .*)? "
                    r"\((\d+) ms\)\s*$")
RUN = re.compile(r"^\[ RUN +\] (\S+)\s*$")


def unpack(archive, dest):
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(archive) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")
        else:
            t.extractall(dest)


def list_cases(text):
    """Full names from --gtest_list_tests: 'Suite.' lines, then indented case names."""
    names, suite = [], None
    for line in text.splitlines():
        if not line.strip() or line.startswith("Running main()"):
            continue
        if not line.startswith(" "):
            suite = line.split("#")[0].strip()
        elif suite:
            names.append(suite + line.split("#")[0].strip())
    return names


def parse_gtest(text):
    """Per case: result (OK, FAILED, SKIPPED), ms and the lines it printed; plus the case that
    was running when the log ends without its result (a crash or a kill)."""
    cases, current, buf = {}, None, []
    for line in text.splitlines():
        m = RUN.match(line)
        if m:
            current, buf = m.group(1), []
            continue
        m = RESULT.match(line)
        if m and current and m.group(2) == current:
            cases[current] = {"result": m.group(1), "ms": int(m.group(3)), "lines": buf}
            current, buf = None, []
            continue
        if current is not None and not line.startswith("========="):
            buf.append(line.rstrip())
    return cases, current


def skip_reason(lines):
    """The message after gtest's 'file:line: Skipped' line."""
    for i, line in enumerate(lines):
        if line.endswith(": Skipped"):
            rest = [x for x in lines[i + 1:] if x.strip()]
            return rest[0].strip() if rest else "(no reason given)"
    return "(no reason given)"


def failure_message(lines):
    for i, line in enumerate(lines):
        if re.search(r": Failure$", line):
            return " ".join(x.strip() for x in lines[i + 1:i + 3] if x.strip())[:300]
    return (" ".join(lines[-2:]) if lines else "no message")[:300]


def is_cuda(name, reason=""):
    return bool(CUDA_CASE.search(name) or (reason and NO_GPU.search(reason)))


def twin_skips_alike(cases, skip):
    """Whether the CPU twin of a skipped CUDA case (/cuda... -> /cpu...) skipped for the same
    reason: a skip the device has nothing to do with (e.g. fp32 covered by another case)."""
    if "/cuda" not in skip["case"]:
        return False
    twin = cases.get(skip["case"].replace("/cuda", "/cpu", 1))
    return bool(twin and twin["result"] == "SKIPPED" and
                skip_reason(twin["lines"]) == skip["reason"])


def tally(log, cases_file, mode, out_json, rc):
    with open(log, errors="replace") as f:
        text = f.read()
    with open(cases_file) as f:
        listed = [x.strip() for x in f if x.strip()]
    cases, running = parse_gtest(text)
    d = {"mode": mode, "rc": rc, "listed": len(listed),
         "ran": sum(1 for n in listed if n in cases), "passed": 0,
         "failed": [], "skipped_cuda": [], "skipped_other": [], "not_run": [],
         "cuda_listed": 0, "cuda_passed": 0, "running_at_end": running}
    for name in listed:
        c = cases.get(name)
        cuda = is_cuda(name)
        d["cuda_listed"] += cuda
        if c is None:
            d["not_run"].append(name)
            continue
        if c["result"] == "OK":
            d["passed"] += 1
            d["cuda_passed"] += cuda
        elif c["result"] == "FAILED":
            d["failed"].append({"case": name, "message": failure_message(c["lines"])})
        else:
            reason = skip_reason(c["lines"])
            key = "skipped_cuda" if is_cuda(name, reason) else "skipped_other"
            d[key].append({"case": name, "reason": reason})
    for name in cases:  # results for cases the list did not name (should not happen)
        if name not in listed and cases[name]["result"] == "FAILED":
            d["failed"].append({"case": name, "message": failure_message(cases[name]["lines"])})
    alike = [s for s in d["skipped_cuda"] if twin_skips_alike(cases, s)]
    d["skipped_cuda"] = [s for s in d["skipped_cuda"] if s not in alike]
    d["skipped_as_on_cpu"] = alike
    wrong_skips = [s for s in d["skipped_cuda"] if not NO_GPU.search(s["reason"])]
    d["cuda_skip_reasons"] = sorted({s["reason"] for s in d["skipped_cuda"]})
    n_skip = len(d["skipped_cuda"]) + len(d["skipped_other"]) + len(alike)
    other = ""
    if d["skipped_other"]:
        other = " (%d not CUDA, listed in the report)" % len(d["skipped_other"])
    if alike:
        other += " (%d CUDA cases skipped as their CPU twins do, for the same reason, listed in " \
                 "the report)" % len(alike)
    head = "%d of %d cases ran: %d passed, %d failed, %d skipped%s" % (
        d["ran"], d["listed"], d["passed"], len(d["failed"]), n_skip, other)
    problems = []
    if d["failed"]:
        problems.append("failing: " + ", ".join(f["case"] for f in d["failed"][:4]) +
                        (" ..." if len(d["failed"]) > 4 else ""))
    if d["not_run"]:
        where = " (the run ended inside %s)" % running if running else ""
        problems.append("%d listed cases have no result%s" % (len(d["not_run"]), where))
    if rc not in (0, None) and not d["failed"] and not d["not_run"]:
        problems.append("exit status %s" % rc)
    if mode == "gpu":
        if d["skipped_cuda"]:
            problems.append("%d CUDA cases skipped, first: %s: %s" % (
                len(d["skipped_cuda"]), d["skipped_cuda"][0]["case"],
                d["skipped_cuda"][0]["reason"][:120]))
        cuda = "; CUDA cases: %d of %d ran and passed" % (d["cuda_passed"], d["cuda_listed"])
    else:
        if wrong_skips:
            problems.append("%d CUDA cases skipped for another reason than no GPU, first: "
                            "%s: %s" % (len(wrong_skips), wrong_skips[0]["case"],
                                        wrong_skips[0]["reason"][:120]))
        cuda = "; CUDA cases: %d skipped for 'no CUDA device' (dry run: no GPU), %d passed " \
               "without one" % (len(d["skipped_cuda"]) - len(wrong_skips), d["cuda_passed"])
    d["status"] = "FAIL" if problems else "PASS"
    d["note"] = head + cuda + ("; " + "; ".join(problems) if problems else "")
    with open(out_json, "w") as f:
        json.dump(d, f, indent=1)
    print("%s\t%s" % (d["status"], d["note"]))


def sanitizer_summary(log):
    with open(log, errors="replace") as f:
        text = f.read()
    found = [m.group(1).strip() for m in re.finditer(
        r"^=+ ((?:ERROR|RACECHECK|LEAK) SUMMARY:.*)$", text, re.M)]
    unsupported = re.search(r"^=+ .*(Device not supported|not supported on this).*$", text,
                            re.M)
    if unsupported:
        print("UNSUPPORTED\t" + unsupported.group(0).lstrip("= ").strip())
    else:
        print("OK\t" + ("; ".join(found[-2:]) if found else "no summary line"))


def step_shape_rows(doc):
    """The rate of each training row's own GEMM shapes, by (config, precision)."""
    return {(r["before_config"], r.get("precision", "fp32")): r for r in doc["rows"]
            if r["section"] == "limit" and r.get("what") in ("gemm_step_shapes",
                                                              "sgemm_step_shapes")}


def step_share(r):
    return r.get("fraction_of_step_shape_gemm", r.get("fraction_of_step_shape_sgemm", 0))


def step_counts(r):
    """A training row's device work per step: launches, host waits, graph or not."""
    if "launches_per_step" not in r:
        return "n/a"
    return "%.1f launches, %.2f waits%s" % (r["launches_per_step"], r.get("host_syncs_per_step", 0),
                                          ", graph" if r.get("graph") else "")


def train_rows(doc):
    return {(r["config"], r.get("precision", "fp32")): r for r in (doc or {}).get("rows", [])
            if r["section"] == "train" and "skipped" not in r}


def note_bench(path, eager_path=None):
    doc = read_json(path)
    if not doc:
        print("no JSON from backprop bench")
        return
    eager = train_rows(read_json(eager_path)) if eager_path else {}
    parts = []
    for r in doc["rows"]:
        if r["section"] != "train":
            continue
        name = "%s %s" % (r["config"], r.get("precision", "fp32"))
        if "skipped" in r:
            parts.append("%s skipped (%s)" % (name, r["skipped"]))
            continue
        share = step_share(r)
        e = eager.get((r["config"], r.get("precision", "fp32")))
        parts.append("%s %.0f samples/s%s, %s%s" % (
            name, r["samples_per_s"],
            " (%.0f%% of its GEMMs at its shapes)" % (100 * share) if share else "",
            step_counts(r),
            "; without graphs %.0f samples/s, %s" % (e["samples_per_s"], step_counts(e))
            if e else ""))
    print("; ".join(parts))


def note_torch(path):
    doc = read_json(path)
    if not doc:
        print("no JSON from torch_mlp_cuda.py")
        return
    by = {}
    for r in doc["rows"]:
        mode = r["mode"] + (" graph" if r.get("graph") else "")
        by.setdefault(r["config"], []).append("%s %.0f" % (mode, r["samples_per_s"]))
    print("torch %s: %s (samples/s)" % (doc.get("torch"), "; ".join(
        "%s %s" % (c, ", ".join(v)) for c, v in by.items())))


# ---- a generated data set of Fashion-MNIST's shape --------------------------------------------
def idx_write(path, data, dims):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, len(dims)))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(data)


def fashion_data(dest):
    """60000 + 10000 images of 28x28 bytes and their labels: each class a fixed random template
    plus noise, so that training has something to learn. It only stands in for the real files'
    shape and size; its accuracy says nothing about Fashion-MNIST."""
    import numpy as np
    rng = np.random.default_rng(1)
    templates = rng.integers(0, 256, size=(10, 784)).astype(np.float32)
    os.makedirs(dest, exist_ok=True)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.normal(0, 60, size=(n, 784)).astype(np.float32)
        images = np.clip(templates[labels] * 0.5 + noise + 64, 0, 255).astype(np.uint8)
        idx_write(os.path.join(dest, prefix + "-images-idx3-ubyte.gz"), images.tobytes(),
                  (n, 28, 28))
        idx_write(os.path.join(dest, prefix + "-labels-idx1-ubyte.gz"), labels.tobytes(), (n,))


# ---- the report -------------------------------------------------------------------------------
def read_kv(path):
    d = {}
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    d.setdefault(k, v)
    return d


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def md(s):
    return str(s).replace("|", "\\|")


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(md(c) for c in r) + " |" for r in rows]
    return out


def parts_of(state):
    rows = []
    path = os.path.join(state, "parts.tsv")
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                p = line.rstrip("\n").split("\t", 3)
                if len(p) == 4:
                    rows.append(p)
    return rows


def bench_section(state, dry):
    doc = read_json(os.path.join(state, "bench.json"))
    if not doc:
        return [], {}
    ours = {}
    lim = {r.get("what"): r for r in doc["rows"] if r["section"] == "limit"
           and "before_config" not in r}
    shape = step_shape_rows(doc)
    eager = train_rows(read_json(os.path.join(state, "bench-nographs.json")))
    near = {r["before_config"]: r for r in doc["rows"] if r["section"] == "limit"
            and r.get("what") == "sgemm_2048" and "before_config" in r}
    rows = []
    for r in doc["rows"]:
        if r["section"] != "train":
            continue
        c, p = r["config"], r.get("precision", "fp32")
        if "skipped" in r:
            rows.append([c, p, "skipped: " + r["skipped"], "", "", "", "", "", "", ""])
            continue
        ours[(c, p)] = r
        e = eager.get((c, p))
        rows.append([c, p, "%s, batch %d, %s" % (r["layers"], r["batch"], r["optimizer"]),
                     "%.0f" % r["samples_per_s"], "%.3f" % (r["step_seconds"]["median"] * 1e3),
                     step_counts(r),
                     "%.0f (%s)" % (e["samples_per_s"], step_counts(e)) if e else "n/a",
                     "%.0f" % r["gflops"],
                     "%.0f (%.0f%%)" % (shape[(c, p)]["gflops"], 100 * step_share(r))
                     if (c, p) in shape else "n/a",
                     "%.0f" % near[c]["gflops"] if c in near else "n/a"])
    out = ["", "## Benchmarks: `backprop bench --quick` (ours, every precision)", ""]
    if dry:
        out += ["Dry run on the CPU: these figures show that the part runs and is read; they are "
                "not GPU results.", ""]
    out.append("Device %s, %s. Limits measured first: SGEMM 2048^3 %s GFLOP/s, copy %s GB/s." % (
        doc.get("device"), doc.get("date"),
        "%.0f" % lim["sgemm_2048"]["gflops"] if "sgemm_2048" in lim else "n/a",
        "%.0f" % lim["copy"]["gbps"] if "copy" in lim else "n/a"))
    out.append("")
    out += table(["config", "precision", "model", "samples/s", "step ms",
                  "per step (bp_device_get_counters)", "without graphs: samples/s (per step)",
                  "GFLOP/s",
                  "its GEMMs alone at the step's shapes, same precision, GFLOP/s (step's share)",
                  "SGEMM 2048^3 just before"], rows)
    return out, ours


def torch_section(state, ours, dry):
    doc = read_json(os.path.join(state, "torch.json"))
    if not doc:
        return []
    by = {}
    for r in doc["rows"]:
        by.setdefault(r["config"], {})[r["mode"]] = r
    out = ["", "## PyTorch on the same device (`benchmarks/peer/torch_mlp_cuda.py`)", ""]
    if dry:
        out += ["Dry run on the CPU: not GPU results (tf32 changes nothing on a CPU).", ""]
    out.append("torch %s (CUDA %s) on %s. Ratio: our samples/s in the same mode (fp32, tf32, "
               "bf16) over PyTorch's (eager fp32, TF32 allowed, bf16 autocast; > 1: ours is "
               "faster)." % (doc.get("torch"), doc.get("cuda"), doc.get("device")))
    out.append("")
    rows = []
    for c, modes in by.items():
        row = [c]
        for m in ("fp32", "tf32", "bf16"):
            o, t = ours.get((c, m)), modes.get(m)
            row.append("%.0f" % o["samples_per_s"] if o else "n/a")
            if not t:
                row += ["", ""]
                continue
            row.append("%.0f" % t["samples_per_s"])
            row.append("%.2f" % (o["samples_per_s"] / t["samples_per_s"]) if o else "n/a")
        rows.append(row)
    out += table(["config", "ours fp32", "torch fp32", "ratio", "ours tf32", "torch tf32",
                  "ratio", "ours bf16", "torch bf16", "ratio"], rows)

    def mib(r, key):
        return "%.1f" % (r[key] / 2**20) if r and r.get(key) is not None else "n/a"
    mem = [[c] + [x for m in ("fp32", "tf32", "bf16")
                  for x in (mib(ours.get((c, m)), "device_peak_bytes"),
                            mib(modes.get(m), "peak_bytes"))]
           for c, modes in by.items()]
    out += ["", "Peak device memory, MiB (ours: bp_device_get_stats; torch: "
            "max_memory_allocated):", ""]
    out += table(["config", "ours fp32", "torch fp32", "ours tf32", "torch tf32", "ours bf16",
                  "torch bf16"], mem)
    return out


def tests_section(state, name, title):
    d = read_json(os.path.join(state, name + ".json"))
    if not d:
        return []
    out = ["", "## " + title, "", d["note"]]
    if d["skipped_other"]:
        out += ["", "Skipped, not CUDA cases (listed, not counted as CUDA failures):", ""]
        out += ["- `%s`: %s" % (s["case"], s["reason"]) for s in d["skipped_other"]]
    if d.get("skipped_as_on_cpu"):
        out += ["", "CUDA cases skipped as their CPU twins are, for the same reason (not device "
                "failures):", ""]
        out += ["- `%s`: %s" % (s["case"], s["reason"]) for s in d["skipped_as_on_cpu"]]
    if d["skipped_cuda"]:
        out += ["", "CUDA cases skipped: %d; reasons: %s" % (
            len(d["skipped_cuda"]), "; ".join(d["cuda_skip_reasons"][:5]))]
    if d["failed"]:
        out += ["", "Failed:", ""]
        out += ["- `%s`: %s" % (f["case"], f["message"]) for f in d["failed"][:30]]
    if d["not_run"]:
        out += ["", "No result (%d): %s" % (len(d["not_run"]), ", ".join(
            "`%s`" % n for n in d["not_run"][:20]))]
    return out


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def report(state, report_path, tails_path):
    meta = read_kv(os.path.join(state, "meta.txt"))
    dry = meta.get("dry") == "1"
    parts = parts_of(state)
    failed = [p for p in parts if p[1] == "FAIL"]
    done = meta.get("finished") == "1"
    result = ("FAIL" if failed else "PASS") if done else (
        "in progress or stopped after part %d (%s)" % (len(parts), parts[-1][0] if parts
                                                        else "none"))
    title = "# GPU check %s, commit %s" % (meta.get("date", "?")[:10], meta.get("commit_short"))
    if dry:
        title = "# DRY RUN without a GPU (not a GPU result): GPU check %s, commit %s" % (
            meta.get("date", "?")[:10], meta.get("commit_short"))
    out = [title, ""]
    if dry:
        out += ["This is the dry run (`scripts/gpu-dryrun.sh`): a chroot with only what the GPU "
                "machine has, and no GPU. Every figure below comes from the CPU and shows only "
                "that the check runs; none is a GPU result.", ""]
    for k, label in (("date", "Date (UTC)"), ("commit_note", "Commit"), ("tree", "Tree"),
                     ("gpu", "GPU (name, driver, memory)"), ("cuda_driver", "CUDA (driver)"),
                     ("nvcc", "nvcc"), ("host", "Host"), ("tools", "Tools"),
                     ("python", "python3"), ("bundle", "Bundle"), ("budget", "Budget")):
        if meta.get(k):
            out.append("- %s: %s" % (label, meta[k]))
    out.append("- Result: **%s**" % result)
    out += [""] + table(["part", "result", "seconds", "note"], parts)
    out += tests_section(state, "tests", "The test suite")
    for tool in ("memcheck", "racecheck", "initcheck", "synccheck"):
        out += tests_section(state, tool, "compute-sanitizer " + tool)
    b, ours = bench_section(state, dry)
    out += b
    out += torch_section(state, ours, dry)
    fm = read_kv(os.path.join(state, "fashion.txt"))
    if fm:
        out += ["", "## Fashion-MNIST, the README's default training", "",
                "- Command: `%s`" % fm.get("command", "?"), "- Data: %s" % fm.get("data", "?"),
                "- Result: %s" % fm.get("done", "?")]
    if failed:
        out += ["", "## Failures (last lines of each failed part's log)"]
        for p in failed:
            out += ["", "### " + p[0], "", "```"] + tail(os.path.join(state, p[0] + ".log"), 25)
            out += ["```"]
    tmp = report_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, report_path)
    if tails_path:
        lines = []
        for p in parts:
            log = os.path.join(state, p[0] + ".log")
            if os.path.exists(log):
                lines += ["", "==== %s: %s, %s s, last 80 lines of %s" % (p[0], p[1], p[2], log)]
                lines += tail(log, 80)
        tmp = tails_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines).lstrip("\n") + "\n")
        os.replace(tmp, tails_path)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "unpack" and len(argv) == 4:
        unpack(argv[2], argv[3])
    elif cmd == "cases" and len(argv) == 3:
        with open(argv[2], errors="replace") as f:
            print("\n".join(list_cases(f.read())))
    elif cmd == "select" and len(argv) == 4:
        rx = re.compile(argv[3], re.I)
        with open(argv[2]) as f:
            print("\n".join(n for n in (x.strip() for x in f) if n and rx.search(n)))
    elif cmd == "tally" and len(argv) in (6, 7):
        tally(argv[2], argv[3], argv[4], argv[5], int(argv[6]) if len(argv) == 7 else None)
    elif cmd == "sanitizer" and len(argv) == 3:
        sanitizer_summary(argv[2])
    elif cmd == "note-bench" and len(argv) in (3, 4):
        note_bench(argv[2], argv[3] if len(argv) == 4 else None)
    elif cmd == "note-torch" and len(argv) == 3:
        note_torch(argv[2])
    elif cmd == "fashion-data" and len(argv) == 3:
        fashion_data(argv[2])
    elif cmd == "report" and len(argv) in (4, 5):
        report(argv[2], argv[3], argv[4] if len(argv) == 5 else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
