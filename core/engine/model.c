#include "engine/model.h"

#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/rng.h"
#include "formats/safetensors.h"

/* ---- config.json ------------------------------------------------------- */

static up_status get_int(json_t *root, const char *key, int required, int fallback, int *out,
                         const char *path, up_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return up_error_set(err, UP_ERR_FORMAT, "%s: required key \"%s\" is missing", path, key);
        *out = fallback;
        return UP_OK;
    }
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0); /* e.g. eos [1, 107] */
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff)
        return up_error_set(err, UP_ERR_FORMAT, "%s: \"%s\" must be a non-negative integer", path, key);
    *out = (int)json_integer_value(v);
    return UP_OK;
}

static up_status get_float(json_t *root, const char *key, int required, float fallback, float *out,
                           const char *path, up_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return up_error_set(err, UP_ERR_FORMAT, "%s: required key \"%s\" is missing", path, key);
        *out = fallback;
        return UP_OK;
    }
    if (!json_is_number(v))
        return up_error_set(err, UP_ERR_FORMAT, "%s: \"%s\" must be a number", path, key);
    *out = (float)json_number_value(v);
    return UP_OK;
}

static int mentions(json_t *root, const char *key, const char *value) {
    json_t *v = json_object_get(root, key);
    if (json_is_string(v)) return strcmp(json_string_value(v), value) == 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_string(e) && !strcmp(json_string_value(e), value)) return 1;
    }
    return 0;
}

up_status up_model_config_load(up_model_config *cfg, const char *path, up_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return up_error_set(err, UP_ERR_FORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
    up_status st = UP_OK;
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root)) {
        st = up_error_set(err, UP_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    if (!mentions(root, "architectures", "Gemma2ForCausalLM") && !mentions(root, "model_type", "gemma2")) {
        json_t *a = json_object_get(root, "architectures");
        const char *name = json_is_array(a) && json_is_string(json_array_get(a, 0))
                               ? json_string_value(json_array_get(a, 0))
                           : json_is_string(json_object_get(root, "model_type"))
                               ? json_string_value(json_object_get(root, "model_type"))
                               : "(none given)";
        st = up_error_set(err, UP_ERR_UNSUPPORTED,
                          "%s: architecture %s is not supported (supported: Gemma2ForCausalLM)", path, name);
        goto done;
    }
    cfg->family = UP_FAMILY_GEMMA2;
    int tie = 1;
    json_t *tv = json_object_get(root, "tie_word_embeddings");
    if (tv && !json_is_null(tv)) {
        if (!json_is_boolean(tv)) {
            st = up_error_set(err, UP_ERR_FORMAT, "%s: \"tie_word_embeddings\" must be true or false", path);
            goto done;
        }
        tie = json_is_true(tv);
    }
    cfg->tie_word_embeddings = tie;
    if ((st = get_int(root, "hidden_size", 1, 0, &cfg->d_model, path, err)) ||
        (st = get_int(root, "intermediate_size", 1, 0, &cfg->d_mlp, path, err)) ||
        (st = get_int(root, "num_hidden_layers", 1, 0, &cfg->n_layers, path, err)) ||
        (st = get_int(root, "num_attention_heads", 1, 0, &cfg->n_heads, path, err)) ||
        (st = get_int(root, "num_key_value_heads", 1, 0, &cfg->n_kv_heads, path, err)) ||
        (st = get_int(root, "head_dim", 1, 0, &cfg->head_dim, path, err)) ||
        (st = get_int(root, "vocab_size", 1, 0, &cfg->vocab_size, path, err)) ||
        (st = get_int(root, "sliding_window", 0, 4096, &cfg->sliding_window, path, err)) ||
        (st = get_int(root, "max_position_embeddings", 0, 8192, &cfg->max_position_embeddings, path, err)) ||
        (st = get_int(root, "bos_token_id", 0, 2, &cfg->bos_id, path, err)) ||
        (st = get_int(root, "eos_token_id", 0, 1, &cfg->eos_id, path, err)) ||
        (st = get_int(root, "pad_token_id", 0, 0, &cfg->pad_id, path, err)) ||
        (st = get_float(root, "rms_norm_eps", 1, 0, &cfg->rms_norm_eps, path, err)) ||
        (st = get_float(root, "rope_theta", 0, 10000.0f, &cfg->rope_theta, path, err)) ||
        (st = get_float(root, "query_pre_attn_scalar", 1, 0, &cfg->query_pre_attn_scalar, path, err)) ||
        (st = get_float(root, "attn_logit_softcapping", 0, 0, &cfg->attn_softcap, path, err)) ||
        (st = get_float(root, "final_logit_softcapping", 0, 0, &cfg->final_softcap, path, err)))
        goto done;
    const char *act = "gelu_pytorch_tanh";
    json_t *av = json_object_get(root, "hidden_activation");
    if (!json_is_string(av)) av = json_object_get(root, "hidden_act");
    if (json_is_string(av)) act = json_string_value(av);
    if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_fast"))
        cfg->activation = UP_ACT_GELU_TANH;
    else if (!strcmp(act, "gelu"))
        cfg->activation = UP_ACT_GELU_EXACT;
    else {
        st = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: hidden_activation \"%s\" is not supported", path, act);
        goto done;
    }
    const up_model_config *c = cfg;
    if (c->d_model <= 0 || c->d_mlp <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->vocab_size <= 0 || c->n_heads % c->n_kv_heads != 0 || c->head_dim % 2 ||
        c->query_pre_attn_scalar <= 0 || c->rms_norm_eps < 0) {
        st = up_error_set(err, UP_ERR_FORMAT,
                          "%s: inconsistent shapes (hidden %d, intermediate %d, layers %d, heads %d/%d kv, "
                          "head_dim %d, vocab %d; heads must divide by kv heads, head_dim must be even)",
                          path, c->d_model, c->d_mlp, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                          c->vocab_size);
    }
done:
    json_decref(root);
    return st;
}

