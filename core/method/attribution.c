#include "method/attribution.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "engine/hooks.h"
#include "engine/position.h"

static const char *const kind_names[] = {"gradient", "cosine", "activation"};

const char *up_score_kind_name(up_score_kind kind) { return kind <= UP_SCORE_ACTIVATION ? kind_names[kind] : "?"; }

int up_score_kind_parse(const char *name, up_score_kind *out) {
    for (int i = 0; i <= UP_SCORE_ACTIVATION; i++)
        if (!strcmp(name, kind_names[i])) return *out = (up_score_kind)i, 0;
    return -1;
}

up_status up_attribution_scores(const up_sae *sae, const float *grad, int T, const unsigned char *include,
                                up_score_kind kind, const float *acts, float *rg, double *scores, up_error *err) {
    if (!sae->W_dec) return up_error_set(err, UP_ERR_INVALID, "%s: the SAE decoder is not loaded", sae->path);
    if (kind == UP_SCORE_ACTIVATION && !acts)
        return up_error_set(err, UP_ERR_INVALID, "activation-weighted scores need the SAE's activations (load the encoder)");
    const int d = sae->d_in, K = sae->d_sae;
    up_sgemm(T, K, d, 1.0f, grad, sae->W_dec, 1, 0.0f, rg);
    int n_inc = 0;
    for (int t = 0; t < T; t++) n_inc += !include || include[t];
    if (n_inc == 0) return up_error_set(err, UP_ERR_INVALID, "no positions left to average over (only BOS?)");
    double gnorm = 0;
    if (kind == UP_SCORE_COSINE) {
        for (int j = 0; j < d; j++) {
            double m = 0;
            for (int t = 0; t < T; t++)
                if (!include || include[t]) m += grad[(size_t)t * d + j];
            m /= n_inc;
            gnorm += m * m;
        }
        gnorm = sqrt(gnorm);
    }
#pragma omp parallel for schedule(static)
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int t = 0; t < T; t++) {
            if (include && !include[t]) continue;
            double v = rg[(size_t)t * K + k];
            if (kind == UP_SCORE_ACTIVATION) v *= acts[(size_t)t * K + k];
            s += v;
        }
        s /= n_inc;
        if (kind == UP_SCORE_COSINE) {
            double wn = 0;
            for (int j = 0; j < d; j++) wn += (double)sae->W_dec[(size_t)k * d + j] * sae->W_dec[(size_t)k * d + j];
            double denom = sqrt(wn) * gnorm;
            s = denom > 0 ? s / denom : 0;
        }
        scores[k] = s;
    }
    return UP_OK;
}

typedef struct ranked {
    double v;
    int i;
} ranked;

static int by_value_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->i - y->i;
}

int up_attribution_rank(const double *scores, int n, int k, int largest, int *out) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    ranked *r = malloc((size_t)n * sizeof *r);
    if (!r) return 0;
    for (int i = 0; i < n; i++) r[i] = (ranked){largest ? scores[i] : -scores[i], i};
    qsort(r, (size_t)n, sizeof *r, by_value_desc);
    for (int i = 0; i < k; i++) out[i] = r[i].i;
    free(r);
    return k;
}

void up_attribute_result_free(up_attribute_result *r) {
    free(r->grad);
    free(r->rg);
    free(r->acts);
    free(r->scores);
    free(r->include);
    memset(r, 0, sizeof *r);
}

up_status up_attribute(const up_model *m, const up_sae *sae, const up_attribute_request *req,
                       up_attribute_result *out, up_error *err) {
    memset(out, 0, sizeof *out);
    const int T = req->n_tok, d = m->cfg.d_model, K = sae->d_sae;
    up_status st = up_sae_check_model(sae, d, m->cfg.n_layers, err);
    if (st) return st;
    if (sae->layer >= 0 && sae->layer != req->source_layer)
        return up_error_set(err, UP_ERR_INVALID, "the SAE %s reads layer %d but the source layer is %d", sae->path,
                            sae->layer, req->source_layer);
    const int want_acts = sae->W_enc != NULL;
    out->grad = malloc((size_t)T * d * sizeof(float));
    out->rg = malloc((size_t)T * K * sizeof(float));
    out->scores = malloc((size_t)K * sizeof(double));
    out->include = malloc((size_t)T);
    if (want_acts) out->acts = malloc((size_t)T * K * sizeof(float));
    float *h = want_acts ? malloc((size_t)T * d * sizeof(float)) : NULL;
    if (!out->grad || !out->rg || !out->scores || !out->include || (want_acts && (!out->acts || !h))) {
        free(h);
        up_attribute_result_free(out);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory for attribution");
    }
    for (int t = 0; t < T; t++) out->include[t] = req->include_bos || !(t == 0 && req->ids[0] == m->cfg.bos_id);
    if (req->score_positions && req->n_score_positions > 0) {
        memset(out->include, 0, (size_t)T);
        for (int i = 0; i < req->n_score_positions; i++) {
            const int p = req->score_positions[i], t = up_position_resolve(p, T);
            if (t < 0 || t >= T) {
                free(h);
                up_attribute_result_free(out);
                return up_error_set(err, UP_ERR_INVALID, "score position %d is outside the prompt's %d tokens", p, T);
            }
            out->include[t] = 1;
        }
    }
    /* The forward of the gradient pass already computes h_l: capture it there for the encoder. */
    int n_user = req->hooks ? req->hooks->n : 0;
    up_hook *all = malloc((size_t)(n_user + 1) * sizeof *all);
    for (int i = 0; i < n_user; i++) all[i] = req->hooks->items[i];
    up_capture cap = {h, (size_t)T * d};
    if (want_acts) all[n_user++] = up_hook_capture((up_hook_point){UP_HOOK_RESID_POST, req->source_layer}, &cap);
    up_hooks hk = {all, n_user};
    st = up_gradient(m, req->ids, NULL, 1, T, req->source_layer, &req->objective, &hk, NULL, out->grad, &out->R, err);
    free(all);
    if (!st && want_acts) st = up_sae_encode(sae, h, T, out->acts, err);
    free(h);
    if (!st) st = up_attribution_scores(sae, out->grad, T, out->include, req->kind, out->acts, out->rg, out->scores, err);
    if (st) up_attribute_result_free(out);
    return st;
}
