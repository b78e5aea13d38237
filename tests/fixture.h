/*
 * fixture.h: reader of the test fixtures in tests/fixtures/ (docs/FORMATS.md, "Test fixture"),
 * written by dev/make_reference.py from Hugging Face transformers' LlamaForCausalLM.
 *
 *   Fixture fx;
 *   fixture_load(&fx, "tests/fixtures/tiny_gqa.bin");      // exits with a message on a bad file
 *   int64_t n;
 *   const float* logits = fixture_get(&fx, "logits", &n);   // fatal if missing; n = B*T*V
 *   const FixtureTensor* t = fixture_tensor(&fx, "model.norm.weight");  // shape in t->dims
 *   fixture_free(&fx);
 *
 * Header-only, C and C++ (g++, nvcc). Every check failure names the file and exits(1).
 */
#ifndef GRASS_FIXTURE_H
#define GRASS_FIXTURE_H

#include "../utils.h"
#include "../llama_config.h"

#define FIXTURE_MAGIC 20261105
#define FIXTURE_VERSION 1
#define FIXTURE_MAX_NDIM 8
#define FIXTURE_MAX_NAME 1024
#define FIXTURE_MAX_TENSORS 100000

typedef struct {
    char* name;                    // NUL-terminated
    int ndim;
    int dims[FIXTURE_MAX_NDIM];
    int64_t numel;
    float* data;                   // row-major float32
} FixtureTensor;

typedef struct {
    // model config from the header
    int vocab_size, dim, ffn_dim, n_layers, n_heads, n_kv_heads, max_seq_len, tie_embeddings;
    float norm_eps, rope_theta;
    // batch shape of input_ids / targets / logits
    int B, T;
    int n_tensors;
    FixtureTensor* tensors;
    char path[512];
} Fixture;

static inline void fixture_free(Fixture* fx) {
    if (fx->tensors != NULL) {
        for (int i = 0; i < fx->n_tensors; i++) { free(fx->tensors[i].name); free(fx->tensors[i].data); }
        free(fx->tensors);
    }
    fx->tensors = NULL;
    fx->n_tensors = 0;
}

