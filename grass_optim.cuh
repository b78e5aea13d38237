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

#include "optim/config.h"        // flags and facts: OptimConfig, OptimRuntime, defaults, validation
#include "optim/select.h"        // Grass's row selection on the host (top-r, multinorm, uniform; padding)
#include "optim/optimizer.h"     // the state: ProjMatrix per projected matrix, the Optimizer struct
#include "optim/zero.h"          // ZeRO-1's block, --overlap-comm's dense ranges, the all-reduces
#include "optim/layout.h"        // buffer layout, the backend buffer table, init/free, the memory plan
#include "optim/refresh.h"       // the norm pass, GaLore's SVD, the new rows or projector every K steps
#include "optim/grads.h"         // the gradient hand-off the backward pass calls (grad_sink.h)
#include "optim/step.h"          // the updates (AdamW, subspace Adam, fused per layer), clipping, the step protocol
#include "optim/state_io.h"      // state files and ZeRO-1 shard files (docs/FORMATS.md)
#include "optim/describe.h"      // the optimizer describes itself: banner, log header, plan rows, refresh log, FLOPs

#endif // GRASS_OPTIM_CUH
