/*
 * backend_cuda.cuh: the CUDA implementation of backend.h (included by train_llama.cu when nvcc
 * compiles it). See docs/CUDA.md for the design; kernels_cpu.h is the reference every kernel
 * here must match (tests/test_kernels_cuda.cu checks each one against it).
 *
 * The implementation lives in cuda/, one header per concern, listed below in dependency order.
 * Each of them includes the cuda/ headers it needs (include guards make that free), so a file
 * can include just the part it uses, as the checks in dev/cuda do.
 *
 * Precision: floatX storage (bf16, or fp32 with -DENABLE_FP32), fp32 arithmetic and
 * accumulation everywhere, fp32 optimizer states, fp32 Grass compressed gradients.
 * Ordering: every kernel, copy, GEMM and blocking collective runs on one stream (g_cu.stream),
 * so an update kernel is always ordered before the collective that ships its result. The one
 * exception is the asynchronous all-reduce of the fused Grass update (allreduce_start/wait):
 * it runs on g_cu.comm_stream after an event from the compute stream, and the compute stream
 * waits on its "done" event before the reduced values are used.
 * Determinism: no floating-point atomics; every reduction has a fixed order that depends on
 * the sizes only, so two runs of the same step give the same bits.
 * Names: every symbol in cuda/ starts with cu_ (host) or gk_ (kernels), so that these headers
 * can be included next to kernels_cpu.h (the parity test does).
 */
#ifndef GRASS_BACKEND_CUDA_CUH
#define GRASS_BACKEND_CUDA_CUH

#include "cuda/common.cuh"       // includes, checked calls, global state g_cu, memory, device helpers
#include "cuda/init.cuh"         // the initial weights, drawn on the device (param_init_tensor)
#include "cuda/elementwise.cuh"  // embedding, RMSNorm, RoPE, SwiGLU, add (forward and backward)
#include "cuda/gemm.cuh"         // cuBLASLt GEMM with a plan cache (cu_gemm); matmul_forward/backward_*
#include "cuda/classifier.cuh"   // fused classifier: loss, and dlogits in place
#include "cuda/reduce.cuh"       // deterministic sums of squares, scale_floats
#include "cuda/adamw.cuh"        // full-rank AdamW
#include "cuda/grass.cuh"        // Grass: gathered GEMM, norms, decay, subspace Adam, device selection
#include "cuda/galore.cuh"       // GaLore: projector (cuSOLVER SVD), projected gradient, subspace Adam + dense update
#include "cuda/attention.cuh"    // fused causal GQA attention, forward and backward
#include "cuda/comm.cuh"         // collectives (NCCL, MPI fallback), widening, asynchronous all-reduce
#include "cuda/lifecycle.cuh"    // backend_init: device, streams, cuBLAS(Lt) handles, ranks, NCCL
#include "cuda/workspace.cuh"    // backend_workspace_bytes: the scratch buffers of the parts above

#endif // GRASS_BACKEND_CUDA_CUH
