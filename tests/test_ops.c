/*
 * test_ops.c: every CPU kernel of kernels_cpu.h against an independent float64 reference
 * written here from the math of backend.h (plain loops in double, never calling a kernel).
 *   - forward values: fp32 kernel vs the float64 forward;
 *   - gradients: fp32 kernel vs an analytic float64 backward written here, and that analytic
 *     backward vs central finite differences (float64, eps 1e-6) of the float64 forward for
 *     the scalar loss L = sum(out * R) with a fixed random R;
 *   - accumulate / overwrite contracts (outputs prefilled with random values or NaN),
 *     untouched rows bit-exact, large logits, and bit-identical results with 1, 2 and 3
 *     OpenMP threads for the kernels that promise thread-count independence.
 * Tolerances, elementwise, one CHECK per array (the worst element is reported):
 *   fp32 kernel vs float64 reference: |got - ref| <= 1e-4 |ref| + 1e-5 max|ref|
 *   finite differences vs analytic:   |fd  - an | <= 1e-5 |an|  + 1e-6 max|an|
 *   (a few checks state their own: attention dq/dk/dv use atol 1e-5 max(max|ref|, 1); the
 *   classifier losses 1e-4 relative + 1e-5 absolute; sumsq 1e-6 relative.)
 * Self-test of the checks: TEST_OPS_MUTATE=1 compares every check against a perturbed
 * reference (the largest element moved by 1e-3 relative; one bit flipped for the exact
 * checks), so that run must report 0 passed. TEST_OPS_VERBOSE=1 prints each check's worst
 * error as a fraction of its tolerance.
 * Build: make tests/bin/test_ops
 *   (g++ -x c++ -O2 -fopenmp -Wall -I. tests/test_ops.c -o tests/bin/test_ops -lopenblas -lm)
 */
#include <omp.h>
#include <time.h>
#include <stdlib.h>
#include "kernels_cpu.h"
#include "rng.h"
#include "tests/test_util.h"

#define PINNED_H0 0x0de3e17fded4dafeULL
#define PINNED_H1 0x276d124ffe337a0cULL

// ---- fixed-seed RNG: one stream of rng.h's splitmix64 --------------------------------------
static uint64_t g_seed = 0x243F6A8885A308D3ull;
static uint64_t rng_u64(void) { return splitmix64(&g_seed); }
static double rng_u01(void) { return rng_uniform01(&g_seed); }  // 53 bits, [0, 1)
static float rng_unif(double lo, double hi) { return (float)(lo + (hi - lo) * rng_u01()); }
static float rng_normal(void) {
    double u1 = rng_u01(), u2 = rng_u01();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
static int rng_int(int n) { return (int)(rng_u64() % (uint64_t)n); }

// ---- buffers ---------------------------------------------------------------------------------
static float* fnew(size_t n) { return (float*)calloc_check(n, sizeof(float)); }
static double* dnew(size_t n) { return (double*)calloc_check(n, sizeof(double)); }
static float* frandn(size_t n, float s) { float* x = fnew(n); for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(); return x; }
static float* fcopy(const float* x, size_t n) { float* y = fnew(n); memcpy(y, x, n * sizeof(float)); return y; }
static double* dfrom(const float* x, size_t n) { double* y = dnew(n); for (size_t i = 0; i < n; i++) y[i] = x[i]; return y; }
static void fill_nan(float* x, size_t n) { for (size_t i = 0; i < n; i++) x[i] = NAN; }
// The fused layouts (q|k|v, gate|up): a rows x width matrix at column `col` of a rows x ld buffer
// whose other entries are `fill`; and back out again
static float* fembed(const float* x, size_t rows, int width, int ld, int col, float fill) {
    float* b = fnew(rows * ld);
    for (size_t i = 0; i < rows * ld; i++) b[i] = fill;
    for (size_t i = 0; i < rows; i++) memcpy(b + i * ld + col, x + i * width, width * sizeof(float));
    return b;
}
static float* fextract(const float* b, size_t rows, int width, int ld, int col) {
    float* x = fnew(rows * width);
    for (size_t i = 0; i < rows; i++) memcpy(x + i * width, b + i * ld + col, width * sizeof(float));
    return x;
}
// the entries of a rows x ld buffer outside columns [col, col + width) that are no longer `fill`
static size_t count_touched(const float* b, size_t rows, int width, int ld, int col, float fill) {
    size_t n = 0;
    for (size_t i = 0; i < rows; i++)
        for (int j = 0; j < ld; j++)
            if ((j < col || j >= col + width) && b[i * ld + j] != fill) n++;
    return n;
}
static double maxabs(const double* x, size_t n) { double m = 0; for (size_t i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]); return m; }
static double dot_d(const double* a, const double* b, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }
// a distinct random subset of {0..n-1} of size r (partial Fisher-Yates)
static int* rand_subset(int n, int r) {
    int* p = (int*)malloc_check((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = 0; i < r; i++) { int j = i + rng_int(n - i); int t = p[i]; p[i] = p[j]; p[j] = t; }
    return p;
}

// ---- checks ----------------------------------------------------------------------------------
static int g_mutate = 0, g_verbose = 0;

#define K_RTOL 1e-4    // fp32 kernel vs float64 reference
#define K_AFRAC 1e-5
#define FD_RTOL 1e-5   // finite differences vs analytic float64 backward
#define FD_AFRAC 1e-6
#define FD_EPS 1e-6

// |got - ref| <= atol + rtol |ref| for every element; one CHECK, reporting the worst element
static void check_close_dd(const char* what, const double* got, const double* ref_in, size_t n, double rtol, double atol) {
    double* ref = dnew(n);
    memcpy(ref, ref_in, n * sizeof(double));
    if (g_mutate && n > 0) {  // move the largest reference element by 1e-3 relative: must trip
        size_t k = 0;
        for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > fabs(ref[k])) k = i;
        ref[k] += ref[k] != 0.0 ? 1e-3 * fabs(ref[k]) : 1e-3;
    }
    size_t bad = 0, worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
        if (!(err <= tol)) bad++;
        double ratio = err / (tol > 0 ? tol : 1e-300);
        if (!isnan(worst_ratio) && (isnan(ratio) || ratio > worst_ratio)) { worst_ratio = ratio; worst = i; }
    }
    CHECK(bad == 0, "%s: %zu of %zu elements out of tolerance; worst [%zu] got %.9g expected %.9g (atol %.3g, rtol %.3g)",
          what, bad, n, worst, n ? got[worst] : 0.0, n ? ref[worst] : 0.0, atol, rtol);
    if (g_verbose) printf("  %-58s n=%-8zu worst err/tol %.3g\n", what, n, worst_ratio);
    free(ref);
}
// fp32 kernel output vs float64 reference, with the given tolerances (atol absolute)
static void check_kernel_abs(const char* what, const float* got, const double* ref, size_t n, double rtol, double atol) {
    double* g = dfrom(got, n);
    check_close_dd(what, g, ref, n, rtol, atol);
    free(g);
}
// the standard kernel tolerance: 1e-4 relative + 1e-5 of the array's largest magnitude
static void check_kernel(const char* what, const float* got, const double* ref, size_t n) {
    check_kernel_abs(what, got, ref, n, K_RTOL, K_AFRAC * maxabs(ref, n));
}
// the same with a magnitude floor: atol = 1e-5 max(max|ref|, floor), for outputs that are
// exactly zero in the math but are fp32 sums of O(floor) terms in the kernel
static void check_kernel_floor(const char* what, const float* got, const double* ref, size_t n, double floor) {
    double s = maxabs(ref, n);
    check_kernel_abs(what, got, ref, n, K_RTOL, K_AFRAC * (s > floor ? s : floor));
}
// bit-exact equality of two float arrays
static void check_exact(const char* what, const float* got, const float* ref_in, size_t n) {
    float* ref = fcopy(ref_in, n);
    if (g_mutate && n > 0) { uint32_t u; memcpy(&u, &ref[n / 2], 4); u ^= 1u; memcpy(&ref[n / 2], &u, 4); }
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0) { if (bad == 0) first = i; bad++; }
    CHECK(bad == 0, "%s: %zu of %zu elements differ bitwise; first [%zu] got %a expected %a",
          what, bad, n, first, n ? got[first] : 0.0f, n ? ref[first] : 0.0f);
    if (g_verbose) printf("  %-58s n=%-8zu %s\n", what, n, bad ? "DIFFERS" : "bit-exact");
    free(ref);
}

// central finite differences of a float64 loss over param (sampled coordinates when n is
// large) against the analytic float64 gradient
typedef double (*loss_fn)(void* ctx);
static void check_fd(const char* what, double* param, size_t n, const double* analytic, loss_fn f, void* ctx,
                     size_t max_coords) {
    size_t m = n <= max_coords ? n : max_coords;
    double* fd = dnew(m);
    double* an = dnew(m);
    for (size_t k = 0; k < m; k++) {
        size_t i = n <= max_coords ? k : (k * 7919 + 13) % n;
        double orig = param[i];
        param[i] = orig + FD_EPS; double lp = f(ctx);
        param[i] = orig - FD_EPS; double lm = f(ctx);
        param[i] = orig;
        fd[k] = (lp - lm) / (2.0 * FD_EPS);
        an[k] = analytic[i];
    }
    char name[256];
    snprintf(name, sizeof name, "%s (finite differences)", what);
    check_close_dd(name, fd, an, m, FD_RTOL, FD_AFRAC * maxabs(analytic, n));
    free(fd); free(an);
}

// ==== embedding ===============================================================================
static void ref_embedding_forward(double* out, const int* tok, const double* wte, int N, int d) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = wte[(size_t)tok[i] * d + j];
}
struct EmbCtx { const int* tok; double* wte; const double* R; double* out; int N, d; };
static double emb_loss(void* p) {
    EmbCtx* c = (EmbCtx*)p;
    ref_embedding_forward(c->out, c->tok, c->wte, c->N, c->d);
    return dot_d(c->out, c->R, (size_t)c->N * c->d);
}

