/* The steering grid on tiny_f32 with the SAE fixture at blocks.1.hook_resid_post: alpha = 0 is
 * the unsteered cell bit for bit; batched cells equal cells run alone; cells sharing a prompt
 * compute its prefix once and equal cells that do not; cached results equal
 * computed ones bit for bit; a run stopped part-way (between batches or inside one) resumes
 * without recomputing finished cells and ends with the same bits as an uninterrupted run; a
 * new alpha recomputes only its cells; keys change exactly with what determines a cell; the
 * first-order prediction tracks the measured dR and takes a supplied gradient of its objective
 * (an attribution's) bit for bit in place of its own; text, the substring judge and the coherence
 * columns agree with metrics.h; misuse is reported. */
#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "method/attribution.h"
#include "method/direction.h"
#include "method/grid.h"
#include "method/metrics.h"
#include "engine/model.h"
#include "method/steer.h"
#include "tmpdir.h"
#include "text/tokenizer.h"

static up_model *model;
static up_sae *sae;
static int d, V;

#define REFUSAL 5
static const int32_t refusal_ids[1] = {REFUSAL};
static const int32_t stop_ids[1] = {1};

static int setup(void **state) {
    char path[512];
    up_error e = {0};
    if (up_model_load(&model, test_path(path, sizeof path, "golden/tiny_f32"), &e)) return -1;
    if (up_sae_load(&sae, test_path(path, sizeof path, "fixtures/sae/saelens_jumprelu"), UP_SAE_ALL, &e)) return -1;
    d = model->cfg.d_model, V = model->cfg.vocab_size;
    return test_tmpdir_create("grid");
}

static int teardown(void **state) {
    up_sae_free(sae);
    up_model_free(model);
    return test_tmpdir_remove();
}

static void fill(int32_t *ids, int n, int seed) {
    ids[0] = model->cfg.bos_id;
    for (int i = 1; i < n; i++) ids[i] = 3 + (seed * 97 + i * 53 + i * i * 7) % (V - 3);
}

static float *objective_direction(void) {
    float *v = malloc(d * sizeof *v);
    for (int j = 0; j < d; j++) v[j] = sinf(0.7f * j + 0.3f);
    return v;
}

static const int latents[3] = {11, 40, 200};
static const float alphas[3] = {-4.0f, 0.0f, 4.0f};

/* 2 prompts × (none + 3 latents × 3 alphas) × decodings {0, 6}. */
static up_grid *make_grid(int n_alphas, const float *alpha_list) {
    up_grid *g;
    up_error e = {0};
    if (up_grid_init(&g, model, &e)) fail_msg("%s", e.msg);
    int32_t a[7], b[11];
    fill(a, 7, 1), fill(b, 11, 2);
    assert_int_equal(up_grid_add_prompt(g, "short", a, 7, &e), 0);
    assert_int_equal(up_grid_add_prompt(g, "long", b, 11, &e), 1);
    if (up_grid_add_latent_sweep(g, sae, latents, 3, alpha_list, n_alphas, UP_STEER_POS_ALL, &e)) fail_msg("%s", e.msg);
    assert_int_equal(up_grid_add_decoding(g, 0, &e), 0);
    assert_int_equal(up_grid_add_decoding(g, 6, &e), 1);
    float *r = objective_direction();
    if (up_grid_set_objective(g, 3, r, NULL, 0, &e)) fail_msg("%s", e.msg);
    free(r);
    return g;
}

static up_grid_opts base_opts(int batch) {
    up_grid_opts o = up_grid_opts_default();
    o.batch = batch;
    o.refusal_ids = refusal_ids, o.n_refusal = 1;
    o.stop_ids = stop_ids, o.n_stop = 1;
    return o;
}

static void run(up_grid *g, const up_grid_opts *o) {
    up_error e = {0};
    if (up_grid_run(g, o, &e)) fail_msg("%s", e.msg);
}

/* Bitwise equality of two doubles, NaN equal to NaN. */
static int same(double a, double b) { return !memcmp(&a, &b, sizeof a) || (isnan(a) && isnan(b)); }

/* Outputs only: keys of a cached run also carry the model's file digest. */
static void assert_cells_identical(const up_grid_cell *x, const up_grid_cell *y) {
    assert_true(same(x->score, y->score));
    assert_true(same(x->p_refusal, y->p_refusal));
    assert_true(same(x->R, y->R));
    assert_true(same(x->dR, y->dR));
    assert_true(same(x->dscore, y->dscore));
    assert_true(same(x->logprob, y->logprob));
    assert_true(same(x->repetition, y->repetition));
    assert_true(same(x->predicted_dR, y->predicted_dR));
    assert_int_equal(x->n_tokens, y->n_tokens);
    if (x->n_tokens) assert_memory_equal(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t));
    assert_int_equal(x->refusal_match, y->refusal_match);
    assert_true((x->text == NULL) == (y->text == NULL));
    if (x->text) assert_string_equal(x->text, y->text);
}

