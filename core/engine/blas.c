#include "engine/blas.h"

#include <assert.h>
#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* OpenBLAS's own thread-count setter; declared here because cblas.h does not promise it. */
extern void openblas_set_num_threads(int n);

/* One thread pool in the program: ours. OpenBLAS is held at one thread and every product is
 * cut into blocks that our OpenMP threads run as single-threaded sgemm calls. With OpenBLAS's
 * pthread pool alive as well, its workers and ours spin against each other for the cores
 * (perf showed it on a 2-core machine: 0.55 s per tiny training step against 0.42 with
 * everything single-threaded). */
static int n_threads = 0;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_init(void) { openblas_set_num_threads(1); }

void up_blas_set_threads(int n) {
    pthread_once(&blas_once, blas_init);
    if (n <= 0) return;
    n_threads = n;
    omp_set_num_threads(n);
}

int up_blas_threads(void) { return n_threads > 0 ? n_threads : omp_get_max_threads(); }

/* cblas.h of OpenBLAS declares openblas_get_config, but not every cblas.h does. */
extern char *openblas_get_config(void);

const char *up_blas_version(void) { return openblas_get_config(); }

/* Below this many multiply-adds a product runs as one call on the calling thread: waking the
 * pool costs more than it saves. */
#define SERIAL_MACS (1L << 20)
/* Target size of one block's share of the partitioned operand (fp32 bytes): big enough that
 * OpenBLAS's repacking of the other operand per call stays a small cost, small enough that
 * a widened block stays in the last-level cache until sgemm has packed it. */
#define BLOCK_BYTES (1L << 20)

/* Block width along a dimension of length n whose slices are `depth` floats long: a
 * multiple of 16 (OpenBLAS's kernel widths divide it), at least 16. It depends on the shape
 * only, never on the thread count, so every element of a result comes from the same sgemm
 * call shape whatever the threads. */
static int block_width(int n, int depth) {
    long w = BLOCK_BYTES / ((long)sizeof(float) * (depth > 0 ? depth : 1));
    w = w < 16 ? 16 : w & ~15L;
    return w >= n ? n : (int)w;
}

static int n_blocks(int n, int w) { return (n + w - 1) / w; }

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, cut into column blocks of C (split_n) or
 * row blocks, each one single-threaded sgemm run by one of our threads. */
static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    pthread_once(&blas_once, blas_init);
    if (M <= 0 || N <= 0) return;
    if ((long)M * N * K < SERIAL_MACS) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* Cut the larger side: its slices are what each call brings in fresh. */
    const int split_n = N >= M;
    const int w = split_n ? block_width(N, K) : block_width(M, K), nb = n_blocks(split_n ? N : M, w);
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int i = 0; i < nb; i++) {
        const int o = i * w, len = (split_n ? N : M) - o < w ? (split_n ? N : M) - o : w;
        if (split_n) {
            const float *Bo = tb == CblasNoTrans ? B + o : B + (size_t)o * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, len, K, alpha, A, lda, Bo, ldb, beta, C + o, ldc);
        } else {
            const float *Ao = ta == CblasNoTrans ? A + (size_t)o * lda : A + o;
            cblas_sgemm(CblasRowMajor, ta, tb, len, N, K, alpha, Ao, lda, B, ldb, beta, C + (size_t)o * ldc, ldc);
        }
    }
}

void up_sgemm(int M, int N, int K, float alpha, const float *A, const float *B, int b_transposed,
              float beta, float *C) {
    gemm(CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, K, B, b_transposed ? K : N,
         beta, C, N);
}

