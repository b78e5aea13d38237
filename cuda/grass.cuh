/*
 * cuda/grass.cuh: Grass on the GPU: the gathered GEMM (grass_gathered_grad: gather the selected
 * columns of dY or X, scaled, then one GEMM into the fp32 C), the blockwise norm pass
 * (grass_grad_norms), weight decay and the subspace Adam update (grass_adam_update), and the
 * device selection (grass_select_device and its kernels; it mirrors grass_select in
 * grass_optim.cuh).
 * Needs cuda/common.cuh, cuda/gemm.cuh (cu_gemm, CU_XTYPE) and cuda/reduce.cuh (gk_sumsq_rows).
 */
#ifndef GRASS_CUDA_GRASS_CUH
#define GRASS_CUDA_GRASS_CUH

#include "common.cuh"
#include "gemm.cuh"
#include "reduce.cuh"   // gk_sumsq_rows

// ---- Grass --------------------------------------------------------------------------------------

// g (N x r) = src[:, idx] * scale, src (N x ld)
__global__ void gk_grass_gather(floatX* g, const floatX* src, const int* idx, const float* scale, int N, int ld,
                                int r) {
    size_t total = (size_t)N * r;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(e % r);
        size_t i = e / r;
        g[e] = cu_from<floatX>(cu_tof(src[i * ld + idx[j]]) * scale[j]);
    }
}

void grass_gathered_grad(float* C, const floatX* dout, int ld_dout, const floatX* inp, const int* d_idx,
                         const float* d_scale, int r, int N, int in, int outd, int cols_side, int accumulate) {
    if (r <= 0) return;
    floatX* g = (floatX*)cu_scratch(&g_cu.sc_gather, (size_t)N * r * sizeof(floatX), "grass gather scratch");
    const floatX* src = cols_side ? inp : dout;
    int ld = cols_side ? in : ld_dout;
    gk_grass_gather<<<cu_grid_for((size_t)N * r, 256), 256, 0, g_cu.stream>>>(g, src, d_idx, d_scale, N, ld, r);
    CU_LAUNCHED("gk_grass_gather");
    float beta = accumulate ? 1.0f : 0.0f;
    if (!cols_side) {
        // C (r x in) = g^T X: col-major C^T (in x r) = X^T (in x N) op_T(g^T as r x N)
        cu_gemm(0, 1, in, r, N, inp, CU_XTYPE, in, g, CU_XTYPE, r, C, CUDA_R_32F, in, 1.0f, beta);
    } else {
        // C (out x r) = dY^T g: col-major C^T (r x out) = g^T (r x N) op_T(dY^T as out x N)
        cu_gemm(0, 1, r, outd, N, g, CU_XTYPE, r, dout, CU_XTYPE, ld_dout, C, CUDA_R_32F, r, 1.0f, beta);
    }
}


#define CU_NORM_BUDGET_FLOATS ((size_t)16 << 20)  // 64 MiB of G at a time

void grass_grad_norms(float* norms, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                      int cols_side) {
    if (!cols_side) {
        // row block [r0, r0+nr) of G = dY[:, r0:r0+nr]^T X, stored so that each row of G is contiguous:
        // col-major (in x nr) = X^T (in x N) op_T(dY^T block, nr x N with ld ld_dout)
        int rb = (int)(CU_NORM_BUDGET_FLOATS / (size_t)in);
        if (rb >= 8) rb &= ~7;  // keep dY + r0 16-byte aligned
        if (rb < 1) rb = 1;
        if (rb > outd) rb = outd;
        float* G = (float*)cu_scratch(&g_cu.sc_norms, (size_t)rb * in * sizeof(float), "grass norm scratch");
        for (int r0 = 0; r0 < outd; r0 += rb) {
            int nr = outd - r0 < rb ? outd - r0 : rb;
            cu_gemm(0, 1, in, nr, N, inp, CU_XTYPE, in, dout + r0, CU_XTYPE, ld_dout, G, CUDA_R_32F, in, 1.0f, 0.0f);
            gk_sumsq_rows<<<nr, 256, 0, g_cu.stream>>>(norms + r0, G, in);
            CU_LAUNCHED("gk_sumsq_rows");
        }
    } else {
        // column block [c0, c0+nc) of G = dY^T X[:, c0:c0+nc], each column of G contiguous:
        // col-major (out x nc) = dY^T (out x N) op_T(X^T block, nc x N with ld in)
        int cb = (int)(CU_NORM_BUDGET_FLOATS / (size_t)outd);
        if (cb >= 8) cb &= ~7;
        if (cb < 1) cb = 1;
        if (cb > in) cb = in;
        float* G = (float*)cu_scratch(&g_cu.sc_norms, (size_t)cb * outd * sizeof(float), "grass norm scratch");
        for (int c0 = 0; c0 < in; c0 += cb) {
            int nc = in - c0 < cb ? in - c0 : cb;
            cu_gemm(0, 1, outd, nc, N, dout, CU_XTYPE, ld_dout, inp + c0, CU_XTYPE, in, G, CUDA_R_32F, outd, 1.0f,
                    0.0f);
            gk_sumsq_rows<<<nc, 256, 0, g_cu.stream>>>(norms + c0, G, outd);
            CU_LAUNCHED("gk_sumsq_rows");
        }
    }
}

