#include "engine/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/blas.h"
#include "engine/engine_impl.h"
#include "engine/hooks.h"
#include "engine/position.h"

int up_objective_slots(const up_objective *obj, int n_tok, int n_real, int *out) {
    if (!obj->positions || obj->n_positions <= 0) {
        out[0] = n_tok - 1;
        return 1;
    }
    for (int i = 0; i < obj->n_positions; i++) {
        const int p = up_position_resolve(obj->positions[i], n_real);
        if (p < 0 || p >= n_real) return -1;
        out[i] = n_tok - n_real + p;
    }
    return obj->n_positions;
}

/* ---- the tape and the gradient buffers: one allocation ------------------------- */

typedef struct workspace {
    up_tape tape;
    float *dx;      /* (N, d) gradient of the residual stream, flowing down */
    float *dsub;    /* (N, d) gradient of a sublayer's raw output */
    float *dxn;     /* (N, d) gradient of a norm's output */
    float *dq;      /* (N, qd) */
    float *dk;      /* (N, kvd) */
    float *dv;      /* (N, kvd) */
    float *dctx;    /* (N, qd) */
    float *dgate;   /* (N, f) */
    float *dup;     /* (N, f) */
    float *dp;      /* (B, nh, T, T) */
    float *xn;      /* (N, d) a recomputed norm output (weight gradients only) */
    float *hbuf;    /* (N, f) recomputed gelu(gate) * up (weight gradients only) */
    float *wscratch;
    size_t wscratch_floats;
    void *block;
} workspace;

static up_status workspace_init(workspace *w, const up_model_config *c, int first, int last, int B, int T,
                                int with_weights, up_error *err) {
    memset(w, 0, sizeof *w);
    const size_t N = (size_t)B * T, d = c->d_model, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, f = c->d_mlp, att = (size_t)B * c->n_heads * T * T;
    const int n_layers = last - first + 1;
    size_t per_layer = 3 * N * d + 4 * N + N * qd + 2 * N * kvd + 2 * att + 2 * N * f + N * d +
                       (with_weights ? N * qd : 0);
    /* Widened weight slabs: the activation products' summed dimension is d, qd, kvd or d_mlp. */
    const size_t k_max = f > d ? (f > qd ? f : qd) : (d > qd ? d : qd);
    w->wscratch_floats = up_linear_scratch_floats((int)k_max);
    size_t total = (size_t)n_layers * per_layer + 3 * N * d + 2 * N * qd + 2 * N * kvd + 2 * N * f + att +
                   w->wscratch_floats + (with_weights ? N * d + N * f : 0);
    w->tape.layers = calloc((size_t)(n_layers > 0 ? n_layers : 1), sizeof *w->tape.layers);
    float *p = w->block = malloc(total * sizeof(float));
    if (!p || !w->tape.layers) {
        free(w->block);
        free(w->tape.layers);
        return up_error_set(err, UP_ERR_NOMEM, "cannot allocate %.2f GB for the backward pass", total * 4.0 / 1e9);
    }
    w->tape.first = first, w->tape.last = last, w->tape.n_rows = B, w->tape.n_tok = T;
    for (int i = 0; i < n_layers; i++) {
        up_tape_layer *t = &w->tape.layers[i];
        t->x_in = p, p += N * d;
        t->attn_raw = p, p += N * d;
        t->resid_mid = p, p += N * d;
        t->mlp_raw = p, p += N * d;
        t->rstd = p, p += 4 * N;
        t->q = p, p += N * qd;
        t->k = p, p += N * kvd;
        t->v = p, p += N * kvd;
        t->probs = p, p += att;
        t->capped = p, p += att;
        t->gate = p, p += N * f;
        t->up = p, p += N * f;
        if (with_weights) t->ctx = p, p += N * qd;
    }
    w->dx = p, p += N * d;
    w->dsub = p, p += N * d;
    w->dxn = p, p += N * d;
    w->dq = p, p += N * qd;
    w->dctx = p, p += N * qd;
    w->dk = p, p += N * kvd;
    w->dv = p, p += N * kvd;
    w->dgate = p, p += N * f;
    w->dup = p, p += N * f;
    w->dp = p, p += att;
    if (with_weights) {
        w->xn = p, p += N * d;
        w->hbuf = p, p += N * f;
    }
    w->wscratch = p;
    return UP_OK;
}

