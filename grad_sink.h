/*
 * grad_sink.h: how the model's backward pass hands its weight gradients to the optimizer.
 * llama_model.h calls only these four functions; grass_optim.cuh implements them. What they
 * do depends on the optimizer's pass (full-rank AdamW, a Grass step, or the norm pass of a
 * Grass refresh), which the model never needs to know.
 *
 *   grad_linear(o, tensor, dout, ld_dout, inp, N)
 *       the weight gradient dW = dout^T inp of linear layer `tensor` (dout: N x out with its rows
 *       ld_dout apart, inp: N x in). The optimizer accumulates it densely, or only the compressed
 *       C = rho B dW (Grass), or only the squared row norms of dW (a refresh's norm pass); the
 *       m x n dW of a projected matrix is never formed.
 *   grad_linears(o, first, count, dout, inp, N)
 *       the same for `count` linear layers that follow each other in the parameter table, share
 *       their input and were computed as one fused GEMM (Q/K/V, gate/up): dout is N x (the sum of
 *       their outs), each layer's columns after the previous one's. Dense gradients that sit side
 *       by side in the optimizer's buffer take one GEMM; otherwise each layer is a grad_linear on
 *       its column block.
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
static void grad_linear(Optimizer* o, int tensor, const floatX* dout, int ld_dout, const floatX* inp, int N);
static void grad_linears(Optimizer* o, int first, int count, const floatX* dout, const floatX* inp, int N);
static GradBuf grad_dense(Optimizer* o, int tensor);
static void grad_layer_done(Optimizer* o, int layer);

#endif // GRASS_GRAD_SINK_H
