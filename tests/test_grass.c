/*
 * test_grass.c: Grass on the CPU. Selection laws, the compressed gradient against a dense
 * computation, one full Grass step against a float64 implementation of docs/GRASS.md, the
 * moment reset at refresh (and only then), fused == unfused through the whole model, and
 * rank r = m with top-r reproducing full-rank AdamW.
 * Build: make test (tests/run_all.sh builds it with the trainer's flags).
 */
#include "llama_model.h"
#include "grass_optim.cuh"
#include "tests/test_util.h"

static uint64_t g_rng = 42;
static float randn(void) {
    double u1 = rng_uniform01(&g_rng), u2 = rng_uniform01(&g_rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

// ---- selection laws -------------------------------------------------------------------------
static void test_selection(void) {
    const int m = 10, r = 4;
    float q[m] = {5, 1, 0.5f, 9, 9, 0, 2, 0.25f, 3, 1};
    int idx[m]; float sc[m], up[m];
    Selection sel = {0, idx, sc, up};
    // top-r: the 4 largest, ties by lower index: 3, 4 (9), 0 (5), 8 (3)
    grass_select(SEL_TOPR, q, m, r, 7, &sel);
    CHECK(sel.r_eff == 4, "topr selects r unique rows (got %d)", sel.r_eff);
    int want[4] = {0, 3, 4, 8};
    for (int j = 0; j < 4 && j < sel.r_eff; j++) {
        CHECK(sel.idx[j] == want[j], "topr index %d: got %d want %d", j, sel.idx[j], want[j]);
        CHECK(sel.scale[j] == 1.0f && sel.upscale[j] == 1.0f, "topr scales are 1");
    }
    // top-r with r = m selects everything
    grass_select(SEL_TOPR, q, m, m, 7, &sel);
    CHECK(sel.r_eff == m, "topr r=m selects all rows");

    // Sampling laws over many draws. For each variant: the mean of (upscale * scale) per row,
    // i.e. the diagonal of P P^T, must be 1 (unbiased) within 5 standard errors, and for the
    // with-replacement norm sampling the expected draw count of row i is r p_i.
    const int draws = 40000;
    double total = 0; for (int i = 0; i < m; i++) total += q[i];
    GrassSelect variants[3] = {SEL_MULTINORM, SEL_UNIFORM, SEL_UNIFORM_NR};
    for (int vi = 0; vi < 3; vi++) {
        GrassSelect v = variants[vi];
        double sum[m] = {0}, sumsq[m] = {0}, count[m] = {0};
        int repeated = 0, short_nr = 0;
        for (int d = 0; d < draws; d++) {
            grass_select(v, q, m, r, rng_seed_for(99, d, vi), &sel);
            int seen[m] = {0};
            for (int j = 0; j < sel.r_eff; j++) {
                int i = sel.idx[j];
                repeated += seen[i];
                seen[i] = 1;
                double pp = (double)sel.upscale[j] * sel.scale[j];
                sum[i] += pp; sumsq[i] += pp * pp;
                count[i] += sel.upscale[j] / sel.scale[j];  // multiplicity
            }
            short_nr += (v == SEL_UNIFORM_NR && sel.r_eff != r);
        }
        CHECK(repeated == 0, "%s: %d selections listed an index twice (duplicates must be merged)", GRASS_SELECT_NAMES[v], repeated);
        CHECK(short_nr == 0, "%s: %d selections had fewer than r distinct rows", GRASS_SELECT_NAMES[v], short_nr);
        for (int i = 0; i < m; i++) {
            double p = v == SEL_MULTINORM ? q[i] / total : 1.0 / m;
            if (p == 0.0) { CHECK(sum[i] == 0.0, "%s: zero-norm row %d never drawn", GRASS_SELECT_NAMES[v], i); continue; }
            double mean = sum[i] / draws, var = sumsq[i] / draws - mean * mean;
            double se = sqrt(var / draws) + 1e-12;
            CHECK(fabs(mean - 1.0) < 5 * se + 1e-9, "%s: E[P P^T]_%d = %.4f (se %.4f), want 1", GRASS_SELECT_NAMES[v], i, mean, se);
            if (v != SEL_UNIFORM_NR) {
                double ec = r * p, c = count[i] / draws, sec = sqrt(r * p * (1 - p) / draws);
                CHECK(fabs(c - ec) < 5 * sec, "%s: row %d drawn %.4f times per selection, want r p = %.4f", GRASS_SELECT_NAMES[v], i, c, ec);
            }
        }
    }
    // multinorm-nr: r distinct rows, never a zero-norm row while enough positive rows exist;
    // inclusion frequency increases with the norm
    double inc[m] = {0};
    int short_sel = 0;
    for (int d = 0; d < draws; d++) {
        grass_select(SEL_MULTINORM_NR, q, m, r, rng_seed_for(5, d, 0), &sel);
        short_sel += sel.r_eff != r;
        for (int j = 0; j < sel.r_eff; j++) inc[sel.idx[j]] += 1.0 / draws;
    }
    CHECK(short_sel == 0, "multinorm-nr: %d selections had fewer than r distinct rows", short_sel);
    CHECK(inc[5] == 0.0, "multinorm-nr never picks the zero-norm row (got %.4f)", inc[5]);
    CHECK(inc[3] > inc[0] && inc[0] > inc[8] && inc[8] > inc[6] && inc[6] > inc[1] && inc[1] > inc[2] && inc[2] > inc[7],
          "multinorm-nr inclusion ordered by norm");
    // sequential sampling law: the first of r=1 draws ~ p exactly
    double first[m] = {0};
    for (int d = 0; d < draws; d++) { grass_select(SEL_MULTINORM_NR, q, m, 1, rng_seed_for(6, d, 0), &sel); first[sel.idx[0]] += 1.0 / draws; }
    for (int i = 0; i < m; i++) {
        double p = q[i] / total, se = sqrt(p * (1 - p) / draws);
        CHECK(fabs(first[i] - p) < 5 * se + 1e-12, "multinorm-nr r=1: row %d frequency %.4f want %.4f", i, first[i], p);
    }
    // same inputs, same seed -> same selection (what keeps data-parallel ranks in agreement)
    int idx2[m]; float sc2[m], up2[m];
    Selection sel2 = {0, idx2, sc2, up2};
    grass_select(SEL_MULTINORM, q, m, r, 1234, &sel);
    grass_select(SEL_MULTINORM, q, m, r, 1234, &sel2);
    CHECK(sel.r_eff == sel2.r_eff && memcmp(sel.idx, sel2.idx, sel.r_eff * sizeof(int)) == 0, "selection is a function of (norms, seed)");

    // padding (grass_pad_selection): rows {1, 4, 5, 9} of 10 padded to 8 take the lowest free
    // indices 0, 2, 3, 6 with scales 0, the real rows keep theirs, the order stays ascending;
    // align 16 on 10 rows stops at all 10; align 1 and an aligned count add nothing
    {
        int pi[16]; float ps[16], pu[16];
        Selection p = {4, pi, ps, pu};
        int real[4] = {1, 4, 5, 9};
        for (int j = 0; j < 4; j++) { pi[j] = real[j]; ps[j] = 0.5f + j; pu[j] = 2.0f + j; }
        CHECK(grass_pad_selection(&p, m, 1) == 0 && p.r_eff == 4, "align 1 adds no rows");
        int added = grass_pad_selection(&p, m, 8);
        int wi[8] = {0, 1, 2, 3, 4, 5, 6, 9};
        int ok = added == 4 && p.r_eff == 8;
        for (int j = 0, k = 0; ok && j < 8; j++) {
            ok &= pi[j] == wi[j];
            int is_real = k < 4 && pi[j] == real[k];
            ok &= is_real ? (ps[j] == 0.5f + k && pu[j] == 2.0f + k) : (ps[j] == 0.0f && pu[j] == 0.0f);
            k += is_real;
        }
        CHECK(ok, "padded to 8: rows 0-6 and 9, the added ones with scale 0 (added %d, r_eff %d)", added, p.r_eff);
        CHECK(selection_real_rows(&p) == 4, "4 real rows after padding (got %d)", selection_real_rows(&p));
        CHECK(grass_pad_selection(&p, m, 8) == 0, "an aligned selection stays as it is");
        CHECK(grass_pad_selection(&p, m, 16) == 2 && p.r_eff == m, "align 16 of 10 rows pads to all 10 (r_eff %d)", p.r_eff);
        for (int j = 0; j < m; j++) ok &= pi[j] == j;
        CHECK(ok, "every row once, ascending");
        CHECK(grass_rank_capacity(8, 32) == 16 && grass_rank_capacity(16, 32) == 16 && grass_rank_capacity(17, 20) == 20,
              "capacity: r rounded up to 16, at most the dimension");
    }
}

// ---- one projected matrix against float64 -----------------------------------------------------
// A parameter table holding one linear weight (out x in), driven through the Optimizer API as
// the trainer drives it; the reference is the GRASS.md update written in double.
static ParamTable one_matrix_table(int out, int in) {  // the table of the one-matrix cases
    ParamTable pt;
    memset(&pt, 0, sizeof(pt));
    pt.t = (ParamTensor*)calloc_check(1, sizeof(ParamTensor));
    param_table_add(&pt, "w", out, in, 0, PT_LINEAR, LIN_Q);
    return pt;
}
// The test's own record of the log's again= and trained= for one matrix after a refresh: adds to *again
// the real rows of s (padding apart) that `held` (the previous selection) has, to *distinct the real
// rows, then makes `held` the rows of s, marks them in `ever`, and adds the rows ever selected to *trained.
static void record_selection(const Selection* s, uint8_t* held, uint8_t* ever, int dim, int64_t* again,
                             int64_t* distinct, int64_t* trained) {
    for (int j = 0; j < s->r_eff; j++)
        if (s->scale[j] != 0.0f) { *again += held[s->idx[j]]; (*distinct)++; }
    memset(held, 0, dim);
    for (int j = 0; j < s->r_eff; j++)
        if (s->scale[j] != 0.0f) held[s->idx[j]] = ever[s->idx[j]] = 1;
    for (int i = 0; i < dim; i++) *trained += ever[i];
}
static int g_upscale = UPSCALE_PAPER;  // the up-projection rule of grass_matrix_case
// > 0: grass_matrix_case runs the fused update with --grad-clip g_clip, whose rule scales step t by
// min(1, clip / the norm of step t-1's gradient B G, unscaled); the float64 reference does the same
static float g_clip = 0.0f;
static void grass_matrix_case(int out, int in, int r, GrassSelect method, int K, float wd, const char* label) {
    ParamTable pt = one_matrix_table(out, in);
    const int N = 6, steps = 5;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.type = OPT_GRASS; oc.select = method; oc.grass_rank = r; oc.update_freq = K; oc.alpha = 0.25f;
    oc.weight_decay = wd; oc.fused = g_clip > 0.0f; oc.grad_clip = g_clip; oc.seed = 77; oc.upscale = g_upscale;
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    double* Wd = (double*)malloc_check(pt.total * sizeof(double));
    for (size_t i = 0; i < pt.total; i++) { W[i] = 0.1f * randn(); Wd[i] = W[i]; }
    Optimizer o;
    OptimRuntime rt = optim_runtime(&oc, 0, 1, 1, 0);
    optim_init(&o, &oc, &rt, &pt, W);
    int cols = out > in, dim = cols ? in : out, other = cols ? out : in;
    CHECK(o.gm[0].cols_side == cols, "%s: selects along the smaller dimension", label);
    double* md = (double*)calloc_check((size_t)r * other, sizeof(double));
    double* vd = (double*)calloc_check((size_t)r * other, sizeof(double));
    float* X = (float*)malloc_check((size_t)N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)N * out * sizeof(float));
    double* G = (double*)malloc_check((size_t)out * in * sizeof(double));
    int64_t t_since = 0;
    double max_err = 0, max_ref = 0, max_moment_err = 0, prev_norm = 0, norm_err = 0;
    int clipped_steps = 0;
    // the rows of the previous selection and the rows selected at any refresh so far (the log's again=, trained=)
    uint8_t* held = (uint8_t*)calloc_check(dim, 1);
    uint8_t* ever = (uint8_t*)calloc_check(dim, 1);
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < N * in; i++) X[i] = randn();
        for (int i = 0; i < N * out; i++) dY[i] = randn();
        for (int a = 0; a < out; a++)
            for (int b = 0; b < in; b++) {
                double s = 0; for (int n = 0; n < N; n++) s += (double)dY[n * out + a] * X[n * in + b];
                G[(size_t)a * in + b] = s;
            }
        float lr = 0.01f * (step + 1);
        optim_begin_step(&o, step, lr);
        int refresh = optim_needs_refresh(&o);
        CHECK(refresh == (step % K == 0), "%s: refresh at step %d iff step %% K == 0", label, step);
        if (refresh) {
            optim_begin_norm_pass(&o);
            optim_begin_micro(&o, 0);
            grad_linear(&o, 0, dY, out, X, N);
            // norms against the dense gradient
            double worst = 0;
            for (int i = 0; i < dim; i++) {
                double qn = 0;
                for (int j = 0; j < other; j++) { double g = cols ? G[(size_t)j * in + i] : G[(size_t)i * in + j]; qn += g * g; }
                worst = fmax(worst, fabs(o.gm[0].norms[i] - qn) / (1e-6 + qn));
            }
            CHECK(worst < 1e-4, "%s: squared norms vs float64 (worst rel err %.3g)", label, worst);
            optim_refresh(&o);
            {   // the logged share of the gradient's squared norm the selected rows keep, in float64
                double kept = 0, total = 0;
                for (int i = 0; i < dim; i++) {
                    double qn = 0;
                    for (int j = 0; j < other; j++) { double g = cols ? G[(size_t)j * in + i] : G[(size_t)i * in + j]; qn += g * g; }
                    total += qn;
                    for (int j = 0; j < o.gm[0].r_eff; j++) if (o.gm[0].h_sel.idx[j] == i) kept += qn;
                }
                double got = o.refreshed.kept / o.refreshed.total, want = kept / total;
                CHECK(fabs(got - want) < 1e-5 && got > 0 && got <= 1, "%s: captured %.6f vs float64 %.6f", label, got, want);
            }
            {   // again: the new rows the previous selection held; trained: rows selected at any refresh
                int64_t again = 0, trained = 0, distinct = 0;
                record_selection(&o.gm[0].h_sel, held, ever, dim, &again, &distinct, &trained);
                CHECK(o.refreshed.again == again && o.refreshed.trained == trained && o.refreshed.selectable == dim &&
                      o.refreshed.distinct == distinct, "%s: step %d again %lld of %d, trained %lld of %lld (want %lld, %lld of %d)",
                      label, step, (long long)o.refreshed.again, o.refreshed.distinct, (long long)o.refreshed.trained,
                      (long long)o.refreshed.selectable, (long long)again, (long long)trained, dim);
            }
            memset(md, 0, (size_t)r * other * sizeof(double));
            memset(vd, 0, (size_t)r * other * sizeof(double));
            t_since = 0;
            size_t nonzero = 0;
            for (size_t i = 0; i < (size_t)o.gm[0].r * other; i++) nonzero += ((float*)o.gm[0].m)[i] != 0.0f || ((float*)o.gm[0].v)[i] != 0.0f;
            CHECK(nonzero == 0, "%s: moments reset at refresh (%zu nonzero)", label, nonzero);
            if (method == SEL_TOPR) {  // independent top-r in double
                for (int j = 0; j < o.gm[0].r_eff; j++) {
                    int sel = o.gm[0].h_sel.idx[j];
                    int larger = 0;
                    for (int i = 0; i < dim; i++) if (o.gm[0].norms[i] > o.gm[0].norms[sel]) larger++;
                    CHECK(larger < r, "%s: top-r picked row %d with %d larger rows", label, sel, larger);
                }
            }
        } else if (step > 0) {
            // no reset: moments carry over (nonzero after a step)
            double mm = 0; for (size_t i = 0; i < (size_t)o.gm[0].r_eff * other; i++) mm += fabs(((float*)o.gm[0].m)[i]);
            CHECK(mm > 0, "%s: moments kept between refreshes (step %d)", label, step);
        }
        optim_begin_micro(&o, 0);
        grad_linear(&o, 0, dY, out, X, N);
        if (oc.fused) grad_layer_done(&o, 0);  // the fused update: applied here, before the step's norm exists
        // compressed gradient against rho B G (rows) / G B^T rho (cols)
        const ProjMatrix* gm = &o.gm[0];
        int re = gm->r_eff;
        double cerr = 0, cref = 0;
        for (int j = 0; j < re; j++)
            for (int k = 0; k < other; k++) {
                double ref = cols ? gm->h_sel.scale[j] * G[(size_t)k * in + gm->h_sel.idx[j]]
                                  : gm->h_sel.scale[j] * G[(size_t)gm->h_sel.idx[j] * in + k];
                double got = cols ? gm->C[(size_t)k * re + j] : gm->C[(size_t)j * other + k];
                cerr = fmax(cerr, fabs(got - ref)); cref = fmax(cref, fabs(ref));
            }
        if (!oc.fused) CHECK(cerr <= 1e-5 * cref + 1e-6, "%s: C = rho B G (max err %.3g of %.3g)", label, cerr, cref);
        float got_norm = optim_step(&o);
        // the logged norm: of B G over the selected rows, rho divided out, in float64
        double bg = 0;
        for (int j = 0; j < re; j++)
            for (int k = 0; k < other; k++) {
                double g = cols ? G[(size_t)k * in + gm->h_sel.idx[j]] : G[(size_t)gm->h_sel.idx[j] * in + k];
                bg += g * g;
            }
        bg = sqrt(bg);
        norm_err = fmax(norm_err, fabs(got_norm - bg) / bg);
        double gscale = (g_clip > 0 && step > 0 && prev_norm > g_clip) ? g_clip / prev_norm : 1.0;
        clipped_steps += gscale < 1.0;
        prev_norm = bg;
        // float64 reference of the update
        t_since++;
        double b1 = oc.b1, b2 = oc.b2, bc1 = 1 - pow(b1, (double)t_since), bc2 = 1 - pow(b2, (double)t_since);
        if (wd > 0) for (size_t i = 0; i < pt.total; i++) Wd[i] *= 1.0 - (double)lr * wd;
        for (int j = 0; j < re; j++)
            for (int k = 0; k < other; k++) {
                int row = gm->h_sel.idx[j];
                double g = cols ? gm->h_sel.scale[j] * G[(size_t)k * in + row] : gm->h_sel.scale[j] * G[(size_t)row * in + k];
                g *= gscale;
                size_t mi = cols ? (size_t)k * re + j : (size_t)j * other + k;
                md[mi] = b1 * md[mi] + (1 - b1) * g;
                vd[mi] = b2 * vd[mi] + (1 - b2) * g * g;
                double u = (md[mi] / bc1) / (sqrt(vd[mi] / bc2) + oc.eps);
                size_t wi = cols ? (size_t)k * in + row : (size_t)row * in + k;
                Wd[wi] -= (double)lr * oc.alpha * gm->h_sel.upscale[j] * u;
                max_moment_err = fmax(max_moment_err, fabs(((float*)gm->m)[mi] - md[mi]) / (fabs(md[mi]) + 1e-3));
            }
        for (size_t i = 0; i < pt.total; i++) { max_err = fmax(max_err, fabs(W[i] - Wd[i])); max_ref = fmax(max_ref, fabs(Wd[i])); }
    }
    CHECK(max_err < 2e-5 * max_ref + 1e-6, "%s: W after %d steps vs float64 GRASS.md (max err %.3g)", label, steps, max_err);
    CHECK(max_moment_err < 1e-4, "%s: moments vs float64 (max rel err %.3g)", label, max_moment_err);
    CHECK(norm_err < 1e-5, "%s: gradient norm = ||B G|| (rho divided out) vs float64 (max rel err %.3g)", label, norm_err);
    CHECK(g_clip == 0 || clipped_steps >= 2, "%s: the clip acted on %d steps", label, clipped_steps);
    optim_free(&o);
    backend_free(W);
    free(Wd); free(md); free(vd); free(X); free(dY); free(G); free(held); free(ever);
    param_table_free(&pt);
}

