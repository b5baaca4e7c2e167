#include "generate.h"

#include <stdlib.h>
#include <string.h>

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
    for (int b = 0; b < B; b++) {
        n_pad[b] = T - lens[b];
        for (int t = 0; t < n_pad[b]; t++) tokens[(size_t)b * T + t] = m->cfg.pad_id;
        memcpy(tokens + (size_t)b * T + n_pad[b], prompts[b], (size_t)lens[b] * sizeof *tokens);
        n_out[b] = 0;
    }
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
