#!/usr/bin/env python3
"""
Exports a grass.c model checkpoint (docs/FORMATS.md, "Model checkpoint") to a Hugging Face
directory that `LlamaForCausalLM.from_pretrained(DIR)` loads:

    python3 dev/export_hf.py out/model_00010000.bin hf_out/ [--dtype float32|bfloat16] [--tokenizer tokenizer.model]

Writes DIR/config.json (LlamaConfig), DIR/model.safetensors and DIR/generation_config.json, and,
with --tokenizer, copies the SentencePiece model to DIR/tokenizer.model (plus a small
tokenizer_config.json). The parameters keep the checkpoint's dtype unless --dtype says otherwise
(float32 -> bfloat16 rounds to nearest even; bfloat16 -> float32 is exact).
Needs numpy and safetensors; torch only to write bfloat16 through safetensors.torch (without torch a
bfloat16 file is written directly in the safetensors layout). Exits non-zero with a message on a bad
checkpoint (wrong magic or version, bad config, truncated or oversized file).

The checkpoint reader here (read_checkpoint) is also used by dev/import_hf.py and the tests.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np

CKPT_MAGIC = 20261102
CKPT_VERSION = 1
CKPT_HEADER_INTS = 64
CKPT_HEADER_BYTES = 256
DTYPE_F32, DTYPE_BF16 = 0, 1
DTYPE_NAMES = {DTYPE_F32: "float32", DTYPE_BF16: "bfloat16"}
DTYPE_BYTES = {DTYPE_F32: 4, DTYPE_BF16: 2}
CKPT_HAS_CHECKSUM = 14           # header int32 14: 1 = the file ends in a checksum trailer
CRC_TRAILER_MAGIC = 0x43524347   # "GCRC": uint32 magic, uint32 CRC-32 (zlib.crc32) of all bytes before it,
CRC_TRAILER_BYTES = 16           # uint64 their count (checksum.h, docs/FORMATS.md)
OTHER_MAGICS = {20261101: "a data shard", 20261103: "an optimizer/training state file",
                20261104: "a tokenizer file", 20261105: "a test fixture"}


class CheckpointError(Exception):
    pass


def f32_bits(x):
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def bits_f32(i):
    return struct.unpack("<f", struct.pack("<i", int(i)))[0]


def short_float(x):
    """The shortest decimal that reads back as the same float32 (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(x)))   # numpy prints the shortest round-trip digits


def param_specs(cfg):
    """[(HF name, shape)] in the canonical order of docs/FORMATS.md."""
    V, d, f = cfg["vocab_size"], cfg["dim"], cfg["ffn_dim"]
    hd = d // cfg["n_heads"]
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    specs = [("model.embed_tokens.weight", (V, d))]
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        specs += [(p + "input_layernorm.weight", (d,)),
                  (p + "self_attn.q_proj.weight", (q, d)),
                  (p + "self_attn.k_proj.weight", (kv, d)),
                  (p + "self_attn.v_proj.weight", (kv, d)),
                  (p + "self_attn.o_proj.weight", (d, q)),
                  (p + "post_attention_layernorm.weight", (d,)),
                  (p + "mlp.gate_proj.weight", (f, d)),
                  (p + "mlp.up_proj.weight", (f, d)),
                  (p + "mlp.down_proj.weight", (d, f))]
    specs.append(("model.norm.weight", (d,)))
    if not cfg["tie_embeddings"]:
        specs.append(("lm_head.weight", (V, d)))
    return specs


