#!/usr/bin/env bash
# scripts/gpu_check.sh, run here end to end in its emulated mode (GPU_CHECK_EMULATE=1: the emulated
# build in build/emu at tiny shapes), and its report asserted:
#   - a full run, with one step forced to time out and three forced to crash (SIGSEGV, SIGABRT, SIGKILL):
#     every step has a status, the forced ones are TIMEOUT and CRASH(...) and the steps after them
#     still run; the GPU-only steps, and only they, are SKIPPED "needs a GPU"; the two e2e runs of
#     each optimizer are bit-identical and match the reference (--make-reference), and a reference
#     with one loss moved by 1% fails; report.md, report.json and logs.tar.gz are there;
#   - the script killed at its limit (timeout -s TERM): the report says INTERRUPTED, the step that
#     ran is KILLED, the rest NOT RUN, the archive holds the killed step's log, no process is left;
#   - a small budget: the extras are skipped ("out of time budget") before any priority step, and
#     after the first step skipped for the budget no later step runs.
# Needs build/emu/{train_llama,test_kernels_cuda,test_llama,test_emu,*_check} (make cuda_emu).
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
for b in train_llama test_kernels_cuda; do [ -x build/emu/$b ] || { echo "build build/emu/$b first (make cuda_emu)"; exit 1; }; done
source tests/harness.sh
export GPU_CHECK_EMULATE=1 OMP_NUM_THREADS=1 GPU_CHECK_DATA="$W/data" GPU_CHECK_REF="$W/ref.txt"