static void test_embedding(void) {
    const int V = 11, N = 40, d = 24;
    int tok[N];
    for (int i = 0; i < N; i++) tok[i] = rng_int(V - 1);  // row V-1 is never used
    tok[3] = tok[17] = tok[29] = 4;                       // and row 4 is hit at least three times
    float* wte = frandn((size_t)V * d, 1.0f);
    float* out = fnew((size_t)N * d);
    fill_nan(out, (size_t)N * d);
    cpu_embedding_forward(out, tok, wte, N, d);
    float* want = fnew((size_t)N * d);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < d; j++) want[(size_t)i * d + j] = wte[(size_t)tok[i] * d + j];
    check_exact("embedding forward == wte[tokens]", out, want, (size_t)N * d);

    // backward: dwte += scatter-add of dout; analytic float64 dwte = sum over occurrences of R
    float* R = frandn((size_t)N * d, 1.0f);
    double* Rd = dfrom(R, (size_t)N * d);
    double* gref = dnew((size_t)V * d);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < d; j++) gref[(size_t)tok[i] * d + j] += Rd[(size_t)i * d + j];
    EmbCtx c = {tok, dfrom(wte, (size_t)V * d), Rd, dnew((size_t)N * d), N, d};
    check_fd("embedding dwte analytic", c.wte, (size_t)V * d, gref, emb_loss, &c, 100000);

    float* dwte0 = frandn((size_t)V * d, 1.0f);
    float* dwte = fcopy(dwte0, (size_t)V * d);
    cpu_embedding_backward(dwte, R, tok, N, d);
    double* want1 = dnew((size_t)V * d), *want2 = dnew((size_t)V * d);
    for (int i = 0; i < V * d; i++) { want1[i] = dwte0[i] + gref[i]; want2[i] = dwte0[i] + 2.0 * gref[i]; }
    check_kernel("embedding backward accumulates (repeated tokens summed)", dwte, want1, (size_t)V * d);
    check_exact("embedding backward leaves an unused row untouched", dwte + (size_t)(V - 1) * d, dwte0 + (size_t)(V - 1) * d, d);
    cpu_embedding_backward(dwte, R, tok, N, d);
    check_kernel("embedding backward twice accumulates twice", dwte, want2, (size_t)V * d);
    free(wte); free(out); free(want); free(R); free(Rd); free(gref); free(c.wte); free(c.out);
    free(dwte0); free(dwte); free(want1); free(want2);
}

// ==== rmsnorm =================================================================================
static void ref_rmsnorm_forward(double* out, double* rstd, const double* x, const double* w, int N, int d, double eps) {
    for (int i = 0; i < N; i++) {
        double ms = 0;
        for (int j = 0; j < d; j++) ms += x[(size_t)i * d + j] * x[(size_t)i * d + j];
        double r = 1.0 / sqrt(ms / d + eps);
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = w[j] * x[(size_t)i * d + j] * r;
        if (rstd) rstd[i] = r;
    }
}
// y_j = w_j x_j r, r = (mean(x^2) + eps)^(-1/2), dr/dx_k = -r^3 x_k / d
static void ref_rmsnorm_backward(double* dx, double* dw, const double* g, const double* x, const double* w, int N, int d, double eps) {
    for (int j = 0; j < d; j++) dw[j] = 0;
    for (int i = 0; i < N; i++) {
        const double* xi = x + (size_t)i * d;
        const double* gi = g + (size_t)i * d;
        double ms = 0;
        for (int j = 0; j < d; j++) ms += xi[j] * xi[j];
        double r = 1.0 / sqrt(ms / d + eps);
        double s = 0;  // sum_j g_j w_j x_j
        for (int j = 0; j < d; j++) s += gi[j] * w[j] * xi[j];
        for (int k = 0; k < d; k++) dx[(size_t)i * d + k] = gi[k] * w[k] * r - s * r * r * r * xi[k] / d;
        for (int j = 0; j < d; j++) dw[j] += gi[j] * xi[j] * r;
    }
}
struct RmsCtx { double* x; double* w; const double* R; double* out; int N, d; double eps; };
static double rms_loss(void* p) {
    RmsCtx* c = (RmsCtx*)p;
    ref_rmsnorm_forward(c->out, NULL, c->x, c->w, c->N, c->d, c->eps);
    return dot_d(c->out, c->R, (size_t)c->N * c->d);
}

static void test_rmsnorm(void) {
    const int N = 7, d = 48;
    const float eps = 1e-5f;
    size_t n = (size_t)N * d;
    float* x = frandn(n, 1.0f);
    for (int j = 0; j < d; j++) { x[1 * d + j] *= 100.0f; x[2 * d + j] *= 1e-3f; }  // eps matters in row 2
    float* w = fnew(d);
    for (int j = 0; j < d; j++) w[j] = rng_unif(0.5, 1.5) * (j % 5 == 0 ? -1.0f : 1.0f);
    float* out = fnew(n); float* rstd = fnew(N);
    fill_nan(out, n);
    cpu_rmsnorm_forward(out, rstd, x, w, N, d, eps);
    double* xd = dfrom(x, n), *wd = dfrom(w, d), *oref = dnew(n), *rref = dnew(N);
    ref_rmsnorm_forward(oref, rref, xd, wd, N, d, eps);
    check_kernel("rmsnorm forward out", out, oref, n);
    check_kernel("rmsnorm forward rstd", rstd, rref, N);

    float* R = frandn(n, 1.0f);
    double* Rd = dfrom(R, n), *dxr = dnew(n), *dwr = dnew(d);
    ref_rmsnorm_backward(dxr, dwr, Rd, xd, wd, N, d, eps);
    RmsCtx c = {xd, wd, Rd, dnew(n), N, d, eps};
    check_fd("rmsnorm dx analytic", xd, n, dxr, rms_loss, &c, 100000);
    check_fd("rmsnorm dw analytic", wd, d, dwr, rms_loss, &c, 100000);

    float* dx0 = frandn(n, 1.0f), *dw0 = frandn(d, 1.0f);
    float* dx = fcopy(dx0, n), *dw = fcopy(dw0, d);
    cpu_rmsnorm_backward(dx, dw, R, x, w, rstd, N, d);
    double* wantx = dnew(n), *wantw = dnew(d);
    for (size_t i = 0; i < n; i++) wantx[i] = dx0[i] + dxr[i];
    for (int j = 0; j < d; j++) wantw[j] = dw0[j] + dwr[j];
    check_kernel("rmsnorm backward dinp accumulates", dx, wantx, n);
    check_kernel("rmsnorm backward dw accumulates", dw, wantw, d);
    float* dx2 = fcopy(dx0, n);
    cpu_rmsnorm_backward(dx2, NULL, R, x, w, rstd, N, d);
    check_kernel("rmsnorm backward dinp with dw NULL", dx2, wantx, n);
    free(x); free(w); free(out); free(rstd); free(xd); free(wd); free(oref); free(rref); free(R); free(Rd);
    free(dxr); free(dwr); free(c.out); free(dx0); free(dw0); free(dx); free(dw); free(wantx); free(wantw); free(dx2);
}

// ==== rope ====================================================================================
// HF rotate-half: angle = t theta^(-2i/hd); out[i] = x[i] c - x[i+h] s, out[i+h] = x[i+h] c + x[i] s
static void ref_rope_forward(double* out, const double* x, int B, int T, int nh, int hd, double theta) {
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                size_t o = (((size_t)b * T + t) * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    double a = t * pow(theta, -2.0 * i / hd), c = cos(a), s = sin(a);
                    out[o + i] = x[o + i] * c - x[o + i + half] * s;
                    out[o + i + half] = x[o + i + half] * c + x[o + i] * s;
                }
            }
}
// the transpose of each 2x2 rotation
static void ref_rope_backward(double* dx, const double* g, int B, int T, int nh, int hd, double theta) {
    int half = hd / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                size_t o = (((size_t)b * T + t) * nh + h) * hd;
                for (int i = 0; i < half; i++) {
                    double a = t * pow(theta, -2.0 * i / hd), c = cos(a), s = sin(a);
                    dx[o + i] = g[o + i] * c + g[o + i + half] * s;
                    dx[o + i + half] = -g[o + i] * s + g[o + i + half] * c;
                }
            }
}
struct RopeCtx { double* x; const double* R; double* out; int B, T, nh, hd; double theta; };
static double rope_loss(void* p) {
    RopeCtx* c = (RopeCtx*)p;
    ref_rope_forward(c->out, c->x, c->B, c->T, c->nh, c->hd, c->theta);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->nh * c->hd);
}

static void test_rope_case(int B, int T, int nh, int hd, double theta) {
    char name[200];
    int half = hd / 2, maxT = T + 3;  // the tables may hold more positions than T
    float* ct = fnew((size_t)maxT * half), *st = fnew((size_t)maxT * half);
    for (int t = 0; t < maxT; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)t * pow(theta, -2.0 * i / hd);
            ct[(size_t)t * half + i] = (float)cos(a);
            st[(size_t)t * half + i] = (float)sin(a);
        }
    size_t n = (size_t)B * T * nh * hd;
    float* x = frandn(n, 1.0f);
    double* xd = dfrom(x, n), *oref = dnew(n);
    ref_rope_forward(oref, xd, B, T, nh, hd, theta);
    float* y = fcopy(x, n);
    cpu_rope_forward(y, nh * hd, ct, st, B, T, nh, hd);
    snprintf(name, sizeof name, "rope forward B=%d T=%d nh=%d hd=%d theta=%g", B, T, nh, hd, theta);
    check_kernel(name, y, oref, n);
    {   // the fused qkv layout: the heads at column hd of rows ld = (nh + 3) hd apart; nothing else written
        int w = nh * hd, ld = w + 3 * hd;
        size_t rows = (size_t)B * T;
        float* buf = fembed(x, rows, w, ld, hd, 7.0f);
        cpu_rope_forward(buf + hd, ld, ct, st, B, T, nh, hd);
        float* ys = fextract(buf, rows, w, ld, hd);
        snprintf(name, sizeof name, "rope forward, rows ld=%d apart, B=%d T=%d nh=%d hd=%d", ld, B, T, nh, hd);
        check_kernel(name, ys, oref, n);
        CHECK(count_touched(buf, rows, w, ld, hd, 7.0f) == 0, "rope forward with ld=%d writes only its own columns", ld);
        free(buf); free(ys);
    }

    float* R = frandn(n, 1.0f);
    double* Rd = dfrom(R, n), *dref = dnew(n);
    ref_rope_backward(dref, Rd, B, T, nh, hd, theta);
    RopeCtx c = {xd, Rd, dnew(n), B, T, nh, hd, theta};
    snprintf(name, sizeof name, "rope dx analytic B=%d T=%d nh=%d hd=%d", B, T, nh, hd);
    check_fd(name, xd, n, dref, rope_loss, &c, 600);
    float* g = fcopy(R, n);
    cpu_rope_backward(g, nh * hd, ct, st, B, T, nh, hd);
    snprintf(name, sizeof name, "rope backward B=%d T=%d nh=%d hd=%d", B, T, nh, hd);
    check_kernel(name, g, dref, n);
    free(ct); free(st); free(x); free(xd); free(oref); free(y); free(R); free(Rd); free(dref); free(c.out); free(g);
}

