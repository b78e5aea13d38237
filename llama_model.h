/*
 * llama_model.h: the LLaMA model, written once for both backends. Read it top to bottom:
 *   Llama            the struct: config, parameters (one buffer, llama_params.h's table order),
 *                    activations and backward scratch, every field with its shape
 *   llama_buffers    THE table of activation buffers (pointer, dtype, count, label): allocation,
 *                    free and the memory plan's activation bytes all come from it
 *   llama_build / llama_free / llama_init_random (llama_init_tensor)
 *   layer_forward, llama_forward, llama_backward
 *   checkpoint_*     the model file (docs/FORMATS.md): header, save, load
 * The kernels come from backend.h (backend_cpu.h or backend_cuda.cuh, chosen by the compiler);
 * the weight gradients go to the optimizer through grad_sink.h. Shapes: B sequences of T
 * tokens, N = B*T rows; d = dim, f = the ffn size as stored (ffn_dim, padded to a multiple of 64
 * on the GPU build: llama_ffn_stored), L = layers, V = vocab, nh/nkv heads of hd.
 * HF's LlamaForCausalLM is the reference (tests/fixtures, test_llama.cu).
 */
#ifndef GRASS_LLAMA_MODEL_H
#define GRASS_LLAMA_MODEL_H

#include <math.h>
#include "utils.h"
#include "checksum.h"
#include "bf16.h"
#include "rng.h"
#include "llama_config.h"
#include "llama_params.h"
#include "backend.h"
#ifdef __CUDACC__
#include "backend_cuda.cuh"   // nvcc: bf16 storage, cuBLASLt, NCCL
#else
#include "backend_cpu.h"      // g++: fp32, OpenMP, OpenBLAS, MPI
#endif
#include "grad_sink.h"

#define MODEL_MAGIC 20261102
#define CHECKPOINT_VERSION 1
// the model header's int32 fields (64 of them; docs/FORMATS.md): their indices. The state file
// shares the first CKPT_H_STEP + 1 of them (train_llama.cu's STATE_* name its own).
enum {
    CKPT_H_MAGIC = 0, CKPT_H_VERSION = 1, CKPT_H_VOCAB = 2, CKPT_H_DIM = 3, CKPT_H_FFN = 4, CKPT_H_LAYERS = 5,
    CKPT_H_HEADS = 6, CKPT_H_KV_HEADS = 7, CKPT_H_MAX_SEQ = 8, CKPT_H_TIED = 9,
    CKPT_H_DTYPE = 10,       // the parameters' dtype: 0 fp32, 1 bf16
    CKPT_H_NORM_EPS = 11,    // float bits
    CKPT_H_ROPE_THETA = 12,  // float bits
    CKPT_H_STEP = 13,
    CKPT_HAS_CHECKSUM = 14,  // 1: the file ends in a checksum trailer (checksum.h)
};

// ----------------------------------------------------------------------------------------------
// the model

typedef struct {
    LlamaConfig config;
    ParamTable pt;
    floatX* params;       // all parameters, one buffer, in the order of pt (HF names and shapes there;
                          // a linear weight is out x in, row-major)
    int B, T;             // the largest batch the activations were sized for
    int recompute;        // activation recomputation: only the residual stream is kept for every
                          // layer; the rest has one slot (S = 1) that the backward pass refills
                          // by running each layer's forward again. Otherwise S = L.
    // Activations (allocated from llama_buffers below), per layer l at offset l*N*width (slot 0 for
    // every layer with recompute). Shapes in elements; N = B*T rows.
    floatX* resid;        // (L+1) x N x d: the residual stream entering each layer, and the last one
    floatX* ln1;          // S x N x d
    floatX* qkv;          // S x N x (nh + 2 nkv)*hd: each row's q (after RoPE), k (after RoPE), v,
                          // side by side: the output of one fused GEMM with [Wq; Wk; Wv]
    floatX* att;          // S x N x (nh*hd): attention output before o_proj
    floatX* resid_mid;    // S x N x d: residual after attention
    floatX* ln2;          // S x N x d
    floatX* gu;           // S x N x 2f: each row's gate then up (one fused GEMM with [Wgate; Wup])
    floatX* hmlp;         // S x N x f: silu(gate) * up
    float* rstd1;         // S x N
    float* rstd2;         // S x N
    float* lse;           // S x B x nh x T
    floatX* lnf;          // N x d
    float* rstdf;         // N
    floatX* logits;       // N x V (dlogits after the backward's classifier)
    float* losses;        // N
    // backward scratch
    floatX* dresid;       // N x d
    floatX* dln;          // N x d
    floatX* dqkv;         // N x (nh + 2 nkv)*hd, laid out as qkv
    floatX* datt;         // N x (nh*hd)
    floatX* dgu;          // N x 2f, laid out as gu
    floatX* dh;           // N x f
    int* d_tokens;        // 2N: a forward's N inputs, then its N targets (one upload)
    int* d_targets;       // d_tokens + N of the last forward
    float* rope_cos;      // max_seq x hd/2
    float* rope_sin;      // max_seq x hd/2
    float* h_losses;      // N, host copy of losses
    int* h_tokens;        // 2N, the host side of d_tokens (inputs and targets packed for one upload)
    size_t activation_bytes;  // the sum of llama_buffers (what the memory plan counts)
} Llama;