static void assert_grids_identical_at(const up_grid *a, const up_grid *b, int line) {
    assert_int_equal(up_grid_n_cells(a), up_grid_n_cells(b));
    for (int i = 0; i < up_grid_n_cells(a); i++) {
        const up_grid_cell *x = up_grid_cell_at(a, i), *y = up_grid_cell_at(b, i);
        if (!same(x->score, y->score) || !same(x->R, y->R))
            fail_msg("line %d: cell %d (%s, %s, max_new %d): score %.17g vs %.17g, R %.17g vs %.17g", line, i, x->prompt_label,
                     x->label, x->max_new_tokens, x->score, y->score, x->R, y->R);
        assert_cells_identical(x, y);
    }
}
#define assert_grids_identical(a, b) assert_grids_identical_at((a), (b), __LINE__)

static void test_shape_and_alpha_zero(void **state) {
    up_grid *g = make_grid(3, alphas);
    up_grid_opts o = base_opts(8);
    run(g, &o);
    assert_int_equal(up_grid_n_cells(g), 2 * 10 * 2);
    up_grid_totals t = up_grid_get_totals(g);
    /* The three alpha = 0 interventions share the "none" key: 2 × 2 × 3 duplicates. */
    assert_int_equal(t.unique, 40 - 12);
    assert_int_equal(t.computed, t.unique);
    assert_int_equal(t.cached, 0);
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < 2; k++) {
            const up_grid_cell *none = up_grid_cell_at(g, up_grid_index(g, p, 0, k));
            assert_string_equal(none->label, "none");
            assert_true(none->dscore == 0 && none->dR == 0 && none->predicted_dR == 0);
            assert_int_equal(none->n_tokens > 0, k == 1);
            for (int i = 1; i < up_grid_n_interventions(g); i++) {
                const up_grid_cell *c = up_grid_cell_at(g, up_grid_index(g, p, i, k));
                assert_int_equal(c->max_new_tokens, k ? 6 : 0);
                assert_true(c->latent == latents[(i - 1) / 3]);
                if (c->alpha == 0) {
                    assert_string_equal(c->key, none->key);
                    assert_cells_identical(c, none);
                } else {
                    assert_string_not_equal(c->key, none->key);
                    assert_true(c->score != none->score && c->R != none->R);
                }
            }
            /* Scoring-only cells have no completion metrics. */
            if (k == 0) assert_true(isnan(none->logprob) && isnan(none->repetition) && none->refusal_match == -2);
            else assert_true(isfinite(none->logprob) && none->logprob < 0 && isfinite(none->repetition));
        }
    }
    /* The grid's unsteered cell is exactly up_steer_run of the prompt alone, at batch 1. */
    up_grid_opts one = base_opts(1);
    run(g, &one);
    const up_grid_cell *none = up_grid_cell_at(g, up_grid_index(g, 1, 0, 1));
    int32_t b[11];
    fill(b, 11, 2);
    const int32_t *prompts[1] = {b};
    int len = 11, n_tok = 0;
    double score;
    int32_t toks[6];
    up_state *s;
    up_error e = {0};
    if (up_state_init(&s, model, 1, 17, &e)) fail_msg("%s", e.msg);
    up_steer_batch bt = {prompts, &len, 1, NULL, NULL, refusal_ids, 1, 6, stop_ids, 1, 0};
    up_steer_out out = {&score, NULL, toks, &n_tok, NULL};
    if (up_steer_run(s, &bt, &out, &e)) fail_msg("%s", e.msg);
    up_state_free(s);
    assert_true(same(score, none->score));
    assert_int_equal(n_tok, none->n_tokens);
    assert_memory_equal(toks, none->tokens, n_tok * sizeof *toks);
    up_grid_free(g);
}

static void test_batched_equals_alone(void **state) {
    up_grid *batched = make_grid(3, alphas), *alone = make_grid(3, alphas);
    up_grid_opts ob = base_opts(16), oa = base_opts(1);
    run(batched, &ob);
    run(alone, &oa);
    assert_true(up_grid_get_totals(batched).batches < up_grid_get_totals(alone).batches);
    double worst = 0;
    for (int i = 0; i < up_grid_n_cells(batched); i++) {
        const up_grid_cell *x = up_grid_cell_at(batched, i), *y = up_grid_cell_at(alone, i);
        assert_string_equal(x->key, y->key);
        const double ds = fabs(x->score - y->score) / fmax(1, fabs(y->score));
        const double dr = fabs(x->R - y->R) / fmax(1, fabs(y->R));
        worst = fmax(worst, fmax(ds, dr));
        assert_true(ds < 1e-5 && dr < 1e-5);
        assert_int_equal(x->n_tokens, y->n_tokens);
        if (x->n_tokens) assert_memory_equal(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t));
        if (!isnan(y->logprob)) assert_true(fabs(x->logprob - y->logprob) < 1e-5 * fmax(1, fabs(y->logprob)));
    }
    printf("batched vs alone: worst relative difference %.2g over %d cells\n", worst, up_grid_n_cells(batched));
    /* Equal completions of one prompt get one coherence row: equal log-probs. */
    int shared = 0;
    for (int i = 0; i < up_grid_n_cells(batched); i++)
        for (int j = 0; j < i; j++) {
            const up_grid_cell *x = up_grid_cell_at(batched, i), *y = up_grid_cell_at(batched, j);
            if (x->prompt != y->prompt || !x->n_tokens || x->n_tokens != y->n_tokens ||
                memcmp(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t)) || !strcmp(x->key, y->key))
                continue;
            shared++;
            assert_true(fabs(x->logprob - y->logprob) < 1e-5 * fabs(y->logprob));
        }
    printf("%d pairs of cells share a completion\n", shared);
    /* A steer too small to change the completion: its coherence row is the unsteered one's. */
    up_grid *g;
    up_error e = {0};
    assert_int_equal(up_grid_init(&g, model, &e), UP_OK);
    int32_t a[7];
    fill(a, 7, 1);
    up_grid_add_prompt(g, NULL, a, 7, &e);
    const float tiny[1] = {1e-4f};
    assert_int_equal(up_grid_add_latent_sweep(g, sae, latents, 1, tiny, 1, UP_STEER_POS_GENERATED, &e), UP_OK);
    up_grid_add_decoding(g, 6, &e);
    up_grid_opts o = base_opts(16);
    run(g, &o);
    const up_grid_cell *none = up_grid_cell_at(g, 0), *small = up_grid_cell_at(g, 1);
    assert_string_not_equal(none->key, small->key);
    assert_int_equal(none->n_tokens, small->n_tokens);
    assert_memory_equal(none->tokens, small->tokens, none->n_tokens * sizeof(int32_t));
    assert_true(same(none->logprob, small->logprob));
    up_grid_free(g);
    up_grid_free(batched), up_grid_free(alone);
}