// ==== attention ===============================================================================
static void ref_attention_forward(double* out, double* lse, const double* q, const double* k, const double* v,
                                  int B, int T, int nh, int nkv, int hd) {
    double scale = 1.0 / sqrt((double)hd);
    double* p = dnew(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int hk = h / (nh / nkv);
            for (int t = 0; t < T; t++) {
                const double* qv = q + (((size_t)b * T + t) * nh + h) * hd;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const double* kv = k + (((size_t)b * T + s) * nkv + hk) * hd;
                    double sc = 0;
                    for (int i = 0; i < hd; i++) sc += qv[i] * kv[i];
                    p[s] = sc * scale;
                    if (p[s] > mx) mx = p[s];
                }
                double sum = 0;
                for (int s = 0; s <= t; s++) sum += exp(p[s] - mx);
                double L = mx + log(sum);
                double* o = out + (((size_t)b * T + t) * nh + h) * hd;
                for (int i = 0; i < hd; i++) o[i] = 0;
                for (int s = 0; s <= t; s++) {
                    const double* vv = v + (((size_t)b * T + s) * nkv + hk) * hd;
                    double ps = exp(p[s] - L);
                    for (int i = 0; i < hd; i++) o[i] += ps * vv[i];
                }
                if (lse) lse[((size_t)b * nh + h) * T + t] = L;
            }
        }
    free(p);
}
// S = scale q k^T, P = softmax(S), O = P V: dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(P dP)),
// dQ = scale dS K, dK = scale dS^T Q; kv heads sum over their group of q heads
static void ref_attention_backward(double* dq, double* dk, double* dv, const double* dout, const double* q,
                                   const double* k, const double* v, int B, int T, int nh, int nkv, int hd) {
    double scale = 1.0 / sqrt((double)hd);
    memset(dq, 0, (size_t)B * T * nh * hd * sizeof(double));
    memset(dk, 0, (size_t)B * T * nkv * hd * sizeof(double));
    memset(dv, 0, (size_t)B * T * nkv * hd * sizeof(double));
    double* p = dnew(T), *dp = dnew(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int hk = h / (nh / nkv);
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)b * T + t) * nh + h;
                const double* qv = q + row * hd, *go = dout + row * hd;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const double* kv = k + (((size_t)b * T + s) * nkv + hk) * hd;
                    double sc = 0;
                    for (int i = 0; i < hd; i++) sc += qv[i] * kv[i];
                    p[s] = sc * scale;
                    if (p[s] > mx) mx = p[s];
                }
                double sum = 0;
                for (int s = 0; s <= t; s++) { p[s] = exp(p[s] - mx); sum += p[s]; }
                double D = 0;
                for (int s = 0; s <= t; s++) {
                    p[s] /= sum;
                    const double* vv = v + (((size_t)b * T + s) * nkv + hk) * hd;
                    dp[s] = 0;
                    for (int i = 0; i < hd; i++) dp[s] += go[i] * vv[i];
                    D += p[s] * dp[s];
                }
                for (int s = 0; s <= t; s++) {
                    size_t kvrow = ((size_t)b * T + s) * nkv + hk;
                    double ds = p[s] * (dp[s] - D);
                    for (int i = 0; i < hd; i++) {
                        dq[row * hd + i] += scale * ds * k[kvrow * hd + i];
                        dk[kvrow * hd + i] += scale * ds * qv[i];
                        dv[kvrow * hd + i] += p[s] * go[i];
                    }
                }
            }
        }
    free(p); free(dp);
}
struct AttnCtx { double* q; double* k; double* v; const double* R; double* out; int B, T, nh, nkv, hd; };
static double attn_loss(void* p) {
    AttnCtx* c = (AttnCtx*)p;
    ref_attention_forward(c->out, NULL, c->q, c->k, c->v, c->B, c->T, c->nh, c->nkv, c->hd);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->nh * c->hd);
}

static void test_attention_case(int B, int T, int nh, int nkv, int hd) {
    char tag[100], name[200];
    snprintf(tag, sizeof tag, "B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh, nkv, hd);
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd, nl = (size_t)B * nh * T;
    float* q = frandn(nq, 1.5f), *k = frandn(nk, 1.0f), *v = frandn(nk, 1.0f);
    float* out = fnew(nq), *lse = fnew(nl);
    fill_nan(out, nq); fill_nan(lse, nl);
    cpu_attention_forward(out, lse, q, k, v, nh * hd, nkv * hd, B, T, nh, nkv, hd);
    double* qd = dfrom(q, nq), *kd = dfrom(k, nk), *vd = dfrom(v, nk), *oref = dnew(nq), *lref = dnew(nl);
    ref_attention_forward(oref, lref, qd, kd, vd, B, T, nh, nkv, hd);
    snprintf(name, sizeof name, "attention forward out %s", tag); check_kernel(name, out, oref, nq);
    snprintf(name, sizeof name, "attention forward lse %s", tag); check_kernel(name, lse, lref, nl);

    float* R = frandn(nq, 1.0f);
    double* Rd = dfrom(R, nq), *dqr = dnew(nq), *dkr = dnew(nk), *dvr = dnew(nk);
    ref_attention_backward(dqr, dkr, dvr, Rd, qd, kd, vd, B, T, nh, nkv, hd);
    AttnCtx c = {qd, kd, vd, Rd, dnew(nq), B, T, nh, nkv, hd};
    snprintf(name, sizeof name, "attention dq analytic %s", tag); check_fd(name, qd, nq, dqr, attn_loss, &c, 500);
    snprintf(name, sizeof name, "attention dk analytic %s", tag); check_fd(name, kd, nk, dkr, attn_loss, &c, 500);
    snprintf(name, sizeof name, "attention dv analytic %s", tag); check_fd(name, vd, nk, dvr, attn_loss, &c, 500);

    float* dq = fnew(nq), *dk = fnew(nk), *dv = fnew(nk);  // NaN: the backward must write, not accumulate
    fill_nan(dq, nq); fill_nan(dk, nk); fill_nan(dv, nk);
    cpu_attention_backward(dq, dk, dv, R, out, q, k, v, nh * hd, nkv * hd, lse, B, T, nh, nkv, hd);
    // floor 1 (q, k, v, dout are unit-scale): with T = 1, dq = dk = 0 exactly, while the kernel's
    // p (dp - D), D = dout . out, leaves fp32 rounding noise of ~1e-8
    snprintf(name, sizeof name, "attention backward dq %s", tag); check_kernel_floor(name, dq, dqr, nq, 1.0);
    snprintf(name, sizeof name, "attention backward dk %s", tag); check_kernel_floor(name, dk, dkr, nk, 1.0);
    snprintf(name, sizeof name, "attention backward dv %s", tag); check_kernel_floor(name, dv, dvr, nk, 1.0);
    {   // the model's layout: q, k, v side by side in one buffer (rows ld = (nh + 2 nkv) hd apart),
        // dq, dk, dv written into one such buffer (over NaN) and nothing else of it touched
        int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
        size_t rows = (size_t)B * T;
        float* qkv = fembed(q, rows, qd, ld, 0, 0.0f);
        for (size_t i = 0; i < rows; i++) {
            memcpy(qkv + i * ld + qd, k + i * kvd, kvd * sizeof(float));
            memcpy(qkv + i * ld + qd + kvd, v + i * kvd, kvd * sizeof(float));
        }
        float* outs = fnew(nq), *lses = fnew(nl), *dqkv = fnew(rows * ld);
        fill_nan(outs, nq); fill_nan(lses, nl); fill_nan(dqkv, rows * ld);
        cpu_attention_forward(outs, lses, qkv, qkv + qd, qkv + qd + kvd, ld, ld, B, T, nh, nkv, hd);
        snprintf(name, sizeof name, "attention forward out, fused qkv (ld=%d) %s", ld, tag); check_kernel(name, outs, oref, nq);
        snprintf(name, sizeof name, "attention forward lse, fused qkv %s", tag); check_kernel(name, lses, lref, nl);
        cpu_attention_backward(dqkv, dqkv + qd, dqkv + qd + kvd, R, outs, qkv, qkv + qd, qkv + qd + kvd, ld, ld, lses, B, T, nh, nkv, hd);
        float* e[3] = {fextract(dqkv, rows, qd, ld, 0), fextract(dqkv, rows, kvd, ld, qd), fextract(dqkv, rows, kvd, ld, qd + kvd)};
        snprintf(name, sizeof name, "attention backward dq, fused qkv %s", tag); check_kernel_floor(name, e[0], dqr, nq, 1.0);
        snprintf(name, sizeof name, "attention backward dk, fused qkv %s", tag); check_kernel_floor(name, e[1], dkr, nk, 1.0);
        snprintf(name, sizeof name, "attention backward dv, fused qkv %s", tag); check_kernel_floor(name, e[2], dvr, nk, 1.0);
        free(qkv); free(outs); free(lses); free(dqkv); free(e[0]); free(e[1]); free(e[2]);
    }
    free(q); free(k); free(v); free(out); free(lse); free(qd); free(kd); free(vd); free(oref); free(lref);
    free(R); free(Rd); free(dqr); free(dkr); free(dvr); free(c.out); free(dq); free(dk); free(dv);
}

// ==== swiglu ==================================================================================
static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
struct SwiCtx { double* g; double* u; const double* R; size_t n; };
static double swi_loss(void* p) {
    SwiCtx* c = (SwiCtx*)p;
    double L = 0;
    for (size_t i = 0; i < c->n; i++) L += c->g[i] * ref_sigmoid(c->g[i]) * c->u[i] * c->R[i];
    return L;
}
// gate and up as the model holds them: one N x 2f buffer, each row's gate then its up
static void test_swiglu(void) {
    const int N = 40, f = 50;
    const size_t n = (size_t)N * f;
    float* g = frandn(n, 3.0f), *u = frandn(n, 1.0f);
    g[0] = 20.0f; g[1] = -20.0f; g[2] = 90.0f; g[3] = -90.0f; g[4] = 0.0f;  // saturated / overflowing exp
    float* gu = fembed(g, N, f, 2 * f, 0, 0.0f);
    for (int i = 0; i < N; i++) memcpy(gu + (size_t)i * 2 * f + f, u + (size_t)i * f, f * sizeof(float));
    double* gd = dfrom(g, n), *ud = dfrom(u, n), *href = dnew(n);
    for (size_t i = 0; i < n; i++) href[i] = gd[i] * ref_sigmoid(gd[i]) * ud[i];
    float* h = fnew(n);
    fill_nan(h, n);
    cpu_swiglu_forward(h, gu, N, f);
    check_kernel("swiglu forward", h, href, n);

    float* R = frandn(n, 1.0f);
    double* Rd = dfrom(R, n), *dgr = dnew(n), *dur = dnew(n);
    for (size_t i = 0; i < n; i++) {
        double s = ref_sigmoid(gd[i]);
        dgr[i] = Rd[i] * ud[i] * (s + gd[i] * s * (1.0 - s));  // d/dg g s(g) = s + g s (1 - s)
        dur[i] = Rd[i] * gd[i] * s;
    }
    SwiCtx c = {gd, ud, Rd, n};
    check_fd("swiglu dgate analytic", gd, n, dgr, swi_loss, &c, 100000);
    check_fd("swiglu dup analytic", ud, n, dur, swi_loss, &c, 100000);
    float* dgu = fnew(2 * n);
    fill_nan(dgu, 2 * n);
    cpu_swiglu_backward(dgu, R, gu, N, f);
    float* dg = fextract(dgu, N, f, 2 * f, 0), *du = fextract(dgu, N, f, 2 * f, f);
    check_kernel("swiglu backward dgate", dg, dgr, n);
    check_kernel("swiglu backward dup", du, dur, n);
    free(g); free(u); free(gu); free(gd); free(ud); free(href); free(h); free(R); free(Rd); free(dgr); free(dur); free(dgu);
    free(dg); free(du);
}

// ==== matmul ==================================================================================
static void ref_matmul(double* Y, const double* X, const double* W, int N, int in, int outd) {  // Y = X W^T
    for (int i = 0; i < N; i++)
        for (int o = 0; o < outd; o++) {
            double s = 0;
            for (int c = 0; c < in; c++) s += X[(size_t)i * in + c] * W[(size_t)o * in + c];
            Y[(size_t)i * outd + o] = s;
        }
}
struct MmCtx { double* X; double* W; const double* R; double* Y; int N, in, outd; };
static double mm_loss(void* p) {
    MmCtx* c = (MmCtx*)p;
    ref_matmul(c->Y, c->X, c->W, c->N, c->in, c->outd);
    return dot_d(c->Y, c->R, (size_t)c->N * c->outd);
}
static void test_matmul_case(int N, int in, int outd) {
    char tag[80], name[200];
    snprintf(tag, sizeof tag, "N=%d in=%d out=%d", N, in, outd);
    size_t nx = (size_t)N * in, nw = (size_t)outd * in, ny = (size_t)N * outd;
    float* X = frandn(nx, 1.0f), *W = frandn(nw, 1.0f), *R = frandn(ny, 1.0f);
    double* Xd = dfrom(X, nx), *Wd = dfrom(W, nw), *Rd = dfrom(R, ny), *Yr = dnew(ny);
    ref_matmul(Yr, Xd, Wd, N, in, outd);
    float* Y = fnew(ny);
    fill_nan(Y, ny);
    cpu_matmul_forward(Y, X, in, W, N, in, outd);
    snprintf(name, sizeof name, "matmul forward %s", tag); check_kernel(name, Y, Yr, ny);
    {   // X a column block of a wider buffer (the norm pass's sketch of a fused gradient)
        float* Xs = fembed(X, N, in, in + 5, 3, NAN), *Ys = fnew(ny);
        cpu_matmul_forward(Ys, Xs + 3, in + 5, W, N, in, outd);
        snprintf(name, sizeof name, "matmul forward, X rows %d apart %s", in + 5, tag); check_kernel(name, Ys, Yr, ny);
        free(Xs); free(Ys);
    }

    // analytic: dX = R W (N x in), dW = R^T X (out x in)
    double* dXr = dnew(nx), *dWr = dnew(nw);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < in; c++) {
            double s = 0;
            for (int o = 0; o < outd; o++) s += Rd[(size_t)i * outd + o] * Wd[(size_t)o * in + c];
            dXr[(size_t)i * in + c] = s;
        }
    for (int o = 0; o < outd; o++)
        for (int c = 0; c < in; c++) {
            double s = 0;
            for (int i = 0; i < N; i++) s += Rd[(size_t)i * outd + o] * Xd[(size_t)i * in + c];
            dWr[(size_t)o * in + c] = s;
        }
    MmCtx c = {Xd, Wd, Rd, dnew(ny), N, in, outd};
    snprintf(name, sizeof name, "matmul dX analytic %s", tag); check_fd(name, Xd, nx, dXr, mm_loss, &c, 300);
    snprintf(name, sizeof name, "matmul dW analytic %s", tag); check_fd(name, Wd, nw, dWr, mm_loss, &c, 300);

    float* dX = fnew(nx), *dW = fnew(nw);
    fill_nan(dX, nx); fill_nan(dW, nw);
    cpu_matmul_backward_input(dX, R, W, N, in, outd, 0);
    cpu_matmul_backward_weight(dW, R, outd, X, N, in, outd, 0);
    snprintf(name, sizeof name, "matmul backward_input accumulate=0 (over NaN) %s", tag); check_kernel(name, dX, dXr, nx);
    snprintf(name, sizeof name, "matmul backward_weight accumulate=0 (over NaN) %s", tag); check_kernel(name, dW, dWr, nw);

    float* dX0 = frandn(nx, 1.0f), *dW0 = frandn(nw, 1.0f);
    float* dXa = fcopy(dX0, nx), *dWa = fcopy(dW0, nw);
    cpu_matmul_backward_input(dXa, R, W, N, in, outd, 1);
    cpu_matmul_backward_weight(dWa, R, outd, X, N, in, outd, 1);
    double* wx = dnew(nx), *ww = dnew(nw);
    for (size_t i = 0; i < nx; i++) wx[i] = dX0[i] + dXr[i];
    for (size_t i = 0; i < nw; i++) ww[i] = dW0[i] + dWr[i];
    snprintf(name, sizeof name, "matmul backward_input accumulate=1 %s", tag); check_kernel(name, dXa, wx, nx);
    snprintf(name, sizeof name, "matmul backward_weight accumulate=1 %s", tag); check_kernel(name, dWa, ww, nw);
    {   // dY a column block of a fused GEMM's gradient (rows outd + 7 apart, NaN around it)
        float* Rs = fembed(R, N, outd, outd + 7, 4, NAN), *dWs = fnew(nw);
        fill_nan(dWs, nw);
        cpu_matmul_backward_weight(dWs, Rs + 4, outd + 7, X, N, in, outd, 0);
        snprintf(name, sizeof name, "matmul backward_weight, dY rows %d apart %s", outd + 7, tag); check_kernel(name, dWs, dWr, nw);
        free(Rs); free(dWs);
    }
    free(X); free(W); free(R); free(Xd); free(Wd); free(Rd); free(Yr); free(Y); free(dXr); free(dWr); free(c.Y);
    free(dX); free(dW); free(dX0); free(dW0); free(dXa); free(dWa); free(wx); free(ww);
}

