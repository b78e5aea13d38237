/*
 * dev/cuda/check_common.h: shared pieces of the standalone kernel experiments in dev/cuda
 * (attention_check, classifier_check, gathered_gemm_check): the references come from
 * kernels_cpu.h, the backend's memory and stream from cuda/common.cuh; random inputs rounded to
 * floatX and the backend buffers made from them come from tests/gpu_test_util.h (shared with
 * the parity test); here: an error metric with its pass/fail counts, and a timer (CUDA events
 * on the backend's stream, median of repeats).
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
#include "tests/gpu_test_util.h"
#include "tests/test_util.h"  // test_line_buffered_stdout

// the seed of the checks' inputs (t_seed, tests/gpu_test_util.h)
static const uint64_t DC_SEED = 0xC0FFEEULL;

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
// the start of a check: 0 without a device (skipped); else the backend is up, the input stream
// seeded (DC_SEED), 1
static int dc_have_gpu(const char* prog) {
    if (!t_init_gpu(prog)) return 0;
    printf("%s on %s\n", prog, backend_name());
    t_seed(DC_SEED);
    return 1;
}
#endif
