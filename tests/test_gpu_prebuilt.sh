#!/usr/bin/env bash
# tests/test_gpu_prebuilt.sh: will the binaries of `make gpu_prebuilt` (build/gpu_prebuilt) load and
# run on the GPU machine? Checked here, without it, against what it is known to have
# (tests/gpu_machine_libs.txt): each binary is an x86-64 ELF holding sm_90 device code; its NEEDED
# libraries are all on the list; the symbol versions it asks of glibc and libstdc++ are no newer
# than the list's bounds; its RUNPATH covers the toolkit and site-packages' nvidia/*/lib on the GPU
# machine; ldd resolves every library here; it starts here (and says there is no GPU). The set
# is smaller than 48 MiB (what travels to the GPU machine is limited to 64 MiB) and MANIFEST.txt
# lists every binary. The NEEDED check is first shown to reject a binary that needs libopenblas.
#   bash tests/test_gpu_prebuilt.sh      (after make gpu_prebuilt; PREBUILT_DIR=... to check another)
set -u
cd "$(dirname "$0")/.."
source tests/harness.sh
start=$(date +%s)
DIR=${PREBUILT_DIR:-build/gpu_prebuilt}
LIBS=tests/gpu_machine_libs.txt
GPU_SITE=${GPU_PREBUILT_SITE:-/opt/torch/.venv/lib/python3.12/site-packages}
BINS="train_llama test_kernels_cuda test_llama attention_check gathered_gemm_check gemm_align_check classifier_check test_emu_gpu"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# cuobjdump: on PATH, in the toolkit, or from `pip install nvidia-cuda-cuobjdump` (nvidia/cu13/bin)
PY_SITE=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null)
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || ls "$CUDA_HOME/bin/cuobjdump" $PY_SITE/nvidia/*/bin/cuobjdump 2>/dev/null | head -1)}

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x "$CUDA_HOME/bin/nvcc" ] && [ ! -d "$DIR" ]; then
    skip "the GPU prebuilt binaries: no nvcc here and no $DIR"
    finish test_gpu_prebuilt
    exit $?
fi

allowed=$(grep -vE '^\s*(#|max |$)' "$LIBS" | awk '{print $1}')
max_of() { awk -v k="$1" '$1 == "max" && $2 == k {print $3}' "$LIBS"; }
# needed_ok FILE: prints the NEEDED entries that are not on the list (nothing when all are)
needed_ok() {
    readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | while read -r lib; do
        echo "$allowed" | grep -qxF "$lib" || echo "$lib"
    done
}
# newest_version FILE PREFIX: the newest PREFIX_x.y.z symbol version FILE asks for (empty if none)
newest_version() {
    objdump -T "$1" 2>/dev/null | grep -oE "\b$2_[0-9.]+" | sed "s/^$2_//" | sort -uV | tail -1
}
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }

# the checker must be able to fail: a binary that needs libopenblas is rejected
if command -v cc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 ]; then
    printf 'int main(void) { return 0; }\n' > "$W/x.c"
    if cc "$W/x.c" -o "$W/needs_openblas" -Wl,--no-as-needed -lopenblas 2>/dev/null; then
        miss=$(needed_ok "$W/needs_openblas")
        if echo "$miss" | grep -q openblas; then ok "the NEEDED check rejects a binary that needs $(echo $miss)"
        else bad "the NEEDED check accepted a binary that needs libopenblas"; fi
    fi
fi

if [ ! -d "$DIR" ]; then
    bad "$DIR does not exist: run make gpu_prebuilt"
    finish test_gpu_prebuilt
    exit 1
fi

total=0
glibc_max=$(max_of GLIBC); glibcxx_max=$(max_of GLIBCXX); cxxabi_max=$(max_of CXXABI)
for b in $BINS; do
    f=$DIR/$b
    if [ ! -x "$f" ]; then bad "$b: missing from $DIR"; continue; fi
    total=$((total + $(stat -c %s "$f")))
    hdr=$(readelf -h "$f" 2>/dev/null)
    if echo "$hdr" | grep -q 'Class:.*ELF64' && echo "$hdr" | grep -q 'Machine:.*X86-64'; then ok "$b: x86-64 ELF"
    else bad "$b: not an x86-64 ELF"; fi
    if [ -n "$CUOBJDUMP" ] && [ -x "$CUOBJDUMP" ]; then
        elfs=$("$CUOBJDUMP" --list-elf "$f" 2>/dev/null)
        other=$(echo "$elfs" | grep -oE 'sm_[0-9]+[a-z]?' | grep -v '^sm_90$' | sort -u | tr '\n' ' ')
        if echo "$elfs" | grep -q 'sm_90' && [ -z "$other" ]; then ok "$b: device code for sm_90 only ($(echo "$elfs" | grep -c sm_90) cubin)"
        else bad "$b: cuobjdump --list-elf: want sm_90 cubins only, got: $(echo $elfs)"; fi
    else  # weaker: the fatbin section is there and its link options name sm_90
        if readelf -S "$f" | grep -q '\.nv_fatbin' && strings -a "$f" | grep -q -- '-arch sm_90'; then
            ok "$b: a .nv_fatbin linked for sm_90"
            skip "$b: the list of its cubins (no cuobjdump: pip install nvidia-cuda-cuobjdump, as scripts/install_deps.sh test does)"
        else bad "$b: no .nv_fatbin for sm_90 (and no cuobjdump to list its cubins)"; fi
    fi
    miss=$(needed_ok "$f")
    if [ -z "$miss" ]; then ok "$b: every NEEDED library is on the GPU machine ($(readelf -d "$f" | grep -c NEEDED) of them)"
    else bad "$b: needs libraries the GPU machine lacks: $(echo $miss)"; fi
    for pair in "GLIBC $glibc_max" "GLIBCXX $glibcxx_max" "CXXABI $cxxabi_max"; do
        set -- $pair
        v=$(newest_version "$f" "$1")
        if [ -z "$v" ] || version_le "$v" "$2"; then ok "$b: newest $1 version asked ${v:-none} <= $2"
        else bad "$b: asks for $1_$v, newer than the GPU machine's assumed $2"; fi
    done
    rp=$(readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
    missing_rp=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib "$GPU_SITE/nvidia/cudnn/lib" "$GPU_SITE/nvidia/nccl/lib" \
             "$GPU_SITE/nvidia/cublas/lib" "$GPU_SITE/nvidia/cu13/lib"; do
        echo ":$rp:" | grep -qF ":$d:" || missing_rp="$missing_rp $d"
    done
    if [ -z "$missing_rp" ]; then ok "$b: RUNPATH covers the toolkit and $GPU_SITE/nvidia/*/lib"
    else bad "$b: RUNPATH '$rp' lacks$missing_rp"; fi
    unresolved=$(ldd "$f" 2>&1 | grep 'not found')
    if [ -z "$unresolved" ]; then ok "$b: ldd resolves every library here"
    else bad "$b: ldd here: $(echo $unresolved)"; fi
    grep -q "^$b " "$DIR/MANIFEST.txt" 2>/dev/null && ok "$b: in MANIFEST.txt" || bad "$b: not in $DIR/MANIFEST.txt"