static floatX* param_ptr(Llama* m, int tensor) { return m->params + m->pt.t[tensor].offset; }

// The ffn padding's multiple (llama_ffn_stored): the backend's (1 on the CPU, 64 on the GPU) unless
// set, before any model or plan is built (train_llama's --ffn-align; tests)
static int g_llama_ffn_align = 0;
static int llama_ffn_align(void) { return g_llama_ffn_align > 0 ? g_llama_ffn_align : backend_ffn_align(); }

// One tensor between the host, in its Hugging Face layout (numel_hf values), and the backend's
// stored layout (llama_params.h: param_to_stored; the padding is written as zeros)
static void llama_upload_tensor(Llama* m, int i, const float* hf) {
    const ParamTensor* t = &m->pt.t[i];
    if (t->numel == t->numel_hf) { backend_upload_floats(m->params + t->offset, hf, t->numel); return; }
    float* st = (float*)malloc_check(t->numel * sizeof(float));
    param_to_stored(t, hf, st);
    backend_upload_floats(m->params + t->offset, st, t->numel);
    free(st);
}
static void llama_download_tensor(Llama* m, int i, float* hf) {
    const ParamTensor* t = &m->pt.t[i];
    if (t->numel == t->numel_hf) { backend_download_floats(hf, m->params + t->offset, t->numel); return; }
    float* st = (float*)malloc_check(t->numel * sizeof(float));
    backend_download_floats(st, m->params + t->offset, t->numel);
    param_from_stored(t, st, hf);
    free(st);
}

// Every activation buffer, in allocation order: where its pointer lives, its element type,
// its element count for a batch of B x T, and the label an allocation failure names. One line
// per buffer; llama_build allocates from it, llama_free frees from it, and the memory plan sums
// it (llama_activation_bytes), so the plan is what the model allocates by construction.
typedef enum { DT_FLOATX = 0, DT_FLOAT = 1, DT_INT = 2 } BufferDtype;
static size_t buffer_dtype_size(int dt) { return dt == DT_FLOATX ? sizeof(floatX) : dt == DT_FLOAT ? sizeof(float) : sizeof(int); }
typedef struct { void** ptr; int dtype; size_t count; const char* label; } BufferSpec;
#define LLAMA_MAX_BUFFERS 40