/* Threads that may run at once given the scratch: each needs its own slot. */
static int scratch_threads(size_t scratch_floats, size_t slot) {
    size_t n = scratch_floats / slot, max = (size_t)omp_get_max_threads();
    assert(n >= 1 && "blas: scratch smaller than one block (see up_linear_scratch_floats)");
    return (int)(n < max ? n : max);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define UP_FUSED_SIMD 1
/* Weights k..k+15 of a row in its dtype, as two fp32 vectors (the conversions of dot_*). */
static inline __attribute__((always_inline)) void load16(const void *w, up_dtype dt, int k, __m256 *lo, __m256 *hi) {
    if (dt == UP_DTYPE_F32) {
        *lo = _mm256_loadu_ps((const float *)w + k);
        *hi = _mm256_loadu_ps((const float *)w + k + 8);
    } else if (dt == UP_DTYPE_BF16) {
        __m256i wi = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
        *lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(wi)), 16));
        *hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(wi, 1)), 16));
    } else {
        *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
        *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k + 8)));
    }
}

static inline __attribute__((always_inline)) float weight_at(const void *w, up_dtype dt, int k) {
    if (dt == UP_DTYPE_F32) return ((const float *)w)[k];
    if (dt == UP_DTYPE_BF16) return up_bf16_to_f32(((const uint16_t *)w)[k]);
    return up_f16_to_f32(((const uint16_t *)w)[k]);
}

/* out[g] = dot(x + g*K, w) for g < G (G a constant at each call site, so the accumulators live
 * in registers): every 16 weights are loaded and converted once for the G inputs. Each out[g]
 * is summed in one fixed order (two 8-lane accumulators over 16-weight steps, a fixed lane
 * reduction, then the scalar tail), whatever G, so an output's bits depend neither on how many
 * rows share the kernel nor on threading. */
static inline __attribute__((always_inline)) void dots(float *out, const float *x, const void *w, up_dtype dt, int K,
                                                       const int G) {
    __m256 a0[4], a1[4];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m256 lo, hi;
        load16(w, dt, k, &lo, &hi);
        for (int g = 0; g < G; g++) {
            a0[g] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)g * K + k), lo, a0[g]);
            a1[g] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)g * K + k + 8), hi, a1[g]);
        }
    }
    for (int g = 0; g < G; g++) {
        float lanes[8];
        _mm256_storeu_ps(lanes, _mm256_add_ps(a0[g], a1[g]));
        float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        for (int j = k; j < K; j++) s += x[(size_t)g * K + j] * weight_at(w, dt, j);
        out[g] = s;
    }
}

/* All M (<= 8) inputs against one weight row, four at a time. */
static inline __attribute__((always_inline)) void row_dots(float *v, const float *x, const void *row, up_dtype dt, int M,
                                                           int K) {
    int m = 0;
    for (; m + 4 <= M; m += 4) dots(v + m, x + (size_t)m * K, row, dt, K, 4);
    if (M - m >= 2) dots(v + m, x + (size_t)m * K, row, dt, K, 2), m += 2;
    if (m < M) dots(v + m, x + (size_t)m * K, row, dt, K, 1);
}


/* ---- the tiled kernel: UP_LINEAR_FUSED_MAX_M < M <= UP_LINEAR_TILED_MAX_M, any dtype ---------
 *
 * y = x @ W^T as dot products along K, register-blocked: a tile of TILE_R input rows times
 * TILE_C weight rows keeps TILE_R*TILE_C eight-lane accumulators in registers, so each weight
 * vector loaded serves TILE_R rows and each input vector TILE_C weight rows. K is cut into
 * blocks of at most TILE_KC (a block of the input rows stays in L2 while a thread sweeps its
 * weight rows); a 16-bit weight tile is widened once per block into a small buffer (L1/L2) and
 * then read by every input row, so the conversion costs once per weight, not once per row.
 * Measured on gemma-2-2b's gate_proj (9216x2304, bf16, 2 threads, AVX2, sgemm ~147 GFLOP/s;
 * this VM drifts 10-20% between runs): 102-114 GFLOP/s at M=16, 106-132 at 32, 131-136 at 64,
 * against widen-then-sgemm's 87, 111-116 and 135-141 run back to back: faster below ~40 rows,
 * level above, and a row's bits no longer depend on the batch. TILE_KC of 512 or 1024 was
 * slower at M=16 (more tile overhead), 4096 no better; software prefetch gained nothing.
 *
 * Order of summation, per output: within a block, one accumulator per lane over 8-wide steps,
 * lanes summed as ((0+1)+(2+3))+((4+5)+(6+7)), then the block's scalar tail; blocks are added
 * in order into a zeroed sum, and the sum is stored (or added to y). Block edges depend on K
 * only, so an output's bits depend neither on M, nor on which rows share a tile, nor on the
 * thread count. */