up_model_config up_model_config_gemma2_2b(void) {
    up_model_config c = {0};
    c.family = UP_FAMILY_GEMMA2;
    c.d_model = 2304, c.d_mlp = 9216, c.n_layers = 26, c.n_heads = 8, c.n_kv_heads = 4, c.head_dim = 256;
    c.vocab_size = 256000, c.sliding_window = 4096, c.rms_norm_eps = 1e-6f, c.rope_theta = 10000.0f;
    c.query_pre_attn_scalar = 256.0f, c.attn_softcap = 50.0f, c.final_softcap = 30.0f;
    c.activation = UP_ACT_GELU_TANH, c.tie_word_embeddings = 1;
    c.bos_id = 2, c.eos_id = 1, c.pad_id = 0, c.max_position_embeddings = 8192;
    return c;
}

/* ---- weights ------------------------------------------------------------ */

static int n_norms(const up_model_config *c) { return 1 + 4 * c->n_layers; }

static up_status alloc_layers(up_model *m, up_error *err) {
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    m->norm_f32 = malloc((size_t)n_norms(&m->cfg) * m->cfg.d_model * sizeof(float));
    if (!m->layers || !m->norm_f32) return up_error_set(err, UP_ERR_NOMEM, "out of memory for the model");
    return UP_OK;
}

/* Index of the first NaN or infinity among n stored values, or -1; *count gets how many.
 * Every value is read (a vectorised pass; a second one only when something is wrong). */
static int64_t first_nonfinite(const void *data, up_dtype dtype, int64_t n, int64_t *count) {
    const uint32_t *f32 = data;
    const uint16_t *h16 = data;
    /* exponent bits all ones = NaN or infinity */
    const uint32_t mask = dtype == UP_DTYPE_F32 ? 0x7f800000u : dtype == UP_DTYPE_BF16 ? 0x7f80u : 0x7c00u;
    int any = 0;
    if (dtype == UP_DTYPE_F32)
        for (int64_t i = 0; i < n; i++) any |= (f32[i] & mask) == mask;
    else
        for (int64_t i = 0; i < n; i++) any |= (h16[i] & mask) == mask;
    *count = 0;
    if (!any) return -1;
    int64_t first = -1;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = dtype == UP_DTYPE_F32 ? f32[i] : h16[i];
        if ((bits & mask) == mask) {
            if (first < 0) first = i;
            (*count)++;
        }
    }
    return first;
}

