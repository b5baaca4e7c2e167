/* Direction selection on tiny_f32 with random prompts and refusal token 5: the chosen candidate
 * obeys the rule against the saved scores, over-strict filters give best = -1, one candidate's
 * three scores equal a direct computation with up_forward and hand-written hooks, and lazy
 * mode picks full mode's candidate with the same bits (tiny_f32 and tiny_bf16_sharded). */
#include "testutil.h"

#include <stdlib.h>

#include "method/metrics.h"
#include "engine/model.h"
#include "method/select.h"
#include "method/steer.h"

static up_model *model;
static int d, V, L;

enum { NH = 6, NL = 5, NPOS = 2, MAXLEN = 12 };
static int32_t harmful_ids[NH][MAXLEN], harmless_ids[NL][MAXLEN];
static const int32_t *harmful_ptr[NH], *harmless_ptr[NL];
static int harmful_lens[NH], harmless_lens[NL];
static up_token_lists harmful, harmless;
static float *candidates;
static const int32_t refusal[1] = {5};

static int setup(void **state) {
    char path[512];
    up_error e = {0};
    if (up_model_load(&model, test_path(path, sizeof path, "golden/tiny_f32"), &e)) return -1;
    d = model->cfg.d_model, V = model->cfg.vocab_size, L = model->cfg.n_layers;
    /* Harmful prompts draw from the low half of the vocabulary, harmless from the high half,
     * so the means differ; lengths vary to exercise padding. */
    unsigned seed = 12345;
    for (int i = 0; i < NH + NL; i++) {
        const int harm = i < NH, k = harm ? i : i - NH;
        int32_t *ids = harm ? harmful_ids[k] : harmless_ids[k];
        const int len = 6 + (i * 5) % 7;
        ids[0] = model->cfg.bos_id;
        for (int t = 1; t < len; t++) {
            seed = seed * 1103515245u + 12345u;
            ids[t] = 3 + (int)((seed >> 8) % (unsigned)(V / 2 - 3)) + (harm ? 0 : V / 2 - 3);
        }
        if (harm) harmful_ptr[k] = ids, harmful_lens[k] = len;
        else harmless_ptr[k] = ids, harmless_lens[k] = len;
    }
    harmful = (up_token_lists){harmful_ptr, harmful_lens, NH};
    harmless = (up_token_lists){harmless_ptr, harmless_lens, NL};
    candidates = malloc((size_t)NPOS * L * d * sizeof *candidates);
    return up_direction_candidates(model, &harmful, &harmless, NPOS, 4, candidates, NULL, NULL, &e) ? -1 : 0;
}

static int teardown(void **state) {
    free(candidates);
    up_model_free(model);
    return 0;
}

typedef struct progress_log {
    int calls, last_done, last_total, monotone;
} progress_log;

static int on_progress(const up_select_progress *sp, void *user) {
    progress_log *p = user;
    if (sp->done != p->last_done + 1) p->monotone = 0;
    p->calls++, p->last_done = sp->done, p->last_total = sp->total;
    return 0;
}

/* The selection rule, written out against the saved scores. */
static void check_rule(const up_select_result *r, const up_select_opts *o) {
    int best = -1, kept = 0;
    for (int c = 0; c < r->n_pos * r->n_layers; c++) {
        const up_select_score *s = &r->scores[c];
        assert_int_equal(s->pos, c / L);
        assert_int_equal(s->layer, c % L);
        unsigned want = 0;
        if (s->layer >= o->max_layer_frac * L) want |= UP_SELECT_DROP_LAYER;
        if (s->kl > o->max_kl) want |= UP_SELECT_DROP_KL;
        if (s->induce < o->min_induce) want |= UP_SELECT_DROP_INDUCE;
        if (!isfinite(s->bypass) || !isfinite(s->induce) || !isfinite(s->kl)) want |= UP_SELECT_DROP_NAN;
        assert_int_equal(s->dropped, want);
        if (want) continue;
        kept++;
        if (best < 0 || s->bypass < r->scores[best].bypass) best = c;
    }
    assert_int_equal(r->best, best);
    assert_int_equal(r->n_kept, kept);
}

