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
      flagged unaligned and pays --unaligned-eff; aligned configs have no such flag;
  (e) --attention cudnn: cuDNN's causal FLOPs, only the attention group changes;
  (f) the machines: the SXM, PCIe and H200 datasheet ceilings, the trainer's peaks read from
      cuda/common.cuh, device names mapped as the trainer does, MFU and exec MFU at each GPU's peak;
  (g) the own attention's efficiency from its shared-memory traffic per tile pair, counted here
      (270336, 245760, 176128 bytes at head_dim 64), and each kernel's time at it;
  (h) several GPUs: a ring all-reduce's time by hand, the 1b all-reduce bytes (AdamW, Grass) by
      hand, the exposed time with and without overlap, the links (NVLink, PCIe, IB), --headline;
  (i) the model's all-reduce bytes equal the trainer's logged comm_mib under mpirun -np 2 (AdamW,
      Grass exact and sketch norms, GaLore; plain and refresh steps);
  (j) --compare: measured groups or kernel names beside the model's, and --assumptions' sources.
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

from checks import Checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("perf_model", os.path.join(ROOT, "dev", "perf_model.py"))
pm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pm)

suite = Checks("test_perf_model")
check = suite.check


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
k1 = [k for k in model(["-c", "1b", "-b", "8", "-t", "1024", "--gemm-eff", "0.7"])["gpus"]["h100"]["kernels"] if k["name"] == QKV][0]
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

# ---- (f) the machines: SXM, PCIe, H200 --------------------------------------------------------------
# the trainer's peaks, read from cuda/common.cuh's backend_peak_flops (bf16 branch)
src = open(os.path.join(ROOT, "cuda", "common.cuh")).read()
bf16_branch = src[src.index("double backend_peak_flops"):]
bf16_branch = bf16_branch[bf16_branch.index("#else"):bf16_branch.index("#endif")]
check('strstr(n, "PCIe")) return 756e12' in bf16_branch and '"H200"' in bf16_branch and "return 989e12" in bf16_branch,
      "(f) the trainer's bf16 peaks: 756e12 for an H100 PCIe, 989e12 for H100 SXM and H200 (cuda/common.cuh)")
G = pm.GPUS
check((G["h100"]["bf16_flops"], G["h100pcie"]["bf16_flops"], G["h200"]["bf16_flops"]) == (989e12, 756e12, 989e12) and
      (G["h100"]["hbm_bytes_s"], G["h100pcie"]["hbm_bytes_s"], G["h200"]["hbm_bytes_s"]) == (3.35e12, 2.0e12, 4.8e12) and
      (G["h100"]["fp32_flops"], G["h100pcie"]["fp32_flops"]) == (67e12, 51e12),
      "(f) datasheet ceilings: bf16 989/756/989 TFLOP/s, HBM 3.35/2.0/4.8 TB/s, fp32 67/51 (SXM/PCIe/H200)")
check(abs(G["h100"]["rated_ghz"] - 989e12 / (132 * 4096) / 1e9) < 1e-12 and abs(G["h100"]["rated_ghz"] - 1.8293) < 1e-3 and
      abs(G["h100pcie"]["rated_ghz"] - 756e12 / (114 * 4096) / 1e9) < 1e-12,
      "(f) the rated clocks: 989e12 / (132 SMs x 4096) = 1.829 GHz, 756e12 / (114 x 4096) = %.3f GHz" % G["h100pcie"]["rated_ghz"])
names = {"NVIDIA H100 80GB HBM3": "h100", "NVIDIA H100 PCIe": "h100pcie", "NVIDIA H100 NVL": "h100", "NVIDIA H200": "h200",
         "NVIDIA GH200 480GB": "h200", "h100pcie": "h100pcie", "H800": "h100"}
check(all(pm.gpu_key(n) == k for n, k in names.items()), "(f) device names map as the trainer's rule does (PCIe in the name)")
try:
    pm.gpu_key("NVIDIA A100-SXM4-80GB")
    check(False, "(f) an unknown GPU is an error")
except SystemExit as e:
    check("unknown" in str(e), "(f) an unknown GPU is an error (%s)" % str(e)[:50])
r = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100,NVIDIA H100 PCIe,h200"])
ok = True
for g, peak in (("h100", 989e12), ("NVIDIA H100 PCIe", 756e12), ("h200", 989e12)):
    x = r["gpus"][g]
    ok &= rel(x["plain_mfu"] * peak / x["plain_tok_s"], r["model_flops_per_token"]) < 1e-12
check(ok, "(f) MFU uses each GPU's own peak: mfu x peak / tok_s = model FLOPs/token (989, 756, 989)")
rg1 = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--optimizer", "grass", "--rank", "512"])
x, ex = rg1["gpus"]["h100"], rg1["executed_flops_per_token"]
check(all(rel(x[k + "_mfu_exec"] * 989e12 / x[k + "_tok_s"], ex[k]) < 1e-12 for k in ("plain", "refresh", "avg")) and
      x["plain_mfu_exec"] < x["plain_mfu"],
      "(f) exec MFU (the trainer's mfu_exec): executed FLOPs/token x tok/s / peak; below MFU for Grass's plain step")
check(r["gpus"]["NVIDIA H100 PCIe"]["plain_step_s"] > r["gpus"]["h100"]["plain_step_s"] > r["gpus"]["h200"]["plain_step_s"],
      "(f) 1b step: PCIe %.1f ms > SXM %.1f ms > H200 %.1f ms" % tuple(1e3 * r["gpus"][g]["plain_step_s"] for g in
                                                                      ("NVIDIA H100 PCIe", "h100", "h200")))

# ---- (g) the own attention's efficiency, from its shared-memory traffic --------------------------
# one tile pair at head_dim 64, by hand: a WMMA 16x16 output tile over K loads K/16 x (512 + 512)
# operand bytes and stores its 1024-byte fp32 accumulator (loads it too when accumulating)
fwd_bytes = (2 * 64 * 64 * 2            # K, V tiles stored
             + 16 * (4 * 1024 + 1024)    # S = Q K^T: 16 tiles, K = 64
             + 64 * 64 * 4 * 2 + 64 * 64 * 2  # S read twice, P written
             + 64 * 64 * 4 * 2           # O rescaled
             + 16 * (4 * 1024 + 2048))   # O += P V: 16 tiles of 64 x 64, K = 64, accumulating
kv_bytes = 2 * 32 * 64 * 2 + 2 * 8 * (4 * 1024 + 1024) + 32 * 64 * 4 * 2 + 32 * 64 * 2 * 2 + 2 * 16 * (2 * 1024 + 2048)
q_bytes = 2 * 32 * 64 * 2 + 2 * 8 * (4 * 1024 + 1024) + 64 * 32 * 4 * 2 + 64 * 32 * 2 + 16 * (2 * 1024 + 2048)
hand = {"fwd": (2 * 2 * 64 * 64 * 64, fwd_bytes), "dkdv": (4 * 2 * 32 * 64 * 64, kv_bytes), "dq": (3 * 2 * 64 * 32 * 64, q_bytes)}
tr = pm.own_attention_traffic(64)
check(all(tr[k]["flops"] == f and tr[k]["smem_bytes"] == b for k, (f, b) in hand.items()) and
      (fwd_bytes, kv_bytes, q_bytes) == (270336, 245760, 176128),
      "(g) shared-memory bytes per tile pair: fwd 270336, dK/dV 245760, dQ 176128 (counted here)")
effs = {k: (f / 4096.0) / (b / 128.0) for k, (f, b) in hand.items()}
check(all(abs(tr[k]["eff_at_clock"] - effs[k]) < 1e-12 for k in effs) and abs(effs["fwd"] - 256 / 2112.0) < 1e-12,
      "(g) efficiency at the clock = (FLOPs / 4096) / (bytes / 128): fwd %.4f, dK/dV %.4f, dQ %.4f" % (effs["fwd"], effs["dkdv"], effs["dq"]))
r = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100"])
clock = 1.755 / (989e12 / (132 * 4096) / 1e9)
ok, worst, n = True, 0.0, 0
for k in r["gpus"]["h100"]["kernels"]:
    if k["kind"] != "attn":
        continue
    n += 1
    e = effs[k["attn_kernel"]] * clock
    ok &= 0.08 < e < 0.16
    want = max(k["flops"] / 989e12, k["bytes"] / 3.35e12) / e
    worst = max(worst, abs(k["t_call_s"] / want - 1))
