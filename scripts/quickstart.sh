#!/usr/bin/env bash
# Quick start on the CPU: build, prepare TinyShakespeare (from ../shared/data or the
# internet) with the LLaMA-2 tokenizer, train a small LLaMA, print samples, plot the loss.
#
#   scripts/run_tinyshakespeare_cpu.sh                     # AdamW, config d6, 300 steps
#   OPTIMIZER=grass scripts/run_tinyshakespeare_cpu.sh     # the same with Grass
#
# Environment: CONFIG (d6), STEPS (300), OPTIMIZER (adamw|grass), OUT (out/tinyshakespeare_<opt>),
# TOKENIZER (a SentencePiece .model; default ../shared/data/llama2_tokenizer.model).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-d6}; STEPS=${STEPS:-300}; OPTIMIZER=${OPTIMIZER:-adamw}
OUT=${OUT:-out/tinyshakespeare_$OPTIMIZER}
DATA=data/tinyshakespeare
make -s train_llama_cpu
if ! ls $DATA/tinyshakespeare_train_*.bin >/dev/null 2>&1 || [ ! -f $DATA/tokenizer.bin ]; then
  tok=()
  [ -n "${TOKENIZER:-}" ] && tok=(--tokenizer "$TOKENIZER")
  if [ -f ../shared/data/tinyshakespeare.txt ]; then
    python3 dev/data/prepare.py --input ../shared/data/tinyshakespeare.txt --out-dir $DATA --name tinyshakespeare "${tok[@]}"
  else
    python3 dev/data/prepare.py --dataset tinyshakespeare --out-dir $DATA --name tinyshakespeare "${tok[@]}"
  fi
fi
if [ "$OPTIMIZER" = grass ]; then OPT=(--optimizer grass --rank 48 --update-freq 50 -l 1e-2)
else OPT=(--optimizer adamw -l 1e-3); fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
./train_llama_cpu -i "$DATA/tinyshakespeare_train_*.bin" -j "$DATA/tinyshakespeare_val_*.bin" -e $DATA/tokenizer.bin \
  -c $CONFIG -b 8 -t 256 -x $STEPS -v 50 -s 100 -g 64 -o "$OUT" "${OPT[@]}"
python3 dev/plot_logs.py "$OUT/log.txt" -o "$OUT/loss.png"
