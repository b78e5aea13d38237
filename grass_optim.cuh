/*
 * grass_optim.cuh: the optimizers. Full-rank AdamW, and Grass (structured sparse gradients,
 * arXiv 2406.17660; our spec is docs/GRASS.md). Backend-free: the arithmetic runs through
 * backend.h, the bookkeeping (selection, scales, schedules, state files) runs here on the
 * host, identically for the CPU and the CUDA build.
 *
 * Grass in one paragraph: for a projected weight W (m x n) only the compressed gradient
 * C = rho B G is ever formed, where B picks r rows (or, when m > n, r columns) and rho scales
 * them; C comes straight from one gathered GEMM of dY and X. Adam runs on C in the r x n
 * subspace; the update rho U is scattered back into the selected rows of W. Every K steps the
 * rows are re-chosen from the squared row norms of the gradient, and the moments restart.
 *
 * GaLore (arXiv 2403.03507, --optimizer galore), the low-rank baseline, shares that machinery:
 * its R = P^T G (or G P) takes C's place and shape, P being r singular vectors of the smaller
 * side of the step's whole gradient, recomputed every K steps from the norm pass's gradients
 * (an SVD); its moments carry over a projector change, as GaLore's do; the update P D is dense.
 */
#ifndef GRASS_OPTIM_CUH
#define GRASS_OPTIM_CUH

#include <math.h>
#include "utils.h"
#include "checksum.h"   // ZeRO-1 shard files
#include "backend.h"
#include "llama_params.h"
#include "rng.h"
#include "grad_sink.h"

typedef enum { OPT_ADAMW = 0, OPT_GRASS = 1, OPT_GALORE = 2 } OptimizerType;
typedef enum { SEL_TOPR = 0, SEL_MULTINORM, SEL_MULTINORM_NR, SEL_UNIFORM, SEL_UNIFORM_NR, SEL_COUNT } GrassSelect;
static const char* GRASS_SELECT_NAMES[] = {"topr", "multinorm", "multinorm-nr", "uniform", "uniform-nr"};
static const char* OPTIMIZER_NAMES[] = {"adamw", "grass", "galore"};
#define OPTIMIZER_COUNT 3
// Where a refresh's row scores come from (--grass-norms; docs/GRASS_IMPL.md):
//   exact   the squared row norms of the step's gradient, summed over micro-batches and ranks
//           (each projected matrix's fp32 gradient is held during the norm pass when needed)
//   sketch  an unbiased estimate linear in the gradient: ||row_i(G S)||^2 / k with a k-column
//           Rademacher S shared by the ranks, so it sums exactly over micro-batches and ranks
//   micro   the sum over micro-batches and ranks of each micro-batch's squared row norms (the
//           scores before 2026-11-30; they depend on how the global batch is split)
//   auto    exact where its memory fits, else sketch (the trainer decides, optim_fit_norms)
typedef enum { NORMS_AUTO = 0, NORMS_EXACT, NORMS_SKETCH, NORMS_MICRO, NORMS_COUNT } GrassNorms;
static const char* GRASS_NORMS_NAMES[] = {"auto", "exact", "sketch", "micro"};
// The up-projection's per-row factor (--grass-upscale; docs/GRASS_IMPL.md). Adam is invariant to
// the scale of each row of C, so rho cancels in the compressed gradient and survives only here:
// row j moves by lr * alpha * upscale_j * U_j.
//   paper  upscale_j = count_j * rho_j, the paper's P (count: draws of row j among the r)
//   one    upscale_j = 1: every selected row takes the step top-r takes
//   mean   upscale_j = count_j * rho_j / mean over the matrix's selected rows: the paper's
//          relative weights, with mean 1
typedef enum { UPSCALE_PAPER = 0, UPSCALE_ONE, UPSCALE_MEAN, UPSCALE_COUNT } GrassUpscale;
static const char* GRASS_UPSCALE_NAMES[] = {"paper", "one", "mean"};

typedef struct {
    OptimizerType type;
    float b1, b2, eps, weight_decay, grad_clip;
    // Grass
    GrassSelect select;
    int grass_rank;      // Grass rank r (> 0), or 0 when grass_rank_frac is used (optim_set_grass_rank)
    float grass_rank_frac; // r as a fraction of the selected dimension (0 < f <= 1)
    int update_freq;     // K: re-select every K steps
    float alpha;         // Grass scale factor
    int fused;           // apply projected updates during the backward pass
    int state_dtype;     // StateDtype of every Adam moment, full-rank and subspace (backend.h)
    int grad_dtype;      // GradDtype of the dense gradients: floatX or fp32 (backend.h; --grad-dtype)
    int master_weights;  // keep an fp32 master copy of the weights (for bf16 weights on the GPU)
    int select_on_device; // run the selection in the backend (GPU) instead of on the host
    int row_align;       // Grass: pad each selection to a multiple of this many rows (1, 2, 4, 8, 16;
                         // 0: the backend's, backend_grass_row_align) with rows the update skips
                         // (grass_pad_selection), so the gathered GEMMs' leading dimensions align
    int norms;           // GrassNorms: where the row scores of a refresh come from
    int sketch_dim;      // k, the columns of the sketch (norms == NORMS_SKETCH)
    int upscale;         // GrassUpscale: the up-projection's per-row factor
    int zero;            // ZeRO-1: shard the full-rank AdamW moments over the ranks (with several)
    int overlap_comm;    // with several ranks: all-reduce each layer's gradients while the backward
                         // pass computes the next layer (results are unchanged)
    int proj_mask;       // bit i set: LinearType i is projected
    float matrix_lr_scale; // AdamW: the matrices of the proj_mask types take lr * this (1: one lr for
                         // everything), so that a full-rank baseline can give its matrices the
                         // step that alpha gives Grass's, with the same lr for everything else
    uint64_t seed;       // selection seed (rank-independent)
} OptimConfig;

// Facts of the run that are not user flags, and the settings derived from them together with
// the flags. optim_runtime() is the one place that derives them; the trainer calls it once.
typedef struct {
    int rank, world_size;   // this process and the number of data-parallel ranks (comm.h's ProcessGroup)
    int accum;              // micro-steps per optimizer step (gradient accumulation)
    int overlap;            // overlap_comm in effect: asked for, and several ranks
    int sharded;            // ZeRO-1 in effect: asked for, and several ranks
    int share_compressed;   // fused Grass without accumulation: one layer's compressed gradients
                            // live at a time, so all layers share one buffer
    int micro_rows;         // N = B*T, the rows of one micro-batch (the sketch's scratch)
    int norms;              // the norm pass in effect: NORMS_EXACT, NORMS_SKETCH or NORMS_MICRO
    int norm_path;          // how it is computed (NormPath below)
} OptimRuntime;

// How the norm pass computes its scores:
//   NP_DIRECT  per micro-batch norms from blockwise GEMMs, summed (micro; and exact when one
//              micro-batch on one rank, where that sum is the step's norm)
//   NP_LAYER_G exact, one micro-batch on several ranks: each layer's fp32 gradients in one shared
//              buffer, all-reduced when the layer is done, then measured
//   NP_FULL_G  exact with accumulation: every projected matrix's fp32 gradient, summed over the
//              micro-batches, all-reduced and measured at the refresh
//   NP_SKETCH  sketch: Y = G S (dim_sel x k) per matrix, summed, all-reduced, measured
typedef enum { NP_DIRECT = 0, NP_LAYER_G, NP_FULL_G, NP_SKETCH } NormPath;

static void optim_runtime_norms(OptimRuntime* rt, int norms) {
    rt->norms = norms;
    if (norms == NORMS_MICRO) rt->norm_path = NP_DIRECT;
    else if (norms == NORMS_SKETCH) rt->norm_path = NP_SKETCH;
    else rt->norm_path = rt->accum == 1 ? (rt->world_size == 1 ? NP_DIRECT : NP_LAYER_G) : NP_FULL_G;
}

static OptimRuntime optim_runtime(const OptimConfig* c, int rank, int world_size, int accum, int micro_rows) {
    OptimRuntime rt;
    rt.rank = rank; rt.world_size = world_size; rt.accum = accum; rt.micro_rows = micro_rows;
    rt.overlap = c->overlap_comm && world_size > 1;
    rt.sharded = c->zero && world_size > 1;
    rt.share_compressed = c->type != OPT_ADAMW && c->fused && accum == 1;
    optim_runtime_norms(&rt, c->norms == NORMS_AUTO ? NORMS_EXACT : c->norms);  // optim_fit_norms may switch auto to sketch
    // GaLore's SVD needs the step's whole gradient of each matrix: one layer's at a time without
    // accumulation (summed over the ranks when the layer is done), else every matrix's
    if (c->type == OPT_GALORE) { rt.norms = NORMS_EXACT; rt.norm_path = accum == 1 ? NP_LAYER_G : NP_FULL_G; }
    return rt;
}

// Adam's hyperparameters for one update: the step size, the moment decays and epsilon, the
// decoupled weight decay, the bias corrections 1 - beta^t, and the clipping factor on the gradient
static AdamParams adam_params(const OptimConfig* c, float lr, float wd, int64_t t, float grad_scale) {
    AdamParams a;
    a.lr = lr; a.b1 = c->b1; a.b2 = c->b2; a.eps = c->eps; a.wd = wd;
    a.bc1 = 1.0f - powf(c->b1, (float)t); a.bc2 = 1.0f - powf(c->b2, (float)t);
    a.grad_scale = grad_scale;
    a.grad_scale_dev = NULL;
    return a;
}

static void optim_config_defaults(OptimConfig* c) {
    memset(c, 0, sizeof(*c));
    c->type = OPT_ADAMW;
    c->b1 = 0.9f; c->b2 = 0.999f; c->eps = 1e-8f; c->weight_decay = 0.0f; c->grad_clip = 0.0f;
    c->select = SEL_MULTINORM; c->grass_rank = 128; c->grass_rank_frac = 0.0f; c->update_freq = 200; c->alpha = 0.25f;
    c->fused = 1; c->norms = NORMS_AUTO; c->sketch_dim = 64; c->proj_mask = (1 << LIN_DOWN) * 2 - 1;  // q k v o gate up down
    c->matrix_lr_scale = 1.0f;
    c->upscale = UPSCALE_MEAN;  // the study's choice (docs/GRASS_IMPL.md, "The up-projection's factor")
    c->seed = 1234;
}

// the index of s in names[0..n), or -1: the flags' names to their enum values
static int name_index(const char* const* names, int n, const char* s) {
    for (int i = 0; i < n; i++) if (strcmp(names[i], s) == 0) return i;
    return -1;
}
static int grass_select_from_name(const char* s) { return name_index(GRASS_SELECT_NAMES, SEL_COUNT, s); }

