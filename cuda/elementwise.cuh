/*
 * cuda/elementwise.cuh: the row-wise and elementwise model ops, forward and backward:
 * embedding_forward/backward (a stable radix sort of the tokens, one block per run of equal
 * tokens: no atomics), rmsnorm_forward/backward (dw through fixed-order partial sums; the
 * weight gradients of both in floatX or fp32, backend.h's GradBuf),
 * rope_forward/backward and rope_qk (rotate-half; rope_qk reads q and k in the fused qkv buffer),
 * swiglu_forward/backward (over the fused gate|up buffer) and add_inplace.
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_ELEMENTWISE_CUH
#define GRASS_CUDA_ELEMENTWISE_CUH

#include "common.cuh"

// ---- embedding ----------------------------------------------------------------------------------

__global__ void gk_embedding_forward(floatX* out, const int* tokens, const floatX* wte, int N, int d, int vec) {
    int i = blockIdx.x;
    const floatX* src = wte + (size_t)tokens[i] * d;
    floatX* dst = out + (size_t)i * d;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC)
            cu_store_pack(dst + j, cu_load_pack(src + j));
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
    }
}

void embedding_forward(floatX* out, const int* d_tokens, const floatX* wte, int N, int d) {
    if (N <= 0) return;
    int vec = (d % CU_VEC == 0) && cu_is_aligned16(out) && cu_is_aligned16(wte);
    gk_embedding_forward<<<N, 128, 0, g_cu.stream>>>(out, d_tokens, wte, N, d, vec);
    CU_LAUNCHED("gk_embedding_forward");
}

__global__ void gk_iota(int* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

// One block per run of equal tokens in the sorted order; the run's rows are summed in fp32 in
// position order (radix sort is stable), then added to the row of dwte once. TW: dwte's dtype
// (floatX, or float with --grad-dtype fp32).
template <typename TW>
__global__ void gk_embedding_backward(TW* dwte, const floatX* dout, const int* sorted_tok, const int* sorted_pos,
                                      int N, int d) {
    int p = blockIdx.x;
    int tok = sorted_tok[p];
    if (p > 0 && sorted_tok[p - 1] == tok) return;  // not the start of a run
    int end = p + 1;
    while (end < N && sorted_tok[end] == tok) end++;
    TW* row = dwte + (size_t)tok * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = 0.0f;
        for (int q = p; q < end; q++) acc += cu_tof(dout[(size_t)sorted_pos[q] * d + j]);
        row[j] = cu_from<TW>(cu_tof(row[j]) + acc);
    }
}

void embedding_backward(GradBuf dwte, const floatX* dout, const int* d_tokens, int N, int d) {
    if (N <= 0) return;
    int* keys = (int*)cu_scratch(&g_cu.sc_emb_keys, (size_t)2 * N * sizeof(int), "embedding backward scratch");
    int* vals = (int*)cu_scratch(&g_cu.sc_emb_vals, (size_t)2 * N * sizeof(int), "embedding backward scratch");
    int* keys_out = keys + N;
    int* vals_in = vals;
    int* vals_out = vals + N;
    gk_iota<<<cu_ceil_div(N, 256), 256, 0, g_cu.stream>>>(vals_in, N);
    CU_LAUNCHED("gk_iota");
    size_t temp_bytes = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, d_tokens, keys_out, vals_in, vals_out, N, 0,
                                              (int)(sizeof(int) * 8), g_cu.stream));
    void* temp = cu_scratch(&g_cu.sc_emb_temp, temp_bytes + 16, "embedding backward scratch");
    cudaCheck(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, d_tokens, keys_out, vals_in, vals_out, N, 0,
                                              (int)(sizeof(int) * 8), g_cu.stream));
    if (dwte.dtype == GRAD_FP32) {
        gk_embedding_backward<float><<<N, 128, 0, g_cu.stream>>>((float*)dwte.p, dout, keys_out, vals_out, N, d);
        CU_LAUNCHED("gk_embedding_backward<float>");
    } else {
        gk_embedding_backward<floatX><<<N, 128, 0, g_cu.stream>>>((floatX*)dwte.p, dout, keys_out, vals_out, N, d);
        CU_LAUNCHED("gk_embedding_backward");
    }
}

// ---- RMSNorm ------------------------------------------------------------------------------------

__global__ void gk_rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d,
                                   float eps, int vec) {
    int i = blockIdx.x;
    const floatX* x = inp + (size_t)i * d;
    floatX* o = out + (size_t)i * d;
    float ss = 0.0f;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(x + j);
            for (int k = 0; k < CU_VEC; k++) { float v = cu_tof(p.v[k]); ss += v * v; }
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) { float v = cu_tof(x[j]); ss += v * v; }
    }
    ss = cu_block_sum(ss);
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < d; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(x + j), wp = cu_load_pack(w + j), q;
            for (int k = 0; k < CU_VEC; k++) q.v[k] = cu_from<floatX>(cu_tof(wp.v[k]) * (cu_tof(p.v[k]) * r));
            cu_store_pack(o + j, q);
        }
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = cu_from<floatX>(cu_tof(w[j]) * (cu_tof(x[j]) * r));
    }
    if (threadIdx.x == 0) rstd[i] = r;
}

static int cu_row_threads(int d) { return d >= 2048 ? 256 : 128; }

void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d, float eps) {
    if (N <= 0) return;
    int vec = (d % CU_VEC == 0) && cu_is_aligned16(out) && cu_is_aligned16(inp) && cu_is_aligned16(w);
    gk_rmsnorm_forward<<<N, cu_row_threads(d), 0, g_cu.stream>>>(out, rstd, inp, w, N, d, eps, vec);
    CU_LAUNCHED("gk_rmsnorm_forward");
}

// One pass over a chunk of CU_RMS_ROWS rows per block: for each row, dinp += r (w g - x r mean)
// with mean = sum_j (w_j g_j)(x_j r) / d, and the row's dout * x * r added to the block's column
// sums in shared memory (each thread owns its columns), written out as partial[chunk, :] for
// gk_rmsnorm_backward_dw_final. dout and x are read once for both gradients. partial == NULL:
// no weight gradient (dx only).
#define CU_RMS_ROWS 16  // rows per block, and per dw partial sum
__global__ void gk_rmsnorm_backward(floatX* dinp, float* partial, const floatX* dout, const floatX* inp,
                                    const floatX* w, const float* rstd, int N, int d) {
    extern __shared__ float cu_dw_acc[];  // d floats when partial != NULL
    int chunk = blockIdx.x;
    int r0 = chunk * CU_RMS_ROWS, r1 = min(N, r0 + CU_RMS_ROWS);
    if (partial != NULL)
        for (int j = threadIdx.x; j < d; j += blockDim.x) cu_dw_acc[j] = 0.0f;
    for (int i = r0; i < r1; i++) {
        const floatX* x = inp + (size_t)i * d;
        const floatX* g = dout + (size_t)i * d;
        floatX* dx = dinp + (size_t)i * d;
        float r = rstd[i];
        float dot = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float gj = cu_tof(g[j]), xr = cu_tof(x[j]) * r;
            dot += (cu_tof(w[j]) * gj) * xr;
            if (partial != NULL) cu_dw_acc[j] += gj * xr;
        }
        dot = cu_block_sum(dot);  // also a barrier: every thread is done with row i
        float mean = dot / (float)d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float v = r * (cu_tof(w[j]) * cu_tof(g[j]) - cu_tof(x[j]) * r * mean);
            dx[j] = cu_from<floatX>(cu_tof(dx[j]) + v);
        }
    }
    if (partial != NULL)
        for (int j = threadIdx.x; j < d; j += blockDim.x) partial[(size_t)chunk * d + j] = cu_dw_acc[j];
}
// dw += the chunks' sums, in chunk order; TW: dw's dtype (floatX, or float with --grad-dtype fp32)
template <typename TW>
__global__ void gk_rmsnorm_backward_dw_final(TW* dw, const float* partial, int nchunks, int d) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    float s = 0.0f;
    for (int c = 0; c < nchunks; c++) s += partial[(size_t)c * d + col];
    dw[col] = cu_from<TW>(cu_tof(dw[col]) + s);
}

void rmsnorm_backward(floatX* dinp, GradBuf dw, const floatX* dout, const floatX* inp, const floatX* w,
                      const float* rstd, int N, int d) {
    if (N <= 0) return;
    int nchunks = (N + CU_RMS_ROWS - 1) / CU_RMS_ROWS;
    float* partial = NULL;
    size_t smem = 0;
    if (dw.p != NULL) {
        partial = (float*)cu_scratch(&g_cu.sc_rms, (size_t)nchunks * d * sizeof(float), "rmsnorm dw scratch");
        smem = (size_t)d * sizeof(float);  // the block's column sums
        static size_t opted_in = 48 << 10;   // above the default 48 KiB a kernel must opt in
        if (smem > opted_in) {
            if ((int)smem > g_cu.max_smem_optin)
                fatal("rmsnorm_backward: dim %d needs %zu bytes of shared memory; this GPU allows %d per block", d,
                      smem, g_cu.max_smem_optin);
            cudaCheck(cudaFuncSetAttribute((const void*)gk_rmsnorm_backward,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            opted_in = smem;
        }
    }
    gk_rmsnorm_backward<<<nchunks, cu_row_threads(d), smem, g_cu.stream>>>(dinp, partial, dout, inp, w, rstd, N, d);
    CU_LAUNCHED("gk_rmsnorm_backward");
    if (dw.p == NULL) return;
    if (dw.dtype == GRAD_FP32) {
        gk_rmsnorm_backward_dw_final<float><<<cu_ceil_div(d, 256), 256, 0, g_cu.stream>>>((float*)dw.p, partial,
                nchunks, d);
        CU_LAUNCHED("gk_rmsnorm_backward_dw_final<float>");
    } else {
        gk_rmsnorm_backward_dw_final<floatX><<<cu_ceil_div(d, 256), 256, 0, g_cu.stream>>>((floatX*)dw.p, partial,
                nchunks, d);
        CU_LAUNCHED("gk_rmsnorm_backward_dw_final");
    }
}

// ---- RoPE (rotate-half) -------------------------------------------------------------------------

__global__ void gk_rope(floatX* x, const float* cosT, const float* sinT, int B, int T, int nh, int hd, float sign) {
    int half = hd / 2;
    size_t total = (size_t)B * T * nh * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rest = idx / half;         // (b, t, h)
        int t = (int)((rest / nh) % T);
        floatX* v = x + rest * hd;
        float c = cosT[(size_t)t * half + i], s = sign * sinT[(size_t)t * half + i];
        float x1 = cu_tof(v[i]), x2 = cu_tof(v[i + half]);
        v[i] = cu_from<floatX>(x1 * c - x2 * s);
        v[i + half] = cu_from<floatX>(x2 * c + x1 * s);
    }
}

void rope_forward(floatX* x, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    size_t work = (size_t)B * T * n_heads * (head_dim / 2);
    if (work == 0) return;
    gk_rope<<<cu_grid_for(work, 256), 256, 0, g_cu.stream>>>(x, d_cos, d_sin, B, T, n_heads, head_dim, 1.0f);
    CU_LAUNCHED("gk_rope");
}
void rope_backward(floatX* dx, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    size_t work = (size_t)B * T * n_heads * (head_dim / 2);
    if (work == 0) return;
    gk_rope<<<cu_grid_for(work, 256), 256, 0, g_cu.stream>>>(dx, d_cos, d_sin, B, T, n_heads, head_dim, -1.0f);
    CU_LAUNCHED("gk_rope");
}

// RoPE of q (nh heads, tokens ldq apart) and k (nkv heads, tokens ldk apart) in one launch (in
// the fused qkv buffer both are its width): a work item is a chunk of pairs (x1 = v[i],
// x2 = v[i + half]) of one row (b, t, head), q's rows first. With vec (half, ldq and ldk multiples
// of CU_VEC, every pointer 16-byte aligned) a chunk is CU_VEC pairs: two 16-byte packs of x and
// CU_VEC / 4 float4 of each table; else one pair, as gk_rope. The arithmetic is gk_rope's.
__global__ void gk_rope_qk(floatX* q, floatX* k, int ldq, int ldk, const float* cosT, const float* sinT, int B, int T,
                           int nh, int nkv, int hd, float sign, int vec) {
    int half = hd / 2, per = vec ? CU_VEC : 1, chunks = half / per;
    size_t rows_q = (size_t)B * T * nh, total = (rows_q + (size_t)B * T * nkv) * chunks;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t row = idx / chunks;
        int i0 = (int)(idx % chunks) * per;
        int in_q = row < rows_q, heads = in_q ? nh : nkv;
        size_t r = in_q ? row : row - rows_q;  // (b, t, h) within its tensor
        size_t token = r / heads;              // b * T + t
        int t = (int)(token % T);
        floatX* v = (in_q ? q + token * ldq : k + token * ldk) + (r % heads) * hd;
        const float* cp = cosT + (size_t)t * half + i0;
        const float* sp = sinT + (size_t)t * half + i0;
        if (vec) {
            float cs[CU_VEC], sn[CU_VEC];
            for (int j = 0; j < CU_VEC / 4; j++) {
                reinterpret_cast<float4*>(cs)[j] = reinterpret_cast<const float4*>(cp)[j];
                reinterpret_cast<float4*>(sn)[j] = reinterpret_cast<const float4*>(sp)[j];
            }
            CuPack a = cu_load_pack(v + i0), b = cu_load_pack(v + half + i0), oa, ob;
#pragma unroll
            for (int j = 0; j < CU_VEC; j++) {
                float c = cs[j], s = sign * sn[j];
                float x1 = cu_tof(a.v[j]), x2 = cu_tof(b.v[j]);
                oa.v[j] = cu_from<floatX>(x1 * c - x2 * s);
                ob.v[j] = cu_from<floatX>(x2 * c + x1 * s);
            }
            cu_store_pack(v + i0, oa);
            cu_store_pack(v + half + i0, ob);
        } else {
            float c = cp[0], s = sign * sp[0];
            float x1 = cu_tof(v[i0]), x2 = cu_tof(v[i0 + half]);
            v[i0] = cu_from<floatX>(x1 * c - x2 * s);
            v[i0 + half] = cu_from<floatX>(x2 * c + x1 * s);
        }
    }
}
void rope_qk(floatX* q, floatX* k, int ld_q, int ld_kv, const float* d_cos, const float* d_sin, int B, int T,
             int n_heads, int n_kv_heads, int head_dim, int backward) {
    int half = head_dim / 2;
    size_t rows = (size_t)B * T * (n_heads + n_kv_heads);
    if (rows == 0 || half == 0) return;
    int vec = half % CU_VEC == 0 && ld_q % CU_VEC == 0 && ld_kv % CU_VEC == 0 && CU_VEC % 4 == 0 &&
              cu_is_aligned16(q) && cu_is_aligned16(k) && cu_is_aligned16(d_cos) && cu_is_aligned16(d_sin);
    size_t work = rows * (vec ? half / CU_VEC : half);
    gk_rope_qk<<<cu_grid_for(work, 256), 256, 0, g_cu.stream>>>(q, k, ld_q, ld_kv, d_cos, d_sin, B, T, n_heads,
                                                                n_kv_heads, head_dim, backward ? -1.0f : 1.0f, vec);
    CU_LAUNCHED("gk_rope_qk");
}

// ---- SwiGLU, add ----------------------------------------------------------------------------------

__device__ __forceinline__ float cu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// SwiGLU over gu (N x 2f: each row's gate, then its up) and h or dh (N x f). Element i of h is
// (row i / f, column i % f). With vec (f a multiple of CU_VEC, every pointer 16-byte aligned) a
// thread takes a pack of CU_VEC, which never crosses a row; otherwise one element.
__global__ void gk_swiglu_forward(floatX* h, const floatX* gu, int N, int f, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)N * f;
    if (vec) {
        for (size_t p = tid; p < n / CU_VEC; p += stride) {
            size_t i = p * CU_VEC, row = i / f, j = i % f;
            const floatX* gate = gu + row * 2 * f + j;
            CuPack g = cu_load_pack(gate), u = cu_load_pack(gate + f), o;
            for (int k = 0; k < CU_VEC; k++) {
                float gv = cu_tof(g.v[k]);
                o.v[k] = cu_from<floatX>(gv * cu_sigmoid(gv) * cu_tof(u.v[k]));
            }
            cu_store_pack(h + i, o);
        }
        return;
    }
    for (size_t i = tid; i < n; i += stride) {
        size_t row = i / f, j = i % f;
        const floatX* gate = gu + row * 2 * f + j;
        float gv = cu_tof(gate[0]);
        h[i] = cu_from<floatX>(gv * cu_sigmoid(gv) * cu_tof(gate[f]));
    }
}
__global__ void gk_swiglu_backward(floatX* dgu, const floatX* dh, const floatX* gu, int N, int f, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)N * f;
    if (vec) {
        for (size_t p = tid; p < n / CU_VEC; p += stride) {
            size_t i = p * CU_VEC, row = i / f, j = i % f, off = row * 2 * f + j;
            CuPack g = cu_load_pack(gu + off), u = cu_load_pack(gu + off + f), d = cu_load_pack(dh + i);
            CuPack og, ou;
            for (int k = 0; k < CU_VEC; k++) {
                float gv = cu_tof(g.v[k]), sg = cu_sigmoid(gv), dv = cu_tof(d.v[k]);
                og.v[k] = cu_from<floatX>(dv * cu_tof(u.v[k]) * sg * (1.0f + gv * (1.0f - sg)));
                ou.v[k] = cu_from<floatX>(dv * gv * sg);
            }
            cu_store_pack(dgu + off, og);
            cu_store_pack(dgu + off + f, ou);
        }
        return;
    }
    for (size_t i = tid; i < n; i += stride) {
        size_t row = i / f, j = i % f, off = row * 2 * f + j;
        float gv = cu_tof(gu[off]), sg = cu_sigmoid(gv), dv = cu_tof(dh[i]);
        dgu[off] = cu_from<floatX>(dv * cu_tof(gu[off + f]) * sg * (1.0f + gv * (1.0f - sg)));
        dgu[off + f] = cu_from<floatX>(dv * gv * sg);
    }
}
// add_inplace processes packs of CU_VEC when both pointers are 16-byte aligned, plus a scalar
// tail; otherwise scalars throughout.
__global__ void gk_add_inplace(floatX* a, const floatX* b, size_t n, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    for (size_t p = tid; p < nv; p += stride) {
        CuPack x = cu_load_pack(a + p * CU_VEC), y = cu_load_pack(b + p * CU_VEC);
        for (int k = 0; k < CU_VEC; k++) x.v[k] = cu_from<floatX>(cu_tof(x.v[k]) + cu_tof(y.v[k]));
        cu_store_pack(a + p * CU_VEC, x);
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) a[i] = cu_from<floatX>(cu_tof(a[i]) + cu_tof(b[i]));
}

void swiglu_forward(floatX* h, const floatX* gu, int N, int f) {
    size_t n = (size_t)N * f;
    if (n == 0) return;
    int vec = f % CU_VEC == 0 && cu_is_aligned16(h) && cu_is_aligned16(gu);
    gk_swiglu_forward<<<cu_grid_for(vec ? n / CU_VEC : n, 256), 256, 0, g_cu.stream>>>(h, gu, N, f, vec);
    CU_LAUNCHED("gk_swiglu_forward");
}
void swiglu_backward(floatX* dgu, const floatX* dh, const floatX* gu, int N, int f) {
    size_t n = (size_t)N * f;
    if (n == 0) return;
    int vec = f % CU_VEC == 0 && cu_is_aligned16(dgu) && cu_is_aligned16(dh) && cu_is_aligned16(gu);
    gk_swiglu_backward<<<cu_grid_for(vec ? n / CU_VEC : n, 256), 256, 0, g_cu.stream>>>(dgu, dh, gu, N, f, vec);
    CU_LAUNCHED("gk_swiglu_backward");
}
void add_inplace(floatX* a, const floatX* b, size_t n) {
    if (n == 0) return;
    int vec = cu_is_aligned16(a) && cu_is_aligned16(b);
    gk_add_inplace<<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(a, b, n, vec);
    CU_LAUNCHED("gk_add_inplace");
}

#endif // GRASS_CUDA_ELEMENTWISE_CUH
