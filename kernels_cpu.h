/*
 * kernels_cpu.h: the CPU kernels, fp32 on host memory, OpenMP across rows and CBLAS
 * (OpenBLAS) for the GEMMs. backend_cpu.h exposes them as the backend.h interface; the
 * GPU parity test includes this file alone to compute the reference for each CUDA kernel.
 * Every loop is written so that its result does not depend on the number of threads (no
 * racing accumulations, fixed reduction order), which is what makes resumed runs bit-exact.
 */
#ifndef GRASS_KERNELS_CPU_H
#define GRASS_KERNELS_CPU_H

#include <math.h>
#include <float.h>
#include <string.h>
#include <stdint.h>
#include <cblas.h>
#include "utils.h"
#include "bf16.h"
#include "rng.h"      // rng_init_pair, rng_hash_term
#include "backend.h"  // AdamParams, ParamInit

// scratch for gathers and blockwise norms; grows on demand, never shrinks
static float* g_cpu_scratch = NULL;
static size_t g_cpu_scratch_floats = 0;

static float* cpu_scratch(size_t n) {
    if (n > g_cpu_scratch_floats) {
        free(g_cpu_scratch);
        g_cpu_scratch = (float*)malloc_check(n * sizeof(float));
        g_cpu_scratch_floats = n;
    }
    return g_cpu_scratch;
}

// ---- initialization ------------------------------------------------------------------------
// backend.h's param_init_tensor (dst: rows x cols floats). The hashes are integer sums, so the
// OpenMP reduction gives the same bits for any thread count.
static void cpu_param_init_tensor(float* dst, const ParamInit* p, uint64_t hash[2]) {
    size_t n = (size_t)p->rows_hf * p->cols_hf, pairs = (n + 1) / 2;
    if (p->rows != p->rows_hf || p->cols != p->cols_hf) memset(dst, 0, (size_t)p->rows * p->cols * sizeof(float));
    uint64_t h0 = 0, h1 = 0;
    #pragma omp parallel for schedule(static) reduction(+ : h0, h1)
    for (size_t k = 0; k < pairs; k++) {
        float v[2] = {p->fill, p->fill};
        if (p->std != 0.0) rng_init_pair(p->key, k, p->std, &v[0], &v[1]);
        for (int e = 0; e < 2 && 2 * k + e < n; e++) {
            size_t j = 2 * k + e, row = j / p->cols_hf, col = j - row * p->cols_hf;
            dst[row * p->cols + col] = v[e];
            h0 += rng_hash_term(p->first + j, v[e]);
            h1 += rng_hash_term(p->first + j, bf16_to_float(bf16_from_float(v[e])));
        }
    }
    hash[0] += h0;
    hash[1] += h1;
}

// ---- model ops ------------------------------------------------------------------------------
static void cpu_embedding_forward(float* out, const int* tokens, const float* wte, int N, int d) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * d, wte + (size_t)tokens[i] * d, d * sizeof(float));
}

static void cpu_embedding_backward(float* dwte, const float* dout, const int* tokens, int N, int d) {
    // parallel over columns so that rows hit by several tokens are summed in token order
    #pragma omp parallel for
    for (int j = 0; j < d; j++) {
        for (int i = 0; i < N; i++) dwte[(size_t)tokens[i] * d + j] += dout[(size_t)i * d + j];
    }
}

static void cpu_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int N, int d, float eps) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* x = inp + (size_t)i * d;
        float* o = out + (size_t)i * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++) ss += (double)x[j] * x[j];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) o[j] = w[j] * (x[j] * r);
        rstd[i] = r;
    }
}

static void cpu_rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                      const float* rstd, int N, int d) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* x = inp + (size_t)i * d;
        const float* g = dout + (size_t)i * d;
        float* dx = dinp + (size_t)i * d;
        float r = rstd[i];
        double dot = 0.0;  // sum_j (w_j g_j) * xhat_j
        for (int j = 0; j < d; j++) dot += (double)(w[j] * g[j]) * (x[j] * r);
        float mean = (float)(dot / d);
        for (int j = 0; j < d; j++) dx[j] += r * (w[j] * g[j] - x[j] * r * mean);
    }
    if (dw != NULL) {
        // columns in chunks of 64, rows in order inside each: contiguous reads, and every dw_j
        // is summed over i in the same order whatever the thread count
        int nchunks = (d + 63) / 64;
        #pragma omp parallel for
        for (int c = 0; c < nchunks; c++) {
            int j0 = c * 64, j1 = j0 + 64 < d ? j0 + 64 : d;
            double acc[64] = {0};
            for (int i = 0; i < N; i++) {
                const float* g = dout + (size_t)i * d, *x = inp + (size_t)i * d;
                float r = rstd[i];
                for (int j = j0; j < j1; j++) acc[j - j0] += (double)g[j] * (x[j] * r);
            }
            for (int j = j0; j < j1; j++) dw[j] += (float)acc[j - j0];
        }
    }
}

