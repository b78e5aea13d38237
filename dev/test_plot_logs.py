#!/usr/bin/env python3
"""Checks dev/plot_logs.py on logs written here with known numbers: the summary table's final
and best validation loss, median tokens/s (the first step left out) and peak memory, the labels
of runs that only their directories tell apart, a resumed log (the later line of a step wins),
the PNG, and the refusal of a file that is not a log. Prints "N passed, N failed"."""
import os
import subprocess
import sys
import tempfile

from checks import Checks

HERE = os.path.dirname(os.path.abspath(__file__))
suite = Checks("test_plot_logs")
check = suite.check


def write_log(path, header, tok, mem, losses, vals, resumed_tail=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(header + "\n")
        for i, (t, m, l) in enumerate(zip(tok, mem, losses)):
            f.write(f"step={i + 1} loss={l} lr=1e-3 grad_norm=1.0 tok_per_s={t} mfu=-1 mfu_exec=-1 mem_gib={m} dt_ms=1 comm_mib=0\n")
        for s, v in vals:
            f.write(f"step={s} val_loss={v} val_ppl=1\n")
        if resumed_tail:
            f.write(resumed_tail)


with tempfile.TemporaryDirectory() as tmp:
    hdr = "# grass.c config=d6 dim=192 layers=6 optimizer=adamw matrix_lr_scale=1 lr=0.001 B=8 T=128"
    a = os.path.join(tmp, "runA", "log.txt")
    b = os.path.join(tmp, "runB", "log.txt")
    # A: tok/s after step 1 = 100, 300, 200 -> median 200; peak memory 0.5
    write_log(a, hdr, [9999, 100, 300, 200], [0.25, 0.5, 0.5, 0.5], [5.0, 4.0, 3.5, 3.0], [(0, 6.0), (4, 3.25)])
    # B: resumed after step 2: the later step-3/4 lines win (tok/s 50 and 70 -> median of 40, 50, 70 = 50)
    write_log(b, hdr, [1, 40, 999, 999], [1.0, 1.0, 2.0, 2.0], [5.0, 4.0, 3.9, 3.8], [(0, 6.0), (2, 3.9), (4, 3.75)],
              resumed_tail="# resumed at step 2 with 1 rank(s)\n"
                           "step=3 loss=3.6 tok_per_s=50 mem_gib=1.5\nstep=4 loss=3.4 tok_per_s=70 mem_gib=1.5\n"
                           "step=4 val_loss=3.5 val_ppl=1\n")
    png = os.path.join(tmp, "out.png")
    r = subprocess.run([sys.executable, os.path.join(HERE, "plot_logs.py"), a, b, "-o", png], capture_output=True, text=True)
    check(r.returncode == 0, "plot_logs.py runs on two logs (%s)" % r.stderr.strip()[-200:])
    check(os.path.isfile(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 20000,
          "it writes a PNG (four panels: %d bytes)" % (os.path.getsize(png) if os.path.isfile(png) else 0))
    rows = {l.split(" (")[1].split(")")[0]: l.split(")")[1].split() for l in r.stdout.splitlines() if l.startswith("adamw (")}
    check(set(rows) == {"runA", "runB"}, "runs with the same header are labelled by their directories: %s" % sorted(rows))
    if set(rows) == {"runA", "runB"}:
        ra, rb = rows["runA"], rows["runB"]   # steps, final val, ppl, best val, tok/s, mem
        check(ra[0] == "4" and float(ra[1]) == 3.25 and float(ra[3]) == 3.25, "run A: 4 steps, final val 3.25 (%s)" % ra)
        check(float(ra[4]) == 200 and float(ra[5]) == 0.5, "run A: median tok/s 200 without step 1, peak memory 0.5 GiB (%s)" % ra)
        check(float(rb[1]) == 3.5 and float(rb[3]) == 3.5, "run B (resumed): the later val line of step 4 wins, 3.5 (%s)" % rb)
        check(float(rb[4]) == 50 and float(rb[5]) == 1.5, "run B (resumed): tok/s and memory from the later lines: 50, 1.5 (%s)" % rb)
    bad = os.path.join(tmp, "notalog.txt")
    open(bad, "w").write("hello\n")
    r = subprocess.run([sys.executable, os.path.join(HERE, "plot_logs.py"), bad, "-o", png], capture_output=True, text=True)
    check(r.returncode != 0 and "no step lines" in (r.stderr + r.stdout), "a file that is not a log is refused by name")

suite.finish()
