/*
 * cuda/common.cuh: what every part of the CUDA backend uses (backend_cuda.cuh lists the parts):
 *   - the system, CUDA runtime, bf16, cuBLAS/cuBLASLt, WMMA, CUB, MPI and NCCL includes;
 *   - checked calls: cudaCheck, cublasCheck, ncclCheck, and CU_LAUNCHED after every launch;
 *   - the global state g_cu (CuState: device, streams, cuBLAS(Lt) handles and the GEMM plan
 *     cache, allocation accounting, scratch buffers, ranks and communicator), cu_require_init;
 *   - launch helpers: cu_is_aligned16, cu_ceil_div, cu_grid_for (a grid-stride kernel's grid);
 *   - memory: backend_malloc/free/memset0/copy/upload/download, backend_upload_floats and
 *     backend_download_floats, backend_synchronize, backend_memory_free/peak,
 *     backend_peak_flops, backend_name; cu_scratch (grow-only scratch), cu_host_stage;
 *   - device helpers: cu_tof / cu_from (floatX <-> fp32), CuPack and CU_VEC (16-byte packs),
 *     cu_load_pack / cu_store_pack, the stochastic rounding (cu_rand_at, cu_round_sr), and
 *     cu_block_sum.
 * Needs no other cuda/ header; includes utils.h, comm.h and backend.h.
 */
#ifndef GRASS_CUDA_COMMON_CUH
#define GRASS_CUDA_COMMON_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <float.h>
#include <map>
#include <vector>
#include <unordered_map>
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
#include "rng.h"        // splitmix64: the selection's draws and the update seeds, as on the host
#include "comm.h"
#include "backend.h"

// ---- checked calls ------------------------------------------------------------------------------

static const char* cu_error_hint(cudaError_t e) {
    switch (e) {
        case cudaErrorMemoryAllocation:
            return "out of GPU memory: reduce -b/--batch or -t/--seq, or use --optimizer grass with a smaller --rank";
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorInvalidDeviceFunction:
            return "this binary has no code for this GPU's architecture: rebuild with GPU_ARCH=sm_XX (e.g. make "
                   "GPU_ARCH=sm_90)";
        case cudaErrorInsufficientDriver:
            return "the NVIDIA driver is older than the CUDA runtime this was built with: update the driver or build "
                   "with an older CUDA";
        case cudaErrorNoDevice:
            return "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
            return "a kernel accessed memory out of bounds: rerun with GRASS_CUDA_SYNC=1 to find it, or under "
                   "compute-sanitizer";
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
    const char* hint = s == CUBLAS_STATUS_NOT_SUPPORTED
                     ? "this GEMM shape/type combination is not supported by cuBLAS(Lt)"
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
            "rerun with NCCL_DEBUG=INFO; one GPU per rank is required (set GRASS_NO_NCCL=1 to fall back to MPI on the "
            "host)");
    fflush(stderr);
    exit(1);
}
#define ncclCheck(call) nccl_check_((call), #call, __FILE__, __LINE__)
// a collective: checked, and timed by the watchdog (comm_watchdog.h; the emulator's NCCL waits
// inside the call, the hardware's in the stream, which cu_stream_wait times)
#define ncclCollective(call) do { watchdog_begin("NCCL: " #call); ncclCheck(call); watchdog_end(); } while (0)
#endif

// ---- global state ------------------------------------------------------------------------------

struct CuGemmKey {  // what a cuBLASLt plan depends on: shape, transposes, types, alignments
    int opA, opB, m, n, k, lda, ldb, ldc, ta, tb, tc, alA, alB, alC;
    bool operator==(const CuGemmKey& o) const { return memcmp(this, &o, sizeof(CuGemmKey)) == 0; }
};
struct CuGemmKeyHash {
    size_t operator()(const CuGemmKey& k) const {  // FNV-1a over the 14 ints
        uint64_t h = 1469598103934665603ULL;
        const unsigned char* b = (const unsigned char*)&k;
        for (size_t i = 0; i < sizeof(k); i++) { h ^= b[i]; h *= 1099511628211ULL; }
        return (size_t)h;
    }
};
struct CuGemmPlan {  // one cached cuBLASLt problem
    CuGemmKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int have_algo;
    uint64_t last_use;  // for evicting the least recently used plan when the cache is full
};
// The plan cache holds at most this many plans (GRASS_CUDA_PLAN_CACHE overrides it): Grass's
// gathered GEMMs take a new shape whenever a refresh changes a matrix's distinct-row count, so
// an unbounded cache grows with every refresh of a long run
#define CU_PLAN_CACHE_DEFAULT 4096

struct CuScratch { void* p; size_t bytes; };

