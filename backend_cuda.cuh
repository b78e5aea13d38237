/*
 * backend_cuda.cuh: the CUDA implementation of backend.h (included by train_llama.cu when nvcc
 * compiles it). See docs/CUDA.md for the design; kernels_cpu.h is the reference every kernel
 * here must match (tests/test_kernels_cuda.cu checks each one against it).
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
 * Names: every symbol here starts with cu_ (host) or gk_ (kernels), so that the file can be
 * included next to kernels_cpu.h (the parity test does).
 */
#ifndef GRASS_BACKEND_CUDA_CUH
#define GRASS_BACKEND_CUDA_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <float.h>
#include <map>
#include <vector>
#include <type_traits>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <mma.h>
#include <cub/cub.cuh>
#ifdef USE_MPI
#include <mpi.h>
#endif
#ifdef USE_NCCL
#include <nccl.h>
#endif
#include "utils.h"
#include "comm.h"
#include "backend.h"

// ---- checked calls ------------------------------------------------------------------------------

static const char* cu_error_hint(cudaError_t e) {
    switch (e) {
        case cudaErrorMemoryAllocation:
            return "out of GPU memory: reduce -b/--batch or -t/--seq, or use --optimizer grass with a smaller --rank";
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorInvalidDeviceFunction:
            return "this binary has no code for this GPU's architecture: rebuild with GPU_ARCH=sm_XX (e.g. make GPU_ARCH=sm_90)";
        case cudaErrorInsufficientDriver:
            return "the NVIDIA driver is older than the CUDA runtime this was built with: update the driver or build with an older CUDA";
        case cudaErrorNoDevice:
            return "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
            return "a kernel accessed memory out of bounds: rerun with GRASS_CUDA_SYNC=1 to find it, or under compute-sanitizer";
        case cudaErrorLaunchOutOfResources:
            return "a kernel asked for more registers or shared memory than the GPU has";
        default:
            return "rerun with GRASS_CUDA_SYNC=1 (synchronizes after every kernel) to find the failing call";
    }
}

static void cu_check_(cudaError_t e, const char* call, const char* file, int line) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "error: CUDA call %s failed: %s (%s)\n  at %s:%d\n  hint: %s\n", call, cudaGetErrorString(e),
            cudaGetErrorName(e), file, line, cu_error_hint(e));
    fflush(stderr);
    exit(1);
}
#define cudaCheck(call) cu_check_((call), #call, __FILE__, __LINE__)

static void cublas_check_(cublasStatus_t s, const char* call, const char* file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    const char* hint = s == CUBLAS_STATUS_NOT_SUPPORTED ? "this GEMM shape/type combination is not supported by cuBLAS(Lt)"
                     : s == CUBLAS_STATUS_ALLOC_FAILED  ? "out of GPU memory inside cuBLAS"
                     : s == CUBLAS_STATUS_ARCH_MISMATCH ? "the GPU lacks a feature this GEMM needs (bf16 needs sm_80+)"
                     : "check the GEMM sizes and leading dimensions (rerun with GRASS_CUDA_SYNC=1)";
    fprintf(stderr, "error: cuBLAS call %s failed: %s (status %d)\n  at %s:%d\n  hint: %s\n", call,
            cublasGetStatusString(s), (int)s, file, line, hint);
    fflush(stderr);
    exit(1);
}
#define cublasCheck(call) cublas_check_((call), #call, __FILE__, __LINE__)

#ifdef USE_NCCL
static void nccl_check_(ncclResult_t r, const char* call, const char* file, int line) {
    if (r == ncclSuccess) return;
    fprintf(stderr, "error: NCCL call %s failed: %s\n  at %s:%d\n  hint: %s\n", call, ncclGetErrorString(r), file, line,
            "rerun with NCCL_DEBUG=INFO; one GPU per rank is required (set GRASS_NO_NCCL=1 to fall back to MPI on the host)");
    fflush(stderr);
    exit(1);
}
#define ncclCheck(call) nccl_check_((call), #call, __FILE__, __LINE__)
#endif

// ---- global state ------------------------------------------------------------------------------

struct CuGemmPlan {  // one cached cuBLASLt problem
    int opA, opB, m, n, k, lda, ldb, ldc, ta, tb, tc, alA, alB, alC;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int have_algo;
};

struct CuScratch { void* p; size_t bytes; };

struct CuState {
    int initialized;
    int device;
    cudaDeviceProp prop;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cublasLtHandle_t lt;
    void* lt_workspace;
    size_t lt_workspace_bytes;
    std::vector<CuGemmPlan>* plans;
    std::map<uintptr_t, size_t>* allocs;  // base address -> bytes (accounting)
    size_t bytes_now, bytes_peak;
    int sync_debug;                       // GRASS_CUDA_SYNC=1: synchronize after every launch
    int max_smem_optin;
    char name[320];
    int world, rank;
#ifdef USE_NCCL
    ncclComm_t nccl;
#endif
    int use_nccl;
    // asynchronous all-reduce (allreduce_start/wait): a second stream for NCCL, an event that
    // hands the compute stream's progress to it, one "done" event and one wire buffer per group
    cudaStream_t comm_stream;
    cudaEvent_t ev_ready, ev_done[ALLREDUCE_SLOTS];
    floatX* async_wire[ALLREDUCE_SLOTS];
    size_t async_cap, async_used[ALLREDUCE_SLOTS];
    int async_pending[ALLREDUCE_SLOTS];
    // scratch buffers, one per purpose (grown on demand, accounted as allocations)
    CuScratch sc_gather, sc_norms, sc_rms, sc_sumsq, sc_att, sc_emb_keys, sc_emb_vals, sc_emb_temp, sc_wire, sc_select;
    float* host_stage;   // host staging for conversions and host-side collectives
    size_t host_stage_floats;
};
static CuState g_cu;

static void cu_require_init(const char* what) {
    if (!g_cu.initialized) fatal("%s called before backend_init()", what);
}

// after every kernel launch
static inline void cu_after_launch_(const char* kernel, const char* file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        fprintf(stderr, "error: launch of kernel %s failed: %s (%s)\n  at %s:%d\n  hint: %s\n", kernel,
                cudaGetErrorString(e), cudaGetErrorName(e), file, line, cu_error_hint(e));
        exit(1);
    }
    if (g_cu.sync_debug) {
        e = cudaStreamSynchronize(g_cu.stream);
        if (e != cudaSuccess) {
            fprintf(stderr, "error: kernel %s failed while running: %s (%s)\n  at %s:%d\n  hint: %s\n", kernel,
                    cudaGetErrorString(e), cudaGetErrorName(e), file, line, cu_error_hint(e));
            exit(1);
        }
    }
}
#define CU_LAUNCHED(kernel) cu_after_launch_(kernel, __FILE__, __LINE__)

static inline int cu_is_aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }
static inline unsigned cu_ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// ---- memory -------------------------------------------------------------------------------------

static double cu_gib(size_t b) { return b / 1073741824.0; }

void* backend_malloc(size_t bytes, const char* what) {
    cu_require_init("backend_malloc");
    size_t alloc = bytes < 256 ? 256 : bytes;  // never a NULL pointer, even for 0 bytes
    void* p = NULL;
    cudaError_t e = cudaMalloc(&p, alloc);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky-free error state
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        fprintf(stderr,
                "error: cannot allocate %zu bytes (%.3f GiB) of GPU memory for %s: %s\n"
                "  this program holds %.3f GiB (peak %.3f GiB); the GPU has %.3f GiB free of %.3f GiB\n"
                "  hint: reduce -b/--batch or -t/--seq, or use --optimizer grass with a smaller --rank\n",
                bytes, cu_gib(bytes), what, cudaGetErrorString(e), cu_gib(g_cu.bytes_now), cu_gib(g_cu.bytes_peak),
                cu_gib(fr), cu_gib(tot));
        exit(1);
    }
    cudaCheck(cudaMemsetAsync(p, 0, alloc, g_cu.stream));
    (*g_cu.allocs)[(uintptr_t)p] = bytes;
    g_cu.bytes_now += bytes;
    if (g_cu.bytes_now > g_cu.bytes_peak) g_cu.bytes_peak = g_cu.bytes_now;
    return p;
}

void backend_free(void* p) {
    if (p == NULL) return;
    std::map<uintptr_t, size_t>::iterator it = g_cu.allocs->find((uintptr_t)p);
    if (it == g_cu.allocs->end()) fatal("backend_free of a pointer that backend_malloc did not return (%p)", p);
    g_cu.bytes_now -= it->second;
    g_cu.allocs->erase(it);
    cudaCheck(cudaFree(p));  // synchronizes the device: nothing queued can still use it
}

// byte offset of p inside the allocation that holds it (stable across runs; 0 when unknown)
static size_t cu_offset_in_allocation(const void* p) {
    std::map<uintptr_t, size_t>::iterator it = g_cu.allocs->upper_bound((uintptr_t)p);
    if (it == g_cu.allocs->begin()) return 0;
    --it;
    uintptr_t off = (uintptr_t)p - it->first;
    return off <= it->second ? (size_t)off : 0;
}

// scratch: grown on demand, never shrunk; contents are not preserved across growth
static void* cu_scratch(CuScratch* s, size_t bytes, const char* what) {
    if (bytes > s->bytes) {
        if (s->p) backend_free(s->p);
        size_t grow = bytes + bytes / 4;
        s->p = backend_malloc(grow, what);
        s->bytes = grow;
    }
    return s->p;
}

static float* cu_host_stage(size_t n) {
    if (n > g_cu.host_stage_floats) {
        free(g_cu.host_stage);
        g_cu.host_stage = (float*)malloc_check(n * sizeof(float));
        g_cu.host_stage_floats = n;
    }
    return g_cu.host_stage;
}

void backend_memset0(void* p, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemsetAsync(p, 0, bytes, g_cu.stream));
}
void backend_copy(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_cu.stream));
}
void backend_upload(void* dst, const void* host_src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, g_cu.stream));
    cudaCheck(cudaStreamSynchronize(g_cu.stream));  // the host buffer may be reused at once
}
void backend_download(void* host_dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, g_cu.stream));
    cudaCheck(cudaStreamSynchronize(g_cu.stream));
}

static const size_t CU_CONVERT_CHUNK = (size_t)1 << 22;

void backend_upload_floats(floatX* dst, const float* src, size_t n) {
#ifdef ENABLE_FP32
    backend_upload(dst, src, n * sizeof(float));
#else
    __nv_bfloat16* buf = (__nv_bfloat16*)cu_host_stage(CU_CONVERT_CHUNK);
    for (size_t off = 0; off < n; off += CU_CONVERT_CHUNK) {
        size_t c = n - off < CU_CONVERT_CHUNK ? n - off : CU_CONVERT_CHUNK;
        for (size_t i = 0; i < c; i++) buf[i] = __float2bfloat16(src[off + i]);  // round to nearest even
        backend_upload(dst + off, buf, c * sizeof(__nv_bfloat16));
    }
#endif
}
void backend_download_floats(float* dst, const floatX* src, size_t n) {
#ifdef ENABLE_FP32
    backend_download(dst, src, n * sizeof(float));
#else
    __nv_bfloat16* buf = (__nv_bfloat16*)cu_host_stage(CU_CONVERT_CHUNK);
    for (size_t off = 0; off < n; off += CU_CONVERT_CHUNK) {
        size_t c = n - off < CU_CONVERT_CHUNK ? n - off : CU_CONVERT_CHUNK;
        backend_download(buf, src + off, c * sizeof(__nv_bfloat16));
        for (size_t i = 0; i < c; i++) dst[off + i] = __bfloat162float(buf[i]);
    }
#endif
}

void backend_synchronize(void) {
    cudaCheck(cudaStreamSynchronize(g_cu.stream));
    if (g_cu.comm_stream) cudaCheck(cudaStreamSynchronize(g_cu.comm_stream));
    cudaCheck(cudaGetLastError());
}
size_t backend_memory_free(void) {
    size_t fr = 0, tot = 0;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    return fr;
}
size_t backend_memory_peak(void) { return g_cu.bytes_peak; }

