/*
 * cuda/galore.cuh: GaLore's ops (backend.h, --optimizer galore): the projector from cuSOLVER's
 * SVD of the step's gradient, the projected gradient (two GEMMs, never an m x n gradient), and
 * the update: Adam in the r-dimensional subspace, then the dense P D through cuBLAS(Lt) in fp32.
 * The CPU reference is kernels_cpu.h's cpu_galore_*; the emulator runs cuSOLVER through LAPACK.
 * Needs cuda/common.cuh and cuda/gemm.cuh (cu_gemm, CU_XTYPE).
 */
#ifndef GRASS_CUDA_GALORE_CUH
#define GRASS_CUDA_GALORE_CUH

#include <cusolverDn.h>
#include "common.cuh"
#include "gemm.cuh"

#define cusolverCheck(call)                                                                               \
    do {                                                                                                  \
        cusolverStatus_t st_ = (call);                                                                    \
        if (st_ != CUSOLVER_STATUS_SUCCESS)                                                               \
            fatal("cuSOLVER error %d in %s (%s:%d)", (int)st_, #call, __FILE__, __LINE__);                \
    } while (0)

// one cuSOLVER handle, made on first use; its stream is set at every call (the compute stream)
static cusolverDnHandle_t g_cusolver = NULL;
static cusolverDnHandle_t cu_solver(void) {
    if (g_cusolver == NULL) cusolverCheck(cusolverDnCreate(&g_cusolver));
    cusolverCheck(cusolverDnSetStream(g_cusolver, g_cu.stream));
    return g_cusolver;
}

// cuSOLVER's gesvd workspace (floats) for an m x n matrix, m >= n
static int cu_gesvd_lwork(int m, int n) {
    int lwork = 0;
    cusolverCheck(cusolverDnSgesvd_bufferSize(cu_solver(), m, n, &lwork));
    return lwork;
}

// backend.h's galore_work_size, with cuSOLVER's workspace and its info word (4 floats) as the SVD's part
size_t galore_work_floats(int outd, int in) {
    int s = outd <= in ? outd : in, other = outd <= in ? in : outd;
    return galore_work_size(s, other, (size_t)cu_gesvd_lwork(other, s) + 4);
}

// cols side: A (out x in, column-major) = G (out x in, row-major) transposed in memory
__global__ void gk_transpose_to_colmajor(float* A, const float* G, int outd, int in) {
    size_t n = (size_t)outd * in;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e / in), j = (int)(e % in);
        A[i + (size_t)j * outd] = G[e];
    }
}

