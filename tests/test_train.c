/* The trainer: loss falls on a learnable task, runs are deterministic, a killed run resumes to the
 * same bits, and a saved checkpoint loads back to the same model. */
#include "testutil.h"

#include <stdlib.h>
#include <unistd.h>

#include "engine/forward.h"
#include "engine/model.h"
#include "train/train.h"

static up_model_config cfg(void) {
    up_model_config c = {0};
    c.family = UP_FAMILY_GEMMA2;
    c.d_model = 32, c.d_mlp = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8;
    c.vocab_size = 24, c.sliding_window = 4, c.rms_norm_eps = 1e-6f, c.rope_theta = 10000.0f;
    c.query_pre_attn_scalar = 8.0f, c.attn_softcap = 50.0f, c.final_softcap = 30.0f;
    c.activation = UP_ACT_GELU_TANH, c.tie_word_embeddings = 1, c.bos_id = 2, c.eos_id = 1, c.pad_id = 0;
    c.max_position_embeddings = 64;
    return c;
}

/* "BOS a b c | a b c": the response repeats the prompt, which needs attention to learn. */
enum { N_EX = 48 };
static int32_t store[N_EX][16];
static const int32_t *ids[N_EX];
static int lens[N_EX], from[N_EX];

static up_train_data make_data(void) {
    unsigned seed = 9;
    for (int i = 0; i < N_EX; i++) {
        int k = 2 + i % 3;
        store[i][0] = 2;
        for (int j = 0; j < k; j++) store[i][1 + j] = 4 + (seed = seed * 1103515245u + 12345u) % 18;
        store[i][1 + k] = 3; /* separator */
        for (int j = 0; j < k; j++) store[i][2 + k + j] = store[i][1 + j];
        lens[i] = 2 + 2 * k;
        from[i] = 2 + k;
        ids[i] = store[i];
    }
    return (up_train_data){ids, lens, from, N_EX};
}

static up_model *fresh(void) {
    up_model_config c = cfg();
    up_model *m;
    up_error e = {0};
    assert_int_equal(up_model_init_random(&m, &c, UP_DTYPE_F32, 3, &e), UP_OK);
    float *mats, *norms;
    size_t nm, nn;
    up_model_param_blocks(m, &mats, &nm, &norms, &nn, &e);
    memset(norms, 0, nn * sizeof(float)); /* (1 + w) norms start at identity */
    return m;
}

static up_train_opts opts(void) {
    up_train_opts o = up_train_opts_default();
    o.steps = 150, o.batch = 16, o.lr = 1e-2f, o.warmup_steps = 10, o.eval_every = 0;
    return o;
}

static void test_loss_falls_and_is_deterministic(void **state) {
    up_train_data d = make_data();
    up_model *a = fresh(), *b = fresh();
    up_train_opts o = opts();
    up_train_report ra, rb;
    up_error e = {0};
    double before;
    assert_int_equal(up_train_eval(a, &d, 16, &before, &e), UP_OK);
    if (up_train(a, &d, &o, &ra, &e)) fail_msg("%s", e.msg);
    assert_int_equal(up_train(b, &d, &o, &rb, &e), UP_OK);
    double after;
    assert_int_equal(up_train_eval(a, &d, 16, &after, &e), UP_OK);
    print_message("loss %.3f -> %.3f over %d steps\n", before, after, ra.steps_done);
    assert_true(after < 0.5 * before);
    float *ma, *mb, *na, *nb;
    size_t nm, nn;
    up_model_param_blocks(a, &ma, &nm, &na, &nn, &e);
    up_model_param_blocks(b, &mb, &nm, &nb, &nn, &e);
    assert_memory_equal(ma, mb, nm * sizeof(float));
    assert_memory_equal(na, nb, nn * sizeof(float));
    up_model_free(a), up_model_free(b);
}

static int stop_at(const up_train_progress *p, void *user) { return p->step == *(int *)user; }

static void test_resume_gives_the_same_bits(void **state) {
    up_train_data d = make_data();
    char path[] = "/tmp/up_train_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    remove(path);
    up_train_opts o = opts();
    o.steps = 40, o.checkpoint = path, o.checkpoint_every = 7;
    int stop_step = 17;
    o.progress = stop_at, o.user = &stop_step;
    up_model *a = fresh();
    up_train_report r;
    up_error e = {0};
    assert_int_equal(up_train(a, &d, &o, &r, &e), UP_OK);
    assert_int_equal(r.steps_done, 17);
    up_model_free(a);
    up_model *b = fresh(); /* a new process would start from scratch weights: the state file wins */
    o.progress = NULL;
    assert_int_equal(up_train(b, &d, &o, &r, &e), UP_OK);
    assert_int_equal(r.resumed_from, 17);
    assert_int_equal(r.steps_done, 40);
    up_model *c = fresh();
    up_train_opts plain = opts();
    plain.steps = 40;
    assert_int_equal(up_train(c, &d, &plain, &r, &e), UP_OK);
    float *mb, *mc, *nb, *nc;
    size_t nm, nn;
    up_model_param_blocks(b, &mb, &nm, &nb, &nn, &e);
    up_model_param_blocks(c, &mc, &nm, &nc, &nn, &e);
    assert_memory_equal(mb, mc, nm * sizeof(float));
    assert_memory_equal(nb, nc, nn * sizeof(float));
    remove(path);
    up_model_free(b), up_model_free(c);
}

