#!/usr/bin/env python3
"""dev/perf_model.py: a roofline performance model of one optimizer step of the CUDA build.

It lists every kernel and GEMM that train_llama (nvcc, bf16) launches in one optimizer step, in
the order llama_model.h and grass_optim.cuh issue them, with the FLOPs and the HBM bytes of each
call, and predicts each call's time on an H100 SXM and an H200:

    time = max(FLOPs / peak, bytes / bandwidth) / efficiency     (never below --floor-us)

then the step time, tokens/s and MFU (model FLOPs 6 N + 12 L d T per token, as the trainer
counts them, over the predicted time). It takes the trainer's own flags (-c, -b, -t, -d,
--optimizer, --rank, --update-freq, --grass-norms, ...; flags that do not change the step's work,
such as -i, -x or -l, are accepted and ignored), so a training command line can be passed as is.

    python3 dev/perf_model.py -c 1b -b 8 -t 1024 --optimizer grass --rank 512
    python3 dev/perf_model.py -c 1b -b 8 -t 1024 --optimizer grass --rank 512 --json
    python3 dev/perf_model.py --recipes          # AdamW, Grass, GaLore at 60m, 1b (T=256, 1024), 13b
    python3 dev/perf_model.py -c 1b -b 8 -t 1024 --rank 512 --headline --gpu h100   # 8 GPUs: AdamW, Grass, GaLore
    python3 dev/perf_model.py -c 1b -b 8 -t 1024 --gpus 16 --optimizer grass --rank 512  # 2 nodes over InfiniBand
    python3 dev/perf_model.py -c 1b -b 8 -t 1024 --gpu h100 --compare measured.json      # after a GPU run

--gpu takes h100 (SXM), h100pcie, h200 or device names ("NVIDIA H100 PCIe"); MFU is at each GPU's
own datasheet peak, as the trainer's. With --gpus N the step adds the exposed time of the trainer's
data-parallel all-reduces (their bytes as optim_plan counts them: checked against the trainer's
logged comm_mib). --compare prints measured per-group or per-kernel times beside the model's
(--help-compare: the file's format).

What is derived from the code, what is published and what is assumed is listed, with its source,
by --assumptions (and in the JSON). Nothing here has been compared with a GPU yet: scripts/gpu_check.sh
prints these predictions next to its measurements so that the first GPU run shows where the model is wrong.
"""
import argparse
import json
import math
import os
import re
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- the machines ----------------------------------------------------------------------------------
# Datasheet ceilings (NVIDIA H100 and H200 datasheets; dense, no sparsity). The bf16 figure is
# 4096 FLOP per clock per SM (4 tensor cores x 1024: the H100 whitepaper) at the clock the
# datasheet rates it: 989.4 TFLOP/s = 132 SMs x 4096 x 1.83 GHz (SXM); the PCIe card's 756 TFLOP/s
# = 114 SMs x 4096 x 1.62 GHz. The trainer's backend_peak_flops (cuda/common.cuh) uses the same
# 989 and 756 and tells the two H100s apart by "PCIe" in the device name, as gpu_key() does here.
# Links, per GPU and direction: NVLink 4 on SXM boards, 900 GB/s both ways = 450 GB/s each way;
# PCIe 5.0 x16, 64 GB/s each way (the H100 PCIe's NVLink bridge joins pairs only, so an 8-card
# all-reduce runs over PCIe); InfiniBand NDR, 400 Gb/s = 50 GB/s per GPU (one ConnectX-7 per GPU
# as in DGX H100) between nodes.
TENSOR_FLOP_CLK_SM = 4096   # dense bf16 FLOPs per clock per SM (Hopper)
SMEM_BYTES_CLK_SM = 128     # shared-memory bandwidth per SM: 32 banks x 4 bytes per clock
GPUS = {
    "h100": {"name": "H100 SXM", "bf16_flops": 989e12, "fp32_flops": 67e12, "hbm_bytes_s": 3.35e12, "sms": 132,
             "sustained_ghz": 1.755, "node_link": "NVLink 4", "node_link_bytes_s": 450e9, "ib_bytes_s": 50e9},
    "h100pcie": {"name": "H100 PCIe", "bf16_flops": 756e12, "fp32_flops": 51e12, "hbm_bytes_s": 2.0e12, "sms": 114,
                 "sustained_ghz": 1.56, "node_link": "PCIe 5.0 x16", "node_link_bytes_s": 64e9, "ib_bytes_s": 50e9},
    "h200": {"name": "H200 SXM", "bf16_flops": 989e12, "fp32_flops": 67e12, "hbm_bytes_s": 4.8e12, "sms": 132,
             "sustained_ghz": 1.755, "node_link": "NVLink 4", "node_link_bytes_s": 450e9, "ib_bytes_s": 50e9},
}
for _g in GPUS.values():  # the clock the datasheet's bf16 figure implies
    _g["rated_ghz"] = _g["bf16_flops"] / (_g["sms"] * TENSOR_FLOP_CLK_SM) / 1e9
GPU_SOURCES = [
    "bf16/fp32 peaks and HBM: NVIDIA H100 datasheet (SXM 989/67 TFLOP/s, 3.35 TB/s; PCIe 756/51 TFLOP/s, 2.0 TB/s) "
    "and H200 datasheet (989/67 TFLOP/s, 4.8 TB/s); the trainer's backend_peak_flops uses 989 and 756.",
    "4096 dense bf16 FLOP/clock/SM: H100 whitepaper (4 tensor cores per SM, 1024 FLOP/clock each); with 132 SMs "
    "it gives the SXM's 989 TFLOP/s at 1.83 GHz, and with the PCIe card's 114 SMs its 756 at 1.62 GHz.",
    "shared memory: 32 banks x 4 bytes = 128 bytes/clock/SM (CUDA C Programming Guide, compute capability 9.0).",
    "sustained_ghz: the SM clock assumed under dense tensor-core load at the power limit (SXM 700 W: 1.755 GHz, "
    "0.96 of the rated 1.83; PCIe 350 W: 1.56, 0.96 of 1.62). An assumption: reported sustained clocks range "
    "from 1.6 to 1.98 GHz; gpu_check records the clock, which should replace it.",
    "links: NVLink 4, 900 GB/s per GPU both ways (H100 SXM/H200 datasheets) = 450 GB/s each way; PCIe 5.0 x16, "
    "64 GB/s each way; InfiniBand NDR 400 Gb/s = 50 GB/s per GPU (DGX H100: one ConnectX-7 per GPU).",
]


def gpu_key(text):
    """a --gpu entry: a key of GPUS, or a device name as nvidia-smi / cudaGetDeviceProperties print it
    (the trainer's rule: 'H100' with 'PCIe' is the PCIe card, other H100s and H800s the SXM, 'H200')"""
    t = text.strip()
    if t.lower() in GPUS:
        return t.lower()
    u = t.upper()
    if "H200" in u:
        return "h200"
    if "H100" in u and "PCIE" in u:
        return "h100pcie"
    if "H100" in u or "H800" in u:
        return "h100"
    raise SystemExit("--gpu: unknown '%s' (%s, or a device name with H100, H100 PCIe or H200)" % (t, ", ".join(GPUS)))


X = 2   # bytes of floatX (bf16: parameters, activations, dense gradients)
F = 4   # bytes of fp32 (Grass C, GaLore R and P, norms, rstd, lse, fp32 moments)

# ---- assumptions: the efficiency factors and overheads (all overridable) ------------------------
# None: derived per GPU (resolve_factors); the source of each is in FACTOR_SOURCES (--assumptions).
DEFAULTS = {
    "gemm_eff": None,       # cuBLASLt bf16 GEMMs: fraction of the datasheet roofline (None: clock x gemm_kernel_eff)
    "gemm_kernel_eff": 0.78,  # cuBLASLt's large bf16 GEMMs as a fraction of the tensor peak at the running clock
    "elem_eff": 0.8,        # elementwise / row-wise / reduction kernels, memsets: fraction of HBM bandwidth
    "attn_eff": None,       # the own WMMA attention: fraction of the bf16 peak (None: from its shared-memory traffic)
    "attn_cudnn_eff": 0.35, # cuDNN's fused SDPA (--attention cudnn): fraction of the bf16 peak
    "unaligned_eff": 0.5,   # extra factor on a GEMM whose leading dimension is not a multiple of 16 bytes
    "svd_eff": 0.01,        # cuSOLVER sgesvd (GaLore refresh) as a fraction of the fp32 peak
    "floor_us": 2.0,        # the shortest a launched kernel takes on the GPU (launch gap, tail)
    "launch_us": 5.0,       # host time to issue one kernel or cuBLASLt call
    "sync_us": 15.0,        # one host synchronization (cudaStreamSynchronize after a small copy)
    "comm_eff": 0.8,        # NCCL ring all-reduce: bus bandwidth reached, as a fraction of the link's
    "allreduce_us": 15.0,   # fixed cost of one NCCL all-reduce call (latency of its ring steps)
}
FACTOR_SOURCES = {
    "gemm_eff": "derived: (sustained_ghz / rated_ghz) x gemm_kernel_eff, per GPU (SXM: 0.96 x 0.78 = 0.75).",
    "gemm_kernel_eff": "assumed: no published cuBLAS figure at exactly these shapes was at hand; public reports of "
                       "bf16 GEMMs (cuBLAS through torch.matmul, CUTLASS) at large shapes on H100 SXM are around "
                       "700-800 TFLOP/s, 0.7-0.8 of 989, at the clocks they ran at; we take 0.78 of the peak at the "
                       "running clock. Our shapes are large (M = B T = 8192, N and K 2048-11008). Wave quantization "
                       "and split-K at small shapes (Grass's r x n GEMMs, 60m) are not modeled.",
    "elem_eff": "assumed: memory-bound streaming kernels on H100 reach about 90% of the HBM datasheet bandwidth in "
                "public STREAM-like benchmarks; ours have short rows, scalar loads in places (docs/CUDA.md): 0.8.",
    "attn_eff": "derived per kernel from cuda/attention.cuh: the shared-memory bytes one tile pair moves "
                "(WMMA 16x16x16: two 512-byte operand fragments per mma, the fp32 accumulator tile loaded and "
                "stored, the S/dP reads, P/dS writes, O rescale, tile stores) over 128 bytes/clock/SM, against "
                "its FLOPs over 4096/clock/SM, times the sustained clock ratio; about 0.12 (see --assumptions).",
    "attn_cudnn_eff": "published: FlashAttention-3 (Shah et al. 2024, Fig. 5, H100 SXM5) shows cuDNN's forward at "
                      "head_dim 64, sequence 1k, at 373 TFLOP/s (0.38 of 989); causal masking and the backward "
                      "(lower in the same paper) taken as 0.35 overall. An assumption for our shapes.",
    "unaligned_eff": "assumed: cuBLASLt without its 16-byte-aligned tensor-core kernels; moot for the GPU build's "
                     "padded ffn (5504) and 16-row Grass selections.",
    "svd_eff": "assumed: cuSOLVER sgesvd on mid-size matrices is far below peak (bidiagonalization is "
               "memory-bound); the least certain number here.",
    "floor_us": "assumed: a kernel's launch gap and tail on the device.",
    "launch_us": "assumed: host time per kernel launch or cuBLASLt call (a few microseconds, CUDA's documented range).",
    "sync_us": "assumed: one cudaStreamSynchronize round trip after a small copy.",
    "comm_eff": "assumed: NCCL's ring all-reduce bus bandwidth as a fraction of the link's per-direction bandwidth "
                "(nccl-tests' busbw on NVLink/IB systems is typically 70-90% of the link); not measured here.",
    "allreduce_us": "assumed: the fixed latency of one NCCL all-reduce call.",
}