static int llama_buffers(Llama* m, const LlamaConfig* c, int B, int T, int recompute, BufferSpec* s) {
    size_t N = (size_t)B * T, d = c->dim, f = llama_ffn_stored(c, llama_ffn_align()), L = c->n_layers, S = recompute ? 1 : L;
    size_t hd = llama_head_dim(c), qd = c->n_heads * hd, qkvd = qd + 2 * c->n_kv_heads * hd, V = c->vocab_size;
    size_t rope = (size_t)c->max_seq_len * (hd / 2), lse = S * (size_t)B * c->n_heads * T;
    int n = 0;
#define BUF(field, dt, count, label) s[n++] = (BufferSpec){(void**)&m->field, dt, (size_t)(count), label}
    BUF(resid,     DT_FLOATX, (L + 1) * N * d, "activations (residual)");
    BUF(ln1,       DT_FLOATX, S * N * d,   "activations (ln1)");
    BUF(qkv,       DT_FLOATX, S * N * qkvd, "activations (q, k, v)");
    BUF(att,       DT_FLOATX, S * N * qd,  "activations (attention)");
    BUF(resid_mid, DT_FLOATX, S * N * d,   "activations (residual)");
    BUF(ln2,       DT_FLOATX, S * N * d,   "activations (ln2)");
    BUF(gu,        DT_FLOATX, S * N * 2 * f, "activations (gate, up)");
    BUF(hmlp,      DT_FLOATX, S * N * f,   "activations (mlp)");
    BUF(rstd1,     DT_FLOAT,  S * N,       "activations (rstd)");
    BUF(rstd2,     DT_FLOAT,  S * N,       "activations (rstd)");
    BUF(lse,       DT_FLOAT,  lse,         "activations (lse)");
    BUF(lnf,       DT_FLOATX, N * d,       "activations (final norm)");
    BUF(rstdf,     DT_FLOAT,  N,           "activations (rstd)");
    BUF(logits,    DT_FLOATX, N * V,       "logits");
    BUF(losses,    DT_FLOAT,  N,           "losses");
    BUF(dresid,    DT_FLOATX, N * d,       "backward scratch");
    BUF(dln,       DT_FLOATX, N * d,       "backward scratch");
    BUF(dqkv,      DT_FLOATX, N * qkvd,    "backward scratch");
    BUF(datt,      DT_FLOATX, N * qd,      "backward scratch");
    BUF(dgu,       DT_FLOATX, N * 2 * f,   "backward scratch");
    BUF(dh,        DT_FLOATX, N * f,       "backward scratch");
    BUF(d_tokens,  DT_INT,    2 * N,       "tokens and targets");
    BUF(rope_cos,  DT_FLOAT,  rope,        "rope tables");
    BUF(rope_sin,  DT_FLOAT,  rope,        "rope tables");
#undef BUF
    return n;
}

// bytes of activations and scratch for a batch of B x T: the sum of the table (the memory plan)
static size_t llama_activation_bytes(const LlamaConfig* c, int B, int T, int recompute) {
    Llama shape;  // only the table's counts are read; no buffer is touched
    BufferSpec s[LLAMA_MAX_BUFFERS];
    memset(s, 0, sizeof(s));  // (gcc cannot see that llama_buffers fills the first n)
    int n = llama_buffers(&shape, c, B, T, recompute, s);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += s[i].count * buffer_dtype_size(s[i].dtype);
    return bytes;
}

// The fused GEMMs read [Wq; Wk; Wv] and [Wgate; Wup] as one matrix each: the parameter table must
// keep each group's weights adjacent, in that order (llama_params.h does)
static void llama_check_group(const ParamTable* pt, const int* ids, int n) {
    for (int i = 1; i < n; i++) {
        const ParamTensor *a = &pt->t[ids[i - 1]], *b = &pt->t[ids[i]];
        if (b->offset != a->offset + a->numel || b->cols != a->cols)
            fatal("internal: '%s' does not follow '%s' in the parameter buffer; the fused GEMMs need them adjacent", b->name, a->name);
    }
}
static void llama_check_fused(const ParamTable* pt, const LlamaConfig* c) {
    for (int l = 0; l < c->n_layers; l++) {
        const LayerTensors* lt = &pt->layer[l];
        int qkv[3] = {lt->wq, lt->wk, lt->wv}, gu[2] = {lt->wgate, lt->wup};
        llama_check_group(pt, qkv, 3);
        llama_check_group(pt, gu, 2);
    }
}

static void llama_build(Llama* m, const LlamaConfig* c, int B, int T, int recompute) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->B = B; m->T = T;
    m->recompute = recompute;
    param_table_build(&m->pt, c, llama_ffn_align());
    llama_check_fused(&m->pt, c);
    m->params = (floatX*)backend_malloc(m->pt.total * sizeof(floatX), "parameters");
    BufferSpec s[LLAMA_MAX_BUFFERS];
    int n = llama_buffers(m, c, B, T, recompute, s);
    for (int i = 0; i < n; i++) *s[i].ptr = backend_malloc(s[i].count * buffer_dtype_size(s[i].dtype), s[i].label);
    size_t N = (size_t)B * T, hd = llama_head_dim(c);
    m->activation_bytes = llama_activation_bytes(c, B, T, recompute);
    m->h_losses = (float*)malloc_check(N * sizeof(float));
    m->h_tokens = (int*)malloc_check(2 * N * sizeof(int));
    // RoPE tables in fp32, computed in double: inv_freq_i = theta^(-2i/hd), as HF computes them
    size_t half = hd / 2;
    float* cs = (float*)malloc_check((size_t)c->max_seq_len * half * sizeof(float));
    float* sn = (float*)malloc_check((size_t)c->max_seq_len * half * sizeof(float));
    for (int t = 0; t < c->max_seq_len; t++) {
        for (size_t i = 0; i < half; i++) {
            float inv_freq = (float)(1.0 / pow((double)c->rope_theta, (double)(2 * i) / (double)hd));
            float ang = (float)t * inv_freq;  // fp32 product, as HF forms freqs
            cs[t * half + i] = cosf(ang);
            sn[t * half + i] = sinf(ang);
        }
    }
    backend_upload(m->rope_cos, cs, (size_t)c->max_seq_len * half * sizeof(float));
    backend_upload(m->rope_sin, sn, (size_t)c->max_seq_len * half * sizeof(float));
    free(cs); free(sn);
}

