#!/usr/bin/env bash
# dev/check_bit_identical.sh: does a change keep the program's results bit for bit?
#
# Builds a base revision (in a git worktree) and the working tree, trains the d6 model on
# TinyShakespeare with each, and compares what they wrote: every loss, lr, gradient norm and
# validation loss in log.txt (timings dropped) and every checkpoint file, byte for byte.
# Made for refactors such as the layout of issue 11, which must not change a single bit.
#
#   dev/check_bit_identical.sh [BASE_REV]          # default BASE_REV: HEAD (the uncommitted change)
#   GPU=1 dev/check_bit_identical.sh 4f7a394       # also the bf16 CUDA build, run on the CPU emulator
#   QUICK=1 ...                                    # fewer runs (AdamW and one Grass run)
#   NEW_FLAGS="--grass-norms micro" ...            # flags for the new build only (a new default
#                                                  # that the base lacks, set back to the old way)
# The options NEW_FLAGS names may be new to the base: their lines are left out of the text
# compared (-h, --plan-only output) and of the setup saved in each state file (the rest of the
# state file, the optimizer's state included, is still compared byte for byte; only its checksum
# trailer, a function of the whole, is not).
#   NEW_OPTIONS="--galore-side --grass-refresh-state" ...  # the same for options new to the base that
#                                                  # runs leave at their defaults (no NEW_FLAGS)
#
# Runs (CPU build; each writes a checkpoint at the end and one mid-run):
#   adamw        AdamW, 12 steps, B=4 T=128, validation every 6 steps
#   adamw_mw     AdamW with master weights, fp32 dense gradients, bf16 moments
#   grass_mn     Grass multinorm, rank 48, K=4, fused, 2 accumulation steps (a refresh at 0, 4, 8)
#   grass_topr   Grass top-r, unfused, --grad-clip 1, bf16 moments, recomputation, weight decay
#   grass_resume grass_topr stopped at step 6 and resumed with -y 1 (must equal the straight run)
#   grass_sketch Grass multinorm with sketched row norms (--grass-norms sketch --sketch-dim 64)
#   galore       GaLore, rank 48, K=4, fused;  galore_unf: the same unfused
#   mpi2         Grass multinorm on 2 ranks with ZeRO-1 (when mpirun is present)
#   mpi2_overlap Grass multinorm on 2 ranks with --overlap-comm 1
#   mpi2_adamw   AdamW on 2 ranks with ZeRO-1
# GPU=1 adds the bf16 GPU build (tests/cuda_emu) at B=1 T=32 for 3 steps: AdamW, AdamW with master weights,
# fp32 dense gradients and bf16 moments, Grass, Grass with --select-on-device 1 and sketched norms, GaLore
# fused and unfused.
# Besides the numbers and the checkpoints, the text that tools read is compared byte for byte: the log
# header lines (dev/plot_logs.py, dev/study_table.py), the optimizer banner and the memory plan rows of
# each run's output, the --plan-only output of every optimizer, and -h of each binary (gpu_check.sh greps it).
# LEGACY_BASE=1 drops the refresh log lines from the comparison (a base from before 2026-11-30 lacks them).
# NEW_LOG_FIELDS="again trained": log fields new to the new build, dropped from both logs before comparing
# (again= and trained= of Grass's refresh lines are new since 2026-12-07).
# JOBS=N: make -jN for the builds (default 2).
# MEMORY_LIMIT_GB=G: the --memory-limit-gb of every run and plan (default 8; both revisions must know the flag).
# ONLY=REGEX: only the runs whose names match (e.g. ONLY=gpu_ with GPU=1); the text checks always run.
# WORK=DIR: where the base worktree, binaries, data and runs go (default /tmp/grass_bit_identical).
# A pass removes what it wrote there (the base worktree with its builds, the runs; a few calls
# used to fill the disk); a failure keeps it for inspection and says how to remove it.
# KEEP_WORK=1 keeps it after a pass too, e.g. to check several changes against one base built once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${1:-HEAD}
BASE_SHA=$(git rev-parse --verify "$BASE^{commit}") || { echo "error: '$BASE' is not a revision"; exit 2; }
WORK=${WORK:-/tmp/grass_bit_identical}
mkdir -p "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
GPU=${GPU:-0}; QUICK=${QUICK:-0}
BASE_DIR=$WORK/base_${BASE_SHA:0:12}
WROTE=(runs text bin_base bin_new data build.log data.log diff.txt)  # besides $BASE_DIR
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "kept for inspection: $WORK ($(du -sh "$WORK" 2>/dev/null | cut -f1)); to remove it:" \
         "git worktree remove --force $BASE_DIR; rm -rf $WORK"
  elif [ "${KEEP_WORK:-0}" != 1 ]; then
    git worktree remove --force "$BASE_DIR" 2>/dev/null || { rm -rf "$BASE_DIR"; git worktree prune; }
    local w; for w in "${WROTE[@]}"; do rm -rf "${WORK:?}/$w"; done
    rmdir "$WORK" 2>/dev/null || true
    echo "removed what this check wrote in $WORK (KEEP_WORK=1 keeps it)"
  fi
}
trap on_exit EXIT

