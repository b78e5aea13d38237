/*
 * cuda/reduce.cuh: the deterministic reductions: sumsq_floatX and sumsq_float (two passes,
 * block partial sums, then one block in a fixed tree; the order depends on n only) and
 * scale_floats; the squared norms of a matrix's rows or columns (gk_sumsq_rows, rows_sumsq: Grass's
 * norm pass).
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_REDUCE_CUH
#define GRASS_CUDA_REDUCE_CUH

#include "common.cuh"

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
// one block of 1024 threads: each thread's s summed in a fixed tree; every thread gets the total
__device__ double cu_block1024_sum_double(double s) {
    __shared__ double sh[1024];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    return sh[0];
}
__global__ void gk_sumsq_final(float* acc, const float* partial, int nparts) {
    // one block of 1024 threads: fixed strided order, then a fixed tree
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += (double)partial[i];
    double total = cu_block1024_sum_double(s);
    if (threadIdx.x == 0) *acc = (float)((double)*acc + total);
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

// backend.h's clip_factor: one thread, the CPU's expression
__global__ void gk_clip_factor(float* scale, const float* sumsq, float clip) {
    float norm = (float)sqrt((double)*sumsq);
    *scale = norm > clip ? clip / norm : 1.0f;
}
void clip_factor(float* scale, const float* sumsq, float clip) {
    gk_clip_factor<<<1, 1, 0, g_cu.stream>>>(scale, sumsq, clip);
    CU_LAUNCHED("gk_clip_factor");
}
// backend.h's loss_accumulate: one block, fixed strided order then a fixed tree (in double)
__global__ void gk_loss_accumulate(double* acc, const float* losses, int N) {
    double s = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += (double)losses[i];
    double total = cu_block1024_sum_double(s);
    if (threadIdx.x == 0) *acc += (double)(float)(total / N);
}
void loss_accumulate(double* acc, const float* losses, int N) {
    if (N <= 0) return;
    gk_loss_accumulate<<<1, 1024, 0, g_cu.stream>>>(acc, losses, N);
    CU_LAUNCHED("gk_loss_accumulate");
}

// sumsq_unscaled's first pass: gk_sumsq_partial over u = C with row j (rows side) or column j
// (cols side) divided by scale[j], the division done on the fly (one kernel, no u in memory);
// the same grid and order as gk_sumsq_partial on a stored u, so the same bits
__global__ void gk_sumsq_unscaled_partial(float* partial, const float* C, const float* scale, int r, int other,
                                          int cols_side) {
    size_t n = (size_t)r * other;
    float s = 0.0f;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        float sc = scale[cols_side ? e % r : e / other];
        float v = sc != 0.0f ? C[e] / sc : 0.0f;  // scale 0: a padding row (grass_pad_selection)
        s += v * v;
    }
    s = cu_block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
void sumsq_unscaled(float* acc, const float* C, const float* d_scale, int r, int other, int cols_side) {
    size_t n = (size_t)r * other;
    if (n == 0) return;
    int nb = cu_sumsq_blocks(n);
    float* partial = (float*)cu_scratch(&g_cu.sc_sumsq, CU_SUMSQ_MAXBLOCKS * sizeof(float), "reduction scratch");
    gk_sumsq_unscaled_partial<<<nb, CU_SUMSQ_THREADS, 0, g_cu.stream>>>(partial, C, d_scale, r, other, cols_side);
    CU_LAUNCHED("gk_sumsq_unscaled_partial");
    gk_sumsq_final<<<1, 1024, 0, g_cu.stream>>>(acc, partial, nb);
    CU_LAUNCHED("gk_sumsq_final");
}

__global__ void gk_scale_floats(float* C, float s, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        C[i] *= s;
}
void scale_floats(float* C, float s, size_t n) {
    if (n == 0) return;
    gk_scale_floats<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(C, s, n);
    CU_LAUNCHED("gk_scale_floats");
}

// norms[u] += sum of squares of the contiguous vector G[u*L .. u*L+L), one block per u
__global__ void gk_sumsq_rows(float* norms, const float* G, int L) {
    const float* g = G + (size_t)blockIdx.x * L;
    float s = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) s += g[j] * g[j];
    s = cu_block_sum(s);
    if (threadIdx.x == 0) norms[blockIdx.x] += s;
}
// rows_sumsq: one block per row (gk_sumsq_rows: a block sum in a fixed order), or one thread
// per column (the rows in order); deterministic, accumulated into norms
__global__ void gk_cols_sumsq(float* norms, const float* M, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float s = 0.0f;
    for (int i = 0; i < rows; i++) { float v = M[(size_t)i * cols + j]; s += v * v; }
    norms[j] += s;
}
void rows_sumsq(float* norms, const float* M, int rows, int cols, int by_cols) {
    if (rows <= 0 || cols <= 0) return;
    if (!by_cols) {
        gk_sumsq_rows<<<rows, 256, 0, g_cu.stream>>>(norms, M, cols);
        CU_LAUNCHED("gk_sumsq_rows");
    } else {
        gk_cols_sumsq<<<cu_ceil_div(cols, 256), 256, 0, g_cu.stream>>>(norms, M, rows, cols);
        CU_LAUNCHED("gk_cols_sumsq");
    }
}

#endif // GRASS_CUDA_REDUCE_CUH
