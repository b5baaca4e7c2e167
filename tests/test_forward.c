/* Forward pass against the PyTorch reference (tests/reference/gemma2_ref.py), and the cache and
 * batch equivalences the rest of the project relies on.
 *
 * Tolerance: 1e-4 relative to each tensor's scale. Both sides compute in fp32 but sum in different
 * orders (sgemm blocking, double-accumulated norms); the expected drift is a few ulps per op, ~1e-6
 * after 4 layers with softcaps, so 1e-4 keeps two orders of margin yet catches any semantic slip
 * (a wrong mask boundary or norm gives errors of order 1e-1). The measured worst case is printed. */
#include "testutil.h"

#include <stdlib.h>
#include <unistd.h>

#include "engine/batch.h"
#include "engine/forward.h"
#include "engine/hooks.h"
#include "engine/generate.h"
#include "engine/model.h"

static const char *const checkpoints[] = {"golden/tiny_f32", "golden/tiny_bf16_sharded"};
#define N_CKPT 2
#define REF_TOL 1e-4

typedef struct capture {
    float *buf;
    size_t n;
} capture;

static int capture_hook(const up_hook_call *call, void *user) {
    capture *c = user;
    memcpy(c->buf, call->act, c->n * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static void load(int which, up_model **m, up_safetensors **g) {
    char dir[512], path[600];
    test_path(dir, sizeof dir, checkpoints[which]);
    up_error e = {0};
    if (up_model_load(m, dir, &e)) fail_msg("%s", e.msg);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    if (up_safetensors_open_file(g, path, &e)) fail_msg("%s", e.msg);
}

static void test_matches_reference(void **state) {
    for (int which = 0; which < N_CKPT; which++) {
        up_model *m;
        up_safetensors *g;
        load(which, &m, &g);
        const up_model_config *c = &m->cfg;
        double worst = 0;
        for (int cs = 0; cs < 8; cs++) {
            char key[64];
            snprintf(key, sizeof key, "case%d.input_ids", cs);
            if (!golden_has(g, key)) break;
            up_tensor ids = golden(g, "%s", key);
            int T = (int)ids.shape[0];
            int n_points = up_hook_point_count(c->n_layers);
            up_hook *hooks = calloc(n_points, sizeof *hooks);
            capture *caps = calloc(n_points, sizeof *caps);
            for (int i = 0; i < n_points; i++) {
                caps[i] = (capture){malloc((size_t)T * c->d_model * sizeof(float)), (size_t)T * c->d_model};
                hooks[i] = (up_hook){up_hook_point_at(c->n_layers, i), capture_hook, &caps[i]};
            }
            up_hooks hk = {hooks, n_points};
            float *logits = malloc((size_t)T * c->vocab_size * sizeof(float));
            up_state *s;
            up_error e = {0};
            assert_int_equal(up_state_init(&s, m, 1, T + 16, &e), UP_OK);
            if (up_forward(s, ids.data, NULL, NULL, 1, T, &hk, logits, UP_LOGITS_ALL, &e)) fail_msg("%s", e.msg);
            for (int i = 0; i < n_points; i++) {
                char name[64];
                up_hook_point_name(hooks[i].point, name, sizeof name);
                up_tensor ref = golden(g, "case%d.%s", cs, name);
                assert_int_equal(up_tensor_numel(&ref), (int64_t)caps[i].n);
                double err = rel_err(caps[i].buf, ref.data, caps[i].n);
                if (err > worst) worst = err;
                if (!(err <= REF_TOL)) fail_msg("%s case %d %s: relative error %.3g", checkpoints[which], cs, name, err);
            }
            up_tensor ref_logits = golden(g, "case%d.logits", cs);
            double err = rel_err(logits, ref_logits.data, (size_t)T * c->vocab_size);
            if (err > worst) worst = err;
            if (!(err <= REF_TOL)) fail_msg("%s case %d logits: relative error %.3g", checkpoints[which], cs, err);

            /* Greedy continuation with the KV cache equals the reference's full recomputation. */
            up_tensor ref_greedy = golden(g, "case%d.greedy", cs);
            int n_new = (int)ref_greedy.shape[0], n_out = 0;
            int32_t *out = malloc(n_new * sizeof *out);
            const int32_t *prompts[1] = {ids.data};
            up_generate_opts o = {.max_new_tokens = n_new};
            if (up_generate(s, prompts, &T, 1, &o, out, &n_out, &e)) fail_msg("%s", e.msg);
            assert_int_equal(n_out, n_new);
            assert_memory_equal(out, ref_greedy.data, n_new * sizeof *out);
            free(out);
            up_state_free(s);
            free(logits);
            for (int i = 0; i < n_points; i++) free(caps[i].buf);
            free(caps);
            free(hooks);
        }
        print_message("%s: worst relative error vs PyTorch %.3g (tolerance %.0e)\n", checkpoints[which], worst, REF_TOL);
        up_safetensors_close(g);
        up_model_free(m);
    }
}

/* A steering-like hook: adds alpha * v at every real slot of its point. */
typedef struct add_vec {
    const float *v;
    float alpha;
} add_vec;

static int add_hook(const up_hook_call *call, void *user) {
    add_vec *a = user;
    for (int i = 0; i < call->n_rows * call->n_tok; i++) {
        if (call->pos[i] < 0) continue;
        for (int j = 0; j < call->d; j++) call->act[(size_t)i * call->d + j] += a->alpha * a->v[j];
    }
    return UP_HOOK_CONTINUE;
}

static float *random_vec(int n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return v;
}

/* Decoding token by token through the cache gives the logits of one full pass, with a hook on. */
static void test_cache_equals_recompute(void **state) {
    for (int which = 0; which < N_CKPT; which++) {
        up_model *m;
        up_safetensors *g;
        load(which, &m, &g);
        const up_model_config *c = &m->cfg;
        up_tensor ids = golden(g, "case2.input_ids");
        const int T = (int)ids.shape[0], V = c->vocab_size, prefix = 3;
        float *v = random_vec(c->d_model, 7);
        add_vec av = {v, 0.8f};
        up_hook hook = {{UP_HOOK_RESID_POST, 1}, add_hook, &av};
        up_hooks hk = {&hook, 1};
        float *full = malloc((size_t)T * V * sizeof(float)), *step = malloc((size_t)V * sizeof(float));
        up_state *s;
        up_error e = {0};
        assert_int_equal(up_state_init(&s, m, 1, T, &e), UP_OK);
        assert_int_equal(up_forward(s, ids.data, NULL, NULL, 1, T, &hk, full, UP_LOGITS_ALL, &e), UP_OK);
        up_state_reset(s);
        const int32_t *tok = ids.data;
        assert_int_equal(up_forward(s, tok, NULL, NULL, 1, prefix, &hk, step, UP_LOGITS_LAST, &e), UP_OK);
        assert_close(step, full + (size_t)(prefix - 1) * V, V, 1e-5, "prefix logits");
        for (int t = prefix; t < T; t++) {
            assert_int_equal(up_forward(s, tok + t, NULL, NULL, 1, 1, &hk, step, UP_LOGITS_LAST, &e), UP_OK);
            char what[64];
            snprintf(what, sizeof what, "%s cached step %d", checkpoints[which], t);
            assert_close(step, full + (size_t)t * V, V, 1e-5, what);
        }
        /* The hook matters: without it the logits differ. */
        up_state_reset(s);
        assert_int_equal(up_forward(s, tok, NULL, NULL, 1, T, NULL, full, UP_LOGITS_ALL, &e), UP_OK);
        assert_true(rel_err(step, full + (size_t)(T - 1) * V, V) > 1e-3);
        free(full), free(step), free(v);
        up_state_free(s);
        up_safetensors_close(g);
        up_model_free(m);
    }
}

/* Rows of different lengths, left-padded into one batch, equal the rows run alone, for logits and
 * for greedy generation, with a hook adding a vector at every position. */
static void test_batch_equals_rows(void **state) {
    for (int which = 0; which < N_CKPT; which++) {
        up_model *m;
        up_safetensors *g;
        load(which, &m, &g);
        const up_model_config *c = &m->cfg;
        const int V = c->vocab_size, B = 3, n_new = 10;
        up_tensor t[3] = {golden(g, "case1.input_ids"), golden(g, "case2.input_ids"), golden(g, "case0.input_ids")};
        const int32_t *prompts[3];
        int lens[3];
        for (int b = 0; b < B; b++) prompts[b] = t[b].data, lens[b] = (int)t[b].shape[0];
        float *v = random_vec(c->d_model, 11);
        add_vec av = {v, 0.5f};
        up_hook hook = {{UP_HOOK_RESID_PRE, 2}, add_hook, &av};
        up_hooks hk = {&hook, 1};
        up_generate_opts o = {.max_new_tokens = n_new, .hooks = &hk};
        int32_t batch_out[3 * 10], alone_out[10];
        int batch_n[3], alone_n;
        up_state *s;
        up_error e = {0};
        assert_int_equal(up_state_init(&s, m, B, 20 + n_new, &e), UP_OK);
        if (up_generate(s, prompts, lens, B, &o, batch_out, batch_n, &e)) fail_msg("%s", e.msg);
        for (int b = 0; b < B; b++) {
            if (up_generate(s, prompts + b, lens + b, 1, &o, alone_out, &alone_n, &e)) fail_msg("%s", e.msg);
            assert_int_equal(alone_n, batch_n[b]);
            assert_memory_equal(alone_out, batch_out + b * n_new, alone_n * sizeof(int32_t));
        }
        /* Last-position logits of a padded batch prefill vs each row alone. */
        int T = 0;
        for (int b = 0; b < B; b++) T = lens[b] > T ? lens[b] : T;
        int32_t *tok = calloc((size_t)B * T, sizeof *tok);
        int pad[3];
        for (int b = 0; b < B; b++) {
            pad[b] = T - lens[b];
            memcpy(tok + (size_t)b * T + pad[b], prompts[b], lens[b] * sizeof(int32_t));
        }
        float *bl = malloc((size_t)B * V * sizeof(float)), *al = malloc((size_t)V * sizeof(float));
        up_state_reset(s);
        assert_int_equal(up_forward(s, tok, pad, NULL, B, T, &hk, bl, UP_LOGITS_LAST, &e), UP_OK);
        for (int b = 0; b < B; b++) {
            up_state_reset(s);
            assert_int_equal(up_forward(s, prompts[b], NULL, NULL, 1, lens[b], &hk, al, UP_LOGITS_LAST, &e), UP_OK);
            assert_close(bl + (size_t)b * V, al, V, 1e-5, "batched row logits");
        }
        free(tok), free(bl), free(al), free(v);
        up_state_free(s);
        up_safetensors_close(g);
        up_model_free(m);
    }
}

static int stop_hook(const up_hook_call *call, void *user) {
    (*(int *)user)++;
    return UP_HOOK_STOP;
}

static int count_hook(const up_hook_call *call, void *user) {
    (*(int *)user)++;
    return UP_HOOK_CONTINUE;
}

static int abort_hook(const up_hook_call *call, void *user) { return -1; }

/* A hook can end the pass early (nothing above runs) or abort it with an error. */
static void test_hook_stop_and_abort(void **state) {
    up_model *m;
    up_safetensors *g;
    load(0, &m, &g);
    up_tensor ids = golden(g, "case1.input_ids");
    int T = (int)ids.shape[0], stops = 0, later = 0;
    up_hook hooks[2] = {{{UP_HOOK_RESID_POST, 1}, stop_hook, &stops}, {{UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, count_hook, &later}};
    up_hooks hk = {hooks, 2};
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, m, 1, T, &e), UP_OK);
    assert_int_equal(up_forward(s, ids.data, NULL, NULL, 1, T, &hk, NULL, UP_LOGITS_NONE, &e), UP_OK);
    assert_int_equal(stops, 1);
    assert_int_equal(later, 2); /* resid_pre of layers 0 and 1 only */
    assert_true(up_state_stopped(s));
    assert_int_equal(up_forward(s, ids.data, NULL, NULL, 1, 1, NULL, NULL, UP_LOGITS_NONE, &e), UP_ERR_INVALID);
    up_state_reset(s);
    up_hook ab = {{UP_HOOK_MLP_OUT, 0}, abort_hook, NULL};
    up_hooks hab = {&ab, 1};
    assert_int_equal(up_forward(s, ids.data, NULL, NULL, 1, T, &hab, NULL, UP_LOGITS_NONE, &e), UP_ERR_ABORTED);
    up_state_free(s);
    up_safetensors_close(g);
    up_model_free(m);
}

/* engine/batch.h: sequences (all, or those a row list picks) right-aligned behind pad ids. */
static void test_batch_left_pad(void **state) {
    const int32_t a[] = {7, 8}, b[] = {4, 5, 6, 9}, c[] = {3};
    const int32_t *const seqs[3] = {a, b, c};
    const int lens[3] = {2, 4, 1}, pick[2] = {2, 0};
    int32_t tok[12];
    int pad[3];
    assert_int_equal(up_batch_left_pad(seqs, lens, NULL, 3, 0, tok, pad), 4);
    const int32_t want_all[12] = {0, 0, 7, 8, 4, 5, 6, 9, 0, 0, 0, 3};
    assert_memory_equal(tok, want_all, sizeof want_all);
    assert_int_equal(pad[0], 2), assert_int_equal(pad[1], 0), assert_int_equal(pad[2], 3);
    assert_int_equal(up_batch_left_pad(seqs, lens, pick, 2, -1, tok, pad), 2);
    const int32_t want_pick[4] = {-1, 3, 7, 8};
    assert_memory_equal(tok, want_pick, sizeof want_pick);
    assert_int_equal(pad[0], 1), assert_int_equal(pad[1], 0);
}

static int prompt_len_hook(const up_hook_call *call, void *user) {
    int *out = user;
    for (int b = 0; b < call->n_rows; b++) out[b] = up_hook_prompt_len(call, b);
    return UP_HOOK_CONTINUE;
}

/* engine/hooks.h: a capture copies what a hand-written hook sees, a stop ends the pass there,
 * a capture too small for the chunk aborts, and a prefill's prompt length is its real tokens. */
static void test_stock_hooks(void **state) {
    up_model *m;
    up_safetensors *g;
    load(0, &m, &g);
    const int d = m->cfg.d_model;
    up_tensor t0 = golden(g, "case0.input_ids"), t1 = golden(g, "case1.input_ids");
    const int32_t *const seqs[2] = {t0.data, t1.data};
    const int lens[2] = {(int)t0.shape[0], (int)t1.shape[0]}, T_max = lens[0] > lens[1] ? lens[0] : lens[1];
    int32_t *tok = malloc((size_t)2 * T_max * sizeof *tok);
    int pad[2];
    const int T = up_batch_left_pad(seqs, lens, NULL, 2, m->cfg.pad_id, tok, pad);
    const size_t n = (size_t)2 * T * d;
    float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    const up_hook_point at = {UP_HOOK_RESID_POST, 1};
    capture hand = {want, n};
    up_capture cap = {got, n};
    int plen[2] = {0, 0}, later = 0;
    up_hook hooks[4] = {{at, capture_hook, &hand}, up_hook_capture(at, &cap), {at, prompt_len_hook, plen}, up_hook_stop(at)};
    up_hook after = {{UP_HOOK_RESID_PRE, 2}, count_hook, &later};
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, m, 2, T, &e), UP_OK);
    up_hooks hk = {hooks, 4};
    assert_int_equal(up_forward(s, tok, pad, NULL, 2, T, &hk, NULL, UP_LOGITS_NONE, &e), UP_OK);
    assert_true(up_state_stopped(s));
    assert_memory_equal(got, want, n * sizeof(float));
    assert_int_equal(plen[0], lens[0]), assert_int_equal(plen[1], lens[1]);
    up_hook small_then_after[2] = {up_hook_capture(at, &(up_capture){got, n - 1}), after};
    up_hooks hs = {small_then_after, 2};
    up_state_reset(s);
    assert_int_equal(up_forward(s, tok, pad, NULL, 2, T, &hs, NULL, UP_LOGITS_NONE, &e), UP_ERR_ABORTED);
    assert_int_equal(later, 0);
    up_state_free(s);
    free(tok), free(want), free(got);
    up_safetensors_close(g);
    up_model_free(m);
}