/* Looks up a weight, checks its shape against config.json and its dtype, and refuses a NaN or
 * an infinity in it: a corrupt weight would otherwise turn every table of a run into NaN with
 * nothing to say where it came from. */
static up_status find_weight(up_safetensors *st, const char *dir, const char *name, int64_t rows,
                             int64_t cols, up_weight *out, up_error *err) {
    up_tensor t;
    up_status s = up_safetensors_find(st, name, &t, err); /* its message names the file */
    if (s) return s;
    int ok = cols ? (t.ndim == 2 && t.shape[0] == rows && t.shape[1] == cols) : (t.ndim == 1 && t.shape[0] == rows);
    if (!ok) {
        char got[128] = "";
        for (int i = 0; i < t.ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t.shape[i]);
        if (cols)
            return up_error_set(err, UP_ERR_FORMAT, "%s: tensor %s has shape [%s], config.json implies [%lld, %lld]",
                                dir, name, got, (long long)rows, (long long)cols);
        return up_error_set(err, UP_ERR_FORMAT, "%s: tensor %s has shape [%s], config.json implies [%lld]", dir,
                            name, got, (long long)rows);
    }
    if (t.dtype != UP_DTYPE_F32 && t.dtype != UP_DTYPE_BF16 && t.dtype != UP_DTYPE_F16)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s; weights must be F32, BF16 or F16",
                            dir, name, up_dtype_name(t.dtype));
    int64_t n_bad, bad = first_nonfinite(t.data, t.dtype, rows * (cols ? cols : 1), &n_bad);
    if (bad >= 0) {
        float v;
        up_convert_to_f32(&v, (const char *)t.data + bad * (int64_t)up_dtype_size(t.dtype), t.dtype, 1);
        char at[64];
        if (cols) snprintf(at, sizeof at, "[%lld, %lld]", (long long)(bad / cols), (long long)(bad % cols));
        else snprintf(at, sizeof at, "[%lld]", (long long)bad);
        return up_error_set(err, UP_ERR_FORMAT,
                            "%s: tensor %s holds %s at %s (%lld NaN or infinite values in all); "
                            "the checkpoint is corrupt, and every output computed with it would be NaN",
                            dir, name, isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf", at, (long long)n_bad);
    }
    out->data = t.data;
    out->dtype = t.dtype;
    return UP_OK;
}

/* Norm vectors are tiny; widening them once keeps the kernels dtype-free. */
static void widen_norm(up_model *m, up_weight *w, int index) {
    float *dst = m->norm_f32 + (size_t)index * m->cfg.d_model;
    up_convert_to_f32(dst, w->data, w->dtype, (size_t)m->cfg.d_model);
    w->data = dst;
    w->dtype = UP_DTYPE_F32;
}

