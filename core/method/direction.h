/* direction — difference-in-means refusal direction candidates (Arditi et al. 2024).
 *
 * For every layer l and each of the last n_pos positions of the chat-formatted prompts (the
 * post-instruction tokens), the mean of blocks.{l}.hook_resid_pre over harmful prompts minus
 * the mean over harmless ones. Means accumulate in double, each batch's sum from zero and the
 * batches' sums added in batch order, so one process and N ranks (dist.h: a batch is a work
 * unit) give the same bits. Prompts are token id lists (the caller applies the chat template);
 * they run in left-padded batches and the pass stops at the last layer's input, so nothing
 * above is computed.
 *
 * Candidates are stored (n_pos, n_layers, d): index i is position i - n_pos from the end
 * (i = n_pos - 1 is the last token). Selection among them (bypass/induce/KL) is not here.
 * A chosen direction is read back from a file with up_direction_load. */
#ifndef UP_DIRECTION_H
#define UP_DIRECTION_H

#include "engine/forward.h"

typedef struct up_token_lists {
    const int32_t *const *ids; /* (n) */
    const int *lens;           /* (n) */
    int n;
} up_token_lists;

/* Progress: called after each batch with prompts done and total. May be NULL. */
typedef void (*up_progress_fn)(int done, int total, void *user);

/* mean (n_pos, n_layers, d) = mean over the prompts of resid_pre at the last n_pos slots.
 * Every prompt must have at least n_pos tokens. */
up_status up_direction_means(const up_model *m, const up_token_lists *prompts, int n_pos, int batch,
                             double *mean, up_progress_fn progress, void *user, up_error *err);

/* candidates (n_pos, n_layers, d) = mean(harmful) - mean(harmless), as float. */
up_status up_direction_candidates(const up_model *m, const up_token_lists *harmful,
                                  const up_token_lists *harmless, int n_pos, int batch, float *candidates,
                                  up_progress_fn progress, void *user, up_error *err);

/* Reads one direction vector of length d from `spec`:
 *   FILE.npy                      a float array of shape (d) or (n_pos, n_layers, d)
 *   FILE.safetensors[:NAME]       tensor NAME (default: "direction", else "candidates", else the
 *                                 only tensor), of shape (d) or (n_pos, n_layers, d)
 * For a 3-d array, pos (negative counts from the end) and layer pick the row; for a 1-d array
 * they are ignored (pass has_index 0). out (d) receives the vector as stored (not normalised). */
up_status up_direction_load(const char *spec, int d, int has_index, int pos, int layer, float *out,
                            up_error *err);

/* v /= ‖v‖ (in double). Returns the original norm; 0 leaves v unchanged. */
double up_direction_normalize(float *v, int d);

#endif