static void test_rule(void **state) {
    up_select_opts o = up_select_opts_default();
    progress_log pl = {0, 0, 0, 1};
    o.batch = 3; /* seams between the three kinds of rows inside batches */
    o.progress = on_progress, o.user = &pl;
    up_select_result r;
    up_error e = {0};
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e)) fail_msg("%s", e.msg);
    assert_int_equal(pl.calls, NPOS * L);
    assert_int_equal(pl.last_total, NPOS * L);
    assert_true(pl.monotone);
    check_rule(&r, &o);
    printf("baseline: harmful %.4f harmless %.4f\n", r.base_harmful, r.base_harmless);
    for (int c = 0; c < NPOS * L; c++) {
        char why[64];
        const up_select_score *s = &r.scores[c];
        printf("pos %d layer %d: bypass %+.4f induce %+.4f kl %.5f  %s\n", s->pos - NPOS, s->layer, s->bypass, s->induce,
               s->kl, up_select_dropped_names(s->dropped, why, sizeof why));
    }
    printf("best %d of %d kept\n", r.best, r.n_kept);

    /* The same with another batch size gives the same scores to rounding; with thresholds
     * taken from the saved scores (the median KL, no induce floor, half the layers) some
     * candidates pass and some do not, and the winner obeys the rule. */
    up_select_opts o8 = up_select_opts_default();
    double kls[NPOS * L];
    for (int c = 0; c < NPOS * L; c++) kls[c] = r.scores[c].kl;
    for (int i = 1; i < NPOS * L; i++) /* insertion sort: 8 values */
        for (int j = i; j > 0 && kls[j - 1] > kls[j]; j--) {
            const double t = kls[j];
            kls[j] = kls[j - 1], kls[j - 1] = t;
        }
    o8.max_kl = kls[NPOS * L / 2], o8.min_induce = -1e9, o8.max_layer_frac = 0.5;
    up_select_result r8;
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o8, &r8, &e)) fail_msg("%s", e.msg);
    check_rule(&r8, &o8);
    assert_true(r8.best >= 0 && r8.n_kept < NPOS * L);
    for (int c = 0; c < NPOS * L; c++) {
        assert_true(fabs(r8.scores[c].bypass - r.scores[c].bypass) < 1e-5 * fmax(1, fabs(r.scores[c].bypass)));
        assert_true(fabs(r8.scores[c].induce - r.scores[c].induce) < 1e-5 * fmax(1, fabs(r.scores[c].induce)));
        assert_true(fabs(r8.scores[c].kl - r.scores[c].kl) < 1e-5 * fmax(1e-3, r.scores[c].kl));
    }
    up_select_result_free(&r8);

    /* Other thresholds, re-applied to the saved scores: the rule still holds, and with loose
     * filters (no KL or induce limit, half the layers) something is kept and something dropped. */
    const double thresholds[4][3] = {{0.5, 1e9, -1e9}, {0.8, 0.1, 0.0}, {1.0, 1e-3, -1e9}, {0.75, 0.05, -5}};
    int some_kept = 0, some_dropped = 0;
    for (int k = 0; k < 4; k++) {
        up_select_opts t = up_select_opts_default();
        t.max_layer_frac = thresholds[k][0], t.max_kl = thresholds[k][1], t.min_induce = thresholds[k][2];
        r.best = up_select_pick(r.scores, NPOS * L, L, &t, &r.n_kept);
        check_rule(&r, &t);
        some_kept |= r.n_kept > 0;
        some_dropped |= r.n_kept < NPOS * L;
    }
    assert_true(some_kept && some_dropped);
    /* The reference code's int(0.8 L) cut: 3 of 4 layers, where 0.8 * 4 = 3.2 keeps all four. */
    up_select_opts t = up_select_opts_default();
    t.max_kl = 1e9, t.min_induce = -1e9;
    up_select_pick(r.scores, NPOS * L, L, &t, &r.n_kept);
    assert_int_equal(r.n_kept, NPOS * L);
    t.max_layer_frac = 3.0 / 4;
    up_select_pick(r.scores, NPOS * L, L, &t, &r.n_kept);
    assert_int_equal(r.n_kept, NPOS * (L - 1));
    up_select_result_free(&r);
}

