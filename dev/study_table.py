#!/usr/bin/env python3
"""Tables and figures of the optimizer study that scripts/compare_optimizers.sh runs.

    python3 dev/study_table.py                  # OUT=out/study (or --out DIR)

The study's directory holds one directory per cell (<corpus>-<size>, e.g. kjv-d6) and in it
one per run (<run>-seed<N>, e.g. adamw-s0.25-seed1) with the trainer's log.txt, the
--plan-only output plan.txt, and status (written by the script: done, diverged, failed).
For every cell this writes

  <cell>/table.md      run (seeds pooled) | seeds | final val loss mean ± sd | ratio to the
                       best AdamW mean | optimizer state MiB | gradient MiB (dense + compressed)
  <cell>/val_loss.png  validation loss against step, the mean over seeds (band: ± sd)

and <out>/study.md with the settings and every cell. Only finished runs (a validation at
the last step) count; unfinished and diverged ones are listed under the table.

Helpers for the script (one code path for reading logs):
  --best CELL_DIR RUN...     prints the RUN with the lowest final val loss at seed 1; exits 2
                             (with the reason on stderr) when one of them has not finished
                             (diverged runs are not candidates)
  --dry-report               reads "cell/run-seedN status done_steps" lines on stdin and prints
                             them with an estimated time from the tokens/s measured so far
"""
import argparse
import math
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_logs import LogError, final_val, mean_curve, median_tok_per_s, read_log  # noqa: E402

SEED_RE = re.compile(r"^(?P<run>.+)-seed(?P<seed>[0-9]+)$")
NUM = r"[0-9.eE+-]+"
# row order: AdamW, GaLore, then the Grass variants; inside a family by alpha / scale, then upscale
FAMILIES = [
    ("AdamW", re.compile(rf"^adamw-s(?P<x>{NUM})$")),
    ("GaLore", re.compile(rf"^galore-a(?P<x>{NUM})$")),
    ("GaLore, reset", re.compile(rf"^galore-a(?P<x>{NUM})-reset$")),
    ("Grass top-r", re.compile(rf"^grass-topr-a(?P<x>{NUM})$")),
    ("Grass top-r, keep", re.compile(rf"^grass-topr-a(?P<x>{NUM})-keep$")),
    ("Grass multinorm", re.compile(rf"^grass-multinorm-a(?P<x>{NUM})-up(?P<u>\w+)$")),
    ("Grass multinorm, keep", re.compile(rf"^grass-multinorm-a(?P<x>{NUM})-up(?P<u>\w+)-keep$")),
    ("Grass multinorm-nr", re.compile(rf"^grass-multinorm-nr-a(?P<x>{NUM})-up(?P<u>\w+)$")),
    ("Grass uniform", re.compile(rf"^grass-uniform-a(?P<x>{NUM})-up(?P<u>\w+)$")),
    ("Grass uniform-nr", re.compile(rf"^grass-uniform-nr-a(?P<x>{NUM})-up(?P<u>\w+)$")),
]
UPSCALE_ORDER = ["paper", "one", "mean"]


def run_key(name):
    """sort key of a run name (seed removed)"""
    for i, (_, rx) in enumerate(FAMILIES):
        m = rx.match(name)
        if m:
            try:
                x = float(m.group("x"))
            except ValueError:
                x = math.inf
            u = m.groupdict().get("u")
            return (i, x, UPSCALE_ORDER.index(u) if u in UPSCALE_ORDER else len(UPSCALE_ORDER), name)
    return (len(FAMILIES), 0.0, 0, name)


def family(name):
    k = run_key(name)[0]
    return FAMILIES[k][0] if k < len(FAMILIES) else "other"


# ----------------------------------------------------------------------------------------
# reading

