#!/usr/bin/env python3
"""dev/bench_gpu_vs_torch.py: the PyTorch peer of train_llama on the same GPU. A benchmark, not a test.

Trains the same LLaMA as train_llama's `-c NAME` (read from llama_config.h) with transformers'
LlamaForCausalLM, built from a LlamaConfig with random weights (nothing is downloaded), at the
same B and T, and prints one markdown table: tokens/s, step time, peak memory, and the ratio of
train_llama's measured tokens/s to each row's.

    python3 dev/bench_gpu_vs_torch.py -c 1b -b 8 -t 1024                     # on a GPU
    python3 dev/bench_gpu_vs_torch.py -c 1b --ours-log adamw=run_1b_adamw/log.txt --ours-log grass=run_1b_grass/log.txt
    python3 dev/bench_gpu_vs_torch.py -c 1b --ours-tok-s adamw=41000,grass=52000 --json torch_peer.json
    python3 dev/bench_gpu_vs_torch.py --device cpu -c tiny -b 2 -t 64 --warmup 1 --steps 2   # the code path, on a CPU
    python3 dev/bench_gpu_vs_torch.py -c 1b --params-only                    # the parameter count (meta device)

Rows (--rows, comma separated; default all four):
  bf16          pure bf16: bf16 weights, gradients and Adam moments, torch.optim.AdamW(fused=True)
  amp           fp32 master weights and moments, bf16 autocast, torch.optim.AdamW(fused=True)
  bf16_compile  bf16 with torch.compile(model)
  amp_compile   amp with torch.compile(model)
The eager rows always run. The compile rows run each in a child process, which is killed when
--budget-s (the compile rows' wall-clock budget, all of them together, counted from the first
one's start) runs out; a row that does not finish in time, or whose compile fails, is printed as
skipped with the reason.

The ffn: train_llama's GPU build stores 1b's ffn 5461 padded to 5504 with zero rows and columns
(llama_ffn_stored, --ffn-align 64), so its GEMMs run at 5504. --ffn pad (the default) gives HF
intermediate_size = the stored size: the same GEMM shapes, and the parameter count equals the
trainer's "stored" count. --ffn hf runs HF at the model's own 5461: compare it with a trainer
run at --ffn-align 1. Either way the parameter count is asserted against llama_config.h's dims.

Attention: SDPA (attn_implementation="sdpa") inside torch.nn.attention.sdpa_kernel restricted to
the flash backend on CUDA; if flash cannot run, the row falls back to SDPA's default choice and
the table says so. The loss is cross-entropy over all B*T next-token targets, in fp32, as ours.

On a machine without a GPU (or without torch) it says so and exits 0 having measured nothing
(with --json it writes {"measured": false, "reason": ...}).
"""
import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ["bf16", "amp", "bf16_compile", "amp_compile"]
ROW_TEXT = {"bf16": "PyTorch pure bf16 (bf16 moments, fused AdamW)",
            "amp": "PyTorch AMP (fp32 master, bf16 autocast, fused AdamW)",
            "bf16_compile": "PyTorch pure bf16 + torch.compile",
            "amp_compile": "PyTorch AMP + torch.compile"}


def load_perf_model():
    spec = importlib.util.spec_from_file_location("perf_model", os.path.join(ROOT, "dev", "perf_model.py"))
    pm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pm)
    return pm


def model_dims(name, ffn_mode, align=64):
    """The config as llama_config.h names it, and the ffn this run gives HF (see --ffn)."""
    cfgs = load_perf_model().named_configs()
    if name not in cfgs:
        raise SystemExit("bench_gpu_vs_torch: unknown config '%s'; llama_config.h has %s" % (name, " ".join(cfgs)))
    c = dict(cfgs[name])
    c["ffn_model"] = c["ffn"]
    # llama_ffn_stored: padded to a multiple of align only when ffn > dim
    c["ffn_stored"] = (c["ffn"] + align - 1) // align * align if c["ffn"] > c["dim"] else c["ffn"]
    c["ffn_run"] = c["ffn_stored"] if ffn_mode == "pad" else c["ffn"]
    return c


