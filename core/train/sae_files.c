/* sae_train.h's data in and out of the trainer: writing a trained SAE as a GemmaScope
 * params.npz, and collecting residual-stream activations from a model to train on. */
#include "train/sae_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/batch.h"
#include "engine/forward.h"

/* --- GemmaScope writer ------------------------------------------------------------------- */

up_status up_sae_save_npz(const up_sae *sae, const char *path, up_npz_compression compression,
                          up_error *err) {
    if (!sae || !sae->W_enc || !sae->W_dec)
        return up_error_set(err, UP_ERR_INVALID, "%s: saving needs both the encoder and the decoder", path);
    if (sae->arch != UP_SAE_JUMPRELU && sae->arch != UP_SAE_RELU)
        return up_error_set(err, UP_ERR_UNSUPPORTED, "%s: a GemmaScope params.npz cannot hold a %s SAE", path,
                            up_sae_arch_name(sae->arch));
    const int d = sae->d_in, S = sae->d_sae;
    float *extra = malloc(2 * (size_t)S * sizeof(float)); /* b_enc folded, threshold */
    if (!extra) return up_error_set(err, UP_ERR_NOMEM, "%s: out of memory", path);
    float *b_enc = extra, *thr = extra + S;
    for (int k = 0; k < S; k++) {
        double b = sae->b_enc[k];
        if (sae->apply_b_dec_to_input)
            for (int j = 0; j < d; j++) b -= (double)sae->b_dec[j] * sae->W_enc[(size_t)j * S + k];
        b_enc[k] = (float)b;
        thr[k] = sae->threshold ? sae->threshold[k] : 0.0f;
    }
    up_npz_array arrays[5] = {
        {"W_dec", sae->W_dec, 2, {S, d}},
        {"W_enc", sae->W_enc, 2, {d, S}},
        {"b_dec", sae->b_dec, 1, {d}},
        {"b_enc", b_enc, 1, {S}},
        {"threshold", thr, 1, {S}},
    };
    up_status s = up_npz_write_f32(path, arrays, 5, compression, err);
    free(extra);
    return s;
}

/* --- activations ---------------------------------------------------------------------------- */

typedef struct collect_ctx {
    const int32_t *tokens; /* (rows, T) this batch, pads included */
    int bos;
    float *out;            /* (cap, d) */
    int64_t n, cap;
} collect_ctx;

static int collect_hook(const up_hook_call *call, void *user) {
    collect_ctx *c = user;
    const int T = call->n_tok, d = call->d;
    for (int r = 0; r < call->n_rows; r++)
        for (int i = 0; i < T && c->n < c->cap; i++) {
            size_t slot = (size_t)r * T + i;
            if (call->pos[slot] < 0 || c->tokens[slot] == c->bos) continue;
            memcpy(c->out + (size_t)c->n * d, call->act + slot * d, (size_t)d * sizeof(float));
            c->n++;
        }
    return UP_HOOK_STOP; /* nothing above the hooked layer is needed */
}

up_status up_sae_collect_resid(const up_model *m, const int32_t *const *ids, const int *lens,
                               int n_seqs, int layer, int64_t max_rows, int batch, float **out,
                               int64_t *n_out, up_error *err) {
    *out = NULL, *n_out = 0;
    const int d = m->cfg.d_model, bos = m->cfg.bos_id;
    if (layer < 0 || layer >= m->cfg.n_layers)
        return up_error_set(err, UP_ERR_INVALID, "up_sae_collect_resid: layer %d is outside [0, %d)", layer,
                            m->cfg.n_layers);
    if (n_seqs < 0 || batch < 1)
        return up_error_set(err, UP_ERR_INVALID, "up_sae_collect_resid: n_seqs %d, batch %d", n_seqs, batch);
    int64_t total = 0;
    int max_len = 0;
    for (int i = 0; i < n_seqs; i++) {
        if (lens[i] < 0) return up_error_set(err, UP_ERR_INVALID, "up_sae_collect_resid: sequence %d has length %d", i, lens[i]);
        for (int j = 0; j < lens[i]; j++) total += ids[i][j] != bos;
        if (lens[i] > max_len) max_len = lens[i];
    }
    int64_t cap = max_rows > 0 && max_rows < total ? max_rows : total;
    if (cap == 0) return UP_OK;
    collect_ctx c = {.bos = bos, .cap = cap};
    c.out = malloc((size_t)cap * d * sizeof(float));
    int32_t *tokens = malloc((size_t)batch * max_len * sizeof(int32_t));
    int *n_pad = malloc((size_t)batch * sizeof(int));
    up_state *st = NULL;
    up_status s = UP_OK;
    if (!c.out || !tokens || !n_pad) s = up_error_set(err, UP_ERR_NOMEM, "up_sae_collect_resid: out of memory");
    if (s == UP_OK) s = up_state_init(&st, m, batch, max_len, err);
    up_hook hook = {{UP_HOOK_RESID_POST, layer}, collect_hook, &c};
    up_hooks hooks = {&hook, 1};
    for (int i0 = 0; i0 < n_seqs && s == UP_OK && c.n < c.cap;) {
        /* The next `batch` non-empty sequences, left-padded to the longest of them. */
        int rows = 0, idx[256];
        int want = batch < 256 ? batch : 256;
        for (; i0 < n_seqs && rows < want; i0++)
            if (lens[i0] > 0) idx[rows++] = i0;
        if (rows == 0) break;
        const int T = up_batch_left_pad(ids, lens, idx, rows, m->cfg.pad_id, tokens, n_pad);
        c.tokens = tokens;
        up_state_reset(st);
        s = up_forward(st, tokens, n_pad, NULL, rows, T, &hooks, NULL, UP_LOGITS_NONE, err);
    }
    up_state_free(st);
    free(tokens), free(n_pad);
    if (s != UP_OK) {
        free(c.out);
        return s;
    }
    *out = c.out;
    *n_out = c.n;
    return UP_OK;
}