static void test_bad_inputs(void **state) {
    up_model *m;
    up_safetensors *g;
    load(0, &m, &g);
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, m, 1, 4, &e), UP_OK);
    int32_t bad[2] = {2, 1 << 20};
    assert_int_equal(up_forward(s, bad, NULL, NULL, 1, 2, NULL, NULL, UP_LOGITS_NONE, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    int32_t many[5] = {2, 3, 4, 5, 6};
    assert_int_equal(up_forward(s, many, NULL, NULL, 1, 5, NULL, NULL, UP_LOGITS_NONE, &e), UP_ERR_INVALID);
    up_state_free(s);
    up_safetensors_close(g);
    up_model_free(m);
}

static void test_hook_names(void **state) {
    up_hook_point p;
    char buf[64];
    for (int i = 0; i < up_hook_point_count(3); i++) {
        up_hook_point q = up_hook_point_at(3, i);
        up_hook_point_name(q, buf, sizeof buf);
        assert_int_equal(up_hook_point_parse(buf, 3, &p), 0);
        assert_int_equal(p.kind, q.kind);
        assert_int_equal(p.layer, q.layer);
        assert_int_equal(up_hook_point_index(q, 3), i);
    }
    assert_int_equal(up_hook_point_parse("blocks.3.hook_resid_post", 3, &p), -1);
    assert_int_equal(up_hook_point_parse("blocks.x.hook_resid_post", 3, &p), -1);
    assert_int_equal(up_hook_point_parse("blocks.1.hook_nothing", 3, &p), -1);
}

static void test_config_errors(void **state) {
    char dir[] = "/tmp/up_cfg_XXXXXX", path[600];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    up_model_config cfg;
    up_error e = {0};
    FILE *f = fopen(path, "w");
    fputs("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8}", f);
    fclose(f);
    assert_int_equal(up_model_config_load(&cfg, path, &e), UP_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "LlamaForCausalLM"));
    f = fopen(path, "w");
    fputs("{\"architectures\": [\"Gemma2ForCausalLM\"], \"hidden_size\": 8}", f);
    fclose(f);
    assert_int_equal(up_model_config_load(&cfg, path, &e), UP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "intermediate_size"));
    f = fopen(path, "w");
    fputs("{\"architectures\": [\"Gemma2ForCausalLM\"", f);
    fclose(f);
    assert_int_equal(up_model_config_load(&cfg, path, &e), UP_ERR_FORMAT);
    remove(path);
    up_model *m = NULL;
    assert_int_not_equal(up_model_load(&m, dir, &e), UP_OK);
    assert_null(m);

    /* An absurd num_hidden_layers is refused against the checkpoint, before anything is
     * allocated by it (it was a calloc of hundreds of GB; found by tests/fuzz/fuzz_model). */
    char src[600], text[4096], weights[600];
    snprintf(src, sizeof src, "%s/golden/tiny_f32/config.json", UP_TEST_DIR);
    f = fopen(src, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *layers = strstr(text, "\"num_hidden_layers\": 4,");
    assert_non_null(layers);
    f = fopen(path, "w");
    fprintf(f, "%.*s\"num_hidden_layers\": 2000000000,%s", (int)(layers - text), text,
            layers + strlen("\"num_hidden_layers\": 4,"));
    fclose(f);
    snprintf(src, sizeof src, "%s/golden/tiny_f32/model.safetensors", UP_TEST_DIR);
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    assert_int_equal(symlink(src, weights), 0);
    assert_int_equal(up_model_load(&m, dir, &e), UP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "num_hidden_layers 2000000000"));
    assert_null(m);
    remove(weights);
    remove(path);
    rmdir(dir);
}

