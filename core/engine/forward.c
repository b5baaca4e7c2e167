#include "engine/forward.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "engine/engine_impl.h"

struct up_state {
    const up_model *m;
    int max_rows, max_seq;
    int n_rows;     /* rows of the cached batch; 0 while empty */
    int n_cols;     /* cache columns filled */
    int stopped;    /* the last pass ended early at a hook */
    int pause_idx;  /* hook-point index the next pass pauses at; -1: none */
    int paused_idx; /* index the last pass paused at (its hooks not yet run); -1: not paused */
    int chunk_rows, chunk_tok; /* shape of the last chunk, which a resumed pass continues */
    int *col_pos;   /* (max_rows, max_seq) position of each cached column, -1 = pad */
    int *next_pos;  /* (max_rows) */
    float *k_cache; /* (n_layers, max_rows, max_seq, nkv*hd) after RoPE */
    float *v_cache; /* (n_layers, max_rows, max_seq, nkv*hd) */
    /* per-chunk scratch, N = max_rows * max_seq slots */
    float *x;       /* (N, d) residual stream */
    float *xn;      /* (N, d) normalised input of a sublayer */
    float *sub;     /* (N, d) sublayer output */
    float *q;       /* (N, nh*hd) */
    float *k;       /* (N, nkv*hd) */
    float *v;       /* (N, nkv*hd) */
    float *ctx;     /* (N, nh*hd) attention output before o_proj */
    float *gate;    /* (N, d_mlp) */
    float *up;      /* (N, d_mlp) */
    float *rows_last; /* (max_rows, d) last slot of each row, for last-position logits */
    float *scores;  /* (threads, max_seq) */
    int *pos;       /* (N) position of each slot of the chunk */
    float *wscratch; /* widened weight block */
    size_t wscratch_floats;
    int n_threads;
    up_tape *tape;
};

/* ---- hook point names ---------------------------------------------------- */

static const char *const kind_suffix[UP_HOOK_KIND_COUNT] = {
    [UP_HOOK_EMBED] = "hook_embed",
    [UP_HOOK_RESID_PRE] = "hook_resid_pre",
    [UP_HOOK_ATTN_OUT] = "hook_attn_out",
    [UP_HOOK_RESID_MID] = "hook_resid_mid",
    [UP_HOOK_MLP_OUT] = "hook_mlp_out",
    [UP_HOOK_RESID_POST] = "hook_resid_post",
    [UP_HOOK_LN_FINAL] = "ln_final.hook_normalized",
};

int up_hook_point_parse(const char *name, int n_layers, up_hook_point *out) {
    if (!strcmp(name, "hook_embed")) {
        *out = (up_hook_point){UP_HOOK_EMBED, -1};
        return 0;
    }
    if (!strcmp(name, "ln_final.hook_normalized")) {
        *out = (up_hook_point){UP_HOOK_LN_FINAL, -1};
        return 0;
    }
    int layer, used = 0;
    if (sscanf(name, "blocks.%d.%n", &layer, &used) != 1 || used == 0) return -1;
    if (layer < 0 || layer >= n_layers) return -1;
    for (int k = UP_HOOK_RESID_PRE; k <= UP_HOOK_RESID_POST; k++) {
        if (!strcmp(name + used, kind_suffix[k])) {
            *out = (up_hook_point){(up_hook_kind)k, layer};
            return 0;
        }
    }
    return -1;
}

void up_hook_point_name(up_hook_point p, char *buf, size_t size) {
    if (p.kind == UP_HOOK_EMBED || p.kind == UP_HOOK_LN_FINAL) snprintf(buf, size, "%s", kind_suffix[p.kind]);
    else snprintf(buf, size, "blocks.%d.%s", p.layer, kind_suffix[p.kind]);
}

int up_hook_point_count(int n_layers) { return 2 + 5 * n_layers; }

up_hook_point up_hook_point_at(int n_layers, int i) {
    if (i == 0) return (up_hook_point){UP_HOOK_EMBED, -1};
    if (i == 1 + 5 * n_layers) return (up_hook_point){UP_HOOK_LN_FINAL, -1};
    return (up_hook_point){(up_hook_kind)(UP_HOOK_RESID_PRE + (i - 1) % 5), (i - 1) / 5};
}

