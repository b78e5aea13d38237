# cuda.mk: the GPU build (included by the Makefile with -include cuda.mk).
#   make train_llama          bf16 trainer (cuBLAS/cuBLASLt; MPI and NCCL when found)
#   make train_llama_fp32     the same with fp32 storage (-DENABLE_FP32)
#   make test_llama           test_llama.cu against the transformers fixtures, on the GPU
#   make test_kernels_cuda    every CUDA kernel against the CPU kernels (tests/bin/test_kernels_cuda)
#   make dev_cuda             kernel experiments in dev/cuda (binaries in build/dev_cuda/)
#   make test_kernels_cuda_fp32  the parity test of the fp32 build (tests/bin/test_kernels_cuda_fp32)
#   make test_emu_gpu         the CUDA emulator's own checks, on the GPU (tests/bin/test_emu_gpu)
# Options: GPU_ARCH="sm_80 sm_90" (default; one arch compiles faster: GPU_ARCH=sm_90),
#          NVCC=/path/to/nvcc, NO_MPI=1, NO_NCCL=1, CUDA_HOME=/usr/local/cuda,
#          USE_CUDNN=0/1 (cuDNN's fused attention, --attention cudnn: on where cudnn.h and the
#          cudnn_frontend headers are found), CUDNN_FRONTEND_INCLUDE=/path/to/cudnn-frontend/include.

CUDA_HOME ?= /usr/local/cuda
comma := ,
NVCC ?= $(shell command -v nvcc 2>/dev/null || (test -x $(CUDA_HOME)/bin/nvcc && echo $(CUDA_HOME)/bin/nvcc))
GPU_ARCH ?= sm_80 sm_90

CUDA_GOALS := train_llama train_llama_fp32 test_llama test_kernels_cuda tests/bin/test_kernels_cuda dev_cuda \
              test_emu_gpu tests/bin/test_emu_gpu \
              test_kernels_cuda_fp32 tests/bin/test_kernels_cuda_fp32 \
              build/dev_cuda/attention_check build/dev_cuda/classifier_check build/dev_cuda/gathered_gemm_check build/dev_cuda/gemm_align_check
CUDA_GOALS_ASKED := $(filter $(CUDA_GOALS),$(MAKECMDGOALS))

# -gencode for each listed architecture: sm_90 -> -gencode arch=compute_90,code=sm_90
GENCODE := $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(subst sm_,,$(a)),code=$(a))

# Not --use_fast_math: the softmax, RMSNorm and Adam kernels keep IEEE expf/sqrtf/division,
# and denormals are not flushed, so the GPU matches the fp32 CPU reference closely.
# -fopenmp: the host loops (OpenMP pragmas in the shared headers) run on every core here too; no
# -Wno-unknown-pragmas, so that a pragma the host compiler ignores is reported.
NVCC_FLAGS = -O3 -std=c++17 -lineinfo $(GENCODE) -I. -Xcompiler -Wall,-Wno-unused-function,-fopenmp
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
# NCCL: nccl.h under CUDA_HOME or /usr/include, unless NO_NCCL=1; multi-GPU also needs MPI
ifneq ($(NO_NCCL),1)
  NCCL_H := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h))
endif
ifneq ($(NCCL_H),)
  NCCL_LIBDIR := $(dir $(firstword $(wildcard $(CUDA_HOME)/lib64/libnccl.so* /usr/lib/x86_64-linux-gnu/libnccl.so* \
                 /usr/lib/aarch64-linux-gnu/libnccl.so* /usr/local/lib/libnccl.so*)))
  CUDA_NCCL_FLAGS := -DUSE_NCCL -I$(dir $(NCCL_H))
  CUDA_NCCL_LIBS := $(if $(NCCL_LIBDIR),-L$(NCCL_LIBDIR)) -lnccl
  CUDA_NCCL_NOTE := NCCL: $(NCCL_H) -> -DUSE_NCCL $(CUDA_NCCL_LIBS)$(if $(CUDA_MPICXX),, (no MPI: NCCL is unused, single GPU))
else
  CUDA_NCCL_NOTE := NCCL: nccl.h not found (or NO_NCCL=1): several ranks would all-reduce through MPI on the host
endif

# CBLAS for the CPU reference in the parity test and dev checks: the system's, or a tiny
# built-in fallback (dev/cuda/cblas_fallback) where no cblas.h is installed.
CBLAS_H := $(firstword $(wildcard /usr/include/cblas.h /usr/include/x86_64-linux-gnu/cblas.h \
           /usr/include/aarch64-linux-gnu/cblas.h /usr/include/openblas/cblas.h))