// ---- --grass-refresh-state keep against float64, over several refreshes ---------------------------
// The reference keeps m, v and the Adam step count per row of W (not per slot), in double: at a
// refresh a row selected again keeps them, m times rho_new / rho_old and v times its square; a row
// newly selected starts at zero with count 0; a row no longer selected is released (zero, 0).
// Each step is Adam with the row's own bias corrections. Checked after every refresh: each slot's
// m, v (the remap itself bit for bit: x * f in fp32 from the stored value, rounded to nearest even
// for bf16) and count, padding slots and the slots past r_eff zero with count 0; after every step
// W and the moments against the reference. align: --grass-row-align (padding rows); bf16: moments.
// a float64 value stored as bf16 (the reference's model of --state-dtype bf16's store)
static double bf16_round_d(double x) { return bf16_to_float(bf16_from_float((float)x)); }
static void state_get_all(double* out, const void* s, size_t n, int bf) {
    for (size_t i = 0; i < n; i++) out[i] = cpu_state_get(s, i, bf);
}
static void grass_keep_case(int out, int in, int r, GrassSelect method, int K, int steps, int align, int bf16, int fused,
                            const char* label) {
    ParamTable pt = one_matrix_table(out, in);
    const int N = 5;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.type = OPT_GRASS; oc.select = method; oc.grass_rank = r; oc.update_freq = K; oc.alpha = 0.25f;
    oc.fused = fused; oc.seed = 91; oc.upscale = UPSCALE_PAPER; oc.row_align = align;
    oc.state_dtype = bf16 ? STATE_BF16 : STATE_FP32; oc.grass_refresh = REFRESH_KEEP;
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    double* Wd = (double*)malloc_check(pt.total * sizeof(double));
    for (size_t i = 0; i < pt.total; i++) { W[i] = 0.1f * randn(); Wd[i] = W[i]; }
    Optimizer o;
    OptimRuntime rt = optim_runtime(&oc, 0, 1, 1, 0);
    optim_init(&o, &oc, &rt, &pt, W);
    ProjMatrix* gm = &o.gm[0];
    int cols = gm->cols_side, dim = gm->dim_sel, other = gm->other, cap = gm->r_cap;
    size_t capn = proj_cap_numel(gm), ssz = state_dtype_size(oc.state_dtype);
    CHECK(gm->row_t != NULL && o.remap.tmp != NULL, "%s: keep allocates the row counts and the remap scratch", label);
    // the reference, per row of the selected dimension: m, v (other values each), count, the rho its moments are in
    double* md = (double*)calloc_check((size_t)dim * other, sizeof(double));
    double* vd = (double*)calloc_check((size_t)dim * other, sizeof(double));
    int64_t* td = (int64_t*)calloc_check(dim, sizeof(int64_t));
    float* rho_d = (float*)calloc_check(dim, sizeof(float));
    int* in_sel = (int*)calloc_check(dim, sizeof(int));
    int* ever = (int*)calloc_check(dim, sizeof(int));
    unsigned char* old_m = (unsigned char*)malloc_check(capn * ssz);
    unsigned char* old_v = (unsigned char*)malloc_check(capn * ssz);
    int* old_idx = (int*)malloc_check(cap * sizeof(int));
    float* old_scale = (float*)malloc_check(cap * sizeof(float));
    double* got = (double*)malloc_check(capn * sizeof(double));
    float* X = (float*)malloc_check((size_t)N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)N * out * sizeof(float));
    double* G = (double*)malloc_check((size_t)out * in * sizeof(double));
    int kept = 0, returned = 0, rescaled = 0, merged = 0, padded = 0, refreshes = 0, counts_differ = 0;
    size_t remap_bad = 0, slot_bad = 0;
    double moment_err = 0, w_err = 0, w_ref = 0;
    // moments: fp32 against float64 rounding; bf16 moments round at every store, which the reference
    // models (bf16_round_d), so that only where the fp32 and the float64 value round apart they differ
    const double mtol = bf16 ? 1e-2 : 1e-4;
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < N * in; i++) X[i] = randn();
        for (int i = 0; i < N * out; i++) dY[i] = randn() * (1.0f + (float)((i % out) % 5));  // uneven row norms
        for (int a = 0; a < out; a++)
            for (int b = 0; b < in; b++) {
                double acc = 0; for (int n = 0; n < N; n++) acc += (double)dY[n * out + a] * X[n * in + b];
                G[(size_t)a * in + b] = acc;
            }
        float lr = 0.01f;
        optim_begin_step(&o, step, lr);
        if (optim_needs_refresh(&o)) {
            int r_old = gm->r_eff;
            memcpy(old_m, gm->m, capn * ssz); memcpy(old_v, gm->v, capn * ssz);
            memcpy(old_idx, gm->h_sel.idx, r_old * sizeof(int)); memcpy(old_scale, gm->h_sel.scale, r_old * sizeof(float));
            int64_t* old_t = (int64_t*)malloc_check((r_old + 1) * sizeof(int64_t));
            memcpy(old_t, gm->row_t, r_old * sizeof(int64_t));
            optim_begin_norm_pass(&o);
            optim_begin_micro(&o, 0);
            grad_linear(&o, 0, dY, out, X, N);
            if (fused) grad_layer_done(&o, 0);
            optim_refresh(&o);
            refreshes++;
            const Selection* ns = &gm->h_sel;
            int* now = (int*)calloc_check(dim, sizeof(int));
            for (int j = 0; j < gm->r_eff; j++) {
                if (selection_row_is_padding(ns, j)) { padded++; continue; }
                int i = ns->idx[j];
                now[i] = 1;
                merged += ns->upscale[j] > 1.5f * ns->scale[j];
                if (in_sel[i]) {  // kept: rescale to the new rho
                    double f = (double)ns->scale[j] / rho_d[i];
                    for (int k = 0; k < other; k++) {
                        md[(size_t)i * other + k] *= f; vd[(size_t)i * other + k] *= f * f;
                        if (bf16) { md[(size_t)i * other + k] = bf16_round_d(md[(size_t)i * other + k]);
                                    vd[(size_t)i * other + k] = bf16_round_d(vd[(size_t)i * other + k]); }
                    }
                    kept++;
                    rescaled += ns->scale[j] != rho_d[i];
                    // the remap's own bits: the stored old value times f (fp32), rounded as the store does
                    int s_old = -1;
                    for (int q = 0; q < r_old; q++) if (old_idx[q] == i && old_scale[q] != 0.0f) s_old = q;
                    float ff = ns->scale[j] / old_scale[s_old];
                    for (int k = 0; k < other; k++) {
                        size_t so = cols ? (size_t)k * r_old + s_old : (size_t)s_old * other + k;
                        size_t sn = cols ? (size_t)k * gm->r_eff + j : (size_t)j * other + k;
                        float wm = cpu_state_get(old_m, so, bf16) * ff, wv = cpu_state_get(old_v, so, bf16) * (ff * ff);
                        if (bf16) { wm = bf16_to_float(bf16_from_float(wm)); wv = bf16_to_float(bf16_from_float(wv)); }
                        float gmv = cpu_state_get(gm->m, sn, bf16), gvv = cpu_state_get(gm->v, sn, bf16);
                        remap_bad += memcmp(&wm, &gmv, 4) != 0 || memcmp(&wv, &gvv, 4) != 0;
                    }
                    if (gm->row_t[j] != old_t[s_old]) slot_bad++;
                } else {
                    for (int k = 0; k < other; k++) { md[(size_t)i * other + k] = 0; vd[(size_t)i * other + k] = 0; }
                    td[i] = 0;
                    returned += ever[i];
                }
                rho_d[i] = ns->scale[j];
                ever[i] = 1;
            }
            for (int i = 0; i < dim; i++)
                if (in_sel[i] && !now[i]) {  // dropped: released
                    for (int k = 0; k < other; k++) { md[(size_t)i * other + k] = 0; vd[(size_t)i * other + k] = 0; }
                    td[i] = 0;
                }
            memcpy(in_sel, now, dim * sizeof(int));
            free(now); free(old_t);
            // every slot: the row's count; padding slots and slots past r_eff zero with count 0
            for (int j = 0; j < cap; j++) {
                int live = j < gm->r_eff && !selection_row_is_padding(ns, j);
                if (live ? gm->row_t[j] != td[ns->idx[j]] : gm->row_t[j] != 0) slot_bad++;
            }
            for (size_t e = 0; e < capn; e++) {
                int j = e < proj_sub_numel(gm) ? (cols ? (int)(e % gm->r_eff) : (int)(e / other)) : -1;
                int live = j >= 0 && !selection_row_is_padding(ns, j);
                if (!live && (cpu_state_get(gm->m, e, bf16) != 0.0f || cpu_state_get(gm->v, e, bf16) != 0.0f)) slot_bad++;
            }
        }
        optim_begin_micro(&o, 0);
        grad_linear(&o, 0, dY, out, X, N);
        if (fused) grad_layer_done(&o, 0);
        optim_step(&o);
        // float64 reference step: each selected row with its own count
        const Selection* ns = &gm->h_sel;
        double b1 = oc.b1, b2 = oc.b2;
        int64_t t_first = -1;
        for (int j = 0; j < gm->r_eff; j++) {
            if (selection_row_is_padding(ns, j)) continue;
            int i = ns->idx[j];
            td[i]++;
            if (t_first < 0) t_first = td[i];
            counts_differ += td[i] != t_first;
            double bc1 = 1 - pow(b1, (double)td[i]), bc2 = 1 - pow(b2, (double)td[i]);
            for (int k = 0; k < other; k++) {
                double g = ns->scale[j] * (cols ? G[(size_t)k * in + i] : G[(size_t)i * in + k]);
                double* mm = &md[(size_t)i * other + k]; double* vv = &vd[(size_t)i * other + k];
                *mm = b1 * *mm + (1 - b1) * g;
                *vv = b2 * *vv + (1 - b2) * g * g;
                double u = (*mm / bc1) / (sqrt(*vv / bc2) + oc.eps);
                size_t wi = cols ? (size_t)k * in + i : (size_t)i * in + k;
                Wd[wi] -= (double)lr * oc.alpha * ns->upscale[j] * u;
                if (bf16) { *mm = bf16_round_d(*mm); *vv = bf16_round_d(*vv); }  // the store's rounding, as modelled
            }
        }
        state_get_all(got, gm->m, proj_sub_numel(gm), bf16);
        for (int j = 0; j < gm->r_eff; j++) {
            if (selection_row_is_padding(ns, j)) continue;
            for (int k = 0; k < other; k++) {
                size_t sn = cols ? (size_t)k * gm->r_eff + j : (size_t)j * other + k;
                double ref = md[(size_t)ns->idx[j] * other + k];
                moment_err = fmax(moment_err, fabs(got[sn] - ref) / (fabs(ref) + 0.1 * sqrt(vd[(size_t)ns->idx[j] * other + k]) + 1e-9));
            }
        }
        state_get_all(got, gm->v, proj_sub_numel(gm), bf16);
        for (int j = 0; j < gm->r_eff; j++) {
            if (selection_row_is_padding(ns, j)) continue;
            for (int k = 0; k < other; k++) {
                size_t sn = cols ? (size_t)k * gm->r_eff + j : (size_t)j * other + k;
                double ref = vd[(size_t)ns->idx[j] * other + k];
                moment_err = fmax(moment_err, fabs(got[sn] - ref) / (ref + 1e-9));
            }
        }
    }
    for (size_t i = 0; i < pt.total; i++) { w_err = fmax(w_err, fabs(W[i] - Wd[i])); w_ref = fmax(w_ref, fabs(Wd[i])); }
    CHECK(refreshes >= 3, "%s: %d refreshes", label, refreshes);
    CHECK(kept > 0 && counts_differ > 0, "%s: rows kept across refreshes (%d), so counts differ between rows (%d)", label, kept,
          counts_differ);
    if (method == SEL_TOPR) CHECK(rescaled == 0, "%s: top-r keeps rho 1: no kept row rescaled (%d)", label, rescaled);
    else CHECK(rescaled > 0 && returned > 0 && merged > 0, "%s: kept rows whose rho changed (%d), rows that left and came back (%d), merged draws (%d)",
               label, rescaled, returned, merged);
    if (align > 1) CHECK(padded > 0, "%s: padding rows of --grass-row-align %d present (%d)", label, align, padded);
    CHECK(remap_bad == 0, "%s: remapped m, v = stored old value * f (v: f*f) in fp32%s, bit for bit (%zu differ)", label,
          bf16 ? ", rounded to nearest even bf16" : "", remap_bad);
    CHECK(slot_bad == 0, "%s: per-row counts follow their rows; padding and unused slots zero with count 0 (%zu bad)", label, slot_bad);
    CHECK(moment_err < mtol, "%s: m, v vs float64 per-row reference over %d steps (max rel err %.3g)", label, steps, moment_err);
    CHECK(w_err < (bf16 ? 2e-3 : 2e-5) * w_ref + 1e-6, "%s: W vs float64 with per-row bias corrections (max err %.3g of %.3g)",
          label, w_err, w_ref);
    optim_free(&o);
    backend_free(W);
    free(Wd); free(md); free(vd); free(td); free(rho_d); free(in_sel); free(ever); free(old_m); free(old_v); free(old_idx);
    free(old_scale); free(got); free(X); free(dY); free(G);
    param_table_free(&pt);
}