static void workspace_free(workspace *w) {
    free(w->block);
    free(w->tape.layers);
}

/* ---- per-op backward kernels ------------------------------------------------------ */

/* y = (x * r) * (1 + w), r = (mean x^2 + eps)^-1/2:
 * dx = r * (g - xhat * mean(g * xhat)), with g = dy * (1 + w), xhat = x * r.
 * accumulate: dx += instead of =. */
static void rmsnorm_backward(float *dx, const float *dy, const float *x, const float *rstd, const float *w, int n,
                             int d, int accumulate) {
#pragma omp parallel for schedule(static) if ((long)n * d >= UP_OMP_MIN_FLOATS)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *gi = dy + (size_t)i * d;
        float *di = dx + (size_t)i * d;
        const float r = rstd[i];
        double dot = 0;
        for (int j = 0; j < d; j++) dot += (double)gi[j] * (1.0f + w[j]) * (xi[j] * r);
        const float mean = (float)(dot / d);
        for (int j = 0; j < d; j++) {
            float v = r * (gi[j] * (1.0f + w[j]) - (xi[j] * r) * mean);
            di[j] = accumulate ? di[j] + v : v;
        }
    }
}

/* dw (d) += sum over rows of dy * xhat, xhat = x * r. Columns in parallel: no races, fixed order. */
static void rmsnorm_backward_weight(float *dw, const float *dy, const float *x, const float *rstd, int n, int d) {
#pragma omp parallel for schedule(static) if ((long)n * d >= UP_OMP_MIN_FLOATS)
    for (int j = 0; j < d; j++) {
        double acc = 0;
        for (int i = 0; i < n; i++) acc += (double)dy[(size_t)i * d + j] * (x[(size_t)i * d + j] * rstd[i]);
        dw[j] += (float)acc;
    }
}

/* The forward's norm output again, from the recorded input and 1/rms. */
static void rmsnorm_recompute(float *out, const float *x, const float *rstd, const float *w, int n, int d) {
#pragma omp parallel for schedule(static) if ((long)n * d >= UP_OMP_MIN_FLOATS)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) out[(size_t)i * d + j] = (x[(size_t)i * d + j] * rstd[i]) * (1.0f + w[j]);
}

