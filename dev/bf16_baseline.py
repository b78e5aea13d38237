#!/usr/bin/env python3
"""
How far does a correct bf16 LLaMA land from the fp32 test fixtures? Gives a baseline for the
tolerances of bf16 comparisons against tests/fixtures/*.bin (written by dev/make_reference.py).

    python3 dev/bf16_baseline.py                          # the three fixtures in tests/fixtures
    python3 dev/bf16_baseline.py tests/fixtures/tiny_odd.bin --json /tmp/bf16.json

For each fixture the Hugging Face LlamaForCausalLM is built with the fixture's config (eager
attention, as make_reference.py) and given the fixture's fp32 weights. Then:
  - fp32:     the model as is must reproduce the fixture's logits, loss and every gradient
              (rel err < 1e-4), else the script stops: the comparison below would mean nothing;
  - bf16:     the whole model cast to torch.bfloat16 (weights, activations and gradients in bf16,
              as a pure-bf16 trainer). The RoPE inverse frequencies are put back to fp32 after the
              cast (HF computes cos/sin in fp32 from them; a bf16 inv_freq would be an avoidable
              error, not a property of bf16 training). HF keeps RMSNorm and softmax in fp32
              internally, as a careful bf16 kernel does;
  - autocast: weights (and gradients) in fp32, forward under torch.autocast(cpu, bfloat16):
              the usual mixed-precision baseline.
In both variants loss = F.cross_entropy(logits.float().view(-1, V), targets.view(-1)).

Every error is max|got - ref| / max|ref| over one tensor, ref being the fixture's fp32 values
(the loss: |got - ref|). Printed per fixture: logits rel err, loss diff, the worst gradient
(and its tensor), the worst over the norm weights (names ending in "norm.weight") and over the
linear weights (all others: projections, embedding, lm_head); and the worst over all fixtures.
--verbose prints every gradient; --json PATH writes all figures.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_reference import param_names, read_fixture  # noqa: E402

DEFAULT_FIXTURES = [os.path.join(HERE, "..", "tests", "fixtures", n + ".bin")
                    for n in ("tiny_gqa", "tiny_mha_tied", "tiny_odd")]
FP32_TOL = 1e-4


def rel_err(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def build_model(hdr, t):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tied = hdr["tie_embeddings"] != 0
    cfg = LlamaConfig(vocab_size=hdr["vocab_size"], hidden_size=hdr["dim"], intermediate_size=hdr["ffn_dim"],
                      num_hidden_layers=hdr["n_layers"], num_attention_heads=hdr["n_heads"],
                      num_key_value_heads=hdr["n_kv_heads"], max_position_embeddings=hdr["max_seq_len"],
                      tie_word_embeddings=tied, rms_norm_eps=hdr["norm_eps"], rope_theta=hdr["rope_theta"],
                      hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                      rope_scaling=None, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied

    names = param_names(hdr["n_layers"], tied)
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(names), (sorted(params), sorted(names))
    with torch.no_grad():
        for n in names:
            assert tuple(params[n].shape) == t[n].shape, (n, params[n].shape, t[n].shape)
            params[n].copy_(torch.from_numpy(np.array(t[n])))
    model.eval()
    return model, names


def run_step(model, names, ids, targets, V, autocast=False):
    """Forward + backward; returns (logits fp32 numpy, loss float, dict name -> grad fp32 numpy)."""
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    if autocast:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, use_cache=False).logits
    else:
        logits = model(input_ids=ids, use_cache=False).logits
    loss = F.cross_entropy(logits.float().view(-1, V), targets.view(-1))
    loss.backward()
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.float().numpy() for n in names}
    return logits.detach().float().numpy(), float(loss.item()), grads


def compare(t, names, logits, loss, grads):
    g = {n: rel_err(grads[n], t["grad." + n]) for n in names}

    def worst(sel):
        n = max(sel, key=lambda k: g[k])
        return {"err": g[n], "name": n}

    norms = [n for n in names if n.endswith("norm.weight")]
    linear = [n for n in names if not n.endswith("norm.weight")]
    return {"logits_rel": rel_err(logits, t["logits"]), "loss_diff": abs(loss - float(t["loss"][0])),
            "grad_rel": g, "worst": worst(names), "worst_norm": worst(norms), "worst_linear": worst(linear)}


def one_fixture(path, verbose):
    import torch

    hdr, t = read_fixture(path)
    V = hdr["vocab_size"]
    ids = torch.from_numpy(np.array(t["input_ids"])).long()
    targets = torch.from_numpy(np.array(t["targets"])).long()
    model, names = build_model(hdr, t)

    # sanity: the fp32 model reproduces the fixture
    fp32 = compare(t, names, *run_step(model, names, ids, targets, V))
    if fp32["logits_rel"] > FP32_TOL or fp32["loss_diff"] > FP32_TOL or fp32["worst"]["err"] > FP32_TOL:
        sys.exit("error: %s: the fp32 model does not reproduce the fixture (logits rel %.2e, loss diff %.2e, "
                 "worst grad %s rel %.2e; tolerance %.0e)"
                 % (path, fp32["logits_rel"], fp32["loss_diff"], fp32["worst"]["name"], fp32["worst"]["err"],
                    FP32_TOL))

    # mixed precision: fp32 weights, bf16 autocast
    amp = compare(t, names, *run_step(model, names, ids, targets, V, autocast=True))

    # pure bf16: everything cast, RoPE inverse frequencies restored to fp32
    rot = model.model.rotary_emb
    inv_freq = rot.inv_freq.detach().clone()
    model.to(torch.bfloat16)
    rot.inv_freq = inv_freq
    if hasattr(rot, "original_inv_freq"):
        rot.original_inv_freq = inv_freq.clone()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    bf16 = compare(t, names, *run_step(model, names, ids, targets, V))

    res = {"path": path, "fp32": fp32, "bf16": bf16, "autocast": amp}
    if verbose:
        print("%s:" % path)
        print("  %-48s %10s %10s %10s" % ("grad rel err", "fp32", "bf16", "autocast"))
        for n in names:
            print("  %-48s %10.2e %10.2e %10.2e" % (n, fp32["grad_rel"][n], bf16["grad_rel"][n], amp["grad_rel"][n]))
    return res


def short(name):
    return name.replace("model.layers.", "L").replace("model.", "").replace(".weight", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("fixtures", nargs="*", help="fixture files (default: the three in tests/fixtures)")
    ap.add_argument("--json", help="write all figures to this JSON file")
    ap.add_argument("--verbose", action="store_true", help="print the error of every gradient")
    args = ap.parse_args()
    paths = [os.path.normpath(p) for p in (args.fixtures or DEFAULT_FIXTURES)]

    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit("error: bf16_baseline.py needs torch and transformers (%s)" % e)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("torch %s, transformers %s; error = max|got - ref| / max|ref| against the fp32 fixture"
          % (torch.__version__, transformers.__version__))

    results = [one_fixture(p, args.verbose) for p in paths]

    fmt = "%-14s %-9s %9s %9s %9s  %-28s %9s %9s"
    print(fmt % ("fixture", "variant", "logits", "loss", "worst", "(tensor)", "norm", "linear"))
    overall = {}
    for r in results:
        name = os.path.splitext(os.path.basename(r["path"]))[0]
        for v in ("fp32", "bf16", "autocast"):
            s = r[v]
            print(fmt % (name, v, "%.2e" % s["logits_rel"], "%.2e" % s["loss_diff"], "%.2e" % s["worst"]["err"],
                         short(s["worst"]["name"]), "%.2e" % s["worst_norm"]["err"],
                         "%.2e" % s["worst_linear"]["err"]))
            o = overall.setdefault(v, {"logits_rel": 0.0, "loss_diff": 0.0, "worst": -1.0, "worst_norm": -1.0,
                                       "worst_linear": -1.0})
            o["logits_rel"] = max(o["logits_rel"], s["logits_rel"])
            o["loss_diff"] = max(o["loss_diff"], s["loss_diff"])
            for k in ("worst", "worst_norm", "worst_linear"):
                if s[k]["err"] > o[k]:
                    o[k] = s[k]["err"]
                    o[k + "_at"] = "%s:%s" % (name, s[k]["name"])
    for v, o in overall.items():
        print("all fixtures, %-8s: logits %.2e, loss %.2e, worst grad %.2e (%s), norm %.2e, linear %.2e"
              % (v, o["logits_rel"], o["loss_diff"], o["worst"], o["worst_at"], o["worst_norm"], o["worst_linear"]))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"metric": "max|got - ref| / max|ref| (loss: |got - ref|)", "torch": torch.__version__,
                       "transformers": transformers.__version__, "fixtures": results, "overall": overall},
                      f, indent=1)
        print("wrote %s" % args.json)


if __name__ == "__main__":
    main()
