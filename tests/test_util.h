/*
 * test_util.h: a minimal test harness. Each CHECK counts one assertion; a test program
 * ends with `return test_summary("name");`, which prints "N passed, N failed" and returns
 * non-zero when anything failed, so that `make test` and CI see the failure. Its main starts
 * with test_line_buffered_stdout().
 */
#ifndef GRASS_TEST_UTIL_H
#define GRASS_TEST_UTIL_H
#include <stdio.h>
#include <math.h>

static int g_tests_passed = 0;
static int g_tests_failed = 0;

#define CHECK(cond, ...) do { \
    if (cond) { g_tests_passed++; } \
    else { g_tests_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
} while (0)

// |a-b| <= atol + rtol*|b|
#define CHECK_CLOSE(a, b, atol, rtol, what) do { \
    double a_ = (double)(a), b_ = (double)(b); \
    CHECK(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_), "%s: got %.9g expected %.9g", what, a_, b_); \
} while (0)

// the first line of every test program's main: stdout line-buffered. Piped into a log, stdout is
// block-buffered, and an abort, a segfault or a kill at a time limit would lose the lines still in
// the buffer: the last ones printed before the failure.
static inline void test_line_buffered_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

static inline int test_summary(const char* name) {
    printf("%s: %d passed, %d failed\n", name, g_tests_passed, g_tests_failed);
    return g_tests_failed == 0 ? 0 : 1;
}
#endif
