/*
 * cuda/workspace.cuh: backend_workspace_bytes, the bytes of the scratch buffers that the other
 * parts grow on demand, at the sizes a step asks for (the trainer plans its memory with it).
 * Needs cuda/common.cuh, cuda/elementwise.cuh (CU_RMS_ROWS), cuda/reduce.cuh
 * (CU_SUMSQ_MAXBLOCKS) and cuda/grass.cuh (CU_NORM_BUDGET_FLOATS).
 */
#ifndef GRASS_CUDA_WORKSPACE_CUH
#define GRASS_CUDA_WORKSPACE_CUH

#include "common.cuh"
#include "elementwise.cuh"
#include "reduce.cuh"
#include "grass.cuh"

// the scratch buffers of cuda/*.cuh at the sizes a step asks for (each grows by a quarter when it grows)
size_t backend_workspace_bytes(const WorkspaceSizes* w) {
    double grow = 1.25;
    double b = (double)g_cu.lt_workspace_bytes;                                  // cuBLASLt workspace
    b += grow * (4.0 * w->N * sizeof(int) + 8.0 * w->N + (1 << 20));            // embedding sort
    b += grow * ((w->N + CU_RMS_ROWS - 1) / CU_RMS_ROWS) * (double)w->d * sizeof(float);  // RMSNorm dw partials
    b += CU_SUMSQ_MAXBLOCKS * sizeof(float);
    b += grow * (double)w->att_rows * sizeof(float);                             // attention D
    b += grow * (double)w->gather * sizeof(floatX);                              // Grass gather
    double nb = (double)(w->norm_block < CU_NORM_BUDGET_FLOATS ? w->norm_block : CU_NORM_BUDGET_FLOATS);
    b += grow * nb * sizeof(float);                                              // Grass norm pass
    b += grow * (double)w->wire * sizeof(floatX);                                // all-reduce wire buffer
    if (w->select_dim > 0) b += grow * (56.0 * w->select_dim + (2 << 20));      // device selection
    return (size_t)b;
}

#endif // GRASS_CUDA_WORKSPACE_CUH