// rotate-half: x1 = x[:h/2], x2 = x[h/2:]; out1 = x1 c - x2 s, out2 = x2 c + x1 s; x's rows (tokens)
// are ld elements apart
static void rope_apply(float* x, int ld, const float* cosT, const float* sinT, int B, int T, int nh, int hd,
                       float sign) {
    int half = hd / 2;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* c = cosT + (size_t)t * half;
            const float* s = sinT + (size_t)t * half;
            for (int h = 0; h < nh; h++) {
                float* v = x + ((size_t)b * T + t) * ld + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], si = sign * s[i];
                    v[i] = x1 * c[i] - x2 * si;
                    v[i + half] = x2 * c[i] + x1 * si;
                }
            }
        }
    }
}
static void cpu_rope_forward(float* x, int ld, const float* c, const float* s, int B, int T, int nh, int hd) {
    rope_apply(x, ld, c, s, B, T, nh, hd, 1.0f);
}
// the backward of a rotation is the rotation by the opposite angle
static void cpu_rope_backward(float* dx, int ld, const float* c, const float* s, int B, int T, int nh, int hd) {
    rope_apply(dx, ld, c, s, B, T, nh, hd, -1.0f);
}

// Causal attention through BLAS: for each (batch, head) and block of query rows, the scores of
// the block against the keys it may see (S = Q K^T), a softmax per row, then O = P V. The block
// bounds the scratch to cpu_att_block x T floats per thread (no T x T matrix). One thread owns a
// (batch, head) [forward] or a (batch, kv head) and its query heads [backward], and calls
// single-threaded BLAS inside the parallel region, so results do not depend on the thread count.
static int cpu_att_block = 128;  // query rows per block (tests set it small to cover many blocks)

// q (and dq) have tokens ldq apart, k, v (dk, dv) ldk apart (backend.h); out and dout are
// contiguous (ldo).
static void cpu_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int ldq,
                                  int ldk, int B, int T, int nh, int nkv, int hd) {
    int group = nh / nkv, QB = cpu_att_block < T ? cpu_att_block : T;
    float scale = 1.0f / sqrtf((float)hd);
    int ldo = nh * hd;
    #pragma omp parallel
    {
        float* S = (float*)malloc_check((size_t)QB * T * sizeof(float));
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < nh; h++) {
                int hk = h / group;
                const float* kb = k + (size_t)b * T * ldk + (size_t)hk * hd;
                const float* vb = v + (size_t)b * T * ldk + (size_t)hk * hd;
                for (int t0 = 0; t0 < T; t0 += QB) {
                    int nq = T - t0 < QB ? T - t0 : QB, nk = t0 + nq;  // rows t0.., keys 0..nk-1
                    const float* qb = q + ((size_t)b * T + t0) * ldq + (size_t)h * hd;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, qb, ldq, kb, ldk, 0.0f, S,
                                nk);
                    for (int i = 0; i < nq; i++) {
                        int t = t0 + i;
                        float* row = S + (size_t)i * nk;
                        float mx = -FLT_MAX;
                        for (int s = 0; s <= t; s++) if (row[s] > mx) mx = row[s];
                        double sum = 0.0;
                        for (int s = 0; s <= t; s++) { row[s] = expf(row[s] - mx); sum += row[s]; }
                        float inv = (float)(1.0 / sum);
                        for (int s = 0; s <= t; s++) row[s] *= inv;
                        for (int s = t + 1; s < nk; s++) row[s] = 0.0f;  // causal mask
                        lse[((size_t)b * nh + h) * T + t] = mx + (float)log(sum);
                    }
                    float* ob = out + ((size_t)b * T + t0) * ldo + (size_t)h * hd;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, S, nk, vb, ldk, 0.0f, ob,
                                ldo);
                }
            }
        }
        free(S);
    }
}

