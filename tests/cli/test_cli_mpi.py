#!/usr/bin/env python3
"""backprop train --distributed under mpirun: two ranks train what one process trains, agree on
their options and data or refuse with the flag named, and a rank that fails or dies ends the
whole job instead of leaving the other waiting; SIGTERM or ^C to mpirun saves the exact step.

Needs a build with MPI and `mpiexec` (ctest passes $BP_MPIEXEC and $BP_MPIEXEC_FLAGS); without
them it says why and exits 77, which ctest reports as skipped.

usage: test_cli_mpi.py [path/to/backprop]"""
import math
import os
import re
import signal
import subprocess
import time

from clitest import BIN, blobs, check, finish, run, tempdir, write_csv

MPIEXEC = os.environ.get("BP_MPIEXEC", "")
FLAGS = os.environ.get("BP_MPIEXEC_FLAGS", "").split()
# 512 rows: 8 global batches of 64, no smaller last batch. Dropout and AdamW with a cosine
# schedule: masks, state and the learning rate all have to follow the single process.
BASE = ["--train", "train.csv", "--test", "test.csv", "--hidden", "16,16", "--dropout", "0.2",
        "--lr", "0.01", "--batch", "64", "--val-split", "0", "--device", "cpu", "--quiet"]
HANG = 90  # seconds: far beyond any run here; reaching it means a rank was left waiting


def env():
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    return e


def mpi_cmd(ranks):
    """ranks: a list of argument lists, one per rank (MPMD, so ranks can differ)."""
    cmd = [MPIEXEC] + FLAGS
    for i, args in enumerate(ranks):
        cmd += ([":"] if i else []) + ["-np", "1", BIN, "train"] + [str(a) for a in args]
    return cmd


def mpirun(ranks, cwd):
    t0 = time.time()
    p = subprocess.run(mpi_cmd(ranks), cwd=cwd, capture_output=True, text=True, timeout=HANG,
                       env=env())
    return p, time.time() - t0


def params(d, path):
    r = run("info", path, "--dump-weights", cwd=d)
    # One value per line (%.9g) under "NAME [rows, cols]" headings.
    lines = r.out.split("parameters:", 1)[-1].splitlines()[1:]
    return [float(v) for v in lines if v.strip() and "[" not in v]


def rel(a, b):
    if len(a) != len(b) or not a:
        return math.inf
    num = sum((x - y) ** 2 for x, y in zip(a, b))
    den = sum(y * y for y in b)
    return math.sqrt(num / den) if den > 0 else math.inf


def test_two_ranks_train_what_one_trains(d):
    one = run("train", *BASE, "--epochs", "3", "--save", "one.st", cwd=d)
    check("one process trains", one.rc == 0, one)
    p, _ = mpirun([BASE + ["--epochs", "3", "--distributed", "--save", "two.st"]] * 2, d)
    check("two ranks train", p.returncode == 0, p.stdout + p.stderr)
    a, b = params(d, "two.st"), params(d, "one.st")
    # fp32 sums in another order (each rank's 32 rows, then the two halves): ~5e-8 here.
    check("2-rank weights equal the single process's to 1e-6 relative (%d values: %.2g)" %
          (len(b), rel(a, b)),
          rel(a, b) <= 1e-6, "relative difference %g" % rel(a, b))
    check("the table is printed once, by rank 0", p.stdout.count("done: 3 epochs") == 1, p.stdout)
    acc1 = re.findall(r"accuracy ([0-9.]+)%", one.out)
    acc2 = re.findall(r"accuracy ([0-9.]+)%", p.stdout)
    check("the same test accuracy", acc1 and acc1 == acc2, "%s vs %s" % (acc1, acc2))
    check("only rank 0 wrote a checkpoint (no stray temporary files)",
          sorted(f for f in os.listdir(d) if f.endswith(".st") or f.startswith(".")) ==
          ["one.st", "two.st"], os.listdir(d))