// Dense peak of the floatX matmul path by device name (datasheet figures, dense, no sparsity).
double backend_peak_flops(void) {
    const char* n = g_cu.prop.name;
#ifdef ENABLE_FP32
    // fp32 build: GEMMs run in plain fp32 (no TF32), so the CUDA-core fp32 peak
    if (strstr(n, "H100") && strstr(n, "PCIe")) return 51e12;
    if (strstr(n, "H100") || strstr(n, "H200") || strstr(n, "H800")) return 67e12;
    if (strstr(n, "A100") || strstr(n, "A800")) return 19.5e12;
    return 0.0;
#else
    if (strstr(n, "H100") && strstr(n, "PCIe")) return 756e12;
    if (strstr(n, "H100") || strstr(n, "H200") || strstr(n, "H800") || strstr(n, "GH200")) return 989e12;
    if (strstr(n, "A100") || strstr(n, "A800")) return 312e12;
    if (strstr(n, "L40S")) return 362e12;
    return 0.0;
#endif
}

const char* backend_name(void) { return g_cu.name; }

// ---- device helpers -----------------------------------------------------------------------------

__device__ __forceinline__ float cu_tof(float x) { return x; }
__device__ __forceinline__ float cu_tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T cu_from(float x);
template <> __device__ __forceinline__ float cu_from<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 cu_from<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

#define CU_VEC ((int)(16 / sizeof(floatX)))  // floatX elements in 16 bytes
struct __align__(16) CuPack { floatX v[16 / sizeof(floatX)]; };
__device__ __forceinline__ CuPack cu_load_pack(const floatX* p) {
    CuPack r;
    *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
    return r;
}
__device__ __forceinline__ void cu_store_pack(floatX* p, const CuPack& v) {
    *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&v);
}

// 32-bit integer hash (good avalanche), for stochastic rounding
__device__ __forceinline__ uint32_t cu_hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
__device__ __forceinline__ uint32_t cu_rand_at(uint64_t seed, size_t i) {
    uint32_t a = cu_hash32((uint32_t)seed ^ 0x9E3779B9U);
    uint32_t b = cu_hash32((uint32_t)(seed >> 32) ^ a ^ (uint32_t)((uint64_t)i >> 32));
    return cu_hash32((uint32_t)i ^ b);
}
// Stochastic rounding of x to floatX: round up with probability (x - down) / (up - down).
__device__ __forceinline__ floatX cu_round_sr(float x, uint32_t r) {
#ifdef ENABLE_FP32
    (void)r;
    return x;
#else
    uint32_t u = __float_as_uint(x);
    if ((u & 0x7f800000U) == 0x7f800000U) return __float2bfloat16_rn(x);  // inf / nan unchanged
    u += (r & 0xFFFFU);
    __nv_bfloat16_raw raw;
    raw.x = (unsigned short)(u >> 16);
    return __nv_bfloat16(raw);
#endif
}

// sums over the block; every thread gets the result. blockDim.x: a multiple of 32, <= 1024.
__device__ float cu_block_sum(float v) {
    __shared__ float sh[32];
    __syncthreads();  // protect sh from a previous call
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < nw ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(0xffffffffu, w, o);
        if (lane == 0) sh[0] = w;
    }
    __syncthreads();
    return sh[0];
}

// ---- embedding ----------------------------------------------------------------------------------

__global__ void gk_embedding_forward(floatX* out, const int* tokens, const floatX* wte, int N, int d, int vec) {
    int i = blockIdx.x;
    const floatX* src = wte + (size_t)tokens[i] * d;
    floatX* dst = out + (size_t)i * d;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC) cu_store_pack(dst + j, cu_load_pack(src + j));
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
    }
}

void embedding_forward(floatX* out, const int* d_tokens, const floatX* wte, int N, int d) {
    if (N <= 0) return;
    int vec = (d % CU_VEC == 0) && cu_is_aligned16(out) && cu_is_aligned16(wte);
    gk_embedding_forward<<<N, 128, 0, g_cu.stream>>>(out, d_tokens, wte, N, d, vec);
    CU_LAUNCHED("gk_embedding_forward");
}

__global__ void gk_iota(int* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

// One block per run of equal tokens in the sorted order; the run's rows are summed in fp32 in
// position order (radix sort is stable), then added to the row of dwte once.
__global__ void gk_embedding_backward(floatX* dwte, const floatX* dout, const int* sorted_tok, const int* sorted_pos,
                                      int N, int d) {
    int p = blockIdx.x;
    int tok = sorted_tok[p];
    if (p > 0 && sorted_tok[p - 1] == tok) return;  // not the start of a run
    int end = p + 1;
    while (end < N && sorted_tok[end] == tok) end++;
    floatX* row = dwte + (size_t)tok * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = 0.0f;
        for (int q = p; q < end; q++) acc += cu_tof(dout[(size_t)sorted_pos[q] * d + j]);
        row[j] = cu_from<floatX>(cu_tof(row[j]) + acc);
    }
}

void embedding_backward(floatX* dwte, const floatX* dout, const int* d_tokens, int N, int d) {
    if (N <= 0) return;
    int* keys = (int*)cu_scratch(&g_cu.sc_emb_keys, (size_t)2 * N * sizeof(int), "embedding backward scratch");
    int* vals = (int*)cu_scratch(&g_cu.sc_emb_vals, (size_t)2 * N * sizeof(int), "embedding backward scratch");
    int* keys_out = keys + N;
    int* vals_in = vals;
    int* vals_out = vals + N;
    gk_iota<<<cu_ceil_div(N, 256), 256, 0, g_cu.stream>>>(vals_in, N);
    CU_LAUNCHED("gk_iota");
    size_t temp_bytes = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, d_tokens, keys_out, vals_in, vals_out, N, 0,
                                              (int)(sizeof(int) * 8), g_cu.stream));
    void* temp = cu_scratch(&g_cu.sc_emb_temp, temp_bytes + 16, "embedding backward scratch");
    cudaCheck(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, d_tokens, keys_out, vals_in, vals_out, N, 0,
                                              (int)(sizeof(int) * 8), g_cu.stream));
    gk_embedding_backward<<<N, 128, 0, g_cu.stream>>>(dwte, dout, keys_out, vals_out, N, d);
    CU_LAUNCHED("gk_embedding_backward");
}

// ---- RMSNorm ------------------------------------------------------------------------------------

__global__ void gk_rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d, float eps,
                                   int vec) {
    int i = blockIdx.x;
    const floatX* x = inp + (size_t)i * d;
    floatX* o = out + (size_t)i * d;
    float ss = 0.0f;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(x + j);
            for (int k = 0; k < CU_VEC; k++) { float v = cu_tof(p.v[k]); ss += v * v; }
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) { float v = cu_tof(x[j]); ss += v * v; }
    }
    ss = cu_block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(x + j), wp = cu_load_pack(w + j), q;
            for (int k = 0; k < CU_VEC; k++) q.v[k] = cu_from<floatX>(cu_tof(wp.v[k]) * (cu_tof(p.v[k]) * r));
            cu_store_pack(o + j, q);
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = cu_from<floatX>(cu_tof(w[j]) * (cu_tof(x[j]) * r));
    }
    if (threadIdx.x == 0) rstd[i] = r;
}

static int cu_row_threads(int d) { return d >= 2048 ? 256 : 128; }

void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d, float eps) {
    if (N <= 0) return;
    int vec = (d % CU_VEC == 0) && cu_is_aligned16(out) && cu_is_aligned16(inp) && cu_is_aligned16(w);
    gk_rmsnorm_forward<<<N, cu_row_threads(d), 0, g_cu.stream>>>(out, rstd, inp, w, N, d, eps, vec);
    CU_LAUNCHED("gk_rmsnorm_forward");
}

// dinp += r (w g - x r mean), mean = sum_j (w_j g_j)(x_j r) / d
__global__ void gk_rmsnorm_backward_dx(floatX* dinp, const floatX* dout, const floatX* inp, const floatX* w,
                                       const float* rstd, int N, int d) {
    int i = blockIdx.x;
    const floatX* x = inp + (size_t)i * d;
    const floatX* g = dout + (size_t)i * d;
    floatX* dx = dinp + (size_t)i * d;
    float r = rstd[i];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dot += (cu_tof(w[j]) * cu_tof(g[j])) * (cu_tof(x[j]) * r);
    dot = cu_block_sum(dot);
    float mean = dot / (float)d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float v = r * (cu_tof(w[j]) * cu_tof(g[j]) - cu_tof(x[j]) * r * mean);
        dx[j] = cu_from<floatX>(cu_tof(dx[j]) + v);
    }
}

#define CU_RMS_ROWS 256  // rows per dw partial sum
// partial[c, j] = sum over rows of chunk c of dout[i, j] * x[i, j] * rstd[i]; block (32, 8)
__global__ void gk_rmsnorm_backward_dw_partial(float* partial, const floatX* dout, const floatX* inp, const float* rstd,
                                               int N, int d) {
    __shared__ float sh[8][33];
    int col = blockIdx.x * 32 + threadIdx.x;
    int chunk = blockIdx.y;
    int r0 = chunk * CU_RMS_ROWS, r1 = min(N, r0 + CU_RMS_ROWS);
    float acc = 0.0f;
    if (col < d) {
        for (int i = r0 + threadIdx.y; i < r1; i += 8)
            acc += cu_tof(dout[(size_t)i * d + col]) * (cu_tof(inp[(size_t)i * d + col]) * rstd[i]);
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < d) {
        float s = 0.0f;
        for (int k = 0; k < 8; k++) s += sh[k][threadIdx.x];
        partial[(size_t)chunk * d + col] = s;
    }
}
__global__ void gk_rmsnorm_backward_dw_final(floatX* dw, const float* partial, int nchunks, int d) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    float s = 0.0f;
    for (int c = 0; c < nchunks; c++) s += partial[(size_t)c * d + col];
    dw[col] = cu_from<floatX>(cu_tof(dw[col]) + s);
}

void rmsnorm_backward(floatX* dinp, floatX* dw, const floatX* dout, const floatX* inp, const floatX* w,
                      const float* rstd, int N, int d) {
    if (N <= 0) return;
    gk_rmsnorm_backward_dx<<<N, cu_row_threads(d), 0, g_cu.stream>>>(dinp, dout, inp, w, rstd, N, d);
    CU_LAUNCHED("gk_rmsnorm_backward_dx");
    if (dw == NULL) return;
    int nchunks = (N + CU_RMS_ROWS - 1) / CU_RMS_ROWS;
    float* partial = (float*)cu_scratch(&g_cu.sc_rms, (size_t)nchunks * d * sizeof(float), "rmsnorm dw scratch");
    dim3 grid(cu_ceil_div(d, 32), nchunks), block(32, 8);
    gk_rmsnorm_backward_dw_partial<<<grid, block, 0, g_cu.stream>>>(partial, dout, inp, rstd, N, d);
    CU_LAUNCHED("gk_rmsnorm_backward_dw_partial");
    gk_rmsnorm_backward_dw_final<<<cu_ceil_div(d, 256), 256, 0, g_cu.stream>>>(dw, partial, nchunks, d);
    CU_LAUNCHED("gk_rmsnorm_backward_dw_final");
}

// ---- RoPE (rotate-half) -------------------------------------------------------------------------

__global__ void gk_rope(floatX* x, const float* cosT, const float* sinT, int B, int T, int nh, int hd, float sign) {
    int half = hd / 2;
    size_t total = (size_t)B * T * nh * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rest = idx / half;         // (b, t, h)
        int t = (int)((rest / nh) % T);
        floatX* v = x + rest * hd;
        float c = cosT[(size_t)t * half + i], s = sign * sinT[(size_t)t * half + i];
        float x1 = cu_tof(v[i]), x2 = cu_tof(v[i + half]);
        v[i] = cu_from<floatX>(x1 * c - x2 * s);
        v[i + half] = cu_from<floatX>(x2 * c + x1 * s);
    }
}

static unsigned cu_grid_for(size_t work, int threads) {
    size_t g = (work + threads - 1) / threads;
    size_t cap = (size_t)(g_cu.prop.multiProcessorCount > 0 ? g_cu.prop.multiProcessorCount : 80) * 32;
    if (g > cap) g = cap;
    return (unsigned)(g > 0 ? g : 1);
}