// dS = P * (dP - D) * scale with P recomputed from lse, D_t = sum_i dout_ti out_ti; then
// dQ = dS K, dK += dS^T Q, dV += P^T dout (dK, dV summed over the group's query heads in order).
static void cpu_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k, const float* v, int ldq, int ldk, const float* lse,
                        int B, int T, int nh, int nkv, int hd) {
    int group = nh / nkv, QB = cpu_att_block < T ? cpu_att_block : T;
    float scale = 1.0f / sqrtf((float)hd);
    int ldo = nh * hd;
    #pragma omp parallel
    {
        float* P = (float*)malloc_check((size_t)QB * T * sizeof(float));
        float* dP = (float*)malloc_check((size_t)QB * T * sizeof(float));
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int hk = 0; hk < nkv; hk++) {
                const float* kb = k + (size_t)b * T * ldk + (size_t)hk * hd;
                const float* vb = v + (size_t)b * T * ldk + (size_t)hk * hd;
                float* dkb = dk + (size_t)b * T * ldk + (size_t)hk * hd;
                float* dvb = dv + (size_t)b * T * ldk + (size_t)hk * hd;
                for (int s = 0; s < T; s++) {
                    memset(dkb + (size_t)s * ldk, 0, hd * sizeof(float));
                    memset(dvb + (size_t)s * ldk, 0, hd * sizeof(float));
                }
                for (int h = hk * group; h < (hk + 1) * group; h++) {
                    for (int t0 = 0; t0 < T; t0 += QB) {
                        int nq = T - t0 < QB ? T - t0 : QB, nk = t0 + nq;
                        size_t rowoff = ((size_t)b * T + t0) * ldq + (size_t)h * hd;
                        size_t orowoff = ((size_t)b * T + t0) * ldo + (size_t)h * hd;
                        const float* qb = q + rowoff, *gob = dout + orowoff, *ob = out + orowoff;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, qb, ldq, kb, ldk, 0.0f,
                                    P, nk);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 1.0f, gob, ldo, vb, ldk, 0.0f,
                                    dP, nk);
                        for (int i = 0; i < nq; i++) {
                            int t = t0 + i;
                            const float* go = gob + (size_t)i * ldo, *o = ob + (size_t)i * ldo;
                            float D = 0.0f;
                            for (int c = 0; c < hd; c++) D += go[c] * o[c];
                            float L = lse[((size_t)b * nh + h) * T + t];
                            float* prow = P + (size_t)i * nk, *dprow = dP + (size_t)i * nk;
                            for (int s = 0; s <= t; s++) {
                                float ps = expf(prow[s] - L);
                                prow[s] = ps;
                                dprow[s] = ps * (dprow[s] - D) * scale;  // dS
                            }
                            for (int s = t + 1; s < nk; s++) { prow[s] = 0.0f; dprow[s] = 0.0f; }
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, dP, nk, kb, ldk, 0.0f,
                                    dq + rowoff, ldq);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1.0f, dP, nk, qb, ldq, 1.0f,
                                    dkb, ldk);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1.0f, P, nk, gob, ldo, 1.0f,
                                    dvb, ldk);
                    }
                }
            }
        }
        free(P); free(dP);
    }
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

// gu (N x 2f): each row's gate (f values) then its up (f values); dgu laid out the same
static void cpu_swiglu_forward(float* h, const float* gu, int N, int f) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* gate = gu + (size_t)i * 2 * f, *up = gate + f;
        float* hi = h + (size_t)i * f;
        for (int j = 0; j < f; j++) hi[j] = silu(gate[j]) * up[j];
    }
}
static void cpu_swiglu_backward(float* dgu, const float* dh, const float* gu, int N, int f) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* gate = gu + (size_t)i * 2 * f, *up = gate + f, *dhi = dh + (size_t)i * f;
        float* dgate = dgu + (size_t)i * 2 * f, *dup = dgate + f;
        for (int j = 0; j < f; j++) {
            float g = gate[j], sg = 1.0f / (1.0f + expf(-g));
            dgate[j] = dhi[j] * up[j] * sg * (1.0f + g * (1.0f - sg));
            dup[j] = dhi[j] * g * sg;
        }
    }
}
static void cpu_add_inplace(float* a, const float* b, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

static void cpu_matmul_forward(float* out, const float* inp, int ld_inp, const float* w, int N, int in, int outd) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, outd, in, 1.0f, inp, ld_inp, w, in, 0.0f, out, outd);
}
static void cpu_matmul_backward_input(float* dinp, const float* dout, const float* w, int N, int in, int outd,
                                      int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, outd, 1.0f, dout, outd, w, in,
                accumulate ? 1.0f : 0.0f, dinp, in);
}
static void cpu_matmul_backward_weight(float* dw, const float* dout, int ld_dout, const float* inp, int N, int in,
                                       int outd, int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, outd, in, N, 1.0f, dout, ld_dout, inp, in,
                accumulate ? 1.0f : 0.0f, dw, in);
}

static void cpu_classifier_forward_backward(float* logits, float* losses, const int* targets, int N, int V,
                                 float dloss, int want_grad) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float* z = logits + (size_t)i * V;
        float mx = -FLT_MAX;
        for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        float zt = z[targets[i]];
        // the sum of exp in float lanes of fixed width, added in a fixed order: vectorizes, and
        // the result does not depend on the thread count
        float part[16] = {0};
        int j = 0;
        if (want_grad) {
            for (; j + 16 <= V; j += 16)
                for (int l = 0; l < 16; l++) { float e = expf(z[j + l] - mx); z[j + l] = e; part[l] += e; }
            for (; j < V; j++) { float e = expf(z[j] - mx); z[j] = e; part[0] += e; }
        } else {
            for (; j + 16 <= V; j += 16)
                for (int l = 0; l < 16; l++) part[l] += expf(z[j + l] - mx);
            for (; j < V; j++) part[0] += expf(z[j] - mx);
        }
        double sum = 0.0;
        for (int l = 0; l < 16; l++) sum += part[l];
        losses[i] = (float)(mx + log(sum) - zt);
        if (want_grad) {  // z holds exp(z - max): softmax = z / sum
            float scale = (float)(dloss / sum);
            for (int k = 0; k < V; k++) z[k] *= scale;
            z[targets[i]] -= dloss;
        }
    }
}