check(ok and n == 3 and worst < 1e-9, "(g) each own attention kernel runs at its efficiency x the clock ratio %.3f (0.08-0.16 of peak)" % clock)
r25 = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--attn-eff", "0.25"])
check(set(r25["gpus"]["h100"]["factors"]["attn_eff_kernel"].values()) == {0.25}, "(g) --attn-eff 0.25 overrides all three")
check(abs(r["gpus"]["h100"]["factors"]["gemm_eff"] - clock * 0.78) < 1e-12,
      "(g) the GEMM efficiency: clock ratio x gemm_kernel_eff = %.4f" % (clock * 0.78))

# ---- (h) several GPUs: the all-reduce ------------------------------------------------------------
check(abs(pm.ring_allreduce_s(1e9, 8, 450e9, 0.8) - 2 * 7 / 8.0 * 1e9 / 360e9) < 1e-15 and pm.ring_allreduce_s(1e9, 1, 450e9, 0.8) == 0,
      "(h) a ring all-reduce of 1 GB on 8 GPUs at 450 GB/s x 0.8: 2 (7/8) 1e9 / 360e9 = %.3f ms" % (1.75e9 / 360e9 * 1e3))
V, d, L, f = 32000, 2048, 24, 5504
dense_all = 2 * V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d            # the stored 1b, every tensor dense
dense_grass = 2 * V * d + L * 2 * d + d                                    # Grass: embeddings, head, norms
comp_grass = L * (4 * 512 * d + 3 * 512 * f)                               # r x other: q k v o (other d), gate up down (other 5504)
ra = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "8"])
rg = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "8", "--optimizer", "grass", "--rank", "512",
            "--grass-select", "topr"])  # topr: r_eff = r (multinorm's r_eff is the expected distinct draws)
check(ra["comm"]["step_bytes"] == 2 * dense_all == 2690846720 and rg["comm"]["step_bytes"] == 2 * (dense_grass + comp_grass),
      "(h) 1b all-reduce bytes per step: AdamW 2 x %d = %d, Grass rank 512 2 x (%d + %d) = %d"
      % (dense_all, 2 * dense_all, dense_grass, comp_grass, 2 * (dense_grass + comp_grass)))
ma, mg = ra["gpus"]["h100"]["multi"], rg["gpus"]["h100"]["multi"]
check(abs(ma["t_all_s"] - 1.75 * 2 * dense_all / 360e9) < 1e-12 and ma["link"] == "NVLink 4",
      "(h) AdamW on 8 GPUs in one node: all-reduce %.2f ms over NVLink" % (1.75 * 2 * dense_all / 360e9 * 1e3))
# --overlap-comm 0: every byte and call exposed
r0 = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "8", "--overlap-comm", "0", "--optimizer", "grass",
            "--rank", "512", "--grass-select", "topr"])
m0 = r0["gpus"]["h100"]["multi"]
want = 1.75 * 2 * (dense_grass + comp_grass) / 360e9 + (1 + 168) * 15e-6
check(abs(m0["exposed_s"] - want) < 1e-12 and abs(m0["plain_step_s"] - r0["gpus"]["h100"]["plain_step_s"] - want) < 1e-12,
      "(h) without overlap the step grows by the whole all-reduce plus 169 calls x 15 us (%.3f ms)" % (want * 1e3))
check(abs(m0["plain_tok_s"] - 8 * 8192 / m0["plain_step_s"]) < 1e-6 and
      abs(m0["plain_mfu"] - r0["model_flops_per_token"] * 8192 / m0["plain_step_s"] / 989e12) < 1e-12,
      "(h) tokens/s on 8 GPUs = 8 x 8192 / step; MFU per GPU")
# with overlap (the default): the tail (embedding, head, final norm) after the backward, the layers hidden
t_bwd = sum(k["t_step_s"] for k in ra["gpus"]["h100"]["kernels"] if k["phase"] == "step" and k["segment"] == "bwd")
tail = 1.75 * 2 * (2 * V * d + d) / 360e9
layers = 1.75 * 2 * (dense_all - 2 * V * d - d) / 360e9 + L * 15e-6
want = tail + 2 * 15e-6 + max(layers / L, layers - t_bwd)
check(abs(ma["exposed_s"] - want) < 1e-12, "(h) with overlap: exposed = tail %.2f ms + max(one layer, layers - backward) = %.3f ms"
      % (tail * 1e3, want * 1e3))
