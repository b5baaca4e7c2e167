#include "method/select.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "method/metrics.h"
#include "engine/batch.h"
#include "engine/hooks.h"
#include "engine/model.h"
#include "method/steer.h"

up_select_opts up_select_opts_default(void) {
    return (up_select_opts){.max_layer_frac = 0.8, .max_kl = 0.1, .min_induce = 0.0, .batch = 8};
}

/* The score filters of the rule for one candidate whose three scores are known. */
static unsigned score_drops(const up_select_score *s, const up_select_opts *o) {
    unsigned drop = 0;
    if (!isfinite(s->bypass) || !isfinite(s->induce) || !isfinite(s->kl)) drop |= UP_SELECT_DROP_NAN;
    if (s->kl > o->max_kl) drop |= UP_SELECT_DROP_KL;
    if (s->induce < o->min_induce) drop |= UP_SELECT_DROP_INDUCE;
    return drop;
}

/* A hair below the product so that a fraction meant to land on an integer layer (e.g.
 * floor(0.8·L)/L) is not lost to rounding. */
static double layer_cutoff(const up_select_opts *o, int n_layers) { return o->max_layer_frac * n_layers - 1e-9; }

int up_select_pick(up_select_score *scores, int n, int n_layers, const up_select_opts *opts, int *n_kept) {
    const up_select_opts o = opts ? *opts : up_select_opts_default();
    const double cutoff = layer_cutoff(&o, n_layers);
    const unsigned marks = UP_SELECT_DROP_UNSCORED | UP_SELECT_DROP_BYPASS_ONLY;
    int best = -1, kept = 0;
    for (int i = 0; i < n; i++) {
        up_select_score *s = &scores[i];
        unsigned drop = 0;
        if (s->layer >= cutoff) drop |= UP_SELECT_DROP_LAYER;
        if (s->dropped & marks) {
            s->dropped = drop | (s->dropped & marks);
            continue;
        }
        s->dropped = drop |= score_drops(s, &o);
        if (drop) continue;
        kept++;
        if (best < 0 || s->bypass < scores[best].bypass) best = i; /* strict: ties keep the earlier */
    }
    if (n_kept) *n_kept = kept;
    return best;
}