// --rank: "full" (every projected matrix keeps its whole selected dimension), a fraction below
// 1 of that dimension, or an integer rank. Returns 0 and a message when it is none of these.
static int optim_set_grass_rank(OptimConfig* c, const char* text, char* err, size_t errlen) {
    if (strcmp(text, "full") == 0) { c->grass_rank = 0; c->grass_rank_frac = 1.0f; return 1; }
    char* end = NULL;
    double x = strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(x) || !(x > 0) || x > (1 << 24)) {
        snprintf(err, errlen, "--rank '%s': give an integer rank, a fraction below 1, or full", text);
        return 0;
    }
    if (x < 1.0) { c->grass_rank = 0; c->grass_rank_frac = (float)x; return 1; }
    if (x != floor(x)) { snprintf(err, errlen, "--rank %s: give an integer rank or a fraction below 1", text); return 0; }
    c->grass_rank = (int)x; c->grass_rank_frac = 0.0f;
    return 1;
}

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
#define GRASS_ROW_ALIGN_MAX 16
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
        if (j < sel->r_eff && sel->idx[j] == i) { idx[n] = i; scale[n] = sel->scale[j]; upscale[n] = sel->upscale[j]; n++; j++; }
        else if (pads > 0) { idx[n] = i; scale[n] = 0.0f; upscale[n] = 0.0f; n++; pads--; }
    }
    if (n != target || j != sel->r_eff) fatal("grass_pad_selection: the selection is not ascending and within [0, %d)", dim);
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

// ---- optimizer state -------------------------------------------------------------------------
typedef struct {
    int tensor;        // index into the parameter table
    int cols_side;     // 0: select rows (output features); 1: select columns (input features)
    int dim_sel;       // the dimension selected from: rows (m) or cols (n)
    int other;         // the other dimension
    int r;             // rank: the number of draws (Grass), the projector's rank (GaLore)
    int r_cap;         // capacity of the selection and of C, m, v: grass_rank_capacity (Grass), r (GaLore)
    int r_eff;         // selected indices in use (<= r_cap): the distinct draws, plus the padding
                       // rows of grass_pad_selection (scale 0)
    Selection h_sel;   // host copy of the selection
    int* d_idx; float* d_scale; float* d_upscale;  // backend copies
    float* C;          // compressed gradient: r_eff x n (rows side) or m x r_eff (cols side)
    void* m; void* v;  // Adam moments, stored as cfg.state_dtype
    float* norms;      // dim_sel squared norms, filled by the norm pass at a refresh (Grass)
    float* Pt;         // GaLore: the projector P^T (r x dim_sel, fp32); NULL for Grass
    floatX* Ptx;       // GaLore: the same in floatX for the GEMMs with activations (= Pt in an fp32 build)
    float* nacc;       // the norm pass's accumulator: the fp32 gradient (out x in; NP_LAYER_G and
                       // NP_FULL_G) or the sketch Y = G S (dim_sel x k; NP_SKETCH); else NULL
    int64_t t;         // Adam steps since the last refresh (Grass) or since the start (GaLore)
} GrassMatrix;
// the elements C, m and v are allocated for (r_cap x other); grass_sub_numel is the part in use
static size_t grass_cap_numel(const GrassMatrix* g) { return (size_t)g->r_cap * g->other; }

typedef enum { BWD_GRADS = 0, BWD_NORMS = 1 } BackwardMode;

typedef struct Optimizer {
    OptimConfig cfg;
    OptimRuntime rt;        // ranks, accumulation and what follows from them (optim_runtime)
    const ParamTable* pt;
    floatX* params;         // the model's parameter buffer
    // dense gradients (full-rank tensors), in their own compact buffer
    size_t* grad_offset;    // per tensor; (size_t)-1 when the tensor has no dense gradient
    size_t grad_total;
    void* grads;            // cfg.grad_dtype values (optim_grads_from); with ZeRO-1 also the floatX
                            // staging buffer of the weights' all-gather
    void* m; void* v;       // AdamW moments for the dense tensors, grad_total each (cfg.state_dtype)
    GrassMatrix* gm;
    int n_gm;
    int* gm_of_tensor;      // tensor -> index into gm, or -1
    int64_t step;           // optimizer steps done
    BackwardMode mode;      // what the backward pass computes for projected weights
    int apply_fused;        // this micro-step applies the fused Grass updates (optim_begin_micro)
    float lr;               // learning rate of the step in progress (optim_begin_step)
    // --grad-clip with the fused update (Grass, GaLore): a layer is updated before the step's norm
    // is known, so the whole step is scaled by min(1, clip / the previous step's norm)
    // (optim_begin_step); without the fused update the step's own norm decides (optim_step)
    float prev_norm;        // the last step's gradient norm (0: none yet); saved in the state file
    float clip_scale;       // the factor of the step in progress under the fused rule
    // the step's report, one backend block read once at the step's end (the step's one host sync):
    // the loss summed over micro-steps (llama_forward_train), the dense gradients' sum of squares,
    // the clipping factor (clip_factor), and the fused updates' sums of squares per matrix
    void* d_report;
    double* d_loss_acc;     // d_report + 0
    float* d_sumsq;         // d_report + 8: backend scalar for gradient norms
    float* d_grad_scale;    // d_report + 12
    double loss_sum;        // the last step's *d_loss_acc, on the host (optim_step)
    char* h_report;         // the host copy of d_report (optim_report_bytes), allocated once
    double comm_bytes;      // bytes all-reduced since the step began (0 in one process)
    float* master;          // fp32 master weights (cfg.master_weights), the layout of params; else NULL
    // ZeRO-1 (rt.sharded): the dense gradients are padded to rt.world_size blocks of `shard`;
    // this rank keeps AdamW moments for [shard_lo, shard_hi) of them only
    size_t shard, shard_lo, shard_hi, grad_alloc;
    float* C_pool;          // the shared compressed-gradient buffer (rt.share_compressed), else NULL
    size_t C_pool_numel;    // its size: the largest layer's set, twice with rt.overlap
    float* d_layer_sumsq;   // d_report + 16: n_gm sums of squares of the fused compressed gradients
    int pending_layer;      // rt.overlap: the layer whose all-reduce is in flight, or -1
    // rt.overlap, dense gradients: each layer's dense tensors sit together in grads at
    // [dense_lo[l], dense_hi[l]); on the last micro-step their all-reduce starts when the layer's
    // backward is done (group ALLREDUCE_SLOT_DENSE), and optim_step waits for all of them
    int dense_overlap;      // on (rt.overlap, not sharded, ranges contiguous)
    int last_micro;         // this backward pass is the step's last micro-step (optim_begin_micro)
    int dense_started;      // some layer's dense all-reduce is in flight
    int n_layers;
    size_t* dense_lo; size_t* dense_hi;
    // the norm pass (rt.norm_path): identity indices and unit scales, so that the gathered GEMM
    // gives whole gradients; the shared per-layer gradient buffer (NP_LAYER_G); the sketches, one
    // Rademacher S^T (k x dim) per distinct dimension, and their N x k product's scratch
    int* d_iota; float* d_ones; int iota_len;
    float* nacc_pool; size_t nacc_pool_numel;
    int n_sketch; int* sketch_dim_of; floatX** sketch_S; floatX* sketch_tmp;
    float* galore_work;     // GaLore: SVD and dense-update scratch, the largest matrix's galore_work_floats
    size_t galore_work_numel;
    // what the last refresh chose (logged by the trainer)
    // kept / total: the squared norm the new subspaces keep of the step's gradient, over all
    // projected matrices: Grass, the selected rows' scores over all rows' (exact norms: the true
    // fraction; sketch: its estimate; micro: of the micro-batch sums); GaLore, the top r squared
    // singular values over all of them
    // rows: the rows the gathered GEMMs and the update carry, the distinct ones plus grass_pad_selection's
    struct { int distinct, draws, rows; double mult_mean, mult_max, kept, total; uint64_t hash; } refreshed;
} Optimizer;

static int optim_is_projected(const OptimConfig* c, const ParamTensor* t) {
    return c->type != OPT_ADAMW && t->kind == PT_LINEAR && ((c->proj_mask >> t->lin) & 1);
}

// rank for a matrix, with a clear error when it cannot be used
static int grass_rank_for(const OptimConfig* c, const ParamTensor* t, int dim_sel, char* err, size_t errlen) {
    int r = c->grass_rank > 0 ? c->grass_rank : (int)floor(c->grass_rank_frac * dim_sel + 0.5);
    if (r < 1) { snprintf(err, errlen, "rank for %s rounds to %d (dimension %d); use a larger --rank", t->name, r, dim_sel); return -1; }
    if (r > dim_sel) {
        snprintf(err, errlen, "--rank %d is larger than the dimension Grass selects from in %s (%d x %d: %d); "
                 "use --rank <= %d or a fraction like 0.25", r, t->name, t->rows, t->cols, dim_sel, dim_sel);
        return -1;
    }
    return r;
}

// Checks options against the model; returns 0 and a message on a problem.
static int optim_config_validate(const OptimConfig* c, const ParamTable* pt, char* err, size_t errlen) {
    if (!(c->b1 >= 0.0f && c->b1 < 1.0f) || !(c->b2 >= 0.0f && c->b2 < 1.0f)) { snprintf(err, errlen, "beta1 %g and beta2 %g must be in [0, 1)", c->b1, c->b2); return 0; }
    if (!(c->eps > 0.0f)) { snprintf(err, errlen, "adam eps %g must be > 0", c->eps); return 0; }
    if (!(c->weight_decay >= 0.0f)) { snprintf(err, errlen, "weight decay %g must be >= 0", c->weight_decay); return 0; }
    if (!(c->grad_clip >= 0.0f)) { snprintf(err, errlen, "gradient clip %g must be >= 0 (0 = off)", c->grad_clip); return 0; }
    if (!(c->matrix_lr_scale > 0.0f)) { snprintf(err, errlen, "--matrix-lr-scale %g must be > 0", c->matrix_lr_scale); return 0; }
    if (c->type != OPT_ADAMW && c->matrix_lr_scale != 1.0f) {
        snprintf(err, errlen, "--matrix-lr-scale is for full-rank AdamW; the projected matrices of %s take lr * alpha "
                 "(--grass-scale)", OPTIMIZER_NAMES[c->type]);
        return 0;
    }
    if (c->type == OPT_ADAMW) return 1;
    if (c->type == OPT_GALORE && c->norms != NORMS_AUTO && c->norms != NORMS_EXACT) {
        snprintf(err, errlen, "--grass-norms %s: GaLore's projector is the SVD of the step's whole gradient (exact); "
                 "the sketch and micro scores are Grass's", GRASS_NORMS_NAMES[c->norms]);
        return 0;
    }
    if (c->update_freq < 1) { snprintf(err, errlen, "--update-freq %d must be >= 1", c->update_freq); return 0; }
    if (c->row_align < 0 || c->row_align > GRASS_ROW_ALIGN_MAX || (c->row_align & (c->row_align - 1)) != 0) {
        snprintf(err, errlen, "--grass-row-align %d must be 0 (the backend's), 1, 2, 4, 8 or 16", c->row_align);
        return 0;
    }
    if (!(c->alpha > 0.0f)) { snprintf(err, errlen, "--grass-scale %g must be > 0", c->alpha); return 0; }
    if (c->grass_rank <= 0 && !(c->grass_rank_frac > 0.0f && c->grass_rank_frac <= 1.0f)) { snprintf(err, errlen, "--rank must be a positive integer or a fraction in (0, 1]"); return 0; }
    for (int i = 0; i < pt->n; i++) {
        const ParamTensor* t = &pt->t[i];
        if (!optim_is_projected(c, t)) continue;
        int dim_sel = t->rows <= t->cols ? t->rows : t->cols;
        if (grass_rank_for(c, t, dim_sel, err, errlen) < 0) return 0;
    }
    return 1;
}

