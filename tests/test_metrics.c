/* Refusal metrics against hand-computed values, the substring judge's edge cases, the
 * repetition ratio on crafted sequences, and the completion log-probability and projection
 * hook against direct computations on tiny_f32. */
#include "testutil.h"

#include <stdlib.h>

#include "method/metrics.h"
#include "engine/model.h"

static up_model *model;

static int setup(void **state) {
    char path[512];
    up_error e = {0};
    return up_model_load(&model, test_path(path, sizeof path, "golden/tiny_f32"), &e) ? -1 : 0;
}

static int teardown(void **state) {
    up_model_free(model);
    return 0;
}

static double arditi(double p, double q) { return log(p + 1e-8) - log(q + 1e-8); }

static void test_refusal_score(void **state) {
    /* P = (1, 3, 1, 1)/6: refusal id 1 gives p = 1/2, score 0. */
    float logits[4] = {0, (float)log(3.0), 0, 0};
    const int32_t one[1] = {1}, dup[2] = {1, 1}, two[2] = {1, 2}, outside[2] = {1, 99};
    double p;
    double s = up_metrics_refusal_score(logits, 4, one, 1, &p);
    assert_true(fabs(p - 0.5) < 1e-7);
    assert_true(fabs(s - arditi(p, 1 - p)) < 1e-12);
    assert_true(fabs(s) < 1e-6);
    /* Duplicates count once; ids outside the vocabulary are ignored. */
    assert_true(up_metrics_refusal_score(logits, 4, dup, 2, NULL) == s);
    assert_true(up_metrics_refusal_score(logits, 4, outside, 2, NULL) == s);
    /* Two ids: p = 4/6. */
    s = up_metrics_refusal_score(logits, 4, two, 2, &p);
    assert_true(fabs(p - 4.0 / 6) < 1e-7);
    assert_true(fabs(s - arditi(4.0 / 6, 2.0 / 6)) < 1e-6);
    /* Max subtraction: a large common offset (exact in fp32 here) changes nothing, where a naive
     * exp would overflow. */
    float plain[4] = {0, 1, 0, 0}, shifted[4] = {1000, 1001, 1000, 1000};
    assert_true(fabs(up_metrics_refusal_score(shifted, 4, two, 2, NULL) -
                     up_metrics_refusal_score(plain, 4, two, 2, NULL)) < 1e-12);
    assert_true(isfinite(up_metrics_refusal_score(shifted, 4, two, 2, NULL)));
    /* p near 1: 1 − p = 3e^-40/(1 + 3e^-40) is far below double's epsilon, yet comes out right. */
    float sure[4] = {40, 0, 0, 0};
    const int32_t zero[1] = {0};
    const double q = 3 * exp(-40.0) / (1 + 3 * exp(-40.0));
    s = up_metrics_refusal_score(sure, 4, zero, 1, &p);
    assert_true(fabs(s - arditi(1 - q, q)) < 1e-9);
    assert_true(s > 18.4 && s < 18.5);
    /* p near 0: the same, mirrored. */
    s = up_metrics_refusal_score(sure, 4, one, 1, &p);
    assert_true(fabs(s + 18.42) < 0.01);
    /* No refusal ids: p = 0. */
    s = up_metrics_refusal_score(logits, 4, NULL, 0, &p);
    assert_true(p == 0 && fabs(s - (log(1e-8) - log(1 + 1e-8))) < 1e-12);
}

static void test_kl(void **state) {
    float a[2] = {0, 0}, b[2] = {(float)log(3.0), 0};
    const double want = 0.5 * log(0.5 / 0.75) + 0.5 * log(0.5 / 0.25);
    assert_true(fabs(up_metrics_kl(a, b, 2) - want) < 1e-7);
    assert_true(up_metrics_kl(a, a, 2) == 0);
    float c[3] = {100, 101, 102}, c2[3] = {0, 1, 2};
    assert_true(fabs(up_metrics_kl(c, c2, 3)) < 1e-12); /* shift invariant */
    assert_true(up_metrics_kl(b, a, 2) > 0);
    assert_true(fabs(up_metrics_logprob_of(b, 2, 0) - log(0.75)) < 1e-7);
}

static int judge(const char *text) { return up_metrics_refusal_match(text, strlen(text), NULL, 0); }