# report.json as "name status kind gpu_only tier" lines, and the report's state
steps() { python3 -c '
import json, sys
for s in json.load(open(sys.argv[1]))["steps"]:
    print(s["name"], s["status"].replace(" ", "_"), s["kind"], s["gpu_only"], s["tier"], s["note"].replace(" ", "_")[:120])' "$1/report.json"; }
status_of() { steps "$1" | awk -v n="$2" '$1 == n {print $2}'; }
note_of() { python3 -c '
import json, sys
print(next(s["note"] for s in json.load(open(sys.argv[1]))["steps"] if s["name"] == sys.argv[2]))' "$1/report.json" "$2"; }
have_outputs() {  # DIR WHAT: the three files, the archive readable and holding check.log
    local d=$1
    if [ -s "$d/report.md" ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$d/report.json" 2>/dev/null \
       && tar -tzf "$d/logs.tar.gz" 2>/dev/null | grep -q 'check.log$'; then ok "$2: report.md, report.json and logs.tar.gz (with check.log)"
    else bad "$2: report.md, report.json or logs.tar.gz missing or unreadable ($(ls "$d" 2>&1 | tr '\n' ' '))"; fi
}
every_status() {  # DIR WHAT ALLOWED_RE: every step's status matches the allowed set
    local odd; odd=$(steps "$1" | awk -v re="$3" '$2 !~ re {print $1 "=" $2}')
    local n; n=$(steps "$1" | wc -l)
    [ "$n" -gt 20 ] && [ -z "$odd" ] && ok "$2: all $n steps have a status ($3)" || bad "$2: steps without a final status: ${odd:-only $n steps}"
}

# ---- the reference: the emulator's own e2e losses (and the CPU fp32 build's distance, if built) ---
t0=$SECONDS
if scripts/gpu_check.sh --make-reference > "$W/ref.out" 2>&1 && grep -q '^adamw step=10 loss=' "$W/ref.txt" \
   && grep -q '^grass step=10 val_loss=' "$W/ref.txt"; then
    ok "--make-reference writes the e2e losses with the sources' and data's hashes ($((SECONDS - t0)) s)"
else bad "--make-reference failed"; tail -5 "$W/ref.out"; fi
if [ -x ./train_llama_cpu ]; then
    grep -qE '^cpu_fp32_distance_adamw [0-9.]+e[-+][0-9]+$' "$W/ref.txt" && ok "the reference records the CPU fp32 build's distance" \
        || bad "no CPU fp32 distance in the reference: $(grep cpu_fp32 "$W/ref.txt")"
fi
# a copy whose Grass loss at step 5 is 1% off: that comparison must fail, AdamW's still pass
awk '$1 == "grass" && $2 == "step=5" && $3 ~ /^loss=/ { split($3, a, "="); $3 = "loss=" sprintf("%.6f", a[2] * 1.01) } { print }' \
    "$W/ref.txt" > "$W/ref_moved.txt"

# ---- a full run: forced timeout and crashes; everything else as on a GPU machine, GPU-only steps skipped
t0=$SECONDS
GPU_CHECK_REF="$W/ref_moved.txt" OUT="$W/full" GPU_CHECK_WORK="$W/work_full" GPU_CHECK_FORCE_TIMEOUT=gathered_gemm_check \
    GPU_CHECK_FORCE_CRASH=1b_grass,test_llama:ABRT,gemm_align_check:KILL scripts/gpu_check.sh > "$W/full.out" 2>&1
rc=$?
echo "full emulated run: $((SECONDS - t0)) s, rc $rc"
D="$W/full"
have_outputs "$D" "full run"
grep -q 'state: \*\*COMPLETE\*\*' "$D/report.md" && ok "full run: state COMPLETE" || bad "full run: state $(grep 'state:' "$D/report.md")"
[ $rc -ne 0 ] && ok "full run: exit status $rc (failures were forced)" || bad "full run: exit status 0 despite forced failures"
every_status "$D" "full run" '^(PASS|SKIPPED|TIMEOUT|CRASH\(SIG[A-Z]+\)|FAIL.*)$'
[ "$(status_of "$D" gathered_gemm_check)" = TIMEOUT ] && ok "forced timeout: gathered_gemm_check TIMEOUT" \
    || bad "forced timeout: gathered_gemm_check is $(status_of "$D" gathered_gemm_check)"
[ "$(status_of "$D" 1b_grass)" = "CRASH(SIGSEGV)" ] && ok "forced crash: 1b_grass CRASH(SIGSEGV)" || bad "1b_grass is $(status_of "$D" 1b_grass)"
[ "$(status_of "$D" test_llama)" = "CRASH(SIGABRT)" ] && ok "forced abort: test_llama CRASH(SIGABRT)" || bad "test_llama is $(status_of "$D" test_llama)"
[ "$(status_of "$D" gemm_align_check)" = "CRASH(SIGKILL)" ] && ok "forced SIGKILL: gemm_align_check CRASH(SIGKILL)" \
    || bad "gemm_align_check is $(status_of "$D" gemm_align_check)"
# the steps after each forced one still ran
for s in 1b_galore 60m_adamw classifier_check test_emu_gpu; do
    [ "$(status_of "$D" $s)" = PASS ] && ok "after the forced failures: $s PASS" || bad "after the forced failures: $s is $(status_of "$D" $s)"
done
# exactly the GPU-only steps are "needs a GPU"
wrong=$(steps "$D" | awk '($4 == 1) != ($2 == "SKIPPED" && $6 == "needs_a_GPU") {print $1 "=" $2 "(" $6 ")"}')
[ -z "$wrong" ] && ok "full run: the GPU-only steps (and no other) are SKIPPED \"needs a GPU\" ($(steps "$D" | awk '$4 == 1' | wc -l))" \
    || bad "needs-a-GPU skips wrong: $wrong"
for s in test_kernels_cuda e2e_adamw e2e_adamw_rerun e2e_grass e2e_grass_rerun e2e_adamw_identical e2e_grass_identical \
         e2e_adamw_vs_emu 1b_adamw attention_check 13b_plan; do
    [ "$(status_of "$D" $s)" = PASS ] && ok "$s PASS" || bad "$s is $(status_of "$D" $s): $(note_of "$D" $s)"
done
[ "$(status_of "$D" e2e_grass_vs_emu)" = FAIL ] && ok "a reference loss moved by 1%: e2e_grass_vs_emu FAIL ($(note_of "$D" e2e_grass_vs_emu | cut -c1-60))" \
    || bad "a reference loss moved by 1%: e2e_grass_vs_emu is $(status_of "$D" e2e_grass_vs_emu)"
# the throughput table: a row per run, with the model's prediction beside it
rows=$(grep -cE '^\| (e2e|1b|60m)_[a-z0-9_]+ \| (PASS|CRASH)' "$D/report.md")
[ "$rows" -eq 11 ] && ok "throughput table: 11 runs" || bad "throughput table: $rows runs, expected 11"
grep -qE '^\| 1b_adamw \| PASS \| [0-9]+ \| n/a \| n/a \| [0-9]+ \| [0-9.]+% \| [0-9.]+% \|' "$D/report.md" \
    && ok "throughput row: tok/s, MFU, exec MFU, and the model's tok/s, MFU and exec MFU" || bad "1b_adamw's throughput row: $(grep '^| 1b_adamw |' "$D/report.md")"
grep -qE '^\| 1b_galore \| PASS \|.*\| [0-9.]+ \([0-9.]+\) \|' "$D/report.md" && ok "1b_galore: the refresh step timed apart" \
    || bad "1b_galore's row has no refresh time: $(grep '^| 1b_galore |' "$D/report.md")"
tar -tzf "$D/logs.tar.gz" | grep -q '1b_grass.log$' && tar -tzf "$D/logs.tar.gz" | grep -q 'run_e2e_adamw/log.txt$' \
    && ok "the archive holds the crashed step's log and the runs' log.txt" || bad "archive contents: $(tar -tzf "$D/logs.tar.gz" | head -5)"
n=$(ls "$D" | wc -l)
[ "$n" -le 3 ] && ok "\$OUT holds $n files" || bad "\$OUT holds $n files: $(ls "$D")"

# ---- killed at its limit -------------------------------------------------------------------------------
t0=$SECONDS
# (test_kernels_cuda made to sleep, so that a step surely runs when the signal comes)
OUT="$W/killed" GPU_CHECK_WORK="$W/work_killed" GPU_CHECK_FORCE_TIMEOUT=test_kernels_cuda GPU_CHECK_FORCE_TIMEOUT_S=100 \
    timeout -s TERM 12 scripts/gpu_check.sh > "$W/killed.out" 2>&1
rc=$?
D="$W/killed"
have_outputs "$D" "killed at 12 s"
grep -q 'state: \*\*INTERRUPTED by SIGTERM' "$D/report.md" && ok "killed: state INTERRUPTED by SIGTERM ($((SECONDS - t0)) s, rc $rc)" \
    || bad "killed: state $(grep 'state:' "$D/report.md" 2>&1)"
every_status "$D" "killed" '^(PASS|SKIPPED|FAIL.*|KILLED|NOT_RUN)$'
killed=$(steps "$D" | awk '$2 == "KILLED" {print $1}')
if [ "$(echo "$killed" | grep -c .)" = 1 ] && steps "$D" | grep -q ' NOT_RUN ' && tar -tzf "$D/logs.tar.gz" | grep -q "/$killed.log\$"; then
    ok "killed: one step KILLED ($killed, its log archived), the rest NOT RUN"
else bad "killed: KILLED steps '$killed'"; fi
sleep 1
left=$(pgrep -f "$W/|^sleep 100000\$" | grep -v "^$$\$" | tr '\n' ' ')  # the runs, and the forced step's sleep
[ -z "$left" ] && ok "killed: no process of the check is left" || bad "killed: processes left: $left"

# ---- a small budget: the extras are skipped first, and then everything after the budget runs out ------
OUT="$W/small" GPU_CHECK_WORK="$W/work_small" BUDGET_S=20 scripts/gpu_check.sh > "$W/small.out" 2>&1
D="$W/small"
have_outputs "$D" "BUDGET_S=20"
every_status "$D" "BUDGET_S=20" '^(PASS|SKIPPED|TIMEOUT)$'
bad_extra=$(steps "$D" | awk '$5 == "extra" && $2 != "SKIPPED" {print $1 "=" $2}')
[ -z "$bad_extra" ] && ok "BUDGET_S=20: every extra SKIPPED" || bad "BUDGET_S=20: extras that ran: $bad_extra"
nb=$(steps "$D" | awk '$5 == "extra" && $6 ~ /^out_of_time_budget/' | wc -l)
[ "$nb" -gt 5 ] && ok "BUDGET_S=20: $nb extras \"out of time budget\"" || bad "BUDGET_S=20: only $nb extras out of time budget"
order=$(steps "$D" | awk '$3 == "run" { if (gone && $2 != "SKIPPED") print $1 "=" $2; if ($6 ~ /^out_of_time_budget/) gone = 1 }')
first=$(steps "$D" | awk '$3 == "run" && $6 ~ /^out_of_time_budget/ {print $1; exit}')
[ -z "$order" ] && [ -n "$first" ] && ok "BUDGET_S=20: from the first step out of budget ($first) on, nothing runs" \
    || bad "BUDGET_S=20: steps ran after the budget ran out: $order (first out of budget: $first)"
for s in binaries versions data; do  # ran (versions may time out on a loaded machine: it imports torch)
    case "$(status_of "$D" $s)" in PASS|TIMEOUT) ok "BUDGET_S=20: priority step $s ran" ;; *) bad "BUDGET_S=20: $s is $(status_of "$D" $s)" ;; esac
done
finish test_gpu_check
