#include "method/select.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "method/metrics.h"
#include "engine/model.h"
#include "method/steer.h"

up_select_opts up_select_opts_default(void) {
    return (up_select_opts){.max_layer_frac = 0.8, .max_kl = 0.1, .min_induce = 0.0, .batch = 8};
}

int up_select_pick(up_select_score *scores, int n, int n_layers, const up_select_opts *opts, int *n_kept) {
    const up_select_opts o = opts ? *opts : up_select_opts_default();
    /* A hair below the product so that a fraction meant to land on an integer layer (e.g.
     * floor(0.8·L)/L) is not lost to rounding. */
    const double cutoff = o.max_layer_frac * n_layers - 1e-9;
    int best = -1, kept = 0;
    for (int i = 0; i < n; i++) {
        up_select_score *s = &scores[i];
        unsigned drop = 0;
        if (s->layer >= cutoff) drop |= UP_SELECT_DROP_LAYER;
        if (s->dropped & UP_SELECT_DROP_UNSCORED) {
            s->dropped = drop | UP_SELECT_DROP_UNSCORED;
            continue;
        }
        if (!isfinite(s->bypass) || !isfinite(s->induce) || !isfinite(s->kl)) drop |= UP_SELECT_DROP_NAN;
        if (s->kl > o.max_kl) drop |= UP_SELECT_DROP_KL;
        if (s->induce < o.min_induce) drop |= UP_SELECT_DROP_INDUCE;
        s->dropped = drop;
        if (drop) continue;
        kept++;
        if (best < 0 || s->bypass < scores[best].bypass) best = i; /* strict: ties keep the earlier */
    }
    if (n_kept) *n_kept = kept;
    return best;
}

const char *up_select_dropped_names(unsigned dropped, char *buf, size_t size) {
    static const char *const names[5] = {"layer", "kl", "induce", "nan", "unscored"};
    if (!size) return buf;
    buf[0] = '\0';
    if (!dropped) {
        snprintf(buf, size, "kept");
        return buf;
    }
    size_t at = 0;
    for (int b = 0; b < 5; b++) {
        if (!(dropped & (1u << b))) continue;
        int w = snprintf(buf + at, size - at, "%s%s", at ? "," : "", names[b]);
        if (w < 0 || (size_t)w >= size - at) break;
        at += (size_t)w;
    }
    return buf;
}

void up_select_result_free(up_select_result *r) {
    if (!r) return;
    free(r->scores);
    r->scores = NULL;
}

/* One validation row of a candidate's work: which prompt, and what is measured on it. */
typedef enum { JOB_BYPASS = 0, JOB_KL, JOB_INDUCE } job_kind;

typedef struct job {
    const int32_t *ids;
    int len;
    int prompt; /* index into its list (for the baseline logits of KL rows) */
    job_kind kind;
} job;

/* Buffers for one batch, sized for opts.batch rows. */
typedef struct batch_buf {
    const int32_t **prompts; /* (batch) */
    int *lens;               /* (batch) */
    up_steer_row *rows;      /* (batch) */
    double *score;           /* (batch) */
    float *logits;           /* (batch, V) */
} batch_buf;

