/* The products of blas.h on shapes big enough to take the blocked, threaded paths (the model
 * tests' tiny products stay on one call): each equals a double-precision reference, and the
 * bits are the same for 1, 2 and 3 threads, since block edges depend on the shapes only. */
#include "testutil.h"

#include <stdlib.h>

#include "engine/blas.h"
#include "base/tensor.h"

static uint64_t rng = 12345;

static float uniform(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(rng >> 40) / (float)(1 << 24) - 0.5f;
}

static float *random_floats(size_t n) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = uniform();
    return x;
}

/* W (N, K) as bf16 (truncated), and its exact fp32 value. */
static uint16_t *random_bf16(size_t n, float **exact) {
    uint16_t *w = malloc(n * sizeof *w);
    *exact = malloc(n * sizeof **exact);
    for (size_t i = 0; i < n; i++) {
        float f = uniform();
        uint32_t u;
        memcpy(&u, &f, 4);
        w[i] = (uint16_t)(u >> 16);
        (*exact)[i] = up_bf16_to_f32(w[i]);
    }
    return w;
}

/* max |got - want| relative to the largest |want|, want = sum_k A(m,k) B(k,n) in double with
 * A (M,K) row-major and B given by strides. */
static double check(const float *got, const float *A, const float *B, size_t b_k, size_t b_n, int M, int N, int K) {
    double worst = 0, scale = 1e-30;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double want = 0;
            for (int k = 0; k < K; k++) want += (double)A[(size_t)m * K + k] * B[k * b_k + n * b_n];
            worst = fmax(worst, fabs(got[(size_t)m * N + n] - want));
            scale = fmax(scale, fabs(want));
        }
    return worst / scale;
}

static void test_products(void **state) {
    /* N 2000 by K 600 cuts into several column blocks; M 40 takes the tiled kernel (its own
     * test is below) and, in the backward, the sgemm path. */
    enum { M = 40, N = 2000, K = 600 };
    float *Wf, *x = random_floats((size_t)M * K), *dy = random_floats((size_t)M * N);
    uint16_t *W = random_bf16((size_t)N * K, &Wf);
    const size_t sf = up_linear_scratch_floats(N > K ? N : K);
    float *scratch = malloc(sf * sizeof *scratch);
    float *y[3], *yf[3], *dx[3], *dW[3], *small[3];
    for (int t = 0; t < 3; t++) {
        up_blas_set_threads(t + 1);
        y[t] = malloc((size_t)M * N * sizeof(float)), yf[t] = malloc((size_t)M * N * sizeof(float));
        dx[t] = malloc((size_t)M * K * sizeof(float)), dW[t] = calloc((size_t)N * K, sizeof(float));
        small[t] = malloc((size_t)8 * N * sizeof(float));
        up_linear(y[t], x, W, UP_DTYPE_BF16, M, N, K, 0, scratch, sf);
        up_linear(yf[t], x, Wf, UP_DTYPE_F32, M, N, K, 0, scratch, sf);
        up_linear_backward_input(dx[t], dy, W, UP_DTYPE_BF16, M, N, K, 0, scratch, sf);
        up_linear_backward_weight(dW[t], dy, x, M, N, K);
        up_linear(small[t], x, W, UP_DTYPE_BF16, 8, N, K, 0, scratch, sf);
    }
    /* y = x W^T: B(k, n) = W[n, k]. dx = dy W: B(n, k) = W[n, k]. dW = dy^T x: A = dy^T. */
    assert_true(check(y[0], x, Wf, 1, K, M, N, K) < 1e-5);
    assert_true(check(yf[0], x, Wf, 1, K, M, N, K) < 1e-5);
    assert_true(check(small[0], x, Wf, 1, K, 8, N, K) < 1e-5);
    assert_true(check(dx[0], dy, Wf, K, 1, M, K, N) < 1e-5);
    float *dyT = malloc((size_t)N * M * sizeof *dyT);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) dyT[(size_t)n * M + m] = dy[(size_t)m * N + n];
    assert_true(check(dW[0], dyT, x, K, 1, N, K, M) < 1e-5);
    for (int t = 1; t < 3; t++) {
        assert_memory_equal(y[0], y[t], (size_t)M * N * sizeof(float));
        assert_memory_equal(yf[0], yf[t], (size_t)M * N * sizeof(float));
        assert_memory_equal(dx[0], dx[t], (size_t)M * K * sizeof(float));
        assert_memory_equal(dW[0], dW[t], (size_t)N * K * sizeof(float));
        assert_memory_equal(small[0], small[t], (size_t)8 * N * sizeof(float));
    }
    /* The small-M kernel gives each row the bits it has alone. */
    float *one = malloc((size_t)N * sizeof *one);
    for (int m = 0; m < 8; m++) {
        up_linear(one, x + (size_t)m * K, W, UP_DTYPE_BF16, 1, N, K, 0, scratch, sf);
        assert_memory_equal(one, small[0] + (size_t)m * N, (size_t)N * sizeof(float));
    }
    /* up_sgemm, B plain (K, N) and transposed (N, K); more rows than columns cuts rows. */
    enum { M2 = 900, N2 = 300, K2 = 200 };
    float *A = random_floats((size_t)M2 * K2), *B = random_floats((size_t)K2 * N2);
    float *C[2] = {malloc((size_t)M2 * N2 * sizeof(float)), malloc((size_t)M2 * N2 * sizeof(float))};
    for (int t = 0; t < 2; t++) {
        up_blas_set_threads(t + 1);
        up_sgemm(M2, N2, K2, 1.0f, A, B, 0, 0.0f, C[t]);
    }
    assert_true(check(C[0], A, B, N2, 1, M2, N2, K2) < 1e-5);
    assert_memory_equal(C[0], C[1], (size_t)M2 * N2 * sizeof(float));
    up_sgemm(M2, N2, K2, 1.0f, A, B, 1, 0.0f, C[1]); /* B read as (N2, K2) */
    assert_true(check(C[1], A, B, 1, K2, M2, N2, K2) < 1e-5);
    for (int t = 0; t < 3; t++) free(y[t]), free(yf[t]), free(dx[t]), free(dW[t]), free(small[t]);
    free(C[0]), free(C[1]), free(A), free(B), free(one), free(dyT);
    free(x), free(dy), free(W), free(Wf), free(scratch);
}

