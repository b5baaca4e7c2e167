#include "sae/sae.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/blas.h"
#include "base/fs.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "base/tensor.h"

#define ENCODE_CHUNK 256 /* rows per gemm when x - b_dec needs a scratch copy */
#define STATS_CHUNK 64

const char *up_sae_arch_name(up_sae_arch arch) {
    switch (arch) {
    case UP_SAE_JUMPRELU: return "jumprelu";
    case UP_SAE_RELU: return "relu";
    case UP_SAE_TOPK: return "topk";
    }
    return "?";
}

/* The encoder family starts at W_enc, the decoder family at W_dec (or b_dec alone). */
void up_sae_free(up_sae *sae) {
    if (!sae) return;
    free(sae->W_enc);
    free(sae->W_dec ? sae->W_dec : sae->b_dec);
    free(sae->path);
    free(sae);
}

static float *alloc_floats(size_t n) {
    void *p = NULL;
    if (n > SIZE_MAX / sizeof(float) || posix_memalign(&p, 64, n ? n * sizeof(float) : 64) != 0)
        return NULL;
    return p;
}

/* Allocates the families for `parts` and points the fields into them. */
static up_status alloc_parts(up_sae *sae, unsigned parts, up_error *err) {
    size_t din = (size_t)sae->d_in, dsae = (size_t)sae->d_sae;
    int has_thr = sae->arch == UP_SAE_JUMPRELU;
    if (parts & UP_SAE_ENCODER) {
        float *enc = alloc_floats(din * dsae + dsae * (has_thr ? 2 : 1));
        if (!enc)
            return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory for the encoder (%zu x %zu)",
                                sae->path, din, dsae);
        memset(enc, 0, (din * dsae + dsae * (has_thr ? 2 : 1)) * sizeof(float));
        sae->W_enc = enc;
        sae->b_enc = enc + din * dsae;
        sae->threshold = has_thr ? sae->b_enc + dsae : NULL;
    }
    size_t wdec = (parts & UP_SAE_DECODER) ? dsae * din : 0;
    float *dec = alloc_floats(wdec + din);
    if (!dec)
        return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory for the decoder (%zu x %zu)",
                            sae->path, dsae, din);
    memset(dec, 0, (wdec + din) * sizeof(float));
    sae->W_dec = wdec ? dec : NULL;
    sae->b_dec = dec + wdec;
    sae->parts = parts; /* b_dec alone does not count as the decoder */
    return UP_OK;
}

static void set_resid_post(up_sae *sae, int layer) {
    sae->layer = layer;
    snprintf(sae->hook, sizeof sae->hook, "blocks.%d.hook_resid_post", layer);
}

up_status up_sae_set_hook(up_sae *sae, int layer, up_error *err) {
    if (layer < 0) return up_error_set(err, UP_ERR_INVALID, "SAE layer %d is negative", layer);
    set_resid_post(sae, layer);
    return UP_OK;
}

void up_sae_forget_hook(up_sae *sae) {
    sae->layer = -1;
    sae->hook[0] = '\0';
}

up_status up_sae_check_model(const up_sae *sae, int d_model, int n_layers, up_error *err) {
    if (sae->d_in != d_model)
        return up_error_set(err, UP_ERR_INVALID,
                            "SAE %s reads %d-dimensional activations but the model's d_model is %d",
                            sae->path, sae->d_in, d_model);
    if (sae->layer >= 0 && sae->layer >= n_layers)
        return up_error_set(err, UP_ERR_INVALID,
                            "SAE %s hooks layer %d (%s) but the model has %d layers", sae->path,
                            sae->layer, sae->hook, n_layers);
    return UP_OK;
}

static up_sae *new_sae(const char *path) {
    up_sae *sae = calloc(1, sizeof *sae);
    if (!sae) return NULL;
    sae->layer = -1;
    if (!(sae->path = strdup(path))) {
        free(sae);
        return NULL;
    }
    return sae;
}