// ==== classifier ==============================================================================
static double ref_row_lse(const double* z, int V) {
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < V; j++) if (z[j] > mx) mx = z[j];
    for (int j = 0; j < V; j++) s += exp(z[j] - mx);
    return mx + log(s);
}
struct ClsCtx { double* z; const int* tgt; int N, V; double dloss; };
static double cls_loss(void* p) {  // L = sum_i dloss * loss_i
    ClsCtx* c = (ClsCtx*)p;
    double L = 0;
    for (int i = 0; i < c->N; i++) {
        const double* z = c->z + (size_t)i * c->V;
        L += c->dloss * (ref_row_lse(z, c->V) - z[c->tgt[i]]);
    }
    return L;
}
// rows 0-2 ordinary; 3 mixed +-80; 4 all +80 but the target -80 (loss ~ 160 + log(V-1));
// 5 all -80 but the target +80 (loss ~ 0); 6 uniform in +-1000
static void test_classifier_case(int V) {
    const int N = 7;
    char name[200];
    size_t n = (size_t)N * V;
    float* z = fnew(n);
    int tgt[N];
    for (int i = 0; i < N; i++) tgt[i] = rng_int(V);
    for (int i = 0; i < 3; i++) for (int j = 0; j < V; j++) z[(size_t)i * V + j] = 2.0f * rng_normal();
    for (int j = 0; j < V; j++) z[3 * (size_t)V + j] = rng_normal() + (rng_int(2) ? 80.0f : -80.0f);
    for (int j = 0; j < V; j++) z[4 * (size_t)V + j] = 80.0f;
    z[4 * (size_t)V + tgt[4]] = -80.0f;
    for (int j = 0; j < V; j++) z[5 * (size_t)V + j] = -80.0f;
    z[5 * (size_t)V + tgt[5]] = 80.0f;
    for (int j = 0; j < V; j++) z[6 * (size_t)V + j] = rng_unif(-1000.0, 1000.0);
    const float dloss = 1.0f / N;

    double* zd = dfrom(z, n), *lref = dnew(N), *gref = dnew(n);
    for (int i = 0; i < N; i++) {
        const double* zi = zd + (size_t)i * V;
        double L = ref_row_lse(zi, V);
        lref[i] = L - zi[tgt[i]];
        for (int j = 0; j < V; j++) gref[(size_t)i * V + j] = (exp(zi[j] - L) - (j == tgt[i] ? 1.0 : 0.0)) * (double)dloss;
    }
    ClsCtx c = {zd, tgt, N, V, (double)dloss};
    snprintf(name, sizeof name, "classifier dlogits analytic V=%d", V);
    check_fd(name, zd, n, gref, cls_loss, &c, 400);

    // losses: up to ~2000 for the +-1000 row; 1e-4 relative + 1e-5 absolute
    float* z0 = fcopy(z, n), *loss0 = fnew(N);
    fill_nan(loss0, N);
    cpu_classifier_forward_backward(z0, loss0, tgt, N, V, dloss, 0);
    snprintf(name, sizeof name, "classifier losses (want_grad=0) V=%d", V);
    check_kernel_abs(name, loss0, lref, N, 1e-4, 1e-5);
    snprintf(name, sizeof name, "classifier want_grad=0 leaves the logits intact V=%d", V);
    check_exact(name, z0, z, n);

    float* z1 = fcopy(z, n), *loss1 = fnew(N);
    fill_nan(loss1, N);
    cpu_classifier_forward_backward(z1, loss1, tgt, N, V, dloss, 1);
    snprintf(name, sizeof name, "classifier losses (want_grad=1) V=%d", V);
    check_kernel_abs(name, loss1, lref, N, 1e-4, 1e-5);
    snprintf(name, sizeof name, "classifier dlogits = (softmax - onehot) * dloss V=%d", V);
    check_kernel(name, z1, gref, n);
    free(z); free(zd); free(lref); free(gref); free(z0); free(loss0); free(z1); free(loss1);
}