/* Cells that share a prompt share its prefix: the grid's totals count each prompt once per
 * batch, and every cell agrees with the run without sharing (to the 1e-5 of batched vs alone:
 * shared rows run their prefix in a pass of another height). */
static void test_shared_prefix(void **state) {
    up_grid *shared = make_grid(3, alphas), *plain = make_grid(3, alphas);
    up_grid_opts os = base_opts(64), op = base_opts(64);
    op.share_prompts = 0;
    run(shared, &os);
    run(plain, &op);
    const up_grid_totals ts = up_grid_get_totals(shared), tp = up_grid_get_totals(plain);
    /* Per decoding one batch of 2 prompts x 7 distinct interventions (alpha 0 is "none"). */
    assert_int_equal(ts.batches, 2);
    assert_int_equal(ts.computed, 28);
    assert_int_equal(ts.prompt_tokens, 2 * (7 + 11));
    assert_int_equal(tp.prompt_tokens, 2 * 7 * (7 + 11));
    double worst = 0;
    for (int i = 0; i < up_grid_n_cells(shared); i++) {
        const up_grid_cell *x = up_grid_cell_at(shared, i), *y = up_grid_cell_at(plain, i);
        const double ds = fabs(x->score - y->score) / fmax(1, fabs(y->score));
        const double dr = fabs(x->R - y->R) / fmax(1, fabs(y->R));
        worst = fmax(worst, fmax(ds, dr));
        assert_true(ds < 1e-5 && dr < 1e-5);
        assert_int_equal(x->n_tokens, y->n_tokens);
        if (x->n_tokens) assert_memory_equal(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t));
        assert_true(same(x->logprob, y->logprob) || fabs(x->logprob - y->logprob) < 1e-5 * fmax(1, fabs(y->logprob)));
    }
    printf("shared vs unshared prefix: %ld vs %ld prompt tokens, worst relative difference %.2g\n", ts.prompt_tokens,
           tp.prompt_tokens, worst);
    up_grid_free(shared), up_grid_free(plain);
}

/* Every kind of item in one batch: each row equals its cell run alone (to rounding). */
static void add_mixed(up_grid *g, const float *r) {
    static const int listed[2] = {1, -1};
    up_error e = {0};
    up_steer items[6];
    items[0] = up_steer_ablate(r);
    items[1] = up_steer_clamp(sae, 40, 5.0f);
    items[1].where = UP_STEER_POS_PROMPT;
    items[2] = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 2}, r, 3.0f);
    items[2].where = UP_STEER_POS_LIST, items[2].positions = listed, items[2].n_positions = 2;
    items[3] = up_steer_add((up_hook_point){UP_HOOK_MLP_OUT, 0}, sae->W_dec + (size_t)7 * d, -6.0f);
    items[3].where = UP_STEER_POS_GENERATED;
    items[4] = up_steer_add((up_hook_point){UP_HOOK_RESID_POST, 1}, sae->W_dec + (size_t)9 * d, 5.0f);
    items[5] = up_steer_ablate(sae->W_dec + (size_t)9 * d);
    const up_grid_intervention ivs[5] = {{"ablate", &items[0], 1, -1, NAN}, {"clamp", &items[1], 1, 40, NAN},
                                         {"listed", &items[2], 1, -1, 3.0f}, {"generated", &items[3], 1, 7, -6.0f},
                                         {"add then ablate", &items[4], 2, 9, 5.0f}};
    for (int i = 0; i < 5; i++)
        if (up_grid_add_intervention(g, &ivs[i], &e) < 0) fail_msg("%s", e.msg);
}

