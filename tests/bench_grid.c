/* bench_grid — throughput of the steering grid on gemma-2-2b's shapes, batched vs one cell at a
 * time.
 *
 * Builds gemma-2-2b-it's architecture in memory with random weights (no checkpoint needed) and
 * a random 16k-latent JumpReLU SAE at blocks.{L/2}.hook_resid_post, then runs the grid
 * 1 prompt × (none + latents × alphas) twice per setting: scoring only (max_new_tokens 0) and
 * with generation (max_new_tokens N, no stop ids, so every row generates N tokens), each with
 * rows batched (--batch, 64) and one row per pass. The one-at-a-time run is stopped after
 * --alone cells through the progress callback (a rate needs no more), so a full-size run
 * stays within minutes. Coherence (the unsteered log-prob pass) and the projection R are on,
 * as in a real run; the first-order prediction (one backward per prompt) is off, since it does
 * not depend on batching; nothing is cached.
 *
 * Prints cells/s for both, their ratio and the peak RSS; never fails on time. Exit status is
 * non-zero only when something errors.
 *
 *   bench_grid [--layers N] [--dtype bf16|f32] [--latents 8] [--alphas 8] [--prompt T]
 *              [--new N] [--batch B] [--alone K] [--threads N] [--mode score|gen|both]
 *              [--no-coherence]   (skip the unsteered log-prob pass, to see generation alone)
 *              [--no-share]       (every row computes its own prompt, to see what sharing gives)
 *
 * The machine bounds the ratio: batch-1 decode reads every weight once per token, so it runs at
 * memory bandwidth, while batched work is compute-bound at sgemm speed. The bench measures both
 * ceilings (bench_machine.h) and prints, next to the measured ratio, the ratio the two runs
 * would have if each ran at its ceiling (matmul FLOPs and weight bytes only; attention and
 * elementwise work left out). A batched run cannot beat alone by more than the FLOP/s-to-
 * bandwidth balance allows unless alone runs below its ceiling.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_machine.h"
#include "engine/blas.h"
#include "method/grid.h"
#include "engine/model.h"
#include "sae/sae.h"

typedef struct opts {
    int layers, latents, alphas, prompt, new_tokens, batch, alone, threads, score, gen, coherence, share;
    up_dtype dtype;
} opts;

static double peak_rss_gb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0 / 1e9; /* KiB on Linux */
}

/* gemma-2-2b-it's config.json; layers > 0 shrinks it for quick runs. */
static up_model_config gemma2_2b(int layers) {
    up_model_config c = up_model_config_gemma2_2b();
    if (layers > 0) c.n_layers = layers;
    return c;
}

typedef struct stop_after {
    int cells;
} stop_after;

static int stop_progress(const up_grid_progress *p, void *user) {
    const stop_after *s = user;
    return s->cells > 0 && p->steps == 0 && p->computed >= s->cells;
}

/* Runs the grid with `batch` rows per pass (stopping after `stop` computed cells if > 0);
 * returns computed cells per second, or -1 on error. */
static double run(up_grid *g, int batch, int stop, int coherence, int share, const int32_t *refusal, int *computed,
                  double *seconds, long *prompt_tokens) {
    up_grid_opts o = up_grid_opts_default();
    o.batch = batch;
    o.coherence = coherence;
    o.share_prompts = share;
    o.refusal_ids = refusal, o.n_refusal = 1;
    o.predict = 0;
    stop_after sa = {stop};
    o.progress = stop_progress, o.user = &sa;
    up_error e = {0};
    up_status st = up_grid_run(g, &o, &e);
    if (st && st != UP_ERR_ABORTED) {
        fprintf(stderr, "bench_grid: %s\n", e.msg);
        return -1;
    }
    up_grid_totals t = up_grid_get_totals(g);
    *computed = t.computed, *seconds = t.seconds, *prompt_tokens = t.prompt_tokens;
    return t.computed / t.seconds;
}

/* Seconds per cell of the two runs at the machine's ceilings (see the header): F FLOP/s, BW
 * bytes/s, W weight bytes; the first `shared` of the L layers of the prompt run once per batch
 * of B rows (prefix sharing), the rest per row. */
typedef struct ceiling {
    double alone, batched;
} ceiling;