// ---- GaLore's own SVD (cpu_svd_f64, where LAPACK is absent) against LAPACK and the truth -------
static const double EPS32 = 5.960464477539063e-8;  // 2^-24, fp32's unit roundoff

// Q (rows x cols, row-major, rows >= cols): orthonormal columns from normal draws, by modified
// Gram-Schmidt done twice (the second pass leaves them orthonormal to ~1e-16)
static void random_orthonormal(double* Q, int rows, int cols) {
    for (int i = 0; i < rows * cols; i++) Q[i] = randn();
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < cols; j++) {
            for (int k = 0; k < j; k++) {
                double d = 0;
                for (int i = 0; i < rows; i++) d += Q[i * cols + j] * Q[i * cols + k];
                for (int i = 0; i < rows; i++) Q[i * cols + j] -= d * Q[i * cols + k];
            }
            double nn = 0;
            for (int i = 0; i < rows; i++) nn += Q[i * cols + j] * Q[i * cols + j];
            for (int i = 0; i < rows; i++) Q[i * cols + j] /= sqrt(nn);
        }
}

// LAPACK's sgesvd, jobu 'N', jobvt 'S', of the column-major m x n A (copied): p = min(m, n) values and
// rows of VT (p x n, leading dimension p)
static void lapack_svd(const float* A, int m, int n, float* sv, float* VT) {
    int p = m < n ? m : n, lwork = cpu_gesvd_lwork(m, n), info = 0, one = 1;
    float* a = (float*)malloc_check((size_t)m * n * sizeof(float));
    float* w = (float*)malloc_check((size_t)lwork * sizeof(float));
    float dummy = 0;
    memcpy(a, A, (size_t)m * n * sizeof(float));
    sgesvd_("N", "S", &m, &n, a, &m, sv, &dummy, &one, VT, &p, w, &lwork, &info);
    if (info != 0) fatal("sgesvd %d x %d: info %d", m, n, info);
    free(a); free(w);
}