static void test_nothing_passes(void **state) {
    up_select_opts o = up_select_opts_default();
    o.max_kl = -1; /* KL is never negative */
    up_select_result r;
    up_error e = {0};
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e), UP_OK);
    assert_int_equal(r.best, -1);
    assert_int_equal(r.n_kept, 0);
    for (int c = 0; c < NPOS * L; c++) assert_true(r.scores[c].dropped & UP_SELECT_DROP_KL);
    char buf[64];
    assert_string_equal(up_select_dropped_names(UP_SELECT_DROP_KL | UP_SELECT_DROP_LAYER, buf, sizeof buf), "layer,kl");
    assert_string_equal(up_select_dropped_names(0, buf, sizeof buf), "kept");
    assert_string_equal(up_select_dropped_names(UP_SELECT_DROP_NAN | UP_SELECT_DROP_INDUCE, buf, sizeof buf), "induce,nan");
    up_select_result_free(&r);
    up_select_result_free(&r); /* idempotent */
}

/* Scoring a subset (layers, positions, skip_late_layers) gives the full run's scores for the
 * chosen candidates, NaN and "unscored" for the rest, progress over the subset only, and the
 * rule among the scored; a repeated entry counts once; a layer or position out of range, or an
 * empty list, is an error. */
static void test_subset(void **state) {
    up_select_opts all = up_select_opts_default();
    all.max_kl = 1e9, all.min_induce = -1e9; /* keep whatever is scored, so bypass decides */
    up_select_result full, r;
    up_error e = {0};
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &all, &full, &e)) fail_msg("%s", e.msg);

    const int layers[3] = {1, 0, 1}, positions[1] = {-1};
    up_select_opts o = all;
    progress_log pl = {0, 0, 0, 1};
    o.layers = layers, o.n_layers_scored = 3, o.positions = positions, o.n_positions_scored = 1;
    o.progress = on_progress, o.user = &pl;
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e)) fail_msg("%s", e.msg);
    assert_int_equal(pl.calls, 2);
    assert_int_equal(pl.last_total, 2);
    assert_true(pl.monotone);
    int best = -1;
    for (int c = 0; c < NPOS * L; c++) {
        const up_select_score *s = &r.scores[c], *f = &full.scores[c];
        const int scored = c / L == NPOS - 1 && (c % L == 0 || c % L == 1);
        assert_int_equal(s->pos, f->pos);
        assert_int_equal(s->layer, f->layer);
        if (scored) {
            assert_true(fabs(s->bypass - f->bypass) < 1e-5 * fmax(1, fabs(f->bypass)));
            assert_true(fabs(s->induce - f->induce) < 1e-5 * fmax(1, fabs(f->induce)));
            assert_true(fabs(s->kl - f->kl) < 1e-5 * fmax(1e-3, f->kl));
            assert_int_equal(s->dropped, f->dropped);
            if (!s->dropped && (best < 0 || s->bypass < r.scores[best].bypass)) best = c;
        } else {
            assert_true(isnan(s->bypass) && isnan(s->induce) && isnan(s->kl));
            assert_true(s->dropped & UP_SELECT_DROP_UNSCORED);
            assert_false(s->dropped & UP_SELECT_DROP_NAN);
        }
    }
    assert_true(best >= 0);
    assert_int_equal(r.best, best);
    assert_int_equal(r.n_kept, 2);
    /* Re-picking keeps the mark. */
    assert_int_equal(up_select_pick(r.scores, NPOS * L, L, &o, NULL), best);
    assert_true(r.scores[0].dropped & UP_SELECT_DROP_UNSCORED);
    char buf[64];
    assert_string_equal(up_select_dropped_names(UP_SELECT_DROP_LAYER | UP_SELECT_DROP_UNSCORED, buf, sizeof buf),
                        "layer,unscored");
    up_select_result_free(&r);

    /* skip_late_layers: with half the layers allowed, the upper half is not run. */
    up_select_opts k = all;
    k.max_layer_frac = 0.5, k.skip_late_layers = 1;
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &k, &r, &e)) fail_msg("%s", e.msg);
    for (int c = 0; c < NPOS * L; c++) {
        const int late = c % L >= L / 2;
        assert_int_equal(isnan(r.scores[c].bypass), late);
        assert_int_equal(r.scores[c].dropped, late ? UP_SELECT_DROP_LAYER | UP_SELECT_DROP_UNSCORED : 0u);
    }
    up_select_result_free(&r);

    const int bad_layer[1] = {L}, bad_pos[1] = {-NPOS - 1}, zero_pos[1] = {0};
    up_select_opts b = all;
    b.layers = bad_layer, b.n_layers_scored = 1;
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &b, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "layer"));
    assert_null(r.scores);
    b = all, b.positions = bad_pos, b.n_positions_scored = 1;
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &b, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "position"));
    b.positions = zero_pos;
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &b, &r, &e), UP_ERR_INVALID);
    b.positions = positions, b.n_positions_scored = 0;
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &b, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "empty"));
    up_select_result_free(&full);
}