ri = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "16"])
rj = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "8", "--gpus-per-node", "1"])
rk = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100pcie", "--gpus", "8"])
rl = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100", "--gpus", "8", "--link-gb-s", "100"])
check(ri["gpus"]["h100"]["multi"]["link_bytes_s"] == 50e9 and rj["gpus"]["h100"]["multi"]["link_bytes_s"] == 50e9 and
      rk["gpus"]["h100pcie"]["multi"]["link_bytes_s"] == 64e9 and rl["gpus"]["h100"]["multi"]["link_bytes_s"] == 100e9 and
      abs(ri["gpus"]["h100"]["multi"]["ring_factor"] - 2 * 15 / 16.0) < 1e-15,
      "(h) links: 16 GPUs (2 nodes) and 8 single-GPU nodes over IB 50 GB/s, the PCIe card over PCIe 64 GB/s, --link-gb-s")
check(rg["norm_path"] == "layer_g" and rg["comm"]["refresh_bytes"] == 4 * L * (4 * d * d + 3 * d * f),
      "(h) Grass on several ranks: the norm pass sums each layer's whole fp32 gradient (NP_LAYER_G), %d bytes at a refresh"
      % (4 * L * (4 * d * d + 3 * d * f)))
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "-c", "1b", "-b", "8", "-t", "1024", "--rank", "512",
                    "--gpu", "h100", "--grass-select", "topr", "--headline", "--json"], stdout=subprocess.PIPE, text=True)
hl = json.loads(q.stdout) if q.returncode == 0 else {}
check(hl.get("gpus_n") == 8 and set(hl.get("runs", {})) == {"adamw", "grass", "galore"} and
      hl["runs"]["grass"]["comm"]["step_bytes"] == 2 * (dense_grass + comp_grass) and
      hl["runs"]["adamw"]["gpus"]["h100"]["multi"]["avg_tok_s"] == ma["avg_tok_s"],
      "(h) --headline: AdamW, Grass, GaLore on 8 GPUs, each as its own --gpus 8 run")

