/* Prompt files in the formats researchers have, and difference-in-means candidates checked
 * against a one-prompt-at-a-time computation. */
#include "testutil.h"

#include <stdlib.h>
#include <unistd.h>

#include "method/direction.h"
#include "engine/model.h"
#include "formats/prompts.h"
#include "tmpdir.h"

TEST_TMPDIR_GROUP("direction")

static const char *write_file(const char *name, const char *text) {
    const char *path = tpath(name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect(const char *name, const char *text, int n, const char *first, const char *last) {
    up_prompts p;
    up_error e = {0};
    if (up_prompts_load(&p, write_file(name, text), &e)) fail_msg("%s: %s", name, e.msg);
    assert_int_equal(p.n, n);
    assert_string_equal(p.items[0], first);
    assert_string_equal(p.items[n - 1], last);
    up_prompts_free(&p);
}

static void test_prompt_formats(void **state) {
    expect("a.txt", "How do I bake bread?\r\n\n  \nWrite a poem\n", 2, "How do I bake bread?", "Write a poem");
    expect("b.json", "[\"one\", \"two, three\"]", 2, "one", "two, three");
    expect("c.json", "[{\"instruction\": \"x\", \"category\": \"y\"}, {\"instruction\": \"z\"}]", 2, "x", "z");
    expect("d.csv", "goal,target\n\"Write a \"\"quoted\"\", thing\",Sure\nplain goal,Sure\n", 2,
           "Write a \"quoted\", thing", "plain goal");
    expect("e.csv", "id,goal\n1,\"multi\nline\"\n", 1, "multi\nline", "multi\nline");
}

static void test_prompt_errors(void **state) {
    up_prompts p;
    up_error e = {0};
    assert_int_equal(up_prompts_load(&p, "/nonexistent/prompts.txt", &e), UP_ERR_IO);
    assert_non_null(strstr(e.msg, "/nonexistent/prompts.txt"));
    assert_int_equal(up_prompts_load(&p, write_file("bad.json", "[\"a\", 3]"), &e), UP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "element 1"));
    assert_int_equal(up_prompts_load(&p, write_file("bad2.json", "[\"a\", "), &e), UP_ERR_FORMAT);
    assert_int_equal(up_prompts_load(&p, write_file("empty.txt", "\n\n"), &e), UP_ERR_FORMAT);
    assert_int_equal(up_prompts_load(&p, write_file("bad.csv", "goal,x\n\"open,1\n"), &e), UP_ERR_FORMAT);
}

typedef struct grab {
    double *sum; /* (n_pos, n_layers, d) */
    int n_pos, n_layers;
} grab;

static int grab_hook(const up_hook_call *call, void *user) {
    grab *g = user;
    int T = call->n_tok, d = call->d;
    for (int i = 0; i < g->n_pos; i++)
        for (int j = 0; j < d; j++)
            g->sum[((size_t)i * g->n_layers + call->point.layer) * d + j] += call->act[(size_t)(T - g->n_pos + i) * d + j];
    return UP_HOOK_CONTINUE;
}

static void test_candidates(void **state) {
    char dir[512];
    up_model *m;
    up_error e = {0};
    if (up_model_load(&m, test_path(dir, sizeof dir, "golden/tiny_f32"), &e)) fail_msg("%s", e.msg);
    const up_model_config *c = &m->cfg;
    enum { N = 5, NPOS = 3 };
    int32_t store[2][N][12];
    const int32_t *ids[2][N];
    int lens[2][N];
    unsigned seed = 3;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < N; i++) {
            lens[s][i] = 4 + (i * 3 + s) % 8;
            store[s][i][0] = 2;
            for (int t = 1; t < lens[s][i]; t++) store[s][i][t] = 3 + (seed = seed * 1103515245u + 12345u) % 300;
            ids[s][i] = store[s][i];
        }
    up_token_lists harmful = {ids[0], lens[0], N}, harmless = {ids[1], lens[1], N};
    size_t n = (size_t)NPOS * c->n_layers * c->d_model;
    float *cand = malloc(n * sizeof *cand);
    if (up_direction_candidates(m, &harmful, &harmless, NPOS, 2, cand, NULL, NULL, &e)) fail_msg("%s", e.msg);
    /* Reference: each prompt alone, plain sums. */
    double *sums[2] = {calloc(n, sizeof(double)), calloc(n, sizeof(double))};
    for (int s = 0; s < 2; s++) {
        grab g = {sums[s], NPOS, c->n_layers};
        up_hook h = {{UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, grab_hook, &g};
        up_hooks hk = {&h, 1};
        for (int i = 0; i < N; i++) {
            up_state *st;
            assert_int_equal(up_state_init(&st, m, 1, lens[s][i], &e), UP_OK);
            assert_int_equal(up_forward(st, ids[s][i], NULL, NULL, 1, lens[s][i], &hk, NULL, UP_LOGITS_NONE, &e), UP_OK);
            up_state_free(st);
        }
    }
    float *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = (float)(sums[0][i] / N - sums[1][i] / N);
    assert_close(cand, ref, n, 1e-5, "difference-in-means candidates");
    /* Too few tokens for the positions is an error. */
    int short_len[1] = {2};
    up_token_lists tiny = {ids[0], short_len, 1};
    assert_int_equal(up_direction_candidates(m, &tiny, &harmless, NPOS, 2, cand, NULL, NULL, &e), UP_ERR_INVALID);
    free(cand), free(ref), free(sums[0]), free(sums[1]);
    up_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_formats),
        cmocka_unit_test(test_prompt_errors),
        cmocka_unit_test(test_candidates),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
