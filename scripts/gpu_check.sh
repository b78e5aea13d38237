#!/usr/bin/env bash
# scripts/gpu_check.sh: everything worth checking on a machine with a GPU, in one command that
# ends within about 8 minutes (BUDGET_S, default 470 s) and writes a markdown report.
#
#   scripts/gpu_check.sh                 # report in gpu_report/gpu_report.md
#   OUT=/tmp/r scripts/gpu_check.sh      # report in /tmp/r/gpu_report.md (+ check.log)
#
# Steps, each under its own timeout (and never past the overall budget), in priority order:
#   build (make train_llama test_llama test_kernels_cuda dev_cuda, GPU_ARCH=sm_90 by default),
#   ./tests/bin/test_kernels_cuda (every kernel vs the CPU kernels), ./test_llama (transformers
#   fixtures), data (tinyshakespeare from ../shared if present, else a synthetic 32000-token
#   shard), 60m AdamW (also with --grad-dtype fp32) and Grass (B=16 T=256; Grass again with bf16 moments, fp32 master weights,
#   recomputation and the selection on the device), compute-sanitizer memcheck on a tiny run (with those options), the
#   13b Grass memory plan and the full 13b Grass run (B=1 T=256, 3 steps, --recompute 1 and
#   --state-dtype bf16 unless SMALL13B_OPTS says otherwise; peak under 40 GB? under 32 GB?; a
#   2-layer 13b run as a fallback when the full one cannot finish), 1b AdamW and Grass (T=1024),
#   and the dev/cuda kernel benchmarks with whatever time is left (attention_check: the own
#   attention kernels and, in a build with cuDNN, cuDNN's fused attention, values and times), then
#   1b AdamW again with --attention cudnn. A short table is printed last.
# cuDNN's attention is built only when the cudnn_frontend headers are there: the GPU machine has no
#   network, so copy them first (mkdir -p build/cudnn_frontend && cp -r "$(python3 -c "import
#   sysconfig; print(sysconfig.get_paths()['purelib'])")/include" build/cudnn_frontend/) and carry
#   build/cudnn_frontend; they add about 3 minutes of host compilation to the build step.
# Next to each run's measured tok/s and MFU stands the prediction of dev/perf_model.py (a roofline
#   model of the same command line on this GPU, a plain step as the medians are; about 0.2 s each),
#   and measured / predicted, so that the first GPU run shows where the model is wrong.
# Environment: OUT, BUDGET_S, GPU_ARCH (sm_90), JOBS, STEPS_60M (20), STEPS_1B (12), B_1B (8),
#   SKIP_13B=1 (skip the full 13b run, which needs minutes of host-side initialization),
#   RANK_13B (256, the rank of scripts/run_llama.sh for 13b, planned to fit 40 GB in bf16).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_report}
BUDGET_S=${BUDGET_S:-470}
GPU_ARCH=${GPU_ARCH:-sm_90}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
STEPS_60M=${STEPS_60M:-20}
STEPS_1B=${STEPS_1B:-12}
B_1B=${B_1B:-8}
RANK_13B=${RANK_13B:-256}
# what makes 13b small: activation recomputation and bf16 Adam moments (planned ~28.7 GiB in bf16)
SMALL13B_OPTS=${SMALL13B_OPTS:---recompute 1 --state-dtype bf16}
WORK=build/gpu_check
mkdir -p "$OUT" "$WORK"
LOG="$OUT/check.log"
REPORT="$OUT/gpu_report.md"
: > "$LOG"
T0=$SECONDS

declare -a S_NAME S_STATUS S_TIME S_NOTE
declare -a R_NAME R_TOKS R_MFU R_MEM R_LOSS R_STATUS R_PTOKS R_PMFU R_RATIO

left() { echo $((BUDGET_S - (SECONDS - T0))); }

record() {  # name status seconds note
    S_NAME+=("$1"); S_STATUS+=("$2"); S_TIME+=("$3"); S_NOTE+=("$4")
    printf '%-28s %-8s %4ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$LOG"
}