/* ---- the direct computation ------------------------------------------------------------- */

typedef struct hand {
    const float *unit; /* ablation */
    const float *add;  /* addition */
} hand;

static int hand_ablate(const up_hook_call *call, void *user) {
    const hand *h = user;
    for (int i = 0; i < call->n_rows * call->n_tok; i++) {
        float *x = call->act + (size_t)i * call->d;
        double dot = 0;
        for (int j = 0; j < call->d; j++) dot += (double)x[j] * h->unit[j];
        for (int j = 0; j < call->d; j++) x[j] -= (float)(dot * h->unit[j]);
    }
    return UP_HOOK_CONTINUE;
}

static int hand_add(const up_hook_call *call, void *user) {
    const hand *h = user;
    for (int i = 0; i < call->n_rows * call->n_tok; i++)
        for (int j = 0; j < call->d; j++) call->act[(size_t)i * call->d + j] += h->add[j];
    return UP_HOOK_CONTINUE;
}

static void last_logits(const int32_t *ids, int T, const up_hooks *hooks, float *out) {
    up_state *s;
    up_error e = {0};
    if (up_state_init(&s, model, 1, T, &e) || up_forward(s, ids, NULL, NULL, 1, T, hooks, out, UP_LOGITS_LAST, &e))
        fail_msg("%s", e.msg);
    up_state_free(s);
}

/* Arditi's score and KL written from scratch in double. */
static double score_of(const float *z) {
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
    const double p = exp(z[5] - mx) / sum;
    return log(p + 1e-8) - log(1 - p + 1e-8);
}

static double kl_of(const float *a, const float *b) {
    double ma = -INFINITY, mb = -INFINITY, za = 0, zb = 0, kl = 0;
    for (int v = 0; v < V; v++) ma = a[v] > ma ? a[v] : ma, mb = b[v] > mb ? b[v] : mb;
    for (int v = 0; v < V; v++) za += exp(a[v] - ma), zb += exp(b[v] - mb);
    for (int v = 0; v < V; v++) {
        const double la = a[v] - ma - log(za), lb = b[v] - mb - log(zb);
        kl += exp(la) * (la - lb);
    }
    return kl;
}

