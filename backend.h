/*
 * backend.h: the kernel interface. The model (train_llama.cu) and the optimizers
 * (grass_optim.cuh) call only these functions; each backend implements all of them:
 *   backend_cpu.h   fp32, OpenMP, OpenBLAS  (the numerical reference; what CI runs)
 *   backend_cuda.cuh bf16 storage / fp32 accumulation, cuBLASLt (built by nvcc)
 * Pointers named d_* or typed floatX* live in backend memory (device memory on the GPU).
 * Shapes: a linear layer has weight W (out x in, row-major, HF layout), input X (N x in),
 * output Y = X W^T (N x out); N = B*T rows. Every "accumulate" flag means out += result.
 */
#ifndef GRASS_BACKEND_H
#define GRASS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#ifdef ENABLE_FP32
typedef float floatX;
#define FLOATX_NAME "fp32"
#else
typedef __nv_bfloat16 floatX;
#define FLOATX_NAME "bf16"
#endif
#else
typedef float floatX;
#define FLOATX_NAME "fp32"
#endif

// ---- lifecycle and memory -------------------------------------------------------------
void backend_init(int local_rank);                 // pick device, create handles, print what it is
const char* backend_name(void);                    // "cpu (OpenBLAS, N threads)" / "cuda (H200)"
void* backend_malloc(size_t bytes, const char* what);  // zeroed; fatal with the size and 'what' on failure
void backend_free(void* p);
void backend_memset0(void* p, size_t bytes);
void backend_copy(void* dst, const void* src, size_t bytes);              // backend -> backend
void backend_upload(void* dst, const void* host_src, size_t bytes);       // host -> backend (raw bytes)
void backend_download(void* host_dst, const void* src, size_t bytes);     // backend -> host (raw bytes)
// host -> backend without waiting for the backend: the bytes are staged first (CUDA: in a ring of
// pinned buffers, each reused only once its copy is done), so host_src may be reused at once
void backend_upload_async(void* dst, const void* host_src, size_t bytes);
void backend_upload_floats(floatX* dst, const float* host_src, size_t n); // host fp32 -> floatX
void backend_download_floats(float* host_dst, const floatX* src, size_t n); // floatX -> host fp32
void backend_widen(float* dst, const floatX* src, size_t n);               // floatX -> fp32, both in the backend
void backend_synchronize(void);
size_t backend_memory_free(void);                  // bytes the backend can still allocate (0 = unknown)
size_t backend_memory_peak(void);                  // bytes allocated at peak by backend_malloc
double backend_peak_flops(void);                   // dense peak of the floatX matmul path, 0 = unknown
// the multiple the ffn size is padded to (llama_ffn_stored): 1 CPU, 64 GPU
int backend_ffn_align(void);
// the multiple a Grass selection is padded to (grass_pad_selection): 1 CPU, 16 GPU
int backend_grass_row_align(void);
// --attention: 0 the own attention kernels (every build), 1 cuDNN's fused SDPA (GPU builds made with
// cuDNN's frontend). Returns 0 and why in `why` when the choice is not available here.
int backend_attention_select(int use_cudnn, char* why, size_t n);
// The backend's own scratch for a training step, for the memory plan: an estimate from the
// sizes that drive it. N = B*T rows; att_rows = B*heads*T; d the width; T the sequence; gather
// the largest Grass gathered operand (N x r elements); norm_block the largest projected matrix
// (elements, the norm pass's block is at most that); wire the largest compressed gradient
// all-reduced at once (elements); select_dim the largest dimension Grass selects from; B, nh,
// nkv, hd the attention's batch, heads, kv heads and head dim (its library's workspace).
typedef struct { size_t N, att_rows, d, T, gather, norm_block, wire, select_dim; int B, nh, nkv, hd; } WorkspaceSizes;
size_t backend_workspace_bytes(const WorkspaceSizes* w);
// The workspace of an attention library (cuDNN's with --attention cudnn) for a step of these
// sizes, and in `note` what it is; 0 and an empty note where the own attention runs.
size_t backend_attention_workspace_bytes(const WorkspaceSizes* w, char* note, size_t n);

