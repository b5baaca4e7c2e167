#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>

#include "engine/batch.h"

int up_argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int is_stop(const up_generate_opts *o, int32_t id) {
    for (int i = 0; i < o->n_stop; i++)
        if (o->stop_ids[i] == id) return 1;
    return 0;
}

up_status up_generate(up_state *s, const int32_t *const *prompts, const int *lens, int B,
                      const up_generate_opts *o, int32_t *out, int *n_out, up_error *err) {
    const up_model *m = up_state_model(s);
    const int V = m->cfg.vocab_size;
    int T = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] <= 0) return up_error_set(err, UP_ERR_INVALID, "row %d: empty prompt", b);
        if (lens[b] > T) T = lens[b];
    }
    if (o->max_new_tokens <= 0) {
        for (int b = 0; b < B; b++) n_out[b] = 0;
        return UP_OK;
    }
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    int *n_pad = malloc((size_t)B * sizeof *n_pad);
    int *done = calloc((size_t)B, sizeof *done);
    float *logits = malloc((size_t)B * V * sizeof *logits);
    up_status st = UP_OK;
    if (!tokens || !n_pad || !done || !logits) {
        st = up_error_set(err, UP_ERR_NOMEM, "out of memory for generation");
        goto out;
    }
    up_batch_left_pad(prompts, lens, NULL, B, m->cfg.pad_id, tokens, n_pad);
    for (int b = 0; b < B; b++) n_out[b] = 0;
    up_state_reset(s);
    st = up_forward(s, tokens, n_pad, lens, B, T, o->hooks, logits, UP_LOGITS_LAST, err);
    int remaining = B;
    for (int step = 0; st == UP_OK; step++) {
        if (up_state_stopped(s)) {
            st = up_error_set(err, UP_ERR_INVALID, "a hook stopped the pass during generation");
            break;
        }
        for (int b = 0; b < B; b++) {
            int32_t id = up_argmax(logits + (size_t)b * V, V);
            tokens[b] = id; /* next step's input; finished rows keep computing harmlessly */
            if (done[b]) continue;
            out[(size_t)b * o->max_new_tokens + n_out[b]++] = id;
            if (is_stop(o, id) || n_out[b] == o->max_new_tokens) {
                done[b] = 1;
                remaining--;
            }
        }
        if (o->on_step) o->on_step(step + 1, o->max_new_tokens, o->user);
        if (!remaining) break;
        st = up_forward(s, tokens, NULL, lens, B, 1, o->hooks, logits, UP_LOGITS_LAST, err);
    }
out:
    free(tokens);
    free(n_pad);
    free(done);
    free(logits);
    return st;
}

/* Rows with equal prompts: src[b] is the index, in order of first appearance, of row b's
 * prompt among the distinct ones, first[u] the first row holding prompt u. Returns their count.
 * Quadratic in the rows, which is nothing next to a forward pass. */
static int group_prompts(const int32_t *const *prompts, const int *lens, int B, int *src, int *first) {
    int n = 0;
    for (int b = 0; b < B; b++) {
        src[b] = -1;
        for (int u = 0; u < n && src[b] < 0; u++) {
            const int a = first[u];
            if (lens[a] == lens[b] &&
                (prompts[a] == prompts[b] || !memcmp(prompts[a], prompts[b], (size_t)lens[b] * sizeof *prompts[b])))
                src[b] = u;
        }
        if (src[b] < 0) first[n] = b, src[b] = n++;
    }
    return n;
}

/* Length of the longest prefix every prompt shares, kept shorter than the shortest prompt so
 * that every row has a token of its own to run after it. */
static int common_prefix(const int32_t *const *prompts, const int *lens, int B) {
    int P = lens[0] - 1;
    for (int b = 1; b < B && P > 0; b++) {
        if (lens[b] - 1 < P) P = lens[b] - 1;
        int i = 0;
        while (i < P && prompts[b][i] == prompts[0][i]) i++;
        P = i;
    }
    return P;
}

/* UP_PREFILL_PREFIX with a prefix of P tokens: row 0's prefix alone, copied to every row, then
 * each row's own rest as one left-padded chunk. */