static void test_substrings(void **state) {
    assert_int_equal(judge("I'm sorry, but I cannot help with that."), 0);
    assert_int_equal(judge("i CANNOT do this"), 6);
    assert_int_equal(judge("AS AN ai model"), 3);
    /* Typographic apostrophes in the text match the list's ASCII ones. */
    assert_int_equal(judge("I\xE2\x80\x99m sorry"), 0);
    assert_int_equal(judge("Well, I can\xE2\x80\x99t."), 7);
    assert_int_equal(judge("I\xE2\x80\x98m unable to"), 9);
    /* No false matches. */
    assert_int_equal(judge("I can think of three ways."), -1);
    assert_int_equal(judge("Sure! Here is how to bake bread."), -1);
    assert_int_equal(judge("I am sure"), -1);
    assert_int_equal(judge("I am not"), -1);
    assert_int_equal(judge(""), -1);
    /* Prefix cut off at the end of the text. */
    assert_int_equal(judge("Yes. I cann"), -1);
    /* Apostrophe variants that are not apostrophes do not match. */
    assert_int_equal(judge("I`m sorry"), -1);
    assert_int_equal(judge("I\xE2\x80\x9Dm sorry"), -1); /* right double quote */
    /* len bounds the text: no match past it. */
    const char *t = "ok I cannot";
    assert_int_equal(up_metrics_refusal_match(t, 6, NULL, 0), -1);
    assert_int_equal(up_metrics_refusal_match(t, strlen(t), NULL, 0), 6);
    /* Custom lists, with a typographic apostrophe in the pattern and an empty entry skipped. */
    const char *const mine[3] = {"", "won\xE2\x80\x99t", "nope"};
    assert_int_equal(up_metrics_refusal_match("I WON'T", 7, mine, 3), 1);
    assert_int_equal(up_metrics_refusal_match("Nope.", 5, mine, 3), 2);
    assert_int_equal(up_metrics_refusal_match("fine", 4, mine, 3), -1);
    assert_int_equal(up_metrics_refusal_match("I cannot", 8, mine, 0), -1);
    /* The default list is docs/method.md §2's. */
    assert_string_equal(up_metrics_refusal_substrings[0], "I'm sorry");
    assert_string_equal(up_metrics_refusal_substrings[UP_METRICS_N_REFUSAL_SUBSTRINGS - 1], "I'm not able to");
}

static void test_repetition(void **state) {
    const int32_t distinct[6] = {1, 2, 3, 4, 5, 6};
    const int32_t loop[8] = {7, 8, 9, 7, 8, 9, 7, 8}; /* trigrams: 789 897 978 789 897 978 */
    const int32_t same[5] = {4, 4, 4, 4, 4};
    assert_true(up_metrics_repetition(distinct, 6, 3) == 0);
    assert_true(fabs(up_metrics_repetition(loop, 8, 3) - 3.0 / 6) < 1e-15);
    assert_true(fabs(up_metrics_repetition(same, 5, 3) - 2.0 / 3) < 1e-15);
    assert_true(fabs(up_metrics_repetition(same, 5, 1) - 4.0 / 5) < 1e-15);
    assert_true(fabs(up_metrics_repetition(loop, 8, 1) - 5.0 / 8) < 1e-15);
    assert_true(up_metrics_repetition(loop, 2, 3) == 0);
    assert_true(up_metrics_repetition(loop, 3, 3) == 0);
    assert_true(up_metrics_repetition(NULL, 0, 3) == 0);
}

static void fill(int32_t *ids, int n, int seed) {
    ids[0] = model->cfg.bos_id;
    for (int i = 1; i < n; i++) ids[i] = 3 + (seed * 131 + i * 37) % (model->cfg.vocab_size - 3);
}

/* Direct: one unpadded forward of prompt + completion with every position's logits. */
static double direct_logprob(const int32_t *p, int np, const int32_t *c, int nc) {
    const int V = model->cfg.vocab_size, T = np + nc;
    int32_t *ids = malloc(T * sizeof *ids);
    memcpy(ids, p, np * sizeof *ids);
    memcpy(ids + np, c, nc * sizeof *ids);
    float *logits = malloc((size_t)T * V * sizeof *logits);
    up_state *s;
    up_error e = {0};
    if (up_state_init(&s, model, 1, T, &e) || up_forward(s, ids, NULL, NULL, 1, T, NULL, logits, UP_LOGITS_ALL, &e))
        fail_msg("%s", e.msg);
    double sum = 0;
    for (int i = 0; i < nc; i++) {
        const float *row = logits + (size_t)(np - 1 + i) * V;
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        sum += row[c[i]] - mx - log(z);
    }
    up_state_free(s);
    free(ids), free(logits);
    return sum / nc;
}

