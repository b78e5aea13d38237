#!/usr/bin/env python3
"""Plot one or more training logs (the <out-dir>/log.txt that train_llama writes) into one PNG
of four panels: train loss, validation loss, tokens/s and memory (the backend's peak, GiB)
against the step; and print a summary table (final and best val loss, median tokens/s, peak
memory).

    python3 dev/plot_logs.py out/adamw/log.txt out/grass/log.txt -o loss.png
    python3 dev/plot_logs.py out/*/log.txt --labels "AdamW,Grass" -o loss.png

Each log line is "step=N key=value ..."; train lines carry loss=, eval lines val_loss=.
The header line "# grass.c config=... optimizer=... select=..." names the run.

As a module (dev/study_table.py uses it): read_log(path) -> (train, val, meta), raising
LogError for a file without step lines; final_val(val), mean_curve([val, ...]), smooth().
"""
import argparse
import math
import os
import re
import sys


class LogError(ValueError):
    """a file that is not a train_llama log (no step lines)"""


def read_log(path):
    """Parses a log.txt: returns (train, val, meta). train: {step: {"loss": ..., "tok_per_s": ...,
    ...}}; val: {step: val_loss}; meta: the header's key=value pairs. A resumed run repeats
    the steps after its checkpoint: the last line of a step wins."""
    train, val, meta = {}, {}, {}
    for line in open(path):
        line = line.strip()
        if line.startswith("# grass.c"):
            meta = dict(kv.split("=", 1) for kv in line[len("# grass.c"):].split() if "=" in kv)
            continue
        if line.startswith("#") or not line.startswith("step="):
            continue
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        step = int(fields["step"])
        if "val_loss" in fields:
            val[step] = float(fields["val_loss"])  # a resumed run repeats its first eval: keep the last
        elif "loss" in fields:
            train[step] = {k: float(v) for k, v in fields.items() if k != "step"}
    if not train and not val:
        raise LogError(f"{path}: no step lines; is it a train_llama log?")
    return train, val, meta


def final_val(val):
    """(step, loss) of the last validation, or (None, nan) when there is none"""
    if not val:
        return None, float("nan")
    s = max(val)
    return s, val[s]


def mean_curve(vals):
    """Mean and sample standard deviation over several runs' {step: val_loss}, at the steps
    every run has: (steps, means, sds); sd is 0 for a single run."""
    if not vals:
        return [], [], []
    steps = sorted(set.intersection(*(set(v) for v in vals)))
    means, sds = [], []
    for s in steps:
        xs = [v[s] for v in vals]
        m = sum(xs) / len(xs)
        means.append(m)
        sds.append(math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)
    return steps, means, sds


def median_tok_per_s(train):
    """median tokens/s over the train steps after the first (which warms caches); nan if none"""
    xs = sorted(train[s]["tok_per_s"] for s in train if s > 1 and "tok_per_s" in train[s])
    if not xs:
        return float("nan")
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def default_label(meta, path):
    if not meta:
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    label = meta.get("optimizer", "?")
    if label == "grass":
        label += f" {meta.get('select', '')} r={meta.get('rank', '')}"
    return label


def smooth(values, window):
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+")
    p.add_argument("-o", "--output", default="loss.png")
    p.add_argument("--labels", help="comma-separated labels, one per log")
    p.add_argument("--title", default="")
    p.add_argument("--smooth", type=int, default=10, help="moving-average window for train loss")
    args = p.parse_args()
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(args.logs):
        sys.exit("--labels needs one label per log")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_t, ax_v), (ax_s, ax_m) = axes
    rows = []
    runs = []
    for path in args.logs:
        try:
            runs.append(read_log(path))
        except LogError as e:
            sys.exit(str(e))
    names = labels or [default_label(meta, path) for (_, _, meta), path in zip(runs, args.logs)]
    if not labels:  # runs that the header alone does not tell apart get their directory's name
        names = [n + f" ({os.path.basename(os.path.dirname(os.path.abspath(path)))})" if names.count(n) > 1 else n
                 for n, path in zip(names, args.logs)]
    for (train, val, meta), label in zip(runs, names):
        color = None
        if train:
            steps = sorted(train)
            line, = ax_t.plot(steps, smooth([train[s]["loss"] for s in steps], args.smooth), label=label, lw=1.2)
            color = line.get_color()
            sp = [s for s in steps if "tok_per_s" in train[s]]
            if sp:
                ax_s.plot(sp, [train[s]["tok_per_s"] for s in sp], label=label, color=color, lw=1)
            mp = [s for s in steps if "mem_gib" in train[s]]
            if mp:
                ax_m.plot(mp, [train[s]["mem_gib"] for s in mp], label=label, color=color, lw=1.2)
        if val:
            vs = sorted(val)
            ax_v.plot(vs, [val[s] for s in vs], "o-", label=label, color=color, ms=3)
        fv = final_val(val)[1]
        best_val = min(val.values()) if val else float("nan")
        mem = max((train[s]["mem_gib"] for s in train if "mem_gib" in train[s]), default=float("nan"))
        rows.append((label, max(train) if train else 0, fv, best_val, median_tok_per_s(train), mem))
    panels = ((ax_t, f"train loss (moving average of {args.smooth})", "loss"), (ax_v, "validation loss", "loss"),
              (ax_s, "throughput", "tokens/s"), (ax_m, "memory held (peak so far)", "GiB"))
    for ax, name, unit in panels:
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_s.set_ylim(bottom=0)
    ax_m.set_ylim(bottom=0)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    print(f"{'run':32s} {'steps':>6s} {'final val':>10s} {'val ppl':>9s} {'best val':>9s} {'tok/s':>9s} {'mem GiB':>8s}")
    for label, steps, fv, bv, ts, mem in rows:
        ppl = math.exp(fv) if fv == fv and fv < 50 else float("nan")
        print(f"{label:32s} {steps:6d} {fv:10.4f} {ppl:9.2f} {bv:9.4f} {ts:9.0f} {mem:8.3f}")


if __name__ == "__main__":
    main()
