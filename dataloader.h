/*
 * dataloader.h: token shards -> (inputs, targets) micro-batches.
 *
 * Header-only; compiles as C and as C++ (g++ and nvcc). See docs/DATALOADER.md for the
 * semantics and docs/FORMATS.md for the shard format. In short:
 *   - `pattern` is a glob(3) of shard files, sorted by name (strcmp); every header is
 *     validated at init (magic, version, bytes per token, exact size, vocabulary).
 *   - sample j of a shard is the window of T+1 tokens starting at token j*T; a shard of
 *     N tokens has (N-1)/T samples; all shards' samples, in shard order, form the global
 *     sample list of n_samples entries.
 *   - a global micro-batch is world_size*B consecutive entries of the epoch's order; rank r
 *     takes entries [r*B, r*B+B). The order is the identity, or, with shuffle, a
 *     Fisher-Yates permutation from (seed, epoch) that every rank computes identically.
 *   - when fewer than world_size*B entries remain, the tail is dropped and the next epoch
 *     starts at position 0.
 *   - only the T+1 tokens of each sample are read (fseeko + fread), 64-bit offsets.
 * Every error prints a message naming the file and exits with status 1.
 */
#ifndef GRASS_DATALOADER_H
#define GRASS_DATALOADER_H

#include "utils.h"   // first: defines _FILE_OFFSET_BITS before any system header
#include "rng.h"
#include <glob.h>

#define SHARD_MAGIC 20261101
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 64
// shards kept open at once; past this, open files are closed and reopened on demand
#define DATALOADER_MAX_OPEN_SHARDS 64

// the resumable part of a data loader's state (saved in the training-state file)
typedef struct {
    int64_t epoch;      // epochs completed so far
    int64_t position;   // index into the epoch's sample order of the next global micro-batch
    uint64_t seed;      // shuffle seed the loader was created with
    int64_t n_samples;  // total samples of the data set (guards against resuming on other data)
} DataLoaderState;

typedef struct {
    // configuration (public, read-only)
    int B;               // samples per rank per micro-batch
    int T;               // sequence length
    int rank;
    int world_size;
    int shuffle;         // 0: sequential order, 1: permutation per epoch
    uint64_t seed;
    int vocab_size;      // the model's vocabulary size
    int vocab;           // the shards' vocabulary size (<= vocab_size), every token < vocab
    // data set (public, read-only)
    int n_shards;
    int64_t n_samples;    // samples over all shards
    int64_t tokens_total; // tokens over all shards
    // position (public, read-only; use get_state/set_state to change)
    int64_t epoch;
    int64_t position;
    // the current micro-batch, B*T each, row-major [B][T]
    int* inputs;
    int* targets;
    // private
    char* pattern;
    char** shard_paths;
    int64_t* shard_tokens;       // N per shard
    int* shard_bytes;            // bytes per token per shard
    int64_t* shard_first_sample; // prefix sums, n_shards+1 entries
    FILE** shard_files;          // lazily opened
    int n_open;
    int64_t* perm;               // epoch order when shuffling (n_samples entries), else NULL
    int64_t perm_epoch;          // epoch that perm was generated for
    unsigned char* readbuf;      // (T+1)*4 bytes
} DataLoader;

// ----------------------------------------------------------------------------
// random numbers: rng.h (splitmix64), so that every rank and every build agrees

// the sample order of epoch `epoch`: Fisher-Yates over 0..n-1 driven by splitmix64 seeded
// from (seed, epoch). Depends on nothing else (not on rank, B or world size).
static inline void dl_make_permutation(int64_t* perm, int64_t n, uint64_t seed, int64_t epoch) {
    uint64_t e = (uint64_t)epoch;
    uint64_t state = seed ^ splitmix64(&e);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(&state, (uint64_t)(i + 1));
        int64_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp;
    }
}

// ----------------------------------------------------------------------------
// writing shards: test-only (tests/test_dataloader.c writes its shards with it; the trainer only
// reads, and dev/data/prepare.py writes the real ones). Kept here, beside the reader, as the one
// C statement of the format.

// tokens: n values of uint16_t (bytes_per_token 2) or uint32_t (4). Written to path.tmp,
// then renamed over path.
static inline void write_shard(const char* path, const void* tokens, int64_t n, int bytes_per_token,
                               int vocab_size) {
    if (bytes_per_token != 2 && bytes_per_token != 4)
        fatal("write_shard '%s': bytes per token must be 2 or 4, got %d", path, bytes_per_token);
    if (n < 0) fatal("write_shard '%s': negative token count %lld", path, (long long)n);
    if (vocab_size <= 0) fatal("write_shard '%s': vocab size must be positive, got %d", path, vocab_size);
    if (bytes_per_token == 2 && vocab_size > 65536)
        fatal("write_shard '%s': vocab size %d does not fit uint16 tokens; use 4 bytes per token",
              path, vocab_size);
    int64_t header[8] = {SHARD_MAGIC, SHARD_VERSION, bytes_per_token, n, vocab_size, 0, 0, 0};
    size_t len = strlen(path);
    char* tmp = (char*)malloc_check(len + 5);
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    FILE* f = fopen_check(tmp, "wb");
    fwrite_check(header, sizeof(int64_t), 8, f, tmp);
    if (n > 0) fwrite_check(tokens, (size_t)bytes_per_token, (size_t)n, f, tmp);
    fclose_check(f, tmp);
    rename_check(tmp, path);
    free(tmp);
}

