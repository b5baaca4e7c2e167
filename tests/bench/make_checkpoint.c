/* bench_make_checkpoint — writes the inputs of the real-scale benchmark (tests/bench/published_set.sh):
 * a random-weight checkpoint with gemma-2-2b-it's exact shapes in Hugging Face layout (bf16,
 * two shards, model.safetensors.index.json, config.json) and random GemmaScope-shaped JumpReLU
 * SAEs (params.npz) at the given layers. Nothing here is a trained model: the weights exist to
 * make every matrix product, file read and cache line of the published set as large as on the
 * real model.
 *
 * usage: bench_make_checkpoint DIR [--layers N] [--sae-layers 3,5,7] [--sae-width 16384]
 *                                  [--shards 2] [--seed 1]
 * Writes DIR/config.json, DIR/model-0000k-of-0000n.safetensors, DIR/model.safetensors.index.json
 * and DIR/sae/layer_{L}/params.npz. --layers N < 26 keeps every other shape (a quick smoke run
 * of the script). Deterministic for a seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fs.h"
#include "base/rng.h"
#include "engine/model.h"
#include "formats/npz_write.h"

static int usage(void) {
    fprintf(stderr, "usage: bench_make_checkpoint DIR [--layers N] [--sae-layers 3,5,7] [--sae-width 16384] "
                    "[--shards 2] [--seed 1]\n");
    return 2;
}

/* Uniform in [-1, 1), from the top 24 bits of one splitmix64 draw. */
static float uniform(uint64_t *state) { return (float)(up_splitmix64(state) >> 40) / (float)(1 << 23) - 1.0f; }

/* A JumpReLU SAE with unit decoder rows in random directions, the encoder their transpose,
 * zero biases and one threshold for all latents. */
static int write_sae(const char *dir, int layer, int d, int d_sae, uint64_t seed) {
    float *W_dec = malloc((size_t)d_sae * d * sizeof(float)), *W_enc = malloc((size_t)d * d_sae * sizeof(float));
    float *b_enc = calloc((size_t)d_sae, sizeof(float)), *b_dec = calloc((size_t)d, sizeof(float));
    float *threshold = malloc((size_t)d_sae * sizeof(float));
    if (!W_dec || !W_enc || !b_enc || !b_dec || !threshold) {
        fprintf(stderr, "bench_make_checkpoint: out of memory for an SAE\n");
        return 1;
    }
    uint64_t state = seed;
    for (int k = 0; k < d_sae; k++) {
        float *row = W_dec + (size_t)k * d;
        double norm = 0;
        for (int j = 0; j < d; j++) {
            row[j] = uniform(&state);
            norm += (double)row[j] * row[j];
        }
        const float inv = (float)(1.0 / sqrt(norm));
        for (int j = 0; j < d; j++) W_enc[(size_t)j * d_sae + k] = row[j] *= inv;
        threshold[k] = 0.05f; /* a latent fires where its direction carries 5% of a unit */
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/sae/layer_%d", dir, layer);
    if (up_mkdirs(path)) {
        fprintf(stderr, "bench_make_checkpoint: cannot create %s\n", path);
        return 1;
    }
    snprintf(path, sizeof path, "%s/sae/layer_%d/params.npz", dir, layer);
    up_npz_array arrays[5] = {{"W_enc", W_enc, 2, {d, d_sae}}, {"W_dec", W_dec, 2, {d_sae, d}},
                              {"b_enc", b_enc, 1, {d_sae}},    {"b_dec", b_dec, 1, {d}},
                              {"threshold", threshold, 1, {d_sae}}};
    up_error e = {0};
    const int rc = up_npz_write_f32(path, arrays, 5, UP_NPZ_STORED, &e) ? 1 : 0;
    if (rc) fprintf(stderr, "bench_make_checkpoint: %s\n", e.msg);
    free(W_dec), free(W_enc), free(b_enc), free(b_dec), free(threshold);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') return usage();
    const char *dir = argv[1];
    up_model_config cfg = up_model_config_gemma2_2b();
    int sae_layers[64] = {3, 5, 7}, n_sae = 3, d_sae = 16384, shards = 2;
    uint64_t seed = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "--layers")) cfg.n_layers = atoi(v);
        else if (!strcmp(a, "--sae-width")) d_sae = atoi(v);
        else if (!strcmp(a, "--shards")) shards = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--sae-layers")) {
            n_sae = 0;
            for (const char *p = v; *p && n_sae < 64; p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p))
                sae_layers[n_sae++] = atoi(p);
        } else return usage();
        i++;
    }
    if (cfg.n_layers < 1 || d_sae < 1 || shards < 1) return usage();
    for (int i = 0; i < n_sae; i++)
        if (sae_layers[i] < 0 || sae_layers[i] >= cfg.n_layers) {
            fprintf(stderr, "bench_make_checkpoint: SAE layer %d outside the model's 0..%d\n", sae_layers[i],
                    cfg.n_layers - 1);
            return 2;
        }
    up_error e = {0};
    up_model *m = NULL;
    fprintf(stderr, "bench_make_checkpoint: %d layers, d_model %d, vocab %d\n", cfg.n_layers, cfg.d_model,
            cfg.vocab_size);
    if (up_model_init_random(&m, &cfg, UP_DTYPE_BF16, seed, &e) ||
        (fprintf(stderr, "  %.2f G parameters; writing %d shard(s) to %s\n", up_model_param_count(m) / 1e9, shards,
                 dir),
         up_model_save_as(m, dir, UP_DTYPE_BF16, shards, &e))) {
        fprintf(stderr, "bench_make_checkpoint: %s\n", e.msg);
        up_model_free(m);
        return 1;
    }
    up_model_free(m);
    for (int i = 0; i < n_sae; i++) {
        fprintf(stderr, "  SAE at layer %d: %d latents\n", sae_layers[i], d_sae);
        if (write_sae(dir, sae_layers[i], cfg.d_model, d_sae, seed * 1000003u + (uint64_t)sae_layers[i])) return 1;
    }
    return 0;
}
