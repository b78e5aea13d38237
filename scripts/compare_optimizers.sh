#!/usr/bin/env bash
# The optimizer study: Grass vs full-rank AdamW vs GaLore, on two corpora and two model sizes,
# sized for a CPU (one core per run). One command runs it all; it is resumable and can run a part.
#
#   make train_llama_cpu
#   scripts/compare_optimizers.sh                   # everything (hours; rerun it to continue)
#   DRY=1 scripts/compare_optimizers.sh             # list the runs, their state, an estimated time
#   CORPORA=kjv SIZES=d6 ONLY=grass-topr scripts/compare_optimizers.sh    # a part
#   python3 dev/study_table.py                      # tables and figures again (the script does it at the end)
#
# Cells: every corpus in CORPORA x every size in SIZES. A corpus is data/study/<corpus>
# (DATA_ROOT), made on demand with dev/data/prepare.py --train-tokenizer $VOCAB
# (tinyshakespeare from ../shared/data/tinyshakespeare.txt or downloaded; kjv from the `bible`
# program, apt-get install bible-kjv; docs/DATA.md, "Study corpora"). Sizes:
#   d6    -c d6 --vocab 4096                                                 (dim 192, 6 layers)
#   w384  -c d6 --vocab 4096 --dim 384 --ffn 1024 --heads 6 --layers 4
# Runs of a cell, seed 1 first (phase 1, every cell), then seeds SEEDS (phase 2) for the
# headline rows: the best AdamW scale, the best GaLore alpha, the best top-r alpha and the best
# multinorm upscale (lowest final val loss at seed 1 in that cell; dev/study_table.py --best):
#   adamw-s<S>                 --optimizer adamw -l $LR --matrix-lr-scale S     for S in ADAMW_SCALES
#   galore-a<A>                --optimizer galore --rank $RANK --update-freq $K --galore-scale A  for A in GALORE_ALPHAS
#   grass-topr-a<A>            --optimizer grass --grass-select topr --rank $RANK --update-freq $K
#                              --grass-scale A                                  for A in TOPR_ALPHAS
#   grass-multinorm-a<A>-up<U> ... --grass-select multinorm --grass-scale A --grass-upscale U, U in UPSCALES,
#                              A in MULTINORM_ALPHAS (default: GRASS_ALPHA alone; w384 two)
#   grass-multinorm-nr-a<A>-up<U>, grass-uniform-a<A>-up<U>, grass-uniform-nr-a<A>-up<U>   at U=$UPSCALE
#   <any Grass name>-keep      the same with --grass-refresh-state keep, for keep in REFRESH_STATES
#                              (the other Grass names run reset; each state has its own best in phase 2)
#   galore-a<A>-reset          GaLore with --galore-refresh-state reset (GaLore keeps its moments by default)
# LR is the peak lr of the parameters that are not projected (embeddings, head, norms) in every
# run; the projected matrices (q,k,v,o,gate,up,down) take LR * scale (AdamW: --matrix-lr-scale;
# Grass, GaLore: alpha). Every run: -b $B -t $T -x $STEPS, the trainer's warmup (10%), val every
# EVAL_EVERY steps on EVAL_TOKENS tokens, --seed N, and --grad-dtype fp32 when the binary has it.
# Flags the binary lacks are detected from `$BIN -h`: without --matrix-lr-scale the AdamW runs
# are skipped (one lr for every parameter would not be the same baseline), without 'galore' the
# GaLore runs, each with a printed note; everything else still runs.
#
# Output: $OUT/<corpus>-<size>/<run>-seed<N>/ with log.txt (the trainer's), train.out (its
# stdout and stderr), args.txt, plan.txt (--plan-only 1: the memory figures), status (done,
# diverged, failed <rc>), segments.txt (start step, end step, seconds, exit code per
# invocation); $OUT/settings.txt; then dev/study_table.py writes $OUT/<cell>/table.md,
# $OUT/<cell>/val_loss.png and $OUT/study.md.
#
# Resuming: a run whose log.txt has the validation at step $STEPS is done and skipped. Every
# run checkpoints each CKPT_EVERY steps and starts with -y 1, so an interrupted one continues
# from its last checkpoint (or starts afresh when it has none). A run directory whose args.txt
# differs from this invocation's arguments is left alone with a warning (use another OUT).
# A run that diverged (NaN/inf loss) is not retried (RETRY=1 retries it); one that failed
# otherwise is tried again. Ctrl-C (or kill) stops the runs in flight; rerun to continue.
# Finished runs' checkpoints are deleted unless KEEP_CKPT=1 (then the last one is kept).
#
# Environment (defaults): BIN (./train_llama_cpu), OUT (out/study), DATA_ROOT (data/study),
# CORPORA ("tinyshakespeare kjv"), SIZES ("d6 w384"), VOCAB (4096), B (8), T (128),
# STEPS (150), EVAL_EVERY (25), EVAL_TOKENS (16384), K (50), RANK (0.25: a fraction of the
# selected dimension), LR (1e-2), ADAMW_SCALES ("1e-06 0.00625 0.0125 0.025 0.05 0.1 0.25 0.5":
# 1e-06 is a control, the projected matrices all but frozen, which measures what training them
# adds at all; the KJV d6 cell kept putting AdamW's optimum at the grid's low edge, so it reaches
# below), GALORE_ALPHAS ("0.03125 0.0625 0.125 0.25"; GALORE_ALPHA=A: that one only),
# TOPR_ALPHAS ("0.015625 0.03125 0.0625 0.125 0.25 0.5 1"), GRASS_ALPHA (0.0625: the other
# variants run at top-r's best alpha of the first cells; with the `mean` rule their average step
# is top-r's at the same alpha, so the variants differ only in which rows they pick),
# MULTINORM_ALPHAS ("$GRASS_ALPHA"), UPSCALES ("paper one mean"), UPSCALE (mean),
# SEEDS ("2 3"), JOBS (1; 2 allowed: runs at a time, one thread each), OMP_NUM_THREADS (1 per
# run), CKPT_EVERY (25), ONLY (a regex on "<cell>/<run>-seed<N>"), DRY (1: list only),
# KEEP_CKPT (0), RETRY (0), REFRESH_STATES ("reset"; "reset keep" runs Grass both ways), PRESET
# (moments | horizon: see below).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# Presets (PRESET=...): the extensions of the study in docs/GRASS_IMPL.md, "Moments at a refresh"
# and "Horizon"; each only fills in what the environment leaves unset (a grid set empty, e.g.
# W384_GALORE_ALPHAS=, stays empty: that family is not run).
#   moments   both w384 cells on short grids around the main study's optima: AdamW (with the frozen
#             control), GaLore, and Grass top-r and multinorm with reset and with keep, each state
#             on the same alphas; seeds 2 3 for each family's (and each state's) best
#   horizon   KJV w384, 600 steps, K 100, validation every 50 steps: AdamW, GaLore (as published),
#             Grass multinorm and top-r at their 150-step best setting of the moments study, at half
#             of it and at 2, 4 and 8 times it (seed 1), then seeds 2 3 for the best; REFRESH_STATES
#             picks Grass's refresh state (set it to the moments study's winner)
case ${PRESET:-} in
  "") ;;
  moments)
    : "${OUT:=out/study}" "${SIZES:=w384}" "${REFRESH_STATES:=reset keep}"
    : "${W384_ADAMW_SCALES=1e-06 0.00625 0.0125}" "${W384_GALORE_ALPHAS=0.015625 0.03125 0.0625}"
    : "${W384_TOPR_ALPHAS=0.00390625 0.0078125 0.015625 0.03125}"
    : "${W384_MULTINORM_ALPHAS=0.0078125 0.015625 0.03125 0.0625}" ;;
  horizon)
    : "${OUT:=out/study600}" "${CORPORA:=kjv}" "${SIZES:=w384}" "${STEPS:=600}" "${K:=100}"
    : "${EVAL_EVERY:=50}" "${CKPT_EVERY:=100}" "${REFRESH_STATES:=reset}"
    : "${W384_ADAMW_SCALES=0.00625 0.003125 0.0125 0.025 0.05}"
    : "${W384_GALORE_ALPHAS=0.015625 0.0078125 0.03125 0.0625 0.125}"
    : "${W384_TOPR_ALPHAS=0.015625 0.0078125 0.03125 0.0625 0.125}"
    : "${W384_MULTINORM_ALPHAS=0.015625 0.0078125 0.03125 0.0625 0.125}" ;;
  *) echo "compare_optimizers.sh: unknown PRESET '$PRESET' (moments | horizon)" >&2; exit 1 ;;
