# grass.c: LLaMA pretraining with Grass. See README.md.
#   make train_llama_cpu   CPU build (fp32, OpenMP, OpenBLAS; MPI when found)
#   make train_llama       GPU build (nvcc; bf16, cuBLAS/cuBLASLt; NCCL + MPI when found)
#   make test              the test suite (what CI runs): CPU tests, then the CUDA build on the CPU
#                          through the emulator in tests/cuda_emu (when the CUDA headers are installed)
#   make test_llama        the GPU parity test

CXX ?= g++
CPU_FLAGS = -O3 -march=native -fopenmp -Wall -Wno-unused-function -I.
CPU_LIBS = -lopenblas -lm

# OpenBLAS: prefer Debian's OpenMP build (libopenblas-openmp-dev). The pthread build spins its
# own threads against ours and costs about a third of a CPU step.
MULTIARCH := $(shell $(CXX) -print-multiarch 2>/dev/null)
OPENBLAS_OMP_DIR := $(wildcard /usr/lib/$(MULTIARCH)/openblas-openmp)
ifneq ($(OPENBLAS_OMP_DIR),)
  CPU_FLAGS += -I/usr/include/$(MULTIARCH)/openblas-openmp
  CPU_LIBS := -L$(OPENBLAS_OMP_DIR) -Wl,-rpath,$(OPENBLAS_OMP_DIR) $(CPU_LIBS)
  $(info OpenBLAS: OpenMP build in $(OPENBLAS_OMP_DIR))
else
  $(info OpenBLAS: using the default libopenblas (apt-get install libopenblas-openmp-dev for the faster OpenMP build))
endif

# MPI: use mpicxx when present (NO_MPI=1 to build single-process)
MPICXX := $(shell command -v mpicxx 2>/dev/null)
ifeq ($(NO_MPI),1)
  MPICXX :=
endif
ifneq ($(MPICXX),)
  CPU_CXX = $(MPICXX)
  CPU_FLAGS += -DUSE_MPI
  $(info MPI: found $(MPICXX); the CPU build runs under mpirun)
else
  CPU_CXX = $(CXX)
  $(info MPI: mpicxx not found (or NO_MPI=1); the CPU build is single-process. apt-get install libopenmpi-dev openmpi-bin for data parallel)
endif

# grass_optim.cuh is a list of includes: the optimizer itself is optim/*.h
OPTIM_HEADERS = grass_optim.cuh $(wildcard optim/*.h)
HEADERS = utils.h checksum.h rng.h bf16.h llama_config.h llama_params.h backend.h backend_cpu.h kernels_cpu.h comm.h \
          comm_watchdog.h llama_model.h grad_sink.h $(OPTIM_HEADERS) dataloader.h tokenizer.h
# the trainer's own rooms (train_args.h, train_checkpoint.h, ...): only train_llama.cu includes them
TRAIN_HEADERS = $(wildcard train_*.h)

train_llama_cpu: train_llama.cu $(HEADERS) $(TRAIN_HEADERS)
	$(CPU_CXX) -x c++ $(CPU_FLAGS) train_llama.cu -o $@ $(CPU_LIBS)

# ---- CPU tests (make test and make test-all) ----
TEST_BINS = tests/bin/test_fixture_reader tests/bin/test_dataloader tests/bin/test_tokenizer tests/bin/test_ops tests/bin/test_grass tests/bin/test_llama_cpu

# the same program without MPI, for the test that a multi-rank launch of it is refused
train_llama_cpu_nompi: train_llama.cu $(HEADERS) $(TRAIN_HEADERS)
	$(CXX) -x c++ $(filter-out -DUSE_MPI,$(CPU_FLAGS)) train_llama.cu -o $@ $(CPU_LIBS)

tests/bin:
	mkdir -p tests/bin

tests/bin/test_fixture_reader: tests/test_fixture_reader.c tests/fixture.h llama_config.h tests/test_util.h | tests/bin
	$(CXX) -x c++ -O2 -Wall -I. $< -o $@ -lm

tests/bin/test_dataloader: tests/test_dataloader.c dataloader.h utils.h rng.h tests/test_util.h | tests/bin
	$(CXX) -x c++ -O2 -Wall -I. $< -o $@

tests/bin/test_tokenizer: tests/test_tokenizer.c tokenizer.h utils.h tests/test_util.h | tests/bin
	$(CXX) -x c++ -O2 -Wall -I. $< -o $@

tests/bin/test_ops: tests/test_ops.c kernels_cpu.h backend.h utils.h bf16.h rng.h tests/test_util.h | tests/bin
	$(CXX) -x c++ -O2 -fopenmp -Wall -I. $< -o $@ $(CPU_LIBS)

tests/bin/test_grass: tests/test_grass.c $(HEADERS) tests/test_util.h | tests/bin
	$(CPU_CXX) -x c++ $(CPU_FLAGS) $< -o $@ $(CPU_LIBS)

# the transformers-fixture test, CPU build (test_llama is the GPU build of the same file)
tests/bin/test_llama_cpu: test_llama.cu tests/fixture.h $(HEADERS) tests/test_util.h | tests/bin
	$(CPU_CXX) -x c++ $(CPU_FLAGS) $< -o $@ $(CPU_LIBS)

# make test: the fast tier (every CPU test, the parity tests and a representative subset of the
# emulated GPU build); make test-all: everything, the whole emulated GPU suite included.
# scripts/test.sh installs what they need and runs them with make -j.
.PHONY: test test-all clean
test: train_llama_cpu train_llama_cpu_nompi $(TEST_BINS)
	bash tests/run_all.sh fast
test-all: train_llama_cpu train_llama_cpu_nompi $(TEST_BINS)
	bash tests/run_all.sh all

clean:
	rm -rf train_llama train_llama_cpu train_llama_cpu_nompi test_llama tests/bin build/emu build/config

# GPU build rules (nvcc, cuBLAS/cuBLASLt, NCCL/MPI detection) live in cuda.mk
-include cuda.mk
# the CUDA build run on the CPU through the emulator in tests/cuda_emu
-include tests/cuda_emu/emu.mk
# make gpu_reference (the emulator's losses the GPU check compares with) and make gpu_check_emu
include scripts/gpu_check.mk
# the stamps that make every binary depend on the configuration it was built with
include build_config.mk