#define TILE_R 3
#define TILE_C 4
#define TILE_KC 2304
/* Weight rows per unit of parallel work: the rows one thread finishes (all of K) before taking
 * the next unit, so its block of sums stays in L1. */
#define TILE_NB 64
/* Buffer rows are padded so that they do not sit a multiple of 4 KiB apart (L1 set conflicts). */
#define TILE_PAD 16

/* Block length: K cut into equal blocks of at most TILE_KC, a multiple of 8 (the last may be
 * shorter). Depends on K only. */
static int tile_kc(int K) {
    int nblk = (K + TILE_KC - 1) / TILE_KC;
    int kc = (K + nblk - 1) / nblk;
    return (kc + 7) & ~7;
}

/* Four sums of eight lanes each, lanes added in the fixed order above. */
static inline __attribute__((always_inline)) __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* sums[r*TILE_C + c] = dot(x_r[0..kv), w_c[0..kv)) for R rows (R <= TILE_R, a constant at each
 * call) and TILE_C weight rows w + c*ldw; kv a multiple of 8. */
static inline __attribute__((always_inline)) void tile_dots(float *sums, const float *x, int ldx, const float *w,
                                                            int ldw, int kv, const int R) {
    __m256 acc[TILE_R][TILE_C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < TILE_C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int k = 0; k < kv; k += 8) {
        __m256 xv[TILE_R];
        for (int r = 0; r < R; r++) {
            xv[r] = _mm256_loadu_ps(x + (size_t)r * ldx + k);
            __asm__("" : "+x"(xv[r]));
        }
        for (int c = 0; c < TILE_C; c++) {
            __m256 wv = _mm256_loadu_ps(w + (size_t)c * ldw + k);
            /* Keep xv and wv in registers: folded into each FMA as a memory operand, one of them
             * is loaded R (or TILE_C) times and the loop is bound by loads instead of FMAs. */
            __asm__("" : "+x"(wv));
            for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++) _mm_storeu_ps(sums + r * TILE_C, hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
}

/* Widens n weights at w (dtype) into dst, 16 at a time with the conversions of load16. */
static inline void widen(float *dst, const void *w, up_dtype dt, int n) {
    int k = 0;
    if (dt == UP_DTYPE_F32) {
        memcpy(dst, w, (size_t)n * sizeof(float));
        return;
    }
    if (dt == UP_DTYPE_BF16)
        for (; k + 16 <= n; k += 16) {
            __m256 lo, hi;
            load16(w, UP_DTYPE_BF16, k, &lo, &hi);
            _mm256_storeu_ps(dst + k, lo), _mm256_storeu_ps(dst + k + 8, hi);
        }
    else if (dt == UP_DTYPE_F16)
        for (; k + 16 <= n; k += 16) {
            __m256 lo, hi;
            load16(w, UP_DTYPE_F16, k, &lo, &hi);
            _mm256_storeu_ps(dst + k, lo), _mm256_storeu_ps(dst + k + 8, hi);
        }
    for (; k < n; k++) dst[k] = weight_at(w, dt, k);
}

/* Adds one block's dots (columns k0..k0+kc of K) of R input rows against weight rows n..n+nc
 * (nc <= TILE_C; missing rows read row 0 again and are dropped) to sum (rows of TILE_NB). */
static inline __attribute__((always_inline)) void tile_block(float *sum, const float *x, int K, const float *w,
                                                             int ldw, int nc, int kc, const int R) {
    const int kv = kc & ~7;
    float s[TILE_R * TILE_C];
    tile_dots(s, x, K, w, ldw, kv, R);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < nc; c++) {
            float t = s[r * TILE_C + c];
            for (int k = kv; k < kc; k++) t += x[(size_t)r * K + k] * w[(size_t)c * ldw + k];
            sum[r * TILE_NB + c] += t;
        }
}

static void linear_tiled(float *y, const float *x, const void *W, up_dtype dt, int M, int N, int K,
                         int accumulate, float *scratch, size_t scratch_floats) {
    const size_t esz = up_dtype_size(dt);
    const int kc_max = tile_kc(K), nchunks = (N + TILE_NB - 1) / TILE_NB;
    const size_t slot = (size_t)TILE_C * (kc_max + TILE_PAD) + (size_t)UP_LINEAR_TILED_MAX_M * TILE_NB;
    const int nthreads = scratch_threads(scratch_floats, slot);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nchunks > 1)
    for (int ch = 0; ch < nchunks; ch++) {
        float *wbuf = scratch + (size_t)omp_get_thread_num() * slot, *sum = wbuf + (size_t)TILE_C * (kc_max + TILE_PAD);
        const int n0 = ch * TILE_NB, nb = N - n0 < TILE_NB ? N - n0 : TILE_NB;
        for (int i = 0; i < M * TILE_NB; i++) sum[i] = 0.0f;
        for (int k0 = 0; k0 < K; k0 += kc_max) {
            const int kc = K - k0 < kc_max ? K - k0 : kc_max;
            for (int c0 = 0; c0 < nb; c0 += TILE_C) {
                const int nc = nb - c0 < TILE_C ? nb - c0 : TILE_C;
                /* fp32 rows are read in place; 16-bit rows, and a short last tile of fp32 rows
                 * (whose missing rows must not be read past W's end), go through the buffer.
                 * A short tile's missing rows are dotted with whatever the buffer holds and dropped. */
                const float *w = wbuf;
                int ldw = kc_max + TILE_PAD;
                if (dt == UP_DTYPE_F32 && nc == TILE_C) {
                    w = (const float *)W + (size_t)(n0 + c0) * K + k0, ldw = K;
                } else {
                    for (int c = 0; c < nc; c++)
                        widen(wbuf + (size_t)c * ldw, (const char *)W + ((size_t)(n0 + c0 + c) * K + k0) * esz, dt, kc);
                }
                /* Rows in tiles of three; a remainder of one row after at least one full tile is
                 * taken as two tiles of two (a one-row tile runs at a third of the rate). */
                const int full = M % TILE_R == 1 && M > TILE_R ? M / TILE_R - 1 : M / TILE_R;
                int m = 0;
                for (; m < full * TILE_R; m += TILE_R)
                    tile_block(sum + (size_t)m * TILE_NB + c0, x + (size_t)m * K + k0, K, w, ldw, nc, kc, TILE_R);
                for (; M - m >= 2; m += 2)
                    tile_block(sum + (size_t)m * TILE_NB + c0, x + (size_t)m * K + k0, K, w, ldw, nc, kc, 2);
                if (m < M) tile_block(sum + (size_t)m * TILE_NB + c0, x + (size_t)m * K + k0, K, w, ldw, nc, kc, 1);
            }
        }
        for (int r = 0; r < M; r++)
            for (int c = 0; c < nb; c++) {
                float *out = y + (size_t)r * N + n0 + c;
                *out = accumulate ? *out + sum[r * TILE_NB + c] : sum[r * TILE_NB + c];
            }
    }
}