// ---- Grass ops -------------------------------------------------------------------------------
static void cpu_grass_gathered_grad(float* C, const float* dout, int ld_dout, const float* inp, const int* idx,
                                    const float* scale, int r, int N, int in, int outd, int cols_side, int accumulate) {
    float* g = cpu_scratch((size_t)N * r);  // the gathered, scaled N x r operand
    if (!cols_side) {
        #pragma omp parallel for
        for (int i = 0; i < N; i++)
            for (int j = 0; j < r; j++) g[(size_t)i * r + j] = dout[(size_t)i * ld_dout + idx[j]] * scale[j];
        // C (r x in) = g^T X
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, g, r, inp, in,
                    accumulate ? 1.0f : 0.0f, C, in);
    } else {
        #pragma omp parallel for
        for (int i = 0; i < N; i++)
            for (int j = 0; j < r; j++) g[(size_t)i * r + j] = inp[(size_t)i * in + idx[j]] * scale[j];
        // C (out x r) = dY^T g
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, outd, r, N, 1.0f, dout, ld_dout, g, r,
                    accumulate ? 1.0f : 0.0f, C, r);
    }
}

static void cpu_grass_grad_norms(float* norms, const float* dout, int ld_dout, const float* inp, int N, int in,
                                 int outd, int cols_side) {
    // blocks of at most ~4M floats of G at a time
    const size_t budget = (size_t)4 << 20;
    if (!cols_side) {
        int rb = (int)(budget / (size_t)in); if (rb < 1) rb = 1; if (rb > outd) rb = outd;
        float* g = cpu_scratch((size_t)rb * in);
        for (int r0 = 0; r0 < outd; r0 += rb) {
            int nr = (outd - r0 < rb) ? outd - r0 : rb;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nr, in, N, 1.0f, dout + r0, ld_dout, inp, in, 0.0f, g,
                        in);
            #pragma omp parallel for
            for (int i = 0; i < nr; i++) {
                double ss = 0.0;
                for (int j = 0; j < in; j++) ss += (double)g[(size_t)i * in + j] * g[(size_t)i * in + j];
                norms[r0 + i] += (float)ss;
            }
        }
    } else {
        int cb = (int)(budget / (size_t)outd); if (cb < 1) cb = 1; if (cb > in) cb = in;
        float* g = cpu_scratch((size_t)outd * cb);
        for (int c0 = 0; c0 < in; c0 += cb) {
            int nc = (in - c0 < cb) ? in - c0 : cb;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, outd, nc, N, 1.0f, dout, ld_dout, inp + c0, in, 0.0f,
                        g, nc);
            #pragma omp parallel for
            for (int j = 0; j < nc; j++) {
                double ss = 0.0;
                for (int i = 0; i < outd; i++) ss += (double)g[(size_t)i * nc + j] * g[(size_t)i * nc + j];
                norms[c0 + j] += (float)ss;
            }
        }
    }
}

// ---- optimizer-state storage: fp32, or bf16 (state_bf16 = 1; STATE_BF16 in backend.h) ---------
// bf16 storage through bf16.h (round to nearest even)
static inline float cpu_state_get(const void* s, size_t k, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t*)s)[k]) : ((const float*)s)[k];
}
static inline void cpu_state_set(void* s, size_t k, float x, int bf16) {
    if (bf16) ((uint16_t*)s)[k] = bf16_from_float(x);
    else ((float*)s)[k] = x;
}

