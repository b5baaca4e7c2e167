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
 * Two modes give the same winner:
 *   UP_SELECT_FULL (0, the C default): every candidate's three scores, for the complete
 *     selection figure; layers the cut drops are scored too unless skip_late_layers.
 *   UP_SELECT_LAZY (what model:select_direction and X:direction use unless told "full"): the
 *     layers the cut drops are never run; bypass for every other candidate, then induce and KL
 *     in increasing bypass order (ties: the earlier candidate) only until one candidate passes
 *     every filter. That one is the full rule's winner, because every candidate ahead of it in
 *     that order failed a filter. The candidates after it keep their bypass, have NaN induce and
 *     KL, and are marked UP_SELECT_DROP_BYPASS_ONLY ("bypass_only"); one whose bypass is not
 *     finite is dropped as NAN without them. It saves every run of the late layers and the
 *     induce and KL rows (twice the harmless prompts) of every candidate after the winner.
 * Every measurement runs in left-padded batches of opts.batch rows that hold nothing but its
 * own rows, each set's prompts taken in increasing length (ties in their given order) so that
 * a batch pads little: bypass over the harmful prompts (ablated); KL over the harmless prompts
 * (ablated); induce over the harmless prompts (+r). The batches do not depend on the mode or on other
 * candidates, so a candidate scored by both modes has the same bits in both (the last bits of
 * a score depend on its batch's padding and shape). The unsteered baselines (both sets' mean
 * refusal scores and the harmless logits KL compares against) run once, in batches of harmful
 * then harmless rows.
 * What does not change between candidates is computed once: KL's reference logits, and, for
 * induce, each harmless batch's unsteered pass with its residual stream before every layer a
 * scored candidate adds at (made by the first induce a process runs, so a rank of a job that
 * runs none never makes it). A candidate at layer ℓ then reruns its batches from block ℓ only
 * (forward.h's snapshots), with the bits of the whole steered pass; that saves ℓ/n_layers of
 * its induce work. The cache takes, per harmless batch, rows x padded length x (d_model per
 * such layer + the keys and values of every layer) floats; above UP_SELECT_REUSE_MAX_BYTES in
 * all, induce runs whole passes instead (same bits). */
#define UP_SELECT_REUSE_MAX_BYTES (2.0 * 1024 * 1024 * 1024)
/*
 *
 * Every candidate's scores are kept (for plots) with a bitmask of the filters that removed
 * it. opts can also name the layers and positions worth scoring: a candidate left out is not
 * run, its scores are NaN and its mask is UP_SELECT_DROP_UNSCORED ("unscored", plus LAYER
 * where that filter applies). Among the scored candidates the rule is the same. A candidate
 * of norm 0 cannot be ablated: its scores are NaN and it is dropped as non-finite.
 *
 * Over several processes (dist.h) the baselines' batches and the candidates are work units:
 * every rank takes rank 0's baselines and scores, so the result is one process's, bit for bit.
 * Lazy mode's filter pass hands candidates out in bypass order; the ones scored beside the
 * winner (after it in that order) are dropped back to BYPASS_ONLY, as one process has them.
 * Progress reports then come in the order candidates finish.
 *
 * Progress: opts.progress is called after each candidate a pass finishes (up_select_progress:
 * which pass, done of total, the candidate, whether it passed every filter); a non-zero
 * return stops the selection with UP_ERR_ABORTED.
 *
 * Ownership: up_select_direction allocates result->scores; up_select_result_free frees it.
 * Errors: an up_status with a message (forward.h's, or UP_ERR_INVALID for bad arguments);
 * "nothing passed the filters" is not an error: result->best is -1 and the scores are there. */
#ifndef UP_SELECT_H
#define UP_SELECT_H

#include "method/direction.h"

enum {
    UP_SELECT_KEPT = 0,
    UP_SELECT_DROP_LAYER = 1u << 0,  /* ℓ ≥ max_layer_frac · n_layers */
    UP_SELECT_DROP_KL = 1u << 1,     /* kl > max_kl */
    UP_SELECT_DROP_INDUCE = 1u << 2, /* induce < min_induce */
    UP_SELECT_DROP_NAN = 1u << 3,     /* a score is NaN or infinite */
    UP_SELECT_DROP_UNSCORED = 1u << 4, /* not run: left out by opts.layers / positions, or a layer the cut drops
                                          (lazy mode, or skip_late_layers) */
    UP_SELECT_DROP_BYPASS_ONLY = 1u << 5 /* lazy mode: bypass scored, induce and KL not needed */
};

typedef enum { UP_SELECT_FULL = 0, UP_SELECT_LAZY = 1 } up_select_mode;

/* Which pass a progress report belongs to. */
typedef enum {
    UP_SELECT_PASS_ALL = 0,    /* full mode: a candidate's three scores */
    UP_SELECT_PASS_BYPASS = 1, /* lazy mode: a candidate's bypass */
    UP_SELECT_PASS_FILTERS = 2 /* lazy mode: a candidate's induce and KL, in bypass order; total is
                                  the most it can take (the candidates with a finite bypass): it
                                  ends at the first that passes */
} up_select_pass;

typedef struct up_select_progress {
    up_select_pass pass;
    int done, total;  /* candidates finished in this pass, and how many it has */
    int pos, layer;   /* the candidate just finished; pos as i − n_pos */
    int passed;       /* ALL / FILTERS: 1 when it passed every filter (0 in the BYPASS pass) */
    int n_passed;     /* how many have passed so far in this pass */
    int batch;        /* rows per forward pass */
} up_select_progress;

/* Return non-zero to stop. */
typedef int (*up_select_progress_fn)(const up_select_progress *p, void *user);

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
    up_select_mode mode;   /* FULL (0) or LAZY */
    int skip_late_layers;  /* FULL: 1 does not score layers that max_layer_frac drops (0: score them,
                              for plots). LAZY never scores them. */
    up_select_progress_fn progress; /* may be NULL */
    void *user;
} up_select_opts;

/* The defaults above; mode FULL. */
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
 * An UNSCORED or BYPASS_ONLY mark stays (with LAYER where it applies) and is never kept: on a
 * lazy result other thresholds may pick a candidate lazy mode did not score, so a script that
 * re-picks wants a full result. */
int up_select_pick(up_select_score *scores, int n, int n_layers, const up_select_opts *opts, int *n_kept);

/* Writes the names of the bits in `dropped` ("layer", "kl", "induce", "nan", "unscored",
 * "bypass_only"), comma-separated,
 * or "kept"; returns buf. */
const char *up_select_dropped_names(unsigned dropped, char *buf, size_t size);

void up_select_result_free(up_select_result *r); /* NULL-safe; frees scores only */

#endif
