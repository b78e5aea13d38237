#!/usr/bin/env bash
# Builds that remember their configuration (build_config.mk), in a scratch copy of the sources so
# the checkout's own binaries are untouched:
#   - the README's two commands in the order quick start, then tests: the quick start on a machine
#     without OpenMPI builds a single-process train_llama_cpu (NO_MPI=1 stands in for "no mpicxx
#     yet"); the tests' make, with MPI there, must rebuild it as an MPI binary that runs 2 ranks
#     (it did not before the stamps: make saw an up-to-date binary and test_mpi failed 140 times);
#   - the other order: a binary built with MPI is rebuilt without it under NO_MPI=1;
#   - an unchanged configuration rebuilds nothing and leaves the stamp's time alone;
#   - the CUDA and emulator stamps change with what they record (GPU_ARCH, the emulator's flags).
# Prints "N passed, N failed". Needs mpicxx and mpirun (scripts/install_deps.sh test).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
source tests/harness.sh
command -v mpicxx >/dev/null 2>&1 || { bad "mpicxx not found (scripts/install_deps.sh test installs libopenmpi-dev)"; finish test_build_config; exit 1; }

# the sources as a fresh clone has them (tracked files; the working tree's versions)
S=$W/src
mkdir -p "$S"
if git rev-parse --show-toplevel >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$S"
else
  cp -r Makefile build_config.mk cuda.mk ./*.h ./*.cuh ./*.cu cuda tests dev "$S"/
fi
cd "$S"
banner='^(OpenBLAS|MPI):'
mk() { make --no-print-directory "$@" 2>&1 | grep -Ev "$banner"; return "${PIPESTATUS[0]}"; }
links_mpi() { ldd "$1" | grep -q 'libmpi'; }
mtime() { date -r "$1" +%s.%N; }

echo "== quick start first (no MPI yet), then the tests' build"
mk train_llama_cpu NO_MPI=1 > "$W/b1.log" || bad "NO_MPI=1 make train_llama_cpu failed: $(tail -3 "$W/b1.log")"
if [ -x train_llama_cpu ] && ! links_mpi train_llama_cpu; then ok "NO_MPI=1 build is single-process (no libmpi)"
else bad "NO_MPI=1 build links libmpi or is missing"; fi
grep -q '^mpi: none (NO_MPI=1)' build/config/cpu.txt && ok "cpu stamp records NO_MPI=1" || bad "cpu stamp: $(grep '^mpi' build/config/cpu.txt)"
sleep 1.1  # whole-second file systems: a rebuild must show in the binary's time
t1=$(mtime train_llama_cpu)
mk train_llama_cpu > "$W/b2.log" || bad "make train_llama_cpu (with MPI) failed: $(tail -3 "$W/b2.log")"
grep -q 'build configuration changed (build/config/cpu.txt)' "$W/b2.log" && ok "make says the configuration changed" \
  || bad "no 'configuration changed' line: $(head -3 "$W/b2.log")"
[ "$(mtime train_llama_cpu)" != "$t1" ] && ok "train_llama_cpu rebuilt" || bad "train_llama_cpu not rebuilt after MPI appeared"
links_mpi train_llama_cpu && ok "rebuilt binary links libmpi" || bad "rebuilt binary has no libmpi"
# and it runs two ranks (a build without MPI refuses that: tests/test_mpi.sh's last check)
out=$(timeout 60 mpirun --allow-run-as-root --oversubscribe -np 2 ./train_llama_cpu -c tiny -b 1 -t 16 --plan-only 1 2>&1); rc=$?
[ $rc -eq 0 ] && ! grep -q "built without MPI" <<< "$out" && ok "rebuilt binary runs under mpirun -np 2" \
  || bad "mpirun -np 2 of the rebuilt binary: rc=$rc $(tail -2 <<< "$out")"

echo "== nothing changed: nothing rebuilt"
sleep 1.1
t2=$(mtime train_llama_cpu); s2=$(mtime build/config/cpu.txt)
mk train_llama_cpu > "$W/b3.log" || bad "third make failed"
[ -x train_llama_cpu ] && [ "$(mtime train_llama_cpu)" = "$t2" ] && ok "unchanged configuration: binary untouched" || bad "rebuilt without a change: $(cat "$W/b3.log")"
[ -f build/config/cpu.txt ] && [ "$(mtime build/config/cpu.txt)" = "$s2" ] && ok "unchanged configuration: stamp untouched" || bad "stamp rewritten without a change"
grep -q 'configuration changed' "$W/b3.log" && bad "a 'configuration changed' line without a change" || ok "no change reported"

echo "== the other order: MPI binary, then NO_MPI=1"
mk train_llama_cpu NO_MPI=1 > "$W/b4.log" || bad "NO_MPI=1 rebuild failed"
[ -x train_llama_cpu ] && ! links_mpi train_llama_cpu && ok "NO_MPI=1 after an MPI build rebuilds without MPI" || bad "NO_MPI=1 after an MPI build kept libmpi (or no binary)"

echo "== the CUDA and emulator stamps follow what they record"
if [ -n "$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)" ]; then
  mk build/config/cuda.txt GPU_ARCH=sm_90 > /dev/null; a=$(grep '^gpu arch' build/config/cuda.txt)
  mk build/config/cuda.txt GPU_ARCH="sm_80 sm_90" > /dev/null; b=$(grep '^gpu arch' build/config/cuda.txt)
  [ "$a" = "gpu arch: sm_90" ] && [ "$b" = "gpu arch: sm_80 sm_90" ] && ok "cuda stamp records GPU_ARCH" || bad "cuda stamp: '$a' then '$b'"
  grep -q '^nvcc: .*release\|^nvcc: .*cuda_' build/config/cuda.txt && ok "cuda stamp records nvcc's version" || bad "cuda stamp lacks nvcc's version"
  # a goal that would build train_llama lists the stamp among what it needs
  make -n --no-print-directory train_llama GPU_ARCH=sm_90 2>/dev/null | grep -q 'build/config/cuda.txt' \
    && ok "train_llama depends on the cuda stamp" || bad "train_llama does not depend on build/config/cuda.txt"
else
  bad "nvcc not found: the CUDA stamp is unchecked (the CUDA toolkit is part of the test machine)"
fi
mk build/config/emu.txt > /dev/null; e1=$(cat build/config/emu.txt)
mk build/config/emu.txt NO_MPI=1 > /dev/null; e2=$(cat build/config/emu.txt)
[ "$e1" != "$e2" ] && grep -q '^mpi: none' build/config/emu.txt && ok "emulator stamp records MPI" || bad "emulator stamp unchanged by NO_MPI=1"
make -n --no-print-directory build/emu/test_emu 2>/dev/null | grep -q 'build/config/emu.txt' \
  && ok "emulated binaries depend on the emulator stamp" || bad "build/emu/test_emu does not depend on build/config/emu.txt"
mk build_config > "$W/bc.log" && grep -q '^== build/config/cpu.txt' "$W/bc.log" && ok "make build_config prints the stamps" \
  || bad "make build_config: $(head -3 "$W/bc.log")"
cd "$ROOT"
finish test_build_config
