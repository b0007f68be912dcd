// test_util.h — tiny assertion helpers: every failure prints file:line and the
// values, and the test exits non-zero at the end (main returns test_summary()).
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        CHECK_MSG(_a == _b, "%lld != %lld", _a, _b);                                               \
    } while (0)

// |a - b| <= atol + rtol * |b|
#define CHECK_CLOSE(a, b, rtol, atol)                                                              \
    do {                                                                                           \
        double _a = (double)(a), _b = (double)(b);                                                 \
        CHECK_MSG(isfinite(_a) && fabs(_a - _b) <= (atol) + (rtol)*fabs(_b),                       \
                  "%.9g vs expected %.9g", _a, _b);                                                \
    } while (0)

static inline int test_summary(const char *name) {
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

// xorshift64*: a fixed, platform-independent stream, so a failing seed
// reproduces everywhere. *state must start non-zero.
static inline uint32_t test_rng_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static inline int test_ids_equal(const int *a, int na, const int *b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

// Prints "label [1, 2, ...]" to stderr, the first 60 ids of n.
static inline void test_print_ids(const char *label, const int *ids, int n) {
    fprintf(stderr, "%s [", label);
    for (int i = 0; i < n && i < 60; i++)
        fprintf(stderr, "%s%d", i ? ", " : "", ids[i]);
    fprintf(stderr, "%s]\n", n > 60 ? ", ..." : "");
}

#endif
