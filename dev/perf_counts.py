#!/usr/bin/env python3
"""
Counts what one training step of the GPU build asks of the GPU, from the CUDA emulator (a
benchmark, not a test: it prints figures and asserts nothing). The emulated trainer
(build/emu/train_llama, `make build/emu/train_llama`) writes its counts at exit when
GRASS_EMU_COUNTS names a file (tests/cuda_emu/cuda_emu.h): kernel launches by name, host
synchronizations, device allocations, copies, collectives, and every GEMM with its shape and
whether its pointers and leading dimensions are 16-byte aligned (what Hopper's fast cuBLASLt
kernels need).

One steady-state step is the difference between a run of 3 steps and one of 2 (the same start,
the same final checkpoint); one layer is that difference at L+1 layers minus the one at L. So:

    python3 dev/perf_counts.py                      # 60m and 1b (at 2 and 3 layers), AdamW and Grass
    python3 dev/perf_counts.py --configs 60m --optimizers grass --batch 2 --seq 64 --accum 2

With --bytes the runs also measure the bytes each kernel moves (GRASS_EMU_BYTES=1: the emulator
protects device memory while a kernel runs and records the distinct 4 KiB pages it reads and
writes; tests/cuda_emu/cuda_emu.h) and print them per kernel and per group beside the bytes
dev/perf_model.py assumes for the same step, so the model's byte formulas meet a measurement.
Page granularity overstates small buffers (a 256-byte vector counts 4 KiB), so use a T large
enough that activations span many pages (e.g. --seq 256).

    python3 dev/perf_counts.py --configs 60m --bytes --seq 256

Not counted: time; the bytes of GEMMs (cuBLAS), memsets and copies (not kernels).
"""
import json
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (the trainer's -c, vocabulary); layers are set by the script
CONFIGS = {"tiny": ("tiny", 256), "60m": ("60m", 32000), "1b": ("1b", 32000), "7b": ("7b", 32000)}


def read_counts(path):
    c = {"kernels": {}, "gemms": []}
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "kernel":
            c["kernels"][parts[1]] = int(parts[2])
        elif parts[0] == "kernel_bytes":
            c.setdefault("kbytes", {})[parts[1]] = (int(parts[2]), int(parts[3]))
        elif parts[0] == "gemm":
            g = dict(kv.split("=") for kv in parts[1:])
            c["gemms"].append({k: int(v) for k, v in g.items()})
        else:
            c[parts[0]] = int(parts[1])
    return c


def diff(a, b):
    """b - a for every counter; GEMMs as {shape: calls}"""
    d = {k: b[k] - a.get(k, 0) for k in b if k not in ("kernels", "gemms", "kbytes")}
    ka, kb = a.get("kbytes", {}), b.get("kbytes", {})
    d["kbytes"] = {n: (kb.get(n, (0, 0))[0] - ka.get(n, (0, 0))[0], kb.get(n, (0, 0))[1] - ka.get(n, (0, 0))[1])
                   for n in set(ka) | set(kb)}
    names = set(a["kernels"]) | set(b["kernels"])
    d["kernels"] = {n: b["kernels"].get(n, 0) - a["kernels"].get(n, 0) for n in names}
    key = lambda g: tuple(sorted((k, v) for k, v in g.items() if k != "calls"))
    ga = {key(g): g["calls"] for g in a["gemms"]}
    gb = {key(g): g["calls"] for g in b["gemms"]}
    d["gemms"] = {k: gb.get(k, 0) - ga.get(k, 0) for k in set(ga) | set(gb) if gb.get(k, 0) != ga.get(k, 0)}
    return d


def run(binary, data, cfg, vocab, layers, steps, opt, batch, seq, accum, work, tag, trace_bytes=False):
    out = os.path.join(work, tag)
    counts = os.path.join(work, tag + ".counts")
    args = [binary, "-i", os.path.join(data, "synthetic_train_*.bin"), "-j", "none", "-c", cfg, "--layers", str(layers),
            "-b", str(batch), "-t", str(seq), "-d", str(batch * seq * accum), "-x", str(steps), "-v", "0",
            "--log-every", "1000", "-o", out]
    if opt == "grass":
        # the selection is made at step 0; steps 1.. are plain steps (no refresh inside the window)
        args += ["--optimizer", "grass", "--rank", "0.25", "--update-freq", "1000"]
    env = dict(os.environ, GRASS_EMU_COUNTS=counts, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if trace_bytes:
        env["GRASS_EMU_BYTES"] = "1"
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}\nfailed ({r.returncode}):\n{(r.stdout + r.stderr)[-2000:]}")
    return read_counts(counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/emu/train_llama"))
    ap.add_argument("--configs", default="60m,1b", help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--optimizers", default="adamw,grass")
    ap.add_argument("--layers", type=int, default=2, help="L: runs at L and L+1 layers (default 2)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--accum", type=int, default=1, help="micro-steps per optimizer step")
    ap.add_argument("--shapes", action="store_true", help="list every GEMM shape of the step")
    ap.add_argument("--bytes", action="store_true", help="measure the bytes each kernel reads and writes (slower), "
                    "beside dev/perf_model.py's figures")
    a = ap.parse_args()
    if not os.path.isfile(a.bin):
        sys.exit(f"{a.bin} not found: make build/emu/train_llama (needs the CUDA headers)")
    with tempfile.TemporaryDirectory() as work:
        rows = []
        for name in a.configs.split(","):
            if name not in CONFIGS:
                sys.exit(f"unknown config {name} (known: {', '.join(CONFIGS)})")
            cfg, vocab = CONFIGS[name]
            data = os.path.join(work, f"data{vocab}")
            if not os.path.isdir(data):
                subprocess.run([sys.executable, os.path.join(ROOT, "dev/data/make_synthetic.py"), "--out-dir", data,
                                "--vocab", str(vocab), "--train-tokens", str(max(20000, 8 * a.batch * a.seq * a.accum)),
                                "--val-tokens", "2000"], check=True, capture_output=True)
            for opt in a.optimizers.split(","):
                L = a.layers
                c = {}
                for layers, steps in ((L, 2), (L, 3), (L + 1, 2), (L + 1, 3)):
                    c[(layers, steps)] = run(a.bin, data, cfg, vocab, layers, steps, opt, a.batch, a.seq, a.accum, work,
                                             f"{name}_{opt}_L{layers}_x{steps}", a.bytes)
                step = diff(c[(L, 2)], c[(L, 3)])                  # one step at L layers
                layer_step = diff(c[(L + 1, 2)], c[(L + 1, 3)])    # one step at L + 1 layers
                per_layer = {k: layer_step[k] - step[k] for k in ("launches", "syncs", "mallocs")}
                gemm_calls = sum(step["gemms"].values())
                aligned = sum(v for k, v in step["gemms"].items() if dict(k)["aligned"])
                rows.append((name, opt, L, step, per_layer, gemm_calls, aligned))
        print(f"one steady-state optimizer step of the emulated GPU build (B={a.batch}, T={a.seq}, {a.accum} micro-step"
              f"{'s' if a.accum > 1 else ''} per step; layers reduced to {a.layers}, one more for the per-layer figures)\n")
        print(f"{'config':7s} {'optimizer':9s} {'launches':>9s} {'per layer':>10s} {'syncs':>6s} {'allocs':>7s} "
              f"{'D2H':>4s} {'H2D':>4s} {'pageable':>8s} {'GEMMs':>6s} {'aligned':>8s}")
        for name, opt, L, st, pl, gc, al in rows:
            pct = f"{100.0 * al / gc:.0f}%" if gc else "-"
            print(f"{name:7s} {opt:9s} {st['launches']:9d} {pl['launches'] / a.accum:10.1f} {st['syncs']:6d} "
                  f"{st['mallocs']:7d} {st['copies_d2h']:4d} {st['copies_h2d']:4d} {st.get('copies_h2d_pageable', 0):8d} "
                  f"{gc:6d} {pct:>8s}")
        print("\nper layer: launches per layer per micro-step (a run with one more layer, minus this one); pageable:"
              "\nasynchronous host-to-device copies from memory that is not pinned (a GPU copies those synchronously)")
        for name, opt, L, st, pl, gc, al in rows:
            bad = sorted({(dict(k)["m"], dict(k)["n"], dict(k)["k"], dict(k)["lda"], dict(k)["ldb"], dict(k)["ldd"])
                          for k in st["gemms"] if not dict(k)["aligned"]})
            if bad:
                print(f"{name} {opt}: GEMMs not 16-byte aligned (m, n, k, lda, ldb, ldd; column-major): "
                      + "; ".join(str(b) for b in bad))
            if a.shapes:
                for k, v in sorted(st["gemms"].items()):
                    g = dict(k)
                    print(f"  {name} {opt} gemm m={g['m']} n={g['n']} k={g['k']} lda={g['lda']} ldb={g['ldb']} "
                          f"ldd={g['ldd']} aligned={g['aligned']} x{v}")
            top = sorted(st["kernels"].items(), key=lambda kv: -kv[1])[:8]
            print(f"{name} {opt}: most launched kernels per step: " + ", ".join(f"{n} {c}" for n, c in top if c))
        if a.bytes:
            for name, opt, L, st, pl, gc, al in rows:
                print_bytes(name, opt, L, st, a)


# emulator kernel name -> the group its bytes are compared in (the performance model's group, or
# a part of one: the gather of "wgrad grass", the D kernel of "attention")
def kernel_group(k):
    for prefix, g in (("gk_rmsnorm", "rmsnorm"), ("gk_rope", "rope"), ("gk_swiglu", "swiglu"), ("gk_adamw", "optimizer adamw"),
                      ("gk_grass_adam", "optimizer grass"), ("gk_decay", "optimizer grass"), ("gk_grass_gather", "grass gather"),
                      ("gk_sumsq", "grad norm"), ("gk_clip_factor", "grad norm"), ("gk_classifier", "classifier"),
                      ("gk_loss_accumulate", "classifier"), ("gk_embedding", "embedding"), ("gk_iota", "embedding"),
                      ("gk_attention_D", "attention D"), ("gk_attention", "attention (fused kernels)")):
        if k.startswith(prefix):
            return g
    return "other"


def model_group(rec):
    """the same grouping of one of perf_model.py's kernel records (None: a GEMM, a memset, not compared)"""
    if rec["kind"] == "gemm" or rec["group"] == "memset":
        return None
    if rec["group"] == "wgrad grass":
        return "grass gather" if "gather" in rec["name"] else None
    if rec["group"] == "attention":
        return "attention D" if "rowsum" in rec["name"] else "attention (fused kernels)"
    return rec["group"]


def print_bytes(name, opt, L, st, a):
    cfg, _ = CONFIGS[name]
    argv = [sys.executable, os.path.join(HERE, "perf_model.py"), "--json", "-c", cfg, "--layers", str(L), "-b", str(a.batch),
            "-t", str(a.seq), "-d", str(a.batch * a.seq * a.accum)]
    if opt == "grass":
        argv += ["--optimizer", "grass", "--rank", "0.25", "--update-freq", "1000"]
    r = subprocess.run(argv, capture_output=True, text=True)
    model = {}
    if r.returncode == 0:
        for rec in json.loads(r.stdout)["gpus"]["h100"]["kernels"]:
            g = model_group(rec)
            if rec["phase"] == "step" and g is not None:
                model[g] = model.get(g, 0.0) + rec["bytes"] * rec["count"]
    else:
        print(f"(perf_model.py failed: {r.stderr.strip()[-200:]})")
    print(f"\n{name} {opt}: bytes per step, measured (distinct 4 KiB pages each launch read / wrote) and the model's")
    print(f"  {'kernel':42s} {'launches':>8s} {'read MB':>9s} {'written MB':>10s}")
    groups = {}
    for k, (rd, wr) in sorted(st["kbytes"].items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        if rd == 0 and wr == 0:
            continue
        print(f"  {k:42s} {st['kernels'].get(k, 0):8d} {rd / 1e6:9.3f} {wr / 1e6:10.3f}")
        g = kernel_group(k)
        groups[g] = groups.get(g, 0) + rd + wr
    print(f"  {'group':42s} {'measured MB':>11s} {'model MB':>9s} {'model/measured':>15s}")
    for g in sorted(set(groups) | set(model), key=lambda g: -groups.get(g, 0)):
        m, p = groups.get(g, 0) / 1e6, model.get(g, 0) / 1e6
        ratio = f"{p / m:15.2f}" if m > 0 and p > 0 else f"{'-':>15s}"
        print(f"  {g:42s} {m:11.3f} {p:9.3f} {ratio}")


if __name__ == "__main__":
    main()