ASSUMPTIONS = [
    "bf16 build: parameters, activations and dense gradients are bf16 (2 bytes); Adam moments fp32 "
    "(4 bytes; 2 with --state-dtype bf16); Grass C, GaLore R/P, norms, rstd and lse fp32.",
    "bytes = the compulsory HBM traffic of each call: every input tensor read once and every output written "
    "once (an accumulating GEMM, beta = 1, also reads its output); re-reads inside one kernel (RMSNorm's second "
    "pass over its row, the attention kernels' K/V and Q/dO tile re-loads) are assumed to hit L1/L2. Exception: "
    "the classifier reads its logit rows (2 V bytes, 64 KB at V = 32000: more than L1 holds) twice and writes them once, as docs/CUDA.md states.",
    "Grass's gather reads whole 32-byte sectors: a row of dY or X of length ld read for r of its ld columns "
    "costs 32 * (ld/16) * (1 - (1 - r/ld)^16) bytes; its scatter on the column side (W[i, idx_j]) touches "
    "sectors the same way; the row side writes whole rows.",
    "GEMM time = max(FLOPs / the GPU's bf16 peak, bytes / HBM bandwidth) / gemm_eff; a GEMM with a leading dimension "
    "whose byte stride is not a multiple of 16 (ffn 5461 at 1b, or r_eff after merged duplicate draws) is "
    "divided by unaligned_eff as well: cuBLASLt then has no 16-byte-aligned tensor-core kernel (an assumption "
    "to be measured; the GPU build pads 1b's ffn to 5504, so only --ffn-align 1 or unpadded selections meet it).",
    "GaLore's dense update U = P D is an fp32 GEMM (CUBLAS_COMPUTE_32F, no TF32): its ceiling is the fp32 "
    "CUDA-core peak, 67 TFLOP/s. Elementwise kernels use that same fp32 peak as their compute ceiling.",
    "attention FLOPs are counted from the kernels' tile loops (cuda/attention.cuh): forward 64x64 tiles up to "
    "the diagonal (S = Q K^T, O += P V), backward dK/dV (64-key x 32-query tiles: S, dP, dV, dK) and dQ "
    "(64 x 32: S, dP, dQ), i.e. 3.5x the forward, head_dim padded to a multiple of 16; each kernel's time at "
    "its own efficiency, derived from the shared-memory bytes of one tile pair (own_attention_traffic): the "
    "WMMA operands and fp32 accumulators pass through shared memory at 128 bytes/clock/SM while the tensor "
    "cores could do 4096 FLOP/clock/SM, so shared memory, not the tensor cores, bounds them (about 0.12 of "
    "peak). Global loads are not pipelined (no cp.async) but 3 blocks per SM overlap them: not modeled.",
    "--attention cudnn (cuDNN's fused SDPA): the forward's FLOPs are the causal (query, key) pairs' "
    "S = Q K^T and O = P V at the real head_dim, the backward 2.5x that in one kernel (no separate D), "
    "at attn_cudnn_eff of the bf16 peak (FlashAttention-3's published cuDNN figure): not measured here; gpu_check.sh's "
    "attention_check times both implementations.",
    "no validation or sampling steps, no checkpoint writes. One GPU unless --gpus N: then data parallel, each "
    "GPU running the given B and T, and per optimizer step the trainer's all-reduces (optim_plan's "
    "comm_step_bytes: the dense gradients in their dtype, the compressed gradients in bf16 on the wire; at a "
    "refresh the norm pass's fp32 accumulators) as a ring: 2 (N-1)/N x bytes per GPU over the link at comm_eff, "
    "plus allreduce_us per call. Within a node of --gpus-per-node (8) GPUs the link is NVLink (PCIe for the "
    "H100 PCIe), across nodes InfiniBand (the slowest link bounds the ring). With --overlap-comm 1 (the "
    "trainer's default) the layers' all-reduces hide behind the last micro-step's backward; the embedding, "
    "head and final norm (reduced after it), the last layer's, and with --zero 1 the dense gradients are exposed.",
    "host: every kernel or library call costs launch_us of host time and every backend_upload/download a "
    "sync_us synchronization; between two synchronizations the GPU time and the host's launch time overlap, "
    "so a segment takes max(GPU, host).",
    "Grass with --grass-select multinorm or uniform merges duplicate draws: r_eff <= r, data-dependent; the "
    "model takes the expected number of distinct rows of r uniform draws (an upper bound for multinorm), "
    "rounded up to --grass-row-align (the GPU build's 16: padding rows the update skips, so the gathered "
    "GEMMs' leading dimensions are aligned); with --grass-row-align 1 that r_eff's leading dimension is "
    "treated as unaligned. topr, multinorm-nr and uniform-nr give r_eff = r (also rounded up to the "
    "alignment).",
    "--grass-norms auto is modeled as exact (the trainer switches to the sketch only when exact norms do not "
    "fit in memory).",
    "the refresh step's extra work (the norm pass, GaLore's SVDs, the selection) is predicted separately and "
    "amortized over K in the average step time; a plain step is what gpu_check's medians measure.",
    "the SVD: FLOPs 4 m n^2 + 8 n^3 (singular values and right vectors of an m x n matrix, m >= n, Golub "
    "and Van Loan's count) at svd_eff of the fp32 peak: the least certain number here.",
]


# ---- configs (read from llama_config.h, so that they cannot drift) ---------------------------------
def named_configs(path=os.path.join(ROOT, "llama_config.h")):
    text = open(path).read()
    start = text.index("NAMED_CONFIGS[]")
    out = {}
    for m in re.finditer(r'\{"(\w+)",\s*\{([^}]*)\}\}', text[start:]):
        v = [x.strip().rstrip("f") for x in m.group(2).split(",")]
        out[m.group(1)] = {"vocab": int(v[0]), "dim": int(v[1]), "ffn": int(v[2]), "layers": int(v[3]),
                           "heads": int(v[4]), "kv_heads": int(v[5]), "max_seq": int(v[6]), "tie": int(v[7])}
    if not out:
        raise SystemExit("perf_model: no NAMED_CONFIGS found in %s" % path)
    return out


