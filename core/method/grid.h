/* grid — steering experiments as a grid of cells, batched through the model and cached on disk.
 *
 * A cell is one prompt × one intervention × one decoding setting. For every cell the grid
 * measures (docs/method.md §7, metrics.h):
 *   score         Arditi refusal score at the last prompt position (refusal ids given)
 *   p_refusal     the refusal tokens' probability there
 *   R             ⟨h_L[t], r̂⟩ at the objective's layer and positions (when an objective is set)
 *   tokens/text   the greedy completion (max_new_tokens > 0); text needs a tokenizer
 *   refusal_match the substring judge on the text (index into the list, -1 none, -2 no text)
 *   logprob       coherence: mean log-prob of the completion under the *unsteered* model
 *   repetition    coherence: fraction of repeated n-grams in the completion
 * and, against the unsteered cell of the same prompt and decoding, dscore and dR; and
 * predicted_dR, the first-order prediction α·Σ_t v·g_t (g the gradient of R at the steering
 * layer), for interventions made only of ADD items at blocks.{l}.hook_resid_post or
 * hook_resid_pre below the objective (the linearity check); NaN elsewhere (grid_predict.h).
 * A caller that already holds g for a prompt (an attribution of the same prompt and objective)
 * hands it over with up_grid_set_gradient, and the grid runs no backward pass for it; for the
 * other prompts it runs one (up_gradient), with the same bits. A caller with a prediction of its own may overwrite
 * the column with up_grid_set_prediction after a run.
 *
 * Axes. Prompts are token ids (chat-formatted by the caller). Interventions are ordered lists
 * of steer.h items; intervention 0 is always "none" (unsteered), which gives the baseline
 * of dscore/dR and a row of its own in tables. up_grid_add_sweep builds vectors × alphas, and
 * up_grid_add_latent_sweep SAE decoder rows × alphas. Decodings are max_new_tokens values
 * (0: scoring only, no generation, no completion metrics); without any, one of 0 is used.
 * Cells are indexed (prompt · n_interventions + intervention) · n_decodings + decoding.
 *
 * Batching and what is shared. Cells that need computing run as batch rows, each row with its
 * own steering (steer.h plan rows; at most opts.batch rows per pass), ordered by decoding,
 * then prompt, then intervention, so rows of one prompt sit together and padding appears only
 * where a batch crosses from one prompt to the next. Cells that share a prompt share its
 * prefix computation (opts.share_prompts): within a batch, each distinct prompt runs once up
 * to the first hook point where any row's steering can act on a prompt slot (for steering of
 * generated tokens only, the whole prompt, KV cache and logits), and its rows continue from a
 * copy (steer.h's up_steer_run). A cell's one prefill gives both its score and
 * the cache its completion decodes from (no second prefill); the unsteered baseline is
 * computed once per prompt and decoding; the coherence log-probs of a batch's completions are
 * one teacher-forced pass, with one row per distinct (prompt, completion) pair, since the
 * unsteered model scores a completion the same whichever steering produced it, and that
 * pass computes each prompt once too (metrics.h); and cells with identical keys (below) are computed once — in
 * particular every ADD with alpha 0 is dropped from the key (steer.h skips it, so the
 * computation is the same), so an alpha = 0 cell *is* the "none" cell, bit for bit.
 *
 * Cache (grid_cache.h). Each cell's key is the SHA-256 (hash.h) of a canonical text naming
 * everything that determines its outputs: the grid format version (UP_GRID_FORMAT), the identities (the
 * model directory's digest, the digest of every SAE a CLAMP uses, and whatever the caller
 * adds with up_grid_identity, e.g. the program version or a tokenizer outside the model
 * directory), the prompt's ids, the intervention's items (kind, hook point, alpha and the
 * position rule exactly, vectors by the SHA-256 of their float32 bytes), max_new_tokens, the
 * stop ids, the refusal ids, the objective (layer, direction digest, positions), whether text
 * is decoded and the substring list, the coherence switch and n-gram size. Labels do not
 * count. The text is kept in the cell file ("spec"), so a key can be audited. A finished cell
 * is written at once to CACHE/<key[0:2]>/<key>.json (jansson; doubles with 17 significant
 * digits, so they read back bit for bit; NaN as null, infinities as "inf"/"-inf"), to a
 * temporary name then renamed, so a killed run leaves whole files only and the next run with
 * the same cache resumes where it stopped; a changed axis recomputes only the cells whose
 * keys are new. A file that is unreadable, does not carry its key or fails its own SHA-256
 * check (a changed or truncated file) is recomputed and rewritten. File digests are memoised in CACHE/filehash (hash.h). Without a cache nothing
 * is hashed from disk and keys are still formed (they are what deduplicates cells).
 *
 * Determinism. The forward pass's bits depend on a row's place in its batch (OpenBLAS tiles
 * rows), so a cell computed in another batch agrees to float rounding (~1e-6), not bit for
 * bit. Batches are formed from the cells still missing, in the fixed order above; a run
 * stopped between batches (the progress callback, or a kill once a batch's files are
 * written) therefore resumes with the same batches and gives the same bits as one that was
 * never stopped. Cells read from the cache are bit-identical to when they were computed.
 *
 * Many processes (dist.h). The batches above are work units: every rank forms the same ones
 * (rank 0 reads the cache and tells the others what is missing; the others ignore cache_dir),
 * each batch runs whole on one rank, and its cells come back to rank 0 as their cache files'
 * bytes; rank 0 writes each to the cache as it arrives and then sends every rank every cell,
 * so each rank's grid ends with the same cells, bit for bit as one process. The predictions'
 * gradients are units too, one prompt each. Progress is rank 0's to report.
 *
 * Progress. opts.progress is called after every batch and after every forward pass inside a
 * batch (prefill and each decode step), with counts, rates and an ETA; returning non-zero
 * stops the run: cells already written stay cached, the running batch is dropped, and
 * up_grid_run returns UP_ERR_ABORTED. up_grid_progress_format renders a bar for the caller
 * to print (core never prints).
 *
 * Ownership: the grid copies prompts, labels, items, vectors and position lists; it borrows
 * the model, SAEs (CLAMP items) and the tokenizer, which must outlive it. Cell outputs are
 * owned by the grid and valid until the next up_grid_run or up_grid_free.
 * Errors: up_status with a message; adders validate at once (ids against the vocabulary,
 * items through up_steer_hooks) and name the prompt or intervention. */
