/*
 * test_dataloader.c: tests of dataloader.h. Writes its own shards into a mkdtemp directory.
 * build: g++ -x c++ -O2 -Wall -I. tests/test_dataloader.c -o tests/bin/test_dataloader
 */
#include "dataloader.h"
#include "tests/test_util.h"
#include <unistd.h>
#include <fcntl.h>
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>

static char g_dir[1024];

// path of a file in the temp dir (rotating static buffers, enough for one expression)
static const char* tpath(const char* name) {
    static char bufs[8][4096];
    static int k = 0;
    char* p = bufs[k++ % 8];
    snprintf(p, 4096, "%s/%s", g_dir, name);
    return p;
}

static void write_u16(const char* path, const uint32_t* tok, int64_t n, int vocab) {
    uint16_t* t = (uint16_t*)malloc_check((size_t)n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++) t[i] = (uint16_t)tok[i];
    write_shard(path, t, n, 2, vocab);
    free(t);
}

// a shard with an arbitrary header (for the bad-input tests); ntok_written tokens of zeros
static void write_raw_shard(const char* path, int64_t magic, int64_t version, int64_t bytes,
                            int64_t n_header, int64_t vocab, int64_t bytes_of_data) {
    int64_t h[8] = {magic, version, bytes, n_header, vocab, 0, 0, 0};
    FILE* f = fopen_check(path, "wb");
    fwrite_check(h, sizeof(int64_t), 8, f, path);
    if (bytes_of_data > 0) {
        unsigned char* z = (unsigned char*)calloc_check((size_t)bytes_of_data, 1);
        fwrite_check(z, 1, (size_t)bytes_of_data, f, path);
        free(z);
    }
    fclose_check(f, path);
}

// does row b of (inputs, targets) hold the window starting at tok[start]?
static int row_matches(const DataLoader* dl, int b, const uint32_t* tok, int64_t start) {
    for (int t = 0; t < dl->T; t++) {
        if (dl->inputs[(size_t)b * dl->T + t] != (int)tok[start + t]) return 0;
        if (dl->targets[(size_t)b * dl->T + t] != (int)tok[start + t + 1]) return 0;
    }
    return 1;
}

// ----------------------------------------------------------------------------

static void test_exact_single_shard(int bytes) {
    const int64_t N = 100;
    const int T = 8, B = 2;
    const int vocab = bytes == 2 ? 50000 : 100000;
    uint32_t tok[100];
    for (int64_t i = 0; i < N; i++) tok[i] = (uint32_t)((i * 7919 + 3) % vocab);
    tok[N - 1] = (uint32_t)(vocab - 1);  // largest legal token, last token of the shard
    const char* path = tpath(bytes == 2 ? "exact16_000.bin" : "exact32_000.bin");
    if (bytes == 2) write_u16(path, tok, N, vocab);
    else write_shard(path, tok, N, 4, vocab);

    DataLoader dl;
    dataloader_init(&dl, path, B, T, 0, 1, 0, 0, vocab + 10);
    CHECK(dl.n_shards == 1, "n_shards %d", dl.n_shards);
    CHECK(dl.n_samples == (N - 1) / T, "n_samples %lld", (long long)dl.n_samples);
    CHECK(dl.tokens_total == N, "tokens_total %lld", (long long)dl.tokens_total);
    CHECK(dl.vocab == vocab, "vocab %d", dl.vocab);
    CHECK(dataloader_num_batches(&dl) == 6, "num_batches %lld", (long long)dataloader_num_batches(&dl));
    // samples start at j*T and overlap by one token: inputs/targets exact
    for (int k = 0; k < 6; k++) {
        dataloader_next_batch(&dl);
        for (int b = 0; b < B; b++) {
            int64_t j = (int64_t)k * B + b;
            CHECK(row_matches(&dl, b, tok, j * T), "bytes %d batch %d row %d", bytes, k, b);
        }
        CHECK(dl.epoch == 0, "epoch %lld in batch %d", (long long)dl.epoch, k);
    }
    // explicit check of the first values
    CHECK(dl.epoch == 0 && dl.position == 12, "position %lld", (long long)dl.position);
    // next epoch wraps to the start
    dataloader_next_batch(&dl);
    CHECK(dl.epoch == 1, "epoch after wrap %lld", (long long)dl.epoch);
    CHECK(row_matches(&dl, 0, tok, 0) && row_matches(&dl, 1, tok, T), "wrap to sample 0");
    dataloader_reset(&dl);
    CHECK(dl.epoch == 0 && dl.position == 0, "reset");
    dataloader_next_batch(&dl);
    CHECK(dl.inputs[0] == (int)tok[0] && dl.targets[0] == (int)tok[1] && dl.inputs[T] == (int)tok[T] &&
          dl.targets[T - 1] == (int)tok[T], "first values after reset");
    dataloader_free(&dl);

    // the last sample of a shard may end on its last token: N = 3T+1 -> 3 samples
    const char* p2 = tpath(bytes == 2 ? "edge16.bin" : "edge32.bin");
    if (bytes == 2) write_u16(p2, tok, 3 * T + 1, vocab);
    else write_shard(p2, tok, 3 * T + 1, 4, vocab);
    dataloader_init(&dl, p2, 1, T, 0, 1, 0, 0, vocab);
    CHECK(dl.n_samples == 3, "edge n_samples %lld", (long long)dl.n_samples);
    for (int k = 0; k < 3; k++) {
        dataloader_next_batch(&dl);
        CHECK(row_matches(&dl, 0, tok, (int64_t)k * T), "edge sample %d", k);
    }
    dataloader_free(&dl);
}

