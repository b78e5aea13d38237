/*
 * test_emu.cu: checks of the CUDA emulator itself (tests/cuda_emu), each against a host
 * computation: thread and block indices, __syncthreads, warp shuffles, dynamic shared memory,
 * launch errors, WMMA, cub::DeviceRadixSort's order, cuBLASLt GEMM layouts and types, and the runtime's
 * copy checks. The last part shows that the emulator catches what a GPU would punish: a missing
 * __syncthreads gives a wrong sum, a divergent barrier or a shuffle naming exited lanes stops
 * the program, and so does a misaligned WMMA load.
 *
 *   make build/emu/test_emu && ./build/emu/test_emu          (emulated, on the CPU)
 *   make test_emu_gpu && ./tests/bin/test_emu_gpu            (the same checks on a GPU)
 *
 * Written as CUDA, so that the emulator's idea of CUDA is checked against the hardware's too
 * (scripts/gpu_check.sh runs the GPU build); the emulator-only checks are #ifdef GRASS_CUDA_EMU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <mma.h>
#include <cub/cub.cuh>
#include "tests/test_util.h"
#ifdef GRASS_CUDA_EMU
#include <unistd.h>
#include <sys/wait.h>
#endif

#define CK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s failed: %s at %s:%d\n", #call, cudaGetErrorString(e_), __FILE__, __LINE__); exit(1); } } while (0)

template <typename T> static T* dev_alloc(size_t n) { T* p = NULL; CK(cudaMalloc(&p, n * sizeof(T))); return p; }
template <typename T> static std::vector<T> down(const T* d, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}
template <typename T> static T* up(const std::vector<T>& h) {
    T* d = dev_alloc<T>(h.size());
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

// ---- kernels --------------------------------------------------------------------------------------

__global__ void k_ids(int* out) {
    int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int nt = blockDim.x * blockDim.y * blockDim.z;
    out[bid * nt + tid] = bid * 100000 + tid;
}

// tree sum of blockDim.x values in shared memory (blockDim.x a power of two); with_barrier = 0
// leaves out the barrier between the levels, a race that a GPU may or may not show
__global__ void k_block_sum(const float* x, float* out, int with_barrier) {
    __shared__ float s[256];
    s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        float v = threadIdx.x < (unsigned)h ? s[threadIdx.x] + s[threadIdx.x + h] : 0.0f;
        if (with_barrier) __syncthreads();
        if (threadIdx.x < (unsigned)h) s[threadIdx.x] = v;
        if (with_barrier) __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

__global__ void k_shuffles(const int* x, int* xo, int* dn, int* upv, int* idx, int* wsum) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[i];
    xo[i] = __shfl_xor_sync(0xffffffffu, v, 5);
    dn[i] = __shfl_down_sync(0xffffffffu, v, 3, 16);
    upv[i] = __shfl_up_sync(0xffffffffu, v, 2);
    idx[i] = __shfl_sync(0xffffffffu, v, 7, 8);
    int s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    wsum[i] = s;
}

__global__ void k_dyn_smem(const float* x, float* out, int n) {
    extern __shared__ float dyn[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = x[i] * 2.0f;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = dyn[n - 1 - i];
}

// one warp: C (16 x 16, row-major) = A B (+ C) with A row- or column-major, through WMMA
template <bool A_ROW>
__global__ void k_wmma(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C, int accumulate) {
    using namespace nvcuda;
    typedef typename std::conditional<A_ROW, wmma::row_major, wmma::col_major>::type LA;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
    if (accumulate) wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
    else wmma::fill_fragment(c, 0.0f);
    wmma::load_matrix_sync(a, A, 16);
    wmma::load_matrix_sync(b, B, 16);
    wmma::mma_sync(c, a, b, c);
    wmma::store_matrix_sync(C, c, 16, wmma::mem_row_major);
}

#ifdef GRASS_CUDA_EMU
__global__ void k_divergent_barrier(float* x) {
    if (threadIdx.x < 16) __syncthreads();  // waits for lanes 16..31, which wait for lanes 0..15
    else __syncwarp();
    x[threadIdx.x] = 1.0f;
}
__global__ void k_shuffle_after_exit(float* x) {
    if (threadIdx.x >= 20) return;  // lanes 20..31 have exited
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}
__global__ void k_shuffle_partial_warp(float* x) {  // launched with 48 threads: warp 1 has 16 lanes
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}
#endif

// ---- checks ---------------------------------------------------------------------------------------

static void test_indices(void) {
    dim3 grid(3, 2, 2), block(5, 4, 3);
    int nb = 12, nt = 60;
    int* d = dev_alloc<int>(nb * nt);
    k_ids<<<grid, block>>>(d);
    CK(cudaGetLastError());
    std::vector<int> h = down(d, nb * nt);
    int bad = 0;
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < nt; t++) bad += h[b * nt + t] != b * 100000 + t;
    CHECK(bad == 0, "thread/block indices: %d of %d wrong", bad, nb * nt);
    printf("  3-D grid and block indices: %d threads, %d wrong\n", nb * nt, bad);
    CK(cudaFree(d));
}

static void test_block_sum(void) {
    int blocks = 7, threads = 256;
    std::vector<float> x(blocks * threads);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 37) % 101) - 50.0f;  // integers: exact sums
    float* dx = up(x);
    float* dout = dev_alloc<float>(blocks);
    k_block_sum<<<blocks, threads>>>(dx, dout, 1);
    CK(cudaGetLastError());
    std::vector<float> got = down(dout, blocks);
    int bad = 0;
    for (int b = 0; b < blocks; b++) {
        double s = 0;
        for (int t = 0; t < threads; t++) s += x[b * threads + t];
        bad += got[b] != (float)s;
    }
    CHECK(bad == 0, "block sum with barriers: %d of %d blocks wrong", bad, blocks);
    printf("  shared-memory tree sum with __syncthreads: %d of %d blocks wrong\n", bad, blocks);
#ifdef GRASS_CUDA_EMU
    // without the barrier, thread 0 runs all its levels before thread 1 writes: a wrong sum
    k_block_sum<<<blocks, threads>>>(dx, dout, 0);
    got = down(dout, blocks);
    int wrong = 0;
    for (int b = 0; b < blocks; b++) {
        double s = 0;
        for (int t = 0; t < threads; t++) s += x[b * threads + t];
        wrong += got[b] != (float)s;
    }
    CHECK(wrong == blocks, "the race without __syncthreads went unnoticed in %d of %d blocks", blocks - wrong, blocks);
    printf("  the same sum without __syncthreads: %d of %d blocks wrong (the race shows)\n", wrong, blocks);
#endif
    CK(cudaFree(dx)); CK(cudaFree(dout));
}

static void test_shuffles(void) {
    int n = 128;
    std::vector<int> x(n);
    for (int i = 0; i < n; i++) x[i] = (i * 7919) % 1000;
    int* dx = up(x);
    int *xo = dev_alloc<int>(n), *dn = dev_alloc<int>(n), *uv = dev_alloc<int>(n), *ix = dev_alloc<int>(n), *ws = dev_alloc<int>(n);
    k_shuffles<<<2, 64>>>(dx, xo, dn, uv, ix, ws);
    CK(cudaGetLastError());
    std::vector<int> a = down(xo, n), b = down(dn, n), c = down(uv, n), d = down(ix, n), e = down(ws, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int lane = i % 32, w0 = i - lane;
        int sum = 0;
        for (int l = 0; l < 32; l++) sum += x[w0 + l];
        int down_src = (lane % 16) + 3 < 16 ? i + 3 : i;   // width 16: no crossing into the next 16
        int up_src = lane >= 2 ? i - 2 : i;
        int idx_src = w0 + (lane / 8) * 8 + 7;              // width 8: lane 7 of each group of 8
        bad += a[i] != x[w0 + (lane ^ 5)];
        bad += b[i] != x[down_src];
        bad += c[i] != x[up_src];
        bad += d[i] != x[idx_src];
        bad += e[i] != sum;
    }
    CHECK(bad == 0, "warp shuffles: %d wrong values", bad);
    printf("  __shfl_xor/down/up/sync (widths 32, 16, 8) and a butterfly warp sum: %d wrong\n", bad);
    CK(cudaFree(dx)); CK(cudaFree(xo)); CK(cudaFree(dn)); CK(cudaFree(uv)); CK(cudaFree(ix)); CK(cudaFree(ws));
}

static void test_dynamic_smem(void) {
    int n = 20000;  // 80 000 bytes: above the 48 KiB default
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[i] = (float)i;
    float* dx = up(x);
    float* dout = dev_alloc<float>(n);
    size_t bytes = n * sizeof(float);
    (void)cudaGetLastError();
    k_dyn_smem<<<1, 256, bytes>>>(dx, dout, n);
    cudaError_t e = cudaGetLastError();
    CHECK(e != cudaSuccess, "a launch with 80 KB of dynamic shared memory and no opt-in was accepted");
    CK(cudaFuncSetAttribute(k_dyn_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    k_dyn_smem<<<1, 256, bytes>>>(dx, dout, n);
    CK(cudaGetLastError());
    std::vector<float> got = down(dout, n);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += got[i] != 2.0f * (float)(n - 1 - i);
    CHECK(bad == 0, "dynamic shared memory: %d wrong", bad);
    printf("  80 KB of dynamic shared memory: refused without the opt-in (%s), then %d wrong\n", cudaGetErrorName(e), bad);
    k_dyn_smem<<<1, 1025, 0>>>(dx, dout, 1);
    e = cudaGetLastError();
    CHECK(e == cudaErrorInvalidConfiguration, "a block of 1025 threads gave %s", cudaGetErrorName(e));
    printf("  a block of 1025 threads: %s\n", cudaGetErrorName(e));
    CK(cudaFree(dx)); CK(cudaFree(dout));
}

static float bf(float x) { return __bfloat162float(__float2bfloat16(x)); }

static void test_wmma(void) {
    std::vector<__nv_bfloat16> A(256), At(256), B(256);
    std::vector<float> a(256), b(256), c0(256);
    for (int i = 0; i < 256; i++) {
        a[i] = bf(0.25f * (float)((i * 13) % 17) - 2.0f);
        b[i] = bf(0.125f * (float)((i * 29) % 23) - 1.0f);
        c0[i] = 0.5f * (float)(i % 9);
        A[i] = __float2bfloat16(a[i]);
        B[i] = __float2bfloat16(b[i]);
    }
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 16; k++) At[k * 16 + r] = A[r * 16 + k];  // the same A, column-major
    __nv_bfloat16 *dA = up(A), *dAt = up(At), *dB = up(B);
    float* dC = up(c0);
    int bad = 0;
    for (int acc = 0; acc <= 1; acc++)
        for (int col = 0; col <= 1; col++) {
            CK(cudaMemcpy(dC, c0.data(), 256 * sizeof(float), cudaMemcpyHostToDevice));
            if (col) k_wmma<false><<<1, 32>>>(dAt, dB, dC, acc);
            else k_wmma<true><<<1, 32>>>(dA, dB, dC, acc);
            CK(cudaGetLastError());
            std::vector<float> got = down(dC, 256);
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 16; j++) {
                    double s = acc ? c0[i * 16 + j] : 0.0;  // products of these bf16 values are exact in fp32
                    for (int k = 0; k < 16; k++) s += (double)a[i * 16 + k] * b[k * 16 + j];
                    bad += got[i * 16 + j] != (float)s;
                }
        }
    CHECK(bad == 0, "wmma 16x16x16: %d wrong", bad);
    printf("  WMMA 16x16x16 bf16 -> fp32 (A row/col-major, with and without accumulate): %d wrong\n", bad);
    CK(cudaFree(dA)); CK(cudaFree(dAt)); CK(cudaFree(dB)); CK(cudaFree(dC));
}

// CUB's radix order: -0.0 == +0.0, negatives below positives, stable for equal keys
static void test_radix_sort(void) {
    std::vector<float> keys = {3.0f, -1.0f, 0.0f, -0.0f, 3.0f, 2.5f, -7.0f, 0.0f, 1e-30f, -1e-30f, 3.0f, 100.0f};
    int n = (int)keys.size();
    std::vector<int> vals(n);
    for (int i = 0; i < n; i++) vals[i] = i;
    float *dk = up(keys), *dko = dev_alloc<float>(n);
    int *dv = up(vals), *dvo = dev_alloc<int>(n);
    int bad = 0;
    for (int desc = 0; desc <= 1; desc++) {
        size_t bytes = 0;
        if (desc) CK(cub::DeviceRadixSort::SortPairsDescending(NULL, bytes, dk, dko, dv, dvo, n));
        else CK(cub::DeviceRadixSort::SortPairs(NULL, bytes, dk, dko, dv, dvo, n));
        void* tmp = NULL;
        CK(cudaMalloc(&tmp, bytes));
        if (desc) CK(cub::DeviceRadixSort::SortPairsDescending(tmp, bytes, dk, dko, dv, dvo, n));
        else CK(cub::DeviceRadixSort::SortPairs(tmp, bytes, dk, dko, dv, dvo, n));
        std::vector<int> got = down(dvo, n);
        std::vector<int> want(vals);
        std::stable_sort(want.begin(), want.end(), [&](int x, int y) {
            float a = keys[x] == 0.0f ? 0.0f : keys[x], b = keys[y] == 0.0f ? 0.0f : keys[y];
            return desc ? a > b : a < b;
        });
        for (int i = 0; i < n; i++) bad += got[i] != want[i];
        CK(cudaFree(tmp));
    }
    // int keys restricted to bits [0, 4): only the low nibble orders them
    std::vector<int> ik = {0x35, 0x12, 0x27, 0x41, 0x02, 0x18};
    int *dik = up(ik), *diko = dev_alloc<int>(ik.size());
    size_t bytes = 0;
    CK(cub::DeviceRadixSort::SortPairs(NULL, bytes, dik, diko, dv, dvo, (int)ik.size(), 0, 4));
    void* tmp = NULL;
    CK(cudaMalloc(&tmp, bytes));
    CK(cub::DeviceRadixSort::SortPairs(tmp, bytes, dik, diko, dv, dvo, (int)ik.size(), 0, 4));
    std::vector<int> got = down(dvo, ik.size());
    int want_order[] = {3, 1, 4, 0, 2, 5};  // nibbles 5,2,7,1,2,8 -> 1(3) 2(1) 2(4) 5(0) 7(2) 8(5)
    for (int i = 0; i < 6; i++) bad += got[i] != want_order[i];
    CHECK(bad == 0, "radix sort: %d positions differ from CUB's order", bad);
    printf("  cub::DeviceRadixSort (floats with -0.0 and ties, both directions; int bit range): %d wrong\n", bad);
    CK(cudaFree(tmp)); CK(cudaFree(dk)); CK(cudaFree(dko)); CK(cudaFree(dv)); CK(cudaFree(dvo)); CK(cudaFree(dik)); CK(cudaFree(diko));
}

// cuBLASLt: D = op(A) op(B) in every transpose combination, with padded leading dimensions
static void test_lt_gemm(void) {
    cublasLtHandle_t lt;
    CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    int m = 5, n = 3, k = 4, pad = 2;
    int bad = 0, cases = 0;
    for (int ta = 0; ta <= 1; ta++)
        for (int tb = 0; tb <= 1; tb++) {
            int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int lda = ar + pad, ldb = br + pad, ldc = m + pad;
            std::vector<float> A((size_t)lda * ac), B((size_t)ldb * bc), C((size_t)ldc * n, 0.0f);
            for (size_t i = 0; i < A.size(); i++) A[i] = (float)((int)(i * 5 % 11) - 5);
            for (size_t i = 0; i < B.size(); i++) B[i] = (float)((int)(i * 3 % 7) - 3);
            float *dA = up(A), *dB = up(B), *dC = up(C);
            cublasLtMatmulDesc_t desc;
            cublasLtMatrixLayout_t la, lb, lc;
            cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
            cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof(oa));
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof(ob));
            cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, ar, ac, lda);
            cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, br, bc, ldb);
            cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc);
            float alpha = 1.0f, beta = 0.0f;
            cublasStatus_t st = cublasLtMatmul(lt, desc, &alpha, dA, la, dB, lb, &beta, dC, lc, dC, lc, NULL, NULL, 0, 0);
            CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasLtMatmul ta=%d tb=%d: status %d", ta, tb, (int)st);
            std::vector<float> got = down(dC, C.size());
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    float s = 0;
                    for (int q = 0; q < k; q++)
                        s += (ta ? A[(size_t)i * lda + q] : A[(size_t)q * lda + i]) * (tb ? B[(size_t)q * ldb + j] : B[(size_t)j * ldb + q]);
                    bad += got[(size_t)j * ldc + i] != s;
                }
            cases++;
            // a layout that does not fit the problem is refused, as cuBLASLt does
            cublasLtMatrixLayout_t wrong;
            cublasLtMatrixLayoutCreate(&wrong, CUDA_R_32F, br + 1, bc, ldb + 1);
            st = cublasLtMatmul(lt, desc, &alpha, dA, la, dB, wrong, &beta, dC, lc, dC, lc, NULL, NULL, 0, 0);
            CHECK(st == CUBLAS_STATUS_INVALID_VALUE, "a mismatched B layout was accepted (status %d)", (int)st);
            CK(cudaFree(dA)); CK(cudaFree(dB)); CK(cudaFree(dC));
        }
    CHECK(bad == 0, "cuBLASLt GEMMs: %d wrong", bad);
    printf("  cuBLASLt D = op(A) op(B), %d transpose cases with padded ld: %d wrong; mismatched layouts refused\n", cases, bad);
}

// cuBLASLt with bf16 A and B and fp32 C/D (Grass's compressed gradients; the weight gradients with
// --grad-dtype fp32): D = A B^T + C reads and writes C in fp32, so an accumulator that bf16 cannot
// hold (1000.125 + i) keeps its low bits. On the emulator, bf16 A with fp32 B, a combination
// cuBLASLt does not offer with CUBLAS_COMPUTE_32F, is refused.
static void test_lt_bf16_in_fp32_out(void) {
    cublasLtHandle_t lt;
    CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    int m = 6, n = 5, k = 7;
    std::vector<__nv_bfloat16> A((size_t)m * k), B((size_t)n * k);
    std::vector<float> Af(A.size()), Bf(B.size()), C((size_t)m * n);
    for (size_t i = 0; i < A.size(); i++) { Af[i] = (float)((int)(i * 5 % 11) - 5); A[i] = __float2bfloat16(Af[i]); }
    for (size_t i = 0; i < B.size(); i++) { Bf[i] = (float)((int)(i * 3 % 7) - 3); B[i] = __float2bfloat16(Bf[i]); }
    for (size_t i = 0; i < C.size(); i++) C[i] = 1000.125f + (float)i;
    __nv_bfloat16 *dA = up(A), *dB = up(B);
    float* dC = up(C);
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc, lbf;
    cublasOperation_t ob = CUBLAS_OP_T;
    CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS, "desc");
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof(ob)) == CUBLAS_STATUS_SUCCESS, "transb");
    CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, m, k, m) == CUBLAS_STATUS_SUCCESS, "layout A");
    CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, n, k, n) == CUBLAS_STATUS_SUCCESS, "layout B");
    CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m) == CUBLAS_STATUS_SUCCESS, "layout C");
    float alpha = 1.0f, beta = 1.0f;
    cublasStatus_t st = cublasLtMatmul(lt, desc, &alpha, dA, la, dB, lb, &beta, dC, lc, dC, lc, NULL, NULL, 0, 0);
    CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasLtMatmul bf16 x bf16 -> fp32: status %d", (int)st);
    CK(cudaDeviceSynchronize());
    std::vector<float> got = down(dC, C.size());
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int q = 0; q < k; q++) s += Af[(size_t)q * m + i] * Bf[(size_t)q * n + j];
            bad += got[(size_t)j * m + i] != C[(size_t)j * m + i] + s;
        }
    CHECK(bad == 0, "bf16 x bf16 -> fp32 with beta = 1: %d of %d wrong", bad, m * n);
#ifdef GRASS_CUDA_EMU
    CHECK(cublasLtMatrixLayoutCreate(&lbf, CUDA_R_32F, n, k, n) == CUBLAS_STATUS_SUCCESS, "layout B fp32");
    st = cublasLtMatmul(lt, desc, &alpha, dA, la, (const void*)dC, lbf, &beta, dC, lc, dC, lc, NULL, NULL, 0, 0);
    CHECK(st == CUBLAS_STATUS_NOT_SUPPORTED, "bf16 A with fp32 B was accepted (status %d)", (int)st);
#else
    (void)lbf;
#endif
    printf("  cuBLASLt bf16 A, B with fp32 C/D, beta 1: %d wrong (the fp32 accumulator keeps its low bits)\n", bad);
    CK(cudaFree(dA)); CK(cudaFree(dB)); CK(cudaFree(dC));
}

#ifdef GRASS_CUDA_EMU
// runs fn in a child process; the emulator must stop it (abort) with a message containing want
static void expect_death(const char* what, void (*fn)(void), const char* want) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { perror("pipe"); exit(1); }
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        fn();
        _exit(0);  // not stopped: the check below fails
    }
    close(pipefd[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while ((r = read(pipefd[0], buf + len, sizeof(buf) - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int stopped = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(stopped && strstr(buf, want) != NULL, "%s: not stopped with \"%s\" (stderr: %s)", what, want, buf);
    char* nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    printf("  %s: stopped: %s\n", what, buf);
}
static float* g_scratch;
static void die_divergent(void) { k_divergent_barrier<<<1, 32>>>(g_scratch); }
static void die_exited(void) { k_shuffle_after_exit<<<1, 32>>>(g_scratch); }
static void die_partial(void) { k_shuffle_partial_warp<<<1, 48>>>(g_scratch); }
static void die_wmma_misaligned(void) {
    __nv_bfloat16* A = (__nv_bfloat16*)g_scratch;
    k_wmma<true><<<1, 32>>>(A + 1, A, g_scratch + 512, 0);
}
static void die_wmma_divergent(void) {  // WMMA in 16 lanes only
    k_wmma<true><<<1, 16>>>((__nv_bfloat16*)g_scratch, (__nv_bfloat16*)g_scratch, g_scratch + 512, 0);
}

// GRASS_EMU_BYTES: the pages a kernel touches. k_sum3 reads 3 pages of `in` and writes 1 of `out`;
// k_inc reads and writes the same page (counted once each way); a GEMM is not a kernel
__global__ void k_sum3(float* out, const float* in) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < 1024) out[i] = in[i] + in[i + 1024] + in[i + 2048];
}
__global__ void k_inc(float* x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < 1024) x[i] += 1.0f;
}
static void test_kernel_bytes(void) {
    int saved = emu::g_bytes_mode;
    emu::g_bytes_mode = 1;  // allocations page-aligned from here on
    float* in = dev_alloc<float>(3 * 1024);
    float* out = dev_alloc<float>(1024 + 4096);  // 5 pages, 1 of them written
    std::vector<float> h(3 * 1024);
    for (int i = 0; i < 3 * 1024; i++) h[i] = (float)(i % 7);
    CK(cudaMemcpy(in, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    std::pair<long long, long long> b0 = emu::g_counts.kernel_bytes["k_sum3"], i0 = emu::g_counts.kernel_bytes["k_inc"];
    k_sum3<<<4, 256>>>(out, in);
    k_sum3<<<4, 256>>>(out, in);
    k_inc<<<4, 256>>>(out);
    std::pair<long long, long long> b1 = emu::g_counts.kernel_bytes["k_sum3"], i1 = emu::g_counts.kernel_bytes["k_inc"];
    std::vector<float> r(1024);
    CK(cudaMemcpy(r.data(), out, 1024 * sizeof(float), cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int i = 0; i < 1024; i++) ok &= r[i] == h[i] + h[i + 1024] + h[i + 2048] + 1.0f;
    CHECK(ok, "bytes tracing: the kernels still compute (protection lifted after each launch)");
    CHECK(b1.first - b0.first == 2 * 3 * 4096 && b1.second - b0.second == 2 * 4096,
          "bytes tracing: k_sum3 twice read %lld bytes (want 24576) and wrote %lld (want 8192)", b1.first - b0.first, b1.second - b0.second);
    CHECK(i1.first - i0.first == 4096 && i1.second - i0.second == 4096,
          "bytes tracing: k_inc read %lld and wrote %lld bytes (want 4096 each)", i1.first - i0.first, i1.second - i0.second);
    CK(cudaFree(in)); CK(cudaFree(out));
    emu::g_bytes_mode = saved;
    printf("  bytes tracing: the distinct pages each launch reads and writes\n");
}

// the counts dev/perf_counts.py reads (GRASS_EMU_COUNTS): launches by name, host syncs,
// allocations, copies, and GEMM shapes with their 16-byte alignment
static void test_counts(void) {
    emu::Counts before = emu::g_counts;
    int* d = dev_alloc<int>(64 * 60);               // 1 allocation
    k_ids<<<dim3(2), dim3(8)>>>(d);                 // 2 launches of k_ids
    k_ids<<<dim3(1), dim3(4)>>>(d);
    std::vector<int> h(16);
    CK(cudaMemcpyAsync(h.data(), d, 64, cudaMemcpyDeviceToHost, 0));   // a D2H copy, not a sync
    CK(cudaStreamSynchronize(0));                                       // 1 sync
    CK(cudaMemcpy(d, h.data(), 64, cudaMemcpyHostToDevice));            // an H2D copy that is a sync
    CK(cudaMemcpyAsync(d, h.data(), 64, cudaMemcpyHostToDevice, 0));   // async from pageable memory
    int* pin = NULL;
    CK(cudaMallocHost((void**)&pin, 256));                              // 1 host allocation
    CK(cudaMemcpyAsync(d, pin + 16, 64, cudaMemcpyHostToDevice, 0));   // async from pinned memory
    CK(cudaMemcpyAsync(d, pin + 60, 64, cudaMemcpyHostToDevice, 0));   // leaves the pinned block: pageable
    CK(cudaFreeHost(pin));
    CHECK(cudaFreeHost(pin) == cudaErrorInvalidValue, "a second cudaFreeHost of the same block was accepted");
    (void)cudaGetLastError();
    CK(cudaFree(d));
    // GEMMs, fp32: ld 8 (32 bytes) aligned; ld 5 (20 bytes) not; a pointer 4 bytes into an allocation not
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    float* buf = dev_alloc<float>(8 * 8 * 3 + 1);
    std::vector<float> z(8 * 8 * 3 + 1, 0.0f);
    CK(cudaMemcpy(buf, z.data(), z.size() * sizeof(float), cudaMemcpyHostToDevice));
    auto gemm = [&](float* A, float* B, float* C, int ld) {
        cublasLtMatmulDesc_t desc;
        cublasLtMatrixLayout_t l;
        cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 4, 4, ld);
        float alpha = 1.0f, beta = 0.0f;
        return cublasLtMatmul(lt, desc, &alpha, A, l, B, l, &beta, C, l, C, l, NULL, NULL, 0, 0);
    };
    CHECK(gemm(buf, buf + 64, buf + 128, 8) == CUBLAS_STATUS_SUCCESS, "count GEMM 1");
    CHECK(gemm(buf, buf + 64, buf + 128, 8) == CUBLAS_STATUS_SUCCESS, "count GEMM 2");
    CHECK(gemm(buf, buf + 64, buf + 128, 5) == CUBLAS_STATUS_SUCCESS, "count GEMM 3");
    CHECK(gemm(buf + 1, buf + 64, buf + 128, 8) == CUBLAS_STATUS_SUCCESS, "count GEMM 4");
    CK(cudaFree(buf));
    const emu::Counts& c = emu::g_counts;
    long long k_ids_launches = c.kernels.count("k_ids") ? c.kernels.at("k_ids") : 0;
    long long k_ids_before = before.kernels.count("k_ids") ? before.kernels.at("k_ids") : 0;
    CHECK(k_ids_launches - k_ids_before == 2, "counts: %lld launches of k_ids, want 2", k_ids_launches - k_ids_before);
    CHECK(c.syncs - before.syncs == 3, "counts: %lld host syncs, want 3 (stream sync and two blocking copies)", c.syncs - before.syncs);
    CHECK(c.mallocs - before.mallocs == 2 && c.frees - before.frees == 2, "counts: %lld allocations, %lld frees, want 2 and 2",
          c.mallocs - before.mallocs, c.frees - before.frees);
    CHECK(c.copies_d2h - before.copies_d2h == 1 && c.bytes_d2h - before.bytes_d2h == 64 && c.copies_h2d - before.copies_h2d == 5,
          "counts: D2H %lld (%lld bytes), H2D %lld, want 1 (64), 5", c.copies_d2h - before.copies_d2h,
          c.bytes_d2h - before.bytes_d2h, c.copies_h2d - before.copies_h2d);
    CHECK(c.copies_h2d_pageable - before.copies_h2d_pageable == 2 && c.host_allocs - before.host_allocs == 1,
          "counts: %lld asynchronous copies from pageable memory (want 2), %lld pinned allocations (want 1)",
          c.copies_h2d_pageable - before.copies_h2d_pageable, c.host_allocs - before.host_allocs);
    long long aligned = 0, unaligned = 0;
    for (auto& kv : c.gemms) {
        long long n = kv.second - (before.gemms.count(kv.first) ? before.gemms.at(kv.first) : 0);
        if (kv.first.m == 4 && kv.first.n == 4 && kv.first.k == 4) (kv.first.aligned ? aligned : unaligned) += n;
    }
    CHECK(aligned == 2 && unaligned == 2, "counts: %lld aligned and %lld unaligned 4x4x4 GEMMs, want 2 and 2", aligned, unaligned);
    printf("  counts: launches by name, syncs, allocations, copies (pageable or pinned), GEMM alignment as made\n");
}

static void test_runtime_checks(void) {
    float* d = dev_alloc<float>(1024);
    std::vector<float> h(2048);
    CHECK(cudaMemcpy(d, h.data(), 2048 * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess,
          "a copy past the end of an allocation was accepted");
    (void)cudaGetLastError();
    CHECK(cudaMemcpy(h.data(), d, 16, cudaMemcpyHostToDevice) != cudaSuccess, "a copy in the wrong direction was accepted");
    (void)cudaGetLastError();
    std::vector<float> fresh = down(d, 4);
    CHECK(isnan(fresh[0]) && isnan(fresh[3]), "fresh device memory is not poisoned with NaN");
    void* big = NULL;
    cudaError_t e = cudaMalloc(&big, (size_t)1 << 50);
    CHECK(e == cudaErrorMemoryAllocation, "a 1 PiB allocation gave %s", cudaGetErrorName(e));
    (void)cudaGetLastError();
    printf("  copies past an allocation or in the wrong direction refused; fresh memory reads NaN; 1 PiB: %s\n",
           cudaGetErrorName(e));
    g_scratch = dev_alloc<float>(4096);
    CK(cudaMemset(g_scratch, 0, 4096 * sizeof(float)));
    expect_death("half a warp at __syncthreads, half at __syncwarp", die_divergent, "deadlock");
    expect_death("a full-mask shuffle after 12 lanes returned", die_exited, "already returned");
    expect_death("a full-mask shuffle in a 16-lane warp", die_partial, "beyond the block");
    expect_death("a WMMA load from a misaligned pointer", die_wmma_misaligned, "not 256-bit aligned");
    expect_death("WMMA in a 16-thread block", die_wmma_divergent, "beyond the block");
    CK(cudaFree(d));
}
#endif

int main(void) {
    test_line_buffered_stdout();
    printf("test_emu: the CUDA emulator against host computations\n");
    test_indices();
    test_block_sum();
    test_shuffles();
    test_dynamic_smem();
    test_wmma();
    test_radix_sort();
    test_lt_gemm();
    test_lt_bf16_in_fp32_out();
#ifdef GRASS_CUDA_EMU
    test_runtime_checks();
    test_counts();
    test_kernel_bytes();
#endif
    return test_summary("test_emu");
}