#ifndef UP_GRID_H
#define UP_GRID_H

#include <stdint.h>

#include "engine/backward.h"
#include "method/steer.h"
#include "text/tokenizer.h"

#define UP_GRID_FORMAT 1 /* bump when a cell's outputs change meaning: old cache files then miss */

typedef struct up_grid up_grid;

up_status up_grid_init(up_grid **out, const up_model *m, up_error *err);
void up_grid_free(up_grid *g); /* NULL-safe */

/* Adds name = value to every cell's key (replacing an earlier value for the same name).
 * Names are hashed in byte order, so the order of calls does not matter. "model" replaces the
 * model directory's digest (needed to cache a model built in memory). */
up_status up_grid_identity(up_grid *g, const char *name, const char *value, up_error *err);

/* Returns the new prompt's index, or -1. label may be NULL ("prompt <i>"). */
int up_grid_add_prompt(up_grid *g, const char *label, const int32_t *ids, int n_ids, up_error *err);

typedef struct up_grid_intervention {
    const char *label;     /* for tables; NULL: made from the items */
    const up_steer *items; /* (n_items) applied in order */
    int n_items;
    int latent;            /* for tables: the SAE latent steered, or -1 */
    float alpha;           /* for tables: the coefficient, or NaN */
} up_grid_intervention;

/* Returns the new intervention's index (>= 1), or -1. */
int up_grid_add_intervention(up_grid *g, const up_grid_intervention *iv, up_error *err);

/* n_vectors × n_alphas ADD interventions, vector-major: vectors (n_vectors, d) added at
 * `point` (a concrete hook point) with each alpha at the positions of `where` (not LIST).
 * names (may be NULL) label the vectors; latents (may be NULL) fill the latent column. */
up_status up_grid_add_sweep(up_grid *g, up_hook_point point, up_steer_where where, const float *vectors,
                            const char *const *names, const int *latents, int n_vectors, const float *alphas,
                            int n_alphas, up_error *err);

/* The sweep of SAE decoder rows W_dec[latents[i]] at the SAE's hook. */
up_status up_grid_add_latent_sweep(up_grid *g, const up_sae *sae, const int *latents, int n_latents,
                                   const float *alphas, int n_alphas, up_steer_where where, up_error *err);

/* Returns the new decoding's index, or -1. */
int up_grid_add_decoding(up_grid *g, int max_new_tokens, up_error *err);

/* R = Σ over positions of ⟨h_L[t], r̂⟩ at blocks.{layer}.hook_resid_post; direction (d) is
 * copied and normalised (zero is an error); positions as metrics.h's up_projection (NULL: the
 * last prompt token; negative from the prompt's end). */
up_status up_grid_set_objective(up_grid *g, int layer, const float *direction, const int *positions,
                                int n_positions, up_error *err);

typedef struct up_grid_progress {
    int done, total;       /* cells finished (from the cache or computed) and all cells */
    int cached, computed;  /* how the finished ones were obtained (duplicates count where
                              their original did) */
    int batch, n_batches;  /* the batch running, or just finished when steps is 0 (1-based; 0
                              before the first and after the last), and how many there are */
    int step, steps;       /* forward passes done of the running batch (prefill + decode);
                              0 of 0 in the report that follows each batch */
    double elapsed;        /* seconds since up_grid_run began */
    double rate;           /* computed cells per second, NaN until a batch has finished */
    double eta;            /* seconds left at that rate, NaN when unknown */
} up_grid_progress;