// A = U diag(sigma) V^T (column-major m x n), rounded to fp32, with U (m x k) and V (n x k) random
// orthonormal, k = the number of sigma given (k <= min(m, n)); dup: V = [Q; Q] / sqrt(2) (n even),
// so that A = [B, B] holds its rank k exactly in fp32 and n - k singular values are exactly 0.
// The own SVD (float64) and LAPACK's (fp32) are compared with the truth and with each other.
// Tolerances, with E = A - U S V^T the fp32 rounding (|E|_F measured, ~eps32 |A|_F):
//  - values: Weyl's theorem gives |sigma_k(A) - sigma_k| <= |E|_2 <= |E|_F. The own SVD adds the
//    float64 error of A^T A's eigenvalues, ~ n eps64 sigma_1^2, which is a singular value error of
//    up to sqrt(n eps64) sigma_1 (~7e-8 sigma_1 at n = 24) where sigma is near 0; LAPACK adds its
//    backward error, c eps32 |A|_F with a modest c (below 4 measured for these shapes; 8 allowed).
//  - vectors: the right singular subspace of a cluster of equal sigma, as its orthogonal projector
//    V_C V_C^T (which is free of the signs and of the basis within the cluster), moves by at most
//    ~sqrt(2) |perturbation| / gap (Wedin's theorem; gap = the distance of the cluster's sigma to
//    the rest of the spectrum), so: own vs truth 2 |E|_F / gap, own vs LAPACK 2 * 8 eps32 |A|_F / gap.
//  - the first r rows after galore_signed_rows (singletons only): the same bound as the projector.
static void svd_case(int m, int n, const double* sigma, int k, int dup, const char* label) {
    int p = m < n ? m : n;
    double* U = (double*)malloc_check((size_t)m * k * sizeof(double));
    double* V = (double*)calloc_check((size_t)n * k, sizeof(double));
    random_orthonormal(U, m, k);
    if (dup) {
        random_orthonormal(V, n / 2, k);
        for (int i = 0; i < n / 2 * k; i++) { V[i] /= sqrt(2.0); V[n / 2 * k + i] = V[i]; }
    } else {
        random_orthonormal(V, n, k);
    }
    float* A = (float*)malloc_check((size_t)m * n * sizeof(float));
    double e2 = 0, a2 = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++) s += U[i * k + l] * sigma[l] * V[j * k + l];
            A[i + (size_t)j * m] = (float)s;
            e2 += (A[i + (size_t)j * m] - s) * (A[i + (size_t)j * m] - s);
            a2 += s * s;
        }
    const double ef = sqrt(e2), af = sqrt(a2), s1 = k > 0 ? sigma[0] : 0.0;
    // the true spectrum, n values (sigma, then zeros), and the own SVD's
    double* st = (double*)calloc_check(n, sizeof(double));
    for (int l = 0; l < k; l++) st[l] = sigma[l];
    float* so = (float*)malloc_check(n * sizeof(float));
    float* VTo = (float*)malloc_check((size_t)n * n * sizeof(float));
    float* work = (float*)malloc_check(cpu_svd_f64_work_floats(n) * sizeof(float) + sizeof(float));
    cpu_svd_f64(A, m, n, so, VTo, work + 1);  // work + 1: a float-aligned workspace must do
    float* sl = (float*)malloc_check(p * sizeof(float));
    float* VTl = (float*)malloc_check((size_t)p * n * sizeof(float));
    lapack_svd(A, m, n, sl, VTl);
    double sv_noise = sqrt(n * 2.2e-16) * s1;
    double e_val = 0, e_val_l = 0, e_res = 0, e_orth = 0;
    int finite = 1, descending = 1;
    for (int i = 0; i < n; i++) {
        e_val = fmax(e_val, fabs(so[i] - st[i]));
        if (i < p) e_val_l = fmax(e_val_l, fabs(so[i] - sl[i]));
        if (i > 0 && so[i] > so[i - 1]) descending = 0;
        double r2 = 0;  // |A v_i| - sigma_i: the vectors belong to the values
        for (int a = 0; a < m; a++) {
            double s = 0;
            for (int b = 0; b < n; b++) s += (double)A[a + (size_t)b * m] * VTo[i + (size_t)b * n];
            r2 += s * s;
        }
        e_res = fmax(e_res, fabs(sqrt(r2) - so[i]));
        for (int j = 0; j < n; j++) {
            double d = 0;
            for (int b = 0; b < n; b++) d += (double)VTo[i + (size_t)b * n] * VTo[j + (size_t)b * n];
            e_orth = fmax(e_orth, fabs(d - (i == j)));
            if (!isfinite(VTo[i + (size_t)j * n])) finite = 0;
        }
    }
    CHECK(finite, "%s: the own VT is finite", label);
    CHECK(descending, "%s: the own singular values descend", label);
    const double tol_val = ef + sv_noise, tol_val_l = 8 * EPS32 * af + sv_noise;
    CHECK(e_val <= tol_val, "%s: own singular values vs the truth: %.3g > |E|_F + sqrt(n eps64) sigma_1 = %.3g", label, e_val, tol_val);
    CHECK(e_val_l <= tol_val_l, "%s: own singular values vs LAPACK's: %.3g > 8 eps32 |A|_F + sqrt(n eps64) sigma_1 = %.3g", label,
          e_val_l, tol_val_l);
    // |A v| - sigma: A v in float64 from the fp32 v, whose rounding moves it by ~eps32 sqrt(n) |A|_2
    const double tol_res = 4 * EPS32 * sqrt((double)n) * (s1 > 0 ? s1 : 1) + sv_noise, tol_orth = 2 * EPS32 * sqrt((double)n);
    CHECK(e_res <= tol_res, "%s: |A v_k| = sigma_k (max dev %.3g > %.3g)", label, e_res, tol_res);
    // V^T V = I: float64 eigenvectors rounded to fp32 (each entry by eps32 |v|), n products summed
    CHECK(e_orth <= tol_orth, "%s: own VT orthonormal (max |V^T V - I| %.3g > %.3g)", label, e_orth, tol_orth);
    // the clusters of the nonzero singular values: subspace projectors, own vs truth and vs LAPACK
    double worst_t = 0, worst_l = 0, worst_signed = 0;
    float* ro = (float*)malloc_check((size_t)p * n * sizeof(float));
    float* rl = (float*)malloc_check((size_t)p * n * sizeof(float));
    float* VTl_n = (float*)malloc_check((size_t)n * n * sizeof(float));  // LAPACK's VT laid out with leading dimension n
    for (int r = 0; r < p; r++) for (int j = 0; j < n; j++) VTl_n[r + (size_t)j * n] = VTl[r + (size_t)j * p];
    galore_signed_rows(ro, VTo, n, p);
    galore_signed_rows(rl, VTl_n, n, p);
    for (int c0 = 0; c0 < k;) {
        int c1 = c0 + 1;
        while (c1 < k && fabs(sigma[c1] - sigma[c0]) <= 1e-12 * s1) c1++;
        double gap = INFINITY;
        if (c0 > 0) gap = fmin(gap, sigma[c0 - 1] - sigma[c0]);
        gap = fmin(gap, sigma[c0] - (c1 < n ? st[c1] : 0.0));
        double et = 0, el = 0;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) {
                double pt = 0, po = 0, pl = 0;
                for (int l = c0; l < c1; l++) {
                    pt += V[a * k + l] * V[b * k + l];
                    po += (double)VTo[l + (size_t)a * n] * VTo[l + (size_t)b * n];
                    pl += (double)VTl[l + (size_t)a * p] * VTl[l + (size_t)b * p];
                }
                et = fmax(et, fabs(po - pt)); el = fmax(el, fabs(po - pl));
            }
        worst_t = fmax(worst_t, et * gap / (2 * ef));
        worst_l = fmax(worst_l, el * gap / (2 * 8 * EPS32 * af));
        if (c1 == c0 + 1)  // a singleton: the signed rows agree too
            for (int j = 0; j < n; j++)
                worst_signed = fmax(worst_signed, fabs(ro[(size_t)c0 * n + j] - rl[(size_t)c0 * n + j]) * gap / (2 * 8 * EPS32 * af));
        c0 = c1;
    }
    // printed: the errors as fractions of their bounds
    printf("svd %-30s |E|_F %.1e; fractions of the bounds: values %.2f, vs LAPACK %.2f; |Av|-s %.2f; V^T V %.2f; "
           "subspaces %.2f, vs LAPACK %.2f; signed rows %.2f\n", label, ef, tol_val > 0 ? e_val / tol_val : 0, tol_val_l > 0 ? e_val_l / tol_val_l : 0,
           e_res / tol_res, e_orth / tol_orth, worst_t, worst_l, worst_signed);
    CHECK(worst_t <= 1, "%s: own singular subspaces vs the truth: %.3g of 2 |E|_F / gap", label, worst_t);
    CHECK(worst_l <= 1, "%s: own singular subspaces vs LAPACK's: %.3g of 16 eps32 |A|_F / gap", label, worst_l);
    CHECK(worst_signed <= 1, "%s: own signed rows vs LAPACK's: %.3g of 16 eps32 |A|_F / gap", label, worst_signed);
    free(U); free(V); free(A); free(st); free(so); free(VTo); free(work); free(sl); free(VTl); free(ro); free(rl); free(VTl_n);
}

// GaLore's projector as kernels_cpu.h builds it (LAPACK here) against the own SVD of the same
// column-major view (rows side: G itself as in x out; cols side: G^T), both through galore_signed_rows
static void projector_own_vs_lapack(int out, int in, int r, const char* label) {
    int cols = out > in, s = cols ? in : out, other = cols ? out : in;
    float* G = (float*)malloc_check((size_t)out * in * sizeof(float));
    for (int i = 0; i < out * in; i++) G[i] = randn();
    float* work = (float*)malloc_check(cpu_galore_work_floats(out, in) * sizeof(float));
    float* Pl = (float*)malloc_check((size_t)r * s * sizeof(float));
    cpu_galore_projector(Pl, G, out, in, cols, r, work);
    float* A = (float*)malloc_check((size_t)out * in * sizeof(float));
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) {
            if (cols) A[i + (size_t)j * out] = G[(size_t)i * in + j];
            else A[j + (size_t)i * in] = G[(size_t)i * in + j];
        }
    float* sv = (float*)malloc_check(s * sizeof(float));
    float* VT = (float*)malloc_check((size_t)s * s * sizeof(float));
    float* w = (float*)malloc_check(cpu_svd_f64_work_floats(s) * sizeof(float));
    cpu_svd_f64(A, other, s, sv, VT, w);
    float* Po = (float*)malloc_check((size_t)r * s * sizeof(float));
    galore_signed_rows(Po, VT, s, r);
    // gap: the smallest distance from one of the r values to its neighbours; bound as in svd_case
    double af = 0, gap = INFINITY, err = 0;
    for (int i = 0; i < out * in; i++) af += (double)G[i] * G[i];
    af = sqrt(af);
    for (int k = 0; k < r; k++) {
        if (k > 0) gap = fmin(gap, sv[k - 1] - sv[k]);
        gap = fmin(gap, k + 1 < s ? sv[k] - sv[k + 1] : sv[k]);
    }
    for (int i = 0; i < r * s; i++) err = fmax(err, fabs(Po[i] - Pl[i]));
    printf("projector %-28s gap %.3f of sigma_1 %.3f: max |own - LAPACK| %.3g (bound %.3g)\n", label, gap, sv[0], err,
           16 * EPS32 * af / gap);
    CHECK(err <= 16 * EPS32 * af / gap, "%s: projector own vs LAPACK %.3g > 16 eps32 |G|_F / gap %.3g", label, err,
          16 * EPS32 * af / gap);
    free(G); free(work); free(Pl); free(A); free(sv); free(VT); free(w); free(Po);
}

static void test_own_svd(void) {
    double sep[24], rep[24], zero[1] = {0};
    for (int i = 0; i < 24; i++) sep[i] = 3.0 * pow(0.8, i);  // relative gaps of 20%: from 3 down to 0.02
    // repeated values: 2, 2, 1, 1, 1, 0.5, 0.25, 0.25, then 0.8^i down
    const double r0[8] = {2, 2, 1, 1, 1, 0.5, 0.25, 0.25};
    for (int i = 0; i < 24; i++) rep[i] = i < 8 ? r0[i] : 0.25 * pow(0.8, i - 7);
    svd_case(40, 12, sep, 12, 0, "tall 40x12");
    svd_case(16, 16, sep, 16, 0, "square 16x16");
    svd_case(10, 24, sep, 10, 0, "wide 10x24");
    svd_case(30, 12, sep, 4, 1, "rank 4 of 30x12 ([B, B])");
    svd_case(20, 20, sep, 7, 1, "rank 7 of 20x20 ([B, B])");
    svd_case(12, 16, sep, 5, 1, "rank 5 of wide 12x16 ([B, B])");
    svd_case(36, 16, rep, 16, 0, "repeated 36x16");
    svd_case(12, 12, rep, 12, 0, "repeated square 12x12");
    svd_case(9, 6, zero, 0, 0, "zero 9x6");
    projector_own_vs_lapack(24, 40, 6, "rows side 24x40");
    projector_own_vs_lapack(50, 20, 5, "cols side 50x20");
    projector_own_vs_lapack(16, 16, 16, "square, full rank");
}

