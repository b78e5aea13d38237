/*
 * dev/init_hash.c: the initial weights' hash of a named config and seed, as train_llama prints it
 * ("init hash: fp32 ... bf16 ... (seed S)"), and the time the CPU build takes to draw them (a
 * benchmark, not a test). It draws tensor by tensor into one buffer the size of the largest
 * tensor (llama_init_tensor, the code of llama_init_random), so 13b needs 0.7 GB here instead of
 * 52: a GPU run's line can be compared with this one for any config.
 *   g++ -x c++ -O3 -march=native -fopenmp -I. -I/usr/include/x86_64-linux-gnu/openblas-openmp \
 *       dev/init_hash.c -o build/init_hash -lopenblas -lm
 *   build/init_hash 13b [SEED] [LAYERS]     # SEED: train_llama's --seed (default 1337)
 */
#include <time.h>
#include "llama_model.h"

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s CONFIG [SEED] [LAYERS]\n", argv[0]); return 2; }
    LlamaConfig c;
    if (!llama_config_by_name(argv[1], &c)) { fprintf(stderr, "error: unknown config '%s'\n", argv[1]); return 2; }
    long long seed = argc > 2 ? atoll(argv[2]) : 1337;
    if (argc > 3) c.n_layers = atoi(argv[3]);
    (void)LINEAR_TYPE_NAMES;
    backend_init(0);
    ParamTable pt;
    param_table_build(&pt, &c, 1);  // the Hugging Face layout (the hash does not see the GPU's padding)
    size_t largest = 0;
    for (int i = 0; i < pt.n; i++) if (pt.t[i].numel > largest) largest = pt.t[i].numel;
    float* buf = (float*)malloc_check(largest * sizeof(float));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t h[2] = {0, 0}, first = 0;
    for (int i = 0; i < pt.n; i++) {
        llama_init_tensor(&pt, i, (uint64_t)seed, first, buf, h);
        first += pt.t[i].numel_hf;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    printf("config %s, %d layers, %zu parameters\n", argv[1], c.n_layers, pt.total_hf);
    printf("init hash: fp32 %016llx bf16 %016llx (seed %lld)\n", (unsigned long long)h[0], (unsigned long long)h[1], seed);
    printf("drawn in %.2f s on %s: %.1f M parameters/s\n", s, backend_name(), pt.total_hf / s / 1e6);
    free(buf);
    param_table_free(&pt);
    return 0;
}
