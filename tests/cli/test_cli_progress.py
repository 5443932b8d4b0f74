#!/usr/bin/env python3
"""The progress bar on a terminal (a pseudo-terminal here), as tqdm draws one:

- every redraw fits the terminal (at most columns - 1 wide, so it never wraps) at 40, 60, 80
  and 150 columns, in ASCII and in UTF-8 block cells, and follows a resize (the width is asked
  for at each redraw); without a size from the terminal, COLUMNS;
- the fields: the percentage and the bar agree with the step count; elapsed<ETA of the epoch
  and of the run (the run's ETA never below the epoch's, both 00:00 at the end), a smoothed
  samples/s, the running loss and, for classes, the train accuracy; narrower terminals drop
  fields from the end (rate first), then the bar;
- the train accuracy (counted by each step from its own logits) is what eval gives on the same
  rows with the same weights, and counting it does not change the training by a bit;
- --quiet draws nothing; a pipe gets plain lines (test_cli_train.py).

usage: test_cli_progress.py [path/to/backprop]"""
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

from clitest import BIN, blobs, check, checksums, finish, run, tempdir, write_csv

ESC = re.compile(r"\x1b\[K")
FRAME = re.compile(r"^epoch (\d+)/(\d+): +(\d+)%(?:\|([^|]*)\|)? (\d+)/(\d+)(?: \[(.*)\])?$")


def set_size(fd, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))


def on_pty(args, cwd, cols, env=None, resize=None, stop_after_frames=None):
    """Runs backprop with stderr on a pseudo-terminal of `cols` columns. resize: (frames seen,
    new width): set it once that many frames were read; stop_after_frames: SIGTERM once that many
    frames arrived after the resize had time to take effect. Returns (rc, stdout, [(frame,
    width when read)])."""
    master, slave = pty.openpty()
    set_size(slave, cols)
    full_env = dict(os.environ, OMP_NUM_THREADS="2")
    full_env.pop("COLUMNS", None)
    full_env.update(env or {})
    proc = subprocess.Popen([BIN] + args, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=full_env)
    os.close(slave)
    frames, pending, width, resized_at, after = [], "", cols, None, 0
    deadline = time.time() + 240
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        pending += data.decode("utf-8", errors="replace")
        *done, pending = pending.split("\r")
        for f in done:
            f = ESC.sub("", f)
            if not f:
                continue
            settled = resized_at is not None and time.time() - resized_at > 0.5
            frames.append((f, width if resized_at is None or settled else None))
            if settled:
                after += 1
        if resize and resized_at is None and len(frames) >= resize[0]:
            set_size(master, resize[1])
            width, resized_at = resize[1], time.time()
        if stop_after_frames and after >= stop_after_frames and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            stop_after_frames = None
    if ESC.sub("", pending):
        frames.append((ESC.sub("", pending), width))
    out = proc.stdout.read().decode()
    proc.wait()
    os.close(master)
    return proc.returncode, out, frames


def clock(text):
    parts = [int(p) for p in text.split(":")]
    return sum(v * 60 ** i for i, v in enumerate(reversed(parts)))


def parse(frame):
    """The fields of a bar frame, or None."""
    m = FRAME.match(frame.split("\ninterrupted")[0])
    if not m:
        return None
    f = {"epoch": int(m.group(1)), "epochs": int(m.group(2)), "pct": int(m.group(3)),
         "bar": m.group(4), "n": int(m.group(5)), "total": int(m.group(6)), "items": {}}
    for item in (m.group(7) or "").split(", "):
        if re.match(r"^\d[\d:]*<", item):
            f["items"]["times"] = [clock(v) if v != "?" else None for v in item.split("<")]
        elif item.startswith("run "):
            f["items"]["run"] = [clock(v) if v != "?" else None for v in item[4:].split("<")]
        elif item.endswith("samples/s"):
            f["items"]["rate"] = item[:-len(" samples/s")]
        elif item.startswith("loss="):
            f["items"]["loss"] = float(item[5:])
        elif item.startswith("acc="):
            f["items"]["acc"] = float(item[4:-1])
    return f


def bar_ok(f, unicode):
    """The bar's cells from the fraction n/total, as tqdm fills them."""
    w = len(f["bar"])
    cells = f["n"] / f["total"] * w
    full = int(cells)
    if unicode:
        part = int((cells - full) * 8)
        want = "█" * full + ((" ▏▎▍▌▋▊▉"[part]) if full < w else "")
    else:
        part = int((cells - full) * 10)
        want = "#" * full + ((str(part) if part else " ") if full < w else "")
    return f["bar"] == want + " " * (w - len(want))