static void test_matches_direct(void **state) {
    up_select_opts o = up_select_opts_default();
    o.batch = 4;
    up_select_result r;
    up_error e = {0};
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e)) fail_msg("%s", e.msg);
    const int picks[2][2] = {{1, 1}, {0, 2}}; /* (pos, layer) */
    float *base = malloc(V * sizeof *base), *steered = malloc(V * sizeof *steered), *unit = malloc(d * sizeof *unit);
    for (int k = 0; k < 2; k++) {
        const int pos = picks[k][0], layer = picks[k][1];
        const float *raw = candidates + ((size_t)pos * L + layer) * d;
        memcpy(unit, raw, d * sizeof *unit);
        up_direction_normalize(unit, d);
        hand h = {unit, raw};
        up_hook ab[3] = {{{UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, hand_ablate, &h},
                         {{UP_HOOK_ATTN_OUT, UP_HOOK_ANY_LAYER}, hand_ablate, &h},
                         {{UP_HOOK_MLP_OUT, UP_HOOK_ANY_LAYER}, hand_ablate, &h}};
        up_hook add = {{UP_HOOK_RESID_PRE, layer}, hand_add, &h};
        up_hooks ablation = {ab, 3}, addition = {&add, 1};
        double bypass = 0, induce = 0, kl = 0, base_h = 0, base_l = 0;
        for (int i = 0; i < NH; i++) {
            last_logits(harmful_ptr[i], harmful_lens[i], &ablation, steered);
            bypass += score_of(steered) / NH;
            last_logits(harmful_ptr[i], harmful_lens[i], NULL, base);
            base_h += score_of(base) / NH;
        }
        for (int i = 0; i < NL; i++) {
            last_logits(harmless_ptr[i], harmless_lens[i], NULL, base);
            base_l += score_of(base) / NL;
            last_logits(harmless_ptr[i], harmless_lens[i], &ablation, steered);
            kl += kl_of(base, steered) / NL;
            last_logits(harmless_ptr[i], harmless_lens[i], &addition, steered);
            induce += score_of(steered) / NL;
        }
        const up_select_score *s = &r.scores[pos * L + layer];
        if (!(fabs(s->bypass - bypass) < 1e-5 * fmax(1, fabs(bypass)))) fail_msg("bypass %.9g vs %.9g", s->bypass, bypass);
        if (!(fabs(s->induce - induce) < 1e-5 * fmax(1, fabs(induce)))) fail_msg("induce %.9g vs %.9g", s->induce, induce);
        if (!(fabs(s->kl - kl) < 1e-5 * fmax(1e-3, kl))) fail_msg("kl %.9g vs %.9g", s->kl, kl);
        assert_true(fabs(r.base_harmful - base_h) < 1e-5 * fmax(1, fabs(base_h)));
        assert_true(fabs(r.base_harmless - base_l) < 1e-5 * fmax(1, fabs(base_l)));
        assert_true(kl > 0);
    }
    free(base), free(steered), free(unit);
    up_select_result_free(&r);
}

/* Lazy mode against full on the golden checkpoints (f32, and bf16 in shards), under filters
 * that put the winner at several places in bypass order: the same winner, and every score both
 * modes computed equal to the bit. A full run with other batches differs somewhere, so the
 * comparison can fail. */
static int mismatches(const up_select_result *lazy, const up_select_result *full) {
    int n = lazy->best != full->best;
    for (int c = 0; c < lazy->n_pos * lazy->n_layers; c++) {
        const up_select_score *a = &lazy->scores[c], *b = &full->scores[c];
        n += !isnan(a->bypass) && memcmp(&a->bypass, &b->bypass, sizeof a->bypass);
        n += !isnan(a->induce) && memcmp(&a->induce, &b->induce, sizeof a->induce);
        n += !isnan(a->kl) && memcmp(&a->kl, &b->kl, sizeof a->kl);
    }
    return n;
}

