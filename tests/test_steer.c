/* Steering hooks on tiny_f32 with the SAE fixture at blocks.1.hook_resid_post: alpha = 0 is no
 * steering bit for bit, a batch of mixed cells equals each cell alone, cached generation equals
 * uncached and up_generate, ablation removes the direction at every site, clamp follows its
 * encode/set/decode/add-error definition, each position mode touches exactly its slots, and
 * rows sharing a prompt compute it once and agree with rows that do not. */
#include "testutil.h"

#include <stdlib.h>

#include "engine/backward.h"
#include "method/direction.h"
#include "engine/generate.h"
#include "method/metrics.h"
#include "engine/model.h"
#include "method/steer.h"

static up_model *model;
static up_sae *sae;
static int d, V;

#define REFUSAL 5
static const int32_t refusal_ids[1] = {REFUSAL};

static int setup(void **state) {
    char path[512];
    up_error e = {0};
    if (up_model_load(&model, test_path(path, sizeof path, "golden/tiny_f32"), &e)) return -1;
    if (up_sae_load(&sae, test_path(path, sizeof path, "fixtures/sae/saelens_jumprelu"), UP_SAE_ALL, &e)) return -1;
    d = model->cfg.d_model, V = model->cfg.vocab_size;
    return 0;
}

static int teardown(void **state) {
    up_sae_free(sae);
    up_model_free(model);
    return 0;
}

/* BOS then pseudo-random ids (avoiding pad/eos/bos). */
static void fill(int32_t *ids, int n, int seed) {
    ids[0] = model->cfg.bos_id;
    for (int i = 1; i < n; i++) ids[i] = 3 + (seed * 97 + i * 53 + i * i * 7) % (V - 3);
}

static float *unit_direction(float phase) {
    float *v = malloc(d * sizeof *v);
    double n = 0;
    for (int j = 0; j < d; j++) v[j] = sinf(1.3f * j + phase), n += v[j] * v[j];
    for (int j = 0; j < d; j++) v[j] = (float)(v[j] / sqrt(n)) * 3.0f; /* deliberately not unit */
    return v;
}

static const float *dec_row(int k) { return sae->W_dec + (size_t)k * d; }

static const up_hook_point RESID_POST_1 = {UP_HOOK_RESID_POST, 1};

/* Logits (1, T, V) of one unpadded prompt with optional hooks. */
static void forward_all(const int32_t *ids, int T, const up_hooks *hooks, float *logits) {
    up_state *s;
    up_error e = {0};
    if (up_state_init(&s, model, 1, T, &e) || up_forward(s, ids, NULL, NULL, 1, T, hooks, logits, UP_LOGITS_ALL, &e))
        fail_msg("%s", e.msg);
    up_state_free(s);
}

static void test_alpha_zero_is_identity(void **state) {
    enum { T = 9 };
    int32_t ids[T];
    fill(ids, T, 1);
    float *base = malloc((size_t)T * V * sizeof *base), *got = malloc((size_t)T * V * sizeof *got);
    forward_all(ids, T, NULL, base);
    const float alphas[2] = {0.0f, -0.0f};
    for (int a = 0; a < 2; a++) {
        up_steer items[2] = {up_steer_add(RESID_POST_1, dec_row(7), alphas[a]),
                             up_steer_add((up_hook_point){UP_HOOK_EMBED, -1}, dec_row(9), alphas[a])};
        up_steer_row row = {items, 2};
        up_steer_plan plan = {&row, 1};
        up_steer_set *set;
        up_error e = {0};
        if (up_steer_hooks(&set, model, &plan, NULL, &e)) fail_msg("%s", e.msg);
        forward_all(ids, T, up_steer_set_hooks(set), got);
        assert_memory_equal(base, got, (size_t)T * V * sizeof *got);
        up_steer_set_free(set);
    }
    /* And a non-zero alpha does change them (the test above is not vacuous). */
    up_steer one = up_steer_add(RESID_POST_1, dec_row(7), 0.5f);
    up_steer_row row = {&one, 1};
    up_steer_plan plan = {&row, 1};
    up_steer_set *set;
    assert_int_equal(up_steer_hooks(&set, model, &plan, NULL, NULL), UP_OK);
    forward_all(ids, T, up_steer_set_hooks(set), got);
    assert_true(memcmp(base, got, (size_t)T * V * sizeof *got) != 0);
    up_steer_set_free(set);
    free(base), free(got);
}

/* ---- mixed batches -------------------------------------------------------------------- */

enum { NCELL = 6, MAXLEN = 12, NEW = 7 };
static const int cell_lens[NCELL] = {5, 9, 7, 12, 6, 9};
static int32_t cell_ids[NCELL][MAXLEN];
static const int32_t *cell_ptr[NCELL];
static float *dir_a, *dir_b;
static up_steer cell_items[NCELL][3];
static up_steer_row cell_rows[NCELL];
static const int list_positions[3] = {1, -1, 10};