int up_hook_point_index(up_hook_point p, int n_layers) {
    if (p.kind == UP_HOOK_EMBED) return 0;
    if (p.kind == UP_HOOK_LN_FINAL) return 1 + 5 * n_layers;
    return 1 + 5 * p.layer + (p.kind - UP_HOOK_RESID_PRE);
}

/* ---- state ----------------------------------------------------------------- */

up_status up_state_init(up_state **out, const up_model *m, int max_rows, int max_seq, up_error *err) {
    *out = NULL;
    if (max_rows <= 0 || max_seq <= 0)
        return up_error_set(err, UP_ERR_INVALID, "state needs at least one row and one column");
    const up_model_config *c = &m->cfg;
    up_state *s = calloc(1, sizeof *s);
    if (!s) return up_error_set(err, UP_ERR_NOMEM, "out of memory");
    s->m = m;
    s->max_rows = max_rows;
    s->max_seq = max_seq;
    s->n_threads = omp_get_max_threads();
    const size_t N = (size_t)max_rows * max_seq, d = c->d_model, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, f = c->d_mlp;
    /* Widened weight blocks: the products' inner dimension is d, qd or d_mlp. */
    const size_t k_max = f > d ? (f > qd ? f : qd) : (d > qd ? d : qd);
    s->wscratch_floats = up_linear_scratch_floats((int)k_max);
    size_t cache = (size_t)c->n_layers * N * kvd;
    size_t floats = 2 * cache + 3 * N * d + 2 * N * qd + 2 * N * kvd + 2 * N * f + (size_t)max_rows * d +
                    (size_t)s->n_threads * max_seq + s->wscratch_floats;
    float *block = malloc(floats * sizeof(float));
    int *ints = malloc(((size_t)N + max_rows + N) * sizeof(int));
    if (!block || !ints) {
        free(block);
        free(ints);
        free(s);
        return up_error_set(err, UP_ERR_NOMEM, "cannot allocate %.2f GB of activations and KV cache for %d rows x %d tokens",
                            floats * 4.0 / 1e9, max_rows, max_seq);
    }
    float *p = block;
    s->k_cache = p, p += cache;
    s->v_cache = p, p += cache;
    s->x = p, p += N * d;
    s->xn = p, p += N * d;
    s->sub = p, p += N * d;
    s->q = p, p += N * qd;
    s->ctx = p, p += N * qd;
    s->k = p, p += N * kvd;
    s->v = p, p += N * kvd;
    s->gate = p, p += N * f;
    s->up = p, p += N * f;
    s->rows_last = p, p += (size_t)max_rows * d;
    s->scores = p, p += (size_t)s->n_threads * max_seq;
    s->wscratch = p;
    s->col_pos = ints;
    s->next_pos = ints + N;
    s->pos = ints + N + max_rows;
    up_state_reset(s);
    *out = s;
    return UP_OK;
}

void up_state_free(up_state *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->col_pos);
    free(s);
}

void up_state_reset(up_state *s) {
    s->n_rows = 0;
    s->n_cols = 0;
    s->stopped = 0;
    s->pause_idx = -1;
    s->paused_idx = -1;
    for (int b = 0; b < s->max_rows; b++) s->next_pos[b] = 0;
}

int up_state_stopped(const up_state *s) { return s->stopped; }
int up_state_paused(const up_state *s) { return s->paused_idx >= 0; }
void up_state_attach_tape(up_state *s, up_tape *tape) { s->tape = tape; }
const up_model *up_state_model(const up_state *s) { return s->m; }

/* ---- kernels ----------------------------------------------------------------- */

/* HF Gemma2RMSNorm: (x * rsqrt(mean(x^2) + eps)) * (1 + w), in fp32. */
static void rmsnorm(float *out, const float *x, const float *w, int n_slots, int d, float eps, float *rstd_out) {
#pragma omp parallel for schedule(static) if ((long)n_slots * d >= UP_OMP_MIN_FLOATS)
    for (int i = 0; i < n_slots; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float rstd = 1.0f / sqrtf((float)(ss / d) + eps);
        if (rstd_out) rstd_out[i] = rstd;
        for (int j = 0; j < d; j++) oi[j] = (xi[j] * rstd) * (1.0f + w[j]);
    }
}

