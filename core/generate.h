/* generate — batched greedy decoding with the KV cache.
 *
 * Prompts of different lengths are left-padded into one batch, prefilled in
 * one pass, then decoded one token per step for every row at once. Hooks are
 * active in the prefill and in every decode step (the hook call carries each
 * row's prompt length, so a hook can tell prompt from generated slots). A row
 * stops at the first stop id (which is kept in its output) or at
 * max_new_tokens; finished rows ride along until every row is done, without
 * affecting the others. Greedy ties go to the lowest id, as torch.argmax.
 *
 * Allocates its logits buffer per call; the state's capacity bounds
 * rows and prompt + new tokens. */
#ifndef UP_GENERATE_H
#define UP_GENERATE_H

#include "forward.h"

typedef struct up_generate_opts {
    int max_new_tokens;
    const int32_t *stop_ids; /* (n_stop) */
    int n_stop;
    const up_hooks *hooks;
    /* Called after each decode step with the number of steps done; may be NULL. */
    void (*on_step)(int step, int max_steps, void *user);
    void *user;
} up_generate_opts;

/* prompts[b] (lens[b] ids) for b < n_rows. out (n_rows, max_new_tokens) receives the new ids,
 * n_out (n_rows) how many each row produced. The state is reset first. */
up_status up_generate(up_state *s, const int32_t *const *prompts, const int *lens, int n_rows,
                      const up_generate_opts *opts, int32_t *out, int *n_out, up_error *err);

/* Index of the largest of n values (lowest index on ties). */
int up_argmax(const float *v, int n);

#endif
