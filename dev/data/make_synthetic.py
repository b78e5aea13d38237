#!/usr/bin/env python3
"""Write small synthetic train/val token shards (docs/FORMATS.md) for tests and smoke runs.

The tokens come from a fixed random first-order Markov chain with four successors per token
(probabilities .55 .25 .15 .05, entropy 1.1 nats), so a model can learn them: the loss of a
working trainer falls from log(vocab) towards 1.1.
No tokenizer is involved; every token id is < --vocab.

    python3 dev/data/make_synthetic.py --out-dir /tmp/syn --vocab 256 --train-tokens 200000
"""
import argparse
import os

import numpy as np

SHARD_MAGIC = 20261101


def write_shard(path, tokens, vocab):
    tokens = np.asarray(tokens)
    dtype = np.uint16 if vocab <= 65535 else np.uint32
    header = np.zeros(8, dtype=np.int64)
    header[:5] = [SHARD_MAGIC, 1, np.dtype(dtype).itemsize, len(tokens), vocab]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(dtype).tobytes())
    os.replace(tmp, path)


def markov_tokens(n, vocab, seed):
    rng = np.random.default_rng(seed)
    chain = np.random.default_rng(12345)  # the grammar is the same for every split
    succ = chain.integers(0, vocab, size=(vocab, 4))
    probs = np.array([0.55, 0.25, 0.15, 0.05])
    out = np.empty(n, dtype=np.int64)
    b = 1
    choices = rng.choice(4, size=n, p=probs)
    for i in range(n):
        b = succ[b, choices[i]]
        out[i] = b
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", default="synthetic")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--train-tokens", type=int, default=200_000)
    p.add_argument("--val-tokens", type=int, default=20_000)
    p.add_argument("--train-shards", type=int, default=2)
    args = p.parse_args()
    if args.vocab < 8:
        p.error("--vocab must be >= 8")
    os.makedirs(args.out_dir, exist_ok=True)
    train = markov_tokens(args.train_tokens, args.vocab, seed=1)
    val = markov_tokens(args.val_tokens, args.vocab, seed=2)
    for k, part in enumerate(np.array_split(train, args.train_shards)):
        write_shard(os.path.join(args.out_dir, f"{args.name}_train_{k:06d}.bin"), part, args.vocab)
    write_shard(os.path.join(args.out_dir, f"{args.name}_val_000000.bin"), val, args.vocab)
    print(f"wrote {args.train_shards} train shard(s) ({len(train)} tokens) and 1 val shard ({len(val)} tokens) "
          f"to {args.out_dir}, vocab {args.vocab}")


if __name__ == "__main__":
    main()