// Dense weight gradients (the full-rank tensors' dW) are stored as floatX (GRAD_MODEL), or as fp32
// (GRAD_FP32, --grad-dtype fp32) so that a bf16 build accumulates, all-reduces and reads them in
// fp32 as it does Grass's compressed gradients. A GradBuf is such a buffer with its dtype; p ==
// NULL: the gradient is not wanted. Where floatX is fp32 (the CPU and -DENABLE_FP32 builds) both
// dtypes are the same.
typedef enum { GRAD_MODEL = 0, GRAD_FP32 = 1 } GradDtype;
typedef struct { void* p; int dtype; } GradBuf;
static inline size_t grad_dtype_size(int dt) { return dt == GRAD_FP32 ? sizeof(float) : sizeof(floatX); }
static inline GradBuf grad_buf(void* p, int dtype) { GradBuf g; g.p = p; g.dtype = dtype; return g; }

// ---- initialization (llama_init_random) ------------------------------------------------------
// One tensor's initial values, drawn where they are stored (no host copy on the GPU): in the
// Hugging Face layout (rows_hf x cols_hf, row-major), pair k = values (2k, 2k+1) from rng.h's
// rng_init_pair(key, k, std), or every value `fill` when std == 0 (the norms); written into the
// stored layout (rows x cols: the real rows and columns first, zeros in the padding, as
// param_to_stored). hash[0] += rng_hash_term(first + j, v_j) over the values v_j as drawn (fp32),
// hash[1] += the same over the values rounded to bf16 (nearest even; the GPU's bf16 build hashes
// the values it stored). Both sums are the same on every build for the same tensors.
typedef struct {
    int rows, cols, rows_hf, cols_hf;
    uint64_t key;     // the tensor's stream (rng_seed_for)
    double std;       // 0: every value is fill
    float fill;
    uint64_t first;   // the hash index of the tensor's first value
} ParamInit;
void param_init_tensor(floatX* dst, const ParamInit* p, uint64_t hash[2]);

// ---- model ops ---------------------------------------------------------------------------
// out[i,:] = wte[tokens[i],:]
void embedding_forward(floatX* out, const int* d_tokens, const floatX* wte, int N, int d);
// dwte[tokens[i],:] += dout[i,:]
void embedding_backward(GradBuf dwte, const floatX* dout, const int* d_tokens, int N, int d);
// out = w * x / sqrt(mean(x^2) + eps); rstd[i] saved for the backward
void rmsnorm_forward(floatX* out, float* rstd, const floatX* inp, const floatX* w, int N, int d, float eps);
// dinp += dx; dw += dw (dw.p may be NULL when the weight's gradient is not wanted)
void rmsnorm_backward(floatX* dinp, GradBuf dw, const floatX* dout, const floatX* inp, const floatX* w,
                      const float* rstd, int N, int d);
// in place on x (B,T,n_heads,head_dim), rotate-half convention; cos/sin tables (max_T, head_dim/2)
void rope_forward(floatX* x, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim);
void rope_backward(floatX* dx, const float* d_cos, const float* d_sin, int B, int T, int n_heads, int head_dim);
// Strided rows: the model keeps q, k and v side by side in one N x (nh + 2 nkv) hd buffer (the
// output of one fused Q/K/V GEMM), so the ops below read token t of q at q + t*ld_q and of k, v at
// k + t*ld_kv; the model passes the buffer's width for both. ld_q = nh*hd and ld_kv = nkv*hd are
// separate contiguous tensors.
// rope_forward (backward = 0) or rope_backward (1) of q (n_heads) and of k (n_kv_heads), in one pass
void rope_qk(floatX* q, floatX* k, int ld_q, int ld_kv, const float* d_cos, const float* d_sin, int B, int T,
             int n_heads, int n_kv_heads, int head_dim, int backward);