esac
BIN=${BIN:-./train_llama_cpu}; OUT=${OUT:-out/study}; DATA_ROOT=${DATA_ROOT:-data/study}
CORPORA=${CORPORA:-"tinyshakespeare kjv"}; SIZES=${SIZES:-"d6 w384"}; VOCAB=${VOCAB:-4096}
B=${B:-8}; T=${T:-128}; STEPS=${STEPS:-150}; EVAL_EVERY=${EVAL_EVERY:-25}; EVAL_TOKENS=${EVAL_TOKENS:-16384}
K=${K:-50}; RANK=${RANK:-0.25}; LR=${LR:-1e-2}
GRASS_ALPHA=${GRASS_ALPHA:-0.0625}; UPSCALE=${UPSCALE:-mean}; SEEDS=${SEEDS-"2 3"}
REFRESH_STATES=${REFRESH_STATES:-reset}
# The grids of a size (set_grid SIZE): <SIZE>_ADAMW_SCALES (e.g. W384_ADAMW_SCALES) first, then
# ADAMW_SCALES when it is set, then the size's default; the same for GALORE_ALPHAS, TOPR_ALPHAS,
# UPSCALES and VARIANTS. w384 runs cost about 2.5x a d6 run (5 min with 2 threads), so its
# default grids are coarser: factor-4 steps around the d6 optima (AdamW also at 0.0125: at seed 1
# on TinyShakespeare its 0.00625 and 0.025 came out within 0.01 of each other, so the optimum lies
# between them), top-r also at 0.0078125 and 0.001953125 (0.03125, then 0.0078125, the lowest
# setting, came out best on TinyShakespeare), multinorm at the default upscale only, no other variants (at d6 they lay within
# seed noise of each other); multinorm also at 0.015625 and 0.00390625 (top-r's best alpha at w384
# came out 4-16x below d6's, so multinorm's d6 alpha alone would not be a fair setting).
grid_default() {  # grid_default SIZE NAME
  case $1/$2 in
    w384/ADAMW_SCALES) echo "1e-06 0.00625 0.0125 0.025 0.1" ;;
    w384/GALORE_ALPHAS) echo "0.03125 0.125" ;;
    w384/TOPR_ALPHAS) echo "0.001953125 0.0078125 0.03125 0.125" ;;
    w384/UPSCALES) echo "mean" ;;
    w384/MULTINORM_ALPHAS) echo "0.00390625 0.015625 0.0625" ;;
    w384/VARIANTS) echo "" ;;
    */ADAMW_SCALES) echo "1e-06 0.00625 0.0125 0.025 0.05 0.1 0.25 0.5" ;;
    */GALORE_ALPHAS) echo "0.03125 0.0625 0.125 0.25" ;;
    */TOPR_ALPHAS) echo "0.015625 0.03125 0.0625 0.125 0.25 0.5 1" ;;
    */UPSCALES) echo "paper one mean" ;;
    */VARIANTS) echo "multinorm-nr uniform uniform-nr" ;;
    */MULTINORM_ALPHAS) echo "$GRASS_ALPHA" ;;
  esac
}
declare -A GLOBAL_GRID  # the grids set in the environment (for every size)
[ -n "${GALORE_ALPHA+x}" ] && GALORE_ALPHAS=$GALORE_ALPHA
for g in ADAMW_SCALES GALORE_ALPHAS TOPR_ALPHAS UPSCALES VARIANTS MULTINORM_ALPHAS; do
  [ -n "${!g+x}" ] && GLOBAL_GRID[$g]=${!g}