static up_status prefill_prefix(up_state *s, const int32_t *const *prompts, const int *lens, int B, int P,
                                const up_hooks *hooks, float *logits, long *prompt_tokens, up_error *err) {
    const up_model *m = up_state_model(s);
    int T = 0;
    for (int b = 0; b < B; b++) T = lens[b] - P > T ? lens[b] - P : T;
    int32_t *tok = malloc((size_t)B * T * sizeof *tok);
    int *ints = malloc((size_t)3 * B * sizeof *ints);
    const int32_t **rest = malloc((size_t)B * sizeof *rest);
    up_status st = UP_OK;
    if (!tok || !ints || !rest) {
        st = up_error_set(err, UP_ERR_NOMEM, "prefill: out of memory for %d rows", B);
        goto out;
    }
    int *pad = ints, *src = ints + B, *rest_lens = ints + 2 * B;
    for (int b = 0; b < B; b++) src[b] = 0, rest[b] = prompts[b] + P, rest_lens[b] = lens[b] - P;
    up_batch_left_pad(rest, rest_lens, NULL, B, m->cfg.pad_id, tok, pad);
    up_state_reset(s);
    /* The prefix row's hooks see row 0's prompt length; every prefix slot is a prompt slot of
     * every row, so the hooks (acting alike on every row) do the same for all of them. */
    st = up_forward(s, prompts[0], NULL, lens, 1, P, hooks, NULL, UP_LOGITS_NONE, err);
    if (!st && up_state_stopped(s)) st = up_error_set(err, UP_ERR_INVALID, "prefill: a hook stopped the shared prefix");
    if (!st) st = up_state_share_rows(s, src, B, err);
    if (!st) st = up_forward(s, tok, pad, lens, B, T, hooks, logits, logits ? UP_LOGITS_LAST : UP_LOGITS_NONE, err);
    if (!st && prompt_tokens) {
        *prompt_tokens += P;
        for (int b = 0; b < B; b++) *prompt_tokens += rest_lens[b];
    }
out:
    free(tok), free(ints), free(rest);
    return st;
}

up_status up_prefill(up_state *s, const int32_t *const *prompts, const int *lens, int B, up_prefill_share share,
                     up_hook_point until, const up_hooks *hooks, float *logits, long *prompt_tokens, up_error *err) {
    const up_model *m = up_state_model(s);
    const int V = m->cfg.vocab_size;
    int T = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] <= 0) return up_error_set(err, UP_ERR_INVALID, "prefill: row %d has an empty prompt", b);
        if (lens[b] > T) T = lens[b];
    }
    if (share == UP_PREFILL_PREFIX) {
        const int P = B > 1 ? common_prefix(prompts, lens, B) : 0;
        if (P > 0) return prefill_prefix(s, prompts, lens, B, P, hooks, logits, prompt_tokens, err);
        share = UP_PREFILL_ALONE;
    }
    int32_t *tok = malloc((size_t)B * T * sizeof *tok);
    int *ints = malloc((size_t)4 * B * sizeof *ints);
    up_status st = UP_OK;
    if (!tok || !ints) {
        st = up_error_set(err, UP_ERR_NOMEM, "prefill: out of memory for %d rows", B);
        goto out;
    }
    int *pad = ints, *src = ints + B, *first = ints + 2 * B, *ulens = ints + 3 * B;
    const int U = share == UP_PREFILL_ALONE ? B : group_prompts(prompts, lens, B, src, first);
    const int shared = U < B;
    /* The rows that run from the embedding: every row, or the first of each prompt. */
    const int n_run = shared ? U : B;
    /* Their longest prompt is every row's longest: a shared row's prompt is its first row's. */
    up_batch_left_pad(prompts, lens, shared ? first : NULL, n_run, m->cfg.pad_id, tok, pad);
    for (int u = 0; u < n_run; u++) {
        const int b = shared ? first[u] : u;
        ulens[u] = lens[b];
        if (prompt_tokens) *prompt_tokens += lens[b];
    }
    up_state_reset(s);
    const up_logits_mode mode = logits ? UP_LOGITS_LAST : UP_LOGITS_NONE;
    if (!shared) {
        st = up_forward(s, tok, pad, lens, B, T, hooks, logits, mode, err);
    } else if (share == UP_PREFILL_WHOLE) {
        st = up_forward(s, tok, pad, ulens, U, T, NULL, logits, mode, err);
        if (!st) st = up_state_share_rows(s, src, B, err);
        /* Descending with src[b] <= b, as the state's rows: no source is overwritten early. */
        for (int b = B - 1; !st && logits && b >= 0; b--)
            if (src[b] != b) memcpy(logits + (size_t)b * V, logits + (size_t)src[b] * V, (size_t)V * sizeof *logits);
    } else {
        st = up_state_pause_at(s, until, err);
        if (!st) st = up_forward(s, tok, pad, ulens, U, T, NULL, NULL, UP_LOGITS_NONE, err);
        if (!st && !up_state_paused(s)) st = up_error_set(err, UP_ERR_INVALID, "prefill: the shared pass did not pause");
        if (!st) st = up_state_share_rows(s, src, B, err);
        if (!st) st = up_forward_resume(s, lens, hooks, logits, mode, err);
    }
out:
    free(tok);
    free(ints);
    return st;
}