// three shards with different lengths, written out of name order; glob sorted by name
static uint32_t g_ms_tok[3][64];
static const int64_t g_ms_n[3] = {50, 33, 20};  // T=8: 6, 4, 2 samples
static void make_multishard(void) {
    int order[3] = {2, 0, 1};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 64; i++) g_ms_tok[s][i] = (uint32_t)(1000 * (s + 1) + i);
    for (int k = 0; k < 3; k++) {
        int s = order[k];
        char name[64];
        snprintf(name, sizeof(name), "ms_train_%06d.bin", s);
        write_shard(tpath(name), g_ms_tok[s], g_ms_n[s], 4, 5000);
    }
}

// global sample g of the multishard set -> (shard, start token)
static void ms_locate(int64_t g, int* s, int64_t* start) {
    const int T = 8;
    for (int k = 0; k < 3; k++) {
        int64_t ns = (g_ms_n[k] - 1) / T;
        if (g < ns) { *s = k; *start = g * T; return; }
        g -= ns;
    }
    *s = -1; *start = -1;
}

static void test_multishard_order(void) {
    const int T = 8;
    DataLoader dl;
    dataloader_init(&dl, tpath("ms_train_*.bin"), 1, T, 0, 1, 0, 0, 5000);
    CHECK(dl.n_shards == 3, "n_shards %d", dl.n_shards);
    CHECK(dl.n_samples == 12, "n_samples %lld", (long long)dl.n_samples);
    CHECK(dl.tokens_total == 103, "tokens_total %lld", (long long)dl.tokens_total);
    CHECK(strstr(dl.shard_paths[0], "000000") && strstr(dl.shard_paths[2], "000002"), "sorted paths");
    for (int64_t g = 0; g < 12; g++) {
        dataloader_next_batch(&dl);
        int s; int64_t start;
        ms_locate(g, &s, &start);
        CHECK(row_matches(&dl, 0, g_ms_tok[s], start), "multishard sample %lld (shard %d start %lld)",
              (long long)g, s, (long long)start);
    }
    dataloader_free(&dl);
    // B=5: 2 batches per epoch, samples 10 and 11 dropped, then the next epoch starts at 0
    dataloader_init(&dl, tpath("ms_train_*.bin"), 5, T, 0, 1, 0, 0, 5000);
    CHECK(dataloader_num_batches(&dl) == 2, "num_batches %lld", (long long)dataloader_num_batches(&dl));
    dataloader_next_batch(&dl);
    dataloader_next_batch(&dl);
    int s; int64_t start;
    ms_locate(9, &s, &start);
    CHECK(row_matches(&dl, 4, g_ms_tok[s], start) && dl.epoch == 0, "second batch ends at sample 9");
    dataloader_next_batch(&dl);
    CHECK(dl.epoch == 1 && row_matches(&dl, 0, g_ms_tok[0], 0), "tail dropped, epoch 1 starts at 0");
    dataloader_free(&dl);
}