// W *= keep: stochastically rounded, or (Wm, the fp32 master copy) Wm *= keep and W = Wm rounded
__global__ void gk_decay(floatX* W, float* Wm, size_t n, float keep, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        if (Wm != NULL) { float w = Wm[i] * keep; Wm[i] = w; W[i] = cu_from<floatX>(w); }
        else W[i] = cu_round_sr(cu_tof(W[i]) * keep, cu_rand_at(seed, i));
    }
}

// Adam on the subspace element k = (j, c) (rows side, C r x in) or (i, j) (cols side, C out x r);
// the update lands on W[idx_j, c] or W[i, idx_j].
// S: the moments' storage, float or __nv_bfloat16 (rounded to nearest even on the store)
// a: the hyperparameters, by value as a kernel argument (a.lr and a.wd unused here: the step is
// step = a.lr * alpha, formed on the host, and the decay is gk_decay's)
template <typename S>
__global__ void gk_grass_adam(floatX* W, float* Wm, const float* C, S* m, S* v, const int* idx, const float* upscale,
                              int r, int outd, int in, int cols_side, float step, AdamParams a, uint64_t seed) {
    size_t total = (size_t)r * (cols_side ? outd : in);
    const float gs = cu_grad_scale(a);
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        int j;
        size_t widx;
        if (!cols_side) { j = (int)(k / in); widx = (size_t)idx[j] * in + (k % in); }
        else { j = (int)(k % r); widx = (k / r) * in + idx[j]; }
        if (upscale[j] == 0.0f) continue;  // a padding row (grass_pad_selection): no update, moments stay 0
        const float bc1 = a.bc_rows != NULL ? a.bc_rows[2 * j] : a.bc1,
                    bc2 = a.bc_rows != NULL ? a.bc_rows[2 * j + 1] : a.bc2;
        float g = C[k] * gs;
        float mk = a.b1 * cu_tof(m[k]) + (1.0f - a.b1) * g;
        float vk = a.b2 * cu_tof(v[k]) + (1.0f - a.b2) * g * g;
        m[k] = cu_from<S>(mk); v[k] = cu_from<S>(vk);
        float u = (mk / bc1) / (sqrtf(vk / bc2) + a.eps);
        if (Wm != NULL) { float w = Wm[widx] - step * upscale[j] * u; Wm[widx] = w; W[widx] = cu_from<floatX>(w); }
        else W[widx] = cu_round_sr(cu_tof(W[widx]) - step * upscale[j] * u, cu_rand_at(seed, widx));
    }
}

static uint32_t cu_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

void grass_adam_update(floatX* W, float* Wm, const float* C, void* m, void* v, int state_dtype, const int* d_idx,
                       const float* d_upscale, int r, int outd, int in, int cols_side, AdamParams a, float alpha,
                       uint64_t seed) {
    seed = splitmix64_mix(seed);
    if (a.wd > 0.0f) {
        size_t n = (size_t)outd * in;
        gk_decay<<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(W, Wm, n, 1.0f - a.lr * a.wd,
                                                               splitmix64_mix(seed ^ 0xDEC0DEULL));
        CU_LAUNCHED("gk_decay");
    }
    if (r <= 0) return;
    size_t total = (size_t)r * (cols_side ? outd : in);
    if (state_dtype == STATE_BF16)
        gk_grass_adam<__nv_bfloat16><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            W, Wm, C, (__nv_bfloat16*)m, (__nv_bfloat16*)v, d_idx, d_upscale, r, outd, in, cols_side, a.lr * alpha, a,
            seed);
    else
        gk_grass_adam<float><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            W, Wm, C, (float*)m, (float*)v, d_idx, d_upscale, r, outd, in, cols_side, a.lr * alpha, a, seed);
    CU_LAUNCHED("gk_grass_adam");
}