static void test_lazy_matches_full(void **state) {
    static const char *const models[2] = {"golden/tiny_f32", "golden/tiny_bf16_sharded"};
    int past_lowest = 0;
    for (int k = 0; k < 2; k++) {
        char path[512];
        up_model *mk;
        up_error e = {0};
        if (up_model_load(&mk, test_path(path, sizeof path, models[k]), &e)) fail_msg("%s", e.msg);
        const int Lk = mk->cfg.n_layers, dk = mk->cfg.d_model, Vk = mk->cfg.vocab_size;
        /* The shared prompts folded into this model's vocabulary. */
        int32_t ids[NH + NL][MAXLEN];
        const int32_t *ptr[NH + NL];
        for (int i = 0; i < NH + NL; i++) {
            const int32_t *from = i < NH ? harmful_ptr[i] : harmless_ptr[i - NH];
            const int len = i < NH ? harmful_lens[i] : harmless_lens[i - NH];
            for (int t = 0; t < len; t++) ids[i][t] = t ? 3 + (from[t] - 3) % (Vk - 3) : mk->cfg.bos_id;
            ptr[i] = ids[i];
        }
        const up_token_lists folded_harmful = {ptr, harmful_lens, NH}, folded_harmless = {ptr + NH, harmless_lens, NL};
        float *cand = malloc((size_t)NPOS * Lk * dk * sizeof *cand);
        if (up_direction_candidates(mk, &folded_harmful, &folded_harmless, NPOS, 4, cand, NULL, NULL, &e)) fail_msg("%s", e.msg);
        up_select_opts full = up_select_opts_default();
        full.batch = 4;
        up_select_result all;
        if (up_select_direction(mk, cand, NPOS, &folded_harmful, &folded_harmless, refusal, 1, &full, &all, &e)) fail_msg("%s", e.msg);
        double kls[NPOS * 16];
        int n_kl = 0;
        for (int c = 0; c < NPOS * Lk && n_kl < NPOS * 16; c++) kls[n_kl++] = all.scores[c].kl;
        for (int i = 1; i < n_kl; i++)
            for (int j = i; j > 0 && kls[j - 1] > kls[j]; j--) {
                const double t = kls[j];
                kls[j] = kls[j - 1], kls[j - 1] = t;
            }
        const double settings[5][3] = {{0.8, 0.1, 0.0}, {1.0, kls[n_kl / 4], -1e9}, {1.0, kls[n_kl / 2], -1e9},
                                       {0.5, 1e9, -1e9}, {0.8, -1, -1e9}};
        for (int s = 0; s < 5; s++) {
            up_select_opts o = full;
            o.max_layer_frac = settings[s][0], o.max_kl = settings[s][1], o.min_induce = settings[s][2];
            up_select_result f, l;
            if (up_select_direction(mk, cand, NPOS, &folded_harmful, &folded_harmless, refusal, 1, &o, &f, &e)) fail_msg("%s", e.msg);
            o.mode = UP_SELECT_LAZY;
            if (up_select_direction(mk, cand, NPOS, &folded_harmful, &folded_harmless, refusal, 1, &o, &l, &e)) fail_msg("%s", e.msg);
            assert_int_equal(l.best, f.best);
            assert_int_equal(mismatches(&l, &f), 0);
            int n_filters = 0;
            for (int c = 0; c < NPOS * Lk; c++) {
                const up_select_score *a = &l.scores[c];
                n_filters += !isnan(a->kl);
                if (a->layer >= o.max_layer_frac * Lk - 1e-9) assert_true(a->dropped & UP_SELECT_DROP_UNSCORED);
                if (a->dropped & UP_SELECT_DROP_BYPASS_ONLY) assert_true(isnan(a->kl) && isfinite(a->bypass) && l.best >= 0);
            }
            past_lowest += l.best >= 0 && n_filters > 1;
            printf("%s, setting %d: best %d, lazy ran induce/KL for %d of %d\n", models[k], s, l.best, n_filters, NPOS * Lk);
            up_select_result_free(&f), up_select_result_free(&l);
        }
        up_select_opts other = full;
        other.batch = 3;
        up_select_result r3;
        if (up_select_direction(mk, cand, NPOS, &folded_harmful, &folded_harmless, refusal, 1, &other, &r3, &e)) fail_msg("%s", e.msg);
        assert_true(mismatches(&r3, &all) > 0);
        up_select_result_free(&r3), up_select_result_free(&all);
        free(cand);
        up_model_free(mk);
    }
    assert_true(past_lowest > 0);
}