def test_widths(d):
    base = ["train", "--train", "mid.csv", "--hidden", "64", "--batch", "16", "--epochs", "2",
            "--val-split", "0.1"]
    for cols, locale in ((40, "C"), (60, "C"), (80, "C.UTF-8"), (150, "C.UTF-8")):
        rc, _, frames = on_pty(base, d, cols, env={"LC_ALL": locale})
        parsed = [parse(f) for f, _ in frames]
        check("%d columns: runs, draws bars" % cols, rc == 0 and len(frames) >= 2, frames[:3])
        too_wide = [f for f, _ in frames if len(f) > cols - 1]
        check("%d columns: every redraw fits in %d columns (no wrap)" % (cols, cols - 1),
              not too_wide, too_wide[:2])
        check("%d columns: every redraw is one line, the bar's form" % cols,
              all(p is not None for p in parsed) and not any("\n" in f for f, _ in frames),
              [f for (f, _), p in zip(frames, parsed) if p is None][:2])
        good = [p for p in parsed if p]
        check("%d columns: the percentage is the step count's" % cols,
              all(p["pct"] == 100 * p["n"] // p["total"] for p in good), good[:2])
        barred = [p for p in good if p["bar"] is not None]
        check("%d columns: the bar's cells are the step count's (%s)" % (cols, locale),
              all(bar_ok(p, locale != "C") for p in barred), [p["bar"] for p in barred][:3])
        last = good[-1] if good else {"items": {}, "bar": None}
        if cols == 40:
            check("40 columns: epoch, percentage, steps and elapsed<ETA, no room for a bar",
                  last["bar"] is None and "times" in last["items"], frames[-1])
        if cols == 60:
            check("60 columns: a bar beside elapsed<ETA",
                  last["bar"] is not None and len(last["bar"]) >= 6 and "times" in last["items"],
                  frames[-1])
        if cols == 150:
            check("150 columns: every field: elapsed<ETA, rate, loss, acc, run elapsed<ETA",
                  set(last["items"]) == {"times", "rate", "loss", "acc", "run"}
                  and len(last["bar"]) >= 6, frames[-1])
            ends = [p for p in good if p["n"] == p["total"]]
            check("at the end of each epoch its ETA is 00:00, and the run's at the last",
                  len(ends) == 2 and all(p["items"]["times"][1] == 0 for p in ends)
                  and ends[-1]["items"]["run"][1] == 0, [f for f, _ in frames][-3:])
    rc, _, frames = on_pty(base, d, 0, env={"LC_ALL": "C", "COLUMNS": "50"})
    check("a terminal without a size: COLUMNS=50 is the width",
          rc == 0 and frames and all(len(f) <= 49 for f, _ in frames)
          and max(len(f) for f, _ in frames) >= 40, frames[-2:])
    rc, _, frames = on_pty(base + ["--quiet"], d, 80)
    check("--quiet: no bar", rc == 0 and not frames, frames[:2])
    rc, _, frames = on_pty(["train", "--train", "reg.csv", "--loss", "mse", "--hidden", "8",
                            "--epochs", "2"], d, 150)
    check("a regression has no accuracy field",
          rc == 0 and frames and all("acc=" not in f for f, _ in frames), frames[-1:])


def test_resize_and_times(d):
    args = ["train", "--train", "long.csv", "--hidden", "256,256", "--batch", "16", "--epochs",
            "40", "--val-split", "0.05"]
    rc, _, frames = on_pty(args, d, 150, env={"LC_ALL": "C.UTF-8"}, resize=(8, 50),
                           stop_after_frames=8)
    before = [f for f, w in frames if w == 150]
    after = [f for f, w in frames if w == 50]
    check("resize: the run draws at 150 columns, then at 50 (stopped by SIGTERM, 143)",
          rc == 143 and len(before) >= 8 and len(after) >= 8, (rc, len(before), len(after)))
    check("before: redraws use the width (up to 149 columns)",
          all(len(f) <= 149 for f in before) and max(len(f) for f in before) > 100,
          before[-1:])
    check("after: every redraw fits in 49 columns", all(len(f) <= 49 for f in after), after[:3])
    parsed = [parse(f) for f, w in frames if w is not None]
    parsed = [p for p in parsed if p and "times" in p["items"]]
    mono = all(b["items"]["times"][0] >= a["items"]["times"][0]
               for a, b in zip(parsed, parsed[1:]) if a["epoch"] == b["epoch"])
    check("elapsed never runs backwards within an epoch", mono and len(parsed) >= 10)
    both = [p for p in parsed if "run" in p["items"] and None not in p["items"]["run"]
            and None not in p["items"]["times"]]
    check("the run's ETA is never below the epoch's, its elapsed never below the epoch's",
          both and all(p["items"]["run"][1] + 1 >= p["items"]["times"][1]
                       and p["items"]["run"][0] + 1 >= p["items"]["times"][0] for p in both)
          and any(p["items"]["run"][1] > p["items"]["times"][1] for p in both),
          [(p["items"]["times"], p["items"]["run"]) for p in both][:5])
    rates = [p["items"]["rate"] for p in parsed if "rate" in p["items"]]
    check("a rate in samples/s (three digits and a prefix)",
          rates and all(re.match(r"^(\d+(\.\d+)?[kMG]?|\?)$", r) for r in rates), rates[:5])


def test_accuracy(d):
    base = ["--train", "mid.csv", "--hidden", "16,16", "--batch", "32", "--val-split", "0",
            "--seed", "5", "--device", "cpu"]
    sums = {}
    for how in ("off", "on"):
        r = run("train", *base, "--epochs", "2", "--dropout", "0.2", "--train-acc", how, "--save",
                how + ".st", "--json", cwd=d)
        sums[how] = checksums(run("info", how + ".st", cwd=d).out)
        check("--train-acc %s trains" % how, r.rc == 0 and len(sums[how]) == 2, r)
    check("counting the accuracy changes nothing: parameters and optimizer state bitwise equal "
          "with --train-acc off and on (with dropout)",
          sums["off"] == sums["on"], sums)
    # A rate so small that no weight moves: the epoch's accuracy is the model's on the data.
    tiny = base + ["--lr", "1e-30"]
    one = run("train", *tiny, "--epochs", "1", "--save", "one.st", "--quiet", cwd=d)
    rc, out, frames = on_pty(["train", *tiny, "--epochs", "2", "--save", "two.st", "--json"], d,
                             150)
    check("(lr 1e-30: 1 and 2 epochs end on the same weights)",
          one.rc == 0 and rc == 0 and checksums(run("info", "one.st", cwd=d).out)[1:]
          == checksums(run("info", "two.st", cwd=d).out)[1:])
    s = json.loads(out) if rc == 0 else {"history": [{}, {}]}
    h = s["history"][1]
    ev = run("eval", "two.st", "--input", "mid.csv", "--batch", "32", "--json", cwd=d)
    e = json.loads(ev.out) if ev.rc == 0 else {}
    n = 1200
    check("the train accuracy counts every row of the epoch (%s of %d)"
          % (h.get("train_accuracy_rows"), n), h.get("train_accuracy_rows") == n, h)
    check("... and its accuracy is eval's on the same rows and weights (%s vs %s)"
          % (h.get("train_accuracy"), e.get("accuracy")),
          e.get("samples") == n and h.get("train_accuracy") is not None
          and round(h["train_accuracy"] * n) == round(e["accuracy"] * n), (h, e))
    ends = [parse(f) for f, _ in frames]
    ends = [p for p in ends if p and p["epoch"] == 2 and p["n"] == p["total"]]
    check("the bar shows it at the end of the epoch (acc=%s%%)"
          % (ends[-1]["items"].get("acc") if ends else "?"),
          ends and abs(ends[-1]["items"].get("acc", -1) - 100 * h["train_accuracy"]) <= 0.05,
          frames[-2:])
    r = run("train", "--train", "long.csv", "--hidden", "64", "--batch", "16", "--epochs", "1",
            "--val-split", "0", "--quiet", "--json", cwd=d)
    h = json.loads(r.out)["history"][0] if r.rc == 0 else {}
    check("a long epoch counts every row too (%s of 20000), at no cost"
          % h.get("train_accuracy_rows"),
          r.rc == 0 and h.get("train_accuracy_rows") == 20000 and "train_accuracy_seconds" not in h,
          h)
    r = run("train", "--train", "long.csv", "--hidden", "8", "--epochs", "1", "--val-split", "0",
            "--quiet", "--json", "--train-acc", "off", cwd=d)
    h = json.loads(r.out)["history"][0] if r.rc == 0 else {}
    check("--train-acc off: no accuracy", r.rc == 0 and h.get("train_accuracy") is None, h)


def main():
    with tempdir() as d:
        write_csv(os.path.join(d, "mid.csv"), blobs(1200, 3))
        write_csv(os.path.join(d, "long.csv"), blobs(20000, 7))
        with open(os.path.join(d, "reg.csv"), "w") as f:
            f.write("a,b,y\n" + "".join("%.3f,%.3f,%.4f\n" % (i / 100, (i * 7 % 13) / 13,
                                                              i / 37) for i in range(300)))
        test_widths(d)
        test_resize_and_times(d)
        test_accuracy(d)
    finish()


if __name__ == "__main__":
    main()