up_status up_sae_alloc(up_sae **out, up_sae_arch arch, int d_in, int d_sae, int k,
                       int apply_b_dec_to_input, const char *hook, up_error *err) {
    *out = NULL;
    if (d_in <= 0 || d_sae <= 0 || (unsigned)arch > UP_SAE_TOPK ||
        (arch == UP_SAE_TOPK && (k <= 0 || k > d_sae)))
        return up_error_set(err, UP_ERR_INVALID, "bad SAE shape: d_in %d, d_sae %d, k %d", d_in,
                            d_sae, k);
    if (hook && strlen(hook) >= UP_SAE_HOOK_MAX)
        return up_error_set(err, UP_ERR_INVALID, "hook name %s is too long", hook);
    up_sae *sae = new_sae("(in memory)");
    if (!sae) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    sae->arch = arch;
    sae->d_in = d_in;
    sae->d_sae = d_sae;
    sae->k = arch == UP_SAE_TOPK ? k : 0;
    sae->apply_b_dec_to_input = apply_b_dec_to_input != 0;
    if (hook) {
        strcpy(sae->hook, hook);
        int layer;
        if (sscanf(hook, "blocks.%d.", &layer) == 1 && layer >= 0) sae->layer = layer;
    }
    up_status s = alloc_parts(sae, UP_SAE_ALL, err);
    if (s != UP_OK) {
        up_sae_free(sae);
        return s;
    }
    *out = sae;
    return UP_OK;
}

/* --- weight sources: an npz archive or a safetensors file, read by key ------------------- */

typedef struct source {
    up_npz *npz;
    up_safetensors *st;
    const char *file; /* for messages */
} source;

/* present = 0 when the key is absent (no error); shape of a float array otherwise. */
static up_status source_shape(source *src, const char *key, int *present, int *ndim,
                              int64_t shape[UP_MAX_DIMS], up_error *err) {
    *present = 0;
    if (src->npz) {
        if (!up_npz_has(src->npz, key)) return UP_OK;
        up_npy_info info;
        up_status s = up_npz_info(src->npz, key, &info, err);
        if (s != UP_OK) return s;
        if (info.type != UP_NPY_F32 && info.type != UP_NPY_F16 && info.type != UP_NPY_F64)
            return up_error_set(err, UP_ERR_FORMAT, "%s: %s has dtype '%s', not a float",
                                src->file, key, info.descr);
        *present = 1;
        *ndim = info.ndim;
        memcpy(shape, info.shape, sizeof info.shape);
        return UP_OK;
    }
    up_tensor t;
    up_error scratch;
    up_status s = up_safetensors_find(src->st, key, &t, &scratch);
    if (s == UP_ERR_INVALID) return UP_OK; /* not found */
    if (s != UP_OK) return up_error_set(err, s, "%s", scratch.msg);
    if (t.dtype != UP_DTYPE_F32 && t.dtype != UP_DTYPE_BF16 && t.dtype != UP_DTYPE_F16)
        return up_error_set(err, UP_ERR_FORMAT, "%s: %s has dtype %s, not a float", src->file, key,
                            up_dtype_name(t.dtype));
    *present = 1;
    *ndim = t.ndim;
    memcpy(shape, t.shape, sizeof t.shape);
    return UP_OK;
}

static up_status source_read(source *src, const char *key, float *dst, size_t n, up_error *err) {
    up_status s;
    if (src->npz) {
        s = up_npz_read_f32_into(src->npz, key, dst, n, err);
    } else {
        up_tensor t;
        s = up_safetensors_find(src->st, key, &t, err);
        if (s == UP_OK) up_convert_to_f32(dst, t.data, t.dtype, n);
    }
    if (s != UP_OK) return s;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return up_error_set(err, UP_ERR_FORMAT, "%s: %s[%zu] is %g; weights must be finite",
                                src->file, key, i, (double)dst[i]);
    return UP_OK;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (at < cap) snprintf(buf + at, cap - at, ndim == 1 ? ",)" : ")");
}

/* Requires `key` with exactly the shape (a) or (a, b) (b < 0: one dimension). */
static up_status expect_shape(source *src, const char *key, int64_t a, int64_t b, up_error *err) {
    int present, ndim;
    int64_t shape[UP_MAX_DIMS];
    up_status s = source_shape(src, key, &present, &ndim, shape, err);
    if (s != UP_OK) return s;
    if (!present) return up_error_set(err, UP_ERR_FORMAT, "%s: no array %s", src->file, key);
    int want_ndim = b < 0 ? 1 : 2;
    if (ndim != want_ndim || shape[0] != a || (b >= 0 && shape[1] != b)) {
        char have[128], want[64];
        fmt_shape(have, sizeof have, ndim, shape);
        int64_t w[2] = {a, b};
        fmt_shape(want, sizeof want, want_ndim, w);
        return up_error_set(err, UP_ERR_FORMAT, "%s: %s has shape %s, expected %s", src->file, key,
                            have, want);
    }
    return UP_OK;
}