// ----------------------------------------------------------------------------
// loading

static inline int dl_strcmp_ptr(const void* a, const void* b) {
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

// read and validate one shard header; returns N, sets *bytes and *vocab
static inline int64_t dl_check_shard(const char* path, int T, int model_vocab, int* bytes, int* vocab) {
    struct stat st;
    if (stat(path, &st) != 0) fatal("cannot stat data shard '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fatal("data shard '%s' is not a regular file", path);
    int64_t size = (int64_t)st.st_size;
    if (size < SHARD_HEADER_BYTES)
        fatal("data shard '%s' is %lld bytes, shorter than the %d-byte header (truncated, or not a shard)",
              path, (long long)size, SHARD_HEADER_BYTES);
    int64_t h[8];
    FILE* f = fopen_check(path, "rb");
    fread_check(h, sizeof(int64_t), 8, f, path);
    fclose_check(f, path);
    if (h[0] != SHARD_MAGIC)
        fatal("'%s' is not a data shard: magic %lld, expected %d (see docs/FORMATS.md)",
              path, (long long)h[0], SHARD_MAGIC);
    if (h[1] != SHARD_VERSION)
        fatal("data shard '%s' has version %lld, this program reads version %d; re-create it with "
              "dev/data/prepare.py", path, (long long)h[1], SHARD_VERSION);
    if (h[2] != 2 && h[2] != 4)
        fatal("data shard '%s' has %lld bytes per token, expected 2 (uint16) or 4 (uint32)",
              path, (long long)h[2]);
    int64_t n = h[3];
    if (n < 0 || n > (INT64_MAX - SHARD_HEADER_BYTES) / h[2])
        fatal("data shard '%s' has an invalid token count %lld in its header", path, (long long)n);
    int64_t expect = SHARD_HEADER_BYTES + n * h[2];
    if (size < expect)
        fatal("data shard '%s' is truncated: %lld bytes, but its header says %lld tokens x %lld bytes "
              "+ %d = %lld bytes", path, (long long)size, (long long)n, (long long)h[2],
              SHARD_HEADER_BYTES, (long long)expect);
    if (size > expect)
        fatal("data shard '%s' is longer than its header says: %lld bytes, expected %lld tokens x %lld "
              "bytes + %d = %lld bytes", path, (long long)size, (long long)n, (long long)h[2],
              SHARD_HEADER_BYTES, (long long)expect);
    if (h[4] <= 0 || h[4] > INT32_MAX)
        fatal("data shard '%s' has an invalid vocabulary size %lld in its header", path, (long long)h[4]);
    if (h[2] == 2 && h[4] > 65536)
        fatal("data shard '%s' stores uint16 tokens but says vocabulary size %lld (> 65536)",
              path, (long long)h[4]);
    if (h[4] > model_vocab)
        fatal("vocabulary mismatch: data shard '%s' was made with vocabulary size %lld, larger than "
              "the model's vocabulary size %d (wrong tokenizer or wrong model config?)",
              path, (long long)h[4], model_vocab);
    if (n < (int64_t)T + 1)
        fatal("data shard '%s' has %lld tokens, but a sample needs at least T+1 = %d tokens",
              path, (long long)n, T + 1);
    *bytes = (int)h[2];
    *vocab = (int)h[4];
    return n;
}

static inline void dataloader_init(DataLoader* dl, const char* pattern, int B, int T, int rank,
                                   int world_size, int shuffle, uint64_t seed, int vocab_size) {
    memset(dl, 0, sizeof(*dl));
    if (pattern == NULL || pattern[0] == '\0') fatal("dataloader: empty data file pattern");
    if (B <= 0 || T <= 0) fatal("dataloader: B and T must be positive, got B=%d T=%d", B, T);
    if (world_size <= 0 || rank < 0 || rank >= world_size)
        fatal("dataloader: invalid rank %d of world size %d", rank, world_size);
    if (vocab_size <= 0) fatal("dataloader: vocab size must be positive, got %d", vocab_size);
    dl->B = B; dl->T = T; dl->rank = rank; dl->world_size = world_size;
    dl->shuffle = shuffle ? 1 : 0;
    dl->seed = seed;
    dl->vocab_size = vocab_size;
    size_t plen = strlen(pattern);
    dl->pattern = (char*)malloc_check(plen + 1);
    memcpy(dl->pattern, pattern, plen + 1);

    glob_t g;
    memset(&g, 0, sizeof(g));
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0))
        fatal("no data shards match '%s'; create them with dev/data/prepare.py (or check the "
              "path and the quoting of the glob)", pattern);
    if (rc != 0) fatal("glob of data pattern '%s' failed (glob error %d)", pattern, rc);
    if (g.gl_pathc > (size_t)INT32_MAX) fatal("too many data shards match '%s'", pattern);
    int ns = (int)g.gl_pathc;
    dl->n_shards = ns;
    dl->shard_paths = (char**)malloc_check((size_t)ns * sizeof(char*));
    for (int i = 0; i < ns; i++) {
        size_t len = strlen(g.gl_pathv[i]);
        dl->shard_paths[i] = (char*)malloc_check(len + 1);
        memcpy(dl->shard_paths[i], g.gl_pathv[i], len + 1);
    }
    globfree(&g);
    qsort(dl->shard_paths, (size_t)ns, sizeof(char*), dl_strcmp_ptr);

    dl->shard_tokens = (int64_t*)malloc_check((size_t)ns * sizeof(int64_t));
    dl->shard_bytes = (int*)malloc_check((size_t)ns * sizeof(int));
    dl->shard_first_sample = (int64_t*)malloc_check(((size_t)ns + 1) * sizeof(int64_t));
    dl->shard_files = (FILE**)calloc_check((size_t)ns, sizeof(FILE*));
    dl->shard_first_sample[0] = 0;
    for (int i = 0; i < ns; i++) {
        int bytes = 0, vocab = 0;
        int64_t n = dl_check_shard(dl->shard_paths[i], T, vocab_size, &bytes, &vocab);
        if (i == 0) {
            dl->vocab = vocab;
        } else if (vocab != dl->vocab) {
            fatal("data shards disagree on the vocabulary size: '%s' says %d, '%s' says %d "
                  "(made with different tokenizers?)", dl->shard_paths[0], dl->vocab,
                  dl->shard_paths[i], vocab);
        }
        dl->shard_tokens[i] = n;
        dl->shard_bytes[i] = bytes;
        dl->tokens_total += n;
        dl->shard_first_sample[i + 1] = dl->shard_first_sample[i] + (n - 1) / T;
    }
    dl->n_samples = dl->shard_first_sample[ns];
    int64_t per_batch = (int64_t)world_size * B;
    if (dl->n_samples < per_batch)
        fatal("data '%s' has %lld samples of T+1 = %d tokens, fewer than one global micro-batch of "
              "world_size x B = %d x %d = %lld samples", pattern, (long long)dl->n_samples, T + 1,
              world_size, B, (long long)per_batch);

    dl->inputs = (int*)malloc_check((size_t)B * (size_t)T * sizeof(int));
    dl->targets = (int*)malloc_check((size_t)B * (size_t)T * sizeof(int));
    dl->readbuf = (unsigned char*)malloc_check(((size_t)T + 1) * 4);
    if (dl->shuffle) {
        dl->perm = (int64_t*)malloc_check((size_t)dl->n_samples * sizeof(int64_t));
        dl_make_permutation(dl->perm, dl->n_samples, dl->seed, 0);
    }
    dl->perm_epoch = 0;
    dl->epoch = 0;
    dl->position = 0;
}

