/*
 * optim/zero.h: data parallel: the all-reduces (counted for the communication report), the dense
 * gradients' exchange (at once, or started per layer with --overlap-comm), and the ZeRO-1 block
 * a rank updates.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_ZERO_H
#define GRASS_OPTIM_ZERO_H

#include "optim/optimizer.h"

// ZeRO-1's block of this rank (rt.sharded): the dense gradients padded to world_size blocks of
// `shard`, this rank's [lo, hi) of them; unsharded, one block of everything (called by optim_layout)
static void optim_zero_layout(Optimizer* o) {
    o->zero.shard = o->grad_total; o->zero.lo = 0; o->zero.hi = o->grad_total; o->zero.grad_alloc = o->grad_total;
    if (o->rt.sharded) {
        o->zero.shard = (o->grad_total + o->rt.world_size - 1) / o->rt.world_size;
        o->zero.grad_alloc = o->zero.shard * o->rt.world_size;
        o->zero.lo = o->zero.shard * o->rt.rank;
        o->zero.hi = o->zero.lo + o->zero.shard < o->grad_total ? o->zero.lo + o->zero.shard : o->grad_total;
        if (o->zero.hi < o->zero.lo) o->zero.hi = o->zero.lo;
    }
}

// --overlap-comm's dense ranges: each layer's dense gradients, one contiguous range (the compact
// buffer follows table order); overlap.dense is off where they are not (called by optim_layout)
static void optim_overlap_layout(Optimizer* o) {
    const ParamTable* pt = o->pt;
    o->n_layers = optim_max_layer(pt) + 1;
    o->overlap.dense_lo = (size_t*)calloc_check(o->n_layers > 0 ? o->n_layers : 1, sizeof(size_t));
    o->overlap.dense_hi = (size_t*)calloc_check(o->n_layers > 0 ? o->n_layers : 1, sizeof(size_t));
    o->overlap.dense = o->rt.overlap && !o->rt.sharded && o->n_layers > 0;
    for (int l = 0; l < o->n_layers; l++) {
        size_t lo = (size_t)-1, hi = 0, count = 0;
        for (int i = 0; i < pt->n; i++) {
            if (pt->t[i].layer != l || o->grad_offset[i] == (size_t)-1) continue;
            if (o->grad_offset[i] < lo) lo = o->grad_offset[i];
            if (o->grad_offset[i] + pt->t[i].numel > hi) hi = o->grad_offset[i] + pt->t[i].numel;
            count += pt->t[i].numel;
        }
        if (count == 0) { lo = hi = l > 0 ? o->overlap.dense_hi[l - 1] : 0; }
        if (hi - lo != count || (l > 0 && lo != o->overlap.dense_hi[l - 1])) o->overlap.dense = 0;  // not one run
        o->overlap.dense_lo[l] = lo; o->overlap.dense_hi[l] = hi;
    }
}

// Bytes counted for one step's exchange of n dense gradients: an all-reduce of them in their dtype,
// or with ZeRO-1 a reduce-scatter of them and an all-gather of the floatX weights (each half of an
// all-reduce's wire volume)
static double optim_dense_comm_bytes(const OptimConfig* c, const OptimRuntime* rt, size_t n) {
    double g = (double)grad_dtype_size(c->grad_dtype);
    return rt->sharded ? (double)n * (g + sizeof(floatX)) / 2 : (double)n * g;
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
        if (start) allreduce_start_float((float*)g.p, n, ALLREDUCE_SLOT_DENSE);
        else allreduce_sum_float((float*)g.p, n);
    } else {
        if (start) allreduce_start_floatX((floatX*)g.p, n, ALLREDUCE_SLOT_DENSE);
        else allreduce_sum_floatX((floatX*)g.p, n);
    }
    o->comm_bytes += (double)n * grad_dtype_size(g.dtype);
}

// tensor's piece of the dense-gradient buffer; .p NULL for a projected tensor
static GradBuf optim_grad_of(Optimizer* o, int tensor) {
    size_t off = o->grad_offset[tensor];
    return off == (size_t)-1 ? grad_buf(NULL, o->cfg.grad_dtype) : optim_grads_from(o, off);
}

// The part [a, b) of dense tensor i's range in the gradient buffer that lies in this rank's
// ZeRO-1 block (all of it unsharded); 0 when none does (or the tensor has no dense gradient).
static int optim_shard_part(const Optimizer* o, int i, size_t* a, size_t* b) {
    size_t off = o->grad_offset[i];
    if (off == (size_t)-1) return 0;
    size_t end = off + o->pt->t[i].numel;
    *a = off > o->zero.lo ? off : o->zero.lo;
    *b = end < o->zero.hi ? end : o->zero.hi;
    return *a < *b;
}

#endif // GRASS_OPTIM_ZERO_H