static void make_cells(void) {
    for (int c = 0; c < NCELL; c++) fill(cell_ids[c], cell_lens[c], c + 2), cell_ptr[c] = cell_ids[c];
    if (!dir_a) dir_a = unit_direction(0.1f), dir_b = unit_direction(2.0f);
    /* 0: add a decoder row everywhere; 1: ablate; 2: clamp a latent on the prompt only;
     * 3: nothing; 4: add on generated tokens then ablate (composition); 5: negative alpha on a
     * listed set of positions, plus an add at another point. */
    cell_items[0][0] = up_steer_add(RESID_POST_1, dec_row(11), 4.0f);
    cell_rows[0] = (up_steer_row){cell_items[0], 1};
    cell_items[1][0] = up_steer_ablate(dir_a);
    cell_rows[1] = (up_steer_row){cell_items[1], 1};
    cell_items[2][0] = up_steer_clamp(sae, 3, 6.0f);
    cell_items[2][0].where = UP_STEER_POS_PROMPT;
    cell_rows[2] = (up_steer_row){cell_items[2], 1};
    cell_rows[3] = (up_steer_row){NULL, 0};
    cell_items[4][0] = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 2}, dir_a, 2.0f);
    cell_items[4][0].where = UP_STEER_POS_GENERATED;
    cell_items[4][1] = up_steer_ablate(dir_b);
    cell_rows[4] = (up_steer_row){cell_items[4], 2};
    cell_items[5][0] = up_steer_add(RESID_POST_1, dec_row(200), -6.0f);
    cell_items[5][0].where = UP_STEER_POS_LIST;
    cell_items[5][0].positions = list_positions;
    cell_items[5][0].n_positions = 3;
    cell_items[5][1] = up_steer_add((up_hook_point){UP_HOOK_MLP_OUT, 3}, dir_a, 1.5f);
    cell_rows[5] = (up_steer_row){cell_items[5], 2};
}

typedef struct run_result {
    double score[NCELL];
    float logits[NCELL][512];
    int32_t tokens[NCELL][NEW];
    int n_tokens[NCELL];
} run_result;

static void run_cells(int first, int n, run_result *r) {
    up_state *s;
    up_error e = {0};
    assert_true(V <= 512);
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t *tokens = malloc((size_t)n * NEW * sizeof *tokens);
    if (up_state_init(&s, model, n, MAXLEN + NEW, &e)) fail_msg("%s", e.msg);
    up_steer_plan plan = {cell_rows + first, n};
    up_steer_batch bt = {cell_ptr + first, cell_lens + first, n, &plan, NULL, refusal_ids, 1, NEW, NULL, 0, 0};
    up_steer_out out = {r->score + first, logits, tokens, r->n_tokens + first, NULL};
    if (up_steer_run(s, &bt, &out, &e)) fail_msg("%s", e.msg);
    for (int b = 0; b < n; b++) {
        memcpy(r->logits[first + b], logits + (size_t)b * V, V * sizeof(float));
        memcpy(r->tokens[first + b], tokens + (size_t)b * NEW, NEW * sizeof(int32_t));
    }
    up_state_free(s);
    free(logits), free(tokens);
}

static void test_mixed_batch_equals_cells_alone(void **state) {
    make_cells();
    static run_result batch, alone;
    run_cells(0, NCELL, &batch);
    for (int c = 0; c < NCELL; c++) run_cells(c, 1, &alone);
    int distinct = 0, distinct_tokens = 0;
    double worst = 0;
    for (int c = 0; c < NCELL; c++) {
        const double err = rel_err(batch.logits[c], alone.logits[c], V);
        worst = err > worst ? err : worst;
        int same = 0;
        for (int o = 0; o < c && !same; o++) same = !memcmp(batch.tokens[c], batch.tokens[o], sizeof batch.tokens[c]);
        distinct_tokens += !same;
        assert_int_equal(batch.n_tokens[c], alone.n_tokens[c]);
        assert_memory_equal(batch.tokens[c], alone.tokens[c], batch.n_tokens[c] * sizeof(int32_t));
        assert_close(batch.logits[c], alone.logits[c], V, 1e-5, "batched vs alone logits");
        assert_true(fabs(batch.score[c] - alone.score[c]) <= 1e-5 * fmax(1, fabs(alone.score[c])));
        assert_true(fabs(batch.score[c] - up_metrics_refusal_score(batch.logits[c], V, refusal_ids, 1, NULL)) < 1e-12);
        if (c && memcmp(batch.logits[c], batch.logits[0], V * sizeof(float))) distinct++;
    }
    assert_true(distinct > 0);
    printf("mixed batch vs cells alone: worst logits error %.2g, %d distinct completions of %d\n", worst,
           distinct_tokens, NCELL);
    /* Each cell really is steered: its logits differ from the unsteered run of its prompt. */
    for (int c = 0; c < NCELL; c++) {
        if (c == 3) continue; /* unsteered */
        float *base = malloc((size_t)cell_lens[c] * V * sizeof *base);
        forward_all(cell_ids[c], cell_lens[c], NULL, base);
        assert_true(rel_err(batch.logits[c], base + (size_t)(cell_lens[c] - 1) * V, V) > 1e-4);
        free(base);
    }
}

