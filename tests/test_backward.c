/* The activation backward against PyTorch autograd goldens and central finite differences.
 *
 * Golden tolerance 1e-4 relative to the gradient's scale, for the reasons given in
 * test_forward.c (fp32 on both sides, different summation orders).
 * Finite differences: R is evaluated in fp32 (relative noise ~1e-6 of |R|), so a central
 * difference with step eps has rounding error ~1e-6 |R| / eps plus truncation ~eps^2 |R'''|.
 * With eps = 1e-2 and directions of unit norm per slot both terms are ~1e-4..1e-3 of the
 * derivative; we require 1e-2 relative agreement (a wrong op is off by O(1)). */
#include "testutil.h"

#include <stdlib.h>

#include "engine/backward.h"
#include "engine/forward.h"
#include "engine/model.h"

static void load(const char *rel, up_model **m, up_safetensors **g) {
    char dir[512], path[600];
    test_path(dir, sizeof dir, rel);
    up_error e = {0};
    if (up_model_load(m, dir, &e)) fail_msg("%s", e.msg);
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    if (up_safetensors_open_file(g, path, &e)) fail_msg("%s", e.msg);
}

static void check_goldens(const char *rel) {
    up_model *m;
    up_safetensors *g;
    load(rel, &m, &g);
    const int d = m->cfg.d_model;
    double worst = 0;
    int checked = 0;
    for (int cs = 0; cs < 8; cs++) {
        char key[128];
        snprintf(key, sizeof key, "case%d.grad.v", cs);
        if (!golden_has(g, key)) continue;
        up_tensor ids = golden(g, "case%d.input_ids", cs), v = golden(g, "%s", key);
        const int T = (int)ids.shape[0];
        for (int L = 1; L < m->cfg.n_layers; L++) {
            for (int mode = 0; mode < 2; mode++) {
                const char *tag = mode ? "list" : "last";
                snprintf(key, sizeof key, "case%d.grad.L%d.%s.R", cs, L, tag);
                if (!golden_has(g, key)) continue;
                up_tensor Rref = golden(g, "%s", key);
                up_objective obj = {L, v.data, NULL, 0};
                if (mode) {
                    up_tensor p = golden(g, "case%d.grad.positions", cs);
                    obj.positions = p.data;
                    obj.n_positions = (int)p.shape[0];
                }
                for (int l = -1; l < L; l++) {
                    snprintf(key, sizeof key, "case%d.grad.L%d.%s.blocks.%d.hook_resid_post", cs, L, tag, l);
                    if (l < 0 || !golden_has(g, key)) continue;
                    up_tensor ref = golden(g, "%s", key);
                    float *grad = malloc((size_t)T * d * sizeof(float));
                    double R;
                    up_error e = {0};
                    if (up_gradient(m, ids.data, NULL, 1, T, l, &obj, NULL, NULL, grad, &R, &e)) fail_msg("%s", e.msg);
                    double rerr = fabs(R - ((const float *)Rref.data)[0]) / fmax(1.0, fabs(R));
                    if (rerr > 1e-4) fail_msg("%s %s: R %.6g vs %.6g", rel, key, R, ((const float *)Rref.data)[0]);
                    double err = rel_err(grad, ref.data, (size_t)T * d);
                    if (err > worst) worst = err;
                    if (!(err <= 1e-4)) fail_msg("%s %s: relative error %.3g", rel, key, err);
                    checked++;
                    free(grad);
                }
            }
        }
    }
    assert_true(checked >= 3);
    print_message("%s: %d golden gradients, worst relative error %.3g\n", rel, checked, worst);
    up_safetensors_close(g);
    up_model_free(m);
}

static void test_golden_f32(void **state) { check_goldens("golden/tiny_f32"); }
static void test_golden_bf16(void **state) { check_goldens("golden/tiny_bf16_sharded"); }

/* Adds eps * u at one hook point (u is (T, d), every slot). */
typedef struct perturb {
    const float *u;
    float eps;
} perturb;