# step NAME TIMEOUT CMD...: output to $WORK/NAME.log (its tail to check.log); sets STEP_RC
step() {
    local name=$1 t=$2; shift 2
    local avail=$(( $(left) - 5 ))
    if (( avail < 10 )); then record "$name" SKIPPED 0 "out of time budget"; STEP_RC=125; return 125; fi
    (( t > avail )) && t=$avail
    echo "=== $name (timeout ${t}s): $*" >> "$LOG"
    local s=$SECONDS
    timeout -k 10 "$t" "$@" > "$WORK/$name.log" 2>&1
    STEP_RC=$?
    tail -n 60 "$WORK/$name.log" >> "$LOG"
    local dt=$((SECONDS - s)) st=PASS
    if (( STEP_RC == 124 || STEP_RC == 137 )); then st=TIMEOUT; elif (( STEP_RC != 0 )); then st="FAIL($STEP_RC)"; fi
    if (( STEP_RC == 0 )) && grep -q 'no CUDA device.*skipped' "$WORK/$name.log"; then st=SKIPPED; fi
    STEP_STATUS=$st; STEP_TIME=$dt
    STEP_ERR=$(grep -m1 -E '^error|FAIL |Error' "$WORK/$name.log" | cut -c1-160)
    return $STEP_RC
}

# ---- machine ------------------------------------------------------------------------------------
DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
SMI=$(nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,power.draw,clocks.sm \
      --format=csv,noheader 2>&1 | head -n 1)
echo "gpu_check: $DATE | $SMI | git $(git rev-parse --short HEAD 2>/dev/null || echo '?')" | tee -a "$LOG"
# the machine dev/perf_model.py predicts for: this GPU when it is an H100 or H200, else the H100's figures
case "$SMI" in
    *H200*) PM_GPU=h200; PM_NOTE="H200" ;;
    *H100*) PM_GPU=h100; PM_NOTE="H100 SXM" ;;
    *)      PM_GPU=h100; PM_NOTE="H100 SXM (this GPU is neither an H100 nor an H200: the model's figures are the H100's)" ;;
esac

# ---- build ------------------------------------------------------------------------------------------
# cuDNN's frontend headers for --attention cudnn: the GPU machine has no network, so they travel with
# the tree (copy site-packages/include of `pip install nvidia-cudnn-frontend` to build/cudnn_frontend/include
# and carry build/cudnn_frontend); without them train_llama and attention_check build with the own kernels only
if [ -z "${CUDNN_FRONTEND_INCLUDE:-}" ] && [ -f build/cudnn_frontend/include/cudnn_frontend.h ]; then
    export CUDNN_FRONTEND_INCLUDE=$PWD/build/cudnn_frontend/include
fi
targets=(train_llama test_kernels_cuda dev_cuda)
[ -f tests/cuda_emu/test_emu.cu ] && targets+=(test_emu_gpu)
[ -f test_llama.cu ] && targets+=(test_llama)
step build 300 make -j"$JOBS" GPU_ARCH="$GPU_ARCH" "${targets[@]}"
record build "$STEP_STATUS" "$STEP_TIME" "make ${targets[*]} GPU_ARCH=$GPU_ARCH"
if [ ! -x ./train_llama ]; then
    echo "build failed; see $LOG" | tee -a "$LOG"
fi

# ---- flags used below must exist in the trainer's help -------------------------------------------
if [ -x ./train_llama ]; then
    HELP=$(./train_llama -h 2>&1)
    missing=""
    for f in -i -j -c -b -t -x -v --eval-tokens -o --optimizer --rank --log-every --plan-only --layers --memory-limit-gb \
             --recompute --state-dtype --master-weights --select-on-device; do
        grep -q -- " $f " <<< "$HELP" || missing+=" $f"
    done
    if [ -z "$missing" ]; then record flags PASS 0 "every flag this script uses is in ./train_llama -h"
    else record flags FAIL 0 "not in ./train_llama -h:$missing"; fi
fi