up_status up_model_load(up_model **out, const char *dir, up_error *err) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    up_model *m = calloc(1, sizeof *m);
    if (!m) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    up_status s = up_model_config_load(&m->cfg, path, err);
    if (s) goto fail;
    up_safetensors *st = NULL;
    if ((s = up_safetensors_open_dir(&st, dir, err))) goto fail;
    m->owner = st;
    m->dir = strdup(dir);
    const up_model_config *c = &m->cfg;
    const int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    if ((s = find_weight(st, dir, "model.embed_tokens.weight", c->vocab_size, d, &m->embed, err))) goto fail;
    if ((s = find_weight(st, dir, "model.norm.weight", d, 0, &m->final_norm, err))) goto fail;
    if (!c->tie_word_embeddings) {
        if ((s = find_weight(st, dir, "lm_head.weight", c->vocab_size, d, &m->lm_head, err))) goto fail;
    } else {
        m->lm_head = m->embed;
    }
    /* The layer count sizes allocations: check it against the checkpoint first (11 tensors a
     * layer), so an absurd num_hidden_layers is an error, not a huge calloc. d_model is already
     * bounded by model.norm.weight's shape. */
    if ((int64_t)c->n_layers * 11 > up_safetensors_count(st)) {
        s = up_error_set(err, UP_ERR_FORMAT, "%s: config.json says num_hidden_layers %d, but the checkpoint holds %d tensors (11 a layer)",
                         dir, c->n_layers, up_safetensors_count(st));
        goto fail;
    }
    if ((s = alloc_layers(m, err))) goto fail;
    for (int l = 0; l < c->n_layers; l++) {
        up_layer_weights *w = &m->layers[l];
        char name[256];
#define LOAD(field, suffix, rows, cols)                                                        \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                             \
    if ((s = find_weight(st, dir, name, rows, cols, &w->field, err))) goto fail;
        LOAD(input_norm, "input_layernorm.weight", d, 0)
        LOAD(q_proj, "self_attn.q_proj.weight", q, d)
        LOAD(k_proj, "self_attn.k_proj.weight", kv, d)
        LOAD(v_proj, "self_attn.v_proj.weight", kv, d)
        LOAD(o_proj, "self_attn.o_proj.weight", d, q)
        LOAD(post_attn_norm, "post_attention_layernorm.weight", d, 0)
        LOAD(pre_ffw_norm, "pre_feedforward_layernorm.weight", d, 0)
        LOAD(gate_proj, "mlp.gate_proj.weight", c->d_mlp, d)
        LOAD(up_proj, "mlp.up_proj.weight", c->d_mlp, d)
        LOAD(down_proj, "mlp.down_proj.weight", d, c->d_mlp)
        LOAD(post_ffw_norm, "post_feedforward_layernorm.weight", d, 0)
#undef LOAD
    }
    m->storage = m->layers[0].q_proj.dtype;
    widen_norm(m, &m->final_norm, 0);
    for (int l = 0; l < c->n_layers; l++) {
        up_layer_weights *w = &m->layers[l];
        widen_norm(m, &w->input_norm, 1 + 4 * l);
        widen_norm(m, &w->post_attn_norm, 2 + 4 * l);
        widen_norm(m, &w->pre_ffw_norm, 3 + 4 * l);
        widen_norm(m, &w->post_ffw_norm, 4 + 4 * l);
    }
    *out = m;
    return UP_OK;
fail:
    up_model_free(m);
    return s;
}