// ---- GaLore: one matrix against a float64 implementation -------------------------------------
// GaLore on one out x in matrix for `steps` steps of `accum` micro-batches, K steps between
// projectors: the projector against the top-r eigenvectors of G G^T (rows side) or G^T G (cols
// side) in float64 (kernels_cpu.h's cpu_sym_eigen_f64), signed as documented; R = P^T G (or G P);
// moments carried across projector changes; W after every step against W -= lr (alpha P D + wd W)
// in float64.
// The conventions galore_matrix_case runs with (--galore-side, --adam-eps-style, --adam-eps): the
// float64 reference projects the side the rule names (official: columns when out >= in; rows: columns
// when out > in) and forms the direction in the style named, and with a large eps it also checks
// that the other style's W is far from the result (the style is seen).
static int g_galore_side = GALORE_SIDE_OFFICIAL, g_eps_style = EPS_AUTO;
static float g_eps = 1e-8f;
static int g_galore_refresh = REFRESH_KEEP;  // --galore-refresh-state of galore_matrix_case
static void galore_matrix_case(int out, int in, int r, int K, int accum, float wd, const char* label) {
    ParamTable pt = one_matrix_table(out, in);
    const int N = 7, steps = 5;
    OptimConfig oc;
    optim_config_defaults(&oc);
    oc.type = OPT_GALORE; oc.grass_rank = r; oc.update_freq = K; oc.alpha = 0.25f; oc.weight_decay = wd; oc.fused = 0;
    oc.galore_side = g_galore_side; oc.eps_style = g_eps_style; oc.eps = g_eps;
    int raw = g_eps_style != EPS_CORRECTED;  // auto is raw for GaLore
    oc.galore_refresh = g_galore_refresh;
    int64_t t = 0;  // the reference's Adam step count: since the start (keep), since the refresh (reset)
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    double* Wd = (double*)malloc_check(pt.total * sizeof(double));
    double* Wo = (double*)malloc_check(pt.total * sizeof(double));  // W with the other eps style
    for (size_t i = 0; i < pt.total; i++) { W[i] = 0.1f * randn(); Wd[i] = Wo[i] = W[i]; }
    Optimizer o;
    OptimRuntime rt = optim_runtime(&oc, 0, 1, accum, 0);
    CHECK(rt.norm_path == (accum == 1 ? NP_LAYER_G : NP_FULL_G), "%s: the SVD pass holds %s", label,
          accum == 1 ? "one layer's gradients" : "every gradient");
    optim_init(&o, &oc, &rt, &pt, W);
    int cols = g_galore_side == GALORE_SIDE_OFFICIAL ? out >= in : out > in, s = cols ? in : out, other = cols ? out : in;
    CHECK(o.gm[0].cols_side == cols && o.gm[0].dim_sel == s, "%s: projects the %s (%d)", label, cols ? "columns" : "rows", s);
    size_t nsub = (size_t)r * other;
    double* Do = (double*)malloc_check(nsub * sizeof(double));  // the direction in the other eps style
    double* md = (double*)calloc_check(nsub, sizeof(double));
    double* vd = (double*)calloc_check(nsub, sizeof(double));
    double* P = (double*)calloc_check((size_t)s * r, sizeof(double));   // s x r
    double* M = (double*)malloc_check((size_t)s * s * sizeof(double));
    double* V = (double*)malloc_check((size_t)s * s * sizeof(double));
    double* lam = (double*)malloc_check((size_t)s * sizeof(double));
    double* Rd = (double*)malloc_check(nsub * sizeof(double));
    float* X = (float*)malloc_check((size_t)accum * N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)accum * N * out * sizeof(float));
    double* G = (double*)malloc_check((size_t)out * in * sizeof(double));
    double max_err = 0, max_ref = 0, p_err = 0, r_err = 0, r_ref = 0, other_err = 0;
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < accum * N * in; i++) X[i] = randn();
        for (int i = 0; i < accum * N * out; i++) dY[i] = randn();
        for (int a = 0; a < out; a++)
            for (int b = 0; b < in; b++) {
                double sum = 0;
                for (int n = 0; n < accum * N; n++) sum += (double)dY[n * out + a] * X[n * in + b];
                G[(size_t)a * in + b] = sum;
            }
        float lr = 0.01f * (step + 1);
        optim_begin_step(&o, step, lr);
        int refresh = optim_needs_refresh(&o);
        CHECK(refresh == (step % K == 0), "%s: new projector at step %d iff step %% K == 0", label, step);
        if (refresh) {
            optim_begin_norm_pass(&o);
            for (int a = 0; a < accum; a++) {
                optim_begin_micro(&o, a);
                grad_linear(&o, 0, dY + (size_t)a * N * out, out, X + (size_t)a * N * in, N);
            }
            grad_layer_done(&o, 0);
            optim_refresh(&o);
            // float64: the top-r eigenvectors of G G^T (rows) or G^T G (cols), signed
            for (int i = 0; i < s; i++)
                for (int j = 0; j < s; j++) {
                    double sum = 0;
                    for (int k = 0; k < other; k++)
                        sum += cols ? G[(size_t)k * in + i] * G[(size_t)k * in + j] : G[(size_t)i * in + k] * G[(size_t)j * in + k];
                    M[i * s + j] = sum;
                }
            cpu_sym_eigen_f64(M, s, V, lam);  // kernels_cpu.h, tested against LAPACK by svd_case
            {   // the logged share: the top r eigenvalues of G G^T (squared singular values) over all
                double kept = 0, total = 0;
                for (int k = 0; k < s; k++) { total += lam[k]; if (k < r) kept += lam[k]; }
                double got = o.refreshed.kept / o.refreshed.total;
                CHECK(fabs(got - kept / total) < 1e-5, "%s: captured %.6f vs float64 %.6f", label, got, kept / total);
            }
            for (int k = 0; k < r; k++) {
                int best = 0;
                for (int i = 1; i < s; i++) if (fabs(V[i * s + k]) > fabs(V[best * s + k])) best = i;
                double sign = V[best * s + k] < 0 ? -1.0 : 1.0;
                for (int i = 0; i < s; i++) {
                    P[(size_t)i * r + k] = sign * V[i * s + k];
                    p_err = fmax(p_err, fabs(o.gm[0].Pt[(size_t)k * s + i] - P[(size_t)i * r + k]));
                }
            }
            double mm = 0; for (size_t i = 0; i < nsub; i++) mm += fabs(((float*)o.gm[0].m)[i]) + fabs(((float*)o.gm[0].v)[i]);
            if (g_galore_refresh == REFRESH_KEEP)
                CHECK(step == 0 || mm > 0, "%s: moments carried over the projector change at step %d", label, step);
            else {
                CHECK(mm == 0 && o.gm[0].t == 0, "%s: reset: moments zero and count 0 at the new projector (step %d)", label, step);
                memset(md, 0, nsub * sizeof(double)); memset(vd, 0, nsub * sizeof(double));
                t = 0;
            }
        }
        for (int a = 0; a < accum; a++) {
            optim_begin_micro(&o, a);
            grad_linear(&o, 0, dY + (size_t)a * N * out, out, X + (size_t)a * N * in, N);
        }
        // R = P^T G (r x in) or G P (out x r), against float64
        for (int j = 0; j < r; j++)
            for (int k = 0; k < other; k++) {
                double sum = 0;
                for (int i = 0; i < s; i++) sum += P[(size_t)i * r + j] * (cols ? G[(size_t)k * in + i] : G[(size_t)i * in + k]);
                size_t ri = cols ? (size_t)k * r + j : (size_t)j * other + k;
                Rd[ri] = sum;
                r_err = fmax(r_err, fabs(o.gm[0].C[ri] - sum)); r_ref = fmax(r_ref, fabs(sum));
            }
        optim_step(&o);
        t++;  // keep: GaLore's Adam steps run on across projector changes
        double b1 = oc.b1, b2 = oc.b2, bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
        for (size_t i = 0; i < nsub; i++) {
            md[i] = b1 * md[i] + (1 - b1) * Rd[i];
            vd[i] = b2 * vd[i] + (1 - b2) * Rd[i] * Rd[i];
            double corrected = (md[i] / bc1) / (sqrt(vd[i] / bc2) + oc.eps);     // m^ / (sqrt(v^) + eps)
            double raw_v = sqrt(bc2) / bc1 * md[i] / (sqrt(vd[i]) + oc.eps);    // sqrt(bc2)/bc1 m / (sqrt(v) + eps)
            Rd[i] = raw ? raw_v : corrected;  // the direction D
            Do[i] = raw ? corrected : raw_v;
        }
        for (int a = 0; a < out; a++)
            for (int b = 0; b < in; b++) {
                double u = 0, uo = 0;  // (P D)[a, b] rows side, (D P^T)[a, b] cols side
                for (int j = 0; j < r; j++) {
                    u += cols ? Rd[(size_t)a * r + j] * P[(size_t)b * r + j] : P[(size_t)a * r + j] * Rd[(size_t)j * in + b];
                    uo += cols ? Do[(size_t)a * r + j] * P[(size_t)b * r + j] : P[(size_t)a * r + j] * Do[(size_t)j * in + b];
                }
                size_t wi = (size_t)a * in + b;
                Wd[wi] -= (double)lr * (oc.alpha * u + wd * Wd[wi]);
                Wo[wi] -= (double)lr * (oc.alpha * uo + wd * Wo[wi]);
            }
        for (size_t i = 0; i < pt.total; i++) {
            max_err = fmax(max_err, fabs(W[i] - Wd[i])); max_ref = fmax(max_ref, fabs(Wd[i]));
            other_err = fmax(other_err, fabs(W[i] - Wo[i]));
        }
    }
    printf("%-50s W vs float64: max err %.2e of %.2e; W of the other eps style off by %.2e\n", label, max_err, max_ref,
           other_err);
    if (g_eps >= 1e-2f)  // the style is seen: the other style's W is far from the result
        CHECK(other_err > 100 * 2e-6 * max_ref, "%s: the %s eps style's W differs by %.3g of %.3g (it would fail)",
              label, raw ? "corrected" : "raw", other_err, max_ref);
    CHECK(p_err < 2e-5, "%s: projector vs float64 eigenvectors (max err %.3g)", label, p_err);
    CHECK(r_err < 1e-5 * r_ref, "%s: R = P^T G vs float64 (max err %.3g of %.3g)", label, r_err, r_ref);
    // measured on 2026-11-30: projector 1.6e-6, R 1.4e-6 relative, W 1.6e-7 relative; a 0.1% change of the
    // update fails the last check
    CHECK(max_err < 2e-6 * max_ref, "%s: W after %d steps vs float64 GaLore (max err %.3g of %.3g)", label, steps,
          max_err, max_ref);
    optim_free(&o);
    backend_free(W);
    free(Wd); free(Wo); free(Do); free(md); free(vd); free(P); free(M); free(V); free(lam); free(Rd); free(X); free(dY); free(G);
    param_table_free(&pt);
}

// ---- whole model: fused vs unfused, and rank = m with top-r vs AdamW -----------------------------
typedef struct { Llama m; Optimizer o; float last_norm; } Run;

// overlap: run the overlapped all-reduce pipeline in one process (the runtime a rank of several
// would derive; the all-reduces themselves are no-ops here)
static void run_steps(Run* run, const LlamaConfig* c, const OptimConfig* oc, int B, int T, int accum, int steps,
                      const int* tokens /* steps*accum*B*(T+1) */, int overlap = 0) {
    llama_build(&run->m, c, B, T, 0);
    llama_init_random(&run->m, 5, NULL);
    OptimRuntime rt = optim_runtime(oc, 0, 1, accum, B * T);
    rt.overlap = overlap;
    optim_init(&run->o, oc, &rt, &run->m.pt, run->m.params);
    float dloss = 1.0f / (B * T * accum);
    int* in = (int*)malloc_check(B * T * sizeof(int));
    int* tg = (int*)malloc_check(B * T * sizeof(int));
    for (int s = 0; s < steps; s++) {
        float lr = 0.003f;
        const int* batch0 = tokens + (size_t)s * accum * B * (T + 1);
        optim_begin_step(&run->o, s, lr);
        if (optim_needs_refresh(&run->o)) {
            optim_begin_norm_pass(&run->o);
            for (int a = 0; a < accum; a++) {
                optim_begin_micro(&run->o, a);
                for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) {
                    in[b * T + t] = batch0[((size_t)a * B + b) * (T + 1) + t];
                    tg[b * T + t] = batch0[((size_t)a * B + b) * (T + 1) + t + 1];
                }
                llama_forward(&run->m, in, tg, B, T, 1, dloss);
                llama_backward(&run->m, &run->o, B, T);
            }
            optim_refresh(&run->o);
        }
        for (int a = 0; a < accum; a++) {
            for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) {
                in[b * T + t] = batch0[((size_t)a * B + b) * (T + 1) + t];
                tg[b * T + t] = batch0[((size_t)a * B + b) * (T + 1) + t + 1];
            }
            optim_begin_micro(&run->o, a);
            llama_forward(&run->m, in, tg, B, T, 1, dloss);
            llama_backward(&run->m, &run->o, B, T);
        }
        run->last_norm = optim_step(&run->o);
    }
    free(in); free(tg);
}