float up_gelu(float x, up_activation act) {
    if (act == UP_ACT_GELU_EXACT) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    const float k = 0.79788456080286536f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

float up_gelu_grad(float x, up_activation act) {
    if (act == UP_ACT_GELU_EXACT) {
        const float inv_sqrt2pi = 0.39894228040143268f;
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * inv_sqrt2pi * expf(-0.5f * x * x);
    }
    const float k = 0.79788456080286536f;
    float u = k * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k * (1.0f + 3.0f * 0.044715f * x * x);
}

void up_rope_rotate(float *t, const int *pos, int n_slots, int n_heads, int hd, float theta, int transpose) {
    const int half = hd / 2;
    const float sign = transpose ? -1.0f : 1.0f;
    /* A decode step's few slots (tens of microseconds) are not worth a parallel region. */
#pragma omp parallel for schedule(static) if (n_slots > 4)
    for (int i = 0; i < n_slots; i++) {
        float p = (float)(pos[i] < 0 ? 0 : pos[i]);
        for (int h = 0; h < n_heads; h++) {
            float *v = t + ((size_t)i * n_heads + h) * hd;
            for (int j = 0; j < half; j++) {
                /* HF: inv_freq = 1 / theta^(arange(0, hd, 2).float() / hd), in fp32. */
                float angle = p * (1.0f / powf(theta, (float)(2 * j) / (float)hd));
                float c = cosf(angle), s = sign * sinf(angle);
                float a = v[j], b = v[j + half];
                v[j] = a * c - b * s;
                v[j + half] = b * c + a * s;
            }
        }
    }
}

static int run_hooks(up_state *s, const up_hooks *hooks, up_hook_kind kind, int layer, float *act, int B, int T,
                     int col0, const int *n_prompt) {
    if (!hooks) return UP_HOOK_CONTINUE;
    up_hook_call call = {{kind, layer}, act, B, T, s->m->cfg.d_model, s->pos, col0, n_prompt};
    for (int i = 0; i < hooks->n; i++) {
        const up_hook *h = &hooks->items[i];
        if (h->point.kind != kind) continue;
        if (h->point.layer != layer && h->point.layer != UP_HOOK_ANY_LAYER) continue;
        int r = h->fn(&call, h->user);
        if (r != UP_HOOK_CONTINUE) return r;
    }
    return UP_HOOK_CONTINUE;
}

/* Attention of the chunk's queries over every cached column of their row. */
static void attention(up_state *s, int layer, int B, int T, up_tape_layer *tape) {
    const up_model_config *c = &s->m->cfg;
    const int nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, group = nh / nkv;
    const int qd = nh * hd, kvd = nkv * hd, n_cols = s->n_cols; /* includes this chunk */
    const int sliding = c->sliding_window > 0 && layer % 2 == 0;
    const int window = c->sliding_window;
    const float scale = 1.0f / sqrtf(c->query_pre_attn_scalar);
    const float cap = c->attn_softcap;
    const size_t row_stride = (size_t)s->max_seq * kvd;
    const float *kc = s->k_cache + (size_t)layer * s->max_rows * row_stride;
    const float *vc = s->v_cache + (size_t)layer * s->max_rows * row_stride;
    const int col0 = n_cols - T;
    /* s->scores has a row per thread the pool had at up_state_init; a pool grown since must
     * not index past it. */
#pragma omp parallel for collapse(3) schedule(static) num_threads(s->n_threads)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            for (int t = 0; t < T; t++) {
                float *sc = s->scores + (size_t)omp_get_thread_num() * s->max_seq;
                const int slot = b * T + t, pq = s->pos[slot], g = h / group;
                const float *qv = s->q + (size_t)slot * qd + (size_t)h * hd;
                float *out = s->ctx + (size_t)slot * qd + (size_t)h * hd;
                const int *cpos = s->col_pos + (size_t)b * s->max_seq;
                float *tp = tape ? tape->probs + (((size_t)b * nh + h) * T + t) * T : NULL;
                float *tc = tape ? tape->capped + (((size_t)b * nh + h) * T + t) * T : NULL;
                if (tp) memset(tp, 0, (size_t)T * sizeof(float)), memset(tc, 0, (size_t)T * sizeof(float));
                memset(out, 0, (size_t)hd * sizeof(float));
                if (pq < 0) continue; /* pad query: attends to nothing */
                float mx = -INFINITY;
                for (int j = 0; j < n_cols; j++) {
                    int pk = cpos[j];
                    if (pk < 0 || pk > pq || (sliding && pq - pk >= window)) {
                        sc[j] = -INFINITY;
                        continue;
                    }
                    const float *kv = kc + (size_t)b * row_stride + (size_t)j * kvd + (size_t)g * hd;
                    float dot = 0.0f;
                    for (int e = 0; e < hd; e++) dot += qv[e] * kv[e];
                    float z = dot * scale;
                    if (cap > 0) {
                        float th = tanhf(z / cap);
                        if (tc && j >= col0) tc[j - col0] = th;
                        z = th * cap;
                    }
                    sc[j] = z;
                    if (z > mx) mx = z;
                }
                double sum = 0.0;
                for (int j = 0; j < n_cols; j++) {
                    float e = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - mx);
                    sc[j] = e;
                    sum += e;
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < n_cols; j++) {
                    float p = sc[j] * inv;
                    if (p == 0.0f) continue;
                    if (tp && j >= col0) tp[j - col0] = p;
                    const float *vv = vc + (size_t)b * row_stride + (size_t)j * kvd + (size_t)g * hd;
                    for (int e = 0; e < hd; e++) out[e] += p * vv[e];
                }
            }
        }
    }
}

