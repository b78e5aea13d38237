/*
 * llama_params.h: the parameter table. Every tensor of the model has a descriptor with its
 * Hugging Face name, shape, layer, kind and offset into the one contiguous parameter buffer.
 * The order is the checkpoint order of docs/FORMATS.md. Backend-free.
 */
#ifndef GRASS_LLAMA_PARAMS_H
#define GRASS_LLAMA_PARAMS_H

#include <stdio.h>
#include <stdint.h>
#include "utils.h"
#include "llama_config.h"

typedef enum { PT_EMBED = 0, PT_NORM = 1, PT_LINEAR = 2, PT_HEAD = 3 } ParamKind;

// which linear of a block, for per-type options and logging
typedef enum { LIN_Q = 0, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_NONE } LinearType;
static const char* LINEAR_TYPE_NAMES[] = {"q", "k", "v", "o", "gate", "up", "down", "none"};

typedef struct {
    char name[96];      // Hugging Face name
    int rows, cols;     // 2-D shape as stored (cols = 1 is never used: norms are rows = 1, cols = d)
    size_t numel;
    int rows_hf, cols_hf;  // the Hugging Face shape: rows, cols but for the MLP matrices with a
    size_t numel_hf;       // padded ffn (ParamTable.ffn_stored; the zero rows/columns follow the real ones)
    size_t offset;      // into the parameter buffer (elements)
    int layer;          // -1 for global tensors
    ParamKind kind;
    LinearType lin;     // for PT_LINEAR
    int decay;          // 1 when weight decay applies (matrices), 0 for norms
} ParamTensor;

// per-layer tensor indices (into the table)
typedef struct {
    int attn_norm, wq, wk, wv, wo, mlp_norm, wgate, wup, wdown;
} LayerTensors;

typedef struct {
    int n;                  // number of tensors
    ParamTensor* t;
    LayerTensors* layer;    // n_layers entries
    int embed, final_norm, lm_head;  // lm_head == embed when tied
    size_t total;           // total parameter count as stored (the buffer's length)
    size_t total_hf;        // the model's parameter count (without the ffn padding)
    int ffn_stored;         // the ffn size the MLP matrices and activations are stored with
} ParamTable;

// The ffn size as stored: ffn_dim rounded up to a multiple of align (the GPU build's 64: every
// MLP GEMM's leading dimension then is a multiple of 128 bytes, where Hopper's fast cuBLASLt
// kernels need 16), with zero rows in gate/up and zero columns in down. Exact: the padded units
// compute silu(0) * 0 = 0 and get zero gradients, so they stay zero under every optimizer. Only
// when ffn_dim > dim, where the MLP matrices' smaller side (the one Grass and GaLore select or
// project along) is dim, so no padded row or column can ever be selected; else ffn_dim.
static int llama_ffn_stored(const LlamaConfig* c, int align) {
    if (align <= 1 || c->ffn_dim <= c->dim) return c->ffn_dim;
    return (c->ffn_dim + align - 1) / align * align;
}

// rows x cols as stored, rows_hf x cols_hf in the Hugging Face shape (the same but for padding)
static int param_table_add_padded(ParamTable* pt, const char* name, int rows, int cols, int rows_hf, int cols_hf, int layer,
                                  ParamKind kind, LinearType lin) {
    ParamTensor* t = &pt->t[pt->n];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->rows = rows; t->cols = cols; t->numel = (size_t)rows * cols;
    t->rows_hf = rows_hf; t->cols_hf = cols_hf; t->numel_hf = (size_t)rows_hf * cols_hf;
    pt->total_hf += t->numel_hf;
    t->offset = pt->total; t->layer = layer; t->kind = kind; t->lin = lin;
    t->decay = (kind != PT_NORM);
    pt->total += t->numel;
    return pt->n++;
}
static int param_table_add(ParamTable* pt, const char* name, int rows, int cols, int layer, ParamKind kind, LinearType lin) {
    return param_table_add_padded(pt, name, rows, cols, rows, cols, layer, kind, lin);
}

