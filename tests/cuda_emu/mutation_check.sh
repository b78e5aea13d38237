#!/usr/bin/env bash
# Shows that the emulated kernel tests would catch a missing barrier: deletes one
# __syncthreads() of backend_cuda.cuh at a time (in the rewritten copy under build/emu/src),
# builds the kernel parity test against that mutant and expects it to fail. On a GPU such a
# race may pass a test by luck; the emulator runs each thread up to its next barrier before the
# next thread starts, so the stale read always happens.
#   bash tests/cuda_emu/mutation_check.sh            the mutants CI runs (block sum, attention fwd/bwd)
#   bash tests/cuda_emu/mutation_check.sh all        every __syncthreads in backend_cuda.cuh
#   bash tests/cuda_emu/mutation_check.sh 3 12       the 3rd and the 12th
# Prints "N passed, N failed" (a mutant the tests catch is a pass).
set -u
cd "$(dirname "$0")/../.."
SRC=build/emu/src
[ -f $SRC/backend_cuda.cuh ] || { echo "run make cuda_emu first (no $SRC/backend_cuda.cuh)"; exit 1; }
mapfile -t BUILD < <(make -s emu_print_build 2>/dev/null | grep -v '^OpenBLAS\|^MPI')
CXX_FLAGS=${BUILD[0]}; LIBS=${BUILD[1]}
total=$(grep -c '__syncthreads();' $SRC/backend_cuda.cuh)
if [ "${1:-}" = all ]; then picks=$(seq 1 $total); elif [ $# -gt 0 ]; then picks="$*"; else picks="2 10 16"; fi
M=build/emu/mutant
mkdir -p $M
pass=0; fail=0
for k in $picks; do
  # delete the k-th "__syncthreads();" (and nothing else) in the rewritten backend
  awk -v k=$k '{ line = $0; if (index(line, "__syncthreads();")) { n++; if (n == k) sub(/__syncthreads\(\);/, "/* mutant: barrier removed */", line) } print line }' \
    $SRC/backend_cuda.cuh > $M/backend_cuda.cuh
  where=$(awk -v k=$k '/^(__global__|__device__|template|static)/{fn=$0} /__syncthreads\(\);/{n++; if (n==k) {sub(/\(.*/, "", fn); print "line " NR " in " fn}}' $SRC/backend_cuda.cuh)
  # -I$M before -I$SRC: the test's #include "backend_cuda.cuh" finds the mutant
  if ! ${CXX_FLAGS/-I$SRC /-I$M -I$SRC } $SRC/tests/test_kernels_cuda.cu -o $M/test_kernels_cuda $LIBS > $M/build.log 2>&1; then
    fail=$((fail+1)); echo "FAIL mutant $k ($where): did not compile"; tail -3 $M/build.log; continue
  fi
  out=$($M/test_kernels_cuda 2>&1); rc=$?
  nf=$(echo "$out" | grep -c '^FAIL')
  if [ $rc -ne 0 ]; then pass=$((pass+1)); echo "ok   mutant $k ($where): caught, $nf checks fail"
  else fail=$((fail+1)); echo "FAIL mutant $k ($where): the kernel tests still pass without this barrier"; fi
done
echo "mutation_check: $pass passed, $fail failed"
[ $fail -eq 0 ]
