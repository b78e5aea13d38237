/*
 * cuda/attention_cudnn.h: the C-style interface of cuDNN's fused causal GQA attention
 * (--attention cudnn), implemented in cuda/attention_cudnn.cu, its own translation unit: the
 * cudnn_frontend headers cost minutes and gigabytes of host compilation, so they are compiled once
 * into build/cuda/attention_cudnn_<arch>.o (cuda.mk, USE_CUDNN=1) and linked into train_llama and
 * dev/cuda/attention_check, which include only this header. cuda/attention.cuh calls it in
 * GRASS_CUDNN builds; a build without cuDNN never includes it and refuses --attention cudnn when
 * the flag is parsed (backend_attention_select).
 *
 * Layouts (the own kernels' buffers): q, k, v (and dq, dk, dv) are (B, T, heads, hd) bf16 with
 * token t at t*ld_q (q) or t*ld_kv (k, v) elements; out and dout contiguous (ld = nh*hd); stats
 * is cuDNN's fp32 softmax statistic per row, [B, nh, T] (the lse buffer).
 * Every function ends the program with a clear error (shape, strides, the cuDNN and frontend
 * versions, the hint --attention own) when cuDNN refuses; none returns a failure.
 * The workspace is the caller's (the backend allocates and accounts it): at least
 * cudnn_att_workspace_bytes() for the same shape.
 */
#ifndef GRASS_CUDA_ATTENTION_CUDNN_H
#define GRASS_CUDA_ATTENTION_CUDNN_H

#include <stddef.h>
#include <cuda_runtime.h>  // cudaStream_t

// "cuDNN 9.19.0 (built with 9.19.0), cudnn_frontend 1.32.0": the versions, for banners and errors
void cudnn_att_versions(char* out, size_t n);
// Builds (or finds) the forward and backward graphs of this shape and returns the larger of
// their workspaces in bytes. *deterministic: 1 when the backward graph is cuDNN's deterministic
// algorithm (set_deterministic_algorithm), 0 when cuDNN refused it for this shape and the
// backward is not deterministic, with cuDNN's reason in why (may be NULL).
size_t cudnn_att_workspace_bytes(int B, int T, int nh, int nkv, int hd, int ld_q, int ld_kv, int* deterministic, char* why,
                                 size_t why_n);
// forward: out and stats from q, k, v, on `stream`
void cudnn_att_forward(void* out, float* stats, const void* q, const void* k, const void* v, int ld_q, int ld_kv, int B, int T,
                       int nh, int nkv, int hd, void* workspace, size_t workspace_bytes, cudaStream_t stream);
// backward: dq, dk, dv (written, not accumulated) from dout, the forward's out and stats
void cudnn_att_backward(void* dq, void* dk, void* dv, const void* dout, const void* out, const void* q, const void* k,
                        const void* v, int ld_q, int ld_kv, const float* stats, int B, int T, int nh, int nkv, int hd,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream);

#endif // GRASS_CUDA_ATTENTION_CUDNN_H
