/*
 * llama_config.h: the LLaMA model configuration, the named sizes, and their validation.
 * Backend-free; included by the trainer, the tests and the tools.
 */
#ifndef GRASS_LLAMA_CONFIG_H
#define GRASS_LLAMA_CONFIG_H

#include <string.h>
#include <stdio.h>

typedef struct {
    int vocab_size;     // V
    int dim;            // hidden size d
    int ffn_dim;        // intermediate size f (SwiGLU)
    int n_layers;       // L
    int n_heads;        // query heads
    int n_kv_heads;     // key/value heads (grouped-query attention when < n_heads)
    int max_seq_len;    // max positions
    int tie_embeddings; // lm_head shares embed_tokens
    float norm_eps;     // RMSNorm epsilon
    float rope_theta;   // RoPE base
} LlamaConfig;

typedef struct {
    const char* name;
    LlamaConfig config;
} NamedConfig;

// The GaLore / Grass pretraining configs (hidden, intermediate, heads, layers; vocab 32000,
// rms_norm_eps 1e-6, rope_theta 10000, untied), checked against GaLore's published
// configs/llama_*.json. 13b is LLaMA-13B. The tiny ones are for tests and CPU smoke runs.
static const NamedConfig NAMED_CONFIGS[] = {
    {"tiny",  {32000,  64,   176,  2,  4,  2,  256, 0, 1e-6f, 10000.0f}},
    {"d6",    {32000, 192,   512,  6,  6,  6,  256, 0, 1e-6f, 10000.0f}},
    {"20m",   {32000, 256,   688,  4,  4,  4, 1024, 0, 1e-6f, 10000.0f}},
    {"60m",   {32000, 512,  1376,  8,  8,  8, 1024, 0, 1e-6f, 10000.0f}},
    {"130m",  {32000, 768,  2048, 12, 12, 12, 1024, 0, 1e-6f, 10000.0f}},
    {"350m",  {32000, 1024, 2736, 24, 16, 16, 1024, 0, 1e-6f, 10000.0f}},
    {"1b",    {32000, 2048, 5461, 24, 32, 32, 1024, 0, 1e-6f, 10000.0f}},
    {"7b",    {32000, 4096, 11008, 32, 32, 32, 2048, 0, 1e-6f, 10000.0f}},
    {"13b",   {32000, 5120, 13824, 40, 40, 40, 2048, 0, 1e-6f, 10000.0f}},
};
#define N_NAMED_CONFIGS ((int)(sizeof(NAMED_CONFIGS) / sizeof(NAMED_CONFIGS[0])))

// returns 1 and fills *out when name is a known config, else 0
static inline int llama_config_by_name(const char* name, LlamaConfig* out) {
    for (int i = 0; i < N_NAMED_CONFIGS; i++) {
        if (strcmp(NAMED_CONFIGS[i].name, name) == 0) { *out = NAMED_CONFIGS[i].config; return 1; }
    }
    return 0;
}

static inline int llama_head_dim(const LlamaConfig* c) { return c->dim / c->n_heads; }

// Checks a config; on a problem writes a message into err and returns 0.
static inline int llama_config_validate(const LlamaConfig* c, char* err, size_t errlen) {
    if (c->vocab_size < 2) { snprintf(err, errlen, "vocab_size %d must be >= 2", c->vocab_size); return 0; }
    if (c->dim < 2 || c->ffn_dim < 1 || c->n_layers < 1 || c->n_heads < 1 || c->n_kv_heads < 1) {
        snprintf(err, errlen, "dim %d, ffn_dim %d, n_layers %d, n_heads %d, n_kv_heads %d must all be positive",
                 c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads);
        return 0;
    }
    if (c->n_layers > 1024) { snprintf(err, errlen, "n_layers %d is above the supported 1024", c->n_layers); return 0; }
    if (c->dim % c->n_heads != 0) {
        snprintf(err, errlen, "dim %d is not divisible by n_heads %d", c->dim, c->n_heads); return 0;
    }
    if ((c->dim / c->n_heads) % 2 != 0) {
        snprintf(err, errlen, "head_dim %d must be even for RoPE", c->dim / c->n_heads); return 0;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        snprintf(err, errlen, "n_heads %d is not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads); return 0;
    }
    if (c->max_seq_len < 1) { snprintf(err, errlen, "max_seq_len %d must be positive", c->max_seq_len); return 0; }
    if (!(c->norm_eps > 0.0f) || !(c->rope_theta > 0.0f)) {
        snprintf(err, errlen, "norm_eps %g and rope_theta %g must be positive", c->norm_eps, c->rope_theta); return 0;
    }
    return 1;
}

static inline void llama_config_print(const LlamaConfig* c, FILE* f) {
    fprintf(f, "model: vocab %d, dim %d, ffn %d, layers %d, heads %d, kv heads %d, head_dim %d, "
               "max_seq %d, tied %d, eps %g, rope_theta %g\n",
            c->vocab_size, c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads,
            llama_head_dim(c), c->max_seq_len, c->tie_embeddings, c->norm_eps, c->rope_theta);
}

static inline int llama_config_equal(const LlamaConfig* a, const LlamaConfig* b) {
    return a->vocab_size == b->vocab_size && a->dim == b->dim && a->ffn_dim == b->ffn_dim &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->max_seq_len == b->max_seq_len && a->tie_embeddings == b->tie_embeddings &&
           a->norm_eps == b->norm_eps && a->rope_theta == b->rope_theta;
}
#endif // GRASS_LLAMA_CONFIG_H
