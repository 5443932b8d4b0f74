#!/usr/bin/env python3
"""Every ending of `backprop train` saves, and no ending leaves litter (CPU):

- SIGTERM, SIGHUP and SIGINT mid-epoch each save the exact step, print the "continue with
  --resume" line and exit 128 + the signal; resuming ends bitwise where the uninterrupted run
  ends (parameters and optimizer state);
- a second signal at any moment after the first never leaves a damaged checkpoint: the file
  verifies (checksums) and is the old epoch's or the new step's, and no temporary file is left;
  one sent while the save is seen in progress (/proc/PID/fd) lets the save complete; both
  signals inside an epoch's save: that save is the one the resume line names;
- a run killed with SIGKILL at many points (inside saves too) leaves a complete checkpoint, and
  the next save leaves no temporary file; temporary files of dead writers (NAME.tmp.PID) beside
  a checkpoint, a --metrics or a predict --output file are removed by the next write of it.

(Under mpirun: test_cli_mpi.py. Killed saves in both writing schemes, O_TMPFILE and named
temporary files: tests/test_checkpoint.cc, CheckpointLitter.)

usage: test_cli_signals.py [path/to/backprop]"""
import os
import random
import re
import signal
import subprocess
import time

from clitest import BIN, blobs, check, checksums, finish, run, tempdir, write_csv

OPTS = ["--train", "big.csv", "--hidden", "256,256", "--batch", "8", "--epochs", "2",
        "--device", "cpu", "--grad-check", "0", "--quiet"]


def env():
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))


def weights(d, path):
    r = run("info", path, "--dump-weights", cwd=d)
    return r.rc, checksums(r.out), r.out.split("parameters:", 1)[-1]