done
set_grid() {  # set_grid SIZE: ADAMW_SCALES GALORE_ALPHAS TOPR_ALPHAS UPSCALES VARIANTS MULTINORM_ALPHAS for that size
  local z=$1 g sv
  for g in ADAMW_SCALES GALORE_ALPHAS TOPR_ALPHAS UPSCALES VARIANTS MULTINORM_ALPHAS; do
    sv="${z^^}_$g"
    if [ -n "${!sv+x}" ]; then printf -v "$g" '%s' "${!sv}"
    elif [ -n "${GLOBAL_GRID[$g]+x}" ]; then printf -v "$g" '%s' "${GLOBAL_GRID[$g]}"
    else printf -v "$g" '%s' "$(grid_default "$z" $g)"; fi
  done
}
JOBS=${JOBS:-1}; THREADS=${OMP_NUM_THREADS:-1}; CKPT_EVERY=${CKPT_EVERY:-25}
ONLY=${ONLY:-}; DRY=${DRY:-0}; KEEP_CKPT=${KEEP_CKPT:-0}; RETRY=${RETRY:-0}
PY=${PYTHON:-python3}

die() { echo "compare_optimizers.sh: $*" >&2; exit 1; }
note() { echo "note: $*"; }
[ -x "$BIN" ] || die "$BIN not found: build it first (make train_llama_cpu) or set BIN"
case $JOBS in 1|2) ;; *) die "JOBS must be 1 or 2 (got $JOBS): the machine has 2 cores" ;; esac
HELP=$("$BIN" -h 2>&1)
has() { grep -q -- "$1" <<< "$HELP"; }

