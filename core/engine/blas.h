/* blas — the only module that includes cblas.h.
 *
 * Row-major matrix products used by the forward and backward passes, plus
 * thread control. Weights come in their storage dtype (F32/BF16/F16); bf16 and
 * f16 weights are widened to fp32 (exactly) before multiplying, so every
 * product is computed in fp32 whatever the storage. Kernels never allocate:
 * the caller passes scratch where needed.
 *
 * Threads: the program has one pool, OpenMP's. OpenBLAS is set to one thread
 * on first use, and every product is cut into blocks (of output columns, or of
 * rows when those are the larger side) that our threads run as single-threaded
 * sgemm calls; a bf16/f16 weight block is widened by the thread that multiplies
 * it, right before, while it is in cache. Nothing else spins.
 *
 * Determinism: the block edges depend on the shapes only, never on the thread
 * count, so each output element is one single-threaded sgemm call of the same
 * shape whatever the threads, and the small-M kernel sums each output in one
 * fixed order: the products give the same bits for any thread count
 * (test_blas checks 1-3). A row's bits may still depend on how many rows the
 * product has (OpenBLAS's kernels tile rows), as forward.h says. */
#ifndef UP_BLAS_H
#define UP_BLAS_H

#include <stddef.h>

#include "base/tensor.h"

/* Sets the threads used by OpenBLAS and by our own OpenMP kernels. n <= 0 keeps the default. */
void up_blas_set_threads(int n);
int up_blas_threads(void);
/* The BLAS library's own description (OpenBLAS: version, kernel, build options), for manifests. */
const char *up_blas_version(void);

/* C (M,N) = alpha * A (M,K) @ B(K,N) + beta * C; all fp32 row-major, B optionally transposed
 * (then B is (N,K)). Parallel over blocks as above; small products run on the caller. */
void up_sgemm(int M, int N, int K, float alpha, const float *A, const float *B, int b_transposed,
              float beta, float *C);

/* y (M,N) = x (M,K) @ W^T, W (N,K) in `dtype` (a Hugging Face Linear weight). If accumulate,
 * y += instead of =. Three kernels, by rows:
 *  - M <= UP_LINEAR_FUSED_MAX_M (decode): a fused widen-and-dot kernel reads W once in its own
 *    dtype, so decode is bound by the storage's bytes, not fp32's;
 *  - up to UP_LINEAR_TILED_MAX_M (batched decode, short prompts; needs AVX2/FMA/F16C, else the
 *    next): a register-blocked kernel reads each weight once, widens it once into an L1 buffer
 *    and dots it with every row, at close to the machine's sgemm rate. Its sums' order depends
 *    on K only, so in this range a row's bits do not depend on how many rows share the product;
 *  - above: bf16/f16 weights are widened into `scratch` in blocks of rows, one slot per thread,
 *    and multiplied with sgemm.
 * scratch_floats should be up_linear_scratch_floats(K) (a smaller scratch runs fewer threads;
 * it must hold one slot). */
#define UP_LINEAR_FUSED_MAX_M 8
#define UP_LINEAR_TILED_MAX_M 64
/* Scratch (floats) that lets every thread of the pool widen its own block of a product whose
 * widened slices are up to max_dim floats long (up_linear's K, up_linear_backward_input's N). */
size_t up_linear_scratch_floats(int max_dim);

void up_linear(float *y, const float *x, const void *W, up_dtype dtype, int M, int N, int K,
               int accumulate, float *scratch, size_t scratch_floats);

/* dx (M,K) (+)= dy (M,N) @ W, W (N,K) in `dtype`: the activation gradient of up_linear.
 * Up to UP_LINEAR_TILED_MAX_M rows, and for more rows (in blocks) when N is so large that
 * sgemm's column slabs would be narrow (with AVX2/FMA/F16C), a tiled kernel widens W once per
 * block of rows, in panels, and sums each output over n in order, so a row's bits do not
 * depend on M there; otherwise bf16/f16 weights are widened in slabs of columns for sgemm.
 * Scratch as up_linear's, for N. */
void up_linear_backward_input(float *dx, const float *dy, const void *W, up_dtype dtype, int M,
                              int N, int K, int accumulate, float *scratch, size_t scratch_floats);

/* dW (N,K) += dy (M,N)^T @ x (M,K): the weight gradient of up_linear, fp32 weights only. */
void up_linear_backward_weight(float *dW, const float *dy, const float *x, int M, int N, int K);

#endif