void rope_forward(floatX* x, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    size_t work = (size_t)B * T * n_heads * (head_dim / 2);
    if (work == 0) return;
    gk_rope<<<cu_grid_for(work, 256), 256, 0, g_cu.stream>>>(x, d_cos, d_sin, B, T, n_heads, head_dim, 1.0f);
    CU_LAUNCHED("gk_rope");
}
void rope_backward(floatX* dx, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    size_t work = (size_t)B * T * n_heads * (head_dim / 2);
    if (work == 0) return;
    gk_rope<<<cu_grid_for(work, 256), 256, 0, g_cu.stream>>>(dx, d_cos, d_sin, B, T, n_heads, head_dim, -1.0f);
    CU_LAUNCHED("gk_rope");
}

// ---- SwiGLU, add ----------------------------------------------------------------------------------

__device__ __forceinline__ float cu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Elementwise kernels process packs of CU_VEC when every pointer is 16-byte aligned, plus a
// scalar tail; otherwise scalars throughout.
__global__ void gk_swiglu_forward(floatX* h, const floatX* gate, const floatX* up, size_t n, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    for (size_t p = tid; p < nv; p += stride) {
        CuPack g = cu_load_pack(gate + p * CU_VEC), u = cu_load_pack(up + p * CU_VEC), o;
        for (int k = 0; k < CU_VEC; k++) {
            float gv = cu_tof(g.v[k]);
            o.v[k] = cu_from<floatX>(gv * cu_sigmoid(gv) * cu_tof(u.v[k]));
        }
        cu_store_pack(h + p * CU_VEC, o);
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) {
        float gv = cu_tof(gate[i]);
        h[i] = cu_from<floatX>(gv * cu_sigmoid(gv) * cu_tof(up[i]));
    }
}
__global__ void gk_swiglu_backward(floatX* dgate, floatX* dup, const floatX* dh, const floatX* gate, const floatX* up,
                                   size_t n, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    for (size_t p = tid; p < nv; p += stride) {
        CuPack g = cu_load_pack(gate + p * CU_VEC), u = cu_load_pack(up + p * CU_VEC), d = cu_load_pack(dh + p * CU_VEC);
        CuPack og, ou;
        for (int k = 0; k < CU_VEC; k++) {
            float gv = cu_tof(g.v[k]), sg = cu_sigmoid(gv), dv = cu_tof(d.v[k]);
            og.v[k] = cu_from<floatX>(dv * cu_tof(u.v[k]) * sg * (1.0f + gv * (1.0f - sg)));
            ou.v[k] = cu_from<floatX>(dv * gv * sg);
        }
        cu_store_pack(dgate + p * CU_VEC, og);
        cu_store_pack(dup + p * CU_VEC, ou);
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) {
        float gv = cu_tof(gate[i]), sg = cu_sigmoid(gv), dv = cu_tof(dh[i]);
        dgate[i] = cu_from<floatX>(dv * cu_tof(up[i]) * sg * (1.0f + gv * (1.0f - sg)));
        dup[i] = cu_from<floatX>(dv * gv * sg);
    }
}
__global__ void gk_add_inplace(floatX* a, const floatX* b, size_t n, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    for (size_t p = tid; p < nv; p += stride) {
        CuPack x = cu_load_pack(a + p * CU_VEC), y = cu_load_pack(b + p * CU_VEC);
        for (int k = 0; k < CU_VEC; k++) x.v[k] = cu_from<floatX>(cu_tof(x.v[k]) + cu_tof(y.v[k]));
        cu_store_pack(a + p * CU_VEC, x);
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) a[i] = cu_from<floatX>(cu_tof(a[i]) + cu_tof(b[i]));
}

void swiglu_forward(floatX* h, const floatX* gate, const floatX* up, size_t n) {
    if (n == 0) return;
    int vec = cu_is_aligned16(h) && cu_is_aligned16(gate) && cu_is_aligned16(up);
    gk_swiglu_forward<<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(h, gate, up, n, vec);
    CU_LAUNCHED("gk_swiglu_forward");
}
void swiglu_backward(floatX* dgate, floatX* dup, const floatX* dh, const floatX* gate, const floatX* up, size_t n) {
    if (n == 0) return;
    int vec = cu_is_aligned16(dgate) && cu_is_aligned16(dup) && cu_is_aligned16(dh) && cu_is_aligned16(gate) &&
              cu_is_aligned16(up);
    gk_swiglu_backward<<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(dgate, dup, dh, gate, up, n, vec);
    CU_LAUNCHED("gk_swiglu_backward");
}
void add_inplace(floatX* a, const floatX* b, size_t n) {
    if (n == 0) return;
    int vec = cu_is_aligned16(a) && cu_is_aligned16(b);
    gk_add_inplace<<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(a, b, n, vec);
    CU_LAUNCHED("gk_add_inplace");
}

// ---- GEMMs (cuBLASLt, column-major; the row-major mapping is at each caller) ------------------

#ifdef ENABLE_FP32
#define CU_XTYPE CUDA_R_32F
#else
#define CU_XTYPE CUDA_R_16BF
#endif

static int cu_alignment(const void* p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

// D = alpha op(A) op(B) + beta C with C == D, column-major: op(A) m x k, op(B) k x n, C m x n.
// A stored (opA ? k x m : m x k) with lda; B stored (opB ? n x k : k x n) with ldb.
static void cu_gemm(int opA, int opB, int m, int n, int k, const void* A, cudaDataType ta, int lda, const void* B,
                    cudaDataType tb, int ldb, void* C, cudaDataType tc, int ldc, float alpha, float beta) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // nothing to multiply: C = beta C
        if (beta == 0.0f) {
            size_t es = tc == CUDA_R_32F ? 4 : 2;
            for (int j = 0; j < n; j++) backend_memset0((char*)C + (size_t)j * ldc * es, (size_t)m * es);
        }
        return;
    }
    int alA = cu_alignment(A), alB = cu_alignment(B), alC = cu_alignment(C);
    CuGemmPlan* plan = NULL;
    for (size_t i = 0; i < g_cu.plans->size(); i++) {
        CuGemmPlan* p = &(*g_cu.plans)[i];
        if (p->opA == opA && p->opB == opB && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldb == ldb &&
            p->ldc == ldc && p->ta == (int)ta && p->tb == (int)tb && p->tc == (int)tc && p->alA == alA &&
            p->alB == alB && p->alC == alC) { plan = p; break; }
    }
    if (plan == NULL) {
        CuGemmPlan p;
        memset(&p, 0, sizeof(p));
        p.opA = opA; p.opB = opB; p.m = m; p.n = n; p.k = k; p.lda = lda; p.ldb = ldb; p.ldc = ldc;
        p.ta = (int)ta; p.tb = (int)tb; p.tc = (int)tc; p.alA = alA; p.alB = alB; p.alC = alC;
        cublasCheck(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t oa = opA ? CUBLAS_OP_T : CUBLAS_OP_N, ob = opB ? CUBLAS_OP_T : CUBLAS_OP_N;
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof(oa)));
        cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof(ob)));
        cublasCheck(cublasLtMatrixLayoutCreate(&p.la, ta, opA ? k : m, opA ? m : k, lda));
        cublasCheck(cublasLtMatrixLayoutCreate(&p.lb, tb, opB ? n : k, opB ? k : n, ldb));
        cublasCheck(cublasLtMatrixLayoutCreate(&p.lc, tc, m, n, ldc));
        cublasLtMatmulPreference_t pref;
        cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
        size_t ws = g_cu.lt_workspace_bytes;
        uint32_t ua = (uint32_t)alA, ub = (uint32_t)alB, uc = (uint32_t)alC;
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ua, sizeof(ua)));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ub, sizeof(ub)));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &uc, sizeof(uc)));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &uc, sizeof(uc)));
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_cu.lt, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &res, &found);
        cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
        if (st == CUBLAS_STATUS_SUCCESS && found > 0) { p.algo = res.algo; p.have_algo = 1; }
        g_cu.plans->push_back(p);
        plan = &g_cu.plans->back();
    }
    if (plan->have_algo) {
        cublasStatus_t st = cublasLtMatmul(g_cu.lt, plan->desc, &alpha, A, plan->la, B, plan->lb, &beta, C, plan->lc, C,
                                           plan->lc, &plan->algo, g_cu.lt_workspace, g_cu.lt_workspace_bytes, g_cu.stream);
        if (st == CUBLAS_STATUS_SUCCESS) {
            if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
            return;
        }
        if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE) cublasCheck(st);
        fprintf(stderr, "warning: cuBLASLt refused its own algorithm for m=%d n=%d k=%d (%s); using cublasGemmEx\n", m, n,
                k, cublasGetStatusString(st));
        plan->have_algo = 0;
    }
    {
        // no cuBLASLt algorithm for this shape/alignment (odd sizes): plain cuBLAS handles any
        cublasCheck(cublasGemmEx(g_cu.cublas, opA ? CUBLAS_OP_T : CUBLAS_OP_N, opB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                 &alpha, A, ta, lda, B, tb, ldb, &beta, C, tc, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
}

// Y (N x out) = X (N x in) W^T:  col-major Y^T (out x N) = W (out x in) X^T (in x N), where the
// row-major W is the col-major (in x out) matrix, hence opA = T
void matmul_forward(floatX* out, const floatX* inp, const floatX* w, int N, int in, int outd) {
    cu_gemm(1, 0, outd, N, in, w, CU_XTYPE, in, inp, CU_XTYPE, in, out, CU_XTYPE, outd, 1.0f, 0.0f);
}
// dX (N x in) (+)= dY W:  col-major dX^T (in x N) = W^T (in x out) dY^T (out x N)
void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* w, int N, int in, int outd, int accumulate) {
    cu_gemm(0, 0, in, N, outd, w, CU_XTYPE, in, dout, CU_XTYPE, outd, dinp, CU_XTYPE, in, 1.0f, accumulate ? 1.0f : 0.0f);
}
// dW (out x in) (+)= dY^T X:  col-major dW^T (in x out) = X^T (in x N) op_T(dY^T as out x N)
void matmul_backward_weight(floatX* dw, const floatX* dout, const floatX* inp, int N, int in, int outd, int accumulate) {
    cu_gemm(0, 1, in, outd, N, inp, CU_XTYPE, in, dout, CU_XTYPE, outd, dw, CU_XTYPE, in, 1.0f, accumulate ? 1.0f : 0.0f);
}

// ---- fused classifier: loss and dlogits in place ------------------------------------------------

__device__ __forceinline__ void cu_online_add(float& m, float& s, float z) {
    if (z == -INFINITY) return;
    if (z > m) { s = s * expf(m - z) + 1.0f; m = z; }
    else s += expf(z - m);
}
__device__ __forceinline__ void cu_online_merge(float& m, float& s, float m2, float s2) {
    float M = fmaxf(m, m2);
    if (M == -INFINITY) { m = M; s = 0.0f; return; }
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

// one block per row: online max / sum over V, lse, loss; dlogits = (softmax - onehot) * dloss
__global__ void gk_classifier(floatX* logits, float* losses, const int* targets, int N, int V, float dloss,
                              int want_grad, int vec) {
    __shared__ float shm[32], shs[32];
    __shared__ float sh_lse;
    int i = blockIdx.x;
    floatX* z = logits + (size_t)i * V;
    float m = -INFINITY, s = 0.0f;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < V; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(z + j);
            for (int k = 0; k < CU_VEC; k++) cu_online_add(m, s, cu_tof(p.v[k]));
        }
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) cu_online_add(m, s, cu_tof(z[j]));
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        cu_online_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) { shm[warp] = m; shs[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? shm[lane] : -INFINITY;
        s = lane < nw ? shs[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            cu_online_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            float lse = m + logf(s);
            sh_lse = lse;
            losses[i] = lse - cu_tof(z[targets[i]]);
        }
    }
    __syncthreads();
    if (!want_grad) return;
    float lse = sh_lse;
    int tgt = targets[i];
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < V; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(z + j);
            for (int k = 0; k < CU_VEC; k++) {
                float g = expf(cu_tof(p.v[k]) - lse) * dloss;
                if (j + k == tgt) g -= dloss;
                p.v[k] = cu_from<floatX>(g);
            }
            cu_store_pack(z + j, p);
        }
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float g = expf(cu_tof(z[j]) - lse) * dloss;
            if (j == tgt) g -= dloss;
            z[j] = cu_from<floatX>(g);
        }
    }
}

void classifier_forward_backward(floatX* logits, float* losses, const int* d_targets, int N, int V, float dloss,
                                 int want_grad) {
    if (N <= 0) return;
    int vec = (V % CU_VEC == 0) && cu_is_aligned16(logits);
    int threads = V >= 8192 ? 512 : (V >= 1024 ? 256 : 64);
    gk_classifier<<<N, threads, 0, g_cu.stream>>>(logits, losses, d_targets, N, V, dloss, want_grad, vec);
    CU_LAUNCHED("gk_classifier");
}

