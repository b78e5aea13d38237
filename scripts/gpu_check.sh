#!/usr/bin/env bash
# scripts/gpu_check.sh: the one command for a GPU machine. It checks the CUDA build on hardware
# and times it beside PyTorch, in tiers, under a time budget, and leaves a markdown report and an
# archive of every log however it ends.
#
#   scripts/gpu_check.sh                      # on a GPU machine: $OUT/report.md, report.json, logs.tar.gz
#   GPU_CHECK_EMULATE=1 scripts/gpu_check.sh  # the same script here, on the emulated build, tiny shapes
#   scripts/gpu_check.sh --make-reference     # here: the emulator's losses for the e2e runs (see below)
#
# Tiers (docs/CUDA.md "gpu_check"), in this order:
#   priority (run while any time is left; each step's timeout is cut to what is left):
#     gpu (nvidia-smi: name, variant, driver, clocks, power limit), versions (nvcc, cuDNN and its
#     frontend, NCCL, Python packages, ldd of every binary), binaries (the prebuilt ones in
#     build/gpu_prebuilt where they load, else a build here without cuDNN, the rest in the
#     background), data, test_kernels_cuda, the e2e runs (d6, 10 steps, AdamW and Grass, each run
#     twice: the two runs must be bit-identical, and their losses must match the emulated build's
#     for the same sources within E2E_TOL), the init hash against the CPU's, 1b AdamW and Grass
#     (T=1024), the PyTorch peer (dev/bench_gpu_vs_torch.py, eager rows).
#   extras (each only when its estimated time still fits): 1b GaLore (refresh steps timed apart),
#     attention and GEMM benchmarks (dev/cuda), test_llama, the 60m runs, cuDNN (attention_check
#     and 1b AdamW with --attention cudnn), the 13b plan and a 3-step 13b Grass run (peak memory
#     against 40 GB and 32 GB), the remaining dev checks, the PyTorch peer's torch.compile rows,
#     compute-sanitizer memcheck last.
# Every step has a status: PASS, FAIL(rc), CRASH(SIG...) (a signal, `terminate called`, a
# segmentation fault, an illegal memory access), TIMEOUT, SKIPPED (with the reason: "needs a
# GPU", "out of time budget", a missing binary), or NOT RUN (the check was stopped before it).
# The report is rewritten before and after every step (a step that was running when the check was
# killed shows as RUNNING), the log archive after every step; an EXIT/TERM/INT trap completes both.
#
# The e2e reference: `scripts/gpu_check.sh --make-reference` (make gpu_reference) runs
# build/emu/train_llama on the e2e runs' data and flags and writes
# build/gpu_prebuilt/reference_losses.txt (the sources' hash, the commit, the data's hash, the
# losses, the init hash; with ./train_llama_cpu also the CPU fp32 build's distance from the
# emulated bf16 build, the scale E2E_TOL is set against) and the data to
# build/gpu_prebuilt/check_data. Carry build/gpu_prebuilt to the GPU machine.
#
# Environment: OUT (build/gpu_report), BUDGET_S (300; the script ends within about BUDGET_S + 15 s),
#   GPU_CHECK_EMULATE=1, GPU_CHECK_WORK (the logs; build/gpu_check[_emu]), GPU_CHECK_PREBUILT
#   (build/gpu_prebuilt), GPU_CHECK_REF (the reference file), GPU_CHECK_DATA (the data folder),
#   GPU_ARCH (sm_90), JOBS, B_1B (8), STEPS_1B (10), STEPS_60M (20), RANK_13B (256), E2E_TOL,
#   GPU_CHECK_BUILD=0 (never build on the machine: a step whose binary is missing is skipped),
#   GPU_CHECK_PEER_ARGS (appended to the peer's flags, e.g. "--device cpu -c tiny -b 2 -t 64" to try it on a CPU).
# For the tests (tests/test_gpu_check.sh): GPU_CHECK_FORCE_TIMEOUT=step[,step] (the step's
#   command sleeps and its timeout is GPU_CHECK_FORCE_TIMEOUT_S, 3 s), GPU_CHECK_FORCE_CRASH=
#   step[:SIG][,...] (the step's command kills itself with SIGSEGV or SIG).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

MAKE_REF=0
case "${1:-}" in
    "") ;;
    --make-reference) MAKE_REF=1 ;;
    --sources-hash) MAKE_REF=2 ;;  # for build/gpu_prebuilt/MANIFEST.txt: a line "sources <this>"
    -h|--help) sed -n '2,/^set -u/p' "$0" | grep -v '^set -u' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (scripts/gpu_check.sh [--make-reference | --sources-hash | --help])" >&2; exit 2 ;;
esac

EMU=${GPU_CHECK_EMULATE:-0}
[ "$EMU" = 1 ] || EMU=0
OUT=${OUT:-build/gpu_report}
BUDGET_S=${BUDGET_S:-300}
GPU_ARCH=${GPU_ARCH:-sm_90}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
PREBUILT=${GPU_CHECK_PREBUILT:-build/gpu_prebuilt}
if [ $EMU = 1 ]; then
    WORK=${GPU_CHECK_WORK:-build/gpu_check_emu}
    REF=${GPU_CHECK_REF:-build/emu/gpu_check_reference.txt}
    DATA_DIR=${GPU_CHECK_DATA:-build/emu/check_data}
else
    WORK=${GPU_CHECK_WORK:-build/gpu_check}
    REF=${GPU_CHECK_REF:-$PREBUILT/reference_losses.txt}
    DATA_DIR=${GPU_CHECK_DATA:-$PREBUILT/check_data}
fi
RESERVE_S=8  # kept for the last report and archive, and for stopping a step

# ---- the runs' shapes: the GPU's, and the emulated stand-ins (tiny shapes, seconds each on 2 cores) ----
B_1B=${B_1B:-8}
STEPS_1B=${STEPS_1B:-10}
STEPS_60M=${STEPS_60M:-20}
RANK_13B=${RANK_13B:-256}
# the synthetic Markov data (dev/data/make_synthetic.py, entropy 1.1 nats): vocab 512 lets a small
# model's loss fall visibly in 10 steps; every larger model reads it too (tokens < its vocab)
DATA_VOCAB=512
if [ $EMU = 0 ]; then
    E2E_SHAPE=(-c d6 --vocab 512 -b 4 -t 128)
    E2E_GRASS_RANK=32
    RUN_1B=(-c 1b -b "$B_1B" -t 1024 -x "$STEPS_1B" -j none)
    RUN_60M=(-c 60m -b 16 -t 256 -x "$STEPS_60M" -v 0 --eval-tokens 32768)
    RUN_13B=(-c 13b -b 1 -t 256 -x 3 -j none --optimizer grass --rank "$RANK_13B" --recompute 1 --state-dtype bf16 -l 5e-3)
    GALORE_OPTS=(--optimizer galore --rank 512 --update-freq 5 -l 1e-2)  # refreshes at steps 1 and 6
    DEV_ARGS_attention_check=(); DEV_ARGS_gathered_gemm_check=(); DEV_ARGS_gemm_align_check=(); DEV_ARGS_classifier_check=()
else
    E2E_SHAPE=(-c tiny --vocab 512 -b 4 -t 64)
    E2E_GRASS_RANK=8
    RUN_1B=(-c tiny --vocab 512 -b 2 -t 64 -x 5 -j none)
    RUN_60M=(-c tiny --vocab 512 -b 2 -t 64 -x 4 -v 0 --eval-tokens 256)
    RUN_13B=(-c tiny --vocab 512 -b 1 -t 64 -x 3 -j none --optimizer grass --rank 8 --recompute 1 --state-dtype bf16 -l 5e-3)
    GALORE_OPTS=(--optimizer galore --rank 8 --update-freq 2 -l 1e-2)
    # the sizes tests/run_all.sh runs them at in the emulator
    DEV_ARGS_attention_check=(1 64 2 1 32); DEV_ARGS_gathered_gemm_check=(64 48 72 16)
    DEV_ARGS_gemm_align_check=(16); DEV_ARGS_classifier_check=(16 97)