# ---- builds ---------------------------------------------------------------------------------------
if [ ! -d "$BASE_DIR" ]; then
  git worktree add --detach "$BASE_DIR" "$BASE_SHA" >/dev/null 2>&1 \
    || { echo "error: git worktree add $BASE_DIR $BASE_SHA failed"; exit 2; }
fi
build() {  # build DIR TARGET...
  local dir=$1; shift
  echo "== building $* in $dir"
  make -C "$dir" -s -j"${JOBS:-2}" "$@" > "$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; echo "error: build failed in $dir"; exit 2; }
}
# the binaries are copied to $WORK/bin_base and $WORK/bin_new, so that a build in the tree
# while the runs go on cannot change what they run
stage() {  # stage DIR WHICH BINARY...
  local dir=$1 which=$2; shift 2
  mkdir -p "$WORK/bin_$which"
  for b in "$@"; do cp "$dir/$b" "$WORK/bin_$which/$(basename "$b")"; done
}
BINS=(train_llama_cpu)
[ "$GPU" = 1 ] && BINS+=(build/emu/train_llama)
build "$BASE_DIR" "${BINS[@]}"; stage "$BASE_DIR" base "${BINS[@]}"
build "$ROOT" "${BINS[@]}"; stage "$ROOT" new "${BINS[@]}"

# ---- data ---------------------------------------------------------------------------------------
DATA=$WORK/data
if [ ! -f "$DATA/ready" ]; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  if [ -f ../shared/data/tinyshakespeare.txt ] && [ -f ../shared/data/llama2_tokenizer.model ]; then
    python3 dev/data/prepare.py --input ../shared/data/tinyshakespeare.txt --tokenizer ../shared/data/llama2_tokenizer.model \
      --out-dir "$DATA" --name ts > "$WORK/data.log" 2>&1 || { cat "$WORK/data.log"; exit 2; }
    echo tinyshakespeare > "$DATA/ready"
  else
    python3 dev/data/make_synthetic.py --out-dir "$DATA" --name ts --vocab 32000 --train-tokens 300000 --val-tokens 40000 \
      > "$WORK/data.log" 2>&1 || { cat "$WORK/data.log"; exit 2; }
    echo synthetic > "$DATA/ready"
  fi
fi
echo "== data: $(cat "$DATA/ready") ($DATA)"
D=(-i "$DATA/ts_train_*.bin" -j "$DATA/ts_val_*.bin")