static inline void fixture_load(Fixture* fx, const char* path) {
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->path, sizeof(fx->path), "%s", path);
    int64_t size = file_size_check(path);
    if (size < 64) fatal("fixture '%s': %lld bytes, too short for the 64-byte header", path, (long long)size);
    FILE* f = fopen_check(path, "rb");
    int32_t h[16];
    fread_check(h, sizeof(int32_t), 16, f, path);
    if (h[0] != FIXTURE_MAGIC)
        fatal("fixture '%s': bad magic %d (expected %d, a test fixture; regenerate with python3 dev/make_reference.py)",
              path, h[0], FIXTURE_MAGIC);
    if (h[1] != FIXTURE_VERSION) fatal("fixture '%s': unsupported version %d (expected %d)", path, h[1], FIXTURE_VERSION);
    fx->vocab_size = h[2]; fx->dim = h[3]; fx->ffn_dim = h[4]; fx->n_layers = h[5];
    fx->n_heads = h[6]; fx->n_kv_heads = h[7]; fx->max_seq_len = h[8]; fx->tie_embeddings = h[9];
    memcpy(&fx->norm_eps, &h[10], sizeof(float));
    memcpy(&fx->rope_theta, &h[11], sizeof(float));
    fx->B = h[12]; fx->T = h[13];
    int n = h[14];
    if (fx->vocab_size < 1 || fx->dim < 1 || fx->ffn_dim < 1 || fx->n_layers < 1 || fx->n_heads < 1 ||
        fx->n_kv_heads < 1 || fx->max_seq_len < 1 || fx->B < 1 || fx->T < 1 ||
        (fx->tie_embeddings != 0 && fx->tie_embeddings != 1))
        fatal("fixture '%s': bad header (V %d, d %d, f %d, L %d, heads %d, kv %d, max_seq %d, tied %d, B %d, T %d)",
              path, fx->vocab_size, fx->dim, fx->ffn_dim, fx->n_layers, fx->n_heads, fx->n_kv_heads,
              fx->max_seq_len, fx->tie_embeddings, fx->B, fx->T);
    if (n < 0 || n > FIXTURE_MAX_TENSORS) fatal("fixture '%s': bad tensor count %d", path, n);
    fx->tensors = (FixtureTensor*)calloc_check((size_t)(n > 0 ? n : 1), sizeof(FixtureTensor));
    int64_t pos = 64;
    for (int i = 0; i < n; i++) {
        FixtureTensor* t = &fx->tensors[i];
        int32_t len, ndim;
        if (pos + 4 > size) fatal("fixture '%s': truncated at tensor %d (name length)", path, i);
        fread_check(&len, sizeof(int32_t), 1, f, path);
        pos += 4;
        if (len <= 0 || len > FIXTURE_MAX_NAME) fatal("fixture '%s': tensor %d has bad name length %d", path, i, len);
        if (pos + len + 4 > size) fatal("fixture '%s': truncated at tensor %d (name)", path, i);
        t->name = (char*)malloc_check((size_t)len + 1);
        fread_check(t->name, 1, (size_t)len, f, path);
        t->name[len] = '\0';
        fx->n_tensors = i + 1;   // from here on fixture_free releases this tensor too
        if (strlen(t->name) != (size_t)len) fatal("fixture '%s': tensor %d has a NUL byte in its name", path, i);
        pos += len;
        fread_check(&ndim, sizeof(int32_t), 1, f, path);
        pos += 4;
        if (ndim < 0 || ndim > FIXTURE_MAX_NDIM)
            fatal("fixture '%s': tensor '%s' has bad ndim %d", path, t->name, ndim);
        t->ndim = ndim;
        if (pos + 4 * (int64_t)ndim > size) fatal("fixture '%s': truncated in the dims of '%s'", path, t->name);
        if (ndim > 0) fread_check(t->dims, sizeof(int32_t), (size_t)ndim, f, path);
        pos += 4 * (int64_t)ndim;
        int64_t numel = 1;
        for (int k = 0; k < ndim; k++) {
            if (t->dims[k] <= 0) fatal("fixture '%s': tensor '%s' has dim %d = %d", path, t->name, k, t->dims[k]);
            numel *= t->dims[k];
            if (numel > size) fatal("fixture '%s': tensor '%s' is larger than the file", path, t->name);
        }
        t->numel = numel;
        if (pos + 4 * numel > size)
            fatal("fixture '%s': truncated in the data of '%s' (needs %lld bytes at offset %lld, file has %lld)",
                  path, t->name, (long long)(4 * numel), (long long)pos, (long long)size);
        t->data = (float*)malloc_check((size_t)numel * sizeof(float));
        fread_check(t->data, sizeof(float), (size_t)numel, f, path);
        pos += 4 * numel;
        for (int j = 0; j < i; j++)
            if (strcmp(fx->tensors[j].name, t->name) == 0) fatal("fixture '%s': duplicate tensor '%s'", path, t->name);
    }
    if (pos != size) fatal("fixture '%s': %lld trailing bytes after the last tensor", path, (long long)(size - pos));
    fclose_check(f, path);
}

// the tensor called name, or NULL
static inline const FixtureTensor* fixture_find(const Fixture* fx, const char* name) {
    for (int i = 0; i < fx->n_tensors; i++)
        if (strcmp(fx->tensors[i].name, name) == 0) return &fx->tensors[i];
    return NULL;
}

static inline int fixture_has(const Fixture* fx, const char* name) { return fixture_find(fx, name) != NULL; }

// the tensor called name; fatal if missing
static inline const FixtureTensor* fixture_tensor(const Fixture* fx, const char* name) {
    const FixtureTensor* t = fixture_find(fx, name);
    if (t == NULL) fatal("fixture '%s' has no tensor '%s'", fx->path, name);
    return t;
}

// data of the tensor called name (fatal if missing); its element count in *numel_out when not NULL
static inline const float* fixture_get(const Fixture* fx, const char* name, int64_t* numel_out) {
    const FixtureTensor* t = fixture_tensor(fx, name);
    if (numel_out != NULL) *numel_out = t->numel;
    return t->data;
}

// the model config of the fixture, as the trainer's LlamaConfig
static inline LlamaConfig fixture_config(const Fixture* fx) {
    LlamaConfig c;
    c.vocab_size = fx->vocab_size; c.dim = fx->dim; c.ffn_dim = fx->ffn_dim; c.n_layers = fx->n_layers;
    c.n_heads = fx->n_heads; c.n_kv_heads = fx->n_kv_heads; c.max_seq_len = fx->max_seq_len;
    c.tie_embeddings = fx->tie_embeddings; c.norm_eps = fx->norm_eps; c.rope_theta = fx->rope_theta;
    return c;
}

#endif // GRASS_FIXTURE_H