/* Shapes of every array from W_dec's, then the parts asked for. `thr_key` names the
 * JumpReLU threshold array (NULL for other architectures); log_thr exponentiates it. */
static up_status load_weights(up_sae *sae, source *src, unsigned parts, const char *thr_key,
                              int log_thr, int cfg_d_in, int cfg_d_sae, up_error *err) {
    int present, ndim;
    int64_t shape[UP_MAX_DIMS];
    up_status s = source_shape(src, "W_dec", &present, &ndim, shape, err);
    if (s != UP_OK) return s;
    if (!present) return up_error_set(err, UP_ERR_FORMAT, "%s: no array W_dec", src->file);
    if (ndim != 2 || shape[0] <= 0 || shape[1] <= 0 || shape[0] > INT_MAX || shape[1] > INT_MAX) {
        char have[128];
        fmt_shape(have, sizeof have, ndim, shape);
        return up_error_set(err, UP_ERR_FORMAT, "%s: W_dec has shape %s, expected (d_sae, d_in)",
                            src->file, have);
    }
    sae->d_sae = (int)shape[0];
    sae->d_in = (int)shape[1];
    if (cfg_d_in >= 0 && (cfg_d_in != sae->d_in || cfg_d_sae != sae->d_sae))
        return up_error_set(err, UP_ERR_FORMAT,
                            "%s: cfg.json says d_in %d, d_sae %d but W_dec is (%d, %d)", sae->path,
                            cfg_d_in, cfg_d_sae, sae->d_sae, sae->d_in);
    if (sae->arch == UP_SAE_TOPK && sae->k > sae->d_sae)
        return up_error_set(err, UP_ERR_FORMAT, "%s: k %d exceeds d_sae %d", sae->path, sae->k,
                            sae->d_sae);
    if ((s = expect_shape(src, "W_enc", sae->d_in, sae->d_sae, err)) ||
        (s = expect_shape(src, "b_enc", sae->d_sae, -1, err)) ||
        (s = expect_shape(src, "b_dec", sae->d_in, -1, err)) ||
        (thr_key && (s = expect_shape(src, thr_key, sae->d_sae, -1, err))))
        return s;

    if ((s = alloc_parts(sae, parts, err))) return s;
    size_t din = (size_t)sae->d_in, dsae = (size_t)sae->d_sae;
    if ((s = source_read(src, "b_dec", sae->b_dec, din, err))) return s;
    if (parts & UP_SAE_DECODER && (s = source_read(src, "W_dec", sae->W_dec, dsae * din, err)))
        return s;
    if (parts & UP_SAE_ENCODER) {
        if ((s = source_read(src, "W_enc", sae->W_enc, din * dsae, err)) ||
            (s = source_read(src, "b_enc", sae->b_enc, dsae, err)))
            return s;
        if (thr_key) {
            if ((s = source_read(src, thr_key, sae->threshold, dsae, err))) return s;
            /* exp of a finite log_threshold above ~88.7 is +inf (found by fuzz_sae_saelens). */
            for (size_t i = 0; log_thr && i < dsae; i++) {
                const float log_value = sae->threshold[i];
                if (!isfinite(sae->threshold[i] = expf(log_value)))
                    return up_error_set(err, UP_ERR_FORMAT, "%s: %s[%zu] is %g, whose exp is not finite", src->file,
                                        thr_key, i, (double)log_value);
            }
        }
    }
    return UP_OK;
}

/* "layer_{L}" as a whole path segment (the last one wins); -1 if none. */
static int layer_from_path(const char *path, int *is_mlp) {
    int layer = -1;
    *is_mlp = 0;
    for (const char *seg = path; seg && *seg;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len > 6 && strncmp(seg, "layer_", 6) == 0) {
            int v = 0, ok = 1;
            for (size_t i = 6; i < len; i++) {
                if (seg[i] < '0' || seg[i] > '9' || v > 100000) { ok = 0; break; }
                v = v * 10 + (seg[i] - '0');
            }
            if (ok) layer = v;
        }
        if (len >= 11 && strncmp(seg, "gemma-scope", 11) == 0 && memmem(seg, len, "-mlp", 4))
            *is_mlp = 1;
        seg = end ? end + 1 : NULL;
    }
    return layer;
}

