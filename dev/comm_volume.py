#!/usr/bin/env python3
"""Per-step data-parallel communication of full-rank AdamW, GaLore-style projection and Grass
for the LLaMA configs, and its predicted time on a ring all-reduce at a given bandwidth.
A benchmark (it prints figures); the configs are read from llama_config.h.

    python3 dev/comm_volume.py                          # 1b 7b 13b, 8 ranks, 50 and 400 GB/s
    python3 dev/comm_volume.py --configs 60m 1b --ranks 16 --bandwidth 25 --rank-frac 0.25

Per step, every rank all-reduces:
  full rank : every parameter's gradient, m x n per matrix (bf16 by default, --grad-bytes)
  GaLore    : as its reference implementation, the full gradient (data-parallel all-reduce
              before the optimizer projects it); projecting first would send r x n, but needs
              the full local m x n gradient, which is what Grass avoids
  Grass     : r x n compressed gradients per projected matrix (kept in fp32, sent as bf16 like
              the dense gradients; --compressed-bytes) + the unprojected tensors' gradients in
              full, and every K steps the fp32 row-norm vectors (amortized over K)
A ring all-reduce of S bytes over N ranks moves 2 (N-1)/N S bytes through each link.
"""
import argparse
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_configs():
    text = open(os.path.join(ROOT, "llama_config.h")).read()
    out = {}
    for m in re.finditer(r'\{"(\w+)",\s*\{([^}]*)\}\}', text):
        v = [x.strip() for x in m.group(2).split(",")]
        out[m.group(1)] = dict(vocab=int(v[0]), dim=int(v[1]), ffn=int(v[2]), layers=int(v[3]),
                               heads=int(v[4]), kv=int(v[5]), tied=int(v[7]))
    return out


def matrices(c):
    """(rows, cols) of every projected matrix, and the count of unprojected parameters."""
    d, f, hd = c["dim"], c["ffn"], c["dim"] // c["heads"]
    per_layer = [(c["heads"] * hd, d), (c["kv"] * hd, d), (c["kv"] * hd, d), (d, c["heads"] * hd),
                 (f, d), (f, d), (d, f)]
    other = c["vocab"] * d * (1 if c["tied"] else 2) + d * (2 * c["layers"] + 1)
    return per_layer * c["layers"], other


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["1b", "7b", "13b"])
    p.add_argument("--rank", type=int, default=None, help="Grass/GaLore rank (default: the recipe's)")
    p.add_argument("--rank-frac", type=float, default=None, help="rank as a fraction of the smaller dimension")
    p.add_argument("--ranks", type=int, default=8, help="data-parallel ranks")
    p.add_argument("--bandwidth", type=float, nargs="+", default=[50.0, 400.0], help="GB/s per link")
    p.add_argument("--grad-bytes", type=int, default=2, help="bytes per full-rank gradient element (bf16: 2)")
    p.add_argument("--compressed-bytes", type=int, default=2, help="bytes per Grass compressed element on the wire (bf16: 2)")
    p.add_argument("--update-freq", type=int, default=200)
    args = p.parse_args()
    recipe_rank = {"60m": 128, "130m": 256, "350m": 256, "1b": 1024, "7b": 1024, "13b": 256}
    configs = read_configs()
    N = args.ranks
    ring = 2.0 * (N - 1) / N
    print(f"{N} ranks, ring all-reduce; full-rank grads {args.grad_bytes} B/elem, Grass compressed {args.compressed_bytes} B/elem")
    hdr = f"{'config':7s} {'rank':>5s} {'method':8s} {'MiB/step':>10s} {'vs full':>8s}" + "".join(
        f" {f'ms @{bw:g}GB/s':>14s}" for bw in args.bandwidth)
    print(hdr)
    for name in args.configs:
        if name not in configs:
            raise SystemExit(f"unknown config {name}; llama_config.h has {', '.join(configs)}")
        c = configs[name]
        mats, other = matrices(c)
        full = (sum(m * n for m, n in mats) + other) * args.grad_bytes
        grass = other * args.grad_bytes
        norms = 0
        for m, n in mats:
            small, big = min(m, n), max(m, n)
            r = args.rank or (round(args.rank_frac * small) if args.rank_frac else recipe_rank.get(name, 256))
            r = min(r, small)
            grass += r * big * args.compressed_bytes
            norms += small * 4
        grass += norms / args.update_freq
        r_shown = args.rank or (f"{args.rank_frac:g}" if args.rank_frac else recipe_rank.get(name, 256))
        for method, vol in (("full", full), ("GaLore", full), ("Grass", grass)):
            t = "".join(f" {ring * vol / (bw * 1e9) * 1e3:14.1f}" for bw in args.bandwidth)
            print(f"{name:7s} {str(r_shown):>5s} {method:8s} {vol / 2**20:10.1f} {vol / full:8.3f}{t}")


if __name__ == "__main__":
    main()
