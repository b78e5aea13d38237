/*
 * cuda/gemm.cuh: the GEMMs. cu_gemm runs D = alpha op(A) op(B) + beta C through cuBLASLt with
 * a cache of plans (descriptors, layouts and the heuristic's algorithm per shape, type and
 * alignment; g_cu.plans) and falls back to cublasGemmEx where cuBLASLt has no algorithm or
 * refuses its own; CU_XTYPE is floatX's cuBLAS type. matmul_forward, matmul_backward_input and
 * matmul_backward_weight (floatX or fp32 output) map the row-major linear layer onto it.
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_GEMM_CUH
#define GRASS_CUDA_GEMM_CUH

#include "common.cuh"

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
// dW (out x in) (+)= dY^T X:  col-major dW^T (in x out) = X^T (in x N) op_T(dY^T as out x N).
// An fp32 dW (--grad-dtype fp32) is C/D in fp32 with the same floatX inputs: the fp32 sum is
// added to the fp32 accumulator and never rounded to bf16.
void matmul_backward_weight(GradBuf dw, const floatX* dout, const floatX* inp, int N, int in, int outd, int accumulate) {
    cudaDataType tc = dw.dtype == GRAD_FP32 ? CUDA_R_32F : CU_XTYPE;
    cu_gemm(0, 1, in, outd, N, inp, CU_XTYPE, in, dout, CU_XTYPE, outd, dw.p, tc, in, 1.0f, accumulate ? 1.0f : 0.0f);
}

#endif // GRASS_CUDA_GEMM_CUH