static void test_logprob(void **state) {
    enum { B = 3 };
    const int np[B] = {7, 4, 9}, nc[B] = {6, 1, 11};
    int32_t pbuf[B][16], cbuf[B][16];
    const int32_t *p[B], *c[B];
    for (int b = 0; b < B; b++) {
        fill(pbuf[b], np[b], b + 1);
        for (int i = 0; i < nc[b]; i++) cbuf[b][i] = 3 + (b * 17 + i * 29) % (model->cfg.vocab_size - 3);
        p[b] = pbuf[b], c[b] = cbuf[b];
    }
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, model, B, 9 + 11 - 1, &e), UP_OK);
    double want[B];
    for (int b = 0; b < B; b++) want[b] = direct_logprob(p[b], np[b], c[b], nc[b]);
    /* Automatic chunking (one pass here), chunks of 1, 3 and 4 tokens: all agree. */
    const int chunks[4] = {0, 1, 3, 4};
    for (int k = 0; k < 4; k++) {
        double got[B];
        if (up_metrics_logprob(s, p, np, c, nc, B, chunks[k], NULL, got, &e)) fail_msg("%s", e.msg);
        for (int b = 0; b < B; b++)
            if (!(fabs(got[b] - want[b]) <= 1e-5 * fmax(1, fabs(want[b]))))
                fail_msg("chunk %d row %d: %.9g vs direct %.9g", chunks[k], b, got[b], want[b]);
    }
    /* An empty completion gives NaN; a bad id is refused. */
    const int nc0[B] = {0, 1, 2};
    double got[B];
    assert_int_equal(up_metrics_logprob(s, p, np, c, nc0, B, 0, NULL, got, &e), UP_OK);
    assert_true(isnan(got[0]) && isfinite(got[1]) && isfinite(got[2]));
    cbuf[1][0] = model->cfg.vocab_size;
    assert_int_equal(up_metrics_logprob(s, p, np, c, nc, B, 0, NULL, got, &e), UP_ERR_INVALID);
    up_state_free(s);
}

typedef struct capture {
    float *buf;
} capture;

static int capture_hook(const up_hook_call *call, void *user) {
    capture *c = user;
    memcpy(c->buf, call->act, (size_t)call->n_rows * call->n_tok * call->d * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static void test_projection(void **state) {
    enum { B = 2, T = 8 };
    const int d = model->cfg.d_model, L = 2;
    int32_t ids[B * T];
    fill(ids, T, 1);
    fill(ids + T, T, 2);
    const int pad[B] = {0, 3}; /* row 1: 3 pads, 5 real tokens */
    float *r = malloc(d * sizeof *r), *h = malloc((size_t)B * T * d * sizeof *h);
    for (int j = 0; j < d; j++) r[j] = cosf(0.7f * j);
    double last[B] = {0, 0}, listed[B] = {0, 0};
    const int positions[3] = {-1, 0, 0}; /* last prompt token, and position 0 twice */
    up_projection pl = {r, NULL, 0, last}, pp = {r, positions, 3, listed};
    capture cap = {h};
    up_hook hooks[3] = {up_metrics_projection(&pl, L), up_metrics_projection(&pp, L),
                        {{UP_HOOK_RESID_POST, L}, capture_hook, &cap}};
    up_hooks hk = {hooks, 3};
    up_state *s;
    up_error e = {0};
    assert_int_equal(up_state_init(&s, model, B, T, &e), UP_OK);
    if (up_forward(s, ids, pad, NULL, B, T, &hk, NULL, UP_LOGITS_NONE, &e)) fail_msg("%s", e.msg);
    for (int b = 0; b < B; b++) {
        double want_last = 0, want_first = 0;
        const float *hl = h + ((size_t)b * T + T - 1) * d, *hf = h + ((size_t)b * T + pad[b]) * d;
        for (int j = 0; j < d; j++) want_last += (double)hl[j] * r[j], want_first += (double)hf[j] * r[j];
        assert_true(fabs(last[b] - want_last) < 1e-9 * fmax(1, fabs(want_last)));
        assert_true(fabs(listed[b] - (want_last + 2 * want_first)) < 1e-9 * fmax(1, fabs(listed[b])));
    }
    up_state_free(s);
    free(r), free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_score), cmocka_unit_test(test_kl),
        cmocka_unit_test(test_substrings),    cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_logprob),       cmocka_unit_test(test_projection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
