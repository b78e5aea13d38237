/*
 * tests/cblas_fallback/cblas.h: a minimal stand-in for the CBLAS header, used by cuda.mk only
 * when no cblas.h is installed (a GPU machine whose image has no OpenBLAS), so that the CUDA
 * parity test and the dev/cuda checks can still build their CPU references from kernels_cpu.h.
 * Only what kernels_cpu.h calls: cblas_sgemm, row- or column-major. Naive loops with fp32
 * accumulation in a fixed order (OpenMP over output rows): slow, but exact enough for references.
 */
#ifndef GRASS_CBLAS_FALLBACK_H
#define GRASS_CBLAS_FALLBACK_H
#include <stddef.h>

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };

// C = alpha op(A) op(B) + beta C; op(A) M x K, op(B) K x N, C M x N
static inline void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N,
                               int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
                               int ldc) {
    if (order == CblasColMajor) {  // column-major C = row-major C^T = op(B)^T op(A)^T
        cblas_sgemm(CblasRowMajor, tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
        return;
    }
    int at = ta != CblasNoTrans, bt = tb != CblasNoTrans;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float* c = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        for (int k = 0; k < K; k++) {
            float a = alpha * (at ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
            if (a == 0.0f) continue;
            if (!bt) { const float* b = B + (size_t)k * ldb; for (int j = 0; j < N; j++) c[j] += a * b[j]; }
            else { for (int j = 0; j < N; j++) c[j] += a * B[(size_t)j * ldb + k]; }
        }
    }
}
#endif
