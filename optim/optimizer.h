/*
 * optim/optimizer.h: the optimizer's state: one ProjMatrix per projected matrix (the machinery
 * Grass and GaLore share), and the Optimizer struct, made of parts each written by one room.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_OPTIMIZER_H
#define GRASS_OPTIM_OPTIMIZER_H

#include "optim/select.h"
#include "grad_sink.h"

// ---- the projection machinery Grass and GaLore share ------------------------------------------
// One projected matrix W (m x n): its gradient is only ever formed projected, as C (r x n when
// the rows are selected, m x r when the columns are), and Adam runs on C. What projects differs by
// method: Grass's selection (rows, compress and up-projection scales; select.h), GaLore's
// projector P^T (an SVD's singular vectors; refresh.h).
typedef struct {
    int tensor;        // index into the parameter table
    int cols_side;     // 0: select rows (output features); 1: select columns (input features)
    int dim_sel;       // the dimension selected from: rows (m) or cols (n)
    int other;         // the other dimension
    int r;             // rank: the number of draws (Grass), the projector's rank (GaLore)
    int r_cap;         // capacity of the selection and of C, m, v: grass_rank_capacity (Grass), r (GaLore)
    int r_eff;         // selected indices in use (<= r_cap): the distinct draws, plus the padding
                       // rows of grass_pad_selection (scale 0)
    Selection h_sel;   // Grass: host copy of the selection
    int* d_idx; float* d_scale; float* d_upscale;  // Grass: backend copies
    float* C;          // compressed gradient: r_eff x n (rows side) or m x r_eff (cols side)
    void* m; void* v;  // Adam moments, stored as cfg.state_dtype
    float* norms;      // Grass: dim_sel squared norms, filled by the norm pass at a refresh
    float* Pt;         // GaLore: the projector P^T (r x dim_sel, fp32); NULL for Grass
    floatX* Ptx;       // GaLore: the same in floatX for the GEMMs with activations (= Pt in an fp32 build)
    float* nacc;       // the norm pass's accumulator: the fp32 gradient (out x in; NP_LAYER_G and
                       // NP_FULL_G) or the sketch Y = G S (dim_sel x k; NP_SKETCH); else NULL
    int64_t t;         // Adam steps since the last refresh (Grass; GaLore with --galore-refresh-state
                       // reset) or since the start (GaLore)
    // --grass-refresh-state keep (optim_grass_keeps): each selected row's own Adam step count, and
    // the per-row bias corrections of the step (host, then the backend copy grass_adam_update reads)
    int64_t* row_t;    // r_cap counts, slot j of the selection (0: a new or padding row); else NULL
    uint8_t* trained;  // Grass: dim_sel flags, 1 for a row selected at a refresh of this process (the log's
                       // trained=; host memory only, so a resumed run counts from its resume)
    float* h_bc; float* d_bc;  // 2 r_cap: 1 - b1^t_j, 1 - b2^t_j (AdamParams.bc_rows)
} ProjMatrix;
// the elements C, m and v are allocated for (r_cap x other); proj_sub_numel is the part in use
static size_t proj_cap_numel(const ProjMatrix* g) { return (size_t)g->r_cap * g->other; }
static size_t proj_sub_numel(const ProjMatrix* g) { return (size_t)g->r_eff * g->other; }

// the last layer's index in the parameter table (-1: none)
static int optim_max_layer(const ParamTable* pt) {
    int l = -1;
    for (int i = 0; i < pt->n; i++) if (pt->t[i].layer > l) l = pt->t[i].layer;
    return l;
}

// what the backward pass computes for the projected weights: their compressed gradients, or the
// refresh's inputs (Grass's row scores, GaLore's whole gradients)
typedef enum { BWD_GRADS = 0, BWD_REFRESH = 1 } BackwardMode;

// ---- the Optimizer's parts, each written by one room ------------------------------------------
// the step's report (layout.h allocates it, step.h fills and reads it): one backend block read once
// at the step's end (the step's one host sync): the loss summed over micro-steps
// (llama_forward_train), the dense gradients' sum of squares, the clipping factor (clip_factor),
// and the fused updates' sums of squares per matrix
typedef struct {
    void* block;            // the backend block (optim_report_bytes)
    double* loss_acc;       // block + 0
    float* sumsq;           // block + 8: backend scalar for gradient norms
    float* grad_scale;      // block + 12
    float* layer_sumsq;     // block + 16: n_gm sums of squares of the fused compressed gradients
    char* host;             // the host copy of block, allocated once
    double loss_sum;        // the last step's *loss_acc, on the host (optim_step)
} OptimReport;

// ZeRO-1 (rt.sharded; zero.h): the dense gradients are padded to rt.world_size blocks of `shard`;
// this rank keeps AdamW moments for [lo, hi) of them only
typedef struct { size_t shard, lo, hi, grad_alloc; } OptimZero;

// --overlap-comm (rt.overlap; zero.h, grads.h, step.h)
typedef struct {
    int pending_layer;      // the fused path: the layer whose all-reduce is in flight, or -1
    // dense gradients: each layer's dense tensors sit together in grads at [dense_lo[l], dense_hi[l]);
    // on the last micro-step their all-reduce starts when the layer's backward is done (group
    // ALLREDUCE_SLOT_DENSE), and optim_step waits for all of them
    int dense;              // on (rt.overlap, not sharded, ranges contiguous)
    int dense_started;      // some layer's dense all-reduce is in flight
    size_t* dense_lo; size_t* dense_hi;
} OptimOverlap;

// the norm pass of a refresh (rt.norm_path; refresh.h): identity indices and unit scales, so that
// the gathered GEMM gives whole gradients; the shared per-layer gradient buffer (NP_LAYER_G); the
// sketches, one Rademacher S^T (k x dim) per distinct dimension, and their N x k product's scratch
typedef struct {
    int* d_iota; float* d_ones; int iota_len;
    float* nacc_pool; size_t nacc_pool_numel;
    int n_sketch; int* sketch_dim_of; floatX** sketch_S; floatX* sketch_tmp;
} OptimNormPass;

// GaLore's scratch (refresh.h's SVD, step.h's dense update): the largest matrix's galore_work_floats
typedef struct { float* work; size_t work_numel; } OptimGalore;

// --grass-refresh-state keep: the scratch of the moments' remap at a refresh (refresh.h,
// grass_remap_state): one moment buffer of the largest matrix, and each new row's source slot and factor
typedef struct { void* tmp; size_t tmp_bytes; int* d_src; float* d_factor; int cap; } OptimRemap;

// what the last refresh chose (refresh.h; logged by the trainer)
// kept / total: the squared norm the new subspaces keep of the step's gradient, over all
// projected matrices: Grass, the selected rows' scores over all rows' (exact norms: the true
// fraction; sketch: its estimate; micro: of the micro-batch sums); GaLore, the top r squared
// singular values over all of them
// rows: the rows the gathered GEMMs and the update carry, the distinct ones plus grass_pad_selection's
// what the last refresh chose; Grass also counts the distinct rows that the previous selection held
// (again) and the rows selected at some refresh of this process (trained) of all dim_sel rows (selectable)
typedef struct {
    int distinct, draws, rows;
    double mult_mean, mult_max, kept, total;
    uint64_t hash;
    int64_t again, trained, selectable;
} OptimRefreshed;

typedef struct Optimizer {
    OptimConfig cfg;
    OptimRuntime rt;        // ranks, accumulation and what follows from them (optim_runtime)
    const ParamTable* pt;
    floatX* params;         // the model's parameter buffer
    // the layout (layout.h): dense gradients (full-rank tensors) in their own compact buffer, the
    // projected matrices, the layers
    size_t* grad_offset;    // per tensor; (size_t)-1 when the tensor has no dense gradient
    size_t grad_total;
    void* grads;            // cfg.grad_dtype values (optim_grads_from); with ZeRO-1 also the floatX
                            // staging buffer of the weights' all-gather
    void* m; void* v;       // AdamW moments for the dense tensors, grad_total each (cfg.state_dtype)
    ProjMatrix* gm;
    int n_gm;
    int* gm_of_tensor;      // tensor -> index into gm, or -1
    int n_layers;
    float* master;          // fp32 master weights (cfg.master_weights), the layout of params; else NULL
    float* C_pool;          // the shared compressed-gradient buffer (rt.share_compressed), else NULL
    size_t C_pool_numel;    // its size: the largest layer's set, twice with rt.overlap
    // the step in progress (step.h)
    int64_t step;           // optimizer steps done
    BackwardMode mode;      // what the backward pass computes for projected weights
    int apply_fused;        // this micro-step applies the fused Grass updates (optim_begin_micro)
    int last_micro;         // this backward pass is the step's last micro-step (optim_begin_micro)
    float lr;               // learning rate of the step in progress (optim_begin_step)
    // --grad-clip with the fused update (Grass, GaLore): a layer is updated before the step's norm
    // is known, so the whole step is scaled by min(1, clip / the previous step's norm)
    // (optim_begin_step); without the fused update the step's own norm decides (optim_step)
    float prev_norm;        // the last step's gradient norm (0: none yet); saved in the state file
    float clip_scale;       // the factor of the step in progress under the fused rule
    double comm_bytes;      // bytes all-reduced since the step began (0 in one process; zero.h)
    OptimReport report;
    OptimZero zero;
    OptimOverlap overlap;
    OptimNormPass np;
    OptimGalore galore;
    OptimRemap remap;
    OptimRefreshed refreshed;
} Optimizer;

#endif // GRASS_OPTIM_OPTIMIZER_H
