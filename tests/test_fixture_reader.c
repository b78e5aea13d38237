/*
 * test_fixture_reader.c: loads every HF reference fixture with tests/fixture.h and checks it:
 * the tensor list and order (docs/FORMATS.md), every shape against the header's config, the ids,
 * that loss equals the cross-entropy recomputed here in double from logits and targets, that the
 * gradients are finite and non-trivial, two exact properties of the gradients (rows of the embedding
 * gradient of tokens absent from the input are zero when untied; the rows of the LM-head gradient sum
 * to zero, since softmax minus one-hot sums to zero over the vocabulary), and that damaged files are
 * refused with a message naming the file.
 *
 *   gcc -O2 -Wall -Wextra -o tests/bin/test_fixture_reader tests/test_fixture_reader.c -lm
 *   ./tests/bin/test_fixture_reader                        # from the repository root
 *   ./tests/bin/test_fixture_reader path/to/a.bin ...      # other fixtures
 */
#include "fixture.h"
#include "test_util.h"
#include <math.h>
#include <unistd.h>
#include <sys/wait.h>

static const char* DEFAULT_FIXTURES[] = {
    "tests/fixtures/tiny_gqa.bin", "tests/fixtures/tiny_mha_tied.bin", "tests/fixtures/tiny_odd.bin",
};

// canonical parameter i's name and shape; returns the number of dims, or 0 past the end
static int param_spec(const Fixture* fx, int i, char* name, size_t len, int* dims) {
    int hd = fx->dim / fx->n_heads, q = fx->n_heads * hd, kv = fx->n_kv_heads * hd;
    int d = fx->dim, f = fx->ffn_dim;
    int n_params = 1 + 9 * fx->n_layers + 1 + (fx->tie_embeddings ? 0 : 1);
    if (i < 0 || i >= n_params) return 0;
    if (i == 0) { snprintf(name, len, "model.embed_tokens.weight"); dims[0] = fx->vocab_size; dims[1] = d; return 2; }
    if (i == 1 + 9 * fx->n_layers) { snprintf(name, len, "model.norm.weight"); dims[0] = d; return 1; }
    if (i == 2 + 9 * fx->n_layers) { snprintf(name, len, "lm_head.weight"); dims[0] = fx->vocab_size; dims[1] = d; return 2; }
    int l = (i - 1) / 9, k = (i - 1) % 9;
    static const char* sub[9] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                 "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                                 "mlp.down_proj"};
    const int shapes[9][2] = {{d, 0}, {q, d}, {kv, d}, {kv, d}, {d, q}, {d, 0}, {f, d}, {f, d}, {d, f}};
    snprintf(name, len, "model.layers.%d.%s.weight", l, sub[k]);
    dims[0] = shapes[k][0];
    dims[1] = shapes[k][1];
    return shapes[k][1] == 0 ? 1 : 2;
}

static int shape_is(const FixtureTensor* t, int ndim, const int* dims) {
    if (t->ndim != ndim) return 0;
    for (int k = 0; k < ndim; k++) if (t->dims[k] != dims[k]) return 0;
    return 1;
}

static int all_finite(const FixtureTensor* t) {
    for (int64_t i = 0; i < t->numel; i++) if (!isfinite(t->data[i])) return 0;
    return 1;
}

