#!/usr/bin/env python3
"""
Imports a Hugging Face LLaMA directory into a grass.c model checkpoint (docs/FORMATS.md):

    python3 dev/import_hf.py HF_DIR out/model_hf.bin [--bf16] [--step N]

HF_DIR holds config.json and the weights as model.safetensors, or sharded safetensors with
model.safetensors.index.json, or pytorch_model.bin (/ sharded with pytorch_model.bin.index.json; these
need torch). The checkpoint is float32 by default; --bf16 writes bfloat16 (float32 weights are rounded
to nearest even; bfloat16 weights are copied bit for bit). Needs numpy and safetensors; bfloat16
safetensors are read with torch when it is installed and directly from the file otherwise.

Only plain LLaMA is accepted; everything else is refused with a message and a non-zero exit:
model_type other than llama, RoPE scaling (rope_scaling / rope_parameters with a rope_type other
than "default"), attention or MLP biases, head_dim != hidden_size / num_attention_heads, hidden_act
other than silu, missing / misshapen / unexpected tensors, a tied config whose file holds a
different lm_head.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_hf import (CKPT_HAS_CHECKSUM, CKPT_HEADER_INTS, CKPT_MAGIC, CKPT_VERSION, DTYPE_BF16, DTYPE_BYTES,  # noqa: E402
                       DTYPE_F32, CheckpointError, append_checksum, bf16_bits_to_f32, f32_bits,
                       f32_to_bf16_bits, param_specs, torch_available, validate_config)

IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)   # buffers some old checkpoints saved; recomputed anyway


class ImportError_(CheckpointError):
    pass


def config_from_hf(hf, where):
    """Maps an HF config.json dict to our config; raises on anything we do not implement."""
    mt = hf.get("model_type", "llama")
    if mt != "llama":
        raise ImportError_("%s: model_type %r is not supported (only 'llama')" % (where, mt))
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ImportError_("%s: hidden_act %r is not supported (only 'silu', SwiGLU)" % (where, act))
    for k in ("attention_bias", "mlp_bias"):
        if hf.get(k, False):
            raise ImportError_("%s: %s = true is not supported (the model has no biases)" % (where, k))
    theta = None
    for k in ("rope_scaling", "rope_parameters"):
        rp = hf.get(k)
        if rp is None:
            continue
        if not isinstance(rp, dict):
            raise ImportError_("%s: %s = %r is not supported" % (where, k, rp))
        rtype = rp.get("rope_type", rp.get("type"))
        if rtype is None and k == "rope_parameters" and any(isinstance(v, dict) for v in rp.values()):
            raise ImportError_("%s: per-layer-type rope_parameters are not supported: %r" % (where, rp))
        if rtype not in (None, "default"):
            raise ImportError_("%s: RoPE scaling is not supported (%s has rope_type %r)" % (where, k, rtype))
        if k == "rope_scaling" and rtype is None:
            raise ImportError_("%s: rope_scaling = %r is not supported (no RoPE scaling)" % (where, rp))
        if "rope_theta" in rp:
            theta = float(rp["rope_theta"])
    if "rope_theta" in hf and hf["rope_theta"] is not None:
        if theta is not None and float(hf["rope_theta"]) != theta:
            raise ImportError_("%s: rope_theta %r disagrees with rope_parameters.rope_theta %r"
                               % (where, hf["rope_theta"], theta))
        theta = float(hf["rope_theta"])
    if theta is None:
        theta = 10000.0   # LlamaConfig's default
    d = int(hf.get("hidden_size", 4096))
    H = int(hf.get("num_attention_heads", 32))
    kv = hf.get("num_key_value_heads")
    kv = H if kv is None else int(kv)
    if H <= 0 or d % H:
        raise ImportError_("%s: hidden_size %d is not divisible by num_attention_heads %d" % (where, d, H))
    hd = hf.get("head_dim")
    if hd is not None and int(hd) != d // H:
        raise ImportError_("%s: head_dim %s != hidden_size / num_attention_heads = %d is not supported"
                           % (where, hd, d // H))
    cfg = dict(vocab_size=int(hf.get("vocab_size", 32000)), dim=d,
               ffn_dim=int(hf.get("intermediate_size", 11008)), n_layers=int(hf.get("num_hidden_layers", 32)),
               n_heads=H, n_kv_heads=kv, max_seq_len=int(hf.get("max_position_embeddings", 2048)),
               tie_embeddings=int(bool(hf.get("tie_word_embeddings", False))),
               norm_eps=float(np.float32(hf.get("rms_norm_eps", 1e-6))), rope_theta=float(np.float32(theta)))
    validate_config(cfg, where)
    if float(hf.get("attention_dropout", 0.0) or 0.0) != 0.0:
        print("warning: %s: attention_dropout %s is ignored (the model has no dropout)"
              % (where, hf["attention_dropout"]), file=sys.stderr)
    return cfg


# ---------------------------------------------------------------------------------------------
# tensor loading: every loaded tensor is ("f32", float32 array) or ("bf16", uint16 bit array)

ST_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def safetensors_header(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        b = f.read(8)
        if len(b) < 8:
            raise ImportError_("%s: too short for a safetensors file" % path)
        (n,) = struct.unpack("<Q", b)
        if n > size - 8 or n > 100 << 20:
            raise ImportError_("%s: bad safetensors header length %d (file is %d bytes; truncated?)" % (path, n, size))
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except ValueError as e:
            raise ImportError_("%s: unreadable safetensors header: %s" % (path, e))
    header.pop("__metadata__", None)
    for name, info in header.items():
        s, e = info["data_offsets"]
        if 8 + n + e > size:
            raise ImportError_("%s: tensor %s lies beyond the end of the file (truncated?)" % (path, name))
    return 8 + n, header


def load_safetensors(path, names):
    """Returns {name: (kind, array)} for the names (a set) found in this file, plus the file's other names."""
    base, header = safetensors_header(path)
    out, others = {}, []
    want = [n for n in header if n in names]
    others = [n for n in header if n not in names]
    from safetensors import safe_open
    has_bf16 = any(header[n]["dtype"] == "BF16" for n in want)
    ft = safe_open(path, framework="pt") if has_bf16 and torch_available() else None
    with safe_open(path, framework="np") as f:
        for name in want:
            info = header[name]
            dt = info["dtype"]
            if dt in ST_NUMPY:
                a = f.get_tensor(name)
                if dt == "F64":
                    print("warning: %s is float64; rounded to float32" % name, file=sys.stderr)
                out[name] = ("f32", np.ascontiguousarray(a, dtype=np.float32))
            elif dt == "BF16":
                if ft is not None:
                    t = ft.get_tensor(name)
                    import torch
                    out[name] = ("bf16", t.contiguous().view(torch.int16).numpy().view(np.uint16).copy())
                else:
                    s, e = info["data_offsets"]
                    shape = tuple(info["shape"])
                    a = np.fromfile(path, dtype="<u2", count=(e - s) // 2, offset=base + s)
                    out[name] = ("bf16", a.reshape(shape).copy())
            else:
                raise ImportError_("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
    return out, others


def load_torch_bin(path, names):
    try:
        import torch
    except ImportError:
        raise ImportError_("%s: reading pytorch_model.bin needs torch, which is not installed "
                           "(convert to safetensors, or install torch)" % path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImportError_("%s: cannot load: %s" % (path, e))
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    out, others = {}, []
    for name, t in sd.items():
        if name not in names:
            others.append(name)
            continue
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            out[name] = ("bf16", t.view(torch.int16).numpy().view(np.uint16).copy())
        elif t.dtype in (torch.float32, torch.float16, torch.float64):
            out[name] = ("f32", t.to(torch.float32).numpy().copy())
        else:
            raise ImportError_("%s: tensor %s has unsupported dtype %s" % (path, name, t.dtype))
    return out, others


def weight_files(hf_dir):
    """[(path, loader)] for the weights of an HF directory."""
    def p(n):
        return os.path.join(hf_dir, n)
    for index, loader in (("model.safetensors.index.json", load_safetensors),
                          ("pytorch_model.bin.index.json", load_torch_bin)):
        if os.path.isfile(p(index)):
            with open(p(index)) as f:
                wm = json.load(f).get("weight_map")
            if not isinstance(wm, dict) or not wm:
                raise ImportError_("%s: no weight_map" % p(index))
            files = sorted(set(wm.values()))
            for fn in files:
                if not os.path.isfile(p(fn)):
                    raise ImportError_("%s lists shard %s, which is missing" % (p(index), fn))
            return [(p(fn), loader) for fn in files]
    if os.path.isfile(p("model.safetensors")):
        return [(p("model.safetensors"), load_safetensors)]
    if os.path.isfile(p("pytorch_model.bin")):
        return [(p("pytorch_model.bin"), load_torch_bin)]
    raise ImportError_("%s: no model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                       "or pytorch_model.bin.index.json" % hf_dir)


def to_kind(kind, a, bf16):
    if bf16:
        return a if kind == "bf16" else f32_to_bf16_bits(a)
    return a if kind == "f32" else bf16_bits_to_f32(a)


def import_dir(hf_dir, out_path, bf16=False, step=0, quiet=False):
    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise ImportError_("%s: no config.json" % hf_dir)
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
    except ValueError as e:
        raise ImportError_("%s: not valid JSON: %s" % (cfg_path, e))
    cfg = config_from_hf(hf, cfg_path)
    specs = param_specs(cfg)
    wanted = {n for n, _ in specs}
    wanted.add("lm_head.weight")   # possibly present even when tied
    loaded, others = {}, []
    for path, loader in weight_files(hf_dir):
        got, oth = loader(path, wanted)
        for n in got:
            if n in loaded:
                raise ImportError_("tensor %s appears in more than one weight file" % n)
        loaded.update(got)
        others += oth
    unexpected = [n for n in others if not n.endswith(IGNORED_SUFFIXES)]
    if unexpected:
        raise ImportError_("%s: unexpected tensors (not a plain LLaMA of this config?): %s%s"
                           % (hf_dir, ", ".join(unexpected[:8]), " ..." if len(unexpected) > 8 else ""))
    missing = [n for n, _ in specs if n not in loaded]
    if missing:
        raise ImportError_("%s: missing tensors: %s%s" % (hf_dir, ", ".join(missing[:8]),
                                                          " ..." if len(missing) > 8 else ""))
    params = []
    for name, shape in specs:
        kind, a = loaded[name]
        if tuple(a.shape) != tuple(shape):
            raise ImportError_("%s: tensor %s has shape %s, the config implies %s"
                               % (hf_dir, name, list(a.shape), list(shape)))
        params.append((name, to_kind(kind, a, bf16)))
    if cfg["tie_embeddings"] and "lm_head.weight" in loaded:
        kind, a = loaded["lm_head.weight"]
        emb = params[0][1]
        if tuple(a.shape) != emb.shape or not np.array_equal(to_kind(kind, a, bf16).view(np.uint8), emb.view(np.uint8)):
            raise ImportError_("%s: tie_word_embeddings is true but lm_head.weight differs from "
                               "model.embed_tokens.weight" % hf_dir)
    write_checkpoint(out_path, cfg, params, bf16, step)
    if not quiet:
        n = sum(a.size for _, a in params)
        print("imported %s (%d parameters, V=%d d=%d f=%d L=%d heads=%d kv=%d tied=%d eps=%g theta=%g) -> %s (%s)"
              % (hf_dir, n, cfg["vocab_size"], cfg["dim"], cfg["ffn_dim"], cfg["n_layers"], cfg["n_heads"],
                 cfg["n_kv_heads"], cfg["tie_embeddings"], cfg["norm_eps"], cfg["rope_theta"], out_path,
                 "bfloat16" if bf16 else "float32"))
    return cfg


def write_checkpoint(path, cfg, params, bf16, step=0):
    """params: [(name, array)] in canonical order; float32 arrays, or uint16 bf16 bits when bf16."""
    dt = DTYPE_BF16 if bf16 else DTYPE_F32
    h = np.zeros(CKPT_HEADER_INTS, dtype="<i4")
    h[0], h[1] = CKPT_MAGIC, CKPT_VERSION
    h[2:10] = [cfg["vocab_size"], cfg["dim"], cfg["ffn_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
               cfg["max_seq_len"], cfg["tie_embeddings"]]
    h[10] = dt
    h[11], h[12] = f32_bits(cfg["norm_eps"]), f32_bits(cfg["rope_theta"])
    h[13] = step
    h[CKPT_HAS_CHECKSUM] = 1
    npdt = "<u2" if bf16 else "<f4"
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(h.tobytes())
        for name, a in params:
            assert a.dtype == np.dtype(npdt), (name, a.dtype)
            f.write(np.ascontiguousarray(a, dtype=npdt).tobytes())
    expect = 256 + sum(a.size for _, a in params) * DTYPE_BYTES[dt]
    if os.path.getsize(tmp) != expect:
        raise ImportError_("%s: wrote %d bytes, expected %d" % (tmp, os.path.getsize(tmp), expect))
    append_checksum(tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="Import a Hugging Face LLaMA directory into a grass.c checkpoint.")
    ap.add_argument("hf_dir", help="directory with config.json and the weights")
    ap.add_argument("out", help="checkpoint file to write")
    ap.add_argument("--bf16", action="store_true", help="write bfloat16 parameters (default float32)")
    ap.add_argument("--step", type=int, default=0, help="training step to record in the header (default 0)")
    args = ap.parse_args()
    try:
        import_dir(args.hf_dir, args.out, args.bf16, args.step)
    except CheckpointError as e:
        sys.exit("error: %s" % e)
    except (KeyError, TypeError, ValueError) as e:
        sys.exit("error: %s: malformed input: %s: %s" % (args.hf_dir, type(e).__name__, e))


if __name__ == "__main__":
    main()