// the union over ranks of one global micro-batch equals the single-rank batch of B*world
static void test_ranks(int shuffle) {
    const int T = 8, world = 3, B = 1;
    DataLoader ref;
    dataloader_init(&ref, tpath("ms_train_*.bin"), B * world, T, 0, 1, shuffle, 42, 5000);
    DataLoader r[3];
    for (int k = 0; k < world; k++) dataloader_init(&r[k], tpath("ms_train_*.bin"), B, T, k, world, shuffle, 42, 5000);
    CHECK(dataloader_num_batches(&r[0]) == dataloader_num_batches(&ref), "num_batches agree");
    int ok = 1;
    for (int step = 0; step < 10; step++) {  // 2.5 epochs
        dataloader_next_batch(&ref);
        for (int k = 0; k < world; k++) {
            dataloader_next_batch(&r[k]);
            if (r[k].epoch != ref.epoch) ok = 0;
            if (memcmp(r[k].inputs, ref.inputs + (size_t)k * B * T, sizeof(int) * B * T) != 0) ok = 0;
            if (memcmp(r[k].targets, ref.targets + (size_t)k * B * T, sizeof(int) * B * T) != 0) ok = 0;
        }
        // disjoint: the first tokens (unique per sample here) of the 3 rows differ
        for (int a = 0; a < B * world; a++)
            for (int b = a + 1; b < B * world; b++)
                if (ref.inputs[(size_t)a * T] == ref.inputs[(size_t)b * T]) ok = 0;
    }
    CHECK(ok, "ranks (shuffle %d): rank k's batch == rows [k*B, k*B+B) of the single-rank batch", shuffle);
    for (int k = 0; k < world; k++) dataloader_free(&r[k]);
    dataloader_free(&ref);
}

// shuffle: token i of the shard is i, so a sample's first input token / T is its index
static void read_order(DataLoader* dl, int64_t n_batches, int64_t* out) {
    for (int64_t k = 0; k < n_batches; k++) {
        dataloader_next_batch(dl);
        for (int b = 0; b < dl->B; b++) out[k * dl->B + b] = dl->inputs[(size_t)b * dl->T] / dl->T;
    }
}

