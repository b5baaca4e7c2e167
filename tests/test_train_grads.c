/* Weight gradients of the next-token loss, checked by central finite differences along a random
 * direction for every parameter tensor of a small in-memory Gemma-2 (GQA, sliding window shorter
 * than the rows, both softcaps, non-zero norm weights, left padding).
 * The loss is a mean over ~40 targets computed by an fp32 forward: its noise is ~1e-7 relative.
 * With eps = 1e-2 along a unit direction, rounding contributes ~1e-5 and truncation ~eps^2 * |L'''|
 * ~1e-4 of a directional derivative of order 1e-2..1; we require 2e-2 relative (a missing or wrong
 * term is off by O(1)). */
#include "testutil.h"

#include <stdlib.h>

#include "engine/backward.h"
#include "engine/model.h"

static up_model_config small_config(void) {
    up_model_config c = {0};
    c.family = UP_FAMILY_GEMMA2;
    c.d_model = 16, c.d_mlp = 24, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8;
    c.vocab_size = 40, c.sliding_window = 3, c.rms_norm_eps = 1e-6f, c.rope_theta = 10000.0f;
    c.query_pre_attn_scalar = 6.0f, c.attn_softcap = 2.0f, c.final_softcap = 3.0f;
    c.activation = UP_ACT_GELU_TANH, c.tie_word_embeddings = 1, c.bos_id = 2, c.eos_id = 1, c.pad_id = 0;
    c.max_position_embeddings = 64;
    return c;
}

enum { B = 3, T = 9 };
static int32_t tokens[B * T], targets[B * T];
static int pads[B] = {0, 2, 4};

static double loss_of(const up_model *m, up_param_grads *g) {
    double loss;
    up_error e = {0};
    if (up_loss_gradients(m, tokens, targets, pads, B, T, g, &loss, NULL, &e)) fail_msg("%s", e.msg);
    return loss;
}

static void test_weight_gradients(void **state) {
    up_model_config c = small_config();
    up_model *m;
    up_error e = {0};
    assert_int_equal(up_model_init_random(&m, &c, UP_DTYPE_F32, 5, &e), UP_OK);
    float *mats, *norms;
    size_t n_mats, n_norms;
    assert_int_equal(up_model_param_blocks(m, &mats, &n_mats, &norms, &n_norms, &e), UP_OK);
    unsigned seed = 17;
    for (size_t i = 0; i < n_mats; i++) mats[i] *= 2.5f; /* make attention sharp enough to hit the caps */
    for (size_t i = 0; i < n_norms; i++) norms[i] = (float)((seed = seed * 1103515245u + 12345u) % 1000) / 2000.0f - 0.25f;
    for (int i = 0; i < B * T; i++) {
        tokens[i] = 3 + (seed = seed * 1103515245u + 12345u) % (c.vocab_size - 3);
        targets[i] = i % T >= pads[i / T] + 1 ? (int32_t)(3 + (seed = seed * 1103515245u + 12345u) % (c.vocab_size - 3)) : -1;
    }
    up_param_grads g = {mats, calloc(n_mats, sizeof(float)), n_mats, norms, calloc(n_norms, sizeof(float)), n_norms};
    loss_of(m, &g);
    up_param_grads scratch = {mats, calloc(n_mats, sizeof(float)), n_mats, norms, calloc(n_norms, sizeof(float)), n_norms};
    /* Every tensor: the embedding, each layer's 7 matrices and 4 norms, the final norm. */
    struct { const char *name; float *p; float *gp; size_t n; } t[64];
    int n_t = 0;
    const size_t d = c.d_model;
#define ADD(nm, w, count)                                                                            \
    t[n_t++] = (typeof(t[0])){nm, (float *)(w).data,                                                  \
                              ((float *)(w).data >= norms && (float *)(w).data < norms + n_norms)     \
                                  ? g.d_norms + ((float *)(w).data - norms)                           \
                                  : g.d_mats + ((float *)(w).data - mats),                            \
                              (count)}
    ADD("embed", m->embed, (size_t)c.vocab_size * d);
    ADD("final_norm", m->final_norm, d);
    for (int l = 0; l < c.n_layers; l++) {
        up_layer_weights *w = &m->layers[l];
        size_t q = (size_t)c.n_heads * c.head_dim, kv = (size_t)c.n_kv_heads * c.head_dim, f = c.d_mlp;
        ADD("input_norm", w->input_norm, d);
        ADD("q_proj", w->q_proj, q * d);
        ADD("k_proj", w->k_proj, kv * d);
        ADD("v_proj", w->v_proj, kv * d);
        ADD("o_proj", w->o_proj, d * q);
        ADD("post_attn_norm", w->post_attn_norm, d);
        ADD("pre_ffw_norm", w->pre_ffw_norm, d);
        ADD("gate_proj", w->gate_proj, f * d);
        ADD("up_proj", w->up_proj, f * d);
        ADD("down_proj", w->down_proj, d * f);
        ADD("post_ffw_norm", w->post_ffw_norm, d);
    }
#undef ADD
    for (int k = 0; k < n_t; k++) {
        float *u = malloc(t[k].n * sizeof *u), *orig = malloc(t[k].n * sizeof *orig);
        double nu = 0, an = 0;
        for (size_t i = 0; i < t[k].n; i++) u[i] = (float)((seed = seed * 1103515245u + 12345u) % 2001) / 1000.0f - 1.0f, nu += u[i] * u[i];
        for (size_t i = 0; i < t[k].n; i++) u[i] /= (float)sqrt(nu), an += (double)u[i] * t[k].gp[i];
        memcpy(orig, t[k].p, t[k].n * sizeof *orig);
        const float eps = 1e-2f;
        for (size_t i = 0; i < t[k].n; i++) t[k].p[i] = orig[i] + eps * u[i];
        double plus = loss_of(m, &scratch);
        for (size_t i = 0; i < t[k].n; i++) t[k].p[i] = orig[i] - eps * u[i];
        double minus = loss_of(m, &scratch);
        memcpy(t[k].p, orig, t[k].n * sizeof *orig);
        double fd = (plus - minus) / (2 * eps);
        double err = fabs(fd - an) / fmax(fabs(an), 1e-3);
        if (err > 2e-2) fail_msg("%s (tensor %d): finite difference %.6g vs gradient %.6g", t[k].name, k, fd, an);
        free(u), free(orig);
    }
    print_message("checked %d parameter tensors\n", n_t);
    free(g.d_mats), free(g.d_norms), free(scratch.d_mats), free(scratch.d_norms);
    up_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_weight_gradients)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
