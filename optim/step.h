/*
 * optim/step.h: the step: the projected updates (Grass's and GaLore's subspace Adam), the fused
 * per-layer path run from the backward pass, AdamW on the dense tensors, clipping, and the step
 * protocol the trainer follows.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_STEP_H
#define GRASS_OPTIM_STEP_H

#include "optim/grads.h"

// the stochastic-rounding seed of a tensor's update at a step: rank-independent, and a resumed
// run (which restores the optimizer step) reproduces it
static uint64_t optim_update_seed(const Optimizer* o, int tensor) {
    return rng_seed_for(o->cfg.seed ^ 0x5EED5EEDULL, (uint64_t)o->step, (uint64_t)tensor);
}

// grad_scale_dev: the backend clipping factor (NULL: grad_scale)
static void optim_apply_projected(Optimizer* o, ProjMatrix* g, float lr, float grad_scale,
                                  const float* grad_scale_dev) {
    const ParamTensor* t = &o->pt->t[g->tensor];
    g->t++;
    AdamParams ap = adam_params(&o->cfg, lr, t->decay ? o->cfg.weight_decay : 0.0f, g->t, grad_scale);
    ap.grad_scale_dev = grad_scale_dev;
    if (g->row_t != NULL) {  // keep: each row's own bias corrections
        grass_row_bias_corrections(&o->cfg, g);
        ap.bc_rows = g->d_bc;
    }
    if (o->cfg.type == OPT_GALORE) {
        galore_adam_update(o->params + t->offset, o->master != NULL ? o->master + t->offset : NULL, g->C, g->m, g->v,
                           o->cfg.state_dtype, g->Pt, g->r, t->rows, t->cols, g->cols_side, ap, o->cfg.alpha,
                           optim_update_seed(o, g->tensor), o->galore.work);
        return;
    }
    grass_adam_update(o->params + t->offset, o->master != NULL ? o->master + t->offset : NULL, g->C, g->m, g->v,
                      o->cfg.state_dtype, g->d_idx, g->d_upscale, g->r_eff, t->rows, t->cols, g->cols_side, ap,
                      o->cfg.alpha, optim_update_seed(o, g->tensor));
}

// acc += the squared norm of matrix g's part of the gradient the optimizer uses, unscaled: Grass's
// B G (C = rho B G with each row's rho divided out), GaLore's R = P^T G (P orthonormal: no scale)
static void optim_sumsq_projected(Optimizer* o, float* acc, ProjMatrix* g) {
    if (o->cfg.type == OPT_GRASS) sumsq_unscaled(acc, g->C, g->d_scale, g->r_eff, g->other, g->cols_side);
    else sumsq_float(acc, g->C, proj_sub_numel(g));
}

// Fused path, second half: the layer's compressed gradients are summed over ranks; measure
// them (into the layer's own norm scalars, read once per step) and apply the updates.
static void optim_finish_layer(Optimizer* o, int layer) {
    if (o->rt.overlap) allreduce_wait(layer % ALLREDUCE_LAYER_SLOTS);
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        if (o->pt->t[g->tensor].layer != layer) continue;
        optim_sumsq_projected(o, o->report.layer_sumsq + k, g);
        optim_apply_projected(o, g, o->lr, o->clip_scale, NULL);
        // a later layer accumulates into the same pool: leave it zeroed
        if (o->C_pool != NULL) backend_memset0(g->C, proj_cap_numel(g) * sizeof(float));
    }
}

// Fused path: called by the backward pass once every weight gradient of `layer` is complete
// (only on the last micro-step of a step). Reduces the layer's compressed gradients across
// ranks and applies their updates: at once, or (overlap_comm) the reduction starts now and
// the update waits until the next layer's backward has been issued, so that the all-reduce
// runs during that backward (on the GPU's communication stream). Layer l's weights are not
// read again in this backward pass, so the later update gives the same result.
static void grad_layer_done(Optimizer* o, int layer) {
    if (o->mode == BWD_REFRESH && o->rt.norm_path == NP_LAYER_G) optim_norm_pass_layer(o, layer);
    if (o->overlap.dense && o->last_micro && o->mode == BWD_GRADS && o->rt.world_size > 1) {
        size_t lo = o->overlap.dense_lo[layer], hi = o->overlap.dense_hi[layer];
        if (hi > lo) {
            optim_allreduce_dense(o, lo, hi - lo, 1);
            o->overlap.dense_started = 1;
        }
    }
    if (!o->apply_fused || o->mode != BWD_GRADS) return;
    if (!o->rt.overlap) {
        for (int k = 0; k < o->n_gm; k++)
            if (o->pt->t[o->gm[k].tensor].layer == layer)
                optim_allreduce_compressed(o, o->gm[k].C, proj_sub_numel(&o->gm[k]));
        optim_finish_layer(o, layer);
        return;
    }
    for (int k = 0; k < o->n_gm; k++) {
        ProjMatrix* g = &o->gm[k];
        if (o->pt->t[g->tensor].layer != layer) continue;
        if (o->rt.world_size > 1) {
            allreduce_start_float_wire_floatX(g->C, proj_sub_numel(g), layer % ALLREDUCE_LAYER_SLOTS);
            o->comm_bytes += (double)proj_sub_numel(g) * sizeof(floatX);
        }
    }
    if (o->overlap.pending_layer >= 0) optim_finish_layer(o, o->overlap.pending_layer);
    o->overlap.pending_layer = layer;
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

// After the backward passes of a step: reduce, measure, clip, update everything not yet
// updated, then read the step's report (its one host sync): o->report.loss_sum is the loss summed over
// the step's micro-steps on this rank (llama_forward_train into optim_loss_acc). The clipping
// factor is formed on the backend (clip_factor), so nothing waits for the norm before the
// updates are queued. Returns the global gradient norm before clipping, of the gradient the optimizer uses,
// unscaled: AdamW's whole gradient; the dense tensors plus Grass's selected rows B G (rho divided
// out) or GaLore's projection P^T G. All three are norms of the same step's gradient (of its
// whole or of an orthogonal projection of it); at full rank they are the whole gradient's norm.
static float optim_step(Optimizer* o) {
    float lr = o->lr;
    int fused = o->cfg.type != OPT_ADAMW && o->cfg.fused;
    if (o->overlap.pending_layer >= 0) {
        optim_finish_layer(o, o->overlap.pending_layer);
        o->overlap.pending_layer = -1;
    }
    if (o->rt.sharded) {
        // ZeRO-1: each rank receives the summed gradients of its block only; the reduce-scatter
        // and the all-gather below move what one all-reduce of the dense gradients does, and are
        // counted as that (optim_dense_comm_bytes)
        if (o->cfg.grad_dtype == GRAD_FP32) reducescatter_sum_float((float*)o->grads, o->zero.shard);
        else reducescatter_sum_floatX((floatX*)o->grads, o->zero.shard);
        o->comm_bytes += optim_dense_comm_bytes(&o->cfg, &o->rt, o->grad_total);
    } else if (o->overlap.dense_started) {
        // the layers' dense gradients were reduced during the backward pass; what is left are
        // the embeddings (before layer 0) and the final norm and head (after the last layer)
        allreduce_wait(ALLREDUCE_SLOT_DENSE);
        size_t first = o->overlap.dense_lo[0], last = o->overlap.dense_hi[o->n_layers - 1];
        optim_allreduce_dense(o, 0, first, 0);
        optim_allreduce_dense(o, last, o->grad_total - last, 0);
        o->overlap.dense_started = 0;
    } else {
        optim_allreduce_dense(o, 0, o->grad_total, 0);
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_allreduce_compressed(o, o->gm[k].C, proj_sub_numel(&o->gm[k]));
    backend_memset0(o->report.sumsq, sizeof(float));
    GradBuf mine = optim_grads_from(o, o->zero.lo);
    if (mine.dtype == GRAD_FP32) sumsq_float(o->report.sumsq, (const float*)mine.p, o->zero.hi - o->zero.lo);
    else sumsq_floatX(o->report.sumsq, (const floatX*)mine.p, o->zero.hi - o->zero.lo);
    if (o->rt.sharded) {  // the dense part of the norm, summed over the blocks
        allreduce_sum_float(o->report.sumsq, 1);
        o->comm_bytes += sizeof(float);
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_sumsq_projected(o, o->report.sumsq, &o->gm[k]);
    // clipping: this step's norm (the factor formed on the backend from report.sumsq: the norm of the
    // non-fused step is sqrt(report.sumsq) alone), or under the fused rule the factor set at its start
    float grad_scale = 1.0f;
    const float* grad_scale_dev = NULL;
    if (fused) grad_scale = o->clip_scale;
    else if (o->cfg.grad_clip > 0.0f) {
        clip_factor(o->report.grad_scale, o->report.sumsq, o->cfg.grad_clip);
        grad_scale_dev = o->report.grad_scale;
    }
    o->step++;
    // AdamW on the part of each dense tensor that lies in this rank's block (all of it unsharded)
    size_t ssz = state_dtype_size(o->cfg.state_dtype);
    for (int i = 0; i < o->pt->n; i++) {
        const ParamTensor* t = &o->pt->t[i];
        size_t a, b;
        if (!optim_shard_part(o, i, &a, &b)) continue;
        size_t in_t = a - o->grad_offset[i], soff = (a - o->zero.lo) * ssz;
        float lr_t = t->kind == PT_LINEAR && ((o->cfg.proj_mask >> t->lin) & 1) ? lr * o->cfg.matrix_lr_scale : lr;
        AdamParams ap = adam_params(&o->cfg, lr_t, t->decay ? o->cfg.weight_decay : 0.0f, o->step, grad_scale);
        ap.grad_scale_dev = grad_scale_dev;
        adamw_update(o->params + t->offset + in_t, o->master != NULL ? o->master + t->offset + in_t : NULL,
                     optim_grads_from(o, a), (char*)o->m + soff, (char*)o->v + soff, o->cfg.state_dtype, b - a, ap,
                     optim_update_seed(o, i), in_t);
    }
    if (o->rt.sharded) {
        // every rank's updated block, staged in the (compact) gradient buffer, goes to all ranks;
        // the weights are floatX whatever the gradients' dtype (an fp32 buffer has room to spare)
        floatX* stage = (floatX*)o->grads;
        for (int i = 0; i < o->pt->n; i++) {
            size_t a, b;
            if (optim_shard_part(o, i, &a, &b))
                backend_copy(stage + a, o->params + o->pt->t[i].offset + (a - o->grad_offset[i]),
                             (b - a) * sizeof(floatX));
        }
        allgather_floatX(stage, o->zero.shard);
        for (int i = 0; i < o->pt->n; i++) {
            size_t off = o->grad_offset[i];
            if (off != (size_t)-1)
                backend_copy(o->params + o->pt->t[i].offset, stage + off, o->pt->t[i].numel * sizeof(floatX));
        }
    }
    if (!fused) for (int k = 0; k < o->n_gm; k++) optim_apply_projected(o, &o->gm[k], lr, grad_scale, grad_scale_dev);
    // the report: one download, after everything above is queued
    char* rep = o->report.host;
    backend_download(rep, o->report.block, optim_report_bytes(o));
    float ss;
    memcpy(&o->report.loss_sum, rep, sizeof(double));
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
    if (step != o->step)
        fatal("optim_begin_step: step %lld, but the optimizer has done %lld steps", (long long)step,
              (long long)o->step);
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

#endif // GRASS_OPTIM_STEP_H
