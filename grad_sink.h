/*
 * grad_sink.h: how the model's backward pass hands its weight gradients to the optimizer.
 * llama_model.h calls only these three functions; grass_optim.cuh implements them. What they
 * do depends on the optimizer's pass (full-rank AdamW, a Grass step, or the norm pass of a
 * Grass refresh), which the model never needs to know.
 *
 *   grad_linear(o, tensor, dout, inp, N)
 *       the weight gradient dW = dout^T inp of linear layer `tensor` (dout: N x out, inp: N x in).
 *       The optimizer accumulates it densely, or only the compressed C = rho B dW (Grass), or only
 *       the squared row norms of dW (a refresh's norm pass); the m x n dW of a projected matrix
 *       is never formed.
 *   grad_dense(o, tensor) -> GradBuf (backend.h)
 *       where the gradient of a non-linear weight (norm, embedding) is to be accumulated, shaped
 *       as the tensor, with its dtype (floatX or fp32, --grad-dtype), which the backend ops that
 *       write it take as is; .p == NULL when the pass wants no such gradient (the norm pass).
 *   grad_layer_done(o, layer)
 *       every weight gradient of `layer` is complete (called from the last layer down to 0).
 *       The fused Grass update and the overlapped all-reduce act here.
 */
#ifndef GRASS_GRAD_SINK_H
#define GRASS_GRAD_SINK_H

#include "backend.h"

typedef struct Optimizer Optimizer;  // grass_optim.cuh
static void grad_linear(Optimizer* o, int tensor, const floatX* dout, const floatX* inp, int N);
static GradBuf grad_dense(Optimizer* o, int tensor);
static void grad_layer_done(Optimizer* o, int layer);

#endif // GRASS_GRAD_SINK_H
