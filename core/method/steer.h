/* steer — interventions on the residual stream, as forward hooks, one setting per batch row.
 *
 * Kinds (docs/method.md §4, with d the model width and h one slot's activation at a hook point):
 *   ADD     h += alpha·v at one hook point (v an SAE decoder row or any vector). alpha == 0 is
 *           skipped entirely, so it is bit-identical to no intervention.
 *   ABLATE  directional ablation h ← h − (h·r̂) r̂ at every blocks.{l}.hook_resid_pre,
 *           blocks.{l}.hook_attn_out and blocks.{l}.hook_mlp_out, for every layer (Arditi et al.;
 *           the intervention's `point` is ignored). r is normalised here (in double), so an
 *           un-normalised difference-in-means vector may be passed. The projection is summed in
 *           double. Several ABLATE items in one row are applied one after the other (for
 *           non-orthogonal directions this is not the projection onto their span's complement).
 *   CLAMP   encode h with the SAE, set latent k to `value`, decode, add the SAE error (h − x̂)
 *           back. Only a_k changes, so this equals h += (value − a_k(h))·W_dec[k] exactly in real
 *           arithmetic, which is how it is computed: no full encode/decode round trip, hence no
 *           rounding noise in the other latents, and value == a_k(h) changes nothing. a_k(h)
 *           follows sae.h (JumpReLU / ReLU / TopK, with apply_b_dec_to_input); for TopK the
 *           whole pre-activation row is formed to rank latent k (ties to the lower index).
 *           Needs the SAE's encoder and decoder; its d_in must equal d_model.
 *
 * Positions (per intervention), from each slot's position p (call->pos; pads, p < 0, are never
 * touched) and the row's prompt length n = call->n_prompt[b]:
 *   ALL        every real slot
 *   PROMPT     p < n; every slot when n_prompt is NULL (a plain forward is all prompt)
 *   GENERATED  p >= n; nothing when n_prompt is NULL
 *   LIST       p equal to one of `positions`; a negative entry e means n + e (-1 = last prompt
 *              token). Without n_prompt the prompt is taken to end at the chunk's last slot of
 *              the row, which is right for a one-call prefill (the usual case) and for nothing
 *              else, so pass n_prompt when appending chunks.
 *
 * A plan gives each batch row its own ordered list of interventions; a one-row plan applies
 * to every row. At a hook point, each row's items for that point run in list order; across
 * points the forward order rules. up_steer_hooks turns a plan into an up_steer_set whose
 * up_hooks plug into up_forward, up_generate and up_gradient (backward.h treats hooks as
 * additive: ADD is exact there, ABLATE and CLAMP are not differentiated through).
 *
 * Ownership: the set copies the plan's rows, items and position lists, and owns normalised
 * copies of ablation directions; ADD vectors and SAEs are borrowed and must outlive the set.
 * The set holds scratch for TopK clamps, so one set must not run in two passes at once.
 * Hooks never allocate.
 *
 * Errors: up_steer_hooks validates everything it can (kinds, hook points against the model,
 * vectors, SAE parts and shapes, latent indices, position lists) and returns UP_ERR_INVALID
 * naming the row and item. At run time the only failure is a batch with more rows than a
 * plan of more than one row: the hook aborts the pass (UP_ERR_ABORTED from up_forward). */
#ifndef UP_STEER_H
#define UP_STEER_H

#include "engine/forward.h"
#include "sae/sae.h"

typedef enum { UP_STEER_ADD = 0, UP_STEER_ABLATE, UP_STEER_CLAMP } up_steer_kind;

typedef enum {
    UP_STEER_POS_ALL = 0,
    UP_STEER_POS_PROMPT,
    UP_STEER_POS_GENERATED,
    UP_STEER_POS_LIST
} up_steer_where;

typedef struct up_steer {
    up_steer_kind kind;
    up_hook_point point;  /* ADD and CLAMP: a concrete point (no UP_HOOK_ANY_LAYER); ABLATE: ignored */
    const float *vec;     /* (d) ADD: v; ABLATE: r (normalised by the set) */
    float alpha;          /* ADD: the coefficient */
    const up_sae *sae;    /* CLAMP */
    int latent;           /* CLAMP: k in [0, d_sae) */
    float value;          /* CLAMP: the value a_k is set to */
    up_steer_where where;
    const int *positions; /* (n_positions) for UP_STEER_POS_LIST */
    int n_positions;
} up_steer;