static inline FILE* dl_shard_file(DataLoader* dl, int s) {
    if (dl->shard_files[s] != NULL) return dl->shard_files[s];
    if (dl->n_open >= DATALOADER_MAX_OPEN_SHARDS) {
        for (int i = 0; i < dl->n_shards; i++) {
            if (dl->shard_files[i] != NULL) {
                fclose_check(dl->shard_files[i], dl->shard_paths[i]);
                dl->shard_files[i] = NULL;
            }
        }
        dl->n_open = 0;
    }
    dl->shard_files[s] = fopen_check(dl->shard_paths[s], "rb");
    dl->n_open++;
    return dl->shard_files[s];
}

// the global sample at index `idx` of the current epoch's order -> row b of the batch
static inline void dl_load_sample(DataLoader* dl, int64_t idx, int b) {
    int64_t sample = dl->perm != NULL ? dl->perm[idx] : idx;
    // shard s with first_sample[s] <= sample < first_sample[s+1] (binary search; empty shards
    // cannot occur, init rejects them)
    int lo = 0, hi = dl->n_shards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (dl->shard_first_sample[mid] <= sample) lo = mid; else hi = mid - 1;
    }
    int s = lo;
    int64_t j = sample - dl->shard_first_sample[s];
    int T = dl->T;
    int bytes = dl->shard_bytes[s];
    int64_t first_token = j * (int64_t)T;
    int64_t offset = SHARD_HEADER_BYTES + first_token * bytes;
    const char* path = dl->shard_paths[s];
    FILE* f = dl_shard_file(dl, s);
    fseek_check(f, offset, SEEK_SET, path);
    fread_check(dl->readbuf, (size_t)bytes, (size_t)T + 1, f, path);
    int* in = dl->inputs + (size_t)b * T;
    int* tg = dl->targets + (size_t)b * T;
    for (int t = 0; t <= T; t++) {
        uint32_t tok;
        if (bytes == 2) { uint16_t v; memcpy(&v, dl->readbuf + 2 * (size_t)t, 2); tok = v; }
        else            { memcpy(&tok, dl->readbuf + 4 * (size_t)t, 4); }
        if (tok >= (uint32_t)dl->vocab)
            fatal("data shard '%s': token %u at token offset %lld (byte offset %lld) is out of range, "
                  "the vocabulary size is %d (corrupt shard?)", path, tok, (long long)(first_token + t),
                  (long long)(offset + (int64_t)t * bytes), dl->vocab);
        if (t < T) in[t] = (int)tok;
        if (t > 0) tg[t - 1] = (int)tok;
    }
}

