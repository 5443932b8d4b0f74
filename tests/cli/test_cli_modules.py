#!/usr/bin/env python3
"""backprop runs no code from the folder it is run in, and says what is wrong with a module:

- no run path (RUNPATH/RPATH) of the binary, of libbackprop.so or of a module beside it has an
  empty entry (the loader reads one as the current folder) or a relative one;
- with a libz.so.1, a libgomp.so.1, every other library the binary needs and each module file
  planted in the current folder, `backprop --help` and a run that loads the CUDA module open none
  of them (strace -f -e trace=openat; skipped, with the reason, when strace is missing);
- BP_CUDA_MODULE naming a folder, a text file or a relative path is answered with what is wrong
  with that path, not with a question about the CUDA runtime; a build without the CUDA backend
  says so in plain words.

usage: test_cli_modules.py [path/to/backprop]"""
import os
import shutil
import subprocess

from clitest import BIN, blobs, check, finish, run, tempdir, write_csv

HERE = os.path.dirname(BIN)


def elf_files():
    """The binary and every shared object the build put beside it."""
    out = [BIN]
    for name in sorted(os.listdir(HERE)):
        p = os.path.join(HERE, name)
        if name.endswith(".so") or ".so." in name:
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def run_paths(path):
    """The RUNPATH and RPATH strings of an ELF file (readelf -d)."""
    text = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    found = []
    for line in text.splitlines():
        if "(RUNPATH)" in line or "(RPATH)" in line:
            found.append(line[line.index("[") + 1:line.rindex("]")])
    return found


def bad_entries(value):
    """Entries the loader would read against the current folder: empty or relative."""
    return [e for e in value.split(":") if not e.startswith("/") and not e.startswith("$ORIGIN")
            and not e.startswith("${ORIGIN}")]


def needed(path):
    text = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return [line[line.index("[") + 1:line.rindex("]")] for line in text.splitlines()
            if "(NEEDED)" in line]


def check_run_paths():
    if not shutil.which("readelf"):
        print("SKIP: run paths (readelf is not installed)")
        return
    for f in elf_files():
        values = run_paths(f)
        bad = [e for v in values for e in bad_entries(v)]
        check("%s: no empty or relative run path entry" % os.path.basename(f), not bad,
              "run paths %r, bad entries %r" % (values, bad))


def cuda_module_built(data):
    r = run("train", "--train", data, "--device", "cuda", "--epochs", "1", "--quiet")
    return "made without the CUDA backend" not in r.err


def check_planted(data):
    """Plants every library the binary needs, and each module, in the folder it runs in."""
    if not shutil.which("strace"):
        print("SKIP: planted libraries (strace is not installed; scripts/install-deps.sh adds it)")
        return
    if subprocess.run(["strace", "-qq", "-o", os.devnull, "true"], capture_output=True).returncode:
        print("SKIP: planted libraries (strace cannot trace here: ptrace is not permitted)")
        return
    with tempdir() as d:
        plant = os.path.join(d, "plant")
        os.mkdir(plant)
        names = set(["libz.so.1", "libgomp.so.1", "libbackprop_cuda.so", "libbackprop_mpi.so",
                     "libbackprop.so.0", "libcudart.so.12", "libcudart.so.13", "libcublas.so.12",
                     "libcublas.so.13", "libdnnl.so.3", "libopenblas.so.0"])
        for f in elf_files():
            names.update(needed(f))
        for n in names:
            with open(os.path.join(plant, n), "w") as fh:
                fh.write("planted: must never be opened\n")
        env = dict(os.environ)
        env.pop("BP_CUDA_MODULE", None)
        for args in (["--help"], ["train", "--train", data, "--epochs", "1", "--hidden", "4",
                                  "--batch", "16", "--quiet", "--device", "cuda"]):
            log = os.path.join(d, "strace.log")
            subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open", "-o", log, BIN] + args,
                           cwd=plant, env=env, capture_output=True, text=True, timeout=120)
            with open(log) as fh:
                lines = fh.read().splitlines()
            opened = [l for l in lines if any(('"%s"' % n) in l or ('"./%s"' % n) in l or
                                              ('%s/%s"' % (plant, n)) in l for n in names)]
            check("backprop %s: no library planted in the current folder is opened" % args[0],
                  lines and not opened, "\n".join(opened[:10]) or "strace wrote nothing")


def check_module_messages(data):
    if not cuda_module_built(data):
        r = run("train", "--train", data, "--device", "cuda", "--epochs", "1")
        check("a build without CUDA says so in plain words",
              "this build of backprop was made without the CUDA backend" in r.err and
              "has no the" not in r.err, r)
        return
    with tempdir() as d:
        folder = os.path.join(d, "modfolder")
        os.mkdir(folder)
        text = os.path.join(d, "libbackprop_cuda.so")
        with open(text, "w") as fh:
            fh.write("not a library\n")
        cases = [(folder, "is a folder, not a module file"),
                 (text, "is not a shared library (it does not start with an ELF header)"),
                 ("libbackprop_cuda.so", "is not an absolute path")]
        for value, says in cases:
            env = dict(os.environ, BP_CUDA_MODULE=value)
            p = subprocess.run([BIN, "train", "--train", data, "--device", "cuda", "--epochs", "1"],
                               cwd=d, env=env, capture_output=True, text=True, timeout=60)
            check("BP_CUDA_MODULE=%s: says what is wrong with it" % os.path.basename(value),
                  p.returncode != 0 and says in p.stderr and "CUDA runtime" not in p.stderr,
                  p.stderr)


def main():
    check_run_paths()
    with tempdir() as d:
        data = os.path.join(d, "train.csv")
        write_csv(data, blobs(64, 1))
        check_planted(data)
        check_module_messages(data)
    finish()


if __name__ == "__main__":
    main()
