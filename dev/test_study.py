#!/usr/bin/env python3
"""Checks the study's machinery end to end, scripts/compare_optimizers.sh and dev/study_table.py,
with a stand-in trainer whose final losses are known in advance, so the tests need no training:

- PRESET=moments schedules what docs/GRASS_IMPL.md says: both w384 cells, AdamW, GaLore and Grass
  top-r and multinorm with reset and keep on the same alphas at seed 1, then seeds 2 3 for each
  family's best and for each refresh state's own best;
- the keep runs pass --grass-refresh-state keep, the other Grass runs reset, and a run of a binary
  from before the flag (which always reset) counts as the same run, not a conflict;
- a binary without the flag skips the keep runs and still runs the rest;
- PRESET=horizon: 600 steps, K 100, validation every 50, the 150-step best, half of it and 2, 4, 8 times it;
- the tables: the finals, the keep-vs-reset table's Welch t against a direct computation and its
  verdicts, the gap to AdamW during training in %, captured= read from the refresh lines.
Prints "N passed, N failed"; exits 1 on a failure."""
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

from checks import Checks

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
suite = Checks("test_study")
check = suite.check


# The stand-in trainer. Its final validation loss is a known function of the run's flags:
#   5 - 0.5 (the same for all) + (log2(x / x_opt))^2 * 0.01 + 0.002 * seed + method offset
# with x the alpha / matrix scale and x_opt and the offset per method (below); keep is 0.03 better
# than reset for multinorm and 0.006 worse for top-r. A curve: linear from 6 to the final value.
FAKE = r'''#!/usr/bin/env python3
import math, os, sys
FLAGS = "--matrix-lr-scale --galore-scale galore --grass-upscale --grad-dtype" + (" --grass-refresh-state" if HAVE_KEEP else "")
a = sys.argv[1:]
if a == ["-h"]:
    print("usage: " + FLAGS); sys.exit(0)
def arg(name, default=None):
    return a[a.index(name) + 1] if name in a else default
if arg("--grass-refresh-state") and not HAVE_KEEP:
    print("error: unknown option --grass-refresh-state"); sys.exit(2)
if arg("--plan-only") == "1":
    print("  optimizer states                     37.5 MiB"); print("  gradients (dense)                    12.0 MiB"); sys.exit(0)
out, steps, every, seed = arg("-o"), int(arg("-x")), int(arg("-v")), int(arg("--seed"))
opt, K = arg("--optimizer"), int(arg("--update-freq", "0"))
state = arg("--grass-refresh-state", "reset")
if opt == "adamw":
    x, xopt, off = float(arg("--matrix-lr-scale")), 0.0125, 0.0
    if x < 1e-5: off = 0.2
elif opt == "galore":
    x, xopt, off = float(arg("--galore-scale")), 0.03125, 0.001
else:
    sel = arg("--grass-select")
    x = float(arg("--grass-scale"))
    xopt, off = (0.0078125, 0.08) if sel == "topr" else (0.015625, 0.07)
    if state == "keep":
        xopt, off = (xopt, off + 0.006) if sel == "topr" else (xopt * 2, off - 0.03)
final = 4.5 + (math.log2(x / xopt)) ** 2 * 0.01 + 0.002 * seed + off
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "log.txt"), "w") as f:
    f.write(f"# grass.c config=d6 optimizer={opt} steps={steps}\n")
    for s in range(0, steps + 1):
        v = 6.0 + (final - 6.0) * s / steps
        if s > 0:
            f.write(f"step={s} loss={v:.6f} lr=1e-3 grad_norm=1.0 tok_per_s=2000 mfu=-1 mfu_exec=-1 mem_gib=0.1 dt_ms=1 comm_mib=0\n")
        if opt == "grass" and K > 0 and s < steps and s % K == 0:
            f.write(f"step={s + 1} refresh=1 distinct=10 draws=10 mult_mean=1.0 mult_max=1.0 captured={0.5 + 0.01 * s / K:.4f} sel_hash=0 rows=10\n")
        if s % every == 0 or s == steps:
            f.write(f"step={s} val_loss={v:.6f} val_ppl=1\n")
'''


