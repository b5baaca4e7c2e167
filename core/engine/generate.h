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

#include "engine/forward.h"

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

/* ---- the first pass of a batch, with shared prompts ---------------------------------------
 *
 * up_prefill runs prompts[b] (lens[b] ids, b < n_rows) as one left-padded chunk on s (reset
 * first), hooks in it and n_prompt = lens, and writes the last position's logits (n_rows, V)
 * (logits may be NULL). Rows whose prompts are equal can share the work (forward.h's pause and
 * row copies), as `share` says:
 *   UP_PREFILL_ALONE  no sharing: one ordinary pass.
 *   UP_PREFILL_UNTIL  each distinct prompt runs once, without hooks, up to the residual point
 *                     `until`; its rows are copied from it and the pass goes on for every row,
 *                     with hooks, from `until`'s hooks on. Sound when no hook does anything to
 *                     a prompt slot before `until`.
 *   UP_PREFILL_WHOLE  each distinct prompt runs once, without hooks, to its logits; rows copy
 *                     its cache and logits. Sound when no hook touches a prompt slot at all
 *                     (e.g. steering of generated tokens only, or no hooks).
 *   UP_PREFILL_PREFIX the prompts' longest common prefix (shorter than every prompt) runs once,
 *                     as one row, with hooks; every row copies its cache and runs the rest of
 *                     its own prompt, left-padded, with hooks. Sound when the hooks act alike
 *                     on every row at the prefix's positions (the same steering for every row,
 *                     not tied to prompt-relative positions). Without a common prefix, or with
 *                     one row, it is one ordinary pass.
 * With every prompt distinct it is one ordinary pass whatever `share` but PREFIX. Shared rows
 * agree with unshared ones to the rounding of a row computed in another batch (forward.h).
 * *prompt_tokens (may be NULL) is increased by the real prompt tokens run from the embedding:
 * a shared prompt counts once. Allocates its padded token buffers per call. */
typedef enum { UP_PREFILL_ALONE = 0, UP_PREFILL_UNTIL, UP_PREFILL_WHOLE, UP_PREFILL_PREFIX } up_prefill_share;

up_status up_prefill(up_state *s, const int32_t *const *prompts, const int *lens, int n_rows, up_prefill_share share,
                     up_hook_point until, const up_hooks *hooks, float *logits, long *prompt_tokens, up_error *err);

/* Index of the largest of n values (lowest index on ties). */
int up_argmax(const float *v, int n);

#endif