ifneq ($(CBLAS_H),)
  CUDA_CBLAS_FLAGS := $(if $(findstring openblas,$(CBLAS_H)),-I$(dir $(CBLAS_H)))
  CUDA_CBLAS_LIBS := -lopenblas
  CUDA_CBLAS_NOTE := CBLAS: $(CBLAS_H) -lopenblas
else
  CUDA_CBLAS_FLAGS := -Idev/cuda/cblas_fallback -DGRASS_NO_LAPACK
  CUDA_CBLAS_LIBS :=
  CUDA_CBLAS_NOTE := CBLAS: no cblas.h: the CPU references use dev/cuda/cblas_fallback (slow, naive sgemm)
endif

# cuDNN's fused attention (cuda/attention_cudnn.cuh): cudnn.h from the toolkit (or CUDA_HOME) and the
# header-only cudnn_frontend, found in CUDNN_FRONTEND_INCLUDE or where `pip install
# nvidia-cudnn-frontend` puts it (site-packages/include)
CUDNN_H := $(firstword $(wildcard $(CUDA_HOME)/include/cudnn.h /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h))
CUDNN_FRONTEND_INCLUDE ?= $(shell python3 -c "import os, sysconfig; p = os.path.join(sysconfig.get_paths()['purelib'], 'include'); print(p if os.path.isfile(os.path.join(p, 'cudnn_frontend.h')) else '')" 2>/dev/null)
ifeq ($(USE_CUDNN),)
  USE_CUDNN := $(if $(and $(CUDNN_H),$(CUDNN_FRONTEND_INCLUDE)),1,0)
endif
ifeq ($(USE_CUDNN),1)
  ifeq ($(wildcard $(CUDNN_FRONTEND_INCLUDE)/cudnn_frontend.h),)
    $(error USE_CUDNN=1 but cudnn_frontend.h is not in CUDNN_FRONTEND_INCLUDE='$(CUDNN_FRONTEND_INCLUDE)': pip install nvidia-cudnn-frontend, or set CUDNN_FRONTEND_INCLUDE)
  endif
  CUDA_CUDNN_FLAGS := -DGRASS_CUDNN -isystem $(CUDNN_FRONTEND_INCLUDE) $(if $(CUDNN_H),-I$(dir $(CUDNN_H)))
  CUDA_CUDNN_LIBS := -lcudnn -lnvrtc  # nvrtc: the frontend header compiles one of its engines at run time
  CUDA_CUDNN_NOTE := cuDNN: $(CUDNN_H) and cudnn_frontend in $(CUDNN_FRONTEND_INCLUDE) -> --attention cudnn available
else
  CUDA_CUDNN_NOTE := cuDNN: not used (cudnn.h or the cudnn_frontend headers not found, or USE_CUDNN=0): --attention own only
endif

# cuDNN only where --attention cudnn is used (train_llama) or compared (attention_check): the
# frontend's headers add minutes of host compilation to each binary that includes them
CUDA_TRAIN_FLAGS = $(NVCC_FLAGS) $(CUDA_MPI_FLAGS) $(CUDA_NCCL_FLAGS)
CUDA_TRAIN_LIBS = $(NVCC_LIBS) $(CUDA_NCCL_LIBS) $(CUDA_MPI_LIBS)
CUDA_REF_FLAGS = $(NVCC_FLAGS) -Xcompiler -fopenmp $(CUDA_CBLAS_FLAGS)
CUDA_REF_LIBS = $(NVCC_LIBS) $(CUDA_CBLAS_LIBS) -lgomp