def make_fake(path, have_keep):
    with open(path, "w") as f:
        f.write(FAKE.replace("import math, os, sys\n", f"import math, os, sys\nHAVE_KEEP = {have_keep}\n", 1))
    os.chmod(path, 0o755)


def make_corpus(data_root, name, vocab=4096):
    d = os.path.join(data_root, name)
    os.makedirs(d, exist_ok=True)
    for split in ("train", "val"):
        with open(os.path.join(d, f"{name}_{split}_000000.bin"), "wb") as f:
            f.write(struct.pack("<8q", 0, 0, 0, 0, vocab, 0, 0, 0))
    open(os.path.join(d, "tokenizer.bin"), "wb").close()


def study(env, **kw):
    e = dict(os.environ)
    for k in list(e):
        if re.match(r"^(W384_|D6_)?(ADAMW_SCALES|GALORE_ALPHAS|TOPR_ALPHAS|MULTINORM_ALPHAS|UPSCALES|VARIANTS)$", k) \
                or k in ("PRESET", "STEPS", "K", "SIZES", "CORPORA", "SEEDS", "REFRESH_STATES", "ONLY", "DRY", "EVAL_EVERY"):
            del e[k]
    e.update(env)
    e.update({k: str(v) for k, v in kw.items()})
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts/compare_optimizers.sh")], env=e, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def run_dirs(cell):
    return sorted(e for e in os.listdir(cell) if os.path.isdir(os.path.join(cell, e))) if os.path.isdir(cell) else []


def args_of(run_dir):
    return open(os.path.join(run_dir, "args.txt")).read().split("\n")


def expected(opt, x, seed, state="reset", sel=None):
    if opt == "adamw":
        xopt, off = 0.0125, (0.2 if x < 1e-5 else 0.0)
    elif opt == "galore":
        xopt, off = 0.03125, 0.001
    else:
        xopt, off = (0.0078125, 0.08) if sel == "topr" else (0.015625, 0.07)
        if state == "keep":
            xopt, off = (xopt, off + 0.006) if sel == "topr" else (xopt * 2, off - 0.03)
    return 4.5 + (math.log2(x / xopt)) ** 2 * 0.01 + 0.002 * seed + off