static double max_param_diff(Run* a, Run* b, double* scale) {
    double d = 0, s = 0;
    for (size_t i = 0; i < a->m.pt.total; i++) {
        d = fmax(d, fabs(a->m.params[i] - b->m.params[i]));
        s = fmax(s, fabs(b->m.params[i]));
    }
    *scale = s;
    return d;
}

static void free_run(Run* r) { optim_free(&r->o); llama_free(&r->m); }

static void test_model_level(void) {
    LlamaConfig c = {97, 32, 48, 2, 4, 2, 16, 0, 1e-5f, 10000.0f};
    const int B = 2, T = 8, accum = 2, steps = 5;
    int* tokens = (int*)malloc_check((size_t)steps * accum * B * (T + 1) * sizeof(int));
    for (int i = 0; i < steps * accum * B * (T + 1); i++) tokens[i] = (int)(splitmix64(&g_rng) % c.vocab_size);

    OptimConfig g;
    optim_config_defaults(&g);
    g.type = OPT_GRASS; g.grass_rank = 8; g.update_freq = 2; g.select = SEL_MULTINORM;
    Run fused, unfused;
    g.fused = 1; run_steps(&fused, &c, &g, B, T, accum, steps, tokens);
    g.fused = 0; run_steps(&unfused, &c, &g, B, T, accum, steps, tokens);
    double s, d = max_param_diff(&fused, &unfused, &s);
    CHECK(d == 0.0, "fused == unfused Grass through the model, with accumulation and refreshes (max diff %.3g of %.3g)", d, s);
    // no accumulation: fused with one compressed-gradient pool shared by the layers (what
    // optim_runtime derives for fused Grass with accum 1)
    Run shared, own;
    g.fused = 1; run_steps(&shared, &c, &g, B, T, 1, steps, tokens);
    g.fused = 0; run_steps(&own, &c, &g, B, T, 1, steps, tokens);
    CHECK(shared.o.C_pool != NULL && own.o.C_pool == NULL, "pool only in the shared configuration");
    d = max_param_diff(&shared, &own, &s);
    CHECK(d == 0.0, "fused with a shared compressed-gradient pool == unfused (max diff %.3g of %.3g)", d, s);
    // overlap_comm (what several ranks run): each layer's update waits until the next layer's
    // backward has been issued, and the pool has two halves; one process runs the same
    // pipeline with the all-reduces left out. Same weights and norm as the immediate update.
    Run ov_shared, ov_own, plain_own;
    g.fused = 1; run_steps(&ov_shared, &c, &g, B, T, 1, steps, tokens, 1);
    d = max_param_diff(&ov_shared, &own, &s);
    CHECK(d == 0.0, "fused, overlapped, two-half pool == unfused (max diff %.3g of %.3g)", d, s);
    CHECK(ov_shared.o.C_pool_numel == 2 * shared.o.C_pool_numel, "overlap doubles the pool (%zu vs %zu floats)",
          ov_shared.o.C_pool_numel, shared.o.C_pool_numel);
    // the dense gradients of each layer form one run in the compact buffer, the runs abut and
    // lie between the embeddings and the final norm/head: the dense overlap is on
    CHECK(ov_shared.o.overlap.dense == 1, "dense-gradient overlap enabled with overlap_comm");
    {
        size_t emb = ov_shared.m.pt.t[ov_shared.m.pt.embed].numel;
        CHECK(ov_shared.o.overlap.dense_lo[0] == emb &&
              ov_shared.o.overlap.dense_hi[c.n_layers - 1] < ov_shared.o.grad_total,
              "layer dense ranges start after the embeddings (%zu vs %zu) and end before the head",
              ov_shared.o.overlap.dense_lo[0], emb);
        OptimConfig ad; optim_config_defaults(&ad);
        Optimizer oa;
        OptimRuntime ort = optim_runtime(&ad, 0, 1, 1, 0);
        ort.overlap = 1;
        optim_init(&oa, &ad, &ort, &ov_shared.m.pt, ov_shared.m.params);
        size_t per_layer = 0;
        for (int i = 0; i < ov_shared.m.pt.n; i++) if (ov_shared.m.pt.t[i].layer == 0) per_layer += ov_shared.m.pt.t[i].numel;
        CHECK(oa.overlap.dense == 1 && oa.overlap.dense_hi[0] - oa.overlap.dense_lo[0] == per_layer,
              "AdamW: every tensor of layer 0 in its dense range (%zu of %zu values)",
              oa.overlap.dense_hi[0] - oa.overlap.dense_lo[0], per_layer);
        optim_free(&oa);
    }
    CHECK(ov_shared.last_norm == shared.last_norm && ov_shared.last_norm > 0,
          "overlapped fused gradient norm == fused (%.9g vs %.9g)", ov_shared.last_norm, shared.last_norm);
    CHECK(fabs(ov_shared.last_norm - own.last_norm) <= 1e-5 * own.last_norm,
          "fused gradient norm == unfused within rounding (%.9g vs %.9g)", ov_shared.last_norm, own.last_norm);
    run_steps(&ov_own, &c, &g, B, T, accum, steps, tokens, 1);
    g.fused = 0; run_steps(&plain_own, &c, &g, B, T, accum, steps, tokens);
    d = max_param_diff(&ov_own, &plain_own, &s);
    CHECK(d == 0.0, "fused, overlapped, with accumulation == unfused (max diff %.3g of %.3g)", d, s);
    free_run(&shared); free_run(&own); free_run(&ov_shared); free_run(&ov_own); free_run(&plain_own);
    // --grass-row-align 16 (the GPU build's default) against 1: the selections padded to 16 rows
    // with rows the update skips give the same weights to fp32 rounding (OpenBLAS's sgemm blocks
    // an r x n product by its shape, so a 16-row C may differ from an 8-row one in the last bit),
    // fused and unfused, with accumulation and weight decay; the real rows are the unpadded run's.
    // Measured 2026-11-30: 1.2e-7 of 1.01 (one ulp); updating the padding rows with their own
    // gradient instead moves the weights by 8.8e-3
    for (int fu = 0; fu <= 1; fu++) {
        OptimConfig pa = g; pa.fused = fu; pa.weight_decay = 0.1f;
        Run r1, r16;
        pa.row_align = 1; run_steps(&r1, &c, &pa, B, T, accum, steps, tokens);
        pa.row_align = 16; run_steps(&r16, &c, &pa, B, T, accum, steps, tokens);
        d = max_param_diff(&r16, &r1, &s);
        int padded = 0, same_rows = 1, aligned = 1;
        for (int k = 0; k < r16.o.n_gm; k++) {
            const ProjMatrix* a1 = &r1.o.gm[k]; const ProjMatrix* a16 = &r16.o.gm[k];
            aligned &= a16->r_eff % 16 == 0 || a16->r_eff == a16->dim_sel;
            padded += a16->r_eff - a1->r_eff;
            same_rows &= selection_real_rows(&a16->h_sel) == a1->r_eff;
            for (int j = 0, i = 0; j < a16->r_eff; j++)
                if (a16->h_sel.scale[j] != 0.0f) { same_rows &= i < a1->r_eff && a16->h_sel.idx[j] == a1->h_sel.idx[i]; i++; }
        }
        CHECK(aligned && padded > 0 && same_rows, "row align 16 (fused %d): every selection padded to 16 rows (%d rows added), the real "
              "rows the unpadded run's", fu, padded);
        CHECK(d <= 4e-7 * s && fabs(r16.last_norm - r1.last_norm) <= 1e-6 * r1.last_norm,
              "row align 16 == row align 1 to rounding (fused %d): max diff %.3g of %.3g, norms %.9g %.9g", fu, d, s, r16.last_norm, r1.last_norm);
        free_run(&r1); free_run(&r16);
    }
    Run init;
    OptimConfig a; optim_config_defaults(&a);
    run_steps(&init, &c, &a, B, T, accum, 0, tokens);
    double moved = max_param_diff(&fused, &init, &s);
    CHECK(moved > 1e-4, "Grass moved the weights (max change %.3g)", moved);
    free_run(&fused); free_run(&unfused); free_run(&init);

    // rank = the selected dimension with top-r (rho = 1), alpha = 1, no refresh after step 0:
    // the Grass update is AdamW's on every projected matrix
    g.select = SEL_TOPR; g.grass_rank = 0; g.grass_rank_frac = 1.0f; g.alpha = 1.0f; g.update_freq = 1000; g.fused = 1;
    Run gr, ad;
    run_steps(&gr, &c, &g, B, T, accum, steps, tokens);
    run_steps(&ad, &c, &a, B, T, accum, steps, tokens);
    d = max_param_diff(&gr, &ad, &s);
    CHECK(d < 1e-5 * s, "Grass with r = m, top-r, alpha 1 equals full-rank AdamW (max diff %.3g of %.3g)", d, s);
    free_run(&gr); free_run(&ad);
    // the learning-rate split: Grass at alpha 0.25 (projected matrices at lr/4, the rest at lr)
    // equals AdamW with --matrix-lr-scale 0.25, and not AdamW with one lr for everything
    g.alpha = 0.25f;
    OptimConfig a4 = a; a4.matrix_lr_scale = 0.25f;
    Run gr4, ad4, ad1;
    run_steps(&gr4, &c, &g, B, T, accum, steps, tokens);
    run_steps(&ad4, &c, &a4, B, T, accum, steps, tokens);
    run_steps(&ad1, &c, &a, B, T, accum, steps, tokens);
    d = max_param_diff(&gr4, &ad4, &s);
    CHECK(d < 1e-5 * s, "Grass with r = m, top-r, alpha 0.25 equals AdamW with matrix lr scale 0.25 (max diff %.3g of %.3g)", d, s);
    double d1 = max_param_diff(&gr4, &ad1, &s);
    CHECK(d1 > 100 * d && d1 > 1e-4, "and differs from AdamW with one lr (max diff %.3g)", d1);
    free_run(&gr4); free_run(&ad4);
    // GaLore through the whole model: the fused update (each layer during the backward pass, one
    // shared R buffer) equals the unfused one bit for bit, without and with accumulation
    {
        OptimConfig gl; optim_config_defaults(&gl);
        gl.type = OPT_GALORE; gl.grass_rank = 8; gl.update_freq = 2; gl.alpha = 0.25f; gl.weight_decay = 0.05f;
        for (int acc = 1; acc <= accum; acc += accum - 1) {
            Run gf, gu;
            gl.fused = 1; run_steps(&gf, &c, &gl, B, T, acc, steps, tokens);
            gl.fused = 0; run_steps(&gu, &c, &gl, B, T, acc, steps, tokens);
            d = max_param_diff(&gf, &gu, &s);
            CHECK(d == 0.0 && fabs(gf.last_norm - gu.last_norm) <= 1e-6 * gu.last_norm,
                  "GaLore fused == unfused, accumulation %d (max diff %.3g; norms within rounding, %.9g %.9g)",
                  acc, d, gf.last_norm, gu.last_norm);
            CHECK(acc > 1 || gf.o.C_pool != NULL, "GaLore fused without accumulation shares one R buffer");
            double mv = max_param_diff(&gf, &ad1, &s);
            CHECK(mv > 1e-4, "GaLore trains differently from AdamW (max diff %.3g)", mv);
            free_run(&gf); free_run(&gu);
            if (accum == 1) break;
        }
    }
    free_run(&ad1);
    {
        char err[256];
        ParamTable vpt; param_table_build(&vpt, &c, 1);
        OptimConfig bad = a; bad.matrix_lr_scale = 0.0f;
        CHECK(!optim_config_validate(&bad, &vpt, err, sizeof(err)) && strstr(err, "--matrix-lr-scale"), "matrix lr scale 0 refused: %s", err);
        bad = g; bad.matrix_lr_scale = 0.5f;
        CHECK(!optim_config_validate(&bad, &vpt, err, sizeof(err)) && strstr(err, "--grass-scale"), "matrix lr scale with Grass refused: %s", err);
        // the one rule for --zero 1 --master-weights 1: refused for every optimizer (whatever the ranks)
        for (int t = 0; t < 3; t++) {
            bad = t == 0 ? a : g; bad.type = (OptimizerType)t; bad.zero = 1; bad.master_weights = 1;
            CHECK(!optim_config_validate(&bad, &vpt, err, sizeof(err)) &&
                  strstr(err, "--zero 1 with --master-weights 1"),
                  "--zero 1 --master-weights 1 refused (%s): %s", OPTIMIZER_NAMES[t], err);
            bad.master_weights = 0;
            CHECK(optim_config_validate(&bad, &vpt, err, sizeof(err)), "--zero 1 alone accepted (%s)",
                  OPTIMIZER_NAMES[t]);
        }
        // Grass keep has per-row bias corrections, the raw eps style one eps / sqrt(bc2) per step
        bad = g; bad.type = OPT_GRASS; bad.grass_refresh = REFRESH_KEEP; bad.eps_style = EPS_RAW;
        CHECK(!optim_config_validate(&bad, &vpt, err, sizeof(err)) && strstr(err, "--adam-eps-style raw"),
              "Grass keep with the raw eps style refused: %s", err);
        bad.eps_style = EPS_CORRECTED;
        CHECK(optim_config_validate(&bad, &vpt, err, sizeof(err)), "Grass keep with the corrected eps style accepted (%s)", err);
        bad.grass_refresh = REFRESH_RESET; bad.eps_style = EPS_RAW;
        CHECK(optim_config_validate(&bad, &vpt, err, sizeof(err)), "Grass reset with the raw eps style accepted (%s)", err);
        param_table_free(&vpt);
    }
    free(tokens);
}

