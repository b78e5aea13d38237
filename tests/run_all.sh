#!/usr/bin/env bash
# The CPU test suite (make test). Runs every test program and script, prints each one's
# summary, and ends with the total as "N passed, N failed"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
total_pass=0; total_fail=0; broken=()
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
  echo "$name: $p passed, $f failed ($(( $(date +%s) - start )) s)"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  [ "$f" != 0 ] && broken+=("$name")
  rm -f "$log"
}
run test_fixture_reader ./tests/bin/test_fixture_reader
run test_dataloader ./tests/bin/test_dataloader
run test_tokenizer bash tests/test_tokenizer.sh
run test_prepare bash dev/data/test_prepare.sh
run test_ops ./tests/bin/test_ops
run test_llama_cpu ./tests/bin/test_llama_cpu
run test_grass ./tests/bin/test_grass
run test_hf_roundtrip python3 dev/test_hf_roundtrip.py
run test_train bash tests/test_train.sh
if command -v mpirun >/dev/null 2>&1; then
  run test_mpi bash tests/test_mpi.sh
else
  echo "==== test_mpi: mpirun not found; the data-parallel tests need openmpi-bin"; total_fail=$((total_fail + 1)); broken+=("test_mpi (no mpirun)")
fi
echo
[ ${#broken[@]} -gt 0 ] && echo "failing: ${broken[*]}"
echo "all tests: $total_pass passed, $total_fail failed"
[ $total_fail -eq 0 ]