// ---- reductions (deterministic two-pass) -------------------------------------------------------

#define CU_SUMSQ_THREADS 256
#define CU_SUMSQ_MAXBLOCKS 1024
static int cu_sumsq_blocks(size_t n) {  // a function of n only, so the summation order is too
    size_t b = (n + (size_t)CU_SUMSQ_THREADS * 16 - 1) / ((size_t)CU_SUMSQ_THREADS * 16);
    if (b < 1) b = 1;
    if (b > CU_SUMSQ_MAXBLOCKS) b = CU_SUMSQ_MAXBLOCKS;
    return (int)b;
}
template <typename T>
__global__ void gk_sumsq_partial(float* partial, const T* x, size_t n) {
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = cu_tof(x[i]);
        s += v * v;
    }
    s = cu_block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void gk_sumsq_final(float* acc, const float* partial, int nparts) {
    // one block of 1024 threads: fixed strided order, then a fixed tree
    __shared__ double sh[1024];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += (double)partial[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *acc = (float)((double)*acc + sh[0]);
}
template <typename T>
static void cu_sumsq(float* acc, const T* x, size_t n) {
    if (n == 0) return;
    int nb = cu_sumsq_blocks(n);
    float* partial = (float*)cu_scratch(&g_cu.sc_sumsq, CU_SUMSQ_MAXBLOCKS * sizeof(float), "reduction scratch");
    gk_sumsq_partial<T><<<nb, CU_SUMSQ_THREADS, 0, g_cu.stream>>>(partial, x, n);
    CU_LAUNCHED("gk_sumsq_partial");
    gk_sumsq_final<<<1, 1024, 0, g_cu.stream>>>(acc, partial, nb);
    CU_LAUNCHED("gk_sumsq_final");
}
void sumsq_floatX(float* acc, const floatX* x, size_t n) { cu_sumsq<floatX>(acc, x, n); }
void sumsq_float(float* acc, const float* x, size_t n) { cu_sumsq<float>(acc, x, n); }

__global__ void gk_scale_floats(float* C, float s, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) C[i] *= s;
}
void scale_floats(float* C, float s, size_t n) {
    if (n == 0) return;
    gk_scale_floats<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(C, s, n);
    CU_LAUNCHED("gk_scale_floats");
}

// ---- Grass selection on the device --------------------------------------------------------------
// Mirrors grass_select in grass_optim.cuh step for step, so that both give the same indices and
// scales: the sums and the CDF are formed in double by one thread in the host's order, draw k
// uses the k-th value of the same splitmix64 stream, sorts are stable radix sorts (ties keep the
// lower index first, as the host's comparator does), and duplicates merge by index with the
// first draw's scale. The one place the two may part is log() in the without-replacement keys
// (CUDA's and the C library's double log may differ in the last bit).
// Method values: 0 topr, 1 multinorm, 2 multinorm-nr, 3 uniform, 4 uniform-nr (GrassSelect).
__device__ __forceinline__ double cu_sel_uniform_at(uint64_t rng, uint64_t k) {  // the (k+1)-th rng_uniform01
    uint64_t z = rng + (k + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}
__global__ void gk_sel_prepare(const float* q, int dim, int norm_based, double* p, double* cdf) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;  // sequential on purpose: the host's order
    double total = 0.0;
    for (int i = 0; i < dim; i++) total += q[i];
    for (int i = 0; i < dim; i++) p[i] = (norm_based && total > 0.0) ? q[i] / total : 1.0 / dim;
    double acc = 0.0;
    for (int i = 0; i < dim; i++) { acc += p[i]; cdf[i] = acc; }
}
__global__ void gk_sel_draw_replace(const double* p, const double* cdf, int dim, int r, uint64_t rng, int* draws, float* rho) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= r) return;
    double u = cu_sel_uniform_at(rng, (uint64_t)k) * cdf[dim - 1];
    int lo = 0, hi = dim - 1;
    while (lo < hi) { int mid = (lo + hi) / 2; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
    while (p[lo] <= 0.0 && lo < dim - 1) lo++;
    draws[k] = lo;
    rho[k] = (float)(1.0 / sqrt((double)r * p[lo]));
}
__global__ void gk_sel_es_keys(const double* p, int dim, uint64_t rng, double* keys, int* iota) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    double u = cu_sel_uniform_at(rng, (uint64_t)i);
    if (u <= 0.0) u = 1e-300;
    keys[i] = p[i] > 0.0 ? log(u) / p[i] : -INFINITY;
    iota[i] = i;
}
__global__ void gk_sel_iota(int* iota, int dim) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < dim) iota[i] = i;
}
// the first r of the sorted order; rho by method
__global__ void gk_sel_take(const int* order, const double* p, int dim, int r, int method, int* draws, float* rho) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= r) return;
    int pick = order[k];
    draws[k] = pick;
    if (method == 0) rho[k] = 1.0f;
    else if (method == 2) rho[k] = (float)(p[pick] > 0.0 ? 1.0 / sqrt((double)r * p[pick]) : 1.0);
    else rho[k] = (float)sqrt((double)dim / r);
}
// merge duplicate draws: ascending index, the first draw's rho, upscale = count * rho
__global__ void gk_sel_merge(const int* draws, const float* rho, int r, int dim, int* count, float* first_rho, int* idx,
                             float* scale, float* upscale, int* r_eff) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    for (int i = 0; i < dim; i++) count[i] = 0;
    for (int k = 0; k < r; k++) {
        int i = draws[k];
        if (count[i] == 0) first_rho[i] = rho[k];
        count[i]++;
    }
    int n = 0;
    for (int i = 0; i < dim; i++) {
        if (count[i] == 0) continue;
        idx[n] = i; scale[n] = first_rho[i]; upscale[n] = first_rho[i] * (float)count[i];
        n++;
    }
    *r_eff = n;
}

int grass_select_device(int method, const float* d_norms, int dim, int r, uint64_t rng, int* d_idx, float* d_scale,
                        float* d_upscale) {
    if (method < 0 || method > 4) fatal("grass_select_device: unknown method %d", method);
    if (dim <= 0 || r <= 0 || r > dim) fatal("grass_select_device: rank %d of dimension %d", r, dim);
    // scratch: p, cdf, keys in/out (double); iota, order, draws, count, r_eff (int); rho, first_rho (float)
    size_t nd = (size_t)dim, off = 0;
    size_t sort_bytes = 0, sort_bytes_f = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairsDescending(NULL, sort_bytes, (const double*)NULL, (double*)NULL,
                                                        (const int*)NULL, (int*)NULL, dim, 0, 64, g_cu.stream));
    cudaCheck(cub::DeviceRadixSort::SortPairsDescending(NULL, sort_bytes_f, (const float*)NULL, (float*)NULL,
                                                        (const int*)NULL, (int*)NULL, dim, 0, 32, g_cu.stream));
    if (sort_bytes_f > sort_bytes) sort_bytes = sort_bytes_f;
    size_t total = 4 * nd * sizeof(double) + (3 * nd + (size_t)r + 1) * sizeof(int) + ((size_t)r + nd) * sizeof(float) +
                   sort_bytes + 8 * 256;
    char* base = (char*)cu_scratch(&g_cu.sc_select, total, "Grass selection scratch");
#define CU_SEL_CARVE(ptr, type, count) do { off = (off + 255) & ~(size_t)255; ptr = (type*)(base + off); \
                                           off += (size_t)(count) * sizeof(type); } while (0)
    double *p, *cdf, *keys, *keys_out;
    int *iota, *order, *draws, *count, *d_reff;
    float *rho, *first_rho;
    void* sort_temp;
    CU_SEL_CARVE(p, double, nd); CU_SEL_CARVE(cdf, double, nd); CU_SEL_CARVE(keys, double, nd); CU_SEL_CARVE(keys_out, double, nd);
    CU_SEL_CARVE(iota, int, nd); CU_SEL_CARVE(order, int, nd); CU_SEL_CARVE(count, int, nd); CU_SEL_CARVE(draws, int, r);
    CU_SEL_CARVE(d_reff, int, 1); CU_SEL_CARVE(rho, float, r); CU_SEL_CARVE(first_rho, float, nd);
    CU_SEL_CARVE(sort_temp, char, sort_bytes);
#undef CU_SEL_CARVE
    int norm_based = method == 1 || method == 2;
    gk_sel_prepare<<<1, 1, 0, g_cu.stream>>>(d_norms, dim, norm_based, p, cdf);
    CU_LAUNCHED("gk_sel_prepare");
    if (method == 0) {  // top-r: the norms themselves, sorted descending (stable: lower index first)
        gk_sel_iota<<<cu_ceil_div(dim, 256), 256, 0, g_cu.stream>>>(iota, dim);
        CU_LAUNCHED("gk_sel_iota");
        cudaCheck(cub::DeviceRadixSort::SortPairsDescending(sort_temp, sort_bytes, d_norms, (float*)keys_out, iota, order,
                                                            dim, 0, 32, g_cu.stream));
        gk_sel_take<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(order, p, dim, r, method, draws, rho);
        CU_LAUNCHED("gk_sel_take");
    } else if (method == 1 || method == 3) {  // with replacement
        gk_sel_draw_replace<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(p, cdf, dim, r, rng, draws, rho);
        CU_LAUNCHED("gk_sel_draw_replace");
    } else {  // without replacement: Efraimidis-Spirakis keys, the r largest
        gk_sel_es_keys<<<cu_ceil_div(dim, 256), 256, 0, g_cu.stream>>>(p, dim, rng, keys, iota);
        CU_LAUNCHED("gk_sel_es_keys");
        cudaCheck(cub::DeviceRadixSort::SortPairsDescending(sort_temp, sort_bytes, keys, keys_out, iota, order, dim, 0, 64,
                                                            g_cu.stream));
        gk_sel_take<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(order, p, dim, r, method, draws, rho);
        CU_LAUNCHED("gk_sel_take");
    }
    gk_sel_merge<<<1, 1, 0, g_cu.stream>>>(draws, rho, r, dim, count, first_rho, d_idx, d_scale, d_upscale, d_reff);
    CU_LAUNCHED("gk_sel_merge");
    int r_eff = 0;
    backend_download(&r_eff, d_reff, sizeof(int));
    return r_eff;
}

// ---- full-rank AdamW (fp32 moments, stochastic rounding of floatX parameters) -----------------

__device__ __forceinline__ float cu_adam_param(float p, float g, float& m, float& v, float lr, float b1, float b2, float eps,
                                               float wd, float bc1, float bc2) {
    m = b1 * m + (1.0f - b1) * g;
    v = b2 * v + (1.0f - b2) * g * g;
    float u = (m / bc1) / (sqrtf(v / bc2) + eps);
    return p - lr * (u + wd * p);
}

__global__ void gk_adamw(floatX* param, const floatX* grad, float* m, float* v, size_t n, float lr, float b1, float b2,
                         float eps, float wd, float bc1, float bc2, float grad_scale, uint64_t seed, size_t first, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    for (size_t pk = tid; pk < nv; pk += stride) {
        size_t base = pk * CU_VEC;
        CuPack p = cu_load_pack(param + base), g = cu_load_pack(grad + base);
        float4 mm[CU_VEC / 4], vv[CU_VEC / 4];
        for (int q = 0; q < CU_VEC / 4; q++) {
            mm[q] = reinterpret_cast<const float4*>(m + base)[q];
            vv[q] = reinterpret_cast<const float4*>(v + base)[q];
        }
        float* mf = reinterpret_cast<float*>(mm);
        float* vf = reinterpret_cast<float*>(vv);
#pragma unroll
        for (int k = 0; k < CU_VEC; k++) {
            float np = cu_adam_param(cu_tof(p.v[k]), cu_tof(g.v[k]) * grad_scale, mf[k], vf[k], lr, b1, b2, eps, wd, bc1, bc2);
            p.v[k] = cu_round_sr(np, cu_rand_at(seed, first + base + k));
        }
        cu_store_pack(param + base, p);
        for (int q = 0; q < CU_VEC / 4; q++) {
            reinterpret_cast<float4*>(m + base)[q] = mm[q];
            reinterpret_cast<float4*>(v + base)[q] = vv[q];
        }
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) {
        float mi = m[i], vi = v[i];
        float np = cu_adam_param(cu_tof(param[i]), cu_tof(grad[i]) * grad_scale, mi, vi, lr, b1, b2, eps, wd, bc1, bc2);
        m[i] = mi; v[i] = vi;
        param[i] = cu_round_sr(np, cu_rand_at(seed, first + i));
    }
}