static void test_save_and_load(void **state) {
    up_model *m = fresh();
    char dir[] = "/tmp/up_ckpt_XXXXXX";
    assert_non_null(mkdtemp(dir));
    up_error e = {0};
    if (up_model_save(m, dir, &e)) fail_msg("%s", e.msg);
    up_model *back;
    if (up_model_load(&back, dir, &e)) fail_msg("%s", e.msg);
    int32_t tok[5] = {2, 5, 9, 3, 7};
    float la[24], lb[24];
    up_state *s;
    assert_int_equal(up_state_init(&s, m, 1, 5, &e), UP_OK);
    assert_int_equal(up_forward(s, tok, NULL, NULL, 1, 5, NULL, la, UP_LOGITS_LAST, &e), UP_OK);
    up_state_free(s);
    assert_int_equal(up_state_init(&s, back, 1, 5, &e), UP_OK);
    assert_int_equal(up_forward(s, tok, NULL, NULL, 1, 5, NULL, lb, UP_LOGITS_LAST, &e), UP_OK);
    up_state_free(s);
    assert_memory_equal(la, lb, sizeof la);
    up_model_free(back), up_model_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Logits of the last position for a fixed prompt. */
static void last_logits(const up_model *m, float *out) {
    int32_t tok[5] = {2, 5, 9, 3, 7};
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, m, 1, 5, &e), UP_OK);
    assert_int_equal(up_forward(s, tok, NULL, NULL, 1, 5, NULL, out, UP_LOGITS_LAST, &e), UP_OK);
    up_state_free(s);
}

static void test_save_bf16_sharded(void **state) {
    up_model *m = fresh();
    char one[] = "/tmp/up_ckpt1_XXXXXX", three[] = "/tmp/up_ckpt3_XXXXXX";
    assert_non_null(mkdtemp(one));
    assert_non_null(mkdtemp(three));
    up_error e = {0};
    if (up_model_save_as(m, one, UP_DTYPE_BF16, 1, &e)) fail_msg("%s", e.msg);
    if (up_model_save_as(m, three, UP_DTYPE_BF16, 3, &e)) fail_msg("%s", e.msg);
    char path[256];
    for (int k = 1; k <= 3; k++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-00003.safetensors", three, k);
        assert_int_equal(access(path, R_OK), 0);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", three);
    assert_int_equal(access(path, R_OK), 0);
    up_model *a, *b;
    if (up_model_load(&a, one, &e)) fail_msg("%s", e.msg);
    if (up_model_load(&b, three, &e)) fail_msg("%s", e.msg);
    assert_int_equal(a->storage, UP_DTYPE_BF16);
    assert_int_equal(b->storage, UP_DTYPE_BF16);
    /* Every stored weight is the original rounded to bf16, and sharding changes no bit. */
    const float *w = m->embed.data;
    const uint16_t *wa = a->embed.data, *wb = b->embed.data;
    for (int i = 0; i < m->cfg.vocab_size * m->cfg.d_model; i++) {
        assert_int_equal(wa[i], up_f32_to_bf16(w[i]));
        assert_int_equal(wb[i], wa[i]);
    }
    float la[24], lb[24];
    last_logits(a, la);
    last_logits(b, lb);
    assert_memory_equal(la, lb, sizeof la);
    assert_int_equal(up_model_save_as(m, one, UP_DTYPE_F16, 1, &e), UP_ERR_INVALID);
    assert_int_equal(up_model_save_as(m, one, UP_DTYPE_BF16, 0, &e), UP_ERR_INVALID);
    up_model_free(a), up_model_free(b), up_model_free(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", one, three);
    assert_int_equal(system(cmd), 0);
}

static void test_bad_data(void **state) {
    up_model *m = fresh();
    int32_t bad_ids[3] = {2, 99, 4};
    const int32_t *p[1] = {bad_ids};
    int len[1] = {3}, fr[1] = {1};
    up_train_data d = {p, len, fr, 1};
    up_train_opts o = opts();
    up_train_report r;
    up_error e = {0};
    assert_int_equal(up_train(m, &d, &o, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    fr[0] = 3;
    bad_ids[1] = 5;
    assert_int_equal(up_train(m, &d, &o, &r, &e), UP_ERR_INVALID);
    up_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_falls_and_is_deterministic),
        cmocka_unit_test(test_resume_gives_the_same_bits),
        cmocka_unit_test(test_save_and_load),
        cmocka_unit_test(test_save_bf16_sharded),
        cmocka_unit_test(test_bad_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
