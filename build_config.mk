# build_config.mk: builds that remember their configuration (included last by the Makefile).
#
# What the Makefile, cuda.mk and tests/cuda_emu/emu.mk detect (MPI or not, which OpenBLAS, the
# compiler and its version, the processor behind -march=native, the GPU architectures, NCCL,
# cuDNN, every flag) is written to a stamp file per build, and every binary of that build depends
# on its stamp:
#   build/config/cpu.txt    train_llama_cpu, train_llama_cpu_nompi, tests/bin/test_* (g++ / mpicxx)
#   build/config/cuda.txt   train_llama, test_llama, tests/bin/test_kernels_cuda, dev/cuda checks, the cuDNN
#                           object and build/gpu_prebuilt/* (nvcc)
#   build/config/emu.txt    build/emu/* (the CUDA build through the emulator)
# A stamp is rewritten only when its text changed, so an unchanged configuration rebuilds nothing,
# and a changed one (say `NO_MPI=1 make train_llama_cpu`, then OpenMPI installed and `make
# train_llama_cpu`) rebuilds exactly the binaries it concerns. `make build_config` prints them.
# The texts are made only when a stamp is needed (recursive variables), so a make that builds
# nothing of a build runs none of its probes.

CONFIG_DIR = build/config
CPU_CONFIG_STAMP = $(CONFIG_DIR)/cpu.txt
CUDA_CONFIG_STAMP = $(CONFIG_DIR)/cuda.txt
EMU_CONFIG_STAMP = $(CONFIG_DIR)/emu.txt

# the processor -march=native means on this machine, and the OpenBLAS the linker would take
# (Debian's alternatives can switch libopenblas.so between the pthread and OpenMP builds)
config_native = $(strip $(shell $(CXX) -march=native -Q --help=target 2>/dev/null | grep -E '^ +-m(arch|tune)=' | tr -s ' \t' ' '))
config_openblas = $(realpath $(shell $(CXX) -print-file-name=libopenblas.so 2>/dev/null))
config_version = $(shell $(1) --version 2>&1 | grep -m1 .)

define CPU_CONFIG
compiler: $(CPU_CXX) ($(call config_version,$(CXX)))
mpi: $(if $(MPICXX),$(shell $(MPICXX) --showme:version 2>&1): $(shell $(MPICXX) --showme 2>&1),none$(if $(filter 1,$(NO_MPI)), (NO_MPI=1)))
openblas: $(config_openblas) $(OPENBLAS_OMP_DIR)
native: $(config_native)
flags: $(CPU_FLAGS)
libs: $(CPU_LIBS)
endef

define CUDA_CONFIG
nvcc: $(NVCC) ($(shell $(NVCC) --version 2>&1 | tail -n 1))
host compiler: $(call config_version,$(CXX))
gpu arch: $(GPU_ARCH)
$(CUDA_MPI_NOTE)
$(CUDA_NCCL_NOTE)
$(CUDA_CUDNN_NOTE)
$(CUDA_CBLAS_NOTE)
train: $(CUDA_TRAIN_FLAGS) $(CUDA_CUDNN_FLAGS) | $(CUDA_TRAIN_LIBS) $(CUDA_CUDNN_LIBS)
reference: $(CUDA_REF_FLAGS) | $(CUDA_REF_LIBS)
cudnn object: $(CUDNN_OBJ_FLAGS)
gpu_prebuilt: $(PB_TRAIN_FLAGS) | $(PB_REF_FLAGS) | $(PB_REF_LIBS)
endef

define EMU_CONFIG
compiler: $(EMU_CXX) ($(call config_version,$(EMU_CXX)))
mpi: $(if $(EMU_MPICXX),$(EMU_MPICXX): $(shell $(EMU_MPICXX) --showme 2>&1),none)
cuda headers: $(EMU_CUDA_HOME) ($(shell grep -m1 -o 'CUDA_VERSION [0-9]*' $(EMU_CUDA_HOME)/include/cuda.h 2>/dev/null))
openblas: $(config_openblas)
native: $(config_native)
flags: $(EMU_FLAGS) | ubsan: $(EMU_UBSAN)
libs: $(EMU_LIBS)
endef

# write_stamp FILE,TEXT: FILE holds TEXT afterwards, and its time changes only when TEXT differs
# ($(file) runs when make expands the recipe, before its first line: hence the mkdir in $(shell))
define write_stamp
$(shell mkdir -p $(CONFIG_DIR))$(file >$(1).new,$(2))
@if cmp -s $(1).new $(1); then rm -f $(1).new; \
 else [ -f $(1) ] && echo "build configuration changed ($(1)):" && diff $(1) $(1).new | grep '^[<>]' | cut -c1-200; \
      mv -f $(1).new $(1); fi
endef

# checked on every make that needs them; a binary is rebuilt when its stamp is newer
.PHONY: FORCE build_config
$(CPU_CONFIG_STAMP): FORCE
	$(call write_stamp,$@,$(CPU_CONFIG))
$(CUDA_CONFIG_STAMP): FORCE
	$(call write_stamp,$@,$(CUDA_CONFIG))
$(EMU_CONFIG_STAMP): FORCE
	$(call write_stamp,$@,$(EMU_CONFIG))

build_config: $(CPU_CONFIG_STAMP) $(EMU_CONFIG_STAMP) $(if $(NVCC),$(CUDA_CONFIG_STAMP))
	@for f in $^; do echo "== $$f"; cat $$f; done

# every binary depends on its build's stamp (extra prerequisites: each rule's recipe names its
# sources itself, so $< stays the source)
train_llama_cpu train_llama_cpu_nompi $(TEST_BINS): $(CPU_CONFIG_STAMP)
$(EMU_BINS): $(EMU_CONFIG_STAMP)
ifneq ($(NVCC),)
train_llama train_llama_fp32 test_llama tests/bin/test_kernels_cuda tests/bin/test_kernels_cuda_fp32 $(DEV_CUDA_BINS) \
tests/bin/test_emu_gpu $(CUDNN_OBJ) $(PB_BINS): $(CUDA_CONFIG_STAMP)
endif