static up_status load_gemmascope(up_sae *sae, const char *npz_path, unsigned parts,
                                 up_error *err) {
    sae->arch = UP_SAE_JUMPRELU;
    sae->apply_b_dec_to_input = 0;
    int is_mlp;
    int layer = layer_from_path(npz_path, &is_mlp);
    if (layer >= 0) {
        set_resid_post(sae, layer);
        if (is_mlp) snprintf(sae->hook, sizeof sae->hook, "blocks.%d.hook_mlp_out", layer);
    }
    source src = {.file = npz_path};
    up_status s = up_npz_open(&src.npz, npz_path, err);
    if (s != UP_OK) return s;
    s = load_weights(sae, &src, parts, "threshold", 0, -1, -1, err);
    up_npz_close(src.npz);
    return s;
}

/* --- SAELens cfg.json ---------------------------------------------------------------- */

/* A string-or-null setting that must be absent, null or one of the allowed values. */
static up_status cfg_only(json_t *cfg, const char *file, const char *key, const char *allowed,
                          up_error *err) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) return UP_OK;
    if (json_is_string(v) && strcmp(json_string_value(v), allowed) == 0) return UP_OK;
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    up_status s = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: %s = %s is not supported (only %s)",
                               file, key, text ? text : "?", allowed);
    free(text);
    return s;
}

static up_status cfg_false(json_t *cfg, const char *file, const char *key, up_error *err) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v) || json_is_false(v)) return UP_OK;
    return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: %s = true is not supported", file, key);
}

static up_status cfg_int(json_t *cfg, const char *file, const char *key, int *out,
                         up_error *err) {
    json_t *v = json_object_get(cfg, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT_MAX)
        return up_error_set(err, UP_ERR_FORMAT, "%s: %s must be a positive integer", file, key);
    *out = (int)json_integer_value(v);
    return UP_OK;
}