static int optim_max_layer(const ParamTable* pt) {
    int l = -1;
    for (int i = 0; i < pt->n; i++) if (pt->t[i].layer > l) l = pt->t[i].layer;
    return l;
}
// elements of the compressed gradients of one layer's projected matrices
static size_t optim_layer_C_numel(const Optimizer* o, int layer) {
    size_t n = 0;
    for (int k = 0; k < o->n_gm; k++) if (o->pt->t[o->gm[k].tensor].layer == layer) n += grass_cap_numel(&o->gm[k]);
    return n;
}
// the largest layer's compressed-gradient elements: the size of the shared pool (of each half)
static size_t optim_largest_layer_C(const Optimizer* o) {
    size_t pool = 0;
    for (int l = 0; l <= optim_max_layer(o->pt); l++) pool = pool > optim_layer_C_numel(o, l) ? pool : optim_layer_C_numel(o, l);
    return pool;
}

// The optimizer's layout, on the host only: which tensors are projected and how (side, rank),
// the compact dense-gradient offsets, the ZeRO-1 block, the layers' dense ranges, the shared
// pool. optim_init allocates from it; optim_plan measures it before anything is allocated.
static void optim_layout(Optimizer* o, const OptimConfig* cfg, const OptimRuntime* rt, const ParamTable* pt) {
    memset(o, 0, sizeof(*o));
    o->cfg = *cfg; o->rt = *rt; o->pt = pt;
    if (o->cfg.row_align == 0) o->cfg.row_align = backend_grass_row_align();
    o->grad_offset = (size_t*)malloc_check(pt->n * sizeof(size_t));
    o->gm_of_tensor = (int*)malloc_check(pt->n * sizeof(int));
    o->gm = (GrassMatrix*)calloc_check(pt->n, sizeof(GrassMatrix));
    char err[512];
    for (int i = 0; i < pt->n; i++) {
        const ParamTensor* t = &pt->t[i];
        o->gm_of_tensor[i] = -1;
        if (optim_is_projected(cfg, t)) {
            GrassMatrix* g = &o->gm[o->n_gm];
            g->tensor = i;
            g->cols_side = t->rows > t->cols;  // select along the smaller dimension
            g->dim_sel = g->cols_side ? t->cols : t->rows;
            g->other = g->cols_side ? t->rows : t->cols;
            g->r = grass_rank_for(cfg, t, g->dim_sel, err, sizeof(err));
            if (g->r < 0) fatal("%s", err);
            g->r_cap = cfg->type == OPT_GRASS ? grass_rank_capacity(g->r, g->dim_sel) : g->r;
            g->h_sel.idx = (int*)calloc_check(g->r_cap, sizeof(int));
            g->h_sel.scale = (float*)calloc_check(g->r_cap, sizeof(float));
            g->h_sel.upscale = (float*)calloc_check(g->r_cap, sizeof(float));
            o->gm_of_tensor[i] = o->n_gm++;
            o->grad_offset[i] = (size_t)-1;
        } else {
            o->grad_offset[i] = o->grad_total;
            o->grad_total += t->numel;
        }
    }
    // the shared compressed-gradient pool: the largest layer's set, reused by every layer in
    // turn; with rt.overlap layer l reduces in one half while layer l-1 accumulates in the other
    if (rt->share_compressed && o->n_gm > 0) o->C_pool_numel = (rt->overlap ? 2 : 1) * optim_largest_layer_C(o);
    o->pending_layer = -1;
    if (rt->sharded && cfg->master_weights) fatal("--zero 1 with --master-weights 1 is not supported (the master copy is not sharded)");
    o->shard = o->grad_total; o->shard_lo = 0; o->shard_hi = o->grad_total; o->grad_alloc = o->grad_total;
    if (rt->sharded) {
        o->shard = (o->grad_total + rt->world_size - 1) / rt->world_size;
        o->grad_alloc = o->shard * rt->world_size;
        o->shard_lo = o->shard * rt->rank;
        o->shard_hi = o->shard_lo + o->shard < o->grad_total ? o->shard_lo + o->shard : o->grad_total;
        if (o->shard_hi < o->shard_lo) o->shard_hi = o->shard_lo;
    }
    // the norm pass: identity selections as long as the largest selected dimension; the shared
    // per-layer gradient buffer; one sketch per distinct dimension the sketch multiplies
    if (o->n_gm > 0 && rt->norm_path != NP_DIRECT) {
        for (int k = 0; k < o->n_gm; k++) {
            const GrassMatrix* g = &o->gm[k];
            const ParamTensor* t = &pt->t[g->tensor];
            int len = rt->norm_path == NP_SKETCH ? (g->cols_side ? t->cols : t->rows) : g->dim_sel;
            if (len > o->iota_len) o->iota_len = len;
        }
        if (rt->norm_path == NP_LAYER_G) {
            for (int l = 0; l <= optim_max_layer(pt); l++) {
                size_t n = 0;
                for (int k = 0; k < o->n_gm; k++) if (pt->t[o->gm[k].tensor].layer == l) n += pt->t[o->gm[k].tensor].numel;
                if (n > o->nacc_pool_numel) o->nacc_pool_numel = n;
            }
        }
        if (rt->norm_path == NP_SKETCH) {
            o->sketch_dim_of = (int*)calloc_check(o->n_gm, sizeof(int));
            o->sketch_S = (floatX**)calloc_check(o->n_gm, sizeof(floatX*));
            for (int k = 0; k < o->n_gm; k++) {  // S multiplies X (rows side: in) or dY (cols side: out)
                int dim = o->gm[k].other, found = 0;
                for (int j = 0; j < o->n_sketch; j++) found |= o->sketch_dim_of[j] == dim;
                if (!found) o->sketch_dim_of[o->n_sketch++] = dim;
            }
        }
    }
    if (cfg->type == OPT_GALORE)
        for (int k = 0; k < o->n_gm; k++) {
            const ParamTensor* t = &pt->t[o->gm[k].tensor];
            size_t w = galore_work_floats(t->rows, t->cols);
            if (w > o->galore_work_numel) o->galore_work_numel = w;
        }
    // each layer's dense gradients: one contiguous range (the compact buffer follows table order)
    o->n_layers = optim_max_layer(pt) + 1;
    o->dense_lo = (size_t*)calloc_check(o->n_layers > 0 ? o->n_layers : 1, sizeof(size_t));
    o->dense_hi = (size_t*)calloc_check(o->n_layers > 0 ? o->n_layers : 1, sizeof(size_t));
    o->dense_overlap = rt->overlap && !rt->sharded && o->n_layers > 0;
    for (int l = 0; l < o->n_layers; l++) {
        size_t lo = (size_t)-1, hi = 0, count = 0;
        for (int i = 0; i < pt->n; i++) {
            if (pt->t[i].layer != l || o->grad_offset[i] == (size_t)-1) continue;
            if (o->grad_offset[i] < lo) lo = o->grad_offset[i];
            if (o->grad_offset[i] + pt->t[i].numel > hi) hi = o->grad_offset[i] + pt->t[i].numel;
            count += pt->t[i].numel;
        }
        if (count == 0) { lo = hi = l > 0 ? o->dense_hi[l - 1] : 0; }
        if (hi - lo != count || (l > 0 && lo != o->dense_hi[l - 1])) o->dense_overlap = 0;  // not one run: no overlap
        o->dense_lo[l] = lo; o->dense_hi[l] = hi;
    }
}

// Every backend buffer the optimizer holds, in allocation order: where its pointer lives, its
// bytes, what it is for the memory plan, and the label an allocation failure names. optim_init
// allocates from this table, optim_free frees from it, optim_plan sums it.
typedef enum { OB_DENSE_GRAD = 0, OB_COMPRESSED, OB_STATE, OB_OTHER, OB_MASTER, OB_NORMPASS, OB_WORK } OptimBufferKind;
typedef struct { void** ptr; size_t bytes; int kind; const char* label; } OptimBuffer;

// the step report's bytes: the loss sum (double), the dense sum of squares and the clipping
// factor, and one sum of squares per projected matrix (at least one)
static size_t optim_report_bytes(const Optimizer* o) { return 16 + (size_t)(o->n_gm > 0 ? o->n_gm : 1) * sizeof(float); }
// the backend double that llama_forward_train adds each micro-step's mean loss to (reset by
// optim_begin_step, read by optim_step into o->loss_sum)
static double* optim_loss_acc(Optimizer* o) { return o->d_loss_acc; }

