/*
 * cuda/gemm.cuh: the GEMMs. cu_gemm runs D = alpha op(A) op(B) + beta C through cuBLASLt with
 * a bounded cache of plans (descriptors, layouts and the heuristic's algorithm per shape, type
 * and alignment; g_cu.plans, hashed by g_cu.plan_index, least recently used evicted) and falls
 * back to cublasGemmEx where cuBLASLt has no algorithm or refuses its own; CU_XTYPE is floatX's
 * cuBLAS type. matmul_forward, matmul_backward_input and matmul_backward_weight (floatX or fp32
 * output) map the row-major linear layer onto it.
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

static void cu_plan_destroy(CuGemmPlan* p) {
    cublasCheck(cublasLtMatrixLayoutDestroy(p->la));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->lc));
    cublasCheck(cublasLtMatmulDescDestroy(p->desc));
}

// The cached plan of a problem, made on first use: cuBLASLt's descriptors, layouts and the
// heuristic's algorithm. A hash lookup; when the cache holds g_cu.plan_cache_max plans, the
// least recently used one is destroyed to make room.
static CuGemmPlan* cu_gemm_plan(const CuGemmKey& key) {
    std::unordered_map<CuGemmKey, size_t, CuGemmKeyHash>::iterator it = g_cu.plan_index->find(key);
    if (it != g_cu.plan_index->end()) {
        CuGemmPlan* p = &(*g_cu.plans)[it->second];
        p->last_use = ++g_cu.plan_clock;
        return p;
    }
    // evict the oldest last_use; the last plan fills its slot
    while (!g_cu.plans->empty() && g_cu.plans->size() >= g_cu.plan_cache_max) {
        size_t old = 0;
        for (size_t i = 1; i < g_cu.plans->size(); i++)
            if ((*g_cu.plans)[i].last_use < (*g_cu.plans)[old].last_use) old = i;
        cu_plan_destroy(&(*g_cu.plans)[old]);
        g_cu.plan_index->erase((*g_cu.plans)[old].key);
        if (old != g_cu.plans->size() - 1) {
            (*g_cu.plans)[old] = g_cu.plans->back();
            (*g_cu.plan_index)[(*g_cu.plans)[old].key] = old;
        }
        g_cu.plans->pop_back();
    }
    CuGemmPlan p;
    memset(&p, 0, sizeof(p));
    p.key = key;
    int opA = key.opA, opB = key.opB, m = key.m, n = key.n, k = key.k;
    cudaDataType ta = (cudaDataType)key.ta, tb = (cudaDataType)key.tb, tc = (cudaDataType)key.tc;
    cublasCheck(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t oa = opA ? CUBLAS_OP_T : CUBLAS_OP_N, ob = opB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof(oa)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof(ob)));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.la, ta, opA ? k : m, opA ? m : k, key.lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.lb, tb, opB ? n : k, opB ? k : n, key.ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.lc, tc, m, n, key.ldc));
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = g_cu.lt_workspace_bytes;
    uint32_t ua = (uint32_t)key.alA, ub = (uint32_t)key.alB, uc = (uint32_t)key.alC;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ua,
                                                     sizeof(ua)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ub,
                                                     sizeof(ub)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &uc,
                                                     sizeof(uc)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &uc,
                                                     sizeof(uc)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_cu.lt, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &res, &found);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (st == CUBLAS_STATUS_SUCCESS && found > 0) { p.algo = res.algo; p.have_algo = 1; }
    p.last_use = ++g_cu.plan_clock;
    g_cu.plans->push_back(p);
    (*g_cu.plan_index)[key] = g_cu.plans->size() - 1;
    return &g_cu.plans->back();
}

// D = alpha op(A) op(B) + beta C, column-major: op(A) m x k, op(B) k x n, C and D m x n with the
// same type and ldc. A stored (opA ? k x m : m x k) with lda; B stored (opB ? n x k : k x n) with
// ldb. cu_gemm is the common C == D case.
static void cu_gemm_cd(int opA, int opB, int m, int n, int k, const void* A, cudaDataType ta, int lda, const void* B,
                       cudaDataType tb, int ldb, const void* C, void* D, cudaDataType tc, int ldc, float alpha,
                       float beta) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // nothing to multiply: D = beta C
        size_t es = tc == CUDA_R_32F ? 4 : 2;
        if (beta == 0.0f) {
            for (int j = 0; j < n; j++) backend_memset0((char*)D + (size_t)j * ldc * es, (size_t)m * es);
        } else if (C != D) {
            if (beta != 1.0f) fatal("cu_gemm_cd: k = 0 with beta %g and C != D is not supported", beta);
            for (int j = 0; j < n; j++)
                cudaCheck(cudaMemcpyAsync((char*)D + (size_t)j * ldc * es, (const char*)C + (size_t)j * ldc * es,
                                          (size_t)m * es, cudaMemcpyDeviceToDevice, g_cu.stream));
        }
        return;
    }
    int alA = cu_alignment(A), alB = cu_alignment(B);
    int alC = cu_alignment(C) < cu_alignment(D) ? cu_alignment(C) : cu_alignment(D);
    CuGemmKey key;
    memset(&key, 0, sizeof(key));
    key.opA = opA; key.opB = opB; key.m = m; key.n = n; key.k = k; key.lda = lda; key.ldb = ldb; key.ldc = ldc;
    key.ta = (int)ta; key.tb = (int)tb; key.tc = (int)tc; key.alA = alA; key.alB = alB; key.alC = alC;
    CuGemmPlan* plan = cu_gemm_plan(key);
    if (plan->have_algo) {
        cublasStatus_t st = cublasLtMatmul(g_cu.lt, plan->desc, &alpha, A, plan->la, B, plan->lb, &beta, C, plan->lc, D,
                                           plan->lc, &plan->algo, g_cu.lt_workspace, g_cu.lt_workspace_bytes,
                                           g_cu.stream);
        if (st == CUBLAS_STATUS_SUCCESS) {
            if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
            return;
        }
        if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE) cublasCheck(st);
        fprintf(stderr, "warning: cuBLASLt refused its own algorithm for m=%d n=%d k=%d (%s); using cublasGemmEx\n",
                m, n, k, cublasGetStatusString(st));
        plan->have_algo = 0;
    }
    {
        // no cuBLASLt algorithm for this shape/alignment (odd sizes): plain cuBLAS handles any,
        // with C == D only, so a separate C is first copied into D
        if (C != D && beta != 0.0f) {
            size_t es = tc == CUDA_R_32F ? 4 : 2;
            cudaCheck(cudaMemcpy2DAsync(D, (size_t)ldc * es, C, (size_t)ldc * es, (size_t)m * es, n,
                                        cudaMemcpyDeviceToDevice, g_cu.stream));
        }
        cublasCheck(cublasGemmEx(g_cu.cublas, opA ? CUBLAS_OP_T : CUBLAS_OP_N, opB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                 &alpha, A, ta, lda, B, tb, ldb, &beta, D, tc, ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
    }
    if (g_cu.sync_debug) cudaCheck(cudaStreamSynchronize(g_cu.stream));
}
static void cu_gemm(int opA, int opB, int m, int n, int k, const void* A, cudaDataType ta, int lda, const void* B,
                    cudaDataType tb, int ldb, void* C, cudaDataType tc, int ldc, float alpha, float beta) {
    cu_gemm_cd(opA, opB, m, n, k, A, ta, lda, B, tb, ldb, C, C, tc, ldc, alpha, beta);
}

// Y (N x out) = X (N x in) W^T:  col-major Y^T (out x N) = W (out x in) X^T (in x N), where the
// row-major W is the col-major (in x out) matrix, hence opA = T
void matmul_forward_strided(floatX* out, const floatX* inp, int ld_inp, const floatX* w, int N, int in, int outd) {
    cu_gemm(1, 0, outd, N, in, w, CU_XTYPE, in, inp, CU_XTYPE, ld_inp, out, CU_XTYPE, outd, 1.0f, 0.0f);
}
void matmul_forward(floatX* out, const floatX* inp, const floatX* w, int N, int in, int outd) {
    matmul_forward_strided(out, inp, in, w, N, in, outd);
}
// Y = residual + X W^T: the same GEMM with C = residual (beta 1) and D = Y
void matmul_forward_residual(floatX* out, const floatX* inp, const floatX* w, const floatX* residual, int N, int in,
                             int outd) {
    cu_gemm_cd(1, 0, outd, N, in, w, CU_XTYPE, in, inp, CU_XTYPE, in, residual, out, CU_XTYPE, outd, 1.0f, 1.0f);
}
// dX (N x in) (+)= dY W:  col-major dX^T (in x N) = W^T (in x out) dY^T (out x N)
void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* w, int N, int in, int outd, int accumulate) {
    cu_gemm(0, 0, in, N, outd, w, CU_XTYPE, in, dout, CU_XTYPE, outd, dinp, CU_XTYPE, in, 1.0f,
            accumulate ? 1.0f : 0.0f);
}
// dW (out x in) (+)= dY^T X:  col-major dW^T (in x out) = X^T (in x N) op_T(dY^T as out x N, ld ld_dout).
// An fp32 dW (--grad-dtype fp32) is C/D in fp32 with the same floatX inputs: the fp32 sum is
// added to the fp32 accumulator and never rounded to bf16.
void matmul_backward_weight(GradBuf dw, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                            int accumulate) {
    cudaDataType tc = dw.dtype == GRAD_FP32 ? CUDA_R_32F : CU_XTYPE;
    cu_gemm(0, 1, in, outd, N, inp, CU_XTYPE, in, dout, CU_XTYPE, ld_dout, dw.p, tc, in, 1.0f,
            accumulate ? 1.0f : 0.0f);
}

#endif // GRASS_CUDA_GEMM_CUH