// backend.h's grass_remap_state, one element of the new layout per thread into tmp (the old
// layout is read whole while tmp fills), then one copy back. x * f in fp32, then cu_from<S>:
// __float2bfloat16_rn for bf16 moments, as the CPU's bf16_from_float (round to nearest even).
template <typename S>
__global__ void gk_grass_remap_state(S* tmp, const S* s, const int* src, const float* factor, int square, int r_old,
                                     int r_new, int other, int cols_side, size_t total) {
    size_t used = (size_t)r_new * other;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        float x = 0.0f;
        if (k < used) {
            int j = cols_side ? (int)(k % r_new) : (int)(k / other);
            size_t e = cols_side ? k / r_new : k % other;
            int sj = src[j];
            if (sj >= 0) {
                float f = factor[j];
                if (square) f = f * f;  // single products: nothing to contract into an FMA
                x = cu_tof(s[cols_side ? e * r_old + sj : (size_t)sj * other + e]) * f;
            }
        }
        tmp[k] = cu_from<S>(x);
    }
}

void grass_remap_state(void* s, void* tmp, int state_dtype, const int* d_src, const float* d_factor, int square,
                       int r_old, int r_new, int r_cap, int other, int cols_side) {
    size_t total = (size_t)r_cap * other;
    if (total == 0) return;
    if (state_dtype == STATE_BF16)
        gk_grass_remap_state<__nv_bfloat16><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            (__nv_bfloat16*)tmp, (const __nv_bfloat16*)s, d_src, d_factor, square, r_old, r_new, other, cols_side,
            total);
    else
        gk_grass_remap_state<float><<<cu_grid_for(total, 256), 256, 0, g_cu.stream>>>(
            (float*)tmp, (const float*)s, d_src, d_factor, square, r_old, r_new, other, cols_side, total);
    CU_LAUNCHED("gk_grass_remap_state");
    backend_copy(s, tmp, total * state_dtype_size(state_dtype));
}

// ---- Grass selection on the device --------------------------------------------------------------
// Mirrors grass_select in grass_optim.cuh step for step, so that both give the same indices and
// scales: the sums and the CDF are formed in double by one thread in the host's order, draw k
// uses the k-th value of the same splitmix64 stream, sorts are stable radix sorts (ties keep the
// lower index first, as the host's comparator does), and duplicates merge by index with the
// first draw's scale. The one place the two may part is log() in the without-replacement keys
// (CUDA's and the C library's double log may differ in the last bit).
// Method values: 0 topr, 1 multinorm, 2 multinorm-nr, 3 uniform, 4 uniform-nr (GrassSelect).
__global__ void gk_sel_prepare(const float* q, int dim, int norm_based, double* p, double* cdf) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;  // sequential on purpose: the host's order
    double total = 0.0;
    for (int i = 0; i < dim; i++) total += q[i];
    for (int i = 0; i < dim; i++) p[i] = (norm_based && total > 0.0) ? q[i] / total : 1.0 / dim;
    double acc = 0.0;
    for (int i = 0; i < dim; i++) { acc += p[i]; cdf[i] = acc; }
}
__global__ void gk_sel_draw_replace(const double* p, const double* cdf, int dim, int r, uint64_t rng, int* draws,
                                    float* rho) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= r) return;
    double u = rng_uniform01_at(rng, (uint64_t)k) * cdf[dim - 1];
    int lo = 0, hi = dim - 1;
    while (lo < hi) { int mid = (lo + hi) / 2; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
    while (p[lo] <= 0.0 && lo < dim - 1) lo++;
    draws[k] = lo;
    rho[k] = (float)(1.0 / sqrt((double)r * p[lo]));
}
__global__ void gk_sel_es_keys(const double* p, int dim, uint64_t rng, double* keys, int* iota) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    double u = rng_uniform01_at(rng, (uint64_t)i);
    if (u <= 0.0) u = 1e-300;
    keys[i] = p[i] > 0.0 ? log(u) / p[i] : -INFINITY;
    iota[i] = i;
}
__global__ void gk_sel_iota(int* iota, int dim) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < dim) iota[i] = i;
}
// the first r of the sorted order; rho by method
__global__ void gk_sel_take(const int* order, const double* p, int dim, int r, int method, int* draws, float* rho) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= r) return;
    int pick = order[k];
    draws[k] = pick;
    if (method == 0) rho[k] = 1.0f;
    else if (method == 2) rho[k] = (float)(p[pick] > 0.0 ? 1.0 / sqrt((double)r * p[pick]) : 1.0);
    else rho[k] = (float)sqrt((double)dim / r);
}
// merge duplicate draws: ascending index, the first draw's rho, upscale = count * rho
__global__ void gk_sel_merge(const int* draws, const float* rho, int r, int dim, int* count, float* first_rho, int* idx,
                             float* scale, float* upscale, int* r_eff) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    for (int i = 0; i < dim; i++) count[i] = 0;
    for (int k = 0; k < r; k++) {
        int i = draws[k];
        if (count[i] == 0) first_rho[i] = rho[k];
        count[i]++;
    }
    int n = 0;
    for (int i = 0; i < dim; i++) {
        if (count[i] == 0) continue;
        idx[n] = i; scale[n] = first_rho[i]; upscale[n] = first_rho[i] * (float)count[i];
        n++;
    }
    *r_eff = n;
}

