/* bench_attribution — the seed method's cost on gemma-2-2b-it's shapes (random bf16 weights):
 * forward to L plus the activation backward to l for a T-token prompt, next to the forward of
 * the same span alone (target: backward <= 1.3x that forward), and the latent-scoring time for
 * a 16k and a 65k SAE. Prints figures; never fails on time.
 * usage: bench_attribution [--threads N] [--tokens T] [--source l] [--target L] [--reps R] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "method/attribution.h"
#include "engine/blas.h"
#include "engine/hooks.h"
#include "engine/model.h"
#include "bench_machine.h"

int main(int argc, char **argv) {
    int threads = 0, T = 32, source = 5, target = 15, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--tokens")) T = v;
        else if (!strcmp(argv[i], "--source")) source = v;
        else if (!strcmp(argv[i], "--target")) target = v;
        else if (!strcmp(argv[i], "--reps")) reps = v;
        else {
            fprintf(stderr, "usage: bench_attribution [--threads N] [--tokens T] [--source l] [--target L] [--reps R]\n");
            return 2;
        }
    }
    if (T < 2 || source < 0 || target <= source || target >= 26 || reps < 1) {
        fprintf(stderr, "bench_attribution: need 0 <= source < target < 26, tokens >= 2, reps >= 1\n");
        return 2;
    }
    up_blas_set_threads(threads);
    up_model_config c = up_model_config_gemma2_2b();
    c.n_layers = target + 1; /* nothing above the target layer runs */
    up_model *m;
    up_error e = {0};
    double t0 = now();
    if (up_model_init_random(&m, &c, UP_DTYPE_BF16, 1, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    printf("bench_attribution: gemma-2-2b shapes, bf16, layers 0..%d built in %.1f s; %d threads; %d tokens\n",
           target, now() - t0, up_blas_threads(), T);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int t = 0; t < T; t++) ids[t] = t == 0 ? 2 : 1000 + 37 * t;
    float *v = malloc((size_t)c.d_model * sizeof *v), *grad = malloc((size_t)T * c.d_model * sizeof *grad);
    for (int j = 0; j < c.d_model; j++) v[j] = (j % 7 - 3) / 100.0f;
    up_objective obj = {target, v, NULL, 0};
    up_hook stop = up_hook_stop((up_hook_point){UP_HOOK_RESID_POST, target});
    up_hooks hk = {&stop, 1};
    double best_fwd = 1e30, best_all = 1e30;
    for (int r = 0; r < reps; r++) {
        up_state *s;
        if (up_state_init(&s, m, 1, T, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        double a = now();
        up_forward(s, ids, NULL, NULL, 1, T, &hk, NULL, UP_LOGITS_NONE, &e);
        double fwd = now() - a;
        up_state_free(s);
        a = now();
        double R;
        if (up_gradient(m, ids, NULL, 1, T, source, &obj, NULL, NULL, grad, &R, &e))
            return fprintf(stderr, "%s\n", e.msg), 1;
        double all = now() - a;
        best_fwd = fwd < best_fwd ? fwd : best_fwd;
        best_all = all < best_all ? all : best_all;
    }
    /* The backward spans blocks source+1..target; compare with the forward of that span. */
    double span_frac = (double)(target - source) / (target + 1);
    double fwd_span = best_fwd * span_frac, bwd = best_all - best_fwd;
    printf("forward to L=%d:                 %8.1f ms (best of %d)\n", target, best_fwd * 1e3, reps);
    /* The gradient's matmul work: every layer matrix once per token forward (blocks 0..target),
     * once more backward for the activation gradient (blocks source+1..target); its floor is that
     * work at the machine's sgemm rate, measured now. */
    const double layer_params = (double)c.d_model * (c.n_heads * c.head_dim * 2 + 2 * c.n_kv_heads * c.head_dim) +
                                3.0 * c.d_model * c.d_mlp;
    const double work = 2.0 * T * layer_params * ((target + 1) + (target - source));
    const double sgemm = bench_sgemm(64, 9216, 2304, 3);
    printf("forward + backward to l=%d:       %8.1f ms (target <= 900 ms); %.1f GFLOP of matmuls = %.1f GFLOP/s,"
           " %.0f%% of sgemm 64x9216x2304 (%.1f GFLOP/s now; floor %.0f ms)\n",
           source, best_all * 1e3, work / 1e9, work / best_all / 1e9, 100.0 * work / best_all / 1e9 / sgemm, sgemm,
           work / sgemm / 1e6);
    printf("backward (difference):            %8.1f ms = %.2fx the forward of blocks %d..%d (%.1f ms; target <= 1.3x)\n",
           bwd * 1e3, bwd / fwd_span, source + 1, target, fwd_span * 1e3);
    const int widths[2] = {16384, 65536};
    for (int w = 0; w < 2; w++) {
        up_sae *sae;
        if (up_sae_alloc(&sae, UP_SAE_JUMPRELU, c.d_model, widths[w], 0, 0, NULL, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
        for (size_t i = 0; i < (size_t)widths[w] * c.d_model; i++) sae->W_dec[i] = ((i * 2654435761u) % 1000) / 1e4f;
        float *rg = malloc((size_t)T * widths[w] * sizeof *rg);
        double *scores = malloc((size_t)widths[w] * sizeof *scores);
        int *top = malloc(20 * sizeof *top);
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double a = now();
            up_attribution_scores(sae, grad, T, NULL, UP_SCORE_GRADIENT, NULL, rg, scores, &e);
            up_attribution_rank(scores, widths[w], 20, 1, top);
            double dt = now() - a;
            best = dt < best ? dt : best;
        }
        printf("latent scores + top-20, %6d latents: %8.1f ms (%.1f GFLOP/s)\n", widths[w], best * 1e3,
               2.0 * T * widths[w] * c.d_model / best / 1e9);
        free(rg), free(scores), free(top);
        up_sae_free(sae);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.2f GB\n", ru.ru_maxrss / 1e6);
    free(ids), free(v), free(grad);
    up_model_free(m);
    return 0;
}
