/*
 * train_llama.cu: LLaMA pretraining with full-rank AdamW or Grass, for the CPU and the GPU.
 *
 * The model (parameters, activations, forward, backward), the training loop, checkpoints and
 * data-parallel logic are written once, here. The kernels come from a backend:
 *   nvcc  -> backend_cuda.cuh  (bf16, cuBLASLt, NCCL)      make train_llama
 *   g++   -> backend_cpu.h     (fp32, OpenMP, OpenBLAS, MPI) make train_llama_cpu
 * Tests include this file with TESTING defined, so main() drops out.
 */
#include <time.h>
#include <unistd.h>
#include "utils.h"
#include "llama_config.h"
#include "llama_params.h"
#include "backend.h"
#ifdef __CUDACC__
#include "backend_cuda.cuh"
#else
#include "backend_cpu.h"
#endif
#include "comm.h"
#include "grass_optim.cuh"
#include "dataloader.h"
#include "tokenizer.h"

#define MODEL_MAGIC 20261102
#define STATE_MAGIC 20261103
#define CHECKPOINT_VERSION 1

// ----------------------------------------------------------------------------------------------
// the model

typedef struct {
    LlamaConfig config;
    ParamTable pt;
    floatX* params;       // all parameters, one buffer, table order
    int B, T;             // the largest batch the activations were sized for
    int recompute;        // activation recomputation: only the residual stream is kept for every
                          // layer; the rest has one slot (S = 1) that the backward pass refills
                          // by running each layer's forward again. Otherwise S = L.
    // activations, per layer l at offset l*N*width (slot 0 for every layer with recompute)
    floatX* resid;        // (L+1) x N x d: the residual stream entering each layer, and the last one
    floatX* ln1;          // S x N x d
    floatX* q;            // S x N x (nh*hd), after RoPE
    floatX* k;            // S x N x (nkv*hd), after RoPE
    floatX* v;            // S x N x (nkv*hd)
    floatX* att;          // S x N x (nh*hd): attention output before o_proj
    floatX* resid_mid;    // S x N x d: residual after attention
    floatX* ln2;          // S x N x d
    floatX* gate;         // S x N x f
    floatX* up;           // S x N x f
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
    floatX* dq;           // N x (nh*hd)
    floatX* dk;           // N x (nkv*hd)
    floatX* dv;           // N x (nkv*hd)
    floatX* datt;         // N x (nh*hd)
    floatX* dgate;        // N x f
    floatX* dup;          // N x f
    floatX* dh;           // N x f
    int* d_tokens;        // N
    int* d_targets;       // N
    float* rope_cos;      // max_seq x hd/2
    float* rope_sin;
    float* h_losses;      // host copy of losses
    size_t activation_bytes;
} Llama;

static floatX* param_ptr(Llama* m, int tensor) { return m->params + m->pt.t[tensor].offset; }

// bytes of activations and scratch for a batch of B x T (the memory plan uses the same sums)
static size_t llama_activation_bytes(const LlamaConfig* c, int B, int T, int recompute) {
    size_t N = (size_t)B * T, d = c->dim, f = c->ffn_dim, L = c->n_layers, S = recompute ? 1 : L;
    size_t hd = llama_head_dim(c), qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t fx = 0;
    fx += (L + 1) * N * d;                          // resid
    fx += S * N * (d + qd + 2 * kvd + qd + d + d + 3 * f);  // ln1 q k v att resid_mid ln2 gate up hmlp
    fx += N * d + N * c->vocab_size;               // lnf, logits
    fx += N * (2 * d + 2 * qd + 2 * kvd + 3 * f);  // backward scratch
    size_t fl = 2 * S * N + S * (size_t)B * c->n_heads * T + N + N;  // rstd1 rstd2 lse rstdf losses
    fl += 2 * (size_t)c->max_seq_len * (hd / 2);
    return fx * sizeof(floatX) + fl * sizeof(float) + 2 * N * sizeof(int);
}

static void llama_build(Llama* m, const LlamaConfig* c, int B, int T, int recompute) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->B = B; m->T = T;
    m->recompute = recompute;
    param_table_build(&m->pt, c);
    m->params = (floatX*)backend_malloc(m->pt.total * sizeof(floatX), "parameters");
    size_t N = (size_t)B * T, d = c->dim, f = c->ffn_dim, L = c->n_layers, S = recompute ? 1 : L;
    size_t hd = llama_head_dim(c), qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
#define ALLOC(ptr, type, n, what) ptr = (type*)backend_malloc((size_t)(n) * sizeof(type), what)
    ALLOC(m->resid, floatX, (L + 1) * N * d, "activations (residual)");
    ALLOC(m->ln1, floatX, S * N * d, "activations (ln1)");
    ALLOC(m->q, floatX, S * N * qd, "activations (q)");
    ALLOC(m->k, floatX, S * N * kvd, "activations (k)");
    ALLOC(m->v, floatX, S * N * kvd, "activations (v)");
    ALLOC(m->att, floatX, S * N * qd, "activations (attention)");
    ALLOC(m->resid_mid, floatX, S * N * d, "activations (residual)");
    ALLOC(m->ln2, floatX, S * N * d, "activations (ln2)");
    ALLOC(m->gate, floatX, S * N * f, "activations (gate)");
    ALLOC(m->up, floatX, S * N * f, "activations (up)");
    ALLOC(m->hmlp, floatX, S * N * f, "activations (mlp)");
    ALLOC(m->rstd1, float, S * N, "activations (rstd)");
    ALLOC(m->rstd2, float, S * N, "activations (rstd)");
    ALLOC(m->lse, float, S * (size_t)B * c->n_heads * T, "activations (lse)");
    ALLOC(m->lnf, floatX, N * d, "activations (final norm)");
    ALLOC(m->rstdf, float, N, "activations (rstd)");
    ALLOC(m->logits, floatX, N * c->vocab_size, "logits");
    ALLOC(m->losses, float, N, "losses");
    ALLOC(m->dresid, floatX, N * d, "backward scratch");
    ALLOC(m->dln, floatX, N * d, "backward scratch");
    ALLOC(m->dq, floatX, N * qd, "backward scratch");
    ALLOC(m->dk, floatX, N * kvd, "backward scratch");
    ALLOC(m->dv, floatX, N * kvd, "backward scratch");
    ALLOC(m->datt, floatX, N * qd, "backward scratch");
    ALLOC(m->dgate, floatX, N * f, "backward scratch");
    ALLOC(m->dup, floatX, N * f, "backward scratch");
    ALLOC(m->dh, floatX, N * f, "backward scratch");
    ALLOC(m->d_tokens, int, N, "tokens");
    ALLOC(m->d_targets, int, N, "targets");
    ALLOC(m->rope_cos, float, (size_t)c->max_seq_len * (hd / 2), "rope tables");
    ALLOC(m->rope_sin, float, (size_t)c->max_seq_len * (hd / 2), "rope tables");
#undef ALLOC
    m->activation_bytes = llama_activation_bytes(c, B, T, recompute);
    m->h_losses = (float*)malloc_check(N * sizeof(float));
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
    void* ptrs[] = {m->params, m->resid, m->ln1, m->q, m->k, m->v, m->att, m->resid_mid, m->ln2, m->gate, m->up,
                    m->hmlp, m->rstd1, m->rstd2, m->lse, m->lnf, m->rstdf, m->logits, m->losses, m->dresid, m->dln,
                    m->dq, m->dk, m->dv, m->datt, m->dgate, m->dup, m->dh, m->d_tokens, m->d_targets,
                    m->rope_cos, m->rope_sin};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) backend_free(ptrs[i]);
    free(m->h_losses);
    param_table_free(&m->pt);
}