def resolve_config(a):
    cfgs = named_configs()
    if a.config not in cfgs:
        raise SystemExit("unknown model config '%s'; known: %s" % (a.config, " ".join(cfgs)))
    c = dict(cfgs[a.config])
    for k in ("vocab", "dim", "ffn", "layers", "max_seq", "tie"):
        if getattr(a, k) is not None:
            c[k] = getattr(a, k)
    if a.heads is not None:  # as resolve_config in train_llama.cu: --heads alone sets the kv heads too
        c["heads"] = a.heads
        if a.kv_heads is None:
            c["kv_heads"] = a.heads
    if a.kv_heads is not None:
        c["kv_heads"] = a.kv_heads
    if c["dim"] % c["heads"] or (c["dim"] // c["heads"]) % 2 or c["heads"] % c["kv_heads"]:
        raise SystemExit("invalid config: dim %d, heads %d, kv heads %d" % (c["dim"], c["heads"], c["kv_heads"]))
    c["hd"] = c["dim"] // c["heads"]
    # the ffn as the GPU build stores it (llama_ffn_stored: padded to --ffn-align when ffn > dim, with
    # zero rows/columns); "ffn_hf" is the model's own, for the model FLOPs
    align = getattr(a, "ffn_align", 64) or 64
    c["ffn_hf"] = c["ffn"]
    if align > 1 and c["ffn"] > c["dim"]:
        c["ffn"] = (c["ffn"] + align - 1) // align * align
    return c


LIN_NAMES = ["q", "k", "v", "o", "gate", "up", "down"]


def param_table(c, hf=False):
    """llama_params.h's table: (name, rows, cols, kind, lin, layer) in checkpoint order; the shapes as
    stored (the ffn padded), or with hf the Hugging Face shapes."""
    d, f, hd = c["dim"], c["ffn_hf" if hf else "ffn"], c["hd"]
    qd, kvd = c["heads"] * hd, c["kv_heads"] * hd
    t = [("embed", c["vocab"], d, "embed", None, -1)]
    for l in range(c["layers"]):
        t += [("attn_norm", 1, d, "norm", None, l), ("q", qd, d, "linear", "q", l), ("k", kvd, d, "linear", "k", l),
              ("v", kvd, d, "linear", "v", l), ("o", d, qd, "linear", "o", l), ("mlp_norm", 1, d, "norm", None, l),
              ("gate", f, d, "linear", "gate", l), ("up", f, d, "linear", "up", l), ("down", d, f, "linear", "down", l)]
    t.append(("final_norm", 1, d, "norm", None, -1))
    if not c["tie"]:
        t.append(("lm_head", c["vocab"], d, "head", None, -1))
    return t


def matmul_params(c):
    """param_table_matmul_params: linears and the head (the embedding too when tied)."""
    n = sum(r * k for (_, r, k, kind, _, _) in param_table(c, hf=True) if kind in ("linear", "head"))
    if c["tie"]:
        n += c["vocab"] * c["dim"]
    return n


def model_flops_per_token(c, T):
    return 6.0 * matmul_params(c) + 12.0 * c["layers"] * c["dim"] * T


# ---- the optimizer's layout (grass_optim.cuh optim_layout) ----------------------------------------
def parse_rank(text):
    if text == "full":
        return 0, 1.0
    x = float(text)
    if not x > 0:
        raise SystemExit("--rank '%s': give an integer rank, a fraction below 1, or full" % text)
    if x < 1.0:
        return 0, x
    if x != math.floor(x):
        raise SystemExit("--rank %s: give an integer rank or a fraction below 1" % text)
    return int(x), 0.0


def expected_distinct(dim, r):
    return dim * (1.0 - (1.0 - 1.0 / dim) ** r)


def optim_layout(c, o):
    """One entry per projected matrix: side, dim_sel, other, r, r_eff (Grass and GaLore)."""
    mats = []
    if o["type"] == "adamw":
        return mats
    rank_i, rank_f = parse_rank(o["rank"])
    for (name, rows, cols, kind, lin, layer) in param_table(c):
        if kind != "linear" or lin not in o["layers"]:
            continue
        cols_side = rows > cols
        dim_sel, other = (cols, rows) if cols_side else (rows, cols)
        r = rank_i if rank_i > 0 else int(math.floor(rank_f * dim_sel + 0.5))
        if r < 1 or r > dim_sel:
            raise SystemExit("rank %d for %s (%d x %d) must be in [1, %d]" % (r, name, rows, cols, dim_sel))
        r_eff, exact = r, True
        if o["type"] == "grass" and o["select"] in ("multinorm", "uniform"):
            r_eff, exact = expected_distinct(dim_sel, r), False
        align = o.get("row_align", 16) if o["type"] == "grass" else 1
        if align > 1:  # grass_pad_selection: rows the update skips, up to a multiple of align (at most dim_sel)
            r_eff, exact = min(math.ceil(r_eff / align) * align, dim_sel), True
        mats.append({"name": name, "layer": layer, "rows": rows, "cols": cols, "cols_side": cols_side,
                     "dim_sel": dim_sel, "other": other, "r": r, "r_eff": r_eff, "r_eff_exact": exact})
    return mats


def norm_path(o, accum):
    """optim_runtime_norms: NP_DIRECT (one micro-batch, one rank, exact or micro), NP_LAYER_G (exact,
    one micro-batch, several ranks), NP_FULL_G (exact with accumulation), NP_SKETCH; GaLore:
    NP_LAYER_G without accumulation, else NP_FULL_G."""
    if o["type"] == "galore":
        return "layer_g" if accum == 1 else "full_g"
    if o["norms"] == "sketch":
        return "sketch"
    if o["norms"] == "micro":
        return "direct"
    if accum == 1:  # exact norms with several ranks: each layer's whole gradient, summed over the ranks
        return "direct" if o.get("world", 1) == 1 else "layer_g"
    return "full_g"


def trainer_executed_flops_per_token(c, T, o, accum, refresh):
    """train_llama.cu's executed_flops_per_token, term for term (what mfu_exec counts)."""
    f = 12.0 * c["layers"] * c["dim"] * T
    mats = {(m["layer"], m["name"]): m for m in optim_layout(c, o)}
    path = norm_path(o, accum)
    for (name, rows, cols, kind, lin, layer) in param_table(c):
        head_tied = kind == "embed" and c["tie"]
        if kind not in ("linear", "head") and not head_tied:
            continue
        mn = float(rows * cols)
        g = mats.get((layer, name))
        if g is None:
            wgrad = 2.0 * mn
        elif o["type"] == "galore":
            wgrad = 2.0 * g["r"] * (g["dim_sel"] + g["other"])
        else:
            wgrad = 2.0 * g["r_eff"] * g["other"]
        f += 4.0 * mn + wgrad
        if not refresh:
            continue
        f += 4.0 * mn
        if g is not None:
            f += 2.0 * o["sketch_dim"] * (g["dim_sel"] + g["other"]) if path == "sketch" else 2.0 * mn
    return f


# ---- kernel records ------------------------------------------------------------------------------
def aligned_ld(ld, esize):
    return (ld * esize) % 16 == 0


def sectors(ld, r, esize=X):
    """bytes of one row of length ld when r of its columns are touched (32-byte sectors)."""
    per = 32 // esize
    groups = math.ceil(ld / per)
    if r >= ld:
        return groups * 32.0
    return groups * 32.0 * (1.0 - (1.0 - r / ld) ** per)


class Plan:
    """The kernels of one optimizer step (phase 'step') and the extra ones of a refresh step
    (phase 'refresh'). Each record is one call site with its count per step."""

    def __init__(self):
        self.k = []
        self.syncs = {"step": 0.0, "refresh": 0.0}

    def add(self, phase, seg, group, name, kind, flops, nbytes, count, launches=1, shape="", lds=(), note="",
            per_layer=False):
        bad = [ld for (ld, es) in lds if not aligned_ld(ld, es)]
        self.k.append({"phase": phase, "segment": seg, "group": group, "name": name, "kind": kind,
                       "flops": float(flops), "bytes": float(nbytes), "count": float(count),
                       "launches": float(launches), "shape": shape, "per_layer": per_layer,
                       "aligned": not bad, "unaligned_lds": sorted(set(int(x) for x in bad)), "note": note})

    def sync(self, phase, n):
        self.syncs[phase] += n


def gemm(P, phase, seg, group, name, m, n, k, a_es, b_es, c_es, beta, lds, count, kind="gemm", per_layer=False,
         note="", unaligned=False):
    """C (m x n) (+)= A (m x k) B (k x n): 2 m n k FLOPs; A, B read once, C written (and read when beta)."""
    flops = 2.0 * m * n * k
    nbytes = m * k * a_es + k * n * b_es + m * n * c_es * (2 if beta else 1)
    P.add(phase, seg, group, name, kind, flops, nbytes, count, 1, "%dx%dx%d" % (m, n, k), lds, note, per_layer)
    if unaligned:  # a data-dependent leading dimension (r_eff after merged draws): treated as unaligned
        P.k[-1]["aligned"] = False
        P.k[-1]["data_dependent_ld"] = True


def matmul_forward(P, phase, seg, group, name, N, i, o, count, per_layer=True, note="", residual=False):
    # Y (N x o) = X (N x i) W^T: cu_gemm lda = i (W), ldb = i (X), ldc = o (Y); with residual, Y = R + X W^T
    # (matmul_forward_residual: C = R read, beta 1, D = Y; the residual add rides on the GEMM)
    gemm(P, phase, seg, group, name, N, o, i, X, X, X, residual, [(i, X), (i, X), (o, X)], count, per_layer=per_layer,
         note=note)


def matmul_backward_input(P, phase, seg, group, name, N, i, o, acc, count, per_layer=True):
    # dX (N x i) (+)= dY (N x o) W: lda = i (W), ldb = o (dY), ldc = i (dX)
    gemm(P, phase, seg, group, name, N, i, o, X, X, X, acc, [(i, X), (o, X), (i, X)], count, per_layer=per_layer)


def matmul_backward_weight(P, phase, seg, group, name, N, i, o, count, per_layer=True, ld_dout=None):
    # dW (o x i) += dY^T X (always accumulating): lda = i (X), ldb = ld_dout (dY: o, or the width of a
    # fused GEMM's gradient when dY is a column block of it), ldc = i (dW)
    gemm(P, phase, seg, group, name, o, i, N, X, X, X, True, [(i, X), (ld_dout or o, X), (i, X)], count,
         per_layer=per_layer)


def elem(P, phase, seg, group, name, flops, nbytes, count, launches=1, shape="", per_layer=False, note=""):
    P.add(phase, seg, group, name, "elem", flops, nbytes, count, launches, shape, (), note, per_layer)


def cudnn_attention_flops(B, T, nh, hd):
    """the forward's products (S = Q K^T, O = P V) over the causal (query, key) pairs, unpadded"""
    return B * nh * (T * (T + 1) / 2.0) * 2 * (2.0 * hd)


def attention_tiles(B, T, nh, hd):
    """FLOPs of gk_attention_forward, _backward_dkdv and _backward_dq as their loops run them."""
    hdp = (hd + 15) // 16 * 16
    ntq = (T + 63) // 64
    fwd_pairs = sum((min(q * 64 + 64, T) - 1) // 64 + 1 for q in range(ntq))
    fwd = B * nh * fwd_pairs * 2 * (2.0 * 64 * 64 * hdp)               # S = Q K^T, O += P V
    ntk, ntq32 = (T + 63) // 64, (T + 31) // 32
    kv_pairs = sum(ntq32 - (kt * 64) // 32 for kt in range(ntk))
    dkdv = B * nh * kv_pairs * 4 * (2.0 * 32 * 64 * hdp)               # S, dP, dV, dK
    q_pairs = sum((min(q * 64 + 64, T) - 1) // 32 + 1 for q in range(ntq))
    dq = B * nh * q_pairs * 3 * (2.0 * 64 * 32 * hdp)                  # S, dP, dQ
    return fwd, dkdv, dq


# The own attention kernels' tiles (cuda/attention.cuh, bf16 build): CU_ATT_FWD_BQ x _BK, _KV_BK x
# _KV_BQ, _Q_BQ x _Q_BK
ATT_TILES = {"fwd": (64, 64), "dkdv": (64, 32), "dq": (64, 32)}


def wmma_smem_bytes(M, N, K, accumulate):
    """shared-memory bytes of cu_att_mma: C (M x N, fp32) (+)= A (M x K) B (K x N), bf16 operands in
    shared memory: each 16x16 output tile loads K/16 pairs of 16x16 bf16 fragments (512 bytes each),
    and loads (when accumulating) and stores its fp32 16x16 accumulator (1024 bytes)"""
    tiles = (M // 16) * (N // 16)
    return tiles * ((K // 16) * 2 * 512 + 1024 * (2 if accumulate else 1))


def own_attention_traffic(hd):
    """FLOPs and shared-memory bytes of one tile pair of each own attention kernel (the body of its
    inner loop), and the efficiency that bound gives: (FLOPs / 4096) / (bytes / 128) clocks."""
    hdp = (hd + 15) // 16 * 16
    out = {}
    BQ, BK = ATT_TILES["fwd"]
    smem = (2 * BK * hdp * X                              # K and V tiles stored
            + wmma_smem_bytes(BQ, BK, hdp, False)         # S = Q K^T
            + BQ * BK * F * 2 + BQ * BK * X               # softmax: S read twice (max, exp), P written
            + BQ * hdp * F * 2                            # O rescaled (read, written)
            + wmma_smem_bytes(BQ, hdp, BK, True))         # O += P V
    out["fwd"] = {"flops": 2 * (2.0 * BQ * BK * hdp), "smem_bytes": smem}
    BK, BQ = ATT_TILES["dkdv"]
    smem = (2 * BQ * hdp * X                              # Q and dO tiles stored
            + 2 * wmma_smem_bytes(BQ, BK, hdp, False)     # S = Q K^T, dP = dO V^T
            + BQ * BK * F * 2 + BQ * BK * X * 2           # S, dP read; P, dS written
            + 2 * wmma_smem_bytes(BK, hdp, BQ, True))     # dV += P^T dO, dK += dS^T Q
    out["dkdv"] = {"flops": 4 * (2.0 * BQ * BK * hdp), "smem_bytes": smem}
    BQ, BK = ATT_TILES["dq"]
    smem = (2 * BK * hdp * X                              # K and V tiles stored
            + 2 * wmma_smem_bytes(BQ, BK, hdp, False)     # S, dP
            + BQ * BK * F * 2 + BQ * BK * X               # S, dP read; dS written
            + wmma_smem_bytes(BQ, hdp, BK, True))         # dQ += dS K
    out["dq"] = {"flops": 3 * (2.0 * BQ * BK * hdp), "smem_bytes": smem}
    for v in out.values():
        v["eff_at_clock"] = min(1.0, (v["flops"] / TENSOR_FLOP_CLK_SM) / (v["smem_bytes"] / SMEM_BYTES_CLK_SM))
    return out


def resolve_factors(e, gpu, hd):
    """the factors for one GPU: the given ones, and the derived ones where None"""
    r = dict(e)
    clock = gpu["sustained_ghz"] / gpu["rated_ghz"]
    r["clock_ratio"] = clock
    if r["gemm_eff"] is None:
        r["gemm_eff"] = clock * e["gemm_kernel_eff"]
    traffic = own_attention_traffic(hd)
    r["attn_eff_kernel"] = {k: (e["attn_eff"] if e["attn_eff"] is not None else v["eff_at_clock"] * clock)
                            for k, v in traffic.items()}
    return r


# ---- the step, kernel by kernel -------------------------------------------------------------------
def layer_forward_kernels(P, phase, seg, c, B, T, count, write_out, label):
    """layer_forward (llama_model.h); count = calls per step; write_out adds down_proj and the add."""
    N, d, f, hd = B * T, c["dim"], c["ffn"], c["hd"]
    nh, nkv = c["heads"], c["kv_heads"]
    qd, kvd = nh * hd, nkv * hd
    tag = " (" + label + ")" if label else ""
    elem(P, phase, seg, "rmsnorm", "rmsnorm_forward ln1" + tag, 4.0 * N * d, N * d * X * 2 + d * X + N * F, count,
         shape="N=%d d=%d" % (N, d), per_layer=True)
    # one GEMM with [Wq; Wk; Wv] (adjacent in the parameter buffer) into the fused qkv buffer
    matmul_forward(P, phase, seg, "qkv gemm", "qkv_proj (fused q, k, v)" + tag, N, d, qd + 2 * kvd, count)
    rope_tab = T * (hd // 2) * F * 2
    elem(P, phase, seg, "rope", "rope_qk forward" + tag, 6.0 * N * (qd + kvd) / 2, N * (qd + kvd) * X * 2 + rope_tab, count,
         per_layer=True, note="q and k in one launch, 16-byte packs")
    fwd, _, _ = attention_tiles(B, T, nh, hd)
    kind = "attn"
    if c.get("attention") == "cudnn":  # flash attention's own count: causal pairs, no head_dim padding
        fwd, kind = cudnn_attention_flops(B, T, nh, hd), "attn_cudnn"
    P.add(phase, seg, "attention", "attention_forward" + tag, kind, fwd,
          (N * qd * 2 + N * kvd * 2) * X + B * nh * T * F, count, 1, "B=%d T=%d nh=%d nkv=%d hd=%d" % (B, T, nh, nkv, hd),
          (), "", True)
    P.k[-1]["attn_kernel"] = "fwd"
    matmul_forward(P, phase, seg, "o gemm", "o_proj + residual" + tag, N, qd, d, count, residual=True)
    elem(P, phase, seg, "rmsnorm", "rmsnorm_forward ln2" + tag, 4.0 * N * d, N * d * X * 2 + d * X + N * F, count,
         per_layer=True)
    matmul_forward(P, phase, seg, "mlp gemm", "gate_up_proj (fused gate, up)" + tag, N, d, 2 * f, count)
    elem(P, phase, seg, "swiglu", "swiglu_forward" + tag, 6.0 * N * f, N * f * X * 3, count, per_layer=True,
         note="reads gate and up from the fused N x 2f buffer")
    if write_out:
        matmul_forward(P, phase, seg, "mlp gemm", "down_proj + residual" + tag, N, f, d, count, residual=True)


def rmsnorm_backward(P, phase, seg, name, N, d, with_dw, count, per_layer):
    # gk_rmsnorm_backward: one pass over dout and x per chunk of 16 rows (CU_RMS_ROWS), dx and the
    # chunk's dw partial sums; then gk_rmsnorm_backward_dw_final sums the partials
    nch = (N + 15) // 16
    elem(P, phase, seg, "rmsnorm", name + (" dx + dw partial (one pass)" if with_dw else " dx"),
         (11.0 if with_dw else 8.0) * N * d, N * d * X * 4 + d * X + N * F + (nch * d * F if with_dw else 0), count,
         shape="N=%d d=%d" % (N, d), per_layer=per_layer, note="dinp read and written (+=)")
    if with_dw:
        elem(P, phase, seg, "rmsnorm", name + " dw final", 1.0 * nch * d, nch * d * F + d * X * 2, count,
             per_layer=per_layer, note="sums the chunks' partials")


def weight_grads(P, phase, seg, o, gs, names, N, i, outs, count, mode, norm_path_, sketch_k):
    """grad_linears (grass_optim.cuh) for linear layers computed as one fused GEMM (Q/K/V, gate/up):
    dY is N x sum(outs). All dense: one GEMM; otherwise grad_linear on each column block."""
    ld = sum(outs)
    if all(g is None for g in gs):
        if mode == "grads":
            matmul_backward_weight(P, phase, seg, "wgrad dense", "/".join(names) + " dW = dY^T X (fused)", N, i, ld, count)
        return
    for g, nm, out in zip(gs, names, outs):
        weight_grad(P, phase, seg, o, g, nm, N, i, out, count, mode, norm_path_, sketch_k, ld_dout=ld)


def weight_grad(P, phase, seg, o, g, name, N, i, out, count, mode, norm_path_, sketch_k, ld_dout=None):
    """grad_linear for one linear layer. g: its projected-matrix entry or None (dense). ld_dout: dY's
    row stride when it is a column block of a fused GEMM's gradient (None: out)."""
    ldy = ld_dout or out
    if g is None:
        if mode == "norms":
            return  # the norm pass computes nothing for dense tensors
        matmul_backward_weight(P, phase, seg, "wgrad dense", name + " dW = dY^T X", N, i, out, count, ld_dout=ldy)
        return
    r, cs = g["r"], g["cols_side"]
    grp = "wgrad grass" if o["type"] == "grass" else "wgrad galore"
    if mode == "norms":
        grp = "norm pass"
        if norm_path_ == "direct":  # grass_grad_norms: blockwise GEMMs into fp32 G, then row sums
            if not cs:
                rb = (16 << 20) // i
                rb = rb & ~7 if rb >= 8 else max(rb, 1)
                rb = min(rb, out)
                nb = math.ceil(out / rb)
                gemm(P, phase, seg, grp, name + " norms: G block = dY_blk^T X (%d blocks)" % nb, i, out, N, X, X, F,
                     False, [(i, X), (ldy, X), (i, F)], count)
                P.k[-1]["bytes"] += (nb - 1) * N * i * X  # X is read once per block
            else:
                cb = (16 << 20) // out
                cb = cb & ~7 if cb >= 8 else max(cb, 1)
                cb = min(cb, i)
                nb = math.ceil(i / cb)
                gemm(P, phase, seg, grp, name + " norms: G block = dY^T X_blk (%d blocks)" % nb, out, i, N, X, X, F,
                     False, [(ldy, X), (i, X), (out, F)], count)
                P.k[-1]["bytes"] += (nb - 1) * N * out * X
            P.k[-1]["launches"] = nb  # one record for the nb block GEMMs (their sum)
            elem(P, phase, seg, grp, name + " norms: gk_sumsq_rows", 2.0 * out * i, out * i * F, count, launches=nb)
            return
        if norm_path_ in ("layer_g", "full_g"):  # identity gather, then the whole fp32 gradient accumulated
            src = out if not cs else i
            elem(P, phase, seg, grp, name + " gather (identity)", N * src, N * src * X * 2, count)
            # rows side: C^T (in x out) = X^T g; cols side: C^T (in x out) = g^T dY: the same leading dimensions
            gemm(P, phase, seg, grp, name + " G += dY^T X (fp32)", out, i, N, X, X, F, True,
                 [(i, X), (ldy, X), (i, F)], count)
            return
        # sketch: T = right S (N x k), then Y += left^T T through the identity gather
        other, dsel = g["other"], g["dim_sel"]
        gemm(P, phase, seg, grp, name + " sketch: right S", N, sketch_k, other, X, X, X, False,
             [(other, X), (ldy if cs else other, X), (sketch_k, X)], count)
        elem(P, phase, seg, grp, name + " sketch: gather (identity)", N * dsel, N * dsel * X * 2, count)
        gemm(P, phase, seg, grp, name + " sketch: Y += left^T (right S)", dsel, sketch_k, N, X, X, F, True,
             [(sketch_k, X), (dsel if cs else ldy, X), (sketch_k, F)], count)
        return
    if o["type"] == "galore":  # galore_project_grad: T = dY P^T (or X P^T), then R += T^T X (or dY^T T)
        if not cs:
            gemm(P, phase, seg, grp, name + " T = dY P^T", N, r, out, X, X, X, False, [(out, X), (ldy, X), (r, X)],
                 count, per_layer=True)
            gemm(P, phase, seg, grp, name + " R += T^T X (fp32)", r, i, N, X, X, F, True, [(i, X), (r, X), (i, F)],
                 count, per_layer=True)
        else:
            gemm(P, phase, seg, grp, name + " T = X P^T", N, r, i, X, X, X, False, [(i, X), (i, X), (r, X)], count,
                 per_layer=True)
            gemm(P, phase, seg, grp, name + " R += dY^T T (fp32)", out, r, N, X, X, F, True, [(r, X), (ldy, X), (r, F)],
                 count, per_layer=True)
        return
    re_ = g["r_eff"]
    data_dep = not g["r_eff_exact"]
    src_ld = out if not cs else i  # rows side gathers r of dY's out columns (its row segment), cols side of X's
    elem(P, phase, seg, grp, name + " gather (r_eff cols of %s)" % ("dY" if not cs else "X"), N * re_,
         N * sectors(src_ld, re_) + N * re_ * X + re_ * 8, count, per_layer=True, note="scalar kernel")
    if not cs:  # C (r x in) += g^T X
        gemm(P, phase, seg, grp, name + " C += g^T X (fp32)", re_, i, N, X, X, F, True,
             [(i, X), (r, X), (i, F)], count, per_layer=True, unaligned=data_dep)
    else:       # C (out x r) += dY^T g
        gemm(P, phase, seg, grp, name + " C += dY^T g (fp32)", out, re_, N, X, X, F, True,
             [(r, X), (ldy, X), (r, F)], count, per_layer=True, unaligned=data_dep)


def update_kernels(P, phase, seg, o, g, name, count, pooled, wd, state_es, master):
    """optim_finish_layer / optim_step for one projected matrix: its norm, its update, its C reset."""
    m_, n_ = g["rows"], g["cols"]
    other, cs = g["other"], g["cols_side"]
    if o["type"] == "grass":
        sub = g["r_eff"] * other
        elem(P, phase, seg, "grad norm", name + " sumsq_unscaled (partial with the division, final)", 3.0 * sub,
             sub * F + g["r_eff"] * F, count, launches=2, per_layer=True)
        if wd > 0:
            elem(P, phase, seg, "optimizer grass", name + " gk_decay (whole W)", 2.0 * m_ * n_,
                 m_ * n_ * (X * 2 + (F * 2 if master else 0)), count, per_layer=True)
        if not cs:
            wbytes = g["r_eff"] * other * (X * 2 + (F * 2 if master else 0))
        else:
            wbytes = other * sectors(g["dim_sel"], g["r_eff"]) * 2 + (g["r_eff"] * other * F * 2 if master else 0)
        elem(P, phase, seg, "optimizer grass", name + " gk_grass_adam + scatter", 20.0 * sub,
             sub * (F + state_es * 4) + wbytes + g["r_eff"] * 8, count, per_layer=True)
        if pooled:
            elem(P, phase, seg, "memset", name + " zero C (pool)", 0, g["r"] * other * F, count, per_layer=True)
        return
    r = g["r"]
    sub = r * other
    elem(P, phase, seg, "grad norm", name + " sumsq_float (partial, final)", 2.0 * sub, sub * F, count, launches=2,
         per_layer=True)
    elem(P, phase, seg, "optimizer galore", name + " gk_galore_adam", 15.0 * sub, sub * (F * 2 + state_es * 4), count,
         per_layer=True)
    gemm(P, phase, seg, "optimizer galore", name + " U = P D (fp32 GEMM)", m_, n_, r, F, F, F, False,
         [(n_, F), (m_ if not cs else r, F), (n_, F)], count, kind="gemm32", per_layer=True)
    elem(P, phase, seg, "optimizer galore", name + " gk_galore_apply (W -= lr (alpha U + wd W))", 4.0 * m_ * n_,
         m_ * n_ * (F + X * (1 if master else 2) + (F * 2 if master else 0)), count, per_layer=True)
    if pooled:
        elem(P, phase, seg, "memset", name + " zero R (pool)", 0, sub * F, count, per_layer=True)


def build_plan(c, B, T, accum, o):
    """All kernels of one optimizer step (and of a refresh step's extra work), CUDA build."""
    P = Plan()
    N, d, f, hd, V, L = B * T, c["dim"], c["ffn"], c["hd"], c["vocab"], c["layers"]
    nh, nkv = c["heads"], c["kv_heads"]
    qd, kvd = nh * hd, nkv * hd
    mats = optim_layout(c, o)
    gm = {(m["layer"], m["name"]): m for m in mats}
    path = norm_path(o, accum)
    fused = o["type"] != "adamw" and o["fused"]
    pooled = fused and accum == 1  # rt.share_compressed: one C pool, zeroed after each matrix's update
    state_es = 2 if o["state_dtype"] == "bf16" else 4
    master = o["master_weights"]
    wd = o["weight_decay"]
    recompute = o["recompute"]
    table = param_table(c)

    def forward(phase, count):
        # llama_forward_train: tokens and targets in one asynchronous copy from pinned staging, the
        # loss summed on the device (loss_accumulate, below): no host sync
        elem(P, phase, "fwd", "embedding", "embedding_forward", 0, N * d * X * 2 + N * 4, count)
        layer_forward_kernels(P, phase, "fwd", c, B, T, count * L, True, "")
        elem(P, phase, "fwd", "rmsnorm", "rmsnorm_forward final", 4.0 * N * d, N * d * X * 2 + d * X + N * F, count)
        matmul_forward(P, phase, "fwd", "classifier", "lm_head logits = X W^T", N, d, V, count, per_layer=False)
        elem(P, phase, "fwd", "classifier", "classifier_forward_backward (fused)", 8.0 * N * V,
             N * V * X * 3 + N * 8, count, note="two reads and one write of the logits")
        if phase == "step":  # the norm pass discards its losses
            elem(P, phase, "fwd", "classifier", "loss_accumulate (one block)", 1.0 * N, N * F, count)

    def backward(phase, count, mode, fused_count):
        """mode 'grads' (every step) or 'norms' (the refresh's norm pass). fused_count: calls per step
        of the fused updates (the last micro-step)."""
        matmul_backward_input(P, phase, "bwd", "classifier", "lm_head dX = dlogits W", N, d, V, False, count,
                              per_layer=False)
        if mode == "grads":
            matmul_backward_weight(P, phase, "bwd", "wgrad dense", "lm_head dW = dlogits^T X", N, d, V, count,
                                   per_layer=False)
        elem(P, phase, "bwd", "memset", "zero dresid", 0, N * d * X, count)
        rmsnorm_backward(P, phase, "bwd", "rmsnorm_backward final", N, d, mode == "grads", count, False)
        cl = count * L
        if recompute:
            layer_forward_kernels(P, phase, "bwd", c, B, T, cl, False, "recompute")
        matmul_backward_input(P, phase, "bwd", "mlp gemm", "down_proj dX", N, f, d, False, cl)
        weight_grad(P, phase, "bwd", o, gm.get((0, "down")), "down_proj", N, f, d, cl, mode, path, o["sketch_dim"])
        elem(P, phase, "bwd", "swiglu", "swiglu_backward", 12.0 * N * f, N * f * X * 5, cl, per_layer=True)
        matmul_backward_input(P, phase, "bwd", "mlp gemm", "gate_up_proj dX = dgu [Wgate; Wup] (fused)", N, d, 2 * f, False, cl)
        weight_grads(P, phase, "bwd", o, [gm.get((0, "gate")), gm.get((0, "up"))], ["gate_proj", "up_proj"], N, d, [f, f], cl,
                     mode, path, o["sketch_dim"])
        rmsnorm_backward(P, phase, "bwd", "rmsnorm_backward mlp_norm", N, d, mode == "grads", cl, True)
        matmul_backward_input(P, phase, "bwd", "o gemm", "o_proj dX", N, qd, d, False, cl)
        weight_grad(P, phase, "bwd", o, gm.get((0, "o")), "o_proj", N, qd, d, cl, mode, path, o["sketch_dim"])
        _, dkdv, dq = attention_tiles(B, T, nh, hd)
        if c.get("attention") == "cudnn":  # one cuDNN backward: 2.5x the forward's products (S, dP, dV, dK, dQ)
            P.add(phase, "bwd", "attention", "attention_backward (cuDNN SDPA)", "attn_cudnn",
                  2.5 * cudnn_attention_flops(B, T, nh, hd),
                  (N * qd * 3 + N * kvd * 4) * X + B * nh * T * F, cl, 1,
                  "B=%d T=%d nh=%d nkv=%d hd=%d" % (B, T, nh, nkv, hd), (), "", True)
        else:
            elem(P, phase, "bwd", "attention", "attention_backward D = rowsum(dO * O)", 2.0 * N * qd,
                 N * qd * X * 2 + B * nh * T * F, cl, per_layer=True)
            P.add(phase, "bwd", "attention", "attention_backward dK, dV", "attn", dkdv,
                  (N * qd * 2 + N * kvd * 2) * X + B * nh * T * F * 2 + N * kvd * 2 * X, cl, 1,
                  "B=%d T=%d nh=%d nkv=%d hd=%d" % (B, T, nh, nkv, hd), (), "", True)
            P.k[-1]["attn_kernel"] = "dkdv"
            P.add(phase, "bwd", "attention", "attention_backward dQ", "attn", dq,
                  (N * qd * 2 + N * kvd * 2) * X + B * nh * T * F * 2 + N * qd * X, cl, 1, "", (), "", True)
            P.k[-1]["attn_kernel"] = "dq"
        rope_tab = T * (hd // 2) * F * 2
        elem(P, phase, "bwd", "rope", "rope_qk backward (dq, dk)", 3.0 * N * (qd + kvd), N * (qd + kvd) * X * 2 + rope_tab, cl,
             per_layer=True, note="q and k in one launch, 16-byte packs")
        matmul_backward_input(P, phase, "bwd", "qkv gemm", "qkv_proj dX = dqkv [Wq; Wk; Wv] (fused)", N, d, qd + 2 * kvd, False, cl)
        weight_grads(P, phase, "bwd", o, [gm.get((0, nm)) for nm in ("q", "k", "v")], ["q_proj", "k_proj", "v_proj"], N, d,
                     [qd, kvd, kvd], cl, mode, path, o["sketch_dim"])
        rmsnorm_backward(P, phase, "bwd", "rmsnorm_backward attn_norm", N, d, mode == "grads", cl, True)
        if mode == "norms" and path == "layer_g":  # optim_norm_pass_layer at grad_layer_done
            for nm in LIN_NAMES:
                g = gm.get((0, nm))
                if g is not None:
                    finish_norms(phase, g, count * L)
        if mode == "grads" and fused:
            for nm in LIN_NAMES:
                g = gm.get((0, nm))
                if g is not None:
                    update_kernels(P, phase, "bwd", o, g, nm + "_proj", fused_count * L, pooled, wd, state_es, master)
        if mode == "grads":  # the embedding's gradient (dense, AdamW)
            elem(P, phase, "bwd", "embedding", "embedding_backward: iota + CUB radix sort (token, position)", 0,
                 N * 4 + 68.0 * N, count, launches=6)
            elem(P, phase, "bwd", "embedding", "embedding_backward: sum runs into dwte", N * d,
                 N * d * X + min(N, V) * d * X * 2 + N * 8, count)

    def finish_norms(phase, g, count):
        """the scores (Grass) or the projector (GaLore) of one matrix from its whole fp32 gradient."""
        m_, n_ = g["rows"], g["cols"]
        name = g["name"] + "_proj"
        if o["type"] == "galore":
            s, other = g["dim_sel"], g["other"]
            elem(P, phase, "refresh", "galore svd", name + " copy/transpose G", 0, m_ * n_ * F * 2, count)
            P.add(phase, "refresh", "galore svd", name + " cusolverDnSgesvd %dx%d" % (other, s), "svd",
                  4.0 * other * s * s + 8.0 * s ** 3, (other * s + s * s) * F * 4, count, 20, "", (), "", True)
            elem(P, phase, "refresh", "galore svd", name + " signed rows", 2.0 * g["r"] * s,
                 g["r"] * s * (F * 2 + X), count)
            P.sync(phase, count)  # gesvd's info word: cudaStreamSynchronize
            if path == "layer_g":
                elem(P, phase, "refresh", "memset", name + " zero G", 0, m_ * n_ * F, count)
        else:
            elem(P, phase, "refresh", "norm pass", name + " rows_sumsq of G", 2.0 * m_ * n_, m_ * n_ * F, count)
            if path == "layer_g":
                elem(P, phase, "refresh", "memset", name + " zero G", 0, m_ * n_ * F, count)

    # ---- every step ------------------------------------------------------------------------------
    # optim_begin_step: zeroed accumulators
    grad_total = sum(r * k for (nm, r, k, kind, lin, layer) in table if gm.get((layer, nm)) is None)
    csum = sum(m["r"] * m["other"] for m in mats)
    elem(P, "step", "opt", "memset", "optim_zero_grads: dense gradients", 0, grad_total * X, 1)
    if mats:
        if pooled:
            largest = max(sum(m["r"] * m["other"] for m in mats if m["layer"] == l) for l in range(L))
            elem(P, "step", "opt", "memset", "optim_zero_grads: C pool", 0, largest * F, 1)
        else:
            elem(P, "step", "opt", "memset", "optim_zero_grads: every C", 0, csum * F, 1, launches=len(mats))
    elem(P, "step", "opt", "memset", "optim_zero_grads: layer norm scalars", 0, 4 * max(len(mats), 1), 1)
    forward("step", accum)
    backward("step", accum, "grads", 1)
    # optim_step
    elem(P, "step", "opt", "grad norm", "sumsq_floatX dense gradients (partial, final)", 2.0 * grad_total,
         grad_total * X, 1, launches=2)
    if not fused:  # optim_step: every projected matrix's norm and update after the backward passes
        for nm in LIN_NAMES:
            g = gm.get((0, nm))
            if g is not None:
                update_kernels(P, "step", "opt", o, g, nm + "_proj", L, False, wd, state_es, master)
    # the step's one host sync: the report (loss sum, sums of squares) is read after every update
    # is queued (optim_step); --grad-clip without the fused update adds one clip_factor launch
    P.sync("step", 1)
    per_elem = X * 3 + state_es * 4 + (F * 2 if master else 0) - (X if master else 0)
    dense = [(nm, r * k, layer) for (nm, r, k, kind, lin, layer) in table if gm.get((layer, nm)) is None]
    groups_ = {}
    for (nm, n, layer) in dense:  # one adamw_update launch per dense tensor
        key = nm if layer < 0 else nm + " (per layer)"
        e = groups_.setdefault(key, [n, 0])
        e[1] += 1
    for key, (n, cnt) in groups_.items():
        elem(P, "step", "opt", "optimizer adamw", "adamw_update " + key, 18.0 * n, n * per_elem, cnt,
             shape="n=%d" % n, per_layer=key.endswith("(per layer)"))

    # ---- the refresh step's extra work -----------------------------------------------------------
    if mats:
        elem(P, "refresh", "refresh", "memset", "optim_begin_norm_pass: zero scores / accumulators", 0,
             sum(m["dim_sel"] for m in mats) * F +
             (sum(m["rows"] * m["cols"] for m in mats) * F if path == "full_g" else 0) +
             (sum(m["dim_sel"] for m in mats) * o["sketch_dim"] * F if path == "sketch" else 0) +
             (max(sum(m["rows"] * m["cols"] for m in mats if m["layer"] == l) for l in range(L)) * F
              if path == "layer_g" else 0), 1, launches=len(mats))
        if path == "sketch":
            dims = sorted(set(m["other"] for m in mats))
            P.sync("refresh", len(dims))
            elem(P, "refresh", "refresh", "norm pass", "sketch matrices S (host draw, upload)", 0,
                 sum(dims) * o["sketch_dim"] * X, 1, launches=len(dims))
        forward("refresh", accum)
        backward("refresh", accum, "norms", 0)
        reps = [gm[(0, nm)] for nm in LIN_NAMES if (0, nm) in gm]  # every layer is the same: layer 0's, L times
        if path == "full_g":
            for g in reps:
                finish_norms("refresh", g, L)
        if path == "sketch":
            for g in reps:
                elem(P, "refresh", "refresh", "norm pass", g["name"] + "_proj rows_sumsq of Y, scale",
                     3.0 * g["dim_sel"] * o["sketch_dim"], g["dim_sel"] * o["sketch_dim"] * F + g["dim_sel"] * F * 2,
                     L, launches=2, per_layer=True)
        if o["type"] == "grass":
            for g in reps:
                ds, r = g["dim_sel"], g["r"]
                if o["select_on_device"]:
                    P.add("refresh", "refresh", "selection", g["name"] + "_proj grass_select_device", "seq",
                          4 * ds + 2 * r, ds * 48, L, 7, "", (), "single-thread loops", True)
                    P.sync("refresh", 4 * L)  # r_eff, idx, scale, upscale downloads
                else:  # topr and the -nr variants sort dim_sel keys; the with-replacement draws sort r
                    work = ds * math.log2(ds) if o["select"] in ("topr", "multinorm-nr", "uniform-nr") \
                        else 3 * ds + r * math.log2(max(r, 2))
                    P.add("refresh", "refresh", "selection", g["name"] + "_proj host selection", "host",
                          work, ds * F + r * 12, L, 0, "", (), "", True)
                    P.sync("refresh", 4 * L)  # download the norms, upload idx, scale, upscale
                elem(P, "refresh", "refresh", "memset", g["name"] + "_proj zero m, v", 0, r * g["other"] * state_es * 2,
                     L, launches=2, per_layer=True)
    return P


# ---- prediction ----------------------------------------------------------------------------------
def kernel_time(k, gpu, e):
    """seconds for one call of k on gpu, the roofline floors and the bound."""
    bw = gpu["hbm_bytes_s"]
    if k["kind"] in ("gemm", "attn", "attn_cudnn"):
        peak = gpu["bf16_flops"]
    else:
        peak = gpu["fp32_flops"]
    t_flops = k["flops"] / peak
    t_bytes = k["bytes"] / bw
    if k["kind"] == "gemm" or k["kind"] == "gemm32":
        eff = e["gemm_eff"] * (1.0 if k["aligned"] else e["unaligned_eff"])
    elif k["kind"] == "attn":
        eff = e["attn_eff_kernel"][k.get("attn_kernel", "fwd")]
    elif k["kind"] == "attn_cudnn":
        eff = e["attn_cudnn_eff"]
    elif k["kind"] == "svd":
        eff = e["svd_eff"]
    elif k["kind"] == "host":  # host work: about 5 ns per unit of work (a compare of the sort)
        return max(5e-9 * k["flops"], t_bytes), t_flops, t_bytes, "host"
    elif k["kind"] == "seq":   # one GPU thread looping: about 20 ns per iteration
        return max(20e-9 * k["flops"], t_bytes / e["elem_eff"], e["floor_us"] * 1e-6), t_flops, t_bytes, "latency"
    else:
        eff = e["elem_eff"]
    t = max(t_flops, t_bytes) / eff
    floor = e["floor_us"] * 1e-6 * k["launches"]
    bound = "compute" if t_flops >= t_bytes else "memory"
    if floor > t:
        t, bound = floor, "launch"
    return t, t_flops, t_bytes, bound


# ---- data-parallel communication (grass_optim.cuh: optim_plan's comm bytes, optim_allreduce_*) ----
def comm_plan(c, o, world, accum, grad_bytes=X, wire_bytes=X):
    """Bytes the trainer all-reduces per optimizer step with `world` ranks, split by when they go:
    dense gradients of the layers (during the backward with --overlap-comm), the dense tail
    (embedding, final norm, head: after it), the compressed gradients (Grass C, GaLore R: r_eff x
    other each, floatX on the wire), and at a refresh the norm pass's fp32 accumulators.
    grad_bytes: the dense gradients' dtype (--grad-dtype: bf16 2, fp32 4); wire_bytes: floatX (2 on
    the GPU build, 4 on the CPU build). With --zero 1 the dense part is a reduce-scatter plus an
    all-gather of the floatX weights, counted as n (grad_bytes + floatX) / 2 (optim_dense_comm_bytes)."""
    mats = optim_layout(c, o)
    gm = {(m["layer"], m["name"]): m for m in mats}
    path = norm_path(dict(o, world=world), accum)
    dense_elem = (grad_bytes + wire_bytes) / 2.0 if o.get("zero") and world > 1 else float(grad_bytes)
    layers = tail = 0.0
    for (nm, r, k, kind, lin, layer) in param_table(c):
        if gm.get((layer, nm)) is not None:
            continue
        if layer >= 0:
            layers += r * k * dense_elem
        else:
            tail += r * k * dense_elem
    compressed = sum(m["r_eff"] * m["other"] for m in mats) * wire_bytes
    refresh = 0.0
    for m in mats:
        if path == "sketch":
            refresh += m["dim_sel"] * o["sketch_dim"] * F
        elif path == "direct":
            refresh += m["dim_sel"] * F
        else:
            refresh += m["rows"] * m["cols"] * F
    if o["type"] == "adamw":
        refresh = 0.0
    return {"dense_layers_bytes": layers, "dense_tail_bytes": tail, "compressed_bytes": compressed,
            "step_bytes": layers + tail + compressed, "refresh_bytes": refresh, "n_matrices": len(mats),
            "norm_path": path if mats else None}


def ring_allreduce_s(nbytes, world, link_bytes_s, comm_eff):
    """a ring all-reduce of nbytes over world ranks: each rank sends (and receives) 2 (N-1)/N nbytes"""
    if world <= 1 or nbytes <= 0:
        return 0.0
    return 2.0 * (world - 1) / world * nbytes / (link_bytes_s * comm_eff)


def comm_link(gpu, world, per_node, override_gb_s=None):
    """the link that bounds the ring: within one node the node's (NVLink, or PCIe for the PCIe card),
    across nodes InfiniBand"""
    if override_gb_s:
        return "given (--link-gb-s)", override_gb_s * 1e9
    if world <= per_node:
        return gpu["node_link"], gpu["node_link_bytes_s"]
    return "InfiniBand NDR (across %d nodes)" % math.ceil(world / per_node), gpu["ib_bytes_s"]


def predict_comm(cp, gpu, e, world, per_node, o, L, accum, t_bwd_s, link_gb_s=None):
    """exposed all-reduce time of a plain step and of a refresh's extra work"""
    link, bw = comm_link(gpu, world, per_node, link_gb_s)
    ring = lambda b: ring_allreduce_s(b, world, bw, e["comm_eff"])
    lat = e["allreduce_us"] * 1e-6
    fused = o["type"] != "adamw" and o["fused"]
    overlap = o.get("overlap", 1) and world > 1
    zero = o.get("zero", 0) and world > 1
    t_dense_layers, t_tail, t_comp = ring(cp["dense_layers_bytes"]), ring(cp["dense_tail_bytes"]), ring(cp["compressed_bytes"])
    if world <= 1:
        exposed, calls = 0.0, 0
    elif not overlap:
        calls = 1 + cp["n_matrices"]
        exposed = t_dense_layers + t_tail + t_comp + calls * lat
    else:
        # during the last micro-step's backward: each layer's dense gradients (not with ZeRO) and,
        # with the fused update, its compressed ones; layer 0's finish after the backward does
        hidden = (0.0 if zero else t_dense_layers) + (t_comp if fused else 0.0)
        calls_hidden = (0 if zero else L) + (cp["n_matrices"] if fused else 0)
        t_hidden = hidden + calls_hidden * lat
        exposed_tail = t_tail + (t_dense_layers if zero else 0.0) + (0.0 if fused else t_comp) + 2 * lat
        exposed = exposed_tail + max(t_hidden / L, t_hidden - t_bwd_s / accum)
        calls = calls_hidden + 2
    t_ref = ring(cp["refresh_bytes"]) + (cp["n_matrices"] * lat if cp["refresh_bytes"] and world > 1 else 0.0)
    return {"world": world, "gpus_per_node": per_node, "link": link, "link_bytes_s": bw,
            "ring_factor": 2.0 * (world - 1) / world if world > 1 else 0.0, "overlap": bool(overlap), "zero": bool(zero),
            "t_dense_layers_s": t_dense_layers, "t_dense_tail_s": t_tail, "t_compressed_s": t_comp,
            "t_all_s": t_dense_layers + t_tail + t_comp, "calls": calls, "exposed_s": exposed, "refresh_s": t_ref}


def predict(P, gpu, e, tokens_per_step, model_flops_tok, K):
    rows = []
    seg = {}
    for k in P.k:
        t, tf, tb, bound = kernel_time(k, gpu, e)
        total = t * k["count"]
        host = k["launches"] * k["count"] * e["launch_us"] * 1e-6
        rows.append(dict(k, t_call_s=t, t_flops_s=tf, t_bytes_s=tb, bound=bound, t_step_s=total))
        s = seg.setdefault((k["phase"], k["segment"]), [0.0, 0.0])
        s[0] += total
        s[1] += host
    out = {}
    for phase in ("step", "refresh"):
        gpu_t = sum(v[0] for (p, _), v in seg.items() if p == phase)
        host_t = sum(v[1] for (p, _), v in seg.items() if p == phase)
        wall = sum(max(v[0], v[1]) for (p, _), v in seg.items() if p == phase) + P.syncs[phase] * e["sync_us"] * 1e-6
        out[phase] = {"gpu_s": gpu_t, "host_launch_s": host_t, "syncs": P.syncs[phase], "time_s": wall,
                      "host_bound_segments": sorted(s for (p, s), v in seg.items() if p == phase and v[1] > v[0])}
    plain = out["step"]["time_s"]
    refresh = plain + out["refresh"]["time_s"]
    avg = plain + (out["refresh"]["time_s"] / K if K else 0.0)
    res = {"plain_step_s": plain, "refresh_step_s": refresh, "avg_step_s": avg, "phases": out}
    for key, t in (("plain", plain), ("refresh", refresh), ("avg", avg)):
        tok_s = tokens_per_step / t
        res[key + "_tok_s"] = tok_s
        res[key + "_mfu"] = model_flops_tok * tok_s / gpu["bf16_flops"]  # the trainer's peak for this GPU
    return rows, res


def add_multi(res, rows, cm, tokens_per_step, model_flops_tok, K, gpu):
    """N data-parallel GPUs: each step's time plus its exposed all-reduce time, N x the tokens"""
    N = cm["world"]
    plain = res["plain_step_s"] + cm["exposed_s"]
    refresh = res["refresh_step_s"] + cm["exposed_s"] + cm["refresh_s"]
    avg = plain + ((refresh - plain) / K if K else 0.0)
    m = dict(cm, plain_step_s=plain, refresh_step_s=refresh, avg_step_s=avg)
    for key, t in (("plain", plain), ("refresh", refresh), ("avg", avg)):
        m[key + "_tok_s"] = N * tokens_per_step / t
        m[key + "_mfu"] = model_flops_tok * tokens_per_step / t / gpu["bf16_flops"]  # per GPU
    return m


# ---- the command line: the trainer's flags -------------------------------------------------------
IGNORED = ["-i", "--train-data", "-j", "--val-data", "-l", "--lr", "--min-lr-ratio", "-u", "--warmup", "-x", "--steps",
           "--grad-clip", "--beta1", "--beta2", "--adam-eps", "-v", "--eval-every", "--eval-tokens", "-s",
           "--sample-every", "-g", "--sample-tokens", "-n", "--checkpoint-every", "-o", "--out-dir", "--seed", "-y",
           "--resume", "--init-from", "-e", "--tokenizer", "--grass-upscale", "--grass-scale", "--galore-scale",
           "--matrix-lr-scale", "--peak-tflops", "--memory-limit-gb", "--log-every",
           "--plan-only", "--norm-eps", "--rope-theta"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default="d6")
    for k, t in (("--vocab", int), ("--dim", int), ("--ffn", int), ("--layers", int), ("--heads", int),
                 ("--kv-heads", int), ("--max-seq", int), ("--tie", int)):
        p.add_argument(k, type=t, default=None)
    p.add_argument("-b", "--batch", type=int, default=8)
    p.add_argument("-t", "--seq", type=int, default=256)
    p.add_argument("-d", "--total-batch", type=int, default=-1, help="tokens per optimizer step (accumulation)")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "grass", "galore"])
    p.add_argument("--rank", default="128")
    p.add_argument("--update-freq", type=int, default=200)
    p.add_argument("--grass-select", default="multinorm",
                   choices=["topr", "multinorm", "multinorm-nr", "uniform", "uniform-nr"])
    p.add_argument("--grass-norms", default="auto", choices=["auto", "exact", "sketch", "micro"])
    p.add_argument("--sketch-dim", type=int, default=64)
    p.add_argument("--grass-fused", type=int, default=1)
    p.add_argument("--grass-layers", default="q,k,v,o,gate,up,down")
    p.add_argument("--select-on-device", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--state-dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--master-weights", type=int, default=0)
    p.add_argument("--recompute", type=int, default=0)
    p.add_argument("--attention", default="own", choices=["own", "cudnn"],
                   help="the trainer's --attention: own kernels (attn_eff) or cuDNN's fused SDPA (attn_cudnn_eff)")
    p.add_argument("--grass-row-align", type=int, default=16, choices=[1, 2, 4, 8, 16],
                   help="Grass selections padded to a multiple of this many rows (the GPU build's 16; 1: unpadded, as the CPU build)")
    p.add_argument("--ffn-align", type=int, default=64,
                   help="the ffn stored padded to a multiple of this (the GPU build's 64; 1: unpadded, as the CPU build)")
    p.add_argument("--grad-dtype", default="model", choices=["model", "fp32"],
                   help="the dense gradients' dtype (the trainer's): sets their all-reduce bytes (the kernels are modeled in bf16)")
    p.add_argument("--zero", type=int, default=0, choices=[0, 1], help="the trainer's ZeRO-1 (with --gpus > 1)")
    p.add_argument("--overlap-comm", type=int, default=1, choices=[0, 1],
                   help="the trainer's: the layers' all-reduces during the backward (default 1, as the trainer)")
    g = p.add_argument_group("several GPUs (data parallel)")
    g.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (ranks), each running -b x -t")
    g.add_argument("--gpus-per-node", type=int, default=8, help="GPUs joined by NVLink (or PCIe) in one node; IB between nodes")
    g.add_argument("--link-gb-s", type=float, default=None, help="override the ring's link bandwidth, GB/s per direction")
    g.add_argument("--headline", action="store_true",
                   help="AdamW, Grass and GaLore with these flags on --gpus GPUs (default 8): tokens/s and Grass/AdamW")
    for k in IGNORED:
        p.add_argument(k, dest="ignored_" + k.lstrip("-").replace("-", "_"), default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("model assumptions (--assumptions: each one's source)")
    for k, v in DEFAULTS.items():
        g.add_argument("--" + k.replace("_", "-"), type=float, default=v,
                       help="default %s" % ("derived per GPU" if v is None else "%g" % v))
    p.add_argument("--gpu", default="h100,h200",
                   help="h100 (SXM), h100pcie, h200, or device names (e.g. 'NVIDIA H100 PCIe'), comma separated; "
                        "the JSON's 'gpus' keys are these entries as given")
    p.add_argument("--compare", default=None, metavar="MEASURED.json",
                   help="print measured per-group (or per-kernel) times beside the model's (format: --help-compare)")
    p.add_argument("--help-compare", action="store_true", help="print the --compare file's format and exit")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--kernels", type=int, default=1, help="print the per-kernel table (0: groups and totals only)")
    p.add_argument("--recipes", action="store_true", help="AdamW, Grass, GaLore at 60m, 1b (T=256, T=1024), 13b")
    p.add_argument("--assumptions", action="store_true", help="print the assumptions and exit")
    return p


def optim_from_args(a):
    layers = [x for x in a.grass_layers.split(",") if x]
    for x in layers:
        if x not in LIN_NAMES:
            raise SystemExit("--grass-layers: unknown layer type '%s'" % x)
    if a.optimizer == "galore" and a.grass_norms not in ("auto", "exact"):
        raise SystemExit("--grass-norms %s: GaLore's projector needs the exact gradient" % a.grass_norms)
    return {"type": a.optimizer, "rank": a.rank, "K": a.update_freq, "select": a.grass_select,
            "norms": "exact" if a.grass_norms == "auto" else a.grass_norms, "sketch_dim": a.sketch_dim,
            "fused": a.grass_fused, "layers": layers, "select_on_device": a.select_on_device,
            "weight_decay": a.weight_decay, "state_dtype": a.state_dtype, "master_weights": a.master_weights,
            "recompute": a.recompute, "row_align": a.grass_row_align, "world": a.gpus, "overlap": a.overlap_comm,
            "zero": a.zero, "grad_dtype": a.grad_dtype}


def run_model(a):
    c = dict(resolve_config(a), attention=a.attention)
    B, T = a.batch, a.seq
    if T > c["max_seq"]:
        raise SystemExit("-t %d is longer than the model's max_seq %d" % (T, c["max_seq"]))
    micro = B * T
    total = micro if a.total_batch < 0 else a.total_batch
    if total % micro:
        raise SystemExit("--total-batch %d is not a multiple of B*T = %d" % (total, micro))
    accum = total // micro
    o = optim_from_args(a)
    e = {k: getattr(a, k) for k in DEFAULTS}
    P = build_plan(c, B, T, accum, o)
    K = o["K"] if o["type"] != "adamw" else 0
    mft = model_flops_per_token(c, T)
    ex_plain = trainer_executed_flops_per_token(c, T, o, accum, False)
    ex_ref = trainer_executed_flops_per_token(c, T, o, accum, True) if K else ex_plain
    kernel_flops = {ph: sum(k["flops"] * k["count"] for k in P.k if k["phase"] == ph and k["kind"] not in ("host", "seq"))
                    / total
                    for ph in ("step", "refresh")}
    gpus = [g.strip() for g in a.gpu.split(",") if g.strip()]
    keys = {g: gpu_key(g) for g in gpus}
    if a.gpus < 1 or a.gpus_per_node < 1:
        raise SystemExit("--gpus and --gpus-per-node must be positive")
    cp = comm_plan(c, o, a.gpus, accum, grad_bytes=F if a.grad_dtype == "fp32" else X, wire_bytes=X)
    result = {
        "config": dict(c, name=a.config), "B": B, "T": T, "accum": accum, "tokens_per_step": total,
        "optimizer": o, "norm_path": norm_path(o, accum) if o["type"] != "adamw" else None,
        "matrices": optim_layout(c, o),
        "matmul_params": matmul_params(c),
        "model_flops_per_token": mft,
        "executed_flops_per_token": {"plain": ex_plain, "refresh": ex_ref,
                                     "avg": ex_plain + ((ex_ref - ex_plain) / K if K else 0.0),
                                     "definition": "train_llama.cu executed_flops_per_token"},
        "kernel_flops_per_token": {"plain": kernel_flops["step"], "refresh": kernel_flops["step"] + kernel_flops["refresh"],
                                   "definition": "the sum over this model's kernels, elementwise included"},
        "assumptions": {"factors": e, "sources": FACTOR_SOURCES, "gpu_sources": GPU_SOURCES, "text": ASSUMPTIONS},
        "ceilings": {g: dict(GPUS[keys[g]], key=keys[g]) for g in gpus},
        "comm": dict(cp, world=a.gpus),
        "gpus": {},
    }
    for g in gpus:
        gpu = GPUS[keys[g]]
        eg = resolve_factors(e, gpu, c["hd"])
        rows, res = predict(P, gpu, eg, total, mft, K)
        res["gpu_key"] = keys[g]
        res["peak_flops"] = gpu["bf16_flops"]
        ex = result["executed_flops_per_token"]
        for key in ("plain", "refresh", "avg"):  # the trainer's mfu_exec: executed FLOPs over the same time
            res[key + "_mfu_exec"] = ex[key] * res[key + "_tok_s"] / gpu["bf16_flops"]
        res["factors"] = eg
        if a.gpus > 1:
            t_bwd = sum(k["t_step_s"] for k in rows if k["phase"] == "step" and k["segment"] == "bwd")
            cm = predict_comm(cp, gpu, eg, a.gpus, a.gpus_per_node, o, c["layers"], accum, t_bwd, a.link_gb_s)
            res["multi"] = add_multi(res, rows, cm, total, mft, K, gpu)
            for key in ("plain", "refresh", "avg"):
                res["multi"][key + "_mfu_exec"] = ex[key] * res["multi"][key + "_tok_s"] / a.gpus / gpu["bf16_flops"]
        result["gpus"][g] = res
        result["gpus"][g]["kernels"] = rows
    return result, P


# ---- printing ------------------------------------------------------------------------------------
def fmt_si(x, unit=""):
    for s, m in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= m:
            return "%.3g%s%s" % (x / m, s, unit)
    return "%.3g%s" % (x, unit)


def group_table(result, phase):
    gpus = list(result["gpus"])
    first = result["gpus"][gpus[0]]["kernels"]
    groups = {}
    order = []
    for i, k in enumerate(first):
        if k["phase"] != phase:
            continue
        if k["group"] not in groups:
            groups[k["group"]] = {"launches": 0.0, "flops": 0.0, "bytes": 0.0, "t": {g: 0.0 for g in gpus},
                                  "unaligned": 0}
            order.append(k["group"])
        G = groups[k["group"]]
        G["launches"] += k["count"] * k["launches"]
        G["flops"] += k["flops"] * k["count"]
        G["bytes"] += k["bytes"] * k["count"]
        G["unaligned"] += 0 if k["aligned"] else 1
        for g in gpus:
            G["t"][g] += result["gpus"][g]["kernels"][i]["t_step_s"]
    return order, groups


def print_result(result, show_kernels=True, out=sys.stdout):
    c = result["config"]
    o = result["optimizer"]
    gpus = list(result["gpus"])
    w = out.write
    opt = o["type"]
    if opt != "adamw":
        opt += " (rank %s, K=%d%s%s)" % (o["rank"], o["K"], ", select %s" % o["select"] if o["type"] == "grass" else "",
                                          ", norm pass %s" % result["norm_path"])
    ffn = "%d" % c["ffn"] if c["ffn"] == c["ffn_hf"] else "%d stored as %d" % (c["ffn_hf"], c["ffn"])
    w("perf_model: %s (vocab %d, dim %d, ffn %s, layers %d, heads %d/%d, hd %d%s) | B=%d T=%d accum=%d -> %d tokens/step | %s"
      "%s%s%s\n" % (c["name"], c["vocab"], c["dim"], ffn, c["layers"], c["heads"], c["kv_heads"], c["hd"],
                    ", tied" if c["tie"] else "", result["B"], result["T"], result["accum"], result["tokens_per_step"],
                    opt, ", recompute" if o["recompute"] else "", ", bf16 moments" if o["state_dtype"] == "bf16" else "",
                    ", master weights" if o["master_weights"] else ""))
    w("PREDICTIONS of a roofline model, not measurements. Ceilings (datasheet, dense): %s.\n"
      % "; ".join("%s bf16 %.0f TFLOP/s, fp32 %.0f, HBM %.2f TB/s" % (GPUS[r["gpu_key"]]["name"], GPUS[r["gpu_key"]]["bf16_flops"] / 1e12,
                                                                      GPUS[r["gpu_key"]]["fp32_flops"] / 1e12,
                                                                      GPUS[r["gpu_key"]]["hbm_bytes_s"] / 1e12)
                  for r in result["gpus"].values()))
    for g in gpus:
        e = result["gpus"][g]["factors"]
        ak = e["attn_eff_kernel"]
        w("Assumed on %s: GEMM efficiency %.2f%s, elementwise %.2f, own attention fwd/dKdV/dQ %.3f/%.3f/%.3f%s, "
          "cuDNN attention %.2f, SVD %.3f of fp32 peak, kernel floor %.1f us, launch %.1f us, sync %.1f us\n"
          % (GPUS[result["gpus"][g]["gpu_key"]]["name"], e["gemm_eff"],
             " (clock %.3f x kernel %.2f)" % (e["clock_ratio"], e["gemm_kernel_eff"]) if result["assumptions"]["factors"]["gemm_eff"] is None else " (given)",
             e["elem_eff"], ak["fwd"], ak["dkdv"], ak["dq"],
             " (shared-memory bound)" if result["assumptions"]["factors"]["attn_eff"] is None else " (given)",
             e["attn_cudnn_eff"], e["svd_eff"], e["floor_us"], e["launch_us"], e["sync_us"]))
    w("(--assumptions: the sources of each)\n\n")
    if show_kernels:
        hdr = "%-58s %9s %10s %10s" % ("kernel (per call)", "calls", "FLOP", "bytes")
        for g in gpus:
            hdr += " %10s" % ("%s us" % result["gpus"][g]["gpu_key"].upper())
        for g in gpus:
            hdr += " %9s" % ("%s ms" % result["gpus"][g]["gpu_key"].upper())
        w(hdr + "  bound / notes\n")
        for phase, title in (("step", "every step"), ("refresh", "refresh step only (every K steps)")):
            ks = [i for i, k in enumerate(result["gpus"][gpus[0]]["kernels"]) if k["phase"] == phase]
            if not ks:
                continue
            w("-- %s\n" % title)
            for i in ks:
                k = result["gpus"][gpus[0]]["kernels"][i]
                name = k["name"] + (" xL" if k["per_layer"] else "")
                line = "%-58s %9.0f %10s %10s" % (name[:58], k["count"], fmt_si(k["flops"]), fmt_si(k["bytes"], "B"))
                for g in gpus:
                    line += " %10.1f" % (result["gpus"][g]["kernels"][i]["t_call_s"] * 1e6)
                for g in gpus:
                    line += " %9.3f" % (result["gpus"][g]["kernels"][i]["t_step_s"] * 1e3)
                notes = [k["bound"]]
                if not k["aligned"]:
                    lds = [str(x) for x in k["unaligned_lds"]] + (["r_eff"] if k.get("data_dependent_ld") else [])
                    notes.append("UNALIGNED ld=%s" % ",".join(lds))
                if k["note"]:
                    notes.append(k["note"])
                w(line + "  " + "; ".join(notes) + "\n")
        w("\n")
    for phase, title in (("step", "groups, every step"), ("refresh", "groups, a refresh step's extra work")):
        order, groups = group_table(result, phase)
        if not order:
            continue
        w("-- %s\n" % title)
        line = "%-22s %9s %10s %10s" % ("group", "launches", "FLOP", "bytes")
        for g in gpus:
            line += " %9s %6s" % ("%s ms" % result["gpus"][g]["gpu_key"].upper(), "%")
        w(line + "\n")
        tot = {g: sum(G["t"][g] for G in groups.values()) for g in gpus}
        for name in order:
            G = groups[name]
            line = "%-22s %9.0f %10s %10s" % (name + (" *" if G["unaligned"] else ""), G["launches"], fmt_si(G["flops"]),
                                               fmt_si(G["bytes"], "B"))
            for g in gpus:
                line += " %9.3f %5.1f%%" % (G["t"][g] * 1e3, 100 * G["t"][g] / tot[g] if tot[g] else 0)
            w(line + "\n")
        w("%-22s %9s %10s %10s" % ("sum of kernels", "", "", "") + "".join(" %9.3f %6s" % (tot[g] * 1e3, "") for g in gpus)
          + "\n")
        w("(* a group with a GEMM flagged unaligned)\n\n" if any(G["unaligned"] for G in groups.values()) else "\n")
    # one layer
    L = c["layers"]
    for g in gpus:
        ks = result["gpus"][g]["kernels"]
        per_layer = sum(k["t_step_s"] for k in ks if k["phase"] == "step" and k["per_layer"])
        if per_layer:
            w("%s: one layer's kernels, forward + backward (+ fused update) over the step: %.3f ms; x L = %d layers: %.3f ms\n"
              % (GPUS[result["gpus"][g]["gpu_key"]]["name"], per_layer / L * 1e3, L, per_layer * 1e3))
    w("\n")
    ex = result["executed_flops_per_token"]
    kf = result["kernel_flops_per_token"]
    w("FLOPs per token: model (6N + 12LdT, N = %d matmul parameters) %s; executed as train_llama.cu counts them: "
      "plain step %s, refresh step %s%s\n" % (result["matmul_params"], fmt_si(result["model_flops_per_token"]),
                                             fmt_si(ex["plain"]), fmt_si(ex["refresh"]),
                                             " (r_eff estimated: data-dependent with this selection)"
                                             if any(not m["r_eff_exact"] for m in result["matrices"]) else ""))
    w("  the kernels' own sum (tile-exact attention, elementwise, the norm pass's attention, GaLore's P D and SVD): "
      "plain %s, refresh %s\n\n" % (fmt_si(kf["plain"]), fmt_si(kf["refresh"])))
    hdr = "%-10s %12s %12s %12s %12s %12s %9s %9s %9s %9s %14s\n" % (
        "GPU", "plain ms", "refresh ms", "avg ms", "tok/s plain", "tok/s avg", "MFU", "MFU avg", "exec MFU", "exec avg",
        "host-bound")
    w(hdr)
    for g in gpus:
        r = result["gpus"][g]
        w("%-10s %12.2f %12.2f %12.2f %12.0f %12.0f %8.1f%% %8.1f%% %8.1f%% %8.1f%% %14s\n" % (
            GPUS[r["gpu_key"]]["name"], r["plain_step_s"] * 1e3, r["refresh_step_s"] * 1e3, r["avg_step_s"] * 1e3, r["plain_tok_s"],
            r["avg_tok_s"], 100 * r["plain_mfu"], 100 * r["avg_mfu"], 100 * r["plain_mfu_exec"], 100 * r["avg_mfu_exec"],
            ",".join(r["phases"]["step"]["host_bound_segments"]) or "-"))
    w("(MFU: model FLOPs (6N + 12LdT) over the predicted time at the GPU's datasheet bf16 peak, as the trainer counts "
      "it; exec MFU: the FLOPs train_llama.cu counts as executed, its mfu_exec; 'avg' amortizes the refresh over K steps)\n")
    for g in gpus:
        m = result["gpus"][g].get("multi")
        if m:
            print_multi(result, g, m, out)


def print_multi(result, g, m, out=sys.stdout):
    w = out.write
    cp = result["comm"]
    r = result["gpus"][g]
    w("\n%s x %d, data parallel (%s, %.0f GB/s per direction x comm_eff %.2f; ring factor 2(N-1)/N = %.3f; overlap %s%s):\n"
      % (GPUS[r["gpu_key"]]["name"], m["world"], m["link"], m["link_bytes_s"] / 1e9, r["factors"]["comm_eff"], m["ring_factor"],
         "on" if m["overlap"] else "off", ", ZeRO-1" if m["zero"] else ""))
    w("  all-reduced per step: %.1f MiB (dense layers %.1f, dense embedding/head/final norm %.1f, compressed %.1f); "
      "at a refresh %.1f MiB more (norm pass %s)\n"
      % (cp["step_bytes"] / 2**20, cp["dense_layers_bytes"] / 2**20, cp["dense_tail_bytes"] / 2**20, cp["compressed_bytes"] / 2**20,
         cp["refresh_bytes"] / 2**20, cp["norm_path"] or "-"))
    w("  all-reduce time %.2f ms, exposed %.2f ms (%d calls); step %.2f ms (one GPU %.2f); refresh step %.2f ms\n"
      % (m["t_all_s"] * 1e3, m["exposed_s"] * 1e3, m["calls"], m["plain_step_s"] * 1e3, r["plain_step_s"] * 1e3,
         m["refresh_step_s"] * 1e3))
    w("  tokens/s on %d GPUs: plain %.0f, avg %.0f (per GPU %.0f); MFU per GPU plain %.1f%%, avg %.1f%%\n"
      % (m["world"], m["plain_tok_s"], m["avg_tok_s"], m["avg_tok_s"] / m["world"], 100 * m["plain_mfu"], 100 * m["avg_mfu"]))


def print_assumptions(a, out=sys.stdout):
    w = out.write
    e = {k: getattr(a, k) for k in DEFAULTS}
    w("Factors (value; source). 'published' figures are cited, 'assumed' ones are this model's guesses, "
      "'derived' ones computed here:\n")
    for k, v in DEFAULTS.items():
        given = e[k]
        w("  %-15s %-9s %s\n" % (k, "derived" if given is None else "%g" % given,
                                 FACTOR_SOURCES[k] if given == v else "given on the command line"))
    w("\nMachines:\n")
    for key, g in GPUS.items():
        w("  %-9s %-10s bf16 %4.0f TFLOP/s  fp32 %2.0f  HBM %.2f TB/s  %d SMs  rated %.3f GHz  sustained %.3f GHz (x%.3f)  "
          "node link %s %.0f GB/s  IB %.0f GB/s\n"
          % (key, g["name"], g["bf16_flops"] / 1e12, g["fp32_flops"] / 1e12, g["hbm_bytes_s"] / 1e12, g["sms"], g["rated_ghz"],
             g["sustained_ghz"], g["sustained_ghz"] / g["rated_ghz"], g["node_link"], g["node_link_bytes_s"] / 1e9,
             g["ib_bytes_s"] / 1e9))
    for t in GPU_SOURCES:
        w("  - " + t + "\n")
    hd = 64
    try:
        hd = resolve_config(a)["hd"]
    except SystemExit:
        pass
    w("\nThe own attention's efficiency (cuda/attention.cuh, head_dim %d padded to %d), from one tile pair's "
      "shared-memory traffic:\n" % (hd, (hd + 15) // 16 * 16))
    for k, v in own_attention_traffic(hd).items():
        w("  %-5s tile %dx%d: %8.0f FLOP = %5.0f tensor clocks; %7.0f shared-memory bytes = %5.0f clocks -> %.4f at the "
          "clock, x %.3f (SXM sustained) = %.4f of the datasheet peak\n"
          % (k, ATT_TILES[k][0], ATT_TILES[k][1], v["flops"], v["flops"] / TENSOR_FLOP_CLK_SM, v["smem_bytes"],
             v["smem_bytes"] / SMEM_BYTES_CLK_SM, v["eff_at_clock"], GPUS["h100"]["sustained_ghz"] / GPUS["h100"]["rated_ghz"],
             v["eff_at_clock"] * GPUS["h100"]["sustained_ghz"] / GPUS["h100"]["rated_ghz"]))
    w("  (WMMA compiles to mma.sync on Hopper, not wgmma: its own ceiling is below the 989 peak, but far above this bound.)\n")
    w("\nModel:\n")
    for t in ASSUMPTIONS:
        w("- " + t + "\n")


def headline(argv, a):
    """AdamW, Grass and GaLore with the given flags on N GPUs: the paper's comparison (Grass vs
    full-rank AdamW throughput on 8 GPUs), from each optimizer's all-reduce bytes and its step"""
    N = a.gpus if a.gpus > 1 else 8
    drop = {"--headline", "--json", "--optimizer", "--gpus"}
    base, skip = [], False
    for x in argv:
        if skip:
            skip = False
            continue
        if x in ("--optimizer", "--gpus"):
            skip = True
            continue
        if x.split("=")[0] in drop:
            continue
        base.append(x)
    res = {}
    for opt in ("adamw", "grass", "galore"):
        r, _ = run_model(build_parser().parse_args(base + ["--optimizer", opt, "--gpus", str(N)]))
        for g in r["gpus"].values():
            g.pop("kernels")
        res[opt] = r
    gpus = list(res["adamw"]["gpus"])
    if a.json:
        json.dump({"gpus_n": N, "runs": res}, sys.stdout, indent=1)
        print()
        return 0
    c = res["adamw"]["config"]
    o = res["grass"]["optimizer"]
    print("PREDICTIONS (dev/perf_model.py --headline): %s, B=%d T=%d per GPU, %d GPUs data parallel, %d per node; "
          "Grass/GaLore rank %s, K=%d; overlap %s%s\n"
          % (c["name"], res["adamw"]["B"], res["adamw"]["T"], N, a.gpus_per_node, o["rank"], o["K"],
             "on" if a.overlap_comm else "off", ", ZeRO-1" if a.zero else ""))
    for g in gpus:
        m0 = res["adamw"]["gpus"][g]["multi"]
        print("%s x %d over %s (%.0f GB/s per direction):" % (GPUS[res["adamw"]["gpus"][g]["gpu_key"]]["name"], N, m0["link"],
                                                              m0["link_bytes_s"] / 1e9))
        print("  %-7s %12s %12s %12s %12s %12s %14s %10s %9s" % ("opt", "MiB/step", "allred. ms", "exposed ms", "1-GPU ms",
                                                                "step ms", "tok/s (all)", "MFU/GPU", "vs AdamW"))
        for opt in ("adamw", "grass", "galore"):
            r = res[opt]
            x = r["gpus"][g]
            m = x["multi"]
            print("  %-7s %12.1f %12.2f %12.2f %12.2f %12.2f %14.0f %9.1f%% %8.2fx"
                  % (opt, r["comm"]["step_bytes"] / 2**20, m["t_all_s"] * 1e3, m["exposed_s"] * 1e3, x["avg_step_s"] * 1e3,
                     m["avg_step_s"] * 1e3, m["avg_tok_s"], 100 * m["avg_mfu"], m["avg_tok_s"] / m0["avg_tok_s"]))
    print("\n(step times amortize the refresh over K; MiB/step excludes the refresh's norm-pass all-reduce, which "
          "is in the step time; the compute and the all-reduces are assumed not to slow each other)")
    return 0


COMPARE_FORMAT = """--compare MEASURED.json: a JSON object, every field optional but one of step_ms, groups_ms, kernels_ms:
  {"gpu": "h100",                  the --gpu entry to compare with (default: the first of --gpu)
   "source": "nsys cuda_gpu_kern_sum, 10 steps",   free text, printed
   "step_ms": 150.2,               the measured plain step (median of the steady steps)
   "tok_s": 54000,                 the measured tokens/s (the trainer's log), printed beside the model's
   "groups_ms": {"attention": 30.1, "mlp gemm": 36.0},   per-step time of the model's groups, by its names
   "kernels_ms": {"gk_attention_forward": 9.1, "sm90_xmma_gemm_bf16bf16_...": 80.2}}   per-step time per CUDA
                                    kernel name (a profile's kernel summary divided by the steps profiled)
kernels_ms is mapped onto coarse groups (KERNEL_GROUPS: the cuBLAS GEMMs cannot be told apart by name,
so every GEMM group of the model is summed into 'gemm (cuBLAS)'); a name that no pattern matches is
listed as unmapped. The model's figure is its plain step's per-group time."""

# CUDA kernel names (cuda/*.cuh, cuBLAS/cuDNN/CUB/NCCL) -> coarse groups, first match wins
KERNEL_GROUPS = [
    (r"gk_attention|flash|fmha|sdpa|cudnn", "attention"),
    (r"gk_rmsnorm", "rmsnorm"),
    (r"gk_rope", "rope"),
    (r"gk_swiglu", "swiglu"),
    (r"gk_classifier|gk_loss", "classifier"),
    (r"gk_embedding|gk_iota|radix|cub::|DeviceRadixSort|DeviceSegmented", "embedding"),
    (r"gk_adamw", "optimizer adamw"),
    (r"gk_grass_adam|gk_decay|gk_add_inplace", "optimizer grass"),
    (r"gk_galore_adam|gk_galore_apply", "optimizer galore"),
    (r"gesvd|gebrd|orgbr|bdsqr|gk_galore_signed|gk_transpose|cusolver", "galore svd"),
    (r"gk_grass_gather", "wgrad grass"),
    (r"gk_sumsq_rows|gk_cols_sumsq", "norm pass"),
    (r"gk_sel_", "selection"),
    (r"gk_sumsq|gk_clip", "grad norm"),
    (r"memset|fill", "memset"),
    (r"nccl", "all-reduce (NCCL)"),
    (r"gemm|cutlass|xmma|nvjet|Kernel2|sm90_|sm80_|gk_x_to_float|gk_float_to_x|gk_scale_floats", "gemm (cuBLAS)"),
]


def coarse_group(k):
    return "gemm (cuBLAS)" if k["kind"] in ("gemm", "gemm32") else k["group"]


def kernel_group(name):
    for pat, grp in KERNEL_GROUPS:
        if re.search(pat, name, re.IGNORECASE):
            return grp
    return None


def compare(result, path, out=sys.stdout):
    """the measured per-group (or per-kernel) times beside the model's, and the step; returns the rows"""
    try:
        meas = json.load(open(path))
    except (OSError, ValueError) as e:
        raise SystemExit("--compare: cannot read %s: %s" % (path, e))
    if not isinstance(meas, dict) or not any(k in meas for k in ("step_ms", "groups_ms", "kernels_ms")):
        raise SystemExit("--compare: %s has none of step_ms, groups_ms, kernels_ms (--help-compare)" % path)
    g = meas.get("gpu") or list(result["gpus"])[0]
    if g not in result["gpus"]:
        matches = [x for x in result["gpus"] if result["gpus"][x]["gpu_key"] == gpu_key(g)]
        if not matches:
            raise SystemExit("--compare: the file's gpu '%s' is not among --gpu %s" % (g, ",".join(result["gpus"])))
        g = matches[0]
    r = result["gpus"][g]
    kernels = [k for k in r["kernels"] if k["phase"] == "step"]
    w = out.write
    w("measured (%s) beside the model (%s, plain step), %s:\n" % (meas.get("source", path), GPUS[r["gpu_key"]]["name"],
                                                                  result["config"]["name"]))
    rows = []
    if "kernels_ms" in meas:
        model = {}
        for k in kernels:
            model[coarse_group(k)] = model.get(coarse_group(k), 0.0) + k["t_step_s"] * 1e3
        measured, unmapped = {}, {}
        for name, ms in meas["kernels_ms"].items():
            grp = kernel_group(name)
            if grp is None:
                unmapped[name] = float(ms)
            else:
                measured[grp] = measured.get(grp, 0.0) + float(ms)
    elif "groups_ms" in meas:
        model = {}
        for k in kernels:
            model[k["group"]] = model.get(k["group"], 0.0) + k["t_step_s"] * 1e3
        measured, unmapped = {}, {}
        for grp, ms in meas["groups_ms"].items():
            (measured if grp in model else unmapped)[grp] = float(ms)
    else:
        model, measured, unmapped = {}, {}, {}
    if model:
        w("  %-22s %12s %12s %10s\n" % ("group", "model ms", "measured ms", "meas/model"))
        for grp in list(model) + [x for x in measured if x not in model]:
            mo, me = model.get(grp), measured.get(grp)
            ratio = me / mo if (mo and me is not None) else None
            rows.append({"group": grp, "model_ms": mo, "measured_ms": me, "ratio": ratio})
            w("  %-22s %12s %12s %10s\n" % (grp, "%.3f" % mo if mo is not None else "-", "%.3f" % me if me is not None else "-",
                                            "%.2f" % ratio if ratio is not None else "-"))
        for name, ms in unmapped.items():
            rows.append({"group": None, "name": name, "model_ms": None, "measured_ms": ms, "ratio": None})
            w("  %-22s %12s %12.3f %10s   (not in the model: %s)\n" % ("unmapped", "-", ms, "-", name[:60]))
        tm, tk = sum(model.values()), sum(measured.values()) + sum(unmapped.values())
        rows.append({"group": "sum of kernels", "model_ms": tm, "measured_ms": tk, "ratio": tk / tm if tm else None})
        w("  %-22s %12.3f %12.3f %10.2f\n" % ("sum of kernels", tm, tk, tk / tm if tm else 0))
    if "step_ms" in meas:
        mo = r["plain_step_s"] * 1e3
        me = float(meas["step_ms"])
        rows.append({"group": "step", "model_ms": mo, "measured_ms": me, "ratio": me / mo})
        w("  %-22s %12.3f %12.3f %10.2f\n" % ("step (wall)", mo, me, me / mo))
    if "tok_s" in meas:
        w("  tokens/s: model %.0f, measured %.0f (measured/model %.2f)\n"
          % (r["plain_tok_s"], float(meas["tok_s"]), float(meas["tok_s"]) / r["plain_tok_s"]))
    w("(a ratio above 1: slower than the model predicts)\n")
    return rows


RECIPES = [  # (label, trainer flags): scripts/run_llama.sh's recipes; 1b at T=1024 as scripts/gpu_check.sh runs it
    ("60m T=256 (recipe)", "-c 60m -b 128 -t 256 -d 131072", {"grass": "--rank 128 --update-freq 200",
                                                               "galore": "--rank 128 --update-freq 200"}),
    ("1b T=256 (recipe)", "-c 1b -b 32 -t 256 -d 131072", {"grass": "--rank 1024 --update-freq 200",
                                                            "galore": "--rank 1024 --update-freq 200"}),
    ("1b T=1024 (gpu_check)", "-c 1b -b 8 -t 1024", {"grass": "--rank 512 --update-freq 200",
                                                       "galore": "--rank 512 --update-freq 200"}),
    ("13b T=256 (recipe)", "-c 13b -b 2 -t 256 -d 131072",
     {"grass": "--rank 256 --update-freq 500 --recompute 1 --state-dtype bf16",
      "galore": "--rank 256 --update-freq 500 --recompute 1 --state-dtype bf16"}),
]


def recipe_runs(extra):
    for label, base, opts in RECIPES:
        for opt in ("adamw", "grass", "galore"):
            argv = base.split() + ["--optimizer", opt] + opts.get(opt, "").split() + extra
            yield label, opt, argv


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    if a.help_compare:
        print(COMPARE_FORMAT)
        return 0
    if a.assumptions:
        print_assumptions(a)
        return 0
    if a.headline:
        return headline(argv, a)
    if a.compare:
        result, _ = run_model(a)
        rows = compare(result, a.compare)
        if a.json:
            json.dump(rows, sys.stdout, indent=1)
            print()
        return 0
    if a.recipes:
        extra = [x for x in argv if x not in ("--recipes", "--json")]
        results = []
        for label, opt, rargv in recipe_runs(extra):
            r, _ = run_model(build_parser().parse_args(rargv))
            r["label"] = label
            results.append(r)
        if a.json:
            for r in results:
                for g in r["gpus"].values():
                    g.pop("kernels")
            json.dump(results, sys.stdout, indent=1)
            print()
            return 0
        gpus = list(results[0]["gpus"])
        print("PREDICTIONS (roofline model, dev/perf_model.py), not measurements; one GPU; see --assumptions\n")
        line = "%-22s %-7s %11s %11s" % ("config", "opt", "model F/tok", "exec F/tok")
        for g in gpus:
            line += " | %-8s %9s %10s %6s" % (g.upper(), "step ms", "tok/s", "MFU")
        print(line)
        for r in results:
            line = "%-22s %-7s %11s %11s" % (r["label"], r["optimizer"]["type"], fmt_si(r["model_flops_per_token"]),
                                             fmt_si(r["executed_flops_per_token"]["avg"]))
            for g in gpus:
                x = r["gpus"][g]
                line += " | %-8s %9.1f %10.0f %5.1f%%" % ("", x["avg_step_s"] * 1e3, x["avg_tok_s"], 100 * x["avg_mfu"])
            print(line)
        print("\n(step time, tok/s and MFU amortize the refresh over K; executed F/tok is train_llama.cu's count, "
              "averaged over K)\n")
        for r in results:
            print("== %s, %s: time by group (%s ms per step, refresh amortized)" % (r["label"], r["optimizer"]["type"],
                                                                                    "/".join(g.upper() for g in gpus)))
            order, groups = group_table(r, "step")
            K = r["optimizer"]["K"] if r["optimizer"]["type"] != "adamw" else 0
            parts = ["%s %s" % (n, "/".join("%.1f" % (groups[n]["t"][g] * 1e3) for g in gpus)) for n in order]
            if K:
                ro, rg = group_table(r, "refresh")
                tot = {g: sum(G["t"][g] for G in rg.values()) / K for g in gpus}
                parts.append("refresh/K %s" % "/".join("%.1f" % (tot[g] * 1e3) for g in gpus))
            print("   " + ", ".join(parts))
        return 0
    result, _ = run_model(a)
    if a.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        print_result(result, show_kernels=bool(a.kernels))
    return 0


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):  # python3 dev/perf_model.py ... | head: stop quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
