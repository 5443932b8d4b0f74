#!/usr/bin/env python3
"""Checkpoints verify themselves: a byte flipped in any tensor, or any metadata entry edited
(run.scale_offset, run.loss, run.classes, every other key), is refused by info, eval, predict and
train --resume with a message naming the tensor or key; a checkpoint saved before checksums
existed still works, with a one-line notice that it is unverified.

The safetensors file is edited here with the standard library: the 8-byte header length, the
JSON header (re-serialised with the edit, padded to 8 bytes), the data unchanged.

usage: test_cli_integrity.py [path/to/backprop]"""
import json
import os
import struct

from clitest import blobs, check, finish, run, tempdir, write_csv


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(path, header, body):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def commands(ckpt):
    """Every command that reads a checkpoint, on ckpt."""
    return [
        ["info", ckpt],
        ["eval", ckpt, "--input", "test.csv"],
        ["predict", ckpt, "--input", "test.csv", "--output", "p.csv"],
        ["train", "--resume", ckpt, "--epochs", "3", "--save", "resumed.st", "--quiet"],
    ]


def test_flipped_tensors(d, header, body):
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    check("the checkpoint has model, optimizer and run tensors",
          any(k.startswith("optimizer.") for k in tensors) and "0.weight" in tensors, tensors)
    for name, t in sorted(tensors.items()):
        begin, end = t["data_offsets"]
        flipped = bytearray(body)
        flipped[(begin + end) // 2] ^= 0x04  # a finite float stays finite: only a checksum sees it
        write_st(os.path.join(d, "bad.st"), header, bytes(flipped))
        r = run("info", "bad.st", cwd=d)
        check("info: a byte flipped in tensor %s is named" % name,
              r.rc == 1 and "tensor '%s' does not match its checksum" % name in r.err
              and "checksums:" not in r.out, r)
    first = sorted(tensors)[0]
    begin, end = tensors[first]["data_offsets"]
    flipped = bytearray(body)
    flipped[begin] ^= 0x01
    write_st(os.path.join(d, "bad.st"), header, bytes(flipped))
    for args in commands("bad.st"):
        r = run(*args, cwd=d)
        check("%s refuses a flipped tensor, naming it" % args[0],
              r.rc == 1 and "tensor '%s' does not match its checksum" % first in r.err, r)
    check("... and wrote nothing", not os.path.exists(os.path.join(d, "p.csv"))
          and not os.path.exists(os.path.join(d, "resumed.st")))


def edited(value):
    if not value:
        return "1"
    i = len(value) // 2
    return value[:i] + ("2" if value[i] == "1" else "1") + value[i + 1:]


def test_edited_metadata(d, header, body):
    meta = header["__metadata__"]
    keys = sorted(meta)
    check("every kind of entry is there, checksums included",
          all(k in meta for k in ("run.scale_offset", "run.loss", "run.classes", "model.widths",
                                  "optimizer.lr", "run.cfg.lr", "checksum.meta.run.loss",
                                  "checksum.tensor.0.weight")), keys)
    for key in keys:
        h = json.loads(json.dumps(header))
        h["__metadata__"][key] = edited(meta[key])
        write_st(os.path.join(d, "bad.st"), h, body)
        r = run("info", "bad.st", cwd=d)
        owner = key
        kind = "metadata"
        if key.startswith("checksum.meta."):
            owner = key[len("checksum.meta."):]
        elif key.startswith("checksum.tensor."):
            owner, kind = key[len("checksum.tensor."):], "tensor"
        check("info: an edited %s is named" % key,
              r.rc == 1 and "%s '%s' does not match its checksum" % (kind, owner) in r.err, r)
    for key in ("run.scale_offset", "run.loss", "run.classes"):
        h = json.loads(json.dumps(header))
        h["__metadata__"][key] = {"run.loss": "mse", "run.classes": "4"}.get(key, "0,0,0")
        write_st(os.path.join(d, "bad.st"), h, body)
        for args in commands("bad.st"):
            r = run(*args, cwd=d)
            check("%s refuses an edited %s, naming it" % (args[0], key),
                  r.rc == 1 and "metadata '%s' does not match its checksum" % key in r.err, r)
    h = json.loads(json.dumps(header))
    h["__metadata__"]["run.note"] = "added"
    write_st(os.path.join(d, "bad.st"), h, body)
    r = run("info", "bad.st", cwd=d)
    check("an added entry is named", r.rc == 1 and "'run.note' has no checksum" in r.err, r)
    h = json.loads(json.dumps(header))
    del h["__metadata__"]["run.loss"]
    write_st(os.path.join(d, "bad.st"), h, body)
    r = run("info", "bad.st", cwd=d)
    check("a removed entry is named",
          r.rc == 1 and "'run.loss' is missing, but its checksum is stored" in r.err, r)


def test_unverified(d, header, body):
    h = json.loads(json.dumps(header))
    h["__metadata__"] = {k: v for k, v in header["__metadata__"].items()
                         if not k.startswith("checksum.")}
    write_st(os.path.join(d, "old.st"), h, body)
    for args in commands("old.st"):
        r = run(*args, cwd=d)
        notices = [l for l in r.err.splitlines() if "no checksums" in l]
        check("%s: a checkpoint without checksums works, with one notice" % args[0],
              r.rc == 0 and len(notices) == 1 and "unverified" in notices[0], r)
    r = run("info", "old.st", cwd=d)
    check("info says it is unverified", "checksums: none" in r.out, r.out[:400])
    r = run("info", "m.st", cwd=d)
    check("info says a new checkpoint is verified, and warns of nothing",
          r.rc == 0 and "checksums: verified" in r.out and r.err == "", r)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "train.csv"), blobs(300, 1))
        write_csv(os.path.join(d, "test.csv"), blobs(60, 2))
        r = run("train", "--train", "train.csv", "--test", "test.csv", "--hidden", "8,8",
                "--dropout", "0.1", "--epochs", "2", "--quiet", "--save", "m.st", cwd=d)
        check("a checkpoint to damage", r.rc == 0, r)
        header, body = read_st(os.path.join(d, "m.st"))
        test_flipped_tensors(d, header, body)
        test_edited_metadata(d, header, body)
        test_unverified(d, header, body)
    finish()


if __name__ == "__main__":
    main()