def expected_params(c, ffn):
    """parameters of the LLaMA with these dims and ffn: embed, per layer q k v o gate up down and two
    norms, the final norm, the head unless tied (llama_params.h's table)"""
    d, hd = c["dim"], c["dim"] // c["heads"]
    qd, kvd = c["heads"] * hd, c["kv_heads"] * hd
    layer = d * qd + 2 * d * kvd + qd * d + 3 * d * ffn + 2 * d
    return c["vocab"] * d * (1 if c["tie"] else 2) + c["layers"] * layer + d


def hf_config(c, T):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=c["vocab"], hidden_size=c["dim"], intermediate_size=c["ffn_run"],
                       num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                       num_key_value_heads=c["kv_heads"], max_position_embeddings=max(c["max_seq"], T),
                       rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=bool(c["tie"]),
                       attention_bias=False, mlp_bias=False, attn_implementation="sdpa")


def build_model(c, T, device, dtype):
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(hf_config(c, T))
    if device != "meta":
        model = model.to(dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    want = expected_params(c, c["ffn_run"])
    if n != want:
        raise SystemExit("bench_gpu_vs_torch: LlamaForCausalLM has %d parameters, llama_config.h's dims with ffn %d give %d"
                         % (n, c["ffn_run"], want))
    return model, n


def peak_gib(device):
    import torch
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux: the process's peak RSS


def run_row(row, a, c):
    """One row, in this process: returns a dict (tok_s, step_ms, peak_gib, sdpa, ...)."""
    import torch
    import torch.nn.functional as F
    dev = a.device
    amp = row.startswith("amp")
    compile_ = row.endswith("_compile")
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.backends.cuda.matmul.allow_tf32 = True
    model, nparams = build_model(c, a.seq, dev, torch.float32 if amp else torch.bfloat16)
    model.train()
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True)
        opt_note = "fused"
    except (RuntimeError, TypeError) as e:  # fused AdamW not built for this device
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        opt_note = "not fused (%s)" % str(e).splitlines()[0][:80]
    step_model = torch.compile(model) if compile_ else model
    g = torch.Generator(device="cpu").manual_seed(1)
    toks = torch.randint(0, c["vocab"], (a.batch, a.seq + 1), generator=g).to(dev)
    inp, tgt = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()

    from torch.nn.attention import sdpa_kernel, SDPBackend
    backends = [SDPBackend.FLASH_ATTENTION] if dev == "cuda" else None
    sdpa = "flash" if dev == "cuda" else "SDPA default (CPU)"

    def one_step():
        ctx = torch.autocast(device_type=dev, dtype=torch.bfloat16) if amp else torch.autocast(device_type=dev, enabled=False)
        with ctx:
            logits = step_model(input_ids=inp).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def timed(n):
        ts, losses = [], []
        for _ in range(n):
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if backends:
                with sdpa_kernel(backends):
                    loss = one_step()
            else:
                loss = one_step()
            if dev == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
            losses.append(loss.detach().item())
        return ts, losses

    t0 = time.perf_counter()
    try:
        warm, _ = timed(a.warmup)
    except RuntimeError as e:
        if backends is None or "kernel" not in str(e).lower():
            raise
        # flash could not run these shapes/masks: SDPA's own choice, named in the table
        backends, sdpa = None, "SDPA default (flash refused: %s)" % str(e).splitlines()[0][:60]
        opt.zero_grad(set_to_none=True)
        warm, _ = timed(a.warmup)
    warm_s = time.perf_counter() - t0
    ts, losses = timed(a.steps)
    med = statistics.median(ts)
    return {"row": row, "text": ROW_TEXT[row], "params": nparams, "tok_s": a.batch * a.seq / med, "step_ms": med * 1e3,
            "step_ms_all": [t * 1e3 for t in ts], "warmup_s": warm_s, "peak_gib": peak_gib(dev),
            "peak_kind": "torch.cuda.max_memory_allocated" if dev == "cuda" else "host peak RSS (ru_maxrss)",
            "sdpa": sdpa, "adamw": opt_note, "losses": losses, "status": "ok"}