static void test_shuffle(void) {
    const int T = 4;
    const int64_t N = 50 * T + 1;  // 50 samples
    uint32_t* tok = (uint32_t*)malloc_check((size_t)N * sizeof(uint32_t));
    for (int64_t i = 0; i < N; i++) tok[i] = (uint32_t)i;
    write_shard(tpath("shuf.bin"), tok, N, 4, 1000);
    free(tok);
    int64_t a1[50], a2[50], b1[50], c1[50];
    DataLoader a, b, c;
    dataloader_init(&a, tpath("shuf.bin"), 1, T, 0, 1, 1, 1234, 1000);
    dataloader_init(&b, tpath("shuf.bin"), 1, T, 0, 1, 1, 1234, 1000);
    dataloader_init(&c, tpath("shuf.bin"), 1, T, 0, 1, 1, 1235, 1000);
    read_order(&a, 50, a1);
    read_order(&a, 50, a2);
    read_order(&b, 50, b1);
    read_order(&c, 50, c1);
    int seen1[50] = {0}, seen2[50] = {0}, seenc[50] = {0};
    int ident = 1, same_ab = 1, diff_ac = 0, diff_e12 = 0;
    for (int i = 0; i < 50; i++) {
        if (a1[i] >= 0 && a1[i] < 50) seen1[a1[i]]++;
        if (a2[i] >= 0 && a2[i] < 50) seen2[a2[i]]++;
        if (c1[i] >= 0 && c1[i] < 50) seenc[c1[i]]++;
        if (a1[i] != i) ident = 0;
        if (a1[i] != b1[i]) same_ab = 0;
        if (a1[i] != c1[i]) diff_ac = 1;
        if (a1[i] != a2[i]) diff_e12 = 1;
    }
    int perm1 = 1, perm2 = 1, permc = 1;
    for (int i = 0; i < 50; i++) { perm1 &= seen1[i] == 1; perm2 &= seen2[i] == 1; permc &= seenc[i] == 1; }
    CHECK(perm1 && perm2 && permc, "every sample exactly once per epoch");
    CHECK(!ident, "shuffled order is not the identity");
    CHECK(same_ab, "same seed, same order");
    CHECK(diff_ac, "different seed, different order");
    CHECK(diff_e12, "epoch 2 differs from epoch 1");
    CHECK(a.epoch == 1, "after 100 samples in epoch %lld", (long long)a.epoch);
    // the order does not depend on B: B=5 sees the same sequence
    DataLoader d;
    dataloader_init(&d, tpath("shuf.bin"), 5, T, 0, 1, 1, 1234, 1000);
    int64_t d1[50];
    read_order(&d, 10, d1);
    CHECK(memcmp(d1, a1, sizeof(d1)) == 0, "order independent of B");
    // B=3: 16 batches per epoch, 48 distinct samples, 2 dropped
    DataLoader e;
    dataloader_init(&e, tpath("shuf.bin"), 3, T, 0, 1, 1, 1234, 1000);
    int64_t e1[48];
    read_order(&e, 16, e1);
    int seene[50] = {0}, once = 1;
    for (int i = 0; i < 48; i++) seene[e1[i]]++;
    for (int i = 0; i < 50; i++) once &= seene[i] <= 1;
    CHECK(once && e.epoch == 0 && memcmp(e1, a1, sizeof(e1)) == 0, "B=3: 48 distinct samples, prefix of the order");
    dataloader_next_batch(&e);
    CHECK(e.epoch == 1 && e.inputs[0] / T == a2[0], "B=3: epoch 1 starts with epoch 1's order");
    // reset returns to epoch 0's order
    dataloader_reset(&a);
    int64_t r1[50];
    read_order(&a, 50, r1);
    CHECK(memcmp(r1, a1, sizeof(r1)) == 0, "reset restores epoch 0's order");
    // the permutation is a fixed function of (seed, epoch): golden values guard against changes
    int64_t p[10];
    dl_make_permutation(p, 10, 1234, 0);
    // (values from an independent Python implementation of the algorithm in docs/DATALOADER.md)
    const int64_t gold0[10] = {8, 1, 4, 2, 6, 9, 0, 3, 7, 5};
    const int64_t gold1[10] = {2, 4, 7, 5, 3, 8, 6, 9, 1, 0};
    CHECK(memcmp(p, gold0, sizeof(p)) == 0, "permutation (seed 1234, epoch 0) matches golden values");
    dl_make_permutation(p, 10, 1234, 1);
    CHECK(memcmp(p, gold1, sizeof(p)) == 0, "permutation (seed 1234, epoch 1) matches golden values");
    dataloader_free(&a); dataloader_free(&b); dataloader_free(&c); dataloader_free(&d); dataloader_free(&e);
}