// The general AdamW kernel: moments stored as S (float, or bf16 loaded to fp32, updated in fp32
// and stored rounded to nearest even, as kernels_cpu.h's cpu_state_set; the update uses the fp32
// moments before that rounding), and an optional fp32 master copy of the parameters (updated
// in place; the floatX parameter gets it rounded to nearest). Without a master copy the new
// parameter is rounded stochastically. gk_adamw below is the vectorized fp32-moment case.
template <typename S>
__global__ void gk_adamw_general(floatX* param, float* master, const floatX* grad, S* m, S* v, size_t n, float lr, float b1,
                                 float b2, float eps, float wd, float bc1, float bc2, float grad_scale, uint64_t seed,
                                 size_t first) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float mi = cu_tof(m[i]), vi = cu_tof(v[i]);
        float p = master != NULL ? master[i] : cu_tof(param[i]);
        float np = cu_adam_param(p, cu_tof(grad[i]) * grad_scale, mi, vi, lr, b1, b2, eps, wd, bc1, bc2);
        m[i] = cu_from<S>(mi); v[i] = cu_from<S>(vi);
        if (master != NULL) { master[i] = np; param[i] = cu_from<floatX>(np); }
        else param[i] = cu_round_sr(np, cu_rand_at(seed, first + i));
    }
}
void adamw_update(floatX* param, float* master, const floatX* grad, void* m, void* v, int state_dtype, size_t n, float lr,
                  float b1, float b2, float eps, float wd, float bc1, float bc2, float grad_scale, uint64_t seed,
                  size_t first) {
    if (n == 0) return;
    if (state_dtype == STATE_BF16) {
        gk_adamw_general<__nv_bfloat16><<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(
            param, master, grad, (__nv_bfloat16*)m, (__nv_bfloat16*)v, n, lr, b1, b2, eps, wd, bc1, bc2, grad_scale, seed, first);
        CU_LAUNCHED("gk_adamw_general<bf16>");
        return;
    }
    if (master != NULL) {
        gk_adamw_general<float><<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(
            param, master, grad, (float*)m, (float*)v, n, lr, b1, b2, eps, wd, bc1, bc2, grad_scale, seed, first);
        CU_LAUNCHED("gk_adamw_general<float>");
        return;
    }
    float* mf = (float*)m, *vf = (float*)v;
    int vec = cu_is_aligned16(param) && cu_is_aligned16(grad) && cu_is_aligned16(mf) && cu_is_aligned16(vf);
    gk_adamw<<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(param, grad, mf, vf, n, lr, b1, b2, eps,
                                                                                    wd, bc1, bc2, grad_scale, seed, first, vec);
    CU_LAUNCHED("gk_adamw");
}

// ---- Grass --------------------------------------------------------------------------------------

// g (N x r) = src[:, idx] * scale, src (N x ld)
__global__ void gk_grass_gather(floatX* g, const floatX* src, const int* idx, const float* scale, int N, int ld, int r) {
    size_t total = (size_t)N * r;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(e % r);
        size_t i = e / r;
        g[e] = cu_from<floatX>(cu_tof(src[i * ld + idx[j]]) * scale[j]);
    }
}

void grass_gathered_grad(float* C, const floatX* dout, const floatX* inp, const int* d_idx, const float* d_scale, int r,
                         int N, int in, int outd, int cols_side, int accumulate) {
    if (r <= 0) return;
    floatX* g = (floatX*)cu_scratch(&g_cu.sc_gather, (size_t)N * r * sizeof(floatX), "grass gather scratch");
    const floatX* src = cols_side ? inp : dout;
    int ld = cols_side ? in : outd;
    gk_grass_gather<<<cu_grid_for((size_t)N * r, 256), 256, 0, g_cu.stream>>>(g, src, d_idx, d_scale, N, ld, r);
    CU_LAUNCHED("gk_grass_gather");
    float beta = accumulate ? 1.0f : 0.0f;
    if (!cols_side) {
        // C (r x in) = g^T X: col-major C^T (in x r) = X^T (in x N) op_T(g^T as r x N)
        cu_gemm(0, 1, in, r, N, inp, CU_XTYPE, in, g, CU_XTYPE, r, C, CUDA_R_32F, in, 1.0f, beta);
    } else {
        // C (out x r) = dY^T g: col-major C^T (r x out) = g^T (r x N) op_T(dY^T as out x N)
        cu_gemm(0, 1, r, outd, N, g, CU_XTYPE, r, dout, CU_XTYPE, outd, C, CUDA_R_32F, r, 1.0f, beta);
    }
}

// norms[u] += sum of squares of the contiguous vector G[u*L .. u*L+L), one block per u
__global__ void gk_sumsq_rows(float* norms, const float* G, int L) {
    const float* g = G + (size_t)blockIdx.x * L;
    float s = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) s += g[j] * g[j];
    s = cu_block_sum(s);
    if (threadIdx.x == 0) norms[blockIdx.x] += s;
}

#define CU_NORM_BUDGET_FLOATS ((size_t)16 << 20)  // 64 MiB of G at a time

void grass_grad_norms(float* norms, const floatX* dout, const floatX* inp, int N, int in, int outd, int cols_side) {
    if (!cols_side) {
        // row block [r0, r0+nr) of G = dY[:, r0:r0+nr]^T X, stored so that each row of G is contiguous:
        // col-major (in x nr) = X^T (in x N) op_T(dY^T block, nr x N with ld outd)
        int rb = (int)(CU_NORM_BUDGET_FLOATS / (size_t)in);
        if (rb >= 8) rb &= ~7;  // keep dY + r0 16-byte aligned
        if (rb < 1) rb = 1;
        if (rb > outd) rb = outd;
        float* G = (float*)cu_scratch(&g_cu.sc_norms, (size_t)rb * in * sizeof(float), "grass norm scratch");
        for (int r0 = 0; r0 < outd; r0 += rb) {
            int nr = outd - r0 < rb ? outd - r0 : rb;
            cu_gemm(0, 1, in, nr, N, inp, CU_XTYPE, in, dout + r0, CU_XTYPE, outd, G, CUDA_R_32F, in, 1.0f, 0.0f);
            gk_sumsq_rows<<<nr, 256, 0, g_cu.stream>>>(norms + r0, G, in);
            CU_LAUNCHED("gk_sumsq_rows");
        }
    } else {
        // column block [c0, c0+nc) of G = dY^T X[:, c0:c0+nc], each column of G contiguous:
        // col-major (out x nc) = dY^T (out x N) op_T(X^T block, nc x N with ld in)
        int cb = (int)(CU_NORM_BUDGET_FLOATS / (size_t)outd);
        if (cb >= 8) cb &= ~7;
        if (cb < 1) cb = 1;
        if (cb > in) cb = in;
        float* G = (float*)cu_scratch(&g_cu.sc_norms, (size_t)cb * outd * sizeof(float), "grass norm scratch");
        for (int c0 = 0; c0 < in; c0 += cb) {
            int nc = in - c0 < cb ? in - c0 : cb;
            cu_gemm(0, 1, outd, nc, N, dout, CU_XTYPE, outd, inp + c0, CU_XTYPE, in, G, CUDA_R_32F, outd, 1.0f, 0.0f);
            gk_sumsq_rows<<<nc, 256, 0, g_cu.stream>>>(norms + c0, G, outd);
            CU_LAUNCHED("gk_sumsq_rows");
        }
    }
}

// W *= keep: stochastically rounded, or (Wm, the fp32 master copy) Wm *= keep and W = Wm rounded
__global__ void gk_decay(floatX* W, float* Wm, size_t n, float keep, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        if (Wm != NULL) { float w = Wm[i] * keep; Wm[i] = w; W[i] = cu_from<floatX>(w); }
        else W[i] = cu_round_sr(cu_tof(W[i]) * keep, cu_rand_at(seed, i));
    }
}

// Adam on the subspace element k = (j, c) (rows side, C r x in) or (i, j) (cols side, C out x r);
// the update lands on W[idx_j, c] or W[i, idx_j].
// S: the moments' storage, float or __nv_bfloat16 (rounded to nearest even on the store)
template <typename S>
__global__ void gk_grass_adam(floatX* W, float* Wm, const float* C, S* m, S* v, const int* idx, const float* upscale, int r,
                              int outd, int in, int cols_side, float step, float b1, float b2, float eps, float bc1,
                              float bc2, float grad_scale, uint64_t seed) {
    size_t total = (size_t)r * (cols_side ? outd : in);
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        int j;
        size_t widx;
        if (!cols_side) { j = (int)(k / in); widx = (size_t)idx[j] * in + (k % in); }
        else { j = (int)(k % r); widx = (k / r) * in + idx[j]; }
        float g = C[k] * grad_scale;
        float mk = b1 * cu_tof(m[k]) + (1.0f - b1) * g;
        float vk = b2 * cu_tof(v[k]) + (1.0f - b2) * g * g;
        m[k] = cu_from<S>(mk); v[k] = cu_from<S>(vk);
        float u = (mk / bc1) / (sqrtf(vk / bc2) + eps);
        if (Wm != NULL) { float w = Wm[widx] - step * upscale[j] * u; Wm[widx] = w; W[widx] = cu_from<floatX>(w); }
        else W[widx] = cu_round_sr(cu_tof(W[widx]) - step * upscale[j] * u, cu_rand_at(seed, widx));
    }
}

static uint64_t cu_mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ULL; x ^= x >> 27; x *= 0x94D049BB133111EBULL; x ^= x >> 31;
    return x;
}
static uint32_t cu_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

void grass_adam_update(floatX* W, float* Wm, const float* C, void* m, void* v, int state_dtype, const int* d_idx, const float* d_upscale,
                       int r, int outd, int in, int cols_side, float lr, float alpha, float b1, float b2, float eps,
                       float wd, float bc1, float bc2, float grad_scale, uint64_t seed) {
    seed = cu_mix64(seed);
    if (wd > 0.0f) {
        size_t n = (size_t)outd * in;
        gk_decay<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(W, Wm, n, 1.0f - lr * wd, cu_mix64(seed ^ 0xDEC0DEULL));
        CU_LAUNCHED("gk_decay");
    }
    if (r <= 0) return;
    size_t total = (size_t)r * (cols_side ? outd : in);
    if (state_dtype == STATE_BF16)
        gk_grass_adam<__nv_bfloat16><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            W, Wm, C, (__nv_bfloat16*)m, (__nv_bfloat16*)v, d_idx, d_upscale, r, outd, in, cols_side, lr * alpha, b1, b2, eps,
            bc1, bc2, grad_scale, seed);
    else
        gk_grass_adam<float><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            W, Wm, C, (float*)m, (float*)v, d_idx, d_upscale, r, outd, in, cols_side, lr * alpha, b1, b2, eps, bc1, bc2,
            grad_scale, seed);
    CU_LAUNCHED("gk_grass_adam");
}

// ---- attention ----------------------------------------------------------------------------------
// Flash-attention style, causal, GQA-aware (query head h reads kv head h / (nh / nkv)).
// Tiles of Q, K, V live in shared memory as floatX with head_dim zero-padded to a multiple of 16;
// the five products (S = Q K^T, O += P V, dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ += dS K)
// run through cu_att_mma: bf16 tensor cores (WMMA 16x16x16, fp32 accumulate) in the bf16
// build, a plain fp32 loop in the fp32 build. Accumulators (O, dK, dV, dQ) live in shared
// memory in fp32. Forward: one block per (query tile, head, batch), online softmax, writes lse.
// Backward: D = rowsum(dO * O); one block per (key tile, kv head, batch) loops over the query
// heads of its group and the query tiles, writing dK and dV (no atomics); a second kernel, one
// block per (query tile, head, batch), recomputes the probabilities and writes dQ.