/* Return non-zero to stop the run. */
typedef int (*up_grid_progress_fn)(const up_grid_progress *p, void *user);

typedef struct up_grid_opts {
    int batch;                        /* rows per forward pass (16) */
    const char *cache_dir;            /* NULL: no cache */
    const int32_t *refusal_ids;       /* (n_refusal) required */
    int n_refusal;
    const int32_t *stop_ids;          /* (n_stop) end a completion (the stop id is kept) */
    int n_stop;
    const up_tokenizer *tok;          /* decodes completions (skipping special tokens) for the
                                         substring judge; NULL: no text */
    const char *const *substrings;    /* (n_substrings) NULL: metrics.h's list */
    int n_substrings;
    int coherence;                    /* 1: completion log-probs under the unsteered model (1) */
    int rep_n;                        /* n-gram size of the repetition ratio (3) */
    int predict;                      /* 1: first-order predictions (needs an objective) (1) */
    int share_prompts;                /* 1: a batch's rows with one prompt share its prefix (1) */
    up_grid_progress_fn progress;     /* may be NULL */
    void *user;
} up_grid_opts;

up_grid_opts up_grid_opts_default(void);

/* Computes every cell that is not in the cache, then the derived columns. Replaces the
 * results of an earlier run of the same grid (axes may have grown in between). */
up_status up_grid_run(up_grid *g, const up_grid_opts *opts, up_error *err);

enum { UP_GRID_PENDING = 0, UP_GRID_COMPUTED, UP_GRID_CACHED };

typedef struct up_grid_cell {
    int prompt, intervention, decoding; /* indices along the axes */
    const char *prompt_label;           /* owned by the grid */
    const char *label;                  /* the intervention's */
    int latent;                         /* -1 if none */
    float alpha;                        /* NaN if none */
    int max_new_tokens;
    char key[65];                       /* lowercase hex SHA-256 */
    int state;                          /* UP_GRID_* */
    double score, p_refusal;
    double R, dR, dscore, predicted_dR; /* NaN when not measured */
    int32_t *tokens;                    /* (n_tokens) the greedy completion */
    int n_tokens;
    char *text;                         /* NULL without a tokenizer or completion */
    int refusal_match;                  /* index into the substring list; -1 none; -2 not judged */
    double logprob, repetition;         /* NaN without a completion (or coherence off) */
} up_grid_cell;

int up_grid_n_prompts(const up_grid *g);
int up_grid_n_interventions(const up_grid *g);
int up_grid_n_decodings(const up_grid *g);
int up_grid_n_cells(const up_grid *g); /* n_prompts · n_interventions · n_decodings */
/* The i-th cell of the last run (NULL before a run or out of range). */
const up_grid_cell *up_grid_cell_at(const up_grid *g, int i);
int up_grid_index(const up_grid *g, int prompt, int intervention, int decoding);
/* The substring the judge matched for a cell (NULL for none / not judged). */
const char *up_grid_match_text(const up_grid *g, const up_grid_cell *c);

/* Supplies the prediction's gradient for one prompt, so the run computes none for it: grad
 * (n_tok, d) is g_t = dR/dh_layer[t] of `objective` for the prompt's n_tok tokens, at
 * blocks.{layer}.hook_resid_post (-1: the embedding); e.g. an attribution's (attribution.h:
 * the request's objective and source layer, the result's grad). It is kept (copied, replacing
 * an earlier one for the same prompt and layer) only when `objective` is exactly the grid's:
 * the same layer and positions and a direction with the bits of the grid's unit direction
 * (so a direction that is not unit does not match). A gradient of another objective is not an
 * error: the run computes the prompt's own, as without it. The grid cannot check the values
 * themselves: an unhooked up_gradient of the prompt alone (what the run would compute, and what
 * up_attribute without hooks computes) gives the same bits. Set the objective first; setting it
 * again drops the supplied gradients. */
up_status up_grid_set_gradient(up_grid *g, int prompt, int layer, const up_objective *objective, const float *grad,
                               int n_tok, up_error *err);

/* Overwrites predicted_dR of every cell of (prompt, intervention) after a run. */
up_status up_grid_set_prediction(up_grid *g, int prompt, int intervention, double predicted_dR, up_error *err);

typedef struct up_grid_totals {
    int cells, unique;    /* cells, and distinct keys among them */
    int cached, computed; /* distinct keys read from the cache / computed in the last run */
    int batches;          /* batches run */
    long prompt_tokens;   /* prompt tokens the steering passes ran from the embedding: a prompt
                             shared by a batch's rows counts once (coherence passes not counted) */
    double seconds;       /* wall time of the last run */
} up_grid_totals;

up_grid_totals up_grid_get_totals(const up_grid *g);

/* Renders p as one line into buf, e.g. "[#####.....] 40/64 cells  12 cached  3.1 cells/s
 * ETA 0:08"; width is the bar's width in characters (0: no bar). Returns buf. */
const char *up_grid_progress_format(const up_grid_progress *p, int width, char *buf, size_t size);

#endif
