"""Helpers for the `backprop` command's tests: find the binary, run it, make small data sets,
print PASS/FAIL lines and exit non-zero when anything failed. Standard library only."""
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

_failures = []


def binary():
    """The backprop binary: argv[1], else $BACKPROP, else build/backprop beside the sources."""
    if len(sys.argv) > 1:
        return os.path.abspath(sys.argv[1])
    if os.environ.get("BACKPROP"):
        return os.path.abspath(os.environ["BACKPROP"])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "build", "backprop")


BIN = binary()


class Result:
    def __init__(self, args, proc):
        self.args = args
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __str__(self):
        return "backprop %s -> %d\n--- stdout\n%s--- stderr\n%s" % (
            " ".join(self.args), self.rc, self.out, self.err)


def run(*args, cwd=None, timeout=120):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")  # bitwise checks need a fixed thread count
    proc = subprocess.run([BIN] + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return Result([str(a) for a in args], proc)


def check(name, ok, detail=""):
    if ok:
        print("PASS: %s" % name)
    else:
        print("FAIL: %s" % name)
        if detail:
            print("  " + str(detail).replace("\n", "\n  "))
        _failures.append(name)
    sys.stdout.flush()
    return ok


def finish():
    if _failures:
        print("%d check(s) failed: %s" % (len(_failures), ", ".join(_failures)))
        sys.exit(1)
    print("all checks passed")
    sys.exit(0)


def tempdir():
    return tempfile.TemporaryDirectory(prefix="backprop-cli-")


# ---- data ----

CENTERS = [(0.0, 0.0), (3.0, 0.0), (0.0, 3.0)]


def blobs(n, seed, classes=3, sigma=1.1):
    """n points in `classes` overlapping Gaussian blobs (about 90% separable) with a noise
    feature: rows of (x0, x1, x2, label)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        c = rng.randrange(classes)
        cx, cy = CENTERS[c % len(CENTERS)]
        rows.append((cx + rng.gauss(0, sigma), cy + rng.gauss(0, sigma), rng.gauss(0, 1), c))
    return rows


def write_csv(path, rows, header=("x0", "x1", "x2", "label"), scale=1.0):
    with open(path, "w") as f:
        if header:
            f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join("%.5f" % (v * scale) for v in r[:-1]) + ",%d\n" % r[-1])


def write_npy(path, values, shape, descr):
    """A C-order .npy file: descr '<f4' or '<i8'."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, "(%d,)" % shape[0] if len(shape) == 1 else "(%d, %d)" % shape)
    total = 10 + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    fmt = {"<f4": "<%df", "<i8": "<%dq"}[descr] % len(values)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(fmt, *values))


def read_npy(path):
    """(shape, descr, values) of a .npy file written by predict."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x93NUMPY\x01\x00":
        raise ValueError("not an NPY v1.0 file")
    hlen = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + hlen].decode()
    descr = re.search(r"'descr': '([^']+)'", header).group(1)
    shape = tuple(int(x) for x in re.search(r"'shape': \(([^)]*)\)", header).group(1).split(",")
                  if x.strip())
    count = 1
    for s in shape:
        count *= s
    fmt = {"<f4": "<%df", "<i4": "<%di", "<i8": "<%dq"}[descr] % count
    values = struct.unpack(fmt, data[10 + hlen:10 + hlen + struct.calcsize(fmt)])
    return shape, descr, values


def accuracy_in(text):
    """The last 'accuracy NN.NN%' in text, as a float, or None."""
    found = re.findall(r"accuracy ([0-9.]+)%", text)
    return float(found[-1]) if found else None


def checksums(info_text):
    """The parameter and optimizer checksums `backprop info` prints."""
    return re.findall(r"checksum (fnv1a64:[0-9a-f]+)", info_text)