static int perturb_hook(const up_hook_call *call, void *user) {
    perturb *p = user;
    size_t n = (size_t)call->n_rows * call->n_tok * call->d;
    for (size_t i = 0; i < n; i++) call->act[i] += p->eps * p->u[i % ((size_t)call->n_tok * call->d)];
    return UP_HOOK_CONTINUE;
}

typedef struct grab {
    float *dst;
    size_t n;
} grab;

static int grab_hook(const up_hook_call *call, void *user) {
    grab *gb = user;
    memcpy(gb->dst, call->act, gb->n * sizeof(float));
    return UP_HOOK_CONTINUE;
}

static double objective_at(const up_model *m, const int32_t *ids, int T, const up_objective *obj, up_hook_point at,
                           const float *u, float eps) {
    perturb p = {u, eps};
    up_hook h = {at, perturb_hook, &p};
    up_hooks hk = {&h, 1};
    float *grad = malloc((size_t)T * m->cfg.d_model * sizeof(float));
    double R;
    up_error e = {0};
    /* source layer -1: the cheapest valid request; only R matters here. */
    if (up_gradient(m, ids, NULL, 1, T, -1, obj, &hk, NULL, grad, &R, &e)) fail_msg("%s", e.msg);
    free(grad);
    return R;
}

static float *unit_rows(int T, int d, unsigned seed) {
    float *u = malloc((size_t)T * d * sizeof *u);
    for (int t = 0; t < T; t++) {
        double n = 0;
        for (int j = 0; j < d; j++) {
            seed = seed * 1664525u + 1013904223u;
            u[t * d + j] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
            n += (double)u[t * d + j] * u[t * d + j];
        }
        for (int j = 0; j < d; j++) u[t * d + j] /= (float)sqrt(n);
    }
    return u;
}

/* Directional derivative of R along u at `at` (central difference) vs <grad at `at`, u>. */
static void fd_check(const char *rel, const char *what, int case_id, int L, up_hook_point at, const int *positions,
                     int n_positions) {
    up_model *m;
    up_safetensors *g;
    load(rel, &m, &g);
    const int d = m->cfg.d_model;
    up_tensor ids = golden(g, "case%d.input_ids", case_id);
    const int T = (int)ids.shape[0];
    float *v = unit_rows(1, d, 99);
    up_objective obj = {L, v, positions, n_positions};
    float *grad = malloc((size_t)T * d * sizeof(float));
    grab gb = {grad, (size_t)T * d};
    up_hook gh = {at, grab_hook, &gb};
    up_hooks ghk = {&gh, 1};
    up_error e = {0};
    double R0;
    int source = at.kind == UP_HOOK_RESID_POST && at.layer < L ? at.layer : at.layer - 1;
    float *out = malloc((size_t)T * d * sizeof(float));
    if (up_gradient(m, ids.data, NULL, 1, T, source, &obj, NULL, &ghk, out, &R0, &e)) fail_msg("%s", e.msg);
    if (at.kind == UP_HOOK_RESID_POST && at.layer == source) memcpy(grad, out, (size_t)T * d * sizeof(float));
    for (int trial = 0; trial < 3; trial++) {
        float *u = unit_rows(T, d, 1234 + trial);
        const float eps = 1e-2f;
        double plus = objective_at(m, ids.data, T, &obj, at, u, eps);
        double minus = objective_at(m, ids.data, T, &obj, at, u, -eps);
        double fd = (plus - minus) / (2.0 * eps), an = 0, scale = 0;
        for (size_t i = 0; i < (size_t)T * d; i++) an += (double)grad[i] * u[i], scale += fabs(grad[i] * u[i]);
        double err = fabs(fd - an) / fmax(fmax(fabs(an), 1e-3), 1e-2 * scale);
        if (err > 1e-2) fail_msg("%s %s trial %d: finite difference %.6g vs gradient %.6g (rel %.3g)", rel, what, trial, fd, an, err);
        free(u);
    }
    free(grad), free(out), free(v);
    up_safetensors_close(g);
    up_model_free(m);
}

/* Sublayers one at a time (MLP: resid_mid -> resid_post; attention + MLP: resid_post of the
 * block below), then whole spans, at the last position and at a position list, on both
 * checkpoints (the f32 one has strong softcaps and a window shorter than the 20-token case). */