/* ---- the tiled backward kernel: dx = dy @ W for M <= UP_LINEAR_TILED_MAX_M -------------------
 *
 * dx (M,K) = dy (M,N) @ W (N,K) as outer products along N: a tile of BT_R rows times 16 columns
 * of dx keeps BT_R*2 eight-lane accumulators in registers, each step broadcasting one dy value
 * per row against 16 widened weights. Work is cut into blocks of BT_KB columns of dx (the
 * parallel unit); within a block, W's rows come in chunks of BT_NCH, widened once into a panel
 * that every row tile then reads. Each output is summed over n in index order, one FMA at a time,
 * and the finished sum stored (or added to dx): its bits depend on nothing but N.
 * Measured (gate_proj's shape, bf16, 2 threads): 86-89 / 111-114 / 135-138 GFLOP/s at
 * M = 16 / 32 / 64 against 33 / 53-55 / 75 for widen-slabs-then-sgemm, whose slabs were 16
 * columns wide at N=9216; the refusal gradient's backward went from 1.55x to 1.0-1.2x the
 * forward of its span. Tried and
 * dropped: each thread one contiguous column range in 512-column blocks (1.25-1.28x), no
 * prefetch (slower), the panel row-major instead of in 16-column strips. */
#define BT_R 6
#define BT_KB 128
#define BT_NCH 128
#define BT_LDY (BT_NCH + 8)
#define BT_PREFETCH 16
/* Column slabs narrower than this send the backward of more than UP_LINEAR_TILED_MAX_M rows to
 * the tile as well. */