def start(d, args):
    return subprocess.Popen([BIN, "train", *args], cwd=d, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_table(proc):
    """Returns once the table header is out: training has begun and the handlers are set."""
    for line in proc.stdout:
        if line.startswith("epoch"):
            return True
    return False


def run_state(d, path):
    r = run("info", path, cwd=d)
    epoch = re.search(r"^\s*epoch = (\d+)$", r.out, re.M)
    batch = re.search(r"^\s*batch_in_epoch = (\d+)$", r.out, re.M)
    return (int(epoch.group(1)), int(batch.group(1))) if epoch and batch else None, r


def test_each_signal(d):
    r = run("train", *OPTS, "--save", "full.st", cwd=d, timeout=600)
    check("uninterrupted run", r.rc == 0, r)
    rc0, sums0, dump0 = weights(d, "full.st")
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        name = sig.name
        path = "sig_%s.st" % name
        proc = start(d, [*OPTS, "--save", path])
        wait_for_table(proc)
        time.sleep(0.4)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        line = re.search(r"interrupted by %s at epoch (\d+), step (\d+): saved (\S+) \(continue "
                         r"with --resume (\S+)\)" % name, err)
        if proc.returncode == 0:
            print("note: the run ended before %s arrived; checking the plain resume" % name)
        else:
            check("%s: exit %d (128 + %d) and the resume line" % (name, 128 + sig, sig),
                  proc.returncode == 128 + sig and line is not None and line.group(3) == path
                  and line.group(4) == path, "rc %d\n%s" % (proc.returncode, err))
            state, info = run_state(d, path)
            check("%s: the checkpoint holds the exact step it names" % name,
                  line is not None and state == (int(line.group(1)) - 1, int(line.group(2)))
                  , "%s vs %s" % (line and line.groups(), state))
            check("%s: the checkpoint verifies" % name,
                  info.rc == 0 and "checksums: verified" in info.out, info)
        r = run("train", "--resume", path, "--quiet", cwd=d, timeout=600)
        check("%s: the run resumes to the end" % name, r.rc == 0 and "done: 2 epochs" in r.out, r)
        rc1, sums1, dump1 = weights(d, path)
        check("%s, resumed: bitwise the uninterrupted run (parameters and optimizer)" % name,
              rc0 == 0 and rc1 == 0 and sums0 == sums1 and dump0 == dump1,
              "%s vs %s" % (sums0, sums1))


def test_second_signal(d):
    """A large model, so a save takes a while; SIGTERM, then SIGINT a moment later."""
    write_csv(os.path.join(d, "mid.csv"), blobs(600, 4))
    opts = ["--train", "mid.csv", "--hidden", "1536,1536", "--batch", "16", "--epochs", "50",
            "--device", "cpu", "--grad-check", "0", "--quiet", "--save", "two.st"]
    outcomes = set()
    for k, delay in enumerate([0.0, 0.03, 0.1, 0.3, 0.8]):
        proc = start(d, opts)
        wait_for_table(proc)
        time.sleep(0.3 + 0.05 * k)
        proc.send_signal(signal.SIGTERM)
        time.sleep(delay)
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        out, err = proc.communicate(timeout=300)
        saved = "saved two.st" in err
        outcomes.add((proc.returncode, saved))
        # Having saved: 128 + the first signal handled. At once: 128 + the second. (Two signals
        # pending together are handled lowest number first: SIGINT, then SIGTERM.)
        said = re.search(r"interrupted by (SIGTERM|SIGINT) at epoch \d+, step \d+: saved two.st",
                         err)
        check("second signal %.2f s after SIGTERM: exit 130 or 143, and the line when saved" %
              delay, proc.returncode in (130, 143) and saved == (said is not None) and
              (not said or proc.returncode == 128 + signal.Signals[said.group(1)]),
              "rc %d\n%s" % (proc.returncode, err))
        if os.path.exists(os.path.join(d, "two.st")):
            state, info = run_state(d, "two.st")
            check("... the checkpoint verifies and is whole (%s)" % (state,),
                  info.rc == 0 and "checksums: verified" in info.out and state is not None, info)
        leftovers = [n for n in os.listdir(d) if ".tmp." in n]
        check("... no temporary file is left", not leftovers, leftovers)
    print("note: outcomes (exit status, saved): %s" % sorted(outcomes))


def saving(pid, d):
    """Whether the process has a file open in d: the checkpoint being written (unnamed with
    O_TMPFILE, shown as 'd/#inode (deleted)', else d/NAME.tmp.PID); it reads nothing from d
    once training runs."""
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith(os.path.realpath(d) + "/") and ("#" in target or ".tmp." in target):
            return True
    return False


def test_second_signal_mid_save(d):
    """The second signal sent while the SIGTERM save is seen in progress: the save completes.
    Epochs of 9600 rows, so the first signal rarely meets an epoch's own save; when it does
    (the line names step 0), the rule of the next test applies and the try does not count."""
    write_csv(os.path.join(d, "long.csv"), blobs(2400, 4))
    opts = ["--train", "long.csv", "--hidden", "1536,1536", "--batch", "16", "--epochs", "50",
            "--device", "cpu", "--grad-check", "0", "--quiet", "--save", "mid.st"]
    caught = 0
    for _ in range(4):
        if caught == 2:
            break
        proc = start(d, opts)
        wait_for_table(proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline and not saving(proc.pid, d):
            pass
        mid = proc.poll() is None and saving(proc.pid, d)
        if mid:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        if not mid:
            continue
        line = re.search(r"interrupted by (SIGTERM|SIGINT) at epoch (\d+), step (\d+): saved "
                         r"mid.st", err)
        if line is not None and line.group(3) == "0":
            check("both signals met an epoch's save: exit 128 + the signal the line names",
                  proc.returncode == 128 + signal.Signals[line.group(1)],
                  "rc %d\n%s" % (proc.returncode, err))
            continue
        caught += 1
        check("SIGINT during the SIGTERM save: the save completes, exit 143 with the line",
              proc.returncode == 143 and line is not None and line.group(1) == "SIGTERM",
              "rc %d\n%s" % (proc.returncode, err))
        state, info = run_state(d, "mid.st")
        check("... the checkpoint verifies and holds the step the line names, mid-epoch",
              info.rc == 0 and "checksums: verified" in info.out and line is not None and
              state == (int(line.group(2)) - 1, int(line.group(3))),
              "%s vs %s" % (line and line.groups(), info))
    check("a second signal landed during a save at least once (%d of 4)" % caught, caught > 0)


def test_both_signals_in_epoch_end_save(d):
    """SIGTERM and then SIGINT while the end-of-epoch save is seen in progress: that save is the
    one the line names (epoch N, step 0), and the run exits 128 + the signal handled first (two
    pending at once are handled lowest number first)."""
    opts = ["--train", "mid.csv", "--hidden", "1536,1536", "--batch", "64", "--epochs", "50",
            "--device", "cpu", "--grad-check", "0", "--quiet", "--save", "end.st"]
    caught = 0
    for _ in range(3):
        proc = start(d, opts)
        wait_for_table(proc)
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline and not saving(proc.pid, d):
            pass
        if proc.poll() is not None or not saving(proc.pid, d):
            proc.kill()
            proc.communicate()
            continue
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        mid = saving(proc.pid, d)
        out, err = proc.communicate(timeout=300)
        if not mid:
            continue
        caught += 1
        line = re.search(r"interrupted by (SIGTERM|SIGINT) at epoch (\d+), step (\d+): saved "
                         r"end.st", err)
        check("both signals in an epoch's save: the line, and exit 128 + the signal it names",
              line is not None and proc.returncode == 128 + signal.Signals[line.group(1)],
              "rc %d\n%s" % (proc.returncode, err))
        state, info = run_state(d, "end.st")
        check("... the checkpoint verifies and holds the step the line names, an epoch's start",
              info.rc == 0 and "checksums: verified" in info.out and line is not None and
              line.group(3) == "0" and state == (int(line.group(2)) - 1, 0),
              "%s vs %s" % (line and line.groups(), info))
    check("both signals landed in an epoch's save at least once (%d of 3)" % caught, caught > 0)


def test_sigkill_litter(d):
    """One step per epoch and a 12 MB checkpoint each epoch: kills land in saves often."""
    write_csv(os.path.join(d, "small.csv"), blobs(256, 5))
    opts = ["--train", "small.csv", "--hidden", "1024,1024", "--batch", "256", "--val-split",
            "0", "--device", "cpu", "--grad-check", "0", "--quiet", "--save", "k.st"]
    rng = random.Random(11)
    r = run("train", *opts, "--epochs", "1", cwd=d)
    check("a first checkpoint", r.rc == 0, r)
    seen = 0
    for k in range(8):
        proc = subprocess.Popen([BIN, "train", *opts, "--epochs", "100000"], cwd=d, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3 + rng.random() * 1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        seen += any(".tmp." in n for n in os.listdir(d))
        state, info = run_state(d, "k.st")
        check("kill %d: the checkpoint left is whole and verifies" % k,
              info.rc == 0 and "checksums: verified" in info.out and state is not None, info)
        r = run("train", *opts, "--epochs", "1", cwd=d)  # the next save
        leftovers = [n for n in os.listdir(d) if ".tmp." in n]
        check("kill %d: after the next save no temporary file is left" % k,
              r.rc == 0 and not leftovers, "%s\n%s" % (leftovers, r))
    print("note: %d of 8 kills left a temporary file behind for the next save to remove "
          "(none where the filesystem has O_TMPFILE)" % seen)


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def plant(d, name):
    path = os.path.join(d, "%s.tmp.%d" % (name, dead_pid()))
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)  # a write cut short
    return path


def test_stale_temporaries(d):
    write_csv(os.path.join(d, "t.csv"), blobs(200, 6))
    stale = [plant(d, "s.st"), plant(d, "s.st"), plant(d, "s.csv")]
    other = plant(d, "other.st")
    r = run("train", "--train", "t.csv", "--hidden", "8", "--epochs", "1", "--quiet", "--save",
            "s.st", "--metrics", "s.csv", cwd=d)
    check("a save and a metrics write remove their targets' dead temporaries",
          r.rc == 0 and not any(os.path.exists(p) for p in stale), os.listdir(d))
    check("... and leave another target's", os.path.exists(other))
    pred = plant(d, "p.csv")
    r = run("predict", "s.st", "--input", "t.csv", "--output", "p.csv", cwd=d)
    check("predict --output removes its target's dead temporaries",
          r.rc == 0 and not os.path.exists(pred), r)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "big.csv"), blobs(6000, 13))
        test_each_signal(d)
    with tempdir() as d:
        test_second_signal(d)
        test_second_signal_mid_save(d)
        test_both_signals_in_epoch_end_save(d)
    with tempdir() as d:
        test_sigkill_litter(d)
    with tempdir() as d:
        test_stale_temporaries(d)
    finish()


if __name__ == "__main__":
    main()
