#!/usr/bin/env bash
# The test suite: the CPU tests, then the CUDA build's tests on the CPU through the emulator in
# tests/cuda_emu (when it was built). Runs each test program and script, prints each one's summary
# and time, and ends with the total as "total: N passed, N failed, N skipped"; exits non-zero on any
# failure.
# Skips: a test prints "skipped: REASON" for each check it could not run; they are counted and
# their reasons listed. Under CI=true a skip is a failure, unless its reason starts with a line of
# tests/skip_allowlist.txt (hardware CI cannot have: a GPU), so nothing stops running unseen.
#   bash tests/run_all.sh fast      make test: every CPU test + the emulated subset (emu_fast_suite)
#   bash tests/run_all.sh all       make test-all: every CPU test + every emulated test
#   bash tests/run_all.sh cpu | cuda_emu
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
total_pass=0; total_fail=0; total_skip=0; broken=(); skip_reasons=()
mapfile -t ALLOWED_SKIPS < <(grep -v -e '^#' -e '^[[:space:]]*$' tests/skip_allowlist.txt)
allowed_skip() {  # allowed_skip REASON: 0 when REASON starts with a line of tests/skip_allowlist.txt
  local a; for a in "${ALLOWED_SKIPS[@]}"; do [[ "$1" == "$a"* ]] && return 0; done; return 1
}
# note_skips NAME REASON...: counts the skips; under CI=true each one not in the allowlist fails
note_skips() {
  local name=$1 r; shift
  for r in "$@"; do
    total_skip=$((total_skip + 1)); skip_reasons+=("$name: $r")
    if [ "${CI:-}" = true ] && ! allowed_skip "$r"; then
      echo "FAIL (CI=true: a skip not in tests/skip_allowlist.txt) $name: $r"
      total_fail=$((total_fail + 1)); broken+=("$name (skipped under CI)")
    fi
  done
}
run() {  # run NAME CMD...: a test that prints "N passed, N failed" and exits non-zero on failure
  local name=$1; shift
  echo "==== $name"
  local log; log=$(mktemp)
  local start=$(date +%s)
  "$@" > "$log" 2>&1
  local rc=$?
  local line; line=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  grep -E '^(FAIL|error)' "$log" | head -20
  local p=$(echo "$line" | awk '{print $1}')
  local f=$(echo "$line" | awk '{print $3}')
  [ -z "$p" ] && p=0
  [ -z "$f" ] && f=0
  if [ $rc -ne 0 ] && [ "$f" = 0 ]; then f=1; tail -15 "$log"; fi  # crashed or failed without a count
  local reasons; mapfile -t reasons < <(sed -n 's/^skipped: //p' "$log")
  local s=${#reasons[@]}
  echo "$name: $p passed, $f failed$([ "$s" -gt 0 ] && echo ", $s skipped") ($(( $(date +%s) - start )) s)"
  printf '  skipped: %s\n' "${reasons[@]}" | grep -v '^  skipped: $'
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  [ "$f" != 0 ] && broken+=("$name")
  note_skips "$name" "${reasons[@]}"
  rm -f "$log"
}
cpu_suite() {
run test_fixture_reader ./tests/bin/test_fixture_reader
run test_dataloader ./tests/bin/test_dataloader
run test_tokenizer bash tests/test_tokenizer.sh
run test_prepare bash dev/data/test_prepare.sh
run test_ops ./tests/bin/test_ops
run test_llama_cpu ./tests/bin/test_llama_cpu
run test_grass ./tests/bin/test_grass
run test_rooms bash tests/test_rooms.sh
run test_hf_roundtrip python3 dev/test_hf_roundtrip.py
run test_galore_torch python3 dev/test_galore_torch.py
run test_perf_model python3 dev/test_perf_model.py
run test_bench_gpu_vs_torch python3 dev/test_bench_gpu_vs_torch.py
run test_plot_logs python3 dev/test_plot_logs.py
run test_study python3 dev/test_study.py
run test_train bash tests/test_train.sh
run test_faults bash tests/test_faults.sh
if command -v mpirun >/dev/null 2>&1; then
  run test_mpi bash tests/test_mpi.sh
else
  echo "==== test_mpi: mpirun not found; the data-parallel tests need openmpi-bin"; total_fail=$((total_fail + 1)); broken+=("test_mpi (no mpirun)")
fi
run test_build_config bash tests/test_build_config.sh
}
# the CPU checks that only make test-all runs: several hosts (network namespaces) and their faults
cpu_all_suite() {
run test_multinode bash tests/test_multinode.sh
# the binaries make gpu_prebuilt leaves for the GPU machine (built by make test-all where nvcc is)
run test_gpu_prebuilt bash tests/test_gpu_prebuilt.sh
}
# the CUDA build on the CPU through the emulator (tests/cuda_emu; built by make cuda_emu)
emu_suite() {
E=build/emu
run emu_test_emu $E/test_emu
run emu_test_kernels_cuda $E/test_kernels_cuda
run emu_test_kernels_cuda_fp32 $E/test_kernels_cuda_fp32
run emu_test_kernels_cuda_nolapack $E/test_kernels_cuda_nolapack  # as built without cblas.h: GaLore's own SVD
run emu_test_kernels_cuda_reverse env GRASS_EMU_BLOCK_ORDER=reverse $E/test_kernels_cuda  # blocks backwards
run emu_test_llama $E/test_llama
run emu_test_llama_fp32 $E/test_llama_fp32
# the same under UBSan: misaligned vector loads (a fault on the GPU) and undefined behaviour stop them
run emu_test_kernels_cuda_ubsan $E/test_kernels_cuda_ubsan
run emu_test_llama_ubsan $E/test_llama_ubsan
# the dev/cuda checks validate at their small sizes; the benchmark part runs at a tiny size here
run emu_attention_check $E/attention_check 1 64 2 1 32
run emu_classifier_check $E/classifier_check 16 97
run emu_gathered_gemm_check $E/gathered_gemm_check 64 48 72 16
run emu_gemm_align_check $E/gemm_align_check 16
run emu_test_train bash tests/cuda_emu/test_train_emu.sh
# the initial weights' arithmetic: nothing for nvcc or g++ to contract (the GPU's draws = the CPU's)
run check_fp_contract bash dev/check_fp_contract.sh
# the CPU build's end-to-end checks (loss, resume, HF round trip, 37 kinds of bad input), on the GPU build
run emu_test_train_cpu_suite env TRAIN_BIN=build/emu/train_llama bash tests/test_train.sh
run emu_test_faults env TRAIN_BIN=build/emu/train_llama bash tests/test_faults.sh
run test_gpu_check bash tests/test_gpu_check.sh  # scripts/gpu_check.sh end to end on the emulated build
if [ -x $E/train_llama_mpi ] && command -v mpirun >/dev/null 2>&1; then  # and the data-parallel checks, NCCL emulated
  run emu_test_mpi_cpu_suite env TRAIN_BIN=$E/train_llama_mpi bash tests/test_mpi.sh
else
  note_skips emu_test_mpi_cpu_suite "the data-parallel checks on the emulated GPU build (no $E/train_llama_mpi or mpirun)"
fi
run emu_mutation_check bash tests/cuda_emu/mutation_check.sh
}
# the fast tier's emulated subset (EMU_FAST_BINS in emu.mk): the emulator's own checks, every CUDA
# kernel against the CPU kernels (bf16 build), the GPU model against the transformers fixtures
emu_fast_suite() {
E=build/emu
run emu_test_emu $E/test_emu
run emu_test_kernels_cuda $E/test_kernels_cuda
run emu_test_llama $E/test_llama
}
suite_start=$(date +%s)
no_emu="==== the CUDA emulator suite was not built (no CUDA headers in /usr/local/cuda/include; see tests/cuda_emu/README.md): skipped"
case "${1:-all}" in
  cpu) cpu_suite ;;
  cuda_emu) emu_suite ;;
  fast)
    cpu_suite
    if [ -x build/emu/test_emu ]; then emu_fast_suite; else echo "$no_emu"; note_skips cuda_emu "the emulated GPU build (not built)"; fi ;;
  all)
    cpu_suite
    cpu_all_suite
    if [ -x build/emu/test_emu ]; then emu_suite; else echo "$no_emu"; note_skips cuda_emu "the emulated GPU build (not built)"; fi ;;
  *) echo "usage: tests/run_all.sh [fast|all|cpu|cuda_emu]"; exit 2 ;;
esac
echo
[ ${#broken[@]} -gt 0 ] && echo "failing: ${broken[*]}"
if [ $total_skip -gt 0 ]; then
  echo "skipped ($total_skip):"; printf '  %s\n' "${skip_reasons[@]}"
fi
echo "all tests (${1:-all}) in $(( $(date +%s) - suite_start )) s$([ "${CI:-}" = true ] && echo " (CI=true: skips outside tests/skip_allowlist.txt fail)")"
echo "total: $total_pass passed, $total_fail failed, $total_skip skipped"
[ $total_fail -eq 0 ]
