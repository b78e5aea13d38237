#!/usr/bin/env bash
# Train the same model on TinyShakespeare with full-rank AdamW and with Grass (every selection
# variant), then plot the loss curves into one PNG and write a markdown table of final
# validation losses and optimizer-state / gradient memory.
#
#   scripts/compare_optimizers.sh                      # defaults below, CPU build
#   CONFIG=60m STEPS=2000 BIN=./train_llama scripts/compare_optimizers.sh   # on a GPU
#
# Environment: CONFIG (d6), STEPS (300), B (8), T (256), RANK (48), K (50), LR_ADAMW ("1e-3 1e-2":
# one AdamW run per learning rate),
# LR_GRASS (1e-2), ALPHA (0.25), VARIANTS ("topr multinorm multinorm-nr uniform uniform-nr"),
# OUT (out/compare), BIN (./train_llama_cpu), DATA (data/tinyshakespeare), REUSE (1: keep runs
# that already finished in OUT and only run the missing ones), CONTROL_ALPHAS ("0.25 0.125";
# empty: none): full-rank controls grass-fullrank-a<alpha>, Grass with --rank full (each
# layer's whole selected dimension), top-r, and otherwise Grass's settings: full-rank Adam on
# every projected layer with Grass's learning-rate split (lr * alpha for projected layers, lr for
# embeddings, head and norms), so that the effect of the rank is measured apart from the
# learning rates. alpha * sqrt(RANK / width) gives the update the norm of a rank-RANK one
# (0.125 for the defaults: 0.25 * sqrt(48 / 192)).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-d6}; STEPS=${STEPS:-300}; B=${B:-8}; T=${T:-256}; RANK=${RANK:-48}; K=${K:-50}
LR_ADAMW=${LR_ADAMW:-"1e-3 1e-2"}; LR_GRASS=${LR_GRASS:-1e-2}; ALPHA=${ALPHA:-0.25}
VARIANTS=${VARIANTS:-"topr multinorm multinorm-nr uniform uniform-nr"}
CONTROL_ALPHAS=${CONTROL_ALPHAS-"0.25 0.125"}; OUT=${OUT:-out/compare}; BIN=${BIN:-./train_llama_cpu}; DATA=${DATA:-data/tinyshakespeare}
EVAL_EVERY=${EVAL_EVERY:-25}; EVAL_TOKENS=${EVAL_TOKENS:-32768}
[ -x "$BIN" ] || { echo "build $BIN first (make train_llama_cpu)"; exit 1; }
if ! ls $DATA/tinyshakespeare_train_*.bin >/dev/null 2>&1; then
  src=../shared/data/tinyshakespeare.txt
  if [ -f $src ]; then python3 dev/data/prepare.py --input $src --out-dir $DATA --name tinyshakespeare
  else python3 dev/data/prepare.py --dataset tinyshakespeare --out-dir $DATA --name tinyshakespeare; fi
fi
mkdir -p "$OUT"
COMMON=(-i "$DATA/tinyshakespeare_train_*.bin" -j "$DATA/tinyshakespeare_val_*.bin" -c $CONFIG -b $B -t $T
        -x $STEPS -v $EVAL_EVERY --eval-tokens $EVAL_TOKENS --log-every 25)
runs=()
run() {  # run NAME ARGS...
  local name=$1; shift
  echo "== $name"
  echo "$@" > "$OUT/$name.args"
  if [ "${REUSE:-0}" = 1 ] && [ -f "$OUT/$name/log.txt" ] && grep -q '^done' "$OUT/$name.out" 2>/dev/null; then
    echo "   (reusing the finished run in $OUT/$name)"
  else
    "$BIN" "${COMMON[@]}" -o "$OUT/$name" "$@" | tee "$OUT/$name.out" | grep -E "^step [0-9]+ \| val|^done" || true
  fi
  runs+=("$name")
}
for lr in $LR_ADAMW; do run adamw-lr$lr --optimizer adamw -l $lr; done
for v in $VARIANTS; do
  run grass-$v --optimizer grass --grass-select $v --rank $RANK --update-freq $K --grass-scale $ALPHA -l $LR_GRASS
done
for a in $CONTROL_ALPHAS; do
  run grass-fullrank-a$a --optimizer grass --grass-select topr --rank full --update-freq $K --grass-scale $a -l $LR_GRASS
done
logs=(); for r in "${runs[@]}"; do logs+=("$OUT/$r/log.txt"); done
python3 dev/plot_logs.py "${logs[@]}" --labels "$(IFS=,; echo "${runs[*]}")" -o "$OUT/loss.png" \
  --title "$CONFIG on TinyShakespeare: AdamW (lr $LR_ADAMW) vs Grass (rank $RANK, K $K, lr $LR_GRASS, alpha $ALPHA)" | tee "$OUT/summary.txt"
# memory figures from each run's plan (--plan-only; "  optimizer states   12.3 MiB" or "1.234 GiB")
mib_of() {  # mib_of FILE LABEL-REGEX: the figure on that plan line, in MiB (0 when absent)
  python3 - "$1" "$2" <<'PY'
import re, sys
for line in open(sys.argv[1]):
    if re.match(r"\s+" + sys.argv[2], line):
        m = re.search(r"([0-9.]+) (MiB|GiB)", line)
        print(f"{float(m.group(1)) * (1024 if m.group(2) == 'GiB' else 1):.1f}"); break
else:
    print("0.0")
PY
}
{
  echo "| run | final val loss | val ppl | optimizer states (MiB) | gradients, dense + Grass (MiB) |"
  echo "| --- | --- | --- | --- | --- |"
  for r in "${runs[@]}"; do
    fv=$(grep -o 'val_loss=[0-9.]*' "$OUT/$r/log.txt" | tail -1 | cut -d= -f2)
    "$BIN" "${COMMON[@]}" $(cat "$OUT/$r.args") --plan-only 1 > "$OUT/$r.plan" 2>&1
    st=$(mib_of "$OUT/$r.plan" 'optimizer states')
    gd=$(mib_of "$OUT/$r.plan" 'gradients \(dense\)')
    gg=$(mib_of "$OUT/$r.plan" 'gradients \(Grass\)')
    echo "| $r | $fv | $(python3 -c "import math; print(f'{math.exp($fv):.2f}')") | $st | $(python3 -c "print(f'{$gd + $gg:.1f}')") |"
  done
} | tee "$OUT/table.md"
echo "wrote $OUT/loss.png, $OUT/table.md"
