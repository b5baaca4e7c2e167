/* bench_machine — the two ceilings a benchmark judges the engine against, measured in the same
 * run: OpenBLAS sgemm GFLOP/s (prefill and batched work are compute-bound) and streaming read
 * bandwidth (batch-1 decode is bandwidth-bound: every weight is read once per token). Shared by
 * the bench_* programs; each includes it once. xmalloc exits on failure (benchmarks only). */
#ifndef UP_BENCH_MACHINE_H
#define UP_BENCH_MACHINE_H

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "engine/blas.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The 1-minute load average, or -1 where /proc is absent. On a shared machine a figure taken
 * while others ran is not comparable, so the run says how busy the machine was. */
static inline double load_average(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench: cannot allocate %.2f GB\n", bytes / 1e9);
        exit(1);
    }
    return p;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_uniform(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_next(&seed) >> 40) / (float)(1 << 24) - 0.5f;
}

/* Best-of-reps GFLOP/s of C (M,N) = A (M,K) @ B^T, B (N,K): the layout up_linear uses, through
 * up_sgemm, i.e. OpenBLAS's single-threaded kernel on blocks run by our threads (blas.h). */
static double bench_sgemm(int M, int N, int K, int reps) {
    float *A = xmalloc((size_t)M * K * sizeof(float));
    float *B = xmalloc((size_t)N * K * sizeof(float));
    float *C = xmalloc((size_t)M * N * sizeof(float));
    fill_uniform(A, (size_t)M * K, 1);
    fill_uniform(B, (size_t)N * K, 2);
    up_sgemm(M, N, K, 1.0f, A, B, 1, 0.0f, C); /* warm-up: page faults, thread pool start */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        up_sgemm(M, N, K, 1.0f, A, B, 1, 0.0f, C);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(A), free(B), free(C);
    return 2.0 * M * N * K / best / 1e9;
}

/* Sum of one thread's share with four independent vector accumulators, so the loop is limited
 * by memory rather than by the latency of a serial add chain (fast-math is off project-wide,
 * so the compiler would not reassociate a plain loop). */
static float sum_span(const float *x, size_t n) {
    size_t i = 0;
    float s = 0.0f;
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (int k = 0; k < 8; k++) s += lanes[k];
#endif
    for (; i < n; i++) s += x[i];
    return s;
}

static volatile float bandwidth_sink; /* keeps the sums observable */

/* Streaming read of a buffer far larger than the caches, split evenly over the threads. */
static inline double bench_bandwidth(size_t bytes, int reps) {
    size_t n = bytes / sizeof(float);
    float *buf = xmalloc(n * sizeof(float));
    /* First touch in parallel so the pages are mapped before timing. */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) { /* the first pass is a warm-up */
        float s = 0.0f;
        double t0 = now();
#pragma omp parallel reduction(+ : s)
        {
            size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
            size_t lo = n * id / nt, hi = n * (id + 1) / nt;
            s += sum_span(buf + lo, hi - lo);
        }
        double dt = now() - t0;
        bandwidth_sink = s;
        if (r > 0 && dt < best) best = dt;
    }
    free(buf);
    return (double)n * sizeof(float) / best / 1e9;
}

#endif