static void llama_free(Llama* m) {
    BufferSpec s[LLAMA_MAX_BUFFERS];
    int n = llama_buffers(m, &m->config, m->B, m->T, m->recompute, s);
    backend_free(m->params);
    for (int i = 0; i < n; i++) backend_free(*s[i].ptr);
    free(m->h_losses);
    free(m->h_tokens);
    param_table_free(&m->pt);
}

// LLaMA's initialization as in HF (normal(0, 0.02) for matrices, ones for norms), from a seed.
// Counter-based: each pair of values comes from a hash of (seed, tensor, pair) (rng.h's
// rng_init_pair), so the values depend neither on the thread count nor on the build. The backend
// draws them where they are stored (param_init_tensor: on the GPU a kernel, with no host copy of
// the weights), in the Hugging Face layout, so a padded model starts from the same weights; and
// its arithmetic rounds identically on the CPU and the GPU, so both builds start from the same
// fp32 values, bit for bit (the GPU's bf16 build stores them rounded to nearest).
// hash (may be NULL): [0] the hash of the fp32 values drawn, [1] of those values rounded to bf16,
// each over the Hugging Face layout in table order (rng_hash_term); equal on every build.
// llama_init_tensor: tensor i's values into dst (its stored layout); first: the hash index of its
// first value (the Hugging Face sizes of the tensors before it). dev/init_hash.c calls it alone.
static void llama_init_tensor(const ParamTable* pt, int i, uint64_t seed, uint64_t first, floatX* dst, uint64_t hash[2]) {
    const ParamTensor* t = &pt->t[i];
    ParamInit p;
    p.rows = t->rows; p.cols = t->cols; p.rows_hf = t->rows_hf; p.cols_hf = t->cols_hf;
    p.key = rng_seed_for(seed, 0x1417, (uint64_t)i);
    p.std = t->kind == PT_NORM ? 0.0 : 0.02;
    p.fill = 1.0f;
    p.first = first;
    param_init_tensor(dst, &p, hash);
}
static void llama_init_random(Llama* m, uint64_t seed, uint64_t hash[2]) {
    uint64_t h[2] = {0, 0}, first = 0;
    for (int i = 0; i < m->pt.n; i++) {
        llama_init_tensor(&m->pt, i, seed, first, m->params + m->pt.t[i].offset, h);
        first += m->pt.t[i].numel_hf;
    }
    if (hash != NULL) { hash[0] = h[0]; hash[1] = h[1]; }
}

// One layer's activations for a batch of B x T (layer l's slice of each per-layer buffer;
// with recomputation every layer but the residual stream uses slot 0).
typedef struct {
    floatX *x, *ln1, *qkv, *att, *mid, *ln2, *gu, *h;
    float *rstd1, *rstd2, *lse;
} LayerActs;

static LayerActs layer_acts(Llama* m, int l, int B, int T) {
    const LlamaConfig* c = &m->config;
    size_t N = (size_t)B * T, hd = llama_head_dim(c);
    size_t Nd = N * c->dim, Nf = N * m->pt.ffn_stored, Nq = N * c->n_heads * hd, Nqkv = Nq + 2 * N * c->n_kv_heads * hd;
    size_t s = m->recompute ? 0 : (size_t)l;
    LayerActs a;
    a.x = m->resid + l * Nd;      a.ln1 = m->ln1 + s * Nd;
    a.qkv = m->qkv + s * Nqkv;    a.att = m->att + s * Nq;
    a.mid = m->resid_mid + s * Nd; a.ln2 = m->ln2 + s * Nd;
    a.gu = m->gu + s * 2 * Nf;    a.h = m->hmlp + s * Nf;
    a.rstd1 = m->rstd1 + s * N;   a.rstd2 = m->rstd2 + s * N;
    a.lse = m->lse + s * (size_t)B * c->n_heads * T;
    return a;
}

