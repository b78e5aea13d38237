/*
 * dev/cuda/classifier_check.cu: the fused classifier (loss + dlogits in place, one block per
 * row, online max/sum over V). Validates against cpu_classifier_forward_backward, then times it
 * at the model vocabulary and prints GB/s: the kernel reads the logits twice and writes them
 * once (3 N V floatX), the floor is that traffic over the memory bandwidth.
 *   ./build/dev_cuda/classifier_check [N V]
 */
#include "dev/cuda/check_common.h"
#include "cuda/classifier.cuh"  // under test
#include "cuda/lifecycle.cuh"   // backend_init

static void validate(int N, int V) {
    std::vector<float> z = t_randn_pairs((size_t)N * V, 3.0f), rz = z, rl(N);
    std::vector<int> tg(N);
    for (int i = 0; i < N; i++) tg[i] = (int)(t_unif() * V) % V;
    float dloss = 1.0f / N;
    cpu_classifier_forward_backward(rz.data(), rl.data(), tg.data(), N, V, dloss, 1);
    floatX* dz = dx_from(z);
    float* losses = df_nan(N);
    int* dt = di_from(tg);
    classifier_forward_backward(dz, losses, dt, N, V, dloss, 1);
    char name[96];
    snprintf(name, sizeof(name), "losses N=%d V=%d", N, V);
    dc_validate(name, hf(losses, N), rl, 1e-5);
    snprintf(name, sizeof(name), "dlogits N=%d V=%d", N, V);
    dc_validate(name, hx(dz, (size_t)N * V), rz, 1e-2);
    free_bufs();
}

static void bench(int N, int V) {
    floatX* z = dx_from(t_randn_pairs((size_t)N * V, 3.0f));
    float* losses = (float*)backend_malloc(N * sizeof(float), "losses");
    int* dt = (int*)backend_malloc(N * sizeof(int), "targets");  // zeros: target 0
    float t = dc_bench_ms([&] { classifier_forward_backward(z, losses, dt, N, V, 1.0f / N, 1); });
    double bytes = 3.0 * N * (double)V * sizeof(floatX);
    printf("  N=%-6d V=%-6d %8.3f ms  %7.1f GB/s (3 passes of N V floatX)\n", N, V, t, bytes / t / 1e6);
    backend_free(losses); backend_free(dt);
    free_bufs();  // z
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    if (!dc_have_gpu("classifier_check")) return 0;
    printf("validation against cpu_classifier_forward_backward:\n");
    validate(13, 97);
    validate(8, 32000);
    validate(5, 1001);
    printf("benchmark (median of 20):\n");
    if (argc == 3) bench(atoi(argv[1]), atoi(argv[2]));
    else { bench(4096, 32000); bench(16384, 32000); bench(4096, 128256); }
    return dc_summary("classifier_check");
}