static void add_into(float *x, const float *y, size_t n) {
#pragma omp parallel for schedule(static) if (n >= (size_t)UP_OMP_MIN_FLOATS)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void linear(up_state *s, float *y, const float *x, const up_weight *w, int M, int N, int K) {
    up_linear(y, x, w->data, w->dtype, M, N, K, 0, s->wscratch, s->wscratch_floats);
}

static up_status run_from(up_state *s, int from, const up_hooks *hooks, const int *n_prompt, float *logits,
                          up_logits_mode mode, up_error *err);

#define SAVE(dst, src, n) \
    do { if (tl) memcpy((dst), (src), (n) * sizeof(float)); } while (0)

up_status up_forward(up_state *s, const int32_t *tokens, const int *n_pad, const int *n_prompt, int B, int T,
                     const up_hooks *hooks, float *logits, up_logits_mode mode, up_error *err) {
    const up_model *m = s->m;
    const up_model_config *c = &m->cfg;
    if (s->stopped)
        return up_error_set(err, UP_ERR_INVALID, "the previous pass stopped early at a hook; reset the state first");
    if (s->paused_idx >= 0)
        return up_error_set(err, UP_ERR_INVALID, "the previous pass is paused; resume it or reset the state first");
    if (s->tape && s->pause_idx >= 0)
        return up_error_set(err, UP_ERR_INVALID, "a taped pass cannot pause");
    if (B <= 0 || T <= 0) return up_error_set(err, UP_ERR_INVALID, "empty batch (%d rows x %d tokens)", B, T);
    if (B > s->max_rows) return up_error_set(err, UP_ERR_INVALID, "%d rows exceed the state's %d", B, s->max_rows);
    if (s->n_rows && B != s->n_rows)
        return up_error_set(err, UP_ERR_INVALID, "the cache holds %d rows, got %d", s->n_rows, B);
    if (s->n_cols + T > s->max_seq)
        return up_error_set(err, UP_ERR_INVALID, "%d + %d tokens exceed the state's %d columns", s->n_cols, T,
                            s->max_seq);
    if (s->tape && (s->n_cols || s->tape->n_rows != B || s->tape->n_tok != T))
        return up_error_set(err, UP_ERR_INVALID, "a tape records one prefill of its allocated shape");
    for (int b = 0; b < B; b++) {
        int np = n_pad ? n_pad[b] : 0;
        if (np < 0 || np > T) return up_error_set(err, UP_ERR_INVALID, "row %d: bad pad count %d", b, np);
        for (int t = np; t < T; t++) {
            int32_t id = tokens[(size_t)b * T + t];
            if (id < 0 || id >= c->vocab_size)
                return up_error_set(err, UP_ERR_INVALID, "row %d position %d: token id %d outside the vocabulary [0, %d)",
                                    b, t, id, c->vocab_size);
        }
    }
    const int d = c->d_model, N = B * T, col0 = s->n_cols;
    for (int b = 0; b < B; b++) {
        int np = n_pad ? n_pad[b] : 0;
        for (int t = 0; t < T; t++) {
            int p = t < np ? -1 : s->next_pos[b]++;
            s->pos[b * T + t] = p;
            s->col_pos[(size_t)b * s->max_seq + col0 + t] = p;
        }
    }
    s->n_rows = B;
    s->n_cols += T;
    s->chunk_rows = B, s->chunk_tok = T;

    /* Embedding, scaled by sqrt(d) rounded to fp32 as HF's normalizer tensor is. */
    const float normalizer = (float)sqrt((double)d);
    const size_t esz = up_dtype_size(m->embed.dtype);
#pragma omp parallel for schedule(static) if ((long)N * d >= UP_OMP_MIN_FLOATS)
    for (int i = 0; i < N; i++) {
        float *xi = s->x + (size_t)i * d;
        if (s->pos[i] < 0) {
            memset(xi, 0, (size_t)d * sizeof(float));
            continue;
        }
        up_convert_to_f32(xi, (const char *)m->embed.data + (size_t)tokens[i] * d * esz, m->embed.dtype, d);
        for (int j = 0; j < d; j++) xi[j] *= normalizer;
    }
    return run_from(s, -1, hooks, n_prompt, logits, mode, err);
}

