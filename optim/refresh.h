/*
 * optim/refresh.h: the refresh every K steps: the norm pass (Grass's row scores: exact, sketch or
 * micro; GaLore's whole gradients), GaLore's SVD, and the new selection or projector.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_REFRESH_H
#define GRASS_OPTIM_REFRESH_H

#include "optim/layout.h"

// The norm pass's share of one micro-batch for matrix g (dout: N x out, rows ld_dout apart; inp: N x in).
static void optim_norm_pass_grad(Optimizer* o, ProjMatrix* g, const floatX* dout, int ld_dout, const floatX* inp,
                                 int N) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    int in = t->cols, out = t->rows, k = o->cfg.sketch_dim;
    switch (o->rt.norm_path) {
    case NP_DIRECT:  // this micro-batch's squared norms, from blockwise GEMMs
        grass_grad_norms(g->norms, dout, ld_dout, inp, N, in, out, g->cols_side);
        break;
    case NP_LAYER_G:
    case NP_FULL_G:  // the whole fp32 gradient out x in: the gathered GEMM with every index, scale 1
        grass_gathered_grad(g->nacc, dout, ld_dout, inp, o->np.d_iota, o->np.d_ones, g->dim_sel, N, in, out,
                            g->cols_side, 1);
        break;
    case NP_SKETCH: {  // Y += G S, G = dY^T X: rows side dY^T (X S), cols side X^T (dY S) (= G^T S)
        const floatX* S = NULL;
        for (int j = 0; j < o->np.n_sketch; j++) if (o->np.sketch_dim_of[j] == g->other) S = o->np.sketch_S[j];
        const floatX* left = g->cols_side ? inp : dout;    // N x dim_sel
        const floatX* right = g->cols_side ? dout : inp;   // N x other
        int ld_left = g->cols_side ? in : ld_dout, ld_right = g->cols_side ? ld_dout : in;
        matmul_forward_strided(o->np.sketch_tmp, right, ld_right, S, N, g->other, k);  // N x k = right S
        grass_gathered_grad(g->nacc, left, ld_left, o->np.sketch_tmp, o->np.d_iota, o->np.d_ones, g->dim_sel, N, k,
                            g->dim_sel, 0, 1);
        break;
    }
    }
}

// GaLore: the projector of matrix g from its whole gradient G (fp32, summed over micro-batches and
// ranks), and the energy it keeps (the singular values, which galore_projector leaves in work)
static void optim_galore_svd(Optimizer* o, ProjMatrix* g, const float* G) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    galore_projector(g->Pt, g->Ptx, G, t->rows, t->cols, g->cols_side, g->r, o->galore.work);
    float* sv = (float*)malloc_check((size_t)g->dim_sel * sizeof(float));
    backend_download(sv, o->galore.work + (size_t)g->other * g->dim_sel, (size_t)g->dim_sel * sizeof(float));
    for (int j = 0; j < g->dim_sel; j++) {
        double e = (double)sv[j] * sv[j];
        o->refreshed.total += e;
        if (j < g->r) o->refreshed.kept += e;
    }
    free(sv);
}

// NP_LAYER_G: a layer's gradients are complete on this rank: sum them over the ranks, measure
// them, and leave the shared buffer zeroed for the next layer
static void optim_norm_pass_layer(Optimizer* o, int layer) {
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        const ParamTensor* t = &o->pt->t[g->tensor];
        if (t->layer != layer) continue;
        optim_allreduce_float(o, g->nacc, t->numel);
        if (o->cfg.type == OPT_GALORE) optim_galore_svd(o, g, g->nacc);
        else rows_sumsq(g->norms, g->nacc, t->rows, t->cols, g->cols_side);
        backend_memset0(g->nacc, t->numel * sizeof(float));
    }
}

// the host selection's indices and scales to the backend copies the kernels read
static void grass_upload_selection(ProjMatrix* g) {
    backend_upload(g->d_idx, g->h_sel.idx, g->r_eff * sizeof(int));
    backend_upload(g->d_scale, g->h_sel.scale, g->r_eff * sizeof(float));
    backend_upload(g->d_upscale, g->h_sel.upscale, g->r_eff * sizeof(float));
}

static void optim_begin_norm_pass(Optimizer* o) {
    o->refreshed.kept = 0.0; o->refreshed.total = 0.0;
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        if (g->norms != NULL) backend_memset0(g->norms, g->dim_sel * sizeof(float));
        if (o->rt.norm_path == NP_FULL_G) backend_memset0(g->nacc, o->pt->t[g->tensor].numel * sizeof(float));
        if (o->rt.norm_path == NP_SKETCH)
            backend_memset0(g->nacc, (size_t)g->dim_sel * o->cfg.sketch_dim * sizeof(float));
    }
    if (o->np.nacc_pool != NULL) backend_memset0(o->np.nacc_pool, o->np.nacc_pool_numel * sizeof(float));
    // a fresh sketch per refresh, the same on every rank: S^T (k x dim), entries +-1 with equal
    // probability (exact in bf16, E[S S^T] = k I), drawn from (seed, step, dim)
    for (int j = 0; j < o->np.n_sketch; j++) {
        size_t n = (size_t)o->cfg.sketch_dim * o->np.sketch_dim_of[j];
        float* h = (float*)malloc_check(n * sizeof(float));
        uint64_t rng = rng_seed_for(o->cfg.seed ^ 0x5E7C11ULL, (uint64_t)o->step, (uint64_t)o->np.sketch_dim_of[j]);
        for (size_t i = 0; i < n; i += 64) {
            uint64_t bits = splitmix64(&rng);
            for (size_t b = 0; b < 64 && i + b < n; b++) h[i + b] = (bits >> b) & 1 ? 1.0f : -1.0f;
        }
        backend_upload_floats(o->np.sketch_S[j], h, n);
        free(h);
    }
    o->mode = BWD_REFRESH;
}

// After the norm pass: each matrix's scores of the whole step, summed over the ranks
static void optim_finish_norms(Optimizer* o, ProjMatrix* g) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    switch (o->rt.norm_path) {
    case NP_DIRECT: optim_allreduce_float(o, g->norms, g->dim_sel); break;  // a no-op for exact (one rank)
    case NP_LAYER_G: break;  // measured layer by layer (optim_norm_pass_layer)
    case NP_FULL_G:
        optim_allreduce_float(o, g->nacc, t->numel);
        if (o->cfg.type == OPT_GALORE) optim_galore_svd(o, g, g->nacc);
        else rows_sumsq(g->norms, g->nacc, t->rows, t->cols, g->cols_side);
        break;
    case NP_SKETCH:
        optim_allreduce_float(o, g->nacc, (size_t)g->dim_sel * o->cfg.sketch_dim);
        rows_sumsq(g->norms, g->nacc, g->dim_sel, o->cfg.sketch_dim, 0);
        scale_floats(g->norms, 1.0f / (float)o->cfg.sketch_dim, g->dim_sel);  // E = the squared norm
        break;
    }
}

// FNV-1a over a selection, continuing h. with_scales 0: the rows and how often each was drawn
// (call it before grass_apply_upscale; the same for the same step's gradient however the batch
// was split, where the scales agree only to rounding); 1: the scales' bits (equal on every rank,
// or the ranks have drifted apart).
static uint64_t selection_hash(uint64_t h, const Selection* s, int with_scales) {
    for (int j = 0; j < s->r_eff; j++) {
        if (selection_row_is_padding(s, j)) continue;
        uint32_t sb, ub;
        memcpy(&sb, &s->scale[j], 4); memcpy(&ub, &s->upscale[j], 4);
        uint64_t v = (uint64_t)s->idx[j] * 1000003ULL;
        v += with_scales ? (((uint64_t)sb << 32) ^ ub) : (uint64_t)lrintf(s->upscale[j] / s->scale[j]);
        h ^= v; h *= 1099511628211ULL;
    }
    return h;
}
static uint64_t optim_selection_hash(const Optimizer* o) {
    uint64_t h = 1469598103934665603ULL;
    for (int k = 0; k < o->n_gm; k++) h = selection_hash(h, &o->gm[k].h_sel, 1);
    return h;
}

// --grass-refresh-state keep: where each row of the new selection `now` takes its moments from in
// the old one `was` (both ascending in the row index, padding rows scale 0): src[j] = the old slot
// of the same row, or -1 (a row new to the selection, or a padding row: zeros, count 0); factor[j]
// = now's rho / was's rho (fp32; 1 for top-r), the ratio that puts the kept moments in the units
// of the new C = rho B G (m times it, v times its square; docs/GRASS_IMPL.md); t_now[j] the row's
// own Adam step count (t_was of the old slot, else 0). A row of `was` no longer selected is
// dropped: its moments and count are released. Returns the rows kept.
static int grass_keep_plan(const Selection* was, const int64_t* t_was, const Selection* now, int* src, float* factor,
                           int64_t* t_now) {
    int kept = 0;
    for (int j = 0, s = 0; j < now->r_eff; j++) {
        src[j] = -1; factor[j] = 0.0f; t_now[j] = 0;
        if (selection_row_is_padding(now, j)) continue;
        while (s < was->r_eff && (was->idx[s] < now->idx[j] || selection_row_is_padding(was, s))) s++;
        if (s < was->r_eff && was->idx[s] == now->idx[j]) {
            src[j] = s; factor[j] = now->scale[j] / was->scale[s]; t_now[j] = t_was[s];
            kept++;
        }
    }
    return kept;
}

// Row j's bias corrections from its own count (keep), computed as adam_params computes the shared
// ones, so that rows with equal counts get reset's bits; padding rows (no update) take 1
static void grass_row_bias_corrections(const OptimConfig* c, ProjMatrix* g) {
    for (int j = 0; j < g->r_eff; j++) {
        int pad = selection_row_is_padding(&g->h_sel, j);
        if (!pad) g->row_t[j]++;
        g->h_bc[2 * j] = pad ? 1.0f : 1.0f - powf(c->b1, (float)g->row_t[j]);
        g->h_bc[2 * j + 1] = pad ? 1.0f : 1.0f - powf(c->b2, (float)g->row_t[j]);
    }
    backend_upload_async(g->d_bc, g->h_bc, 2 * (size_t)g->r_eff * sizeof(float));
}

// keep: carry matrix g's moments from the old selection `was` (slot counts t_was) to the new h_sel
static void grass_keep_moments(Optimizer* o, ProjMatrix* g, const Selection* was, const int64_t* t_was) {
    int* src = (int*)malloc_check((size_t)g->r_cap * sizeof(int));
    float* factor = (float*)malloc_check((size_t)g->r_cap * sizeof(float));
    grass_keep_plan(was, t_was, &g->h_sel, src, factor, g->row_t);
    for (int j = g->r_eff; j < g->r_cap; j++) g->row_t[j] = 0;
    backend_upload(o->remap.d_src, src, (size_t)g->r_eff * sizeof(int));
    backend_upload(o->remap.d_factor, factor, (size_t)g->r_eff * sizeof(float));
    grass_remap_state(g->m, o->remap.tmp, o->cfg.state_dtype, o->remap.d_src, o->remap.d_factor, 0, was->r_eff,
                      g->r_eff, g->r_cap, g->other, g->cols_side);
    grass_remap_state(g->v, o->remap.tmp, o->cfg.state_dtype, o->remap.d_src, o->remap.d_factor, 1, was->r_eff,
                      g->r_eff, g->r_cap, g->other, g->cols_side);
    free(src); free(factor);
}

// reset: matrix g's subspace moments start again at zero, its Adam step count at 0 (Grass's default,
// GaLore's with --galore-refresh-state reset)
static void proj_reset_moments(Optimizer* o, ProjMatrix* g) {
    size_t sub = proj_cap_numel(g) * state_dtype_size(o->cfg.state_dtype);
    backend_memset0(g->m, sub);
    backend_memset0(g->v, sub);
    g->t = 0;
}

// After the norm pass: sum the norms over ranks, select with the shared seed, reset or carry the moments.
static void optim_refresh(Optimizer* o) {
    int64_t step = o->step;
    int max_dim = 0;
    for (int k = 0; k < o->n_gm; k++) if (o->gm[k].dim_sel > max_dim) max_dim = o->gm[k].dim_sel;
    float* q = (float*)malloc_check((size_t)max_dim * sizeof(float));
    o->refreshed.hash = 1469598103934665603ULL;
    o->refreshed.again = o->refreshed.trained = o->refreshed.selectable = 0;
    uint8_t* prev = o->cfg.type == OPT_GRASS ? (uint8_t*)calloc_check((size_t)max_dim, 1) : NULL;
    for (int k = 0; k < o->n_gm && o->cfg.type == OPT_GALORE; k++) {
        // GaLore: the new projectors came from the SVDs (optim_norm_pass_layer, optim_finish_norms);
        // the moments carry over, as in GaLore (--galore-refresh-state keep), or start again at zero
        optim_finish_norms(o, &o->gm[k]);
        o->gm[k].r_eff = o->gm[k].r;
        if (o->cfg.galore_refresh == REFRESH_RESET) proj_reset_moments(o, &o->gm[k]);
    }
    // keep: the old selection of the matrix being refreshed (its rows, scales and slot counts)
    int keep = optim_grass_keeps(&o->cfg), cap = 0;
    for (int k = 0; k < o->n_gm; k++) if (o->gm[k].r_cap > cap) cap = o->gm[k].r_cap;
    Selection was = {0, NULL, NULL, NULL};
    int64_t* t_was = NULL;
    if (keep) {
        was.idx = (int*)malloc_check((size_t)cap * sizeof(int));
        was.scale = (float*)malloc_check((size_t)cap * sizeof(float));
        t_was = (int64_t*)malloc_check((size_t)cap * sizeof(int64_t));
    }
    for (int k = 0; k < o->n_gm && o->cfg.type == OPT_GRASS; k++) {
        ProjMatrix* g = &o->gm[k];
        optim_finish_norms(o, g);
        if (keep) {
            was.r_eff = g->r_eff;
            memcpy(was.idx, g->h_sel.idx, (size_t)g->r_eff * sizeof(int));
            memcpy(was.scale, g->h_sel.scale, (size_t)g->r_eff * sizeof(float));
            memcpy(t_was, g->row_t, (size_t)g->r_eff * sizeof(int64_t));
        }
        // the old selection's rows (padding left out), to count the new rows it already held
        for (int j = 0; j < g->r_eff; j++)
            if (!selection_row_is_padding(&g->h_sel, j)) prev[g->h_sel.idx[j]] = 1;
        uint64_t rng = rng_seed_for(o->cfg.seed, (uint64_t)step, (uint64_t)g->tensor);
        int r_eff = o->cfg.select_on_device
                  ? grass_select_device(o->cfg.select, g->norms, g->dim_sel, g->r, rng, g->d_idx, g->d_scale,
                                        g->d_upscale)
                  : -1;
        backend_download(q, g->norms, g->dim_sel * sizeof(float));
        if (r_eff >= 0) {  // selected in the backend: keep the host copy for checkpoints and checks
            g->h_sel.r_eff = g->r_eff = r_eff;
            backend_download(g->h_sel.idx, g->d_idx, r_eff * sizeof(int));
            backend_download(g->h_sel.scale, g->d_scale, r_eff * sizeof(float));
            backend_download(g->h_sel.upscale, g->d_upscale, r_eff * sizeof(float));
        } else {
            grass_select(o->cfg.select, q, g->dim_sel, g->r, rng, &g->h_sel);
            g->r_eff = g->h_sel.r_eff;
        }
        for (int i = 0; i < g->dim_sel; i++) o->refreshed.total += q[i];
        for (int j = 0; j < g->r_eff; j++) o->refreshed.kept += q[g->h_sel.idx[j]];
        o->refreshed.hash = selection_hash(o->refreshed.hash, &g->h_sel, 0);  // rows and counts
        for (int j = 0; j < g->r_eff; j++) {  // distinct rows, no padding yet
            o->refreshed.again += prev[g->h_sel.idx[j]];
            g->trained[g->h_sel.idx[j]] = 1;
        }
        for (int i = 0; i < g->dim_sel; i++) o->refreshed.trained += g->trained[i];
        o->refreshed.selectable += g->dim_sel;
        memset(prev, 0, (size_t)g->dim_sel);
        grass_apply_upscale(o->cfg.upscale, &g->h_sel);
        int padded = grass_pad_selection(&g->h_sel, g->dim_sel, o->cfg.row_align);
        g->r_eff = g->h_sel.r_eff;
        if (r_eff < 0 || o->cfg.upscale != UPSCALE_PAPER || padded > 0) grass_upload_selection(g);
        if (keep && was.r_eff > 0) {
            g->t = 0;
            grass_keep_moments(o, g, &was, t_was);
            continue;
        }
        proj_reset_moments(o, g);
        if (keep) memset(g->row_t, 0, (size_t)g->r_cap * sizeof(int64_t));
    }
    free(q); free(prev);
    free(was.idx); free(was.scale); free(t_was);
    o->mode = BWD_GRADS;
    // what was chosen: distinct rows of the r draws, and the per-row step multiplier (count * rho,
    // the factor on alpha * lr * the Adam direction; 1 for top-r)
    o->refreshed.distinct = 0;
    o->refreshed.draws = 0;
    o->refreshed.rows = 0;
    o->refreshed.mult_mean = 0;
    o->refreshed.mult_max = 0;
    for (int k = 0; k < o->n_gm; k++) {
        const ProjMatrix* g = &o->gm[k];
        o->refreshed.draws += g->r;
        o->refreshed.rows += g->r_eff;
        o->refreshed.distinct += o->cfg.type == OPT_GALORE ? g->r_eff : selection_real_rows(&g->h_sel);
        for (int j = 0; j < g->r_eff; j++) {
            if (o->cfg.type == OPT_GRASS && selection_row_is_padding(&g->h_sel, j)) continue;
            float up = o->cfg.type == OPT_GALORE ? 1.0f : g->h_sel.upscale[j];
            o->refreshed.mult_mean += up;
            if (up > o->refreshed.mult_max) o->refreshed.mult_max = up;
        }
    }
    if (o->refreshed.distinct > 0) o->refreshed.mult_mean /= o->refreshed.distinct;
}

#endif // GRASS_OPTIM_REFRESH_H
