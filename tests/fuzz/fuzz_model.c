/* libFuzzer target: a model directory -> up_model_config_load and up_model_load.
 *
 * Input: config.json, then (optionally, after FUZZ_SEP) model.safetensors. Every field the
 * config loader reads can be missing, of the wrong type or absurd; a checkpoint whose tensors
 * disagree with config.json must be refused before anything is computed.
 *
 * Properties: an accepted config has positive sizes, heads divisible by kv heads and an even
 * head_dim (model.h); a loaded model has every weight present with the dtype its storage says
 * and its norms widened to F32; loading touches no tensor byte past its mapping (each weight's
 * first and last element is read). Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "fuzz_util.h"

static void touch(const up_weight *w, size_t numel) {
    if (!w->data) abort();
    const size_t es = up_dtype_size(w->dtype);
    volatile unsigned char sum = 0;
    sum += ((const unsigned char *)w->data)[0];
    sum += ((const unsigned char *)w->data)[numel * es - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *parts[2];
    size_t sizes[2];
    const int n = fuzz_split(data, size, parts, sizes, 2);
    const char *dir = fuzz_dir();
    char cfg_path[4096];
    strcpy(cfg_path, fuzz_write("config.json", parts[0], sizes[0]));
    if (n > 1) fuzz_write("model.safetensors", parts[1], sizes[1]);

    up_model_config cfg;
    up_error err = {0};
    if (up_model_config_load(&cfg, cfg_path, &err) != UP_OK) {
        if (!err.msg[0]) abort();
        return 0;
    }
    if (cfg.d_model <= 0 || cfg.d_mlp <= 0 || cfg.n_layers <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 ||
        cfg.head_dim <= 0 || cfg.vocab_size <= 0 || cfg.n_heads % cfg.n_kv_heads || cfg.head_dim % 2)
        abort();
    if (n < 2) return 0;
    up_model *m = NULL;
    if (up_model_load(&m, dir, &err) != UP_OK) {
        if (m || !err.msg[0]) abort();
        return 0;
    }
    const up_model_config *c = &m->cfg;
    const size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    touch(&m->embed, (size_t)c->vocab_size * d);
    touch(&m->lm_head, (size_t)c->vocab_size * d);
    touch(&m->final_norm, d);
    if (m->final_norm.dtype != UP_DTYPE_F32) abort();
    for (int l = 0; l < c->n_layers; l++) {
        const up_layer_weights *w = &m->layers[l];
        touch(&w->q_proj, q * d), touch(&w->k_proj, kv * d), touch(&w->v_proj, kv * d), touch(&w->o_proj, d * q);
        touch(&w->gate_proj, (size_t)c->d_mlp * d), touch(&w->up_proj, (size_t)c->d_mlp * d);
        touch(&w->down_proj, d * (size_t)c->d_mlp);
        touch(&w->input_norm, d), touch(&w->post_attn_norm, d), touch(&w->pre_ffw_norm, d), touch(&w->post_ffw_norm, d);
        if (w->input_norm.dtype != UP_DTYPE_F32 || w->post_ffw_norm.dtype != UP_DTYPE_F32) abort();
    }
    up_model_free(m);
    return 0;
}
