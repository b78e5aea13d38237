/*
 * utils.h: checked wrappers for allocation and file I/O.
 * Every failure prints what failed, the file name or call, and the source location,
 * then exits with status 1. Nothing here is backend specific.
 */
#ifndef GRASS_UTILS_H
#define GRASS_UTILS_H

#define _FILE_OFFSET_BITS 64
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdarg.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

// print an error message and exit(1); used for all user-facing fatal errors
static inline void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    exit(1);
}

// Appends one item of a "; "-separated list to buf (cap bytes, NUL-terminated): the refusals that
// name every differing field. *len counts what was asked for, so a full buffer just truncates.
static inline void append_item(char* buf, size_t cap, size_t* len, const char* fmt, ...) {
    if (*len > 0) *len += snprintf(buf + *len, *len < cap ? cap - *len : 0, "; ");
    va_list ap;
    va_start(ap, fmt);
    *len += vsnprintf(buf + *len, *len < cap ? cap - *len : 0, fmt, ap);
    va_end(ap);
}

static inline FILE* fopen_check_(const char* path, const char* mode, const char* file, int line) {
    FILE* f = fopen(path, mode);
    if (f == NULL) {
        fprintf(stderr, "error: cannot open '%s' (mode %s): %s\n  at %s:%d\n",
                path, mode, strerror(errno), file, line);
        exit(1);
    }
    return f;
}
#define fopen_check(path, mode) fopen_check_(path, mode, __FILE__, __LINE__)

// fread that insists on reading exactly nmemb items; 'what' names the file for the message
static inline void fread_check_(void* ptr, size_t size, size_t nmemb, FILE* f, const char* what,
                                const char* file, int line) {
    size_t got = fread(ptr, size, nmemb, f);
    if (got != nmemb) {
        fprintf(stderr, "error: short read from '%s': wanted %zu items of %zu bytes, got %zu (%s)\n"
                "  the file is truncated or not of the expected kind\n  at %s:%d\n",
                what, nmemb, size, got, feof(f) ? "end of file" : strerror(errno), file, line);
        exit(1);
    }
}
#define fread_check(ptr, size, nmemb, f, what) fread_check_(ptr, size, nmemb, f, what, __FILE__, __LINE__)

// the extra line of a write error when the disk is full
static inline const char* disk_full_hint(int err) {
    return err == ENOSPC || err == EDQUOT ? "  the disk (or quota) is full: free space or use another --out-dir; a checkpoint being "
                                            "written is removed, the previous one is intact\n" : "";
}

static inline void fwrite_check_(const void* ptr, size_t size, size_t nmemb, FILE* f, const char* what,
                                 const char* file, int line) {
    size_t put = fwrite(ptr, size, nmemb, f);
    if (put != nmemb) {
        int e = errno;
        fprintf(stderr, "error: short write to '%s': %zu of %zu items (%s)\n%s  at %s:%d\n", what, put, nmemb, strerror(e),
                disk_full_hint(e), file, line);
        exit(1);
    }
}
#define fwrite_check(ptr, size, nmemb, f, what) fwrite_check_(ptr, size, nmemb, f, what, __FILE__, __LINE__)

static inline void fseek_check_(FILE* f, int64_t off, int whence, const char* what, const char* file, int line) {
    if (fseeko(f, (off_t)off, whence) != 0) {
        fprintf(stderr, "error: cannot seek to %lld in '%s': %s\n  at %s:%d\n",
                (long long)off, what, strerror(errno), file, line);
        exit(1);
    }
}
#define fseek_check(f, off, whence, what) fseek_check_(f, off, whence, what, __FILE__, __LINE__)

static inline void fclose_check_(FILE* f, const char* what, const char* file, int line) {
    if (fclose(f) != 0) {
        int e = errno;
        fprintf(stderr, "error: cannot close '%s': %s\n%s  at %s:%d\n", what, strerror(e), disk_full_hint(e), file, line);
        exit(1);
    }
}
#define fclose_check(f, what) fclose_check_(f, what, __FILE__, __LINE__)

static inline void* malloc_check_(size_t size, const char* file, int line) {
    void* p = malloc(size > 0 ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "error: host allocation of %zu bytes (%.2f GiB) failed\n  at %s:%d\n",
                size, size / (1024.0 * 1024.0 * 1024.0), file, line);
        exit(1);
    }
    return p;
}
#define malloc_check(size) malloc_check_(size, __FILE__, __LINE__)

static inline void* calloc_check_(size_t n, size_t size, const char* file, int line) {
    void* p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "error: host allocation of %zu x %zu bytes failed\n  at %s:%d\n", n, size, file, line);
        exit(1);
    }
    return p;
}
#define calloc_check(n, size) calloc_check_(n, size, __FILE__, __LINE__)

// size of a file in bytes, 64-bit; exits with a message naming the file if it cannot be read
static inline int64_t file_size_check(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) fatal("cannot stat '%s': %s", path, strerror(errno));
    return (int64_t)st.st_size;
}

static inline int file_exists(const char* path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// fclose that first flushes and fsyncs, so that a file renamed into place afterwards is on disk
// (a full disk shows up here at the latest, as ENOSPC)
static inline void fclose_sync_check_(FILE* f, const char* what, const char* file, int line) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fprintf(stderr, "error: cannot write '%s' to disk: %s\n%s  at %s:%d\n", what, strerror(e), disk_full_hint(e), file, line);
        exit(1);
    }
    fclose_check_(f, what, file, line);
}
#define fclose_sync_check(f, what) fclose_sync_check_(f, what, __FILE__, __LINE__)

// A file being written under a temporary name: if the program exits before it is renamed into
// place (a write error, a full disk, any fatal()), the partial file is removed at exit, so it
// neither fills the disk nor looks like a checkpoint. SIGKILL leaves it; -y 1 removes such
// leftovers (*.tmp) when it resumes.
static char partial_file_path[1200];
static int partial_file_hooked = 0;
static void partial_file_remove_at_exit(void) {
    if (partial_file_path[0] != '\0') {
        if (remove(partial_file_path) == 0) fprintf(stderr, "removed the partial file '%s'\n", partial_file_path);
        partial_file_path[0] = '\0';
    }
}
static inline void partial_file_begin(const char* path) {
    if (!partial_file_hooked) { atexit(partial_file_remove_at_exit); partial_file_hooked = 1; }
    snprintf(partial_file_path, sizeof(partial_file_path), "%s", path);
}
static inline void partial_file_end(void) { partial_file_path[0] = '\0'; }

// atomic replace: write to path.tmp, then rename over path. Use with fclose_check first.
static inline void rename_check(const char* from, const char* to) {
    if (rename(from, to) != 0) fatal("cannot rename '%s' to '%s': %s", from, to, strerror(errno));
}

#endif // GRASS_UTILS_H