static void check_fixture(const char* path) {
    Fixture fx;
    fixture_load(&fx, path);
    const char* p = path;
    LlamaConfig c = fixture_config(&fx);
    char err[256];
    CHECK(llama_config_validate(&c, err, sizeof(err)), "%s: config invalid: %s", p, err);
    CHECK(fx.T <= fx.max_seq_len, "%s: T %d > max_seq_len %d", p, fx.T, fx.max_seq_len);
    int B = fx.B, T = fx.T, V = fx.vocab_size;

    // tensor list: input_ids, targets, params..., logits, loss, grad.params...
    int n_params = 1 + 9 * fx.n_layers + 1 + (fx.tie_embeddings ? 0 : 1);
    CHECK(fx.n_tensors == 4 + 2 * n_params, "%s: %d tensors, expected %d", p, fx.n_tensors, 4 + 2 * n_params);
    CHECK(fx.n_tensors > 1 && strcmp(fx.tensors[0].name, "input_ids") == 0 && strcmp(fx.tensors[1].name, "targets") == 0,
          "%s: input_ids/targets not first", p);
    CHECK(fixture_has(&fx, "lm_head.weight") == !fx.tie_embeddings, "%s: lm_head.weight presence vs tied %d", p,
          fx.tie_embeddings);
    CHECK(!fixture_has(&fx, "no.such.tensor"), "%s: fixture_has of a missing name", p);
    for (int i = 0; i < n_params; i++) {
        char name[256], gname[300];
        int dims[2];
        int nd = param_spec(&fx, i, name, sizeof(name), dims);
        snprintf(gname, sizeof(gname), "grad.%s", name);
        int pi = 2 + i, gi = 4 + n_params + i;
        CHECK(pi < fx.n_tensors && strcmp(fx.tensors[pi].name, name) == 0, "%s: tensor %d is not %s", p, pi, name);
        CHECK(gi < fx.n_tensors && strcmp(fx.tensors[gi].name, gname) == 0, "%s: tensor %d is not %s", p, gi, gname);
        if (!fixture_has(&fx, name) || !fixture_has(&fx, gname)) continue;
        const FixtureTensor* w = fixture_tensor(&fx, name);
        const FixtureTensor* g = fixture_tensor(&fx, gname);
        CHECK(shape_is(w, nd, dims), "%s: %s has the wrong shape", p, name);
        CHECK(shape_is(g, nd, dims), "%s: %s has the wrong shape", p, gname);
        CHECK(all_finite(w) && all_finite(g), "%s: %s or its grad not finite", p, name);
        double gmax = 0.0;
        for (int64_t j = 0; j < g->numel; j++) gmax = fmax(gmax, fabs(g->data[j]));
        CHECK(gmax > 0.0, "%s: %s is all zero", p, gname);
    }
    CHECK(n_params + 2 < fx.n_tensors && strcmp(fx.tensors[n_params + 2].name, "logits") == 0 &&
          strcmp(fx.tensors[n_params + 3].name, "loss") == 0, "%s: logits/loss not after the parameters", p);

    int64_t n_ids, n_tg, n_lg, n_loss;
    const float* ids = fixture_get(&fx, "input_ids", &n_ids);
    const float* tg = fixture_get(&fx, "targets", &n_tg);
    const float* lg = fixture_get(&fx, "logits", &n_lg);
    const float* loss = fixture_get(&fx, "loss", &n_loss);
    int bt[2] = {B, T}, btv[3] = {B, T, V}, one[1] = {1};
    CHECK(shape_is(fixture_tensor(&fx, "input_ids"), 2, bt) && n_ids == (int64_t)B * T, "%s: input_ids shape", p);
    CHECK(shape_is(fixture_tensor(&fx, "targets"), 2, bt) && n_tg == (int64_t)B * T, "%s: targets shape", p);
    CHECK(shape_is(fixture_tensor(&fx, "logits"), 3, btv) && n_lg == (int64_t)B * T * V, "%s: logits shape", p);
    CHECK(shape_is(fixture_tensor(&fx, "loss"), 1, one) && n_loss == 1, "%s: loss shape", p);
    CHECK(all_finite(fixture_tensor(&fx, "logits")), "%s: logits not finite", p);
    int ids_ok = 1;
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        if (ids[i] != floorf(ids[i]) || ids[i] < 0 || ids[i] >= V) ids_ok = 0;
        if (tg[i] != floorf(tg[i]) || tg[i] < 0 || tg[i] >= V) ids_ok = 0;
    }
    CHECK(ids_ok, "%s: input_ids/targets are not integers in [0, V)", p);

    // loss = mean over B*T of logsumexp(logits) - logits[target], in double
    double ce = 0.0, lsum = 0.0;
    for (int64_t i = 0; ids_ok && i < (int64_t)B * T; i++) {
        const float* row = lg + i * V;
        double m = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++) { m = fmax(m, (double)row[v]); lsum += row[v]; }
        for (int v = 0; v < V; v++) s += exp((double)row[v] - m);
        ce += m + log(s) - (double)row[(int)tg[i]];
    }
    ce /= (double)B * T;
    CHECK_CLOSE(loss[0], ce, 1e-6, 2e-6, "loss vs cross-entropy recomputed in double");

    // the LM-head gradient's rows sum to zero (untied); embedding rows of absent tokens have zero grad
    double colsum_max = 0.0, gmax = 0.0;
    int absent_zero = 1, present_nonzero = 1;
    if (!fx.tie_embeddings) {
        const float* glm = fixture_get(&fx, "grad.lm_head.weight", NULL);
        for (int j = 0; j < fx.dim; j++) {
            double s = 0.0;
            for (int v = 0; v < V; v++) { s += glm[(int64_t)v * fx.dim + j]; gmax = fmax(gmax, fabs(glm[(int64_t)v * fx.dim + j])); }
            colsum_max = fmax(colsum_max, fabs(s));
        }
        CHECK(colsum_max <= 1e-6 * gmax * V, "%s: rows of grad.lm_head.weight sum to %g (max |g| %g)", p, colsum_max, gmax);
        const float* gemb = fixture_get(&fx, "grad.model.embed_tokens.weight", NULL);
        char* present = (char*)calloc_check((size_t)V, 1);
        for (int64_t i = 0; i < (int64_t)B * T; i++) present[(int)ids[i]] = 1;
        for (int v = 0; v < V; v++) {
            double a = 0.0;
            for (int j = 0; j < fx.dim; j++) a += fabs(gemb[(int64_t)v * fx.dim + j]);
            if (present[v] && a == 0.0) present_nonzero = 0;
            if (!present[v] && a != 0.0) absent_zero = 0;
        }
        free(present);
        CHECK(absent_zero, "%s: embedding gradient nonzero for a token not in input_ids", p);
        CHECK(present_nonzero, "%s: embedding gradient zero for a token in input_ids", p);
    }
    printf("%s: V=%d d=%d f=%d L=%d heads=%d kv=%d tied=%d eps=%g theta=%g B=%d T=%d, %d tensors; "
           "loss %.7f, CE in double %.7f, sum of logits %.6f\n",
           p, V, fx.dim, fx.ffn_dim, fx.n_layers, fx.n_heads, fx.n_kv_heads, fx.tie_embeddings, fx.norm_eps,
           fx.rope_theta, B, T, fx.n_tensors, loss[0], ce, lsum);
    fixture_free(&fx);
    CHECK(fx.tensors == NULL && fx.n_tensors == 0, "fixture_free resets the struct");
}

