/*
 * cuda_emu.h: runs the CUDA build's kernels on the CPU, so that backend_cuda.cuh can be tested
 * where no GPU is (see tests/cuda_emu/README.md). The build force-includes this header
 * (g++ -include) into sources that tests/cuda_emu/rewrite.py has copied with every
 * kernel<<<grid, block, smem, stream>>>(args) turned into an emulated launch.
 *
 * What it provides:
 *   - the real CUDA headers for types (cuda_runtime.h, cuda_bf16.h, cublasLt.h, nccl.h), and
 *     CPU definitions of the runtime, cuBLAS, cuBLASLt and NCCL calls the program makes;
 *   - threadIdx/blockIdx/blockDim/gridDim, __syncthreads, __syncwarp and the warp shuffles,
 *     with every thread a fiber (emu_fiber.h), shared memory per block;
 *   - nvcuda::wmma (include/mma.h) and cub::DeviceRadixSort (include/cub/cub.cuh).
 * Device memory is host memory from malloc. Each allocation is filled with 0xFF bytes (NaN in
 * bf16 and fp32), so that reading memory nobody wrote shows up as NaN; copies and memsets are
 * checked to stay inside one allocation and to go in the direction their kind says.
 * Not emulated: timing, concurrency between streams (everything runs at once, in order),
 * memory faults inside kernels (a wild pointer reads host memory; run the emulated tests
 * under valgrind for that), tensor-core rounding (WMMA accumulates in fp32 in k order).
 */
#ifndef GRASS_CUDA_EMU_H
#define GRASS_CUDA_EMU_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <map>
#include <string>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cusolverDn.h>
#ifdef USE_NCCL
#include <nccl.h>
#endif
#ifdef USE_MPI
#include <mpi.h>
#endif
#include <cblas.h>
#include "emu_fiber.h"

#define GRASS_CUDA_EMU 1

// ---- the CUDA C++ language on the host -----------------------------------------------------------
// __global__/__device__/__host__ already expand to nothing for a host compiler; shared memory
// becomes a static (blocks run one at a time, so one copy per variable is one per block).
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

inline dim3 blockIdx, blockDim, gridDim;
inline uint3 emu_thread_idx() {
    const emu::Fiber& f = emu::current("threadIdx");
    uint3 r;
    r.x = f.tx; r.y = f.ty; r.z = f.tz;
    return r;
}
#define threadIdx (emu_thread_idx())
static const int warpSize = 32;

inline void __syncthreads() { emu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_barrier(mask, "__syncwarp"); }

// shuffles: each lane posts its value, the warp meets, each lane reads its source lane's value,
// the warp meets again (so the slots can be reused)
template <typename T>
inline T emu_shfl(unsigned mask, T v, int src_lane, const char* what) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    emu::Fiber& f = emu::current(what);
    emu::Block& b = emu::g_sched.blk;
    memcpy(&b.wslot[f.linear], &v, sizeof(T));
    emu::warp_barrier(mask, what);
    T r = v;
    if (src_lane >= 0 && src_lane < 32 && (mask >> src_lane & 1u)) memcpy(&r, &b.wslot[f.warp * 32 + src_lane], sizeof(T));
    emu::warp_barrier(mask, what);
    return r;
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = emu::current("__shfl_xor_sync").lane;
    int src = lane ^ lane_mask;
    if ((src / width) != (lane / width)) src = lane;
    return emu_shfl(mask, v, src, "__shfl_xor_sync");
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::current("__shfl_down_sync").lane;
    int src = lane + (int)delta;
    if ((src / width) != (lane / width)) src = lane;
    return emu_shfl(mask, v, src, "__shfl_down_sync");
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = emu::current("__shfl_up_sync").lane;
    int src = lane - (int)delta;
    if (src < 0 || (src / width) != (lane / width)) src = lane;
    return emu_shfl(mask, v, src, "__shfl_up_sync");
}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    int lane = emu::current("__shfl_sync").lane;
    int src = (lane / width) * width + (src_lane % width);
    return emu_shfl(mask, v, src, "__shfl_sync");
}

inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline int __float_as_int(float x) { int u; memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int u) { float x; memcpy(&x, &u, 4); return x; }
template <typename T> inline T __ldg(const T* p) { return *p; }
#ifndef min
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
#endif

// ---- kernel launches ----------------------------------------------------------------------------