static void test_fd_sublayers(void **state) {
    const char *ck[2] = {"golden/tiny_f32", "golden/tiny_bf16_sharded"};
    for (int i = 0; i < 2; i++) {
        fd_check(ck[i], "mlp block 2", 2, 2, (up_hook_point){UP_HOOK_RESID_MID, 2}, NULL, 0);
        fd_check(ck[i], "attention+mlp block 2", 2, 2, (up_hook_point){UP_HOOK_RESID_POST, 1}, NULL, 0);
        fd_check(ck[i], "sliding attention block 0", 2, 1, (up_hook_point){UP_HOOK_RESID_MID, 0}, NULL, 0);
    }
}

static void test_fd_spans(void **state) {
    int positions[3] = {0, 9, -1};
    fd_check("golden/tiny_f32", "span 0..3 last", 2, 3, (up_hook_point){UP_HOOK_RESID_POST, 0}, NULL, 0);
    fd_check("golden/tiny_f32", "span 0..3 list", 2, 3, (up_hook_point){UP_HOOK_RESID_POST, 0}, positions, 3);
    fd_check("golden/tiny_bf16_sharded", "span 0..2 list", 2, 2, (up_hook_point){UP_HOOK_RESID_POST, 0}, positions, 3);
}

/* Left-padded rows give each row's gradient alone. */
static void test_batch_rows(void **state) {
    up_model *m;
    up_safetensors *g;
    load("golden/tiny_f32", &m, &g);
    const int d = m->cfg.d_model;
    up_tensor a = golden(g, "case1.input_ids"), b = golden(g, "case2.input_ids");
    const int Ta = (int)a.shape[0], Tb = (int)b.shape[0], T = Tb;
    int32_t *tok = calloc((size_t)2 * T, sizeof *tok);
    memcpy(tok + (T - Ta), a.data, Ta * sizeof(int32_t));
    memcpy(tok + T, b.data, Tb * sizeof(int32_t));
    int pad[2] = {T - Ta, 0};
    float *v = unit_rows(1, d, 5);
    up_objective obj = {3, v, NULL, 0};
    float *gb = malloc((size_t)2 * T * d * sizeof(float)), *ga = malloc((size_t)T * d * sizeof(float));
    double Rb[2], Ra;
    up_error e = {0};
    assert_int_equal(up_gradient(m, tok, pad, 2, T, 1, &obj, NULL, NULL, gb, Rb, &e), UP_OK);
    assert_int_equal(up_gradient(m, a.data, NULL, 1, Ta, 1, &obj, NULL, NULL, ga, &Ra, &e), UP_OK);
    assert_close(gb + (size_t)(T - Ta) * d, ga, (size_t)Ta * d, 1e-5, "padded row gradient");
    assert_true(fabs(Rb[0] - Ra) < 1e-4 * fmax(1, fabs(Ra)));
    for (size_t i = 0; i < (size_t)(T - Ta) * d; i++) assert_true(gb[i] == 0.0f);
    assert_int_equal(up_gradient(m, b.data, NULL, 1, Tb, 1, &obj, NULL, NULL, ga, &Ra, &e), UP_OK);
    assert_close(gb + (size_t)T * d, ga, (size_t)Tb * d, 1e-5, "unpadded row gradient");
    int bad_pos[1] = {40};
    up_objective bad = {3, v, bad_pos, 1};
    assert_int_equal(up_gradient(m, b.data, NULL, 1, Tb, 1, &bad, NULL, NULL, ga, &Ra, &e), UP_ERR_INVALID);
    assert_int_equal(up_gradient(m, b.data, NULL, 1, Tb, 3, &obj, NULL, NULL, ga, &Ra, &e), UP_ERR_INVALID);
    free(tok), free(v), free(gb), free(ga);
    up_safetensors_close(g);
    up_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_f32), cmocka_unit_test(test_golden_bf16), cmocka_unit_test(test_fd_sublayers),
        cmocka_unit_test(test_fd_spans),   cmocka_unit_test(test_batch_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