static void test_state(void) {
    const int T = 8, B = 2, world = 2;
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int rank = 0; rank < world; rank++) {
            DataLoader a;
            dataloader_init(&a, tpath("ms_train_*.bin"), B, T, rank, world, shuffle, 77, 5000);
            // 12 samples, 4 per global micro-batch: 3 per epoch; 7 batches crosses two epochs
            for (int k = 0; k < 7; k++) dataloader_next_batch(&a);
            DataLoaderState s = dataloader_get_state(&a);
            CHECK(s.epoch == 2 && s.position == 4 && s.seed == 77 && s.n_samples == 12,
                  "state epoch %lld position %lld", (long long)s.epoch, (long long)s.position);
            int want[5][2 * 8 * 2];
            for (int k = 0; k < 5; k++) {
                dataloader_next_batch(&a);
                memcpy(want[k], a.inputs, sizeof(int) * B * T);
                memcpy(want[k] + B * T, a.targets, sizeof(int) * B * T);
            }
            DataLoader f;
            dataloader_init(&f, tpath("ms_train_*.bin"), B, T, rank, world, shuffle, 77, 5000);
            dataloader_set_state(&f, &s);
            int ok = 1;
            for (int k = 0; k < 5; k++) {
                dataloader_next_batch(&f);
                if (memcmp(want[k], f.inputs, sizeof(int) * B * T) != 0) ok = 0;
                if (memcmp(want[k] + B * T, f.targets, sizeof(int) * B * T) != 0) ok = 0;
            }
            CHECK(ok, "restored loader (shuffle %d rank %d) gives identical next batches", shuffle, rank);
            CHECK(f.epoch == a.epoch && f.position == a.position, "same position after resume");
            dataloader_free(&a);
            dataloader_free(&f);
        }
    }
}

// ----------------------------------------------------------------------------
// bad inputs: run `fn` in a child with stderr redirected; it must exit(1) and the message must
// contain every string in `needles` (NULL-terminated)

typedef void (*child_fn)(void);
static const char* g_child_arg;