namespace emu {

struct Runtime {
    cudaError_t last_error;                // sticky until cudaGetLastError
    std::map<uintptr_t, size_t> allocs;    // device allocations
    std::map<uintptr_t, size_t> paged;     // those made page-aligned and page-padded (GRASS_EMU_BYTES)
    size_t bytes_now;
    std::map<uintptr_t, size_t> pinned;    // cudaMallocHost allocations (host memory)
    std::map<const void*, int> max_dyn_smem;  // cudaFuncSetAttribute
    std::vector<unsigned char> dyn_smem;
    long long launches;
};
inline Runtime g_rt;

// ---- counts (GRASS_EMU_COUNTS=FILE: written at exit; dev/perf_counts.py reads them) ------------
// What a GPU run would do, counted where the program calls the CUDA API: kernel launches by
// name, host synchronizations, device allocations and frees, copies, and every GEMM with its
// shape and whether cuBLASLt's fast kernels could take it (16-byte aligned pointers and leading
// dimensions). Timing is not emulated; these are counts.
struct GemmKey {
    int m, n, k, ta, tb, tc;
    long long lda, ldb, ldd;
    int aligned;
    bool operator<(const GemmKey& o) const {
        return memcmp(this, &o, sizeof(GemmKey)) < 0;
    }
};
struct Counts {
    std::map<std::string, long long> kernels;   // launches per kernel name
    std::map<GemmKey, long long> gemms;         // GEMM calls per shape
    long long syncs = 0;           // cudaStreamSynchronize / cudaDeviceSynchronize / cudaEventSynchronize / blocking cudaMemcpy
    long long mallocs = 0, frees = 0;
    long long copies_d2h = 0, copies_h2d = 0, copies_d2d = 0, memsets = 0;
    long long bytes_d2h = 0, bytes_h2d = 0;
    long long copies_h2d_pageable = 0;  // asynchronous H2D copies from memory not from cudaMallocHost
                                        // (a GPU stages those through a driver buffer: not asynchronous)
    long long host_allocs = 0;          // cudaMallocHost
    long long collectives = 0, collective_bytes = 0, solver_calls = 0;
    // GRASS_EMU_BYTES=1: per kernel name, the device bytes its launches read and wrote, measured
    // as the distinct 4 KiB pages each launch touched (trace_begin / trace_end, below)
    std::map<std::string, std::pair<long long, long long>> kernel_bytes;
};
inline Counts g_counts;
inline void counts_write(void) {
    const char* path = getenv("GRASS_EMU_COUNTS");
    if (path == NULL || path[0] == '\0') return;
    char p[1024];
#ifdef USE_MPI
    int on = 0, rank = 0;
    MPI_Initialized(&on);
    if (on) { int fin = 0; MPI_Finalized(&fin); if (!fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank); }
    if (rank > 0) { snprintf(p, sizeof(p), "%s.rank%d", path, rank); path = p; }
#endif
    FILE* f = fopen(path, "w");
    if (f == NULL) { fprintf(stderr, "cuda_emu: cannot write the counts to '%s'\n", path); return; }
    const Counts& c = g_counts;
    long long launches = 0;
    for (auto& kv : c.kernels) launches += kv.second;
    fprintf(f, "launches %lld\nsyncs %lld\nmallocs %lld\nfrees %lld\ncopies_d2h %lld\ncopies_h2d %lld\ncopies_d2d %lld\n"
            "memsets %lld\nbytes_d2h %lld\nbytes_h2d %lld\ncollectives %lld\ncollective_bytes %lld\nsolver_calls %lld\n"
            "copies_h2d_pageable %lld\nhost_allocs %lld\n",
            launches, c.syncs, c.mallocs, c.frees, c.copies_d2h, c.copies_h2d, c.copies_d2d, c.memsets, c.bytes_d2h,
            c.bytes_h2d, c.collectives, c.collective_bytes, c.solver_calls, c.copies_h2d_pageable, c.host_allocs);
    for (auto& kv : c.kernels) fprintf(f, "kernel %s %lld\n", kv.first.c_str(), kv.second);
    for (auto& kv : c.kernel_bytes) fprintf(f, "kernel_bytes %s %lld %lld\n", kv.first.c_str(), kv.second.first, kv.second.second);
    for (auto& kv : c.gemms) {
        const GemmKey& g = kv.first;
        fprintf(f, "gemm m=%d n=%d k=%d lda=%lld ldb=%lld ldd=%lld ta=%d tb=%d tc=%d aligned=%d calls=%lld\n", g.m, g.n, g.k,
                g.lda, g.ldb, g.ldd, g.ta, g.tb, g.tc, g.aligned, kv.second);
    }
    fclose(f);
}
struct CountsAtExit { CountsAtExit() { atexit(counts_write); } };
inline CountsAtExit g_counts_at_exit;

inline size_t total_bytes() {
    const char* e = getenv("GRASS_EMU_GPU_GIB");
    double gib = e ? atof(e) : 80.0;
    return (size_t)(gib * 1073741824.0);
}

inline void set_error(cudaError_t e) {
    if (g_rt.last_error == cudaSuccess) g_rt.last_error = e;
}

// [p, p + n) inside one device allocation?
inline bool in_device(const void* p, size_t n) {
    std::map<uintptr_t, size_t>::iterator it = g_rt.allocs.upper_bound((uintptr_t)p);
    if (it == g_rt.allocs.begin()) return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}
inline bool touches_device(const void* p) { return in_device(p, 1); }

// ---- the bytes a kernel moves (GRASS_EMU_BYTES=1) ----------------------------------------------
// Measured, not declared: while a kernel runs, every device allocation is protected (PROT_NONE);
// the first access to a page faults, the handler records the page as read (and opens it for
// reading) or written (and opens it for writing; a read page that is then written faults again
// and counts as both). After the kernel, bytes read = pages read x 4 KiB, bytes written = pages
// written x 4 KiB: the distinct memory a launch touched, at page granularity (an upper bound for
// small buffers; re-reads of a page count once, as the performance model's L1/L2 assumption has
// it). Allocations are page-aligned and page-padded while tracing, so no host data shares a page.
// GEMMs (cuBLAS), memsets and copies are not kernels and are not traced. x86-64 Linux only (the
// fault's write bit comes from the signal context).
static const size_t EMU_PAGE = 4096;
struct PageTrace {
    int active = 0;
    std::vector<uintptr_t> read, written;  // capacity reserved up front: the handler never allocates
    size_t n_read = 0, n_written = 0;
    struct sigaction previous;
};
inline PageTrace g_trace;
inline int g_bytes_mode = -1;  // -1: read GRASS_EMU_BYTES at the first use; test_emu sets it
inline int bytes_tracing() {
    if (g_bytes_mode < 0) {
        const char* e = getenv("GRASS_EMU_BYTES");
        g_bytes_mode = e != NULL && atoi(e) > 0;
#if !(defined(__x86_64__) && defined(__linux__))
        if (g_bytes_mode) { fprintf(stderr, "cuda_emu: GRASS_EMU_BYTES needs x86-64 Linux\n"); exit(1); }
#endif
    }
    return g_bytes_mode;
}
inline size_t page_round(size_t n) { return (n + EMU_PAGE - 1) / EMU_PAGE * EMU_PAGE; }
inline void trace_fault(int sig, siginfo_t* si, void* ctx) {
    uintptr_t a = (uintptr_t)si->si_addr, pg = a & ~(uintptr_t)(EMU_PAGE - 1);
    if (!g_trace.active || !touches_device((const void*)a)) {  // a real fault: let it crash as it would have
        sigaction(SIGSEGV, &g_trace.previous, NULL);
        (void)sig;
        return;  // the access runs again and faults with the previous handler
    }
    int write = 0;
#if defined(__x86_64__) && defined(__linux__)
    write = (((ucontext_t*)ctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)ctx;
#endif
    std::vector<uintptr_t>& v = write ? g_trace.written : g_trace.read;
    size_t& n = write ? g_trace.n_written : g_trace.n_read;
    if (n == v.size()) { static const char m[] = "cuda_emu: GRASS_EMU_BYTES: more pages than reserved\n"; ssize_t w = ::write(2, m, sizeof(m) - 1); (void)w; _exit(3); }
    v[n++] = pg;
    mprotect((void*)pg, EMU_PAGE, write ? PROT_READ | PROT_WRITE : PROT_READ);
}
inline void trace_protect_all(int prot) {  // the paged allocations only: others may share a page with host data
    for (auto& kv : g_rt.paged)
        if (mprotect((void*)kv.first, page_round(kv.second), prot) != 0) { perror("cuda_emu: mprotect"); exit(3); }
}
inline void trace_begin(void) {
    static int installed = 0;
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = trace_fault;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &g_trace.previous) != 0) { perror("cuda_emu: sigaction"); exit(3); }
        installed = 1;
    }
    size_t pages = 0;
    for (auto& kv : g_rt.paged) pages += page_round(kv.second) / EMU_PAGE;
    if (g_trace.read.size() < pages + 16) g_trace.read.resize(pages + 16);
    if (g_trace.written.size() < pages + 16) g_trace.written.resize(pages + 16);
    g_trace.n_read = g_trace.n_written = 0;
    trace_protect_all(PROT_NONE);
    g_trace.active = 1;
}
inline void trace_end(const char* name) {
    g_trace.active = 0;
    trace_protect_all(PROT_READ | PROT_WRITE);
    std::pair<long long, long long>& b = g_counts.kernel_bytes[name];
    b.first += (long long)(g_trace.n_read * EMU_PAGE);
    b.second += (long long)(g_trace.n_written * EMU_PAGE);
}

