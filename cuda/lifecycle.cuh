/*
 * cuda/lifecycle.cuh: backend_init: picks the device, creates the streams, events and cuBLAS(Lt)
 * handles, checks the compute capability, and sets up the ranks and NCCL (over MPI).
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_LIFECYCLE_CUH
#define GRASS_CUDA_LIFECYCLE_CUH

#include "common.cuh"

// ---- lifecycle ----------------------------------------------------------------------------------

#ifdef USE_NCCL
// the watchdog's last act before _exit (comm_watchdog.h): ncclCommAbort is the one NCCL call meant
// to be made from another thread while a collective hangs
static void cu_nccl_abort(void) {
    if (g_cu.nccl != NULL) (void)ncclCommAbort(g_cu.nccl);
}
#endif
void backend_init(int local_rank) {
    if (g_cu.initialized) return;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        fprintf(stderr,
                "error: no usable CUDA GPU (%s)\n  hint: %s; the CPU build (make train_llama_cpu) runs without one\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0",
                cu_error_hint(e != cudaSuccess ? e : cudaErrorNoDevice));
        exit(1);
    }
    g_cu.device = local_rank % count;
    if (local_rank >= count)
        fprintf(stderr, "warning: local rank %d shares GPU %d (only %d visible); NCCL needs one GPU per rank\n",
                local_rank, g_cu.device, count);
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
    for (int s = 0; s < ALLREDUCE_SLOTS; s++)
        cudaCheck(cudaEventCreateWithFlags(&g_cu.ev_done[s], cudaEventDisableTiming));
    g_cu.plans = new std::vector<CuGemmPlan>();
    g_cu.plans->reserve(256);
    g_cu.plan_index = new std::unordered_map<CuGemmKey, size_t, CuGemmKeyHash>();
    const char* pc = getenv("GRASS_CUDA_PLAN_CACHE");
    g_cu.plan_cache_max = pc != NULL && atoi(pc) > 0 ? (size_t)atoi(pc) : CU_PLAN_CACHE_DEFAULT;
    g_cu.plan_clock = 0;
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
    g_cu.world = mpi_world(&g_cu.rank);  // comm.h: 1 when MPI was never started (tests)
    if (g_cu.world > 1) {
        const char* no = getenv("GRASS_NO_NCCL");
#ifdef USE_NCCL
        if (no == NULL || atoi(no) == 0) {
            ncclUniqueId id;
            if (g_cu.rank == 0) ncclCheck(ncclGetUniqueId(&id));
            mpi_bcast(&id, sizeof(id), MPI_BYTE, 0);  // the NCCL id, from rank 0
            ncclCheck(ncclCommInitRank(&g_cu.nccl, g_cu.world, id, g_cu.rank));
            g_cu.use_nccl = 1;
            watchdog_on_fire(cu_nccl_abort);  // a lost peer: abort NCCL's kernels before the process ends
        }
#else
        (void)no;
#endif
        if (!g_cu.use_nccl && g_cu.rank == 0)
            fprintf(stderr, "warning: %d ranks without NCCL: all-reduces go through host memory and MPI (slow)\n",
                    g_cu.world);
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

#endif // GRASS_CUDA_LIFECYCLE_CUH
