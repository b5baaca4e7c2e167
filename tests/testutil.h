/* Helpers shared by the C tests: golden tensors and error-tolerant comparisons. */
#ifndef UP_TESTUTIL_H
#define UP_TESTUTIL_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "formats/safetensors.h"

/* Path under tests/. */
static inline const char *test_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", UP_TEST_DIR, rel);
    return buf;
}

/* Finds a golden tensor by printf-style name; fails the test if absent. */
static inline up_tensor golden(const up_safetensors *st, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    up_tensor t;
    up_error e = {0};
    if (up_safetensors_find(st, name, &t, &e)) fail_msg("golden tensor missing: %s", e.msg);
    return t;
}

static inline int golden_has(const up_safetensors *st, const char *name) {
    up_tensor t;
    return up_safetensors_find(st, name, &t, NULL) == UP_OK;
}

/* max |a - b| / max(1, max |b|): the error relative to the tensor's scale. */
static inline double rel_err(const float *a, const float *b, size_t n) {
    double diff = 0, scale = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff || d != d) diff = d;
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
    }
    return diff / scale;
}

#define assert_close(a, b, n, tol, what)                                                      \
    do {                                                                                      \
        double err_ = rel_err((a), (b), (n));                                                 \
        if (!(err_ <= (tol))) fail_msg("%s: relative error %.3g > %.3g", (what), err_, (double)(tol)); \
    } while (0)

#endif
