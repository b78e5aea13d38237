#!/usr/bin/env python3
"""
Tests of dev/export_hf.py and dev/import_hf.py. Run with plain python3 from anywhere:

    python3 dev/test_hf_roundtrip.py

Part A needs only numpy + safetensors: random checkpoints written here -> export -> import give back
the same file byte for byte (float32 and bfloat16, untied and tied, with and without torch for the
bfloat16 path), the exported safetensors hold exactly our tensors, sharded safetensors import, and bad
inputs (truncated / oversized file, wrong magic or version, unsupported configs, missing, misshapen or
unexpected tensors) exit non-zero with a message.
Part B runs when torch and transformers import: LlamaForCausalLM.from_pretrained(exported dir) holds our
parameters bit for bit and gives finite logits; the fixtures' parameters exported this way reproduce the
fixtures' logits; save_pretrained models (safetensors, sharded, bfloat16, pytorch_model.bin) import back
bit for bit; the tokenizer is copied and loads.
Prints "N passed, N failed[, N skipped]" (each skipped part on a line "skipped: REASON", which
tests/run_all.sh counts) and exits non-zero on any failure.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

from checks import Checks

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPORT = os.path.join(HERE, "export_hf.py")
IMPORT = os.path.join(HERE, "import_hf.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, HERE)

suite = Checks("test_hf_roundtrip", quiet=True)
check = suite.check


def run(args, env_extra=None):
    env = dict(os.environ)
    env.pop("GRASS_NO_TORCH", None)
    if env_extra:
        env.update(env_extra)
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout + r.stderr


def expect_ok(args, what, env_extra=None):
    rc, out = run(args, env_extra)
    check(rc == 0, "%s: exit %d\n%s" % (what, rc, out))
    return rc == 0


def expect_fail(args, what, needle):
    rc, out = run(args)
    check(rc != 0, "%s: expected a non-zero exit, got 0\n%s" % (what, out))
    check("Traceback" not in out, "%s: a traceback instead of a clear message:\n%s" % (what, out))
    check(needle.lower() in out.lower(), "%s: message lacks %r:\n%s" % (what, needle, out))


# ---------------------------------------------------------------------------------------------
# our checkpoint format, written independently of the tools under test

def names_shapes(c):
    V, d, f, L, H, KV = c["V"], c["d"], c["f"], c["L"], c["H"], c["KV"]
    hd = d // H
    out = [("model.embed_tokens.weight", (V, d))]
    for l in range(L):
        p = "model.layers.%d." % l
        out += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (H * hd, d)),
                (p + "self_attn.k_proj.weight", (KV * hd, d)), (p + "self_attn.v_proj.weight", (KV * hd, d)),
                (p + "self_attn.o_proj.weight", (d, H * hd)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                (p + "mlp.down_proj.weight", (d, f))]
    out.append(("model.norm.weight", (d,)))
    if not c["tied"]:
        out.append(("lm_head.weight", (V, d)))
    return out


def fbits(x):
    return struct.unpack("<i", struct.pack("<f", x))[0]


def header(c, bf16, step=0, magic=20261102, version=1, checksum=True):
    h = np.zeros(64, dtype="<i4")
    h[:15] = [magic, version, c["V"], c["d"], c["f"], c["L"], c["H"], c["KV"], c["max_seq"], int(c["tied"]),
              1 if bf16 else 0, fbits(c["eps"]), fbits(c["theta"]), step, 1 if checksum else 0]
    return h


def write_ckpt(path, c, params, bf16, step=0, checksum=True):
    """params: {name: float32 array} or {name: uint16 bits} when bf16. checksum=False: the format of
    files written before checksum trailers (flag 0, no trailer)."""
    body = bytearray(header(c, bf16, step, checksum=checksum).tobytes())
    for n, s in names_shapes(c):
        a = params[n]
        assert a.shape == s and a.dtype == (np.uint16 if bf16 else np.float32)
        body += a.astype("<u2" if bf16 else "<f4").tobytes()
    if checksum:   # written here with zlib, independently of the C and dev/ writers
        body += struct.pack("<IIQ", 0x43524347, zlib.crc32(bytes(body)), len(body))
    with open(path, "wb") as f:
        f.write(bytes(body))


def random_params(c, rng, bf16):
    out = {}
    for n, s in names_shapes(c):
        a = rng.standard_normal(s).astype(np.float32) * (0.02 if "norm" not in n else 0.1)
        if "norm" in n:
            a += 1.0
        if bf16:
            a = (a.view(np.uint32) >> 16).astype(np.uint16)   # any bit pattern is a valid bf16 here
        out[n] = a
    return out


def read_safetensors_raw(path):
    """{name: (dtype tag, shape, raw bytes)}, parsed by hand (works for BF16 without torch)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    hdr = json.loads(data[8:8 + n])
    hdr.pop("__metadata__", None)
    return {k: (v["dtype"], tuple(v["shape"]), data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in hdr.items()}


CFG_UNTIED = dict(V=50, d=32, f=40, L=2, H=4, KV=2, max_seq=64, tied=False, eps=1e-5, theta=10000.0)
CFG_TIED = dict(V=37, d=24, f=56, L=3, H=3, KV=1, max_seq=48, tied=True, eps=3e-6, theta=500000.0)


def part_a(tmp):
    rng = np.random.default_rng(0)
    from export_hf import f32_to_bf16_bits

    for cname, c in (("untied", CFG_UNTIED), ("tied", CFG_TIED)):
        for bf16 in (False, True):
            for no_torch in ((False, True) if bf16 else (False,)):
                tag = "%s-%s%s" % (cname, "bf16" if bf16 else "fp32", "-notorch" if no_torch else "")
                env = {"GRASS_NO_TORCH": "1"} if no_torch else None
                params = random_params(c, rng, bf16)
                ck = os.path.join(tmp, "ck_%s.bin" % tag)
                write_ckpt(ck, c, params, bf16, step=1234)
                hfdir = os.path.join(tmp, "hf_%s" % tag)
                if not expect_ok([EXPORT, ck, hfdir], "export " + tag, env):
                    continue
                cfg = json.load(open(os.path.join(hfdir, "config.json")))
                want = dict(vocab_size=c["V"], hidden_size=c["d"], intermediate_size=c["f"], num_hidden_layers=c["L"],
                            num_attention_heads=c["H"], num_key_value_heads=c["KV"], max_position_embeddings=c["max_seq"],
                            tie_word_embeddings=c["tied"], hidden_act="silu", rms_norm_eps=c["eps"],
                            rope_theta=c["theta"], torch_dtype="bfloat16" if bf16 else "float32",
                            bos_token_id=1, eos_token_id=2, model_type="llama", attention_bias=False, mlp_bias=False,
                            rope_scaling=None, head_dim=c["d"] // c["H"])
                for k, v in want.items():
                    check(cfg.get(k) == v, "%s: config.json %s = %r, expected %r" % (tag, k, cfg.get(k), v))
                check(cfg.get("rope_parameters") == {"rope_type": "default", "rope_theta": c["theta"]},
                      "%s: rope_parameters %r" % (tag, cfg.get("rope_parameters")))
                st = read_safetensors_raw(os.path.join(hfdir, "model.safetensors"))
                ns = names_shapes(c)
                check(sorted(st) == sorted(n for n, _ in ns), "%s: safetensors names %s" % (tag, sorted(st)))
                ok = True
                for n, s in ns:
                    dt, shape, raw = st.get(n, (None, None, b""))
                    ok &= dt == ("BF16" if bf16 else "F32") and shape == s
                    ok &= raw == params[n].astype("<u2" if bf16 else "<f4").tobytes()
                check(ok, "%s: safetensors tensors differ from the checkpoint" % tag)
                if not bf16:   # the library reads what we wrote
                    from safetensors.numpy import load_file
                    lf = load_file(os.path.join(hfdir, "model.safetensors"))
                    check(all(np.array_equal(lf[n].view(np.uint32), params[n].view(np.uint32)) for n, _ in ns),
                          "%s: safetensors.numpy reads different values" % tag)
                # import back: the same file byte for byte
                back = os.path.join(tmp, "back_%s.bin" % tag)
                args = [IMPORT, hfdir, back, "--step", "1234"] + (["--bf16"] if bf16 else [])
                if expect_ok(args, "import " + tag, env):
                    check(open(back, "rb").read() == open(ck, "rb").read(),
                          "%s: export + import is not byte-identical to the original checkpoint" % tag)
                if bf16:   # bf16 -> fp32 import is the exact widening
                    back32 = os.path.join(tmp, "back32_%s.bin" % tag)
                    if expect_ok([IMPORT, hfdir, back32], "import fp32 " + tag, env):
                        b = open(back32, "rb").read()
                        check(b[:256] == header(c, False).tobytes(), "%s: fp32 import header" % tag)
                        want_b = b"".join((params[n].astype(np.uint32) << 16).astype("<u4").tobytes() for n, _ in ns)
                        check(b[256:-16] == want_b, "%s: bf16 -> fp32 import is not the exact widening" % tag)
                else:      # fp32 checkpoint exported as bf16 = round to nearest even
                    hb = os.path.join(tmp, "hfbf_%s" % tag)
                    if expect_ok([EXPORT, ck, hb, "--dtype", "bfloat16"], "export --dtype bfloat16 " + tag, env):
                        st2 = read_safetensors_raw(os.path.join(hb, "model.safetensors"))
                        check(all(st2[n][0] == "BF16" and st2[n][2] == f32_to_bf16_bits(params[n]).tobytes()
                                  for n, _ in ns), "%s: fp32 -> bf16 export rounding" % tag)
                        check(json.load(open(os.path.join(hb, "config.json")))["torch_dtype"] == "bfloat16",
                              "%s: bf16 export config dtype" % tag)

    # rounding of the numpy fp32 -> bf16 helper on edge cases (ties to even, inf, nan, overflow)
    x = np.array([1.0, 1.00390625, 1.01171875, -1.00390625, 3.0e38, 3.4e38, np.inf, -np.inf, 0.0, -0.0, 1e-40],
                 dtype=np.float32)
    got = f32_to_bf16_bits(x)
    want = np.array([0x3F80, 0x3F80, 0x3F82, 0xBF80, 0x7F62, 0x7F80, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001],
                    dtype=np.uint16)
    check(np.array_equal(got, want), "f32_to_bf16_bits edge cases: %s" % [hex(v) for v in got])
    check((f32_to_bf16_bits(np.array([np.nan], np.float32))[0] & 0x7FC0) == 0x7FC0, "bf16 of NaN is a NaN")

    # sharded safetensors, written with safetensors.numpy + an index, imported without torch
    c = CFG_UNTIED
    params = random_params(c, rng, False)
    ck = os.path.join(tmp, "ck_shard_src.bin")
    write_ckpt(ck, c, params, False)
    sd = os.path.join(tmp, "hf_sharded")
    expect_ok([EXPORT, ck, sd], "export for sharding")
    os.remove(os.path.join(sd, "model.safetensors"))
    from safetensors.numpy import save_file
    ns = names_shapes(c)
    halves = [ns[:len(ns) // 2], ns[len(ns) // 2:]]
    wm = {}
    for i, part in enumerate(halves):
        fn = "model-%05d-of-00002.safetensors" % (i + 1)
        save_file({n: params[n] for n, _ in part}, os.path.join(sd, fn), metadata={"format": "pt"})
        wm.update({n: fn for n, _ in part})
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(sd, "model.safetensors.index.json"), "w"))
    back = os.path.join(tmp, "back_sharded.bin")
    if expect_ok([IMPORT, sd, back], "import sharded", {"GRASS_NO_TORCH": "1"}):
        check(open(back, "rb").read() == open(ck, "rb").read(), "sharded import is not byte-identical")

    # ---- bad checkpoints
    good = open(ck, "rb").read()
    bad = os.path.join(tmp, "bad.bin")
    out = os.path.join(tmp, "hf_bad")

    def bad_ckpt(data, what, needle):
        open(bad, "wb").write(data)
        expect_fail([EXPORT, bad, out], "export of " + what, needle)

    bad_ckpt(good[:-10], "a truncated checkpoint", "truncated")
    bad_ckpt(good[:100], "a file shorter than the header", "truncated")
    bad_ckpt(good + b"\0" * 8, "a checkpoint with trailing bytes", "trailing")
    mid = 256 + 40   # a parameter byte
    bad_ckpt(good[:mid] + bytes([good[mid] ^ 0x10]) + good[mid + 1:], "a flipped bit in a parameter", "checksum mismatch")
    bad_ckpt(good[:-16] + b"\0" * 16, "a zeroed checksum trailer", "no checksum trailer")
    # a file from before checksum trailers (flag 0, no trailer) still exports, to the same tensors
    old_ck = os.path.join(tmp, "ck_before_checksums.bin")
    write_ckpt(old_ck, c, params, False, checksum=False)
    if expect_ok([EXPORT, old_ck, os.path.join(tmp, "hf_old")], "export of a checkpoint without a checksum"):
        st_old = read_safetensors_raw(os.path.join(tmp, "hf_old", "model.safetensors"))
        check(all(st_old[n][2] == params[n].astype("<f4").tobytes() for n, _ in ns), "checkpoint without a checksum: exported tensors differ")
    bad_ckpt(struct.pack("<i", 12345) + good[4:], "a wrong magic", "bad magic")
    bad_ckpt(struct.pack("<i", 20261101) + good[4:], "a data shard's magic", "data shard")
    bad_ckpt(good[:4] + struct.pack("<i", 2) + good[8:], "version 2", "version")
    bad_ckpt(good[:40] + struct.pack("<i", 7) + good[44:], "dtype code 7", "dtype")
    bad_ckpt(good[:24] + struct.pack("<i", 5) + good[28:], "heads not dividing d", "divisible")
    expect_fail([EXPORT, os.path.join(tmp, "does_not_exist.bin"), out], "export of a missing file", "no such file")
    if os.path.isfile(os.path.join(FIXTURES, "tiny_odd.bin")):
        expect_fail([EXPORT, os.path.join(FIXTURES, "tiny_odd.bin"), out], "export of a fixture", "test fixture")
    expect_fail([EXPORT, ck, out, "--tokenizer", os.path.join(tmp, "nope.model")], "missing tokenizer", "not found")

    # ---- bad HF directories
    base = os.path.join(tmp, "hf_untied-fp32")
    base_cfg = json.load(open(os.path.join(base, "config.json")))

    def bad_dir(mutate_cfg, what, needle, mutate_files=None):
        d = os.path.join(tmp, "hf_badcfg")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        cfg = json.loads(json.dumps(base_cfg))
        if mutate_cfg:
            mutate_cfg(cfg)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        if mutate_files:
            mutate_files(d)
        expect_fail([IMPORT, d, os.path.join(tmp, "never.bin")], "import of " + what, needle)
        check(not os.path.exists(os.path.join(tmp, "never.bin")), "%s: an output file was left behind" % what)

    bad_dir(lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling linear", "rope")
    bad_dir(lambda c: c.update(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling llama3", "rope")
    bad_dir(lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}),
            "rope_parameters yarn", "rope")
    bad_dir(lambda c: c.update(attention_bias=True), "attention_bias", "attention_bias")
    bad_dir(lambda c: c.update(mlp_bias=True), "mlp_bias", "mlp_bias")
    bad_dir(lambda c: c.update(hidden_act="gelu"), "hidden_act gelu", "hidden_act")
    bad_dir(lambda c: c.update(head_dim=16), "head_dim 16 with d=32, 4 heads", "head_dim")
    bad_dir(lambda c: c.update(model_type="mistral"), "model_type mistral", "model_type")
    bad_dir(lambda c: c.update(rope_theta=20000.0), "rope_theta disagreeing with rope_parameters", "rope_theta")
    bad_dir(lambda c: c.update(intermediate_size=41), "a config that does not match the tensors", "shape")
    bad_dir(lambda c: c.update(num_hidden_layers=3), "a missing layer", "missing tensors")
    bad_dir(lambda c: c.update(tie_word_embeddings=True), "tied config with a different lm_head", "lm_head")

    def add_bias(d):
        from safetensors.numpy import load_file
        t = load_file(os.path.join(d, "model.safetensors"))
        t["model.layers.0.self_attn.q_proj.bias"] = np.zeros(32, np.float32)
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    bad_dir(None, "an unexpected bias tensor", "unexpected", add_bias)

    def truncate_st(d):
        p = os.path.join(d, "model.safetensors")
        b = open(p, "rb").read()
        open(p, "wb").write(b[:-100])

    bad_dir(None, "a truncated safetensors file", "truncated", truncate_st)
    bad_dir(None, "a directory without weights", "no model.safetensors",
            lambda d: os.remove(os.path.join(d, "model.safetensors")))
    bad_dir(None, "a broken config.json", "json",
            lambda d: open(os.path.join(d, "config.json"), "w").write("{not json"))
    expect_fail([IMPORT, os.path.join(tmp, "no_such_dir"), os.path.join(tmp, "x.bin")], "import of a missing dir",
                "config.json")


# ---------------------------------------------------------------------------------------------

def part_b(tmp):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    rng = np.random.default_rng(1)

    def torch_bits(t):
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy().view(np.uint32)

    # (1) exported dirs load in transformers with our parameters bit for bit
    for cname, c in (("untied", CFG_UNTIED), ("tied", CFG_TIED)):
        for bf16 in (False, True):
            tag = "%s-%s" % (cname, "bf16" if bf16 else "fp32")
            params = random_params(c, rng, bf16)
            ck = os.path.join(tmp, "b_ck_%s.bin" % tag)
            write_ckpt(ck, c, params, bf16)
            d = os.path.join(tmp, "b_hf_%s" % tag)
            if not expect_ok([EXPORT, ck, d], "export (B) " + tag):
                continue
            m = LlamaForCausalLM.from_pretrained(d)
            check(m.dtype == (torch.bfloat16 if bf16 else torch.float32), "%s: loaded dtype %s" % (tag, m.dtype))
            sd = m.state_dict()
            ok = True
            for n, s in names_shapes(c):
                ok &= n in sd and tuple(sd[n].shape) == s and np.array_equal(
                    torch_bits(sd[n]), params[n].view(np.uint16 if bf16 else np.uint32))
            check(ok, "%s: from_pretrained parameters differ from the checkpoint" % tag)
            mc = m.config
            check(mc.rms_norm_eps == c["eps"] and mc.rope_parameters["rope_theta"] == c["theta"]
                  and mc.rope_parameters.get("rope_type", "default") == "default"
                  and mc.num_key_value_heads == c["KV"] and mc.max_position_embeddings == c["max_seq"],
                  "%s: loaded config %s" % (tag, mc))
            check((m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()) == c["tied"],
                  "%s: lm_head tying" % tag)
            ids = torch.randint(0, c["V"], (2, 7))
            with torch.no_grad():
                lg = m(input_ids=ids).logits
            check(tuple(lg.shape) == (2, 7, c["V"]) and bool(torch.isfinite(lg.float()).all()),
                  "%s: logits shape %s / not finite" % (tag, tuple(lg.shape)))

    # (2) the fixtures' parameters, exported, reproduce the fixtures' logits in transformers
    from make_reference import read_fixture
    for fx in ("tiny_gqa", "tiny_mha_tied", "tiny_odd"):
        path = os.path.join(FIXTURES, fx + ".bin")
        if not os.path.isfile(path):
            suite.skip("fixture %s (run dev/make_reference.py)" % fx)
            continue
        h, t = read_fixture(path)
        c = dict(V=h["vocab_size"], d=h["dim"], f=h["ffn_dim"], L=h["n_layers"], H=h["n_heads"], KV=h["n_kv_heads"],
                 max_seq=h["max_seq_len"], tied=bool(h["tie_embeddings"]), eps=h["norm_eps"], theta=h["rope_theta"])
        ck = os.path.join(tmp, "fx_%s.bin" % fx)
        write_ckpt(ck, c, {n: np.array(t[n]) for n, _ in names_shapes(c)}, False)
        d = os.path.join(tmp, "fx_hf_%s" % fx)
        if not expect_ok([EXPORT, ck, d], "export fixture " + fx):
            continue
        m = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager")
        ids = torch.from_numpy(t["input_ids"].astype(np.int64))
        with torch.no_grad():
            lg = m(input_ids=ids).logits.numpy()
        diff = float(np.abs(lg - t["logits"]).max())
        check(diff < 1e-5, "%s: exported model's logits differ from the fixture by %g" % (fx, diff))
        loss = torch.nn.functional.cross_entropy(torch.from_numpy(lg).view(-1, c["V"]),
                                                 torch.from_numpy(t["targets"].astype(np.int64)).view(-1)).item()
        check(abs(loss - float(t["loss"][0])) < 1e-5, "%s: loss %.7f vs fixture %.7f" % (fx, loss, t["loss"][0]))
        print("  fixture %-14s via export + from_pretrained: max |logit diff| %.2e, loss %.7f (fixture %.7f)"
              % (fx, diff, loss, float(t["loss"][0])))

    # (3) models saved by transformers import back bit for bit
    def hf_model(tied, dtype):
        cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=80, rms_norm_eps=2e-5,
                          rope_theta=50000.0, tie_word_embeddings=tied, hidden_act="silu")
        m = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.normal_(1.0 if "norm" in n else 0.0, 0.1)
        return m.to(dtype)

    def compare_import(m, ck, bf16, tag):
        b = open(ck, "rb").read()
        h = np.frombuffer(b[:256], dtype="<i4")
        cfg = m.config
        check(list(h[:15]) == [20261102, 1, cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size,
                               cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
                               cfg.max_position_embeddings, int(cfg.tie_word_embeddings), 1 if bf16 else 0,
                               fbits(cfg.rms_norm_eps), fbits(cfg.rope_parameters["rope_theta"]), 0, 1]
              and not h[15:].any(), "%s: imported header %s" % (tag, list(h[:15])))
        # the trailer: magic "GCRC", zlib's CRC-32 of every byte before it, and their count
        magic, crc, n = struct.unpack("<IIQ", b[-16:])
        check(magic == 0x43524347 and n == len(b) - 16 and crc == zlib.crc32(b[:-16]),
              "%s: imported file's checksum trailer (magic %08x, %d bytes, crc %08x vs %08x)" % (tag, magic, n, crc, zlib.crc32(b[:-16])))
        b = b[:-16]
        sd = m.state_dict()
        c = dict(V=cfg.vocab_size, d=cfg.hidden_size, f=cfg.intermediate_size, L=cfg.num_hidden_layers,
                 H=cfg.num_attention_heads, KV=cfg.num_key_value_heads, tied=cfg.tie_word_embeddings)
        parts = []
        for n, _ in names_shapes(c):
            t = sd[n].detach()
            if bf16:
                parts.append(t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2").tobytes())
            else:
                parts.append(t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
        check(b[256:] == b"".join(parts), "%s: imported parameters differ from the HF model" % tag)

    for tied in (False, True):
        for dtype in (torch.float32, torch.bfloat16):
            tag = "save_pretrained %s %s" % ("tied" if tied else "untied", str(dtype).split(".")[-1])
            m = hf_model(tied, dtype)
            d = os.path.join(tmp, "sp_%d_%s" % (tied, str(dtype).split(".")[-1]))
            m.save_pretrained(d)
            for bf16 in (False, True):
                ck = os.path.join(tmp, "sp_ck.bin")
                if expect_ok([IMPORT, d, ck] + (["--bf16"] if bf16 else []), "import " + tag):
                    compare_import(m, ck, bf16, tag + (" -> bf16" if bf16 else " -> fp32"))
            if dtype == torch.bfloat16 and not tied:   # the numpy-only bf16 reader agrees
                ck = os.path.join(tmp, "sp_ck_nt.bin")
                if expect_ok([IMPORT, d, ck, "--bf16"], "import (no torch) " + tag, {"GRASS_NO_TORCH": "1"}):
                    compare_import(m, ck, True, tag + " (no torch)")
            # full circle: HF -> ours -> HF gives the same logits bit for bit
            if dtype == torch.float32:
                ck = os.path.join(tmp, "circle.bin")
                d2 = os.path.join(tmp, "circle_hf")
                if expect_ok([IMPORT, d, ck], "import " + tag) and expect_ok([EXPORT, ck, d2], "re-export " + tag):
                    m2 = LlamaForCausalLM.from_pretrained(d2)
                    ids = torch.randint(0, 61, (2, 9))
                    with torch.no_grad():
                        a, b = m(input_ids=ids).logits, m2(input_ids=ids).logits
                    check(torch.equal(a, b), "%s: HF -> ours -> HF changes the logits (%g)"
                          % (tag, (a - b).abs().max().item()))

    # sharded save_pretrained, and pytorch_model.bin
    m = hf_model(False, torch.float32)
    d = os.path.join(tmp, "sp_sharded")
    m.save_pretrained(d, max_shard_size="20KB")
    nshard = len([f for f in os.listdir(d) if f.endswith(".safetensors")])
    check(nshard > 1 and os.path.isfile(os.path.join(d, "model.safetensors.index.json")),
          "save_pretrained did not shard (%d files)" % nshard)
    ck = os.path.join(tmp, "sp_sharded.bin")
    if expect_ok([IMPORT, d, ck], "import sharded save_pretrained"):
        compare_import(m, ck, False, "sharded save_pretrained")
    d = os.path.join(tmp, "sp_bin")
    os.makedirs(d, exist_ok=True)
    m.config.save_pretrained(d)
    torch.save(m.state_dict(), os.path.join(d, "pytorch_model.bin"))
    ck = os.path.join(tmp, "sp_bin.bin")
    if expect_ok([IMPORT, d, ck], "import pytorch_model.bin"):
        compare_import(m, ck, False, "pytorch_model.bin")

    # (4) tokenizer copied alongside, and it loads (needs sentencepiece to make a tiny model)
    try:
        import io
        import sentencepiece as spm
        buf = io.BytesIO()
        text = ["the quick brown fox jumps over the lazy dog %d times" % i for i in range(200)]
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, vocab_size=61,
                                       model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                       byte_fallback=False, minloglevel=2)
        tok_path = os.path.join(tmp, "tok.model")
        open(tok_path, "wb").write(buf.getvalue())
    except Exception as e:
        tok_path = None
        suite.skip("tokenizer check (could not build a sentencepiece model: %s)" % e)
    if tok_path:
        ck = os.path.join(tmp, "sp_bin.bin")
        d = os.path.join(tmp, "tok_hf")
        if expect_ok([EXPORT, ck, d, "--tokenizer", tok_path], "export with tokenizer"):
            check(open(os.path.join(d, "tokenizer.model"), "rb").read() == open(tok_path, "rb").read(),
                  "tokenizer.model not copied verbatim")
            sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
            want_ids = sp.encode("the lazy fox")
            check(sp.vocab_size() == 61 and len(want_ids) > 0, "exported tokenizer.model does not load")
            tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
            check(tc.get("tokenizer_class") == "LlamaTokenizer", "tokenizer_config.json %s" % tc)
            try:
                import google.protobuf  # noqa: F401  (transformers converts .model files with it)
                have_pb = True
            except ImportError:
                have_pb = False
                suite.skip("loading the exported tokenizer with AutoTokenizer (needs protobuf, not installed)")
            if have_pb:
                from transformers import AutoTokenizer
                tk = AutoTokenizer.from_pretrained(d)
                ids = tk("the lazy fox")["input_ids"]
                check(ids == [1] + want_ids, "AutoTokenizer on the exported dir gave %s, sentencepiece %s"
                      % (ids, want_ids))


def main():
    tmp = tempfile.mkdtemp(prefix="grass_hf_test_")
    try:
        t0 = time.time()
        part_a(tmp)
        print("(%.1f s) " % (time.time() - t0), end="")
        print("part A (numpy + safetensors): %s so far" % suite.summary())
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            have = True
        except ImportError as e:
            have = False
            suite.skip("part B (torch/transformers not importable: %s)" % e)
        if have:
            part_b(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    suite.finish()


if __name__ == "__main__":
    main()
