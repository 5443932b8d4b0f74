#!/usr/bin/env python3
"""A model that does not fit is refused at once, with nothing allocated:

- `--hidden 16777216,16777216` (2^48 parameters, more than any machine) and, where this machine
  has less than it needs, `--hidden 46341,46341` (2.1e9 parameters) exit 1 in under 2 s with a
  peak resident size under 200 MB, naming the bytes needed, the bytes free and the largest part
  (the parameters);
- --no-memory-check skips the check (the allocation then fails, with its own message); the
  memory limit (--memory-limit) stays bp_dev_alloc's, exact, with its own message.

usage: test_cli_memory.py [path/to/backprop]"""
import os
import resource
import subprocess
import time

from clitest import BIN, blobs, check, finish, tempdir, write_csv


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_measured(args, cwd):
    """Runs backprop alone in a child and returns (proc, seconds, peak RSS in bytes)."""
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.stdout.write(p.stderr)\n"
            "print('\\nRC %d RSS %d' % (p.returncode, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n")
    # Under AddressSanitizer a request past its largest size aborts unless it may return NULL,
    # which is what the allocation does without it.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = dict(os.environ, OMP_NUM_THREADS="2",
               ASAN_OPTIONS=(asan + ":" if asan else "") + "allocator_may_return_null=1")
    t = time.monotonic()
    p = subprocess.run(["python3", "-c", code, BIN] + args, cwd=cwd, capture_output=True,
                       text=True, env=env, timeout=300)
    seconds = time.monotonic() - t
    last = p.stdout.strip().splitlines()[-1].split()
    return int(last[1]), p.stdout, seconds, int(last[3]) * 1024


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "data.csv"), blobs(64, 1))
        base = ["train", "--train", "data.csv", "--device", "cpu", "--epochs", "1", "--quiet"]
        huge = [("16777216,16777216", None), ("46341,46341", 3 * 46341 * 46341 * 4)]
        for hidden, need in huge:
            if need and mem_available() >= need:
                print("SKIP: --hidden %s fits in this machine's %d bytes" % (hidden,
                                                                            mem_available()))
                continue
            rc, err, seconds, rss = run_measured(base + ["--hidden", hidden], d)
            check("--hidden %s: refused in %.2f s (< 2), peak RSS %d MB (< 200)" %
                  (hidden, seconds, rss >> 20),
                  rc == 1 and seconds < 2 and rss < 200 << 20, err)
            check("--hidden %s: names the bytes needed, free and the largest part" % hidden,
                  "bp_model_create: needs" in err and "are free" in err and
                  "the largest part is the parameters" in err and "nothing was allocated" in err,
                  err)
        # Without the check the allocation decides: 2^50 bytes fail at once, with its message.
        rc, err, seconds, _ = run_measured(base + ["--hidden", "16777216,16777216",
                                                   "--no-memory-check"], d)
        check("--no-memory-check: the allocation decides (its own message)",
              rc == 1 and "allocating" in err and "bp_model_create: needs" not in err, err)
        rc, err, _, _ = run_measured(base + ["--hidden", "8"], d)
        check("a model that fits trains", rc == 0, err)
    finish()


if __name__ == "__main__":
    main()
