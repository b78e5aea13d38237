/*
 * checksum.h: CRC-32 trailers on checkpoint files, so that a truncated or corrupted model, state
 * or ZeRO shard file is detected before it is loaded (docs/FORMATS.md, "Checksum trailer").
 *
 * The trailer is 16 bytes at the end of the file: uint32 magic "GCRC", uint32 CRC-32 of every
 * byte before the trailer, uint64 the number of those bytes. The CRC is the common one (IEEE
 * 802.3, reflected polynomial 0xEDB88320, as zlib.crc32 and `gzip`), so Python writers and
 * readers check it with the standard library. Each file kind says in its header that it has a
 * trailer; a file without the flag predates checksums and is read unchecked.
 */
#ifndef GRASS_CHECKSUM_H
#define GRASS_CHECKSUM_H

#include <signal.h>
#include "utils.h"

#define CRC_TRAILER_MAGIC 0x43524347u   // "GCRC" as little-endian bytes
#define CRC_TRAILER_BYTES 16

// slice-by-8 tables: 8 bytes per step, about 1-2 GB/s on one core
static uint32_t crc32_table[8][256];
static int crc32_ready = 0;

static void crc32_init(void) {
    if (crc32_ready) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc32_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc32_table[t][i] = (crc32_table[t - 1][i] >> 8) ^ crc32_table[0][crc32_table[t - 1][i] & 0xFF];
    crc32_ready = 1;
}

// crc of the bytes so far (start with 0), extended by n more bytes; the same value as
// zlib.crc32(data, crc)
static uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
    crc32_init();
    const unsigned char* p = (const unsigned char*)data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc32_table[7][lo & 0xFF] ^ crc32_table[6][(lo >> 8) & 0xFF] ^ crc32_table[5][(lo >> 16) & 0xFF] ^
            crc32_table[4][lo >> 24] ^ crc32_table[3][hi & 0xFF] ^ crc32_table[2][(hi >> 8) & 0xFF] ^
            crc32_table[1][(hi >> 16) & 0xFF] ^ crc32_table[0][hi >> 24];
        p += 8; n -= 8;
    }
    while (n--) c = crc32_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

// CRC-32 of the first `bytes` bytes of an open file, read from the start in 16 MiB chunks; 0 and
// errno set when the file is shorter or unreadable
static int crc32_of_file_prefix(FILE* f, uint64_t bytes, uint32_t* crc_out) {
    if (fseeko(f, 0, SEEK_SET) != 0) return 0;
    const size_t chunk = (size_t)1 << 24;
    unsigned char* buf = (unsigned char*)malloc_check(chunk);
    uint32_t crc = 0;
    uint64_t left = bytes;
    while (left > 0) {
        size_t want = left < chunk ? (size_t)left : chunk;
        size_t got = fread(buf, 1, want, f);
        if (got != want) { free(buf); return 0; }
        crc = crc32_update(crc, buf, got);
        left -= got;
    }
    free(buf);
    *crc_out = crc;
    return 1;
}

// Appends the trailer to a file that was just written and closed (path: the temporary file,
// before it is renamed into place). It reads the file back, so the CRC covers what the kernel
// holds, not what the writer meant to write.
static void file_append_checksum(const char* path) {
    FILE* f = fopen_check(path, "r+b");
    if (fseeko(f, 0, SEEK_END) != 0) fatal("cannot seek in '%s': %s", path, strerror(errno));
    uint64_t bytes = (uint64_t)ftello(f);
    uint32_t crc = 0;
    if (!crc32_of_file_prefix(f, bytes, &crc)) fatal("cannot read back '%s' to checksum it: %s", path, strerror(errno));
    if (fseeko(f, 0, SEEK_END) != 0) fatal("cannot seek in '%s': %s", path, strerror(errno));
    uint32_t head[2] = {CRC_TRAILER_MAGIC, crc};
    fwrite_check(head, sizeof(uint32_t), 2, f, path);
    fwrite_check(&bytes, sizeof(uint64_t), 1, f, path);
    fclose_sync_check(f, path);
}