// ---- again= and trained= over several matrices --------------------------------------------------
// Three matrices (rows 6, 5, 7 selected; multinorm or top-r at rank 3, K = 1) over 8 steps of random gradients,
// the second one's rows made large so that its selections repeat: after each refresh the counts the
// log prints against the test's own record of every matrix's previous and past selections.
static void refresh_counts_case(GrassSelect method, const char* label) {
    ParamTable pt;
    memset(&pt, 0, sizeof(pt));
    pt.t = (ParamTensor*)calloc_check(3, sizeof(ParamTensor));
    const int outs[3] = {6, 5, 7}, in = 16, N = 5, steps = 8;
    param_table_add(&pt, "q", outs[0], in, 0, PT_LINEAR, LIN_Q);
    param_table_add(&pt, "k", outs[1], in, 0, PT_LINEAR, LIN_K);
    param_table_add(&pt, "v", outs[2], in, 0, PT_LINEAR, LIN_V);
    // its own random stream: the cases after it draw what they drew before it existed (the GaLore
    // reset cases' W tolerance of 2e-6 was set on those draws; another draw gave 6e-6 once)
    uint64_t saved_rng = g_rng;
    g_rng = 2026 + (uint64_t)method;
    OptimConfig oc; optim_config_defaults(&oc);
    oc.type = OPT_GRASS; oc.select = method; oc.grass_rank = 3; oc.update_freq = 1; oc.fused = 0; oc.seed = 5;
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    for (size_t i = 0; i < pt.total; i++) W[i] = 0.1f * randn();
    OptimRuntime rt = optim_runtime(&oc, 0, 1, 1, 0);
    Optimizer o;
    optim_init(&o, &oc, &rt, &pt, W);
    float* X = (float*)malloc_check((size_t)N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)N * 7 * sizeof(float));
    uint8_t held[3][7], ever[3][7];
    memset(held, 0, sizeof(held)); memset(ever, 0, sizeof(ever));
    int ok = 1, repeats = 0, grew = 0;
    int64_t last_trained = 0;
    for (int step = 0; step < steps; step++) {
        optim_begin_step(&o, step, 0.01f);
        optim_begin_norm_pass(&o);
        optim_begin_micro(&o, 0);
        for (int i = 0; i < N * in; i++) X[i] = randn();
        for (int t = 0; t < 3; t++) {
            for (int i = 0; i < N * outs[t]; i++) dY[i] = randn() * (t == 1 && i % outs[t] < 2 ? 20.0f : 1.0f);
            grad_linear(&o, t, dY, outs[t], X, N);
        }
        optim_refresh(&o);
        int64_t again = 0, distinct = 0, trained = 0, selectable = 0;
        for (int t = 0; t < 3; t++) {
            const ProjMatrix* g = &o.gm[o.gm_of_tensor[t]];
            record_selection(&g->h_sel, held[t], ever[t], outs[t], &again, &distinct, &trained);
            selectable += g->dim_sel;
        }
        if (o.refreshed.again != again || o.refreshed.trained != trained || o.refreshed.selectable != selectable ||
            o.refreshed.distinct != distinct) {
            ok = 0;
            printf("  %s step %d: again %lld trained %lld of %lld, want %lld, %lld of %lld\n", label, step,
                   (long long)o.refreshed.again, (long long)o.refreshed.trained, (long long)o.refreshed.selectable,
                   (long long)again, (long long)trained, (long long)selectable);
        }
        repeats += again > 0;
        grew += trained > last_trained;
        last_trained = trained;
        optim_begin_micro(&o, 0);
        for (int t = 0; t < 3; t++) {
            for (int i = 0; i < N * outs[t]; i++) dY[i] = randn();
            grad_linear(&o, t, dY, outs[t], X, N);
        }
        optim_step(&o);
    }
    CHECK(ok && repeats >= 2 && grew >= 2 && last_trained > 9,
          "%s: again= and trained= over 3 matrices and %d refreshes == the test's record (%d refreshes repeat rows, "
          "%lld of 18 rows trained)", label, steps, repeats, (long long)last_trained);
    optim_free(&o);
    backend_free(W); free(X); free(dY); param_table_free(&pt);
    g_rng = saved_rng;
}

// ---- grad_linears: the weight gradients of a fused GEMM (Q/K/V) --------------------------------
// Three linear layers adjacent in the table (out 6, 4, 4; in 9) whose output gradients are the
// column blocks of one N x 14 dY, as the model's dqkv. AdamW: the dense gradients lie side by
// side, so grad_linears takes one GEMM over the whole dY; Grass: each matrix reads its own
// column block (rows 14 apart) in the norm pass and in the gathered GEMM. Both against float64
// dY_i^T X; and every value of dY outside a block is NaN in a second copy, so a block read past
// its columns would show.
// Grass top-r, rank 2, K = 1, unfused, over the table pt: initialised and at step 0's norm pass
static void grass_norm_pass_start(Optimizer* o, const ParamTable* pt, float* W) {
    OptimConfig oc; optim_config_defaults(&oc);
    oc.type = OPT_GRASS; oc.select = SEL_TOPR; oc.grass_rank = 2; oc.update_freq = 1; oc.fused = 0;
    OptimRuntime rt = optim_runtime(&oc, 0, 1, 1, 0);
    optim_init(o, &oc, &rt, pt, W);
    optim_begin_step(o, 0, 0.01f);
    optim_begin_norm_pass(o);
    optim_begin_micro(o, 0);
}
static void grad_linears_case(void) {
    ParamTable pt;
    memset(&pt, 0, sizeof(pt));
    pt.t = (ParamTensor*)calloc_check(3, sizeof(ParamTensor));
    const int outs[3] = {6, 4, 4}, in = 9, N = 7, width = 14, cols0[3] = {0, 6, 10};
    param_table_add(&pt, "q", outs[0], in, 0, PT_LINEAR, LIN_Q);
    param_table_add(&pt, "k", outs[1], in, 0, PT_LINEAR, LIN_K);
    param_table_add(&pt, "v", outs[2], in, 0, PT_LINEAR, LIN_V);
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    for (size_t i = 0; i < pt.total; i++) W[i] = 0.1f * randn();
    float* X = (float*)malloc_check((size_t)N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)N * width * sizeof(float));
    for (int i = 0; i < N * in; i++) X[i] = randn();
    for (int i = 0; i < N * width; i++) dY[i] = randn();
    double* G = (double*)calloc_check((size_t)width * in, sizeof(double));  // the stacked dY^T X, 14 x 9
    for (int a = 0; a < width; a++)
        for (int b = 0; b < in; b++)
            for (int n = 0; n < N; n++) G[(size_t)a * in + b] += (double)dY[n * width + a] * X[n * in + b];
    {   // AdamW: one GEMM, the three gradients in the buffer as the weights are in the table
        OptimConfig oc; optim_config_defaults(&oc);
        OptimRuntime rt = optim_runtime(&oc, 0, 1, 1, 0);
        Optimizer o;
        optim_init(&o, &oc, &rt, &pt, W);
        optim_begin_step(&o, 0, 0.01f);
        optim_begin_micro(&o, 0);
        grad_linears(&o, 0, 3, dY, X, N);
        double err = 0;
        for (int t = 0; t < 3; t++) {
            const float* g = (const float*)optim_grad_of(&o, t).p;
            for (int a = 0; a < outs[t]; a++)
                for (int b = 0; b < in; b++) err = fmax(err, fabs(g[a * in + b] - G[(size_t)(cols0[t] + a) * in + b]));
        }
        CHECK(err < 1e-5, "grad_linears, AdamW: the q, k, v gradients from one GEMM == float64 dY_i^T X (max err %.2g)", err);
        optim_free(&o);
    }
    float* dYn = (float*)malloc_check((size_t)N * width * sizeof(float));
    for (int t = 0; t < 3; t++) {  // Grass: each block read alone, with NaN around it
        for (int i = 0; i < N * width; i++) dYn[i] = NAN;
        for (int n = 0; n < N; n++) memcpy(dYn + n * width + cols0[t], dY + n * width + cols0[t], outs[t] * sizeof(float));
        Optimizer o;
        grass_norm_pass_start(&o, &pt, W);
        grad_linear(&o, t, dYn + cols0[t], width, X, N);  // grad_linears' per-matrix call for block t
        const ProjMatrix* gm = &o.gm[o.gm_of_tensor[t]];
        double nerr = 0;
        for (int a = 0; a < outs[t]; a++) {
            double q = 0;
            for (int b = 0; b < in; b++) q += G[(size_t)(cols0[t] + a) * in + b] * G[(size_t)(cols0[t] + a) * in + b];
            nerr = fmax(nerr, fabs(gm->norms[a] - q) / q);
        }
        optim_refresh(&o);
        optim_begin_micro(&o, 0);
        grad_linear(&o, t, dYn + cols0[t], width, X, N);
        double cerr = 0;
        for (int j = 0; j < gm->r_eff; j++)
            for (int b = 0; b < in; b++)
                cerr = fmax(cerr, fabs(gm->C[(size_t)j * in + b] - gm->h_sel.scale[j] * G[(size_t)(cols0[t] + gm->h_sel.idx[j]) * in + b]));
        CHECK(!gm->cols_side && nerr < 1e-5 && cerr < 1e-5,
              "grad_linear on column block %d of a fused dY (rows %d apart, NaN around it): norms (rel err %.2g) and C (err %.2g) "
              "== float64", t, width, nerr, cerr);
        optim_free(&o);
    }
    {   // and grad_linears over the whole dY gives each matrix the same C
        Optimizer o;
        grass_norm_pass_start(&o, &pt, W);
        grad_linears(&o, 0, 3, dY, X, N);
        optim_refresh(&o);
        optim_begin_micro(&o, 0);
        grad_linears(&o, 0, 3, dY, X, N);
        double cerr = 0;
        for (int t = 0; t < 3; t++) {
            const ProjMatrix* gm = &o.gm[o.gm_of_tensor[t]];
            for (int j = 0; j < gm->r_eff; j++)
                for (int b = 0; b < in; b++)
                    cerr = fmax(cerr, fabs(gm->C[(size_t)j * in + b] - gm->h_sel.scale[j] * G[(size_t)(cols0[t] + gm->h_sel.idx[j]) * in + b]));
        }
        CHECK(cerr < 1e-5, "grad_linears, Grass: each of q, k, v gets its own rho B G from its block (max err %.2g)", cerr);
        optim_free(&o);
    }
    free(X); free(dY); free(dYn); free(G);
    backend_free(W);
    param_table_free(&pt);
}