static inline void dl_ensure_permutation(DataLoader* dl) {
    if (dl->perm != NULL && dl->perm_epoch != dl->epoch) {
        dl_make_permutation(dl->perm, dl->n_samples, dl->seed, dl->epoch);
        dl->perm_epoch = dl->epoch;
    }
}

// load the next micro-batch of this rank into inputs/targets and advance
static inline void dataloader_next_batch(DataLoader* dl) {
    int64_t per_batch = (int64_t)dl->world_size * dl->B;
    if (dl->position + per_batch > dl->n_samples) {
        dl->epoch++;
        dl->position = 0;
    }
    dl_ensure_permutation(dl);
    int64_t base = dl->position + (int64_t)dl->rank * dl->B;
    for (int b = 0; b < dl->B; b++) dl_load_sample(dl, base + b, b);
    dl->position += per_batch;
}

// back to epoch 0, position 0 (e.g. before each validation pass)
static inline void dataloader_reset(DataLoader* dl) {
    dl->epoch = 0;
    dl->position = 0;
    dl_ensure_permutation(dl);
}

// global micro-batches per epoch (the same on every rank)
static inline int64_t dataloader_num_batches(const DataLoader* dl) {
    return dl->n_samples / ((int64_t)dl->world_size * dl->B);
}

static inline DataLoaderState dataloader_get_state(const DataLoader* dl) {
    DataLoaderState s;
    s.epoch = dl->epoch;
    s.position = dl->position;
    s.seed = dl->seed;
    s.n_samples = dl->n_samples;
    return s;
}

// resume at a saved position; the data and the seed must be those the state was saved with
static inline void dataloader_set_state(DataLoader* dl, const DataLoaderState* s) {
    if (s->n_samples != dl->n_samples)
        fatal("cannot resume the data loader: the saved state is for a data set of %lld samples, but "
              "'%s' now has %lld samples of T+1 = %d tokens (different data, or a different T?)",
              (long long)s->n_samples, dl->pattern, (long long)dl->n_samples, dl->T + 1);
    if (s->seed != dl->seed)
        fatal("cannot resume the data loader on '%s': the saved state has shuffle seed %llu, the loader "
              "was created with seed %llu", dl->pattern, (unsigned long long)s->seed,
              (unsigned long long)dl->seed);
    if (s->epoch < 0 || s->position < 0 || s->position > dl->n_samples)
        fatal("cannot resume the data loader on '%s': invalid saved position (epoch %lld, position %lld "
              "of %lld samples)", dl->pattern, (long long)s->epoch, (long long)s->position,
              (long long)dl->n_samples);
    dl->epoch = s->epoch;
    dl->position = s->position;
    dl_ensure_permutation(dl);
}

static inline void dataloader_free(DataLoader* dl) {
    for (int i = 0; i < dl->n_shards; i++) {
        if (dl->shard_files != NULL && dl->shard_files[i] != NULL) fclose(dl->shard_files[i]);
        if (dl->shard_paths != NULL) free(dl->shard_paths[i]);
    }
    free(dl->shard_files);
    free(dl->shard_paths);
    free(dl->shard_tokens);
    free(dl->shard_bytes);
    free(dl->shard_first_sample);
    free(dl->perm);
    free(dl->readbuf);
    free(dl->inputs);
    free(dl->targets);
    free(dl->pattern);
    memset(dl, 0, sizeof(*dl));
}

#endif // GRASS_DATALOADER_H
