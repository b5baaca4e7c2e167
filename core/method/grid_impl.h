/* grid_impl — the steering grid's state, shared by the files that implement grid.h and by
 * nothing else (outside core/method, use grid.h).
 *
 * grid.c owns the axes (prompts, interventions, decodings, identities, the objective) and runs
 * the cells; grid_cache.c turns them into keys and cell files (grid_cache.h); grid_predict.c
 * fills the predicted_dR column (grid_predict.h).
 *
 * Ownership: every pointer below is owned by the grid and freed by up_grid_free, except the
 * model (borrowed) and, inside items, the SAEs of CLAMP items (borrowed, as grid.h says). */
#ifndef UP_GRID_IMPL_H
#define UP_GRID_IMPL_H

#include <stddef.h>

#include "method/grid.h"

/* A growing string, for canonical specs and labels. An allocation failure sets `failed`; later
 * appends do nothing and grid_sb_take frees the text and returns NULL. Start from {0}. */
typedef struct grid_strbuf {
    char *s;
    size_t n, cap;
    int failed;
} grid_strbuf;

void grid_sb_printf(grid_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text (the caller frees it; "" when nothing was appended), or NULL after a failure. */
char *grid_sb_take(grid_strbuf *b);

/* A gradient the caller supplied for the prediction (up_grid_set_gradient). */
typedef struct grid_gradient {
    int layer;     /* source layer: g_t = dR/dh at blocks.{layer}.hook_resid_post (-1: the embedding) */
    float *values; /* (prompt's n, d) */
} grid_gradient;

typedef struct grid_prompt {
    char *label;
    int32_t *ids; /* (n) */
    int n;
    char *spec;   /* "prompt n=... ids\n" */
    grid_gradient *gradients; /* (n_gradients) supplied ones, for the current objective */
    int n_gradients;
} grid_prompt;

typedef struct grid_interv {
    char *label;
    up_steer *items; /* (n_items), vec/positions pointing into owned copies */
    int n_items;
    int latent;
    float alpha;
    void **owned;    /* (n_owned) copies of vectors and position lists */
    int n_owned;
    char *spec;      /* "steer n=...\n" + one line per item that changes anything */
} grid_interv;

typedef struct grid_ident {
    char *name, *value;
} grid_ident;

struct up_grid {
    const up_model *m;
    grid_prompt *prompts;
    int n_prompts, cap_prompts;
    grid_interv *ivs;
    int n_ivs, cap_ivs;
    int *decodings;
    int n_decodings, cap_decodings;
    grid_ident *idents;
    int n_idents;
    /* objective */
    int has_objective, obj_layer;
    float *obj_dir;     /* (d) unit */
    int *obj_positions; /* (n_obj_positions) or NULL */
    int n_obj_positions;
    /* last run */
    up_grid_cell *cells; /* (n_cells) */
    int n_cells;
    char **substrings;   /* (n_substrings) the judge's list, copied */
    int n_substrings;
    up_grid_totals totals;
};

#endif