def parse_plan(path):
    """MiB figures of a --plan-only output: {"state", "dense", "compressed", "work"}.
    "optimizer states" is the state (Adam moments; GaLore's projectors are in it); "gradients
    (dense)" the dense gradients; every other "gradients (...)" line a compressed gradient
    (Grass's r x n, GaLore's R = P^T G); the other lines that start with Grass or GaLore (norm
    pass, indices, SVD pass, scratch) are optimizer workspace: work = {label: MiB}. None when
    the file is missing or has no plan."""
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return None
    fig = re.compile(r"^\s+(?P<label>\S.*?)\s{2,}(?:[0-9]+\s+)?(?P<v>[0-9.]+) (?P<u>MiB|GiB)\b(?P<rest>.*)$")
    out = {"state": 0.0, "dense": 0.0, "compressed": 0.0, "work": {}}
    found = False
    for line in lines:
        m = fig.match(line)
        if not m:
            continue
        label, rest = m.group("label").strip(), m.group("rest")
        mib = float(m.group("v")) * (1024.0 if m.group("u") == "GiB" else 1.0)
        if label == "optimizer states":
            out["state"] += mib
            found = True
        elif label == "gradients (dense)":
            out["dense"] += mib
        elif label.startswith("gradients ("):
            out["compressed"] += mib
        elif label.split()[0] in ("Grass", "GaLore"):
            out["work"][label] = mib
    return out if found else None


def read_status(d):
    try:
        return open(os.path.join(d, "status")).read().split("\n", 1)[0].strip()
    except OSError:
        return ""


CAPTURED_RE = re.compile(r"^step=(?P<step>[0-9]+) refresh=1 .*\bcaptured=(?P<c>[0-9.eE+-]+)")


def read_captured(log):
    """{step: captured} from a log's refresh lines (the share of the gradient's squared row norms
    that the new selection keeps; a resumed run repeats a refresh: the last line wins)"""
    out = {}
    try:
        for line in open(log, encoding="utf-8", errors="replace"):
            m = CAPTURED_RE.match(line)
            if m:
                out[int(m.group("step"))] = float(m.group("c"))
    except OSError:
        pass
    return out


def load_run(d):
    """one run directory -> dict (None when it has neither a log nor a status)"""
    base = os.path.basename(d.rstrip("/"))
    m = SEED_RE.match(base)
    if not m:
        return None
    r = {"dir": d, "name": m.group("run"), "seed": int(m.group("seed")), "val": {}, "train": {}, "captured": {},
         "steps": None, "last": 0, "final": math.nan, "tok_s": math.nan, "state": read_status(d)}
    log = os.path.join(d, "log.txt")
    if os.path.isfile(log):
        try:
            r["train"], r["val"], meta = read_log(log)
        except LogError:
            meta = {}
        if "steps" in meta:
            r["steps"] = int(meta["steps"])
        r["last"] = max(list(r["train"]) + list(r["val"]) + [0])
        r["captured"] = read_captured(log)
        r["tok_s"] = median_tok_per_s(r["train"])
    elif not r["state"]:
        return None
    step, loss = final_val(r["val"])
    if r["state"].startswith("diverged"):
        r["status"] = "diverged"
    elif r["steps"] is not None and step == r["steps"]:
        r["status"] = "done"
        r["final"] = loss
    elif r["state"].startswith("failed"):
        r["status"] = "failed"
    else:
        r["status"] = "unfinished"
    r["plan"] = parse_plan(os.path.join(d, "plan.txt"))
    return r


def load_cell(cell_dir):
    runs = []
    for e in sorted(os.listdir(cell_dir)):
        p = os.path.join(cell_dir, e)
        if os.path.isdir(p):
            r = load_run(p)
            if r:
                runs.append(r)
    return runs


def read_settings(out):
    """settings.txt (KEY=value lines the script writes) -> dict"""
    s = {}
    try:
        for line in open(os.path.join(out, "settings.txt")):
            if "=" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("=", 1)
                s[k] = v
    except OSError:
        pass
    return s


def cells_of(out, settings):
    """the cells found under out, by size then corpus (the script's defaults first, in their order;
    not the last invocation's, which may have run a part)"""
    found = [e for e in sorted(os.listdir(out)) if os.path.isdir(os.path.join(out, e)) and load_cell(os.path.join(out, e))]
    sizes, corpora = ["d6", "w384"], ["tinyshakespeare", "kjv"]

    def key(cell):
        corpus, _, size = cell.rpartition("-")
        return (sizes.index(size) if size in sizes else len(sizes), size,
                corpora.index(corpus) if corpus in corpora else len(corpora), corpus)
    return sorted(found, key=key)


