#!/usr/bin/env python3
"""backprop's outputs lose nothing and run nothing:

- no output (--save, --metrics, --plot, predict --output, lr-find's) is an input (data files,
  --config, --resume's checkpoint, eval/predict's checkpoint, --data's files) or another output:
  compared by device and inode through symlinks and hard links, and by resolved path for files
  that do not exist yet; a clash exits 2 naming both flags, before anything is read or written;
- an empty file name, a missing folder, a folder that takes no file (/proc), a name too long once
  the temporary suffix is added, a folder or a device as the target: refused before training;
- plots are written like checkpoints: gnuplot's exit status and a complete PNG are checked before
  the rename, and on any failure the previous plot stays and the run exits 1;
- standard input is an input: `predict --input - --output X < X` is a clash (fstat(0) by device
  and inode);
- an output that exists keeps its owner, group and mode when replaced; a symlink output is
  written through to its target and stays a link; `--save /dev/stdout` (a link into /proc) and
  a device, FIFO or socket are refused, saying what they are;
- file names never reach gnuplot: hostile names (newline, quotes, backslash, system(), backticks,
  $(...), a leading '|') give a plot at exactly that name, run nothing and leave nothing else.

usage: test_cli_outputs.py [path/to/backprop]"""
import os
import resource
import shutil
import signal
import struct
import subprocess
import zlib

from clitest import BIN, blobs, check, finish, run, tempdir, write_csv

SMALL = ["--epochs", "1", "--batch", "32", "--hidden", "8", "--quiet"]


