#!/usr/bin/env python3
"""Time one training step of the same LLaMA on the CPU: grass.c's train_llama_cpu against
PyTorch (transformers' LlamaForCausalLM + torch.optim.AdamW, fp32, the same thread count).
Prints both median step times and the ratio. A benchmark, not a test.

    make train_llama_cpu
    python3 dev/bench_cpu_vs_torch.py --config d6 --batch 8 --seq 256 --threads 2
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIGS = {  # name: (dim, ffn, layers, heads, kv_heads); vocab 32000, as llama_config.h
    "tiny": (64, 176, 2, 4, 2), "d6": (192, 512, 6, 6, 6), "20m": (256, 688, 4, 4, 4),
    "60m": (512, 1376, 8, 8, 8), "130m": (768, 2048, 12, 12, 12),
}


def write_shard(path, tokens, vocab):
    header = np.zeros(8, dtype=np.int64)
    header[:5] = [20261101, 1, 2, len(tokens), vocab]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def bench_grass(args, root):
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        write_shard(os.path.join(tmp, "bench_train_000000.bin"),
                    rng.integers(0, 32000, size=args.batch * (args.seq + 1) * (args.steps + 2) + 1), 32000)
        cmd = [os.path.join(root, "train_llama_cpu"), "-i", os.path.join(tmp, "bench_train_*.bin"), "-j", "none",
               "-c", args.config, "-b", str(args.batch), "-t", str(args.seq), "-x", str(args.steps), "-v", "0",
               "-o", os.path.join(tmp, "out"), "-l", "1e-4", "--warmup", "0"]
        if args.optimizer == "grass":
            cmd += ["--optimizer", "grass", "--rank", str(args.rank), "--update-freq", "1000"]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        times = [float(m.group(1)) / 1000 for m in
                 re.finditer(r"dt_ms=([0-9.]+)", open(os.path.join(tmp, "out", "log.txt")).read())]
    return times[1:]  # the first step warms caches (and holds Grass's first selection)


def bench_torch(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.set_num_threads(args.threads)
    d, f, L, h, kv = CONFIGS[args.config]
    cfg = LlamaConfig(vocab_size=32000, hidden_size=d, intermediate_size=f, num_hidden_layers=L,
                      num_attention_heads=h, num_key_value_heads=kv, max_position_embeddings=max(1024, args.seq),
                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float()
    try:
        model.config._attn_implementation = "sdpa"
    except Exception:
        pass
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x = torch.randint(0, 32000, (args.batch, args.seq + 1))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 32000), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times[1:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="d6", choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "grass"])
    p.add_argument("--rank", type=int, default=32)
    args = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "train_llama_cpu")):
        sys.exit("build the trainer first: make train_llama_cpu")
    g = statistics.median(bench_grass(args, root))
    try:
        t = statistics.median(bench_torch(args))
    except ImportError as e:
        sys.exit(f"PyTorch benchmark needs torch and transformers ({e}); grass.c step: {g*1000:.1f} ms")
    tokens = args.batch * args.seq
    print(f"config {args.config}, B={args.batch}, T={args.seq}, {args.threads} threads, fp32, {args.optimizer}")
    print(f"grass.c  train_llama_cpu : {g*1000:9.1f} ms/step  {tokens/g:9.0f} tok/s")
    print(f"PyTorch  HF + AdamW      : {t*1000:9.1f} ms/step  {tokens/t:9.0f} tok/s")
    print(f"speed ratio (PyTorch time / grass.c time): {t/g:.2f}x")


if __name__ == "__main__":
    main()
