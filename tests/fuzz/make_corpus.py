#!/usr/bin/env python3
"""Writes the small seed corpora under tests/fuzz/corpus/ and the regression inputs under
tests/fuzz/regression/ (committed; rerun only to change them).
The checkpoint seeds are written by `backprop train` instead (see scripts/fuzz.sh's comments),
but for checkpoint/checksummed_3_2_3.st, made here from sgd_3_2_3.st: its run.* entries dropped
(under -max_len=4096) and the checksums of io/checksum.h added.
Layouts: fuzz_util.h's fuzz_split for two-file targets; a first option byte for csv/config/layers.

Seeds whose sizes multiply past 2^64 ("wrap"): each size fits its field, the product is
2^64 + r for a small r, and the body holds r elements, so a loader that multiplies without
checking sees a small, consistent file. In the seeds the first size (the sample count) divides r,
so even such a loader builds a whole dataset; the targets' mutators (fuzz_mutate.h) move factors
between sizes, swap them and complete them to a wrap, which is how they reach the inputs of
regression/: the same products with a sample count that does not divide r, which made a loader
that trusted the wrapped count write past its block (issue 18).
"""
import gzip
import io
import json
import os
import struct
import zlib

import numpy as np

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def idx(type_code, dims, payload):
    return (struct.pack(">BBBB", 0, 0, type_code, len(dims))
            + b"".join(struct.pack(">I", d) for d in dims) + payload)


def split(a, b):
    return struct.pack("<H", len(a)) + a + b


def npy(a):
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


img = idx(0x08, [3, 2, 2], bytes(range(12)))
put("idx/ubyte_3x2x2", split(img, idx(0x08, [3], bytes([0, 1, 2]))))
put("idx/float_2x3", split(idx(0x0D, [2, 3], struct.pack(">6f", 0.5, -1, 2, 3, 4, 5)),
                           idx(0x08, [2], bytes([1, 0]))))
put("idx/count_mismatch", split(img, idx(0x08, [2], bytes([1, 0]))))

x = npy(np.arange(6, dtype="<f4").reshape(3, 2))
put("npy/f4_i4", split(x, npy(np.array([0, 1, 0], dtype="<i4"))))
put("npy/features_only", split(x, b""))  # no targets file: BP_TARGET_NONE
put("npy/f8_i8", split(npy(np.arange(4, dtype="<f8").reshape(2, 2)),
                       npy(np.array([1, 0], dtype="<i8"))))
v = split(x, npy(np.ones((3, 2), dtype="<f4")))
put("npy/values", v[:2] + bytes([v[2] | 0x80]) + v[3:])  # first byte's top bit: value targets
put("npy/fortran", split(npy(np.asfortranarray(np.arange(6, dtype="<f4").reshape(3, 2))),
                         npy(np.array([0, 1, 2], dtype="<u1"))))

put("csv/header_label", bytes([0x60]) + b"a,b,label\n1,2,0\n3.5,-4e-1,1\n")
put("csv/no_header", bytes([0x00]) + b"1,2,0\n3,4,1\n5,6,2\n")
put("csv/semicolon_onehot", bytes([0x16]) + b"x;y1;y2\n0.1;1;0\r\n0.2;0;1\r\n")
put("csv/quoted", bytes([0x04]) + b'"a","b ,c",y\n"1",2,3\n')
put("csv/names", bytes([0x41]) + b'x,species\n1,cat\n2,"b"\n3, dog \n4,a\n')
put("csv/no_targets", bytes([0x52]) + b"a;b\n1;2\n3;4\n")

put("config/train", bytes([0]) + b'# a run\nhidden = 16,8\nlr = 0.01\nepochs=2\nquiet\n'
    b'device = "cpu"\n')
put("config/bad", bytes([0]) + b"lr = fast\n")
put("config/eval", bytes([1]) + b"--batch = 64\nloss = ce # inline\n")

put("layers/hidden", b"\x01128,64")
put("layers/layers", b"\x00784,256,10")
put("layers/bad", b"\x0016,,-3")
put("layers/spaces", b"\x01 8 , 4 ")


