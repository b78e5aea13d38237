# scripts/gpu_check.mk: the make targets of scripts/gpu_check.sh. The Makefile includes it:
#     include scripts/gpu_check.mk
#   make gpu_reference   the emulator's e2e losses the GPU check compares with, for these sources:
#                        build/gpu_prebuilt/reference_losses.txt and build/gpu_prebuilt/check_data
#                        (carried to the GPU machine with the prebuilt binaries; docs/CUDA.md "gpu_check")
#   make gpu_check_emu   the whole check here, on the emulated build at tiny shapes (build/gpu_report_emu)
# tests/test_gpu_check.sh (make test-all, tests/run_all.sh) runs the emulated check and asserts its reports.

GPU_CHECK_EMU_BINS = build/emu/train_llama build/emu/test_kernels_cuda build/emu/test_llama build/emu/test_emu \
                     build/emu/attention_check build/emu/gathered_gemm_check build/emu/gemm_align_check build/emu/classifier_check

.PHONY: gpu_reference gpu_check_emu
gpu_reference: build/emu/train_llama train_llama_cpu
	bash scripts/gpu_check.sh --make-reference

gpu_check_emu: $(GPU_CHECK_EMU_BINS) train_llama_cpu
	GPU_CHECK_EMULATE=1 bash scripts/gpu_check.sh --make-reference
	GPU_CHECK_EMULATE=1 OUT=build/gpu_report_emu bash scripts/gpu_check.sh
