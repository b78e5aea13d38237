#!/usr/bin/env python3
"""
Our --optimizer galore against the published GaLore: galore-torch 1.0's GaLoreAdamW (PyPI), on
transformers' LlamaForCausalLM, CPU, fp32. Run with plain python3 from anywhere, after
`make train_llama_cpu`:

    python3 dev/test_galore_torch.py [--flags "EXTRA TRAINER FLAGS"]

A small LLaMA (q, k, v, o square; gate, up taller than wide; down wider than tall) is made at random
in transformers, saved, and imported with dev/import_hf.py; train_llama_cpu trains it with --init-from
for 12 steps with GaLore (rank 8, K 3: projectors at steps 0, 3, 6, 9; constant lr, no warmup,
Adam eps 1e-6 as galore_torch's default). The same model is trained in torch with GaLoreAdamW:
the seven matrix types in a GaLore group (rank, update_proj_gap, scale = --galore-scale,
proj_type 'std'), embeddings, norms and head in a plain group of the same optimizer, on the same
batches (dataloader.h's shuffle, written here from docs/DATALOADER.md). One thing is aligned on
the torch side: the sign of each singular vector, which the SVD leaves open, follows our rule (the
entry of largest magnitude positive; docs/GRASS_IMPL.md). The per-step losses must agree within
1e-4 relative.

--flags adds trainer flags, to see the test fail: "--galore-side rows" (square matrices from their
rows) or "--adam-eps-style corrected" (the other eps convention) must not match.

galore_torch's __init__ imports bitsandbytes (for its 8-bit optimizer); the modules used here are
loaded from the package's folder without it. Prints "N passed, N failed" ("skipped: REASON" when
torch, transformers or galore_torch is missing, or the trainer is not built) and exits non-zero on
a failure.
"""
import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import types

import numpy as np

from checks import Checks

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRAINER = os.path.join(ROOT, "train_llama_cpu")
IMPORT = os.path.join(HERE, "import_hf.py")

VOCAB, DIM, FFN, LAYERS, HEADS = 96, 32, 64, 2, 4
B, T, N_SAMPLES, STEPS = 4, 16, 40, 12       # 10 batches an epoch: step 10 starts the second epoch
RANK, GAP, LR, SCALE, EPS, SEED = 8, 3, 1e-2, 0.25, 1e-6, 5
TOL = 1e-4

suite = Checks("test_galore_torch", quiet=True)
check = suite.check


def done(skip=None):
    if skip:
        suite.skip(skip)
    suite.finish()


def load_galore_adamw():
    """galore_torch's AdamW and GaLoreProjector, loaded without the package's __init__ (which imports
    bitsandbytes for the 8-bit optimizer this test does not use). None when the package is absent."""
    if "galore_torch" not in sys.modules:
        spec = importlib.util.find_spec("galore_torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        pkg = types.ModuleType("galore_torch")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["galore_torch"] = pkg
    import galore_torch.adamw as adamw_mod
    import galore_torch.galore_projector as proj_mod
    return adamw_mod.AdamW, proj_mod.GaLoreProjector


# ---- the data: one shard, and dataloader.h's shuffled order -------------------------------------
MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def epoch_order(seed, epoch, n):
    """docs/DATALOADER.md: Fisher-Yates from state = seed XOR splitmix64(epoch)"""
    _, e = splitmix64(epoch)
    state = seed ^ e
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        m = i + 1
        floor = (1 << 64) % m
        while True:
            state, x = splitmix64(state)
            if x >= floor:
                break
        j = x % m
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def batches(tokens, seed, steps):
    """the samples of each step: B windows of T+1 tokens, window j starting at token j*T"""
    per_epoch = N_SAMPLES // B
    out = []
    for s in range(steps):
        epoch, pos = divmod(s, per_epoch)
        order = epoch_order(seed, epoch, N_SAMPLES)
        w = np.stack([tokens[j * T:j * T + T + 1] for j in order[pos * B:pos * B + B]])
        out.append(w)
    return out


def write_shard(path, tokens):
    header = np.zeros(8, dtype=np.int64)
    header[:5] = [20261101, 1, 2, len(tokens), VOCAB]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


# ---- the two runs -----------------------------------------------------------------------------
def run_ours(tmp, init, extra):
    out = os.path.join(tmp, "out")
    cmd = [TRAINER, "-i", os.path.join(tmp, "gt_train_*.bin"), "-j", "none", "--init-from", init,
           "-b", str(B), "-t", str(T), "-x", str(STEPS), "-v", "0", "-o", out, "--seed", str(SEED),
           "-l", str(LR), "--warmup", "0", "--min-lr-ratio", "1", "--adam-eps", str(EPS),
           "--optimizer", "galore", "--rank", str(RANK), "--update-freq", str(GAP), "--galore-scale", str(SCALE)] + extra
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if not check(r.returncode == 0, "train_llama_cpu failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd),
                                                                                  (r.stdout + r.stderr)[-3000:])):
        return None
    losses = {}
    for line in open(os.path.join(out, "log.txt")):
        m = re.match(r"step=(\d+) loss=(\S+)", line)
        if m:   # numbered from 1: the loss of step 0 is on the line step=1
            losses[int(m.group(1)) - 1] = float(m.group(2))
    return [losses.get(s) for s in range(STEPS)]