// ==== grass gathered gradient and gradient norms ==============================================
static double* ref_dense_grad(const float* dY, const float* X, int N, int in, int outd) {  // G = dY^T X
    double* G = dnew((size_t)outd * in);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < outd; o++) {
            double a = dY[(size_t)i * outd + o];
            const float* x = X + (size_t)i * in;
            double* g = G + (size_t)o * in;
            for (int c = 0; c < in; c++) g[c] += a * x[c];
        }
    return G;
}
static void test_gathered_grad(void) {
    const int N = 11, in = 19, outd = 23, r = 5;
    char name[200];
    float* dY = frandn((size_t)N * outd, 1.0f), *X = frandn((size_t)N * in, 1.0f);
    double* G = ref_dense_grad(dY, X, N, in, outd);
    for (int cols = 0; cols <= 1; cols++) {
        int m = cols ? in : outd;
        int* idx = rand_subset(m, r);
        float* sc = fnew(r);
        for (int j = 0; j < r; j++) sc[j] = rng_unif(0.5, 2.0);
        size_t nc = cols ? (size_t)outd * r : (size_t)r * in;
        double* Cr = dnew(nc);
        if (!cols) { for (int j = 0; j < r; j++) for (int c = 0; c < in; c++) Cr[(size_t)j * in + c] = sc[j] * G[(size_t)idx[j] * in + c]; }
        else { for (int o = 0; o < outd; o++) for (int j = 0; j < r; j++) Cr[(size_t)o * r + j] = G[(size_t)o * in + idx[j]] * sc[j]; }
        float* C = fnew(nc);
        fill_nan(C, nc);
        cpu_grass_gathered_grad(C, dY, outd, X, idx, sc, r, N, in, outd, cols, 0);
        snprintf(name, sizeof name, "grass_gathered_grad %s side accumulate=0 (over NaN)", cols ? "cols" : "rows");
        check_kernel(name, C, Cr, nc);
        float* C0 = frandn(nc, 3.0f), *Ca = fcopy(C0, nc);
        cpu_grass_gathered_grad(Ca, dY, outd, X, idx, sc, r, N, in, outd, cols, 1);
        double* want = dnew(nc);
        for (size_t i = 0; i < nc; i++) want[i] = C0[i] + Cr[i];
        snprintf(name, sizeof name, "grass_gathered_grad %s side accumulate=1", cols ? "cols" : "rows");
        check_kernel(name, Ca, want, nc);
        {   // dY a column block of a fused gradient: rows outd + 9 apart, NaN around it
            float* dYs = fembed(dY, N, outd, outd + 9, 6, NAN), *Cs = fnew(nc);
            fill_nan(Cs, nc);
            cpu_grass_gathered_grad(Cs, dYs + 6, outd + 9, X, idx, sc, r, N, in, outd, cols, 0);
            snprintf(name, sizeof name, "grass_gathered_grad %s side, dY rows %d apart", cols ? "cols" : "rows", outd + 9);
            check_kernel(name, Cs, Cr, nc);
            free(dYs); free(Cs);
        }
        free(idx); free(sc); free(Cr); free(C); free(C0); free(Ca); free(want);
    }
    free(dY); free(X); free(G);
}
static void test_grad_norms_case(int N, int in, int outd, int cols) {
    char name[200];
    float* dY = frandn((size_t)N * outd, 1.0f), *X = frandn((size_t)N * in, 1.0f);
    double* G = ref_dense_grad(dY, X, N, in, outd);
    int len = cols ? in : outd;
    double* nr = dnew(len);
    for (int o = 0; o < outd; o++)
        for (int c = 0; c < in; c++) nr[cols ? c : o] += G[(size_t)o * in + c] * G[(size_t)o * in + c];
    double mean = 0;
    for (int i = 0; i < len; i++) mean += nr[i] / len;
    // prefill of the same size as the norms, so that a '=' in place of '+=' is visible
    float* nk = fnew(len);
    for (int i = 0; i < len; i++) nk[i] = rng_unif(0.5, 1.5) * (float)mean;
    double* want = dfrom(nk, len);
    for (int i = 0; i < len; i++) want[i] += nr[i];
    float* nks = fcopy(nk, len);
    cpu_grass_grad_norms(nk, dY, outd, X, N, in, outd, cols);
    snprintf(name, sizeof name, "grass_grad_norms %s side N=%d in=%d out=%d (accumulating)", cols ? "cols" : "rows", N, in, outd);
    check_kernel(name, nk, want, len);
    float* dYs = fembed(dY, N, outd, outd + 3, 2, NAN);  // dY a column block of a fused gradient
    cpu_grass_grad_norms(nks, dYs + 2, outd + 3, X, N, in, outd, cols);
    snprintf(name, sizeof name, "grass_grad_norms %s side, dY rows %d apart", cols ? "cols" : "rows", outd + 3);
    check_kernel(name, nks, want, len);
    free(nks); free(dYs);
    free(dY); free(X); free(G); free(nr); free(nk); free(want);
}

// ==== bf16 optimizer states =====================================================================
// the float64 reference of bf16 storage: the nearest value with 8 significant bits (bf16
// subnormals: a multiple of 2^-133), ties to even (rint), overflow to infinity
static double ref_bf16(double x) {
    if (isnan(x) || isinf(x) || x == 0.0) return x;
    int e;
    frexp(x, &e);                       // |x| = f 2^e, f in [0.5, 1)
    double q = ldexp(1.0, e - 8);       // the spacing of 8 significant bits
    if (q < ldexp(1.0, -133)) q = ldexp(1.0, -133);
    double y = rint(x / q) * q;
    return fabs(y) > FLT_MAX ? copysign(INFINITY, y) : y;
}
// moments stored as bf16: exactly representable, and within one bf16 step (2^-8 relative) of
// the float64 reference, which rounds its own moments the same way
static void check_bf16_states(const char* what, const void* s, const double* ref, size_t n) {
    size_t bad = 0, worst_i = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        float x = cpu_state_get(s, i, 1);
        double tol = ldexp(fabs(ref[i]), -8) + 1e-30;
        double err = fabs((double)x - ref[i]);
        if (err > tol || (double)x != ref_bf16(x)) bad++;
        if (err / tol > worst) { worst = err / tol; worst_i = i; }
    }
    CHECK(bad == 0, "%s: %zu of %zu bf16 moments off by more than one bf16 step (worst [%zu]: %.3g steps)", what, bad, n,
          worst_i, worst);
}

static void test_bf16_rounding(void) {
    const size_t n = 200000;
    size_t bad = 0, first = 0;
    float fx = 0, fgot = 0;
    for (size_t i = 0; i < n; i++) {
        float x;
        if (i < 16) {  // halfway cases: 1 + k 2^-8 for k odd lies between two bf16 values
            x = (float)(1.0 + (double)(2 * (int)i + 1) * ldexp(1.0, -8)) * (i % 2 ? -1.0f : 1.0f);
        } else if (i < 32) {
            x = (float)ldexp(1.0 + rng_u01(), -126 - (int)(i % 20));  // subnormals
        } else {
            x = (float)(rng_normal() * ldexp(1.0, rng_int(120) - 60));
        }
        float got = bf16_to_float(bf16_from_float(x));
        if ((double)got != ref_bf16(x)) { if (bad == 0) { first = i; fx = x; fgot = got; } bad++; }
    }
    CHECK(bad == 0, "bf16 rounding: %zu of %zu values differ from round-to-nearest-even; first [%zu] %a -> %a (want %a)",
          bad, n, first, fx, fgot, ref_bf16(fx));
    CHECK(bf16_from_float(1.0f) == 0x3F80 && bf16_from_float(-2.0f) == 0xC000, "bf16 bits of 1 and -2");
    CHECK(bf16_from_float(1.0f + 0x1p-8f) == 0x3F80 && bf16_from_float(1.0f + 0x3p-8f) == 0x3F82,
          "bf16 ties go to even (1 + 2^-8 -> 1, 1 + 3 2^-8 -> 1 + 2^-6)");
    CHECK(isinf(bf16_to_float(bf16_from_float(FLT_MAX))) && isinf(bf16_to_float(bf16_from_float(-INFINITY))),
          "bf16: FLT_MAX rounds to infinity, infinity stays");
    CHECK(isnan(bf16_to_float(bf16_from_float(NAN))), "bf16: NaN stays NaN");
}

// ==== grass adam update =======================================================================
static void test_grass_adam_case(int cols, float wd, int bf16) {
    const int outd = 9, in = 7, r = 4, steps = 3;
    const float lr = 0.05f, alpha = 1.5f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gs = 0.5f;
    char tag[80], name[200];
    snprintf(tag, sizeof tag, "%s side wd=%g%s", cols ? "cols" : "rows", wd, bf16 ? " bf16 states" : "");
    int m = cols ? in : outd;
    int* idx = rand_subset(m, r);
    float* up = fnew(r);
    for (int j = 0; j < r; j++) up[j] = rng_unif(0.5, 3.0);
    size_t nw = (size_t)outd * in, nc = cols ? (size_t)outd * r : (size_t)r * in;
    float* W0 = frandn(nw, 1.0f), *W = fcopy(W0, nw);
    void* mk = calloc_check(nc, bf16 ? 2 : 4), *vk = calloc_check(nc, bf16 ? 2 : 4);
    double* Wr = dfrom(W0, nw), *mr = dnew(nc), *vr = dnew(nc);
    for (int t = 1; t <= steps; t++) {
        float* C = frandn(nc, 2.0f);
        float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
        AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, gs};
        cpu_grass_adam_update(W, NULL, C, mk, vk, bf16, idx, up, r, outd, in, cols, ap, alpha);
        if (wd > 0) for (size_t i = 0; i < nw; i++) Wr[i] *= 1.0 - (double)lr * wd;
        for (size_t k = 0; k < nc; k++) {
            double g = (double)C[k] * gs;
            double mn = b1 * mr[k] + (1.0 - b1) * g, vn = b2 * vr[k] + (1.0 - b2) * g * g;
            double u = (mn / bc1) / (sqrt(vn / bc2) + eps);  // from the moments before storage
            mr[k] = bf16 ? ref_bf16(mn) : mn;
            vr[k] = bf16 ? ref_bf16(vn) : vn;
            int j = cols ? (int)(k % r) : (int)(k / in);
            size_t wi = cols ? (k / r) * in + idx[j] : (size_t)idx[j] * in + (k % in);
            Wr[wi] -= (double)lr * alpha * up[j] * u;
        }
        free(C);
    }
    double* dk = dnew(nw), *dr = dnew(nw);
    for (size_t i = 0; i < nw; i++) { dk[i] = (double)W[i] - W0[i]; dr[i] = Wr[i] - W0[i]; }
    snprintf(name, sizeof name, "grass_adam_update W - W0 %s", tag);
    if (!bf16) {
        snprintf(name, sizeof name, "grass_adam_update W %s", tag); check_kernel(name, W, Wr, nw);
        snprintf(name, sizeof name, "grass_adam_update W - W0 %s", tag);
        check_close_dd(name, dk, dr, nw, K_RTOL, K_AFRAC * maxabs(dr, nw) + 3e-7);  // + rounding of W ~ 1
        snprintf(name, sizeof name, "grass_adam_update m %s", tag); check_kernel(name, (float*)mk, mr, nc);
        snprintf(name, sizeof name, "grass_adam_update v %s", tag); check_kernel(name, (float*)vk, vr, nc);
    } else {  // a moment a bf16 step away from the reference's moves the update by ~2^-9 relative
        check_close_dd(name, dk, dr, nw, 1e-2, 1e-3 * maxabs(dr, nw));
        snprintf(name, sizeof name, "grass_adam_update m %s", tag); check_bf16_states(name, mk, mr, nc);
        snprintf(name, sizeof name, "grass_adam_update v %s", tag); check_bf16_states(name, vk, vr, nc);
    }
    if (wd == 0.0f) {  // the rows (columns) not selected are untouched, bit for bit
        char* sel = (char*)calloc_check(m, 1);
        for (int j = 0; j < r; j++) sel[idx[j]] = 1;
        float* got = fnew(nw), *want = fnew(nw);
        size_t cnt = 0;
        for (int o = 0; o < outd; o++)
            for (int c = 0; c < in; c++)
                if (!sel[cols ? c : o]) { got[cnt] = W[(size_t)o * in + c]; want[cnt] = W0[(size_t)o * in + c]; cnt++; }
        snprintf(name, sizeof name, "grass_adam_update unselected %s unchanged %s", cols ? "columns" : "rows", tag);
        check_exact(name, got, want, cnt);
        free(sel); free(got); free(want);
    }
    free(idx); free(up); free(W0); free(W); free(mk); free(vk); free(Wr); free(mr); free(vr); free(dk); free(dr);
}