# ---- what the binary supports
EXTRA=()
if has --grad-dtype; then EXTRA+=(--grad-dtype fp32); fi
HAVE_ADAMW=1; HAVE_GALORE=1; HAVE_UPSCALE=1
if ! has --matrix-lr-scale; then
  HAVE_ADAMW=0
  echo "WARNING: $BIN has no --matrix-lr-scale: the AdamW runs are skipped (AdamW with one lr for"
  echo "         every parameter would not be the baseline the study compares against; rebuild once it lands)"
fi
if ! has galore; then HAVE_GALORE=0; note "$BIN -h has no 'galore': the GaLore runs are skipped"
elif ! has --galore-scale; then HAVE_GALORE=0; note "$BIN -h has no --galore-scale: the GaLore runs are skipped"; fi
if ! has --grass-upscale; then HAVE_UPSCALE=0; note "$BIN -h has no --grass-upscale: the multinorm/uniform runs are skipped"; fi
HAVE_KEEP=1
if ! has --grass-refresh-state; then
  HAVE_KEEP=0
  case " $REFRESH_STATES " in *" keep "*) note "$BIN -h has no --grass-refresh-state: the -keep runs are skipped" ;; esac
fi

size_args() {  # the model flags of a size
  case $1 in
    d6) echo "-c d6 --vocab $VOCAB" ;;
    w384) echo "-c d6 --vocab $VOCAB --dim 384 --ffn 1024 --heads 6 --layers 4" ;;
    *) die "unknown size '$1' (known: d6 w384)" ;;
  esac
}
for z in $SIZES; do size_args "$z" > /dev/null; done