// LLaMA's initialization as in HF (normal(0, 0.02) for matrices, ones for norms), from a seed.
// Counter-based (each pair of values from a hash of (seed, tensor, pair)), so the values do not
// depend on the thread count and a 13b model initializes in seconds.
static void llama_init_random(Llama* m, uint64_t seed) {
    float* host = (float*)malloc_check(m->pt.total * sizeof(float));
    for (int i = 0; i < m->pt.n; i++) {
        ParamTensor* t = &m->pt.t[i];
        float* p = host + t->offset;
        if (t->kind == PT_NORM) { for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f; continue; }
        uint64_t base = rng_seed_for(seed, 0x1417, (uint64_t)i);
        size_t pairs = (t->numel + 1) / 2;
        #pragma omp parallel for schedule(static)
        for (size_t k = 0; k < pairs; k++) {  // Box-Muller
            uint64_t s = base ^ (k * 0xD1B54A32D192ED03ULL);
            double u1 = rng_uniform01(&s), u2 = rng_uniform01(&s);
            if (u1 < 1e-300) u1 = 1e-300;
            double rad = sqrt(-2.0 * log(u1));
            p[2 * k] = (float)(0.02 * rad * cos(2.0 * M_PI * u2));
            if (2 * k + 1 < t->numel) p[2 * k + 1] = (float)(0.02 * rad * sin(2.0 * M_PI * u2));
        }
    }
    backend_upload_floats(m->params, host, m->pt.total);
    free(host);
}

// One layer's activations for a batch of B x T (layer l's slice of each per-layer buffer;
// with recomputation every layer but the residual stream uses slot 0).
typedef struct {
    floatX *x, *ln1, *q, *k, *v, *att, *mid, *ln2, *gate, *up, *h;
    float *rstd1, *rstd2, *lse;
} LayerActs;

static LayerActs layer_acts(Llama* m, int l, int B, int T) {
    const LlamaConfig* c = &m->config;
    size_t N = (size_t)B * T, hd = llama_head_dim(c);
    size_t Nd = N * c->dim, Nf = N * c->ffn_dim, Nq = N * c->n_heads * hd, Nkv = N * c->n_kv_heads * hd;
    size_t s = m->recompute ? 0 : (size_t)l;
    LayerActs a;
    a.x = m->resid + l * Nd;      a.ln1 = m->ln1 + s * Nd;
    a.q = m->q + s * Nq;          a.k = m->k + s * Nkv;         a.v = m->v + s * Nkv;
    a.att = m->att + s * Nq;      a.mid = m->resid_mid + s * Nd; a.ln2 = m->ln2 + s * Nd;
    a.gate = m->gate + s * Nf;    a.up = m->up + s * Nf;        a.h = m->hmlp + s * Nf;
    a.rstd1 = m->rstd1 + s * N;   a.rstd2 = m->rstd2 + s * N;
    a.lse = m->lse + s * (size_t)B * c->n_heads * T;
    return a;
}

// Layer l's forward from its input A.x (the residual stream). With write_out, also its output
// (the next layer's input); the backward's recomputation refills the activations only.
static void layer_forward(Llama* m, int l, int B, int T, int write_out) {
    const LlamaConfig* c = &m->config;
    int N = B * T, d = c->dim, f = c->ffn_dim, hd = llama_head_dim(c);
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t Nd = (size_t)N * d, Nf = (size_t)N * f;
    const LayerTensors* lt = &m->pt.layer[l];
    LayerActs A = layer_acts(m, l, B, T);
    rmsnorm_forward(A.ln1, A.rstd1, A.x, param_ptr(m, lt->attn_norm), N, d, c->norm_eps);
    matmul_forward(A.q, A.ln1, param_ptr(m, lt->wq), N, d, qd);
    matmul_forward(A.k, A.ln1, param_ptr(m, lt->wk), N, d, kvd);
    matmul_forward(A.v, A.ln1, param_ptr(m, lt->wv), N, d, kvd);
    rope_forward(A.q, m->rope_cos, m->rope_sin, B, T, c->n_heads, hd);
    rope_forward(A.k, m->rope_cos, m->rope_sin, B, T, c->n_kv_heads, hd);
    attention_forward(A.att, A.lse, A.q, A.k, A.v, B, T, c->n_heads, c->n_kv_heads, hd);
    matmul_forward(A.mid, A.att, param_ptr(m, lt->wo), N, qd, d);
    add_inplace(A.mid, A.x, Nd);
    rmsnorm_forward(A.ln2, A.rstd2, A.mid, param_ptr(m, lt->mlp_norm), N, d, c->norm_eps);
    matmul_forward(A.gate, A.ln2, param_ptr(m, lt->wgate), N, d, f);
    matmul_forward(A.up, A.ln2, param_ptr(m, lt->wup), N, d, f);
    swiglu_forward(A.h, A.gate, A.up, Nf);
    if (!write_out) return;
    floatX* out = m->resid + (size_t)(l + 1) * Nd;
    matmul_forward(out, A.h, param_ptr(m, lt->wdown), N, f, d);
    add_inplace(out, A.mid, Nd);
}

// Forward pass over B x T tokens (B <= m->B, T <= m->T). Fills losses for every position.
// With want_grad, logits are turned into dlogits scaled by dloss, ready for the backward.
// Returns the mean loss over the B*T positions of this process.
static float llama_forward(Llama* m, const int* inputs, const int* targets, int B, int T, int want_grad, float dloss) {
    const LlamaConfig* c = &m->config;
    if (B > m->B || T > m->T) fatal("forward with B=%d T=%d exceeds the allocated B=%d T=%d", B, T, m->B, m->T);
    if (T > c->max_seq_len) fatal("sequence length %d exceeds the model's max_seq_len %d", T, c->max_seq_len);
    int N = B * T, d = c->dim;
    size_t Nd = (size_t)N * d;
    backend_upload(m->d_tokens, inputs, N * sizeof(int));
    backend_upload(m->d_targets, targets, N * sizeof(int));
    embedding_forward(m->resid, m->d_tokens, param_ptr(m, m->pt.embed), N, d);
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, l, B, T, 1);
    floatX* last = m->resid + (size_t)c->n_layers * Nd;
    rmsnorm_forward(m->lnf, m->rstdf, last, param_ptr(m, m->pt.final_norm), N, d, c->norm_eps);
    matmul_forward(m->logits, m->lnf, param_ptr(m, m->pt.lm_head), N, d, c->vocab_size);
    classifier_forward_backward(m->logits, m->losses, m->d_targets, N, c->vocab_size, dloss, want_grad);
    backend_download(m->h_losses, m->losses, N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += m->h_losses[i];
    return (float)(sum / N);
}

// Backward pass after llama_forward(..., want_grad=1). Weight gradients go through the
// optimizer (dense dW, Grass's compressed C, or row norms during a refresh's norm pass).
static void llama_backward(Llama* m, Optimizer* o, int B, int T) {
    const LlamaConfig* c = &m->config;
    int N = B * T, d = c->dim, f = c->ffn_dim, hd = llama_head_dim(c);
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t Nd = (size_t)N * d, Nf = (size_t)N * f;
    int grads = (o->mode == BWD_GRADS);
    // classifier: dlnf = dlogits W_head, dW_head += dlogits^T lnf
    matmul_backward_input(m->dln, m->logits, param_ptr(m, m->pt.lm_head), N, d, c->vocab_size, 0);
    optim_linear_weight_grad(o, m->pt.lm_head, m->logits, m->lnf, N);
    backend_memset0(m->dresid, Nd * sizeof(floatX));
    rmsnorm_backward(m->dresid, grads ? optim_dense_grad(o, m->pt.final_norm) : NULL, m->dln,
                     m->resid + (size_t)c->n_layers * Nd, param_ptr(m, m->pt.final_norm), m->rstdf, N, d);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerTensors* lt = &m->pt.layer[l];
        if (m->recompute) layer_forward(m, l, B, T, 0);  // refill the layer's activations
        LayerActs A = layer_acts(m, l, B, T);
        floatX *x = A.x, *ln1 = A.ln1, *q = A.q, *k = A.k, *v = A.v, *att = A.att, *mid = A.mid, *ln2 = A.ln2;
        floatX *gate = A.gate, *up = A.up, *h = A.h;
        // MLP: out = mid + down(silu(gate(ln2)) * up(ln2))
        matmul_backward_input(m->dh, m->dresid, param_ptr(m, lt->wdown), N, f, d, 0);
        optim_linear_weight_grad(o, lt->wdown, m->dresid, h, N);
        swiglu_backward(m->dgate, m->dup, m->dh, gate, up, Nf);
        matmul_backward_input(m->dln, m->dgate, param_ptr(m, lt->wgate), N, d, f, 0);
        matmul_backward_input(m->dln, m->dup, param_ptr(m, lt->wup), N, d, f, 1);
        optim_linear_weight_grad(o, lt->wgate, m->dgate, ln2, N);
        optim_linear_weight_grad(o, lt->wup, m->dup, ln2, N);
        rmsnorm_backward(m->dresid, grads ? optim_dense_grad(o, lt->mlp_norm) : NULL, m->dln, mid,
                         param_ptr(m, lt->mlp_norm), A.rstd2, N, d);
        // attention: mid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1)))
        matmul_backward_input(m->datt, m->dresid, param_ptr(m, lt->wo), N, qd, d, 0);
        optim_linear_weight_grad(o, lt->wo, m->dresid, att, N);
        attention_backward(m->dq, m->dk, m->dv, m->datt, att, q, k, v, A.lse,
                           B, T, c->n_heads, c->n_kv_heads, hd);
        rope_backward(m->dq, m->rope_cos, m->rope_sin, B, T, c->n_heads, hd);
        rope_backward(m->dk, m->rope_cos, m->rope_sin, B, T, c->n_kv_heads, hd);
        matmul_backward_input(m->dln, m->dq, param_ptr(m, lt->wq), N, d, qd, 0);
        matmul_backward_input(m->dln, m->dk, param_ptr(m, lt->wk), N, d, kvd, 1);
        matmul_backward_input(m->dln, m->dv, param_ptr(m, lt->wv), N, d, kvd, 1);
        optim_linear_weight_grad(o, lt->wq, m->dq, ln1, N);
        optim_linear_weight_grad(o, lt->wk, m->dk, ln1, N);
        optim_linear_weight_grad(o, lt->wv, m->dv, ln1, N);
        rmsnorm_backward(m->dresid, grads ? optim_dense_grad(o, lt->attn_norm) : NULL, m->dln, x,
                         param_ptr(m, lt->attn_norm), A.rstd1, N, d);
        optim_layer_done(o, l);  // fused Grass: this layer's projected weights are updated now
    }
    if (grads) embedding_backward(optim_dense_grad(o, m->pt.embed), m->dresid, m->d_tokens, N, d);
}