// causal attention: q (B,T,nh,hd) with tokens ld_q apart, k/v (B,T,nkv,hd) with tokens ld_kv apart;
// out (B,T,nh,hd) contiguous; lse (B,nh,T) log-sum-exp of the scaled scores, kept for the
// backward; no T x T matrix is stored.
void attention_forward(floatX* out, float* lse, const floatX* q, const floatX* k, const floatX* v, int ld_q, int ld_kv,
                       int B, int T, int nh, int nkv, int hd);
// writes (not accumulates) dq, dk, dv, laid out as q, k, v (ld_q, ld_kv); dout and out contiguous
void attention_backward(floatX* dq, floatX* dk, floatX* dv, const floatX* dout, const floatX* out,
                        const floatX* q, const floatX* k, const floatX* v, int ld_q, int ld_kv, const float* lse,
                        int B, int T, int nh, int nkv, int hd);
// h (N x f) = silu(gate) * up, where gu (N x 2f) holds each row's gate then its up (the output of
// one fused gate/up GEMM)
void swiglu_forward(floatX* h, const floatX* gu, int N, int f);
// dgu (N x 2f, laid out as gu) = d(gate), d(up) from dh (N x f)
void swiglu_backward(floatX* dgu, const floatX* dh, const floatX* gu, int N, int f);
// a += b
void add_inplace(floatX* a, const floatX* b, size_t n);
// Y (N x out) = X (N x in) W^T
void matmul_forward(floatX* out, const floatX* inp, const floatX* w, int N, int in, int outd);
// the same with X's rows ld_inp elements apart (X a column block of a wider buffer)
void matmul_forward_strided(floatX* out, const floatX* inp, int ld_inp, const floatX* w, int N, int in, int outd);
// Y = residual + X W^T (the residual connection riding on the GEMM: one rounding on the GPU, no
// separate add); out and residual may not alias
void matmul_forward_residual(floatX* out, const floatX* inp, const floatX* w, const floatX* residual, int N, int in,
                             int outd);
// dX (N x in) (+)= dY W
void matmul_backward_input(floatX* dinp, const floatX* dout, const floatX* w, int N, int in, int outd, int accumulate);
// dW (out x in) (+)= dY^T X, accumulated in dw's dtype (fp32: the GEMM writes fp32 directly);
// dY's rows are ld_dout elements apart (outd: contiguous; more: a column block of a fused
// GEMM's gradient, as for every op below that takes ld_dout)
void matmul_backward_weight(GradBuf dw, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                            int accumulate);
// logits (N x V) in; on return logits holds dlogits * dloss when want_grad; losses[i] per row
void classifier_forward_backward(floatX* logits, float* losses, const int* d_targets, int N, int V,
                                 float dloss, int want_grad);

// Optimizer moments (Adam m and v) are stored as fp32, or as bf16 to halve their memory (the
// top 16 bits of the fp32 value, rounded to nearest even on every write); the arithmetic is fp32
// either way. Moment buffers are passed as void* with their StateDtype.
typedef enum { STATE_FP32 = 0, STATE_BF16 = 1 } StateDtype;
static inline size_t state_dtype_size(int dt) { return dt == STATE_BF16 ? 2 : 4; }

