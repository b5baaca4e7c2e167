/* backward — activation-only gradients through Gemma-2 blocks.
 *
 * For a scalar objective defined at layer L,
 *     R = sum over chosen positions t of <h_L[t], v>,  h_L = blocks.{L}.hook_resid_post,
 * computes g[t] = dR/dh_l[t] at blocks.{l}.hook_resid_post (l < L; l = -1 means hook_embed) for
 * every position of every row, by one forward pass to L that records what the backward needs
 * (forward.h's tape) and one backward pass through blocks l+1..L: RMSNorms with (1+w), GeGLU
 * with tanh-GELU, attention with softcap, causal and sliding-window masks, GQA and RoPE. No
 * weight gradients are formed, so the backward costs about one forward of the same span.
 *
 * Forward hooks may steer the pass; a hook inside the differentiated span is treated as
 * additive (its Jacobian is taken as the identity). Gradient hooks (same up_hooks type) are
 * called during the backward at blocks.{k}.hook_resid_post, hook_resid_mid, hook_attn_out and
 * hook_mlp_out for l < k <= L, with call.act = dR/d(that activation); they must not write it.
 *
 * Positions: NULL means the last slot of each row; otherwise indices into each row's real
 * tokens, negative counting from the end (-1 = last). Rows may be left-padded (n_pad).
 * Everything is allocated per call and freed before returning. Errors as in forward.h. */
#ifndef UP_BACKWARD_H
#define UP_BACKWARD_H

#include "forward.h"

typedef struct up_objective {
    int layer;             /* L: the objective reads blocks.{L}.hook_resid_post */
    const float *direction; /* (d) v; not normalised here */
    const int *positions;  /* (n_positions) or NULL for the last position */
    int n_positions;
} up_objective;

/* grad (n_rows, n_tok, d) receives dR/dh at blocks.{source_layer}.hook_resid_post (pad slots 0);
 * R (n_rows), if non-NULL, receives each row's objective value (accumulated in double). */
up_status up_gradient(const up_model *m, const int32_t *tokens, const int *n_pad, int n_rows, int n_tok,
                      int source_layer, const up_objective *obj, const up_hooks *hooks,
                      const up_hooks *grad_hooks, float *grad, double *R, up_error *err);

/* Resolves obj->positions for a row with n_real tokens into slot indices within the row's
 * n_tok slots (left padding n_tok - n_real). Returns the count, or -1 if an index is out of
 * range. out must hold max(1, n_positions) ints. Duplicates are kept (they count twice). */
int up_objective_slots(const up_objective *obj, int n_tok, int n_real, int *out);

#endif