static const size_t EMU_SMEM_DEFAULT = 48 << 10, EMU_SMEM_OPTIN = 232448;

inline int block_order_reversed() {
    static int r = -1;
    if (r < 0) {
        const char* e = getenv("GRASS_EMU_BLOCK_ORDER");
        r = e != NULL && strcmp(e, "reverse") == 0;
    }
    return r;
}

template <typename K>
struct Launch {
    K* kernel;
    const char* name;
    dim3 grid, block;
    size_t smem;
    template <typename... A>
    void operator()(A... args) {
        size_t threads = (size_t)block.x * block.y * block.z;
        if (threads == 0 || threads > (size_t)EMU_MAX_THREADS || block.z > 64 || grid.x == 0 || grid.y == 0 ||
            grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
            fprintf(stderr, "cuda_emu: launch of %s with grid (%u,%u,%u) block (%u,%u,%u): invalid configuration\n", name,
                    grid.x, grid.y, grid.z, block.x, block.y, block.z);
            set_error(cudaErrorInvalidConfiguration);
            return;
        }
        if (smem > EMU_SMEM_DEFAULT) {
            std::map<const void*, int>::iterator it = g_rt.max_dyn_smem.find((const void*)kernel);
            if (it == g_rt.max_dyn_smem.end() || (size_t)it->second < smem || smem > EMU_SMEM_OPTIN) {
                fprintf(stderr, "cuda_emu: launch of %s asks for %zu bytes of dynamic shared memory without "
                        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize) allowing it\n", name, smem);
                set_error(cudaErrorInvalidValue);
                return;
            }
        }
        g_rt.launches++;
        g_counts.kernels[name]++;
        if (g_sched.in_kernel) die("kernel %s launched from inside a kernel", name);
        g_sched.in_kernel = 1;
        g_rt.dyn_smem.assign(smem + 128, 0xFF);  // uninitialized shared memory reads as NaN
        gridDim = grid;
        blockDim = block;
        g_sched.body = [=]() { kernel(args...); };
        // blocks in index order, or the reverse (GRASS_EMU_BLOCK_ORDER=reverse): a kernel whose
        // result depends on the order of its blocks (two blocks writing one place, a block
        // reading what another writes) gives other bits the other way round
        size_t nblocks = (size_t)grid.x * grid.y * grid.z;
        int reverse = block_order_reversed();
        int trace = bytes_tracing();
        if (trace) trace_begin();
        for (size_t q = 0; q < nblocks; q++) {
            size_t id = reverse ? nblocks - 1 - q : q;
            blockIdx = dim3((unsigned)(id % grid.x), (unsigned)(id / grid.x % grid.y), (unsigned)(id / ((size_t)grid.x * grid.y)));
            run_block((int)threads, block.x, block.y, name);
        }
        if (trace) trace_end(name);
        g_sched.body = nullptr;
        g_sched.in_kernel = 0;
    }
};
template <typename K>
inline Launch<K> launch(K* kernel, const char* name, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    (void)stream;
    Launch<K> l;
    l.kernel = kernel; l.name = name; l.grid = grid; l.block = block; l.smem = smem;
    return l;
}

