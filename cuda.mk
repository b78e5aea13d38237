# cuda.mk: the GPU build (included by the Makefile with -include cuda.mk).
#   make train_llama          bf16 trainer (cuBLAS/cuBLASLt; MPI and NCCL when found)
#   make train_llama_fp32     the same with fp32 storage (-DENABLE_FP32)
#   make test_llama           test_llama.cu against the transformers fixtures, on the GPU
#   make test_kernels_cuda    every CUDA kernel against the CPU kernels (tests/bin/test_kernels_cuda)
#   make dev_cuda             kernel experiments in dev/cuda (binaries in build/dev_cuda/)
#   make test_kernels_cuda_fp32  the parity test of the fp32 build (tests/bin/test_kernels_cuda_fp32)
#   make test_emu_gpu         the CUDA emulator's own checks, on the GPU (tests/bin/test_emu_gpu)
#   make gpu_prebuilt         what scripts/gpu_check.sh's priority tier runs, for sm_90, without MPI,
#                             into build/gpu_prebuilt/ (MANIFEST.txt; tests/test_gpu_prebuilt.sh checks it)
#   make cuda_info            what was found (nvcc, MPI, NCCL, cuDNN, CBLAS) and the flags
# Options: GPU_ARCH="sm_80 sm_90" (default; one arch compiles faster: GPU_ARCH=sm_90),
#          NVCC=/path/to/nvcc, NO_MPI=1, NO_NCCL=1, CUDA_HOME=/usr/local/cuda,
#          USE_CUDNN=0/1 (cuDNN's fused attention, --attention cudnn: on where cudnn.h, libcudnn and
#          the cudnn_frontend headers are found), CUDNN_FRONTEND_INCLUDE=/path/to/cudnn-frontend/include,
#          CUDA_PYTHON=python3 (whose site-packages hold NVIDIA's wheels: nvidia/<pkg>/include, lib).

CUDA_HOME ?= /usr/local/cuda
comma := ,
NVCC ?= $(shell command -v nvcc 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
GPU_ARCH ?= sm_80 sm_90

CUDA_GOALS := train_llama train_llama_fp32 test_llama test_kernels_cuda tests/bin/test_kernels_cuda dev_cuda \
              test_emu_gpu tests/bin/test_emu_gpu gpu_prebuilt cudnn_obj \
              test_kernels_cuda_fp32 tests/bin/test_kernels_cuda_fp32 \
              build/dev_cuda/attention_check build/dev_cuda/classifier_check build/dev_cuda/gathered_gemm_check build/dev_cuda/gemm_align_check
CUDA_GOALS_ASKED := $(filter $(CUDA_GOALS),$(MAKECMDGOALS))

# -gencode for each listed architecture: sm_90 -> -gencode arch=compute_90,code=sm_90
GENCODE := $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(subst sm_,,$(a)),code=$(a))

# Not --use_fast_math: the softmax, RMSNorm and Adam kernels keep IEEE expf/sqrtf/division,
# and denormals are not flushed, so the GPU matches the fp32 CPU reference closely.
# -fopenmp: the host loops (OpenMP pragmas in the shared headers) run on every core here too; no
# -Wno-unknown-pragmas, so that a pragma the host compiler ignores is reported.
NVCC_FLAGS_NOARCH = -O3 -std=c++17 -lineinfo -I. -Xcompiler -Wall,-Wno-unused-function,-fopenmp
NVCC_FLAGS = $(NVCC_FLAGS_NOARCH) $(GENCODE)
NVCC_LIBS = -lcublas -lcublasLt -lcusolver -lgomp

# MPI (the Makefile has already looked for mpicxx and honoured NO_MPI=1)
ifeq ($(NO_MPI),1)
  CUDA_MPICXX :=
else
  CUDA_MPICXX := $(shell command -v mpicxx 2>/dev/null)