int grass_select_device(int method, const float* d_norms, int dim, int r, uint64_t rng, int* d_idx, float* d_scale,
                        float* d_upscale) {
    if (method < 0 || method > 4) fatal("grass_select_device: unknown method %d", method);
    if (dim <= 0 || r <= 0 || r > dim) fatal("grass_select_device: rank %d of dimension %d", r, dim);
    // scratch: p, cdf, keys in/out (double); iota, order, draws, count, r_eff (int); rho, first_rho (float)
    size_t nd = (size_t)dim, off = 0;
    size_t sort_bytes = 0, sort_bytes_f = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairsDescending(NULL, sort_bytes, (const double*)NULL, (double*)NULL,
                                                        (const int*)NULL, (int*)NULL, dim, 0, 64, g_cu.stream));
    cudaCheck(cub::DeviceRadixSort::SortPairsDescending(NULL, sort_bytes_f, (const float*)NULL, (float*)NULL,
                                                        (const int*)NULL, (int*)NULL, dim, 0, 32, g_cu.stream));
    if (sort_bytes_f > sort_bytes) sort_bytes = sort_bytes_f;
    size_t total = 4 * nd * sizeof(double) + (3 * nd + (size_t)r + 1) * sizeof(int) + ((size_t)r + nd) * sizeof(float) +
                   sort_bytes + 8 * 256;
    char* base = (char*)cu_scratch(&g_cu.sc_select, total, "Grass selection scratch");
#define CU_SEL_CARVE(ptr, type, count) do { off = (off + 255) & ~(size_t)255; ptr = (type*)(base + off); \
                                           off += (size_t)(count) * sizeof(type); } while (0)
    double *p, *cdf, *keys, *keys_out;
    int *iota, *order, *draws, *count, *d_reff;
    float *rho, *first_rho;
    void* sort_temp;
    CU_SEL_CARVE(p, double, nd);
    CU_SEL_CARVE(cdf, double, nd);
    CU_SEL_CARVE(keys, double, nd);
    CU_SEL_CARVE(keys_out, double, nd);
    CU_SEL_CARVE(iota, int, nd);
    CU_SEL_CARVE(order, int, nd);
    CU_SEL_CARVE(count, int, nd);
    CU_SEL_CARVE(draws, int, r);
    CU_SEL_CARVE(d_reff, int, 1); CU_SEL_CARVE(rho, float, r); CU_SEL_CARVE(first_rho, float, nd);
    CU_SEL_CARVE(sort_temp, char, sort_bytes);
#undef CU_SEL_CARVE
    int norm_based = method == 1 || method == 2;
    gk_sel_prepare<<<1, 1, 0, g_cu.stream>>>(d_norms, dim, norm_based, p, cdf);
    CU_LAUNCHED("gk_sel_prepare");
    if (method == 0) {  // top-r: the norms themselves, sorted descending (stable: lower index first)
        gk_sel_iota<<<cu_ceil_div(dim, 256), 256, 0, g_cu.stream>>>(iota, dim);
        CU_LAUNCHED("gk_sel_iota");
        cudaCheck(cub::DeviceRadixSort::SortPairsDescending(sort_temp, sort_bytes, d_norms, (float*)keys_out, iota,
                                                            order, dim, 0, 32, g_cu.stream));
        gk_sel_take<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(order, p, dim, r, method, draws, rho);
        CU_LAUNCHED("gk_sel_take");
    } else if (method == 1 || method == 3) {  // with replacement
        gk_sel_draw_replace<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(p, cdf, dim, r, rng, draws, rho);
        CU_LAUNCHED("gk_sel_draw_replace");
    } else {  // without replacement: Efraimidis-Spirakis keys, the r largest
        gk_sel_es_keys<<<cu_ceil_div(dim, 256), 256, 0, g_cu.stream>>>(p, dim, rng, keys, iota);
        CU_LAUNCHED("gk_sel_es_keys");
        cudaCheck(cub::DeviceRadixSort::SortPairsDescending(sort_temp, sort_bytes, keys, keys_out, iota, order, dim, 0,
                                                            64, g_cu.stream));
        gk_sel_take<<<cu_ceil_div(r, 256), 256, 0, g_cu.stream>>>(order, p, dim, r, method, draws, rho);
        CU_LAUNCHED("gk_sel_take");
    }
    gk_sel_merge<<<1, 1, 0, g_cu.stream>>>(draws, rho, r, dim, count, first_rho, d_idx, d_scale, d_upscale, d_reff);
    CU_LAUNCHED("gk_sel_merge");
    int r_eff = 0;
    backend_download(&r_eff, d_reff, sizeof(int));
    return r_eff;
}

#endif // GRASS_CUDA_GRASS_CUH