fi
E2E_STEPS=10
E2E_COMMON=("${E2E_SHAPE[@]}" -x "$E2E_STEPS" -v 0 --eval-tokens 4096 --seed 1337)
E2E_ADAMW=(--optimizer adamw -l 3e-3)
E2E_GRASS=(--optimizer grass --rank "$E2E_GRASS_RANK" --update-freq 5 -l 1e-2)
# The tolerance of the e2e losses against the emulator: the largest relative difference of a logged
# loss (train and val, 10 steps). The GPU and the emulator run the same bf16 program; they differ
# only in the order cuBLAS sums a GEMM's products and in tensor-core and libm rounding, a few fp32
# ulps that now and then flip one bf16 rounding. The CPU fp32 build differs from the emulated bf16
# build in every rounding; --make-reference measures that distance on the same runs and records it
# (2026-12-06, d6: 1.5e-3 AdamW, 4.1e-3 Grass, whose sampled rows follow the norms). The tolerance
# is twice it (at least 1e-3): a GPU run further from the emulator than that has a fault, not a
# rounding difference. E2E_TOL=x sets it; 5e-3 where the reference has no CPU distance. Step 1's
# loss is a forward pass at the initial weights, before any rounding can compound: there the fp32
# build was 6.7e-6 from bf16, and the tolerance is E2E_TOL_STEP1, 1e-4.
E2E_TOL=${E2E_TOL:-}
E2E_TOL_STEP1=${E2E_TOL_STEP1:-1e-4}
[ $EMU = 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the emulator on a shared 2-core machine

# ---- the one PyTorch peer line (dev/bench_gpu_vs_torch.py; flags checked against its --help) ----
peer_args() {  # ROWS BUDGET JSON: the peer's command line after python3 dev/bench_gpu_vs_torch.py (no spaces in values)
    echo -c 1b -b "$B_1B" -t 1024 --steps 10 --warmup 3 --rows "$1" --budget-s "$2" --json "$3" ${GPU_CHECK_PEER_ARGS:-}
    local r; for r in adamw grass galore; do
        [ -s "$WORK/run_1b_$r/log.txt" ] && echo --ours-log "$r=$WORK/run_1b_$r/log.txt"
    done
}

mkdir -p "$OUT" "$WORK" || { echo "error: cannot create '$OUT' or '$WORK'" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd); WORK=$(cd "$WORK" && pwd)
REPORT="$OUT/report.md"
JSON="$OUT/report.json"
ARCHIVE="$OUT/logs.tar.gz"
CHECK_LOG="$WORK/check.log"
T0=$SECONDS
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LINEBUF=(); command -v stdbuf >/dev/null 2>&1 && LINEBUF=(stdbuf -oL -eL)

left() { echo $((BUDGET_S - (SECONDS - T0))); }
log() { echo "[$((SECONDS - T0))s] $*" | tee -a "$CHECK_LOG"; }
sources_hash() {  # what the binaries are built from: the same on any copy of the tree, git or not
    (cd "$ROOT" && cat $(ls *.h *.cuh *.cu cuda/*.cuh optim/*.h 2>/dev/null | LC_ALL=C sort) | sha256sum | cut -c1-16)
}
git_commit() {
    local c; c=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || { echo "?"; return; }
    git -C "$ROOT" status --porcelain -- '*.h' '*.cuh' '*.cu' 2>/dev/null | grep -q . && c+="+changes"
    echo "$c"
}
[ $MAKE_REF = 2 ] && { sources_hash; exit 0; }
data_hash() { cat "$DATA_DIR"/check_train_*.bin "$DATA_DIR"/check_val_*.bin 2>/dev/null | sha256sum | cut -c1-16; }
# the trainer's init weight hash (a line like "init hash 0x1234abcd..."), or nothing:
init_hash_of() {  # the first hex number of 8+ digits after "hash" on the first line with "init ... hash"
    grep -m1 -aiE 'init[a-z_ ]*hash' "$1" 2>/dev/null | sed -E 's/.*[Hh][Aa][Ss][Hh]//' | grep -oiE '\b(0x)?[0-9a-f]{8,}\b' | head -n 1 \
        | sed 's/^0[xX]//' | tr 'A-F' 'a-f'
}
# "step=N loss=X grad_norm=Y" and "step=N val_loss=X" of a log.txt: what two identical runs share exactly
loss_lines() {
    sed -n -E 's/^(step=[0-9]+) (loss=[^ ]+) .*(grad_norm=[^ ]+).*/\1 \2 \3/p; s/^(step=[0-9]+ val_loss=[^ ]+).*/\1/p' "$1" 2>/dev/null
}

ensure_data() {  # the data every run reads; made here when it did not travel
    if ls "$DATA_DIR"/check_train_000000.bin "$DATA_DIR"/check_val_000000.bin >/dev/null 2>&1; then return 0; fi
    mkdir -p "$DATA_DIR" && python3 dev/data/make_synthetic.py --out-dir "$DATA_DIR" --name check --vocab $DATA_VOCAB \
        --train-tokens 400000 --val-tokens 20000 --train-shards 1
}
TRAIN_GLOB() { echo "$DATA_DIR/check_train_*.bin"; }
VAL_GLOB() { echo "$DATA_DIR/check_val_*.bin"; }

# ================================== --make-reference ===================================================
if [ $MAKE_REF = 1 ]; then
    EMU_TRAIN=build/emu/train_llama
    [ -x $EMU_TRAIN ] || { echo "error: $EMU_TRAIN not built (make build/emu/train_llama)" >&2; exit 1; }
    for f in *.h *.cuh *.cu cuda/*.cuh optim/*.h; do
        [ "$f" -nt $EMU_TRAIN ] && { echo "error: $f is newer than $EMU_TRAIN: rebuild it (make build/emu/train_llama)" >&2; exit 1; }
    done
    ensure_data > "$WORK/reference_data.log" 2>&1 || { cat "$WORK/reference_data.log"; echo "error: cannot write the data to $DATA_DIR" >&2; exit 1; }
    mkdir -p "$(dirname "$REF")"
    tmp="$REF.tmp"
    {
        echo "# gpu_check reference: build/emu/train_llama (the emulated bf16 GPU build) on the e2e runs, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "sources $(sources_hash)"
        echo "commit $(git_commit)"
        echo "data $(data_hash)"
        echo "flags ${E2E_COMMON[*]}"
    } > "$tmp"
    for opt in adamw grass; do
        [ $opt = adamw ] && o=("${E2E_ADAMW[@]}") || o=("${E2E_GRASS[@]}")
        echo "flags_$opt ${o[*]}" >> "$tmp"
        for b in emu cpu; do
            bin=$EMU_TRAIN; [ $b = cpu ] && bin=./train_llama_cpu
            [ -x "$bin" ] || { echo "# $bin not built: no CPU fp32 distance" >> "$tmp"; continue; }
            d="$WORK/reference/${opt}_$b"; rm -rf "$d"; mkdir -p "$WORK/reference"
            s=$SECONDS
            if ! OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" -i "$(TRAIN_GLOB)" -j "$(VAL_GLOB)" "${E2E_COMMON[@]}" "${o[@]}" -o "$d" \
                 > "$d.out" 2>&1; then
                tail -n 5 "$d.out"; echo "error: $bin $opt failed; see $d.out" >&2; rm -f "$tmp"; exit 1
            fi
            echo "$bin $opt: $((SECONDS - s)) s"
            if [ $b = emu ]; then
                loss_lines "$d/log.txt" | sed "s/^/$opt /" >> "$tmp"
                h=$(init_hash_of "$d.out"); echo "init_hash_$opt ${h:--}" >> "$tmp"
            else
                h=$(init_hash_of "$d.out"); echo "init_hash_cpu_$opt ${h:--}" >> "$tmp"
                # the distance the tolerance is set against: CPU fp32 vs emulated bf16, same run
                dist=$(python3 - "$WORK/reference/${opt}_emu/log.txt" "$d/log.txt" <<'PY'
import re, sys
def read(p):
    return {(m.group(2), int(m.group(1))): float(m.group(3)) for m in
            (re.match(r"step=(\d+) (loss|val_loss)=([-0-9.eE+naif]+)", l) for l in open(p)) if m}
a, b = read(sys.argv[1]), read(sys.argv[2])
print("%.3e" % max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-9) for k in a if k in b))
PY
)
                echo "cpu_fp32_distance_$opt $dist" >> "$tmp"
                echo "  CPU fp32 vs emulated bf16 ($opt): largest relative loss difference $dist"
            fi
        done
    done
    mv "$tmp" "$REF"
    echo "wrote $REF (data in $DATA_DIR)"
    cat "$REF" | grep -v '^adamw\|^grass'
    exit 0
fi

# a check starts from an empty log folder (only what this script writes there is removed)
rm -rf "$WORK"/*.log "$WORK"/*.md "$WORK"/*.json "$WORK"/run_* "$WORK"/runs "$WORK"/versions.sh "$WORK"/cudnn_tree "$WORK"/reference
rm -f "$REPORT" "$JSON" "$ARCHIVE"

# ================================== the plan: every step, its tier, in order ============================
# plan NAME TIER GPU_ONLY EST_S CAP_S: EST_S, the time an extra needs to be started; CAP_S, its timeout.
# A step with CAP_S 0 is a check of earlier steps' results (kind "check": it runs nothing, costs no time).
P_NAME=(); P_TIER=(); P_GPU=(); P_EST=(); P_CAP=(); P_KIND=(); P_STATUS=(); P_TIME=(); P_NOTE=()
declare -A P_IDX=()
plan() {
    local i=${#P_NAME[@]}
    P_NAME+=("$1"); P_TIER+=("$2"); P_GPU+=("$3"); P_EST+=("$4"); P_CAP+=("$5")
    if [ "$5" = 0 ]; then P_KIND+=(check); else P_KIND+=(run); fi
    P_STATUS+=("PENDING"); P_TIME+=(""); P_NOTE+=("")
    P_IDX[$1]=$i
}
plan gpu               priority 1   5   30
plan binaries          priority 0   5  240
plan versions          priority 0  10   60
plan data              priority 0   5   60
plan test_kernels_cuda priority 0  30  150
plan e2e_adamw         priority 0  10   60
plan e2e_adamw_rerun   priority 0  10   60
plan e2e_grass         priority 0  10   60
plan e2e_grass_rerun   priority 0  10   60
plan e2e_adamw_identical priority 0 0    0
plan e2e_grass_identical priority 0 0    0
plan e2e_adamw_vs_emu  priority 0   0    0
plan e2e_grass_vs_emu  priority 0   0    0
plan init_hash         priority 0   0    0
plan 1b_adamw          priority 0  45  120
plan 1b_grass          priority 0  45  120
plan torch_peer        priority 1  90  150
plan 1b_galore         extra    0  90  150
plan attention_check   extra    0  20   60
plan gathered_gemm_check extra  0  20   60
plan gemm_align_check  extra    0  20   60
plan test_llama        extra    0  40  120
plan 60m_adamw         extra    0  25   90
plan 60m_adamw_fp32grads extra  0  25   90
plan 60m_grass         extra    0  25   90
plan 60m_grass_lowmem  extra    0  25   90
plan cudnn_attention_check extra 1 30   60
plan 1b_adamw_cudnn    extra    1  45  120
plan 13b_plan          extra    0  10   60
plan 13b_grass         extra    1 150  300
plan 13b_memory        extra    1   0    0
plan classifier_check  extra    0  20   60
plan test_emu_gpu      extra    0  15   60
plan torch_peer_compile extra   1 120  240
plan memcheck          extra    1  60  150
if [ $EMU = 1 ]; then  # what the emulated stand-ins take here (2 cores)
    for s in e2e_adamw e2e_adamw_rerun e2e_grass e2e_grass_rerun 1b_adamw 1b_grass 1b_galore 60m_adamw \
             60m_adamw_fp32grads 60m_grass 60m_grass_lowmem test_emu_gpu classifier_check gemm_align_check; do
        P_EST[${P_IDX[$s]}]=5
    done
    P_EST[${P_IDX[test_kernels_cuda]}]=10; P_EST[${P_IDX[test_llama]}]=30
    P_EST[${P_IDX[attention_check]}]=10; P_EST[${P_IDX[gathered_gemm_check]}]=10
fi

# ================================== the report ==========================================================
CHECK_STATE="RUNNING"
CURRENT=""
SRC_HASH=$(sources_hash); GIT_COMMIT=$(git_commit); DATA_HASH=""
R_NAME=(); R_STATUS=(); R_TOKS=(); R_MFU=(); R_XMFU=(); R_PTOKS=(); R_PMFU=(); R_PXMFU=(); R_RATIO=(); R_PEER=()
R_MEM=(); R_LOSS=(); R_MS=()
declare -A VER=()  # gpu name, variant, driver, ... for the header
VER[gpu]="-"; VER[variant]="-"; VER[driver]="-"; VER[clocks]="-"; VER[power]="-"
PM_GPU=h100; PM_NOTE="H100 SXM"
BG_PID=""; STEP_PID=""; FINALIZED=0

md() { local s=${1//|/\/}; printf '%s' "${s//$'\n'/ }"; }  # a markdown table cell
js() {  # a JSON string
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/ }; s=${s//$'\r'/}
    printf '"%s"' "$s"
}

counts() {
    local pass=0 fail=0 crash=0 tmo=0 skip=0 other=0 st
    for st in "${P_STATUS[@]}"; do
        case "$st" in
            PASS) pass=$((pass + 1)) ;; FAIL*|MISSED*) fail=$((fail + 1)) ;; CRASH*) crash=$((crash + 1)) ;;
            TIMEOUT*) tmo=$((tmo + 1)) ;; SKIPPED*) skip=$((skip + 1)) ;; *) other=$((other + 1)) ;;
        esac
    done
    echo "$pass passed, $fail failed, $crash crashed, $tmo timed out, $skip skipped, $other other"
}

write_report() {
    local tmp="$REPORT.tmp" i
    {
        echo "# GPU check report"
        echo
        if [ $EMU = 1 ]; then echo "**Emulated** (GPU_CHECK_EMULATE=1): the emulated build (build/emu) on the CPU at tiny shapes; no timing here means anything."; echo; fi
        echo "- state: **$CHECK_STATE**$( [ -n "$CURRENT" ] && echo " (step $CURRENT)")"
        echo "- steps: $(counts)"
        echo "- started $START_DATE; $((SECONDS - T0)) s of a $BUDGET_S s budget"
        echo "- sources $SRC_HASH, git $GIT_COMMIT"
        echo "- GPU: ${VER[gpu]} (${VER[variant]}); driver ${VER[driver]}; clocks ${VER[clocks]}; power ${VER[power]}"
        echo "- binaries: ${BIN_NOTE:-not resolved yet}"
        echo "- data: $DATA_DIR (${DATA_HASH:--}); reference: $REF"
        echo
        echo "## Steps"
        echo
        echo "| # | tier | step | status | s | notes |"
        echo "| --- | --- | --- | --- | --- | --- |"
        for i in "${!P_NAME[@]}"; do
            echo "| $((i + 1)) | ${P_TIER[$i]}$( [ "${P_KIND[$i]}" = check ] && echo ' (check)') | ${P_NAME[$i]} | ${P_STATUS[$i]} | ${P_TIME[$i]} | $(md "${P_NOTE[$i]}") |"
        done
        echo
        echo "## Throughput"
        echo
        echo "Medians over the plain steps from step 3 (refresh steps apart). MFU: the trainer's 6N + attention FLOPs;"
        echo "exec MFU: the FLOPs it executes (Grass's smaller GEMMs, recomputation). model: dev/perf_model.py for the"
        echo "same flags on $PM_NOTE (a plain step); meas/model below 1: the model is optimistic. vs PyTorch: our tok/s"
        echo "over the peer's row (bf16: pure bf16, amp: fp32 master + autocast) on this GPU. ms: plain step (refresh step)."
        echo
        echo "| run | status | tok/s | MFU | exec MFU | model tok/s | model MFU | model exec MFU | meas/model | vs PyTorch | ms (refresh) | peak GiB | loss first->last |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        for i in "${!R_NAME[@]}"; do
            echo "| ${R_NAME[$i]} | ${R_STATUS[$i]} | ${R_TOKS[$i]} | ${R_MFU[$i]} | ${R_XMFU[$i]} | ${R_PTOKS[$i]} | ${R_PMFU[$i]} | ${R_PXMFU[$i]} | ${R_RATIO[$i]} | ${R_PEER[$i]:--} | ${R_MS[$i]} | ${R_MEM[$i]} | ${R_LOSS[$i]} |"
        done
        if [ -s "$WORK/e2e_losses.md" ]; then echo; echo "## e2e losses against the emulator"; echo; cat "$WORK/e2e_losses.md"; fi
        local pj
        for pj in "$WORK"/torch_peer*.table.md; do
            [ -s "$pj" ] || continue
            echo; echo "## PyTorch peer ($(basename "$pj" .table.md))"; echo; cat "$pj"
        done
        if ls "$WORK"/*_check.log >/dev/null 2>&1; then
            echo; echo "## Kernel benchmarks (dev/cuda)"; echo; echo '```'
            for pj in "$WORK"/*_check.log; do
                grep -E 'TFLOP|TF/s|GB/s|FAIL|passed' "$pj" 2>/dev/null | head -n 40 | sed "s|^|$(basename "$pj" .log): |"
            done
            echo '```'
        fi
        if [ -s "$WORK/versions.log" ]; then
            echo; echo "## Versions"; echo; echo '```'; grep -v '^\$ ' "$WORK/versions.log" | head -n 80; echo '```'
        fi
        echo
        echo "Every log: logs.tar.gz beside this report (check.log, one log per step, the runs' log.txt)."
    } > "$tmp" 2>/dev/null && mv -f "$tmp" "$REPORT"
    {
        echo "{"
        echo " \"emulated\": $EMU, \"state\": $(js "$CHECK_STATE"), \"elapsed_s\": $((SECONDS - T0)), \"budget_s\": $BUDGET_S,"
        echo " \"sources\": $(js "$SRC_HASH"), \"git\": $(js "$GIT_COMMIT"), \"gpu\": $(js "${VER[gpu]}"),"
        echo " \"steps\": ["
        for i in "${!P_NAME[@]}"; do
            printf '  {"name": %s, "tier": %s, "kind": %s, "gpu_only": %s, "status": %s, "seconds": %s, "note": %s}%s\n' "$(js "${P_NAME[$i]}")" \
                "$(js "${P_TIER[$i]}")" "$(js "${P_KIND[$i]}")" "${P_GPU[$i]}" "$(js "${P_STATUS[$i]}")" "${P_TIME[$i]:-null}" "$(js "${P_NOTE[$i]}")" \
                "$( [ $i -lt $((${#P_NAME[@]} - 1)) ] && echo ,)"
        done
        echo " ],"
        echo " \"runs\": ["
        for i in "${!R_NAME[@]}"; do
            printf '  {"name": %s, "status": %s, "tok_s": %s, "mfu": %s, "mfu_exec": %s, "model_tok_s": %s, "model_mfu": %s, "model_mfu_exec": %s, "vs_pytorch": %s, "step_ms": %s, "peak_gib": %s, "loss": %s}%s\n' \
                "$(js "${R_NAME[$i]}")" "$(js "${R_STATUS[$i]}")" "$(js "${R_TOKS[$i]}")" "$(js "${R_MFU[$i]}")" "$(js "${R_XMFU[$i]}")" \
                "$(js "${R_PTOKS[$i]}")" "$(js "${R_PMFU[$i]}")" "$(js "${R_PXMFU[$i]}")" "$(js "${R_PEER[$i]:--}")" \
                "$(js "${R_MS[$i]}")" "$(js "${R_MEM[$i]}")" "$(js "${R_LOSS[$i]}")" "$( [ $i -lt $((${#R_NAME[@]} - 1)) ] && echo ,)"
        done
        echo " ]"
        echo "}"
    } > "$JSON.tmp" 2>/dev/null && mv -f "$JSON.tmp" "$JSON"
}

write_archive() {  # every log (no checkpoint, data or copied tree) as one file beside the report
    tar -czf "$ARCHIVE.tmp" -C "$(dirname "$WORK")" --exclude='*.bin' --exclude='*.tmp' --exclude='cudnn_tree' \
        --exclude='check_data' "$(basename "$WORK")" 2>/dev/null
    [ -f "$ARCHIVE.tmp" ] && mv -f "$ARCHIVE.tmp" "$ARCHIVE"
}

set_step() {  # NAME STATUS SECONDS NOTE
    local i=${P_IDX[$1]}
    P_STATUS[$i]=$2; P_TIME[$i]=$3; P_NOTE[$i]=$4
    log "$(printf '%-22s %-16s %4ss  %s' "$1" "$2" "$3" "${4:0:160}")"
}
checkpoint_report() { write_report; write_archive; }

finalize() {  # on any end: stop what runs, mark what did not run, write the report and the archive
    [ $FINALIZED = 1 ] && return
    FINALIZED=1
    if [ -n "$STEP_PID" ] && kill -0 "$STEP_PID" 2>/dev/null; then
        kill -TERM "$STEP_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6; do kill -0 "$STEP_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$STEP_PID" 2>/dev/null
    fi
    if [ -n "$BG_PID" ]; then kill -TERM -- "-$BG_PID" 2>/dev/null; fi
    local i
    for i in "${!P_NAME[@]}"; do
        case "${P_STATUS[$i]}" in
            RUNNING) P_STATUS[$i]="KILLED"; P_NOTE[$i]="the check was stopped while this step ran ($CHECK_STATE); its log is in the archive" ;;
            PENDING) P_STATUS[$i]="NOT RUN"; P_NOTE[$i]="the check ended before this step ($CHECK_STATE)" ;;
        esac
    done
    CURRENT=""
    [ -n "${RUN_BASE_SHM:-}" ] && rm -rf "$RUN_BASE_SHM"
    write_report; write_archive
    echo "gpu_check: $CHECK_STATE after $((SECONDS - T0)) s: $(counts); report $REPORT, logs $ARCHIVE" | tee -a "$CHECK_LOG"
}
on_signal() {
    CHECK_STATE="INTERRUPTED by SIG$1 at $((SECONDS - T0)) s"
    finalize
    trap - EXIT
    exit $((128 + $(kill -l "$1")))
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP
trap '[ "$CHECK_STATE" = RUNNING ] && CHECK_STATE="ENDED EARLY (the script exited at $((SECONDS - T0)) s)"; finalize' EXIT

# ================================== running a step =====================================================
# gate NAME: 0 when the step should run; else records SKIPPED with the reason
gate() {
    local i=${P_IDX[$1]} l
    l=$(left)
    if [ "${P_GPU[$i]}" = 1 ] && [ $EMU = 1 ]; then set_step "$1" SKIPPED 0 "needs a GPU"; return 1; fi
    if [ "${P_TIER[$i]}" = extra ] && (( l < ${P_EST[$i]} + RESERVE_S )); then
        set_step "$1" SKIPPED 0 "out of time budget (${l} s left, needs about ${P_EST[$i]} s)"; return 1
    fi
    if (( l < RESERVE_S + 2 )); then set_step "$1" SKIPPED 0 "out of time budget (${l} s left)"; return 1; fi
    return 0
}
forced() {  # LISTVAR NAME: the entry of NAME in a comma-separated list (NAME or NAME:ARG), or nothing
    local e
    for e in ${1//,/ }; do [ "${e%%:*}" = "$2" ] && { echo "$e"; return 0; }; done
    return 1
}
signame() { local n; n=$(kill -l "$1" 2>/dev/null) && echo "SIG$n" || echo "signal $1"; }

# run_cmd NAME CMD...: runs CMD under the step's timeout, output to $WORK/NAME.log; sets RC, DT, ST, WHY
run_cmd() {
    local name=$1; shift
    local i=${P_IDX[$name]} t l f
    l=$(left)
    t=${P_CAP[$i]}; CLAMPED=""
    (( t > l - RESERVE_S )) && { t=$((l - RESERVE_S)); CLAMPED=" (the rest of the budget; its own limit is ${P_CAP[$i]} s)"; }
    (( t < 1 )) && t=1
    local cmd=("$@")
    if f=$(forced "${GPU_CHECK_FORCE_TIMEOUT:-}" "$name"); then
        t=${GPU_CHECK_FORCE_TIMEOUT_S:-3}; CLAMPED=" (forced: GPU_CHECK_FORCE_TIMEOUT)"; cmd=(sleep 100000)
    elif f=$(forced "${GPU_CHECK_FORCE_CRASH:-}" "$name"); then
        local sig=SEGV; [[ "$f" == *:* ]] && sig=${f#*:}
        cmd=(bash -c "echo 'forced crash of $name (GPU_CHECK_FORCE_CRASH): kill -$sig'; kill -$sig \$\$")
    fi
    P_STATUS[$i]=RUNNING; P_TIME[$i]=""; P_NOTE[$i]="started at $((SECONDS - T0)) s, timeout $t s"; CURRENT=$name
    write_report
    local log="$WORK/$name.log" s=$SECONDS
    printf '$ %s\n' "${cmd[*]}" > "$log"
    echo "=== $name (timeout ${t}s): ${cmd[*]}" >> "$CHECK_LOG"
    timeout -k 5 "$t" "${LINEBUF[@]}" "${cmd[@]}" >> "$log" 2>&1 &
    STEP_PID=$!
    wait "$STEP_PID"; RC=$?
    STEP_PID=""; CURRENT=""
    DT=$((SECONDS - s))
    tail -n 40 "$log" >> "$CHECK_LOG"
    classify "$RC" "$log" "$DT" "$t"
}

# classify RC LOG DT T: ST (PASS, FAIL(rc), CRASH(...), TIMEOUT, SKIPPED) and WHY
CRASH_RE='terminate called|Segmentation fault|illegal memory access|illegal instruction|misaligned address|core dumped|Aborted|stack smashing|double free|corrupted|unspecified launch failure'
classify() {
    local rc=$1 log=$2 dt=$3 t=$4 line
    WHY=""
    line=$(grep -m1 -aE "$CRASH_RE" "$log" 2>/dev/null | cut -c1-200)
    if (( rc == 0 )); then
        if grep -aqE 'no CUDA device.*skipped|^skipped: needs a GPU' "$log"; then ST=SKIPPED; WHY="the binary found no CUDA device"; else ST=PASS; fi
        return
    fi
    if (( rc == 124 )) || { (( rc == 137 )) && (( dt >= t )); }; then ST=TIMEOUT; WHY="stopped at its ${t} s limit${CLAMPED:-}"; return; fi
    if (( rc > 128 && rc < 160 )); then ST="CRASH($(signame $((rc - 128))))"; WHY=${line:-"killed by $(signame $((rc - 128)))"}; return; fi
    if [ -n "$line" ]; then
        case "$line" in
            *"terminate called"*) ST="CRASH(terminate)" ;; *"illegal memory access"*) ST="CRASH(illegal memory access)" ;;
            *"Segmentation fault"*) ST="CRASH(SIGSEGV)" ;; *Aborted*) ST="CRASH(SIGABRT)" ;; *) ST="CRASH" ;;
        esac
        WHY=$line; return
    fi
    ST="FAIL($rc)"
    WHY=$(grep -m1 -aE '^(error|FAIL|fatal)|[Ee]rror:|Traceback' "$log" 2>/dev/null | cut -c1-200)
    [ -n "$WHY" ] || WHY=$(grep -av -e '^\s*$' -e '^\$ ' "$log" 2>/dev/null | tail -n 1 | cut -c1-200)
}

# step NAME NOTE_CMD CMD...: gate, run, record; the note is the output of NOTE_CMD (a function or "-")
step() {
    local name=$1 note_fn=$2; shift 2
    gate "$name" || return 1
    run_cmd "$name" "$@"
    local note=""
    [ "$note_fn" != - ] && note=$($note_fn "$WORK/$name.log" 2>/dev/null)
    [ -n "$WHY" ] && note="${note:+$note | }$WHY"
    set_step "$name" "$ST" "$DT" "$note"
    checkpoint_report
    [ "$ST" = PASS ]
}
summary_line() { grep -aoE '[0-9]+ passed, [0-9]+ failed.*|no CUDA device.*|^skipped: needs a GPU.*' "$1" | tail -n 1; }
last_line() { grep -av -e '^\s*$' -e '^\$ ' "$1" | tail -n 1 | cut -c1-200; }

# ================================== the binaries ========================================================
loads() { [ -x "$1" ] && ! ldd "$1" 2>&1 | grep -q 'not found'; }
BIN_NAMES=(train_llama test_kernels_cuda test_llama attention_check gathered_gemm_check gemm_align_check classifier_check test_emu_gpu)
declare -A BIN=() BIN_WHY=()
fallback_path() {  # where `make` puts NAME in this tree (GPU build), or where the emulated build has it
    if [ $EMU = 1 ]; then
        case $1 in test_emu_gpu) echo build/emu/test_emu ;; *) echo "build/emu/$1" ;; esac
        return
    fi
    case $1 in
        train_llama|test_llama) echo "./$1" ;;
        test_kernels_cuda|test_emu_gpu) echo "tests/bin/$1" ;;
        *) echo "build/dev_cuda/$1" ;;
    esac
}
resolve_bins() {
    local b p
    for b in "${BIN_NAMES[@]}"; do
        BIN[$b]=""; BIN_WHY[$b]=""
        if [ $EMU = 0 ] && loads "$PREBUILT/$b"; then BIN[$b]=$PREBUILT/$b; continue; fi
        p=$(fallback_path "$b")
        if loads "$p"; then BIN[$b]=$p; continue; fi
        if [ $EMU = 1 ]; then BIN_WHY[$b]="$p not built (make $p)"
        elif [ -x "$PREBUILT/$b" ]; then BIN_WHY[$b]="$PREBUILT/$b does not load here ($(ldd "$PREBUILT/$b" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')) and $p is not built"
        else BIN_WHY[$b]="neither $PREBUILT/$b nor $p is built"; fi
    done
}
# have_bin STEP NAME: 0 when NAME resolved; else records STEP as SKIPPED with the reason
have_bin() {
    [ -n "${BIN[$2]:-}" ] && return 0
    local why=${BIN_WHY[$2]:-"$2 not resolved"}
    [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null && why+=" (the background build is still running)"
    gate "$1" && set_step "$1" SKIPPED 0 "$why"
    return 1
}
bg_build_done() {  # re-resolve once the background build has ended
    [ -n "$BG_PID" ] && ! kill -0 "$BG_PID" 2>/dev/null && { resolve_bins; BG_PID=""; }
}

# ================================== the runs ============================================================
# the trainer's log.txt: medians of tok/s, MFU and exec MFU over the plain steps from step 3, peak
# memory, the first and last loss, the plain and refresh step times
read -r -d '' PARSE_LOG_PY <<'EOF'
import statistics, sys
steps, refresh = [], set()
for line in open(sys.argv[1]):
    if not line.startswith("step="): continue
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if kv.get("refresh") == "1": refresh.add(int(kv["step"]))
    elif "loss" in kv and "tok_per_s" in kv: steps.append(kv)
if not steps:
    print("- - - - - - -"); sys.exit()
plain = [r for r in steps if int(r["step"]) >= 3 and int(r["step"]) not in refresh] or steps[-1:]
ref = [r for r in steps if int(r["step"]) > 1 and int(r["step"]) in refresh]
med = lambda k, rows: statistics.median(float(r[k]) for r in rows)
pct = lambda v: "%.1f%%" % (100 * v) if v >= 0 else "n/a"
ms = "%.1f" % med("dt_ms", plain) + (" (%.1f)" % med("dt_ms", ref) if ref else "")
print("%.0f %s %s %.2f %.3f->%.3f %s" % (med("tok_per_s", plain), pct(med("mfu", plain)), pct(med("mfu_exec", plain)),
      max(float(r["mem_gib"]) for r in steps), float(steps[0]["loss"]), float(steps[-1]["loss"]), ms.replace(" ", "_")))
EOF
# dev/perf_model.py's prediction for a plain step of the same flags: tok/s, MFU, exec MFU, and the
# trainer flags it does not model (left out of its command line; "-" when none)
read -r -d '' PREDICT_PY <<'EOF'
import json, re, subprocess, sys
gpu, argv, dropped = sys.argv[1], sys.argv[2:], []
for _ in range(3):
    p = subprocess.run([sys.executable, "dev/perf_model.py", "--json", "--gpu", gpu] + argv, capture_output=True, text=True, timeout=60)
    m = re.search(r"unrecognized arguments: (.*)", p.stderr)
    if p.returncode == 0 or not m: break
    bad = m.group(1).split()
    dropped += bad
    argv = [a for a in argv if a not in bad]
try:
    r = json.loads(p.stdout); g = r["gpus"][gpu]
    ex = r["executed_flops_per_token"]["plain"] / r["model_flops_per_token"]
    print("%.0f %.1f%% %.1f%% %s" % (g["plain_tok_s"], 100 * g["plain_mfu"], 100 * g["plain_mfu"] * ex, ",".join(dropped) or "-"))
except Exception:
    print("- - - -")
EOF
predict() {
    [ -f dev/perf_model.py ] || { echo "- - - -"; return; }
    timeout 120 python3 -c "$PREDICT_PY" "$PM_GPU" "$@" 2>/dev/null || echo "- - - -"
}
RUN_BASE="$WORK/runs"
if [ $EMU = 0 ] && [ -d /dev/shm ] && [ -w /dev/shm ] && \
   (( $(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}' || echo 0) > 48 * 1024 * 1024 )); then
    RUN_BASE_SHM=/dev/shm/gpu_check.$$; RUN_BASE=$RUN_BASE_SHM  # the final checkpoints, written fast and dropped
fi
# train NAME ARGS...: a training run (the trainer always writes a checkpoint at the end: it goes to
# RUN_BASE and is deleted after its hash is kept); its row in the throughput table
train() {
    local name=$1; shift
    have_bin "$name" train_llama || return 1
    gate "$name" || return 1
    local od="$RUN_BASE/$name"
    rm -rf "$od" "$WORK/run_$name"; mkdir -p "$WORK/run_$name"
    run_cmd "$name" "${BIN[train_llama]}" -i "$(TRAIN_GLOB)" -o "$od" --log-every 1 "$@"
    local st=$ST why=$WHY
    [ -f "$od/log.txt" ] && cp "$od/log.txt" "$WORK/run_$name/log.txt"
    local m; m=$(ls "$od"/model_*.bin 2>/dev/null | tail -n 1)
    [ -n "$m" ] && sha256sum < "$m" | cut -c1-64 > "$WORK/run_$name/model.sha256"
    rm -rf "$od"
    local toks mfu xmfu mem loss ms ptoks pmfu pxmfu pdrop ratio
    read -r toks mfu xmfu mem loss ms <<< "$(python3 -c "$PARSE_LOG_PY" "$WORK/run_$name/log.txt" 2>/dev/null || echo '- - - - - -')"
    ms=${ms//_/ }
    read -r ptoks pmfu pxmfu pdrop <<< "$(predict "$@")"
    ratio=$(awk -v m="$toks" -v p="$ptoks" 'BEGIN { if (m + 0 > 0 && p + 0 > 0) printf "%.2f", m / p; else print "-" }')
    R_NAME+=("$name"); R_STATUS+=("$st"); R_TOKS+=("${toks:--}"); R_MFU+=("${mfu:--}"); R_XMFU+=("${xmfu:--}")
    [ "${pdrop:--}" != - ] && ptoks+=" (without ${pdrop//,/ })"
    R_PTOKS+=("${ptoks:--}"); R_PMFU+=("${pmfu:--}"); R_PXMFU+=("${pxmfu:--}"); R_RATIO+=("$ratio"); R_PEER+=("-")
    R_MEM+=("${mem:--}"); R_LOSS+=("${loss:--}"); R_MS+=("${ms:--}")
    local plan_line; plan_line=$(grep -m1 -ao 'peak memory held: .*' "$WORK/$name.log")
    local note="tok/s ${toks:--} (model ${ptoks:--}) | MFU ${mfu:--}, exec ${xmfu:--} | ${plan_line:-no peak line} | loss ${loss:--}"
    [ -n "$why" ] && note+=" | $why"
    set_step "$name" "$st" "$DT" "$note"
    checkpoint_report
    [ "$st" = PASS ]
}

# ================================== priority tier ======================================================
log "gpu_check: $( [ $EMU = 1 ] && echo emulated || echo GPU ) mode, budget $BUDGET_S s, work $WORK, report $REPORT"
write_report

# ---- gpu: nvidia-smi --------------------------------------------------------------------------------
if gate gpu; then
    run_cmd gpu nvidia-smi --query-gpu=name,pci.device_id,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.max.memory,power.limit,power.max_limit,temperature.gpu,mig.mode.current \
        --format=csv,noheader
    if [ "$ST" = PASS ]; then
        IFS=, read -r g_name g_dev g_drv g_mem g_clk g_maxclk g_maxmem g_pl g_plmax g_temp g_mig <<< "$(grep -v '^\$' "$WORK/gpu.log" | head -n 1)"
        VER[gpu]="$(echo $g_name) $(echo $g_mem)"; VER[driver]=$(echo $g_drv)
        VER[clocks]="SM $(echo $g_clk) (max $(echo $g_maxclk)), memory max $(echo $g_maxmem)"; VER[power]="limit $(echo $g_pl) (max $(echo $g_plmax))"
        # the variant: SXM or PCIe (names say PCIe/NVL; else an SXM part has a 700 W board limit)
        case "$g_name" in
            *PCIe*|*NVL*) VER[variant]="PCIe/NVL" ;;
            *) awk -v p="$g_plmax" 'BEGIN { exit !(p + 0 >= 600) }' && VER[variant]="SXM" || VER[variant]="PCIe? (power max $(echo $g_plmax))" ;;
        esac
        case "$g_name" in
            *H200*) PM_GPU=h200; PM_NOTE="H200" ;;
            *H100*) PM_GPU=h100; PM_NOTE="H100 SXM"
                    # the PCIe card has its own figures where dev/perf_model.py knows it (wip_perf: "h100pcie")
                    if [ "${VER[variant]}" != SXM ]; then
                        pmh=$(python3 dev/perf_model.py --help 2>/dev/null)
                        if grep -q 'h100pcie' <<< "$pmh"; then PM_GPU=h100pcie; PM_NOTE="H100 PCIe"
                        else PM_NOTE="H100 SXM (this is a PCIe card; dev/perf_model.py has no PCIe figures)"; fi
                    fi ;;
            *) PM_NOTE="H100 SXM (this GPU is neither an H100 nor an H200: the model's figures are the H100's)" ;;
        esac
        note="${VER[gpu]}, ${VER[variant]}, driver ${VER[driver]}, ${VER[clocks]}, power ${VER[power]}, MIG $(echo $g_mig)"
    else note=$WHY; fi
    set_step gpu "$ST" "$DT" "$note"
fi

# ---- binaries: prebuilt where they load, else built here (priority first, the rest in the background)
resolve_bins
if gate binaries; then
    s=$SECONDS; note=""; st=PASS
    if [ $EMU = 0 ] && [ "${GPU_CHECK_BUILD:-1}" = 1 ] && { [ -z "${BIN[train_llama]}" ] || [ -z "${BIN[test_kernels_cuda]}" ]; }; then
        # the fast build of what the priority tier needs: no cuDNN (its frontend alone takes minutes)
        need=(); [ -z "${BIN[train_llama]}" ] && need+=(train_llama); [ -z "${BIN[test_kernels_cuda]}" ] && need+=(tests/bin/test_kernels_cuda)
        run_cmd binaries make -j"$JOBS" "${need[@]}" GPU_ARCH="$GPU_ARCH" USE_CUDNN=0 NO_MPI=1
        st=$ST; note="built here: make ${need[*]} USE_CUDNN=0 ($DT s)${WHY:+: $WHY}"
        resolve_bins
    fi
    missing=(); for b in "${BIN_NAMES[@]}"; do [ -z "${BIN[$b]}" ] && missing+=("$b"); done
    if [ $EMU = 0 ] && [ "${GPU_CHECK_BUILD:-1}" = 1 ] && command -v make >/dev/null; then
        # the background: the missing extras' binaries, then train_llama and attention_check with cuDNN
        # in a copy of the tree (so that nothing the priority tier runs is rewritten under it)
        need_cudnn=1
        [ -n "${BIN[train_llama]}" ] && ldd "${BIN[train_llama]}" 2>/dev/null | grep -q libcudnn && need_cudnn=0
        targets=()
        for b in "${missing[@]}"; do
            case $b in test_llama) targets+=(test_llama) ;; test_emu_gpu) targets+=(tests/bin/test_emu_gpu) ;;
                       train_llama|test_kernels_cuda) ;; *) targets+=("build/dev_cuda/$b") ;; esac
        done
        if (( ${#targets[@]} > 0 || need_cudnn )); then
            mkdir -p "$WORK/cudnn_tree"
            # the frontend's headers, when they travelled (the machine has no network)
            [ -z "${CUDNN_FRONTEND_INCLUDE:-}" ] && [ -f build/cudnn_frontend/include/cudnn_frontend.h ] && \
                export CUDNN_FRONTEND_INCLUDE=$ROOT/build/cudnn_frontend/include
            setsid bash -c "
                ${targets[*]:+make -j$JOBS ${targets[*]} GPU_ARCH=$GPU_ARCH USE_CUDNN=0 NO_MPI=1 || echo 'background: the extras build failed'}
                if [ $need_cudnn = 1 ]; then
                    tar -cf - --exclude=./build --exclude=./.git --exclude=./data --exclude=./out --exclude=./gpu_report . | tar -xf - -C '$WORK/cudnn_tree' &&
                    make -C '$WORK/cudnn_tree' -j$JOBS train_llama build/dev_cuda/attention_check GPU_ARCH=$GPU_ARCH NO_MPI=1 &&
                    echo 'background: the cuDNN build is done'
                fi" > "$WORK/build_background.log" 2>&1 &
            BG_PID=$!
            note+="${note:+; }background build (pid $BG_PID): ${targets[*]:-nothing missing}$( [ $need_cudnn = 1 ] && echo ', then train_llama with cuDNN')"
        fi
    fi
    BIN_NOTE=""
    for b in "${BIN_NAMES[@]}"; do BIN_NOTE+="$b: ${BIN[$b]:-missing}; "; done
    if [ $EMU = 0 ] && [ -f "$PREBUILT/MANIFEST.txt" ]; then
        note+="${note:+; }MANIFEST: $(head -n 1 "$PREBUILT/MANIFEST.txt" | cut -c1-100)"
        ms=$(grep -m1 '^sources ' "$PREBUILT/MANIFEST.txt" | cut -d' ' -f2)
        if [ -n "$ms" ] && [ "$ms" != "$SRC_HASH" ]; then st=FAIL; note+="; the prebuilt binaries are of other sources ($ms, this tree $SRC_HASH)"; fi
    fi
    [ -z "${BIN[train_llama]}" ] && st="FAIL" && note="no train_llama: ${BIN_WHY[train_llama]}; $note"
    set_step binaries "$st" $((SECONDS - s)) "${note:-every binary resolved}; missing: ${missing[*]:-none}"
    checkpoint_report
fi

# ---- versions: the toolkit, cuDNN, NCCL, Python, and ldd of every binary ------------------------------
cat > "$WORK/versions.sh" <<'EOF'
t() { timeout 30 "$@" 2>&1; }
echo "host: $(uname -srm), $(nproc) CPUs, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}') memory"
echo "nvcc: $(t nvcc --version 2>/dev/null | tail -n 2 | head -n 1 || true)$(command -v nvcc >/dev/null || t /usr/local/cuda/bin/nvcc --version | tail -n 2 | head -n 1)"
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
ver_h() {  # FILE PREFIX: MAJOR.MINOR.PATCH of a version header
    awk -v p="$2" '$1 == "#define" && ($2 == p "MAJOR" || $2 == p "MINOR" || $2 == p "PATCHLEVEL" || $2 == p "PATCH") { v = v (v ? "." : "") $3 } END { print v }' "$1"
}
for h in /usr/local/cuda/include/cudnn_version.h /usr/include/cudnn_version.h /usr/include/x86_64-linux-gnu/cudnn_version_v*.h "$SP"/nvidia/cudnn/include/cudnn_version.h; do
    [ -f "$h" ] && echo "cuDNN header: $(ver_h "$h" CUDNN_) ($h)"
done
for h in "$SP"/include/cudnn_frontend_version.h /usr/local/cuda/include/cudnn_frontend_version.h; do
    [ -f "$h" ] && echo "cuDNN frontend header: $(grep -m1 -E 'define CUDNN_FRONTEND_VERSION' "$h" | awk '{print $3}') ($h)"
done
for h in /usr/local/cuda/include/nccl.h /usr/include/nccl.h "$SP"/nvidia/nccl/include/nccl.h; do
    [ -f "$h" ] && echo "NCCL header: $(ver_h "$h" NCCL_) ($h)"
done
ls -d "$SP"/nvidia/*/lib 2>/dev/null | sed 's|^|wheel libs: |'
echo "python: $(python3 --version 2>&1)"
t python3 -c '
import importlib
for m in ("torch", "transformers", "numpy", "cudnn"):
    try:
        mod = importlib.import_module(m); print("%s %s" % (m, getattr(mod, "__version__", "?")))
    except Exception as e:
        print("%s: not importable (%s)" % (m, type(e).__name__))
try:
    import torch
    print("torch: cuda %s, cudnn %s, nccl %s, device %s" % (torch.version.cuda, torch.backends.cudnn.version(),
          torch.cuda.nccl.version() if torch.cuda.is_available() else "-",
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"))
except Exception as e:
    print("torch details: %s" % e)
'
for b in "$@"; do
    [ -n "$b" ] || continue
    echo "--- ldd $b"
    ldd "$b" 2>&1 | grep -E 'not found|cud|nccl|cublas|cusolver|nvrtc|mpi|openblas|libstdc' | sed 's/ (0x[0-9a-f]*)//'
done
EOF
if gate versions; then
    bins=(); for b in "${BIN_NAMES[@]}"; do [ -n "${BIN[$b]}" ] && bins+=("${BIN[$b]}"); done
    run_cmd versions bash "$WORK/versions.sh" "${bins[@]}"
    nf=$(grep -c 'not found' "$WORK/versions.log")
    note="$(grep -m1 '^nvcc' "$WORK/versions.log" | cut -c1-80); $(grep -m1 'cuDNN header' "$WORK/versions.log" | cut -d'(' -f1); $(grep -m1 '^torch ' "$WORK/versions.log"); ldd: $nf libraries not found"
    [ "$ST" = PASS ] && (( nf > 0 )) && ST=FAIL
    set_step versions "$ST" "$DT" "$note${WHY:+ | $WHY}"
    checkpoint_report
fi

# ---- data --------------------------------------------------------------------------------------------
if gate data; then
    run_cmd data bash -c "$(declare -f ensure_data); DATA_DIR='$DATA_DIR'; DATA_VOCAB=$DATA_VOCAB; ensure_data && ls -la '$DATA_DIR'"
    DATA_HASH=$(data_hash)
    set_step data "$ST" "$DT" "$DATA_DIR, hash $DATA_HASH$( [ -f "$REF" ] && ! grep -q "^data $DATA_HASH\$" "$REF" && echo ' (NOT the data of the reference)')${WHY:+ | $WHY}"
    checkpoint_report
fi
HAVE_DATA=0; ls "$DATA_DIR"/check_train_000000.bin >/dev/null 2>&1 && { HAVE_DATA=1; DATA_HASH=$(data_hash); }
# data_or_skip STEP: 0 when the data is there; else records STEP SKIPPED
data_or_skip() { [ $HAVE_DATA = 1 ] && return 0; gate "$1" && set_step "$1" SKIPPED 0 "no data in $DATA_DIR"; return 1; }

# ---- test_kernels_cuda ---------------------------------------------------------------------------------
have_bin test_kernels_cuda test_kernels_cuda && step test_kernels_cuda summary_line "${BIN[test_kernels_cuda]}"

# ---- e2e: d6 (tiny emulated), AdamW and Grass, each twice; bit-identical, and matching the emulator --
for opt in adamw grass; do
    [ $opt = adamw ] && o=("${E2E_ADAMW[@]}") || o=("${E2E_GRASS[@]}")
    for r in "" _rerun; do
        data_or_skip "e2e_$opt$r" && train "e2e_$opt$r" -j "$(VAL_GLOB)" "${E2E_COMMON[@]}" "${o[@]}"
    done
done
: > "$WORK/e2e_losses.md"
for opt in adamw grass; do
    a="$WORK/run_e2e_$opt"; b="$WORK/run_e2e_${opt}_rerun"
    sa=${P_STATUS[${P_IDX[e2e_$opt]}]}; sb=${P_STATUS[${P_IDX[e2e_${opt}_rerun]}]}
    # bit-identical: the loss and gradient-norm lines, and the final weights
    if [ "$sa" != PASS ] || [ "$sb" != PASS ]; then
        set_step "e2e_${opt}_identical" SKIPPED 0 "needs both e2e_$opt runs to pass (they are $sa and $sb)"
    elif [ "$(loss_lines "$a/log.txt")" = "$(loss_lines "$b/log.txt")" ] && [ -n "$(loss_lines "$a/log.txt")" ]; then
        w="the final weights: $( cmp -s "$a/model.sha256" "$b/model.sha256" 2>/dev/null && echo identical || echo 'DIFFER or missing')"
        if cmp -s "$a/model.sha256" "$b/model.sha256"; then st=PASS; else st=FAIL; fi
        set_step "e2e_${opt}_identical" $st 0 "$(loss_lines "$a/log.txt" | wc -l) loss lines identical; $w"
    else
        first=$(diff <(loss_lines "$a/log.txt") <(loss_lines "$b/log.txt") | grep -m1 '^<' | cut -c3-)
        set_step "e2e_${opt}_identical" FAIL 0 "the two runs differ, first at: $first"
    fi
    # against the emulator's losses for the same sources, data and flags
    name="e2e_${opt}_vs_emu"
    if [ ! -f "$REF" ]; then set_step $name SKIPPED 0 "no reference $REF (scripts/gpu_check.sh --make-reference here, then carry it)"
    elif [ "$sa" != PASS ]; then set_step $name SKIPPED 0 "e2e_$opt did not pass (it is $sa)"
    else
        why=""
        [ "$(grep -m1 '^sources ' "$REF" | cut -d' ' -f2)" = "$SRC_HASH" ] || why+="the reference is of other sources ($(grep -m1 '^sources ' "$REF" | cut -d' ' -f2), here $SRC_HASH); "
        [ "$(grep -m1 '^data ' "$REF" | cut -d' ' -f2)" = "$DATA_HASH" ] || why+="the reference is of other data; "
        [ "$(grep -m1 '^flags ' "$REF" | cut -d' ' -f2-)" = "${E2E_COMMON[*]}" ] || why+="the reference has other flags; "
        [ "$(grep -m1 "^flags_$opt " "$REF" | cut -d' ' -f2-)" = "$([ $opt = adamw ] && echo "${E2E_ADAMW[*]}" || echo "${E2E_GRASS[*]}")" ] \
            || why+="the reference has other $opt flags; "
        if [ -n "$why" ]; then set_step $name SKIPPED 0 "${why%; }"
        else
            tol=$E2E_TOL
            if [ -z "$tol" ]; then
                dist=$(grep -m1 "^cpu_fp32_distance_$opt " "$REF" | cut -d' ' -f2)
                tol=$(awk -v d="$dist" 'BEGIN { if (d ~ /^[0-9.eE+-]+$/) { t = 2 * d; if (t < 1e-3) t = 1e-3; printf "%.2g", t } else print "5e-3" }')
            fi
            res=$(python3 - "$REF" "$opt" "$a/log.txt" "$b/log.txt" "$tol" "$WORK/e2e_losses.md" "$E2E_TOL_STEP1" <<'PY'
import math, re, sys
ref_path, opt, la, lb, tol, md = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
tol1 = min(tol, float(sys.argv[7]))  # step 1: the forward pass at the initial weights
pat = re.compile(r"step=(\d+) (loss|val_loss)=([-0-9.eE+naif]+)")
def read(lines):
    out = {}
    for l in lines:
        m = pat.search(l)
        if m: out[(int(m.group(1)), m.group(2))] = float(m.group(3))
    return out
ref = read(l for l in open(ref_path) if l.startswith(opt + " "))
a = read(open(la))
try: b = read(open(lb))
except OSError: b = {}
worst, at, over = 0.0, None, []
rows = []
for k in sorted(ref):
    t = tol1 if k == (1, "loss") else tol
    d = math.inf
    if k in a and math.isfinite(a[k]): d = abs(a[k] - ref[k]) / max(abs(ref[k]), 1e-9)
    rows.append((k, ref[k], a.get(k), b.get(k), d, t))
    if d > t: over.append("step %d %s %.2e > %.0e" % (k[0], k[1], d, t))
    if at is None or d > worst: worst, at = d, k
with open(md, "a") as f:
    f.write("%s (tolerance %.1e relative, step 1 %.0e):\n\n| step | | emulator | GPU run 1 | GPU run 2 | rel. diff |\n"
            "| --- | --- | --- | --- | --- | --- |\n" % (opt, tol, tol1))
    for (s, kind), r, x, y, d, t in rows:
        f.write("| %d | %s | %.6f | %s | %s | %.2e%s |\n" % (s, kind, r, "-" if x is None else "%.6f" % x,
                "-" if y is None else "%.6f" % y, d, " **over**" if d > t else ""))
    f.write("\n")
ok = not over and len(rows) > 0
print("%s largest relative difference %.2e at step %s %s (tolerance %.1e, step 1 %.0e; %d values)%s" %
      ("PASS" if ok else "FAIL", worst, at[0] if at else "-", at[1] if at else "", tol, tol1, len(rows),
       "; over: " + ", ".join(over[:3]) if over else ""))
PY
)
            st=${res%% *}; [ "$st" = PASS ] || [ "$st" = FAIL ] || { st=FAIL; res="FAIL comparison error: $res"; }
            set_step $name "$st" 0 "${res#* }; reference commit $(grep -m1 '^commit ' "$REF" | cut -d' ' -f2)"
        fi
    fi
done
checkpoint_report

# ---- the init hash: this build's initial weights against the reference's (the CPU's when it had one)
h=$(init_hash_of "$WORK/e2e_adamw.log")
if [ ! -s "$WORK/e2e_adamw.log" ]; then set_step init_hash SKIPPED 0 "e2e_adamw did not run"
elif [ -z "$h" ]; then set_step init_hash SKIPPED 0 "the trainer printed no init hash line (none in this build)"
elif [ ! -f "$REF" ]; then set_step init_hash SKIPPED 0 "init hash $h; no reference $REF to compare with"
else
    rc=$(grep -m1 '^init_hash_cpu_adamw ' "$REF" | cut -d' ' -f2); re=$(grep -m1 '^init_hash_adamw ' "$REF" | cut -d' ' -f2)
    want=${rc:--}; src="CPU fp32 build"; [ "$want" = - ] && { want=${re:--}; src="emulated build"; }
    if [ "$want" = - ]; then set_step init_hash SKIPPED 0 "init hash $h; the reference has none"
    elif [ "$h" = "$want" ]; then set_step init_hash PASS 0 "init hash $h = the $src's"
    else set_step init_hash FAIL 0 "init hash $h, the $src's $want"; fi
fi
checkpoint_report

# ---- 1b AdamW and Grass, T=1024 (tiny stand-ins when emulated) -----------------------------------------
data_or_skip 1b_adamw && train 1b_adamw "${RUN_1B[@]}" --optimizer adamw -l 1e-3
data_or_skip 1b_grass && train 1b_grass "${RUN_1B[@]}" --optimizer grass --rank "$( [ $EMU = 1 ] && echo 8 || echo 512)" -l 1e-2

# ---- the PyTorch peer, eager rows -----------------------------------------------------------------------
# peer ROWS BUDGET: runs dev/bench_gpu_vs_torch.py with the flags its --help has; its table into the report
peer() {
    local name=$1 rows=$2 budget=$3
    gate "$name" || return 1
    if [ ! -f dev/bench_gpu_vs_torch.py ]; then set_step "$name" SKIPPED 0 "dev/bench_gpu_vs_torch.py is not in this tree"; return 1; fi
    local help; help=$(timeout 60 python3 dev/bench_gpu_vs_torch.py --help 2>&1)
    local args=() unknown="" a prev=""
    read -r -a all <<< "$(peer_args "$rows" "$budget" "$WORK/$name.json" | tr '\n' ' ')"
    for a in "${all[@]}"; do  # keep a flag (and its value) only when --help names it
        if [[ "$a" == -* ]]; then
            if grep -qE -- "(^|[][ ,])$a([][ ,=]|\$)" <<< "$help"; then args+=("$a"); prev=keep; else unknown+=" $a"; prev=drop; fi
        elif [ "$prev" = keep ]; then args+=("$a"); fi
    done
    run_cmd "$name" python3 dev/bench_gpu_vs_torch.py "${args[@]}"
    local st=$ST note="" j="$WORK/$name.json"
    grep -a '^|' "$WORK/$name.log" > "$WORK/$name.table.md"
    if [ -f "$j" ]; then
        # our tok/s over each peer row's, into the throughput table (1b runs)
        local ratios; ratios=$(python3 - "$j" "$WORK" <<'PY'
import json, os, statistics, sys
r = json.load(open(sys.argv[1]))
if not r.get("measured"): print("MEASURED_NOTHING " + str(r.get("reason", "?"))); sys.exit()
peer = {row["row"]: float(row["tok_s"]) for row in r.get("rows", []) if row.get("tok_s")}
for run in ("1b_adamw", "1b_grass", "1b_galore", "1b_adamw_cudnn"):
    p = os.path.join(sys.argv[2], "run_" + run, "log.txt")
    if not os.path.exists(p): continue
    toks = [float(kv.split("=")[1]) for l in open(p) if l.startswith("step=") and "tok_per_s=" in l
            for kv in l.split() if kv.startswith("tok_per_s=")][2:]
    if toks and peer:
        ours = statistics.median(toks)
        print(run + " " + ",".join("x%.2f_%s" % (ours / v, k) for k, v in peer.items()))
PY
)
        if [[ "$ratios" == MEASURED_NOTHING* ]]; then st=SKIPPED; note="the peer measured nothing: ${ratios#MEASURED_NOTHING }"
        else
            local run val i
            while read -r run val; do
                [ -n "$run" ] || continue
                for i in "${!R_NAME[@]}"; do
                    [ "${R_NAME[$i]}" = "$run" ] && R_PEER[$i]=${val//_/ }
                done
            done <<< "$ratios"
            note="ours / peer: $(echo $ratios)"; [ -n "$ratios" ] || note="no 1b run of ours to compare with"
        fi
    fi
    [ -n "$unknown" ] && note+="${note:+ | }flags not in its --help, left out:$unknown"
    set_step "$name" "$st" "$DT" "${note}${WHY:+ | $WHY}"
    checkpoint_report
}
peer torch_peer bf16,amp 0

# ================================== extras =============================================================
bg_build_done
# ---- 1b GaLore: the refresh (an SVD of every matrix, every 4 steps) timed apart from the plain steps -----
data_or_skip 1b_galore && train 1b_galore "${RUN_1B[@]}" "${GALORE_OPTS[@]}"

# ---- attention and GEMM microbenchmarks ----------------------------------------------------------------
dev_check() {
    local name=$1 args_var="DEV_ARGS_$1[@]"
    have_bin "$name" "$name" && step "$name" last_line "${BIN[$name]}" "${!args_var}"
}
bg_build_done
dev_check attention_check
dev_check gathered_gemm_check
dev_check gemm_align_check

# ---- test_llama: the GPU model against the transformers fixtures --------------------------------------
bg_build_done
have_bin test_llama test_llama && step test_llama summary_line "${BIN[test_llama]}"

# ---- 60m ----------------------------------------------------------------------------------------------
data_or_skip 60m_adamw && train 60m_adamw -j "$(VAL_GLOB)" "${RUN_60M[@]}" --optimizer adamw -l 1e-3
data_or_skip 60m_adamw_fp32grads && train 60m_adamw_fp32grads -j "$(VAL_GLOB)" "${RUN_60M[@]}" --optimizer adamw -l 1e-3 --grad-dtype fp32
data_or_skip 60m_grass && train 60m_grass -j "$(VAL_GLOB)" "${RUN_60M[@]}" --optimizer grass --rank "$( [ $EMU = 1 ] && echo 8 || echo 128)" -l 1e-2
data_or_skip 60m_grass_lowmem && train 60m_grass_lowmem -j "$(VAL_GLOB)" "${RUN_60M[@]}" --optimizer grass \
    --rank "$( [ $EMU = 1 ] && echo 8 || echo 128)" -l 1e-2 --state-dtype bf16 --master-weights 1 --recompute 1 --select-on-device 1

# ---- cuDNN: its attention against ours, then 1b AdamW with --attention cudnn -------------------------
bg_build_done
CUDNN_TRAIN=""; CUDNN_ATT=""
if [ $EMU = 0 ]; then
    for c in "${BIN[train_llama]}" "$WORK/cudnn_tree/train_llama"; do
        [ -n "$c" ] && loads "$c" && ldd "$c" 2>/dev/null | grep -q libcudnn && { CUDNN_TRAIN=$c; break; }
    done
    for c in "${BIN[attention_check]}" "$WORK/cudnn_tree/build/dev_cuda/attention_check"; do
        [ -n "$c" ] && loads "$c" && ldd "$c" 2>/dev/null | grep -q libcudnn && { CUDNN_ATT=$c; break; }
    done
fi
cudnn_why="no build with cuDNN$( [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null && echo ' yet (the background build is still running)')"
if [ -n "$CUDNN_ATT" ]; then step cudnn_attention_check last_line "$CUDNN_ATT"
elif gate cudnn_attention_check; then set_step cudnn_attention_check SKIPPED 0 "$cudnn_why"; fi
if [ -n "$CUDNN_TRAIN" ] && data_or_skip 1b_adamw_cudnn; then
    save=${BIN[train_llama]}; BIN[train_llama]=$CUDNN_TRAIN
    train 1b_adamw_cudnn "${RUN_1B[@]}" --optimizer adamw -l 1e-3 --attention cudnn
    BIN[train_llama]=$save
elif gate 1b_adamw_cudnn; then set_step 1b_adamw_cudnn SKIPPED 0 "$cudnn_why"; fi

# ---- 13b: the plan, then 3 steps of Grass (peak memory against 40 GB and 32 GB) ----------------------
plan_total() { grep -m1 -aE '^ +total' "$1" | awk '{print "planned", $2, $3}'; }
have_bin 13b_plan train_llama && step 13b_plan plan_total "${BIN[train_llama]}" -c 13b -b 1 -t 256 --optimizer grass \
    --rank "$RANK_13B" --recompute 1 --state-dtype bf16 --plan-only 1
data_or_skip 13b_grass && train 13b_grass "${RUN_13B[@]}"
if gate 13b_memory; then
    i=${P_IDX[13b_grass]}; mem13=-
    for j in "${!R_NAME[@]}"; do [ "${R_NAME[$j]}" = 13b_grass ] && mem13=${R_MEM[$j]}; done
    if [[ "$mem13" =~ ^[0-9.]+$ ]]; then
        gb=$(awk -v m="$mem13" 'BEGIN { printf "%.1f", m * 1.073741824 }')
        if awk -v g="$gb" 'BEGIN { exit !(g < 32) }'; then set_step 13b_memory PASS 0 "peak $mem13 GiB = $gb GB: under 40 GB and under 32 GB (the aim)"
        elif awk -v g="$gb" 'BEGIN { exit !(g < 40) }'; then set_step 13b_memory PASS 0 "peak $mem13 GiB = $gb GB: under 40 GB; NOT under 32 GB (the aim)"
        else set_step 13b_memory FAIL 0 "peak $mem13 GiB = $gb GB: over 40 GB"; fi
    else set_step 13b_memory SKIPPED 0 "13b_grass logged no step (${P_STATUS[$i]})"; fi
fi

# ---- the remaining dev checks -------------------------------------------------------------------------
bg_build_done
dev_check classifier_check
have_bin test_emu_gpu test_emu_gpu && step test_emu_gpu summary_line "${BIN[test_emu_gpu]}"

# ---- the PyTorch peer's torch.compile rows ------------------------------------------------------------
peer torch_peer_compile bf16_compile,amp_compile $(( $(left) - RESERVE_S - 70 > 30 ? $(left) - RESERVE_S - 70 : 30 ))

# ---- compute-sanitizer memcheck, last: a tiny Grass run through every kernel ----------------------------
sanitizer_summary() { grep -m1 -a 'ERROR SUMMARY' "$1"; }
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ $EMU = 0 ] && [ -z "$SAN" ]; then gate memcheck && set_step memcheck SKIPPED 0 "compute-sanitizer not found"
elif data_or_skip memcheck && have_bin memcheck train_llama; then
    step memcheck sanitizer_summary "$SAN" --tool memcheck --leak-check no --print-limit 100 --error-exitcode 9 \
        "${BIN[train_llama]}" -i "$(TRAIN_GLOB)" -j none -c tiny --vocab 512 -b 2 -t 64 -x 2 --optimizer grass --rank 16 \
        --log-every 1 -o "$WORK/runs/memcheck" --state-dtype bf16 --master-weights 1 --recompute 1
    rm -rf "$WORK/runs/memcheck"
fi

CHECK_STATE="COMPLETE"
finalize
trap - EXIT
bad=0
for st in "${P_STATUS[@]}"; do case "$st" in FAIL*|CRASH*|TIMEOUT*) bad=1 ;; esac; done
exit $bad