# Grass's moments at a refresh: a name ending in -keep runs --grass-refresh-state keep; any other
# Grass name runs reset, said explicitly where the binary has the flag (norm_args drops that pair,
# so runs of a binary from before the flag, which always reset, compare equal)
refresh_state_args() {  # refresh_state_args SUFFIX ("" or -keep)
  if [ "$1" = -keep ]; then echo "--grass-refresh-state keep"
  elif [ $HAVE_KEEP = 1 ]; then echo "--grass-refresh-state reset"; fi
}
# run name -> optimizer flags (one place: the names encode everything that varies)
run_args() {
  local n=$1 re_num='([0-9.eE+-]+)'
  if [[ $n =~ ^adamw-s$re_num$ ]]; then
    echo "--optimizer adamw -l $LR --matrix-lr-scale ${BASH_REMATCH[1]}"
  elif [[ $n =~ ^galore-a$re_num$ ]]; then
    echo "--optimizer galore -l $LR --rank $RANK --update-freq $K --galore-scale ${BASH_REMATCH[1]}"
  elif [[ $n =~ ^galore-a$re_num-reset$ ]]; then
    echo "--optimizer galore -l $LR --rank $RANK --update-freq $K --galore-scale ${BASH_REMATCH[1]}" \
         "--galore-refresh-state reset"
  elif [[ $n =~ ^grass-topr-a$re_num(-keep)?$ ]]; then
    echo "--optimizer grass -l $LR --grass-select topr --rank $RANK --update-freq $K --grass-scale ${BASH_REMATCH[1]}" \
         "$(refresh_state_args "${BASH_REMATCH[2]}")"
  elif [[ $n =~ ^grass-(multinorm|multinorm-nr|uniform|uniform-nr)-a$re_num-up(paper|one|mean)(-keep)?$ ]]; then
    echo "--optimizer grass -l $LR --grass-select ${BASH_REMATCH[1]} --rank $RANK --update-freq $K" \
         "--grass-scale ${BASH_REMATCH[2]} --grass-upscale ${BASH_REMATCH[3]} $(refresh_state_args "${BASH_REMATCH[4]}")"
  else
    die "no flags for the run name '$n'"
  fi
}
supported() {  # supported NAME: 0 when the binary has what the run needs
  case $1 in
    adamw-*) [ $HAVE_ADAMW = 1 ] ;;
    galore-*) [ $HAVE_GALORE = 1 ] ;;
    *-keep) [ $HAVE_KEEP = 1 ] ;;
    galore-*-reset) [ $HAVE_GALORE = 1 ] && [ $HAVE_KEEP = 1 ] ;;
    grass-topr-*) true ;;
    grass-*) [ $HAVE_UPSCALE = 1 ] ;;
  esac
}
state_suffix() { [ "$1" = keep ] && echo -keep; }  # a refresh state -> the run name's suffix
seed1_runs() {  # the phase-1 run names of a cell
  local s a u v rs
  for s in $ADAMW_SCALES; do echo "adamw-s$s"; done
  for a in $GALORE_ALPHAS; do echo "galore-a$a"; done
  for rs in $REFRESH_STATES; do
    for a in $TOPR_ALPHAS; do echo "grass-topr-a$a$(state_suffix "$rs")"; done
    for u in $UPSCALES; do for a in $MULTINORM_ALPHAS; do echo "grass-multinorm-a$a-up$u$(state_suffix "$rs")"; done; done
    for v in $VARIANTS; do echo "grass-$v-a$GRASS_ALPHA-up$UPSCALE$(state_suffix "$rs")"; done
  done
}

# ---- data
data_ok() {  # data_ok CORPUS: shards + tokenizer.bin of the right vocabulary are there
  local d=$DATA_ROOT/$1
  ls "$d/$1"_train_*.bin > /dev/null 2>&1 && ls "$d/$1"_val_*.bin > /dev/null 2>&1 && [ -f "$d/tokenizer.bin" ] || return 1
  local v
  local first=("$d/$1"_train_*.bin)
  v=$($PY -c "import struct, sys; print(struct.unpack('<8q', open(sys.argv[1], 'rb').read(64))[4])" "${first[0]}") || return 1
  [ "$v" = "$VOCAB" ] || die "$d holds shards of a $v-token vocabulary, the study uses VOCAB=$VOCAB: remove $d or set DATA_ROOT"
}
prepare_corpus() {
  local c=$1 d=$DATA_ROOT/$1 src=../shared/data/tinyshakespeare.txt
  data_ok "$c" && return 0
  echo "== preparing $d (a $VOCAB-piece tokenizer trained on its train split)"
  case $c in
    tinyshakespeare)
      if [ -f $src ]; then $PY dev/data/prepare.py --input $src --name tinyshakespeare --out-dir "$d" --train-tokenizer "$VOCAB"
      else $PY dev/data/prepare.py --dataset tinyshakespeare --out-dir "$d" --train-tokenizer "$VOCAB"; fi ;;
    kjv) $PY dev/data/prepare.py --dataset kjv --out-dir "$d" --train-tokenizer "$VOCAB" ;;
    *) die "unknown corpus '$c' (known: tinyshakespeare kjv; or put <name>_train_*.bin, <name>_val_*.bin and tokenizer.bin in $d)" ;;
  esac
  # shellcheck disable=SC2181
  if [ $? -ne 0 ] || ! data_ok "$c"; then die "preparing $d failed"; fi
}

