# tests/cuda_emu/emu.mk: the CUDA build, compiled by the host C++ compiler against the CUDA
# emulator and run on the CPU (included by the Makefile). See tests/cuda_emu/README.md.
#   make test_cuda_emu      builds everything below and runs its tests (tests/run_all.sh cuda_emu)
#   make test-all           runs them too, after the CPU tests, when the CUDA headers are installed
#   make test               runs a representative subset of them (EMU_FAST_BINS)
# -fno-strict-aliasing: device code reads packs of bf16 through int4 pointers, an idiom nvcc
# compiles as meant and g++ -O2 need not.
# -Wno-unknown-pragmas: the kernels' #pragma unroll is nvcc's; g++ compiles the kernels' bodies
# here and would report each one (nvcc's host pass never sees them, so cuda.mk reports pragmas).
# The sources are first copied by tests/cuda_emu/rewrite.py into build/emu/src (kernel launches
# and extern __shared__ turned into emulator calls); the binaries land in build/emu/.

EMU_CUDA_HOME ?= /usr/local/cuda
EMU_DIR = build/emu
EMU_SRC = $(EMU_DIR)/src
EMU_LIB = tests/cuda_emu/cuda_emu.h tests/cuda_emu/emu_fiber.h tests/cuda_emu/include/mma.h tests/cuda_emu/include/cub/cub.cuh
EMU_SOURCES = $(wildcard *.h *.cuh *.cu cuda/*.cuh optim/*.h tests/*.h tests/*.cu tests/cuda_emu/*.cu dev/cuda/*.h dev/cuda/*.cu)
EMU_CXX ?= $(CXX)
EMU_MPICXX := $(if $(filter 1,$(NO_MPI)),,$(shell command -v mpicxx 2>/dev/null))
EMU_FLAGS = -std=c++17 -O2 -g -fno-strict-aliasing -fopenmp -Wall -Wno-unused-function -Wno-unknown-pragmas -Wno-unused-variable \
            -include tests/cuda_emu/cuda_emu.h -Itests/cuda_emu/include -Itests/cuda_emu -I$(EMU_CUDA_HOME)/include \
            $(filter-out -I.,$(filter -I%,$(CPU_FLAGS))) -I$(EMU_SRC) -x c++
EMU_LIBS = $(CPU_LIBS)

# UBSan builds: -fsanitize=alignment reports a vector load (int4, float4) from an address that is
# not a multiple of 16 bytes, which faults on a GPU and passes silently on x86
EMU_UBSAN = -fsanitize=alignment,undefined -fno-sanitize-recover=all
EMU_BINS = $(EMU_DIR)/test_emu $(EMU_DIR)/test_kernels_cuda $(EMU_DIR)/test_kernels_cuda_fp32 $(EMU_DIR)/test_llama \
           $(EMU_DIR)/test_kernels_cuda_nolapack \
           $(EMU_DIR)/test_kernels_cuda_ubsan $(EMU_DIR)/test_llama_ubsan \
           $(EMU_DIR)/test_llama_fp32 $(EMU_DIR)/train_llama $(EMU_DIR)/train_llama_fp32 $(EMU_DIR)/attention_check $(EMU_DIR)/classifier_check \
           $(EMU_DIR)/gathered_gemm_check $(EMU_DIR)/gemm_align_check
ifneq ($(EMU_MPICXX),)
EMU_BINS += $(EMU_DIR)/train_llama_mpi
endif

# the fast tier's subset: the emulator's own checks, every CUDA kernel against the CPU kernels,
# and the GPU model against the transformers fixtures
EMU_FAST_BINS = $(EMU_DIR)/test_emu $(EMU_DIR)/test_kernels_cuda $(EMU_DIR)/test_llama

.PHONY: test_cuda_emu cuda_emu
cuda_emu: $(EMU_BINS)
test_cuda_emu: $(EMU_BINS) train_llama_cpu
	bash tests/run_all.sh cuda_emu

# make test / test-all build the emulated binaries where the CUDA headers are (their types are needed)
ifneq ($(wildcard $(EMU_CUDA_HOME)/include/cuda_runtime.h),)
EMU_TEST_DEPS = $(EMU_BINS)
EMU_FAST_DEPS = $(EMU_FAST_BINS)
endif
test: $(EMU_FAST_DEPS)
test-all: $(EMU_TEST_DEPS)

$(EMU_SRC)/.stamp: $(EMU_SOURCES) tests/cuda_emu/rewrite.py
	@test -f $(EMU_CUDA_HOME)/include/cuda_runtime.h || { echo "error: the CUDA headers are not in $(EMU_CUDA_HOME)/include (set EMU_CUDA_HOME); the emulator uses their types"; exit 1; }
	python3 tests/cuda_emu/rewrite.py $(EMU_SRC) $(EMU_SOURCES)
	@touch $@

$(EMU_DIR)/test_emu: $(EMU_SRC)/.stamp $(EMU_LIB)
	@mkdir -p $(EMU_DIR)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_SRC)/tests/cuda_emu/test_emu.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/test_kernels_cuda: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_SRC)/tests/test_kernels_cuda.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/test_kernels_cuda_fp32: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $(EMU_SRC)/tests/test_kernels_cuda.cu -o $@ $(EMU_LIBS)
# built as cuda.mk builds it on a machine without cblas.h (the GPU machine's image): the CPU references
# through tests/cblas_fallback and GaLore's own float64 SVD (GRASS_NO_LAPACK), no OpenBLAS;
# LAPACK (-llapack) is linked for the emulator's cuSOLVER alone, which stands for the GPU's own
EMU_NOLAPACK_LIBS = $(filter-out -lopenblas,$(CPU_LIBS)) -llapack
$(EMU_DIR)/test_kernels_cuda_nolapack: $(EMU_SRC)/.stamp $(EMU_LIB) tests/cblas_fallback/cblas.h
	$(EMU_CXX) -Itests/cblas_fallback -DGRASS_NO_LAPACK $(EMU_FLAGS) $(EMU_SRC)/tests/test_kernels_cuda.cu -o $@ $(EMU_NOLAPACK_LIBS)
$(EMU_DIR)/test_kernels_cuda_ubsan: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_UBSAN) $(EMU_SRC)/tests/test_kernels_cuda.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/test_llama_ubsan: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_UBSAN) $(EMU_SRC)/test_llama.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/test_llama: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_SRC)/test_llama.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/test_llama_fp32: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $(EMU_SRC)/test_llama.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/train_llama: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_SRC)/train_llama.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/train_llama_fp32: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) -DENABLE_FP32 $(EMU_SRC)/train_llama.cu -o $@ $(EMU_LIBS)
# MPI ranks with the NCCL calls emulated over MPI (one emulated GPU per rank)
$(EMU_DIR)/train_llama_mpi: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_MPICXX) $(EMU_FLAGS) -DUSE_MPI -DUSE_NCCL $(EMU_SRC)/train_llama.cu -o $@ $(EMU_LIBS)
$(EMU_DIR)/%_check: $(EMU_SRC)/.stamp $(EMU_LIB)
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_SRC)/dev/cuda/$*_check.cu -o $@ $(EMU_LIBS)

# for tests/cuda_emu/mutation_check.sh: how the emulated binaries are compiled
.PHONY: emu_print_build
emu_print_build:
	@echo "$(EMU_CXX) $(EMU_FLAGS)"
	@echo "$(EMU_LIBS)"