// One block per projector row k: row k of VT (column-major s x s), signed so that its entry of
// largest magnitude (lowest index among equals) is positive, into Pt (fp32) and Ptx (floatX)
__global__ void gk_galore_signed_rows(float* Pt, floatX* Ptx, const float* VT, int s) {
    __shared__ float best_val[256];
    __shared__ int best_idx[256];
    int k = blockIdx.x;
    float bv = -1.0f;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < s; j += blockDim.x) {
        float a = fabsf(VT[k + (size_t)j * s]);
        if (a > bv) { bv = a; bi = j; }  // j ascends within a thread: the lowest index wins ties
    }
    best_val[threadIdx.x] = bv; best_idx[threadIdx.x] = bi;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            float ov = best_val[threadIdx.x + w];
            int oi = best_idx[threadIdx.x + w];
            if (ov > best_val[threadIdx.x] || (ov == best_val[threadIdx.x] && oi < best_idx[threadIdx.x])) {
                best_val[threadIdx.x] = ov; best_idx[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    float sign = VT[k + (size_t)best_idx[0] * s] < 0.0f ? -1.0f : 1.0f;
    for (int j = threadIdx.x; j < s; j += blockDim.x) {
        float p = sign * VT[k + (size_t)j * s];
        Pt[(size_t)k * s + j] = p;
        Ptx[(size_t)k * s + j] = cu_from<floatX>(p);
    }
}

void galore_projector(float* Pt, floatX* Ptx, const float* G, int outd, int in, int cols_side, int r, float* work) {
    int s = cols_side ? in : outd, other = cols_side ? outd : in;
    int lwork = cu_gesvd_lwork(other, s);
    GaloreWork w = galore_work_layout(s, other, work);
    float *A = w.A, *sv = w.sv, *VT = w.VT, *lw = w.svd_work;
    int* info = (int*)(lw + lwork);
    if (!cols_side) {  // the row-major G is already the column-major in x out matrix
        cudaCheck(cudaMemcpyAsync(A, G, (size_t)outd * in * sizeof(float), cudaMemcpyDeviceToDevice, g_cu.stream));
    } else {
        gk_transpose_to_colmajor<<<cu_grid_for((size_t)outd * in, 256), 256, 0, g_cu.stream>>>(A, G, outd, in);
        CU_LAUNCHED("gk_transpose_to_colmajor");
    }
    // jobu 'N', jobvt 'S': only the s right singular vectors (cuSOLVER's gesvd needs rows >= cols: other >= s)
    cusolverCheck(cusolverDnSgesvd(cu_solver(), 'N', 'S', other, s, A, other, sv, NULL, 1, VT, s, lw, lwork, NULL,
                                   info));
    int h_info = 0;
    cudaCheck(cudaMemcpyAsync(&h_info, info, sizeof(int), cudaMemcpyDeviceToHost, g_cu.stream));
    cudaCheck(cudaStreamSynchronize(g_cu.stream));
    if (h_info != 0) fatal("cuSOLVER gesvd of a %d x %d GaLore gradient failed (info %d)", other, s, h_info);
    gk_galore_signed_rows<<<r, 256, 0, g_cu.stream>>>(Pt, Ptx, VT, s);
    CU_LAUNCHED("gk_galore_signed_rows");
}

void galore_project_grad(float* R, const floatX* dout, int ld_dout, const floatX* inp, const floatX* Ptx, int r, int N,
                         int in, int outd, int cols_side) {
    if (r <= 0) return;
    floatX* T = (floatX*)cu_scratch(&g_cu.sc_gather, (size_t)N * r * sizeof(floatX), "galore projection scratch");
    if (!cols_side) {
        matmul_forward_strided(T, dout, ld_dout, Ptx, N, outd, r);  // T (N x r) = dY Pt^T
        // R (r x in) += T^T X: col-major R^T (in x r) = X^T (in x N) op_T(T^T as r x N)
        cu_gemm(0, 1, in, r, N, inp, CU_XTYPE, in, T, CU_XTYPE, r, R, CUDA_R_32F, in, 1.0f, 1.0f);
    } else {
        matmul_forward(T, inp, Ptx, N, in, r);     // T (N x r) = X Pt^T
        // R (out x r) += dY^T T: col-major R^T (r x out) = T^T (r x N) op_T(dY^T as out x N)
        cu_gemm(0, 1, r, outd, N, T, CU_XTYPE, r, dout, CU_XTYPE, ld_dout, R, CUDA_R_32F, r, 1.0f, 1.0f);
    }
}

// Adam on R in place (R becomes the direction D); moments stored as S
template <typename S>
__global__ void gk_galore_adam(float* R, S* m, S* v, size_t n, AdamParams a) {
    const float gs = cu_grad_scale(a);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = R[i] * gs;
        float mi = a.b1 * cu_tof(m[i]) + (1.0f - a.b1) * g;
        float vi = a.b2 * cu_tof(v[i]) + (1.0f - a.b2) * g * g;
        m[i] = cu_from<S>(mi); v[i] = cu_from<S>(vi);
        R[i] = (mi / a.bc1) / (sqrtf(vi / a.bc2) + a.eps);
    }
}

// W -= lr (alpha U + wd W): on the master copy (W gets it rounded to nearest), else W rounded stochastically
__global__ void gk_galore_apply(floatX* W, float* Wm, const float* U, size_t n, float lr, float alpha, float wd,
                                uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float p = Wm != NULL ? Wm[i] : cu_tof(W[i]);
        float np = p - lr * (alpha * U[i] + wd * p);
        if (Wm != NULL) { Wm[i] = np; W[i] = cu_from<floatX>(np); }
        else W[i] = cu_round_sr(np, cu_rand_at(seed, i));
    }
}

void galore_adam_update(floatX* W, float* Wm, float* R, void* m, void* v, int state_dtype, const float* Pt, int r,
                        int outd, int in, int cols_side, AdamParams a, float alpha, uint64_t seed, float* work) {
    size_t nsub = cols_side ? (size_t)outd * r : (size_t)r * in;
    if (state_dtype == STATE_BF16) {
        gk_galore_adam<__nv_bfloat16><<<cu_grid_for(nsub, 256), 256, 0, g_cu.stream>>>(R, (__nv_bfloat16*)m,
                (__nv_bfloat16*)v, nsub, a);
        CU_LAUNCHED("gk_galore_adam<bf16>");
    } else {
        gk_galore_adam<float><<<cu_grid_for(nsub, 256), 256, 0, g_cu.stream>>>(R, (float*)m, (float*)v, nsub, a);
        CU_LAUNCHED("gk_galore_adam<float>");
    }
    float* U = work;
    if (!cols_side)  // U (out x in) = P D: col-major U^T (in x out) = D^T (in x r) op_T(Pt stored out x r)
        cu_gemm(0, 1, in, outd, r, R, CUDA_R_32F, in, Pt, CUDA_R_32F, outd, U, CUDA_R_32F, in, 1.0f, 0.0f);
    else             // U (out x in) = D P^T: col-major U^T (in x out) = Pt^T (in x r) D^T (r x out)
        cu_gemm(0, 0, in, outd, r, Pt, CUDA_R_32F, in, R, CUDA_R_32F, r, U, CUDA_R_32F, in, 1.0f, 0.0f);
    size_t n = (size_t)outd * in;
    gk_galore_apply<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(W, Wm, U, n, a.lr, alpha, a.wd, seed);
    CU_LAUNCHED("gk_galore_apply");
}

#endif // GRASS_CUDA_GALORE_CUH