/* Attention backward for one prefill (no cached prefix): from dctx to dq, dk, dv. */
static void attention_backward(workspace *w, const up_tape_layer *t, const up_model_config *c, const int *pos, int B,
                               int T) {
    const int nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, group = nh / nkv;
    const int qd = nh * hd, kvd = nkv * hd;
    const float scale = 1.0f / sqrtf(c->query_pre_attn_scalar);
    const int capped = c->attn_softcap > 0;
    /* dP and dS per (b, h, t) row: independent, so parallel without races. */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            for (int i = 0; i < T; i++) {
                const size_t row = (((size_t)b * nh + h) * T + i) * T;
                const float *p = t->probs + row;
                float *ds = w->dp + row;
                const int slot = b * T + i, g = h / group;
                if (pos[slot] < 0) {
                    memset(ds, 0, (size_t)T * sizeof(float));
                    continue;
                }
                const float *dctx = w->dctx + (size_t)slot * qd + (size_t)h * hd;
                double sum = 0;
                for (int j = 0; j <= i; j++) {
                    if (p[j] == 0.0f) {
                        ds[j] = 0;
                        continue;
                    }
                    const float *v = t->v + ((size_t)b * T + j) * kvd + (size_t)g * hd;
                    float dpj = 0;
                    for (int e = 0; e < hd; e++) dpj += dctx[e] * v[e];
                    ds[j] = dpj;
                    sum += (double)p[j] * dpj;
                }
                for (int j = 0; j < T; j++) {
                    if (j > i || p[j] == 0.0f) {
                        ds[j] = 0;
                        continue;
                    }
                    float dz = p[j] * (ds[j] - (float)sum); /* softmax */
                    if (capped) {
                        float th = t->capped[row + j];
                        dz *= 1.0f - th * th; /* cap * tanh(s / cap) */
                    }
                    ds[j] = dz * scale;
                }
            }
        }
    }
    /* dq[i] = sum_j ds[i,j] k[j]; per (b, h, i): parallel over query slots. */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            for (int i = 0; i < T; i++) {
                const int g = h / group;
                const float *ds = w->dp + (((size_t)b * nh + h) * T + i) * T;
                float *dq = w->dq + ((size_t)b * T + i) * qd + (size_t)h * hd;
                memset(dq, 0, (size_t)hd * sizeof(float));
                for (int j = 0; j <= i; j++) {
                    if (ds[j] == 0.0f) continue;
                    const float *k = t->k + ((size_t)b * T + j) * kvd + (size_t)g * hd;
                    for (int e = 0; e < hd; e++) dq[e] += ds[j] * k[e];
                }
            }
        }
    }
    /* dk[j] = sum over heads of the group and queries i of ds[i,j] q[i]; dv[j] = sum p[i,j] dctx[i].
     * Parallel over (b, kv head, key slot): each output row has one writer. */
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < nkv; g++) {
            for (int j = 0; j < T; j++) {
                float *dk = w->dk + ((size_t)b * T + j) * kvd + (size_t)g * hd;
                float *dv = w->dv + ((size_t)b * T + j) * kvd + (size_t)g * hd;
                memset(dk, 0, (size_t)hd * sizeof(float));
                memset(dv, 0, (size_t)hd * sizeof(float));
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int i = j; i < T; i++) {
                        const size_t row = (((size_t)b * nh + h) * T + i) * T;
                        const float dsij = w->dp[row + j], pij = t->probs[row + j];
                        if (pij == 0.0f) continue;
                        const float *q = t->q + ((size_t)b * T + i) * qd + (size_t)h * hd;
                        const float *dctx = w->dctx + ((size_t)b * T + i) * qd + (size_t)h * hd;
                        for (int e = 0; e < hd; e++) {
                            dk[e] += dsij * q[e];
                            dv[e] += pij * dctx[e];
                        }
                    }
                }
            }
        }
    }
}

static int run_grad_hooks(const up_hooks *hooks, up_hook_kind kind, int layer, float *g, int B, int T, int d,
                          const int *pos) {
    if (!hooks) return UP_HOOK_CONTINUE;
    up_hook_call call = {{kind, layer}, g, B, T, d, pos, 0, NULL};
    for (int i = 0; i < hooks->n; i++) {
        const up_hook *h = &hooks->items[i];
        if (h->point.kind != kind || (h->point.layer != layer && h->point.layer != UP_HOOK_ANY_LAYER)) continue;
        int r = h->fn(&call, h->user);
        if (r != UP_HOOK_CONTINUE) return r;
    }
    return UP_HOOK_CONTINUE;
}

/* Gradient of the weights' storage: the parameter's offset in its block, in the gradient block. */
static float *dparam(const up_param_grads *g, const up_weight *w) {
    const float *p = w->data;
    if (p >= g->norms && p < g->norms + g->n_norms) return g->d_norms + (p - g->norms);
    return g->d_mats + (p - g->mats);
}

/* One block's backward: w->dx holds dR/d(resid_post l) on entry and dR/d(resid_pre l) on exit.
 * With grads, the block's weight gradients are accumulated too. Returns <0 if a hook aborted. */