# ---- one run
declare -a ARGS
make_args() {  # make_args CORPUS SIZE NAME SEED -> ARGS (everything but -o and -y)
  local c=$1 z=$2 n=$3 seed=$4 d=$DATA_ROOT/$1 opt
  opt=$(run_args "$n") || exit 1  # (run_args has said why)
  # shellcheck disable=SC2207,SC2206  # the size and optimizer flags are split into words on purpose
  ARGS=(-i "$d/${c}_train_*.bin" -j "$d/${c}_val_*.bin" -e "$d/tokenizer.bin" $(size_args "$z")
        -b "$B" -t "$T" -x "$STEPS" -v "$EVAL_EVERY" --eval-tokens "$EVAL_TOKENS" -n "$CKPT_EVERY" --log-every 25
        $opt --seed "$seed" "${EXTRA[@]}")
}
# the arguments a run is compared on: all but the flags that change nothing on this build's
# numbers (--grad-dtype fp32 is added once the binary has it; CPU gradients are fp32 anyway), and
# --grass-refresh-state reset, what every binary from before the flag did
norm_args() {
  awk 'skip { skip = 0; next } $0 == "--grad-dtype" { skip = 1; next }
       $0 == "--grass-refresh-state" { held = 1; next }
       held { held = 0; if ($0 != "reset") print "--grass-refresh-state\n" $0; next } { print }'
}
run_state() {  # run_state DIR: done | conflict | diverged | partial | new, and the step reached
  local dir=$1 st
  if [ -f "$dir/args.txt" ] && [ "$(norm_args < "$dir/args.txt")" != "$(printf '%s\n' "${ARGS[@]}" | norm_args)" ]; then
    echo "conflict 0"; return
  fi
  if grep -q "^step=$STEPS val_loss=" "$dir/log.txt" 2>/dev/null; then echo "done $STEPS"; return; fi
  st=$(head -n 1 "$dir/status" 2>/dev/null)
  if [ "$RETRY" != 1 ]; then
    case $st in diverged*) echo "diverged 0"; return ;; esac
  fi
  if [ -f "$dir/checkpoint_latest.txt" ]; then echo "partial $(cat "$dir/checkpoint_latest.txt")"; return; fi
  echo "new 0"
}
cleanup_ckpt() {
  local dir=$1 last
  last=$(printf "%08d" "$STEPS")
  for f in "$dir"/model_*.bin "$dir"/state_*.bin; do
    [ -e "$f" ] || continue
    if [ "$KEEP_CKPT" = 1 ] && [[ $f == *_$last.bin ]]; then continue; fi
    rm -f "$f"
  done
  [ "$KEEP_CKPT" = 1 ] || rm -f "$dir/checkpoint_latest.txt"
}
CUR_PID=""; IN_JOB=0; PIDS=()
on_signal() {  # stop what this shell started: its trainer, or (the main shell) the background jobs
  local p
  [ -n "$CUR_PID" ] && kill "$CUR_PID" 2>/dev/null
  if [ "$IN_JOB" = 0 ]; then
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    echo "interrupted: the same command continues the study (runs resume from their last checkpoint)"
  fi
  exit 130
}
trap on_signal INT TERM
run_one() {  # run_one LABEL DIR: trains with ARGS into DIR (the ARGS of the caller)
  local label=$1 dir=$2 from t0 t1 rc fv
  trap on_signal INT TERM  # again: a background job's subshell starts without the traps
  mkdir -p "$dir"
  printf '%s\n' "${ARGS[@]}" > "$dir/args.txt"
  if ! "$BIN" "${ARGS[@]}" --plan-only 1 > "$dir/plan.txt" 2>&1 < /dev/null; then
    echo "failed (plan) $(tail -n 1 "$dir/plan.txt")" > "$dir/status"
    echo "   $label: --plan-only failed: $(tail -n 1 "$dir/plan.txt")"; return 1
  fi
  from=$(cat "$dir/checkpoint_latest.txt" 2>/dev/null || echo 0)
  echo "   $label: $([ "$from" = 0 ] && echo start || echo "resume at step $from") ($(date +%H:%M))"
  rm -f "$dir/status"
  t0=$(date +%s)
  OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$BIN" "${ARGS[@]}" -o "$dir" -y 1 >> "$dir/train.out" 2>&1 < /dev/null &
  CUR_PID=$!
  wait "$CUR_PID"
  rc=$?
  CUR_PID=""
  t1=$(date +%s)
  echo "$from $(cat "$dir/checkpoint_latest.txt" 2>/dev/null || echo "?") $((t1 - t0)) $rc" >> "$dir/segments.txt"
  if [ $rc -eq 0 ] && grep -q "^step=$STEPS val_loss=" "$dir/log.txt" 2>/dev/null; then
    echo "done" > "$dir/status"
    cleanup_ckpt "$dir"
    fv=$(grep "^step=$STEPS val_loss=" "$dir/log.txt" | tail -n 1 | sed 's/.*val_loss=\([^ ]*\).*/\1/')
    echo "   $label: done in $((t1 - t0)) s, final val loss $fv"
  elif grep -qE "became (nan|-nan|inf|-inf)|validation loss is (nan|-nan|inf|-inf)" "$dir/train.out"; then
    echo "diverged: $(grep -m1 -oE "(the loss|the gradient norm) became [^;]*|validation loss is [^ ]* at step [0-9]*" "$dir/train.out" | tail -n 1)" > "$dir/status"
    echo "   $label: $(cat "$dir/status")"
  else
    echo "failed $rc" > "$dir/status"
    echo "   $label: failed (exit $rc): $(tail -n 2 "$dir/train.out" | tr '\n' ' ')"
  fi
}