static up_status parse_cfg(up_sae *sae, json_t *cfg, const char *file, int *d_in, int *d_sae,
                           up_error *err) {
    if (!json_is_object(cfg)) return up_error_set(err, UP_ERR_FORMAT, "%s: not a JSON object", file);
    json_t *meta = json_object_get(cfg, "metadata");
    if (meta && !json_is_object(meta) && !json_is_null(meta))
        return up_error_set(err, UP_ERR_FORMAT, "%s: metadata is not an object", file);

    json_t *jarch = json_object_get(cfg, "architecture");
    const char *arch = jarch && !json_is_null(jarch) ? json_string_value(jarch) : "standard";
    if (!arch) return up_error_set(err, UP_ERR_FORMAT, "%s: architecture is not a string", file);
    json_t *jact = json_object_get(cfg, "activation_fn_str");
    if (!jact) jact = json_object_get(cfg, "activation_fn"); /* SAELens < 3 */
    const char *act = jact && !json_is_null(jact) ? json_string_value(jact) : NULL;
    if (jact && !json_is_null(jact) && !act)
        return up_error_set(err, UP_ERR_FORMAT, "%s: activation_fn_str is not a string", file);

    if (strcmp(arch, "jumprelu") == 0) {
        sae->arch = UP_SAE_JUMPRELU;
    } else if (strcmp(arch, "topk") == 0) {
        sae->arch = UP_SAE_TOPK;
    } else if (strcmp(arch, "standard") == 0) {
        if (!act || strcmp(act, "relu") == 0) sae->arch = UP_SAE_RELU;
        else if (strcmp(act, "topk") == 0) sae->arch = UP_SAE_TOPK;
        else
            return up_error_set(err, UP_ERR_UNSUPPORTED,
                                "%s: activation_fn_str \"%s\" is not supported (relu, topk)",
                                file, act);
    } else {
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: architecture \"%s\" is not supported (standard, jumprelu, topk)",
                            file, arch);
    }
    if (sae->arch != UP_SAE_TOPK && act && strcmp(act, "relu") != 0 && strcmp(act, "topk") != 0)
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: activation_fn_str \"%s\" is not supported", file, act);

    if (sae->arch == UP_SAE_TOPK) {
        json_t *jk = json_object_get(cfg, "k");
        json_t *kw = json_object_get(cfg, "activation_fn_kwargs");
        if (!jk && json_is_object(kw)) jk = json_object_get(kw, "k");
        if (!json_is_integer(jk) || json_integer_value(jk) <= 0 ||
            json_integer_value(jk) > INT_MAX)
            return up_error_set(err, UP_ERR_FORMAT,
                                "%s: a topk SAE needs a positive integer k (or "
                                "activation_fn_kwargs.k)", file);
        sae->k = (int)json_integer_value(jk);
    }

    up_status s;
    if ((s = cfg_int(cfg, file, "d_in", d_in, err)) || (s = cfg_int(cfg, file, "d_sae", d_sae, err)))
        return s;
    json_t *jb = json_object_get(cfg, "apply_b_dec_to_input");
    if (jb && !json_is_boolean(jb))
        return up_error_set(err, UP_ERR_FORMAT, "%s: apply_b_dec_to_input must be true or false",
                            file);
    sae->apply_b_dec_to_input = !jb || json_is_true(jb); /* SAELens' default is true */

    if ((s = cfg_only(cfg, file, "normalize_activations", "none", err)) ||
        (s = cfg_only(cfg, file, "reshape_activations", "none", err)) ||
        (s = cfg_false(cfg, file, "finetuning_scaling_factor", err)) ||
        (s = cfg_false(cfg, file, "rescale_acts_by_decoder_norm", err)))
        return s;
    json_t *head = json_object_get(cfg, "hook_head_index");
    if (!head && json_is_object(meta)) head = json_object_get(meta, "hook_head_index");
    if (head && !json_is_null(head))
        return up_error_set(err, UP_ERR_UNSUPPORTED,
                            "%s: hook_head_index is set; per-head SAEs are not supported", file);

    json_t *jhook = json_object_get(cfg, "hook_name");
    if (!jhook && json_is_object(meta)) jhook = json_object_get(meta, "hook_name");
    if (!jhook) jhook = json_object_get(cfg, "hook_point"); /* SAELens < 3 */
    if (jhook && !json_is_null(jhook)) {
        const char *hook = json_string_value(jhook);
        if (!hook || strlen(hook) >= sizeof sae->hook)
            return up_error_set(err, UP_ERR_FORMAT, "%s: hook_name is not a short string", file);
        strcpy(sae->hook, hook);
        int layer;
        char dot;
        if (sscanf(hook, "blocks.%d%c", &layer, &dot) == 2 && dot == '.' && layer >= 0)
            sae->layer = layer;
    }
    json_t *jl = json_object_get(cfg, "hook_layer");
    if (!jl && json_is_object(meta)) jl = json_object_get(meta, "hook_layer");
    if (json_is_integer(jl) && json_integer_value(jl) >= 0 && json_integer_value(jl) <= INT_MAX) {
        int layer = (int)json_integer_value(jl);
        if (sae->layer >= 0 && sae->layer != layer)
            return up_error_set(err, UP_ERR_FORMAT, "%s: hook_layer %d disagrees with hook_name %s",
                                file, layer, sae->hook);
        sae->layer = layer;
    }
    return UP_OK;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a == 0 || dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

static up_status load_saelens(up_sae *sae, const char *dir, unsigned parts, up_error *err) {
    char *cfg_path = join(dir, "cfg.json"), *w_path = join(dir, "sae_weights.safetensors");
    json_t *cfg = NULL;
    source src = {.file = w_path};
    up_status s = UP_OK;
    if (!cfg_path || !w_path) {
        s = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto done;
    }
    json_error_t jerr;
    cfg = json_load_file(cfg_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!cfg) {
        s = up_error_set(err, access(cfg_path, R_OK) ? UP_ERR_IO : UP_ERR_FORMAT,
                         "%s: %s (line %d)", cfg_path, jerr.text, jerr.line);
        goto done;
    }
    int d_in = 0, d_sae = 0;
    if ((s = parse_cfg(sae, cfg, cfg_path, &d_in, &d_sae, err))) goto done;
    if ((s = up_safetensors_open_file(&src.st, w_path, err))) goto done;

    const char *thr = NULL;
    int log_thr = 0;
    if (sae->arch == UP_SAE_JUMPRELU) {
        up_tensor t;
        thr = "threshold";
        if (up_safetensors_find(src.st, "threshold", &t, NULL) == UP_ERR_INVALID &&
            up_safetensors_find(src.st, "log_threshold", &t, NULL) != UP_ERR_INVALID)
            thr = "log_threshold", log_thr = 1;
    }
    s = load_weights(sae, &src, parts, thr, log_thr, d_in, d_sae, err);
done:
    up_safetensors_close(src.st);
    json_decref(cfg);
    free(cfg_path);
    free(w_path);
    return s;
}

