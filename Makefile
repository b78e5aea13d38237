# grass.c: LLaMA pretraining with Grass. See README.md.
#   make train_llama_cpu   CPU build (fp32, OpenMP, OpenBLAS; MPI when found)
#   make train_llama       GPU build (nvcc; bf16, cuBLAS/cuBLASLt; NCCL + MPI when found)
#   make test              the CPU test suite (what CI runs)
#   make test_llama        the GPU parity test

CXX ?= g++
CPU_FLAGS = -O3 -march=native -fopenmp -Wall -Wno-unused-function -Wno-unknown-pragmas -I.
CPU_LIBS = -lopenblas -lm

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

HEADERS = utils.h llama_config.h llama_params.h backend.h backend_cpu.h kernels_cpu.h comm.h grass_optim.cuh dataloader.h tokenizer.h

train_llama_cpu: train_llama.cu $(HEADERS)
	$(CPU_CXX) -x c++ $(CPU_FLAGS) train_llama.cu -o $@ $(CPU_LIBS)

tests/bin:
	mkdir -p tests/bin

.PHONY: test clean
test: train_llama_cpu | tests/bin
	bash tests/run_all.sh

clean:
	rm -rf train_llama train_llama_cpu test_llama tests/bin