const char *up_select_dropped_names(unsigned dropped, char *buf, size_t size) {
    static const char *const names[6] = {"layer", "kl", "induce", "nan", "unscored", "bypass_only"};
    if (!size) return buf;
    buf[0] = '\0';
    if (!dropped) {
        snprintf(buf, size, "kept");
        return buf;
    }
    size_t at = 0;
    for (int b = 0; b < 6; b++) {
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

/* What every measurement needs: the model's state, the prompts, the unsteered harmless logits
 * (KL's reference, computed once) and the buffers of one batch of opts.batch rows. */
typedef struct scorer {
    up_state *s;
    int batch, V;
    const up_token_lists *harmful, *harmless;
    const int32_t *refusal_ids;
    int n_refusal;
    float *base;             /* (harmless->n, V) */
    const int32_t **prompts; /* (batch) */
    int *lens;               /* (batch) */
    up_steer_row *rows;      /* (batch) */
    double *score;           /* (batch) */
    float *logits;           /* (batch, V) */
    /* The harmless prompts' unsteered passes, batch by batch as induce runs them: a snapshot of
     * each and its residual stream at every layer a scored candidate adds at, so that a
     * candidate at layer l reruns only blocks l and up (forward.h). NULL: every induce pass
     * runs whole (more than UP_SELECT_REUSE_MAX_BYTES). */
    up_state_snapshot **snap; /* (harmless batches) */
    float **resid;            /* (harmless batches * n_layers); NULL where no candidate adds */
    const unsigned char *adds_at; /* (n_layers) the layers a scored candidate adds at */
    int cache_tried;          /* the cache is made by a rank's first induce, not before: a rank
                                 of a job that scores no induce (dist.h) never pays for it */
} scorer;

/* Runs rows [start, start + B) of a row list whose row k is prompt list->ids[k % list->n] under
 * rows[k] (NULL plan: unsteered), into sc->score and sc->logits. whole: every row runs its whole
 * prompt (no shared prefix), as induce's cached passes do (prepare_induce_cache). */
static up_status run_rows(scorer *sc, const up_token_lists *list, int start, int B, const up_steer_row *rows, int whole,
                          up_error *err) {
    for (int b = 0; b < B; b++) {
        const int k = (start + b) % list->n;
        sc->prompts[b] = list->ids[k], sc->lens[b] = list->lens[k];
        if (rows) sc->rows[b] = rows[(start + b) / list->n];
    }
    up_steer_plan plan = {sc->rows, B};
    up_steer_batch bt = {sc->prompts, sc->lens, B, rows ? &plan : NULL, NULL, sc->refusal_ids, sc->n_refusal, 0, NULL, 0, whole};
    up_steer_out out = {sc->score, sc->logits, NULL, NULL, NULL};
    return up_steer_run(sc->s, &bt, &out, err);
}

/* Each measurement runs its own prompts in batches that depend on nothing else, so its bits
 * are the same whichever other measurements a mode runs: bypass over the harmful prompts,
 * induce and KL over the harmless ones (each prompt ablated, then each prompt added). */
static up_status score_bypass(scorer *sc, const float *r, double *bypass, up_error *err) {
    const int n = sc->harmful->n;
    up_steer ablate = up_steer_ablate(r);
    const up_steer_row row = {&ablate, 1};
    double sum = 0;
    for (int start = 0; start < n; start += sc->batch) {
        const int B = n - start < sc->batch ? n - start : sc->batch;
        up_status st = run_rows(sc, sc->harmful, start, B, &row, 0, err);
        if (st) return st;
        for (int b = 0; b < B; b++) sum += sc->score[b];
    }
    *bypass = sum / n;
    return UP_OK;
}

/* Lays out harmless batch j (rows j*batch ...) as up_prefill's ordinary pass does: left-padded
 * to its longest prompt. Returns the row count; *T the padded length. */
static int harmless_batch(scorer *sc, int j, int32_t *tok, int *pad, int *T) {
    const int n = sc->harmless->n, start = j * sc->batch, B = n - start < sc->batch ? n - start : sc->batch;
    for (int b = 0; b < B; b++) sc->prompts[b] = sc->harmless->ids[start + b], sc->lens[b] = sc->harmless->lens[start + b];
    *T = up_batch_left_pad(sc->prompts, sc->lens, NULL, B, up_state_model(sc->s)->cfg.pad_id, tok, pad);
    return B;
}

static void free_induce_cache(scorer *sc) {
    const int nb = (sc->harmless->n + sc->batch - 1) / sc->batch, L = up_state_model(sc->s)->cfg.n_layers;
    for (int j = 0; sc->snap && j < nb; j++) up_state_snapshot_free(sc->snap[j]);
    for (int i = 0; sc->resid && i < nb * L; i++) free(sc->resid[i]);
    free(sc->snap), free(sc->resid);
    sc->snap = NULL, sc->resid = NULL;
}

/* Runs each harmless batch once, unsteered, capturing the residual stream before every layer in
 * adds_at[] (n_layers flags), and keeps a snapshot of it. Skipped (sc->snap stays NULL) when the
 * captures and snapshots would take more than UP_SELECT_REUSE_MAX_BYTES. */
static up_status prepare_induce_cache(scorer *sc, const unsigned char *adds_at, up_error *err) {
    const up_model_config *c = &up_state_model(sc->s)->cfg;
    const int n = sc->harmless->n, nb = (n + sc->batch - 1) / sc->batch, L = c->n_layers, d = c->d_model;
    const size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    int n_adds = 0, max_len = 0;
    for (int l = 0; l < L; l++) n_adds += adds_at[l] != 0;
    for (int i = 0; i < n; i++) max_len = sc->harmless->lens[i] > max_len ? sc->harmless->lens[i] : max_len;
    double bytes = 0;
    for (int j = 0; j < nb; j++) {
        const int start = j * sc->batch, B = n - start < sc->batch ? n - start : sc->batch;
        int T = 0;
        for (int b = 0; b < B; b++) T = sc->harmless->lens[start + b] > T ? sc->harmless->lens[start + b] : T;
        bytes += (double)B * T * sizeof(float) * ((double)n_adds * d + 2.0 * L * kvd);
    }
    if (n_adds == 0 || bytes > UP_SELECT_REUSE_MAX_BYTES) return UP_OK;
    sc->snap = calloc((size_t)nb, sizeof *sc->snap);
    sc->resid = calloc((size_t)nb * L, sizeof *sc->resid);
    int32_t *tok = malloc((size_t)sc->batch * max_len * sizeof *tok);
    int *pad = malloc((size_t)sc->batch * sizeof *pad);
    up_capture *caps = malloc((size_t)L * sizeof *caps);
    up_hook *hooks = malloc((size_t)L * sizeof *hooks);
    up_status st = UP_OK;
    if (!sc->snap || !sc->resid || !tok || !pad || !caps || !hooks)
        st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory for the harmless passes' cache");
    for (int j = 0; !st && j < nb; j++) {
        int T;
        const int B = harmless_batch(sc, j, tok, pad, &T);
        int k = 0;
        for (int l = 0; !st && l < L; l++) {
            if (!adds_at[l]) continue;
            float **x = &sc->resid[(size_t)j * L + l];
            if (!(*x = malloc((size_t)B * T * d * sizeof **x))) {
                st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory for the harmless passes' cache");
                break;
            }
            caps[k] = (up_capture){*x, (size_t)B * T * d};
            hooks[k] = up_hook_capture((up_hook_point){UP_HOOK_RESID_PRE, l}, &caps[k]);
            k++;
        }
        const up_hooks hk = {hooks, k};
        up_state_reset(sc->s);
        if (!st) st = up_forward(sc->s, tok, pad, sc->lens, B, T, &hk, NULL, UP_LOGITS_NONE, err);
        if (!st) st = up_state_snapshot_take(sc->s, &sc->snap[j], err);
    }
    free(tok), free(pad), free(caps), free(hooks);
    if (st) free_induce_cache(sc);
    return st;
}

/* Induce over harmless batch j from its snapshot: the batch reruns from layer `layer`, with +r
 * added there, exactly as its whole steered pass would (forward.h). */
static up_status induce_rerun(scorer *sc, int j, const float *r, int layer, double *sum, up_error *err) {
    const up_model *m = up_state_model(sc->s);
    const int n = sc->harmless->n, start = j * sc->batch, B = n - start < sc->batch ? n - start : sc->batch;
    const int L = m->cfg.n_layers, V = sc->V;
    for (int b = 0; b < B; b++) sc->lens[b] = sc->harmless->lens[start + b];
    up_steer add = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, layer}, r, 1.0f);
    const up_steer_row row = {&add, 1};
    const up_steer_plan plan = {&row, 1};
    up_steer_set *set = NULL;
    up_status st = up_steer_hooks(&set, m, &plan, NULL, err);
    if (!st) st = up_state_rerun_from(sc->s, sc->snap[j], (up_hook_point){UP_HOOK_RESID_PRE, layer},
                                      sc->resid[(size_t)j * L + layer], err);
    if (!st) st = up_forward_resume(sc->s, sc->lens, up_steer_set_hooks(set), sc->logits, UP_LOGITS_LAST, err);
    up_steer_set_free(set);
    for (int b = 0; !st && b < B; b++)
        *sum += up_metrics_refusal_score(sc->logits + (size_t)b * V, V, sc->refusal_ids, sc->n_refusal, NULL);
    return st;
}