def test_distributed_resume(d):
    """Stopped after epoch 1 and resumed on two ranks = the uninterrupted 2-rank run, bitwise."""
    full = BASE + ["--epochs", "3", "--distributed"]
    p, _ = mpirun([full + ["--save", "full.st"]] * 2, d)
    check("uninterrupted 2-rank run", p.returncode == 0, p.stderr)
    p, _ = mpirun([full + ["--stop-after", "1", "--save", "part.st"]] * 2, d)
    check("2-rank run stopped after epoch 1", p.returncode == 0, p.stderr)
    p, _ = mpirun([["--resume", "part.st", "--save", "resumed.st", "--quiet",
                    "--distributed"]] * 2, d)
    check("2-rank resume runs to the end", p.returncode == 0 and "done: 3 epochs" in p.stdout,
          p.stdout + p.stderr)
    a, b = params(d, "resumed.st"), params(d, "full.st")
    check("resumed 2-rank weights are bitwise the uninterrupted run's", a == b and len(a) > 0,
          "relative difference %g" % rel(a, b))


def test_ranks_must_agree(d):
    for flag, v0, v1 in [("--lr", "0.01", "0.02"), ("--hidden", "16,16", "16,8"),
                         ("--batch", "64", "32")]:
        base = [a for a in BASE]
        i = base.index(flag) if flag in base else None
        r0, r1 = list(base), list(base)
        if i is not None:
            r0[i + 1], r1[i + 1] = v0, v1
        p, secs = mpirun([r0 + ["--epochs", "1", "--distributed"],
                          r1 + ["--epochs", "1", "--distributed"]], d)
        want = "disagree on %s: rank 0 has %s, rank 1 has %s" % (flag, v0, v1)
        check("ranks with different %s: both refuse, naming it (%.1f s)" % (flag, secs),
              p.returncode != 0 and p.stderr.count(want) == 2, p.stderr)
    p, secs = mpirun([BASE + ["--epochs", "1", "--distributed"],
                      BASE + ["--epochs", "1", "--distributed", "--train", "test.csv"]], d)
    check("ranks with different training data refuse (%.1f s)" % secs,
          p.returncode != 0 and "disagree on the training data" in p.stderr, p.stderr)


def test_a_failing_rank_ends_the_job(d):
    p, secs = mpirun([BASE + ["--epochs", "1", "--distributed"],
                      BASE + ["--epochs", "1", "--distributed", "--test", "missing.csv"]], d)
    check("a rank that cannot read its data: every rank exits (%.1f s)" % secs,
          p.returncode != 0 and "(rank 1 of 2): --test: cannot read 'missing.csv'" in p.stderr and
          "(rank 0 of 2): setting up the run failed on rank 1 of 2" in p.stderr, p.stderr)
    p, secs = mpirun([BASE + ["--epochs", "1", "--distributed", "--lr", "1e6"]] * 2, d)
    check("a diverging run stops on every rank at the same step (%.1f s)" % secs,
          p.returncode != 0 and p.stderr.count("non-finite") >= 2 and
          "epoch 1, step" in p.stderr, p.stderr)