/* Hook point i of a pass that started after point `from`: pauses there if asked to (returns
 * PAUSED, hooks not run), else runs its hooks. Points up to `from` were done before. */
enum { PAUSED = 2 };
static int at_point(up_state *s, int i, int from, const up_hooks *hooks, up_hook_kind kind, int layer, float *act,
                    const int *n_prompt) {
    if (i < from) return UP_HOOK_CONTINUE;
    if (i == s->pause_idx && i != from) {
        s->paused_idx = i;
        return PAUSED;
    }
    return run_hooks(s, hooks, kind, layer, act, s->chunk_rows, s->chunk_tok, s->n_cols - s->chunk_tok, n_prompt);
}

/* The pass over the last appended chunk, from just after hook point `from` (-1: the
 * embedding is done, nothing else) to the logits. The work that leads up to point i runs only
 * when i > from, so a resumed pass starts where the paused one stopped. */
static up_status run_from(up_state *s, int from, const up_hooks *hooks, const int *n_prompt, float *logits,
                          up_logits_mode mode, up_error *err) {
    const up_model *m = s->m;
    const up_model_config *c = &m->cfg;
    const int d = c->d_model, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, f = c->d_mlp;
    const int B = s->chunk_rows, T = s->chunk_tok;
    const int qd = nh * hd, kvd = nkv * hd, N = B * T, col0 = s->n_cols - T, L = c->n_layers;
    const float eps = c->rms_norm_eps;
#define POINT(i, kind, layer, act) at_point(s, (i), from, hooks, (kind), (layer), (act), n_prompt)
    int r = POINT(0, UP_HOOK_EMBED, -1, s->x);
    for (int l = 0; l < L && r == UP_HOOK_CONTINUE; l++) {
        const int ip = up_hook_point_index((up_hook_point){UP_HOOK_RESID_PRE, l}, L);
        if (ip + 4 < from) continue; /* the whole layer was done before */
        const up_layer_weights *w = &m->layers[l];
        up_tape_layer *tl = s->tape && l >= s->tape->first && l <= s->tape->last ? &s->tape->layers[l - s->tape->first] : NULL;
        if ((r = POINT(ip, UP_HOOK_RESID_PRE, l, s->x))) break;
        if (ip + 1 > from) {
            SAVE(tl->x_in, s->x, (size_t)N * d);
            rmsnorm(s->xn, s->x, w->input_norm.data, N, d, eps, tl ? tl->rstd : NULL);
            linear(s, s->q, s->xn, &w->q_proj, N, qd, d);
            linear(s, s->k, s->xn, &w->k_proj, N, kvd, d);
            linear(s, s->v, s->xn, &w->v_proj, N, kvd, d);
            up_rope_rotate(s->q, s->pos, N, nh, hd, c->rope_theta, 0);
            up_rope_rotate(s->k, s->pos, N, nkv, hd, c->rope_theta, 0);
            SAVE(tl->q, s->q, (size_t)N * qd);
            SAVE(tl->k, s->k, (size_t)N * kvd);
            SAVE(tl->v, s->v, (size_t)N * kvd);
            const size_t row_stride = (size_t)s->max_seq * kvd;
            for (int b = 0; b < B; b++) {
                size_t off = ((size_t)l * s->max_rows + b) * row_stride + (size_t)col0 * kvd;
                memcpy(s->k_cache + off, s->k + (size_t)b * T * kvd, (size_t)T * kvd * sizeof(float));
                memcpy(s->v_cache + off, s->v + (size_t)b * T * kvd, (size_t)T * kvd * sizeof(float));
            }
            attention(s, l, B, T, tl);
            if (tl && tl->ctx) memcpy(tl->ctx, s->ctx, (size_t)N * qd * sizeof(float));
            linear(s, s->sub, s->ctx, &w->o_proj, N, d, qd);
            SAVE(tl->attn_raw, s->sub, (size_t)N * d);
            rmsnorm(s->sub, s->sub, w->post_attn_norm.data, N, d, eps, tl ? tl->rstd + N : NULL);
        }
        if ((r = POINT(ip + 1, UP_HOOK_ATTN_OUT, l, s->sub))) break;
        if (ip + 2 > from) add_into(s->x, s->sub, (size_t)N * d);
        if ((r = POINT(ip + 2, UP_HOOK_RESID_MID, l, s->x))) break;
        if (ip + 3 > from) {
            SAVE(tl->resid_mid, s->x, (size_t)N * d);
            rmsnorm(s->xn, s->x, w->pre_ffw_norm.data, N, d, eps, tl ? tl->rstd + 2 * N : NULL);
            linear(s, s->gate, s->xn, &w->gate_proj, N, f, d);
            linear(s, s->up, s->xn, &w->up_proj, N, f, d);
            SAVE(tl->gate, s->gate, (size_t)N * f);
            SAVE(tl->up, s->up, (size_t)N * f);
            const up_activation act = c->activation;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < (size_t)N * f; i++) s->gate[i] = up_gelu(s->gate[i], act) * s->up[i];
            linear(s, s->sub, s->gate, &w->down_proj, N, d, f);
            SAVE(tl->mlp_raw, s->sub, (size_t)N * d);
            rmsnorm(s->sub, s->sub, w->post_ffw_norm.data, N, d, eps, tl ? tl->rstd + 3 * N : NULL);
        }
        if ((r = POINT(ip + 3, UP_HOOK_MLP_OUT, l, s->sub))) break;
        if (ip + 4 > from) add_into(s->x, s->sub, (size_t)N * d);
        if ((r = POINT(ip + 4, UP_HOOK_RESID_POST, l, s->x))) break;
    }
    if (r == UP_HOOK_CONTINUE) {
        rmsnorm(s->xn, s->x, m->final_norm.data, N, d, eps, NULL);
        r = POINT(1 + 5 * L, UP_HOOK_LN_FINAL, -1, s->xn);
    }