// ----------------------------------------------------------------------------------------------
// checkpoints: model file (docs/FORMATS.md) and training-state file

static void checkpoint_header(const LlamaConfig* c, int32_t h[64], int dtype, int64_t step) {
    memset(h, 0, 64 * sizeof(int32_t));
    h[0] = MODEL_MAGIC; h[1] = CHECKPOINT_VERSION; h[2] = c->vocab_size; h[3] = c->dim; h[4] = c->ffn_dim;
    h[5] = c->n_layers; h[6] = c->n_heads; h[7] = c->n_kv_heads; h[8] = c->max_seq_len; h[9] = c->tie_embeddings;
    h[10] = dtype;
    memcpy(&h[11], &c->norm_eps, sizeof(float));
    memcpy(&h[12], &c->rope_theta, sizeof(float));
    h[13] = (int32_t)step;
}

// reads a model file's header; exits with a clear message if it is not one of ours
static void checkpoint_read_header(const char* path, LlamaConfig* c, int* dtype, int64_t* step) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[64];
    fread_check(h, sizeof(int32_t), 64, f, path);
    fclose_check(f, path);
    if (h[0] != MODEL_MAGIC) fatal("'%s' is not a grass.c model checkpoint (magic %d, expected %d)", path, h[0], MODEL_MAGIC);
    if (h[1] != CHECKPOINT_VERSION) fatal("'%s' has checkpoint version %d; this build reads version %d", path, h[1], CHECKPOINT_VERSION);
    if (h[10] != 0 && h[10] != 1) fatal("'%s' has unknown parameter dtype %d", path, h[10]);
    c->vocab_size = h[2]; c->dim = h[3]; c->ffn_dim = h[4]; c->n_layers = h[5]; c->n_heads = h[6];
    c->n_kv_heads = h[7]; c->max_seq_len = h[8]; c->tie_embeddings = h[9];
    memcpy(&c->norm_eps, &h[11], sizeof(float));
    memcpy(&c->rope_theta, &h[12], sizeof(float));
    *dtype = h[10];
    *step = h[13];
    char err[256];
    if (!llama_config_validate(c, err, sizeof(err))) fatal("'%s' holds an invalid config: %s", path, err);
}