with tempfile.TemporaryDirectory() as tmp:
    fake = os.path.join(tmp, "fake_trainer")
    make_fake(fake, True)
    data = os.path.join(tmp, "data")
    for c in ("tinyshakespeare", "kjv"):
        make_corpus(data, c)
    out = os.path.join(tmp, "moments")
    env = {"BIN": fake, "DATA_ROOT": data, "OUT": out, "PYTHON": sys.executable}

    # ---- PRESET=moments
    rc, text = study(env, PRESET="moments")
    check(rc == 0, f"PRESET=moments runs (rc {rc})" + ("" if rc == 0 else ": " + text[-800:]))
    cells = sorted(os.listdir(out)) if os.path.isdir(out) else []
    check([c for c in cells if os.path.isdir(os.path.join(out, c))] == ["kjv-w384", "tinyshakespeare-w384"],
          f"both w384 cells, no d6 ({cells})")
    ts = os.path.join(out, "tinyshakespeare-w384")
    runs = run_dirs(ts)
    seed1 = sorted(r for r in runs if r.endswith("-seed1"))
    want1 = sorted([f"adamw-s{s}-seed1" for s in ("1e-06", "0.00625", "0.0125")]
                   + [f"galore-a{a}-seed1" for a in ("0.015625", "0.03125", "0.0625")]
                   + [f"grass-topr-a{a}{k}-seed1" for a in ("0.00390625", "0.0078125", "0.015625", "0.03125")
                      for k in ("", "-keep")]
                   + [f"grass-multinorm-a{a}-upmean{k}-seed1" for a in ("0.0078125", "0.015625", "0.03125", "0.0625")
                      for k in ("", "-keep")])
    check(seed1 == want1, f"phase 1: the preset's 22 runs at seed 1 ({len(seed1)})")
    more = sorted(r for r in runs if not r.endswith("-seed1") and re.search(r"-seed[0-9]+$", r))
    # the best of each family and state (x_opt of the stand-in): AdamW 0.0125, GaLore 0.03125, top-r
    # 0.0078125 both ways, multinorm reset 0.015625, keep 0.03125
    best = ["adamw-s0.0125", "galore-a0.03125", "grass-topr-a0.0078125", "grass-topr-a0.0078125-keep",
            "grass-multinorm-a0.015625-upmean", "grass-multinorm-a0.03125-upmean-keep"]
    check(more == sorted(f"{b}-seed{s}" for b in best for s in (2, 3)),
          f"phase 2: seeds 2 3 for each family's and each state's best ({len(more)} runs)")
    keep_args = args_of(os.path.join(ts, "grass-multinorm-a0.03125-upmean-keep-seed2")) if more else []
    reset_args = args_of(os.path.join(ts, "grass-topr-a0.0078125-seed1")) if seed1 else []
    check("--grass-refresh-state" in keep_args and keep_args[keep_args.index("--grass-refresh-state") + 1] == "keep",
          "a -keep run passes --grass-refresh-state keep")
    check("--grass-refresh-state" in reset_args and reset_args[reset_args.index("--grass-refresh-state") + 1] == "reset",
          "another Grass run passes --grass-refresh-state reset")
    adamw_args = args_of(os.path.join(ts, "adamw-s0.0125-seed1")) if seed1 else []
    check(adamw_args and "--grass-refresh-state" not in adamw_args, "AdamW runs pass no refresh state")

    # a run from a binary before the flag (args.txt without the reset pair) is the same run
    d = os.path.join(ts, "grass-topr-a0.0078125-seed1")
    if reset_args:
        a = reset_args[:]
        i = a.index("--grass-refresh-state")
        del a[i:i + 2]
        open(os.path.join(d, "args.txt"), "w").write("\n".join(a))
    rc, text = study(env, PRESET="moments", DRY=1)
    line = next((l for l in text.splitlines() if "tinyshakespeare-w384/grass-topr-a0.0078125-seed1 " in l), "")
    check(rc == 0 and " done" in line, f"a reset run without the flag in its args.txt counts as done ('{line.strip()}')")
    # ... but one that ran keep is not the reset run
    if reset_args:
        a = reset_args[:]
        a[a.index("--grass-refresh-state") + 1] = "keep"
        open(os.path.join(d, "args.txt"), "w").write("\n".join(a))
        rc, text = study(env, PRESET="moments", DRY=1)
        line = next((l for l in text.splitlines() if "tinyshakespeare-w384/grass-topr-a0.0078125-seed1 " in l), "")
        check(" conflict" in line, f"a run that kept its moments is not the reset run ('{line.strip()}')")
        open(os.path.join(d, "args.txt"), "w").write("\n".join(reset_args))

    # a grid set empty stays empty: that family is not run
    rc, text = study(dict(env, OUT=os.path.join(tmp, "dry")), PRESET="moments", DRY=1, W384_GALORE_ALPHAS="")
    check(rc == 0 and "adamw-s0.0125-seed1" in text and "galore-" not in text,
          "PRESET=moments with W384_GALORE_ALPHAS= set empty runs no GaLore")

    # ---- the tables
    rc, text = subprocess.run([sys.executable, os.path.join(HERE, "study_table.py"), "--out", out],
                              capture_output=True, text=True).returncode, ""
    check(rc == 0, "study_table.py writes the tables")
    md = open(os.path.join(out, "study.md")).read() if os.path.exists(os.path.join(out, "study.md")) else ""
    st = open(os.path.join(out, "refresh_state.md")).read() if os.path.exists(os.path.join(out, "refresh_state.md")) else ""
    check("## Moments at a refresh: keep against reset" in md and st, "study.md has the keep-vs-reset table")

    def finals(name, opt, x, state="reset", sel=None):
        return [expected(opt, x, s, state, sel) for s in (1, 2, 3)]

    def welch(a, b):
        ma, mb = sum(a) / 3, sum(b) / 3
        va = sum((v - ma) ** 2 for v in a) / 2
        vb = sum((v - mb) ** 2 for v in b) / 2
        return (ma - mb) / math.sqrt(va / 3 + vb / 3) if va + vb > 0 else None
    # the stand-in's seed offset is the same on both sides, so sd = 0.002 for every row: the
    # multinorm difference is -0.03 - (log2 terms: 0 at each state's own optimum) = -0.03
    mk = finals("", "grass", 0.03125, "keep", "multinorm")
    mr = finals("", "grass", 0.015625, "reset", "multinorm")
    t_mn = welch(mk, mr)
    row = next((l for l in st.splitlines() if l.startswith("| tinyshakespeare-w384 | Grass multinorm |")), "")
    cols = [c.strip() for c in row.strip("|").split("|")]
    check(len(cols) == 7 and abs(float(cols[4]) - (sum(mk) - sum(mr)) / 3) < 1e-4,
          f"keep - reset for multinorm: {cols[4] if len(cols) == 7 else row} (expected {(sum(mk) - sum(mr)) / 3:+.4f})")
    check(len(cols) == 7 and abs(float(cols[5]) - t_mn) < 0.01 * abs(t_mn),
          f"Welch t for multinorm: {cols[5] if len(cols) == 7 else '?'} (direct: {t_mn:+.2f})")
    check(len(cols) == 7 and cols[6] == "better", f"multinorm keep is better ({cols[6] if len(cols) == 7 else '?'})")
    check("grass-multinorm-a0.03125-upmean-keep" in row, "keep's own best alpha is the one compared")
    row = next((l for l in st.splitlines() if l.startswith("| kjv-w384 | Grass top-r |")), "")
    cols = [c.strip() for c in row.strip("|").split("|")]
    check(len(cols) == 7 and cols[6] == "worse", f"top-r keep is worse by 0.006 at sd 0.002 ({cols[6] if len(cols) == 7 else row})")
    # the gap table: multinorm keep's final against AdamW's, in %
    table = open(os.path.join(ts, "table.md")).read() if os.path.exists(os.path.join(ts, "table.md")) else ""
    row = next((l for l in table.splitlines() if l.startswith("| Grass multinorm, keep (3) |")), "")
    m = re.findall(r"\(([+-][0-9.]+)%\)", row)
    adamw = [expected("adamw", 0.0125, s) for s in (1, 2, 3)]
    want = 100 * (sum(mk) / sum(adamw) - 1)
    check(m and abs(float(m[-1]) - want) < 0.01, f"gap to AdamW at the last step: {m[-1] if m else '?'}% (expected {want:+.2f}%)")
    check(os.path.exists(os.path.join(ts, "best.png")) and os.path.getsize(os.path.join(ts, "best.png")) > 10000,
          "the best-settings figure (with the refresh marks) is written")
    sys.path.insert(0, HERE)
    import study_table  # noqa: E402
    # a family's best is the setting the script chose (lowest at seed 1, with all its seeds), not
    # the lowest mean of settings with different seed counts
    mk_run = lambda seed, final: {"seed": seed, "status": "done", "final": final}
    rows = [{"name": "grass-topr-a0.01", "family": "Grass top-r", "mean": 4.95, "sd": 0.05, "seeds": [1, 2, 3],
             "runs": [mk_run(1, 4.90), mk_run(2, 5.00), mk_run(3, 4.95)]},
            {"name": "grass-topr-a0.02", "family": "Grass top-r", "mean": 4.92, "sd": None, "seeds": [1],
             "runs": [mk_run(1, 4.92)]}]
    pick = study_table.summary_rows(rows).get("Grass top-r", {}).get("name")
    check(pick == "grass-topr-a0.01", f"the best setting is the seed-1 choice with its three seeds ({pick})")
    cap = study_table.read_captured(os.path.join(ts, "grass-topr-a0.0078125-seed1", "log.txt"))
    check(cap == {1: 0.5, 51: 0.51, 101: 0.52}, f"captured= per refresh from the log ({cap})")

    # ---- a binary without the flag: keep runs skipped, the rest runs
    old = os.path.join(tmp, "old_trainer")
    make_fake(old, False)
    out2 = os.path.join(tmp, "old")
    rc, text = study(dict(env, BIN=old, OUT=out2), PRESET="moments", CORPORA="kjv", SEEDS="")
    runs2 = run_dirs(os.path.join(out2, "kjv-w384"))
    check(rc == 0 and len(runs2) == 14 and not any("keep" in r for r in runs2) and "the -keep runs are skipped" in text,
          f"without --grass-refresh-state: the 14 other runs, no keep run, a note ({len(runs2)} runs, rc {rc})")
    a2 = args_of(os.path.join(out2, "kjv-w384", "grass-topr-a0.0078125-seed1")) if runs2 else []
    check(a2 and "--grass-refresh-state" not in a2, "and no refresh-state flag for a binary that lacks it")

    # ---- PRESET=horizon
    out3 = os.path.join(tmp, "h600")
    rc, text = study(dict(env, OUT=out3), PRESET="horizon", REFRESH_STATES="keep", SEEDS="2")
    cell = os.path.join(out3, "kjv-w384")
    runs3 = run_dirs(cell)
    # the stand-in's optima: AdamW 0.0125, GaLore 0.03125, top-r 0.0078125, multinorm keep 0.03125
    want3 = sorted(["adamw-s%s-seed1" % s for s in ("0.00625", "0.003125", "0.0125", "0.025", "0.05")] +
                   ["galore-a%s-seed1" % a for a in ("0.015625", "0.0078125", "0.03125", "0.0625", "0.125")] +
                   ["grass-multinorm-a%s-upmean-keep-seed1" % a for a in ("0.015625", "0.0078125", "0.03125", "0.0625", "0.125")] +
                   ["grass-topr-a%s-keep-seed1" % a for a in ("0.015625", "0.0078125", "0.03125", "0.0625", "0.125")] +
                   ["adamw-s0.0125-seed2", "galore-a0.03125-seed2", "grass-multinorm-a0.03125-upmean-keep-seed2",
                    "grass-topr-a0.0078125-keep-seed2"])
    check(rc == 0 and runs3 == want3, f"PRESET=horizon: KJV w384 only, best, half, 2x, 4x, 8x, then the best ({runs3})")
    a3 = args_of(os.path.join(cell, "adamw-s0.00625-seed1")) if runs3 else []
    check(a3 and a3[a3.index("-x") + 1] == "600" and a3[a3.index("-v") + 1] == "50", "600 steps, validation every 50")
    g3 = args_of(os.path.join(cell, "grass-multinorm-a0.015625-upmean-keep-seed1")) if runs3 else []
    check(g3 and g3[g3.index("--update-freq") + 1] == "100", "K 100")
    rc, text = subprocess.run([sys.executable, os.path.join(HERE, "study_table.py"), "--out", out3],
                              capture_output=True, text=True).returncode, ""
    table = open(os.path.join(cell, "table.md")).read() if os.path.exists(os.path.join(cell, "table.md")) else ""
    head = next((l for l in table.splitlines() if l.startswith("| at its best setting")), "")
    check(head.count("step ") == 4 and "step 600" in head and "step 150" in head, f"the gap table at 4 points ({head})")

suite.finish()
