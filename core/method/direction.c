#include "method/direction.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "engine/batch.h"
#include "engine/hooks.h"
#include "engine/position.h"
#include "formats/npy.h"
#include "formats/safetensors.h"

typedef struct accum {
    double *mean; /* (n_pos, n_layers, d) running sums */
    int n_pos, n_layers, d;
} accum;

static int accumulate_hook(const up_hook_call *call, void *user) {
    accum *a = user;
    const int T = call->n_tok, d = call->d, l = call->point.layer;
    for (int b = 0; b < call->n_rows; b++) {
        for (int i = 0; i < a->n_pos; i++) {
            const float *h = call->act + ((size_t)b * T + (T - a->n_pos + i)) * d;
            double *dst = a->mean + ((size_t)i * a->n_layers + l) * d;
            for (int j = 0; j < d; j++) dst[j] += h[j];
        }
    }
    return UP_HOOK_CONTINUE;
}

/* A batch of prompts is a work unit (dist.h): its sums (n_pos, n_layers, d) in double, from
 * zero, are added to the total in batch order, so the bits do not depend on which rank ran
 * which batch or when it came back. */
typedef struct means_job {
    accum a;                    /* a.mean: the running batch's sums */
    const up_token_lists *p;
    int batch;
    up_state *s;
    int32_t *tok;
    int *pad;
    size_t n_out;
    double *total;              /* (n_out) batches added so far, in order */
    double **held;              /* (n_batches) sums come in before their turn */
    int next, done;             /* the next batch to add; prompts in */
    up_progress_fn progress;
    void *user;
} means_job;

static up_status means_compute(int unit, void *user, up_dist_bytes *out, up_error *err) {
    means_job *J = user;
    const up_model_config *c = &up_state_model(J->s)->cfg;
    const int start = unit * J->batch, B = J->p->n - start < J->batch ? J->p->n - start : J->batch;
    if (!(J->a.mean = calloc(J->n_out, sizeof *J->a.mean))) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    up_hook hooks[2] = {{{UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, accumulate_hook, &J->a},
                        up_hook_stop((up_hook_point){UP_HOOK_RESID_PRE, c->n_layers - 1})};
    up_hooks hk = {hooks, 2};
    const int T = up_batch_left_pad(J->p->ids + start, J->p->lens + start, NULL, B, c->pad_id, J->tok, J->pad);
    up_state_reset(J->s);
    up_status st = up_forward(J->s, J->tok, J->pad, NULL, B, T, &hk, NULL, UP_LOGITS_NONE, err);
    if (st) {
        free(J->a.mean);
        return st;
    }
    out->data = J->a.mean, out->size = J->n_out * sizeof *J->a.mean;
    J->a.mean = NULL;
    return UP_OK;
}

static up_status means_arrived(int unit, const void *data, size_t size, void *user, up_error *err) {
    means_job *J = user;
    if (size != J->n_out * sizeof(double)) return up_error_set(err, UP_ERR_FORMAT, "difference in means: a batch's sums came back cut short");
    if (!(J->held[unit] = malloc(size))) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    memcpy(J->held[unit], data, size);
    for (; J->next * J->batch < J->p->n && J->held[J->next]; J->next++) {
        for (size_t i = 0; i < J->n_out; i++) J->total[i] += J->held[J->next][i];
        free(J->held[J->next]);
        J->held[J->next] = NULL;
    }
    const int start = unit * J->batch;
    J->done += J->p->n - start < J->batch ? J->p->n - start : J->batch;
    if (J->progress) J->progress(J->done, J->p->n, J->user);
    return UP_OK;
}

up_status up_direction_means(const up_model *m, const up_token_lists *p, int n_pos, int batch, double *mean,
                             up_progress_fn progress, void *user, up_error *err) {
    const up_model_config *c = &m->cfg;
    if (p->n <= 0) return up_error_set(err, UP_ERR_INVALID, "no prompts");
    if (n_pos <= 0) return up_error_set(err, UP_ERR_INVALID, "need at least one position");
    if (batch <= 0) batch = 8;
    int T_max = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->lens[i] < n_pos)
            return up_error_set(err, UP_ERR_INVALID, "prompt %d has %d tokens, fewer than the %d positions", i,
                                p->lens[i], n_pos);
        if (p->lens[i] > T_max) T_max = p->lens[i];
    }
    const size_t n_out = (size_t)n_pos * c->n_layers * c->d_model;
    memset(mean, 0, n_out * sizeof *mean);
    means_job J = {{NULL, n_pos, c->n_layers, c->d_model}, p, batch, NULL, NULL, NULL, n_out, mean, NULL, 0, 0,
                   progress, user};
    const int n_batches = (p->n + batch - 1) / batch;
    J.tok = malloc((size_t)batch * T_max * sizeof *J.tok);
    J.pad = malloc((size_t)batch * sizeof *J.pad);
    J.held = calloc((size_t)n_batches, sizeof *J.held);
    up_status st = J.tok && J.pad && J.held ? up_state_init(&J.s, m, batch, T_max, err)
                                            : up_error_set(err, UP_ERR_NOMEM, "out of memory");
    if (!st) {
        const up_dist_job job = {n_batches, means_compute, means_arrived, &J};
        st = up_dist_map(&job, err);
    }
    if (!st) st = up_dist_share_into(mean, n_out * sizeof *mean, "difference in means", err); /* rank 0's sums */
    for (size_t i = 0; !st && i < n_out; i++) mean[i] /= p->n;
    for (int b = 0; J.held && b < n_batches; b++) free(J.held[b]);
    free(J.held);
    up_state_free(J.s);
    free(J.tok);
    free(J.pad);
    return st;
}