def snapshot(d):
    """Every file under d with its bytes."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, d)] = fh.read()
    return out


def refused_before_work(r):
    """Nothing ran: no model line, no table."""
    return "model:" not in r.out and "epoch" not in r.out


def test_clashes(d):
    before = snapshot(d)
    cases = [
        (["predict", "m.st", "--input", "data.csv", "--output", "data.csv"],
         "--output 'data.csv' would overwrite --input 'data.csv'"),
        (["train", "--train", "data.csv", "--save", "data.csv", *SMALL],
         "--save 'data.csv' would overwrite --train 'data.csv'"),
        (["train", "--train", "data.csv", "--metrics", "data.csv", *SMALL],
         "--metrics 'data.csv' would overwrite --train 'data.csv'"),
        (["train", "--train", "data.csv", "--test", "test.csv", "--plot", "test.csv", *SMALL],
         "--plot 'test.csv' would overwrite --test 'test.csv'"),
        (["train", "--train", "data.csv", "--save", "ck.st", "--metrics", "ck.st", *SMALL],
         "--save 'ck.st' and --metrics 'ck.st' are the same file"),
        (["train", "--train", "data.csv", "--metrics", "c.csv", "--plot", "c.csv", *SMALL],
         "--metrics 'c.csv' and --plot 'c.csv' are the same file"),
        # Neither exists yet: the same resolved path.
        (["train", "--train", "data.csv", "--save", "sub/../new.st", "--metrics", "./new.st",
          *SMALL], "--save 'sub/../new.st' and --metrics './new.st' are the same file"),
        (["train", "--train", "data.csv", "--save", "link.csv", *SMALL],
         "--save 'link.csv' would overwrite --train 'data.csv' (the same file, through a link)"),
        (["train", "--train", "hard.csv", "--metrics", "data.csv", *SMALL],
         "--metrics 'data.csv' would overwrite --train 'hard.csv' (the same file, through a link)"),
        (["predict", "m.st", "--input", "data.csv", "--output", "link.csv"],
         "would overwrite --input 'data.csv' (the same file, through a link)"),
        (["train", "--config", "run.cfg", "--save", "run.cfg", *SMALL],
         "--save 'run.cfg' would overwrite --config 'run.cfg'"),
        (["train", "--resume", "m.st", "--metrics", "m.st", "--quiet"],
         "--metrics 'm.st' would overwrite --resume 'm.st'"),
        (["train", "--resume", "m.st", "--plot", "m.st", "--quiet"], "--resume 'm.st'"),
        # The run's own files, named by the checkpoint rather than a flag.
        (["predict", "m.st", "--output", "test.csv"],
         "would overwrite the run's --test (stored in m.st) 'test.csv'"),
        (["lr-find", "--train", "data.csv", "--metrics", "data.csv", "--steps", "5", "--quiet"],
         "--metrics 'data.csv' would overwrite --train 'data.csv'"),
        (["train", "--data", "mnist", "--data-dir", "idx", "--save", "idx/t10k-labels-idx1-ubyte",
          *SMALL], "would overwrite --data mnist (t10k-labels-idx1-ubyte)"),
    ]
    for args, needle in cases:
        r = run(*args, cwd=d)
        check("%s: exit 2 naming both flags" % " ".join(args),
              r.rc == 2 and needle in r.err and refused_before_work(r), r)
    check("no clash changed, created or removed a file", snapshot(d) == before,
          sorted(set(snapshot(d)) ^ set(before)))
    # Saving back over the checkpoint a run continues is what --resume means.
    r = run("train", "--resume", "m.st", "--epochs", "2", "--quiet", cwd=d)
    check("--resume saves back in place (no clash)", r.rc == 0 and "checkpoint: m.st" in r.out, r)
    r = run("train", "--resume", "m.st", "--epochs", "3", "--save", "m.st", "--quiet", cwd=d)
    check("--resume X --save X is allowed too", r.rc == 0, r)


def test_unwritable(d):
    long_name = "n" * 246 + ".st"  # 249 bytes: fits, but not with ".tmp.<pid>"
    cases = [
        (["--save", ""], 2, "--save: the file name is empty"),
        (["--metrics", ""], 2, "--metrics: the file name is empty"),
        (["--plot", ""], 2, "--plot: the file name is empty"),
        (["--save", "nodir/m.st"], 1, "folder 'nodir' does not exist"),
        (["--metrics", "nodir/deeper/m.csv"], 1, "folder 'nodir/deeper' does not exist"),
        (["--save", "/proc/m.st"], 1, "cannot create a file in folder '/proc'"),
        (["--save", long_name], 1, "with the suffix '.tmp."),
        (["--save", "adir"], 2, "--save: 'adir' is a folder"),
        (["--save", "adir/"], 2, "is a folder"),
        # Devices through a link, and a FIFO: never a real device, so that a binary that gets
        # this wrong replaces only the link (a rename over /dev/null itself would replace it).
        (["--plot", "null"], 2, "'null' is a device, not a regular file"),
        (["--metrics", "fifo"], 2, "'fifo' is a pipe (FIFO), not a regular file"),
    ]
    for extra, rc, needle in cases:
        r = run("train", "--train", "data.csv", *SMALL, *extra, cwd=d)
        check("train %s: exit %d before training, naming it" % (" ".join(extra), rc),
              r.rc == rc and needle in r.err and refused_before_work(r), r)
    check("the long name was not created", not os.path.exists(os.path.join(d, long_name)))
    r = run("predict", "m.st", "--input", "data.csv", "--output", "", cwd=d)
    check("predict --output '': exit 2", r.rc == 2 and "--output" in r.err, r)
    r = run("predict", "m.st", "--input", "data.csv", "--output", "/proc/p.csv", cwd=d)
    check("predict --output under /proc: exit 1 before predicting",
          r.rc == 1 and "/proc" in r.err and "wrote" not in r.out, r)
    leftovers = [n for n in os.listdir(d) if ".tmp." in n]
    check("the checks leave no probe files", not leftovers, leftovers)


def run_stdio(args, cwd, stdin=None, stdout=None):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    p = subprocess.run([BIN] + args, cwd=cwd, stdin=stdin, stdout=stdout or subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=120)
    p.err = p.stderr.decode(errors="replace")
    return p


def mode_of(path):
    st = os.stat(path)
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


def test_replacing(d):
    """Standard input is an input; a replaced output keeps owner, group and mode; a symlink
    output is written through and stays a link; /dev/stdout is never renamed over."""
    data = os.path.join(d, "data.csv")
    with open(data, "rb") as f:
        before = f.read()
    with open(data, "rb") as f:
        p = run_stdio(["predict", "m.st", "--input", "-", "--output", "data.csv"], d, stdin=f)
    with open(data, "rb") as f:
        same = f.read() == before
    check("predict --input - --output X < X: exit 2 naming standard input, X unchanged",
          p.returncode == 2 and "--input '-'" in p.err and "standard input" in p.err and same,
          p.err)
    with open(data, "rb") as f:
        p = run_stdio(["predict", "m.st", "--input", "-", "--output", "p.csv"], d, stdin=f)
    check("predict --input - < X --output Y still predicts", p.returncode == 0, p.err)

    # Outputs that exist keep their mode (and owner and group, where we may give them).
    root = os.geteuid() == 0
    for name, mode in (("met.csv", 0o600), ("pred.csv", 0o640), ("keep.st", 0o600)):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write("old\n")
        os.chmod(path, mode)
        if root:
            os.chown(path, 65534, 65534)
    r = run("train", "--train", "data.csv", *SMALL, "--metrics", "met.csv", "--save", "keep.st",
            cwd=d)
    check("train over existing --metrics and --save", r.rc == 0, r)
    r = run("predict", "m.st", "--input", "data.csv", "--output", "pred.csv", cwd=d)
    check("predict over an existing --output", r.rc == 0, r)
    for name, mode in (("met.csv", 0o600), ("pred.csv", 0o640), ("keep.st", 0o600)):
        path = os.path.join(d, name)
        want = (mode, 65534, 65534) if root else (mode, os.geteuid(), mode_of(path)[2])
        with open(path, "rb") as f:
            replaced = f.read() != b"old\n"
        check("%s replaced, keeping mode %o%s" % (name, mode, " and owner nobody" if root else ""),
              replaced and mode_of(path) == want, (oct(mode_of(path)[0]), mode_of(path)[1:]))

    # A symlink output: the target is replaced (atomically, beside it), the link stays.
    os.mkdir(os.path.join(d, "real"))
    with open(os.path.join(d, "real", "ck.st"), "w") as f:
        f.write("old\n")
    os.symlink("real/ck.st", os.path.join(d, "ck-link.st"))
    r = run("train", "--train", "data.csv", *SMALL, "--save", "ck-link.st", cwd=d)
    info = run("info", "real/ck.st", cwd=d)
    check("--save LINK: the link stays a link, its target is the checkpoint",
          r.rc == 0 and os.path.islink(os.path.join(d, "ck-link.st")) and info.rc == 0 and
          os.listdir(os.path.join(d, "real")) == ["ck.st"], (r, info))

    # /dev/stdout (a link into /proc) with standard output redirected to a file: as root a
    # rename over it replaced the link in /dev; it is refused before training.
    out = os.path.join(d, "stdout.txt")
    with open(out, "wb") as f:
        p = run_stdio(["train", "--train", "data.csv", *SMALL, "--save", "/dev/stdout"], d,
                      stdout=f)
    with open(out, "rb") as f:
        text = f.read()
    check("--save /dev/stdout > f: refused naming /proc, nothing trained, /dev/stdout a link",
          p.returncode != 0 and "a /proc link" in p.err and b"epoch" not in text and
          os.path.islink("/dev/stdout"), p.err)


# ---- plots ----

def png_chunks(data):
    """The chunk types of a complete PNG (every CRC checked, IEND last), or None."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    at, types = 8, []
    while at + 12 <= len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 4:at + 8 + n]
        if at + 12 + n > len(data) or struct.unpack(">I", data[at + 8 + n:at + 12 + n])[0] \
                != zlib.crc32(body):
            return None
        types.append(kind)
        at += 12 + n
        if kind == b"IEND":
            return types if at == len(data) else None
    return None