#define BT_NARROW_SLAB 64

static inline __attribute__((always_inline)) void bt_tile(float *acc_mem, int ld_acc, const float *dy, int N,
                                                          const float *panel, int nch, const int R) {
    __m256 acc[BT_R][2];
    for (int r = 0; r < R; r++) {
        acc[r][0] = _mm256_loadu_ps(acc_mem + (size_t)r * ld_acc);
        acc[r][1] = _mm256_loadu_ps(acc_mem + (size_t)r * ld_acc + 8);
    }
    for (int n = 0; n < nch; n++) {
        __m256 w0 = _mm256_loadu_ps(panel + (size_t)n * 16), w1 = _mm256_loadu_ps(panel + (size_t)n * 16 + 8);
        __asm__("" : "+x"(w0), "+x"(w1));
        for (int r = 0; r < R; r++) {
            __m256 b = _mm256_broadcast_ss(dy + (size_t)r * N + n);
            acc[r][0] = _mm256_fmadd_ps(b, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(acc_mem + (size_t)r * ld_acc, acc[r][0]);
        _mm256_storeu_ps(acc_mem + (size_t)r * ld_acc + 8, acc[r][1]);
    }
}

static void linear_backward_tiled(float *dx, const float *dy, const void *W, up_dtype dt, int M, int N, int K,
                                  int accumulate, float *scratch, size_t scratch_floats) {
    const size_t esz = up_dtype_size(dt);
    const size_t slot = (size_t)BT_NCH * BT_KB + (size_t)UP_LINEAR_TILED_MAX_M * (BT_KB + BT_LDY);
    const int nthreads = scratch_threads(scratch_floats, slot);
    const int nblocks = (K + BT_KB - 1) / BT_KB;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nblocks > 1)
    for (int kb = 0; kb < nblocks; kb++) {
        float *panel = scratch + (size_t)omp_get_thread_num() * slot, *sum = panel + (size_t)BT_NCH * BT_KB,
              *dyc = sum + (size_t)UP_LINEAR_TILED_MAX_M * BT_KB;
        const int k0 = kb * BT_KB, kw = K - k0 < BT_KB ? K - k0 : BT_KB;
        memset(sum, 0, (size_t)M * BT_KB * sizeof(float));
        for (int n0 = 0; n0 < N; n0 += BT_NCH) {
            const int nch = N - n0 < BT_NCH ? N - n0 : BT_NCH;
            /* The panel: rows n0.. of W, columns k0..k0+kw, widened and stored as strips of 16
             * columns, each strip's rows contiguous (BT_NCH*16 floats, L1-resident while every row
             * tile reads it). A short block's missing columns are zero, so their sums (never
             * stored) stay finite. */
            for (int n = 0; n < nch; n++) {
                const char *src = (const char *)W + ((size_t)(n0 + n) * K + k0) * esz;
                /* A block reads a few cache lines from each of many rows, which the hardware
                 * prefetcher does not follow: ask for the row BT_PREFETCH ahead. */
                if (n0 + n + BT_PREFETCH < N)
                    for (size_t b = 0; b < (size_t)kw * esz; b += 64) _mm_prefetch(src + (size_t)BT_PREFETCH * K * esz + b, _MM_HINT_T0);
                for (int c = 0; c < BT_KB; c += 16) {
                    float *dst = panel + (size_t)c * BT_NCH + (size_t)n * 16;
                    const int len = kw - c >= 16 ? 16 : kw - c > 0 ? kw - c : 0;
                    widen(dst, src + (size_t)c * esz, dt, len);
                    for (int k = len; k < 16; k++) dst[k] = 0.0f;
                }
            }
            /* dy's chunk, copied to rows BT_LDY apart: dy's own rows are N floats apart, often
             * a multiple of 4 KiB (N = 9216), and the tile's six rows then share one L1 set. */
            for (int r = 0; r < M; r++)
                memcpy(dyc + (size_t)r * BT_LDY, dy + (size_t)r * N + n0, (size_t)nch * sizeof(float));
            for (int c = 0; c < kw; c += 16) {
                int m = 0;
                for (; m + BT_R <= M; m += BT_R)
                    bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, BT_R);
                switch (M - m) {
                case 5: bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, 5); break;
                case 4: bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, 4); break;
                case 3: bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, 3); break;
                case 2: bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, 2); break;
                case 1: bt_tile(sum + (size_t)m * BT_KB + c, BT_KB, dyc + (size_t)m * BT_LDY, BT_LDY, panel + (size_t)c * BT_NCH, nch, 1); break;
                default: break;
                }
            }
        }
        for (int r = 0; r < M; r++)
            for (int k = 0; k < kw; k++) {
                float *out = dx + (size_t)r * K + k0 + k;
                *out = accumulate ? *out + sum[(size_t)r * BT_KB + k] : sum[(size_t)r * BT_KB + k];
            }
    }
}
#endif