# ---- the plan: CELL/RUN-seedN, in order; phase 2 decides its runs after phase 1
DRY_LIST=()
N_RUN=0
schedule() {  # schedule CORPUS SIZE NAME SEED
  local c=$1 z=$2 n=$3 seed=$4 cell="$1-$2" full state step
  full="$cell/$n-seed$seed"
  [ -n "$ONLY" ] && ! [[ $full =~ $ONLY ]] && return 0
  if ! supported "$n"; then
    [ "$DRY" = 1 ] && DRY_LIST+=("$full unsupported 0")
    return 0
  fi
  make_args "$c" "$z" "$n" "$seed"
  read -r state step <<< "$(run_state "$OUT/$full")"
  if [ "$DRY" = 1 ]; then DRY_LIST+=("$full $state $step"); return 0; fi
  case $state in
    done) echo "   $full: done (skipped)"; return 0 ;;
    diverged) echo "   $full: $(head -n 1 "$OUT/$full/status") (not retried; RETRY=1 retries)"; return 0 ;;
    conflict) echo "WARNING: $OUT/$full was run with other arguments (see its args.txt); left alone (use another OUT, or remove it)"; return 0 ;;
  esac
  N_RUN=$((N_RUN + 1))
  if [ "$JOBS" = 1 ]; then
    run_one "$full" "$OUT/$full"
  else
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    ( IN_JOB=1; run_one "$full" "$OUT/$full" ) &
    PIDS+=($!)
  fi
}

if [ "$DRY" != 1 ]; then
  mkdir -p "$OUT"
  {
    echo "# scripts/compare_optimizers.sh, $(date '+%Y-%m-%d %H:%M'), commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    for v in BIN DATA_ROOT CORPORA SIZES VOCAB B T STEPS EVAL_EVERY EVAL_TOKENS K RANK LR GRASS_ALPHA UPSCALE SEEDS \
             JOBS THREADS REFRESH_STATES CKPT_EVERY; do echo "$v=${!v}"; done
    for z in $SIZES; do
      set_grid "$z"
      for v in ADAMW_SCALES GALORE_ALPHAS TOPR_ALPHAS UPSCALES VARIANTS MULTINORM_ALPHAS; do echo "$z: $v=${!v}"; done
    done
    echo "EXTRA_FLAGS=${EXTRA[*]}"
  } > "$OUT/settings.txt"
  for c in $CORPORA; do prepare_corpus "$c"; done