# backend_cuda.cuh is a list of includes: the CUDA backend itself is cuda/*.cuh
CUDA_BACKEND = backend_cuda.cuh $(wildcard cuda/*.cuh)
CUDA_HEADERS = utils.h checksum.h rng.h bf16.h llama_config.h llama_params.h backend.h $(CUDA_BACKEND) comm.h llama_model.h grad_sink.h \
               grass_optim.cuh dataloader.h tokenizer.h
DEV_CUDA_BINS = build/dev_cuda/attention_check build/dev_cuda/classifier_check build/dev_cuda/gathered_gemm_check build/dev_cuda/gemm_align_check

.PHONY: test_kernels_cuda test_kernels_cuda_fp32 dev_cuda clean_cuda cuda_info test_emu_gpu

ifeq ($(NVCC),)
.PHONY: train_llama train_llama_fp32 test_llama tests/bin/test_kernels_cuda tests/bin/test_kernels_cuda_fp32 $(DEV_CUDA_BINS) tests/bin/test_emu_gpu
train_llama train_llama_fp32 test_llama test_kernels_cuda tests/bin/test_kernels_cuda test_kernels_cuda_fp32 \
tests/bin/test_kernels_cuda_fp32 dev_cuda $(DEV_CUDA_BINS) test_emu_gpu tests/bin/test_emu_gpu:
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

train_llama: train_llama.cu $(CUDA_HEADERS)
	$(NVCC) -x cu $(CUDA_TRAIN_FLAGS) $(CUDA_CUDNN_FLAGS) train_llama.cu -o $@ $(CUDA_TRAIN_LIBS) $(CUDA_CUDNN_LIBS)

train_llama_fp32: train_llama.cu $(CUDA_HEADERS)
	$(NVCC) -x cu $(CUDA_TRAIN_FLAGS) -DENABLE_FP32 train_llama.cu -o $@ $(CUDA_TRAIN_LIBS)

test_llama: test_llama.cu tests/fixture.h tests/test_util.h $(CUDA_HEADERS)
	$(NVCC) -x cu $(CUDA_TRAIN_FLAGS) test_llama.cu -o $@ $(CUDA_TRAIN_LIBS)

test_kernels_cuda: tests/bin/test_kernels_cuda

tests/bin/test_kernels_cuda: tests/test_kernels_cuda.cu kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h grass_optim.cuh llama_params.h utils.h \
                             rng.h bf16.h tests/test_util.h tests/gpu_test_util.h | tests/bin
	$(info $(CUDA_CBLAS_NOTE))
	$(NVCC) -x cu $(CUDA_REF_FLAGS) tests/test_kernels_cuda.cu -o $@ $(CUDA_REF_LIBS)

build/dev_cuda:
	mkdir -p build/dev_cuda

test_kernels_cuda_fp32: tests/bin/test_kernels_cuda_fp32

tests/bin/test_kernels_cuda_fp32: tests/test_kernels_cuda.cu kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h grass_optim.cuh llama_params.h \
                                  utils.h rng.h bf16.h tests/test_util.h tests/gpu_test_util.h | tests/bin
	$(NVCC) -x cu $(CUDA_REF_FLAGS) -DENABLE_FP32 tests/test_kernels_cuda.cu -o $@ $(CUDA_REF_LIBS)

dev_cuda: $(DEV_CUDA_BINS)

# the CUDA emulator's checks (tests/cuda_emu/test_emu.cu) on a real GPU: the same kernels and
# expectations, so the emulator's idea of CUDA is checked against the hardware's
test_emu_gpu: tests/bin/test_emu_gpu
tests/bin/test_emu_gpu: tests/cuda_emu/test_emu.cu tests/test_util.h | tests/bin
	$(NVCC) -x cu $(NVCC_FLAGS) $< -o $@ $(NVCC_LIBS)

build/dev_cuda/attention_check: dev/cuda/attention_check.cu dev/cuda/check_common.h tests/gpu_test_util.h kernels_cpu.h backend.h \
                                $(CUDA_BACKEND) comm.h utils.h rng.h bf16.h | build/dev_cuda
	$(NVCC) -x cu $(CUDA_REF_FLAGS) $(CUDA_CUDNN_FLAGS) $< -o $@ $(CUDA_REF_LIBS) $(CUDA_CUDNN_LIBS)

build/dev_cuda/%: dev/cuda/%.cu dev/cuda/check_common.h tests/gpu_test_util.h kernels_cpu.h backend.h $(CUDA_BACKEND) comm.h utils.h \
                  rng.h bf16.h | build/dev_cuda
	$(NVCC) -x cu $(CUDA_REF_FLAGS) $< -o $@ $(CUDA_REF_LIBS)
endif

cuda_info:
	@echo "NVCC=$(NVCC) GPU_ARCH=$(GPU_ARCH)"
	@echo "$(CUDA_MPI_NOTE)"
	@echo "$(CUDA_NCCL_NOTE)"
	@echo "$(CUDA_CBLAS_NOTE)"
	@echo "train flags: $(CUDA_TRAIN_FLAGS) ... $(CUDA_TRAIN_LIBS)"

clean_cuda:
	rm -f train_llama train_llama_fp32 test_llama tests/bin/test_kernels_cuda tests/bin/test_kernels_cuda_fp32 $(DEV_CUDA_BINS)
