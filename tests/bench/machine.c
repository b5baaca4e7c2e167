/* bench_machine — this machine's two ceilings, for the real-scale benchmark's report
 * (tests/bench/published_set.sh): OpenBLAS sgemm GFLOP/s at the prefill MLP shape and a square
 * shape, and streaming read bandwidth, at the thread count OpenMP/OpenBLAS are given.
 * Prints key=value lines: sgemm_thin_gflops, sgemm_square_gflops, read_gbps, threads, load. */
#include "bench_machine.h"

int main(void) {
    const double bw = bench_bandwidth((size_t)512 << 20, 5);
    const double thin = bench_sgemm(64, 9216, 2304, 10);
    const double square = bench_sgemm(2048, 2048, 2048, 3);
    printf("threads=%d\nload=%.2f\nread_gbps=%.1f\nsgemm_thin_gflops=%.1f\nsgemm_square_gflops=%.1f\n",
           up_blas_threads(), load_average(), bw, thin, square);
    return 0;
}
