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

#include "engine/forward.h"

#include <stddef.h>

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

/* ---- weight gradients (training) ----------------------------------------------------------
 * For a model whose weights are fp32 in two memory blocks (up_model_param_blocks): gradients use
 * the same layout, so a weight's gradient sits at the same offset in d_mats / d_norms. */
typedef struct up_param_grads {
    const float *mats;  /* (n_mats) the model's matrix block (embedding included) */
    float *d_mats;      /* (n_mats) accumulated gradients */
    size_t n_mats;
    const float *norms; /* (n_norms) the model's norm block, raw w of (1 + w) */
    float *d_norms;     /* (n_norms) */
    size_t n_norms;
} up_param_grads;

/* Next-token cross-entropy over slots whose target is >= 0: tokens (n_rows, n_tok), targets
 * (n_rows, n_tok) with targets[t] the id that should follow tokens[t] (-1: no loss there; use it
 * for pads and prompt tokens). Adds d(mean loss)/d(weights) into grads (zero them first) and
 * returns the mean loss (double) and the number of target slots. Tied embeddings get both their
 * input and output gradients. Rows may be left-padded (n_pad). UP_ERR_INVALID if the model's
 * weights are not fp32 memory blocks or no slot has a target. */
up_status up_loss_gradients(const up_model *m, const int32_t *tokens, const int32_t *targets, const int *n_pad,
                            int n_rows, int n_tok, up_param_grads *grads, double *loss, int *n_targets,
                            up_error *err);

#endif