static up_status score_filters(scorer *sc, const float *r, int layer, double *induce, double *kl, up_error *err) {
    const int n = sc->harmless->n, L = up_state_model(sc->s)->cfg.n_layers;
    if (!sc->cache_tried) {
        sc->cache_tried = 1;
        up_status st = prepare_induce_cache(sc, sc->adds_at, err);
        if (st) return st;
    }
    up_steer ablate = up_steer_ablate(r);
    up_steer add = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, layer}, r, 1.0f);
    const up_steer_row rows[2] = {{&ablate, 1}, {&add, 1}}; /* rows [0, n): KL; [n, 2n): induce */
    double sum_kl = 0, sum_induce = 0;
    /* KL's rows, then induce's, each in its own batches of the harmless prompts. */
    for (int start = 0; start < n; start += sc->batch) {
        const int B = n - start < sc->batch ? n - start : sc->batch;
        up_status st = run_rows(sc, sc->harmless, start, B, rows, 0, err);
        if (st) return st;
        for (int b = 0; b < B; b++)
            sum_kl += up_metrics_kl(sc->base + (size_t)(start + b) * sc->V, sc->logits + (size_t)b * sc->V, sc->V);
    }
    for (int start = 0, j = 0; start < n; start += sc->batch, j++) {
        const int B = n - start < sc->batch ? n - start : sc->batch;
        up_status st;
        if (sc->snap && sc->resid[(size_t)j * L + layer]) {
            st = induce_rerun(sc, j, r, layer, &sum_induce, err);
        } else {
            st = run_rows(sc, sc->harmless, n + start, B, rows, 1, err);
            for (int b = 0; !st && b < B; b++) sum_induce += sc->score[b];
        }
        if (st) return st;
    }
    *kl = sum_kl / n;
    *induce = sum_induce / n;
    return UP_OK;
}