// ==== fp32 master weights ======================================================================
// With a master copy the update lands in it and the weights take its value: in fp32 (this
// build) the same numbers as without one, bit for bit, and the master equals the weights.
static void test_master_weights(void) {
    const int outd = 11, in = 6, r = 3;
    const float lr = 0.05f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    for (int cols = 0; cols <= 1; cols++) {
        int m = cols ? in : outd;
        int* idx = rand_subset(m, r);
        float up[3] = {1.0f, 2.0f, 0.5f};
        size_t nw = (size_t)outd * in, nc = cols ? (size_t)outd * r : (size_t)r * in;
        float* W0 = frandn(nw, 1.0f), *Wa = fcopy(W0, nw), *Wb = fcopy(W0, nw), *Wm = fcopy(W0, nw);
        float* ma = fnew(nc), *va = fnew(nc), *mb = fnew(nc), *vb = fnew(nc);
        for (int t = 1; t <= 3; t++) {
            float* C = frandn(nc, 1.0f);
            float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
            AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, 1.0f};
            cpu_grass_adam_update(Wa, NULL, C, ma, va, 0, idx, up, r, outd, in, cols, ap, 1.0f);
            cpu_grass_adam_update(Wb, Wm, C, mb, vb, 0, idx, up, r, outd, in, cols, ap, 1.0f);
            free(C);
        }
        check_exact(cols ? "grass_adam_update with master weights == without (cols)" : "grass_adam_update with master weights == without (rows)", Wb, Wa, nw);
        check_exact("grass_adam_update: weights == master", Wb, Wm, nw);
        check_exact("grass_adam_update with master weights: same moments", mb, ma, nc);
        free(idx); free(W0); free(Wa); free(Wb); free(Wm); free(ma); free(va); free(mb); free(vb);
    }
    const size_t n = 513;
    float* p0 = frandn(n, 1.0f), *pa = fcopy(p0, n), *pb = fcopy(p0, n), *pm = fcopy(p0, n);
    float* ma = fnew(n), *va = fnew(n), *mb = fnew(n), *vb = fnew(n);
    for (int t = 1; t <= 3; t++) {
        float* g = frandn(n, 1.0f);
        float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
        AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, 1.0f};
        cpu_adamw_update(pa, NULL, g, ma, va, 0, n, ap, 1);
        cpu_adamw_update(pb, pm, g, mb, vb, 0, n, ap, 1);
        free(g);
    }
    check_exact("adamw with master weights == without", pb, pa, n);
    check_exact("adamw: params == master", pb, pm, n);
    free(p0); free(pa); free(pb); free(pm); free(ma); free(va); free(mb); free(vb);
}

// ==== adamw ===================================================================================
static void test_adamw(int bf16) {
    const size_t n = 777;
    const float lr = 0.05f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f, gs = 0.25f;
    float* p0 = frandn(n, 1.0f), *p = fcopy(p0, n);
    void* m = calloc_check(n, bf16 ? 2 : 4), *v = calloc_check(n, bf16 ? 2 : 4);
    double* pr = dfrom(p0, n), *mr = dnew(n), *vr = dnew(n);
    for (int t = 1; t <= 3; t++) {
        float* g = frandn(n, 2.0f);
        float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
        AdamParams ap = {lr, b1, b2, eps, wd, bc1, bc2, gs};
        cpu_adamw_update(p, NULL, g, m, v, bf16, n, ap, 1234 + t);
        for (size_t i = 0; i < n; i++) {
            double gi = (double)g[i] * gs;
            double mn = b1 * mr[i] + (1.0 - b1) * gi, vn = b2 * vr[i] + (1.0 - b2) * gi * gi;
            double u = (mn / bc1) / (sqrt(vn / bc2) + eps);
            mr[i] = bf16 ? ref_bf16(mn) : mn;
            vr[i] = bf16 ? ref_bf16(vn) : vn;
            pr[i] -= lr * (u + wd * pr[i]);
        }
        free(g);
    }
    double* dk = dnew(n), *dr = dnew(n);
    for (size_t i = 0; i < n; i++) { dk[i] = (double)p[i] - p0[i]; dr[i] = pr[i] - p0[i]; }
    if (!bf16) {
        check_kernel("adamw param", p, pr, n);
        check_close_dd("adamw param - param0", dk, dr, n, K_RTOL, K_AFRAC * maxabs(dr, n) + 5e-7);
        check_kernel("adamw m", (float*)m, mr, n);
        check_kernel("adamw v", (float*)v, vr, n);
    } else {
        check_close_dd("adamw param - param0, bf16 states", dk, dr, n, 1e-2, 1e-3 * maxabs(dr, n));
        check_bf16_states("adamw m, bf16 states", m, mr, n);
        check_bf16_states("adamw v, bf16 states", v, vr, n);
    }
    free(p0); free(p); free(m); free(v); free(pr); free(mr); free(vr); free(dk); free(dr);
}

// ==== small helpers: add_inplace, scale_floats ================================================
static void test_small(void) {
    const size_t n = 1001;
    float* a = frandn(n, 1.0f), *b = frandn(n, 1.0f), *a1 = fcopy(a, n);
    double* want = dnew(n);
    for (size_t i = 0; i < n; i++) want[i] = (double)a[i] + b[i];
    cpu_add_inplace(a1, b, n);
    check_kernel("add_inplace", a1, want, n);
    float* c = fcopy(a, n);
    for (size_t i = 0; i < n; i++) want[i] = (double)a[i] * -0.375;
    cpu_scale_floats(c, -0.375f, n);
    check_kernel("scale_floats", c, want, n);
    free(a); free(b); free(a1); free(want); free(c);
}

// ==== sumsq and determinism ===================================================================
static void test_sumsq(void) {
    const size_t n = 200017;  // several 65536-element chunks, the last one partial
    float* x = frandn(n, 1.0f);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    int nt0 = omp_get_max_threads();
    float acc[3];
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(k + 1);
        acc[k] = 3.25f;
        cpu_sumsq_float(&acc[k], x, n);
    }
    omp_set_num_threads(nt0);
    double want = 3.25 + s;
    check_kernel_abs("sumsq_float accumulates sum(x^2) (rtol 1e-6)", &acc[0], &want, 1, 1e-6, 0.0);
    check_exact("sumsq_float 2 threads == 1 thread", &acc[1], &acc[0], 1);
    check_exact("sumsq_float 3 threads == 1 thread", &acc[2], &acc[0], 1);
    float a5 = -1.0f, a0 = 7.5f, seven = 7.5f;
    double w5 = -1.0;
    for (int i = 0; i < 5; i++) w5 += (double)x[i] * x[i];
    cpu_sumsq_float(&a5, x, 5);
    cpu_sumsq_float(&a0, x, 0);
    check_kernel_abs("sumsq_float n=5 (rtol 1e-6)", &a5, &w5, 1, 1e-6, 0.0);
    check_exact("sumsq_float n=0 leaves acc", &a0, &seven, 1);
    // sumsq_unscaled: rows (or columns) divided by their scale; all scales 1 gives sumsq_float's bits
    for (int cols_side = 0; cols_side <= 1; cols_side++) {
        const int r = 7, other = 301;
        float sc[7] = {0.5f, 2.0f, 1.0f, 3.5f, 0.25f, 1.5f, 7.0f}, ones[7] = {1, 1, 1, 1, 1, 1, 1};
        double wu = 1.5;
        for (int j = 0; j < r; j++)
            for (int k = 0; k < other; k++) {
                float c = x[cols_side ? (size_t)k * r + j : (size_t)j * other + k];
                wu += ((double)c / sc[j]) * ((double)c / sc[j]);
            }
        float au = 1.5f, a1 = 1.5f, af = 1.5f;
        cpu_sumsq_unscaled(&au, x, sc, r, other, cols_side);
        check_kernel_abs(cols_side ? "sumsq_unscaled, columns side (rtol 1e-6)" : "sumsq_unscaled, rows side (rtol 1e-6)", &au, &wu, 1, 1e-6, 0.0);
        cpu_sumsq_unscaled(&a1, x, ones, r, other, cols_side);
        cpu_sumsq_float(&af, x, (size_t)r * other);
        check_exact("sumsq_unscaled with unit scales == sumsq_float", &a1, &af, 1);
    }
    free(x);
}