// a: Adam's hyperparameters (backend.h); alpha: Grass's scale on the step.
// Wm: an fp32 master copy of W (may be NULL). The update goes to Wm and W takes Wm's value
// (in fp32 the same number; a bf16 build rounds it to nearest).
static void cpu_grass_adam_update(float* W, float* Wm, const float* C, void* m, void* v, int state_bf16, const int* idx,
                       const float* upscale, int r, int outd, int in, int cols_side, AdamParams a, float alpha) {
    int bf = state_bf16;
    const float lr = a.lr, b1 = a.b1, b2 = a.b2, eps = a.eps, wd = a.wd, grad_scale = adam_grad_scale_host(&a);
    const float* bcr = a.bc_rows;  // per-row bias corrections (NULL: a.bc1, a.bc2 for every row)
    float* Wsrc = Wm != NULL ? Wm : W;  // the weights the update applies to
    if (wd > 0.0f) {
        float keep = 1.0f - lr * wd;
        size_t n = (size_t)outd * in;
        #pragma omp parallel for
        for (size_t i = 0; i < n; i++) { Wsrc[i] *= keep; W[i] = Wsrc[i]; }
    }
    float step = lr * alpha;
    if (!cols_side) {
        #pragma omp parallel for
        for (int j = 0; j < r; j++) {
            float* w = Wsrc + (size_t)idx[j] * in;
            float* wout = W + (size_t)idx[j] * in;
            float up = upscale[j];
            if (up == 0.0f) continue;  // a padding row (grass_pad_selection): no update, moments stay 0
            const float bc1 = bcr != NULL ? bcr[2 * j] : a.bc1, bc2 = bcr != NULL ? bcr[2 * j + 1] : a.bc2;
            for (int c = 0; c < in; c++) {
                size_t k = (size_t)j * in + c;
                float g = C[k] * grad_scale;
                float mk = b1 * cpu_state_get(m, k, bf) + (1.0f - b1) * g;
                float vk = b2 * cpu_state_get(v, k, bf) + (1.0f - b2) * g * g;
                cpu_state_set(m, k, mk, bf); cpu_state_set(v, k, vk, bf);
                float u = (mk / bc1) / (sqrtf(vk / bc2) + eps);
                w[c] -= step * up * u;
                wout[c] = w[c];
            }
        }
    } else {
        #pragma omp parallel for
        for (int i = 0; i < outd; i++) {
            for (int j = 0; j < r; j++) {
                if (upscale[j] == 0.0f) continue;  // a padding row
                const float bc1 = bcr != NULL ? bcr[2 * j] : a.bc1, bc2 = bcr != NULL ? bcr[2 * j + 1] : a.bc2;
                size_t k = (size_t)i * r + j;
                float g = C[k] * grad_scale;
                float mk = b1 * cpu_state_get(m, k, bf) + (1.0f - b1) * g;
                float vk = b2 * cpu_state_get(v, k, bf) + (1.0f - b2) * g * g;
                cpu_state_set(m, k, mk, bf); cpu_state_set(v, k, vk, bf);
                float u = (mk / bc1) / (sqrtf(vk / bc2) + eps);
                size_t wi = (size_t)i * in + idx[j];
                Wsrc[wi] -= step * upscale[j] * u;
                W[wi] = Wsrc[wi];
            }
        }
    }
}

// backend.h's grass_remap_state: new row j of r_new takes old row src[j] (of r_old) times
// factor[j] (squared in fp32 when square), 0 where src[j] < 0 and past the new rows; through tmp
// (inline: only the backend calls it, so test_ops, which includes this file, does not warn)
static inline void cpu_grass_remap_state(void* s, void* tmp, int state_bf16, const int* src, const float* factor,
                                         int square, int r_old, int r_new, int r_cap, int other, int cols_side) {
    size_t total = (size_t)r_cap * other, used = (size_t)r_new * other;
    #pragma omp parallel for
    for (size_t k = 0; k < total; k++) {
        float x = 0.0f;
        if (k < used) {
            int j = cols_side ? (int)(k % r_new) : (int)(k / other);
            size_t e = cols_side ? k / r_new : k % other;  // the element along the other dimension
            int sj = src[j];
            if (sj >= 0) {
                float f = factor[j];
                if (square) f = f * f;
                x = cpu_state_get(s, cols_side ? e * r_old + sj : (size_t)sj * other + e, state_bf16) * f;
            }
        }
        cpu_state_set(tmp, k, x, state_bf16);
    }
    memcpy(s, tmp, total * (state_bf16 ? 2 : 4));
}

// ---- GaLore ops ------------------------------------------------------------------------------
// The eigen-decomposition of the symmetric n x n row-major matrix A (float64, destroyed) by cyclic
// Jacobi rotations: column k of V (row-major n x n) is the k-th eigenvector, lam[k] its eigenvalue,
// sorted by eigenvalue, largest first (ties keep their order). A pair (p, q) is rotated while
// |a_pq| > 1e-17 sqrt|a_pp a_qq| (below that a rotation moves the eigenvalues by less than a
// double's rounding of them) and |a_pq| > 1e-32 |A|_F (the floor that ends the rotations among
// the zero eigenvalues of a rank-deficient Gram matrix); it stops after a sweep that rotates nothing.
// Used by GaLore's own SVD below and, as the float64 reference, by tests/test_grass.c.
static inline void cpu_sym_eigen_f64(double* A, int n, double* V, double* lam) {
    double fro2 = 0.0;
    for (size_t i = 0; i < (size_t)n * n; i++) { V[i] = (i / n == i % n) ? 1.0 : 0.0; fro2 += A[i] * A[i]; }
    const double floor_abs = 1e-32 * sqrt(fro2);
    for (int sweep = 0; sweep < 100; sweep++) {
        int rotated = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = A[(size_t)p * n + q], app = A[(size_t)p * n + p], aqq = A[(size_t)q * n + q];
                if (fabs(apq) <= 1e-17 * sqrt(fabs(app)) * sqrt(fabs(aqq)) || fabs(apq) <= floor_abs) continue;
                rotated = 1;
                // the rotation J (c, s) that zeroes a_pq of J^T A J: t = tan of its angle, the smaller root
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) {  // A J: columns p and q
                    double akp = A[(size_t)k * n + p], akq = A[(size_t)k * n + q];
                    A[(size_t)k * n + p] = c * akp - s * akq; A[(size_t)k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {  // J^T (A J): rows p and q
                    double apk = A[(size_t)p * n + k], aqk = A[(size_t)q * n + k];
                    A[(size_t)p * n + k] = c * apk - s * aqk; A[(size_t)q * n + k] = s * apk + c * aqk;
                }
                A[(size_t)p * n + q] = A[(size_t)q * n + p] = 0.0;  // exactly, where rounding leaves a residue
                for (int k = 0; k < n; k++) {  // V J
                    double vkp = V[(size_t)k * n + p], vkq = V[(size_t)k * n + q];
                    V[(size_t)k * n + p] = c * vkp - s * vkq; V[(size_t)k * n + q] = s * vkp + c * vkq;
                }
            }
        if (!rotated) break;
    }
    for (int i = 0; i < n; i++) lam[i] = A[(size_t)i * n + i];
    for (int i = 0; i < n; i++)  // selection sort of the columns by eigenvalue, descending
        for (int j = i + 1; j < n; j++)
            if (lam[j] > lam[i]) {
                double t = lam[i]; lam[i] = lam[j]; lam[j] = t;
                for (int k = 0; k < n; k++) {
                    t = V[(size_t)k * n + i];
                    V[(size_t)k * n + i] = V[(size_t)k * n + j];
                    V[(size_t)k * n + j] = t;
                }
            }
}