#undef POINT
    s->pause_idx = -1; /* a pause request holds for one pass */
    if (r == PAUSED) return UP_OK;
    if (r < 0) {
        s->stopped = 1;
        return up_error_set(err, UP_ERR_ABORTED, "a hook aborted the forward pass");
    }
    if (r == UP_HOOK_STOP) {
        s->stopped = 1;
        return UP_OK;
    }
    if (!logits || mode == UP_LOGITS_NONE) return UP_OK;
    const float *src = s->xn;
    int M = N;
    if (mode == UP_LOGITS_LAST) {
        for (int b = 0; b < B; b++)
            memcpy(s->rows_last + (size_t)b * d, s->xn + ((size_t)b * T + T - 1) * d, (size_t)d * sizeof(float));
        src = s->rows_last;
        M = B;
    }
    linear(s, logits, src, &m->lm_head, M, c->vocab_size, d);
    if (c->final_softcap > 0) {
        const float cap = c->final_softcap;
        const size_t n = (size_t)M * c->vocab_size;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) logits[i] = tanhf(logits[i] / cap) * cap;
    }
    return UP_OK;
}

/* ---- pausing and sharing rows ------------------------------------------------ */

up_status up_state_pause_at(up_state *s, up_hook_point p, up_error *err) {
    const int L = s->m->cfg.n_layers;
    if ((p.kind != UP_HOOK_RESID_PRE && p.kind != UP_HOOK_RESID_MID && p.kind != UP_HOOK_RESID_POST) || p.layer < 0 ||
        p.layer >= L)
        return up_error_set(err, UP_ERR_INVALID, "a pass pauses only at a residual point (blocks.l.hook_resid_pre/mid/post)");
    if (s->tape) return up_error_set(err, UP_ERR_INVALID, "a taped pass cannot pause");
    s->pause_idx = up_hook_point_index(p, L);
    return UP_OK;
}