// The sizes a layer's forward and backward work with: N = B*T rows of width d, the stored ffn
// width f, the head dimension hd, and the widths of q, of k (= of v) and of the fused [q; k; v]
typedef struct { int N, d, f, hd, qd, kvd, qkvd; size_t Nd; } LayerShape;
static LayerShape layer_shape(const Llama* m, int B, int T) {
    const LlamaConfig* c = &m->config;
    LayerShape s;
    s.N = B * T; s.d = c->dim; s.f = m->pt.ffn_stored; s.hd = llama_head_dim(c);
    s.qd = c->n_heads * s.hd; s.kvd = c->n_kv_heads * s.hd; s.qkvd = s.qd + 2 * s.kvd;
    s.Nd = (size_t)s.N * s.d;
    return s;
}

// Layer l's forward from its input A.x (the residual stream). With write_out, also its output
// (the next layer's input); the backward's recomputation refills the activations only.
static void layer_forward(Llama* m, int l, int B, int T, int write_out) {
    const LlamaConfig* c = &m->config;
    const LayerShape S = layer_shape(m, B, T);
    const LayerTensors* lt = &m->pt.layer[l];
    LayerActs A = layer_acts(m, l, B, T);
    floatX *q = A.qkv, *k = A.qkv + S.qd, *v = A.qkv + S.qd + S.kvd;  // rows S.qkvd apart
    rmsnorm_forward(A.ln1, A.rstd1, A.x, param_ptr(m, lt->attn_norm), S.N, S.d, c->norm_eps);
    matmul_forward(A.qkv, A.ln1, param_ptr(m, lt->wq), S.N, S.d, S.qkvd);  // [Wq; Wk; Wv] (adjacent): one GEMM
    rope_qk(q, k, S.qkvd, S.qkvd, m->rope_cos, m->rope_sin, B, T, c->n_heads, c->n_kv_heads, S.hd, 0);
    attention_forward(A.att, A.lse, q, k, v, S.qkvd, S.qkvd, B, T, c->n_heads, c->n_kv_heads, S.hd);
    matmul_forward_residual(A.mid, A.att, param_ptr(m, lt->wo), A.x, S.N, S.qd, S.d);  // mid = x + att Wo^T
    rmsnorm_forward(A.ln2, A.rstd2, A.mid, param_ptr(m, lt->mlp_norm), S.N, S.d, c->norm_eps);
    matmul_forward(A.gu, A.ln2, param_ptr(m, lt->wgate), S.N, S.d, 2 * S.f);  // [Wgate; Wup] (adjacent): one GEMM
    swiglu_forward(A.h, A.gu, S.N, S.f);
    if (!write_out) return;
    floatX* out = m->resid + (size_t)(l + 1) * S.Nd;
    matmul_forward_residual(out, A.h, param_ptr(m, lt->wdown), A.mid, S.N, S.f, S.d);  // out = mid + h Wdown^T
}

// The forward pass's work, queued without a host sync: inputs and targets go up in one
// asynchronous copy, the losses stay on the backend (m->losses).
static void llama_forward_queue(Llama* m, const int* inputs, const int* targets, int B, int T, int want_grad, float dloss) {
    const LlamaConfig* c = &m->config;
    if (B > m->B || T > m->T) fatal("forward with B=%d T=%d exceeds the allocated B=%d T=%d", B, T, m->B, m->T);
    if (T > c->max_seq_len) fatal("sequence length %d exceeds the model's max_seq_len %d", T, c->max_seq_len);
    int N = B * T, d = c->dim;
    size_t Nd = (size_t)N * d;
    memcpy(m->h_tokens, inputs, N * sizeof(int));
    memcpy(m->h_tokens + N, targets, N * sizeof(int));
    m->d_targets = m->d_tokens + N;
    backend_upload_async(m->d_tokens, m->h_tokens, 2 * (size_t)N * sizeof(int));
    embedding_forward(m->resid, m->d_tokens, param_ptr(m, m->pt.embed), N, d);
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, l, B, T, 1);
    floatX* last = m->resid + (size_t)c->n_layers * Nd;
    rmsnorm_forward(m->lnf, m->rstdf, last, param_ptr(m, m->pt.final_norm), N, d, c->norm_eps);
    matmul_forward(m->logits, m->lnf, param_ptr(m, m->pt.lm_head), N, d, c->vocab_size);
    classifier_forward_backward(m->logits, m->losses, m->d_targets, N, c->vocab_size, dloss, want_grad);
}