// One Adam update's hyperparameters (adamw_update, grass_adam_update): step size, moment
// decays, epsilon, decoupled weight decay (0: none), the bias corrections 1 - b^t, and the
// factor on the gradient (global-norm clipping; 1: none). grad_scale_dev, when not NULL, is a
// backend float that replaces grad_scale: the clipping factor clip_factor computed on the backend,
// so that the host need not wait for the step's norm before it queues the updates.
// bc_rows (grass_adam_update only; NULL elsewhere): per-row bias corrections in the backend, row j's
// 1 - b1^t_j at [2j] and 1 - b2^t_j at [2j+1], in place of bc1 and bc2 (--grass-refresh-state
// keep, where each selected row counts its own Adam steps); NULL: bc1, bc2 for every row.
typedef struct {
    float lr, b1, b2, eps, wd, bc1, bc2, grad_scale;
    const float* grad_scale_dev;
    const float* bc_rows;
} AdamParams;
static inline float adam_grad_scale_host(const AdamParams* a) {  // the CPU backend's read of it
    return a->grad_scale_dev != NULL ? *a->grad_scale_dev : a->grad_scale;
}
// Where epsilon enters (--adam-eps-style; optim/config.h). Every kernel computes
// (m / bc1) / (sqrt(v / bc2) + eps); the older convention lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)
// (eps added to sqrt(v) before the bias correction: galore_torch's AdamW, transformers' old AdamW)
// is the same update with eps / sqrt(bc2) in its place, so both builds' kernels serve both.
static inline float adam_eps_for_style(float eps, int eps_on_raw_v, float bc2) {
    return eps_on_raw_v ? eps / sqrtf(bc2) : eps;
}

// ---- Grass ops (grass_optim.cuh) ----------------------------------------------------------
// rows side: C (r x in) (+)= diag(scale) dY[:, idx]^T X            (selected output features)
// cols side: C (out x r) (+)= dY^T X[:, idx] diag(scale)           (selected input features)
void grass_gathered_grad(float* C, const floatX* dout, int ld_dout, const floatX* inp, const int* d_idx,
                         const float* d_scale, int r, int N, int in, int outd, int cols_side, int accumulate);
// norms (+)= squared row norms (rows side, length out) or column norms (cols side, length in)
// of G = dY^T X, computed in blocks so that no out x in matrix is ever held
void grass_grad_norms(float* norms, const floatX* dout, int ld_dout, const floatX* inp, int N, int in, int outd,
                      int cols_side);
// Adam (hyperparameters a) in the subspace on C (r x n rows side / m x r cols side) with
// moments m, v (same shape, stored as state_dtype), giving U; then
// W[idx_j,:] -= a.lr * alpha * upscale_j * U[j,:] (rows) or W[:,idx_j] -= ... U[:,j] (cols);
// alpha is Grass's scale, not Adam's. W -= a.lr * a.wd * W first when a.wd > 0 (decoupled decay
// on the whole matrix). Wm: the fp32 master copy of W (NULL: none): then the update and the
// decay apply to Wm and W gets Wm rounded to nearest; without it, W is rounded stochastically.
// seed: for the stochastic rounding of bf16 weight writes (ignored in fp32)
void grass_adam_update(floatX* W, float* Wm, const float* C, void* m, void* v, int state_dtype, const int* d_idx,
                       const float* d_upscale, int r, int outd, int in, int cols_side, AdamParams a, float alpha,
                       uint64_t seed);
// --grass-refresh-state keep: carry the moments of the rows a refresh selects again into the new
// selection's layout. s: one moment buffer (m or v) of capacity r_cap x other, stored as state_dtype,
// laid out for r_old rows (rows side: row j at j*other; cols side: other x r_old, column j);
// tmp: scratch of the same capacity. New row j (of r_new) takes old row d_src[j] times
// f = d_factor[j] (f * f in fp32 when square: v), or 0 where d_src[j] < 0 (a new or padding row);
// every element past the new r_new rows becomes 0. The product is x * f in fp32 from the stored
// value (bf16: widened exactly), rounded to nearest even when stored as bf16 (both builds alike).
void grass_remap_state(void* s, void* tmp, int state_dtype, const int* d_src, const float* d_factor, int square,
                       int r_old, int r_new, int r_cap, int other, int cols_side);
