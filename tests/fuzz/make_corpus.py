#!/usr/bin/env python3
"""Writes the small seed corpora under tests/fuzz/corpus/ (committed; rerun only to change them).
The checkpoint seeds are written by `backprop train` instead (see scripts/fuzz.sh's comments),
but for checkpoint/checksummed_3_2_3.st, made here from sgd_3_2_3.st: its run.* entries dropped
(under -max_len=4096) and the checksums of io/checksum.h added.
Layouts: fuzz_util.h's fuzz_split for two-file targets; a first option byte for csv/config/layers.
"""
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