# ---- correctness ----------------------------------------------------------------------------------
if [ -x tests/bin/test_kernels_cuda ]; then
    step test_kernels_cuda 150 ./tests/bin/test_kernels_cuda
    record test_kernels_cuda "$STEP_STATUS" "$STEP_TIME" "$(grep -E 'passed, .* failed|skipped' "$WORK/test_kernels_cuda.log" | tail -n 1)"
else record test_kernels_cuda "NOT BUILT" 0 ""; fi
# the emulator's own checks on real hardware: what CI asserts of the emulator holds on the GPU
if [ -x tests/bin/test_emu_gpu ]; then
    step test_emu_gpu 60 ./tests/bin/test_emu_gpu
    record test_emu_gpu "$STEP_STATUS" "$STEP_TIME" "$(grep -E 'passed, .* failed' "$WORK/test_emu_gpu.log" | tail -n 1)"
fi
if [ -x ./test_llama ]; then
    step test_llama 120 ./test_llama
    record test_llama "$STEP_STATUS" "$STEP_TIME" "$(grep -E 'passed, .* failed' "$WORK/test_llama.log" | tail -n 1) ${STEP_ERR}"
else record test_llama "NOT BUILT" 0 "test_llama.cu missing or build failed"; fi

# ---- data -------------------------------------------------------------------------------------------
TRAIN=""; VAL=""
if ls data/tinyshakespeare/tinyshakespeare_train_*.bin >/dev/null 2>&1; then
    TRAIN="data/tinyshakespeare/tinyshakespeare_train_*.bin"; VAL="data/tinyshakespeare/tinyshakespeare_val_*.bin"
    record data PASS 0 "existing data/tinyshakespeare"
elif [ -f ../shared/data/tinyshakespeare.txt ] && \
     step data_prepare 120 python3 dev/data/prepare.py --input ../shared/data/tinyshakespeare.txt \
                               --out-dir data/tinyshakespeare --name tinyshakespeare; then
    TRAIN="data/tinyshakespeare/tinyshakespeare_train_*.bin"; VAL="data/tinyshakespeare/tinyshakespeare_val_*.bin"
    record data PASS "$STEP_TIME" "prepared tinyshakespeare from ../shared"
else
    rm -rf data/gpu_check_synthetic
    mkdir -p data/gpu_check_synthetic
    if [ -f dev/data/make_synthetic.py ]; then
        step data_synthetic 120 python3 dev/data/make_synthetic.py --out-dir data/gpu_check_synthetic --name synthetic \
            --vocab 32000 --train-tokens 1500000 --val-tokens 100000 --train-shards 1
    else
        step data_synthetic 120 python3 - <<'EOF'
import numpy as np
rng = np.random.default_rng(0)
for split, n in (("train", 1500000), ("val", 100000)):
    hdr = np.zeros(8, dtype=np.int64); hdr[:5] = [20261101, 1, 2, n, 32000]
    with open(f"data/gpu_check_synthetic/synthetic_{split}_000000.bin", "wb") as f:
        f.write(hdr.tobytes()); f.write(rng.integers(0, 32000, n, dtype=np.uint16).tobytes())
EOF
    fi
    record data "$STEP_STATUS" "$STEP_TIME" "synthetic 32000-token shards (no ../shared here)"
    TRAIN="data/gpu_check_synthetic/synthetic_train_*.bin"; VAL="data/gpu_check_synthetic/synthetic_val_*.bin"
fi

# ---- training runs --------------------------------------------------------------------------------
# median tok/s and MFU over steps 3.., peak memory, first and last loss of a trainer log.txt
read -r -d '' PARSE_LOG_PY <<'EOF'
import sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("step=") and " loss=" in line:
        rows.append(dict(kv.split("=", 1) for kv in line.split()))
if not rows:
    print("- - - -"); sys.exit()
