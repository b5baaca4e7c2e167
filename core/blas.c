#include "blas.h"

#include <assert.h>
#include <cblas.h>
#include <omp.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* OpenBLAS's own thread-count setter; declared here because cblas.h does not promise it. */
extern void openblas_set_num_threads(int n);

static int n_threads = 0;

void up_blas_set_threads(int n) {
    if (n <= 0) return;
    n_threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int up_blas_threads(void) { return n_threads > 0 ? n_threads : omp_get_max_threads(); }

/* cblas.h of OpenBLAS declares openblas_get_config, but not every cblas.h does. */
extern char *openblas_get_config(void);

const char *up_blas_version(void) { return openblas_get_config(); }

void up_sgemm(int M, int N, int K, float alpha, const float *A, const float *B, int b_transposed,
              float beta, float *C) {
    if (M <= 0 || N <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, K, B, b_transposed ? K : N, beta, C, N);
}

/* Widen a whole matrix in parallel; the chunking does not affect the (exact) result. */
static void widen(float *dst, const void *src, up_dtype dtype, size_t n) {
    const size_t chunk = 1 << 16;
    long n_chunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
    for (long c = 0; c < n_chunks; c++) {
        size_t off = (size_t)c * chunk;
        size_t len = n - off < chunk ? n - off : chunk;
        up_convert_to_f32(dst + off, (const char *)src + off * up_dtype_size(dtype), dtype, len);
    }
}

/* dot(x, w) over K with w in the storage dtype. The 8-lane accumulation order is fixed, so
 * the result does not depend on threading. */
static float dot_f32(const float *x, const float *w, int K) {
    int k = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(w + k + 8), a1);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(a0, a1));
    float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
#else
    float s = 0.0f;
#endif
    for (; k < K; k++) s += x[k] * w[k];
    return s;
}

static float dot_bf16(const float *x, const uint16_t *w, int K) {
    int k = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        __m256i wi = _mm256_loadu_si256((const __m256i *)(w + k));
        __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(wi)), 16);
        __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(wi, 1)), 16);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_castsi256_ps(lo), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_castsi256_ps(hi), a1);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(a0, a1));
    float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
#else
    float s = 0.0f;
#endif
    for (; k < K; k++) s += x[k] * up_bf16_to_f32(w[k]);
    return s;
}

static float dot_f16(const float *x, const uint16_t *w, int K) {
    int k = 0;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k + 8)));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), w0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), w1, a1);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(a0, a1));
    float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
#else
    float s = 0.0f;
#endif
    for (; k < K; k++) s += x[k] * up_f16_to_f32(w[k]);
    return s;
}

/* Small-M path: each weight row is read once from memory and dotted with all M inputs while it
 * sits in L1, so batched decode costs about one pass over the weights. */
static void linear_fused(float *y, const float *x, const void *W, up_dtype dtype, int M, int N,
                         int K, int accumulate) {
    size_t esz = up_dtype_size(dtype);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const void *row = (const char *)W + (size_t)n * K * esz;
        for (int m = 0; m < M; m++) {
            const float *xm = x + (size_t)m * K;
            float v;
            if (dtype == UP_DTYPE_F32) v = dot_f32(xm, row, K);
            else if (dtype == UP_DTYPE_BF16) v = dot_bf16(xm, row, K);
            else v = dot_f16(xm, row, K);
            float *out = y + (size_t)m * N + n;
            *out = accumulate ? *out + v : v;
        }
    }
}

/* Rows of W handled per sgemm call: all of them for fp32, else what fits the scratch. */
static int block_rows(up_dtype dtype, int N, int K, size_t scratch_floats) {
    if (dtype == UP_DTYPE_F32) return N;
    size_t rows = scratch_floats / (size_t)K;
    assert(rows >= 1);
    return rows >= (size_t)N ? N : (int)rows;
}

/* Rows [n0, n0 + nb) of W as fp32: in place for F32, else widened into scratch. */
static const float *weight_rows(const void *W, up_dtype dtype, int n0, int nb, int K, float *scratch) {
    const void *src = (const char *)W + (size_t)n0 * K * up_dtype_size(dtype);
    if (dtype == UP_DTYPE_F32) return src;
    widen(scratch, src, dtype, (size_t)nb * K);
    return scratch;
}

void up_linear(float *y, const float *x, const void *W, up_dtype dtype, int M, int N, int K,
               int accumulate, float *scratch, size_t scratch_floats) {
    if (M <= 0) return;
    if (M <= UP_LINEAR_FUSED_MAX_M) {
        linear_fused(y, x, W, dtype, M, N, K, accumulate);
        return;
    }
    int rows = block_rows(dtype, N, K, scratch_floats);
    for (int n0 = 0; n0 < N; n0 += rows) {
        int nb = N - n0 < rows ? N - n0 : rows;
        const float *Wf = weight_rows(W, dtype, n0, nb, K, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nb, K, 1.0f, x, K, Wf, K,
                    accumulate ? 1.0f : 0.0f, y + n0, N);
    }
}

void up_linear_backward_input(float *dx, const float *dy, const void *W, up_dtype dtype, int M,
                              int N, int K, int accumulate, float *scratch, size_t scratch_floats) {
    if (M <= 0) return;
    int rows = block_rows(dtype, N, K, scratch_floats);
    for (int n0 = 0; n0 < N; n0 += rows) {
        int nb = N - n0 < rows ? N - n0 : rows;
        const float *Wf = weight_rows(W, dtype, n0, nb, K, scratch);
        float beta = (accumulate || n0 > 0) ? 1.0f : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, nb, 1.0f, dy + n0, N, Wf, K,
                    beta, dx, K);
    }
}

void up_linear_backward_weight(float *dW, const float *dy, const float *x, int M, int N, int K) {
    if (M <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
}