// Forward pass over B x T tokens (B <= m->B, T <= m->T). Fills losses for every position.
// With want_grad, logits are turned into dlogits scaled by dloss, ready for the backward.
// Returns the mean loss over the B*T positions of this process (a host sync: evaluation, tests).
static float llama_forward(Llama* m, const int* inputs, const int* targets, int B, int T, int want_grad, float dloss) {
    llama_forward_queue(m, inputs, targets, B, T, want_grad, dloss);
    int N = B * T;
    backend_download(m->h_losses, m->losses, N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->h_losses[i];
    return (float)(sum / N);
}

// The training forward: no host sync. The micro-batch's mean loss is added on the backend to
// *d_loss_acc (a backend double, read once per step with the gradient norm; optim_loss_acc),
// or not kept when d_loss_acc is NULL (the refresh's norm pass). The sum is llama_forward's
// (the CPU backend adds the same float, bit for bit).
static void llama_forward_train(Llama* m, const int* inputs, const int* targets, int B, int T, float dloss, double* d_loss_acc) {
    llama_forward_queue(m, inputs, targets, B, T, 1, dloss);
    if (d_loss_acc != NULL) loss_accumulate(d_loss_acc, m->losses, B * T);
}

// Backward pass after llama_forward(..., want_grad=1). Weight gradients go to the optimizer
// through grad_sink.h (dense dW, Grass's compressed C, or row norms during a refresh's norm pass).
static void llama_backward(Llama* m, Optimizer* o, int B, int T) {
    const LlamaConfig* c = &m->config;
    const LayerShape S = layer_shape(m, B, T);
    // classifier: dlnf = dlogits W_head, dW_head += dlogits^T lnf
    matmul_backward_input(m->dln, m->logits, param_ptr(m, m->pt.lm_head), S.N, S.d, c->vocab_size, 0);
    grad_linear(o, m->pt.lm_head, m->logits, c->vocab_size, m->lnf, S.N);
    backend_memset0(m->dresid, S.Nd * sizeof(floatX));
    rmsnorm_backward(m->dresid, grad_dense(o, m->pt.final_norm), m->dln,
                     m->resid + (size_t)c->n_layers * S.Nd, param_ptr(m, m->pt.final_norm), m->rstdf, S.N, S.d);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerTensors* lt = &m->pt.layer[l];
        if (m->recompute) layer_forward(m, l, B, T, 0);  // refill the layer's activations
        LayerActs A = layer_acts(m, l, B, T);
        floatX *x = A.x, *ln1 = A.ln1, *att = A.att, *mid = A.mid, *ln2 = A.ln2, *h = A.h;
        floatX *q = A.qkv, *k = A.qkv + S.qd, *v = A.qkv + S.qd + S.kvd;                // rows S.qkvd apart
        floatX *dq = m->dqkv, *dk = m->dqkv + S.qd, *dv = m->dqkv + S.qd + S.kvd;
        // MLP: out = mid + down(silu(gate(ln2)) * up(ln2)), gate and up from one fused GEMM
        matmul_backward_input(m->dh, m->dresid, param_ptr(m, lt->wdown), S.N, S.f, S.d, 0);
        grad_linear(o, lt->wdown, m->dresid, S.d, h, S.N);
        swiglu_backward(m->dgu, m->dh, A.gu, S.N, S.f);
        matmul_backward_input(m->dln, m->dgu, param_ptr(m, lt->wgate), S.N, S.d, 2 * S.f, 0);  // dln = dgu [Wgate; Wup]
        grad_linears(o, lt->wgate, 2, m->dgu, ln2, S.N);
        rmsnorm_backward(m->dresid, grad_dense(o, lt->mlp_norm), m->dln, mid,
                         param_ptr(m, lt->mlp_norm), A.rstd2, S.N, S.d);
        // attention: mid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))), q, k, v from one fused GEMM
        matmul_backward_input(m->datt, m->dresid, param_ptr(m, lt->wo), S.N, S.qd, S.d, 0);
        grad_linear(o, lt->wo, m->dresid, S.d, att, S.N);
        attention_backward(dq, dk, dv, m->datt, att, q, k, v, S.qkvd, S.qkvd, A.lse, B, T, c->n_heads, c->n_kv_heads,
                           S.hd);
        rope_qk(dq, dk, S.qkvd, S.qkvd, m->rope_cos, m->rope_sin, B, T, c->n_heads, c->n_kv_heads, S.hd, 1);
        matmul_backward_input(m->dln, m->dqkv, param_ptr(m, lt->wq), S.N, S.d, S.qkvd, 0);  // dln = dqkv [Wq; Wk; Wv]
        grad_linears(o, lt->wq, 3, m->dqkv, ln1, S.N);
        rmsnorm_backward(m->dresid, grad_dense(o, lt->attn_norm), m->dln, x,
                         param_ptr(m, lt->attn_norm), A.rstd1, S.N, S.d);
        grad_layer_done(o, l);  // fused Grass: this layer's projected weights are updated now
    }
    GradBuf dwte = grad_dense(o, m->pt.embed);
    if (dwte.p != NULL) embedding_backward(dwte, m->dresid, m->d_tokens, S.N, S.d);
}