static int is_regular(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

up_status up_sae_load(up_sae **out, const char *path, unsigned parts, up_error *err) {
    *out = NULL;
    if (parts == 0) parts = UP_SAE_ALL;
    if (parts & ~(unsigned)UP_SAE_ALL)
        return up_error_set(err, UP_ERR_INVALID, "up_sae_load: bad parts mask 0x%x", parts);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return up_error_set(err, UP_ERR_IO, "cannot open SAE %s: %s", path, strerror(errno));

    /* Decide the format and the canonical path: the .npz file or the SAELens directory. */
    char *target = NULL;
    int saelens = 0;
    if (S_ISDIR(sb.st_mode)) {
        char *cfg = join(path, "cfg.json"), *npz = join(path, "params.npz");
        if (!cfg || !npz) {
            free(cfg), free(npz);
            return up_error_set(err, UP_ERR_NOMEM, "out of memory");
        }
        if (is_regular(cfg)) saelens = 1, target = strdup(path);
        else if (is_regular(npz)) target = strdup(npz);
        free(cfg), free(npz);
        if (!saelens && !target)
            return up_error_set(err, UP_ERR_IO,
                                "%s holds neither cfg.json + sae_weights.safetensors (SAELens) "
                                "nor params.npz (GemmaScope)", path);
    } else if (ends_with(path, ".npz")) {
        target = strdup(path);
    } else if (ends_with(path, "/cfg.json") || ends_with(path, "/sae_weights.safetensors") ||
               strcmp(path, "cfg.json") == 0 || strcmp(path, "sae_weights.safetensors") == 0) {
        saelens = 1;
        const char *slash = strrchr(path, '/');
        target = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    } else {
        return up_error_set(err, UP_ERR_INVALID,
                            "%s: not an SAE (expected params.npz, a SAELens directory, or a "
                            "directory holding either)", path);
    }
    if (!target) return up_error_set(err, UP_ERR_NOMEM, "out of memory");

    up_sae *sae = new_sae(target);
    free(target);
    if (!sae) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    up_status s = saelens ? load_saelens(sae, sae->path, parts, err)
                          : load_gemmascope(sae, sae->path, parts, err);
    if (s != UP_OK) {
        up_sae_free(sae);
        return s;
    }
    *out = sae;
    return UP_OK;
}

/* --- compute ------------------------------------------------------------------------- */

static up_status need(const up_sae *sae, unsigned part, const char *what, up_error *err) {
    if (sae->parts & part) return UP_OK;
    return up_error_set(err, UP_ERR_INVALID, "SAE %s was loaded without its %s (%s); %s needs it",
                        sae->path, part == UP_SAE_ENCODER ? "encoder" : "decoder",
                        part == UP_SAE_ENCODER ? "UP_SAE_ENCODER" : "UP_SAE_DECODER", what);
}

/* "a ranks below b": smaller value, or equal value and larger index. NaN ranks lowest. */
static inline int ranks_below(float va, int ia, float vb, int ib) {
    if (isnan(va)) va = -INFINITY;
    if (isnan(vb)) vb = -INFINITY;
    return va < vb || (va == vb && ia > ib);
}

static void sift_down(int *heap, int k, int at, const float *v) {
    for (;;) {
        int l = 2 * at + 1, r = l + 1, low = at;
        if (l < k && ranks_below(v[heap[l]], heap[l], v[heap[low]], heap[low])) low = l;
        if (r < k && ranks_below(v[heap[r]], heap[r], v[heap[low]], heap[low])) low = r;
        if (low == at) return;
        int t = heap[at];
        heap[at] = heap[low];
        heap[low] = t;
        at = low;
    }
}

/* Keeps ReLU(pre) at the k best entries of the row and zeroes the rest, in place. heap and
 * keep hold k entries. */
static void topk_row(float *row, int d_sae, int k, int *heap, float *keep) {
    for (int i = 0; i < k; i++) heap[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i, row);
    for (int i = k; i < d_sae; i++) {
        if (ranks_below(row[heap[0]], heap[0], row[i], i)) {
            heap[0] = i;
            sift_down(heap, k, 0, row);
        }
    }
    for (int i = 0; i < k; i++) keep[i] = row[heap[i]] > 0 ? row[heap[i]] : 0.0f;
    memset(row, 0, (size_t)d_sae * sizeof *row);
    for (int i = 0; i < k; i++) row[heap[i]] = keep[i];
}

up_status up_sae_encode(const up_sae *sae, const float *x, int n, float *acts, up_error *err) {
    up_status s = need(sae, UP_SAE_ENCODER, "encoding", err);
    if (s != UP_OK) return s;
    if (n < 0) return up_error_set(err, UP_ERR_INVALID, "up_sae_encode: n = %d", n);
    if (n == 0) return UP_OK;
    const int din = sae->d_in, dsae = sae->d_sae;
    float *centred = NULL, *topk_scratch = NULL;
    if (sae->apply_b_dec_to_input) {
        centred = alloc_floats((size_t)(n < ENCODE_CHUNK ? n : ENCODE_CHUNK) * din);
        if (!centred) return up_error_set(err, UP_ERR_NOMEM, "up_sae_encode: out of memory");
    }
    if (sae->arch == UP_SAE_TOPK) {
        topk_scratch = alloc_floats(2 * (size_t)sae->k);
        if (!topk_scratch) {
            free(centred);
            return up_error_set(err, UP_ERR_NOMEM, "up_sae_encode: out of memory");
        }
    }
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++) memcpy(acts + (size_t)r * dsae, sae->b_enc, (size_t)dsae * sizeof(float));
    for (int r0 = 0; r0 < n; r0 += ENCODE_CHUNK) {
        int m = n - r0 < ENCODE_CHUNK ? n - r0 : ENCODE_CHUNK;
        const float *in = x + (size_t)r0 * din;
        if (centred) {
            for (int r = 0; r < m; r++)
                for (int j = 0; j < din; j++)
                    centred[(size_t)r * din + j] = in[(size_t)r * din + j] - sae->b_dec[j];
            in = centred;
        }
        up_sgemm(m, dsae, din, 1.0f, in, sae->W_enc, 0, 1.0f, acts + (size_t)r0 * dsae);
    }
    free(centred);

    if (sae->arch == UP_SAE_TOPK) {
        int *heap = (int *)topk_scratch;
        float *keep = topk_scratch + sae->k;
        for (int r = 0; r < n; r++) topk_row(acts + (size_t)r * dsae, dsae, sae->k, heap, keep);
        free(topk_scratch);
        return UP_OK;
    }
    const float *thr = sae->arch == UP_SAE_JUMPRELU ? sae->threshold : NULL;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++) {
        float *a = acts + (size_t)r * dsae;
        if (thr) {
            for (int j = 0; j < dsae; j++) a[j] = (a[j] > thr[j] && a[j] > 0.0f) ? a[j] : 0.0f;
        } else {
            for (int j = 0; j < dsae; j++) a[j] = a[j] > 0.0f ? a[j] : 0.0f;
        }
    }
    return UP_OK;
}