static void test_mixed_kinds_batched_equals_alone(void **state) {
    up_grid *grids[2];
    float *r = objective_direction();
    for (int k = 0; k < 2; k++) {
        grids[k] = make_grid(1, alphas + 2);
        add_mixed(grids[k], r);
        up_grid_opts o = base_opts(k ? 1 : 16);
        run(grids[k], &o);
    }
    free(r);
    int distinct = 0;
    for (int i = 0; i < up_grid_n_cells(grids[0]); i++) {
        const up_grid_cell *x = up_grid_cell_at(grids[0], i), *y = up_grid_cell_at(grids[1], i);
        assert_true(fabs(x->score - y->score) < 1e-5 * fmax(1, fabs(y->score)));
        assert_true(fabs(x->R - y->R) < 1e-5 * fmax(1, fabs(y->R)));
        assert_int_equal(x->n_tokens, y->n_tokens);
        if (x->n_tokens) assert_memory_equal(x->tokens, y->tokens, x->n_tokens * sizeof(int32_t));
        const up_grid_cell *none = up_grid_cell_at(grids[0], up_grid_index(grids[0], x->prompt, 0, x->decoding));
        const int moved = fabs(x->score - none->score) > 1e-4; /* beyond row-placement rounding */
        distinct += x->intervention > 0 && moved;
        if (!strcmp(x->label, "generated")) assert_false(moved);
    }
    /* Every steered cell moves the score, except "generated" (it steers after the prompt). */
    assert_int_equal(distinct, 2 * 2 * (3 + 5 - 1));
    up_grid_free(grids[0]), up_grid_free(grids[1]);
}

static int count_cache_files(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "find '%s' -name '*.json' -path '*/[0-9a-f][0-9a-f]/*' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (!f || fscanf(f, "%d", &n) != 1) n = -1;
    if (f) pclose(f);
    return n;
}

typedef struct stopper {
    int stop_after_cells; /* stop at the first report with done >= this (after a batch) */
    int stop_at_step;     /* or at this step of the second batch (0: never) */
    int calls;
    int last_done;
} stopper;

static int stop_progress(const up_grid_progress *p, void *user) {
    stopper *s = user;
    s->calls++;
    s->last_done = p->done;
    assert_true(p->done <= p->total && p->cached <= p->done);
    if (s->stop_at_step && p->batch == 2 && p->step == s->stop_at_step) return 1;
    return s->stop_after_cells && p->batch == 0 ? 0 : s->stop_after_cells && p->step == 0 && p->done >= s->stop_after_cells;
}

