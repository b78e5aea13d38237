#!/usr/bin/env python3
"""
Builds small random Hugging Face LlamaForCausalLM models (float32, eager attention), runs one
batch forward and backward, and writes the test fixtures tests/fixtures/*.bin in the named-tensor
format of docs/FORMATS.md ("Test fixture"). The C/CUDA model is checked against these files.

    python3 dev/make_reference.py                 # writes tests/fixtures/{tiny_gqa,tiny_mha_tied,tiny_odd}.bin
    python3 dev/make_reference.py --out DIR       # somewhere else
    python3 dev/make_reference.py --check-only    # only read back and verify the existing files

Each fixture holds: input_ids [B,T] and targets [B,T] (ids as float32), every parameter under its
HF name (canonical order of FORMATS.md), logits [B,T,V], loss [1] = F.cross_entropy(logits.view(-1,V),
targets.view(-1)) (mean over all B*T positions; no label shift inside: the targets are given), and
grad.<name> for every parameter. With tied embeddings only model.embed_tokens.weight is written and its
gradient is the total one (embedding + LM head use).

Besides writing, the script checks (and fails loudly otherwise):
  - the HF model agrees with an independent float64 re-implementation of LLaMA written here
    (logits, loss and every gradient), so the fixture means what docs/HF.md says it means;
  - causality: changing the last token leaves the logits of earlier positions unchanged;
  - the file reads back (read_fixture below) to exactly the tensors that were written.
"""
import argparse
import math
import os
import struct
import sys
from collections import OrderedDict

import numpy as np

FIXTURE_MAGIC = 20261105
FIXTURE_VERSION = 1
MAX_NAME_LEN = 1024
MAX_NDIM = 8

# name, config, B, T, targets kind, seed. The embeddings are small (see build_one) so that the
# hidden states entering the first RMSNorm have a mean square comparable to rms_norm_eps: a model
# that ignores the configured eps (or rope_theta) visibly fails (checked below, "sensitivity").
FIXTURES = [
    ("tiny_gqa", dict(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False),
     2, 16, "next", 1234),
    ("tiny_mha_tied", dict(vocab_size=128, hidden_size=64, intermediate_size=88, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                           rms_norm_eps=1e-4, rope_theta=500000.0, tie_word_embeddings=True),
     2, 12, "random", 4321),
    ("tiny_odd", dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=3,
                      num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=40,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False),
     3, 13, "next", 777),
]


def param_names(n_layers, tied):
    """Parameter names in the canonical order of docs/FORMATS.md."""
    names = ["model.embed_tokens.weight"]
    for l in range(n_layers):
        p = "model.layers.%d." % l
        names += [p + "input_layernorm.weight",
                  p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                  p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight",
                  p + "post_attention_layernorm.weight",
                  p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
    names.append("model.norm.weight")
    if not tied:
        names.append("lm_head.weight")
    return names


def f32_bits(x):
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def bits_f32(i):
    return struct.unpack("<f", struct.pack("<i", int(i)))[0]


# ---------------------------------------------------------------------------------------------
# fixture file I/O (numpy only)

def write_fixture(path, hdr, tensors):
    """hdr: dict with vocab_size, dim, ffn_dim, n_layers, n_heads, n_kv_heads, max_seq_len,
    tie_embeddings, norm_eps, rope_theta, B, T. tensors: ordered dict name -> np.float32 array."""
    head = np.array([FIXTURE_MAGIC, FIXTURE_VERSION, hdr["vocab_size"], hdr["dim"], hdr["ffn_dim"],
                     hdr["n_layers"], hdr["n_heads"], hdr["n_kv_heads"], hdr["max_seq_len"],
                     hdr["tie_embeddings"], f32_bits(hdr["norm_eps"]), f32_bits(hdr["rope_theta"]),
                     hdr["B"], hdr["T"], len(tensors), 0], dtype="<i4")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head.tobytes())
        for name, arr in tensors.items():
            arr = np.ascontiguousarray(arr, dtype="<f4")
            nb = name.encode("utf-8")
            assert 0 < len(nb) <= MAX_NAME_LEN and arr.ndim <= MAX_NDIM
            f.write(struct.pack("<i", len(nb)))
            f.write(nb)
            f.write(struct.pack("<i", arr.ndim))
            f.write(np.array(arr.shape, dtype="<i4").tobytes())
            f.write(arr.tobytes())
    os.replace(tmp, path)