// staging slots of backend_upload_async. The trainer uploads once per micro-step and reads the
// step's loss at its end (the one sync), so with up to 8 micro-steps a slot is never still being
// read when it comes round again; with more, the host waits at most until the device has read
// the tokens of 8 micro-steps before (back-pressure, not a round trip)
#define CU_UPLOAD_SLOTS 8
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
    std::unordered_map<CuGemmKey, size_t, CuGemmKeyHash>* plan_index;  // key -> position in plans
    size_t plan_cache_max;
    uint64_t plan_clock;
    std::map<uintptr_t, size_t>* allocs;  // base address -> bytes (accounting)
    size_t bytes_now, bytes_peak;
    int sync_debug;                       // GRASS_CUDA_SYNC=1: synchronize after every launch
    int max_smem_optin;
    int attention_cudnn;                  // --attention cudnn (cuda/attention_cudnn.cuh; GRASS_CUDNN builds)
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
    // backend_upload_async: pinned staging buffers used in turn, each with the event of its last
    // copy, so that a slot is rewritten only once the device has read it
    void* up_host[CU_UPLOAD_SLOTS];
    size_t up_cap[CU_UPLOAD_SLOTS];
    cudaEvent_t up_ev[CU_UPLOAD_SLOTS];
    int up_used[CU_UPLOAD_SLOTS];
    int up_next;
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
// AdamParams' factor on the gradient: the backend float clip_factor wrote when it is set, else the value
__device__ __forceinline__ float cu_grad_scale(const AdamParams& a) {
    return a.grad_scale_dev != NULL ? *a.grad_scale_dev : a.grad_scale;
}
static inline unsigned cu_ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// grid of a grid-stride kernel: enough blocks of `threads` for the work, at most 32 per SM
static unsigned cu_grid_for(size_t work, int threads) {
    size_t g = (work + threads - 1) / threads;
    size_t cap = (size_t)(g_cu.prop.multiProcessorCount > 0 ? g_cu.prop.multiProcessorCount : 80) * 32;
    if (g > cap) g = cap;
    return (unsigned)(g > 0 ? g : 1);
}

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
// a host wait on a stream; with several ranks the stream may hold NCCL work waiting on a peer, so the
// wait is timed (comm_watchdog.h: a no-op on one rank)
static void cu_stream_wait(cudaStream_t s) {
    watchdog_begin("a host wait on the GPU stream (cudaStreamSynchronize; NCCL work may be queued)");
    cudaCheck(cudaStreamSynchronize(s));
    watchdog_end();
}
void backend_upload(void* dst, const void* host_src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, g_cu.stream));
    cu_stream_wait(g_cu.stream);  // the host buffer may be reused at once
}
void backend_upload_async(void* dst, const void* host_src, size_t bytes) {
    if (bytes == 0) return;
    int s = g_cu.up_next;
    g_cu.up_next = (s + 1) % CU_UPLOAD_SLOTS;
    if (g_cu.up_used[s]) {  // the slot's last copy must have left it; normally long done, so no wait
        cudaError_t q = cudaEventQuery(g_cu.up_ev[s]);
        if (q == cudaErrorNotReady) cudaCheck(cudaEventSynchronize(g_cu.up_ev[s]));
        else cudaCheck(q);
    } else {
        cudaCheck(cudaEventCreateWithFlags(&g_cu.up_ev[s], cudaEventDisableTiming));
    }
    if (bytes > g_cu.up_cap[s]) {  // the first uploads only: the sizes repeat every step
        if (g_cu.up_host[s] != NULL) cudaCheck(cudaFreeHost(g_cu.up_host[s]));
        cudaError_t e = cudaMallocHost(&g_cu.up_host[s], bytes);
        if (e != cudaSuccess)
            fatal("cudaMallocHost of %zu bytes (pinned upload staging) failed: %s", bytes, cudaGetErrorString(e));
        g_cu.up_cap[s] = bytes;
    }
    memcpy(g_cu.up_host[s], host_src, bytes);
    cudaCheck(cudaMemcpyAsync(dst, g_cu.up_host[s], bytes, cudaMemcpyHostToDevice, g_cu.stream));
    cudaCheck(cudaEventRecord(g_cu.up_ev[s], g_cu.stream));
    g_cu.up_used[s] = 1;
}
void backend_download(void* host_dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, g_cu.stream));
    cu_stream_wait(g_cu.stream);
}

static const size_t CU_CONVERT_CHUNK = (size_t)1 << 22;

void backend_upload_floats(floatX* dst, const float* src, size_t n) {
#ifdef ENABLE_FP32
    backend_upload(dst, src, n * sizeof(float));
#else
    __nv_bfloat16* buf = (__nv_bfloat16*)cu_host_stage(CU_CONVERT_CHUNK);
    for (size_t off = 0; off < n; off += CU_CONVERT_CHUNK) {
        size_t c = n - off < CU_CONVERT_CHUNK ? n - off : CU_CONVERT_CHUNK;
        #pragma omp parallel for schedule(static)  // a checkpoint's 13e9 values: on every core
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
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < c; i++) dst[off + i] = __bfloat162float(buf[i]);
    }
#endif
}

void backend_synchronize(void) {
    cu_stream_wait(g_cu.stream);
    if (g_cu.comm_stream) cu_stream_wait(g_cu.comm_stream);
    cudaCheck(cudaGetLastError());
}
size_t backend_memory_free(void) {
    size_t fr = 0, tot = 0;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    return fr;
}
size_t backend_memory_peak(void) { return g_cu.bytes_peak; }
// ffn padded to 64 elements: every MLP GEMM's leading dimension a multiple of 128 bytes (bf16),
// where cuBLASLt's fast Hopper kernels need 16 (1b's ffn 5461 becomes 5504)
int backend_ffn_align(void) { return 64; }
int backend_grass_row_align(void) { return 16; }  // 16 rows: 32-byte bf16 and 64-byte fp32 leading dimensions

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

#endif // GRASS_CUDA_COMMON_CUH
