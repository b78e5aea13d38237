/*
 * optim/layout.h: the buffer layout and the memory plan: which tensors are projected and how, the
 * dense-gradient offsets, the ZeRO-1 block, the shared pools; the table of backend buffers that
 * optim_init allocates, optim_free frees and optim_plan sums (the trainer's memory plan rows).
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_LAYOUT_H
#define GRASS_OPTIM_LAYOUT_H

#include "optim/zero.h"

// The buffers the layers share in turn, one layer's projected matrices at a time, each matrix a
// consecutive piece: the compressed gradients (C, rt.share_compressed) and the norm pass's
// whole gradients (nacc, NP_LAYER_G).
typedef enum { POOL_C = 0, POOL_NACC } LayerPool;
static size_t optim_pool_piece(const Optimizer* o, const ProjMatrix* g, int pool) {
    return pool == POOL_C ? proj_cap_numel(g) : o->pt->t[g->tensor].numel;
}
// the elements of one layer's pieces
static size_t optim_layer_pool_numel(const Optimizer* o, int layer, int pool) {
    size_t n = 0;
    for (int k = 0; k < o->n_gm; k++)
        if (o->pt->t[o->gm[k].tensor].layer == layer) n += optim_pool_piece(o, &o->gm[k], pool);
    return n;
}
// the largest layer's: the size of the pool (of each half of C's with rt.overlap)
static size_t optim_largest_layer_pool(const Optimizer* o, int pool) {
    size_t most = 0;
    for (int l = 0; l <= optim_max_layer(o->pt); l++) {
        size_t n = optim_layer_pool_numel(o, l, pool);
        if (n > most) most = n;
    }
    return most;
}
// points each layer's matrices at consecutive pieces of base, the odd layers' from base + odd_start
static void optim_carve_pool(Optimizer* o, float* base, size_t odd_start, int pool) {
    for (int l = 0; l <= optim_max_layer(o->pt); l++) {
        size_t off = l % 2 ? odd_start : 0;
        for (int k = 0; k < o->n_gm; k++) {
            ProjMatrix* g = &o->gm[k];
            if (o->pt->t[g->tensor].layer != l) continue;
            if (pool == POOL_C) g->C = base + off;
            else g->nacc = base + off;
            off += optim_pool_piece(o, g, pool);
        }
    }
}

// The optimizer's layout, on the host only: which tensors are projected and how (side, rank),
// the compact dense-gradient offsets, the ZeRO-1 block, the layers' dense ranges, the shared
// pool. optim_init allocates from it; optim_plan measures it before anything is allocated.
static void optim_layout(Optimizer* o, const OptimConfig* cfg, const OptimRuntime* rt, const ParamTable* pt) {
    memset(o, 0, sizeof(*o));
    o->cfg = *cfg; o->rt = *rt; o->pt = pt;
    optim_resolve_eps_style(&o->cfg);
    if (o->cfg.row_align == 0) o->cfg.row_align = backend_grass_row_align();
    o->grad_offset = (size_t*)malloc_check(pt->n * sizeof(size_t));
    o->gm_of_tensor = (int*)malloc_check(pt->n * sizeof(int));
    o->gm = (ProjMatrix*)calloc_check(pt->n, sizeof(ProjMatrix));
    char err[512];
    for (int i = 0; i < pt->n; i++) {
        const ParamTensor* t = &pt->t[i];
        o->gm_of_tensor[i] = -1;
        if (optim_is_projected(cfg, t)) {
            ProjMatrix* g = &o->gm[o->n_gm];
            g->tensor = i;
            g->cols_side = optim_cols_side(cfg, t);  // the smaller dimension (optim/config.h)
            g->dim_sel = g->cols_side ? t->cols : t->rows;
            g->other = g->cols_side ? t->rows : t->cols;
            g->r = grass_rank_for(cfg, t, g->dim_sel, err, sizeof(err));
            if (g->r < 0) fatal("%s", err);
            g->r_cap = cfg->type == OPT_GRASS ? grass_rank_capacity(g->r, g->dim_sel) : g->r;
            g->h_sel.idx = (int*)calloc_check(g->r_cap, sizeof(int));
            g->h_sel.scale = (float*)calloc_check(g->r_cap, sizeof(float));
            g->h_sel.upscale = (float*)calloc_check(g->r_cap, sizeof(float));
            if (cfg->type == OPT_GRASS) g->trained = (uint8_t*)calloc_check(g->dim_sel, 1);
            if (optim_grass_keeps(cfg)) {
                g->row_t = (int64_t*)calloc_check(g->r_cap, sizeof(int64_t));
                g->h_bc = (float*)calloc_check(2 * (size_t)g->r_cap, sizeof(float));
                size_t bytes = proj_cap_numel(g) * state_dtype_size(cfg->state_dtype);
                if (bytes > o->remap.tmp_bytes) o->remap.tmp_bytes = bytes;
                if (g->r_cap > o->remap.cap) o->remap.cap = g->r_cap;
            }
            o->gm_of_tensor[i] = o->n_gm++;
            o->grad_offset[i] = (size_t)-1;
        } else {
            o->grad_offset[i] = o->grad_total;
            o->grad_total += t->numel;
        }
    }
    // the shared compressed-gradient pool: the largest layer's set, reused by every layer in
    // turn; with rt.overlap layer l reduces in one half while layer l-1 accumulates in the other
    if (rt->share_compressed && o->n_gm > 0)
        o->C_pool_numel = (rt->overlap ? 2 : 1) * optim_largest_layer_pool(o, POOL_C);
    o->overlap.pending_layer = -1;
    optim_zero_layout(o);
    // the norm pass: identity selections as long as the largest selected dimension; the shared
    // per-layer gradient buffer; one sketch per distinct dimension the sketch multiplies
    if (o->n_gm > 0 && rt->norm_path != NP_DIRECT) {
        for (int k = 0; k < o->n_gm; k++) {
            const ProjMatrix* g = &o->gm[k];
            const ParamTensor* t = &pt->t[g->tensor];
            int len = rt->norm_path == NP_SKETCH ? (g->cols_side ? t->cols : t->rows) : g->dim_sel;
            if (len > o->np.iota_len) o->np.iota_len = len;
        }
        if (rt->norm_path == NP_LAYER_G) o->np.nacc_pool_numel = optim_largest_layer_pool(o, POOL_NACC);
        if (rt->norm_path == NP_SKETCH) {
            o->np.sketch_dim_of = (int*)calloc_check(o->n_gm, sizeof(int));
            o->np.sketch_S = (floatX**)calloc_check(o->n_gm, sizeof(floatX*));
            for (int k = 0; k < o->n_gm; k++) {  // S multiplies X (rows side: in) or dY (cols side: out)
                int dim = o->gm[k].other, found = 0;
                for (int j = 0; j < o->np.n_sketch; j++) found |= o->np.sketch_dim_of[j] == dim;
                if (!found) o->np.sketch_dim_of[o->np.n_sketch++] = dim;
            }
        }
    }
    if (cfg->type == OPT_GALORE)
        for (int k = 0; k < o->n_gm; k++) {
            const ParamTensor* t = &pt->t[o->gm[k].tensor];
            size_t w = galore_work_floats(t->rows, t->cols);
            if (w > o->galore.work_numel) o->galore.work_numel = w;
        }
    optim_overlap_layout(o);
}

// Every backend buffer the optimizer holds, in allocation order: where its pointer lives, its
// bytes, what it is for the memory plan, and the label an allocation failure names. optim_init
// allocates from this table, optim_free frees from it, optim_plan sums it.
typedef enum { OB_DENSE_GRAD = 0, OB_COMPRESSED, OB_STATE, OB_OTHER, OB_MASTER, OB_NORMPASS, OB_WORK } OptimBufferKind;
typedef struct { void** ptr; size_t bytes; int kind; const char* label; } OptimBuffer;

// the step report's bytes: the loss sum (double), the dense sum of squares and the clipping
// factor, and one sum of squares per projected matrix (at least one)
static size_t optim_report_bytes(const Optimizer* o) {
    return 16 + (size_t)(o->n_gm > 0 ? o->n_gm : 1) * sizeof(float);
}
// the backend double that llama_forward_train adds each micro-step's mean loss to (reset by
// optim_begin_step, read by optim_step into o->report.loss_sum)
static double* optim_loss_acc(Optimizer* o) { return o->report.loss_acc; }

static int optim_buffers(Optimizer* o, OptimBuffer* b) {
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    int n = 0;
#define OBUF(p, bytes, kind, label) b[n++] = (OptimBuffer){(void**)&(p), (size_t)(bytes), kind, label}
    int galore = o->cfg.type == OPT_GALORE;
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        size_t sub = proj_cap_numel(g);
        if (galore) {
            OBUF(g->Pt, (size_t)g->r * g->dim_sel * sizeof(float), OB_STATE, "galore projector");
            if (sizeof(floatX) != sizeof(float))  // else Ptx is Pt (optim_init)
                OBUF(g->Ptx, (size_t)g->r * g->dim_sel * sizeof(floatX), OB_STATE, "galore projector (floatX)");
        } else {
            OBUF(g->d_idx, g->r_cap * sizeof(int), OB_OTHER, "grass indices");
            OBUF(g->d_scale, g->r_cap * sizeof(float), OB_OTHER, "grass scales");
            OBUF(g->d_upscale, g->r_cap * sizeof(float), OB_OTHER, "grass scales");
            OBUF(g->norms, g->dim_sel * sizeof(float), OB_OTHER, "grass norms");
            if (g->row_t != NULL)
                OBUF(g->d_bc, 2 * (size_t)g->r_cap * sizeof(float), OB_OTHER, "grass per-row bias corrections");
        }
        OBUF(g->m, sub * ssz, OB_STATE, galore ? "galore adam m" : "grass adam m");
        OBUF(g->v, sub * ssz, OB_STATE, galore ? "galore adam v" : "grass adam v");
    }
    if (o->C_pool_numel > 0) {
        OBUF(o->C_pool, o->C_pool_numel * sizeof(float), OB_COMPRESSED, "grass compressed gradients (shared)");
    } else {
        for (int k = 0; k < o->n_gm; k++)
            OBUF(o->gm[k].C, proj_cap_numel(&o->gm[k]) * sizeof(float), OB_COMPRESSED, "grass compressed gradients");
    }
    size_t moments = o->rt.sharded ? o->zero.shard : o->grad_total;
    OBUF(o->grads, o->zero.grad_alloc * grad_dtype_size(o->cfg.grad_dtype), OB_DENSE_GRAD, "dense gradients");
    OBUF(o->m, moments * ssz, OB_STATE, "adamw m");
    OBUF(o->v, moments * ssz, OB_STATE, "adamw v");
    OBUF(o->report.block, optim_report_bytes(o), OB_OTHER, "step report (loss, norms)");
    if (o->cfg.master_weights) OBUF(o->master, o->pt->total * sizeof(float), OB_MASTER, "fp32 master weights");
    if (o->np.iota_len > 0) {
        OBUF(o->np.d_iota, o->np.iota_len * sizeof(int), OB_NORMPASS, "grass norm pass (identity indices)");
        OBUF(o->np.d_ones, o->np.iota_len * sizeof(float), OB_NORMPASS, "grass norm pass (unit scales)");
    }
    if (o->np.nacc_pool_numel > 0)
        OBUF(o->np.nacc_pool, o->np.nacc_pool_numel * sizeof(float), OB_NORMPASS,
             "grass norm pass (one layer's gradients)");
    for (int k = 0; k < o->n_gm && (o->rt.norm_path == NP_FULL_G || o->rt.norm_path == NP_SKETCH); k++) {
        const ProjMatrix* g = &o->gm[k];
        size_t numel = o->rt.norm_path == NP_FULL_G ? o->pt->t[g->tensor].numel
                                                    : (size_t)g->dim_sel * o->cfg.sketch_dim;
        OBUF(o->gm[k].nacc, numel * sizeof(float), OB_NORMPASS,
             o->rt.norm_path == NP_FULL_G ? "grass norm pass (gradients)" : "grass norm pass (sketches)");
    }
    for (int j = 0; j < o->np.n_sketch; j++)
        OBUF(o->np.sketch_S[j], (size_t)o->cfg.sketch_dim * o->np.sketch_dim_of[j] * sizeof(floatX), OB_NORMPASS,
             "grass norm pass (sketch matrices)");
    if (o->np.n_sketch > 0)
        OBUF(o->np.sketch_tmp, (size_t)o->rt.micro_rows * o->cfg.sketch_dim * sizeof(floatX), OB_NORMPASS,
             "grass norm pass (sketch scratch)");
    if (o->remap.tmp_bytes > 0) {
        OBUF(o->remap.tmp, o->remap.tmp_bytes, OB_STATE, "grass moments remap scratch (refresh keep)");
        OBUF(o->remap.d_src, (size_t)o->remap.cap * sizeof(int), OB_OTHER, "grass moments remap rows");
        OBUF(o->remap.d_factor, (size_t)o->remap.cap * sizeof(float), OB_OTHER, "grass moments remap factors");
    }
    if (o->galore.work_numel > 0)
        OBUF(o->galore.work, o->galore.work_numel * sizeof(float), OB_WORK, "galore SVD and update scratch");
#undef OBUF
    return n;
}
static int optim_max_buffers(const Optimizer* o) { return 10 * o->n_gm + 16; }

static void optim_init(Optimizer* o, const OptimConfig* cfg, const OptimRuntime* rt, const ParamTable* pt,
                       floatX* params) {
    optim_layout(o, cfg, rt, pt);
    o->params = params;
    OptimBuffer* b = (OptimBuffer*)malloc_check(optim_max_buffers(o) * sizeof(OptimBuffer));
    int n = optim_buffers(o, b);
    for (int i = 0; i < n; i++) *b[i].ptr = backend_malloc(b[i].bytes, b[i].label);
    free(b);
    o->report.loss_acc = (double*)o->report.block;
    o->report.sumsq = (float*)((char*)o->report.block + 8);
    o->report.grad_scale = (float*)((char*)o->report.block + 12);
    o->report.layer_sumsq = (float*)((char*)o->report.block + 16);
    o->report.host = (char*)malloc_check(optim_report_bytes(o));
    if (cfg->type == OPT_GALORE && sizeof(floatX) == sizeof(float))
        for (int k = 0; k < o->n_gm; k++) o->gm[k].Ptx = (floatX*)o->gm[k].Pt;  // one buffer in an fp32 build
    if (rt->overlap && cfg->fused) allreduce_async_reserve(optim_largest_layer_pool(o, POOL_C));
    // each layer's matrices take consecutive pieces of its half of the pool (the same half without overlap)
    if (o->C_pool != NULL)
        optim_carve_pool(o, o->C_pool, rt->overlap ? optim_largest_layer_pool(o, POOL_C) : 0, POOL_C);
    if (o->master != NULL) backend_widen(o->master, params, pt->total);
    if (o->np.iota_len > 0) {  // the identity selection: every index, scale 1
        int* iota = (int*)malloc_check(o->np.iota_len * sizeof(int));
        float* ones = (float*)malloc_check(o->np.iota_len * sizeof(float));
        for (int i = 0; i < o->np.iota_len; i++) { iota[i] = i; ones[i] = 1.0f; }
        backend_upload(o->np.d_iota, iota, o->np.iota_len * sizeof(int));
        backend_upload(o->np.d_ones, ones, o->np.iota_len * sizeof(float));
        free(iota); free(ones);
    }
    if (o->np.nacc_pool != NULL) optim_carve_pool(o, o->np.nacc_pool, 0, POOL_NACC);  // one layer's at a time
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
        free(o->gm[k].row_t); free(o->gm[k].h_bc); free(o->gm[k].trained);
    }
    free(o->overlap.dense_lo); free(o->overlap.dense_hi);
    free(o->np.sketch_dim_of); free(o->np.sketch_S);
    free(o->grad_offset); free(o->gm_of_tensor); free(o->gm);
}

static void optim_free(Optimizer* o) {
    free(o->report.host);
    o->report.host = NULL;
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
        p->other_bytes += ALLREDUCE_LAYER_SLOTS * optim_largest_layer_pool(&o, POOL_C) * sizeof(floatX);
    p->comm_dense_bytes = p->comm_step_bytes = (size_t)optim_dense_comm_bytes(c, rt, o.grad_total);
    for (int k = 0; k < o.n_gm; k++) {
        const ProjMatrix* g = &o.gm[k];
        const ParamTensor* t = &pt->t[g->tensor];
        size_t sub = proj_cap_numel(g);
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
    p->max_gather = o.np.iota_len > (int)p->max_rank ? (size_t)o.np.iota_len : p->max_rank;
    optim_free_layout(&o);
}

// --grass-norms auto: exact unless its norm-pass buffers push the plan over `avail` bytes
// (plan_total: the plan's total with exact norms), then the sketch. The one place auto resolves.
static void optim_fit_norms(const OptimConfig* c, OptimRuntime* rt, const ParamTable* pt, size_t plan_total,
                            size_t avail) {
    if (c->norms != NORMS_AUTO || c->type != OPT_GRASS || avail == 0 || plan_total <= avail) return;
    OptimPlan exact;
    optim_plan(c, rt, pt, &exact);
    OptimRuntime sk = *rt;
    optim_runtime_norms(&sk, NORMS_SKETCH);
    OptimPlan sketch;
    optim_plan(c, &sk, pt, &sketch);
    if (sketch.normpass_bytes < exact.normpass_bytes) *rt = sk;
}

#endif // GRASS_OPTIM_LAYOUT_H