# ---- (i) the all-reduce bytes equal what the trainer counts (mpirun -np 2, CPU build: fp32 on the wire) ----
MPIRUN = shutil.which("mpirun")
if have_bin and MPIRUN:
    tmp = tempfile.mkdtemp(prefix="test_perf_model_mpi_")
    data = os.path.join(tmp, "data")
    subprocess.run([sys.executable, os.path.join(ROOT, "dev", "data", "make_synthetic.py"), "--out-dir", data, "--vocab",
                    "256", "--train-tokens", "20000", "--val-tokens", "2000"], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for label, extra in [("adamw", []),
                         ("grass topr", ["--optimizer", "grass", "--rank", "12", "--update-freq", "2", "--grass-select", "topr"]),
                         ("grass sketch", ["--optimizer", "grass", "--rank", "12", "--update-freq", "2", "--grass-select", "topr",
                                           "--grass-norms", "sketch", "--sketch-dim", "8"]),
                         ("galore", ["--optimizer", "galore", "--rank", "8", "--update-freq", "2"])]:
        out = os.path.join(tmp, label.replace(" ", "_"))
        argv = TINY + ["-x", "3", "-i", os.path.join(data, "synthetic_train_*.bin"), "-o", out] + extra
        p = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", BIN] + argv, cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0 or not os.path.exists(os.path.join(out, "log.txt")):
            check(False, "(i) %s: mpirun -np 2 train_llama_cpu ran (%s)" % (label, p.stdout.strip().splitlines()[-1:]))
            continue
        a = pm.build_parser().parse_args(argv + ["--ffn-align", "1", "--grass-row-align", "1", "--gpus", "2"])
        c = pm.resolve_config(a)
        cp = pm.comm_plan(c, pm.optim_from_args(a), 2, 1, grad_bytes=4, wire_bytes=4)  # the CPU build: fp32 everywhere
        steps, refresh = read_log(os.path.join(out, "log.txt"))
        plain = [float(kv["comm_mib"]) for kv in steps if int(kv["step"]) not in refresh]
        ref = [float(kv["comm_mib"]) for kv in steps if int(kv["step"]) in refresh]
        ok = plain and all(abs(x - cp["step_bytes"] / 2**20) < 1e-4 for x in plain)
        ok_r = "adamw" in label or (ref and all(abs(x - (cp["step_bytes"] + cp["refresh_bytes"]) / 2**20) < 1e-4 for x in ref))
        check(ok and ok_r, "(i) %s: the trainer's comm_mib (plain %s, refresh %s) == the model's %.4f + %.4f MiB at a refresh"
              % (label, plain[:1], ref[:1], cp["step_bytes"] / 2**20, cp["refresh_bytes"] / 2**20))
    shutil.rmtree(tmp, ignore_errors=True)
else:
    check(False, "(i) mpirun and train_llama_cpu are needed to compare the all-reduce bytes with the trainer's")

# ---- (j) --compare: measured beside the model --------------------------------------------------
tmp = tempfile.mkdtemp(prefix="test_perf_model_cmp_")
r = model(["-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100"])
grp = {}
for k in r["gpus"]["h100"]["kernels"]:
    if k["phase"] == "step":
        grp[k["group"]] = grp.get(k["group"], 0.0) + k["t_step_s"] * 1e3
meas = dict(grp)
meas["attention"] *= 2
mpath = os.path.join(tmp, "m.json")
json.dump({"gpu": "NVIDIA H100 80GB HBM3", "step_ms": 2 * r["gpus"]["h100"]["plain_step_s"] * 1e3, "groups_ms": meas}, open(mpath, "w"))
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100",
                    "--compare", mpath, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
rows = json.loads(q.stdout[q.stdout.index("["):]) if q.returncode == 0 else []
byg = {x["group"]: x for x in rows}
check(rows and abs(byg["attention"]["ratio"] - 2.0) < 1e-9 and
      all(abs(byg[g]["ratio"] - 1.0) < 1e-9 for g in grp if g != "attention") and abs(byg["step"]["ratio"] - 2.0) < 1e-9,
      "(j) --compare groups_ms: attention at 2x the model reads 2.00, the other %d groups 1.00, the step 2.00" % (len(grp) - 1))
json.dump({"kernels_ms": {"gk_attention_forward": 3.0, "gk_attention_backward_dq": 4.0, "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn": 50.0,
                          "gk_rmsnorm_backward": 1.0, "ncclDevKernel_AllReduce_Sum_bf16_RING_LL": 2.0, "mystery_kernel": 0.5}},
          open(mpath, "w"))
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "-c", "1b", "-b", "8", "-t", "1024", "--gpu", "h100",
                    "--compare", mpath, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
rows = json.loads(q.stdout[q.stdout.index("["):]) if q.returncode == 0 else []
byg = {x["group"]: x for x in rows if x["group"]}
gemm_model = sum(k["t_step_s"] for k in r["gpus"]["h100"]["kernels"] if k["phase"] == "step" and k["kind"] in ("gemm", "gemm32")) * 1e3
check(rows and byg["attention"]["measured_ms"] == 7.0 and byg["gemm (cuBLAS)"]["measured_ms"] == 50.0 and
      abs(byg["gemm (cuBLAS)"]["model_ms"] - gemm_model) < 1e-9 and byg["rmsnorm"]["measured_ms"] == 1.0 and
      byg["all-reduce (NCCL)"]["model_ms"] is None and any(x.get("name") == "mystery_kernel" for x in rows) and
      abs(byg["sum of kernels"]["measured_ms"] - 60.5) < 1e-9,
      "(j) --compare kernels_ms: kernel names to groups (attention 3+4, every GEMM as 'gemm (cuBLAS)' = %.1f ms in the model, "
      "NCCL apart, unknown names listed)" % gemm_model)
json.dump({"nothing": 1}, open(mpath, "w"))
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "-c", "1b", "--compare", mpath],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
check(q.returncode != 0 and "none of step_ms" in q.stdout, "(j) --compare with a file lacking every field: a clear error")
shutil.rmtree(tmp, ignore_errors=True)
q = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "perf_model.py"), "--assumptions", "-c", "1b"], stdout=subprocess.PIPE,
                   text=True)
check(q.returncode == 0 and all(k in q.stdout for k in pm.DEFAULTS) and "FlashAttention-3" in q.stdout and "datasheet" in q.stdout
      and "270336" in q.stdout, "(j) --assumptions names every factor with its source and the attention traffic")

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

suite.finish()
