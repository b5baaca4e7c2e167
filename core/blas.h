/* blas — the only module that includes cblas.h.
 *
 * Row-major matrix products used by the forward and backward passes, plus
 * thread control. Weights come in their storage dtype (F32/BF16/F16); bf16 and
 * f16 weights are widened to fp32 (exactly) before multiplying, so every
 * product is computed in fp32 whatever the storage. Kernels never allocate:
 * the caller passes scratch where needed.
 *
 * Determinism: for a fixed thread count the same inputs give the same bits
 * (OpenBLAS's sgemm partitions work by thread count). */
#ifndef UP_BLAS_H
#define UP_BLAS_H

#include <stddef.h>

#include "tensor.h"

/* Sets the threads used by OpenBLAS and by our own OpenMP kernels. n <= 0 keeps the default. */
void up_blas_set_threads(int n);
int up_blas_threads(void);
/* The BLAS library's own description (OpenBLAS: version, kernel, build options), for manifests. */
const char *up_blas_version(void);

/* C (M,N) = alpha * A (M,K) @ B(K,N) + beta * C; all fp32 row-major, B optionally transposed
 * (then B is (N,K)). Thin wrapper over cblas_sgemm. */
void up_sgemm(int M, int N, int K, float alpha, const float *A, const float *B, int b_transposed,
              float beta, float *C);

/* y (M,N) = x (M,K) @ W^T, W (N,K) in `dtype` (a Hugging Face Linear weight). If accumulate,
 * y += instead of =. For small M (decode, up to UP_LINEAR_FUSED_MAX_M rows) a fused
 * widen-and-dot kernel reads W once in its own dtype, so decode is bound by the storage's
 * bytes, not fp32's. Otherwise bf16/f16 weights are widened into `scratch` (capacity
 * scratch_floats, at least K floats) in blocks of rows and multiplied with sgemm. */
#define UP_LINEAR_FUSED_MAX_M 8
void up_linear(float *y, const float *x, const void *W, up_dtype dtype, int M, int N, int K,
               int accumulate, float *scratch, size_t scratch_floats);

/* dx (M,K) (+)= dy (M,N) @ W, W (N,K) in `dtype`: the activation gradient of up_linear.
 * Same scratch contract. */
void up_linear_backward_input(float *dx, const float *dy, const void *W, up_dtype dtype, int M,
                              int N, int K, int accumulate, float *scratch, size_t scratch_floats);

/* dW (N,K) += dy (M,N)^T @ x (M,K): the weight gradient of up_linear, fp32 weights only. */
void up_linear_backward_weight(float *dW, const float *dy, const float *x, int M, int N, int K);

#endif
