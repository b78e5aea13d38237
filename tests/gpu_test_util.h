/*
 * tests/gpu_test_util.h: the host side of a GPU kernel check, shared by the parity test
 * (tests/test_kernels_cuda.cu) and the dev/cuda checks (through dev/cuda/check_common.h):
 *   - a seeded random stream (splitmix64, rng.h) and normal inputs rounded to floatX, so that the
 *     CPU reference computes on the numbers the GPU sees (t_seed, t_next, t_unif, t_normal,
 *     t_round, t_randn, t_randn_pairs);
 *   - backend buffers made from host vectors (dx_from: floatX, df_from: fp32, di_from: int,
 *     ds_bf16_from: bf16 Adam moments; dx_nan, df_nan: NaN-poisoned outputs), all recorded and
 *     freed together by free_bufs, and their contents back as host floats (hx, hf, hs_bf16);
 *   - t_init_gpu: skip without a device, else backend_init.
 * Each program seeds the stream once (t_seed) before its first draw; its inputs are then fixed by
 * its seed and its order of draws.
 * Include after the backend (backend_cuda.cuh, or the cuda/ headers a check tests).
 */
#ifndef GRASS_TESTS_GPU_TEST_UTIL_H
#define GRASS_TESTS_GPU_TEST_UTIL_H
#include <stdio.h>
#include <math.h>
#include <stdint.h>
#include <vector>
#include <algorithm>
#include "rng.h"
#include "bf16.h"
#include "backend.h"

// ---- random inputs --------------------------------------------------------------------------------

static uint64_t g_seed = 0;
static void t_seed(uint64_t seed) { g_seed = seed; }
static uint64_t t_next(void) { return splitmix64(&g_seed); }
static double t_unif(void) { return rng_uniform01(&g_seed); }
// one N(0, 1) value from two uniforms (Box-Muller, the cosine branch)
static float t_normal(void) {
    double u1 = t_unif(), u2 = t_unif();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
// the value the GPU stores for x (round to nearest even into floatX)
static float t_round(float x) {
#ifdef ENABLE_FP32
    return x;
#else
    return __bfloat162float(__float2bfloat16(x));
#endif
}
// n values std * t_normal() (fp32 product), rounded to floatX unless round_x is false (fp32 inputs)
static std::vector<float> t_randn(size_t n, float std, bool round_x = true) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = round_x ? t_round(std * t_normal()) : std * t_normal();
    return v;
}
// n normal(0, std) values rounded to floatX, two per pair of uniforms (Box-Muller's cosine and
// sine values, the product with std in double): the dev/cuda checks' inputs
static std::vector<float> t_randn_pairs(size_t n, float std) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i += 2) {
        double u1 = t_unif(), u2 = t_unif();
        if (u1 < 1e-300) u1 = 1e-300;
        double r = sqrt(-2.0 * log(u1));
        v[i] = t_round((float)(std * r * cos(6.283185307179586 * u2)));
        if (i + 1 < n) v[i + 1] = t_round((float)(std * r * sin(6.283185307179586 * u2)));
    }
    return v;
}

// ---- backend buffers from host vectors, and back ----------------------------------------------------
// Every buffer made here is recorded and freed by free_bufs (at the end of a test case). Each has a
// few zeroed elements of slack after its end (a read just past the last element sees zeros).