# ---- runs ---------------------------------------------------------------------------------------
# run NAME WHICH(base|new) LAUNCH... : one training run into $WORK/runs/NAME/WHICH
run() {
  local name=$1 which=$2; shift 2
  local out=$WORK/runs/$name/$which
  rm -rf "$out"; mkdir -p "$out"
  local dir=$ROOT; [ "$which" = base ] && dir=$BASE_DIR
  local cmd=("${@//@BIN@/$WORK/bin_$which}")
  [ "$which" = new ] && cmd+=(${NEW_FLAGS:-})
  (cd "$dir" && "${cmd[@]}" -o "$out") > "$out.stdout" 2>&1 \
    || { tail -20 "$out.stdout"; echo "error: run $name ($which) failed: ${cmd[*]}"; exit 2; }
}
# --memory-limit-gb: the plan (and --grass-norms auto's choice) reads a fixed budget, not what the
# machine reports free at the moment, so both builds plan alike whatever else runs (both accept it)
MEM=(--memory-limit-gb "${MEMORY_LIMIT_GB:-8}")
base_help=$("$WORK/bin_base/train_llama_cpu" -h 2>&1 || true)
if [[ "$base_help" != *--memory-limit-gb* ]]; then
  echo "note: the base has no --memory-limit-gb: the runs plan with the memory the machine reports free"; MEM=()
fi
CPU=(@BIN@/train_llama_cpu "${D[@]}" -c d6 -b 4 -t 128 -x 12 -v 6 --eval-tokens 4096 -n 6 --seed 7 "${MEM[@]}")
NAMES=()
both() {  # both NAME ARGS...: the run with the base and with the new build
  local name=$1; shift
  [[ "$name" =~ ${ONLY:-.} ]] || return 0
  NAMES+=("$name")
  echo "== $name"
  run "$name" base "$@"
  run "$name" new "$@"
}
both adamw "${CPU[@]}" --optimizer adamw -l 3e-3
both grass_mn "${CPU[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 4 -l 1e-2 -d 1024
if [ "$QUICK" != 1 ]; then
  TOPR=(--optimizer grass --grass-select topr --rank 0.25 --update-freq 5 -l 1e-2 --grass-fused 0 --grad-clip 1
        --state-dtype bf16 --recompute 1 --weight-decay 0.1)
  both grass_topr "${CPU[@]}" "${TOPR[@]}"
  # the same run stopped at step 6 (a checkpoint) and resumed: its final files must equal the straight run's
  RESUME=0; [[ grass_resume =~ ${ONLY:-.} && grass_topr =~ ${ONLY:-.} ]] && RESUME=1
  [ $RESUME = 1 ] && NAMES+=(grass_resume) && echo "== grass_resume"
  for which in base new; do
    [ $RESUME = 1 ] || break
    out=$WORK/runs/grass_resume/$which; rm -rf "$out"; mkdir -p "$out"
    dir=$ROOT; [ "$which" = base ] && dir=$BASE_DIR
    cmd=("${CPU[@]//@BIN@/$WORK/bin_$which}" "${TOPR[@]}")
    [ "$which" = new ] && cmd+=(${NEW_FLAGS:-})
    (cd "$dir" && "${cmd[@]}" -o "$out" > "$out.stdout" 2>&1) || { tail -20 "$out.stdout"; exit 2; }
    # keep the step-6 checkpoint only, then resume from it
    rm -f "$out"/model_00000012.bin "$out"/state_00000012.bin
    echo 6 > "$out/checkpoint_latest.txt"
    (cd "$dir" && "${cmd[@]}" -o "$out" -y 1 >> "$out.stdout" 2>&1) || { tail -20 "$out.stdout"; exit 2; }
  done
  both adamw_mw "${CPU[@]}" --optimizer adamw -l 3e-3 --master-weights 1 --grad-dtype fp32 --state-dtype bf16
  both grass_sketch "${CPU[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 4 -l 1e-2 \
    --grass-norms sketch --sketch-dim 64
  both galore "${CPU[@]}" --optimizer galore --rank 48 --update-freq 4 -l 1e-2 --grass-fused 1
  both galore_unf "${CPU[@]}" --optimizer galore --rank 48 --update-freq 4 -l 1e-2 --grass-fused 0
  if command -v mpirun >/dev/null 2>&1; then
    MPI=(mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "${CPU[@]}" -b 2)
    both mpi2 "${MPI[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 4 -l 1e-2 --zero 1
    both mpi2_overlap "${MPI[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 4 -l 1e-2 \
      --overlap-comm 1
    both mpi2_adamw "${MPI[@]}" --optimizer adamw -l 3e-3 --zero 1
  fi