/* The tiled kernel (UP_LINEAR_FUSED_MAX_M < M <= UP_LINEAR_TILED_MAX_M) on shapes that reach
 * every edge: N 1061 leaves a short last chunk and a short last tile (fp32 rows then go through
 * the buffer); K 2500 is two blocks with an 8-unaligned scalar tail; M covers tiles of three,
 * two twos in place of a one, and 64. Each product equals the double reference for fp32, bf16
 * and f16 weights, accumulate adds, the bits are the same for 1-3 threads, and a row's bits do
 * not depend on how many rows share the product. Above 64 rows sgemm takes over. The backward
 * (dx = dy W, its own tiled kernel up to 64 rows) is held to the same: N 1061 leaves a short
 * chunk of W's rows, K 2500 a four-column last block, M every remainder of its six-row tiles. */
static void test_tiled(void **state) {
    (void)state;
    enum { N = 1061, K = 2500, MMAX = 70 };
    const int Ms[] = {9, 10, 11, 13, 14, 16, 33, 64, 65, MMAX};
    float *Wf, *x = random_floats((size_t)MMAX * K);
    uint16_t *W = random_bf16((size_t)N * K, &Wf);
    /* f16 weights: random sign, exponent (magnitudes 2^-10 to 1) and mantissa bits. */
    uint16_t *Wh = malloc((size_t)N * K * sizeof *Wh);
    float *Wh_exact = malloc((size_t)N * K * sizeof *Wh_exact);
    for (size_t i = 0; i < (size_t)N * K; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        const uint16_t sign = (uint16_t)((rng >> 63) << 15), expo = (uint16_t)(5 + (rng >> 40) % 10),
                       mant = (uint16_t)((rng >> 20) & 0x3ff);
        Wh[i] = sign | (uint16_t)(expo << 10) | mant;
        Wh_exact[i] = up_f16_to_f32(Wh[i]);
    }
    const size_t sf = up_linear_scratch_floats(K);
    float *scratch = malloc(sf * sizeof *scratch);
    float *y = malloc((size_t)MMAX * N * sizeof *y), *y2 = malloc((size_t)MMAX * N * sizeof *y2);
    float *first = malloc((size_t)N * sizeof *first);
    /* The backward's dy (M, N) and its dx (M, K). */
    float *dy = random_floats((size_t)MMAX * N), *dx = malloc((size_t)MMAX * K * sizeof *dx),
          *dx2 = malloc((size_t)MMAX * K * sizeof *dx2), *dx_first = malloc((size_t)K * sizeof *dx_first);
    const struct { const void *w; up_dtype dt; const float *exact; } kinds[] = {
        {Wf, UP_DTYPE_F32, Wf}, {W, UP_DTYPE_BF16, Wf}, {Wh, UP_DTYPE_F16, Wh_exact}};
    for (size_t d = 0; d < 3; d++) {
        for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
            const int M = Ms[i];
            up_blas_set_threads(1);
            /* The double reference is the slow part: every row count for bf16, two for the others. */
            const int reference = d == 1 || M == 13 || M == 64;
            up_linear(y, x, kinds[d].w, kinds[d].dt, M, N, K, 0, scratch, sf);
            if (reference) assert_true(check(y, x, kinds[d].exact, 1, K, M, N, K) < 1e-5);
            for (int t = 2; t <= 3; t++) {
                up_blas_set_threads(t);
                up_linear(y2, x, kinds[d].w, kinds[d].dt, M, N, K, 0, scratch, sf);
                assert_memory_equal(y, y2, (size_t)M * N * sizeof(float));
            }
            if (M <= UP_LINEAR_TILED_MAX_M) {
                /* Row 0 has the same bits in every tiled product. */
                if (i == 0) memcpy(first, y, (size_t)N * sizeof(float));
                else assert_memory_equal(first, y, (size_t)N * sizeof(float));
            }
            /* The backward, dx = dy W: B(n, k) = W[n, k]. */
            up_blas_set_threads(1);
            up_linear_backward_input(dx, dy, kinds[d].w, kinds[d].dt, M, N, K, 0, scratch, sf);
            if (reference) assert_true(check(dx, dy, kinds[d].exact, K, 1, M, K, N) < 1e-5);
            for (int t = 2; t <= 3; t++) {
                up_blas_set_threads(t);
                up_linear_backward_input(dx2, dy, kinds[d].w, kinds[d].dt, M, N, K, 0, scratch, sf);
                assert_memory_equal(dx, dx2, (size_t)M * K * sizeof(float));
            }
            if (M <= UP_LINEAR_TILED_MAX_M) {
                if (i == 0) memcpy(dx_first, dx, (size_t)K * sizeof(float));
                else assert_memory_equal(dx_first, dx, (size_t)K * sizeof(float));
            }
            /* accumulate: the kernels add their finished sums (sgemm folds them in its own way). */
            if (M > UP_LINEAR_TILED_MAX_M) continue;
            for (size_t j = 0; j < (size_t)M * N; j++) y2[j] = 1.0f;
            up_linear(y2, x, kinds[d].w, kinds[d].dt, M, N, K, 1, scratch, sf);
            for (size_t j = 0; j < (size_t)M * N; j++) assert_true(y2[j] == 1.0f + y[j]);
            for (size_t j = 0; j < (size_t)M * K; j++) dx2[j] = 1.0f;
            up_linear_backward_input(dx2, dy, kinds[d].w, kinds[d].dt, M, N, K, 1, scratch, sf);
            for (size_t j = 0; j < (size_t)M * K; j++) assert_true(dx2[j] == 1.0f + dx[j]);
        }
    }
    free(x), free(W), free(Wf), free(Wh), free(Wh_exact), free(scratch), free(y), free(y2), free(first);
    free(dy), free(dx), free(dx2), free(dx_first);
}