/* The unsteered baselines: mean refusal scores of both sets and the harmless logits, over the
 * rows harmful then harmless in shared batches. */
/* A batch of the baselines' rows (harmful, then harmless) is a work unit (dist.h); its result
 * is the rows' refusal scores, then the harmless rows' logits. */
typedef struct baseline_job {
    scorer *sc;
    double *score;  /* (nh + nl) every row's refusal score */
} baseline_job;

static int baseline_rows(const scorer *sc, int unit, int *start) {
    const int n = sc->harmful->n + sc->harmless->n;
    *start = unit * sc->batch;
    return n - *start < sc->batch ? n - *start : sc->batch;
}

static up_status baseline_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    baseline_job *J = user;
    scorer *sc = J->sc;
    const int nh = sc->harmful->n;
    int start;
    const int B = baseline_rows(sc, unit, &start);
    for (int b = 0; b < B; b++) {
        const int k = start + b;
        const up_token_lists *list = k < nh ? sc->harmful : sc->harmless;
        sc->prompts[b] = list->ids[k < nh ? k : k - nh], sc->lens[b] = list->lens[k < nh ? k : k - nh];
    }
    up_steer_batch bt = {sc->prompts, sc->lens, B, NULL, NULL, sc->refusal_ids, sc->n_refusal, 0, NULL, 0, 0};
    up_steer_out o = {sc->score, sc->logits, NULL, NULL, NULL};
    up_status st = up_steer_run(sc->s, &bt, &o, err);
    if (st) return st;
    const size_t size = (size_t)B * sizeof(double) + (size_t)B * sc->V * sizeof(float);
    if (!(out->data = malloc(size))) return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    out->size = size;
    memcpy(out->data, sc->score, (size_t)B * sizeof(double));
    memcpy((char *)out->data + (size_t)B * sizeof(double), sc->logits, (size_t)B * sc->V * sizeof(float));
    return UP_OK;
}

static up_status baseline_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    baseline_job *J = user;
    scorer *sc = J->sc;
    const int nh = sc->harmful->n;
    int start;
    const int B = baseline_rows(sc, unit, &start);
    if (size != (size_t)B * sizeof(double) + (size_t)B * sc->V * sizeof(float))
        return up_error_set(err, UP_ERR_FORMAT, "direction selection: a baseline batch came back cut short");
    const float *logits = (const float *)((const char *)data + (size_t)B * sizeof(double));
    memcpy(J->score + start, data, (size_t)B * sizeof(double));
    for (int b = 0; b < B; b++)
        if (start + b >= nh)
            memcpy(sc->base + (size_t)(start + b - nh) * sc->V, logits + (size_t)b * sc->V, (size_t)sc->V * sizeof *sc->base);
    return UP_OK;
}