fi
if [ "$GPU" = 1 ]; then
  EMU=(@BIN@/train_llama "${D[@]}" -c d6 -b 1 -t 32 -x 3 -v 3 --eval-tokens 32 -n 3 --seed 7 "${MEM[@]}")
  both gpu_adamw "${EMU[@]}" --optimizer adamw -l 3e-3
  both gpu_grass "${EMU[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 2 -l 1e-2
  if [ "$QUICK" != 1 ]; then
    both gpu_adamw_mw "${EMU[@]}" --optimizer adamw -l 3e-3 --master-weights 1 --grad-dtype fp32 --state-dtype bf16
    both gpu_grass_dev "${EMU[@]}" --optimizer grass --grass-select multinorm --rank 48 --update-freq 2 -l 1e-2 \
      --select-on-device 1 --grass-norms sketch --sketch-dim 64
    both gpu_galore "${EMU[@]}" --optimizer galore --rank 48 --update-freq 2 -l 1e-2 --grass-fused 1
    both gpu_galore_unf "${EMU[@]}" --optimizer galore --rank 48 --update-freq 2 -l 1e-2 --grass-fused 0
  fi
fi

# ---- text that tools read: -h and the plan of each optimizer ------------------------------------
# written into $WORK/text/WHICH/*.txt and compared byte for byte below
for which in base new; do
  t=$WORK/text/$which; rm -rf "$t"; mkdir -p "$t"
  for b in "${BINS[@]}"; do
    bin=$WORK/bin_$which/$(basename "$b")
    "$bin" -h > "$t/$(basename "$b")_help.txt" 2>&1 || true
    for opt in "adamw" "adamw --master-weights 1 --grad-dtype fp32 --state-dtype bf16" "grass --rank 48" \
               "grass --rank 0.25 --grass-norms sketch --sketch-dim 64 --grass-fused 0" "galore --rank 48" \
               "galore --rank 48 --grass-fused 0"; do
      f=$t/$(basename "$b")_plan_$(echo "$opt" | tr -c 'a-z0-9.\n' '_').txt
      # shellcheck disable=SC2086
      "$bin" -c d6 -b 4 -t 128 --plan-only 1 "${MEM[@]}" --optimizer $opt > "$f" 2>&1 \
        || { cat "$f"; echo "error: $bin --plan-only 1 --optimizer $opt failed"; exit 2; }
    done
  done
done