# ----------------------------------------------------------------------------------------
# table and figure

def stats(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return m, sd


def groups_of(runs):
    g = {}
    for r in runs:
        g.setdefault(r["name"], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(g.items(), key=lambda kv: run_key(kv[0]))}


def cell_table(cell, runs):
    """(markdown, rows) for one cell"""
    groups = groups_of(runs)
    rows = []
    for name, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        plan = next((r["plan"] for r in rs if r["plan"]), None)
        row = {"name": name, "family": family(name), "seeds": [r["seed"] for r in done], "runs": rs,
               "mean": math.nan, "sd": None, "plan": plan}
        if done:
            row["mean"], row["sd"] = stats([r["final"] for r in done])
        rows.append(row)
    adamw = [r["mean"] for r in rows if r["family"] == "AdamW" and r["mean"] == r["mean"]]
    ref = min(adamw) if adamw else None
    finite = [r["mean"] for r in rows if r["mean"] == r["mean"]]
    best = min(finite) if finite else None
    md = ["| run | seeds | final val loss (mean ± sd) | ratio to best AdamW | optimizer state (MiB) | gradients, dense + compressed (MiB) |",
          "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["mean"] == row["mean"]:
            v = f"{row['mean']:.4f}" + (f" ± {row['sd']:.4f}" if row["sd"] is not None else "")
            if row["mean"] == best:
                v = f"**{v}**"
            ratio = f"{row['mean'] / ref:.3f}" if ref else "—"
        else:
            v, ratio = "—", "—"
        seeds = ",".join(str(s) for s in row["seeds"]) or "—"
        p = row["plan"]
        st = f"{p['state']:.1f}" if p else "?"
        gr = f"{p['dense']:.1f} + {p['compressed']:.1f}" if p else "?"
        md.append(f"| {row['name']} | {seeds} | {v} | {ratio} | {st} | {gr} |")
    notes = []
    for row in rows:
        for r in row["runs"]:
            if r["status"] != "done":
                what = {"diverged": r["state"], "failed": r["state"],
                        "unfinished": f"unfinished (step {r['last']}" + (f" of {r['steps']})" if r["steps"] else ")")}[r["status"]]
                notes.append(f"- {row['name']}-seed{r['seed']}: {what}")
    work = {}  # optimizer workspace per family, from the plans (the same for every run of a family)
    for row in rows:
        w = row["plan"]["work"] if row["plan"] else {}
        if any(v > 0 for v in w.values()):
            work.setdefault(row["family"].split()[0], w)
    parts = ["\n".join(md)]
    if ref:
        parts.append(f"Ratio: mean final validation loss over the best AdamW mean ({ref:.4f}); bold: the lowest mean.")
    if work:
        parts.append("Not in the memory columns, the optimizers' workspace from the plans: "
                     + "; ".join(f"{fam}: " + ", ".join(f"{lab} {v:.1f} MiB" for lab, v in w.items() if v > 0)
                                 for fam, w in work.items()) + ".")
    if notes:
        parts.append("Not in the means:\n\n" + "\n".join(notes))
    text = "\n\n".join(parts) + "\n"
    return text, rows


def mean_captured(runs):
    """{refresh step: mean captured over the runs that logged it}"""
    acc = {}
    for r in runs:
        for st, c in r.get("captured", {}).items():
            acc.setdefault(st, []).append(c)
    return {st: sum(v) / len(v) for st, v in sorted(acc.items())}


def cell_figure(cell, rows, path, mark_refresh=False):
    """validation loss against step, mean over seeds with a ± sd band; mark_refresh: a triangle at
    each refresh of the runs that log one, and their captured= (mean over seeds, in %, one per
    refresh) in the legend"""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    styles = {"AdamW": "-", "GaLore": "-.", "Grass top-r": "--"}
    tail_lo, tail_hi = math.inf, -math.inf
    plotted = 0
    for row in rows:
        done = [r for r in row["runs"] if r["status"] == "done"]
        if not done:
            continue
        steps, means, sds = mean_curve([r["val"] for r in done])
        if not steps:
            continue
        label = f"{row['name']} (n={len(done)})"
        ls = styles.get(row["family"], ":")
        color = plt.cm.tab20.colors[(2 * plotted) % 20 + (plotted // 10) % 2]  # 20 distinct colors
        first = None
        for k, ax in enumerate(axes):
            line, = ax.plot(steps, means, ls, color=color, marker="o", ms=2.5, lw=1.3, label=label if k == 0 else None)
            first = first or line
            if len(done) > 1:
                ax.fill_between(steps, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                                color=line.get_color(), alpha=0.15, lw=0)
        cap = mean_captured(done) if mark_refresh else {}
        for st in cap:
            y = means[min(range(len(steps)), key=lambda i: abs(steps[i] - st))]
            axes[0].plot([st], [y], "v", color=color, ms=5)
        if cap:  # the shares in the legend, in refresh order (legible where the curves meet)
            first.set_label(label + "; captured " + "/".join(f"{100 * c:.0f}" for c in cap.values()) + "%")
        half = [m for s, m in zip(steps, means) if s >= steps[-1] / 2]
        tail_lo, tail_hi = min(tail_lo, min(half)), max(tail_hi, max(half))
        plotted += 1
    if not plotted:
        plt.close(fig)
        return False
    axes[0].set_title("validation loss (mean over seeds, band ± sd)"
                      + ("; ▼ refresh" if mark_refresh else ""), fontsize=10)
    axes[1].set_title("second half of training")
    last = max(max(r["val"]) for row in rows for r in row["runs"] if r["status"] == "done")
    axes[1].set_xlim(last / 2 - last * 0.02, last * 1.02)
    pad = 0.05 * max(tail_hi - tail_lo, 1e-3)
    axes[1].set_ylim(tail_lo - pad, tail_hi + pad)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("val loss")
        ax.grid(alpha=0.3)
    fig.suptitle(cell)
    right = 0.70 if mark_refresh else 0.79  # room for the legend (with captured= it is wider)
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend(loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7, frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


FROZEN_SCALE = 1e-6   # adamw-s1e-06: the control with the projected matrices all but frozen


def is_frozen(name):
    m = FAMILIES[0][1].match(name)
    return bool(m) and float(m.group("x")) <= FROZEN_SCALE


def seed1_final(row):
    """the final loss at seed 1 (how the script picks a family's best), else the mean"""
    return next((r["final"] for r in row["runs"] if r["seed"] == 1 and r["status"] == "done"), row["mean"])


def summary_rows(rows):
    """each family's best setting in a cell, chosen as the script chooses it: the lowest final loss
    at seed 1 (the mean where seed 1 is missing); the frozen control apart: {family: row}, plus
    "frozen" for the control when it ran. The row carries every seed of that setting."""
    best = {}
    for row in rows:
        if row["mean"] != row["mean"]:
            continue
        fam = "frozen" if is_frozen(row["name"]) else row["family"]
        if fam not in best or (seed1_final(row), row["name"]) < (seed1_final(best[fam]), best[fam]["name"]):
            best[fam] = row
    return best


def summary_table(cells_rows):
    """markdown: rows = optimizer families at their best setting, columns = cells"""
    cells = list(cells_rows)
    per_cell = {c: summary_rows(cells_rows[c]) for c in cells}
    # families with a setting not finished in a cell: their best is among what finished
    partial = {c: {("frozen" if is_frozen(r["name"]) else r["family"]) for r in cells_rows[c] if r["mean"] != r["mean"]}
               for c in cells}
    fams = [f for f, _ in FAMILIES if any(f in per_cell[c] for c in cells)]
    if any("frozen" in per_cell[c] for c in cells):
        fams.append("frozen")
    md = ["| optimizer at its best setting | " + " | ".join(cells) + " |", "| --- |" + " --- |" * len(cells)]
    for f in fams:
        cols = []
        for c in cells:
            row = per_cell[c].get(f)
            adamw = per_cell[c].get("AdamW")
            if row is None:
                cols.append("—")
                continue
            x = re.sub(r"^[a-z-]+?-(?=[as][0-9])", "", row["name"]).replace("-up", ", up ").replace("-keep", "")
            x = x.replace("-reset", "")
            v = f"{row['mean']:.3f}" + (f" ± {row['sd']:.3f}" if row["sd"] is not None else "")
            ratio = f", {row['mean'] / adamw['mean']:.3f}x" if adamw else ""
            cols.append(f"{v} (n={len(row['seeds'])}{ratio}; {x})" + (" †" if f in partial[c] else ""))
        label = "AdamW, projected matrices frozen (--matrix-lr-scale 1e-6)" if f == "frozen" else f
        md.append(f"| {label} | " + " | ".join(cols) + " |")
    return "\n".join(md) + ("\n\nEach cell: final validation loss, mean ± sd over the seeds run (n), the ratio to AdamW at "
                             "its best scale, and the setting (alpha a / AdamW matrix scale s, up = up-projection rule). "
                             "The best setting is chosen on seed 1; the headline settings have seeds 2 and 3 as well. "
                             "†: some settings of that family have not finished in that cell (the best among those that did).\n")


def welch_t(a, b):
    """Welch's t of mean(a) - mean(b) (rows with mean, sd, seeds); None without two seeds on each side"""
    na, nb = len(a["seeds"]), len(b["seeds"])
    if na < 2 or nb < 2 or a["sd"] is None or b["sd"] is None:
        return None
    se = math.sqrt(a["sd"] ** 2 / na + b["sd"] ** 2 / nb)
    return (a["mean"] - b["mean"]) / se if se > 0 else math.copysign(math.inf, a["mean"] - b["mean"])


# The decision rule of docs/GRASS_IMPL.md, "Moments at a refresh" (written before the runs): keep
# against reset, each at its own best alpha, three seeds, Welch's t of mean(keep) - mean(reset).
T_DECISIVE = 2.0
STATE_PAIRS = [("Grass top-r", "Grass top-r, keep"), ("Grass multinorm", "Grass multinorm, keep"),
               ("GaLore, reset", "GaLore")]


def verdict(t):
    if t is None:
        return "too few seeds"
    return "better" if t <= -T_DECISIVE else "worse" if t >= T_DECISIVE else "not distinguishable"


def state_table(cells_rows):
    """markdown: for each cell and method, its best setting with moments reset and kept at a refresh,
    the difference and Welch's t; None when no cell has both"""
    md = ["| cell | method | reset: setting, final val loss (n) | keep: setting, final val loss (n) | keep - reset | "
          "Welch t | keep is |", "| --- | --- | --- | --- | --- | --- | --- |"]
    found = False
    for cell, rows in cells_rows.items():
        best = summary_rows(rows)
        for reset_fam, keep_fam in STATE_PAIRS:
            r, k = best.get(reset_fam), best.get(keep_fam)
            if r is None or k is None:
                continue
            found = True
            t = welch_t(k, r)
            fmt = lambda x: (f"{x['name']}, {x['mean']:.4f}" + (f" ± {x['sd']:.4f}" if x["sd"] is not None else "")
                             + f" ({len(x['seeds'])})")
            md.append(f"| {cell} | {reset_fam.split(',')[0]} | {fmt(r)} | {fmt(k)} | {k['mean'] - r['mean']:+.4f} | "
                      + (f"{t:+.2f}" if t is not None else "—") + f" | {verdict(t)} |")
    if not found:
        return None
    return "\n".join(md) + (f"\n\nEach state at its own best setting (chosen at seed 1); t = (keep - reset) / "
                             f"sqrt(sd_k^2/n_k + sd_r^2/n_r); better: t <= -{T_DECISIVE}, worse: t >= {T_DECISIVE}.\n")


def gap_table(rows):
    """markdown: each family's best setting (the frozen control apart) at four points of training,
    mean val loss over seeds and its gap to AdamW's best in %; None without AdamW or a second family"""
    best = summary_rows(rows)
    adamw = best.get("AdamW")
    fams = [f for f, _ in FAMILIES if f in best and f != "AdamW"]
    if adamw is None or not fams:
        return None
    curve = {}
    for f in ["AdamW"] + fams:
        done = [r for r in best[f]["runs"] if r["status"] == "done"]
        steps, means, _ = mean_curve([r["val"] for r in done])
        curve[f] = dict(zip(steps, means))
    last = max(curve["AdamW"])
    points = sorted({min(curve["AdamW"], key=lambda st: abs(st - last * q)) for q in (0.25, 0.5, 0.75, 1.0)})
    md = ["| at its best setting (n seeds) | " + " | ".join(f"step {p}" for p in points) + " |",
          "| --- |" + " --- |" * len(points)]
    for f in ["AdamW"] + fams:
        cols = []
        for p in points:
            v = curve[f].get(p)
            if v is None:
                cols.append("—")
            elif f == "AdamW":
                cols.append(f"{v:.4f}")
            else:
                cols.append(f"{v:.4f} ({100 * (v / curve['AdamW'][p] - 1):+.2f}%)")
        md.append(f"| {f} ({len(best[f]['seeds'])}) | " + " | ".join(cols) + " |")
    return "\n".join(md) + "\n\nMean validation loss over the seeds; in brackets the gap to AdamW's best at the same step.\n"


def write_all(out):
    settings = read_settings(out)
    cells = cells_of(out, settings)
    if not cells:
        sys.exit(f"{out}: no study runs found (directories <corpus>-<size>/<run>-seed<N> with a log.txt)")
    doc = ["# Optimizer study: Grass vs AdamW vs GaLore", ""]
    if settings:
        doc += ["Settings (scripts/compare_optimizers.sh):", "", "```"]
        doc += [f"{k}={v}" for k, v in settings.items()] + ["```", ""]
    doc += ["Final validation loss: the validation at the last step (EVAL_TOKENS tokens of the "
            "corpus's val split). Memory: each run's `--plan-only 1` plan (optimizer states; dense "
            "gradients + compressed ones: Grass's r x n, GaLore's when it prints them).", ""]
    cells_rows = {}
    body = []
    for cell in cells:
        d = os.path.join(out, cell)
        runs = load_cell(d)
        text, rows = cell_table(cell, runs)
        gaps = gap_table(rows)
        if gaps:
            text += "\nThe gap to AdamW during training:\n\n" + gaps
        cells_rows[cell] = rows
        with open(os.path.join(d, "table.md"), "w") as f:
            f.write(f"# {cell}\n\n" + text)
        png = os.path.join(d, "val_loss.png")
        have_png = cell_figure(cell, rows, png)
        best = summary_rows(rows)  # each family at its best setting, and the frozen control: a readable figure
        best_rows = [best[f] for f in [f for f, _ in FAMILIES] + ["frozen"] if f in best]
        if best_rows and cell_figure(cell + ": each optimizer at its best setting", best_rows, os.path.join(d, "best.png"),
                                     mark_refresh=True):
            print(f"wrote {d}/best.png")
        tok = [r["tok_s"] for r in runs if r["tok_s"] == r["tok_s"]]
        speed = f" Training speed: median {sorted(tok)[len(tok) // 2]:.0f} tokens/s per run." if tok else ""
        body += [f"## {cell}", "", f"{sum(r['status'] == 'done' for r in runs)} finished runs.{speed}", "", text]
        if have_png:
            body += [f"![{cell}]({cell}/val_loss.png)", ""]
        print(f"wrote {d}/table.md" + (f", {png}" if have_png else ""))
    summary = summary_table(cells_rows)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary)
    doc += ["## Summary", "", summary, ""]
    states = state_table(cells_rows)
    if states:
        with open(os.path.join(out, "refresh_state.md"), "w") as f:
            f.write(states)
        doc += ["## Moments at a refresh: keep against reset", "", states, ""]
    doc += body
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write("\n".join(doc))
    print(f"wrote {out}/study.md")


# ----------------------------------------------------------------------------------------
# helpers for scripts/compare_optimizers.sh

def best(cell_dir, names):
    found = {}
    for n in names:
        r = load_run(os.path.join(cell_dir, f"{n}-seed1"))
        status = r["status"] if r else "not run"
        if status not in ("done", "diverged"):
            print(f"{os.path.basename(cell_dir)}/{n}-seed1 is {status}", file=sys.stderr)
            return 2
        if status == "done":
            found[n] = r["final"]
    if not found:
        print(f"{os.path.basename(cell_dir)}: every one of {' '.join(names)} diverged", file=sys.stderr)
        return 2
    print(min(found, key=lambda n: (found[n], run_key(n))))
    return 0


def fmt_time(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def dry_report(out, steps, tokens_per_step, eval_every, eval_tokens, jobs, guesses):
    """estimated seconds per run from the tokens/s of the runs already in out, per model size"""
    speed = {}
    if os.path.isdir(out):
        for cell in os.listdir(out):
            d = os.path.join(out, cell)
            if os.path.isdir(d) and "-" in cell:
                for r in load_cell(d):
                    if r["tok_s"] == r["tok_s"]:
                        speed.setdefault(cell.rsplit("-", 1)[1], []).append(r["tok_s"])
    rate = {z: (sorted(v)[len(v) // 2], f"measured, {len(v)} runs") for z, v in speed.items()}
    n_evals = lambda s0: sum(1 for s in range(s0, steps + 1) if (eval_every > 0 and s % eval_every == 0) or s == steps)
    total, count, unknown = 0.0, 0, set()
    lines = [l.split() for l in sys.stdin if l.strip()]
    w = max([len(l[0]) for l in lines] + [10])
    for full, status, done in lines:
        size = full.split("/", 1)[0].rsplit("-", 1)[-1]
        if size in rate:
            tok_s = rate[size][0]
        elif size in guesses:
            tok_s = guesses[size]
            rate.setdefault(size, (tok_s, "a guess: nothing measured yet"))
        else:
            tok_s = None
            unknown.add(size)
        done = int(done)
        if status in ("done", "unsupported", "conflict", "diverged"):
            est = 0.0
        elif tok_s:
            # an evaluation is a forward pass only: about half of a training token's time on
            # the CPU build (measured: 16384 tokens in ~6 s next to ~1150 training tokens/s, d6)
            est = ((steps - done) * tokens_per_step + n_evals(done) * eval_tokens / 2.0) / tok_s
        else:
            est = 0.0
        if est:
            total += est
            count += 1
        print(f"  {full:{w}s}  {status:10s} {fmt_time(est) if est else '':>8s}")
    for z, (t, how) in sorted(rate.items()):
        print(f"  {z}: {t:.0f} tokens/s per run ({how})")
    if unknown:
        print(f"  no speed for size(s) {' '.join(sorted(unknown))}: not in the estimate")
    print(f"{count} run(s) to go: about {fmt_time(total)} of training on one core"
          + (f", {fmt_time(total / jobs)} with JOBS={jobs} (if the cores are free)" if jobs > 1 else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "out/study"), help="the study's directory (default $OUT or out/study)")
    ap.add_argument("--best", nargs="+", metavar=("CELL_DIR", "RUN"), help="print the best of these runs at seed 1")
    ap.add_argument("--dry-report", action="store_true", help="estimate the runs listed on stdin")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--tokens-per-step", type=int, default=1024)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--guess", action="append", default=[], metavar="SIZE=TOK_S",
                    help="tokens/s to assume for a size with no run yet")
    a = ap.parse_args()
    if a.best:
        if len(a.best) < 2:
            ap.error("--best CELL_DIR RUN [RUN ...]")
        return best(a.best[0], a.best[1:])
    if a.dry_report:
        guesses = {g.split("=")[0]: float(g.split("=")[1]) for g in a.guess}
        dry_report(a.out, a.steps, a.tokens_per_step, a.eval_every, a.eval_tokens, a.jobs, guesses)
        return 0
    if not os.path.isdir(a.out):
        sys.exit(f"{a.out}: no such directory (run scripts/compare_optimizers.sh first)")
    write_all(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