/* Small-M path: each weight row is read once from memory, converted once per 16 weights and
 * dotted with up to four inputs at a time in registers, so batched decode costs about one pass
 * over the weights rather than M. */
static void linear_fused(float *y, const float *x, const void *W, up_dtype dtype, int M, int N,
                         int K, int accumulate) {
    size_t esz = up_dtype_size(dtype);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const void *row = (const char *)W + (size_t)n * K * esz;
        float v[UP_LINEAR_FUSED_MAX_M];
#ifdef UP_FUSED_SIMD
        /* One call per dtype, so each is compiled with its conversion inlined. */
        if (dtype == UP_DTYPE_BF16) row_dots(v, x, row, UP_DTYPE_BF16, M, K);
        else if (dtype == UP_DTYPE_F32) row_dots(v, x, row, UP_DTYPE_F32, M, K);
        else row_dots(v, x, row, UP_DTYPE_F16, M, K);
#else
        /* Without AVX2/FMA/F16C: plain dot products in index order. */
        float wk[1];
        for (int m = 0; m < M; m++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                up_convert_to_f32(wk, (const char *)row + (size_t)k * esz, dtype, 1);
                acc += x[(size_t)m * K + k] * wk[0];
            }
            v[m] = acc;
        }
#endif
        for (int m = 0; m < M; m++) {
            float *out = y + (size_t)m * N + n;
            *out = accumulate ? *out + v[m] : v[m];
        }
    }
}

/* Widened-block scratch per thread for a product whose blocks are slices of `depth` floats:
 * block_width's block, at least 16 slices. */
static size_t slot_floats(int depth) {
    const size_t a = BLOCK_BYTES / sizeof(float), b = (size_t)16 * (depth > 0 ? depth : 1);
    return a > b ? a : b;
}

size_t up_linear_scratch_floats(int max_dim) { return (size_t)omp_get_max_threads() * slot_floats(max_dim); }