// Checks a file's trailer. Returns 1 when it is intact; 0 with the reason in why[] otherwise
// (missing trailer: truncated or not written to the end; a byte count that is not the file's;
// a CRC that differs: corrupted).
static int file_verify_checksum(const char* path, char* why, size_t why_len) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { snprintf(why, why_len, "cannot open it: %s", strerror(errno)); return 0; }
    int ok = 0;
    uint32_t head[2] = {0, 0};
    uint64_t bytes = 0;
    int64_t size = -1;
    if (fseeko(f, 0, SEEK_END) == 0) size = (int64_t)ftello(f);
    if (size < CRC_TRAILER_BYTES) {
        snprintf(why, why_len, "%lld bytes, too short for its checksum trailer (truncated)", (long long)size);
    } else if (fseeko(f, size - CRC_TRAILER_BYTES, SEEK_SET) != 0 || fread(head, sizeof(uint32_t), 2, f) != 2 ||
               fread(&bytes, sizeof(uint64_t), 1, f) != 1) {
        snprintf(why, why_len, "cannot read its checksum trailer: %s", strerror(errno));
    } else if (head[0] != CRC_TRAILER_MAGIC || bytes != (uint64_t)(size - CRC_TRAILER_BYTES)) {
        snprintf(why, why_len, "no checksum trailer at its end (%lld bytes): truncated, or the write did not finish",
                 (long long)size);
    } else {
        uint32_t crc = 0;
        if (!crc32_of_file_prefix(f, bytes, &crc)) snprintf(why, why_len, "read error: %s", strerror(errno));
        else if (crc != head[1]) snprintf(why, why_len, "checksum mismatch (stored %08x, contents %08x): corrupted", head[1], crc);
        else ok = 1;
    }
    fclose(f);
    return ok;
}

// Writing a checkpoint file: ckpt_file_open opens path + ".tmp" (tmp[] gets the name) and marks
// it partial; ckpt_file_commit closes it, appends the trailer, fsyncs and renames it over path.
// A reader never sees a half-written file under the final name.
static FILE* ckpt_file_open(const char* path, char* tmp, size_t tmp_len) {
    snprintf(tmp, tmp_len, "%s.tmp", path);
    partial_file_begin(tmp);
    return fopen_check(tmp, "wb");
}

// Fault injection for tests/test_train.sh: GRASS_FAULT_KILL_WRITE=<text> sends this process
// SIGKILL while it writes a checkpoint file whose base name contains <text>, before the file is
// complete (as a node that loses power or a job killed by the scheduler would)
static void fault_kill_while_writing(FILE* f, const char* tmp) {
    const char* w = getenv("GRASS_FAULT_KILL_WRITE");
    const char* base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
    if (w == NULL || w[0] == '\0' || strstr(base, w) == NULL) return;
    fflush(f);  // part of the file is on disk, the rest is not
    int64_t size = (int64_t)ftello(f);
    if (size > 0 && ftruncate(fileno(f), (off_t)(size / 2)) != 0) fprintf(stderr, "ftruncate failed\n");
    fprintf(stderr, "GRASS_FAULT_KILL_WRITE: killed while writing '%s' (%lld of %lld bytes on disk)\n", tmp,
            (long long)(size / 2), (long long)size);
    fflush(stderr);
    raise(SIGKILL);
}

static void ckpt_file_commit(FILE* f, const char* tmp, const char* path) {
    fault_kill_while_writing(f, tmp);
    fclose_check(f, tmp);
    file_append_checksum(tmp);  // fsyncs
    rename_check(tmp, path);
    partial_file_end();
}

// file_verify_checksum, exiting with the file's name and the reason when it fails
static void file_verify_checksum_or_die(const char* path) {
    char why[256];
    if (!file_verify_checksum(path, why, sizeof(why))) fatal("'%s' is damaged: %s", path, why);
}

#endif // GRASS_CHECKSUM_H
