#!/usr/bin/python3
"""Ours against PyTorch, side by side: for several rounds, each config (S, M, L) and precision
(fp32, bf16) runs once with `backprop bench` and once with torch_mlp.py per thread count and
PyTorch variant (its optimizer implementations, torch.compile; bf16 is autocast), PyTorch's best
of them counting, each in a fresh process, alternating so both see the same load. Prints the
machine (CPU model, its matrix ISA, what our engine runs on it), the commit and the command, each
round, then the medians and the ratios ours/PyTorch for samples/s and for peak memory.

Peak memory, both sides: /proc/self/status VmHWM minus VmRSS, after resetting the peak (write 5 to
/proc/self/clear_refs) just before the data, model and optimizer are created; `backprop bench`
runs with --no-limits so the limit measurements' buffers are not in the baseline.

PyTorch runs in --python: by default .venv-peer's (scripts/peer-env.sh: PyTorch 2.x from PyPI, the
one users run) when it exists, else /usr/bin/python3 (Debian's 1.13). Its version is printed.

usage: compare.py [--backprop build/backprop] [--rounds 5] [--config S,M,L] [--threads 1,2]
                  [--precision fp32,bf16] [--torch-variants plain,fused] [--ours-threads default]
                  [--repeats 7] [--python PY] [--json FILE]
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "..", "..", ".venv-peer", "bin", "python")


def machine():
    """The CPU model, its matrix ISA (AMX, AVX512-BF16, AVX-512, AVX2) and the core count."""
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [n for f, n in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"),
                          ("avx512f", "AVX-512"), ("avx2", "AVX2")) if f in flags]
    return "%s, %d CPUs, %s" % (model, os.cpu_count() or 0, " ".join(isa) or "no AVX2")


def commit():
    try:
        return subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
                              check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def engines(binary):
    """What `backprop bench` says runs each precision's products (its header lines)."""
    out = subprocess.run([binary, "bench", "--only", "train", "--config", "tiny", "--no-limits",
                          "--repeats", "1", "--warmup", "0", "--device", "cpu"], check=True,
                         capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.startswith("matrix products")]


def run_ours(binary, cfg, repeats, tmp, threads, precision="fp32"):
    """Best of the thread settings: "default" leaves the choice to the library (--threads 0), N
    passes --threads N."""
    best = None
    for t in threads:
        out = os.path.join(tmp, "ours.json")
        cmd = [binary, "bench", "--only", "train", "--no-limits", "--config", cfg, "--device",
               "cpu", "--precision", precision, "--repeats", str(repeats), "--json", out]
        if t != "default":
            cmd += ["--threads", t]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            row = [r for r in json.load(f)["rows"] if r["section"] == "train"][0]
        if best is None or row["samples_per_s"] > best[0]:
            best = (row["samples_per_s"], row["process_hwm_delta_kib"] / 1024.0, t)
    return best


def run_torch(python, cfg, threads, repeats, tmp, precision="fp32", variants=("plain",)):
    """PyTorch's best over thread counts and variants; the third item names the winner."""
    best = None
    for v in variants:
        for t in threads:
            out = os.path.join(tmp, "torch.json")
            subprocess.run([python, os.path.join(HERE, "torch_mlp.py"), "--config", cfg,
                            "--threads", str(t), "--repeats", str(repeats), "--precision",
                            precision, "--variant", v, "--json", out],
                           check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                row = json.load(f)["rows"][0]
            if best is None or row["samples_per_s"] > best[0]:
                best = (row["samples_per_s"], row["peak_kib"] / 1024.0, "%d %s" % (t, v))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backprop", default=os.path.join(HERE, "..", "..", "build", "backprop"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--config", default="S,M,L")
    ap.add_argument("--precision", default="fp32",
                    help="comma-separated: fp32, bf16 (PyTorch: autocast bf16)")
    ap.add_argument("--threads", default="1,2", help="PyTorch's thread counts; the best counts")
    ap.add_argument("--torch-variants", default="plain",
                    help="comma-separated torch_mlp.py --variant values; the best counts")
    ap.add_argument("--ours-threads", default="default",
                    help="comma-separated: default and/or thread counts; the best counts")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--python", default=PEER if os.access(PEER, os.X_OK) else "/usr/bin/python3",
                    help="the python whose torch is the peer")
    ap.add_argument("--json")
    a = ap.parse_args()
    cfgs = [(c, p) for c in a.config.split(",") for p in a.precision.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    variants = a.torch_variants.split(",")
    ours_threads = a.ours_threads.split(",")
    res = {c: {"ours": [], "ours_mem": [], "ours_threads": [], "torch": [], "torch_mem": [],
               "torch_threads": []}
           for c in cfgs}
    version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    print("command: %s" % " ".join(shlex.quote(x) for x in sys.argv))
    print("machine: %s" % machine())
    print("commit: %s" % commit())
    for line in engines(a.backprop):
        print("ours, %s" % line)
    print("PyTorch %s (%s); variants %s, threads %s" % (version, a.python, a.torch_variants,
                                                       a.threads))
    print("load before: %s" % open("/proc/loadavg").read().strip())
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for c in cfgs:
                # Alternate who goes first, so neither always runs on the cooler machine.
                order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
                for who in order:
                    if who == "ours":
                        sps, mem, t = run_ours(a.backprop, c[0], a.repeats, tmp, ours_threads,
                                               c[1])
                        res[c]["ours"].append(sps)
                        res[c]["ours_mem"].append(mem)
                        res[c]["ours_threads"].append(t)
                    else:
                        sps, mem, t = run_torch(a.python, c[0], threads, a.repeats, tmp, c[1],
                                                variants)
                        res[c]["torch"].append(sps)
                        res[c]["torch_mem"].append(mem)
                        res[c]["torch_threads"].append(t)
                print("round %d %-2s %s ours %9.0f samples/s %7.2f MiB (threads %s) | torch %9.0f "
                      "samples/s %7.2f MiB (threads, variant: %s) | ratio %.2f" % (
                          r + 1, c[0], c[1], res[c]["ours"][-1], res[c]["ours_mem"][-1],
                          res[c]["ours_threads"][-1],
                          res[c]["torch"][-1], res[c]["torch_mem"][-1],
                          res[c]["torch_threads"][-1], res[c]["ours"][-1] / res[c]["torch"][-1]))
                sys.stdout.flush()
    print("load after: %s" % open("/proc/loadavg").read().strip())
    print("\n| config | precision | ours samples/s | PyTorch best samples/s (threads, variant) | "
          "ratio | ours peak MiB | PyTorch peak MiB | per-round ratios |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for c in cfgs:
        d = res[c]
        o, t = statistics.median(d["ours"]), statistics.median(d["torch"])
        om, tm = statistics.median(d["ours_mem"]), statistics.median(d["torch_mem"])
        ratios = [x / y for x, y in zip(d["ours"], d["torch"])]
        winner = max(set(d["torch_threads"]), key=d["torch_threads"].count)
        summary["%s_%s" % c] = dict(d, ours_median=o, torch_median=t, ratio=o / t,
                                    ours_mem_median=om, torch_mem_median=tm,
                                    mem_ratio=om / tm if tm else None, round_ratios=ratios)
        print("| %s | %s | %.0f | %.0f (%s) | %.2f | %.2f | %.2f | %s |" % (
            c[0], c[1], o, t, winner, o / t, om, tm, ", ".join("%.2f" % x for x in ratios)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary, torch_version=version, machine=machine(), commit=commit()),
                      f, indent=1)


if __name__ == "__main__":
    main()