// extern __shared__ arrays (rewrite.py turns them into a call of this)
inline unsigned char* dynamic_smem() {
    uintptr_t p = (uintptr_t)g_rt.dyn_smem.data();
    return (unsigned char*)((p + 127) & ~(uintptr_t)127);
}

}  // namespace emu

// ---- runtime API --------------------------------------------------------------------------------

struct CUstream_st { int id; };
struct CUevent_st { double t; };

static inline double emu_now() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

cudaError_t cudaGetDeviceCount(int* count) { *count = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* device) { *device = 0; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "CPU emulation of a CUDA GPU (tests/cuda_emu)");
    p->major = 9; p->minor = 0;
    p->multiProcessorCount = 132;
    p->totalGlobalMem = emu::total_bytes();
    p->sharedMemPerBlock = emu::EMU_SMEM_DEFAULT;
    p->sharedMemPerBlockOptin = emu::EMU_SMEM_OPTIN;
    p->maxThreadsPerBlock = emu::EMU_MAX_THREADS;
    p->warpSize = 32;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    switch (attr) {
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)emu::EMU_SMEM_OPTIN; return cudaSuccess;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)emu::EMU_SMEM_DEFAULT; return cudaSuccess;
        case cudaDevAttrMultiProcessorCount: *value = 132; return cudaSuccess;
        case cudaDevAttrMaxThreadsPerBlock: *value = emu::EMU_MAX_THREADS; return cudaSuccess;
        default: return cudaErrorInvalidValue;
    }
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > emu::EMU_SMEM_OPTIN) return cudaErrorInvalidValue;
        emu::g_rt.max_dyn_smem[func] = value;
    }
    return cudaSuccess;
}
template <typename T>  // the typed overload that nvcc's cuda_runtime.h provides
inline cudaError_t cudaFuncSetAttribute(T* func, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute((const void*)func, attr, value);
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = NULL;
    if (emu::g_rt.bytes_now + bytes > emu::total_bytes()) { emu::set_error(cudaErrorMemoryAllocation); return cudaErrorMemoryAllocation; }
    void* m = NULL;
    // while tracing bytes (GRASS_EMU_BYTES), whole pages: no host data may share a protected page
    int paged = emu::bytes_tracing();
    if (posix_memalign(&m, paged ? emu::EMU_PAGE : 256, paged ? emu::page_round(bytes ? bytes : 1) : (bytes ? bytes : 1)) != 0) {
        emu::set_error(cudaErrorMemoryAllocation);
        return cudaErrorMemoryAllocation;
    }
    memset(m, 0xFF, bytes);  // as if left over: NaN in bf16 and fp32
    emu::g_rt.allocs[(uintptr_t)m] = bytes;
    if (paged) emu::g_rt.paged[(uintptr_t)m] = bytes;
    emu::g_rt.bytes_now += bytes;
    emu::g_counts.mallocs++;
    *p = m;
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    if (p == NULL) return cudaSuccess;
    std::map<uintptr_t, size_t>::iterator it = emu::g_rt.allocs.find((uintptr_t)p);
    if (it == emu::g_rt.allocs.end()) { emu::set_error(cudaErrorInvalidValue); return cudaErrorInvalidValue; }
    emu::g_rt.bytes_now -= it->second;
    emu::g_rt.allocs.erase(it);
    emu::g_rt.paged.erase((uintptr_t)p);
    emu::g_counts.frees++;
    free(p);
    return cudaSuccess;
}
// pinned host memory: host memory, tracked so that asynchronous copies from elsewhere are counted
cudaError_t cudaMallocHost(void** p, size_t bytes) {
    *p = NULL;
    void* m = NULL;
    if (posix_memalign(&m, 256, bytes ? bytes : 1) != 0) { emu::set_error(cudaErrorMemoryAllocation); return cudaErrorMemoryAllocation; }
    emu::g_rt.pinned[(uintptr_t)m] = bytes;
    emu::g_counts.host_allocs++;
    *p = m;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
    if (p == NULL) return cudaSuccess;
    std::map<uintptr_t, size_t>::iterator it = emu::g_rt.pinned.find((uintptr_t)p);
    if (it == emu::g_rt.pinned.end()) { emu::set_error(cudaErrorInvalidValue); return cudaErrorInvalidValue; }
    emu::g_rt.pinned.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* fr, size_t* total) {
    *total = emu::total_bytes();
    *fr = *total - emu::g_rt.bytes_now;
    return cudaSuccess;
}