static int optim_buffers(Optimizer* o, OptimBuffer* b) {
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    int n = 0;
#define OBUF(p, bytes, kind, label) b[n++] = (OptimBuffer){(void**)&(p), (size_t)(bytes), kind, label}
    int galore = o->cfg.type == OPT_GALORE;
    for (int k = 0; k < o->n_gm; k++) {
        GrassMatrix* g = &o->gm[k];
        size_t sub = grass_cap_numel(g);
        if (galore) {
            OBUF(g->Pt, (size_t)g->r * g->dim_sel * sizeof(float), OB_STATE, "galore projector");
            if (sizeof(floatX) != sizeof(float))  // else Ptx is Pt (optim_init)
                OBUF(g->Ptx, (size_t)g->r * g->dim_sel * sizeof(floatX), OB_STATE, "galore projector (floatX)");
        } else {
            OBUF(g->d_idx, g->r_cap * sizeof(int), OB_OTHER, "grass indices");
            OBUF(g->d_scale, g->r_cap * sizeof(float), OB_OTHER, "grass scales");
            OBUF(g->d_upscale, g->r_cap * sizeof(float), OB_OTHER, "grass scales");
            OBUF(g->norms, g->dim_sel * sizeof(float), OB_OTHER, "grass norms");
        }
        OBUF(g->m, sub * ssz, OB_STATE, galore ? "galore adam m" : "grass adam m");
        OBUF(g->v, sub * ssz, OB_STATE, galore ? "galore adam v" : "grass adam v");
    }
    if (o->C_pool_numel > 0) {
        OBUF(o->C_pool, o->C_pool_numel * sizeof(float), OB_COMPRESSED, "grass compressed gradients (shared)");
    } else {
        for (int k = 0; k < o->n_gm; k++)
            OBUF(o->gm[k].C, grass_cap_numel(&o->gm[k]) * sizeof(float), OB_COMPRESSED, "grass compressed gradients");
    }
    size_t moments = o->rt.sharded ? o->shard : o->grad_total;
    OBUF(o->grads, o->grad_alloc * grad_dtype_size(o->cfg.grad_dtype), OB_DENSE_GRAD, "dense gradients");
    OBUF(o->m, moments * ssz, OB_STATE, "adamw m");
    OBUF(o->v, moments * ssz, OB_STATE, "adamw v");
    OBUF(o->d_report, optim_report_bytes(o), OB_OTHER, "step report (loss, norms)");
    if (o->cfg.master_weights) OBUF(o->master, o->pt->total * sizeof(float), OB_MASTER, "fp32 master weights");
    if (o->iota_len > 0) {
        OBUF(o->d_iota, o->iota_len * sizeof(int), OB_NORMPASS, "grass norm pass (identity indices)");
        OBUF(o->d_ones, o->iota_len * sizeof(float), OB_NORMPASS, "grass norm pass (unit scales)");
    }
    if (o->nacc_pool_numel > 0) OBUF(o->nacc_pool, o->nacc_pool_numel * sizeof(float), OB_NORMPASS, "grass norm pass (one layer's gradients)");
    for (int k = 0; k < o->n_gm && (o->rt.norm_path == NP_FULL_G || o->rt.norm_path == NP_SKETCH); k++) {
        const GrassMatrix* g = &o->gm[k];
        size_t numel = o->rt.norm_path == NP_FULL_G ? o->pt->t[g->tensor].numel : (size_t)g->dim_sel * o->cfg.sketch_dim;
        OBUF(o->gm[k].nacc, numel * sizeof(float), OB_NORMPASS, o->rt.norm_path == NP_FULL_G ? "grass norm pass (gradients)" : "grass norm pass (sketches)");
    }
    for (int j = 0; j < o->n_sketch; j++)
        OBUF(o->sketch_S[j], (size_t)o->cfg.sketch_dim * o->sketch_dim_of[j] * sizeof(floatX), OB_NORMPASS, "grass norm pass (sketch matrices)");
    if (o->n_sketch > 0) OBUF(o->sketch_tmp, (size_t)o->rt.micro_rows * o->cfg.sketch_dim * sizeof(floatX), OB_NORMPASS, "grass norm pass (sketch scratch)");
    if (o->galore_work_numel > 0) OBUF(o->galore_work, o->galore_work_numel * sizeof(float), OB_WORK, "galore SVD and update scratch");
#undef OBUF
    return n;
}
static int optim_max_buffers(const Optimizer* o) { return 9 * o->n_gm + 13; }

static void optim_init(Optimizer* o, const OptimConfig* cfg, const OptimRuntime* rt, const ParamTable* pt, floatX* params) {
    optim_layout(o, cfg, rt, pt);
    o->params = params;
    OptimBuffer* b = (OptimBuffer*)malloc_check(optim_max_buffers(o) * sizeof(OptimBuffer));
    int n = optim_buffers(o, b);
    for (int i = 0; i < n; i++) *b[i].ptr = backend_malloc(b[i].bytes, b[i].label);
    free(b);
    o->d_loss_acc = (double*)o->d_report;
    o->d_sumsq = (float*)((char*)o->d_report + 8);
    o->d_grad_scale = (float*)((char*)o->d_report + 12);
    o->d_layer_sumsq = (float*)((char*)o->d_report + 16);
    o->h_report = (char*)malloc_check(optim_report_bytes(o));
    if (cfg->type == OPT_GALORE && sizeof(floatX) == sizeof(float))
        for (int k = 0; k < o->n_gm; k++) o->gm[k].Ptx = (floatX*)o->gm[k].Pt;  // one buffer in an fp32 build
    if (rt->overlap && cfg->fused) allreduce_async_reserve(optim_largest_layer_C(o));
    if (o->C_pool != NULL) {  // each layer's matrices take consecutive pieces of its half of the pool
        size_t half = optim_largest_layer_C(o);
        for (int l = 0; l <= optim_max_layer(pt); l++) {
            size_t off = rt->overlap && (l % 2) ? half : 0;
            for (int k = 0; k < o->n_gm; k++) {
                GrassMatrix* g = &o->gm[k];
                if (pt->t[g->tensor].layer != l) continue;
                g->C = o->C_pool + off;
                off += grass_cap_numel(g);
            }
        }
    }
    if (o->master != NULL) backend_widen(o->master, params, pt->total);
    if (o->iota_len > 0) {  // the identity selection: every index, scale 1
        int* iota = (int*)malloc_check(o->iota_len * sizeof(int));
        float* ones = (float*)malloc_check(o->iota_len * sizeof(float));
        for (int i = 0; i < o->iota_len; i++) { iota[i] = i; ones[i] = 1.0f; }
        backend_upload(o->d_iota, iota, o->iota_len * sizeof(int));
        backend_upload(o->d_ones, ones, o->iota_len * sizeof(float));
        free(iota); free(ones);
    }
    if (o->nacc_pool != NULL) {  // each layer's matrices take consecutive pieces of the buffer
        for (int l = 0; l <= optim_max_layer(pt); l++) {
            size_t off = 0;
            for (int k = 0; k < o->n_gm; k++) {
                GrassMatrix* g = &o->gm[k];
                if (pt->t[g->tensor].layer != l) continue;
                g->nacc = o->nacc_pool + off;
                off += pt->t[g->tensor].numel;
            }
        }
    }
}

// The weights were (re)set from outside (random init, a checkpoint): the master copy follows.
// A resume instead restores the master weights from the state file (optim_load).
static void optim_weights_changed(Optimizer* o) {
    if (o->master != NULL) backend_widen(o->master, o->params, o->pt->total);
}

// the host-side arrays of optim_layout
static void optim_free_layout(Optimizer* o) {
    for (int k = 0; k < o->n_gm; k++) {
        Selection* s = &o->gm[k].h_sel;
        free(s->idx); free(s->scale); free(s->upscale);
    }
    free(o->dense_lo); free(o->dense_hi);
    free(o->sketch_dim_of); free(o->sketch_S);
    free(o->grad_offset); free(o->gm_of_tensor); free(o->gm);
}

static void optim_free(Optimizer* o) {
    free(o->h_report);
    o->h_report = NULL;
    OptimBuffer* b = (OptimBuffer*)malloc_check(optim_max_buffers(o) * sizeof(OptimBuffer));
    int n = optim_buffers(o, b);
    for (int i = 0; i < n; i++) backend_free(*b[i].ptr);
    free(b);
    optim_free_layout(o);
}

// Byte counts for the memory plan, from the config alone, before anything is allocated: the
// same layout and buffer table optim_init allocates from.
typedef struct {
    size_t dense_grad_bytes;   // gradients of the full-rank tensors
    size_t compressed_bytes;   // Grass's r x n compressed gradients
    size_t state_bytes;        // Adam moments: full-rank and subspace
    size_t other_bytes;        // indices, scales, norm vectors, norm scalars, all-reduce wire buffers
    size_t projected_params;   // parameters that live in Grass subspaces
    size_t master_bytes;       // fp32 master weights (--master-weights 1)
    size_t normpass_bytes;     // the norm pass's gradients or sketches (--grass-norms; GaLore's gradients for the SVD)
    size_t work_bytes;         // GaLore's SVD and dense-update scratch
    size_t max_gather;         // the widest gathered operand in columns: the largest r, or the
                               // largest dimension when the norm pass gathers whole gradients
    size_t max_rank, max_matrix, max_sub, max_dim_sel;  // largest Grass r, m x n, r x other, selection dim
    size_t comm_step_bytes;    // all-reduced per step with several ranks: dense grads + compressed grads
    size_t comm_dense_bytes;   // of which the dense gradients (optim_dense_comm_bytes)
    size_t comm_refresh_bytes; // extra at a Grass refresh: the row-norm vectors
} OptimPlan;

// Bytes counted for one step's exchange of n dense gradients: an all-reduce of them in their dtype,
// or with ZeRO-1 a reduce-scatter of them and an all-gather of the floatX weights (each half of an
// all-reduce's wire volume)
static double optim_dense_comm_bytes(const OptimConfig* c, const OptimRuntime* rt, size_t n) {
    double g = (double)grad_dtype_size(c->grad_dtype);
    return rt->sharded ? (double)n * (g + sizeof(floatX)) / 2 : (double)n * g;
}

