/*
 * test_tokenizer.c: checks tokenizer.h against reference ids and texts produced by the
 * sentencepiece library (tests/test_tokenizer.sh makes them and runs this program).
 *
 *   g++ -x c++ -O2 -Wall -I. tests/test_tokenizer.c -o tests/bin/test_tokenizer
 *   tests/bin/test_tokenizer TOKENIZER.bin TEXT_FILE REFERENCE_FILE
 *   tests/bin/test_tokenizer --load-only TOKENIZER.bin     (for the bad-file tests: must exit 1)
 *
 * REFERENCE_FILE has one record per line, fields separated by single spaces:
 *   KIND INPUT N ID_1 ... ID_N DECODED
 * KIND    E: encode(INPUT) must give the N ids and decode(ids) must give DECODED
 *         B: the same with add_bos=1 (the ids start with BOS)
 *         D: decode only (INPUT is "-"): decode(ids) must give DECODED
 * INPUT   L: the next line of TEXT_FILE (the file split at '\n', as Python's split('\n'))
 *         F: the whole TEXT_FILE (its encode is also timed)
 *         -: the empty string; otherwise the bytes in hex
 * DECODED "=": equal to INPUT; "-": empty; otherwise the bytes in hex
 * A line starting with '#' is a comment. Every line of TEXT_FILE must be used by an L record.
 *
 * Besides tokenizer_encode and tokenizer_decode, every record also checks that streaming
 * (TokenizerStream) gives the same bytes as tokenizer_decode, that tokenizer_decode truncates
 * safely, and, for records of plain UTF-8 text, that tokenizer_decode_piece concatenates to
 * the same text.
 */
#include <time.h>
#include "tokenizer.h"
#include "tests/test_util.h"

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// at most this many failures are printed in full; the rest are only counted
static int g_printed_failures = 0;
#define CHECK_QUIET(cond, ...) do { \
    if (cond) { g_tests_passed++; } \
    else if (g_printed_failures++ < 25) { CHECK(cond, __VA_ARGS__); } \
    else { g_tests_failed++; } \
} while (0)

static char* read_file(const char* path, size_t* len) {
    int64_t n = file_size_check(path);
    char* buf = (char*)malloc_check((size_t)n + 1);
    FILE* f = fopen_check(path, "rb");
    fread_check(buf, 1, (size_t)n, f, path);
    fclose_check(f, path);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

// the next space/newline separated field at *p; returns its start and length
static const char* next_field(char** p, size_t* flen) {
    char* s = *p;
    while (*s == ' ') s++;
    char* e = s;
    while (*e && *e != ' ' && *e != '\n') e++;
    *flen = (size_t)(e - s);
    *p = e;
    return s;
}

static unsigned char* from_hex(const char* s, size_t n, size_t* out_len, int lineno) {
    if (n % 2 != 0) fatal("reference line %d: odd-length hex field", lineno);
    unsigned char* out = (unsigned char*)malloc_check(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = tokenizer_hexval_(s[2 * i]), lo = tokenizer_hexval_(s[2 * i + 1]);
        if (hi < 0 || lo < 0) fatal("reference line %d: bad hex", lineno);
        out[i] = (unsigned char)(hi * 16 + lo);
    }
    *out_len = n / 2;
    return out;
}

static int is_valid_utf8(const unsigned char* s, size_t n) {
    for (size_t i = 0; i < n;) {
        int cl = tokenizer_utf8_valid_len_(s + i, n - i);
        if (cl == 0) return 0;
        i += (size_t)cl;
    }
    return 1;
}

// first differing position of two id arrays, or -1
static long first_diff_ids(const int* a, int na, const int* b, int nb) {
    int n = na < nb ? na : nb;
    for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
    return na == nb ? -1 : n;
}

static long first_diff_bytes(const char* a, size_t na, const char* b, size_t nb) {
    size_t n = na < nb ? na : nb;
    for (size_t i = 0; i < n; i++) if (a[i] != b[i]) return (long)i;
    return na == nb ? -1 : (long)n;
}

// prints up to 40 bytes around position pos of s, escaped
static void show_bytes(const char* label, const char* s, size_t n, long pos) {
    size_t from = pos > 20 ? (size_t)pos - 20 : 0, to = from + 40 < n ? from + 40 : n;
    printf("    %s [%zu..%zu): \"", label, from, to);
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '\\') putchar(c); else printf("\\x%02x", c);
    }
    printf("\"\n");
}

