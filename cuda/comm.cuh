/*
 * cuda/comm.cuh: the collectives: allreduce_sum_float / _floatX, reducescatter_sum_floatX / _float
 * and allgather_floatX (ZeRO-1), allreduce_sum_float_wire_floatX (fp32 values, floatX on the
 * wire) through NCCL, or staged through host memory and MPI without it; the fp32 <-> floatX
 * kernels they use (backend_widen); and the asynchronous all-reduce on the communication
 * stream (allreduce_async_reserve, allreduce_start_*, allreduce_wait).
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_COMM_CUH
#define GRASS_CUDA_COMM_CUH

#include "common.cuh"

// ---- collectives --------------------------------------------------------------------------------


void allreduce_sum_float(float* x, size_t n) {
    if (g_cu.world <= 1 || n == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        ncclCollective(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.stream));  // count in elements
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
        ncclCollective(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.stream));
#else
        ncclCollective(ncclAllReduce(x, x, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.stream));
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
        ncclCollective(ncclReduceScatter(x, x + (size_t)g_cu.rank * shard, shard, CU_NCCL_FLOATX, ncclSum, g_cu.nccl,
                                         g_cu.stream));
        return;
    }
#endif
    allreduce_sum_floatX(x, shard * g_cu.world);  // host-staged fallback: sum everything (correct)
}
// the same for fp32 values (dense gradients with --grad-dtype fp32), summed in fp32
void reducescatter_sum_float(float* x, size_t shard) {
    if (g_cu.world <= 1 || shard == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        ncclCollective(ncclReduceScatter(x, x + (size_t)g_cu.rank * shard, shard, ncclFloat, ncclSum, g_cu.nccl,
                                         g_cu.stream));
        return;
    }
#endif
    allreduce_sum_float(x, shard * g_cu.world);  // host-staged fallback
}
void allgather_floatX(floatX* x, size_t shard) {
    if (g_cu.world <= 1 || shard == 0) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {  // in-place form: sendbuff = recvbuff + rank * sendcount
        ncclCollective(ncclAllGather(x + (size_t)g_cu.rank * shard, x, shard, CU_NCCL_FLOATX, g_cu.nccl, g_cu.stream));
        return;
    }
#endif
#ifdef USE_MPI
    // host-staged fallback: each block broadcast from its owner (bytes, so floatX passes unchanged)
    size_t bytes = shard * sizeof(floatX);
    char* h = (char*)malloc_check(bytes);
    for (int r = 0; r < g_cu.world; r++) {
        if (r == g_cu.rank) backend_download(h, x + (size_t)r * shard, bytes);
        mpi_bcast(h, bytes, MPI_BYTE, r);  // comm.h: chunked, checked
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
        ncclCollective(ncclAllReduce(wire, wire, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.stream));
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
        fatal("kernel %s on the communication stream failed: %s (%s)", kernel, cudaGetErrorString(e),
              cudaGetErrorName(e));
}

void allreduce_async_reserve(size_t max_floats) {
    if (g_cu.world <= 1 || !g_cu.use_nccl || max_floats <= g_cu.async_cap) return;
    for (int s = 0; s < ALLREDUCE_LAYER_SLOTS; s++) {
        if (g_cu.async_pending[s]) fatal("allreduce_async_reserve while group %d is in flight", s);
        if (g_cu.async_wire[s]) backend_free(g_cu.async_wire[s]);
        g_cu.async_wire[s] = (floatX*)backend_malloc(max_floats * sizeof(floatX),
                                                     "asynchronous all-reduce wire buffer");
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
    if (slot < 0 || slot >= ALLREDUCE_SLOTS)
        fatal("allreduce_start: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
    return g_cu.world > 1 && n > 0;
}

void allreduce_start_float_wire_floatX(float* x, size_t n, int slot) {
    if (!cu_async_needed(slot, n)) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        cu_comm_begin();
#ifdef ENABLE_FP32
        ncclCollective(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g_cu.nccl, g_cu.comm_stream));
#else
        if (g_cu.async_used[slot] + n > g_cu.async_cap)
            fatal("allreduce_start: %zu floats in flight in group %d exceed the %zu reserved (allreduce_async_reserve)",
                  g_cu.async_used[slot] + n, slot, g_cu.async_cap);
        floatX* wire = g_cu.async_wire[slot] + g_cu.async_used[slot];
        g_cu.async_used[slot] += n;
        gk_float_to_x<<<cu_grid_for(n, 256), 256, 0, g_cu.comm_stream>>>(wire, x, n);
        cu_comm_launched("gk_float_to_x");
        ncclCollective(ncclAllReduce(wire, wire, n, ncclBfloat16, ncclSum, g_cu.nccl, g_cu.comm_stream));
        gk_x_to_float<<<cu_grid_for(n, 256), 256, 0, g_cu.comm_stream>>>(x, wire, n);
        cu_comm_launched("gk_x_to_float");
#endif
        cu_comm_end(slot);
        return;
    }
#endif
    allreduce_sum_float_wire_floatX(x, n);  // host-staged MPI fallback: blocking
}

// x summed over the ranks in its own dtype (fp32: 1, else floatX), started in group `slot`: one
// NCCL all-reduce on the communication stream, or the host-staged MPI fallback (blocking)
static void cu_allreduce_start(void* x, size_t n, int fp32, int slot) {
    if (!cu_async_needed(slot, n)) return;
#ifdef USE_NCCL
    if (g_cu.use_nccl) {
        cu_comm_begin();
        ncclCollective(ncclAllReduce(x, x, n, fp32 ? ncclFloat : CU_NCCL_FLOATX, ncclSum, g_cu.nccl, g_cu.comm_stream));
        cu_comm_end(slot);
        return;
    }
#endif
    if (fp32) allreduce_sum_float((float*)x, n);
    else allreduce_sum_floatX((floatX*)x, n);
}
void allreduce_start_floatX(floatX* x, size_t n, int slot) { cu_allreduce_start(x, n, 0, slot); }
// fp32 values summed in fp32 (dense gradients with --grad-dtype fp32)
void allreduce_start_float(float* x, size_t n, int slot) { cu_allreduce_start(x, n, 1, slot); }

void allreduce_wait(int slot) {
    if (slot < 0 || slot >= ALLREDUCE_SLOTS)
        fatal("allreduce_wait: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
    if (!g_cu.async_pending[slot]) return;
    // the compute stream (not the host) waits for the group's last reduction
    cudaCheck(cudaStreamWaitEvent(g_cu.stream, g_cu.ev_done[slot], 0));
    g_cu.async_pending[slot] = 0;
    g_cu.async_used[slot] = 0;
}

#endif // GRASS_CUDA_COMM_CUH