def checksummed(seed):
    """A checkpoint with the writer's checksums: crc32 of each tensor's bytes, and of each
    metadata entry's key, NUL, value."""
    with open(seed, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    meta = {k: v for k, v in header["__metadata__"].items() if not k.startswith("run.")}
    for k in list(meta):
        meta["checksum.meta." + k] = "crc32:%08x" % zlib.crc32((k + "\0" + meta[k]).encode())
    for name, t in header.items():
        if name != "__metadata__":
            a, b = t["data_offsets"]
            meta["checksum.tensor." + name] = "crc32:%08x" % zlib.crc32(body[a:b])
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


put("checkpoint/checksummed_3_2_3.st", checksummed("checkpoint/sgd_3_2_3.st"))


# ---- sizes that multiply past 2^64 -------------------------------------------------------------

WRAP = 1 << 64


def wrapped(dims, r):
    p = 1
    for d in dims:
        p *= d
    assert p == WRAP + r or p == 2 * WRAP + r, (dims, p - WRAP)
    return dims


def npy_raw(descr, dims, body):
    """An .npy file written by hand: its shape need not fit in memory."""
    d = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join("%d, " % x for x in dims))
    d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + body


def safetensors_raw(shape, nbytes):
    h = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}},
                   separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(nbytes)


# 2^64 + 4 = 2^2 * 5 * 5581 * 8681 * 49477 * 384773; 2^64 + 32 = 2^5 * 3 * 2833 * 37171 *
# 1824726041 (coreutils `factor`); IDX sizes are 32-bit.
idx4 = wrapped([4, 5 * 5581, 8681 * 49477, 384773], 4)
idx32 = wrapped([32, 3 * 2833, 37171, 1824726041], 32)
put("idx/wrap_4", split(idx(0x08, idx4, bytes(range(4))), idx(0x08, [4], bytes([0, 1, 2, 3]))))
put("idx/wrap_32", split(idx(0x08, idx32, bytes(32)), idx(0x08, [32], bytes(32))))
put("idx/huge_2e40", split(idx(0x08, [1 << 20, 1 << 10, 1 << 10], bytes(8)),
                           idx(0x08, [1 << 20], bytes(8))))
put("idx/short_body", split(idx(0x08, [3, 2, 2], bytes(5)), idx(0x08, [3], bytes(3))))
# (2^21 + 1) * (2^43 - 2^22 + 2) = 2^64 + 2; NPY sizes stay below 2^48.
L = -(-WRAP // ((1 << 21) + 1))
npy4 = wrapped([2, (1 << 21) + 1, L], 4)
put("npy/wrap_4", split(npy_raw("<f4", npy4, bytes(16)), b""))
put("npy/wrap_zero", split(npy_raw("|u1", [1 << 32, 1 << 32], b""), b""))
put("npy/huge_2e47", split(npy_raw("<f4", [1 << 47, 3], bytes(12)), b""))
put("checkpoint/wrap_8.st", safetensors_raw([(1 << 21) + 1, L], 8))

# Regression inputs: the IDX and NPY ones made a loader without checked products write past a
# heap block; the safetensors one holds its reader to the same arithmetic.
put("../regression/idx/wrap_4_samples_20",
    split(idx(0x08, wrapped([20, 5581, 8681 * 49477, 384773], 4), bytes(4)),
          idx(0x08, [20], bytes(20))))
# Issue 18's IDX file, 65537 x 65536 x 4294901761 (2^64 + 65536), and its labels, both gzip.
put("../regression/idx/issue18_65537x65536x4294901761_gz",
    split(gzip.compress(idx(0x08, wrapped([65537, 65536, 4294901761], 65536), bytes(65536)),
                        mtime=0),
          gzip.compress(idx(0x08, [65537], bytes(65537)), mtime=0)))
put("../regression/npy/wrap_2_features_only",
    split(npy_raw("<f4", wrapped([(1 << 21) + 1, L], 2), bytes(8)), b""))
put("../regression/checkpoint/wrap_8.st", safetensors_raw([L, (1 << 21) + 1], 8))