up_status up_forward_resume(up_state *s, const int *n_prompt, const up_hooks *hooks, float *logits, up_logits_mode mode,
                            up_error *err) {
    if (s->paused_idx < 0) return up_error_set(err, UP_ERR_INVALID, "resume: no paused pass");
    const int from = s->paused_idx;
    s->paused_idx = -1;
    return run_from(s, from, hooks, n_prompt, logits, mode, err);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

struct up_state_snapshot {
    const up_model *m;
    int max_rows, max_seq; /* the state's shape, which the copies' layout follows */
    int n_rows, n_cols, chunk_rows, chunk_tok;
    int *col_pos;          /* (n_rows, n_cols) */
    int *next_pos;         /* (n_rows) */
    int *pos;              /* (chunk_rows * chunk_tok) */
    float *k, *v;          /* (n_layers, n_rows, n_cols, kvd) */
};

void up_state_snapshot_free(up_state_snapshot *snap) {
    if (!snap) return;
    free(snap->col_pos), free(snap->next_pos), free(snap->pos), free(snap->k), free(snap->v);
    free(snap);
}

/* Copies the cached columns of every layer and row between the state's layout and the
 * snapshot's packed one (to_snap: state -> snapshot). */
static void snapshot_copy_cache(up_state_snapshot *snap, up_state *s, int to_snap) {
    const up_model_config *c = &s->m->cfg;
    const size_t kvd = (size_t)c->n_kv_heads * c->head_dim, cols = (size_t)snap->n_cols * kvd;
    for (int l = 0; l < c->n_layers; l++)
        for (int b = 0; b < snap->n_rows; b++) {
            const size_t at = ((size_t)l * s->max_rows + b) * s->max_seq * kvd, packed = ((size_t)l * snap->n_rows + b) * cols;
            if (to_snap) {
                memcpy(snap->k + packed, s->k_cache + at, cols * sizeof(float));
                memcpy(snap->v + packed, s->v_cache + at, cols * sizeof(float));
            } else {
                memcpy(s->k_cache + at, snap->k + packed, cols * sizeof(float));
                memcpy(s->v_cache + at, snap->v + packed, cols * sizeof(float));
            }
        }
}

up_status up_state_snapshot_take(const up_state *s, up_state_snapshot **out, up_error *err) {
    *out = NULL;
    if (!s->n_cols || s->stopped || s->paused_idx >= 0)
        return up_error_set(err, UP_ERR_INVALID, "snapshot: the state holds no completed pass");
    const up_model_config *c = &s->m->cfg;
    const size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t n_kv = (size_t)c->n_layers * s->n_rows * s->n_cols * kvd, n_chunk = (size_t)s->chunk_rows * s->chunk_tok;
    up_state_snapshot *snap = calloc(1, sizeof *snap);
    if (snap) {
        *snap = (up_state_snapshot){s->m, s->max_rows, s->max_seq, s->n_rows, s->n_cols, s->chunk_rows, s->chunk_tok,
                                    malloc((size_t)s->n_rows * s->n_cols * sizeof(int)),
                                    malloc((size_t)s->n_rows * sizeof(int)), malloc(n_chunk * sizeof(int)),
                                    malloc(n_kv * sizeof(float)), malloc(n_kv * sizeof(float))};
    }
    if (!snap || !snap->col_pos || !snap->next_pos || !snap->pos || !snap->k || !snap->v) {
        up_state_snapshot_free(snap);
        return up_error_set(err, UP_ERR_NOMEM, "snapshot: out of memory for %zu cached values", 2 * n_kv);
    }
    for (int b = 0; b < s->n_rows; b++)
        memcpy(snap->col_pos + (size_t)b * s->n_cols, s->col_pos + (size_t)b * s->max_seq, (size_t)s->n_cols * sizeof(int));
    memcpy(snap->next_pos, s->next_pos, (size_t)s->n_rows * sizeof(int));
    memcpy(snap->pos, s->pos, n_chunk * sizeof(int));
    snapshot_copy_cache(snap, (up_state *)s, 1);
    *out = snap;
    return UP_OK;
}

up_status up_state_rerun_from(up_state *s, const up_state_snapshot *snap, up_hook_point p, const float *x,
                              up_error *err) {
    const up_model_config *c = &s->m->cfg;
    if (snap->m != s->m || snap->max_rows != s->max_rows || snap->max_seq != s->max_seq)
        return up_error_set(err, UP_ERR_INVALID, "rerun: the snapshot was taken from a state of another shape");
    if ((p.kind != UP_HOOK_RESID_PRE && p.kind != UP_HOOK_RESID_MID && p.kind != UP_HOOK_RESID_POST) || p.layer < 0 ||
        p.layer >= c->n_layers)
        return up_error_set(err, UP_ERR_INVALID, "rerun: a pass reruns only from a residual point (blocks.l.hook_resid_pre/mid/post)");
    if (s->tape) return up_error_set(err, UP_ERR_INVALID, "rerun: a taped pass cannot pause");
    s->n_rows = snap->n_rows, s->n_cols = snap->n_cols, s->chunk_rows = snap->chunk_rows, s->chunk_tok = snap->chunk_tok;
    s->stopped = 0, s->pause_idx = -1;
    for (int b = 0; b < snap->n_rows; b++)
        memcpy(s->col_pos + (size_t)b * s->max_seq, snap->col_pos + (size_t)b * snap->n_cols, (size_t)snap->n_cols * sizeof(int));
    memcpy(s->next_pos, snap->next_pos, (size_t)snap->n_rows * sizeof(int));
    const size_t n_chunk = (size_t)snap->chunk_rows * snap->chunk_tok;
    memcpy(s->pos, snap->pos, n_chunk * sizeof(int));
    snapshot_copy_cache((up_state_snapshot *)snap, s, 0);
    memcpy(s->x, x, n_chunk * c->d_model * sizeof(float));
    s->paused_idx = up_hook_point_index(p, c->n_layers);
    return UP_OK;
}

up_status up_state_share_rows(up_state *s, const int *src, int n_rows, up_error *err) {
    const up_model_config *c = &s->m->cfg;
    if (!s->n_cols) return up_error_set(err, UP_ERR_INVALID, "share rows: nothing computed yet");
    if (s->stopped) return up_error_set(err, UP_ERR_INVALID, "share rows: the pass stopped early at a hook");
    if (n_rows <= 0 || n_rows > s->max_rows)
        return up_error_set(err, UP_ERR_INVALID, "share rows: %d rows for a state of %d", n_rows, s->max_rows);
    for (int b = 0; b < n_rows; b++)
        if (src[b] < 0 || src[b] > b || src[b] >= s->n_rows)
            return up_error_set(err, UP_ERR_INVALID, "share rows: row %d cannot copy row %d of %d (need src <= row)", b,
                                src[b], s->n_rows);
    const int L = c->n_layers, kvd = c->n_kv_heads * c->head_dim, d = c->d_model, T = s->chunk_tok;
    const int col0 = s->n_cols - T;
    /* Layers whose cache holds the last chunk: all of them, unless the pass paused inside. */
    int full = L;
    if (s->paused_idx >= 0) {
        const up_hook_point p = up_hook_point_at(L, s->paused_idx);
        full = p.layer + (p.kind == UP_HOOK_RESID_PRE ? 0 : 1);
    }
    const size_t row_stride = (size_t)s->max_seq * kvd;
    /* Descending, with src <= row: a row is overwritten only after every row copying it. */
    for (int b = n_rows - 1; b >= 0; b--) {
        const int a = src[b];
        if (a == b) continue;
        for (int l = 0; l < L; l++) {
            const size_t cols = (size_t)(l < full ? s->n_cols : col0) * kvd * sizeof(float);
            const size_t to = ((size_t)l * s->max_rows + b) * row_stride, from = ((size_t)l * s->max_rows + a) * row_stride;
            memcpy(s->k_cache + to, s->k_cache + from, cols);
            memcpy(s->v_cache + to, s->v_cache + from, cols);
        }
        memcpy(s->col_pos + (size_t)b * s->max_seq, s->col_pos + (size_t)a * s->max_seq, (size_t)s->n_cols * sizeof(int));
        s->next_pos[b] = s->next_pos[a];
        if (s->paused_idx >= 0) {
            memcpy(s->x + (size_t)b * T * d, s->x + (size_t)a * T * d, (size_t)T * d * sizeof(float));
            memcpy(s->pos + (size_t)b * T, s->pos + (size_t)a * T, (size_t)T * sizeof(int));
        }
    }
    s->n_rows = s->chunk_rows = n_rows;
    return UP_OK;
}