// C *= s
void scale_floats(float* C, float s, size_t n);
// norms (+)= the squared norms of M's rows (by_cols 0; length rows) or columns (by_cols 1; length
// cols), M rows x cols fp32 row-major: Grass's exact and sketched norm pass
void rows_sumsq(float* norms, const float* M, int rows, int cols, int by_cols);
// Grass selection where the norms live (--select-on-device 1): the same result as
// grass_optim.cuh's host grass_select, from d_norms (dim squared norms), method (a GrassSelect
// value), r draws and the selection's RNG state. Writes r_eff unique indices (ascending) and
// their scales to d_idx, d_scale, d_upscale and returns r_eff; returns -1 where the backend has
// no such path (the CPU, whose host function is the reference).
int grass_select_device(int method, const float* d_norms, int dim, int r, uint64_t rng, int* d_idx, float* d_scale,
                        float* d_upscale);

// ---- GaLore ops (grass_optim.cuh, --optimizer galore) -------------------------------------------
// GaLore (arXiv 2403.03507) projects the gradient G (out x in) of a matrix onto r singular
// vectors of its smaller side s = min(out, in): P (s x r), stored transposed as Pt (r x s),
// rows side (out <= in): R = P^T G (r x in); cols side (out > in): R = G P (out x r).
// The floats of `work` that galore_projector and galore_adam_update need for this matrix shape.
size_t galore_work_floats(int outd, int in);
// The layout of that work, the same in both backends: A (other x s, column-major), the s singular
// values, VT (s x s), then the SVD's own workspace (svd_floats: LAPACK's or cuSOLVER's, with its
// info word); the dense update (out x in) reuses the same floats. s = min(out, in), other = max.
typedef struct { float* A; float* sv; float* VT; float* svd_work; } GaloreWork;
static inline GaloreWork galore_work_layout(int s, int other, float* work) {
    GaloreWork w;
    w.A = work;
    w.sv = w.A + (size_t)other * s;
    w.VT = w.sv + s;
    w.svd_work = w.VT + (size_t)s * s;
    return w;
}
// the floats of that layout
static inline size_t galore_work_size(int s, int other, size_t svd_floats) {
    size_t svd = (size_t)other * s + s + (size_t)s * s + svd_floats;
    size_t upd = (size_t)other * s;  // out x in
    return svd > upd ? svd : upd;
}
// Pt (r x s, fp32) and Ptx (the same in floatX, for the GEMMs with activations; may equal Pt in
// an fp32 build) = the first r right singular vectors of the column-major (other x s) view of G
// (= the left singular vectors of G for the rows side, the right ones for the cols side), each
// signed so that its entry of largest magnitude (the lowest index among equals) is positive.
// G: out x in fp32 row-major (not modified); work: galore_work_floats(outd, in) floats, which on
// return hold the s singular values, descending, at work + other * s (other = max(out, in)).
void galore_projector(float* Pt, floatX* Ptx, const float* G, int outd, int in, int cols_side, int r, float* work);
// R (+)= the projected gradient of one micro-batch, never forming G: rows side R (r x in) +=
// (dY Pt^T)^T X; cols side R (out x r) += dY^T (X Pt^T). Ptx: the projector in floatX (r x s).
void galore_project_grad(float* R, const floatX* dout, int ld_dout, const floatX* inp, const floatX* Ptx, int r, int N,
                         int in, int outd, int cols_side);
// Adam (hyperparameters a) on R in place (R becomes Adam's direction D; m, v the same shape, stored
// as state_dtype), then W -= a.lr * (alpha * P D + a.wd * W) (rows side; cols side D P^T). Wm: the
// fp32 master copy of W (NULL: none), as for grass_adam_update; seed: stochastic rounding of bf16
// weights; work: galore_work_floats(outd, in) floats.
void galore_adam_update(floatX* W, float* Wm, float* R, void* m, void* v, int state_dtype, const float* Pt, int r,
                        int outd, int in, int cols_side, AdamParams a, float alpha, uint64_t seed, float* work);