def sign_rule(vectors, along_rows):
    """our rule (kernels_cpu.h galore_signed_rows): each singular vector's entry of largest magnitude
    (the lowest index among equals) is made positive. along_rows: the vectors are rows, else columns"""
    import torch
    v = vectors if along_rows else vectors.t()
    idx = torch.argmax(v.abs(), dim=1)   # the first index of the maximum
    sign = torch.where(v.gather(1, idx[:, None]) < 0, -1.0, 1.0).to(v.dtype)
    v = v * sign
    return v if along_rows else v.t()


def run_torch(model_dir, steps_windows, align_signs):
    import torch
    from transformers import LlamaForCausalLM
    AdamW, Projector = load_galore_adamw()
    original = Projector.get_orthogonal_matrix

    def signed(self, weights, rank, type):
        m = original(self, weights, rank, type)
        if type == "right":      # rows of Vh: the projector of the columns
            return sign_rule(m, True)
        if type == "left":       # columns of U: the projector of the rows
            return sign_rule(m, False)
        raise ValueError("test_galore_torch: projector type %r is not the 'std' projector's" % type)

    if align_signs:
        Projector.get_orthogonal_matrix = signed
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager").float()
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    galore_params = [p for n, p in model.named_parameters() if any(k in n for k in names)]
    other_params = [p for n, p in model.named_parameters() if not any(k in n for k in names)]
    check(len(galore_params) == 7 * LAYERS, "torch: %d GaLore matrices, expected %d" % (len(galore_params), 7 * LAYERS))
    opt = AdamW([{"params": other_params},
                 {"params": galore_params, "rank": RANK, "update_proj_gap": GAP, "scale": SCALE, "proj_type": "std"}],
                lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=0.0, no_deprecation_warning=True)
    losses = []
    for w in steps_windows:
        x = torch.from_numpy(w.astype(np.int64))
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    Projector.get_orthogonal_matrix = original
    return losses


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flags", default="", help="extra train_llama_cpu flags (to see the test fail)")
    p.add_argument("--svd-signs", action="store_true",
                   help="leave torch's projectors with the signs its SVD returns (to see the test fail)")
    args = p.parse_args()
    try:
        import torch  # noqa: F401
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        done("torch and transformers are needed (%s)" % e)
    if load_galore_adamw() is None:
        done("galore_torch is not installed (pip install galore-torch==1.0; scripts/install_deps.sh test)")
    if not os.path.exists(TRAINER):
        done("train_llama_cpu is not built (make train_llama_cpu)")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        import torch
        torch.manual_seed(SEED)
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS,
                          num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=64,
                          rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.05)
        model_dir = os.path.join(tmp, "hf")
        LlamaForCausalLM(cfg).float().save_pretrained(model_dir)
        init = os.path.join(tmp, "init.bin")
        r = subprocess.run([sys.executable, IMPORT, model_dir, init], capture_output=True, text=True)
        if not check(r.returncode == 0, "dev/import_hf.py failed: %s" % (r.stdout + r.stderr)):
            done()
        rng = np.random.default_rng(SEED)
        # text with something to learn: each token mostly follows from the one before
        tokens = np.zeros(N_SAMPLES * T + 1, dtype=np.int64)
        for i in range(1, len(tokens)):
            tokens[i] = (7 * tokens[i - 1] + 3) % VOCAB if rng.random() < 0.8 else rng.integers(0, VOCAB)
        write_shard(os.path.join(tmp, "gt_train_000000.bin"), tokens)
        ours = run_ours(tmp, init, shlex.split(args.flags))
        if ours is None:
            done()
        theirs = run_torch(model_dir, batches(tokens, SEED, STEPS), not args.svd_signs)
    check(all(x is not None for x in ours), "train_llama_cpu's log lacks steps: %s" % ours)
    if suite.failed:
        done()
    rel = [abs(a - b) / abs(b) for a, b in zip(ours, theirs)]
    print("step  train_llama_cpu  galore_torch   rel diff")
    for s in range(STEPS):
        print("%4d  %15.6f  %12.6f   %.2e%s" % (s, ours[s], theirs[s], rel[s], "  (new projectors)" if s % GAP == 0 else ""))
    worst = max(rel)
    print("max relative loss difference over %d steps: %.3g (tolerance %g)%s" %
          (STEPS, worst, TOL, ("; trainer flags: " + args.flags if args.flags else "") +
           ("; torch's SVD signs" if args.svd_signs else "")))
    check(rel[0] < 1e-5, "step 0 (before any update) differs by %.3g: the model or the batch is not the same" % rel[0])
    check(worst < TOL, "GaLore's losses differ from galore_torch's by up to %.3g relative (step %d), over the "
          "tolerance %g: --optimizer galore is not the published GaLore" % (worst, rel.index(worst), TOL))
    check(theirs[-1] < theirs[0], "the loss falls over the run (%.4f -> %.4f)" % (theirs[0], theirs[-1]))
    done()


if __name__ == "__main__":
    main()