static int block_backward(workspace *w, const up_model *m, int l, const up_tape_layer *t, const int *pos, int B,
                          int T, const up_param_grads *grads, const up_hooks *grad_hooks) {
    const up_model_config *c = &m->cfg;
    const int d = c->d_model, f = c->d_mlp, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int N = B * T;
    const up_layer_weights *lw = &m->layers[l];
    if (run_grad_hooks(grad_hooks, UP_HOOK_RESID_POST, l, w->dx, B, T, d, pos) < 0) return -1;
    if (run_grad_hooks(grad_hooks, UP_HOOK_MLP_OUT, l, w->dx, B, T, d, pos) < 0) return -1;
    /* MLP: x_out = x_mid + post_ffw_norm(down(gelu(gate(xn)) * up(xn))), xn = pre_ffw_norm(x_mid). */
    rmsnorm_backward(w->dsub, w->dx, t->mlp_raw, t->rstd + 3 * N, lw->post_ffw_norm.data, N, d, 0);
    const up_activation act = c->activation;
    if (grads) {
        rmsnorm_backward_weight(dparam(grads, &lw->post_ffw_norm), w->dx, t->mlp_raw, t->rstd + 3 * N, N, d);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < (size_t)N * f; i++) w->hbuf[i] = up_gelu(t->gate[i], act) * t->up[i];
        up_linear_backward_weight(dparam(grads, &lw->down_proj), w->dsub, w->hbuf, N, d, f);
    }
    up_linear_backward_input(w->dgate, w->dsub, lw->down_proj.data, lw->down_proj.dtype, N, d, f, 0, w->wscratch,
                             w->wscratch_floats);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)N * f; i++) {
        float dh = w->dgate[i], gv = t->gate[i];
        w->dup[i] = dh * up_gelu(gv, act);
        w->dgate[i] = dh * t->up[i] * up_gelu_grad(gv, act);
    }
    if (grads) {
        rmsnorm_recompute(w->xn, t->resid_mid, t->rstd + 2 * N, lw->pre_ffw_norm.data, N, d);
        up_linear_backward_weight(dparam(grads, &lw->gate_proj), w->dgate, w->xn, N, f, d);
        up_linear_backward_weight(dparam(grads, &lw->up_proj), w->dup, w->xn, N, f, d);
    }
    up_linear_backward_input(w->dxn, w->dgate, lw->gate_proj.data, lw->gate_proj.dtype, N, f, d, 0, w->wscratch,
                             w->wscratch_floats);
    up_linear_backward_input(w->dxn, w->dup, lw->up_proj.data, lw->up_proj.dtype, N, f, d, 1, w->wscratch,
                             w->wscratch_floats);
    if (grads) rmsnorm_backward_weight(dparam(grads, &lw->pre_ffw_norm), w->dxn, t->resid_mid, t->rstd + 2 * N, N, d);
    rmsnorm_backward(w->dx, w->dxn, t->resid_mid, t->rstd + 2 * N, lw->pre_ffw_norm.data, N, d, 1);
    if (run_grad_hooks(grad_hooks, UP_HOOK_RESID_MID, l, w->dx, B, T, d, pos) < 0) return -1;
    if (run_grad_hooks(grad_hooks, UP_HOOK_ATTN_OUT, l, w->dx, B, T, d, pos) < 0) return -1;
    /* Attention: x_mid = x_in + post_attn_norm(o(attn(q, k, v))), q/k/v from input_norm(x_in). */
    rmsnorm_backward(w->dsub, w->dx, t->attn_raw, t->rstd + N, lw->post_attn_norm.data, N, d, 0);
    if (grads) {
        rmsnorm_backward_weight(dparam(grads, &lw->post_attn_norm), w->dx, t->attn_raw, t->rstd + N, N, d);
        up_linear_backward_weight(dparam(grads, &lw->o_proj), w->dsub, t->ctx, N, d, qd);
    }
    up_linear_backward_input(w->dctx, w->dsub, lw->o_proj.data, lw->o_proj.dtype, N, d, qd, 0, w->wscratch,
                             w->wscratch_floats);
    attention_backward(w, t, c, pos, B, T);
    up_rope_rotate(w->dq, pos, N, c->n_heads, c->head_dim, c->rope_theta, 1);
    up_rope_rotate(w->dk, pos, N, c->n_kv_heads, c->head_dim, c->rope_theta, 1);
    if (grads) {
        rmsnorm_recompute(w->xn, t->x_in, t->rstd, lw->input_norm.data, N, d);
        up_linear_backward_weight(dparam(grads, &lw->q_proj), w->dq, w->xn, N, qd, d);
        up_linear_backward_weight(dparam(grads, &lw->k_proj), w->dk, w->xn, N, kvd, d);
        up_linear_backward_weight(dparam(grads, &lw->v_proj), w->dv, w->xn, N, kvd, d);
    }
    up_linear_backward_input(w->dxn, w->dq, lw->q_proj.data, lw->q_proj.dtype, N, qd, d, 0, w->wscratch,
                             w->wscratch_floats);
    up_linear_backward_input(w->dxn, w->dk, lw->k_proj.data, lw->k_proj.dtype, N, kvd, d, 1, w->wscratch,
                             w->wscratch_floats);
    up_linear_backward_input(w->dxn, w->dv, lw->v_proj.data, lw->v_proj.dtype, N, kvd, d, 1, w->wscratch,
                             w->wscratch_floats);
    if (grads) rmsnorm_backward_weight(dparam(grads, &lw->input_norm), w->dxn, t->x_in, t->rstd, N, d);
    rmsnorm_backward(w->dx, w->dxn, t->x_in, t->rstd, lw->input_norm.data, N, d, 1);
    return 0;
}