done

# each starts here: the loader finds its libraries, static initializers run, and with no GPU it
# says so (a GPU machine would run it for real)
start_check() {  # NAME RC EXPECT CMD...: CMD exits with RC (any: -) and prints EXPECT
    local name=$1 want=$2 expect=$3; shift 3
    local out; out=$(timeout 60 "$@" 2>&1); local rc=$?
    if { [ "$want" = - ] || [ $rc -eq "$want" ]; } && echo "$out" | grep -qiE "$expect"; then ok "$name starts here (rc $rc, prints '$expect')"
    else bad "$name: rc $rc, output: $(echo "$out" | tail -3)"; fi
}
[ -x "$DIR/train_llama" ] && start_check "train_llama --help" 0 "usage|--attention" "$DIR/train_llama" --help
for c in test_kernels_cuda attention_check gathered_gemm_check gemm_align_check classifier_check; do
    [ -x "$DIR/$c" ] && start_check "$c (no GPU here)" 0 "skipped: needs a GPU" "$DIR/$c"
done
# test_llama stops with its error where there is no GPU: it got as far as asking for one
[ -x "$DIR/test_llama" ] && start_check "test_llama (no GPU here)" - "no usable CUDA GPU" "$DIR/test_llama"

mib=$((total / 1048576))
if [ "$total" -gt 0 ] && [ "$total" -lt $((48 * 1048576)) ]; then ok "total size $total bytes ($mib MiB) < 48 MiB"
else bad "total size $total bytes ($mib MiB) is not under 48 MiB"; fi
echo "test_gpu_prebuilt: $(( $(date +%s) - start )) s"
finish test_gpu_prebuilt