// runs fixture_load on path in a child; returns 1 when the child exited 1 with a message naming the file
static int load_is_refused(const char* path) {
    char errpath[] = "/tmp/grass_fixture_err_XXXXXX";
    int efd = mkstemp(errpath);
    if (efd < 0) fatal("mkstemp failed");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) fatal("fork failed");
    if (pid == 0) {
        dup2(efd, 2);
        Fixture fx;
        fixture_load(&fx, path);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(efd);
    char msg[2048] = {0};
    FILE* f = fopen_check(errpath, "rb");
    size_t got = fread(msg, 1, sizeof(msg) - 1, f);
    msg[got] = '\0';
    fclose(f);
    remove(errpath);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(msg, path) != NULL;
    if (!ok) printf("  load of %s: status %d, message: %s\n", path, status, msg);
    return ok;
}

static void check_bad_files(const char* good_path) {
    int64_t size = file_size_check(good_path);
    char* buf = (char*)malloc_check((size_t)size + 8);
    FILE* f = fopen_check(good_path, "rb");
    fread_check(buf, 1, (size_t)size, f, good_path);
    fclose_check(f, good_path);
    char path[] = "/tmp/grass_fixture_bad_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) fatal("mkstemp failed");
    close(fd);
    struct { const char* what; int64_t len; int patch_at; int32_t patch; } cases[] = {
        {"truncated by 4 bytes", size - 4, -1, 0},
        {"truncated inside the header", 40, -1, 0},
        {"cut after the header", 64, -1, 0},
        {"trailing bytes", size + 8, -1, 0},
        {"wrong magic", size, 0, 20261102},
        {"wrong version", size, 1, 2},
        {"tensor count too large", size, 14, 1000},
        {"negative vocab", size, 2, -5},
    };
    memset(buf + size, 0, 8);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int32_t saved = 0;
        if (cases[i].patch_at >= 0) { memcpy(&saved, buf + 4 * cases[i].patch_at, 4); memcpy(buf + 4 * cases[i].patch_at, &cases[i].patch, 4); }
        FILE* o = fopen_check(path, "wb");
        fwrite_check(buf, 1, (size_t)cases[i].len, o, path);
        fclose_check(o, path);
        if (cases[i].patch_at >= 0) memcpy(buf + 4 * cases[i].patch_at, &saved, 4);
        CHECK(load_is_refused(path), "a fixture with %s is not refused with a message naming the file", cases[i].what);
    }
    CHECK(load_is_refused("/tmp/grass_no_such_fixture.bin"), "a missing fixture is not refused");
    remove(path);
    free(buf);
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    int n = argc > 1 ? argc - 1 : (int)(sizeof(DEFAULT_FIXTURES) / sizeof(DEFAULT_FIXTURES[0]));
    for (int i = 0; i < n; i++) {
        const char* path = argc > 1 ? argv[1 + i] : DEFAULT_FIXTURES[i];
        if (!file_exists(path)) {
            fatal("fixture '%s' not found: run from the repository root, or regenerate with "
                  "python3 dev/make_reference.py", path);
        }
        check_fixture(path);
    }
    check_bad_files(argc > 1 ? argv[1] : DEFAULT_FIXTURES[0]);
    return test_summary("test_fixture_reader");
}