endif
ifneq ($(CUDA_MPICXX),)
  # nvcc does not take -Wl,... or -pthread directly: hand those to the host compiler
  CUDA_MPI_CFLAGS := $(filter-out -pthread,$(shell $(CUDA_MPICXX) --showme:compile 2>/dev/null))
  CUDA_MPI_LIBS := $(shell $(CUDA_MPICXX) --showme:link 2>/dev/null)
  CUDA_MPI_LIBS := $(patsubst -Wl$(comma)%,-Xlinker %,$(filter -Wl$(comma)%,$(CUDA_MPI_LIBS))) \
                   $(filter-out -Wl$(comma)% -pthread,$(CUDA_MPI_LIBS))
  ifeq ($(strip $(CUDA_MPI_LIBS)),)
    CUDA_MPI_NOTE := MPI: $(CUDA_MPICXX) found but it does not answer --showme (not Open MPI?); GPU build is single-process
    CUDA_MPICXX :=
  else
    CUDA_MPI_FLAGS := -DUSE_MPI $(CUDA_MPI_CFLAGS) -Xcompiler -pthread
    CUDA_MPI_NOTE := MPI: $(CUDA_MPICXX) -> -DUSE_MPI $(CUDA_MPI_CFLAGS) / $(CUDA_MPI_LIBS)
  endif
else
  CUDA_MPI_NOTE := MPI: mpicxx not found (or NO_MPI=1): the GPU build is single-process (apt-get install libopenmpi-dev openmpi-bin)
