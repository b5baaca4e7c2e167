/* sae_train.h's measures of latents as concept detectors: pre-activations and AUROC. */
#include "train/sae_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"

/* --- detection quality --------------------------------------------------------------------- */

up_status up_sae_pre_activations(const up_sae *sae, const float *x, int n, float *pre, up_error *err) {
    if (!sae->W_enc || !sae->b_enc)
        return up_error_set(err, UP_ERR_INVALID, "%s: pre-activations need the encoder", sae->path);
    if (n < 0) return up_error_set(err, UP_ERR_INVALID, "up_sae_pre_activations: n = %d", n);
    const int d = sae->d_in, S = sae->d_sae;
    for (int b = 0; b < n; b++) memcpy(pre + (size_t)b * S, sae->b_enc, (size_t)S * sizeof(float));
    up_sgemm(n, S, d, 1.0f, x, sae->W_enc, 0, 1.0f, pre);
    if (sae->apply_b_dec_to_input) {
        /* (x − b_dec)·W_enc = x·W_enc − b_dec·W_enc: one correction per latent. */
        for (int k = 0; k < S; k++) {
            double c = 0;
            for (int j = 0; j < d; j++) c += (double)sae->b_dec[j] * sae->W_enc[(size_t)j * S + k];
            for (int b = 0; b < n; b++) pre[(size_t)b * S + k] -= (float)c;
        }
    }
    return UP_OK;
}

typedef struct scored {
    float score;
    int label;
} scored;

static int by_score(const void *a, const void *b) {
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

double up_sae_auroc(const float *scores, const int *labels, int64_t n) {
    if (n < 2) return NAN;
    scored *v = malloc((size_t)n * sizeof *v);
    if (!v) return NAN;
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(scores[i])) {
            free(v);
            return NAN;
        }
        v[i].score = scores[i];
        v[i].label = labels[i] != 0;
        pos += v[i].label;
    }
    int64_t neg = n - pos;
    if (pos == 0 || neg == 0) {
        free(v);
        return NAN;
    }
    qsort(v, (size_t)n, sizeof *v, by_score);
    /* Sum of the positives' ranks (1-based), each tie group taking its average rank. */
    double rank_sum = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, p = 0;
        while (j < n && v[j].score == v[i].score) p += v[j++].label;
        rank_sum += p * ((double)(i + 1) + (double)j) / 2.0;
        i = j;
    }
    free(v);
    return (rank_sum - (double)pos * (pos + 1) / 2.0) / ((double)pos * (double)neg);
}

up_status up_sae_best_auroc(const float *acts, const int *labels, int64_t n, int d_sae,
                            double *auroc, int *best, double *best_auroc, up_error *err) {
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) pos += labels[i] != 0;
    if (n < 2 || pos == 0 || pos == n || d_sae < 1)
        return up_error_set(err, UP_ERR_INVALID,
                            "up_sae_best_auroc: need both classes (%lld positives of %lld rows) and d_sae >= 1",
                            (long long)pos, (long long)n);
    float *col = malloc((size_t)n * sizeof *col);
    if (!col) return up_error_set(err, UP_ERR_NOMEM, "up_sae_best_auroc: out of memory");
    *best = 0;
    *best_auroc = -INFINITY;
    for (int k = 0; k < d_sae; k++) {
        for (int64_t i = 0; i < n; i++) col[i] = acts[(size_t)i * d_sae + k];
        double a = up_sae_auroc(col, labels, n);
        if (auroc) auroc[k] = a;
        if (a > *best_auroc) *best_auroc = a, *best = k;
    }
    free(col);
    if (isnan(*best_auroc) || *best_auroc == -INFINITY)
        return up_error_set(err, UP_ERR_INVALID, "up_sae_best_auroc: activations are NaN");
    return UP_OK;
}