static void show_ids(const char* label, const int* ids, int n, long pos) {
    int from = pos > 5 ? (int)pos - 5 : 0, to = from + 12 < n ? from + 12 : n;
    printf("    %s ids [%d..%d):", label, from, to);
    for (int i = from; i < to; i++) printf(" %d", ids[i]);
    printf("\n");
}

int main(int argc, char** argv) {
    test_line_buffered_stdout();
    if (argc == 3 && strcmp(argv[1], "--load-only") == 0) {
        Tokenizer t;
        tokenizer_init(&t, argv[2]);
        printf("loaded '%s': vocab %d\n", argv[2], t.vocab_size);
        tokenizer_free(&t);
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s TOKENIZER.bin TEXT_FILE REFERENCE_FILE\n"
                        "       %s --load-only TOKENIZER.bin\n"
                        "(tests/test_tokenizer.sh makes the reference file with sentencepiece)\n", argv[0], argv[0]);
        return 2;
    }
    Tokenizer t;
    tokenizer_init(&t, argv[1]);
    printf("tokenizer %s: vocab %d, bos %d, eos %d, unk %d, byte fallback %d\n", argv[1], t.vocab_size,
           t.bos_id, t.eos_id, t.unk_id, t.has_byte_fallback);

    size_t text_len, ref_len;
    char* text = read_file(argv[2], &text_len);
    char* ref = read_file(argv[3], &ref_len);

    // small API checks
    {
        int ids[8];
        CHECK(tokenizer_encode(&t, "", 0, ids, 8) == 0, "encode(\"\") gives no ids");
        CHECK(tokenizer_encode(&t, "", 1, ids, 8) == (t.bos_id >= 0 ? 1 : 0) && (t.bos_id < 0 || ids[0] == t.bos_id),
              "encode(\"\", bos) gives only BOS");
        int n = tokenizer_encode(&t, "hello world, this needs more than two ids", 0, ids, 2);
        CHECK(n > 2, "encode reports the full count (%d) when cap is too small", n);
        char small[4];
        int hid[64];
        int nh = tokenizer_encode(&t, "hello world", 0, hid, 64);
        size_t full = tokenizer_decode(&t, hid, nh, small, sizeof(small));
        CHECK(full == 11 && memcmp(small, "hel", 4) == 0, "decode truncates to cap-1 bytes + NUL and returns the full length (%zu)", full);
        if (t.bos_id >= 0) {
            int one = t.bos_id;
            CHECK(tokenizer_decode(&t, &one, 1, small, sizeof(small)) == 0 && small[0] == 0, "decode(<s>) is empty");
        }
    }

    int* ids = NULL;            // reference ids of the current record
    int ids_cap = 0;
    int* got = NULL;            // our ids
    int got_cap = 0;
    size_t text_pos = 0;        // next line of the text file
    int n_lines_used = 0, n_records = 0, n_decode_piece = 0;
    long long n_ref_ids = 0;
    double enc_time = 0, dec_time = 0, whole_time = -1;
    size_t whole_bytes = 0;
    int lineno = 0;

    char* p = ref;
    while (*p) {
        lineno++;
        char* line_start = p;
        char* eol = strchr(p, '\n');
        if (eol == NULL) eol = p + strlen(p);
        if (*p == '#' || p == eol) { p = *eol ? eol + 1 : eol; continue; }
        size_t flen;
        const char* kind = next_field(&p, &flen);
        if (flen != 1 || (kind[0] != 'E' && kind[0] != 'B' && kind[0] != 'D'))
            fatal("reference line %d: bad record kind '%.*s'", lineno, (int)flen, kind);
        char K = kind[0];
        // input
        const char* in_f = next_field(&p, &flen);
        const char* input = NULL;
        size_t input_len = 0;
        unsigned char* input_owned = NULL;
        char desc[64];
        int is_whole = 0;
        if (flen == 1 && in_f[0] == 'L') {
            if (text_pos > text_len) fatal("reference line %d: more L records than lines in '%s'", lineno, argv[2]);
            const char* nl = (const char*)memchr(text + text_pos, '\n', text_len - text_pos);
            size_t e = nl ? (size_t)(nl - text) : text_len;
            input = text + text_pos;
            input_len = e - text_pos;
            text_pos = e + 1;  // past the '\n'; past the end after the last line
            n_lines_used++;
            snprintf(desc, sizeof(desc), "text line %d", n_lines_used);
        } else if (flen == 1 && in_f[0] == 'F') {
            input = text; input_len = text_len; is_whole = 1;
            snprintf(desc, sizeof(desc), "whole text file");
        } else if (flen == 1 && in_f[0] == '-') {
            input = ""; input_len = 0;
            snprintf(desc, sizeof(desc), "reference line %d (empty input)", lineno);
        } else {
            input_owned = from_hex(in_f, flen, &input_len, lineno);
            input = (const char*)input_owned;
            snprintf(desc, sizeof(desc), "reference line %d", lineno);
        }
        // ids
        const char* nf = next_field(&p, &flen);
        long nids = strtol(nf, NULL, 10);
        if (nids < 0 || nids > 100000000) fatal("reference line %d: bad id count", lineno);
        if (nids > ids_cap) { free(ids); ids_cap = (int)nids + 1024; ids = (int*)malloc_check(sizeof(int) * (size_t)ids_cap); }
        for (long i = 0; i < nids; i++) {
            char* endp;
            long v = strtol(p, &endp, 10);
            if (endp == p) fatal("reference line %d: expected %ld ids, found %ld", lineno, nids, i);
            ids[i] = (int)v;
            p = endp;
        }
        n_ref_ids += nids;
        // expected decode
        const char* dec_f = next_field(&p, &flen);
        const char* expect = NULL;
        size_t expect_len = 0;
        unsigned char* expect_owned = NULL;
        if (flen == 1 && dec_f[0] == '=') { expect = input; expect_len = input_len; }
        else if (flen == 1 && dec_f[0] == '-') { expect = ""; expect_len = 0; }
        else if (flen > 0) { expect_owned = from_hex(dec_f, flen, &expect_len, lineno); expect = (const char*)expect_owned; }
        else fatal("reference line %d: missing decoded field", lineno);
        p = *eol ? eol + 1 : eol;
        (void)line_start;
        n_records++;

        // encode
        if (K == 'E' || K == 'B') {
            size_t need = TOKENIZER_MAX_IDS(input_len);
            if ((size_t)got_cap < need) { free(got); got_cap = (int)need; got = (int*)malloc_check(sizeof(int) * need); }
            double t0 = now_sec();
            int ng = tokenizer_encode_len(&t, input, input_len, K == 'B', got, got_cap);
            double dt = now_sec() - t0;
            enc_time += dt;
            if (is_whole) { whole_time = dt; whole_bytes = input_len; }
            long d = first_diff_ids(got, ng, ids, (int)nids);
            CHECK_QUIET(d < 0, "encode %s: %d ids, sentencepiece %ld, first difference at %ld", desc, ng, nids, d);
            if (d >= 0 && g_printed_failures <= 25) {
                show_bytes("input", input, input_len, 0);
                show_ids("ours", got, ng, d);
                show_ids("sentencepiece", ids, (int)nids, d);
            }
        }
        // decode (of the reference ids)
        {
            double t0 = now_sec();
            size_t dlen;
            char* dec = tokenizer_decode_alloc(&t, ids, (int)nids, &dlen);
            dec_time += now_sec() - t0;
            long d = first_diff_bytes(dec, dlen, expect, expect_len);
            CHECK_QUIET(d < 0, "decode %s: %zu bytes, sentencepiece %zu, first difference at byte %ld", desc, dlen, expect_len, d);
            if (d >= 0 && g_printed_failures <= 25) {
                show_bytes("ours", dec, dlen, d);
                show_bytes("sentencepiece", expect, expect_len, d);
            }
            // streaming gives the same bytes
            TokenizerStream st;
            tokenizer_stream_init(&st, &t);
            char* sbuf = (char*)malloc_check(dlen + 1);
            size_t slen = 0, n;
            int overflow = 0;
            for (long i = 0; i <= nids; i++) {
                const char* s = i < nids ? tokenizer_stream_push(&t, &st, ids[i], &n) : tokenizer_stream_flush(&t, &st, &n);
                if (slen + n > dlen) { overflow = 1; break; }
                memcpy(sbuf + slen, s, n);
                slen += n;
            }
            tokenizer_stream_free(&st);
            CHECK_QUIET(!overflow && slen == dlen && memcmp(sbuf, dec, dlen) == 0, "stream decode %s differs from tokenizer_decode", desc);
            free(sbuf);
            // truncated decode: a prefix of the full text, NUL-terminated
            if (dlen > 1) {
                size_t cap = dlen / 2 + 1;
                char* tb = (char*)malloc_check(cap);
                size_t full = tokenizer_decode(&t, ids, (int)nids, tb, cap);
                CHECK_QUIET(full == dlen && memcmp(tb, dec, cap - 1) == 0 && tb[cap - 1] == 0, "truncated decode %s", desc);
                free(tb);
            }
            // llama2.c-style piece printing is exact for plain text without NUL bytes
            if (K != 'D' && expect == input && is_valid_utf8((const unsigned char*)input, input_len) &&
                memchr(input, 0, input_len) == NULL && nids > 0) {
                size_t pl = 0;
                int ok = 1, start = (K == 'B') ? 1 : 0;
                int prev = start ? ids[0] : -1;
                for (long i = start; i < nids && ok; i++) {
                    const char* s = tokenizer_decode_piece(&t, prev, ids[i]);
                    size_t sl = strlen(s);
                    if (pl + sl > dlen || memcmp(dec + pl, s, sl) != 0) ok = 0;
                    pl += sl;
                    prev = ids[i];
                }
                CHECK_QUIET(ok && pl == dlen, "tokenizer_decode_piece concatenation %s", desc);
                n_decode_piece++;
            }
            free(dec);
        }
        free(input_owned);
        free(expect_owned);
    }
    // every line of the text file was covered (split('\n') gives lines+1 parts after a final '\n')
    if (n_lines_used > 0) {
        int n_parts = 1;
        for (size_t i = 0; i < text_len; i++) n_parts += text[i] == '\n';
        CHECK(n_lines_used == n_parts, "the reference covers %d of the %d lines of '%s'", n_lines_used, n_parts, argv[2]);
    }
    printf("%d records (%d text lines, %lld reference ids), decode_piece checked on %d\n",
           n_records, n_lines_used, n_ref_ids, n_decode_piece);
    printf("encode total %.3f s, decode total %.3f s\n", enc_time, dec_time);
    if (whole_time >= 0) {
        printf("whole-file encode: %zu bytes in %.3f s (%.1f MB/s)\n", whole_bytes, whole_time,
               whole_bytes / 1e6 / (whole_time > 0 ? whole_time : 1e-9));
        // generous bound: a 1 MB text takes ~0.2 s; quadratic behaviour would take minutes
        CHECK(whole_time < 1.0 + 5.0 * whole_bytes / 1e6, "whole-file encode took %.2f s for %zu bytes", whole_time, whole_bytes);
    }
    free(ids); free(got); free(text); free(ref);
    tokenizer_free(&t);
    return test_summary("test_tokenizer");
}
