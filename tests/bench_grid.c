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
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "blas.h"
#include "grid.h"
#include "model.h"
#include "sae.h"

typedef struct opts {
    int layers, latents, alphas, prompt, new_tokens, batch, alone, threads, score, gen, coherence;
    up_dtype dtype;
} opts;

static double peak_rss_gb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0 / 1e9; /* KiB on Linux */
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
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
static double run(up_grid *g, int batch, int stop, int coherence, const int32_t *refusal, int *computed, double *seconds) {
    up_grid_opts o = up_grid_opts_default();
    o.batch = batch;
    o.coherence = coherence;
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
    *computed = t.computed, *seconds = t.seconds;
    return t.computed / t.seconds;
}

static int parse_int(const char *v, int min, int *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < min || x > 1 << 20) return 1;
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    opts o = {0, 8, 8, 24, 32, 64, 8, 0, 1, 1, 1, UP_DTYPE_BF16};
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
                        "                  [--no-coherence]\n");
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
    printf("grid: 1 prompt of %d tokens x (none + %d latents x %d alphas) = %d cells; batch %d vs 1 (alone: first %d cells)%s\n",
           o.prompt, o.latents, o.alphas, cells, o.batch, o.alone, o.coherence ? "" : "; coherence off");
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
        const double batched = run(g, o.batch, 0, o.coherence, refusal, &nb, &sb);
        const double alone = batched < 0 ? -1 : run(g, 1, o.alone, o.coherence, refusal, &na, &sa);
        if (batched < 0 || alone < 0) {
            rc = 1;
            break;
        }
        printf("%-22s batched: %3d cells in %7.2f s = %8.3f cells/s | alone: %3d cells in %7.2f s = %8.3f cells/s | x%.1f\n",
               max_new ? "generate" : "score only", nb, sb, batched, na, sa, alone, batched / alone);
        if (max_new) printf("%-22s (%d new tokens per cell, every row to the end)\n", "", max_new);
        fflush(stdout);
    }
    printf("peak RSS %.2f GB\n", peak_rss_gb());
    up_grid_free(g);
    up_sae_free(sae);
    up_model_free(m);
    free(latents), free(alphas), free(prompt), free(dir);
    return rc;
}