late = rows[2:] or rows[-1:]
med = lambda xs: sorted(xs)[(len(xs) - 1) // 2]
tok = med([float(r["tok_per_s"]) for r in late]); mfu = med([float(r["mfu"]) for r in late])
mem = max(float(r["mem_gib"]) for r in rows)
print("%.0f %s %.2f %.3f->%.3f" % (tok, "%.1f%%" % (100 * mfu) if mfu >= 0 else "n/a", mem,
                                   float(rows[0]["loss"]), float(rows[-1]["loss"])))
EOF

# predict ARGS...: "tok/s MFU" that dev/perf_model.py predicts for a plain step of this trainer command
# line on $PM_GPU (its model FLOPs MFU is the trainer's formula), or "- -"
predict() {
    [ -f dev/perf_model.py ] || { echo "- -"; return; }
    timeout 30 python3 dev/perf_model.py --json --gpu "$PM_GPU" "$@" 2>/dev/null | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["gpus"][sys.argv[1]]
    print("%.0f %.1f%%" % (r["plain_tok_s"], 100 * r["plain_mfu"]))
except Exception:
    print("- -")' "$PM_GPU"
}

# train NAME TIMEOUT args...: runs ./train_llama, then reads <out>/log.txt
train() {
    local name=$1 t=$2; shift 2
    local od="$WORK/run_$name"
    rm -rf "$od"
    step "$name" "$t" ./train_llama -i "$TRAIN" -o "$od" --log-every 1 "$@"
    local st=$STEP_STATUS
    local stats="- - - -"
    if [ -f "$od/log.txt" ]; then
        stats=$(python3 -c "$PARSE_LOG_PY" "$od/log.txt" 2>/dev/null || echo "- - - -")
    fi
    read -r toks mfu mem loss <<< "$stats"
    R_NAME+=("$name"); R_STATUS+=("$st"); R_TOKS+=("$toks"); R_MFU+=("$mfu"); R_MEM+=("$mem"); R_LOSS+=("$loss")
    local ptoks pmfu ratio
    read -r ptoks pmfu <<< "$(predict "$@")"
    ratio=$(awk -v m="$toks" -v p="$ptoks" 'BEGIN { if (m + 0 > 0 && p + 0 > 0) printf "%.2f", m / p; else print "-" }')
    R_PTOKS+=("$ptoks"); R_PMFU+=("$pmfu"); R_RATIO+=("$ratio")
    local err=""
    [ "$st" != PASS ] && err=" | $STEP_ERR"
    # the trainer's last line, "peak memory held: X GiB (plan Y GiB)": the plan next to the peak
    local plan=$(grep -m1 -o 'peak memory held: .*(plan [0-9.]* GiB)' "$WORK/$name.log" | grep -o 'plan [0-9.]* GiB')
    record "$name" "$st" "$STEP_TIME" "tok/s $toks (model $ptoks, x$ratio) | MFU $mfu (model $pmfu) | peak $mem GiB${plan:+ ($plan)} | loss $loss$err"
}

if [ -x ./train_llama ] && [ -n "$TRAIN" ]; then
    train 60m_adamw 90 -c 60m -b 16 -t 256 -x "$STEPS_60M" -j "$VAL" -v 0 --eval-tokens 32768 --optimizer adamw -l 1e-3
    # the same with fp32 dense gradients (the fair baseline: the GEMM's fp32 C/D through the real
    # cuBLASLt, fp32 embedding and norm gradients; loss should track 60m_adamw, memory a bit higher)
    train 60m_adamw_fp32grads 90 -c 60m -b 16 -t 256 -x "$STEPS_60M" -j "$VAL" -v 0 --eval-tokens 32768 --optimizer adamw -l 1e-3 \
        --grad-dtype fp32
    train 60m_grass 90 -c 60m -b 16 -t 256 -x "$STEPS_60M" -j "$VAL" -v 0 --eval-tokens 32768 --optimizer grass --rank 128 -l 1e-2
    # the memory options in a real run: bf16 moments, fp32 master weights, recomputation (loss
    # should track 60m_grass closely; peak memory lower)
    train 60m_grass_lowmem 90 -c 60m -b 16 -t 256 -x "$STEPS_60M" -j "$VAL" -v 0 --eval-tokens 32768 --optimizer grass \
        --rank 128 -l 1e-2 --state-dtype bf16 --master-weights 1 --recompute 1 --select-on-device 1

    SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
    if [ -n "$SAN" ]; then  # Grass run: covers every kernel (dense AdamW too, for embeddings and head)
        step memcheck 150 "$SAN" --tool memcheck --leak-check no --error-exitcode 9 ./train_llama -i "$TRAIN" -j none \
            -c tiny -b 2 -t 64 -x 2 --optimizer grass --rank 16 --log-every 1 -o "$WORK/run_memcheck" \
            --state-dtype bf16 --master-weights 1 --recompute 1
        record memcheck "$STEP_STATUS" "$STEP_TIME" "$(grep -m1 'ERROR SUMMARY' "$WORK/memcheck.log" || echo 'no summary') ${STEP_ERR}"
    else
        record memcheck SKIPPED 0 "compute-sanitizer not found"
    fi

    # 13b Grass (B=1 T=256, 3 steps, rank RANK_13B): the plan, then the real run, whose peak must stay
    # under 40 GB. Host-side init of 13B parameters takes minutes, so this comes before the 1b runs.
    step 13b_plan 60 ./train_llama -c 13b -b 1 -t 256 --optimizer grass --rank "$RANK_13B" $SMALL13B_OPTS --plan-only 1
    PLAN13=$(grep -m1 -E '^ +total' "$WORK/13b_plan.log" | awk '{print $2, $3}')
    record 13b_plan "$STEP_STATUS" "$STEP_TIME" "planned total ${PLAN13:-?} (40 layers, rank $RANK_13B, B=1 T=256, $SMALL13B_OPTS) ${STEP_ERR}"
    [ "${SKIP_13B:-0}" = 1 ] || train 13b_grass 330 -c 13b -b 1 -t 256 -x 3 -j "$VAL" -v 0 --eval-tokens 512 --optimizer grass --rank "$RANK_13B" $SMALL13B_OPTS -l 5e-3
    mem13=-; [ "${R_NAME[${#R_NAME[@]}-1]:-}" = 13b_grass ] && mem13=${R_MEM[${#R_MEM[@]}-1]}
    if [[ "$mem13" =~ ^[0-9.]+$ ]]; then
        if awk "BEGIN { exit !($mem13 * 1.073741824 < 40) }"; then record 13b_under_40GB PASS 0 "peak $mem13 GiB < 40 GB"
        else record 13b_under_40GB FAIL 0 "peak $mem13 GiB >= 40 GB"; fi
        if awk "BEGIN { exit !($mem13 * 1.073741824 < 32) }"; then record 13b_under_32GB PASS 0 "peak $mem13 GiB < 32 GB (the aim)"
        else record 13b_under_32GB MISSED 0 "peak $mem13 GiB >= 32 GB (the aim; 40 GB is the target)"; fi
    else
        # fallback: 2 layers, to compare a measured peak with its plan (the plan's sums are the same code)
        train 13b_l2_grass 90 -c 13b --layers 2 -b 1 -t 256 -x 3 -j none --optimizer grass --rank "$RANK_13B" $SMALL13B_OPTS -l 5e-3
        PLAN2=$(grep -m1 -E '^ +total' "$WORK/13b_l2_grass.log" | awk '{print $2, $3}')
        S_NOTE[${#S_NOTE[@]}-1]+=" | plan ${PLAN2:-?}"
        record 13b_under_40GB UNKNOWN 0 "the full 13b run gave no step; planned ${PLAN13:-?} for 40 layers"
    fi

    train 1b_adamw 110 -c 1b -b "$B_1B" -t 1024 -x "$STEPS_1B" -j none --optimizer adamw -l 1e-3
    train 1b_grass 110 -c 1b -b "$B_1B" -t 1024 -x "$STEPS_1B" -j none --optimizer grass --rank 512 -l 1e-2

    for chk in attention_check gathered_gemm_check gemm_align_check classifier_check; do
        if [ -x build/dev_cuda/$chk ]; then
            step "$chk" 60 build/dev_cuda/$chk
            record "$chk" "$STEP_STATUS" "$STEP_TIME" "$(tail -n 1 "$WORK/$chk.log")"
        fi
    done
    # the same 1b AdamW run with cuDNN's fused attention (a build with cuDNN only; attention_check
    # above has compared its values and kernel times with the own kernels)
    if grep -q cudnnCreate ./train_llama 2>/dev/null; then
        train 1b_adamw_cudnn 110 -c 1b -b "$B_1B" -t 1024 -x "$STEPS_1B" -j none --optimizer adamw -l 1e-3 --attention cudnn
    else
        record 1b_adamw_cudnn SKIPPED 0 "train_llama was built without cuDNN (no cudnn_frontend headers)"
    fi
fi

# ---- report -----------------------------------------------------------------------------------------
{
    echo "# GPU check report"
    echo
    echo "- date: $DATE"
    echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(uncommitted changes)')"
    echo "- nvidia-smi: $SMI"
    echo "- backend: $(grep -h -m1 -o 'cuda: device.*' "$WORK"/*.log 2>/dev/null | head -n 1)"
    echo "- GPU_ARCH=$GPU_ARCH, data: ${TRAIN:-none}, total time $((SECONDS - T0)) s of a $BUDGET_S s budget"
    echo
    echo "## Checks"
    echo
    echo "| check | status | time (s) | notes |"
    echo "| --- | --- | --- | --- |"
    for i in "${!S_NAME[@]}"; do
        echo "| ${S_NAME[$i]} | ${S_STATUS[$i]} | ${S_TIME[$i]} | ${S_NOTE[$i]//|//} |"
    done
    echo
    echo "## Training throughput"
    echo
    echo "Median over steps 3.. of tok/s and MFU (the trainer's 6N + attention formula against the backend's peak),"
    echo "peak = backend_memory_peak (every backend_malloc, scratch included; not the CUDA context)."
    echo
    echo "model: dev/perf_model.py's prediction for the same flags on $PM_NOTE (a plain step; a roofline model with"
    echo "assumed efficiencies: \`python3 dev/perf_model.py --assumptions\`, docs/CUDA.md \"Performance model\"); measured / model"
    echo "is the tok/s ratio: below 1 the model is optimistic, above 1 pessimistic. Run the model on a run's flags"
    echo "(\`python3 dev/perf_model.py <flags>\`) for its kernel-by-kernel table."
    echo
    echo "| run | status | tok/s | model tok/s | measured / model | MFU | model MFU | peak GiB | loss first->last |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for i in "${!R_NAME[@]}"; do
        echo "| ${R_NAME[$i]} | ${R_STATUS[$i]} | ${R_TOKS[$i]} | ${R_PTOKS[$i]} | ${R_RATIO[$i]} | ${R_MFU[$i]} | ${R_PMFU[$i]} | ${R_MEM[$i]} | ${R_LOSS[$i]} |"
    done
    echo
    echo "13b Grass ($SMALL13B_OPTS) must stay under 40 GB (37.25 GiB) of GPU memory; the aim is 32 GB (29.8 GiB)."
    echo
    echo "## Kernel benchmarks (dev/cuda)"
    echo
    echo '```'
    for chk in attention_check gathered_gemm_check gemm_align_check classifier_check; do
        [ -f "$WORK/$chk.log" ] && grep -E 'TFLOP|TF/s|GB/s|FAIL' "$WORK/$chk.log"
    done
    echo '```'
    echo
    echo "Full output: check.log next to this file."
} > "$REPORT"

echo
echo "==== gpu_check summary ($((SECONDS - T0)) s; report: $REPORT) ===="
printf '%-22s %-10s %s\n' check status notes
for i in "${!S_NAME[@]}"; do printf '%-22s %-10s %s\n' "${S_NAME[$i]}" "${S_STATUS[$i]}" "${S_NOTE[$i]:0:110}"; done