/* The unsteered baselines: mean refusal scores of both sets and the harmless logits, over the
 * rows harmful then harmless in shared batches; every rank takes rank 0's. */
static up_status score_baselines(scorer *sc, up_select_result *res, up_error *err) {
    const int nh = sc->harmful->n, nl = sc->harmless->n;
    baseline_job J = {sc, malloc((size_t)(nh + nl) * sizeof(double))};
    if (!J.score) return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    const up_dist_job job = {(nh + nl + sc->batch - 1) / sc->batch, baseline_compute, baseline_arrived, &J};
    up_status st = up_dist_map(&job, err);
    if (!st) st = up_dist_share_into(J.score, (size_t)(nh + nl) * sizeof(double), "selection baselines", err);
    if (!st) st = up_dist_share_into(sc->base, (size_t)nl * sc->V * sizeof(float), "selection baseline logits", err);
    double sum_h = 0, sum_l = 0;
    for (int k = 0; !st && k < nh + nl; k++) {
        if (k < nh) sum_h += J.score[k];
        else sum_l += J.score[k];
    }
    free(J.score);
    res->base_harmful = sum_h / nh;
    res->base_harmless = sum_l / nl;
    return st;
}

static up_status check_prompts(const up_token_lists *p, const char *what, int *max_len, up_error *err) {
    if (!p || p->n <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: no %s prompts", what);
    for (int i = 0; i < p->n; i++) {
        if (p->lens[i] <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: %s prompt %d is empty", what, i);
        if (p->lens[i] > *max_len) *max_len = p->lens[i];
    }
    return UP_OK;
}

/* Marks in want[c] (n_pos * L) the candidates to score; returns how many, or -1 with err set
 * when a listed layer or position is out of range. Lazy mode never scores the layers the cut
 * drops: no rule needs them. */
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
    const double cutoff = layer_cutoff(o, L);
    const int skip_late = o->skip_late_layers || o->mode == UP_SELECT_LAZY;
    int n = 0;
    for (int c = 0; c < n_pos * L; c++) {
        const int pos = c / L - n_pos, layer = c % L;
        int layer_ok = !o->layers, pos_ok = !o->positions;
        for (int i = 0; !layer_ok && i < o->n_layers_scored; i++) layer_ok = o->layers[i] == layer;
        for (int i = 0; !pos_ok && i < o->n_positions_scored; i++) pos_ok = o->positions[i] == pos;
        want[c] = layer_ok && pos_ok && !(skip_late && layer >= cutoff);
        n += want[c];
    }
    return n;
}

/* A candidate of norm 0 (or not finite) cannot be ablated: it keeps NaN scores. */
static int can_ablate(const float *r, int d) {
    double norm = 0;
    for (int j = 0; j < d; j++) norm += (double)r[j] * r[j];
    return norm > 0 && isfinite(norm);
}

/* Reports one finished candidate; non-zero when the callback asks to stop. */
static int report(const up_select_opts *o, up_select_progress *p, const up_select_score *s, int n_pos) {
    p->done++;
    p->pos = s->pos - n_pos, p->layer = s->layer;
    return o->progress ? o->progress(p, o->user) : 0;
}

/* A candidate in lazy mode's queue: increasing bypass, ties to the earlier candidate. */
typedef struct ranked {
    double bypass;
    int c;
} ranked;

static int by_bypass(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    return x->bypass < y->bypass ? -1 : x->bypass > y->bypass ? 1 : (x->c > y->c) - (x->c < y->c);
}

static up_status stopped(up_error *err) {
    return up_error_set(err, UP_ERR_ABORTED, "direction selection stopped by its progress callback");
}

/* A view of `in` with its prompts in increasing length (ties in their given order), so that a
 * batch's rows pad to lengths close to their own. Every score is a mean over a whole set, so
 * the order changes nothing but the rounding of the sums. */
typedef struct by_length {
    up_token_lists list;
    const int32_t **ids;
    int *lens;
} by_length;

static int sort_by_length(const up_token_lists *in, by_length *out) {
    out->ids = malloc((size_t)in->n * sizeof *out->ids);
    out->lens = malloc((size_t)in->n * sizeof *out->lens);
    if (!out->ids || !out->lens) return -1;
    int k = 0, max = 0;
    for (int i = 0; i < in->n; i++) max = in->lens[i] > max ? in->lens[i] : max;
    for (int len = 1; len <= max; len++) /* counting order: stable, n x max steps, nothing next to a pass */
        for (int i = 0; i < in->n; i++)
            if (in->lens[i] == len) out->ids[k] = in->ids[i], out->lens[k] = len, k++;
    out->list = (up_token_lists){out->ids, out->lens, in->n};
    return 0;
}

/* ---- candidates as work units (dist.h) ---- */

typedef struct select_job {
    scorer *sc;
    const up_select_opts *o;
    up_select_result *res;
    const float *candidates;
    const int *wanted;     /* unit -> candidate, first pass */
    const ranked *order;   /* unit -> candidate, lazy filters pass */
    int n_pos, d, L;
    up_select_progress p;
    unsigned char *done;   /* lazy filters: unit k has arrived */
    int frontier;          /* lazy filters: units before it have arrived and failed */
    int winner;            /* lazy filters: the first unit in order that passed, or -1 */
} select_job;

/* A candidate's scores travel as the bytes of its up_select_score. */
static up_status send_score(const up_select_score *s, up_dist_bytes *out, up_error *err) {
    if (up_dist_size() == 1) return UP_OK;
    if (!(out->data = malloc(sizeof *s))) return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    memcpy(out->data, s, sizeof *s);
    out->size = sizeof *s;
    return UP_OK;
}

static up_status take_score(up_select_score *s, const void *data, size_t size, up_error *err) {
    if (up_dist_size() == 1) return UP_OK; /* computed in place */
    if (size != sizeof *s) return up_error_set(err, UP_ERR_FORMAT, "direction selection: a candidate's scores came back cut short");
    memcpy(s, data, sizeof *s);
    return UP_OK;
}

static up_status candidate_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    select_job *J = user;
    const int c = J->wanted[unit];
    const float *r = J->candidates + (size_t)c * J->d;
    up_select_score *s = &J->res->scores[c];
    up_status st = UP_OK;
    if (can_ablate(r, J->d)) {
        st = score_bypass(J->sc, r, &s->bypass, err);
        if (!st && J->o->mode == UP_SELECT_FULL) st = score_filters(J->sc, r, s->layer, &s->induce, &s->kl, err);
    }
    if (st) return up_error_prefix(err, "direction selection, candidate position %d layer %d", s->pos - J->n_pos, s->layer);
    return send_score(s, out, err);
}

