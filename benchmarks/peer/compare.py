#!/usr/bin/python3
"""Ours against PyTorch, side by side: for several rounds, each config (S, M, L) runs once with
`backprop bench` and once with torch_mlp.py per thread count (PyTorch's best of them counts), each
in a fresh process, alternating so both see the same load. Prints each round, then the medians
and the ratios ours/PyTorch for samples/s and for peak memory.

Peak memory, both sides: /proc/self/status VmHWM minus VmRSS, after resetting the peak (write 5 to
/proc/self/clear_refs) just before the data, model and optimizer are created; `backprop bench`
runs with --no-limits so the limit measurements' buffers are not in the baseline.

PyTorch runs in --python: by default .venv-peer's (scripts/peer-env.sh: PyTorch 2.x from PyPI, the
one users run) when it exists, else /usr/bin/python3 (Debian's 1.13). Its version is printed.

usage: compare.py [--backprop build/backprop] [--rounds 5] [--config S,M,L] [--threads 1,2]
                  [--repeats 7] [--python PY] [--json FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "..", "..", ".venv-peer", "bin", "python")


def run_ours(binary, cfg, repeats, tmp, threads):
    """Best of the thread settings: "default" leaves the environment alone (OpenBLAS and OpenMP
    then use every core), N sets OMP_NUM_THREADS and OPENBLAS_NUM_THREADS to N."""
    best = None
    for t in threads:
        out = os.path.join(tmp, "ours.json")
        env = dict(os.environ)
        if t != "default":
            env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = t
        subprocess.run([binary, "bench", "--only", "train", "--no-limits", "--config", cfg,
                        "--repeats", str(repeats), "--json", out], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        with open(out) as f:
            row = [r for r in json.load(f)["rows"] if r["section"] == "train"][0]
        if best is None or row["samples_per_s"] > best[0]:
            best = (row["samples_per_s"], row["process_hwm_delta_kib"] / 1024.0, t)
    return best


def run_torch(python, cfg, threads, repeats, tmp):
    best = None
    for t in threads:
        out = os.path.join(tmp, "torch.json")
        subprocess.run([python, os.path.join(HERE, "torch_mlp.py"), "--config", cfg,
                        "--threads", str(t), "--repeats", str(repeats), "--json", out],
                       check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            row = json.load(f)["rows"][0]
        if best is None or row["samples_per_s"] > best[0]:
            best = (row["samples_per_s"], row["peak_kib"] / 1024.0, t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backprop", default=os.path.join(HERE, "..", "..", "build", "backprop"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--config", default="S,M,L")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--ours-threads", default="default",
                    help="comma-separated: default and/or thread counts; the best counts")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--python", default=PEER if os.access(PEER, os.X_OK) else "/usr/bin/python3",
                    help="the python whose torch is the peer")
    ap.add_argument("--json")
    a = ap.parse_args()
    cfgs = a.config.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    ours_threads = a.ours_threads.split(",")
    res = {c: {"ours": [], "ours_mem": [], "ours_threads": [], "torch": [], "torch_mem": [],
               "torch_threads": []}
           for c in cfgs}
    version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    print("PyTorch %s (%s)" % (version, a.python))
    print("load before: %s" % open("/proc/loadavg").read().strip())
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for c in cfgs:
                # Alternate who goes first, so neither always runs on the cooler machine.
                order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
                for who in order:
                    if who == "ours":
                        sps, mem, t = run_ours(a.backprop, c, a.repeats, tmp, ours_threads)
                        res[c]["ours"].append(sps)
                        res[c]["ours_mem"].append(mem)
                        res[c]["ours_threads"].append(t)
                    else:
                        sps, mem, t = run_torch(a.python, c, threads, a.repeats, tmp)
                        res[c]["torch"].append(sps)
                        res[c]["torch_mem"].append(mem)
                        res[c]["torch_threads"].append(t)
                print("round %d %-2s ours %9.0f samples/s %7.2f MiB (threads %s) | torch %9.0f "
                      "samples/s %7.2f MiB (threads %d) | ratio %.2f" % (
                          r + 1, c, res[c]["ours"][-1], res[c]["ours_mem"][-1],
                          res[c]["ours_threads"][-1],
                          res[c]["torch"][-1], res[c]["torch_mem"][-1],
                          res[c]["torch_threads"][-1], res[c]["ours"][-1] / res[c]["torch"][-1]))
                sys.stdout.flush()
    print("load after: %s" % open("/proc/loadavg").read().strip())
    print("\n| config | ours samples/s | PyTorch samples/s | ratio | ours peak MiB | PyTorch peak "
          "MiB | ratio | per-round ratios |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for c in cfgs:
        d = res[c]
        o, t = statistics.median(d["ours"]), statistics.median(d["torch"])
        om, tm = statistics.median(d["ours_mem"]), statistics.median(d["torch_mem"])
        ratios = [x / y for x, y in zip(d["ours"], d["torch"])]
        summary[c] = dict(d, ours_median=o, torch_median=t, ratio=o / t, ours_mem_median=om,
                          torch_mem_median=tm, mem_ratio=om / tm if tm else None,
                          round_ratios=ratios)
        print("| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %s | %s |" % (
            c, o, t, o / t, om, tm, "%.2f" % (om / tm) if tm else "n/a",
            ", ".join("%.2f" % x for x in ratios)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary, torch_version=version), f, indent=1)


if __name__ == "__main__":
    main()