/* Uncached greedy decoding: the whole sequence re-run at every step, n_prompt passed. */
static void test_cached_equals_uncached(void **state) {
    make_cells();
    static run_result cached;
    run_cells(0, NCELL, &cached);
    for (int c = 0; c < NCELL; c++) {
        up_steer_plan plan = {&cell_rows[c], 1};
        up_steer_set *set;
        up_error e = {0};
        if (up_steer_hooks(&set, model, &plan, NULL, &e)) fail_msg("%s", e.msg);
        int32_t seq[MAXLEN + NEW];
        memcpy(seq, cell_ids[c], cell_lens[c] * sizeof(int32_t));
        float *logits = malloc((size_t)V * sizeof *logits);
        for (int step = 0; step < NEW; step++) {
            const int T = cell_lens[c] + step;
            up_state *s;
            if (up_state_init(&s, model, 1, T, &e) ||
                up_forward(s, seq, NULL, &cell_lens[c], 1, T, up_steer_set_hooks(set), logits, UP_LOGITS_LAST, &e))
                fail_msg("%s", e.msg);
            up_state_free(s);
            seq[T] = up_argmax(logits, V);
            if (step == 0) assert_close(logits, cached.logits[c], V, 1e-5, "prefill logits");
        }
        assert_int_equal(cached.n_tokens[c], NEW);
        assert_memory_equal(seq + cell_lens[c], cached.tokens[c], NEW * sizeof(int32_t));

        /* up_generate with the same hooks gives the same tokens as up_steer_run. */
        up_state *s;
        int32_t out[NEW];
        int n_out;
        up_generate_opts o = {NEW, NULL, 0, up_steer_set_hooks(set), NULL, NULL};
        if (up_state_init(&s, model, 1, MAXLEN + NEW, &e) || up_generate(s, &cell_ptr[c], &cell_lens[c], 1, &o, out, &n_out, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(n_out, NEW);
        assert_memory_equal(out, cached.tokens[c], NEW * sizeof(int32_t));
        up_state_free(s);
        up_steer_set_free(set);
        free(logits);
    }
}

static void test_run_stops(void **state) {
    make_cells();
    static run_result r;
    run_cells(0, NCELL, &r);
    /* Stop at each row's third token: rows end there, keeping the stop id. */
    up_state *s;
    up_error e = {0};
    int32_t stops[NCELL], tokens[NCELL * NEW];
    int n_tokens[NCELL];
    for (int c = 0; c < NCELL; c++) stops[c] = r.tokens[c][2];
    up_steer_plan plan = {cell_rows, NCELL};
    up_steer_batch bt = {cell_ptr, cell_lens, NCELL, &plan, NULL, NULL, 0, NEW, stops, NCELL, 0};
    up_steer_out out = {NULL, NULL, tokens, n_tokens, NULL};
    if (up_state_init(&s, model, NCELL, MAXLEN + NEW, &e) || up_steer_run(s, &bt, &out, &e)) fail_msg("%s", e.msg);
    for (int c = 0; c < NCELL; c++) {
        assert_true(n_tokens[c] >= 1 && n_tokens[c] <= 3);
        assert_memory_equal(tokens + c * NEW, r.tokens[c], n_tokens[c] * sizeof(int32_t));
        int hit = 0;
        for (int k = 0; k < NCELL; k++) hit |= tokens[c * NEW + n_tokens[c] - 1] == stops[k];
        assert_true(hit);
    }
    up_state_free(s);
}

/* ---- ablation --------------------------------------------------------------------------- */

typedef struct ortho_check {
    const float *unit;
    double worst; /* max |x·r̂| / ‖x‖ over checked slots */
    int calls;
} ortho_check;

static int ortho_hook(const up_hook_call *call, void *user) {
    ortho_check *o = user;
    o->calls++;
    for (int i = 0; i < call->n_rows * call->n_tok; i++) {
        if (call->pos[i] < 0) continue;
        const float *x = call->act + (size_t)i * call->d;
        double dot = 0, nn = 0;
        for (int j = 0; j < call->d; j++) dot += (double)x[j] * o->unit[j], nn += (double)x[j] * x[j];
        if (nn > 0 && fabs(dot) / sqrt(nn) > o->worst) o->worst = fabs(dot) / sqrt(nn);
    }
    return UP_HOOK_CONTINUE;
}

static void test_ablation_removes_direction(void **state) {
    float *r = unit_direction(0.4f), *unit = malloc(d * sizeof *unit);
    memcpy(unit, r, d * sizeof *unit);
    up_direction_normalize(unit, d);
    const int L = model->cfg.n_layers;
    /* Checks at every resid_pre, attn_out, mlp_out and resid_post, after the ablation. */
    ortho_check chk = {unit, 0, 0}, before = {unit, 0, 0};
    const up_hook_kind kinds[4] = {UP_HOOK_RESID_PRE, UP_HOOK_ATTN_OUT, UP_HOOK_MLP_OUT, UP_HOOK_RESID_POST};
    up_hook checks[4], plain[4];
    for (int k = 0; k < 4; k++) {
        checks[k] = (up_hook){{kinds[k], UP_HOOK_ANY_LAYER}, ortho_hook, &chk};
        plain[k] = (up_hook){{kinds[k], UP_HOOK_ANY_LAYER}, ortho_hook, &before};
    }
    up_hooks extra = {checks, 4}, plain_hooks = {plain, 4};
    up_steer ab = up_steer_ablate(r);
    up_steer_row row = {&ab, 1};
    up_steer_plan plan = {&row, 1};
    up_steer_set *set;
    up_error e = {0};
    if (up_steer_hooks(&set, model, &plan, &extra, &e)) fail_msg("%s", e.msg);
    /* A left-padded batch, prefill and decode steps. */
    int32_t p0[6], p1[11];
    fill(p0, 6, 1), fill(p1, 11, 2);
    const int32_t *prompts[2] = {p0, p1};
    const int lens[2] = {6, 11};
    up_state *s;
    int32_t out[8];
    int n_out[2];
    up_generate_opts o = {4, NULL, 0, up_steer_set_hooks(set), NULL, NULL};
    if (up_state_init(&s, model, 2, 16, &e) || up_generate(s, prompts, lens, 2, &o, out, n_out, &e)) fail_msg("%s", e.msg);
    assert_int_equal(chk.calls, 4 * L * 4); /* 4 kinds x L layers x (prefill + 3 decode steps) */
    if (!(chk.worst <= 1e-4)) fail_msg("|x.r| / |x| = %.3g after ablation", chk.worst);
    o.hooks = &plain_hooks;
    if (up_generate(s, prompts, lens, 2, &o, out, n_out, &e)) fail_msg("%s", e.msg);
    assert_true(before.worst > 1e-2); /* without ablation the component is there */
    printf("ablation: max |x.r|/|x| %.2g after, %.2g before\n", chk.worst, before.worst);
    up_state_free(s);
    up_steer_set_free(set);
    free(r), free(unit);
}

/* ---- clamp -------------------------------------------------------------------------------- */

typedef struct capture {
    float *buf;
} capture;

static int capture_hook(const up_hook_call *call, void *user) {
    capture *c = user;
    memcpy(c->buf, call->act, (size_t)call->n_rows * call->n_tok * call->d * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static void test_clamp(void **state) {
    enum { T = 10 };
    const int K = sae->d_sae;
    int32_t ids[T];
    fill(ids, T, 3);
    float *h = malloc((size_t)T * d * sizeof *h), *after = malloc((size_t)T * d * sizeof *after);
    float *acts = malloc((size_t)T * K * sizeof *acts), *recon = malloc((size_t)T * d * sizeof *recon);
    float *recon2 = malloc((size_t)T * d * sizeof *recon2);
    float *base = malloc((size_t)T * V * sizeof *base), *got = malloc((size_t)T * V * sizeof *got);
    capture cap = {h}, cap_after = {after};
    up_hook hcap = {RESID_POST_1, capture_hook, &cap}, hafter = {RESID_POST_1, capture_hook, &cap_after};
    up_hooks hk = {&hcap, 1}, extra = {&hafter, 1};
    forward_all(ids, T, &hk, base);
    up_error e = {0};
    if (up_sae_encode(sae, h, T, acts, &e)) fail_msg("%s", e.msg);
    /* A latent active at some slot, and one silent everywhere. */
    int active = -1, active_t = -1, silent = -1;
    for (int k = 0; k < K && (active < 0 || silent < 0); k++) {
        int any = 0;
        for (int t = 1; t < T; t++)
            if (acts[(size_t)t * K + k] > 0) {
                any = 1;
                if (active < 0) active = k, active_t = t;
            }
        if (!any && silent < 0) silent = k;
    }
    assert_true(active >= 0 && silent >= 0);

    /* Value equal to the current activation: nothing changes. */
    up_steer items[2] = {up_steer_clamp(sae, silent, 0.0f),
                         up_steer_clamp(sae, active, acts[(size_t)active_t * K + active])};
    assert_int_equal(items[0].point.kind, UP_HOOK_RESID_POST);
    assert_int_equal(items[0].point.layer, 1);
    const int at[1] = {active_t};
    items[1].where = UP_STEER_POS_LIST, items[1].positions = at, items[1].n_positions = 1;
    up_steer_row row = {items, 2};
    up_steer_plan plan = {&row, 1};
    up_steer_set *set;
    if (up_steer_hooks(&set, model, &plan, NULL, &e)) fail_msg("%s", e.msg);
    forward_all(ids, T, up_steer_set_hooks(set), got);
    assert_close(got, base, (size_t)T * V, 1e-5, "clamp to the current value");
    up_steer_set_free(set);

    /* A new value: the result is decode(encode(h) with a_k := v) + (h - decode(encode(h))). */
    const float value = 7.5f;
    up_steer c = up_steer_clamp(sae, active, value);
    row = (up_steer_row){&c, 1};
    if (up_steer_hooks(&set, model, &plan, &extra, &e)) fail_msg("%s", e.msg);
    forward_all(ids, T, up_steer_set_hooks(set), got);
    if (up_sae_decode(sae, acts, T, recon, &e)) fail_msg("%s", e.msg);
    for (int t = 0; t < T; t++) acts[(size_t)t * K + active] = value;
    if (up_sae_decode(sae, acts, T, recon2, &e)) fail_msg("%s", e.msg);
    for (size_t i = 0; i < (size_t)T * d; i++) recon2[i] += h[i] - recon[i];
    assert_close(after, recon2, (size_t)T * d, 1e-5, "clamp vs encode/set/decode + error");
    assert_true(rel_err(got, base, (size_t)T * V) > 1e-3);
    up_steer_set_free(set);
    free(h), free(after), free(acts), free(recon), free(recon2), free(base), free(got);
}

/* ---- position modes --------------------------------------------------------------------- */

typedef struct touched {
    float *before; /* (rows * chunk, d) copy made by the hook before the steering */
    unsigned char mark[4][64]; /* [row][position] 1 when the slot changed */
    int seen[4][64];           /* [row][position] the slot appeared */
} touched;

static int before_hook(const up_hook_call *call, void *user) {
    touched *tc = user;
    memcpy(tc->before, call->act, (size_t)call->n_rows * call->n_tok * call->d * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static int after_hook(const up_hook_call *call, void *user) {
    touched *tc = user;
    for (int b = 0; b < call->n_rows; b++)
        for (int t = 0; t < call->n_tok; t++) {
            const int i = b * call->n_tok + t, p = call->pos[i];
            if (p < 0) continue;
            tc->seen[b][p] = 1;
            tc->mark[b][p] = memcmp(tc->before + (size_t)i * call->d, call->act + (size_t)i * call->d,
                                    call->d * sizeof(float)) != 0;
        }
    return UP_HOOK_CONTINUE;
}

/* Runs mode `where` (with list) at hook_embed over a padded batch, generating (gen != 0, via
 * up_steer_run) or in one plain forward without n_prompt. */
static void run_positions(up_steer_where where, const int *list, int n_list, int gen, touched *tc) {
    float *ones = malloc(d * sizeof *ones);
    for (int j = 0; j < d; j++) ones[j] = 1.0f;
    up_steer st = up_steer_add((up_hook_point){UP_HOOK_EMBED, -1}, ones, 1.0f);
    st.where = where, st.positions = list, st.n_positions = n_list;
    up_steer_row row = {&st, 1};
    up_steer_plan plan = {&row, 1};
    up_steer_set *set;
    up_error e = {0};
    memset(tc->mark, 0, sizeof tc->mark);
    memset(tc->seen, 0, sizeof tc->seen);
    if (up_steer_hooks(&set, model, &plan, NULL, &e)) fail_msg("%s", e.msg);
    /* before | steering | after */
    const up_hooks *sh = up_steer_set_hooks(set);
    up_hook all[8];
    all[0] = (up_hook){{UP_HOOK_EMBED, -1}, before_hook, tc};
    for (int i = 0; i < sh->n; i++) all[1 + i] = sh->items[i];
    all[1 + sh->n] = (up_hook){{UP_HOOK_EMBED, -1}, after_hook, tc};
    up_hooks hk = {all, sh->n + 2};
    int32_t p0[5], p1[8];
    fill(p0, 5, 4), fill(p1, 8, 5);
    const int32_t *prompts[2] = {p0, p1};
    const int lens[2] = {5, 8};
    up_state *s;
    if (up_state_init(&s, model, 2, 8 + 6, &e)) fail_msg("%s", e.msg);
    if (gen) {
        int32_t out[12];
        int n_out[2];
        up_steer_batch bt = {prompts, lens, 2, NULL, &hk, NULL, 0, 6, NULL, 0, 0};
        up_steer_out o = {NULL, NULL, out, n_out, NULL};
        if (up_steer_run(s, &bt, &o, &e)) fail_msg("%s", e.msg);
    } else {
        int32_t tok[16];
        const int pad[2] = {3, 0};
        for (int t = 0; t < 8; t++) tok[t] = t < 3 ? 0 : p0[t - 3], tok[8 + t] = p1[t];
        if (up_forward(s, tok, pad, NULL, 2, 8, &hk, NULL, UP_LOGITS_NONE, &e)) fail_msg("%s", e.msg);
    }
    up_state_free(s);
    up_steer_set_free(set);
    free(ones);
}

static void expect_marks(const touched *tc, int gen, int (*want)(int row, int pos, int n_prompt)) {
    const int lens[2] = {5, 8};
    for (int b = 0; b < 2; b++) {
        const int last = gen ? lens[b] + 6 - 2 : lens[b] - 1; /* the last generated token is never fed */
        for (int p = 0; p < 64; p++) {
            assert_int_equal(tc->seen[b][p], p <= last);
            if (p <= last && tc->mark[b][p] != want(b, p, lens[b]))
                fail_msg("row %d position %d: touched %d, want %d", b, p, tc->mark[b][p], want(b, p, lens[b]));
        }
    }
}

static int want_all(int b, int p, int n) { return 1; }
static int want_prompt(int b, int p, int n) { return p < n; }
static int want_generated(int b, int p, int n) { return p >= n; }
static int want_none(int b, int p, int n) { return 0; }
static int want_list(int b, int p, int n) { return p == 0 || p == n - 1 || p == n - 3 || p == 9; }

static void test_position_modes(void **state) {
    static touched tc;
    float *before = malloc((size_t)2 * 8 * d * sizeof *before);
    tc.before = before;
    const int list[4] = {0, -1, -3, 9}; /* 9: generated in both rows */
    run_positions(UP_STEER_POS_ALL, NULL, 0, 1, &tc), expect_marks(&tc, 1, want_all);
    run_positions(UP_STEER_POS_PROMPT, NULL, 0, 1, &tc), expect_marks(&tc, 1, want_prompt);
    run_positions(UP_STEER_POS_GENERATED, NULL, 0, 1, &tc), expect_marks(&tc, 1, want_generated);
    run_positions(UP_STEER_POS_LIST, list, 4, 1, &tc), expect_marks(&tc, 1, want_list);
    /* A plain forward has no n_prompt: all of it is prompt, the prompt ends at the last slot. */
    run_positions(UP_STEER_POS_PROMPT, NULL, 0, 0, &tc), expect_marks(&tc, 0, want_all);
    run_positions(UP_STEER_POS_GENERATED, NULL, 0, 0, &tc), expect_marks(&tc, 0, want_none);
    run_positions(UP_STEER_POS_LIST, list, 4, 0, &tc), expect_marks(&tc, 0, want_list);
    free(before);
}

/* Items of a row run in list order at a shared point: adding v and then ablating v is the
 * ablation alone, while ablating first keeps the addition. */
static void test_composition_order(void **state) {
    enum { T = 8 };
    int32_t ids[T];
    fill(ids, T, 8);
    float *v = unit_direction(0.9f);
    const up_hook_point pre2 = {UP_HOOK_RESID_PRE, 2};
    up_steer add_then_ablate[2] = {up_steer_add(pre2, v, 3.0f), up_steer_ablate(v)};
    up_steer ablate_then_add[2] = {up_steer_ablate(v), up_steer_add(pre2, v, 3.0f)};
    up_steer ablate_only = up_steer_ablate(v);
    const up_steer_row rows[3] = {{add_then_ablate, 2}, {ablate_then_add, 2}, {&ablate_only, 1}};
    float *logits[3];
    for (int i = 0; i < 3; i++) {
        up_steer_plan plan = {&rows[i], 1};
        up_steer_set *set;
        up_error e = {0};
        if (up_steer_hooks(&set, model, &plan, NULL, &e)) fail_msg("%s", e.msg);
        logits[i] = malloc((size_t)T * V * sizeof(float));
        forward_all(ids, T, up_steer_set_hooks(set), logits[i]);
        up_steer_set_free(set);
    }
    assert_close(logits[0], logits[2], (size_t)T * V, 1e-5, "add then ablate vs ablate");
    assert_true(rel_err(logits[1], logits[2], (size_t)T * V) > 1e-3);
    for (int i = 0; i < 3; i++) free(logits[i]);
    free(v);
}

/* ---- gradient and errors ------------------------------------------------------------------ */

static void test_gradient_hooks(void **state) {
    enum { T = 8 };
    int32_t ids[T];
    fill(ids, T, 6);
    float *v = unit_direction(1.0f), *g = malloc((size_t)T * d * sizeof *g);
    up_steer add = up_steer_add(RESID_POST_1, dec_row(42), 2.0f);
    up_steer_row row = {&add, 1};
    up_steer_plan plan = {&row, 1};
    double R_proj[1] = {0};
    up_projection pr = {v, NULL, 0, R_proj};
    up_hook ph = up_metrics_projection(&pr, 3);
    up_hooks extra = {&ph, 1};
    up_steer_set *set;
    up_error e = {0};
    if (up_steer_hooks(&set, model, &plan, &extra, &e)) fail_msg("%s", e.msg);
    float *logits = malloc((size_t)T * V * sizeof *logits);
    forward_all(ids, T, up_steer_set_hooks(set), logits);
    const double R_fwd = R_proj[0];
    up_objective obj = {3, v, NULL, 0};
    double R;
    if (up_gradient(model, ids, NULL, 1, T, 0, &obj, up_steer_set_hooks(set), NULL, g, &R, &e)) fail_msg("%s", e.msg);
    assert_true(fabs(R - R_fwd) < 1e-5 * fmax(1, fabs(R)));
    up_steer_set_free(set);
    free(v), free(g), free(logits);
}

/* ---- shared prompts ------------------------------------------------------------------- */

/* Five rows over two prompts (A A B A B), each case steering every row its own way: with
 * sharing on, each prompt runs once up to where steering first acts on it, and every output
 * equals the unshared run's to the rounding allowed between batches (1e-5 relative, as batched
 * vs alone above; a shared row's products run in a pass of another height, and the sgemm
 * kernels round a row by its place in the tiling). Tokens must be equal. The prompt-token
 * count shows what ran from the embedding: the two prompts once each when shared. */
enum { SH_ROWS = 5, SH_NEW = 6 };

typedef struct share_case {
    const char *name;
    up_steer items[SH_ROWS];
    int shares; /* 1: the rule lets the prompts be shared */
} share_case;

/* Runs n rows (prompts up to max_len tokens) through up_steer_run under plan (NULL:
 * unsteered), keeping each row's logits and tokens in r. */
static void run_batch(const int32_t *const *prompts, const int *lens, int n, int max_len, const up_steer_plan *plan,
                      int max_new, int no_sharing, run_result *r, long *prompt_tokens) {
    up_state *s;
    up_error e = {0};
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t *tokens = malloc((size_t)n * SH_NEW * sizeof *tokens);
    if (up_state_init(&s, model, n, max_len + SH_NEW, &e)) fail_msg("%s", e.msg);
    up_steer_batch bt = {prompts, lens, n, plan, NULL, refusal_ids, 1, max_new, NULL, 0, no_sharing};
    *prompt_tokens = 0;
    up_steer_out out = {r->score, logits, max_new ? tokens : NULL, r->n_tokens, prompt_tokens};
    if (up_steer_run(s, &bt, &out, &e)) fail_msg("%s", e.msg);
    for (int b = 0; b < n; b++) {
        memcpy(r->logits[b], logits + (size_t)b * V, V * sizeof(float));
        memcpy(r->tokens[b], tokens + (size_t)b * SH_NEW, SH_NEW * sizeof(int32_t));
    }
    up_state_free(s);
    free(logits), free(tokens);
}

static void run_shared(const up_steer_row *rows, int max_new, int no_sharing, run_result *r, long *prompt_tokens) {
    static int32_t pa[9], pb[6];
    fill(pa, 9, 41), fill(pb, 6, 42);
    const int32_t *prompts[SH_ROWS] = {pa, pa, pb, pa, pb};
    const int lens[SH_ROWS] = {9, 9, 6, 9, 6};
    const up_steer_plan plan = {rows, SH_ROWS};
    run_batch(prompts, lens, SH_ROWS, 9, &plan, max_new, no_sharing, r, prompt_tokens);
}

/* A shared run against the unshared one, row by row: logits and scores within 1e-5 relative,
 * and (when generating) the same greedy tokens. Returns the worst logits error. */
static double compare_rows(const run_result *shared, const run_result *alone, int n, int gen, const char *what) {
    double worst = 0;
    for (int b = 0; b < n; b++) {
        worst = fmax(worst, rel_err(shared->logits[b], alone->logits[b], V));
        assert_close(shared->logits[b], alone->logits[b], V, 1e-5, what);
        assert_true(fabs(shared->score[b] - alone->score[b]) <= 1e-5 * fmax(1, fabs(alone->score[b])));
        if (!gen) continue;
        assert_int_equal(shared->n_tokens[b], alone->n_tokens[b]);
        assert_memory_equal(shared->tokens[b], alone->tokens[b], shared->n_tokens[b] * sizeof(int32_t));
    }
    return worst;
}

static void test_shared_prompts_equal_unshared(void **state) {
    if (!dir_a) dir_a = unit_direction(0.1f), dir_b = unit_direction(2.0f);
    static const int last[1] = {-1}, generated_only[1] = {12};
    share_case cases[8];
    memset(cases, 0, sizeof cases);
    const float alphas[SH_ROWS] = {3.0f, -5.0f, 2.0f, 0.0f, 6.0f};
    for (int b = 0; b < SH_ROWS; b++) {
        cases[0].items[b] = up_steer_add(RESID_POST_1, dec_row(11 + b), alphas[b]);
        cases[1].items[b] = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 2}, dec_row(20 + b), alphas[b]);
        cases[1].items[b].where = UP_STEER_POS_PROMPT;
        cases[2].items[b] = up_steer_add((up_hook_point){UP_HOOK_MLP_OUT, 0}, dec_row(30 + b), alphas[b]);
        cases[2].items[b].where = UP_STEER_POS_GENERATED;
        cases[3].items[b] = up_steer_clamp(sae, 3 + b, 2.0f + b);
        cases[4].items[b] = up_steer_ablate(b % 2 ? dir_a : dir_b);
        cases[5].items[b] = up_steer_ablate(b % 2 ? dir_a : dir_b);
        cases[5].items[b].where = UP_STEER_POS_GENERATED;
        cases[6].items[b] = up_steer_add((up_hook_point){UP_HOOK_ATTN_OUT, 2}, dir_a, alphas[b]);
        cases[6].items[b].where = UP_STEER_POS_LIST, cases[6].items[b].positions = b == 4 ? generated_only : last;
        cases[6].items[b].n_positions = 1;
    }
    /* Kinds mixed across rows: sharing stops at the earliest of them (the clamp). */
    cases[7].items[0] = up_steer_add((up_hook_point){UP_HOOK_MLP_OUT, 3}, dir_a, 2.0f);
    cases[7].items[1] = up_steer_clamp(sae, 5, 4.0f);
    cases[7].items[1].where = UP_STEER_POS_PROMPT;
    cases[7].items[2] = up_steer_add(RESID_POST_1, dec_row(7), 3.0f);
    cases[7].items[2].where = UP_STEER_POS_GENERATED;
    cases[7].items[3] = up_steer_add(RESID_POST_1, dec_row(7), 0.0f);
    cases[7].items[4] = up_steer_ablate(dir_b);
    cases[7].items[4].where = UP_STEER_POS_GENERATED;
    const char *names[8] = {"add all", "add prompt", "add generated", "clamp all", "ablate all", "ablate generated",
                            "add listed", "mixed"};
    /* Ablation of prompt slots acts from blocks.0.hook_resid_pre: nothing to share. */
    const int shares[8] = {1, 1, 1, 1, 0, 1, 1, 1};
    for (int k = 0; k < 8; k++) {
        up_steer_row rows[SH_ROWS];
        for (int b = 0; b < SH_ROWS; b++) rows[b] = (up_steer_row){&cases[k].items[b], 1};
        for (int gen = 0; gen < 2; gen++) {
            static run_result shared, alone;
            long n_shared, n_alone;
            const int max_new = gen ? SH_NEW : 0;
            run_shared(rows, max_new, 0, &shared, &n_shared);
            run_shared(rows, max_new, 1, &alone, &n_alone);
            assert_int_equal(n_alone, 9 * 3 + 6 * 2);
            if (shares[k] && n_shared != 9 + 6) fail_msg("%s: %ld prompt tokens run, want 15", names[k], n_shared);
            if (!shares[k]) assert_int_equal(n_shared, n_alone);
            const double worst = compare_rows(&shared, &alone, SH_ROWS, gen, names[k]);
            /* Steering that moves prompt slots must show in the last-position logits of some
             * row, so the comparison above is not between unsteered runs. */
            int moved = 0;
            for (int b = 1; b < SH_ROWS; b++)
                moved |= b != 2 && b != 4 && memcmp(shared.logits[b], shared.logits[0], V * sizeof(float));
            if (k != 2 && k != 5) assert_true(moved);
            printf("%-16s %s: %ld vs %ld prompt tokens, worst logits error %.2g\n", names[k], gen ? "generate" : "score",
                   n_shared, n_alone, worst);
        }
    }
}

/* Distinct prompts with a common opening (a chat template's), every row steered alike: the
 * opening runs once and each row goes on from a copy, its own rest left-padded after it
 * (up_prefill's PREFIX). Outputs equal the unshared run's to 1e-5 relative and greedy tokens
 * are equal, for ablation, addition, a clamp and no steering; the prompt-token count shows the
 * opening ran once. A position list (resolved against each row's own length) keeps every row
 * whole, as do rows with different item arrays. */
enum { PX_ROWS = 4, PX_OPEN = 4 };

static void run_prefix(const up_steer_plan *plan, int max_new, int no_sharing, run_result *r, long *prompt_tokens) {
    static int32_t ids[PX_ROWS][12];
    const int lens[PX_ROWS] = {7, 11, 6, 9};
    const int32_t *prompts[PX_ROWS];
    for (int b = 0; b < PX_ROWS; b++) {
        fill(ids[b], lens[b], 60 + b);
        fill(ids[b], PX_OPEN, 59); /* the shared opening */
        prompts[b] = ids[b];
    }
    run_batch(prompts, lens, PX_ROWS, 11, plan, max_new, no_sharing, r, prompt_tokens);
}

static void test_common_prefix_shared(void **state) {
    if (!dir_a) dir_a = unit_direction(0.1f), dir_b = unit_direction(2.0f);
    static const int last[1] = {-1};
    up_steer items[6];
    items[0] = up_steer_ablate(dir_a);
    items[1] = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 1}, dec_row(3), 4.0f);
    items[2] = up_steer_clamp(sae, 4, 3.0f);
    items[4] = up_steer_add((up_hook_point){UP_HOOK_ATTN_OUT, 1}, dir_b, 3.0f);
    items[4].where = UP_STEER_POS_LIST, items[4].positions = last, items[4].n_positions = 1;
    items[5] = up_steer_add((up_hook_point){UP_HOOK_RESID_PRE, 1}, dec_row(3), 4.0f); /* a copy of items[1] */
    const char *names[6] = {"ablate", "add", "clamp", "unsteered", "position list", "equal rows, two arrays"};
    const int total = 7 + 11 + 6 + 9;
    for (int k = 0; k < 6; k++) {
        up_steer_row rows[PX_ROWS];
        for (int b = 0; b < PX_ROWS; b++) rows[b] = (up_steer_row){&items[k == 5 && b % 2 ? 5 : k == 5 ? 1 : k], 1};
        const up_steer_plan plan = {rows, PX_ROWS};
        const int shares = k < 4;
        for (int gen = 0; gen < 2; gen++) {
            static run_result shared, alone;
            long n_shared, n_alone;
            const int max_new = gen ? SH_NEW : 0;
            run_prefix(k == 3 ? NULL : &plan, max_new, 0, &shared, &n_shared);
            run_prefix(k == 3 ? NULL : &plan, max_new, 1, &alone, &n_alone);
            assert_int_equal(n_alone, total);
            if (n_shared != (shares ? total - (PX_ROWS - 1) * PX_OPEN : total))
                fail_msg("%s: %ld prompt tokens run", names[k], n_shared);
            const double worst = compare_rows(&shared, &alone, PX_ROWS, gen, names[k]);
            printf("%-24s %s: %ld vs %ld prompt tokens, worst logits error %.2g\n", names[k], gen ? "generate" : "score",
                   n_shared, n_alone, worst);
        }
    }
}

static void test_errors(void **state) {
    up_error e = {0};
    up_steer_set *set;
    float *zero = calloc(d, sizeof *zero);
    up_steer bad[6] = {up_steer_add((up_hook_point){UP_HOOK_RESID_POST, 9}, dec_row(0), 1),
                       up_steer_add(RESID_POST_1, NULL, 1),
                       up_steer_ablate(zero),
                       up_steer_clamp(sae, 256, 1),
                       up_steer_add((up_hook_point){UP_HOOK_RESID_POST, UP_HOOK_ANY_LAYER}, dec_row(0), 1),
                       up_steer_add(RESID_POST_1, dec_row(0), 1)};
    bad[5].where = UP_STEER_POS_LIST, bad[5].n_positions = 2;
    const char *want[6] = {"not a point", "no vector", "norm 0", "latent 256", "not a point", "position list"};
    for (int i = 0; i < 6; i++) {
        up_steer_row rows[2] = {{NULL, 0}, {&bad[i], 1}};
        up_steer_plan plan = {rows, 2};
        assert_int_equal(up_steer_hooks(&set, model, &plan, NULL, &e), UP_ERR_INVALID);
        assert_null(set);
        if (!strstr(e.msg, want[i]) || !strstr(e.msg, "row 1 item 0")) fail_msg("case %d: %s", i, e.msg);
    }
    up_sae *dec_only;
    char path[512];
    assert_int_equal(up_sae_load(&dec_only, test_path(path, sizeof path, "fixtures/sae/saelens_jumprelu"), UP_SAE_DECODER, &e), UP_OK);
    up_steer c = up_steer_clamp(dec_only, 1, 1);
    up_steer_row row = {&c, 1};
    up_steer_plan plan = {&row, 1};
    assert_int_equal(up_steer_hooks(&set, model, &plan, NULL, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "encoder"));
    up_sae_free(dec_only);
    /* A two-row plan on a three-row batch: refused by run, and aborts a raw forward. */
    up_steer add = up_steer_add(RESID_POST_1, dec_row(0), 1);
    up_steer_row rows[2] = {{&add, 1}, {&add, 1}};
    plan = (up_steer_plan){rows, 2};
    int32_t ids[3][4];
    const int32_t *prompts[3] = {ids[0], ids[1], ids[2]};
    const int lens[3] = {4, 4, 4};
    for (int b = 0; b < 3; b++) fill(ids[b], 4, b);
    up_state *s;
    assert_int_equal(up_state_init(&s, model, 3, 4, &e), UP_OK);
    double score[3];
    up_steer_batch bt = {prompts, lens, 3, &plan, NULL, refusal_ids, 1, 0, NULL, 0, 0};
    up_steer_out out = {score, NULL, NULL, NULL, NULL};
    assert_int_equal(up_steer_run(s, &bt, &out, &e), UP_ERR_INVALID);
    assert_int_equal(up_steer_hooks(&set, model, &plan, NULL, &e), UP_OK);
    assert_int_equal(up_forward(s, &ids[0][0], NULL, NULL, 3, 4, up_steer_set_hooks(set), NULL, UP_LOGITS_NONE, &e),
                     UP_ERR_ABORTED);
    up_steer_set_free(set);
    up_state_free(s);
    /* Names round-trip. */
    up_steer_kind k;
    up_steer_where w;
    assert_int_equal(up_steer_kind_parse("clamp", &k), 0);
    assert_int_equal(k, UP_STEER_CLAMP);
    assert_int_equal(up_steer_where_parse("generated", &w), 0);
    assert_string_equal(up_steer_where_name(w), "generated");
    assert_int_equal(up_steer_kind_parse("bogus", &k), -1);
    free(zero);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alpha_zero_is_identity),
        cmocka_unit_test(test_mixed_batch_equals_cells_alone),
        cmocka_unit_test(test_cached_equals_uncached),
        cmocka_unit_test(test_shared_prompts_equal_unshared),
        cmocka_unit_test(test_common_prefix_shared),
        cmocka_unit_test(test_run_stops),
        cmocka_unit_test(test_ablation_removes_direction),
        cmocka_unit_test(test_clamp),
        cmocka_unit_test(test_position_modes),
        cmocka_unit_test(test_composition_order),
        cmocka_unit_test(test_gradient_hooks),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    free(dir_a), free(dir_b);
    return rc;
}