#define CU_ATT_PAD ((int)(16 / sizeof(floatX)))  // row padding of floatX tiles (16 bytes)
#ifdef ENABLE_FP32
#define CU_ATT_FWD_BQ 32
#define CU_ATT_FWD_BK 32
#define CU_ATT_KV_BK 32
#define CU_ATT_KV_BQ 32
#define CU_ATT_Q_BQ 32
#define CU_ATT_Q_BK 32
#else
#define CU_ATT_FWD_BQ 64
#define CU_ATT_FWD_BK 64
#define CU_ATT_KV_BK 64
#define CU_ATT_KV_BQ 32
#define CU_ATT_Q_BQ 64
#define CU_ATT_Q_BK 32
#endif
#define CU_ATT_FWD_THREADS 128
#define CU_ATT_BWD_THREADS 256

// C (M x N, fp32, row-major ldc) (+)= A (M x K) B (K x N). A_ROW: A(i,k) = A[i*lda + k], else
// A[k*lda + i]; B_ROW: B(k,j) = B[k*ldb + j], else B[j*ldb + k]. M, N, K multiples of 16;
// operands and C in shared memory. Work is split over the block's warps; no barrier inside.
template <bool A_ROW, bool B_ROW>
__device__ void cu_att_mma(float* C, int ldc, const floatX* A, int lda, const floatX* B, int ldb, int M, int N, int K,
                           bool accumulate) {
#if !defined(ENABLE_FP32) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
    using namespace nvcuda;
    typedef typename std::conditional<A_ROW, wmma::row_major, wmma::col_major>::type LA;
    typedef typename std::conditional<B_ROW, wmma::row_major, wmma::col_major>::type LB;
    int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += nw) {
        int i0 = (t / tn) * 16, j0 = (t % tn) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
        if (accumulate) wmma::load_matrix_sync(c, C + i0 * ldc + j0, ldc, wmma::mem_row_major);
        else wmma::fill_fragment(c, 0.0f);
        for (int k0 = 0; k0 < K; k0 += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> b;
            wmma::load_matrix_sync(a, A_ROW ? A + i0 * lda + k0 : A + k0 * lda + i0, lda);
            wmma::load_matrix_sync(b, B_ROW ? B + k0 * ldb + j0 : B + j0 * ldb + k0, ldb);
            wmma::mma_sync(c, a, b, c);
        }
        wmma::store_matrix_sync(C + i0 * ldc + j0, c, ldc, wmma::mem_row_major);
    }
#else
    for (int e = threadIdx.x; e < M * N; e += blockDim.x) {
        int i = e / N, j = e % N;
        float s = accumulate ? C[i * ldc + j] : 0.0f;
        for (int k = 0; k < K; k++) {
            float a = cu_tof(A_ROW ? A[i * lda + k] : A[k * lda + i]);
            float b = cu_tof(B_ROW ? B[k * ldb + j] : B[j * ldb + k]);
            s += a * b;
        }
        C[i * ldc + j] = s;
    }
#endif
}

// dst[r][c] (ld) = src row (row0 + r) of a (T x row_stride) strided view, for c < hd; zeros for
// rows >= T and for the padding columns hd <= c < hdp.
__device__ void cu_att_load_tile(floatX* dst, int ld, const floatX* src, size_t row_stride, int row0, int T, int rows,
                                 int hd, int hdp, int vec) {
    if (vec) {  // hd % CU_VEC == 0, src and row_stride 16-byte aligned
        int cpr = hdp / CU_VEC;
        for (int e = threadIdx.x; e < rows * cpr; e += blockDim.x) {
            int r = e / cpr, c = (e % cpr) * CU_VEC;
            CuPack p;
            if (row0 + r < T && c < hd) p = cu_load_pack(src + (size_t)(row0 + r) * row_stride + c);
            else for (int k = 0; k < CU_VEC; k++) p.v[k] = cu_from<floatX>(0.0f);
            cu_store_pack(dst + r * ld + c, p);
        }
    } else {
        for (int e = threadIdx.x; e < rows * hdp; e += blockDim.x) {
            int r = e / hdp, c = e % hdp;
            dst[r * ld + c] = (row0 + r < T && c < hd) ? src[(size_t)(row0 + r) * row_stride + c] : cu_from<floatX>(0.0f);
        }
    }
}

__host__ __device__ inline size_t cu_align128(size_t x) { return (x + 127) & ~(size_t)127; }

struct CuAttFwdLayout { size_t q, k, v, s, p, o, m, l, c, total; };
__host__ __device__ inline CuAttFwdLayout cu_att_fwd_layout(int hdp) {
    CuAttFwdLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    L.q = off; off = cu_align128(off + CU_ATT_FWD_BQ * ldh * sizeof(floatX));
    L.k = off; off = cu_align128(off + CU_ATT_FWD_BK * ldh * sizeof(floatX));
    L.v = off; off = cu_align128(off + CU_ATT_FWD_BK * ldh * sizeof(floatX));
    L.s = off; off = cu_align128(off + CU_ATT_FWD_BQ * (CU_ATT_FWD_BK + 4) * sizeof(float));
    L.p = off; off = cu_align128(off + CU_ATT_FWD_BQ * (CU_ATT_FWD_BK + CU_ATT_PAD) * sizeof(floatX));
    L.o = off; off = cu_align128(off + CU_ATT_FWD_BQ * (hdp + 4) * sizeof(float));
    L.m = off; off = cu_align128(off + CU_ATT_FWD_BQ * sizeof(float));
    L.l = off; off = cu_align128(off + CU_ATT_FWD_BQ * sizeof(float));
    L.c = off; off = cu_align128(off + CU_ATT_FWD_BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_FWD_THREADS)
gk_attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int B, int T, int nh,
                     int nkv, int hd, int hdp, float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BQ = CU_ATT_FWD_BQ, BK = CU_ATT_FWD_BK;
    const int TPR = CU_ATT_FWD_THREADS / BQ;  // threads per row in the softmax step (power of 2)
    CuAttFwdLayout L = cu_att_fwd_layout(hdp);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    float* S = (float*)(cu_att_smem + L.s);
    floatX* P = (floatX*)(cu_att_smem + L.p);
    float* O = (float*)(cu_att_smem + L.o);
    float* rm = (float*)(cu_att_smem + L.m);
    float* rl = (float*)(cu_att_smem + L.l);
    float* rc = (float*)(cu_att_smem + L.c);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int ntq = (T + BQ - 1) / BQ;
    int qt = ntq - 1 - (int)blockIdx.x;  // the longest (last) query tiles start first
    int h = blockIdx.y, b = blockIdx.z;
    int hk = h / (nh / nkv);
    int q0 = qt * BQ;
    size_t qstride = (size_t)nh * hd, kstride = (size_t)nkv * hd;
    const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;

    cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
    for (int e = threadIdx.x; e < BQ * ldo; e += blockDim.x) O[e] = 0.0f;
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) { rm[r] = -INFINITY; rl[r] = 0.0f; rc[r] = 1.0f; }

    int last = min(q0 + BQ, T) - 1;
    int nkt = last / BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * BK;
        __syncthreads();  // the previous tile's products are done with Ks, Vs, P
        cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
        cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
        __syncthreads();
        cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);  // S = Q K^T
        __syncthreads();
        {   // online softmax, TPR threads per row
            int r = threadIdx.x / TPR, sub = threadIdx.x % TPR;
            int t = q0 + r;
            float mx = -INFINITY;
            for (int c = sub; c < BK; c += TPR)
                if (t < T && k0 + c <= t) mx = fmaxf(mx, S[r * lds + c] * scale);
            for (int o = TPR / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float m_old = rm[r], m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int c = sub; c < BK; c += TPR) {
                float p = 0.0f;
                if (t < T && k0 + c <= t) p = expf(S[r * lds + c] * scale - m_new);
                floatX pb = cu_from<floatX>(p);
                P[r * ldp + c] = pb;
                sum += cu_tof(pb);
            }
            for (int o = TPR / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            float corr = (m_new == -INFINITY) ? 1.0f : expf(m_old - m_new);
            __syncwarp();
            if (sub == 0) { rm[r] = m_new; rl[r] = rl[r] * corr + sum; rc[r] = corr; }
        }
        __syncthreads();
        if (kt > 0)
            for (int e = threadIdx.x; e < BQ * hdp; e += blockDim.x) O[(e / hdp) * ldo + e % hdp] *= rc[e / hdp];
        __syncthreads();
        cu_att_mma<true, true>(O, ldo, P, ldp, Vs, ldh, BQ, hdp, BK, true);  // O += P V
    }
    __syncthreads();
    floatX* obase = out + (size_t)b * T * qstride + (size_t)h * hd;
    for (int e = threadIdx.x; e < BQ * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, t = q0 + r;
        if (t < T) obase[(size_t)t * qstride + c] = cu_from<floatX>(O[r * ldo + c] / rl[r]);
    }
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
        int t = q0 + r;
        if (t < T) lse[((size_t)b * nh + h) * T + t] = rm[r] + logf(rl[r]);
    }
}

// D[b, h, t] = sum_d dO * O (one warp per row)
__global__ void gk_attention_D(float* D, const floatX* dout, const floatX* out, int B, int T, int nh, int hd) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b, t, h)
    int lane = threadIdx.x & 31;
    if (row >= (size_t)B * T * nh) return;
    const floatX* go = dout + row * hd;
    const floatX* o = out + row * hd;
    float s = 0.0f;
    for (int i = lane; i < hd; i += 32) s += cu_tof(go[i]) * cu_tof(o[i]);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    int h = (int)(row % nh);
    size_t bt = row / nh;
    int t = (int)(bt % T), b = (int)(bt / T);
    if (lane == 0) D[((size_t)b * nh + h) * T + t] = s;
}

struct CuAttKVLayout { size_t k, v, q, dO, s, dp, p, ds, dk, dv, l, d, total; };
__host__ __device__ inline CuAttKVLayout cu_att_kv_layout(int hdp) {
    CuAttKVLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    const int BK = CU_ATT_KV_BK, BQ = CU_ATT_KV_BQ;
    L.k = off; off = cu_align128(off + BK * ldh * sizeof(floatX));
    L.v = off; off = cu_align128(off + BK * ldh * sizeof(floatX));
    L.q = off; off = cu_align128(off + BQ * ldh * sizeof(floatX));
    L.dO = off; off = cu_align128(off + BQ * ldh * sizeof(floatX));
    L.s = off; off = cu_align128(off + BQ * (BK + 4) * sizeof(float));
    L.dp = off; off = cu_align128(off + BQ * (BK + 4) * sizeof(float));
    L.p = off; off = cu_align128(off + BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.ds = off; off = cu_align128(off + BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.dk = off; off = cu_align128(off + BK * (hdp + 4) * sizeof(float));
    L.dv = off; off = cu_align128(off + BK * (hdp + 4) * sizeof(float));
    L.l = off; off = cu_align128(off + BQ * sizeof(float));
    L.d = off; off = cu_align128(off + BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_BWD_THREADS)
gk_attention_backward_dkdv(floatX* dk, floatX* dv, const floatX* dout, const floatX* q, const floatX* k, const floatX* v,
                           const float* lse, const float* Dbuf, int B, int T, int nh, int nkv, int hd, int hdp,
                           float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BK = CU_ATT_KV_BK, BQ = CU_ATT_KV_BQ;
    CuAttKVLayout L = cu_att_kv_layout(hdp);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* dOs = (floatX*)(cu_att_smem + L.dO);
    float* S = (float*)(cu_att_smem + L.s);
    float* dP = (float*)(cu_att_smem + L.dp);
    floatX* P = (floatX*)(cu_att_smem + L.p);
    floatX* dS = (floatX*)(cu_att_smem + L.ds);
    float* dK = (float*)(cu_att_smem + L.dk);
    float* dV = (float*)(cu_att_smem + L.dv);
    float* Ls = (float*)(cu_att_smem + L.l);
    float* Ds = (float*)(cu_att_smem + L.d);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int kt = blockIdx.x;  // small k0 = most work: scheduled first
    int hk = blockIdx.y, b = blockIdx.z;
    int k0 = kt * BK;
    int group = nh / nkv;
    size_t qstride = (size_t)nh * hd, kstride = (size_t)nkv * hd;
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;
    cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
    cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
    for (int e = threadIdx.x; e < BK * ldo; e += blockDim.x) { dK[e] = 0.0f; dV[e] = 0.0f; }

    int ntq = (T + BQ - 1) / BQ;
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
        const floatX* dobase = dout + (size_t)b * T * qstride + (size_t)h * hd;
        const float* lrow = lse + ((size_t)b * nh + h) * T;
        const float* drow = Dbuf + ((size_t)b * nh + h) * T;
        for (int qt = k0 / BQ; qt < ntq; qt++) {  // query rows t >= k0 only
            int q0 = qt * BQ;
            __syncthreads();  // the previous products are done with Qs, dOs, P, dS
            cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
            cu_att_load_tile(dOs, ldh, dobase, qstride, q0, T, BQ, hd, hdp, vec);
            for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
                int t = q0 + r;
                Ls[r] = t < T ? lrow[t] : 0.0f;
                Ds[r] = t < T ? drow[t] : 0.0f;
            }
            __syncthreads();
            cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);    // S = Q K^T
            cu_att_mma<true, false>(dP, lds, dOs, ldh, Vs, ldh, BQ, BK, hdp, false);  // dP = dO V^T
            __syncthreads();
            for (int e = threadIdx.x; e < BQ * BK; e += blockDim.x) {
                int r = e / BK, c = e % BK, t = q0 + r, s = k0 + c;
                float p = 0.0f, ds = 0.0f;
                if (t < T && s <= t) {
                    p = expf(S[r * lds + c] * scale - Ls[r]);
                    ds = p * (dP[r * lds + c] - Ds[r]) * scale;
                }
                P[r * ldp + c] = cu_from<floatX>(p);
                dS[r * ldp + c] = cu_from<floatX>(ds);
            }
            __syncthreads();
            cu_att_mma<false, true>(dV, ldo, P, ldp, dOs, ldh, BK, hdp, BQ, true);  // dV += P^T dO
            cu_att_mma<false, true>(dK, ldo, dS, ldp, Qs, ldh, BK, hdp, BQ, true);  // dK += dS^T Q
        }
    }
    __syncthreads();
    floatX* dkbase = dk + (size_t)b * T * kstride + (size_t)hk * hd;
    floatX* dvbase = dv + (size_t)b * T * kstride + (size_t)hk * hd;
    for (int e = threadIdx.x; e < BK * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, s = k0 + r;
        if (s < T) {
            dkbase[(size_t)s * kstride + c] = cu_from<floatX>(dK[r * ldo + c]);
            dvbase[(size_t)s * kstride + c] = cu_from<floatX>(dV[r * ldo + c]);
        }
    }
}

