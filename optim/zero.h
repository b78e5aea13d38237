/*
 * optim/zero.h: data parallel: the all-reduces (counted for the communication report), the dense
 * gradients' exchange (at once, or started per layer with --overlap-comm), and the ZeRO-1 block
 * a rank updates.
 * Part of grass_optim.cuh (the list of the rooms, in include order).
 */
#ifndef GRASS_OPTIM_ZERO_H
#define GRASS_OPTIM_ZERO_H

#include "optim/layout.h"

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

#endif // GRASS_OPTIM_ZERO_H
