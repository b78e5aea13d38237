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

What is derived from the code and what is assumed is listed by --assumptions (and in the JSON).
Nothing here has been compared with a GPU yet: scripts/gpu_check.sh prints these predictions next
to its measurements so that the first GPU run shows where the model is wrong.
"""
import argparse
import json
import math
import os
import re
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- the machines (datasheet ceilings; the trainer's backend_peak_flops uses the same 989) -------
GPUS = {
    "h100": {"name": "H100 SXM", "bf16_flops": 989e12, "fp32_flops": 67e12, "hbm_bytes_s": 3.35e12},
    "h200": {"name": "H200", "bf16_flops": 989e12, "fp32_flops": 67e12, "hbm_bytes_s": 4.8e12},
}
MFU_PEAK = 989e12  # the trainer's peak for H100 SXM / H200 (cuda/common.cuh backend_peak_flops)

X = 2   # bytes of floatX (bf16: parameters, activations, dense gradients)
F = 4   # bytes of fp32 (Grass C, GaLore R and P, norms, rstd, lse, fp32 moments)

# ---- assumptions: the efficiency factors and overheads (all overridable) ------------------------
DEFAULTS = {
    "gemm_eff": 0.7,        # cuBLASLt bf16 GEMMs: fraction of the roofline reached
    "elem_eff": 0.8,        # elementwise / row-wise / reduction kernels, memsets: fraction of HBM bandwidth
    "attn_eff": 0.25,       # the fused WMMA attention (fp32 accumulators in shared memory, no cp.async
                            # pipelining; docs/CUDA.md expects it well below cuBLAS): fraction of the bf16 peak
    "attn_cudnn_eff": 0.5,  # cuDNN's fused SDPA (--attention cudnn): fraction of the bf16 peak, an assumption
                            # (flash attention on Hopper is published at 50-75%); not measured here
    "unaligned_eff": 0.5,   # extra factor on a GEMM whose leading dimension is not a multiple of 16 bytes
    "svd_eff": 0.01,        # cuSOLVER sgesvd (GaLore refresh) as a fraction of the fp32 peak
    "floor_us": 2.0,        # the shortest a launched kernel takes on the GPU (launch gap, tail)
    "launch_us": 5.0,       # host time to issue one kernel or cuBLASLt call
    "sync_us": 15.0,        # one host synchronization (cudaStreamSynchronize after a small copy)
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
    "GEMM time = max(FLOPs / 989 TFLOP/s, bytes / HBM bandwidth) / gemm_eff; a GEMM with a leading dimension "
    "whose byte stride is not a multiple of 16 (ffn 5461 at 1b, or r_eff after merged duplicate draws) is "
    "divided by unaligned_eff as well: cuBLASLt then has no 16-byte-aligned tensor-core kernel (an assumption "
    "to be measured: scripts/gpu_check.sh's 1b runs have ffn 5461).",
    "GaLore's dense update U = P D is an fp32 GEMM (CUBLAS_COMPUTE_32F, no TF32): its ceiling is the fp32 "
    "CUDA-core peak, 67 TFLOP/s. Elementwise kernels use that same fp32 peak as their compute ceiling.",
    "attention FLOPs are counted from the kernels' tile loops (cuda/attention.cuh): forward 64x64 tiles up to "
    "the diagonal (S = Q K^T, O += P V), backward dK/dV (64-key x 32-query tiles: S, dP, dV, dK) and dQ "
    "(64 x 32: S, dP, dQ), i.e. 3.5x the forward, head_dim padded to a multiple of 16; time at attn_eff of "
    "the bf16 peak.",
    "--attention cudnn (cuDNN's fused SDPA): the forward's FLOPs are the causal (query, key) pairs' "
    "S = Q K^T and O = P V at the real head_dim, the backward 2.5x that in one kernel (no separate D), "
    "at attn_cudnn_eff (0.5) of the bf16 peak: an assumption, not a measurement; gpu_check.sh's "
    "attention_check times both implementations.",
    "one GPU (no communication), no validation or sampling steps, no checkpoint writes.",
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
    """optim_runtime_norms: NP_DIRECT (one micro-batch, one rank, exact or micro), NP_FULL_G
    (exact with accumulation), NP_SKETCH; GaLore: NP_LAYER_G without accumulation, else NP_FULL_G."""
    if o["type"] == "galore":
        return "layer_g" if accum == 1 else "full_g"
    if o["norms"] == "sketch":
        return "sketch"
    if o["norms"] == "micro":
        return "direct"
    return "direct" if accum == 1 else "full_g"


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
            P.add(phase, "bwd", "attention", "attention_backward dQ", "attn", dq,
                  (N * qd * 2 + N * kvd * 2) * X + B * nh * T * F * 2 + N * qd * X, cl, 1, "", (), "", True)
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
        eff = e["attn_eff"]
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
        res[key + "_mfu"] = model_flops_tok * tok_s / MFU_PEAK
    return rows, res


# ---- the command line: the trainer's flags -------------------------------------------------------
IGNORED = ["-i", "--train-data", "-j", "--val-data", "-l", "--lr", "--min-lr-ratio", "-u", "--warmup", "-x", "--steps",
           "--grad-clip", "--beta1", "--beta2", "--adam-eps", "-v", "--eval-every", "--eval-tokens", "-s",
           "--sample-every", "-g", "--sample-tokens", "-n", "--checkpoint-every", "-o", "--out-dir", "--seed", "-y",
           "--resume", "--init-from", "-e", "--tokenizer", "--grass-upscale", "--grass-scale", "--galore-scale",
           "--zero", "--overlap-comm", "--matrix-lr-scale", "--peak-tflops", "--memory-limit-gb", "--log-every",
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
    for k in IGNORED:
        p.add_argument(k, dest="ignored_" + k.lstrip("-").replace("-", "_"), default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("model assumptions")
    for k, v in DEFAULTS.items():
        g.add_argument("--" + k.replace("_", "-"), type=float, default=v)
    p.add_argument("--gpu", default="h100,h200", help="h100, h200 or both (comma separated)")
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
            "recompute": a.recompute, "row_align": a.grass_row_align}


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
    for g in gpus:
        if g not in GPUS:
            raise SystemExit("--gpu: unknown '%s' (h100, h200)" % g)
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
        "assumptions": {"factors": e, "text": ASSUMPTIONS},
        "ceilings": {g: GPUS[g] for g in gpus},
        "gpus": {},
    }
    for g in gpus:
        rows, res = predict(P, GPUS[g], e, total, mft, K)
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
    w("PREDICTIONS of a roofline model, not measurements. Ceilings: dense bf16 989 TFLOP/s and fp32 67 TFLOP/s on both;"
      " HBM %s.\n" % ", ".join("%s %.2f TB/s" % (GPUS[g]["name"], GPUS[g]["hbm_bytes_s"] / 1e12) for g in gpus))
    e = result["assumptions"]["factors"]
    w("Assumed: GEMM efficiency %.2f, elementwise %.2f, attention %.2f, unaligned GEMM x%.2f, SVD %.3f of fp32 peak, "
      "kernel floor %.1f us, launch %.1f us (host), sync %.1f us (--assumptions: the list)\n\n"
      % (e["gemm_eff"], e["elem_eff"], e["attn_eff"], e["unaligned_eff"], e["svd_eff"], e["floor_us"], e["launch_us"],
         e["sync_us"]))
    if show_kernels:
        hdr = "%-58s %9s %10s %10s" % ("kernel (per call)", "calls", "FLOP", "bytes")
        for g in gpus:
            hdr += " %10s" % ("%s us" % g.upper())
        for g in gpus:
            hdr += " %9s" % ("%s ms" % g.upper())
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
            line += " %9s %6s" % ("%s ms" % g.upper(), "%")
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
              % (GPUS[g]["name"], per_layer / L * 1e3, L, per_layer * 1e3))
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
    hdr = "%-10s %12s %12s %12s %12s %12s %9s %9s %14s\n" % ("GPU", "plain ms", "refresh ms", "avg ms", "tok/s plain",
                                                              "tok/s avg", "MFU", "MFU avg", "host-bound")
    w(hdr)
    for g in gpus:
        r = result["gpus"][g]
        w("%-10s %12.2f %12.2f %12.2f %12.0f %12.0f %8.1f%% %8.1f%% %14s\n" % (
            GPUS[g]["name"], r["plain_step_s"] * 1e3, r["refresh_step_s"] * 1e3, r["avg_step_s"] * 1e3, r["plain_tok_s"],
            r["avg_tok_s"], 100 * r["plain_mfu"], 100 * r["avg_mfu"],
            ",".join(r["phases"]["step"]["host_bound_segments"]) or "-"))
    w("(MFU: model FLOPs over the predicted time at 989 TFLOP/s; 'avg' amortizes the refresh over K steps)\n")


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
    if a.assumptions:
        for k, v in DEFAULTS.items():
            print("%-14s %g" % (k, v))
        for t in ASSUMPTIONS:
            print("- " + t)
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