static void test_cache_and_resume(void **state) {
    char cache[400], cache2[400], cache3[400];
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    snprintf(cache2, sizeof cache2, "%s/resume", tmpdir);
    snprintf(cache3, sizeof cache3, "%s/resume_mid", tmpdir);
    up_error e = {0};

    /* Reference: no cache at all. */
    up_grid *ref = make_grid(3, alphas);
    up_grid_opts o = base_opts(4);
    run(ref, &o);
    const int unique = up_grid_get_totals(ref).unique;

    /* Fresh cache: everything computed, one file per distinct cell, same bits. */
    up_grid *a = make_grid(3, alphas);
    o.cache_dir = cache;
    run(a, &o);
    assert_int_equal(up_grid_get_totals(a).computed, unique);
    assert_int_equal(count_cache_files(cache), unique);
    assert_grids_identical(ref, a);
    /* Second run: all from the cache, bit for bit. */
    up_grid *b = make_grid(3, alphas);
    run(b, &o);
    assert_int_equal(up_grid_get_totals(b).computed, 0);
    assert_int_equal(up_grid_get_totals(b).cached, unique);
    assert_grids_identical(ref, b);
    for (int i = 0; i < up_grid_n_cells(b); i++) assert_int_equal(up_grid_cell_at(b, i)->state, UP_GRID_CACHED);
    /* The file digests were memoised next to the cells. */
    char memo[500];
    snprintf(memo, sizeof memo, "%s/filehash", cache);
    struct stat sb;
    assert_int_equal(stat(memo, &sb), 0);

    /* Stopped between batches after at least 9 cells: the finished batches are on disk. */
    up_grid *c = make_grid(3, alphas);
    stopper st = {9, 0, 0, 0};
    up_grid_opts os = o;
    os.cache_dir = cache2, os.progress = stop_progress, os.user = &st;
    assert_int_equal(up_grid_run(c, &os, &e), UP_ERR_ABORTED);
    assert_non_null(strstr(e.msg, "stopped"));
    const int written = count_cache_files(cache2);
    assert_true(written > 0 && written < unique);
    assert_int_equal(up_grid_get_totals(c).computed, written);
    up_grid_free(c);
    /* Restart: only the rest is computed, and the table is the uninterrupted one, bit for bit. */
    up_grid *d2 = make_grid(3, alphas);
    os.progress = NULL;
    run(d2, &os);
    assert_int_equal(up_grid_get_totals(d2).cached, written);
    assert_int_equal(up_grid_get_totals(d2).computed, unique - written);
    assert_grids_identical(ref, d2);
    up_grid_free(d2);

    /* Stopped inside the second batch (at a decode step): that batch is dropped, the first kept. */
    up_grid *m1 = make_grid(3, alphas);
    stopper mid = {0, 1, 0, 0};
    os.cache_dir = cache3, os.progress = stop_progress, os.user = &mid;
    assert_int_equal(up_grid_run(m1, &os, &e), UP_ERR_ABORTED);
    assert_int_equal(count_cache_files(cache3), 4);
    up_grid_free(m1);
    up_grid *m2 = make_grid(3, alphas);
    os.progress = NULL;
    run(m2, &os);
    assert_int_equal(up_grid_get_totals(m2).computed, unique - 4);
    assert_grids_identical(ref, m2);
    up_grid_free(m2);

    /* One more alpha: only its cells (2 prompts × 3 latents × 2 decodings) are new. */
    const float more[4] = {-4.0f, 0.0f, 4.0f, 2.0f};
    up_grid *grown = make_grid(4, more);
    run(grown, &o);
    assert_int_equal(up_grid_get_totals(grown).computed, 2 * 3 * 2);
    assert_int_equal(up_grid_get_totals(grown).cached, unique);
    for (int p = 0; p < 2; p++)
        for (int v = 0; v < 3; v++)
            for (int a3 = 0; a3 < 3; a3++)
                for (int k = 0; k < 2; k++)
                    assert_cells_identical(up_grid_cell_at(grown, up_grid_index(grown, p, 1 + v * 4 + a3, k)),
                                           up_grid_cell_at(ref, up_grid_index(ref, p, 1 + v * 3 + a3, k)));
    up_grid_free(grown);

    /* A damaged cell file is recomputed, not trusted. */
    const up_grid_cell *victim = up_grid_cell_at(a, up_grid_index(a, 1, 3, 1));
    char path[600];
    snprintf(path, sizeof path, "%s/%.2s/%s.json", cache, victim->key, victim->key);
    FILE *f = fopen(path, "w");
    fputs("{\"format\": 1, \"key\": \"not this one\"}", f);
    fclose(f);
    up_grid *h = make_grid(3, alphas);
    run(h, &o);
    assert_int_equal(up_grid_get_totals(h).computed, 1);
    /* Recomputed alone, not in its original batch of 4: equal to rounding (see grid.h). */
    const int vi = up_grid_index(h, 1, 3, 1);
    for (int i = 0; i < up_grid_n_cells(h); i++) {
        const up_grid_cell *x = up_grid_cell_at(h, i), *y = up_grid_cell_at(ref, i);
        assert_int_equal(x->state, i == vi ? UP_GRID_COMPUTED : UP_GRID_CACHED);
        if (i != vi) {
            assert_cells_identical(x, y);
            continue;
        }
        assert_true(fabs(x->score - y->score) < 1e-5 * fmax(1, fabs(y->score)));
        assert_true(fabs(x->R - y->R) < 1e-5 * fmax(1, fabs(y->R)));
        assert_memory_equal(x->tokens, y->tokens, y->n_tokens * sizeof(int32_t));
    }
    up_grid_free(h);

    /* A cell file with one digit changed still parses, and one cut short may: the file's
     * SHA-256 check fails either way, so the cell is recomputed (tests/fuzz/fuzz_grid_cell.c
     * found the first trusted). */
    for (int damage = 0; damage < 2; damage++) {
        const up_grid_cell *v = up_grid_cell_at(a, up_grid_index(a, 0, 1 + damage, 0));
        snprintf(path, sizeof path, "%s/%.2s/%s.json", cache, v->key, v->key);
        char text[8192];
        f = fopen(path, "rb");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        char *digit = strpbrk(strstr(text, "\"score\": "), "0123456789");
        assert_non_null(digit);
        if (damage == 0) *digit = (char)('0' + (*digit - '0' + 1) % 10);
        else n = (size_t)(strstr(text, "\"check\"") - text); /* cut before the check */
        f = fopen(path, "wb");
        fwrite(text, 1, n, f);
        fclose(f);
        up_grid *damaged = make_grid(3, alphas);
        run(damaged, &o);
        assert_int_equal(up_grid_get_totals(damaged).computed, 1);
        up_grid_free(damaged);
    }

    up_grid_free(ref), up_grid_free(a), up_grid_free(b);
}