void up_linear(float *y, const float *x, const void *W, up_dtype dtype, int M, int N, int K,
               int accumulate, float *scratch, size_t scratch_floats) {
    pthread_once(&blas_once, blas_init);
    if (M <= 0) return;
    if (M <= UP_LINEAR_FUSED_MAX_M) {
        linear_fused(y, x, W, dtype, M, N, K, accumulate);
        return;
    }
#ifdef UP_FUSED_SIMD
    if (M <= UP_LINEAR_TILED_MAX_M) {
        linear_tiled(y, x, W, dtype, M, N, K, accumulate, scratch, scratch_floats);
        return;
    }
#endif
    const float beta = accumulate ? 1.0f : 0.0f;
    if (dtype == UP_DTYPE_F32) {
        gemm(CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, beta, y, N);
        return;
    }
    /* Each thread widens a block of weight rows into its own slot and multiplies it at once,
     * while the block is still in cache. */
    const size_t esz = up_dtype_size(dtype), slot = slot_floats(K);
    const int w = block_width(N, K), nb = n_blocks(N, w);
#pragma omp parallel for schedule(static) num_threads(scratch_threads(scratch_floats, slot)) if (nb > 1)
    for (int i = 0; i < nb; i++) {
        const int n0 = i * w, len = N - n0 < w ? N - n0 : w;
        float *Wf = scratch + (size_t)omp_get_thread_num() * slot;
        up_convert_to_f32(Wf, (const char *)W + (size_t)n0 * K * esz, dtype, (size_t)len * K);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, len, K, 1.0f, x, K, Wf, K, beta, y + n0, N);
    }
}

void up_linear_backward_input(float *dx, const float *dy, const void *W, up_dtype dtype, int M,
                              int N, int K, int accumulate, float *scratch, size_t scratch_floats) {
    pthread_once(&blas_once, blas_init);
    if (M <= 0) return;
#ifdef UP_FUSED_SIMD
    /* Up to UP_LINEAR_TILED_MAX_M rows, and for any M where sgemm's column slabs (below) would be
     * narrow (N large: 16 columns at N = 9216, where the tile ran 1.5x faster at 128-256 rows;
     * at 112 columns sgemm was ~10% faster), in blocks of rows: an output's sum does not
     * depend on the block it is in. */
    if (M <= UP_LINEAR_TILED_MAX_M || block_width(K, N) < BT_NARROW_SLAB) {
        for (int m0 = 0; m0 < M; m0 += UP_LINEAR_TILED_MAX_M) {
            const int rows = M - m0 < UP_LINEAR_TILED_MAX_M ? M - m0 : UP_LINEAR_TILED_MAX_M;
            linear_backward_tiled(dx + (size_t)m0 * K, dy + (size_t)m0 * N, W, dtype, rows, N, K, accumulate, scratch,
                                  scratch_floats);
        }
        return;
    }
#endif
    const float beta = accumulate ? 1.0f : 0.0f;
    if (dtype == UP_DTYPE_F32) {
        gemm(CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, W, K, beta, dx, K);
        return;
    }
    /* Column blocks of W (all N rows of a slab of columns), so each output element is one
     * call's full sum over N. */
    const size_t esz = up_dtype_size(dtype), slot = slot_floats(N);
    const int w = block_width(K, N), nb = n_blocks(K, w);
#pragma omp parallel for schedule(static) num_threads(scratch_threads(scratch_floats, slot)) if (nb > 1)
    for (int i = 0; i < nb; i++) {
        const int k0 = i * w, len = K - k0 < w ? K - k0 : w;
        float *Wf = scratch + (size_t)omp_get_thread_num() * slot;
        for (int n = 0; n < N; n++)
            up_convert_to_f32(Wf + (size_t)n * len, (const char *)W + ((size_t)n * K + k0) * esz, dtype, len);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, len, N, 1.0f, dy, N, Wf, len, beta, dx + k0, K);
    }
}

void up_linear_backward_weight(float *dW, const float *dy, const float *x, int M, int N, int K) {
    if (M <= 0) return;
    gemm(CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
}
