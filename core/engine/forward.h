/* forward — the Gemma-2 forward pass with named hook points and a KV cache.
 *
 * An up_state is the working memory of one batch: its KV cache, the position
 * of every cached column, and every scratch buffer (one allocation family,
 * made by up_state_init; the pass itself never allocates). up_forward appends
 * a chunk of T tokens to each of the B rows and runs them through the model:
 * a prefill is one call with the whole prompt, a decode step a call with T=1.
 *
 * Padding: rows of different lengths are left-padded (n_pad[b] leading pad slots
 * in row b of a chunk). Pad slots get position -1, are never attended to, and
 * their activations are zero-filled garbage that hooks should skip (the hook call
 * says which slots are pads). Real tokens of row b take positions 0, 1, ... in
 * order, whatever chunk they come in, and attention follows positions, not
 * columns, so a padded row computes what it would alone: a later chunk may be
 * padded too (its pads then sit between the row's cached and new tokens, as when
 * rows that share a prefix go on with prompts of their own lengths).
 *
 * Hooks (ggml's eval-callback idea): at each hook point the pass calls every
 * registered hook whose point matches, in registration order, with the
 * activation of the current chunk (B, T, d). A hook may read it, overwrite or
 * add to it, return UP_HOOK_STOP to end the pass there (work above is skipped;
 * the state must then be reset before the next append), or return a negative
 * value to abort (the pass returns UP_ERR_ABORTED). A pass can also pause at a residual
 * point and resume later, after its rows were copied (below). Hook points use
 * TransformerLens names: hook_embed, blocks.{l}.hook_resid_pre,
 * blocks.{l}.hook_attn_out (after post_attention_layernorm, i.e. what is added
 * to the residual), blocks.{l}.hook_resid_mid, blocks.{l}.hook_mlp_out (after
 * post_feedforward_layernorm), blocks.{l}.hook_resid_post,
 * ln_final.hook_normalized. Stock hooks (capture a point's activation, stop the pass there)
 * are in engine/hooks.h.
 *
 * Semantics follow Hugging Face Gemma2ForCausalLM in fp32 (docs/method.md §9).
 * Determinism: the same inputs and thread count give the same bits. */
#ifndef UP_FORWARD_H
#define UP_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "engine/model.h"

typedef enum {
    UP_HOOK_EMBED = 0,
    UP_HOOK_RESID_PRE,
    UP_HOOK_ATTN_OUT,
    UP_HOOK_RESID_MID,
    UP_HOOK_MLP_OUT,
    UP_HOOK_RESID_POST,
    UP_HOOK_LN_FINAL,
    UP_HOOK_KIND_COUNT
} up_hook_kind;

#define UP_HOOK_ANY_LAYER (-2)

typedef struct up_hook_point {
    up_hook_kind kind;
    int layer; /* block index; -1 for hook_embed and ln_final; UP_HOOK_ANY_LAYER matches all */
} up_hook_point;

/* Parses a TransformerLens name ("blocks.3.hook_resid_post", "hook_embed", ...). Returns 0, or
 * -1 for an unknown name or a layer outside [0, n_layers). */
int up_hook_point_parse(const char *name, int n_layers, up_hook_point *out);
/* Writes the TransformerLens name of p into buf. */
void up_hook_point_name(up_hook_point p, char *buf, size_t size);
/* Number of concrete hook points of a model, and the i-th in forward order. */
int up_hook_point_count(int n_layers);
up_hook_point up_hook_point_at(int n_layers, int i);
/* The inverse of up_hook_point_at: p's index in forward order. */
int up_hook_point_index(up_hook_point p, int n_layers);

typedef struct up_hook_call {
    up_hook_point point;
    float *act;            /* (n_rows, n_tok, d) this chunk's activation; writable */
    int n_rows, n_tok, d;
    const int *pos;        /* (n_rows, n_tok) position of each slot; -1 for a pad slot */
    int col0;              /* cache column of the chunk's first slot (0 in a prefill) */
    const int *n_prompt;   /* (n_rows) prompt length of each row, set during generation; else NULL */
} up_hook_call;

enum { UP_HOOK_CONTINUE = 0, UP_HOOK_STOP = 1 };
typedef int (*up_hook_fn)(const up_hook_call *call, void *user);

typedef struct up_hook {
    up_hook_point point;
    up_hook_fn fn;
    void *user;
} up_hook;

typedef struct up_hooks {
    const up_hook *items; /* (n) caller-owned */
    int n;
} up_hooks;

typedef enum { UP_LOGITS_NONE = 0, UP_LOGITS_LAST, UP_LOGITS_ALL } up_logits_mode;

/* Saved activations of layers [first, last] of one prefill, for the activation backward
 * (backward.h). Filled by up_forward when attached with up_state_attach_tape; owned by
 * whoever allocated it (backward.c). N = n_rows * n_tok. */
