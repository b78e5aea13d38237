/*
 * tokenizer.h: the LLaMA-2 SentencePiece vocabulary in plain C (header only).
 *
 * Reads tokenizer.bin (docs/FORMATS.md, written by dev/data/export_tokenizer.py or
 * dev/data/prepare.py) and implements, identically to the sentencepiece library for the
 * LLaMA-2 model settings (BPE, identity normalizer, add_dummy_prefix, byte fallback):
 *
 *   tokenizer_init / tokenizer_free
 *   tokenizer_encode(t, text, add_bos, out, cap)   text -> ids (prompts)
 *   tokenizer_decode(t, ids, n, out, cap)          ids -> text, exactly sentencepiece's decode
 *   TokenizerStream                                 the same decode, token by token (samples)
 *   tokenizer_decode_piece(t, prev_id, id)          llama2.c-style one piece (simple printing)
 *
 * Encoding (sentencepiece's BPE model):
 *   1. normalize: empty text -> no tokens; else prepend "▁" (dummy prefix), replace every ' '
 *      by "▁", copy everything else; a malformed UTF-8 byte becomes U+FFFD (one byte consumed).
 *   2. split into UTF-8 characters; repeatedly merge the adjacent pair whose concatenation is
 *      a vocabulary piece with the highest score (leftmost on ties), via a priority queue over
 *      a linked list of symbols (O(n log n)).
 *   3. each final symbol is its piece id; a symbol not in the vocabulary is emitted as its
 *      UTF-8 bytes (<0xXX> pieces) when the vocabulary has byte pieces, else as <unk>
 *      (consecutive unknowns collapse into one <unk>, as sentencepiece does).
 * Decoding: control pieces (<s>, </s>) print nothing, <unk> prints " ⁇ ", "▁" prints ' ', the
 * leading "▁" of the first piece is dropped, runs of byte pieces are assembled into UTF-8
 * characters and every byte that does not start a valid character prints U+FFFD.
 *
 * Compiles as C and as C++ (g++, nvcc). Not thread-safe per Tokenizer for
 * tokenizer_decode_piece (it returns pointers into the Tokenizer); everything else is.
 */
#ifndef GRASS_TOKENIZER_H
#define GRASS_TOKENIZER_H

#include "utils.h"

#define TOKENIZER_MAGIC 20261104
#define TOKENIZER_VERSION 1

// SentencePiece piece types, as stored in tokenizer.bin
enum {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6
};

#define TOKENIZER_UNK_SURFACE " \xE2\x81\x87 "   // " ⁇ ", sentencepiece's default unk_surface
#define TOKENIZER_REPLACEMENT "\xEF\xBF\xBD"      // U+FFFD
#define TOKENIZER_SPACE_SYMBOL "\xE2\x96\x81"     // U+2581 "▁"

typedef struct {
    // public
    int vocab_size;
    int bos_id;           // -1 when the vocabulary has none
    int eos_id;
    int unk_id;
    int max_piece_bytes;  // longest piece, in bytes
    // per id
    float* scores;
    int* types;           // TOKEN_*
    int* piece_off;       // piece bytes (raw, "▁" for spaces) at blob + piece_off[i], NUL-terminated
    int* piece_len;
    int* surf_off;        // decoded text ("▁" -> ' ') at blob + surf_off[i], NUL-terminated
    int* surf_len;
    unsigned char* starts_ws;  // raw piece starts with "▁" (dropped at the start of a text)
    int* byte_value;      // 0..255 for byte pieces, else -1
    char* blob;
    // lookup
    int byte_id[256];     // id of the piece <0xXX>, -1 if the vocabulary has none
    int has_byte_fallback;
    int* table;           // open-addressing hash of mergeable pieces -> id (-1 empty)
    uint32_t table_mask;
    char byte_str[256][2];  // for tokenizer_decode_piece
} Tokenizer;

// ----------------------------------------------------------------------------------------
// helpers

static inline uint32_t tokenizer_hash_(const char* s, int len) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (int i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h;
}