static void optim_plan(const OptimConfig* c, const OptimRuntime* rt, const ParamTable* pt, OptimPlan* p) {
    memset(p, 0, sizeof(*p));
    Optimizer o;
    optim_layout(&o, c, rt, pt);
    OptimBuffer* b = (OptimBuffer*)malloc_check(optim_max_buffers(&o) * sizeof(OptimBuffer));
    int n = optim_buffers(&o, b);
    for (int i = 0; i < n; i++) {
        size_t* sum[] = {&p->dense_grad_bytes, &p->compressed_bytes, &p->state_bytes, &p->other_bytes, &p->master_bytes,
                         &p->normpass_bytes, &p->work_bytes};
        *sum[b[i].kind] += b[i].bytes;
    }
    free(b);
    // overlap on a bf16 build: the backend's floatX wire buffer per all-reduce group in flight
    if (rt->overlap && c->fused && sizeof(floatX) < sizeof(float))
        p->other_bytes += ALLREDUCE_LAYER_SLOTS * optim_largest_layer_C(&o) * sizeof(floatX);
    p->comm_dense_bytes = p->comm_step_bytes = (size_t)optim_dense_comm_bytes(c, rt, o.grad_total);
    for (int k = 0; k < o.n_gm; k++) {
        const GrassMatrix* g = &o.gm[k];
        const ParamTensor* t = &pt->t[g->tensor];
        size_t sub = grass_cap_numel(g);
        p->comm_step_bytes += sub * sizeof(floatX);  // floatX on the wire
        size_t nacc = rt->norm_path == NP_SKETCH ? (size_t)g->dim_sel * c->sketch_dim
                    : rt->norm_path == NP_DIRECT ? (size_t)g->dim_sel : t->numel;
        p->comm_refresh_bytes += nacc * sizeof(float);
        if ((size_t)g->r_cap > p->max_rank) p->max_rank = g->r_cap;
        if (t->numel > p->max_matrix) p->max_matrix = t->numel;
        if (sub > p->max_sub) p->max_sub = sub;
        if ((size_t)g->dim_sel > p->max_dim_sel) p->max_dim_sel = g->dim_sel;
        p->projected_params += t->numel;
    }
    p->max_gather = o.iota_len > (int)p->max_rank ? (size_t)o.iota_len : p->max_rank;
    optim_free_layout(&o);
}

// --grass-norms auto: exact unless its norm-pass buffers push the plan over `avail` bytes
// (plan_total: the plan's total with exact norms), then the sketch. The one place auto resolves.
static void optim_fit_norms(const OptimConfig* c, OptimRuntime* rt, const ParamTable* pt, size_t plan_total, size_t avail) {
    if (c->norms != NORMS_AUTO || c->type != OPT_GRASS || avail == 0 || plan_total <= avail) return;
    OptimPlan exact;
    optim_plan(c, rt, pt, &exact);
    OptimRuntime sk = *rt;
    optim_runtime_norms(&sk, NORMS_SKETCH);
    OptimPlan sketch;
    optim_plan(c, &sk, pt, &sketch);
    if (sketch.normpass_bytes < exact.normpass_bytes) *rt = sk;
}

// all-reduces through the backend, counting the payload (the communication accounting)
static void optim_allreduce_float(Optimizer* o, float* x, size_t n) {
    if (o->rt.world_size <= 1) return;
    allreduce_sum_float(x, n);
    o->comm_bytes += (double)n * sizeof(float);
}
// compressed gradients: fp32 buffers, floatX on the wire (as the dense gradients travel)
static void optim_allreduce_compressed(Optimizer* o, float* x, size_t n) {
    if (o->rt.world_size <= 1) return;
    allreduce_sum_float_wire_floatX(x, n);
    o->comm_bytes += (double)n * sizeof(floatX);
}
// the dense-gradient buffer from element i on, with its dtype (--grad-dtype)
static GradBuf optim_grads_from(const Optimizer* o, size_t i) {
    return grad_buf((char*)o->grads + i * grad_dtype_size(o->cfg.grad_dtype), o->cfg.grad_dtype);
}
// dense gradients [lo, lo + n) summed over the ranks in their dtype: at once, or started in the
// dense group (allreduce_wait(ALLREDUCE_SLOT_DENSE) completes it)
static void optim_allreduce_dense(Optimizer* o, size_t lo, size_t n, int start) {
    if (o->rt.world_size <= 1 || n == 0) return;
    GradBuf g = optim_grads_from(o, lo);
    if (g.dtype == GRAD_FP32) {
        if (start) allreduce_start_float((float*)g.p, n, ALLREDUCE_SLOT_DENSE); else allreduce_sum_float((float*)g.p, n);
    } else {
        if (start) allreduce_start_floatX((floatX*)g.p, n, ALLREDUCE_SLOT_DENSE); else allreduce_sum_floatX((floatX*)g.p, n);
    }
    o->comm_bytes += (double)n * grad_dtype_size(g.dtype);
}

// tensor's piece of the dense-gradient buffer; .p NULL for a projected tensor
static GradBuf optim_grad_of(Optimizer* o, int tensor) {
    size_t off = o->grad_offset[tensor];
    return off == (size_t)-1 ? grad_buf(NULL, o->cfg.grad_dtype) : optim_grads_from(o, off);
}

// zero the gradient accumulators at the start of a step
static void optim_zero_grads(Optimizer* o) {
    backend_memset0(o->grads, o->grad_alloc * grad_dtype_size(o->cfg.grad_dtype));
    if (o->C_pool != NULL) {
        backend_memset0(o->C_pool, o->C_pool_numel * sizeof(float));
    } else {
        for (int k = 0; k < o->n_gm; k++) backend_memset0(o->gm[k].C, grass_cap_numel(&o->gm[k]) * sizeof(float));
    }
    backend_memset0(o->d_report, optim_report_bytes(o));  // the loss sum and the norm scalars
    o->pending_layer = -1;
    o->dense_started = 0;
}

// The norm pass's share of one micro-batch for matrix g (dout: N x out, rows ld_dout apart; inp: N x in).
static void optim_norm_pass_grad(Optimizer* o, GrassMatrix* g, const floatX* dout, int ld_dout, const floatX* inp, int N) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    int in = t->cols, out = t->rows, k = o->cfg.sketch_dim;
    switch (o->rt.norm_path) {
    case NP_DIRECT:  // this micro-batch's squared norms, from blockwise GEMMs
        grass_grad_norms(g->norms, dout, ld_dout, inp, N, in, out, g->cols_side);
        break;
    case NP_LAYER_G:
    case NP_FULL_G:  // the whole fp32 gradient out x in: the gathered GEMM with every index, scale 1
        grass_gathered_grad(g->nacc, dout, ld_dout, inp, o->d_iota, o->d_ones, g->dim_sel, N, in, out, g->cols_side, 1);
        break;
    case NP_SKETCH: {  // Y += G S, G = dY^T X: rows side dY^T (X S), cols side X^T (dY S) (= G^T S)
        const floatX* S = NULL;
        for (int j = 0; j < o->n_sketch; j++) if (o->sketch_dim_of[j] == g->other) S = o->sketch_S[j];
        const floatX* left = g->cols_side ? inp : dout;    // N x dim_sel
        const floatX* right = g->cols_side ? dout : inp;   // N x other
        int ld_left = g->cols_side ? in : ld_dout, ld_right = g->cols_side ? ld_dout : in;
        matmul_forward_strided(o->sketch_tmp, right, ld_right, S, N, g->other, k);  // N x k = right S
        grass_gathered_grad(g->nacc, left, ld_left, o->sketch_tmp, o->d_iota, o->d_ones, g->dim_sel, N, k, g->dim_sel, 0, 1);
        break;
    }
    }
}

// GaLore: the projector of matrix g from its whole gradient G (fp32, summed over micro-batches and
// ranks), and the energy it keeps (the singular values, which galore_projector leaves in work)
static void optim_galore_svd(Optimizer* o, GrassMatrix* g, const float* G) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    galore_projector(g->Pt, g->Ptx, G, t->rows, t->cols, g->cols_side, g->r, o->galore_work);
    float* sv = (float*)malloc_check((size_t)g->dim_sel * sizeof(float));
    backend_download(sv, o->galore_work + (size_t)g->other * g->dim_sel, (size_t)g->dim_sel * sizeof(float));
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
        GrassMatrix* g = &o->gm[k];
        const ParamTensor* t = &o->pt->t[g->tensor];
        if (t->layer != layer) continue;
        optim_allreduce_float(o, g->nacc, t->numel);
        if (o->cfg.type == OPT_GALORE) optim_galore_svd(o, g, g->nacc);
        else rows_sumsq(g->norms, g->nacc, t->rows, t->cols, g->cols_side);
        backend_memset0(g->nacc, t->numel * sizeof(float));
    }
}

// ---- the gradient hand-off (grad_sink.h): what the model's backward pass calls ------------------
// A linear layer's weight gradient, dout: N x out (rows ld_dout apart), inp: N x in. Dense tensors
// accumulate dW; projected ones accumulate C, or the squared row/column norms during the norm pass
// of a refresh.
static void grad_linear(Optimizer* o, int tensor, const floatX* dout, int ld_dout, const floatX* inp, int N) {
    const ParamTensor* t = &o->pt->t[tensor];
    int k = o->gm_of_tensor[tensor];
    if (k < 0) {
        if (o->mode == BWD_NORMS) return;  // the norm pass computes nothing for dense tensors
        matmul_backward_weight(optim_grad_of(o, tensor), dout, ld_dout, inp, N, t->cols, t->rows, 1);
        return;
    }
    GrassMatrix* g = &o->gm[k];
    if (o->mode == BWD_NORMS) {
        optim_norm_pass_grad(o, g, dout, ld_dout, inp, N);
    } else if (o->cfg.type == OPT_GALORE) {
        galore_project_grad(g->C, dout, ld_dout, inp, g->Ptx, g->r, N, t->cols, t->rows, g->cols_side);
    } else {
        grass_gathered_grad(g->C, dout, ld_dout, inp, g->d_idx, g->d_scale, g->r_eff, N, t->cols, t->rows, g->cols_side, 1);
    }
}

// The weight gradients of `count` adjacent linear layers computed as one fused GEMM (grad_sink.h):
// dout is N x (their outs, side by side). When every one has a dense gradient and those gradients
// follow each other in the buffer as the weights do, (out_1 + .. + out_count) x in is one GEMM.
static void grad_linears(Optimizer* o, int first, int count, const floatX* dout, const floatX* inp, int N) {
    const ParamTensor* t0 = &o->pt->t[first];
    int width = 0, one_gemm = o->mode == BWD_GRADS;
    for (int i = 0; i < count; i++) {
        const ParamTensor* t = &o->pt->t[first + i];
        if (t->cols != t0->cols)
            fatal("grad_linears: '%s' has %d inputs, '%s' %d; fused layers share their input", t0->name, t0->cols, t->name, t->cols);
        // projected (no dense gradient: grad_offset -1), or not right after the previous one
        if (o->gm_of_tensor[first + i] >= 0 || o->grad_offset[first + i] != o->grad_offset[first] + (size_t)width * t0->cols)
            one_gemm = 0;
        width += t->rows;
    }
    if (one_gemm) {
        matmul_backward_weight(optim_grad_of(o, first), dout, width, inp, N, t0->cols, width, 1);
        return;
    }
    for (int i = 0, col = 0; i < count; col += o->pt->t[first + i].rows, i++) grad_linear(o, first + i, dout + col, width, inp, N);
}

// A norm's or the embedding's gradient buffer; .p NULL in the norm pass, which wants none.
static GradBuf grad_dense(Optimizer* o, int tensor) {
    return o->mode == BWD_GRADS ? optim_grad_of(o, tensor) : grad_buf(NULL, o->cfg.grad_dtype);
}

