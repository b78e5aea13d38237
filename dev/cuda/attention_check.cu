/*
 * dev/cuda/attention_check.cu: the fused causal GQA attention of cuda/attention.cuh.
 * Validates forward (out, lse) and backward (dq, dk, dv) against cpu_attention_* at small
 * sizes, then times both at the model sizes (or at one size from the command line) and prints
 * ms and TFLOP/s. FLOPs are counted as flash-attention papers do: forward 4 B nh T^2 hd / 2
 * (causal half), backward 2.5x forward (our backward recomputes S and dP twice, so it does
 * 3.5x; the figure is comparable across implementations, not our arithmetic).
 *   ./build/dev_cuda/attention_check                 validation + the default size table
 *   ./build/dev_cuda/attention_check B T nh nkv hd   validation + one size
 * Built with cuDNN (cuda.mk: GRASS_CUDNN, linking build/cuda/attention_cudnn.o), it validates cuDNN's
 * fused attention (--attention cudnn, cuda/attention_cudnn.cpp) against the same CPU references,
 * checks that its backward gives the same bits twice (where cuDNN's deterministic algorithm was
 * accepted) and times it beside the own kernels: the comparison scripts/gpu_check.sh reports.
 * q, k and v (and dq, dk, dv) are laid out as the model holds them: side by side in one buffer of
 * (nh + 2 nkv) hd per token, the output of the fused Q/K/V GEMM.
 */
#include "dev/cuda/check_common.h"
#include "cuda/attention.cuh"  // under test
#include "cuda/lifecycle.cuh"  // backend_init