static up_status candidate_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    select_job *J = user;
    up_select_score *s = &J->res->scores[J->wanted[unit]];
    up_status st = take_score(s, data, size, err);
    if (st) return st;
    if (J->o->mode == UP_SELECT_FULL)
        J->p.passed = s->layer < layer_cutoff(J->o, J->L) && !score_drops(s, J->o), J->p.n_passed += J->p.passed;
    return report(J->o, &J->p, s, J->n_pos) ? stopped(err) : UP_OK;
}

static up_status filters_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    select_job *J = user;
    const int c = J->order[unit].c;
    up_select_score *s = &J->res->scores[c];
    up_status st = score_filters(J->sc, J->candidates + (size_t)c * J->d, s->layer, &s->induce, &s->kl, err);
    if (st) return up_error_prefix(err, "direction selection, candidate position %d layer %d", s->pos - J->n_pos, s->layer);
    return send_score(s, out, err);
}

/* Rank 0: results come in any order; the winner is the first in bypass order that passes once
 * every one before it is in (and failed). No unit after it is handed out from then on. */
static up_status filters_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    select_job *J = user;
    up_select_score *s = &J->res->scores[J->order[unit].c];
    up_status st = take_score(s, data, size, err);
    if (st) return st;
    J->done[unit] = 1;
    J->p.passed = !score_drops(s, J->o), J->p.n_passed += J->p.passed;
    for (; J->winner < 0 && J->done[J->frontier]; J->frontier++) {
        if (!score_drops(&J->res->scores[J->order[J->frontier].c], J->o)) {
            J->winner = J->frontier;
            up_dist_limit(J->winner + 1);
        }
    }
    return report(J->o, &J->p, s, J->n_pos) ? stopped(err) : UP_OK;
}