static inline uint16_t f32_to_bf16_bits(float x) {  // round to nearest even
    uint32_t u; memcpy(&u, &x, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static inline float bf16_bits_to_f32(uint16_t b) { uint32_t u = (uint32_t)b << 16; float x; memcpy(&x, &u, 4); return x; }

// Writes the parameters in the backend's precision (fp32 on the CPU, bf16 on a bf16 GPU build),
// to path.tmp first, renamed over path only once complete.
static void checkpoint_save_model(Llama* m, const char* path, int64_t step) {
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int dtype = sizeof(floatX) == 2 ? 1 : 0;
    int32_t h[64];
    checkpoint_header(&m->config, h, dtype, step);
    FILE* f = fopen_check(tmp, "wb");
    fwrite_check(h, sizeof(int32_t), 64, f, tmp);
    const size_t chunk = (size_t)1 << 24;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    uint16_t* b16 = (uint16_t*)malloc_check(chunk * sizeof(uint16_t));
    for (size_t off = 0; off < m->pt.total; off += chunk) {
        size_t n = m->pt.total - off < chunk ? m->pt.total - off : chunk;
        backend_download_floats(buf, m->params + off, n);
        if (dtype == 0) fwrite_check(buf, sizeof(float), n, f, tmp);
        else { for (size_t i = 0; i < n; i++) b16[i] = f32_to_bf16_bits(buf[i]); fwrite_check(b16, 2, n, f, tmp); }
    }
    free(buf); free(b16);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

// Loads parameters from a model file whose config must equal the model's.
static void checkpoint_load_model(Llama* m, const char* path) {
    LlamaConfig c; int dtype; int64_t step;
    checkpoint_read_header(path, &c, &dtype, &step);
    if (!llama_config_equal(&c, &m->config)) {
        fprintf(stderr, "checkpoint:  "); llama_config_print(&c, stderr);
        fprintf(stderr, "this run:    "); llama_config_print(&m->config, stderr);
        fatal("'%s' was written for another model config (above); use the same -c/model flags", path);
    }
    size_t bytes = dtype == 0 ? 4 : 2;
    int64_t want = 256 + (int64_t)m->pt.total * bytes, have = file_size_check(path);
    if (have != want) fatal("'%s' is %lld bytes, but its config needs %lld: truncated or corrupt", path, (long long)have, (long long)want);
    FILE* f = fopen_check(path, "rb");
    fseek_check(f, 256, SEEK_SET, path);
    const size_t chunk = (size_t)1 << 24;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    uint16_t* b16 = (uint16_t*)malloc_check(chunk * sizeof(uint16_t));
    for (size_t off = 0; off < m->pt.total; off += chunk) {
        size_t n = m->pt.total - off < chunk ? m->pt.total - off : chunk;
        if (dtype == 0) fread_check(buf, sizeof(float), n, f, path);
        else { fread_check(b16, 2, n, f, path); for (size_t i = 0; i < n; i++) buf[i] = bf16_bits_to_f32(b16[i]); }
        backend_upload_floats(m->params + off, buf, n);
    }
    free(buf); free(b16);
    fclose_check(f, path);
}

// Training state: everything besides the weights that resuming needs to continue bit for bit.
typedef struct {
    int64_t step;            // steps completed
    DataLoaderState data;    // train loader position
    uint64_t sample_rng;     // RNG for text samples
    int32_t world_size;      // ranks that wrote it
    double best_val_loss;
} TrainState;

static void state_save(const char* path, const Llama* m, const Optimizer* o, const TrainState* ts) {
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen_check(tmp, "wb");
    int32_t h[64];
    checkpoint_header(&m->config, h, 0, ts->step);
    h[0] = STATE_MAGIC;
    fwrite_check(h, sizeof(int32_t), 64, f, tmp);
    fwrite_check(ts, sizeof(TrainState), 1, f, tmp);
    optim_save(o, f, tmp);
    int32_t end = STATE_MAGIC;
    fwrite_check(&end, sizeof(int32_t), 1, f, tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

static void state_load(const char* path, const Llama* m, Optimizer* o, TrainState* ts) {
    FILE* f = fopen_check(path, "rb");
    int32_t h[64], want[64];
    fread_check(h, sizeof(int32_t), 64, f, path);
    checkpoint_header(&m->config, want, 0, 0);
    want[0] = STATE_MAGIC;
    if (h[0] != STATE_MAGIC) fatal("'%s' is not a grass.c training-state file (magic %d)", path, h[0]);
    if (h[1] != CHECKPOINT_VERSION) fatal("'%s' has state version %d; this build reads %d", path, h[1], CHECKPOINT_VERSION);
    h[13] = 0;
    if (memcmp(h, want, sizeof(h)) != 0) fatal("'%s' was written for another model config; use the same model flags", path);
    fread_check(ts, sizeof(TrainState), 1, f, path);
    optim_load(o, f, path);
    int32_t end = 0;
    fread_check(&end, sizeof(int32_t), 1, f, path);
    if (end != STATE_MAGIC) fatal("'%s' is corrupt (bad end marker)", path);
    fclose_check(f, path);
}

// ----------------------------------------------------------------------------------------------
// command line: one table drives both the parser and the help text

typedef struct {
    const char* train_pattern;
    const char* val_pattern;
    const char* config_name;
    int vocab_size, dim, ffn_dim, n_layers, n_heads, n_kv_heads, max_seq_len, tie;  // -1: from the named config
    float norm_eps, rope_theta;
    int B, T;
    long long total_batch;   // tokens per optimizer step (all ranks); -1 = B*T*world
    float lr, min_lr_ratio;
    int warmup, steps;
    int eval_every, sample_every, sample_tokens, checkpoint_every;
    long long eval_tokens;
    const char* out_dir;
    long long seed;
    int resume;
    const char* init_from;
    const char* tokenizer_path;
    const char* optimizer;
    const char* grass_select;
    float rank;
    const char* grass_layers;
    float peak_tflops;
    float memory_limit_gb;
    int log_every;
    int plan_only;
    int overlap_comm;
    int recompute;
    const char* state_dtype;
    OptimConfig oc;
} TrainArgs;

typedef struct {
    const char* flag;       // short form
    const char* name;       // long form
    char type;              // i int, f float, s string, L int64
    void* ptr;
    double lo, hi;          // range for numbers
    const char* help;
} OptionSpec;

static int build_options(TrainArgs* a, OptionSpec* s) {
    int n = 0;
#define OPT(f, nm, t, p, lo, hi, h) s[n++] = (OptionSpec){f, nm, t, (void*)(p), lo, hi, h}
    OPT("-i", "--train-data", 's', &a->train_pattern, 0, 0, "glob of training shards (dev/data/prepare.py writes them)");
    OPT("-j", "--val-data", 's', &a->val_pattern, 0, 0, "glob of validation shards (optional)");
    OPT("-c", "--config", 's', &a->config_name, 0, 0, "model: tiny d6 20m 60m 130m 350m 1b 7b 13b");
    OPT("", "--vocab", 'i', &a->vocab_size, 2, 1 << 30, "override: vocabulary size");
    OPT("", "--dim", 'i', &a->dim, 2, 1 << 20, "override: hidden size");
    OPT("", "--ffn", 'i', &a->ffn_dim, 1, 1 << 22, "override: intermediate size");
    OPT("", "--layers", 'i', &a->n_layers, 1, 1024, "override: layers");
    OPT("", "--heads", 'i', &a->n_heads, 1, 1024, "override: attention heads");
    OPT("", "--kv-heads", 'i', &a->n_kv_heads, 1, 1024, "override: key/value heads (grouped-query attention)");
    OPT("", "--max-seq", 'i', &a->max_seq_len, 1, 1 << 20, "override: max positions");
    OPT("", "--tie", 'i', &a->tie, 0, 1, "override: tie embeddings and lm_head (0/1)");
    OPT("", "--norm-eps", 'f', &a->norm_eps, 1e-12, 1, "override: RMSNorm eps");
    OPT("", "--rope-theta", 'f', &a->rope_theta, 1, 1e9, "override: RoPE base");
    OPT("-b", "--batch", 'i', &a->B, 1, 1 << 20, "micro-batch size per rank (sequences)");
    OPT("-t", "--seq", 'i', &a->T, 1, 1 << 20, "sequence length");
    OPT("-d", "--total-batch", 'L', &a->total_batch, -1, 1e15, "tokens per optimizer step over all ranks (-1: B*T*ranks); gradient accumulation fills it");
    OPT("-l", "--lr", 'f', &a->lr, 0, 10, "peak learning rate");
    OPT("", "--min-lr-ratio", 'f', &a->min_lr_ratio, 0, 1, "final lr as a fraction of the peak (cosine)");
    OPT("-u", "--warmup", 'i', &a->warmup, -1, 1 << 30, "linear warmup steps (-1: 10% of --steps, the paper's recipe)");
    OPT("-x", "--steps", 'i', &a->steps, 1, 1 << 30, "optimizer steps in all");
    OPT("", "--weight-decay", 'f', &a->oc.weight_decay, 0, 10, "decoupled weight decay (matrices and embeddings, not norms)");
    OPT("", "--grad-clip", 'f', &a->oc.grad_clip, 0, 1e9, "clip the global gradient norm to this (0: off)");
    OPT("", "--beta1", 'f', &a->oc.b1, 0, 0.999999, "Adam beta1");
    OPT("", "--beta2", 'f', &a->oc.b2, 0, 0.999999, "Adam beta2");
    OPT("", "--adam-eps", 'f', &a->oc.eps, 1e-30, 1, "Adam epsilon");
    OPT("-v", "--eval-every", 'i', &a->eval_every, 0, 1 << 30, "validate every N steps (0: only at the end)");
    OPT("", "--eval-tokens", 'L', &a->eval_tokens, 1, 1e15, "tokens per validation (all ranks)");
    OPT("-s", "--sample-every", 'i', &a->sample_every, 0, 1 << 30, "print a text sample every N steps (0: never)");
    OPT("-g", "--sample-tokens", 'i', &a->sample_tokens, 1, 1 << 20, "tokens per text sample");
    OPT("-n", "--checkpoint-every", 'i', &a->checkpoint_every, 0, 1 << 30, "write a checkpoint every N steps (0: only at the end)");
    OPT("-o", "--out-dir", 's', &a->out_dir, 0, 0, "output directory for the log and checkpoints");
    OPT("", "--seed", 'L', &a->seed, 0, 9e18, "seed for init, data order and Grass selection");
    OPT("-y", "--resume", 'i', &a->resume, 0, 1, "resume from the latest checkpoint in --out-dir (0/1)");
    OPT("", "--init-from", 's', &a->init_from, 0, 0, "start from a model checkpoint (e.g. made by dev/import_hf.py)");
    OPT("-e", "--tokenizer", 's', &a->tokenizer_path, 0, 0, "tokenizer.bin for text samples");
    OPT("", "--optimizer", 's', &a->optimizer, 0, 0, "adamw | grass");
    OPT("", "--grass-select", 's', &a->grass_select, 0, 0, "topr | multinorm | multinorm-nr | uniform | uniform-nr");
    OPT("", "--rank", 'f', &a->rank, 0, 1 << 24, "Grass rank: an integer, a fraction of the selected dimension (< 1), or full");
    OPT("", "--update-freq", 'i', &a->oc.update_freq, 1, 1 << 30, "Grass: re-select rows every K steps");
    OPT("", "--grass-scale", 'f', &a->oc.alpha, 0, 1e6, "Grass scale factor alpha");
    OPT("", "--grass-fused", 'i', &a->oc.fused, 0, 1, "Grass: apply each layer's update during the backward pass (0/1)");
    OPT("", "--select-on-device", 'i', &a->oc.select_on_device, 0, 1, "Grass: select rows on the GPU (same result as the host selection; 0/1, the CPU build selects on the host)");
    OPT("", "--zero", 'i', &a->oc.zero, 0, 1, "ZeRO-1 with several ranks: each rank keeps the full-rank AdamW moments of 1/ranks of the dense tensors (0/1)");
    OPT("", "--master-weights", 'i', &a->oc.master_weights, 0, 1, "keep fp32 master weights; bf16 weights get them rounded to nearest instead of stochastic rounding (0/1)");
    OPT("", "--state-dtype", 's', &a->state_dtype, 0, 0, "storage of the Adam moments: fp32 | bf16 (half the memory; arithmetic stays fp32)");
    OPT("", "--recompute", 'i', &a->recompute, 0, 1, "activation recomputation: keep only each layer's input, recompute the rest in the backward (0/1)");
    OPT("", "--overlap-comm", 'i', &a->overlap_comm, 0, 1, "with several ranks: all-reduce each layer's gradients while the next layer's backward runs (0/1)");
    OPT("", "--grass-layers", 's', &a->grass_layers, 0, 0, "projected layer types, comma separated: q,k,v,o,gate,up,down");
    OPT("", "--peak-tflops", 'f', &a->peak_tflops, 0, 1e6, "peak TFLOP/s for MFU (0: the backend's table)");
    OPT("", "--memory-limit-gb", 'f', &a->memory_limit_gb, 0, 1e6, "refuse a run whose memory plan exceeds this (0: what the backend reports free)");
    OPT("", "--log-every", 'i', &a->log_every, 1, 1 << 30, "print a progress line every N steps");
    OPT("", "--plan-only", 'i', &a->plan_only, 0, 1, "print the memory and communication plan and exit (0/1); needs no data");
#undef OPT
    return n;
}

static void train_args_defaults(TrainArgs* a) {
    memset(a, 0, sizeof(*a));
    a->train_pattern = "data/tinyshakespeare/tinyshakespeare_train_*.bin";
    a->val_pattern = "data/tinyshakespeare/tinyshakespeare_val_*.bin";
    a->config_name = "d6";
    a->vocab_size = a->dim = a->ffn_dim = a->n_layers = a->n_heads = a->n_kv_heads = a->max_seq_len = a->tie = -1;
    a->norm_eps = -1.0f; a->rope_theta = -1.0f;
    a->B = 8; a->T = 256; a->total_batch = -1;
    a->lr = 1e-3f; a->min_lr_ratio = 0.1f; a->warmup = -1; a->steps = 200;
    a->eval_every = 50; a->eval_tokens = 32768; a->sample_every = 0; a->sample_tokens = 64; a->checkpoint_every = 0;
    a->out_dir = "out"; a->seed = 1337; a->resume = 0; a->init_from = NULL;
    a->tokenizer_path = "data/tinyshakespeare/tokenizer.bin";
    a->optimizer = "adamw"; a->grass_select = "multinorm"; a->rank = 128; a->grass_layers = "q,k,v,o,gate,up,down";
    a->peak_tflops = 0; a->memory_limit_gb = 0; a->log_every = 1; a->overlap_comm = 1; a->state_dtype = "fp32";
    optim_config_defaults(&a->oc);
}

static void print_usage(OptionSpec* s, int n) {
    TrainArgs d; OptionSpec ds[64];
    train_args_defaults(&d);
    build_options(&d, ds);
    printf("usage: train_llama [options]\n\nLLaMA pretraining with full-rank AdamW or Grass. Options (default in brackets):\n");
    for (int i = 0; i < n; i++) {
        char def[96] = "";
        switch (ds[i].type) {
            case 'i': snprintf(def, sizeof(def), "%d", *(int*)ds[i].ptr); break;
            case 'L': snprintf(def, sizeof(def), "%lld", *(long long*)ds[i].ptr); break;
            case 'f': snprintf(def, sizeof(def), "%g", *(float*)ds[i].ptr); break;
            case 's': snprintf(def, sizeof(def), "%s", *(const char**)ds[i].ptr ? *(const char**)ds[i].ptr : "none"); break;
        }
        if (strncmp(ds[i].help, "override:", 9) == 0) snprintf(def, sizeof(def), "from -c");
        printf("  %-3s %-20s %s [%s]\n", s[i].flag, s[i].name, s[i].help, def);
    }
    printf("  -h  --help                 this text\n");
}

static void parse_args(TrainArgs* a, int argc, char** argv, int rank) {
    OptionSpec specs[64];
    int n = build_options(a, specs);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { if (rank == 0) print_usage(specs, n); exit(0); }
        OptionSpec* s = NULL;
        for (int k = 0; k < n; k++)
            if ((specs[k].flag[0] && strcmp(argv[i], specs[k].flag) == 0) || strcmp(argv[i], specs[k].name) == 0) s = &specs[k];
        if (s == NULL) fatal("unknown option '%s' (see -h)", argv[i]);
        if (i + 1 >= argc) fatal("option %s needs a value", argv[i]);
        const char* val = argv[++i];
        char* end = NULL;
        double x = 0.0;
        if (s->type == 's') { *(const char**)s->ptr = val; continue; }
        // "--rank full": every projected layer keeps its whole selected dimension (stored as -1)
        if (s->ptr == (void*)&a->rank && strcmp(val, "full") == 0) { a->rank = -1.0f; continue; }
        x = strtod(val, &end);
        if (end == val || *end != '\0' || !isfinite(x)) fatal("option %s: '%s' is not a number", s->name, val);
        if (x < s->lo || x > s->hi) fatal("option %s: %s is out of range [%g, %g]", s->name, val, s->lo, s->hi);
        if ((s->type == 'i' || s->type == 'L') && x != floor(x)) fatal("option %s: '%s' must be an integer", s->name, val);
        if (s->type == 'i') *(int*)s->ptr = (int)x;
        else if (s->type == 'L') *(long long*)s->ptr = (long long)x;
        else *(float*)s->ptr = (float)x;
    }
}

// the model config: a named one, then any explicit overrides
static void resolve_config(const TrainArgs* a, LlamaConfig* c) {
    if (!llama_config_by_name(a->config_name, c)) {
        char names[256] = "";
        for (int i = 0; i < N_NAMED_CONFIGS; i++) { strcat(names, " "); strcat(names, NAMED_CONFIGS[i].name); }
        fatal("unknown model config '%s'; known:%s (or override sizes with --dim, --layers, ...)", a->config_name, names);
    }
    if (a->vocab_size > 0) c->vocab_size = a->vocab_size;
    if (a->dim > 0) c->dim = a->dim;
    if (a->ffn_dim > 0) c->ffn_dim = a->ffn_dim;
    if (a->n_layers > 0) c->n_layers = a->n_layers;
    if (a->n_heads > 0) { c->n_heads = a->n_heads; if (a->n_kv_heads <= 0) c->n_kv_heads = a->n_heads; }
    if (a->n_kv_heads > 0) c->n_kv_heads = a->n_kv_heads;
    if (a->max_seq_len > 0) c->max_seq_len = a->max_seq_len;
    if (a->tie >= 0) c->tie_embeddings = a->tie;
    if (a->norm_eps > 0) c->norm_eps = a->norm_eps;
    if (a->rope_theta > 0) c->rope_theta = a->rope_theta;
    char err[256];
    if (!llama_config_validate(c, err, sizeof(err))) fatal("model config: %s", err);
}

// optimizer flags -> OptimConfig
static void resolve_optim(TrainArgs* a) {
    OptimConfig* oc = &a->oc;
    if (strcmp(a->optimizer, "adamw") == 0) oc->type = OPT_ADAMW;
    else if (strcmp(a->optimizer, "grass") == 0) oc->type = OPT_GRASS;
    else fatal("unknown --optimizer '%s' (adamw | grass)", a->optimizer);
    int sel = grass_select_from_name(a->grass_select);
    if (sel < 0) fatal("unknown --grass-select '%s' (topr | multinorm | multinorm-nr | uniform | uniform-nr)", a->grass_select);
    oc->select = (GrassSelect)sel;
    if (strcmp(a->state_dtype, "fp32") == 0) oc->state_dtype = STATE_FP32;
    else if (strcmp(a->state_dtype, "bf16") == 0) oc->state_dtype = STATE_BF16;
    else fatal("unknown --state-dtype '%s' (fp32 | bf16)", a->state_dtype);
    if (a->rank == -1.0f) { oc->rank = 0; oc->rank_frac = 1.0f; }
    else if (!(a->rank > 0)) fatal("--rank must be > 0 (an integer, a fraction below 1, or full)");
    else if (a->rank < 1.0f) { oc->rank = 0; oc->rank_frac = a->rank; }
    else if (a->rank == floorf(a->rank)) { oc->rank = (int)a->rank; oc->rank_frac = 0; }
    else fatal("--rank %g: give an integer rank or a fraction below 1", a->rank);
    oc->proj_mask = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", a->grass_layers);
    for (char* tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        int found = -1;
        for (int t = 0; t < LIN_NONE; t++) if (strcmp(tok, LINEAR_TYPE_NAMES[t]) == 0) found = t;
        if (found < 0) fatal("--grass-layers: unknown layer type '%s' (q,k,v,o,gate,up,down)", tok);
        oc->proj_mask |= 1 << found;
    }
    oc->seed = (uint64_t)a->seed;
}

// ----------------------------------------------------------------------------------------------
// memory plan, schedule, evaluation, samples

static double gib(size_t b) { return b / 1073741824.0; }

// "12.345 GiB" from 1 GiB up, else "123.4 MiB", so small and large models both read well
static const char* fmt_bytes(size_t b, char* buf) {
    if (b >= ((size_t)1 << 30)) snprintf(buf, 32, "%9.3f GiB", gib(b));
    else snprintf(buf, 32, "%9.1f MiB", b / 1048576.0);
    return buf;
}

// Prints what the run will allocate and refuses one that cannot fit; returns the planned total.
static size_t memory_plan(const LlamaConfig* c, const OptimConfig* oc, int B, int T, int recompute, float limit_gb, int rank, int refuse) {
    ParamTable pt;
    param_table_build(&pt, c);
    OptimPlan op;
    optim_plan(oc, &pt, &op);
    size_t weights = pt.total * sizeof(floatX);
    size_t acts = llama_activation_bytes(c, B, T, recompute);
    WorkspaceSizes ws;
    ws.N = (size_t)B * T; ws.att_rows = (size_t)B * c->n_heads * T; ws.d = c->dim; ws.T = T;
    ws.gather = ws.N * op.max_rank; ws.norm_block = op.max_matrix; ws.wire = op.max_sub;
    ws.select_dim = oc->select_on_device ? op.max_dim_sel : 0;
    size_t work = backend_workspace_bytes(&ws);
    size_t total = weights + op.master_bytes + op.dense_grad_bytes + op.compressed_bytes + op.state_bytes + op.other_bytes +
                   acts + work;
    if (rank == 0) {
        char b[6][32];
        printf("memory plan (%s weights, %s optimizer states):\n", FLOATX_NAME, oc->state_dtype == STATE_BF16 ? "bf16" : "fp32");
        printf("  parameters        %12zu  %s\n", pt.total, fmt_bytes(weights, b[0]));
        printf("  gradients (dense) %12s  %s\n", "", fmt_bytes(op.dense_grad_bytes, b[1]));
        if (oc->type == OPT_GRASS) {
            printf("  gradients (Grass) %12s  %s   (%zu projected parameters, no m x n gradient)\n", "",
                   fmt_bytes(op.compressed_bytes, b[2]), op.projected_params);
        }
        printf("  optimizer states  %12s  %s\n", "", fmt_bytes(op.state_bytes, b[3]));
        if (op.master_bytes) printf("  master weights    %12s  %s   (fp32 copy)\n", "", fmt_bytes(op.master_bytes, b[4]));
        if (op.other_bytes) printf("  Grass other       %12s  %s   (indices, scales, norms%s)\n", "", fmt_bytes(op.other_bytes, b[4]),
                                   oc->overlap_comm && sizeof(floatX) < sizeof(float) ? ", all-reduce wire buffers" : "");
        printf("  activations       %12s  %s   (B=%d, T=%d%s)\n", "", fmt_bytes(acts, b[5]), B, T,
               recompute ? ", recomputed per layer" : "");
        printf("  backend workspace %12s  %s   (GEMM workspace, scratch; estimate)\n", "", fmt_bytes(work, b[5]));
        printf("  total             %12s  %s\n", "", fmt_bytes(total, b[0]));
        printf("communication per optimizer step with several ranks: %.3f MiB all-reduced", op.comm_step_bytes / 1048576.0);
        if (oc->type == OPT_GRASS) printf(" (+ %.3f MiB of row norms every %d steps)", op.comm_refresh_bytes / 1048576.0, oc->update_freq);
        printf("\n");
    }
    size_t avail = limit_gb > 0 ? (size_t)(limit_gb * 1073741824.0) : backend_memory_free();
    if (refuse && avail > 0 && total > avail) {
        fatal("this run needs %.2f GiB but %.2f GiB is available (%s); reduce -b/--batch, -t/--seq or the model, "
              "or use --optimizer grass with a smaller --rank", gib(total), gib(avail),
              limit_gb > 0 ? "--memory-limit-gb" : "free memory reported by the backend");
    }
    param_table_free(&pt);
    return total;
}

// linear warmup to the peak, then cosine down to min_ratio * peak at the last step
static float lr_at(const TrainArgs* a, int step) {
    if (a->warmup > 0 && step < a->warmup) return a->lr * (float)(step + 1) / (float)a->warmup;
    int span = a->steps - a->warmup;
    if (span <= 1) return a->lr;
    double progress = (double)(step - a->warmup) / (double)(span - 1);
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(a->lr * (a->min_lr_ratio + (1.0 - a->min_lr_ratio) * cosine));
}

// Mean validation loss over eval_batches micro-batches of every rank.
static double evaluate(Llama* m, DataLoader* val, int eval_batches, ProcessGroup* pg) {
    dataloader_reset(val);
    double sum = 0.0;
    for (int i = 0; i < eval_batches; i++) {
        dataloader_next_batch(val);
        sum += llama_forward(m, val->inputs, val->targets, val->B, val->T, 0, 0.0f);
    }
    double buf[2] = {sum, (double)eval_batches};
    comm_allreduce_sum_double(pg, buf, 2);
    return buf[0] / buf[1];
}

// Generates n tokens after a BOS, sampling from softmax(logits) with a host RNG.
static void print_sample(Llama* m, Tokenizer* tok, int n, uint64_t* rng) {
    int T = m->T < m->config.max_seq_len ? m->T : m->config.max_seq_len;
    if (n > T - 1) n = T - 1;
    int* ids = (int*)calloc_check(T, sizeof(int));
    int* zeros = (int*)calloc_check(T, sizeof(int));
    float* logits = (float*)malloc_check((size_t)m->config.vocab_size * sizeof(float));
    ids[0] = tok->bos_id;
    int V = m->config.vocab_size;
    for (int t = 1; t <= n; t++) {
        llama_forward(m, ids, zeros, 1, t, 0, 0.0f);
        backend_download_floats(logits, m->logits + (size_t)(t - 1) * V, V);
        float mx = logits[0];
        for (int j = 1; j < V; j++) if (logits[j] > mx) mx = logits[j];
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(logits[j] - mx));
        double u = rng_uniform01(rng) * sum, c = 0.0;
        int pick = V - 1;
        for (int j = 0; j < V; j++) { c += exp((double)(logits[j] - mx)); if (c > u) { pick = j; break; } }
        ids[t] = pick;
        if (pick == tok->eos_id) { n = t; break; }
    }
    size_t len = 0;
    char* text = tokenizer_decode_alloc(tok, ids + 1, n, &len);
    printf("---- sample ----\n%s\n----------------\n", text);
    free(text); free(ids); free(zeros); free(logits);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void format_eta(double s, char* buf, size_t n) {
    if (s < 0 || !isfinite(s)) { snprintf(buf, n, "?"); return; }
    int h = (int)(s / 3600), mi = (int)(s / 60) % 60, se = (int)s % 60;
    if (h > 0) snprintf(buf, n, "%dh%02dm", h, mi); else snprintf(buf, n, "%dm%02ds", mi, se);
}

// mkdir -p
static void make_dir(const char* path) {
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char* p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) fatal("cannot create directory '%s': %s", buf, strerror(errno));
            *p = c;
            if (c == '\0') break;
        }
    }
}

static void write_latest(const char* out_dir, int64_t step) {
    char path[1024], tmp[1100];
    snprintf(path, sizeof(path), "%s/checkpoint_latest.txt", out_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE* f = fopen_check(tmp, "w");
    fprintf(f, "%lld\n", (long long)step);
    fclose_check(f, tmp);
    rename_check(tmp, path);
}

// ZeRO-1: this rank's block of the AdamW moments, next to the step's state file
static void zero_shard_path(char* buf, size_t len, const char* out_dir, long long step, int rank) {
    snprintf(buf, len, "%s/state_%08lld.zero%d.bin", out_dir, step, rank);
}

static void save_checkpoint(const TrainArgs* a, Llama* m, Optimizer* o, const TrainState* ts) {
    char mp[1024], sp[1024];
    snprintf(mp, sizeof(mp), "%s/model_%08lld.bin", a->out_dir, (long long)ts->step);
    snprintf(sp, sizeof(sp), "%s/state_%08lld.bin", a->out_dir, (long long)ts->step);
    checkpoint_save_model(m, mp, ts->step);
    state_save(sp, m, o, ts);
    write_latest(a->out_dir, ts->step);  // only once both files are complete
    printf("wrote checkpoint %s and %s\n", mp, sp);
}

// FNV-1a over the weights and the Grass selections: equal on every rank, or the run stops
static void check_ranks_in_sync(ProcessGroup* pg, Llama* m, Optimizer* o) {
    if (pg->world_size <= 1) return;
    uint64_t h = 1469598103934665603ULL;
    const size_t chunk = (size_t)1 << 22;
    float* buf = (float*)malloc_check(chunk * sizeof(float));
    for (size_t off = 0; off < m->pt.total; off += chunk) {
        size_t n = m->pt.total - off < chunk ? m->pt.total - off : chunk;
        backend_download_floats(buf, m->params + off, n);
        const unsigned char* b = (const unsigned char*)buf;
        for (size_t i = 0; i < n * sizeof(float); i++) { h ^= b[i]; h *= 1099511628211ULL; }
    }
    free(buf);
    comm_check_same_u64(pg, h, "the model weights");
    uint64_t hs = 1469598103934665603ULL;
    for (int k = 0; k < o->n_gm; k++) {
        const GrassMatrix* g = &o->gm[k];
        for (int j = 0; j < g->r_eff; j++) { hs ^= (uint64_t)g->h_sel.idx[j] * 31 + (uint64_t)(g->h_sel.scale[j] * 1e6f); hs *= 1099511628211ULL; }
    }
    comm_check_same_u64(pg, hs, "the Grass row selections");
}

// Fault injection for the data-parallel tests: GRASS_FAULT_RANK=r GRASS_FAULT_STEP=s makes
// rank r die at step s, as a crashed node would; the other ranks must not hang.
static void fault_injection(ProcessGroup* pg, int step) {
    const char* fr = getenv("GRASS_FAULT_RANK");
    const char* fs = getenv("GRASS_FAULT_STEP");
    if (fr == NULL || fs == NULL || atoi(fr) != pg->rank || atoi(fs) != step) return;
    fprintf(stderr, "rank %d: GRASS_FAULT_RANK/GRASS_FAULT_STEP: dying at step %d\n", pg->rank, step);
    _exit(3);
}

#ifndef TESTING
int main(int argc, char** argv) {
    ProcessGroup pg;
    comm_init(&pg, &argc, &argv);
    TrainArgs a;
    train_args_defaults(&a);
    parse_args(&a, argc, argv, pg.rank);
    LlamaConfig config;
    resolve_config(&a, &config);
    resolve_optim(&a);
    backend_init(pg.local_rank);
    int master = pg.rank == 0;

    if (a.T > config.max_seq_len) fatal("-t/--seq %d is longer than the model's max_seq_len %d", a.T, config.max_seq_len);
    long long micro_tokens = (long long)a.B * a.T * pg.world_size;
    if (a.total_batch < 0) a.total_batch = micro_tokens;
    if (a.total_batch % micro_tokens != 0)
        fatal("--total-batch %lld is not a multiple of B*T*ranks = %d*%d*%d = %lld", a.total_batch, a.B, a.T, pg.world_size, micro_tokens);
    int accum = (int)(a.total_batch / micro_tokens);
    a.oc.share_compressed = a.oc.type == OPT_GRASS && a.oc.fused && accum == 1;
    a.oc.overlap_comm = a.overlap_comm && pg.world_size > 1;
    a.oc.zero_rank = pg.rank; a.oc.zero_world = pg.world_size;
    if (a.oc.zero && a.oc.master_weights) fatal("--zero 1 with --master-weights 1 is not supported yet (the fp32 master copy is not sharded)");
    if (a.warmup < 0) a.warmup = a.steps / 10;
    if (a.warmup >= a.steps && a.warmup > 0) fatal("--warmup %d must be smaller than --steps %d", a.warmup, a.steps);
    char err[512];
    {
        ParamTable pt;
        param_table_build(&pt, &config);
        if (!optim_config_validate(&a.oc, &pt, err, sizeof(err))) fatal("%s", err);
        param_table_free(&pt);
    }
    if (master) {
        printf("grass.c | backend %s | %d rank%s\n", backend_name(), pg.world_size, pg.world_size > 1 ? "s" : "");
        llama_config_print(&config, stdout);
        printf("batch: B=%d T=%d ranks=%d accumulation=%d -> %lld tokens per step\n", a.B, a.T, pg.world_size, accum, a.total_batch);
        if (a.oc.type == OPT_GRASS)
            printf("optimizer: grass (select %s, rank %s%g, K=%d, alpha=%g, fused=%d, overlap=%d, layers %s), lr %g, "
                   "%s states\n", GRASS_SELECT_NAMES[a.oc.select], a.rank == -1.0f ? "full: fraction " : a.rank < 1 ? "fraction " : "",
                   a.rank == -1.0f ? 1.0f : a.rank, a.oc.update_freq,
                   a.oc.alpha, a.oc.fused, a.oc.overlap_comm, a.grass_layers, a.lr, a.state_dtype);
        else printf("optimizer: adamw, lr %g, weight decay %g, clip %g, %s states, overlap=%d\n", a.lr, a.oc.weight_decay,
                    a.oc.grad_clip, a.state_dtype, a.oc.overlap_comm);
        if (a.oc.zero && pg.world_size > 1)
            printf("ZeRO-1: the full-rank AdamW moments are sharded over %d ranks\n", pg.world_size);
    }
    size_t planned_bytes = memory_plan(&config, &a.oc, a.B, a.T, a.recompute, a.memory_limit_gb, pg.rank, !a.plan_only);
    if (a.plan_only) { comm_finalize(&pg); return 0; }

    DataLoader train, val;
    dataloader_init(&train, a.train_pattern, a.B, a.T, pg.rank, pg.world_size, 1, (uint64_t)a.seed, config.vocab_size);
    int have_val = a.val_pattern != NULL && a.val_pattern[0] != '\0' && strcmp(a.val_pattern, "none") != 0;
    int eval_batches = 0;
    if (have_val) {
        dataloader_init(&val, a.val_pattern, a.B, a.T, pg.rank, pg.world_size, 0, 0, config.vocab_size);
        eval_batches = (int)(a.eval_tokens / micro_tokens);
        if (eval_batches < 1) eval_batches = 1;
        if (eval_batches > dataloader_num_batches(&val)) eval_batches = (int)dataloader_num_batches(&val);
    }
    Tokenizer tok;
    int have_tok = 0;
    if (a.sample_every > 0) {
        tokenizer_init(&tok, a.tokenizer_path);  // exits with a clear message when missing
        have_tok = 1;
    }

    Llama model;
    llama_build(&model, &config, a.B, a.T, a.recompute);
    Optimizer opt;
    optim_init(&opt, &a.oc, &model.pt, model.params);
    opt.world_size = pg.world_size;
    TrainState ts;
    memset(&ts, 0, sizeof(ts));
    ts.sample_rng = (uint64_t)a.seed ^ 0x5A5A5A5AULL;
    ts.world_size = pg.world_size;
    ts.best_val_loss = INFINITY;

    make_dir(a.out_dir);
    int resumed = 0;
    if (a.resume) {
        char lp[1024];
        snprintf(lp, sizeof(lp), "%s/checkpoint_latest.txt", a.out_dir);
        if (file_exists(lp)) {
            FILE* f = fopen_check(lp, "r");
            long long st = -1;
            if (fscanf(f, "%lld", &st) != 1 || st < 0) fatal("'%s' does not hold a step number", lp);
            fclose_check(f, lp);
            char mp[1024], sp[1024];
            snprintf(mp, sizeof(mp), "%s/model_%08lld.bin", a.out_dir, st);
            snprintf(sp, sizeof(sp), "%s/state_%08lld.bin", a.out_dir, st);
            checkpoint_load_model(&model, mp);
            state_load(sp, &model, &opt, &ts);
            if (opt.sharded) {
                char zp[1100];
                zero_shard_path(zp, sizeof(zp), a.out_dir, st, pg.rank);
                optim_load_shard(&opt, zp);
            }
            if (ts.world_size != pg.world_size)
                fatal("'%s' was written by %d ranks; resume it with %d ranks (mpirun -np %d) to continue bit for bit",
                      sp, ts.world_size, ts.world_size, ts.world_size);
            dataloader_set_state(&train, &ts.data);
            resumed = 1;
            if (master) printf("resumed from step %lld (%s)\n", st, mp);
        } else if (master) {
            printf("no checkpoint in %s yet: starting fresh\n", a.out_dir);
        }
    }
    if (!resumed) {
        if (a.init_from != NULL) {
            checkpoint_load_model(&model, a.init_from);
            if (master) printf("initialized from %s\n", a.init_from);
        } else {
            llama_init_random(&model, (uint64_t)a.seed);
        }
        optim_weights_changed(&opt);
    }

    FILE* logf = NULL;
    if (master) {
        char lp[1024];
        snprintf(lp, sizeof(lp), "%s/log.txt", a.out_dir);
        logf = fopen_check(lp, resumed ? "a" : "w");
        if (!resumed) {
            fprintf(logf, "# grass.c config=%s dim=%d layers=%d optimizer=%s", a.config_name, config.dim, config.n_layers, a.optimizer);
            if (a.oc.type == OPT_GRASS)
                fprintf(logf, " select=%s rank=%g update_freq=%d alpha=%g fused=%d", GRASS_SELECT_NAMES[a.oc.select],
                        a.rank, a.oc.update_freq, a.oc.alpha, a.oc.fused);
            fprintf(logf, " lr=%g B=%d T=%d total_batch=%lld ranks=%d steps=%d\n", a.lr, a.B, a.T, a.total_batch, pg.world_size, a.steps);
        } else {
            fprintf(logf, "# resumed at step %lld with %d rank(s), as the checkpoint was written\n", (long long)ts.step, pg.world_size);
        }
        fflush(logf);
    }

    // MFU: model FLOPs per token = 6 N (matmul parameters) + 12 L d T (attention), PaLM's formula;
    // counted the same for Grass, whose cheaper weight-gradient GEMMs show up as higher MFU.
    double flops_per_token = 6.0 * (double)param_table_matmul_params(&model.pt) + 12.0 * config.n_layers * config.dim * (double)a.T;
    double peak = a.peak_tflops > 0 ? a.peak_tflops * 1e12 : backend_peak_flops();
    float dloss = 1.0f / (float)((double)a.B * a.T * accum * pg.world_size);
    double time_sum = 0.0;
    int timed_steps = 0;

    const int start_step = (int)ts.step;
    for (int step = start_step; step <= a.steps; step++) {
        int last = step == a.steps;
        if (have_val && ((a.eval_every > 0 && step % a.eval_every == 0) || last)) {
            double vl = evaluate(&model, &val, eval_batches, &pg);
            if (!isfinite(vl)) fatal("validation loss is %f at step %d", vl, step);
            if (vl < ts.best_val_loss) ts.best_val_loss = vl;
            if (master) {
                printf("step %d | val loss %.4f | val ppl %.4g\n", step, vl, exp(vl));
                fprintf(logf, "step=%d val_loss=%.6f val_ppl=%.4f\n", step, vl, exp(vl));
                fflush(logf);
            }
        }
        if (have_tok && master && a.sample_every > 0 && (step % a.sample_every == 0 || last) && step > 0)
            print_sample(&model, &tok, a.sample_tokens, &ts.sample_rng);
        if (step > start_step || last) {  // never rewrite the checkpoint a run resumed from
            if ((a.checkpoint_every > 0 && step % a.checkpoint_every == 0 && step > 0) || (last && step > 0)) {
                check_ranks_in_sync(&pg, &model, &opt);
                ts.data = dataloader_get_state(&train);
                if (opt.sharded) {  // every rank's block first: checkpoint_latest.txt comes last
                    char zp[1100];
                    zero_shard_path(zp, sizeof(zp), a.out_dir, (long long)ts.step, pg.rank);
                    optim_save_shard(&opt, zp);
                    comm_barrier(&pg);
                }
                if (master) save_checkpoint(&a, &model, &opt, &ts);
                comm_barrier(&pg);
            }
        }
        if (last) { check_ranks_in_sync(&pg, &model, &opt); break; }

        double t0 = now_seconds();
        float lr = lr_at(&a, step);
        opt.comm_bytes = 0;
        fault_injection(&pg, step);
        if (optim_needs_refresh(&opt, step)) {
            // norm pass: the squared row norms of this step's gradient, summed over micro-batches and ranks
            DataLoaderState before = dataloader_get_state(&train);
            optim_begin_norm_pass(&opt);
            for (int micro = 0; micro < accum; micro++) {
                dataloader_next_batch(&train);
                llama_forward(&model, train.inputs, train.targets, a.B, a.T, 1, dloss);
                llama_backward(&model, &opt, a.B, a.T);
            }
            dataloader_set_state(&train, &before);
            optim_refresh(&opt, step);
        }
        optim_zero_grads(&opt);
        double loss = 0.0;
        for (int micro = 0; micro < accum; micro++) {
            dataloader_next_batch(&train);
            opt.apply_fused = (a.oc.type == OPT_GRASS && a.oc.fused && micro == accum - 1);
            opt.last_micro = (micro == accum - 1);
            opt.lr_now = lr;
            loss += llama_forward(&model, train.inputs, train.targets, a.B, a.T, 1, dloss);
            llama_backward(&model, &opt, a.B, a.T);
        }
        loss /= accum;
        double lb[1] = {loss};
        comm_allreduce_sum_double(&pg, lb, 1);
        loss = lb[0] / pg.world_size;
        if (!isfinite(loss)) {
            fatal("the loss became %f at step %d; stopping without writing a checkpoint (the last good one in %s "
                  "is kept); try a lower --lr or --grad-clip", loss, step, a.out_dir);
        }
        float gnorm = optim_step(&opt, lr);
        if (!isfinite(gnorm)) fatal("the gradient norm became %f at step %d; stopping without a checkpoint", gnorm, step);
        backend_synchronize();
        double dt = now_seconds() - t0;
        ts.step = step + 1;
        if (step > start_step) { time_sum += dt; timed_steps++; }  // the first step warms caches
        double tok_s = a.total_batch / dt;
        double mfu = peak > 0 ? flops_per_token * tok_s / peak : -1.0;
        double mem = gib(backend_memory_peak());
        if (master) {
            char eta[32];
            format_eta((a.steps - step - 1) * (timed_steps ? time_sum / timed_steps : dt), eta, sizeof(eta));
            if (step % a.log_every == 0 || step == a.steps - 1) {
                char mfus[32];
                if (mfu >= 0) snprintf(mfus, sizeof(mfus), "%.1f%%", 100 * mfu); else snprintf(mfus, sizeof(mfus), "n/a");
                char comms[48] = "";
                if (pg.world_size > 1) snprintf(comms, sizeof(comms), " | comm %.2f MiB", opt.comm_bytes / 1048576.0);
                printf("step %d/%d | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %s | mem %.2f GiB%s | %.0f ms | ETA %s\n",
                       step + 1, a.steps, loss, lr, gnorm, tok_s, mfus, mem, comms, dt * 1000, eta);
                fflush(stdout);
            }
            fprintf(logf, "step=%d loss=%.6f lr=%.6e grad_norm=%.6f tok_per_s=%.1f mfu=%.4f mem_gib=%.4f dt_ms=%.2f comm_mib=%.4f\n",
                    step + 1, loss, lr, gnorm, tok_s, mfu, mem, dt * 1000, opt.comm_bytes / 1048576.0);
            fflush(logf);
        }
    }
    if (master) {
        if (pg.world_size > 1) printf("ranks in sync: %d ranks hold identical weights and Grass selections\n", pg.world_size);
        printf("done: %d steps, best val loss %.4f\n", a.steps, ts.best_val_loss);
        // what the program allocated at its peak (backend_malloc's accounting) against the plan
        printf("peak memory held: %.3f GiB (plan %.3f GiB)\n", gib(backend_memory_peak()), gib(planned_bytes));
        fclose_check(logf, "log.txt");
    }
    if (have_tok) tokenizer_free(&tok);
    optim_free(&opt);
    llama_free(&model);
    dataloader_free(&train);
    if (have_val) dataloader_free(&val);
    comm_finalize(&pg);
    return 0;
}
#endif