else
  for c in $CORPORA; do data_ok "$c" || note "$DATA_ROOT/$c is not prepared yet: the real run prepares it first (a second or two)"; done
fi

echo "== phase 1: seed 1 ($CORPORA x $SIZES)"
for c in $CORPORA; do
  for z in $SIZES; do
    set_grid "$z"
    while read -r n; do schedule "$c" "$z" "$n" 1; done < <(seed1_runs)
  done
done
wait

# phase 2: more seeds for the headline rows
headline() {  # headline CELL_DIR: the phase-2 run names (best AdamW, best GaLore, best top-r, best multinorm)
  local cd=$1 a u b names rs x
  if [ $HAVE_ADAMW = 1 ] && [ -n "$ADAMW_SCALES" ]; then
    names=(); for a in $ADAMW_SCALES; do names+=("adamw-s$a"); done
    b=$($PY dev/study_table.py --best "$cd" "${names[@]}" 2>&1) && echo "$b" || echo "?adamw-s? ($b)"
  fi
  if [ $HAVE_GALORE = 1 ] && [ -n "$GALORE_ALPHAS" ]; then
    names=(); for a in $GALORE_ALPHAS; do names+=("galore-a$a"); done
    b=$($PY dev/study_table.py --best "$cd" "${names[@]}" 2>&1) && echo "$b" || echo "?galore-a? ($b)"
  fi
  for rs in $REFRESH_STATES; do  # each refresh state has its own best setting
    x=$(state_suffix "$rs")
    if [ -n "$TOPR_ALPHAS" ] && { [ "$rs" != keep ] || [ $HAVE_KEEP = 1 ]; }; then
      names=(); for a in $TOPR_ALPHAS; do names+=("grass-topr-a$a$x"); done
      b=$($PY dev/study_table.py --best "$cd" "${names[@]}" 2>&1) && echo "$b" || echo "?grass-topr-a?$x ($b)"
    fi
    if [ $HAVE_UPSCALE = 1 ] && [ -n "$UPSCALES" ] && [ -n "$MULTINORM_ALPHAS" ] && { [ "$rs" != keep ] || [ $HAVE_KEEP = 1 ]; }; then
      names=(); for u in $UPSCALES; do for a in $MULTINORM_ALPHAS; do names+=("grass-multinorm-a$a-up$u$x"); done; done
      b=$($PY dev/study_table.py --best "$cd" "${names[@]}" 2>&1) && echo "$b" || echo "?grass-multinorm-a?-up?$x ($b)"
    fi
  done
}
if [ -n "$SEEDS" ]; then
  echo "== phase 2: seeds $SEEDS for the best AdamW scale, the best GaLore alpha, the best top-r alpha, the best multinorm upscale"
  for c in $CORPORA; do
    for z in $SIZES; do
      set_grid "$z"
      while read -r n rest; do
        if [[ $n == \?* ]]; then  # best not known yet: seed 1 of that family is not finished
          n=${n#\?}
          for seed in $SEEDS; do
            full="$c-$z/${n}-seed$seed"
            [ -n "$ONLY" ] && ! [[ $full =~ $ONLY ]] && continue
            if [ "$DRY" = 1 ]; then DRY_LIST+=("$full after-seed1 0")
            else echo "   $full: not scheduled yet ${rest}"; fi
          done
          continue
        fi
        for seed in $SEEDS; do schedule "$c" "$z" "$n" "$seed"; done
      done < <(headline "$OUT/$c-$z")
    done
  done
  wait
fi

if [ "$DRY" = 1 ]; then
  printf '%s\n' "${DRY_LIST[@]}" | $PY dev/study_table.py --dry-report --out "$OUT" --steps "$STEPS" \
      --tokens-per-step $((B * T)) --eval-every "$EVAL_EVERY" --eval-tokens "$EVAL_TOKENS" --jobs "$JOBS" \
      --guess d6=1000 --guess w384=400
  exit 0
fi
echo "== $N_RUN run(s) trained or resumed in this invocation"
$PY dev/study_table.py --out "$OUT"
