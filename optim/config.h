/*
 * optim/config.h: the optimizer's flags and the run's facts: OptimConfig (what the user asked for),
 * OptimRuntime (ranks, accumulation and what follows from them), the names of the flags' values,
 * the defaults, and the checks of a configuration against the model (optim_config_validate).
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_CONFIG_H
#define GRASS_OPTIM_CONFIG_H

#include <math.h>
#include "utils.h"
#include "backend.h"
#include "llama_params.h"

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
// Where Adam's epsilon enters the update (--adam-eps-style; docs/GRASS_IMPL.md, "GaLore"):
//   corrected  (m / bc1) / (sqrt(v / bc2) + eps): eps added to sqrt of the bias-corrected v
//              (torch.optim.AdamW, the Adam paper); AdamW's and Grass's default
//   raw        lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps): eps added to sqrt(v) before the bias
//              correction (galore_torch's AdamW, transformers' old AdamW), which is eps / sqrt(bc2)
//              in corrected terms: 31.6 eps at step 1 with beta2 0.999; GaLore's default
//   auto       the optimizer's default (resolved by optim_resolve_eps_style before a run starts)
typedef enum { EPS_CORRECTED = 0, EPS_RAW, EPS_AUTO, EPS_STYLE_COUNT } AdamEpsStyle;
static const char* ADAM_EPS_STYLE_NAMES[] = {"corrected", "raw", "auto"};
// Which side of a matrix GaLore projects (--galore-side; docs/GRASS_IMPL.md, "GaLore"):
//   official  galore_torch 1.0's 'std' projector: with out >= in (torch's Linear.weight shape,
//             our rows x cols), the columns (input features), else the rows; square matrices
//             from their columns
//   rows      the shorter side, square matrices from their rows (grass.c before 2026-12-07, and
//             Grass's rule)
typedef enum { GALORE_SIDE_OFFICIAL = 0, GALORE_SIDE_ROWS, GALORE_SIDE_COUNT } GaloreSide;
static const char* GALORE_SIDE_NAMES[] = {"official", "rows"};

// What a refresh does with the subspace Adam moments (--grass-refresh-state, --galore-refresh-state;
// docs/GRASS_IMPL.md, "Moments at a refresh"):
//   reset  every moment starts again at zero, the step count at 0 (Grass's rule before 2026-12-07)
//   keep   Grass: a row selected again keeps its m, v (rescaled to the new rho) and its own step
//          count; a new row starts at zero. GaLore: the moments carry over to the new projector.
typedef enum { REFRESH_RESET = 0, REFRESH_KEEP = 1, REFRESH_COUNT } RefreshState;
static const char* REFRESH_STATE_NAMES[] = {"reset", "keep"};

typedef struct {
    OptimizerType type;
    float b1, b2, eps, weight_decay, grad_clip;
    int eps_style;       // AdamEpsStyle of every Adam update, dense and projected (EPS_AUTO until resolved)
    int galore_side;     // GaloreSide: which side GaLore projects
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
    int grass_refresh;   // RefreshState of Grass's moments at a refresh (default reset)
    int galore_refresh;  // RefreshState of GaLore's moments at a projector refresh (default keep)
    uint64_t seed;       // selection seed (rank-independent)
} OptimConfig;

// Grass keeps the moments of rows selected again (each row then counts its own Adam steps)
static int optim_grass_keeps(const OptimConfig* c) { return c->type == OPT_GRASS && c->grass_refresh == REFRESH_KEEP; }

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
    // optim_fit_norms may switch auto to sketch
    optim_runtime_norms(&rt, c->norms == NORMS_AUTO ? NORMS_EXACT : c->norms);
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
    a.eps = adam_eps_for_style(c->eps, c->eps_style == EPS_RAW, a.bc2);
    a.grad_scale = grad_scale;
    a.grad_scale_dev = NULL;
    a.bc_rows = NULL;
    return a;
}

static void optim_config_defaults(OptimConfig* c) {
    memset(c, 0, sizeof(*c));
    c->type = OPT_ADAMW;
    c->b1 = 0.9f; c->b2 = 0.999f; c->eps = 1e-8f; c->weight_decay = 0.0f; c->grad_clip = 0.0f;
    c->select = SEL_MULTINORM; c->grass_rank = 128; c->grass_rank_frac = 0.0f; c->update_freq = 200; c->alpha = 0.25f;
    c->fused = 1; c->norms = NORMS_AUTO; c->sketch_dim = 64;
    c->proj_mask = (1 << LIN_DOWN) * 2 - 1;  // q k v o gate up down
    c->matrix_lr_scale = 1.0f;
    c->upscale = UPSCALE_MEAN;  // the study's choice (docs/GRASS_IMPL.md, "The up-projection's factor")
    c->grass_refresh = REFRESH_RESET;  // until the study decides (docs/GRASS_IMPL.md)
    c->galore_refresh = REFRESH_KEEP;  // GaLore's own rule
    c->seed = 1234;
    c->eps_style = EPS_AUTO; c->galore_side = GALORE_SIDE_OFFICIAL;
}

// --adam-eps-style auto: GaLore's official convention for GaLore, the standard one otherwise
static void optim_resolve_eps_style(OptimConfig* c) {
    if (c->eps_style == EPS_AUTO) c->eps_style = c->type == OPT_GALORE ? EPS_RAW : EPS_CORRECTED;
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
    if (x != floor(x)) {
        snprintf(err, errlen, "--rank %s: give an integer rank or a fraction below 1", text);
        return 0;
    }
    c->grass_rank = (int)x; c->grass_rank_frac = 0.0f;
    return 1;
}

// the largest --grass-row-align (grass_pad_selection; grass_rank_capacity rounds up to it)
#define GRASS_ROW_ALIGN_MAX 16

static int optim_is_projected(const OptimConfig* c, const ParamTensor* t) {
    return c->type != OPT_ADAMW && t->kind == PT_LINEAR && ((c->proj_mask >> t->lin) & 1);
}

// The side a projected matrix t (rows x cols = out x in) is projected from: 1 its columns (input
// features), 0 its rows. Grass and --galore-side rows: the shorter side, rows when square;
// GaLore official: galore_torch's rule, columns when rows >= cols.
static int optim_cols_side(const OptimConfig* c, const ParamTensor* t) {
    if (c->type == OPT_GALORE && c->galore_side == GALORE_SIDE_OFFICIAL) return t->rows >= t->cols;
    return t->rows > t->cols;
}

// rank for a matrix, with a clear error when it cannot be used
static int grass_rank_for(const OptimConfig* c, const ParamTensor* t, int dim_sel, char* err, size_t errlen) {
    int r = c->grass_rank > 0 ? c->grass_rank : (int)floor(c->grass_rank_frac * dim_sel + 0.5);
    if (r < 1) {
        snprintf(err, errlen, "rank for %s rounds to %d (dimension %d); use a larger --rank", t->name, r, dim_sel);
        return -1;
    }
    if (r > dim_sel) {
        snprintf(err, errlen, "--rank %d is larger than the dimension Grass selects from in %s (%d x %d: %d); "
                 "use --rank <= %d or a fraction like 0.25", r, t->name, t->rows, t->cols, dim_sel, dim_sel);
        return -1;
    }
    return r;
}

// Checks options against the model; returns 0 and a message on a problem.
static int optim_config_validate(const OptimConfig* c, const ParamTable* pt, char* err, size_t errlen) {
    if (!(c->b1 >= 0.0f && c->b1 < 1.0f) || !(c->b2 >= 0.0f && c->b2 < 1.0f)) {
        snprintf(err, errlen, "beta1 %g and beta2 %g must be in [0, 1)", c->b1, c->b2);
        return 0;
    }
    if (!(c->eps > 0.0f)) { snprintf(err, errlen, "adam eps %g must be > 0", c->eps); return 0; }
    if (c->eps_style < 0 || c->eps_style >= EPS_STYLE_COUNT) {
        snprintf(err, errlen, "--adam-eps-style %d is unknown", c->eps_style);
        return 0;
    }
    if (c->galore_side < 0 || c->galore_side >= GALORE_SIDE_COUNT) {
        snprintf(err, errlen, "--galore-side %d is unknown", c->galore_side);
        return 0;
    }
    // under keep each Grass row has its own bias correction (AdamParams.bc_rows), and the raw style's
    // eps / sqrt(bc2) is one number per step (adam_eps_for_style): the pair is not built
    if (optim_grass_keeps(c) && c->eps_style == EPS_RAW) {
        snprintf(err, errlen, "--adam-eps-style raw with --grass-refresh-state keep is not supported (per-row bias "
                 "corrections); use --adam-eps-style corrected (Grass's default) or --grass-refresh-state reset");
        return 0;
    }
    if (!(c->weight_decay >= 0.0f)) {
        snprintf(err, errlen, "weight decay %g must be >= 0", c->weight_decay);
        return 0;
    }
    if (!(c->grad_clip >= 0.0f)) {
        snprintf(err, errlen, "gradient clip %g must be >= 0 (0 = off)", c->grad_clip);
        return 0;
    }
    if (!(c->matrix_lr_scale > 0.0f)) {
        snprintf(err, errlen, "--matrix-lr-scale %g must be > 0", c->matrix_lr_scale);
        return 0;
    }
    if (c->type != OPT_ADAMW && c->matrix_lr_scale != 1.0f) {
        snprintf(err, errlen, "--matrix-lr-scale is for full-rank AdamW; the projected matrices of %s take lr * alpha "
                 "(--grass-scale)", OPTIMIZER_NAMES[c->type]);
        return 0;
    }
    // The one rule for --zero and --master-weights: refused together on any number of ranks (on one
    // rank ZeRO-1 is off, but a job that passes alone would stop once it runs on several)
    if (c->zero && c->master_weights) {
        snprintf(err, errlen, "--zero 1 with --master-weights 1 is not supported yet "
                 "(the fp32 master copy is not sharded)");
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
    if (c->grass_rank <= 0 && !(c->grass_rank_frac > 0.0f && c->grass_rank_frac <= 1.0f)) {
        snprintf(err, errlen, "--rank must be a positive integer or a fraction in (0, 1]");
        return 0;
    }
    for (int i = 0; i < pt->n; i++) {
        const ParamTensor* t = &pt->t[i];
        if (!optim_is_projected(c, t)) continue;
        int dim_sel = optim_cols_side(c, t) ? t->cols : t->rows;
        if (grass_rank_for(c, t, dim_sel, err, errlen) < 0) return 0;
    }
    return 1;
}

#endif // GRASS_OPTIM_CONFIG_H