/* ---- the objective: read h_L, stop the pass ---------------------------------------- */

typedef struct objective_ctx {
    const up_objective *obj;
    double *R;
    int *pos_copy; /* (N) positions of the prefill, kept for the backward */
    int failed;
} objective_ctx;

static int objective_hook(const up_hook_call *call, void *user) {
    objective_ctx *o = user;
    const int T = call->n_tok, d = call->d;
    int *slots = malloc((size_t)(o->obj->n_positions > 0 ? o->obj->n_positions : 1) * sizeof *slots);
    for (int b = 0; b < call->n_rows; b++) {
        int n_real = 0;
        for (int t = 0; t < T; t++) n_real += call->pos[b * T + t] >= 0;
        int n = up_objective_slots(o->obj, T, n_real, slots);
        if (n < 0) {
            o->failed = 1;
            break;
        }
        double r = 0;
        for (int k = 0; k < n; k++) {
            const float *h = call->act + ((size_t)b * T + slots[k]) * d;
            for (int j = 0; j < d; j++) r += (double)h[j] * o->obj->direction[j];
        }
        if (o->R) o->R[b] = r;
    }
    free(slots);
    memcpy(o->pos_copy, call->pos, (size_t)call->n_rows * T * sizeof(int));
    return o->failed ? -1 : UP_HOOK_STOP;
}

