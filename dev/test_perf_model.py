#!/usr/bin/env python3
"""dev/test_perf_model.py: checks of dev/perf_model.py (no GPU; a few seconds).

  (a) model FLOPs per token = 6 N + 12 L d T, with N (q, k, v, o, gate, up, down and the head; the
      embedding only when tied) counted here from the config, for every named config and overrides,
      and equal to what train_llama_cpu logs (mfu * peak / tok_per_s with --peak-tflops 1);
  (b) executed FLOPs per token equal train_llama.cu's executed_flops_per_token, read from the
      trainer's log (mfu_exec * peak / tok_per_s) on tiny synthetic runs: AdamW, Grass (plain and
      refresh steps; exact norms, the sketch, accumulation, a fraction rank, a subset of layers),
      GaLore (with and without accumulation), tied embeddings; to 1e-3;
  (c) every kernel's predicted time respects the roofline: never below FLOPs / peak or bytes /
      bandwidth, on both GPUs, whatever the efficiency factors;
  (d) a GEMM with a leading dimension that is not a multiple of 8 elements (ffn 5461 in 1b) is
      flagged unaligned and pays --unaligned-eff; aligned configs have no such flag.
Prints "N passed, N failed" (tests/run_all.sh reads it); exits non-zero on a failure.
    python3 dev/test_perf_model.py
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("perf_model", os.path.join(ROOT, "dev", "perf_model.py"))
pm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pm)

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL " + what)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def model(argv):
    r, _ = pm.run_model(pm.build_parser().parse_args(argv))
    return r


# ---- (a) 6N + 12 L d T with N counted here ---------------------------------------------------------
def matmul_params_here(vocab, d, f, L, nh, nkv, tie):
    hd = d // nh
    qd, kvd = nh * hd, nkv * hd
    per_layer = d * qd + 2 * d * kvd + qd * d + 3 * d * f  # q, k, v, o, gate, up, down
    return L * per_layer + vocab * d                       # the head (the tied embedding doing its job)


cfgs = pm.named_configs()
check(set(cfgs) >= {"tiny", "d6", "20m", "60m", "130m", "350m", "1b", "7b", "13b"}, "every named config read from llama_config.h")
ok_all = True
for name, c in cfgs.items():
    for T in (64, 256, 1024):
        for extra in ([], ["--tie", "1"], ["--kv-heads", "1"]):
            argv = ["-c", name, "-t", str(min(T, c["max_seq"])), "-b", "1"] + extra
            r = model(argv)
            cc = r["config"]
            n = matmul_params_here(cc["vocab"], cc["dim"], cc["ffn_hf"], cc["layers"], cc["heads"], cc["kv_heads"], cc["tie"])
            want = 6.0 * n + 12.0 * cc["layers"] * cc["dim"] * min(T, c["max_seq"])
            if r["model_flops_per_token"] != want or r["matmul_params"] != n:
                ok_all = False
                print("  %s %s: %g != %g" % (name, extra, r["model_flops_per_token"], want))
check(ok_all, "(a) model FLOPs/token == 6N + 12LdT, N counted independently (9 configs x 3 T x untied/tied/MQA)")
r = model(["-c", "1b", "-t", "1024"])
check(r["matmul_params"] == 24 * (4 * 2048 * 2048 + 3 * 2048 * 5461) + 32000 * 2048,
      "(a) 1b: N = 24 (4 d^2 + 3 d f) + V d = %d (the embedding lookup is not a matmul)" % r["matmul_params"])
r2 = model(["-c", "1b", "-t", "1024", "--tie", "1"])
check(r2["matmul_params"] == r["matmul_params"], "(a) tied 1b: the head's matmul still counts once, the lookup not at all")
r3 = model(["-c", "7b", "-t", "1024", "--heads", "32", "--kv-heads", "8"])
check(r3["matmul_params"] == 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 11008) + 32000 * 4096,
      "(a) GQA (7b with 8 kv heads): k and v are d x d/4")

# ---- (b) the trainer's log -------------------------------------------------------------------------
BIN = os.path.join(ROOT, "train_llama_cpu")
if not os.path.exists(BIN):
    print("building train_llama_cpu (make -j1 train_llama_cpu)")
    subprocess.run(["make", "-j1", "train_llama_cpu"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
have_bin = os.path.exists(BIN)
check(have_bin, "(b) train_llama_cpu exists (built with make -j1 train_llama_cpu when absent)")

TINY = ["-c", "tiny", "--vocab", "256", "--dim", "48", "--ffn", "80", "--heads", "4", "--kv-heads", "2", "--layers", "2",
        "--max-seq", "64", "-b", "4", "-t", "32", "-x", "4", "--peak-tflops", "1", "--log-every", "1000", "-j", "none"]
RUNS = [
    ("adamw", []),
    ("adamw, tied embeddings", ["--tie", "1"]),
    ("grass topr, exact norms", ["--optimizer", "grass", "--rank", "12", "--update-freq", "2", "--grass-select", "topr",
                                 "--grass-norms", "exact"]),
    ("grass uniform-nr, sketch norms", ["--optimizer", "grass", "--rank", "12", "--update-freq", "2", "--grass-select",
                                        "uniform-nr", "--grass-norms", "sketch", "--sketch-dim", "8"]),
    ("grass topr, accumulation 2 (whole-gradient norms)", ["--optimizer", "grass", "--rank", "12", "--update-freq", "2",
                                                           "--grass-select", "topr", "-d", "256"]),
    ("grass topr, rank 0.25, layers q,v,down, unfused", ["--optimizer", "grass", "--rank", "0.25", "--update-freq", "3",
                                                          "--grass-select", "topr", "--grass-layers", "q,v,down",
                                                          "--grass-fused", "0"]),
    ("galore", ["--optimizer", "galore", "--rank", "12", "--update-freq", "2"]),
    ("galore, accumulation 2", ["--optimizer", "galore", "--rank", "8", "--update-freq", "3", "-d", "256"]),
]


def read_log(path):
    steps, refresh = [], set()
    for line in open(path):
        if not line.startswith("step="):
            continue
        kv = dict(x.split("=", 1) for x in line.split())
        if kv.get("refresh") == "1":
            refresh.add(int(kv["step"]))
        elif "loss" in kv:
            steps.append(kv)
    return steps, refresh


if have_bin:
    tmp = tempfile.mkdtemp(prefix="test_perf_model_")
    data = os.path.join(tmp, "data")
    subprocess.run([sys.executable, os.path.join(ROOT, "dev", "data", "make_synthetic.py"), "--out-dir", data, "--vocab",
                    "256", "--train-tokens", "20000", "--val-tokens", "2000"], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for label, extra in RUNS:
        out = os.path.join(tmp, "run%d" % RUNS.index((label, extra)))
        argv = TINY + ["-i", os.path.join(data, "synthetic_train_*.bin"), "-o", out] + extra
        p = subprocess.run([BIN] + argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            check(False, "(b) %s: the trainer ran (%s)" % (label, p.stdout.strip().splitlines()[-1:]))
            continue
        # the same command line through the model's CLI (it takes the trainer's flags), as JSON
        # (the CPU trainer stores the ffn and the selections unpadded; the model's defaults are the GPU build's padding)
        q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "--json", "--ffn-align", "1",
                            "--grass-row-align", "1"] + argv,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if q.returncode != 0:
            check(False, "(b) %s: perf_model.py --json with the trainer's flags (%s)" % (label, q.stderr.strip()))
            continue
        res = json.loads(q.stdout)
        steps, refresh = read_log(os.path.join(out, "log.txt"))
        worst_m = worst_p = worst_r = 0.0
        n_plain = n_ref = 0
        for kv in steps:
            tok_s, mfu, mfu_exec = float(kv["tok_per_s"]), float(kv["mfu"]), float(kv["mfu_exec"])
            model_log = mfu * 1e12 / tok_s
            exec_log = mfu_exec * 1e12 / tok_s
            worst_m = max(worst_m, rel(model_log, res["model_flops_per_token"]))
            if int(kv["step"]) in refresh:
                worst_r = max(worst_r, rel(exec_log, res["executed_flops_per_token"]["refresh"]))
                n_ref += 1
            else:
                worst_p = max(worst_p, rel(exec_log, res["executed_flops_per_token"]["plain"]))
                n_plain += 1
        is_adamw = "--optimizer" not in extra
        check(len(steps) == 4 and (is_adamw or n_ref >= 1) and n_plain >= 1,
              "(b) %s: 4 logged steps (%d plain, %d refresh)" % (label, n_plain, n_ref))
        check(worst_m < 1e-3, "(b) %s: model FLOPs/token == trainer's log (worst rel. diff %.1e)" % (label, worst_m))
        check(worst_p < 1e-3, "(b) %s: executed FLOPs/token, plain steps == trainer's log (worst %.1e; %.4g)"
              % (label, worst_p, res["executed_flops_per_token"]["plain"]))
        if not is_adamw:
            check(worst_r < 1e-3, "(b) %s: executed FLOPs/token, refresh steps == trainer's log (worst %.1e; %.4g)"
                  % (label, worst_r, res["executed_flops_per_token"]["refresh"]))
    shutil.rmtree(tmp, ignore_errors=True)

# ---- (c) the roofline ------------------------------------------------------------------------------
cases = [["-c", "60m", "-b", "16", "-t", "256"],
         ["-c", "60m", "-b", "16", "-t", "256", "--optimizer", "grass", "--rank", "128"],
         ["-c", "1b", "-b", "8", "-t", "1024", "--optimizer", "grass", "--rank", "512", "--grass-norms", "sketch"],
         ["-c", "1b", "-b", "32", "-t", "256", "-d", "131072", "--optimizer", "galore", "--rank", "1024"],
         ["-c", "13b", "-b", "2", "-t", "256", "-d", "4096", "--optimizer", "grass", "--rank", "256", "--recompute", "1",
          "--state-dtype", "bf16", "--weight-decay", "0.1", "--master-weights", "1", "--select-on-device", "1"]]
effs = [[], ["--gemm-eff", "1", "--elem-eff", "1", "--attn-eff", "1", "--unaligned-eff", "1", "--svd-eff", "1",
             "--floor-us", "0"]]
bad = []
nk = 0
for argv in cases:
    for e in effs:
        r = model(argv + e)
        for g, res in r["gpus"].items():
            gpu = pm.GPUS[g]
            for k in res["kernels"]:
                nk += 1
                peak = gpu["bf16_flops"] if k["kind"] in ("gemm", "attn", "attn_cudnn") else gpu["fp32_flops"]
                lo = max(k["flops"] / peak, k["bytes"] / gpu["hbm_bytes_s"])
                if k["t_call_s"] < lo * (1 - 1e-12) or k["t_step_s"] < lo * k["count"] * (1 - 1e-12):
                    bad.append((g, k["name"], k["t_call_s"], lo))
            if not (res["plain_step_s"] >= sum(k["t_step_s"] for k in res["kernels"] if k["phase"] == "step") * (1 - 1e-12)):
                bad.append((g, "plain step below its kernels' sum", res["plain_step_s"], 0))
check(not bad, "(c) %d kernel predictions never below FLOPs/peak or bytes/bandwidth (5 configs, 2 GPUs, 2 sets of "
      "factors)%s" % (nk, "" if not bad else ": %s" % (bad[:3],)))
r = model(["-c", "1b", "-b", "8", "-t", "1024"])
h100, h200 = r["gpus"]["h100"], r["gpus"]["h200"]
check(all(b["t_call_s"] <= a["t_call_s"] + 1e-15 for a, b in zip(h100["kernels"], h200["kernels"])),
      "(c) no kernel is slower on the H200 (same peak, more bandwidth)")
check(r["ceilings"]["h100"]["bf16_flops"] == 989e12 and r["ceilings"]["h100"]["hbm_bytes_s"] == 3.35e12 and
      r["ceilings"]["h200"]["hbm_bytes_s"] == 4.8e12, "(c) ceilings in the output: 989 TFLOP/s, 3.35 and 4.8 TB/s")
gemm_eff_half = model(["-c", "1b", "-b", "8", "-t", "1024", "--gemm-eff", "0.35"])
QKV = "qkv_proj (fused q, k, v)"
GU = "gate_up_proj (fused gate, up)"
k1 = [k for k in h100["kernels"] if k["name"] == QKV][0]
k2 = [k for k in gemm_eff_half["gpus"]["h100"]["kernels"] if k["name"] == QKV][0]
check(abs(k2["t_call_s"] / k1["t_call_s"] - 2.0) < 1e-9, "(c) --gemm-eff scales an aligned GEMM's time (0.35 -> 2x 0.7)")

# ---- (d) unaligned GEMMs -------------------------------------------------------------------------
# the GPU build pads the ffn to a multiple of 64 (5461 -> 5504): every 1b GEMM aligned, the model
# FLOPs those of ffn 5461; unpadded (--ffn-align 1, as the CPU build) the MLP GEMMs are not
r = model(["-c", "1b", "-b", "8", "-t", "1024", "--optimizer", "grass", "--rank", "512", "--grass-select", "topr"])
ru = model(["-c", "1b", "-b", "8", "-t", "1024", "--optimizer", "grass", "--rank", "512", "--grass-select", "topr",
            "--ffn-align", "1"])
check(all(k["aligned"] for k in r["gpus"]["h100"]["kernels"]) and r["config"]["ffn"] == 5504 and r["config"]["ffn_hf"] == 5461,
      "(d) 1b with the GPU build's padding (ffn 5461 stored as 5504), top-r: no GEMM flagged")
check(r["model_flops_per_token"] == ru["model_flops_per_token"] and r["matmul_params"] == ru["matmul_params"],
      "(d) the padding leaves the model FLOPs alone (%d matmul parameters)" % r["matmul_params"])
check(r["gpus"]["h100"]["plain_step_s"] < ru["gpus"]["h100"]["plain_step_s"],
      "(d) and the predicted step is shorter (%.1f ms vs %.1f ms unpadded)" % (1e3 * r["gpus"]["h100"]["plain_step_s"],
                                                                           1e3 * ru["gpus"]["h100"]["plain_step_s"]))
r = ru
ks = r["gpus"]["h100"]["kernels"]
un = [k for k in ks if k["kind"] == "gemm" and not k["aligned"]]
names = {k["name"] for k in un}
check({GU, "down_proj + residual", "down_proj dX", "gate_up_proj dX = dgu [Wgate; Wup] (fused)"} <= names and
      all(set(k["unaligned_lds"]) <= {5461, 2 * 5461} for k in un),
      "(d) 1b (ffn 5461): the gate/up/down GEMMs are flagged unaligned with ld 5461 or 10922 (the fused gate|up) "
      "(%d calls sites)" % len(un))
check(all(k["aligned"] for k in ks if k["name"] in (QKV, "o_proj + residual", "lm_head logits = X W^T")),
      "(d) 1b: the d x d and head GEMMs stay aligned (topr: r = 512)")
r1 = model(["-c", "1b", "-b", "8", "-t", "1024", "--unaligned-eff", "1", "--ffn-align", "1"])
r5 = model(["-c", "1b", "-b", "8", "-t", "1024", "--unaligned-eff", "0.5", "--ffn-align", "1"])
a1 = {k["name"]: k for k in r1["gpus"]["h100"]["kernels"]}
a5 = {k["name"]: k for k in r5["gpus"]["h100"]["kernels"]}
check(abs(a5[GU]["t_call_s"] / a1[GU]["t_call_s"] - 2.0) < 1e-9 and
      a5[QKV]["t_call_s"] == a1[QKV]["t_call_s"], "(d) --unaligned-eff 0.5 doubles an unaligned GEMM's time only")
txt = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "-c", "1b", "-b", "8", "-t", "1024",
                      "--ffn-align", "1"], stdout=subprocess.PIPE, text=True).stdout
check("UNALIGNED ld=5461" in txt, "(d) the text output flags them (UNALIGNED ld=5461)")
for name in ("60m", "13b"):
    r = model(["-c", name, "-b", "2", "-t", "256", "--optimizer", "grass", "--rank", "128", "--grass-select", "topr"])
    check(all(k["aligned"] for k in r["gpus"]["h100"]["kernels"]),
          "(d) %s (ffn %d, multiples of 8), top-r: no GEMM flagged" % (name, r["config"]["ffn"]))
r = model(["-c", "60m", "-b", "2", "-t", "256", "--optimizer", "grass", "--rank", "128", "--grass-row-align", "1"])
check(any(k.get("data_dependent_ld") for k in r["gpus"]["h100"]["kernels"]),
      "(d) multinorm unpadded (--grass-row-align 1): the gathered GEMM's r_eff leading dimension is flagged as data-dependent")
r = model(["-c", "60m", "-b", "2", "-t", "256", "--optimizer", "grass", "--rank", "128"])
check(all(k["aligned"] for k in r["gpus"]["h100"]["kernels"]),
      "(d) multinorm padded to 16 rows (the GPU build's --grass-row-align): no GEMM flagged")

# --attention cudnn: cuDNN's causal FLOPs (B nh T(T+1)/2 pairs x 4 hd) at attn_cudnn_eff; the rest unchanged
own = model(["-c", "60m", "-b", "2", "-t", "256"])
cud = model(["-c", "60m", "-b", "2", "-t", "256", "--attention", "cudnn"])
fw = [k for k in cud["gpus"]["h100"]["kernels"] if k["name"].startswith("attention_forward")]
want = 2 * 8 * (256 * 257 / 2.0) * 4 * 64
check(len(fw) == 1 and abs(fw[0]["flops"] - want) < 1e-6 * want and fw[0]["kind"] == "attn_cudnn",
      "(e) --attention cudnn: forward FLOPs are the causal pairs' (%.4g, want %.4g)" % (fw[0]["flops"] if fw else -1, want))
other = lambda r: sum(k["t_step_s"] for k in r["gpus"]["h100"]["kernels"] if k["group"] != "attention")
check(abs(other(own) - other(cud)) < 1e-12 and cud["gpus"]["h100"]["plain_step_s"] != own["gpus"]["h100"]["plain_step_s"],
      "(e) --attention cudnn changes the attention group only")

# ---- the outputs ---------------------------------------------------------------------------------
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "--recipes", "--json"],
                   stdout=subprocess.PIPE, text=True)
try:
    rec = json.loads(q.stdout)
except ValueError:
    rec = []
check(len(rec) == 12 and {x["optimizer"]["type"] for x in rec} == {"adamw", "grass", "galore"} and
      all(0 < x["gpus"][g]["avg_mfu"] < 1 for x in rec for g in x["gpus"]),
      "--recipes --json: 12 predictions (AdamW, Grass, GaLore x 60m, 1b T=256, 1b T=1024, 13b), MFU in (0, 1)")
r = model(["-c", "1b", "-b", "8", "-t", "1024", "--optimizer", "grass", "--rank", "512", "--grass-select", "topr"])
ex = r["executed_flops_per_token"]
check(ex["plain"] < r["model_flops_per_token"] < ex["refresh"],
      "Grass executes less than the model formula on a plain step, more on a refresh step")

print("test_perf_model: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
