#!/usr/bin/env python3
"""What `backprop train` does on each fault (CPU):

- killed with SIGKILL mid-epoch: the last checkpoint (saved at the end of the previous epoch,
  atomically) is intact, and resuming from it ends bitwise where the uninterrupted run ends;
- a diverging run (--lr 1e6) stops at the first non-finite loss or gradient, names the epoch,
  the step and the layer, exits 1, and never overwrites the last good checkpoint;
- --memory-limit BYTES: an allocation past it fails with a message naming both sizes.

(SIGINT mid-epoch is test_cli_resume.py's test_interrupt; a full disk or failing write while
saving is tests/test_checkpoint.cc's CheckpointAtomic cases.)

usage: test_cli_faults.py [path/to/backprop]"""
import os
import re
import signal
import subprocess
import time

from clitest import BIN, blobs, check, checksums, finish, run, tempdir, write_csv


def weights(d, path):
    r = run("info", path, "--dump-weights", cwd=d)
    return r.rc, checksums(r.out), r.out.split("parameters:", 1)[-1]


def test_sigkill_and_resume(d):
    # About 2 s an epoch in a Release build, so the kill lands well inside epoch 2.
    write_csv(os.path.join(d, "big.csv"), blobs(6000, 21))
    opts = ["--train", "big.csv", "--hidden", "256,256", "--batch", "4", "--epochs", "3",
            "--device", "cpu", "--grad-check", "0", "--quiet"]
    r = run("train", *opts, "--save", "full.st", cwd=d, timeout=600)
    check("uninterrupted 3-epoch run", r.rc == 0, r)

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    ckpt = os.path.join(d, "killed.st")
    proc = subprocess.Popen([BIN, "train", *opts, "--save", "killed.st"], cwd=d, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The first checkpoint appears (renamed into place, complete) at the end of epoch 1; kill
    # the process a little later, in the middle of epoch 2.
    deadline = time.time() + 300
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if not killed:
        print("note: the run ended before SIGKILL; checking the plain resume instead")
    check("SIGKILL ended the run mid-way (or it had finished)",
          proc.returncode == -signal.SIGKILL or proc.returncode == 0, "rc %s" % proc.returncode)
    rc, sums, _ = weights(d, "killed.st")
    check("the checkpoint left by the killed run is intact and readable", rc == 0 and len(sums) == 2)
    r = run("info", "killed.st", cwd=d)
    if killed:
        check("the killed run's checkpoint is an epoch-end one, before the last epoch",
              re.search(r"epoch = [12]\n\s*batch_in_epoch = 0\n", r.out) is not None, r.out)
    r = run("train", "--resume", "killed.st", "--quiet", cwd=d, timeout=600)
    check("the killed run resumes from its last checkpoint",
          r.rc == 0 and "done: 3 epochs" in r.out, r)
    rc1, sums1, dump1 = weights(d, "full.st")
    rc2, sums2, dump2 = weights(d, "killed.st")
    check("killed + resumed ends bitwise equal to uninterrupted (parameters and optimizer)",
          rc1 == 0 and rc2 == 0 and sums1 == sums2 and dump1 == dump2,
          "%s vs %s" % (sums1, sums2))


def test_divergence(d):
    write_csv(os.path.join(d, "train.csv"), blobs(300, 5))
    base = ["--train", "train.csv", "--hidden", "16,16", "--device", "cpu", "--quiet",
            "--save", "good.st"]
    r = run("train", *base, "--epochs", "1", "--lr", "0.01", cwd=d)
    check("a good run saves its checkpoint", r.rc == 0, r)
    with open(os.path.join(d, "good.st"), "rb") as f:
        good = f.read()
    for opt in ("sgd", "adamw"):
        r = run("train", *base, "--epochs", "3", "--lr", "1e6", "--opt", opt, cwd=d)
        line = r.err.strip().splitlines()[-1] if r.err.strip() else ""
        check("--lr 1e6 (%s) stops with exit 1 at the first non-finite value" % opt,
              r.rc == 1 and ("non-finite" in line or "the loss is" in line), r)
        check("the message names the epoch, the step and the layer (%s)" % opt,
              re.search(r"epoch \d+, step \d+/\d+: .*layer \d+", line) is not None, line)
        check("no 'unknown place' in the message (%s)" % opt, "unknown place" not in line, line)
        # A run that fails in epoch 1 saved nothing: the earlier run's file stays, byte for byte.
        # One that fails later keeps its own last epoch-end checkpoint, whose values are finite.
        failed = re.search(r"epoch (\d+), step", line)
        failed_epoch = int(failed.group(1)) if failed else 0
        with open(os.path.join(d, "good.st"), "rb") as f:
            kept = f.read()
        info = run("info", "good.st", "--dump-weights", cwd=d)
        if failed_epoch == 1:
            check("the last good checkpoint is untouched (%s)" % opt, kept == good)
        else:
            check("the checkpoint kept is the epoch before the failure, finite (%s)" % opt,
                  info.rc == 0 and "epoch = %d\n" % (failed_epoch - 1) in info.out
                  and not re.search(r"\b(nan|inf)\b", info.out.split("parameters:", 1)[-1]),
                  "failed in epoch %d\n%s" % (failed_epoch, info.out[:1500]))
    leftovers = [n for n in os.listdir(d) if ".tmp." in n]
    check("no temporary checkpoint files left behind", not leftovers, leftovers)


def test_memory_limit(d):
    base = ["--train", "train.csv", "--hidden", "64,64", "--device", "cpu", "--epochs", "1",
            "--quiet"]
    r = run("train", *base, "--memory-limit", "4096", cwd=d)
    check("--memory-limit 4096 fails with exit 1", r.rc == 1, r)
    check("the message names the request and the limit in bytes",
          re.search(r"\d+ bytes on cpu would exceed the memory limit of 4096 bytes", r.err)
          is not None, r.err)
    r = run("train", *base, "--memory-limit", "100000000", cwd=d)
    check("a generous --memory-limit trains", r.rc == 0, r)
    r = run("train", *base, "--memory-limit", "-1", cwd=d)
    check("a negative --memory-limit is a usage error", r.rc == 2 and "--memory-limit" in r.err, r)


def main():
    with tempdir() as d:
        test_divergence(d)
        test_memory_limit(d)
        test_sigkill_and_resume(d)
    finish()


if __name__ == "__main__":
    main()