static void expect_fatal(const char* what, child_fn fn, const char* arg, const char** needles) {
    const char* errpath = tpath("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    g_child_arg = arg;
    pid_t pid = fork();
    if (pid < 0) { CHECK(0, "%s: fork failed", what); return; }
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(99);
        dup2(fd, 2);
        close(fd);
        fn();
        _exit(0);  // reaching here means no error was raised
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    CHECK(code == 1, "%s: child exit status %d, expected 1", what, code);
    char msg[4096] = {0};
    FILE* f = fopen(errpath, "rb");
    if (f) { size_t n = fread(msg, 1, sizeof(msg) - 1, f); msg[n] = 0; fclose(f); }
    for (int i = 0; needles[i] != NULL; i++)
        CHECK(strstr(msg, needles[i]) != NULL, "%s: message does not contain '%s': %s", what, needles[i], msg);
}

static void child_init(void) {
    DataLoader dl;
    dataloader_init(&dl, g_child_arg, 1, 8, 0, 1, 0, 0, 5000);
}
static void child_init_and_read(void) {
    DataLoader dl;
    dataloader_init(&dl, g_child_arg, 1, 8, 0, 1, 0, 0, 5000);
    for (int64_t k = 0; k < dl.n_samples; k++) dataloader_next_batch(&dl);
}
static void child_small_vocab(void) {
    DataLoader dl;
    dataloader_init(&dl, g_child_arg, 1, 8, 0, 1, 0, 0, 4000);  // shards say 5000
}
static void child_state_other_data(void) {
    DataLoader a, b;
    dataloader_init(&a, tpath("ms_train_*.bin"), 1, 8, 0, 1, 1, 5, 5000);
    dataloader_next_batch(&a);
    DataLoaderState s = dataloader_get_state(&a);
    dataloader_init(&b, g_child_arg, 1, 8, 0, 1, 1, 5, 5000);
    dataloader_set_state(&b, &s);
}
static void child_state_other_seed(void) {
    DataLoader a, b;
    dataloader_init(&a, g_child_arg, 1, 8, 0, 1, 1, 5, 5000);
    DataLoaderState s = dataloader_get_state(&a);
    dataloader_init(&b, g_child_arg, 1, 8, 0, 1, 1, 6, 5000);
    dataloader_set_state(&b, &s);
}

static void test_bad_inputs(void) {
    char num[64];
    const int64_t n = 40;  // tokens in the good-size cases
    {
        const char* p = tpath("bad_magic.bin");
        write_raw_shard(p, 20261105, 1, 2, n, 5000, n * 2);
        const char* nd[] = {p, "magic", "20261105", NULL};
        expect_fatal("bad magic", child_init, p, nd);
    }
    {
        const char* p = tpath("bad_version.bin");
        write_raw_shard(p, SHARD_MAGIC, 2, 2, n, 5000, n * 2);
        const char* nd[] = {p, "version 2", NULL};
        expect_fatal("wrong version", child_init, p, nd);
    }
    {
        const char* p = tpath("bad_bytes.bin");
        write_raw_shard(p, SHARD_MAGIC, 1, 3, n, 5000, n * 3);
        const char* nd[] = {p, "bytes per token", NULL};
        expect_fatal("bad bytes per token", child_init, p, nd);
    }
    {
        const char* p = tpath("truncated.bin");
        write_raw_shard(p, SHARD_MAGIC, 1, 2, n, 5000, n * 2 - 1);
        const char* nd[] = {p, "truncated", NULL};
        expect_fatal("truncated file", child_init, p, nd);
    }
    {
        const char* p = tpath("header_only.bin");
        FILE* f = fopen_check(p, "wb");
        fwrite_check("short", 1, 5, f, p);
        fclose_check(f, p);
        const char* nd[] = {p, "header", NULL};
        expect_fatal("file shorter than the header", child_init, p, nd);
    }
    {
        const char* p = tpath("too_long.bin");
        write_raw_shard(p, SHARD_MAGIC, 1, 4, n, 5000, n * 4 + 4);
        const char* nd[] = {p, "longer", NULL};
        expect_fatal("file too long", child_init, p, nd);
    }
    {
        const char* p = tpath("too_few.bin");
        write_raw_shard(p, SHARD_MAGIC, 1, 2, 8, 5000, 8 * 2);  // T=8 needs 9 tokens
        const char* nd[] = {p, "T+1 = 9", NULL};
        expect_fatal("shard without a full sample", child_init, p, nd);
    }
    {
        const char* p = tpath("range_000.bin");
        uint32_t tok[40];
        for (int i = 0; i < 40; i++) tok[i] = (uint32_t)i;
        tok[29] = 5000;  // == vocab: out of range; token offset 29, byte offset 64 + 29*4 = 180
        write_shard(p, tok, 40, 4, 5000);
        const char* nd[] = {p, "token offset 29", "byte offset 180", "5000", NULL};
        expect_fatal("token out of range", child_init_and_read, p, nd);
    }
    {
        const char* nd[] = {tpath("ms_train_000000.bin"), "5000", "4000", NULL};
        expect_fatal("vocab mismatch", child_small_vocab, tpath("ms_train_*.bin"), nd);
    }
    {
        // shards that disagree on the vocabulary
        uint32_t tok[20];
        for (int i = 0; i < 20; i++) tok[i] = (uint32_t)i;
        write_shard(tpath("mixv_0.bin"), tok, 20, 4, 5000);
        write_shard(tpath("mixv_1.bin"), tok, 20, 4, 4096);
        const char* nd[] = {tpath("mixv_0.bin"), tpath("mixv_1.bin"), "4096", NULL};
        expect_fatal("shards disagree on vocab", child_init, tpath("mixv_*.bin"), nd);
    }
    {
        const char* p = tpath("nothing_here_*.bin");
        const char* nd[] = {p, "no data shards match", "prepare.py", NULL};
        expect_fatal("no matching files", child_init, p, nd);
    }
    {
        const char* p = tpath("other_data.bin");
        uint32_t tok[90];
        for (int i = 0; i < 90; i++) tok[i] = (uint32_t)i;
        write_shard(p, tok, 90, 4, 5000);  // 11 samples, not 12
        snprintf(num, sizeof(num), "%d samples", 11);
        const char* nd[] = {p, "12 samples", num, NULL};
        expect_fatal("state restored on different data", child_state_other_data, p, nd);
        const char* nd2[] = {p, "seed 5", "seed 6", NULL};
        expect_fatal("state restored with a different seed", child_state_other_seed, p, nd2);
    }
}

// a sparse shard of about 5.4 GB: offsets past 2^31 and 2^32 bytes, token indices past 2^31
static void test_large_offsets(void) {
    const int T = 16, B = 2;
    const int64_t N = 2700000000LL;  // uint16: 64 + 5.4e9 bytes
    const char* p = tpath("big.bin");
    int64_t h[8] = {SHARD_MAGIC, SHARD_VERSION, 2, N, 32000, 0, 0, 0};
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open %s", p);
    if (fd < 0) return;
    int ok = ftruncate(fd, (off_t)(SHARD_HEADER_BYTES + N * 2)) == 0;
    CHECK(ok, "ftruncate of the sparse file %s: %s", p, strerror(errno));
    ok = ok && pwrite(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h);
    // the last B samples of the shard, written as a known pattern
    int64_t n_samples = (N - 1) / T;
    int64_t first = (n_samples - B) * T;  // first token of the last B samples
    int64_t count = (int64_t)B * T + 1;
    uint16_t* pat = (uint16_t*)malloc_check((size_t)count * sizeof(uint16_t));
    for (int64_t i = 0; i < count; i++) pat[i] = (uint16_t)((first + i) % 31991);
    ok = ok && pwrite(fd, pat, (size_t)count * 2, (off_t)(SHARD_HEADER_BYTES + first * 2)) == (ssize_t)(count * 2);
    close(fd);
    CHECK(ok, "writing the sparse shard");
    CHECK(SHARD_HEADER_BYTES + first * 2 > (1LL << 32), "pattern lies past 4 GiB");

    DataLoader dl;
    dataloader_init(&dl, p, B, T, 0, 1, 0, 0, 32000);
    CHECK(dl.n_samples == n_samples, "big n_samples %lld", (long long)dl.n_samples);
    CHECK(dl.tokens_total == N, "big tokens_total");
    DataLoaderState s = dataloader_get_state(&dl);
    s.position = n_samples - B;
    dataloader_set_state(&dl, &s);
    dataloader_next_batch(&dl);
    int match = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t i = (int64_t)b * T + t;
            if (dl.inputs[b * T + t] != (int)pat[i]) match = 0;
            if (dl.targets[b * T + t] != (int)pat[i + 1]) match = 0;
        }
    CHECK(match, "tokens read past 4 GiB match the pattern");
    CHECK(dl.epoch == 0, "still epoch 0");
    // a sample in the middle (offset ~2.7 GB, in the hole) reads zeros
    s.position = (int64_t)(1400000000LL / T);
    dataloader_set_state(&dl, &s);
    dataloader_next_batch(&dl);
    int zeros = 1;
    for (int i = 0; i < B * T; i++) zeros &= dl.inputs[i] == 0 && dl.targets[i] == 0;
    CHECK(zeros, "sample at ~2.8 GB offset reads the hole's zeros");
    dataloader_free(&dl);
    free(pat);
    unlink(p);
}

static void cleanup_dir(void) {
    DIR* d = opendir(g_dir);
    if (d == NULL) return;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        unlink(tpath(e->d_name));
    }
    closedir(d);
    rmdir(g_dir);
}

int main(void) {
    test_line_buffered_stdout();
    const char* tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/grass_dl_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(g_dir) == NULL) fatal("mkdtemp '%s': %s", g_dir, strerror(errno));

    test_exact_single_shard(2);
    test_exact_single_shard(4);
    make_multishard();
    test_multishard_order();
    test_ranks(0);
    test_ranks(1);
    test_shuffle();
    test_state();
    test_bad_inputs();
    test_large_offsets();

    cleanup_dir();
    return test_summary("test_dataloader");
}
