/*
 * dev/cuda/check_common.h: shared pieces of the standalone kernel experiments in dev/cuda
 * (attention_check, classifier_check, gathered_gemm_check): the references come from
 * kernels_cpu.h, the backend's memory and stream from cuda/common.cuh; random inputs rounded to
 * floatX, an error metric, and a timer (CUDA events on the backend's stream, median of repeats).
 * Each check includes the cuda/ header it tests and cuda/lifecycle.cuh (backend_init).
 *   make dev_cuda && ./build/dev_cuda/attention_check
 */
#ifndef GRASS_DEV_CUDA_CHECK_COMMON_H
#define GRASS_DEV_CUDA_CHECK_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <vector>
#include <algorithm>
#include "rng.h"
#include "kernels_cpu.h"
#include "backend.h"
#include "cuda/common.cuh"

static uint64_t dc_seed = 0xC0FFEEULL;
static double dc_unif(void) { return rng_uniform01(&dc_seed); }
static float dc_round(float x) {
#ifdef ENABLE_FP32
    return x;
#else
    return __bfloat162float(__float2bfloat16(x));
#endif
}
// n normal(0, std) values, rounded to floatX so that the CPU reference sees what the GPU sees
static std::vector<float> dc_randn(size_t n, float std) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i += 2) {
        double u1 = dc_unif(), u2 = dc_unif();
        if (u1 < 1e-300) u1 = 1e-300;
        double r = sqrt(-2.0 * log(u1));
        v[i] = dc_round((float)(std * r * cos(6.283185307179586 * u2)));
        if (i + 1 < n) v[i + 1] = dc_round((float)(std * r * sin(6.283185307179586 * u2)));
    }
    return v;
}
static floatX* dc_upload_x(const std::vector<float>& h) {
    floatX* d = (floatX*)backend_malloc(h.size() * sizeof(floatX), "dev check");
    backend_upload_floats(d, h.data(), h.size());
    return d;
}
static float* dc_upload_f(const std::vector<float>& h) {
    float* d = (float*)backend_malloc(h.size() * sizeof(float), "dev check");
    backend_upload(d, h.data(), h.size() * sizeof(float));
    return d;
}
static std::vector<float> dc_download_x(const floatX* d, size_t n) {
    std::vector<float> h(n);
    backend_download_floats(h.data(), d, n);
    return h;
}
static std::vector<float> dc_download_f(const float* d, size_t n) {
    std::vector<float> h(n);
    backend_download(h.data(), d, n * sizeof(float));
    return h;
}
// max |a - b| / max |b|; NaN counts as failure
static double dc_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double d = 0, s = 0;
    for (size_t i = 0; i < b.size(); i++) {
        if (!isfinite(a[i])) return INFINITY;
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return s > 0 ? d / s : d;
}
static int dc_failures = 0, dc_passes = 0;
static void dc_validate(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol) {
    double e = dc_rel_err(got, ref);
    int ok = e <= tol;
    if (!ok) dc_failures++;
    else dc_passes++;
    printf("  validate %-48s rel err %.2e (tol %.0e) %s\n", what, e, tol, ok ? "ok" : "FAIL");
}
// the last lines of a check: "N passed, N failed" (what tests/run_all.sh counts); exit status
static int dc_summary(const char* prog) {
    printf("%s\n", dc_failures ? "VALIDATION FAILED" : "all validations passed");
    printf("%s: %d passed, %d failed\n", prog, dc_passes, dc_failures);
    return dc_failures ? 1 : 0;
}
// median time in ms of f() over reps runs after warmup runs, timed with events on the backend's stream
template <class F>
static float dc_bench_ms(F f, int warmup = 3, int reps = 20) {
    for (int i = 0; i < warmup; i++) f();
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(a, g_cu.stream));
        f();
        cudaCheck(cudaEventRecord(b, g_cu.stream));
        cudaCheck(cudaEventSynchronize(b));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    cudaCheck(cudaEventDestroy(a));
    cudaCheck(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}
static int dc_have_gpu(const char* prog) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        printf("%s: no CUDA device (%s): skipped\n", prog, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    backend_init(0);
    printf("%s on %s\n", prog, backend_name());
    return 1;
}
#endif