up_status up_gradient(const up_model *m, const int32_t *tokens, const int *n_pad, int B, int T, int source_layer,
                      const up_objective *obj, const up_hooks *hooks, const up_hooks *grad_hooks, float *grad,
                      double *R, up_error *err) {
    const up_model_config *c = &m->cfg;
    const int L = obj->layer;
    if (L < 0 || L >= c->n_layers)
        return up_error_set(err, UP_ERR_INVALID, "target layer %d outside [0, %d)", L, c->n_layers);
    if (source_layer < -1 || source_layer >= L)
        return up_error_set(err, UP_ERR_INVALID, "source layer %d must be in [-1, target layer %d)", source_layer, L);
    for (int b = 0; b < B; b++) {
        int n_real = T - (n_pad ? n_pad[b] : 0), probe[1];
        int *slots = obj->n_positions > 0 ? malloc((size_t)obj->n_positions * sizeof(int)) : probe;
        int ok = up_objective_slots(obj, T, n_real, slots) >= 0;
        if (slots != probe) free(slots);
        if (!ok)
            return up_error_set(err, UP_ERR_INVALID, "row %d: an objective position is outside its %d tokens", b, n_real);
    }
    const int d = c->d_model, N = B * T, first = source_layer + 1;
    workspace w;
    up_status st = workspace_init(&w, c, first, L, B, T, 0, err);
    if (st) return st;
    up_state *s = NULL;
    int *pos = malloc((size_t)N * sizeof *pos);
    objective_ctx octx = {obj, R, pos, 0};
    int n_user = hooks ? hooks->n : 0;
    up_hook *all = malloc((size_t)(n_user + 1) * sizeof *all);
    if (!pos || !all) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_user; i++) all[i] = hooks->items[i];
    all[n_user] = (up_hook){{UP_HOOK_RESID_POST, L}, objective_hook, &octx};
    up_hooks hk = {all, n_user + 1};
    if ((st = up_state_init(&s, m, B, T, err))) goto done;
    up_state_attach_tape(s, &w.tape);
    st = up_forward(s, tokens, n_pad, NULL, B, T, &hk, NULL, UP_LOGITS_NONE, err);
    if (st || !up_state_stopped(s)) {
        if (!st) st = up_error_set(err, UP_ERR_INVALID, "the objective hook at layer %d was not reached", L);
        goto done;
    }

    /* Seed: dR/dh_L[t] = v at each chosen slot. */
    memset(w.dx, 0, (size_t)N * d * sizeof(float));
    {
        int *slots = malloc((size_t)(obj->n_positions > 0 ? obj->n_positions : 1) * sizeof *slots);
        for (int b = 0; b < B; b++) {
            int n_real = T - (n_pad ? n_pad[b] : 0);
            int n = up_objective_slots(obj, T, n_real, slots);
            for (int k = 0; k < n; k++) {
                float *g = w.dx + ((size_t)b * T + slots[k]) * d;
                for (int j = 0; j < d; j++) g[j] += obj->direction[j];
            }
        }
        free(slots);
    }
    for (int l = L; l >= first; l--)
        if (block_backward(&w, m, l, &w.tape.layers[l - first], pos, B, T, NULL, grad_hooks) < 0) goto aborted;
    for (int i = 0; i < N; i++) {
        float *g = grad + (size_t)i * d;
        if (pos[i] < 0) memset(g, 0, (size_t)d * sizeof(float));
        else memcpy(g, w.dx + (size_t)i * d, (size_t)d * sizeof(float));
    }
    goto done;
aborted:
    st = up_error_set(err, UP_ERR_ABORTED, "a gradient hook aborted the backward pass");
done:
    up_state_free(s);
    free(pos);
    free(all);
    workspace_free(&w);
    return st;
}

/* ---- next-token loss and weight gradients ---------------------------------------------- */