static up_status check_prompts(const up_token_lists *p, const char *what, int *max_len, up_error *err) {
    if (!p || p->n <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: no %s prompts", what);
    for (int i = 0; i < p->n; i++) {
        if (p->lens[i] <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: %s prompt %d is empty", what, i);
        if (p->lens[i] > *max_len) *max_len = p->lens[i];
    }
    return UP_OK;
}

/* Marks in want[c] (n_pos * L) the candidates opts asks to score; returns how many, or -1
 * with err set when a listed layer or position is out of range. */
static int scored_candidates(const up_select_opts *o, int n_pos, int L, unsigned char *want, up_error *err) {
    for (int i = 0; o->layers && i < o->n_layers_scored; i++)
        if (o->layers[i] < 0 || o->layers[i] >= L) {
            up_error_set(err, UP_ERR_INVALID, "direction selection: layer %d outside [0, %d)", o->layers[i], L);
            return -1;
        }
    for (int i = 0; o->positions && i < o->n_positions_scored; i++)
        if (o->positions[i] < -n_pos || o->positions[i] > -1) {
            up_error_set(err, UP_ERR_INVALID, "direction selection: position %d outside [-%d, -1]", o->positions[i], n_pos);
            return -1;
        }
    const double cutoff = o->max_layer_frac * L - 1e-9; /* as up_select_pick */
    int n = 0;
    for (int c = 0; c < n_pos * L; c++) {
        const int pos = c / L - n_pos, layer = c % L;
        int layer_ok = !o->layers, pos_ok = !o->positions;
        for (int i = 0; !layer_ok && i < o->n_layers_scored; i++) layer_ok = o->layers[i] == layer;
        for (int i = 0; !pos_ok && i < o->n_positions_scored; i++) pos_ok = o->positions[i] == pos;
        want[c] = layer_ok && pos_ok && !(o->skip_late_layers && layer >= cutoff);
        n += want[c];
    }
    return n;
}

up_status up_select_direction(const up_model *m, const float *candidates, int n_pos, const up_token_lists *harmful,
                              const up_token_lists *harmless, const int32_t *refusal_ids, int n_refusal,
                              const up_select_opts *opts, up_select_result *res, up_error *err) {
    const up_select_opts o = opts ? *opts : up_select_opts_default();
    const int L = m->cfg.n_layers, d = m->cfg.d_model, V = m->cfg.vocab_size;
    memset(res, 0, sizeof *res);
    res->best = -1;
    if (n_pos <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: n_pos = %d", n_pos);
    if (n_refusal <= 0 || !refusal_ids) return up_error_set(err, UP_ERR_INVALID, "direction selection: no refusal token ids");
    for (int i = 0; i < n_refusal; i++)
        if (refusal_ids[i] < 0 || refusal_ids[i] >= V)
            return up_error_set(err, UP_ERR_INVALID, "direction selection: refusal id %d outside [0, %d)", refusal_ids[i], V);
    int max_len = 0;
    up_status st;
    if ((st = check_prompts(harmful, "harmful", &max_len, err)) || (st = check_prompts(harmless, "harmless", &max_len, err)))
        return st;
    const int batch = o.batch > 0 ? o.batch : 8;
    const int n_cand = n_pos * L, nh = harmful->n, nl = harmless->n, n_jobs = nh + 2 * nl;
    if ((o.layers && o.n_layers_scored <= 0) || (o.positions && o.n_positions_scored <= 0))
        return up_error_set(err, UP_ERR_INVALID, "direction selection: an empty list of layers or positions scores nothing");
    unsigned char *want = malloc((size_t)n_cand);
    if (!want) return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    const int n_want = scored_candidates(&o, n_pos, L, want, err);
    if (n_want < 0) {
        free(want);
        return UP_ERR_INVALID;
    }

    res->scores = calloc((size_t)n_cand, sizeof *res->scores);
    job *jobs = malloc((size_t)n_jobs * sizeof *jobs);
    float *base = malloc((size_t)nl * V * sizeof *base); /* (nl, V) unsteered harmless logits */
    batch_buf bb = {malloc(batch * sizeof *bb.prompts), malloc(batch * sizeof *bb.lens),
                    malloc(batch * sizeof *bb.rows), malloc(batch * sizeof *bb.score),
                    malloc((size_t)batch * V * sizeof *bb.logits)};
    up_state *s = NULL;
    if (!res->scores || !jobs || !base || !bb.prompts || !bb.lens || !bb.rows || !bb.score || !bb.logits)
        st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    else
        st = up_state_init(&s, m, batch, max_len, err);
    res->n_pos = n_pos, res->n_layers = L;

    /* Rows ordered harmful, harmless (ablated), harmless (added): each batch holds one kind
     * or a seam between two, and every row carries its own setting. */
    for (int j = 0; j < nh; j++) jobs[j] = (job){harmful->ids[j], harmful->lens[j], j, JOB_BYPASS};
    for (int j = 0; j < nl; j++) {
        jobs[nh + j] = (job){harmless->ids[j], harmless->lens[j], j, JOB_KL};
        jobs[nh + nl + j] = (job){harmless->ids[j], harmless->lens[j], j, JOB_INDUCE};
    }

    /* Baselines: harmful scores, harmless scores and logits. */
    double sum_h = 0, sum_l = 0;
    for (int start = 0; !st && start < nh + nl; start += batch) {
        const int B = nh + nl - start < batch ? nh + nl - start : batch;
        for (int b = 0; b < B; b++) bb.prompts[b] = jobs[start + b].ids, bb.lens[b] = jobs[start + b].len;
        up_steer_batch bt = {bb.prompts, bb.lens, B, NULL, NULL, refusal_ids, n_refusal, 0, NULL, 0, 0};
        up_steer_out out = {bb.score, bb.logits, NULL, NULL, NULL};
        if ((st = up_steer_run(s, &bt, &out, err))) break;
        for (int b = 0; b < B; b++) {
            const job *jb = &jobs[start + b];
            if (jb->kind == JOB_BYPASS) {
                sum_h += bb.score[b];
            } else {
                sum_l += bb.score[b];
                memcpy(base + (size_t)jb->prompt * V, bb.logits + (size_t)b * V, (size_t)V * sizeof *base);
            }
        }
    }
    res->base_harmful = sum_h / nh;
    res->base_harmless = sum_l / nl;

    for (int c = 0, done = 0; !st && c < n_cand; c++) {
        const int pos = c / L, layer = c % L;
        const float *r = candidates + (size_t)c * d;
        up_select_score *sc = &res->scores[c];
        *sc = (up_select_score){pos, layer, NAN, NAN, NAN, 0};
        if (!want[c]) {
            sc->dropped = UP_SELECT_DROP_UNSCORED;
            continue;
        }
        double norm = 0;
        for (int j = 0; j < d; j++) norm += (double)r[j] * r[j];
        if (norm > 0 && isfinite(norm)) {
            up_steer ablate = up_steer_ablate(r);
            up_steer add = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, layer}, r, 1.0f);
            const up_steer_row ablate_row = {&ablate, 1}, add_row = {&add, 1};
            double sum[3] = {0, 0, 0};
            for (int start = 0; !st && start < n_jobs; start += batch) {
                const int B = n_jobs - start < batch ? n_jobs - start : batch;
                for (int b = 0; b < B; b++) {
                    const job *jb = &jobs[start + b];
                    bb.prompts[b] = jb->ids, bb.lens[b] = jb->len;
                    bb.rows[b] = jb->kind == JOB_INDUCE ? add_row : ablate_row;
                }
                up_steer_plan plan = {bb.rows, B};
                up_steer_batch bt = {bb.prompts, bb.lens, B, &plan, NULL, refusal_ids, n_refusal, 0, NULL, 0, 0};
                up_steer_out out = {bb.score, bb.logits, NULL, NULL, NULL};
                if ((st = up_steer_run(s, &bt, &out, err))) break;
                for (int b = 0; b < B; b++) {
                    const job *jb = &jobs[start + b];
                    sum[jb->kind] += jb->kind == JOB_KL
                                         ? up_metrics_kl(base + (size_t)jb->prompt * V, bb.logits + (size_t)b * V, V)
                                         : bb.score[b];
                }
            }
            sc->bypass = sum[JOB_BYPASS] / nh;
            sc->kl = sum[JOB_KL] / nl;
            sc->induce = sum[JOB_INDUCE] / nl;
        }
        if (st) up_error_prefix(err, "direction selection, candidate position %d layer %d", pos, layer);
        else if (o.progress) o.progress(++done, n_want, o.user);
    }
    if (!st) res->best = up_select_pick(res->scores, n_cand, L, &o, &res->n_kept);
    up_state_free(s);
    free(want);
    free(jobs);
    free(base);
    free(bb.prompts), free(bb.lens), free(bb.rows), free(bb.score), free(bb.logits);
    if (st) up_select_result_free(res);
    return st;
}
