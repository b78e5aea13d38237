#!/usr/bin/env bash
# Shows that the emulated kernel tests would catch a missing barrier: deletes one
# __syncthreads() of the CUDA backend at a time (in the rewritten copy under build/emu/src),
# builds the kernel parity test against that mutant and expects it to fail. On a GPU such a
# race may pass a test by luck; the emulator runs each thread up to its next barrier before the
# next thread starts, so the stale read always happens.
# The barriers are numbered through the cuda/*.cuh headers in the order backend_cuda.cuh
# includes them.
#   bash tests/cuda_emu/mutation_check.sh            the mutants CI runs (block sum, attention fwd/bwd, GaLore sign)
#   bash tests/cuda_emu/mutation_check.sh all        every __syncthreads in cuda/*.cuh
#   bash tests/cuda_emu/mutation_check.sh 3 12       the 3rd and the 12th
#   bash tests/cuda_emu/mutation_check.sh cuda/attention.cuh:7   the 7th barrier of that header
# CI's mutants are named by header and place there, so a barrier added in another header (as
# cuda/init.cuh's were) does not move them onto other kernels.
# Prints "N passed, N failed" (a mutant the tests catch is a pass).
set -u
cd "$(dirname "$0")/../.."
SRC=build/emu/src
[ -f $SRC/backend_cuda.cuh ] || { echo "run make cuda_emu first (no $SRC/backend_cuda.cuh)"; exit 1; }
mapfile -t BUILD < <(make -s emu_print_build 2>/dev/null | grep -v '^OpenBLAS\|^MPI')
CXX_FLAGS=${BUILD[0]}; LIBS=${BUILD[1]}
# the backend's headers, in the order backend_cuda.cuh includes them
mapfile -t PARTS < <(sed -n 's|^#include "\(cuda/[A-Za-z0-9_]*\.cuh\)".*|\1|p' $SRC/backend_cuda.cuh)
[ ${#PARTS[@]} -gt 0 ] || { echo "no #include \"cuda/...\" in $SRC/backend_cuda.cuh"; exit 1; }
total=0
for f in "${PARTS[@]}"; do total=$((total + $(grep -c '__syncthreads();' $SRC/$f))); done
if [ "${1:-}" = all ]; then picks=$(seq 1 $total); elif [ $# -gt 0 ]; then picks="$*"
else picks="cuda/common.cuh:2 cuda/attention.cuh:1 cuda/attention.cuh:7 cuda/galore.cuh:1"; fi
M=build/emu/mutant
mkdir -p $M
pass=0; fail=0
for k in $picks; do
  # the header that holds the k-th barrier, and its number (j) there; or HEADER:J as given
  part=; j=$k
  if [[ $k == *:* ]]; then
    part=${k%%:*}; j=${k##*:}
    [ -f "$SRC/$part" ] && [ "$j" -le "$(grep -c '__syncthreads();' "$SRC/$part")" ] || part=
  else
    for f in "${PARTS[@]}"; do
      c=$(grep -c '__syncthreads();' $SRC/$f)
      if [ $j -le $c ]; then part=$f; break; fi
      j=$((j - c))
    done
  fi
  [ -n "$part" ] || { fail=$((fail+1)); echo "FAIL mutant $k: there are only $total barriers"; continue; }
  # a copy of the backend in $M in which the j-th "__syncthreads();" (and nothing else) of that header is deleted
  rm -rf $M/cuda && mkdir -p $M/cuda
  cp $SRC/backend_cuda.cuh $M/ && cp $SRC/cuda/*.cuh $M/cuda/
  awk -v k=$j '{ line = $0; if (index(line, "__syncthreads();")) { n++; if (n == k) sub(/__syncthreads\(\);/, "/* mutant: barrier removed */", line) } print line }' \
    $SRC/$part > $M/$part
  where=$(awk -v k=$j -v f=$part '/^(__global__|__device__|template|static)/{fn=$0} /__syncthreads\(\);/{n++; if (n==k) {sub(/\(.*/, "", fn); print f " line " NR " in " fn}}' $SRC/$part)
  # -I$M before -I$SRC: the test's #include "backend_cuda.cuh" finds the mutant's copy, whose
  # cuda/ headers (siblings of one another in $M/cuda) are the mutant's too
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