def read_fixture(path):
    """Returns (hdr dict, OrderedDict name -> np.float32 array). Raises ValueError on a bad file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 64:
        raise ValueError("%s: %d bytes, too short for the 64-byte fixture header" % (path, len(data)))
    h = np.frombuffer(data[:64], dtype="<i4")
    if h[0] != FIXTURE_MAGIC:
        raise ValueError("%s: bad magic %d (expected %d, a test fixture)" % (path, h[0], FIXTURE_MAGIC))
    if h[1] != FIXTURE_VERSION:
        raise ValueError("%s: unsupported version %d (expected %d)" % (path, h[1], FIXTURE_VERSION))
    keys = ["vocab_size", "dim", "ffn_dim", "n_layers", "n_heads", "n_kv_heads", "max_seq_len",
            "tie_embeddings"]
    hdr = {k: int(h[2 + i]) for i, k in enumerate(keys)}
    hdr["norm_eps"] = bits_f32(h[10])
    hdr["rope_theta"] = bits_f32(h[11])
    hdr["B"], hdr["T"] = int(h[12]), int(h[13])
    n = int(h[14])
    if n < 0 or n > 1000000:
        raise ValueError("%s: bad tensor count %d" % (path, n))
    pos = 64
    tensors = OrderedDict()

    def take(nbytes, what):
        nonlocal pos
        if pos + nbytes > len(data):
            raise ValueError("%s: truncated while reading %s (need %d bytes at offset %d, file has %d)"
                             % (path, what, nbytes, pos, len(data)))
        b = data[pos:pos + nbytes]
        pos += nbytes
        return b

    for i in range(n):
        (nl,) = struct.unpack("<i", take(4, "name length of tensor %d" % i))
        if nl <= 0 or nl > MAX_NAME_LEN:
            raise ValueError("%s: tensor %d has bad name length %d" % (path, i, nl))
        name = take(nl, "name of tensor %d" % i).decode("utf-8")
        (nd,) = struct.unpack("<i", take(4, "ndim of " + name))
        if nd < 0 or nd > MAX_NDIM:
            raise ValueError("%s: tensor %s has bad ndim %d" % (path, name, nd))
        dims = np.frombuffer(take(4 * nd, "dims of " + name), dtype="<i4").tolist()
        if any(d <= 0 for d in dims):
            raise ValueError("%s: tensor %s has bad dims %s" % (path, name, dims))
        numel = int(np.prod(dims)) if dims else 1
        arr = np.frombuffer(take(4 * numel, "data of " + name), dtype="<f4").reshape(dims)
        if name in tensors:
            raise ValueError("%s: duplicate tensor %s" % (path, name))
        tensors[name] = arr
    if pos != len(data):
        raise ValueError("%s: %d trailing bytes after the last tensor" % (path, len(data) - pos))
    return hdr, tensors


# ---------------------------------------------------------------------------------------------
# independent float64 LLaMA (the semantics the C model implements), used to cross-check HF

def manual_llama_loss(P, cfg, ids, targets):
    """P: dict name -> float64 torch tensor (requires grad). Returns (logits, loss)."""
    import torch
    V, d = cfg["vocab_size"], cfg["hidden_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // H
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    B, T = ids.shape

    def rmsnorm(x, w):
        return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)   # [hd/2]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]          # [T, hd/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # x [B, h, T, hd]; rotate-half convention: pairs (i, i + hd/2)
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    x = P["model.embed_tokens.weight"][ids]                                           # [B, T, d]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, P[p + "input_layernorm.weight"])
        q = (h @ P[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ P[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ P[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        kv_of_head = torch.arange(H) // (H // KV)        # query head h uses kv head h // (H/KV)
        k, v = k[:, kv_of_head], v[:, kv_of_head]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v                                              # [B, H, T, hd]
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ P[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, P[p + "post_attention_layernorm.weight"])
        g = h @ P[p + "mlp.gate_proj.weight"].T
        u = h @ P[p + "mlp.up_proj.weight"].T
        x = x + (g * torch.sigmoid(g) * u) @ P[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, P["model.norm.weight"])
    W = P["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    logits = x @ W.T
    loss = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))
    return logits, loss


# ---------------------------------------------------------------------------------------------

def build_one(name, cfg, B, T, targets_kind, seed):
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                         rope_scaling=None, bos_token_id=1, eos_token_id=2, **cfg)
    hf_cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(hf_cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    # sanity: the config really is what we asked for (rope theta lives in rope_parameters in HF 5)
    rp = getattr(model.config, "rope_parameters", None) or {}
    assert float(rp.get("rope_theta", getattr(model.config, "rope_theta", -1))) == cfg["rope_theta"], rp
    assert rp.get("rope_type", "default") == "default", rp
    tied = bool(cfg["tie_word_embeddings"])
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied

    # weights: std large enough that every path matters; norm weights random around 1
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.uniform_(0.6, 1.4)
            elif "q_proj" in pname or "k_proj" in pname:
                p.normal_(0.0, 0.2)
            elif "embed_tokens" in pname:
                # mean square of an embedding row ~ std^2: 1e-4 untied (eps 1e-5), 2.5e-3 tied (eps 1e-4)
                p.normal_(0.0, 0.01 if not tied else 0.05)
            else:
                p.normal_(0.0, 0.1)
    model.eval()  # no dropout anyway; eval only to be explicit

    V = cfg["vocab_size"]
    if targets_kind == "next":
        seq = torch.randint(0, V, (B, T + 1))
        ids, targets = seq[:, :T].contiguous(), seq[:, 1:].contiguous()
    else:
        ids = torch.randint(0, V, (B, T))
        targets = torch.randint(0, V, (B, T))

    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, use_cache=False)
    logits = out.logits
    assert logits.dtype == torch.float32 and tuple(logits.shape) == (B, T, V)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()

    names = param_names(cfg["num_hidden_layers"], tied)
    hf_params = dict(model.named_parameters())  # tied: lm_head.weight is not listed separately
    missing = [n for n in names if n not in hf_params]
    extra = [n for n in hf_params if n not in names]
    assert not missing and not extra, (missing, extra)

    # ---- cross-check against the float64 re-implementation
    P = {n: hf_params[n].detach().double().clone().requires_grad_(True) for n in names}
    ref_logits, ref_loss = manual_llama_loss(P, dict(cfg), ids, targets)
    ref_loss.backward()
    dl = (ref_logits.detach() - logits.detach().double()).abs().max().item()
    assert dl < 1e-4, "%s: HF logits differ from the float64 reference by %g" % (name, dl)
    assert abs(ref_loss.item() - loss.item()) < 1e-5, (ref_loss.item(), loss.item())
    worst = 0.0
    for n in names:
        g_hf = hf_params[n].grad.double()
        g_ref = P[n].grad
        err = ((g_hf - g_ref).abs().max() / (g_ref.abs().max() + 1e-12)).item()
        worst = max(worst, err)
        assert err < 1e-4, "%s: grad of %s differs from the float64 reference (rel %g)" % (name, n, err)
        assert g_hf.abs().max().item() > 0, "%s: grad of %s is all zero" % (name, n)

    # ---- sensitivity: eps and theta must matter far above float32 noise, so that a C model
    # that hard-codes them fails its comparison with this fixture
    with torch.no_grad():
        Pd = {n: P[n].detach() for n in names}
        sens = {}
        for key, alt in (("rms_norm_eps", cfg["rms_norm_eps"] / 10), ("rope_theta", cfg["rope_theta"] * 2)):
            c2 = dict(cfg)
            c2[key] = alt
            lg2, _ = manual_llama_loss(Pd, c2, ids, targets)
            sens[key] = (lg2 - ref_logits.detach()).abs().max().item()
            assert sens[key] > 1e-3, "%s: %s barely changes the logits (%g)" % (name, key, sens[key])

    # ---- causality: changing the last input token must not change earlier positions
    with torch.no_grad():
        ids2 = ids.clone()
        ids2[:, -1] = (ids2[:, -1] + 1) % V
        logits2 = model(input_ids=ids2, use_cache=False).logits
        early = (logits2[:, :-1] - logits[:, :-1].detach()).abs().max().item()
        last = (logits2[:, -1] - logits[:, -1].detach()).abs().max().item()
        assert early < 1e-5 and last > 1e-3, (early, last)

    # ---- assemble the fixture
    tensors = OrderedDict()
    tensors["input_ids"] = ids.to(torch.float32).numpy()
    tensors["targets"] = targets.to(torch.float32).numpy()
    for n in names:
        tensors[n] = hf_params[n].detach().numpy().astype(np.float32)
    tensors["logits"] = logits.detach().numpy().astype(np.float32)
    tensors["loss"] = np.array([loss.item()], dtype=np.float32)
    for n in names:
        tensors["grad." + n] = hf_params[n].grad.numpy().astype(np.float32)
    hdr = dict(vocab_size=V, dim=cfg["hidden_size"], ffn_dim=cfg["intermediate_size"],
               n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
               n_kv_heads=cfg["num_key_value_heads"], max_seq_len=cfg["max_position_embeddings"],
               tie_embeddings=int(tied), norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
               B=B, T=T)
    stats = dict(eps_effect=sens["rms_norm_eps"], theta_effect=sens["rope_theta"], loss=loss.item(), ref_loss=ref_loss.item(), logit_diff=dl, grad_rel=worst,
                 logits_std=logits.std().item(), logits_sum=float(logits.double().sum().item()))
    return hdr, tensors, stats


def verify_readback(path, hdr, tensors):
    rhdr, rt = read_fixture(path)
    for k, v in hdr.items():
        if k in ("norm_eps", "rope_theta"):
            assert rhdr[k] == float(np.float32(v)), (k, rhdr[k], v)
        else:
            assert rhdr[k] == v, (k, rhdr[k], v)
    assert list(rt.keys()) == list(tensors.keys())
    for n, a in tensors.items():
        b = rt[n]
        assert b.shape == a.shape, (n, b.shape, a.shape)
        assert np.array_equal(b.view(np.uint32), np.ascontiguousarray(a, np.float32).view(np.uint32)), n


def check_fixture_semantics(path):
    """Independent checks on a written file: shapes, ids, loss = CE(logits, targets) in float64."""
    hdr, t = read_fixture(path)
    B, T, V = hdr["B"], hdr["T"], hdr["vocab_size"]
    names = param_names(hdr["n_layers"], hdr["tie_embeddings"] != 0)
    expect = ["input_ids", "targets"] + names + ["logits", "loss"] + ["grad." + n for n in names]
    assert list(t.keys()) == expect, "unexpected tensor list in " + path
    ids, tg = t["input_ids"], t["targets"]
    assert ids.shape == (B, T) and tg.shape == (B, T) and t["logits"].shape == (B, T, V)
    for a in (ids, tg):
        assert np.all(a == np.round(a)) and a.min() >= 0 and a.max() < V
    lg = t["logits"].astype(np.float64).reshape(-1, V)
    m = lg.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(lg - m).sum(axis=1)))
    ce = float(np.mean(lse - lg[np.arange(B * T), tg.reshape(-1).astype(np.int64)]))
    assert abs(ce - float(t["loss"][0])) < 1e-5 * max(1.0, abs(ce)), (ce, t["loss"][0])
    for n in names:
        assert t[n].shape == t["grad." + n].shape
        assert np.all(np.isfinite(t[n])) and np.all(np.isfinite(t["grad." + n]))
    return hdr, t, ce


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-only", action="store_true", help="only read back and check existing fixtures")
    args = ap.parse_args()
    out = os.path.normpath(args.out)

    if not args.check_only:
        try:
            import torch
            import transformers
        except ImportError as e:
            sys.exit("error: make_reference.py needs torch and transformers (%s)" % e)
        torch.set_num_threads(1)   # reproducible reduction order
        os.makedirs(out, exist_ok=True)
        print("torch %s, transformers %s" % (torch.__version__, transformers.__version__))

    total = 0
    for name, cfg, B, T, tk, seed in FIXTURES:
        path = os.path.join(out, name + ".bin")
        if not args.check_only:
            hdr, tensors, st = build_one(name, cfg, B, T, tk, seed)
            write_fixture(path, hdr, tensors)
            verify_readback(path, hdr, tensors)
            print("%-14s loss %.7f (float64 reference %.7f), logits std %.4f, sum %.6f, "
                  "max |logit - ref| %.2e, max rel grad err %.2e; eps/10 moves logits by %.2e, "
                  "theta*2 by %.2e"
                  % (name, st["loss"], st["ref_loss"], st["logits_std"], st["logits_sum"],
                     st["logit_diff"], st["grad_rel"], st["eps_effect"], st["theta_effect"]))
        hdr, t, ce = check_fixture_semantics(path)
        size = os.path.getsize(path)
        total += size
        print("  %s: %d bytes, %d tensors, V=%d d=%d f=%d L=%d H=%d KV=%d tied=%d eps=%g theta=%g B=%d T=%d, "
              "loss %.7f, CE recomputed in float64 %.7f"
              % (path, size, len(t), hdr["vocab_size"], hdr["dim"], hdr["ffn_dim"], hdr["n_layers"],
                 hdr["n_heads"], hdr["n_kv_heads"], hdr["tie_embeddings"], hdr["norm_eps"],
                 hdr["rope_theta"], hdr["B"], hdr["T"], float(t["loss"][0]), ce))
    print("total fixture size %d bytes; all fixtures read back and checked" % total)


if __name__ == "__main__":
    main()
