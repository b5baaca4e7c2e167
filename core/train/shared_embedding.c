#include "train/shared_embedding.h"

#include <math.h>
#include <stdlib.h>

#include "base/rng.h"

up_status up_shared_embedding_add(up_model *m, float s, uint64_t seed, up_error *err) {
    float *embed = NULL, *norms = NULL;
    size_t n_mats, n_norm;
    up_status st = up_model_param_blocks(m, &embed, &n_mats, &norms, &n_norm, err);
    if (st) return st;
    const int d = m->cfg.d_model;
    float *u = malloc((size_t)d * sizeof *u);
    if (!u) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    uint64_t state = seed ^ 0x9e3779b97f4a7c15ull;
    double norm = 0;
    for (int j = 0; j < d; j++) {
        u[j] = (float)((double)(up_splitmix64(&state) >> 11) * 0x1p-53 * 2 - 1);
        norm += (double)u[j] * u[j];
    }
    const float scale = s / (float)sqrt(norm);
    for (int v = 0; v < m->cfg.vocab_size; v++)
        for (int j = 0; j < d; j++) embed[(size_t)v * d + j] += scale * u[j];
    free(u);
    return UP_OK;
}
