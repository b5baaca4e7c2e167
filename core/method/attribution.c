#include "method/attribution.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
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

/* ---- many attributions as work units (dist.h) ---- */

typedef struct attr_job {
    const up_model *m;
    const up_sae *const *saes;
    const up_attribute_request *reqs;
    up_attribute_result *out;
    int n, done;
    void (*progress)(int done, int total, void *user);
    void *user;
} attr_job;

/* A result as bytes: R, then include, scores, grad, rg and (a flag, then) acts; the sizes come
 * from the request and the SAE, which every rank has. */
static size_t attr_bytes(const attr_job *J, int i, int with_acts) {
    const size_t T = (size_t)J->reqs[i].n_tok, K = (size_t)J->saes[i]->d_sae, d = (size_t)J->m->cfg.d_model;
    return sizeof(double) + T + K * sizeof(double) + T * d * sizeof(float) + T * K * sizeof(float) * (with_acts ? 2 : 1) + 1;
}

static char *put(char *p, const void *src, size_t n) {
    memcpy(p, src, n);
    return p + n;
}

static void pack_result(const attr_job *J, int i, char *p) {
    const up_attribute_result *r = &J->out[i];
    const size_t T = (size_t)J->reqs[i].n_tok, K = (size_t)J->saes[i]->d_sae, d = (size_t)J->m->cfg.d_model;
    p = put(p, &r->R, sizeof r->R);
    p = put(p, r->include, T);
    p = put(p, r->scores, K * sizeof *r->scores);
    p = put(p, r->grad, T * d * sizeof *r->grad);
    p = put(p, r->rg, T * K * sizeof *r->rg);
    *p++ = r->acts != NULL;
    if (r->acts) put(p, r->acts, T * K * sizeof *r->acts);
}

static up_status unpack_result(const attr_job *J, int i, const char *p, size_t size, up_error *err) {
    up_attribute_result *r = &J->out[i];
    const size_t T = (size_t)J->reqs[i].n_tok, K = (size_t)J->saes[i]->d_sae, d = (size_t)J->m->cfg.d_model;
    const size_t base = attr_bytes(J, i, 0);
    if (size < base || (p[base - 1] && size != attr_bytes(J, i, 1)) || (!p[base - 1] && size != base))
        return up_error_set(err, UP_ERR_FORMAT, "attribution %d of %d: its result came back with the wrong size", i + 1, J->n);
    up_attribute_result_free(r);
    r->include = malloc(T ? T : 1);
    r->scores = malloc(K * sizeof *r->scores);
    r->grad = malloc(T * d * sizeof *r->grad);
    r->rg = malloc(T * K * sizeof *r->rg);
    r->acts = p[base - 1] ? malloc(T * K * sizeof *r->acts) : NULL;
    if (!r->include || !r->scores || !r->grad || !r->rg || (p[base - 1] && !r->acts)) {
        up_attribute_result_free(r);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory for attribution results");
    }
    memcpy(&r->R, p, sizeof r->R), p += sizeof r->R;
    memcpy(r->include, p, T), p += T;
    memcpy(r->scores, p, K * sizeof *r->scores), p += K * sizeof *r->scores;
    memcpy(r->grad, p, T * d * sizeof *r->grad), p += T * d * sizeof *r->grad;
    memcpy(r->rg, p, T * K * sizeof *r->rg), p += T * K * sizeof *r->rg;
    p++;
    if (r->acts) memcpy(r->acts, p, T * K * sizeof *r->acts);
    return UP_OK;
}

static up_status attr_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    attr_job *J = user;
    up_status st = up_attribute(J->m, J->saes[unit], &J->reqs[unit], &J->out[unit], err);
    if (st) return up_error_prefix(err, "attribution %d of %d", unit + 1, J->n);
    if (up_dist_size() == 1) return UP_OK;
    out->size = attr_bytes(J, unit, J->out[unit].acts != NULL);
    if (!(out->data = malloc(out->size))) return up_error_set(err, UP_ERR_NOMEM, "out of memory for attribution results");
    pack_result(J, unit, out->data);
    return UP_OK;
}

static up_status attr_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    attr_job *J = user;
    up_status st = J->out[unit].grad ? UP_OK : unpack_result(J, unit, data, size, err);
    if (st) return st;
    J->done++;
    if (J->progress) J->progress(J->done, J->n, J->user);
    return UP_OK;
}

up_status up_attribute_all(const up_model *m, const up_sae *const *saes, const up_attribute_request *reqs, int n,
                           up_attribute_result *out, void (*progress)(int done, int total, void *user), void *user,
                           up_error *err) {
    memset(out, 0, (size_t)n * sizeof *out);
    for (int i = 0; i < n; i++)
        if (reqs[i].hooks) return up_error_set(err, UP_ERR_INVALID, "attribution %d of %d: hooks cannot be sent between ranks", i + 1, n);
    attr_job J = {m, saes, reqs, out, n, 0, progress, user};
    const up_dist_job job = {n, attr_compute, attr_arrived, &J};
    up_status st = up_dist_map(&job, err);
    /* Every rank takes rank 0's results, in request order. */
    if (!st && up_dist_size() > 1) {
        size_t total = 0;
        for (int i = 0; up_dist_rank() == 0 && i < n; i++) total += attr_bytes(&J, i, out[i].acts != NULL);
        void *all = up_dist_rank() == 0 ? malloc(total ? total : 1) : NULL;
        if (up_dist_rank() == 0 && !all) up_dist_out_of_memory("the attributions' results"); /* the others wait */
        for (size_t i = 0, off = 0; up_dist_rank() == 0 && i < (size_t)n; i++) {
            pack_result(&J, (int)i, (char *)all + off);
            off += attr_bytes(&J, (int)i, out[i].acts != NULL);
        }
        if (!st) st = up_dist_share(&all, &total, err);
        size_t off = 0;
        for (int i = 0; !st && up_dist_rank() != 0 && i < n; i++) {
            const char *p = (const char *)all + off;
            const size_t base = attr_bytes(&J, i, 0);
            const size_t len = off + base <= total && p[base - 1] ? attr_bytes(&J, i, 1) : base;
            if (off + len > total) st = up_error_set(err, UP_ERR_FORMAT, "attribution results from rank 0 are cut short");
            else st = unpack_result(&J, i, p, len, err);
            off += len;
        }
        free(all);
    }
    if (st)
        for (int i = 0; i < n; i++) up_attribute_result_free(&out[i]);
    return st;
}
