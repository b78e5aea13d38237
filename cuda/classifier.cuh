/*
 * cuda/classifier.cuh: the fused classifier (classifier_forward_backward): one block per row,
 * online max and sum over the vocabulary, the loss, and dlogits written over the logits.
 * Needs cuda/common.cuh.
 */
#ifndef GRASS_CUDA_CLASSIFIER_CUH
#define GRASS_CUDA_CLASSIFIER_CUH

#include "common.cuh"

// ---- fused classifier: loss and dlogits in place ------------------------------------------------

__device__ __forceinline__ void cu_online_add(float& m, float& s, float z) {
    if (z == -INFINITY) return;
    if (z > m) { s = s * expf(m - z) + 1.0f; m = z; }
    else s += expf(z - m);
}
__device__ __forceinline__ void cu_online_merge(float& m, float& s, float m2, float s2) {
    float M = fmaxf(m, m2);
    if (M == -INFINITY) { m = M; s = 0.0f; return; }
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

// one block per row: online max / sum over V, lse, loss; dlogits = (softmax - onehot) * dloss
__global__ void gk_classifier(floatX* logits, float* losses, const int* targets, int N, int V, float dloss,
                              int want_grad, int vec) {
    __shared__ float shm[32], shs[32];
    __shared__ float sh_lse;
    int i = blockIdx.x;
    floatX* z = logits + (size_t)i * V;
    float m = -INFINITY, s = 0.0f;
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < V; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(z + j);
            for (int k = 0; k < CU_VEC; k++) cu_online_add(m, s, cu_tof(p.v[k]));
        }
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) cu_online_add(m, s, cu_tof(z[j]));
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        cu_online_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) { shm[warp] = m; shs[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? shm[lane] : -INFINITY;
        s = lane < nw ? shs[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            cu_online_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            float lse = m + logf(s);
            sh_lse = lse;
            losses[i] = lse - cu_tof(z[targets[i]]);
        }
    }
    __syncthreads();
    if (!want_grad) return;
    float lse = sh_lse;
    int tgt = targets[i];
    if (vec) {
        for (int j = threadIdx.x * CU_VEC; j < V; j += blockDim.x * CU_VEC) {
            CuPack p = cu_load_pack(z + j);
            for (int k = 0; k < CU_VEC; k++) {
                float g = expf(cu_tof(p.v[k]) - lse) * dloss;
                if (j + k == tgt) g -= dloss;
                p.v[k] = cu_from<floatX>(g);
            }
            cu_store_pack(z + j, p);
        }
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float g = expf(cu_tof(z[j]) - lse) * dloss;
            if (j == tgt) g -= dloss;
            z[j] = cu_from<floatX>(g);
        }
    }
}

void classifier_forward_backward(floatX* logits, float* losses, const int* d_targets, int N, int V, float dloss,
                                 int want_grad) {
    if (N <= 0) return;
    int vec = (V % CU_VEC == 0) && cu_is_aligned16(logits);
    int threads = V >= 8192 ? 512 : (V >= 1024 ? 256 : 64);
    gk_classifier<<<N, threads, 0, g_cu.stream>>>(logits, losses, d_targets, N, V, dloss, want_grad, vec);
    CU_LAUNCHED("gk_classifier");
}

#endif // GRASS_CUDA_CLASSIFIER_CUH