struct CuAttQLayout { size_t q, dO, k, v, s, dp, ds, dq, l, d, total; };
__host__ __device__ inline CuAttQLayout cu_att_q_layout(int hdp) {
    CuAttQLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    const int BQ = CU_ATT_Q_BQ, BK = CU_ATT_Q_BK;
    L.q = off; off = cu_align128(off + BQ * ldh * sizeof(floatX));
    L.dO = off; off = cu_align128(off + BQ * ldh * sizeof(floatX));
    L.k = off; off = cu_align128(off + BK * ldh * sizeof(floatX));
    L.v = off; off = cu_align128(off + BK * ldh * sizeof(floatX));
    L.s = off; off = cu_align128(off + BQ * (BK + 4) * sizeof(float));
    L.dp = off; off = cu_align128(off + BQ * (BK + 4) * sizeof(float));
    L.ds = off; off = cu_align128(off + BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.dq = off; off = cu_align128(off + BQ * (hdp + 4) * sizeof(float));
    L.l = off; off = cu_align128(off + BQ * sizeof(float));
    L.d = off; off = cu_align128(off + BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_BWD_THREADS)
gk_attention_backward_dq(floatX* dq, const floatX* dout, const floatX* q, const floatX* k, const floatX* v,
                         const float* lse, const float* Dbuf, int B, int T, int nh, int nkv, int hd, int hdp,
                         float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BQ = CU_ATT_Q_BQ, BK = CU_ATT_Q_BK;
    CuAttQLayout L = cu_att_q_layout(hdp);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* dOs = (floatX*)(cu_att_smem + L.dO);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    float* S = (float*)(cu_att_smem + L.s);
    float* dP = (float*)(cu_att_smem + L.dp);
    floatX* dS = (floatX*)(cu_att_smem + L.ds);
    float* dQ = (float*)(cu_att_smem + L.dq);
    float* Ls = (float*)(cu_att_smem + L.l);
    float* Ds = (float*)(cu_att_smem + L.d);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int ntq = (T + BQ - 1) / BQ;
    int qt = ntq - 1 - (int)blockIdx.x;
    int h = blockIdx.y, b = blockIdx.z;
    int hk = h / (nh / nkv);
    int q0 = qt * BQ;
    size_t qstride = (size_t)nh * hd, kstride = (size_t)nkv * hd;
    const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
    const floatX* dobase = dout + (size_t)b * T * qstride + (size_t)h * hd;
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;
    cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
    cu_att_load_tile(dOs, ldh, dobase, qstride, q0, T, BQ, hd, hdp, vec);
    for (int e = threadIdx.x; e < BQ * ldo; e += blockDim.x) dQ[e] = 0.0f;
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
        int t = q0 + r;
        Ls[r] = t < T ? lse[((size_t)b * nh + h) * T + t] : 0.0f;
        Ds[r] = t < T ? Dbuf[((size_t)b * nh + h) * T + t] : 0.0f;
    }
    int last = min(q0 + BQ, T) - 1;
    int nkt = last / BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * BK;
        __syncthreads();
        cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
        cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
        __syncthreads();
        cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);    // S = Q K^T
        cu_att_mma<true, false>(dP, lds, dOs, ldh, Vs, ldh, BQ, BK, hdp, false);  // dP = dO V^T
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * BK; e += blockDim.x) {
            int r = e / BK, c = e % BK, t = q0 + r, s = k0 + c;
            float ds = 0.0f;
            if (t < T && s <= t) {
                float p = expf(S[r * lds + c] * scale - Ls[r]);
                ds = p * (dP[r * lds + c] - Ds[r]) * scale;
            }
            dS[r * ldp + c] = cu_from<floatX>(ds);
        }
        __syncthreads();
        cu_att_mma<true, true>(dQ, ldo, dS, ldp, Ks, ldh, BQ, hdp, BK, true);  // dQ += dS K
    }
    __syncthreads();
    floatX* dqbase = dq + (size_t)b * T * qstride + (size_t)h * hd;
    for (int e = threadIdx.x; e < BQ * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, t = q0 + r;
        if (t < T) dqbase[(size_t)t * qstride + c] = cu_from<floatX>(dQ[r * ldo + c]);
    }
}

// raises a kernel's dynamic shared memory limit once; fatal with the numbers if it cannot fit
static void cu_smem_optin(const void* kernel, size_t bytes, int* done_bytes, const char* name, int hd) {
    if ((int)bytes > g_cu.max_smem_optin)
        fatal("attention kernel %s needs %zu bytes of shared memory for head_dim %d, but this GPU allows %d per block; "
              "head_dim up to 128 is supported", name, bytes, hd, g_cu.max_smem_optin);
    if ((int)bytes > *done_bytes) {
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *done_bytes = (int)bytes;
    }
}

static int cu_att_vec(const void* a, const void* b, const void* c, int hd) {
    return (hd % CU_VEC == 0) && cu_is_aligned16(a) && cu_is_aligned16(b) && cu_is_aligned16(c);
}

void attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int B, int T, int nh,
                       int nkv, int hd) {
    if (B <= 0 || T <= 0) return;
    if (nkv <= 0 || nh % nkv != 0) fatal("attention_forward: n_heads %d is not a multiple of n_kv_heads %d", nh, nkv);
    int hdp = (hd + 15) / 16 * 16;
    static int done = 0;
    CuAttFwdLayout L = cu_att_fwd_layout(hdp);
    cu_smem_optin((const void*)gk_attention_forward, L.total, &done, "forward", hd);
    dim3 grid((T + CU_ATT_FWD_BQ - 1) / CU_ATT_FWD_BQ, nh, B);
    gk_attention_forward<<<grid, CU_ATT_FWD_THREADS, L.total, g_cu.stream>>>(out, lse, q, k, v, B, T, nh, nkv, hd, hdp,
                                                                             1.0f / sqrtf((float)hd), cu_att_vec(q, k, v, hd));
    CU_LAUNCHED("gk_attention_forward");
}

void attention_backward(floatX* dq, floatX* dk, floatX* dv, const floatX* dout, const floatX* out, const floatX* q,
                        const floatX* k, const floatX* v, const float* lse, int B, int T, int nh, int nkv, int hd) {
    if (B <= 0 || T <= 0) return;
    if (nkv <= 0 || nh % nkv != 0) fatal("attention_backward: n_heads %d is not a multiple of n_kv_heads %d", nh, nkv);
    int hdp = (hd + 15) / 16 * 16;
    float scale = 1.0f / sqrtf((float)hd);
    size_t rows = (size_t)B * T * nh;
    float* D = (float*)cu_scratch(&g_cu.sc_att, rows * sizeof(float), "attention backward scratch");
    gk_attention_D<<<cu_ceil_div(rows, 8), 256, 0, g_cu.stream>>>(D, dout, out, B, T, nh, hd);
    CU_LAUNCHED("gk_attention_D");
    int vec = cu_att_vec(q, k, v, hd) && cu_is_aligned16(dout);
    static int done_kv = 0, done_q = 0;
    CuAttKVLayout LK = cu_att_kv_layout(hdp);
    cu_smem_optin((const void*)gk_attention_backward_dkdv, LK.total, &done_kv, "backward dK/dV", hd);
    dim3 gkv((T + CU_ATT_KV_BK - 1) / CU_ATT_KV_BK, nkv, B);
    gk_attention_backward_dkdv<<<gkv, CU_ATT_BWD_THREADS, LK.total, g_cu.stream>>>(dk, dv, dout, q, k, v, lse, D, B, T, nh,
                                                                                   nkv, hd, hdp, scale, vec);
    CU_LAUNCHED("gk_attention_backward_dkdv");
    CuAttQLayout LQ = cu_att_q_layout(hdp);
    cu_smem_optin((const void*)gk_attention_backward_dq, LQ.total, &done_q, "backward dQ", hd);
    dim3 gq((T + CU_ATT_Q_BQ - 1) / CU_ATT_Q_BQ, nh, B);
    gk_attention_backward_dq<<<gq, CU_ATT_BWD_THREADS, LQ.total, g_cu.stream>>>(dq, dout, q, k, v, lse, D, B, T, nh, nkv,
                                                                               hd, hdp, scale, vec);
    CU_LAUNCHED("gk_attention_backward_dq");
}

// ---- collectives --------------------------------------------------------------------------------


void allreduce_sum_float(float* x, size_t n) {
    if (g_cu.world <= 1 || n == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        ncclCheck(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.stream));  // count in elements
        return;
    }
#endif
#ifdef USE_MPI
    float* h = cu_host_stage(n);  // host-staged fallback: slow but correct
    backend_download(h, x, n * sizeof(float));
    mpi_allreduce_floats(h, n);
    backend_upload(x, h, n * sizeof(float));
#else
    (void)x;
#endif
}

void allreduce_sum_floatX(floatX* x, size_t n) {
    if (g_cu.world <= 1 || n == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
#ifdef ENABLE_FP32
        ncclCheck(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.stream));
#else
        ncclCheck(ncclAllReduce(x, x, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.stream));
#endif
        return;
    }
#endif
#ifdef USE_MPI
    // host-staged fallback: floatX -> fp32 on the host, sum, round back
    float* h = (float*)malloc_check(n * sizeof(float));
    backend_download_floats(h, x, n);
    mpi_allreduce_floats(h, n);
    backend_upload_floats(x, h, n);
    free(h);
#else
    (void)x;
#endif
}

#ifdef ENABLE_FP32
#define CU_NCCL_FLOATX ncclFloat
#else
#define CU_NCCL_FLOATX ncclBfloat16
#endif