up_status up_sae_decode(const up_sae *sae, const float *acts, int n, float *out, up_error *err) {
    up_status s = need(sae, UP_SAE_DECODER, "decoding", err);
    if (s != UP_OK) return s;
    if (n < 0) return up_error_set(err, UP_ERR_INVALID, "up_sae_decode: n = %d", n);
    const int din = sae->d_in, dsae = sae->d_sae;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++) {
        const float *a = acts + (size_t)r * dsae;
        float *o = out + (size_t)r * din;
        memset(o, 0, (size_t)din * sizeof *o);
        for (int k = 0; k < dsae; k++) {
            if (a[k] == 0.0f) continue;
            const float ak = a[k], *w = sae->W_dec + (size_t)k * din;
            for (int j = 0; j < din; j++) o[j] += ak * w[j];
        }
        for (int j = 0; j < din; j++) o[j] += sae->b_dec[j];
    }
    return UP_OK;
}

up_status up_sae_stats(const up_sae *sae, const float *x, int n, up_sae_metrics *out,
                       up_error *err) {
    up_status s;
    if ((s = need(sae, UP_SAE_ENCODER, "up_sae_stats", err)) ||
        (s = need(sae, UP_SAE_DECODER, "up_sae_stats", err)))
        return s;
    if (n < 1) return up_error_set(err, UP_ERR_INVALID, "up_sae_stats: n = %d", n);
    const int din = sae->d_in, dsae = sae->d_sae;
    double *mean = calloc((size_t)din, sizeof *mean);
    float *acts = alloc_floats((size_t)STATS_CHUNK * dsae);
    float *recon = alloc_floats((size_t)STATS_CHUNK * din);
    if (!mean || !acts || !recon) {
        free(mean), free(acts), free(recon);
        return up_error_set(err, UP_ERR_NOMEM, "up_sae_stats: out of memory");
    }
    for (int r = 0; r < n; r++)
        for (int j = 0; j < din; j++) mean[j] += x[(size_t)r * din + j];
    for (int j = 0; j < din; j++) mean[j] /= n;

    double sse = 0, sst = 0, l0 = 0;
    for (int r0 = 0; r0 < n && s == UP_OK; r0 += STATS_CHUNK) {
        int m = n - r0 < STATS_CHUNK ? n - r0 : STATS_CHUNK;
        const float *xc = x + (size_t)r0 * din;
        if ((s = up_sae_encode(sae, xc, m, acts, err)) || (s = up_sae_decode(sae, acts, m, recon, err)))
            break;
        for (size_t i = 0; i < (size_t)m * dsae; i++) l0 += acts[i] != 0.0f;
        for (int r = 0; r < m; r++)
            for (int j = 0; j < din; j++) {
                double e = (double)xc[(size_t)r * din + j] - recon[(size_t)r * din + j];
                double c = (double)xc[(size_t)r * din + j] - mean[j];
                sse += e * e;
                sst += c * c;
            }
    }
    free(mean), free(acts), free(recon);
    if (s != UP_OK) return s;
    out->fvu = sst > 0 ? sse / sst : NAN;
    out->mse = sse / ((double)n * din);
    out->mean_l0 = l0 / n;
    return UP_OK;
}