static void test_keys(void **state) {
    up_grid *g = make_grid(3, alphas);
    up_grid_opts o = base_opts(16);
    run(g, &o);
    char k0[65], k1[65];
    memcpy(k0, up_grid_cell_at(g, 2)->key, 65); /* prompt 0, first latent, alpha -4, scoring */
    /* Same inputs, another label: same key. An identity, the stop ids, a refusal id or the
     * objective: another key. */
    up_error e = {0};
    up_grid *h = make_grid(3, alphas);
    run(h, &o);
    assert_string_equal(up_grid_cell_at(h, 2)->key, k0);
    assert_int_equal(up_grid_identity(h, "code", "v2", &e), UP_OK);
    run(h, &o);
    memcpy(k1, up_grid_cell_at(h, 2)->key, 65);
    assert_string_not_equal(k1, k0);
    assert_int_equal(up_grid_identity(h, "code", "v3", &e), UP_OK);
    run(h, &o);
    assert_string_not_equal(up_grid_cell_at(h, 2)->key, k1);
    up_grid_opts o2 = o;
    const int32_t other_refusal[2] = {REFUSAL, 7};
    o2.refusal_ids = other_refusal, o2.n_refusal = 2;
    run(g, &o2);
    assert_string_not_equal(up_grid_cell_at(g, 2)->key, k0);
    o2 = o, o2.n_stop = 0;
    run(g, &o2);
    assert_string_not_equal(up_grid_cell_at(g, 2)->key, k0);
    o2 = o, o2.rep_n = 2;
    run(g, &o2);
    assert_string_not_equal(up_grid_cell_at(g, 2)->key, k0);
    run(g, &o);
    assert_string_equal(up_grid_cell_at(g, 2)->key, k0);
    float *r = objective_direction();
    r[0] += 1;
    assert_int_equal(up_grid_set_objective(g, 3, r, NULL, 0, &e), UP_OK);
    run(g, &o);
    assert_string_not_equal(up_grid_cell_at(g, 2)->key, k0);
    free(r);
    /* Each axis value its own key; decodings differ. */
    for (int i = 0; i < up_grid_n_cells(g); i++)
        for (int j = 0; j < i; j++) {
            const up_grid_cell *x = up_grid_cell_at(g, i), *y = up_grid_cell_at(g, j);
            const int zero_x = x->intervention == 0 || x->alpha == 0, zero_y = y->intervention == 0 || y->alpha == 0;
            const int same_cell = x->prompt == y->prompt && x->decoding == y->decoding &&
                                  (x->intervention == y->intervention || (zero_x && zero_y));
            assert_int_equal(!strcmp(x->key, y->key), same_cell);
        }
    up_grid_free(g), up_grid_free(h);
}

static void test_prediction(void **state) {
    up_error e = {0};
    up_grid *g;
    assert_int_equal(up_grid_init(&g, model, &e), UP_OK);
    int32_t a[9];
    fill(a, 9, 4);
    up_grid_add_prompt(g, NULL, a, 9, &e);
    const float small[2] = {-0.05f, 0.05f};
    assert_int_equal(up_grid_add_latent_sweep(g, sae, latents, 3, small, 2, UP_STEER_POS_ALL, &e), UP_OK);
    /* An ADD at resid_pre 2 (= resid_post 1) on listed positions only, and a clamp (no prediction). */
    const int pos[2] = {2, -1};
    up_steer listed = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 2}, sae->W_dec + (size_t)40 * d, 0.05f);
    listed.where = UP_STEER_POS_LIST, listed.positions = pos, listed.n_positions = 2;
    up_grid_intervention iv = {"listed", &listed, 1, 40, 0.05f};
    assert_int_equal(up_grid_add_intervention(g, &iv, &e), 7);
    up_steer clamp = up_steer_clamp(sae, 40, 3.0f);
    up_grid_intervention ic = {NULL, &clamp, 1, 40, NAN};
    assert_int_equal(up_grid_add_intervention(g, &ic, &e), 8);
    float *r = objective_direction();
    assert_int_equal(up_grid_set_objective(g, 3, r, NULL, 0, &e), UP_OK);
    free(r);
    up_grid_opts o = base_opts(16);
    run(g, &o);
    for (int i = 1; i <= 7; i++) {
        const up_grid_cell *c = up_grid_cell_at(g, i);
        assert_true(isfinite(c->predicted_dR) && isfinite(c->dR));
        const double rel = fabs(c->dR - c->predicted_dR) / fmax(fabs(c->predicted_dR), 1e-6);
        printf("%-22s dR %+.6f predicted %+.6f (rel. diff %.2g)\n", c->label, c->dR, c->predicted_dR, rel);
        assert_true(rel < 0.1);
    }
    /* Opposite alphas: opposite predictions, exactly. */
    assert_true(up_grid_cell_at(g, 1)->predicted_dR == -up_grid_cell_at(g, 2)->predicted_dR);
    assert_true(isnan(up_grid_cell_at(g, 8)->predicted_dR));
    assert_int_equal(up_grid_set_prediction(g, 0, 8, 1.5, &e), UP_OK);
    assert_true(up_grid_cell_at(g, 8)->predicted_dR == 1.5);
    assert_int_equal(up_grid_set_prediction(g, 1, 8, 1.5, &e), UP_ERR_INVALID);
    up_grid_free(g);
}

/* A gradient supplied for the objective (as an attribution of the prompt holds it) replaces
 * the grid's own backward pass: the attribution's gives the same predictions bit for bit, a
 * scaled one scaled predictions (so it is what the run read); one of another objective (a
 * direction that is not unit, other positions, another layer) is ignored, and so are supplied
 * gradients once the objective is set again. */