/* Initialisers with where = ALL. up_steer_clamp takes the point from sae->hook (falling back
 * to blocks.{sae->layer}.hook_resid_post); a SAE with no known hook gives an invalid point
 * that up_steer_hooks rejects. */
up_steer up_steer_add(up_hook_point point, const float *v, float alpha);
up_steer up_steer_ablate(const float *r);
up_steer up_steer_clamp(const up_sae *sae, int latent, float value);

typedef struct up_steer_row {
    const up_steer *items; /* (n) applied in order */
    int n;
} up_steer_row;

typedef struct up_steer_plan {
    const up_steer_row *rows; /* (n_rows); n_rows == 1 applies rows[0] to every batch row */
    int n_rows;
} up_steer_plan;

typedef struct up_steer_set up_steer_set;

/* Builds the hooks of `plan` for model m. extra (may be NULL) is appended after the steering
 * hooks, so a capture or projection hook there sees the steered activation. */
up_status up_steer_hooks(up_steer_set **out, const up_model *m, const up_steer_plan *plan,
                         const up_hooks *extra, up_error *err);
/* The list to pass to up_forward/up_generate/up_gradient; valid while the set lives. */
const up_hooks *up_steer_set_hooks(const up_steer_set *set);
void up_steer_set_free(up_steer_set *set); /* NULL-safe */

/* ---- running a batch of cells --------------------------------------------------------- */

/* One batch: prompt rows, each with its own steering (plan row b, or the one-row plan). */
typedef struct up_steer_batch {
    const int32_t *const *prompts; /* (n_rows) token ids, chat-formatted by the caller */
    const int *lens;               /* (n_rows) */
    int n_rows;
    const up_steer_plan *plan;     /* NULL: unsteered */
    const up_hooks *extra;         /* run after the steering hooks; may be NULL */
    const int32_t *refusal_ids;    /* (n_refusal) for out->score */
    int n_refusal;
    int max_new_tokens;            /* 0: prefill only */
    const int32_t *stop_ids;       /* (n_stop) */
    int n_stop;
    int no_sharing;                /* 1: every row computes its own prompt (for comparisons) */
} up_steer_batch;

/* Every output is optional (NULL: not wanted). */
typedef struct up_steer_out {
    double *score;    /* (n_rows) refusal score at the last prompt position (metrics.h) */
    float *logits;    /* (n_rows, V) logits at the last prompt position */
    int32_t *tokens;  /* (n_rows, max_new_tokens) greedy continuation, as up_generate */
    int *n_tokens;    /* (n_rows) tokens produced per row; required with tokens */
    long *prompt_tokens; /* (1) increased by the prompt tokens run from the embedding: a prompt
                            shared by several rows counts once */
} up_steer_out;

/* Runs the batch on state s (reset first; it needs n_rows rows and max(lens) + max_new_tokens
 * columns): one left-padded prefill, whose last-position logits give score/logits, then, if
 * tokens is set, greedy decoding that continues from the same cache exactly as up_generate
 * does (same stop rule and ties, n_prompt passed in every pass), so no second prefill.
 *
 * Shared prompts: rows with equal prompts compute the prompt once (generate.h's up_prefill)
 * up to the residual point at or before the first hook point where any row's steering can
 * change a prompt slot (by its kind, point, alpha and position rule, for that row's prompt
 * length; ABLATE acts from blocks.0.hook_resid_pre) or where any `extra` hook sits (extra hooks
 * are opaque, so they count as acting everywhere at their point). If nothing acts on the
 * prompt (e.g. every item steers generated tokens only), the whole prompt, its cache and its
 * logits are shared. Distinct prompts whose rows are steered alike (one item array for every
 * row, no position lists, no extra hooks) share their common prefix instead, e.g. the chat
 * template's opening: it runs once and each row goes on from a copy (up_prefill's PREFIX).
 * Results equal the unshared run's to the rounding of a row computed in another batch
 * (forward.h); no_sharing turns both off.
 * Allocates its logits and token buffers per call. */
up_status up_steer_run(up_state *s, const up_steer_batch *batch, up_steer_out *out, up_error *err);

/* "add", "ablate", "clamp"; "all", "prompt", "generated", "list". parse returns -1 if unknown. */
const char *up_steer_kind_name(up_steer_kind kind);
int up_steer_kind_parse(const char *name, up_steer_kind *out);
const char *up_steer_where_name(up_steer_where where);
int up_steer_where_parse(const char *name, up_steer_where *out);

#endif
