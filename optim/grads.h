/*
 * optim/grads.h: the gradient hand-off (grad_sink.h): what the model's backward pass calls to
 * accumulate dense gradients, compressed gradients, or the norm pass's scores.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_GRADS_H
#define GRASS_OPTIM_GRADS_H

#include "optim/refresh.h"

// zero the gradient accumulators at the start of a step
static void optim_zero_grads(Optimizer* o) {
    backend_memset0(o->grads, o->zero.grad_alloc * grad_dtype_size(o->cfg.grad_dtype));
    if (o->C_pool != NULL) {
        backend_memset0(o->C_pool, o->C_pool_numel * sizeof(float));
    } else {
        for (int k = 0; k < o->n_gm; k++) backend_memset0(o->gm[k].C, proj_cap_numel(&o->gm[k]) * sizeof(float));
    }
    backend_memset0(o->report.block, optim_report_bytes(o));  // the loss sum and the norm scalars
    o->overlap.pending_layer = -1;
    o->overlap.dense_started = 0;
}

// ---- the gradient hand-off (grad_sink.h): what the model's backward pass calls ------------------
// A linear layer's weight gradient, dout: N x out (rows ld_dout apart), inp: N x in. Dense tensors
// accumulate dW; projected ones accumulate C, or the squared row/column norms during the norm pass
// of a refresh.
static void grad_linear(Optimizer* o, int tensor, const floatX* dout, int ld_dout, const floatX* inp, int N) {
    const ParamTensor* t = &o->pt->t[tensor];
    int k = o->gm_of_tensor[tensor];
    if (k < 0) {
        if (o->mode == BWD_REFRESH) return;  // the norm pass computes nothing for dense tensors
        matmul_backward_weight(optim_grad_of(o, tensor), dout, ld_dout, inp, N, t->cols, t->rows, 1);
        return;
    }
    ProjMatrix* g = &o->gm[k];
    if (o->mode == BWD_REFRESH) {
        optim_norm_pass_grad(o, g, dout, ld_dout, inp, N);
    } else if (o->cfg.type == OPT_GALORE) {
        galore_project_grad(g->C, dout, ld_dout, inp, g->Ptx, g->r, N, t->cols, t->rows, g->cols_side);
    } else {
        grass_gathered_grad(g->C, dout, ld_dout, inp, g->d_idx, g->d_scale, g->r_eff, N, t->cols, t->rows,
                            g->cols_side, 1);
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
            fatal("grad_linears: '%s' has %d inputs, '%s' %d; fused layers share their input", t0->name, t0->cols,
                  t->name, t->cols);
        // projected (no dense gradient: grad_offset -1), or not right after the previous one
        if (o->gm_of_tensor[first + i] >= 0 ||
            o->grad_offset[first + i] != o->grad_offset[first] + (size_t)width * t0->cols)
            one_gemm = 0;
        width += t->rows;
    }
    if (one_gemm) {
        matmul_backward_weight(optim_grad_of(o, first), dout, width, inp, N, t0->cols, width, 1);
        return;
    }
    for (int i = 0, col = 0; i < count; col += o->pt->t[first + i].rows, i++)
        grad_linear(o, first + i, dout + col, width, inp, N);
}

// A norm's or the embedding's gradient buffer; .p NULL in the norm pass, which wants none.
static GradBuf grad_dense(Optimizer* o, int tensor) {
    return o->mode == BWD_GRADS ? optim_grad_of(o, tensor) : grad_buf(NULL, o->cfg.grad_dtype);
}

#endif // GRASS_OPTIM_GRADS_H