static void fill_random(void *dst, up_dtype dtype, size_t n, float scale, uint64_t *state) {
    for (size_t i = 0; i < n; i++) {
        float v = scale * ((float)(up_splitmix64(state) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
        if (dtype == UP_DTYPE_F32) ((float *)dst)[i] = v;
        else ((uint16_t *)dst)[i] = up_f32_to_bf16(v); /* f16 random models are not offered */
    }
}

up_status up_model_init_random(up_model **out, const up_model_config *cfg, up_dtype dtype, uint64_t seed,
                               up_error *err) {
    *out = NULL;
    if (dtype != UP_DTYPE_F32 && dtype != UP_DTYPE_BF16)
        return up_error_set(err, UP_ERR_INVALID, "random models are built in F32 or BF16 only");
    up_model *m = calloc(1, sizeof *m);
    if (!m) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    m->storage = dtype;
    up_status s = alloc_layers(m, err);
    if (s) goto fail;
    const size_t d = cfg->d_model, q = (size_t)cfg->n_heads * cfg->head_dim,
                 kv = (size_t)cfg->n_kv_heads * cfg->head_dim, f = cfg->d_mlp, es = up_dtype_size(dtype);
    size_t per_layer = q * d + 2 * kv * d + d * q + 3 * f * d;
    size_t total = (size_t)cfg->vocab_size * d + per_layer * cfg->n_layers;
    char *block = malloc(total * es);
    if (!block) {
        s = up_error_set(err, UP_ERR_NOMEM, "cannot allocate %.1f GB for a random model", total * es / 1e9);
        goto fail;
    }
    m->owner = block;
    m->owner_is_memory = 1;
    uint64_t state = seed;
    char *p = block;
#define TAKE(w, count, fan_in)                                                                  \
    do {                                                                                       \
        (w).data = p;                                                                          \
        (w).dtype = dtype;                                                                     \
        fill_random(p, dtype, (count), 1.0f / sqrtf((float)(fan_in)), &state);                 \
        p += (count) * es;                                                                     \
    } while (0)
    TAKE(m->embed, (size_t)cfg->vocab_size * d, d);
    m->lm_head = m->embed;
    for (int l = 0; l < cfg->n_layers; l++) {
        up_layer_weights *w = &m->layers[l];
        TAKE(w->q_proj, q * d, d);
        TAKE(w->k_proj, kv * d, d);
        TAKE(w->v_proj, kv * d, d);
        TAKE(w->o_proj, d * q, q);
        TAKE(w->gate_proj, f * d, d);
        TAKE(w->up_proj, f * d, d);
        TAKE(w->down_proj, d * f, f);
    }
#undef TAKE
    up_weight *norms[4];
    for (int i = 0; i < n_norms(cfg); i++) {
        float *dst = m->norm_f32 + (size_t)i * d;
        fill_random(dst, UP_DTYPE_F32, d, 0.1f, &state);
    }
    m->final_norm = (up_weight){m->norm_f32, UP_DTYPE_F32};
    for (int l = 0; l < cfg->n_layers; l++) {
        up_layer_weights *w = &m->layers[l];
        norms[0] = &w->input_norm, norms[1] = &w->post_attn_norm, norms[2] = &w->pre_ffw_norm,
        norms[3] = &w->post_ffw_norm;
        for (int j = 0; j < 4; j++) *norms[j] = (up_weight){m->norm_f32 + (size_t)(1 + 4 * l + j) * d, UP_DTYPE_F32};
    }
    *out = m;
    return UP_OK;
fail:
    up_model_free(m);
    return s;
}

void up_model_free(up_model *m) {
    if (!m) return;
    if (m->owner_is_memory) free(m->owner);
    else up_safetensors_close(m->owner);
    free(m->layers);
    free(m->norm_f32);
    free(m->dir);
    free(m);
}

int64_t up_model_param_count(const up_model *m) {
    const up_model_config *c = &m->cfg;
    int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = q * d + 2 * kv * d + d * q + 3 * (int64_t)c->d_mlp * d + 4 * d;
    int64_t n = (int64_t)c->vocab_size * d * (c->tie_word_embeddings ? 1 : 2) + d;
    return n + per_layer * c->n_layers;
}

int64_t up_model_weight_bytes(const up_model *m) {
    const up_model_config *c = &m->cfg;
    int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    const up_layer_weights *w = &m->layers[0];
    int64_t bytes = (int64_t)c->vocab_size * d * (int64_t)up_dtype_size(m->embed.dtype);
    if (!c->tie_word_embeddings) bytes += (int64_t)c->vocab_size * d * (int64_t)up_dtype_size(m->lm_head.dtype);
    for (int l = 0; l < c->n_layers; l++) {
        w = &m->layers[l];
        bytes += q * d * (int64_t)up_dtype_size(w->q_proj.dtype) + kv * d * (int64_t)up_dtype_size(w->k_proj.dtype) +
                 kv * d * (int64_t)up_dtype_size(w->v_proj.dtype) + d * q * (int64_t)up_dtype_size(w->o_proj.dtype) +
                 (int64_t)c->d_mlp * d *
                     (int64_t)(up_dtype_size(w->gate_proj.dtype) + up_dtype_size(w->up_proj.dtype) +
                               up_dtype_size(w->down_proj.dtype));
    }
    return bytes;
}

static size_t matrix_floats(const up_model_config *c) {
    const size_t d = c->d_model, q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim,
                 f = c->d_mlp;
    return (size_t)c->vocab_size * d + (q * d + 2 * kv * d + d * q + 3 * f * d) * c->n_layers;
}

up_status up_model_param_blocks(up_model *m, float **mats, size_t *n_mats, float **norms, size_t *n_norms_out,
                                up_error *err) {
    if (!m->owner_is_memory || m->storage != UP_DTYPE_F32 || !m->cfg.tie_word_embeddings)
        return up_error_set(err, UP_ERR_INVALID, "training needs an in-memory fp32 model with tied embeddings");
    *mats = m->owner;
    *n_mats = matrix_floats(&m->cfg);
    *norms = m->norm_f32;
    *n_norms_out = (size_t)n_norms(&m->cfg) * m->cfg.d_model;
    return UP_OK;
}

static up_status write_config(const up_model *m, const char *dir, up_dtype dtype, up_error *err) {
    const up_model_config *c = &m->cfg;
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "Gemma2ForCausalLM"));
    json_object_set_new(j, "model_type", json_string("gemma2"));
    json_object_set_new(j, "hidden_size", json_integer(c->d_model));
    json_object_set_new(j, "intermediate_size", json_integer(c->d_mlp));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "sliding_window", json_integer(c->sliding_window));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(j, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(j, "query_pre_attn_scalar", json_real(c->query_pre_attn_scalar));
    json_object_set_new(j, "attn_logit_softcapping", c->attn_softcap > 0 ? json_real(c->attn_softcap) : json_null());
    json_object_set_new(j, "final_logit_softcapping", c->final_softcap > 0 ? json_real(c->final_softcap) : json_null());
    json_object_set_new(j, "hidden_activation",
                        json_string(c->activation == UP_ACT_GELU_EXACT ? "gelu" : "gelu_pytorch_tanh"));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    json_object_set_new(j, "pad_token_id", json_integer(c->pad_id));
    json_object_set_new(j, "torch_dtype", json_string(dtype == UP_DTYPE_BF16 ? "bfloat16" : "float32"));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!text) return up_error_set(err, UP_ERR_NOMEM, "out of memory writing %s", path);
    up_status s = up_fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return s;
}