static void test_supplied_gradient(void **state) {
    up_error e = {0};
    int32_t a[9], b[6];
    fill(a, 9, 4), fill(b, 6, 5);
    const float al[2] = {-0.05f, 0.05f};
    float *r = objective_direction();
    up_grid *g[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(up_grid_init(&g[k], model, &e), UP_OK);
        up_grid_add_prompt(g[k], NULL, a, 9, &e);
        up_grid_add_prompt(g[k], NULL, b, 6, &e);
        assert_int_equal(up_grid_add_latent_sweep(g[k], sae, latents, 3, al, 2, UP_STEER_POS_ALL, &e), UP_OK);
        assert_int_equal(up_grid_set_objective(g[k], 3, r, NULL, 0, &e), UP_OK);
    }
    /* The objective as the grid holds it: its direction normalised (an attribution's request). */
    float *unit = malloc(d * sizeof *unit);
    memcpy(unit, r, d * sizeof *unit);
    up_direction_normalize(unit, d);
    up_attribute_request req = {a, 9, 1, {3, unit, NULL, 0}, UP_SCORE_GRADIENT, 0, NULL, NULL, 0};
    up_attribute_result res;
    assert_int_equal(up_attribute(model, sae, &req, &res, &e), UP_OK);
    /* Misuse: before an objective, a wrong token count, no such prompt. */
    up_grid *h;
    assert_int_equal(up_grid_init(&h, model, &e), UP_OK);
    up_grid_add_prompt(h, NULL, a, 9, &e);
    assert_int_equal(up_grid_set_gradient(h, 0, 1, &req.objective, res.grad, 9, &e), UP_ERR_INVALID);
    up_grid_free(h);
    assert_int_equal(up_grid_set_gradient(g[1], 0, 1, &req.objective, res.grad, 8, &e), UP_ERR_INVALID);
    assert_int_equal(up_grid_set_gradient(g[1], 2, 1, &req.objective, res.grad, 9, &e), UP_ERR_INVALID);

    up_grid_opts o = base_opts(16);
    assert_int_equal(up_grid_set_gradient(g[1], 0, 1, &req.objective, res.grad, 9, &e), UP_OK);
    run(g[0], &o), run(g[1], &o);
    assert_grids_identical(g[0], g[1]);
    assert_true(isfinite(up_grid_cell_at(g[1], 1)->predicted_dR));

    float *twice = malloc((size_t)9 * d * sizeof *twice);
    for (int i = 0; i < 9 * d; i++) twice[i] = 2 * res.grad[i];
    assert_int_equal(up_grid_set_gradient(g[1], 0, 1, &req.objective, twice, 9, &e), UP_OK);
    run(g[1], &o);
    for (int i = 1; i < up_grid_n_interventions(g[1]); i++) {
        const int x = up_grid_index(g[1], 0, i, 0), y = up_grid_index(g[1], 1, i, 0);
        assert_true(up_grid_cell_at(g[1], x)->predicted_dR == 2 * up_grid_cell_at(g[0], x)->predicted_dR);
        assert_true(same(up_grid_cell_at(g[1], y)->predicted_dR, up_grid_cell_at(g[0], y)->predicted_dR));
    }

    /* Other objectives leave the grid's own gradient in use (the doubled one goes with them). */
    up_objective other[3] = {{3, r, NULL, 0}, {3, unit, (const int[]){-1}, 1}, {2, unit, NULL, 0}};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(up_grid_set_objective(g[1], 3, r, NULL, 0, &e), UP_OK);
        assert_int_equal(up_grid_set_gradient(g[1], 0, 1, &other[k], twice, 9, &e), UP_OK);
        run(g[1], &o);
        assert_grids_identical(g[0], g[1]);
    }
    free(twice), free(unit), free(r);
    up_attribute_result_free(&res);
    up_grid_free(g[0]), up_grid_free(g[1]);
}

/* A model with the tiny tokenizer's vocabulary, so every completion decodes to text. */
static void test_text_and_judge(void **state) {
    up_model_config c = model->cfg;
    c.vocab_size = 302;
    up_model *m;
    up_tokenizer *tok;
    up_error e = {0};
    char path[512];
    assert_int_equal(up_model_init_random(&m, &c, UP_DTYPE_F32, 7, &e), UP_OK);
    if (up_tokenizer_load(&tok, test_path(path, sizeof path, "tokenizer/tiny/tokenizer.json"), &e)) fail_msg("%s", e.msg);
    up_grid *g;
    assert_int_equal(up_grid_init(&g, m, &e), UP_OK);
    int32_t a[6] = {2, 40, 41, 42, 43, 44};
    up_grid_add_prompt(g, NULL, a, 6, &e);
    float *v = objective_direction();
    const float al[2] = {8.0f, -8.0f};
    assert_int_equal(up_grid_add_sweep(g, (up_hook_point){UP_HOOK_RESID_POST, 1}, UP_STEER_POS_ALL, v, NULL, NULL, 1, al,
                                       2, &e),
                     UP_OK);
    free(v);
    up_grid_add_decoding(g, 12, &e);
    up_grid_opts o = base_opts(4);
    o.tok = tok;
    o.n_stop = 0;
    /* A cached run needs an identity for a model built in memory. */
    char cache[400];
    snprintf(cache, sizeof cache, "%s/text", tmpdir);
    o.cache_dir = cache;
    assert_int_equal(up_grid_run(g, &o, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "identity"));
    assert_int_equal(up_grid_identity(g, "model", "random seed 7", &e), UP_OK);
    run(g, &o);
    const up_grid_cell *none = up_grid_cell_at(g, 0);
    assert_non_null(none->text);
    assert_int_equal(none->n_tokens, 12);
    char *want;
    assert_int_equal(up_tokenizer_decode(tok, none->tokens, none->n_tokens, 1, &want, &e), UP_OK);
    assert_string_equal(none->text, want);
    free(want);
    assert_int_equal(none->refusal_match, up_metrics_refusal_match(none->text, strlen(none->text), NULL, 0));
    assert_true(none->repetition == up_metrics_repetition(none->tokens, none->n_tokens, 3));
    /* Judge with a list built from the unsteered text: it must match there. */
    size_t tl = strlen(none->text);
    assert_true(tl >= 2);
    char piece[3] = {none->text[tl / 2 - 1], none->text[tl / 2], 0};
    const char *list[2] = {"\x01never", piece};
    o.substrings = list, o.n_substrings = 2;
    run(g, &o);
    none = up_grid_cell_at(g, 0);
    assert_int_equal(none->refusal_match, 1);
    assert_string_equal(up_grid_match_text(g, none), piece);
    for (int i = 0; i < up_grid_n_cells(g); i++) {
        const up_grid_cell *x = up_grid_cell_at(g, i);
        assert_int_equal(x->refusal_match, up_metrics_refusal_match(x->text, strlen(x->text), list, 2));
    }
    /* The same from the cache. */
    up_grid_totals before = up_grid_get_totals(g);
    assert_int_equal(before.computed, 3);
    char *text = strdup(none->text);
    run(g, &o);
    assert_int_equal(up_grid_get_totals(g).cached, 3);
    assert_string_equal(up_grid_cell_at(g, 0)->text, text);
    free(text);
    up_grid_free(g);
    up_tokenizer_free(tok);
    up_model_free(m);
}