static std::vector<void*> g_bufs;
static void* t_track(void* d) {
    g_bufs.push_back(d);
    return d;
}
static void free_bufs(void) {
    for (size_t i = 0; i < g_bufs.size(); i++) backend_free(g_bufs[i]);
    g_bufs.clear();
}
// h rounded to floatX (to nearest)
static floatX* dx_from(const std::vector<float>& h) {
    floatX* d = (floatX*)t_track(backend_malloc((h.size() + 8) * sizeof(floatX), "test"));
    backend_upload_floats(d, h.data(), h.size());
    return d;
}
static float* df_from(const std::vector<float>& h) {
    float* d = (float*)t_track(backend_malloc((h.size() + 4) * sizeof(float), "test"));
    backend_upload(d, h.data(), h.size() * sizeof(float));
    return d;
}
static int* di_from(const std::vector<int>& h) {
    int* d = (int*)t_track(backend_malloc((h.size() + 4) * sizeof(int), "test"));
    backend_upload(d, h.data(), h.size() * sizeof(int));
    return d;
}
// outputs poisoned with NaN, so that an element a kernel forgets to write fails its check
static floatX* dx_nan(size_t n) { return dx_from(std::vector<float>(n, NAN)); }
static float* df_nan(size_t n) { return df_from(std::vector<float>(n, NAN)); }
static std::vector<float> hx(const floatX* d, size_t n) {
    std::vector<float> h(n);
    backend_download_floats(h.data(), d, n);
    return h;
}
static std::vector<float> hf(const float* d, size_t n) {
    std::vector<float> h(n);
    backend_download(h.data(), d, n * sizeof(float));
    return h;
}

// The model's fused layouts (q|k|v, gate|up): a rows x width matrix placed at column col of a
// rows x ld matrix whose other entries are fill; a column block taken back out; and each token's
// q, k, v side by side (ld = qd + 2 kvd), as the fused Q/K/V GEMM writes them
static std::vector<float> t_embed(const std::vector<float>& x, size_t rows, int width, int ld, int col, float fill) {
    std::vector<float> b(rows * ld, fill);
    for (size_t i = 0; i < rows; i++) std::copy(x.begin() + i * width, x.begin() + (i + 1) * width, b.begin() + i * ld + col);
    return b;
}
static std::vector<float> t_extract(const std::vector<float>& b, size_t rows, int width, int ld, int col) {
    std::vector<float> x(rows * width);
    for (size_t i = 0; i < rows; i++) std::copy(b.begin() + i * ld + col, b.begin() + i * ld + col + width, x.begin() + i * width);
    return x;
}
static std::vector<float> t_pack_qkv(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                     size_t rows, int qd, int kvd) {
    int ld = qd + 2 * kvd;
    std::vector<float> f = t_embed(q, rows, qd, ld, 0, 0.0f);
    for (size_t i = 0; i < rows; i++) {
        std::copy(k.begin() + i * kvd, k.begin() + (i + 1) * kvd, f.begin() + i * ld + qd);
        std::copy(v.begin() + i * kvd, v.begin() + (i + 1) * kvd, f.begin() + i * ld + qd + kvd);
    }
    return f;
}

// bf16 optimizer moments (STATE_BF16): the bits of h rounded to nearest even (bf16.h), a backend
// buffer of them, and host views of such bits as floats
static std::vector<uint16_t> bf16_bits(const std::vector<float>& h) {
    std::vector<uint16_t> b(h.size());
    for (size_t i = 0; i < h.size(); i++) b[i] = bf16_from_float(h[i]);
    return b;
}
static std::vector<float> bits_as_float(const std::vector<uint16_t>& b) {
    std::vector<float> h(b.size());
    for (size_t i = 0; i < b.size(); i++) h[i] = bf16_to_float(b[i]);
    return h;
}
static void* ds_bf16_from(const std::vector<float>& h) {
    std::vector<uint16_t> b = bf16_bits(h);
    void* d = t_track(backend_malloc((h.size() + 8) * sizeof(uint16_t), "test"));
    backend_upload(d, b.data(), b.size() * sizeof(uint16_t));
    return d;
}
static std::vector<float> hs_bf16(const void* d, size_t n) {
    std::vector<uint16_t> b(n);
    backend_download(b.data(), d, n * sizeof(uint16_t));
    return bits_as_float(b);
}

// ---- the device -------------------------------------------------------------------------------------
// 0 (after "skipped: needs a GPU (prog: no CUDA device ...)", the skip tests/run_all.sh counts and
// tests/skip_allowlist.txt allows) where there is none; else backend_init(0), 1
static int t_init_gpu(const char* prog) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        printf("skipped: needs a GPU (%s: no CUDA device: %s)\n", prog, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    backend_init(0);
    return 1;
}
#endif