static cudaError_t emu_copy_check(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    bool dd = emu::in_device(dst, n), sd = emu::in_device(src, n);
    bool ok = kind == cudaMemcpyHostToDevice ? (dd && !emu::touches_device(src))
            : kind == cudaMemcpyDeviceToHost ? (sd && !emu::touches_device(dst))
            : kind == cudaMemcpyDeviceToDevice ? (dd && sd)
            : kind == cudaMemcpyHostToHost ? (!emu::touches_device(dst) && !emu::touches_device(src))
            : (kind == cudaMemcpyDefault);
    if (!ok) {
        fprintf(stderr, "cuda_emu: cudaMemcpy of %zu bytes (kind %d) from %p (%s) to %p (%s): a pointer is not of "
                "the kind's side, or the range leaves its allocation\n", n, (int)kind, src,
                sd ? "device" : emu::touches_device(src) ? "device, range overflows" : "host", dst,
                dd ? "device" : emu::touches_device(dst) ? "device, range overflows" : "host");
        emu::set_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}
static cudaError_t emu_memcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    if (n == 0) return cudaSuccess;
    cudaError_t e = emu_copy_check(dst, src, n, kind);
    if (e != cudaSuccess) return e;
    memmove(dst, src, n);
    bool sd = emu::in_device(src, n), dd = emu::in_device(dst, n);
    if (sd && !dd) { emu::g_counts.copies_d2h++; emu::g_counts.bytes_d2h += (long long)n; }
    else if (!sd && dd) { emu::g_counts.copies_h2d++; emu::g_counts.bytes_h2d += (long long)n; }
    else if (sd && dd) emu::g_counts.copies_d2d++;
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    emu::g_counts.syncs++;  // a blocking copy waits for the device
    return emu_memcpy(dst, src, n, kind);
}
namespace emu {
inline bool in_pinned(const void* p, size_t n) {
    std::map<uintptr_t, size_t>::iterator it = g_rt.pinned.upper_bound((uintptr_t)p);
    if (it == g_rt.pinned.begin()) return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + n <= it->first + it->second;
}
}  // namespace emu
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
    if (n > 0 && !emu::in_device(src, n) && emu::in_device(dst, n) && !emu::in_pinned(src, n)) emu::g_counts.copies_h2d_pageable++;
    return emu_memcpy(dst, src, n, kind);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
    if (width > dpitch || width > spitch) { emu::set_error(cudaErrorInvalidPitchValue); return cudaErrorInvalidPitchValue; }
    for (size_t r = 0; r < height; r++) {
        cudaError_t e = emu_memcpy((char*)dst + r * dpitch, (const char*)src + r * spitch, width, kind);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
    if (n == 0) return cudaSuccess;
    emu::g_counts.memsets++;
    if (!emu::in_device(p, n)) {
        fprintf(stderr, "cuda_emu: cudaMemset of %zu bytes at %p leaves device memory\n", n, p);
        emu::set_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { return cudaMemset(p, v, n); }

cudaError_t cudaStreamCreate(cudaStream_t* s) { static int ids = 0; *s = new CUstream_st{++ids}; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { emu::g_counts.syncs++; return emu::g_rt.last_error; }
cudaError_t cudaDeviceSynchronize(void) { emu::g_counts.syncs++; return emu::g_rt.last_error; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st{0.0}; return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) { e->t = emu_now(); return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { emu::g_counts.syncs++; return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }  // work is done when it is queued
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) { *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess; }
cudaError_t cudaGetLastError(void) { cudaError_t e = emu::g_rt.last_error; emu::g_rt.last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { return emu::g_rt.last_error; }
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        default: return "cudaError (emulated)";
    }
}
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        default: return "error (emulated)";
    }
}

// ---- cuBLAS / cuBLASLt: column-major GEMMs in fp32 through CBLAS ---------------------------------

struct cublasContext { cudaStream_t stream; };
struct cublasLtContext { int unused; };

namespace emu {

struct LtDesc { int opA, opB, compute, scale; };
struct LtLayout { int type; uint64_t rows, cols; int64_t ld; };
struct LtPref { uint64_t ws; uint32_t alA, alB, alC, alD; };
struct LtAlgo { uint32_t magic, alA, alB, alC; };
static_assert(sizeof(LtDesc) <= sizeof(cublasLtMatmulDescOpaque_t), "LtDesc");
static_assert(sizeof(LtLayout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "LtLayout");
static_assert(sizeof(LtPref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "LtPref");
static_assert(sizeof(LtAlgo) <= sizeof(cublasLtMatmulAlgo_t), "LtAlgo");

inline float load_elem(const void* p, int type, size_t i) {
    if (type == CUDA_R_32F) return ((const float*)p)[i];
    return __bfloat162float(((const __nv_bfloat16*)p)[i]);
}
inline void store_elem(void* p, int type, size_t i, float v) {
    if (type == CUDA_R_32F) ((float*)p)[i] = v;
    else ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v);
}
inline int type_ok(int t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }
inline size_t type_size(int t) { return t == CUDA_R_32F ? 4 : 2; }
// the type combinations cuBLAS(Lt) runs with CUBLAS_COMPUTE_32F, of those the program uses: A and
// B of one type, C/D of that type or fp32 (bf16 inputs, fp32 output: Grass's C, --grad-dtype fp32)
inline int types_supported(int ta, int tb, int tc) {
    return type_ok(ta) && type_ok(tb) && type_ok(tc) && ta == tb && (tc == ta || tc == CUDA_R_32F);
}

// D (m x n, ldd) = alpha op(A) op(B) + beta C, all column-major; fp32 accumulation, one rounding
inline cublasStatus_t gemm(int opA, int opB, int m, int n, int k, float alpha, const void* A, int ta, int64_t lda,
                           const void* B, int tb, int64_t ldb, float beta, const void* C, int tc, int64_t ldc, void* D,
                           int64_t ldd) {
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (!types_supported(ta, tb, tc)) return CUBLAS_STATUS_NOT_SUPPORTED;
    int64_t arows = opA ? k : m, brows = opB ? n : k;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1) || ldd < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    {   // the count: aligned when every pointer and leading dimension is a multiple of 16 bytes
        auto al16 = [](const void* p, int64_t ld, int t) { return (uintptr_t)p % 16 == 0 && (ld * (int64_t)type_size(t)) % 16 == 0; };
        GemmKey key;
        memset(&key, 0, sizeof(key));
        key.m = m; key.n = n; key.k = k; key.ta = ta; key.tb = tb; key.tc = tc; key.lda = lda; key.ldb = ldb; key.ldd = ldd;
        key.aligned = al16(A, lda, ta) && al16(B, ldb, tb) && al16(D, ldd, tc) && (beta == 0.0f || al16(C, ldc, tc));
        g_counts.gemms[key]++;
        // GRASS_EMU_REQUIRE_ALIGNED=1: a GEMM that Hopper's fast kernels could not take stops the
        // program, naming its shape (test_train_emu runs the 60m, 1b, 7b and 13b shapes with it)
        static int require = -1;
        if (require < 0) { const char* e = getenv("GRASS_EMU_REQUIRE_ALIGNED"); require = e != NULL && atoi(e) != 0; }
        if (require && !key.aligned) {
            fprintf(stderr, "cuda_emu: GRASS_EMU_REQUIRE_ALIGNED: GEMM m=%d n=%d k=%d lda=%lld ldb=%lld ldd=%lld (element bytes %d, "
                    "%d, %d) has a pointer or leading dimension that is not a multiple of 16 bytes\n", m, n, k, (long long)lda,
                    (long long)ldb, (long long)ldd, (int)type_size(ta), (int)type_size(tb), (int)type_size(tc));
            exit(3);
        }
    }
    // every element the GEMM reads or writes must lie in device memory
    size_t a_span = (size_t)((opA ? m : k) - 1) * lda + arows, b_span = (size_t)((opB ? k : n) - 1) * ldb + brows;
    size_t c_span = (size_t)(n - 1) * ldc + m, d_span = (size_t)(n - 1) * ldd + m;
    if ((k > 0 && (!in_device(A, a_span * type_size(ta)) || !in_device(B, b_span * type_size(tb)))) ||
        (beta != 0.0f && !in_device(C, c_span * type_size(tc))) || !in_device(D, d_span * type_size(tc))) {
        fprintf(stderr, "cuda_emu: GEMM m=%d n=%d k=%d lda=%lld ldb=%lld ldc=%lld reads or writes outside device memory\n",
                m, n, k, (long long)lda, (long long)ldb, (long long)ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    std::vector<float> a((size_t)m * (k > 0 ? k : 1)), b((size_t)(k > 0 ? k : 1) * n), d((size_t)m * n, 0.0f);
    for (int kk = 0; kk < k; kk++)
        for (int i = 0; i < m; i++)
            a[(size_t)kk * m + i] = load_elem(A, ta, opA ? (size_t)i * lda + kk : (size_t)kk * lda + i);
    for (int j = 0; j < n; j++)
        for (int kk = 0; kk < k; kk++)
            b[(size_t)j * k + kk] = load_elem(B, tb, opB ? (size_t)kk * ldb + j : (size_t)j * ldb + kk);
    if (k > 0)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), m, b.data(), k, 0.0f, d.data(), m);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float v = alpha * d[(size_t)j * m + i];
            if (beta != 0.0f) v += beta * load_elem(C, tc, (size_t)j * ldc + i);
            store_elem(D, tc, (size_t)j * ldd + i, v);
        }
    return CUBLAS_STATUS_SUCCESS;
}

