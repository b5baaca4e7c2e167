/* Latent scores against their definitions, ranking, and the linearity the method relies on:
 * adding alpha * W_dec[k] at every position changes R by about alpha * sum_t RG[t,k].
 * Uses tiny_f32 with the SAE fixtures at blocks.1.hook_resid_post. */
#include "testutil.h"

#include <float.h>
#include <stdlib.h>

#include "method/attribution.h"
#include "engine/model.h"

static up_model *model;
static up_sae *sae;
static up_safetensors *gold;

static int setup(void **state) {
    char path[512];
    up_error e = {0};
    if (up_model_load(&model, test_path(path, sizeof path, "golden/tiny_f32"), &e)) return -1;
    if (up_sae_load(&sae, test_path(path, sizeof path, "fixtures/sae/saelens_jumprelu"), UP_SAE_ALL, &e)) return -1;
    if (up_safetensors_open_file(&gold, test_path(path, sizeof path, "golden/tiny_f32/golden.safetensors"), &e)) return -1;
    return 0;
}

static int teardown(void **state) {
    up_sae_free(sae);
    up_model_free(model);
    up_safetensors_close(gold);
    return 0;
}

static float *unit_direction(int d) {
    float *v = malloc(d * sizeof *v);
    double n = 0;
    for (int j = 0; j < d; j++) v[j] = sinf(1.7f * j + 0.3f), n += v[j] * v[j];
    for (int j = 0; j < d; j++) v[j] /= (float)sqrt(n);
    return v;
}

static void test_scores_match_definitions(void **state) {
    const int d = model->cfg.d_model, K = sae->d_sae;
    up_tensor ids = golden(gold, "case2.input_ids");
    const int T = (int)ids.shape[0];
    float *v = unit_direction(d);
    for (int kind = 0; kind <= UP_SCORE_ACTIVATION; kind++) {
        up_attribute_request req = {ids.data, T, 1, {3, v, NULL, 0}, (up_score_kind)kind, 0, NULL, NULL, 0};
        up_attribute_result r;
        up_error e = {0};
        if (up_attribute(model, sae, &req, &r, &e)) fail_msg("%s", e.msg);
        assert_int_equal(r.include[0], 0); /* BOS excluded by default */
        double gbar[64] = {0}, gn = 0;
        for (int t = 1; t < T; t++)
            for (int j = 0; j < d; j++) gbar[j] += r.grad[(size_t)t * d + j] / (T - 1);
        for (int j = 0; j < d; j++) gn += gbar[j] * gbar[j];
        for (int k = 0; k < K; k += 17) {
            /* s in double; mag is the same sum over |terms|, which bounds the rounding of the
             * core's fp32 dot products: each RG[t,k] = Σ_j w_j g_tj of d products carries an
             * error of at most γ_d Σ_j |w_j g_tj|, γ_d ≈ d·u with u = FLT_EPSILON / 2 (the standard
             * bound for a recursive or blocked dot product; the order of summation, and so the
             * error within the bound, changes with the optimisation level and the BLAS kernel).
             * The tolerance is that bound with a factor 2, plus 1e-5 relative: when the terms cancel
             * (a score far smaller than its terms) a fixed relative tolerance means nothing. */
            double s = 0, mag = 0, wn = 0;
            for (int t = 1; t < T; t++) {
                double rg = 0, rg_abs = 0;
                for (int j = 0; j < d; j++) {
                    const double p = (double)sae->W_dec[(size_t)k * d + j] * r.grad[(size_t)t * d + j];
                    rg += p, rg_abs += fabs(p);
                }
                assert_true(fabs(rg - r.rg[(size_t)t * K + k]) <= 1e-5 * fmax(1, fabs(rg)));
                const double weight = kind == UP_SCORE_ACTIVATION ? r.acts[(size_t)t * K + k] : 1.0;
                s += rg * weight;
                mag += rg_abs * fabs(weight);
            }
            s /= T - 1, mag /= T - 1;
            if (kind == UP_SCORE_COSINE) {
                for (int j = 0; j < d; j++) wn += (double)sae->W_dec[(size_t)k * d + j] * sae->W_dec[(size_t)k * d + j];
                s /= sqrt(wn) * sqrt(gn);
                mag /= sqrt(wn) * sqrt(gn);
            }
            const double tol = 1e-5 * fabs(s) + 2.0 * d * (FLT_EPSILON / 2) * mag;
            if (!(fabs(s - r.scores[k]) <= tol))
                fail_msg("%s score of latent %d: %.9g vs %.9g (tolerance %.3g)", up_score_kind_name(kind), k,
                         r.scores[k], s, tol);
        }
        up_attribute_result_free(&r);
    }
    free(v);
}

static void test_rank(void **state) {
    double s[6] = {0.5, -2, 3, 0.5, -2, 1};
    int out[6];
    assert_int_equal(up_attribution_rank(s, 6, 3, 1, out), 3);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 5);
    assert_int_equal(out[2], 0); /* tie 0.5: lower index first */
    assert_int_equal(up_attribution_rank(s, 6, 2, 0, out), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 4);
    assert_int_equal(up_attribution_rank(s, 6, 10, 1, out), 6);
}

typedef struct steer {
    const float *w;
    float alpha;
} steer;

static int steer_hook(const up_hook_call *call, void *user) {
    steer *s = user;
    for (int i = 0; i < call->n_rows * call->n_tok; i++)
        for (int j = 0; j < call->d; j++) call->act[(size_t)i * call->d + j] += s->alpha * s->w[j];
    return UP_HOOK_CONTINUE;
}