// ----------------------------------------------------------------------------------------------
// checkpoints: model file (docs/FORMATS.md) and training-state file

static void checkpoint_header(const LlamaConfig* c, int32_t h[64], int dtype, int64_t step) {
    memset(h, 0, 64 * sizeof(int32_t));
    h[CKPT_H_MAGIC] = MODEL_MAGIC; h[CKPT_H_VERSION] = CHECKPOINT_VERSION;
    h[CKPT_H_VOCAB] = c->vocab_size; h[CKPT_H_DIM] = c->dim; h[CKPT_H_FFN] = c->ffn_dim;
    h[CKPT_H_LAYERS] = c->n_layers; h[CKPT_H_HEADS] = c->n_heads; h[CKPT_H_KV_HEADS] = c->n_kv_heads;
    h[CKPT_H_MAX_SEQ] = c->max_seq_len; h[CKPT_H_TIED] = c->tie_embeddings;
    h[CKPT_H_DTYPE] = dtype;
    memcpy(&h[CKPT_H_NORM_EPS], &c->norm_eps, sizeof(float));
    memcpy(&h[CKPT_H_ROPE_THETA], &c->rope_theta, sizeof(float));
    h[CKPT_H_STEP] = (int32_t)step;
}

// reads a model file's header; exits with a clear message if it is not one of ours. Returns 1 when
// the file ends in a checksum trailer (h[CKPT_HAS_CHECKSUM]), 0 for files written before them.
static int checkpoint_read_header(const char* path, LlamaConfig* c, int* dtype, int64_t* step) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[64];
    fread_check(h, sizeof(int32_t), 64, f, path);
    fclose_check(f, path);
    if (h[CKPT_H_MAGIC] != MODEL_MAGIC)
        fatal("'%s' is not a grass.c model checkpoint (magic %d, expected %d)", path, h[CKPT_H_MAGIC], MODEL_MAGIC);
    if (h[CKPT_H_VERSION] != CHECKPOINT_VERSION)
        fatal("'%s' has checkpoint version %d; this build reads version %d", path, h[CKPT_H_VERSION],
              CHECKPOINT_VERSION);
    if (h[CKPT_H_DTYPE] != 0 && h[CKPT_H_DTYPE] != 1)
        fatal("'%s' has unknown parameter dtype %d", path, h[CKPT_H_DTYPE]);
    if (h[CKPT_HAS_CHECKSUM] != 0 && h[CKPT_HAS_CHECKSUM] != 1)
        fatal("'%s' has an unknown checksum flag %d", path, h[CKPT_HAS_CHECKSUM]);
    c->vocab_size = h[CKPT_H_VOCAB]; c->dim = h[CKPT_H_DIM]; c->ffn_dim = h[CKPT_H_FFN]; c->n_layers = h[CKPT_H_LAYERS];
    c->n_heads = h[CKPT_H_HEADS]; c->n_kv_heads = h[CKPT_H_KV_HEADS]; c->max_seq_len = h[CKPT_H_MAX_SEQ];
    c->tie_embeddings = h[CKPT_H_TIED];
    memcpy(&c->norm_eps, &h[CKPT_H_NORM_EPS], sizeof(float));
    memcpy(&c->rope_theta, &h[CKPT_H_ROPE_THETA], sizeof(float));
    *dtype = h[CKPT_H_DTYPE];
    *step = h[CKPT_H_STEP];
    char err[256];
    if (!llama_config_validate(c, err, sizeof(err))) fatal("'%s' holds an invalid config: %s", path, err);
    return h[CKPT_HAS_CHECKSUM];
}