// GRASS_EMU_LT_REFUSE=1: cuBLASLt's heuristic finds no algorithm; =2: it finds one, and
// cublasLtMatmul then refuses it (CUBLAS_STATUS_NOT_SUPPORTED). Both test the cublasGemmEx fallback.
inline int lt_refuse() {
    const char* e = getenv("GRASS_EMU_LT_REFUSE");
    return e != NULL ? atoi(e) : 0;
}
inline uint32_t alignment_of(const void* p) {
    uint32_t al = 256;
    while (al > 1 && ((uintptr_t)p % al) != 0) al >>= 1;
    return al;
}

}  // namespace emu

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) { *h = new cublasContext{0}; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) { h->stream = s; return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS (emulated)";
    }
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype,
                            int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
    if (compute != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    return emu::gemm(transa != CUBLAS_OP_N, transb != CUBLAS_OP_N, m, n, k, *(const float*)alpha, A, Atype, lda, B, Btype,
                     ldb, *(const float*)beta, C, Ctype, ldc, C, ldc);
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) { *h = new cublasLtContext{0}; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
    *d = new cublasLtMatmulDescOpaque_t();
    emu::LtDesc* x = (emu::LtDesc*)(*d)->data;
    x->opA = 0; x->opB = 0; x->compute = (int)compute; x->scale = (int)scale;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
    emu::LtDesc* x = (emu::LtDesc*)d->data;
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) {
        if (size != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
        int op = (int)*(const cublasOperation_t*)buf != (int)CUBLAS_OP_N;
        if (attr == CUBLASLT_MATMUL_DESC_TRANSA) x->opA = op; else x->opB = op;
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;  // the emulator knows only the attributes the program sets
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new cublasLtMatrixLayoutOpaque_t();
    emu::LtLayout* x = (emu::LtLayout*)(*l)->data;
    x->type = (int)type; x->rows = rows; x->cols = cols; x->ld = ld;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
    *p = new cublasLtMatmulPreferenceOpaque_t();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
    emu::LtPref* x = (emu::LtPref*)p->data;
    switch (attr) {
        case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
            if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
            x->ws = *(const uint64_t*)buf; return CUBLAS_STATUS_SUCCESS;
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
            if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
            uint32_t v = *(const uint32_t*)buf;
            if (attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES) x->alA = v;
            else if (attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES) x->alB = v;
            else if (attr == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES) x->alC = v;
            else x->alD = v;
            return CUBLAS_STATUS_SUCCESS;
        }
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t* res, int* found) {
    *found = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    const emu::LtDesc* x = (const emu::LtDesc*)d->data;
    const emu::LtLayout *la = (const emu::LtLayout*)a->data, *lb = (const emu::LtLayout*)b->data;
    const emu::LtLayout *lc = (const emu::LtLayout*)c->data, *ld = (const emu::LtLayout*)dd->data;
    uint64_t m = lc->rows, n = lc->cols, k = x->opA ? la->rows : la->cols;
    if ((x->opA ? la->cols : la->rows) != m || (x->opB ? lb->rows : lb->cols) != n || (x->opB ? lb->cols : lb->rows) != k ||
        ld->rows != m || ld->cols != n || ld->type != lc->type)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (emu::lt_refuse() == 1 || !emu::types_supported(la->type, lb->type, lc->type)) return CUBLAS_STATUS_NOT_SUPPORTED;
    const emu::LtPref* pr = (const emu::LtPref*)p->data;
    memset(res, 0, sizeof(*res));
    emu::LtAlgo* al = (emu::LtAlgo*)res->algo.data;
    al->magic = 0x47524153u;
    al->alA = pr->alA ? pr->alA : 256; al->alB = pr->alB ? pr->alB : 256; al->alC = pr->alC ? pr->alC : 256;
    res->workspaceSize = 0;
    res->state = CUBLAS_STATUS_SUCCESS;
    res->wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t ws_bytes, cudaStream_t) {
    const emu::LtDesc* x = (const emu::LtDesc*)d->data;
    const emu::LtLayout *la = (const emu::LtLayout*)a->data, *lb = (const emu::LtLayout*)b->data;
    const emu::LtLayout *lc = (const emu::LtLayout*)c->data, *ld = (const emu::LtLayout*)dd->data;
    if (x->compute != CUBLAS_COMPUTE_32F || x->scale != CUDA_R_32F || emu::lt_refuse() == 2) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (ws_bytes > 0 && !emu::in_device(workspace, ws_bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    if (algo != NULL) {
        const emu::LtAlgo* al = (const emu::LtAlgo*)algo->data;
        if (al->magic != 0x47524153u) return CUBLAS_STATUS_INVALID_VALUE;
        // an algorithm chosen for an alignment must not be run on pointers aligned less
        if (emu::alignment_of(A) < al->alA || emu::alignment_of(B) < al->alB || emu::alignment_of(C) < al->alC ||
            emu::alignment_of(D) < al->alC) {
            fprintf(stderr, "cuda_emu: cublasLtMatmul with pointers aligned below the algorithm's alignment\n");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    uint64_t m = lc->rows, n = lc->cols, k = x->opA ? la->rows : la->cols;
    if ((x->opA ? la->cols : la->rows) != m || (x->opB ? lb->rows : lb->cols) != n || (x->opB ? lb->cols : lb->rows) != k ||
        ld->rows != m || ld->cols != n || ld->type != lc->type)
        return CUBLAS_STATUS_INVALID_VALUE;
    return emu::gemm(x->opA, x->opB, (int)m, (int)n, (int)k, *(const float*)alpha, A, la->type, la->ld, B, lb->type, lb->ld,
                     *(const float*)beta, C, lc->type, lc->ld, D, ld->ld);
}

// ---- NCCL: one process per rank, the collectives through MPI on the (host) device memory ---------

#ifdef USE_NCCL
struct ncclComm { int nranks, rank; };

const char* ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "NCCL error (emulated)"; }
ncclResult_t ncclGetUniqueId(ncclUniqueId* id) { memset(id, 0x5A, sizeof(*id)); return ncclSuccess; }
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId, int rank) {
    int world = 1;
#ifdef USE_MPI
    int on = 0;
    MPI_Initialized(&on);
    if (on) MPI_Comm_size(MPI_COMM_WORLD, &world);
#endif
    if (nranks != world || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    *comm = new ncclComm{nranks, rank};
    return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) { delete comm; return ncclSuccess; }
// the watchdog's abort from another thread: the emulated communicator holds nothing to cancel (the
// process ends right after), so it is left as it is
ncclResult_t ncclCommAbort(ncclComm_t comm) { (void)comm; return ncclSuccess; }

namespace emu {
inline ncclResult_t nccl_to_float(const void* p, ncclDataType_t t, size_t n, std::vector<float>& out) {
    out.resize(n);
    if (t == ncclFloat) { memcpy(out.data(), p, n * 4); return ncclSuccess; }
    if (t == ncclBfloat16) { for (size_t i = 0; i < n; i++) out[i] = __bfloat162float(((const __nv_bfloat16*)p)[i]); return ncclSuccess; }
    return ncclInvalidArgument;
}
inline void nccl_from_float(void* p, ncclDataType_t t, const float* v, size_t n) {
    if (t == ncclFloat) memcpy(p, v, n * 4);
    else for (size_t i = 0; i < n; i++) ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v[i]);
}
}  // namespace emu

// sums in fp32 across ranks, then rounds once (NCCL's bf16 ring rounds after each hop; with two
// ranks the two agree)
ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t) {
    size_t es = t == ncclFloat ? 4 : 2;
    emu::g_counts.collectives++; emu::g_counts.collective_bytes += (long long)(count * es);
    if (op != ncclSum || !emu::in_device(send, count * es) || !emu::in_device(recv, count * es)) return ncclInvalidArgument;
    std::vector<float> v;
    if (emu::nccl_to_float(send, t, count, v) != ncclSuccess) return ncclInvalidArgument;
#ifdef USE_MPI
    if (comm->nranks > 1 && MPI_Allreduce(MPI_IN_PLACE, v.data(), (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
        return ncclSystemError;
#endif
    emu::nccl_from_float(recv, t, v.data(), count);
    return ncclSuccess;
}
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t) {
    size_t es = t == ncclFloat ? 4 : 2;
    emu::g_counts.collectives++; emu::g_counts.collective_bytes += (long long)(recvcount * comm->nranks * es);
    if (op != ncclSum || !emu::in_device(send, recvcount * comm->nranks * es) || !emu::in_device(recv, recvcount * es))
        return ncclInvalidArgument;
    std::vector<float> v, mine(recvcount);
    if (emu::nccl_to_float(send, t, recvcount * comm->nranks, v) != ncclSuccess) return ncclInvalidArgument;
#ifdef USE_MPI
    if (comm->nranks > 1) {
        if (MPI_Reduce_scatter_block(v.data(), mine.data(), (int)recvcount, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return ncclSystemError;
    } else
#endif
        memcpy(mine.data(), v.data(), recvcount * 4);
    emu::nccl_from_float(recv, t, mine.data(), recvcount);
    return ncclSuccess;
}
ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t t, ncclComm_t comm, cudaStream_t) {
    size_t es = t == ncclFloat ? 4 : t == ncclBfloat16 ? 2 : 0;
    emu::g_counts.collectives++; emu::g_counts.collective_bytes += (long long)(sendcount * comm->nranks * es);
    if (es == 0 || !emu::in_device(send, sendcount * es) || !emu::in_device(recv, sendcount * comm->nranks * es))
        return ncclInvalidArgument;
    std::vector<unsigned char> mine((const unsigned char*)send, (const unsigned char*)send + sendcount * es);
#ifdef USE_MPI
    if (comm->nranks > 1) {
        if (MPI_Allgather(mine.data(), (int)(sendcount * es), MPI_BYTE, recv, (int)(sendcount * es), MPI_BYTE,
                          MPI_COMM_WORLD) != MPI_SUCCESS)
            return ncclSystemError;
        return ncclSuccess;
    }
#endif
    memcpy(recv, mine.data(), sendcount * es);
    return ncclSuccess;
}
#endif  // USE_NCCL

// ---- cuSOLVER: the dense SVD (GaLore's projector) through LAPACK's sgesvd, with the argument
// rules cuSOLVER's gesvd has (rows >= cols; jobu/jobvt in A, S, O, N) and every array in device memory
extern "C" void sgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, float* a, const int* lda, float* s,
                        float* u, const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* info);
struct cusolverDnContext { cudaStream_t stream; };
cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t* h) { *h = new cusolverDnContext{0}; return CUSOLVER_STATUS_SUCCESS; }
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h) { delete h; return CUSOLVER_STATUS_SUCCESS; }
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) { h->stream = s; return CUSOLVER_STATUS_SUCCESS; }
namespace emu {
inline int gesvd_lwork(int m, int n) {  // LAPACK's optimal workspace for jobu 'N', jobvt 'S' (the call we emulate)
    float q = 0.0f, dummy = 0.0f;
    int lwork = -1, info = 0, one = 1;
    sgesvd_("N", "S", &m, &n, &dummy, &m, &dummy, &dummy, &one, &dummy, &n, &q, &lwork, &info);
    return info == 0 ? (int)q + 1 : -1;
}
}  // namespace emu
cusolverStatus_t cusolverDnSgesvd_bufferSize(cusolverDnHandle_t, int m, int n, int* lwork) {
    if (m < n || n < 1) return CUSOLVER_STATUS_INVALID_VALUE;
    int a = emu::gesvd_lwork(m, n), b = emu::gesvd_lwork(m, m < n ? m : n);  // room for jobvt 'A' too
    if (a < 0 || b < 0) return CUSOLVER_STATUS_INTERNAL_ERROR;
    *lwork = a > b ? a : b;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSgesvd(cusolverDnHandle_t, signed char jobu, signed char jobvt, int m, int n, float* A, int lda,
                                  float* S, float* U, int ldu, float* VT, int ldvt, float* work, int lwork, float* rwork,
                                  int* devInfo) {
    (void)rwork;
    emu::g_counts.solver_calls++;
    auto job_ok = [](signed char j) { return j == 'A' || j == 'S' || j == 'O' || j == 'N'; };
    if (m < n || n < 1 || lda < m || !job_ok(jobu) || !job_ok(jobvt) || (jobu == 'O' && jobvt == 'O'))
        return CUSOLVER_STATUS_INVALID_VALUE;
    int ucols = jobu == 'A' ? m : jobu == 'S' ? n : 0, vrows = jobvt == 'A' || jobvt == 'S' ? n : 0;
    if ((ucols > 0 && ldu < m) || (vrows > 0 && ldvt < vrows)) return CUSOLVER_STATUS_INVALID_VALUE;
    if (!emu::in_device(A, ((size_t)(n - 1) * lda + m) * 4) || !emu::in_device(S, (size_t)n * 4) ||
        (ucols > 0 && !emu::in_device(U, ((size_t)(ucols - 1) * ldu + m) * 4)) ||
        (vrows > 0 && !emu::in_device(VT, ((size_t)(n - 1) * ldvt + vrows) * 4)) || !emu::in_device(work, (size_t)lwork * 4) ||
        !emu::in_device(devInfo, sizeof(int))) {
        fprintf(stderr, "cuda_emu: cusolverDnSgesvd m=%d n=%d: an array lies outside device memory\n", m, n);
        return CUSOLVER_STATUS_INVALID_VALUE;
    }
    int need = emu::gesvd_lwork(m, n);
    if (lwork < need) return CUSOLVER_STATUS_INVALID_VALUE;
    char ju = (char)jobu, jv = (char)jobvt;
    float dummy = 0.0f;
    int one = 1;
    sgesvd_(&ju, &jv, &m, &n, A, &lda, S, ucols > 0 ? U : &dummy, ucols > 0 ? &ldu : &one, vrows > 0 ? VT : &dummy,
            vrows > 0 ? &ldvt : &one, work, &lwork, devInfo);
    return CUSOLVER_STATUS_SUCCESS;
}

#endif  // GRASS_CUDA_EMU_H
