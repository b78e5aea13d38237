/*
 * backend_cpu.h: the CPU implementation of backend.h: host memory with accounting, the ops
 * as thin forwards to the fp32 kernels of kernels_cpu.h, and the collectives as calls to
 * comm.h's MPI loops.
 * This is the numerical reference the CUDA kernels are checked against, and what CI runs.
 */
#ifndef GRASS_BACKEND_CPU_H
#define GRASS_BACKEND_CPU_H

#include <math.h>
#include <float.h>
#include <unistd.h>   // sysconf
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "utils.h"
#include "comm.h"      // the MPI loops of the collectives (mpi_*)
#include "backend.h"
#include "kernels_cpu.h"

static size_t g_cpu_bytes_now = 0, g_cpu_bytes_peak = 0;
static char g_cpu_backend_name[128];
void backend_init(int local_rank) {
    (void)local_rank;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    snprintf(g_cpu_backend_name, sizeof(g_cpu_backend_name), "cpu (fp32, OpenBLAS, %d threads)", threads);
}
const char* backend_name(void) { return g_cpu_backend_name; }

// Each allocation carries a 64-byte prefix with its size, for the memory accounting.
void* backend_malloc(size_t bytes, const char* what) {
    unsigned char* p = (unsigned char*)calloc(1, bytes + 64);
    if (p == NULL) {
        fatal("cannot allocate %zu bytes (%.2f GiB) for %s; peak so far %.2f GiB", bytes,
              bytes / 1073741824.0, what, g_cpu_bytes_peak / 1073741824.0);
    }
    *(size_t*)p = bytes;
    g_cpu_bytes_now += bytes;
    if (g_cpu_bytes_now > g_cpu_bytes_peak) g_cpu_bytes_peak = g_cpu_bytes_now;
    return p + 64;
}
void backend_free(void* ptr) {
    if (ptr == NULL) return;
    unsigned char* p = (unsigned char*)ptr - 64;
    g_cpu_bytes_now -= *(size_t*)p;
    free(p);
}
void backend_memset0(void* p, size_t bytes) { memset(p, 0, bytes); }
void backend_copy(void* dst, const void* src, size_t bytes) { memmove(dst, src, bytes); }
void backend_upload(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
void backend_download(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
void backend_upload_async(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
void backend_upload_floats(floatX* dst, const float* src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
void backend_download_floats(float* dst, const floatX* src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
void backend_widen(float* dst, const floatX* src, size_t n) { memcpy(dst, src, n * sizeof(float)); }
void backend_synchronize(void) {}
size_t backend_memory_free(void) {
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return (pages > 0 && page > 0) ? (size_t)pages * (size_t)page : 0;
}
size_t backend_memory_peak(void) { return g_cpu_bytes_peak; }
double backend_peak_flops(void) { return 0.0; }  // unknown on a CPU; --peak-tflops sets it
int backend_ffn_align(void) { return 1; }  // the CPU's GEMMs need no padding, and its numbers stay the reference
int backend_grass_row_align(void) { return 1; }
int backend_attention_select(int use_cudnn, char* why, size_t n) {
    if (use_cudnn) snprintf(why, n, "the CPU build has one attention (kernels_cpu.h); cuDNN's is for the GPU build");
    return !use_cudnn;
}
size_t backend_attention_workspace_bytes(const WorkspaceSizes* w, char* note, size_t n) {
    (void)w;
    if (n > 0) note[0] = '\0';
    return 0;  // one attention, its scratch in backend_workspace_bytes
}
// the attention's per-thread score blocks (two of cpu_att_block x T floats); the rest is small
size_t backend_workspace_bytes(const WorkspaceSizes* w) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    size_t qb = w->T < (size_t)cpu_att_block ? w->T : (size_t)cpu_att_block;
    return (size_t)threads * 2 * qb * w->T * sizeof(float);
}

// ---- the interface: each op forwards to its cpu_ kernel (kernels_cpu.h) ----------------------
void param_init_tensor(floatX* dst, const ParamInit* p, uint64_t hash[2]) { cpu_param_init_tensor(dst, p, hash); }
void embedding_forward(floatX* out, const int* d_tokens, const floatX* wte, int N, int d) {
    cpu_embedding_forward(out, d_tokens, wte, N, d);
}
// dense gradients: floatX is float here, so both GradBuf dtypes are float buffers
void embedding_backward(GradBuf dwte, const floatX* dout, const int* d_tokens, int N, int d) {
    cpu_embedding_backward((float*)dwte.p, dout, d_tokens, N, d);
}
void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d, float eps) {
    cpu_rmsnorm_forward(out, rstd, inp, w, N, d, eps);
}
void rmsnorm_backward(floatX* dinp, GradBuf dw, const floatX* dout, const floatX* inp, const floatX* w,
                      const float* rstd, int N, int d) {
    cpu_rmsnorm_backward(dinp, (float*)dw.p, dout, inp, w, rstd, N, d);
}
void rope_forward(floatX* x, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    cpu_rope_forward(x, n_heads * head_dim, d_cos, d_sin, B, T, n_heads, head_dim);
}
void rope_backward(floatX* dx, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim) {
    cpu_rope_backward(dx, n_heads * head_dim, d_cos, d_sin, B, T, n_heads, head_dim);
}
void rope_qk(floatX* q, floatX* k, int ld_q, int ld_kv, const float* d_cos, const float* d_sin, int B, int T,
             int n_heads, int n_kv_heads, int head_dim, int backward) {
    if (backward) {
        cpu_rope_backward(q, ld_q, d_cos, d_sin, B, T, n_heads, head_dim);
        cpu_rope_backward(k, ld_kv, d_cos, d_sin, B, T, n_kv_heads, head_dim);
    } else {
        cpu_rope_forward(q, ld_q, d_cos, d_sin, B, T, n_heads, head_dim);
        cpu_rope_forward(k, ld_kv, d_cos, d_sin, B, T, n_kv_heads, head_dim);
    }
}
void attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int ld_q, int ld_kv,
                       int B, int T, int nh, int nkv, int hd) {
    cpu_attention_forward(out, lse, q, k, v, ld_q, ld_kv, B, T, nh, nkv, hd);
}
void attention_backward(floatX* dq, floatX* dk, floatX* dv, const floatX* dout, const floatX* out, const floatX* q,
                        const floatX* k, const floatX* v, int ld_q, int ld_kv, const float* lse, int B, int T, int nh,
                        int nkv, int hd) {
    cpu_attention_backward(dq, dk, dv, dout, out, q, k, v, ld_q, ld_kv, lse, B, T, nh, nkv, hd);
}
void swiglu_forward(floatX* h, const floatX* gu, int N, int f) { cpu_swiglu_forward(h, gu, N, f); }
void swiglu_backward(floatX* dgu, const floatX* dh, const floatX* gu, int N, int f) {
    cpu_swiglu_backward(dgu, dh, gu, N, f);
}
void add_inplace(floatX* a, const floatX* b, size_t n) { cpu_add_inplace(a, b, n); }
void matmul_forward(floatX* out, const floatX* inp, const floatX* w, int N, int in, int outd) {
    cpu_matmul_forward(out, inp, in, w, N, in, outd);
}
void matmul_forward_strided(floatX* out, const floatX* inp, int ld_inp, const floatX* w, int N, int in, int outd) {
    cpu_matmul_forward(out, inp, ld_inp, w, N, in, outd);
}
// the GEMM, then the add: the same operations in the same order as before the GPU fused them
void matmul_forward_residual(floatX* out, const floatX* inp, const floatX* w, const floatX* residual, int N, int in,
                             int outd) {
    cpu_matmul_forward(out, inp, in, w, N, in, outd);
    cpu_add_inplace(out, residual, (size_t)N * outd);
}
void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* w, int N, int in, int outd, int accumulate) {
    cpu_matmul_backward_input(dinp, dout, w, N, in, outd, accumulate);
}
void matmul_backward_weight(GradBuf dw, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                            int accumulate) {
    cpu_matmul_backward_weight((float*)dw.p, dout, ld_dout, inp, N, in, outd, accumulate);
}
void classifier_forward_backward(floatX* logits, float* losses, const int* d_targets, int N, int V, float dloss,
                                 int want_grad) {
    cpu_classifier_forward_backward(logits, losses, d_targets, N, V, dloss, want_grad);
}
void grass_gathered_grad(float* C, const floatX* dout, int ld_dout, const floatX* inp, const int* d_idx,
                         const float* d_scale, int r, int N, int in, int outd, int cols_side, int accumulate) {
    cpu_grass_gathered_grad(C, dout, ld_dout, inp, d_idx, d_scale, r, N, in, outd, cols_side, accumulate);
}
void grass_grad_norms(float* norms, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                      int cols_side) {
    cpu_grass_grad_norms(norms, dout, ld_dout, inp, N, in, outd, cols_side);
}
void grass_adam_update(floatX* W, float* Wm, const float* C, void* m, void* v, int state_dtype, const int* d_idx,
                       const float* d_upscale, int r, int outd, int in, int cols_side, AdamParams a, float alpha,
                       uint64_t seed) {
    (void)seed;
    cpu_grass_adam_update(W, Wm, C, m, v, state_dtype == STATE_BF16, d_idx, d_upscale, r, outd, in, cols_side, a,
                          alpha);
}
int grass_select_device(int method, const float* d_norms, int dim, int r, uint64_t rng, int* d_idx, float* d_scale,
                        float* d_upscale) {
    (void)method; (void)d_norms; (void)dim; (void)r; (void)rng; (void)d_idx; (void)d_scale; (void)d_upscale;
    return -1;  // the host selection (grass_optim.cuh) runs instead
}
size_t galore_work_floats(int outd, int in) { return cpu_galore_work_floats(outd, in); }
void galore_projector(float* Pt, floatX* Ptx, const float* G, int outd, int in, int cols_side, int r, float* work) {
    cpu_galore_projector(Pt, G, outd, in, cols_side, r, work);
    if (Ptx != Pt) memcpy(Ptx, Pt, (size_t)r * (cols_side ? in : outd) * sizeof(float));  // floatX is float here
}
void galore_project_grad(float* R, const floatX* dout, int ld_dout, const floatX* inp, const floatX* Ptx, int r, int N,
                         int in, int outd, int cols_side) {
    cpu_galore_project_grad(R, dout, ld_dout, inp, Ptx, r, N, in, outd, cols_side);
}
void galore_adam_update(floatX* W, float* Wm, float* R, void* m, void* v, int state_dtype, const float* Pt, int r,
                        int outd, int in, int cols_side, AdamParams a, float alpha, uint64_t seed, float* work) {
    (void)seed;
    cpu_galore_adam_update(W, Wm, R, m, v, state_dtype == STATE_BF16, Pt, r, outd, in, cols_side, a, alpha, work);
}
void grass_remap_state(void* s, void* tmp, int state_dtype, const int* d_src, const float* d_factor, int square,
                       int r_old, int r_new, int r_cap, int other, int cols_side) {
    cpu_grass_remap_state(s, tmp, state_dtype == STATE_BF16, d_src, d_factor, square, r_old, r_new, r_cap, other,
                          cols_side);
}
void scale_floats(float* C, float s, size_t n) { cpu_scale_floats(C, s, n); }
void rows_sumsq(float* norms, const float* M, int rows, int cols, int by_cols) {
    cpu_rows_sumsq(norms, M, rows, cols, by_cols);
}
void adamw_update(floatX* param, float* master, GradBuf grad, void* m, void* v, int state_dtype, size_t n,
                  AdamParams a, uint64_t seed, size_t first) {
    (void)first;
    cpu_adamw_update(param, master, (const float*)grad.p, m, v, state_dtype == STATE_BF16, n, a, seed);
}
void sumsq_floatX(float* acc, const floatX* x, size_t n) { cpu_sumsq_float(acc, x, n); }
void sumsq_float(float* acc, const float* x, size_t n) { cpu_sumsq_float(acc, x, n); }
void sumsq_unscaled(float* acc, const float* C, const float* d_scale, int r, int other, int cols_side) {
    cpu_sumsq_unscaled(acc, C, d_scale, r, other, cols_side);
}
void clip_factor(float* scale, const float* sumsq, float clip) { cpu_clip_factor(scale, sumsq, clip); }
void loss_accumulate(double* acc, const float* losses, int N) { cpu_loss_accumulate(acc, losses, N); }

// ---- collectives: comm.h's MPI loops (each a no-op on one rank) -----------------------------
void allreduce_sum_float(float* x, size_t n) {
#ifdef USE_MPI
    mpi_allreduce_floats(x, n);
#else
    (void)x; (void)n;
#endif
}
void allreduce_sum_floatX(floatX* x, size_t n) { allreduce_sum_float(x, n); }  // floatX is float here
void reducescatter_sum_float(float* x, size_t shard) {
#ifdef USE_MPI
    mpi_reducescatter_floats(x, shard);
#else
    (void)x; (void)shard;
#endif
}
void reducescatter_sum_floatX(floatX* x, size_t shard) { reducescatter_sum_float(x, shard); }  // floatX is float here
void allgather_floatX(floatX* x, size_t shard) {
#ifdef USE_MPI
    mpi_allgather_floats(x, shard);
#else
    (void)x; (void)shard;
#endif
}

// asynchronous all-reduce: MPI_Iallreduce per buffer, the requests kept per group.
// (OpenMPI moves the data mostly inside MPI calls, so on the CPU this orders the work as the
// GPU does rather than hiding much time; the results are the same as the blocking sum.)
#ifdef USE_MPI
#define CPU_ASYNC_MAX 256
static MPI_Request cpu_async_req[ALLREDUCE_SLOTS][CPU_ASYNC_MAX];
static int cpu_async_count[ALLREDUCE_SLOTS];
#endif
void allreduce_async_reserve(size_t max_floats) { (void)max_floats; }
void allreduce_start_float_wire_floatX(float* x, size_t n, int slot) {
    if (slot < 0 || slot >= ALLREDUCE_SLOTS)
        fatal("allreduce_start: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
#ifdef USE_MPI
    mpi_iallreduce_floats(x, n, cpu_async_req[slot], &cpu_async_count[slot], CPU_ASYNC_MAX);
#else
    (void)x; (void)n;
#endif
}
// floatX is float here: both are the exact fp32 all-reduce
void allreduce_start_floatX(floatX* x, size_t n, int slot) { allreduce_start_float_wire_floatX(x, n, slot); }
void allreduce_start_float(float* x, size_t n, int slot) { allreduce_start_float_wire_floatX(x, n, slot); }
void allreduce_wait(int slot) {
    if (slot < 0 || slot >= ALLREDUCE_SLOTS)
        fatal("allreduce_wait: group %d out of range [0, %d)", slot, ALLREDUCE_SLOTS);
#ifdef USE_MPI
    mpi_waitall(cpu_async_req[slot], &cpu_async_count[slot]);
#endif
}
void allreduce_sum_float_wire_floatX(float* x, size_t n) { allreduce_sum_float(x, n); }  // floatX is float here

#endif // GRASS_BACKEND_CPU_H