static void test_progress_format(void **state) {
    up_grid_progress p = {.done = 16, .total = 64, .cached = 4, .computed = 12, .batch = 2, .n_batches = 4,
                          .step = 3, .steps = 32, .elapsed = 10, .rate = 1.5, .eta = 3725};
    char buf[200];
    up_grid_progress_format(&p, 8, buf, sizeof buf);
    assert_string_equal(buf, "[##......] 16/64 cells  4 cached  batch 2/4 step 3/32  1.5 cells/s  ETA 1:02:05");
    p.rate = p.eta = NAN, p.batch = 0, p.cached = 0;
    up_grid_progress_format(&p, 0, buf, sizeof buf);
    assert_string_equal(buf, "16/64 cells");
    char tiny[10];
    up_grid_progress_format(&p, 8, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), 9);
}

static void test_errors(void **state) {
    up_grid *g;
    up_error e = {0};
    assert_int_equal(up_grid_init(&g, model, &e), UP_OK);
    up_grid_opts o = base_opts(4);
    assert_int_equal(up_grid_run(g, &o, &e), UP_ERR_INVALID); /* no prompts */
    assert_non_null(strstr(e.msg, "no prompts"));
    int32_t bad[3] = {2, 5, 9999};
    assert_int_equal(up_grid_add_prompt(g, NULL, bad, 3, &e), -1);
    assert_non_null(strstr(e.msg, "9999"));
    assert_int_equal(up_grid_add_prompt(g, NULL, bad, 0, &e), -1);
    const int lat[1] = {256};
    const float al[1] = {1};
    assert_int_equal(up_grid_add_latent_sweep(g, sae, lat, 1, al, 1, UP_STEER_POS_ALL, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "256"));
    up_steer s = up_steer_add((up_hook_point){UP_HOOK_RESID_POST, 9}, sae->W_dec, 1.0f);
    up_grid_intervention iv = {"too deep", &s, 1, -1, 1};
    assert_int_equal(up_grid_add_intervention(g, &iv, &e), -1);
    assert_non_null(strstr(e.msg, "too deep"));
    float *zero = calloc(d, sizeof *zero);
    assert_int_equal(up_grid_set_objective(g, 3, zero, NULL, 0, &e), UP_ERR_INVALID);
    assert_int_equal(up_grid_set_objective(g, 4, zero, NULL, 0, &e), UP_ERR_INVALID);
    free(zero);
    assert_int_equal(up_grid_add_decoding(g, -1, &e), -1);
    int32_t ok[3] = {2, 5, 9};
    assert_int_equal(up_grid_add_prompt(g, NULL, ok, 3, &e), 0);
    o.n_refusal = 0;
    assert_int_equal(up_grid_run(g, &o, &e), UP_ERR_INVALID);
    o = base_opts(0);
    assert_int_equal(up_grid_run(g, &o, &e), UP_ERR_INVALID);
    const int32_t outside[1] = {V};
    o = base_opts(2), o.refusal_ids = outside;
    assert_int_equal(up_grid_run(g, &o, &e), UP_ERR_INVALID);
    /* Without a decoding and objective: one scoring-only cell per intervention, R NaN. */
    o = base_opts(2);
    run(g, &o);
    assert_int_equal(up_grid_n_cells(g), 1);
    assert_true(isnan(up_grid_cell_at(g, 0)->R) && isfinite(up_grid_cell_at(g, 0)->score));
    assert_null(up_grid_cell_at(g, 1));
    up_grid_free(g);
    up_grid_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_and_alpha_zero), cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_mixed_kinds_batched_equals_alone), cmocka_unit_test(test_shared_prefix),
        cmocka_unit_test(test_cache_and_resume),     cmocka_unit_test(test_keys),
        cmocka_unit_test(test_prediction),           cmocka_unit_test(test_supplied_gradient),
        cmocka_unit_test(test_text_and_judge),
        cmocka_unit_test(test_progress_format),      cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