/* A rerun from a snapshot (forward.h) gives the bits of an uninterrupted steered pass: two
 * left-padded rows run once unsteered with captures at two residual points, then steered from
 * each point in turn (the second rerun after the first overwrote the cache above its point),
 * and once more from the first; a decode step after a rerun matches one after the plain pass. */
static void test_rerun_from_snapshot(void **state) {
    (void)state;
    up_model *m;
    up_safetensors *g;
    load(1, &m, &g); /* bf16, sharded */
    const up_model_config *c = &m->cfg;
    const int d = c->d_model, V = c->vocab_size, B = 2, T = 5;
    const int32_t tok[2 * 5] = {0, 0, 5, 9, 14, 3, 7, 11, 2, 8};
    const int pad[2] = {2, 0}, lens[2] = {3, 5};
    const up_hook_point points[2] = {{UP_HOOK_RESID_MID, 1}, {UP_HOOK_RESID_PRE, 0}};
    float *x[2], *want = malloc((size_t)B * V * sizeof(float)), *got = malloc((size_t)B * V * sizeof(float));
    up_capture cap[2];
    up_hook caps[2];
    for (int i = 0; i < 2; i++) {
        x[i] = malloc((size_t)B * T * d * sizeof(float));
        cap[i] = (up_capture){x[i], (size_t)B * T * d};
        caps[i] = up_hook_capture(points[i], &cap[i]);
    }
    up_hooks cap_hooks = {caps, 2};
    up_state *s;
    up_error e = {0};
    up_state_snapshot *snap;
    assert_int_equal(up_state_init(&s, m, B, T + 1, &e), UP_OK);
    assert_int_equal(up_state_snapshot_take(s, &snap, &e), UP_ERR_INVALID); /* nothing run yet */
    assert_int_equal(up_forward(s, tok, pad, lens, B, T, &cap_hooks, NULL, UP_LOGITS_NONE, &e), UP_OK);
    assert_int_equal(up_state_snapshot_take(s, &snap, &e), UP_OK);
    float *v = random_vec(d, 11);
    add_vec av = {v, 2.0f};
    const int order[3] = {0, 1, 0};
    float *wants = malloc((size_t)3 * B * V * sizeof(float));
    for (int k = 0; k < 3; k++) {
        up_hook hook = {points[order[k]], add_hook, &av};
        up_hooks hk = {&hook, 1};
        up_state_reset(s);
        assert_int_equal(up_forward(s, tok, pad, lens, B, T, &hk, wants + (size_t)k * B * V, UP_LOGITS_LAST, &e), UP_OK);
    }
    /* Reruns back to back: each must restore what the one before overwrote (the second, from
     * layer 0, steers every layer's keys and values; the third needs layer 0's unsteered). */
    up_state_reset(s);
    for (int k = 0; k < 3; k++) {
        const up_hook_point p = points[order[k]];
        up_hook hook = {p, add_hook, &av};
        up_hooks hk = {&hook, 1};
        assert_int_equal(up_state_rerun_from(s, snap, p, x[order[k]], &e), UP_OK);
        assert_int_equal(up_forward_resume(s, lens, &hk, got, UP_LOGITS_LAST, &e), UP_OK);
        assert_memory_equal(wants + (size_t)k * B * V, got, (size_t)B * V * sizeof(float));
        if (k == 2) {
            /* The cache a rerun leaves decodes on as the plain pass's does. */
            const int32_t next[2] = {4, 6};
            assert_int_equal(up_forward(s, next, NULL, lens, B, 1, &hk, got, UP_LOGITS_LAST, &e), UP_OK);
            up_state_reset(s);
            assert_int_equal(up_forward(s, tok, pad, lens, B, T, &hk, want, UP_LOGITS_LAST, &e), UP_OK);
            assert_int_equal(up_forward(s, next, NULL, lens, B, 1, &hk, want, UP_LOGITS_LAST, &e), UP_OK);
            assert_memory_equal(want, got, (size_t)B * V * sizeof(float));
        }
    }
    free(wants);
    /* The steering matters, and a non-residual point is refused. */
    up_state_reset(s);
    assert_int_equal(up_forward(s, tok, pad, lens, B, T, NULL, got, UP_LOGITS_LAST, &e), UP_OK);
    assert_true(rel_err(got, want, (size_t)B * V) > 1e-4);
    assert_int_equal(up_state_rerun_from(s, snap, (up_hook_point){UP_HOOK_MLP_OUT, 0}, x[0], &e), UP_ERR_INVALID);
    up_state_snapshot_free(snap);
    up_state_free(s);
    free(v), free(want), free(got), free(x[0]), free(x[1]);
    up_safetensors_close(g);
    up_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference), cmocka_unit_test(test_cache_equals_recompute),
        cmocka_unit_test(test_batch_equals_rows), cmocka_unit_test(test_hook_stop_and_abort),
        cmocka_unit_test(test_bad_inputs),        cmocka_unit_test(test_hook_names),
        cmocka_unit_test(test_config_errors),     cmocka_unit_test(test_batch_left_pad),
        cmocka_unit_test(test_stock_hooks),       cmocka_unit_test(test_rerun_from_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