// id of the mergeable piece (normal / user-defined / unused) with these bytes, or -1
static inline int tokenizer_lookup_(const Tokenizer* t, const char* s, int len) {
    if (len > t->max_piece_bytes) return -1;
    uint32_t h = tokenizer_hash_(s, len) & t->table_mask;
    while (1) {
        int id = t->table[h];
        if (id < 0) return -1;
        if (t->piece_len[id] == len && memcmp(t->blob + t->piece_off[id], s, (size_t)len) == 0) return id;
        h = (h + 1) & t->table_mask;
    }
}

// strict UTF-8 decoding of one character as sentencepiece does it (string_util::DecodeUTF8):
// returns the number of bytes of a valid character at s (n bytes available), or 0 when the
// first byte does not start a valid character (overlong, surrogate, > U+10FFFF, truncated).
static inline int tokenizer_utf8_valid_len_(const unsigned char* s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        unsigned cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        if ((s[1] & 0xC0) == 0x80 && cp >= 0x80) return 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        unsigned cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            !(cp >= 0xD800 && cp < 0xE000)) return 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        unsigned cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF) return 4;
    }
    return 0;
}

// number of bytes a character starting with this lead byte claims (1 for invalid leads)
static inline int tokenizer_utf8_lead_len_(unsigned char c) {
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

static inline int tokenizer_hexval_(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// ----------------------------------------------------------------------------------------
// loading

static inline void tokenizer_init(Tokenizer* t, const char* path) {
    memset(t, 0, sizeof(*t));
    if (!file_exists(path)) {
        fatal("tokenizer file '%s' not found.\n"
              "  Create it from the LLaMA-2 SentencePiece model with\n"
              "    python dev/data/prepare.py --tokenizer-only --out-dir data/tinyshakespeare\n"
              "  (writes data/tinyshakespeare/tokenizer.bin; prepare.py also writes it next to the data shards), or\n"
              "    python dev/data/export_tokenizer.py --tokenizer llama2_tokenizer.model --out %s\n"
              "  See docs/DATA.md.", path, path);
    }
    int64_t fsize = file_size_check(path);
    if (fsize < 32) fatal("tokenizer file '%s' is only %lld bytes: too short for the 32-byte header", path, (long long)fsize);
    if (fsize > ((int64_t)1 << 30)) fatal("tokenizer file '%s' is %lld bytes: too large to be a tokenizer", path, (long long)fsize);
    unsigned char* data = (unsigned char*)malloc_check((size_t)fsize);
    FILE* f = fopen_check(path, "rb");
    fread_check(data, 1, (size_t)fsize, f, path);
    fclose_check(f, path);

    int32_t hdr[8];
    memcpy(hdr, data, sizeof(hdr));
    if (hdr[0] != TOKENIZER_MAGIC) {
        const char* hint = "";
        if (hdr[0] == 20261101) hint = " (this is a data shard, not a tokenizer)";
        else if (hdr[0] == 20261102) hint = " (this is a model checkpoint, not a tokenizer)";
        else if (hdr[0] == 20261103) hint = " (this is an optimizer/training state file, not a tokenizer)";
        else if (hdr[0] == 20240328) hint = " (this looks like an llm.c / llama2.c tokenizer, a different format)";
        fatal("'%s' is not a tokenizer.bin file: magic %d, expected %d%s.\n"
              "  Re-create it with dev/data/export_tokenizer.py (see docs/DATA.md).", path, hdr[0], TOKENIZER_MAGIC, hint);
    }
    if (hdr[1] != TOKENIZER_VERSION)
        fatal("tokenizer file '%s' has version %d; this program reads version %d. "
              "Re-create it with dev/data/export_tokenizer.py.", path, hdr[1], TOKENIZER_VERSION);
    int V = hdr[2];
    if (V <= 0 || V > (1 << 24)) fatal("tokenizer file '%s': bad vocab_size %d", path, V);
    for (int k = 3; k <= 5; k++)
        if (hdr[k] < -1 || hdr[k] >= V)
            fatal("tokenizer file '%s': special id %d (header int %d) is outside the vocabulary [0, %d)", path, hdr[k], k, V);
    if (hdr[6] <= 0 || hdr[6] > 65536) fatal("tokenizer file '%s': bad max_piece_bytes %d", path, hdr[6]);
    t->vocab_size = V;
    t->bos_id = hdr[3];
    t->eos_id = hdr[4];
    t->unk_id = hdr[5];
    t->max_piece_bytes = hdr[6];

    t->scores = (float*)malloc_check(sizeof(float) * (size_t)V);
    t->types = (int*)malloc_check(sizeof(int) * (size_t)V);
    t->piece_off = (int*)malloc_check(sizeof(int) * (size_t)V);
    t->piece_len = (int*)malloc_check(sizeof(int) * (size_t)V);
    t->surf_off = (int*)malloc_check(sizeof(int) * (size_t)V);
    t->surf_len = (int*)malloc_check(sizeof(int) * (size_t)V);
    t->starts_ws = (unsigned char*)malloc_check((size_t)V);
    t->byte_value = (int*)malloc_check(sizeof(int) * (size_t)V);
    // raw pieces + NULs, then decoded surfaces + NULs: each at most the file size
    size_t blob_cap = 2 * (size_t)fsize + 2 * (size_t)V + 16;
    t->blob = (char*)malloc_check(blob_cap);
    for (int b = 0; b < 256; b++) { t->byte_id[b] = -1; t->byte_str[b][0] = (char)b; t->byte_str[b][1] = 0; }

    size_t pos = 32, bpos = 0;
    int max_seen = 0;
    for (int i = 0; i < V; i++) {
        if (pos + 12 > (size_t)fsize)
            fatal("tokenizer file '%s' is truncated: it ends inside the record of piece %d of %d", path, i, V);
        float score; int32_t type, len;
        memcpy(&score, data + pos, 4);
        memcpy(&type, data + pos + 4, 4);
        memcpy(&len, data + pos + 8, 4);
        pos += 12;
        if (len < 0 || len > t->max_piece_bytes)
            fatal("tokenizer file '%s': piece %d has length %d, outside [0, max_piece_bytes=%d]", path, i, len, t->max_piece_bytes);
        if (type < TOKEN_NORMAL || type > TOKEN_BYTE)
            fatal("tokenizer file '%s': piece %d has unknown type %d", path, i, type);
        if (pos + (size_t)len > (size_t)fsize)
            fatal("tokenizer file '%s' is truncated: it ends inside the bytes of piece %d of %d", path, i, V);
        const char* p = (const char*)(data + pos);
        pos += (size_t)len;
        if (len > max_seen) max_seen = len;
        t->scores[i] = score;
        t->types[i] = type;
        t->piece_off[i] = (int)bpos;
        t->piece_len[i] = len;
        memcpy(t->blob + bpos, p, (size_t)len);
        t->blob[bpos + (size_t)len] = 0;
        bpos += (size_t)len + 1;
        t->byte_value[i] = -1;
        t->starts_ws[i] = (unsigned char)(len >= 3 && memcmp(p, TOKENIZER_SPACE_SYMBOL, 3) == 0);
        if (type == TOKEN_BYTE) {
            int hi = len == 6 ? tokenizer_hexval_(p[3]) : -1, lo = len == 6 ? tokenizer_hexval_(p[4]) : -1;
            if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>' || hi < 0 || lo < 0)
                fatal("tokenizer file '%s': byte piece %d is '%.*s', expected the form <0xXX>", path, i, len, p);
            int b = hi * 16 + lo;
            t->byte_value[i] = b;
            if (t->byte_id[b] < 0) t->byte_id[b] = i;
            t->has_byte_fallback = 1;
        }
    }
    if (pos != (size_t)fsize)
        fatal("tokenizer file '%s' has %lld bytes after the last piece; it is corrupt or not a version-%d tokenizer",
              path, (long long)((size_t)fsize - pos), TOKENIZER_VERSION);
    if (max_seen != t->max_piece_bytes)
        fatal("tokenizer file '%s': header says max_piece_bytes %d but the longest piece has %d bytes", path, t->max_piece_bytes, max_seen);
    free(data);

    // decoded surfaces: "▁" -> ' '
    for (int i = 0; i < V; i++) {
        const char* p = t->blob + t->piece_off[i];
        int len = t->piece_len[i];
        t->surf_off[i] = (int)bpos;
        size_t start = bpos;
        if (t->types[i] == TOKEN_NORMAL || t->types[i] == TOKEN_USER_DEFINED || t->types[i] == TOKEN_UNUSED) {
            for (int k = 0; k < len;) {
                if (k + 3 <= len && memcmp(p + k, TOKENIZER_SPACE_SYMBOL, 3) == 0) { t->blob[bpos++] = ' '; k += 3; }
                else t->blob[bpos++] = p[k++];
            }
        }
        t->surf_len[i] = (int)(bpos - start);
        t->blob[bpos++] = 0;
    }

    // hash table of the pieces BPE may produce by merging (sentencepiece's pieces_)
    uint32_t cap = 1;
    while (cap < 2u * (uint32_t)V + 1u) cap <<= 1;
    t->table = (int*)malloc_check(sizeof(int) * cap);
    for (uint32_t k = 0; k < cap; k++) t->table[k] = -1;
    t->table_mask = cap - 1;
    for (int i = 0; i < V; i++) {
        int ty = t->types[i];
        if (ty != TOKEN_NORMAL && ty != TOKEN_USER_DEFINED && ty != TOKEN_UNUSED) continue;
        const char* p = t->blob + t->piece_off[i];
        if (tokenizer_lookup_(t, p, t->piece_len[i]) >= 0) continue;  // duplicate: keep the first
        uint32_t h = tokenizer_hash_(p, t->piece_len[i]) & t->table_mask;
        while (t->table[h] >= 0) h = (h + 1) & t->table_mask;
        t->table[h] = i;
    }
}

static inline void tokenizer_free(Tokenizer* t) {
    free(t->scores); free(t->types); free(t->piece_off); free(t->piece_len);
    free(t->surf_off); free(t->surf_len); free(t->starts_ws); free(t->byte_value);
    free(t->blob); free(t->table);
    memset(t, 0, sizeof(*t));
}

// the raw piece of an id ("▁the", "<0x0A>", "<s>"); for debugging and vocab dumps
static inline const char* tokenizer_piece(const Tokenizer* t, int id) {
    if (id < 0 || id >= t->vocab_size) fatal("tokenizer_piece: id %d outside the vocabulary [0, %d)", id, t->vocab_size);
    return t->blob + t->piece_off[id];
}

// ----------------------------------------------------------------------------------------
// encoding

// an upper bound on the ids tokenizer_encode can produce for len bytes of text (with BOS)
#define TOKENIZER_MAX_IDS(len) (3 * (size_t)(len) + 4)

typedef struct { float score; int left, right, size; } TokenizerPair_;

// true when a should be merged before b: higher score, then leftmost
static inline int tokenizer_pair_before_(const TokenizerPair_* a, const TokenizerPair_* b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static inline void tokenizer_heap_push_(TokenizerPair_* heap, int* n, TokenizerPair_ p) {
    int i = (*n)++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!tokenizer_pair_before_(&p, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = p;
}

static inline TokenizerPair_ tokenizer_heap_pop_(TokenizerPair_* heap, int* n) {
    TokenizerPair_ top = heap[0];
    TokenizerPair_ last = heap[--(*n)];
    int i = 0, m = *n;
    while (1) {
        int c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && tokenizer_pair_before_(&heap[c + 1], &heap[c])) c++;
        if (!tokenizer_pair_before_(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (m > 0) heap[i] = last;
    return top;
}

typedef struct { int start, len, prev, next; } TokenizerSymbol_;

static inline void tokenizer_maybe_add_pair_(const Tokenizer* t, const char* norm, const TokenizerSymbol_* sym,
                                             TokenizerPair_* heap, int* nheap, int left, int right) {
    if (left < 0 || right < 0) return;
    int size = sym[left].len + sym[right].len;
    int id = tokenizer_lookup_(t, norm + sym[left].start, size);
    if (id < 0) return;
    TokenizerPair_ p;
    p.score = t->scores[id]; p.left = left; p.right = right; p.size = size;
    tokenizer_heap_push_(heap, nheap, p);
}

// Encodes len bytes of text (need not be NUL-terminated; may contain NUL bytes). Writes at most
// cap ids to out and returns how many ids the text has (like snprintf: a return value > cap
// means out was too small; TOKENIZER_MAX_IDS(len) is always enough). add_bos prepends bos_id.
static inline int tokenizer_encode_len(const Tokenizer* t, const char* text, size_t len, int add_bos, int* out, int cap) {
    int n_out = 0;
#define TOKENIZER_EMIT_(id) do { if (n_out < cap) out[n_out] = (id); n_out++; } while (0)
    if (add_bos && t->bos_id >= 0) TOKENIZER_EMIT_(t->bos_id);
    if (len == 0) return n_out;
    if (len > (size_t)(INT32_MAX / 4)) fatal("tokenizer_encode: text of %zu bytes is too long (max %d)", len, INT32_MAX / 4);

    // 1. normalize: dummy prefix, ' ' -> "▁", malformed UTF-8 -> U+FFFD
    char* norm = (char*)malloc_check(3 * len + 3);
    size_t nn = 0;
    memcpy(norm, TOKENIZER_SPACE_SYMBOL, 3); nn = 3;
    const unsigned char* s = (const unsigned char*)text;
    for (size_t i = 0; i < len;) {
        int cl = tokenizer_utf8_valid_len_(s + i, len - i);
        if (cl == 0) { memcpy(norm + nn, TOKENIZER_REPLACEMENT, 3); nn += 3; i += 1; }
        else if (cl == 1 && s[i] == ' ') { memcpy(norm + nn, TOKENIZER_SPACE_SYMBOL, 3); nn += 3; i += 1; }
        else { memcpy(norm + nn, s + i, (size_t)cl); nn += (size_t)cl; i += (size_t)cl; }
    }

    // 2. characters as symbols in a linked list, then BPE merges by score
    TokenizerSymbol_* sym = (TokenizerSymbol_*)malloc_check(sizeof(TokenizerSymbol_) * nn);
    int nsym = 0;
    for (size_t i = 0; i < nn;) {
        int cl = tokenizer_utf8_lead_len_((unsigned char)norm[i]);
        if ((size_t)cl > nn - i) cl = (int)(nn - i);
        sym[nsym].start = (int)i; sym[nsym].len = cl;
        sym[nsym].prev = nsym - 1; sym[nsym].next = nsym + 1;
        nsym++;
        i += (size_t)cl;
    }
    sym[nsym - 1].next = -1;
    // every merge removes one symbol and pushes at most two pairs: 3 * nsym bounds the pushes
    TokenizerPair_* heap = (TokenizerPair_*)malloc_check(sizeof(TokenizerPair_) * (3 * (size_t)nsym + 1));
    int nheap = 0;
    for (int i = 1; i < nsym; i++) tokenizer_maybe_add_pair_(t, norm, sym, heap, &nheap, i - 1, i);
    while (nheap > 0) {
        TokenizerPair_ top = tokenizer_heap_pop_(heap, &nheap);
        TokenizerSymbol_* L = &sym[top.left];
        TokenizerSymbol_* R = &sym[top.right];
        // stale entry: one side was merged away or grew since the pair was pushed
        if (L->len == 0 || R->len == 0 || L->len + R->len != top.size) continue;
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = top.left;
        R->len = 0;
        tokenizer_maybe_add_pair_(t, norm, sym, heap, &nheap, L->prev, top.left);
        tokenizer_maybe_add_pair_(t, norm, sym, heap, &nheap, top.left, L->next);
    }

    // 3. symbols -> ids, byte fallback for unknown symbols
    int prev_unk = 0;
    for (int i = 0; i >= 0; i = sym[i].next) {
        int id = tokenizer_lookup_(t, norm + sym[i].start, sym[i].len);
        if (id >= 0) { TOKENIZER_EMIT_(id); prev_unk = 0; continue; }
        if (t->has_byte_fallback) {
            for (int k = 0; k < sym[i].len; k++) {
                int bid = t->byte_id[(unsigned char)norm[sym[i].start + k]];
                TOKENIZER_EMIT_(bid >= 0 ? bid : t->unk_id);
            }
        } else if (!prev_unk) {
            TOKENIZER_EMIT_(t->unk_id);
            prev_unk = 1;
        }
    }
#undef TOKENIZER_EMIT_
    free(heap);
    free(sym);
    free(norm);
    return n_out;
}

// NUL-terminated text; see tokenizer_encode_len
static inline int tokenizer_encode(const Tokenizer* t, const char* text, int add_bos, int* out, int cap) {
    return tokenizer_encode_len(t, text, strlen(text), add_bos, out, cap);
}

// ----------------------------------------------------------------------------------------
// decoding

// The decoder state: decoding id by id produces exactly tokenizer_decode's bytes once
// flushed (byte pieces wait until their UTF-8 character is complete).
typedef struct {
    int is_bos_ws;        // still at the start: a leading "▁" is dropped
    int bos_ws_seen;      // the previous non-byte piece had its "▁" dropped
    int text_nonempty;    // anything produced so far
    unsigned char pend[4];
    int npend;
    char* buf;            // output of the last call (NUL-terminated), owned by the stream
    size_t buf_cap;
} TokenizerStream;

typedef struct { char* buf; size_t len; size_t cap; } TokenizerSink_;

static inline void tokenizer_sink_put_(TokenizerSink_* k, const char* s, size_t n) {
    if (k->len < k->cap) {
        size_t room = k->cap - k->len;
        memcpy(k->buf + k->len, s, n < room ? n : room);
    }
    k->len += n;
}

// emits the pending byte pieces that are determined; final = no more byte pieces follow
static inline void tokenizer_stream_bytes_(TokenizerStream* st, TokenizerSink_* k, int final) {
    while (st->npend > 0) {
        int need = tokenizer_utf8_lead_len_(st->pend[0]);
        if (!final && st->npend < need) return;  // wait for the rest of the character
        int cl = tokenizer_utf8_valid_len_(st->pend, (size_t)st->npend);
        int used;
        if (cl == 0) { tokenizer_sink_put_(k, TOKENIZER_REPLACEMENT, 3); used = 1; }
        else { tokenizer_sink_put_(k, (const char*)st->pend, (size_t)cl); used = cl; }
        st->text_nonempty = 1;
        memmove(st->pend, st->pend + used, (size_t)(st->npend - used));
        st->npend -= used;
    }
}

static inline void tokenizer_stream_step_(const Tokenizer* t, TokenizerStream* st, int id, TokenizerSink_* k) {
    if (id < 0 || id >= t->vocab_size) fatal("tokenizer decode: id %d outside the vocabulary [0, %d)", id, t->vocab_size);
    int ty = t->types[id];
    if (ty == TOKEN_BYTE) {
        st->pend[st->npend++] = (unsigned char)t->byte_value[id];
        tokenizer_stream_bytes_(st, k, 0);
        return;
    }
    tokenizer_stream_bytes_(st, k, 1);
    if (st->bos_ws_seen || st->text_nonempty) st->is_bos_ws = 0;
    st->bos_ws_seen = 0;
    if (ty == TOKEN_CONTROL) return;
    if (ty == TOKEN_UNKNOWN) {
        tokenizer_sink_put_(k, TOKENIZER_UNK_SURFACE, sizeof(TOKENIZER_UNK_SURFACE) - 1);
        st->text_nonempty = 1;
        return;
    }
    const char* s = t->blob + t->surf_off[id];
    size_t n = (size_t)t->surf_len[id];
    if (st->is_bos_ws && t->starts_ws[id]) { s++; n--; st->bos_ws_seen = 1; }
    tokenizer_sink_put_(k, s, n);
    if (n > 0) st->text_nonempty = 1;
}

static inline void tokenizer_stream_init(TokenizerStream* st, const Tokenizer* t) {
    memset(st, 0, sizeof(*st));
    st->is_bos_ws = 1;
    st->buf_cap = (size_t)t->max_piece_bytes + 32;  // 4 pending bytes as U+FFFD (12) + a piece or " ⁇ "
    st->buf = (char*)malloc_check(st->buf_cap + 1);
    st->buf[0] = 0;
}

static inline void tokenizer_stream_free(TokenizerStream* st) { free(st->buf); st->buf = NULL; }

// Feeds one id; returns the bytes it completes (NUL-terminated; *len, when given, is the byte
// count, which matters only for the byte 0x00). Valid until the next call on this stream.
static inline const char* tokenizer_stream_push(const Tokenizer* t, TokenizerStream* st, int id, size_t* len) {
    TokenizerSink_ k; k.buf = st->buf; k.len = 0; k.cap = st->buf_cap;
    tokenizer_stream_step_(t, st, id, &k);
    if (k.len > k.cap) fatal("tokenizer_stream_push: internal error, output of %zu bytes > %zu", k.len, k.cap);
    st->buf[k.len] = 0;
    if (len) *len = k.len;
    return st->buf;
}

// Ends the text: emits pending incomplete byte sequences (as U+FFFD, like sentencepiece).
static inline const char* tokenizer_stream_flush(const Tokenizer* t, TokenizerStream* st, size_t* len) {
    (void)t;
    TokenizerSink_ k; k.buf = st->buf; k.len = 0; k.cap = st->buf_cap;
    tokenizer_stream_bytes_(st, &k, 1);
    st->buf[k.len] = 0;
    if (len) *len = k.len;
    return st->buf;
}

// Decodes n ids exactly as sentencepiece's decode. Writes at most cap-1 bytes and a NUL to
// out (when cap > 0) and returns the full length of the text (> cap-1: out was too small).
static inline size_t tokenizer_decode(const Tokenizer* t, const int* ids, int n, char* out, size_t cap) {
    TokenizerStream st;
    memset(&st, 0, sizeof(st));
    st.is_bos_ws = 1;
    TokenizerSink_ k; k.buf = out; k.len = 0; k.cap = cap > 0 ? cap - 1 : 0;
    for (int i = 0; i < n; i++) tokenizer_stream_step_(t, &st, ids[i], &k);
    tokenizer_stream_bytes_(&st, &k, 1);
    if (cap > 0) out[k.len < cap - 1 ? k.len : cap - 1] = 0;
    return k.len;
}

// Decodes into a malloc'd NUL-terminated string (free it); *len, when given, gets its length.
static inline char* tokenizer_decode_alloc(const Tokenizer* t, const int* ids, int n, size_t* len) {
    size_t need = tokenizer_decode(t, ids, n, NULL, 0);
    char* s = (char*)malloc_check(need + 1);
    tokenizer_decode(t, ids, n, s, need + 1);
    if (len) *len = need;
    return s;
}

// llama2.c-style decoding of one piece for simple printing: the piece with "▁" as ' ', the
// leading space dropped after BOS (prev_id == bos_id) or at the start (prev_id < 0), byte
// pieces as their raw byte, control pieces as "". Exact for ordinary text; use
// TokenizerStream when byte sequences may be invalid UTF-8.
static inline const char* tokenizer_decode_piece(const Tokenizer* t, int prev_id, int id) {
    if (id < 0 || id >= t->vocab_size) fatal("tokenizer_decode_piece: id %d outside the vocabulary [0, %d)", id, t->vocab_size);
    int ty = t->types[id];
    if (ty == TOKEN_CONTROL) return "";
    if (ty == TOKEN_UNKNOWN) return TOKENIZER_UNK_SURFACE;
    if (ty == TOKEN_BYTE) return t->byte_str[t->byte_value[id]];
    const char* s = t->blob + t->surf_off[id];
    if ((prev_id < 0 || prev_id == t->bos_id) && t->starts_ws[id]) s++;
    return s;
}

#endif // GRASS_TOKENIZER_H
