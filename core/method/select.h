/* select — choosing the refusal direction among difference-in-means candidates (Arditi et al.).
 *
 * For every candidate r = candidates[i][ℓ] (direction.h: position i − n_pos from the end, the
 * input of block ℓ), on held-out validation prompts (token id lists, chat-formatted by the
 * caller) and refusal token ids:
 *   bypass  mean refusal score (metrics.h) of the harmful prompts with r̂ ablated at every
 *           block input, attention output and MLP output, all positions (steer.h ABLATE);
 *   induce  mean refusal score of the harmless prompts with +r (not normalised) added at
 *           blocks.{ℓ}.hook_resid_pre, all positions (steer.h ADD, alpha 1);
 *   kl      mean over the harmless prompts of KL(P_base ‖ P_ablated), the next-token
 *           distributions at the last prompt position without and with r̂ ablated, in nats.
 *           This is the reference pipeline's orientation (kl_div_fn(baseline, intervention)):
 *           it asks how much the ablation disturbs the model where it should do nothing.
 * Filters (each configurable): drop ℓ ≥ max_layer_frac·n_layers (0.8), kl > max_kl (0.1),
 * induce < min_induce (0), and any score that is not finite; among the rest the lowest bypass
 * wins, ties to the earlier candidate (position-major, then layer: the reference's order).
 * The layer rule is docs/method.md §3's real comparison; the reference code compares against
 * int(0.8·n_layers) instead, which drops one more layer when 0.8·n_layers is not an integer
 * (26 layers: it drops ℓ ≥ 20, this drops ℓ ≥ 21). Pass floor(0.8·L)/L to reproduce it.
 *
 * Every candidate's scores are kept (for plots) with a bitmask of the filters that removed
 * it. On a large model scoring all n_pos × n_layers candidates takes hours on a CPU (each one
 * runs every validation prompt three times), so opts can name the layers and positions worth
 * scoring and skip the layers the layer filter would drop anyway: a candidate left out is
 * not run, its scores are NaN and its mask is UP_SELECT_DROP_UNSCORED (plus LAYER where
 * that filter applies). Among the scored candidates the rule is the same. Prompts run in left-padded batches; the three measurements of a candidate share
 * batches (one steering setting per row). A candidate of norm 0 cannot be ablated: its
 * scores are NaN and it is dropped as non-finite.
 *
 * Ownership: up_select_direction allocates result->scores; up_select_result_free frees it.
 * Errors: an up_status with a message (forward.h's, or UP_ERR_INVALID for bad arguments);
 * "nothing passed the filters" is not an error: result->best is -1 and the scores are there.
 * The progress callback may abort nothing; it only reports. */
#ifndef UP_SELECT_H
#define UP_SELECT_H

#include "method/direction.h"

enum {
    UP_SELECT_KEPT = 0,
    UP_SELECT_DROP_LAYER = 1u << 0,  /* ℓ ≥ max_layer_frac · n_layers */
    UP_SELECT_DROP_KL = 1u << 1,     /* kl > max_kl */
    UP_SELECT_DROP_INDUCE = 1u << 2, /* induce < min_induce */
    UP_SELECT_DROP_NAN = 1u << 3,     /* a score is NaN or infinite */
    UP_SELECT_DROP_UNSCORED = 1u << 4 /* left out by opts.layers / positions / skip_late_layers */
};

typedef struct up_select_opts {
    double max_layer_frac; /* 0.8 */
    double max_kl;         /* 0.1 */
    double min_induce;     /* 0.0 */
    int batch;             /* rows per forward pass (8) */
    /* Which candidates to score (NULL / 0: all). layers in [0, n_layers); positions as
     * i − n_pos, in [−n_pos, −1] (the last position is −1). A repeated entry counts once. */
    const int *layers;
    int n_layers_scored;
    const int *positions;
    int n_positions_scored;
    int skip_late_layers;  /* 1: do not score layers that max_layer_frac drops (0: score them, for plots) */
    up_progress_fn progress; /* after each scored candidate: (done, number to score); may be NULL */
    void *user;
} up_select_opts;

/* The defaults above. */
up_select_opts up_select_opts_default(void);

typedef struct up_select_score {
    int pos;          /* i: position i − n_pos from the end */
    int layer;        /* ℓ */
    double bypass;
    double induce;
    double kl;
    unsigned dropped; /* UP_SELECT_DROP_* bits; UP_SELECT_KEPT (0) when it passed */
} up_select_score;

typedef struct up_select_result {
    up_select_score *scores; /* (n_pos * n_layers), index i * n_layers + ℓ */
    int n_pos, n_layers;
    int best;                /* index into scores, -1 when every candidate was dropped */
    int n_kept;
    double base_harmful;     /* mean refusal score without intervention */
    double base_harmless;
} up_select_result;

/* candidates (n_pos, n_layers, d) from up_direction_candidates. Every prompt must be non-empty.
 * opts NULL means the defaults. */
up_status up_select_direction(const up_model *m, const float *candidates, int n_pos,
                              const up_token_lists *harmful, const up_token_lists *harmless,
                              const int32_t *refusal_ids, int n_refusal, const up_select_opts *opts,
                              up_select_result *result, up_error *err);

/* Re-applies the filters of opts (NULL: defaults) to saved scores: sets every dropped mask and
 * returns the winner's index, or -1. Lets a script try other thresholds without rerunning.
 * An UNSCORED mark stays (with LAYER where it applies) and is never kept. */
int up_select_pick(up_select_score *scores, int n, int n_layers, const up_select_opts *opts, int *n_kept);

/* Writes the names of the bits in `dropped` ("layer", "kl", "induce", "nan", "unscored"), comma-separated,
 * or "kept"; returns buf. */
const char *up_select_dropped_names(unsigned dropped, char *buf, size_t size);

void up_select_result_free(up_select_result *r); /* NULL-safe; frees scores only */

#endif
