/*
 * cuda/attention.cuh: the fused causal GQA attention (attention_forward, attention_backward):
 * flash-attention style tiles in shared memory, WMMA products in the bf16 build, the tile
 * layouts of the three kernels (carved with cu_carve), and the dynamic shared memory opt-in.
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_ATTENTION_CUH
#define GRASS_CUDA_ATTENTION_CUH

#include "common.cuh"

// ---- attention ----------------------------------------------------------------------------------
// Flash-attention style, causal, GQA-aware (query head h reads kv head h / (nh / nkv)).
// Tiles of Q, K, V live in shared memory as floatX with head_dim zero-padded to a multiple of 16;
// the five products (S = Q K^T, O += P V, dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ += dS K)
// run through cu_att_mma: bf16 tensor cores (WMMA 16x16x16, fp32 accumulate) in the bf16
// build, a plain fp32 loop in the fp32 build. Accumulators (O, dK, dV, dQ) live in shared
// memory in fp32. Forward: one block per (query tile, head, batch), online softmax, writes lse.
// Backward: D = rowsum(dO * O); one block per (key tile, kv head, batch) loops over the query
// heads of its group and the query tiles, writing dK and dV (no atomics); a second kernel, one
// block per (query tile, head, batch), recomputes the probabilities and writes dQ.

#define CU_ATT_PAD ((int)(16 / sizeof(floatX)))  // row padding of floatX tiles (16 bytes)
#ifdef ENABLE_FP32
#define CU_ATT_FWD_BQ 32
#define CU_ATT_FWD_BK 32
#define CU_ATT_KV_BK 32
#define CU_ATT_KV_BQ 32
#define CU_ATT_Q_BQ 32
#define CU_ATT_Q_BK 32
#else
#define CU_ATT_FWD_BQ 64
#define CU_ATT_FWD_BK 64
#define CU_ATT_KV_BK 64
#define CU_ATT_KV_BQ 32
#define CU_ATT_Q_BQ 64
#define CU_ATT_Q_BK 32
#endif
#define CU_ATT_FWD_THREADS 128
#define CU_ATT_BWD_THREADS 256

// C (M x N, fp32, row-major ldc) (+)= A (M x K) B (K x N). A_ROW: A(i,k) = A[i*lda + k], else
// A[k*lda + i]; B_ROW: B(k,j) = B[k*ldb + j], else B[j*ldb + k]. M, N, K multiples of 16;
// operands and C in shared memory. Work is split over the block's warps; no barrier inside.
template <bool A_ROW, bool B_ROW>
__device__ void cu_att_mma(float* C, int ldc, const floatX* A, int lda, const floatX* B, int ldb, int M, int N, int K,
                           bool accumulate) {
#if !defined(ENABLE_FP32) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
    using namespace nvcuda;
    typedef typename std::conditional<A_ROW, wmma::row_major, wmma::col_major>::type LA;
    typedef typename std::conditional<B_ROW, wmma::row_major, wmma::col_major>::type LB;
    int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += nw) {
        int i0 = (t / tn) * 16, j0 = (t % tn) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
        if (accumulate) wmma::load_matrix_sync(c, C + i0 * ldc + j0, ldc, wmma::mem_row_major);
        else wmma::fill_fragment(c, 0.0f);
        for (int k0 = 0; k0 < K; k0 += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> b;
            wmma::load_matrix_sync(a, A_ROW ? A + i0 * lda + k0 : A + k0 * lda + i0, lda);
            wmma::load_matrix_sync(b, B_ROW ? B + k0 * ldb + j0 : B + j0 * ldb + k0, ldb);
            wmma::mma_sync(c, a, b, c);
        }
        wmma::store_matrix_sync(C + i0 * ldc + j0, c, ldc, wmma::mem_row_major);
    }
#else
    for (int e = threadIdx.x; e < M * N; e += blockDim.x) {
        int i = e / N, j = e % N;
        float s = accumulate ? C[i * ldc + j] : 0.0f;
        for (int k = 0; k < K; k++) {
            float a = cu_tof(A_ROW ? A[i * lda + k] : A[k * lda + i]);
            float b = cu_tof(B_ROW ? B[k * ldb + j] : B[j * ldb + k]);
            s += a * b;
        }
        C[i * ldc + j] = s;
    }
#endif
}

// dst[r][c] (ld) = src row (row0 + r) of a (T x row_stride) strided view, for c < hd; zeros for
// rows >= T and for the padding columns hd <= c < hdp.
__device__ void cu_att_load_tile(floatX* dst, int ld, const floatX* src, size_t row_stride, int row0, int T, int rows,
                                 int hd, int hdp, int vec) {
    if (vec) {  // hd % CU_VEC == 0, src and row_stride 16-byte aligned
        int cpr = hdp / CU_VEC;
        for (int e = threadIdx.x; e < rows * cpr; e += blockDim.x) {
            int r = e / cpr, c = (e % cpr) * CU_VEC;
            CuPack p;
            if (row0 + r < T && c < hd) p = cu_load_pack(src + (size_t)(row0 + r) * row_stride + c);
            else for (int k = 0; k < CU_VEC; k++) p.v[k] = cu_from<floatX>(0.0f);
            cu_store_pack(dst + r * ld + c, p);
        }
    } else {
        for (int e = threadIdx.x; e < rows * hdp; e += blockDim.x) {
            int r = e / hdp, c = e % hdp;
            dst[r * ld + c] = (row0 + r < T && c < hd) ? src[(size_t)(row0 + r) * row_stride + c]
                                                       : cu_from<floatX>(0.0f);
        }
    }
}

__host__ __device__ inline size_t cu_align128(size_t x) { return (x + 127) & ~(size_t)127; }

// Carves the next tile out of a block's shared memory: returns the tile's byte offset (*off) and
// moves *off past its bytes, rounded up to 128 so that every tile starts 128-byte aligned.
__host__ __device__ inline size_t cu_carve(size_t* off, size_t bytes) {
    size_t at = *off;
    *off = cu_align128(at + bytes);
    return at;
}

struct CuAttFwdLayout { size_t q, k, v, s, p, o, m, l, c, total; };
__host__ __device__ inline CuAttFwdLayout cu_att_fwd_layout(int hdp) {
    CuAttFwdLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    L.q = cu_carve(&off, CU_ATT_FWD_BQ * ldh * sizeof(floatX));
    L.k = cu_carve(&off, CU_ATT_FWD_BK * ldh * sizeof(floatX));
    L.v = cu_carve(&off, CU_ATT_FWD_BK * ldh * sizeof(floatX));
    L.s = cu_carve(&off, CU_ATT_FWD_BQ * (CU_ATT_FWD_BK + 4) * sizeof(float));
    L.p = cu_carve(&off, CU_ATT_FWD_BQ * (CU_ATT_FWD_BK + CU_ATT_PAD) * sizeof(floatX));
    L.o = cu_carve(&off, CU_ATT_FWD_BQ * (hdp + 4) * sizeof(float));
    L.m = cu_carve(&off, CU_ATT_FWD_BQ * sizeof(float));
    L.l = cu_carve(&off, CU_ATT_FWD_BQ * sizeof(float));
    L.c = cu_carve(&off, CU_ATT_FWD_BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_FWD_THREADS)
gk_attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int ldq, int ldk,
                     int B, int T, int nh, int nkv, int hd, int hdp, float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BQ = CU_ATT_FWD_BQ, BK = CU_ATT_FWD_BK;
    const int TPR = CU_ATT_FWD_THREADS / BQ;  // threads per row in the softmax step (power of 2)
    CuAttFwdLayout L = cu_att_fwd_layout(hdp);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    float* S = (float*)(cu_att_smem + L.s);
    floatX* P = (floatX*)(cu_att_smem + L.p);
    float* O = (float*)(cu_att_smem + L.o);
    float* rm = (float*)(cu_att_smem + L.m);
    float* rl = (float*)(cu_att_smem + L.l);
    float* rc = (float*)(cu_att_smem + L.c);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int ntq = (T + BQ - 1) / BQ;
    int qt = ntq - 1 - (int)blockIdx.x;  // the longest (last) query tiles start first
    int h = blockIdx.y, b = blockIdx.z;
    int hk = h / (nh / nkv);
    int q0 = qt * BQ;
    size_t qstride = (size_t)ldq, kstride = (size_t)ldk, ostride = (size_t)nh * hd;  // tokens of q, k/v, out
    const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;

    cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
    for (int e = threadIdx.x; e < BQ * ldo; e += blockDim.x) O[e] = 0.0f;
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) { rm[r] = -INFINITY; rl[r] = 0.0f; rc[r] = 1.0f; }

    int last = min(q0 + BQ, T) - 1;
    int nkt = last / BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * BK;
        __syncthreads();  // the previous tile's products are done with Ks, Vs, P
        cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
        cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
        __syncthreads();
        cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);  // S = Q K^T
        __syncthreads();
        {   // online softmax, TPR threads per row
            int r = threadIdx.x / TPR, sub = threadIdx.x % TPR;
            int t = q0 + r;
            float mx = -INFINITY;
            for (int c = sub; c < BK; c += TPR)
                if (t < T && k0 + c <= t) mx = fmaxf(mx, S[r * lds + c] * scale);
            for (int o = TPR / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float m_old = rm[r], m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int c = sub; c < BK; c += TPR) {
                float p = 0.0f;
                if (t < T && k0 + c <= t) p = expf(S[r * lds + c] * scale - m_new);
                floatX pb = cu_from<floatX>(p);
                P[r * ldp + c] = pb;
                sum += cu_tof(pb);
            }
            for (int o = TPR / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            float corr = (m_new == -INFINITY) ? 1.0f : expf(m_old - m_new);
            __syncwarp();
            if (sub == 0) { rm[r] = m_new; rl[r] = rl[r] * corr + sum; rc[r] = corr; }
        }
        __syncthreads();
        if (kt > 0)
            for (int e = threadIdx.x; e < BQ * hdp; e += blockDim.x) O[(e / hdp) * ldo + e % hdp] *= rc[e / hdp];
        __syncthreads();
        cu_att_mma<true, true>(O, ldo, P, ldp, Vs, ldh, BQ, hdp, BK, true);  // O += P V
    }
    __syncthreads();
    floatX* obase = out + (size_t)b * T * ostride + (size_t)h * hd;
    for (int e = threadIdx.x; e < BQ * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, t = q0 + r;
        if (t < T) obase[(size_t)t * ostride + c] = cu_from<floatX>(O[r * ldo + c] / rl[r]);
    }
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
        int t = q0 + r;
        if (t < T) lse[((size_t)b * nh + h) * T + t] = rm[r] + logf(rl[r]);
    }
}

// D[b, h, t] = sum_d dO * O (one warp per row)
__global__ void gk_attention_D(float* D, const floatX* dout, const floatX* out, int B, int T, int nh, int hd) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b, t, h)
    int lane = threadIdx.x & 31;
    if (row >= (size_t)B * T * nh) return;
    const floatX* go = dout + row * hd;
    const floatX* o = out + row * hd;
    float s = 0.0f;
    for (int i = lane; i < hd; i += 32) s += cu_tof(go[i]) * cu_tof(o[i]);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    int h = (int)(row % nh);
    size_t bt = row / nh;
    int t = (int)(bt % T), b = (int)(bt / T);
    if (lane == 0) D[((size_t)b * nh + h) * T + t] = s;
}

struct CuAttKVLayout { size_t k, v, q, dO, s, dp, p, ds, dk, dv, l, d, total; };
__host__ __device__ inline CuAttKVLayout cu_att_kv_layout(int hdp) {
    CuAttKVLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    const int BK = CU_ATT_KV_BK, BQ = CU_ATT_KV_BQ;
    L.k = cu_carve(&off, BK * ldh * sizeof(floatX));
    L.v = cu_carve(&off, BK * ldh * sizeof(floatX));
    L.q = cu_carve(&off, BQ * ldh * sizeof(floatX));
    L.dO = cu_carve(&off, BQ * ldh * sizeof(floatX));
    L.s = cu_carve(&off, BQ * (BK + 4) * sizeof(float));
    L.dp = cu_carve(&off, BQ * (BK + 4) * sizeof(float));
    L.p = cu_carve(&off, BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.ds = cu_carve(&off, BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.dk = cu_carve(&off, BK * (hdp + 4) * sizeof(float));
    L.dv = cu_carve(&off, BK * (hdp + 4) * sizeof(float));
    L.l = cu_carve(&off, BQ * sizeof(float));
    L.d = cu_carve(&off, BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_BWD_THREADS)
gk_attention_backward_dkdv(floatX* dk, floatX* dv, const floatX* dout, const floatX* q, const floatX* k,
                           const floatX* v, int ldq, int ldk, const float* lse, const float* Dbuf, int B, int T, int nh,
                           int nkv, int hd, int hdp, float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BK = CU_ATT_KV_BK, BQ = CU_ATT_KV_BQ;
    CuAttKVLayout L = cu_att_kv_layout(hdp);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* dOs = (floatX*)(cu_att_smem + L.dO);
    float* S = (float*)(cu_att_smem + L.s);
    float* dP = (float*)(cu_att_smem + L.dp);
    floatX* P = (floatX*)(cu_att_smem + L.p);
    floatX* dS = (floatX*)(cu_att_smem + L.ds);
    float* dK = (float*)(cu_att_smem + L.dk);
    float* dV = (float*)(cu_att_smem + L.dv);
    float* Ls = (float*)(cu_att_smem + L.l);
    float* Ds = (float*)(cu_att_smem + L.d);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int kt = blockIdx.x;  // small k0 = most work: scheduled first
    int hk = blockIdx.y, b = blockIdx.z;
    int k0 = kt * BK;
    int group = nh / nkv;
    size_t qstride = (size_t)ldq, kstride = (size_t)ldk, ostride = (size_t)nh * hd;  // tokens of q, k/v, out
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;
    cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
    cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
    for (int e = threadIdx.x; e < BK * ldo; e += blockDim.x) { dK[e] = 0.0f; dV[e] = 0.0f; }

    int ntq = (T + BQ - 1) / BQ;
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
        const floatX* dobase = dout + (size_t)b * T * ostride + (size_t)h * hd;
        const float* lrow = lse + ((size_t)b * nh + h) * T;
        const float* drow = Dbuf + ((size_t)b * nh + h) * T;
        for (int qt = k0 / BQ; qt < ntq; qt++) {  // query rows t >= k0 only
            int q0 = qt * BQ;
            __syncthreads();  // the previous products are done with Qs, dOs, P, dS
            cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
            cu_att_load_tile(dOs, ldh, dobase, ostride, q0, T, BQ, hd, hdp, vec);
            for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
                int t = q0 + r;
                Ls[r] = t < T ? lrow[t] : 0.0f;
                Ds[r] = t < T ? drow[t] : 0.0f;
            }
            __syncthreads();
            cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);    // S = Q K^T
            cu_att_mma<true, false>(dP, lds, dOs, ldh, Vs, ldh, BQ, BK, hdp, false);  // dP = dO V^T
            __syncthreads();
            for (int e = threadIdx.x; e < BQ * BK; e += blockDim.x) {
                int r = e / BK, c = e % BK, t = q0 + r, s = k0 + c;
                float p = 0.0f, ds = 0.0f;
                if (t < T && s <= t) {
                    p = expf(S[r * lds + c] * scale - Ls[r]);
                    ds = p * (dP[r * lds + c] - Ds[r]) * scale;
                }
                P[r * ldp + c] = cu_from<floatX>(p);
                dS[r * ldp + c] = cu_from<floatX>(ds);
            }
            __syncthreads();
            cu_att_mma<false, true>(dV, ldo, P, ldp, dOs, ldh, BK, hdp, BQ, true);  // dV += P^T dO
            cu_att_mma<false, true>(dK, ldo, dS, ldp, Qs, ldh, BK, hdp, BQ, true);  // dK += dS^T Q
        }
    }
    __syncthreads();
    floatX* dkbase = dk + (size_t)b * T * kstride + (size_t)hk * hd;
    floatX* dvbase = dv + (size_t)b * T * kstride + (size_t)hk * hd;
    for (int e = threadIdx.x; e < BK * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, s = k0 + r;
        if (s < T) {
            dkbase[(size_t)s * kstride + c] = cu_from<floatX>(dK[r * ldo + c]);
            dvbase[(size_t)s * kstride + c] = cu_from<floatX>(dV[r * ldo + c]);
        }
    }
}

struct CuAttQLayout { size_t q, dO, k, v, s, dp, ds, dq, l, d, total; };
__host__ __device__ inline CuAttQLayout cu_att_q_layout(int hdp) {
    CuAttQLayout L;
    size_t ldh = hdp + CU_ATT_PAD, off = 0;
    const int BQ = CU_ATT_Q_BQ, BK = CU_ATT_Q_BK;
    L.q = cu_carve(&off, BQ * ldh * sizeof(floatX));
    L.dO = cu_carve(&off, BQ * ldh * sizeof(floatX));
    L.k = cu_carve(&off, BK * ldh * sizeof(floatX));
    L.v = cu_carve(&off, BK * ldh * sizeof(floatX));
    L.s = cu_carve(&off, BQ * (BK + 4) * sizeof(float));
    L.dp = cu_carve(&off, BQ * (BK + 4) * sizeof(float));
    L.ds = cu_carve(&off, BQ * (BK + CU_ATT_PAD) * sizeof(floatX));
    L.dq = cu_carve(&off, BQ * (hdp + 4) * sizeof(float));
    L.l = cu_carve(&off, BQ * sizeof(float));
    L.d = cu_carve(&off, BQ * sizeof(float));
    L.total = off;
    return L;
}

__global__ void __launch_bounds__(CU_ATT_BWD_THREADS)
gk_attention_backward_dq(floatX* dq, const floatX* dout, const floatX* q, const floatX* k, const floatX* v, int ldq,
                         int ldk, const float* lse, const float* Dbuf, int B, int T, int nh, int nkv, int hd, int hdp,
                         float scale, int vec) {
    extern __shared__ __align__(128) unsigned char cu_att_smem[];
    const int BQ = CU_ATT_Q_BQ, BK = CU_ATT_Q_BK;
    CuAttQLayout L = cu_att_q_layout(hdp);
    floatX* Qs = (floatX*)(cu_att_smem + L.q);
    floatX* dOs = (floatX*)(cu_att_smem + L.dO);
    floatX* Ks = (floatX*)(cu_att_smem + L.k);
    floatX* Vs = (floatX*)(cu_att_smem + L.v);
    float* S = (float*)(cu_att_smem + L.s);
    float* dP = (float*)(cu_att_smem + L.dp);
    floatX* dS = (floatX*)(cu_att_smem + L.ds);
    float* dQ = (float*)(cu_att_smem + L.dq);
    float* Ls = (float*)(cu_att_smem + L.l);
    float* Ds = (float*)(cu_att_smem + L.d);
    const int ldh = hdp + CU_ATT_PAD, lds = BK + 4, ldp = BK + CU_ATT_PAD, ldo = hdp + 4;

    int ntq = (T + BQ - 1) / BQ;
    int qt = ntq - 1 - (int)blockIdx.x;
    int h = blockIdx.y, b = blockIdx.z;
    int hk = h / (nh / nkv);
    int q0 = qt * BQ;
    size_t qstride = (size_t)ldq, kstride = (size_t)ldk, ostride = (size_t)nh * hd;  // tokens of q, k/v, out
    const floatX* qbase = q + (size_t)b * T * qstride + (size_t)h * hd;
    const floatX* dobase = dout + (size_t)b * T * ostride + (size_t)h * hd;
    const floatX* kbase = k + (size_t)b * T * kstride + (size_t)hk * hd;
    const floatX* vbase = v + (size_t)b * T * kstride + (size_t)hk * hd;
    cu_att_load_tile(Qs, ldh, qbase, qstride, q0, T, BQ, hd, hdp, vec);
    cu_att_load_tile(dOs, ldh, dobase, ostride, q0, T, BQ, hd, hdp, vec);
    for (int e = threadIdx.x; e < BQ * ldo; e += blockDim.x) dQ[e] = 0.0f;
    for (int r = threadIdx.x; r < BQ; r += blockDim.x) {
        int t = q0 + r;
        Ls[r] = t < T ? lse[((size_t)b * nh + h) * T + t] : 0.0f;
        Ds[r] = t < T ? Dbuf[((size_t)b * nh + h) * T + t] : 0.0f;
    }
    int last = min(q0 + BQ, T) - 1;
    int nkt = last / BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * BK;
        __syncthreads();
        cu_att_load_tile(Ks, ldh, kbase, kstride, k0, T, BK, hd, hdp, vec);
        cu_att_load_tile(Vs, ldh, vbase, kstride, k0, T, BK, hd, hdp, vec);
        __syncthreads();
        cu_att_mma<true, false>(S, lds, Qs, ldh, Ks, ldh, BQ, BK, hdp, false);    // S = Q K^T
        cu_att_mma<true, false>(dP, lds, dOs, ldh, Vs, ldh, BQ, BK, hdp, false);  // dP = dO V^T
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * BK; e += blockDim.x) {
            int r = e / BK, c = e % BK, t = q0 + r, s = k0 + c;
            float ds = 0.0f;
            if (t < T && s <= t) {
                float p = expf(S[r * lds + c] * scale - Ls[r]);
                ds = p * (dP[r * lds + c] - Ds[r]) * scale;
            }
            dS[r * ldp + c] = cu_from<floatX>(ds);
        }
        __syncthreads();
        cu_att_mma<true, true>(dQ, ldo, dS, ldp, Ks, ldh, BQ, hdp, BK, true);  // dQ += dS K
    }
    __syncthreads();
    floatX* dqbase = dq + (size_t)b * T * qstride + (size_t)h * hd;
    for (int e = threadIdx.x; e < BQ * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd, t = q0 + r;
        if (t < T) dqbase[(size_t)t * qstride + c] = cu_from<floatX>(dQ[r * ldo + c]);
    }
}

// raises a kernel's dynamic shared memory limit once; fatal with the numbers if it cannot fit
static void cu_smem_optin(const void* kernel, size_t bytes, int* done_bytes, const char* name, int hd) {
    if ((int)bytes > g_cu.max_smem_optin)
        fatal("attention kernel %s needs %zu bytes of shared memory for head_dim %d, but this GPU allows %d per block; "
              "head_dim up to 128 is supported", name, bytes, hd, g_cu.max_smem_optin);
    if ((int)bytes > *done_bytes) {
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *done_bytes = (int)bytes;
    }
}

// 16-byte tile loads: hd and the token strides multiples of CU_VEC, the pointers aligned
static int cu_att_vec(const void* a, const void* b, const void* c, int ldq, int ldk, int hd) {
    return (hd % CU_VEC == 0) && (ldq % CU_VEC == 0) && (ldk % CU_VEC == 0) && cu_is_aligned16(a) &&
           cu_is_aligned16(b) && cu_is_aligned16(c);
}

#ifdef GRASS_CUDNN
// cuDNN's fused attention lives in its own translation unit (cuda/attention_cudnn.cpp, compiled
// once by cuda.mk and linked where USE_CUDNN=1): this build calls it through the C-style header,
// with its workspace from a scratch buffer of the backend (accounted like every allocation)
#include "attention_cudnn.h"
static CuScratch cu_cudnn_ws = {NULL, 0};

static void* cu_cudnn_workspace(int B, int T, int nh, int nkv, int hd, int ld_q, int ld_kv, size_t* bytes) {
    // the graphs' cache after the first call
    *bytes = cudnn_att_workspace_bytes(B, T, nh, nkv, hd, ld_q, ld_kv, NULL, NULL, 0);
    return *bytes > 0 ? cu_scratch(&cu_cudnn_ws, *bytes, "cuDNN attention workspace") : NULL;
}
#endif

// --attention: the own kernels (0, every build) or cuDNN's fused attention (1, GRASS_CUDNN builds).
// On success with cuDNN, `why` holds the versions (for the banner).
int backend_attention_select(int use_cudnn, char* why, size_t n) {
    if (n > 0) why[0] = '\0';
    if (!use_cudnn) { g_cu.attention_cudnn = 0; return 1; }
#ifdef GRASS_CUDNN
    if (sizeof(floatX) != 2) {
        snprintf(why, n, "this is the fp32 build; cuDNN's fused attention needs bf16");
        return 0;
    }
    g_cu.attention_cudnn = 1;
    char ver[160];
    cudnn_att_versions(ver, sizeof(ver));
    snprintf(why, n, "%s; backward with set_deterministic_algorithm", ver);
    return 1;
#else
    snprintf(why, n, "this GPU build was made without cuDNN's frontend (cudnn_frontend.h not found, or USE_CUDNN=0): "
             "pip install nvidia-cudnn-frontend, then rebuild (make train_llama)");
    return 0;
#endif
}

// the attention library's own workspace for a step of this shape: cuDNN's (queried from its forward
// and backward graphs, which are built here, so that a shape cuDNN refuses stops the run before it
// allocates anything) when --attention cudnn, else 0 (the own kernels' scratch is in
// backend_workspace_bytes). `note` says what it is, and whether the backward is deterministic.
size_t backend_attention_workspace_bytes(const WorkspaceSizes* w, char* note, size_t n) {
    if (n > 0) note[0] = '\0';
    if (!g_cu.attention_cudnn) return 0;
#ifdef GRASS_CUDNN
    int ld = (w->nh + 2 * w->nkv) * w->hd;  // the fused qkv buffer's width (llama_model.h)
    int det = 0;
    char why[512] = "";
    size_t b = cudnn_att_workspace_bytes(w->B, (int)w->T, w->nh, w->nkv, w->hd, ld, ld, &det, why, sizeof(why));
    size_t grow = b + b / 4;  // cu_scratch grows by a quarter
    if (det) snprintf(note, n, "cuDNN attention, queried from its graphs; deterministic backward");
    else snprintf(note, n, "cuDNN attention, queried from its graphs; backward NOT deterministic: cuDNN refused "
                           "set_deterministic_algorithm for this shape: %s", why);
    return grow;
#else
    (void)w;
    return 0;
#endif
}

void attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int ld_q, int ld_kv,
                       int B, int T, int nh, int nkv, int hd) {
    if (B <= 0 || T <= 0) return;
    if (nkv <= 0 || nh % nkv != 0) fatal("attention_forward: n_heads %d is not a multiple of n_kv_heads %d", nh, nkv);
#ifdef GRASS_CUDNN
    if (g_cu.attention_cudnn) {
        size_t wsb = 0;
        void* ws = cu_cudnn_workspace(B, T, nh, nkv, hd, ld_q, ld_kv, &wsb);
        cudnn_att_forward(out, lse, q, k, v, ld_q, ld_kv, B, T, nh, nkv, hd, ws, wsb, g_cu.stream);
        CU_LAUNCHED("cuDNN fused attention forward");
        return;
    }
#endif
    int hdp = (hd + 15) / 16 * 16;
    static int done = 0;
    CuAttFwdLayout L = cu_att_fwd_layout(hdp);
    cu_smem_optin((const void*)gk_attention_forward, L.total, &done, "forward", hd);
    dim3 grid((T + CU_ATT_FWD_BQ - 1) / CU_ATT_FWD_BQ, nh, B);
    int vec = cu_att_vec(q, k, v, ld_q, ld_kv, hd);
    gk_attention_forward<<<grid, CU_ATT_FWD_THREADS, L.total, g_cu.stream>>>(out, lse, q, k, v, ld_q, ld_kv, B, T, nh,
            nkv, hd, hdp, 1.0f / sqrtf((float)hd), vec);
    CU_LAUNCHED("gk_attention_forward");
}

void attention_backward(floatX* dq, floatX* dk, floatX* dv, const floatX* dout, const floatX* out, const floatX* q,
                        const floatX* k, const floatX* v, int ld_q, int ld_kv, const float* lse, int B, int T, int nh,
                        int nkv, int hd) {
    if (B <= 0 || T <= 0) return;
    if (nkv <= 0 || nh % nkv != 0) fatal("attention_backward: n_heads %d is not a multiple of n_kv_heads %d", nh, nkv);
#ifdef GRASS_CUDNN
    if (g_cu.attention_cudnn) {
        size_t wsb = 0;
        void* ws = cu_cudnn_workspace(B, T, nh, nkv, hd, ld_q, ld_kv, &wsb);
        cudnn_att_backward(dq, dk, dv, dout, out, q, k, v, ld_q, ld_kv, lse, B, T, nh, nkv, hd, ws, wsb, g_cu.stream);
        CU_LAUNCHED("cuDNN fused attention backward");
        return;
    }
#endif
    int hdp = (hd + 15) / 16 * 16;
    float scale = 1.0f / sqrtf((float)hd);
    size_t rows = (size_t)B * T * nh;
    float* D = (float*)cu_scratch(&g_cu.sc_att, rows * sizeof(float), "attention backward scratch");
    gk_attention_D<<<cu_ceil_div(rows, 8), 256, 0, g_cu.stream>>>(D, dout, out, B, T, nh, hd);
    CU_LAUNCHED("gk_attention_D");
    int vec = cu_att_vec(q, k, v, ld_q, ld_kv, hd) && cu_is_aligned16(dout);
    static int done_kv = 0, done_q = 0;
    CuAttKVLayout LK = cu_att_kv_layout(hdp);
    cu_smem_optin((const void*)gk_attention_backward_dkdv, LK.total, &done_kv, "backward dK/dV", hd);
    dim3 gkv((T + CU_ATT_KV_BK - 1) / CU_ATT_KV_BK, nkv, B);
    gk_attention_backward_dkdv<<<gkv, CU_ATT_BWD_THREADS, LK.total, g_cu.stream>>>(dk, dv, dout, q, k, v, ld_q, ld_kv,
            lse, D, B, T, nh, nkv, hd, hdp, scale, vec);
    CU_LAUNCHED("gk_attention_backward_dkdv");
    CuAttQLayout LQ = cu_att_q_layout(hdp);
    cu_smem_optin((const void*)gk_attention_backward_dq, LQ.total, &done_q, "backward dQ", hd);
    dim3 gq((T + CU_ATT_Q_BQ - 1) / CU_ATT_Q_BQ, nh, B);
    gk_attention_backward_dq<<<gq, CU_ATT_BWD_THREADS, LQ.total, g_cu.stream>>>(dq, dout, q, k, v, ld_q, ld_kv, lse, D,
                                                                               B, T, nh, nkv, hd, hdp, scale, vec);
    CU_LAUNCHED("gk_attention_backward_dq");
}

#endif // GRASS_CUDA_ATTENTION_CUH
