#!/usr/bin/env bash
# The paper's LLaMA pretraining recipe (GaLore's C4 benchmark, which Grass builds on), full-rank
# AdamW, Grass or GaLore, on one GPU or many (MPI + NCCL).
#
#   scripts/run_llama.sh 60m grass                 # one GPU
#   scripts/run_llama.sh 60m galore                # the GaLore baseline (same ranks, K, alpha, lr)
#   NGPU=8 scripts/run_llama.sh 1b adamw           # 8 GPUs on this node (mpirun -np 8)
#   HOSTFILE=hosts NGPU=16 scripts/run_llama.sh 7b grass   # two nodes of 8 (see scripts/multinode_mpirun.sh)
#
# Recipe (docs/GRASS.md): C4 en, sequences of 256, 512 sequences (131,072 tokens) per step,
# linear warmup over 10% of the steps then cosine to 0.1 x peak, no weight decay, no clipping
# (1.0 for 7b and 13b). Grass and GaLore: lr 0.01 (0.005 for 7b/13b), alpha 0.25, K = 200 (500 for
# 7b/13b), the ranks below (GaLore's paper: 128, 256, 256, 512, 1024; we use 1024 at 1b as Grass's
# recipe does). With clipping the fused update scales each step by the previous step's norm
# (docs/GRASS_IMPL.md).
# Every run accumulates and all-reduces its dense gradients in fp32 (--grad-dtype fp32), so that
# AdamW is not handicapped by bf16 gradients next to Grass's and GaLore's fp32 projected ones.
# Data: python3 dev/data/prepare.py --dataset c4 --out-dir data/c4 --name c4 --max-tokens ...
# Environment: DATA (data/c4), OUT (out/<size>_<opt>), NGPU (1), HOSTFILE, B (micro-batch per GPU),
# STEPS, RANK, SELECT (multinorm), BIN (./train_llama, or ./train_llama_cpu), EXTRA (more flags).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:?usage: run_llama.sh 60m|130m|350m|1b|7b|13b adamw|grass|galore}
OPT=${2:?usage: run_llama.sh SIZE adamw|grass|galore}
case $SIZE in
  60m)  steps=10000;  rank=128;  lr_g=0.01;  K=200; clip=0; b=128 ;;
  130m) steps=20000;  rank=256;  lr_g=0.01;  K=200; clip=0; b=64 ;;
  350m) steps=60000;  rank=256;  lr_g=0.01;  K=200; clip=0; b=64 ;;
  1b)   steps=100000; rank=1024; lr_g=0.01;  K=200; clip=0; b=32 ;;
  7b)   steps=150000; rank=1024; lr_g=0.005; K=500; clip=1.0; b=8 ;;
  13b)  steps=150000; rank=256;  lr_g=0.005; K=500; clip=1.0; b=2 ;;  # rank 256: fits 40 GB in bf16 (plan)
  *) echo "unknown size $SIZE (60m 130m 350m 1b 7b 13b)"; exit 1 ;;
esac
DATA=${DATA:-data/c4}; OUT=${OUT:-out/${SIZE}_$OPT}; NGPU=${NGPU:-1}; BIN=${BIN:-./train_llama}
B=${B:-$b}; STEPS=${STEPS:-$steps}; RANK=${RANK:-$rank}; SELECT=${SELECT:-multinorm}
ARGS=(-i "$DATA/c4_train_*.bin" -j "$DATA/c4_val_*.bin" -c $SIZE -b $B -t 256 -d 131072 -x $STEPS
      -v 1000 --eval-tokens 10000000 -n 5000 -s 5000 -e "$DATA/tokenizer.bin" -o "$OUT" -y 1 --weight-decay 0
      --grad-dtype fp32)  # every optimizer's dense gradients in fp32, as Grass's and GaLore's projected ones
if [ $OPT = grass ]; then
  ARGS+=(--optimizer grass --grass-select $SELECT --rank $RANK --update-freq $K --grass-scale 0.25 -l $lr_g)
  [ "$clip" != 0 ] && ARGS+=(--grad-clip $clip)
  # 13b on one 40 GB GPU: recompute activations and keep the Adam moments in bf16 (plan 29.4 GiB with
  # fp32 dense gradients, 28.8 without: --plan-only 1 of the bf16 build)
  [ $SIZE = 13b ] && ARGS+=(--recompute 1 --state-dtype bf16)
elif [ $OPT = galore ]; then
  ARGS+=(--optimizer galore --rank $RANK --update-freq $K --galore-scale 0.25 -l $lr_g)
  [ "$clip" != 0 ] && ARGS+=(--grad-clip $clip)
  [ $SIZE = 13b ] && ARGS+=(--recompute 1 --state-dtype bf16)
elif [ $OPT = adamw ]; then
  ARGS+=(--optimizer adamw -l 1e-3)
  [ "$clip" != 0 ] && ARGS+=(--grad-clip $clip)
else
  echo "unknown optimizer $OPT (adamw grass galore)"; exit 1
fi
ARGS+=(${EXTRA:-})
# several nodes: scripts/multinode_mpirun.sh builds the mpirun line (hostfile, rsh agent, network)
[ -n "${HOSTFILE:-}" ] && exec scripts/multinode_mpirun.sh -- $BIN "${ARGS[@]}"
if [ "$NGPU" -gt 1 ]; then
  launcher=(mpirun -np $NGPU --bind-to none)
  [ "$(id -u)" = 0 ] && launcher+=(--allow-run-as-root)
  exec "${launcher[@]}" $BIN "${ARGS[@]}"
fi
exec $BIN "${ARGS[@]}"