// ---- full-rank AdamW and reductions ------------------------------------------------------
// AdamW (hyperparameters a) on n elements: param -= a.lr * (U + a.wd * param), from the gradient
// grad (floatX or fp32). m, v stored as state_dtype; master: the fp32 master copy of param (NULL: none), as for Grass.
// Stochastic rounding (bf16 weights without a master copy) draws number first + i of the
// stream `seed` for param[i]: a tensor updated in pieces (ZeRO-1 shards) gets the draws of one
// whole-tensor update, so the result does not depend on where the pieces are cut.
void adamw_update(floatX* param, float* master, GradBuf grad, void* m, void* v, int state_dtype, size_t n, AdamParams a,
                  uint64_t seed, size_t first);
// *acc += sum(x^2) (acc is a backend float)
void sumsq_floatX(float* acc, const floatX* x, size_t n);
void sumsq_float(float* acc, const float* x, size_t n);
// *acc += the sum of squares of C with its j-th row (rows side; C r x other) or j-th column (cols
// side; C other x r) divided by d_scale[j]: the norm^2 of Grass's B G from C = rho B G. With every
// scale 1 the result is sumsq_float's, bit for bit.
void sumsq_unscaled(float* acc, const float* C, const float* d_scale, int r, int other, int cols_side);
// *scale = clip / norm when norm > clip, else 1, where norm = (float)sqrt((double)*sumsq): global-norm
// clipping's factor, on the backend (every pointer a backend float)
void clip_factor(float* scale, const float* sumsq, float clip);
// *acc += (double)(float)(sum of losses[0..N) / N): a micro-batch's mean loss added on the backend
// (acc a backend double), so that the step's loss is read once, with its norm, at the step's end
void loss_accumulate(double* acc, const float* losses, int N);

// ---- collectives (the CPU backend uses MPI, the CUDA backend NCCL; no-ops in one process) --
// sum in place over ranks
void allreduce_sum_floatX(floatX* x, size_t n);
void allreduce_sum_float(float* x, size_t n);
// sum fp32 values over ranks with floatX on the wire (bf16 on a bf16 GPU build, exact fp32 on
// the CPU): Grass's compressed gradients, so that they cost r/m of a full-rank all-reduce
void allreduce_sum_float_wire_floatX(float* x, size_t n);

// ZeRO-1 (sharded AdamW moments) over a buffer of world x shard elements, rank r's block at
// x + r*shard: reduce-scatter leaves in rank r's block the sum over ranks of every rank's
// block r (the other blocks are then undefined); all-gather copies every rank's own block to
// all ranks. In place; no-ops in one process.
void reducescatter_sum_floatX(floatX* x, size_t shard);
void reducescatter_sum_float(float* x, size_t shard);
void allgather_floatX(floatX* x, size_t shard);

// Asynchronous all-reduce, so that one layer's communication runs while the backward pass
// computes the next layer. allreduce_start_float_wire_floatX begins the same sum as
// allreduce_sum_float_wire_floatX in group `slot` (0 <= slot < ALLREDUCE_SLOTS) and returns;
// the caller must not touch x until allreduce_wait(slot), which completes every reduction
// started in that group since its last wait. GPU: the work queued so far is finished first,
// the sum runs on a separate communication stream, and the wait makes the compute stream wait
// for it (the host does not block). CPU: MPI_Iallreduce, and MPI_Waitall in the wait.
// allreduce_async_reserve sizes the wire buffers of groups 0 and 1: at most max_floats each in
// flight. allreduce_start_floatX and allreduce_start_float are the same for floatX and for fp32
// values, summed in their own dtype (no wire buffer needed).
#define ALLREDUCE_LAYER_SLOTS 2   // groups 0 and 1: the fused Grass layers, alternating
#define ALLREDUCE_SLOT_DENSE 2    // group 2: the dense gradients, layer by layer
#define ALLREDUCE_SLOTS 3
void allreduce_async_reserve(size_t max_floats);
void allreduce_start_float_wire_floatX(float* x, size_t n, int slot);
void allreduce_start_floatX(floatX* x, size_t n, int slot);
void allreduce_start_float(float* x, size_t n, int slot);
void allreduce_wait(int slot);

#endif // GRASS_BACKEND_H