def run_row_child(row, argv, timeout_s):
    """A compile row in a child process, killed at timeout_s: its result, or a skip with the reason."""
    if timeout_s < 1:
        return {"row": row, "text": ROW_TEXT[row], "status": "skipped", "reason": "no time left in --budget-s"}
    cmd = [sys.executable, os.path.abspath(__file__)] + argv + ["--_child-row", row]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"row": row, "text": ROW_TEXT[row], "status": "skipped",
                "reason": "compile and timed steps did not finish within the %.0f s left of --budget-s" % timeout_s}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT "):])
    tail = " | ".join(x for x in p.stdout.strip().splitlines()[-3:])
    return {"row": row, "text": ROW_TEXT[row], "status": "skipped",
            "reason": "failed (rc %d): %s" % (p.returncode, tail[-300:])}


def read_log_tok_s(path):
    """train_llama's log.txt: the median tok_per_s of its step lines after the first two
    (scripts/gpu_check.sh's PARSE_LOG_PY does the same)"""
    rows = []
    for line in open(path):
        if line.startswith("step=") and " loss=" in line:
            rows.append(dict(kv.split("=", 1) for kv in line.split()))
    if not rows:
        raise SystemExit("bench_gpu_vs_torch: %s has no step lines" % path)
    late = rows[2:] or rows[-1:]
    xs = sorted(float(r["tok_per_s"]) for r in late)
    return xs[(len(xs) - 1) // 2]


def parse_ours(a):
    ours = {}
    for item in (a.ours_tok_s or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise SystemExit("--ours-tok-s: give NAME=TOKENS_PER_S, comma separated (got '%s')" % item)
        k, v = item.split("=", 1)
        try:
            ours[k.strip()] = float(v)
        except ValueError:
            raise SystemExit("--ours-tok-s: '%s' is not a number" % v)
    for item in a.ours_log or []:
        if "=" not in item:
            raise SystemExit("--ours-log: give NAME=PATH/log.txt (got '%s')" % item)
        k, path = item.split("=", 1)
        if not os.path.isfile(path):
            raise SystemExit("--ours-log: cannot open %s" % path)
        ours[k.strip()] = read_log_tok_s(path)
    return ours


def table(results, ours, c, a):
    lines = []
    hdr = "| row | tokens/s | step ms | peak GiB |" + "".join(" train_llama %s / row |" % k for k in ours)
    lines.append(hdr)
    lines.append("|" + "---|" * (4 + len(ours)))
    for k, v in ours.items():
        lines.append("| train_llama %s (measured) | %.0f | %.1f | |" % (k, v, a.batch * a.seq / v * 1e3) + " |" * len(ours))
    for r in results:
        if r["status"] != "ok":
            lines.append("| %s | skipped: %s | | |" % (r["text"], r["reason"]) + " |" * len(ours))
            continue
        lines.append("| %s | %.0f | %.1f | %.2f |" % (r["text"], r["tok_s"], r["step_ms"], r["peak_gib"])
                     + "".join(" %.2f |" % (v / r["tok_s"]) for v in ours.values()))
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-c", "--config", default="1b", help="a llama_config.h name (tiny for a CPU smoke run)")
    p.add_argument("-b", "--batch", type=int, default=8)
    p.add_argument("-t", "--seq", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--ffn", default="pad", choices=["pad", "hf"],
                   help="pad: HF's intermediate_size = train_llama's stored ffn (1b: 5504); hf: the model's (5461)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma separated, of: " + ", ".join(ROWS))
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="wall-clock budget of the compile rows together; a compile row is killed or skipped when it runs out")
    p.add_argument("--ours-tok-s", default=None, help="train_llama's measured tokens/s: NAME=VALUE[,NAME=VALUE]")
    p.add_argument("--ours-log", action="append", default=None, help="NAME=PATH: train_llama's log.txt (repeatable)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("--params-only", action="store_true", help="build on the meta device, print the parameter count, exit")
    p.add_argument("--_child-row", dest="child_row", default=None, help=argparse.SUPPRESS)
    return p


def write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    start = time.time()
    c = model_dims(a.config, a.ffn)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            raise SystemExit("--rows: unknown row '%s' (%s)" % (r, ", ".join(ROWS)))
    if a.batch < 1 or a.seq < 1 or a.steps < 1 or a.warmup < 0:
        raise SystemExit("-b, -t and --steps must be positive, --warmup not negative")
    if a.seq > c["max_seq"]:
        raise SystemExit("-t %d is longer than %s's max_seq %d" % (a.seq, a.config, c["max_seq"]))
    ours = parse_ours(a)
    base = {"config": a.config, "B": a.batch, "T": a.seq, "ffn_mode": a.ffn, "ffn_model": c["ffn_model"],
            "ffn_run": c["ffn_run"], "params_expected": expected_params(c, c["ffn_run"]),
            "params_model": expected_params(c, c["ffn_model"]), "ours_tok_s": ours}

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        msg = "bench_gpu_vs_torch: torch or transformers is not importable here (%s): nothing measured" % e
        print(msg)
        write_json(a.json, dict(base, measured=False, reason=msg))
        return 0
    import torch

    if a.params_only:
        _, n = build_model(c, a.seq, "meta", None)
        print("%s: LlamaForCausalLM with intermediate_size %d has %d parameters (asserted: llama_config.h's dims give %d; "
              "the model's own ffn %d gives %d, train_llama's 'parameters' line)"
              % (a.config, c["ffn_run"], n, base["params_expected"], c["ffn_model"], base["params_model"]))
        write_json(a.json, dict(base, measured=False, params=n, reason="--params-only"))
        return 0

    if a.device == "cuda" and not torch.cuda.is_available():
        msg = "bench_gpu_vs_torch: no GPU here (torch.cuda.is_available() is false): nothing measured"
        print(msg)
        write_json(a.json, dict(base, measured=False, reason=msg))
        return 0

    if a.child_row:
        r = run_row(a.child_row, a, c)
        print("CHILD_RESULT " + json.dumps(r))
        return 0

    dev_name = torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU (%d threads)" % torch.get_num_threads()
    print("bench_gpu_vs_torch: %s, B=%d T=%d, ffn %d (%s), %d parameters, on %s; torch %s, transformers %s; "
          "%d warm-up + %d timed steps, compile budget %.0f s"
          % (a.config, a.batch, a.seq, c["ffn_run"], "train_llama's stored size" if a.ffn == "pad" else "the model's own",
             base["params_expected"], dev_name, torch.__version__, __import__("transformers").__version__, a.warmup,
             a.steps, a.budget_s), flush=True)
    results = []
    child_argv = list(argv)  # a child returns its row on stdout before any --json is written
    compile_start = None
    for row in rows:
        if row.endswith("_compile"):
            compile_start = compile_start or time.time()
            r = run_row_child(row, child_argv, a.budget_s - (time.time() - compile_start))
        else:
            try:
                r = run_row(row, a, c)
            except (RuntimeError, MemoryError) as e:  # out of memory, a kernel failure: this row only
                r = {"row": row, "text": ROW_TEXT[row], "status": "skipped", "reason": "failed: %s" % str(e).splitlines()[0][:200]}
            gc.collect()  # the row's model and optimizer, before the next row's peak is measured
            if a.device == "cuda":
                torch.cuda.empty_cache()
        results.append(r)
        if r["status"] == "ok":
            print("  %-13s %9.0f tok/s  %8.1f ms/step  peak %.2f GiB  warm-up %.1f s  attention: %s  AdamW %s  loss %.3f -> %.3f"
                  % (row, r["tok_s"], r["step_ms"], r["peak_gib"], r["warmup_s"], r["sdpa"], r["adamw"], r["losses"][0],
                     r["losses"][-1]), flush=True)
        else:
            print("  %-13s skipped: %s" % (row, r["reason"]), flush=True)
    print()
    t = table(results, ours, c, a)
    print(t)
    print("\n(ratio: train_llama's measured tokens/s over the row's; > 1 means train_llama is faster. Peak memory: %s.)"
          % ("torch.cuda.max_memory_allocated" if a.device == "cuda" else "the host process's peak RSS"))
    write_json(a.json, dict(base, measured=True, device=dev_name, torch=torch.__version__,
                            transformers=__import__("transformers").__version__, rows=results, table=t,
                            wall_s=time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