// rows_sumsq: the squared norms of a matrix's rows or columns, accumulated, against float64
static void test_rows_sumsq(void) {
    const int rows = 37, cols = 53;
    float* M = frandn((size_t)rows * cols, 1.0f);
    for (int by_cols = 0; by_cols <= 1; by_cols++) {
        int n = by_cols ? cols : rows;
        float* got = frandn(n, 1.0f);
        double* want = dnew(n);
        for (int k = 0; k < n; k++) want[k] = got[k];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) want[by_cols ? j : i] += (double)M[(size_t)i * cols + j] * M[(size_t)i * cols + j];
        cpu_rows_sumsq(got, M, rows, cols, by_cols);
        check_kernel_abs(by_cols ? "rows_sumsq, column norms (rtol 1e-6)" : "rows_sumsq, row norms (rtol 1e-6)", got, want, n, 1e-6, 1e-6);
        free(got); free(want);
    }
    free(M);
}

// ---- the initial weights' draws (rng.h) against long double libm, and their distribution --------
// max |got - ref| and max |got - ref| / |ref| (over |ref| >= rel_floor) of f on many points
typedef struct { double abs, rel; } ErrMax;
static void err_note(ErrMax* m, double got, long double ref, double rel_floor) {
    double e = (double)fabsl((long double)got - ref);
    if (!(e <= m->abs)) m->abs = e;  // NaN sticks
    if (fabsl(ref) >= rel_floor && !(e / (double)fabsl(ref) <= m->rel)) m->rel = e / (double)fabsl(ref);
}
static double bits_to_u53(uint64_t b) { return (double)(b >> 11) * (1.0 / 9007199254740992.0); }
// TEST_OPS_MUTATE: an exact expected value one bit off, so that every exact check below trips
static double mut_d(double x) { return g_mutate ? nextafter(x, INFINITY) : x; }
static uint64_t mut_u64(uint64_t x) { return g_mutate ? x ^ 1 : x; }

static void test_init_log_sincos(void) {
    const long double two_pi = 6.283185307179586476925286766559005768L;
    ErrMax lg = {0, 0}, sc = {0, 0}, nz = {0, 0};
    uint64_t s = 0x1417ULL;
    for (int i = 0; i < 2000000; i++) {
        uint64_t b = splitmix64(&s);
        double x;
        switch (i % 4) {
            case 0: x = (double)((b >> 11) + 1) * (1.0 / 9007199254740992.0); break;       // the draws' domain (0, 1]
            case 1: x = 0.5 + 1.5 * bits_to_u53(b); break;                                  // around 1 and sqrt(2)
            case 2: x = 1.0 + (bits_to_u53(b) - 0.5) * 1e-6; break;                         // log x near 0
            default: {                                                                      // every positive normal double
                uint64_t e = 1 + (b >> 40) % 2046;
                x = rng_bits_double((e << 52) | (b & 0x000FFFFFFFFFFFFFULL));
            }
        }
        err_note(&lg, rng_log(x), logl((long double)x), 1e-300);
        double u = bits_to_u53(splitmix64(&s)), sn, cs;
        rng_sincos_2pi(u, &sn, &cs);
        err_note(&sc, sn, sinl(two_pi * u), 2.0);  // absolute error only (rel_floor above 1)
        err_note(&sc, cs, cosl(two_pi * u), 2.0);
    }
    // Box-Muller with the same two draws, in long double libm
    size_t float_differ = 0, nvals = 0;
    for (int i = 0; i < 1000000; i++) {
        uint64_t b1 = splitmix64(&s), b2 = splitmix64(&s);
        double z0, z1;
        rng_normal_pair(b1, b2, &z0, &z1);
        long double u1 = (long double)((b1 >> 11) + 1) / 9007199254740992.0L, u2 = (long double)(b2 >> 11) / 9007199254740992.0L;
        long double rad = sqrtl(-2.0L * logl(u1));
        long double r0 = rad * cosl(two_pi * u2), r1 = rad * sinl(two_pi * u2);
        err_note(&nz, z0, r0, 1e-3);
        err_note(&nz, z1, r1, 1e-3);
        float_differ += ((float)(0.02 * z0) != (float)(0.02L * r0)) + ((float)(0.02 * z1) != (float)(0.02L * r1));
        nvals += 2;
    }
    printf("init draws vs long double libm: log max abs %.3g rel %.3g; sin/cos(2 pi u) max abs %.3g; "
           "normals max abs %.3g rel %.3g (|z| >= 1e-3); floats that differ %zu of %zu\n",
           lg.abs, lg.rel, sc.abs, nz.abs, nz.rel, float_differ, nvals);
    double m = g_mutate ? 1e-3 : 1.0;  // TEST_OPS_MUTATE: bounds 1000x tighter, must trip
    CHECK(lg.rel <= 4e-16 * m, "rng_log: max relative error %.3g > 4e-16", lg.rel);
    CHECK(sc.abs <= 4e-16 * m, "rng_sincos_2pi: max absolute error %.3g > 4e-16", sc.abs);
    CHECK(nz.abs <= 4e-15 * m && nz.rel <= 1e-13 * m, "rng_normal_pair: max error abs %.3g rel %.3g > 4e-15, 1e-13", nz.abs, nz.rel);
    CHECK(float_differ <= 20 && !g_mutate, "rng_normal_pair: %zu of %zu float values differ from libm's (at most 20)", float_differ, nvals);
    // exact points
    double sn, cs;
    rng_sincos_2pi(0.0, &sn, &cs);
    CHECK(sn == mut_d(0.0) && cs == 1.0, "rng_sincos_2pi(0) = (%g, %g)", sn, cs);
    rng_sincos_2pi(0.25, &sn, &cs);
    CHECK(sn == mut_d(1.0) && cs == 0.0, "rng_sincos_2pi(1/4) = (%g, %g)", sn, cs);
    rng_sincos_2pi(0.5, &sn, &cs);
    CHECK(sn == mut_d(0.0) && cs == -1.0, "rng_sincos_2pi(1/2) = (%g, %g)", sn, cs);
    CHECK(rng_log(1.0) == mut_d(0.0) && rng_log(2.0) == (double)logl(2.0L), "rng_log(1) = %g, rng_log(2) = %.17g", rng_log(1.0), rng_log(2.0));
}

// moments and tail fractions of one large tensor's draws, within 5 standard errors
static void test_init_distribution(void) {
    int rows = 2048, cols = 2049;  // odd cols: pairs straddle rows
    size_t n = (size_t)rows * cols;
    float* w = fnew(n);
    ParamInit p = {rows, cols, rows, cols, rng_seed_for(7, 0x1417, 3), 0.02, 1.0f, 0};
    uint64_t h[2] = {0, 0};
    cpu_param_init_tensor(w, &p, h);
    double sum = 0, sum2 = 0, sum4 = 0, pair = 0, maxabs_z = 0;
    size_t in1 = 0, in2 = 0, in3 = 0;
    for (size_t i = 0; i < n; i++) {
        double z = w[i] / 0.02;
        sum += z; sum2 += z * z; sum4 += z * z * z * z;
        if (fabs(z) < 1) in1++;
        if (fabs(z) < 2) in2++;
        if (fabs(z) < 3) in3++;
        if (fabs(z) > maxabs_z) maxabs_z = fabs(z);
        if (i % 2 == 1) pair += z * (w[i - 1] / 0.02);
    }
    double mean = sum / n, sd = sqrt(sum2 / n - mean * mean), kurt = sum4 / n, corr = pair / (n / 2);
    double f1 = (double)in1 / n, f2 = (double)in2 / n, f3 = (double)in3 / n;
    double p1 = erf(1 / sqrt(2.0)), p2 = erf(2 / sqrt(2.0)), p3 = erf(3 / sqrt(2.0));
    double tol = g_mutate ? 1e-3 : 1.0;
    printf("init distribution, %zu values of normal(0, 0.02) / 0.02: mean %.3g, std %.6f, E z^4 %.4f, "
           "pair correlation %.3g, within 1/2/3 sd %.5f/%.5f/%.6f (normal %.5f/%.5f/%.6f), max |z| %.3f\n",
           n, mean, sd, kurt, corr, f1, f2, f3, p1, p2, p3, maxabs_z);
    CHECK(fabs(mean) <= tol * 5 / sqrt((double)n), "init mean %.3g (std error %.3g)", mean, 1 / sqrt((double)n));
    CHECK(fabs(sd - 1) <= tol * 5 / sqrt(2.0 * n), "init std %.6f of 0.02 (std error %.3g)", sd, 1 / sqrt(2.0 * n));
    CHECK(fabs(kurt - 3) <= tol * 5 * sqrt(96.0 / n), "init E z^4 %.4f, normal 3 (std error %.3g)", kurt, sqrt(96.0 / n));
    CHECK(fabs(corr) <= tol * 5 / sqrt(n / 2.0), "init correlation within pairs %.3g", corr);
    CHECK(fabs(f1 - p1) <= tol * 5 * sqrt(p1 * (1 - p1) / n), "init fraction within 1 sd %.5f, normal %.5f", f1, p1);
    CHECK(fabs(f2 - p2) <= tol * 5 * sqrt(p2 * (1 - p2) / n), "init fraction within 2 sd %.5f, normal %.5f", f2, p2);
    CHECK(fabs(f3 - p3) <= tol * 5 * sqrt(p3 * (1 - p3) / n), "init fraction within 3 sd %.6f, normal %.6f", f3, p3);
    CHECK(maxabs_z <= 8.58 * tol, "init max |z| %.3f above Box-Muller's bound sqrt(-2 log 2^-53) = 8.57", maxabs_z);
    free(w);
}