def rank_pid(mpi_pid, rank):
    """The pid of `rank` among mpi_pid's children (from OMPI_COMM_WORLD_RANK in its environ)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                environ = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if (b"OMPI_COMM_WORLD_RANK=%d" % rank in environ and BIN.encode() in cmdline and
                b"--epochs\x00100000" in cmdline):
            return int(pid)
    return None


def test_a_killed_rank_ends_the_job(d):
    """SIGKILL rank 1 mid-training: rank 0 must not wait for it forever."""
    args = BASE + ["--epochs", "100000", "--distributed"]
    p = subprocess.Popen(mpi_cmd([args] * 2), cwd=d, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())
    victim = None
    for _ in range(200):
        victim = rank_pid(p.pid, 1)
        if victim:
            break
        time.sleep(0.05)
    check("found rank 1's process", victim is not None)
    if victim:
        time.sleep(1.0)  # well into training
        os.kill(victim, signal.SIGKILL)
    t0 = time.time()
    try:
        out, err = p.communicate(timeout=HANG)
        secs = time.time() - t0
        check("after rank 1 is killed the job ends, non-zero, in %.1f s" % secs,
              p.returncode != 0, err[-2000:])
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        check("after rank 1 is killed the job ends", False, "still running after %d s" % HANG)


def test_sigterm_to_mpirun(d):
    """SIGTERM (or ^C, or SIGHUP) to mpirun reaches every rank as SIGTERM: the ranks stop at the
    same step, rank 0 saves it and says so once; a 2-rank resume ends bitwise where the
    uninterrupted run ends."""
    write_csv(os.path.join(d, "big.csv"), blobs(6000, 21))
    args = ["--train", "big.csv", "--hidden", "256,256", "--batch", "8", "--epochs", "10",
            "--val-split", "0", "--device", "cpu", "--grad-check", "0", "--quiet",
            "--distributed"]
    p, _ = mpirun([args + ["--save", "sig_full.st"]] * 2, d)
    check("uninterrupted 2-rank run", p.returncode == 0, p.stderr)
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(mpi_cmd([args + ["--save", "sig.st"]] * 2), cwd=d, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if line.startswith("epoch"):
                break
        time.sleep(1.5)  # mpirun forwards output late: well into the run
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=HANG)
        said = re.findall(r"interrupted by SIGTERM at epoch (\d+), step (\d+): saved sig.st "
                          r"\(continue with --resume sig.st\)", err)
        if not said and "done: 10 epochs" in out:
            print("note: the run ended before %s arrived" % sig.name)
            continue
        check("%s to mpirun: every rank stops, rank 0 saves the step and says so once "
              "(mpirun exits %d)" % (sig.name, proc.returncode),
              len(said) == 1 and err.count("interrupted by") == 1, err[-2000:])
        info = run("info", "sig.st", cwd=d)
        step = re.search(r"batch_in_epoch = (\d+)", info.out)
        check("... the checkpoint verifies and holds that step",
              info.rc == 0 and "checksums: verified" in info.out and said and step
              and step.group(1) == said[0][1], info.out[:600])
        p, _ = mpirun([["--resume", "sig.st", "--quiet", "--distributed"]] * 2, d)
        check("... a 2-rank resume runs to the end", p.returncode == 0 and "done: 10 epochs"
              in p.stdout, p.stdout + p.stderr)
        a, b = params(d, "sig.st"), params(d, "sig_full.st")
        check("... bitwise the uninterrupted 2-rank run", a == b and len(a) > 0,
              "relative difference %g" % rel(a, b))


def main():
    if not MPIEXEC or not os.access(MPIEXEC, os.X_OK):
        print("SKIP: no mpiexec (configure with MPI: apt-get install libopenmpi-dev openmpi-bin)")
        raise SystemExit(77)
    probe = run("train", "--distributed", "--help")
    alone = subprocess.run([BIN, "train", "--data", "x", "--distributed"], capture_output=True,
                           text=True, timeout=60, env=env())
    if "built without MPI" in alone.stderr:
        print("SKIP: this backprop was built without MPI (-DBP_MPI=OFF)")
        raise SystemExit(77)
    check("train --help documents --distributed", "--distributed" in probe.out, probe)
    with tempdir() as d:
        write_csv(os.path.join(d, "train.csv"), blobs(512, 11))
        write_csv(os.path.join(d, "test.csv"), blobs(200, 12))
        test_two_ranks_train_what_one_trains(d)
        test_distributed_resume(d)
        test_ranks_must_agree(d)
        test_a_failing_rank_ends_the_job(d)
        test_a_killed_rank_ends_the_job(d)
        test_sigterm_to_mpirun(d)
    finish()


if __name__ == "__main__":
    main()