// GaLore's own SVD, where LAPACK is absent (GRASS_NO_LAPACK) and compiled everywhere so that
// tests/test_grass.c compares it with LAPACK: the singular values sv (n, descending) and the right
// singular vectors VT (n x n, column-major: row k is v_k, as LAPACK's sgesvd with jobvt 'S') of
// the column-major m x n matrix A (any m, n), from the eigen-decomposition of A^T A in float64:
// sigma_k = sqrt(lambda_k). Squaring the matrix costs accuracy only in singular values below
// ~1e-8 sigma_1 (double's 1e-16 of sigma_1^2), where fp32's own rounding of A (~1e-7 sigma_1)
// has already left the vectors undetermined; an fp32 SVD does no better there.
// work: cpu_svd_f64_work_floats(n) floats (the Gram matrix, V and lambda in float64).
static inline size_t cpu_svd_f64_work_floats(int n) { return 2 * (2 * (size_t)n * n + n) + 2; }  // +2: alignment
static inline void cpu_svd_f64(const float* A, int m, int n, float* sv, float* VT, float* work) {
    double* M = (double*)(((uintptr_t)work + 7) & ~(uintptr_t)7);  // work need only be float-aligned
    double* V = M + (size_t)n * n;
    double* lam = V + (size_t)n * n;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++)  // M = A^T A (float64 sums in a fixed order: independent of the threads)
        for (int j = i; j < n; j++) {
            const float* ai = A + (size_t)i * m;
            const float* aj = A + (size_t)j * m;
            double sum = 0.0;
            for (int k = 0; k < m; k++) sum += (double)ai[k] * aj[k];
            M[(size_t)i * n + j] = M[(size_t)j * n + i] = sum;
        }
    cpu_sym_eigen_f64(M, n, V, lam);
    for (int k = 0; k < n; k++) sv[k] = (float)sqrt(lam[k] > 0.0 ? lam[k] : 0.0);  // rounding may leave -1e-17
    for (size_t i = 0; i < (size_t)n * n; i++) VT[i] = (float)V[i];  // row-major V = column-major V^T
}

// LAPACK's single-precision SVD (OpenBLAS carries LAPACK), through its Fortran interface, where
// LAPACK is; GRASS_NO_LAPACK (the GPU checks built with tests/cblas_fallback, where no OpenBLAS
// was found) uses cpu_svd_f64. Either way the same contract: cpu_gesvd_right(A, m, n, sv, VT, work)
// with m >= n leaves the singular values and VT as sgesvd with jobu 'N', jobvt 'S', and destroys A;
// work holds cpu_gesvd_lwork(m, n) floats.
#ifndef GRASS_NO_LAPACK
#ifdef __cplusplus
extern "C" {
#endif
void sgesvd_(const char* jobu, const char* jobvt, const int* m, const int* n, float* a, const int* lda, float* s,
             float* u, const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* info);
#ifdef __cplusplus
}
#endif
static inline int cpu_gesvd_lwork(int m, int n) {
    float q = 0.0f, dummy = 0.0f;
    int lwork = -1, info = 0, one = 1;
    sgesvd_("N", "S", &m, &n, &dummy, &m, &dummy, &dummy, &one, &dummy, &n, &q, &lwork, &info);
    if (info != 0) fatal("LAPACK sgesvd workspace query for %d x %d failed (info %d)", m, n, info);
    return (int)q + 1;
}
static inline void cpu_gesvd_right(float* A, int m, int n, float* sv, float* VT, float* work) {
    int lwork = cpu_gesvd_lwork(m, n), info = 0, one = 1;
    float dummy = 0.0f;
    sgesvd_("N", "S", &m, &n, A, &m, sv, &dummy, &one, VT, &n, work, &lwork, &info);
    if (info != 0) fatal("LAPACK sgesvd of a %d x %d GaLore gradient failed (info %d)", m, n, info);
}
#define CPU_GESVD_NAME "LAPACK sgesvd"
#else
static inline int cpu_gesvd_lwork(int m, int n) { (void)m; return (int)cpu_svd_f64_work_floats(n); }
static inline void cpu_gesvd_right(float* A, int m, int n, float* sv, float* VT, float* work) {
    cpu_svd_f64(A, m, n, sv, VT, work);
}
#define CPU_GESVD_NAME "float64 Jacobi (GRASS_NO_LAPACK)"
#endif