/* The backward of more than UP_LINEAR_TILED_MAX_M rows when N is large (sgemm's slabs would
 * be narrow) runs the tile in blocks of rows: equal to the double reference, bit-equal for 1-3
 * threads, and row 0 has the bits it has in a 9-row product. */
static void test_backward_many_rows(void **state) {
    (void)state;
    enum { N = 4200, K = 200, M = 70 };
    float *Wf, *dy = random_floats((size_t)M * N), *dx = malloc((size_t)M * K * sizeof *dx);
    float *dx2 = malloc((size_t)M * K * sizeof *dx2), *small = malloc((size_t)9 * K * sizeof *small);
    uint16_t *W = random_bf16((size_t)N * K, &Wf);
    const size_t sf = up_linear_scratch_floats(N);
    float *scratch = malloc(sf * sizeof *scratch);
    up_blas_set_threads(1);
    up_linear_backward_input(dx, dy, W, UP_DTYPE_BF16, M, N, K, 0, scratch, sf);
    assert_true(check(dx, dy, Wf, K, 1, M, K, N) < 1e-5);
    up_linear_backward_input(small, dy, W, UP_DTYPE_BF16, 9, N, K, 0, scratch, sf);
    assert_memory_equal(small, dx, (size_t)K * sizeof(float));
    for (int t = 2; t <= 3; t++) {
        up_blas_set_threads(t);
        up_linear_backward_input(dx2, dy, W, UP_DTYPE_BF16, M, N, K, 0, scratch, sf);
        assert_memory_equal(dx, dx2, (size_t)M * K * sizeof(float));
    }
    free(Wf), free(W), free(dy), free(dx), free(dx2), free(small), free(scratch);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_products), cmocka_unit_test(test_tiled),
                                       cmocka_unit_test(test_backward_many_rows)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