def validate_config(cfg, where):
    """Raises CheckpointError when the model config cannot be a LLaMA we support."""
    for k in ("vocab_size", "dim", "ffn_dim", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
        if not (1 <= cfg[k] <= 1 << 30):
            raise CheckpointError("%s: %s = %d is out of range" % (where, k, cfg[k]))
    if cfg["dim"] % cfg["n_heads"]:
        raise CheckpointError("%s: dim %d is not divisible by n_heads %d" % (where, cfg["dim"], cfg["n_heads"]))
    if (cfg["dim"] // cfg["n_heads"]) % 2:
        raise CheckpointError("%s: head_dim %d must be even for RoPE" % (where, cfg["dim"] // cfg["n_heads"]))
    if cfg["n_heads"] % cfg["n_kv_heads"]:
        raise CheckpointError("%s: n_heads %d is not a multiple of n_kv_heads %d"
                              % (where, cfg["n_heads"], cfg["n_kv_heads"]))
    if cfg["tie_embeddings"] not in (0, 1):
        raise CheckpointError("%s: tie_embeddings must be 0 or 1, got %d" % (where, cfg["tie_embeddings"]))
    for k in ("norm_eps", "rope_theta"):
        if not (np.isfinite(cfg[k]) and cfg[k] > 0):
            raise CheckpointError("%s: %s = %r must be positive and finite" % (where, k, cfg[k]))


def header_to_config(h, where):
    """h: 64 int32 values (numpy). Returns the config dict (plus dtype and step)."""
    if int(h[0]) != CKPT_MAGIC:
        kind = OTHER_MAGICS.get(int(h[0]))
        raise CheckpointError("%s: bad magic %d, expected %d (a model checkpoint)%s"
                              % (where, int(h[0]), CKPT_MAGIC, "; this looks like " + kind if kind else ""))
    if int(h[1]) != CKPT_VERSION:
        raise CheckpointError("%s: unsupported checkpoint version %d (this tool reads version %d)"
                              % (where, int(h[1]), CKPT_VERSION))
    cfg = dict(vocab_size=int(h[2]), dim=int(h[3]), ffn_dim=int(h[4]), n_layers=int(h[5]), n_heads=int(h[6]),
               n_kv_heads=int(h[7]), max_seq_len=int(h[8]), tie_embeddings=int(h[9]), dtype=int(h[10]),
               norm_eps=bits_f32(h[11]), rope_theta=bits_f32(h[12]), step=int(h[13]))
    if cfg["dtype"] not in DTYPE_NAMES:
        raise CheckpointError("%s: unknown parameter dtype code %d (0 float32, 1 bfloat16)" % (where, cfg["dtype"]))
    validate_config(cfg, where)
    return cfg


def verify_checksum(path, size):
    """Checks the 16-byte trailer of a checkpoint file against zlib.crc32 of everything before it."""
    crc = 0
    with open(path, "rb") as f:
        left = size - CRC_TRAILER_BYTES
        while left > 0:
            b = f.read(min(left, 1 << 24))
            if not b:
                raise CheckpointError("%s: truncated while checking its checksum" % path)
            crc = zlib.crc32(b, crc)
            left -= len(b)
        magic, stored, n = struct.unpack("<IIQ", f.read(CRC_TRAILER_BYTES))
    if magic != CRC_TRAILER_MAGIC or n != size - CRC_TRAILER_BYTES:
        raise CheckpointError("%s: no checksum trailer at its end (truncated, or the write did not finish)" % path)
    if stored != crc:
        raise CheckpointError("%s: checksum mismatch (stored %08x, contents %08x): the file is corrupted" % (path, stored, crc))


def append_checksum(path):
    """Appends the checksum trailer to a file just written (the reverse of verify_checksum)."""
    crc, n = 0, 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                break
            crc = zlib.crc32(b, crc)
            n += len(b)
    with open(path, "ab") as f:
        f.write(struct.pack("<IIQ", CRC_TRAILER_MAGIC, crc, n))
        f.flush()
        os.fsync(f.fileno())


def read_checkpoint(path):
    """Returns (cfg, header int32 array [64], OrderedDict-like list [(name, array)]).
    float32 checkpoints give float32 arrays, bfloat16 ones give uint16 arrays of the raw bits."""
    if not os.path.isfile(path):
        raise CheckpointError("%s: no such file" % path)
    size = os.path.getsize(path)
    if size < CKPT_HEADER_BYTES:
        raise CheckpointError("%s: %d bytes, shorter than the %d-byte checkpoint header (truncated?)"
                              % (path, size, CKPT_HEADER_BYTES))
    with open(path, "rb") as f:
        h = np.frombuffer(f.read(CKPT_HEADER_BYTES), dtype="<i4").copy()
        cfg = header_to_config(h, path)
        specs = param_specs(cfg)
        nbytes = DTYPE_BYTES[cfg["dtype"]]
        numel = sum(int(np.prod(s)) for _, s in specs)
        has_checksum = int(h[CKPT_HAS_CHECKSUM]) == 1
        expected = CKPT_HEADER_BYTES + numel * nbytes + (CRC_TRAILER_BYTES if has_checksum else 0)
        if size != expected:
            raise CheckpointError(
                "%s: file is %d bytes but its header (V=%d d=%d f=%d L=%d heads=%d kv=%d tied=%d, %s) implies "
                "%d bytes (256 + %d params x %d bytes%s): %s"
                % (path, size, cfg["vocab_size"], cfg["dim"], cfg["ffn_dim"], cfg["n_layers"], cfg["n_heads"],
                   cfg["n_kv_heads"], cfg["tie_embeddings"], DTYPE_NAMES[cfg["dtype"]], expected, numel, nbytes,
                   " + 16 checksum" if has_checksum else "", "truncated" if size < expected else "trailing data"))
        if has_checksum:
            verify_checksum(path, size)
        npdt = "<f4" if cfg["dtype"] == DTYPE_F32 else "<u2"
        params = []
        for name, shape in specs:
            n = int(np.prod(shape))
            a = np.frombuffer(f.read(n * nbytes), dtype=npdt)
            if a.size != n:
                raise CheckpointError("%s: truncated while reading %s" % (path, name))
            params.append((name, a.reshape(shape).astype(npdt[1:], copy=True)))
    return cfg, h, params


# ---------------------------------------------------------------------------------------------
# bfloat16 helpers (numpy has no bfloat16: bf16 values are carried as uint16 bit patterns)

def bf16_bits_to_f32(u16):
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 (as torch does); NaN stays a quiet NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        r[nan] = ((u[nan] >> 16).astype(np.uint16) | 0x0040)
    return r


def torch_available():
    if os.environ.get("GRASS_NO_TORCH"):   # lets the tests exercise the numpy-only paths
        return False
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def write_safetensors_raw(path, tensors, dtype_tag, metadata):
    """Writes a safetensors file directly (8-byte little-endian header length, JSON header, data).
    tensors: [(name, np.ndarray)] whose raw bytes are written as dtype_tag ("BF16", "F32")."""
    header, off = {}, 0
    for name, a in tensors:
        n = a.nbytes
        header[name] = {"dtype": dtype_tag, "shape": list(a.shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = metadata
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, a in tensors:
            f.write(np.ascontiguousarray(a).tobytes())


def write_safetensors(path, tensors, bf16):
    """tensors: [(name, array)]: float32 arrays, or uint16 bf16 bits when bf16."""
    meta = {"format": "pt"}
    tmp = path + ".tmp"
    if not bf16:
        from safetensors.numpy import save_file
        save_file({n: np.ascontiguousarray(a, dtype=np.float32) for n, a in tensors}, tmp, metadata=meta)
    elif torch_available():
        import torch
        from safetensors.torch import save_file
        save_file({n: torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
                   for n, a in tensors}, tmp, metadata=meta)
    else:
        write_safetensors_raw(tmp, tensors, "BF16", meta)
    os.replace(tmp, path)


def hf_config_dict(cfg, dtype_name):
    d, H = cfg["dim"], cfg["n_heads"]
    theta = short_float(cfg["rope_theta"])
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg["vocab_size"],
        "hidden_size": d,
        "intermediate_size": cfg["ffn_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": H,
        "num_key_value_heads": cfg["n_kv_heads"],
        "head_dim": d // H,
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": short_float(cfg["norm_eps"]),
        # transformers < 5 reads rope_theta/rope_scaling; transformers >= 5 reads rope_parameters
        "rope_theta": theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "tie_word_embeddings": bool(cfg["tie_embeddings"]),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "torch_dtype": dtype_name,   # transformers < 5
        "dtype": dtype_name,         # transformers >= 5
    }


def export(ckpt_path, out_dir, dtype=None, tokenizer=None, quiet=False):
    cfg, _, params = read_checkpoint(ckpt_path)
    src_bf16 = cfg["dtype"] == DTYPE_BF16
    if dtype is None:
        dtype = DTYPE_NAMES[cfg["dtype"]]
    out_bf16 = dtype == "bfloat16"
    if tokenizer is not None and not os.path.isfile(tokenizer):
        raise CheckpointError("%s: tokenizer file not found" % tokenizer)
    tensors = []
    for name, a in params:
        if out_bf16 and not src_bf16:
            a = f32_to_bf16_bits(a)
        elif not out_bf16 and src_bf16:
            a = bf16_bits_to_f32(a)
        tensors.append((name, a))
    config = json.dumps(hf_config_dict(cfg, dtype), indent=2) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, out_bf16)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        f.write(config)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
        f.write("\n")
    if tokenizer is not None:
        shutil.copyfile(tokenizer, os.path.join(out_dir, "tokenizer.model"))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                       "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
                       "model_max_length": cfg["max_seq_len"]}, f, indent=2)
            f.write("\n")
    if not quiet:
        n = sum(a.size for _, a in params)
        print("exported %s (step %d, %s, %d parameters, V=%d d=%d f=%d L=%d heads=%d kv=%d tied=%d eps=%g theta=%g) "
              "-> %s as %s%s" % (ckpt_path, cfg["step"], DTYPE_NAMES[cfg["dtype"]], n, cfg["vocab_size"],
                                 cfg["dim"], cfg["ffn_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
                                 cfg["tie_embeddings"], cfg["norm_eps"], cfg["rope_theta"], out_dir, dtype,
                                 " (+ tokenizer.model)" if tokenizer else ""))
    return cfg


def main():
    ap = argparse.ArgumentParser(description="Export a grass.c checkpoint to a Hugging Face LLaMA directory.")
    ap.add_argument("checkpoint", help="model checkpoint (model_*.bin)")
    ap.add_argument("out_dir", help="output directory (created if needed)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="parameter dtype in model.safetensors (default: the checkpoint's)")
    ap.add_argument("--tokenizer", default=None, help="SentencePiece tokenizer.model to copy alongside")
    args = ap.parse_args()
    try:
        export(args.checkpoint, args.out_dir, args.dtype, args.tokenizer)
    except CheckpointError as e:
        sys.exit("error: %s" % e)


if __name__ == "__main__":
    main()