up_status up_loss_gradients(const up_model *m, const int32_t *tokens, const int32_t *targets, const int *n_pad, int B,
                            int T, up_param_grads *g, double *loss_out, int *n_targets, up_error *err) {
    const up_model_config *c = &m->cfg;
    const int d = c->d_model, V = c->vocab_size, N = B * T, L = c->n_layers;
    if (!g || !g->mats || !g->d_mats || !g->norms || !g->d_norms || m->embed.dtype != UP_DTYPE_F32 ||
        !c->tie_word_embeddings)
        return up_error_set(err, UP_ERR_INVALID, "weight gradients need an fp32 in-memory model with tied embeddings");
    int n_tgt = 0;
    for (int i = 0; i < N; i++) {
        if (targets[i] >= V) return up_error_set(err, UP_ERR_INVALID, "target %d outside the vocabulary", targets[i]);
        n_tgt += targets[i] >= 0;
    }
    if (!n_tgt) return up_error_set(err, UP_ERR_INVALID, "no slot has a target");
    workspace w;
    up_status st = workspace_init(&w, c, 0, L - 1, B, T, 1, err);
    if (st) return st;
    up_state *s = NULL;
    float *hfin = malloc((size_t)N * d * sizeof(float)), *logits = malloc((size_t)N * V * sizeof(float));
    float *rstd = malloc((size_t)N * sizeof(float));
    int *pos = malloc((size_t)N * sizeof(int));
    if (!hfin || !logits || !rstd || !pos) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory for the loss");
        goto done;
    }
    up_capture hfin_cap = {hfin, (size_t)N * d};
    up_hook hook = up_hook_capture((up_hook_point){UP_HOOK_RESID_POST, L - 1}, &hfin_cap);
    up_hooks hk = {&hook, 1};
    if ((st = up_state_init(&s, m, B, T, err))) goto done;
    up_state_attach_tape(s, &w.tape);
    if ((st = up_forward(s, tokens, n_pad, NULL, B, T, &hk, logits, UP_LOGITS_ALL, err))) goto done;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pos[b * T + t] = t < (n_pad ? n_pad[b] : 0) ? -1 : 0;
    {
        /* Positions for the RoPE transpose: the forward numbered real tokens 0, 1, ... per row. */
        for (int b = 0; b < B; b++) {
            int p = 0;
            for (int t = 0; t < T; t++)
                if (pos[b * T + t] >= 0) pos[b * T + t] = p++;
        }
    }
    /* Cross-entropy in double; dlogits overwrites logits: (softmax - onehot) / n_targets. */
    double loss = 0;
    const float cap = c->final_softcap;
#pragma omp parallel for reduction(+ : loss) schedule(static)
    for (int i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        double mx = z[0], sum = 0;
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
        loss += -(z[targets[i]] - mx - log(sum));
        for (int v = 0; v < V; v++) {
            double p = exp(z[v] - mx) / sum;
            float dz = (float)((p - (v == targets[i])) / n_tgt);
            if (cap > 0) {
                float th = z[v] / cap; /* z = cap * tanh(y / cap) */
                dz *= 1.0f - th * th;
            }
            z[v] = dz;
        }
    }
    /* Final norm output again, then the tied unembedding's two gradients. */
    const float *fw = m->final_norm.data;
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)hfin[(size_t)i * d + j] * hfin[(size_t)i * d + j];
        rstd[i] = 1.0f / sqrtf((float)(ss / d) + c->rms_norm_eps);
    }
    rmsnorm_recompute(w.xn, hfin, rstd, fw, N, d);
    float *dE = dparam(g, &m->embed);
    up_linear_backward_weight(dE, logits, w.xn, N, V, d);
    up_linear_backward_input(w.dxn, logits, m->embed.data, UP_DTYPE_F32, N, V, d, 0, w.wscratch, w.wscratch_floats);
    rmsnorm_backward_weight(dparam(g, &m->final_norm), w.dxn, hfin, rstd, N, d);
    rmsnorm_backward(w.dx, w.dxn, hfin, rstd, fw, N, d, 0);
    for (int l = L - 1; l >= 0; l--) block_backward(&w, m, l, &w.tape.layers[l], pos, B, T, g, NULL);
    /* Embedding lookup, scaled by sqrt(d) in the forward. */
    const float normalizer = (float)sqrt((double)d);
    for (int i = 0; i < N; i++) {
        if (pos[i] < 0) continue;
        float *row = dE + (size_t)tokens[i] * d;
        for (int j = 0; j < d; j++) row[j] += w.dx[(size_t)i * d + j] * normalizer;
    }
    *loss_out = loss / n_tgt;
    if (n_targets) *n_targets = n_tgt;
done:
    up_state_free(s);
    free(hfin), free(logits), free(rstd), free(pos);
    workspace_free(&w);
    return st;
}