/* Every rank takes rank 0's table of scores. */
static up_status share_scores(up_select_result *res, int n_cand, up_error *err) {
    return up_dist_share_into(res->scores, (size_t)n_cand * sizeof *res->scores, "direction selection scores", err);
}

up_status up_select_direction(const up_model *m, const float *candidates, int n_pos, const up_token_lists *harmful_in,
                              const up_token_lists *harmless_in, const int32_t *refusal_ids, int n_refusal,
                              const up_select_opts *opts, up_select_result *res, up_error *err) {
    const up_select_opts o = opts ? *opts : up_select_opts_default();
    const int L = m->cfg.n_layers, d = m->cfg.d_model, V = m->cfg.vocab_size;
    memset(res, 0, sizeof *res);
    res->best = -1;
    if (n_pos <= 0) return up_error_set(err, UP_ERR_INVALID, "direction selection: n_pos = %d", n_pos);
    if (o.mode != UP_SELECT_FULL && o.mode != UP_SELECT_LAZY)
        return up_error_set(err, UP_ERR_INVALID, "direction selection: unknown mode %d", o.mode);
    if (n_refusal <= 0 || !refusal_ids) return up_error_set(err, UP_ERR_INVALID, "direction selection: no refusal token ids");
    for (int i = 0; i < n_refusal; i++)
        if (refusal_ids[i] < 0 || refusal_ids[i] >= V)
            return up_error_set(err, UP_ERR_INVALID, "direction selection: refusal id %d outside [0, %d)", refusal_ids[i], V);
    int max_len = 0;
    up_status st;
    if ((st = check_prompts(harmful_in, "harmful", &max_len, err)) ||
        (st = check_prompts(harmless_in, "harmless", &max_len, err)))
        return st;
    const int batch = o.batch > 0 ? o.batch : 8;
    const int n_cand = n_pos * L;
    if ((o.layers && o.n_layers_scored <= 0) || (o.positions && o.n_positions_scored <= 0))
        return up_error_set(err, UP_ERR_INVALID, "direction selection: an empty list of layers or positions scores nothing");
    unsigned char *want = malloc((size_t)n_cand);
    if (!want) return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    const int n_want = scored_candidates(&o, n_pos, L, want, err);
    if (n_want < 0) {
        free(want);
        return UP_ERR_INVALID;
    }
    /* Batches of similar lengths pad less. */
    by_length sorted_harmful = {0}, sorted_harmless = {0};
    if (sort_by_length(harmful_in, &sorted_harmful) || sort_by_length(harmless_in, &sorted_harmless)) {
        free(want);
        free(sorted_harmful.ids), free(sorted_harmful.lens), free(sorted_harmless.ids), free(sorted_harmless.lens);
        return up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    }
    const up_token_lists *harmful = &sorted_harmful.list, *harmless = &sorted_harmless.list;

    res->scores = calloc((size_t)n_cand, sizeof *res->scores);
    ranked *order = malloc((size_t)n_cand * sizeof *order);
    scorer sc = {NULL, batch, V, harmful, harmless, refusal_ids, n_refusal, malloc((size_t)harmless->n * V * sizeof(float)),
                 malloc(batch * sizeof *sc.prompts), malloc(batch * sizeof *sc.lens), malloc(batch * sizeof *sc.rows),
                 malloc(batch * sizeof *sc.score), malloc((size_t)batch * V * sizeof *sc.logits), NULL, NULL, NULL, 0};
    if (!res->scores || !order || !sc.base || !sc.prompts || !sc.lens || !sc.rows || !sc.score || !sc.logits)
        st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    else
        st = up_state_init(&sc.s, m, batch, max_len, err);
    res->n_pos = n_pos, res->n_layers = L;
    if (!st) st = score_baselines(&sc, res, err);
    /* The layers induce will add at: every scored candidate's (those the cut drops only in full
     * mode, which scores their filters too). */
    unsigned char *adds_at = calloc((size_t)L, 1);
    if (!st && !adds_at) st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    for (int c = 0; !st && c < n_cand; c++) adds_at[c % L] |= want[c];
    sc.adds_at = adds_at;

    /* Full: every wanted candidate's three scores, one candidate after another. Lazy: every
     * wanted candidate's bypass first; the filters' scores come after, below. Each candidate is
     * a work unit (dist.h): its scores depend on nothing but itself, so every rank gives the
     * same bits, and rank 0 shares the table when they are all in. */
    int *wanted = malloc((size_t)n_cand * sizeof *wanted), n_units = 0;
    if (!st && !wanted) st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
    for (int c = 0; !st && c < n_cand; c++) {
        res->scores[c] = (up_select_score){c / L, c % L, NAN, NAN, NAN, want[c] ? 0 : UP_SELECT_DROP_UNSCORED};
        if (want[c]) wanted[n_units++] = c;
    }
    select_job J = {&sc, &o, res, candidates, wanted, NULL, n_pos, d, L,
                    {o.mode == UP_SELECT_FULL ? UP_SELECT_PASS_ALL : UP_SELECT_PASS_BYPASS, 0, n_want, 0, 0, 0, 0, batch},
                    NULL, 0, 0};
    if (!st) {
        const up_dist_job job = {n_units, candidate_compute, candidate_arrived, &J};
        st = up_dist_map(&job, err);
    }
    if (!st) st = share_scores(res, n_cand, err);
    int n_order = 0;
    for (int k = 0; !st && k < n_units; k++)
        if (isfinite(res->scores[wanted[k]].bypass)) order[n_order++] = (ranked){res->scores[wanted[k]].bypass, wanted[k]};

    /* Lazy: induce and KL in increasing bypass order until one candidate passes every filter;
     * it is the full rule's winner, since every candidate of lower bypass (or equal bypass and
     * earlier) failed a filter. The rest keep their bypass, marked BYPASS_ONLY. Over several
     * ranks the candidates after the winner may have been scored already (they ran beside it);
     * their scores are dropped, so the table is the one process's. */
    if (!st && o.mode == UP_SELECT_LAZY) {
        qsort(order, (size_t)n_order, sizeof *order, by_bypass);
        J.p = (up_select_progress){UP_SELECT_PASS_FILTERS, 0, n_order, 0, 0, 0, 0, batch};
        J.order = order;
        J.done = calloc((size_t)n_order + 1, 1);
        J.frontier = 0, J.winner = -1;
        if (!J.done) st = up_error_set(err, UP_ERR_NOMEM, "direction selection: out of memory");
        if (!st) {
            const up_dist_job job = {n_order, filters_compute, filters_arrived, &J};
            st = up_dist_map(&job, err);
        }
        const int kept = J.winner >= 0 ? J.winner + 1 : n_order;
        for (int k = kept; !st && k < n_order; k++) {
            up_select_score *s = &res->scores[order[k].c];
            s->induce = s->kl = NAN;
            s->dropped = UP_SELECT_DROP_BYPASS_ONLY;
        }
        free(J.done);
        if (!st) st = share_scores(res, n_cand, err);
    }
    free(wanted);
    if (!st) res->best = up_select_pick(res->scores, n_cand, L, &o, &res->n_kept);
    if (sc.s) free_induce_cache(&sc);
    free(adds_at);
    up_state_free(sc.s);
    free(want);
    free(order);
    free(sc.base);
    free(sc.prompts), free(sc.lens), free(sc.rows), free(sc.score), free(sc.logits);
    free(sorted_harmful.ids), free(sorted_harmful.lens), free(sorted_harmless.ids), free(sorted_harmless.lens);
    if (st) up_select_result_free(res);
    return st;
}