/* One tensor to write: its HF name, its weight and shape (cols 0: a vector). */
typedef struct save_item {
    char name[96];
    up_weight w;
    int64_t rows, cols;
} save_item;

/* Every tensor in Hugging Face's module order (what save_pretrained splits shards by). Returns
 * how many; items holds at least 4 + 11 * n_layers. */
static int save_items(const up_model *m, save_item *items) {
    const up_model_config *c = &m->cfg;
    const int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int n = 0;
#define ITEM(w_, rows_, cols_, ...)                                                       \
    do {                                                                                  \
        snprintf(items[n].name, sizeof items[n].name, __VA_ARGS__);                       \
        items[n].w = (w_), items[n].rows = (rows_), items[n].cols = (cols_);             \
        n++;                                                                              \
    } while (0)
    ITEM(m->embed, c->vocab_size, d, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const up_layer_weights *lw = &m->layers[l];
        ITEM(lw->q_proj, q, d, "model.layers.%d.self_attn.q_proj.weight", l);
        ITEM(lw->k_proj, kv, d, "model.layers.%d.self_attn.k_proj.weight", l);
        ITEM(lw->v_proj, kv, d, "model.layers.%d.self_attn.v_proj.weight", l);
        ITEM(lw->o_proj, d, q, "model.layers.%d.self_attn.o_proj.weight", l);
        ITEM(lw->gate_proj, c->d_mlp, d, "model.layers.%d.mlp.gate_proj.weight", l);
        ITEM(lw->up_proj, c->d_mlp, d, "model.layers.%d.mlp.up_proj.weight", l);
        ITEM(lw->down_proj, d, c->d_mlp, "model.layers.%d.mlp.down_proj.weight", l);
        ITEM(lw->input_norm, d, 0, "model.layers.%d.input_layernorm.weight", l);
        ITEM(lw->post_attn_norm, d, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ITEM(lw->pre_ffw_norm, d, 0, "model.layers.%d.pre_feedforward_layernorm.weight", l);
        ITEM(lw->post_ffw_norm, d, 0, "model.layers.%d.post_feedforward_layernorm.weight", l);
    }
    ITEM(m->final_norm, d, 0, "model.norm.weight");
    if (!c->tie_word_embeddings) ITEM(m->lm_head, c->vocab_size, d, "lm_head.weight");
#undef ITEM
    return n;
}

static int64_t item_numel(const save_item *it) { return it->rows * (it->cols ? it->cols : 1); }

/* Writes items[first, last) to path as one safetensors file in dtype. */
static up_status write_shard(const save_item *items, int first, int last, up_dtype dtype, const char *path,
                             up_error *err) {
    int64_t most = 0;
    for (int i = first; i < last; i++) most = item_numel(&items[i]) > most ? item_numel(&items[i]) : most;
    float *wide = malloc((size_t)most * sizeof(float) + 1);
    uint16_t *narrow = dtype == UP_DTYPE_BF16 ? malloc((size_t)most * sizeof(uint16_t) + 1) : NULL;
    if (!wide || (dtype == UP_DTYPE_BF16 && !narrow)) {
        free(wide), free(narrow);
        return up_error_set(err, UP_ERR_NOMEM, "out of memory writing %s", path);
    }
    up_safetensors_writer *w = NULL;
    up_status s = up_safetensors_writer_open(&w, path, err);
    for (int i = first; i < last && !s; i++) {
        const save_item *it = &items[i];
        const int64_t numel = item_numel(it), shape[2] = {it->rows, it->cols};
        const void *data = it->w.data;
        if (it->w.dtype != dtype) { /* widen, then narrow to bf16 if asked (norms are kept in f32) */
            up_convert_to_f32(wide, it->w.data, it->w.dtype, (size_t)numel);
            data = wide;
            if (dtype == UP_DTYPE_BF16) {
                for (int64_t k = 0; k < numel; k++) narrow[k] = up_f32_to_bf16(wide[k]);
                data = narrow;
            }
        }
        s = up_safetensors_writer_add(w, it->name, dtype, it->cols ? 2 : 1, shape, data, err);
    }
    if (!s) s = up_safetensors_writer_metadata(w, "format", "pt", err);
    free(wide), free(narrow);
    if (s) {
        up_safetensors_writer_abort(w);
        return s;
    }
    return up_safetensors_writer_close(w, err);
}

up_status up_model_save_as(const up_model *m, const char *dir, up_dtype dtype, int n_shards, up_error *err) {
    const up_model_config *c = &m->cfg;
    if (dtype != UP_DTYPE_F32 && dtype != UP_DTYPE_BF16)
        return up_error_set(err, UP_ERR_INVALID, "%s: a checkpoint is saved as F32 or BF16", dir);
    const int max_items = 2 + 11 * c->n_layers + 2;
    if (n_shards < 1 || n_shards > max_items)
        return up_error_set(err, UP_ERR_INVALID, "%s: %d shards for %d tensors", dir, n_shards, max_items);
    if (up_mkdirs(dir)) return up_error_set(err, UP_ERR_IO, "cannot create directory %s", dir);
    up_status s = write_config(m, dir, dtype, err);
    if (s) return s;
    save_item *items = malloc((size_t)max_items * sizeof *items);
    if (!items) return up_error_set(err, UP_ERR_NOMEM, "out of memory saving %s", dir);
    const int n = save_items(m, items);
    char path[4096];
    if (n_shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        s = write_shard(items, 0, n, dtype, path, err);
        free(items);
        return s;
    }
    /* Shards split by size in module order, as save_pretrained does (a layer may straddle two). */
    const size_t es = up_dtype_size(dtype);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += item_numel(&items[i]) * (int64_t)es;
    const double target = (double)total / n_shards;
    json_t *map = json_object();
    int first = 0;
    for (int k = 0; k < n_shards && !s; k++) {
        int last = first;
        int64_t bytes = 0;
        /* The last shard takes the rest; every shard keeps at least one tensor. */
        while (last < n && (k == n_shards - 1 || last == first ||
                            (bytes + item_numel(&items[last]) * (int64_t)es <= target * 1.02 && n - last > n_shards - 1 - k)))
            bytes += item_numel(&items[last++]) * (int64_t)es;
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        s = write_shard(items, first, last, dtype, path, err);
        for (int i = first; i < last; i++) json_object_set_new(map, items[i].name, json_string(fname));
        first = last;
    }
    if (!s) {
        json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
        char *text = index ? json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        json_decref(index);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        s = text ? up_fs_write_atomic(path, text, strlen(text), err) : up_error_set(err, UP_ERR_NOMEM, "out of memory");
        free(text);
    } else {
        json_decref(map);
    }
    free(items);
    return s;
}

up_status up_model_save(const up_model *m, const char *dir, up_error *err) {
    return up_model_save_as(m, dir, UP_DTYPE_F32, 1, err);
}