static void test_errors(void **state) {
    up_select_result r;
    up_error e = {0};
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, NULL, 0, NULL, &r, &e), UP_ERR_INVALID);
    assert_null(r.scores);
    const int32_t bad[1] = {V};
    assert_int_equal(up_select_direction(model, candidates, NPOS, &harmful, &harmless, bad, 1, NULL, &r, &e), UP_ERR_INVALID);
    up_token_lists none = {NULL, NULL, 0};
    assert_int_equal(up_select_direction(model, candidates, NPOS, &none, &harmless, refusal, 1, NULL, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "harmful"));
    /* A zero candidate cannot be ablated: NaN scores, dropped as non-finite, the rest scored. */
    float *zeroed = malloc((size_t)NPOS * L * d * sizeof *zeroed);
    memcpy(zeroed, candidates, (size_t)NPOS * L * d * sizeof *zeroed);
    memset(zeroed, 0, d * sizeof *zeroed); /* position 0, layer 0 */
    up_select_opts o = up_select_opts_default();
    o.max_kl = 1e9, o.min_induce = -1e9;
    assert_int_equal(up_select_direction(model, zeroed, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e), UP_OK);
    assert_true(isnan(r.scores[0].bypass));
    assert_int_equal(r.scores[0].dropped, UP_SELECT_DROP_NAN);
    assert_true(isfinite(r.scores[1].bypass));
    assert_true(r.best > 0);
    up_select_result_free(&r);
    free(zeroed);
}

/* Induce comes from reruns above the candidate's layer (select.h): its bits equal those of the
 * whole steered passes of the same batches (every row its whole prompt), run here through
 * up_steer_run, for every candidate
 * of both golden checkpoints, with batches that leave a short last one. */
static void test_induce_rerun_is_exact(void **state) {
    (void)state;
    up_select_opts o = up_select_opts_default();
    o.batch = 2; /* NL = 5: batches of 2, 2, 1 */
    up_select_result r;
    up_error e = {0};
    if (up_select_direction(model, candidates, NPOS, &harmful, &harmless, refusal, 1, &o, &r, &e)) fail_msg("%s", e.msg);
    up_state *s;
    if (up_state_init(&s, model, o.batch, MAXLEN, &e)) fail_msg("%s", e.msg);
    /* The harmless prompts as selection batches them: by increasing length, ties in order. */
    const int32_t *ptr[NL];
    int lens[NL];
    for (int i = 0; i < NL; i++) {
        int j = i;
        for (; j > 0 && lens[j - 1] > harmless_lens[i]; j--) ptr[j] = ptr[j - 1], lens[j] = lens[j - 1];
        ptr[j] = harmless_ptr[i], lens[j] = harmless_lens[i];
    }
    assert_true(lens[0] < harmless_lens[0]); /* the order differs from the given one */
    int checked = 0;
    for (int c = 0; c < NPOS * L; c++) {
        const up_select_score *sc = &r.scores[c];
        if (isnan(sc->induce)) continue;
        up_steer add = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, sc->layer}, candidates + (size_t)c * d, 1.0f);
        const up_steer_row row = {&add, 1};
        const up_steer_plan plan = {&row, 1};
        double sum = 0, score[2];
        for (int start = 0; start < NL; start += o.batch) {
            const int B = NL - start < o.batch ? NL - start : o.batch;
            up_steer_batch bt = {ptr + start, lens + start, B, &plan, NULL, refusal, 1, 0, NULL, 0, 1};
            up_steer_out out = {score, NULL, NULL, NULL, NULL};
            if (up_steer_run(s, &bt, &out, &e)) fail_msg("%s", e.msg);
            for (int b = 0; b < B; b++) sum += score[b];
        }
        const double want = sum / NL;
        if (memcmp(&want, &sc->induce, sizeof want)) fail_msg("candidate %d: induce %.17g, whole passes %.17g", c, sc->induce, want);
        checked++;
    }
    assert_true(checked >= NPOS * L - NPOS); /* full mode scores every candidate it can ablate */
    up_state_free(s);
    up_select_result_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule),
        cmocka_unit_test(test_nothing_passes),
        cmocka_unit_test(test_subset),
        cmocka_unit_test(test_matches_direct),
        cmocka_unit_test(test_induce_rerun_is_exact),
        cmocka_unit_test(test_lazy_matches_full),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
