#include "direction.h"

#include <stdlib.h>
#include <string.h>

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

static int stop_hook(const up_hook_call *call, void *user) { return UP_HOOK_STOP; }

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
    accum a = {mean, n_pos, c->n_layers, c->d_model};
    up_hook hooks[2] = {{{UP_HOOK_RESID_PRE, UP_HOOK_ANY_LAYER}, accumulate_hook, &a},
                        {{UP_HOOK_RESID_PRE, c->n_layers - 1}, stop_hook, NULL}};
    up_hooks hk = {hooks, 2};
    up_state *s = NULL;
    int32_t *tok = malloc((size_t)batch * T_max * sizeof *tok);
    int *pad = malloc((size_t)batch * sizeof *pad);
    up_status st = tok && pad ? up_state_init(&s, m, batch, T_max, err) : up_error_set(err, UP_ERR_NOMEM, "out of memory");
    for (int start = 0; !st && start < p->n; start += batch) {
        int B = p->n - start < batch ? p->n - start : batch, T = 0;
        for (int b = 0; b < B; b++) T = p->lens[start + b] > T ? p->lens[start + b] : T;
        for (int b = 0; b < B; b++) {
            int len = p->lens[start + b];
            pad[b] = T - len;
            for (int t = 0; t < pad[b]; t++) tok[(size_t)b * T + t] = c->pad_id;
            memcpy(tok + (size_t)b * T + pad[b], p->ids[start + b], (size_t)len * sizeof *tok);
        }
        up_state_reset(s);
        st = up_forward(s, tok, pad, NULL, B, T, &hk, NULL, UP_LOGITS_NONE, err);
        if (progress) progress(start + B, p->n, user);
    }
    for (size_t i = 0; !st && i < n_out; i++) mean[i] /= p->n;
    up_state_free(s);
    free(tok);
    free(pad);
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