static void validate(int B, int T, int nh, int nkv, int hd) {
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd, nl = (size_t)B * nh * T;
    std::vector<float> q = t_randn_pairs(nq, 1.0f), k = t_randn_pairs(nk, 1.0f), v = t_randn_pairs(nk, 1.0f),
                       dout = t_randn_pairs(nq, 1.0f);
    std::vector<float> ro(nq), rl(nl), rq(nq), rk(nk), rv(nk);
    int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
    size_t rows = (size_t)B * T;
    cpu_attention_forward(ro.data(), rl.data(), q.data(), k.data(), v.data(), qd, kvd, B, T, nh, nkv, hd);
    for (size_t i = 0; i < nq; i++) ro[i] = t_round(ro[i]);
    cpu_attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), ro.data(), q.data(), k.data(), v.data(), qd, kvd,
                           rl.data(), B, T, nh, nkv, hd);
    floatX* fq = dx_from(t_pack_qkv(q, k, v, rows, qd, kvd));  // the fused layout (tests/gpu_test_util.h)
    floatX *dq = fq, *dk = fq + qd, *dv = fq + qd + kvd, *ddo = dx_from(dout);
    floatX* out = dx_nan(nq);
    float* lse = df_nan(nl);
    attention_forward(out, lse, dq, dk, dv, ld, ld, B, T, nh, nkv, hd);
    char name[128];
    snprintf(name, sizeof(name), "fwd out B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd);
    dc_validate(name, hx(out, nq), ro, 1.5e-2);
    snprintf(name, sizeof(name), "fwd lse B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd);
    dc_validate(name, hf(lse, nl), rl, 2e-3);
    floatX* o2 = dx_from(ro);
    float* l2 = df_from(rl);
    floatX* fg = dx_nan(rows * ld);
    attention_backward(fg, fg + qd, fg + qd + kvd, ddo, o2, dq, dk, dv, ld, ld, l2, B, T, nh, nkv, hd);
    std::vector<float> g = hx(fg, rows * ld);
    snprintf(name, sizeof(name), "bwd dq B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd);
    dc_validate(name, t_extract(g, rows, qd, ld, 0), rq, 2e-2);
    snprintf(name, sizeof(name), "bwd dk");
    dc_validate(name, t_extract(g, rows, kvd, ld, qd), rk, 2e-2);
    snprintf(name, sizeof(name), "bwd dv");
    dc_validate(name, t_extract(g, rows, kvd, ld, qd + kvd), rv, 2e-2);
#ifdef GRASS_CUDNN
    char why[256];
    if (backend_attention_select(1, why, sizeof(why))) {  // the same inputs through cuDNN's SDPA
        floatX* co = dx_nan(nq);
        float* cl = df_nan(nl);
        attention_forward(co, cl, dq, dk, dv, ld, ld, B, T, nh, nkv, hd);
        snprintf(name, sizeof(name), "cudnn fwd out B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd);
        dc_validate(name, hx(co, nq), ro, 1.5e-2);
        // cuDNN's softmax stats, compared with the log-sum-exp of the scaled scores (our lse)
        snprintf(name, sizeof(name), "cudnn fwd stats vs lse");
        dc_validate(name, hf(cl, nl), rl, 2e-3);
        floatX* cg = dx_nan(rows * ld);
        attention_backward(cg, cg + qd, cg + qd + kvd, ddo, o2, dq, dk, dv, ld, ld, cl, B, T, nh, nkv, hd);  // its own stats
        std::vector<float> c = hx(cg, rows * ld);
        snprintf(name, sizeof(name), "cudnn bwd dq");
        dc_validate(name, t_extract(c, rows, qd, ld, 0), rq, 2e-2);
        snprintf(name, sizeof(name), "cudnn bwd dk");
        dc_validate(name, t_extract(c, rows, kvd, ld, qd), rk, 2e-2);
        snprintf(name, sizeof(name), "cudnn bwd dv");
        dc_validate(name, t_extract(c, rows, kvd, ld, qd + kvd), rv, 2e-2);
        // the backward again: with cuDNN's deterministic algorithm the same bits (tolerance 0)
        WorkspaceSizes ws = {};
        ws.T = T; ws.B = B; ws.nh = nh; ws.nkv = nkv; ws.hd = hd;
        char note[768];
        size_t wsb = backend_attention_workspace_bytes(&ws, note, sizeof(note));
        printf("  cudnn workspace %zu bytes (%s)\n", wsb, note);
        if (strstr(note, "NOT deterministic") == NULL) {
            attention_backward(cg, cg + qd, cg + qd + kvd, ddo, o2, dq, dk, dv, ld, ld, cl, B, T, nh, nkv, hd);
            dc_validate("cudnn bwd twice: identical dq|dk|dv", hx(cg, rows * ld), c, 0.0);
        }
        backend_attention_select(0, why, sizeof(why));
    } else {
        printf("  cudnn: not available here (%s)\n", why);
    }
#endif
    free_bufs();
}

static void bench(const char* label, int B, int T, int nh, int nkv, int hd) {
    size_t nq = (size_t)B * T * nh * hd, nl = (size_t)B * nh * T;
    int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;  // the fused layout, as the model runs it
    size_t nf = (size_t)B * T * ld;
    floatX *q = dx_from(t_randn_pairs(nf, 1.0f)), *k = q + qd, *v = q + qd + kvd;
    floatX *dout = dx_from(t_randn_pairs(nq, 1.0f)), *out = (floatX*)backend_malloc(nq * sizeof(floatX), "o");
    floatX *gq = (floatX*)backend_malloc(nf * sizeof(floatX), "dqkv"), *gk = gq + qd, *gv = gq + qd + kvd;
    float* lse = (float*)backend_malloc(nl * sizeof(float), "lse");
    double ff = 4.0 * B * nh * (double)T * T * hd / 2.0, fb = 2.5 * ff;
    for (int use_cudnn = 0; use_cudnn <= 1; use_cudnn++) {
        char why[256];
        if (use_cudnn && !backend_attention_select(1, why, sizeof(why))) break;  // a build without cuDNN: own only
        float tf = dc_bench_ms([&] { attention_forward(out, lse, q, k, v, ld, ld, B, T, nh, nkv, hd); });
        float tb = dc_bench_ms([&] { attention_backward(gq, gk, gv, dout, out, q, k, v, ld, ld, lse, B, T, nh, nkv, hd); });
        printf("  %-6s %-5s B=%-3d T=%-5d nh=%-3d nkv=%-3d hd=%-4d fwd %8.3f ms %7.1f TFLOP/s | bwd %8.3f ms %7.1f TFLOP/s\n",
               label, use_cudnn ? "cudnn" : "own", B, T, nh, nkv, hd, tf, ff / tf / 1e9, tb, fb / tb / 1e9);
        backend_attention_select(0, why, sizeof(why));
    }
    void* bufs[] = {out, gq, lse};
    for (void* p : bufs) backend_free(p);
    free_bufs();  // qkv, dout
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    if (!dc_have_gpu("attention_check")) return 0;
#ifdef GRASS_CUDNN
    {
        char why[256];
        if (backend_attention_select(1, why, sizeof(why))) printf("cudnn: %s\n", why);
        backend_attention_select(0, why, sizeof(why));
    }
#endif
    printf("validation against cpu_attention_forward/backward:\n");
    validate(1, 100, 4, 2, 64);
    validate(2, 257, 4, 1, 128);
    validate(1, 77, 3, 3, 16);
    printf("benchmark (median of 20):\n");
    if (argc == 6) {
        bench("custom", atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    } else {
        bench("60m", 16, 256, 8, 8, 64);
        bench("1b", 4, 1024, 32, 32, 64);
        bench("13b", 1, 256, 40, 40, 128);
        bench("gqa", 4, 1024, 32, 8, 128);
        bench("long", 1, 4096, 32, 32, 128);
    }
    return dc_summary("attention_check");
}