// the stored layout, the fill, the hashes, thread-count independence and the pinned values
static void test_init_layout(void) {
    int rh = 37, ch = 19, r = 64, c = 64;
    size_t nh = (size_t)rh * ch;
    float* hf = fnew(nh);
    ParamInit p = {rh, ch, rh, ch, rng_seed_for(1234, 0x1417, 5), 0.02, 1.0f, 1000};
    uint64_t h[2] = {0, 0}, hp[2] = {0, 0}, hr[2] = {0, 0}, hc[2] = {0, 0};
    cpu_param_init_tensor(hf, &p, h);
    for (int variant = 0; variant < 3; variant++) {  // padded rows and columns; rows only (gate/up); columns only (down)
        ParamInit q = p;
        q.rows = variant == 2 ? rh : r;
        q.cols = variant == 1 ? ch : c;
        size_t ns = (size_t)q.rows * q.cols;
        float* st = fnew(ns);
        for (size_t i = 0; i < ns; i++) st[i] = NAN;
        uint64_t* hh = variant == 0 ? hp : variant == 1 ? hr : hc;
        cpu_param_init_tensor(st, &q, hh);
        float* expect = fnew(ns);  // zeros, the real block from hf
        for (int i = 0; i < rh; i++) memcpy(expect + (size_t)i * q.cols, hf + (size_t)i * ch, ch * sizeof(float));
        check_exact(variant == 0 ? "init padded rows and cols = HF layout + zeros" : variant == 1 ? "init padded rows = HF layout + zeros"
                                                                                 : "init padded cols = HF layout + zeros", st, expect, ns);
        CHECK(hh[0] == mut_u64(h[0]) && hh[1] == h[1], "init hash of the padded tensor %d differs", variant);
        free(st); free(expect);
    }
    // the bf16 hash is of the bf16-rounded values; differs from the fp32 hash
    uint64_t hb = 0, hf32 = 0;
    for (size_t j = 0; j < nh; j++) { hb += rng_hash_term(1000 + j, bf16_to_float(bf16_from_float(hf[j]))); hf32 += rng_hash_term(1000 + j, hf[j]); }
    CHECK(hb == mut_u64(h[1]) && hf32 == h[0] && h[0] != h[1], "init hashes: fp32 %016llx (recomputed %016llx), bf16 %016llx (%016llx)",
          (unsigned long long)h[0], (unsigned long long)hf32, (unsigned long long)h[1], (unsigned long long)hb);
    // one flipped bit, or the same values at other indices, change the hash
    uint32_t u; memcpy(&u, &hf[5], 4); u ^= 1; float f5; memcpy(&f5, &u, 4);
    CHECK(hf32 - rng_hash_term(1005, hf[5]) + rng_hash_term(1005, f5) != hf32 && !g_mutate, "init hash blind to a flipped bit");
    ParamInit p2 = p; p2.first = 1001;
    uint64_t h2[2] = {0, 0};
    float* tmp = fnew(nh);
    cpu_param_init_tensor(tmp, &p2, h2);
    CHECK(h2[0] != h[0] && !g_mutate, "init hash blind to the index");
    // the fill (norms): every value 1, hashes of 1.0 (bf16-exact: both equal)
    ParamInit pf = p; pf.std = 0.0;
    uint64_t hfill[2] = {0, 0};
    cpu_param_init_tensor(tmp, &pf, hfill);
    size_t not1 = 0;
    for (size_t j = 0; j < nh; j++) not1 += tmp[j] != 1.0f;
    CHECK(not1 == 0 && hfill[0] == mut_u64(hfill[1]), "init fill: %zu values not 1, hashes %016llx %016llx", not1,
          (unsigned long long)hfill[0], (unsigned long long)hfill[1]);
    // 1 and 3 threads: the same bits and hashes
    int nt0 = omp_get_max_threads();
    int rows = 300, cols = 301;
    float* a = fnew((size_t)rows * cols);
    float* b = fnew((size_t)rows * cols);
    ParamInit pt = {rows, cols, rows, cols, 99, 0.02, 1.0f, 0};
    uint64_t ha[2] = {0, 0}, hb3[2] = {0, 0};
    omp_set_num_threads(1);
    cpu_param_init_tensor(a, &pt, ha);
    omp_set_num_threads(3);
    cpu_param_init_tensor(b, &pt, hb3);
    omp_set_num_threads(nt0);
    check_exact("init 1 thread = 3 threads", b, a, (size_t)rows * cols);
    CHECK(ha[0] == mut_u64(hb3[0]) && ha[1] == hb3[1], "init hashes with 1 and 3 threads differ");
    // pinned: these values define every model's initial weights (a change to the draws changes
    // every run's start, and breaks a comparison with a GPU run of an older build)
    printf("init pinned: w[0] %a w[1] %a w[90299] %a, hash %016llx %016llx\n", a[0], a[1], a[90299], (unsigned long long)ha[0],
           (unsigned long long)ha[1]);
    CHECK(ha[0] == mut_u64(PINNED_H0) && ha[1] == PINNED_H1, "init hashes of the pinned tensor: %016llx %016llx, pinned %016llx %016llx",
          (unsigned long long)ha[0], (unsigned long long)ha[1], (unsigned long long)PINNED_H0, (unsigned long long)PINNED_H1);
    free(hf); free(tmp); free(a); free(b);
}

static void test_determinism(void) {
    int nt0 = omp_get_max_threads();
    const int nthreads[3] = {1, 2, 3};
    char name[200];
    {   // attention forward and backward: B * nkv = 4 (batch, kv head) work items
        const int B = 2, T = 33, nh = 4, nkv = 2, hd = 16;
        size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd, nl = (size_t)B * nh * T;
        float* q = frandn(nq, 1.5f), *k = frandn(nk, 1.0f), *v = frandn(nk, 1.0f), *g = frandn(nq, 1.0f);
        float* res[3][5];
        for (int r = 0; r < 3; r++) {
            omp_set_num_threads(nthreads[r]);
            float* out = fnew(nq), *lse = fnew(nl), *dq = fnew(nq), *dk = fnew(nk), *dv = fnew(nk);
            cpu_attention_forward(out, lse, q, k, v, nh * hd, nkv * hd, B, T, nh, nkv, hd);
            cpu_attention_backward(dq, dk, dv, g, out, q, k, v, nh * hd, nkv * hd, lse, B, T, nh, nkv, hd);
            res[r][0] = out; res[r][1] = lse; res[r][2] = dq; res[r][3] = dk; res[r][4] = dv;
        }
        const char* what[5] = {"out", "lse", "dq", "dk", "dv"};
        size_t len[5] = {nq, nl, nq, nk, nk};
        for (int r = 1; r < 3; r++)
            for (int a = 0; a < 5; a++) {
                snprintf(name, sizeof name, "attention %s: %d threads == 1 thread", what[a], nthreads[r]);
                check_exact(name, res[r][a], res[0][a], len[a]);
            }
        for (int r = 0; r < 3; r++) for (int a = 0; a < 5; a++) free(res[r][a]);
        free(q); free(k); free(v); free(g);
    }
    {   // rmsnorm backward (dinp and dw)
        const int N = 64, d = 256;
        size_t n = (size_t)N * d;
        float* x = frandn(n, 1.0f), *w = frandn(d, 1.0f), *g = frandn(n, 1.0f), *dx0 = frandn(n, 1.0f), *dw0 = frandn(d, 1.0f);
        float* out = fnew(n), *rstd = fnew(N);
        cpu_rmsnorm_forward(out, rstd, x, w, N, d, 1e-5f);
        float* rx[3], *rw[3];
        for (int r = 0; r < 3; r++) {
            omp_set_num_threads(nthreads[r]);
            rx[r] = fcopy(dx0, n); rw[r] = fcopy(dw0, d);
            cpu_rmsnorm_backward(rx[r], rw[r], g, x, w, rstd, N, d);
        }
        for (int r = 1; r < 3; r++) {
            snprintf(name, sizeof name, "rmsnorm backward dinp: %d threads == 1 thread", nthreads[r]); check_exact(name, rx[r], rx[0], n);
            snprintf(name, sizeof name, "rmsnorm backward dw: %d threads == 1 thread", nthreads[r]); check_exact(name, rw[r], rw[0], d);
        }
        for (int r = 0; r < 3; r++) { free(rx[r]); free(rw[r]); }
        free(x); free(w); free(g); free(dx0); free(dw0); free(out); free(rstd);
    }
    {   // embedding backward with many repeated tokens
        const int V = 50, N = 300, d = 64;
        int* tok = (int*)malloc_check(N * sizeof(int));
        for (int i = 0; i < N; i++) tok[i] = rng_int(V);
        float* g = frandn((size_t)N * d, 1.0f), *dw0 = frandn((size_t)V * d, 1.0f);
        float* rw[3];
        for (int r = 0; r < 3; r++) {
            omp_set_num_threads(nthreads[r]);
            rw[r] = fcopy(dw0, (size_t)V * d);
            cpu_embedding_backward(rw[r], g, tok, N, d);
        }
        for (int r = 1; r < 3; r++) {
            snprintf(name, sizeof name, "embedding backward: %d threads == 1 thread", nthreads[r]);
            check_exact(name, rw[r], rw[0], (size_t)V * d);
        }
        for (int r = 0; r < 3; r++) free(rw[r]);
        free(tok); free(g); free(dw0);
    }
    omp_set_num_threads(nt0);
}

int main(void) {
    test_line_buffered_stdout();
    const char* e = getenv("TEST_OPS_MUTATE");
    g_mutate = e != NULL && atoi(e) != 0;
    e = getenv("TEST_OPS_VERBOSE");
    g_verbose = e != NULL && atoi(e) != 0;
    if (g_mutate) printf("TEST_OPS_MUTATE: every reference is perturbed; every check must fail\n");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    test_embedding();
    test_rmsnorm();
    test_rope_case(2, 6, 3, 16, 10000.0);
    test_rope_case(1, 40, 2, 8, 500000.0);
    test_attention_case(2, 7, 4, 2, 8);
    test_attention_case(1, 1, 4, 2, 8);   // T = 1
    test_attention_case(2, 5, 3, 3, 8);   // nh = nkv
    test_attention_case(2, 6, 4, 1, 8);   // MQA
    test_attention_case(1, 33, 4, 2, 16);
    cpu_att_block = 4;  // many query blocks: partial last block, keys growing block by block
    test_attention_case(2, 7, 4, 2, 8);
    test_attention_case(1, 33, 4, 2, 16);
    test_attention_case(2, 6, 4, 1, 8);
    cpu_att_block = 128;
    test_swiglu();
    test_matmul_case(13, 37, 29);
    test_matmul_case(70, 130, 90);
    test_classifier_case(53);     // 16-lane blocks and a tail
    test_classifier_case(7);      // fewer logits than one block
    test_classifier_case(50257);  // a real vocabulary
    test_gathered_grad();
    test_rows_sumsq();
    test_grad_norms_case(5, 17, 13, 0);
    test_grad_norms_case(5, 17, 13, 1);
    test_grad_norms_case(8, 1500, 3000, 0);  // rows side, out = 3000: two blocks of ~4M floats
    test_grad_norms_case(8, 3000, 1500, 1);  // cols side, in = 3000: two blocks
    test_bf16_rounding();
    test_master_weights();
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        test_grass_adam_case(0, 0.0f, bf16);
        test_grass_adam_case(0, 0.1f, bf16);
        test_grass_adam_case(1, 0.0f, bf16);
        test_grass_adam_case(1, 0.1f, bf16);
        test_adamw(bf16);
    }
    test_small();
    test_sumsq();
    test_determinism();
    test_init_log_sincos();
    test_init_distribution();
    test_init_layout();

    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("test_ops: %.2f s with %d OpenMP threads\n", (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec),
           omp_get_max_threads());
    return test_summary("test_ops");
}