// GaLore's scratch for one matrix: backend.h's galore_work_size, with LAPACK's (or the float64
// Jacobi's) workspace as the SVD's part
static inline size_t cpu_galore_work_floats(int outd, int in) {
    int s = outd <= in ? outd : in, other = outd <= in ? in : outd;
    return galore_work_size(s, other, (size_t)cpu_gesvd_lwork(other, s));
}

// The first r rows of VT (the right singular vectors of the column-major other x s matrix A),
// row k signed so that its entry of largest magnitude (lowest index among equals) is positive.
static inline void galore_signed_rows(float* Pt, const float* VT, int s, int r) {
    for (int k = 0; k < r; k++) {
        int best = 0;
        for (int j = 1; j < s; j++) if (fabsf(VT[k + (size_t)j * s]) > fabsf(VT[k + (size_t)best * s])) best = j;
        float sign = VT[k + (size_t)best * s] < 0.0f ? -1.0f : 1.0f;
        for (int j = 0; j < s; j++) Pt[(size_t)k * s + j] = sign * VT[k + (size_t)j * s];
    }
}

// backend.h's galore_projector: A = the column-major (other x s) view of G, whose right singular
// vectors are G's singular vectors on its smaller side: rows side (out <= in) the row-major G is
// already the column-major in x out matrix; cols side it is transposed into out x in.
static inline void cpu_galore_projector(float* Pt, const float* G, int outd, int in, int cols_side, int r,
                                        float* work) {
    int s = cols_side ? in : outd, other = cols_side ? outd : in;
    GaloreWork w = galore_work_layout(s, other, work);
    float *A = w.A, *sv = w.sv, *VT = w.VT, *lw = w.svd_work;
    if (!cols_side) {
        memcpy(A, G, (size_t)outd * in * sizeof(float));
    } else {
        #pragma omp parallel for
        for (int j = 0; j < in; j++)
            for (int i = 0; i < outd; i++) A[i + (size_t)j * outd] = G[(size_t)i * in + j];
    }
    cpu_gesvd_right(A, other, s, sv, VT, lw);
    galore_signed_rows(Pt, VT, s, r);
}

// backend.h's galore_project_grad: T = (rows side) dY Pt^T or (cols side) X Pt^T, N x r; then
// R (r x in) += T^T X, or R (out x r) += dY^T T
static inline void cpu_galore_project_grad(float* R, const float* dout, int ld_dout, const float* inp, const float* Pt,
                                           int r, int N, int in, int outd, int cols_side) {
    float* T = cpu_scratch((size_t)N * r);
    if (!cols_side) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, outd, 1.0f, dout, ld_dout, Pt, outd, 0.0f, T, r);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, T, r, inp, in, 1.0f, R, in);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, inp, in, Pt, in, 0.0f, T, r);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, outd, r, N, 1.0f, dout, ld_dout, T, r, 1.0f, R, r);
    }
}

// backend.h's galore_adam_update: Adam on R in place, then the dense update P D (or D P^T)
// through `work` (out x in), applied with decoupled weight decay
static inline void cpu_galore_adam_update(float* W, float* Wm, float* R, void* m, void* v, int state_bf16,
                                          const float* Pt, int r, int outd, int in, int cols_side, AdamParams a,
                                          float alpha, float* work) {
    size_t nsub = cols_side ? (size_t)outd * r : (size_t)r * in;
    const float grad_scale = adam_grad_scale_host(&a);
    #pragma omp parallel for
    for (size_t k = 0; k < nsub; k++) {
        float g = R[k] * grad_scale;
        float mk = a.b1 * cpu_state_get(m, k, state_bf16) + (1.0f - a.b1) * g;
        float vk = a.b2 * cpu_state_get(v, k, state_bf16) + (1.0f - a.b2) * g * g;
        cpu_state_set(m, k, mk, state_bf16); cpu_state_set(v, k, vk, state_bf16);
        R[k] = (mk / a.bc1) / (sqrtf(vk / a.bc2) + a.eps);
    }
    float* U = work;
    if (!cols_side)  // U (out x in) = Pt^T (out x r) D (r x in)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, outd, in, r, 1.0f, Pt, outd, R, in, 0.0f, U, in);
    else             // U (out x in) = D (out x r) Pt (r x in)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, outd, in, r, 1.0f, R, r, Pt, in, 0.0f, U, in);
    float* src = Wm != NULL ? Wm : W;
    size_t n = (size_t)outd * in;
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        src[i] -= a.lr * (alpha * U[i] + a.wd * src[i]);
        W[i] = src[i];
    }
}