# ---- compare ------------------------------------------------------------------------------------
# the option names NEW_FLAGS sets (one a line), and text without the lines that name one of them
NEW_OPTS=$(for w in ${NEW_FLAGS:-} ${NEW_OPTIONS:-}; do case $w in --*) echo "$w" ;; esac; done | sort -u)
without_new_opts() { if [ -n "$NEW_OPTS" ]; then grep -v -F -- "$NEW_OPTS" "$1" || true; else cat "$1"; fi; }
# same_state BASE NEW: state files alike but for the saved setup lines of NEW_OPTS (and so the checksum)
same_state() {
  NEW_OPTS="$NEW_OPTS" python3 - "$1" "$2" <<'PY'
import os, struct, sys
drop = set(os.environ["NEW_OPTS"].split())
def parts(path):
    d = open(path, "rb").read()
    off = 256 + 64  # the 64-int header, then TrainState (64 bytes), then the setup's length and text
    (n,) = struct.unpack_from("<i", d, off)
    text = d[off + 4:off + 4 + n]
    if not text.startswith(b"--"):
        sys.exit("%s: no saved setup where it was expected" % path)
    lines = [l for l in text.split(b"\n") if l and l.split(b"\t")[0].decode() not in drop]
    return d[:off], lines, d[off + 4 + n:-16]
sys.exit(0 if parts(sys.argv[1]) == parts(sys.argv[2]) else 1)
PY
}
# the numbers of each log line, without the timing fields (tok_per_s, mfu, mem_gib, dt_ms), the fields
# NEW_LOG_FIELDS names, and (LEGACY_BASE=1) the refresh lines (a base from before 2026-11-30 lacks them)
DROP_FIELDS="tok_per_s|mfu|mfu_exec|mem_gib|dt_ms$(for f in ${NEW_LOG_FIELDS:-}; do printf '|%s' "$f"; done)"
numbers() {
  if [ "${LEGACY_BASE:-0}" = 1 ]; then grep -v '^#' "$1" | grep -v ' refresh=1 '; else grep -v '^#' "$1"; fi \
    | sed -E "s/ ($DROP_FIELDS)=[^ ]*//g"
}
# the log's header lines, and the optimizer banner and memory plan rows of a run's output
header() { grep '^#' "$1" || true; }
plan_rows() { sed -n -e '/^optimizer: /p' -e '/^memory plan/,/^communication per optimizer step/p' "$1"; }
same=0
for name in "${NAMES[@]}"; do
  b=$WORK/runs/$name/base n=$WORK/runs/$name/new
  if ! diff <(numbers "$b/log.txt") <(numbers "$n/log.txt") > "$WORK/diff.txt"; then
    echo "DIFFERENT $name: log.txt"; head -10 "$WORK/diff.txt"; exit 1
  fi
  if ! diff <(header "$b/log.txt") <(header "$n/log.txt") > "$WORK/diff.txt"; then
    echo "DIFFERENT $name: the header lines of log.txt"; head -10 "$WORK/diff.txt"; exit 1
  fi
  [ -n "$(plan_rows "$b.stdout")" ] || { echo "DIFFERENT $name: no banner or memory plan in the base run's output"; exit 1; }
  if ! diff <(plan_rows "$b.stdout") <(plan_rows "$n.stdout") > "$WORK/diff.txt"; then
    echo "DIFFERENT $name: the banner or memory plan rows"; head -10 "$WORK/diff.txt"; exit 1
  fi
  files=$(cd "$b" && ls model_*.bin state_*.bin state_*.zero*.bin 2>/dev/null | sort -u || true)
  [ -n "$files" ] || { echo "DIFFERENT $name: no checkpoint written by the base run"; exit 1; }
  for f in $files; do
    if [ -n "$NEW_OPTS" ] && [[ $f == state_* && $f != *.zero* ]]; then  # (ZeRO shard files hold no setup)
      same_state "$b/$f" "$n/$f" || { echo "DIFFERENT $name: $f (besides the setup lines of $(echo $NEW_OPTS))"; exit 1; }
    else
      cmp -s "$b/$f" "$n/$f" || { echo "DIFFERENT $name: $f ($(cmp "$b/$f" "$n/$f" 2>&1 | head -1))"; exit 1; }
    fi
  done
  echo "same $name: $(numbers "$n/log.txt" | wc -l) log lines, $(header "$n/log.txt" | wc -l) header lines, \
$(plan_rows "$n.stdout" | wc -l) banner/plan rows, checkpoints $(echo $files | wc -w) files ($(tail -1 "$n/log.txt" | cut -c1-60))"
  same=$((same + 1))
done
if [ "$QUICK" != 1 ] && [ "${RESUME:-0}" = 1 ]; then  # the resumed run must end where the straight run ended
  for which in base new; do
    for f in model_00000012.bin state_00000012.bin; do
      cmp -s "$WORK/runs/grass_topr/$which/$f" "$WORK/runs/grass_resume/$which/$f" \
        || { echo "DIFFERENT: grass_resume ($which) does not end with grass_topr's $f"; exit 1; }
    done
  done
  echo "same: the resumed Grass run ends with the straight run's weights (base and new)"
fi
texts=0
for f in "$WORK"/text/base/*.txt; do
  g=$WORK/text/new/$(basename "$f")
  cmp -s <(without_new_opts "$f") <(without_new_opts "$g") \
    || { echo "DIFFERENT text: $(basename "$f")"; diff <(without_new_opts "$f") <(without_new_opts "$g") | head -10; exit 1; }
  texts=$((texts + 1))
done
echo "same text: $texts files (-h and --plan-only of each optimizer, per binary$([ -n "$NEW_OPTS" ] && echo "; lines naming $(echo $NEW_OPTS) left out"))"
echo "bit-identical: $same of ${#NAMES[@]} runs (base $BASE_SHA, data $(cat "$DATA/ready"))"