def tiny_png():
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I",
                                                                      zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


HOSTILE = [
    'p\nsystem("touch PWNED1")\n#.png',
    "q'; system('touch PWNED2'); '.png",
    'dq"; system("touch PWNED3"); ".png',
    "back\\slash\\'; system('touch PWNED4') #.png",
    "tick`touch PWNED5`.png",
    "dollar$(touch PWNED6).png",
    "|touch PWNED7",
    "semi; touch PWNED8 ;.png",
    "-o PWNED9.png",
]


def test_hostile_names(d, gnuplot):
    if not gnuplot:
        print("SKIP: hostile plot names: gnuplot is not installed (Debian: gnuplot-nox)")
        return
    for k, name in enumerate(HOSTILE):
        work = os.path.join(d, "hostile%d" % k)
        os.mkdir(work)
        shutil.copy(os.path.join(d, "data.csv"), work)
        cmd = ["train", "--train", "data.csv", "--epochs", "2", "--hidden", "8", "--quiet",
               "--plot", name] if k % 2 == 0 else \
              ["lr-find", "--train", "data.csv", "--steps", "10", "--quiet", "--plot", name]
        r = run(*cmd, cwd=work)
        path = os.path.join(work, name)
        with open(path, "rb") if os.path.isfile(path) else open(os.devnull, "rb") as f:
            data = f.read()
        check("%s --plot %r: exit 0 and a complete PNG at exactly that name" % (cmd[0], name),
              r.rc == 0 and png_chunks(data) is not None, r)
        left = sorted(os.listdir(work))
        check("%r: nothing ran (no PWNED file) and nothing else is left" % name,
              left == sorted(["data.csv", name]) and not any("PWNED" in n for n in
                                                              os.listdir(d)), left)