/* First-order prediction alpha * sum_t RG[t,k] vs the measured change of R, for the top and
 * bottom latents, at small alpha (central difference: error O(alpha^2)) and at a larger alpha
 * where it should still hold to ~10%. */
static void test_linearity(void **state) {
    const int d = model->cfg.d_model, K = sae->d_sae;
    up_tensor ids = golden(gold, "case2.input_ids");
    const int T = (int)ids.shape[0];
    float *v = unit_direction(d);
    up_attribute_request req = {ids.data, T, 1, {3, v, NULL, 0}, UP_SCORE_GRADIENT, 1, NULL, NULL, 0};
    up_attribute_result r;
    up_error e = {0};
    if (up_attribute(model, sae, &req, &r, &e)) fail_msg("%s", e.msg);
    int picks[4];
    up_attribution_rank(r.scores, K, 2, 1, picks);
    up_attribution_rank(r.scores, K, 2, 0, picks + 2);
    float *g = malloc((size_t)T * d * sizeof(float));
    for (int i = 0; i < 4; i++) {
        const int k = picks[i];
        double predicted_slope = 0;
        for (int t = 0; t < T; t++) predicted_slope += r.rg[(size_t)t * K + k];
        double Rs[2];
        const float alphas[2] = {0.01f, -0.01f};
        for (int a = 0; a < 2; a++) {
            steer st = {sae->W_dec + (size_t)k * d, alphas[a]};
            up_hook h = {{UP_HOOK_RESID_POST, 1}, steer_hook, &st};
            up_hooks hk = {&h, 1};
            if (up_gradient(model, ids.data, NULL, 1, T, 1, &req.objective, &hk, NULL, g, &Rs[a], &e)) fail_msg("%s", e.msg);
        }
        double measured = (Rs[0] - Rs[1]) / 0.02;
        if (!(fabs(measured - predicted_slope) <= 1e-2 * fmax(fabs(predicted_slope), 1e-2)))
            fail_msg("latent %d: dR/dalpha measured %.6g, predicted %.6g", k, measured, predicted_slope);
        assert_true(i < 2 ? predicted_slope > 0 : predicted_slope < 0);
    }
    free(g), free(v);
    up_attribute_result_free(&r);
}

/* score_positions: S_k averages RG over exactly the listed tokens (negative from the end);
 * one position gives RG at that token, two their mean; an index outside the prompt is an error. */
static void test_score_positions(void **state) {
    const int d = model->cfg.d_model, K = sae->d_sae;
    up_tensor ids = golden(gold, "case2.input_ids");
    const int T = (int)ids.shape[0];
    float *v = unit_direction(d);
    const int one[1] = {-1}, two[2] = {2, -2}, outside[1] = {T};
    up_attribute_request req = {ids.data, T, 1, {3, v, NULL, 0}, UP_SCORE_GRADIENT, 0, NULL, one, 1};
    up_attribute_result r;
    up_error e = {0};
    if (up_attribute(model, sae, &req, &r, &e)) fail_msg("%s", e.msg);
    for (int t = 0; t < T; t++) assert_int_equal(r.include[t], t == T - 1);
    for (int k = 0; k < K; k += 13) assert_true(fabs(r.scores[k] - r.rg[(size_t)(T - 1) * K + k]) <= 1e-6);
    up_attribute_result_free(&r);
    req.score_positions = two, req.n_score_positions = 2;
    if (up_attribute(model, sae, &req, &r, &e)) fail_msg("%s", e.msg);
    for (int k = 0; k < K; k += 13) {
        const double mean = 0.5 * ((double)r.rg[(size_t)2 * K + k] + r.rg[(size_t)(T - 2) * K + k]);
        assert_true(fabs(r.scores[k] - mean) <= 1e-6 * fmax(1, fabs(mean)));
    }
    up_attribute_result_free(&r);
    req.score_positions = outside, req.n_score_positions = 1;
    assert_int_equal(up_attribute(model, sae, &req, &r, &e), UP_ERR_INVALID);
    assert_non_null(strstr(e.msg, "outside"));
    free(v);
}

static void test_errors(void **state) {
    up_tensor ids = golden(gold, "case2.input_ids");
    float *v = unit_direction(model->cfg.d_model);
    up_attribute_request req = {ids.data, (int)ids.shape[0], 2, {3, v, NULL, 0}, UP_SCORE_GRADIENT, 0, NULL, NULL, 0};
    up_attribute_result r;
    up_error e = {0};
    assert_int_equal(up_attribute(model, sae, &req, &r, &e), UP_ERR_INVALID); /* SAE reads layer 1 */
    assert_non_null(strstr(e.msg, "layer 1"));
    up_sae *dec_only;
    char path[512];
    assert_int_equal(up_sae_load(&dec_only, test_path(path, sizeof path, "fixtures/sae/saelens_jumprelu"), UP_SAE_DECODER, &e), UP_OK);
    req.source_layer = 1;
    req.kind = UP_SCORE_ACTIVATION;
    assert_int_equal(up_attribute(model, dec_only, &req, &r, &e), UP_ERR_INVALID);
    up_sae_free(dec_only);
    free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scores_match_definitions),
        cmocka_unit_test(test_rank),
        cmocka_unit_test(test_linearity),
        cmocka_unit_test(test_score_positions),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
