/*
 * cuda/init.cuh: param_init_tensor, the initial weights drawn on the device (llama_init_random):
 * one thread per pair of values, with rng.h's rng_init_pair, the same function and so the same
 * floats as the CPU build; written straight into the stored layout (zeros in the ffn padding),
 * with no host copy. The hashes: per-thread integer sums, a fixed tree per block, the block
 * sums added on the host (integer sums: exact in any order).
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_INIT_CUH
#define GRASS_CUDA_INIT_CUH

#include "common.cuh"

#define CU_INIT_THREADS 256
#define CU_INIT_MAXBLOCKS 1024

__global__ void gk_param_init(floatX* dst, ParamInit p, unsigned long long* block_hash) {
    __shared__ unsigned long long sh[2][CU_INIT_THREADS];
    size_t n = (size_t)p.rows_hf * p.cols_hf, pairs = (n + 1) / 2;
    unsigned long long h0 = 0, h1 = 0;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < pairs; k += (size_t)gridDim.x * blockDim.x) {
        float v[2] = {p.fill, p.fill};
        if (p.std != 0.0) rng_init_pair(p.key, k, p.std, &v[0], &v[1]);
        for (int e = 0; e < 2 && 2 * k + e < n; e++) {
            size_t j = 2 * k + e, row = j / p.cols_hf, col = j - row * p.cols_hf;
            floatX x = cu_from<floatX>(v[e]);  // round to nearest (even), as backend_upload_floats
            dst[row * p.cols + col] = x;
#ifdef ENABLE_FP32
            float held = __bfloat162float(__float2bfloat16_rn(v[e]));
#else
            float held = cu_tof(x);  // the value as stored
#endif
            h0 += rng_hash_term(p.first + j, v[e]);
            h1 += rng_hash_term(p.first + j, held);
        }
    }
    sh[0][threadIdx.x] = h0;
    sh[1][threadIdx.x] = h1;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            sh[0][threadIdx.x] += sh[0][threadIdx.x + w];
            sh[1][threadIdx.x] += sh[1][threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { block_hash[2 * blockIdx.x] = sh[0][0]; block_hash[2 * blockIdx.x + 1] = sh[1][0]; }
}

static CuScratch cu_init_scratch;  // the blocks' hash sums

void param_init_tensor(floatX* dst, const ParamInit* p, uint64_t hash[2]) {
    size_t n = (size_t)p->rows_hf * p->cols_hf, pairs = (n + 1) / 2;
    if (p->rows != p->rows_hf || p->cols != p->cols_hf)
        backend_memset0(dst, (size_t)p->rows * p->cols * sizeof(floatX));
    if (n == 0) return;
    size_t nb = (pairs + CU_INIT_THREADS - 1) / CU_INIT_THREADS;
    if (nb > CU_INIT_MAXBLOCKS) nb = CU_INIT_MAXBLOCKS;
    unsigned long long* d_hash = (unsigned long long*)cu_scratch(&cu_init_scratch,
                                                                 CU_INIT_MAXBLOCKS * 2 * sizeof(unsigned long long),
                                                                 "initialization hash scratch");
    gk_param_init<<<(unsigned)nb, CU_INIT_THREADS, 0, g_cu.stream>>>(dst, *p, d_hash);
    CU_LAUNCHED("gk_param_init");
    unsigned long long h[2 * CU_INIT_MAXBLOCKS];
    backend_download(h, d_hash, nb * 2 * sizeof(unsigned long long));
    for (size_t b = 0; b < nb; b++) { hash[0] += h[2 * b]; hash[1] += h[2 * b + 1]; }
}

#endif // GRASS_CUDA_INIT_CUH