// ---- the norm pass: scores of the step's gradient, over micro-batches -------------------------
// One matrix, a step of `micro` micro-batches, G = sum_b dY_b^T X_b in float64. exact gives G's
// squared row (or column) norms; micro gives the sum of the micro-batches' norms instead (not
// G's unless micro == 1); sketch gives ||row_i(G S)||^2 / k, unbiased: its mean over many
// refreshes (a fresh S each) approaches G's norms and its relative variance is at most 2/k.
static void norm_pass_case(int out, int in, int micro, const char* label) {
    ParamTable pt = one_matrix_table(out, in);
    const int N = 5, refreshes = 300;
    int cols = out > in, dim = cols ? in : out;
    float* W = (float*)backend_malloc(pt.total * sizeof(float), "w");
    float* X = (float*)malloc_check((size_t)micro * N * in * sizeof(float));
    float* dY = (float*)malloc_check((size_t)micro * N * out * sizeof(float));
    for (int i = 0; i < micro * N * in; i++) X[i] = randn();
    for (int i = 0; i < micro * N * out; i++) dY[i] = randn() * (1.0f + (i % out) * 0.3f);  // rows of unequal size
    double* q = (double*)calloc_check(dim, sizeof(double));       // G's squared norms
    double* qmicro = (double*)calloc_check(dim, sizeof(double));  // the sum of each micro-batch's
    for (int a = 0; a < out; a++)
        for (int b = 0; b < in; b++) {
            double g = 0;
            for (int m = 0; m < micro; m++) {
                double gm = 0;
                for (int n = 0; n < N; n++) gm += (double)dY[((size_t)m * N + n) * out + a] * X[((size_t)m * N + n) * in + b];
                g += gm;
                qmicro[cols ? b : a] += gm * gm;
            }
            q[cols ? b : a] += g * g;
        }
    const char* names[] = {"exact", "micro", "sketch"};
    int modes[] = {NORMS_EXACT, NORMS_MICRO, NORMS_SKETCH};
    for (int mi = 0; mi < 3; mi++) {
        OptimConfig oc;
        optim_config_defaults(&oc);
        oc.type = OPT_GRASS; oc.select = SEL_TOPR; oc.grass_rank = 2; oc.update_freq = 1; oc.fused = 0;
        oc.norms = modes[mi]; oc.sketch_dim = 16;
        OptimRuntime rt = optim_runtime(&oc, 0, 1, micro, N);
        Optimizer o;
        optim_init(&o, &oc, &rt, &pt, W);
        double* mean = (double*)calloc_check(dim, sizeof(double));
        double* sq = (double*)calloc_check(dim, sizeof(double));
        int reps = modes[mi] == NORMS_SKETCH ? refreshes : 1;
        for (int rep = 0; rep < reps; rep++) {
            o.step = rep;  // a fresh sketch per refresh (drawn from the step)
            optim_begin_norm_pass(&o);
            for (int m = 0; m < micro; m++) {
                optim_begin_micro(&o, m);
                grad_linear(&o, 0, dY + (size_t)m * N * out, out, X + (size_t)m * N * in, N);
            }
            optim_refresh(&o);
            for (int i = 0; i < dim; i++) { mean[i] += o.gm[0].norms[i] / reps; sq[i] += (double)o.gm[0].norms[i] * o.gm[0].norms[i] / reps; }
        }
        double err = 0, err_micro = 0, var_ratio = 0;
        for (int i = 0; i < dim; i++) {
            err = fmax(err, fabs(mean[i] - q[i]) / q[i]);
            err_micro = fmax(err_micro, fabs(mean[i] - qmicro[i]) / qmicro[i]);
            var_ratio = fmax(var_ratio, (sq[i] - mean[i] * mean[i]) / (q[i] * q[i]) / (2.0 / oc.sketch_dim));
        }
        if (modes[mi] == NORMS_EXACT) {
            CHECK(err < 1e-5, "%s: exact norm pass == float64 norms of the step's gradient over %d micro-batches (rel err %.2g)", label, micro, err);
        } else if (modes[mi] == NORMS_MICRO) {
            CHECK(err_micro < 1e-5, "%s: micro norm pass == the sum of the micro-batches' norms (rel err %.2g)", label, err_micro);
            if (micro > 1) CHECK(err > 1e-2, "%s: ... which is not the step's norm with %d micro-batches (rel diff %.2g)", label, micro, err);
        } else {
            // the mean of 300 estimates: std of the mean <= sqrt(2/16/300) = 2% of the norm
            CHECK(err < 0.08, "%s: sketch (k=16) unbiased: mean of %d refreshes within 8%% of the step's norms (worst %.3g)", label, reps, err);
            CHECK(var_ratio < 1.5, "%s: sketch relative variance <= 2/k (worst ratio to 2/k %.2f)", label, var_ratio);
        }
        printf("  norm pass %-6s %-28s rel err vs step %.2e, vs micro sum %.2e, variance / (2/k) %.2f\n", names[mi], label, err,
               err_micro, modes[mi] == NORMS_SKETCH ? var_ratio : 0.0);
        free(mean); free(sq);
        optim_free(&o);
    }
    free(q); free(qmicro); free(X); free(dY);
    backend_free(W);
    param_table_free(&pt);
}

// ---- the up-projection rule (--grass-upscale) ----------------------------------------------------
static void test_upscale_rules(void) {
    const int dim = 40, r = 24;
    float q[dim];
    for (int i = 0; i < dim; i++) q[i] = (float)(1 + (i * 7) % 13) * (i % 5 == 0 ? 0.01f : 1.0f);
    Selection sel[UPSCALE_COUNT];
    for (int rule = 0; rule < UPSCALE_COUNT; rule++) {
        sel[rule].idx = (int*)calloc_check(r, sizeof(int));
        sel[rule].scale = (float*)calloc_check(r, sizeof(float));
        sel[rule].upscale = (float*)calloc_check(r, sizeof(float));
        grass_select(SEL_MULTINORM, q, dim, r, rng_seed_for(3, 1, 2), &sel[rule]);
        grass_apply_upscale(rule, &sel[rule]);
    }
    const Selection* p = &sel[UPSCALE_PAPER];
    int counted = 0, dup = 0;
    double mean_paper = 0, mean_mean = 0, worst_ratio = 0, worst_paper = 0;
    for (int j = 0; j < p->r_eff; j++) {
        double count = p->upscale[j] / p->scale[j];
        counted += (int)lrint(count);
        dup += count > 1.5;
        worst_paper = fmax(worst_paper, fabs(count - lrint(count)));
        mean_paper += p->upscale[j] / p->r_eff;
        mean_mean += sel[UPSCALE_MEAN].upscale[j] / p->r_eff;
        CHECK(sel[UPSCALE_ONE].upscale[j] == 1.0f, "upscale one: row %d has factor %g", p->idx[j], sel[UPSCALE_ONE].upscale[j]);
    }
    for (int j = 0; j < p->r_eff; j++)
        worst_ratio = fmax(worst_ratio, fabs(sel[UPSCALE_MEAN].upscale[j] * mean_paper / p->upscale[j] - 1.0));
    CHECK(counted == r && worst_paper < 1e-5, "upscale paper: count * rho, the counts sum to the r = %d draws (%d)", r, counted);
    CHECK(dup > 0, "the case has rows drawn more than once (%d), so the rules differ", dup);
    CHECK(fabs(mean_mean - 1.0) < 1e-6 && worst_ratio < 1e-6, "upscale mean: the paper's factors over their mean %.4f "
          "(mean now %.7f, worst relative deviation %.2g)", mean_paper, mean_mean, worst_ratio);
    for (int rule = 0; rule < UPSCALE_COUNT; rule++) { free(sel[rule].idx); free(sel[rule].scale); free(sel[rule].upscale); }
}

int main(void) {
    test_line_buffered_stdout();
    backend_init(0);
    test_upscale_rules();
    grad_linears_case();
    refresh_counts_case(SEL_MULTINORM, "refresh counts, multinorm");
    refresh_counts_case(SEL_TOPR, "refresh counts, top-r");
    norm_pass_case(6, 9, 3, "rows side, 3 micro-batches");
    norm_pass_case(9, 6, 2, "cols side, 2 micro-batches");
    norm_pass_case(6, 9, 1, "rows side, 1 micro-batch");
    test_selection();
    test_own_svd();
    galore_matrix_case(10, 18, 4, 2, 1, 0.0f, "galore rows");
    galore_matrix_case(20, 9, 3, 3, 1, 0.1f, "galore cols wd");
    galore_matrix_case(12, 16, 5, 2, 2, 0.0f, "galore rows, 2 micro-batches");
    galore_matrix_case(16, 12, 4, 1, 3, 0.1f, "galore cols, 3 micro-batches, K=1");
    // square matrices: galore_torch's side (columns) by default, the rows with --galore-side rows; the
    // eps styles with an eps large enough to tell them apart
    galore_matrix_case(14, 14, 4, 2, 1, 0.0f, "galore square, official side (columns)");
    g_galore_side = GALORE_SIDE_ROWS;
    galore_matrix_case(14, 14, 4, 2, 2, 0.1f, "galore square, --galore-side rows, 2 micro-batches");
    galore_matrix_case(20, 9, 3, 3, 1, 0.0f, "galore cols, --galore-side rows");
    g_galore_side = GALORE_SIDE_OFFICIAL;
    g_eps = 0.5f;
    galore_matrix_case(14, 14, 4, 2, 1, 0.0f, "galore square, eps 0.5 auto (raw)");
    g_eps_style = EPS_CORRECTED;
    galore_matrix_case(10, 18, 4, 2, 1, 0.1f, "galore rows, eps 0.5 corrected");
    g_eps_style = EPS_RAW;
    galore_matrix_case(20, 9, 3, 3, 2, 0.0f, "galore cols, eps 0.5 raw, 2 micro-batches");
    g_eps_style = EPS_AUTO; g_eps = 1e-8f;
    g_galore_refresh = REFRESH_RESET;
    galore_matrix_case(10, 18, 4, 2, 1, 0.0f, "galore rows, refresh reset");
    galore_matrix_case(16, 12, 4, 2, 2, 0.1f, "galore cols, 2 micro-batches, refresh reset");
    g_galore_refresh = REFRESH_KEEP;
    grass_matrix_case(12, 20, 5, SEL_TOPR, 2, 0.0f, "rows topr");
    grass_matrix_case(24, 10, 4, SEL_TOPR, 3, 0.0f, "cols topr");
    grass_matrix_case(12, 20, 6, SEL_MULTINORM, 2, 0.1f, "rows multinorm wd");
    grass_matrix_case(24, 10, 7, SEL_UNIFORM, 2, 0.0f, "cols uniform");
    grass_matrix_case(16, 16, 5, SEL_MULTINORM_NR, 4, 0.0f, "square multinorm-nr");
    grass_matrix_case(16, 16, 5, SEL_UNIFORM_NR, 1, 0.0f, "square uniform-nr K=1");
    g_upscale = UPSCALE_ONE;   // the float64 reference applies whatever factors the selection holds
    grass_matrix_case(12, 20, 6, SEL_MULTINORM, 2, 0.0f, "rows multinorm upscale one");
    g_upscale = UPSCALE_MEAN;
    grass_matrix_case(24, 10, 7, SEL_UNIFORM, 2, 0.1f, "cols uniform upscale mean");
    g_upscale = UPSCALE_PAPER;
    g_clip = 5.0f;  // below the norms of these random gradients: every step after the first is clipped
    grass_matrix_case(12, 20, 6, SEL_MULTINORM, 2, 0.0f, "rows multinorm fused, clipped");
    grass_matrix_case(24, 10, 4, SEL_TOPR, 3, 0.1f, "cols topr fused, clipped, wd");
    g_clip = 0.0f;
    g_upscale = UPSCALE_PAPER;
    grass_keep_case(10, 18, 8, SEL_MULTINORM, 2, 12, 1, 0, 0, "keep rows multinorm fp32");
    grass_keep_case(20, 9, 7, SEL_MULTINORM, 2, 12, 4, 0, 1, "keep cols multinorm fused, align 4");
    grass_keep_case(12, 16, 9, SEL_MULTINORM, 1, 10, 8, 1, 0, "keep rows multinorm bf16, align 8, K=1");
    grass_keep_case(18, 10, 6, SEL_MULTINORM, 2, 12, 1, 1, 1, "keep cols multinorm bf16 fused");
    grass_keep_case(10, 14, 5, SEL_TOPR, 2, 12, 4, 0, 0, "keep rows topr, align 4");
    grass_keep_case(16, 8, 5, SEL_TOPR, 3, 12, 1, 1, 0, "keep cols topr bf16");
    test_model_level();
    return test_summary("test_grass");
}