up_status up_direction_candidates(const up_model *m, const up_token_lists *harmful, const up_token_lists *harmless,
                                  int n_pos, int batch, float *candidates, up_progress_fn progress, void *user,
                                  up_error *err) {
    const size_t n = (size_t)n_pos * m->cfg.n_layers * m->cfg.d_model;
    double *mh = malloc(n * sizeof *mh), *ml = malloc(n * sizeof *ml);
    up_status st = mh && ml ? UP_OK : up_error_set(err, UP_ERR_NOMEM, "out of memory");
    if (!st) st = up_direction_means(m, harmful, n_pos, batch, mh, progress, user, err);
    if (st) up_error_prefix(err, "harmful prompts");
    else if ((st = up_direction_means(m, harmless, n_pos, batch, ml, progress, user, err)))
        up_error_prefix(err, "harmless prompts");
    for (size_t i = 0; !st && i < n; i++) candidates[i] = (float)(mh[i] - ml[i]);
    free(mh);
    free(ml);
    return st;
}

double up_direction_normalize(float *v, int d) {
    double n = 0;
    for (int j = 0; j < d; j++) n += (double)v[j] * v[j];
    n = sqrt(n);
    if (n > 0)
        for (int j = 0; j < d; j++) v[j] = (float)(v[j] / n);
    return n;
}

/* Picks the vector out of a (d) or (n_pos, n_layers, d) array of any float dtype. */
static up_status pick(const char *what, int ndim, const int64_t *shape, const void *data, up_dtype dtype, int d,
                      int has_index, int pos, int layer, float *out, up_error *err) {
    size_t offset = 0;
    if (ndim == 1 && shape[0] == d) {
        offset = 0;
    } else if (ndim == 3 && shape[2] == d) {
        if (!has_index)
            return up_error_set(err, UP_ERR_INVALID,
                                "%s holds (%lld, %lld, %d) candidates: choose one with a position and a layer", what,
                                (long long)shape[0], (long long)shape[1], d);
        const int p = up_position_resolve(pos, (int)shape[0]);
        if (p < 0 || p >= shape[0] || layer < 0 || layer >= shape[1])
            return up_error_set(err, UP_ERR_INVALID,
                                "%s: no candidate at position %d, layer %d: it holds positions -%lld..-1 and layers "
                                "0-%lld", what, pos, layer, (long long)shape[0], (long long)shape[1] - 1);
        offset = ((size_t)p * shape[1] + layer) * d;
    } else {
        char got[96] = "";
        for (int i = 0; i < ndim && strlen(got) < 80; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)shape[i]);
        return up_error_set(err, UP_ERR_INVALID, "%s: expected shape (%d) or (n_pos, n_layers, %d), got (%s)", what, d,
                            d, got);
    }
    up_convert_to_f32(out, (const char *)data + offset * up_dtype_size(dtype), dtype, (size_t)d);
    for (int j = 0; j < d; j++)
        if (!isfinite(out[j])) return up_error_set(err, UP_ERR_FORMAT, "%s: element %d is NaN or infinite", what, j);
    return UP_OK;
}

