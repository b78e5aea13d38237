/*
 * dev/cuda/gathered_gemm_check.cu: Grass's gathered GEMM (grass_gathered_grad: gather r columns
 * of dY or X, scaled, then one GEMM into the fp32 C) and the blockwise norm pass
 * (grass_grad_norms), against the CPU kernels, then timed at the shapes of the 1b and 13b models
 * next to the dense weight gradient (matmul_backward_weight) they replace.
 * TFLOP/s count 2 N r n for the gathered GEMM and 2 N m n for the dense one and the norm pass.
 *   ./build/dev_cuda/gathered_gemm_check [N out in r]
 */
#include "dev/cuda/check_common.h"
#include "cuda/grass.cuh"      // under test
#include "cuda/gemm.cuh"       // matmul_backward_weight, the dense baseline
#include "cuda/lifecycle.cuh"  // backend_init

static void validate(int N, int in, int outd, int cols_side, int r) {
    std::vector<float> x = t_randn_pairs((size_t)N * in, 1.0f), dy = t_randn_pairs((size_t)N * outd, 1.0f);
    int dim = cols_side ? in : outd, other = cols_side ? outd : in;
    std::vector<int> idx;
    for (int i = 0; i < dim && (int)idx.size() < r; i++) if (t_unif() < (double)(r - idx.size()) / (dim - i)) idx.push_back(i);
    r = (int)idx.size();
    std::vector<float> sc(r);
    for (int j = 0; j < r; j++) sc[j] = 0.5f + (float)t_unif();
    std::vector<float> rc((size_t)r * other, 0.0f), rn(dim, 0.0f);
    cpu_grass_gathered_grad(rc.data(), dy.data(), outd, x.data(), idx.data(), sc.data(), r, N, in, outd, cols_side, 0);
    cpu_grass_grad_norms(rn.data(), dy.data(), outd, x.data(), N, in, outd, cols_side);
    floatX *dX = dx_from(x), *dDY = dx_from(dy);
    int* didx = di_from(idx);
    float* dsc = df_from(sc);
    float* C = df_nan((size_t)r * other);
    float* nrm = df_from(std::vector<float>(dim, 0.0f));  // accumulated into
    grass_gathered_grad(C, dDY, outd, dX, didx, dsc, r, N, in, outd, cols_side, 0);
    grass_grad_norms(nrm, dDY, outd, dX, N, in, outd, cols_side);
    char name[128];
    snprintf(name, sizeof(name), "gathered %s N=%d in=%d out=%d r=%d", cols_side ? "cols" : "rows", N, in, outd, r);
    dc_validate(name, hf(C, (size_t)r * other), rc, 5e-3);
    snprintf(name, sizeof(name), "norms %s N=%d in=%d out=%d", cols_side ? "cols" : "rows", N, in, outd);
    dc_validate(name, hf(nrm, dim), rn, 1e-4);
    free_bufs();
}

static void bench(const char* label, int N, int outd, int in, int r) {
    int cols_side = outd > in;  // as grass_optim.cuh chooses: select along the smaller dimension
    int dim = cols_side ? in : outd, other = cols_side ? outd : in;
    floatX *x = dx_from(t_randn_pairs((size_t)N * in, 1.0f)), *dy = dx_from(t_randn_pairs((size_t)N * outd, 1.0f));
    std::vector<int> idx(r);
    for (int j = 0; j < r; j++) idx[j] = (int)((long long)j * dim / r);
    int* didx = di_from(idx);
    float* dsc = df_from(std::vector<float>(r, 1.0f));
    float* C = (float*)backend_malloc((size_t)r * other * sizeof(float), "C");
    float* nrm = (float*)backend_malloc(dim * sizeof(float), "norms");
    floatX* dW = (floatX*)backend_malloc((size_t)outd * in * sizeof(floatX), "dW");
    float tg = dc_bench_ms([&] { grass_gathered_grad(C, dy, outd, x, didx, dsc, r, N, in, outd, cols_side, 1); });
    float tn = dc_bench_ms([&] { grass_grad_norms(nrm, dy, outd, x, N, in, outd, cols_side); }, 1, 5);
    float td = dc_bench_ms([&] { matmul_backward_weight(grad_buf(dW, GRAD_MODEL), dy, outd, x, N, in, outd, 1); });
    double fg = 2.0 * N * (double)r * other, fd = 2.0 * N * (double)outd * in;
    printf("  %-10s N=%-5d %5dx%-5d r=%-5d %s | gathered %7.3f ms %6.1f TF/s | dense dW %7.3f ms %6.1f TF/s | "
           "norm pass %7.3f ms %6.1f TF/s | gathered/dense time %.3f\n",
           label, N, outd, in, r, cols_side ? "cols" : "rows", tg, fg / tg / 1e9, td, fd / td / 1e9, tn, fd / tn / 1e9, tg / td);
    void* bufs[] = {C, nrm, dW};
    for (void* p : bufs) backend_free(p);
    free_bufs();  // x, dy, didx, dsc
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    if (!dc_have_gpu("gathered_gemm_check")) return 0;
    printf("validation against cpu_grass_gathered_grad / cpu_grass_grad_norms:\n");
    validate(39, 48, 72, 0, 20);
    validate(39, 48, 72, 1, 12);
    validate(256, 1024, 2736, 0, 256);
    validate(256, 2736, 1024, 1, 256);
    validate(64, 4096, 5000, 0, 512);
    printf("benchmark (median):\n");
    if (argc == 5) {
        bench("custom", atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    } else {
        bench("1b q", 4096, 2048, 2048, 512);
        bench("1b gate", 4096, 5461, 2048, 512);
        bench("1b down", 4096, 2048, 5461, 512);
        bench("13b q", 256, 5120, 5120, 1024);
        bench("13b up", 256, 13824, 5120, 1024);
        bench("13b down", 256, 5120, 13824, 1024);
    }
    return dc_summary("gathered_gemm_check");
}
