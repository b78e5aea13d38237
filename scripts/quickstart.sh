#!/usr/bin/env bash
# The quick start, one command on a fresh machine: install what is missing (scripts/install_deps.sh:
# apt and pip, saying what and why), build the CPU trainer, prepare TinyShakespeare, train a small
# LLaMA, print a text sample before and after training, and plot the run (loss, tokens/s, memory).
#
#   scripts/quickstart.sh                      # AdamW, about 4 minutes on 2 cores (README)
#   OPTIMIZER=grass scripts/quickstart.sh      # the same with Grass
#   STEPS=2000 scripts/quickstart.sh           # a longer run (the training part grows with STEPS)
#   TOKENIZER=../shared/data/llama2_tokenizer.model scripts/quickstart.sh   # LLaMA-2's 32000 tokens
#
# Data: ../shared/data/tinyshakespeare.txt when present, else downloaded. By default a 4096-piece
# SentencePiece BPE tokenizer is trained on the training split (dev/data/prepare.py
# --train-tokenizer; seconds), which keeps the d6 model at 4.2M parameters so that it learns
# visibly in minutes; TOKENIZER names a SentencePiece model to use instead (the model then has
# that vocabulary: 20M parameters with LLaMA-2's, about 5x the FLOPs per token).
# Environment: STEPS (300), OPTIMIZER (adamw|grass|galore), OUT (out/quickstart_<opt>),
# TOKENIZER, B (8), T (128), OMP_NUM_THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-300}; OPTIMIZER=${OPTIMIZER:-adamw}; B=${B:-8}; T=${T:-128}
OUT=${OUT:-out/quickstart_$OPTIMIZER}
start=$(date +%s)
echo "== dependencies"
scripts/install_deps.sh run
echo "== build (make train_llama_cpu)"
make -s train_llama_cpu
if [ -n "${TOKENIZER:-}" ]; then
  DATA=data/quickstart_$(basename "$TOKENIZER" .model); TOK=(--tokenizer "$TOKENIZER")
else
  DATA=data/quickstart_bpe4096; TOK=(--train-tokenizer 4096)
fi
if ! ls $DATA/tinyshakespeare_train_*.bin >/dev/null 2>&1 || [ ! -f $DATA/tokenizer.bin ]; then
  echo "== data: TinyShakespeare -> $DATA"
  if [ -f ../shared/data/tinyshakespeare.txt ]; then SRC=(--input ../shared/data/tinyshakespeare.txt)
  else SRC=(--dataset tinyshakespeare); fi
  python3 dev/data/prepare.py "${SRC[@]}" --out-dir $DATA --name tinyshakespeare "${TOK[@]}"
fi
VOCAB=$(python3 -c "import struct,sys; print(struct.unpack('<8i', open(sys.argv[1],'rb').read(32))[2])" $DATA/tokenizer.bin)
case $OPTIMIZER in
  grass) OPT=(--optimizer grass --rank 0.25 --update-freq 50 --grass-scale 0.25 -l 1e-2) ;;
  galore) OPT=(--optimizer galore --rank 0.25 --update-freq 50 --galore-scale 0.25 -l 1e-2) ;;
  adamw) OPT=(--optimizer adamw -l 1e-2 --matrix-lr-scale 0.05) ;;
  *) echo "error: OPTIMIZER must be adamw, grass or galore (got '$OPTIMIZER')" >&2; exit 1 ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
echo "== train: d6, vocabulary $VOCAB, $STEPS steps of $B x $T tokens, $OPTIMIZER -> $OUT"
# -s $STEPS: a sample at step 0 (before training) and at the end
./train_llama_cpu -i "$DATA/tinyshakespeare_train_*.bin" -j "$DATA/tinyshakespeare_val_*.bin" -e $DATA/tokenizer.bin \
  -c d6 --vocab "$VOCAB" -b "$B" -t "$T" -x "$STEPS" -v 50 --eval-tokens 16384 -s "$STEPS" -g 96 --log-every 25 \
  -o "$OUT" "${OPT[@]}"
echo "== plot"
python3 dev/plot_logs.py "$OUT/log.txt" -o "$OUT/loss.png" --title "quick start: $OPTIMIZER, d6, TinyShakespeare"
echo "quick start done in $(( $(date +%s) - start )) s: the log is $OUT/log.txt, the plot $OUT/loss.png"