static up_status load_npy(const char *path, int d, int has_index, int pos, int layer, float *out, up_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return up_error_set(err, UP_ERR_IO, "cannot open direction file %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = size > 0 ? malloc((size_t)size) : NULL;
    up_status st = UP_OK;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) st = up_error_set(err, UP_ERR_IO, "cannot read %s", path);
    fclose(f);
    up_npy_info info;
    if (!st && (st = up_npy_parse_header(buf, (size_t)size, &info, err))) up_error_prefix(err, "%s", path);
    if (!st && info.header_bytes + info.data_bytes > (uint64_t)size)
        st = up_error_set(err, UP_ERR_FORMAT, "%s: truncated array data", path);
    up_dtype dtype = UP_DTYPE_F32;
    if (!st) {
        if (!strcmp(info.descr, "<f4")) dtype = UP_DTYPE_F32;
        else if (!strcmp(info.descr, "<f2")) dtype = UP_DTYPE_F16;
        else st = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: dtype %s (need float32 or float16)", path, info.descr);
    }
    if (!st) st = pick(path, info.ndim, info.shape, (const char *)buf + info.header_bytes, dtype, d, has_index, pos, layer, out, err);
    free(buf);
    return st;
}

up_status up_direction_load(const char *spec, int d, int has_index, int pos, int layer, float *out, up_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s", spec);
    const char *name = NULL;
    char *ext = strstr(path, ".safetensors");
    if (ext && ext[12] == ':') {
        ext[12] = '\0';
        name = ext + 13;
    }
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".npy")) return load_npy(path, d, has_index, pos, layer, out, err);
    if (!ext)
        return up_error_set(err, UP_ERR_INVALID, "direction %s: expected FILE.npy or FILE.safetensors[:NAME]", spec);
    up_safetensors *st = NULL;
    up_status s = up_safetensors_open_file(&st, path, err);
    if (s) return s;
    if (!name) {
        up_tensor probe;
        if (up_safetensors_find(st, "direction", &probe, NULL) == UP_OK) name = "direction";
        else if (up_safetensors_find(st, "candidates", &probe, NULL) == UP_OK) name = "candidates";
        else if (up_safetensors_count(st) == 1) name = up_safetensors_name(st, 0);
        else {
            up_safetensors_close(st);
            return up_error_set(err, UP_ERR_INVALID, "%s holds several tensors: name one as %s:NAME", path, path);
        }
    }
    up_tensor t;
    char what[4200];
    snprintf(what, sizeof what, "%s:%s", path, name);
    s = up_safetensors_find(st, name, &t, err);
    if (!s && t.dtype != UP_DTYPE_F32 && t.dtype != UP_DTYPE_BF16 && t.dtype != UP_DTYPE_F16)
        s = up_error_set(err, UP_ERR_UNSUPPORTED, "%s: dtype %s is not a float type", what, up_dtype_name(t.dtype));
    if (!s) s = pick(what, t.ndim, t.shape, t.data, t.dtype, d, has_index, pos, layer, out, err);
    up_safetensors_close(st);
    return s;
}