def fake_gnuplot(d, body):
    """A directory holding a `gnuplot` that runs body (sh) after reading its script."""
    bin_dir = os.path.join(d, "fakebin%d" % len(os.listdir(d)))
    os.mkdir(bin_dir)
    path = os.path.join(bin_dir, "gnuplot")
    with open(path, "w") as f:
        f.write("#!/bin/sh\ncat > /dev/null\n" + body + "\n")
    os.chmod(path, 0o755)
    return bin_dir


def run_env(args, cwd, path=None, fsize=None):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if path is not None:
        env["PATH"] = path

    def limit():
        if fsize is not None:  # a disk that fills: writes past fsize fail (EFBIG)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    p = subprocess.run([BIN] + args, cwd=cwd, capture_output=True, env=env, preexec_fn=limit,
                       timeout=120)
    # Bytes in, text out: a gnuplot that wrote its PNG to our stdout must not stop the test.
    p.stdout = p.stdout.decode(errors="replace")
    p.stderr = p.stderr.decode(errors="replace")
    return p


def test_plot_failures(d, gnuplot):
    old = tiny_png()
    good = os.path.join(d, "good.png")
    with open(good, "wb") as f:
        f.write(old)
    with open(os.path.join(d, "half.png"), "wb") as f:
        f.write(old[:-7])
    base = ["train", "--train", "data.csv", *SMALL, "--plot", "curves.png"]
    sys_path = os.environ.get("PATH", "/usr/bin:/bin")
    cases = [
        ("gnuplot exits 1", "exit 1", "gnuplot failed (exit status 1)"),
        ("gnuplot exits 0 but writes nothing", "exit 0", "the file is empty"),
        ("gnuplot exits 0 with a PNG cut short", "cat '%s/half.png'" % d, "before its IEND"),
        ("gnuplot exits 0 with text", "echo oops", "it is not a PNG"),
        ("gnuplot is killed", "kill -9 $$", "killed by signal 9"),
    ]
    for what, body, needle in cases:
        with open(os.path.join(d, "curves.png"), "wb") as f:
            f.write(old)
        r = run_env(base, d, fake_gnuplot(d, body) + ":" + sys_path)
        with open(os.path.join(d, "curves.png"), "rb") as f:
            kept = f.read() == old
        check("%s: exit 1, the previous plot kept, said so" % what,
              r.returncode == 1 and kept and needle in r.stderr and "curves.png is unchanged"
              in r.stderr and "plot written" not in r.stderr, r.stderr)
    r = run_env(base, d, fake_gnuplot(d, "cat '%s'" % good) + ":" + sys_path)
    with open(os.path.join(d, "curves.png"), "rb") as f:
        got = f.read()
    check("a gnuplot that draws a complete PNG on stdout: exit 0, that PNG in place",
          r.returncode == 0 and got == old and "plot written to curves.png" in r.stderr, r.stderr)
    empty_bin = os.path.join(d, "nogp")
    os.makedirs(empty_bin, exist_ok=True)
    r = run_env(base, d, empty_bin)
    with open(os.path.join(d, "curves.png"), "rb") as f:
        got = f.read()
    check("no gnuplot: a warning, exit 0, the previous plot untouched",
          r.returncode == 0 and "gnuplot is not installed" in r.stderr and got == old, r.stderr)
    if gnuplot:  # the real gnuplot on a disk that fills after 8 KiB: it exits 0 all the same
        r = run_env(base, d, None, fsize=8192)
        with open(os.path.join(d, "curves.png"), "rb") as f:
            kept = f.read() == old
        check("real gnuplot on a full disk: exit 1, the previous plot kept",
              r.returncode == 1 and kept and "curves.png is unchanged" in r.stderr, r.stderr)
    leftovers = [n for n in os.listdir(d) if ".tmp." in n]
    check("failed plots leave no temporary file", not leftovers, leftovers)