/* --- save ---------------------------------------------------------------------------- */

up_status up_sae_save(const up_sae *sae, const char *dir, up_error *err) {
    if ((sae->parts & UP_SAE_ALL) != UP_SAE_ALL)
        return up_error_set(err, UP_ERR_INVALID, "SAE %s: saving needs both encoder and decoder",
                            sae->path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return up_error_set(err, UP_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    char *w_path = join(dir, "sae_weights.safetensors"), *cfg_path = join(dir, "cfg.json");
    json_t *cfg = NULL;
    char *text = NULL;
    up_status s = UP_OK;
    if (!w_path || !cfg_path) {
        s = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto done;
    }
    up_safetensors_writer *w;
    if ((s = up_safetensors_writer_open(&w, w_path, err))) goto done;
    int64_t enc[2] = {sae->d_in, sae->d_sae}, dec[2] = {sae->d_sae, sae->d_in};
    int64_t vs[1] = {sae->d_sae}, vd[1] = {sae->d_in};
    if ((s = up_safetensors_writer_add(w, "W_enc", UP_DTYPE_F32, 2, enc, sae->W_enc, err)) ||
        (s = up_safetensors_writer_add(w, "W_dec", UP_DTYPE_F32, 2, dec, sae->W_dec, err)) ||
        (s = up_safetensors_writer_add(w, "b_enc", UP_DTYPE_F32, 1, vs, sae->b_enc, err)) ||
        (s = up_safetensors_writer_add(w, "b_dec", UP_DTYPE_F32, 1, vd, sae->b_dec, err)) ||
        (sae->threshold &&
         (s = up_safetensors_writer_add(w, "threshold", UP_DTYPE_F32, 1, vs, sae->threshold,
                                        err)))) {
        up_safetensors_writer_abort(w);
        goto done;
    }
    if ((s = up_safetensors_writer_close(w, err))) goto done;

    static const char *arch_names[] = {"jumprelu", "standard", "topk"};
    cfg = json_pack("{s:s, s:i, s:i, s:s, s:s, s:b, s:s, s:s, s:{s:s?}}", "architecture",
                    arch_names[sae->arch], "d_in", sae->d_in, "d_sae", sae->d_sae, "dtype",
                    "float32", "device", "cpu", "apply_b_dec_to_input", sae->apply_b_dec_to_input,
                    "normalize_activations", "none", "reshape_activations", "none", "metadata",
                    "hook_name", sae->hook[0] ? sae->hook : NULL);
    if (!cfg) {
        s = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (sae->arch == UP_SAE_TOPK) json_object_set_new(cfg, "k", json_integer(sae->k));
    if (sae->arch == UP_SAE_RELU) json_object_set_new(cfg, "activation_fn_str", json_string("relu"));
    if (!(text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) {
        s = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto done;
    }
    s = up_fs_write_atomic(cfg_path, text, strlen(text), err);
done:
    json_decref(cfg);
    free(text);
    free(w_path);
    free(cfg_path);
    return s;
}