static void cpu_scale_floats(float* C, float s, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) C[i] *= s;
}

// ---- full-rank AdamW and reductions ---------------------------------------------------------
// a: Adam's hyperparameters (backend.h); master: an fp32 master copy of p (may be NULL),
// updated in its place and copied to p
static void cpu_adamw_update(float* p, float* master, const float* g, void* m, void* v, int state_bf16, size_t n,
                  AdamParams a, uint64_t seed) {
    (void)seed;  // fp32 weights: no stochastic rounding on the CPU
    const float lr = a.lr, b1 = a.b1, b2 = a.b2, eps = a.eps, wd = a.wd, bc1 = a.bc1, bc2 = a.bc2,
                grad_scale = adam_grad_scale_host(&a);
    float* src = master != NULL ? master : p;
    if (!state_bf16) {  // the common case, as one vectorizable loop
        float* mf = (float*)m, *vf = (float*)v;
        #pragma omp parallel for simd
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] * grad_scale;
            float mi = b1 * mf[i] + (1.0f - b1) * gi;
            float vi = b2 * vf[i] + (1.0f - b2) * gi * gi;
            mf[i] = mi; vf[i] = vi;
            float u = (mi / bc1) / (sqrtf(vi / bc2) + eps);
            src[i] -= lr * (u + wd * src[i]);
            p[i] = src[i];
        }
        return;
    }
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * grad_scale;
        float mi = b1 * cpu_state_get(m, i, 1) + (1.0f - b1) * gi;
        float vi = b2 * cpu_state_get(v, i, 1) + (1.0f - b2) * gi * gi;
        cpu_state_set(m, i, mi, 1); cpu_state_set(v, i, vi, 1);
        float u = (mi / bc1) / (sqrtf(vi / bc2) + eps);
        src[i] -= lr * (u + wd * src[i]);
        p[i] = src[i];
    }
}

// fixed-size chunks summed in order, so the result does not depend on the thread count
static double cpu_sumsq_double(const float* x, size_t n) {
    const size_t chunk = 1 << 16;
    size_t nchunks = (n + chunk - 1) / chunk;
    double* parts = (double*)malloc_check((nchunks > 0 ? nchunks : 1) * sizeof(double));
    #pragma omp parallel for
    for (size_t c = 0; c < nchunks; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        parts[c] = s;
    }
    double total = 0.0;
    for (size_t c = 0; c < nchunks; c++) total += parts[c];
    free(parts);
    return total;
}
static void cpu_sumsq_float(float* acc, const float* x, size_t n) { *acc += (float)cpu_sumsq_double(x, n); }
// backend.h's clip_factor and loss_accumulate (scalars: one thread, in order)
static inline void cpu_clip_factor(float* scale, const float* sumsq, float clip) {
    float norm = (float)sqrt((double)*sumsq);
    *scale = norm > clip ? clip / norm : 1.0f;
}
static inline void cpu_loss_accumulate(double* acc, const float* losses, int N) {
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += losses[i];
    *acc += (double)(float)(sum / N);
}
// backend.h's sumsq_unscaled: C / scale (per row or column) into scratch, then the same sum
static void cpu_sumsq_unscaled(float* acc, const float* C, const float* scale, int r, int other, int cols_side) {
    size_t n = (size_t)r * other;
    float* u = cpu_scratch(n);
    #pragma omp parallel for
    for (size_t e = 0; e < n; e++) {
        float s = scale[cols_side ? e % r : e / other];
        u[e] = s != 0.0f ? C[e] / s : 0.0f;  // scale 0: a padding row (grass_pad_selection)
    }
    *acc += (float)cpu_sumsq_double(u, n);
}

// norms (+)= the squared norms of M's rows (by_cols 0: length rows) or of its columns (by_cols 1:
// length cols); M is rows x cols, row-major, fp32. Each norm is summed in double, in index order.
static void cpu_rows_sumsq(float* norms, const float* M, int rows, int cols, int by_cols) {
    if (!by_cols) {
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            double s = 0.0;
            for (int j = 0; j < cols; j++) s += (double)M[(size_t)i * cols + j] * M[(size_t)i * cols + j];
            norms[i] += (float)s;
        }
    } else {
        #pragma omp parallel for schedule(static)
        for (int j = 0; j < cols; j++) {
            double s = 0.0;
            for (int i = 0; i < rows; i++) s += (double)M[(size_t)i * cols + j] * M[(size_t)i * cols + j];
            norms[j] += (float)s;
        }
    }
}

#endif // GRASS_KERNELS_CPU_H
