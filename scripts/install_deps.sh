#!/usr/bin/env bash
# Installs what grass.c needs and is missing, saying what and why; installs nothing that is there.
#
#   scripts/install_deps.sh            # what the quick start needs (build, data, training, plots)
#   scripts/install_deps.sh test       # and what the tests need (MPI, bible-kjv, safetensors, torch,
#                                      #   transformers, protobuf)
#   CHECK_ONLY=1 scripts/install_deps.sh test    # only report; exit 1 when something is missing
#
# Debian/Ubuntu packages go through apt-get, which needs root: without root the script lists the
# missing packages and the command to install them, and exits 1. Python packages go through pip
# (for the python3 on PATH); where Debian marks that Python as externally managed (PEP 668), pip
# is run with --break-system-packages, and the script says so. scripts/quickstart.sh and
# scripts/test.sh call it first, so each of them works on a fresh machine.
set -uo pipefail
MODE=${1:-run}
case $MODE in run|test) ;; *) echo "usage: scripts/install_deps.sh [run|test]" >&2; exit 2 ;; esac
CHECK_ONLY=${CHECK_ONLY:-0}

# ---- Debian packages: name, how to tell it is there, why
apt_missing=()
need_apt() {  # need_apt PACKAGE WHY TEST...: PACKAGE is missing when the command TEST... fails
  local pkg=$1 why=$2; shift 2
  if ! "$@" >/dev/null 2>&1; then apt_missing+=("$pkg"); echo "missing: $pkg ($why)"; fi
}
blas_header() { local f; for f in /usr/include/*/openblas-openmp/cblas.h; do [ -f "$f" ] && return 0; done; return 1; }
need_apt build-essential "the C/C++ compiler and make that build the trainer" command -v g++
need_apt build-essential "make" command -v make
need_apt libopenblas-openmp-dev "OpenBLAS with OpenMP: the CPU build's matrix products" blas_header
need_apt python3 "data preparation, plots and the Python tests" command -v python3
if [ "$MODE" = test ]; then
  need_apt libopenmpi-dev "mpicxx: the data-parallel CPU build that tests/test_mpi.sh runs" command -v mpicxx
  need_apt openmpi-bin "mpirun: the multi-rank tests" command -v mpirun
  need_apt bible-kjv "the King James Bible text: dev/data/test_prepare.sh and the study's second corpus" command -v bible
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  apt_missing+=(python3-pip); echo "missing: python3-pip (pip installs the Python packages below)"
fi
# de-duplicate (build-essential appears twice when both g++ and make are missing)
mapfile -t apt_missing < <(printf '%s\n' "${apt_missing[@]}" | awk 'NF && !seen[$0]++')

if [ ${#apt_missing[@]} -gt 0 ]; then
  if [ "$CHECK_ONLY" = 1 ]; then echo "CHECK_ONLY=1: not installing ${apt_missing[*]}"; exit 1; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${apt_missing[*]} missing and this system has no apt-get; install the equivalents with your package manager" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: installing Debian packages needs root. Run" >&2
    echo "    sudo apt-get install -y ${apt_missing[*]}" >&2
    echo "  (or this script with sudo), then run this command again." >&2
    exit 1
  fi
  echo "== apt-get install ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}" > /tmp/grass_apt.log 2>&1 \
    || { tail -20 /tmp/grass_apt.log; echo "error: apt-get install ${apt_missing[*]} failed (log above: /tmp/grass_apt.log)" >&2; exit 1; }
fi

# ---- Python packages: module, pip name, why
pip_missing=()
need_py() {  # need_py MODULE PIP-NAME WHY
  if ! python3 -c "import $1" >/dev/null 2>&1; then pip_missing+=("$2"); echo "missing: Python package $2 ($3)"; fi
}
need_py numpy numpy "data shards, references, plots"
need_py sentencepiece sentencepiece "tokenizers: dev/data/prepare.py"
need_py matplotlib matplotlib "loss plots: dev/plot_logs.py"
need_py tqdm tqdm "progress bars in dev/data/prepare.py"
if [ "$MODE" = test ]; then
  need_py safetensors safetensors "Hugging Face export/import and its test"
  # the transformers section of dev/test_hf_roundtrip.py: LlamaForCausalLM loads our exports bit for
  # bit and its saved models import back. PyPI's Linux torch is the CUDA build with NVIDIA's
  # wheels: about 5 GB on disk, 72 s to install on the 2-core test machine (2026-12-06)
  need_py torch torch "transformers' LLaMA in dev/test_hf_roundtrip.py (the CUDA build from PyPI: ~5 GB)"
  need_py transformers transformers "LlamaForCausalLM: dev/test_hf_roundtrip.py checks our exports load in it"
  need_py google.protobuf protobuf "AutoTokenizer reads the exported SentencePiece model with it (dev/test_hf_roundtrip.py)"
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
  if [ "$CHECK_ONLY" = 1 ]; then echo "CHECK_ONLY=1: not installing ${pip_missing[*]}"; exit 1; fi
  echo "== pip install ${pip_missing[*]}"
  out=$(python3 -m pip install -q --disable-pip-version-check "${pip_missing[@]}" 2>&1); rc=$?
  if [ $rc -ne 0 ] && echo "$out" | grep -q "externally-managed-environment"; then
    extra=(--break-system-packages); [ "$(id -u)" != 0 ] && extra+=(--user)
    echo "note: this python3 is marked externally managed (Debian, PEP 668); installing with pip ${extra[*]}"
    out=$(python3 -m pip install -q --disable-pip-version-check "${extra[@]}" "${pip_missing[@]}" 2>&1); rc=$?
  fi
  if [ $rc -ne 0 ]; then echo "$out" | tail -10; echo "error: pip install ${pip_missing[*]} failed (above)" >&2; exit 1; fi
fi
# dev/test_galore_torch.py: our --optimizer galore against the published GaLore, galore-torch 1.0's
# GaLoreAdamW. Installed without its dependencies: torch and transformers are above, and bitsandbytes
# serves only its 8-bit optimizer, which the test does not load (it reads the package's modules by path)
has_galore() { python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('galore_torch') is None)" >/dev/null 2>&1; }
if [ "$MODE" = test ] && ! has_galore; then
  echo "missing: Python package galore-torch==1.0 (dev/test_galore_torch.py: GaLore as published)"
  if [ "$CHECK_ONLY" = 1 ]; then echo "CHECK_ONLY=1: not installing galore-torch"; exit 1; fi
  echo "== pip install --no-deps galore-torch==1.0"
  python3 -m pip install -q --disable-pip-version-check --no-deps galore-torch==1.0 >/tmp/grass_galore.log 2>&1 \
    || python3 -m pip install -q --disable-pip-version-check --no-deps --break-system-packages $([ "$(id -u)" != 0 ] && echo --user) \
         galore-torch==1.0 >>/tmp/grass_galore.log 2>&1 \
    || { tail -10 /tmp/grass_galore.log; echo "error: pip install galore-torch==1.0 failed (above)" >&2; exit 1; }
fi
# Optional: cuDNN's frontend headers (header-only C++; the wheel also holds Python bindings we do
# not use). With nvcc present, the GPU build then compiles --attention cudnn (cuda.mk looks in
# site-packages/include); without them it builds the own attention only, so a failure here is a
# note, not an error.
have_nvcc() { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }
fe_header() { python3 -c "import os, sys, sysconfig; sys.exit(0 if os.path.isfile(os.path.join(sysconfig.get_paths()['purelib'], 'include', 'cudnn_frontend.h')) else 1)"; }
# cuobjdump lists the cubins of the GPU prebuilt binaries (tests/test_gpu_prebuilt.sh); some toolkit
# installs leave it out, NVIDIA's wheel has it (site-packages/nvidia/cu13/bin)
cuda_tools_found() {
  local f site; site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null)
  command -v cuobjdump >/dev/null 2>&1 && command -v nvdisasm >/dev/null 2>&1 && return 0
  for f in /usr/local/cuda/bin/nvdisasm "$site"/nvidia/*/bin/nvdisasm; do [ -x "$f" ] || continue
    for f in /usr/local/cuda/bin/cuobjdump "$site"/nvidia/*/bin/cuobjdump; do [ -x "$f" ] && return 0; done; done
  return 1
}
if [ "$MODE" = test ] && [ "$CHECK_ONLY" != 1 ] && have_nvcc && ! cuda_tools_found; then
  echo "== pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (tests/test_gpu_prebuilt.sh lists the prebuilt" \
       "binaries' cubins; dev/check_fp_contract.sh reads the init kernel's SASS)"
  pkgs=(nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)
  python3 -m pip install -q --disable-pip-version-check "${pkgs[@]}" >/tmp/grass_cuobjdump.log 2>&1 \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${pkgs[@]}" >>/tmp/grass_cuobjdump.log 2>&1 \
    || echo "note: ${pkgs[*]} did not install (/tmp/grass_cuobjdump.log); the tests that need them will count skips"
fi
if [ "$MODE" = test ] && [ "$CHECK_ONLY" != 1 ] && have_nvcc && ! fe_header >/dev/null 2>&1; then
  echo "== pip install nvidia-cudnn-frontend (optional: the GPU build's --attention cudnn)"
  if ! python3 -m pip install -q --disable-pip-version-check nvidia-cudnn-frontend >/tmp/grass_fe.log 2>&1 \
     && ! python3 -m pip install -q --disable-pip-version-check --break-system-packages nvidia-cudnn-frontend >>/tmp/grass_fe.log 2>&1; then
    echo "note: nvidia-cudnn-frontend did not install (/tmp/grass_fe.log); the GPU build will have --attention own only"
  fi
fi
echo "dependencies ($MODE): all present"