static ceiling at_ceiling(const up_model_config *c, double W, int T, int n_new, int B, int shared, int coherence,
                          double F, double BW) {
    const double d = c->d_model, qd = (double)c->n_heads * c->head_dim, kvd = (double)c->n_kv_heads * c->head_dim;
    const double P_layer = c->n_layers * (2 * d * qd + 2 * d * kvd + 3 * d * c->d_mlp), P_head = (double)c->vocab_size * d;
    const double f = (double)shared / c->n_layers, steps = n_new > 0 ? n_new - 1 : 0;
    const double per_token = 2 * (P_layer + P_head);
    ceiling k;
    k.alone = (2 * P_layer * T + 2 * P_head) / F;
    k.batched = (2 * P_layer * T * ((1 - f) + f / B) + 2 * P_head) / F;
    if (n_new > 0) {
        k.alone += steps * fmax(W / BW, per_token / F);
        k.batched += steps * per_token / F;
        if (coherence) {
            k.alone += (2 * P_layer * (T + steps) + 2 * P_head * n_new) / F;
            /* Each prompt once per batch (no hooks in that pass), then every completion. */
            k.batched += (2 * P_layer * (steps + (double)T / B) + 2 * P_head * n_new) / F;
        }
    }
    return k;
}

static int parse_int(const char *v, int min, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < min || x > 1 << 20) return 1;
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    opts o = {0, 8, 8, 24, 32, 64, 8, 0, 1, 1, 1, 1, UP_DTYPE_BF16};
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--layers")) bad = parse_int(v, 1, &o.layers);
        else if (!strcmp(a, "--latents")) bad = parse_int(v, 1, &o.latents);
        else if (!strcmp(a, "--alphas")) bad = parse_int(v, 1, &o.alphas);
        else if (!strcmp(a, "--prompt")) bad = parse_int(v, 2, &o.prompt);
        else if (!strcmp(a, "--new")) bad = parse_int(v, 1, &o.new_tokens);
        else if (!strcmp(a, "--batch")) bad = parse_int(v, 1, &o.batch);
        else if (!strcmp(a, "--alone")) bad = parse_int(v, 1, &o.alone);
        else if (!strcmp(a, "--threads")) bad = parse_int(v, 1, &o.threads);
        else if (!strcmp(a, "--no-coherence")) o.coherence = 0, i--;
        else if (!strcmp(a, "--no-share")) o.share = 0, i--;
        else if (!strcmp(a, "--dtype") && v && (!strcmp(v, "bf16") || !strcmp(v, "f32")))
            o.dtype = !strcmp(v, "bf16") ? UP_DTYPE_BF16 : UP_DTYPE_F32;
        else if (!strcmp(a, "--mode") && v && (!strcmp(v, "score") || !strcmp(v, "gen") || !strcmp(v, "both")))
            o.score = strcmp(v, "gen") != 0, o.gen = strcmp(v, "score") != 0;
        else bad = 1;
        i++;
    }
    if (bad) {
        fprintf(stderr, "usage: bench_grid [--layers N] [--dtype bf16|f32] [--latents 8] [--alphas 8] [--prompt T]\n"
                        "                  [--new N] [--batch B] [--alone K] [--threads N] [--mode score|gen|both]\n"
                        "                  [--no-coherence] [--no-share]\n");
        return 2;
    }
    if (o.threads) up_blas_set_threads(o.threads);
    const up_model_config cfg = gemma2_2b(o.layers);
    const int d = cfg.d_model, d_sae = 16384, layer = cfg.n_layers / 2;
    up_model *m = NULL;
    up_sae *sae = NULL;
    up_grid *g = NULL;
    up_error e = {0};
    char hook[64];
    snprintf(hook, sizeof hook, "blocks.%d.hook_resid_post", layer);
    /* Ceilings first: their buffers are freed before the model exists, so they add nothing to
     * the peak RSS reported. */
    const double bw = bench_bandwidth((size_t)1024 << 20, 3), gf = bench_sgemm(64, 9216, 2304, 5);
    if (up_model_init_random(&m, &cfg, o.dtype, 1234, &e) || up_sae_alloc(&sae, UP_SAE_JUMPRELU, d, d_sae, 0, 0, hook, &e)) {
        fprintf(stderr, "bench_grid: %s\n", e.msg);
        return 1;
    }
    /* Random unit decoder rows for the latents steered (the rest stay zero: never read). */
    uint64_t seed = 99;
    int *latents = malloc((size_t)o.latents * sizeof *latents);
    float *alphas = malloc((size_t)o.alphas * sizeof *alphas);
    for (int i = 0; i < o.latents; i++) {
        latents[i] = (int)(rng_next(&seed) % d_sae);
        float *row = sae->W_dec + (size_t)latents[i] * d;
        double n = 0;
        for (int j = 0; j < d; j++) row[j] = (float)(rng_next(&seed) >> 40) / (float)(1 << 24) - 0.5f, n += row[j] * row[j];
        for (int j = 0; j < d; j++) row[j] = (float)(row[j] / sqrt(n));
    }
    for (int a = 0; a < o.alphas; a++) alphas[a] = (float)(a + 1) * (a % 2 ? -8.0f : 8.0f); /* none is 0 */
    int32_t *prompt = malloc((size_t)o.prompt * sizeof *prompt);
    prompt[0] = cfg.bos_id;
    for (int t = 1; t < o.prompt; t++) prompt[t] = 3 + (int32_t)(rng_next(&seed) % (uint64_t)(cfg.vocab_size - 3));
    float *dir = malloc((size_t)d * sizeof *dir);
    for (int j = 0; j < d; j++) dir[j] = sinf(0.37f * j);
    const int32_t refusal[1] = {235285};
    if (up_grid_init(&g, m, &e) || up_grid_add_prompt(g, "random", prompt, o.prompt, &e) < 0 ||
        up_grid_add_latent_sweep(g, sae, latents, o.latents, alphas, o.alphas, UP_STEER_POS_ALL, &e) ||
        up_grid_set_objective(g, cfg.n_layers - 1 > layer ? cfg.n_layers - 1 : layer, dir, NULL, 0, &e)) {
        fprintf(stderr, "bench_grid: %s\n", e.msg);
        return 1;
    }
    const int cells = 1 + o.latents * o.alphas;
    printf("gemma-2-2b shapes, %d layer(s), %s weights, %d threads; SAE 16k at %s\n", cfg.n_layers,
           o.dtype == UP_DTYPE_BF16 ? "bf16" : "f32", up_blas_threads(), hook);
    printf("grid: 1 prompt of %d tokens x (none + %d latents x %d alphas) = %d cells; batch %d vs 1 (alone: first %d cells)%s%s\n",
           o.prompt, o.latents, o.alphas, cells, o.batch, o.alone, o.coherence ? "" : "; coherence off",
           o.share ? "" : "; prompt sharing off");
    printf("machine (load average %.2f): sgemm 64x9216x2304 %.1f GFLOP/s, read bandwidth %.1f GB/s: %.1f FLOP per byte\n",
           load_average(), gf, bw, gf / bw);
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        const int max_new = pass == 0 ? 0 : o.new_tokens;
        if ((pass == 0 && !o.score) || (pass == 1 && !o.gen)) continue;
        /* A fresh decoding axis: the grid's only decoding is this one. */
        up_grid_free(g);
        if (up_grid_init(&g, m, &e) || up_grid_add_prompt(g, "random", prompt, o.prompt, &e) < 0 ||
            up_grid_add_latent_sweep(g, sae, latents, o.latents, alphas, o.alphas, UP_STEER_POS_ALL, &e) ||
            up_grid_set_objective(g, cfg.n_layers - 1 > layer ? cfg.n_layers - 1 : layer, dir, NULL, 0, &e) ||
            up_grid_add_decoding(g, max_new, &e) < 0) {
            fprintf(stderr, "bench_grid: %s\n", e.msg);
            rc = 1;
            break;
        }
        int nb, na;
        double sb, sa;
        long pb, pa;
        const double batched = run(g, o.batch, 0, o.coherence, o.share, refusal, &nb, &sb, &pb);
        const double alone = batched < 0 ? -1 : run(g, 1, o.alone, o.coherence, o.share, refusal, &na, &sa, &pa);
        if (batched < 0 || alone < 0) {
            rc = 1;
            break;
        }
        printf("%-22s batched: %3d cells in %7.2f s = %8.3f cells/s | alone: %3d cells in %7.2f s = %8.3f cells/s | x%.1f\n",
               max_new ? "generate" : "score only", nb, sb, batched, na, sa, alone, batched / alone);
        if (max_new) printf("%-22s (%d new tokens per cell, every row to the end)\n", "", max_new);
        /* The steering point blocks.{layer}.hook_resid_post: layers 0..layer of the prompt are shared. */
        const int rows = o.batch < nb ? o.batch : nb;
        const ceiling k = at_ceiling(&cfg, (double)up_model_weight_bytes(m), o.prompt, max_new, rows, o.share ? layer + 1 : 0,
                                     o.coherence, gf * 1e9, bw * 1e9);
        printf("%-22s prompt tokens run: batched %ld for %d cells, alone %ld for %d\n", "", pb, nb, pa, na);
        printf("%-22s at the ceilings: alone %.2f s/cell, batched %.2f s/cell: x%.1f (measured %.2f and %.2f s/cell)\n", "",
               k.alone, k.batched, k.alone / k.batched, 1 / alone, 1 / batched);
        fflush(stdout);
    }
    printf("peak RSS %.2f GB\n", peak_rss_gb());
    up_grid_free(g);
    up_sae_free(sae);
    up_model_free(m);
    free(latents), free(alphas), free(prompt), free(dir);
    return rc;
}
