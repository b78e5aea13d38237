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
    int rows, cols;     // 2-D shape (cols = 1 is never used: norms are rows = 1, cols = d)
    size_t numel;
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
    size_t total;           // total parameter count
} ParamTable;

static int param_table_add(ParamTable* pt, const char* name, int rows, int cols, int layer, ParamKind kind,
                           LinearType lin) {
    ParamTensor* t = &pt->t[pt->n];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->rows = rows; t->cols = cols; t->numel = (size_t)rows * cols;
    t->offset = pt->total; t->layer = layer; t->kind = kind; t->lin = lin;
    t->decay = (kind != PT_NORM);
    pt->total += t->numel;
    return pt->n++;
}

static void param_table_build(ParamTable* pt, const LlamaConfig* c) {
    int hd = llama_head_dim(c);
    int max_tensors = 3 + 9 * c->n_layers;
    pt->t = (ParamTensor*)calloc_check(max_tensors, sizeof(ParamTensor));
    pt->layer = (LayerTensors*)calloc_check(c->n_layers, sizeof(LayerTensors));
    pt->n = 0; pt->total = 0;
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
        lt->wgate = param_table_add(pt, NAME("mlp.gate_proj.weight"), c->ffn_dim, c->dim, l, PT_LINEAR, LIN_GATE);
        lt->wup = param_table_add(pt, NAME("mlp.up_proj.weight"), c->ffn_dim, c->dim, l, PT_LINEAR, LIN_UP);
        lt->wdown = param_table_add(pt, NAME("mlp.down_proj.weight"), c->dim, c->ffn_dim, l, PT_LINEAR, LIN_DOWN);
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

// parameters outside the embedding (and the untied head): the N of "6N" FLOPs per token
static size_t param_table_matmul_params(const ParamTable* pt) {
    size_t n = 0;
    for (int i = 0; i < pt->n; i++) if (pt->t[i].kind == PT_LINEAR || pt->t[i].kind == PT_HEAD) n += pt->t[i].numel;
    if (pt->lm_head == pt->embed) n += pt->t[pt->embed].numel;  // tied: the head matmul still runs
    return n;
}
#endif // GRASS_LLAMA_PARAMS_H
