/*
 * test_kernels_cuda.cu: every CUDA kernel of backend_cuda.cuh against the fp32 CPU kernel of
 * kernels_cpu.h, on random inputs at several sizes, odd ones included (N = 39, d = 48, V = 97,
 * f = 72, head_dim 6/8/16/64/128, GQA groups 1/2/4, T = 1, 13, 64, 257).
 *
 *   make test_kernels_cuda && ./tests/bin/test_kernels_cuda      (needs a GPU; skips without one)
 *
 * Inputs are drawn in fp32 and rounded to floatX on the host, so that the CPU and the GPU see the
 * same numbers; what remains is the GPU's rounding of its outputs to floatX and a different fp32
 * summation order. Errors are max |gpu - cpu| / max |cpu| over a tensor; the tolerances (TOL)
 * are stated per op, first for the bf16 build and then for the fp32 build (-DENABLE_FP32).
 * Outputs that an op writes (rather than accumulates into) are poisoned with NaN first, so an
 * element the kernel forgets to write fails the test. Deterministic ops are run twice and
 * compared bit for bit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <stdarg.h>
#include <vector>
#include <algorithm>
#include "kernels_cpu.h"
#include "backend.h"
#include "backend_cuda.cuh"
#include "grass_optim.cuh"  // the host selection, the reference of grass_select_device
#include "tests/test_util.h"
#include "tests/gpu_test_util.h"

#ifdef ENABLE_FP32
#define TOL(bf16, fp32) (fp32)
#else
#define TOL(bf16, fp32) (bf16)
#endif

// ---- host helpers (random inputs, buffers: tests/gpu_test_util.h) ---------------------------------

// max |got - ref| / max(max |ref|, floor); non-finite values in got always fail. The floor keeps a
// tensor that is zero up to rounding (dq, dk at T = 1) from dividing noise by noise.
static void expect_close(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol,
                         double floor = 0.0) {
    double dmax = 0.0, rmax = 0.0;
    size_t bad = 0, worst = 0;
    size_t n = ref.size() < got.size() ? ref.size() : got.size();
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) { bad++; continue; }
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > dmax) { dmax = d; worst = i; }
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
    }
    if (rmax < floor) rmax = floor;
    double e = rmax > 0 ? dmax / rmax : dmax;
    CHECK(bad == 0 && e <= tol && got.size() == ref.size(),
          "%s: rel err %.3g > tol %.3g (worst at %zu: got %.6g want %.6g), %zu non-finite of %zu", what, e, tol, worst,
          n ? got[worst] : 0.0f, n ? ref[worst] : 0.0f, bad, n);
    printf("  %-64s rel err %.2e (tol %.0e)%s\n", what, e, tol, bad ? "  NON-FINITE" : "");
}
static void expect_same_bits(const char* what, const std::vector<float>& a, const std::vector<float>& b) {
    CHECK(a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0, "%s: two runs differ", what);
    printf("  %-64s %s\n", what, (a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0)
                                      ? "bitwise identical over two runs" : "DIFFERS between runs");
}

// max |got - ref| / max |ref|: to show that a check at an fp32 tolerance could not pass in bf16
static double max_rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
    double dmax = 0.0, rmax = 0.0;
    for (size_t i = 0; i < ref.size() && i < got.size(); i++) {
        dmax = fmax(dmax, fabs((double)got[i] - (double)ref[i]));
        rmax = fmax(rmax, fabs((double)ref[i]));
    }
    return rmax > 0 ? dmax / rmax : dmax;
}
// dense-gradient buffers as the optimizer hands them to the backend (backend.h's GradBuf)
static GradBuf gbuf_x(floatX* p) { return grad_buf(p, GRAD_MODEL); }
static GradBuf gbuf_f(float* p) { return grad_buf(p, GRAD_FP32); }

static char g_name[256];
static const char* nm(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_name, sizeof(g_name), fmt, ap);
    va_end(ap);
    return g_name;
}

// ---- initialization ---------------------------------------------------------------------------------
// param_init_tensor on the device == cpu_param_init_tensor: the same fp32 draws (the hashes, bit for
// bit), stored rounded to nearest (bf16.h's rounding, not the device's) with zeros in the padding;
// the output starts as NaN, so an element it forgets fails
static void test_param_init(int rows_hf, int cols_hf, int rows, int cols, double std) {
    ParamInit p = {rows, cols, rows_hf, cols_hf, rng_seed_for(1337, 0x1417, 7), std, 1.0f, 12345};
    size_t ns = (size_t)rows * cols;
    std::vector<float> ref(ns, NAN), want(ns);
    uint64_t rh[2] = {0, 0}, gh[2] = {0, 0};
    cpu_param_init_tensor(ref.data(), &p, rh);
    floatX* d = dx_nan(ns);
    param_init_tensor(d, &p, gh);
    std::vector<float> got = hx(d, ns);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < ns; i++) {
#ifdef ENABLE_FP32
        want[i] = ref[i];
#else
        want[i] = bf16_to_float(bf16_from_float(ref[i]));
#endif
        if (memcmp(&got[i], &want[i], 4) != 0) { if (bad == 0) first = i; bad++; }
    }
    CHECK(bad == 0, "param_init_tensor %dx%d (stored %dx%d) std %g: %zu of %zu values differ from the CPU's rounded, first [%zu] %a vs %a",
          rows_hf, cols_hf, rows, cols, std, bad, ns, first, ns ? got[first] : 0.0f, ns ? want[first] : 0.0f);
    CHECK(gh[0] == rh[0] && gh[1] == rh[1], "param_init_tensor %dx%d: hashes %016llx %016llx, CPU %016llx %016llx", rows_hf, cols_hf,
          (unsigned long long)gh[0], (unsigned long long)gh[1], (unsigned long long)rh[0], (unsigned long long)rh[1]);
    printf("  %-64s %s\n", nm("param_init_tensor %dx%d stored %dx%d std %g", rows_hf, cols_hf, rows, cols, std),
           bad == 0 && gh[0] == rh[0] && gh[1] == rh[1] ? "the CPU's values and hashes, bit for bit" : "DIFFERS from the CPU");
    free_bufs();
}

// ---- memory, copies -------------------------------------------------------------------------------

static void test_memory(void) {
    printf("memory and copies\n");
    size_t before = backend_memory_peak();
    float* z = (float*)backend_malloc(1000 * sizeof(float), "test zeroed");
    std::vector<float> h = hf(z, 1000);
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= h[i] == 0.0f;
    CHECK(zero, "backend_malloc memory is not zeroed");
    CHECK(backend_memory_peak() >= before && backend_memory_peak() >= 4000, "peak accounting");
    CHECK(backend_memory_free() > 0, "backend_memory_free reports 0");
    backend_free(z);
    std::vector<float> a = t_randn(1001, 3.0f);
    floatX* d = dx_from(a);
    expect_close("upload_floats / download_floats round trip", hx(d, a.size()), a, 0.0);
    floatX* d2 = dx_nan(a.size());
    backend_copy(d2, d, a.size() * sizeof(floatX));
    expect_close("backend_copy", hx(d2, a.size()), a, 0.0);
    backend_memset0(d2, a.size() * sizeof(floatX));
    expect_close("backend_memset0", hx(d2, a.size()), std::vector<float>(a.size(), 0.0f), 0.0);
    // with one rank the collectives are no-ops
    std::vector<float> c = t_randn(77, 1.0f);
    float* dc = df_from(c);
    allreduce_sum_float(dc, c.size());
    allreduce_sum_float_wire_floatX(dc, c.size());
    expect_close("allreduce_sum_float (one rank: unchanged)", hf(dc, c.size()), c, 0.0);
    allreduce_sum_floatX(d, a.size());
    expect_close("allreduce_sum_floatX (one rank: unchanged)", hx(d, a.size()), a, 0.0);
    reducescatter_sum_float(dc, c.size());
    allreduce_start_float(dc, c.size(), ALLREDUCE_SLOT_DENSE);
    allreduce_wait(ALLREDUCE_SLOT_DENSE);
    expect_close("reducescatter_sum_float, allreduce_start_float (one rank: unchanged)", hf(dc, c.size()), c, 0.0);
    printf("  peak flops %.3g, free %.2f GiB\n", backend_peak_flops(), backend_memory_free() / 1073741824.0);
    free_bufs();
}

// ---- model ops ------------------------------------------------------------------------------------

static void test_embedding(int N, int d, int V) {
    std::vector<float> wte = t_randn((size_t)V * d, 1.0f), dout = t_randn((size_t)N * d, 1.0f);
    std::vector<float> dw0 = t_randn((size_t)V * d, 0.5f);
    std::vector<int> tok(N);
    for (int i = 0; i < N; i++) tok[i] = (int)(t_next() % (uint64_t)(i % 3 == 0 ? 3 : V));  // many duplicates
    int* dtok = di_from(tok);
    floatX* dwte = dx_from(wte);
    floatX* out = dx_nan((size_t)N * d);
    embedding_forward(out, dtok, dwte, N, d);
    std::vector<float> ref((size_t)N * d);
    cpu_embedding_forward(ref.data(), tok.data(), wte.data(), N, d);
    expect_close(nm("embedding_forward N=%d d=%d V=%d", N, d, V), hx(out, ref.size()), ref, 0.0);
    floatX* dw = dx_from(dw0);
    embedding_backward(gbuf_x(dw), dx_from(dout), dtok, N, d);
    std::vector<float> rdw = dw0;
    cpu_embedding_backward(rdw.data(), dout.data(), tok.data(), N, d);
    std::vector<float> g1 = hx(dw, rdw.size());
    expect_close(nm("embedding_backward N=%d d=%d V=%d (accumulate)", N, d, V), g1, rdw, TOL(1e-2, 1e-5));
    floatX* dw2 = dx_from(dw0);
    embedding_backward(gbuf_x(dw2), dx_from(dout), dtok, N, d);
    expect_same_bits(nm("embedding_backward N=%d d=%d", N, d), g1, hx(dw2, rdw.size()));
    // fp32 dwte (--grad-dtype fp32), accumulating into fp32 values that bf16 cannot hold: fp32 tolerance
    std::vector<float> dwf0 = t_randn((size_t)V * d, 0.5f, false), rdwf = dwf0;
    cpu_embedding_backward(rdwf.data(), dout.data(), tok.data(), N, d);
    float* dwf = df_from(dwf0);
    embedding_backward(gbuf_f(dwf), dx_from(dout), dtok, N, d);
    std::vector<float> gf1 = hf(dwf, rdwf.size());
    expect_close(nm("embedding_backward fp32 dwte N=%d d=%d V=%d (accumulate)", N, d, V), gf1, rdwf, 1e-5);
    float* dwf2 = df_from(dwf0);
    embedding_backward(gbuf_f(dwf2), dx_from(dout), dtok, N, d);
    expect_same_bits(nm("embedding_backward fp32 dwte N=%d d=%d", N, d), gf1, hf(dwf2, rdwf.size()));
    free_bufs();
}

static void test_rmsnorm(int N, int d) {
    std::vector<float> x = t_randn((size_t)N * d, 1.5f), w = t_randn(d, 1.0f), g = t_randn((size_t)N * d, 1.0f);
    for (int j = 0; j < d; j++) w[j] = t_round(1.0f + 0.3f * w[j]);
    float eps = 1e-6f;
    floatX* dxx = dx_from(x);
    floatX* dw = dx_from(w);
    floatX* out = dx_nan((size_t)N * d);
    float* rstd = df_nan(N);
    rmsnorm_forward(out, rstd, dxx, dw, N, d, eps);
    std::vector<float> rout((size_t)N * d), rr(N);
    cpu_rmsnorm_forward(rout.data(), rr.data(), x.data(), w.data(), N, d, eps);
    expect_close(nm("rmsnorm_forward out N=%d d=%d", N, d), hx(out, rout.size()), rout, TOL(1e-2, 1e-5));
    expect_close(nm("rmsnorm_forward rstd N=%d d=%d", N, d), hf(rstd, N), rr, 1e-5);
    // backward from the CPU's rstd, accumulating into random dinp and dw
    std::vector<float> dinp0 = t_randn((size_t)N * d, 0.5f), dw0 = t_randn(d, 0.5f);
    floatX* ddinp = dx_from(dinp0);
    floatX* ddw = dx_from(dw0);
    float* drr = df_from(rr);
    floatX* dg = dx_from(g);
    rmsnorm_backward(ddinp, gbuf_x(ddw), dg, dxx, dw, drr, N, d);
    std::vector<float> rdinp = dinp0, rdw = dw0;
    cpu_rmsnorm_backward(rdinp.data(), rdw.data(), g.data(), x.data(), w.data(), rr.data(), N, d);
    expect_close(nm("rmsnorm_backward dinp N=%d d=%d", N, d), hx(ddinp, rdinp.size()), rdinp, TOL(1e-2, 1e-5));
    std::vector<float> gdw = hx(ddw, d);
    expect_close(nm("rmsnorm_backward dw N=%d d=%d", N, d), gdw, rdw, TOL(1e-2, 1e-5));
    floatX* ddinp2 = dx_from(dinp0);
    floatX* ddw2 = dx_from(dw0);
    rmsnorm_backward(ddinp2, gbuf_x(ddw2), dg, dxx, dw, drr, N, d);
    expect_same_bits(nm("rmsnorm_backward dw N=%d d=%d", N, d), gdw, hx(ddw2, d));
    // fp32 dw (--grad-dtype fp32) from fp32 values: fp32 tolerance, deterministic
    std::vector<float> dwf0 = t_randn(d, 0.5f, false), rdwf = dwf0, rdinpf = dinp0;
    cpu_rmsnorm_backward(rdinpf.data(), rdwf.data(), g.data(), x.data(), w.data(), rr.data(), N, d);
    float* ddwf = df_from(dwf0);
    rmsnorm_backward(dx_from(dinp0), gbuf_f(ddwf), dg, dxx, dw, drr, N, d);
    std::vector<float> gdwf = hf(ddwf, d);
    expect_close(nm("rmsnorm_backward fp32 dw N=%d d=%d", N, d), gdwf, rdwf, 1e-5);
    float* ddwf2 = df_from(dwf0);
    rmsnorm_backward(dx_from(dinp0), gbuf_f(ddwf2), dg, dxx, dw, drr, N, d);
    expect_same_bits(nm("rmsnorm_backward fp32 dw N=%d d=%d", N, d), gdwf, hf(ddwf2, d));
    floatX* ddinp3 = dx_from(dinp0);
    rmsnorm_backward(ddinp3, gbuf_x(NULL), dg, dxx, dw, drr, N, d);  // no weight gradient wanted
    expect_close(nm("rmsnorm_backward dinp, dw=NULL N=%d d=%d", N, d), hx(ddinp3, rdinp.size()), rdinp, TOL(1e-2, 1e-5));
    free_bufs();
}

static void rope_tables(int maxT, int hd, std::vector<float>& c, std::vector<float>& s) {
    int half = hd / 2;
    c.resize((size_t)maxT * half);
    s.resize((size_t)maxT * half);
    for (int t = 0; t < maxT; t++)
        for (int i = 0; i < half; i++) {
            float inv = (float)(1.0 / pow(10000.0, (double)(2 * i) / hd));
            c[(size_t)t * half + i] = cosf(t * inv);
            s[(size_t)t * half + i] = sinf(t * inv);
        }
}

static void test_rope(int B, int T, int nh, int hd) {
    std::vector<float> c, s;
    rope_tables(T + 3, hd, c, s);
    float* dc = df_from(c);
    float* ds = df_from(s);
    std::vector<float> x = t_randn((size_t)B * T * nh * hd, 1.0f);
    floatX* dx = dx_from(x);
    rope_forward(dx, dc, ds, B, T, nh, hd);
    std::vector<float> r = x;
    cpu_rope_forward(r.data(), nh * hd, c.data(), s.data(), B, T, nh, hd);
    expect_close(nm("rope_forward B=%d T=%d nh=%d hd=%d", B, T, nh, hd), hx(dx, r.size()), r, TOL(1e-2, 1e-6));
    floatX* dx2 = dx_from(x);
    rope_backward(dx2, dc, ds, B, T, nh, hd);
    r = x;
    cpu_rope_backward(r.data(), nh * hd, c.data(), s.data(), B, T, nh, hd);
    expect_close(nm("rope_backward B=%d T=%d nh=%d hd=%d", B, T, nh, hd), hx(dx2, r.size()), r, TOL(1e-2, 1e-6));
    free_bufs();
}

// rope_qk (q and k in one launch, packs when half is a multiple of CU_VEC) against gk_rope's
// results bit for bit (the same arithmetic) and the CPU kernel; off shifts q and k by one element,
// which takes the scalar path
static void test_rope_qk(int B, int T, int nh, int nkv, int hd, int off) {
    std::vector<float> c, s;
    rope_tables(T + 3, hd, c, s);
    float* dc = df_from(c);
    float* ds = df_from(s);
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    std::vector<float> xq = t_randn(nq, 1.0f), xk = t_randn(nk, 1.0f);
    for (int backward = 0; backward < 2; backward++) {
        std::vector<float> pq(off + nq, 0.0f), pk(off + nk, 0.0f);
        std::copy(xq.begin(), xq.end(), pq.begin() + off);
        std::copy(xk.begin(), xk.end(), pk.begin() + off);
        floatX* q = dx_from(pq) + off;
        floatX* k = dx_from(pk) + off;
        floatX* q1 = dx_from(xq);
        floatX* k1 = dx_from(xk);
        rope_qk(q, k, nh * hd, nkv * hd, dc, ds, B, T, nh, nkv, hd, backward);
        if (backward) { rope_backward(q1, dc, ds, B, T, nh, hd); rope_backward(k1, dc, ds, B, T, nkv, hd); }
        else { rope_forward(q1, dc, ds, B, T, nh, hd); rope_forward(k1, dc, ds, B, T, nkv, hd); }
        std::vector<float> gq = hx(q, nq), gk = hx(k, nk), rq = hx(q1, nq), rk = hx(k1, nk);
        int same = gq == rq && gk == rk;
        CHECK(same, "rope_qk B=%d T=%d nh=%d nkv=%d hd=%d off=%d %s: differs from rope_%s of q and k", B, T, nh, nkv, hd,
              off, backward ? "backward" : "forward", backward ? "backward" : "forward");
        std::vector<float> cq = xq, ck = xk;
        if (backward) { cpu_rope_backward(cq.data(), nh * hd, c.data(), s.data(), B, T, nh, hd); cpu_rope_backward(ck.data(), nkv * hd, c.data(), s.data(), B, T, nkv, hd); }
        else { cpu_rope_forward(cq.data(), nh * hd, c.data(), s.data(), B, T, nh, hd); cpu_rope_forward(ck.data(), nkv * hd, c.data(), s.data(), B, T, nkv, hd); }
        expect_close(nm("rope_qk q B=%d T=%d nh=%d nkv=%d hd=%d off=%d bwd=%d", B, T, nh, nkv, hd, off, backward), gq, cq, TOL(1e-2, 1e-6));
        expect_close(nm("rope_qk k B=%d T=%d nh=%d nkv=%d hd=%d off=%d bwd=%d", B, T, nh, nkv, hd, off, backward), gk, ck, TOL(1e-2, 1e-6));
        {   // the model's layout: q and k in one qkv buffer (tokens (nh + 2 nkv) hd apart); v untouched
            int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
            size_t rows = (size_t)B * T;
            std::vector<float> qkv = t_pack_qkv(xq, xk, std::vector<float>(rows * kvd, 3.0f), rows, qd, kvd);
            std::vector<float> pf(off + qkv.size(), 0.0f);
            std::copy(qkv.begin(), qkv.end(), pf.begin() + off);
            floatX* f = dx_from(pf) + off;
            rope_qk(f, f + qd, ld, ld, dc, ds, B, T, nh, nkv, hd, backward);
            std::vector<float> got = hx(f, qkv.size());
            CHECK(t_extract(got, rows, qd, ld, 0) == gq && t_extract(got, rows, kvd, ld, qd) == gk,
                  "rope_qk in the fused qkv layout (ld %d, off %d, bwd %d) differs from rope_qk of separate q and k", ld, off, backward);
            std::vector<float> vpart = t_extract(got, rows, kvd, ld, qd + kvd);
            CHECK(std::all_of(vpart.begin(), vpart.end(), [](float x) { return x == 3.0f; }), "rope_qk in the fused layout wrote into v");
        }
    }
    free_bufs();
}

// off: element offset of every buffer from an aligned base (1 exercises the unaligned scalar path).
// SwiGLU over the fused gate|up buffer (N x 2f), against the CPU kernel; add_inplace on N x f.
static void test_elementwise(int N, int f, int off) {
    size_t n = (size_t)N * f;
    std::vector<float> gu = t_randn(2 * n + off, 2.0f), dh = t_randn(n + off, 1.0f), u = t_randn(n + off, 1.0f);
    floatX* dgu_in = dx_from(gu) + off;
    floatX* ddh = dx_from(dh) + off;
    floatX* du = dx_from(u) + off;
    floatX* h = dx_nan(n + off) + off;
    swiglu_forward(h, dgu_in, N, f);
    std::vector<float> rh(n), rdgu(2 * n);
    std::vector<float> gur = hx(dgu_in, 2 * n);  // the input as the device holds it
    cpu_swiglu_forward(rh.data(), gur.data(), N, f);
    expect_close(nm("swiglu_forward N=%d f=%d offset %d", N, f, off), hx(h, n), rh, TOL(1e-2, 1e-6));
    floatX* odgu = dx_nan(2 * n + off) + off;
    swiglu_backward(odgu, ddh, dgu_in, N, f);
    std::vector<float> dhr = hx(ddh, n);
    cpu_swiglu_backward(rdgu.data(), dhr.data(), gur.data(), N, f);
    std::vector<float> got = hx(odgu, 2 * n);
    expect_close(nm("swiglu_backward dgate N=%d f=%d offset %d", N, f, off), t_extract(got, N, f, 2 * f, 0), t_extract(rdgu, N, f, 2 * f, 0),
                 TOL(1e-2, 1e-6));
    expect_close(nm("swiglu_backward dup N=%d f=%d offset %d", N, f, off), t_extract(got, N, f, 2 * f, f), t_extract(rdgu, N, f, 2 * f, f),
                 TOL(1e-2, 1e-6));
    std::vector<float> ur = hx(du, n), rsum = dhr;
    add_inplace(ddh, du, n);
    cpu_add_inplace(rsum.data(), ur.data(), n);
    expect_close(nm("add_inplace n=%zu offset %d", n, off), hx(ddh, n), rsum, TOL(1e-2, 1e-7));
    free_bufs();
}

static void test_matmul(int N, int in, int outd) {
    std::vector<float> x = t_randn((size_t)N * in, 1.0f), w = t_randn((size_t)outd * in, 0.1f),
                       dy = t_randn((size_t)N * outd, 1.0f);
    floatX* dX = dx_from(x);
    floatX* dW = dx_from(w);
    floatX* dDY = dx_from(dy);
    floatX* y = dx_nan((size_t)N * outd);
    matmul_forward(y, dX, dW, N, in, outd);
    std::vector<float> ry((size_t)N * outd);
    cpu_matmul_forward(ry.data(), x.data(), in, w.data(), N, in, outd);
    expect_close(nm("matmul_forward N=%d in=%d out=%d", N, in, outd), hx(y, ry.size()), ry, TOL(1e-2, 1e-5));
    {   // X a column block of a wider buffer (rows in + 24 apart, at column 8: 16-byte aligned in bf16)
        floatX* xs = dx_from(t_embed(x, N, in, in + 24, 8, 0.0f)) + 8;
        floatX* ys = dx_nan((size_t)N * outd);
        matmul_forward_strided(ys, xs, in + 24, dW, N, in, outd);
        expect_close(nm("matmul_forward_strided N=%d in=%d out=%d ld %d", N, in, outd, in + 24), hx(ys, ry.size()), ry, TOL(1e-2, 1e-5));
    }
    {   // the residual on the GEMM: y2 = r + X W^T, against the CPU's GEMM then add; r is left alone
        std::vector<float> res = t_randn((size_t)N * outd, 1.0f);
        floatX* dR = dx_from(res);
        floatX* y2 = dx_nan((size_t)N * outd);
        std::vector<float> rres = hx(dR, res.size());  // the residual as the device holds it
        matmul_forward_residual(y2, dX, dW, dR, N, in, outd);
        std::vector<float> ry2 = ry;
        cpu_add_inplace(ry2.data(), rres.data(), ry2.size());
        expect_close(nm("matmul_forward_residual N=%d in=%d out=%d", N, in, outd), hx(y2, ry2.size()), ry2, TOL(1e-2, 1e-5));
        CHECK(hx(dR, res.size()) == rres, "matmul_forward_residual N=%d in=%d out=%d changed its residual input", N, in, outd);
    }
    for (int acc = 0; acc <= 1; acc++) {
        std::vector<float> dx0 = t_randn((size_t)N * in, 0.5f), dw0 = t_randn((size_t)outd * in, 0.5f);
        floatX* gx = acc ? dx_from(dx0) : dx_nan((size_t)N * in);
        floatX* gw = acc ? dx_from(dw0) : dx_nan((size_t)outd * in);
        matmul_backward_input(gx, dDY, dW, N, in, outd, acc);
        matmul_backward_weight(gbuf_x(gw), dDY, outd, dX, N, in, outd, acc);
        std::vector<float> rgx = acc ? dx0 : std::vector<float>((size_t)N * in, 0.0f);
        std::vector<float> rgw = acc ? dw0 : std::vector<float>((size_t)outd * in, 0.0f);
        cpu_matmul_backward_input(rgx.data(), dy.data(), w.data(), N, in, outd, acc);
        cpu_matmul_backward_weight(rgw.data(), dy.data(), outd, x.data(), N, in, outd, acc);
        expect_close(nm("matmul_backward_input N=%d in=%d out=%d acc=%d", N, in, outd, acc), hx(gx, rgx.size()), rgx,
                     TOL(1e-2, 1e-5));
        expect_close(nm("matmul_backward_weight N=%d in=%d out=%d acc=%d", N, in, outd, acc), hx(gw, rgw.size()), rgw,
                     TOL(1e-2, 1e-5));
        // fp32 dW (--grad-dtype fp32: cuBLASLt with bf16 A/B and fp32 C/D), accumulating into fp32
        // values: the CPU's fp32 result to 1e-5, which the floatX output above misses in bf16
        std::vector<float> dwf0 = t_randn((size_t)outd * in, 0.5f, false);
        float* gwf = acc ? df_from(dwf0) : df_nan((size_t)outd * in);
        matmul_backward_weight(gbuf_f(gwf), dDY, outd, dX, N, in, outd, acc);
        std::vector<float> rgwf = acc ? dwf0 : std::vector<float>((size_t)outd * in, 0.0f);
        cpu_matmul_backward_weight(rgwf.data(), dy.data(), outd, x.data(), N, in, outd, acc);
        expect_close(nm("matmul_backward_weight fp32 dW N=%d in=%d out=%d acc=%d", N, in, outd, acc), hf(gwf, rgwf.size()),
                     rgwf, 1e-5);
        {   // dY a column block of a fused GEMM's gradient (rows outd + 16 apart, at column 8)
            floatX* dys = dx_from(t_embed(dy, N, outd, outd + 16, 8, NAN)) + 8;
            float* gws = acc ? df_from(dwf0) : df_nan((size_t)outd * in);
            matmul_backward_weight(gbuf_f(gws), dys, outd + 16, dX, N, in, outd, acc);
            expect_close(nm("matmul_backward_weight fp32 dW, dY rows %d apart, N=%d in=%d out=%d acc=%d", outd + 16, N, in, outd, acc),
                         hf(gws, rgwf.size()), rgwf, 1e-5);
        }
#ifndef ENABLE_FP32
        double e_x = max_rel_err(hx(gw, rgw.size()), rgw);
        CHECK(e_x > 1e-4, "matmul_backward_weight bf16 dW rel err %.2e: the fp32 check above would not tell the outputs apart", e_x);
#endif
    }
    free_bufs();
}

static void test_classifier(int N, int V, int want_grad) {
    std::vector<float> z = t_randn((size_t)N * V, 3.0f);
    std::vector<int> tg(N);
    for (int i = 0; i < N; i++) tg[i] = (int)(t_next() % (uint64_t)V);
    tg[0] = V - 1;
    float dloss = 1.0f / N;
    floatX* dz = dx_from(z);
    float* losses = df_nan(N);
    classifier_forward_backward(dz, losses, di_from(tg), N, V, dloss, want_grad);
    std::vector<float> rz = z, rl(N);
    cpu_classifier_forward_backward(rz.data(), rl.data(), tg.data(), N, V, dloss, want_grad);
    expect_close(nm("classifier losses N=%d V=%d grad=%d", N, V, want_grad), hf(losses, N), rl, 1e-5);
    expect_close(nm("classifier %s N=%d V=%d", want_grad ? "dlogits" : "logits untouched", N, V), hx(dz, rz.size()), rz,
                 want_grad ? TOL(1e-2, 1e-5) : 0.0);
    free_bufs();
}

static void test_sumsq(size_t n) {
    std::vector<float> x = t_randn(n, 1.0f);
    float acc0 = 3.25f;
    float ref = acc0;
    cpu_sumsq_float(&ref, x.data(), n);
    float* acc = df_from(std::vector<float>(1, acc0));
    floatX* dxx = dx_from(x);
    sumsq_floatX(acc, dxx, n);
    std::vector<float> g1 = hf(acc, 1);
    expect_close(nm("sumsq_floatX n=%zu", n), g1, std::vector<float>(1, ref), 1e-5);
    float* acc2 = df_from(std::vector<float>(1, acc0));
    sumsq_floatX(acc2, dxx, n);
    expect_same_bits(nm("sumsq_floatX n=%zu", n), g1, hf(acc2, 1));
    float* acc3 = df_from(std::vector<float>(1, acc0));
    sumsq_float(acc3, df_from(x), n);
    expect_close(nm("sumsq_float n=%zu", n), hf(acc3, 1), std::vector<float>(1, ref), 1e-5);
    float* dc = df_from(x);
    scale_floats(dc, -0.75f, n);
    std::vector<float> rs = x;
    cpu_scale_floats(rs.data(), -0.75f, n);
    expect_close(nm("scale_floats n=%zu", n), hf(dc, n), rs, 1e-7);
    free_bufs();
}

// the squared norms of an fp32 matrix's rows or columns (Grass's exact and sketched norm pass)
static void test_rows_sumsq(int rows, int cols) {
    std::vector<float> M = t_randn((size_t)rows * cols, 1.0f);
    for (int by_cols = 0; by_cols <= 1; by_cols++) {
        int n = by_cols ? cols : rows;
        std::vector<float> init = t_randn(n, 1.0f), ref = init;
        cpu_rows_sumsq(ref.data(), M.data(), rows, cols, by_cols);
        float* d = df_from(init);
        rows_sumsq(d, df_from(M), rows, cols, by_cols);
        expect_close(nm("rows_sumsq %dx%d by_cols=%d", rows, cols, by_cols), hf(d, n), ref, 1e-5);
    }
    free_bufs();
}

// --adam-eps-style raw (optim/config.h): the kernels take eps / sqrt(bc2) (adam_eps_for_style, the one
// place both builds get it from), which must give lr sqrt(bc2)/bc1 m/(sqrt(v) + eps), the update of
// galore_torch's and transformers' old AdamW, here in float64 from the formula as those write it. eps is
// large, so that the corrected style's update (also formed) is far from it and the check can fail.
static void test_adam_eps_raw(size_t n, float wd) {
    std::vector<float> p = t_randn(n, 0.05f, false), g = t_randn(n, 0.01f, false), m = t_randn(n, 0.001f, false),
                       v = t_randn(n, 0.0001f, false);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-3f, bc1 = 1.0f - powf(b1, 4.0f), bc2 = 1.0f - powf(b2, 4.0f);
    AdamParams ap = {lr, b1, b2, adam_eps_for_style(eps, 1, bc2), wd, bc1, bc2, 1.0f};
    std::vector<float> gx = hx(dx_from(g), n);  // the gradient as the kernel reads it (floatX)
    float* dmaster = df_from(p);
    adamw_update(dx_from(p), dmaster, gbuf_x(dx_from(g)), df_from(m), df_from(v), STATE_FP32, n, ap, 42, 0);
    std::vector<float> got = hf(dmaster, n), want(n), other(n);
    for (size_t i = 0; i < n; i++) {
        double mi = b1 * (double)m[i] + (1 - b1) * (double)gx[i], vi = b2 * (double)v[i] + (1 - b2) * (double)gx[i] * gx[i];
        double raw = sqrt((double)bc2) / bc1 * mi / (sqrt(vi) + eps), corrected = (mi / bc1) / (sqrt(vi / bc2) + eps);
        got[i] -= p[i];  // the step, compared relative to the largest step
        want[i] = (float)(-(double)lr * (raw + wd * p[i]));
        other[i] = (float)(-(double)lr * (corrected + wd * p[i]));
    }
    // measured 2026-12-07 (emulated bf16 build): 4.3e-6 and 4.8e-6; the corrected step is 7x and 13x off
    expect_close(nm("adamw_update, --adam-eps-style raw, eps %g wd=%g: step vs float64", eps, wd), got, want, 2e-4);
    double dmax = 0, rmax = 0;
    for (size_t i = 0; i < n; i++) { dmax = fmax(dmax, fabs((double)other[i] - want[i])); rmax = fmax(rmax, fabs((double)want[i])); }
    CHECK(dmax > 1e-2 * rmax, "adam eps styles: the corrected step is within %.3g of the raw one (the check could not fail)",
          dmax / rmax);
    printf("  %-64s rel diff %.2e\n", "adam eps styles: corrected step vs raw step", dmax / rmax);
    free_bufs();
}

static void test_adamw(size_t n, int off, float wd) {
    std::vector<float> p = t_randn(n + off, 0.05f), g = t_randn(n + off, 0.01f), m = t_randn(n + off, 0.001f, false),
                       v = t_randn(n + off, 0.0001f, false);
    for (size_t i = 0; i < v.size(); i++) v[i] = v[i] * v[i];
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, bc1 = 1.0f - powf(b1, 7.0f), bc2 = 1.0f - powf(b2, 7.0f), gs = 0.8f;
    AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, gs};
    floatX* dp = dx_from(p) + off;
    float* dm = df_from(m) + off;
    float* dv = df_from(v) + off;
    adamw_update(dp, NULL, gbuf_x(dx_from(g) + off), dm, dv, STATE_FP32, n, ap, 42, 0);
    std::vector<float> rp(p.begin() + off, p.end()), rm(m.begin() + off, m.end()), rv(v.begin() + off, v.end());
    cpu_adamw_update(rp.data(), NULL, g.data() + off, rm.data(), rv.data(), 0, n, ap, 42);
    // bf16: stochastic rounding moves each parameter by at most one bf16 step (2^-8 relative)
    expect_close(nm("adamw_update param n=%zu off=%d wd=%g", n, off, wd), hx(dp, n), rp, TOL(8e-3, 1e-6));
    expect_close(nm("adamw_update m n=%zu off=%d", n, off), hf(dm, n), rm, 1e-5);
    expect_close(nm("adamw_update v n=%zu off=%d", n, off), hf(dv, n), rv, 1e-5);

    // bf16 moments: the same update from the same bf16 moments; stored moments may differ by
    // one bf16 step where fp32 rounding differs at a bf16 tie (2^-8 relative)
    std::vector<float> ms(m.begin() + off, m.end()), vs(v.begin() + off, v.end());
    floatX* dp2 = dx_from(std::vector<float>(p.begin() + off, p.end()));
    void* dm2 = ds_bf16_from(ms);
    void* dv2 = ds_bf16_from(vs);
    adamw_update(dp2, NULL, gbuf_x(dx_from(std::vector<float>(g.begin() + off, g.end()))), dm2, dv2, STATE_BF16, n, ap, 42, 0);
    std::vector<float> rp2(p.begin() + off, p.end());
    std::vector<uint16_t> rm2 = bf16_bits(ms), rv2 = bf16_bits(vs);
    cpu_adamw_update(rp2.data(), NULL, g.data() + off, rm2.data(), rv2.data(), 1, n, ap, 42);
    expect_close(nm("adamw_update param bf16 states n=%zu off=%d", n, off), hx(dp2, n), rp2, TOL(8e-3, 1e-6));
    expect_close(nm("adamw_update m bf16 states n=%zu off=%d", n, off), hs_bf16(dm2, n), bits_as_float(rm2), 4e-3);
    expect_close(nm("adamw_update v bf16 states n=%zu off=%d", n, off), hs_bf16(dv2, n), bits_as_float(rv2), 4e-3);

    // fp32 master weights: the master matches the CPU's fp32 update, and the parameter is the
    // master rounded to nearest (no stochastic rounding)
    std::vector<float> p3(p.begin() + off, p.end());
    floatX* dp3 = dx_from(p3);
    float* dmaster = df_from(p3);
    adamw_update(dp3, dmaster, gbuf_x(dx_from(std::vector<float>(g.begin() + off, g.end()))), df_from(ms), df_from(vs), STATE_FP32,
                 n, ap, 42, 0);
    std::vector<float> rp3 = p3, rmaster = p3, rm3 = ms, rv3 = vs;
    cpu_adamw_update(rp3.data(), rmaster.data(), g.data() + off, rm3.data(), rv3.data(), 0, n, ap, 42);
    std::vector<float> gmaster = hf(dmaster, n);
    expect_close(nm("adamw_update master weights n=%zu off=%d", n, off), gmaster, rmaster, 1e-6);
    floatX* dround = dx_from(gmaster);  // the upload rounds to nearest
    expect_same_bits(nm("adamw_update params = master rounded n=%zu off=%d", n, off), hx(dp3, n), hx(dround, n));

    // fp32 gradients (--grad-dtype fp32) with values bf16 cannot hold, through each kernel: fp32
    // moments (vectorized at off 0), bf16 moments, master weights. The moments match the CPU's
    // to 1e-5 only if the gradients are read as fp32.
    std::vector<float> g32 = t_randn(n + off, 0.01f, false);
    for (int variant = 0; variant < 3; variant++) {
        const char* vname[] = {"fp32 moments", "bf16 moments", "master weights"};
        int st = variant == 1 ? STATE_BF16 : STATE_FP32;
        std::vector<float> p4(p.begin() + off, p.end()), rp4 = p4, rmaster4 = p4;
        floatX* dp4 = dx_from(p4);
        float* dmaster4 = variant == 2 ? df_from(p4) : NULL;
        void* dm4 = st == STATE_BF16 ? ds_bf16_from(ms) : (void*)df_from(ms);
        void* dv4 = st == STATE_BF16 ? ds_bf16_from(vs) : (void*)df_from(vs);
        adamw_update(dp4, dmaster4, gbuf_f(df_from(g32) + off), dm4, dv4, st, n, ap, 42, 0);
        std::vector<float> rm4 = ms, rv4 = vs;
        std::vector<uint16_t> rm4b = bf16_bits(ms), rv4b = bf16_bits(vs);
        cpu_adamw_update(rp4.data(), variant == 2 ? rmaster4.data() : NULL, g32.data() + off,
                         st == STATE_BF16 ? (void*)rm4b.data() : (void*)rm4.data(), st == STATE_BF16 ? (void*)rv4b.data() : (void*)rv4.data(),
                         st == STATE_BF16, n, ap, 42);
        expect_close(nm("adamw_update fp32 grads, %s: param n=%zu off=%d", vname[variant], n, off), hx(dp4, n), rp4,
                     TOL(8e-3, 1e-6));
        if (st == STATE_BF16) {
            expect_close(nm("adamw_update fp32 grads, %s: m n=%zu off=%d", vname[variant], n, off), hs_bf16(dm4, n), bits_as_float(rm4b), 4e-3);
        } else {
            expect_close(nm("adamw_update fp32 grads, %s: m n=%zu off=%d", vname[variant], n, off), hf((float*)dm4, n), rm4, 1e-5);
            expect_close(nm("adamw_update fp32 grads, %s: v n=%zu off=%d", vname[variant], n, off), hf((float*)dv4, n), rv4, 1e-5);
        }
        if (variant == 2) expect_close(nm("adamw_update fp32 grads, master n=%zu off=%d", n, off), hf(dmaster4, n), rmaster4, 1e-6);
    }
    free_bufs();
}

// stochastic rounding: unbiased in the mean, deterministic per seed
static void test_stochastic_rounding(void) {
    printf("stochastic rounding\n");
    size_t n = (size_t)1 << 20;
    std::vector<float> p(n, 1.0f), g(n, 1.0f), z(n, 0.0f);
    float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f;
    AdamParams ap = {lr, b1, b2, 1e-12f, 0.0f, 1.0f - b1, 1.0f - b2, 1.0f};  // step 1, no decay
    floatX* dp = dx_from(p);
    adamw_update(dp, NULL, gbuf_x(dx_from(g)), df_from(z), df_from(z), STATE_FP32, n, ap, 7, 0);
    std::vector<float> r1 = hx(dp, n);
    double mean = 0.0;
    size_t ups = 0;
    for (size_t i = 0; i < n; i++) { mean += r1[i]; ups += r1[i] == 1.0f; }
    mean /= n;
    double expect = 1.0 - lr;
#ifdef ENABLE_FP32
    double tol = 1e-6;
#else
    double tol = 2e-5;  // 5 sigma of the mean of n two-point draws 2^-8 apart
#endif
    CHECK(fabs(mean - expect) < tol, "SR mean %.8f, want %.8f", mean, expect);
    printf("  %-64s mean %.7f (exact %.7f), %.3f rounded up\n", "adamw_update: mean of 1M stochastically rounded params",
           mean, expect, (double)ups / n);
    floatX* dp2 = dx_from(p);
    adamw_update(dp2, NULL, gbuf_x(dx_from(g)), df_from(z), df_from(z), STATE_FP32, n, ap, 7, 0);
    expect_same_bits("adamw_update with the same seed", r1, hx(dp2, n));
    // a tensor updated in two pieces (ZeRO-1 cuts tensors at shard ends) gets the bits of one
    // update: piece two passes first = its offset. Cuts at an odd offset (scalar path) and at a
    // multiple of 16 bytes (vectorized path); fp32 moments, bf16 moments.
    for (int sd = 0; sd <= 1; sd++)
        for (size_t cut : {(size_t)333333, (size_t)524288}) {
            floatX* dq = dx_from(p);
            floatX* dg = dx_from(g);
            void *dm = sd ? ds_bf16_from(z) : (void*)df_from(z), *dv = sd ? ds_bf16_from(z) : (void*)df_from(z);
            size_t es = sd ? 2 : 4;
            int st = sd ? STATE_BF16 : STATE_FP32;
            adamw_update(dq, NULL, gbuf_x(dg), dm, dv, st, cut, ap, 7, 0);
            adamw_update(dq + cut, NULL, gbuf_x(dg + cut), (char*)dm + cut * es, (char*)dv + cut * es, st, n - cut, ap, 7, cut);
            floatX* dw = dx_from(p);
            adamw_update(dw, NULL, gbuf_x(dg), sd ? ds_bf16_from(z) : (void*)df_from(z), sd ? ds_bf16_from(z) : (void*)df_from(z), st, n,
                         ap, 7, 0);
            expect_same_bits(nm("adamw_update in two pieces (cut %zu, %s moments) == one update", cut, sd ? "bf16" : "fp32"),
                             hx(dw, n), hx(dq, n));
        }
#ifndef ENABLE_FP32
    floatX* dp3 = dx_from(p);
    adamw_update(dp3, NULL, gbuf_x(dx_from(g)), df_from(z), df_from(z), STATE_FP32, n, ap, 8, 0);
    std::vector<float> r3 = hx(dp3, n);
    CHECK(memcmp(r1.data(), r3.data(), n * sizeof(float)) != 0, "a different seed gives the same rounding");
#endif
    free_bufs();
}

// ---- attention ------------------------------------------------------------------------------------

static void test_attention(int B, int T, int nh, int nkv, int hd) {
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    std::vector<float> q = t_randn(nq, 1.0f), k = t_randn(nk, 1.0f), v = t_randn(nk, 1.0f), dout = t_randn(nq, 1.0f);
    floatX* dq_ = dx_from(q);
    floatX* dk_ = dx_from(k);
    floatX* dv_ = dx_from(v);
    floatX* out = dx_nan(nq);
    float* lse = df_nan((size_t)B * nh * T);
    attention_forward(out, lse, dq_, dk_, dv_, nh * hd, nkv * hd, B, T, nh, nkv, hd);
    std::vector<float> rout(nq), rlse((size_t)B * nh * T);
    cpu_attention_forward(rout.data(), rlse.data(), q.data(), k.data(), v.data(), nh * hd, nkv * hd, B, T, nh, nkv, hd);
    expect_close(nm("attention_forward out B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hx(out, nq), rout,
                 TOL(1.5e-2, 1e-5));
    expect_close(nm("attention_forward lse B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hf(lse, rlse.size()), rlse,
                 TOL(2e-3, 1e-6));
    // backward from the CPU's out and lse (rounded as the GPU stores them)
    for (size_t i = 0; i < nq; i++) rout[i] = t_round(rout[i]);
    floatX* o2 = dx_from(rout);
    float* l2 = df_from(rlse);
    floatX* ddo = dx_from(dout);
    floatX* gq = dx_nan(nq);
    floatX* gk = dx_nan(nk);
    floatX* gv = dx_nan(nk);
    attention_backward(gq, gk, gv, ddo, o2, dq_, dk_, dv_, nh * hd, nkv * hd, l2, B, T, nh, nkv, hd);
    std::vector<float> rq(nq), rk(nk), rv(nk);
    cpu_attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), rout.data(), q.data(), k.data(), v.data(),
                           nh * hd, nkv * hd, rlse.data(), B, T, nh, nkv, hd);
    std::vector<float> g1 = hx(gk, nk);
    expect_close(nm("attention_backward dq B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hx(gq, nq), rq, TOL(2e-2, 1e-4), 1e-2);
    expect_close(nm("attention_backward dk B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), g1, rk, TOL(2e-2, 1e-4), 1e-2);
    expect_close(nm("attention_backward dv B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hx(gv, nk), rv, TOL(2e-2, 1e-4), 1e-2);
    floatX* gk2 = dx_nan(nk);
    attention_backward(gq, gk2, gv, ddo, o2, dq_, dk_, dv_, nh * hd, nkv * hd, l2, B, T, nh, nkv, hd);
    expect_same_bits(nm("attention_backward dk B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), g1, hx(gk2, nk));
    {   // the model's layout: q, k, v side by side in one buffer, dq, dk, dv into one (over NaN): the
        // same kernels with other strides, so the same bits as the separate buffers above
        int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
        size_t rows = (size_t)B * T;
        std::vector<float> qkv = t_pack_qkv(hx(dq_, nq), hx(dk_, nk), hx(dv_, nk), rows, qd, kvd);
        floatX* f = dx_from(qkv);
        floatX* outf = dx_nan(nq);
        float* lsef = df_nan((size_t)B * nh * T);
        attention_forward(outf, lsef, f, f + qd, f + qd + kvd, ld, ld, B, T, nh, nkv, hd);
        expect_same_bits(nm("attention_forward out, fused qkv (ld %d) vs separate, B=%d T=%d nh=%d nkv=%d hd=%d", ld, B, T, nh, nkv, hd),
                         hx(out, nq), hx(outf, nq));
        floatX* df = dx_nan(rows * ld);
        attention_backward(df, df + qd, df + qd + kvd, ddo, o2, f, f + qd, f + qd + kvd, ld, ld, l2, B, T, nh, nkv, hd);
        std::vector<float> got = hx(df, rows * ld);
        expect_same_bits(nm("attention_backward dq, fused qkv, B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hx(gq, nq),
                         t_extract(got, rows, qd, ld, 0));
        expect_same_bits(nm("attention_backward dk, fused qkv, B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), g1,
                         t_extract(got, rows, kvd, ld, qd));
        expect_same_bits(nm("attention_backward dv, fused qkv, B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd), hx(gv, nk),
                         t_extract(got, rows, kvd, ld, qd + kvd));
    }
    free_bufs();
}

// The shared-memory tile layouts of the three attention kernels (cu_att_*_layout, carved with
// cu_carve) against the offsets written out by hand: each tile starts where the previous one
// ends, rounded up to 128 bytes; the total is the last end, rounded. got: the offsets, then the
// total; bytes: each tile's size. Returns 1 on any difference.
static int t_layout_differs(const size_t* got, const size_t* bytes, int ntiles) {
    size_t off = 0;
    for (int i = 0; i < ntiles; i++) {
        if (got[i] != off) return 1;
        off = (off + bytes[i] + 127) / 128 * 128;
    }
    return got[ntiles] != off;
}
static void test_attention_layouts(void) {
    const size_t x = sizeof(floatX), f = sizeof(float);
    int bad_fwd = 0, bad_kv = 0, bad_q = 0;
    for (int hdp = 16; hdp <= 256; hdp += 16) {
        const size_t ldh = hdp + CU_ATT_PAD;
        {
            const size_t BQ = CU_ATT_FWD_BQ, BK = CU_ATT_FWD_BK;
            CuAttFwdLayout L = cu_att_fwd_layout(hdp);
            const size_t got[] = {L.q, L.k, L.v, L.s, L.p, L.o, L.m, L.l, L.c, L.total};
            const size_t bytes[] = {BQ * ldh * x, BK * ldh * x, BK * ldh * x, BQ * (BK + 4) * f, BQ * (BK + CU_ATT_PAD) * x,
                                    BQ * (hdp + 4) * f, BQ * f, BQ * f, BQ * f};
            bad_fwd += t_layout_differs(got, bytes, 9);
        }
        {
            const size_t BK = CU_ATT_KV_BK, BQ = CU_ATT_KV_BQ;
            CuAttKVLayout L = cu_att_kv_layout(hdp);
            const size_t got[] = {L.k, L.v, L.q, L.dO, L.s, L.dp, L.p, L.ds, L.dk, L.dv, L.l, L.d, L.total};
            const size_t bytes[] = {BK * ldh * x, BK * ldh * x, BQ * ldh * x, BQ * ldh * x, BQ * (BK + 4) * f,
                                    BQ * (BK + 4) * f, BQ * (BK + CU_ATT_PAD) * x, BQ * (BK + CU_ATT_PAD) * x,
                                    BK * (hdp + 4) * f, BK * (hdp + 4) * f, BQ * f, BQ * f};
            bad_kv += t_layout_differs(got, bytes, 12);
        }
        {
            const size_t BQ = CU_ATT_Q_BQ, BK = CU_ATT_Q_BK;
            CuAttQLayout L = cu_att_q_layout(hdp);
            const size_t got[] = {L.q, L.dO, L.k, L.v, L.s, L.dp, L.ds, L.dq, L.l, L.d, L.total};
            const size_t bytes[] = {BQ * ldh * x, BQ * ldh * x, BK * ldh * x, BK * ldh * x, BQ * (BK + 4) * f,
                                    BQ * (BK + 4) * f, BQ * (BK + CU_ATT_PAD) * x, BQ * (hdp + 4) * f, BQ * f, BQ * f};
            bad_q += t_layout_differs(got, bytes, 10);
        }
    }
    CHECK(bad_fwd == 0, "cu_att_fwd_layout differs from the hand-written offsets for %d head_dim paddings", bad_fwd);
    CHECK(bad_kv == 0, "cu_att_kv_layout differs from the hand-written offsets for %d head_dim paddings", bad_kv);
    CHECK(bad_q == 0, "cu_att_q_layout differs from the hand-written offsets for %d head_dim paddings", bad_q);
    printf("  %-64s %s\n", "tile layouts (cu_carve) == hand-written offsets, hdp 16..256",
           bad_fwd + bad_kv + bad_q ? "DIFFER" : "identical");
    printf("  shared memory at hdp 64 / 128: forward %zu / %zu, dK/dV %zu / %zu, dQ %zu / %zu bytes\n",
           cu_att_fwd_layout(64).total, cu_att_fwd_layout(128).total, cu_att_kv_layout(64).total,
           cu_att_kv_layout(128).total, cu_att_q_layout(64).total, cu_att_q_layout(128).total);
}

// ---- Grass ----------------------------------------------------------------------------------------

// r distinct indices out of dim (ascending when sorted, else shuffled) and positive scales
static void make_selection(int dim, int r, bool sorted, std::vector<int>& idx, std::vector<float>& scale,
                           std::vector<float>& upscale, bool merged) {
    std::vector<int> all(dim);
    for (int i = 0; i < dim; i++) all[i] = i;
    for (int i = dim - 1; i > 0; i--) { int j = (int)(t_next() % (uint64_t)(i + 1)); int t = all[i]; all[i] = all[j]; all[j] = t; }
    idx.assign(all.begin(), all.begin() + r);
    if (sorted) std::sort(idx.begin(), idx.end());
    scale.resize(r);
    upscale.resize(r);
    for (int j = 0; j < r; j++) {
        scale[j] = 0.5f + (float)t_unif();
        // merged duplicates: the up-projection scale is count * rho
        upscale[j] = merged ? scale[j] * (float)(1 + t_next() % 3) : scale[j];
    }
}

// pad > 0: dY is a column block (at column pad) of a buffer whose rows are outd + 2 pad apart, as a
// fused GEMM's gradient is
static void test_grass_gathered(int N, int in, int outd, int cols_side, int r, bool sorted, int pad = 0) {
    std::vector<float> x = t_randn((size_t)N * in, 1.0f), dy = t_randn((size_t)N * outd, 1.0f);
    int ldy = outd + 2 * pad;
    int dim = cols_side ? in : outd, other = cols_side ? outd : in;
    std::vector<int> idx;
    std::vector<float> sc, up;
    make_selection(dim, r, sorted, idx, sc, up, false);
    floatX* dX = dx_from(x);
    floatX* dDY = dx_from(pad ? t_embed(dy, N, outd, ldy, pad, NAN) : dy) + pad;
    int* didx = di_from(idx);
    float* dsc = df_from(sc);
    for (int acc = 0; acc <= 1; acc++) {
        std::vector<float> c0 = t_randn((size_t)r * other, 1.0f, false);
        float* C = acc ? df_from(c0) : df_nan((size_t)r * other);
        grass_gathered_grad(C, dDY, ldy, dX, didx, dsc, r, N, in, outd, cols_side, acc);
        std::vector<float> rc = acc ? c0 : std::vector<float>((size_t)r * other, 0.0f);
        cpu_grass_gathered_grad(rc.data(), dy.data(), outd, x.data(), idx.data(), sc.data(), r, N, in, outd, cols_side, acc);
        // bf16: the gathered, scaled operand is rounded to bf16 before the GEMM
        expect_close(nm("grass_gathered_grad %s N=%d in=%d out=%d r=%d %s acc=%d ld %d", cols_side ? "cols" : "rows", N, in, outd,
                        r, sorted ? "sorted" : "shuffled", acc, ldy),
                     hf(C, rc.size()), rc, TOL(5e-3, 1e-5));
    }
    free_bufs();
}

static void test_grass_norms(int N, int in, int outd, int cols_side, int pad = 0) {  // pad: as test_grass_gathered
    std::vector<float> x = t_randn((size_t)N * in, 1.0f), dy = t_randn((size_t)N * outd, 1.0f);
    int ldy = outd + 2 * pad;
    int dim = cols_side ? in : outd;
    std::vector<float> n0 = t_randn(dim, 1.0f, false);
    for (int i = 0; i < dim; i++) n0[i] = fabsf(n0[i]);
    float* dn = df_from(n0);
    grass_grad_norms(dn, dx_from(pad ? t_embed(dy, N, outd, ldy, pad, NAN) : dy) + pad, ldy, dx_from(x), N, in, outd, cols_side);
    std::vector<float> rn = n0;
    cpu_grass_grad_norms(rn.data(), dy.data(), outd, x.data(), N, in, outd, cols_side);
    expect_close(nm("grass_grad_norms %s N=%d in=%d out=%d ld %d (accumulate)", cols_side ? "cols" : "rows", N, in, outd, ldy),
                 hf(dn, dim), rn, 1e-4);
    free_bufs();
}

static void test_grass_adam(int outd, int in, int cols_side, int r, float wd, bool merged) {
    int dim = cols_side ? in : outd, other = cols_side ? outd : in;
    std::vector<int> idx;
    std::vector<float> sc, up;
    make_selection(dim, r, true, idx, sc, up, merged);
    size_t sub = (size_t)r * other;
    std::vector<float> W = t_randn((size_t)outd * in, 0.02f), C = t_randn(sub, 0.01f, false), m = t_randn(sub, 0.001f, false),
                       v = t_randn(sub, 0.0001f, false);
    for (size_t i = 0; i < sub; i++) v[i] = v[i] * v[i];
    float lr = 0.01f, alpha = 0.25f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, bc1 = 1.0f - powf(b1, 3.0f),
          bc2 = 1.0f - powf(b2, 3.0f), gs = 1.0f;
    AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, gs};
    floatX* dW = dx_from(W);
    float* dm = df_from(m);
    float* dv = df_from(v);
    grass_adam_update(dW, NULL, df_from(C), dm, dv, STATE_FP32, di_from(idx), df_from(up), r, outd, in, cols_side, ap, alpha,
                      12345);
    std::vector<float> rW = W, rm = m, rv = v;
    cpu_grass_adam_update(rW.data(), NULL, C.data(), rm.data(), rv.data(), 0, idx.data(), up.data(), r, outd, in, cols_side, ap,
                          alpha);
    std::vector<float> gW = hx(dW, W.size());
    const char* side = cols_side ? "cols" : "rows";
    // bf16: one stochastic rounding (< 1 ulp = 2^-7 relative); with decay the selected weights are
    // rounded twice (decay, then update)
    expect_close(nm("grass_adam_update W %s %dx%d r=%d wd=%g%s", side, outd, in, r, wd, merged ? " merged" : ""), gW, rW,
                 TOL(wd > 0.0f ? 1.6e-2 : 8e-3, 1e-6));
    expect_close(nm("grass_adam_update m %s %dx%d r=%d", side, outd, in, r), hf(dm, sub), rm, 1e-5);
    expect_close(nm("grass_adam_update v %s %dx%d r=%d", side, outd, in, r), hf(dv, sub), rv, 1e-5);
    if (wd == 0.0f) {  // rows/columns that were not selected stay bit for bit
        std::vector<char> sel(dim, 0);
        for (int j = 0; j < r; j++) sel[idx[j]] = 1;
        size_t changed = 0;
        for (int i = 0; i < outd; i++)
            for (int c = 0; c < in; c++)
                if (!sel[cols_side ? c : i] && gW[(size_t)i * in + c] != W[(size_t)i * in + c]) changed++;
        CHECK(changed == 0, "grass_adam_update changed %zu unselected weights", changed);
    }
    // bf16 moments (subspace Adam state in bf16)
    floatX* dW2 = dx_from(W);
    void* dm2 = ds_bf16_from(m);
    void* dv2 = ds_bf16_from(v);
    grass_adam_update(dW2, NULL, df_from(C), dm2, dv2, STATE_BF16, di_from(idx), df_from(up), r, outd, in, cols_side, ap, alpha,
                      12345);
    std::vector<float> rW2 = W;
    std::vector<uint16_t> rm2 = bf16_bits(m), rv2 = bf16_bits(v);
    cpu_grass_adam_update(rW2.data(), NULL, C.data(), rm2.data(), rv2.data(), 1, idx.data(), up.data(), r, outd, in, cols_side,
                          ap, alpha);
    expect_close(nm("grass_adam_update W bf16 states %s %dx%d r=%d wd=%g", side, outd, in, r, wd), hx(dW2, W.size()), rW2,
                 TOL(wd > 0.0f ? 1.6e-2 : 8e-3, 1e-6));
    expect_close(nm("grass_adam_update m bf16 states %s %dx%d r=%d", side, outd, in, r), hs_bf16(dm2, sub),
                 bits_as_float(rm2), 4e-3);
    expect_close(nm("grass_adam_update v bf16 states %s %dx%d r=%d", side, outd, in, r), hs_bf16(dv2, sub),
                 bits_as_float(rv2), 4e-3);
    // fp32 master weights (decay and update applied to the master; W = master rounded to nearest)
    floatX* dW3 = dx_from(W);
    float* dWm = df_from(W);
    grass_adam_update(dW3, dWm, df_from(C), df_from(m), df_from(v), STATE_FP32, di_from(idx), df_from(up), r, outd, in,
                      cols_side, ap, alpha, 12345);
    std::vector<float> rW3 = W, rWm = W, rm3 = m, rv3 = v;
    cpu_grass_adam_update(rW3.data(), rWm.data(), C.data(), rm3.data(), rv3.data(), 0, idx.data(), up.data(), r, outd, in,
                          cols_side, ap, alpha);
    std::vector<float> gWm = hf(dWm, W.size());
    expect_close(nm("grass_adam_update master weights %s %dx%d r=%d wd=%g", side, outd, in, r, wd), gWm, rWm, 1e-6);
    floatX* dWround = dx_from(gWm);
    expect_same_bits(nm("grass_adam_update W = master rounded %s %dx%d", side, outd, in), hx(dW3, W.size()),
                     hx(dWround, W.size()));
    free_bufs();
}

// --grass-refresh-state keep: grass_remap_state against its definition (new row j = old row src[j]
// times f, v's f*f, both single fp32 products, rounded to nearest even when stored as bf16; zero for
// src -1 and past the new rows) bit for bit, against the CPU op bit for bit, and within one fp32
// rounding of float64. The buffer past the old rows holds junk that must not leak in.
static void test_grass_remap(int other, int cols_side, int r_old, int r_new, int r_cap) {
    size_t total = (size_t)r_cap * other;
    std::vector<int> src(r_new);
    std::vector<float> factor(r_new);
    for (int j = 0; j < r_new; j++) {
        double u = t_unif();
        src[j] = u < 0.3 ? -1 : (int)(t_next() % (uint64_t)r_old);
        factor[j] = j % 4 == 0 ? 1.0f : (float)(0.25 + 3.0 * t_unif());  // top-r's 1, and multinorm's ratios
    }
    std::vector<float> x = t_randn(total, 0.01f, false);
    for (int bf = 0; bf < 2; bf++)
        for (int square = 0; square < 2; square++) {
            std::vector<float> xs = x;
            if (square) for (size_t i = 0; i < total; i++) xs[i] = xs[i] * xs[i];  // v >= 0
            // the definition, on the host, from the stored values
            std::vector<float> stored = bf ? bits_as_float(bf16_bits(xs)) : xs, want(total, 0.0f);
            double f64_err = 0;
            for (size_t k = 0; k < (size_t)r_new * other; k++) {
                int j = cols_side ? (int)(k % r_new) : (int)(k / other);
                size_t e = cols_side ? k / r_new : k % other;
                if (src[j] < 0) continue;
                float f = square ? factor[j] * factor[j] : factor[j];
                float old = stored[cols_side ? e * r_old + src[j] : (size_t)src[j] * other + e];
                float y = old * f;
                double exact = (double)old * (square ? (double)factor[j] * factor[j] : (double)factor[j]);
                f64_err = fmax(f64_err, fabs(y - exact) / (fabs(exact) + 1e-30));
                want[k] = bf ? bf16_to_float(bf16_from_float(y)) : y;
            }
            CHECK(f64_err <= 2.5e-7, "remap: the fp32 product within rounding of float64 (%.3g)", f64_err);
            int st = bf ? STATE_BF16 : STATE_FP32;
            void* d = bf ? ds_bf16_from(xs) : (void*)df_from(xs);
            void* tmp = bf ? ds_bf16_from(std::vector<float>(total, NAN)) : (void*)df_nan(total);
            grass_remap_state(d, tmp, st, di_from(src), df_from(factor), square, r_old, r_new, r_cap, other, cols_side);
            std::vector<float> got = bf ? hs_bf16(d, total) : hf((float*)d, total);
            // the CPU op on the same stored bits
            std::vector<float> cpu_f = xs, cpu_tmp(total);
            std::vector<uint16_t> cpu_b = bf16_bits(xs), cpu_btmp(total);
            if (bf) cpu_grass_remap_state(cpu_b.data(), cpu_btmp.data(), 1, src.data(), factor.data(), square, r_old, r_new, r_cap,
                                          other, cols_side);
            else cpu_grass_remap_state(cpu_f.data(), cpu_tmp.data(), 0, src.data(), factor.data(), square, r_old, r_new, r_cap,
                                       other, cols_side);
            std::vector<float> cpu = bf ? bits_as_float(cpu_b) : cpu_f;
            char what[160];
            snprintf(what, sizeof(what), "grass_remap_state %s %s %s other=%d r %d -> %d (cap %d)", bf ? "bf16" : "fp32",
                     square ? "v" : "m", cols_side ? "cols" : "rows", other, r_old, r_new, r_cap);
            CHECK(memcmp(got.data(), want.data(), total * sizeof(float)) == 0, "%s: differs from its definition", what);
            CHECK(memcmp(cpu.data(), want.data(), total * sizeof(float)) == 0, "%s: the CPU op differs from the definition", what);
            printf("  %-64s device == CPU == definition, bit for bit\n", what);
        }
    free_bufs();
}

// grass_adam_update with per-row bias corrections (AdamParams.bc_rows) against the CPU kernel; and
// rows that all carry the shared bc1, bc2 give the bits of the path without them
static void test_grass_adam_row_bc(int outd, int in, int cols_side, int r) {
    int dim = cols_side ? in : outd, other = cols_side ? outd : in;
    std::vector<int> idx;
    std::vector<float> sc, up;
    make_selection(dim, r, true, idx, sc, up, true);
    size_t sub = (size_t)r * other;
    std::vector<float> W = t_randn((size_t)outd * in, 0.02f), C = t_randn(sub, 0.01f, false), m = t_randn(sub, 0.001f, false),
                       v = t_randn(sub, 0.0001f, false);
    for (size_t i = 0; i < sub; i++) v[i] = v[i] * v[i];
    float b1 = 0.9f, b2 = 0.999f;
    std::vector<float> bc(2 * r), bc_same(2 * r);
    for (int j = 0; j < r; j++) {
        int t = 1 + j % 7;  // counts 1..7, as rows kept for different numbers of steps
        bc[2 * j] = 1.0f - powf(b1, (float)t); bc[2 * j + 1] = 1.0f - powf(b2, (float)t);
        bc_same[2 * j] = 1.0f - powf(b1, 3.0f); bc_same[2 * j + 1] = 1.0f - powf(b2, 3.0f);
    }
    AdamParams ap = {0.01f, b1, b2, 1e-8f, 0.0f, 1.0f - powf(b1, 3.0f), 1.0f - powf(b2, 3.0f), 1.0f};
    const char* side = cols_side ? "cols" : "rows";
    // per-row counts: device against the CPU kernel
    AdamParams apr = ap;
    floatX* dW = dx_from(W);
    float* dWm = df_from(W);
    float* dm = df_from(m);
    float* dv = df_from(v);
    apr.bc_rows = df_from(bc);
    grass_adam_update(dW, dWm, df_from(C), dm, dv, STATE_FP32, di_from(idx), df_from(up), r, outd, in, cols_side, apr, 0.25f, 7);
    std::vector<float> rW = W, rWm = W, rm = m, rv = v;
    apr.bc_rows = bc.data();
    cpu_grass_adam_update(rW.data(), rWm.data(), C.data(), rm.data(), rv.data(), 0, idx.data(), up.data(), r, outd, in, cols_side,
                          apr, 0.25f);
    expect_close(nm("grass_adam_update per-row bias corrections %s %dx%d r=%d: master W", side, outd, in, r), hf(dWm, W.size()),
                 rWm, 1e-6);
    expect_close(nm("grass_adam_update per-row bias corrections %s: m", side), hf(dm, sub), rm, 1e-5);
    // and the same update without them differs (the per-row values act)
    std::vector<float> nW = W, nWm = W, nm_ = m, nv = v;
    cpu_grass_adam_update(nW.data(), nWm.data(), C.data(), nm_.data(), nv.data(), 0, idx.data(), up.data(), r, outd, in, cols_side,
                          ap, 0.25f);
    CHECK(max_rel_err(nWm, rWm) > 1e-4, "per-row bias corrections change the update (%.3g)", max_rel_err(nWm, rWm));
    // equal per-row values: the bits of the shared path, on the device
    floatX* dWa = dx_from(W);
    floatX* dWb = dx_from(W);
    float* dma = df_from(m); float* dva = df_from(v); float* dmb = df_from(m); float* dvb = df_from(v);
    grass_adam_update(dWa, NULL, df_from(C), dma, dva, STATE_FP32, di_from(idx), df_from(up), r, outd, in, cols_side, ap, 0.25f, 9);
    AdamParams aps = ap;
    aps.bc_rows = df_from(bc_same);
    grass_adam_update(dWb, NULL, df_from(C), dmb, dvb, STATE_FP32, di_from(idx), df_from(up), r, outd, in, cols_side, aps, 0.25f, 9);
    expect_same_bits(nm("grass_adam_update equal per-row bc == shared bc: W %s", side), hx(dWa, W.size()), hx(dWb, W.size()));
    expect_same_bits(nm("grass_adam_update equal per-row bc == shared bc: v %s", side), hf(dva, sub), hf(dvb, sub));
    free_bufs();
}

// ---- GaLore -----------------------------------------------------------------------------------
// the projector: cuSOLVER's SVD against LAPACK's (kernels_cpu.h), both signed by the same rule; the
// spectrum of a Gaussian matrix this size has gaps wide enough for the vectors to agree closely
// sumsq_unscaled: Grass's norm of B G from C = rho B G, against the CPU kernel; unit scales give
// sumsq_float's bits
static void test_sumsq_unscaled(int r, int other, int cols_side) {
    std::vector<float> C = t_randn((size_t)r * other, 1.0f, false), sc = t_randn(r, 1.0f, false), ones(r, 1.0f);
    for (int j = 0; j < r; j++) sc[j] = 0.25f + fabsf(sc[j]);
    float* dC = df_from(C);
    float* acc = df_from(std::vector<float>(1, 2.0f));
    sumsq_unscaled(acc, dC, df_from(sc), r, other, cols_side);
    std::vector<float> ref(1, 2.0f);
    cpu_sumsq_unscaled(ref.data(), C.data(), sc.data(), r, other, cols_side);
    expect_close(nm("sumsq_unscaled %s r=%d other=%d", cols_side ? "cols" : "rows", r, other), hf(acc, 1), ref, 1e-5);
    float* a1 = df_from(std::vector<float>(1, 2.0f));
    float* a2 = df_from(std::vector<float>(1, 2.0f));
    sumsq_unscaled(a1, dC, df_from(ones), r, other, cols_side);
    sumsq_float(a2, dC, C.size());
    expect_same_bits(nm("sumsq_unscaled, unit scales == sumsq_float %s", cols_side ? "cols" : "rows"), hf(a1, 1), hf(a2, 1));
    free_bufs();
}

static void test_galore_projector(int outd, int in, int r) {
    int cols_side = outd > in, s = cols_side ? in : outd;
    std::vector<float> G = t_randn((size_t)outd * in, 1.0f, false);
    size_t nw = galore_work_floats(outd, in);
    float* dG = df_from(G);
    float* dPt = df_nan((size_t)r * s);
    floatX* dPtx = dx_nan((size_t)r * s);
    galore_projector(dPt, dPtx, dG, outd, in, cols_side, r, df_nan(nw));
    std::vector<float> rPt((size_t)r * s), work(cpu_galore_work_floats(outd, in));
    cpu_galore_projector(rPt.data(), G.data(), outd, in, cols_side, r, work.data());
    const char* side = cols_side ? "cols" : "rows";
    std::vector<float> gPt = hf(dPt, rPt.size());
    expect_close(nm("galore_projector Pt %s %dx%d r=%d", side, outd, in, r), gPt, rPt, 1e-3);
    expect_close(nm("galore_projector Ptx (floatX) %s %dx%d r=%d", side, outd, in, r), hx(dPtx, rPt.size()), rPt,
                 TOL(4e-3, 1e-3));
    double orth = 0.0;  // P^T P = I in float64
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) {
            double d = 0.0;
            for (int j = 0; j < s; j++) d += (double)gPt[(size_t)a * s + j] * gPt[(size_t)b * s + j];
            orth = fmax(orth, fabs(d - (a == b ? 1.0 : 0.0)));
        }
    CHECK(orth < 1e-5, "galore_projector %s: rows orthonormal (max |P^T P - I| %.3g)", side, orth);
    float* dPt2 = df_nan((size_t)r * s);
    galore_projector(dPt2, dx_nan((size_t)r * s), dG, outd, in, cols_side, r, df_nan(nw));
    expect_same_bits(nm("galore_projector %s %dx%d", side, outd, in), gPt, hf(dPt2, rPt.size()));
    free_bufs();
}

static void test_galore_project_grad(int N, int in, int outd, int r, int pad = 0) {  // pad: as test_grass_gathered
    int cols_side = outd > in, s = cols_side ? in : outd, other = cols_side ? outd : in;
    std::vector<float> x = t_randn((size_t)N * in, 1.0f), dy = t_randn((size_t)N * outd, 1.0f),
                       pt = t_randn((size_t)r * s, 0.2f), r0 = t_randn((size_t)r * other, 1.0f, false);
    float* dR = df_from(r0);
    int ldy = outd + 2 * pad;
    galore_project_grad(dR, dx_from(pad ? t_embed(dy, N, outd, ldy, pad, NAN) : dy) + pad, ldy, dx_from(x), dx_from(pt), r, N, in,
                        outd, cols_side);
    std::vector<float> rR = r0;
    cpu_galore_project_grad(rR.data(), dy.data(), outd, x.data(), pt.data(), r, N, in, outd, cols_side);
    // bf16: the N x r projection is rounded to bf16 before the second GEMM
    expect_close(nm("galore_project_grad %s N=%d in=%d out=%d r=%d ld %d (accumulate)", cols_side ? "cols" : "rows", N, in, outd, r, ldy),
                 hf(dR, rR.size()), rR, TOL(5e-3, 1e-5));
    free_bufs();
}

static void test_galore_adam(int outd, int in, int r, float wd) {
    int cols_side = outd > in, s = cols_side ? in : outd, other = cols_side ? outd : in;
    size_t sub = (size_t)r * other, nw = galore_work_floats(outd, in);
    std::vector<float> W = t_randn((size_t)outd * in, 0.02f), R = t_randn(sub, 0.01f, false), m = t_randn(sub, 0.001f, false),
                       v = t_randn(sub, 0.0001f, false), Pt = t_randn((size_t)r * s, 0.2f, false);
    for (size_t i = 0; i < sub; i++) v[i] = v[i] * v[i];
    AdamParams ap = {0.01f, 0.9f, 0.999f, 1e-8f, wd, 1.0f - powf(0.9f, 3.0f), 1.0f - powf(0.999f, 3.0f), 0.5f};
    float alpha = 0.25f;
    const char* side = cols_side ? "cols" : "rows";
    std::vector<float> work(cpu_galore_work_floats(outd, in));
    for (int variant = 0; variant < 3; variant++) {  // fp32 moments; bf16 moments; fp32 moments with master weights
        int bf = variant == 1;
        floatX* dW = dx_from(W);
        float* dWm = variant == 2 ? df_from(W) : NULL;
        float* dR = df_from(R);
        void* dm = bf ? ds_bf16_from(m) : (void*)df_from(m);
        void* dv = bf ? ds_bf16_from(v) : (void*)df_from(v);
        galore_adam_update(dW, dWm, dR, dm, dv, bf ? STATE_BF16 : STATE_FP32, df_from(Pt), r, outd, in, cols_side, ap, alpha,
                           777, df_nan(nw));
        std::vector<float> rW = W, rWm = W, rR = R, rm = m, rv = v;
        std::vector<uint16_t> rm2 = bf16_bits(m), rv2 = bf16_bits(v);
        cpu_galore_adam_update(rW.data(), variant == 2 ? rWm.data() : NULL, rR.data(), bf ? (void*)rm2.data() : (void*)rm.data(),
                               bf ? (void*)rv2.data() : (void*)rv.data(), bf, Pt.data(), r, outd, in, cols_side, ap, alpha,
                               work.data());
        const char* what = variant == 0 ? "" : variant == 1 ? " bf16 states" : " master";
        expect_close(nm("galore_adam_update D%s %s %dx%d r=%d", what, side, outd, in, r), hf(dR, sub), rR, bf ? 4e-3 : 1e-5);
        if (variant == 2) {
            std::vector<float> gWm = hf(dWm, W.size());
            expect_close(nm("galore_adam_update Wm (master)%s %s %dx%d r=%d wd=%g", "", side, outd, in, r, wd), gWm, rWm, 1e-6);
            expect_same_bits(nm("galore_adam_update W = master rounded %s %dx%d", side, outd, in), hx(dW, W.size()),
                             hx(dx_from(gWm), W.size()));
        } else {
            // bf16 weights: one stochastic rounding (< 2^-7 relative); bf16 moments round m and v too
            expect_close(nm("galore_adam_update W%s %s %dx%d r=%d wd=%g", what, side, outd, in, r, wd), hx(dW, W.size()), rW,
                         TOL(8e-3, bf ? 1e-4 : 1e-6));
        }
        if (!bf) expect_close(nm("galore_adam_update m %s %dx%d", side, outd, in), hf((float*)dm, sub), rm, 1e-5);
    }
    free_bufs();
}

// device selection == host selection (grass_select): same indices, bit-identical scales
static void test_select_device(int dim, int r) {
    std::vector<float> q(dim);
    for (int i = 0; i < dim; i++) {  // squared norms with exact zeros and ties
        float x = t_normal();
        q[i] = (i % 11 == 0) ? 0.0f : (i % 7 == 0) ? 4.0f : x * x;
    }
    float* dq = df_from(q);
    for (int method = 0; method < SEL_COUNT; method++) {
        uint64_t rng = rng_seed_for(1234, 7, (uint64_t)method);
        Selection hs;
        hs.idx = (int*)calloc_check(r, sizeof(int));
        hs.scale = (float*)calloc_check(r, sizeof(float));
        hs.upscale = (float*)calloc_check(r, sizeof(float));
        grass_select((GrassSelect)method, q.data(), dim, r, rng, &hs);
        int* di = di_from(std::vector<int>(r, -1));
        float* ds = df_from(std::vector<float>(r, NAN));
        float* du = df_from(std::vector<float>(r, NAN));
        int re = grass_select_device(method, dq, dim, r, rng, di, ds, du);
        std::vector<int> gi(r > 0 ? r : 1);
        backend_download(gi.data(), di, r * sizeof(int));
        std::vector<float> gs = hf(ds, r), gu = hf(du, r);
        int same = re == hs.r_eff;
        for (int j = 0; same && j < re; j++)
            same = gi[j] == hs.idx[j] && memcmp(&gs[j], &hs.scale[j], 4) == 0 && memcmp(&gu[j], &hs.upscale[j], 4) == 0;
        // (a mismatch in multinorm-nr / uniform-nr only could come from CUDA's and libm's log differing in the last bit)
        CHECK(same, "grass_select_device %s dim=%d r=%d: r_eff %d vs host %d, or indices/scales differ",
              GRASS_SELECT_NAMES[method], dim, r, re, hs.r_eff);
        printf("  %-64s %s\n", nm("grass_select_device %s dim=%d r=%d (r_eff %d)", GRASS_SELECT_NAMES[method], dim, r, re),
               same ? "== host selection" : "DIFFERS from the host selection");
        free(hs.idx); free(hs.scale); free(hs.upscale);
    }
    free_bufs();
}

// the bounded plan cache (cuda/gemm.cuh): more distinct GEMM shapes than it holds, each result
// right (plans evicted and made again), the cache never above its bound, a hit the same plan
static void test_plan_cache(void) {
    size_t saved = g_cu.plan_cache_max;
    g_cu.plan_cache_max = 6;
    int bad = 0;
    for (int round = 0; round < 2; round++)
        for (int s = 0; s < 10; s++) {
            int N = 3 + s, in = 8 + 2 * s, outd = 5 + s;  // a new shape every time
            std::vector<float> x = t_randn((size_t)N * in, 1.0f), w = t_randn((size_t)outd * in, 0.1f);
            floatX* dX = dx_from(x);
            floatX* dW = dx_from(w);
            floatX* y = dx_nan((size_t)N * outd);
            matmul_forward(y, dX, dW, N, in, outd);
            std::vector<float> ry((size_t)N * outd);
            cpu_matmul_forward(ry.data(), x.data(), in, w.data(), N, in, outd);
            bad += max_rel_err(hx(y, ry.size()), ry) > TOL(1e-2, 1e-5);
            bad += g_cu.plans->size() > 6 || g_cu.plan_index->size() != g_cu.plans->size();
            free_bufs();
        }
    CHECK(bad == 0, "plan cache of 6 over 20 GEMMs of 10 shapes: %d wrong results or cache sizes (size %zu)", bad,
          g_cu.plans->size());
    for (size_t i = 0; i < g_cu.plans->size(); i++) {  // every plan is where its index says
        std::unordered_map<CuGemmKey, size_t, CuGemmKeyHash>::iterator it = g_cu.plan_index->find((*g_cu.plans)[i].key);
        CHECK(it != g_cu.plan_index->end() && it->second == i, "plan %zu is not indexed at its position", i);
    }
    g_cu.plan_cache_max = saved;
}

int main(void) {
    test_line_buffered_stdout();
    if (!t_init_gpu("test_kernels_cuda")) return 0;
    printf("backend: %s\n", backend_name());
    printf("the CPU reference of GaLore's SVD: %s\n", CPU_GESVD_NAME);
    t_seed(0x1234567ULL);  // the inputs' random stream

    test_memory();
    printf("initialization\n");
    test_param_init(37, 19, 64, 64, 0.02);    // padded rows and columns, odd: pairs straddle rows
    test_param_init(80, 48, 128, 48, 0.02);   // gate/up: padded rows
    test_param_init(48, 80, 48, 128, 0.02);   // down: padded columns
    test_param_init(1, 48, 1, 48, 0.0);       // a norm: ones
    test_param_init(601, 999, 601, 999, 0.02);  // 300k pairs: threads loop over the grid
    printf("embedding\n");
    test_embedding(39, 48, 97);
    test_embedding(256, 64, 1000);
    test_embedding(1, 16, 5);
    printf("rmsnorm\n");
    test_rmsnorm(39, 48);
    test_rmsnorm(300, 512);
    test_rmsnorm(13, 72);
    test_rmsnorm(600, 2048);
    printf("rope\n");
    test_rope(2, 13, 3, 16);
    test_rope(1, 64, 4, 64);
    test_rope(2, 5, 2, 6);
    test_rope_qk(2, 13, 4, 2, 64, 0);   // packs (half 32)
    test_rope_qk(1, 9, 3, 1, 32, 1);    // q and k one element off 16 bytes: scalars
    test_rope_qk(2, 5, 2, 2, 12, 0);    // half 6: not a multiple of a pack
    printf("elementwise\n");
    test_elementwise(39, 72, 0);      // packs
    test_elementwise(39, 72, 1);      // one element off 16 bytes: scalars
    test_elementwise(67, 187, 0);     // f not a multiple of a pack: scalars
    test_elementwise(3, 4096, 0);
    printf("matmul\n");
    test_matmul(39, 48, 72);
    test_matmul(13, 97, 48);
    test_matmul(64, 512, 1376);
    test_matmul(256, 64, 97);
    test_plan_cache();
    printf("classifier\n");
    test_classifier(39, 97, 1);
    test_classifier(39, 97, 0);
    test_classifier(16, 32000, 1);
    test_classifier(3, 1000, 1);
    printf("reductions\n");
    test_sumsq(1);
    test_sumsq(1001);
    test_sumsq((size_t)12345677);
    test_rows_sumsq(37, 53);
    test_rows_sumsq(3, 1100);  // a row longer than a block: strided sums
    test_rows_sumsq(300, 2);
    printf("adamw\n");
    test_adamw(1001, 0, 0.0f);
    test_adamw(4096, 0, 0.1f);
    test_adamw(777, 1, 0.01f);
    test_adam_eps_raw(1001, 0.0f);
    test_adam_eps_raw(513, 0.1f);
    test_stochastic_rounding();
    printf("attention\n");
    test_attention_layouts();
    test_attention(1, 1, 2, 1, 16);
    test_attention(2, 13, 4, 4, 16);
    test_attention(2, 13, 4, 2, 16);
    test_attention(1, 13, 8, 2, 8);     // tiny_gqa's head_dim 8
    test_attention(2, 40, 3, 1, 16);    // tiny_odd: 3 heads, 1 kv head
    test_attention(1, 64, 4, 2, 64);
    test_attention(1, 100, 2, 2, 6);    // head_dim not a multiple of 8
    test_attention(2, 257, 4, 1, 128);  // GQA group 4
    test_attention(1, 257, 4, 4, 64);
    test_attention(1, 130, 2, 1, 32);
    printf("grass\n");
    for (int cols = 0; cols <= 1; cols++) {
        test_grass_gathered(39, 48, 72, cols, cols ? 12 : 20, true);
        test_grass_gathered(39, 48, 72, cols, 7, false);
        test_grass_gathered(13, 97, 48, cols, 1, true);
        test_grass_gathered(256, 512, 1376, cols, 128, true);
        test_grass_norms(39, 48, 72, cols);
        test_grass_norms(13, 97, 48, cols);
        test_grass_norms(64, 4096, 5000, cols);  // more than one block of the bounded scratch
        test_grass_gathered(39, 48, 72, cols, 16, true, 8);   // dY a column block of a fused gradient (ld 88)
        test_grass_gathered(13, 97, 48, cols, 5, false, 3);   // ... at an unaligned column
        test_grass_norms(39, 48, 72, cols, 8);
        test_grass_norms(64, 1024, 2100, cols, 8);            // a larger strided dY
        test_grass_adam(72, 48, cols, 9, 0.0f, false);
        test_grass_adam(72, 48, cols, 9, 0.1f, true);
        test_grass_adam(97, 130, cols, 40, 0.0f, true);
        test_grass_adam_row_bc(72, 48, cols, 9);
        test_grass_remap(37, cols, 9, 12, 16);
        test_grass_remap(50, cols, 16, 5, 16);
    }
    printf("galore\n");
    test_galore_projector(48, 72, 12);    // rows side
    test_galore_projector(97, 40, 9);     // cols side
    test_galore_projector(64, 64, 64);    // square, full rank
    test_galore_projector(200, 300, 32);  // s = 200 > 128: the sign search's upper half of 256 threads
    test_galore_project_grad(39, 48, 72, 9);
    test_galore_project_grad(39, 72, 48, 9);
    test_galore_project_grad(256, 512, 1376, 128);
    test_galore_project_grad(39, 48, 72, 9, 8);    // dY a column block of a fused gradient
    test_galore_project_grad(39, 72, 48, 9, 8);
    test_galore_adam(48, 72, 12, 0.0f);
    test_galore_adam(97, 40, 9, 0.1f);
    test_galore_adam(512, 1376, 128, 0.01f);
    test_sumsq_unscaled(9, 130, 0);
    test_sumsq_unscaled(40, 4097, 1);
    test_select_device(48, 12);
    test_select_device(1376, 128);
    test_select_device(5120, 256);
    test_select_device(13824, 256);
    return test_summary("test_kernels_cuda");
}
