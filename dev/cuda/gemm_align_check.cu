/*
 * dev/cuda/gemm_align_check.cu: what a 16-byte-misaligned leading dimension costs the linear
 * layer's GEMMs (issue 12, item 1). The 1b config's ffn = 5461 gives every gate/up/down GEMM a
 * leading dimension of 10,922 bytes in bf16, not a multiple of 16, which keeps cuBLASLt off its
 * fastest Hopper kernels; 5504 (the next multiple of 64) is aligned. The forward, input-gradient
 * and weight-gradient GEMMs (matmul_forward, matmul_backward_input, matmul_backward_weight,
 * cuda/gemm.cuh) are first validated against the CPU kernels at both widths, then timed at the
 * 1b MLP shapes with ffn 5461 and 5504, side by side (TFLOP/s count 2 N in out).
 *   ./build/dev_cuda/gemm_align_check [N]      (N tokens per micro-batch, default 8192)
 * N below 64 validates only (what the emulated suite runs: build/emu/gemm_align_check 16).
 */
#include "dev/cuda/check_common.h"
#include "cuda/gemm.cuh"       // under test
#include "cuda/lifecycle.cuh"  // backend_init

static void validate(int N, int in, int outd) {
    std::vector<float> x = t_randn_pairs((size_t)N * in, 1.0f), w = t_randn_pairs((size_t)outd * in, 0.1f),
                       dy = t_randn_pairs((size_t)N * outd, 1.0f);
    std::vector<float> ry((size_t)N * outd), rdx((size_t)N * in, 0.0f), rdw((size_t)outd * in, 0.0f);
    cpu_matmul_forward(ry.data(), x.data(), in, w.data(), N, in, outd);
    cpu_matmul_backward_input(rdx.data(), dy.data(), w.data(), N, in, outd, 0);
    cpu_matmul_backward_weight(rdw.data(), dy.data(), outd, x.data(), N, in, outd, 0);
    floatX *dX = dx_from(x), *dW = dx_from(w), *dDY = dx_from(dy);
    floatX *y = dx_nan((size_t)N * outd), *gx = dx_nan((size_t)N * in);
    float* gw = df_nan((size_t)outd * in);
    matmul_forward(y, dX, dW, N, in, outd);
    matmul_backward_input(gx, dDY, dW, N, in, outd, 0);
    matmul_backward_weight(grad_buf(gw, GRAD_FP32), dDY, outd, dX, N, in, outd, 0);
    char name[128];
    snprintf(name, sizeof(name), "forward N=%d in=%d out=%d", N, in, outd);
    dc_validate(name, hx(y, ry.size()), ry, 1e-2);
    snprintf(name, sizeof(name), "backward input N=%d in=%d out=%d", N, in, outd);
    dc_validate(name, hx(gx, rdx.size()), rdx, 1e-2);
    snprintf(name, sizeof(name), "backward weight (fp32 dW) N=%d in=%d out=%d", N, in, outd);
    dc_validate(name, hf(gw, rdw.size()), rdw, 1e-2);
    free_bufs();
}

// the three GEMMs of one linear layer (in -> out) at N tokens: milliseconds each
static void time_layer(int N, int in, int outd, float ms[3]) {
    floatX* x = dx_from(t_randn_pairs((size_t)N * in, 1.0f));
    floatX* w = dx_from(t_randn_pairs((size_t)outd * in, 0.1f));
    floatX* dy = dx_from(t_randn_pairs((size_t)N * outd, 1.0f));
    floatX* y = (floatX*)backend_malloc((size_t)N * outd * sizeof(floatX), "y");
    floatX* gx = (floatX*)backend_malloc((size_t)N * in * sizeof(floatX), "dx");
    floatX* gw = (floatX*)backend_malloc((size_t)outd * in * sizeof(floatX), "dW");
    ms[0] = dc_bench_ms([&] { matmul_forward(y, x, w, N, in, outd); });
    ms[1] = dc_bench_ms([&] { matmul_backward_input(gx, dy, w, N, in, outd, 0); });
    ms[2] = dc_bench_ms([&] { matmul_backward_weight(grad_buf(gw, GRAD_MODEL), dy, outd, x, N, in, outd, 1); });
    void* bufs[] = {y, gx, gw};
    for (void* p : bufs) backend_free(p);
    free_bufs();
}

static void bench(const char* label, int N, int in, int outd, int in_pad, int outd_pad) {
    float a[3], b[3];
    time_layer(N, in, outd, a);
    time_layer(N, in_pad, outd_pad, b);
    const char* what[3] = {"forward", "dX", "dW"};
    for (int g = 0; g < 3; g++) {
        double fa = 2.0 * N * (double)in * outd, fb = 2.0 * N * (double)in_pad * outd_pad;
        printf("  %-9s %-8s N=%-5d %5dx%-5d %7.3f ms %6.1f TF/s | padded %5dx%-5d %7.3f ms %6.1f TF/s | "
               "time padded/unpadded %.3f\n", label, what[g], N, outd, in, a[g], fa / a[g] / 1e9, outd_pad, in_pad, b[g],
               fb / b[g] / 1e9, b[g] / a[g]);
    }
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    if (!dc_have_gpu("gemm_align_check")) return 0;
    int N = argc > 1 ? atoi(argv[1]) : 8192;
    printf("validation against the CPU kernels (odd and aligned widths):\n");
    validate(37, 48, 91);     // out 91: ld 182 bytes
    validate(37, 91, 48);     // in 91
    validate(64, 96, 5461 / 32);
    validate(64, 96, 5504 / 32);
    if (N >= 64) {
        printf("benchmark (median), the 1b MLP at ffn 5461 and padded to 5504:\n");
        bench("1b gate/up", N, 2048, 5461, 2048, 5504);
        bench("1b down", N, 5461, 2048, 5504, 2048);
    }
    return dc_summary("gemm_align_check");
}