typedef struct up_tape_layer {
    float *x_in;       /* (N, d) resid_pre */
    float *rstd;       /* (4, N) 1/rms of the input, post-attn, pre-ffw and post-ffw norms' inputs */
    float *q;          /* (N, nh*hd) after RoPE */
    float *k;          /* (N, nkv*hd) after RoPE */
    float *v;          /* (N, nkv*hd) */
    float *probs;      /* (B, nh, T, T) softmax output */
    float *capped;     /* (B, nh, T, T) softcapped scores / cap (tanh values); unused without softcap */
    float *ctx;        /* (N, nh*hd) attention output, input of o_proj; NULL: not recorded
                          (only weight gradients need it) */
    float *attn_raw;   /* (N, d) o_proj output, input of post_attention_layernorm */
    float *resid_mid;  /* (N, d) */
    float *gate;       /* (N, d_mlp) gate_proj output */
    float *up;         /* (N, d_mlp) up_proj output */
    float *mlp_raw;    /* (N, d) down_proj output, input of post_feedforward_layernorm */
} up_tape_layer;

typedef struct up_tape {
    int first, last;          /* layer range recorded */
    int n_rows, n_tok;        /* shape it was allocated for */
    up_tape_layer *layers;    /* (last - first + 1) */
} up_tape;

typedef struct up_state up_state;

up_status up_state_init(up_state **out, const up_model *m, int max_rows, int max_seq, up_error *err);
void up_state_free(up_state *s);
/* Empties the cache (keeps the buffers). */
void up_state_reset(up_state *s);
int up_state_stopped(const up_state *s);
/* Records the next up_forward into tape (NULL detaches). The pass must be a prefill. */
void up_state_attach_tape(up_state *s, up_tape *tape);
const up_model *up_state_model(const up_state *s);

/* Appends tokens (n_rows, n_tok) and runs them. n_pad (n_rows) or NULL: leading pad slots per
 * row in this chunk. n_prompt (n_rows) or NULL is passed to hooks.
 * logits: NULL, or (n_rows, V) for UP_LOGITS_LAST, (n_rows, n_tok, V) for UP_LOGITS_ALL.
 * Errors: UP_ERR_INVALID for shapes beyond the state's capacity, bad ids or a row count that
 * differs from the cached one; UP_ERR_ABORTED when a hook aborts. */
up_status up_forward(up_state *s, const int32_t *tokens, const int *n_pad, const int *n_prompt,
                     int n_rows, int n_tok, const up_hooks *hooks, float *logits,
                     up_logits_mode mode, up_error *err);

/* ---- pausing a pass and sharing its rows ----------------------------------------------------
 *
 * Rows that agree up to some point (a prompt shared by differently steered rows, whose
 * steering acts only from some hook point on) can be computed once and copied:
 *   up_state_pause_at(s, p)   the next up_forward pauses at residual point p (the activation is
 *                             computed up to p; p's hooks have not run). The request holds for
 *                             that one pass; no tape.
 *   up_state_share_rows(s, src, n)  row b (< n) of the state becomes a copy of row src[b]
 *                             (src[b] <= b, src[b] < the current rows): cached keys/values,
 *                             positions and, when paused, the chunk's activation. Works paused
 *                             or between passes.
 *   up_forward_resume(s, ...) finishes the paused pass for every (now n) row, from p's hooks on,
 *                             with hooks, n_prompt and logits as up_forward.
 * A paused-and-resumed pass computes exactly what one uninterrupted pass computes, provided
 * the hooks given to the first part are the second part's hooks before p (usually none: the
 * caller pauses before the first point where a hook does anything). Copied rows get the bits
 * of their source row; the pass over n rows may round differently in the last bit (the
 * products' kernels tile rows), as any row computed in another batch does. */
up_status up_state_pause_at(up_state *s, up_hook_point p, up_error *err);
int up_state_paused(const up_state *s);
up_status up_state_share_rows(up_state *s, const int *src, int n_rows, up_error *err);
up_status up_forward_resume(up_state *s, const int *n_prompt, const up_hooks *hooks, float *logits,
                            up_logits_mode mode, up_error *err);

/* ---- rerunning the top of a pass -----------------------------------------------------------
 *
 * Passes over the same rows that differ only from some residual point up (one batch of
 * prompts, steered at a different layer each time) can share the work below that point
 * without pausing before each: run the batch once, unsteered, capturing the residual stream at
 * the points wanted (hooks.h's up_hook_capture), and take a snapshot; then, for each steered
 * pass,
 *   up_state_rerun_from(s, snap, p, x)  returns s to the snapshot (the cache of every layer,
 *                             positions, the last chunk's shape) and pauses its last chunk at
 *                             residual point p with activation x (chunk rows x tokens x d_model,
 *                             the capture at p), as a pass paused at p would be;
 *   up_forward_resume(s, ...) finishes it from p's hooks on.
 * The result has exactly the bits of one uninterrupted pass of the same rows and hooks,
 * provided the snapshot's pass ran with no hook that acts before p and x is its capture at p.
 * A snapshot holds n_rows x n_cols columns of keys and values per layer; it is independent of
 * the state once taken (the state may be reset or run in between). Errors: UP_ERR_INVALID when
 * the state holds no completed pass (empty, paused or stopped), for a point that is not a
 * residual one, or a snapshot of another shape; UP_ERR_NOMEM. */
typedef struct up_state_snapshot up_state_snapshot;
up_status up_state_snapshot_take(const up_state *s, up_state_snapshot **out, up_error *err);
void up_state_snapshot_free(up_state_snapshot *snap);
up_status up_state_rerun_from(up_state *s, const up_state_snapshot *snap, up_hook_point p, const float *x,
                              up_error *err);

#endif
