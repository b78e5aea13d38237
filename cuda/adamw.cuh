/*
 * cuda/adamw.cuh: the full-rank AdamW update (adamw_update): floatX or fp32 gradients, fp32 or
 * bf16 moments, an optional fp32 master copy, stochastic rounding of floatX parameters otherwise;
 * fp32 moments without a master copy take gk_adamw, in 16-byte packs where the pointers allow.
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_ADAMW_CUH
#define GRASS_CUDA_ADAMW_CUH

#include "common.cuh"

// ---- full-rank AdamW (fp32 moments, stochastic rounding of floatX parameters) -----------------

// one parameter's AdamW step (a: backend.h's AdamParams; g already scaled by cu_grad_scale(a))
__device__ __forceinline__ float cu_adam_param(float p, float g, float& m, float& v, const AdamParams& a) {
    m = a.b1 * m + (1.0f - a.b1) * g;
    v = a.b2 * v + (1.0f - a.b2) * g * g;
    float u = (m / a.bc1) / (sqrtf(v / a.bc2) + a.eps);
    return p - a.lr * (u + a.wd * p);
}

// CU_VEC gradient values from 16-byte aligned g, widened to fp32: one pack of floatX, or
// CU_VEC / 4 float4 of fp32 gradients (--grad-dtype fp32)
__device__ __forceinline__ void cu_load_grads(const floatX* g, float* out) {
    CuPack p = cu_load_pack(g);
    for (int k = 0; k < CU_VEC; k++) out[k] = cu_tof(p.v[k]);
}
#ifndef ENABLE_FP32  // where floatX is float the overload above is this one
__device__ __forceinline__ void cu_load_grads(const float* g, float* out) {
    for (int q = 0; q < CU_VEC / 4; q++) reinterpret_cast<float4*>(out)[q] = reinterpret_cast<const float4*>(g)[q];
}
#endif

// a: the hyperparameters, passed by value as a kernel argument; G: the gradients' dtype
template <typename G>
__global__ void gk_adamw(floatX* param, const G* grad, float* m, float* v, size_t n, AdamParams a, uint64_t seed,
                         size_t first, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = vec ? n / CU_VEC : 0;
    const float gs = cu_grad_scale(a);
    for (size_t pk = tid; pk < nv; pk += stride) {
        size_t base = pk * CU_VEC;
        CuPack p = cu_load_pack(param + base);
        float4 gg[CU_VEC / 4], mm[CU_VEC / 4], vv[CU_VEC / 4];
        cu_load_grads(grad + base, reinterpret_cast<float*>(gg));
        for (int q = 0; q < CU_VEC / 4; q++) {
            mm[q] = reinterpret_cast<const float4*>(m + base)[q];
            vv[q] = reinterpret_cast<const float4*>(v + base)[q];
        }
        float* gf = reinterpret_cast<float*>(gg);
        float* mf = reinterpret_cast<float*>(mm);
        float* vf = reinterpret_cast<float*>(vv);
#pragma unroll
        for (int k = 0; k < CU_VEC; k++) {
            float np = cu_adam_param(cu_tof(p.v[k]), gf[k] * gs, mf[k], vf[k], a);
            p.v[k] = cu_round_sr(np, cu_rand_at(seed, first + base + k));
        }
        cu_store_pack(param + base, p);
        for (int q = 0; q < CU_VEC / 4; q++) {
            reinterpret_cast<float4*>(m + base)[q] = mm[q];
            reinterpret_cast<float4*>(v + base)[q] = vv[q];
        }
    }
    for (size_t i = nv * CU_VEC + tid; i < n; i += stride) {
        float mi = m[i], vi = v[i];
        float np = cu_adam_param(cu_tof(param[i]), cu_tof(grad[i]) * gs, mi, vi, a);
        m[i] = mi; v[i] = vi;
        param[i] = cu_round_sr(np, cu_rand_at(seed, first + i));
    }
}

// The general AdamW kernel: moments stored as S (float, or bf16 loaded to fp32, updated in fp32
// and stored rounded to nearest even, as kernels_cpu.h's cpu_state_set; the update uses the fp32
// moments before that rounding), and an optional fp32 master copy of the parameters (updated
// in place; the floatX parameter gets it rounded to nearest). Without a master copy the new
// parameter is rounded stochastically. G: the gradients' dtype. gk_adamw above is the vectorized
// fp32-moment case.
template <typename S, typename G>
__global__ void gk_adamw_general(floatX* param, float* master, const G* grad, S* m, S* v, size_t n, AdamParams a,
                                 uint64_t seed, size_t first) {
    const float gs = cu_grad_scale(a);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float mi = cu_tof(m[i]), vi = cu_tof(v[i]);
        float p = master != NULL ? master[i] : cu_tof(param[i]);
        float np = cu_adam_param(p, cu_tof(grad[i]) * gs, mi, vi, a);
        m[i] = cu_from<S>(mi); v[i] = cu_from<S>(vi);
        if (master != NULL) { master[i] = np; param[i] = cu_from<floatX>(np); }
        else param[i] = cu_round_sr(np, cu_rand_at(seed, first + i));
    }
}
// one AdamW launch for gradients of type G (floatX or float: backend.h's GradBuf)
template <typename G>
static void cu_adamw(floatX* param, float* master, const G* grad, void* m, void* v, int state_dtype, size_t n,
                     AdamParams a, uint64_t seed, size_t first) {
    if (state_dtype == STATE_BF16) {
        gk_adamw_general<__nv_bfloat16, G><<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(
            param, master, grad, (__nv_bfloat16*)m, (__nv_bfloat16*)v, n, a, seed, first);
        CU_LAUNCHED("gk_adamw_general<bf16>");
        return;
    }
    if (master != NULL) {
        gk_adamw_general<float, G><<<cu_grid_for(n, 256), 256, 0, g_cu.stream>>>(
            param, master, grad, (float*)m, (float*)v, n, a, seed, first);
        CU_LAUNCHED("gk_adamw_general<float>");
        return;
    }
    float* mf = (float*)m, *vf = (float*)v;
    int vec = cu_is_aligned16(param) && cu_is_aligned16(grad) && cu_is_aligned16(mf) && cu_is_aligned16(vf);
    gk_adamw<G><<<cu_grid_for((n + CU_VEC - 1) / CU_VEC, 256), 256, 0, g_cu.stream>>>(param, grad, mf, vf, n, a, seed,
                                                                                       first, vec);
    CU_LAUNCHED("gk_adamw");
}
void adamw_update(floatX* param, float* master, GradBuf grad, void* m, void* v, int state_dtype, size_t n, AdamParams a,
                  uint64_t seed, size_t first) {
    if (n == 0) return;
    if (grad.dtype == GRAD_FP32)
        cu_adamw<float>(param, master, (const float*)grad.p, m, v, state_dtype, n, a, seed, first);
    else cu_adamw<floatX>(param, master, (const floatX*)grad.p, m, v, state_dtype, n, a, seed, first);
}

#endif // GRASS_CUDA_ADAMW_CUH