endif
# ---- NCCL and cuDNN: in the toolkit or in Python's site-packages ------------------------------------
# Each is looked for as a header with its library, first in the toolkit and the system
# (CUDA_HOME, /usr/include, /usr/lib/<multiarch>), then in the site-packages of CUDA_PYTHON, where
# NVIDIA's wheels put them (nvidia-nccl-cu13: nvidia/nccl/{include,lib}; nvidia-cudnn-cu13:
# nvidia/cudnn/...; CUDA-13 wheels of the toolkit's libraries: nvidia/cu13/...). A place counts
# when it has both, so the header and the library come from one release. The wheels hold only
# the versioned library (libnccl.so.2, no libnccl.so): such a library is linked by its file name
# (-l:libnccl.so.2), and its directory goes into the binary's RUNPATH, since site-packages is not
# on the loader's path.
CUDA_PYTHON ?= python3
cu_space := $(subst ,, )
CUDA_PY_SITE := $(shell $(CUDA_PYTHON) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" 2>/dev/null)
CUDA_PY_NVIDIA := $(if $(CUDA_PY_SITE),$(sort $(wildcard $(CUDA_PY_SITE)/nvidia/*/include)))
CUDA_SYS_INCLUDE := $(CUDA_HOME)/include /usr/include /usr/include/$(MULTIARCH) /usr/local/include
CUDA_SYS_LIB := $(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib /usr/lib/$(MULTIARCH) /usr/local/lib
# $(call cu_find,header,lib): "<include dir> <lib file>" of the first place holding both, or empty
cu_lib_in = $(firstword $(wildcard $(addsuffix /lib$(2).so,$(1))) $(sort $(wildcard $(addsuffix /lib$(2).so.[0-9]*,$(1)))))
cu_find_sys = $(if $(and $(firstword $(wildcard $(addsuffix /$(1),$(CUDA_SYS_INCLUDE)))),$(call cu_lib_in,$(CUDA_SYS_LIB),$(2))),\
                $(patsubst %/,%,$(dir $(firstword $(wildcard $(addsuffix /$(1),$(CUDA_SYS_INCLUDE)))))) $(call cu_lib_in,$(CUDA_SYS_LIB),$(2)))
cu_find_py = $(firstword $(foreach i,$(CUDA_PY_NVIDIA),$(if $(and $(wildcard $(i)/$(1)),$(call cu_lib_in,$(i)/../lib,$(2))),$(i))))
cu_find = $(or $(call cu_find_sys,$(1),$(2)),$(if $(call cu_find_py,$(1),$(2)),$(call cu_find_py,$(1),$(2)) $(abspath $(call cu_lib_in,$(call cu_find_py,$(1),$(2))/../lib,$(2)))))
# $(call cu_link,lib file,name): -L<dir> -l<name>, or -l:<file> where only the versioned file is there
cu_link = -L$(dir $(1)) $(if $(filter %.so,$(1)),-l$(2),-l:$(notdir $(1)))

# NCCL unless NO_NCCL=1; multi-GPU also needs MPI
ifneq ($(NO_NCCL),1)
  NCCL_FOUND := $(call cu_find,nccl.h,nccl)
endif
ifneq ($(NCCL_FOUND),)
  NCCL_H := $(firstword $(NCCL_FOUND))/nccl.h
  NCCL_LIB := $(lastword $(NCCL_FOUND))
  CUDA_NCCL_FLAGS := -DUSE_NCCL -I$(dir $(NCCL_H))
  CUDA_NCCL_LIBS := $(call cu_link,$(NCCL_LIB),nccl)
  CUDA_NCCL_NOTE := NCCL: $(NCCL_H) and $(NCCL_LIB) -> -DUSE_NCCL$(if $(CUDA_MPICXX),, (no MPI: NCCL is unused, single GPU))
else
  CUDA_NCCL_NOTE := NCCL: nccl.h with libnccl not found in the toolkit or $(or $(CUDA_PY_SITE),python's site-packages)/nvidia (or NO_NCCL=1): several ranks would all-reduce through MPI on the host
endif

# CBLAS for the CPU reference in the parity test and dev checks: the system's, or a tiny
# built-in fallback (tests/cblas_fallback) where no cblas.h is installed.
CBLAS_H := $(firstword $(wildcard /usr/include/cblas.h /usr/include/x86_64-linux-gnu/cblas.h \
           /usr/include/aarch64-linux-gnu/cblas.h /usr/include/openblas/cblas.h))
ifneq ($(CBLAS_H),)
  CUDA_CBLAS_FLAGS := $(if $(findstring openblas,$(CBLAS_H)),-I$(dir $(CBLAS_H)))
  CUDA_CBLAS_LIBS := -lopenblas
  CUDA_CBLAS_NOTE := CBLAS: $(CBLAS_H) -lopenblas
else
  CUDA_CBLAS_FLAGS := -Itests/cblas_fallback -DGRASS_NO_LAPACK
  CUDA_CBLAS_LIBS :=
  CUDA_CBLAS_NOTE := CBLAS: no cblas.h: the CPU references use tests/cblas_fallback (slow, naive sgemm)
endif

# cuDNN's fused attention (--attention cudnn): cudnn.h with libcudnn (found as NCCL is, above) and
# the header-only cudnn_frontend, in CUDNN_FRONTEND_INCLUDE or where `pip install
# nvidia-cudnn-frontend` puts it (site-packages/include). The frontend is compiled in one
# translation unit only, cuda/attention_cudnn.cpp, by the host compiler (it holds no device
# code, so the object serves every GPU_ARCH): CUDNN_OBJ, linked into train_llama and
# attention_check. CUDNN_FRONTEND_SKIP_JSON_LIB leaves out the frontend's JSON serialization
# (unused here): measured 60-90 s and 1.34 GB instead of 2.2 min and 2.35 GB of host compilation.
CUDNN_FOUND := $(call cu_find,cudnn.h,cudnn)
CUDNN_H := $(if $(CUDNN_FOUND),$(firstword $(CUDNN_FOUND))/cudnn.h)
CUDNN_LIB := $(if $(CUDNN_FOUND),$(lastword $(CUDNN_FOUND)))
CUDNN_FRONTEND_INCLUDE ?= $(if $(CUDA_PY_SITE),$(if $(wildcard $(CUDA_PY_SITE)/include/cudnn_frontend.h),$(CUDA_PY_SITE)/include))
ifeq ($(USE_CUDNN),)
  USE_CUDNN := $(if $(and $(CUDNN_H),$(CUDNN_FRONTEND_INCLUDE)),1,0)
endif
CUDNN_OBJ := build/cuda/attention_cudnn.o
ifeq ($(USE_CUDNN),1)
  ifeq ($(wildcard $(CUDNN_FRONTEND_INCLUDE)/cudnn_frontend.h),)
    $(error USE_CUDNN=1 but cudnn_frontend.h is not in CUDNN_FRONTEND_INCLUDE='$(CUDNN_FRONTEND_INCLUDE)': pip install nvidia-cudnn-frontend, or set CUDNN_FRONTEND_INCLUDE)
  endif
  ifeq ($(CUDNN_H),)
    $(error USE_CUDNN=1 but cudnn.h with libcudnn was found neither in the toolkit nor in $(or $(CUDA_PY_SITE),python's site-packages)/nvidia: pip install nvidia-cudnn-cu13, or set CUDA_PYTHON)
  endif
  CUDNN_OBJ_FLAGS := -std=c++17 -O2 -Xcompiler -Wall -DCUDNN_FRONTEND_SKIP_JSON_LIB -I$(dir $(CUDNN_H)) -I$(CUDA_HOME)/include \
                     -isystem $(CUDNN_FRONTEND_INCLUDE)
  CUDA_CUDNN_FLAGS := -DGRASS_CUDNN
  # nvrtc: the frontend's headers compile one of their engines at run time (undefined nvrtc* otherwise);
  # the toolkit's, else a wheel's (nvidia/cuda_nvrtc/lib or nvidia/cu13/lib)
  NVRTC_LIB := $(or $(call cu_lib_in,$(CUDA_SYS_LIB),nvrtc),$(abspath $(call cu_lib_in,$(CUDA_PY_NVIDIA:%/include=%/lib),nvrtc)))
  CUDA_CUDNN_LIBS := $(CUDNN_OBJ) $(call cu_link,$(CUDNN_LIB),cudnn) $(if $(NVRTC_LIB),$(call cu_link,$(NVRTC_LIB),nvrtc),-lnvrtc)
  CUDA_CUDNN_DEPS := $(CUDNN_OBJ)
  CUDA_CUDNN_NOTE := cuDNN: $(CUDNN_H) and $(CUDNN_LIB), cudnn_frontend in $(CUDNN_FRONTEND_INCLUDE) -> --attention cudnn available ($(CUDNN_OBJ))
else
  CUDA_CUDNN_NOTE := cuDNN: not used ($(if $(CUDNN_H),$(CUDNN_H) and $(CUDNN_LIB) found but no cudnn_frontend headers,cudnn.h with libcudnn not found in the toolkit or site-packages), or USE_CUDNN=0): --attention own only
endif
# the directories of libraries found outside the loader's path (site-packages), for the RUNPATH
CUDA_RPATH_DIRS := $(sort $(foreach l,$(NCCL_LIB) $(if $(filter 1,$(USE_CUDNN)),$(CUDNN_LIB) $(NVRTC_LIB)),$(if $(filter $(CUDA_PY_SITE)/%,$(l)),$(patsubst %/,%,$(dir $(l))))))
CUDA_RPATH := $(if $(CUDA_RPATH_DIRS),-Xlinker --enable-new-dtags -Xlinker -rpath -Xlinker $(subst $(cu_space),:,$(CUDA_RPATH_DIRS)))

# cuDNN only where --attention cudnn is used (train_llama) or compared (attention_check): the
# frontend's headers add minutes of host compilation to each binary that includes them
CUDA_TRAIN_FLAGS = $(NVCC_FLAGS) $(CUDA_MPI_FLAGS) $(CUDA_NCCL_FLAGS)
CUDA_TRAIN_LIBS = $(NVCC_LIBS) $(CUDA_NCCL_LIBS) $(CUDA_MPI_LIBS) $(CUDA_RPATH)
CUDA_REF_FLAGS = $(NVCC_FLAGS) -Xcompiler -fopenmp $(CUDA_CBLAS_FLAGS)
CUDA_REF_LIBS = $(NVCC_LIBS) $(CUDA_CBLAS_LIBS) -lgomp $(CUDA_RPATH)

# backend_cuda.cuh is a list of includes: the CUDA backend itself is cuda/*.cuh
CUDA_BACKEND = backend_cuda.cuh $(wildcard cuda/*.cuh)
# (OPTIM_HEADERS and TRAIN_HEADERS, the Makefile's: grass_optim.cuh and optim/*.h; train_*.h)
CUDA_HEADERS = utils.h checksum.h rng.h bf16.h llama_config.h llama_params.h backend.h $(CUDA_BACKEND) comm.h \
               comm_watchdog.h llama_model.h grad_sink.h $(OPTIM_HEADERS) dataloader.h tokenizer.h
DEV_CUDA_BINS = build/dev_cuda/attention_check build/dev_cuda/classifier_check build/dev_cuda/gathered_gemm_check build/dev_cuda/gemm_align_check

.PHONY: test_kernels_cuda test_kernels_cuda_fp32 dev_cuda clean_cuda cuda_info test_emu_gpu cudnn_obj

ifeq ($(NVCC),)
.PHONY: train_llama train_llama_fp32 test_llama tests/bin/test_kernels_cuda tests/bin/test_kernels_cuda_fp32 $(DEV_CUDA_BINS) tests/bin/test_emu_gpu \
        gpu_prebuilt cudnn_obj
train_llama train_llama_fp32 test_llama test_kernels_cuda tests/bin/test_kernels_cuda test_kernels_cuda_fp32 \
tests/bin/test_kernels_cuda_fp32 dev_cuda $(DEV_CUDA_BINS) test_emu_gpu tests/bin/test_emu_gpu gpu_prebuilt cudnn_obj:
	@echo "error: nvcc (the CUDA compiler) was not found on PATH or in $(CUDA_HOME)/bin."
	@echo "  install the CUDA toolkit, or set NVCC=/path/to/nvcc or CUDA_HOME=/path/to/cuda;"
	@echo "  without a GPU toolchain, build the CPU version: make train_llama_cpu (and make test)"
	@exit 1
else
ifneq ($(CUDA_GOALS_ASKED),)
  $(info CUDA: $(NVCC), GPU_ARCH=$(GPU_ARCH))
  $(info $(CUDA_MPI_NOTE))
  $(info $(CUDA_NCCL_NOTE))
  $(info $(CUDA_CUDNN_NOTE))
endif

# cuDNN's attention, compiled once (the frontend's headers; host code only, so one object for
# every GPU_ARCH). No -x cu where it is linked: nvcc's -x applies to every input file.
cudnn_obj: $(CUDNN_OBJ)
$(CUDNN_OBJ): cuda/attention_cudnn.cpp cuda/attention_cudnn.h
	@mkdir -p $(dir $@)
	$(NVCC) -x c++ $(CUDNN_OBJ_FLAGS) -c $< -o $@

train_llama: train_llama.cu $(CUDA_HEADERS) $(TRAIN_HEADERS) $(CUDA_CUDNN_DEPS)
	$(NVCC) $(CUDA_TRAIN_FLAGS) $(CUDA_CUDNN_FLAGS) train_llama.cu -o $@ $(CUDA_TRAIN_LIBS) $(CUDA_CUDNN_LIBS)

train_llama_fp32: train_llama.cu $(CUDA_HEADERS) $(TRAIN_HEADERS)
	$(NVCC) -x cu $(CUDA_TRAIN_FLAGS) -DENABLE_FP32 train_llama.cu -o $@ $(CUDA_TRAIN_LIBS)

test_llama: test_llama.cu tests/fixture.h tests/test_util.h $(CUDA_HEADERS)
	$(NVCC) -x cu $(CUDA_TRAIN_FLAGS) test_llama.cu -o $@ $(CUDA_TRAIN_LIBS)

test_kernels_cuda: tests/bin/test_kernels_cuda

tests/bin/test_kernels_cuda: tests/test_kernels_cuda.cu kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h $(OPTIM_HEADERS) \
                             llama_params.h utils.h rng.h bf16.h tests/test_util.h tests/gpu_test_util.h | tests/bin
	$(info $(CUDA_CBLAS_NOTE))
	$(NVCC) -x cu $(CUDA_REF_FLAGS) tests/test_kernels_cuda.cu -o $@ $(CUDA_REF_LIBS)

build/dev_cuda:
	mkdir -p build/dev_cuda

test_kernels_cuda_fp32: tests/bin/test_kernels_cuda_fp32

tests/bin/test_kernels_cuda_fp32: tests/test_kernels_cuda.cu kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h \
                                  $(OPTIM_HEADERS) llama_params.h utils.h rng.h bf16.h tests/test_util.h tests/gpu_test_util.h | tests/bin
	$(NVCC) -x cu $(CUDA_REF_FLAGS) -DENABLE_FP32 tests/test_kernels_cuda.cu -o $@ $(CUDA_REF_LIBS)

dev_cuda: $(DEV_CUDA_BINS)

# the CUDA emulator's checks (tests/cuda_emu/test_emu.cu) on a real GPU: the same kernels and
# expectations, so the emulator's idea of CUDA is checked against the hardware's
test_emu_gpu: tests/bin/test_emu_gpu
tests/bin/test_emu_gpu: tests/cuda_emu/test_emu.cu tests/test_util.h | tests/bin
	$(NVCC) -x cu $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)

build/dev_cuda/attention_check: dev/cuda/attention_check.cu dev/cuda/check_common.h tests/gpu_test_util.h kernels_cpu.h backend.h \
                                $(CUDA_BACKEND) comm.h utils.h rng.h bf16.h $(CUDA_CUDNN_DEPS) | build/dev_cuda
	$(NVCC) $(CUDA_REF_FLAGS) $(CUDA_CUDNN_FLAGS) $< -o $@ $(CUDA_REF_LIBS) $(CUDA_CUDNN_LIBS)

build/dev_cuda/%: dev/cuda/%.cu dev/cuda/check_common.h tests/gpu_test_util.h kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h utils.h \
                  rng.h bf16.h | build/dev_cuda
	$(NVCC) -x cu $(CUDA_REF_FLAGS) $< -o $@ $(CUDA_REF_LIBS)
endif

# ---- make gpu_prebuilt: binaries for the GPU machine, built here -------------------------------------
# What scripts/gpu_check.sh's priority tier runs, built for sm_90 only (H100/H200), so that the
# short GPU session spends its minutes running, not compiling. Built as NO_MPI (the GPU machine
# has no Open MPI), with NCCL and cuDNN where found here. The CPU references of the checks use
# the built-in CBLAS (tests/cblas_fallback) and GaLore's LAPACK-free path (GRASS_NO_LAPACK):
# the GPU machine has no OpenBLAS. libgomp is linked statically (libgomp.a), so the binaries need
# no OpenMP runtime there. The cubins are compressed in the fatbin (-Xfatbin -compress-all; the
# CUDA runtime inflates them at load): test_emu_gpu's fatbin 1.28 MB -> 0.19 MB. Each binary's RUNPATH lists the toolkit and the site-packages
# nvidia/<pkg>/lib directories of the GPU machine's Python (GPU_PREBUILT_SITE) and of this one, so
# cuBLAS, cuSOLVER, NCCL and cuDNN load from whichever holds them. Host symbols are stripped
# (-s) to keep the set small (what travels to the GPU machine is limited to 64 MiB); -lineinfo
# keeps the device line table for compute-sanitizer. tests/test_gpu_prebuilt.sh checks the
# result against tests/gpu_machine_libs.txt; MANIFEST.txt records it.
GPU_PREBUILT_DIR := build/gpu_prebuilt
GPU_PREBUILT_SITE ?= /opt/torch/.venv/lib/python3.12/site-packages
GPU_PREBUILT_PKGS := cudnn nccl cublas cusolver cusparse cuda_nvrtc cuda_runtime nvjitlink cu13
GPU_PREBUILT_RUNPATH := $(subst $(cu_space),:,$(strip /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(if $(filter-out /usr/local/cuda,$(CUDA_HOME)),$(CUDA_HOME)/lib64) \
    $(foreach p,$(GPU_PREBUILT_PKGS),$(GPU_PREBUILT_SITE)/nvidia/$(p)/lib) \
    $(if $(filter-out $(GPU_PREBUILT_SITE),$(CUDA_PY_SITE)),$(wildcard $(foreach p,$(GPU_PREBUILT_PKGS),$(CUDA_PY_SITE)/nvidia/$(p)/lib))) \
    $(CUDA_RPATH_DIRS)))
PB_FLAGS = $(NVCC_FLAGS_NOARCH) -gencode arch=compute_90,code=sm_90 -Xfatbin -compress-all
PB_TRAIN_FLAGS = $(PB_FLAGS) $(CUDA_NCCL_FLAGS)
PB_REF_FLAGS = $(PB_FLAGS) -Xcompiler -fopenmp -Itests/cblas_fallback -DGRASS_NO_LAPACK
PB_LINK = -Xlinker --enable-new-dtags -Xlinker -rpath -Xlinker $(GPU_PREBUILT_RUNPATH) -Xlinker -s
PB_GOMP = $(shell $(CXX) -print-file-name=libgomp.a)
PB_LIBS = $(filter-out -lgomp,$(NVCC_LIBS)) $(PB_GOMP) $(PB_LINK)
PB_REF_LIBS = $(filter-out -lgomp,$(NVCC_LIBS)) $(PB_GOMP) $(PB_LINK)
PB_BINS := $(addprefix $(GPU_PREBUILT_DIR)/,train_llama test_kernels_cuda test_llama attention_check gathered_gemm_check \
           gemm_align_check classifier_check test_emu_gpu)
PB_CHECK_DEPS = dev/cuda/check_common.h tests/gpu_test_util.h kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h utils.h rng.h bf16.h

ifneq ($(NVCC),)
.PHONY: gpu_prebuilt
# make test-all builds them where nvcc is (tests/run_all.sh all runs tests/test_gpu_prebuilt.sh)
test-all: gpu_prebuilt
gpu_prebuilt: $(PB_BINS)
	@{ echo "grass.c gpu_prebuilt: what scripts/gpu_check.sh runs on the GPU machine (make gpu_prebuilt)"; \
	   echo "commit: $$(git rev-parse HEAD 2>/dev/null)$$(test -z "$$(git status --porcelain --untracked-files=no 2>/dev/null)" || echo ' (with uncommitted changes)')"; \
	   echo "date: $$(date -u '+%Y-%m-%d %H:%M:%S UTC')"; \
	   echo "nvcc: $$($(NVCC) --version | grep -i release)"; \
	   echo "host: $$(uname -srm), $$($(CXX) --version | head -1), $$(ldd --version 2>&1 | head -1)"; \
	   echo "arch: sm_90 (compressed fatbins); MPI: none (NO_MPI); CPU references: tests/cblas_fallback, GRASS_NO_LAPACK; libgomp static; host symbols stripped"; \
	   echo "$(CUDA_NCCL_NOTE)"; echo "$(CUDA_CUDNN_NOTE)"; \
	   echo "RUNPATH: $(GPU_PREBUILT_RUNPATH)"; \
	   echo "sources $$(bash scripts/gpu_check.sh --sources-hash)"; \
	   total=0; for b in $(PB_BINS); do \
	     sz=$$(stat -c %s $$b); total=$$((total + sz)); \
	     printf '%-24s %10s bytes  NEEDED: %s\n' "$$(basename $$b)" "$$sz" \
	       "$$(readelf -d $$b | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"; \
	   done; echo "total: $$total bytes"; } > $(GPU_PREBUILT_DIR)/MANIFEST.txt
	@cat $(GPU_PREBUILT_DIR)/MANIFEST.txt

$(GPU_PREBUILT_DIR):
	mkdir -p $@

$(GPU_PREBUILT_DIR)/train_llama: train_llama.cu $(CUDA_HEADERS) $(TRAIN_HEADERS) $(CUDA_CUDNN_DEPS) | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_TRAIN_FLAGS) $(CUDA_CUDNN_FLAGS) train_llama.cu -o $@ $(PB_LIBS) $(CUDA_NCCL_LIBS) $(CUDA_CUDNN_LIBS)
$(GPU_PREBUILT_DIR)/test_llama: test_llama.cu tests/fixture.h tests/test_util.h $(CUDA_HEADERS) | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_TRAIN_FLAGS) test_llama.cu -o $@ $(PB_LIBS) $(CUDA_NCCL_LIBS)
$(GPU_PREBUILT_DIR)/test_kernels_cuda: tests/test_kernels_cuda.cu kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h $(OPTIM_HEADERS) \
                                       llama_params.h utils.h rng.h bf16.h tests/test_util.h tests/gpu_test_util.h | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_REF_FLAGS) tests/test_kernels_cuda.cu -o $@ $(PB_REF_LIBS)
$(GPU_PREBUILT_DIR)/test_emu_gpu: tests/cuda_emu/test_emu.cu tests/test_util.h | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_FLAGS) $< -o $@ $(PB_LIBS)
$(GPU_PREBUILT_DIR)/attention_check: dev/cuda/attention_check.cu $(PB_CHECK_DEPS) $(CUDA_CUDNN_DEPS) | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_REF_FLAGS) $(CUDA_CUDNN_FLAGS) $< -o $@ $(PB_REF_LIBS) $(CUDA_CUDNN_LIBS)
$(GPU_PREBUILT_DIR)/%_check: dev/cuda/%_check.cu $(PB_CHECK_DEPS) | $(GPU_PREBUILT_DIR)
	$(NVCC) $(PB_REF_FLAGS) $< -o $@ $(PB_REF_LIBS)
endif

cuda_info:
	@echo "NVCC=$(NVCC) GPU_ARCH=$(GPU_ARCH)"
	@echo "python: $(CUDA_PYTHON) -> site-packages $(or $(CUDA_PY_SITE),(none))$(if $(CUDA_PY_NVIDIA), with $(notdir $(patsubst %/include,%,$(CUDA_PY_NVIDIA))))"
	@echo "$(CUDA_MPI_NOTE)"
	@echo "$(CUDA_NCCL_NOTE)"
	@echo "$(CUDA_CUDNN_NOTE)"
	@echo "$(CUDA_CBLAS_NOTE)"
	@echo "train flags: $(CUDA_TRAIN_FLAGS) $(CUDA_CUDNN_FLAGS) ... $(CUDA_TRAIN_LIBS) $(CUDA_CUDNN_LIBS)"

clean_cuda:
	rm -f train_llama train_llama_fp32 test_llama tests/bin/test_kernels_cuda tests/bin/test_kernels_cuda_fp32 $(DEV_CUDA_BINS) $(CUDNN_OBJ)
	rm -rf build/gpu_prebuilt