// A tensor between its Hugging Face layout (rows_hf x cols_hf, row-major) and its stored one
// (rows x cols; the real rows and columns first, zeros after): host arrays of numel_hf and numel.
static void param_to_stored(const ParamTensor* t, const float* hf, float* stored) {
    if (t->rows == t->rows_hf && t->cols == t->cols_hf) { memcpy(stored, hf, t->numel * sizeof(float)); return; }
    memset(stored, 0, t->numel * sizeof(float));
    for (int i = 0; i < t->rows_hf; i++) memcpy(stored + (size_t)i * t->cols, hf + (size_t)i * t->cols_hf, t->cols_hf * sizeof(float));
}
static void param_from_stored(const ParamTensor* t, const float* stored, float* hf) {
    if (t->rows == t->rows_hf && t->cols == t->cols_hf) { memcpy(hf, stored, t->numel * sizeof(float)); return; }
    for (int i = 0; i < t->rows_hf; i++) memcpy(hf + (size_t)i * t->cols_hf, stored + (size_t)i * t->cols, t->cols_hf * sizeof(float));
}

// ffn_align: see llama_ffn_stored (1: no padding, as on the CPU build)
static void param_table_build(ParamTable* pt, const LlamaConfig* c, int ffn_align) {
    int hd = llama_head_dim(c), fs = llama_ffn_stored(c, ffn_align), f = c->ffn_dim, d = c->dim;
    int max_tensors = 3 + 9 * c->n_layers;
    pt->t = (ParamTensor*)calloc_check(max_tensors, sizeof(ParamTensor));
    pt->layer = (LayerTensors*)calloc_check(c->n_layers, sizeof(LayerTensors));
    pt->n = 0; pt->total = 0; pt->total_hf = 0; pt->ffn_stored = fs;
    char nm[96];
    pt->embed = param_table_add(pt, "model.embed_tokens.weight", c->vocab_size, c->dim, -1, PT_EMBED, LIN_NONE);
    for (int l = 0; l < c->n_layers; l++) {
        LayerTensors* lt = &pt->layer[l];
#define NAME(s) (snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, s), nm)
        lt->attn_norm = param_table_add(pt, NAME("input_layernorm.weight"), 1, c->dim, l, PT_NORM, LIN_NONE);
        lt->wq = param_table_add(pt, NAME("self_attn.q_proj.weight"), c->n_heads * hd, c->dim, l, PT_LINEAR, LIN_Q);
        lt->wk = param_table_add(pt, NAME("self_attn.k_proj.weight"), c->n_kv_heads * hd, c->dim, l, PT_LINEAR, LIN_K);
        lt->wv = param_table_add(pt, NAME("self_attn.v_proj.weight"), c->n_kv_heads * hd, c->dim, l, PT_LINEAR, LIN_V);
        lt->wo = param_table_add(pt, NAME("self_attn.o_proj.weight"), c->dim, c->n_heads * hd, l, PT_LINEAR, LIN_O);
        lt->mlp_norm = param_table_add(pt, NAME("post_attention_layernorm.weight"), 1, c->dim, l, PT_NORM, LIN_NONE);
        lt->wgate = param_table_add_padded(pt, NAME("mlp.gate_proj.weight"), fs, d, f, d, l, PT_LINEAR, LIN_GATE);
        lt->wup = param_table_add_padded(pt, NAME("mlp.up_proj.weight"), fs, d, f, d, l, PT_LINEAR, LIN_UP);
        lt->wdown = param_table_add_padded(pt, NAME("mlp.down_proj.weight"), d, fs, d, f, l, PT_LINEAR, LIN_DOWN);
#undef NAME
    }
    pt->final_norm = param_table_add(pt, "model.norm.weight", 1, c->dim, -1, PT_NORM, LIN_NONE);
    pt->lm_head = c->tie_embeddings ? pt->embed
                : param_table_add(pt, "lm_head.weight", c->vocab_size, c->dim, -1, PT_HEAD, LIN_NONE);
}

static void param_table_free(ParamTable* pt) {
    free(pt->t); free(pt->layer);
    pt->t = NULL; pt->layer = NULL; pt->n = 0;
}

// parameters outside the embedding (and the untied head): the N of "6N" FLOPs per token (the
// model's, without the ffn padding)
static size_t param_table_matmul_params(const ParamTable* pt) {
    size_t n = 0;
    for (int i = 0; i < pt->n; i++) if (pt->t[i].kind == PT_LINEAR || pt->t[i].kind == PT_HEAD) n += pt->t[i].numel_hf;
    if (pt->lm_head == pt->embed) n += pt->t[pt->embed].numel_hf;  // tied: the head matmul still runs
    return n;
}
#endif // GRASS_LLAMA_PARAMS_H