// Writes the parameters in the backend's precision (fp32 on the CPU, bf16 on a bf16 GPU build),
// to path.tmp first, with a checksum trailer (checksum.h), renamed over path only once complete.
static void checkpoint_save_model(Llama* m, const char* path, int64_t step) {
    char tmp[1100];
    int dtype = sizeof(floatX) == 2 ? 1 : 0;
    int32_t h[64];
    checkpoint_header(&m->config, h, dtype, step);
    h[CKPT_HAS_CHECKSUM] = 1;
    FILE* f = ckpt_file_open(path, tmp, sizeof(tmp));
    fwrite_check(h, sizeof(int32_t), 64, f, tmp);
    // tensor by tensor in the Hugging Face shapes (a padded tensor loses its zero padding), in
    // chunks of at most 16M values
    const size_t chunk = (size_t)1 << 24;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    uint16_t* b16 = (uint16_t*)malloc_check(chunk * sizeof(uint16_t));
    for (int ti = 0; ti < m->pt.n; ti++) {
        const ParamTensor* t = &m->pt.t[ti];
        float* hf = NULL;
        if (t->numel != t->numel_hf) { hf = (float*)malloc_check(t->numel_hf * sizeof(float)); llama_download_tensor(m, ti, hf); }
        for (size_t off = 0; off < t->numel_hf; off += chunk) {
            size_t n = t->numel_hf - off < chunk ? t->numel_hf - off : chunk;
            if (hf != NULL) memcpy(buf, hf + off, n * sizeof(float));
            else backend_download_floats(buf, m->params + t->offset + off, n);
            if (dtype == 0) fwrite_check(buf, sizeof(float), n, f, tmp);
            else { for (size_t i = 0; i < n; i++) b16[i] = bf16_from_float(buf[i]); fwrite_check(b16, 2, n, f, tmp); }
        }
        free(hf);
    }
    free(buf); free(b16);
    ckpt_file_commit(f, tmp, path);
}

// Loads parameters from a model file whose config must equal the model's. Its checksum trailer
// is checked here unless crc_checked says the caller has done it (the resume path's
// find_resume_checkpoint, which must check before it chooses), so no file is read twice for it.
static void checkpoint_load_model(Llama* m, const char* path, int crc_checked) {
    LlamaConfig c; int dtype; int64_t step;
    int has_checksum = checkpoint_read_header(path, &c, &dtype, &step);
    if (!llama_config_equal(&c, &m->config)) {
        fprintf(stderr, "checkpoint:  "); llama_config_print(&c, stderr);
        fprintf(stderr, "this run:    "); llama_config_print(&m->config, stderr);
        fatal("'%s' was written for another model config (above); use the same -c/model flags", path);
    }
    size_t bytes = dtype == 0 ? 4 : 2;
    int64_t want = 256 + (int64_t)m->pt.total_hf * bytes + (has_checksum ? CRC_TRAILER_BYTES : 0), have = file_size_check(path);
    if (have != want) fatal("'%s' is %lld bytes, but its config needs %lld: truncated or corrupt", path, (long long)have, (long long)want);
    if (has_checksum && !crc_checked) file_verify_checksum_or_die(path);
    FILE* f = fopen_check(path, "rb");
    fseek_check(f, 256, SEEK_SET, path);
    const size_t chunk = (size_t)1 << 24;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    uint16_t* b16 = (uint16_t*)malloc_check(chunk * sizeof(uint16_t));
    for (int ti = 0; ti < m->pt.n; ti++) {  // the file holds the Hugging Face shapes (checkpoint_save_model)
        const ParamTensor* t = &m->pt.t[ti];
        float* hf = t->numel != t->numel_hf ? (float*)malloc_check(t->numel_hf * sizeof(float)) : NULL;
        for (size_t off = 0; off < t->numel_hf; off += chunk) {
            size_t n = t->numel_hf - off < chunk ? t->numel_hf - off : chunk;
            if (dtype == 0) fread_check(buf, sizeof(float), n, f, path);
            else { fread_check(b16, 2, n, f, path); for (size_t i = 0; i < n; i++) buf[i] = bf16_to_float(b16[i]); }
            if (hf != NULL) memcpy(hf + off, buf, n * sizeof(float));
            else backend_upload_floats(m->params + t->offset + off, buf, n);
        }
        if (hf != NULL) { llama_upload_tensor(m, ti, hf); free(hf); }
    }
    free(buf); free(b16);
    fclose_check(f, path);
}

#endif // GRASS_LLAMA_MODEL_H