def idx(path, dims, data):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(">%dI" % len(dims), *dims))
        f.write(bytes(data))


def main():
    gnuplot = shutil.which("gnuplot") is not None
    with tempdir() as d:
        write_csv(os.path.join(d, "data.csv"), blobs(300, 1))
        write_csv(os.path.join(d, "test.csv"), blobs(60, 2))
        os.symlink("data.csv", os.path.join(d, "link.csv"))
        os.link(os.path.join(d, "data.csv"), os.path.join(d, "hard.csv"))
        os.mkdir(os.path.join(d, "sub"))
        os.mkdir(os.path.join(d, "adir"))
        os.symlink("/dev/null", os.path.join(d, "null"))
        os.mkfifo(os.path.join(d, "fifo"))
        os.mkdir(os.path.join(d, "idx"))
        for split, n in (("train", 40), ("t10k", 10)):
            idx(os.path.join(d, "idx", split + "-images-idx3-ubyte"), [n, 2, 2],
                [(i * 7) % 256 for i in range(n * 4)])
            idx(os.path.join(d, "idx", split + "-labels-idx1-ubyte"), [n], [i % 3 for i in range(n)])
        with open(os.path.join(d, "run.cfg"), "w") as f:
            f.write("train = data.csv\n")
        r = run("train", "--train", "data.csv", "--test", "test.csv", *SMALL, "--save", "m.st",
                cwd=d)
        check("a checkpoint to predict with", r.rc == 0, r)
        test_clashes(d)
        test_unwritable(d)
        test_replacing(d)
    with tempdir() as d:
        write_csv(os.path.join(d, "data.csv"), blobs(300, 1))
        test_hostile_names(d, gnuplot)
    with tempdir() as d:
        write_csv(os.path.join(d, "data.csv"), blobs(300, 1))
        test_plot_failures(d, gnuplot)
    finish()


if __name__ == "__main__":
    main()