// ZeRO-1: in place over world x shard elements (see backend.h)
void reducescatter_sum_floatX(floatX* x, size_t shard) {
    if (g_cu.world <= 1 || shard == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {  // in-place form: recvbuff = sendbuff + rank * recvcount
        ncclCheck(ncclReduceScatter(x, x + (size_t)g_cu.rank * shard, shard, CU_NCCL_FLOATX, ncclSum, g_cu.nccl, g_cu.stream));
        return;
    }
#endif
    allreduce_sum_floatX(x, shard * g_cu.world);  // host-staged fallback: sum everything (correct)
}
void allgather_floatX(floatX* x, size_t shard) {
    if (g_cu.world <= 1 || shard == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {  // in-place form: sendbuff = recvbuff + rank * sendcount
        ncclCheck(ncclAllGather(x + (size_t)g_cu.rank * shard, x, shard, CU_NCCL_FLOATX, g_cu.nccl, g_cu.stream));
        return;
    }
#endif
#ifdef USE_MPI
    // host-staged fallback: each block broadcast from its owner (bytes, so floatX passes unchanged)
    size_t bytes = shard * sizeof(floatX);
    char* h = (char*)malloc_check(bytes);
    for (int r = 0; r < g_cu.world; r++) {
        if (r == g_cu.rank) backend_download(h, x + (size_t)r * shard, bytes);
        for (size_t off = 0; off < bytes; off += (size_t)1 << 30) {
            int cnt = (int)(bytes - off < ((size_t)1 << 30) ? bytes - off : ((size_t)1 << 30));
            int rc = MPI_Bcast(h + off, cnt, MPI_BYTE, r, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) fatal("MPI_Bcast of %d bytes failed (code %d)", cnt, rc);
        }
        if (r != g_cu.rank) backend_upload(x + (size_t)r * shard, h, bytes);
    }
    free(h);
#else
    (void)x;
#endif
}

__global__ void gk_float_to_x(floatX* dst, const float* src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = cu_from<floatX>(src[i]);
}
__global__ void gk_x_to_float(float* dst, const floatX* src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = cu_tof(src[i]);
}

void backend_widen(float* dst, const floatX* src, size_t n) {
    if (n == 0) return;
    gk_x_to_float<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(dst, src, n);
    CU_LAUNCHED("gk_x_to_float");
}

// fp32 values summed over ranks with floatX on the wire: round to floatX (nearest even) in a
// scratch buffer, all-reduce that, widen back. The fp32 build and the MPI fallback sum in fp32.
void allreduce_sum_float_wire_floatX(float* x, size_t n) {
    if (g_cu.world <= 1 || n == 0) return;
#if defined(USE_NCCL) && !defined(ENABLE_FP32)
    if (g_cu.use_nccl) {
        floatX* wire = (floatX*)cu_scratch(&g_cu.sc_wire, n * sizeof(floatX), "all-reduce wire buffer");
        gk_float_to_x<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(wire, x, n);
        CU_LAUNCHED("gk_float_to_x");
        ncclCheck(ncclAllReduce(wire, wire, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.stream));
        backend_widen(x, wire, n);
        return;
    }
#endif
    allreduce_sum_float(x, n);
}

// ---- asynchronous all-reduce ------------------------------------------------------------------
static void cu_comm_launched(const char* kernel) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && g_cu.sync_debug) e = cudaStreamSynchronize(g_cu.comm_stream);
    if (e != cudaSuccess)
        fatal("kernel %s on the communication stream failed: %s (%s)", kernel, cudaGetErrorString(e), cudaGetErrorName(e));
}

void allreduce_async_reserve(size_t max_floats) {
    if (g_cu.world <= 1 || !g_cu.use_nccl || max_floats <= g_cu.async_cap) return;
    for (int s = 0; s < ALLREDUCE_LAYER_SLOTS; s++) {
        if (g_cu.async_pending[s]) fatal("allreduce_async_reserve while group %d is in flight", s);
        if (g_cu.async_wire[s]) backend_free(g_cu.async_wire[s]);
        g_cu.async_wire[s] = (floatX*)backend_malloc(max_floats * sizeof(floatX), "asynchronous all-reduce wire buffer");
    }
    g_cu.async_cap = max_floats;
}

// the communication stream's part of an asynchronous all-reduce: it first waits for everything
// queued so far on the compute stream (which wrote the values), and afterwards marks the group
static void cu_comm_begin(void) {
    cudaCheck(cudaEventRecord(g_cu.ev_ready, g_cu.stream));
    cudaCheck(cudaStreamWaitEvent(g_cu.comm_stream, g_cu.ev_ready, 0));
}
static void cu_comm_end(int slot) {
    cudaCheck(cudaEventRecord(g_cu.ev_done[slot], g_cu.comm_stream));
    g_cu.async_pending[slot] = 1;
}

// the checks every asynchronous all-reduce starts with; 0: nothing to send (one rank, or n = 0)
static int cu_async_needed(int slot, size_t n) {
    if (slot < 0 || slot >= ALLREDUCE_SLOTS) fatal("allreduce_start: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
    return g_cu.world > 1 && n > 0;
}

void allreduce_start_float_wire_floatX(float* x, size_t n, int slot) {
    if (!cu_async_needed(slot, n)) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        cu_comm_begin();
#ifdef ENABLE_FP32
        ncclCheck(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.comm_stream));
#else
        if (g_cu.async_used[slot] + n > g_cu.async_cap)
            fatal("allreduce_start: %zu floats in flight in group %d exceed the %zu reserved (allreduce_async_reserve)",
                  g_cu.async_used[slot] + n, slot, g_cu.async_cap);
        floatX* wire = g_cu.async_wire[slot] + g_cu.async_used[slot];
        g_cu.async_used[slot] += n;
        gk_float_to_x<<<cu_grid_for(n, 256), 256, 0, g_cu.comm_stream>>>(wire, x, n);
        cu_comm_launched("gk_float_to_x");
        ncclCheck(ncclAllReduce(wire, wire, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.comm_stream));
        gk_x_to_float<<<cu_grid_for(n, 256), 256, 0, g_cu.comm_stream>>>(x, wire, n);
        cu_comm_launched("gk_x_to_float");
#endif
        cu_comm_end(slot);
        return;
    }
#endif
    allreduce_sum_float_wire_floatX(x, n);  // host-staged MPI fallback: blocking
}

void allreduce_start_floatX(floatX* x, size_t n, int slot) {
    if (!cu_async_needed(slot, n)) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        cu_comm_begin();
        ncclCheck(ncclAllReduce(x, x, n, CU_NCCL_FLOATX, ncclSum, g_cu.nccl, g_cu.comm_stream));
        cu_comm_end(slot);
        return;
    }
#endif
    allreduce_sum_floatX(x, n);  // host-staged MPI fallback: blocking
}

void allreduce_wait(int slot) {
    if (slot < 0 || slot >= ALLREDUCE_SLOTS) fatal("allreduce_wait: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
    if (!g_cu.async_pending[slot]) return;
    // the compute stream (not the host) waits for the group's last reduction
    cudaCheck(cudaStreamWaitEvent(g_cu.stream, g_cu.ev_done[slot], 0));
    g_cu.async_pending[slot] = 0;
    g_cu.async_used[slot] = 0;
}

// ---- lifecycle ----------------------------------------------------------------------------------

void backend_init(int local_rank) {
    if (g_cu.initialized) return;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        fprintf(stderr, "error: no usable CUDA GPU (%s)\n  hint: %s; the CPU build (make train_llama_cpu) runs without one\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0", cu_error_hint(e != cudaSuccess ? e : cudaErrorNoDevice));
        exit(1);
    }
    g_cu.device = local_rank % count;
    if (local_rank >= count)
        fprintf(stderr, "warning: local rank %d shares GPU %d (only %d visible); NCCL needs one GPU per rank\n", local_rank,
                g_cu.device, count);
    cudaCheck(cudaSetDevice(g_cu.device));
    cudaCheck(cudaGetDeviceProperties(&g_cu.prop, g_cu.device));
#ifndef ENABLE_FP32
    if (g_cu.prop.major < 8)
        fatal("GPU %s has compute capability %d.%d; the bf16 build needs 8.0 or newer (A100, H100, ...); "
              "build the fp32 version with make train_llama_fp32", g_cu.prop.name, g_cu.prop.major, g_cu.prop.minor);
#endif
    cudaCheck(cudaDeviceGetAttribute(&g_cu.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, g_cu.device));
    const char* sd = getenv("GRASS_CUDA_SYNC");
    g_cu.sync_debug = sd != NULL && atoi(sd) != 0;
    cudaCheck(cudaStreamCreate(&g_cu.stream));
    cudaCheck(cudaStreamCreate(&g_cu.comm_stream));
    cudaCheck(cudaEventCreateWithFlags(&g_cu.ev_ready, cudaEventDisableTiming));
    for (int s = 0; s < ALLREDUCE_SLOTS; s++) cudaCheck(cudaEventCreateWithFlags(&g_cu.ev_done[s], cudaEventDisableTiming));
    g_cu.plans = new std::vector<CuGemmPlan>();
    g_cu.plans->reserve(256);
    g_cu.allocs = new std::map<uintptr_t, size_t>();
    g_cu.initialized = 1;
    cublasCheck(cublasCreate(&g_cu.cublas));
    cublasCheck(cublasSetStream(g_cu.cublas, g_cu.stream));
    cublasCheck(cublasLtCreate(&g_cu.lt));
    g_cu.lt_workspace_bytes = (size_t)32 << 20;
    g_cu.lt_workspace = backend_malloc(g_cu.lt_workspace_bytes, "cuBLASLt workspace");
    snprintf(g_cu.name, sizeof(g_cu.name), "cuda (%.200s, %s, sm_%d%d)", g_cu.prop.name, FLOATX_NAME, g_cu.prop.major,
             g_cu.prop.minor);

    g_cu.world = 1; g_cu.rank = 0; g_cu.use_nccl = 0;
#ifdef USE_MPI
    int mpi_on = 0;
    MPI_Initialized(&mpi_on);
    if (mpi_on) {
        MPI_Comm_size(MPI_COMM_WORLD, &g_cu.world);
        MPI_Comm_rank(MPI_COMM_WORLD, &g_cu.rank);
    }
    if (g_cu.world > 1) {
        const char* no = getenv("GRASS_NO_NCCL");
#ifdef USE_NCCL
        if (no == NULL || atoi(no) == 0) {
            ncclUniqueId id;
            if (g_cu.rank == 0) ncclCheck(ncclGetUniqueId(&id));
            int rc = MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) fatal("MPI_Bcast of the NCCL id failed (code %d)", rc);
            ncclCheck(ncclCommInitRank(&g_cu.nccl, g_cu.world, id, g_cu.rank));
            g_cu.use_nccl = 1;
        }
#else
        (void)no;
#endif
        if (!g_cu.use_nccl && g_cu.rank == 0)
            fprintf(stderr, "warning: %d ranks without NCCL: all-reduces go through host memory and MPI (slow)\n", g_cu.world);
    }
#endif
    size_t fr = 0, tot = 0;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    if (g_cu.rank == 0 || g_cu.world == 1) {
        printf("cuda: device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB (%.1f GiB free), %s build%s\n",
               g_cu.device, g_cu.prop.name, g_cu.prop.major, g_cu.prop.minor, g_cu.prop.multiProcessorCount,
               cu_gib(tot), cu_gib(fr), FLOATX_NAME,
               g_cu.world > 1 ? (g_cu.use_nccl ? ", NCCL all-reduce" : ", MPI host all-reduce") : "");
        fflush(stdout);
    }
}

// the scratch buffers above at the sizes a step asks for (each grows by a quarter when it grows)
size_t backend_workspace_bytes(const WorkspaceSizes* w) {
    double grow = 1.25;
    double b = (double)g_cu.lt_workspace_bytes;                                  // cuBLASLt workspace
    b += grow * (4.0 * w->N * sizeof(int) + 8.0 * w->N + (1 << 20));            // embedding sort
    b += grow * ((w->N + CU_RMS_ROWS - 1) / CU_RMS_ROWS) * (double)w->d * sizeof(float);  // RMSNorm dw partials
    b += CU_SUMSQ_MAXBLOCKS * sizeof(float);
    b += grow * (double)w->att_rows * sizeof(float);                             // attention D
    b += grow * (double)w->gather * sizeof(floatX);                              // Grass gather
    double nb = (double)(w->norm_block < CU_NORM_BUDGET_FLOATS ? w->norm_block : CU_NORM_BUDGET_FLOATS);
    b += grow * nb * sizeof(float);                                              // Grass norm pass
    b += grow * (double)w->wire * sizeof(floatX);                                // all-reduce wire buffer
    if (w->select_dim > 0) b += grow * (56.0 * w->select_dim + (2 << 20));      // device selection
    return (size_t)b;
}

#endif // GRASS_BACKEND_CUDA_CUH