// the stochastic-rounding seed of a tensor's update at a step: rank-independent, and a resumed
// run (which restores the optimizer step) reproduces it
static uint64_t optim_update_seed(const Optimizer* o, int tensor) {
    return rng_seed_for(o->cfg.seed ^ 0x5EED5EEDULL, (uint64_t)o->step, (uint64_t)tensor);
}

// grad_scale_dev: the backend clipping factor (NULL: grad_scale)
static void optim_apply_grass(Optimizer* o, GrassMatrix* g, float lr, float grad_scale, const float* grad_scale_dev) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    g->t++;
    AdamParams ap = adam_params(&o->cfg, lr, t->decay ? o->cfg.weight_decay : 0.0f, g->t, grad_scale);
    ap.grad_scale_dev = grad_scale_dev;
    if (o->cfg.type == OPT_GALORE) {
        galore_adam_update(o->params + t->offset, o->master != NULL ? o->master + t->offset : NULL, g->C, g->m, g->v,
                           o->cfg.state_dtype, g->Pt, g->r, t->rows, t->cols, g->cols_side, ap, o->cfg.alpha,
                           optim_update_seed(o, g->tensor), o->galore_work);
        return;
    }
    grass_adam_update(o->params + t->offset, o->master != NULL ? o->master + t->offset : NULL, g->C, g->m, g->v, o->cfg.state_dtype, g->d_idx, g->d_upscale, g->r_eff, t->rows, t->cols,
                      g->cols_side, ap, o->cfg.alpha, optim_update_seed(o, g->tensor));
}

static size_t grass_sub_numel(const GrassMatrix* g) { return (size_t)g->r_eff * g->other; }
// acc += the squared norm of matrix g's part of the gradient the optimizer uses, unscaled: Grass's
// B G (C = rho B G with each row's rho divided out), GaLore's R = P^T G (P orthonormal: no scale)
static void optim_sumsq_projected(Optimizer* o, float* acc, GrassMatrix* g) {
    if (o->cfg.type == OPT_GRASS) sumsq_unscaled(acc, g->C, g->d_scale, g->r_eff, g->other, g->cols_side);
    else sumsq_float(acc, g->C, grass_sub_numel(g));
}
// the host selection's indices and scales to the backend copies the kernels read
static void grass_upload_selection(GrassMatrix* g) {
    backend_upload(g->d_idx, g->h_sel.idx, g->r_eff * sizeof(int));
    backend_upload(g->d_scale, g->h_sel.scale, g->r_eff * sizeof(float));
    backend_upload(g->d_upscale, g->h_sel.upscale, g->r_eff * sizeof(float));
}

// Fused path, second half: the layer's compressed gradients are summed over ranks; measure
// them (into the layer's own norm scalars, read once per step) and apply the updates.
static void optim_finish_layer(Optimizer* o, int layer) {
    if (o->rt.overlap) allreduce_wait(layer % ALLREDUCE_LAYER_SLOTS);
    for (int k = 0; k < o->n_gm; k++) {
        GrassMatrix* g = &o->gm[k];
        if (o->pt->t[g->tensor].layer != layer) continue;
        optim_sumsq_projected(o, o->d_layer_sumsq + k, g);
        optim_apply_grass(o, g, o->lr, o->clip_scale, NULL);
        // a later layer accumulates into the same pool: leave it zeroed
        if (o->C_pool != NULL) backend_memset0(g->C, grass_cap_numel(g) * sizeof(float));
    }
}

// Fused path: called by the backward pass once every weight gradient of `layer` is complete
// (only on the last micro-step of a step). Reduces the layer's compressed gradients across
// ranks and applies their updates: at once, or (overlap_comm) the reduction starts now and
// the update waits until the next layer's backward has been issued, so that the all-reduce
// runs during that backward (on the GPU's communication stream). Layer l's weights are not
// read again in this backward pass, so the later update gives the same result.
static void grad_layer_done(Optimizer* o, int layer) {
    if (o->mode == BWD_NORMS && o->rt.norm_path == NP_LAYER_G) optim_norm_pass_layer(o, layer);
    if (o->dense_overlap && o->last_micro && o->mode == BWD_GRADS && o->rt.world_size > 1) {
        size_t lo = o->dense_lo[layer], hi = o->dense_hi[layer];
        if (hi > lo) {
            optim_allreduce_dense(o, lo, hi - lo, 1);
            o->dense_started = 1;
        }
    }
    if (!o->apply_fused || o->mode != BWD_GRADS) return;
    if (!o->rt.overlap) {
        for (int k = 0; k < o->n_gm; k++)
            if (o->pt->t[o->gm[k].tensor].layer == layer) optim_allreduce_compressed(o, o->gm[k].C, grass_sub_numel(&o->gm[k]));
        optim_finish_layer(o, layer);
        return;
    }
    for (int k = 0; k < o->n_gm; k++) {
        GrassMatrix* g = &o->gm[k];
        if (o->pt->t[g->tensor].layer != layer) continue;
        if (o->rt.world_size > 1) {
            allreduce_start_float_wire_floatX(g->C, grass_sub_numel(g), layer % ALLREDUCE_LAYER_SLOTS);
            o->comm_bytes += (double)grass_sub_numel(g) * sizeof(floatX);
        }
    }
    if (o->pending_layer >= 0) optim_finish_layer(o, o->pending_layer);
    o->pending_layer = layer;
}

// fused path: the sum of squares of every compressed gradient applied during the backward
// pass, in a fixed order (layers from the last, matrices in table order), from the report's
// per-matrix sums (ss, n_gm of them)
static double optim_fused_sumsq(const Optimizer* o, const float* ss) {
    double total = 0.0;
    for (int l = optim_max_layer(o->pt); l >= 0; l--)
        for (int k = 0; k < o->n_gm; k++) if (o->pt->t[o->gm[k].tensor].layer == l) total += ss[k];
    return total;
}

// The part [a, b) of dense tensor i's range in the gradient buffer that lies in this rank's
// ZeRO-1 block (all of it unsharded); 0 when none does (or the tensor has no dense gradient).
static int optim_shard_part(const Optimizer* o, int i, size_t* a, size_t* b) {
    size_t off = o->grad_offset[i];
    if (off == (size_t)-1) return 0;
    size_t end = off + o->pt->t[i].numel;
    *a = off > o->shard_lo ? off : o->shard_lo;
    *b = end < o->shard_hi ? end : o->shard_hi;
    return *a < *b;
}

