/*
 * optim/select.h: Grass's row selection on the host: the draws (top-r, multinorm, uniform, with and
 * without replacement), the up-projection's factors, and the padding rows of --grass-row-align.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_SELECT_H
#define GRASS_OPTIM_SELECT_H

#include "optim/config.h"
#include "rng.h"

// ---- selection (host) ------------------------------------------------------------------------
// Result of one selection: r_eff unique indices (ascending), the scale used when compressing
// (rho) and the scale used when up-projecting (count * rho, where count is how many of the r
// draws hit that index). Keeping duplicates as separate subspace rows would give identical
// Adam rows (Adam is elementwise), so merging them is exactly the same update with less state.
typedef struct {
    int r_eff;
    int* idx;
    float* scale;
    float* upscale;
} Selection;

typedef struct { double key; int idx; } KeyedIndex;
// by key descending, then index ascending (a total order, so qsort's result is deterministic)
static int cmp_keyed_desc(const void* a, const void* b) {
    const KeyedIndex* x = (const KeyedIndex*)a;
    const KeyedIndex* y = (const KeyedIndex*)b;
    if (x->key > y->key) return -1;
    if (x->key < y->key) return 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

// q: squared norms (length dim); draws into sel (arrays of capacity r). Deterministic in (q, rng).
static void grass_select(GrassSelect method, const float* q, int dim, int r, uint64_t rng, Selection* sel) {
    double total = 0.0;
    for (int i = 0; i < dim; i++) total += q[i];
    int* draws = (int*)malloc_check((size_t)r * sizeof(int));
    double* p = (double*)malloc_check((size_t)dim * sizeof(double));
    // probabilities for the norm-based variants; an all-zero gradient falls back to uniform
    int norm_based = (method == SEL_MULTINORM || method == SEL_MULTINORM_NR);
    for (int i = 0; i < dim; i++) p[i] = (norm_based && total > 0.0) ? q[i] / total : 1.0 / dim;
    int n = 0;
    float* rho_of_draw = (float*)malloc_check((size_t)r * sizeof(float));
    if (method == SEL_TOPR) {
        // the r largest q (ties broken by the lower index)
        KeyedIndex* keys = (KeyedIndex*)malloc_check((size_t)dim * sizeof(KeyedIndex));
        for (int i = 0; i < dim; i++) { keys[i].key = q[i]; keys[i].idx = i; }
        qsort(keys, dim, sizeof(KeyedIndex), cmp_keyed_desc);
        for (int k = 0; k < r; k++) { draws[n] = keys[k].idx; rho_of_draw[n] = 1.0f; n++; }
        free(keys);
    } else if (method == SEL_MULTINORM || method == SEL_UNIFORM) {
        // i.i.d. draws with replacement, rho = 1/sqrt(r p): E[P P^T] = I
        double* cdf = (double*)malloc_check((size_t)dim * sizeof(double));
        double acc = 0.0;
        for (int i = 0; i < dim; i++) { acc += p[i]; cdf[i] = acc; }
        for (int k = 0; k < r; k++) {
            double u = rng_uniform01(&rng) * acc;
            int lo = 0, hi = dim - 1;
            while (lo < hi) { int mid = (lo + hi) / 2; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
            while (p[lo] <= 0.0 && lo < dim - 1) lo++;  // never pick a zero-probability row
            draws[n] = lo; rho_of_draw[n] = (float)(1.0 / sqrt((double)r * p[lo])); n++;
        }
        free(cdf);
    } else {
        // Without replacement: r distinct rows with the law of drawing one after another ~ p
        // among those left, sampled in one pass with Efraimidis-Spirakis keys log(u)/p (the r
        // largest keys); zero-probability rows come last, lowest index first.
        // uniform-nr: every row is included with probability r/dim, so rho = sqrt(dim/r) makes
        // E[P P^T] = I exactly. multinorm-nr: rho = 1/sqrt(r p) with p the initial probability,
        // the with-replacement scaling; unbiased only while r p_i << 1 (heavy rows are included
        // with probability < r p_i, so they end up under-weighted; see docs/GRASS_IMPL.md).
        KeyedIndex* keys = (KeyedIndex*)malloc_check((size_t)dim * sizeof(KeyedIndex));
        for (int i = 0; i < dim; i++) {
            double u = rng_uniform01(&rng);
            if (u <= 0.0) u = 1e-300;
            keys[i].key = p[i] > 0.0 ? log(u) / p[i] : -INFINITY;
            keys[i].idx = i;
        }
        qsort(keys, dim, sizeof(KeyedIndex), cmp_keyed_desc);
        for (int k = 0; k < r; k++) {
            int pick = keys[k].idx;
            draws[n] = pick;
            rho_of_draw[n] = (method == SEL_MULTINORM_NR)
                           ? (float)(p[pick] > 0.0 ? 1.0 / sqrt((double)r * p[pick]) : 1.0)
                           : (float)sqrt((double)dim / r);
            n++;
        }
        free(keys);
    }
    // merge duplicates: order the draws by index and count runs (rho depends on the index only)
    KeyedIndex* by_idx = (KeyedIndex*)malloc_check((size_t)r * sizeof(KeyedIndex));
    for (int k = 0; k < n; k++) { by_idx[k].key = -(double)draws[k]; by_idx[k].idx = k; }
    qsort(by_idx, n, sizeof(KeyedIndex), cmp_keyed_desc);  // -index descending = index ascending
    sel->r_eff = 0;
    for (int k = 0; k < n;) {
        int j = k, i = draws[by_idx[k].idx];
        while (j < n && draws[by_idx[j].idx] == i) j++;
        float rho = rho_of_draw[by_idx[k].idx];
        sel->idx[sel->r_eff] = i;
        sel->scale[sel->r_eff] = rho;
        sel->upscale[sel->r_eff] = rho * (float)(j - k);
        sel->r_eff++;
        k = j;
    }
    free(by_idx); free(draws); free(p); free(rho_of_draw);
}

// The up-projection's factors of one selection, from count * rho (grass_select's upscale) to the
// chosen rule; the same on every rank (a function of the selection)
static void grass_apply_upscale(int rule, Selection* sel) {
    if (rule == UPSCALE_PAPER || sel->r_eff == 0) return;
    double mean = 0.0;
    for (int j = 0; j < sel->r_eff; j++) mean += sel->upscale[j];
    mean /= sel->r_eff;
    for (int j = 0; j < sel->r_eff; j++) sel->upscale[j] = rule == UPSCALE_ONE ? 1.0f : (float)(sel->upscale[j] / mean);
}

// Pads a selection to a multiple of `align` rows (at most dim) with rows the update skips: the
// lowest indices not selected, with scale and upscale 0, the indices still ascending. Why: the GPU
// build's gathered GEMMs have the row count on a side (the bf16 gather N x r_eff, and on the
// columns side the fp32 C out x r_eff), and Hopper's fast cuBLASLt kernels want 16-byte leading
// dimensions; merged multinorm/uniform draws make r_eff any number. A pad row gathers with scale
// 0, so its compressed gradient is 0; the norms skip it (sumsq_unscaled) and so does the update
// (upscale 0), so the step is the unpadded one's. Returns the rows added.
static int grass_pad_selection(Selection* sel, int dim, int align) {
    if (align <= 1 || sel->r_eff == 0) return 0;
    int target = (sel->r_eff + align - 1) / align * align;
    if (target > dim) target = dim;
    int pads = target - sel->r_eff;
    if (pads <= 0) return 0;
    int* idx = (int*)malloc_check((size_t)target * sizeof(int));
    float* scale = (float*)malloc_check((size_t)target * sizeof(float));
    float* upscale = (float*)malloc_check((size_t)target * sizeof(float));
    int n = 0, j = 0;
    for (int i = 0; i < dim && n < target; i++) {
        if (j < sel->r_eff && sel->idx[j] == i) {
            idx[n] = i;
            scale[n] = sel->scale[j];
            upscale[n] = sel->upscale[j];
            n++;
            j++;
        }
        else if (pads > 0) { idx[n] = i; scale[n] = 0.0f; upscale[n] = 0.0f; n++; pads--; }
    }
    if (n != target || j != sel->r_eff)
        fatal("grass_pad_selection: the selection is not ascending and within [0, %d)", dim);
    memcpy(sel->idx, idx, (size_t)n * sizeof(int));
    memcpy(sel->scale, scale, (size_t)n * sizeof(float));
    memcpy(sel->upscale, upscale, (size_t)n * sizeof(float));
    int added = n - sel->r_eff;
    sel->r_eff = n;
    free(idx); free(scale); free(upscale);
    return added;
}
// row j of a selection was added by grass_pad_selection (the update skips it; it is not part of the choice)
static int selection_row_is_padding(const Selection* sel, int j) { return sel->scale[j] == 0.0f; }
// the rows of a selection the update uses (those grass_pad_selection did not add)
static int selection_real_rows(const Selection* sel) {
    int n = 0;
    for (int j = 0; j < sel->r_eff; j++) n += !selection_row_is_padding(sel, j);
    return n;
}
// the selection arrays' and subspace buffers' capacity for rank r: r rounded up to the largest
// row alignment (so a state file loads whatever alignment wrote it), at most dim
static int grass_rank_capacity(int r, int dim) {
    int c = (r + GRASS_ROW_ALIGN_MAX - 1) / GRASS_ROW_ALIGN_MAX * GRASS_ROW_ALIGN_MAX;
    return c < dim ? c : dim;
}

#endif // GRASS_OPTIM_SELECT_H
