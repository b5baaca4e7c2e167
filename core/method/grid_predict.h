/* grid_predict — the grid's first-order prediction of dR, the predicted_dR column (private to
 * the grid; callers use grid.h's up_grid_set_gradient and up_grid_set_prediction).
 *
 * For an intervention made only of ADD items at blocks.{l}.hook_resid_post, hook_resid_pre
 * (read as resid_post l - 1) or the embedding (l = -1), each l below the objective's layer:
 *   predicted_dR = Σ_items α · Σ_t v · g_t,   g_t = dR/dh_l[t]
 * with t over the prompt positions the item steers ("all" and "prompt": every prompt token; a
 * list: its positions, negative from the prompt's end; "generated": none, since steering after
 * the prompt cannot move R at prompt positions). Items with α = 0 add nothing; the sums are
 * accumulated in double. Every decoding of a (prompt, intervention) gets the same value; other
 * interventions (ABLATE, CLAMP, other hook points) get NaN.
 *
 * Where g comes from, per prompt and source layer: the gradient the caller supplied with
 * up_grid_set_gradient, kept only when it is of exactly the grid's objective (an attribution of
 * the same prompt and objective already holds it: attribution.h's up_attribute_result.grad),
 * else one backward pass of the prompt alone (backward.h's up_gradient, batch 1, no hooks), the
 * path for a prompt nobody attributed. up_attribute computes its gradient with that same call
 * (its capture hook only reads), so both paths give the same bits.
 *
 * Errors: out of memory, or the backward pass's error, prefixed "grid prediction". */
#ifndef UP_GRID_PREDICT_H
#define UP_GRID_PREDICT_H

#include "method/grid_impl.h"

/* Fills predicted_dR of every cell of the last run; the grid has an objective. */
up_status grid_predict(up_grid *g, up_error *err);

/* Drops the supplied gradients (they belong to an objective that is being replaced). */
void grid_drop_gradients(up_grid *g);

#endif