// After the backward passes of a step: reduce, measure, clip, update everything not yet
// updated, then read the step's report (its one host sync): o->loss_sum is the loss summed over
// the step's micro-steps on this rank (llama_forward_train into optim_loss_acc). The clipping
// factor is formed on the backend (clip_factor), so nothing waits for the norm before the
// updates are queued. Returns the global gradient norm before clipping, of the gradient the optimizer uses,
// unscaled: AdamW's whole gradient; the dense tensors plus Grass's selected rows B G (rho divided
// out) or GaLore's projection P^T G. All three are norms of the same step's gradient (of its
// whole or of an orthogonal projection of it); at full rank they are the whole gradient's norm.
static float optim_step(Optimizer* o) {
    float lr = o->lr;
    int fused = o->cfg.type != OPT_ADAMW && o->cfg.fused;
    if (o->pending_layer >= 0) { optim_finish_layer(o, o->pending_layer); o->pending_layer = -1; }
    if (o->rt.sharded) {
        // ZeRO-1: each rank receives the summed gradients of its block only; the reduce-scatter
        // and the all-gather below move what one all-reduce of the dense gradients does, and are
        // counted as that (optim_dense_comm_bytes)
        if (o->cfg.grad_dtype == GRAD_FP32) reducescatter_sum_float((float*)o->grads, o->shard);
        else reducescatter_sum_floatX((floatX*)o->grads, o->shard);
        o->comm_bytes += optim_dense_comm_bytes(&o->cfg, &o->rt, o->grad_total);
    } else if (o->dense_started) {
        // the layers' dense gradients were reduced during the backward pass; what is left are
        // the embeddings (before layer 0) and the final norm and head (after the last layer)
        allreduce_wait(ALLREDUCE_SLOT_DENSE);
        size_t first = o->dense_lo[0], last = o->dense_hi[o->n_layers - 1];
        optim_allreduce_dense(o, 0, first, 0);
        optim_allreduce_dense(o, last, o->grad_total - last, 0);
        o->dense_started = 0;
    } else {
        optim_allreduce_dense(o, 0, o->grad_total, 0);
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_allreduce_compressed(o, o->gm[k].C, grass_sub_numel(&o->gm[k]));
    backend_memset0(o->d_sumsq, sizeof(float));
    GradBuf mine = optim_grads_from(o, o->shard_lo);
    if (mine.dtype == GRAD_FP32) sumsq_float(o->d_sumsq, (const float*)mine.p, o->shard_hi - o->shard_lo);
    else sumsq_floatX(o->d_sumsq, (const floatX*)mine.p, o->shard_hi - o->shard_lo);
    if (o->rt.sharded) {  // the dense part of the norm, summed over the blocks
        allreduce_sum_float(o->d_sumsq, 1);
        o->comm_bytes += sizeof(float);
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_sumsq_projected(o, o->d_sumsq, &o->gm[k]);
    // clipping: this step's norm (the factor formed on the backend from d_sumsq: the norm of the
    // non-fused step is sqrt(d_sumsq) alone), or under the fused rule the factor set at its start
    float grad_scale = 1.0f;
    const float* grad_scale_dev = NULL;
    if (fused) grad_scale = o->clip_scale;
    else if (o->cfg.grad_clip > 0.0f) {
        clip_factor(o->d_grad_scale, o->d_sumsq, o->cfg.grad_clip);
        grad_scale_dev = o->d_grad_scale;
    }
    o->step++;
    // AdamW on the part of each dense tensor that lies in this rank's block (all of it unsharded)
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    for (int i = 0; i < o->pt->n; i++) {
        const ParamTensor* t = &o->pt->t[i];
        size_t a, b;
        if (!optim_shard_part(o, i, &a, &b)) continue;
        size_t in_t = a - o->grad_offset[i], soff = (a - o->shard_lo) * ssz;
        float lr_t = t->kind == PT_LINEAR && ((o->cfg.proj_mask >> t->lin) & 1) ? lr * o->cfg.matrix_lr_scale : lr;
        AdamParams ap = adam_params(&o->cfg, lr_t, t->decay ? o->cfg.weight_decay : 0.0f, o->step, grad_scale);
        ap.grad_scale_dev = grad_scale_dev;
        adamw_update(o->params + t->offset + in_t, o->master != NULL ? o->master + t->offset + in_t : NULL, optim_grads_from(o, a),
                     (char*)o->m + soff, (char*)o->v + soff, o->cfg.state_dtype, b - a, ap, optim_update_seed(o, i), in_t);
    }
    if (o->rt.sharded) {
        // every rank's updated block, staged in the (compact) gradient buffer, goes to all ranks;
        // the weights are floatX whatever the gradients' dtype (an fp32 buffer has room to spare)
        floatX* stage = (floatX*)o->grads;
        for (int i = 0; i < o->pt->n; i++) {
            size_t a, b;
            if (optim_shard_part(o, i, &a, &b))
                backend_copy(stage + a, o->params + o->pt->t[i].offset + (a - o->grad_offset[i]), (b - a) * sizeof(floatX));
        }
        allgather_floatX(stage, o->shard);
        for (int i = 0; i < o->pt->n; i++) {
            size_t off = o->grad_offset[i];
            if (off != (size_t)-1) backend_copy(o->params + o->pt->t[i].offset, stage + off, o->pt->t[i].numel * sizeof(floatX));
        }
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_apply_grass(o, &o->gm[k], lr, grad_scale, grad_scale_dev);
    // the report: one download, after everything above is queued
    char* rep = o->h_report;
    backend_download(rep, o->d_report, optim_report_bytes(o));
    float ss;
    memcpy(&o->loss_sum, rep, sizeof(double));
    memcpy(&ss, rep + 8, sizeof(float));
    double total = (double)ss + (fused ? optim_fused_sumsq(o, (const float*)(rep + 16)) : 0.0);
    float norm = (float)sqrt(total);
    o->prev_norm = norm;
    return norm;
}

// ---- the step protocol: what the trainer calls, in this order --------------------------------
//   optim_begin_step(o, step, lr)   once per optimizer step: its lr, the comm counter, zeroed
//                                   gradient accumulators
//   if (optim_needs_refresh(o)) {   Grass, every K steps: the norm pass, then new rows
//       optim_begin_norm_pass(o);
//       for each micro-step: optim_begin_micro(o, micro); forward; backward
//       optim_refresh(o); }
//   for each micro-step: optim_begin_micro(o, micro); forward; backward (grad_sink.h)
//   gnorm = optim_step(o)           reduce, measure, clip and update what is not updated yet
static void optim_begin_step(Optimizer* o, int64_t step, float lr) {
    if (step != o->step) fatal("optim_begin_step: step %lld, but the optimizer has done %lld steps", (long long)step, (long long)o->step);
    o->lr = lr;
    o->comm_bytes = 0;
    o->clip_scale = 1.0f;
    if (o->cfg.type != OPT_ADAMW && o->cfg.fused && o->cfg.grad_clip > 0.0f && o->prev_norm > o->cfg.grad_clip)
        o->clip_scale = o->cfg.grad_clip / o->prev_norm;
    optim_zero_grads(o);
}
// micro-step `micro` of rt.accum is about to run its backward pass
static void optim_begin_micro(Optimizer* o, int micro) {
    o->last_micro = micro == o->rt.accum - 1;
    o->apply_fused = o->cfg.type != OPT_ADAMW && o->cfg.fused && o->last_micro;
}

// Does the step about to run re-select the rows?
static int optim_needs_refresh(const Optimizer* o) {
    return o->cfg.type != OPT_ADAMW && o->n_gm > 0 && (o->step % o->cfg.update_freq == 0 || o->gm[0].r_eff == 0);
}

static void optim_begin_norm_pass(Optimizer* o) {
    o->refreshed.kept = 0.0; o->refreshed.total = 0.0;
    for (int k = 0; k < o->n_gm; k++) {
        GrassMatrix* g = &o->gm[k];
        if (g->norms != NULL) backend_memset0(g->norms, g->dim_sel * sizeof(float));
        if (o->rt.norm_path == NP_FULL_G) backend_memset0(g->nacc, o->pt->t[g->tensor].numel * sizeof(float));
        if (o->rt.norm_path == NP_SKETCH) backend_memset0(g->nacc, (size_t)g->dim_sel * o->cfg.sketch_dim * sizeof(float));
    }
    if (o->nacc_pool != NULL) backend_memset0(o->nacc_pool, o->nacc_pool_numel * sizeof(float));
    // a fresh sketch per refresh, the same on every rank: S^T (k x dim), entries +-1 with equal
    // probability (exact in bf16, E[S S^T] = k I), drawn from (seed, step, dim)
    for (int j = 0; j < o->n_sketch; j++) {
        size_t n = (size_t)o->cfg.sketch_dim * o->sketch_dim_of[j];
        float* h = (float*)malloc_check(n * sizeof(float));
        uint64_t rng = rng_seed_for(o->cfg.seed ^ 0x5E7C11ULL, (uint64_t)o->step, (uint64_t)o->sketch_dim_of[j]);
        for (size_t i = 0; i < n; i += 64) {
            uint64_t bits = splitmix64(&rng);
            for (size_t b = 0; b < 64 && i + b < n; b++) h[i + b] = (bits >> b) & 1 ? 1.0f : -1.0f;
        }
        backend_upload_floats(o->sketch_S[j], h, n);
        free(h);
    }
    o->mode = BWD_NORMS;
}

// After the norm pass: each matrix's scores of the whole step, summed over the ranks
static void optim_finish_norms(Optimizer* o, GrassMatrix* g) {
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

// After the norm pass: sum the norms over ranks, select with the shared seed, reset moments.
static void optim_refresh(Optimizer* o) {
    int64_t step = o->step;
    int max_dim = 0;
    for (int k = 0; k < o->n_gm; k++) if (o->gm[k].dim_sel > max_dim) max_dim = o->gm[k].dim_sel;
    float* q = (float*)malloc_check((size_t)max_dim * sizeof(float));
    o->refreshed.hash = 1469598103934665603ULL;
    for (int k = 0; k < o->n_gm && o->cfg.type == OPT_GALORE; k++) {
        // GaLore: the new projectors came from the SVDs (optim_norm_pass_layer, optim_finish_norms);
        // the moments carry over, as in GaLore
        optim_finish_norms(o, &o->gm[k]);
        o->gm[k].r_eff = o->gm[k].r;
    }
    for (int k = 0; k < o->n_gm && o->cfg.type == OPT_GRASS; k++) {
        GrassMatrix* g = &o->gm[k];
        optim_finish_norms(o, g);
        uint64_t rng = rng_seed_for(o->cfg.seed, (uint64_t)step, (uint64_t)g->tensor);
        int r_eff = o->cfg.select_on_device
                  ? grass_select_device(o->cfg.select, g->norms, g->dim_sel, g->r, rng, g->d_idx, g->d_scale, g->d_upscale)
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
        grass_apply_upscale(o->cfg.upscale, &g->h_sel);
        int padded = grass_pad_selection(&g->h_sel, g->dim_sel, o->cfg.row_align);
        g->r_eff = g->h_sel.r_eff;
        if (r_eff < 0 || o->cfg.upscale != UPSCALE_PAPER || padded > 0) grass_upload_selection(g);
        size_t sub = grass_cap_numel(g) * state_dtype_size(o->cfg.state_dtype);
        backend_memset0(g->m, sub);
        backend_memset0(g->v, sub);
        g->t = 0;
    }
    free(q);
    o->mode = BWD_GRADS;
    // what was chosen: distinct rows of the r draws, and the per-row step multiplier (count * rho,
    // the factor on alpha * lr * the Adam direction; 1 for top-r)
    o->refreshed.distinct = 0; o->refreshed.draws = 0; o->refreshed.rows = 0; o->refreshed.mult_mean = 0; o->refreshed.mult_max = 0;
    for (int k = 0; k < o->n_gm; k++) {
        const GrassMatrix* g = &o->gm[k];
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

// ---- state files -----------------------------------------------------------------------------
// Written after the model checkpoint; see docs/FORMATS.md. Host-side copies through the backend.
static void write_backend_bytes(FILE* f, const void* d, size_t n, const char* path) {
    const size_t chunk = (size_t)1 << 26;
    char* buf = (char*)malloc_check((n < chunk ? n : chunk) + 1);
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        backend_download(buf, (const char*)d + off, c);
        fwrite_check(buf, 1, c, f, path);
    }
    free(buf);
}
static void read_backend_bytes(FILE* f, void* d, size_t n, const char* path) {
    const size_t chunk = (size_t)1 << 26;
    char* buf = (char*)malloc_check((n < chunk ? n : chunk) + 1);
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        fread_check(buf, 1, c, f, path);
        backend_upload((char*)d + off, buf, c);
    }
    free(buf);
}

// the optimizer fields that must match for a state file to be loadable
static void optim_signature(const Optimizer* o, int32_t sig[16]) {
    memset(sig, 0, 16 * sizeof(int32_t));
    sig[0] = o->cfg.type; sig[1] = o->n_gm; sig[2] = (int32_t)(o->grad_total & 0x7fffffff);
    sig[3] = o->cfg.type == OPT_GRASS ? o->cfg.select : -1;
    sig[4] = o->cfg.type != OPT_ADAMW ? o->cfg.update_freq : 0;
    sig[5] = o->cfg.type != OPT_ADAMW ? o->cfg.proj_mask : 0;
    sig[6] = o->cfg.type != OPT_ADAMW ? o->cfg.fused : 0;
    for (int k = 0; k < o->n_gm; k++) sig[7] += o->gm[k].r;
    sig[8] = (int32_t)(o->cfg.seed & 0x7fffffff);
    sig[9] = o->cfg.state_dtype;  // 0 (fp32) in files written before bf16 states existed
    sig[10] = o->cfg.master_weights;
    sig[11] = o->rt.sharded ? o->rt.world_size : 0;
    sig[12] = o->cfg.type == OPT_GRASS ? o->cfg.upscale : 0;  // 0 (paper) in files written before the rule existed
    sig[13] = 1;  // the layout: 1 = the previous step's gradient norm follows the step count (0 in older files)
}

// what each signature field is, by name, and its value as a reader would write it
static const char* OPTIM_SIGNATURE_NAMES[16] = {"--optimizer", "projected matrices", "full-rank values", "--grass-select",
    "--update-freq", "--grass-layers", "--grass-fused", "sum of Grass ranks (--rank)", "--seed (low 31 bits)", "--state-dtype",
    "--master-weights", "--zero ranks", "--grass-upscale", "state layout", "(unused)", "(unused)"};
static void optim_signature_value(int field, int32_t v, char* buf, size_t n) {
    if (field == 0 && v >= 0 && v < OPTIMIZER_COUNT) snprintf(buf, n, "%s", OPTIMIZER_NAMES[v]);
    else if (field == 3 && v >= 0 && v < SEL_COUNT) snprintf(buf, n, "%s", GRASS_SELECT_NAMES[v]);
    else if (field == 3 && v < 0) snprintf(buf, n, "none (not grass)");
    else if (field == 5) {
        size_t len = 0;
        buf[0] = '\0';
        for (int t = 0; t < LIN_NONE; t++)
            if ((v >> t) & 1) len += snprintf(buf + len, len < n ? n - len : 0, "%s%s", len ? "," : "", LINEAR_TYPE_NAMES[t]);
        if (len == 0) snprintf(buf, n, "none");
    }
    else if (field == 9) snprintf(buf, n, "%s", v == STATE_BF16 ? "bf16" : "fp32");
    else if (field == 12 && v >= 0 && v < UPSCALE_COUNT) snprintf(buf, n, "%s", GRASS_UPSCALE_NAMES[v]);
    else snprintf(buf, n, "%d", (int)v);
}

static void optim_save(const Optimizer* o, FILE* f, const char* path) {
    int32_t sig[16];
    optim_signature(o, sig);
    fwrite_check(sig, sizeof(int32_t), 16, f, path);
    int64_t step = o->step;
    fwrite_check(&step, sizeof(int64_t), 1, f, path);
    fwrite_check(&o->prev_norm, sizeof(float), 1, f, path);  // sig[13] = 1
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    if (!o->rt.sharded) {  // sharded moments go to one file per rank (optim_save_shard)
        write_backend_bytes(f, o->m, o->grad_total * ssz, path);
        write_backend_bytes(f, o->v, o->grad_total * ssz, path);
    }
    for (int k = 0; k < o->n_gm; k++) {
        const GrassMatrix* g = &o->gm[k];
        int32_t hdr[4] = {g->tensor, g->cols_side, g->r, g->r_eff};
        fwrite_check(hdr, sizeof(int32_t), 4, f, path);
        fwrite_check(&g->t, sizeof(int64_t), 1, f, path);
        if (o->cfg.type == OPT_GALORE) {  // the projector in place of the selection
            if (g->r_eff > 0) write_backend_bytes(f, g->Pt, (size_t)g->r * g->dim_sel * sizeof(float), path);
        } else {
            fwrite_check(g->h_sel.idx, sizeof(int), g->r_eff, f, path);
            fwrite_check(g->h_sel.scale, sizeof(float), g->r_eff, f, path);
            fwrite_check(g->h_sel.upscale, sizeof(float), g->r_eff, f, path);
        }
        write_backend_bytes(f, g->m, grass_sub_numel(g) * ssz, path);
        write_backend_bytes(f, g->v, grass_sub_numel(g) * ssz, path);
    }
    if (o->master != NULL) write_backend_bytes(f, o->master, o->pt->total * sizeof(float), path);
}

static void optim_load(Optimizer* o, FILE* f, const char* path) {
    int32_t sig[16], want[16];
    fread_check(sig, sizeof(int32_t), 16, f, path);
    optim_signature(o, want);
    int has_prev_norm = sig[13] == 1;
    want[13] = sig[13];  // either layout loads
    if (sig[0] != want[0]) {  // another optimizer: its other fields mean other things, name this one
        char a[48], b[48];
        optim_signature_value(0, sig[0], a, sizeof(a));
        optim_signature_value(0, want[0], b, sizeof(b));
        fatal("'%s' holds the state of another optimizer setup (--optimizer: file %s, this run %s); resume with the same "
              "optimizer flags", path, a, b);
    }
    if (sig[11] != want[11])
        fatal("'%s' was written %s ZeRO-1 (%d ranks) and this run %s; resume with the same --zero and number of ranks",
              path, sig[11] ? "with" : "without", sig[11], want[11] ? "shards" : "does not shard");
    if (sig[12] != want[12])
        fatal("'%s' was written with --grass-upscale %s and this run uses %s; resume with the same rule", path,
              sig[12] >= 0 && sig[12] < UPSCALE_COUNT ? GRASS_UPSCALE_NAMES[sig[12]] : "?", GRASS_UPSCALE_NAMES[want[12]]);
    if (sig[10] != want[10])
        fatal("'%s' was written %s fp32 master weights and this run %s them; resume with the same --master-weights",
              path, sig[10] ? "with" : "without", want[10] ? "keeps" : "does not keep");
    if (memcmp(sig, want, sizeof(sig)) != 0) {
        // name every field that differs, with the file's value and this run's
        char diff[1024] = "";
        size_t len = 0;
        for (int i = 0; i < 16; i++) {
            if (sig[i] == want[i]) continue;
            char a[48], b[48];
            optim_signature_value(i, sig[i], a, sizeof(a));
            optim_signature_value(i, want[i], b, sizeof(b));
            append_item(diff, sizeof(diff), &len, "%s: file %s, this run %s", OPTIM_SIGNATURE_NAMES[i], a, b);
            if (len >= sizeof(diff)) break;
        }
        fatal("'%s' holds the state of another optimizer setup (%s); resume with the same optimizer flags", path, diff);
    }
    int64_t step;
    fread_check(&step, sizeof(int64_t), 1, f, path);
    o->step = step;
    o->prev_norm = 0.0f;  // older files: the first resumed step is not clipped under the fused rule
    if (has_prev_norm) fread_check(&o->prev_norm, sizeof(float), 1, f, path);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    if (!o->rt.sharded) {
        read_backend_bytes(f, o->m, o->grad_total * ssz, path);
        read_backend_bytes(f, o->v, o->grad_total * ssz, path);
    }
    for (int k = 0; k < o->n_gm; k++) {
        GrassMatrix* g = &o->gm[k];
        int32_t hdr[4];
        fread_check(hdr, sizeof(int32_t), 4, f, path);
        if (hdr[0] != g->tensor || hdr[1] != g->cols_side || hdr[2] != g->r || hdr[3] < 0 || hdr[3] > g->r_cap)
            fatal("'%s': Grass matrix %d does not match this model (tensor %d side %d rank %d)", path, k, hdr[0], hdr[1], hdr[2]);
        g->r_eff = hdr[3];
        fread_check(&g->t, sizeof(int64_t), 1, f, path);
        if (o->cfg.type == OPT_GALORE) {
            if (g->r_eff != 0 && g->r_eff != g->r) fatal("'%s': GaLore matrix %d holds %d of %d projector rows", path, k, g->r_eff, g->r);
            if (g->r_eff > 0) {
                size_t np = (size_t)g->r * g->dim_sel;
                float* h = (float*)malloc_check(np * sizeof(float));
                fread_check(h, sizeof(float), np, f, path);
                backend_upload(g->Pt, h, np * sizeof(float));
                if ((void*)g->Ptx != (void*)g->Pt) backend_upload_floats(g->Ptx, h, np);
                free(h);
            }
        } else {
            fread_check(g->h_sel.idx, sizeof(int), g->r_eff, f, path);
            fread_check(g->h_sel.scale, sizeof(float), g->r_eff, f, path);
            fread_check(g->h_sel.upscale, sizeof(float), g->r_eff, f, path);
            for (int j = 0; j < g->r_eff; j++)
                if (g->h_sel.idx[j] < 0 || g->h_sel.idx[j] >= g->dim_sel) fatal("'%s': selected index %d out of range", path, g->h_sel.idx[j]);
            grass_upload_selection(g);
        }
        read_backend_bytes(f, g->m, grass_sub_numel(g) * ssz, path);
        read_backend_bytes(f, g->v, grass_sub_numel(g) * ssz, path);
    }
    if (o->master != NULL) read_backend_bytes(f, o->master, o->pt->total * sizeof(float), path);
}
// ZeRO-1 shard files: this rank's block of the AdamW moments. int64 header {magic 20261130,
// rank, ranks, block length, moment dtype, dense gradient count}, m, v (block length values
// each, in the moment dtype), int64 magic again, the checksum trailer (checksum.h). Written to a
// temporary file and renamed. Magic 20261106: the same without the trailer (read unchecked).
#define ZERO_SHARD_MAGIC 20261130
#define ZERO_SHARD_MAGIC_UNCHECKED 20261106
static void optim_save_shard(const Optimizer* o, const char* path) {
    char tmp[1200];
    FILE* f = ckpt_file_open(path, tmp, sizeof(tmp));
    int64_t h[6] = {ZERO_SHARD_MAGIC, o->rt.rank, o->rt.world_size, (int64_t)o->shard, o->cfg.state_dtype,
                    (int64_t)o->grad_total};
    fwrite_check(h, sizeof(int64_t), 6, f, tmp);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    write_backend_bytes(f, o->m, o->shard * ssz, tmp);
    write_backend_bytes(f, o->v, o->shard * ssz, tmp);
    int64_t end = ZERO_SHARD_MAGIC;
    fwrite_check(&end, sizeof(int64_t), 1, f, tmp);
    ckpt_file_commit(f, tmp, path);
}
static void optim_load_shard(Optimizer* o, const char* path) {
    FILE* f = fopen_check(path, "rb");
    int64_t h[6];
    fread_check(h, sizeof(int64_t), 6, f, path);
    if (h[0] != ZERO_SHARD_MAGIC && h[0] != ZERO_SHARD_MAGIC_UNCHECKED) fatal("'%s' is not a grass.c ZeRO-1 shard file", path);
    int64_t magic = h[0];  // ZERO_SHARD_MAGIC: its trailer was checked by the resume's find_resume_checkpoint
    if (h[1] != o->rt.rank || h[2] != o->rt.world_size || h[3] != (int64_t)o->shard || h[4] != o->cfg.state_dtype ||
        h[5] != (int64_t)o->grad_total)
        fatal("'%s' holds block %lld of %lld (length %lld, dtype %lld, %lld dense values); this rank needs block %d of %d "
              "(length %zu, dtype %d, %zu)", path, (long long)h[1], (long long)h[2], (long long)h[3], (long long)h[4],
              (long long)h[5], o->rt.rank, o->rt.world_size, o->shard, o->cfg.state_dtype, o->grad_total);
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    read_backend_bytes(f, o->m, o->shard * ssz, path);
    read_backend_bytes(f, o->v, o->shard * ssz, path);
    int64_t end = 0;
    fread_check(&end, sizeof(int64_t), 1, f, path);
    if (end != magic) fatal("'%s' is corrupt (bad end marker)", path);
    fclose_check(f, path);
}
#endif // GRASS_OPTIM_CUH
