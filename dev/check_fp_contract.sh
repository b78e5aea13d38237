#!/usr/bin/env bash
# dev/check_fp_contract.sh: is rng.h's normal draw immune to floating-point contraction?
# (rng.h: every product that feeds a sum is an explicit fma(), so no compiler may fuse a
# multiply and an add of its own choosing; the initial weights then round the same everywhere.)
#   1. nvcc's device code: a kernel that draws (rng_init_pair) and hashes, compiled with
#      --fmad=true (nvcc's default, contraction allowed) and --fmad=false. Its PTX must be the same
#      but for the .rn that --fmad=false puts on every mul/add/sub (nvcc's front end fused
#      nothing), and, where cuobjdump and nvdisasm are found (PATH or $CUDA_HOME/bin; pip install
#      nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm), its sm_90 SASS must be identical (ptxas, which
#      may fuse a plain mul.f64 into a following add.f64, fused nothing either).
#   2. g++: 4M draws (their double values) hashed by a host program built with -O3 -march=native (FMA instructions;
#      the CPU build's flags) with -ffp-contract=fast (g++'s default) and =off, and with -O0,
#      must give one hash.
# Prints "N passed, N failed" (tests/run_all.sh runs it with the emulated suite) and exits 0 when
# all hold. Needs nvcc for part 1 (skipped with a note without it).
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0; skipped=0
ok() { pass=$((pass+1)); echo "ok   $1"; }
bad() { fail=$((fail+1)); echo "FAIL $1"; }
skip() { skipped=$((skipped+1)); echo "skipped: $1"; }  # counted by tests/run_all.sh (a failure under CI)
cat > "$T/draw.cu" <<'CU'
#include "rng.h"
__global__ void draw(float* out, unsigned long long* h, uint64_t key, size_t pairs) {
    size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (k >= pairs) return;
    rng_init_pair(key, k, 0.02, &out[2 * k], &out[2 * k + 1]);
    h[k] = rng_hash_term(2 * k, out[2 * k]) + rng_hash_term(2 * k + 1, out[2 * k + 1]);
}
CU
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ -x "$NVCC" ]; then
  for f in true false; do
    "$NVCC" -std=c++17 -O3 -arch=sm_90 -I. --fmad=$f -ptx "$T/draw.cu" -o "$T/draw_$f.ptx"
    "$NVCC" -std=c++17 -O3 -arch=sm_90 -I. --fmad=$f -cubin "$T/draw.cu" -o "$T/draw_$f.cubin"
  done
  n_fma=$(grep -c "fma.rn.f64" "$T/draw_true.ptx" || true)
  norm() { grep -v '^//' "$1" | sed -E 's/\b(mul|add|sub)\.rn\.f64/\1.f64/'; }
  if diff -q <(norm "$T/draw_true.ptx") <(norm "$T/draw_false.ptx") >/dev/null; then
    ok "nvcc: the PTX is the same with --fmad=true and --fmad=false, but for .rn ($n_fma fma.rn.f64, each written as fma())"
  else bad "nvcc: --fmad=true contracts something: the PTX differs from --fmad=false"; fi
  CUDA_BIN=$(dirname "$NVCC")
  # the toolkit's, or NVIDIA's wheels' (site-packages/nvidia/cu13/bin: scripts/install_deps.sh test)
  PY_BIN=$(ls -d "$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null)"/nvidia/*/bin 2>/dev/null \
           | tr '\n' ':')
  CUDA_BIN=$CUDA_BIN:$PY_BIN
  CUOBJDUMP=$(PATH="$PATH:$CUDA_BIN" command -v cuobjdump || true)
  if [ -n "$CUOBJDUMP" ] && PATH="$PATH:$CUDA_BIN" command -v nvdisasm >/dev/null; then
    sass() { PATH="$PATH:$CUDA_BIN" "$CUOBJDUMP" -sass "$1" | grep -E '^\s+/\*[0-9a-f]{4}\*/' | sed -E 's#/\*[0-9a-f]*\*/##; s/;.*//'; }
    n_dfma=$(sass "$T/draw_true.cubin" | grep -c DFMA || true)
    if diff -q <(sass "$T/draw_true.cubin") <(sass "$T/draw_false.cubin") >/dev/null; then
      ok "ptxas: the sm_90 SASS is identical with --fmad=true and --fmad=false ($n_dfma DFMA: the fma()s, division and sqrt)"
    else bad "ptxas: --fmad=true contracts something: the SASS differs from --fmad=false"; fi
  else skip "ptxas's contraction (cuobjdump or nvdisasm not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)"; fi
else skip "the device half (nvcc not found)"; fi
cat > "$T/draw.c" <<'C'
#include <stdio.h>
#include "rng.h"
int main(void) {
    uint64_t h = 0;
    for (uint64_t k = 0; k < 2000000; k++) {  // the doubles' bits, before the rounding to float
        uint64_t s = 0x243F6A8885A308D3ULL ^ (k * 0xD1B54A32D192ED03ULL);
        uint64_t b1 = splitmix64(&s), b2 = splitmix64(&s);
        double z0, z1;
        rng_normal_pair(b1, b2, &z0, &z1);
        h += splitmix64_mix(rng_double_bits(z0) + k) + splitmix64_mix(rng_double_bits(z1) ^ k);
    }
    printf("%016llx\n", (unsigned long long)h);
    return 0;
}
C
hashes=()
for flags in "-O3 -march=native -ffp-contract=fast" "-O3 -march=native -ffp-contract=off" "-O0"; do
  g++ -x c++ $flags -I. "$T/draw.c" -o "$T/draw" -lm
  hashes+=("$("$T/draw")")
  echo "g++ $flags: hash ${hashes[-1]}"
done
[ "${hashes[0]}" = "${hashes[1]}" ] && [ "${hashes[0]}" = "${hashes[2]}" ] && ok "g++: the same draws with contraction on, off and at -O0" \
  || bad "g++: the flags change the draws"
echo "check_fp_contract: $pass passed, $fail failed$([ $skipped -gt 0 ] && echo ", $skipped skipped")"
[ $fail -eq 0 ]
